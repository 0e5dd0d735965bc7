//! Benchmarks of cells, each against a peer measured in the same run.
//!
//! `cells-bench start [N]`: latency of `cellctl start` (until the VP's init
//! has exec'd), N runs (default 30), next to crun (Debian's) doing create +
//! start of an equivalent bundle: the same template rootfs, the same
//! namespaces (user with a 65536-id map, pid, mount, uts, ipc, net, cgroup),
//! the same mounts and the same /init. crun runs in a private mount
//! namespace where /sys/fs/cgroup is a cgroup2 mount, with
//! --cgroup-manager=disabled (this host's v1/v2 hybrid makes crun refuse
//! cgroups otherwise), so it creates no cgroup while cells does.
//!
//! Run it through tests/bench/run (release build, as root).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use cells_tests::stats::{summarize, Summary};
use cells_tests::Cells;

mod adbtools;
mod audio;
mod cri;
mod display;
mod network;
mod phone;
mod power;
mod snapshot;
mod web;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let code = match args.get(1).map(String::as_str) {
        Some("start") => {
            let n = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(30);
            bench_start(n)
        }
        Some("exec") => {
            let n = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
            bench_exec(n)
        }
        Some("display") => {
            let n = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
            display::bench(n)
        }
        Some("network") => {
            let n = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
            network::bench(n)
        }
        Some("audio") => {
            let n = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(50);
            audio::bench(n)
        }
        Some("phone") => {
            let n = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
            phone::bench(n)
        }
        Some("adb") => {
            let n = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
            adbtools::bench(n)
        }
        Some("snapshot") => {
            let n = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1024);
            snapshot::bench(n)
        }
        Some("web") => {
            let n = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(50);
            web::bench(n)
        }
        Some("cri") => {
            let n = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
            cri::bench(n)
        }
        Some("power") => {
            let n = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
            power::bench(n)
        }
        Some("__crun-loop") => crun_loop(
            Path::new(args.get(2).map(String::as_str).unwrap_or("")),
            Path::new(args.get(3).map(String::as_str).unwrap_or("")),
        ),
        _ => {
            eprintln!(
                "usage: cells-bench start [N] | exec [N] | display [N] | power [N] | network [N] | adb [N] | audio [N] | phone [N] | snapshot [MiB] | web [N] | cri [N]"
            );
            2
        }
    };
    std::process::exit(code);
}

