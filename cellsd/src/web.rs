//! The web console (`cellsd --web ADDR:PORT`): the panel live in a browser,
//! a persona switcher, touch and keys into the foreground VP.
//!
//! - **Access**: a random token made at each start of cellsd; the console's
//!   URL carries it (`cellctl web` prints it, cellsd logs it). The page sets
//!   it as a SameSite=Strict, HttpOnly cookie; every request and the
//!   WebSocket need it, and a WebSocket whose Origin is not this console is
//!   refused (no other site can drive it through the cookie). On loopback
//!   plain HTTP (or TLS with `--web-tls`); on any other address always TLS:
//!   with `--web-cert`/`--web-key`, or a self-signed certificate cellsd
//!   makes once and keeps (`<state>/web/`), whose SHA-256 fingerprint it
//!   logs and `cellctl web` prints, for the browser to be checked against.
//! - **Frames**: the panel compared with what this viewer was last sent in
//!   64×64 tiles; in each row of tiles, the span from the first changed
//!   tile to the last goes out as a PNG (lossless, decoded by the browser
//!   natively), all in one binary WebSocket message: `u16 x, y, w, h,
//!   u32 len, PNG` per tile, little-endian, after a first byte 0. The panel is looked at 60
//!   times a second, frames go out at most 30 times a second per viewer; a
//!   viewer that reads slowly gets fewer (each send waits for the last). WebRTC/H.264 would pay off for video-like content on a slow
//!   link; phone UIs change in small regions, where lossless tiles are
//!   smaller and exact.
//! - **Views**: `{"t":"view","vp":NAME}` shows a VP's own framebuffer
//!   (a background VP's too) instead of the panel, `"vp":""` the panel
//!   again. Input always goes to the foreground.
//! - **Input and control**: JSON text messages: `{"t":"touch","a":
//!   "down|move|up","x","y"}` (panel pixels), `{"t":"key","k":NAME,"a":
//!   "press|down|up"}`, `{"t":"text","s":TEXT}`, `{"t":"switch"|"start"|
//!   "stop","vp":NAME}`. The server sends `{"t":"hello","w","h"}` and
//!   `{"t":"status","fg","vps":[{name,state}]}` when it changes, and
//!   `{"t":"error","msg"}`.
//! - **Sound**: after `{"t":"audio","on":true}` the device's output (what
//!   the mixer plays: the foreground by the audio policies, a call) goes to
//!   the viewer as binary messages of a first byte 1 and 40 ms of S16LE
//!   24 kHz mono (both channels and two frames averaged: 48 KB/s).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;

use crate::daemon::{Manager, Point};

/// The console's URL (with its token), once it listens.
pub static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Tile edge in pixels.
pub const TILE: u32 = 64;
/// The panel is looked at this often (a change is on its way within one
/// look and one compositor refresh) ...
const LOOK_EVERY: Duration = Duration::from_micros(16_667);
/// ... and frames go out at most this often (30 per second).
const FRAME_EVERY: Duration = Duration::from_micros(30_000);
const PAGE: &str = include_str!("web/index.html");

/// Where the console listens, its token and its TLS.
#[derive(Debug, Clone)]
pub struct WebConfig {
    pub addr: SocketAddr,
    pub token: String,
    pub tls: bool,
    /// `--web-cert`, `--web-key` (None: made and kept in the state dir).
    pub cert: Option<(PathBuf, PathBuf)>,
}

impl WebConfig {
    /// `--web ADDR:PORT` (or just PORT: loopback); `tls`: `--web-tls`
    /// (always on off loopback).
    pub fn parse(s: &str, tls: bool, cert: Option<(PathBuf, PathBuf)>) -> Result<Self, String> {
        let addr: SocketAddr = match s.parse::<u16>() {
            Ok(port) => SocketAddr::from(([127, 0, 0, 1], port)),
            Err(_) => s
                .parse()
                .map_err(|_| format!("--web {s}: give ADDR:PORT, e.g. 127.0.0.1:8080"))?,
        };
        Ok(Self {
            addr,
            token: crate::devices::telephony::voip::random_hex(16),
            tls: tls || cert.is_some() || !addr.ip().is_loopback(),
            cert,
        })
    }

