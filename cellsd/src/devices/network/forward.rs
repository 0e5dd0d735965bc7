//! Port forwards from host loopback into VPs: a TCP relay in cellsd.
//!
//! The VP end of each relayed connection is a socket made inside the VP's
//! network namespace (entered through the init's pidfd) and connected to
//! the VP's own loopback, so a forward works under every network policy
//! (`none` too) and reaches services that listen on 127.0.0.1 only, as
//! `adb forward` does on a phone. Sockets are made on one dedicated thread
//! (setns changes only the calling thread's namespace; the async runtime's
//! threads never leave the host's).
//!
//! A VP's listeners live as long as the VP (not only while it runs): its
//! host ports stay reserved for it, and adb's automatic reconnect after a VP
//! restart finds the port (while the VP is stopped a connection is accepted
//! and closed, which adb retries; a refused connect makes it give up).

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::PortForward;

/// What cellsd does when a forward carries traffic to a VP (thaw it).
pub trait ForwardHooks: Send + Sync {
    /// Bytes from the host are about to reach `vp` (called at most every
    /// ACTIVITY_EVERY per connection).
    fn activity(&self, vp: &str);
}

type Hooks = Arc<std::sync::OnceLock<Arc<dyn ForwardHooks>>>;

/// How often a busy connection reports activity.
pub const ACTIVITY_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// How long a forwarded connection waits for the VP's service to listen.
/// Most relayed connections open at once into one VP (over all its
/// forwards): each holds two sockets and a task of cellsd's, outside the
/// VP's cgroup. Past it a new connection is closed at once.
pub const MAX_CONNS_PER_VP: usize = 256;

pub const CONNECT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

type SocketReply = oneshot::Sender<io::Result<std::net::TcpStream>>;

/// Makes TCP sockets in VPs' network namespaces.
#[derive(Clone)]
pub struct NetnsSockets {
    tx: std::sync::mpsc::Sender<(Arc<OwnedFd>, SocketReply)>,
}

impl NetnsSockets {
    pub fn start() -> io::Result<NetnsSockets> {
        let (tx, rx) = std::sync::mpsc::channel::<(Arc<OwnedFd>, SocketReply)>();
        let own: OwnedFd = std::fs::File::open("/proc/thread-self/ns/net")?.into();
        std::thread::Builder::new()
            .name("netns-sockets".into())
            .spawn(move || {
                for (pidfd, reply) in rx {
                    let _ = reply.send(socket_in(&pidfd, &own));
                }
            })?;
        Ok(NetnsSockets { tx })
    }

    /// A fresh, unconnected, non-blocking TCP socket in the namespace of
    /// the process behind `pidfd`.
    pub async fn socket(&self, pidfd: Arc<OwnedFd>) -> io::Result<std::net::TcpStream> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((pidfd, tx))
            .map_err(|_| io::Error::other("the netns socket thread is gone"))?;
        rx.await
            .map_err(|_| io::Error::other("the netns socket thread is gone"))?
    }
}

