//! Real input sources: the host's evdev devices (/dev/input/event*),
//! grabbed exclusively (EVIOCGRAB) so that only the foreground VP sees them.
//!
//! [`Normalizer`] turns a device's raw events into [`SourceEvent`] frames
//! (multitouch protocol B, single-touch tablets and mice with a button, and
//! keys), scaling absolute positions to the panel. It is pure and unit-tested;
//! [`EvdevSource`] adds the fd.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::event::*;
use super::router::{ContactId, SourceEvent};
use mux_fb::Geometry;

/// _IOC(dir, 'E', nr, size).
fn eioc(dir: libc::c_ulong, nr: libc::c_ulong, size: usize) -> libc::c_ulong {
    (dir << 30) | ((size as libc::c_ulong) << 16) | (0x45 << 8) | nr
}
const IOC_READ: libc::c_ulong = 2;
const IOC_WRITE: libc::c_ulong = 1;

fn eviocgname(len: usize) -> libc::c_ulong {
    eioc(IOC_READ, 0x06, len)
}
fn eviocgbit(ev: u16, len: usize) -> libc::c_ulong {
    eioc(IOC_READ, 0x20 + ev as libc::c_ulong, len)
}
fn eviocgabs(abs: u16) -> libc::c_ulong {
    eioc(IOC_READ, 0x40 + abs as libc::c_ulong, 24)
}
fn eviocgrab() -> libc::c_ulong {
    eioc(IOC_WRITE, 0x90, 4)
}

/// What a device is, for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Multitouch protocol B (slots).
    MultiTouch,
    /// One pointer with a button or BTN_TOUCH (tablets, touchscreens of old).
    SingleTouch,
    Keys,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbsRange {
    pub min: i32,
    pub max: i32,
}

impl AbsRange {
    fn scale(&self, v: i32, size: u32) -> i32 {
        let span = (self.max - self.min).max(1) as i64;
        let v = (v.clamp(self.min, self.max) - self.min) as i64;
        (v * (size as i64 - 1) / span) as i32
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    id: i32,
    x: i32,
    y: i32,
    moved: bool,
    active: bool,
}

/// Raw evdev events of one device -> frames of source events.
#[derive(Debug)]
pub struct Normalizer {
    source: u32,
    class: Class,
    x: AbsRange,
    y: AbsRange,
    geometry: Geometry,
    slot: usize,
    slots: Vec<Slot>,
    pressed: bool,
    was_pressed: bool,
    keys: Vec<SourceEvent>,
    dropping: bool,
}

impl Normalizer {
    pub fn new(source: u32, class: Class, x: AbsRange, y: AbsRange, geometry: Geometry) -> Self {
        Self {
            source,
            class,
            x,
            y,
            geometry,
            slot: 0,
            slots: vec![
                Slot {
                    id: -1,
                    ..Default::default()
                };
                16
            ],
            pressed: false,
            was_pressed: false,
            keys: Vec::new(),
            dropping: false,
        }
    }

    /// Feed one raw event; returns a frame at SYN_REPORT.
    pub fn feed(&mut self, e: &InputEvent) -> Option<Vec<SourceEvent>> {
        if self.dropping {
            // After SYN_DROPPED, skip up to and including the next report.
            if e.type_ == EV_SYN && e.code == SYN_REPORT {
                self.dropping = false;
            }
            return None;
        }
        match (e.type_, e.code) {
            (EV_SYN, SYN_REPORT) => return Some(self.flush()),
            (EV_SYN, SYN_DROPPED) => {
                self.dropping = true;
                self.keys.clear();
            }
            (EV_ABS, ABS_MT_SLOT) if self.class == Class::MultiTouch => {
                self.slot = (e.value.max(0) as usize).min(self.slots.len() - 1);
            }
            (EV_ABS, ABS_MT_TRACKING_ID) if self.class == Class::MultiTouch => {
                self.slots[self.slot].id = e.value;
            }
            (EV_ABS, ABS_MT_POSITION_X) if self.class == Class::MultiTouch => {
                let s = &mut self.slots[self.slot];
                s.x = self.x.scale(e.value, self.geometry.width);
                s.moved = true;
            }
            (EV_ABS, ABS_MT_POSITION_Y) if self.class == Class::MultiTouch => {
                let s = &mut self.slots[self.slot];
                s.y = self.y.scale(e.value, self.geometry.height);
                s.moved = true;
            }
            (EV_ABS, ABS_X) if self.class == Class::SingleTouch => {
                self.slots[0].x = self.x.scale(e.value, self.geometry.width);
                self.slots[0].moved = true;
            }
            (EV_ABS, ABS_Y) if self.class == Class::SingleTouch => {
                self.slots[0].y = self.y.scale(e.value, self.geometry.height);
                self.slots[0].moved = true;
            }
            (EV_KEY, BTN_TOUCH) | (EV_KEY, BTN_LEFT) if self.class == Class::SingleTouch => {
                self.pressed = e.value != 0;
            }
            (EV_KEY, code) if self.class == Class::Keys && !(0x100..0x160).contains(&code) => {
                self.keys.push(SourceEvent::Key {
                    source: self.source,
                    code,
                    value: e.value,
                });
            }
            _ => {}
        }
        None
    }

