//! What the VP init runs: boot scripts and supervised services.
//!
//! - `/system/etc/init.d/*`: run once at boot, one after the other, in name order;
//! - `/system/etc/services.d/*`: started after boot and restarted when they
//!   exit, with a back-off so a crashing service cannot spin.
//!
//! Later parts of the project (the persona app, adbd) install themselves by
//! dropping an executable into one of these folders of a template.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const BOOT_DIR: &str = "/system/etc/init.d";
/// The exit status of a VP init that asks to be started again (a reboot):
/// 128 + SIGHUP, what a pid namespace's init shows when the kernel's
/// reboot(2) ends it. cellsd's monitor reads it.
pub const REBOOT_STATUS: i32 = 129;
pub const SERVICES_DIR: &str = "/system/etc/services.d";

/// Executable regular files in `dir`, sorted by name; hidden files skipped.
pub fn executables(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| {
            std::fs::metadata(e.path())
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// Restart delay of a service: doubles from `min` to `max` while the service
/// keeps dying young, and starts over once it has run for `stable`.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
    pub stable: Duration,
    current: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(
            Duration::from_millis(500),
            Duration::from_secs(30),
            Duration::from_secs(10),
        )
    }
}

impl Backoff {
    pub fn new(min: Duration, max: Duration, stable: Duration) -> Self {
        Self {
            min,
            max,
            stable,
            current: Duration::ZERO,
        }
    }

    /// The delay before the next start, given how long the last run lasted.
    pub fn next_delay(&mut self, ran_for: Duration) -> Duration {
        self.current = if ran_for >= self.stable || self.current.is_zero() {
            self.min
        } else {
            (self.current * 2).min(self.max)
        };
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_resets() {
        let mut b = Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(5),
            Duration::from_secs(10),
        );
        let quick = Duration::from_millis(10);
        let delays: Vec<u64> = (0..5).map(|_| b.next_delay(quick).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
        assert_eq!(b.next_delay(Duration::from_secs(60)).as_secs(), 1);
    }

    #[test]
    fn only_executables_in_name_order() {
        let d = std::env::temp_dir().join(format!("cells-svc-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        for (n, mode) in [
            ("20-b", 0o755),
            ("10-a", 0o755),
            ("30-data", 0o644),
            (".hidden", 0o755),
        ] {
            std::fs::write(d.join(n), "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(d.join(n), std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let names: Vec<String> = executables(&d)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["10-a", "20-b"]);
        assert!(executables(&d.join("missing")).is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
