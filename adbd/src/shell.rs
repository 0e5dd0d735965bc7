//! `shell:`, `shell,v2,...:` and `exec:` services (AOSP `adb/SERVICES.TXT`,
//! `shell_protocol.h`).
//!
//! Shell protocol v2 frames both directions as `[id: u8][len: u32 LE][data]`
//! so stdout, stderr and the exit status travel separately; v1 (`shell:`,
//! `exec:`) is a plain byte stream with stdout and stderr merged and no exit
//! status.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::transport::Stream;

pub const ID_STDIN: u8 = 0;
pub const ID_STDOUT: u8 = 1;
pub const ID_STDERR: u8 = 2;
pub const ID_EXIT: u8 = 3;
pub const ID_CLOSE_STDIN: u8 = 4;
pub const ID_WINDOW_SIZE: u8 = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellRequest {
    /// Shell protocol v2 framing.
    pub v2: bool,
    /// Run on a pseudo-terminal (interactive) rather than on pipes.
    pub pty: bool,
    pub term: Option<String>,
    /// Empty: an interactive shell.
    pub command: String,
}

/// Parse a service name: `shell:CMD`, `shell,v2,raw,TERM=x:CMD`, `exec:CMD`.
pub fn parse_service(name: &str) -> Option<ShellRequest> {
    if let Some(cmd) = name.strip_prefix("exec:") {
        return Some(ShellRequest {
            v2: false,
            pty: false,
            term: None,
            command: cmd.to_string(),
        });
    }
    let rest = name.strip_prefix("shell")?;
    let (args, command) = rest.split_once(':')?;
    let mut req = ShellRequest {
        v2: false,
        pty: command.is_empty(),
        term: None,
        command: command.to_string(),
    };
    for a in args.split(',').filter(|a| !a.is_empty()) {
        match a {
            "v2" => req.v2 = true,
            "raw" => req.pty = false,
            "pty" => req.pty = true,
            t if t.starts_with("TERM=") => req.term = Some(t[5..].to_string()),
            _ => {} // unknown arguments are ignored, as adbd does
        }
    }
    Some(req)
}

pub fn packet(id: u8, data: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(5 + data.len());
    p.push(id);
    p.extend_from_slice(&(data.len() as u32).to_le_bytes());
    p.extend_from_slice(data);
    p
}

/// Reassembles v2 packets from the host's WRTEs (a packet may span several).
#[derive(Default)]
pub struct PacketReader {
    buf: Vec<u8>,
}

impl PacketReader {
    pub fn push(&mut self, data: &[u8]) -> Vec<(u8, Vec<u8>)> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        loop {
            if self.buf.len() < 5 {
                break;
            }
            let len =
                u32::from_le_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
            if self.buf.len() < 5 + len {
                break;
            }
            let id = self.buf[0];
            let body = self.buf[5..5 + len].to_vec();
            self.buf.drain(..5 + len);
            out.push((id, body));
        }
        out
    }
}

/// "ROWSxCOLS,XPIXELSxYPIXELS" (adb's window-size packet).
pub fn parse_window_size(s: &str) -> Option<libc::winsize> {
    let (rc, px) = s.trim_end_matches('\0').split_once(',')?;
    let (r, c) = rc.split_once('x')?;
    let (x, y) = px.split_once('x')?;
    Some(libc::winsize {
        ws_row: r.parse().ok()?,
        ws_col: c.parse().ok()?,
        ws_xpixel: x.parse().ok()?,
        ws_ypixel: y.parse().ok()?,
    })
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fds.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn openpty() -> io::Result<(OwnedFd, OwnedFd)> {
    let (mut m, mut s) = (0, 0);
    // SAFETY: openpty fills two fds we then own.
    let r = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fds.
    let (m, s) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
    for fd in [&m, &s] {
        // SAFETY: fcntl on our fd.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok((m, s))
}

/// Hangs a command's process group up, unless the command was reaped:
/// the group id is the child's pid (it called setsid), which cannot be
/// reused while the child is a zombie, so the flag is set between "exited"
/// (waitid with WNOWAIT) and the reap.
struct Hangup {
    pid: libc::pid_t,
    reaped: std::sync::Mutex<bool>,
}

impl Hangup {
    fn hang_up(&self) {
        let reaped = self.reaped.lock().unwrap_or_else(|p| p.into_inner());
        if !*reaped {
            // SAFETY: kill of our own child's process group.
            unsafe { libc::kill(-self.pid, libc::SIGHUP) };
        }
    }

    /// Wait for the child to exit without reaping it, then mark it reaped.
    fn exited(&self) {
        // SAFETY: waitid on our child; WNOWAIT leaves it a zombie.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            while libc::waitid(
                libc::P_PID,
                self.pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            ) < 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
            {}
        }
        *self.reaped.lock().unwrap_or_else(|p| p.into_inner()) = true;
    }
}

