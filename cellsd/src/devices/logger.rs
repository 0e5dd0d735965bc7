//! The logger device: each VP's own log, as Android's logd keeps it.
//!
//! The VP's monitor serves Android's logd sockets in the VP's
//! `/dev/socket`: `logdw` (datagrams from liblog or the template's `log`),
//! `logdr` (readers: `logcat`) and `logd` (control: `logcat -c`, `-g`).
//! The log is a ring buffer in the monitor ([`BUFFER_BYTES`]), so it lives
//! as long as the VP and survives a cellsd restart; a VP that logs faster
//! than [`RATE`] bytes a second has its writes wait in its socket (and its
//! writers' sends fail, as with logd). The host reads it through the
//! monitor's `<run>/vps/NAME/log.sock` (logdr's protocol; `cellctl logcat`,
//! D-Bus `LogOpen`). Pids and uids are the VP's own (the sender's
//! credentials, translated).
//!
//! Policies: `shared` (default) and `none` (no sockets: the VP's writers
//! find no logd).

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cells_log::request::Request;
use cells_log::{writer, Entry, BUFFERS};
use nix::sys::socket::{
    self, sockopt, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
};

use crate::devices::model::{DeviceSpec, Policy};
use crate::devices::registry::{
    io, Attach, Detach, Device, DeviceError, HostDevice, Made, VpCtx, VpDevice,
};

pub const NAME: &str = "logger";
/// The monitor's socket for cellsd, in the VP's run dir.
pub const HOST_SOCKET: &str = "log.sock";
/// The log's size (all buffers together), per VP; the oldest entries go.
pub const BUFFER_BYTES: usize = 256 << 10;
/// Bytes a second a VP may log (a burst of one buffer).
pub const RATE: f64 = (256 << 10) as f64;
/// Packets a reader may have waiting before it is dropped.
const READER_QUEUE: usize = 4096;

pub const DEVICE: Device = Device {
    spec: DeviceSpec {
        name: NAME,
        default: Policy::Shared,
        policies: &[Policy::Shared, Policy::None],
        about: "/dev/socket/logdw, logdr, logd: the VP's own log (Android's logd sockets; `log` and `logcat` in the VP, `cellctl logcat` on the host); none: no log",
    },
    vp_side,
};

/// The VP's /dev/socket with logd's sockets, and the host's log.sock.
fn vp_side(c: &VpCtx<'_>, m: &mut Made) -> Result<(), DeviceError> {
    if c.policy == Policy::None {
        return Ok(());
    }
    let dir = c.dir.join("socket");
    std::fs::create_dir_all(&dir).map_err(io("mkdir socket"))?;
    let own = |p: &Path, mode: u32| -> Result<(), DeviceError> {
        if let Some(id) = c.owner {
            std::os::unix::fs::chown(p, Some(id), Some(id)).map_err(io("chown a log socket"))?;
        }
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
            .map_err(io("chmod a log socket"))
    };
    own(&dir, 0o755)?;
    let dgram = bind(&dir.join("logdw"), SockType::Datagram)?;
    socket::setsockopt(&dgram, sockopt::PassCred, &true).map_err(io("SO_PASSCRED"))?;
    own(&dir.join("logdw"), 0o222)?;
    let logdr = listen(&dir.join("logdr"), SockType::SeqPacket)?;
    own(&dir.join("logdr"), 0o666)?;
    let logd = listen(&dir.join("logd"), SockType::Stream)?;
    own(&dir.join("logd"), 0o666)?;
    let host_path = c.run_dir.join(HOST_SOCKET);
    let host = listen(&host_path, SockType::SeqPacket)?;
    std::fs::set_permissions(&host_path, std::fs::Permissions::from_mode(0o600))
        .map_err(io("chmod log.sock"))?;
    m.dirs.push((dir, "/dev/socket".to_string()));
    m.live.push(Box::new(VpLogger {
        log: Log::new(BUFFER_BYTES),
        dgram,
        logdr,
        logd,
        host,
        host_path,
        readers: Vec::new(),
        controls: Vec::new(),
        owner: c.owner,
        pids: HashMap::new(),
        tokens: RATE,
        last: Instant::now(),
    }));
    Ok(())
}

