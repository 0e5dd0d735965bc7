//! Issue #5: namespace-aware power. Each VP's /sys/power (a FUSE file
//! system its monitor serves), wakelock aggregation in cellsd, early
//! suspend across switches and the background freeze policy.

use std::path::PathBuf;
use std::time::Duration;

use cells_tests::{Cells, Value};

fn power(c: &Cells) -> Value {
    serde_json::from_str(&c.ok(&["power", "--json"])).expect("power JSON")
}

fn locks_in_vp(c: &Cells, vp: &str) -> String {
    c.sh_ok(vp, "cat /sys/power/wake_lock").trim().to_string()
}

/// cellsd hears of a lock change right after the write returns (the
/// monitor reports it asynchronously): wait for it.
fn wait_power(c: &Cells, what: &str, cond: impl Fn(&Value) -> bool) {
    let mut last = Value::Null;
    let ok = Cells::wait_until(Duration::from_secs(5), || {
        last = power(c);
        cond(&last)
    });
    assert!(ok, "power never showed {what}: {last:#}");
}

fn wakelocks_of<'a>(p: &'a Value, vp: &str) -> Vec<&'a str> {
    p["wakelocks"][vp]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default()
}

#[test]
fn each_vp_sees_and_releases_only_its_own_locks() {
    let c = Cells::new();
    c.create_start("a");
    c.create_start("b");
    let ls = c.sh_ok("a", "ls /sys/power");
    for f in [
        "state",
        "wait_for_fb_sleep",
        "wait_for_fb_wake",
        "wake_lock",
        "wake_unlock",
    ] {
        assert!(ls.contains(f), "/sys/power lacks {f}: {ls}");
    }
    c.sh_ok("a", "echo music > /sys/power/wake_lock");
    c.sh_ok("a", "echo gps > /sys/power/wake_lock");
    assert_eq!(locks_in_vp(&c, "a"), "gps music");
    assert_eq!(locks_in_vp(&c, "b"), "", "B sees A's locks");
    // B cannot release A's lock of the same name: it holds none.
    let out = c.sh("b", "echo music > /sys/power/wake_unlock");
    assert_ne!(
        out.code, 0,
        "B's unlock of a name it does not hold must fail"
    );
    assert!(out.stderr.contains("Invalid argument"), "{}", out.stderr);
    assert_eq!(locks_in_vp(&c, "a"), "gps music");
    // B takes its own lock of that name: two locks, one per VP.
    c.sh_ok("b", "echo music > /sys/power/wake_lock");
    wait_power(&c, "both VPs' locks", |p| {
        wakelocks_of(p, "a") == ["gps", "music"] && wakelocks_of(p, "b") == ["music"]
    });
    assert_eq!(c.ok(&["wakelocks", "a"]), "gps\nmusic\n");
    c.sh_ok("b", "echo music > /sys/power/wake_unlock");
    assert_eq!(locks_in_vp(&c, "a"), "gps music", "B's unlock released A's");
    c.sh_ok("a", "echo music > /sys/power/wake_unlock");
    assert_eq!(locks_in_vp(&c, "a"), "gps");
    wait_power(&c, "a's one lock", |p| {
        wakelocks_of(p, "a") == ["gps"] && wakelocks_of(p, "b").is_empty()
    });
    assert!(c
        .fails(&["wakelocks", "nope"])
        .contains("no VP named 'nope'"));
}