    pub fn url(&self, addr: SocketAddr) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{addr}/?token={}", self.token)
    }

    /// The TLS acceptor (None: plain HTTP) and the certificate's SHA-256
    /// fingerprint.
    pub fn acceptor(
        &self,
        state_dir: &Path,
    ) -> Result<Option<(tokio_rustls::TlsAcceptor, String)>, String> {
        if !self.tls {
            return Ok(None);
        }
        let (cert_pem, key_pem) = match &self.cert {
            Some((c, k)) => (
                std::fs::read(c).map_err(|e| format!("--web-cert {}: {e}", c.display()))?,
                std::fs::read(k).map_err(|e| format!("--web-key {}: {e}", k.display()))?,
            ),
            None => own_certificate(&state_dir.join("web"), self.addr)?,
        };
        let certs: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..])
            .collect::<Result<_, _>>()
            .map_err(|e| format!("the web console's certificate: {e}"))?;
        let first = certs
            .first()
            .ok_or("the web console's certificate file holds no certificate")?;
        use sha2::Digest;
        let fp = sha2::Sha256::digest(first.as_ref())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let key = rustls_pemfile::private_key(&mut &key_pem[..])
            .map_err(|e| format!("the web console's key: {e}"))?
            .ok_or("the web console's key file holds no private key")?;
        // ring: pure Rust and C, no cmake (aws-lc-rs needs it). Deprecated
        // only for lacking post-quantum key exchange; X25519 and the P-256/
        // P-384 curves with TLS 1.3/1.2 remain.
        #[allow(deprecated)]
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| format!("the web console's certificate and key: {e}"))?;
        Ok(Some((
            tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            fp,
        )))
    }
}

/// The self-signed certificate cellsd made for the console (made once,
/// kept: a browser that trusted it keeps trusting it), for the listening
/// address and localhost.
fn own_certificate(dir: &Path, addr: SocketAddr) -> Result<(Vec<u8>, Vec<u8>), String> {
    use std::os::unix::fs::PermissionsExt;
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    if let (Ok(cert), Ok(key)) = (std::fs::read(&c), std::fs::read(&k)) {
        return Ok((cert, key));
    }
    let mut names = vec!["localhost".to_string(), addr.ip().to_string()];
    if let Ok(h) = nix::unistd::gethostname() {
        names.push(h.to_string_lossy().into_owned());
    }
    let made = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("making the web console's certificate: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let (cert, key) = (made.cert.pem(), made.key_pair.serialize_pem());
    crate::layout::write_atomic(&k, key.as_bytes()).map_err(|e| format!("{}: {e}", k.display()))?;
    let _ = std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600));
    crate::layout::write_atomic(&c, cert.as_bytes())
        .map_err(|e| format!("{}: {e}", c.display()))?;
    Ok((cert.into_bytes(), key.into_bytes()))
}

/// The panel's rectangles (x, y, w, h) whose pixels differ from `prev`
/// (all of them without one). `g`: XRGB8888 with the panel's stride.
pub fn changed_tiles(
    prev: Option<&[u8]>,
    cur: &[u8],
    g: &mux_fb::Geometry,
) -> Vec<(u32, u32, u32, u32)> {
    let mut out = Vec::new();
    let mut y = 0;
    while y < g.height {
        let h = TILE.min(g.height - y);
        let mut x = 0;
        while x < g.width {
            let w = TILE.min(g.width - x);
            let differs = match prev {
                None => true,
                Some(p) => (y..y + h).any(|row| {
                    let a = g.offset(x, row);
                    let b = g.offset(x + w, row);
                    p.get(a..b) != cur.get(a..b)
                }),
            };
            if differs {
                out.push((x, y, w, h));
            }
            x += TILE;
        }
        y += TILE;
    }
    out
}

/// The changed tiles of each row of tiles joined into one rectangle from
/// the first to the last (fewer, larger images: a browser decodes 20
/// bands of a full-frame change much faster than 240 tiles).
pub fn row_spans(tiles: &[(u32, u32, u32, u32)]) -> Vec<(u32, u32, u32, u32)> {
    let mut out: Vec<(u32, u32, u32, u32)> = Vec::new();
    for &(x, y, w, h) in tiles {
        match out.last_mut() {
            Some(r) if r.1 == y => r.2 = x + w - r.0,
            _ => out.push((x, y, w, h)),
        }
    }
    out
}

