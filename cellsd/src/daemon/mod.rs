//! The VP manager: the daemon's state and every operation of the API.
//!
//! It owns the VP definitions (state dir), knows which VPs run (through a
//! pidfd on each VP's init), spawns the monitor and exec helpers by exec'ing
//! cellsd itself (never a bare fork from the async runtime), and publishes
//! [`Event`]s that the server turns into D-Bus signals.
//!
//! This file holds the state (`Inner`, `Vp`), loading and adoption, and the
//! lifecycle (create, start, stop, destroy); the other concerns are files of
//! their own: `foreground` (switch, next/prev, panel and input), `background`
//! (policies, freezing, power), `exec`, `templates`, `spare` (spare
//! monitors), `vp_devices` (a VP's devices and the registry), `net`
//! (addresses, adb, forwards), `reserve`, `options` (Create's options).

mod background;
mod checkpoint;
mod error;
mod exec;
mod foreground;
mod net;
mod oci;
pub use oci::OciProcess;
mod options;
mod reserve;
mod snapshot;
mod spare;
mod state;
mod templates;
mod transfer;
mod vp_devices;
mod writer;

use foreground::next_running;
pub use foreground::Point;
pub use net::PortInfo;
pub use options::{check_state_dir, create_options, oci_options};
use templates::BuildPin;

use crate::api::VpState;
use crate::devices::registry::{Attach, Detach, HostConfig, Registry};
use error::failed;
pub use error::Error;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{broadcast, watch};

use crate::api::{TemplateInfo, VpInfo};
use crate::cgroup::{FreezerChoice, Hierarchy, VpCgroup};
use crate::config::{self, CreateOptions, VpConfig, ID_RANGE};
use crate::devices::display::Screen;
use crate::devices::input::keys;
use crate::devices::input::mux::{InputMux, INJECT_SOURCE};
use crate::devices::input::router::{ContactId, SourceEvent};
use crate::devices::power::backend::SleepBackend;
use crate::devices::power::hub::PowerHub;
use crate::execer::{ExecReply, ExecRequest, Winsize};
use crate::layout::Layout;
use crate::monitor::{
    bounding_set, DeviceRequest, MonitorEvent, MonitorRequest, RunState, SpareSetup,
};
use crate::template::{self, Sources};
use crate::{name, sys};
use mux_fb::compositor::Target;

/// How long a start may take before cellsd gives up on the monitor.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the exec helper may take to enter the VP and fork.
const EXEC_START_TIMEOUT: Duration = Duration::from_secs(10);
/// Default grace between SIGTERM and SIGKILL on stop.
pub const DEFAULT_STOP_TIMEOUT: u32 = 10;

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub layout: Layout,
    pub sources: Sources,
    /// First host id of VP id ranges.
    pub id_base: u32,
    /// The cellsd executable, re-exec'd as the monitor and exec helpers.
    pub self_exe: PathBuf,
    /// Cgroup under which VP cgroups are made (relative to each hierarchy root).
    pub cgroup_parent: String,
    /// The devices' settings: panel, input, binder, network.
    pub devices: HostConfig,
    /// Which cgroup freezer freezes background VPs.
    pub freezer: FreezerChoice,
    /// Memory limit of a VP created without `--memory` (None: unlimited).
    pub default_memory: Option<u64>,
    /// The memory of all VPs together, set on the cgroup parent (None: not
    /// limited).
    pub vps_memory: Option<u64>,
    /// Disk of a VP created without `--disk` (None: no disk image).
    pub default_disk: Option<u64>,
    /// Merge identical pages of VPs with KSM (`cellsd --ksm`).
    pub ksm: bool,
    /// CPU weight of a background VP (the foreground has
    /// [`crate::cgroup::FULL_CPU_WEIGHT`]), `cellsd --background-cpu-weight`.
    pub background_cpu_weight: u16,
    /// A call ringing in a VP makes it the foreground (`cellsd --on-call switch`).
    pub on_call_switch: bool,
    /// The criu program for `cellctl checkpoint`/`restore` (`cellsd --criu`).
    pub criu: PathBuf,
}

/// What happened, for the D-Bus signals.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    VpState {
        name: String,
        state: String,
    },
    TemplateProgress {
        template: String,
        done: u64,
        total: u64,
        step: String,
    },
    /// An export or import of a VP moves on (bytes of its data).
    TransferProgress {
        vp: String,
        done: u64,
        total: u64,
        step: String,
    },
    /// The foreground VP ("" for none).
    Foreground(String),
    /// A call rings in a VP: (VP, the caller's number).
    IncomingCall(String, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Stopped,
    Starting,
    Running,
    Stopping,
}

impl Phase {
    fn state(self) -> VpState {
        match self {
            Phase::Stopped => VpState::Stopped,
            Phase::Starting => VpState::Starting,
            Phase::Running => VpState::Running,
            Phase::Stopping => VpState::Stopping,
        }
    }
}

struct Vp {
    config: VpConfig,
    phase: Phase,
    run: Option<Running>,
    /// Serializes start/stop/destroy of this VP.
    op: Arc<tokio::sync::Mutex<()>>,
    /// Its processes are frozen (cgroup freezer).
    frozen: bool,
    /// Bumped whenever a pending background-policy timer must not fire.
    bg_gen: u64,
}

struct Running {
    state: RunState,
    pidfd: Arc<OwnedFd>,
    /// Becomes true once the VP has ended and been cleaned up.
    ended: watch::Receiver<bool>,
    /// The template build a VP started here holds (an adopted VP's build is
    /// kept through its run state alone).
    _pin: Option<BuildPin>,
}

struct Inner {
    vps: BTreeMap<String, Vp>,
    foreground: Option<String>,
    /// What unusable VPs (listed as invalid) still hold: never handed out.
    reserved: BTreeMap<String, reserve::Reservation>,
}

/// Name prefix of spare cgroups (VP names cannot start with a dot).
const SPARE_PREFIX: &str = ".spare-";

/// A monitor process and its pipes.
struct Monitor {
    proc: MonitorProc,
    stdin: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    events: tokio::io::Lines<BufReader<Box<dyn tokio::io::AsyncRead + Send + Unpin>>>,
}

enum MonitorProc {
    /// Spawned by cellsd (reaped by tokio).
    Child(tokio::process::Child),
    /// Spawned by a client (`cells-runtime create`, whose parent, containerd's
    /// shim, reaps it): a pidfd of it.
    Foreign(OwnedFd),
}

impl Monitor {
    async fn kill(&mut self) {
        match &mut self.proc {
            MonitorProc::Child(c) => {
                let _ = c.kill().await;
            }
            MonitorProc::Foreign(fd) => {
                let _ = sys::pidfd_send_signal(fd, libc::SIGKILL);
            }
        }
    }
}

