//! The VP logger's protocol and formats, as Android's logd and logcat have
//! them, shared by cellsd (the monitor keeps each VP's log), cellctl
//! (`cellctl logcat`) and the template's `log` and `logcat`:
//!
//! - [`writer`]: the datagrams liblog sends to `/dev/socket/logdw`;
//! - [`Entry`]: a log entry, and its wire form on `/dev/socket/logdr` (a
//!   `logger_entry` v4 header and its payload in one packet);
//! - [`request`]: a reader's request on logdr (`stream` or `dumpAndClose`,
//!   `lids=`, `tail=`, `pid=`);
//! - [`format`]: logcat's output formats (`brief`, `time`, `threadtime`, ...);
//! - [`filter`]: logcat's filter specs (`TAG:W`, `*:S`).

pub mod client;
pub mod filter;
pub mod format;
pub mod logcat;
pub mod request;
pub mod writer;

/// Android's log buffers (log ids).
pub const LOG_ID_MAIN: u8 = 0;
pub const LOG_ID_RADIO: u8 = 1;
pub const LOG_ID_EVENTS: u8 = 2;
pub const LOG_ID_SYSTEM: u8 = 3;
pub const LOG_ID_CRASH: u8 = 4;
pub const LOG_ID_KERNEL: u8 = 7;
/// The buffers a VP's logger keeps.
pub const BUFFERS: &[(&str, u8)] = &[
    ("main", LOG_ID_MAIN),
    ("radio", LOG_ID_RADIO),
    ("events", LOG_ID_EVENTS),
    ("system", LOG_ID_SYSTEM),
    ("crash", LOG_ID_CRASH),
];

/// The buffer named `name`.
pub fn buffer_id(name: &str) -> Option<u8> {
    BUFFERS.iter().find(|(n, _)| *n == name).map(|(_, id)| *id)
}

/// The name of buffer `id`.
pub fn buffer_name(id: u8) -> &'static str {
    BUFFERS
        .iter()
        .find(|(_, i)| *i == id)
        .map(|(n, _)| *n)
        .unwrap_or("unknown")
}

/// Priorities (android_LogPriority).
pub const VERBOSE: u8 = 2;
pub const DEBUG: u8 = 3;
pub const INFO: u8 = 4;
pub const WARN: u8 = 5;
pub const ERROR: u8 = 6;
pub const FATAL: u8 = 7;
pub const SILENT: u8 = 8;

/// logcat's letter of a priority.
pub fn prio_char(p: u8) -> char {
    match p {
        VERBOSE => 'V',
        DEBUG => 'D',
        INFO => 'I',
        WARN => 'W',
        ERROR => 'E',
        FATAL => 'F',
        SILENT => 'S',
        _ => '?',
    }
}

/// The priority a letter (or name) stands for.
pub fn parse_prio(s: &str) -> Option<u8> {
    match s.to_ascii_uppercase().as_str() {
        "V" | "VERBOSE" | "2" => Some(VERBOSE),
        "D" | "DEBUG" | "3" => Some(DEBUG),
        "I" | "INFO" | "4" => Some(INFO),
        "W" | "WARN" | "5" => Some(WARN),
        "E" | "ERROR" | "6" => Some(ERROR),
        "F" | "FATAL" | "A" | "ASSERT" | "7" => Some(FATAL),
        "S" | "SILENT" | "8" => Some(SILENT),
        _ => None,
    }
}

/// The longest payload of one entry (Android's LOGGER_ENTRY_MAX_PAYLOAD).
pub const MAX_PAYLOAD: usize = 4068;
/// The size of the `logger_entry` v4 header.
pub const ENTRY_HEADER: usize = 28;

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub lid: u8,
    pub pid: i32,
    pub tid: u32,
    pub sec: u32,
    pub nsec: u32,
    pub uid: u32,
    /// The payload: for text buffers `prio`, the tag and the message, each
    /// string NUL-terminated; for `events`, the binary event.
    pub payload: Vec<u8>,
}

