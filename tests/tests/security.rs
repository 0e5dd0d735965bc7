//! Issue #10: the escape suite. Every attempt is made as VP root (or as an
//! unprivileged host user) against real VPs, and must be denied; where an
//! attempt could fail for an unrelated reason, a control shows the same
//! operation succeeding against a target the attacker may touch.

use std::time::Duration;

use cells_tests::{pixel, Cells};
use mux_fb::geometry::Rgb;

const RED: Rgb = Rgb(0xff0000);
const GREEN: Rgb = Rgb(0x00ff00);

/// Two running VPs, red (foreground) and green, both painted.
fn red_green() -> Cells {
    let c = Cells::new();
    for (vp, color) in [("red", "ff0000"), ("green", "00ff00")] {
        c.ok(&["create", vp, "--template", "minimal", "--color", color]);
        c.ok(&["start", vp]);
    }
    for (vp, color) in [("red", RED), ("green", GREEN)] {
        assert!(
            Cells::wait_until(Duration::from_secs(10), || pixel(&c.shot(Some(vp)), 5, 5)
                == color),
            "the persona of {vp} did not paint its framebuffer"
        );
    }
    c
}

fn daemon_alive(c: &Cells) -> bool {
    let pid = c.daemon_pid().expect("daemon") as i32;
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) } == 0;
    exists && c.ctl(&["list"]).code == 0
}

/// Hole 1: whatever the foreground VP does to its framebuffer file, cellsd
/// (which composes it 60 times a second) survives and every other VP's
/// frame stays intact.
#[test]
fn framebuffer_truncate_grow_garbage_and_chmod_do_not_reach_cellsd() {
    let c = red_green();
    // Control: the panel shows the foreground's frame.
    assert_eq!(pixel(&c.shot(None), 5, 5), RED);
    let attacks = [
        ": > /dev/fb0",                    // truncate to nothing (used to SIGBUS cellsd)
        "truncate -s 1 /dev/graphics/fb0", // a frame's first byte only
        "truncate -s 512M /dev/fb0",       // grow far past a frame
        "dd if=/dev/urandom of=/dev/fb0 bs=65536 count=200 2>/dev/null; true", // garbage
        "chmod 0666 /dev/fb0 && chmod 0666 /dev/graphics/fb0.info; true",
        ": > /dev/fb0",
    ];
    for a in attacks {
        c.sh("red", a);
        // Several compositor refreshes over the attacked file.
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            daemon_alive(&c),
            "cellsd died after `{a}` in the foreground VP; log:\n{}",
            c.daemon_log()
        );
        let _ = c.shot(None);
        let _ = c.shot(Some("red"));
    }
    // Whole again and drawn: the panel shows it again (cellsd maps the
    // file anew once it is a frame long).
    c.sh_ok(
        "red",
        "s=$(sed -n 's/^stride=//p' /dev/graphics/fb0.info); \
         h=$(sed -n 's/^height=//p' /dev/graphics/fb0.info); \
         truncate -s $((s*h)) /dev/fb0 && /system/bin/persona --animate --frames 1",
    );
    assert!(
        Cells::wait_until(Duration::from_secs(2), || pixel(&c.shot(None), 700, 600)
            == RED),
        "the restored frame is not shown"
    );
    // The other VP is untouched and still switches in.
    assert_eq!(pixel(&c.shot(Some("green")), 5, 5), GREEN);
    c.ok(&["switch", "green"]);
    assert_eq!(pixel(&c.shot(None), 5, 5), GREEN);
    c.ok(&["switch", "red"]);
    // The VP's chmod reached only its own file: nothing of the monitor's
    // device folder is visible on the host.
    assert!(!c.run.join("vps/red/dev/fb0").exists());
    assert!(daemon_alive(&c));
}

/// Hole 6: the masks and read-only paths are locked mounts; VP root cannot
/// unmount or remount them, nor mount a fresh (unmasked) proc.
#[test]
fn masks_and_read_only_paths_cannot_be_removed() {
    let c = Cells::new();
    c.create_start("vp");
    // Control: VP root mounts and unmounts in its own namespace.
    c.sh_ok(
        "vp",
        "mkdir -p /tmp/own && mount -t tmpfs none /tmp/own && umount /tmp/own",
    );
    for attack in [
        "umount /proc/timer_list",
        "umount -l /proc/timer_list",
        "umount /proc/kcore",
        "umount /proc/sys",
        "umount -l /proc/sys",
        "umount /sys/firmware",
        "mount -o remount,rw /proc/sys",
        "mount -o remount,bind,rw /proc/sys",
        "mkdir -p /tmp/p && mount -t proc proc /tmp/p",
        "mkdir -p /tmp/s && mount -t sysfs sysfs /tmp/s",
        "echo 1 > /proc/sys/kernel/sysrq",
        "echo h > /proc/sysrq-trigger",
    ] {
        let o = c.sh("vp", attack);
        assert_ne!(o.code, 0, "`{attack}` succeeded in the VP: {o:?}");
    }
    // Still masked afterwards.
    assert_eq!(c.sh_ok("vp", "wc -c < /proc/timer_list").trim(), "0");
    assert!(c.sh("vp", "ls /proc/sys/kernel/hostname").code == 0);
}

