//! What the VPs' aggregated wakelocks do to the real device.
//!
//! - `android`: an Android kernel (`/sys/power/wake_lock` exists). Every VP
//!   lock is mirrored as the kernel wakelock `cells.<vp>.<name>`, so the
//!   kernel's own autosleep/suspend honours it; the foreground VP's `mem`
//!   request is written to `/sys/power/state` when no lock blocks it.
//! - `logind`: systemd-logind. While any VP holds a lock, cellsd holds a
//!   `sleep` inhibitor (mode `block`), so neither logind's idle policy nor
//!   `systemctl suspend` puts the machine to sleep. A VP's `mem` request is
//!   only recorded: on a desktop or a server, logind's policy decides.
//! - `none`: record only (`cellctl power` shows what would be blocked).

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// `--power-backend`: auto, none, android[:DIR], logind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendChoice {
    Auto,
    None,
    /// The Android power interface in DIR (default /sys/power).
    Android(PathBuf),
    Logind,
}

pub const ANDROID_SYSFS: &str = "/sys/power";

impl std::str::FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "none" => Ok(Self::None),
            "logind" => Ok(Self::Logind),
            "android" => Ok(Self::Android(ANDROID_SYSFS.into())),
            t => match t.strip_prefix("android:") {
                Some(dir) if Path::new(dir).is_absolute() => Ok(Self::Android(dir.into())),
                _ => Err(format!(
                    "unknown power backend '{s}': use auto, none, logind, android or android:/ABSOLUTE/DIR"
                )),
            },
        }
    }
}

/// The name a VP's lock has in the kernel (android backend).
pub fn kernel_lock_name(vp: &str, lock: &str) -> String {
    format!("cells.{vp}.{lock}")
}

pub enum SleepBackend {
    None,
    Android(AndroidSysfs),
    Logind(Logind),
}

impl SleepBackend {
    /// The backend for `choice`; `auto` picks android where the kernel has
    /// wakelocks, else logind where it answers on the system bus, else none.
    pub async fn open(choice: &BackendChoice) -> Result<Self, String> {
        match choice {
            BackendChoice::None => Ok(Self::None),
            BackendChoice::Android(dir) => AndroidSysfs::open(dir).map(Self::Android),
            BackendChoice::Logind => Logind::connect().await.map(Self::Logind),
            BackendChoice::Auto => {
                if let Ok(a) = AndroidSysfs::open(Path::new(ANDROID_SYSFS)) {
                    return Ok(Self::Android(a));
                }
                match Logind::connect().await {
                    Ok(l) => Ok(Self::Logind(l)),
                    Err(_) => Ok(Self::None),
                }
            }
        }
    }

    pub fn name(&self) -> String {
        match self {
            Self::None => "none".into(),
            Self::Android(a) => format!("android ({})", a.dir.display()),
            Self::Logind(_) => "logind".into(),
        }
    }

    /// Make the device hold exactly these (vp, lock) pairs.
    pub async fn apply(&mut self, locks: &BTreeSet<(String, String)>) -> Result<(), String> {
        match self {
            Self::None => Ok(()),
            Self::Android(a) => a.apply(locks),
            Self::Logind(l) => l.apply(locks).await,
        }
    }

    /// The foreground VP asked to suspend and no lock blocks it.
    pub fn suspend(&mut self) -> Result<(), String> {
        match self {
            Self::Android(a) => a.suspend(),
            Self::None | Self::Logind(_) => Ok(()),
        }
    }
}

/// The Android kernel's wakelock interface.
pub struct AndroidSysfs {
    dir: PathBuf,
    /// Kernel locks this cellsd (or a previous one) holds.
    mirrored: BTreeSet<String>,
}

