//! The VP's input devices (`/dev/input/event*`) as the toolbox reads and
//! writes them: evdev's ioctls, and whole frames of `struct input_event`
//! written in one `write` (what the device hands its readers).
//!
//! In a VP these are the VP's own devices (served by its monitor): what a
//! tool writes reaches that VP's readers only, never the host's input core
//! nor another VP.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const EV_SYN: u16 = 0;
pub const EV_KEY: u16 = 1;
pub const EV_ABS: u16 = 3;
pub const SYN_REPORT: u16 = 0;
pub const ABS_X: u16 = 0;
pub const ABS_Y: u16 = 1;
pub const ABS_MT_SLOT: u16 = 0x2f;
pub const ABS_MT_POSITION_X: u16 = 0x35;
pub const ABS_MT_POSITION_Y: u16 = 0x36;
pub const ABS_MT_TRACKING_ID: u16 = 0x39;
pub const BTN_TOUCH: u16 = 0x14a;
pub const BTN_TOOL_FINGER: u16 = 0x145;
pub const KEY_HOMEPAGE: u16 = 172;
pub const EV_MAX: u16 = 0x1f;

const IOC_READ: u64 = 2;
const IOC_WRITE: u64 = 1;

fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((b'E' as u64) << 8) | nr
}

pub fn input_dir() -> PathBuf {
    std::env::var_os("CELLS_INPUT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/input"))
}

