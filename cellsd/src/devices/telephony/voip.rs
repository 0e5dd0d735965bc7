//! cellsd's VoIP line (`cellsd --sip sip:HOST[:PORT]`): every running VP's
//! number registered with a SIP server (registrar and outbound proxy), SIP
//! calls and MESSAGEs bridged to the VPs' virtual modems by the
//! switchboard, a call's audio on the device's audio (RTP G.711 ↔ the
//! mixer). Outgoing calls and messages carry the VP's own number.
//!
//! One thread owns a UDP socket *connected* to the server: only the server
//! reaches it (the kernel drops everything else), and a server that is not
//! there shows at once (ICMP port unreachable) instead of after timeouts.
//! Each call's RTP socket is connected to the far end's media address the
//! same way. Digest authentication (MD5) answers 401/407 with the number's
//! password from `--sip-secrets`.

use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV4, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::rtp;
use super::sip::{self, Msg, Start};
use crate::devices::audio::{CallLine, Mixer};

/// Registrations asked for (the server may give less).
const EXPIRES: u32 = 300;
/// RFC 3261's T1, and the longest retransmission interval (T2).
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
/// A transaction without any answer ends after this long (RFC 3261 says
/// 32 s; a phone that says "no answer from the server" in 8 s is better).
const GIVE_UP: Duration = Duration::from_secs(8);
/// After a failed registration, the next try.
const RETRY: Duration = Duration::from_secs(30);

/// `--sip`, `--sip-domain`, `--sip-secrets`.
#[derive(Debug, Clone)]
pub struct SipConfig {
    pub server: SocketAddr,
    /// What `--sip` said (for `cellctl phone`).
    pub uri: String,
    /// The host part of the VPs' addresses (default: the server's host).
    pub domain: String,
    /// Passwords by number (`*`: any other number).
    pub secrets: BTreeMap<String, String>,
}

impl SipConfig {
    /// `sip:HOST[:PORT]` (or `HOST[:PORT]`), the domain (None: the host),
    /// the secrets file's text (`NUMBER PASSWORD` lines, `*` for any).
    pub fn parse(uri: &str, domain: Option<&str>, secrets: Option<&str>) -> Result<Self, String> {
        let hostport = uri.strip_prefix("sip:").unwrap_or(uri);
        let hostport = hostport.split(';').next().unwrap_or("");
        if hostport.is_empty() || hostport.contains('@') {
            return Err(format!(
                "--sip {uri}: give the SIP server as sip:HOST[:PORT], e.g. sip:127.0.0.1:5060"
            ));
        }
        let with_port = if hostport.contains(':') {
            hostport.to_string()
        } else {
            format!("{hostport}:5060")
        };
        let server = with_port
            .to_socket_addrs()
            .map_err(|e| format!("--sip {uri}: cannot resolve it ({e})"))?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| format!("--sip {uri}: no IPv4 address (cellsd's SIP is IPv4)"))?;
        let host = with_port
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or_default();
        let mut map = BTreeMap::new();
        for (i, l) in secrets.unwrap_or("").lines().enumerate() {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (n, p) = l.split_once(char::is_whitespace).ok_or_else(|| {
                format!(
                    "--sip-secrets line {}: write NUMBER PASSWORD (or * PASSWORD)",
                    i + 1
                )
            })?;
            map.insert(n.to_string(), p.trim().to_string());
        }
        Ok(Self {
            server,
            uri: uri.to_string(),
            domain: domain.map(str::to_string).unwrap_or(host),
            secrets: map,
        })
    }

    fn password(&self, number: &str) -> Option<&str> {
        self.secrets
            .get(number)
            .or_else(|| self.secrets.get("*"))
            .map(String::as_str)
    }
}

/// What the switchboard does for the agent.
pub trait Board: Send + Sync {
    /// A call for `to` from `from`: ring the VP, or refuse with a SIP code.
    fn sip_incoming(&self, call_id: &str, to: &str, from: &str) -> Result<(), (u16, String)>;
    fn sip_answered(&self, call_id: &str);
    fn sip_ended(&self, call_id: &str, busy: bool, why: &str);
    fn sip_message(&self, to: &str, from: &str, text: &str) -> Result<(), (u16, String)>;
    fn sip_note(&self, what: String);
}

/// The switchboard's requests.
#[derive(Debug)]
pub enum Cmd {
    /// Keep exactly these numbers registered.
    Numbers(Vec<String>),
    Invite {
        call_id: String,
        from: String,
        to: String,
    },
    Answer {
        call_id: String,
    },
    Hangup {
        call_id: String,
    },
    Message {
        from: String,
        to: String,
        text: String,
    },
}

/// What `cellctl phone` shows of the VoIP line.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SipReport {
    pub server: String,
    pub domain: String,
    /// cellsd's SIP address (what the server sends to).
    pub local: String,
    pub registrations: Vec<RegReport>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegReport {
    pub number: String,
    pub registered: bool,
    pub error: Option<String>,
}

