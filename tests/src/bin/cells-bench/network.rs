//! `cells-bench network [N]`: networking and adb.
//!
//! - `adb shell true` round trip with Debian's adb client through the VP's
//!   adb forward (N runs, default 100), next to `cellctl exec VP -- true`
//!   (cells' own exec path) and `adb get-state` (the adb client and server
//!   alone, no VP involved): the floor any adb command pays here;
//! - `adb push` of a 100 MB file into the VP's /data, next to a plain TCP
//!   copy of the same file into the same VP (busybox `nc` in the VP writing
//!   to /data, the host connecting to the VP's address on the bridge) and
//!   the same copy through a cellsd port forward (the relay's cost);
//! - the network's share of the VP start: `cellctl start` of an `isolated`
//!   VP (veth, bridge port, address, route) against a `none` VP (loopback).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cells_tests::stats::summarize;
use cells_tests::Cells;

use crate::summary_json;

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// The shared test client, its output hidden (a benchmark prints numbers).
struct Adb(cells_tests::adb::Adb);

impl Adb {
    fn cmd(&self) -> Command {
        let mut c = self.0.cmd();
        c.stdout(Stdio::null()).stderr(Stdio::inherit());
        c
    }
    fn ok(&self, args: &[&str]) {
        let st = self.cmd().args(args).status().expect("adb");
        assert!(st.success(), "adb {args:?}");
    }
}

fn timed(cmd: &mut Command) -> f64 {
    let t = Instant::now();
    let st = cmd.status().expect("spawn");
    let d = ms(t);
    assert!(st.success(), "{cmd:?}");
    d
}

