//! A number per VP through VoIP, against real outside software: Debian's
//! kamailio as the SIP server (digest authentication on) and baresip as
//! an outside phone, both started here on loopback. Calls in and out with
//! caller ID, a call's audio on the device's output and microphone (it
//! monopolizes audio though another VP is in front), hang-up from either
//! side, messages both ways, a dead server.

use std::time::Duration;

use cells_tests::modem::{at, log_modem, modem_log, wait_log};
use cells_tests::sip::{amplitude8k, Baresip, Kamailio};
use cells_tests::sound::{amplitude, tone_wav};
use cells_tests::Cells;

fn phone(c: &Cells) -> serde_json::Value {
    serde_json::from_str(&c.ok(&["phone", "--json"])).unwrap()
}

/// 440 Hz and 1000 Hz amplitudes of half a second of the device's output.
fn heard(c: &Cells) -> (f64, f64) {
    let f = c.root.join("out.wav");
    c.ok(&["audio", "record", f.to_str().unwrap(), "--seconds", "0.5"]);
    let pcm = cellsd::api::audio::parse_wav(&std::fs::read(&f).unwrap()).unwrap();
    let s: Vec<f64> = pcm.iter().step_by(2).map(|v| *v as f64).collect();
    (amplitude(&s, 440.0), amplitude(&s, 1000.0))
}

fn registered(c: &Cells, number: &str) -> bool {
    phone(c)["sip"]["registrations"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r["number"] == number && r["registered"] == true)
}