/// One tile as an RGB PNG.
pub fn encode_tile(cur: &[u8], g: &mux_fb::Geometry, r: (u32, u32, u32, u32)) -> Vec<u8> {
    let (x, y, w, h) = r;
    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
    for row in y..y + h {
        let line = &cur[g.offset(x, row)..g.offset(x + w, row)];
        for px in line.chunks_exact(4) {
            rgb.extend_from_slice(&[px[2], px[1], px[0]]);
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        if let Ok(mut wr) = enc.write_header() {
            let _ = wr.write_image_data(&rgb);
        }
    }
    out
}

/// The binary message of a set of tiles.
pub fn frame_message(cur: &[u8], g: &mux_fb::Geometry, tiles: &[(u32, u32, u32, u32)]) -> Vec<u8> {
    let mut m = vec![0u8];
    for &t in tiles {
        let png = encode_tile(cur, g, t);
        for v in [t.0, t.1, t.2, t.3] {
            m.extend_from_slice(&(v as u16).to_le_bytes());
        }
        m.extend_from_slice(&(png.len() as u32).to_le_bytes());
        m.extend_from_slice(&png);
    }
    m
}

/// 48 kHz stereo periods as one sound message: a byte 1, then S16LE
/// 24 kHz mono.
pub fn sound_message(periods: &[Vec<i16>]) -> Vec<u8> {
    let mut m = vec![1u8];
    for p in periods {
        for f in p.chunks_exact(4) {
            let v = (f.iter().map(|s| *s as i32).sum::<i32>() / 4) as i16;
            m.extend_from_slice(&v.to_le_bytes());
        }
    }
    m
}

/// Constant-time comparison (the token).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

struct Request {
    path: String,
    query: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn token(&self) -> Option<String> {
        let from_query = self
            .query
            .split('&')
            .find_map(|kv| kv.strip_prefix("token="));
        let from_cookie = self.header("cookie").and_then(|c| {
            c.split(';')
                .find_map(|kv| kv.trim().strip_prefix("cells_token="))
        });
        from_query.or(from_cookie).map(str::to_string)
    }
}

async fn read_request<S: AsyncRead + Unpin>(s: &mut S) -> Option<Request> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > 16 * 1024 {
            return None;
        }
        let n = s.read(&mut b).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let first = lines.next()?;
    let mut parts = first.split(' ');
    if parts.next()? != "GET" {
        return None;
    }
    let target = parts.next()?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Request {
        path: path.to_string(),
        query: query.to_string(),
        headers,
    })
}

async fn respond<S: AsyncWrite + Unpin>(
    s: &mut S,
    status: &str,
    ctype: &str,
    extra: &str,
    body: &[u8],
) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Frame-Options: DENY\r\nContent-Security-Policy: default-src 'self'; img-src 'self' blob:; connect-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(body).await;
}

