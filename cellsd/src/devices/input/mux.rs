//! The input multiplexer: a thread that reads every input source (grabbed
//! host evdev devices, input.sock clients), routes through the [`Router`]
//! and writes to the foreground VP's devices. Host devices that appear or
//! vanish while it runs are picked up through inotify on the input folder.
//! The router and the VPs' devices are shared under one lock: a switch, an
//! attach and injected input (D-Bus) are routed and written on the
//! caller's thread (the writes do not block: a VP that does not keep up
//! loses frames), so nothing waits for a thread to wake, and everything is
//! routed in the order it took the lock.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::evdev::EvdevSource;
use super::inject;
use super::router::{DeviceKind, Output, Router, SourceEvent};
use super::sink::Sink;
use mux_fb::Geometry;

/// Source id of injected input.
pub const INJECT_SOURCE: u32 = 0;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub frames_routed: u64,
    pub frames_dropped: u64,
    /// Host devices in use: (path, name).
    pub sources: Vec<(String, String)>,
}

pub struct InputMux {
    state: Arc<Mutex<State>>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every update is whole: keep routing after a panic elsewhere.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn epoll_add(ep: &OwnedFd, fd: i32, token: u64) {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: registering an fd with our epoll instance.
    unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
}

fn epoll_del(ep: &OwnedFd, fd: i32) {
    // SAFETY: removing an fd from our epoll instance.
    unsafe {
        libc::epoll_ctl(
            ep.as_raw_fd(),
            libc::EPOLL_CTL_DEL,
            fd,
            std::ptr::null_mut(),
        )
    };
}

const TOKEN_INOTIFY: u64 = u64::MAX - 1;
const TOKEN_LISTEN: u64 = u64::MAX - 2;
/// Tokens of injection clients: this bit plus the client's source id.
const CLIENT_TOKEN: u64 = 1 << 40;

impl InputMux {
    /// Start the thread. `input_dir` (normally /dev/input) is scanned and
    /// watched for host devices, which are grabbed if `grab`.
    pub fn start(
        input_dir: Option<PathBuf>,
        geometry: Geometry,
        grab: bool,
        inject_socket: Option<PathBuf>,
    ) -> io::Result<Self> {
        let listener = match &inject_socket {
            Some(p) => Some(inject::listen(p)?),
            None => None,
        };
        let state = Arc::new(Mutex::new(State {
            router: Router::new(),
            sinks: HashMap::new(),
            stats: Stats::default(),
        }));
        let shared = Arc::clone(&state);
        std::thread::Builder::new()
            .name("input".into())
            .spawn(move || {
                if let Err(e) = run(shared, input_dir, geometry, grab, listener) {
                    tracing::error!("input multiplexer stopped: {e}");
                }
            })?;
        Ok(Self { state })
    }

    pub fn attach(&self, vp: &str, sinks: Vec<(DeviceKind, Sink)>) {
        let mut st = lock(&self.state);
        st.router.attach(vp);
        st.sinks.insert(vp.to_string(), sinks);
    }

    pub fn detach(&self, vp: &str) {
        let mut st = lock(&self.state);
        st.router.detach(vp);
        st.sinks.remove(vp);
    }

    /// Switch input to `vp`: the old foreground's releases are written
    /// before any later input is routed.
    pub fn set_foreground(&self, vp: Option<&str>) {
        let mut st = lock(&self.state);
        let rel = st.router.set_foreground(vp);
        st.deliver(rel);
    }

    /// Route one injected frame; it is written when this returns.
    pub fn inject(&self, frame: Vec<SourceEvent>) {
        let mut st = lock(&self.state);
        let out = st.router.frame(&frame);
        st.deliver(out);
    }

