//! `cellctl template import --android`: images an Android build writes (raw
//! and sparse ext4, erofs), built here from the minimal template with
//! Debian's tools (mke2fs -d, img2simg, mkfs.erofs), become templates whose
//! VPs boot the image's own /init; bad images are refused with a clear error
//! and leave nothing behind; an image's links are never followed.

use std::ffi::CString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use cells_tests::Cells;

fn run(cmd: &mut Command) {
    let o = cmd
        .output()
        .expect("run the image tool (scripts/install-deps installs it)");
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn ext4(src: &Path, img: &Path) {
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(src)
        .arg(img)
        .arg("200M"));
}

fn sparse(raw: &Path, out: &Path) {
    run(Command::new("img2simg").arg(raw).arg(out));
}

fn erofs(src: &Path, img: &Path) {
    run(Command::new("mkfs.erofs").arg("--quiet").arg(img).arg(src));
}

fn cp_a(from: &Path, to: &Path) {
    run(Command::new("cp").arg("-a").arg(from).arg(to));
}

fn set_xattr(p: &Path, name: &str, value: &str) {
    let path = CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let r = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr {}", p.display());
}

fn get_xattr(p: &Path, name: &str) -> Option<String> {
    let path = CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = [0u8; 256];
    // SAFETY: valid strings; the buffer's length is passed.
    let r = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            n.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (r >= 0).then(|| String::from_utf8_lossy(&buf[..r as usize]).into_owned())
}

/// Every entry under `root`: path, mode, owner, kind and link target.
fn listing(root: &Path, skip: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            if skip.iter().any(|s| r == Path::new(s)) {
                continue;
            }
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let link = if m.file_type().is_symlink() {
                std::fs::read_link(e.path()).unwrap().display().to_string()
            } else {
                String::new()
            };
            if m.is_dir() {
                stack.push(r.clone());
            }
            let size = if m.is_file() { m.len() } else { 0 };
            out.push(format!(
                "{} {:o} {}:{} {size} {link}",
                r.display(),
                m.mode(),
                m.uid(),
                m.gid()
            ));
        }
    }
    out.sort();
    out
}

fn template_rootfs(c: &Cells, t: &str) -> PathBuf {
    c.state.join("templates").join(t).join("current/rootfs")
}

/// A system-as-root tree made from the minimal template, with what an
/// Android image carries: build.prop, files of other owners, a setuid
/// file with an xattr, and links pointing out of the image.
fn system_tree(c: &Cells, host_marker: &Path, host_vendor: &Path) -> PathBuf {
    let tree = c.root.join("img/system");
    std::fs::create_dir_all(tree.parent().unwrap()).unwrap();
    cp_a(&template_rootfs(c, "minimal"), &tree);
    let mut props = std::fs::read_to_string(tree.join("system/build.prop")).unwrap_or_default();
    props.push_str(
        "ro.build.fingerprint=cells/test_x86_64/generic:14/CELLS.1/7:userdebug/test-keys\n",
    );
    std::fs::write(tree.join("system/build.prop"), props).unwrap();
    let owned = tree.join("system/etc/radio.conf");
    std::fs::write(&owned, "radio\n").unwrap();
    std::os::unix::fs::chown(&owned, Some(1001), Some(1001)).unwrap();
    std::fs::set_permissions(&owned, std::fs::Permissions::from_mode(0o640)).unwrap();
    let su = tree.join("system/xbin/su-probe");
    std::fs::create_dir_all(su.parent().unwrap()).unwrap();
    std::fs::write(&su, "#!/system/bin/sh\n").unwrap();
    std::os::unix::fs::chown(&su, Some(0), Some(2000)).unwrap();
    std::fs::set_permissions(&su, std::fs::Permissions::from_mode(0o4750)).unwrap();
    set_xattr(&su, "user.cells.test", "kept");
    // Links out of the image: kept as links, never written through.
    std::os::unix::fs::symlink(host_marker, tree.join("system/etc/escape")).unwrap();
    std::fs::remove_dir_all(tree.join("vendor")).unwrap();
    std::os::unix::fs::symlink(host_vendor, tree.join("vendor")).unwrap();
    tree
}

fn vendor_tree(c: &Cells) -> PathBuf {
    let v = c.root.join("img/vendor");
    std::fs::create_dir_all(v.join("etc")).unwrap();
    std::fs::write(v.join("build.prop"), "ro.vendor.build.id=CELLS.1\n").unwrap();
    let f = v.join("etc/vendor.conf");
    std::fs::write(&f, "vendor\n").unwrap();
    std::os::unix::fs::chown(&f, Some(1000), Some(1003)).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
    v
}

