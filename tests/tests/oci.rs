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
    let work = c.root.join("cri");
    let runtime = oci::runtime_link(&c.bin, &work.join("bin"));
    let rootfs = oci::template_rootfs(&c, "minimal");
    let app = oci::image_archive(
        &rootfs,
        "docker.io/cells/minimal:1",
        &["/init"],
        &work.join("app"),
    );
    let pause = oci::image_archive(
        &rootfs,
        "docker.io/cells/pause:1",
        &[
            "/bin/sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 1; done",
        ],
        &work.join("pause"),
    );
    let ctrd = Containerd::start(
        &work.join("containerd"),
        &c.socket,
        &oci::cri_config(&work, &runtime, "docker.io/cells/pause:1"),
    );
    for img in [&app, &pause] {
        let o = ctrd.ctr(&["-n", "k8s.io", "images", "import", img.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
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
