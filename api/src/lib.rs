//! What cellsd and its clients share: the control API, D-Bus interface
//! `org.cells.Manager1` at `/org/cells/Manager1`, served peer to peer on
//! `<run>/cellsd.sock`.
//!
//! This crate holds what both ends need and nothing of the daemon: the
//! error type (D-Bus error names `org.cells.Error.*`), the dictionaries
//! (`a{sv}`) that describe VPs and templates, the client proxy cellctl uses,
//! the rules for VP and template names ([`name`]), where the socket is
//! ([`paths`]) and who may use it ([`access`]). The server side is cellsd's
//! `server` module.

pub mod access;
pub mod audio;
pub mod name;
pub mod paths;

use std::collections::HashMap;

use zbus::zvariant::{DeserializeDict, OwnedFd, OwnedValue, SerializeDict, Type};

pub const INTERFACE: &str = "org.cells.Manager1";
pub const OBJECT_PATH: &str = "/org/cells/Manager1";

/// Errors of the API. The message of each says what went wrong and what to do.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.cells.Error")]
pub enum CellsError {
    #[zbus(error)]
    ZBus(zbus::Error),
    UnknownVp(String),
    InvalidName(String),
    InvalidArgument(String),
    UnknownTemplate(String),
    TemplateNotBuilt(String),
    AlreadyExists(String),
    AlreadyRunning(String),
    NotRunning(String),
    Running(String),
    AccessDenied(String),
    Busy(String),
    Failed(String),
}

impl CellsError {
    pub fn unknown_vp(name: &str) -> Self {
        CellsError::UnknownVp(format!(
            "no VP named '{name}': see `cellctl list` for the VPs there are, or create it with `cellctl create {name} --template minimal`"
        ))
    }
    pub fn not_running(name: &str) -> Self {
        CellsError::NotRunning(format!(
            "VP '{name}' is not running: start it with `cellctl start {name}`"
        ))
    }
    pub fn already_running(name: &str) -> Self {
        CellsError::AlreadyRunning(format!(
            "VP '{name}' is already running (see `cellctl status {name}`); stop it first with `cellctl stop {name}` to restart it"
        ))
    }
    /// The message without the D-Bus error name.
    pub fn message(&self) -> String {
        match self {
            CellsError::ZBus(e) => e.to_string(),
            CellsError::UnknownVp(m)
            | CellsError::InvalidName(m)
            | CellsError::InvalidArgument(m)
            | CellsError::UnknownTemplate(m)
            | CellsError::TemplateNotBuilt(m)
            | CellsError::AlreadyExists(m)
            | CellsError::AlreadyRunning(m)
            | CellsError::NotRunning(m)
            | CellsError::Running(m)
            | CellsError::AccessDenied(m)
            | CellsError::Busy(m)
            | CellsError::Failed(m) => m.clone(),
        }
    }
}

impl From<crate::name::NameError> for CellsError {
    fn from(e: crate::name::NameError) -> Self {
        CellsError::InvalidName(e.to_string())
    }
}

/// A VP's state, as `List`/`Status` report it and the `VpStateChanged`
/// signal announces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VpState {
    /// Defined (signal only: a `Create` finished).
    Created,
    /// A start is under way.
    Starting,
    /// Its init runs (started, or thawed).
    Running,
    /// Running, its processes frozen (background policy or `Freeze`).
    Frozen,
    /// A stop is under way.
    Stopping,
    Stopped,
    /// Its definition is gone (signal only: a `Destroy` finished).
    Destroyed,
    /// Its definition cannot be used (listed only; see `error`).
    Invalid,
}

impl VpState {
    pub const ALL: [VpState; 8] = [
        VpState::Created,
        VpState::Starting,
        VpState::Running,
        VpState::Frozen,
        VpState::Stopping,
        VpState::Stopped,
        VpState::Destroyed,
        VpState::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VpState::Created => "created",
            VpState::Starting => "starting",
            VpState::Running => "running",
            VpState::Frozen => "frozen",
            VpState::Stopping => "stopping",
            VpState::Stopped => "stopped",
            VpState::Destroyed => "destroyed",
            VpState::Invalid => "invalid",
        }
    }
}