struct ExecEntry {
    vp: String,
    pid: i32,
    status: watch::Receiver<Option<i32>>,
}

pub struct Manager {
    /// This manager (for the tasks that its sync methods spawn).
    me: Weak<Manager>,
    cfg: DaemonConfig,
    hierarchy: Hierarchy,
    inner: Mutex<Inner>,
    events: broadcast::Sender<Event>,
    execs: Mutex<HashMap<u64, ExecEntry>>,
    next_exec: AtomicU64,
    build_lock: tokio::sync::Mutex<()>,
    /// Template builds picked by VPs that are starting (not yet running):
    /// gc keeps them. gc runs holding this lock, and a start picks its
    /// build holding it, so a build cannot go between the two.
    pinned: Arc<Mutex<Vec<(String, String)>>>,
    /// A monitor spawned ahead of time, waiting in a spare cgroup.
    spare: tokio::sync::Mutex<Option<Monitor>>,
    spare_seq: AtomicU64,
    /// The panel: the compositor thread, or the mux_fb kernel module.
    display: Arc<Screen>,
    /// The input multiplexer thread.
    input: Arc<InputMux>,
    /// Wakelocks, early suspend and the power backend.
    power: Arc<PowerHub>,
    /// The devices' host sides, in the model's order: prepare, attach,
    /// switch, detach (the fields above and `net` are handles on some).
    devices: Registry,
    /// The bridge, nftables and the port forwards.
    net: Arc<crate::devices::network::host::HostNet>,
    /// Writes a switch leaves behind (foreground file, CPU weights).
    writer: writer::Writer,
    /// VPs whose definition could not be used (name -> why): listed, never
    /// started, never removed by cellsd.
    invalid: Mutex<BTreeMap<String, String>>,
}

fn unix_now() -> u64 {
    template::now_secs()
}

