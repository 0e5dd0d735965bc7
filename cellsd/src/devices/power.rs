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

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use serde::{Deserialize, Serialize};

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

/// One VP's power state (in its monitor).
#[derive(Default)]
pub struct PowerState {
    /// name -> expiry (None: until released).
    locks: BTreeMap<String, Option<Instant>>,
    fb_awake: bool,
    sleep_readers: Vec<ReplyData>,
    wake_readers: Vec<ReplyData>,
    /// Events for cellsd not yet sent.
    pub outbox: Vec<PowerEvent>,
}

impl PowerState {
    /// Drop expired locks; true if any went.
    pub fn expire(&mut self, now: Instant) -> bool {
        let before = self.locks.len();
        self.locks.retain(|_, exp| exp.is_none_or(|e| e > now));
        let changed = self.locks.len() != before;
        if changed {
            self.report();
        }
        changed
    }

    /// When the next lock expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.locks.values().flatten().min().copied()
    }

    pub fn locks(&self) -> Vec<String> {
        self.locks.keys().cloned().collect()
    }

    fn report(&mut self) {
        self.outbox.push(PowerEvent::Locks { locks: self.locks() });
    }

    pub fn lock(&mut self, name: String, timeout: Option<Duration>) {
        self.expire(Instant::now());
        let changed = !self.locks.contains_key(&name);
        self.locks.insert(name, timeout.map(|t| Instant::now() + t));
        if changed {
            self.report();
        }
    }

    /// Release one of this VP's locks; false if it holds none of that name.
    pub fn unlock(&mut self, name: &str) -> bool {
        let had = self.locks.remove(name).is_some();
        if had {
            self.report();
        }
        had
    }

    /// The framebuffer woke or went to sleep: answer the readers waiting for it.
    pub fn set_fb_awake(&mut self, awake: bool) {
        self.fb_awake = awake;
        let (ready, word) = if awake {
            (std::mem::take(&mut self.wake_readers), "awake\n")
        } else {
            (std::mem::take(&mut self.sleep_readers), "sleeping\n")
        };
        for r in ready {
            r.data(word.as_bytes());
        }
    }

    pub fn fb_awake(&self) -> bool {
        self.fb_awake
    }
}

const INO_ROOT: u64 = 1;
const FILES: &[(u64, &str, u16)] = &[
    (2, "wake_lock", 0o664),
    (3, "wake_unlock", 0o664),
    (4, "state", 0o664),
    (5, "wait_for_fb_sleep", 0o444),
    (6, "wait_for_fb_wake", 0o444),
];

/// The FUSE filesystem of one VP's /sys/power.
pub struct PowerFs {
    pub state: Arc<Mutex<PowerState>>,
    /// Owner of the files (VP root's host id).
    pub owner: u32,
    /// Written to whenever the outbox gets an event (wakes the monitor's loop).
    pub notify: Option<std::os::fd::OwnedFd>,
}

