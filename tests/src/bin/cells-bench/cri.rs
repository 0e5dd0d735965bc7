//! `cells-bench cri [N]`: what a Kubernetes node pays to start a pod: CRI
//! RunPodSandbox + CreateContainer + StartContainer (PyPI's CRI client
//! against Debian's containerd with its CRI plugin), N pods (default 10)
//! with the runtime handler `cells` (cells-runtime: each container and the
//! pod's sandbox become VPs) next to N with `runc` (Debian's runc: plain
//! containers) in the same run, the same image (the `minimal` template as
//! an OCI image) and the same command (/init). Each pod is stopped and
//! removed before the next.

use std::path::Path;
use std::process::Command;

use cells_tests::oci;
use cells_tests::stats::summarize;
use cells_tests::Cells;

fn run(sock: &Path, handler: &str, n: usize) -> Option<Vec<f64>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("cri/cri.py");
    let o = Command::new("python3")
        .arg(script)
        .arg(sock)
        .args([
            "bench",
            &n.to_string(),
            handler,
            "docker.io/cells/minimal:1",
            "/init",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    if !o.status.success() {
        eprintln!(
            "cri bench with {handler} failed: {text}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(text.trim()).ok()?;
    Some(
        v["ms"]
            .as_array()?
            .iter()
            .filter_map(|x| x.as_f64())
            .collect(),
    )
}

pub fn bench(n: usize) -> i32 {
    if !oci::containerd_available() || !oci::cri_client_available() {
        eprintln!("cri: containerd or the CRI client is missing: run scripts/install-deps");
        return 1;
    }
    let c = Cells::new();
    let ctrd = oci::cri_node(&c, &c.root.join("cri"));
    // One untimed pod each first (images unpacked into snapshots, caches warm).
    let (Some(_), Some(_)) = (run(&ctrd.socket, "cells", 1), run(&ctrd.socket, "runc", 1)) else {
        return 1;
    };
    let (Some(cells), Some(runc)) = (run(&ctrd.socket, "cells", n), run(&ctrd.socket, "runc", n))
    else {
        return 1;
    };
    let (a, b) = (summarize(&cells), summarize(&runc));
    println!("CRI RunPodSandbox+CreateContainer+StartContainer, {n} pods each (ms):");
    println!("  cells (cells-runtime, 2 VPs per pod): {a}");
    println!("  runc  (Debian's runc 1.1.5):          {b}");
    println!(
        "  ratio cells/runc: p50 {:.2}x, p90 {:.2}x",
        a.p50 / b.p50,
        a.p90 / b.p90
    );
    0
}
