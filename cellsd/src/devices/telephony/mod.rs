//! The telephony device: a virtual modem per VP (`/dev/ttyMODEM0`, AT
//! commands as Android's reference RIL and oFono drive a modem) and cellsd's
//! switchboard, which gives every VP a number of its own and connects
//! calls and messages between them (Cells: "separately assignable telephone
//! numbers and caller ID").
//!
//! - **VP side** (monitor): a pty of the VP's devpts, raw, bound at
//!   `/dev/ttyMODEM0`; its master goes to cellsd (like the GPS receiver).
//! - **Host side** (cellsd): one thread polls every VP's modem; each VP's
//!   [`modem::Modem`] turns its bytes into answers and requests; the
//!   switchboard routes a dialled number to the VP that has it (it rings
//!   there with the caller's number as caller ID, in the background too),
//!   an answer makes both sides active, a hang-up on either side ends both;
//!   a text message reaches only the VP with that number. Numbers are kept
//!   in `<state>/telephony.json` (`cellctl phone number VP NUMBER`; a VP
//!   without one gets the next free `+1555010NNN` at its first start).

pub mod modem;
pub mod rtp;
pub mod sip;
pub mod voip;

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::devices::model::{DeviceSpec, Policy};
use crate::devices::registry::{
    io, Attach, Detach, Device, DeviceError, DeviceFds, DeviceRecord, HostDevice, Made, VpCtx,
    VpDevice,
};
use modem::{CallView, Event, Line, Modem, Request};

pub const NAME: &str = "telephony";
pub const MODEM_PATH: &str = "/dev/ttyMODEM0";
/// How often an unanswered call rings again.
const RING_EVERY: Duration = Duration::from_secs(3);
/// An unanswered call ends after this long.
const RING_FOR: Duration = Duration::from_secs(60);
/// Messages kept for `cellctl phone`.
const KEEP_MESSAGES: usize = 50;

pub const DEVICE: Device = Device {
    spec: DeviceSpec {
        name: NAME,
        default: Policy::Shared,
        policies: &[Policy::Shared, Policy::None],
        about: "/dev/ttyMODEM0: a virtual modem (3GPP TS 27.007 AT commands) with the VP's own number; calls and messages reach it in the background too (shared)",
    },
    vp_side,
};

fn vp_side(c: &VpCtx<'_>, m: &mut Made) -> Result<(), DeviceError> {
    if c.policy == Policy::None {
        return Ok(());
    }
    m.fds.records.insert(
        NAME.to_string(),
        DeviceRecord {
            fds: Vec::new(),
            data: serde_json::json!({"modem": MODEM_PATH}),
        },
    );
    m.live.push(Box::new(VpModem {
        owner: c.owner,
        tty: None,
    }));
    Ok(())
}

/// The monitor's side: the pty, made once the VP's devpts is mounted.
struct VpModem {
    owner: Option<u32>,
    tty: Option<(OwnedFd, OwnedFd)>,
}

impl VpDevice for VpModem {
    fn name(&self) -> &'static str {
        NAME
    }

    fn mounted(&mut self, root: &Path, fds: &mut DeviceFds) -> Result<(), DeviceError> {
        let (master, slave) = crate::rootfs::bind_new_pty(root, MODEM_PATH, self.owner)
            .map_err(|e| DeviceError::Refused(format!("the modem tty: {e}")))?;
        let mut t = nix::sys::termios::tcgetattr(&slave).map_err(io("tcgetattr of the modem"))?;
        nix::sys::termios::cfmakeraw(&mut t);
        nix::sys::termios::tcsetattr(&slave, nix::sys::termios::SetArg::TCSANOW, &t)
            .map_err(io("tcsetattr of the modem"))?;
        nix::sys::stat::fchmod(&slave, nix::sys::stat::Mode::from_bits_truncate(0o660))
            .map_err(io("chmod the modem tty"))?;
        if let Some(r) = fds.records.get_mut(NAME) {
            r.fds.push(master.as_raw_fd());
        }
        self.tty = Some((master, slave));
        Ok(())
    }
}

// -------------------------------------------------------------- the switchboard

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallState {
    Ringing,
    Active,
}

/// Which line a call is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// Between two VPs, inside cellsd.
    Cells,
    /// The device's modem (the cellular number).
    Cellular,
    /// The SIP server (`cellsd --sip`).
    Sip,
}

#[derive(Debug, Clone, Serialize)]
pub struct Call {
    pub id: u64,
    pub via: Via,
    /// The SIP Call-ID (a SIP call).
    #[serde(skip)]
    sip_id: String,
    /// The calling VP and its number (the caller ID).
    pub from_vp: String,
    pub from: String,
    /// The called VP and the number dialled.
    pub to_vp: String,
    pub to: String,
    pub state: CallState,
    #[serde(skip)]
    started: Instant,
    #[serde(skip)]
    rung: Instant,
}

