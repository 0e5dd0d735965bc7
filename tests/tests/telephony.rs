//! The telephony device: each VP's virtual modem (`/dev/ttyMODEM0`) driven
//! with stock tools (busybox's sh, printf and cat, as a RIL writes and reads
//! its tty), a number per VP, calls with caller ID and messages between
//! VPs, in the background too; bad AT input; the API and its signal.

use std::time::Duration;

use cells_tests::modem::{at, log_modem, modem_log, wait_log};
use cells_tests::Cells;

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
    let banner = mux_fb::geometry::Rgb(0x0d47a1);
    let top = || cells_tests::pixel(&c.shot(None), 2, 2);
    assert_ne!(top(), banner, "no notice before the call (control)");
    at(&c, "a", "ATD+15550002;\\r");
    let b = wait_log(&c, "b", "+CLIP: \"+15550001\",145");
    assert!(b.contains("RING"), "{b}");
    // The panel (a's) shows who is calling b, over its top rows.
    assert!(
        Cells::wait_until(Duration::from_secs(3), || top() == banner),
        "the panel shows the caller of a VP behind"
    );
    at(&c, "a", "AT+CLCC\\r");
    wait_log(&c, "a", "+CLCC: 1,0,3,0,0,\"+15550002\",145");
    // b answers: both active.
    at(&c, "b", "ATA\\r");
    assert!(Cells::wait_until(Duration::from_secs(5), || phone(&c)
        ["calls"][0]["state"]
        == "active"));
    at(&c, "b", "AT+CLCC\\r");
    wait_log(&c, "b", "+CLCC: 1,1,0,0,0,\"+15550001\",145");
    assert!(
        Cells::wait_until(Duration::from_secs(3), || top() != banner),
        "answered: the notice is gone"
    );
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
        let (_conn, p) = c.dbus().await;
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

