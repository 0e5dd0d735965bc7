//! Test harness: a private cellsd per test, with its own state dir, run dir
//! and cgroup parent, driven through the real cellctl binary.
//!
//! The binaries are the workspace's own builds, found next to the test
//! executable (`cargo build --workspace` first; tests/run does it).
//! Everything a test creates is removed when its [`Cells`] is dropped: VPs
//! are stopped, the daemon is ended by pid, leftover monitors (found by pid
//! in the run dir) are killed, the cgroup parent and the temp dir removed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use serde_json::Value;

pub mod adb;
pub mod browser;
pub mod modem;
pub mod oci;
pub mod sip;
pub mod sound;
pub mod ssh;
pub mod stats;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A private copy of the repository's recipes at `dst`, to change in a
/// test or a benchmark.
pub fn copy_recipes(dst: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rootfs-templates");
    let _ = std::fs::remove_dir_all(dst);
    let ok = Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(dst)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "copy {} to {}", src.display(), dst.display());
    dst.to_path_buf()
}

/// Folder holding cellsd, cellctl and cells-init of this build.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // A test is target/<triple>/<profile>/deps/<test>; a bench binary sits
    // next to cellsd in target/<triple>/<profile>.
    let mut dir = exe.parent().expect("target dir").to_path_buf();
    if !dir.join("cellsd").is_file() {
        dir = dir.parent().expect("target dir").to_path_buf();
    }
    for b in ["cellsd", "cellctl", "cells-init"] {
        assert!(
            dir.join(b).is_file(),
            "{} missing: run `cargo build --workspace` before the tests (tests/run does)",
            dir.join(b).display()
        );
    }
    dir
}

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the integration tests start real VPs and must run as root"
    );
}