#[test]
fn suspend_is_blocked_exactly_while_some_lock_is_held_and_timeouts_expire() {
    let c = Cells::new();
    c.create_start("a");
    c.create_start("b");
    let p = power(&c);
    assert_eq!(p["suspend_blocked"], false, "{p:#}");
    assert_eq!(p["suspend_allowed"], true);
    c.sh_ok("a", "echo one > /sys/power/wake_lock");
    wait_power(&c, "a blocking", |p| {
        p["suspend_blocked"] == true && p["blocked_by"] == serde_json::json!(["a"])
    });
    c.sh_ok("b", "echo two > /sys/power/wake_lock");
    wait_power(&c, "a and b blocking", |p| {
        p["blocked_by"] == serde_json::json!(["a", "b"])
    });
    c.sh_ok("a", "echo one > /sys/power/wake_unlock");
    wait_power(&c, "b alone blocking", |p| {
        p["suspend_blocked"] == true && p["blocked_by"] == serde_json::json!(["b"])
    });
    c.sh_ok("b", "echo two > /sys/power/wake_unlock");
    wait_power(&c, "nothing blocking", |p| {
        p["suspend_blocked"] == false && p["blocked_by"] == serde_json::json!([])
    });

    // A lock with a timeout (ns) goes by itself, in the VP and in cellsd.
    c.sh_ok("a", "echo brief 300000000 > /sys/power/wake_lock");
    assert_eq!(locks_in_vp(&c, "a"), "brief");
    wait_power(&c, "the timed lock expiring", |p| {
        p["suspend_blocked"] == false && wakelocks_of(p, "a").is_empty()
    });
    assert_eq!(locks_in_vp(&c, "a"), "");
    // Re-locking with a timeout replaces an untimed lock's lifetime.
    c.sh_ok(
        "a",
        "echo keep > /sys/power/wake_lock; echo keep 200000000 > /sys/power/wake_lock",
    );
    wait_power(&c, "the refreshed lock expiring", |p| {
        wakelocks_of(p, "a").is_empty()
    });

    // A VP that stops loses its locks.
    c.sh_ok("b", "echo held > /sys/power/wake_lock");
    wait_power(&c, "b's lock", |p| p["suspend_blocked"] == true);
    c.ok(&["stop", "b"]);
    let p = power(&c);
    assert_eq!(p["suspend_blocked"], false, "{p:#}");
    assert!(p["wakelocks"].get("b").is_none(), "{p:#}");
}

#[test]
fn bad_writes_get_einval_and_change_nothing() {
    let c = Cells::new();
    c.create_start("a");
    c.sh_ok("a", "echo keep > /sys/power/wake_lock");
    let long = "x".repeat(200);
    for (what, script) in [
        ("empty name", "echo > /sys/power/wake_lock".to_string()),
        (
            "blank name",
            "echo '   ' > /sys/power/wake_lock".to_string(),
        ),
        ("huge name", format!("echo {long} > /sys/power/wake_lock")),
        (
            "garbage timeout",
            "echo x soon > /sys/power/wake_lock".into(),
        ),
        (
            "negative timeout",
            "echo x -5 > /sys/power/wake_lock".into(),
        ),
        ("zero timeout", "echo x 0 > /sys/power/wake_lock".into()),
        ("extra words", "echo x 5 6 > /sys/power/wake_lock".into()),
        (
            "unlock of nothing",
            "echo nothing > /sys/power/wake_unlock".into(),
        ),
        ("empty unlock", "echo > /sys/power/wake_unlock".into()),
        ("bad state", "echo sleep > /sys/power/state".into()),
    ] {
        let o = c.sh("a", &script);
        assert_ne!(o.code, 0, "{what} was accepted");
        assert!(
            o.stderr.contains("Invalid argument"),
            "{what}: expected EINVAL, got {:?}",
            o.stderr
        );
    }
    assert_eq!(locks_in_vp(&c, "a"), "keep");
    let p = power(&c);
    assert_eq!(wakelocks_of(&p, "a"), ["keep"], "{p:#}");
    assert_eq!(p["suspend_requested"], false);
    assert_eq!(p["screen"], "on");
    // The files cannot be removed or created.
    assert_ne!(c.sh("a", "rm /sys/power/wake_lock").code, 0);
    assert_ne!(c.sh("a", "touch /sys/power/other").code, 0);
}

