//! Per-VP networking and adb, driven with Debian's stock `adb` client.
//!
//! Each test has its own cellsd (own bridge, subnet and adb ports, see the
//! harness) and its own adb server on a port of its own, which it ends with
//! `adb kill-server`.

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use cells_tests::adb::Adb;
use cells_tests::{Cells, Out};

fn serial(c: &Cells, vp: &str) -> String {
    let out = c.ok(&["adb", vp]);
    out.lines().last().expect("a serial").trim().to_string()
}

#[test]
fn stock_adb_reaches_each_vp_shell_push_pull_and_exit_status() {
    let c = Cells::new();
    c.ok(&[
        "create",
        "work",
        "--template",
        "minimal",
        "--hostname",
        "work-phone",
    ]);
    c.ok(&[
        "create",
        "home",
        "--template",
        "minimal",
        "--hostname",
        "home-phone",
    ]);
    c.ok(&["start", "work"]);
    c.ok(&["start", "home"]);
    let (sw, sh) = (serial(&c, "work"), serial(&c, "home"));
    assert_ne!(sw, sh);
    assert!(sw.starts_with("127.0.0.1:"), "{sw}");
    // status --json has the address and the serial.
    let st = c.status("work");
    let ip = st["ip"].as_str().expect("ip in status").to_string();
    assert!(
        ip.starts_with(&c.subnet[..c.subnet.len() - 4]),
        "{ip} in {}",
        c.subnet
    );
    assert_eq!(st["adb"], sw.as_str());
    assert_eq!(st["network"], "isolated");

    let adb = Adb::new(&c);
    adb.authorize(&c, "work");
    adb.authorize(&c, "home");
    adb.connect(&sw);
    adb.connect(&sh);
    let devices = adb.ok(&["devices", "-l"]);
    assert!(devices.contains("model:work"), "{devices}");
    assert!(devices.contains("model:home"), "{devices}");

    assert_eq!(
        adb.ok(&["-s", &sw, "shell", "hostname"]).trim(),
        "work-phone"
    );
    assert_eq!(
        adb.ok(&["-s", &sh, "shell", "hostname"]).trim(),
        "home-phone"
    );
    assert_eq!(
        adb.ok(&["-s", &sw, "shell", "getprop", "ro.product.model"])
            .trim(),
        "work"
    );
    assert_eq!(
        adb.ok(&["-s", &sh, "shell", "getprop", "ro.cells.vp"])
            .trim(),
        "home"
    );
    assert_eq!(
        adb.ok(&["-s", &sw, "shell", "getprop", "ro.cells.ip"])
            .trim(),
        ip
    );
    // The exit status travels (shell protocol v2), and stderr apart from stdout.
    assert_eq!(adb.run(&["-s", &sw, "shell", "exit 3"]).code, 3);
    let o = adb.run(&["-s", &sw, "shell", "echo out; echo err >&2"]);
    assert_eq!((o.stdout.as_str(), o.stderr.as_str()), ("out\n", "err\n"));

    // push into work's /data: there, and only there.
    let local = c.root.join("payload.bin");
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(&local, &payload).unwrap();
    adb.ok(&[
        "-s",
        &sw,
        "push",
        local.to_str().unwrap(),
        "/data/local/tmp/payload.bin",
    ]);
    assert_eq!(
        c.sh_ok("work", "wc -c < /data/local/tmp/payload.bin")
            .trim(),
        payload.len().to_string()
    );
    assert_ne!(c.sh("home", "test -e /data/local/tmp/payload.bin").code, 0);
    let back = c.root.join("pulled.bin");
    adb.ok(&[
        "-s",
        &sw,
        "pull",
        "/data/local/tmp/payload.bin",
        back.to_str().unwrap(),
    ]);
    assert!(
        std::fs::read(&back).unwrap() == payload,
        "pulled file differs"
    );
    // An interactive `adb shell` (util-linux `script` gives adb a terminal):
    // a pty in the VP, and the shell's exit status.
    let mut child = Command::new("script")
        .args(["-qec", &format!("adb -s {sw} shell"), "/dev/null"])
        .env("ANDROID_ADB_SERVER_PORT", adb.port.to_string())
        .env("HOME", &adb.home)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    stdin.write_all(b"tty; echo pty-$((6*7))\n").unwrap();
    std::thread::sleep(Duration::from_millis(700));
    stdin.write_all(b"exit 4\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/dev/pts/") && text.contains("pty-42"),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(4), "{text}");

    // adb forward: host port -> a service on the VP's loopback (tcp: service).
    c.sh_ok(
        "work",
        "nc -ll -p 8000 -e echo via-adb-forward </dev/null >/dev/null 2>&1 &",
    );
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fwd = l.local_addr().unwrap().port();
    drop(l);
    adb.ok(&["-s", &sw, "forward", &format!("tcp:{fwd}"), "tcp:8000"]);
    let got = Cells::wait_until(Duration::from_secs(5), || {
        std::net::TcpStream::connect(("127.0.0.1", fwd))
            .ok()
            .and_then(|mut s| {
                let mut t = String::new();
                s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                s.read_to_string(&mut t).ok().map(|_| t)
            })
            .is_some_and(|t| t.contains("via-adb-forward"))
    });
    assert!(got, "adb forward did not reach the VP's service");
    adb.ok(&["-s", &sw, "forward", "--remove", &format!("tcp:{fwd}")]);
    // A pull of what does not exist fails with a reason.
    let o = adb.run(&["-s", &sw, "pull", "/data/nope", back.to_str().unwrap()]);
    assert_ne!(o.code, 0);
    assert!(
        format!("{}{}", o.stdout, o.stderr).contains("/data/nope"),
        "{o:?}"
    );
}