/// Result of a cellctl run.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Out {
    fn from(o: Output) -> Self {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

pub struct Cells {
    pub root: PathBuf,
    pub state: PathBuf,
    pub run: PathBuf,
    pub socket: PathBuf,
    pub bin: PathBuf,
    pub cgroup_parent: String,
    /// Recipes folder given to cellsd (None: the repository's).
    pub templates_dir: Option<PathBuf>,
    /// Extra cellsd arguments.
    pub extra_args: Vec<String>,
    /// This daemon's own bridge, subnet and adb ports (tests run in
    /// parallel, each with a cellsd of its own).
    pub bridge: String,
    pub subnet: String,
    pub adb_port_base: u16,
    daemon: Option<Child>,
}

impl Cells {
    /// A fresh daemon with the `minimal` template built.
    pub fn new() -> Self {
        let c = Self::bare(None);
        c.ok(&["template", "build", "minimal"]);
        c
    }

    /// A fresh daemon, nothing built; `templates_dir` overrides the recipes.
    pub fn bare(templates_dir: Option<PathBuf>) -> Self {
        Self::with_args(templates_dir, &[])
    }

    /// A fresh daemon with extra cellsd arguments (e.g. `--panel ...`).
    pub fn with_args(templates_dir: Option<PathBuf>, extra: &[&str]) -> Self {
        require_root();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let root = std::env::temp_dir().join(format!("cells-test-{pid}-{n}"));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("temp dir");
        let mut c = Cells {
            state: root.join("state"),
            run: root.join("run"),
            socket: root.join("run/cellsd.sock"),
            bin: bin_dir(),
            cgroup_parent: format!("cells-test-{pid}-{n}"),
            templates_dir,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            bridge: format!("c{}x{}", pid % 100_000, n % 100),
            subnet: format!("10.{}.{}.0/24", 200 + n % 50, pid % 256),
            // 40 ports per test process; 5 per daemon (a daemon's VPs take
            // base + slot, so daemons of one process must not overlap).
            adb_port_base: 20_000 + ((pid % 1000) as u16) * 40 + (n % 8) as u16 * 5,
            daemon: None,
            root,
        };
        c.start_daemon();
        c
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(|c| c.id())
    }

    pub fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "daemon already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("cellsd.log"))
            .expect("daemon log");
        let mut cmd = Command::new(self.bin.join("cellsd"));
        cmd.arg("--state-dir")
            .arg(&self.state)
            .arg("--run-dir")
            .arg(&self.run)
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(t) = &self.templates_dir {
            cmd.arg("--templates-dir").arg(t);
        }
        let given = |flag: &str| self.extra_args.iter().any(|a| a == flag);
        if !given("--bridge") {
            cmd.arg("--bridge").arg(&self.bridge);
        }
        if !given("--subnet") {
            cmd.arg("--subnet").arg(&self.subnet);
        }
        if !given("--adb-port-base") {
            cmd.arg("--adb-port-base")
                .arg(self.adb_port_base.to_string());
        }
        // NAT turns the host's IPv4 forwarding on: only where a test asks.
        if !given("--nat") {
            cmd.arg("--nat").arg("off");
        }
        cmd.args(&self.extra_args);
        self.daemon = Some(cmd.spawn().expect("spawn cellsd"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.socket.exists() && self.ctl(&["list"]).code == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let locks = Command::new("lslocks")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        panic!(
            "cellsd did not come up; log:\n{}\nlocks:\n{locks}",
            self.daemon_log()
        );
    }

    /// SIGTERM (a clean daemon exit that leaves VPs running) or SIGKILL (a crash).
    pub fn end_daemon(&mut self, signal: i32) {
        if let Some(mut child) = self.daemon.take() {
            // SAFETY: signalling the daemon this harness started, by pid.
            unsafe { libc::kill(child.id() as i32, signal) };
            let _ = child.wait();
        }
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.root.join("cellsd.log")).unwrap_or_default()
    }

    pub fn ctl_cmd(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("cellctl"));
        cmd.env("CELLS_SOCKET", &self.socket);
        cmd
    }

    pub fn ctl(&self, args: &[&str]) -> Out {
        self.ctl_cmd()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run cellctl")
            .into()
    }

    /// Run cellctl and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert_eq!(
            o.code,
            0,
            "cellctl {args:?} failed: {o:?}\ndaemon log:\n{}",
            self.daemon_log()
        );
        o.stdout
    }

    /// Run cellctl and require failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert_ne!(o.code, 0, "cellctl {args:?} should have failed: {o:?}");
        o.stderr
    }

    /// `cellctl exec VP -- sh -c SCRIPT`.
    pub fn sh(&self, vp: &str, script: &str) -> Out {
        self.ctl(&["exec", vp, "--", "sh", "-c", script])
    }

    /// Like [`Cells::sh`], requiring exit 0; returns stdout.
    pub fn sh_ok(&self, vp: &str, script: &str) -> String {
        let o = self.sh(vp, script);
        assert_eq!(o.code, 0, "in {vp}: {script}: {o:?}");
        o.stdout
    }

    /// A screenshot of the panel (`vp` None) or of a VP's framebuffer,
    /// decoded: (width, height, RGB bytes).
    pub fn shot(&self, vp: Option<&str>) -> (u32, u32, Vec<u8>) {
        let out = self
            .root
            .join(format!("shot-{}.png", vp.unwrap_or("panel")));
        let o = out.to_string_lossy().to_string();
        match vp {
            Some(v) => self.ok(&["screenshot", "--vp", v, "-o", &o]),
            None => self.ok(&["screenshot", "-o", &o]),
        };
        let png = std::fs::read(&out).expect("screenshot file");
        mux_fb::screenshot::decode_png(&png).expect("screenshot PNG")
    }

    /// Copy the escape suite's probe (`cells-probe`) into a running VP as
    /// /data/probe.
    pub fn push_probe(&self, vp: &str) {
        let bin = std::fs::File::open(self.bin.join("cells-probe"))
            .expect("cells-probe built next to cellsd (cargo build --workspace)");
        let o: Out = self
            .ctl_cmd()
            .args([
                "exec",
                vp,
                "--",
                "sh",
                "-c",
                "cat > /data/probe && chmod 755 /data/probe",
            ])
            .stdin(Stdio::from(bin))
            .output()
            .expect("run cellctl")
            .into();
        assert_eq!(o.code, 0, "copy the probe into {vp}: {o:?}");
    }

    /// Run the probe in a VP (after [`Cells::push_probe`]).
    pub fn probe(&self, vp: &str, args: &[&str]) -> Out {
        let mut a = vec!["exec", vp, "--", "/data/probe"];
        a.extend_from_slice(args);
        self.ctl(&a)
    }

    pub fn status(&self, vp: &str) -> Value {
        serde_json::from_str(&self.ok(&["status", vp, "--json"])).expect("status JSON")
    }

    /// The host path of a running VP's folder `sub` (upper, work, data):
    /// on its disk image, seen through its monitor's mount namespace
    /// (`/proc/MONITOR/root<run>/vps/VP/disk/SUB`), or in the state folder
    /// for a VP made with `--disk none`.
    pub fn vp_folder(&self, vp: &str, sub: &str) -> PathBuf {
        let init = self.status(vp)["pid"].as_u64().expect("the VP runs");
        let stat = std::fs::read_to_string(format!("/proc/{init}/stat")).expect("init's stat");
        // Fields after the ")" that ends the command: state, ppid, ...
        let ppid: u64 = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .expect("init's parent");
        let disk = PathBuf::from(format!("/proc/{ppid}/root"))
            .join(self.run.strip_prefix("/").unwrap_or(&self.run))
            .join("vps")
            .join(vp)
            .join("disk");
        if self.state.join("vps").join(vp).join("disk.img").exists() {
            disk.join(sub)
        } else {
            self.state.join("vps").join(vp).join(sub)
        }
    }

    /// A D-Bus connection to this daemon and its Manager1 proxy.
    pub async fn dbus(&self) -> (zbus::Connection, cellsd::api::Manager1Proxy<'static>) {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .expect("connect");
        let conn = zbus::connection::Builder::unix_stream(stream)
            .p2p()
            .build()
            .await
            .expect("D-Bus connection");
        let p = cellsd::api::Manager1Proxy::builder(&conn)
            .destination("org.cells")
            .expect("destination")
            .build()
            .await
            .expect("proxy");
        (conn, p)
    }

    pub fn create_start(&self, vp: &str) {
        self.ok(&["create", vp, "--template", "minimal"]);
        self.ok(&["start", vp]);
    }

    /// Wait until `cond` holds, at most `timeout`; false if it never did.
    pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if cond() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The cgroup directories of a VP in every hierarchy.
    pub fn vp_cgroup_dirs(&self, vp: &str) -> Vec<PathBuf> {
        let h = cellsd::cgroup::Hierarchy::detect().expect("cgroup hierarchy");
        h.dirs(Path::new(&format!("{}/{vp}", self.cgroup_parent)))
    }

    /// Mount points that mention this harness's folder, seen from the host.
    pub fn host_mounts(&self) -> Vec<String> {
        let root = self.root.to_string_lossy().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&root))
            .map(String::from)
            .collect()
    }

    fn cleanup(&mut self) {
        if self.daemon.is_some() {
            if let Ok(list) = serde_json::from_str::<Value>(&self.ctl(&["list", "--json"]).stdout) {
                for vp in list.as_array().into_iter().flatten() {
                    if vp["state"] == "running" {
                        if let Some(n) = vp["name"].as_str() {
                            let _ = self.ctl(&["stop", n, "--timeout", "3"]);
                        }
                    }
                }
            }
        }
        self.end_daemon(libc::SIGTERM);
        // Monitors of VPs that are still up (a test that crashed the daemon).
        for e in std::fs::read_dir(self.run.join("vps"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let run = e.path().join("run.json");
            let Some(v) = std::fs::read_to_string(&run)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            else {
                continue;
            };
            for key in ["init_pid", "monitor_pid"] {
                if let Some(pid) = v[key].as_i64() {
                    let start = v[key.replace("pid", "start_time")].as_u64();
                    if cellsd::sys::process_start_time(pid as i32) == start {
                        // SAFETY: killing a process this test's daemon started, by pid.
                        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        self.remove_network();
        if let Ok(h) = cellsd::cgroup::Hierarchy::detect() {
            for d in h.dirs(Path::new(&self.cgroup_parent)) {
                for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                    if e.path().is_dir() {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
                let _ = std::fs::remove_dir(&d);
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Cells {
    /// Links of this daemon's network that exist now: its bridge and VP ports.
    pub fn network_links(&self) -> Vec<String> {
        use cellsd::devices::network::{netlink::Rtnl, slot_of_host_if};
        let Ok(rtnl) = Rtnl::open() else {
            return Vec::new();
        };
        rtnl.links()
            .unwrap_or_default()
            .into_iter()
            .filter(|l| l.name == self.bridge || slot_of_host_if(&self.bridge, &l.name).is_some())
            .map(|l| l.name)
            .collect()
    }

    /// What a crashed daemon of this test left: its bridge, VP ports and
    /// nftables tables (a clean cellsd exit removes them itself).
    fn remove_network(&self) {
        use cellsd::devices::network::{netlink::Rtnl, nft, slot_of_host_if};
        if let Ok(rtnl) = Rtnl::open() {
            for l in rtnl.links().unwrap_or_default() {
                if l.name == self.bridge || slot_of_host_if(&self.bridge, &l.name).is_some() {
                    let _ = rtnl.del_link(l.index);
                }
            }
        }
        if nft::available() {
            let _ = nft::apply(&nft::delete_script(&self.bridge));
        }
        // The lock file a SIGKILLed cellsd could not remove.
        let _ = std::fs::remove_file(
            Path::new(cellsd::devices::network::host::BRIDGE_LOCK_DIR)
                .join(format!("{}.lock", self.bridge)),
        );
    }
}

/// The colour of pixel (x, y) of a decoded screenshot.
pub fn pixel(img: &(u32, u32, Vec<u8>), x: u32, y: u32) -> mux_fb::geometry::Rgb {
    let i = ((y * img.0 + x) * 3) as usize;
    mux_fb::geometry::Rgb::new(img.2[i], img.2[i + 1], img.2[i + 2])
}

impl Default for Cells {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Cells {
    fn drop(&mut self) {
        self.cleanup();
    }
}
