//! Run a command inside a running VP (`cellsd __exec`).
//!
//! Another re-exec'd, single-threaded helper. cellsd spawns it with one end
//! of a socket pair as its stdin and sends it an [`ExecRequest`] there
//! (never on its command line, which every host user can read), with the
//! VP ends of the command's stdin/stdout/stderr pipes attached — pipes that
//! cellsd made for this exec and whose other ends go to the caller: no fd
//! of the caller (a terminal, a socket) ever enters the VP.
//!
//! Order matters, so that nothing of the VP can reach a process with host
//! credentials: the helper makes itself non-dumpable, joins the VP's cgroup,
//! enters every namespace of the VP's init except that it stays outside the
//! pid namespace (it is not visible in the VP), becomes VP root and drops
//! the bounding set; only then it forks, and the child — the first thing
//! the VP can see — is already VP root, non-dumpable until it execs, in a
//! session of its own with a session keyring of its own. With a terminal
//! (`cellctl exec -t`) the command gets a pty of the VP's own devpts, whose
//! master the helper sends back to cellsd for the caller to relay.
//!
//! The helper forwards the signals it gets to the command and exits with
//! the command's status (128+N for signal N, 125 if it never ran).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{Gid, Uid};
use serde::{Deserialize, Serialize};

use crate::cgroup::VpCgroup;
use crate::monitor::{cloexec_from, exec_in_path, reset_signals, restrict_bounding_set};
use crate::sys;

/// A terminal's size (TIOCSWINSZ).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Winsize {
    pub rows: u16,
    pub cols: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecRequest {
    pub vp: String,
    pub init_pid: i32,
    pub init_start_time: u64,
    /// The VP has a user namespace (false for --privileged VPs).
    pub userns: bool,
    pub cgroup: VpCgroup,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub bounding: Vec<u32>,
    /// Some: the command runs on a pty of the VP's devpts of this size;
    /// None: on the three pipes sent with the request.
    pub tty: Option<Winsize>,
    /// The VP's seccomp filter, installed just before the exec.
    #[serde(default)]
    pub seccomp: Option<crate::seccomp::Filter>,
    /// Run as this user of the VP (uid, gid, groups) instead of VP root
    /// (an OCI exec's `process.user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<(u32, u32, Vec<u32>)>,
}

/// The helper's answer, once the command is forked (or could not be).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ExecReply {
    /// Sent with the pty master attached when the request asked for a tty.
    Started,
    Failed {
        error: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("bad exec message: {0}")]
    Message(String),
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> ExecError {
    move |source| ExecError::Io { what, source }
}

/// Largest request accepted (argv and environment).
const MAX_MESSAGE: usize = 4 << 20;

/// Send one message: a 4-byte little-endian length, then JSON; `fds` ride
/// on the length.
pub fn send_message<T: Serialize>(
    sock: &std::os::unix::net::UnixStream,
    msg: &T,
    fds: &[RawFd],
) -> Result<(), ExecError> {
    let body = serde_json::to_vec(msg).map_err(|e| ExecError::Message(e.to_string()))?;
    let len = (body.len() as u32).to_le_bytes();
    sys::send_fds(sock, &len, fds).map_err(io("send"))?;
    (&*sock).write_all(&body).map_err(io("send"))
}

/// Receive one message sent by [`send_message`], with its fds.
pub fn recv_message<T: for<'de> Deserialize<'de>>(
    sock: &std::os::unix::net::UnixStream,
    max_fds: usize,
) -> Result<(T, Vec<OwnedFd>), ExecError> {
    let mut len = [0u8; 4];
    let (n, fds) = sys::recv_fds(sock, &mut len, max_fds).map_err(io("receive"))?;
    if n == 0 {
        return Err(ExecError::Message(
            "the other side closed the socket".into(),
        ));
    }
    (&*sock).read_exact(&mut len[n..]).map_err(io("receive"))?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(ExecError::Message(format!("{len} bytes is too long")));
    }
    let mut body = vec![0u8; len];
    (&*sock).read_exact(&mut body).map_err(io("receive"))?;
    let msg = serde_json::from_slice(&body).map_err(|e| ExecError::Message(e.to_string()))?;
    Ok((msg, fds))
}

