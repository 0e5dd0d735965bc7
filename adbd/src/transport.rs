//! One host connection: the CNXN handshake, then streams multiplexed over
//! OPEN / OKAY / WRTE / CLSE.
//!
//! Each stream runs its service on its own thread and sees a [`Stream`]:
//! `send` blocks until the host acknowledged the previous WRTE (adb's flow
//! control: one write in flight per stream and direction) and `recv`
//! acknowledges what it takes, so a slow service slows the host down instead
//! of queueing without bound.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::protocol::*;

/// What the daemon says about itself in CNXN.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub name: String,
    pub model: String,
    pub device: String,
}

/// The features this daemon implements (and so advertises).
pub const FEATURES: [&str; 4] = ["shell_v2", "fixed_push_mkdir", "stat_v2", "ls_v2"];

#[derive(Default)]
struct StreamState {
    inbox: VecDeque<Vec<u8>>,
    can_send: bool,
    closed: bool,
}

struct StreamShared {
    local: u32,
    /// The host's id; 0 until the host accepts a stream the device opened.
    remote: AtomicU32,
    state: Mutex<StreamState>,
    cv: Condvar,
}

impl StreamShared {
    fn remote(&self) -> u32 {
        self.remote.load(Ordering::Relaxed)
    }
}

pub struct Conn {
    writer: Mutex<Box<dyn Write + Send>>,
    /// The peer predates A_VERSION and checks payload checksums.
    checksums: std::sync::atomic::AtomicBool,
    max_payload: AtomicU32,
    /// The protocol version agreed in CNXN.
    version: AtomicU32,
    streams: Mutex<HashMap<u32, Arc<StreamShared>>>,
    next_id: AtomicU32,
    /// The host connection has ended (reverse listeners watch this).
    ended: std::sync::atomic::AtomicBool,
    /// Unique in this daemon (names the connection in `reverse:list-forward`).
    serial: u64,
}

static NEXT_CONN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A service's handle on its host connection: to open streams towards the
/// host (`reverse:`), and to learn when the connection is gone.
#[derive(Clone)]
pub struct Connection(Arc<Conn>);

impl Connection {
    /// Open a stream from the device's side (A_OPEN with `service`, e.g.
    /// `tcp:8080` for a reverse forward) and wait for the host to accept
    /// it. The host refuses (CLSE) what it did not ask to be forwarded.
    pub fn open(&self, service: &str) -> io::Result<Stream> {
        let conn = &self.0;
        if self.is_ended() {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the host is gone",
            ));
        }
        let local = conn.next_id.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(StreamShared {
            local,
            remote: AtomicU32::new(0),
            state: Mutex::new(StreamState::default()),
            cv: Condvar::new(),
        });
        conn.streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(local, shared.clone());
        let mut name = service.as_bytes().to_vec();
        name.push(0);
        let stream = Stream {
            conn: conn.clone(),
            shared: shared.clone(),
            send_lock: Mutex::new(()),
        };
        conn.send(A_OPEN, local, 0, &name)?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        while shared.remote() == 0 && !st.closed {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                drop(st);
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the host did not answer OPEN {service}"),
                ));
            }
            st = shared
                .cv
                .wait_timeout(st, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        // Accepted (the host gave its id) even if already closed again: a
        // peer that wrote and hung up at once left its data in the inbox.
        if shared.remote() == 0 {
            drop(st);
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("the host refused {service}"),
            ));
        }
        drop(st);
        Ok(stream)
    }

    pub fn is_ended(&self) -> bool {
        self.0.ended.load(Ordering::Relaxed)
    }

    pub fn serial(&self) -> u64 {
        self.0.serial
    }
}

impl Conn {
    fn send_msg(&self, m: &Message) -> io::Result<()> {
        self.send(m.command, m.arg0, m.arg1, &m.data)
    }

    fn send(&self, command: u32, arg0: u32, arg1: u32, data: &[u8]) -> io::Result<()> {
        let sum = self.checksums.load(Ordering::Relaxed);
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        write_message(&mut *w, command, arg0, arg1, data, sum)
    }

    fn close_all(&self) {
        let streams: Vec<_> = self
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, s)| s)
            .collect();
        for s in streams {
            let mut st = s.state.lock().unwrap_or_else(|p| p.into_inner());
            st.closed = true;
            s.cv.notify_all();
        }
    }
}

/// A service's end of one stream.
pub struct Stream {
    conn: Arc<Conn>,
    shared: Arc<StreamShared>,
    send_lock: Mutex<()>,
}

impl Stream {
    /// The host connection this stream belongs to.
    pub fn connection(&self) -> Connection {
        Connection(self.conn.clone())
    }

    pub fn max_payload(&self) -> usize {
        self.conn.max_payload.load(Ordering::Relaxed) as usize
    }

