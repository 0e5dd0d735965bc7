//! adb-driven test suites against VPs as against phones: the Python suite
//! (tests/adb/suite.py: PyPI's adbutils with Google's adb 36, and PyPI's
//! adb-shell) against two VPs at once, and Debian's stock adb 29 where it
//! applies (exec-out screencap, input, install, reverse, reboot).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cells_tests::adb::Adb;
use cells_tests::Cells;

fn serial(c: &Cells, vp: &str) -> String {
    let out = c.ok(&["adb", vp]);
    out.lines().last().expect("a serial").trim().to_string()
}

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn python_suite_with_adbutils_and_adb_shell_against_two_vps() {
    let c = Cells::new();
    c.create_start("pa");
    c.create_start("pb");
    let work = c.root.join("suite");
    let out = Command::new("python3")
        .arg(repo().join("tests/adb/suite.py"))
        .args(["pa", "pb"])
        .env("CELLCTL", c.bin.join("cellctl"))
        .env("CELLS_SOCKET", &c.socket)
        .env("PYTHONPATH", repo().join("target/pylib"))
        .env("SUITE_WORK", &work)
        .output()
        .expect("python3 (scripts/install-deps installs it and the suite's PyPI packages)");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "the adb suite failed:\n{text}");
    assert!(text.contains(" passed, 0 failed"), "{text}");
    // Every check ran (a suite that stops early must not pass).
    assert!(
        text.lines().filter(|l| l.starts_with("ok ")).count() >= 18,
        "{text}"
    );
}

/// A cells app package made with the host's own tar.
fn app_package(dir: &Path, pkg: &str) -> std::path::PathBuf {
    let src = dir.join("app");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::write(
        src.join("cells-manifest.prop"),
        format!("package={pkg}\nversionCode=1\nactivity=.Main bin/main launcher\n"),
    )
    .unwrap();
    let main = src.join("bin/main");
    std::fs::write(&main, "#!/system/bin/sh\nexec sleep 100000\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&main, std::fs::Permissions::from_mode(0o755)).unwrap();
    let apk = dir.join("app.apk");
    let st = Command::new("tar")
        .arg("-cf")
        .arg(&apk)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    apk
}

#[test]
fn debian_adb_screencap_input_install_reverse_and_reboot() {
    let c = Cells::new();
    c.create_start("da");
    c.create_start("db");
    c.ok(&["switch", "db"]);
    let (sa, sb) = (serial(&c, "da"), serial(&c, "db"));
    let adb = Adb::new(&c);
    adb.authorize(&c, "da");
    adb.authorize(&c, "db");
    adb.connect(&sa);
    adb.connect(&sb);

    // exec-out screencap -p is the VP's own framebuffer (da is background).
    let png = adb
        .cmd()
        .args(["-s", &sa, "exec-out", "screencap", "-p"])
        .output()
        .unwrap()
        .stdout;
    let (w, h, px) = mux_fb::screenshot::decode_png(&png).expect("a PNG from screencap -p");
    assert_eq!((w, h, px), c.shot(Some("da")));
    assert_ne!(c.shot(Some("da")), c.shot(Some("db")));

    // input tap reaches da's app only; db (the foreground) sees nothing.
    let log_b = adb.ok(&["-s", &sb, "shell", "cat /data/input.log 2>/dev/null; true"]);
    adb.ok(&["-s", &sa, "shell", "input", "tap", "31", "41"]);
    assert!(Cells::wait_until(Duration::from_secs(5), || adb
        .ok(&["-s", &sa, "shell", "cat /data/input.log"])
        .contains("ABS_MT_POSITION_X 31")));
    assert_eq!(
        adb.ok(&["-s", &sb, "shell", "cat /data/input.log 2>/dev/null; true"]),
        log_b
    );

    // adb install (push + pm install), am start, dumpsys focus, uninstall.
    let apk = app_package(&c.root, "org.example.deb");
    let out = adb.ok(&["-s", &sa, "install", &apk.to_string_lossy()]);
    assert!(out.contains("Success"), "{out}");
    let pk = adb.ok(&["-s", &sa, "shell", "pm", "list", "packages", "-3"]);
    assert!(pk.contains("package:org.example.deb"), "{pk}");
    adb.ok(&[
        "-s",
        &sa,
        "shell",
        "am",
        "start",
        "-n",
        "org.example.deb/.Main",
    ]);
    let win = adb.ok(&["-s", &sa, "shell", "dumpsys", "window", "windows"]);
    assert!(
        win.contains("mCurrentFocus=Window{")
            && win.contains("org.example.deb/org.example.deb.Main}"),
        "{win}"
    );
    let out = adb.ok(&["-s", &sa, "uninstall", "org.example.deb"]);
    assert!(out.contains("Success"), "{out}");

    // reverse: the VP reaches a listener on the host through adb.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::Write;
        if let Ok((mut s, _)) = l.accept() {
            let _ = s.write_all(b"hello-from-host\n");
        }
    });
    adb.ok(&["-s", &sa, "reverse", "tcp:7001", &format!("tcp:{port}")]);
    let list = adb.ok(&["-s", &sa, "reverse", "--list"]);
    assert!(list.contains(&format!("tcp:7001 tcp:{port}")), "{list}");
    let got = adb.ok(&[
        "-s",
        &sa,
        "shell",
        "sleep 1 | nc 127.0.0.1 7001 2>&1; echo rc=$?",
    ]);
    assert!(
        got.contains("hello-from-host"),
        "{got}\n{}",
        std::fs::read_to_string(c.state.join("vps/da/console.log")).unwrap_or_default()
    );
    adb.ok(&["-s", &sa, "reverse", "--remove-all"]);

    // adb reboot: the VP restarts (a new init), adb reconnects.
    let pid = c.status("da")["pid"].clone();
    adb.run(&["-s", &sa, "reboot"]);
    assert!(
        Cells::wait_until(Duration::from_secs(30), || {
            let st = c.status("da");
            st["state"] == "running" && st["pid"] != pid
        }),
        "da did not come back: {}",
        c.status("da")
    );
    adb.connect(&sa);
    assert_eq!(
        adb.ok(&["-s", &sa, "shell", "getprop", "ro.product.model"])
            .trim(),
        "da"
    );
    assert_eq!(c.status("db")["state"], "running");
    adb.run(&["kill-server"]);
}
