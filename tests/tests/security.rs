//! Issue #10: the escape suite. Every attempt is made as VP root (or as an
//! unprivileged host user) against real VPs, and must be denied; where an
//! attempt could fail for an unrelated reason, a control shows the same
//! operation succeeding against a target the attacker may touch.

use std::time::Duration;

use cells_tests::{pixel, Cells};
use mux_fb::geometry::Rgb;

const RED: Rgb = Rgb(0xff0000);
const GREEN: Rgb = Rgb(0x00ff00);

/// Two running VPs, red (foreground) and green, both painted.
fn red_green() -> Cells {
    let c = Cells::new();
    for (vp, color) in [("red", "ff0000"), ("green", "00ff00")] {
        c.ok(&["create", vp, "--template", "minimal", "--color", color]);
        c.ok(&["start", vp]);
    }
    for (vp, color) in [("red", RED), ("green", GREEN)] {
        assert!(
            Cells::wait_until(Duration::from_secs(10), || pixel(&c.shot(Some(vp)), 5, 5)
                == color),
            "the persona of {vp} did not paint its framebuffer"
        );
    }
    c
}

fn daemon_alive(c: &Cells) -> bool {
    let pid = c.daemon_pid().expect("daemon") as i32;
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) } == 0;
    exists && c.ctl(&["list"]).code == 0
}

/// Hole 1: whatever the foreground VP does to its framebuffer file, cellsd
/// (which composes it 60 times a second) survives and every other VP's
/// frame stays intact.
#[test]
fn framebuffer_truncate_grow_garbage_and_chmod_do_not_reach_cellsd() {
    let c = red_green();
    // Control: the panel shows the foreground's frame.
    assert_eq!(pixel(&c.shot(None), 5, 5), RED);
    let attacks = [
        ": > /dev/fb0",                    // truncate to nothing (used to SIGBUS cellsd)
        "truncate -s 1 /dev/graphics/fb0", // a frame's first byte only
        "truncate -s 512M /dev/fb0",       // grow far past a frame
        "dd if=/dev/urandom of=/dev/fb0 bs=65536 count=200 2>/dev/null; true", // garbage
        "chmod 0666 /dev/fb0 && chmod 0666 /dev/graphics/fb0.info; true",
        ": > /dev/fb0",
    ];
    for a in attacks {
        c.sh("red", a);
        // Several compositor refreshes over the attacked file.
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            daemon_alive(&c),
            "cellsd died after `{a}` in the foreground VP; log:\n{}",
            c.daemon_log()
        );
        let _ = c.shot(None);
        let _ = c.shot(Some("red"));
    }
    // The other VP is untouched and still switches in.
    assert_eq!(pixel(&c.shot(Some("green")), 5, 5), GREEN);
    c.ok(&["switch", "green"]);
    assert_eq!(pixel(&c.shot(None), 5, 5), GREEN);
    c.ok(&["switch", "red"]);
    // The VP's chmod reached only its own file: nothing of the monitor's
    // device folder is visible on the host.
    assert!(!c.run.join("vps/red/dev/fb0").exists());
    assert!(daemon_alive(&c));
}
