//! `cellctl exec`'s side of a command's stdio: the command runs on pipes
//! (or a pty of the VP's own devpts) made for it, never on this process's
//! terminal; this relays between them and cellctl's own stdin, stdout and
//! stderr, as docker and podman do.
//!
//! The relay ends when the command has exited (`done` becomes readable)
//! and what it wrote has been read: everything it wrote before it exited
//! is in the pipe by then, so a non-blocking drain gets all of it, and a
//! daemon it left behind holding the pipe does not keep cellctl waiting.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on an fd we hold.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

enum Read {
    Data(usize),
    Again,
    End,
}

fn read(fd: RawFd, buf: &mut [u8]) -> Read {
    // SAFETY: reading into our own buffer.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n > 0 {
        return Read::Data(n as usize);
    }
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
        ) {
            return Read::Again;
        }
    }
    // 0, or EIO on a pty master once the slave side is closed.
    Read::End
}

/// Write to one of cellctl's own outputs; false once it cannot take more
/// (a closed pipe: the rest is discarded, as `cmd | head` expects).
fn out(fd: RawFd, data: &[u8]) -> bool {
    // SAFETY: fd 1 or 2 of this process, borrowed for the write.
    let mut f = std::mem::ManuallyDrop::new(unsafe {
        <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd)
    });
    f.write_all(data).is_ok()
}

/// Our stdin going to the command: buffered so that a command that does
/// not read its stdin never stalls the relay of its output.
struct Input {
    to: Option<OwnedFd>,
    buf: Vec<u8>,
    /// cellctl's stdin can still give data.
    open: bool,
}

impl Input {
    fn wants_read(&self) -> bool {
        self.open && self.buf.is_empty() && self.to.is_some()
    }
    fn read_stdin(&mut self, scratch: &mut [u8]) {
        match read(0, scratch) {
            Read::Data(n) => self.buf.extend_from_slice(&scratch[..n]),
            Read::Again => {}
            Read::End => self.open = false,
        }
    }
    fn flush(&mut self, close_at_eof: bool) {
        if let Some(to) = &self.to {
            if !self.buf.is_empty() {
                // SAFETY: writing our buffer to the command's stdin (non-blocking).
                let n = unsafe {
                    libc::write(to.as_raw_fd(), self.buf.as_ptr().cast(), self.buf.len())
                };
                if n > 0 {
                    self.buf.drain(..n as usize);
                } else if n < 0
                    && std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock
                {
                    // The command closed its stdin.
                    self.buf.clear();
                    self.open = false;
                    self.to = None;
                }
            }
        }
        // EOF from us becomes EOF for the command (a pty has no EOF to pass
        // on: its stdin then simply ends).
        if close_at_eof && !self.open && self.buf.is_empty() {
            self.to = None;
        }
    }
}

fn poll(fds: &mut [libc::pollfd]) {
    // SAFETY: fds is a valid array of pollfd for the duration of the call.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
}

fn pfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

const READY: libc::c_short = libc::POLLIN | libc::POLLHUP | libc::POLLERR;

/// Relay a command running on pipes: `stdin` (its stdin, to write; None:
/// it reads EOF at once), `outputs` (its stdout and stderr, to read).
/// `done` is readable (EOF) once the command has exited.
pub fn pipes(stdin: Option<OwnedFd>, outputs: [OwnedFd; 2], done: OwnedFd) {
    if let Some(s) = &stdin {
        set_nonblocking(s.as_raw_fd());
    }
    let mut outs: Vec<(Option<OwnedFd>, RawFd, bool)> = outputs
        .into_iter()
        .zip([1, 2])
        .map(|(fd, ours)| {
            set_nonblocking(fd.as_raw_fd());
            (Some(fd), ours, true)
        })
        .collect();
    let mut input = Input {
        open: stdin.is_some(),
        to: stdin,
        buf: Vec::new(),
    };
    let mut buf = vec![0u8; 65536];
    loop {
        let mut fds = vec![pfd(done.as_raw_fd(), libc::POLLIN)];
        if input.wants_read() {
            fds.push(pfd(0, libc::POLLIN));
        }
        if let (Some(to), false) = (&input.to, input.buf.is_empty()) {
            fds.push(pfd(to.as_raw_fd(), libc::POLLOUT));
        }
        for (fd, _, _) in &outs {
            if let Some(fd) = fd {
                fds.push(pfd(fd.as_raw_fd(), libc::POLLIN));
            }
        }
        poll(&mut fds);
        let ready = |fd: RawFd, what: libc::c_short| {
            fds.iter()
                .any(|p| p.fd == fd && p.revents & (what | libc::POLLHUP | libc::POLLERR) != 0)
        };
        let exited = ready(done.as_raw_fd(), libc::POLLIN);
        if input.wants_read() && ready(0, libc::POLLIN) {
            input.read_stdin(&mut buf);
        }
        input.flush(true);
        for (fd, ours, live) in outs.iter_mut() {
            let Some(f) = fd else { continue };
            if !exited && !ready(f.as_raw_fd(), libc::POLLIN) {
                continue;
            }
            // After the exit: everything left, without waiting for more.
            loop {
                match read(f.as_raw_fd(), &mut buf) {
                    Read::Data(n) => {
                        if *live {
                            *live = out(*ours, &buf[..n]);
                        }
                        if !exited {
                            break;
                        }
                    }
                    Read::Again => break,
                    Read::End => {
                        *fd = None;
                        break;
                    }
                }
            }
        }
        if exited {
            return;
        }
    }
}

