//! The manager's pure decisions about the foreground, on plain data (the
//! names of the running VPs, in name order), tested apart from the manager.

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

#[cfg(test)]
mod tests {
    use super::*;

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