impl Entry {
    /// A text entry.
    #[allow(clippy::too_many_arguments)]
    pub fn text(
        lid: u8,
        pid: i32,
        tid: u32,
        sec: u32,
        nsec: u32,
        uid: u32,
        prio: u8,
        tag: &str,
        msg: &str,
    ) -> Self {
        let mut payload = Vec::with_capacity(3 + tag.len() + msg.len());
        payload.push(prio);
        payload.extend_from_slice(tag.as_bytes());
        payload.push(0);
        payload.extend_from_slice(msg.as_bytes());
        payload.push(0);
        payload.truncate(MAX_PAYLOAD);
        Self {
            lid,
            pid,
            tid,
            sec,
            nsec,
            uid,
            payload,
        }
    }

    /// Priority, tag and message of a text entry (an events entry: its tag
    /// number and its bytes in hex).
    pub fn parts(&self) -> (u8, String, String) {
        if self.lid == LOG_ID_EVENTS {
            let tag = self
                .payload
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .unwrap_or(0);
            let body: String = self
                .payload
                .get(4..)
                .unwrap_or(&[])
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            return (INFO, tag.to_string(), body);
        }
        let Some((&prio, rest)) = self.payload.split_first() else {
            return (VERBOSE, String::new(), String::new());
        };
        let (tag, msg) = match rest.iter().position(|b| *b == 0) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        let msg = msg.strip_suffix(&[0]).unwrap_or(msg);
        (
            prio,
            String::from_utf8_lossy(tag).into_owned(),
            String::from_utf8_lossy(msg).into_owned(),
        )
    }

    /// Bytes it takes in a buffer (header and payload).
    pub fn size(&self) -> usize {
        ENTRY_HEADER + self.payload.len()
    }

    /// Its wire form on logdr: the `logger_entry` v4 header, then the payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.size());
        v.extend_from_slice(&(self.payload.len() as u16).to_le_bytes());
        v.extend_from_slice(&(ENTRY_HEADER as u16).to_le_bytes());
        v.extend_from_slice(&self.pid.to_le_bytes());
        v.extend_from_slice(&self.tid.to_le_bytes());
        v.extend_from_slice(&self.sec.to_le_bytes());
        v.extend_from_slice(&self.nsec.to_le_bytes());
        v.extend_from_slice(&(self.lid as u32).to_le_bytes());
        v.extend_from_slice(&self.uid.to_le_bytes());
        v.extend_from_slice(&self.payload);
        v
    }

    /// An entry from its wire form (None: not one). Older headers (v1-v3,
    /// shorter) are read as far as they go.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let u16_at = |i: usize| b.get(i..i + 2).map(|x| u16::from_le_bytes([x[0], x[1]]));
        let u32_at = |i: usize| {
            b.get(i..i + 4)
                .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
        };
        let len = u16_at(0)? as usize;
        let hdr = u16_at(2)? as usize;
        if !(20..=64).contains(&hdr) || b.len() < hdr + len {
            return None;
        }
        Some(Self {
            pid: u32_at(4)? as i32,
            tid: u32_at(8)?,
            sec: u32_at(12)?,
            nsec: u32_at(16)?,
            lid: if hdr >= 24 { u32_at(20)? as u8 } else { 0 },
            uid: if hdr >= 28 { u32_at(24)? } else { 0 },
            payload: b[hdr..hdr + len].to_vec(),
        })
    }
}

/// Now, as seconds and nanoseconds of the real-time clock.
pub fn now() -> (u32, u32) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    (ts.tv_sec as u32, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_round_trips_and_splits_into_its_parts() {
        let e = Entry::text(LOG_ID_MAIN, 42, 43, 1000, 5, 10010, WARN, "Tag", "hello");
        let w = e.encode();
        assert_eq!(w.len(), e.size());
        assert_eq!(u16::from_le_bytes([w[2], w[3]]) as usize, ENTRY_HEADER);
        let back = Entry::decode(&w).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.parts(), (WARN, "Tag".into(), "hello".into()));
        assert!(Entry::decode(&w[..10]).is_none());
    }

    #[test]
    fn priorities_and_buffers_have_names() {
        assert_eq!(parse_prio("w"), Some(WARN));
        assert_eq!(prio_char(ERROR), 'E');
        assert_eq!(buffer_id("system"), Some(LOG_ID_SYSTEM));
        assert_eq!(buffer_name(LOG_ID_CRASH), "crash");
        assert_eq!(parse_prio("x"), None);
    }
}
