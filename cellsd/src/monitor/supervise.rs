//! Supervision: the console relay (rate-limited, logged), the power link, reaping, until the VP ends.

use super::*;

/// A token bucket over the console's bytes.
pub(super) struct Budget {
    pub(super) tokens: f64,
    pub(super) last: std::time::Instant,
}

impl Budget {
    pub(super) fn new() -> Self {
        Self {
            tokens: CONSOLE_BURST as f64,
            last: std::time::Instant::now(),
        }
    }

    pub(super) fn refill(&mut self) {
        let now = std::time::Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * CONSOLE_RATE as f64).min(CONSOLE_BURST as f64);
    }

    /// Milliseconds until a read may go on (0: now).
    pub(super) fn wait_ms(&self) -> i32 {
        if self.tokens > 0.0 {
            0
        } else {
            ((-self.tokens + 16384.0) * 1000.0 / CONSOLE_RATE as f64).ceil() as i32
        }
    }
}

/// Console output is kept in a log that is rotated once it passes
/// CONSOLE_LOG_MAX, so a chatty VP cannot fill the disk.
pub(super) struct ConsoleLog {
    pub(super) path: PathBuf,
    pub(super) file: Option<std::fs::File>,
    pub(super) size: u64,
}

impl ConsoleLog {
    pub(super) fn open(path: &Path) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .ok();
        let size = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| m.len())
            .unwrap_or(0);
        Self {
            path: path.to_path_buf(),
            file,
            size,
        }
    }

    pub(super) fn write(&mut self, data: &[u8]) {
        if self.size + data.len() as u64 > CONSOLE_LOG_MAX {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            let _ = std::fs::rename(&self.path, &old);
            *self = Self::open(&self.path);
        }
        if let Some(f) = self.file.as_mut() {
            if f.write_all(data).is_ok() {
                self.size += data.len() as u64;
            }
        }
    }
}

pub(super) fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