#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub from_vp: String,
    pub from: String,
    pub to_vp: String,
    pub to: String,
    pub text: String,
}

struct VpLine {
    master: OwnedFd,
    modem: Modem,
}

#[derive(Default, Serialize, Deserialize)]
struct Numbers {
    numbers: BTreeMap<String, String>,
    /// The VP the cellular line belongs to (`cellctl phone assign VP`).
    #[serde(default)]
    cellular: Option<String>,
}

/// The device's modem (`cellsd --modem TTY`): its state as it reports it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CellularReport {
    pub modem: String,
    pub registered: bool,
    pub operator: String,
    pub signal: u8,
    pub number: String,
    /// The VP its calls and messages go to.
    pub owner: Option<String>,
    pub error: Option<String>,
}

/// The device's modem, driven with the same AT commands.
struct Cellular {
    fd: OwnedFd,
    report: CellularReport,
    buf: Vec<u8>,
    /// The number of the +CLIP / +CMT line just seen (its text follows).
    cmt_from: Option<String>,
    /// A message waiting for the modem's "> ".
    sms_text: Option<String>,
    polled: Instant,
}

impl Cellular {
    fn send(&mut self, at: &str) {
        match nix::unistd::write(&self.fd, at.as_bytes()) {
            // A full buffer (the modem is slow): this poll is lost.
            Ok(_) | Err(nix::errno::Errno::EAGAIN) => {}
            // The modem is gone: no line until it answers again.
            Err(e) => {
                self.report.error = Some(format!("write to the modem: {e}"));
                self.report.registered = false;
            }
        }
    }
}

struct State {
    vps: BTreeMap<String, VpLine>,
    cellular: Option<Cellular>,
    numbers: Numbers,
    calls: Vec<Call>,
    messages: Vec<Message>,
    next_id: u64,
    /// Failed requests and refusals, for `cellctl phone` (the last few).
    log: Vec<String>,
    /// The VoIP line (`cellsd --sip`).
    sip: Option<Arc<voip::Sip>>,
}

/// What `cellctl phone` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub cellular: Option<CellularReport>,
    /// The VoIP line: server, each number's registration.
    pub sip: Option<voip::SipReport>,
    pub vps: Vec<VpReport>,
    pub calls: Vec<Call>,
    pub messages: Vec<Message>,
    pub log: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VpReport {
    pub vp: String,
    pub number: String,
    pub running: bool,
}

/// A VP is rung (vp, caller's number): the manager's signal.
pub type RingHook = Arc<dyn Fn(&str, &str) + Send + Sync>;
/// The VPs in an active call changed: the audio device's (a call
/// monopolizes audio).
pub type CallsHook = Arc<dyn Fn(Vec<String>) + Send + Sync>;
/// The calls ringing in VPs changed (VP, caller's number): the panel's
/// notice of who is calling.
pub type RingingHook = Arc<dyn Fn(Vec<(String, String)>) + Send + Sync>;

pub struct Switchboard {
    state: Mutex<State>,
    file: PathBuf,
    hook: Mutex<Option<RingHook>>,
    calls_hook: Mutex<Option<CallsHook>>,
    /// What the calls hook was last told.
    in_call: Mutex<Vec<String>>,
    ringing_hook: Mutex<Option<RingingHook>>,
    /// What the ringing hook was last told.
    ringing: Mutex<Vec<(String, String)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn write_all(fd: &OwnedFd, mut data: &[u8]) {
    // The master is non-blocking: a VP that does not read its modem loses
    // what does not fit (as a real modem's URCs are lost), never stalls us.
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) if n > 0 => data = &data[n..],
            _ => return,
        }
    }
}

/// A number as cells keeps it: digits with an optional leading '+'.
pub fn check_number(n: &str) -> Result<String, String> {
    let digits = n.strip_prefix('+').unwrap_or(n);
    if digits.is_empty() || digits.len() > 15 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "'{n}' is not a phone number: give up to 15 digits, optionally after '+', e.g. +15550100"
        ));
    }
    Ok(n.to_string())
}

impl State {
    fn line(&self, vp: &str) -> Line {
        if let Some(c) = self
            .cellular
            .as_ref()
            .filter(|c| c.report.registered && self.numbers.cellular.as_deref() == Some(vp))
        {
            return Line {
                registered: true,
                number: c.report.number.clone(),
                operator: c.report.operator.clone(),
                signal: c.report.signal,
            };
        }
        let number = self.numbers.numbers.get(vp).cloned().unwrap_or_default();
        Line {
            registered: !number.is_empty(),
            number,
            operator: "cells".into(),
            signal: 25,
        }
    }

    /// Whether `vp` has the cellular line, and it is up.
    fn on_cellular(&self, vp: &str) -> bool {
        self.numbers.cellular.as_deref() == Some(vp)
            && self.cellular.as_ref().is_some_and(|c| c.report.registered)
    }