#[test]
fn only_the_foregrounds_state_write_counts() {
    let c = Cells::new();
    c.create_start("a");
    c.create_start("b");
    assert_eq!(c.ok(&["foreground"]).trim(), "a");
    // A background VP asks to suspend: recorded, ignored.
    c.sh_ok("b", "echo mem > /sys/power/state");
    wait_power(&c, "the ignored request", |p| p["ignored_requests"] == 1);
    let p = power(&c);
    assert_eq!(p["suspend_requested"], false, "{p:#}");
    assert_eq!(p["screen"], "on");
    assert!(
        p["last_request"].as_str().unwrap().contains("ignored"),
        "{p:#}"
    );
    // Nor can it wake the screen the foreground turned off.
    c.sh_ok("a", "echo mem > /sys/power/state");
    wait_power(&c, "the foreground's request", |p| {
        p["suspend_requested"] == true && p["screen"] == "off"
    });
    c.sh_ok("b", "echo on > /sys/power/state");
    wait_power(&c, "the second ignored request", |p| {
        p["ignored_requests"] == 2
    });
    assert_eq!(power(&c)["screen"], "off");
    c.sh_ok("a", "echo on > /sys/power/state");
    wait_power(&c, "the screen on again", |p| {
        p["screen"] == "on" && p["suspend_requested"] == false
    });
}

/// Start `cat /sys/power/FILE` in the VP's background; its output goes to
/// /data/OUT. Android's readers retry on EINTR, so does this one.
fn start_wait(c: &Cells, vp: &str, file: &str, out: &str) {
    c.sh_ok(
        vp,
        &format!(
            "(while ! cat /sys/power/{file} > /data/{out}.tmp 2>/dev/null; do sleep 0.01; done; \
             mv /data/{out}.tmp /data/{out}) </dev/null >/dev/null 2>&1 &"
        ),
    );
}

/// A running VP's /data file as the host sees it (the VP's disk is mounted
/// in its monitor's namespace only: through its init's root).
fn data_file(c: &Cells, vp: &str, file: &str) -> PathBuf {
    let pid = c.status(vp)["pid"].as_u64().unwrap_or(0);
    PathBuf::from(format!("/proc/{pid}/root/data")).join(file)
}

fn read_data(c: &Cells, vp: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(data_file(c, vp, file)).ok()
}

#[test]
fn fb_waits_follow_the_foreground_across_switches() {
    let c = Cells::new();
    c.create_start("a");
    c.create_start("b");
    // Foreground: awake now; background: asleep now (early suspend).
    assert_eq!(c.sh_ok("a", "cat /sys/power/wait_for_fb_wake"), "awake\n");
    assert_eq!(
        c.sh_ok("b", "cat /sys/power/wait_for_fb_sleep"),
        "sleeping\n"
    );
    // The other two block.
    start_wait(&c, "a", "wait_for_fb_sleep", "a-slept");
    start_wait(&c, "b", "wait_for_fb_wake", "b-woke");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        read_data(&c, "a", "a-slept"),
        None,
        "a's sleep wait returned"
    );
    assert_eq!(read_data(&c, "b", "b-woke"), None, "b's wake wait returned");
    // The switch wakes both: b's framebuffer wakes, a's goes to sleep.
    c.ok(&["switch", "b"]);
    assert!(
        Cells::wait_until(Duration::from_secs(5), || {
            read_data(&c, "b", "b-woke").as_deref() == Some("awake\n")
                && read_data(&c, "a", "a-slept").as_deref() == Some("sleeping\n")
        }),
        "after the switch: b {:?}, a {:?}",
        read_data(&c, "b", "b-woke"),
        read_data(&c, "a", "a-slept")
    );
    assert_eq!(
        c.sh_ok("a", "cat /sys/power/wait_for_fb_sleep"),
        "sleeping\n"
    );
    assert_eq!(c.sh_ok("b", "cat /sys/power/wait_for_fb_wake"), "awake\n");
    // The foreground turning its screen off puts its framebuffer to sleep;
    // on wakes it again.
    start_wait(&c, "b", "wait_for_fb_sleep", "b-slept");
    c.sh_ok("b", "echo mem > /sys/power/state");
    assert!(Cells::wait_until(Duration::from_secs(5), || read_data(
        &c, "b", "b-slept"
    )
    .as_deref()
        == Some("sleeping\n")));
    start_wait(&c, "b", "wait_for_fb_wake", "b-woke2");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(read_data(&c, "b", "b-woke2"), None);
    c.sh_ok("b", "echo on > /sys/power/state");
    assert!(Cells::wait_until(Duration::from_secs(5), || read_data(
        &c, "b", "b-woke2"
    )
    .as_deref()
        == Some("awake\n")));
}

