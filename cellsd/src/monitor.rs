//! The VP monitor: the re-exec'd, single-threaded helper that starts one VP
//! and stays with it until it ends (`cellsd __monitor`).
//!
//! cellsd never forks from its async runtime; it execs itself as a monitor,
//! hands it a [`MonitorRequest`] on stdin and reads [`MonitorEvent`]s from
//! stdout. The monitor:
//! 1. enters a private mount namespace (nothing it mounts is seen by the host);
//! 2. clones the VP's init into new pid, user, uts, ipc and net namespaces;
//! 3. writes the init's uid/gid maps, mounts the template read-only and
//!    idmapped (host root appears as VP root) as overlay's lower layer under
//!    the VP's writable upper layer, and puts the init in the VP's cgroup;
//! 4. reports the init's pid and waits for cellsd's "go" (cellsd opens a pidfd
//!    first, so the pid cannot be reused unseen);
//! 5. lets the init build its filesystem (rootfs.rs), pivot_root and exec;
//! 6. then relays the VP's console (a pty) to a log file and to clients of its
//!    console socket, reaps the init, and removes the VP's cgroup when it ends.
//!
//! The monitor runs in its own session, so the VP survives a crash or restart
//! of cellsd; cellsd finds it again through `<run>/vps/NAME/run.json`.

use crate::devices::model;
use std::ffi::CString;
use std::io::{BufRead, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::LinuxNamespaceType;
use serde::{Deserialize, Serialize};

use crate::cgroup::VpCgroup;
use crate::config::{cap_number, VpConfig};
use crate::devices::display::DisplayMode;
use crate::devices::input::router::DeviceKind;
use crate::devices::input::sink::Backend;
use crate::devices::network;
use crate::devices::power::{self, fs::VpPower};
use crate::devices::{display, input};
use crate::{rootfs, sys};
use mux_fb::Geometry;

/// Console log is rotated (to console.log.1) past this size.
pub const CONSOLE_LOG_MAX: u64 = 1 << 20;
/// The console relay's budget (bytes per second, and the burst): a VP that
/// floods its console is slowed down (its writes block on the full pty)
/// instead of keeping its monitor busy outside the VP's cgroup.
pub const CONSOLE_RATE: u64 = 256 << 10;
pub const CONSOLE_BURST: u64 = 1 << 20;

/// A token bucket over the console's bytes.
struct Budget {
    tokens: f64,
    last: std::time::Instant,
}

impl Budget {
    fn new() -> Self {
        Self {
            tokens: CONSOLE_BURST as f64,
            last: std::time::Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = std::time::Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * CONSOLE_RATE as f64).min(CONSOLE_BURST as f64);
    }

    /// Milliseconds until a read may go on (0: now).
    fn wait_ms(&self) -> i32 {
        if self.tokens > 0.0 {
            0
        } else {
            ((-self.tokens + 16384.0) * 1000.0 / CONSOLE_RATE as f64).ceil() as i32
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MonitorRequest {
    pub config: VpConfig,
    /// The template build's rootfs: the shared, read-only lower layer.
    pub template_rootfs: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// The VP's disk image, mounted before anything else (upper, work and
    /// the /data source are below its mount point then).
    #[serde(default)]
    pub disk: Option<crate::disk::DiskRequest>,
    /// `<run>/vps/NAME`: holds the mount points and the console socket.
    pub run_dir: PathBuf,
    pub console_log: PathBuf,
    pub console_socket: PathBuf,
    pub run_state: PathBuf,
    pub cgroup: VpCgroup,
    /// The template build (recorded in the run state).
    pub template_build: String,
    /// The monitor's log from here on (a spare monitor logs elsewhere before).
    pub monitor_log: PathBuf,
    /// The VP's devices to make.
    pub devices: DeviceRequest,
    /// Environment added to the VP's init (runtime facts: colour, framebuffer).
    #[serde(default)]
    pub extra_env: Vec<String>,
    /// Log the time of each start phase to the monitor log (cellsd --log debug).
    #[serde(default)]
    pub trace: bool,
    /// The VP's network (None: loopback only and the template's /etc files).
    #[serde(default)]
    pub network: Option<network::NetRequest>,
    /// The VP's initial system properties (ro.product.model, ...).
    #[serde(default)]
    pub properties: Vec<(String, String)>,
    /// The folder of the VP's authorized adb keys, bound read-only as its
    /// /dev/adb.
    #[serde(default)]
    pub adb_keys: Option<PathBuf>,
    /// Mark the VP's processes mergeable for KSM (PR_SET_MEMORY_MERGE,
    /// inherited by everything the init starts).
    #[serde(default)]
    pub ksm: bool,
}

/// Where the VP sees its authorized adb keys (adbd reads `adb_keys` there).
pub const VP_ADB_DIR: &str = "/dev/adb";

/// The devices a VP gets (see [`crate::devices`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceRequest {
    /// The panel's geometry: the VP's framebuffer has the same.
    pub geometry: Geometry,
    pub input: Backend,
    #[serde(default)]
    pub binder: BinderRequest,
    /// Framebuffer file (cellsd composes) or a mux_fb kernel device.
    #[serde(default = "userspace_display")]
    pub display: DisplayMode,
}

fn userspace_display() -> DisplayMode {
    DisplayMode::Userspace
}

/// The VP's binder device (see [`crate::devices::binder`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum BinderRequest {
    #[default]
    None,
    /// The init mounts its own binderfs instance.
    Binderfs,
    /// This node of binder_linux's pool becomes the VP's /dev/binder.
    Device(PathBuf),
}

/// The VP's devices as the monitor holds them: fd numbers in the monitor
/// (cellsd takes them with pidfd_getfd) and what they are.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceFds {
    pub geometry: Geometry,
    pub fb: i32,
    pub input_backend: Backend,
    pub inputs: Vec<(DeviceKind, i32)>,
    /// The pool binder device the VP holds, if any.
    #[serde(default)]
    pub binder: Option<PathBuf>,
    /// With the mux_fb kernel module: N of the VP's /dev/fbN (fb is -1).
    #[serde(default)]
    pub fb_node: Option<u32>,
}

/// A running VP's identity, written by the monitor as
/// `<run>/vps/NAME/run.json` so that a restarted cellsd finds the VP again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunState {
    pub init_pid: i32,
    pub init_start_time: u64,
    pub monitor_pid: i32,
    pub monitor_start_time: u64,
    /// Unix seconds.
    pub started_at: u64,
    pub template_build: String,
    pub devices: DeviceFds,
}

