//! cellsd's side of power: one link per running VP to its monitor
//! (`power.sock`), the aggregation of every VP's locks, early suspend
//! across switches, and the backend that makes it real.
//!
//! Rules (as in Cells):
//! - the device may suspend only while no VP holds a lock;
//! - a VP's write to /sys/power/state is its own request: only the
//!   foreground's counts (`mem`: its screen goes off and the device may
//!   suspend; `on`: screen on); a background VP's is recorded and ignored;
//! - a VP's framebuffer is awake only while it is the foreground and the
//!   screen is on: becoming the foreground wakes its `wait_for_fb_wake`
//!   readers, losing it wakes its `wait_for_fb_sleep` readers. A switch is
//!   a user action and turns the screen on.
//! - a VP that stops loses its locks; a cellsd restart keeps them (the
//!   monitors hold them and report them when the new cellsd connects).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{broadcast, mpsc, watch};

use super::backend::SleepBackend;
use super::{PowerCommand, PowerEvent};

/// A VP's lock set changed (for the background policy).
#[derive(Debug, Clone, PartialEq)]
pub struct LocksChanged {
    pub vp: String,
    pub held: bool,
}

/// What the backend should make true.
#[derive(Debug, Clone, Default, PartialEq)]
struct Wanted {
    locks: BTreeSet<(String, String)>,
    /// The foreground asked to suspend (screen off) and has not taken it back.
    suspend_requested: bool,
    /// Bumped on every foreground suspend request.
    suspend_requests: u64,
}

struct Link {
    locks: Vec<String>,
    commands: mpsc::UnboundedSender<PowerCommand>,
    freezing: bool,
    /// Device policy `power=foreground`: its locks hold only while it is
    /// the foreground.
    foreground_only: bool,
}

impl HubState {
    /// The locks of `vp` that hold now.
    fn holding<'a>(&self, vp: &str, link: &'a Link) -> &'a [String] {
        if link.foreground_only && self.foreground.as_deref() != Some(vp) {
            &[]
        } else {
            &link.locks
        }
    }
}

struct HubState {
    links: BTreeMap<String, Link>,
    foreground: Option<String>,
    screen_on: bool,
    suspend_requested: bool,
    ignored_requests: u64,
    last_request: String,
}

/// What `cellctl power` shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PowerReport {
    pub backend: String,
    pub backend_error: String,
    pub suspend_blocked: bool,
    pub suspend_requested: bool,
    pub screen_on: bool,
    pub foreground: String,
    pub wakelocks: BTreeMap<String, Vec<String>>,
    /// The VPs whose locks hold now (a `power=foreground` VP's locks do
    /// not in the background).
    pub blocked_by: Vec<String>,
    pub ignored_requests: u64,
    pub last_request: String,
}