/// The switchboard's handle on the agent.
pub struct Sip {
    tx: Mutex<mpsc::Sender<Cmd>>,
    report: Arc<Mutex<SipReport>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sip {
    /// Bind the SIP socket and start the agent's thread.
    pub fn start(
        cfg: SipConfig,
        board: Weak<dyn Board>,
        mixer: Option<Arc<Mixer>>,
    ) -> Result<Self, String> {
        let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("SIP socket: {e}"))?;
        sock.connect(cfg.server)
            .map_err(|e| format!("SIP socket to {}: {e}", cfg.server))?;
        let local = match sock.local_addr() {
            Ok(SocketAddr::V4(a)) => a,
            other => return Err(format!("SIP socket: local address {other:?}")),
        };
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .map_err(|e| format!("SIP socket: {e}"))?;
        let report = Arc::new(Mutex::new(SipReport {
            server: cfg.uri.clone(),
            domain: cfg.domain.clone(),
            local: local.to_string(),
            ..Default::default()
        }));
        let (tx, rx) = mpsc::channel();
        let agent = Agent {
            sock,
            local,
            cfg,
            board,
            mixer,
            report: Arc::clone(&report),
            regs: BTreeMap::new(),
            dialogs: BTreeMap::new(),
            txs: BTreeMap::new(),
            error: None,
        };
        std::thread::Builder::new()
            .name("sip".into())
            .spawn(move || agent.run(rx))
            .map_err(|e| format!("start the SIP thread: {e}"))?;
        tracing::info!(local = %local, "SIP line");
        Ok(Self {
            tx: Mutex::new(tx),
            report,
        })
    }

    pub fn send(&self, c: Cmd) {
        let _ = lock(&self.tx).send(c);
    }

    pub fn report(&self) -> SipReport {
        lock(&self.report).clone()
    }
}

pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        // Unique enough without the kernel's randomness.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        return format!("{t:x}{:x}", std::process::id());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn random_u32() -> u32 {
    u32::from_str_radix(&random_hex(4), 16).unwrap_or(0x1234_5678)
}

struct Reg {
    call_id: String,
    tag: String,
    cseq: u32,
    registered: bool,
    error: Option<String>,
    /// When to register again.
    next: Instant,
    auth_tries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DState {
    /// Ringing (either way).
    Early,
    /// We answered; the ACK is awaited (the 200 is repeated).
    Answered,
    Confirmed,
}

struct Dialog {
    outgoing: bool,
    /// Our side: `<sip:NUMBER@domain>` and tag.
    local: String,
    local_tag: String,
    /// The far side, as in From/To (without tag), and its tag.
    remote: String,
    remote_tag: Option<String>,
    remote_target: String,
    /// Route set (Record-Route, in the order requests use it).
    route: Vec<String>,
    local_cseq: u32,
    /// The INVITE (received, or sent: for ACK/CANCEL).
    invite: Msg,
    state: DState,
    media: Option<sip::Media>,
    rtp_sock: Option<UdpSocket>,
    rtp_port: u16,
    rtp: Option<Stream>,
    /// The 200 OK repeated until the ACK: bytes, next time, interval, end.
    ok_retx: Option<(Vec<u8>, Instant, Duration, Instant)>,
    /// The last response to the INVITE (sent again if it comes again).
    last_response: Option<Vec<u8>>,
    session: u64,
}

#[derive(Debug, Clone)]
enum TxKind {
    Register(String),
    Invite(String),
    Other { what: String },
}

struct ClientTx {
    msg: Msg,
    kind: TxKind,
    started: Instant,
    next: Instant,
    interval: Duration,
    /// A provisional answer came (INVITE: no more retransmissions).
    provisional: bool,
    /// The user whose password answers a challenge.
    user: String,
    auth_tries: u32,
}

/// A call's RTP: its thread runs until dropped.
struct Stream {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_stream(sock: UdpSocket, remote: SocketAddr, pt: u8, line: CallLine) -> Option<Stream> {
    sock.connect(remote).ok()?;
    sock.set_read_timeout(Some(Duration::from_millis(5))).ok()?;
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("rtp".into())
        .spawn(move || rtp_run(sock, remote, pt, line, s))
        .ok()?;
    Some(Stream {
        stop,
        thread: Some(thread),
    })
}

fn rtp_run(sock: UdpSocket, remote: SocketAddr, pt: u8, line: CallLine, stop: Arc<AtomicBool>) {
    let ssrc = random_u32();
    let mut seq = (random_u32() & 0xffff) as u16;
    let mut ts = random_u32();
    let mut first = true;
    let mut acc: Vec<i16> = Vec::new();
    let mut last = 0i16;
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        // The microphone, paced by the mixer's clock: 20 ms per packet.
        while let Ok(p) = line.up.try_recv() {
            acc.extend(rtp::down(&p));
        }
        while acc.len() >= rtp::PACKET_SAMPLES {
            let chunk: Vec<i16> = acc.drain(..rtp::PACKET_SAMPLES).collect();
            let payload = rtp::encode(pt, &chunk);
            let pkt = rtp::build(
                &rtp::Packet {
                    payload_type: pt,
                    seq,
                    timestamp: ts,
                    ssrc,
                    payload: &payload,
                },
                first,
            );
            first = false;
            let _ = sock.send(&pkt);
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(rtp::PACKET_SAMPLES as u32);
        }
        // Connected to the far end: the kernel drops other senders from
        // now on; what came before the connect is checked here.
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            if from != remote {
                continue;
            }
            if let Some(p) = rtp::parse(&buf[..n]) {
                if p.payload_type == sip::PCMU || p.payload_type == sip::PCMA {
                    line.play(&rtp::up(&rtp::decode(p.payload_type, p.payload), &mut last));
                }
            }
        }
    }
}

