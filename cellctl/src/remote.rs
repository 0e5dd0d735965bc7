//! cellsd on another host, over SSH (`cellctl --host ssh://[USER@]HOST[:PORT]`,
//! as `docker -H ssh://` does): the local cellctl runs `ssh HOST cellctl
//! dial-stdio`, which connects to that host's cellsd socket as the SSH user
//! (cellsd authorizes it by its peer credentials there: root or the `cells`
//! group) and relays bytes; the D-Bus connection runs over ssh's stdin and
//! stdout. dial-stdio first says which uid it connected as, so the D-Bus
//! EXTERNAL authentication names that uid. No file descriptor crosses SSH:
//! commands that hand cellsd an fd (exec, export, import, …) are refused.

use std::os::fd::OwnedFd;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Failure;

/// `ssh://[USER@]HOST[:PORT]` → (`[USER@]HOST`, port).
pub fn parse(url: &str) -> Result<(String, Option<String>), Failure> {
    let bad = || {
        Failure(format!(
            "{url}: give the other host as ssh://[USER@]HOST[:PORT]"
        ))
    };
    let rest = url
        .strip_prefix("ssh://")
        .ok_or_else(bad)?
        .trim_end_matches('/');
    let (userhost, port) = match rest.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => {
            (h, Some(port.to_string()))
        }
        _ => (rest, None),
    };
    if userhost.is_empty() || userhost.contains('/') || userhost.starts_with('-') {
        return Err(bad());
    }
    Ok((userhost.to_string(), port))
}

/// The ssh command (CELLS_SSH_COMMAND for ssh's own options) that runs
/// `remote` (words, each quoted here for the remote shell) on `url`'s host.
pub fn ssh(url: &str, remote: &[String]) -> Result<(tokio::process::Command, String), Failure> {
    let (userhost, port) = parse(url)?;
    let ssh_cmd = std::env::var("CELLS_SSH_COMMAND").unwrap_or_else(|_| "ssh".into());
    let mut words = ssh_cmd.split_whitespace();
    let prog = words.next().unwrap_or("ssh").to_string();
    let mut cmd = tokio::process::Command::new(&prog);
    cmd.args(words).arg("-o").arg("BatchMode=yes");
    if let Some(port) = port {
        cmd.arg("-p").arg(port);
    }
    cmd.arg(&userhost).arg("--").arg(remote.join(" "));
    Ok((cmd, prog))
}

/// A word for the remote shell.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The remote command line: `cellctl ARGS` there (with its cellsd's socket
/// if given), each word quoted for the remote shell.
pub fn cellctl_line(socket: Option<&str>, cellctl: &str, args: &[&str]) -> Vec<String> {
    let mut remote = Vec::new();
    if let Some(sock) = socket {
        remote.push(format!("CELLS_SOCKET={}", quote(sock)));
    }
    remote.push(quote(cellctl));
    remote.extend(args.iter().map(|a| quote(a)));
    remote
}

/// A D-Bus connection to the cellsd of `url`'s host, and the ssh process
/// carrying it (ended when it is dropped).
pub async fn connect(
    url: &str,
    socket: Option<&str>,
    cellctl: &str,
) -> Result<(zbus::Connection, tokio::process::Child), Failure> {
    let (mut cmd, prog) = ssh(url, &cellctl_line(socket, cellctl, &["dial-stdio"]))?;
    let (ours, theirs) =
        std::os::unix::net::UnixStream::pair().map_err(|e| Failure(format!("socketpair: {e}")))?;
    let theirs_out: OwnedFd = theirs
        .try_clone()
        .map_err(|e| Failure(format!("socketpair: {e}")))?
        .into();
    let theirs_in: OwnedFd = theirs.into();
    cmd.stdin(std::process::Stdio::from(theirs_in))
        .stdout(std::process::Stdio::from(theirs_out))
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| Failure(format!("cannot run {prog}: {e}")))?;
    drop(cmd);
    ours.set_nonblocking(true)
        .map_err(|e| Failure(format!("socketpair: {e}")))?;
    let mut stream =
        tokio::net::UnixStream::from_std(ours).map_err(|e| Failure(format!("socketpair: {e}")))?;
    // dial-stdio's first line: "cells-dial uid N" (or why it could not).
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 512 {
        match stream.read(&mut byte).await {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) => line.push(byte[0]),
            _ => {
                return Err(Failure(format!(
                    "cannot reach cellsd on {url}: ssh ended ({prog}'s message is above; is cellctl installed there? --host-cellctl PATH names it)"
                )))
            }
        }
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    let uid = line
        .strip_prefix("cells-dial uid ")
        .and_then(|u| u.trim().parse::<u32>().ok())
        .ok_or_else(|| Failure(format!("cellsd on {url}: {}", line.trim())))?;
    let conn = zbus::connection::Builder::unix_stream(stream)
        .user_id(uid)
        .p2p()
        .build()
        .await
        .map_err(|e| Failure(format!("cellsd on {url}: {e}")))?;
    Ok((conn, child))
}

/// `cellctl dial-stdio`: this host's cellsd socket on stdin/stdout (what
/// `--host` runs here over ssh). Says the uid it connects as first.
pub async fn dial_stdio(socket: &Path) -> Result<u8, Failure> {
    let mut out = tokio::io::stdout();
    let stream = match tokio::net::UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("cannot connect to cellsd at {}: {e}\n", socket.display());
            let _ = out.write_all(msg.as_bytes()).await;
            let _ = out.flush().await;
            return Err(Failure(msg.trim().to_string()));
        }
    };
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    out.write_all(format!("cells-dial uid {uid}\n").as_bytes())
        .await
        .map_err(|e| Failure(format!("stdout: {e}")))?;
    out.flush()
        .await
        .map_err(|e| Failure(format!("stdout: {e}")))?;
    let (mut rd, mut wr) = stream.into_split();
    let mut stdin = tokio::io::stdin();
    let up = async {
        let _ = tokio::io::copy(&mut stdin, &mut wr).await;
        let _ = wr.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut rd, &mut out).await;
        let _ = out.flush().await;
    };
    // Either side ending ends the relay.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
    Ok(0)
}

/// Whether a command hands cellsd a file descriptor (impossible over SSH).
pub fn passes_fds(cmd: &crate::Command) -> bool {
    use crate::Command as C;
    match cmd {
        C::Exec(_)
        | C::Export { .. }
        | C::Import { .. }
        | C::Move { .. }
        | C::Console { .. }
        | C::Logcat(_)
        | C::Template(crate::TemplateCmd::Import { .. })
        | C::Template(crate::TemplateCmd::Pull { .. })
        | C::Checkpoint {
            output: Some(_), ..
        } => true,
        C::Restore { vp, .. } => vp == "-" || vp.contains('/'),
        _ => false,
    }
}
