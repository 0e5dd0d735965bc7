//! A VP's virtual modem as the telephony tests drive it: a reader started
//! once that keeps everything the modem says in /data/modem.log (as a RIL
//! keeps its tty open), AT text written to it, waits for what it says.

use std::time::Duration;

use crate::Cells;

/// Start the VP's modem reader (its own session, as a RIL daemon is, so the
/// exec's end does not hang up the tty under it): echo off, caller ID and
/// text-mode messages on.
pub fn log_modem(c: &Cells, vp: &str) {
    c.sh_ok(
        vp,
        "setsid sh -c \"exec 3<>/dev/ttyMODEM0; printf 'ATE0\\rAT+CLIP=1\\rAT+CMGF=1\\r' >&3; \
         exec cat <&3 > /data/modem.log 2>/dev/null\" < /dev/null > /dev/null 2>&1 &",
    );
    assert!(Cells::wait_until(Duration::from_secs(5), || modem_log(
        c, vp
    )
    .matches("OK")
    .count()
        >= 3));
}

/// What the VP's modem said so far.
pub fn modem_log(c: &Cells, vp: &str) -> String {
    c.sh(vp, "cat /data/modem.log").stdout
}

/// Write AT text to the VP's modem (the answer lands in its log).
pub fn at(c: &Cells, vp: &str, text: &str) {
    c.sh_ok(vp, &format!("printf '{text}' > /dev/ttyMODEM0"));
}

/// Wait until the modem said `what`; returns all it said.
pub fn wait_log(c: &Cells, vp: &str, what: &str) -> String {
    let mut last = String::new();
    let ok = Cells::wait_until(Duration::from_secs(10), || {
        last = modem_log(c, vp);
        last.contains(what)
    });
    assert!(ok, "{what:?} never reached {vp}'s modem:\n{last}");
    last
}
