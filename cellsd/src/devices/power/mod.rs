//! Power: Android's /sys/power interface per VP, namespace-aware.
//!
//! Each VP's /sys/power is a FUSE filesystem (fuser) served by the VP's
//! monitor, so it lives exactly as long as the VP and survives a cellsd
//! restart with its locks (the VP's lock holders still run and still expect
//! their locks). The files:
//! - `wake_lock`: write `NAME [TIMEOUT_NS]` to take (or refresh) a lock; read
//!   lists the VP's own active locks;
//! - `wake_unlock`: write `NAME` to release one of the VP's own locks;
//! - `state`: a write (`mem`, `on`, ...) is the VP's request, passed to
//!   cellsd, which decides (only the foreground's counts);
//! - `wait_for_fb_sleep` / `wait_for_fb_wake`: a read blocks until the VP's
//!   framebuffer goes to sleep / wakes, then returns `sleeping` / `awake`.
//!   A background VP's framebuffer is asleep (early suspend, as in Cells):
//!   its `wait_for_fb_wake` blocks and `wait_for_fb_sleep` returns at once.
//!   Opened with O_NONBLOCK, a read that would block fails with EAGAIN
//!   instead (how the VP's `dumpsys power` asks whether its screen is on).
//!
//! Locks of one VP are invisible to others, and no VP can release
//! another's: each VP has its own filesystem and lock table. The monitor
//! reports the VP's lock set to cellsd over `<run>/vps/NAME/power.sock` and
//! cellsd tells it when the VP's framebuffer wakes or sleeps.

pub mod backend;
pub mod fs;
pub mod hub;

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the power file system appears in the VP.
pub const VP_POWER_DIR: &str = "/sys/power";
/// The monitor's power link, in the VP's run dir.
pub const POWER_SOCKET: &str = "power.sock";

/// What a VP may write to /sys/power/state.
pub const STATE_VALUES: &[&str] = &["mem", "on", "standby", "freeze", "disk"];

/// Longest lock name accepted (bytes).
pub const MAX_NAME: usize = 128;

/// Monitor -> cellsd.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PowerEvent {
    /// The VP's active locks (sent on connect and on every change).
    Locks { locks: Vec<String> },
    /// The VP wrote to /sys/power/state.
    State { value: String },
}

