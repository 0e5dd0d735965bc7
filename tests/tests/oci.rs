//! cells-runtime, the OCI runtime CLI: a bundle becomes a VP that cellctl
//! sees and drives; the processes containerd's shim must reap (the VP's
//! monitor, an exec's helper) are the runtime's children and end with the
//! container's statuses. Driven by hand here (the test process is a
//! subreaper, as the shim is), and by Debian's containerd (`ctr run
//! --runc-binary`) with its runc v2 shim.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cells_tests::oci::{self, Bundle, Containerd};
use cells_tests::Cells;

/// Make this test process a subreaper (what containerd's shim is), so the
/// runtime's orphaned children are reaped here with their statuses.
fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(r, 0, "PR_SET_CHILD_SUBREAPER");
}

/// Reap `pid` (a child of ours by reparenting); its exit code (128+N for
/// signal N), or None if it did not end within `timeout`.
fn reap(pid: i32, timeout: Duration) -> Option<i32> {
    let mut code = None;
    Cells::wait_until(timeout, || {
        let mut st = 0;
        // SAFETY: waiting for a process reparented to this subreaper.
        let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        if r == pid {
            code = Some(if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else {
                128 + libc::WTERMSIG(st)
            });
            true
        } else {
            false
        }
    });
    code
}

struct Runtime<'a> {
    exe: std::path::PathBuf,
    root: std::path::PathBuf,
    log: std::path::PathBuf,
    cells: &'a Cells,
}

impl Runtime<'_> {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.exe);
        c.env("CELLS_SOCKET", &self.cells.socket)
            .arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&self.log)
            .args(["--log-format", "json"])
            .args(args);
        c
    }
    /// Run with stdio to files (the container's own, for create and exec).
    fn run_to(&self, args: &[&str], out: &Path) -> i32 {
        let f = std::fs::File::create(out).unwrap();
        self.cmd(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .status()
            .unwrap()
            .code()
            .unwrap_or(-1)
    }
    fn out(&self, args: &[&str]) -> (i32, String, String) {
        let o = self.cmd(args).stdin(Stdio::null()).output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.out(args);
        assert_eq!(code, 0, "cells-runtime {args:?}: {err}");
        out
    }
    fn status(&self, id: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["state", id])).unwrap()
    }
}

