//! The sensors device: an accelerometer (/dev/input/event2) and a GPS
//! receiver (/dev/ttyGPS0) per VP, fed from the host; by default only the
//! foreground VP's streams run.

use std::time::Duration;

use cells_tests::Cells;

/// Start a reader of the accelerometer in `vp` (events into /data/accel).
fn read_accel(c: &Cells, vp: &str, n: usize) {
    c.sh_ok(
        vp,
        &format!(
            "rm -f /data/accel; (/data/probe evdev-read /dev/input/event2 {n} 4000 > /data/accel &); \
             i=0; while ! grep -q open /data/accel 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; \
             grep -q open /data/accel"
        ),
    );
}

/// What the accelerometer reader saw: "type code value" lines.
fn accel_seen(c: &Cells, vp: &str) -> String {
    c.sh_ok(vp, "sleep 0.3; cat /data/accel")
}

/// NMEA sentences read from the VP's GPS tty for about `secs`.
fn gps_seen(c: &Cells, vp: &str, secs: f64) -> String {
    c.sh_ok(
        vp,
        &format!("cat /dev/ttyGPS0 > /data/gps & p=$!; sleep {secs}; kill $p; cat /data/gps"),
    )
}

#[test]
fn only_the_foreground_gets_readings_and_a_switch_brings_them() {
    let c = Cells::new();
    c.create_start("a");
    c.create_start("b");
    c.push_probe("a");
    c.push_probe("b");
    assert_eq!(c.status("a")["foreground"], true);
    read_accel(&c, "a", 4);
    read_accel(&c, "b", 4);
    c.ok(&["sensor", "set", "accel", "0", "9.80665", "-4.903325"]);
    // EV_ABS (3) X, Y, Z in milli-g, then SYN_REPORT.
    let a = accel_seen(&c, "a");
    assert!(a.contains("3 0 0\n3 1 1000\n3 2 -500\n0 0 0"), "{a}");
    let b = accel_seen(&c, "b");
    assert_eq!(
        b.trim(),
        "open",
        "a background VP got the foreground's readings: {b}"
    );
    c.ok(&["location", "set", "--", "-33.8568", "151.2153", "5"]);
    let g = gps_seen(&c, "a", 1.5);
    assert!(
        g.contains(",3351.4080,S,15112.9180,E,1,08,0.9,5.0,M") && g.contains("$GPRMC,"),
        "{g}"
    );
    assert_eq!(gps_seen(&c, "b", 1.5), "", "b's receiver is silent");
    let info = c.ok(&["sensor", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v["active"], serde_json::json!(["a"]));
    // The switch: b gets the readings in force at once, a's stop.
    read_accel(&c, "b", 4);
    c.ok(&["switch", "b"]);
    let b = accel_seen(&c, "b");
    assert!(
        b.contains("3 1 1000"),
        "the switch brought b the reading: {b}"
    );
    assert!(gps_seen(&c, "b", 1.5).contains("3351.4080,S"));
    assert_eq!(gps_seen(&c, "a", 1.5), "");
    read_accel(&c, "a", 4);
    c.ok(&["sensor", "set", "accel", "1", "2", "3"]);
    assert_eq!(accel_seen(&c, "a").trim(), "open");
}

#[test]
fn a_shared_vp_gets_readings_in_the_background_and_none_has_no_sensors() {
    let c = Cells::new();
    c.create_start("fg");
    c.ok(&[
        "create",
        "bg",
        "--template",
        "minimal",
        "--device",
        "sensors=shared",
    ]);
    c.ok(&["start", "bg"]);
    c.ok(&[
        "create",
        "no",
        "--template",
        "minimal",
        "--device",
        "sensors=none",
    ]);
    c.ok(&["start", "no"]);
    c.push_probe("bg");
    read_accel(&c, "bg", 4);
    c.ok(&["sensor", "set", "accel", "0", "0", "9.80665"]);
    assert!(accel_seen(&c, "bg").contains("3 2 1000"));
    // Control: fg has the nodes; no has neither.
    assert!(c
        .sh_ok("fg", "ls /dev/input/event2 /dev/ttyGPS0")
        .contains("ttyGPS0"));
    let ls = c.sh("no", "ls /dev/input/event2 /dev/ttyGPS0");
    assert_eq!(ls.stderr.matches("No such file").count(), 2, "{ls:?}");
}

#[test]
fn bad_readings_are_refused_and_readings_survive_a_cellsd_restart() {
    let mut c = Cells::new();
    c.create_start("a");
    c.push_probe("a");
    c.ok(&["sensor", "set", "accel", "0", "9.81", "0"]);
    c.ok(&["location", "set", "45.5", "7.25"]);
    for (args, what) in [
        (vec!["sensor", "set", "accel", "0", "100", "0"], "±8 g"),
        (vec!["sensor", "set", "accel", "1"], "X Y Z"),
        (
            vec!["sensor", "set", "gyro", "1", "2", "3"],
            "no sensor named 'gyro'",
        ),
        (vec!["location", "set", "91", "0"], "latitude 91"),
        (vec!["location", "set", "0", "200"], "longitude 200"),
    ] {
        let e = c.fails(&args);
        assert!(e.contains(what), "{args:?}: {e}");
    }
    let v: serde_json::Value = serde_json::from_str(&c.ok(&["sensor", "--json"])).unwrap();
    assert_eq!(v["accel"], serde_json::json!([0.0, 9.81, 0.0]), "unchanged");
    assert_eq!(v["location"], serde_json::json!([45.5, 7.25, 0.0]));
    c.end_daemon(libc::SIGKILL);
    c.start_daemon();
    let v: serde_json::Value = serde_json::from_str(&c.ok(&["sensor", "--json"])).unwrap();
    assert_eq!(v["accel"], serde_json::json!([0.0, 9.81, 0.0]), "kept");
    assert_eq!(v["active"], serde_json::json!(["a"]));
    // The adopted VP's receiver runs again.
    std::thread::sleep(Duration::from_millis(200));
    assert!(gps_seen(&c, "a", 1.5).contains("4530.0000,N,00715.0000,E"));
}