/// Let the kernel finish tearing down the previous run (pid and network
/// namespaces end asynchronously) before timing the next, for both sides.
fn settle() {
    std::thread::sleep(std::time::Duration::from_millis(50));
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Run to completion with no pipes (a container process must not inherit
/// one, or waiting for EOF would wait for the container).
fn run_ok(cmd: &mut Command) {
    let st = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .expect("spawn");
    assert!(st.success(), "{cmd:?} failed");
}

fn bench_start(n: usize) -> i32 {
    let c = Cells::new();
    c.ok(&["create", "bench", "--template", "minimal"]);
    c.ok(&["start", "bench"]);
    let build = c.status("bench")["template_build"]
        .as_str()
        .unwrap_or("1")
        .to_string();
    c.ok(&["stop", "bench"]);
    let rootfs = c
        .state
        .join(format!("templates/minimal/builds/{build}/rootfs"));
    let mut crun = CrunLoop::new(&c.root, &rootfs);
    // Warm-up: page cache, first-run costs.
    for _ in 0..3 {
        c.ok(&["start", "bench"]);
        c.ok(&["stop", "bench"]);
        crun.once();
    }
    // Interleaved, so that drifting load on the machine hits both alike.
    let (mut cellctl, mut crun_ms) = (Vec::new(), Vec::new());
    for _ in 0..n {
        settle();
        let t = Instant::now();
        let o = c.ctl(&["start", "bench"]);
        let d = ms(t);
        assert_eq!(o.code, 0, "{o:?}");
        cellctl.push(d);
        c.ok(&["stop", "bench"]);
        settle();
        crun_ms.push(crun.once());
    }
    // The same start through the D-Bus API from a connected client: the
    // daemon's part without cellctl's process start and connection setup.
    let api = api_starts(&c, n);
    drop(crun);

    let a = summarize(&cellctl);
    let b = summarize(&api);
    let r = summarize(&crun_ms);
    println!("start latency in ms (until the VP's init has exec'd), {n} runs each");
    println!("  cellctl start        {a}");
    println!("  D-Bus Start call     {b}");
    println!("  crun create+start    {r}");
    println!(
        "ratio of medians: cellctl start / crun = {:.2}x, D-Bus Start / crun = {:.2}x",
        a.p50 / r.p50,
        b.p50 / r.p50
    );
    let json = serde_json::json!({
        "bench": "start",
        "runs": n,
        "cellctl_start_ms": summary_json(&a),
        "dbus_start_ms": summary_json(&b),
        "crun_create_start_ms": summary_json(&r),
        "ratio_cellctl_vs_crun": a.p50 / r.p50,
        "ratio_dbus_vs_crun": b.p50 / r.p50,
    });
    println!("{json}");
    0
}

/// `cellctl exec VP -- true` against `crun exec CTR true` into an
/// equivalent running container, interleaved.
fn bench_exec(n: usize) -> i32 {
    let c = Cells::new();
    c.ok(&["create", "bench", "--template", "minimal"]);
    c.ok(&["start", "bench"]);
    let build = c.status("bench")["template_build"]
        .as_str()
        .unwrap_or("1")
        .to_string();
    let rootfs = c
        .state
        .join(format!("templates/minimal/builds/{build}/rootfs"));
    let mut crun = CrunLoop::new(&c.root, &rootfs);
    crun.command("up");
    let exec = |c: &Cells| {
        let t = Instant::now();
        let o = c.ctl(&["exec", "bench", "--", "true"]);
        assert_eq!(o.code, 0, "{o:?}");
        ms(t)
    };
    for _ in 0..5 {
        exec(&c);
        crun.command("exec");
    }
    let (mut cellctl, mut crun_ms) = (Vec::new(), Vec::new());
    for _ in 0..n {
        settle();
        cellctl.push(exec(&c));
        settle();
        crun_ms.push(crun.command("exec"));
    }
    crun.command("down");
    drop(crun);
    let a = summarize(&cellctl);
    let r = summarize(&crun_ms);
    println!(
        "exec latency in ms (`true` in a running VP, until its exit status is back), {n} runs each"
    );
    println!("  cellctl exec         {a}");
    println!("  crun exec            {r}");
    println!(
        "ratio of medians: cellctl exec / crun exec = {:.2}x",
        a.p50 / r.p50
    );
    let json = serde_json::json!({
        "bench": "exec",
        "runs": n,
        "cellctl_exec_ms": summary_json(&a),
        "crun_exec_ms": summary_json(&r),
        "ratio_cellctl_vs_crun": a.p50 / r.p50,
    });
    println!("{json}");
    0
}

pub(crate) fn summary_json(s: &Summary) -> serde_json::Value {
    serde_json::json!({"min": s.min, "p50": s.p50, "p90": s.p90, "p99": s.p99, "max": s.max, "mean": s.mean})
}

fn api_starts(c: &Cells, n: usize) -> Vec<f64> {
    display::rt().block_on(async {
        let (_conn, p) = display::proxy(c).await;
        let mut v = Vec::new();
        for _ in 0..n {
            settle();
            let t = Instant::now();
            p.start("bench").await.expect("Start");
            v.push(ms(t));
            p.stop("bench", 5).await.expect("Stop");
        }
        v
    })
}

/// A bundle equivalent to a cells VP (see the module doc).
fn crun_config(rootfs: &Path, data: &Path) -> serde_json::Value {
    let caps: Vec<&str> = cellsd::config::CAP_NAMES
        .iter()
        .copied()
        .filter(|c| !cellsd::config::DROPPED_CAPS.contains(c))
        .collect();
    serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": rootfs, "readonly": true},
        "hostname": "bench",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/init"],
            "env": ["PATH=/system/bin:/system/xbin:/bin", "CELLS_VP=bench"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": false
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/data", "type": "bind", "source": data, "options": ["rbind", "rw", "nosuid", "nodev"]}
        ],
        "linux": {
            "uidMappings": [{"containerID": 0, "hostID": 3000000, "size": 65536}],
            "gidMappings": [{"containerID": 0, "hostID": 3000000, "size": 65536}],
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "mount"}, {"type": "cgroup"}, {"type": "user"}
            ],
            "maskedPaths": cellsd::config::MASKED_PATHS,
            "readonlyPaths": cellsd::config::READONLY_PATHS,
            "rootfsPropagation": "private"
        }
    })
}