struct Agent {
    sock: UdpSocket,
    local: SocketAddrV4,
    cfg: SipConfig,
    board: Weak<dyn Board>,
    mixer: Option<Arc<Mixer>>,
    report: Arc<Mutex<SipReport>>,
    regs: BTreeMap<String, Reg>,
    dialogs: BTreeMap<String, Dialog>,
    txs: BTreeMap<String, ClientTx>,
    /// The server's state as the socket says it (refused, unreachable).
    error: Option<String>,
}

impl Agent {
    fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        let mut buf = vec![0u8; sip::MAX_MESSAGE];
        loop {
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    if self.error.take().is_some() {
                        // The server is back: register again now.
                        let now = Instant::now();
                        for r in self.regs.values_mut().filter(|r| !r.registered) {
                            r.next = now;
                        }
                    }
                    match Msg::parse(&buf[..n]) {
                        Ok(m) => self.handle(m),
                        Err(e) => tracing::debug!("SIP: a datagram that is not SIP: {e}"),
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => {
                    // ICMP: nobody listens at the server's address.
                    self.error = Some(format!("the SIP server {}: {e}", self.cfg.server));
                    self.server_down();
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(c) => self.command(c),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            }
            self.timers();
            self.publish();
        }
    }

    fn board(&self) -> Option<Arc<dyn Board>> {
        self.board.upgrade()
    }

    fn publish(&self) {
        let mut r = lock(&self.report);
        r.error = self.error.clone();
        r.registrations = self
            .regs
            .iter()
            .map(|(n, g)| RegReport {
                number: n.clone(),
                registered: g.registered,
                error: g.error.clone(),
            })
            .collect();
    }

    fn send(&self, m: &Msg) {
        if let Err(e) = self.sock.send(&m.to_bytes()) {
            tracing::debug!("SIP send: {e}");
        }
    }

    fn aor(&self, user: &str) -> String {
        format!("sip:{user}@{}", self.cfg.domain)
    }

    fn contact(&self, user: &str) -> String {
        format!("<sip:{user}@{}>", self.local)
    }

    fn via(&self) -> (String, String) {
        let branch = format!("z9hG4bK{}", random_hex(8));
        (
            format!("SIP/2.0/UDP {};branch={branch};rport", self.local),
            branch,
        )
    }

    /// Send a request as a client transaction.
    fn start_tx(&mut self, mut m: Msg, kind: TxKind, user: &str, auth_tries: u32) {
        let (via, branch) = self.via();
        m.headers.retain(|(n, _)| !n.eq_ignore_ascii_case("via"));
        m.headers.insert(0, ("Via".into(), via));
        self.send(&m);
        let now = Instant::now();
        if let TxKind::Invite(id) = &kind {
            if let Some(d) = self.dialogs.get_mut(id) {
                d.invite = m.clone();
            }
        }
        self.txs.insert(
            branch,
            ClientTx {
                msg: m,
                kind,
                started: now,
                next: now + T1,
                interval: T1,
                provisional: false,
                user: user.to_string(),
                auth_tries,
            },
        );
    }

    fn register(&mut self, number: &str, expires: u32) {
        let (aor, contact) = (self.aor(number), self.contact(number));
        let Some(r) = self.regs.get_mut(number) else {
            return;
        };
        r.cseq += 1;
        let m = Msg::request("REGISTER", &format!("sip:{}", self.cfg.domain))
            .with("Max-Forwards", "70")
            .with("From", format!("<{aor}>;tag={}", r.tag))
            .with("To", format!("<{aor}>"))
            .with("Call-ID", r.call_id.clone())
            .with("CSeq", format!("{} REGISTER", r.cseq))
            .with("Contact", contact)
            .with("Expires", expires.to_string())
            .with("User-Agent", "cellsd");
        r.next = Instant::now() + RETRY;
        self.start_tx(m, TxKind::Register(number.to_string()), number, 0);
    }

