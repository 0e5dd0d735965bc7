//! The telephony device: each VP's virtual modem (`/dev/ttyMODEM0`) driven
//! with stock tools (busybox's sh, printf and cat, as a RIL writes and reads
//! its tty), a number per VP, calls with caller ID and messages between
//! VPs, in the background too; bad AT input; the API and its signal.

use std::time::Duration;

use cells_tests::Cells;

/// Every VP's modem output goes to /data/modem.log (a reader started once,
/// as a RIL keeps its tty open).
fn log_modem(c: &Cells, vp: &str) {
    c.sh_ok(
        vp,
        // Its own session (as a RIL daemon is), so that the exec's end
        // does not hang up the tty under it.
        "setsid sh -c \"exec 3<>/dev/ttyMODEM0; printf 'ATE0\\rAT+CLIP=1\\rAT+CMGF=1\\r' >&3; \
         exec cat <&3 > /data/modem.log 2>/dev/null\" < /dev/null > /dev/null 2>&1 &",
    );
    assert!(Cells::wait_until(Duration::from_secs(5), || modem_log(
        c, vp
    )
    .matches("OK")
    .count()
        >= 3));
}

fn modem_log(c: &Cells, vp: &str) -> String {
    c.sh(vp, "cat /data/modem.log").stdout
}

/// Write AT text to the VP's modem (the answer lands in its log).
fn at(c: &Cells, vp: &str, text: &str) {
    c.sh_ok(vp, &format!("printf '{text}' > /dev/ttyMODEM0"));
}

fn wait_log(c: &Cells, vp: &str, what: &str) -> String {
    let mut last = String::new();
    let ok = Cells::wait_until(Duration::from_secs(10), || {
        last = modem_log(c, vp);
        last.contains(what)
    });
    assert!(ok, "{what:?} never reached {vp}'s modem:\n{last}");
    last
}

fn phone(c: &Cells) -> serde_json::Value {
    serde_json::from_str(&c.ok(&["phone", "--json"])).unwrap()
}

#[test]
fn calls_and_messages_between_vps_with_caller_id() {
    let c = Cells::new();
    for vp in ["a", "b", "x"] {
        c.create_start(vp);
    }
    // Numbers: given at the first start, changed by the API, unique.
    let p = phone(&c);
    assert_eq!(p["vps"].as_array().unwrap().len(), 3, "{p}");
    c.ok(&["phone", "number", "a", "+15550001"]);
    c.ok(&["phone", "number", "b", "+15550002"]);
    let e = c.fails(&["phone", "number", "x", "+15550002"]);
    assert!(e.contains("is b's number"), "{e}");
    let e = c.fails(&["phone", "number", "x", "call-me"]);
    assert!(e.contains("not a phone number"), "{e}");
    for vp in ["a", "b", "x"] {
        log_modem(&c, vp);
    }
    at(&c, "a", "AT+CNUM\\r");
    wait_log(&c, "a", "+CNUM: \"\",\"+15550001\",145");

    // a calls b by number; b (in the background: a is in front) rings
    // with a's number; x hears nothing.
    c.ok(&["switch", "a"]);
    at(&c, "a", "ATD+15550002;\\r");
    let b = wait_log(&c, "b", "+CLIP: \"+15550001\",145");
    assert!(b.contains("RING"), "{b}");
    at(&c, "a", "AT+CLCC\\r");
    wait_log(&c, "a", "+CLCC: 1,0,3,0,0,\"+15550002\",145");
    // b answers: both active.
    at(&c, "b", "ATA\\r");
    assert!(Cells::wait_until(Duration::from_secs(5), || phone(&c)
        ["calls"][0]["state"]
        == "active"));
    at(&c, "b", "AT+CLCC\\r");
    wait_log(&c, "b", "+CLCC: 1,1,0,0,0,\"+15550001\",145");
    // a hangs up: b hears NO CARRIER, nothing is left.
    at(&c, "a", "ATH\\r");
    wait_log(&c, "b", "NO CARRIER");
    assert_eq!(phone(&c)["calls"].as_array().unwrap().len(), 0);

    // A message from a reaches only b, with a's number.
    at(&c, "a", "AT+CMGS=\"+15550002\"\\rhello from a\\032");
    wait_log(&c, "a", "+CMGS:");
    wait_log(&c, "b", "+CMT: \"+15550001\",,\"\"\r\nhello from a");
    // Control for "nobody else": x got none of it.
    let x = modem_log(&c, "x");
    assert!(!x.contains("RING") && !x.contains("+CMT"), "{x}");

    // Bad AT input: ERROR / +CME ERROR, and nothing changes.
    at(&c, "x", "ATDnot-a-number;\\rAT+BOGUS=1\\rHELLO\\r");
    let x = wait_log(&c, "x", "+CME ERROR: 4");
    assert!(
        x.contains("+CME ERROR: 21") && x.contains("\r\nERROR\r\n"),
        "{x}"
    );
    assert_eq!(phone(&c)["calls"].as_array().unwrap().len(), 0);
    // A number nobody has: NO CARRIER, and the API says why.
    at(&c, "x", "ATD5551234;\\r");
    wait_log(&c, "x", "NO CARRIER");
    let e = c.fails(&["call", "x", "5551234"]);
    assert!(e.contains("no running VP has that number"), "{e}");
    assert!(
        phone(&c)["log"].to_string().contains("no running VP"),
        "the refusal is shown"
    );
}