    /// A line the device's modem sent.
    fn modem_line(&mut self, line: &str) -> Option<(String, String)> {
        let owner = self.numbers.cellular.clone();
        let c = self.cellular.as_mut()?;
        let field = |s: &str| {
            s.split(',')
                .map(|f| f.trim().trim_matches('"').to_string())
                .collect::<Vec<_>>()
        };
        if let Some(from) = c.cmt_from.take() {
            // The text of the +CMT just before.
            let (to, text) = (c.report.number.clone(), line.to_string());
            if let Some(o) = owner.clone().filter(|o| self.vps.contains_key(o)) {
                self.send(
                    &o,
                    &Event::Sms {
                        from: from.clone(),
                        text: text.clone(),
                    },
                );
                self.messages.push(Message {
                    from_vp: String::new(),
                    from,
                    to_vp: o,
                    to,
                    text,
                });
            } else {
                self.note(format!("a message from {from} on the cellular line: no VP has the line (cellctl phone assign VP)"));
            }
            return None;
        }
        if let Some(v) = line.strip_prefix("+CREG:") {
            let f = field(v);
            c.report.registered = matches!(f.get(1).map(String::as_str), Some("1") | Some("5"));
            if c.report.registered {
                c.report.error = None;
            }
        } else if let Some(v) = line.strip_prefix("+COPS:") {
            c.report.operator = field(v).get(2).cloned().unwrap_or_default();
        } else if let Some(v) = line.strip_prefix("+CSQ:") {
            c.report.signal = field(v).first().and_then(|x| x.parse().ok()).unwrap_or(99);
        } else if let Some(v) = line.strip_prefix("+CNUM:") {
            c.report.number = field(v).get(1).cloned().unwrap_or_default();
        } else if let Some(v) = line.strip_prefix("+CMT:") {
            c.cmt_from = field(v).first().cloned();
        } else if let Some(v) = line.strip_prefix("+CLIP:") {
            let from = field(v).first().cloned().unwrap_or_default();
            let to = c.report.number.clone();
            let Some(o) = owner.filter(|o| self.vps.contains_key(o)) else {
                self.note(format!("a call from {from} on the cellular line: no VP has the line (cellctl phone assign VP)"));
                return None;
            };
            let now = Instant::now();
            match self
                .calls
                .iter_mut()
                .find(|x| x.via == Via::Cellular && x.to_vp == o)
            {
                // The modem rings again: so does the VP (one signal per call).
                Some(x) if x.state == CallState::Ringing => {
                    x.rung = now;
                    self.send(&o, &Event::Ring { from });
                    return None;
                }
                Some(_) => return None,
                None => {
                    if self.calls.iter().any(|x| x.from_vp == o || x.to_vp == o) {
                        return None; // busy: the modem keeps ringing
                    }
                    self.new_call(
                        Via::Cellular,
                        String::new(),
                        [(String::new(), from.clone()), (o.clone(), to)],
                    );
                }
            }
            self.send(&o, &Event::Ring { from: from.clone() });
            return Some((o, from));
        } else if let Some(v) = line.strip_prefix("+CLCC:") {
            let f = field(v);
            if f.get(2).map(String::as_str) == Some("0") {
                for x in self.calls.iter_mut().filter(|x| x.via == Via::Cellular) {
                    x.state = CallState::Active;
                }
            }
        } else if line == "NO CARRIER" || line == "BUSY" || line == "NO ANSWER" {
            let (gone, keep): (Vec<Call>, Vec<Call>) = std::mem::take(&mut self.calls)
                .into_iter()
                .partition(|x| x.via == Via::Cellular);
            self.calls = keep;
            for x in gone {
                let vp = if x.from_vp.is_empty() {
                    x.to_vp
                } else {
                    x.from_vp
                };
                self.send(
                    &vp,
                    &Event::Ended {
                        busy: line == "BUSY",
                    },
                );
            }
        } else if line.starts_with("+CME ERROR")
            || line.starts_with("+CMS ERROR")
            || line == "ERROR"
        {
            c.report.error = Some(format!("the modem said {line}"));
        }
        None
    }

