//! The lights device: each VP's views of /sys/class/leds (with the LED
//! vibrator) and /sys/class/backlight. The foreground's writes reach the
//! device; a background VP's succeed, change nothing, and are replayed when
//! it becomes the foreground; only the foreground vibrates. (This host has
//! no LED or backlight class devices: cells' own, recorded, stand in; the
//! emulator checks a real class device.)

use cells_tests::Cells;

fn lights(c: &Cells) -> serde_json::Value {
    let d: serde_json::Value = serde_json::from_str(&c.ok(&["display", "--json"])).unwrap();
    d["lights"].clone()
}

fn in_force(c: &Cells, light: &str) -> (u64, String) {
    let l = lights(c);
    (
        l["lights"][light]["value"].as_u64().unwrap(),
        l["lights"][light]["by"].as_str().unwrap().to_string(),
    )
}

/// `light` shows `value`, set by `by` (the VP's write reaches cellsd
/// through its monitor: allow it a moment). A check that something did not
/// change gives it the same moment first.
fn expect(c: &Cells, light: &str, value: u64, by: &str) {
    std::thread::sleep(std::time::Duration::from_millis(100));
    let ok = Cells::wait_until(std::time::Duration::from_secs(2), || {
        in_force(c, light) == (value, by.to_string())
    });
    assert!(ok, "{light}: {:?}, not ({value}, {by})", in_force(c, light));
}

#[test]
fn the_foreground_sets_the_lights_and_a_switch_replays_the_new_ones() {
    let c = Cells::new();
    c.create_start("a");
    c.create_start("b");
    assert_eq!(c.status("a")["foreground"], true);
    c.sh_ok(
        "a",
        "echo 200 > /sys/class/leds/red/brightness; echo 80 > /sys/class/backlight/panel0/brightness",
    );
    // Control: the foreground's writes are in force.
    expect(&c, "leds/red", 200, "a");
    expect(&c, "backlight/panel0", 80, "a");
    let d: serde_json::Value = serde_json::from_str(&c.ok(&["display", "--json"])).unwrap();
    assert_eq!(d["brightness"]["panel0"], 80, "{d}");
    // A background VP's write succeeds, changes nothing, reads back its own.
    c.sh_ok(
        "b",
        "echo 7 > /sys/class/leds/red/brightness; echo 30 > /sys/class/backlight/panel0/brightness",
    );
    assert_eq!(c.sh_ok("b", "cat /sys/class/leds/red/brightness"), "7\n");
    assert_eq!(c.sh_ok("a", "cat /sys/class/leds/red/brightness"), "200\n");
    expect(&c, "leds/red", 200, "a");
    expect(&c, "backlight/panel0", 80, "a");
    // The switch replays b's last values; back to a, a's.
    c.ok(&["switch", "b"]);
    expect(&c, "leds/red", 7, "b");
    expect(&c, "backlight/panel0", 30, "b");
    c.ok(&["switch", "a"]);
    expect(&c, "backlight/panel0", 80, "a");
}

#[test]
fn only_the_foreground_vibrates_and_bad_writes_are_refused() {
    let c = Cells::new();
    c.create_start("a");
    c.create_start("b");
    c.sh_ok(
        "b",
        "echo 500 > /sys/class/leds/vibrator/duration; echo 1 > /sys/class/leds/vibrator/activate",
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        lights(&c)["vibration"].is_null(),
        "a background VP vibrated"
    );
    assert_eq!(lights(&c)["vibrations_ignored"], 1);
    c.sh_ok(
        "a",
        "echo 150 > /sys/class/leds/vibrator/duration; echo 1 > /sys/class/leds/vibrator/activate; \
         cat /sys/class/leds/vibrator/state > /data/state",
    );
    Cells::wait_until(std::time::Duration::from_secs(2), || {
        !lights(&c)["vibration"].is_null()
    });
    let v = &lights(&c)["vibration"];
    assert_eq!(
        (v["vp"].as_str(), v["ms"].as_u64()),
        (Some("a"), Some(150)),
        "{v}"
    );
    assert_eq!(c.sh_ok("a", "cat /data/state"), "1\n");
    // Bad writes: EINVAL, nothing changed.
    c.sh_ok("a", "echo 100 > /sys/class/leds/green/brightness");
    for bad in [
        "echo 256 > /sys/class/leds/green/brightness",
        "echo bright > /sys/class/leds/green/brightness",
        "echo -1 > /sys/class/backlight/panel0/brightness",
        "echo 1 > /sys/class/leds/green/max_brightness",
        "echo 2 > /sys/class/leds/vibrator/activate",
        "echo 600000 > /sys/class/leds/vibrator/duration",
    ] {
        let o = c.sh("a", bad);
        assert_ne!(o.code, 0, "`{bad}` was accepted");
    }
    assert_eq!(
        c.sh_ok("a", "cat /sys/class/leds/green/brightness"),
        "100\n"
    );
    expect(&c, "leds/green", 100, "a");
}

#[test]
fn the_lights_survive_a_cellsd_restart_and_none_has_no_views() {
    let mut c = Cells::new();
    c.create_start("a");
    c.create_start("b");
    c.sh_ok("b", "echo 9 > /sys/class/leds/blue/brightness");
    c.end_daemon(libc::SIGKILL);
    c.start_daemon();
    // The monitor kept b's value; the new cellsd replays it on the switch.
    c.ok(&["switch", "b"]);
    expect(&c, "leds/blue", 9, "b");
    c.ok(&[
        "create",
        "dark",
        "--template",
        "minimal",
        "--device",
        "lights=none",
    ]);
    c.ok(&["start", "dark"]);
    // Control: a has the views, with the rest of /sys/class as it was.
    assert!(c.sh_ok("a", "ls /sys/class/leds").contains("vibrator"));
    assert!(c
        .sh_ok("a", "cat /sys/class/net/lo/address")
        .contains("00:00:00"));
    let o = c.sh("dark", "ls /sys/class/leds/red");
    assert_ne!(o.code, 0, "{o:?}");
}