    fn command(&mut self, c: Cmd) {
        match c {
            Cmd::Numbers(list) => {
                let gone: Vec<String> = self
                    .regs
                    .keys()
                    .filter(|n| !list.contains(n))
                    .cloned()
                    .collect();
                for n in gone {
                    self.register(&n, 0);
                    self.regs.remove(&n);
                }
                for n in list {
                    if self.regs.contains_key(&n) {
                        continue;
                    }
                    self.regs.insert(
                        n.clone(),
                        Reg {
                            call_id: format!("{}@cellsd", random_hex(8)),
                            tag: random_hex(4),
                            cseq: 0,
                            registered: false,
                            error: None,
                            next: Instant::now(),
                            auth_tries: 0,
                        },
                    );
                    self.register(&n, EXPIRES);
                }
            }
            Cmd::Invite { call_id, from, to } => self.invite(call_id, &from, &to),
            Cmd::Answer { call_id } => self.answer(&call_id),
            Cmd::Hangup { call_id } => self.hang_up(&call_id),
            Cmd::Message { from, to, text } => {
                let m = Msg::request("MESSAGE", &self.aor(&to))
                    .with("Max-Forwards", "70")
                    .with(
                        "From",
                        format!("<{}>;tag={}", self.aor(&from), random_hex(4)),
                    )
                    .with("To", format!("<{}>", self.aor(&to)))
                    .with("Call-ID", format!("{}@cellsd", random_hex(8)))
                    .with("CSeq", "1 MESSAGE")
                    .with("Content-Type", "text/plain;charset=UTF-8")
                    .with("User-Agent", "cellsd");
                let mut m = m;
                m.body = text;
                self.start_tx(
                    m,
                    TxKind::Other {
                        what: format!("the message from {from} to {to}"),
                    },
                    &from,
                    0,
                );
            }
        }
    }

    /// A socket for a call's RTP on our address (its port goes in the SDP).
    fn rtp_socket(&self) -> Option<(UdpSocket, u16)> {
        let s = UdpSocket::bind(SocketAddrV4::new(*self.local.ip(), 0)).ok()?;
        let port = s.local_addr().ok()?.port();
        Some((s, port))
    }

    fn invite(&mut self, call_id: String, from: &str, to: &str) {
        let Some((sock, port)) = self.rtp_socket() else {
            if let Some(b) = self.board() {
                b.sip_ended(&call_id, false, "no RTP port for the call");
            }
            return;
        };
        let session = random_u32() as u64;
        let local = format!("<{}>", self.aor(from));
        let remote = format!("<{}>", self.aor(to));
        let tag = random_hex(4);
        let mut m = Msg::request("INVITE", &self.aor(to))
            .with("Max-Forwards", "70")
            .with("From", format!("{local};tag={tag}"))
            .with("To", remote.clone())
            .with("Call-ID", call_id.clone())
            .with("CSeq", "1 INVITE")
            .with("Contact", self.contact(from))
            .with("Content-Type", "application/sdp")
            .with("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE")
            .with("User-Agent", "cellsd");
        m.body = sip::sdp(session, *self.local.ip(), port, &[sip::PCMU, sip::PCMA]);
        self.dialogs.insert(
            call_id.clone(),
            Dialog {
                outgoing: true,
                local,
                local_tag: tag,
                remote,
                remote_tag: None,
                remote_target: self.aor(to),
                route: Vec::new(),
                local_cseq: 1,
                invite: m.clone(),
                state: DState::Early,
                media: None,
                rtp_sock: Some(sock),
                rtp_port: port,
                rtp: None,
                ok_retx: None,
                last_response: None,
                session,
            },
        );
        self.start_tx(m, TxKind::Invite(call_id), from, 0);
    }

    /// Start the call's audio once both sides' media are known.
    fn start_audio(&mut self, call_id: &str) {
        let mixer = self.mixer.clone();
        let Some(d) = self.dialogs.get_mut(call_id) else {
            return;
        };
        if d.rtp.is_some() {
            return;
        }
        let (Some(media), Some(mixer)) = (d.media.clone(), mixer) else {
            return;
        };
        let Some(pt) = sip::choose(&media) else {
            return;
        };
        let Some(sock) = d.rtp_sock.take() else {
            return;
        };
        let remote = SocketAddr::V4(SocketAddrV4::new(media.addr, media.port));
        d.rtp = start_stream(sock, remote, pt, mixer.open_line());
        tracing::info!(call = call_id, %remote, pt, "call audio");
    }

