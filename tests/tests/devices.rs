//! The device model: per-VP device policies (`cellctl create --device
//! NAME=POLICY`), kept in vp.json, shown by `status`, and what a VP without
//! a device sees.

use cells_tests::Cells;

fn devices(c: &Cells, vp: &str) -> serde_json::Value {
    c.status(vp)["devices"].clone()
}

#[test]
fn a_vp_without_display_and_input_has_no_such_nodes() {
    let c = Cells::new();
    // Positive control: the defaults.
    c.create_start("full");
    let d = devices(&c, "full");
    assert_eq!(d["display"], "foreground", "{d}");
    assert_eq!(d["input"], "foreground");
    assert_eq!(d["power"], "shared");
    assert_eq!(d["binder"], "shared");
    assert_eq!(d["network"], "shared");
    let nodes = "ls /dev/fb0 /dev/graphics/fb0 /dev/input/event0 /dev/input/event1 2>&1; echo end";
    let full = c.sh_ok("full", nodes);
    assert!(
        full.contains("/dev/fb0") && full.contains("event"),
        "{full}"
    );
    assert!(!full.contains("No such file"), "{full}");

    c.ok(&[
        "create",
        "bare",
        "--template",
        "minimal",
        "--device",
        "display=none",
        "--device",
        "input=none,network=none",
    ]);
    let d = devices(&c, "bare");
    assert_eq!(d["display"], "none", "{d}");
    assert_eq!(d["input"], "none");
    assert_eq!(d["network"], "none");
    assert_eq!(d["power"], "shared");
    assert_eq!(c.status("bare")["network"], "none");
    // Kept in vp.json: only what differs from the defaults.
    let vp_json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(c.state.join("vps/bare/vp.json")).expect("vp.json"),
    )
    .expect("vp.json is JSON");
    assert_eq!(
        vp_json["cells"]["devices"],
        serde_json::json!({"display": "none", "input": "none"})
    );
    c.ok(&["start", "bare"]);
    let bare = c.sh_ok("bare", nodes);
    assert_eq!(bare.matches("No such file").count(), 4, "{bare}");
    // Only loopback: no eth0.
    let links = c.sh_ok("bare", "ls /sys/class/net");
    assert!(!links.contains("eth0"), "{links}");
    assert!(c.sh_ok("full", "ls /sys/class/net").contains("eth0"));
    // It can still be the foreground; the panel and input go to it.
    c.ok(&["switch", "bare"]);
    assert_eq!(c.status("bare")["foreground"], true);
    c.ok(&["input", "tap", "10", "10"]);
    let human = c.ok(&["status", "bare"]);
    assert!(
        human.contains("display=none input=none power=shared binder=shared network=none"),
        "{human}"
    );
    // And the VP with devices still works after the switch back.
    c.ok(&["switch", "full"]);
    let (w, h, _) = c.shot(Some("full"));
    assert!(w > 0 && h > 0);
}

/// `cellctl create x --template minimal ARGS...`, which must fail: its stderr.
fn create_fails(c: &Cells, args: &[&str]) -> String {
    let mut a = vec!["create", "x", "--template", "minimal"];
    a.extend_from_slice(args);
    c.fails(&a)
}

#[test]
fn bad_device_settings_are_refused_with_what_to_write() {
    let c = Cells::new();
    let e = create_fails(&c, &["--device", "camera=none"]);
    assert!(
        e.contains(
            "no device named 'camera': the devices are display, input, power, binder, network"
        ),
        "{e}"
    );
    let e = create_fails(&c, &["--device", "display=shared"]);
    assert!(
        e.contains("'shared' is not a policy of the display device: use foreground or none"),
        "{e}"
    );
    let e = create_fails(&c, &["--device", "input"]);
    assert!(e.contains("is not NAME=POLICY"), "{e}");
    let e = create_fails(&c, &["--device", "network=none", "--network", "isolated"]);
    assert!(
        e.contains("give one of --device network=none or --network"),
        "{e}"
    );
    // Nothing was made.
    assert!(!c.state.join("vps/x").exists());
    let list: serde_json::Value =
        serde_json::from_str(&c.ok(&["list", "--json"])).expect("list JSON");
    assert_eq!(list, serde_json::json!([]), "{list}");
}

