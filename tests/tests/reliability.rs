//! Regression tests of the faults found for the reliability work (issue 11):
//! what a crash or a lost file must not cost a VP.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use cells_tests::Cells;

/// A restart used to kill a live VP whose run.json was missing or
/// unreadable. Now its monitor is asked to restore it and the VP is
/// adopted as it was; a VP that really ended is still cleaned up (control).
#[test]
fn a_vp_whose_run_state_is_lost_is_adopted_not_killed() {
    let mut c = Cells::new();
    c.create_start("lost");
    c.create_start("torn");
    c.create_start("ended");
    c.sh_ok("lost", "echo acknowledged > /data/x; sync");
    let pid = |c: &Cells, vp: &str| c.status(vp)["pid"].as_u64().unwrap();
    let (lost, torn, ended) = (pid(&c, "lost"), pid(&c, "torn"), pid(&c, "ended"));
    c.end_daemon(libc::SIGKILL);
    std::fs::remove_file(c.run.join("vps/lost/run.json")).unwrap();
    std::fs::write(c.run.join("vps/torn/run.json"), b"{\"init_pid\": 1").unwrap();
    // SAFETY: killing this test's own VP's init by pid.
    unsafe { libc::kill(ended as i32, libc::SIGKILL) };
    assert!(Cells::wait_until(Duration::from_secs(5), || {
        std::fs::metadata(format!("/proc/{ended}")).is_err()
    }));
    c.start_daemon();
    for (vp, p) in [("lost", lost), ("torn", torn)] {
        let st = c.status(vp);
        assert_eq!(st["state"], "running", "{vp}: {st}\n{}", c.daemon_log());
        assert_eq!(st["pid"].as_u64().unwrap(), p, "{vp} was restarted");
        assert!(c.run.join(format!("vps/{vp}/run.json")).is_file());
    }
    assert_eq!(c.sh_ok("lost", "cat /data/x"), "acknowledged\n");
    // Its devices came back with it: the display shows it once foreground.
    c.ok(&["switch", "torn"]);
    assert_eq!(c.ok(&["foreground"]).trim(), "torn");
    assert_eq!(c.status("ended")["state"], "stopped");
    c.ok(&["stop", "lost"]);
    c.ok(&["stop", "torn"]);
    assert!(std::fs::metadata(format!("/proc/{lost}")).is_err());
}

/// An unreadable vp.json used to free the VP's slot, address and adb port:
/// the next VP got the same host ids (so the lost VP's files) and ports.
#[test]
fn an_unusable_definition_keeps_its_ids_address_and_ports() {
    let mut c = Cells::new();
    c.ok(&["create", "broken", "--template", "minimal"]);
    c.ok(&[
        "port",
        "add",
        "broken",
        &format!("{}:80", c.adb_port_base + 30),
    ]);
    let before = c.status("broken");
    let state = c.state.clone();
    let owner = |vp: &str| {
        std::fs::metadata(state.join(format!("vps/{vp}/upper")))
            .unwrap()
            .uid()
    };
    let broken_uid = owner("broken");
    let original = std::fs::read(c.state.join("vps/broken/vp.json")).unwrap();
    for garbage in [&b"\x00not json"[..], b"{\"version\": 1}"] {
        c.end_daemon(libc::SIGTERM);
        std::fs::write(c.state.join("vps/broken/vp.json"), garbage).unwrap();
        c.start_daemon();
        assert_eq!(c.status("broken")["state"], "invalid");
        c.ok(&["create", "next", "--template", "minimal"]);
        let next = c.status("next");
        assert_ne!(owner("next"), broken_uid, "the ids were handed out again");
        assert_ne!(next["ip"], before["ip"], "{next} {before}");
        assert_ne!(next["adb"], before["adb"], "{next} {before}");
        let ports = c.ok(&["port", "list", "next"]);
        assert!(
            !ports.contains(&format!("{}", c.adb_port_base + 30)),
            "{ports}"
        );
        c.ok(&["destroy", "next"]);
    }
    // Control: with its definition back the VP is whole again.
    c.end_daemon(libc::SIGTERM);
    std::fs::write(c.state.join("vps/broken/vp.json"), original).unwrap();
    c.start_daemon();
    assert_eq!(c.status("broken")["state"], "stopped");
    assert_eq!(c.status("broken")["adb"], before["adb"]);
}

/// A create or destroy cut short leaves a `.creating-*`/`.destroying-*`
/// folder, never a half VP; the next cellsd removes it and the name is
/// free again.
#[test]
fn interrupted_create_and_destroy_leave_no_half_vp() {
    let mut c = Cells::new();
    c.ok(&["create", "keep", "--template", "minimal"]);
    c.end_daemon(libc::SIGKILL);
    let vps = c.state.join("vps");
    std::fs::create_dir_all(vps.join(".creating-half/upper")).unwrap();
    std::fs::create_dir_all(vps.join(".destroying-gone-1/data")).unwrap();
    c.start_daemon();
    assert!(!vps.join(".creating-half").exists());
    assert!(!vps.join(".destroying-gone-1").exists());
    let list = c.ok(&["list"]);
    assert!(list.contains("keep") && !list.contains("half"), "{list}");
    c.ok(&["create", "half", "--template", "minimal"]);
    c.ok(&["destroy", "keep"]);
    assert!(!vps.join("keep").exists());
    let left: Vec<_> = std::fs::read_dir(&vps)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["half".to_string()]);
}
