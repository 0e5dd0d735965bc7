//! A logd client: a reader on logdr (SEQPACKET) and the control socket
//! (logd, a stream), by raw system calls (no dependencies: the template's
//! tools are small static programs).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::request::Request;
use crate::Entry;

/// The VP's logd sockets.
pub const LOGDR: &str = "/dev/socket/logdr";
pub const LOGDW: &str = "/dev/socket/logdw";
pub const LOGD: &str = "/dev/socket/logd";

/// Connect a unix socket of type `ty` to `path`.
pub fn connect(path: &str, ty: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) returns a new fd or -1.
    let fd = unsafe { libc::socket(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a zeroed sockaddr_un filled within its size.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let b = path.as_bytes();
    if b.len() >= addr.sun_path.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "path too long"));
    }
    for (i, c) in b.iter().enumerate() {
        addr.sun_path[i] = *c as libc::c_char;
    }
    // SAFETY: connecting our socket to a valid address of the given size.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn send(fd: &OwnedFd, b: &[u8]) -> io::Result<()> {
    // SAFETY: sending our buffer on our socket.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            b.as_ptr().cast(),
            b.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Send a reader's request, then call `each` with every entry until the
/// log closes the connection (a dump) or `each` says stop (false).
pub fn read(fd: &OwnedFd, req: &Request, mut each: impl FnMut(Entry) -> bool) -> io::Result<()> {
    send(fd, req.encode().as_bytes())?;
    let mut buf = vec![0u8; crate::ENTRY_HEADER + crate::MAX_PAYLOAD + 64];
    loop {
        // SAFETY: receiving one packet into our buffer.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(());
        }
        if let Some(e) = Entry::decode(&buf[..n as usize]) {
            if !each(e) {
                return Ok(());
            }
        }
    }
}

/// One control command to logd; its answer.
pub fn control(cmd: &str) -> io::Result<String> {
    let fd = connect(LOGD, libc::SOCK_STREAM)?;
    let mut c = cmd.as_bytes().to_vec();
    c.push(0);
    send(&fd, &c)?;
    let mut out = Vec::new();
    let mut b = [0u8; 256];
    loop {
        // SAFETY: reading into our buffer.
        let n = unsafe { libc::read(fd.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) };
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&b[..n as usize]);
        if out.contains(&0) {
            break;
        }
    }
    let end = out.iter().position(|x| *x == 0).unwrap_or(out.len());
    Ok(String::from_utf8_lossy(&out[..end]).into_owned())
}

/// Write one entry as liblog does.
pub fn write(lid: u8, prio: u8, tag: &str, msg: &str) -> io::Result<()> {
    let fd = connect(LOGDW, libc::SOCK_DGRAM)?;
    let (sec, nsec) = crate::now();
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u16;
    send(
        &fd,
        &crate::writer::text(lid, tid, sec, nsec, prio, tag, msg),
    )
}