/// `event*` nodes, in number order.
pub fn nodes() -> Vec<PathBuf> {
    let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir(input_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix("event")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AbsInfo {
    pub value: i32,
    pub minimum: i32,
    pub maximum: i32,
    pub fuzz: i32,
    pub flat: i32,
    pub resolution: i32,
}

/// One open input device.
pub struct Device {
    pub path: PathBuf,
    pub file: File,
    /// A named pipe (`cellsd --input-backend fifo`): no ioctls.
    pub fifo: bool,
}

impl Device {
    pub fn open(path: &Path, write: bool) -> std::io::Result<Self> {
        let fifo = std::fs::metadata(path)
            .map(|m| m.file_type().is_fifo())
            .unwrap_or(false);
        let mut o = std::fs::OpenOptions::new();
        if write {
            o.write(true);
        } else {
            o.read(true);
        }
        if fifo {
            // A FIFO nobody reads would block the opener: a reader or
            // writer of our own keeps it open either way.
            o.read(true).write(true).custom_flags(libc::O_NONBLOCK);
        }
        let file = o.open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            fifo,
        })
    }

    fn ioctl_buf(&self, req: u64, buf: &mut [u8]) -> Option<usize> {
        if self.fifo {
            return None;
        }
        // SAFETY: an evdev read ioctl of buf.len() bytes into buf.
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), req as _, buf.as_mut_ptr()) };
        (r >= 0).then_some(r as usize)
    }

    pub fn version(&self) -> Option<i32> {
        let mut b = [0u8; 4];
        self.ioctl_buf(ioc(IOC_READ, 0x01, 4), &mut b)?;
        Some(i32::from_ne_bytes(b))
    }

    /// bustype, vendor, product, version.
    pub fn id(&self) -> Option<[u16; 4]> {
        let mut b = [0u8; 8];
        self.ioctl_buf(ioc(IOC_READ, 0x02, 8), &mut b)?;
        Some([0, 2, 4, 6].map(|i| u16::from_ne_bytes([b[i], b[i + 1]])))
    }

    fn string(&self, nr: u64) -> String {
        let mut b = [0u8; 80];
        match self.ioctl_buf(ioc(IOC_READ, nr, 79), &mut b) {
            Some(n) if n > 0 => {
                let s = &b[..n.min(79)];
                let end = s.iter().position(|c| *c == 0).unwrap_or(s.len());
                String::from_utf8_lossy(&s[..end]).into_owned()
            }
            _ => String::new(),
        }
    }

    pub fn name(&self) -> String {
        self.string(0x06)
    }
    pub fn phys(&self) -> String {
        self.string(0x07)
    }
    pub fn uniq(&self) -> String {
        self.string(0x08)
    }

    fn bits(&self, nr: u64) -> Vec<u16> {
        let mut b = vec![0u8; 128];
        let n = self
            .ioctl_buf(ioc(IOC_READ, nr, b.len()), &mut b)
            .unwrap_or(0);
        let mut out = Vec::new();
        for (i, byte) in b.iter().take(n).enumerate() {
            for k in 0..8 {
                if byte & (1 << k) != 0 {
                    out.push((i * 8 + k) as u16);
                }
            }
        }
        out
    }

    /// The codes of event type `ev` the device has (EVIOCGBIT).
    pub fn codes(&self, ev: u16) -> Vec<u16> {
        self.bits(0x20 + ev as u64)
    }
    /// Keys held down now (EVIOCGKEY).
    pub fn keys_down(&self) -> Vec<u16> {
        self.bits(0x18)
    }
    pub fn props(&self) -> Option<Vec<u16>> {
        if self.fifo {
            return None;
        }
        let mut b = vec![0u8; 4];
        let n = self.ioctl_buf(ioc(IOC_READ, 0x09, b.len()), &mut b)?;
        Some(
            (0..n * 8)
                .filter(|i| b[i / 8] & (1 << (i % 8)) != 0)
                .map(|i| i as u16)
                .collect(),
        )
    }

    pub fn abs(&self, code: u16) -> Option<AbsInfo> {
        let mut b = [0u8; 24];
        self.ioctl_buf(ioc(IOC_READ, 0x40 + code as u64, 24), &mut b)?;
        let v: Vec<i32> = b
            .chunks_exact(4)
            .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Some(AbsInfo {
            value: v[0],
            minimum: v[1],
            maximum: v[2],
            fuzz: v[3],
            flat: v[4],
            resolution: v[5],
        })
    }

    /// Ask for CLOCK_MONOTONIC timestamps (as Android's getevent does).
    pub fn set_monotonic(&self) {
        if self.fifo {
            return;
        }
        let clk: libc::c_int = libc::CLOCK_MONOTONIC;
        // SAFETY: EVIOCSCLOCKID reads one int.
        unsafe { libc::ioctl(self.file.as_raw_fd(), ioc(IOC_WRITE, 0xa0, 4) as _, &clk) };
    }

    /// Write one frame (events ending with SYN_REPORT) in one write.
    pub fn write_frame(&mut self, events: &[(u16, u16, i32)]) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity((events.len() + 1) * 24);
        for &(t, c, v) in events
            .iter()
            .chain(std::iter::once(&(EV_SYN, SYN_REPORT, 0)))
        {
            buf.extend_from_slice(&event_bytes(t, c, v));
        }
        self.file.write_all(&buf)
    }
}

/// A `struct input_event` (64-bit: 16 bytes of time, zero: the device
/// stamps it).
pub fn event_bytes(t: u16, c: u16, v: i32) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[16..18].copy_from_slice(&t.to_ne_bytes());
    b[18..20].copy_from_slice(&c.to_ne_bytes());
    b[20..24].copy_from_slice(&v.to_ne_bytes());
    b
}

/// The VP's touchscreen and keys. Found by what they can do; on FIFOs
/// (no ioctls) by cells' order: event0 the touchscreen, event1 the keys.
pub struct VpInput {
    pub touch: Option<Device>,
    pub keys: Option<Device>,
}

pub fn find() -> VpInput {
    let mut touch = None;
    let mut keys = None;
    for (i, p) in nodes().into_iter().enumerate() {
        let Ok(d) = Device::open(&p, true) else {
            continue;
        };
        if d.fifo {
            match i {
                0 if touch.is_none() => touch = Some(d),
                1 if keys.is_none() => keys = Some(d),
                _ => {}
            }
            continue;
        }
        if touch.is_none() && d.codes(EV_ABS).contains(&ABS_MT_POSITION_X) {
            touch = Some(d);
        } else if keys.is_none() && d.codes(EV_KEY).contains(&KEY_HOMEPAGE) {
            keys = Some(d);
        }
    }
    VpInput { touch, keys }
}