/// Hole 12 (and 4): the VP's nodes are its own copies; chmod by VP root
/// changes nothing on the host. The console is a pty of the VP's own devpts.
#[test]
fn device_nodes_given_to_a_vp_are_not_host_nodes() {
    let c = Cells::new();
    c.create_start("vp");
    // Control: VP root may chmod what it owns.
    c.sh_ok("vp", "touch /data/mine && chmod 0600 /data/mine");
    // Host nodes bound into the VP cannot be chmod'ed.
    for n in ["/dev/null", "/dev/zero", "/dev/urandom", "/dev/tty"] {
        let o = c.sh("vp", &format!("chmod 0600 {n}"));
        assert_ne!(o.code, 0, "chmod of {n} succeeded: {o:?}");
    }
    // /dev/console belongs to the VP (it may chmod it) but is not a host pty.
    let before = host_pts();
    c.sh_ok("vp", "chmod 0666 /dev/console && ls -l /dev/console");
    let (dev, ino) = {
        let out = c.sh_ok("vp", "stat -c '%D %i' /dev/console");
        let mut it = out.split_whitespace();
        (
            it.next().unwrap_or("").to_string(),
            it.next().unwrap_or("").to_string(),
        )
    };
    let host_devpts = c.sh_ok("vp", "stat -c '%D' /dev/pts/ptmx");
    assert_eq!(
        dev,
        host_devpts.trim(),
        "the console is on the VP's own devpts"
    );
    assert!(!ino.is_empty());
    assert_eq!(before, host_pts(), "no host pty changed mode");
}

/// Mode of every pty of the host's devpts.
fn host_pts() -> Vec<(String, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut v: Vec<(String, u32)> = std::fs::read_dir("/dev/pts")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?.permissions().mode();
            Some((e.file_name().to_string_lossy().to_string(), m))
        })
        .collect();
    v.sort();
    v
}

/// Hole 9: the VP's user namespace belongs to VP root's host uid, so what
/// the VP uses is charged to it: a VP that takes every inotify instance it
/// may leaves host root's untouched.
#[test]
fn kernel_counts_are_charged_to_the_vp_not_host_root() {
    let c = Cells::new();
    c.create_start("vp");
    c.push_probe("vp");
    let mut child = c
        .ctl_cmd()
        .args(["exec", "vp", "--", "/data/probe", "inotify-hold"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("cellctl exec");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("probe output");
    let held: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // Control: the VP got (nearly) its whole per-user allowance.
    let limit: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(128);
    assert!(
        held + 8 >= limit,
        "the VP held only {held} of {limit}: {line}"
    );
    // Host root can still make inotify instances, several of them.
    let mut mine = Vec::new();
    for _ in 0..8 {
        // SAFETY: inotify_init1 with a flag; closed below.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        assert!(
            fd >= 0,
            "host root cannot make an inotify instance while a VP holds {held}: {}",
            std::io::Error::last_os_error()
        );
        mine.push(fd);
    }
    for fd in mine {
        // SAFETY: closing our own fds.
        unsafe { libc::close(fd) };
    }
    drop(child.stdin.take());
    let _ = child.wait();
}

/// Hole 3: `cellctl exec` never shows a host-credentialed process inside
/// the VP, and its request (argv, environment) is not on any host command
/// line.
#[test]
fn exec_puts_no_host_credentialed_process_into_the_vp() {
    let c = Cells::new();
    c.create_start("vp");
    c.push_probe("vp");
    // VP root watches its /proc while execs come and go.
    let watcher = c
        .ctl_cmd()
        .args(["exec", "vp", "--", "/data/probe", "uid-scan", "4"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("cellctl exec");
    let secret = format!("s3cret-{}", std::process::id());
    let mut seen_on_host = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut execs = 0;
    while std::time::Instant::now() < deadline {
        let child = c
            .ctl_cmd()
            .args([
                "exec",
                "-e",
                &format!("TOKEN={secret}"),
                "vp",
                "--",
                "sh",
                "-c",
                "echo $TOKEN; sleep 0.05",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("cellctl exec");
        // Every host process's command line, while the exec runs.
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                if cmd.contains(&secret) && !cmd.contains("cellctl") {
                    seen_on_host.push(cmd);
                }
            }
        }
        let out = child.wait_with_output().expect("exec output");
        // Control: the command got the value.
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), secret);
        execs += 1;
    }
    assert!(
        seen_on_host.is_empty(),
        "the exec request is on a host command line: {seen_on_host:?}"
    );
    let out = watcher.wait_with_output().expect("scan output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("scans "), "the scan ran: {text}");
    assert!(
        !text.contains("unmapped"),
        "during {execs} execs the VP saw processes with host credentials:\n{text}"
    );
}

/// Hole 4: the command runs on pipes made for it (or a pty of the VP's own
/// devpts), in a session of its own; no terminal of the host gets in.
#[test]
fn exec_gets_no_host_terminal_and_its_own_session() {
    let c = Cells::new();
    c.create_start("vp");
    let script = "for f in 0 1 2; do readlink /proc/self/fd/$f; done; \
                  echo sid $(cut -d' ' -f6 /proc/self/stat) sh $$";
    // cellctl itself runs on a terminal (util-linux script gives it a pty).
    let cmd = format!(
        "CELLS_SOCKET={} {} exec vp -- sh -c \"{}\"",
        c.socket.display(),
        c.bin.join("cellctl").display(),
        script.replace('$', "\\$")
    );
    let o = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script (util-linux)");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("sid"), "{text}");
    let links: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(':') || l.starts_with('/'))
        .collect();
    assert_eq!(links.len(), 3, "{text}");
    for l in &links {
        assert!(
            l.trim().starts_with("pipe:"),
            "the command's stdio is not a pipe: {text}"
        );
    }
    let sid_line = text.lines().find(|l| l.starts_with("sid")).unwrap_or("");
    let f: Vec<&str> = sid_line.split_whitespace().collect();
    assert_eq!(
        f.get(1),
        f.get(3),
        "the command is not in a session of its own: {text}"
    );
    // With -t: a pty of the VP's devpts, not the host's.
    let o = c.ctl(&[
        "exec",
        "-t",
        "vp",
        "--",
        "sh",
        "-c",
        "stat -L -c '%D' /proc/self/fd/0 /dev/pts/ptmx; tty",
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    let l: Vec<&str> = o.stdout.lines().map(str::trim).collect();
    assert!(
        l.len() >= 3 && l[0] == l[1],
        "stdin is not on the VP's devpts: {o:?}"
    );
    assert!(l[2].starts_with("/dev/pts/"), "{o:?}");
    // A daemon left behind does not keep cellctl (or the host terminal).
    let t = std::time::Instant::now();
    c.sh_ok("vp", "sleep 30 & echo started");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "exec waited for the daemon it left"
    );
    c.sh_ok("vp", "pkill sleep || killall sleep || true");
}

/// Hole 7: a VP's processes possess no keyring of the host: the init and
/// every exec get a new session keyring.
#[test]
fn vps_share_no_session_keyring_with_the_host() {
    // A key in the session keyring that cellsd (a child of this test)
    // inherits.
    let desc = format!("cells-test-{}", std::process::id());
    let cdesc = std::ffi::CString::new(desc.clone()).unwrap();
    const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
    // SAFETY: add_key with valid strings and a small payload.
    let key = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            c"user".as_ptr(),
            cdesc.as_ptr(),
            b"secret".as_ptr(),
            6usize,
            KEY_SPEC_SESSION_KEYRING,
        )
    };
    assert!(key > 0, "add_key: {}", std::io::Error::last_os_error());
    let c = Cells::new();
    c.ok(&["create", "a", "--template", "minimal", "--seccomp", "off"]);
    c.ok(&["create", "b", "--template", "minimal", "--seccomp", "off"]);
    c.ok(&["start", "a", "b"]);
    // Control: a process of the host with cellsd's keyring finds the key.
    let host = std::process::Command::new(c.bin.join("cells-probe"))
        .args(["keyring", &desc])
        .output()
        .expect("probe on the host");
    let host = String::from_utf8_lossy(&host.stdout).to_string();
    assert!(host.contains("found"), "{host}");
    let mut sessions = Vec::new();
    for vp in ["a", "b"] {
        c.push_probe(vp);
        for _ in 0..2 {
            let o = c.probe(vp, &["keyring", &desc]);
            assert_eq!(o.code, 0, "{o:?}");
            assert!(
                !o.stdout.contains("found"),
                "VP {vp} possesses the host's key: {o:?}"
            );
            sessions.push(o.stdout.lines().next().unwrap_or("").to_string());
        }
    }
    sessions.push(host.lines().next().unwrap_or("").to_string());
    let mut uniq = sessions.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(
        uniq.len(),
        sessions.len(),
        "a session keyring is shared: {sessions:?}"
    );
    // SAFETY: unlinking our test key from our session keyring (KEYCTL_UNLINK).
    unsafe { libc::syscall(libc::SYS_keyctl, 9, key, KEY_SPEC_SESSION_KEYRING) };
}

