//! What cellsd and a monitor say to each other: the request (a JSON line on stdin), the events (JSON lines on stdout), the run state (run.json) and the devices the monitor reports.

use super::*;

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
    /// Restore the VP's processes from a CRIU checkpoint instead of
    /// starting its init.
    #[serde(default)]
    pub restore: Option<RestoreRequest>,
}

/// A restore (`cellctl restore`): the monitor builds the VP's devices and
/// tree as for a start, then runs `criu restore` into them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreRequest {
    /// The criu program.
    pub criu: PathBuf,
    /// CRIU's images.
    pub images: PathBuf,
    /// (key, mount point) of the external mounts, from the manifest.
    pub mounts: Vec<(String, String)>,
    /// (tty key, path in the VP) of the external terminals.
    pub ttys: Vec<(String, String)>,
    /// Open files of the VP's FUSE devices, opened again and inherited.
    #[serde(default)]
    pub files: Vec<crate::criu::ExternalFile>,
    /// The framebuffer's saved contents, written into the new one first.
    pub framebuffer: Option<PathBuf>,
    /// criu's log.
    pub log: PathBuf,
}

/// Where the VP sees its authorized adb keys (adbd reads `adb_keys` there).
pub const VP_ADB_DIR: &str = "/dev/adb";

pub use crate::devices::binder::BinderRequest;
pub use crate::devices::registry::{DeviceFds, DeviceRecord, DeviceRequest};

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
