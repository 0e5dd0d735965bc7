//! The web console in a real browser: Debian's chromium, headless, driven
//! by puppeteer-core (tests/web/console.cjs) over CDP. The page shows the
//! foreground's colour, a click lands as a tap in that VP (and not in the
//! other), the page's switcher changes the picture, typed keys reach the
//! VP in front; no token, no console; a WebSocket from another origin is
//! refused.

use std::io::{Read, Write};
use std::time::Duration;

use cells_tests::browser::Browser;

use cells_tests::Cells;

fn input_log(c: &Cells, vp: &str) -> String {
    c.sh(vp, "cat /data/input.log 2>/dev/null").stdout
}

/// A raw WebSocket upgrade request; the status line's code.
fn upgrade(port: u16, token: &str, origin: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Origin: {origin}\r\nCookie: cells_token={token}\r\n\r\n"
    )
    .unwrap();
    let mut b = [0u8; 64];
    let n = s.read(&mut b).unwrap_or(0);
    String::from_utf8_lossy(&b[..n])
        .split(' ')
        .nth(1)
        .unwrap_or("")
        .to_string()
}

#[test]
fn the_console_shows_switches_and_drives_the_foreground() {
    if !Browser::available() {
        eprintln!("SKIP: chromium or puppeteer-core missing (scripts/install-deps installs both)");
        return;
    }
    let c = Cells::with_args(None, &["--web", "127.0.0.1:0"]);
    c.ok(&["template", "build", "minimal"]);
    // A VP named like a message type ("view") is an ordinary VP.
    for (vp, color) in [("red", "ff0000"), ("green", "00ff00"), ("view", "0000ff")] {
        c.ok(&["create", vp, "--template", "minimal", "--color", color]);
        c.ok(&["start", vp]);
    }
    c.ok(&["switch", "red"]);
    let url = c.ok(&["web"]).trim().to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("?token="),
        "{url}"
    );
    let base = url.split('?').next().unwrap().to_string();
    let port: u16 = base
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let token = url.split("token=").nth(1).unwrap().to_string();

    let mut b = Browser::start();
    // No token: no console (control: with it, the page).
    let r = b.ask(serde_json::json!({"op": "open", "url": base}));
    assert_eq!(r["status"], 403, "{r}");
    let r = b.ask(serde_json::json!({"op": "open", "url": url}));
    assert_eq!(r["status"], 200, "{r}");
    let r = b.ask(serde_json::json!({"op": "pixel", "x": 5, "y": 600, "rgb": [255, 0, 0]}));
    assert_eq!(r["ok"], true, "the page shows red's colour: {r}");

    // A click on the page is a tap in red (in front), not in green.
    let r = b.ask(serde_json::json!({"op": "click", "x": 100, "y": 200}));
    assert_eq!(r["ok"], true);
    assert!(
        Cells::wait_until(Duration::from_secs(5), || {
            let l = input_log(&c, "red");
            l.contains("EV_ABS ABS_MT_POSITION_X 100") && l.contains("EV_ABS ABS_MT_POSITION_Y 200")
        }),
        "red got the tap: {}",
        input_log(&c, "red")
    );
    assert!(!input_log(&c, "green").contains("ABS_MT_POSITION_X 100"));

    // The page's switcher: green in front, on the panel and in the page.
    let r = b.ask(serde_json::json!({"op": "button", "vp": "green", "action": "switch"}));
    assert_eq!(r["ok"], true, "{r}");
    let r = b.ask(serde_json::json!({"op": "pixel", "x": 5, "y": 600, "rgb": [0, 255, 0]}));
    assert_eq!(r["ok"], true, "the page shows green's colour: {r}");
    assert_eq!(c.ok(&["foreground"]).trim(), "green");

    // Watching red's own framebuffer (red is behind): the page shows red
    // while the panel stays green; then the panel again.
    let r = b.ask(serde_json::json!({"op": "button", "vp": "red", "action": "view"}));
    assert_eq!(r["ok"], true, "{r}");
    let r = b.ask(serde_json::json!({"op": "pixel", "x": 5, "y": 600, "rgb": [255, 0, 0]}));
    assert_eq!(r["ok"], true, "the page shows red's own frame: {r}");
    assert_eq!(
        cells_tests::pixel(&c.shot(None), 5, 600),
        mux_fb::geometry::Rgb(0x00ff00)
    );
    let r = b.ask(serde_json::json!({"op": "button", "vp": "red", "action": "view"}));
    assert_eq!(r["ok"], true, "{r}");
    let r = b.ask(serde_json::json!({"op": "pixel", "x": 5, "y": 600, "rgb": [0, 255, 0]}));
    assert_eq!(r["ok"], true, "the panel again: {r}");

    // The switcher with a VP named "view": it comes in front; green again.
    let r = b.ask(serde_json::json!({"op": "button", "vp": "view", "action": "switch"}));
    assert_eq!(r["ok"], true, "{r}");
    assert!(Cells::wait_until(Duration::from_secs(5), || c
        .ok(&["foreground"])
        .trim()
        == "view"));
    let r = b.ask(serde_json::json!({"op": "button", "vp": "green", "action": "switch"}));
    assert_eq!(r["ok"], true, "{r}");
    assert!(Cells::wait_until(Duration::from_secs(5), || c
        .ok(&["foreground"])
        .trim()
        == "green"));

    // Keys typed in the page reach green.
    let r = b.ask(serde_json::json!({"op": "type", "text": "hi"}));
    assert_eq!(r["ok"], true);
    assert!(
        Cells::wait_until(Duration::from_secs(5), || {
            let l = input_log(&c, "green");
            // KEY_H is 35, KEY_I 23 (the persona names only some keys).
            l.contains("EV_KEY KEY_35 1") && l.contains("EV_KEY KEY_23 1")
        }),
        "green got the keys: {}",
        input_log(&c, "green")
    );
    assert!(!input_log(&c, "red").contains("KEY_35"));
    // Sound: silence while green plays nothing (control), its 440 Hz once
    // it plays.
    let r = b.ask(serde_json::json!({"op": "sound"}));
    assert_eq!(r["ok"], true);
    let r = b.ask(serde_json::json!({"op": "level", "freq": 440, "max": 300, "chunks": 10}));
    assert_eq!(r["ok"], true, "silence first: {r}");
    cells_tests::sound::play_forever(&c, "green", 440.0);
    let r = b.ask(serde_json::json!({"op": "level", "freq": 440, "min": 4000}));
    assert_eq!(r["ok"], true, "the page hears green's 440 Hz: {r}");
    c.sh_ok("green", "kill $(cat /data/player.pid)");
    let st = b.ask(serde_json::json!({"op": "state"}));
    assert_eq!(st["state"]["errors"].as_array().unwrap().len(), 0, "{st}");

    // Cross-site: another origin's WebSocket is refused even with the
    // cookie (control: this console's own origin is let in).
    assert_eq!(upgrade(port, &token, "http://evil.example"), "403");
    assert_eq!(
        upgrade(port, &token, &format!("http://127.0.0.1:{port}")),
        "101"
    );
    assert_eq!(
        upgrade(port, "wrong", &format!("http://127.0.0.1:{port}")),
        "403"
    );
}