impl RunState {
    /// True if the recorded init is still the process with that pid.
    pub fn init_alive(&self) -> bool {
        sys::process_start_time(self.init_pid) == Some(self.init_start_time)
    }
}

/// How cellsd prepares a spare monitor (argv[2] of `cellsd __monitor`): it
/// joins `cgroup` (a spare cgroup) while it waits for a VP to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpareSetup {
    pub cgroup: VpCgroup,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum MonitorEvent {
    /// The VP's init exists (blocked) with this host pid.
    Init {
        pid: i32,
    },
    /// The init has exec'd.
    Started,
    Failed {
        error: String,
    },
}

fn log(msg: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    eprintln!(
        "[{}.{:03}] monitor: {msg}",
        now.as_secs(),
        now.subsec_millis()
    );
}

static TRACE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// With `trace` on, log how long after the monitor's start a phase ended.
fn phase(name: &str) {
    if let Some(t0) = TRACE.get() {
        eprintln!("monitor: {:>6} us  {name}", t0.elapsed().as_micros());
    }
}

fn emit(ev: &MonitorEvent) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", serde_json::to_string(ev).unwrap_or_default());
    let _ = out.flush();
}

/// Namespace flags the init is cloned with (mount and cgroup come later:
/// the init unshares them itself once the monitor has prepared the mounts
/// and moved it into its cgroup).
pub fn clone_flags(cfg: &VpConfig) -> CloneFlags {
    let mut flags = CloneFlags::empty();
    let ns = cfg
        .runtime
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for n in ns {
        flags |= match n.typ() {
            LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
            LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
            LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
            LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
            LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
            _ => CloneFlags::empty(),
        };
    }
    flags
}

/// The capability numbers of the VP's bounding set.
pub fn bounding_set(cfg: &VpConfig) -> Vec<u32> {
    cfg.runtime
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.bounding().as_ref())
        .map(|set| {
            set.iter()
                .filter_map(|c| serde_json::to_value(c).ok())
                .filter_map(|v| v.as_str().and_then(cap_number))
                .collect()
        })
        .unwrap_or_default()
}

/// Drop every capability outside `keep` from the bounding set.
pub fn restrict_bounding_set(keep: &[u32]) -> std::io::Result<()> {
    for cap in 0..=sys::last_cap() {
        if !keep.contains(&cap) {
            sys::capbset_drop(cap)?;
        }
    }
    Ok(())
}

/// Mark every fd from 3 up close-on-exec, so nothing of the monitor or of
/// cellsd leaks into the VP.
pub fn cloexec_from(first: u32) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 4;
    // SAFETY: close_range only changes fd flags.
    unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) };
}

/// Unblock every signal and restore default dispositions before exec.
pub fn reset_signals() {
    let _ = SigSet::empty().thread_set_mask();
    for s in 1..32 {
        if s == libc::SIGKILL || s == libc::SIGSTOP {
            continue;
        }
        // SAFETY: restoring SIG_DFL is always valid.
        unsafe { libc::signal(s, libc::SIG_DFL) };
    }
}

/// Turn up the loopback interface of the (new) network namespace.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: ioctl on a fresh socket with a zeroed, NUL-terminated ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let sock = OwnedFd::from_raw_fd(fd);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// execve with a PATH search taken from `env`; returns only on failure.
pub fn exec_in_path(args: &[String], env: &[String]) -> std::io::Error {
    let Some(prog) = args.first() else {
        return std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command");
    };
    let cargs: Vec<CString> = match args.iter().map(|a| CString::new(a.as_str())).collect() {
        Ok(v) => v,
        Err(_) => return std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in argument"),
    };
    let cenv: Vec<CString> = env
        .iter()
        .filter_map(|e| CString::new(e.as_str()).ok())
        .collect();
    let mut argv: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = cenv.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());

    let candidates: Vec<String> = if prog.contains('/') {
        vec![prog.clone()]
    } else {
        let path = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or("/system/bin:/bin");
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| format!("{d}/{prog}"))
            .collect()
    };
    let mut last = std::io::Error::from_raw_os_error(libc::ENOENT);
    for c in candidates {
        let Ok(cpath) = CString::new(c) else { continue };
        // SAFETY: argv and envp are NULL-terminated arrays of valid C strings.
        unsafe { libc::execve(cpath.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        let e = std::io::Error::last_os_error();
        // Keep the most telling error: "permission denied" beats "not found".
        if e.raw_os_error() != Some(libc::ENOENT) || last.raw_os_error() == Some(libc::ENOENT) {
            last = e;
        }
    }
    last
}

/// Entry point of `cellsd __monitor [SPARE-SETUP-JSON]`. Returns the exit code.
pub fn main(spare_arg: Option<&str>) -> i32 {
    // Own session: a Ctrl-C at the terminal that started cellsd must not
    // reach the VPs, and the VP outlives cellsd.
    let _ = nix::unistd::setsid();
    crate::sys::one_malloc_arena();
    let spare = spare_arg
        .and_then(|a| serde_json::from_str::<SpareSetup>(a).ok())
        .and_then(|s| match s.cgroup.prepare_spare() {
            Ok(()) => Some(s.cgroup),
            Err(e) => {
                log(&format!(
                    "no spare cgroup ({e}); the start will move the init instead"
                ));
                release_spare(&s.cgroup);
                None
            }
        });
    let ground = groundwork();
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if matches!(read, Ok(0)) {
        // cellsd ended without using this spare.
        if let Some(sp) = &spare {
            release_spare(sp);
        }
        return 0;
    }
    if let Err(e) = read {
        emit(&MonitorEvent::Failed {
            error: format!("reading the monitor request: {e}"),
        });
        return 1;
    }
    let received = std::time::Instant::now();
    let req: MonitorRequest = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            emit(&MonitorEvent::Failed {
                error: format!("bad monitor request: {e}"),
            });
            return 1;
        }
    };
    if req.trace {
        let _ = TRACE.set(received);
    }
    if let Ok(f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&req.monitor_log)
    {
        // SAFETY: dup2 onto stderr.
        unsafe { libc::dup2(f.as_raw_fd(), 2) };
    }
    log(&format!("starting VP {}", req.config.name));
    phase("request parsed");
    let started = ground.and_then(|g| start(&req, spare.as_ref(), g));
    match started {
        Ok(vp) => {
            let code = supervise(&req, vp);
            log(&format!("VP {} ended ({code})", req.config.name));
            0
        }
        Err(e) => {
            log(&format!("start failed: {e}"));
            emit(&MonitorEvent::Failed { error: e });
            1
        }
    }
}