fn ping(c: &Cells, vp: &str, ip: &str) -> bool {
    c.sh(vp, &format!("ping -c 1 -W 1 {ip} >/dev/null 2>&1"))
        .code
        == 0
}

#[test]
fn isolated_vps_reach_the_host_but_not_each_other() {
    let c = Cells::new();
    for vp in ["a", "b"] {
        c.create_start(vp);
    }
    c.ok(&[
        "create",
        "s1",
        "--template",
        "minimal",
        "--network",
        "shared-bridge",
    ]);
    c.ok(&[
        "create",
        "s2",
        "--template",
        "minimal",
        "--network",
        "shared-bridge",
    ]);
    c.ok(&["create", "n", "--template", "minimal", "--network", "none"]);
    for vp in ["s1", "s2", "n"] {
        c.ok(&["start", vp]);
    }
    let ip = |vp: &str| c.status(vp)["ip"].as_str().unwrap_or("").to_string();
    let gw = format!("{}1", &c.subnet[..c.subnet.len() - 4]);
    // Everyone bridged reaches the host (the gateway).
    for vp in ["a", "b", "s1", "s2"] {
        assert!(ping(&c, vp, &gw), "{vp} cannot reach the gateway {gw}");
    }
    // Isolated: no VP, neither isolated nor shared.
    assert!(!ping(&c, "a", &ip("b")), "isolated a reached isolated b");
    assert!(!ping(&c, "b", &ip("a")), "isolated b reached isolated a");
    assert!(!ping(&c, "a", &ip("s1")), "isolated a reached shared s1");
    assert!(!ping(&c, "s1", &ip("a")), "shared s1 reached isolated a");
    // Shared-bridge VPs reach each other.
    assert!(
        ping(&c, "s1", &ip("s2")),
        "shared s1 cannot reach shared s2"
    );
    // A VP cannot go around the bridge through the gateway either.
    c.sh_ok(
        "a",
        &format!("ip route add {}/32 via {gw} dev eth0", ip("b")),
    );
    assert!(
        !ping(&c, "a", &ip("b")),
        "a reached b routed through the gateway"
    );
    // none: loopback only, no address.
    assert_eq!(c.status("n")["ip"], serde_json::Value::Null);
    assert_eq!(
        c.sh_ok("n", "ls /sys/class/net")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["lo"]
    );
    assert!(!ping(&c, "n", &gw));
    // A TCP service in b is reachable from the host at b's address.
    c.sh_ok(
        "b",
        "nc -ll -p 7000 -e echo from-b </dev/null >/dev/null 2>&1 &",
    );
    let got = Cells::wait_until(Duration::from_secs(5), || {
        std::net::TcpStream::connect((ip("b").as_str(), 7000))
            .ok()
            .and_then(|mut s| {
                let mut t = String::new();
                s.read_to_string(&mut t).ok().map(|_| t)
            })
            .is_some_and(|t| t.contains("from-b"))
    });
    assert!(got, "host could not reach b's service");
    // ... and not from a.
    assert_ne!(
        c.sh("a", &format!("echo x | nc -w 2 {} 7000", ip("b")))
            .stdout,
        "from-b\n"
    );
}

