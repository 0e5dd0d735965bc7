use cellsd::*;
use std::path::PathBuf;
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let d = PathBuf::from(&a[1]);
    let privileged = a.get(2).map(|s| s == "priv").unwrap_or(false);
    let o = config::CreateOptions { template: "minimal".into(), privileged, ..Default::default() };
    let cfg = config::VpConfig::new("test", &o, 0, 1_000_000, &d.join("data"), 0).unwrap();
    let h = cgroup::Hierarchy::detect().unwrap();
    let req = monitor::MonitorRequest {
        config: cfg, template_rootfs: d.join("tpl"), upper: d.join("up"), work: d.join("wk"),
        run_dir: d.join("run"), console_log: d.join("console.log"), console_socket: d.join("run/console.sock"),
        run_state: d.join("run/run.json"), cgroup: cgroup::VpCgroup::new(h, "cells/test"),
    };
    println!("{}", serde_json::to_string(&req).unwrap());
}