/// A VP that appends a line to /data/ticks every 50 ms.
fn start_ticker(c: &Cells, vp: &str) {
    c.sh_ok(
        vp,
        "(while true; do echo t >> /data/ticks; sleep 0.05; done) </dev/null >/dev/null 2>&1 &",
    );
}

fn ticks(c: &Cells, vp: &str) -> usize {
    read_data(c, vp, "ticks").map(|s| s.len()).unwrap_or(0)
}

fn advancing(c: &Cells, vp: &str) -> bool {
    let before = ticks(c, vp);
    std::thread::sleep(Duration::from_millis(400));
    ticks(c, vp) > before
}

#[test]
fn the_freeze_policy_freezes_after_the_delay_and_the_switch_thaws() {
    let c = Cells::new();
    c.create_start("fg");
    c.ok(&[
        "create",
        "bg",
        "--template",
        "minimal",
        "--background",
        "freeze-after=2s",
    ]);
    c.ok(&["start", "bg"]);
    assert_eq!(c.status("bg")["background"], "freeze-after=2s");
    start_ticker(&c, "bg");
    // An Android-style reader of wait_for_fb_wake blocks in the VP's FUSE
    // file: the freeze must still complete.
    start_wait(&c, "bg", "wait_for_fb_wake", "woke");
    assert!(advancing(&c, "bg"), "the ticker does not run");
    assert_eq!(c.status("bg")["frozen"], false, "frozen before the delay");
    assert!(
        Cells::wait_until(Duration::from_secs(8), || c.status("bg")["frozen"] == true),
        "not frozen after the delay; log:\n{}",
        c.daemon_log()
    );
    let st = c.status("bg");
    assert_eq!(st["state"], "frozen", "{st:#}");
    assert!(!advancing(&c, "bg"), "a frozen VP's processes advance");
    assert_eq!(power(&c)["frozen"], serde_json::json!(["bg"]));
    // The switch thaws it before it returns.
    c.ok(&["switch", "bg"]);
    let st = c.status("bg");
    assert_eq!(st["frozen"], false, "{st:#}");
    assert_eq!(st["state"], "running");
    assert!(advancing(&c, "bg"), "the thawed VP does not run");
    // Its fb reader saw EINTR, retried and got the wake-up.
    assert!(Cells::wait_until(Duration::from_secs(5), || read_data(
        &c, "bg", "woke"
    )
    .as_deref()
        == Some("awake\n")));
    // In the foreground it is never frozen.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(c.status("bg")["frozen"], false);
    // Back in the background, the delay starts over.
    c.ok(&["switch", "fg"]);
    assert_eq!(c.status("bg")["frozen"], false);
    assert!(
        Cells::wait_until(Duration::from_secs(8), || c.status("bg")["frozen"] == true),
        "not frozen again; log:\n{}",
        c.daemon_log()
    );
    // An exec thaws it (and is not frozen under it); stop works on a frozen VP.
    assert_eq!(c.sh_ok("bg", "echo hi"), "hi\n");
    c.ok(&["stop", "bg", "--timeout", "5"]);
    assert_eq!(c.status("bg")["state"], "stopped");
}