fn syscall_results(c: &Cells, vp: &str) -> std::collections::BTreeMap<String, String> {
    c.push_probe(vp);
    let o = c.probe(vp, &["syscalls"]);
    assert_eq!(o.code, 0, "{o:?}");
    o.stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, r)| (n.to_string(), r.to_string()))
        .collect()
}

/// Hole 6: every VP process runs under the default seccomp filter; `off`
/// is the control (the same calls then reach the kernel, which allows
/// several of them to VP root).
#[test]
fn the_default_seccomp_filter_stops_what_it_lists() {
    let c = Cells::new();
    c.ok(&["create", "def", "--template", "minimal"]);
    c.ok(&["create", "off", "--template", "minimal", "--seccomp", "off"]);
    c.ok(&["start", "def", "off"]);
    assert_eq!(c.status("def")["seccomp"], "default");
    assert_eq!(c.status("off")["seccomp"], "off");
    // The init (and so everything it starts) runs filtered.
    assert!(c.sh_ok("def", "grep Seccomp: /proc/1/status").contains('2'));
    assert!(c.sh_ok("off", "grep Seccomp: /proc/1/status").contains('0'));
    let def = syscall_results(&c, "def");
    let off = syscall_results(&c, "off");
    let eperm = "errno 1".to_string();
    // Calls the kernel allows VP root, stopped only by the filter.
    for call in [
        "keyctl",
        "add_key",
        "io_uring_setup",
        "userfaultfd",
        "perf_event_open",
        "unshare_newuser",
        "personality",
        "keyctl_i386",
    ] {
        assert_eq!(
            def.get(call),
            Some(&eperm),
            "{call} in the filtered VP: {def:?}"
        );
        assert_eq!(
            off.get(call).map(String::as_str),
            Some("ok"),
            "control: {call} without the filter: {off:?}"
        );
    }
    assert_eq!(def.get("clone3").map(String::as_str), Some("errno 38"));
    assert_eq!(off.get("clone3").map(String::as_str), Some("ok"));
    // Calls the kernel refuses a VP anyway; the filter refuses them first.
    for call in [
        "request_key",
        "bpf",
        "kexec_load",
        "init_module",
        "finit_module",
        "delete_module",
        "open_by_handle_at",
        "reboot",
        "syslog",
        "acct",
        "swapon",
        "settimeofday",
        "clock_settime",
    ] {
        assert_eq!(def.get(call), Some(&eperm), "{call}: {def:?}");
    }
    // What Android's init needs still works under the filter.
    c.sh_ok(
        "def",
        "unshare -m sh -c 'mount -t tmpfs none /tmp && umount /tmp' && echo ok",
    );
    // A bad profile is refused at create, naming the problem.
    let f = c.root.join("bad.json");
    std::fs::write(&f, r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#).unwrap();
    let e = c.fails(&[
        "create",
        "bad",
        "--template",
        "minimal",
        "--seccomp",
        &f.to_string_lossy(),
    ]);
    assert!(e.contains("SCMP_ACT_NOTIFY is not supported"), "{e}");
    // A docker-format profile is applied.
    std::fs::write(
        &f,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#,
    )
    .unwrap();
    c.ok(&[
        "create",
        "custom",
        "--template",
        "minimal",
        "--seccomp",
        &f.to_string_lossy(),
    ]);
    c.ok(&["start", "custom"]);
    assert_eq!(c.status("custom")["seccomp"], "custom");
    assert!(c
        .sh_ok("custom", "grep Seccomp: /proc/1/status")
        .contains('2'));
    let custom = syscall_results(&c, "custom");
    assert_eq!(
        custom.get("keyctl").map(String::as_str),
        Some("ok"),
        "{custom:?}"
    );
}

/// Hole 10: the VP's folders belong to root except its writable layer and
/// /data; a definition changed on disk is refused at load, naming the
/// field, and nothing of the VP is touched.
#[test]
fn vp_folders_are_roots_and_tampered_definitions_are_refused() {
    use std::os::unix::fs::MetadataExt;
    let mut c = Cells::new();
    // Its folders, not a disk image: the test reads /data from the host
    // while the VP is stopped.
    c.ok(&["create", "vp", "--template", "minimal", "--disk", "none"]);
    c.ok(&["start", "vp"]);
    c.sh_ok("vp", "echo keep > /data/precious");
    let dir = c.state.join("vps/vp");
    let m = std::fs::metadata(&dir).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o700), "vps/vp");
    for (sub, owned_by_vp) in [("upper", true), ("data", true), ("work", false)] {
        let m = std::fs::metadata(dir.join(sub)).unwrap();
        assert_eq!(m.uid() != 0, owned_by_vp, "{sub} owner {}", m.uid());
    }
    let run = std::fs::metadata(c.run.join("vps/vp")).unwrap();
    assert_eq!((run.uid(), run.mode() & 0o077), (0, 0), "run/vps/vp");
    c.ok(&["stop", "vp"]);
    c.ok(&["create", "other", "--template", "minimal"]);
    // Tamper: VP root mapped to host root; and a host path bound into a VP.
    let json = std::fs::read_to_string(dir.join("vp.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["runtime"]["linux"]["uidMappings"][0]["hostID"] = 0.into();
    std::fs::write(dir.join("vp.json"), v.to_string()).unwrap();
    let other = c.state.join("vps/other/vp.json");
    let mut o: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&other).unwrap()).unwrap();
    o["runtime"]["mounts"][4]["source"] = "/".into();
    std::fs::write(&other, o.to_string()).unwrap();
    c.end_daemon(libc::SIGTERM);
    c.start_daemon();
    let s = c.status("vp");
    assert_eq!(s["state"], "invalid", "{s}");
    let err = s["error"].as_str().unwrap_or("");
    assert!(err.contains("uidMappings"), "{err}");
    let e = c.fails(&["start", "vp"]);
    assert!(
        e.contains("cannot be used") && e.contains("uidMappings"),
        "{e}"
    );
    let s = c.status("other");
    assert!(
        s["error"].as_str().unwrap_or("").contains("runtime.mounts"),
        "{s}"
    );
    // Listed, and nothing removed: not by a restart, not by destroy.
    let list = c.ok(&["list"]);
    assert!(list.contains("invalid"), "{list}");
    c.fails(&["destroy", "vp"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("data/precious")).unwrap(),
        "keep\n"
    );
    // A definition that is not JSON at all is listed the same way.
    std::fs::write(&other, "{ not json").unwrap();
    c.end_daemon(libc::SIGTERM);
    c.start_daemon();
    assert_eq!(c.status("other")["state"], "invalid");
    // Control: restored, the VP starts again with its data.
    std::fs::write(dir.join("vp.json"), json).unwrap();
    c.end_daemon(libc::SIGTERM);
    c.start_daemon();
    c.ok(&["start", "vp"]);
    assert_eq!(c.sh_ok("vp", "cat /data/precious").trim(), "keep");
}

