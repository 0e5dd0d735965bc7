//! Run a command inside a running VP (`cellsd __exec REQUEST-JSON`).
//!
//! Another re-exec'd, single-threaded helper: cellsd spawns it with the
//! caller's stdin/stdout/stderr (passed over D-Bus as fds), so the command's
//! output goes straight to the caller with no copying in cellsd. The helper
//! joins the VP's cgroup and every namespace of the VP's init (one setns on
//! a pidfd), forks so the child is inside the VP's pid namespace, reduces
//! the capability bounding set and execs. It forwards the signals it gets to
//! the command and exits with the command's status (128+N for signal N).

use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{Gid, Uid};
use serde::{Deserialize, Serialize};

use crate::cgroup::VpCgroup;
use crate::monitor::{cloexec_from, exec_in_path, reset_signals, restrict_bounding_set};
use crate::sys;

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
}

fn fail(msg: String) -> i32 {
    eprintln!("cellctl exec: {msg}");
    // 125: the runtime failed before the command ran (as docker/podman do).
    125
}

/// Entry point of `cellsd __exec`. Returns the process exit code.
pub fn main(arg: &str) -> i32 {
    let req: ExecRequest = match serde_json::from_str(arg) {
        Ok(r) => r,
        Err(e) => return fail(format!("bad exec request: {e}")),
    };
    let pidfd = match sys::pidfd_open(req.init_pid) {
        Ok(fd) => fd,
        Err(e) => return fail(format!("VP {} is not running ({e})", req.vp)),
    };
    if sys::process_start_time(req.init_pid) != Some(req.init_start_time) {
        return fail(format!(
            "VP {} is not running (its init has exited)",
            req.vp
        ));
    }
    if let Err(e) = req.cgroup.add(std::process::id() as i32) {
        return fail(format!("joining the VP's cgroup: {e}"));
    }
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWCGROUP;
    if req.userns {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    if let Err(e) = sys::setns(&pidfd, flags.bits()) {
        return fail(format!("entering the namespaces of VP {}: {e}", req.vp));
    }
    drop(pidfd);

    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ] {
        mask.add(s);
    }
    if let Err(e) = mask.thread_block() {
        return fail(format!("blocking signals: {e}"));
    }

    // SAFETY: this helper is single-threaded.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return fail(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if child == 0 {
        let code = run_child(&req);
        // SAFETY: _exit is always safe.
        unsafe { libc::_exit(code) };
    }
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

fn run_child(req: &ExecRequest) -> i32 {
    if req.userns {
        let (g, u) = (Gid::from_raw(0), Uid::from_raw(0));
        if let Err(e) = nix::unistd::setresgid(g, g, g)
            .and_then(|_| nix::unistd::setgroups(&[]))
            .and_then(|_| nix::unistd::setresuid(u, u, u))
        {
            return fail(format!("becoming VP root: {e}"));
        }
    }
    if let Err(e) = restrict_bounding_set(&req.bounding) {
        return fail(format!("dropping capabilities: {e}"));
    }
    if std::env::set_current_dir(&req.cwd).is_err() {
        let _ = std::env::set_current_dir("/");
    }
    cloexec_from(3);
    reset_signals();
    let e = exec_in_path(&req.args, &req.env);
    let prog = req.args.first().map(String::as_str).unwrap_or("");
    eprintln!("cellctl exec: {prog}: {e}");
    match e.raw_os_error() {
        Some(libc::ENOENT) => 127,
        _ => 126,
    }
}