/// Leave and remove an unused spare cgroup.
fn release_spare(spare: &VpCgroup) {
    let _ = spare.move_to_parent_v1(std::process::id() as i32);
    for d in spare.hierarchy.v1_dirs(&spare.rel) {
        let _ = std::fs::remove_dir(d);
    }
}

/// What the monitor holds of a started VP.
struct StartedVp {
    /// The console socket, bound before `Started` so that a console request
    /// right after the start finds it.
    console: Option<UnixListener>,
    init: libc::pid_t,
    /// The VP's /sys/power and its link to cellsd.
    power: VpPower,
    /// The VP's evdev devices (evdev backend), fed from cellsd's pipes.
    input: Option<input::evdev_fs::VpInput>,
    /// What the input devices were last told about freezing.
    input_freezing: bool,
    /// The mux_fb device of the VP (kernel mode), removed when it ends.
    fb_node: Option<u32>,
    /// The VP's devices: open for the VP's whole life.
    _devices: Vec<OwnedFd>,
    master: OwnedFd,
    /// Kept open so the master never sees a hang-up between console users.
    _slave: OwnedFd,
    signals: SignalFd,
    /// What run.json says; written again on SIGUSR1 (a cellsd that finds
    /// the VP running without it asks for it).
    state: RunState,
}

/// Write the run state atomically (no fsync: the run dir does not outlive a
/// reboot anyway).
fn write_run_state(path: &Path, state: &RunState) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state).unwrap_or_default())?;
    std::fs::rename(&tmp, path)
}

fn errstr<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// What a monitor sets up before it knows which VP it starts: its private
/// mount namespace, its signalfd and the channels to the init. A spare
/// monitor does this while it waits.
struct Groundwork {
    signals: SignalFd,
    /// "go" to the init, with the fd of the VP's run dir (a socket pair).
    go: (OwnedFd, OwnedFd),
    err: (OwnedFd, OwnedFd),
}

fn groundwork() -> Result<Groundwork, String> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(errstr("unshare(mount namespace)"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(errstr("make / private"))?;
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
    ] {
        mask.add(s);
    }
    mask.thread_block().map_err(errstr("block signals"))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(errstr("signalfd"))?;
    let go = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(errstr("socketpair"))?;
    let err = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(errstr("pipe"))?;
    Ok(Groundwork { signals, go, err })
}