    /// Read the device's modem; ask it for its state now and then.
    fn serve_cellular(&mut self) -> Vec<(String, String)> {
        let mut rung = Vec::new();
        let Some(c) = self.cellular.as_mut() else {
            return rung;
        };
        let mut b = [0u8; 1024];
        loop {
            match nix::unistd::read(&c.fd, &mut b) {
                Ok(0) => break,
                Ok(n) => c.buf.extend_from_slice(&b[..n]),
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(e) => {
                    c.report.error = Some(format!("read the modem: {e}"));
                    c.report.registered = false;
                    break;
                }
            }
        }
        // The SMS prompt has no line end.
        if c.sms_text.is_some() && c.buf.windows(2).any(|w| w == b"> ") {
            c.buf.clear();
            if let Some(t) = c.sms_text.take() {
                c.send(&format!("{t}\x1a"));
            }
        }
        let mut lines = Vec::new();
        while let Some(i) = c.buf.iter().position(|x| *x == b'\n') {
            let l: Vec<u8> = c.buf.drain(..=i).collect();
            let l = String::from_utf8_lossy(&l).trim().to_string();
            if !l.is_empty() {
                lines.push(l);
            }
        }
        if c.buf.len() > 4096 {
            c.buf.clear();
        }
        let poll_every = if self.calls.iter().any(|x| x.via == Via::Cellular) {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(10)
        };
        if c.polled.elapsed() >= poll_every {
            c.polled = Instant::now();
            c.send("AT+CREG?\rAT+COPS?\rAT+CSQ\rAT+CNUM\r");
            if self.calls.iter().any(|x| {
                x.via == Via::Cellular && x.to_vp.is_empty() && x.state == CallState::Ringing
            }) {
                if let Some(c) = self.cellular.as_mut() {
                    c.send("AT+CLCC\r");
                }
            }
        }
        for l in lines {
            if let Some(r) = self.modem_line(&l) {
                rung.push(r);
            }
        }
        rung
    }

    /// A new call, ringing from now on.
    fn new_call(&mut self, via: Via, sip_id: String, ends: [(String, String); 2]) {
        let [(from_vp, from), (to_vp, to)] = ends;
        self.next_id += 1;
        let now = Instant::now();
        self.calls.push(Call {
            id: self.next_id,
            via,
            sip_id,
            from_vp,
            from,
            to_vp,
            to,
            state: CallState::Ringing,
            started: now,
            rung: now,
        });
    }

    fn sip_send(&self, c: voip::Cmd) {
        if let Some(s) = &self.sip {
            s.send(c);
        }
    }

    /// Keep the running VPs' numbers registered with the SIP server.
    fn sip_numbers(&self) {
        if self.sip.is_none() {
            return; // no SIP line: nothing to compute on a VP's start
        }
        let list = self
            .vps
            .keys()
            .filter_map(|v| self.numbers.numbers.get(v).cloned())
            .collect();
        self.sip_send(voip::Cmd::Numbers(list));
    }

    fn modem_send(&mut self, at: &str) {
        if let Some(c) = self.cellular.as_mut() {
            c.send(at);
        }
    }

    fn views(&self, vp: &str) -> Vec<CallView> {
        self.calls
            .iter()
            .filter_map(|c| {
                let incoming = c.to_vp == vp;
                if !incoming && c.from_vp != vp {
                    return None;
                }
                Some(CallView {
                    incoming,
                    state: match (c.state, incoming) {
                        (CallState::Active, _) => 0,
                        (CallState::Ringing, true) => 4,
                        (CallState::Ringing, false) => 3,
                    },
                    number: if incoming {
                        c.from.clone()
                    } else {
                        c.to.clone()
                    },
                })
            })
            .collect()
    }

    fn vp_of(&self, number: &str) -> Option<String> {
        self.numbers
            .numbers
            .iter()
            .find(|(_, n)| n.as_str() == number)
            .map(|(v, _)| v.clone())
    }

    fn send(&mut self, vp: &str, e: &Event) {
        if let Some(l) = self.vps.get_mut(vp) {
            let out = l.modem.event(e);
            write_all(&l.master, &out);
        }
    }

    fn note(&mut self, s: String) {
        tracing::info!("telephony: {s}");
        self.log.push(s);
        if self.log.len() > 20 {
            self.log.remove(0);
        }
    }

    /// End `vp`'s call; the other side hears NO CARRIER.
    fn hang_up(&mut self, vp: &str) {
        let (gone, keep): (Vec<Call>, Vec<Call>) = std::mem::take(&mut self.calls)
            .into_iter()
            .partition(|c| c.from_vp == vp || c.to_vp == vp);
        self.calls = keep;
        for c in gone {
            let other = if c.from_vp == vp {
                &c.to_vp
            } else {
                &c.from_vp
            };
            match c.via {
                Via::Cellular => self.modem_send("ATH\r"),
                Via::Sip => self.sip_send(voip::Cmd::Hangup { call_id: c.sip_id }),
                Via::Cells => self.send(&other.clone(), &Event::Ended { busy: false }),
            }
        }
    }

