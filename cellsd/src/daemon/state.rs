//! The manager's pure decisions, on plain data, tested apart from the
//! manager: who is the foreground (handoff when it stops, next/prev, after
//! a restart), what a restart does with the folders it finds and the VPs it
//! adopts, and when a background VP's freeze timer is armed and may freeze.

use std::time::Duration;

use crate::config::BackgroundPolicy;

/// Which VP takes the foreground when `leaving` (the foreground) stops: the
/// next running VP after it in name order, wrapping; None if none is left.
pub(super) fn handoff<'a>(running: &[&'a str], leaving: &str) -> Option<&'a str> {
    let others: Vec<&str> = running.iter().copied().filter(|n| *n != leaving).collect();
    others
        .iter()
        .copied()
        .find(|n| *n > leaving)
        .or_else(|| others.first().copied())
}

/// `cellctl next` / `prev`: the VP after (or before) the foreground in name
/// order, wrapping; the first running VP when no VP is the foreground.
pub(super) fn cycle<'a>(running: &[&'a str], fg: Option<&str>, forward: bool) -> Option<&'a str> {
    if running.is_empty() {
        return None;
    }
    let pos = fg.and_then(|f| running.iter().position(|n| *n == f));
    let i = match (pos, forward) {
        (None, _) => 0,
        (Some(i), true) => (i + 1) % running.len(),
        (Some(i), false) => (i + running.len() - 1) % running.len(),
    };
    Some(running[i])
}

/// After a cellsd restart: the foreground saved before it, if that VP still
/// runs; else the first running VP.
pub(super) fn restored_foreground<'a>(saved: &str, running: &[&'a str]) -> Option<&'a str> {
    let saved = saved.trim();
    running
        .iter()
        .copied()
        .find(|n| *n == saved)
        .or_else(|| running.first().copied())
}

/// What a folder of the state dir's `vps/` is, at cellsd's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Folder {
    /// What a create or destroy cut short left: removed (never a whole VP).
    Leftover,
    /// Not a VP's name: left alone.
    Ignored,
    /// A VP's folder: its definition is loaded and, if it runs, adopted.
    Vp,
}

pub(super) fn classify_folder(name: &str) -> Folder {
    if name.starts_with(crate::layout::CREATING_PREFIX)
        || name.starts_with(crate::layout::DESTROYING_PREFIX)
    {
        Folder::Leftover
    } else if crate::name::validate("VP", name).is_ok() {
        Folder::Vp
    } else {
        Folder::Ignored
    }
}

/// After a restart adopted the running VPs (`running`, in name order): the
/// foreground (the one saved before, if it still runs, else the first) and
/// the others, which take up their background policy again, in name order.
pub(super) fn after_adoption<'a>(
    saved: &str,
    running: &[&'a str],
) -> (Option<&'a str>, Vec<&'a str>) {
    let fg = restored_foreground(saved, running);
    let background = running.iter().copied().filter(|n| Some(*n) != fg).collect();
    (fg, background)
}

/// How long until a VP's freeze timer fires, if one is to be armed now: only
/// for `freeze-after=D`, a running background VP not already frozen.
pub(super) fn freeze_timer(
    policy: &BackgroundPolicy,
    foreground: bool,
    frozen: bool,
    running: bool,
) -> Option<Duration> {
    match policy {
        BackgroundPolicy::FreezeAfter(d) if !foreground && !frozen && running => Some(*d),
        _ => None,
    }
}

/// What a freeze timer does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FreezeCheck {
    Freeze,
    /// Something happened since it was armed (a switch, a stop, a newer
    /// timer): nothing to do.
    Stale,
    /// Kept awake: it holds a wakelock (its release arms a new timer).
    HoldsLock,
    /// Kept awake: an exec runs in it (its end arms a new timer).
    RunsExec,
}

