//! Issue #2: the runtime. Real VPs on this machine's kernel, as root.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use cells_tests::{Cells, Value};

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn vp_has_its_own_pid_namespace_and_hostname() {
    let c = Cells::new();
    c.create_start("work");
    c.ok(&[
        "create",
        "personal",
        "--template",
        "minimal",
        "--hostname",
        "phone-2",
    ]);
    c.ok(&["start", "personal"]);

    assert_eq!(c.sh_ok("work", "hostname").trim(), "work");
    assert_eq!(c.sh_ok("personal", "hostname").trim(), "phone-2");
    // init is pid 1 and only a handful of processes exist.
    assert_eq!(
        c.sh_ok("work", "cat /proc/1/cmdline | tr '\\0' ' '").trim(),
        "/init"
    );
    let pids: Vec<String> = lines(&c.sh_ok("work", "ls -d /proc/[0-9]* | wc -l"));
    let n: usize = pids[0].parse().unwrap();
    assert!(n < 10, "{n} processes visible in the VP");
    // The host pid of init is what status reports, and it is not pid 1 there.
    let st = c.status("work");
    let host_pid = st["pid"].as_u64().unwrap();
    assert!(host_pid > 1);
    let cmdline = std::fs::read_to_string(format!("/proc/{host_pid}/cmdline")).unwrap();
    assert!(cmdline.starts_with("/init"), "{cmdline:?}");
    // VP root is an unprivileged id on the host.
    let status = std::fs::read_to_string(format!("/proc/{host_pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let host_uid: u32 = uid_line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(host_uid >= 100_000, "VP root is host uid {host_uid}");
    // Inside, it is root, and template files look owned by root.
    assert_eq!(c.sh_ok("work", "id -u").trim(), "0");
    let owner = c.sh_ok(
        "work",
        "stat -c '%u:%g' /system/bin/busybox /system/etc/passwd",
    );
    assert_eq!(lines(&owner), vec!["0:0", "0:0"]);
    // Other namespaces differ from the host's.
    for ns in ["pid", "mnt", "uts", "ipc", "net", "cgroup", "user"] {
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let vp = std::fs::read_link(format!("/proc/{host_pid}/ns/{ns}")).unwrap();
        assert_ne!(host, vp, "{ns} namespace shared with the host");
    }
}

#[test]
fn writes_land_in_the_vps_upper_layer_only() {
    let c = Cells::new();
    c.create_start("a");
    c.create_start("b");
    c.sh_ok(
        "a",
        "echo from-a > /system/etc/only-in-a; echo x > /root-file",
    );

    let upper = c.vp_folder("a", "upper");
    assert!(upper.is_dir(), "{} missing", upper.display());
    assert_eq!(
        std::fs::read_to_string(upper.join("system/etc/only-in-a")).unwrap(),
        "from-a\n"
    );
    assert!(upper.join("root-file").exists());
    // Not in the template, not in the other VP.
    let build = c.status("a")["template_build"]
        .as_str()
        .unwrap()
        .to_string();
    let tpl = c
        .state
        .join(format!("templates/minimal/builds/{build}/rootfs"));
    assert!(!tpl.join("system/etc/only-in-a").exists());
    assert_ne!(c.sh("b", "cat /system/etc/only-in-a").code, 0);
    let upper_b = c.vp_folder("b", "upper");
    assert!(upper_b.is_dir(), "{} missing", upper_b.display());
    assert!(!upper_b.join("system/etc/only-in-a").exists());
    // A file changed in A is copied up; B still sees the template's.
    c.sh_ok("a", "echo changed > /system/etc/hosts");
    assert!(c.sh_ok("b", "cat /system/etc/hosts").contains("localhost"));
    assert!(std::fs::read_to_string(tpl.join("system/etc/hosts"))
        .unwrap()
        .contains("localhost"));
}

#[test]
fn template_files_are_shared_not_copied() {
    let c = Cells::new();
    c.create_start("a");
    c.create_start("b");
    let build = c.status("a")["template_build"]
        .as_str()
        .unwrap()
        .to_string();
    let tpl = c
        .state
        .join(format!("templates/minimal/builds/{build}/rootfs"));
    let host_ino = std::fs::metadata(tpl.join("system/bin/busybox"))
        .unwrap()
        .ino();
    for vp in ["a", "b"] {
        let ino: u64 = c
            .sh_ok(vp, "stat -c %i /system/bin/busybox")
            .trim()
            .parse()
            .unwrap();
        assert_eq!(ino, host_ino, "{vp} does not see the template's busybox");
        let upper = c.vp_folder(vp, "upper");
        assert!(upper.join("system").is_dir() || upper.is_dir());
        assert!(!upper.join("system/bin/busybox").exists());
    }
    // The template is read-only inside the VP's lower layer: removing a
    // template file only whites it out in the VP's upper layer.
    c.sh_ok("a", "rm /system/etc/group");
    assert!(tpl.join("system/etc/group").exists());
    c.sh_ok("b", "test -f /system/etc/group");
}

#[test]
fn dev_holds_only_the_listed_nodes_and_mknod_fails() {
    let c = Cells::new();
    c.create_start("w");
    let listing = c.sh_ok("w", "ls -A /dev");
    let mut names = lines(&listing);
    names.sort();
    // .sys: the VP's sysfs, where /sys/class's links point (a kernel
    // without LED or backlight classes: the lights device's views sit
    // beside links into it); alarm, socket (logd's), ttyGPS0, snd (audio),
    // ttyMODEM0 (telephony): devices.
    let mut expected: Vec<String> = [
        ".sys",
        "__properties__",
        "adb",
        "alarm",
        "console",
        "fb0",
        "fd",
        "full",
        "graphics",
        "input",
        "null",
        "ptmx",
        "pts",
        "random",
        "snd",
        "socket",
        "stderr",
        "stdin",
        "stdout",
        "tty",
        "ttyGPS0",
        "ttyMODEM0",
        "urandom",
        "zero",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    expected.sort();
    assert_eq!(names, expected);
    // Device nodes (character devices) are exactly the listed ones.
    let chars = c.sh_ok(
        "w",
        "for f in /dev/*; do [ -c $f ] && [ ! -L $f ] && echo ${f#/dev/}; done; true",
    );
    let mut chars = lines(&chars);
    chars.sort();
    // ttyGPS0 and ttyMODEM0 are ptys of the VP's own devpts, as the
    // console is; /dev/snd holds a FIFO and a FUSE file, no device node.
    assert_eq!(
        chars,
        [
            "console",
            "full",
            "null",
            "random",
            "tty",
            "ttyGPS0",
            "ttyMODEM0",
            "urandom",
            "zero"
        ]
    );
    assert_eq!(
        c.sh_ok(
            "w",
            "for f in /dev/snd/*; do [ -c $f ] || [ -b $f ] && echo $f; done; true"
        ),
        ""
    );
    // ptmx is this VP's own devpts instance.
    assert_eq!(c.sh_ok("w", "readlink /dev/ptmx").trim(), "pts/ptmx");
    let mounts = c.sh_ok("w", "cat /proc/mounts");
    assert!(
        mounts
            .lines()
            .any(|l| l.starts_with("devpts /dev/pts devpts")),
        "{mounts}"
    );
    // The devices work.
    c.sh_ok(
        "w",
        "echo x > /dev/null; head -c 4 /dev/urandom | wc -c | grep -q 4",
    );
    // No device nodes can be made: not a block device, not a char device.
    let o = c.sh("w", "mknod /tmp/sda b 8 0");
    assert_ne!(o.code, 0, "{o:?}");
    assert!(o.stderr.contains("not permitted"), "{o:?}");
    assert_ne!(c.sh("w", "mknod /tmp/mem c 1 1").code, 0);
}

#[test]
fn proc_and_sys_are_confined() {
    let c = Cells::new();
    c.create_start("w");
    // /sys is read-only.
    let o = c.sh("w", "touch /sys/kernel/x");
    assert_ne!(o.code, 0);
    let mounts = c.sh_ok("w", "cat /proc/mounts");
    let sys = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some("/sys"))
        .unwrap();
    assert!(sys.split(' ').nth(3).unwrap().starts_with("ro"), "{sys}");
    // /proc/sys is read-only; masked files read as empty.
    assert_ne!(c.sh("w", "echo 1 > /proc/sys/kernel/printk").code, 0);
    let mounts_line = |p: &str| mounts.lines().any(|l| l.split(' ').nth(1) == Some(p));
    assert!(mounts_line("/proc/sys"));
    if std::path::Path::new("/proc/keys").exists() {
        assert_eq!(c.sh_ok("w", "cat /proc/keys | wc -c").trim(), "0");
    }
    // The bounding set lacks module loading, raw I/O, mknod, boot, time, MAC admin.
    let capbnd = c.sh_ok("w", "grep CapBnd /proc/self/status");
    let bits = u64::from_str_radix(capbnd.split_whitespace().nth(1).unwrap(), 16).unwrap();
    for (cap, name) in [
        (16, "SYS_MODULE"),
        (17, "SYS_RAWIO"),
        (27, "MKNOD"),
        (22, "SYS_BOOT"),
        (25, "SYS_TIME"),
        (33, "MAC_ADMIN"),
    ] {
        assert_eq!(bits & (1 << cap), 0, "CAP_{name} in the bounding set");
    }
    assert_ne!(
        bits & (1 << 21),
        0,
        "CAP_SYS_ADMIN (in the VP's own namespaces) kept"
    );
    // VP root may mount inside its own namespaces, as Android's init needs.
    c.sh_ok(
        "w",
        "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m && touch /tmp/m/ok && umount /tmp/m",
    );
    // ... but cannot change the host's clock (busybox date exits 0 anyway).
    let o = c.sh("w", "date -s '2001-01-01 00:00'");
    assert!(o.stderr.contains("not permitted"), "{o:?}");
}

#[test]
fn data_survives_stop_start_and_daemon_restart_and_crash() {
    let mut c = Cells::new();
    c.create_start("w");
    c.sh_ok("w", "echo one > /data/x; echo layer > /system/etc/mine");
    c.ok(&["stop", "w"]);
    c.ok(&["start", "w"]);
    assert_eq!(c.sh_ok("w", "cat /data/x /system/etc/mine"), "one\nlayer\n");

    // Clean daemon restart: the VP keeps running and is found again.
    let pid_before = c.status("w")["pid"].as_u64().unwrap();
    c.end_daemon(libc::SIGTERM);
    c.start_daemon();
    let st = c.status("w");
    assert_eq!(st["state"], "running");
    assert_eq!(st["pid"].as_u64().unwrap(), pid_before);
    c.sh_ok("w", "echo two >> /data/x");

    // Daemon crash (SIGKILL): same.
    c.end_daemon(libc::SIGKILL);
    c.start_daemon();
    assert_eq!(c.status("w")["state"], "running");
    assert_eq!(c.sh_ok("w", "cat /data/x"), "one\ntwo\n");

    // A VP that ends while the daemon is down is seen as stopped; its data stays.
    c.end_daemon(libc::SIGKILL);
    // SAFETY: killing the VP's init (this test's own VP) by pid.
    unsafe { libc::kill(pid_before as i32, libc::SIGKILL) };
    assert!(Cells::wait_until(Duration::from_secs(5), || {
        std::fs::metadata(format!("/proc/{pid_before}")).is_err()
    }));
    c.start_daemon();
    assert_eq!(c.status("w")["state"], "stopped");
    c.ok(&["start", "w"]);
    assert_eq!(
        c.sh_ok("w", "cat /data/x /system/etc/mine"),
        "one\ntwo\nlayer\n"
    );
}

#[test]
fn stop_and_destroy_leave_nothing_behind() {
    let c = Cells::new();
    c.create_start("w");
    let st = c.status("w");
    let init = st["pid"].as_u64().unwrap() as i32;
    let run: Value =
        serde_json::from_str(&std::fs::read_to_string(c.run.join("vps/w/run.json")).unwrap())
            .unwrap();
    let monitor = run["monitor_pid"].as_i64().unwrap() as i32;
    // A background process in the VP, to be ended too.
    c.sh_ok("w", "sleep 1000 >/dev/null 2>&1 &");
    let cgroups = c.vp_cgroup_dirs("w");
    assert!(cgroups.iter().all(|d| d.exists()), "{cgroups:?}");
    let procs = std::fs::read_to_string(cgroups[0].join("cgroup.procs")).unwrap();
    assert!(procs.lines().count() >= 3, "{procs}");

    c.ok(&["stop", "w"]);
    assert_eq!(c.status("w")["state"], "stopped");
    for pid in [init, monitor] {
        assert!(
            std::fs::metadata(format!("/proc/{pid}")).is_err(),
            "pid {pid} still there"
        );
    }
    for d in &cgroups {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    assert!(c.host_mounts().is_empty(), "{:?}", c.host_mounts());
    assert!(!c.run.join("vps/w/run.json").exists());

    c.ok(&["destroy", "w"]);
    assert!(!c.state.join("vps/w").exists());
    assert!(!c.run.join("vps/w").exists());
    assert!(c.fails(&["status", "w"]).contains("no VP named 'w'"));
}

#[test]
fn exec_passes_stdout_stderr_and_exit_status() {
    let c = Cells::new();
    c.create_start("w");
    let o = c.sh("w", "echo out; echo err >&2; exit 7");
    assert_eq!(
        (o.code, o.stdout.as_str(), o.stderr.as_str()),
        (7, "out\n", "err\n")
    );
    // stdin passes through too.
    let mut child = c
        .ctl_cmd()
        .args(["exec", "w", "--", "sh", "-c", "tr a-z A-Z"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\n");
    // Environment, working directory, a command that does not exist.
    assert_eq!(
        c.ok(&[
            "exec",
            "w",
            "-e",
            "A=b",
            "-w",
            "/system",
            "--",
            "sh",
            "-c",
            "echo $A $PWD"
        ]),
        "b /system\n"
    );
    assert_eq!(c.ctl(&["exec", "w", "--", "no-such-program"]).code, 127);
    // A signal ends the command: 128 + signal.
    assert_eq!(c.sh("w", "kill -TERM $$").code, 143);
}

#[test]
fn console_reaches_the_vps_shell() {
    let c = Cells::new();
    c.create_start("w");
    let mut child = c
        .ctl_cmd()
        .args(["console", "w"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo console-of-$(hostname)\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "cellctl console: {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("console-of-w"), "{text}");
    // The console log keeps what init printed.
    let log = std::fs::read_to_string(c.state.join("vps/w/console.log")).unwrap();
    assert!(log.contains("cells-init starting"), "{log}");
}

#[test]
fn vp_death_is_noticed_and_foreground_moves_on() {
    let c = Cells::new();
    c.create_start("a");
    c.create_start("b");
    assert_eq!(c.status("a")["foreground"], true);
    let pid = c.status("a")["pid"].as_u64().unwrap() as i32;
    // SAFETY: killing this test's own VP init by pid.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(
        Cells::wait_until(Duration::from_secs(5), || c.status("a")["state"]
            == "stopped"),
        "death of a's init not noticed"
    );
    assert_eq!(c.status("b")["foreground"], true);
    assert!(c.vp_cgroup_dirs("a").iter().all(|d| !d.exists()));
}

#[test]
fn limits_reach_the_cgroup() {
    let c = Cells::new();
    c.ok(&[
        "create",
        "p",
        "--template",
        "minimal",
        "--memory",
        "512M",
        "--cpus",
        "0.5",
        "--pids",
        "300",
    ]);
    c.ok(&["start", "p"]);
    let st = c.status("p");
    assert_eq!(st["memory_limit"].as_u64(), Some(512 << 20));
    let h = cellsd::cgroup::Hierarchy::detect().unwrap();
    let rel = format!("{}/p", c.cgroup_parent);
    let read = |controller: &str, v1: &str, v2: &str| -> String {
        let dir = match &h {
            cellsd::cgroup::Hierarchy::V2 { root } => root.join(&rel).join(v2),
            cellsd::cgroup::Hierarchy::V1 { controllers, .. } => {
                let mp = &controllers.iter().find(|(c, _)| c == controller).unwrap().1;
                mp.join(&rel).join(v1)
            }
        };
        std::fs::read_to_string(dir).unwrap().trim().to_string()
    };
    assert_eq!(
        read("memory", "memory.limit_in_bytes", "memory.max"),
        (512u64 << 20).to_string()
    );
    assert_eq!(read("pids", "pids.max", "pids.max"), "300");
    let cpu = read("cpu", "cpu.cfs_quota_us", "cpu.max");
    assert!(cpu.starts_with("50000"), "{cpu}");
    // Inside, the VP's cgroup namespace makes its cgroup the root.
    let own = c.sh_ok("p", "cat /proc/self/cgroup");
    assert!(own.lines().all(|l| l.ends_with(":/")), "{own}");
}

#[test]
fn rebuilt_template_does_not_change_a_running_vp() {
    // A private copy of the recipes, so the test can change one.
    let tmp = cells_tests::copy_recipes(
        &std::env::temp_dir().join(format!("cells-recipes-{}", std::process::id())),
    );
    let c = Cells::bare(Some(tmp.clone()));
    c.ok(&["template", "build", "minimal"]);
    c.create_start("w");
    let motd = tmp.join("minimal/files/system/etc/motd");
    std::fs::write(&motd, "second build\n").unwrap();
    let out = c.ok(&["template", "build", "minimal"]);
    assert!(out.contains("build 2"), "{out}");
    // The running VP still sees build 1 (no motd) ...
    assert_ne!(c.sh("w", "cat /system/etc/motd").code, 0);
    assert_eq!(c.status("w")["template_build"], "1");
    assert!(
        c.state.join("templates/minimal/builds/1").exists(),
        "build 1 is in use"
    );
    // ... a restart moves it to build 2, and build 1 is then removed.
    c.ok(&["stop", "w"]);
    assert!(Cells::wait_until(Duration::from_secs(5), || !c
        .state
        .join("templates/minimal/builds/1")
        .exists()));
    c.ok(&["start", "w"]);
    assert_eq!(c.sh_ok("w", "cat /system/etc/motd"), "second build\n");
    let list: Value = serde_json::from_str(&c.ok(&["template", "list", "--json"])).unwrap();
    let minimal = list
        .as_array()
        .and_then(|l| l.iter().find(|t| t["name"] == "minimal"))
        .expect("minimal is listed");
    assert_eq!(minimal["build"], "2", "{list}");
    drop(c);
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn privileged_vp_has_no_user_namespace() {
    let c = Cells::new();
    c.ok(&["create", "root", "--template", "minimal", "--privileged"]);
    c.ok(&["start", "root"]);
    let pid = c.status("root")["pid"].as_u64().unwrap();
    let host = std::fs::read_link("/proc/self/ns/user").unwrap();
    let vp = std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap();
    assert_eq!(host, vp);
    // Still its own pid namespace and still no mknod.
    assert_eq!(
        c.sh_ok("root", "cat /proc/1/cmdline | tr '\\0' ' '").trim(),
        "/init"
    );
    assert_ne!(c.sh("root", "mknod /tmp/sda b 8 0").code, 0);
    assert_eq!(c.status("root")["privileged"], true);
}

#[test]
fn list_and_status_describe_vps() {
    let c = Cells::new();
    c.create_start("work");
    c.ok(&[
        "create",
        "personal",
        "--template",
        "minimal",
        "--hostname",
        "personal",
        "--memory",
        "512M",
    ]);
    let table = c.ok(&["list"]);
    let rows = lines(&table);
    assert!(rows[0].starts_with("NAME"), "{table}");
    assert!(rows
        .iter()
        .any(|r| r.starts_with("personal") && r.contains("stopped")));
    assert!(rows
        .iter()
        .any(|r| r.starts_with("work") && r.contains("running") && r.contains("minimal")));
    let list: Value = serde_json::from_str(&c.ok(&["list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let st = c.status("work");
    for key in [
        "name",
        "state",
        "pid",
        "foreground",
        "template",
        "uptime_secs",
    ] {
        assert!(st.get(key).is_some(), "status lacks {key}: {st}");
    }
    assert_eq!(st["state"], "running");
    let st = c.status("personal");
    assert_eq!(st["state"], "stopped");
    assert_eq!(st["pid"], Value::Null);
    assert_eq!(st["hostname"], "personal");
}

#[test]
fn bad_input_gets_a_message_naming_the_problem_and_the_fix() {
    let c = Cells::new();
    c.create_start("w");
    // Unknown VP.
    for verb in [
        &["start", "ghost"][..],
        &["stop", "ghost"],
        &["status", "ghost"],
        &["destroy", "ghost"],
        &["exec", "ghost", "--", "true"],
    ] {
        let e = c.fails(verb);
        assert!(
            e.contains("no VP named 'ghost'") && e.contains("cellctl list"),
            "{verb:?}: {e}"
        );
    }
    // Invalid names.
    let e = c.fails(&["create", "Work", "--template", "minimal"]);
    assert!(e.contains("'W'") && e.contains("a-z, 0-9 and '-'"), "{e}");
    let e = c.fails(&["create", &"x".repeat(33), "--template", "minimal"]);
    assert!(e.contains("33 characters"), "{e}");
    let e = c.fails(&["create", "a_b", "--template", "minimal"]);
    assert!(e.contains("'_'"), "{e}");
    // Unknown template (create and build).
    let e = c.fails(&["create", "x", "--template", "nope"]);
    assert!(
        e.contains("unknown template 'nope'") && e.contains("minimal"),
        "{e}"
    );
    let e = c.fails(&["template", "build", "nope"]);
    assert!(e.contains("unknown template 'nope'"), "{e}");
    // Already running / not running / running on destroy.
    let e = c.fails(&["start", "w"]);
    assert!(
        e.contains("already running") && e.contains("cellctl stop w"),
        "{e}"
    );
    let e = c.fails(&["destroy", "w"]);
    assert!(e.contains("stop it first"), "{e}");
    c.ok(&["create", "idle", "--template", "minimal"]);
    let e = c.fails(&["stop", "idle"]);
    assert!(
        e.contains("not running") && e.contains("cellctl start idle"),
        "{e}"
    );
    let e = c.fails(&["exec", "idle", "--", "true"]);
    assert!(e.contains("not running"), "{e}");
    // Duplicate and bad options.
    let e = c.fails(&["create", "w", "--template", "minimal"]);
    assert!(e.contains("already exists"), "{e}");
    let e = c.fails(&["create", "m", "--template", "minimal", "--memory", "lots"]);
    assert!(e.contains("invalid memory size 'lots'"), "{e}");
    let e = c.fails(&["create", "m", "--template", "minimal", "--hostname", "a b"]);
    assert!(e.contains("invalid hostname"), "{e}");
    // Nothing half-created by the failures.
    let list: Value = serde_json::from_str(&c.ok(&["list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);

    // Daemon not running: says how to start it.
    let o = c
        .ctl_cmd()
        .env("CELLS_SOCKET", c.root.join("nowhere.sock"))
        .arg("list")
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        e.contains("cellsd is not running") && e.contains("cellsd &"),
        "{e}"
    );
    // --socket works like CELLS_SOCKET.
    let sock = c.socket.to_string_lossy().to_string();
    let o = std::process::Command::new(c.bin.join("cellctl"))
        .args(["--socket", &sock, "list"])
        .output()
        .unwrap();
    assert!(o.status.success());

    // Not root.
    use std::os::unix::process::CommandExt;
    let o = c
        .ctl_cmd()
        .arg("list")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0));
    assert!(e.contains("must run as root"), "{e}");
}

#[test]
fn every_verb_has_help() {
    let c = Cells::new();
    for verb in [
        "template",
        "create",
        "start",
        "stop",
        "destroy",
        "list",
        "status",
        "exec",
        "console",
        "switch",
        "foreground",
        "next",
        "prev",
        "screenshot",
        "input",
        "display",
    ] {
        let o = c.ctl(&[verb, "--help"]);
        assert_eq!(o.code, 0, "{verb}");
        assert!(o.stdout.contains("Usage:"), "{verb}: {}", o.stdout);
    }
}

#[test]
fn stock_dbus_client_can_introspect_and_call() {
    let c = Cells::new();
    c.create_start("w");
    let addr = format!("unix:path={}", c.socket.display());
    let gdbus = |args: &[&str]| {
        let o = std::process::Command::new("gdbus")
            .args(args)
            .output()
            .expect("gdbus (Debian package libglib2.0-bin) is installed by tests/run");
        assert!(o.status.success(), "gdbus {args:?}: {o:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let xml = gdbus(&[
        "introspect",
        "--address",
        &addr,
        "--dest",
        "org.cells",
        "--object-path",
        "/org/cells/Manager1",
    ]);
    assert!(xml.contains("interface org.cells.Manager1"));
    assert!(xml.contains("VpStateChanged"));
    let st = gdbus(&[
        "call",
        "--address",
        &addr,
        "--dest",
        "org.cells",
        "--object-path",
        "/org/cells/Manager1",
        "--method",
        "org.cells.Manager1.Status",
        "w",
    ]);
    assert!(st.contains("'state': <'running'>"), "{st}");
}

#[test]
fn state_changes_are_signalled_to_clients() {
    use std::io::BufRead;
    let c = Cells::new();
    // A stock client: gdbus monitor.
    let addr = format!("unix:path={}", c.socket.display());
    let mut mon = std::process::Command::new("gdbus")
        .args([
            "monitor",
            "--address",
            &addr,
            "--dest",
            "org.cells",
            "--object-path",
            "/org/cells/Manager1",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gdbus");
    let mut out = std::io::BufReader::new(mon.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.contains("Monitoring signals"), "{first}");
    std::thread::sleep(Duration::from_millis(200));
    c.create_start("w");
    c.ok(&["stop", "w"]);
    // The client cellctl is made of: a zbus proxy on the same socket.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use futures_util::StreamExt;
        let (_conn, p) = c.dbus().await;
        let mut changes = p.receive_vp_state_changed().await.unwrap();
        p.start("w").await.unwrap();
        let mut seen = Vec::new();
        while let Ok(Some(sig)) = tokio::time::timeout(Duration::from_secs(5), changes.next()).await
        {
            let a = sig.args().unwrap();
            seen.push(format!("{}:{}", a.name, a.state));
            if a.state == "running" {
                break;
            }
        }
        assert_eq!(seen, ["w:starting", "w:running"]);
    });
    // SAFETY: ending the gdbus this test started, by pid.
    unsafe { libc::kill(mon.id() as i32, libc::SIGTERM) };
    let _ = mon.wait();
    let mut text = String::new();
    while out.read_line(&mut text).unwrap_or(0) > 0 {}
    for expect in [
        "('w', 'created')",
        "('w', 'starting')",
        "('w', 'running')",
        "('w', 'stopping')",
        "('w', 'stopped')",
    ] {
        assert!(
            text.contains(&format!("VpStateChanged {expect}")),
            "{expect} missing from:\n{text}"
        );
    }
}