/// Removes a host user made by a test, by name, however the test ends.
struct TestUser(String);

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("userdel").arg(&self.0).status();
    }
}

/// Hole 10: a VP's ids must be nobody's on the host.
#[test]
fn id_ranges_that_overlap_host_users_are_refused() {
    let base = 50_000_000 + (std::process::id() % 1000) * 65536 * 4;
    let c = Cells::with_args(None, &["--id-base", &base.to_string()]);
    c.ok(&["template", "build", "minimal"]);
    c.ok(&["create", "a", "--template", "minimal"]);
    c.ok(&["start", "a"]);
    c.ok(&["stop", "a"]);
    let name = format!("cellst{}", std::process::id() % 100_000);
    let ok = std::process::Command::new("useradd")
        .args(["--no-create-home", "--shell", "/usr/sbin/nologin", "--uid"])
        .arg((base + 100).to_string())
        .arg(&name)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "useradd (passwd) failed");
    let _user = TestUser(name.clone());
    let e = c.fails(&["start", "a"]);
    assert!(e.contains(&name) && e.contains("--id-base"), "{e}");
    // Creating a VP over those ids is refused too (b would get a's slot).
    c.ok(&["destroy", "a"]);
    let e = c.fails(&["create", "b", "--template", "minimal"]);
    assert!(e.contains(&name), "{e}");
}

