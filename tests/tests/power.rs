//! Issue #5: namespace-aware power. Each VP's /sys/power (a FUSE file
//! system its monitor serves), wakelock aggregation in cellsd, early
//! suspend across switches and the background freeze policy.

use std::time::Duration;

use cells_tests::Cells;

#[test]
fn each_vp_sees_and_releases_only_its_own_locks() {
    let c = Cells::new();
    c.create_start("a");
    c.create_start("b");
    c.sh_ok("a", "echo music > /sys/power/wake_lock");
    assert_eq!(c.sh_ok("a", "cat /sys/power/wake_lock").trim(), "music");
    assert_eq!(c.sh_ok("b", "cat /sys/power/wake_lock").trim(), "");
    // B cannot release A's lock of the same name: it holds none.
    let out = c.sh("b", "echo music > /sys/power/wake_unlock");
    assert_ne!(
        out.code, 0,
        "B's unlock of a name it does not hold must fail"
    );
    assert!(out.stderr.contains("Invalid argument"), "{}", out.stderr);
    assert_eq!(c.sh_ok("a", "cat /sys/power/wake_lock").trim(), "music");
    c.sh_ok("a", "echo music > /sys/power/wake_unlock");
    assert_eq!(c.sh_ok("a", "cat /sys/power/wake_lock").trim(), "");
    let _ = Duration::from_secs(1);
}
