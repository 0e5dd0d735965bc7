//! The monitor's side of a VP's power device: the FUSE file system that is
//! the VP's /sys/power ([`PowerFs`]) and the link that reports it to cellsd
//! over `<run>/vps/NAME/power.sock` ([`VpPower`]).
//!
//! Threads: the file system is served by one fuser thread, started after
//! the VP's init is cloned (the monitor clones single-threaded); the link
//! runs in the monitor's poll loop. They share [`PowerState`] behind a
//! mutex, and the fuser thread pokes a pipe when it has news for cellsd.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::devices::fusefs::{Owner, Owners};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite,
    Request, TimeOrNow, WriteFlags,
};
use nix::fcntl::OFlag;

use super::{parse_wake_lock, parse_wake_unlock, PowerCommand, PowerEvent, STATE_VALUES};

/// Most locks one VP holds at once (the kernel's wakelock limit,
/// `WL_NUMBER_LIMIT`): a new one past it fails with ENOSPC, as there.
pub const MAX_LOCKS: usize = 100;
/// Most reads one VP may have blocked in `wait_for_fb_*` at once; past it a
/// read fails with EAGAIN (each one is a request the monitor holds).
pub const MAX_WAITERS: usize = 64;
/// Most `state` requests queued for a cellsd that does not read; older
/// ones are dropped first (each is only a request).
pub const MAX_QUEUED_STATES: usize = 16;

/// One VP's power state (in its monitor).
#[derive(Default)]
pub struct PowerState {
    /// name -> expiry (None: until released).
    locks: BTreeMap<String, Option<Instant>>,
    fb_awake: bool,
    /// The VP is being frozen: fb waits do not block.
    freezing: bool,
    /// Blocked reads of wait_for_fb_sleep / wait_for_fb_wake, with the
    /// reading thread (host tid).
    sleep_readers: Vec<(ReplyData, u32)>,
    wake_readers: Vec<(ReplyData, u32)>,
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
        self.outbox.push(PowerEvent::Locks {
            locks: self.locks(),
        });
    }

    /// Take (or refresh) a lock. A refresh replaces the timeout, as
    /// Android's wakelocks do. A new lock past [`MAX_LOCKS`] fails.
    pub fn lock(&mut self, name: String, timeout: Option<Duration>) -> Result<(), Errno> {
        self.expire(Instant::now());
        let changed = !self.locks.contains_key(&name);
        if changed && self.locks.len() >= MAX_LOCKS {
            return Err(Errno::ENOSPC);
        }
        self.locks.insert(name, timeout.map(|t| Instant::now() + t));
        if changed {
            self.report();
        }
        Ok(())
    }

    fn waiters(&self) -> usize {
        self.sleep_readers.len() + self.wake_readers.len()
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
        for (r, _) in ready {
            r.data(word.as_bytes());
        }
    }

    /// Answer EINTR to every blocked fb wait whose thread `dying` says is
    /// being killed (see [`crate::devices::fusefs::being_killed`]).
    pub fn answer_killed(&mut self, dying: impl Fn(u32) -> bool) {
        for list in [&mut self.sleep_readers, &mut self.wake_readers] {
            let (gone, keep): (Vec<_>, Vec<_>) = std::mem::take(list)
                .into_iter()
                .partition(|(_, t)| dying(*t));
            *list = keep;
            for (r, _) in gone {
                r.error(Errno::EINTR);
            }
        }
    }

    pub fn fb_awake(&self) -> bool {
        self.fb_awake
    }

    /// While the VP is being frozen, a task blocked in a FUSE request
    /// cannot stop (it waits for our answer, not a signal): answer the
    /// blocked fb waits with EINTR, as an interrupted sysfs wait would
    /// return, and do not block new ones. Android's readers retry on EINTR.
    pub fn set_freezing(&mut self, on: bool) {
        self.freezing = on;
        if on {
            for (r, _) in self
                .sleep_readers
                .drain(..)
                .chain(self.wake_readers.drain(..))
            {
                r.error(Errno::EINTR);
            }
        }
    }
}

const INO_ROOT: u64 = 1;
const INO_WAKE_LOCK: u64 = 2;
const INO_WAKE_UNLOCK: u64 = 3;
const INO_STATE: u64 = 4;
const INO_FB_SLEEP: u64 = 5;
const INO_FB_WAKE: u64 = 6;
/// The files, with Android's modes (the VP's init may chown/chmod them).
const FILES: &[(u64, &str, u16)] = &[
    (INO_WAKE_LOCK, "wake_lock", 0o664),
    (INO_WAKE_UNLOCK, "wake_unlock", 0o664),
    (INO_STATE, "state", 0o664),
    (INO_FB_SLEEP, "wait_for_fb_sleep", 0o444),
    (INO_FB_WAKE, "wait_for_fb_wake", 0o444),
];