/// The modem simulator (a test fixture): its tty, its stdin (the network's
/// side) and what it was asked (its stdout lines).
struct Sim {
    child: std::process::Child,
    tty: String,
    said: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Sim {
    fn start() -> Sim {
        use std::io::BufRead;
        let mut child = std::process::Command::new(cells_tests::bin_dir().join("cells-modem-sim"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("cells-modem-sim (built with the workspace)");
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut tty = String::new();
        out.read_line(&mut tty).unwrap();
        let said = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = std::sync::Arc::clone(&said);
        std::thread::spawn(move || {
            for l in out.lines() {
                let Ok(l) = l else { break };
                s2.lock().unwrap().push(l);
            }
        });
        Sim {
            child,
            tty: tty.trim().to_string(),
            said,
        }
    }

    fn network(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn wait_said(&self, what: &str) {
        let ok = Cells::wait_until(Duration::from_secs(10), || {
            self.said.lock().unwrap().iter().any(|l| l == what)
        });
        assert!(
            ok,
            "the modem was never asked {what:?}: {:?}",
            self.said.lock().unwrap()
        );
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_cellular_line_belongs_to_one_vp() {
    let mut sim = Sim::start();
    let c = Cells::with_args(None, &["--modem", &sim.tty]);
    c.ok(&["template", "build", "minimal"]);
    for vp in ["a", "b"] {
        c.create_start(vp);
        log_modem(&c, vp);
    }
    c.ok(&["phone", "assign", "b"]);
    assert!(
        Cells::wait_until(Duration::from_secs(15), || {
            let p = phone(&c);
            p["cellular"]["registered"] == true && p["cellular"]["number"] == "+15559990000"
        }),
        "{}",
        phone(&c)
    );
    assert_eq!(phone(&c)["cellular"]["operator"], "SimNet");
    at(&c, "b", "AT+CNUM\\r");
    wait_log(&c, "b", "+CNUM: \"\",\"+15559990000\",145");
    c.ok(&["switch", "a"]);

    // A call on the cellular number rings in b (in the background), with
    // the caller's number; a (in front) sees nothing.
    sim.network("ring +15551234567");
    wait_log(&c, "b", "+CLIP: \"+15551234567\",145");
    at(&c, "b", "ATA\\r");
    sim.wait_said("answered");
    assert_eq!(phone(&c)["calls"][0]["state"], "active");
    sim.network("hangup");
    wait_log(&c, "b", "NO CARRIER");
    assert!(Cells::wait_until(Duration::from_secs(3), || phone(&c)
        ["calls"]
        .as_array()
        .unwrap()
        .is_empty()));
    let a = modem_log(&c, "a");
    assert!(!a.contains("RING"), "{a}");

    // b calls out on the line; the far end answers; b hangs up.
    at(&c, "b", "ATD+15557654321;\\r");
    sim.wait_said("dial +15557654321");
    sim.network("answer");
    assert!(Cells::wait_until(Duration::from_secs(5), || phone(&c)
        ["calls"][0]["state"]
        == "active"));
    at(&c, "b", "ATH\\r");
    sim.wait_said("hung up");
    // a may not use the line.
    let e = c.fails(&["call", "a", "+15557654321"]);
    assert!(
        e.contains("only b's calls go out on the cellular line"),
        "{e}"
    );

    // Messages both ways, b's only.
    sim.network("sms +15551234567 hello b");
    wait_log(&c, "b", "+CMT: \"+15551234567\"");
    wait_log(&c, "b", "hello b");
    at(&c, "b", "AT+CMGS=\"+15551234567\"\\rfrom b\\032");
    sim.wait_said("sms-out +15551234567 from b");
    let a = modem_log(&c, "a");
    assert!(!a.contains("+CMT"), "{a}");

    // A dead modem: the line says so, b's calls fail cleanly.
    drop(sim);
    assert!(
        Cells::wait_until(Duration::from_secs(15), || {
            let p = phone(&c);
            p["cellular"]["registered"] == false && !p["cellular"]["error"].is_null()
        }),
        "{}",
        phone(&c)
    );
    let e = c.fails(&["call", "b", "+15557654321"]);
    assert!(e.contains("no running VP has that number"), "{e}");
}

#[test]
fn on_call_switch_brings_the_called_vp_to_the_front() {
    // Default (notify): the called VP rings in the background.
    let c = Cells::new();
    for vp in ["a", "b"] {
        c.create_start(vp);
    }
    c.ok(&["phone", "number", "b", "+15550002"]);
    c.ok(&["switch", "a"]);
    c.ok(&["call", "a", "+15550002"]);
    assert_eq!(phone(&c)["calls"][0]["state"], "ringing");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.ok(&["foreground"]).trim(), "a");
    c.ok(&["hangup", "a"]);
    drop(c);
    // --on-call switch: it becomes the foreground.
    let c = Cells::with_args(None, &["--on-call", "switch"]);
    c.ok(&["template", "build", "minimal"]);
    for vp in ["a", "b"] {
        c.create_start(vp);
    }
    c.ok(&["phone", "number", "b", "+15550002"]);
    c.ok(&["switch", "a"]);
    c.ok(&["call", "a", "+15550002"]);
    assert!(
        Cells::wait_until(Duration::from_secs(5), || c.ok(&["foreground"]).trim()
            == "b"),
        "the called VP did not come to the front"
    );
}

/// A stock AT client: Debian's socat in a `debian`-template VP talks to its
/// modem as to any serial modem (raw, no echo): its own number, a call to
/// a VP of the minimal template with its number as caller ID.
#[test]
fn debian_socat_drives_the_virtual_modem() {
    let c = Cells::new();
    c.ok(&["template", "build", "debian"]);
    c.ok(&["create", "d", "--template", "debian"]);
    c.ok(&["phone", "number", "d", "+15550044"]);
    c.ok(&["start", "d"]);
    c.create_start("b");
    c.ok(&["phone", "number", "b", "+15550002"]);
    log_modem(&c, "b");
    let socat = |at: &str| {
        c.sh_ok(
            "d",
            &format!("printf '{at}\\r' | socat -t 1 - /dev/ttyMODEM0,raw,echo=0 | tr -d '\\r'"),
        )
    };
    let out = socat("AT+CNUM");
    assert!(
        out.contains("+CNUM: \"\",\"+15550044\",145") && out.contains("OK"),
        "{out}"
    );
    let out = socat("AT+CREG?");
    assert!(out.contains("+CREG: 0,1"), "{out}");
    let out = socat("ATD+15550002;");
    assert!(out.contains("OK"), "{out}");
    wait_log(&c, "b", "+CLIP: \"+15550044\",145");
    let out = socat("AT+CHUP");
    assert!(out.contains("OK"), "{out}");
    wait_log(&c, "b", "NO CARRIER");
    // Bad input from the stock client: an error, nothing changed.
    let out = socat("AT+CMGS");
    assert!(out.contains("ERROR"), "{out}");
    assert!(phone(&c)["calls"].as_array().unwrap().is_empty());
}