#[test]
fn a_bundle_is_a_vp_through_the_runtime_cli() {
    become_subreaper();
    let c = Cells::new();
    let work = c.root.join("oci");
    let rt = Runtime {
        exe: oci::runtime_link(&c.bin, &work.join("bin")),
        root: work.join("records"),
        log: work.join("log.json"),
        cells: &c,
    };
    let lower = oci::template_rootfs(&c, "minimal");
    let bundle = Bundle::new(
        &work.join("b1"),
        &lower,
        &oci::config(
            &[
                "/bin/sh",
                "-c",
                "echo hello-from-$CELLS_VP; echo made > /made-here; exec /init",
            ],
            &["PATH=/system/bin:/bin"],
        ),
    );
    let b = bundle.dir.to_str().unwrap();
    let pidfile = work.join("c1.pid");
    let out = work.join("c1.out");
    let code = rt.run_to(
        &[
            "create",
            "--bundle",
            b,
            "--pid-file",
            pidfile.to_str().unwrap(),
            "c1",
        ],
        &out,
    );
    assert_eq!(
        code,
        0,
        "create: {}\n{}",
        std::fs::read_to_string(&out).unwrap_or_default(),
        c.daemon_log()
    );
    let monitor: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let st = rt.status("c1");
    assert_eq!(st["status"], "created", "{st}");
    assert_eq!(st["bundle"], b);
    // Created: the VP is there for cellctl; the container's program has not run.
    assert_eq!(c.status("c1")["state"], "running");
    assert!(!std::fs::read_to_string(&out).unwrap().contains("hello"));
    let (code, _, err) = rt.out(&["create", "--bundle", b, "c1"]);
    assert!(code != 0 && err.contains("already exists"), "{err}");

    rt.ok(&["start", "c1"]);
    assert_eq!(rt.status("c1")["status"], "running");
    // The program runs with the runtime's stdio (the shim's, for containerd).
    assert!(
        Cells::wait_until(Duration::from_secs(10), || std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains("hello-from-c1")),
        "{}",
        std::fs::read_to_string(&out).unwrap_or_default()
    );
    // It is a VP like any: cellctl's exec, the persona on the screen.
    assert_eq!(c.sh_ok("c1", "cat /made-here").trim(), "made");
    assert!(Cells::wait_until(Duration::from_secs(10), || c
        .ctl(&["screenshot", "--vp", "c1", "-o", "/dev/null"])
        .code
        == 0));
    // VP root is the VP's unprivileged id range (its user namespace): what
    // it wrote is owned by that id on the host, in the VP's own writable
    // layer; the bundle's layers stay as they were (control: the file is
    // there for the VP).
    let vp_upper = c.vp_folder("c1", "upper");
    let made = std::fs::metadata(vp_upper.join("made-here")).expect("the VP's write in its layer");
    use std::os::unix::fs::MetadataExt;
    assert!(made.uid() >= 1_000_000, "owned by host uid {}", made.uid());
    assert!(!bundle.upper.join("made-here").exists());
    assert!(!lower.join("made-here").exists());

    // exec: the helper is the runtime's child; it ends with the command's status.
    let proc_json = work.join("p.json");
    std::fs::write(
        &proc_json,
        serde_json::to_vec(&serde_json::json!({
            "args": ["/bin/sh", "-c", "echo exec-out-$(cat /made-here); exit 7"],
            "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0}
        }))
        .unwrap(),
    )
    .unwrap();
    let epid = work.join("e.pid");
    let eout = work.join("e.out");
    let code = rt.run_to(
        &[
            "exec",
            "--process",
            proc_json.to_str().unwrap(),
            "--detach",
            "--pid-file",
            epid.to_str().unwrap(),
            "c1",
        ],
        &eout,
    );
    assert_eq!(
        code,
        0,
        "{}",
        std::fs::read_to_string(&eout).unwrap_or_default()
    );
    let helper: i32 = std::fs::read_to_string(&epid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(reap(helper, Duration::from_secs(20)), Some(7));
    assert!(std::fs::read_to_string(&eout)
        .unwrap()
        .contains("exec-out-made"));
    // The process's user: uid 1000 of the VP (not run detached: the
    // runtime waits and exits with the command's status).
    std::fs::write(
        &proc_json,
        serde_json::to_vec(&serde_json::json!({
            "args": ["/bin/sh", "-c", "id -u; id -g"],
            "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 1000, "gid": 1001}
        }))
        .unwrap(),
    )
    .unwrap();
    let code = rt.run_to(
        &["exec", "--process", proc_json.to_str().unwrap(), "c1"],
        &eout,
    );
    assert_eq!(
        code,
        0,
        "{}",
        std::fs::read_to_string(&eout).unwrap_or_default()
    );
    let ids = std::fs::read_to_string(&eout).unwrap();
    assert_eq!(
        ids.split_whitespace().collect::<Vec<_>>(),
        ["1000", "1001"],
        "{ids}"
    );

    // ps: the VP's processes (its init among them), not the monitor.
    let pids: Vec<i32> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", "c1"])).unwrap();
    let init = rt.status("c1")["pid"].as_i64().unwrap() as i32;
    assert!(pids.contains(&init) && !pids.contains(&monitor), "{pids:?}");

    // pause: a foreground VP is not frozen (it owns the screen and the
    // input); in the background it is.
    let (code, _, err) = rt.out(&["pause", "c1"]);
    assert!(code != 0 && err.contains("foreground"), "{err}");
    c.create_start("other");
    c.ok(&["switch", "other"]);
    rt.ok(&["pause", "c1"]);
    assert_eq!(rt.status("c1")["status"], "paused");
    rt.ok(&["resume", "c1"]);
    assert_eq!(rt.status("c1")["status"], "running");

    // update: the VP's cgroup gets the new limit.
    rt.ok(&["update", "--memory", "300000000", "c1"]);
    let limit = c
        .vp_cgroup_dirs("c1")
        .iter()
        .find_map(|d| {
            std::fs::read_to_string(d.join("memory.limit_in_bytes"))
                .or_else(|_| std::fs::read_to_string(d.join("memory.max")))
                .ok()
        })
        .unwrap();
    // The kernel rounds to pages.
    let limit: u64 = limit.trim().parse().unwrap();
    assert!((299_990_000..=300_000_000).contains(&limit), "{limit}");

    // delete refuses a running container; kill ends it and the monitor
    // (what the shim reaps) ends with the init's status.
    let (code, _, err) = rt.out(&["delete", "c1"]);
    assert!(code != 0 && err.contains("running"), "{err}");
    rt.ok(&["kill", "c1", "KILL"]);
    assert_eq!(reap(monitor, Duration::from_secs(20)), Some(137));
    assert!(Cells::wait_until(Duration::from_secs(10), || rt
        .status("c1")["status"]
        == "stopped"));
    rt.ok(&["delete", "c1"]);
    assert!(c.fails(&["status", "c1"]).contains("no VP named"));
    assert!(!rt.root.join("c1").exists());
    // Unknown ids: an error (in the JSON log too), but not with --force.
    let (code, _, err) = rt.out(&["delete", "c1"]);
    assert!(code != 0 && err.contains("does not exist"), "{err}");
    let log = std::fs::read_to_string(&rt.log).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "error");
    assert!(
        last["msg"].as_str().unwrap().contains("does not exist"),
        "{log}"
    );
    rt.ok(&["delete", "--force", "c1"]);

    // A container's own exit status: the monitor ends with it. Its
    // process runs as the bundle's user (3 only as uid 1000, gid 1001).
    let mut cfg2 = oci::config(
        &[
            "/bin/sh",
            "-c",
            "[ $(id -u):$(id -g) = 1000:1001 ] && exit 3; exit 9",
        ],
        &["PATH=/bin"],
    );
    cfg2["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1001});
    let b2 = Bundle::new(&work.join("b2"), &lower, &cfg2);
    let pf2 = work.join("c2.pid");
    let code = rt.run_to(
        &[
            "create",
            "--bundle",
            b2.dir.to_str().unwrap(),
            "--pid-file",
            pf2.to_str().unwrap(),
            "c2",
        ],
        &work.join("c2.out"),
    );
    assert_eq!(
        code,
        0,
        "{}",
        std::fs::read_to_string(work.join("c2.out")).unwrap_or_default()
    );
    let m2: i32 = std::fs::read_to_string(&pf2)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    rt.ok(&["start", "c2"]);
    assert_eq!(reap(m2, Duration::from_secs(20)), Some(3));
    rt.ok(&["delete", "c2"]);

    // A bundle cells cannot run is refused before anything is made, naming why.
    let mut cfg = oci::config(&["/bin/sh"], &[]);
    cfg["linux"]["namespaces"] = serde_json::json!([{"type": "pid", "path": "/proc/1/ns/pid"}]);
    let b3 = Bundle::new(&work.join("b3"), &lower, &cfg);
    let (code, _, err) = rt.out(&["create", "--bundle", b3.dir.to_str().unwrap(), "c3"]);
    assert!(code != 0 && err.contains("joins only network"), "{err}");
    assert!(c.fails(&["status", "c3"]).contains("no VP named"));

    // Hooks that run in the runtime's namespaces, in the lifecycle's order,
    // with the container's state on stdin; one inside the container is
    // refused.
    let log = work.join("hooks.log");
    let hook = |name: &str| {
        serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c",
            format!("read -r s; echo \"{name} $s\" >> {}", log.display())]})
    };
    let mut cfg = oci::config(&["/bin/sh", "-c", "exit 0"], &["PATH=/bin"]);
    cfg["hooks"] = serde_json::json!({
        "createRuntime": [hook("createRuntime")], "prestart": [hook("prestart")],
        "poststart": [hook("poststart")], "poststop": [hook("poststop")]
    });
    let b6 = Bundle::new(&work.join("b6"), &lower, &cfg);
    let pf6 = work.join("c6.pid");
    let code = rt.run_to(
        &[
            "create",
            "--bundle",
            b6.dir.to_str().unwrap(),
            "--pid-file",
            pf6.to_str().unwrap(),
            "c6",
        ],
        &work.join("c6.out"),
    );
    assert_eq!(
        code,
        0,
        "{}",
        std::fs::read_to_string(work.join("c6.out")).unwrap_or_default()
    );
    rt.ok(&["start", "c6"]);
    let m6: i32 = std::fs::read_to_string(&pf6)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(reap(m6, Duration::from_secs(20)), Some(0));
    rt.ok(&["delete", "c6"]);
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        kinds,
        ["createRuntime", "prestart", "poststart", "poststop"],
        "{lines:?}"
    );
    let state: serde_json::Value =
        serde_json::from_str(lines[0].split_once(' ').unwrap().1).unwrap();
    assert_eq!(
        (state["id"].as_str(), state["status"].as_str()),
        (Some("c6"), Some("created"))
    );
    assert!(state["pid"].as_u64().unwrap() > 0, "{state}");
    let mut cfg = oci::config(&["/bin/sh"], &[]);
    cfg["hooks"] = serde_json::json!({"startContainer": [{"path": "/bin/true"}]});
    let b7 = Bundle::new(&work.join("b7"), &lower, &cfg);
    let (code, _, err) = rt.out(&["create", "--bundle", b7.dir.to_str().unwrap(), "c7"]);
    assert!(code != 0 && err.contains("inside the container"), "{err}");

    // Escape: a bundle that joins a namespace of the host (here the host's
    // network and IPC, this test's own) is refused; a VP never shares one.
    // Control: joining another container's namespace works (c5 joins c4's
    // IPC namespace by the path containerd would give: c4's pid-file pid).
    let me = std::process::id();
    for (kind, path) in [
        ("network", format!("/proc/{me}/ns/net")),
        ("ipc", format!("/proc/{me}/ns/ipc")),
    ] {
        let mut cfg = oci::config(&["/bin/sh"], &[]);
        cfg["linux"]["namespaces"] = serde_json::json!([{"type": kind, "path": path}]);
        let b = Bundle::new(&work.join(format!("b-{kind}")), &lower, &cfg);
        let (code, _, err) = rt.out(&["create", "--bundle", b.dir.to_str().unwrap(), "host-ns"]);
        assert!(
            code != 0 && err.contains("never shares the host"),
            "{kind}: {err}"
        );
        assert!(c.fails(&["status", "host-ns"]).contains("no VP named"));
    }
    let b4 = Bundle::new(
        &work.join("b4"),
        &lower,
        &oci::config(&["/bin/sh", "-c", "exec sleep 1000"], &["PATH=/bin"]),
    );
    let pf4 = work.join("c4.pid");
    let code = rt.run_to(
        &[
            "create",
            "--bundle",
            b4.dir.to_str().unwrap(),
            "--pid-file",
            pf4.to_str().unwrap(),
            "c4",
        ],
        &work.join("c4.out"),
    );
    assert_eq!(code, 0);
    rt.ok(&["start", "c4"]);
    let m4 = std::fs::read_to_string(&pf4).unwrap().trim().to_string();
    let mut cfg = oci::config(&["/bin/sh", "-c", "exec sleep 1000"], &["PATH=/bin"]);
    cfg["linux"]["namespaces"] =
        serde_json::json!([{"type": "pid"}, {"type": "ipc", "path": format!("/proc/{m4}/ns/ipc")}]);
    let b5 = Bundle::new(&work.join("b5"), &lower, &cfg);
    let code = rt.run_to(
        &["create", "--bundle", b5.dir.to_str().unwrap(), "c5"],
        &work.join("c5.out"),
    );
    assert_eq!(
        code,
        0,
        "{}",
        std::fs::read_to_string(work.join("c5.out")).unwrap_or_default()
    );
    let ns = |pid: u64| std::fs::read_link(format!("/proc/{pid}/ns/ipc")).unwrap();
    let (i4, i5) = (
        c.status("c4")["pid"].as_u64().unwrap(),
        c.status("c5")["pid"].as_u64().unwrap(),
    );
    assert_eq!(ns(i4), ns(i5), "c5 shares c4's IPC namespace");
    assert_ne!(ns(i4), std::fs::read_link("/proc/self/ns/ipc").unwrap());
    for id in ["c5", "c4"] {
        rt.ok(&["delete", "--force", id]);
        assert!(c.fails(&["status", id]).contains("no VP named"));
    }
    let m4: i32 = m4.parse().unwrap();
    assert_eq!(reap(m4, Duration::from_secs(20)), Some(137));
}