/// The FUSE file system of one VP's /sys/power. The kernel checks
/// permissions (default_permissions) against the owners kept here.
pub struct PowerFs {
    state: Arc<Mutex<PowerState>>,
    owners: Owners,
    /// Written to whenever the outbox gets an event (wakes the monitor's loop).
    notify: OwnedFd,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

const TTL: Duration = Duration::from_secs(3600);

impl PowerFs {
    /// `owner`: VP root's host id (None: the VP has no user namespace).
    fn new(state: Arc<Mutex<PowerState>>, owner: Option<u32>, notify: OwnedFd) -> Self {
        let id = owner.unwrap_or(0);
        let mut owners = BTreeMap::new();
        owners.insert(
            INO_ROOT,
            Owner {
                uid: id,
                gid: id,
                mode: 0o755,
            },
        );
        for (ino, _, mode) in FILES {
            owners.insert(
                *ino,
                Owner {
                    uid: id,
                    gid: id,
                    mode: *mode,
                },
            );
        }
        Self {
            state,
            owners: Owners::new(owners),
            notify,
        }
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        // sysfs files say 4096; a reader reads until a short read.
        self.owners.attr(ino, 4096)
    }

    fn state(&self) -> MutexGuard<'_, PowerState> {
        lock(&self.state)
    }

    fn poke(&self) {
        let _ = nix::unistd::write(&self.notify, b"p");
    }