fn start(
    req: &MonitorRequest,
    spare: Option<&VpCgroup>,
    ground: Groundwork,
) -> Result<StartedVp, String> {
    let cfg = &req.config;
    let owner = cfg.host_root_id();
    let lower = req.run_dir.join("lower");
    let rootfs = req.run_dir.join("rootfs");
    for d in [&lower, &rootfs] {
        std::fs::create_dir_all(d).map_err(errstr(&format!("mkdir {}", d.display())))?;
    }
    if let Some(disk) = &req.disk {
        crate::disk::mount(disk).map_err(|e| e.to_string())?;
        phase("disk");
    }
    let Groundwork {
        signals,
        go: (go_parent, go_child),
        err: (err_r, err_w),
    } = ground;
    phase("signals, channels");

    // The VP's cgroup: the spare this monitor already sits in is renamed
    // (v1), the v2 part is entered by the clone itself. Either way no
    // process migration (an RCU grace period) is on the start's path.
    let resources = cfg
        .runtime
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref());
    let leave_cgroup = |e: String| -> String {
        let _ = req.cgroup.move_to_parent_v1(std::process::id() as i32);
        let _ = req.cgroup.destroy(Duration::from_secs(5));
        e
    };
    let v2_cgroup = req
        .cgroup
        .claim(spare, resources)
        .map_err(|e| leave_cgroup(e.to_string()))?;
    phase("cgroup");

    let (device_fds, mut device_nodes, held, mut vp_input) =
        make_devices(req).map_err(|e| leave_cgroup(format!("creating the VP's devices: {e}")))?;
    let mut device_dirs = Vec::new();
    if vp_input.is_some() {
        device_dirs.push((
            req.run_dir.join("dev").join("input"),
            "/dev/input".to_string(),
        ));
    }
    runtime_files(req, &mut device_nodes, &mut device_dirs).map_err(|e| {
        leave_cgroup(format!(
            "writing the VP's properties and network files: {e}"
        ))
    })?;
    let power_dir = req.run_dir.join("dev").join("power");
    let mut power = VpPower::mount(&power_dir, owner)
        .map_err(|e| leave_cgroup(format!("creating the VP's /sys/power: {e}")))?;
    device_dirs.push((power_dir, power::VP_POWER_DIR.to_string()));
    phase("devices");

    let seccomp = cfg
        .seccomp_filter()
        .map_err(|e| leave_cgroup(e.to_string()))?;
    let flags = clone_flags(cfg).bits();
    // The VP's user namespace is created with VP root's host uid as the
    // effective uid: it then belongs to that uid, and the kernel charges
    // what the VP uses (inotify instances, user namespaces, ...) to it, not
    // to host root.
    let euid = match owner {
        Some(id) if flags & libc::CLONE_NEWUSER != 0 => Some(
            sys::EuidGuard::set(id)
                .map_err(|e| leave_cgroup(format!("setresuid for the VP's user namespace: {e}")))?,
        ),
        _ => None,
    };
    // SAFETY: the monitor is single-threaded (a fresh exec of cellsd).
    let cloned = unsafe {
        match &v2_cgroup {
            Some(cg) => sys::clone_into_cgroup(flags, cg),
            None => sys::clone_process(flags),
        }
    };
    if let Ok(0) = cloned {
        // The child keeps the effective uid (the guard is not dropped here).
        std::mem::forget(euid);
        drop(go_parent);
        drop(err_r);
        init_child(req, go_child, err_w, seccomp.as_ref());
    }
    drop(euid);
    let pid = cloned.map_err(|e| leave_cgroup(format!("clone the VP's init: {e}")))?;
    drop(go_child);
    drop(err_w);

    let kernel_fb = device_fds.fb_node;
    let fail = |e: String| -> String {
        // SAFETY: kill + reap our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        if let Some(n) = kernel_fb {
            display::destroy_kernel_fb(n);
        }
        let _ = std::fs::remove_file(&req.run_state);
        leave_cgroup(e)
    };
    phase("clone");
    if spare.is_none() {
        // No spare was prepared: move the init into the v1 cgroups (slow path).
        for d in req.cgroup.hierarchy.v1_dirs(&req.cgroup.rel) {
            let p = d.join("cgroup.procs");
            std::fs::write(&p, pid.to_string())
                .map_err(|e| fail(format!("{}: {e}", p.display())))?;
        }
    }
    prepare_vp(req, pid, &lower, &rootfs).map_err(fail)?;
    phase("maps, template, overlay");
    // The VP's whole tree, built here as host root: in the init's copy of
    // this namespace every mount is locked.
    let mounts = rootfs::DeviceMounts {
        nodes: device_nodes,
        dirs: device_dirs,
        ro_dirs: req
            .adb_keys
            .iter()
            .map(|d| (d.clone(), VP_ADB_DIR.to_string()))
            .collect(),
        binderfs: req.devices.binder == BinderRequest::Binderfs,
    };
    let steps =
        rootfs::plan(&cfg.runtime, &rootfs, &mounts, owner).map_err(|e| fail(e.to_string()))?;
    let applied = rootfs::apply(&rootfs, &steps, owner, &mut |k| vp_kernel_mounts(pid, k))
        .map_err(|e| fail(e.to_string()))?;
    let Some((master, slave)) = applied.console else {
        return Err(fail(
            "the VP's spec has no devpts mount for its console".into(),
        ));
    };
    phase("mounts");
    // Now that the init is cloned the monitor may have threads: serve the
    // power file system before the init runs.
    power
        .serve(&req.run_dir.join(power::POWER_SOCKET))
        .map_err(|e| fail(e.to_string()))?;
    if let Some(i) = vp_input.as_mut() {
        i.serve().map_err(|e| fail(e.to_string()))?;
    }
    if let Some(a) = req.network.as_ref().and_then(|n| n.attach.as_ref()) {
        network::attach_vp(pid, a)
            .map_err(|e| fail(format!("attaching the VP to bridge {}: {e}", a.bridge)))?;
        phase("network");
    }

    emit(&MonitorEvent::Init { pid });
    let run_dir = std::fs::File::open(&req.run_dir)
        .map_err(|e| fail(format!("open {}: {e}", req.run_dir.display())))?;
    sys::send_fds(&go_parent, b"g", &[run_dir.as_raw_fd()])
        .map_err(|e| fail(format!("release init: {e}")))?;
    drop(run_dir);
    drop(go_parent);

    // The error pipe is close-on-exec in the child: EOF means exec succeeded.
    let mut err = String::new();
    let _ = std::fs::File::from(err_r).read_to_string(&mut err);
    if !err.is_empty() {
        return Err(fail(err));
    }
    phase("init exec'd");
    let me = std::process::id() as i32;
    let state = RunState {
        init_pid: pid,
        init_start_time: sys::process_start_time(pid).unwrap_or(0),
        monitor_pid: me,
        monitor_start_time: sys::process_start_time(me).unwrap_or(0),
        started_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        template_build: req.template_build.clone(),
        devices: device_fds,
    };
    write_run_state(&req.run_state, &state)
        .map_err(|e| fail(format!("write {}: {e}", req.run_state.display())))?;
    let _ = std::fs::remove_file(&req.console_socket);
    let console = UnixListener::bind(&req.console_socket).ok();
    if let Some(l) = &console {
        let _ = l.set_nonblocking(true);
        let _ = std::fs::set_permissions(
            &req.console_socket,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        );
    }
    emit(&MonitorEvent::Started);
    // cellsd answers Init with "ack" once it holds a pidfd of the init.
    let mut ack = String::new();
    let _ = std::io::stdin().lock().read_line(&mut ack);
    // The monitor itself does not belong to the VP (its pids, memory, freezer).
    if let Err(e) = req.cgroup.move_to_parent_v1(me) {
        log(&format!("leaving the VP's cgroup: {e}"));
    }
    // cellsd's pipes are not needed any more; the VP must not depend on them.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        // SAFETY: dup2 onto stdin/stdout.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
    Ok(StartedVp {
        console,
        init: pid,
        power,
        input: vp_input,
        input_freezing: false,
        fb_node: state.devices.fb_node,
        _devices: held,
        master,
        _slave: slave,
        signals,
        state,
    })
}

