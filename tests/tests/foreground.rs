//! Issue #3: foreground and background. The headless panel, per-VP
//! framebuffers, input multiplexing and switching, with real VPs running the
//! persona app.

use std::time::Duration;

use cells_tests::{pixel, Cells, Value};
use mux_fb::geometry::Rgb;

const RED: Rgb = Rgb(0xff0000);
const GREEN: Rgb = Rgb(0x00ff00);
const BLUE: Rgb = Rgb(0x0000ff);
const W: u32 = 720;

fn shot(c: &Cells, vp: Option<&str>) -> (u32, u32, Vec<u8>) {
    c.shot(vp)
}

/// Three running VPs in red, green and blue, each persona having drawn.
fn three() -> Cells {
    let c = Cells::new();
    for (vp, color) in [("red", "ff0000"), ("green", "00ff00"), ("blue", "0000ff")] {
        c.ok(&["create", vp, "--template", "minimal", "--color", color]);
        c.ok(&["start", vp]);
    }
    for (vp, color) in [("red", RED), ("green", GREEN), ("blue", BLUE)] {
        assert!(
            Cells::wait_until(Duration::from_secs(10), || pixel(&shot(&c, Some(vp)), 5, 5)
                == color),
            "the persona of {vp} did not paint its framebuffer"
        );
    }
    c
}

fn input_log(c: &Cells, vp: &str) -> String {
    c.sh(vp, "cat /data/input.log 2>/dev/null").stdout
}

#[test]
fn the_panel_shows_only_the_foreground_and_switches_at_once() {
    let c = three();
    // The first VP started is the foreground.
    assert_eq!(c.ok(&["foreground"]).trim(), "red");
    assert_eq!(pixel(&shot(&c, None), 5, 5), RED);
    for (vp, color) in [
        ("green", GREEN),
        ("blue", BLUE),
        ("red", RED),
        ("blue", BLUE),
    ] {
        c.ok(&["switch", vp]);
        // Commands reach the compositor in order: the capture right after
        // the switch sees the panel as the switch left it.
        let panel = shot(&c, None);
        assert_eq!(pixel(&panel, 5, 5), color, "panel after switch to {vp}");
        assert_eq!(pixel(&panel, W - 1, 1279), color);
        assert_eq!(c.ok(&["foreground"]).trim(), vp);
        assert_eq!(c.status(vp)["foreground"], true);
    }
    // Background VPs keep their own frames.
    assert_eq!(pixel(&shot(&c, Some("red")), 5, 5), RED);
    assert_eq!(pixel(&shot(&c, Some("green")), 5, 5), GREEN);
    assert_eq!(c.status("red")["foreground"], false);
    // The switch reached the panel within one refresh (16.7 ms).
    let info: Value = serde_json::from_str(&c.ok(&["display", "--json"])).unwrap();
    let us = info["last_switch_us"].as_u64().unwrap();
    assert!(us < 16_700, "panel updated {us} us after the switch");
}

#[test]
fn background_vps_keep_drawing_and_the_panel_follows_the_foreground_only() {
    let c = three();
    c.ok(&["switch", "green"]);
    // Red (background) draws a white square at the top left.
    c.sh_ok(
        "red",
        "for r in 0 1 2 3; do printf '\\377\\377\\377\\000%.0s' 1 2 3 4 | dd of=/dev/fb0 bs=1 seek=$((r*2880)) conv=notrunc 2>/dev/null; done",
    );
    assert_eq!(
        pixel(&shot(&c, Some("red")), 2, 2),
        Rgb(0xffffff),
        "red's buffer got the draw"
    );
    std::thread::sleep(Duration::from_millis(50)); // several refreshes
    assert_eq!(
        pixel(&shot(&c, None), 2, 2),
        GREEN,
        "a background draw reached the panel"
    );
    // The foreground draws: the panel follows at the next refresh.
    c.sh_ok(
        "green",
        "printf '\\000\\000\\000\\000' | dd of=/dev/fb0 bs=1 seek=0 conv=notrunc 2>/dev/null",
    );
    assert!(
        Cells::wait_until(Duration::from_secs(1), || pixel(&shot(&c, None), 0, 0)
            == Rgb(0)),
        "the foreground's draw did not reach the panel"
    );
    // Switching to red shows its current frame, square included.
    c.ok(&["switch", "red"]);
    let panel = shot(&c, None);
    assert_eq!(pixel(&panel, 2, 2), Rgb(0xffffff));
    assert_eq!(pixel(&panel, 10, 10), RED);
}

