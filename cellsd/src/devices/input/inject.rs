//! The raw injection socket `<run>/input.sock`: a source of input like a
//! real device, for test drivers and other programs that generate input
//! (`cellctl input` goes through D-Bus instead).
//!
//! SOCK_SEQPACKET; each message is one byte naming the device kind (`t` for
//! the touchscreen, `k` for keys), three zero bytes, then `struct
//! input_event`s exactly as a real device produces them: multitouch protocol
//! B in panel pixels for `t`, EV_KEY for `k`, each frame ending with
//! SYN_REPORT. Routing is the same as for a grabbed host device. The socket
//! is mode 0600 (0660 with group `cells`), like the control socket.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::evdev::{AbsRange, Class, Normalizer};
use super::event::*;
use super::router::SourceEvent;
use mux_fb::Geometry;

pub const KIND_TOUCH: u8 = b't';
pub const KIND_KEYS: u8 = b'k';
pub const HEADER: usize = 4;

pub fn listen(path: &Path) -> io::Result<OwnedFd> {
    let _ = std::fs::remove_file(path);
    // SAFETY: socket(2) returns a new fd or -1.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let c = crate::sys::cstr(path)?;
    // SAFETY: a zeroed sockaddr_un filled with a NUL-terminated path that fits.
    unsafe {
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = c.as_bytes_with_nul();
        if bytes.len() > addr.sun_path.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "socket path too long",
            ));
        }
        for (i, b) in bytes.iter().enumerate() {
            addr.sun_path[i] = *b as libc::c_char;
        }
        if libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        ) != 0
            || libc::listen(fd.as_raw_fd(), 16) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    crate::api::access::restrict_socket(path)?;
    Ok(fd)
}

pub fn accept(listener: &OwnedFd) -> Option<OwnedFd> {
    // SAFETY: accept4 on our listening socket; the new fd is owned below.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    // SAFETY: a fresh fd.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One connected injector: a source with a touchscreen and keys.
pub struct Client {
    fd: OwnedFd,
    touch: Normalizer,
    keys: Normalizer,
}

impl Client {
    pub fn new(fd: OwnedFd, source: u32, g: Geometry) -> Self {
        // Positions come in panel pixels: an identity scale.
        let x = AbsRange {
            min: 0,
            max: g.width as i32 - 1,
        };
        let y = AbsRange {
            min: 0,
            max: g.height as i32 - 1,
        };
        Self {
            fd,
            touch: Normalizer::new(source, Class::MultiTouch, x, y, g),
            keys: Normalizer::new(source, Class::Keys, x, y, g),
        }
    }

    pub fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Read every pending message; Err when the client is gone.
    pub fn read_frames(&mut self) -> io::Result<Vec<Vec<SourceEvent>>> {
        let mut frames = Vec::new();
        let mut buf = [0u8; HEADER + EVENT_SIZE * 64];
        loop {
            // SAFETY: receiving into our own buffer.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    return Ok(frames);
                }
                return Err(e);
            }
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "client gone"));
            }
            let msg = &buf[..n as usize];
            let norm = match msg.first() {
                Some(&KIND_TOUCH) => &mut self.touch,
                Some(&KIND_KEYS) => &mut self.keys,
                _ => continue, // not ours: ignored
            };
            for chunk in msg
                .get(HEADER..)
                .unwrap_or_default()
                .chunks_exact(EVENT_SIZE)
            {
                if let Some(ev) = InputEvent::from_bytes(chunk) {
                    if let Some(f) = norm.feed(&ev) {
                        if !f.is_empty() {
                            frames.push(f);
                        }
                    }
                }
            }
        }
    }
}

/// A message for the socket (what a client sends).
pub fn message(kind: u8, events: &[InputEvent]) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0];
    m.extend_from_slice(&to_bytes(events));
    m
}