fn bind(path: &Path, ty: SockType) -> Result<OwnedFd, DeviceError> {
    let _ = std::fs::remove_file(path);
    let fd = socket::socket(
        AddressFamily::Unix,
        ty,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(io("socket"))?;
    let addr = UnixAddr::new(path).map_err(io(format!("{}", path.display())))?;
    socket::bind(fd.as_raw_fd(), &addr).map_err(io(format!("bind {}", path.display())))?;
    Ok(fd)
}

fn listen(path: &Path, ty: SockType) -> Result<OwnedFd, DeviceError> {
    let fd = bind(path, ty)?;
    socket::listen(
        &fd,
        socket::Backlog::new(16).unwrap_or(socket::Backlog::MAXCONN),
    )
    .map_err(io(format!("listen {}", path.display())))?;
    Ok(fd)
}

/// The log: every buffer's entries in arrival order, bounded in bytes.
pub struct Log {
    entries: VecDeque<Entry>,
    bytes: usize,
    max: usize,
}

impl Log {
    pub fn new(max: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            bytes: 0,
            max,
        }
    }

    pub fn push(&mut self, e: Entry) {
        self.bytes += e.size();
        self.entries.push_back(e);
        while self.bytes > self.max {
            match self.entries.pop_front() {
                Some(old) => self.bytes -= old.size(),
                None => break,
            }
        }
    }

    /// Forget buffer `lid`'s entries (`logcat -c`).
    pub fn clear(&mut self, lid: u8) {
        self.entries.retain(|e| e.lid != lid);
        self.bytes = self.entries.iter().map(Entry::size).sum();
    }

    pub fn used(&self, lid: u8) -> usize {
        self.entries
            .iter()
            .filter(|e| e.lid == lid)
            .map(Entry::size)
            .sum()
    }

    /// What `r` asks for now: its buffers and pid, the last `tail`.
    pub fn select(&self, r: &Request) -> Vec<&Entry> {
        let all: Vec<&Entry> = self.entries.iter().filter(|e| r.wants(e)).collect();
        let skip = r.tail.map(|t| all.len().saturating_sub(t)).unwrap_or(0);
        all[skip..].to_vec()
    }
}

/// A reader on logdr (or log.sock): its request, once it sent one.
struct Reader {
    fd: OwnedFd,
    req: Option<Request>,
    queue: VecDeque<Vec<u8>>,
    /// Hung up before it asked for anything.
    gone: bool,
}

impl Reader {
    /// Send what waits; false if the reader is gone (or too slow).
    fn flush(&mut self) -> bool {
        while let Some(p) = self.queue.front() {
            match socket::send(self.fd.as_raw_fd(), p, MsgFlags::MSG_NOSIGNAL) {
                Ok(_) => {
                    self.queue.pop_front();
                }
                Err(nix::errno::Errno::EAGAIN) => return self.queue.len() <= READER_QUEUE,
                Err(_) => return false,
            }
        }
        true
    }
}

/// A control connection on logd.
struct Control {
    fd: OwnedFd,
    partial: Vec<u8>,
}

/// The monitor's side of a VP's log.
pub struct VpLogger {
    log: Log,
    dgram: OwnedFd,
    logdr: OwnedFd,
    logd: OwnedFd,
    host: OwnedFd,
    host_path: PathBuf,
    readers: Vec<Reader>,
    controls: Vec<Control>,
    /// VP root's host id (None: a privileged VP).
    owner: Option<u32>,
    /// Host pid -> the VP's pid (from /proc/PID/status NSpid).
    pids: HashMap<i32, i32>,
    /// The rate budget (bytes).
    tokens: f64,
    last: Instant,
}