#[test]
fn a_vp_without_power_has_no_sys_power_and_holds_no_lock_but_still_freezes() {
    let c = Cells::new();
    // Positive control: a default VP takes a lock.
    c.create_start("full");
    c.ok(&[
        "create",
        "nopower",
        "--template",
        "minimal",
        "--device",
        "power=none",
    ]);
    assert_eq!(devices(&c, "nopower")["power"], "none");
    c.ok(&["start", "nopower"]);
    c.sh_ok("full", "echo held > /sys/power/wake_lock");
    assert!(c.sh_ok("full", "cat /sys/power/wake_lock").contains("held"));
    // No /sys/power files, and nothing to write a lock into.
    let ls = c.sh_ok("nopower", "ls -A /sys/power; echo end");
    assert_eq!(ls.trim(), "end", "{ls}");
    let w = c.sh("nopower", "echo held > /sys/power/wake_lock");
    assert_ne!(w.code, 0, "a VP without power wrote a lock: {w:?}");
    let power: serde_json::Value =
        serde_json::from_str(&c.ok(&["power", "--json"])).expect("power JSON");
    assert_eq!(
        power["wakelocks"]["full"],
        serde_json::json!(["held"]),
        "{power}"
    );
    assert!(
        power["wakelocks"]["nopower"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "{power}"
    );
    assert_eq!(power["blocked_by"], serde_json::json!(["full"]), "{power}");
    // The monitor's link to cellsd is there all the same: the VP freezes
    // while a process of it waits in a read of its input device.
    c.sh_ok(
        "nopower",
        "(cat /dev/input/event1 > /dev/null &) ; sleep 0.2; echo started",
    );
    c.ok(&["freeze", "nopower"]);
    assert_eq!(c.status("nopower")["frozen"], true);
    c.ok(&["thaw", "nopower"]);
    assert_eq!(c.status("nopower")["frozen"], false);
}

/// The state letter of a VP process (`/proc/PID/stat` in the VP), or "gone".
fn vp_proc_state(c: &Cells, vp: &str, pid: &str) -> String {
    let s = c.sh_ok(
        vp,
        &format!("cat /proc/{pid}/stat 2>/dev/null || echo gone"),
    );
    if s.trim() == "gone" {
        return "gone".into();
    }
    // pid (comm) S ...
    s.rsplit(") ")
        .next()
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("?")
        .to_string()
}

#[test]
fn a_reader_blocked_in_a_device_ends_when_killed_and_its_vp_stops() {
    let c = Cells::new();
    c.create_start("a");
    // A background VP: its wait_for_fb_wake blocks.
    c.create_start("b");
    assert_eq!(c.status("a")["foreground"], true);
    let start = |vp: &str, file: &str| -> String {
        c.sh_ok(vp, &format!("cat {file} > /dev/null & echo $!"))
            .trim()
            .to_string()
    };
    for (vp, file) in [
        ("a", "/dev/input/event0"),
        ("a", "/dev/input/event1"),
        ("b", "/sys/power/wait_for_fb_wake"),
    ] {
        let pid = start(vp, file);
        std::thread::sleep(std::time::Duration::from_millis(300));
        // Control: blocked in the read (sleeping: S, or D once the kernel
        // knows the server takes no interrupts), not ended.
        let st = vp_proc_state(&c, vp, &pid);
        assert!(st == "S" || st == "D", "{vp} {file}: {st}");
        c.sh_ok(vp, &format!("kill -9 {pid}"));
        let ended = Cells::wait_until(std::time::Duration::from_secs(5), || {
            matches!(vp_proc_state(&c, vp, &pid).as_str(), "gone" | "Z")
        });
        assert!(
            ended,
            "{vp}: a reader of {file} did not end after SIGKILL: {}",
            vp_proc_state(&c, vp, &pid)
        );
    }
    // A reader still blocked when the VP stops: the stop ends it.
    start("a", "/dev/input/event1");
    start("b", "/sys/power/wait_for_fb_wake");
    let t = std::time::Instant::now();
    c.ok(&["stop", "a", "b", "--timeout", "5"]);
    assert_eq!(c.status("a")["state"], "stopped");
    assert_eq!(c.status("b")["state"], "stopped");
    eprintln!("stopped in {:?}", t.elapsed());
}