fn socket_in(pidfd: &OwnedFd, own: &OwnedFd) -> io::Result<std::net::TcpStream> {
    use nix::sched::{setns, CloneFlags};
    setns(pidfd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    // SAFETY: socket() returns a new fd or -1.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    let err = io::Error::last_os_error();
    if let Err(e) = setns(own.as_fd(), CloneFlags::CLONE_NEWNET) {
        // The thread cannot stay in a VP's namespace: every later socket
        // would be made there.
        tracing::error!("cannot return to the host's network namespace: {e}");
        std::process::abort();
    }
    if fd < 0 {
        return Err(err);
    }
    // SAFETY: a fresh socket fd we own.
    Ok(unsafe { std::net::TcpStream::from_raw_fd(fd) })
}

/// The VP a forward reaches: its init's pidfd while it runs, None while it
/// is stopped (connections are then accepted and closed at once).
type Target = Arc<Mutex<Option<Arc<OwnedFd>>>>;

/// One VP's forwards: listeners (kept while the VP exists, so its ports stay
/// its own and adb's reconnect finds the port across a VP restart), the VP
/// they reach now, and the connections being relayed.
#[derive(Default)]
struct VpForwards {
    listeners: HashMap<u16, tokio::task::JoinHandle<()>>,
    target: Target,
    conns: Arc<Mutex<JoinSet<()>>>,
}

/// Every VP's forwards.
pub struct Forwarder {
    sockets: NetnsSockets,
    vps: Mutex<HashMap<String, VpForwards>>,
    hooks: Hooks,
}

impl Forwarder {
    pub fn new(sockets: NetnsSockets) -> Arc<Forwarder> {
        Arc::new(Forwarder {
            sockets,
            vps: Mutex::new(HashMap::new()),
            hooks: Arc::new(std::sync::OnceLock::new()),
        })
    }

    /// Who hears of traffic (cellsd's manager, made after the forwarder).
    pub fn set_hooks(&self, hooks: Arc<dyn ForwardHooks>) {
        let _ = self.hooks.set(hooks);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VpForwards>> {
        self.vps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Listen on 127.0.0.1:`f.host` for the VP: each connection is relayed
    /// to the VP's 127.0.0.1:`f.vp` while the VP runs.
    pub async fn listen(&self, vp: &str, f: PortForward) -> io::Result<()> {
        if self
            .lock()
            .get(vp)
            .is_some_and(|v| v.listeners.contains_key(&f.host))
        {
            return Ok(());
        }
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, f.host)).await?;
        let sockets = self.sockets.clone();
        let mut map = self.lock();
        let entry = map.entry(vp.to_string()).or_default();
        if entry.listeners.contains_key(&f.host) {
            return Ok(());
        }
        let conns = entry.conns.clone();
        let target = entry.target.clone();
        let hooks = self.hooks.clone();
        let vp_name = vp.to_string();
        let task = tokio::spawn(async move {
            // Out of fds (EMFILE/ENFILE) or memory: wait longer each time
            // instead of spinning on a listener that stays readable.
            let mut backoff = std::time::Duration::from_millis(50);
            loop {
                let (client, _) = match listener.accept().await {
                    Ok(c) => {
                        backoff = std::time::Duration::from_millis(50);
                        c
                    }
                    Err(e) => {
                        tracing::warn!(vp = %vp_name, port = f.host, "accept: {e}; retrying in {backoff:?}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
                        continue;
                    }
                };
                let pidfd = target.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let Some(pidfd) = pidfd else {
                    // The VP is stopped: nothing answers (dropping closes).
                    continue;
                };
                let sockets = sockets.clone();
                let vp_name = vp_name.clone();
                let hooks = hooks.clone();
                let mut set = conns.lock().unwrap_or_else(|p| p.into_inner());
                // Reap finished connections as new ones come.
                while set.try_join_next().is_some() {}
                if set.len() >= MAX_CONNS_PER_VP {
                    tracing::warn!(vp = %vp_name, port = f.host, "{MAX_CONNS_PER_VP} connections into the VP are open: closing a new one");
                    continue;
                }
                set.spawn(async move {
                    let activity = || {
                        if let Some(h) = hooks.get() {
                            h.activity(&vp_name);
                        }
                    };
                    if let Err(e) = relay(client, &sockets, pidfd, f.vp, activity).await {
                        tracing::debug!(vp = %vp_name, port = f.vp, "forward: {e}");
                    }
                });
            }
        });
        entry.listeners.insert(f.host, task);
        Ok(())
    }

    /// The VP started (Some: its init's pidfd) or stopped (None: its relayed
    /// connections are closed — a socket into a dead VP would keep its
    /// network namespace, and its veth, alive).
    pub fn set_target(&self, vp: &str, pidfd: Option<Arc<OwnedFd>>) {
        let mut map = self.lock();
        let entry = map.entry(vp.to_string()).or_default();
        let stopped = pidfd.is_none();
        *entry.target.lock().unwrap_or_else(|p| p.into_inner()) = pidfd;
        if stopped {
            entry
                .conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .abort_all();
        }
    }

    /// Stop listening on `host_port`; returns once the port is free.
    pub async fn remove(&self, vp: &str, host_port: u16) {
        let task = self
            .lock()
            .get_mut(vp)
            .and_then(|v| v.listeners.remove(&host_port));
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
    }

    /// Close all of a VP's listeners and connections (it is destroyed);
    /// returns once its ports are free.
    pub async fn remove_vp(&self, vp: &str) {
        let v = self.lock().remove(vp);
        if let Some(v) = v {
            v.conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .abort_all();
            for (_, t) in v.listeners {
                t.abort();
                let _ = t.await;
            }
        }
    }

    /// The host ports a VP listens on now.
    pub fn active(&self, vp: &str) -> Vec<u16> {
        let mut v: Vec<u16> = self
            .lock()
            .get(vp)
            .map(|v| v.listeners.keys().copied().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Does the VP's forward reach a running VP now?
    pub fn reaches(&self, vp: &str) -> bool {
        self.lock()
            .get(vp)
            .is_some_and(|v| v.target.lock().unwrap_or_else(|p| p.into_inner()).is_some())
    }
}

async fn relay(
    mut client: tokio::net::TcpStream,
    sockets: &NetnsSockets,
    pidfd: Arc<OwnedFd>,
    port: u16,
    activity: impl Fn(),
) -> io::Result<()> {
    let _ = client.set_nodelay(true);
    // A new connection is activity: a frozen VP must thaw to answer it.
    activity();
    // A service that is not listening yet (adbd right after the VP starts,
    // or restarting) is waited for a little: the client's connection is held
    // rather than closed at once, as a phone's port would not have answered
    // before its adbd did. adb's own reconnect after a VP restart relies on it.
    let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
    let mut server = loop {
        let sock = TcpSocket::from_std_stream(sockets.socket(pidfd.clone()).await?);
        match sock
            .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .await
        {
            Ok(s) => break s,
            Err(e)
                if e.kind() == io::ErrorKind::ConnectionRefused
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let _ = server.set_nodelay(true);
    let (mut client_r, mut client_w) = client.split();
    let (mut server_r, mut server_w) = server.split();
    // Host → VP: report activity before the bytes go in (at most every
    // ACTIVITY_EVERY), so a VP frozen while the connection sat idle (adb
    // keeps its transport open) thaws to answer.
    let up = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 256 * 1024];
        let mut last = tokio::time::Instant::now();
        loop {
            let n = client_r.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            if last.elapsed() >= ACTIVITY_EVERY {
                activity();
                last = tokio::time::Instant::now();
            }
            server_w.write_all(&buf[..n]).await?;
        }
        server_w.shutdown().await
    };
    let down = async {
        use tokio::io::AsyncWriteExt;
        tokio::io::copy(&mut server_r, &mut client_w).await?;
        client_w.shutdown().await
    };
    tokio::try_join!(up, down)?;
    Ok(())
}

/// Is `port` free on host loopback right now? Only "in use" (or not ours
/// to take) says no: any other failure (loopback down, say) is not about the
/// port, and shows when the forward listens at the VP's start.
pub fn port_free(port: u16) -> bool {
    match std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
        Ok(_) => true,
        Err(e) => !matches!(
            e.raw_os_error(),
            Some(libc::EADDRINUSE) | Some(libc::EACCES)
        ),
    }
}