    /// A request of `vp`'s modem (or of the API on its behalf). Returns the
    /// VP rung and the caller's number, for the signal.
    fn request(&mut self, vp: &str, r: Request) -> Result<Option<(String, String)>, String> {
        let mine = self.numbers.numbers.get(vp).cloned().unwrap_or_default();
        match r {
            Request::Dial(n) => {
                if mine.is_empty() {
                    return Err(format!(
                        "{vp} has no number: set one with `cellctl phone number {vp} NUMBER`"
                    ));
                }
                if self.calls.iter().any(|c| c.from_vp == vp || c.to_vp == vp) {
                    return Err(format!("{vp} is already in a call: hang up first"));
                }
                let Some(to) = self.vp_of(&n).filter(|t| self.vps.contains_key(t)) else {
                    if self.on_cellular(vp) {
                        let from = self.line(vp).number;
                        self.modem_send(&format!("ATD{n};\r"));
                        self.new_call(
                            Via::Cellular,
                            String::new(),
                            [(vp.to_string(), from), (String::new(), n)],
                        );
                        return Ok(None);
                    }
                    if self.sip.is_some() && self.vp_of(&n).is_none() {
                        let call_id = format!("{}@cellsd", voip::random_hex(8));
                        self.sip_send(voip::Cmd::Invite {
                            call_id: call_id.clone(),
                            from: mine.clone(),
                            to: n.clone(),
                        });
                        self.new_call(
                            Via::Sip,
                            call_id,
                            [(vp.to_string(), mine), (String::new(), n)],
                        );
                        return Ok(None);
                    }
                    self.send(vp, &Event::Ended { busy: false });
                    return Err(format!(
                        "{vp} dialled {n}: no running VP has that number{}",
                        match &self.numbers.cellular {
                            Some(o) if o != vp =>
                                format!(" (only {o}'s calls go out on the cellular line)"),
                            _ if self.cellular.is_none() =>
                                " (and the device has no modem: cellsd --modem TTY)".to_string(),
                            _ => String::new(),
                        }
                    ));
                };
                if to == vp || self.calls.iter().any(|c| c.from_vp == to || c.to_vp == to) {
                    self.send(vp, &Event::Ended { busy: true });
                    return Err(format!("{vp} dialled {n}: busy"));
                }
                self.new_call(
                    Via::Cells,
                    String::new(),
                    [(vp.to_string(), mine.clone()), (to.clone(), n)],
                );
                self.send(&to, &Event::Ring { from: mine.clone() });
                Ok(Some((to, mine)))
            }
            Request::Answer => {
                match self
                    .calls
                    .iter_mut()
                    .find(|c| c.to_vp == vp && c.state == CallState::Ringing)
                {
                    Some(c) => {
                        c.state = CallState::Active;
                        let (via, call_id) = (c.via, c.sip_id.clone());
                        match via {
                            Via::Cellular => self.modem_send("ATA\r"),
                            Via::Sip => self.sip_send(voip::Cmd::Answer { call_id }),
                            Via::Cells => {}
                        }
                        Ok(None)
                    }
                    None => Err(format!("{vp} has no call ringing")),
                }
            }
            Request::Hangup => {
                self.hang_up(vp);
                Ok(None)
            }
            Request::Sms { to, text } => {
                if mine.is_empty() {
                    return Err(format!(
                        "{vp} has no number: set one with `cellctl phone number {vp} NUMBER`"
                    ));
                }
                let Some(to_vp) = self.vp_of(&to).filter(|t| self.vps.contains_key(t)) else {
                    if self.on_cellular(vp) {
                        let from = self.line(vp).number;
                        self.modem_send(&format!("AT+CMGS=\"{to}\"\r"));
                        if let Some(c) = self.cellular.as_mut() {
                            c.sms_text = Some(text.clone());
                        }
                        self.messages.push(Message {
                            from_vp: vp.to_string(),
                            from,
                            to_vp: String::new(),
                            to,
                            text,
                        });
                        return Ok(None);
                    }
                    if self.sip.is_some() && self.vp_of(&to).is_none() {
                        self.sip_send(voip::Cmd::Message {
                            from: mine.clone(),
                            to: to.clone(),
                            text: text.clone(),
                        });
                        self.messages.push(Message {
                            from_vp: vp.to_string(),
                            from: mine,
                            to_vp: String::new(),
                            to,
                            text,
                        });
                        return Ok(None);
                    }
                    return Err(format!("{vp} texted {to}: no running VP has that number"));
                };
                self.send(
                    &to_vp,
                    &Event::Sms {
                        from: mine.clone(),
                        text: text.clone(),
                    },
                );
                self.messages.push(Message {
                    from_vp: vp.to_string(),
                    from: mine,
                    to_vp,
                    to,
                    text,
                });
                if self.messages.len() > KEEP_MESSAGES {
                    self.messages.remove(0);
                }
                Ok(None)
            }
        }
    }
}