#[test]
fn containerd_runs_a_vp() {
    if !oci::containerd_available() {
        eprintln!("SKIP: containerd not unpacked (scripts/install-deps)");
        return;
    }
    let mut c = Cells::new();
    let work = c.root.join("ctrd");
    let runtime = oci::runtime_link(&c.bin, &work.join("bin"));
    let image = oci::image_archive(
        &oci::template_rootfs(&c, "minimal"),
        "docker.io/cells/minimal:1",
        &["/init"],
        &work.join("image"),
    );
    let ctrd = Containerd::start(
        &work.join("containerd"),
        &c.socket,
        "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]",
    );
    let ok = |args: &[&str]| -> String {
        let o = ctrd.ctr(args);
        assert!(
            o.status.success(),
            "ctr {args:?}: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            ctrd.log()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    ok(&["images", "import", image.to_str().unwrap()]);
    let id = format!("ctr{}", std::process::id() % 100_000);
    let runc_root = work.join("runc-root");
    ok(&[
        "run",
        "-d",
        "--runc-binary",
        runtime.to_str().unwrap(),
        "--runc-root",
        runc_root.to_str().unwrap(),
        "docker.io/cells/minimal:1",
        &id,
    ]);
    // The container is a VP: cellctl lists it, it runs its persona, execs work.
    assert_eq!(c.status(&id)["state"], "running");
    // cellsd may restart meanwhile (its VPs run on): it adopts the
    // container's VP from its definition and run state.
    c.end_daemon(libc::SIGTERM);
    c.start_daemon();
    assert_eq!(c.status(&id)["state"], "running", "{}", c.daemon_log());
    // What only containerd may do is refused to cellctl, naming why.
    let e = c.fails(&["checkpoint", &id]);
    assert!(e.contains("OCI container"), "{e}");
    let tasks = ok(&["task", "ls"]);
    assert!(tasks.contains(&id) && tasks.contains("RUNNING"), "{tasks}");
    assert_eq!(c.sh_ok(&id, "echo $CELLS_VP").trim(), id);
    assert!(Cells::wait_until(Duration::from_secs(10), || c
        .ctl(&["screenshot", "--vp", &id, "-o", "/dev/null"])
        .code
        == 0));
    // ctr's exec: the shim runs cells-runtime exec and reaps the helper.
    let o = ctrd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        &id,
        "/bin/sh",
        "-c",
        "echo in-$CELLS_VP; exit 5",
    ]);
    assert_eq!(
        o.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("in-{id}")));
    let ps = ok(&["task", "ps", &id]);
    let init = c.status(&id)["pid"].as_u64().unwrap();
    assert!(ps.contains(&init.to_string()), "{ps}");
    // A kill ends it; the shim sees the exit (137: SIGKILL).
    ok(&["task", "kill", "-s", "SIGKILL", &id]);
    assert!(Cells::wait_until(Duration::from_secs(20), || ok(&[
        "task", "ls"
    ])
    .contains("STOPPED")));
    let o = ctrd.ctr(&["task", "delete", &id]);
    let said =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(said.contains("137") || o.status.success(), "{said}");
    ok(&["container", "rm", &id]);
    // Gone from cells too (the shim ran cells-runtime delete).
    assert!(Cells::wait_until(Duration::from_secs(10), || c
        .ctl(&["status", &id])
        .code
        != 0));
}

