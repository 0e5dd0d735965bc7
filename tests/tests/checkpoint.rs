//! Live checkpoint/restore on this host: what happens when CRIU cannot run
//! (the checks that restore processes run in the emulator device, where
//! criu can read the VP processes' limits: this VM's root lacks
//! CAP_SYS_RESOURCE). A failed checkpoint loses nothing: the VP runs on.

use cells_tests::Cells;

fn count(c: &Cells, vp: &str) -> u64 {
    c.sh(vp, "cat /data/count 2>/dev/null || echo 0")
        .stdout
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn a_failed_checkpoint_names_the_fix_and_the_vp_runs_on() {
    let c = Cells::with_args(None, &["--criu", "/nonexistent/criu"]);
    c.ok(&["template", "build", "minimal"]);
    c.ok(&["create", "a", "--template", "minimal", "--disk", "none"]);
    let e = c.fails(&["checkpoint", "a"]);
    assert!(e.contains("not running"), "{e}");
    let e = c.fails(&["restore", "a"]);
    assert!(
        e.contains("has no checkpoint") && e.contains("cellctl checkpoint a"),
        "{e}"
    );
    c.ok(&["start", "a"]);
    c.sh_ok(
        "a",
        "setsid sh -c 'i=0; while true; do i=$((i+1)); echo $i > /data/count; sleep 0.05; done' </dev/null >/dev/null 2>&1 &",
    );
    let t = std::time::Instant::now();
    while count(&c, "a") < 2 {
        assert!(t.elapsed().as_secs() < 20, "control: the counter runs");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let e = c.fails(&["checkpoint", "a"]);
    assert!(
        e.contains("install CRIU") && e.contains("--criu") && e.contains("not touched"),
        "{e}"
    );
    // Nothing lost: still running, thawed, counting.
    assert_eq!(c.status("a")["state"], "running");
    let before = count(&c, "a");
    let t = std::time::Instant::now();
    while count(&c, "a") <= before + 2 {
        assert!(t.elapsed().as_secs() < 20, "the VP was left paused");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let e = c.fails(&["restore", "a"]);
    assert!(e.contains("has no checkpoint"), "{e}");
}