    fn answer(&mut self, call_id: &str) {
        let local_ip = *self.local.ip();
        let contact = {
            let Some(d) = self.dialogs.get(call_id) else {
                return;
            };
            self.contact(&sip::user_of(&sip::uri_of(&d.local)))
        };
        let Some(d) = self.dialogs.get_mut(call_id) else {
            return;
        };
        if d.outgoing || d.state != DState::Early {
            return;
        }
        let Some(media) = d.media.clone() else {
            return;
        };
        let pt = sip::choose(&media).unwrap_or(sip::PCMU);
        let mut ok = d
            .invite
            .response(200, "OK", Some(&d.local_tag))
            .with("Contact", contact)
            .with("Content-Type", "application/sdp")
            .with("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE");
        ok.body = sip::sdp(d.session, local_ip, d.rtp_port, &[pt]);
        let bytes = ok.to_bytes();
        let now = Instant::now();
        d.ok_retx = Some((bytes.clone(), now + T1, T1, now + GIVE_UP));
        d.last_response = Some(bytes.clone());
        d.state = DState::Answered;
        let _ = self.sock.send(&bytes);
        self.start_audio(call_id);
    }

    /// An in-dialog request (BYE, ACK of a 2xx).
    fn in_dialog(&self, d: &Dialog, method: &str, cseq: u32) -> Msg {
        let (from, to) = (
            format!("{};tag={}", d.local, d.local_tag),
            match &d.remote_tag {
                Some(t) => format!("{};tag={t}", d.remote),
                None => d.remote.clone(),
            },
        );
        let mut m = Msg::request(method, &d.remote_target)
            .with("Max-Forwards", "70")
            .with("From", from)
            .with("To", to)
            .with("Call-ID", d.invite.call_id().to_string())
            .with("CSeq", format!("{cseq} {method}"));
        for r in &d.route {
            m = m.with("Route", r.clone());
        }
        m
    }

    fn hang_up(&mut self, call_id: &str) {
        let Some(mut d) = self.dialogs.remove(call_id) else {
            return;
        };
        d.rtp = None;
        match (d.outgoing, d.state) {
            (false, DState::Early) => {
                let r = d.invite.response(603, "Decline", Some(&d.local_tag));
                self.send(&r);
            }
            (true, DState::Early) => {
                // CANCEL: the INVITE's branch, Request-URI, From, To, CSeq number.
                let inv = &d.invite;
                let mut m = Msg::request(
                    "CANCEL",
                    match &inv.start {
                        Start::Request { uri, .. } => uri,
                        Start::Response { .. } => "",
                    },
                );
                for h in ["via", "from", "to", "call-id", "route"] {
                    for v in inv
                        .headers
                        .iter()
                        .filter(|(n, _)| n.eq_ignore_ascii_case(h))
                    {
                        m.headers.push(v.clone());
                    }
                }
                m = m
                    .with("CSeq", format!("{} CANCEL", inv.cseq().0))
                    .with("Max-Forwards", "70");
                self.send(&m);
                // The INVITE's 487 is ACKed as it comes.
                self.dialogs.insert(call_id.to_string(), d);
                if let Some(d) = self.dialogs.get_mut(call_id) {
                    d.rtp_sock = None;
                }
            }
            _ => {
                d.local_cseq += 1;
                let m = self.in_dialog(&d, "BYE", d.local_cseq);
                let user = sip::user_of(&sip::uri_of(&d.local));
                self.start_tx(
                    m,
                    TxKind::Other {
                        what: "the hang-up".into(),
                    },
                    &user,
                    0,
                );
            }
        }
    }

    fn handle(&mut self, m: Msg) {
        match m.method().map(str::to_string) {
            Some(method) => self.request(&method, m),
            None => self.response(m),
        }
    }

    fn reply(&self, req: &Msg, code: u16, reason: &str) {
        self.send(&req.response(code, reason, Some(&random_hex(4))));
    }