/// Serve the console until cellsd ends.
pub async fn serve(
    listener: TcpListener,
    mgr: Arc<Manager>,
    token: String,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let Ok((s, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (mgr, token, tls) = (Arc::clone(&mgr), token.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => connection(s, mgr, token, "http").await,
                Some(acc) => {
                    let hs = tokio::time::timeout(Duration::from_secs(10), acc.accept(s)).await;
                    if let Ok(Ok(s)) = hs {
                        connection(s, mgr, token, "https").await;
                    }
                }
            }
        });
    }
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    mut s: S,
    mgr: Arc<Manager>,
    token: String,
    scheme: &str,
) {
    let Ok(Some(req)) = tokio::time::timeout(Duration::from_secs(10), read_request(&mut s)).await
    else {
        return;
    };
    if !req.token().is_some_and(|t| same(&t, &token)) {
        respond(
            &mut s,
            "403 Forbidden",
            "text/plain",
            "",
            b"the console needs its token: open the URL `cellctl web` prints\n",
        )
        .await;
        return;
    }
    let host = req.header("host").unwrap_or("").to_string();
    match req.path.as_str() {
        "/" => {
            let cookie =
                format!("Set-Cookie: cells_token={token}; HttpOnly; SameSite=Strict; Path=/\r\n");
            respond(
                &mut s,
                "200 OK",
                "text/html; charset=utf-8",
                &cookie,
                PAGE.as_bytes(),
            )
            .await;
        }
        "/ws" => {
            // Only this console's own page may open the socket.
            let origin_ok = req
                .header("origin")
                .is_some_and(|o| o == format!("{scheme}://{host}"));
            let key = req.header("sec-websocket-key").map(str::to_string);
            let (true, Some(key)) = (origin_ok, key) else {
                respond(
                    &mut s,
                    "403 Forbidden",
                    "text/plain",
                    "",
                    b"not from this console\n",
                )
                .await;
                return;
            };
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let head = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            if s.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let ws =
                tokio_tungstenite::WebSocketStream::from_raw_socket(s, Role::Server, None).await;
            session(ws, mgr).await;
        }
        _ => respond(&mut s, "404 Not Found", "text/plain", "", b"not here\n").await,
    }
}

fn status_json(mgr: &Manager) -> String {
    let list = mgr.list();
    let fg = mgr.foreground().unwrap_or_default();
    serde_json::json!({
        "t": "status",
        "fg": fg,
        "vps": list.iter().map(|v| serde_json::json!({"name": v.name, "state": v.state})).collect::<Vec<_>>(),
    })
    .to_string()
}

async fn command(mgr: &Arc<Manager>, v: &serde_json::Value) -> Result<(), String> {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let p = || Point {
        x: v["x"].as_i64().unwrap_or(-1) as i32,
        y: v["y"].as_i64().unwrap_or(-1) as i32,
    };
    let r = match v["t"].as_str().unwrap_or("") {
        "touch" => mgr.input_touch(&s("a"), p()).await,
        "key" => {
            let a = s("a");
            mgr.input_key(&s("k"), if a.is_empty() { "press" } else { &a })
                .await
        }
        "text" => mgr.input_text(&s("s")).await,
        "switch" => mgr.switch(&s("vp")),
        "start" => mgr.start(&s("vp")).await,
        "stop" => mgr.stop(&s("vp"), 10).await,
        other => return Err(format!("unknown message type '{other}'")),
    };
    r.map_err(|e| e.to_string())
}

/// Move the mixer's periods (a std channel, read on a thread of its own)
/// onto the session's channel, 40 ms a message, until the returned flag is
/// set or the session is gone. A viewer that is behind loses sound, not
/// delay.
fn forward_sound(
    rx: std::sync::mpsc::Receiver<Vec<i16>>,
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
) -> Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let _ = std::thread::Builder::new()
        .name("web-sound".into())
        .spawn(move || {
            let mut batch = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(p) => batch.push(p),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(_) => return,
                }
                if batch.len() >= 4 {
                    if let Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) =
                        tx.try_send(sound_message(&batch))
                    {
                        return;
                    }
                    batch.clear();
                }
            }
        });
    stop
}

