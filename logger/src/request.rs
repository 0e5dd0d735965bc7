//! A reader's request on `/dev/socket/logdr` (as logd reads it): one
//! packet of words, `dumpAndClose` (send what there is, then close) or
//! `stream` (then every new entry), `lids=0,3` (the buffers), `tail=N` (only
//! the last N), `pid=P` (only that process).

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Send what there is and close (else: keep streaming).
    pub dump: bool,
    pub lids: Vec<u8>,
    pub tail: Option<usize>,
    pub pid: Option<i32>,
}

impl Default for Request {
    fn default() -> Self {
        Self {
            dump: false,
            lids: crate::BUFFERS
                .iter()
                .map(|(_, id)| *id)
                .filter(|id| *id != crate::LOG_ID_EVENTS)
                .collect(),
            tail: None,
            pid: None,
        }
    }
}

impl Request {
    pub fn parse(s: &str) -> Self {
        let mut r = Request::default();
        for w in s.split_whitespace() {
            if w == "dumpAndClose" {
                r.dump = true;
            } else if let Some(v) = w.strip_prefix("lids=") {
                r.lids = v.split(',').filter_map(|x| x.parse().ok()).collect();
            } else if let Some(v) = w.strip_prefix("tail=") {
                r.tail = v.parse().ok().filter(|n| *n > 0);
            } else if let Some(v) = w.strip_prefix("pid=") {
                r.pid = v.parse().ok().filter(|n| *n > 0);
            }
        }
        r
    }

    pub fn encode(&self) -> String {
        let mut s = String::from(if self.dump { "dumpAndClose" } else { "stream" });
        let lids: Vec<String> = self.lids.iter().map(|l| l.to_string()).collect();
        s.push_str(&format!(" lids={}", lids.join(",")));
        if let Some(t) = self.tail {
            s.push_str(&format!(" tail={t}"));
        }
        if let Some(p) = self.pid {
            s.push_str(&format!(" pid={p}"));
        }
        s
    }

    /// Whether `e` is wanted (buffer and pid; tail is the sender's).
    pub fn wants(&self, e: &crate::Entry) -> bool {
        self.lids.contains(&e.lid) && self.pid.is_none_or(|p| p == e.pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let r = Request::parse("dumpAndClose lids=0,3 tail=10 pid=42");
        assert!(r.dump);
        assert_eq!(r.lids, [0, 3]);
        assert_eq!((r.tail, r.pid), (Some(10), Some(42)));
        assert_eq!(Request::parse(&r.encode()), r);
        let s = Request::parse("stream lids=0");
        assert!(!s.dump);
        assert_eq!(Request::parse("stream").lids, [0, 1, 3, 4]);
    }
}