impl Manager {
    /// Load every VP definition and find the VPs that still run.
    /// Must be called inside the tokio runtime.
    pub fn new(cfg: DaemonConfig, power: SleepBackend) -> Result<Arc<Self>, Error> {
        let hierarchy = Hierarchy::detect()?;
        let devices = Registry::build(&cfg.devices, power)?;
        let missing = |d: &str| Error::Failed(format!("the {d} device has no host side"));
        let screen = devices.get::<Screen>().ok_or_else(|| missing("display"))?;
        let input = devices.get::<InputMux>().ok_or_else(|| missing("input"))?;
        let power = devices
            .get::<crate::devices::power::PowerHost>()
            .map(|p| Arc::clone(&p.0))
            .ok_or_else(|| missing("power"))?;
        let net = devices
            .get::<crate::devices::network::host::HostNet>()
            .ok_or_else(|| missing("network"))?;
        let (events, _) = broadcast::channel(1024);
        let writer = writer::Writer::start().map_err(failed("start the switch writer thread"))?;
        let mgr = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            cfg,
            hierarchy,
            inner: Mutex::new(Inner {
                vps: BTreeMap::new(),
                foreground: None,
                reserved: BTreeMap::new(),
            }),
            events,
            execs: Mutex::new(HashMap::new()),
            next_exec: AtomicU64::new(1),
            build_lock: tokio::sync::Mutex::new(()),
            pinned: Arc::new(Mutex::new(Vec::new())),
            spare: tokio::sync::Mutex::new(None),
            spare_seq: AtomicU64::new(0),
            display: screen,
            input,
            power,
            devices,
            net,
            writer,
            invalid: Mutex::new(BTreeMap::new()),
        });
        mgr.net
            .forwards
            .set_hooks(Arc::new(net::ForwardActivity(Arc::downgrade(&mgr))));
        // A VP's alarm fired: thaw it, as for a forwarded connection.
        if let Some(a) = mgr.devices.get::<crate::devices::alarm::AlarmDevice>() {
            let weak = Arc::downgrade(&mgr);
            a.0.set_wake_hook(Arc::new(move |vp: &str| {
                if let Some(m) = weak.upgrade() {
                    m.forward_activity(vp);
                }
            }));
        }
        // A call rings in a VP: the IncomingCall signal.
        if let Some(t) = mgr
            .devices
            .get::<crate::devices::telephony::TelephonyDevice>()
        {
            let weak = Arc::downgrade(&mgr);
            t.0.set_ring_hook(Arc::new(move |vp: &str, from: &str| {
                if let Some(m) = weak.upgrade() {
                    m.emit(Event::IncomingCall(vp.to_string(), from.to_string()));
                    if m.cfg.on_call_switch {
                        // Off the switchboard's thread (a switch takes the
                        // manager's locks and every device's).
                        let (m, vp) = (Arc::clone(&m), vp.to_string());
                        let _ =
                            std::thread::Builder::new()
                                .name("on-call".into())
                                .spawn(move || {
                                    if let Err(e) = m.switch(&vp) {
                                        tracing::warn!(
                                            vp = vp.as_str(),
                                            "switch to the called VP: {e}"
                                        );
                                    }
                                });
                    }
                }
            }));
            // Who is calling a VP behind the foreground: the panel shows it.
            let screen = Arc::clone(&mgr.display);
            t.0.set_ringing_hook(Arc::new(move |calls: Vec<(String, String)>| {
                screen.set_notices(
                    calls
                        .into_iter()
                        .map(|(vp, from)| {
                            let text = format!("CALL FOR {vp}: {from}");
                            (vp, text)
                        })
                        .collect(),
                );
            }));
            // A call monopolizes audio.
            if let Some(a) = mgr.devices.get::<crate::devices::audio::AudioDevice>() {
                let mixer = Arc::clone(&a.0);
                t.0.set_calls_hook(Arc::new(move |vps: Vec<String>| mixer.set_calls(vps)));
            }
        }
        if let Some(total) = mgr.cfg.vps_memory {
            let parent = Path::new(&mgr.cfg.cgroup_parent);
            match mgr.hierarchy.limit_parent_memory(parent, total) {
                Ok(file) => tracing::info!(
                    limit_mib = total >> 20,
                    file = %file.display(),
                    "all VPs together are limited"
                ),
                Err(e) => tracing::warn!("VPs' memory is not limited together: {e}"),
            }
        }
        mgr.remove_stale_spares();
        mgr.load()?;
        let running: Vec<u32> = mgr
            .lock()
            .vps
            .values()
            .filter(|v| v.run.is_some())
            .map(|v| v.config.cells.slot)
            .collect();
        mgr.net.clean_leftovers(&running);
        mgr.sync_sources(&mgr.lock());
        // Stopped VPs' forwards listen too (running ones' opened on adopt).
        let stopped: Vec<_> = mgr
            .lock()
            .vps
            .iter()
            .filter(|(_, v)| v.run.is_none())
            .map(|(n, v)| (n.clone(), v.config.cells.network.clone()))
            .collect();
        for (name, net) in stopped {
            mgr.open_forwards(&name, &net);
        }
        mgr.watch_locks();
        Ok(mgr)
    }

    /// The error for a name that is not a usable VP: unknown, or defined
    /// but invalid (then saying why).
    fn missing(&self, name: &str) -> Error {
        match self
            .invalid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            Some(why) => Error::Failed(format!("VP '{name}' cannot be used: {why}")),
            None => Error::unknown_vp(name),
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.cfg.layout
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn emit(&self, ev: Event) {
        let _ = self.events.send(ev);
    }

    fn emit_state(&self, name: &str, state: VpState) {
        tracing::info!(vp = name, state = state.as_str(), "VP state");
        self.emit(Event::VpState {
            name: name.to_string(),
            state: state.as_str().to_string(),
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every
        // update is a single assignment); keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cgroup_of(&self, cfg: &VpConfig) -> VpCgroup {
        let rel = cfg
            .runtime
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone())
            .unwrap_or_else(|| PathBuf::from(format!("cells/{}", cfg.name)));
        VpCgroup::new(self.hierarchy.clone(), rel)
    }

    fn load(self: &Arc<Self>) -> Result<(), Error> {
        let dir = self.cfg.layout.vps_dir();
        std::fs::create_dir_all(&dir).map_err(failed("create the state dir"))?;
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(failed("read the state dir"))?
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let Some(name) = e.file_name().to_str().map(String::from) else {
                continue;
            };
            // What a create or destroy cut short left (never a whole VP).
            let folder = state::classify_folder(&name);
            if folder == state::Folder::Leftover {
                tracing::info!(
                    folder = name.as_str(),
                    "removing what an interrupted create or destroy left"
                );
                let removed = if e.path().is_dir() {
                    std::fs::remove_dir_all(e.path())
                } else {
                    std::fs::remove_file(e.path())
                };
                if let Err(err) = removed {
                    tracing::warn!("{}: {err}", e.path().display());
                }
                continue;
            }
            if folder == state::Folder::Ignored {
                continue;
            }
            let path = self.cfg.layout.vp_config(&name);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    let why = format!(
                        "{}: {e}; the VP's data is kept: restore the file from a backup, \
                         or remove the folder {} to forget the VP",
                        path.display(),
                        self.cfg.layout.vp_dir(&name).display()
                    );
                    self.mark_invalid(&name, why);
                    continue;
                }
            };
            let dir = self.cfg.layout.vp_dir(&name);
            let config = VpConfig::from_json(&path, &text)
                .and_then(|c| {
                    c.validate_loaded(&path, &name, &self.cfg.layout.vp_data(&name))
                        .map(|_| c)
                })
                .map_err(|e| e.to_string())
                .and_then(|c| self.check_unique(&c, &path).map(|_| c));
            let config = match config {
                Ok(c) => c,
                Err(e) => {
                    // Never delete what we cannot use: the VP's data is there.
                    // Its processes, if it runs, are left alone too.
                    self.mark_invalid(&name, e);
                    continue;
                }
            };
            if let Err(e) = secure_vp_dir(&dir) {
                tracing::warn!(vp = name.as_str(), "{e}");
            }
            let run = match self.adopt(&config) {
                Ok(r) => r,
                Err(e) => {
                    self.mark_invalid(&name, e);
                    continue;
                }
            };
            let phase = if run.is_some() {
                Phase::Running
            } else {
                Phase::Stopped
            };
            let mut inner = self.lock();
            inner.vps.insert(
                name,
                Vp {
                    frozen: run.is_some() && self.cgroup_frozen(&config),
                    config,
                    phase,
                    run,
                    op: Arc::new(tokio::sync::Mutex::new(())),
                    bg_gen: 0,
                },
            );
        }
        // The foreground survives a cellsd restart; else the first running VP.
        let saved = std::fs::read_to_string(self.cfg.layout.foreground_file()).unwrap_or_default();
        let mut inner = self.lock();
        let (fg, background) = {
            let (fg, bg) = state::after_adoption(&saved, &foreground::running_names(&inner));
            (
                fg.map(String::from),
                bg.into_iter().map(String::from).collect::<Vec<_>>(),
            )
        };
        self.set_foreground(&mut inner, fg);
        // Background VPs resume their policy (a frozen one stays frozen).
        for n in background {
            self.set_cpu_weight(&inner, &n, false);
            self.arm_freeze(&mut inner, &n);
        }
        Ok(())
    }

    /// A VP that cannot be used: listed with why, and what it holds
    /// (slot, address, ports) is never given to another VP.
    fn mark_invalid(&self, name: &str, why: String) {
        tracing::error!("VP {name} is not usable: {why}");
        let r = reserve::Reservation::recover(&self.cfg.layout, name, self.cfg.id_base);
        self.lock().reserved.insert(name.to_string(), r);
        self.invalid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), why);
    }

    /// A loaded definition must not share its id range or its slot with a
    /// VP already loaded (two VPs with one id range are one user).
    fn check_unique(&self, cfg: &VpConfig, path: &Path) -> Result<(), String> {
        let inner = self.lock();
        for (other, v) in &inner.vps {
            let clash = v.config.cells.slot == cfg.cells.slot
                || matches!((v.config.host_root_id(), cfg.host_root_id()),
                    (Some(a), Some(b)) if a.abs_diff(b) < ID_RANGE);
            if clash {
                return Err(format!(
                    "{}: its slot {} or id range is also VP '{other}''s; two VPs must not share ids: \
                     restore the file (or recreate the VP), then restart cellsd",
                    path.display(),
                    cfg.cells.slot
                ));
            }
        }
        Ok(())
    }

    /// A VP found running after a cellsd restart: watch it again. A VP whose
    /// init is gone gets its leftovers (cgroup, run state) removed.
    ///
    /// A VP whose run state is missing or unreadable but whose cgroup still
    /// has processes is not killed: its monitor is asked to write the run
    /// state again (SIGUSR1); if it cannot, the VP's processes are left
    /// alone and the error says what to do.
    fn adopt(self: &Arc<Self>, config: &VpConfig) -> Result<Option<Running>, String> {
        let name = &config.name;
        let path = self.cfg.layout.vp_run_state(name);
        let read = || -> Option<RunState> {
            std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
        };
        let cg = self.cgroup_of(config);
        let mut state = read();
        if state.is_none() {
            let pids = if cg.exists() { cg.pids() } else { Vec::new() };
            if !pids.is_empty() {
                let monitor = find_monitor(&pids);
                if let Some(m) = monitor {
                    tracing::warn!(
                        vp = name.as_str(),
                        monitor = m,
                        "the VP runs without a readable run state: asking its monitor"
                    );
                    // SAFETY: a signal to a process we identified as a monitor.
                    unsafe { libc::kill(m, libc::SIGUSR1) };
                    let deadline = std::time::Instant::now() + Duration::from_secs(3);
                    while state.is_none() && std::time::Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(10));
                        state = read();
                    }
                }
                if state.is_none() {
                    return Err(format!(
                        "VP '{name}' has running processes (pids {}) but its run state {} is \
                         missing or unreadable{}; its processes and data are left as they are: \
                         stop them (kill {}) and restart cellsd, then start the VP again",
                        pids.iter()
                            .map(|p| p.to_string())
                            .collect::<Vec<_>>()
                            .join(" "),
                        path.display(),
                        if monitor.is_some() {
                            " and its monitor did not restore it"
                        } else {
                            " and it has no monitor"
                        },
                        monitor.map(|m| m.to_string()).unwrap_or_else(|| pids
                            .iter()
                            .map(|p| p.to_string())
                            .collect::<Vec<_>>()
                            .join(" ")),
                    ));
                }
            }
        }
        if let Some(state) = state.filter(RunState::init_alive) {
            if let Ok(pidfd) = sys::pidfd_open(state.init_pid) {
                // The pid could have been reused between the check and the open.
                if state.init_alive() {
                    tracing::info!(
                        vp = name.as_str(),
                        pid = state.init_pid,
                        "adopted running VP"
                    );
                    return Ok(Some(self.watch(name.clone(), state, pidfd, config)));
                }
            }
        }
        let _ = std::fs::remove_file(&path);
        if cg.exists() {
            if let Err(e) = cg.destroy(Duration::from_secs(5)) {
                tracing::warn!("leftover cgroup of {name}: {e}");
            }
        }
        Ok(None)
    }

    /// Watch a running VP's init; when it ends, clean up and mark it stopped.
    fn watch(
        self: &Arc<Self>,
        name: String,
        state: RunState,
        pidfd: OwnedFd,
        config: &VpConfig,
    ) -> Running {
        let pidfd = Arc::new(pidfd);
        let (tx, rx) = watch::channel(false);
        let mgr = Arc::clone(self);
        let fd = Arc::clone(&pidfd);
        let st = state.clone();
        self.attach_devices(&name, &state, &pidfd, &config.cells.devices);
        self.open_forwards(&name, &config.cells.network);
        tokio::spawn(async move {
            wait_pidfd(&fd).await;
            mgr.finish(&name, &st).await;
            let _ = tx.send(true);
        });
        Running {
            state,
            pidfd,
            ended: rx,
            _pin: None,
        }
    }

    /// After a VP's init ended: wait for its monitor's cleanup, make sure no
    /// cgroup is left, mark it stopped, hand the foreground on.
    async fn finish(self: &Arc<Self>, name: &str, st: &RunState) {
        let (slot, user_stop, was_fg) = {
            let inner = self.lock();
            let vp = inner.vps.get(name);
            (
                vp.map(|v| v.config.cells.slot),
                vp.is_some_and(|v| v.phase == Phase::Stopping),
                inner.foreground.as_deref() == Some(name),
            )
        };
        let (mgr, vp, run) = (Arc::clone(self), name.to_string(), st.clone());
        // Off the async workers: a device may talk to the kernel (netlink).
        let _ = tokio::task::spawn_blocking(move || mgr.detach_devices(&vp, &run, slot)).await;
        if let Ok(mfd) = sys::pidfd_open(st.monitor_pid) {
            if sys::process_start_time(st.monitor_pid) == Some(st.monitor_start_time) {
                let _ = tokio::time::timeout(Duration::from_secs(15), wait_pidfd(&mfd)).await;
            }
        }
        let cfg = {
            let inner = self.lock();
            inner.vps.get(name).map(|v| v.config.clone())
        };
        if let Some(cfg) = cfg {
            let cg = self.cgroup_of(&cfg);
            let _ = tokio::task::spawn_blocking(move || {
                if cg.exists() {
                    if let Err(e) = cg.destroy(Duration::from_secs(5)) {
                        tracing::warn!("cgroup cleanup: {e}");
                    }
                }
            })
            .await;
        }
        let _ = std::fs::remove_file(self.cfg.layout.vp_run_state(name));
        // The monitor has ended (or was given up on): its marker is final.
        let reboot = std::fs::remove_file(self.cfg.layout.vp_reboot_marker(name)).is_ok();
        {
            let mut inner = self.lock();
            if let Some(vp) = inner.vps.get_mut(name) {
                vp.phase = Phase::Stopped;
                vp.run = None;
                vp.frozen = false;
                vp.bg_gen += 1;
            }
            if inner.foreground.as_deref() == Some(name) {
                let next = next_running(&inner, name);
                self.set_foreground(&mut inner, next);
            }
        }
        self.emit_state(name, VpState::Stopped);
        if reboot && !user_stop {
            // The VP asked for it (`reboot`, adb's `reboot:`): start it
            // again, back in the foreground if it was there.
            tracing::info!(vp = name, "rebooting");
            let (mgr, vp) = (Arc::clone(self), name.to_string());
            tokio::spawn(async move {
                match mgr.start(&vp).await {
                    Ok(()) if was_fg && mgr.foreground().as_deref() != Some(vp.as_str()) => {
                        if let Err(e) = mgr.switch(&vp) {
                            tracing::warn!(
                                vp = vp.as_str(),
                                "back to the foreground after reboot: {e}"
                            );
                        }
                    }
                    Ok(()) => {}
                    Err(e) => tracing::warn!(vp = vp.as_str(), "restart after reboot: {e}"),
                }
            });
        }
        self.template_gc().await;
    }

    fn op_lock(&self, name: &str) -> Result<Arc<tokio::sync::Mutex<()>>, Error> {
        name::validate("VP", name)?;
        let inner = self.lock();
        inner
            .vps
            .get(name)
            .map(|v| Arc::clone(&v.op))
            .ok_or_else(|| self.missing(name))
    }

    pub fn list(&self) -> Vec<VpInfo> {
        let inner = self.lock();
        let mut v: Vec<VpInfo> = inner
            .vps
            .keys()
            .filter_map(|n| info_of(&inner, n))
            .collect();
        for (n, why) in self
            .invalid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            v.push(invalid_info(n, why));
        }
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub fn status(&self, name: &str) -> Result<VpInfo, Error> {
        name::validate("VP", name)?;
        let inner = self.lock();
        if let Some(why) = self
            .invalid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(invalid_info(name, why));
        }
        info_of(&inner, name).ok_or_else(|| self.missing(name))
    }

    pub fn create(&self, name: &str, mut opts: CreateOptions) -> Result<(), Error> {
        name::validate("VP", name)?;
        if opts.memory.is_none() {
            opts.memory = self.cfg.default_memory;
        }
        if opts.disk.is_none() {
            opts.disk = self.cfg.default_disk;
        }
        opts.validate()
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        if opts.oci.is_none() {
            self.check_template_known(&opts.template)?;
        }
        let layout = &self.cfg.layout;
        let mut inner = self.lock();
        if inner.vps.contains_key(name) || layout.vp_dir(name).exists() {
            return Err(Error::AlreadyExists(format!(
                "a VP named '{name}' already exists: pick another name, or remove it with `cellctl destroy {name}`"
            )));
        }
        let used: Vec<u32> = inner
            .vps
            .values()
            .map(|v| v.config.cells.slot)
            .chain(inner.reserved.values().filter_map(|r| r.slot))
            .collect();
        let slot = (0..).find(|s| !used.contains(s)).unwrap_or(0);
        if self
            .cfg
            .id_base
            .checked_add((slot + 1) * ID_RANGE)
            .is_none()
        {
            return Err(Error::Failed("no free user id range left".into()));
        }
        let mut config = VpConfig::new(
            name,
            &opts,
            slot,
            self.cfg.id_base,
            &layout.vp_data(name),
            unix_now(),
        )
        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        config.set_cgroup_parent(&self.cfg.cgroup_parent);
        self.allocate_network(&inner, &mut config)?;
        if let Some(id) = config.host_root_id() {
            self.check_id_range(name, id)?;
        }
        // The VP's folder is made whole under a temporary name and renamed
        // into place: a create cut short (a crash) leaves no half VP, only a
        // `.creating-*` folder that the next start of cellsd removes.
        let vps = layout.vps_dir();
        let tmp = vps.join(format!("{}{name}", crate::layout::CREATING_PREFIX));
        let result = (|| -> std::io::Result<()> {
            // state/vps and vps/NAME belong to root (0700): the monitor (as
            // root) mounts the VP's folders, no VP id walks there, and no
            // other host user gets in. Only upper/ and data/ are VP root's.
            std::fs::create_dir_all(&vps)?;
            std::fs::set_permissions(&vps, std::fs::Permissions::from_mode(0o700))?;
            if tmp.exists() {
                std::fs::remove_dir_all(&tmp)?;
            }
            std::fs::create_dir(&tmp)?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700))?;
            let owner = config.host_root_id();
            let rel = |p: PathBuf| -> PathBuf {
                tmp.join(p.strip_prefix(layout.vp_dir(name)).unwrap_or(&p))
            };
            for (d, mode, vp_owned) in [
                (rel(layout.vp_upper(name)), 0o755, true),
                (rel(layout.vp_data(name)), 0o771, true),
                (rel(layout.vp_work(name)), 0o700, false),
            ] {
                std::fs::create_dir_all(&d)?;
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode))?;
                // The upper layer's root and /data belong to VP root.
                if vp_owned {
                    if let Some(id) = owner {
                        chown(&d, Some(id), Some(id))?;
                    }
                }
            }
            if let Some(size) = config.cells.disk {
                // The folders just made, owners and modes included, become
                // the image's content; the host keeps them empty (their
                // owner still tells the VP's id range).
                let img = vps.join(format!("{}{name}.img", crate::layout::CREATING_PREFIX));
                let _ = std::fs::remove_file(&img);
                crate::disk::make_image(&img, size, &tmp)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                std::fs::rename(&img, tmp.join(crate::disk::IMAGE_FILE))?;
            }
            reserve::write_definition(&tmp, &config)?;
            std::fs::rename(&tmp, layout.vp_dir(name))?;
            std::fs::File::open(&vps)?.sync_all()
        })();
        let result = result.and_then(|_| {
            net::ensure_adb_dir(layout, name).map_err(|e| std::io::Error::other(e.to_string()))
        });
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            let _ = std::fs::remove_dir_all(layout.vp_dir(name));
            return Err(Error::Failed(format!("creating VP '{name}': {e}")));
        }
        let net = config.cells.network.clone();
        let source = self.source_of(&config);
        inner.vps.insert(
            name.to_string(),
            Vp {
                config,
                phase: Phase::Stopped,
                run: None,
                op: Arc::new(tokio::sync::Mutex::new(())),
                frozen: false,
                bg_gen: 0,
            },
        );
        drop(inner);
        if let Some(s) = &source {
            self.net.change_source(s, true);
        }
        self.open_forwards(name, &net);
        self.emit_state(name, VpState::Created);
        Ok(())
    }

    /// A VP's id range must be nobody else's on the host: a user (or a
    /// subordinate range of one) with those ids could reach the VP's files
    /// and processes, and own its user namespace.
    fn check_id_range(&self, vp: &str, first: u32) -> Result<(), Error> {
        let hits = id_range_users(first, ID_RANGE);
        if hits.is_empty() {
            return Ok(());
        }
        Err(Error::Failed(format!(
            "VP '{vp}' would map to host ids {first}-{}, which belong to {}: \
             restart cellsd with --id-base N where N..N+{} holds no user, group or \
             /etc/subuid, /etc/subgid range (and recreate the VP), or move those ids away",
            first as u64 + ID_RANGE as u64 - 1,
            hits.join(", "),
            ID_RANGE as u64 * 256,
        )))
    }

    pub async fn start(self: &Arc<Self>, name: &str) -> Result<(), Error> {
        if let Some(cfg) = self.lock().vps.get(name).map(|v| v.config.clone()) {
            oci::refuse(
                &cfg,
                "started by cellsd (containerd starts it: `ctr task start`, or its pod)",
            )?;
        }
        let t0 = std::time::Instant::now();
        let r = self.start_inner(name, None, None).await;
        tracing::debug!(
            vp = name,
            us = t0.elapsed().as_micros() as u64,
            ok = r.is_ok(),
            "start"
        );
        r
    }

    async fn start_inner(
        self: &Arc<Self>,
        name: &str,
        restore: Option<crate::monitor::RestoreRequest>,
        monitor: Option<Monitor>,
    ) -> Result<(), Error> {
        let op = self.op_lock(name)?;
        let _guard = op.lock().await;
        {
            let mut inner = self.lock();
            let vp = inner.vps.get_mut(name).ok_or_else(|| self.missing(name))?;
            if vp.phase != Phase::Stopped {
                return Err(Error::already_running(name));
            }
            vp.phase = Phase::Starting;
        }
        if restore.is_none() {
            self.retire_checkpoint(name);
        }
        self.emit_state(name, VpState::Starting);
        let config = match self.ensure_network(name) {
            Ok(c) => c,
            Err(e) => {
                if let Some(vp) = self.lock().vps.get_mut(name) {
                    vp.phase = Phase::Stopped;
                }
                return Err(e);
            }
        };
        let started = self.spawn_vp(&config, restore, monitor).await;
        let mgr = Arc::clone(self);
        tokio::spawn(async move { mgr.refill_spare().await });
        match started {
            Ok(running) => {
                let mut inner = self.lock();
                if let Some(vp) = inner.vps.get_mut(name) {
                    vp.phase = Phase::Running;
                    vp.run = Some(running);
                }
                // The first VP to run takes the screen (one without a
                // display, e.g. a pod's sandbox, never does).
                let shows = config.cells.devices.has(crate::devices::model::DISPLAY);
                if inner.foreground.is_none() && shows {
                    self.set_foreground(&mut inner, Some(name.to_string()));
                } else {
                    // Started in the background: its policy applies from now.
                    self.set_cpu_weight(&inner, name, false);
                    self.arm_freeze(&mut inner, name);
                }
                drop(inner);
                self.emit_state(name, VpState::Running);
                Ok(())
            }
            Err(e) => {
                let mut inner = self.lock();
                if let Some(vp) = inner.vps.get_mut(name) {
                    vp.phase = Phase::Stopped;
                }
                Err(e)
            }
        }
    }

    async fn spawn_vp(
        self: &Arc<Self>,
        config: &VpConfig,
        restore: Option<crate::monitor::RestoreRequest>,
        given: Option<Monitor>,
    ) -> Result<Running, Error> {
        let name = config.name.as_str();
        if let Some(id) = config.host_root_id() {
            self.check_id_range(name, id)?;
        }
        let layout = &self.cfg.layout;
        let t = &config.cells.template;
        let oci = config.cells.oci.is_some();
        let pin = if oci {
            None
        } else {
            BuildPin::take(&self.pinned, layout, t)
        };
        let build = match pin.as_ref().map(|p| p.build.clone()) {
            Some(b) => b,
            // An OCI container's root is its bundle's (no template).
            None if oci => String::new(),
            None => {
                self.check_template_known(t)?;
                return Err(Error::TemplateNotBuilt(format!(
                    "template '{t}' of VP '{name}' is not built: run `cellctl template build {t}`, then start the VP again"
                )));
            }
        };
        net::ensure_adb_dir(layout, name)?;
        let run_dir = layout.vp_run_dir(name);
        std::fs::create_dir_all(&run_dir).map_err(failed("create the run dir"))?;
        // A reboot request of an earlier run is not this one's.
        let _ = std::fs::remove_file(layout.vp_reboot_marker(name));
        for d in [run_dir.as_path(), layout.run.join("vps").as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
                .map_err(failed("chmod the run dir"))?;
        }
        // With a disk image, the writable layer and /data are on it, mounted
        // by the monitor at <run>/vps/NAME/disk.
        let disk = config.cells.disk.map(|_| crate::disk::DiskRequest {
            image: layout.vp_dir(name).join(crate::disk::IMAGE_FILE),
            mountpoint: run_dir.join("disk"),
        });
        let on_disk = |p: PathBuf| match &disk {
            Some(d) => d
                .mountpoint
                .join(p.strip_prefix(layout.vp_dir(name)).unwrap_or(&p)),
            None => p,
        };
        let mut vp_config = config.clone();
        if disk.is_some() {
            let data = layout.vp_data(name);
            let mut mounts = vp_config.runtime.mounts().clone().unwrap_or_default();
            for m in mounts.iter_mut() {
                if m.source().as_deref() == Some(data.as_path()) {
                    m.set_source(Some(on_disk(data.clone())));
                }
            }
            vp_config.runtime.set_mounts(Some(mounts));
        }
        let network = Some(self.net_request(config)?);
        let req = MonitorRequest {
            config: vp_config,
            template_rootfs: layout.template_build_rootfs(t, &build),
            upper: on_disk(layout.vp_upper(name)),
            work: on_disk(layout.vp_work(name)),
            disk,
            run_dir: run_dir.clone(),
            console_log: layout.vp_console_log(name),
            console_socket: layout.vp_console_socket(name),
            run_state: layout.vp_run_state(name),
            cgroup: self.cgroup_of(config),
            template_build: build.clone(),
            monitor_log: layout.vp_monitor_log(name),
            devices: self.prepare_devices(config)?,
            extra_env: self.runtime_env(config),
            trace: tracing::enabled!(tracing::Level::DEBUG),
            network,
            properties: self.properties(config),
            adb_keys: Some(layout.vp_adb_dir(name)),
            ksm: self.cfg.ksm,
            restore,
        };
        let monitor = match given {
            Some(m) => Ok(m),
            None => self.take_monitor().await,
        };
        let line = serde_json::to_string(&req).map_err(|e| Error::Failed(e.to_string()));
        let (mut monitor, mut line) = match (monitor, line) {
            (Ok(m), Ok(l)) => (m, l),
            (Err(e), _) | (_, Err(e)) => {
                self.devices.unprepare(name, &req.devices);
                return Err(e);
            }
        };
        line.push('\n');
        let events = &mut monitor.events;
        let stdin = &mut monitor.stdin;
        let result = tokio::time::timeout(START_TIMEOUT, async {
            stdin
                .write_all(line.as_bytes())
                .await
                .map_err(failed("talk to the monitor"))?;
            let pid = match next_event(events).await? {
                MonitorEvent::Init { pid } => pid,
                MonitorEvent::Failed { error } => return Err(start_failed(name, &error)),
                other => return Err(Error::Failed(format!("monitor said {other:?}"))),
            };
            // The monitor does not reap the init before our "ack": the pid is ours.
            let pidfd = sys::pidfd_open(pid).map_err(failed("pidfd_open of the VP's init"))?;
            stdin
                .write_all(b"ack\n")
                .await
                .map_err(failed("talk to the monitor"))?;
            match next_event(events).await? {
                MonitorEvent::Started => Ok(pidfd),
                MonitorEvent::Failed { error } => Err(start_failed(name, &error)),
                other => Err(Error::Failed(format!("monitor said {other:?}"))),
            }
        })
        .await;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(Error::Failed(format!(
                "VP '{name}' did not start within {}s; see {}",
                START_TIMEOUT.as_secs(),
                layout.vp_monitor_log(name).display()
            ))),
        };
        let state = result.and_then(|pidfd| {
            std::fs::read_to_string(layout.vp_run_state(name))
                .ok()
                .and_then(|t| serde_json::from_str::<RunState>(&t).ok())
                .map(|st| (st, pidfd))
                .ok_or_else(|| Error::Failed("the monitor wrote no run state".into()))
        });
        match state {
            Ok((state, pidfd)) => {
                // tokio reaps the monitor when it exits (the Child is dropped
                // without kill_on_drop); the VP's end is seen on the pidfd.
                drop(monitor);
                let mut running = self.watch(name.to_string(), state, pidfd, config);
                running._pin = pin;
                Ok(running)
            }
            Err(e) => {
                monitor.kill().await;
                self.devices.unprepare(name, &req.devices);
                let _ = std::fs::remove_file(layout.vp_run_state(name));
                let cg = self.cgroup_of(config);
                let _ =
                    tokio::task::spawn_blocking(move || cg.destroy(Duration::from_secs(5))).await;
                Err(e)
            }
        }
    }

    pub async fn stop(self: &Arc<Self>, name: &str, timeout_secs: u32) -> Result<(), Error> {
        let op = self.op_lock(name)?;
        let _guard = op.lock().await;
        let (pidfd, mut ended) = {
            let mut inner = self.lock();
            let vp = inner.vps.get_mut(name).ok_or_else(|| self.missing(name))?;
            let Some(run) = vp.run.as_ref().filter(|_| vp.phase == Phase::Running) else {
                return Err(Error::not_running(name));
            };
            let r = (Arc::clone(&run.pidfd), run.ended.clone());
            vp.phase = Phase::Stopping;
            r
        };
        // A frozen VP would not act on SIGTERM.
        self.thaw_for_stop(name);
        self.emit_state(name, VpState::Stopping);
        // cells-init ends every process of the VP on SIGTERM, then itself.
        let _ = sys::pidfd_send_signal(&*pidfd, libc::SIGTERM);
        let graceful = tokio::time::timeout(
            Duration::from_secs(timeout_secs.max(1) as u64),
            ended.wait_for(|e| *e),
        )
        .await
        .is_ok();
        if !graceful {
            tracing::warn!(vp = name, "did not stop in {timeout_secs}s; killing it");
            let _ = sys::pidfd_send_signal(&*pidfd, libc::SIGKILL);
            if tokio::time::timeout(Duration::from_secs(30), ended.wait_for(|e| *e))
                .await
                .is_err()
            {
                return Err(Error::Failed(format!(
                    "VP '{name}' did not end after SIGKILL; see {}",
                    self.cfg.layout.vp_monitor_log(name).display()
                )));
            }
        }
        Ok(())
    }

    pub async fn destroy(self: &Arc<Self>, name: &str) -> Result<(), Error> {
        let op = self.op_lock(name)?;
        let _guard = op.lock().await;
        {
            let inner = self.lock();
            let vp = inner.vps.get(name).ok_or_else(|| self.missing(name))?;
            if vp.phase != Phase::Stopped {
                return Err(Error::Running(format!(
                    "VP '{name}' is {}: stop it first with `cellctl stop {name}`",
                    vp.phase.state().as_str()
                )));
            }
        }
        let dir = self.cfg.layout.vp_dir(name);
        let run_dir = self.cfg.layout.vp_run_dir(name);
        // Rename the VP's folder out of the way first (atomic): a destroy
        // cut short leaves no half VP, only a `.destroying-*` folder that
        // the next start of cellsd removes.
        let vps = self.cfg.layout.vps_dir();
        let gone = vps.join(format!(
            "{}{name}-{}",
            crate::layout::DESTROYING_PREFIX,
            unix_now()
        ));
        std::fs::rename(&dir, &gone).map_err(failed("removing the VP's folder"))?;
        if let Ok(d) = std::fs::File::open(&vps) {
            let _ = d.sync_all();
        }
        tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(&run_dir);
            std::fs::remove_dir_all(&gone)
        })
        .await
        .map_err(|e| Error::Failed(e.to_string()))?
        .map_err(failed("removing the VP's files"))?;
        let source = {
            let mut inner = self.lock();
            inner
                .vps
                .remove(name)
                .and_then(|v| self.source_of(&v.config))
        };
        if let Some(s) = &source {
            self.net.change_source(s, false);
        }
        self.net.forwards.remove_vp(name).await;
        self.emit_state(name, VpState::Destroyed);
        Ok(())
    }
}