    fn request(&mut self, method: &str, m: Msg) {
        let call_id = m.call_id().to_string();
        let to_user = match &m.start {
            Start::Request { uri, .. } => sip::user_of(uri),
            Start::Response { .. } => String::new(),
        };
        let to_user = if to_user.is_empty() {
            sip::user_of(&sip::uri_of(m.header("to").unwrap_or("")))
        } else {
            to_user
        };
        let from_user = sip::user_of(&sip::uri_of(m.header("from").unwrap_or("")));
        match method {
            "INVITE" => {
                if let Some(d) = self.dialogs.get(&call_id) {
                    // Again (our answer was lost), or a re-INVITE.
                    if sip::param(m.header("to").unwrap_or(""), "tag").is_none() {
                        if let Some(b) = &d.last_response {
                            let _ = self.sock.send(b);
                        }
                    } else {
                        self.reply(&m, 488, "Not Acceptable Here");
                    }
                    return;
                }
                if sip::param(m.header("to").unwrap_or(""), "tag").is_some() {
                    self.reply(&m, 481, "Call/Transaction Does Not Exist");
                    return;
                }
                let media = sip::parse_sdp(&m.body);
                if media.as_ref().and_then(sip::choose).is_none() {
                    self.reply(&m, 488, "Not Acceptable Here");
                    if let Some(b) = self.board() {
                        b.sip_note(format!(
                            "a call from {from_user} to {to_user} offered no G.711 audio (PCMU/PCMA): refused"
                        ));
                    }
                    return;
                }
                self.send(&m.response(100, "Trying", None));
                let Some(b) = self.board() else { return };
                let Some((sock, port)) = self.rtp_socket() else {
                    self.reply(&m, 500, "No RTP Port");
                    return;
                };
                // The dialog first: the board may answer at once.
                let local_tag = random_hex(4);
                let to = m.header("to").unwrap_or("").to_string();
                let from = m.header("from").unwrap_or("").to_string();
                let ringing = m.response(180, "Ringing", Some(&local_tag));
                self.dialogs.insert(
                    call_id.clone(),
                    Dialog {
                        outgoing: false,
                        local: to.split(";tag=").next().unwrap_or("").to_string(),
                        local_tag: local_tag.clone(),
                        remote: from.split(";tag=").next().unwrap_or("").to_string(),
                        remote_tag: sip::param(&from, "tag"),
                        remote_target: sip::uri_of(m.header("contact").unwrap_or(&from)),
                        route: m.all("record-route").into_iter().collect(),
                        local_cseq: 0,
                        invite: m.clone(),
                        state: DState::Early,
                        media,
                        rtp_sock: Some(sock),
                        rtp_port: port,
                        rtp: None,
                        ok_retx: None,
                        last_response: Some(ringing.to_bytes()),
                        session: random_u32() as u64,
                    },
                );
                match b.sip_incoming(&call_id, &to_user, &from_user) {
                    Ok(()) => {
                        let c = self.contact(&to_user);
                        self.send(&ringing.with("Contact", c));
                    }
                    Err((code, why)) => {
                        self.dialogs.remove(&call_id);
                        self.send(&m.response(code, &why, Some(&local_tag)));
                    }
                }
            }
            "ACK" => {
                if let Some(d) = self.dialogs.get_mut(&call_id) {
                    if d.state == DState::Answered {
                        d.state = DState::Confirmed;
                        d.ok_retx = None;
                    }
                }
            }
            "BYE" => {
                if self.dialogs.remove(&call_id).is_some() {
                    self.reply(&m, 200, "OK");
                    if let Some(b) = self.board() {
                        b.sip_ended(&call_id, false, &format!("{from_user} hung up"));
                    }
                } else {
                    self.reply(&m, 481, "Call/Transaction Does Not Exist");
                }
            }
            "CANCEL" => {
                self.reply(&m, 200, "OK");
                let early = self
                    .dialogs
                    .get(&call_id)
                    .is_some_and(|d| !d.outgoing && d.state == DState::Early);
                if early {
                    if let Some(d) = self.dialogs.remove(&call_id) {
                        self.send(&d.invite.response(
                            487,
                            "Request Terminated",
                            Some(&d.local_tag),
                        ));
                    }
                    if let Some(b) = self.board() {
                        b.sip_ended(&call_id, false, &format!("{from_user} gave up calling"));
                    }
                }
            }
            "MESSAGE" => {
                let Some(b) = self.board() else { return };
                match b.sip_message(&to_user, &from_user, &m.body) {
                    Ok(()) => self.reply(&m, 200, "OK"),
                    Err((code, why)) => self.reply(&m, code, &why),
                }
            }
            "OPTIONS" => {
                let r = m
                    .response(200, "OK", Some(&random_hex(4)))
                    .with("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE");
                self.send(&r);
            }
            _ => {
                let r = m
                    .response(405, "Method Not Allowed", Some(&random_hex(4)))
                    .with("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE");
                self.send(&r);
            }
        }
    }