#[test]
fn sparse_ext4_system_and_erofs_vendor_import_and_boot_the_images_init() {
    let c = Cells::new();
    let marker = c.root.join("host-marker");
    let host_vendor = c.root.join("host-vendor");
    std::fs::create_dir_all(&host_vendor).unwrap();
    std::fs::write(host_vendor.join("keep"), "host\n").unwrap();
    let sys = system_tree(&c, &marker, &host_vendor);
    let ven = vendor_tree(&c);
    let raw = c.root.join("img/system.raw.img");
    let simg = c.root.join("img/system.img");
    let vimg = c.root.join("img/vendor.img");
    ext4(&sys, &raw);
    sparse(&raw, &simg);
    erofs(&ven, &vimg);

    let out = c.ok(&[
        "template",
        "import",
        "droid",
        "--android",
        simg.to_str().unwrap(),
        "--vendor",
        vimg.to_str().unwrap(),
    ]);
    assert!(out.contains("template droid: build 1 is current"), "{out}");
    let list = c.ok(&["template", "list"]);
    assert!(
        list.lines().any(|l| l.starts_with("droid ")
            && l.contains("Android image cells/test_x86_64/generic:14/CELLS.1/7")),
        "{list}"
    );

    // The tree is the image's, entry for entry (owners, modes incl. setuid,
    // links as links), with the vendor image at /vendor.
    let root = template_rootfs(&c, "droid");
    assert_eq!(
        listing(&sys, &["vendor"]),
        listing(&root, &["vendor", "lost+found"])
    );
    assert_eq!(listing(&ven, &[]), listing(&root.join("vendor"), &[]));
    assert!(std::fs::symlink_metadata(root.join("vendor"))
        .unwrap()
        .is_dir());
    assert_eq!(
        get_xattr(&root.join("system/xbin/su-probe"), "user.cells.test").as_deref(),
        Some("kept")
    );
    // Nothing was written through the image's links.
    assert!(!marker.exists());
    assert_eq!(
        std::fs::read_dir(&host_vendor).unwrap().count(),
        1,
        "the host folder the image's /vendor link named was written to"
    );

    // A VP of the imported template boots the image's /init.
    c.ok(&["create", "phone", "--template", "droid"]);
    c.ok(&["start", "phone"]);
    boot_completed(&c, "phone");
    let o = c.sh_ok(
        "phone",
        "getprop sys.boot_completed; cat /proc/1/cmdline | tr '\\0' ' '; echo; \
         cat /vendor/etc/vendor.conf; stat -c '%u:%g %a' /vendor/etc/vendor.conf \
         /system/etc/radio.conf; readlink /system/etc/escape; \
         grep ro.build.fingerprint /system/build.prop",
    );
    let lines: Vec<&str> = o.lines().collect();
    assert_eq!(lines[0], "1", "{o}");
    assert_eq!(lines[1].trim(), "/init", "{o}");
    assert_eq!(lines[2], "vendor", "{o}");
    assert_eq!(lines[3], "1000:1003 640", "{o}");
    assert_eq!(lines[4], "1001:1001 640", "{o}");
    assert_eq!(lines[5], marker.display().to_string(), "{o}");
    assert!(lines[6].contains("CELLS.1"), "{o}");
    // Positive control for the template being shared read-only: a VP's
    // write lands in its own layer, the template stays as imported.
    c.sh_ok("phone", "echo changed > /system/etc/radio.conf");
    assert_eq!(
        std::fs::read_to_string(root.join("system/etc/radio.conf")).unwrap(),
        "radio\n"
    );
    assert_eq!(
        c.sh_ok("phone", "cat /system/etc/radio.conf").trim(),
        "changed"
    );
    c.ok(&["stop", "phone"]);

    // A second import is a new build; the first stays for its VP.
    let out = c.ok(&[
        "template",
        "import",
        "droid",
        "--android",
        raw.to_str().unwrap(),
    ]);
    assert!(out.contains("build 2 is current"), "{out}");
}