impl std::fmt::Display for VpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A VP as `List` and `Status` describe it.
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zvariant(signature = "a{sv}")]
pub struct VpInfo {
    pub name: String,
    /// A [`VpState`]: starting, running, frozen, stopping, stopped or
    /// invalid.
    pub state: String,
    /// Host pid of the VP's init; 0 when stopped.
    pub pid: u32,
    pub template: String,
    /// The template build the running VP uses ("" when stopped).
    pub template_build: String,
    pub hostname: String,
    pub foreground: bool,
    pub privileged: bool,
    /// Unix seconds; 0 when stopped.
    pub started_at: u64,
    pub uptime_secs: u64,
    pub created: u64,
    /// Bytes; 0 = no limit.
    pub memory_limit: u64,
    /// CPUs; 0 = no limit.
    pub cpus: f64,
    pub pids_limit: u64,
    /// Bytes of its disk (writable layer and /data together); 0 = no limit.
    pub disk_limit: u64,
    /// Its processes are frozen (background policy or `cellctl freeze`).
    pub frozen: bool,
    /// Background policy: run, stop or freeze-after=DURATION.
    pub background: String,
    /// Network policy: isolated, shared-bridge or none.
    pub network: String,
    /// Every device's policy, "NAME=POLICY" (none, shared or foreground).
    pub devices: Vec<String>,
    /// The VP's address on the bridge ("" with policy none).
    pub ip: String,
    /// Serial for `adb connect` (127.0.0.1:PORT; "" before the first start).
    pub adb: String,
    /// Seccomp filter: default, off or custom.
    pub seccomp: String,
    /// Why the VP cannot be used (state "invalid"); "" otherwise.
    pub error: String,
}

impl VpInfo {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "state": self.state,
            "pid": if self.pid == 0 { serde_json::Value::Null } else { self.pid.into() },
            "template": self.template,
            "template_build": if self.template_build.is_empty() { serde_json::Value::Null } else { self.template_build.clone().into() },
            "hostname": self.hostname,
            "foreground": self.foreground,
            "privileged": self.privileged,
            "started_at": if self.started_at == 0 { serde_json::Value::Null } else { self.started_at.into() },
            "uptime_secs": if self.started_at == 0 { serde_json::Value::Null } else { self.uptime_secs.into() },
            "created": self.created,
            "memory_limit": if self.memory_limit == 0 { serde_json::Value::Null } else { self.memory_limit.into() },
            "cpus": if self.cpus == 0.0 { serde_json::Value::Null } else { self.cpus.into() },
            "pids_limit": self.pids_limit,
            "disk_limit": if self.disk_limit == 0 { serde_json::Value::Null } else { self.disk_limit.into() },
            "frozen": self.frozen,
            "background": self.background,
            "network": self.network,
            "devices": self
                .devices
                .iter()
                .filter_map(|d| d.split_once('='))
                .map(|(n, p)| (n.to_string(), serde_json::Value::from(p)))
                .collect::<serde_json::Map<String, serde_json::Value>>(),
            "ip": if self.ip.is_empty() { serde_json::Value::Null } else { self.ip.clone().into() },
            "adb": if self.adb.is_empty() { serde_json::Value::Null } else { self.adb.clone().into() },
            "seccomp": self.seccomp,
            "error": if self.error.is_empty() { serde_json::Value::Null } else { self.error.clone().into() },
        })
    }
}

/// The readings the sensors device feeds VPs with, as `Sensors` describes
/// them.
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zvariant(signature = "a{sv}")]
pub struct SensorInfo {
    /// X, Y, Z in m/s² (empty: never set).
    pub accel: Vec<f64>,
    /// Latitude, longitude (degrees), altitude (m) (empty: never set).
    pub location: Vec<f64>,
    /// The VPs whose sensor streams run now (the foreground, and VPs with
    /// `--device sensors=shared`).
    pub active: Vec<String>,
}