    /// Next chunk from the host; None once the stream is closed.
    pub fn recv(&self) -> Option<Vec<u8>> {
        let s = &self.shared;
        let mut st = s.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(d) = st.inbox.pop_front() {
                let closed = st.closed;
                drop(st);
                if !closed {
                    let _ =
                        self.conn
                            .send_msg(&Message::new(A_OKAY, s.local, s.remote(), Vec::new()));
                }
                return Some(d);
            }
            if st.closed {
                return None;
            }
            st = s.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Send bytes to the host, in WRTEs of at most the negotiated payload.
    pub fn send(&self, mut data: &[u8]) -> io::Result<()> {
        let _one_writer = self.send_lock.lock().unwrap_or_else(|p| p.into_inner());
        let max = self.max_payload().max(1);
        let s = &self.shared;
        while !data.is_empty() {
            let n = data.len().min(max);
            {
                let mut st = s.state.lock().unwrap_or_else(|p| p.into_inner());
                while !st.can_send && !st.closed {
                    st = s.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                if st.closed {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the host closed the stream",
                    ));
                }
                st.can_send = false;
            }
            self.conn.send(A_WRTE, s.local, s.remote(), &data[..n])?;
            data = &data[n..];
        }
        Ok(())
    }

    pub fn is_closed(&self) -> bool {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .closed
    }

    /// Close from the device's side (the service is done).
    pub fn close(&self) {
        let s = &self.shared;
        let was_closed = {
            let mut st = s.state.lock().unwrap_or_else(|p| p.into_inner());
            let was = st.closed;
            st.closed = true;
            s.cv.notify_all();
            was
        };
        self.conn
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&s.local);
        if !was_closed {
            let _ = self
                .conn
                .send_msg(&Message::new(A_CLSE, s.local, s.remote(), Vec::new()));
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.close();
    }
}

/// A byte-stream view of a [`Stream`] (for sync: requests may span WRTEs
/// and replies are batched up to the payload size).
pub struct StreamIo<'a> {
    stream: &'a Stream,
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
}

impl<'a> StreamIo<'a> {
    pub fn new(stream: &'a Stream) -> Self {
        StreamIo {
            stream,
            rbuf: Vec::new(),
            rpos: 0,
            wbuf: Vec::new(),
        }
    }
}

impl Read for StreamIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.rpos == self.rbuf.len() {
            self.flush()?;
            match self.stream.recv() {
                Some(d) => {
                    self.rbuf = d;
                    self.rpos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.rbuf.len() - self.rpos);
        buf[..n].copy_from_slice(&self.rbuf[self.rpos..self.rpos + n]);
        self.rpos += n;
        Ok(n)
    }
}

impl Write for StreamIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.wbuf.extend_from_slice(buf);
        if self.wbuf.len() >= self.stream.max_payload() {
            self.flush()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            let data = std::mem::take(&mut self.wbuf);
            self.stream.send(&data)?;
        }
        Ok(())
    }
}

/// Looks a service name up: the function that runs it on its stream (on
/// the stream's own thread), or None to refuse the OPEN.
pub type Services = Arc<dyn Fn(&str) -> Option<Box<dyn FnOnce(Stream) + Send>> + Send + Sync>;

/// Who may connect: the authorized keys (None: anyone, for tests of the
/// transport itself), and what to do once a host is authenticated (the
/// daemon lifts its deadline for authentication).
pub struct Auth<'a> {
    pub keys: Option<crate::auth::Keys>,
    pub connected: &'a (dyn Fn() + Sync),
}

/// Serve one host connection until it closes.
pub fn serve_connection<R, W>(
    mut reader: R,
    writer: W,
    info: &DeviceInfo,
    services: Services,
    auth: &Auth,
) -> io::Result<()>
where
    R: Read,
    W: Write + Send + 'static,
{
    let conn = Arc::new(Conn {
        writer: Mutex::new(Box::new(writer)),
        checksums: std::sync::atomic::AtomicBool::new(true),
        max_payload: AtomicU32::new(MAX_PAYLOAD_V1),
        version: AtomicU32::new(A_VERSION),
        streams: Mutex::new(HashMap::new()),
        next_id: AtomicU32::new(1),
        ended: std::sync::atomic::AtomicBool::new(false),
        serial: NEXT_CONN.fetch_add(1, Ordering::Relaxed),
    });
    let result = run(&mut reader, &conn, info, services, auth);
    conn.ended.store(true, Ordering::Relaxed);
    conn.close_all();
    result
}

