//! Live checkpoint/restore on this host: what happens when CRIU cannot run
//! (the checks that restore processes run in the emulator device, where
//! criu can read the VP processes' limits: this VM's root lacks
//! CAP_SYS_RESOURCE). A failed checkpoint loses nothing: the VP runs on.

use cells_tests::Cells;

fn count(c: &Cells, vp: &str) -> u64 {
    c.sh(vp, "cat /data/count 2>/dev/null || echo 0")
        .stdout
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn a_failed_checkpoint_names_the_fix_and_the_vp_runs_on() {
    let c = Cells::with_args(None, &["--criu", "/nonexistent/criu"]);
    c.ok(&["template", "build", "minimal"]);
    c.ok(&["create", "a", "--template", "minimal", "--disk", "none"]);
    let e = c.fails(&["checkpoint", "a"]);
    assert!(e.contains("not running"), "{e}");
    let e = c.fails(&["restore", "a"]);
    assert!(
        e.contains("has no checkpoint") && e.contains("cellctl checkpoint a"),
        "{e}"
    );
    c.ok(&["start", "a"]);
    c.sh_ok(
        "a",
        "setsid sh -c 'i=0; while true; do i=$((i+1)); echo $i > /data/count; sleep 0.05; done' </dev/null >/dev/null 2>&1 &",
    );
    let t = std::time::Instant::now();
    while count(&c, "a") < 2 {
        assert!(t.elapsed().as_secs() < 20, "control: the counter runs");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let e = c.fails(&["checkpoint", "a"]);
    assert!(
        e.contains("install CRIU") && e.contains("--criu") && e.contains("not touched"),
        "{e}"
    );
    // Nothing lost: still running, thawed, counting.
    assert_eq!(c.status("a")["state"], "running");
    let before = count(&c, "a");
    let t = std::time::Instant::now();
    while count(&c, "a") <= before + 2 {
        assert!(t.elapsed().as_secs() < 20, "the VP was left paused");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let e = c.fails(&["restore", "a"]);
    assert!(e.contains("has no checkpoint"), "{e}");
}

/// The current build of `minimal` in a daemon's state.
fn current_build(c: &Cells) -> String {
    std::fs::read_link(c.state.join("templates/minimal/current"))
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// A live move's archive (`cellctl checkpoint VP -o FILE`, `cellctl export
/// VP --checkpoint`) and its arrival on another cellsd, up to the restore
/// itself (proven in the emulator device: no criu can dump on this host, so
/// the checkpoint here is written where a dump leaves it).
#[test]
fn a_checkpoint_travels_in_an_archive_to_another_cellsd() {
    let src = Cells::with_args(None, &["--criu", "/nonexistent/criu"]);
    let dst = Cells::with_args(
        None,
        &["--criu", "/nonexistent/criu", "--id-base", "3000000"],
    );
    src.ok(&["template", "build", "minimal"]);
    src.ok(&["create", "a", "--template", "minimal", "--disk", "256M"]);
    src.ok(&["start", "a"]);
    let file = src.root.join("a.cellsvp");
    let f = file.to_str().unwrap();
    // No criu: the checkpoint fails, the VP runs on, no archive is left.
    let e = src.fails(&["checkpoint", "a", "-o", f]);
    assert!(e.contains("install CRIU"), "{e}");
    assert!(!file.exists(), "an empty archive was left");
    assert_eq!(src.status("a")["state"], "running");
    let e = src.fails(&["checkpoint", "a", "--leave-running", "-o", f]);
    assert!(e.contains("--leave-running with -o"), "{e}");
    src.ok(&["stop", "a"]);
    let e = src.fails(&["export", "a", "--checkpoint", "-o", f]);
    assert!(e.contains("has no checkpoint"), "{e}");
    let e = src.fails(&["export", "a", "--checkpoint", "--incremental", "-o", f]);
    assert!(e.contains("cannot be used with"), "{e}");

    // What a dump leaves in the VP's state.
    let dir = src.state.join("vps/a/checkpoint");
    std::fs::create_dir_all(dir.join("images")).unwrap();
    std::fs::write(dir.join("images/core-1.img"), b"core of pid 1").unwrap();
    std::fs::write(dir.join("images/pages-1.img"), vec![7u8; 300_000]).unwrap();
    std::fs::write(dir.join("framebuffer.raw"), vec![0x5au8; 4096]).unwrap();
    let manifest = serde_json::json!({
        "version": 1, "vp": "a", "template": "minimal", "template_build": current_build(&src),
        "host_root_id": 1_000_000, "mounts": [["m0", "/dev/fb0"]], "ttys": [],
        "framebuffer": true, "wakelocks": ["keepme"], "files": []
    });
    std::fs::write(dir.join("checkpoint.json"), manifest.to_string()).unwrap();
    src.ok(&["export", "a", "--checkpoint", "-o", f]);

    // The other cellsd: the VP made there (its ids, address, port), its
    // checkpoint in place under its new name, for this host's build.
    assert_eq!(dst.ok(&["import", f, "--name", "b"]).trim(), "b");
    assert_eq!(dst.status("b")["state"], "stopped");
    let there = dst.state.join("vps/b/checkpoint");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(there.join("checkpoint.json")).unwrap()).unwrap();
    assert_eq!(m["vp"], "b");
    assert_eq!(m["template_build"].as_str().unwrap(), current_build(&dst));
    assert_eq!(m["wakelocks"], serde_json::json!(["keepme"]));
    assert_eq!(
        std::fs::read(there.join("images/pages-1.img")).unwrap(),
        vec![7u8; 300_000]
    );
    assert_eq!(
        std::fs::read(there.join("images/core-1.img")).unwrap(),
        b"core of pid 1"
    );
    assert_eq!(
        std::fs::read(there.join("framebuffer.raw")).unwrap(),
        vec![0x5au8; 4096]
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&there).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // No criu there: the restore names the fix and leaves the checkpoint.
    let e = dst.fails(&["restore", "b"]);
    assert!(
        e.contains("install CRIU") && e.contains("not touched"),
        "{e}"
    );
    assert!(there.join("checkpoint.json").exists());
    // An archive file given to `restore` is imported first, and removed
    // again when its restore fails: nothing is left behind.
    let e = dst.fails(&["restore", f, "--name", "c"]);
    assert!(
        e.contains("install CRIU") && e.contains("removed again"),
        "{e}"
    );
    assert!(dst.fails(&["status", "c"]).contains("no VP named"));
    // A fresh start moves its files on: the checkpoint is stale after it.
    dst.ok(&["start", "b"]);
    dst.ok(&["stop", "b"]);
    let e = dst.fails(&["restore", "b"]);
    assert!(e.contains("older than its last fresh start"), "{e}");
    let e = dst.fails(&["export", "b", "--checkpoint", "-o", "/dev/null"]);
    assert!(e.contains("older than its last fresh start"), "{e}");
}
