//! cells-init: pid 1 of a VP.
//!
//! Stays up for the VP's whole life, reaps every orphan (it is the pid
//! namespace's reaper), logs to the console, runs the boot scripts of
//! /system/etc/init.d and supervises the services of /system/etc/services.d.
//! On SIGTERM (what `cellctl stop` sends) it asks every process to end
//! (SIGTERM and SIGHUP), waits
//! a grace period (CELLS_STOP_GRACE seconds, default 5), kills what is left
//! and exits 0; the pid namespace ends with it. On SIGRTMIN+5 (`reboot` in
//! the VP, adb's `reboot:`; systemd's signal for it) it stops the same way
//! and exits with [`REBOOT_STATUS`]: cellsd then starts the VP again. A
//! SIGTERM sent from inside the VP (busybox's `reboot`) is a reboot too;
//! SIGUSR1/SIGUSR2 from inside (busybox's `halt`/`poweroff`) stop the VP.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cells_templates::services::{executables, Backoff, BOOT_DIR, REBOOT_STATUS, SERVICES_DIR};
use cells_templates::toolbox::reboot_signal;

fn log(msg: &str) {
    // Console lines end in CRLF: the console is a terminal in raw-ish use.
    println!("init: {msg}\r");
}

struct Service {
    path: PathBuf,
    pid: Option<i32>,
    started: Instant,
    restart_at: Option<Instant>,
    backoff: Backoff,
}

fn spawn(path: &Path) -> Option<i32> {
    let mut cmd = Command::new(path);
    // SAFETY: init is single-threaded; between fork and exec the child only
    // resets its signal mask (async-signal-safe). Without this, children
    // would inherit init's blocked signals and ignore SIGTERM/SIGHUP.
    unsafe {
        cmd.pre_exec(|| {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        });
    }
    match cmd.spawn() {
        Ok(child) => Some(child.id() as i32),
        Err(e) => {
            log(&format!("cannot start {}: {e}", path.display()));
            None
        }
    }
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: plain sigset manipulation on a local.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [
            libc::SIGCHLD,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGPWR,
            libc::SIGHUP,
            libc::SIGUSR1,
            libc::SIGUSR2,
            reboot_signal(),
        ] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Wait for one of our signals, at most `timeout`. None on timeout.
///
/// Busybox's `reboot`, `halt` and `poweroff` (which a shell runs as its own
/// applets, before any `reboot` in PATH) signal init as busybox's init
/// wants: SIGTERM to reboot, SIGUSR1/SIGUSR2 to halt/power off. Sent from
/// inside the VP (the sender has a pid in the VP's namespace) they mean
/// that; cellsd's SIGTERM comes from outside (pid 0 here) and stops the VP.
fn wait_signal(set: &libc::sigset_t, timeout: Option<Duration>) -> Option<i32> {
    let t = timeout.unwrap_or(Duration::from_secs(3600));
    let ts = libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    };
    // SAFETY: a zeroed siginfo_t is a valid buffer for sigtimedwait.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: set, info and ts are valid.
    let r = unsafe { libc::sigtimedwait(set, &mut info, &ts) };
    if r <= 0 {
        return None;
    }
    // SAFETY: si_pid is valid for signals sent by kill(2) and for SIGCHLD.
    let from_inside = unsafe { info.si_pid() } != 0;
    Some(match r {
        libc::SIGTERM if from_inside => reboot_signal(),
        libc::SIGUSR1 | libc::SIGUSR2 => libc::SIGTERM,
        s => s,
    })
}

/// Reap every exited child; returns (pid, wait status) pairs.
fn reap() -> Vec<(i32, i32)> {
    let mut out = Vec::new();
    loop {
        let mut st = 0;
        // SAFETY: waitpid on any child, non-blocking.
        let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if pid <= 0 {
            return out;
        }
        out.push((pid, st));
    }
}

fn describe(st: i32) -> String {
    if libc::WIFEXITED(st) {
        format!("exit {}", libc::WEXITSTATUS(st))
    } else if libc::WIFSIGNALED(st) {
        format!("signal {}", libc::WTERMSIG(st))
    } else {
        format!("status {st}")
    }
}

