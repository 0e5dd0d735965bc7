//! `cells-bench phone [N]`: call setup, dial -> RING in the called VP (its
//! modem read by a reader in the VP, as its RIL reads it; the VP in the
//! background). The dial is the D-Bus `PhoneAction(a, dial, B's number)`;
//! peer: a D-Bus round trip that does nothing with a VP (`Phone`).

use std::io::BufRead;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cells_tests::stats::summarize;
use cells_tests::Cells;

use crate::display::{proxy, rt};
use crate::summary_json;

pub fn bench(n: usize) -> i32 {
    let c = Cells::new();
    for vp in ["a", "b"] {
        c.ok(&["create", vp, "--template", "minimal"]);
        c.ok(&["start", vp]);
    }
    c.ok(&["phone", "number", "b", "+15550002"]);
    c.ok(&["switch", "a"]);
    // b's reader: its own session (the tty is its controlling terminal).
    let mut reader = c
        .ctl_cmd()
        .args([
            "exec",
            "b",
            "--",
            "setsid",
            "sh",
            "-c",
            "exec 3<>/dev/ttyMODEM0; printf 'ATE0\\r' >&3; exec cat <&3",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("reader");
    let out = reader.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if tx.send((Instant::now(), l)).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let rt = rt();
    let (setup, peer) = rt.block_on(async {
        let (_conn, p) = proxy(&c).await;
        let (mut setup, mut peer) = (Vec::new(), Vec::new());
        // Two calls to warm up, then n measured.
        for i in 0..n + 2 {
            while rx.try_recv().is_ok() {}
            let t = Instant::now();
            p.phone_action("a", "dial", "+15550002", "")
                .await
                .expect("dial");
            let rang = loop {
                match rx.recv_timeout(Duration::from_secs(5)) {
                    Ok((at, l)) if l.trim() == "RING" => break Some(at),
                    Ok(_) => continue,
                    Err(_) => break None,
                }
            };
            if let (Some(at), true) = (rang, i >= 2) {
                setup.push(at.duration_since(t).as_secs_f64() * 1000.0);
            }
            p.phone_action("a", "hangup", "", "").await.expect("hangup");
            let t = Instant::now();
            p.phone().await.expect("phone");
            peer.push(t.elapsed().as_secs_f64() * 1000.0);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (setup, peer)
    });
    let _ = reader.kill();
    let _ = reader.wait();
    let (s, p) = (summarize(&setup), summarize(&peer));
    println!("call setup in ms, {n} calls ({} measured)", s.n);
    println!("  dial -> RING read in the called VP    {s}");
    println!("  Phone D-Bus round trip (peer)         {p}");
    println!(
        "ratio of medians: call setup / D-Bus round trip = {:.2}x",
        s.p50 / p.p50
    );
    let json = serde_json::json!({
        "bench": "phone",
        "n": n,
        "dial_to_ring_ms": summary_json(&s),
        "dbus_rtt_ms": summary_json(&p),
    });
    println!("{json}");
    0
}
