//! `cellctl doctor`: each finding agrees with what the kernel has, read
//! here independently; the idmapped-mount check passes on a state folder
//! whose file system takes idmapped mounts and fails (with the fix) on one
//! that does not.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::Command;

use cells_tests::{bin_dir, require_root};
use serde_json::Value;

fn doctor(state: &Path) -> (i32, Value) {
    let o = Command::new(bin_dir().join("cellctl"))
        .args(["doctor", "--json", "--state-dir"])
        .arg(state)
        .env_remove("CELLS_SOCKET")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor's JSON: {e}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o.status.code().unwrap_or(-1), v)
}

fn level<'a>(v: &'a Value, check: &str) -> &'a str {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check)
        .unwrap_or_else(|| panic!("no {check} check in {v}"))["level"]
        .as_str()
        .unwrap()
}

fn fix<'a>(v: &'a Value, check: &str) -> &'a str {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check)
        .unwrap()["fix"]
        .as_str()
        .unwrap()
}

fn has_fs(name: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().last() == Some(name))
}

fn is_char(p: &str) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_char_device())
}

#[test]
fn doctor_reports_what_the_kernel_has() {
    require_root();
    let tmp = std::env::temp_dir().join(format!("cells-doctor-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let (code, v) = doctor(&tmp);
    println!("{v:#}");
    let want = |b: bool| if b { "ok" } else { "missing" };
    assert_eq!(level(&v, "overlay"), want(has_fs("overlay")));
    assert_eq!(
        level(&v, "fuse"),
        want(is_char("/dev/fuse") && has_fs("fuse"))
    );
    let binder = has_fs("binder")
        || std::fs::read_dir("/dev").unwrap().flatten().any(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            (n.starts_with("binder") || n.ends_with("binder")) && is_char(&format!("/dev/{n}"))
        });
    assert_eq!(level(&v, "binder"), want(binder));
    if !binder {
        assert!(fix(&v, "binder").contains("CONFIG_ANDROID_BINDERFS"), "{v}");
    }
    let uinput = is_char("/dev/uinput") || is_char("/dev/input/uinput");
    assert_eq!(level(&v, "uinput"), if uinput { "ok" } else { "optional" });
    // This machine runs VPs with user namespaces and seccomp (the runtime
    // tests prove it): the doctor must say so.
    assert_eq!(level(&v, "user namespaces"), "ok");
    assert_eq!(level(&v, "seccomp"), "ok");
    assert_eq!(level(&v, "memfd"), "ok");
    // The exit status says whether anything is missing.
    let missing = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["level"] == "missing")
        .count();
    assert_eq!(v["missing"].as_u64().unwrap() as usize, missing);
    assert_eq!(code, if missing == 0 { 0 } else { 1 });

    // idmapped mounts: the temp folder's file system takes them (VPs of
    // the whole suite run on it) ...
    assert_eq!(level(&v, "idmapped mounts"), "ok", "{v}");
    // ... /proc does not: the check fails there and names the fix.
    let (code, p) = doctor(Path::new("/proc/self"));
    assert_eq!(level(&p, "idmapped mounts"), "missing", "{p}");
    assert!(fix(&p, "idmapped mounts").contains("--state-dir"), "{p}");
    assert_eq!(code, 1);
    let _ = std::fs::remove_dir_all(&tmp);
}