fn accept(l: &OwnedFd) -> Option<OwnedFd> {
    let fd = socket::accept4(
        l.as_raw_fd(),
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .ok()?;
    // SAFETY: accept4 returned a new fd that we own from here.
    Some(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// A VP pid as its own pid namespace numbers it (the last NSpid field).
fn vp_pid(host_pid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{host_pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|v| v.split_whitespace().last())
        .and_then(|p| p.parse().ok())
}

impl VpLogger {
    fn refill(&mut self) {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * RATE)
            .min(BUFFER_BYTES as f64);
        self.last = now;
    }

    /// Read the datagrams waiting (as far as the budget goes).
    fn read_writers(&mut self) {
        let mut buf = vec![0u8; writer::HEADER + cells_log::MAX_PAYLOAD + 64];
        while self.tokens > 0.0 {
            let mut cmsg = nix::cmsg_space!(socket::UnixCredentials);
            let (n, creds) = {
                let mut iov = [std::io::IoSliceMut::new(&mut buf)];
                let msg = match socket::recvmsg::<()>(
                    self.dgram.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::MSG_DONTWAIT,
                ) {
                    Ok(m) => m,
                    Err(_) => break,
                };
                let creds = msg.cmsgs().ok().and_then(|mut c| {
                    c.find_map(|m| match m {
                        ControlMessageOwned::ScmCredentials(u) => Some((u.pid(), u.uid())),
                        _ => None,
                    })
                });
                (msg.bytes, creds)
            };
            self.tokens -= n as f64;
            let Some(d) = writer::parse(&buf[..n]) else {
                continue;
            };
            if BUFFERS.iter().all(|(_, id)| *id != d.lid) {
                continue;
            }
            if d.lid != cells_log::LOG_ID_EVENTS && !writer::valid_text(d.payload) {
                continue;
            }
            let (hpid, huid) = creds.unwrap_or((0, 0));
            if self.pids.len() > 4096 {
                self.pids.clear();
            }
            let pid = match self.pids.get(&hpid) {
                Some(p) => *p,
                // A writer that is gone already (a short `log`): its thread
                // id from the header, which is its pid if it had one thread.
                None => match vp_pid(hpid) {
                    Some(p) => {
                        self.pids.insert(hpid, p);
                        p
                    }
                    None => d.tid as i32,
                },
            };
            let uid = match self.owner {
                Some(base) => huid.wrapping_sub(base),
                None => huid,
            };
            let e = Entry {
                lid: d.lid,
                pid,
                tid: d.tid as u32,
                sec: d.sec,
                nsec: d.nsec,
                uid,
                payload: d.payload[..d.payload.len().min(cells_log::MAX_PAYLOAD)].to_vec(),
            };
            let packet = e.encode();
            for r in self.readers.iter_mut() {
                if r.req.as_ref().is_some_and(|q| !q.dump && q.wants(&e)) {
                    r.queue.push_back(packet.clone());
                }
            }
            self.log.push(e);
        }
    }

    /// A reader sent its request: what there is now, then (`stream`) more.
    fn read_requests(&mut self) {
        for r in self.readers.iter_mut().filter(|r| r.req.is_none()) {
            let mut b = [0u8; 256];
            match socket::recv(r.fd.as_raw_fd(), &mut b, MsgFlags::MSG_DONTWAIT) {
                Ok(n) if n > 0 => {
                    let q = Request::parse(&String::from_utf8_lossy(&b[..n]));
                    r.queue
                        .extend(self.log.select(&q).into_iter().map(Entry::encode));
                    r.req = Some(q);
                }
                Ok(_) => r.gone = true,
                Err(nix::errno::Errno::EAGAIN) => {}
                Err(_) => r.gone = true,
            }
        }
    }

    fn serve_controls(&mut self) {
        let log = &mut self.log;
        self.controls.retain_mut(|c| {
            let mut b = [0u8; 256];
            let n = match nix::unistd::read(&c.fd, &mut b) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(nix::errno::Errno::EAGAIN) => return true,
                Err(_) => return false,
            };
            c.partial.extend_from_slice(&b[..n]);
            if c.partial.len() > 1024 {
                return false;
            }
            // logd's commands end with a NUL (liblog sends the string's).
            while let Some(end) = c.partial.iter().position(|b| *b == 0 || *b == b'\n') {
                let line: Vec<u8> = c.partial.drain(..=end).collect();
                let cmd = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                let reply = control(log, cmd.trim());
                let _ = nix::unistd::write(&c.fd, format!("{reply}\0").as_bytes());
            }
            true
        });
    }
}

/// logd's answer to a control command.
pub fn control(log: &mut Log, cmd: &str) -> String {
    let mut w = cmd.split_whitespace();
    let verb = w.next().unwrap_or("");
    let lid: Option<u8> = w.next().and_then(|x| x.parse().ok());
    let known = |l: Option<u8>| l.filter(|l| BUFFERS.iter().any(|(_, id)| id == l));
    match (verb, known(lid)) {
        ("clear", Some(l)) => {
            log.clear(l);
            "success".into()
        }
        ("getLogSize", Some(_)) => log.max.to_string(),
        ("getLogSizeUsed", Some(l)) => log.used(l).to_string(),
        ("getLogSizeReadable", Some(l)) => log.used(l).to_string(),
        ("clear" | "getLogSize" | "getLogSizeUsed" | "getLogSizeReadable", None) => {
            "Invalid argument".into()
        }
        _ => "Permission denied".into(),
    }
}

impl VpDevice for VpLogger {
    fn name(&self) -> &'static str {
        NAME
    }

    /// The datagram socket (while there is budget), the listeners, every
    /// reader (its request, or its hang-up) and control connection.
    fn poll_fds(&self) -> Vec<RawFd> {
        let mut v = vec![
            if self.tokens > 0.0 {
                self.dgram.as_raw_fd()
            } else {
                -1
            },
            self.logdr.as_raw_fd(),
            self.logd.as_raw_fd(),
            self.host.as_raw_fd(),
        ];
        v.extend(self.readers.iter().map(|r| r.fd.as_raw_fd()));
        v.extend(self.controls.iter().map(|c| c.fd.as_raw_fd()));
        v
    }

    fn handle(&mut self, ready: &[bool]) {
        let r = |i: usize| ready.get(i).copied().unwrap_or(false);
        self.refill();
        let (nreaders, ncontrols) = (self.readers.len(), self.controls.len());
        if r(0) {
            self.read_writers();
        }
        for (i, l) in [(1, &self.logdr), (3, &self.host)] {
            if r(i) {
                while let Some(fd) = accept(l) {
                    self.readers.push(Reader {
                        fd,
                        req: None,
                        queue: VecDeque::new(),
                        gone: false,
                    });
                }
            }
        }
        if r(2) {
            while let Some(fd) = accept(&self.logd) {
                self.controls.push(Control {
                    fd,
                    partial: Vec::new(),
                });
            }
        }
        // A reader that is readable sent its request or hung up.
        let hung: Vec<bool> = (0..nreaders).map(|i| r(4 + i)).collect();
        self.read_requests();
        let mut i = 0;
        self.readers.retain_mut(|rd| {
            let was_ready = hung.get(i).copied().unwrap_or(false);
            i += 1;
            if rd.gone {
                return false;
            }
            if was_ready && rd.req.is_some() && !rd.req.as_ref().is_some_and(|q| q.dump) {
                // A streaming reader sends nothing more: readable means gone.
                let mut b = [0u8; 1];
                if matches!(
                    socket::recv(rd.fd.as_raw_fd(), &mut b, MsgFlags::MSG_DONTWAIT),
                    Ok(0) | Err(nix::errno::Errno::ECONNRESET)
                ) {
                    return false;
                }
            }
            if !rd.flush() {
                return false;
            }
            // A dump ends once sent.
            !(rd.req.as_ref().is_some_and(|q| q.dump) && rd.queue.is_empty())
        });
        if (0..ncontrols).any(|j| r(4 + nreaders + j)) || self.controls.len() > ncontrols {
            self.serve_controls();
        }
    }

    /// Until the budget allows reading again, or a slow reader's queue can
    /// be sent.
    fn timeout(&self) -> Option<Duration> {
        let refill =
            (self.tokens <= 0.0).then(|| Duration::from_secs_f64((-self.tokens + 4096.0) / RATE));
        let queued = self
            .readers
            .iter()
            .any(|r| !r.queue.is_empty())
            .then(|| Duration::from_millis(20));
        match (refill, queued) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn ended(&mut self) {
        let _ = std::fs::remove_file(&self.host_path);
    }
}

/// cellsd's side: nothing to take over (the log is the monitor's); the
/// host reads it through log.sock (`Manager::log_open`).
pub struct LoggerHost;

impl HostDevice for LoggerHost {
    fn name(&self) -> &'static str {
        NAME
    }
    fn attach(&self, _: &Attach<'_>) -> Result<(), DeviceError> {
        Ok(())
    }
    fn detach(&self, _: &Detach<'_>) {}
    /// Every VP logs in the background too.
    fn set_foreground(&self, _: Option<&str>) {}
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cells_log::{INFO, LOG_ID_MAIN, LOG_ID_SYSTEM};

    fn e(lid: u8, pid: i32, msg: &str) -> Entry {
        Entry::text(lid, pid, 1, 0, 0, 0, INFO, "t", msg)
    }

    #[test]
    fn the_log_is_bounded_and_selects_as_asked() {
        let mut log = Log::new(10 * e(0, 1, "x").size());
        for i in 0..15 {
            log.push(e(
                if i % 2 == 0 {
                    LOG_ID_MAIN
                } else {
                    LOG_ID_SYSTEM
                },
                i,
                "x",
            ));
        }
        assert_eq!(log.entries.len(), 10, "the oldest went");
        assert_eq!(log.entries[0].pid, 5);
        let r = Request::parse("dumpAndClose lids=0 tail=2");
        let got: Vec<i32> = log.select(&r).iter().map(|e| e.pid).collect();
        assert_eq!(got, [12, 14]);
        let r = Request::parse("stream lids=0,3 pid=7");
        assert_eq!(log.select(&r).len(), 1);
        assert_eq!(control(&mut log, "clear 0"), "success");
        assert_eq!(log.used(LOG_ID_MAIN), 0);
        assert!(log.used(LOG_ID_SYSTEM) > 0);
        assert_eq!(control(&mut log, "clear 99"), "Invalid argument");
        assert_eq!(control(&mut log, "getLogSize 0"), log.max.to_string());
        assert_eq!(control(&mut log, "setLogSize 0 1"), "Permission denied");
    }
}
