//! The VP monitor: the re-exec'd, single-threaded helper that starts one VP
//! and stays with it until it ends (`cellsd __monitor`).
//!
//! cellsd never forks from its async runtime; it execs itself as a monitor,
//! hands it a [`MonitorRequest`] on stdin and reads [`MonitorEvent`]s from
//! stdout. The monitor:
//! 1. enters a private mount namespace (nothing it mounts is seen by the host);
//! 2. clones the VP's init into new pid, user, uts, ipc and net namespaces;
//! 3. writes the init's uid/gid maps, mounts the template read-only and
//!    idmapped (host root appears as VP root) as overlay's lower layer under
//!    the VP's writable upper layer, and puts the init in the VP's cgroup;
//! 4. reports the init's pid and waits for cellsd's "go" (cellsd opens a pidfd
//!    first, so the pid cannot be reused unseen);
//! 5. lets the init build its filesystem (rootfs.rs), pivot_root and exec;
//! 6. then relays the VP's console (a pty) to a log file and to clients of its
//!    console socket, reaps the init, and removes the VP's cgroup when it ends.
//!
//! The monitor runs in its own session, so the VP survives a crash or restart
//! of cellsd; cellsd finds it again through `<run>/vps/NAME/run.json`.
//!
//! Files: `protocol` (request, events, run state), `start` (groundwork and
//! the start itself), `devices` (the VP side of its devices), `child` (the
//! init from clone to exec), `supervise` (console relay, reaping); this file
//! has `main` and what the exec helper shares.

mod child;
mod devices;
mod error;
mod protocol;
mod relock;
mod restore;
mod start;
mod supervise;

pub use error::{step, MonitorError};
pub use protocol::*;

use child::init_child;
use devices::{make_devices, runtime_files};
use start::{groundwork, loopback_up, StartedVp};
use supervise::supervise;

use crate::devices::model;
use std::ffi::CString;
use std::io::{BufRead, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::LinuxNamespaceType;
use serde::{Deserialize, Serialize};

use crate::cgroup::VpCgroup;
use crate::config::{cap_number, VpConfig};
use crate::devices::network;
use crate::devices::registry::{Made, VpDevice};
use crate::{rootfs, sys};

/// Console log is rotated (to console.log.1) past this size.
pub const CONSOLE_LOG_MAX: u64 = 1 << 20;
/// The console relay's budget (bytes per second, and the burst): a VP that
/// floods its console is slowed down (its writes block on the full pty)
/// instead of keeping its monitor busy outside the VP's cgroup.
pub const CONSOLE_RATE: u64 = 256 << 10;
pub const CONSOLE_BURST: u64 = 1 << 20;

fn log(msg: &str) {
    tracing::info!("{msg}");
}

static TRACE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// With `trace` on, log how long after the monitor's start a phase ended.
fn phase(name: &str) {
    if let Some(t0) = TRACE.get() {
        tracing::info!(us = t0.elapsed().as_micros() as u64, "phase {name}");
    }
}

fn emit(ev: &MonitorEvent) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", serde_json::to_string(ev).unwrap_or_default());
    let _ = out.flush();
}

/// Namespace flags the init is cloned with (mount and cgroup come later:
/// the init unshares them itself once the monitor has prepared the mounts
/// and moved it into its cgroup).
pub fn clone_flags(cfg: &VpConfig) -> CloneFlags {
    let mut flags = CloneFlags::empty();
    let ns = cfg
        .runtime
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    // A namespace given by path is joined (by the monitor, before the clone).
    for n in ns.iter().filter(|n| n.path().is_none()) {
        flags |= match n.typ() {
            LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
            LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
            LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
            LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
            LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
            _ => CloneFlags::empty(),
        };
    }
    flags
}

/// The capability numbers of the VP's bounding set.
pub fn bounding_set(cfg: &VpConfig) -> Vec<u32> {
    cfg.runtime
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.bounding().as_ref())
        .map(|set| {
            set.iter()
                .filter_map(|c| serde_json::to_value(c).ok())
                .filter_map(|v| v.as_str().and_then(cap_number))
                .collect()
        })
        .unwrap_or_default()
}

/// Drop every capability outside `keep` from the bounding set.
pub fn restrict_bounding_set(keep: &[u32]) -> std::io::Result<()> {
    for cap in 0..=sys::last_cap() {
        if !keep.contains(&cap) {
            sys::capbset_drop(cap)?;
        }
    }
    Ok(())
}

/// Mark every fd from 3 up close-on-exec, so nothing of the monitor or of
/// cellsd leaks into the VP.
pub fn cloexec_from(first: u32) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 4;
    // SAFETY: close_range only changes fd flags.
    unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) };
}

/// Unblock every signal and restore default dispositions before exec.
pub fn reset_signals() {
    let _ = SigSet::empty().thread_set_mask();
    for s in 1..32 {
        if s == libc::SIGKILL || s == libc::SIGSTOP {
            continue;
        }
        // SAFETY: restoring SIG_DFL is always valid.
        unsafe { libc::signal(s, libc::SIG_DFL) };
    }
}