    fn response(&mut self, m: Msg) {
        let code = m.code().unwrap_or(0);
        let branch = m.branch();
        let (_, method) = m.cseq();
        let reason = match &m.start {
            Start::Response { reason, .. } => reason.clone(),
            Start::Request { .. } => String::new(),
        };
        // A 2xx to our INVITE again (our ACK was lost): ACK again.
        if method == "INVITE" && (200..300).contains(&code) && !self.txs.contains_key(&branch) {
            if let Some(d) = self.dialogs.get(m.call_id()) {
                if d.outgoing && d.state == DState::Confirmed {
                    let ack = self.in_dialog(d, "ACK", d.invite.cseq().0);
                    let (via, _) = self.via();
                    let mut ack = ack;
                    ack.headers.insert(0, ("Via".into(), via));
                    self.send(&ack);
                }
            }
            return;
        }
        let Some(tx) = self.txs.get_mut(&branch) else {
            return;
        };
        if code < 200 {
            tx.provisional = true;
            return;
        }
        let Some(tx) = self.txs.remove(&branch) else {
            return;
        };
        // A challenge: once more with the number's password.
        if (code == 401 || code == 407) && tx.auth_tries < 1 {
            if matches!(tx.kind, TxKind::Invite(_)) {
                self.ack_failure(&tx.msg, &m);
            }
            let header = if code == 401 {
                "www-authenticate"
            } else {
                "proxy-authenticate"
            };
            let password = self.cfg.password(&tx.user).map(str::to_string);
            let challenge = m.header(header).and_then(sip::parse_challenge);
            if let (Some(pw), Some(c)) = (password, challenge) {
                let mut again = tx.msg.clone();
                let (n, meth) = again.cseq();
                let uri = match &again.start {
                    Start::Request { uri, .. } => uri.clone(),
                    Start::Response { .. } => String::new(),
                };
                match sip::authorization(&c, &tx.user, &pw, &meth, &uri, &random_hex(8), 1) {
                    Ok(auth) => {
                        again.headers.retain(|(h, _)| {
                            !h.eq_ignore_ascii_case("cseq")
                                && !h.eq_ignore_ascii_case("authorization")
                                && !h.eq_ignore_ascii_case("proxy-authorization")
                        });
                        again
                            .headers
                            .push(("CSeq".into(), format!("{} {meth}", n + 1)));
                        let name = if code == 401 {
                            "Authorization"
                        } else {
                            "Proxy-Authorization"
                        };
                        again.headers.push((name.into(), auth));
                        if let TxKind::Register(num) = &tx.kind {
                            if let Some(r) = self.regs.get_mut(num) {
                                r.cseq = n + 1;
                                r.auth_tries += 1;
                            }
                        }
                        if let TxKind::Invite(id) = &tx.kind {
                            if let Some(d) = self.dialogs.get_mut(id) {
                                d.local_cseq = n + 1;
                            }
                        }
                        let user = tx.user.clone();
                        self.start_tx(again, tx.kind, &user, tx.auth_tries + 1);
                        return;
                    }
                    Err(e) => {
                        self.fail(&tx, &e);
                        return;
                    }
                }
            }
            let why = format!(
                "{code} {reason}: the server wants a password for {}: give it in --sip-secrets",
                tx.user
            );
            self.fail(&tx, &why);
            return;
        }
        match &tx.kind {
            TxKind::Register(num) => {
                let num = num.clone();
                if let Some(r) = self.regs.get_mut(&num) {
                    r.auth_tries = 0;
                    if (200..300).contains(&code) {
                        let expires = m
                            .header("expires")
                            .and_then(|e| e.parse::<u64>().ok())
                            .or_else(|| {
                                m.all("contact")
                                    .iter()
                                    .find_map(|c| sip::param(c, "expires"))
                                    .and_then(|e| e.parse().ok())
                            })
                            .unwrap_or(EXPIRES as u64)
                            .clamp(20, EXPIRES as u64);
                        r.registered = true;
                        r.error = None;
                        r.next = Instant::now() + Duration::from_secs(expires / 2);
                    } else {
                        r.registered = false;
                        r.error = Some(format!("the server said {code} {reason}"));
                        r.next = Instant::now() + RETRY;
                    }
                }
            }
            TxKind::Invite(id) => {
                let id = id.clone();
                if (200..300).contains(&code) {
                    let contact = m.header("contact").map(sip::uri_of);
                    let media = sip::parse_sdp(&m.body);
                    let mut rr = m.all("record-route");
                    rr.reverse();
                    {
                        let Some(d) = self.dialogs.get_mut(&id) else {
                            return;
                        };
                        d.remote_tag = sip::param(m.header("to").unwrap_or(""), "tag");
                        if let Some(c) = contact {
                            d.remote_target = c;
                        }
                        d.route = rr;
                        d.media = media;
                        d.state = DState::Confirmed;
                    }
                    let Some(d) = self.dialogs.get(&id) else {
                        return;
                    };
                    let ack = self.in_dialog(d, "ACK", d.invite.cseq().0);
                    let (via, _) = self.via();
                    let mut ack = ack;
                    ack.headers.insert(0, ("Via".into(), via));
                    self.send(&ack);
                    self.start_audio(&id);
                    if let Some(b) = self.board() {
                        b.sip_answered(&id);
                    }
                } else {
                    self.ack_failure(&tx.msg, &m);
                    self.dialogs.remove(&id);
                    if let Some(b) = self.board() {
                        b.sip_ended(
                            &id,
                            matches!(code, 486 | 600 | 603),
                            &format!("the call to {} failed: {code} {reason}", tx_to(&tx.msg)),
                        );
                    }
                }
            }
            TxKind::Other { what } => {
                if code >= 300 {
                    if let Some(b) = self.board() {
                        b.sip_note(format!("{what}: the server said {code} {reason}"));
                    }
                }
            }
        }
    }