/// Entry point of `cellsd __exec`: the request comes on stdin (a socket).
/// Returns the process exit code.
pub fn main() -> i32 {
    // First of all: nothing of a less privileged user namespace may ptrace
    // or open /proc files of this process or its child until it execs.
    if let Err(e) = sys::set_non_dumpable() {
        tracing::error!("PR_SET_DUMPABLE: {e}");
        return 125;
    }
    // SAFETY: fd 0 is the socket cellsd gave us; nothing else owns it.
    let sock = unsafe { std::os::unix::net::UnixStream::from_raw_fd(0) };
    let (req, fds) = match recv_message::<ExecRequest>(&sock, 3) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("{e}");
            return 125;
        }
    };
    let fail = |error: String| -> i32 {
        let _ = send_message(&sock, &ExecReply::Failed { error }, &[]);
        125
    };
    let stdio: Option<[OwnedFd; 3]> = match (req.tty, <[OwnedFd; 3]>::try_from(fds)) {
        (Some(_), _) => None,
        (None, Ok(s)) => Some(s),
        (None, Err(_)) => return fail("the exec request came without its three pipes".into()),
    };
    let child = match enter_and_fork(&req, stdio, &sock) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    drop(sock);
    wait_forwarding(child)
}

/// Join the VP (see the module doc), fork the command; returns its pid
/// once the reply is sent.
fn enter_and_fork(
    req: &ExecRequest,
    stdio: Option<[OwnedFd; 3]>,
    sock: &std::os::unix::net::UnixStream,
) -> Result<libc::pid_t, String> {
    let pidfd =
        sys::pidfd_open(req.init_pid).map_err(|e| format!("VP {} is not running ({e})", req.vp))?;
    if sys::process_start_time(req.init_pid) != Some(req.init_start_time) {
        return Err(format!(
            "VP {} is not running (its init has exited)",
            req.vp
        ));
    }
    req.cgroup
        .add(std::process::id() as i32)
        .map_err(|e| format!("joining the VP's cgroup: {e}"))?;
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWCGROUP;
    if req.userns {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    sys::setns(&pidfd, flags.bits())
        .map_err(|e| format!("entering the namespaces of VP {}: {e}", req.vp))?;
    drop(pidfd);
    // VP credentials before anything of this process is visible in the VP
    // (the pid namespace applies to the child only).
    if req.userns {
        let (g, u) = (Gid::from_raw(0), Uid::from_raw(0));
        nix::unistd::setresgid(g, g, g)
            .and_then(|_| nix::unistd::setgroups(&[]))
            .and_then(|_| nix::unistd::setresuid(u, u, u))
            .map_err(|e| format!("becoming VP root: {e}"))?;
    }
    restrict_bounding_set(&req.bounding).map_err(|e| format!("dropping capabilities: {e}"))?;
    crate::sys::apply_vp_rlimits().map_err(|e| format!("the VP's resource limits: {e}"))?;
    let pty = match req.tty {
        Some(ws) => Some(open_pty(ws).map_err(|e| format!("a pty of the VP's devpts: {e}"))?),
        None => None,
    };

    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(s);
    }
    mask.add(Signal::SIGCHLD);
    mask.thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;

    // SAFETY: this helper is single-threaded.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if child == 0 {
        let fds: [RawFd; 3] = match (&pty, &stdio) {
            (Some((_, slave)), _) => [slave.as_raw_fd(); 3],
            (None, Some(s)) => [s[0].as_raw_fd(), s[1].as_raw_fd(), s[2].as_raw_fd()],
            (None, None) => [-1; 3],
        };
        let code = run_child(req, fds, pty.is_some());
        // SAFETY: _exit is always safe.
        unsafe { libc::_exit(code) };
    }
    drop(stdio);
    let master = pty.map(|(m, _slave)| m);
    let fds: Vec<RawFd> = master.iter().map(|m| m.as_raw_fd()).collect();
    // cellsd learns the command runs (and gets the master) only now; if it
    // is gone, the command runs on and its status is the helper's.
    let _ = send_message(sock, &ExecReply::Started, &fds);
    Ok(child)
}

/// Signals the helper passes on to the command.
const FORWARDED: [Signal; 7] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