fn run<R: Read>(
    reader: &mut R,
    conn: &Arc<Conn>,
    info: &DeviceInfo,
    services: Services,
    auth: &Auth,
) -> io::Result<()> {
    // A host that reconnects sends its CNXN without a checksum (it still
    // knows the version it had): none is checked before the version is
    // agreed, only afterwards with a peer older than A_VERSION.
    let mut check = false;
    let mut connected = false;
    // The token the host must sign (after its CNXN, until authenticated).
    let mut token: Option<[u8; crate::auth::TOKEN_SIZE]> = None;
    let banner = || device_banner(&info.name, &info.model, &info.device, &FEATURES);
    let send_token = |conn: &Conn| -> io::Result<[u8; crate::auth::TOKEN_SIZE]> {
        let t = crate::auth::new_token()?;
        conn.send(A_AUTH, crate::auth::AUTH_TOKEN, 0, &t)?;
        Ok(t)
    };
    loop {
        let m = match Message::read_from(reader, MAX_PAYLOAD, check) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        match m.command {
            A_CNXN => {
                let version = m.arg0.clamp(A_VERSION_MIN, A_VERSION);
                conn.version.store(version, Ordering::Relaxed);
                check = version < A_VERSION;
                conn.checksums.store(check, Ordering::Relaxed);
                let max = m.arg1.clamp(MAX_PAYLOAD_V1, MAX_PAYLOAD);
                conn.max_payload.store(max, Ordering::Relaxed);
                // A new CNXN means the host started over: old streams are gone.
                conn.close_all();
                if auth.keys.is_some() && !connected {
                    token = Some(send_token(conn)?);
                    continue;
                }
                conn.send_msg(&Message::new(A_CNXN, version, MAX_PAYLOAD, banner()))?;
                connected = true;
                (auth.connected)();
            }
            A_AUTH if !connected => {
                let (Some(keys), Some(t)) = (&auth.keys, token) else {
                    continue;
                };
                match m.arg0 {
                    crate::auth::AUTH_SIGNATURE => {
                        match crate::auth::verify(&keys.load(), &t, &m.data) {
                            Some(k) => {
                                eprintln!("adbd: host authenticated with key {}", k.comment);
                                token = None;
                                let version = conn.version.load(Ordering::Relaxed);
                                conn.send_msg(&Message::new(
                                    A_CNXN,
                                    version,
                                    MAX_PAYLOAD,
                                    banner(),
                                ))?;
                                connected = true;
                                (auth.connected)();
                            }
                            // Try the next key (a fresh token, as adbd does).
                            None => token = Some(send_token(conn)?),
                        }
                    }
                    crate::auth::AUTH_RSAPUBLICKEY => {
                        let text = String::from_utf8_lossy(&m.data).to_string();
                        let who = cells_templates::adbkey::parse_line(&text)
                            .map(|k| k.comment)
                            .unwrap_or_else(|e| format!("(bad key: {e})"));
                        // No one to ask: the host stays unauthorized.
                        eprintln!(
                            "adbd: refused unauthorized key {who}; authorize it with `cellctl adb VP --authorize`"
                        );
                    }
                    _ => {}
                }
            }
            _ if !connected => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} before CNXN", command_name(m.command)),
                ))
            }
            A_OPEN => {
                let name = String::from_utf8_lossy(&m.data)
                    .trim_end_matches('\0')
                    .to_string();
                let remote = m.arg0;
                match services(&name) {
                    Some(run) if remote != 0 => {
                        let local = conn.next_id.fetch_add(1, Ordering::Relaxed);
                        let shared = Arc::new(StreamShared {
                            local,
                            remote: AtomicU32::new(remote),
                            state: Mutex::new(StreamState {
                                can_send: true,
                                ..Default::default()
                            }),
                            cv: Condvar::new(),
                        });
                        conn.streams
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(local, shared.clone());
                        conn.send_msg(&Message::new(A_OKAY, local, remote, Vec::new()))?;
                        let stream = Stream {
                            conn: conn.clone(),
                            shared,
                            send_lock: Mutex::new(()),
                        };
                        std::thread::Builder::new()
                            .name(format!("adb-{local}"))
                            .spawn(move || run(stream))?;
                    }
                    _ => {
                        // Unknown service: refused, as adbd does, with a CLSE.
                        conn.send_msg(&Message::new(A_CLSE, 0, remote, Vec::new()))?;
                    }
                }
            }
            A_WRTE | A_OKAY | A_CLSE => {
                let s = conn
                    .streams
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&m.arg1)
                    .cloned();
                let Some(s) = s else {
                    // A stream we no longer know: tell the host it is gone.
                    if m.command == A_WRTE {
                        conn.send_msg(&Message::new(A_CLSE, 0, m.arg0, Vec::new()))?;
                    }
                    continue;
                };
                let mut st = s.state.lock().unwrap_or_else(|p| p.into_inner());
                match m.command {
                    A_WRTE => st.inbox.push_back(m.data),
                    A_OKAY => {
                        // The host accepting a stream the device opened.
                        if s.remote() == 0 {
                            s.remote.store(m.arg0, Ordering::Relaxed);
                        }
                        st.can_send = true;
                    }
                    _ => {
                        st.closed = true;
                        drop(st);
                        conn.streams
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&m.arg1);
                        s.cv.notify_all();
                        // The host closed a stream we still had: say it is
                        // closed on this side too, as adbd does (clients
                        // such as adb-shell wait for it).
                        if s.remote() != 0 {
                            conn.send_msg(&Message::new(A_CLSE, s.local, s.remote(), Vec::new()))?;
                        }
                        continue;
                    }
                }
                s.cv.notify_all();
            }
            // STLS is not offered; AUTH after CNXN means nothing: ignore.
            _ => {}
        }
    }
}