#[test]
fn sip_calls_and_messages_reach_the_vp_whose_number_it_is() {
    if !cells_tests::sip::available() {
        eprintln!("SKIP: kamailio or baresip is not installed (scripts/install-deps)");
        return;
    }
    let tmp = std::env::temp_dir().join(format!("cells-sip-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let mut server = Kamailio::start(&tmp.join("kamailio"));
    // The secrets file is made before the daemon (its path is an argument).
    let secrets_file = tmp.join("secrets");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&secrets_file, format!("* {}\n", cells_tests::sip::SECRET)).unwrap();
        std::fs::set_permissions(&secrets_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let c = Cells::with_args(
        None,
        &[
            "--sip",
            &server.uri(),
            "--sip-secrets",
            secrets_file.to_str().unwrap(),
        ],
    );
    c.ok(&["template", "build", "minimal"]);
    for (vp, n) in [("a", "+15550001"), ("b", "+15550002")] {
        c.ok(&["create", vp, "--template", "minimal"]);
        c.ok(&["phone", "number", vp, n]);
        c.ok(&["start", vp]);
        log_modem(&c, vp);
    }
    assert!(
        Cells::wait_until(Duration::from_secs(10), || registered(&c, "+15550001")
            && registered(&c, "+15550002")),
        "{}",
        phone(&c)
    );
    let text = c.ok(&["phone"]);
    assert!(text.contains("+15550002  up  registered"), "{text}");
    let mut bob = Baresip::start(
        &tmp.join("baresip"),
        &server,
        "+15550199",
        "+15550002",
        Some(1000.0),
    );

    // a is in front and plays 440 Hz (raw PCM into its playback device).
    c.ok(&["switch", "a"]);
    cells_tests::sound::play_forever(&c, "a", 440.0);
    assert!(
        Cells::wait_until(Duration::from_secs(5), || heard(&c).0 > 3000.0),
        "a's tone is heard while it is in front (control)"
    );

    // The outside phone calls b's number: b rings (in the background) with
    // its number as caller ID; a sees nothing.
    bob.command("dial", "sip:+15550002@127.0.0.1");
    let b = wait_log(&c, "b", "+CLIP: \"+15550199\",145");
    assert!(b.contains("RING"), "{b}");
    assert_eq!(phone(&c)["calls"][0]["via"], "sip");
    at(&c, "b", "ATA\r");
    bob.wait_event("CALL_ESTABLISHED", "+15550002", Duration::from_secs(10));
    // The call monopolizes audio: the far end's 1000 Hz is heard, a's 440
    // Hz is not although a is in front.
    let mut last = (0.0, 0.0);
    assert!(
        Cells::wait_until(Duration::from_secs(5), || {
            last = heard(&c);
            last.1 > 2000.0 && last.0 < 300.0
        }),
        "during the call the output is the call's: 440 Hz {:.0}, 1000 Hz {:.0}",
        last.0,
        last.1
    );
    // The microphone (700 Hz) reaches the far end.
    let mic = c.root.join("mic.wav");
    std::fs::write(&mic, tone_wav(700.0, 3.0, 48_000)).unwrap();
    c.ok(&["audio", "mic", mic.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(2500));
    // The far end hangs up: b hears NO CARRIER, the call is gone, a is
    // heard again.
    bob.command("hangup", "");
    wait_log(&c, "b", "NO CARRIER");
    assert!(Cells::wait_until(Duration::from_secs(5), || phone(&c)
        ["calls"]
        .as_array()
        .unwrap()
        .is_empty()));
    assert!(
        Cells::wait_until(Duration::from_secs(5), || heard(&c).0 > 3000.0),
        "a is heard again after the call"
    );
    let got = bob.received();
    assert!(got.len() > 8000, "baresip recorded the call: {}", got.len());
    let tail = &got[got.len() - 8000..];
    let head = &got[..4000.min(got.len())];
    assert!(
        amplitude8k(tail, 700.0) > 2000.0,
        "the microphone's 700 Hz reached the far end: {:.0}",
        amplitude8k(tail, 700.0)
    );
    assert!(
        amplitude8k(head, 700.0) < 300.0,
        "before it was fed, the far end heard no 700 Hz: {:.0}",
        amplitude8k(head, 700.0)
    );
    let a = modem_log(&c, "a");
    assert!(!a.contains("RING"), "a never rang: {a}");

    // a calls the outside phone: the caller ID there is a's number; the
    // far end answers by itself; a hangs up and the far end hears it.
    bob.clear_events();
    at(&c, "a", "ATD+15550199;\r");
    let e = bob.wait_event("CALL_ESTABLISHED", "+15550001", Duration::from_secs(10));
    assert_eq!(e["direction"], "incoming", "{e}");
    assert_eq!(e["peeruri"], "sip:+15550001@127.0.0.1", "a's number: {e}");
    assert!(Cells::wait_until(Duration::from_secs(5), || phone(&c)
        ["calls"][0]["state"]
        == "active"));
    at(&c, "a", "AT+CLCC\r");
    wait_log(&c, "a", "+CLCC: 1,0,0,0,0,\"+15550199\",145");
    at(&c, "a", "ATH\r");
    bob.wait_event("CALL_CLOSED", "+15550001", Duration::from_secs(10));
    assert!(phone(&c)["calls"].as_array().unwrap().is_empty());

    // A message from the outside phone reaches b only, with its number;
    // b texts back (the server relays a MESSAGE from b's number).
    bob.command("message", "hello b");
    wait_log(&c, "b", "+CMT: \"+15550199\"");
    wait_log(&c, "b", "hello b");
    assert!(!modem_log(&c, "a").contains("+CMT"));
    at(&c, "b", "AT+CMGS=\"+15550199\"\rhello bob\x1a");
    wait_log(&c, "b", "+CMGS:");
    assert!(
        Cells::wait_until(Duration::from_secs(5), || server.said().contains(
            "MESSAGE from sip:+15550002@127.0.0.1 to sip:+15550199@127.0.0.1: hello bob"
        )),
        "{}",
        server.said()
    );
    assert!(
        !phone(&c)["log"].to_string().contains("the message from"),
        "the message was delivered: {}",
        phone(&c)["log"]
    );

    // Nobody but the server reaches cellsd's SIP socket: an INVITE sent to
    // it straight from another socket rings nobody (the control: the same
    // number rang above, through the server).
    let local = phone(&c)["sip"]["local"].as_str().unwrap().to_string();
    let rings = modem_log(&c, "b").matches("RING").count();
    let forged = format!(
        "INVITE sip:+15550002@{local} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKforged\r\n\
         From: <sip:+15550666@127.0.0.1>;tag=x\r\nTo: <sip:+15550002@127.0.0.1>\r\nCall-ID: forged@x\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:+15550666@127.0.0.1:9>\r\nContent-Type: application/sdp\r\n\r\n\
         v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n"
    );
    let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..3 {
        u.send_to(forged.as_bytes(), &local).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(modem_log(&c, "b").matches("RING").count(), rings);
    assert!(!modem_log(&c, "b").contains("+15550666"));
    assert!(phone(&c)["calls"].as_array().unwrap().is_empty());

    // A dead server: the registrations say so, a call fails cleanly (the
    // VP hears NO CARRIER, the log says why).
    drop(bob);
    server.stop();
    c.ok(&["call", "a", "+15550199"]);
    wait_log(&c, "a", "NO CARRIER");
    assert!(
        Cells::wait_until(Duration::from_secs(10), || !registered(&c, "+15550001")),
        "{}",
        phone(&c)
    );
    let p = phone(&c);
    assert!(p["sip"]["error"].to_string().contains("refused"), "{p}");
    assert!(p["calls"].as_array().unwrap().is_empty(), "{p}");
    c.sh_ok("a", "kill $(cat /data/player.pid)");
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn a_secrets_file_others_can_read_is_refused() {
    let tmp = std::env::temp_dir().join(format!("cells-sip-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let f = tmp.join("secrets");
    std::fs::write(&f, "* pw\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = std::process::Command::new(cells_tests::bin_dir().join("cellsd"))
        .args(["--sip", "sip:127.0.0.1:5999", "--sip-secrets"])
        .arg(&f)
        .args(["--state-dir"])
        .arg(tmp.join("state"))
        .args(["--run-dir"])
        .arg(tmp.join("run"))
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(e.contains("chmod 600"), "{e}");
    // Control: the same file with mode 0600 passes this check (cellsd then
    // goes on; it is not started here).
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = std::process::Command::new(cells_tests::bin_dir().join("cellsd"))
        .args(["--sip", "sip:bob@127.0.0.1", "--sip-secrets"])
        .arg(&f)
        .args(["--state-dir"])
        .arg(tmp.join("state"))
        .args(["--run-dir"])
        .arg(tmp.join("run"))
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!e.contains("chmod 600"), "{e}");
    assert!(e.contains("sip:HOST[:PORT]"), "the next check speaks: {e}");
    let _ = std::fs::remove_dir_all(&tmp);
}