#[test]
fn a_vp_holding_a_wakelock_is_not_frozen() {
    let c = Cells::new();
    c.create_start("fg");
    c.ok(&[
        "create",
        "music",
        "--template",
        "minimal",
        "--background",
        "freeze-after=500ms",
    ]);
    c.ok(&["start", "music"]);
    c.sh_ok("music", "echo playback > /sys/power/wake_lock");
    start_ticker(&c, "music");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(c.status("music")["frozen"], false, "a locked VP was frozen");
    assert!(advancing(&c, "music"), "music stopped playing");
    // Once the lock goes, the delay runs and it freezes.
    c.sh_ok("music", "echo playback > /sys/power/wake_unlock");
    assert!(
        Cells::wait_until(Duration::from_secs(8), || c.status("music")["frozen"]
            == true),
        "not frozen after the lock went; log:\n{}",
        c.daemon_log()
    );
    assert!(!advancing(&c, "music"));
}

#[test]
fn freeze_and_thaw_by_hand_with_the_v2_freezer() {
    // This host's v2 hierarchy (/sys/fs/cgroup/unified) has no controllers,
    // but cgroup.freeze is a core file: the v2 freezer works there too.
    let c = Cells::with_args(None, &["--freezer", "v2"]);
    c.ok(&["template", "build", "minimal"]);
    c.create_start("fg");
    c.create_start("bg");
    start_ticker(&c, "bg");
    assert!(advancing(&c, "bg"));
    assert!(c.fails(&["freeze", "fg"]).contains("foreground"));
    c.ok(&["freeze", "bg"]);
    let st = c.status("bg");
    assert_eq!(st["frozen"], true, "{st:#}");
    let v2 = c
        .vp_cgroup_dirs("bg")
        .into_iter()
        .find(|d| d.join("cgroup.freeze").exists())
        .expect("the VP's v2 cgroup");
    assert_eq!(
        std::fs::read_to_string(v2.join("cgroup.freeze"))
            .unwrap()
            .trim(),
        "1"
    );
    assert!(!advancing(&c, "bg"));
    // A run-policy VP stays frozen until thawed.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.status("bg")["frozen"], true);
    c.ok(&["thaw", "bg"]);
    assert_eq!(c.status("bg")["frozen"], false);
    assert!(advancing(&c, "bg"));
    c.ok(&["stop", "bg"]);
    assert!(c.fails(&["freeze", "bg"]).contains("not running"));
}

#[test]
fn the_stop_policy_stops_a_vp_that_leaves_the_foreground() {
    let c = Cells::new();
    c.ok(&[
        "create",
        "once",
        "--template",
        "minimal",
        "--background",
        "stop",
    ]);
    c.ok(&["start", "once"]);
    c.create_start("other");
    // Started in the background, "other" has the default policy: it runs.
    assert_eq!(c.ok(&["foreground"]).trim(), "once");
    c.ok(&["switch", "other"]);
    assert!(
        Cells::wait_until(Duration::from_secs(10), || c.status("once")["state"]
            == "stopped"),
        "the stop policy did not stop it"
    );
    assert_eq!(c.status("other")["state"], "running");
    let e = c.fails(&[
        "create",
        "x",
        "--template",
        "minimal",
        "--background",
        "sleep",
    ]);
    assert!(e.contains("freeze-after=DURATION"), "{e}");
}

#[test]
fn a_cellsd_restart_keeps_the_running_vps_locks() {
    let mut c = Cells::new();
    c.create_start("a");
    c.sh_ok("a", "echo music > /sys/power/wake_lock");
    wait_power(&c, "the lock", |p| p["suspend_blocked"] == true);
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        c.end_daemon(signal);
        // The VP still holds it while no cellsd runs...
        assert_eq!(locks_in_vp_direct(&c, "a"), "music");
        c.start_daemon();
        // ...and the new cellsd gets it from the VP's monitor.
        wait_power(&c, "the lock after the restart", |p| {
            p["suspend_blocked"] == true && wakelocks_of(p, "a") == ["music"]
        });
    }
    c.sh_ok("a", "echo music > /sys/power/wake_unlock");
    wait_power(&c, "the release", |p| p["suspend_blocked"] == false);
}