    fn write_file(&self, ino: u64, data: &[u8]) -> Result<(), Errno> {
        let mut st = self.state();
        match ino {
            INO_WAKE_LOCK => {
                let (name, timeout) = parse_wake_lock(data).map_err(|_| Errno::EINVAL)?;
                st.lock(name, timeout)
            }
            // Another VP's lock of the same name is in another VP's table,
            // out of reach from here: the unlock fails as for an unknown name.
            INO_WAKE_UNLOCK => match parse_wake_unlock(data) {
                Ok(n) if st.unlock(&n) => Ok(()),
                _ => Err(Errno::EINVAL),
            },
            INO_STATE => {
                let v = String::from_utf8_lossy(data).trim().to_string();
                if !STATE_VALUES.contains(&v.as_str()) {
                    return Err(Errno::EINVAL);
                }
                // Only a request: cellsd decides what it does.
                st.outbox.push(PowerEvent::State { value: v });
                Ok(())
            }
            _ => Err(Errno::EACCES),
        }
    }
}

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
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
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
        // The kernel has checked the caller's right to chown/chmod
        // (default_permissions). A truncate (`echo x > file`) is accepted
        // and ignored, as sysfs does.
        self.owners.set(ino.0, mode, uid, gid);
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
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        _size: u32,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // O_NONBLOCK: a read that would wait says EAGAIN (a tool asking
        // "is the screen on?" without waiting for it to change).
        let nonblock = flags.0 & libc::O_NONBLOCK != 0;
        let mut st = self.state();
        let expired = st.expire(Instant::now());
        let text = match ino.0 {
            INO_WAKE_LOCK => {
                let l = st.locks();
                if l.is_empty() {
                    String::new()
                } else {
                    format!("{}\n", l.join(" "))
                }
            }
            INO_WAKE_UNLOCK => String::new(),
            INO_STATE => "mem\n".to_string(),
            INO_FB_SLEEP | INO_FB_WAKE => {
                let mut blocked = false;
                if offset > 0 {
                    reply.data(&[]);
                } else {
                    match (ino.0, st.fb_awake()) {
                        (INO_FB_SLEEP, false) => reply.data(b"sleeping\n"),
                        (INO_FB_WAKE, true) => reply.data(b"awake\n"),
                        _ if nonblock => reply.error(Errno::EAGAIN),
                        _ if st.freezing => reply.error(Errno::EINTR),
                        _ if st.waiters() >= MAX_WAITERS => reply.error(Errno::EAGAIN),
                        // Block until the framebuffer changes state (the
                        // monitor is woken to watch the reader: killed?).
                        (INO_FB_SLEEP, true) => {
                            st.sleep_readers.push((reply, req.pid()));
                            blocked = true;
                        }
                        _ => {
                            st.wake_readers.push((reply, req.pid()));
                            blocked = true;
                        }
                    }
                }
                drop(st);
                if expired || blocked {
                    self.poke();
                }
                return;
            }
            _ => return reply.error(Errno::ENOENT),
        };
        drop(st);
        if expired {
            self.poke();
        }
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
        let result = self.write_file(ino.0, data);
        // Answer the writer first: telling cellsd is off its path.
        match result {
            Ok(()) => {
                reply.written(data.len() as u32);
                self.poke();
            }
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino.0 != INO_ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let mut entries: Vec<(u64, FileType, &str)> = vec![
            (INO_ROOT, FileType::Directory, "."),
            (INO_ROOT, FileType::Directory, ".."),
        ];
        entries.extend(
            FILES
                .iter()
                .map(|(i, n, _)| (*i, FileType::RegularFile, *n)),
        );
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PowerFsError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PowerFsError {
    let what = what.into();
    move |source| PowerFsError::Io { what, source }
}

/// The monitor's power device of one VP: the mounted file system and the
/// link to cellsd.
pub struct VpPower {
    state: Arc<Mutex<PowerState>>,
    /// Until [`VpPower::serve`]: the mounted session, INIT done.
    session: Option<fuser::Session<PowerFs>>,
    /// After: the thread serving it (lives as long as the monitor).
    _served: Option<fuser::BackgroundSession>,
    notify: OwnedFd,
    /// Without a file system (power=none): the write end of `notify`,
    /// kept so that `notify` never reads end-of-file.
    _notify_w: Option<OwnedFd>,
    listener: Option<UnixListener>,
    client: Option<Client>,
    /// When blocked fb waits were last looked at (being killed?).
    checked: Instant,
}

struct Client {
    reader: std::io::BufReader<UnixStream>,
    writer: UnixStream,
    /// A command line read in part (the socket is non-blocking).
    partial: String,
    /// Events not yet written (cellsd reads slower than the VP changes its
    /// locks): a lock snapshot replaces an older one, so this stays small.
    queued: Vec<PowerEvent>,
    /// The rest of a line written in part.
    pending: Vec<u8>,
}

/// Queue `ev` for cellsd: the newest lock set supersedes any older one not
/// yet sent; `state` requests are capped at [`MAX_QUEUED_STATES`].
fn enqueue(q: &mut Vec<PowerEvent>, ev: PowerEvent) {
    match ev {
        PowerEvent::Locks { .. } => q.retain(|e| !matches!(e, PowerEvent::Locks { .. })),
        PowerEvent::State { .. } => {
            let states = q
                .iter()
                .filter(|e| matches!(e, PowerEvent::State { .. }))
                .count();
            if states >= MAX_QUEUED_STATES {
                if let Some(i) = q.iter().position(|e| matches!(e, PowerEvent::State { .. })) {
                    q.remove(i);
                }
            }
        }
    }
    q.push(ev);
}

impl VpPower {
    /// Mount the VP's /sys/power file system at `dir` (a directory that is
    /// bound over the VP's /sys/power later). `owner`: VP root's host id.
    pub fn mount(dir: &Path, owner: Option<u32>) -> Result<Self, PowerFsError> {
        let dev = crate::devices::fusefs::mount(dir, "cells-power")
            .map_err(io_err("the power file system"))?;
        let (notify_r, notify_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|e| PowerFsError::Io {
                what: "pipe".into(),
                source: e.into(),
            })?;
        let state = Arc::new(Mutex::new(PowerState::default()));
        let fs = PowerFs::new(state.clone(), owner, notify_w);
        // The kernel queued INIT at mount: the handshake answers it here,
        // on the (single) monitor thread.
        let session =
            fuser::Session::from_fd(fs, dev, fuser::SessionACL::All, fuser::Config::default())
                .map_err(io_err("FUSE handshake of the power file system"))?;
        Ok(Self {
            state,
            session: Some(session),
            _served: None,
            notify: notify_r,
            _notify_w: None,
            listener: None,
            client: None,
            checked: Instant::now(),
        })
    }

    /// Only the link to cellsd, no file system (a VP with power=none: it
    /// has no /sys/power and never holds a lock, but cellsd still tells
    /// its monitor when it freezes the VP).
    pub fn link_only() -> Result<Self, PowerFsError> {
        let (notify_r, notify_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|e| PowerFsError::Io {
                what: "pipe".into(),
                source: e.into(),
            })?;
        Ok(Self {
            state: Arc::new(Mutex::new(PowerState::default())),
            session: None,
            _served: None,
            notify: notify_r,
            _notify_w: Some(notify_w),
            listener: None,
            client: None,
            checked: Instant::now(),
        })
    }

    /// Start serving the file system (one thread), and listen for cellsd on
    /// `socket`. Call once the VP's init is cloned: the monitor must clone
    /// while single-threaded.
    pub fn serve(&mut self, socket: &Path) -> Result<(), PowerFsError> {
        if let Some(s) = self.session.take() {
            self._served = Some(s.spawn().map_err(io_err("start the power file system"))?);
        }
        let _ = std::fs::remove_file(socket);
        let l = UnixListener::bind(socket).map_err(io_err(format!("bind {}", socket.display())))?;
        l.set_nonblocking(true)
            .map_err(io_err("power socket non-blocking"))?;
        let _ =
            std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o600));
        self.listener = Some(l);
        Ok(())
    }

    /// The fds the monitor polls for this device: listener, cellsd, notify.
    pub fn poll_fds(&self) -> [RawFd; 3] {
        [
            self.listener.as_ref().map(|l| l.as_raw_fd()).unwrap_or(-1),
            self.client
                .as_ref()
                .map(|c| c.writer.as_raw_fd())
                .unwrap_or(-1),
            self.notify.as_raw_fd(),
        ]
    }

    /// Whether cellsd is freezing the VP now.
    pub fn freezing(&self) -> bool {
        lock(&self.state).freezing
    }

    /// How long the monitor may sleep before a lock expires (or before it
    /// tries again to write what cellsd has not taken yet, or looks whether
    /// a blocked fb wait's thread is being killed).
    pub fn timeout(&self) -> Option<Duration> {
        let st = lock(&self.state);
        let expiry = st
            .next_expiry()
            .map(|t| t.saturating_duration_since(Instant::now()));
        let killed = (st.waiters() > 0).then(|| {
            crate::devices::fusefs::KILLED_READERS_PERIOD.saturating_sub(self.checked.elapsed())
        });
        drop(st);
        let expiry = match (expiry, killed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let retry = self
            .client
            .as_ref()
            .filter(|c| !c.pending.is_empty() || !c.queued.is_empty())
            .map(|_| Duration::from_millis(20));
        match (expiry, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Handle what poll found on [`VpPower::poll_fds`] (and expiries).
    pub fn handle(&mut self, ready: [bool; 3]) {
        if ready[0] {
            self.accept();
        }
        if ready[1] {
            self.read_commands();
        }
        if ready[2] {
            let mut b = [0u8; 64];
            while matches!(nix::unistd::read(&self.notify, &mut b), Ok(n) if n > 0) {}
        }
        lock(&self.state).expire(Instant::now());
        if self.checked.elapsed() >= crate::devices::fusefs::KILLED_READERS_PERIOD {
            self.checked = Instant::now();
            lock(&self.state).answer_killed(crate::devices::fusefs::being_killed);
        }
        self.flush();
    }

    fn accept(&mut self) {
        let Some(l) = &self.listener else { return };
        // The newest connection is cellsd (a restarted one replaces the old).
        while let Ok((s, _)) = l.accept() {
            let Ok(w) = s.try_clone() else { continue };
            // Non-blocking both ways (one file description): a cellsd that
            // stops reading must not stall the VP's power; what it has not
            // read waits in `queued`.
            let _ = s.set_nonblocking(true);
            self.client = Some(Client {
                reader: std::io::BufReader::new(s),
                writer: w,
                partial: String::new(),
                queued: Vec::new(),
                pending: Vec::new(),
            });
            // Tell it where things stand, then every change.
            let mut st = lock(&self.state);
            st.outbox.clear();
            st.report();
        }
    }

    fn read_commands(&mut self) {
        let Some(c) = &mut self.client else { return };
        let mut gone = false;
        loop {
            match c.reader.read_line(&mut c.partial) {
                Ok(0) => {
                    gone = true;
                    break;
                }
                Ok(_) if !c.partial.ends_with('\n') => {}
                Ok(_) => match serde_json::from_str::<PowerCommand>(
                    std::mem::take(&mut c.partial).trim(),
                ) {
                    Ok(PowerCommand::Fb { awake }) => lock(&self.state).set_fb_awake(awake),
                    Ok(PowerCommand::Freezing { on }) => lock(&self.state).set_freezing(on),
                    Err(e) => eprintln!("cells-monitor: bad power command: {e}"),
                },
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    gone = true;
                    break;
                }
            }
        }
        if gone {
            // cellsd went away (or restarts): the VP's locks stay, the next
            // cellsd gets them on connect.
            self.client = None;
        }
    }

    /// Write what cellsd has not had yet, as far as its socket takes it.
    /// A full socket keeps the link (and the rest queued); only a closed or
    /// broken one drops it.
    fn flush(&mut self) {
        let events = std::mem::take(&mut lock(&self.state).outbox);
        let Some(c) = &mut self.client else { return };
        for ev in events {
            enqueue(&mut c.queued, ev);
        }
        loop {
            if c.pending.is_empty() {
                if c.queued.is_empty() {
                    return;
                }
                let ev = c.queued.remove(0);
                let Ok(mut line) = serde_json::to_vec(&ev) else {
                    continue;
                };
                line.push(b'\n');
                c.pending = line;
            }
            match c.writer.write(&c.pending) {
                Ok(0) => break,
                Ok(n) => {
                    c.pending.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        self.client = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_expire_and_are_reported() {
        let mut st = PowerState::default();
        st.lock("a".into(), None).unwrap();
        st.lock("b".into(), Some(Duration::from_millis(1))).unwrap();
        assert_eq!(st.locks(), ["a", "b"]);
        assert!(st.next_expiry().is_some());
        assert!(st.expire(Instant::now() + Duration::from_millis(5)));
        assert_eq!(st.locks(), ["a"]);
        assert!(st.unlock("a"));
        assert!(!st.unlock("a"));
        // A refresh of a held lock is not a change.
        st.lock("c".into(), None).unwrap();
        st.lock("c".into(), Some(Duration::from_secs(5))).unwrap();
        let reports: Vec<_> = st
            .outbox
            .iter()
            .map(|e| match e {
                PowerEvent::Locks { locks } => locks.len(),
                _ => 99,
            })
            .collect();
        assert_eq!(reports, [1, 2, 1, 0, 1]);
    }

    #[test]
    fn locks_are_capped_like_the_kernels() {
        let mut st = PowerState::default();
        for i in 0..MAX_LOCKS {
            st.lock(format!("l{i}"), None).unwrap();
        }
        assert_eq!(st.lock("one-more".into(), None), Err(Errno::ENOSPC));
        // A refresh of a held lock still works at the cap; after a release a
        // new one fits again.
        st.lock("l0".into(), Some(Duration::from_secs(9))).unwrap();
        assert!(st.unlock("l1"));
        st.lock("one-more".into(), None).unwrap();
        assert_eq!(st.locks().len(), MAX_LOCKS);
    }

    /// Regression (issue 11): the link to cellsd dropped when its socket
    /// buffer filled. Now a full socket keeps the link, and cellsd gets the
    /// newest lock set once it reads again.
    #[test]
    fn a_full_link_is_kept_and_catches_up() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        // A small send buffer fills after a few lines.
        let small: libc::c_int = 4096;
        // SAFETY: setsockopt with a valid int on our own socket.
        unsafe {
            libc::setsockopt(
                ours.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&small as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let (notify, _w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).unwrap();
        let w = ours.try_clone().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut p = VpPower {
            state: Arc::new(Mutex::new(PowerState::default())),
            session: None,
            _served: None,
            notify,
            _notify_w: None,
            listener: None,
            checked: Instant::now(),
            client: Some(Client {
                reader: std::io::BufReader::new(ours),
                writer: w,
                partial: String::new(),
                queued: Vec::new(),
                pending: Vec::new(),
            }),
        };
        for round in 0..2000 {
            {
                let mut st = lock(&p.state);
                let name = format!("lock-with-a-long-name-{}", round % (MAX_LOCKS - 1));
                if st.unlock(&name) {
                    continue;
                }
                st.lock(name, None).unwrap();
                st.outbox.push(PowerEvent::State {
                    value: "mem".into(),
                });
            }
            p.flush();
            assert!(p.client.is_some(), "the link dropped at round {round}");
        }
        let queued = p.client.as_ref().map(|c| c.queued.len()).unwrap();
        assert!(queued <= MAX_QUEUED_STATES + 1, "queue grew to {queued}");
        assert!(p.timeout().is_some(), "a backlog needs a retry");
        // cellsd reads again: the last line it gets is the current lock set.
        let want = lock(&p.state).locks();
        let mut r = std::io::BufReader::new(theirs);
        r.get_ref().set_nonblocking(true).unwrap();
        let mut last = None;
        for _ in 0..10_000 {
            p.flush();
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(n) if n > 0 => {
                    if let Ok(PowerEvent::Locks { locks }) = serde_json::from_str(line.trim()) {
                        last = Some(locks);
                    }
                }
                _ => {
                    let c = p.client.as_ref().unwrap();
                    if c.pending.is_empty() && c.queued.is_empty() {
                        break;
                    }
                }
            }
        }
        assert_eq!(last, Some(want));
        assert!(p.client.is_some());
    }
}