/// Mount `mounts` (proc, sysfs) from inside the VP's pid and network
/// namespaces: a child joins them (setns to a pid namespace only affects
/// children), its child is then a process of the VP's pid namespace with
/// host credentials that mounts them into the monitor's namespace and
/// exits. It exists while the VP's init still waits for "go": no code of
/// the VP runs meanwhile. Only raw system calls after the fork.
fn vp_kernel_mounts(init: i32, mounts: &[rootfs::KernelMount]) -> Result<(), rootfs::RootfsError> {
    let bad = |msg: String| rootfs::RootfsError::VpKernel {
        what: mounts
            .iter()
            .map(|m| m.fstype.clone())
            .collect::<Vec<_>>()
            .join(", "),
        msg,
    };
    let pidfd = sys::pidfd_open(init).map_err(|e| bad(format!("pidfd of the init: {e}")))?;
    let c = |s: &str| CString::new(s).map_err(|_| bad(format!("NUL in {s:?}")));
    let mut prepared = Vec::new();
    for m in mounts {
        let target = sys::cstr(&m.target).map_err(|e| bad(e.to_string()))?;
        let data = m.data.as_deref().map(c).transpose()?;
        prepared.push((c(&m.fstype)?, target, m.flags.bits(), data));
    }
    let sys_src = c("/sys")?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| bad(e.to_string()))?;
    // SAFETY: after fork only async-signal-safe system calls run in the
    // child and grandchild (every string was prepared above).
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(bad(format!("fork: {}", std::io::Error::last_os_error())));
    }
    if child == 0 {
        // SAFETY: raw system calls only; _exit never returns.
        unsafe {
            if libc::setns(pidfd.as_raw_fd(), libc::CLONE_NEWPID | libc::CLONE_NEWNET) != 0 {
                libc::_exit(2);
            }
            let grand = libc::fork();
            if grand == 0 {
                for (i, (fstype, target, flags, data)) in prepared.iter().enumerate() {
                    let d = data
                        .as_ref()
                        .map(|d| d.as_ptr())
                        .unwrap_or(std::ptr::null());
                    let r = libc::mount(
                        fstype.as_ptr(),
                        target.as_ptr(),
                        fstype.as_ptr(),
                        *flags,
                        d.cast(),
                    );
                    if r == 0 {
                        continue;
                    }
                    // A kernel that refuses a fresh sysfs gets the host's /sys
                    // bound read-only instead (it shows the host's devices).
                    if fstype.as_bytes() == b"sysfs" {
                        let bind = libc::MS_BIND | libc::MS_REC;
                        let ro = libc::MS_BIND
                            | libc::MS_REMOUNT
                            | libc::MS_RDONLY
                            | libc::MS_NOSUID
                            | libc::MS_NODEV
                            | libc::MS_NOEXEC;
                        if libc::mount(
                            sys_src.as_ptr(),
                            target.as_ptr(),
                            std::ptr::null(),
                            bind,
                            std::ptr::null(),
                        ) == 0
                            && libc::mount(
                                std::ptr::null(),
                                target.as_ptr(),
                                std::ptr::null(),
                                ro,
                                std::ptr::null(),
                            ) == 0
                        {
                            continue;
                        }
                    }
                    let code = [i as u8, *libc::__errno_location() as u8];
                    libc::write(err_w.as_raw_fd(), code.as_ptr().cast(), 2);
                    libc::_exit(1);
                }
                libc::_exit(0);
            }
            let mut st = 0;
            if grand < 0 || libc::waitpid(grand, &mut st, 0) != grand {
                libc::_exit(3);
            }
            libc::_exit(if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else {
                4
            });
        }
    }
    drop(err_w);
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(child, &mut st, 0) };
    let mut code = [0u8; 2];
    let n = nix::unistd::read(&err_r, &mut code).unwrap_or(0);
    if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 {
        return Ok(());
    }
    if n == 2 {
        let m = &mounts[(code[0] as usize).min(mounts.len() - 1)];
        return Err(bad(format!(
            "mount {} on {}: {}",
            m.fstype,
            m.target.display(),
            std::io::Error::from_raw_os_error(code[1] as i32)
        )));
    }
    Err(bad(format!(
        "the helper in the VP's namespaces failed (wait status {st})"
    )))
}

use std::os::unix::fs::OpenOptionsExt;

/// Make the VP's devices on a tmpfs private to this monitor
/// (`<run>/vps/NAME/dev`): returns their fds (for cellsd), the nodes to bind
/// into the VP, and the fds to keep open.
#[allow(clippy::type_complexity)]
fn make_devices(
    req: &MonitorRequest,
) -> Result<
    (
        DeviceFds,
        Vec<(PathBuf, String)>,
        Vec<OwnedFd>,
        Option<input::evdev_fs::VpInput>,
    ),
    String,
