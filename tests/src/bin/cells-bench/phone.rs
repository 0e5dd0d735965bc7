//! `cells-bench phone [N]`: call setup, the D-Bus `PhoneAction(a, dial,
//! B's number)` until the `IncomingCall(b, A's number)` signal (the
//! switchboard has made the call and written RING and +CLIP to B's modem
//! before it signals). Peer: a D-Bus round trip that does nothing with a
//! VP (`Phone`).

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
    let json = serde_json::json!({
        "bench": "phone",
        "n": n,
        "dial_to_incoming_call_ms": summary_json(&s),
        "dbus_rtt_ms": summary_json(&p),
    });
    println!("{json}");
    0
}