/// `--web-tls` (always on off loopback): the console over TLS with a
/// certificate cellsd made and keeps; curl trusts it with that certificate
/// (control: not without it; plain HTTP gets nothing), its fingerprint is
/// the one `cellctl web` prints, and a restart keeps it.
#[test]
fn the_console_over_tls_with_a_kept_certificate() {
    let mut c = Cells::with_args(None, &["--web", "127.0.0.1:0", "--web-tls"]);
    let out = c.ok(&["web"]);
    let mut lines = out.lines();
    let url = lines.next().unwrap().to_string();
    let fp_line = lines.next().unwrap_or("").to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{out}");
    let cert = c.state.join("web/cert.pem");
    let key = c.state.join("web/key.pem");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let curl = |args: &[&str]| {
        std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
            ])
            .args(args)
            .output()
            .unwrap()
    };
    let o = curl(&["--cacert", cert.to_str().unwrap(), &url]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "200", "{o:?}");
    let o = curl(&[&url]);
    assert!(
        !o.status.success(),
        "an unknown certificate is not trusted: {o:?}"
    );
    let plain = url.replacen("https://", "http://", 1);
    let o = curl(&[&plain]);
    assert_ne!(
        String::from_utf8_lossy(&o.stdout),
        "200",
        "no plain HTTP: {o:?}"
    );
    // The fingerprint `cellctl web` printed is the certificate's.
    let x = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    let fp = String::from_utf8_lossy(&x.stdout)
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .to_string();
    assert!(fp_line.ends_with(&fp), "{fp_line} vs {fp}");
    // A restart keeps the certificate (a browser that trusted it still does).
    c.end_daemon(libc::SIGTERM);
    c.start_daemon();
    let again = c.ok(&["web"]);
    assert!(again.contains(&fp), "{again}");
}