impl AndroidSysfs {
    pub fn open(dir: &Path) -> Result<Self, String> {
        let wl = dir.join("wake_lock");
        // The kernel lists its active locks; ours from a previous cellsd
        // are adopted (the VPs that hold them still run).
        let text = std::fs::read_to_string(&wl).map_err(|e| {
            format!(
                "{}: {e} (the android power backend needs a kernel with CONFIG_PM_WAKELOCKS)",
                wl.display()
            )
        })?;
        let mirrored = text
            .split_whitespace()
            .filter(|n| n.starts_with("cells."))
            .map(String::from)
            .collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            mirrored,
        })
    }

    fn write(&self, file: &str, value: &str) -> Result<(), String> {
        let p = self.dir.join(file);
        std::fs::write(&p, value).map_err(|e| format!("write '{value}' to {}: {e}", p.display()))
    }

    fn apply(&mut self, locks: &BTreeSet<(String, String)>) -> Result<(), String> {
        let want: BTreeSet<String> = locks
            .iter()
            .map(|(vp, l)| kernel_lock_name(vp, l))
            .collect();
        let mut first_err = None;
        for name in want.difference(&self.mirrored).cloned().collect::<Vec<_>>() {
            match self.write("wake_lock", &name) {
                Ok(()) => {
                    self.mirrored.insert(name);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        for name in self.mirrored.difference(&want).cloned().collect::<Vec<_>>() {
            // EINVAL: the kernel no longer has it (e.g. released by hand).
            let _ = self.write("wake_unlock", &name);
            self.mirrored.remove(&name);
        }
        first_err.map_or(Ok(()), Err)
    }

    fn suspend(&mut self) -> Result<(), String> {
        self.write("state", "mem")
    }
}

/// A sleep inhibitor from systemd-logind.
pub struct Logind {
    conn: zbus::Connection,
    inhibitor: Option<OwnedFd>,
}

impl Logind {
    async fn connect() -> Result<Self, String> {
        let conn = zbus::Connection::system()
            .await
            .map_err(|e| format!("system bus: {e}"))?;
        let reply = conn
            .call_method(
                Some("org.freedesktop.DBus"),
                "/org/freedesktop/DBus",
                Some("org.freedesktop.DBus"),
                "NameHasOwner",
                &("org.freedesktop.login1",),
            )
            .await
            .map_err(|e| format!("system bus: {e}"))?;
        let has: bool = reply
            .body()
            .deserialize()
            .map_err(|e| format!("system bus: {e}"))?;
        if !has {
            return Err("org.freedesktop.login1 is not on the system bus".into());
        }
        Ok(Self {
            conn,
            inhibitor: None,
        })
    }

    async fn apply(&mut self, locks: &BTreeSet<(String, String)>) -> Result<(), String> {
        if locks.is_empty() {
            // Closing the fd releases the inhibitor.
            self.inhibitor = None;
            return Ok(());
        }
        if self.inhibitor.is_some() {
            return Ok(());
        }
        let vps: BTreeSet<&str> = locks.iter().map(|(vp, _)| vp.as_str()).collect();
        let why = format!(
            "wakelocks held by virtual phones: {}",
            vps.into_iter().collect::<Vec<_>>().join(", ")
        );
        let reply = self
            .conn
            .call_method(
                Some("org.freedesktop.login1"),
                "/org/freedesktop/login1",
                Some("org.freedesktop.login1.Manager"),
                "Inhibit",
                &("sleep", "cells", why.as_str(), "block"),
            )
            .await
            .map_err(|e| format!("logind Inhibit: {e}"))?;
        let fd: zbus::zvariant::OwnedFd = reply
            .body()
            .deserialize()
            .map_err(|e| format!("logind Inhibit reply: {e}"))?;
        self.inhibitor = Some(fd.into());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_choices_parse() {
        assert_eq!("auto".parse(), Ok(BackendChoice::Auto));
        assert_eq!(
            "android".parse(),
            Ok(BackendChoice::Android("/sys/power".into()))
        );
        assert_eq!(
            "android:/x/power".parse(),
            Ok(BackendChoice::Android("/x/power".into()))
        );
        assert!("android:rel".parse::<BackendChoice>().is_err());
        let e = "upower".parse::<BackendChoice>().unwrap_err();
        assert!(e.contains("logind"), "{e}");
    }
}
