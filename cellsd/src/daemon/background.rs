//! Background VPs: the per-VP background policy (run, freeze after a
//! delay, stop), freezing and thawing with the cgroup freezer, and the
//! power API (wakelocks, suspend blocking).
//!
//! A frozen VP thaws when it becomes the foreground, inside the switch
//! (before the panel shows it). A VP is not frozen by its policy while it
//! holds a wakelock (music keeps playing) or runs a `cellctl exec`; the
//! delay starts again when the last lock goes or the exec ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::Error;
use super::{running_vp, state, Inner, Manager, Phase, DEFAULT_STOP_TIMEOUT};
use crate::cgroup::{FreezeState, Freezer};
use crate::config::{BackgroundPolicy, VpConfig};
use crate::devices::power::hub::PowerReport;

/// How long a freeze may take before it is given up (a task in an
/// uninterruptible wait cannot freeze).
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

impl Manager {
    pub(super) fn freezer_of(&self, cfg: &VpConfig) -> Option<Freezer> {
        self.cgroup_of(cfg).freezer(self.cfg.freezer)
    }

    /// Whether the VP's cgroup is frozen (for a VP adopted after a restart).
    pub(super) fn cgroup_frozen(&self, cfg: &VpConfig) -> bool {
        self.freezer_of(cfg)
            .and_then(|f| f.state().ok())
            .is_some_and(|s| s != FreezeState::Thawed)
    }

    /// Give a running VP the foreground's CPU weight or the background's
    /// (`cellsd --background-cpu-weight`): as Android puts background apps in
    /// a cgroup with a small share of the CPU, a background VP's work yields
    /// to the foreground VP and to cellsd (a start, a switch) when the CPU is
    /// short, and uses what is idle otherwise.
    pub(super) fn set_cpu_weight(&self, inner: &Inner, name: &str, foreground: bool) {
        let Some(vp) = inner.vps.get(name) else {
            return;
        };
        if vp.phase != Phase::Running {
            return;
        }
        let weight = if foreground {
            crate::cgroup::FULL_CPU_WEIGHT
        } else {
            self.cfg.background_cpu_weight
        };
        self.writer.send(super::writer::Write::CpuWeight(
            name.to_string(),
            self.cgroup_of(&vp.config),
            weight,
        ));
    }

    /// `name` becomes the foreground: cancel its policy, thaw it now.
    pub(super) fn leave_background(&self, inner: &mut Inner, name: &str) {
        if let Some(vp) = inner.vps.get_mut(name) {
            vp.bg_gen += 1;
        }
        if let Err(e) = self.thaw_locked(inner, name) {
            tracing::warn!(vp = name, "thaw on switch: {}", e);
        }
    }

    /// `name` left the foreground: apply its background policy.
    pub(super) fn enter_background(&self, inner: &mut Inner, name: &str) {
        let Some(vp) = inner.vps.get(name) else {
            return;
        };
        if vp.phase != Phase::Running {
            return;
        }
        self.set_cpu_weight(inner, name, false);
        match vp.config.cells.background {
            BackgroundPolicy::Run => {}
            BackgroundPolicy::FreezeAfter(_) => self.arm_freeze(inner, name),
            BackgroundPolicy::Stop => {
                let Some(mgr) = self.me.upgrade() else { return };
                let n = name.to_string();
                tracing::info!(vp = name, "background policy: stop");
                tokio::spawn(async move {
                    if let Err(e) = mgr.stop(&n, DEFAULT_STOP_TIMEOUT).await {
                        tracing::warn!(vp = n, "background stop: {}", e);
                    }
                });
            }
        }
    }