/// Puts cellctl's terminal in raw mode while alive (keys go to the VP's
/// pty as they are typed; the VP's line discipline does the rest).
pub struct RawMode(Option<libc::termios>);

impl RawMode {
    pub fn enter() -> Self {
        // SAFETY: termios calls on fd 0 with a zeroed struct they fill.
        unsafe {
            if libc::isatty(0) != 1 {
                return RawMode(None);
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return RawMode(None);
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(0, libc::TCSANOW, &t);
            RawMode(Some(saved))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            // SAFETY: restoring the saved settings of fd 0.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, t) };
        }
    }
}

/// The size of cellctl's terminal, if it has one.
pub fn winsize() -> Option<(u16, u16)> {
    for fd in [0, 1, 2] {
        // SAFETY: winsize is plain integers: all zeros is a valid value.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ fills a winsize; a non-tty fails it.
        let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
        if r == 0 && ws.ws_col > 0 {
            return Some((ws.ws_row, ws.ws_col));
        }
    }
    None
}

/// Give the VP's pty cellctl's terminal size.
pub fn resize(master: RawFd) {
    if let Some((rows, cols)) = winsize() {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize.
        unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &ws) };
    }
}

/// Relay a command running on a pty of the VP: `master` both ways.
pub fn tty(master: OwnedFd, done: OwnedFd) {
    set_nonblocking(master.as_raw_fd());
    let m = master.as_raw_fd();
    let mut input = Input {
        to: master.try_clone().ok(),
        buf: Vec::new(),
        open: true,
    };
    let mut live = true;
    let mut reading = true;
    let mut buf = vec![0u8; 65536];
    loop {
        let mut fds = vec![pfd(done.as_raw_fd(), libc::POLLIN)];
        if input.wants_read() {
            fds.push(pfd(0, libc::POLLIN));
        }
        let mut ev = 0;
        if reading {
            ev |= libc::POLLIN;
        }
        if !input.buf.is_empty() {
            ev |= libc::POLLOUT;
        }
        if ev != 0 {
            fds.push(pfd(m, ev));
        }
        poll(&mut fds);
        let exited = fds[0].revents & READY != 0;
        if input.wants_read() && fds.iter().any(|p| p.fd == 0 && p.revents & READY != 0) {
            input.read_stdin(&mut buf);
        }
        input.flush(false);
        if reading {
            loop {
                match read(m, &mut buf) {
                    Read::Data(n) => {
                        if live {
                            live = out(1, &buf[..n]);
                        }
                        if !exited {
                            break;
                        }
                    }
                    Read::Again => break,
                    Read::End => {
                        reading = false;
                        break;
                    }
                }
            }
        }
        if exited {
            let _keep = &master;
            // A pty passes the slave's output on asynchronously: read until
            // the slave side is gone (EIO), or until nothing more comes for
            // a moment (a daemon left behind may hold the slave).
            while reading {
                let mut p = [pfd(m, libc::POLLIN)];
                // SAFETY: one pollfd, bounded wait.
                if unsafe { libc::poll(p.as_mut_ptr(), 1, 100) } <= 0 {
                    break;
                }
                match read(m, &mut buf) {
                    Read::Data(n) => {
                        if live {
                            live = out(1, &buf[..n]);
                        }
                    }
                    Read::Again => {}
                    Read::End => reading = false,
                }
            }
            return;
        }
    }
}