    fn flush(&mut self) -> Vec<SourceEvent> {
        let mut out = std::mem::take(&mut self.keys);
        let source = self.source;
        match self.class {
            Class::MultiTouch => {
                for (i, s) in self.slots.iter_mut().enumerate() {
                    let contact = ContactId {
                        source,
                        slot: i as u32,
                    };
                    let now_active = s.id >= 0;
                    match (s.active, now_active) {
                        (false, true) => out.push(SourceEvent::TouchDown {
                            contact,
                            x: s.x,
                            y: s.y,
                        }),
                        (true, false) => out.push(SourceEvent::TouchUp { contact }),
                        (true, true) if s.moved => out.push(SourceEvent::TouchMove {
                            contact,
                            x: s.x,
                            y: s.y,
                        }),
                        _ => {}
                    }
                    s.active = now_active;
                    s.moved = false;
                }
            }
            Class::SingleTouch => {
                let contact = ContactId { source, slot: 0 };
                let s = &mut self.slots[0];
                match (self.was_pressed, self.pressed) {
                    (false, true) => out.push(SourceEvent::TouchDown {
                        contact,
                        x: s.x,
                        y: s.y,
                    }),
                    (true, false) => out.push(SourceEvent::TouchUp { contact }),
                    (true, true) if s.moved => out.push(SourceEvent::TouchMove {
                        contact,
                        x: s.x,
                        y: s.y,
                    }),
                    _ => {}
                }
                self.was_pressed = self.pressed;
                s.moved = false;
            }
            Class::Keys => {}
        }
        out
    }
}

fn test_bit(bits: &[u8], n: u16) -> bool {
    bits.get(n as usize / 8)
        .is_some_and(|b| b >> (n % 8) & 1 == 1)
}

/// A grabbed host input device.
pub struct EvdevSource {
    pub path: PathBuf,
    pub name: String,
    fd: OwnedFd,
    norm: Normalizer,
}

impl EvdevSource {
    /// Open and grab `path` if it is a touch device or a keyboard; Ok(None)
    /// for other devices and for uinput devices of VPs an older cellsd
    /// started (named "cells ..."; today's VP devices are not host devices).
    pub fn open(
        path: &Path,
        source: u32,
        geometry: Geometry,
        grab: bool,
    ) -> io::Result<Option<Self>> {
        let c = crate::sys::cstr(path)?;
        // SAFETY: open with a valid path; the fd is owned below.
        let raw = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut name = [0u8; 128];
        // SAFETY: EVIOCGNAME writes at most the given length.
        unsafe { libc::ioctl(fd.as_raw_fd(), eviocgname(name.len()), name.as_mut_ptr()) };
        let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
        let name = String::from_utf8_lossy(&name[..end]).into_owned();
        if name.starts_with("cells ") {
            return Ok(None);
        }
        let bits = |ev: u16| {
            let mut b = [0u8; 96];
            // SAFETY: EVIOCGBIT writes at most the given length.
            unsafe { libc::ioctl(fd.as_raw_fd(), eviocgbit(ev, b.len()), b.as_mut_ptr()) };
            b
        };
        let ev = bits(0);
        let abs = bits(EV_ABS);
        let key = bits(EV_KEY);
        let class = if test_bit(&ev, EV_ABS) && test_bit(&abs, ABS_MT_POSITION_X) {
            Class::MultiTouch
        } else if test_bit(&ev, EV_ABS)
            && test_bit(&abs, ABS_X)
            && (test_bit(&key, BTN_TOUCH) || test_bit(&key, BTN_LEFT))
        {
            Class::SingleTouch
        } else if test_bit(&ev, EV_KEY) && (1..0x100u16).any(|k| test_bit(&key, k)) {
            Class::Keys
        } else {
            return Ok(None);
        };
        let range = |code: u16| {
            let mut info = [0i32; 6];
            // SAFETY: EVIOCGABS writes a struct input_absinfo (6 ints).
            let r = unsafe { libc::ioctl(fd.as_raw_fd(), eviocgabs(code), info.as_mut_ptr()) };
            if r < 0 {
                AbsRange { min: 0, max: 0 }
            } else {
                AbsRange {
                    min: info[1],
                    max: info[2],
                }
            }
        };
        let (x, y) = match class {
            Class::MultiTouch => (range(ABS_MT_POSITION_X), range(ABS_MT_POSITION_Y)),
            _ => (range(ABS_X), range(ABS_Y)),
        };
        if grab {
            // SAFETY: EVIOCGRAB takes an int by value.
            if unsafe { libc::ioctl(fd.as_raw_fd(), eviocgrab(), 1 as libc::c_int) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(Some(Self {
            path: path.to_path_buf(),
            name,
            fd,
            norm: Normalizer::new(source, class, x, y, geometry),
        }))
    }

    pub fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    pub fn class(&self) -> Class {
        self.norm.class
    }

    /// Read what is there; Err when the device is gone.
    pub fn read_frames(&mut self) -> io::Result<Vec<Vec<SourceEvent>>> {
        let mut frames = Vec::new();
        let mut buf = [0u8; EVENT_SIZE * 64];
        loop {
            // SAFETY: reading into our own buffer.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    return Ok(frames);
                }
                return Err(e);
            }
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "device gone"));
            }
            for chunk in buf[..n as usize].chunks_exact(EVENT_SIZE) {
                if let Some(ev) = InputEvent::from_bytes(chunk) {
                    if let Some(f) = self.norm.feed(&ev) {
                        if !f.is_empty() {
                            frames.push(f);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: u16, c: u16, v: i32) -> InputEvent {
        InputEvent::new(t, c, v)
    }

    fn run(n: &mut Normalizer, events: &[InputEvent]) -> Vec<Vec<SourceEvent>> {
        events
            .iter()
            .filter_map(|e| n.feed(e))
            .filter(|f| !f.is_empty())
            .collect()
    }

    #[test]
    fn multitouch_protocol_b() {
        let g = Geometry::new(720, 1280);
        let r = AbsRange { min: 0, max: 32767 };
        let mut n = Normalizer::new(3, Class::MultiTouch, r, r, g);
        let frames = run(
            &mut n,
            &[
                ev(EV_ABS, ABS_MT_SLOT, 0),
                ev(EV_ABS, ABS_MT_TRACKING_ID, 45),
                ev(EV_ABS, ABS_MT_POSITION_X, 32767),
                ev(EV_ABS, ABS_MT_POSITION_Y, 0),
                ev(EV_SYN, SYN_REPORT, 0),
                ev(EV_ABS, ABS_MT_POSITION_Y, 32767),
                ev(EV_SYN, SYN_REPORT, 0),
                ev(EV_ABS, ABS_MT_TRACKING_ID, -1),
                ev(EV_SYN, SYN_REPORT, 0),
            ],
        );
        let c = ContactId { source: 3, slot: 0 };
        assert_eq!(
            frames,
            vec![
                vec![SourceEvent::TouchDown {
                    contact: c,
                    x: 719,
                    y: 0
                }],
                vec![SourceEvent::TouchMove {
                    contact: c,
                    x: 719,
                    y: 1279
                }],
                vec![SourceEvent::TouchUp { contact: c }],
            ]
        );
    }

    #[test]
    fn tablet_button_is_a_touch() {
        let g = Geometry::new(100, 100);
        let r = AbsRange { min: 0, max: 1000 };
        let mut n = Normalizer::new(1, Class::SingleTouch, r, r, g);
        let frames = run(
            &mut n,
            &[
                ev(EV_ABS, ABS_X, 500),
                ev(EV_ABS, ABS_Y, 500),
                ev(EV_SYN, SYN_REPORT, 0), // hover: nothing
                ev(EV_KEY, BTN_LEFT, 1),
                ev(EV_SYN, SYN_REPORT, 0),
                ev(EV_KEY, BTN_LEFT, 0),
                ev(EV_SYN, SYN_REPORT, 0),
            ],
        );
        let c = ContactId { source: 1, slot: 0 };
        assert_eq!(
            frames,
            vec![
                vec![SourceEvent::TouchDown {
                    contact: c,
                    x: 49,
                    y: 49
                }],
                vec![SourceEvent::TouchUp { contact: c }],
            ]
        );
    }

    #[test]
    fn keys_and_dropped_reports() {
        let g = Geometry::new(10, 10);
        let r = AbsRange { min: 0, max: 1 };
        let mut n = Normalizer::new(2, Class::Keys, r, r, g);
        let frames = run(
            &mut n,
            &[
                ev(EV_KEY, 30, 1),
                ev(EV_SYN, SYN_DROPPED, 0),
                ev(EV_KEY, 31, 1),
                ev(EV_SYN, SYN_REPORT, 0),
                ev(EV_KEY, 32, 1),
                ev(EV_MSC, 4, 7),
                ev(EV_SYN, SYN_REPORT, 0),
            ],
        );
        assert_eq!(
            frames,
            vec![vec![SourceEvent::Key {
                source: 2,
                code: 32,
                value: 1
            }]]
        );
    }

    #[test]
    fn ioctl_numbers() {
        assert_eq!(eviocgrab(), 0x4004_4590);
        assert_eq!(eviocgabs(0), 0x8018_4540);
        assert_eq!(eviocgname(256), 0x8100_4506);
    }
}