pub(super) fn freeze_check(
    armed: u64,
    current: u64,
    foreground: bool,
    holds_lock: bool,
    runs_exec: bool,
) -> FreezeCheck {
    if armed != current || foreground {
        FreezeCheck::Stale
    } else if holds_lock {
        FreezeCheck::HoldsLock
    } else if runs_exec {
        FreezeCheck::RunsExec
    } else {
        FreezeCheck::Freeze
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_removes_leftovers_and_loads_vps() {
        assert_eq!(classify_folder("work"), Folder::Vp);
        assert_eq!(
            classify_folder(&format!("{}work", crate::layout::CREATING_PREFIX)),
            Folder::Leftover
        );
        assert_eq!(
            classify_folder(&format!("{}work-17", crate::layout::DESTROYING_PREFIX)),
            Folder::Leftover
        );
        assert_eq!(classify_folder("Not A VP"), Folder::Ignored);
        assert_eq!(classify_folder("lost+found"), Folder::Ignored);
    }

    #[test]
    fn after_adoption_the_saved_foreground_stays_and_the_others_are_background() {
        assert_eq!(
            after_adoption("b", &["a", "b", "c"]),
            (Some("b"), vec!["a", "c"])
        );
        assert_eq!(after_adoption("gone", &["a", "c"]), (Some("a"), vec!["c"]));
        assert_eq!(after_adoption("a", &[]), (None, vec![]));
    }

    #[test]
    fn freeze_timers_arm_only_for_running_unfrozen_background_vps() {
        let after = BackgroundPolicy::FreezeAfter(Duration::from_secs(3));
        assert_eq!(
            freeze_timer(&after, false, false, true),
            Some(Duration::from_secs(3))
        );
        assert_eq!(freeze_timer(&after, true, false, true), None, "foreground");
        assert_eq!(freeze_timer(&after, false, true, true), None, "frozen");
        assert_eq!(freeze_timer(&after, false, false, false), None, "stopped");
        assert_eq!(
            freeze_timer(&BackgroundPolicy::Run, false, false, true),
            None
        );
        assert_eq!(
            freeze_timer(&BackgroundPolicy::Stop, false, false, true),
            None
        );
    }

    #[test]
    fn a_freeze_timer_freezes_only_if_nothing_happened_and_nothing_keeps_it_awake() {
        assert_eq!(freeze_check(4, 4, false, false, false), FreezeCheck::Freeze);
        assert_eq!(freeze_check(4, 5, false, false, false), FreezeCheck::Stale);
        assert_eq!(freeze_check(4, 4, true, false, false), FreezeCheck::Stale);
        assert_eq!(
            freeze_check(4, 4, false, true, true),
            FreezeCheck::HoldsLock
        );
        assert_eq!(
            freeze_check(4, 4, false, false, true),
            FreezeCheck::RunsExec
        );
        // A stale timer says so even if a lock is held.
        assert_eq!(freeze_check(3, 4, false, true, false), FreezeCheck::Stale);
    }

    #[test]
    fn the_foreground_goes_to_the_next_vp_when_it_stops() {
        let running = ["a", "b", "c"];
        assert_eq!(handoff(&running, "b"), Some("c"));
        assert_eq!(handoff(&running, "c"), Some("a"), "wraps");
        assert_eq!(handoff(&["c"], "c"), None, "nobody left");
        // The leaving VP may already be off the running list.
        assert_eq!(handoff(&["a", "c"], "b"), Some("c"));
        assert_eq!(handoff(&[], "a"), None);
    }

    #[test]
    fn next_and_prev_wrap_in_name_order() {
        let running = ["a", "b", "c"];
        assert_eq!(cycle(&running, Some("a"), true), Some("b"));
        assert_eq!(cycle(&running, Some("c"), true), Some("a"));
        assert_eq!(cycle(&running, Some("a"), false), Some("c"));
        assert_eq!(cycle(&running, Some("b"), false), Some("a"));
        assert_eq!(cycle(&running, None, true), Some("a"));
        // A foreground that is not running any more: start from the first.
        assert_eq!(cycle(&running, Some("zz"), false), Some("a"));
        assert_eq!(cycle(&[], Some("a"), true), None);
        assert_eq!(cycle(&["a"], Some("a"), true), Some("a"));
    }

    #[test]
    fn a_restart_keeps_the_foreground_if_it_still_runs() {
        assert_eq!(restored_foreground("b\n", &["a", "b"]), Some("b"));
        assert_eq!(restored_foreground("gone", &["a", "b"]), Some("a"));
        assert_eq!(restored_foreground("", &["a"]), Some("a"));
        assert_eq!(restored_foreground("a", &[]), None);
    }
}