/// The monitor of the VP whose cgroup holds `pids`: the parent, outside
/// the cgroup, of one of them (the init), a host-root `cellsd __monitor`.
fn find_monitor(pids: &[i32]) -> Option<i32> {
    pids.iter().find_map(|p| {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        let ppid: i32 = stat[stat.rfind(')')? + 1..]
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        if pids.contains(&ppid) || ppid <= 1 {
            return None;
        }
        let meta = std::fs::metadata(format!("/proc/{ppid}")).ok()?;
        let cmdline = std::fs::read(format!("/proc/{ppid}/cmdline")).ok()?;
        let is_monitor = cmdline.split(|b| *b == 0).nth(1) == Some(b"__monitor".as_slice());
        (std::os::unix::fs::MetadataExt::uid(&meta) == 0 && is_monitor).then_some(ppid)
    })
}

fn start_failed(name: &str, error: &str) -> Error {
    Error::Failed(format!("starting VP '{name}' failed: {error}"))
}

async fn next_event(
    lines: &mut tokio::io::Lines<BufReader<Box<dyn tokio::io::AsyncRead + Send + Unpin>>>,
) -> Result<MonitorEvent, Error> {
    match lines.next_line().await {
        Ok(Some(l)) => serde_json::from_str(&l)
            .map_err(|e| Error::Failed(format!("bad monitor event '{l}': {e}"))),
        Ok(None) => Err(Error::Failed(
            "the VP monitor exited during the start; see its log in the run dir".into(),
        )),
        Err(e) => Err(Error::Failed(format!("reading the monitor: {e}"))),
    }
}

