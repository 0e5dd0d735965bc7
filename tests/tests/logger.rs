//! The logger device: each VP's own log (Android's logd sockets, served by
//! its monitor), `log` and `logcat` in the VP, `cellctl logcat` on the host.

use std::time::Duration;

use cells_tests::Cells;

#[test]
fn each_vp_has_its_own_log() {
    let c = Cells::new();
    c.create_start("a");
    c.create_start("b");
    c.sh_ok("a", "log -p w -t SecretA only-for-a");
    c.sh_ok("b", "log -t TagB for-b");
    // Control: a reads its own line.
    let a = c.sh_ok("a", "logcat -d");
    assert!(a.contains("W SecretA : only-for-a"), "{a}");
    // b never sees it, in the VP or from the host.
    let b = c.sh_ok("b", "logcat -d");
    assert!(b.contains("for-b") && !b.contains("only-for-a"), "{b}");
    let host_b = c.ok(&["logcat", "b"]);
    assert!(
        host_b.contains("for-b") && !host_b.contains("only-for-a"),
        "{host_b}"
    );
    // Nor its sockets: b's /dev/socket holds b's own.
    let ls = c.sh_ok("b", "ls /dev/socket");
    assert_eq!(
        ls.split_whitespace().collect::<Vec<_>>(),
        ["logd", "logdr", "logdw"]
    );
    // --all: every VP, each line after its name, in time order.
    let all = c.ok(&["logcat", "--all", "-v", "tag"]);
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(
        lines,
        ["a  W/SecretA : only-for-a", "b  I/TagB    : for-b"],
        "{all}"
    );
}

#[test]
fn logcat_formats_filters_and_clears_as_androids() {
    let c = Cells::new();
    c.create_start("vp");
    c.sh_ok(
        "vp",
        "log -p d -t App debug-line; log -p e -t App error-line; log -p i -t Other info-line; \
         echo piped | log -p w -t Pipe",
    );
    let pid_line = c.sh_ok("vp", "logcat -d -v brief App:E '*:S'");
    assert!(pid_line.trim().starts_with("E/App     ("), "{pid_line}");
    assert!(pid_line.trim().ends_with("): error-line"), "{pid_line}");
    assert_eq!(pid_line.lines().count(), 1, "{pid_line}");
    let w = c.sh_ok("vp", "logcat -d -v tag '*:W'");
    assert_eq!(w, "E/App     : error-line\nW/Pipe    : piped\n");
    let s = c.sh_ok("vp", "logcat -d -v tag -s Other");
    assert_eq!(s, "I/Other   : info-line\n");
    let t = c.sh_ok("vp", "logcat -v raw -t 2");
    assert_eq!(t, "info-line\npiped\n");
    let time = c.sh_ok("vp", "logcat -d -v time -t 1");
    // MM-DD HH:MM:SS.mmm W/Pipe    (  PID): piped
    let (stamp, rest) = time.trim().split_at(18);
    assert!(
        stamp.as_bytes()[2] == b'-' && stamp.as_bytes()[14] == b'.',
        "{time}"
    );
    assert!(
        rest.starts_with(" W/Pipe    (") && rest.ends_with("): piped"),
        "{time}"
    );
    let tt = c.sh_ok("vp", "logcat -d -t 1");
    let f: Vec<&str> = tt.split_whitespace().collect();
    assert_eq!(&f[4..], ["W", "Pipe", ":", "piped"], "threadtime: {tt}");
    let g = c.sh_ok("vp", "logcat -g -b main");
    assert!(g.starts_with("main: ring buffer is 256 KiB"), "{g}");
    // Bad input: a clear message, nothing changed.
    let bad = c.sh("vp", "logcat -d -v tag Tag:Q");
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("bad priority"), "{bad:?}");
    let bad = c.sh("vp", "log -p x -t T msg");
    assert_ne!(bad.code, 0);
    assert!(c.sh_ok("vp", "logcat -d").contains("error-line"));
    c.sh_ok("vp", "logcat -c");
    assert_eq!(c.sh_ok("vp", "logcat -d"), "");
}