/// Relay the console and wait for the init to end. Returns its wait status
/// as a shell would print it.
/// Returns the init's wait status.
pub(super) fn supervise(req: &MonitorRequest, mut vp: StartedVp) -> i32 {
    // The monitor lives as long as the VP: what setting up used goes back.
    crate::sys::release_setup_memory();
    let mut log_file = ConsoleLog::open(&req.console_log);
    let listener = vp.console.take();
    set_nonblocking(vp.master.as_raw_fd());
    let mut clients: Vec<UnixStream> = Vec::new();
    let mut buf = vec![0u8; 16384];
    let mut budget = Budget::new();
    let status = loop {
        budget.refill();
        let throttled = budget.wait_ms();
        let mut fds = vec![
            libc::pollfd {
                fd: vp.signals.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                // Over budget: the console is not read until it refills.
                fd: if throttled > 0 {
                    -1
                } else {
                    vp.master.as_raw_fd()
                },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: listener.as_ref().map(|l| l.as_raw_fd()).unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // Each device's fds, in order; (first index, count) per device.
        let mut spans = Vec::with_capacity(vp.devices.len());
        for d in &vp.devices {
            let dfds = d.poll_fds();
            spans.push((fds.len(), dfds.len()));
            fds.extend(dfds.into_iter().map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            }));
        }
        // The console's clients start here.
        let first_client = fds.len();
        for c in &clients {
            fds.push(libc::pollfd {
                fd: c.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // Wake up for the next lock expiry (or what else a device waits for).
        let timeout = vp
            .devices
            .iter()
            .filter_map(|d| d.timeout())
            .min()
            .map(|d| d.as_millis().min(i32::MAX as u128) as i32 + 1)
            .unwrap_or(-1);
        let timeout = match (timeout, throttled) {
            (t, 0) => t,
            (-1, w) => w,
            (t, w) => t.min(w),
        };
        // SAFETY: fds is a valid array of pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            continue; // EINTR
        }
        let ready = |i: usize| fds[i].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0;
        for (d, (first, count)) in vp.devices.iter_mut().zip(&spans) {
            let flags: Vec<bool> = (*first..first + count).map(ready).collect();
            d.handle(&flags);
        }
        // A VP being frozen must not sit in a blocked read of a device.
        let freezing = vp
            .devices
            .iter()
            .find_map(|d| d.freezing())
            .unwrap_or(false);
        if freezing != vp.freezing {
            for d in vp.devices.iter_mut() {
                d.set_freezing(freezing);
            }
            vp.freezing = freezing;
        }
        if fds[1].revents & libc::POLLIN != 0 {
            // SAFETY: reading into our own buffer.
            let r =
                unsafe { libc::read(vp.master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if r > 0 {
                budget.tokens -= r as f64;
                let data = &buf[..r as usize];
                log_file.write(data);
                // A console user that cannot keep up loses output rather
                // than stalling the VP.
                clients.retain_mut(|c| match c.write(data) {
                    Ok(_) => true,
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                });
            }
        }
        let mut gone = Vec::new();
        // Only the clients that were polled; new ones come below.
        for (i, c) in clients
            .iter_mut()
            .enumerate()
            .take(fds.len() - first_client)
        {
            let re = fds[first_client + i].revents;
            if re & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) == 0 {
                continue;
            }
            match c.read(&mut buf) {
                Ok(0) => gone.push(i),
                Ok(n) => {
                    // SAFETY: writing our buffer to the pty master.
                    unsafe { libc::write(vp.master.as_raw_fd(), buf.as_ptr().cast(), n) };
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => gone.push(i),
            }
        }
        for i in gone.into_iter().rev() {
            clients.remove(i);
        }
        if fds[2].revents & libc::POLLIN != 0 {
            if let Some(l) = &listener {
                while let Ok((c, _)) = l.accept() {
                    let _ = c.set_nonblocking(true);
                    clients.push(c);
                }
            }
        }
        if fds[0].revents & libc::POLLIN != 0 {
            let mut ended = None;
            while let Ok(Some(si)) = vp.signals.read_signal() {
                match si.ssi_signo as i32 {
                    libc::SIGCHLD => {
                        let mut st = 0;
                        // SAFETY: reaping our own child.
                        let r = unsafe { libc::waitpid(vp.init, &mut st, libc::WNOHANG) };
                        if r == vp.init {
                            ended = Some(st);
                        }
                    }
                    // cellsd found the VP without its run state: restore it.
                    libc::SIGUSR1 => {
                        if let Err(e) = write_run_state(&req.run_state, &vp.state) {
                            log(&format!("restoring {}: {e}", req.run_state.display()));
                        }
                    }
                    // The host is shutting us down: let the VP shut down cleanly.
                    libc::SIGTERM | libc::SIGINT => {
                        // SAFETY: signalling our own child.
                        unsafe { libc::kill(vp.init, libc::SIGTERM) };
                    }
                    _ => {}
                }
            }
            if let Some(st) = ended {
                break st;
            }
        }
    };
    // Keep the last words of the console.
    loop {
        // SAFETY: reading into our own buffer (non-blocking).
        let r = unsafe { libc::read(vp.master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if r <= 0 {
            break;
        }
        log_file.write(&buf[..r as usize]);
    }
    // An init that asked for a reboot: cellsd starts the VP again.
    let reboot = (libc::WIFEXITED(status)
        && libc::WEXITSTATUS(status) == cells_templates::services::REBOOT_STATUS)
        || (libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGHUP);
    if reboot {
        let marker = req.run_state.with_file_name(crate::layout::REBOOT_MARKER);
        if let Err(e) = std::fs::write(&marker, b"reboot\n") {
            log(&format!("writing {}: {e}", marker.display()));
        }
    }
    let how = describe_status(status);
    log_file.write(
        format!(
            "\r\n[cells] init of VP {} ended: {how}\r\n",
            req.config.name
        )
        .as_bytes(),
    );
    drop(clients);
    let _ = std::fs::remove_file(&req.console_socket);
    for d in vp.devices.iter_mut().rev() {
        d.ended();
    }
    if req.config.cells.oci.is_some() {
        // The monitor of an OCI container sat in its cgroup: out first.
        if let Err(e) = req.cgroup.leave(std::process::id() as i32) {
            log(&format!("leaving the VP's cgroup: {e}"));
        }
    }
    if let Err(e) = req.cgroup.destroy(Duration::from_secs(10)) {
        log(&format!("removing cgroup: {e}"));
    }
    let _ = std::fs::remove_file(&req.run_state);
    status
}