    pub fn stats(&self) -> Stats {
        lock(&self.state).stats.clone()
    }
}

struct State {
    router: Router,
    sinks: HashMap<String, Vec<(DeviceKind, Sink)>>,
    stats: Stats,
}

impl State {
    fn deliver(&mut self, outputs: Vec<Output>) {
        for o in outputs {
            let sink = self
                .sinks
                .get_mut(&o.vp)
                .and_then(|v| v.iter_mut().find(|(k, _)| *k == o.kind));
            match sink {
                Some((_, s)) => match s.write(&o.events) {
                    Ok(()) => self.stats.frames_routed += 1,
                    Err(e) => {
                        self.stats.frames_dropped += 1;
                        tracing::debug!(vp = o.vp.as_str(), "input write: {e}");
                    }
                },
                None => self.stats.frames_dropped += 1,
            }
        }
    }
}

fn inotify_watch(ino: &OwnedFd, dir: &Path, mask: u32) -> i32 {
    let Ok(c) = crate::sys::cstr(dir) else {
        return -1;
    };
    // SAFETY: adding a watch with a valid path.
    unsafe { libc::inotify_add_watch(ino.as_raw_fd(), c.as_ptr(), mask) }
}

fn run(
    state: Arc<Mutex<State>>,
    input_dir: Option<PathBuf>,
    geometry: Geometry,
    grab: bool,
    listener: Option<OwnedFd>,
) -> io::Result<()> {
    // SAFETY: epoll_create1 returns a new fd or -1.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    let mut sources: HashMap<u64, EvdevSource> = HashMap::new();
    let mut next_source: u32 = INJECT_SOURCE + 1;
    let mut clients: HashMap<u64, inject::Client> = HashMap::new();
    if let Some(l) = &listener {
        epoll_add(&ep, l.as_raw_fd(), TOKEN_LISTEN);
    }

    // SAFETY: inotify_init1 returns a new fd or -1.
    let ino_raw = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    let ino = (ino_raw >= 0).then(|| {
        // SAFETY: a fresh fd.
        unsafe { OwnedFd::from_raw_fd(ino_raw) }
    });
    let mut dir_watch = -1;
    let mut parent_watch = -1;
    if let (Some(ino), Some(dir)) = (&ino, &input_dir) {
        epoll_add(&ep, ino.as_raw_fd(), TOKEN_INOTIFY);
        dir_watch = inotify_watch(
            ino,
            dir,
            libc::IN_CREATE | libc::IN_DELETE | libc::IN_ATTRIB,
        );
        if let Some(parent) = dir.parent() {
            // The folder itself may appear later (a module loaded at runtime).
            parent_watch = inotify_watch(ino, parent, libc::IN_CREATE);
        }
    }

    let add_source = |path: &Path,
                      sources: &mut HashMap<u64, EvdevSource>,
                      stats: &mut Stats,
                      next_source: &mut u32| {
        let is_event = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("event"));
        if !is_event || sources.values().any(|s| s.path == path) {
            return;
        }
        match EvdevSource::open(path, *next_source, geometry, grab) {
            Ok(Some(src)) => {
                tracing::info!(device = %path.display(), name = src.name.as_str(), class = ?src.class(), "input source");
                epoll_add(&ep, src.fd(), *next_source as u64);
                stats
                    .sources
                    .push((path.display().to_string(), src.name.clone()));
                sources.insert(*next_source as u64, src);
                *next_source += 1;
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(device = %path.display(), "not used: {e}"),
        }
    };
    if let Some(dir) = &input_dir {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries {
            add_source(&p, &mut sources, &mut lock(&state).stats, &mut next_source);
        }
    }

    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 32];
    loop {
        // SAFETY: waiting on our epoll instance into our buffer.
        let n = unsafe {
            libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), events.len() as i32, -1)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in &events[..n as usize] {
            let token = ev.u64;
            match token {
                TOKEN_INOTIFY => {
                    let Some(ino) = &ino else { continue };
                    let mut buf = [0u8; 4096];
                    // SAFETY: reading inotify records into our buffer.
                    let len =
                        unsafe { libc::read(ino.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                    let mut off = 0usize;
                    while len > 0 && off + 16 <= len as usize {
                        let wd = i32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or([0; 4]));
                        let mask =
                            u32::from_ne_bytes(buf[off + 4..off + 8].try_into().unwrap_or([0; 4]));
                        let nlen = u32::from_ne_bytes(
                            buf[off + 12..off + 16].try_into().unwrap_or([0; 4]),
                        ) as usize;
                        let raw = &buf[off + 16..(off + 16 + nlen).min(len as usize)];
                        let name = String::from_utf8_lossy(
                            &raw[..raw.iter().position(|b| *b == 0).unwrap_or(raw.len())],
                        )
                        .into_owned();
                        off += 16 + nlen;
                        let Some(dir) = &input_dir else { continue };
                        if wd == parent_watch
                            && mask & libc::IN_CREATE != 0
                            && dir.file_name().and_then(|n| n.to_str()) == Some(name.as_str())
                        {
                            dir_watch = inotify_watch(
                                ino,
                                dir,
                                libc::IN_CREATE | libc::IN_DELETE | libc::IN_ATTRIB,
                            );
                            continue;
                        }
                        if wd != dir_watch {
                            continue;
                        }
                        let path = dir.join(&name);
                        if mask & libc::IN_DELETE != 0 {
                            let gone: Vec<u64> = sources
                                .iter()
                                .filter(|(_, s)| s.path == path)
                                .map(|(k, _)| *k)
                                .collect();
                            for k in gone {
                                if let Some(s) = sources.remove(&k) {
                                    epoll_del(&ep, s.fd());
                                    lock(&state)
                                        .stats
                                        .sources
                                        .retain(|(p, _)| *p != path.display().to_string());
                                    tracing::info!(device = %path.display(), "input source gone");
                                }
                            }
                        } else {
                            add_source(
                                &path,
                                &mut sources,
                                &mut lock(&state).stats,
                                &mut next_source,
                            );
                        }
                    }
                }
                TOKEN_LISTEN => {
                    let Some(l) = &listener else { continue };
                    while let Some(fd) = inject::accept(l) {
                        let id = next_source;
                        next_source += 1;
                        let token = CLIENT_TOKEN | id as u64;
                        epoll_add(&ep, fd.as_raw_fd(), token);
                        clients.insert(token, inject::Client::new(fd, id, geometry));
                    }
                }
                token if token & CLIENT_TOKEN != 0 => {
                    let Some(cl) = clients.get_mut(&token) else {
                        continue;
                    };
                    match cl.read_frames() {
                        Ok(frames) => {
                            let mut st = lock(&state);
                            for f in frames {
                                let out = st.router.frame(&f);
                                st.deliver(out);
                            }
                        }
                        Err(_) => {
                            if let Some(cl) = clients.remove(&token) {
                                epoll_del(&ep, cl.fd());
                            }
                        }
                    }
                }
                token => {
                    let frames = match sources.get_mut(&token) {
                        Some(src) => src.read_frames(),
                        None => continue,
                    };
                    match frames {
                        Ok(frames) => {
                            let mut st = lock(&state);
                            for f in frames {
                                let out = st.router.frame(&f);
                                st.deliver(out);
                            }
                        }
                        Err(_) => {
                            if let Some(s) = sources.remove(&token) {
                                epoll_del(&ep, s.fd());
                                let p = s.path.display().to_string();
                                lock(&state).stats.sources.retain(|(q, _)| *q != p);
                                tracing::info!(device = %p, "input source gone");
                            }
                        }
                    }
                }
            }
        }
    }
}