/// crun, driven one create+start at a time by a helper that lives in a
/// private mount namespace (see `crun_loop`).
struct CrunLoop {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl CrunLoop {
    fn new(work: &Path, rootfs: &Path) -> Self {
        let bundle = work.join("crun-bundle");
        let data = bundle.join("data");
        std::fs::create_dir_all(&data).expect("bundle dir");
        std::os::unix::fs::chown(&data, Some(3_000_000), Some(3_000_000)).expect("chown data");
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_string_pretty(&crun_config(rootfs, &data)).unwrap_or_default(),
        )
        .expect("config.json");
        let exe = std::env::current_exe().expect("own path");
        let mut child = Command::new("unshare")
            .args(["--mount", "--propagation", "private"])
            .arg(exe)
            .arg("__crun-loop")
            .arg(&bundle)
            .arg(work.join("crun-state"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("unshare (util-linux) and crun are installed by tests/bench/run");
        let out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        CrunLoop { child, out }
    }

    /// One create+start (then kill+delete, not timed); its time in ms.
    fn once(&mut self) -> f64 {
        self.command("run")
    }

    /// `run` (create+start+kill+delete, the first two timed), `up`
    /// (create+start a container that stays), `exec` (time `crun exec` of
    /// `true` into it), `down` (remove it). Returns the time in ms.
    fn command(&mut self, what: &str) -> f64 {
        use std::io::{BufRead, Write};
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin
            .write_all(format!("{what}\n").as_bytes())
            .expect("crun loop alive");
        stdin.flush().expect("crun loop alive");
        let mut line = String::new();
        self.out.read_line(&mut line).expect("crun loop answer");
        line.trim().parse().expect("crun loop printed a time")
    }
}

impl Drop for CrunLoop {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Inside a private mount namespace: make /sys/fs/cgroup a cgroup2 mount
/// (crun wants a pure v2 layout), then per "run" line on stdin time one
/// create+start and print it.
fn crun_loop(bundle: &Path, state: &Path) -> i32 {
    use std::io::BufRead;
    let target = c"/sys/fs/cgroup";
    // SAFETY: mounting in this process's private mount namespace.
    let r = unsafe {
        libc::mount(
            c"none".as_ptr(),
            target.as_ptr(),
            c"cgroup2".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        eprintln!("mount cgroup2: {}", std::io::Error::last_os_error());
        return 1;
    }
    let crun = |args: &[&str]| {
        let mut c = Command::new("crun");
        c.arg("--root")
            .arg(state)
            .arg("--cgroup-manager=disabled")
            .args(args);
        c
    };
    let b = bundle.to_string_lossy().to_string();
    let up = "bench-up";
    for (i, line) in std::io::stdin().lock().lines().enumerate() {
        let Ok(line) = line else { break };
        let t = Instant::now();
        match line.trim() {
            "up" => {
                run_ok(&mut crun(&["create", "--bundle", &b, up]));
                run_ok(&mut crun(&["start", up]));
            }
            "exec" => run_ok(&mut crun(&["exec", up, "/system/bin/true"])),
            "down" => {
                run_ok(&mut crun(&["kill", up, "KILL"]));
                run_ok(&mut crun(&["delete", "--force", up]));
            }
            _ => {
                let id = format!("bench-{i}");
                run_ok(&mut crun(&["create", "--bundle", &b, &id]));
                run_ok(&mut crun(&["start", &id]));
                println!("{}", ms(t));
                run_ok(&mut crun(&["kill", &id, "KILL"]));
                // crun delete --force waits for the container to be gone.
                run_ok(&mut crun(&["delete", "--force", &id]));
                continue;
            }
        }
        println!("{}", ms(t));
    }
    0
}