/// Read a VP's locks without cellsd (through the init's root).
fn locks_in_vp_direct(c: &Cells, vp: &str) -> String {
    let run: Value = serde_json::from_str(
        &std::fs::read_to_string(c.run.join("vps").join(vp).join("run.json")).unwrap(),
    )
    .unwrap();
    let pid = run["init_pid"].as_i64().unwrap();
    std::fs::read_to_string(format!("/proc/{pid}/root/sys/power/wake_lock"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn the_android_backend_mirrors_locks_into_the_kernel_interface() {
    // The "device": a VP of one cellsd, whose /sys/power is Android's
    // interface. A second cellsd runs on it with the android backend
    // pointed there, as it would on a phone's kernel.
    let device = Cells::new();
    device.create_start("phone");
    let run: Value = serde_json::from_str(
        &std::fs::read_to_string(device.run.join("vps/phone/run.json")).unwrap(),
    )
    .unwrap();
    let dir = format!("/proc/{}/root/sys/power", run["init_pid"].as_i64().unwrap());
    let c = Cells::with_args(
        None,
        &[
            "--power-backend",
            &format!("android:{dir}"),
            "--id-base",
            "3000000",
        ],
    );
    c.ok(&["template", "build", "minimal"]);
    assert!(power(&c)["backend"]
        .as_str()
        .unwrap()
        .starts_with("android"));
    c.create_start("work");
    c.create_start("home");
    c.sh_ok("work", "echo music > /sys/power/wake_lock");
    c.sh_ok("home", "echo sync > /sys/power/wake_lock");
    let mirrored = || device.ok(&["wakelocks", "phone"]);
    assert!(
        Cells::wait_until(Duration::from_secs(5), || mirrored()
            == "cells.home.sync\ncells.work.music\n"),
        "kernel locks: {:?}",
        mirrored()
    );
    c.sh_ok("work", "echo music > /sys/power/wake_unlock");
    assert!(Cells::wait_until(Duration::from_secs(5), || mirrored() == "cells.home.sync\n"));
    // A stopped VP's locks leave the kernel too.
    c.ok(&["stop", "home"]);
    assert!(Cells::wait_until(Duration::from_secs(5), || mirrored().is_empty()));
    // With nothing held, the foreground's suspend request reaches the
    // kernel's /sys/power/state.
    assert_eq!(c.ok(&["foreground"]).trim(), "work");
    c.sh_ok("work", "echo mem > /sys/power/state");
    assert!(
        Cells::wait_until(Duration::from_secs(5), || power(&device)["last_request"]
            == "phone: mem"),
        "{:#}",
        power(&device)
    );
}

/// The VP's cgroup file that holds its CPU weight, and what it says.
fn cpu_weight(c: &Cells, vp: &str) -> String {
    c.vp_cgroup_dirs(vp)
        .iter()
        .find_map(|d| {
            std::fs::read_to_string(d.join("cpu.shares"))
                .or_else(|_| std::fs::read_to_string(d.join("cpu.weight")))
                .ok()
        })
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// CPU time the VP's cgroup used so far, in microseconds.
fn cpu_used_us(c: &Cells, vp: &str) -> u64 {
    c.vp_cgroup_dirs(vp)
        .iter()
        .find_map(|d| {
            if let Ok(ns) = std::fs::read_to_string(d.join("cpuacct.usage")) {
                return ns.trim().parse::<u64>().ok().map(|n| n / 1000);
            }
            let stat = std::fs::read_to_string(d.join("cpu.stat")).ok()?;
            stat.lines()
                .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time each of `vps` got over `d`.
fn cpu_over(c: &Cells, vps: [&str; 2], d: Duration) -> [u64; 2] {
    let before = vps.map(|v| cpu_used_us(c, v));
    std::thread::sleep(d);
    let after = vps.map(|v| cpu_used_us(c, v));
    [after[0] - before[0], after[1] - before[1]]
}

#[test]
fn background_vps_yield_the_cpu_to_the_foreground() {
    let c = Cells::new();
    for vp in ["fg", "bg"] {
        c.ok(&["create", vp, "--template", "minimal", "--background", "run"]);
        c.ok(&["start", vp]);
    }
    // The first VP started is the foreground: full weight; the other the
    // background's (cellsd's default 5 of 100: v1 cpu.shares 51 of 1024).
    let v2 = c
        .vp_cgroup_dirs("fg")
        .iter()
        .any(|d| d.join("cpu.weight").exists());
    let (full, small) = if !v2 { ("1024", "51") } else { ("100", "5") };
    // Written by cellsd's writer thread just after the start or switch.
    let weights_are = |fg: &str, bg: &str| {
        Cells::wait_until(Duration::from_secs(2), || {
            cpu_weight(&c, "fg") == fg && cpu_weight(&c, "bg") == bg
        })
    };
    assert!(weights_are(full, small), "{}", cpu_weight(&c, "bg"));
    // Both spin on the same CPU: the foreground gets most of it.
    for vp in ["fg", "bg"] {
        c.sh_ok(
            vp,
            "taskset -c 0 sh -c 'while :; do :; done' </dev/null >/dev/null 2>&1 &",
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let [fg, bg] = cpu_over(&c, ["fg", "bg"], Duration::from_secs(2));
    assert!(fg > 4 * bg, "foreground {fg} us, background {bg} us of CPU");
    // The switch swaps the weights, and the CPU follows.
    c.ok(&["switch", "bg"]);
    assert!(weights_are(small, full), "{}", cpu_weight(&c, "bg"));
    std::thread::sleep(Duration::from_millis(300));
    let [fg, bg] = cpu_over(&c, ["fg", "bg"], Duration::from_secs(2));
    assert!(bg > 4 * fg, "foreground {bg} us, background {fg} us of CPU");
    for vp in ["fg", "bg"] {
        c.ok(&["stop", vp, "--timeout", "5"]);
    }
}

#[test]
fn a_power_foreground_vps_locks_hold_only_while_it_is_the_foreground() {
    let c = Cells::new();
    c.create_start("fg");
    c.ok(&[
        "create",
        "quiet",
        "--template",
        "minimal",
        "--device",
        "power=foreground",
    ]);
    c.ok(&["start", "quiet"]);
    assert_eq!(c.status("quiet")["devices"]["power"], "foreground");
    // In the background its lock is taken (the VP sees it) but holds nothing.
    c.sh_ok("quiet", "echo download > /sys/power/wake_lock");
    assert_eq!(locks_in_vp(&c, "quiet"), "download");
    wait_power(&c, "the lock reported", |p| {
        wakelocks_of(p, "quiet") == ["download"]
    });
    let p = power(&c);
    assert_eq!(p["suspend_blocked"], false, "{p:#}");
    assert_eq!(p["blocked_by"], serde_json::json!([]));
    // Positive control: the default (shared) VP's lock holds in the background.
    c.ok(&["switch", "quiet"]);
    c.sh_ok("fg", "echo music > /sys/power/wake_lock");
    wait_power(&c, "both holding", |p| {
        p["blocked_by"] == serde_json::json!(["fg", "quiet"])
    });
    // As the foreground its lock holds; back in the background it does not.
    c.ok(&["switch", "fg"]);
    wait_power(&c, "only fg holding", |p| {
        p["suspend_blocked"] == true && p["blocked_by"] == serde_json::json!(["fg"])
    });
    c.sh_ok("fg", "echo music > /sys/power/wake_unlock");
    wait_power(&c, "nothing holding", |p| p["suspend_blocked"] == false);
}
