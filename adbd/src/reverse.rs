//! `reverse:` (the device side of `adb reverse`): the device listens on a
//! socket of its own (`tcp:PORT` on its loopback, or `localabstract:NAME`)
//! and, for every connection to it, opens a stream towards the host naming
//! the host's end (`tcp:PORT`, ...); the host accepts only what it asked to
//! be reversed. Commands, as adb's (`adb.cpp` handle_forward_request):
//!
//! - `reverse:forward[:norebind]:REMOTE;LOCAL` → `OKAY` (for `tcp:0` then
//!   the port chosen, as a length-prefixed string), or `FAIL` + reason;
//! - `reverse:killforward:REMOTE`, `reverse:killforward-all` → `OKAY`/`FAIL`;
//! - `reverse:list-forward` → one length-prefixed string, a line per
//!   forward: `SERIAL REMOTE LOCAL`.
//!
//! A forward belongs to the host connection that made it and ends with it.

use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::local::Local;
use crate::transport::{Connection, Stream};

/// Where a forward's connections go: (host connection, host-side name).
type Target = Arc<Mutex<(Connection, String)>>;

struct Forward {
    remote: String,
    target: Target,
    stop: Arc<AtomicBool>,
}

static FORWARDS: Mutex<Vec<Forward>> = Mutex::new(Vec::new());

fn table() -> std::sync::MutexGuard<'static, Vec<Forward>> {
    FORWARDS.lock().unwrap_or_else(|p| p.into_inner())
}

/// A protocol string: 4 hex digits of length, then the bytes.
pub fn protocol_string(s: &str) -> Vec<u8> {
    let mut v = format!("{:04x}", s.len()).into_bytes();
    v.extend_from_slice(s.as_bytes());
    v
}

pub fn fail(msg: &str) -> Vec<u8> {
    let mut v = b"FAIL".to_vec();
    v.extend(protocol_string(msg));
    v
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }
}

/// Bind the device's end. Returns the listener and, for `tcp:0`, the port.
fn bind(remote: &str) -> Result<(Listener, Option<u16>), String> {
    if let Some(p) = remote.strip_prefix("tcp:") {
        let port: u16 = p
            .parse()
            .map_err(|_| format!("bad port number '{p}' in '{remote}'"))?;
        let l = TcpListener::bind(("127.0.0.1", port))
            .map_err(|e| format!("cannot bind listener: {e}"))?;
        let chosen = (port == 0)
            .then(|| l.local_addr().ok().map(|a| a.port()))
            .flatten();
        let _ = l.set_nonblocking(true);
        return Ok((Listener::Tcp(l), chosen));
    }
    match Local::parse(remote) {
        Some(loc @ Local::Abstract(_)) => {
            let l = loc
                .listen()
                .map_err(|e| format!("cannot bind listener: {e}"))?;
            let _ = l.set_nonblocking(true);
            Ok((Listener::Unix(l), None))
        }
        _ => Err(format!(
            "cannot bind listener: '{remote}' is not tcp:PORT or localabstract:NAME"
        )),
    }
}

fn wait_readable(fd: RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one pollfd of ours.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

fn serve(listener: Listener, target: Target, stop: Arc<AtomicBool>) {
    loop {
        let conn = lock(&target).0.clone();
        if stop.load(Ordering::Relaxed) || conn.is_ended() {
            break;
        }
        if !wait_readable(listener.fd(), 200) {
            continue;
        }
        let accepted: Option<Box<dyn FnOnce(Stream) + Send>> = match &listener {
            Listener::Tcp(l) => l.accept().ok().map(|(s, _)| {
                let _ = s.set_nonblocking(false);
                Box::new(move |st: Stream| crate::relay::relay(st, s))
                    as Box<dyn FnOnce(Stream) + Send>
            }),
            Listener::Unix(l) => l.accept().ok().map(|(s, _)| {
                let _ = s.set_nonblocking(false);
                Box::new(move |st: Stream| crate::relay::relay(st, s))
                    as Box<dyn FnOnce(Stream) + Send>
            }),
        };
        let Some(run) = accepted else { continue };
        let (conn, local) = lock(&target).clone();
        std::thread::spawn(move || match conn.open(&local) {
            Ok(stream) => run(stream),
            Err(e) => eprintln!("adbd: reverse to {local}: {e}"),
        });
    }
    // Gone with its connection (or killed): out of the table.
    table().retain(|f| !Arc::ptr_eq(&f.stop, &stop));
    drop(listener);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Answer one `reverse:` command (without the prefix).
pub fn answer(cmd: &str, conn: &Connection) -> Vec<u8> {
    if cmd == "list-forward" {
        let mut text = String::new();
        for f in table().iter() {
            let t = lock(&f.target);
            if !t.0.is_ended() {
                text.push_str(&format!("host-{} {} {}\n", t.0.serial(), f.remote, t.1));
            }
        }
        return protocol_string(&text);
    }
    if cmd == "killforward-all" {
        for f in table().iter() {
            if lock(&f.target).0.serial() == conn.serial() {
                f.stop.store(true, Ordering::Relaxed);
            }
        }
        table().retain(|f| !f.stop.load(Ordering::Relaxed));
        return b"OKAY".to_vec();
    }
    if let Some(remote) = cmd.strip_prefix("killforward:") {
        let mut t = table();
        return match t.iter().position(|f| f.remote == remote) {
            Some(i) => {
                t[i].stop.store(true, Ordering::Relaxed);
                t.remove(i);
                b"OKAY".to_vec()
            }
            None => fail(&format!("listener '{remote}' not found")),
        };
    }
    let Some(spec) = cmd.strip_prefix("forward:") else {
        return fail(&format!("unknown reverse command '{cmd}'"));
    };
    let (norebind, spec) = match spec.strip_prefix("norebind:") {
        Some(s) => (true, s),
        None => (false, spec),
    };
    let Some((remote, local)) = spec.split_once(';') else {
        return fail(&format!("bad forward: '{spec}' (give REMOTE;LOCAL)"));
    };
    if local.is_empty() || local.starts_with('*') {
        return fail(&format!("bad forward destination '{local}'"));
    }
    {
        let t = table();
        if let Some(f) = t
            .iter()
            .find(|f| f.remote == remote && !remote.ends_with(":0"))
        {
            if norebind {
                return fail("cannot rebind existing socket");
            }
            *lock(&f.target) = (conn.clone(), local.to_string());
            return b"OKAY".to_vec();
        }
    }
    let (listener, chosen) = match bind(remote) {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    let name = match chosen {
        Some(p) => format!("tcp:{p}"),
        None => remote.to_string(),
    };
    let target: Target = Arc::new(Mutex::new((conn.clone(), local.to_string())));
    let stop = Arc::new(AtomicBool::new(false));
    table().push(Forward {
        remote: name.clone(),
        target: target.clone(),
        stop: stop.clone(),
    });
    std::thread::spawn(move || serve(listener, target, stop));
    let mut reply = b"OKAY".to_vec();
    if let Some(p) = chosen {
        reply.extend(protocol_string(&p.to_string()));
    }
    reply
}

pub fn run(cmd: &str, stream: Stream) {
    let reply = answer(cmd, &stream.connection());
    let _ = stream.send(&reply);
    stream.close();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_adbs() {
        assert_eq!(protocol_string("abc"), b"0003abc");
        assert_eq!(fail("no"), b"FAIL0002no");
    }
}