#[test]
fn the_host_follows_a_log_and_it_survives_a_cellsd_restart() {
    let mut c = Cells::new();
    c.create_start("vp");
    c.sh_ok("vp", "log -t Before restart");
    let mut follow = c
        .ctl_cmd()
        .args(["logcat", "vp", "-f", "-v", "tag"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("cellctl logcat -f");
    std::thread::sleep(Duration::from_millis(300));
    c.sh_ok("vp", "log -t Live follow-me");
    std::thread::sleep(Duration::from_millis(300));
    let _ = follow.kill();
    let out = follow.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("I/Before  : restart") && text.contains("I/Live    : follow-me"),
        "{text}"
    );
    // The log lives with the VP, not with cellsd.
    c.end_daemon(libc::SIGKILL);
    c.start_daemon();
    let after = c.ok(&["logcat", "vp", "-v", "tag"]);
    assert!(
        after.contains("restart") && after.contains("follow-me"),
        "{after}"
    );
    // A stopped VP has no log to read: a clear error.
    c.ok(&["stop", "vp"]);
    let e = c.fails(&["logcat", "vp"]);
    assert!(e.contains("not running"), "{e}");
}

#[test]
fn the_log_is_bounded_and_bad_datagrams_change_nothing() {
    let c = Cells::new();
    c.create_start("vp");
    c.push_probe("vp");
    // 600 KiB of 1 KiB messages into a 256 KiB log (rate-limited at
    // 256 KiB/s, so the writer waits: nothing is lost that fits).
    c.sh_ok(
        "vp",
        "i=0; m=$(printf '%01000d' 0); while [ $i -lt 600 ]; do log -t Flood \"$i $m\"; i=$((i+1)); done",
    );
    // The writers are done; the monitor may still be reading what waits in
    // the socket (at the logger's rate).
    assert!(Cells::wait_until(Duration::from_secs(10), || c
        .sh_ok("vp", "logcat -d -v raw -t 1")
        .starts_with("599 ")));
    let g = c.sh_ok("vp", "logcat -g -b main");
    let used: usize = g
        .split('(')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("consumed KiB");
    assert!(used <= 256 && used > 200, "{g}");
    let first = c.sh_ok("vp", "logcat -d -v raw -m 1 Flood:V '*:S'");
    let n: usize = first.split_whitespace().next().unwrap().parse().unwrap();
    assert!(n > 300, "the oldest went: the first left is {n}");
    // Datagrams that are not log entries (bad priority, no tag) are dropped.
    let bad = c.probe("vp", &["logdw-raw", "9", "Tag", "bad-priority"]);
    assert_eq!(bad.code, 0, "{bad:?}");
    let bad = c.probe("vp", &["logdw-raw", "0", "", ""]);
    assert_eq!(bad.code, 0, "{bad:?}");
    let good = c.probe("vp", &["logdw-raw", "4", "Tag", "good"]);
    assert_eq!(good.code, 0, "{good:?}");
    let out = c.sh_ok("vp", "logcat -d -v tag -s Tag");
    assert_eq!(out, "I/Tag     : good\n", "only the good datagram");
    // The control socket answers bad commands without acting.
    let r = c.probe("vp", &["logd-command", "clear 42"]);
    assert_eq!(r.stdout.trim(), "Invalid argument", "{r:?}");
    let r = c.probe("vp", &["logd-command", "setLogSize 0 1"]);
    assert_eq!(r.stdout.trim(), "Permission denied", "{r:?}");
    assert!(c.sh_ok("vp", "logcat -d").contains("good"));
}

#[test]
fn a_vp_without_a_logger_has_no_log_sockets() {
    let c = Cells::new();
    c.create_start("full");
    c.ok(&[
        "create",
        "quiet",
        "--template",
        "minimal",
        "--device",
        "logger=none",
    ]);
    c.ok(&["start", "quiet"]);
    assert_eq!(c.status("quiet")["devices"]["logger"], "none");
    // Control: the default VP has them.
    assert!(c.sh_ok("full", "ls /dev/socket").contains("logdw"));
    let ls = c.sh("quiet", "ls /dev/socket");
    assert_ne!(ls.code, 0, "{ls:?}");
    let w = c.sh("quiet", "log -t T x");
    assert_ne!(w.code, 0);
    assert!(w.stderr.contains("logger device"), "{w:?}");
    let e = c.fails(&["logcat", "quiet"]);
    assert!(e.contains("no logger device"), "{e}");
}