impl Switchboard {
    /// Start the thread that serves every VP's modem.
    pub fn new(
        state_dir: &Path,
        modem: Option<&Path>,
        sip: Option<voip::SipConfig>,
        mixer: Option<Arc<crate::devices::audio::Mixer>>,
    ) -> Result<Arc<Self>, DeviceError> {
        let cellular = match modem {
            Some(p) => Some(open_modem(p)?),
            None => None,
        };
        let file = state_dir.join("telephony.json");
        let numbers: Numbers = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut sip_error = None;
        let sb = Arc::new_cyclic(|weak: &std::sync::Weak<Switchboard>| {
            let board: std::sync::Weak<dyn voip::Board> = weak.clone();
            let sip = sip.and_then(|c| match voip::Sip::start(c, board, mixer) {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    sip_error = Some(e);
                    None
                }
            });
            Self {
                state: Mutex::new(State {
                    vps: BTreeMap::new(),
                    cellular,
                    numbers,
                    calls: Vec::new(),
                    messages: Vec::new(),
                    next_id: 0,
                    log: Vec::new(),
                    sip,
                }),
                file,
                hook: Mutex::new(None),
                calls_hook: Mutex::new(None),
                in_call: Mutex::new(Vec::new()),
                ringing_hook: Mutex::new(None),
                ringing: Mutex::new(Vec::new()),
            }
        });
        if let Some(e) = sip_error {
            return Err(DeviceError::Refused(format!(
                "the SIP line: {e}; fix --sip or leave it out"
            )));
        }
        let weak = Arc::downgrade(&sb);
        std::thread::Builder::new()
            .name("telephony".into())
            .spawn(move || loop {
                let Some(sb) = weak.upgrade() else { return };
                let fds: Vec<RawFd> = {
                    let st = lock(&sb.state);
                    st.vps
                        .values()
                        .map(|l| l.master.as_raw_fd())
                        // A modem that is gone would wake us at once,
                        // for ever: it is only polled for (every 10 s).
                        .chain(
                            st.cellular
                                .as_ref()
                                .filter(|c| c.report.error.is_none() || c.report.registered)
                                .map(|c| c.fd.as_raw_fd()),
                        )
                        .collect()
                };
                drop(sb);
                let mut pfds: Vec<libc::pollfd> = fds
                    .iter()
                    .map(|fd| libc::pollfd {
                        fd: *fd,
                        events: libc::POLLIN,
                        revents: 0,
                    })
                    .collect();
                // SAFETY: pfds is a valid array of pollfd of the given length.
                unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 200) };
                let Some(sb) = weak.upgrade() else { return };
                sb.serve_once();
            })
            .map_err(io("start the telephony thread"))?;
        Ok(sb)
    }

    pub fn set_ring_hook(&self, hook: RingHook) {
        *lock(&self.hook) = Some(hook);
    }

    pub fn set_calls_hook(&self, hook: CallsHook) {
        *lock(&self.calls_hook) = Some(hook);
    }

    pub fn set_ringing_hook(&self, hook: RingingHook) {
        *lock(&self.ringing_hook) = Some(hook);
    }

    /// Tell the audio device who is in an active call, and the panel who
    /// is being called, if that changed.
    fn calls_changed(&self) {
        let ringing: Vec<(String, String)> = lock(&self.state)
            .calls
            .iter()
            .filter(|c| c.state == CallState::Ringing && !c.to_vp.is_empty())
            .map(|c| (c.to_vp.clone(), c.from.clone()))
            .collect();
        let mut last = lock(&self.ringing);
        if *last != ringing {
            *last = ringing.clone();
            drop(last);
            if let Some(h) = lock(&self.ringing_hook).clone() {
                h(ringing);
            }
        } else {
            drop(last);
        }
        let mut now: Vec<String> = lock(&self.state)
            .calls
            .iter()
            .filter(|c| c.state == CallState::Active)
            .flat_map(|c| [c.from_vp.clone(), c.to_vp.clone()])
            .collect();
        now.sort();
        now.dedup();
        let mut last = lock(&self.in_call);
        if *last != now {
            *last = now.clone();
            drop(last);
            if let Some(h) = lock(&self.calls_hook).clone() {
                h(now);
            }
        }
    }

    fn ring(&self, rung: Option<(String, String)>) {
        if let (Some((vp, from)), Some(h)) = (rung, lock(&self.hook).clone()) {
            h(&vp, &from);
        }
    }

    /// Read every modem, answer, route; ring again, time out.
    fn serve_once(&self) {
        let mut rung = Vec::new();
        {
            let mut st = lock(&self.state);
            let names: Vec<String> = st.vps.keys().cloned().collect();
            for vp in names {
                let mut buf = [0u8; 1024];
                let mut input = Vec::new();
                if let Some(l) = st.vps.get(&vp) {
                    while let Ok(n) = nix::unistd::read(&l.master, &mut buf) {
                        if n == 0 || input.len() > 64 * 1024 {
                            break;
                        }
                        input.extend_from_slice(&buf[..n]);
                    }
                }
                if input.is_empty() {
                    continue;
                }
                let (line, views) = (st.line(&vp), st.views(&vp));
                let Some(l) = st.vps.get_mut(&vp) else {
                    continue;
                };
                let (out, reqs) = l.modem.input(&input, &line, &views);
                write_all(&l.master, &out);
                for r in reqs {
                    match st.request(&vp, r) {
                        Ok(r) => rung.push(r),
                        Err(e) => st.note(e),
                    }
                }
            }
            rung.extend(st.serve_cellular().into_iter().map(Some));
            // Ring again (calls from the cellular line ring as the modem
            // does); give up on calls nobody answers.
            let now = Instant::now();
            let mut again = Vec::new();
            let mut expired = Vec::new();
            for c in st
                .calls
                .iter_mut()
                .filter(|c| c.state == CallState::Ringing)
            {
                if now.duration_since(c.started) > RING_FOR {
                    // The side that is a VP (an outside caller has none).
                    expired.push(if c.from_vp.is_empty() {
                        c.to_vp.clone()
                    } else {
                        c.from_vp.clone()
                    });
                } else if now.duration_since(c.rung) >= RING_EVERY {
                    c.rung = now;
                    again.push((c.to_vp.clone(), c.from.clone()));
                }
            }
            for (vp, from) in again {
                st.send(&vp, &Event::Ring { from });
            }
            for vp in expired {
                st.hang_up(&vp);
            }
        }
        for r in rung {
            self.ring(r);
        }
        self.calls_changed();
    }

    /// The API on a VP's behalf (as if its dialer did it).
    pub fn request(&self, vp: &str, r: Request) -> Result<(), String> {
        let rung = {
            let mut st = lock(&self.state);
            if !st.vps.contains_key(vp) {
                return Err(format!(
                    "{vp} has no modem now: start it (and give it telephony=shared)"
                ));
            }
            st.request(vp, r)?
        };
        self.ring(rung);
        self.calls_changed();
        Ok(())
    }

    pub fn set_number(&self, vp: &str, number: &str) -> Result<(), String> {
        let n = check_number(number)?;
        let mut st = lock(&self.state);
        if let Some(other) = st.vp_of(&n).filter(|o| o != vp) {
            return Err(format!("{n} is {other}'s number: give {vp} another"));
        }
        st.numbers.numbers.insert(vp.to_string(), n);
        st.sip_numbers();
        self.save(&st.numbers)
    }

    /// Give the cellular line (its number, calls and messages) to `vp`.
    pub fn assign(&self, vp: &str) -> Result<(), String> {
        let mut st = lock(&self.state);
        if st.cellular.is_none() {
            return Err(
                "the device has no modem: start cellsd with --modem TTY (the baseband's AT tty)"
                    .into(),
            );
        }
        st.numbers.cellular = Some(vp.to_string());
        self.save(&st.numbers)
    }

    fn save(&self, n: &Numbers) -> Result<(), String> {
        let text = serde_json::to_vec_pretty(n).map_err(|e| e.to_string())?;
        crate::layout::write_atomic(&self.file, &text)
            .map_err(|e| format!("save {}: {e}", self.file.display()))
    }

    pub fn report(&self) -> Report {
        let st = lock(&self.state);
        let mut names: Vec<String> = st.numbers.numbers.keys().cloned().collect();
        for v in st.vps.keys() {
            if !names.contains(v) {
                names.push(v.clone());
            }
        }
        names.sort();
        Report {
            cellular: st.cellular.as_ref().map(|c| CellularReport {
                owner: st.numbers.cellular.clone(),
                ..c.report.clone()
            }),
            vps: names
                .into_iter()
                .map(|vp| VpReport {
                    number: st.numbers.numbers.get(&vp).cloned().unwrap_or_default(),
                    running: st.vps.contains_key(&vp),
                    vp,
                })
                .collect(),
            sip: st.sip.as_ref().map(|s| s.report()),
            calls: st.calls.clone(),
            messages: st.messages.clone(),
            log: st.log.clone(),
        }
    }

    /// A VP without a number gets the next free `+1555010NNN`.
    fn ensure_number(&self, st: &mut State, vp: &str) {
        if st.numbers.numbers.contains_key(vp) {
            return;
        }
        let n = (100..)
            .map(|i| format!("+1555010{i:03}"))
            .find(|n| st.vp_of(n).is_none())
            .unwrap_or_default();
        st.numbers.numbers.insert(vp.to_string(), n);
        if let Err(e) = self.save(&st.numbers) {
            tracing::warn!("telephony: {e}");
        }
    }
}