#[test]
fn port_forwards_reach_vp_loopback_and_follow_the_vp() {
    let c = Cells::new();
    c.ok(&["create", "w", "--template", "minimal", "--network", "none"]);
    // A port the kernel says is free now (not in any daemon's adb range).
    let host_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let spec = format!("{host_port}:8000");
    // Bad input is refused with what to do.
    let err = c.fails(&["port", "add", "w", "8000"]);
    assert!(err.contains("HOST:VP"), "{err}");
    c.fails(&["port", "add", "nope", &spec]);
    c.ok(&["port", "add", "w", &spec]);
    let err = c.fails(&["port", "add", "w", &spec]);
    assert!(err.contains("already forwarded"), "{err}");
    let list: serde_json::Value =
        serde_json::from_str(&c.ok(&["port", "list", "w", "--json"])).unwrap();
    let arr = list.as_array().unwrap();
    assert_eq!(arr.len(), 2, "{list}");
    assert_eq!(arr[0]["adb"], true);
    assert_eq!(arr[0]["vp"], 5555);
    assert_eq!(arr[1]["host"], host_port);
    assert_eq!(arr[1]["active"], false);
    // Live once the VP runs; the service listens on the VP's loopback only.
    c.ok(&["start", "w"]);
    c.sh_ok(
        "w",
        "nc -ll -p 8000 -e echo hello-from-w </dev/null >/dev/null 2>&1 &",
    );
    let read = || -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", host_port)).ok()?;
        let _ = s.write_all(b"x");
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut t = String::new();
        s.read_to_string(&mut t).ok()?;
        Some(t)
    };
    assert!(
        Cells::wait_until(Duration::from_secs(5), || read()
            .is_some_and(|t| t.contains("hello-from-w"))),
        "forward did not reach the VP: {:?}",
        read()
    );
    // While the VP is stopped the port stays the VP's: a connection is
    // closed at once, with nothing relayed.
    c.ok(&["stop", "w"]);
    // (Closed with our byte unread, the kernel may reset rather than close.)
    let answer = read().unwrap_or_default();
    assert!(answer.is_empty(), "a stopped VP answered: {answer:?}");
    assert!(!forward_active(&c, "w", host_port));
    c.ok(&["start", "w"]);
    assert!(forward_active(&c, "w", host_port));
    c.sh_ok(
        "w",
        "nc -ll -p 8000 -e echo hello-again </dev/null >/dev/null 2>&1 &",
    );
    assert!(
        Cells::wait_until(Duration::from_secs(5), || read()
            .is_some_and(|t| t.contains("hello-again"))),
        "forward not back after a restart: {:?}",
        read()
    );
    c.ok(&["port", "remove", "w", &host_port.to_string()]);
    assert!(std::net::TcpStream::connect(("127.0.0.1", host_port)).is_err());
    let err = c.fails(&["port", "remove", "w", &host_port.to_string()]);
    assert!(err.contains("no forward"), "{err}");
    // The adb forward cannot be removed.
    let adb_port = c.status("w")["adb"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let err = c.fails(&["port", "remove", "w", &adb_port]);
    assert!(err.contains("adb port"), "{err}");
    // A destroyed VP's ports are free again.
    c.ok(&["stop", "w"]);
    c.ok(&["destroy", "w"]);
    assert!(std::net::TcpListener::bind(("127.0.0.1", adb_port.parse::<u16>().unwrap())).is_ok());
}

