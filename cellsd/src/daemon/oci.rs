//! VPs of OCI containers (`cells-runtime`): a VP made from a bundle and
//! started by a monitor the runtime spawned (so that containerd's shim, its
//! parent, reaps it), and commands run in it by an exec helper the runtime
//! spawned.

use super::*;
use std::os::unix::fs::MetadataExt;

/// Is the process behind `pidfd` an exec of this very program (cellsd)?
fn runs_this_program(pidfd: &OwnedFd) -> Result<i32, Error> {
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()))
        .map_err(failed("read the monitor's pidfd"))?;
    let pid = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|p| p.trim().parse::<i32>().ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            Error::InvalidArgument("the monitor fd is not a pidfd of a live process".into())
        })?;
    let theirs = std::fs::metadata(format!("/proc/{pid}/exe"));
    let ours = std::fs::metadata("/proc/self/exe");
    match (theirs, ours) {
        (Ok(a), Ok(b)) if a.dev() == b.dev() && a.ino() == b.ino() => Ok(pid),
        _ => Err(Error::InvalidArgument(format!(
            "process {pid} is not `cellsd __monitor` of this cellsd's program: cells-runtime must be \
             a link to the same cellsd binary"
        ))),
    }
}

/// A process to run in an OCI container's VP (`cells-runtime exec`).
pub struct OciProcess {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    /// uid, gid, groups (of the VP).
    pub user: Option<(u32, u32, Vec<u32>)>,
}

/// An OCI container's VP cannot be `what`: an error naming why.
pub(super) fn refuse(config: &VpConfig, what: &str) -> Result<(), Error> {
    match &config.cells.oci {
        Some(o) => Err(Error::InvalidArgument(format!(
            "VP '{}' is OCI container {} (cells-runtime): it cannot be {what}",
            config.name, o.id
        ))),
        None => Ok(()),
    }
}

impl Manager {
    /// Create the VP `name` of an OCI container and start it with the
    /// monitor the caller spawned (its stdin, stdout and pidfd): it returns
    /// once the container's init waits at its exec fifo ("created"). A
    /// failed start removes the VP again.
    pub async fn oci_create(
        self: &Arc<Self>,
        name: &str,
        opts: CreateOptions,
        monitor_in: OwnedFd,
        monitor_out: OwnedFd,
        monitor_pidfd: OwnedFd,
    ) -> Result<(), Error> {
        if opts.oci.is_none() {
            return Err(Error::InvalidArgument("no OCI bundle given".into()));
        }
        runs_this_program(&monitor_pidfd)?;
        let stdin = tokio::net::unix::pipe::Sender::from_owned_fd(monitor_in)
            .map_err(failed("the monitor's stdin (a pipe)"))?;
        let stdout = tokio::net::unix::pipe::Receiver::from_owned_fd(monitor_out)
            .map_err(failed("the monitor's stdout (a pipe)"))?;
        let mut monitor = Monitor {
            proc: MonitorProc::Foreign(monitor_pidfd),
            stdin: Box::new(stdin),
            events:
                BufReader::new(Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Send + Unpin>)
                    .lines(),
        };
        if let Err(e) = self.create(name, opts) {
            monitor.kill().await;
            return Err(e);
        }
        match self.start_inner(name, None, Some(monitor)).await {
            Ok(()) => Ok(()),
            Err(e) => {
                if let Err(d) = self.destroy(name).await {
                    tracing::warn!(vp = name, "removing the OCI VP after its failed start: {d}");
                }
                Err(e)
            }
        }
    }

    /// Run `args` in the running VP `name` through the exec helper the
    /// caller spawned (`helper`: its end of the helper's request socket),
    /// with `stdio` (the caller's stdin, stdout, stderr: containerd's shim
    /// made them for this process) as the command's. Returns once the
    /// command runs; the helper (the caller's child) forwards signals to it
    /// and exits with its status.
    pub async fn oci_exec(
        self: &Arc<Self>,
        name: &str,
        process: OciProcess,
        helper: OwnedFd,
        stdio: Vec<OwnedFd>,
    ) -> Result<(), Error> {
        let OciProcess {
            args,
            env,
            cwd,
            user,
        } = process;
        let is_oci = {
            let inner = self.lock();
            let vp = inner.vps.get(name).ok_or_else(|| self.missing(name))?;
            vp.config.cells.oci.is_some()
        };
        if !is_oci {
            return Err(Error::InvalidArgument(format!(
                "VP '{name}' is not an OCI container: use `cellctl exec {name} -- COMMAND`"
            )));
        }
        if args.is_empty() {
            return Err(Error::InvalidArgument("the process has no args".into()));
        }
        if stdio.len() != 3 {
            return Err(Error::InvalidArgument(
                "an OCI exec takes three stdio fds (stdin, stdout, stderr)".into(),
            ));
        }
        let mut req: ExecRequest = self.exec_request(name, args, env, cwd, None)?;
        req.user = user.filter(|(u, g, groups)| (*u, *g) != (0, 0) || !groups.is_empty());
        let sock = std::os::unix::net::UnixStream::from(helper);
        let vp = name.to_string();
        let reply = tokio::task::spawn_blocking(move || {
            let raw: Vec<i32> = stdio.iter().map(|f| f.as_raw_fd()).collect();
            crate::execer::send_message(&sock, &req, &raw)?;
            drop(stdio);
            let _ = sock.set_read_timeout(Some(EXEC_START_TIMEOUT));
            crate::execer::recv_message::<ExecReply>(&sock, 0)
        })
        .await
        .map_err(|e| Error::Failed(e.to_string()))?;
        match reply {
            Ok((ExecReply::Started, _)) => Ok(()),
            Ok((ExecReply::Failed { error }, _)) => {
                Err(Error::Failed(format!("exec in VP '{vp}': {error}")))
            }
            Err(e) => Err(Error::Failed(format!("exec in VP '{vp}': the helper: {e}"))),
        }
    }
}
