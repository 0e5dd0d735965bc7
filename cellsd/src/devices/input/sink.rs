//! A VP's input devices: where cellsd writes the events of one VP device.
//!
//! Created by the VP's monitor before the VP starts and handed to cellsd as
//! open fds (the write ends of pipes into the monitor):
//! - `evdev` (the default, on every host): evdev devices served in user
//!   space by the monitor ([`super::evdev_fs`]), the VP's /dev/input: evdev's
//!   read, poll and ioctls, every reader gets every event, and nothing of
//!   them is a device of the host's input core (no host handler sees what a
//!   VP types or writes);
//! - `fifo` (`cellsd --input-backend fifo`): a named pipe per device carrying
//!   the same `struct input_event` stream; no ioctls, and two readers share
//!   one stream.
//!
//! (uinput devices, used before, were devices of the host's input core:
//! the host's sysrq, VT keyboard and logind saw VP input.)

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::event::*;
use super::router::DeviceKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A VP started by an older cellsd with uinput devices is adopted as
    /// one of these: its fds take the same raw events.
    #[serde(alias = "uinput")]
    Evdev,
    Fifo,
}

/// The devices every VP gets, in /dev/input order.
pub const VP_DEVICES: &[(DeviceKind, &str, &str)] = &[
    (DeviceKind::Touch, "event0", "cells touchscreen"),
    (DeviceKind::Keys, "event1", "cells keys"),
];

/// Writes events to one VP device.
pub struct Sink {
    fd: OwnedFd,
    backend: Backend,
    pub dropped: u64,
}

impl Sink {
    pub fn new(fd: OwnedFd, backend: Backend) -> Self {
        Self {
            fd,
            backend,
            dropped: 0,
        }
    }

    /// Write a frame. A FIFO that nobody drains drops the frame (a VP that
    /// does not read its input must not stall the others).
    pub fn write(&mut self, events: &[InputEvent]) -> io::Result<()> {
        let stamped: Vec<InputEvent> = match self.backend {
            // The monitor stamps them as its readers' clocks want.
            Backend::Evdev => events.to_vec(),
            Backend::Fifo => {
                let now = InputEvent::default().realtime();
                events
                    .iter()
                    .map(|e| InputEvent {
                        sec: now.sec,
                        usec: now.usec,
                        ..*e
                    })
                    .collect()
            }
        };
        let bytes = to_bytes(&stamped);
        // SAFETY: writing our buffer to an fd we own.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                self.dropped += 1;
                return Ok(());
            }
            return Err(e);
        }
        Ok(())
    }
}

impl InputEvent {
    /// Stamp with CLOCK_REALTIME, evdev's default clock.
    pub fn realtime(mut self) -> Self {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
        self.sec = ts.tv_sec;
        self.usec = ts.tv_nsec / 1000;
        self
    }
}

/// A device made for a VP by its monitor (FIFO backend).
pub struct Created {
    pub kind: DeviceKind,
    /// Where the VP sees it, e.g. /dev/input/event0.
    pub vp_path: String,
    /// The FIFO to bind there, in `dir`, the monitor's own tmpfs.
    pub node: PathBuf,
    pub fd: OwnedFd,
}

/// Make a VP's FIFO input devices (in the monitor, before the VP starts).
/// `dir` is the monitor's private device folder; `owner` VP root's host id.
pub fn create_fifos(dir: &Path, owner: Option<u32>) -> io::Result<Vec<Created>> {
    let mut out = Vec::new();
    for (kind, node_name, _) in VP_DEVICES {
        let private = dir.join(format!("input-{node_name}"));
        let (node, fd) = fifo(&private)?;
        if let Some(id) = owner {
            std::os::unix::fs::chown(&private, Some(id), Some(id))?;
        }
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o660))?;
        out.push(Created {
            kind: *kind,
            vp_path: format!("/dev/input/{node_name}"),
            node,
            fd,
        });
    }
    Ok(out)
}

fn fifo(path: &Path) -> io::Result<(PathBuf, OwnedFd)> {
    let c = crate::sys::cstr(path)?;
    // SAFETY: mkfifo with a valid path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o660) } != 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(e);
        }
    }
    // O_RDWR: never blocks, and keeps a writer so readers never see EOF.
    // SAFETY: open with a valid path; the fd is owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd.
    Ok((path.to_path_buf(), unsafe { OwnedFd::from_raw_fd(fd) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_devices_carry_input_events() {
        let dir = std::env::temp_dir().join(format!("sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let devs = create_fifos(&dir, None).unwrap();
        assert_eq!(devs.len(), 2);
        assert_eq!(devs[0].vp_path, "/dev/input/event0");
        let mut reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&devs[1].node)
            .unwrap();
        let fd = devs.into_iter().nth(1).unwrap().fd;
        let mut sink = Sink::new(fd, Backend::Fifo);
        sink.write(&[InputEvent::new(EV_KEY, 30, 1), InputEvent::syn()])
            .unwrap();
        let mut buf = [0u8; 48];
        std::io::Read::read_exact(&mut reader, &mut buf).unwrap();
        let e = InputEvent::from_bytes(&buf).unwrap();
        assert_eq!((e.type_, e.code, e.value), (EV_KEY, 30, 1));
        assert!(e.sec > 1_000_000_000, "stamped with the real-time clock");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    use std::os::unix::fs::OpenOptionsExt;
}