#[test]
fn a_tap_reaches_only_the_foreground_vp() {
    let c = three();
    c.ok(&["switch", "blue"]);
    c.ok(&["input", "tap", "360", "640"]);
    assert!(Cells::wait_until(Duration::from_secs(5), || input_log(
        &c, "blue"
    )
    .contains("EV_ABS ABS_MT_POSITION_X 360")));
    let blue = input_log(&c, "blue");
    assert!(blue.contains("EV_ABS ABS_MT_POSITION_Y 640"), "{blue}");
    assert!(
        blue.contains("EV_KEY BTN_TOUCH 1") && blue.contains("EV_KEY BTN_TOUCH 0"),
        "{blue}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        input_log(&c, "red"),
        "",
        "red got input while in the background"
    );
    assert_eq!(input_log(&c, "green"), "");
    // The persona counted it: its frame (and the panel) show the touch marker.
    assert!(Cells::wait_until(Duration::from_secs(5), || pixel(
        &shot(&c, None),
        360,
        640
    ) != BLUE));
    // Swipes and text go the same way.
    c.ok(&["input", "swipe", "100", "100", "600", "1000", "50"]);
    c.ok(&["input", "text", "Hi"]);
    assert!(Cells::wait_until(Duration::from_secs(5), || {
        let log = input_log(&c, "blue");
        log.contains("EV_ABS ABS_MT_POSITION_X 600") && log.contains("EV_KEY KEY_LEFTSHIFT 1")
    }));
    assert_eq!(input_log(&c, "red"), "");
}

#[test]
fn a_key_held_across_a_switch_is_released_in_the_old_foreground() {
    let c = three();
    c.ok(&["switch", "red"]);
    c.ok(&["input", "key", "HOME", "--down"]);
    assert!(Cells::wait_until(Duration::from_secs(5), || input_log(
        &c, "red"
    )
    .contains("EV_KEY KEY_HOMEPAGE 1")));
    c.ok(&["switch", "green"]);
    assert!(
        Cells::wait_until(Duration::from_secs(5), || input_log(&c, "red")
            .contains("EV_KEY KEY_HOMEPAGE 0")),
        "the held key was not released in red:\n{}",
        input_log(&c, "red")
    );
    // Green never sees the key's release (it never saw the press).
    c.ok(&["input", "key", "HOME", "--up"]);
    // ... but sees the next press.
    c.ok(&["input", "key", "BACK"]);
    assert!(Cells::wait_until(Duration::from_secs(5), || input_log(
        &c, "green"
    )
    .contains("EV_KEY KEY_BACK 0")));
    assert!(
        !input_log(&c, "green").contains("KEY_HOMEPAGE"),
        "{}",
        input_log(&c, "green")
    );
}

#[test]
fn a_touch_held_across_a_switch_is_lifted_and_the_rest_of_the_gesture_dropped() {
    let c = three();
    c.ok(&["switch", "red"]);
    // A slow swipe; the switch happens in its middle.
    let mut swipe = c
        .ctl_cmd()
        .args(["input", "swipe", "100", "100", "600", "1100", "1500"])
        .spawn()
        .unwrap();
    assert!(Cells::wait_until(Duration::from_secs(5), || input_log(
        &c, "red"
    )
    .contains("EV_ABS ABS_MT_TRACKING_ID 0")));
    c.ok(&["switch", "green"]);
    assert!(swipe.wait().unwrap().success());
    let red = input_log(&c, "red");
    assert_eq!(
        red.matches("ABS_MT_TRACKING_ID -1").count(),
        1,
        "lifted once, at the switch:\n{red}"
    );
    assert!(
        !red.contains("ABS_MT_POSITION_Y 1100"),
        "red got the end of the swipe:\n{red}"
    );
    assert!(red.contains("EV_KEY BTN_TOUCH 0"));
    // Green never saw any of it.
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !input_log(&c, "green").contains("ABS_MT"),
        "{}",
        input_log(&c, "green")
    );
}