/// Wait until the process behind a pidfd has exited (a pidfd becomes
/// readable when its process exits).
async fn wait_pidfd(fd: &OwnedFd) {
    let registered = fd.try_clone().ok().and_then(|dup| {
        // SAFETY: the AsyncFd owns `dup`, so the fd stays open while registered.
        unsafe { AsyncFd::register_with_interest(dup, tokio::io::Interest::READABLE) }.ok()
    });
    if let Some(afd) = registered {
        let _ = afd.readable().await;
        return;
    }
    // Not registrable (should not happen): poll it.
    loop {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: a single pollfd with a zero timeout.
        if unsafe { libc::poll(&mut p, 1, 0) } > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The VP `name` if it exists and runs; else the API's error saying which.
fn running_vp<'a>(inner: &'a Inner, name: &str) -> Result<&'a Vp, Error> {
    name::validate("VP", name)?;
    let vp = inner.vps.get(name).ok_or_else(|| Error::unknown_vp(name))?;
    if vp.phase != Phase::Running {
        return Err(Error::not_running(name));
    }
    Ok(vp)
}

/// What `list` and `status` say of a VP whose definition is not usable.
fn invalid_info(name: &str, why: &str) -> VpInfo {
    VpInfo {
        name: name.to_string(),
        state: VpState::Invalid.as_str().to_string(),
        error: why.to_string(),
        ..Default::default()
    }
}