async fn session<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    mgr: Arc<Manager>,
) {
    let (mut tx, mut rx) = ws.split();
    let g = mgr.panel_geometry();
    let hello = serde_json::json!({"t": "hello", "w": g.width, "h": g.height}).to_string();
    if tx.send(Message::text(hello)).await.is_err() {
        return;
    }
    let mut last: Option<Vec<u8>> = None;
    let mut last_status = String::new();
    // The device's output, while the viewer listens ([`forward_sound`]).
    let (snd_tx, mut snd_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    // What the viewer watches: the panel (None) or a VP's own framebuffer.
    let mut view: Option<String> = None;
    let mut listening: Option<Arc<std::sync::atomic::AtomicBool>> = None;
    let mut next = Instant::now();
    let mut sent = Instant::now() - FRAME_EVERY;
    loop {
        tokio::select! {
            m = rx.next() => {
                match m {
                    Some(Ok(Message::Text(t))) => {
                        // One parse, then the type decides.
                        let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                        let error = match v["t"].as_str().unwrap_or("") {
                            "audio" => {
                                if let Some(stop) = listening.take() {
                                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                                }
                                match (v["on"] == true, mgr.audio_listen()) {
                                    (false, _) => None,
                                    (true, Some(rx)) => {
                                        listening = Some(forward_sound(rx, snd_tx.clone()));
                                        None
                                    }
                                    (true, None) => Some("this device has no audio".to_string()),
                                }
                            }
                            "view" => {
                                view = v["vp"].as_str().filter(|n| !n.is_empty()).map(str::to_string);
                                // The whole frame of what is watched now.
                                last = None;
                                None
                            }
                            _ => command(&mgr, &v).await.err(),
                        };
                        if let Some(e) = error {
                            let msg = serde_json::json!({"t": "error", "msg": e}).to_string();
                            if tx.send(Message::text(msg)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => {}
                }
            }
            Some(m) = snd_rx.recv() => {
                if tx.send(Message::binary(m)).await.is_err() {
                    break;
                }
            }
            _ = tokio::time::sleep_until(next.into()) => {
                // An absolute clock; after a stall it starts again, no burst.
                next += LOOK_EVERY;
                if next < Instant::now() {
                    next = Instant::now() + LOOK_EVERY;
                }
                let st = status_json(&mgr);
                if st != last_status {
                    if tx.send(Message::text(st.clone())).await.is_err() {
                        return;
                    }
                    last_status = st;
                }
                if sent.elapsed() < FRAME_EVERY {
                    continue;
                }
                let taken = Instant::now();
                let cur = match &view {
                    None => mgr.panel_pixels(),
                    Some(vp) => mgr.vp_pixels(vp),
                };
                let Some(cur) = cur else { continue };
                let tiles = row_spans(&changed_tiles(last.as_deref(), &cur, &g));
                if tiles.is_empty() {
                    continue;
                }
                let (cur2, g2) = (cur.clone(), g);
                let msg = tokio::task::spawn_blocking(move || frame_message(&cur2, &g2, &tiles))
                    .await
                    .unwrap_or_default();
                // Paced by when frames are taken, not by how long they
                // took to encode.
                sent = taken;
                if tx.send(Message::binary(msg)).await.is_err() {
                    return;
                }
                last = Some(cur);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changed_tiles_go_out() {
        let g = mux_fb::Geometry::new(150, 70);
        let a = vec![0u8; g.size()];
        assert_eq!(changed_tiles(None, &a, &g).len(), 3 * 2, "all tiles first");
        assert!(changed_tiles(Some(&a), &a, &g).is_empty());
        let mut b = a.clone();
        let o = g.offset(140, 65);
        b[o] = 1;
        assert_eq!(changed_tiles(Some(&a), &b, &g), vec![(128, 64, 22, 6)]);
        let m = frame_message(&b, &g, &[(128, 64, 22, 6)]);
        assert_eq!(m[0], 0, "a frame");
        let m = &m[1..];
        assert_eq!(u16::from_le_bytes([m[0], m[1]]), 128);
        let len = u32::from_le_bytes([m[8], m[9], m[10], m[11]]) as usize;
        assert_eq!(m.len(), 12 + len);
        let (w, h, _) = mux_fb::screenshot::decode_png(&m[12..]).unwrap();
        assert_eq!((w, h), (22, 6));
        // A row's changed tiles join into one span.
        let spans = row_spans(&[(0, 0, 64, 64), (128, 0, 22, 64), (64, 64, 64, 6)]);
        assert_eq!(spans, vec![(0, 0, 150, 64), (64, 64, 64, 6)]);
    }

    #[test]
    fn tls_off_loopback_and_the_token_must_match() {
        assert!(!WebConfig::parse("8080", false, None).unwrap().tls);
        assert!(WebConfig::parse("127.0.0.1:9000", true, None).unwrap().tls);
        let w = WebConfig::parse("0.0.0.0:8080", false, None).unwrap();
        assert!(w.tls, "never plain off loopback");
        assert!(w
            .url("10.0.0.1:8080".parse().unwrap())
            .starts_with("https://"));
        assert!(WebConfig::parse("nonsense", false, None).is_err());
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