#[test]
fn a_screenshot_decodes_to_the_expected_pixels() {
    let c = three();
    c.ok(&["switch", "green"]);
    let img = shot(&c, None);
    assert_eq!((img.0, img.1), (720, 1280));
    assert_eq!(img.2.len(), 720 * 1280 * 3);
    // Background colour in the corners, dark text of the name in the middle band.
    for (x, y) in [(0, 0), (719, 0), (0, 1279), (719, 1279), (360, 200)] {
        assert_eq!(pixel(&img, x, y), GREEN, "({x},{y})");
    }
    let band: Vec<Rgb> = (0..720)
        .map(|x| pixel(&img, x, 1280 * 35 / 100 + 20))
        .collect();
    assert!(
        band.contains(&Rgb(0)),
        "the VP's name is not drawn in black on green"
    );
    // A background VP's own buffer.
    let img = shot(&c, Some("blue"));
    assert_eq!(pixel(&img, 0, 0), BLUE);
    // Bad requests name the problem.
    let e = c.fails(&["screenshot", "--vp", "ghost", "-o", "/tmp/x.png"]);
    assert!(e.contains("no VP named 'ghost'"), "{e}");
}

#[test]
fn next_prev_and_stopping_the_foreground() {
    let c = three();
    c.ok(&["switch", "blue"]);
    // Name order: blue, green, red.
    assert_eq!(c.ok(&["next"]).trim(), "green");
    assert_eq!(c.ok(&["next"]).trim(), "red");
    assert_eq!(c.ok(&["next"]).trim(), "blue");
    assert_eq!(c.ok(&["prev"]).trim(), "red");
    assert_eq!(pixel(&shot(&c, None), 5, 5), RED);
    // The foreground stops: the next running VP takes over, panel included.
    c.ok(&["stop", "red"]);
    let fg = c.ok(&["foreground"]).trim().to_string();
    assert!(fg == "blue" || fg == "green", "{fg}");
    let color = if fg == "blue" { BLUE } else { GREEN };
    assert_eq!(pixel(&shot(&c, None), 5, 5), color);
    // A stopped VP cannot be switched to.
    let e = c.fails(&["switch", "red"]);
    assert!(
        e.contains("not running") && e.contains("cellctl start red"),
        "{e}"
    );
    // Input with nobody in the foreground is dropped without error.
    c.ok(&["stop", "blue", "green"]);
    assert_eq!(c.ok(&["foreground"]).trim(), "");
    c.ok(&["input", "tap", "1", "1"]);
    c.ok(&["input", "key", "HOME"]);
    assert_eq!(
        pixel(&shot(&c, None), 5, 5),
        Rgb(0),
        "the panel is black with no VP"
    );
    let e = c.fails(&["next"]);
    assert!(e.contains("no VP is running"), "{e}");
    // Off-panel coordinates and unknown keys are refused.
    let e = c.fails(&["input", "tap", "5000", "1"]);
    assert!(e.contains("off the panel"), "{e}");
    let e = c.fails(&["input", "key", "NOPE"]);
    assert!(
        e.contains("unknown key 'NOPE'") && e.contains("HOME"),
        "{e}"
    );
    let e = c.fails(&["create", "x", "--template", "minimal", "--color", "purple"]);
    assert!(e.contains("invalid colour 'purple'"), "{e}");
}