impl PowerFs {
    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, perm) = if ino == INO_ROOT {
            (FileType::Directory, 0o755)
        } else {
            let (_, _, perm) = FILES.iter().find(|(i, _, _)| *i == ino)?;
            (FileType::RegularFile, *perm)
        };
        let t = SystemTime::UNIX_EPOCH;
        Some(FileAttr {
            ino: INodeNo(ino),
            size: if kind == FileType::Directory { 0 } else { 4096 },
            blocks: 0,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.owner,
            gid: self.owner,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PowerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn poke(&self) {
        if let Some(fd) = &self.notify {
            let _ = nix::unistd::write(fd, b"p");
        }
    }
}

const TTL: Duration = Duration::from_secs(3600);

impl Filesystem for PowerFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = (parent.0 == INO_ROOT)
            .then(|| FILES.iter().find(|(_, n, _)| OsStr::new(n) == name))
            .flatten()
            .and_then(|(ino, _, _)| self.attr(*ino));
        match found {
            Some(a) => reply.entry(&TTL, &a, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // `echo x > file` truncates first: accept and ignore, as sysfs does.
        match self.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.attr(ino.0).is_none() {
            return reply.error(Errno::ENOENT);
        }
        // Every read and write reaches us (no page cache): these are not files.
        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        _size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut st = self.state();
        st.expire(Instant::now());
        let text = match ino.0 {
            2 => {
                let l = st.locks();
                if l.is_empty() {
                    String::new()
                } else {
                    format!("{}\n", l.join(" "))
                }
            }
            3 => String::new(),
            4 => "mem\n".to_string(),
            5 | 6 => {
                if offset > 0 {
                    return reply.data(&[]);
                }
                let awake = st.fb_awake();
                match (ino.0, awake) {
                    (5, false) => return reply.data(b"sleeping\n"),
                    (6, true) => return reply.data(b"awake\n"),
                    // Block until the framebuffer changes state.
                    (5, true) => st.sleep_readers.push(reply),
                    _ => st.wake_readers.push(reply),
                }
                drop(st);
                self.poke();
                return;
            }
            _ => return reply.error(Errno::ENOENT),
        };
        drop(st);
        self.poke();
        let bytes = text.as_bytes();
        let start = (offset as usize).min(bytes.len());
        reply.data(&bytes[start..]);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let result = {
            let mut st = self.state();
            match ino.0 {
                2 => parse_wake_lock(data).map(|(n, t)| st.lock(n, t)).map_err(|_| Errno::EINVAL),
                3 => match parse_wake_unlock(data) {
                    // Another VP's lock of the same name is in another table:
                    // it cannot be reached from here.
                    Ok(n) if st.unlock(&n) => Ok(()),
                    Ok(_) => Err(Errno::EINVAL),
                    Err(_) => Err(Errno::EINVAL),
                },
                4 => {
                    let v = String::from_utf8_lossy(data).trim().to_string();
                    if ["mem", "on", "standby", "freeze", "disk"].contains(&v.as_str()) {
                        st.outbox.push(PowerEvent::State { value: v });
                        Ok(())
                    } else {
                        Err(Errno::EINVAL)
                    }
                }
                _ => Err(Errno::EACCES),
            }
        };
        self.poke();
        match result {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lo: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        if ino.0 != INO_ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let mut entries: Vec<(u64, FileType, &str)> =
            vec![(INO_ROOT, FileType::Directory, "."), (INO_ROOT, FileType::Directory, "..")];
        entries.extend(FILES.iter().map(|(i, n, _)| (*i, FileType::RegularFile, *n)));
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
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
        assert_eq!(parse_wake_lock(&vec![b'a'; 200]), Err(LockError::TooLong));
        assert_eq!(parse_wake_lock(b"x soon"), Err(LockError::BadTimeout));
        assert_eq!(parse_wake_lock(b"x -5"), Err(LockError::BadTimeout));
        assert_eq!(parse_wake_lock(b"x 0"), Err(LockError::BadTimeout));
        assert_eq!(parse_wake_lock(b"x 1 2"), Err(LockError::BadTimeout));
        assert_eq!(parse_wake_lock(&[0xff, 0xfe]), Err(LockError::BadName));
        assert_eq!(parse_wake_unlock(b"music\n"), Ok("music".into()));
        assert_eq!(parse_wake_unlock(b"a b"), Err(LockError::BadName));
    }

    #[test]
    fn locks_expire_and_are_reported() {
        let mut st = PowerState::default();
        st.lock("a".into(), None);
        st.lock("b".into(), Some(Duration::from_millis(1)));
        assert_eq!(st.locks(), ["a", "b"]);
        assert!(st.next_expiry().is_some());
        assert!(st.expire(Instant::now() + Duration::from_millis(5)));
        assert_eq!(st.locks(), ["a"]);
        assert!(st.unlock("a"));
        assert!(!st.unlock("a"));
        let reports: Vec<_> = st
            .outbox
            .iter()
            .map(|e| match e {
                PowerEvent::Locks { locks } => locks.len(),
                _ => 99,
            })
            .collect();
        assert_eq!(reports, [1, 2, 1, 0]);
    }
}