> {
    let dir = req.run_dir.join("dev");
    std::fs::create_dir_all(&dir).map_err(errstr("mkdir dev"))?;
    let g = req.devices.geometry;
    let size = format!("size={},mode=755", g.size() + (1 << 20));
    mount(
        Some("tmpfs"),
        &dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some(size.as_str()),
    )
    .map_err(errstr("mount the device tmpfs"))?;
    let owner = req.config.host_root_id();
    let policies = &req.config.cells.devices;
    let mut nodes: Vec<(PathBuf, String)> = Vec::new();
    let (mut fb_fd, mut fb_node) = (None, None);
    // display=none: no framebuffer at all (cellsd sees fb -1, no node).
    if policies.has(model::DISPLAY) {
        let (fb_file, info) = match req.devices.display {
            DisplayMode::Userspace => {
                let fb = display::create(&dir, g, owner).map_err(errstr("framebuffer"))?;
                fb_fd = Some(fb.fd);
                (fb.file, fb.info)
            }
            DisplayMode::Kernel => {
                let (n, node) =
                    display::create_kernel_fb(&dir, owner).map_err(errstr("mux_fb framebuffer"))?;
                let info =
                    display::write_info(&dir, g, owner).map_err(errstr("framebuffer info"))?;
                fb_node = Some(n);
                (node, info)
            }
        };
        nodes.extend(
            display::VP_FB_PATHS
                .iter()
                .map(|p| (fb_file.clone(), p.to_string())),
        );
        nodes.push((info, display::VP_FB_INFO.to_string()));
    }
    let mut fds = DeviceFds {
        geometry: g,
        fb: fb_fd.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1),
        input_backend: req.devices.input,
        inputs: Vec::new(),
        binder: None,
        fb_node,
    };
    if let BinderRequest::Device(node) = &req.devices.binder {
        // The pool device is this VP root's while it runs, through a
        // private node: the host's node keeps its owner and mode.
        let private = dir.join("binder");
        sys::private_node(node, &private, owner, 0o600).map_err(errstr("binder node"))?;
        nodes.push((private, "/dev/binder".to_string()));
        fds.binder = Some(node.clone());
    }
    let mut held: Vec<OwnedFd> = fb_fd.into_iter().collect();
    let mut vp_input = None;
    match req.devices.input {
        // input=none: no input devices.
        _ if !policies.has(model::INPUT) => {}
        Backend::Fifo => {
            let fifos = input::sink::create_fifos(&dir, owner)
                .map_err(|e| format!("input devices (FIFOs): {e}"))?;
            for i in fifos {
                nodes.push((i.node.clone(), i.vp_path.clone()));
                fds.inputs.push((i.kind, i.fd.as_raw_fd()));
                held.push(i.fd);
            }
        }
        Backend::Evdev => {
            let devices = input::sink::VP_DEVICES
                .iter()
                .map(|(kind, node, name)| {
                    (node.to_string(), input::evdev_fs::spec_for(*kind, name, g))
                })
                .collect();
            let (vi, writers) = input::evdev_fs::VpInput::mount(&dir.join("input"), devices, owner)
                .map_err(|e| format!("input devices: {e}"))?;
            for ((kind, _, _), w) in input::sink::VP_DEVICES.iter().zip(writers) {
                fds.inputs.push((*kind, w.as_raw_fd()));
                held.push(w);
            }
            vp_input = Some(vi);
        }
    }
    Ok((fds, nodes, held, vp_input))
}

/// Where the template keeps /etc, as a path in the VP: Android's layout
/// has `/etc -> /system/etc` (binds must not go through a symlink).
fn vp_etc(template_rootfs: &Path) -> String {
    match std::fs::read_link(template_rootfs.join("etc")) {
        Ok(t) => {
            let t = t.to_string_lossy().trim_start_matches('/').to_string();
            if t.is_empty() || t.contains("..") {
                "/etc".to_string()
            } else {
                format!("/{t}")
            }
        }
        Err(_) => "/etc".to_string(),
    }
}

/// Files the VP gets at each start, on the monitor's device tmpfs: the
/// property store (`/dev/__properties__`, see cells_templates::props) and
/// with a network, resolv.conf and hosts over the template's.
fn runtime_files(
    req: &MonitorRequest,
    nodes: &mut Vec<(PathBuf, String)>,
    dirs: &mut Vec<(PathBuf, String)>,
) -> Result<(), String> {
    let dev = req.run_dir.join("dev");
    let owner = req.config.host_root_id();
    let chown = |p: &Path| -> Result<(), String> {
        if let Some(id) = owner {
            std::os::unix::fs::chown(p, Some(id), Some(id))
                .map_err(errstr(&format!("chown {}", p.display())))?;
        }
        Ok(())
    };
    let props = dev.join("properties");
    std::fs::create_dir_all(&props).map_err(errstr("mkdir properties"))?;
    let text: String = req
        .properties
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    let store = props.join("properties");
    std::fs::write(&store, text).map_err(errstr("write properties"))?;
    chown(&props)?;
    chown(&store)?;
    dirs.push((props, "/dev/__properties__".to_string()));
    if let Some(net) = &req.network {
        let etc = vp_etc(&req.template_rootfs);
        let dir = dev.join("net");
        std::fs::create_dir_all(&dir).map_err(errstr("mkdir net"))?;
        for (name, text) in [("resolv.conf", &net.resolv_conf), ("hosts", &net.hosts)] {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(errstr(&format!("write {name}")))?;
            chown(&p)?;
            nodes.push((p, format!("{etc}/{name}")));
        }
    }
    Ok(())
}

/// Monitor side of the start, between clone and releasing the init: id
/// maps, the template and the overlay root.
fn prepare_vp(req: &MonitorRequest, pid: i32, lower: &Path, rootfs: &Path) -> Result<(), String> {
    let cfg = &req.config;
    let linux = cfg.runtime.linux().as_ref();
    let userns = if cfg.host_root_id().is_some() {
        for (file, maps) in [
            ("uid_map", linux.and_then(|l| l.uid_mappings().clone())),
            ("gid_map", linux.and_then(|l| l.gid_mappings().clone())),
        ] {
            let text: String = maps
                .unwrap_or_default()
                .iter()
                .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
                .collect();
            let path = format!("/proc/{pid}/{file}");
            std::fs::write(&path, text).map_err(errstr(&format!("write {path}")))?;
        }
        let ns: OwnedFd = std::fs::File::open(format!("/proc/{pid}/ns/user"))
            .map_err(errstr("open the VP's user namespace"))?
            .into();
        Some(ns)
    } else {
        None
    };

    // The template, read-only and (with a user namespace) idmapped so that
    // its root-owned files appear owned by VP root. One shared copy on disk.
    let tree = sys::open_tree_clone(&req.template_rootfs, false).map_err(errstr(&format!(
        "open_tree {}",
        req.template_rootfs.display()
    )))?;
    let mut attrs = sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NODEV;
    if userns.is_some() {
        attrs |= sys::MOUNT_ATTR_IDMAP;
    }
    sys::mount_setattr(&tree, attrs, userns.as_ref(), false).map_err(|e| {
        if e.raw_os_error() == Some(libc::EINVAL) && userns.is_some() {
            format!(
                "idmapped mount of {} failed ({e}): its filesystem does not support idmapped mounts; \
                 put the state dir on ext4, xfs, btrfs or tmpfs (Linux 6.3+), or create the VP with --privileged",
                req.template_rootfs.display()
            )
        } else {
            format!("mount_setattr {}: {e}", req.template_rootfs.display())
        }
    })?;
    sys::move_mount(&tree, lower).map_err(errstr("attach the template"))?;
    phase("template attached");

    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        req.upper.display(),
        req.work.display()
    );
    mount(
        Some("overlay"),
        rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(errstr("mount the VP's overlay root"))?;
    phase("overlay");

    Ok(())
}