/// A VP's folder in the state dir belongs to root, mode 0700 (only its
/// upper/ and data/ are VP root's). Folders of older cellsd versions
/// (owned by VP root) are taken back.
fn secure_vp_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if meta.file_type().is_symlink() || !meta.is_dir() {
        return Err(format!("{} is not a folder", dir.display()));
    }
    if meta.uid() != 0 || meta.gid() != 0 || meta.mode() & 0o7777 != 0o700 {
        std::os::unix::fs::lchown(dir, Some(0), Some(0))
            .and_then(|_| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| format!("securing {}: {e}", dir.display()))?;
        tracing::info!("{} now belongs to root (mode 0700)", dir.display());
    }
    Ok(())
}

/// Host ids that are someone's already: users and groups of /etc/passwd
/// and /etc/group, and the subordinate ranges of /etc/subuid and
/// /etc/subgid. Returns what a range [first, first+len) overlaps.
pub fn id_range_users(first: u32, len: u32) -> Vec<String> {
    let end = first as u64 + len as u64;
    let mut hits = Vec::new();
    for (file, kind) in [("/etc/passwd", "user"), ("/etc/group", "group")] {
        for l in std::fs::read_to_string(file).unwrap_or_default().lines() {
            let f: Vec<&str> = l.split(':').collect();
            if let Some(id) = f.get(2).and_then(|x| x.parse::<u64>().ok()) {
                // nobody/nogroup (65534) is the overflow id, outside every range.
                if id >= first as u64 && id < end {
                    hits.push(format!("{kind} '{}' ({file}, id {id})", f[0]));
                }
            }
        }
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        for l in std::fs::read_to_string(file).unwrap_or_default().lines() {
            let f: Vec<&str> = l.split(':').collect();
            let (Some(s), Some(n)) = (
                f.get(1).and_then(|x| x.parse::<u64>().ok()),
                f.get(2).and_then(|x| x.parse::<u64>().ok()),
            ) else {
                continue;
            };
            if s < end && s + n > first as u64 {
                hits.push(format!("{file} entry '{}'", l.trim()));
            }
        }
    }
    hits
}

