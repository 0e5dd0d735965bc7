//! The alarm device: Android's /dev/alarm per VP. Alarms fire in the
//! background (a frozen VP is thawed for them), wake-up alarms arm a host
//! alarm timer, and only the foreground VP sets the (shared) clock.

use std::time::Duration;

use cells_tests::Cells;

fn alarms(c: &Cells) -> serde_json::Value {
    serde_json::from_str(&c.ok(&["alarms", "--json"])).expect("alarms JSON")
}

#[test]
fn an_alarm_thaws_a_frozen_background_vp_and_fires_there() {
    let c = Cells::new();
    c.create_start("fg");
    c.ok(&[
        "create",
        "bg",
        "--template",
        "minimal",
        "--background",
        "freeze-after=500ms",
    ]);
    c.ok(&["start", "bg"]);
    c.sh_ok(
        "bg",
        "(alarm wait-in 4 elapsed_wakeup > /data/fired 2>&1 &); sleep 0.2",
    );
    // Frozen by its policy meanwhile, the alarm not yet due.
    assert!(Cells::wait_until(Duration::from_secs(3), || c.status("bg")
        ["frozen"]
        == true));
    let init = c.status("bg")["pid"].as_u64().unwrap();
    let fired = format!("/proc/{init}/root/data/fired");
    assert_eq!(std::fs::read_to_string(&fired).unwrap_or_default(), "");
    // Due: cellsd thaws it and the alarm is delivered.
    assert!(
        Cells::wait_until(Duration::from_secs(6), || std::fs::read_to_string(&fired)
            .unwrap_or_default()
            .starts_with("fired elapsed_wakeup after 4.")),
        "{:?}",
        std::fs::read_to_string(&fired)
    );
    assert_eq!(alarms(&c)["vps"]["bg"]["fired"], 1);
}

#[test]
fn wakeup_alarms_arm_a_host_alarm_timer_and_survive_a_cellsd_restart() {
    let mut c = Cells::new();
    c.create_start("a");
    c.create_start("b");
    c.sh_ok("a", "(alarm wait-in 300 rtc_wakeup &); sleep 0.2");
    c.sh_ok("b", "(alarm wait-in 100 rtc_wakeup &); sleep 0.2");
    let v = alarms(&c);
    let a = v["vps"]["a"]["rtc_wakeup_ns"].as_f64().unwrap();
    let b = v["vps"]["b"]["rtc_wakeup_ns"].as_f64().unwrap();
    assert!(a - b > 150e9, "{v}");
    // The host timer is armed (the kernel says so) for the earliest one.
    let host = v["host_rtc_alarm_ns"].as_f64().expect("armed");
    assert!((host - b).abs() < 1e6, "host {host} vs b {b}: {v}");
    c.end_daemon(libc::SIGKILL);
    c.start_daemon();
    let v = alarms(&c);
    assert_eq!(v["vps"]["b"]["rtc_wakeup_ns"].as_f64(), Some(b), "{v}");
    assert!((v["host_rtc_alarm_ns"].as_f64().unwrap() - b).abs() < 1e6);
    c.sh_ok("b", "alarm clear rtc_wakeup");
    assert!(Cells::wait_until(Duration::from_secs(2), || {
        (alarms(&c)["host_rtc_alarm_ns"].as_f64().unwrap_or(0.0) - a).abs() < 1e6
    }));
}

#[test]
fn only_the_foreground_sets_the_clock_and_none_has_no_alarm() {
    let c = Cells::new();
    c.create_start("a");
    c.create_start("b");
    // The background VP is refused, with why.
    let o = c.sh("b", "alarm set-time +0");
    assert_ne!(o.code, 0);
    assert!(
        o.stderr
            .contains("only the foreground VP may set the clock"),
        "{o:?}"
    );
    assert!(alarms(&c)["clock_set_by"].as_str().unwrap_or("").is_empty());
    // The foreground sets it (to now: the host's clock is not moved here;
    // the emulator checks that a real change reaches every VP).
    c.sh_ok("a", "alarm set-time +0");
    assert!(Cells::wait_until(Duration::from_secs(2), || alarms(&c)
        ["clock_set_by"]
        == "a"));
    // A waiter killed meanwhile ends.
    let pid = c.sh_ok("b", "alarm wait-in 600 > /dev/null & echo $!");
    std::thread::sleep(Duration::from_millis(300));
    c.sh_ok("b", &format!("kill -9 {}", pid.trim()));
    assert!(Cells::wait_until(Duration::from_secs(3), || {
        !c.sh_ok(
            "b",
            &format!("cat /proc/{}/stat 2>/dev/null || echo gone", pid.trim()),
        )
        .contains(" D ")
    }));
    c.ok(&[
        "create",
        "plain",
        "--template",
        "minimal",
        "--device",
        "alarm=none",
    ]);
    c.ok(&["start", "plain"]);
    let o = c.sh("plain", "alarm wait-in 1");
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("alarm device"), "{o:?}");
}