fn main() {
    let set = signal_set();
    // SAFETY: blocking signals so that sigtimedwait receives them.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    log(&format!(
        "cells-init starting (pid {}, VP {}, host name {})",
        std::process::id(),
        std::env::var("CELLS_VP").unwrap_or_default(),
        hostname.trim()
    ));

    // Boot scripts, in order; orphans are reaped meanwhile.
    let mut stopping = false;
    let mut reboot = false;
    'boot: for script in executables(Path::new(BOOT_DIR)) {
        let Some(pid) = spawn(&script) else { continue };
        loop {
            match wait_signal(&set, None) {
                Some(libc::SIGCHLD) => {
                    if let Some((_, st)) = reap().into_iter().find(|(p, _)| *p == pid) {
                        log(&format!("{} finished ({})", script.display(), describe(st)));
                        break;
                    }
                }
                Some(libc::SIGTERM) | Some(libc::SIGINT) | Some(libc::SIGPWR) => {
                    stopping = true;
                    break 'boot;
                }
                Some(s) if s == reboot_signal() => {
                    (stopping, reboot) = (true, true);
                    break 'boot;
                }
                _ => {}
            }
        }
    }

    let mut services: Vec<Service> = Vec::new();
    if !stopping {
        for path in executables(Path::new(SERVICES_DIR)) {
            let pid = spawn(&path);
            log(&format!("service {} started", path.display()));
            services.push(Service {
                path,
                pid,
                started: Instant::now(),
                restart_at: None,
                backoff: Backoff::default(),
            });
        }
        log("boot complete");
        // What adb-driven suites wait for (`adb wait-for-device shell
        // getprop sys.boot_completed`), as Android's init sets it.
        let props = cells_templates::props::PropStore::default();
        for (k, v) in [("sys.boot_completed", "1"), ("dev.bootcomplete", "1")] {
            if let Err(e) = props.set(k, v) {
                log(&format!("setprop {k}: {e}"));
            }
        }
    }

    while !stopping {
        let now = Instant::now();
        let next = services.iter().filter_map(|s| s.restart_at).min();
        let timeout = next.map(|t| t.saturating_duration_since(now));
        match wait_signal(&set, timeout) {
            Some(libc::SIGCHLD) => {
                let exited: HashMap<i32, i32> = reap().into_iter().collect();
                for s in services.iter_mut() {
                    if let Some(st) = s.pid.and_then(|p| exited.get(&p)) {
                        let delay = s.backoff.next_delay(s.started.elapsed());
                        log(&format!(
                            "service {} ended ({}); restart in {} ms",
                            s.path.display(),
                            describe(*st),
                            delay.as_millis()
                        ));
                        s.pid = None;
                        s.restart_at = Some(Instant::now() + delay);
                    }
                }
            }
            Some(libc::SIGTERM) | Some(libc::SIGINT) | Some(libc::SIGPWR) => stopping = true,
            Some(s) if s == reboot_signal() => (stopping, reboot) = (true, true),
            _ => {}
        }
        let now = Instant::now();
        for s in services.iter_mut() {
            if s.restart_at.is_some_and(|t| t <= now) {
                s.restart_at = None;
                s.started = now;
                s.pid = spawn(&s.path);
            }
        }
    }

    let grace = std::env::var("CELLS_STOP_GRACE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5u64);
    if reboot {
        log("rebooting: the VP stops, then cellsd starts it again");
    }
    log("stopping: sending SIGTERM to every process");
    // SIGHUP too, as a hang-up would: interactive shells ignore SIGTERM.
    // SIGCONT wakes stopped processes so they can act on the others.
    // SAFETY: kill(-1) in a pid namespace reaches every process but init.
    unsafe {
        libc::kill(-1, libc::SIGTERM);
        libc::kill(-1, libc::SIGHUP);
        libc::kill(-1, libc::SIGCONT);
    }
    let deadline = Instant::now() + Duration::from_secs(grace);
    loop {
        reap();
        // ECHILD: nothing left to wait for.
        // SAFETY: probing for remaining children without reaping them.
        let none_left = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                std::ptr::null_mut(),
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        } < 0;
        if none_left {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            log("grace period over: sending SIGKILL");
            // SAFETY: as above.
            unsafe { libc::kill(-1, libc::SIGKILL) };
            // SAFETY: wait with a null status pointer (the status is not wanted).
            while !reap().is_empty() || unsafe { libc::wait(std::ptr::null_mut()) } > 0 {}
            break;
        }
        wait_signal(&set, Some(left.min(Duration::from_millis(100))));
    }
    log("stopped");
    if reboot {
        std::process::exit(REBOOT_STATUS);
    }
}
