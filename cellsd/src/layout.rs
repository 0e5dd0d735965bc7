//! Where everything lives on disk. See docs/ARCHITECTURE.md, "On-disk layout".
//!
//! State dir (persistent, default /var/lib/cells):
//!   vps/NAME/vp.json          the VP's definition (OCI spec + cells settings)
//!   vps/NAME/upper, work      the VP's writable overlay layer and overlay's work dir
//!   vps/NAME/data             the VP's /data
//!   vps/NAME/console.log      what the VP's console printed (rotated at 1 MiB)
//!   vps/NAME/adb/adb_keys     the adb keys the VP's adbd lets in (`cellctl adb --authorize`)
//!   templates/T/current       symlink to the build VPs start from
//!   templates/T/builds/N/     one immutable build: rootfs/ and build.json
//! Run dir (volatile, default /run/cells):
//!   cellsd.sock               the control socket (D-Bus, peer to peer)
//!   input.sock                raw input injection (SOCK_SEQPACKET of input_events)
//!   cellsd.pid, cellsd.lock
//!   foreground                name of the foreground VP
//!   vps/NAME/run.json         the running VP: init and monitor pids, start times
//!   vps/NAME/console.sock     the monitor's console socket
//!   vps/NAME/monitor.log      the monitor's own log
//!   vps/NAME/power.sock       the monitor's power link (wakelocks, fb sleep/wake)
//!   vps/NAME/lower, rootfs    mount points, used only inside the monitor's private mount namespace

use std::path::{Path, PathBuf};

/// File name of [`Layout::vp_reboot_marker`] (beside the run state).
pub const REBOOT_MARKER: &str = "reboot";

pub use cells_api::paths::{DEFAULT_RUN_DIR, DEFAULT_STATE_DIR, SOCKET_NAME};

#[derive(Debug, Clone)]
pub struct Layout {
    pub state: PathBuf,
    pub run: PathBuf,
}

impl Layout {
    pub fn new(state: impl Into<PathBuf>, run: impl Into<PathBuf>) -> Self {
        Self {
            state: state.into(),
            run: run.into(),
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.run.join(SOCKET_NAME)
    }
    /// Name of the foreground VP (survives a cellsd restart, not a reboot).
    pub fn foreground_file(&self) -> PathBuf {
        self.run.join("foreground")
    }
    /// The raw input injection socket (see devices::input::inject).
    pub fn input_socket(&self) -> PathBuf {
        self.run.join("input.sock")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.run.join("cellsd.pid")
    }

    pub fn vps_dir(&self) -> PathBuf {
        self.state.join("vps")
    }
    pub fn vp_dir(&self, vp: &str) -> PathBuf {
        self.vps_dir().join(vp)
    }
    pub fn vp_config(&self, vp: &str) -> PathBuf {
        self.vp_dir(vp).join(VP_CONFIG_FILE)
    }
    pub fn vp_upper(&self, vp: &str) -> PathBuf {
        self.vp_dir(vp).join("upper")
    }
    pub fn vp_work(&self, vp: &str) -> PathBuf {
        self.vp_dir(vp).join("work")
    }
    pub fn vp_data(&self, vp: &str) -> PathBuf {
        self.vp_dir(vp).join("data")
    }
    /// The VP's adb keys folder (root's; bound read-only as the VP's /dev/adb).
    pub fn vp_adb_dir(&self, vp: &str) -> PathBuf {
        self.vp_dir(vp).join("adb")
    }
    /// The keys its adbd lets in (adb_keys format), kept by cellsd.
    pub fn vp_adb_keys(&self, vp: &str) -> PathBuf {
        self.vp_adb_dir(vp).join("adb_keys")
    }
    pub fn vp_console_log(&self, vp: &str) -> PathBuf {
        self.vp_dir(vp).join("console.log")
    }

    pub fn vp_run_dir(&self, vp: &str) -> PathBuf {
        self.run.join("vps").join(vp)
    }
    pub fn vp_run_state(&self, vp: &str) -> PathBuf {
        self.vp_run_dir(vp).join("run.json")
    }
    /// Left by the VP's monitor when its init asked for a reboot (exit
    /// status [`cells_templates::services::REBOOT_STATUS`]): cellsd starts
    /// the VP again.
    pub fn vp_reboot_marker(&self, vp: &str) -> PathBuf {
        self.vp_run_dir(vp).join(REBOOT_MARKER)
    }
    pub fn vp_console_socket(&self, vp: &str) -> PathBuf {
        self.vp_run_dir(vp).join("console.sock")
    }
    pub fn vp_power_socket(&self, vp: &str) -> PathBuf {
        self.vp_run_dir(vp)
            .join(crate::devices::power::POWER_SOCKET)
    }
    pub fn vp_monitor_log(&self, vp: &str) -> PathBuf {
        self.vp_run_dir(vp).join("monitor.log")
    }

    pub fn templates_dir(&self) -> PathBuf {
        self.state.join("templates")
    }
    pub fn template_dir(&self, t: &str) -> PathBuf {
        self.templates_dir().join(t)
    }
    pub fn template_builds(&self, t: &str) -> PathBuf {
        self.template_dir(t).join("builds")
    }
    pub fn template_current(&self, t: &str) -> PathBuf {
        self.template_dir(t).join("current")
    }
    pub fn template_build_rootfs(&self, t: &str, build: &str) -> PathBuf {
        self.template_builds(t).join(build).join("rootfs")
    }
}

/// Write a file atomically: a temporary sibling, fsync, rename.
/// The VP's definition in `vps/NAME`.
pub const VP_CONFIG_FILE: &str = "vp.json";

/// Prefix of a VP folder being created (renamed to `vps/NAME` when whole).
pub const CREATING_PREFIX: &str = ".creating-";
/// Prefix a VP folder is renamed to before it is removed.
pub const DESTROYING_PREFIX: &str = ".destroying-";

pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces() {
        let dir = std::env::temp_dir().join(format!("cells-layout-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temp file left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn paths_are_under_their_roots() {
        let l = Layout::new("/s", "/r");
        assert_eq!(l.socket(), Path::new("/r/cellsd.sock"));
        assert_eq!(l.vp_upper("w"), Path::new("/s/vps/w/upper"));
        assert_eq!(
            l.template_build_rootfs("m", "3"),
            Path::new("/s/templates/m/builds/3/rootfs")
        );
    }
}
