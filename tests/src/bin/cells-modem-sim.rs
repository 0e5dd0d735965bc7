//! `cells-modem-sim`: a cellular modem simulator for the telephony tests (a
//! test fixture, not part of cellsd). It makes a pty, prints the path of
//! its tty (first line of stdout), and answers 3GPP TS 27.007 AT commands
//! on it as a registered modem with the number +15559990000 on "SimNet".
//! Commands on stdin play the network's side:
//!   ring NUMBER      an incoming call from NUMBER (RING and +CLIP every 2 s)
//!   answer           the called party answers our outgoing call
//!   hangup           the far end hangs up (NO CARRIER)
//!   sms NUMBER TEXT  a message arrives (+CMT)
//! What the modem is asked is printed on stdout (`dial NUMBER`, `answered`,
//! `hung up`, `sms-out NUMBER TEXT`).

use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NUMBER: &str = "+15559990000";

#[derive(Default)]
struct Sim {
    /// (number, incoming, state: 0 active, 3 alerting, 4 incoming)
    call: Option<(String, bool, u8)>,
    rung: Option<Instant>,
    sms_to: Option<String>,
    sms_text: String,
    line: String,
}

fn say(fd: &OwnedFd, s: &str) {
    let _ = nix::unistd::write(fd, s.as_bytes());
}

fn toa(n: &str) -> u8 {
    if n.starts_with('+') {
        145
    } else {
        129
    }
}

fn command(sim: &mut Sim, fd: &OwnedFd, cmd: &str) {
    let up = cmd.to_ascii_uppercase();
    println!("got {up}");
    let ok = |body: &str| {
        if body.is_empty() {
            say(fd, "\r\nOK\r\n")
        } else {
            say(fd, &format!("\r\n{body}\r\n\r\nOK\r\n"))
        }
    };
    if let Some(n) = up.strip_prefix("ATD") {
        let n = n.trim_end_matches(';').to_string();
        println!("dial {n}");
        sim.call = Some((n, false, 3));
        return ok("");
    }
    if let Some(rest) = up.strip_prefix("AT+CMGS=") {
        sim.sms_to = Some(rest.trim_matches('"').to_string());
        sim.sms_text.clear();
        return say(fd, "\r\n> ");
    }
    match up.as_str() {
        "AT" | "ATE0" | "AT+CLIP=1" | "AT+CMGF=1" | "AT+CNMI=2,2,0,0,0" => ok(""),
        "AT+CREG?" => ok("+CREG: 0,1"),
        "AT+COPS?" => ok("+COPS: 0,0,\"SimNet\""),
        "AT+CSQ" => ok("+CSQ: 18,99"),
        "AT+CNUM" => ok(&format!("+CNUM: \"\",\"{NUMBER}\",145")),
        "ATA" => {
            if let Some(c) = sim.call.as_mut().filter(|c| c.1 && c.2 == 4) {
                c.2 = 0;
                println!("answered");
                ok("")
            } else {
                say(fd, "\r\nNO CARRIER\r\n")
            }
        }
        "ATH" | "AT+CHUP" => {
            if sim.call.take().is_some() {
                println!("hung up");
            }
            ok("")
        }
        "AT+CLCC" => {
            let body = sim
                .call
                .as_ref()
                .map(|(n, inc, st)| format!("+CLCC: 1,{},{st},0,0,\"{n}\",{}", *inc as u8, toa(n)))
                .unwrap_or_default();
            ok(&body)
        }
        _ => say(fd, "\r\nERROR\r\n"),
    }
    let _ = std::io::stdout().flush();
}

fn main() {
    let pty = match nix::pty::openpty(None, None) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cells-modem-sim: openpty: {e}");
            std::process::exit(1);
        }
    };
    let master: Arc<OwnedFd> = Arc::new(pty.master);
    let slave = pty.slave;
    if let Ok(mut t) = nix::sys::termios::tcgetattr(&slave) {
        nix::sys::termios::cfmakeraw(&mut t);
        let _ = nix::sys::termios::tcsetattr(&slave, nix::sys::termios::SetArg::TCSANOW, &t);
    }
    let path = std::fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd()))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    println!("{path}");
    let _ = std::io::stdout().flush();
    let sim = Arc::new(Mutex::new(Sim::default()));
    // The network's side, from stdin.
    {
        let (sim, fd) = (Arc::clone(&sim), Arc::clone(&master));
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                let mut s = sim.lock().unwrap_or_else(|p| p.into_inner());
                let mut w = line.splitn(3, ' ');
                match (w.next(), w.next(), w.next()) {
                    (Some("ring"), Some(n), _) => {
                        s.call = Some((n.to_string(), true, 4));
                        s.rung = None;
                    }
                    (Some("answer"), _, _) => {
                        if let Some(c) = s.call.as_mut() {
                            c.2 = 0;
                        }
                    }
                    (Some("hangup"), _, _) => {
                        s.call = None;
                        say(&fd, "\r\nNO CARRIER\r\n");
                    }
                    (Some("sms"), Some(n), Some(text)) => {
                        say(
                            &fd,
                            &format!("\r\n+CMT: \"{n}\",,\"26/12/07,10:00:00+00\"\r\n{text}\r\n"),
                        );
                    }
                    _ => eprintln!("cells-modem-sim: unknown command {line:?}"),
                }
            }
            std::process::exit(0);
        });
    }
    let mut buf = [0u8; 1024];
    loop {
        let mut pfd = [libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(pfd.as_mut_ptr(), 1, 200) };
        let mut s = sim.lock().unwrap_or_else(|p| p.into_inner());
        if pfd[0].revents & libc::POLLIN != 0 {
            let Ok(n) = nix::unistd::read(&*master, &mut buf) else {
                continue;
            };
            for &b in &buf[..n] {
                if s.sms_to.is_some() {
                    if b == 0x1a {
                        let to = s.sms_to.take().unwrap_or_default();
                        println!("sms-out {to} {}", s.sms_text.trim());
                        let _ = std::io::stdout().flush();
                        say(&master, "\r\n+CMGS: 7\r\n\r\nOK\r\n");
                    } else {
                        s.sms_text.push(b as char);
                    }
                } else if b == b'\r' {
                    let l = std::mem::take(&mut s.line);
                    let l = l.trim().to_string();
                    if !l.is_empty() {
                        command(&mut s, &master, &l);
                    }
                } else if b != b'\n' {
                    s.line.push(b as char);
                }
            }
        }
        // An incoming call rings every 2 s until answered or ended.
        let ring = match &s.call {
            Some((n, true, 4)) if s.rung.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) => {
                Some(n.clone())
            }
            _ => None,
        };
        if let Some(n) = ring {
            s.rung = Some(Instant::now());
            say(
                &master,
                &format!("\r\nRING\r\n\r\n+CLIP: \"{n}\",{}\r\n", toa(&n)),
            );
        }
    }
}
