//! Snapshots of a VP's writable layer and /data: taken while it runs (and
//! while stopped), rolled back, reset to the template; for a VP with its
//! own disk image and one without.

use cells_tests::Cells;

fn read(c: &Cells, vp: &str, file: &str) -> String {
    c.sh(vp, &format!("cat {file} 2>/dev/null || echo MISSING"))
        .stdout
        .trim()
        .to_string()
}

fn write_marks(c: &Cells, vp: &str, v: &str) {
    c.sh_ok(
        vp,
        &format!(
            "echo {v} > /data/mark && echo {v} > /etc/mark && chown 1000:1000 /data/mark && sync"
        ),
    );
}

fn round(c: &Cells, vp: &str) {
    use std::os::unix::fs::MetadataExt;
    let shadow = std::fs::metadata("/etc/shadow").unwrap();
    c.ok(&["start", vp]);
    write_marks(c, vp, "one");
    // A link to a host path, from VP root: copied as a link, never followed.
    c.sh_ok(vp, "ln -s /etc/shadow /data/to-shadow && sync");
    // Taken while it runs: the VP is paused for the copy, then goes on.
    let out = c.ok(&["snapshot", vp, "s1"]);
    assert!(out.contains("paused meanwhile"), "{out}");
    assert_eq!(c.status(vp)["state"], "running");
    write_marks(c, vp, "two");
    c.sh_ok(vp, "echo x > /data/new && sync");
    assert_eq!(
        read(c, vp, "/data/mark"),
        "two",
        "control: the change is there"
    );

    // Rollback needs the VP stopped, and an existing snapshot.
    let e = c.fails(&["rollback", vp, "s1"]);
    assert!(e.contains("stop it first"), "{e}");
    let e = c.fails(&["snapshot", vp, "s1"]);
    assert!(e.contains("has a snapshot 's1'"), "{e}");
    c.ok(&["stop", vp]);
    let e = c.fails(&["rollback", vp, "nope"]);
    assert!(e.contains("snapshot list"), "{e}");
    // A snapshot of the stopped VP too.
    c.ok(&["snapshot", vp, "s2"]);
    c.ok(&["rollback", vp, "s1"]);
    c.ok(&["start", vp]);
    assert_eq!(read(c, vp, "/data/mark"), "one");
    assert_eq!(read(c, vp, "/etc/mark"), "one");
    assert_eq!(read(c, vp, "/data/new"), "MISSING");
    // Owners inside the VP are kept.
    let owner = c.sh_ok(vp, "stat -c %u:%g /data/mark");
    assert_eq!(owner.trim(), "1000:1000");
    // The link came back as a link; the host file it names is untouched.
    assert_eq!(
        c.sh_ok(vp, "readlink /data/to-shadow").trim(),
        "/etc/shadow"
    );
    let after = std::fs::metadata("/etc/shadow").unwrap();
    assert_eq!(
        (after.uid(), after.gid(), after.mode()),
        (shadow.uid(), shadow.gid(), shadow.mode())
    );
    c.ok(&["stop", vp]);

    // Reset: back to the template; the snapshots stay.
    c.ok(&["reset", vp]);
    c.ok(&["start", vp]);
    assert_eq!(read(c, vp, "/data/mark"), "MISSING");
    assert_eq!(read(c, vp, "/etc/mark"), "MISSING");
    assert!(
        c.sh_ok(vp, "ls /etc").contains("passwd") || c.sh_ok(vp, "ls /system/bin").contains("sh"),
        "the template's files are there"
    );
    c.ok(&["stop", vp]);
    let list: serde_json::Value =
        serde_json::from_str(&c.ok(&["snapshot", "list", vp, "--json"])).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["s1", "s2"]);
    assert_eq!(list[0]["running"], true);
    assert_eq!(list[1]["running"], false);
    c.ok(&["rollback", vp, "s2"]);
    c.ok(&["start", vp]);
    assert_eq!(read(c, vp, "/data/mark"), "two", "s2 was taken with two");
    assert_eq!(read(c, vp, "/data/new"), "x");
    c.ok(&["stop", vp]);
    c.ok(&["snapshot", "delete", vp, "s1"]);
    let e = c.fails(&["rollback", vp, "s1"]);
    assert!(e.contains("no snapshot 's1'"), "{e}");
}

#[test]
fn snapshot_rollback_and_reset_with_a_disk_image() {
    let c = Cells::new();
    c.ok(&["create", "a", "--template", "minimal", "--disk", "256M"]);
    round(&c, "a");
}

#[test]
fn snapshot_rollback_and_reset_without_a_disk_image() {
    let c = Cells::new();
    c.ok(&["create", "b", "--template", "minimal", "--disk", "none"]);
    round(&c, "b");
}