/// The device's power state as `Power` describes it.
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zvariant(signature = "a{sv}")]
pub struct PowerInfo {
    /// Some VP holds a wakelock: the device may not suspend.
    pub suspend_blocked: bool,
    /// The foreground VP asked to suspend (its screen is off).
    pub suspend_requested: bool,
    pub screen_on: bool,
    pub foreground: String,
    /// What makes the locks real: android (DIR), logind or none.
    pub backend: String,
    /// The backend's last error ("" if none).
    pub backend_error: String,
    /// Every running VP's locks.
    pub wakelocks: HashMap<String, Vec<String>>,
    /// The VPs whose locks keep the device awake now (a VP with the device
    /// policy power=foreground holds nothing in the background).
    pub blocked_by: Vec<String>,
    pub frozen: Vec<String>,
    /// Requests to /sys/power/state from background VPs (ignored).
    pub ignored_requests: u64,
    pub last_request: String,
}

impl PowerInfo {
    pub fn to_json(&self) -> serde_json::Value {
        let wakelocks: std::collections::BTreeMap<&String, &Vec<String>> =
            self.wakelocks.iter().collect();
        let mut blocked_by = self.blocked_by.clone();
        blocked_by.sort();
        serde_json::json!({
            "suspend_blocked": self.suspend_blocked,
            "suspend_allowed": !self.suspend_blocked,
            "blocked_by": blocked_by,
            "suspend_requested": self.suspend_requested,
            "screen": if self.screen_on { "on" } else { "off" },
            "foreground": if self.foreground.is_empty() { serde_json::Value::Null } else { self.foreground.clone().into() },
            "backend": self.backend,
            "backend_error": if self.backend_error.is_empty() { serde_json::Value::Null } else { self.backend_error.clone().into() },
            "wakelocks": wakelocks,
            "frozen": self.frozen,
            "ignored_requests": self.ignored_requests,
            "last_request": if self.last_request.is_empty() { serde_json::Value::Null } else { self.last_request.clone().into() },
        })
    }
}

/// A template as `TemplateList` describes it.
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zvariant(signature = "a{sv}")]
pub struct TemplateInfo {
    pub name: String,
    pub built: bool,
    /// Has a recipe in the rootfs-templates folder (can be built).
    pub recipe: bool,
    pub build: String,
    pub created: u64,
    pub description: String,
    pub files: u64,
    pub bytes: u64,
    /// VPs defined on this template.
    pub vps: u32,
}

impl TemplateInfo {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "built": self.built,
            "recipe": self.recipe,
            "build": if self.build.is_empty() { serde_json::Value::Null } else { self.build.clone().into() },
            "created": if self.created == 0 { serde_json::Value::Null } else { self.created.into() },
            "description": self.description,
            "files": self.files,
            "bytes": self.bytes,
            "vps": self.vps,
        })
    }
}

/// Options of `Create`, an `a{sv}`: template (s, required), hostname (s),
/// memory (s, e.g. "512M"), cpus (s or d), pids (u/i/t), privileged (b).
pub type CreateOptionsDict = HashMap<String, OwnedValue>;