/// cellsd -> monitor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum PowerCommand {
    /// Whether the VP's framebuffer is awake (it is foreground, screen on).
    Fb { awake: bool },
    /// The VP is being frozen: blocked fb waits return EINTR (a task
    /// waiting on FUSE cannot freeze) and new ones do not block.
    Freezing { on: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockError {
    Empty,
    TooLong,
    BadName,
    BadTimeout,
}

/// Parse a write to `wake_lock`: `NAME [TIMEOUT_NS]`.
pub fn parse_wake_lock(data: &[u8]) -> Result<(String, Option<Duration>), LockError> {
    let text = std::str::from_utf8(data).map_err(|_| LockError::BadName)?;
    let mut it = text.split_ascii_whitespace();
    let name = it.next().ok_or(LockError::Empty)?;
    check_name(name)?;
    let timeout = match it.next() {
        None => None,
        Some(t) => {
            let ns: u64 = t.parse().map_err(|_| LockError::BadTimeout)?;
            if ns == 0 {
                return Err(LockError::BadTimeout);
            }
            Some(Duration::from_nanos(ns))
        }
    };
    if it.next().is_some() {
        return Err(LockError::BadTimeout);
    }
    Ok((name.to_string(), timeout))
}

/// Parse a write to `wake_unlock`: `NAME`.
pub fn parse_wake_unlock(data: &[u8]) -> Result<String, LockError> {
    let text = std::str::from_utf8(data).map_err(|_| LockError::BadName)?;
    let mut it = text.split_ascii_whitespace();
    let name = it.next().ok_or(LockError::Empty)?;
    check_name(name)?;
    if it.next().is_some() {
        return Err(LockError::BadName);
    }
    Ok(name.to_string())
}

fn check_name(name: &str) -> Result<(), LockError> {
    if name.len() > MAX_NAME {
        return Err(LockError::TooLong);
    }
    if !name.chars().all(|c| c.is_ascii_graphic()) {
        return Err(LockError::BadName);
    }
    Ok(())
}

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::Arc;

use crate::devices::model::{self, DeviceSpec, Policy};
use crate::devices::registry::{
    io, Attach, Detach, Device, DeviceError, HostDevice, Made, VpCtx, VpDevice,
};

pub const DEVICE: Device = Device {
    spec: DeviceSpec {
        name: model::POWER,
        default: Policy::Shared,
        policies: &[Policy::Shared, Policy::Foreground, Policy::None],
        about: "/sys/power: every VP's wakelocks keep the device awake (shared), or only the foreground's (foreground: a background VP's locks are taken and reported but hold nothing until it is the foreground); early suspend follows the foreground; none: no /sys/power (an empty read-only folder) and no locks",
    },
    vp_side,
};

/// The VP's /sys/power (a FUSE file system this monitor serves), or with
/// power=none an empty read-only folder there. Either way the monitor keeps
/// its link to cellsd (`power.sock`), which also says when the VP freezes.
fn vp_side(c: &VpCtx<'_>, m: &mut Made) -> Result<(), DeviceError> {
    let dir = c.dir.join("power");
    let power = if c.policy == Policy::None {
        std::fs::create_dir_all(&dir).map_err(io("mkdir power"))?;
        m.ro_dirs.push((dir, VP_POWER_DIR.to_string()));
        fs::VpPower::link_only()
    } else {
        let p = fs::VpPower::mount(&dir, c.owner);
        m.dirs.push((dir, VP_POWER_DIR.to_string()));
        p
    }
    .map_err(|e| DeviceError::Refused(format!("the VP's /sys/power: {e}")))?;
    m.live.push(Box::new(VpPowerDevice {
        power,
        socket: c.run_dir.join(POWER_SOCKET),
    }));
    Ok(())
}

/// The monitor's side: the file system and the link.
struct VpPowerDevice {
    power: fs::VpPower,
    socket: PathBuf,
}

impl VpDevice for VpPowerDevice {
    fn name(&self) -> &'static str {
        model::POWER
    }

    fn serve(
        &mut self,
        _init: libc::pid_t,
        _fds: &mut crate::devices::registry::DeviceFds,
    ) -> Result<(), DeviceError> {
        self.power
            .serve(&self.socket)
            .map_err(|e| DeviceError::Refused(e.to_string()))
    }

    fn poll_fds(&self) -> Vec<RawFd> {
        self.power.poll_fds().to_vec()
    }

    fn handle(&mut self, ready: &[bool]) {
        let r = |i: usize| ready.get(i).copied().unwrap_or(false);
        self.power.handle([r(0), r(1), r(2)]);
    }

    fn timeout(&self) -> Option<Duration> {
        self.power.timeout()
    }

    fn freezing(&self) -> Option<bool> {
        Some(self.power.freezing())
    }

    fn ended(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The power hub's side: the VP's link.
pub struct PowerHost(pub Arc<hub::PowerHub>);

impl PowerHost {
    /// Must be called inside the tokio runtime (the backend is a task).
    pub fn new(sleep: backend::SleepBackend) -> Self {
        Self(hub::PowerHub::new(sleep))
    }
}

impl HostDevice for PowerHost {
    fn name(&self) -> &'static str {
        model::POWER
    }

    fn attach(&self, a: &Attach<'_>) -> Result<(), DeviceError> {
        let foreground_only = a.policies.get(model::POWER) == Policy::Foreground;
        self.0
            .attach(a.vp, a.run_dir.join(POWER_SOCKET), foreground_only);
        Ok(())
    }

    fn detach(&self, d: &Detach<'_>) {
        self.0.detach(d.vp);
    }

    fn set_foreground(&self, fg: Option<&str>) {
        self.0.set_foreground(fg);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_lock_syntax() {
        assert_eq!(parse_wake_lock(b"music\n"), Ok(("music".into(), None)));
        assert_eq!(
            parse_wake_lock(b"gps 5000000000"),
            Ok(("gps".into(), Some(Duration::from_secs(5))))
        );
        assert_eq!(parse_wake_lock(b""), Err(LockError::Empty));
        assert_eq!(parse_wake_lock(b"\n"), Err(LockError::Empty));
        assert_eq!(parse_wake_lock(&[b'a'; 200]), Err(LockError::TooLong));
        assert_eq!(parse_wake_lock(b"x soon"), Err(LockError::BadTimeout));
        assert_eq!(parse_wake_lock(b"x -5"), Err(LockError::BadTimeout));
        assert_eq!(parse_wake_lock(b"x 0"), Err(LockError::BadTimeout));
        assert_eq!(parse_wake_lock(b"x 1 2"), Err(LockError::BadTimeout));
        assert_eq!(parse_wake_lock(&[0xff, 0xfe]), Err(LockError::BadName));
        assert_eq!(parse_wake_unlock(b"music\n"), Ok("music".into()));
        assert_eq!(parse_wake_unlock(b"a b"), Err(LockError::BadName));
    }
}