/// `cellctl start` returns once the init runs; its boot scripts (which
/// set sys.boot_completed) finish a little later.
fn boot_completed(c: &Cells, vp: &str) {
    let t = std::time::Instant::now();
    loop {
        let v = c.sh(vp, "getprop sys.boot_completed").stdout;
        if v.trim() == "1" {
            return;
        }
        assert!(
            t.elapsed().as_secs() < 30,
            "{vp} did not complete its boot: {v:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn legacy_system_image_becomes_system_and_gets_an_init_link() {
    let c = Cells::new();
    // An older (non system-as-root) system.img holds what is under /system.
    let tree = c.root.join("img/legacy");
    std::fs::create_dir_all(tree.parent().unwrap()).unwrap();
    cp_a(&template_rootfs(&c, "minimal").join("system"), &tree);
    let img = c.root.join("img/system.erofs");
    erofs(&tree, &img);
    let out = c.ok(&[
        "template",
        "import",
        "old",
        "--android",
        img.to_str().unwrap(),
    ]);
    assert!(out.contains("build 1 is current"), "{out}");
    let root = template_rootfs(&c, "old");
    assert_eq!(
        std::fs::read_link(root.join("init")).unwrap(),
        Path::new("system/bin/init")
    );
    for d in ["dev", "proc", "sys", "data", "tmp"] {
        assert!(root.join(d).is_dir(), "/{d} missing");
    }
    assert_eq!(listing(&tree, &[]), listing(&root.join("system"), &[]));
    // Its VP boots /init -> /system/bin/init. The legacy image has no
    // /bin, so the VP's commands run from /system/bin (PATH).
    c.ok(&["create", "old1", "--template", "old"]);
    c.ok(&["start", "old1"]);
    boot_completed(&c, "old1");
    c.ok(&["stop", "old1"]);
}

#[test]
fn bad_images_are_refused_by_name_and_leave_nothing() {
    let c = Cells::new();
    let dir = c.root.join("img");
    std::fs::create_dir_all(&dir).unwrap();
    let builds = |t: &str| {
        std::fs::read_dir(c.state.join("templates").join(t).join("builds"))
            .map(|d| d.count())
            .unwrap_or(0)
    };

    // Not an image at all.
    let text = dir.join("notes.txt");
    std::fs::write(&text, "just some text\n".repeat(500)).unwrap();
    let e = c.fails(&[
        "template",
        "import",
        "bad",
        "--android",
        text.to_str().unwrap(),
    ]);
    assert!(
        e.contains("system.img is not an image cells can import"),
        "{e}"
    );
    assert!(e.contains("raw or sparse ext4"), "{e}");

    // A sparse image cut short.
    let tree = dir.join("t");
    std::fs::create_dir_all(tree.join("system/bin")).unwrap();
    std::fs::write(tree.join("system/bin/init"), "#!/bin/sh\n").unwrap();
    let raw = dir.join("t.raw");
    ext4(&tree, &raw);
    let simg = dir.join("t.simg");
    sparse(&raw, &simg);
    let bytes = std::fs::read(&simg).unwrap();
    let cut = dir.join("cut.simg");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = c.fails(&[
        "template",
        "import",
        "bad",
        "--android",
        cut.to_str().unwrap(),
    ]);
    assert!(e.contains("system.img: bad sparse image"), "{e}");

    // An ext4 image whose superblock is damaged (its magic intact).
    let mut broken = std::fs::read(&raw).unwrap();
    for b in broken.iter_mut().skip(1024).take(56) {
        *b = 0xA5;
    }
    let bimg = dir.join("broken.img");
    std::fs::write(&bimg, &broken).unwrap();
    let e = c.fails(&[
        "template",
        "import",
        "bad",
        "--android",
        bimg.to_str().unwrap(),
    ]);
    assert!(
        e.contains("extracting system.img failed: system.img: "),
        "{e}"
    );
    assert!(e.contains("damaged"), "{e}");

    // A well-formed image without an init.
    let noinit = dir.join("noinit");
    std::fs::create_dir_all(noinit.join("etc")).unwrap();
    std::fs::write(noinit.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    let nimg = dir.join("noinit.erofs");
    erofs(&noinit, &nimg);
    let e = c.fails(&[
        "template",
        "import",
        "bad",
        "--android",
        nimg.to_str().unwrap(),
    ]);
    assert!(e.contains("no /init nor /system/bin/init"), "{e}");

    // No system image; a name with a recipe; a missing file.
    let e = c.fails(&[
        "template",
        "import",
        "bad",
        "--vendor",
        nimg.to_str().unwrap(),
    ]);
    assert!(e.contains("--android"), "{e}");
    let e = c.fails(&[
        "template",
        "import",
        "minimal",
        "--android",
        raw.to_str().unwrap(),
    ]);
    assert!(e.contains("has a recipe"), "{e}");
    let e = c.fails(&[
        "template",
        "import",
        "bad",
        "--android",
        "/nonexistent/system.img",
    ]);
    assert!(e.contains("/nonexistent/system.img"), "{e}");

    // Nothing was left behind; the positive control imports the good one.
    assert_eq!(builds("bad"), 0);
    assert!(!c.ok(&["template", "list"]).contains("bad "));
    let out = c.ok(&[
        "template",
        "import",
        "bad",
        "--android",
        simg.to_str().unwrap(),
    ]);
    assert!(out.contains("build 1 is current"), "{out}");
    assert_eq!(builds("bad"), 1);
}