pub fn bench(n: usize) -> i32 {
    let c = Cells::new();
    c.ok(&["create", "net", "--template", "minimal"]);
    c.ok(&["start", "net"]);
    let serial = c.ok(&["adb", "net"]).trim().to_string();
    let ip = c.status("net")["ip"].as_str().unwrap_or("").to_string();
    let adb = Adb(cells_tests::adb::Adb::new(&c));
    adb.0.authorize(&c, "net");
    let connected = Cells::wait_until(Duration::from_secs(10), || {
        adb.cmd().args(["connect", &serial]).status().is_ok()
            && adb
                .cmd()
                .args(["-s", &serial, "shell", "true"])
                .status()
                .is_ok_and(|s| s.success())
    });
    assert!(connected, "adb cannot reach {serial}");

    // adb shell true, interleaved with its peers.
    for _ in 0..5 {
        adb.ok(&["-s", &serial, "shell", "true"]);
    }
    let (mut shell, mut exec, mut state) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        shell.push(timed(adb.cmd().args(["-s", &serial, "shell", "true"])));
        exec.push(timed(
            c.ctl_cmd()
                .args(["exec", "net", "--", "true"])
                .stdin(Stdio::null())
                .stdout(Stdio::null()),
        ));
        state.push(timed(adb.cmd().args(["-s", &serial, "get-state"])));
    }
    let (s, e, g) = (summarize(&shell), summarize(&exec), summarize(&state));
    println!("round trips in ms, {n} runs each");
    println!("  adb shell true (stock adb, forward, adbd)   {s}");
    println!("  cellctl exec VP -- true                     {e}");
    println!("  adb get-state (adb client + server only)    {g}");
    println!(
        "ratio of medians: adb shell / cellctl exec = {:.2}x; adb shell - get-state = {:.2} ms (the VP's share)",
        s.p50 / e.p50,
        s.p50 - g.p50
    );

    // 100 MB: adb push against a plain TCP copy into the same VP.
    let size: usize = 100 * 1024 * 1024;
    let file = c.root.join("push.bin");
    {
        let mut f = std::fs::File::create(&file).expect("file");
        let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 31 % 251) as u8).collect();
        for _ in 0..size >> 20 {
            f.write_all(&chunk).expect("write");
        }
    }
    let fwd_port = c.adb_port_base + 35;
    c.ok(&["port", "add", "net", &format!("{fwd_port}:9001")]);
    let mbps = |ms: f64| size as f64 / (1 << 20) as f64 / (ms / 1000.0);
    let (mut push, mut tcp, mut relay, mut copy) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let pid = c.status("net")["pid"].as_u64().unwrap_or(0);
    let copy_dest = format!("/proc/{pid}/root/data/copy.bin");
    let reps = 5;
    for rep in 0..reps + 1 {
        c.sh_ok(
            "net",
            "rm -f /data/push.bin /data/tcp.bin /data/relay.bin /data/copy.bin",
        );
        let p = timed(adb.cmd().args([
            "-s",
            &serial,
            "push",
            file.to_str().unwrap_or(""),
            "/data/push.bin",
        ]));
        let t = tcp_copy(&c, &file, (ip.as_str(), 9000), "9000", "/data/tcp.bin");
        let r = tcp_copy(
            &c,
            &file,
            ("127.0.0.1", fwd_port),
            "9001",
            "/data/relay.bin",
        );
        let t0 = Instant::now();
        std::fs::copy(&file, &copy_dest).expect("plain copy into the VP");
        let k = ms(t0);
        if rep > 0 {
            copy.push(mbps(k));
            push.push(mbps(p));
            tcp.push(mbps(t));
            relay.push(mbps(r));
        }
    }
    c.sh_ok(
        "net",
        "rm -f /data/push.bin /data/tcp.bin /data/relay.bin /data/copy.bin",
    );
    let (p, t, r, k) = (
        summarize(&push),
        summarize(&tcp),
        summarize(&relay),
        summarize(&copy),
    );
    println!("100 MiB into the VP's /data, MiB/s, {reps} runs each");
    println!("  adb push                                    {p}");
    println!("  plain TCP to the VP's address (nc > file)   {t}");
    println!("  plain TCP through a cellsd port forward     {r}");
    println!("  plain file copy (host, via /proc/PID/root)  {k}");
    println!(
        "ratio of medians: adb push / plain TCP = {:.2}x, adb push / plain copy = {:.2}x, forward / direct TCP = {:.2}x",
        p.p50 / t.p50,
        p.p50 / k.p50,
        r.p50 / t.p50
    );

    // The network's share of a start.
    c.ok(&["stop", "net"]);
    c.ok(&["create", "lo", "--template", "minimal", "--network", "none"]);
    let starts = (n / 2).max(20);
    let (mut iso, mut none) = (Vec::new(), Vec::new());
    for i in 0..starts + 3 {
        for (vp, v) in [("net", &mut iso), ("lo", &mut none)] {
            std::thread::sleep(Duration::from_millis(50));
            let d = timed(
                c.ctl_cmd()
                    .args(["start", vp])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null()),
            );
            if i >= 3 {
                v.push(d);
            }
            c.ok(&["stop", vp, "--timeout", "2"]);
        }
    }
    let (a, b) = (summarize(&iso), summarize(&none));
    println!("cellctl start in ms, {starts} runs each");
    println!("  --network isolated                          {a}");
    println!("  --network none                              {b}");
    println!(
        "network's share of the start (medians): {:.2} ms = {:.0}%",
        a.p50 - b.p50,
        100.0 * (a.p50 - b.p50) / a.p50
    );
    let json = serde_json::json!({
        "bench": "network",
        "adb_shell_true_ms": summary_json(&s),
        "cellctl_exec_true_ms": summary_json(&e),
        "adb_get_state_ms": summary_json(&g),
        "adb_push_mbps": summary_json(&p),
        "tcp_copy_mbps": summary_json(&t),
        "tcp_forward_mbps": summary_json(&r),
        "ratio_push_vs_tcp": p.p50 / t.p50,
        "plain_copy_mbps": summary_json(&k),
        "ratio_push_vs_copy": p.p50 / k.p50,
        "start_isolated_ms": summary_json(&a),
        "start_none_ms": summary_json(&b),
        "network_share_of_start": (a.p50 - b.p50) / a.p50,
    });
    println!("{json}");
    0
}

/// Copy `file` over TCP into the VP: busybox nc listens in the VP on
/// `vp_port` and writes to `dest`; the host connects to `to`. Until the VP
/// has the whole file (nc exits when the host closes).
fn tcp_copy(c: &Cells, file: &std::path::Path, to: (&str, u16), vp_port: &str, dest: &str) -> f64 {
    let mut listener = c
        .ctl_cmd()
        .args([
            "exec",
            "net",
            "--",
            "sh",
            "-c",
            &format!("nc -l -p {vp_port} > {dest}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("nc in the VP");
    let data = std::fs::read(file).expect("read");
    // Wait until nc listens (in the VP's /proc/net/tcp, state 0A).
    let port_hex = format!(":{:04X} ", vp_port.parse::<u16>().unwrap_or(0));
    let listening = Cells::wait_until(Duration::from_secs(5), || {
        c.sh("net", "cat /proc/net/tcp /proc/net/tcp6")
            .stdout
            .lines()
            .any(|l| l.contains(&port_hex) && l.split_whitespace().nth(3) == Some("0A"))
    });
    assert!(listening, "nc did not start listening in the VP");
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(to).expect("connect to the VP");
    s.write_all(&data).expect("TCP copy into the VP");
    drop(s);
    let st = listener.wait().expect("nc");
    let d = ms(t);
    assert!(st.success(), "nc in the VP failed");
    d
}
