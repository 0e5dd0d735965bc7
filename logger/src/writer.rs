//! What liblog sends to `/dev/socket/logdw`: one datagram per entry, an
//! `android_log_header_t` (log id u8, thread id u16, real time: seconds
//! u32 and nanoseconds u32, packed: 11 bytes) and the payload (for text:
//! priority, tag NUL, message NUL). The sender's pid and uid come with it
//! (SCM_CREDENTIALS).

/// Size of the header liblog puts before the payload.
pub const HEADER: usize = 11;

/// A datagram's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub lid: u8,
    pub tid: u16,
    pub sec: u32,
    pub nsec: u32,
    pub payload: &'a [u8],
}

/// Read a datagram (None: too short, or an empty payload).
pub fn parse(b: &[u8]) -> Option<Datagram<'_>> {
    if b.len() <= HEADER {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    Some(Datagram {
        lid: b[0],
        tid: u16::from_le_bytes([b[1], b[2]]),
        sec: u32_at(3),
        nsec: u32_at(7),
        payload: &b[HEADER..],
    })
}

/// A text datagram as liblog makes it.
pub fn text(lid: u8, tid: u16, sec: u32, nsec: u32, prio: u8, tag: &str, msg: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + 3 + tag.len() + msg.len());
    v.push(lid);
    v.extend_from_slice(&tid.to_le_bytes());
    v.extend_from_slice(&sec.to_le_bytes());
    v.extend_from_slice(&nsec.to_le_bytes());
    v.push(prio);
    v.extend_from_slice(tag.as_bytes());
    v.push(0);
    v.extend_from_slice(msg.as_bytes());
    v.push(0);
    v.truncate(HEADER + crate::MAX_PAYLOAD);
    v
}

/// Whether a text payload is well formed: a priority from verbose to
/// fatal, a tag, a message.
pub fn valid_text(payload: &[u8]) -> bool {
    matches!(payload.first(), Some(p) if (crate::VERBOSE..=crate::FATAL).contains(p))
        && payload[1..].contains(&0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_datagram_parses() {
        let d = text(0, 7, 100, 200, crate::INFO, "tag", "msg");
        let p = parse(&d).unwrap();
        assert_eq!((p.lid, p.tid, p.sec, p.nsec), (0, 7, 100, 200));
        assert!(valid_text(p.payload));
        assert_eq!(&p.payload[1..5], b"tag\0");
        assert!(parse(&d[..HEADER]).is_none());
        assert!(!valid_text(&[9, b'a', 0]));
        assert!(!valid_text(&[crate::INFO, b'a']));
    }
}