pub struct PowerHub {
    state: Mutex<HubState>,
    wanted: watch::Sender<Wanted>,
    backend_name: Mutex<String>,
    backend_error: Arc<Mutex<String>>,
    changes: broadcast::Sender<LocksChanged>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PowerHub {
    /// Must be called inside the tokio runtime: the backend runs as a task.
    pub fn new(backend: SleepBackend) -> Arc<Self> {
        let (wanted, rx) = watch::channel(Wanted::default());
        let (changes, _) = broadcast::channel(256);
        let hub = Arc::new(Self {
            state: Mutex::new(HubState {
                links: BTreeMap::new(),
                foreground: None,
                screen_on: true,
                suspend_requested: false,
                ignored_requests: 0,
                last_request: String::new(),
            }),
            wanted,
            backend_name: Mutex::new(backend.name()),
            backend_error: Arc::new(Mutex::new(String::new())),
            changes,
        });
        let err = Arc::clone(&hub.backend_error);
        tokio::spawn(run_backend(backend, rx, err));
        hub
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LocksChanged> {
        self.changes.subscribe()
    }

    /// A running VP (started or adopted): link to its monitor.
    /// `foreground_only`: its locks hold only while it is the foreground.
    pub fn attach(self: &Arc<Self>, vp: &str, socket: PathBuf, foreground_only: bool) {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.state).links.insert(
            vp.to_string(),
            Link {
                locks: Vec::new(),
                commands: tx,
                freezing: false,
                foreground_only,
            },
        );
        tokio::spawn(run_link(Arc::clone(self), vp.to_string(), socket, rx));
    }

    /// The VP ended: it loses its locks.
    pub fn detach(&self, vp: &str) {
        let mut st = lock(&self.state);
        if let Some(link) = st.links.remove(vp) {
            if !link.locks.is_empty() {
                let _ = self.changes.send(LocksChanged {
                    vp: vp.to_string(),
                    held: false,
                });
            }
        }
        self.publish(&st, false);
    }

    /// The foreground changed (a switch, a start, a stop). A switch is a
    /// user action: the screen comes on.
    pub fn set_foreground(&self, fg: Option<&str>) {
        let mut st = lock(&self.state);
        let old = st.foreground.clone();
        if old.as_deref() == fg && st.screen_on {
            return;
        }
        st.foreground = fg.map(String::from);
        st.screen_on = true;
        st.suspend_requested = false;
        for vp in [old.as_deref(), fg].into_iter().flatten() {
            send_fb(&st, vp);
        }
        self.publish(&st, false);
    }

    /// Tell the VP's monitor the VP is (or is no longer) being frozen: its
    /// blocked fb waits must return (EINTR) or the freeze cannot complete.
    pub fn set_freezing(&self, vp: &str, on: bool) {
        let mut st = lock(&self.state);
        if let Some(link) = st.links.get_mut(vp) {
            link.freezing = on;
            let _ = link.commands.send(PowerCommand::Freezing { on });
        }
    }

    pub fn locks(&self, vp: &str) -> Option<Vec<String>> {
        lock(&self.state).links.get(vp).map(|l| l.locks.clone())
    }

    /// Whether `vp` holds a lock that holds now (a `power=foreground` VP's
    /// locks hold nothing in the background).
    pub fn holds_locks(&self, vp: &str) -> bool {
        let st = lock(&self.state);
        st.links
            .get(vp)
            .is_some_and(|l| !st.holding(vp, l).is_empty())
    }

    pub fn report(&self) -> PowerReport {
        let st = lock(&self.state);
        let wakelocks: BTreeMap<String, Vec<String>> = st
            .links
            .iter()
            .map(|(vp, l)| (vp.clone(), l.locks.clone()))
            .collect();
        let blocked_by: Vec<String> = st
            .links
            .iter()
            .filter(|(vp, l)| !st.holding(vp, l).is_empty())
            .map(|(vp, _)| vp.clone())
            .collect();
        PowerReport {
            backend: lock(&self.backend_name).clone(),
            backend_error: lock(&self.backend_error).clone(),
            suspend_blocked: !blocked_by.is_empty(),
            blocked_by,
            suspend_requested: st.suspend_requested,
            screen_on: st.screen_on,
            foreground: st.foreground.clone().unwrap_or_default(),
            wakelocks,
            ignored_requests: st.ignored_requests,
            last_request: st.last_request.clone(),
        }
    }

    fn on_event(&self, vp: &str, ev: PowerEvent) {
        let mut st = lock(&self.state);
        match ev {
            PowerEvent::Locks { locks } => {
                let Some(link) = st.links.get_mut(vp) else {
                    return;
                };
                let was = !link.locks.is_empty();
                link.locks = locks;
                let held = !link.locks.is_empty();
                if was != held {
                    let _ = self.changes.send(LocksChanged {
                        vp: vp.to_string(),
                        held,
                    });
                }
                tracing::debug!(vp, locks = ?link.locks, "wakelocks");
                self.publish(&st, false);
            }
            PowerEvent::State { value } => {
                if st.foreground.as_deref() != Some(vp) {
                    st.ignored_requests += 1;
                    st.last_request = format!("{vp}: {value} (ignored: {vp} is in the background)");
                    tracing::info!(vp, value, "background VP's power request ignored");
                    return;
                }
                st.last_request = format!("{vp}: {value}");
                let on = value == "on";
                st.screen_on = on;
                st.suspend_requested = !on;
                tracing::info!(vp, value, "foreground VP's power request");
                send_fb(&st, vp);
                self.publish(&st, !on);
            }
        }
    }

    /// Hand the backend the current lock set (and a suspend request).
    fn publish(&self, st: &HubState, suspend: bool) {
        let locks: BTreeSet<(String, String)> = st
            .links
            .iter()
            .flat_map(|(vp, l)| {
                st.holding(vp, l)
                    .iter()
                    .map(move |n| (vp.clone(), n.clone()))
            })
            .collect();
        let requested = st.suspend_requested;
        self.wanted.send_if_modified(|w| {
            let mut changed = false;
            if w.locks != locks {
                w.locks = locks;
                changed = true;
            }
            if w.suspend_requested != requested {
                w.suspend_requested = requested;
                changed = true;
            }
            if suspend {
                w.suspend_requests += 1;
                changed = true;
            }
            changed
        });
    }

    /// What the monitor of `vp` is told on (re)connect.
    fn hello(&self, vp: &str) -> Vec<PowerCommand> {
        let st = lock(&self.state);
        let mut out = vec![PowerCommand::Fb {
            awake: fb_awake(&st, vp),
        }];
        if st.links.get(vp).is_some_and(|l| l.freezing) {
            out.push(PowerCommand::Freezing { on: true });
        }
        out
    }
}

fn fb_awake(st: &HubState, vp: &str) -> bool {
    st.screen_on && st.foreground.as_deref() == Some(vp)
}

fn send_fb(st: &HubState, vp: &str) {
    if let Some(link) = st.links.get(vp) {
        let _ = link.commands.send(PowerCommand::Fb {
            awake: fb_awake(st, vp),
        });
    }
}

/// The link to one VP's monitor; reconnects until the VP is detached.
async fn run_link(
    hub: Arc<PowerHub>,
    vp: String,
    socket: PathBuf,
    mut commands: mpsc::UnboundedReceiver<PowerCommand>,
) {
    loop {
        let stream = loop {
            if commands.is_closed() {
                return;
            }
            match tokio::net::UnixStream::connect(&socket).await {
                Ok(s) => break s,
                // The monitor is not listening yet (or any more).
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let (r, mut w) = stream.into_split();
        let mut lines = BufReader::new(r).lines();
        // Commands queued before the connection are superseded by the hello.
        while commands.try_recv().is_ok() {}
        let mut ok = true;
        for c in hub.hello(&vp) {
            ok &= write_command(&mut w, &c).await;
        }
        while ok {
            tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(l)) => match serde_json::from_str::<PowerEvent>(&l) {
                        Ok(ev) => hub.on_event(&vp, ev),
                        Err(e) => tracing::warn!(vp, "bad power event {l:?}: {e}"),
                    },
                    _ => ok = false,
                },
                cmd = commands.recv() => match cmd {
                    Some(c) => ok = write_command(&mut w, &c).await,
                    None => return,
                },
            }
        }
        // The monitor dropped us; if the VP still runs, connect again.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn write_command(w: &mut tokio::net::unix::OwnedWriteHalf, c: &PowerCommand) -> bool {
    let Ok(mut line) = serde_json::to_vec(c) else {
        return false;
    };
    line.push(b'\n');
    w.write_all(&line).await.is_ok()
}

/// Apply the wanted state to the backend, in order, off the callers' path.
async fn run_backend(
    mut backend: SleepBackend,
    mut wanted: watch::Receiver<Wanted>,
    error: Arc<Mutex<String>>,
) {
    let mut applied = Wanted::default();
    while wanted.changed().await.is_ok() {
        let w = wanted.borrow_and_update().clone();
        let mut result = Ok(());
        if w.locks != applied.locks {
            result = backend.apply(&w.locks).await;
        }
        // Suspend on a new request, or when the last lock goes while a
        // request stands.
        let asked = w.suspend_requests != applied.suspend_requests
            || (w.locks.is_empty() && !applied.locks.is_empty());
        if asked && w.suspend_requested && w.locks.is_empty() && result.is_ok() {
            result = backend.suspend();
        }
        *lock(&error) = match &result {
            Ok(()) => String::new(),
            Err(e) => {
                tracing::warn!("power backend: {e}");
                e.clone()
            }
        };
        applied = w;
    }
}