fn forward_active(c: &Cells, vp: &str, host_port: u16) -> bool {
    let list: serde_json::Value =
        serde_json::from_str(&c.ok(&["port", "list", vp, "--json"])).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .any(|p| p["host"] == host_port && p["active"] == true)
}

/// Inode of a process's network namespace.
fn netns_of(pid: u64) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Is any process of this test's VPs (its cgroup parent) still in network
/// namespace `ns`? (Namespace inode numbers are reused, and VPs of tests
/// running in parallel live in namespaces of their own: only ours count.)
fn netns_in_use(ns: &str, cgroup_parent: &str) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .any(|e| {
            std::fs::read_link(e.path().join("ns/net")).is_ok_and(|p| p.to_string_lossy() == ns)
                && std::fs::read_to_string(e.path().join("cgroup"))
                    .is_ok_and(|c| c.contains(cgroup_parent))
        })
}

#[test]
fn a_hundred_start_stop_cycles_leave_nothing_behind() {
    let c = Cells::new();
    c.create_start("w");
    let ip = c.status("w")["ip"].as_str().unwrap().to_string();
    let adb_port: u16 = c.status("w")["adb"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    c.ok(&["stop", "w"]);
    let baseline = c.network_links();
    assert_eq!(
        baseline,
        vec![c.bridge.clone()],
        "only the bridge while no VP runs"
    );
    let mut namespaces = Vec::new();
    for i in 0..100 {
        c.ok(&["start", "w"]);
        let st = c.status("w");
        assert_eq!(
            st["ip"],
            ip.as_str(),
            "cycle {i}: the address is the VP's for good"
        );
        if i % 10 == 0 {
            namespaces.push(netns_of(st["pid"].as_u64().unwrap()));
            assert_eq!(
                c.network_links().len(),
                2,
                "cycle {i}: bridge + the VP's port"
            );
        }
        c.ok(&["stop", "w", "--timeout", "2"]);
        assert_eq!(c.network_links(), baseline, "cycle {i}: a port was left");
        if i % 10 == 0 {
            // The adb port stays the VP's, but nothing is relayed.
            let mut s = std::net::TcpStream::connect(("127.0.0.1", adb_port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut b = Vec::new();
            assert_eq!(
                s.read_to_end(&mut b).unwrap(),
                0,
                "cycle {i}: a stopped VP answered"
            );
        }
    }
    for ns in namespaces {
        assert!(!ns.is_empty());
        assert!(
            !netns_in_use(&ns, &c.cgroup_parent),
            "network namespace {ns} still in use by a process of this test's VPs"
        );
    }
}

#[test]
fn adb_reconnects_by_itself_after_a_vp_restart() {
    let c = Cells::new();
    c.create_start("w");
    let s = serial(&c, "w");
    let adb = Adb::new(&c);
    adb.authorize(&c, "w");
    adb.connect(&s);
    assert_eq!(
        adb.ok(&["-s", &s, "shell", "echo", "before"]).trim(),
        "before"
    );
    c.ok(&["stop", "w"]);
    std::thread::sleep(Duration::from_secs(2));
    c.ok(&["start", "w"]);
    // No new `adb connect`: the adb server's own reconnect finds the VP.
    let back = Cells::wait_until(Duration::from_secs(20), || {
        adb.run(&["-s", &s, "shell", "echo", "after"]).stdout.trim() == "after"
    });
    assert!(back, "adb did not reconnect: {}", adb.ok(&["devices"]));
}

#[test]
fn a_restarted_cellsd_removes_leftover_ports_and_keeps_running_vps_attached() {
    let mut c = Cells::new();
    c.create_start("w");
    let serial_before = serial(&c, "w");
    c.end_daemon(libc::SIGKILL);
    // A port of a VP slot that does not run (a crash mid-start).
    let leftover = format!("{}i77", c.bridge);
    let st = Command::new("ip")
        .args([
            "link",
            "add",
            &leftover,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{leftover}p"),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    c.start_daemon();
    assert!(
        !c.network_links().contains(&leftover),
        "leftover {leftover} not removed: {:?}",
        c.network_links()
    );
    // The running VP kept its port, address and adb forward.
    assert!(c.network_links().len() == 2, "{:?}", c.network_links());
    assert_eq!(serial(&c, "w"), serial_before);
    let adb = Adb::new(&c);
    adb.authorize(&c, "w");
    adb.connect(&serial_before);
    assert_eq!(
        adb.ok(&["-s", &serial_before, "shell", "getprop", "ro.cells.vp"])
            .trim(),
        "w"
    );
    let gw = format!("{}1", &c.subnet[..c.subnet.len() - 4]);
    assert!(ping(&c, "w", &gw));
}

/// A namespace standing for the outside world, made by this test: a veth
/// from the host to it, a listener there that answers with the address it
/// sees the connection come from.
struct Outside {
    ns: String,
    host_if: String,
    listener: Option<std::process::Child>,
}

impl Drop for Outside {
    fn drop(&mut self) {
        // The listener this test started (kill() signals it by its pid).
        if let Some(mut l) = self.listener.take() {
            let _ = l.kill();
            let _ = l.wait();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn ip_cmd(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("ip");
    assert!(st.success(), "ip {args:?}");
}

#[test]
fn nat_takes_vp_traffic_to_the_outside() {
    let forward_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let c = Cells::with_args(None, &["--nat", "on"]);
    c.ok(&["template", "build", "minimal"]);
    c.create_start("w");
    let pid = std::process::id();
    let k = 100 + pid % 100;
    let mut out = Outside {
        ns: format!("cells-out-{pid}"),
        host_if: format!("cout{}", pid % 100_000),
        listener: None,
    };
    ip_cmd(&["netns", "add", &out.ns]);
    ip_cmd(&[
        "link",
        "add",
        &out.host_if,
        "type",
        "veth",
        "peer",
        "name",
        "o0",
        "netns",
        &out.ns,
    ]);
    ip_cmd(&[
        "addr",
        "add",
        &format!("10.199.{k}.1/24"),
        "dev",
        &out.host_if,
    ]);
    ip_cmd(&["link", "set", &out.host_if, "up"]);
    ip_cmd(&[
        "-n",
        &out.ns,
        "addr",
        "add",
        &format!("10.199.{k}.2/24"),
        "dev",
        "o0",
    ]);
    ip_cmd(&["-n", &out.ns, "link", "set", "o0", "up"]);
    let script = "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',9000))\ns.listen()\nwhile True:\n  c,a=s.accept()\n  c.sendall(('peer='+a[0]+'\\n').encode())\n  c.close()\n";
    let child = Command::new("ip")
        .args(["netns", "exec", &out.ns, "python3", "-c", script])
        .spawn()
        .expect("python3 listener");
    out.listener = Some(child);
    // The outside has no route back to the VPs' subnet: only NAT gets there.
    let reply = (0..50)
        .find_map(|_| {
            let o = c.sh("w", &format!("echo | nc -w 2 10.199.{k}.2 9000"));
            if o.stdout.contains("peer=") {
                Some(o.stdout)
            } else {
                std::thread::sleep(Duration::from_millis(100));
                None
            }
        })
        .expect("the VP did not reach the outside through NAT");
    assert_eq!(
        reply.trim(),
        format!("peer=10.199.{k}.1"),
        "not masqueraded"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap()
            .trim(),
        "1"
    );
    drop(out);
    drop(c);
    // Put the host's forwarding back as it was.
    let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", forward_before.trim());
}

#[test]
fn a_second_cellsd_on_the_same_bridge_is_refused_networking() {
    let first = Cells::new();
    first.create_start("w");
    let second = Cells::with_args(None, &["--bridge", &first.bridge]);
    second.ok(&["template", "build", "minimal"]);
    second.ok(&["create", "x", "--template", "minimal"]);
    let err = second.fails(&["start", "x"]);
    assert!(
        err.contains("belongs to another cellsd") && err.contains("--bridge"),
        "{err}"
    );
    // It touched nothing of the first one's: its VP still has its port.
    assert_eq!(
        first.network_links().len(),
        2,
        "{:?}",
        first.network_links()
    );
    // A VP without a network still runs there.
    second.ok(&["create", "y", "--template", "minimal", "--network", "none"]);
    second.ok(&["start", "y"]);
    drop(second);
    assert_eq!(
        first.network_links().len(),
        2,
        "{:?}",
        first.network_links()
    );
}

#[test]
fn adb_thaws_a_frozen_background_vp_and_it_freezes_again_when_quiet() {
    let c = Cells::new();
    c.create_start("fg");
    c.ok(&[
        "create",
        "bg",
        "--template",
        "minimal",
        "--background",
        "freeze-after=1s",
    ]);
    c.ok(&["start", "bg"]);
    assert_eq!(c.ok(&["foreground"]).trim(), "fg");
    let s = serial(&c, "bg");
    let adb = Adb::new(&c);
    adb.authorize(&c, "bg");
    adb.connect(&s);
    let frozen = || c.status("bg")["frozen"] == true;
    // adb keeps its transport open; quiet, the VP freezes all the same.
    assert!(
        Cells::wait_until(Duration::from_secs(15), frozen),
        "bg never froze"
    );
    // A command over that transport thaws it and gets its answer.
    let o: Out = Command::new("timeout")
        .args(["20", "adb", "-s", &s, "shell", "echo", "awake"])
        .env("ANDROID_ADB_SERVER_PORT", adb.port.to_string())
        .env("HOME", &adb.home)
        .output()
        .unwrap()
        .into();
    assert_eq!(o.stdout.trim(), "awake", "{o:?}");
    // ... and once adb is quiet again, it freezes again.
    assert!(
        Cells::wait_until(Duration::from_secs(15), frozen),
        "bg did not freeze again"
    );
}

#[test]
fn a_stopped_vps_network_policy_can_change() {
    let c = Cells::new();
    c.create_start("w");
    let err = c.fails(&["network", "w", "none"]);
    assert!(err.contains("cellctl stop w"), "{err}");
    let err = c.fails(&["network", "w", "open"]);
    assert!(err.contains("isolated, shared-bridge or none"), "{err}");
    c.ok(&["stop", "w"]);
    c.ok(&["network", "w", "none"]);
    c.ok(&["start", "w"]);
    assert_eq!(c.status("w")["network"], "none");
    assert_eq!(
        c.sh_ok("w", "ls /sys/class/net")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["lo"]
    );
    c.ok(&["stop", "w"]);
    c.ok(&["network", "w", "shared-bridge"]);
    c.ok(&["start", "w"]);
    let st = c.status("w");
    assert_eq!(st["network"], "shared-bridge");
    let ip = st["ip"].as_str().unwrap().to_string();
    assert!(c.sh_ok("w", "ip -4 addr show eth0").contains(&ip));
    assert!(c
        .network_links()
        .iter()
        .any(|l| l.starts_with(&format!("{}s", c.bridge))));
}
