//! VPs from OCI bundles: what `cells-runtime` (the OCI runtime CLI that
//! containerd's runc shim calls) makes of a bundle, and the CLI itself.
//!
//! A bundle becomes a cells VP: cells' own namespaces (its user namespace
//! included: VP root is the VP's unprivileged id range, as for every VP),
//! its devices and its cgroup; from the bundle come the process (args, env,
//! cwd, user), the host name, the bind mounts, namespaces to join by path
//! (a pod's network, IPC and UTS namespaces) and the root file system. The
//! root is used as the VP's read-only lower layers — the layers of the
//! overlay containerd mounted there, or the folder itself — each attached
//! idmapped, under the VP's own writable layer: an overlayfs mount cannot
//! be idmapped itself. Files: `bundle` (pure: a bundle's config to an
//! [`OciSource`], the layers of a root from a mount table), `runtime` (the
//! CLI).

pub mod bundle;
pub mod image;
pub mod runtime;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What a VP takes from its OCI bundle (kept in vp.json: the VP's runtime
/// spec is rebuilt from it, as from every other setting).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciSource {
    /// The container's id (containerd's), which may not be a VP name.
    pub id: String,
    pub bundle: PathBuf,
    /// The root's read-only layers, top first.
    pub layers: Vec<PathBuf>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_gids: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub binds: Vec<OciBind>,
    /// Namespaces joined by path (`network`, `ipc`, `uts`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub join: Vec<OciJoin>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The bundle's bounding capabilities (None: not given): the VP gets
    /// those of them that cells' own set has, never more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
    /// The bundle's resource limits, set on the init after cells' own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rlimits: Vec<OciRlimit>,
    /// The bundle's tmpfs mounts (e.g. /dev/shm).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<OciTmpfs>,
}

/// A bind mount of the bundle (a host path containerd chose, e.g. a pod's
/// `/etc/hosts` or a volume).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciBind {
    pub source: PathBuf,
    pub destination: String,
    pub readonly: bool,
}

/// A resource limit (`RLIMIT_NOFILE`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciRlimit {
    pub kind: String,
    pub soft: u64,
    pub hard: u64,
}

/// A tmpfs of the bundle: its destination and the options cells passes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciTmpfs {
    pub destination: String,
    /// The mount's source name (e.g. `shm`).
    #[serde(default)]
    pub source: String,
    pub options: Vec<String>,
}

/// The tmpfs options a bundle may give (flags and size, mode; not uid/gid,
/// which cells sets to VP root).
pub fn tmpfs_option_ok(o: &str) -> bool {
    matches!(
        o,
        "ro" | "rw" | "nosuid" | "nodev" | "noexec" | "relatime" | "noatime" | "strictatime"
    ) || o.starts_with("size=")
        || o.starts_with("mode=")
        || o.starts_with("nr_inodes=")
}

/// A namespace the VP joins instead of making its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciJoin {
    /// `network`, `ipc` or `uts`.
    pub kind: String,
    pub path: PathBuf,
}

/// The annotation CRI puts on a pod's sandbox and containers.
pub const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
pub const CRI_SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
pub const CRI_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";

impl OciSource {
    /// Is this a CRI pod's sandbox (its "pause" container)?
    pub fn is_sandbox(&self) -> bool {
        self.annotations.get(CRI_CONTAINER_TYPE).map(String::as_str) == Some("sandbox")
    }
}