#[zbus::proxy(
    interface = "org.cells.Manager1",
    default_path = "/org/cells/Manager1",
    gen_blocking = false
)]
pub trait Manager1 {
    fn version(&self) -> zbus::Result<String>;
    fn create(
        &self,
        name: &str,
        options: HashMap<&str, zbus::zvariant::Value<'_>>,
    ) -> zbus::Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn oci_create(
        &self,
        name: &str,
        options: HashMap<&str, zbus::zvariant::Value<'_>>,
        oci: &str,
        monitor_in: zbus::zvariant::Fd<'_>,
        monitor_out: zbus::zvariant::Fd<'_>,
        monitor: zbus::zvariant::Fd<'_>,
    ) -> zbus::Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn oci_exec(
        &self,
        name: &str,
        argv: &[&str],
        env: &[&str],
        cwd: &str,
        user: &(u32, u32, Vec<u32>),
        helper: zbus::zvariant::Fd<'_>,
        stdio: Vec<zbus::zvariant::Fd<'_>>,
    ) -> zbus::Result<()>;
    /// An OCI image as a template: its config (JSON) and its layers,
    /// bottom first; returns the new build's id.
    fn template_import_oci(
        &self,
        name: &str,
        config: &str,
        layers: Vec<zbus::zvariant::Fd<'_>>,
    ) -> zbus::Result<String>;
    fn start(&self, name: &str) -> zbus::Result<()>;
    fn stop(&self, name: &str, timeout_secs: u32) -> zbus::Result<()>;
    fn destroy(&self, name: &str) -> zbus::Result<()>;
    fn list(&self) -> zbus::Result<Vec<VpInfo>>;
    fn status(&self, name: &str) -> zbus::Result<VpInfo>;
    #[allow(clippy::too_many_arguments)]
    fn exec_start(
        &self,
        name: &str,
        argv: &[&str],
        env: &[&str],
        cwd: &str,
        tty: bool,
        rows: u16,
        cols: u16,
    ) -> zbus::Result<(u64, Vec<zbus::zvariant::OwnedFd>)>;
    fn exec_wait(&self, id: u64) -> zbus::Result<i32>;
    fn exec_signal(&self, id: u64, signal: i32) -> zbus::Result<()>;
    fn console(&self, name: &str) -> zbus::Result<OwnedFd>;
    /// A reader of the VP's log: a SEQPACKET socket speaking logd's logdr
    /// protocol (send a request, read `logger_entry` packets; see the
    /// cells-log crate).
    fn log_open(&self, name: &str) -> zbus::Result<OwnedFd>;
    fn switch(&self, name: &str) -> zbus::Result<()>;
    fn next(&self) -> zbus::Result<String>;
    fn prev(&self) -> zbus::Result<String>;
    fn foreground(&self) -> zbus::Result<String>;
    fn screenshot(&self, vp: &str) -> zbus::Result<Vec<u8>>;
    fn display_info(&self) -> zbus::Result<HashMap<String, OwnedValue>>;
    fn input_tap(&self, x: i32, y: i32) -> zbus::Result<()>;
    fn input_swipe(&self, x1: i32, y1: i32, x2: i32, y2: i32, ms: u32) -> zbus::Result<()>;
    fn input_key(&self, key: &str, action: &str) -> zbus::Result<()>;
    fn input_text(&self, text: &str) -> zbus::Result<()>;
    fn template_build(&self, name: &str) -> zbus::Result<String>;
    fn template_list(&self) -> zbus::Result<Vec<TemplateInfo>>;
    /// Import Android images (role -> open image file) as template `name`.
    fn template_import(&self, name: &str, images: HashMap<String, OwnedFd>)
        -> zbus::Result<String>;
    fn power(&self) -> zbus::Result<PowerInfo>;
    /// Set a sensor's reading: "accel" with X Y Z in m/s².
    fn sensor_set(&self, sensor: &str, values: &[f64]) -> zbus::Result<()>;
    /// Set the location the GPS receivers report.
    fn location_set(&self, lat: f64, lon: f64, alt: f64) -> zbus::Result<()>;
    fn sensors(&self) -> zbus::Result<SensorInfo>;
    /// The lights in force and the last vibration, as JSON:
    /// `{"lights": {"leds/red": {"value", "max", "by", "backend"}, ...},
    /// "vibration": {"vp", "ms", "at_ms", "backend"} | null,
    /// "vibrations_ignored"}`.
    fn lights(&self) -> zbus::Result<String>;
    /// The audio device as JSON: format, output and microphone backends,
    /// the foreground and the VP in a call, every VP's policy, gain, whether
    /// it gets the microphone, and how much it played, was heard, captured.
    fn audio(&self) -> zbus::Result<String>;
    /// Telephony as JSON: every VP's number and whether its modem is up,
    /// the calls (ringing or active, with both numbers), the last messages,
    /// and the last refusals.
    fn phone(&self) -> zbus::Result<String>;
    /// Give a VP its phone number (unique; kept across restarts).
    fn phone_number(&self, vp: &str, number: &str) -> zbus::Result<()>;
    /// Give the device's cellular line (the modem's number, its calls and
    /// messages) to a VP; kept across restarts.
    fn phone_assign(&self, vp: &str) -> zbus::Result<()>;
    /// Act on a running VP's behalf, as its dialer would: `dial` NUMBER,
    /// `answer`, `hangup`, `sms` NUMBER TEXT.
    fn phone_action(&self, vp: &str, action: &str, arg: &str, text: &str) -> zbus::Result<()>;
    /// The device's output (the mix) for the next `ms` ms (1..=60000), as
    /// S16_LE 48 kHz stereo bytes; returns after that long.
    fn audio_record(&self, ms: u32) -> zbus::Result<Vec<u8>>;
    /// Queue S16_LE 48 kHz stereo bytes as the device's microphone (at
    /// most 60 s queued).
    fn audio_mic(&self, pcm: &[u8]) -> zbus::Result<()>;
    /// Every VP's wake-up alarms and the host's alarm timers, as JSON (see
    /// cellsd's `devices::alarm::AlarmsReport`).
    fn alarms(&self) -> zbus::Result<String>;
    fn wakelocks(&self, name: &str) -> zbus::Result<Vec<String>>;
    /// Returns the microseconds the freeze took.
    fn freeze(&self, name: &str) -> zbus::Result<u64>;
    /// Returns the microseconds the thaw took.
    fn thaw(&self, name: &str) -> zbus::Result<u64>;
    fn adb(&self, name: &str) -> zbus::Result<String>;
    fn export(
        &self,
        name: &str,
        out: zbus::zvariant::OwnedFd,
        incremental: bool,
    ) -> zbus::Result<String>;
    fn web(&self) -> zbus::Result<String>;
    /// A checkpointed (stopped) VP with its checkpoint, for a live move.
    fn export_checkpoint(&self, name: &str, out: zbus::zvariant::OwnedFd) -> zbus::Result<String>;
    fn import(
        &self,
        input: zbus::zvariant::OwnedFd,
        name: &str,
        any_build: bool,
    ) -> zbus::Result<String>;
    /// Returns the snapshot's description (JSON).
    fn snapshot(&self, name: &str, snapshot: &str) -> zbus::Result<String>;
    fn snapshots(&self, name: &str) -> zbus::Result<String>;
    fn snapshot_delete(&self, name: &str, snapshot: &str) -> zbus::Result<()>;
    /// Returns the checkpoint's manifest (JSON).
    fn checkpoint(&self, name: &str, leave_running: bool) -> zbus::Result<String>;
    fn restore(&self, name: &str) -> zbus::Result<String>;
    fn rollback(&self, name: &str, snapshot: &str) -> zbus::Result<()>;
    fn reset(&self, name: &str) -> zbus::Result<()>;
    fn set_network(&self, name: &str, policy: &str) -> zbus::Result<()>;
    fn adb_authorize(&self, name: &str, key: &str) -> zbus::Result<()>;
    fn adb_revoke(&self, name: &str, key: &str) -> zbus::Result<u32>;
    fn adb_keys(&self, name: &str) -> zbus::Result<Vec<(String, String)>>;
    fn port_add(&self, name: &str, spec: &str) -> zbus::Result<()>;
    fn port_remove(&self, name: &str, host_port: u16) -> zbus::Result<()>;
    /// (host port, VP port, kind: "adb" or "", listening now)
    fn ports(&self, name: &str) -> zbus::Result<Vec<(u16, u16, String, bool)>>;

    #[zbus(signal)]
    fn vp_state_changed(&self, name: String, state: String) -> zbus::Result<()>;
    #[zbus(signal)]
    fn foreground_changed(&self, name: String) -> zbus::Result<()>;
    /// A call rings in a VP (in the background too): the VP, the caller's number.
    #[zbus(signal)]
    fn incoming_call(&self, vp: String, from: String) -> zbus::Result<()>;
    #[zbus(signal)]
    fn vp_transfer_progress(
        &self,
        vp: String,
        done: u64,
        total: u64,
        step: String,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    fn template_build_progress(
        &self,
        template: String,
        done: u64,
        total: u64,
        step: String,
    ) -> zbus::Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp_state_names_are_distinct() {
        let mut names: Vec<&str> = VpState::ALL.iter().map(|v| v.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), VpState::ALL.len());
    }
}
