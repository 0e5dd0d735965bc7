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