    /// ACK a non-2xx final answer to our INVITE (same branch, RFC 3261 §17.1.1.3).
    fn ack_failure(&self, invite: &Msg, resp: &Msg) {
        let uri = match &invite.start {
            Start::Request { uri, .. } => uri.clone(),
            Start::Response { .. } => return,
        };
        let mut ack = Msg::request("ACK", &uri);
        for h in ["via", "from", "call-id", "route"] {
            for v in invite
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(h))
            {
                ack.headers.push(v.clone());
            }
        }
        ack = ack
            .with("To", resp.header("to").unwrap_or("").to_string())
            .with("CSeq", format!("{} ACK", invite.cseq().0))
            .with("Max-Forwards", "70");
        self.send(&ack);
    }

    /// A transaction ended without success.
    fn fail(&mut self, tx: &ClientTx, why: &str) {
        match &tx.kind {
            TxKind::Register(n) => {
                if let Some(r) = self.regs.get_mut(n) {
                    r.registered = false;
                    r.error = Some(why.to_string());
                    r.next = Instant::now() + RETRY;
                    r.auth_tries = 0;
                }
            }
            TxKind::Invite(id) => {
                self.dialogs.remove(id);
                if let Some(b) = self.board() {
                    b.sip_ended(id, false, why);
                }
            }
            TxKind::Other { what } => {
                if let Some(b) = self.board() {
                    b.sip_note(format!("{what}: {why}"));
                }
            }
        }
    }

    /// Every registration and open transaction fails now (the server is
    /// not there).
    fn server_down(&mut self) {
        let why = self.error.clone().unwrap_or_default();
        let txs: Vec<ClientTx> = std::mem::take(&mut self.txs).into_values().collect();
        for tx in txs {
            self.fail(&tx, &why);
        }
        for r in self.regs.values_mut() {
            r.registered = false;
            r.error = Some(why.clone());
        }
    }

    fn timers(&mut self) {
        let now = Instant::now();
        // Retransmissions, and giving up.
        let mut dead = Vec::new();
        let mut again = Vec::new();
        for (b, tx) in self.txs.iter_mut() {
            if now.duration_since(tx.started) > GIVE_UP
                && !(tx.provisional && matches!(tx.kind, TxKind::Invite(_)))
            {
                dead.push(b.clone());
            } else if now >= tx.next && !tx.provisional {
                again.push(tx.msg.clone());
                tx.interval = (tx.interval * 2).min(T2);
                tx.next = now + tx.interval;
            }
        }
        for m in again {
            self.send(&m);
        }
        for b in dead {
            if let Some(tx) = self.txs.remove(&b) {
                let why = format!(
                    "no answer from the SIP server {} in {}s",
                    self.cfg.server,
                    GIVE_UP.as_secs()
                );
                self.fail(&tx, &why);
            }
        }
        // Our 200 OK until the ACK.
        let mut unacked = Vec::new();
        for (id, d) in self.dialogs.iter_mut() {
            if let Some((bytes, next, interval, end)) = &mut d.ok_retx {
                if now > *end {
                    unacked.push(id.clone());
                } else if now >= *next {
                    let _ = self.sock.send(bytes);
                    *interval = (*interval * 2).min(T2);
                    *next = now + *interval;
                }
            }
        }
        for id in unacked {
            if let Some(d) = self.dialogs.get_mut(&id) {
                d.ok_retx = None;
                d.state = DState::Confirmed;
            }
            self.hang_up(&id);
            if let Some(b) = self.board() {
                b.sip_ended(
                    &id,
                    false,
                    "the caller never acknowledged the answer (no ACK)",
                );
            }
        }
        // Registrations due.
        let due: Vec<String> = self
            .regs
            .iter()
            .filter(|(_, r)| now >= r.next)
            .map(|(n, _)| n.clone())
            .collect();
        for n in due {
            let pending = self
                .txs
                .values()
                .any(|t| matches!(&t.kind, TxKind::Register(x) if *x == n));
            if !pending {
                self.register(&n, EXPIRES);
            }
        }
    }
}

fn tx_to(m: &Msg) -> String {
    sip::user_of(&sip::uri_of(m.header("to").unwrap_or("")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_and_names_what_is_wrong() {
        let c =
            SipConfig::parse("sip:127.0.0.1:5070", None, Some("# x\n+1555 pw1\n* any\n")).unwrap();
        assert_eq!(c.server, "127.0.0.1:5070".parse().unwrap());
        assert_eq!(c.domain, "127.0.0.1");
        assert_eq!(c.password("+1555"), Some("pw1"));
        assert_eq!(c.password("+1666"), Some("any"));
        let d = SipConfig::parse("127.0.0.1", Some("cells.test"), None).unwrap();
        assert_eq!(d.server.port(), 5060);
        assert_eq!(d.domain, "cells.test");
        assert!(SipConfig::parse("sip:bob@127.0.0.1", None, None)
            .unwrap_err()
            .contains("sip:HOST[:PORT]"));
        assert!(SipConfig::parse("sip:127.0.0.1", None, Some("justone"))
            .unwrap_err()
            .contains("line 1"));
    }
}