/// The VP's init before exec: runs in the clone child, inside the new
/// namespaces (still in the monitor's mount namespace). Never returns.
fn init_child(
    req: &MonitorRequest,
    go: OwnedFd,
    err: OwnedFd,
    seccomp: Option<&crate::seccomp::Filter>,
) -> ! {
    let mut b = [0u8; 1];
    let run_dir = match sys::recv_fds(&go, &mut b, 1) {
        Ok((1, mut fds)) if fds.len() == 1 => fds.remove(0),
        // The monitor gave up (or died): leave quietly.
        // SAFETY: _exit is always safe.
        _ => unsafe { libc::_exit(1) },
    };
    let e = match setup_and_exec(req, run_dir, seccomp) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = nix::unistd::write(&err, e.as_bytes());
    // SAFETY: _exit is always safe.
    unsafe { libc::_exit(127) }
}

fn setup_and_exec(
    req: &MonitorRequest,
    run_dir: OwnedFd,
    seccomp: Option<&crate::seccomp::Filter>,
) -> Result<std::convert::Infallible, String> {
    let cfg = &req.config;
    // Into the VP's run dir by fd (no path walk as VP ids); the new mount
    // namespace keeps the working directory, on its copy of the tree.
    nix::unistd::fchdir(&run_dir).map_err(errstr("fchdir to the VP's run dir"))?;
    drop(run_dir);
    nix::sched::unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWCGROUP)
        .map_err(errstr("unshare(mount, cgroup namespaces)"))?;
    // Every mount came from the monitor's (more privileged) namespace and
    // is locked here, so pivot_root refuses the root. A bind of it onto
    // itself is this namespace's own mount; what is mounted below it stays
    // locked (masks cannot be removed).
    mount(
        Some("rootfs"),
        "rootfs",
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(errstr("bind the VP's root onto itself"))?;
    // Onto that new mount (the lookup crosses it), while the file system
    // uid is still the monitor's: the run dir is root's alone (0700).
    std::env::set_current_dir("rootfs").map_err(errstr("chdir into the VP's root"))?;
    if cfg.host_root_id().is_some() {
        let root_g = Gid::from_raw(0);
        let root_u = Uid::from_raw(0);
        nix::unistd::setresgid(root_g, root_g, root_g).map_err(errstr("setresgid(0)"))?;
        nix::unistd::setgroups(&[]).map_err(errstr("setgroups"))?;
        nix::unistd::setresuid(root_u, root_u, root_u).map_err(errstr("setresuid(0)"))?;
    }
    rootfs::pivot(Path::new(".")).map_err(|e| e.to_string())?;
    phase("child: namespaces, pivot_root");
    nix::unistd::sethostname(cfg.hostname()).map_err(errstr("sethostname"))?;
    if let Err(e) = loopback_up() {
        return Err(format!("bring up lo: {e}"));
    }
    if req.devices.binder == BinderRequest::Binderfs {
        rootfs::apply(Path::new("/"), &rootfs::binderfs_steps(), None, &mut |_| {
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    }
    nix::unistd::setsid().map_err(errstr("setsid"))?;
    let console = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/console")
        .map_err(errstr("open /dev/console"))?;
    // SAFETY: dup2 of a valid fd onto 0, 1, 2.
    unsafe {
        for fd in 0..3 {
            if libc::dup2(console.as_raw_fd(), fd) < 0 {
                return Err(format!("dup2 console: {}", std::io::Error::last_os_error()));
            }
        }
    }
    drop(console);
    // Nothing of the keyring cellsd runs with is the VP's.
    sys::join_new_session_keyring().map_err(errstr("a session keyring of the VP's own"))?;
    restrict_bounding_set(&bounding_set(cfg)).map_err(errstr("drop capabilities"))?;
    sys::apply_vp_rlimits().map_err(errstr("the VP's resource limits"))?;
    if req.ksm {
        const PR_SET_MEMORY_MERGE: libc::c_int = 67;
        // SAFETY: prctl with integer arguments. Failure (a kernel before
        // 6.4) only means the pages are not merged.
        unsafe { libc::prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0) };
    }
    let process = cfg
        .runtime
        .process()
        .as_ref()
        .ok_or("VP spec has no process")?;
    std::env::set_current_dir(process.cwd()).map_err(errstr("chdir"))?;
    cloexec_from(3);
    reset_signals();
    let args = process.args().clone().unwrap_or_default();
    let mut env = process.env().clone().unwrap_or_default();
    env.extend(req.extra_env.iter().cloned());
    // Last: the filter applies to the init's exec and everything after.
    if let Some(f) = seccomp {
        crate::seccomp::install(f).map_err(|e| e.to_string())?;
    }
    let e = exec_in_path(&args, &env);
    Err(format!("exec {:?} in the VP: {e}", args.first()))
}

/// Console output is kept in a log that is rotated once it passes
/// CONSOLE_LOG_MAX, so a chatty VP cannot fill the disk.
struct ConsoleLog {
    path: PathBuf,
    file: Option<std::fs::File>,
    size: u64,
}

impl ConsoleLog {
    fn open(path: &Path) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .ok();
        let size = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| m.len())
            .unwrap_or(0);
        Self {
            path: path.to_path_buf(),
            file,
            size,
        }
    }

    fn write(&mut self, data: &[u8]) {
        if self.size + data.len() as u64 > CONSOLE_LOG_MAX {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            let _ = std::fs::rename(&self.path, &old);
            *self = Self::open(&self.path);
        }
        if let Some(f) = self.file.as_mut() {
            if f.write_all(data).is_ok() {
                self.size += data.len() as u64;
            }
        }
    }
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

