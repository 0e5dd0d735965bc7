//! `cellctl console VP`: relay the terminal to the VP's console socket.
//!
//! On a terminal, stdin goes raw (every key reaches the VP, Ctrl-C too) and
//! Ctrl-] detaches. Without a terminal (a script), stdin is sent as is and
//! the command ends once the console has been quiet for a moment after stdin
//! ended.

use std::io::{IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::sys::termios::{self, SetArg, Termios};

use crate::{Failure, DETACH_KEY};

/// Restores the terminal mode when dropped (also on early return).
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> Option<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

/// Forward `input` to the console; stop at the detach key. Returns true if
/// the user detached, false at end of input.
pub fn forward_input(mut input: impl Read, mut console: impl Write, detach: bool) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        if detach {
            if let Some(pos) = chunk.iter().position(|b| *b == DETACH_KEY) {
                let _ = console.write_all(&chunk[..pos]);
                return true;
            }
        }
        if console.write_all(chunk).is_err() {
            return false;
        }
    }
}

pub fn attach(name: &str, stream: UnixStream) -> Result<(), Failure> {
    let tty = std::io::stdin().is_terminal();
    if tty {
        eprintln!(
            "Connected to the console of VP {name}. Detach with Ctrl-] . Press Enter for a prompt."
        );
    }
    let raw = if tty { RawMode::enter() } else { None };
    let reader = stream.try_clone()?;
    let writer = stream.try_clone()?;
    // Input in a thread: it may block on the terminal; output in this one.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let detached = forward_input(std::io::stdin().lock(), &writer, tty);
        let _ = done_tx.send(detached);
    });
    let mut out = std::io::stdout();
    let mut reader = reader;
    let mut buf = [0u8; 4096];
    let mut input_ended = false;
    loop {
        if let Ok(detached) = done_rx.try_recv() {
            if detached {
                break;
            }
            input_ended = true;
            // A script's input is over: collect the answer, then stop once
            // the console is quiet.
            let _ = reader.set_read_timeout(Some(Duration::from_millis(500)));
        } else if !input_ended {
            let _ = reader.set_read_timeout(Some(Duration::from_millis(100)));
        }
        match reader.read(&mut buf) {
            Ok(0) => {
                drop(raw);
                eprintln!("\r\n[console of VP {name} closed: the VP stopped]");
                return Ok(());
            }
            Ok(n) => {
                let _ = out.write_all(&buf[..n]);
                let _ = out.flush();
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                if input_ended {
                    break;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    drop(raw);
    if tty {
        eprintln!("\r\n[detached from VP {name}]");
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_key_stops_forwarding() {
        let mut sent = Vec::new();
        let detached = forward_input(&b"ls\n\x1dnot sent"[..], &mut sent, true);
        assert!(detached);
        assert_eq!(sent, b"ls\n");
    }

    #[test]
    fn without_a_terminal_everything_is_sent() {
        let mut sent = Vec::new();
        let detached = forward_input(&b"a\x1db"[..], &mut sent, false);
        assert!(!detached);
        assert_eq!(sent, b"a\x1db");
    }
}
