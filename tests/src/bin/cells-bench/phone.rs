//! `cells-bench phone [N]`: call setup, the D-Bus `PhoneAction(a, dial,
//! B's number)` until the `IncomingCall(b, A's number)` signal (the
//! switchboard has made the call and written RING and +CLIP to B's modem
//! before it signals). Peer: a D-Bus round trip that does nothing with a
//! VP (`Phone`).
//! Then SIP, against Debian's kamailio and baresip on loopback: baresip
//! dials B's number until the `IncomingCall` signal (peer: the VP-to-VP
//! setup above), and the audio round trip of a SIP call to baresip's echo
//! module (microphone → cellsd → RTP → baresip → RTP → cellsd → output).

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
    let rt = rt();
    let (setup, peer) = rt.block_on(async {
        use futures_util::StreamExt;
        let (_conn, p) = proxy(&c).await;
        let mut rings = p.receive_incoming_call().await.expect("subscribe");
        let (mut setup, mut peer) = (Vec::new(), Vec::new());
        // Two calls to warm up, then n measured.
        for i in 0..n + 2 {
            let t = Instant::now();
            p.phone_action("a", "dial", "+15550002", "")
                .await
                .expect("dial");
            let rang = tokio::time::timeout(Duration::from_secs(5), rings.next()).await;
            if let (Ok(Some(_)), true) = (rang, i >= 2) {
                setup.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            p.phone_action("a", "hangup", "", "").await.expect("hangup");
            let t = Instant::now();
            p.phone().await.expect("phone");
            peer.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        (setup, peer)
    });
    let (s, p) = (summarize(&setup), summarize(&peer));
    println!("call setup in ms, {n} calls ({} measured)", s.n);
    println!("  dial -> IncomingCall signal           {s}");
    println!("  Phone D-Bus round trip (peer)         {p}");
    println!(
        "ratio of medians: call setup / D-Bus round trip = {:.2}x",
        s.p50 / p.p50
    );
    drop(c);
    let Some((sip_setup, trips)) = sip(n) else {
        let json = serde_json::json!({
            "bench": "phone",
            "n": n,
            "dial_to_incoming_call_ms": summary_json(&s),
            "dbus_rtt_ms": summary_json(&p),
        });
        println!("{json}");
        return 0;
    };
    let (ss, tr) = (summarize(&sip_setup), summarize(&trips));
    println!("SIP (kamailio + baresip on loopback), {n} calls in");
    println!("  baresip dial -> IncomingCall signal   {ss}");
    println!(
        "ratio of medians: SIP call setup / VP-to-VP call setup = {:.2}x",
        ss.p50 / s.p50
    );
    println!(
        "audio round trip in ms over a SIP call, {} bursts ({} measured): microphone -> RTP -> baresip echo -> RTP -> output",
        n.min(20),
        tr.n
    );
    println!("  round trip                            {tr}");
    let json = serde_json::json!({
        "bench": "phone",
        "n": n,
        "dial_to_incoming_call_ms": summary_json(&s),
        "dbus_rtt_ms": summary_json(&p),
        "sip_dial_to_incoming_call_ms": summary_json(&ss),
        "sip_audio_round_trip_ms": summary_json(&tr),
        "ratio_sip_vs_vp_setup": ss.p50 / s.p50,
    });
    println!("{json}");
    0
}

/// A SIP call's setup (baresip dials b's number until the IncomingCall
/// signal), and the audio round trip of a call from b to baresip's echo:
/// a 100 ms 1 kHz burst into the device's microphone until it is in the
/// output. None where kamailio or baresip is missing.
fn sip(n: usize) -> Option<(Vec<f64>, Vec<f64>)> {
    use cells_tests::sip::{Baresip, Kamailio, SECRET};
    if !cells_tests::sip::available() {
        println!("SIP: skipped (kamailio or baresip missing: scripts/install-deps)");
        return None;
    }
    let tmp = std::env::temp_dir().join(format!("cells-bench-sip-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let server = Kamailio::start(&tmp.join("kamailio"));
    let secrets = tmp.join("secrets");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&secrets, format!("* {SECRET}\n")).expect("secrets");
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let c = Cells::with_args(
        None,
        &[
            "--sip",
            &server.uri(),
            "--sip-secrets",
            secrets.to_str().unwrap_or_default(),
        ],
    );
    c.ok(&["template", "build", "minimal"]);
    c.ok(&["create", "b", "--template", "minimal"]);
    c.ok(&["phone", "number", "b", "+15550002"]);
    c.ok(&["start", "b"]);
    let registered = || {
        let v: serde_json::Value =
            serde_json::from_str(&c.ok(&["phone", "--json"])).unwrap_or_default();
        v["sip"]["registrations"][0]["registered"] == true
    };
    assert!(Cells::wait_until(Duration::from_secs(10), registered));
    let mut bob = Baresip::start(
        &tmp.join("baresip"),
        &server,
        "+15550199",
        "+15550002",
        None,
    );
    let rt = rt();
    let result = rt.block_on(async {
        use futures_util::StreamExt;
        let (_conn, p) = proxy(&c).await;
        let mut rings = p.receive_incoming_call().await.expect("subscribe");
        let mut setup = Vec::new();
        for i in 0..n + 2 {
            let t = Instant::now();
            bob.command("dial", "sip:+15550002@127.0.0.1");
            let rang = tokio::time::timeout(Duration::from_secs(5), rings.next()).await;
            if let (Ok(Some(_)), true) = (rang, i >= 2) {
                setup.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            p.phone_action("b", "hangup", "", "").await.expect("hangup");
            // Until baresip has seen the call end.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // b calls the echo; the burst goes around.
        p.phone_action("b", "dial", "+15550199", "")
            .await
            .expect("dial");
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            let v: serde_json::Value =
                serde_json::from_str(&p.phone().await.expect("phone")).unwrap_or_default();
            if v["calls"][0]["state"] == "active" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let trips = crate::audio::mic_round_trips(&p, n.min(20)).await;
        let a: serde_json::Value =
            serde_json::from_str(&p.audio().await.expect("audio")).unwrap_or_default();
        println!(
            "  cellsd's downlink queue at the end of the call: {} ms",
            a["call_lines_queued_ms"]
        );
        p.phone_action("b", "hangup", "", "").await.expect("hangup");
        (setup, trips)
    });
    drop(bob);
    drop(c);
    drop(server);
    let _ = std::fs::remove_dir_all(&tmp);
    Some(result)
}
