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
    let nodes = "ls /dev/fb0 /dev/graphics/fb0 /dev/input/ 2>&1; echo end";
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
    assert!(!bare.contains("event"), "{bare}");
    assert_eq!(bare.matches("No such file").count(), 3, "{bare}");
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