impl voip::Board for Switchboard {
    fn sip_incoming(&self, call_id: &str, to: &str, from: &str) -> Result<(), (u16, String)> {
        let rung = {
            let mut st = lock(&self.state);
            let Some(vp) = st.vp_of(to) else {
                st.note(format!(
                    "a SIP call from {from} to {to}: no VP has that number"
                ));
                return Err((404, "Not Found".into()));
            };
            if !st.vps.contains_key(&vp) {
                st.note(format!(
                    "a SIP call from {from} to {to}: {vp} is not running"
                ));
                return Err((480, "Temporarily Unavailable".into()));
            }
            if st.calls.iter().any(|c| c.from_vp == vp || c.to_vp == vp) {
                return Err((486, "Busy Here".into()));
            }
            st.new_call(
                Via::Sip,
                call_id.to_string(),
                [
                    (String::new(), from.to_string()),
                    (vp.clone(), to.to_string()),
                ],
            );
            st.send(
                &vp,
                &Event::Ring {
                    from: from.to_string(),
                },
            );
            (vp, from.to_string())
        };
        self.ring(Some(rung));
        self.calls_changed();
        Ok(())
    }

    fn sip_answered(&self, call_id: &str) {
        {
            let mut st = lock(&self.state);
            if let Some(c) = st.calls.iter_mut().find(|c| c.sip_id == call_id) {
                c.state = CallState::Active;
            }
        }
        self.calls_changed();
    }