#[test]
fn vp_sees_its_framebuffer_and_input_devices() {
    let c = Cells::new();
    c.create_start("w");
    let info = c.sh_ok("w", "cat /dev/graphics/fb0.info");
    assert!(
        info.contains("width=720")
            && info.contains("height=1280")
            && info.contains("format=XRGB8888")
    );
    assert_eq!(
        c.sh_ok("w", "stat -c %s /dev/fb0").trim(),
        (720 * 1280 * 4).to_string()
    );
    // Both names are the same framebuffer.
    c.sh_ok(
        "w",
        "printf 'abcd' | dd of=/dev/fb0 bs=1 seek=100 conv=notrunc 2>/dev/null",
    );
    assert_eq!(
        c.sh_ok(
            "w",
            "dd if=/dev/graphics/fb0 bs=1 skip=100 count=4 2>/dev/null"
        ),
        "abcd"
    );
    // The touchscreen and keys (input), the accelerometer (sensors).
    let inputs = c.sh_ok("w", "ls /dev/input");
    assert_eq!(
        inputs.split_whitespace().collect::<Vec<_>>(),
        ["event0", "event1", "event2"]
    );
    // The colour and framebuffer reach the VP's environment.
    let env = c.sh_ok("w", "echo $CELLS_COLOR $CELLS_FB");
    assert_eq!(
        env.trim(),
        format!("{} /dev/graphics/fb0", Rgb::from_name("w").hex())
    );
    // Survives a cellsd restart: the devices are the VP's (its monitor's).
    let mut c = c;
    c.end_daemon(libc::SIGTERM);
    c.start_daemon();
    c.ok(&["input", "tap", "7", "8"]);
    assert!(Cells::wait_until(Duration::from_secs(5), || input_log(
        &c, "w"
    )
    .contains("EV_ABS ABS_MT_POSITION_X 7")));
    assert_eq!(pixel(&shot(&c, None), 360, 100), Rgb::from_name("w"));
}

#[test]
fn the_injection_socket_is_an_input_source() {
    use cellsd::devices::input::event::*;
    use cellsd::devices::input::inject::{message, KIND_KEYS, KIND_TOUCH};
    let c = three();
    c.ok(&["switch", "green"]);
    // SOCK_SEQPACKET: std has no type for it; connect with libc.
    let path =
        std::ffi::CString::new(c.run.join("input.sock").to_string_lossy().as_bytes()).unwrap();
    // SAFETY: plain socket calls on a fresh fd with a zeroed address.
    let fd = unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0);
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (i, b) in path.as_bytes_with_nul().iter().enumerate() {
            addr.sun_path[i] = *b as libc::c_char;
        }
        let r = libc::connect(
            fd,
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as u32,
        );
        assert_eq!(r, 0);
        fd
    };
    let send = |m: Vec<u8>| {
        // SAFETY: sending our buffer on our socket.
        let n = unsafe { libc::send(fd, m.as_ptr().cast(), m.len(), 0) };
        assert_eq!(n, m.len() as isize);
    };
    send(message(
        KIND_KEYS,
        &[InputEvent::new(EV_KEY, 158, 1), InputEvent::syn()],
    ));
    send(message(
        KIND_KEYS,
        &[InputEvent::new(EV_KEY, 158, 0), InputEvent::syn()],
    ));
    send(message(
        KIND_TOUCH,
        &[
            InputEvent::new(EV_ABS, ABS_MT_SLOT, 0),
            InputEvent::new(EV_ABS, ABS_MT_TRACKING_ID, 9),
            InputEvent::new(EV_ABS, ABS_MT_POSITION_X, 123),
            InputEvent::new(EV_ABS, ABS_MT_POSITION_Y, 456),
            InputEvent::syn(),
        ],
    ));
    assert!(Cells::wait_until(Duration::from_secs(5), || {
        let log = input_log(&c, "green");
        log.contains("EV_KEY KEY_BACK 0") && log.contains("EV_ABS ABS_MT_POSITION_Y 456")
    }));
    // Closing the source mid-touch: the contact stays with green until a
    // switch releases it.
    // SAFETY: closing our socket.
    unsafe { libc::close(fd) };
    c.ok(&["switch", "red"]);
    assert!(Cells::wait_until(Duration::from_secs(5), || input_log(
        &c, "green"
    )
    .contains("ABS_MT_TRACKING_ID -1")));
    assert_eq!(input_log(&c, "red"), "");
}