/// Relay the console and wait for the init to end. Returns its wait status
/// as a shell would print it.
fn supervise(req: &MonitorRequest, mut vp: StartedVp) -> String {
    // The monitor lives as long as the VP: what setting up used goes back.
    crate::sys::release_setup_memory();
    let mut log_file = ConsoleLog::open(&req.console_log);
    let listener = vp.console.take();
    set_nonblocking(vp.master.as_raw_fd());
    let mut clients: Vec<UnixStream> = Vec::new();
    let mut buf = vec![0u8; 16384];
    let mut budget = Budget::new();
    let status = loop {
        budget.refill();
        let throttled = budget.wait_ms();
        let mut fds = vec![
            libc::pollfd {
                fd: vp.signals.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                // Over budget: the console is not read until it refills.
                fd: if throttled > 0 {
                    -1
                } else {
                    vp.master.as_raw_fd()
                },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: listener.as_ref().map(|l| l.as_raw_fd()).unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        for fd in vp.power.poll_fds() {
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let input_fds = vp.input.as_ref().map(|i| i.poll_fds()).unwrap_or_default();
        for fd in &input_fds {
            fds.push(libc::pollfd {
                fd: *fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // The console's clients start here.
        let first_client = 6 + input_fds.len();
        for c in &clients {
            fds.push(libc::pollfd {
                fd: c.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // Wake up for the next lock expiry.
        let timeout = vp
            .power
            .timeout()
            .map(|d| d.as_millis().min(i32::MAX as u128) as i32 + 1)
            .unwrap_or(-1);
        let timeout = match (timeout, throttled) {
            (t, 0) => t,
            (-1, w) => w,
            (t, w) => t.min(w),
        };
        // SAFETY: fds is a valid array of pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            continue; // EINTR
        }
        let ready = |i: usize| fds[i].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0;
        vp.power.handle([ready(3), ready(4), ready(5)]);
        if let Some(input) = vp.input.as_mut() {
            for i in 0..input_fds.len() {
                if ready(6 + i) {
                    input.handle(i);
                }
            }
            // A VP being frozen must not sit in a blocked read of ours.
            let freezing = vp.power.freezing();
            if freezing != vp.input_freezing {
                input.set_freezing(freezing);
                vp.input_freezing = freezing;
            }
        }
        if fds[1].revents & libc::POLLIN != 0 {
            // SAFETY: reading into our own buffer.
            let r =
                unsafe { libc::read(vp.master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if r > 0 {
                budget.tokens -= r as f64;
                let data = &buf[..r as usize];
                log_file.write(data);
                // A console user that cannot keep up loses output rather
                // than stalling the VP.
                clients.retain_mut(|c| match c.write(data) {
                    Ok(_) => true,
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                });
            }
        }
        let mut gone = Vec::new();
        // Only the clients that were polled; new ones come below.
        for (i, c) in clients
            .iter_mut()
            .enumerate()
            .take(fds.len() - first_client)
        {
            let re = fds[first_client + i].revents;
            if re & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) == 0 {
                continue;
            }
            match c.read(&mut buf) {
                Ok(0) => gone.push(i),
                Ok(n) => {
                    // SAFETY: writing our buffer to the pty master.
                    unsafe { libc::write(vp.master.as_raw_fd(), buf.as_ptr().cast(), n) };
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => gone.push(i),
            }
        }
        for i in gone.into_iter().rev() {
            clients.remove(i);
        }
        if fds[2].revents & libc::POLLIN != 0 {
            if let Some(l) = &listener {
                while let Ok((c, _)) = l.accept() {
                    let _ = c.set_nonblocking(true);
                    clients.push(c);
                }
            }
        }
        if fds[0].revents & libc::POLLIN != 0 {
            let mut ended = None;
            while let Ok(Some(si)) = vp.signals.read_signal() {
                match si.ssi_signo as i32 {
                    libc::SIGCHLD => {
                        let mut st = 0;
                        // SAFETY: reaping our own child.
                        let r = unsafe { libc::waitpid(vp.init, &mut st, libc::WNOHANG) };
                        if r == vp.init {
                            ended = Some(st);
                        }
                    }
                    // cellsd found the VP without its run state: restore it.
                    libc::SIGUSR1 => {
                        if let Err(e) = write_run_state(&req.run_state, &vp.state) {
                            log(&format!("restoring {}: {e}", req.run_state.display()));
                        }
                    }
                    // The host is shutting us down: let the VP shut down cleanly.
                    libc::SIGTERM | libc::SIGINT => {
                        // SAFETY: signalling our own child.
                        unsafe { libc::kill(vp.init, libc::SIGTERM) };
                    }
                    _ => {}
                }
            }
            if let Some(st) = ended {
                break st;
            }
        }
    };
    // Keep the last words of the console.
    loop {
        // SAFETY: reading into our own buffer (non-blocking).
        let r = unsafe { libc::read(vp.master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if r <= 0 {
            break;
        }
        log_file.write(&buf[..r as usize]);
    }
    let how = if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status}")
    };
    log_file.write(
        format!(
            "\r\n[cells] init of VP {} ended: {how}\r\n",
            req.config.name
        )
        .as_bytes(),
    );
    drop(clients);
    let _ = std::fs::remove_file(&req.console_socket);
    let _ = std::fs::remove_file(req.run_dir.join(power::POWER_SOCKET));
    if let Err(e) = req.cgroup.destroy(Duration::from_secs(10)) {
        log(&format!("removing cgroup: {e}"));
    }
    let _ = std::fs::remove_file(&req.run_state);
    if let Some(n) = vp.fb_node {
        display::destroy_kernel_fb(n);
    }
    how
}