    fn sip_ended(&self, call_id: &str, busy: bool, why: &str) {
        {
            let mut st = lock(&self.state);
            let Some(i) = st.calls.iter().position(|c| c.sip_id == call_id) else {
                return;
            };
            let c = st.calls.remove(i);
            let vp = if c.from_vp.is_empty() {
                c.to_vp
            } else {
                c.from_vp
            };
            st.send(&vp, &Event::Ended { busy });
            st.note(format!("{vp}'s SIP call: {why}"));
        }
        self.calls_changed();
    }

    fn sip_message(&self, to: &str, from: &str, text: &str) -> Result<(), (u16, String)> {
        let mut st = lock(&self.state);
        let Some(vp) = st.vp_of(to).filter(|v| st.vps.contains_key(v)) else {
            st.note(format!(
                "a SIP message from {from} to {to}: no running VP has that number"
            ));
            return Err((404, "Not Found".into()));
        };
        st.send(
            &vp,
            &Event::Sms {
                from: from.to_string(),
                text: text.to_string(),
            },
        );
        st.messages.push(Message {
            from_vp: String::new(),
            from: from.to_string(),
            to_vp: vp,
            to: to.to_string(),
            text: text.to_string(),
        });
        if st.messages.len() > KEEP_MESSAGES {
            st.messages.remove(0);
        }
        Ok(())
    }

    fn sip_note(&self, what: String) {
        lock(&self.state).note(what);
    }
}

/// Open the device's modem tty: raw, non-blocking, set up for the
/// switchboard (no echo, caller ID, text-mode messages shown at once).
fn open_modem(path: &Path) -> Result<Cellular, DeviceError> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            DeviceError::Refused(format!(
                "the modem {}: {e}; give the baseband's AT tty with --modem, or leave --modem out",
                path.display()
            ))
        })?;
    let fd: OwnedFd = f.into();
    if let Ok(mut t) = nix::sys::termios::tcgetattr(&fd) {
        nix::sys::termios::cfmakeraw(&mut t);
        let _ = nix::sys::termios::tcsetattr(&fd, nix::sys::termios::SetArg::TCSANOW, &t);
    }
    let mut c = Cellular {
        fd,
        report: CellularReport {
            modem: path.display().to_string(),
            ..Default::default()
        },
        buf: Vec::new(),
        cmt_from: None,
        sms_text: None,
        polled: Instant::now(),
    };
    c.send("ATE0\rAT+CLIP=1\rAT+CMGF=1\rAT+CNMI=2,2,0,0,0\rAT+CREG?\rAT+COPS?\rAT+CSQ\rAT+CNUM\r");
    Ok(c)
}

/// The registry's handle.
pub struct TelephonyDevice(pub Arc<Switchboard>);

impl HostDevice for TelephonyDevice {
    fn name(&self) -> &'static str {
        NAME
    }

    fn attach(&self, a: &Attach<'_>) -> Result<(), DeviceError> {
        let Some(fd) = a.fds.records.get(NAME).and_then(|r| r.fds.first()) else {
            return Ok(()); // telephony=none, or a VP of an older cellsd
        };
        let monitor = a.monitor()?;
        let master = crate::sys::pidfd_getfd(monitor, *fd).map_err(io("take the modem tty"))?;
        let fl = nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_GETFL)
            .map_err(io("the modem's flags"))?;
        let fl = nix::fcntl::OFlag::from_bits_truncate(fl) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_SETFL(fl))
            .map_err(io("the modem non-blocking"))?;
        let mut st = lock(&self.0.state);
        self.0.ensure_number(&mut st, a.vp);
        st.vps.insert(
            a.vp.to_string(),
            VpLine {
                master,
                modem: Modem::new(),
            },
        );
        st.sip_numbers();
        Ok(())
    }

    fn detach(&self, d: &Detach<'_>) {
        {
            let mut st = lock(&self.0.state);
            st.hang_up(d.vp);
            st.vps.remove(d.vp);
            st.sip_numbers();
        }
        self.0.calls_changed();
    }

    fn set_foreground(&self, _fg: Option<&str>) {}

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