/// A CRI client call (tests/cri/cri.py): its JSON answer.
fn cri(sock: &Path, args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("cri/cri.py");
    let o = Command::new("python3")
        .arg(script)
        .arg(sock)
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "cri.py {args:?}: {text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("cri.py {args:?}: {e}: {text}"))
}

#[test]
fn a_kubernetes_pod_through_cri() {
    if !oci::containerd_available() || !oci::cri_client_available() {
        eprintln!("SKIP: containerd or the CRI client not unpacked (scripts/install-deps)");
        return;
    }
    let c = Cells::new();
    let ctrd = oci::cri_node(&c, &c.root.join("cri"));
    let sock = &ctrd.socket;
    assert_eq!(cri(sock, &["version"])["runtimeName"], "containerd");

    // The pod's sandbox is a VP without devices (it holds the pod's
    // namespaces); the container is a VP with its devices.
    let pod = cri(sock, &["runp", "phone-pod", "cells"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let list = c.ok(&["list"]);
    assert!(list.contains("phone-pod-"), "{list}");
    let cid = cri(
        sock,
        &[
            "create",
            &pod,
            "persona",
            "docker.io/cells/minimal:1",
            "--",
            "/init",
        ],
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    cri(sock, &["start", &cid]);
    let vps: Vec<serde_json::Value> = serde_json::from_str(&c.ok(&["list", "--json"])).unwrap();
    let vp = vps
        .iter()
        .find(|v| v["name"].as_str().unwrap_or("").starts_with("persona-"))
        .unwrap_or_else(|| panic!("no persona VP in {vps:?}"))
        .clone();
    let name = vp["name"].as_str().unwrap().to_string();
    assert_eq!(vp["state"], "running");
    // The sandbox never took the screen; the persona shows.
    assert!(Cells::wait_until(Duration::from_secs(10), || c
        .ctl(&["screenshot", "--vp", &name, "-o", "/dev/null"])
        .code
        == 0));
    let sandbox = vps
        .iter()
        .find(|v| v["name"].as_str().unwrap_or("").starts_with("phone-pod-"))
        .unwrap();
    assert_eq!(sandbox["foreground"], false);

    // ExecSync runs in the VP (the shim reaps the exec helper).
    let r = cri(
        sock,
        &["exec", &cid, "/bin/sh", "-c", "echo in-$CELLS_VP; exit 4"],
    );
    assert_eq!(r["code"], 4, "{r}");
    assert_eq!(r["stdout"].as_str().unwrap().trim(), format!("in-{name}"));
    let st = cri(sock, &["status", &cid]);
    assert_eq!(st["status"]["state"], "CONTAINER_RUNNING", "{st}");
    let stats = cri(sock, &["stats", &cid]);
    let mem = stats["stats"]["memory"]["workingSetBytes"]["value"]
        .as_str()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(mem > 0, "{stats}");
    cri(sock, &["update", &cid, "400000000"]);
    let limit = c
        .vp_cgroup_dirs(&name)
        .iter()
        .find_map(|d| std::fs::read_to_string(d.join("memory.limit_in_bytes")).ok())
        .unwrap();
    let limit: u64 = limit.trim().parse().unwrap();
    assert!((399_990_000..=400_000_000).contains(&limit), "{limit}");

    cri(sock, &["stop", &cid]);
    let st = cri(sock, &["status", &cid]);
    assert_eq!(st["status"]["state"], "CONTAINER_EXITED", "{st}");
    cri(sock, &["rm", &cid]);
    assert!(Cells::wait_until(Duration::from_secs(10), || c
        .ctl(&["status", &name])
        .code
        != 0));
    cri(sock, &["stopp", &pod]);
    cri(sock, &["rmp", &pod]);
    assert!(Cells::wait_until(Duration::from_secs(10), || !c
        .ok(&["list"])
        .contains("phone-pod-")));
}

/// The build's root of template `t`.
fn build_root(c: &Cells, t: &str) -> std::path::PathBuf {
    oci::template_rootfs(c, t)
}

#[test]
fn oci_images_become_templates() {
    let c = Cells::new();
    let work = c.root.join("img");
    let minimal = oci::template_rootfs(&c, "minimal");
    // Layer 1: the minimal persona plus files the next layer removes.
    let l1 = work.join("l1");
    std::fs::create_dir_all(&l1).unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", minimal.display()))
        .arg(&l1)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::create_dir_all(l1.join("opq")).unwrap();
    for f in ["opq/x", "opq/y", "del-me", "keep-me"] {
        std::fs::write(l1.join(f), f).unwrap();
    }
    std::os::unix::fs::chown(l1.join("keep-me"), Some(1234), Some(1234)).unwrap();
    // Layer 2: whiteouts (a file, and an opaque folder) and additions.
    let l2 = work.join("l2");
    std::fs::create_dir_all(l2.join("opq")).unwrap();
    std::fs::write(l2.join(".wh.del-me"), "").unwrap();
    std::fs::write(l2.join("opq/.wh..wh..opq"), "").unwrap();
    std::fs::write(l2.join("opq/z"), "z").unwrap();
    std::fs::write(l2.join("added"), "from layer 2").unwrap();
    let archive = oci::docker_archive(&[&l1, &l2], &["/init"], &work);

    let check = |t: &str| {
        let root = build_root(&c, t);
        assert!(!root.join("del-me").exists(), "{t}: whiteout");
        assert!(
            !root.join("opq/x").exists() && !root.join("opq/y").exists(),
            "{t}: opaque"
        );
        assert_eq!(std::fs::read_to_string(root.join("opq/z")).unwrap(), "z");
        assert_eq!(
            std::fs::read_to_string(root.join("added")).unwrap(),
            "from layer 2"
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(root.join("keep-me")).unwrap().uid(),
            1234,
            "{t}: owner"
        );
        assert!(!root.join(".wh.del-me").exists() && !root.join("opq/.wh..wh..opq").exists());
    };
    c.ok(&[
        "template",
        "import",
        "fromdocker",
        &format!("docker-archive:{}", archive.display()),
    ]);
    check("fromdocker");
    // A VP of it boots the image's /init (the persona).
    c.ok(&["create", "d1", "--template", "fromdocker", "--disk", "none"]);
    c.ok(&["start", "d1"]);
    assert_eq!(c.sh_ok("d1", "cat /added").trim(), "from layer 2");
    assert!(c.sh("d1", "test -e /del-me").code != 0);

    // The same image as OCI (skopeo's conversion: gzip layers), from an
    // archive and from a layout folder.
    let oci_tar = work.join("image-oci.tar");
    let layout = work.join("layout");
    for dest in [
        format!("oci-archive:{}:1", oci_tar.display()),
        format!("oci:{}:1", layout.display()),
    ] {
        let o = Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                &format!("docker-archive:{}", archive.display()),
                &dest,
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    c.ok(&[
        "template",
        "import",
        "fromoci",
        &format!("oci-archive:{}:1", oci_tar.display()),
    ]);
    check("fromoci");
    c.ok(&[
        "template",
        "import",
        "fromdir",
        &format!("oci:{}:1", layout.display()),
    ]);
    check("fromdir");
    let e = c.fails(&[
        "template",
        "import",
        "x",
        &format!("oci:{}:nope", layout.display()),
    ]);
    assert!(e.contains("no manifest tagged 'nope'"), "{e}");
    // A damaged blob is refused before cellsd sees it.
    let blobs = layout.join("blobs/sha256");
    let biggest = std::fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .path();
    let mut data = std::fs::read(&biggest).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&biggest, data).unwrap();
    let e = c.fails(&[
        "template",
        "import",
        "x",
        &format!("oci:{}:1", layout.display()),
    ]);
    assert!(e.contains("damaged"), "{e}");

    // Escape: a layer whose members climb out (`../`), are absolute, or go
    // through a symlink of an earlier member to the host's root is applied
    // without writing outside the build (control: its plain member lands).
    let marker = format!("cells-escape-{}", std::process::id());
    let evil = work.join("evil.tar");
    let py = format!(
        r#"import tarfile, io
t = tarfile.open("{evil}", "w")
def add(name, data=b"x", kind=tarfile.REGTYPE, link=""):
    i = tarfile.TarInfo(name); i.type = kind; i.linkname = link
    i.size = len(data) if kind == tarfile.REGTYPE else 0
    t.addfile(i, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
add("plain-file", b"ok")
add("../../../../../../tmp/{marker}-dotdot")
add("/tmp/{marker}-abs")
add("hostroot", kind=tarfile.SYMTYPE, link="/")
add("hostroot/tmp/{marker}-link")
add("hostlink", kind=tarfile.LNKTYPE, link="/etc/hostname")
t.close()
"#,
        evil = evil.display()
    );
    let st = Command::new("python3").args(["-c", &py]).status().unwrap();
    assert!(st.success());
    let evil_dir = work.join("evil-docker");
    std::fs::create_dir_all(&evil_dir).unwrap();
    std::fs::copy(&evil, evil_dir.join("layer1.tar")).unwrap();
    let st = Command::new("tar")
        .arg("-C")
        .arg(work.join("docker"))
        .arg("-cf")
        .arg(evil_dir.join("base.tar"))
        .arg("layer0.tar")
        .arg("config.json")
        .status()
        .unwrap();
    assert!(st.success());
    let st = Command::new("tar")
        .arg("-C")
        .arg(&evil_dir)
        .arg("-xf")
        .arg(evil_dir.join("base.tar"))
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(
        evil_dir.join("manifest.json"),
        serde_json::json!([{"Config": "config.json", "Layers": ["layer0.tar", "layer1.tar"]}])
            .to_string(),
    )
    .unwrap();
    let evil_archive = work.join("evil-image.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&evil_dir)
        .arg("-cf")
        .arg(&evil_archive)
        .args(["manifest.json", "config.json", "layer0.tar", "layer1.tar"])
        .status()
        .unwrap();
    assert!(st.success());
    let out = c.ctl(&[
        "template",
        "import",
        "evil",
        &format!("docker-archive:{}", evil_archive.display()),
    ]);
    for suffix in ["dotdot", "abs", "link"] {
        let p = std::path::PathBuf::from(format!("/tmp/{marker}-{suffix}"));
        assert!(
            !p.exists(),
            "{} was written on the host ({out:?})",
            p.display()
        );
    }
    if out.code == 0 {
        // Applied: its plain member is there, the hard link is no link to
        // the host's file.
        let root = build_root(&c, "evil");
        assert_eq!(
            std::fs::read_to_string(root.join("plain-file")).unwrap(),
            "ok"
        );
        use std::os::unix::fs::MetadataExt;
        let host = std::fs::metadata("/etc/hostname").unwrap();
        if let Ok(m) = std::fs::metadata(root.join("hostlink")) {
            assert!(
                m.ino() != host.ino() || m.dev() != host.dev(),
                "hard link to the host's file"
            );
        }
    } else {
        assert!(out.stderr.contains("layer 2"), "{out:?}");
    }
}

#[test]
fn a_template_pulled_from_a_registry() {
    if !oci::registry_available() {
        eprintln!("SKIP: docker-registry or skopeo missing (scripts/install-deps)");
        return;
    }
    let c = Cells::new();
    let work = c.root.join("reg");
    let registry = oci::Registry::start(&work.join("registry"));
    let image = oci::image_archive(
        &oci::template_rootfs(&c, "minimal"),
        "docker.io/cells/minimal:1",
        &["/init"],
        &work.join("image"),
    );
    let dest = format!("docker://{}/cells/minimal:1", registry.addr);
    let o = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}:1", image.display()))
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "skopeo push: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let reference = format!("{}/cells/minimal:1", registry.addr);
    c.ok(&["template", "pull", "pulled", &reference]);
    let list = c.ok(&["template", "list"]);
    assert!(list.contains("pulled"), "{list}");
    c.ok(&["create", "p1", "--template", "pulled", "--disk", "none"]);
    c.ok(&["start", "p1"]);
    assert_eq!(c.sh_ok("p1", "echo $CELLS_VP").trim(), "p1");
    // Errors name what was wrong.
    let e = c.fails(&[
        "template",
        "pull",
        "x",
        &format!("{}/cells/minimal:nope", registry.addr),
    ]);
    assert!(e.contains("404"), "{e}");
    let e = c.fails(&["template", "pull", "x", "not a reference"]);
    assert!(e.contains("not an image reference"), "{e}");
}