/// The VP's policy of every device, as "NAME=POLICY" (network's follows
/// the network policy).
fn device_policies(cfg: &VpConfig) -> Vec<String> {
    use crate::devices::model::{Policy, NETWORK};
    cfg.cells
        .devices
        .all()
        .into_iter()
        .map(|(n, p)| {
            let p = if n == NETWORK && !cfg.cells.network.policy.bridged() {
                Policy::None
            } else {
                p
            };
            format!("{n}={p}")
        })
        .collect()
}

fn info_of(inner: &Inner, name: &str) -> Option<VpInfo> {
    let vp = inner.vps.get(name)?;
    let cfg = &vp.config;
    let run = vp.run.as_ref();
    let started = run.map(|r| r.state.started_at).unwrap_or(0);
    Some(VpInfo {
        name: name.to_string(),
        state: if vp.frozen && vp.phase == Phase::Running {
            VpState::Frozen.as_str().to_string()
        } else {
            vp.phase.state().as_str().to_string()
        },
        frozen: vp.frozen,
        background: cfg.cells.background.to_string(),
        network: cfg.cells.network.policy.as_str().to_string(),
        devices: device_policies(cfg),
        ip: cfg
            .cells
            .network
            .ip
            .filter(|_| cfg.cells.network.policy.bridged())
            .map(|i| i.to_string())
            .unwrap_or_default(),
        adb: cfg
            .cells
            .network
            .adb_port
            .map(|p| format!("127.0.0.1:{p}"))
            .unwrap_or_default(),
        pid: run.map(|r| r.state.init_pid as u32).unwrap_or(0),
        template: cfg.cells.template.clone(),
        template_build: run
            .map(|r| r.state.template_build.clone())
            .unwrap_or_default(),
        hostname: cfg.hostname().to_string(),
        foreground: inner.foreground.as_deref() == Some(name),
        privileged: cfg.cells.privileged,
        started_at: started,
        uptime_secs: if started > 0 {
            unix_now().saturating_sub(started)
        } else {
            0
        },
        created: cfg.cells.created,
        memory_limit: cfg.memory_limit().unwrap_or(0).max(0) as u64,
        cpus: cfg.cpus().unwrap_or(0.0),
        pids_limit: cfg.pids_limit().unwrap_or(0).max(0) as u64,
        disk_limit: cfg.cells.disk.unwrap_or(0),
        seccomp: cfg.cells.seccomp.describe().to_string(),
        error: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 11): gc deleted the build a starting VP had just
    /// picked (a new build became current between the pick and the run).
    #[test]
    fn a_pinned_build_survives_gc() {
        let root = std::env::temp_dir().join(format!("cells-pin-{}", std::process::id()));
        let layout = Layout::new(root.join("state"), root.join("run"));
        let builds = layout.template_builds("t");
        for b in ["1", "2"] {
            std::fs::create_dir_all(builds.join(b).join("rootfs")).unwrap();
        }
        let current = layout.template_current("t");
        std::os::unix::fs::symlink("builds/1", &current).unwrap();
        let pins = Arc::new(Mutex::new(Vec::new()));
        let pin = BuildPin::take(&pins, &layout, "t").unwrap();
        assert_eq!(pin.build, "1");
        // Build 2 becomes current while the VP starts on build 1.
        std::fs::remove_file(&current).unwrap();
        std::os::unix::fs::symlink("builds/2", &current).unwrap();
        let held: Vec<String> = pins
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect();
        assert!(template::gc(&layout, "t", &held).is_empty());
        assert!(builds.join("1").is_dir());
        drop(pin);
        let held: Vec<String> = pins
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect();
        assert!(held.is_empty());
        assert_eq!(template::gc(&layout, "t", &held), vec!["1".to_string()]);
        assert!(BuildPin::take(&pins, &layout, "none").is_none());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
