//! Cold move: `cellctl export` on one cellsd, `cellctl import` on another
//! (with another id range, subnet and adb ports): the VP's data is
//! byte-identical, its owners are its own again, its address and adb port
//! are the new host's; bad archives leave nothing behind.

use cells_tests::Cells;

fn sum(c: &Cells, vp: &str) -> String {
    c.sh_ok(vp, "sha256sum /data/blob /etc/mark | cut -d' ' -f1")
}

#[test]
fn export_and_import_between_two_cellsd() {
    let src = Cells::new();
    // The target has not built `minimal`: the import builds it from its
    // recipe, and its content is the source's (the fingerprint check).
    let dst = Cells::with_args(None, &["--id-base", "3000000"]);
    src.ok(&["create", "a", "--template", "minimal", "--disk", "512M"]);
    src.ok(&["phone", "number", "a", "+15550077"]);
    src.ok(&["start", "a"]);
    src.sh_ok(
        "a",
        "dd if=/dev/urandom of=/data/blob bs=1M count=24 2>/dev/null && chown 1000:1001 /data/blob \
         && echo moved > /etc/mark && chmod 4755 /etc/mark \
         && ln -s /etc/shadow /data/to-shadow && ln -s / /data/to-root && sync",
    );
    let before = sum(&src, "a");
    let shadow = std::fs::metadata("/etc/shadow").unwrap();
    let e = src.fails(&["export", "a", "-o", "/dev/null"]);
    assert!(e.contains("stop it first"), "{e}");
    src.ok(&["stop", "a"]);
    let file = src.root.join("a.cellsvp");
    src.ok(&["export", "a", "-o", file.to_str().unwrap()]);
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(
        size > 24 << 20 && size < 128 << 20,
        "the data is there, the 512 MiB disk's holes are not: {size}"
    );

    let out = dst.ok(&["import", file.to_str().unwrap()]);
    assert_eq!(out.trim(), "a");
    assert!(dst.ok(&["template", "list"]).contains("minimal"));
    dst.ok(&["start", "a"]);
    assert_eq!(sum(&dst, "a"), before, "byte-identical");
    // Owners and modes as they were, inside the VP (its ids moved to this
    // host's range under the hood).
    let st = dst.sh_ok("a", "stat -c '%u:%g %a' /data/blob /etc/mark /data");
    assert_eq!(
        st.lines().collect::<Vec<_>>(),
        ["1000:1001 644", "0:0 4755", "0:0 771"],
        "{st}"
    );
    // Isolated as a fresh VP of this host: its init runs as this host's
    // id for VP root (not host root, not the source's), and its files are
    // owned in this host's range, seen from the host.
    let init = dst.status("a")["pid"].as_u64().unwrap();
    let uid_line = std::fs::read_to_string(format!("/proc/{init}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    let host_uid: u32 = uid_line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        (3_000_000..3_000_000 + 65536 * 256).contains(&host_uid),
        "VP root is an id of this host's VP range: {uid_line}"
    );
    use std::os::unix::fs::MetadataExt;
    let blob = std::fs::metadata(format!("/proc/{init}/root/data/blob")).unwrap();
    assert_eq!(
        blob.uid(),
        host_uid + 1000,
        "the file's owner moved with the range"
    );
    // The image's links were moved, never followed: the links themselves
    // belong to the new range; the host files they name are untouched.
    let link = std::fs::symlink_metadata(format!("/proc/{init}/root/data/to-shadow")).unwrap();
    assert!(link.file_type().is_symlink());
    assert_eq!(link.uid(), host_uid, "the link's own owner moved");
    let after = std::fs::metadata("/etc/shadow").unwrap();
    assert_eq!(
        (after.uid(), after.gid(), after.mode()),
        (shadow.uid(), shadow.gid(), shadow.mode())
    );
    let root = std::fs::metadata("/").unwrap();
    assert_eq!(
        (root.uid(), root.gid()),
        (0, 0),
        "the host's / is root's still"
    );
    let (s, d) = (src.status("a"), dst.status("a"));
    assert_ne!(s["ip"], d["ip"], "the new host's address");
    assert_ne!(s["adb"], d["adb"], "the new host's adb port");
    let p: serde_json::Value = serde_json::from_str(&dst.ok(&["phone", "--json"])).unwrap();
    assert!(p["vps"].to_string().contains("+15550077"), "{p}");
    // Control: the source still has it, unchanged (export does not move).
    src.ok(&["start", "a"]);
    assert_eq!(sum(&src, "a"), before);
    src.ok(&["stop", "a"]);

    // The same name again: refused, nothing changed.
    let e = dst.fails(&["import", file.to_str().unwrap()]);
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(sum(&dst, "a"), before);
    // A damaged archive under another name: refused, no VP left.
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let bad = src.root.join("bad.cellsvp");
    std::fs::write(&bad, &bytes).unwrap();
    let e = dst.fails(&["import", bad.to_str().unwrap(), "--name", "b"]);
    assert!(e.contains("checksum"), "{e}");
    assert!(!dst.ok(&["list"]).contains("\nb "), "{}", dst.ok(&["list"]));
    assert!(!dst.state.join("vps/b").exists());
    // Not an archive at all.
    let e = dst.fails(&["import", "/etc/hostname", "--name", "c"]);
    assert!(e.contains("not a cells VP archive"), "{e}");
    // Through a pipe (what `cellctl move` does over ssh).
    let mut exp = src
        .ctl_cmd()
        .args(["export", "a", "-o", "-"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let imp = dst
        .ctl_cmd()
        .args(["import", "-", "--name", "piped"])
        .stdin(exp.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(exp.wait().unwrap().success());
    assert!(imp.status.success(), "{imp:?}");
    dst.ok(&["start", "piped"]);
    assert_eq!(sum(&dst, "piped"), before);
}

/// `cellctl move VP --to ssh://root@127.0.0.1:PORT`: through a real SSH
/// server (dropbear on loopback) into another cellsd; gone here, there
/// with its data; a move to a host that refuses leaves it here, running.
#[test]
fn move_over_ssh() {
    if !cells_tests::ssh::available() {
        eprintln!("SKIP: dropbear not unpacked (scripts/install-deps) or no ssh client");
        return;
    }
    let src = Cells::new();
    let dst = Cells::with_args(None, &["--id-base", "3200000"]);
    dst.ok(&["template", "build", "minimal"]);
    let sshd = cells_tests::ssh::SshServer::start(&src.root.join("ssh"));
    src.ok(&["create", "m", "--template", "minimal", "--disk", "256M"]);
    src.ok(&["start", "m"]);
    src.sh_ok(
        "m",
        "dd if=/dev/urandom of=/data/blob bs=1M count=8 2>/dev/null && echo m > /etc/mark && sync",
    );
    let before = sum(&src, "m");
    let to = format!("ssh://root@127.0.0.1:{}", sshd.port);
    let cellctl = src.bin.join("cellctl");
    // A host that refuses (wrong key): the VP stays here and runs again.
    let o = src
        .ctl_cmd()
        .env(
            "CELLS_SSH_COMMAND",
            "ssh -i /nonexistent -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        )
        .args([
            "move",
            "m",
            "--to",
            &to,
            "--remote-socket",
            dst.socket.to_str().unwrap(),
        ])
        .args(["--remote-cellctl", cellctl.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("stays here, unchanged"), "{e}");
    assert_eq!(src.status("m")["state"], "running");
    assert!(!dst.ok(&["list"]).contains("\nm "));
    // The move.
    let o = src
        .ctl_cmd()
        .env("CELLS_SSH_COMMAND", sshd.ssh_command())
        .args([
            "move",
            "m",
            "--to",
            &to,
            "--remote-socket",
            dst.socket.to_str().unwrap(),
        ])
        .args(["--remote-cellctl", cellctl.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!src.ok(&["list"]).contains("\nm "), "gone from the source");
    dst.ok(&["start", "m"]);
    assert_eq!(sum(&dst, "m"), before);
}

/// `export --incremental`: only the blocks changed since the last export;
/// the copy imported from that export (and not run since) is brought up to
/// date; a copy that ran, or a VP never exported, is refused.
#[test]
fn incremental_export_updates_the_copy() {
    let src = Cells::new();
    let dst = Cells::with_args(None, &["--id-base", "3600000"]);
    dst.ok(&["template", "build", "minimal"]);
    src.ok(&["create", "a", "--template", "minimal", "--disk", "256M"]);
    src.ok(&["create", "fresh", "--template", "minimal", "--disk", "128M"]);
    let e = src.fails(&["export", "fresh", "-o", "/dev/null", "--incremental"]);
    assert!(e.contains("export it whole first"), "{e}");
    src.ok(&["start", "a"]);
    src.sh_ok(
        "a",
        "dd if=/dev/urandom of=/data/one bs=1M count=16 2>/dev/null && echo v1 > /etc/mark && sync",
    );
    src.ok(&["stop", "a"]);
    let full = src.root.join("full.cellsvp");
    src.ok(&["export", "a", "-o", full.to_str().unwrap()]);
    dst.ok(&["import", full.to_str().unwrap()]);

    src.ok(&["start", "a"]);
    src.sh_ok(
        "a",
        "dd if=/dev/urandom of=/data/two bs=1M count=2 2>/dev/null && chown 1000:1000 /data/two \
         && rm /data/one && echo v2 > /etc/mark && sync",
    );
    let two = src.sh_ok("a", "sha256sum /data/two | cut -d' ' -f1");
    src.ok(&["stop", "a"]);
    let inc = src.root.join("inc.cellsvp");
    src.ok(&["export", "a", "-o", inc.to_str().unwrap(), "--incremental"]);
    let (fs, is) = (
        std::fs::metadata(&full).unwrap().len(),
        std::fs::metadata(&inc).unwrap().len(),
    );
    assert!(is < fs / 2, "the update is small: {is} vs {fs}");
    let out = dst.ok(&["import", inc.to_str().unwrap()]);
    assert_eq!(out.trim(), "a");
    dst.ok(&["start", "a"]);
    assert_eq!(dst.sh_ok("a", "sha256sum /data/two | cut -d' ' -f1"), two);
    assert_eq!(dst.sh_ok("a", "cat /etc/mark").trim(), "v2");
    assert_eq!(dst.sh_ok("a", "ls /data/one 2>/dev/null; true").trim(), "");
    assert_eq!(
        dst.sh_ok("a", "stat -c %u:%g /data/two").trim(),
        "1000:1000"
    );
    dst.ok(&["stop", "a"]);

    // The copy ran since: the next update is refused, the copy untouched.
    src.ok(&["start", "a"]);
    src.sh_ok("a", "echo v3 > /etc/mark && sync");
    src.ok(&["stop", "a"]);
    let inc2 = src.root.join("inc2.cellsvp");
    src.ok(&["export", "a", "-o", inc2.to_str().unwrap(), "--incremental"]);
    let e = dst.fails(&["import", inc2.to_str().unwrap()]);
    assert!(e.contains("changed here since it was imported"), "{e}");
    dst.ok(&["start", "a"]);
    assert_eq!(dst.sh_ok("a", "cat /etc/mark").trim(), "v2");
}

/// A target whose `minimal` differs from the VP's (one file more): the
/// import says so and changes nothing; with --any-build it goes in, with a
/// warning.
#[test]
fn a_different_template_build_is_refused_unless_accepted() {
    let src = Cells::new();
    let recipes = cells_tests::copy_recipes(&src.root.join("other-recipes"));
    std::fs::write(
        recipes.join("minimal/files/system/etc/extra"),
        "not the same\n",
    )
    .unwrap();
    let dst = Cells::with_args(Some(recipes), &["--id-base", "3800000"]);
    dst.ok(&["template", "build", "minimal"]);
    src.ok(&["create", "a", "--template", "minimal", "--disk", "128M"]);
    let file = src.root.join("a.cellsvp");
    src.ok(&["export", "a", "-o", file.to_str().unwrap()]);
    let e = dst.fails(&["import", file.to_str().unwrap()]);
    assert!(
        e.contains("--any-build") && e.contains("not the build"),
        "{e}"
    );
    assert!(!dst.state.join("vps/a").exists(), "nothing created");
    let o = dst
        .ctl_cmd()
        .args(["import", file.to_str().unwrap(), "--any-build"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("warning: template 'minimal' here differs"));
    dst.ok(&["start", "a"]);
    assert_eq!(
        dst.sh_ok("a", "cat /system/etc/extra").trim(),
        "not the same"
    );
}