fn wait_forwarding(child: libc::pid_t) -> i32 {
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(s);
    }
    mask.add(Signal::SIGCHLD);
    loop {
        let Ok(sig) = mask.wait() else { continue };
        if sig == Signal::SIGCHLD {
            let mut st = 0;
            // SAFETY: reaping our own child.
            let r = unsafe { libc::waitpid(child, &mut st, libc::WNOHANG) };
            if r == child {
                if libc::WIFEXITED(st) {
                    return libc::WEXITSTATUS(st);
                }
                if libc::WIFSIGNALED(st) {
                    return 128 + libc::WTERMSIG(st);
                }
            }
        } else {
            // SAFETY: forwarding a signal to our own child.
            unsafe { libc::kill(child, sig as i32) };
        }
    }
}

/// A new pty of the VP's own devpts (we are in the VP's mount namespace,
/// as VP root): the master, and the slave opened through it.
fn open_pty(ws: Winsize) -> std::io::Result<(OwnedFd, OwnedFd)> {
    // Non-blocking: a VP that put a FIFO at /dev/ptmx must not hang us.
    // SAFETY: open with a constant path; the fd is owned below.
    let raw = unsafe {
        libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd.
    let master = unsafe { OwnedFd::from_raw_fd(raw) };
    let unlock: libc::c_int = 0;
    let size = libc::winsize {
        ws_row: ws.rows,
        ws_col: ws.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: ioctls on the master with correctly typed arguments; a
    // non-pty fails them.
    let slave = unsafe {
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) != 0
            || libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd.
    Ok((master, unsafe { OwnedFd::from_raw_fd(slave) }))
}

fn run_child(req: &ExecRequest, fds: [RawFd; 3], tty: bool) -> i32 {
    let say = |msg: String| {
        let line = format!("cellctl exec: {msg}\n");
        // SAFETY: writing our buffer to the command's stderr.
        unsafe { libc::write(fds[2], line.as_ptr().cast(), line.len()) };
    };
    // A session of its own: no terminal of the host, no process group of
    // cellsd's.
    if let Err(e) = nix::unistd::setsid() {
        say(format!("setsid: {e}"));
        return 125;
    }
    // SAFETY: dup2 and TIOCSCTTY on fds we hold.
    unsafe {
        if tty && libc::ioctl(fds[0], libc::TIOCSCTTY, 0) != 0 {
            say(format!("TIOCSCTTY: {}", std::io::Error::last_os_error()));
            return 125;
        }
        for (i, fd) in fds.iter().enumerate() {
            if *fd < 0 || libc::dup2(*fd, i as i32) < 0 {
                return 125;
            }
        }
    }
    if let Err(e) = sys::join_new_session_keyring() {
        say(format!("a session keyring of its own: {e}"));
        return 125;
    }
    if std::env::set_current_dir(&req.cwd).is_err() {
        let _ = std::env::set_current_dir("/");
    }
    cloexec_from(3);
    reset_signals();
    if let Some(f) = &req.seccomp {
        if let Err(e) = crate::seccomp::install(f) {
            say(e.to_string());
            return 125;
        }
    }
    // After the filter (installing one takes CAP_SYS_ADMIN, which a user
    // other than VP root lacks; the filter allows these calls).
    if let Some((uid, gid, groups)) = &req.user {
        let groups: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
        let (g, u) = (Gid::from_raw(*gid), Uid::from_raw(*uid));
        let set = nix::unistd::setgroups(&groups)
            .and_then(|_| nix::unistd::setresgid(g, g, g))
            .and_then(|_| nix::unistd::setresuid(u, u, u));
        if let Err(e) = set {
            say(format!("become uid {uid} gid {gid}: {e}"));
            return 125;
        }
    }
    let e = exec_in_path(&req.args, &req.env);
    let prog = req.args.first().map(String::as_str).unwrap_or("");
    eprintln!("cellctl exec: {prog}: {e}");
    match e.raw_os_error() {
        Some(libc::ENOENT) => 127,
        _ => 126,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_fds_and_long_bodies() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        let long = "x".repeat(300_000);
        let reply = ExecReply::Failed {
            error: long.clone(),
        };
        let t = std::thread::spawn(move || {
            send_message(&a, &reply, &[f.as_raw_fd()]).unwrap();
        });
        let (got, fds): (ExecReply, _) = recv_message(&b, 3).unwrap();
        t.join().unwrap();
        assert_eq!(got, ExecReply::Failed { error: long });
        assert_eq!(fds.len(), 1);
        drop(b);
    }
}