/// Run a shell request on a stream until the command ends or the host
/// closes the stream (which hangs the command up).
pub fn run(shell: &str, req: ShellRequest, stream: Stream) {
    let stream = Arc::new(stream);
    if let Err(e) = run_inner(shell, &req, &stream) {
        let msg = format!("adbd: {e}\n");
        if req.v2 {
            let _ = stream.send(&packet(ID_STDERR, msg.as_bytes()));
            let _ = stream.send(&packet(ID_EXIT, &[1]));
        } else {
            let _ = stream.send(msg.as_bytes());
        }
    }
    stream.close();
}

fn run_inner(shell: &str, req: &ShellRequest, stream: &Arc<Stream>) -> io::Result<()> {
    let mut cmd = Command::new(shell);
    if req.command.is_empty() {
        cmd.arg("-l");
    } else {
        cmd.arg("-c").arg(&req.command);
    }
    if let Some(t) = &req.term {
        cmd.env("TERM", t);
    }
    // Readers: (packet id, fd). Writer: the child's stdin.
    let mut outputs: Vec<(u8, OwnedFd)> = Vec::new();
    let stdin: OwnedFd;
    let mut master_fd: Option<RawFd> = None;
    if req.pty {
        let (master, slave) = openpty()?;
        let slave_fd = slave.as_raw_fd();
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 || libc::ioctl(slave_fd, libc::TIOCSCTTY, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                for fd in 0..3 {
                    if libc::dup2(slave_fd, fd) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn()?;
        drop(slave);
        master_fd = Some(master.as_raw_fd());
        stdin = master.try_clone()?;
        outputs.push((ID_STDOUT, master));
        return supervise(req, stream, child, stdin, outputs, master_fd);
    }
    let (in_r, in_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    cmd.stdin(Stdio::from(in_r));
    if req.v2 {
        let (err_r, err_w) = pipe()?;
        cmd.stdout(Stdio::from(out_w)).stderr(Stdio::from(err_w));
        outputs.push((ID_STDOUT, out_r));
        outputs.push((ID_STDERR, err_r));
    } else {
        let out_w2 = out_w.try_clone()?;
        cmd.stdout(Stdio::from(out_w)).stderr(Stdio::from(out_w2));
        outputs.push((ID_STDOUT, out_r));
    }
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // The child's ends were moved into cmd; drop them in the parent.
    drop(cmd);
    stdin = in_w;
    supervise(req, stream, child, stdin, outputs, master_fd)
}

fn supervise(
    req: &ShellRequest,
    stream: &Arc<Stream>,
    mut child: std::process::Child,
    stdin: OwnedFd,
    outputs: Vec<(u8, OwnedFd)>,
    master: Option<RawFd>,
) -> io::Result<()> {
    let hangup = Arc::new(Hangup {
        pid: child.id() as libc::pid_t,
        reaped: std::sync::Mutex::new(false),
    });
    let v2 = req.v2;
    let pty = req.pty;

    // Host → child.
    {
        let stream = stream.clone();
        let hangup = hangup.clone();
        std::thread::spawn(move || {
            let mut stdin = Some(std::fs::File::from(stdin));
            let mut packets = PacketReader::default();
            while let Some(data) = stream.recv() {
                if !v2 {
                    if let Some(f) = stdin.as_mut() {
                        if f.write_all(&data).is_err() {
                            stdin = None;
                        }
                    }
                    continue;
                }
                for (id, body) in packets.push(&data) {
                    match id {
                        ID_STDIN => {
                            if let Some(f) = stdin.as_mut() {
                                if f.write_all(&body).is_err() {
                                    stdin = None;
                                }
                            }
                        }
                        // On a pty, closing stdin would also close output: send EOF (^D).
                        ID_CLOSE_STDIN if pty => {
                            if let Some(f) = stdin.as_mut() {
                                let _ = f.write_all(&[4]);
                            }
                        }
                        ID_CLOSE_STDIN => stdin = None,
                        ID_WINDOW_SIZE => {
                            if let (Some(fd), Some(ws)) =
                                (master, parse_window_size(&String::from_utf8_lossy(&body)))
                            {
                                // SAFETY: TIOCSWINSZ on the pty master we hold.
                                unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
                            }
                        }
                        _ => {}
                    }
                }
            }
            // The stream is closed: by the host (Ctrl-C, adb killed) the
            // command is hung up, or by us after the command ended.
            hangup.hang_up();
        });
    }

    // Child → host, one thread per output.
    let pumps: Vec<_> = outputs
        .into_iter()
        .map(|(id, fd)| {
            let stream = stream.clone();
            std::thread::spawn(move || {
                let mut f = std::fs::File::from(fd);
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match f.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            let r = if v2 {
                                stream.send(&packet(id, &buf[..n]))
                            } else {
                                stream.send(&buf[..n])
                            };
                            if r.is_err() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        // EIO: the pty's last slave closed (the command ended).
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();

    for p in pumps {
        let _ = p.join();
    }
    hangup.exited();
    let status = child.wait()?;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    if v2 {
        let _ = stream.send(&packet(ID_EXIT, &[code as u8]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names() {
        let r = parse_service("shell,v2,raw:exit 3").unwrap();
        assert!(r.v2 && !r.pty);
        assert_eq!(r.command, "exit 3");
        let r = parse_service("shell,v2,TERM=xterm-256color,pty:").unwrap();
        assert!(r.v2 && r.pty);
        assert_eq!(r.term.as_deref(), Some("xterm-256color"));
        let r = parse_service("shell:ls -l").unwrap();
        assert!(!r.v2 && !r.pty);
        let r = parse_service("shell:").unwrap();
        assert!(r.pty && r.command.is_empty());
        // A command may itself contain ':'.
        assert_eq!(
            parse_service("shell,v2:echo a:b").unwrap().command,
            "echo a:b"
        );
        assert_eq!(parse_service("exec:cat").unwrap().command, "cat");
        assert!(parse_service("sync:").is_none());
        assert!(parse_service("shellx").is_none());
    }

    #[test]
    fn packets_span_writes() {
        let mut all = packet(ID_STDIN, b"hello");
        all.extend(packet(ID_CLOSE_STDIN, b""));
        let mut r = PacketReader::default();
        assert!(r.push(&all[..3]).is_empty());
        let got = r.push(&all[3..]);
        assert_eq!(
            got,
            vec![(ID_STDIN, b"hello".to_vec()), (ID_CLOSE_STDIN, vec![])]
        );
    }

    #[test]
    fn window_size() {
        let ws = parse_window_size("24x80,640x480\0").unwrap();
        assert_eq!(
            (ws.ws_row, ws.ws_col, ws.ws_xpixel, ws.ws_ypixel),
            (24, 80, 640, 480)
        );
        assert!(parse_window_size("garbage").is_none());
    }
}