    /// (Re)start the delay after which a background VP with the
    /// freeze-after policy is frozen. Any earlier timer is cancelled.
    pub(super) fn arm_freeze(&self, inner: &mut Inner, name: &str) {
        let fg = inner.foreground.as_deref() == Some(name);
        let Some(vp) = inner.vps.get_mut(name) else {
            return;
        };
        vp.bg_gen += 1;
        let Some(delay) = state::freeze_timer(
            &vp.config.cells.background,
            fg,
            vp.frozen,
            vp.phase == Phase::Running,
        ) else {
            return;
        };
        let gen = vp.bg_gen;
        let Some(mgr) = self.me.upgrade() else { return };
        let n = name.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            mgr.policy_freeze(&n, gen).await;
        });
    }

    /// The delay of a background VP ran out.
    async fn policy_freeze(self: &Arc<Self>, name: &str, gen: u64) {
        let check = {
            let inner = self.lock();
            let Some(vp) = inner.vps.get(name) else {
                return;
            };
            state::freeze_check(
                gen,
                vp.bg_gen,
                inner.foreground.as_deref() == Some(name),
                self.power.holds_locks(name),
                self.has_active_exec(name),
            )
        };
        match check {
            state::FreezeCheck::Stale => return,
            state::FreezeCheck::HoldsLock => {
                tracing::info!(vp = name, "not frozen: it holds a wakelock");
                return;
            }
            state::FreezeCheck::RunsExec => {
                tracing::info!(vp = name, "not frozen: it runs an exec");
                return;
            }
            state::FreezeCheck::Freeze => {}
        }
        match self.freeze_now(name, Some(gen)).await {
            Ok(t) => tracing::info!(
                vp = name,
                us = t.as_micros() as u64,
                "background policy: frozen"
            ),
            Err(FreezeFailure::Cancelled) => {}
            Err(FreezeFailure::Error(e)) => {
                tracing::warn!(vp = name, "background policy: {}", e)
            }
        }
    }

    /// React to wakelocks: a background VP whose last lock went starts its
    /// freeze delay again.
    pub(super) fn watch_locks(self: &Arc<Self>) {
        let mut rx = self.power.subscribe();
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let ch = match rx.recv().await {
                    Ok(c) => c,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                };
                let Some(mgr) = weak.upgrade() else { return };
                if !ch.held {
                    let mut inner = mgr.lock();
                    if inner.foreground.as_deref() != Some(ch.vp.as_str()) {
                        mgr.arm_freeze(&mut inner, &ch.vp);
                    }
                }
            }
        });
    }

    pub(super) fn has_active_exec(&self, name: &str) -> bool {
        self.execs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|e| e.vp == name && e.status.borrow().is_none())
    }

    /// An exec in `name` ended: its freeze delay starts again.
    pub(super) fn exec_ended(&self, name: &str) {
        if self.has_active_exec(name) {
            return;
        }
        let mut inner = self.lock();
        if inner.foreground.as_deref() != Some(name) {
            self.arm_freeze(&mut inner, name);
        }
    }

    /// Traffic from a port forward (adb) is about to reach the VP: a frozen
    /// VP thaws, and a background VP's freeze delay starts again, so that a
    /// freeze-after VP freezes only once adb has been quiet that long.
    pub(super) fn forward_activity(&self, name: &str) {
        let mut inner = self.lock();
        let fg = inner.foreground.as_deref() == Some(name);
        let Some(vp) = inner.vps.get(name) else {
            return;
        };
        if vp.phase != Phase::Running {
            return;
        }
        if vp.frozen {
            if let Err(e) = self.thaw_locked(&mut inner, name) {
                tracing::warn!(vp = name, "thaw for a forward: {}", e);
            }
        }
        if !fg {
            self.arm_freeze(&mut inner, name);
        }
    }

    /// Before an exec: a frozen VP thaws (and stays thawed while the exec
    /// runs).
    pub(super) fn thaw_for_exec(&self, name: &str) -> Result<(), Error> {
        let mut inner = self.lock();
        if let Some(vp) = inner.vps.get_mut(name) {
            vp.bg_gen += 1;
        }
        self.thaw_locked(&mut inner, name).map(|_| ())
    }

    /// Before a stop: thaw, so that the VP's init acts on SIGTERM.
    pub(super) fn thaw_for_stop(&self, name: &str) {
        let mut inner = self.lock();
        if let Some(vp) = inner.vps.get_mut(name) {
            vp.bg_gen += 1;
        }
        if let Err(e) = self.thaw_locked(&mut inner, name) {
            tracing::warn!(vp = name, "thaw before stop: {}", e);
        }
    }

    /// Thaw `name` if it is frozen; returns how long the thaw took.
    fn thaw_locked(&self, inner: &mut Inner, name: &str) -> Result<Duration, Error> {
        let t0 = Instant::now();
        let Some(vp) = inner.vps.get_mut(name) else {
            return Ok(Duration::ZERO);
        };
        if !vp.frozen {
            return Ok(Duration::ZERO);
        }
        let freezer = self.freezer_of(&vp.config).ok_or_else(no_freezer)?;
        freezer.set(false).map_err(|source| Error::Freezer {
            doing: "thawing",
            vp: name.to_string(),
            source,
        })?;
        vp.frozen = false;
        self.power.set_freezing(name, false);
        let took = t0.elapsed();
        tracing::info!(vp = name, us = took.as_micros() as u64, "thawed");
        self.emit_state(name, crate::api::VpState::Running);
        Ok(took)
    }

    /// Freeze `name` and wait until every task has stopped. `gen`: the
    /// policy timer's generation (None: the user asked).
    async fn freeze_now(&self, name: &str, gen: Option<u64>) -> Result<Duration, FreezeFailure> {
        let t0 = Instant::now();
        let (freezer, gen) = {
            let mut inner = self.lock();
            let fg = inner.foreground.as_deref() == Some(name);
            let vp = inner.vps.get_mut(name).ok_or_else(|| self.missing(name))?;
            if gen.is_some_and(|g| g != vp.bg_gen) || fg {
                return Err(FreezeFailure::Cancelled);
            }
            if vp.phase != Phase::Running {
                return Err(Error::not_running(name).into());
            }
            if vp.frozen {
                return Ok(Duration::ZERO);
            }
            let freezer = self.freezer_of(&vp.config).ok_or_else(no_freezer)?;
            // Under the lock: a switch to this VP either comes before (and
            // cancels us) or after (and thaws).
            freezer.set(true).map_err(|source| Error::Freezer {
                doing: "freezing",
                vp: name.to_string(),
                source,
            })?;
            vp.frozen = true;
            self.power.set_freezing(name, true);
            (freezer, vp.bg_gen)
        };
        loop {
            match freezer.state() {
                Ok(FreezeState::Frozen) => break,
                Ok(_) => {}
                Err(e) => return Err(Error::Failed(format!("freezing VP '{name}': {e}")).into()),
            }
            let cancelled = {
                let inner = self.lock();
                inner
                    .vps
                    .get(name)
                    .is_none_or(|v| v.bg_gen != gen || !v.frozen)
            };
            if cancelled {
                return Err(FreezeFailure::Cancelled);
            }
            if t0.elapsed() > FREEZE_TIMEOUT {
                let mut inner = self.lock();
                let _ = self.thaw_locked(&mut inner, name);
                return Err(Error::Busy(format!(
                    "VP '{name}' did not freeze within {}s (a process of it is in an uninterruptible wait); it keeps running",
                    FREEZE_TIMEOUT.as_secs()
                ))
                .into());
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        let took = t0.elapsed();
        self.emit_state(name, crate::api::VpState::Frozen);
        Ok(took)
    }

    /// `cellctl freeze`: freeze a background VP now (wakelocks or not: the
    /// user asked). Returns how long it took.
    pub async fn freeze(&self, name: &str) -> Result<Duration, Error> {
        {
            let inner = self.lock();
            running_vp(&inner, name)?;
            if inner.foreground.as_deref() == Some(name) {
                return Err(Error::InvalidArgument(format!(
                    "VP '{name}' is the foreground and owns the screen: switch to another VP first (`cellctl switch OTHER`)"
                )));
            }
        }
        match self.freeze_now(name, None).await {
            Ok(t) => Ok(t),
            Err(FreezeFailure::Error(e)) => Err(e),
            Err(FreezeFailure::Cancelled) => Err(Error::Busy(format!(
                "VP '{name}' became the foreground while it was being frozen; it runs"
            ))),
        }
    }

    /// `cellctl thaw`: thaw a frozen VP; its background policy starts over.
    pub fn thaw(&self, name: &str) -> Result<Duration, Error> {
        let mut inner = self.lock();
        running_vp(&inner, name)?;
        let took = self.thaw_locked(&mut inner, name)?;
        if inner.foreground.as_deref() != Some(name) {
            self.arm_freeze(&mut inner, name);
        }
        Ok(took)
    }

    pub fn power_report(&self) -> (PowerReport, Vec<String>) {
        let frozen = self
            .lock()
            .vps
            .iter()
            .filter(|(_, v)| v.frozen)
            .map(|(n, _)| n.clone())
            .collect();
        (self.power.report(), frozen)
    }

    /// One running VP's wakelocks.
    pub fn wakelocks(&self, name: &str) -> Result<Vec<String>, Error> {
        running_vp(&self.lock(), name)?;
        Ok(self.power.locks(name).unwrap_or_default())
    }
}

fn no_freezer() -> Error {
    Error::Failed(
        "no cgroup freezer: mount the v1 freezer controller or cgroup v2 (Linux 5.2+)".into(),
    )
}

enum FreezeFailure {
    /// The VP became the foreground (or its policy changed) meanwhile.
    Cancelled,
    Error(Error),
}

impl From<Error> for FreezeFailure {
    fn from(e: Error) -> Self {
        FreezeFailure::Error(e)
    }
}