/// execve with a PATH search taken from `env`; returns only on failure.
pub fn exec_in_path(args: &[String], env: &[String]) -> std::io::Error {
    let Some(prog) = args.first() else {
        return std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command");
    };
    let cargs: Vec<CString> = match args.iter().map(|a| CString::new(a.as_str())).collect() {
        Ok(v) => v,
        Err(_) => return std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in argument"),
    };
    let cenv: Vec<CString> = env
        .iter()
        .filter_map(|e| CString::new(e.as_str()).ok())
        .collect();
    let mut argv: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = cenv.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());

    let candidates: Vec<String> = if prog.contains('/') {
        vec![prog.clone()]
    } else {
        let path = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or("/system/bin:/bin");
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| format!("{d}/{prog}"))
            .collect()
    };
    let mut last = std::io::Error::from_raw_os_error(libc::ENOENT);
    for c in candidates {
        let Ok(cpath) = CString::new(c) else { continue };
        // SAFETY: argv and envp are NULL-terminated arrays of valid C strings.
        unsafe { libc::execve(cpath.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        let e = std::io::Error::last_os_error();
        // Keep the most telling error: "permission denied" beats "not found".
        if e.raw_os_error() != Some(libc::ENOENT) || last.raw_os_error() == Some(libc::ENOENT) {
            last = e;
        }
    }
    last
}

/// The container's stdin, stdout and stderr (`cellsd __monitor
/// --oci-stdio`: `cells-runtime create` passes its own as fds 3, 4, 5, made
/// by containerd's shim for this container), moved out of the way.
static OCI_STDIO: std::sync::OnceLock<[RawFd; 3]> = std::sync::OnceLock::new();

/// Take fds 3, 4, 5 as the container's stdio (close-on-exec copies).
fn take_oci_stdio() -> Result<(), std::io::Error> {
    let mut fds = [-1; 3];
    for (i, fd) in fds.iter_mut().enumerate() {
        // SAFETY: duplicating an fd the runtime passed us; 3..5 are closed after.
        let d = unsafe { libc::fcntl(3 + i as RawFd, libc::F_DUPFD_CLOEXEC, 10) };
        if d < 0 {
            return Err(std::io::Error::last_os_error());
        }
        *fd = d;
    }
    for i in 3..6 {
        // SAFETY: closing the originals (the copies above stay).
        unsafe { libc::close(i) };
    }
    let _ = OCI_STDIO.set(fds);
    Ok(())
}

/// The monitor keeps no copy of the container's stdio once the init has it
/// (the shim sees the end of the output when the container's last copy goes).
fn close_oci_stdio() {
    if let Some(fds) = OCI_STDIO.get() {
        for fd in fds {
            // SAFETY: our own copies, closed once (the child was cloned with them).
            unsafe { libc::close(*fd) };
        }
    }
}

/// Entry point of `cellsd __monitor [SPARE-SETUP-JSON | --oci-stdio]`.
/// Returns the exit code.
pub fn main(spare_arg: Option<&str>) -> i32 {
    // Own session: a Ctrl-C at the terminal that started cellsd must not
    // reach the VPs, and the VP outlives cellsd.
    let _ = nix::unistd::setsid();
    crate::sys::lean_malloc();
    let spare_arg = match spare_arg {
        Some("--oci-stdio") => {
            if let Err(e) = take_oci_stdio() {
                emit(&MonitorEvent::Failed {
                    error: format!("the container's stdio (fds 3-5): {e}"),
                });
                return 1;
            }
            None
        }
        other => other,
    };
    let spare = spare_arg
        .and_then(|a| serde_json::from_str::<SpareSetup>(a).ok())
        .and_then(|s| match s.cgroup.prepare_spare() {
            Ok(()) => Some(s.cgroup),
            Err(e) => {
                log(&format!(
                    "no spare cgroup ({e}); the start will move the init instead"
                ));
                release_spare(&s.cgroup);
                None
            }
        });
    let ground = groundwork();
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if matches!(read, Ok(0)) {
        // cellsd ended without using this spare.
        if let Some(sp) = &spare {
            release_spare(sp);
        }
        return 0;
    }
    if let Err(e) = read {
        emit(&MonitorEvent::Failed {
            error: format!("reading the monitor request: {e}"),
        });
        return 1;
    }
    let received = std::time::Instant::now();
    let req: MonitorRequest = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            emit(&MonitorEvent::Failed {
                error: format!("bad monitor request: {e}"),
            });
            return 1;
        }
    };
    if req.trace {
        let _ = TRACE.set(received);
    }
    if let Ok(f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&req.monitor_log)
    {
        // SAFETY: dup2 onto stderr.
        unsafe { libc::dup2(f.as_raw_fd(), 2) };
    }
    log(&format!("starting VP {}", req.config.name));
    phase("request parsed");
    let started = ground.and_then(|g| match &req.restore {
        Some(r) => restore::restore(&req, r, spare.as_ref(), g),
        None => start::start(&req, spare.as_ref(), g),
    });
    match started {
        Ok(vp) => {
            let status = supervise(&req, vp);
            log(&format!(
                "VP {} ended ({})",
                req.config.name,
                describe_status(status)
            ));
            // An OCI container's monitor is what containerd's shim reaps:
            // it ends with the init's status (128+N for signal N).
            match &req.config.cells.oci {
                Some(_) if libc::WIFEXITED(status) => libc::WEXITSTATUS(status),
                Some(_) if libc::WIFSIGNALED(status) => 128 + libc::WTERMSIG(status),
                _ => 0,
            }
        }
        Err(e) => {
            log(&format!("start failed: {e}"));
            emit(&MonitorEvent::Failed {
                error: e.to_string(),
            });
            1
        }
    }
}

/// A wait status in words.
pub(crate) fn describe_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status}")
    }
}

/// Leave and remove an unused spare cgroup.
fn release_spare(spare: &VpCgroup) {
    let _ = spare.move_to_parent_v1(std::process::id() as i32);
    for d in spare.hierarchy.v1_dirs(&spare.rel) {
        let _ = std::fs::remove_dir(d);
    }
}

/// Write the run state atomically (no fsync: the run dir does not outlive a
/// reboot anyway).
fn write_run_state(path: &Path, state: &RunState) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state).unwrap_or_default())?;
    std::fs::rename(&tmp, path)
}

use std::os::unix::fs::OpenOptionsExt;