/// Hole 10: cellsd refuses a state or run dir that others could change.
#[test]
fn state_and_run_dirs_others_can_change_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let root = std::env::temp_dir().join(format!("cells-trust-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("open/state")).unwrap();
    std::fs::set_permissions(root.join("open"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let bin = cells_tests::bin_dir().join("cellsd");
    let o = std::process::Command::new(&bin)
        .arg("--state-dir")
        .arg(root.join("open/state"))
        .arg("--run-dir")
        .arg(root.join("run"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("writable by others") && err.contains("open"),
        "{err}"
    );
    std::fs::create_dir_all(root.join("user")).unwrap();
    std::os::unix::fs::chown(root.join("user"), Some(65534), Some(65534)).unwrap();
    let o = std::process::Command::new(&bin)
        .arg("--state-dir")
        .arg(root.join("state"))
        .arg("--run-dir")
        .arg(root.join("user/run"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("owned by uid 65534"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// No VP id needs to walk the host's folders any more: a state dir under a
/// folder only root may enter works (it used to fail with EACCES).
#[test]
fn a_state_dir_below_a_private_folder_works() {
    use std::os::unix::fs::PermissionsExt;
    let c = Cells::new();
    // The harness's folder is made 0700 before any VP exists.
    std::fs::set_permissions(&c.root, std::fs::Permissions::from_mode(0o700)).unwrap();
    c.create_start("vp");
    assert_eq!(
        c.sh_ok("vp", "echo hi > /data/x && cat /data/x").trim(),
        "hi"
    );
}

/// Run `script` as the unprivileged host user nobody (util-linux setpriv),
/// with a HOME of its own.
fn as_nobody(c: &Cells, script: &str) -> cells_tests::Out {
    let home = c.root.join("nobody-home");
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .env("HOME", &home)
        .env("PYTHONPATH", pylib())
        .current_dir(&home)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("setpriv (util-linux)")
        .into()
}

/// PyPI's adb-shell, installed by scripts/install-deps.
fn pylib() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pylib")
}

fn adb_shell_client() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tools/adb_shell_client.py")
        .to_string_lossy()
        .to_string()
}

/// adb-shell (PyPI) as root with `key`: (exit status, output).
fn adb_shell(port: &str, key: &std::path::Path, cmd: &str) -> (i32, String) {
    let o = std::process::Command::new("python3")
        .arg(adb_shell_client())
        .args(["127.0.0.1", port])
        .arg(key)
        .arg(cmd)
        .env("PYTHONPATH", pylib())
        .output()
        .expect("python3 with adb-shell (scripts/install-deps)");
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// Hole 2: only authorized adb keys get into a VP; any other client, a
/// local user's above all, is refused. Two independent clients: Debian's
/// adb and PyPI's adb-shell.
#[test]
fn adb_lets_in_authorized_keys_only() {
    let c = Cells::new();
    c.create_start("vp");
    let serial = c
        .ok(&["adb", "vp"])
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    let port = serial.rsplit(':').next().unwrap().to_string();
    let adb = cells_tests::adb::Adb::new(&c);
    // No key is authorized yet: even root's client is refused.
    adb.run(&["connect", &serial]);
    let o = adb.run(&["-s", &serial, "shell", "id"]);
    assert_ne!(o.code, 0, "{o:?}");
    assert!(format!("{o:?}").contains("unauthorized"), "{o:?}");
    // Control: authorized, the stock client gets VP root's shell.
    adb.authorize(&c, "vp");
    assert!(c.ok(&["adb", "vp", "--keys"]).contains('@'));
    adb.run(&["disconnect", &serial]);
    adb.connect(&serial);
    assert!(adb.ok(&["-s", &serial, "shell", "id"]).contains("uid=0"));
    // The local user nobody, with its own key, gets nothing.
    let o = as_nobody(
        &c,
        &format!(
            "adb -P {p} start-server >/dev/null 2>&1; adb -P {p} connect {serial}; adb -P {p} -s {serial} shell id; r=$?; adb -P {p} kill-server; exit $r",
            p = adb.port + 1
        ),
    );
    assert_ne!(o.code, 0, "nobody got a shell: {o:?}");
    assert!(!o.stdout.contains("uid=0"), "{o:?}");
    // adb-shell: with the authorized key it gets in, with its own it is not.
    let root_key = adb.home.join(".android/adbkey");
    let (code, out) = adb_shell(&port, &root_key, "id");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("uid=0"), "{out}");
    let stranger = c.root.join("stranger-key");
    let (code, out) = adb_shell(&port, &stranger, "id");
    assert_eq!(code, 3, "an unauthorized adb-shell key got in: {out}");
    let (code, out) = adb_shell(&port, std::path::Path::new("none"), "id");
    assert_eq!(code, 3, "adb-shell without a key got in: {out}");
    let o = as_nobody(
        &c,
        &format!("python3 {} 127.0.0.1 {port} ./k id", adb_shell_client()),
    );
    assert_eq!(o.code, 3, "nobody's adb-shell got in: {o:?}");
    // Authorizing adb-shell's key lets it in; revoking every key locks out
    // new connections again.
    c.ok(&[
        "adb",
        "vp",
        "--authorize",
        &format!("{}.pub", stranger.display()),
    ]);
    assert_eq!(adb_shell(&port, &stranger, "true").0, 0);
    c.ok(&["adb", "vp", "--revoke"]);
    assert_eq!(adb_shell(&port, &stranger, "true").0, 3);
    assert_eq!(adb_shell(&port, &root_key, "true").0, 3);
    // A bad key is refused with the fix.
    let bad = c.root.join("bad.pub");
    std::fs::write(&bad, "not a key").unwrap();
    let e = c.fails(&["adb", "vp", "--authorize", &bad.to_string_lossy()]);
    assert!(e.contains("not an adb public key"), "{e}");
}

/// Hole 8: a VP's port carries only the VP's own MAC and address; no VP
/// reaches a service of the host.
#[test]
fn vps_cannot_spoof_each_other_or_reach_host_services() {
    let c = Cells::new();
    for vp in ["s1", "s2", "s3"] {
        c.ok(&[
            "create",
            vp,
            "--template",
            "minimal",
            "--network",
            "shared-bridge",
        ]);
    }
    c.ok(&["create", "iso", "--template", "minimal"]);
    c.ok(&["start", "s1", "s2", "s3", "iso"]);
    let ip = |vp: &str| c.status(vp)["ip"].as_str().unwrap().to_string();
    let mac = |vp: &str| {
        c.sh_ok(vp, "cat /sys/class/net/eth0/address")
            .trim()
            .to_string()
    };
    for vp in ["s1", "s3"] {
        c.push_probe(vp);
    }
    let (i1, i2, i3) = (ip("s1"), ip("s2"), ip("s3"));
    let (m1, m2, m3) = (mac("s1"), mac("s2"), mac("s3"));
    let arp_of = |vp: &str, addr: &str| -> String {
        c.sh_ok(vp, &format!("grep '^{addr} ' /proc/net/arp || true"))
    };
    // ARP: s1 claims s2's address to s3; control: s1 announcing itself.
    c.probe("s1", &["arp-request", &m1, &i2, &i3]);
    c.probe("s1", &["arp-request", &m1, &i1, &i3]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        arp_of("s3", &i1).contains(&m1),
        "control: s3 learnt s1 from its ARP: {}",
        arp_of("s3", &i1)
    );
    assert!(
        !arp_of("s3", &i2).contains(&m1),
        "s3 took s1's MAC for s2's address: {}",
        arp_of("s3", &i2)
    );
    // UDP: forged IP source, forged MAC source; controls with the truth.
    let mut listen = c
        .ctl_cmd()
        .args(["exec", "s3", "--", "/data/probe", "udp-listen", "9000", "3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("listener");
    let mut out = std::io::BufReader::new(listen.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).unwrap();
    assert!(first.contains("listening"), "{first}");
    c.probe("s1", &["udp-raw", &i1, &i3, "9000", "honest-ip"]);
    c.probe("s1", &["udp-raw", &i2, &i3, "9000", "spoofed-ip"]);
    c.probe(
        "s1",
        &["frame-udp", &m1, &m3, &i1, &i3, "9000", "honest-frame"],
    );
    c.probe(
        "s1",
        &["frame-udp", &m2, &m3, &i1, &i3, "9000", "spoofed-mac"],
    );
    c.probe(
        "s1",
        &["frame-udp", &m2, &m3, &i2, &i3, "9000", "spoofed-both"],
    );
    let mut got = String::new();
    std::io::Read::read_to_string(&mut out, &mut got).unwrap();
    let _ = listen.wait();
    assert!(
        got.contains(&format!("from {i1} honest-ip")),
        "control (raw socket): {got}"
    );
    assert!(
        got.contains("honest-frame"),
        "control (packet socket): {got}"
    );
    assert!(
        !got.contains("spoofed"),
        "a spoofed datagram arrived: {got}"
    );
    // Host services: a listener on the bridge address answers the host
    // (control) but neither an isolated nor a shared VP.
    let gw = c.status("iso")["ip"]
        .as_str()
        .unwrap()
        .rsplit_once('.')
        .map(|(net, _)| format!("{net}.1"))
        .unwrap();
    let l = std::net::TcpListener::bind((gw.as_str(), 0)).expect("listen on the bridge address");
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    assert!(
        std::net::TcpStream::connect((gw.as_str(), port)).is_ok(),
        "control: the host reaches it"
    );
    for vp in ["iso", "s1"] {
        let o = c.sh(
            vp,
            &format!("timeout 3 nc {gw} {port} </dev/null; echo rc=$?"),
        );
        assert!(
            !o.stdout.contains("rc=0"),
            "{vp} reached a host service: {o:?}"
        );
    }
    // The gateway still answers a ping.
    assert_eq!(c.sh("iso", &format!("ping -c1 -W2 {gw}")).code, 0);
}

/// Hole 5: a VP's input devices are evdev devices its monitor serves, not
/// devices of the host's input core: what the VP writes to them (Alt+SysRq,
/// KEY_POWER) reaches its own readers only. (The emulator proves the same
/// with the host's real sysrq handler and logind.)
#[test]
fn vp_input_devices_are_not_host_input_devices() {
    let c = Cells::new();
    c.create_start("vp");
    c.create_start("other");
    c.push_probe("vp");
    c.push_probe("other");
    // Real evdev answers: name, version, capabilities, ranges, a grab.
    let info = c.probe("vp", &["evdev-info", "/dev/input/event1"]).stdout;
    assert!(
        info.contains("name cells keys") && info.contains("version 0x10001"),
        "{info}"
    );
    assert!(
        info.contains("key 116") && info.contains("grab 0"),
        "{info}"
    );
    let touch = c.probe("vp", &["evdev-info", "/dev/input/event0"]).stdout;
    assert!(touch.contains("abs 53 0 719"), "{touch}");
    // None of them is a device of the host.
    let host = std::fs::read_to_string("/proc/bus/input/devices").unwrap_or_default();
    assert!(
        !host.contains("cells"),
        "a VP device is a host input device:\n{host}"
    );
    // Alt+SysRq+H and KEY_POWER written by VP root: its own reader gets them
    // (control), the other VP's reader nothing.
    let reader = |vp: &str| {
        let mut child = c
            .ctl_cmd()
            .args([
                "exec",
                vp,
                "--",
                "/data/probe",
                "evdev-read",
                "/dev/input/event1",
                "10",
                "2000",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        std::io::BufRead::read_line(&mut out, &mut first).unwrap();
        assert!(first.contains("open"), "{first}");
        (child, out)
    };
    let (mut own, mut own_out) = reader("vp");
    let (mut theirs, mut their_out) = reader("other");
    let w = c.probe(
        "vp",
        &[
            "evdev-write",
            "/dev/input/event1",
            "1:56:1",
            "1:99:1",
            "1:35:1",
            "0:0:0",
            "1:116:1",
            "0:0:0",
        ],
    );
    assert!(w.stdout.contains("wrote 144"), "{w:?}");
    let mut got = String::new();
    std::io::Read::read_to_string(&mut own_out, &mut got).unwrap();
    let _ = own.wait();
    assert!(
        got.contains("1 99 1") && got.contains("1 116 1"),
        "the VP's own reader: {got}"
    );
    let mut other = String::new();
    std::io::Read::read_to_string(&mut their_out, &mut other).unwrap();
    let _ = theirs.wait();
    assert!(
        !other.contains("1 116"),
        "another VP's reader got it: {other}"
    );
}

/// The classics: devices, kernel logs, sysctls, mounts of host paths, the
/// template, other VPs' processes, sockets and SysV IPC, cgroups.
#[test]
fn classic_escapes_are_denied() {
    let c = Cells::new();
    c.create_start("a");
    c.create_start("b");
    c.push_probe("a");
    c.push_probe("b");
    // Controls first: what VP root may do.
    c.sh_ok(
        "a",
        "mkfifo /tmp/fifo && mkdir -p /tmp/m && mount -t tmpfs x /tmp/m && umount /tmp/m",
    );
    let denied = [
        "mknod /tmp/mem c 1 1",
        "mknod /tmp/sda b 8 0",
        "cat /dev/mem",
        "cat /dev/kmsg",
        "head -c1 /dev/vda /dev/sda /dev/nvme0n1",
        "dmesg",
        "echo 1 > /proc/sys/vm/drop_caches",
        "echo 0 > /proc/sys/kernel/randomize_va_space",
        "sysctl -w kernel.panic=1",
        "date -s 2001-01-01 >/dev/null 2>&1; [ $(date +%Y) = 2001 ]",
        "mount -t ext4 /dev/vda /tmp/m",
        "mount -t devtmpfs devtmpfs /tmp/m",
        "mount -t debugfs debugfs /tmp/m",
        "mount -t securityfs securityfs /tmp/m",
        "mount -t bpf bpf /tmp/m",
        "echo 1 > /sys/kernel/mm/ksm/run",
        "cat /proc/kcore | head -c1 | grep -q .",
        "cat /proc/keys | grep -q .",
        "insmod /nonexistent.ko",
    ];
    for attack in denied {
        let o = c.sh("a", attack);
        assert_ne!(o.code, 0, "`{attack}` succeeded as VP root: {o:?}");
    }
    // Host paths are out of reach, also through /proc/*/root.
    let marker = format!("/tmp/cells-host-marker-{}", std::process::id());
    std::fs::write(&marker, "host").unwrap();
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "host", "control");
    let o = c.sh(
        "a",
        &format!("cat {marker} /proc/*/root{marker} /proc/1/root/..{marker} 2>/dev/null"),
    );
    assert!(
        !o.stdout.contains("host"),
        "a host file was read from the VP: {o:?}"
    );
    let _ = std::fs::remove_file(&marker);
    // The template: a write lands in the VP's own layer only.
    let build = c.status("a")["template_build"]
        .as_str()
        .unwrap()
        .to_string();
    let tpl = c.state.join(format!(
        "templates/minimal/builds/{build}/rootfs/system/etc/hosts"
    ));
    let before = std::fs::read(&tpl).unwrap();
    c.sh_ok("a", "echo owned > /system/etc/hosts; cat /system/etc/hosts");
    assert_eq!(
        std::fs::read(&tpl).unwrap(),
        before,
        "the shared template changed"
    );
    assert_ne!(
        c.sh_ok("b", "cat /system/etc/hosts"),
        "owned\n",
        "b sees a's write"
    );
    // Other VPs' processes: invisible, unreachable by signal.
    c.sh_ok("b", "sleep 300 >/dev/null 2>&1 & echo $! > /data/sleeper");
    let bpid = c.sh_ok("b", "cat /data/sleeper").trim().to_string();
    assert!(
        c.sh_ok("b", "ps").contains("sleep 300"),
        "control: b sees its process"
    );
    assert!(
        !c.sh_ok("a", "ps").contains("sleep 300"),
        "a sees b's process"
    );
    c.sh("a", "kill -9 -1; true");
    assert!(
        c.sh("b", &format!("kill -0 {bpid}")).code == 0,
        "a's kill -1 reached b"
    );
    // Abstract unix sockets and SysV IPC are per VP.
    let mut l = c
        .ctl_cmd()
        .args([
            "exec",
            "b",
            "--",
            "/data/probe",
            "unix-listen",
            "cells-b",
            "3",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(l.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.contains("listening"), "{first}");
    assert!(
        c.probe("b", &["unix-connect", "cells-b"])
            .stdout
            .contains("got hello"),
        "control"
    );
    assert!(
        c.probe("a", &["unix-connect", "cells-b"])
            .stdout
            .contains("errno"),
        "a reached b's socket"
    );
    let _ = l.wait();
    assert!(c
        .probe("b", &["shm-create", "4242"])
        .stdout
        .contains("created"));
    assert!(
        c.probe("b", &["shm-get", "4242"]).stdout.contains("found"),
        "control"
    );
    assert!(
        c.probe("a", &["shm-get", "4242"]).stdout.contains("errno"),
        "a sees b's shared memory"
    );
    // Cgroups: a VP's own cgroup namespace, whose files it cannot change.
    assert_eq!(
        c.sh_ok("a", "cat /proc/self/cgroup | cut -d: -f3 | sort -u")
            .trim(),
        "/"
    );
    let mnt = c.sh(
        "a",
        "mkdir -p /tmp/cg && mount -t cgroup -o pids none /tmp/cg && cat /tmp/cg/pids.max",
    );
    if mnt.code == 0 {
        assert_ne!(
            c.sh("a", "echo max > /tmp/cg/pids.max").code,
            0,
            "a raised its pids limit"
        );
        assert_ne!(
            c.sh("a", "echo 1 > /tmp/cg/cgroup.procs").code,
            0,
            "a moved its init"
        );
    }
    let cg = c.vp_cgroup_dirs("a");
    let pids = cg
        .iter()
        .find(|d| d.join("pids.max").exists())
        .map(|d| d.join("pids.max"))
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(pids).unwrap().trim(),
        "4096",
        "the limit stays"
    );
}

/// An unprivileged host user gets nothing of cellsd or of any VP: not its
/// sockets, not a VP's files, not its processes' roots. (adb: see
/// adb_lets_in_authorized_keys_only.)
#[test]
fn an_unprivileged_host_user_gets_into_nothing() {
    let c = Cells::new();
    c.create_start("vp");
    c.sh_ok("vp", "echo secret > /data/private");
    let init = c.status("vp")["pid"].as_u64().unwrap();
    // Controls: root has all of these.
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{init}/root/data/private")).unwrap(),
        "secret\n"
    );
    assert!(std::fs::metadata(c.state.join("vps/vp/disk.img")).is_ok());
    let upper = c.vp_folder("vp", "upper");
    assert!(std::fs::read_dir(&upper).is_ok(), "{}", upper.display());
    let connect = |path: &std::path::Path, kind: &str| {
        format!(
            "python3 -c \"import socket,sys; s=socket.socket(socket.AF_UNIX, socket.{kind}); s.connect('{}'); print('connected')\"",
            path.display()
        )
    };
    let attempts = [
        format!(
            "CELLS_SOCKET={} {} list",
            c.socket.display(),
            c.bin.join("cellctl").display()
        ),
        connect(&c.socket, "SOCK_STREAM"),
        connect(&c.run.join("input.sock"), "SOCK_SEQPACKET"),
        connect(&c.run.join("vps/vp/console.sock"), "SOCK_STREAM"),
        connect(&c.run.join("vps/vp/power.sock"), "SOCK_STREAM"),
        connect(&c.run.join("vps/vp/log.sock"), "SOCK_SEQPACKET"),
        format!("cat {}", c.state.join("vps/vp/data/private").display()),
        format!("head -c 4096 {}", c.state.join("vps/vp/disk.img").display()),
        format!("ls {}", c.state.join("vps/vp/upper").display()),
        format!("ls {}", upper.display()),
        format!("cat {}/private", c.vp_folder("vp", "data").display()),
        format!("cat {}", c.state.join("vps/vp/console.log").display()),
        format!("cat {}", c.state.join("vps/vp/vp.json").display()),
        format!("ls /proc/{init}/root/data"),
        format!("cat /proc/{init}/environ"),
        format!("echo x > {}/evil", c.run.display()),
        format!("ln -s / {}/vps/vp/console.log", c.state.display()),
    ];
    for a in &attempts {
        let o = as_nobody(&c, a);
        assert!(
            o.code != 0 && !o.stdout.contains("connected") && !o.stdout.contains("secret"),
            "nobody: `{a}` worked: {o:?}"
        );
    }
}

/// Every method of the control API checks its caller, not only the
/// socket's mode: with the socket opened to everyone, `nobody` is refused by
/// every method (found by introspection, so a new method is covered), while
/// root is refused by none.
#[test]
fn every_api_method_refuses_an_unauthorized_peer() {
    use std::os::unix::fs::PermissionsExt;
    let c = Cells::new();
    let probe = c.bin.join("cells-api-probe");
    let socket = c.socket.display().to_string();
    // Positive control: root may call everything.
    let o = std::process::Command::new(&probe)
        .arg(&socket)
        .output()
        .expect("cells-api-probe built next to cellsd");
    let root = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{o:?}");
    assert!(root.lines().count() > 30, "too few methods: {root}");
    assert!(!root.contains("AccessDenied"), "root was refused:\n{root}");
    assert!(!root.contains("unsupported-signature"), "{root}");
    // Open the socket and the folders to it to everyone.
    let mut dir = c.socket.parent().map(std::path::Path::to_path_buf);
    while let Some(d) = dir.filter(|d| d.starts_with(&c.root)) {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode | 0o001)).unwrap();
        dir = d.parent().map(std::path::Path::to_path_buf);
    }
    std::fs::set_permissions(&c.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = as_nobody(&c, &format!("{} {socket}", probe.display()));
    assert_eq!(o.code, 0, "nobody could not reach the socket: {o:?}");
    let mut methods = 0;
    for line in o.stdout.lines() {
        let (method, answer) = line.split_once(' ').unwrap_or((line, ""));
        methods += 1;
        if method == "Version" {
            continue; // says only which cellsd this is
        }
        assert_eq!(
            answer, "org.cells.Error.AccessDenied",
            "{method} was not refused to nobody:\n{}",
            o.stdout
        );
    }
    assert_eq!(methods, root.lines().count(), "{}", o.stdout);
}