#[test]
fn the_api_dials_answers_and_signals_incoming_calls() {
    let c = Cells::new();
    for vp in ["a", "b"] {
        c.create_start(vp);
        log_modem(&c, vp);
    }
    c.ok(&["phone", "number", "b", "+15550002"]);
    let a_number = phone(&c)["vps"][0]["number"].as_str().unwrap().to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use futures_util::StreamExt;
        let stream = tokio::net::UnixStream::connect(&c.socket).await.unwrap();
        let conn = zbus::connection::Builder::unix_stream(stream)
            .p2p()
            .build()
            .await
            .unwrap();
        let p = cellsd::api::Manager1Proxy::builder(&conn)
            .destination("org.cells")
            .unwrap()
            .build()
            .await
            .unwrap();
        let mut rings = p.receive_incoming_call().await.unwrap();
        p.phone_action("a", "dial", "+15550002", "").await.unwrap();
        let sig = tokio::time::timeout(Duration::from_secs(5), rings.next())
            .await
            .expect("an IncomingCall signal")
            .unwrap();
        let args = sig.args().unwrap();
        assert_eq!(
            (args.vp.as_str(), args.from.as_str()),
            ("b", a_number.as_str())
        );
    });
    wait_log(&c, "b", &format!("+CLIP: \"{a_number}\""));
    c.ok(&["answer", "b"]);
    assert_eq!(phone(&c)["calls"][0]["state"], "active");
    // A call monopolizes audio: its VPs alone are heard and record (the
    // audio tests prove the plan by sound).
    let audio = |c: &Cells| -> serde_json::Value {
        serde_json::from_str(&c.ok(&["audio", "--json"])).unwrap()
    };
    assert!(Cells::wait_until(Duration::from_secs(3), || audio(&c)
        ["calls"]
        == serde_json::json!(["a", "b"])));
    let a = audio(&c);
    for r in a["vps"].as_array().unwrap() {
        assert_eq!(r["mic"], true, "{a}");
    }
    let e = c.fails(&["call", "b", "+15550001"]);
    assert!(e.contains("already in a call"), "{e}");
    c.ok(&["hangup", "b"]);
    wait_log(&c, "a", "NO CARRIER");
    assert_eq!(audio(&c)["calls"], serde_json::json!([]));
    c.ok(&["sms", "b", &a_number, "via the API"]);
    wait_log(&c, "a", "via the API");
    // A stopped VP's calls end; a VP with telephony=none has no modem.
    c.ok(&[
        "create",
        "n",
        "--template",
        "minimal",
        "--device",
        "telephony=none",
    ]);
    c.ok(&["start", "n"]);
    let o = c.sh("n", "ls /dev/ttyMODEM0 2>&1");
    assert_ne!(o.code, 0, "{o:?}");
    let e = c.fails(&["call", "n", "+15550002"]);
    assert!(e.contains("no modem"), "{e}");
}
