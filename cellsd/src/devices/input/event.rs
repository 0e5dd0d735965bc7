//! `struct input_event` and the evdev codes cells uses.

pub const EV_SYN: u16 = 0x00;
pub const EV_KEY: u16 = 0x01;
pub const EV_ABS: u16 = 0x03;
pub const EV_MSC: u16 = 0x04;
pub const SYN_REPORT: u16 = 0;
pub const SYN_DROPPED: u16 = 3;

pub const BTN_LEFT: u16 = 0x110;
pub const BTN_TOUCH: u16 = 0x14a;
pub const BTN_TOOL_FINGER: u16 = 0x145;

pub const ABS_X: u16 = 0x00;
pub const ABS_Y: u16 = 0x01;
pub const ABS_MT_SLOT: u16 = 0x2f;
pub const ABS_MT_POSITION_X: u16 = 0x35;
pub const ABS_MT_POSITION_Y: u16 = 0x36;
pub const ABS_MT_TRACKING_ID: u16 = 0x39;

/// Touch slots of a VP's touchscreen.
pub const MAX_SLOTS: usize = 10;
/// Highest key code a VP keyboard reports.
pub const KEY_MAX_USED: u16 = 0x2ff;

/// `struct input_event` on 64-bit Linux: 24 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InputEvent {
    pub sec: i64,
    pub usec: i64,
    pub type_: u16,
    pub code: u16,
    pub value: i32,
}

pub const EVENT_SIZE: usize = std::mem::size_of::<InputEvent>();

impl InputEvent {
    pub fn new(type_: u16, code: u16, value: i32) -> Self {
        Self {
            sec: 0,
            usec: 0,
            type_,
            code,
            value,
        }
    }

    pub fn syn() -> Self {
        Self::new(EV_SYN, SYN_REPORT, 0)
    }

    /// Stamp with CLOCK_MONOTONIC, as evdev does by default.
    pub fn stamped(mut self) -> Self {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        self.sec = ts.tv_sec;
        self.usec = ts.tv_nsec / 1000;
        self
    }

    pub fn to_bytes(&self) -> [u8; EVENT_SIZE] {
        let mut b = [0u8; EVENT_SIZE];
        b[0..8].copy_from_slice(&self.sec.to_ne_bytes());
        b[8..16].copy_from_slice(&self.usec.to_ne_bytes());
        b[16..18].copy_from_slice(&self.type_.to_ne_bytes());
        b[18..20].copy_from_slice(&self.code.to_ne_bytes());
        b[20..24].copy_from_slice(&self.value.to_ne_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() < EVENT_SIZE {
            return None;
        }
        Some(Self {
            sec: i64::from_ne_bytes(b[0..8].try_into().ok()?),
            usec: i64::from_ne_bytes(b[8..16].try_into().ok()?),
            type_: u16::from_ne_bytes(b[16..18].try_into().ok()?),
            code: u16::from_ne_bytes(b[18..20].try_into().ok()?),
            value: i32::from_ne_bytes(b[20..24].try_into().ok()?),
        })
    }
}

/// Serialize a batch of events.
pub fn to_bytes(events: &[InputEvent]) -> Vec<u8> {
    let mut out = Vec::with_capacity(events.len() * EVENT_SIZE);
    for e in events {
        out.extend_from_slice(&e.to_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_the_kernels() {
        assert_eq!(EVENT_SIZE, 24);
        let e = InputEvent {
            sec: 1,
            usec: 2,
            type_: EV_KEY,
            code: 172,
            value: 1,
        };
        let b = e.to_bytes();
        assert_eq!(&b[16..18], &1u16.to_ne_bytes());
        assert_eq!(InputEvent::from_bytes(&b), Some(e));
        assert!(InputEvent::from_bytes(&b[..10]).is_none());
        assert!(InputEvent::syn().stamped().sec > 0);
    }
}
