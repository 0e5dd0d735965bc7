//! SIP messages as cellsd's VoIP line needs them (RFC 3261 over UDP):
//! parse, build, digest authentication (RFC 2617/7616 with MD5), and the
//! SDP of one audio stream (RFC 4566: G.711 µ-law or A-law, 20 ms).
//! Pure: the agent (`voip`) owns the sockets and the state.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use md5::{Digest, Md5};

/// At most this much of a datagram is read as a message.
pub const MAX_MESSAGE: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    Request { method: String, uri: String },
    Response { code: u16, reason: String },
}

/// One SIP message: its start line, headers (name as sent, in order) and
/// body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub start: Start,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Compact header forms (RFC 3261 §7.3.3).
fn canonical(name: &str) -> String {
    let long = match name.to_ascii_lowercase().as_str() {
        "v" => "via",
        "f" => "from",
        "t" => "to",
        "i" => "call-id",
        "m" => "contact",
        "l" => "content-length",
        "c" => "content-type",
        "k" => "supported",
        other => return other.to_string(),
    };
    long.to_string()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("not UTF-8")]
    Encoding,
    #[error("no start line")]
    NoStart,
    #[error("bad start line '{0}'")]
    BadStart(String),
    #[error("bad header line '{0}'")]
    BadHeader(String),
    #[error("missing header {0}")]
    Missing(&'static str),
}

impl Msg {
    pub fn parse(data: &[u8]) -> Result<Self, ParseError> {
        let text = std::str::from_utf8(data).map_err(|_| ParseError::Encoding)?;
        let (head, body) = match text.find("\r\n\r\n") {
            Some(i) => (&text[..i], &text[i + 4..]),
            None => (text.trim_end(), ""),
        };
        let mut lines = head.split("\r\n");
        let first = lines
            .next()
            .filter(|l| !l.is_empty())
            .ok_or(ParseError::NoStart)?;
        let start = if let Some(rest) = first.strip_prefix("SIP/2.0 ") {
            let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
            Start::Response {
                code: code
                    .parse()
                    .map_err(|_| ParseError::BadStart(first.to_string()))?,
                reason: reason.to_string(),
            }
        } else {
            let mut p = first.split(' ');
            match (p.next(), p.next(), p.next()) {
                (Some(m), Some(u), Some("SIP/2.0")) if !m.is_empty() && !u.is_empty() => {
                    Start::Request {
                        method: m.to_string(),
                        uri: u.to_string(),
                    }
                }
                _ => return Err(ParseError::BadStart(first.to_string())),
            }
        };
        let mut headers: Vec<(String, String)> = Vec::new();
        for l in lines {
            if l.starts_with(' ') || l.starts_with('\t') {
                // A folded line continues the header before.
                match headers.last_mut() {
                    Some(h) => {
                        h.1.push(' ');
                        h.1.push_str(l.trim());
                    }
                    None => return Err(ParseError::BadHeader(l.to_string())),
                }
                continue;
            }
            let (n, v) = l
                .split_once(':')
                .ok_or_else(|| ParseError::BadHeader(l.to_string()))?;
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
        let mut m = Msg {
            start,
            headers,
            body: String::new(),
        };
        let len = m
            .header("content-length")
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(body.len())
            .min(body.len());
        m.body = body[..len].to_string();
        for h in ["via", "from", "to", "call-id", "cseq"] {
            if m.header(h).is_none() {
                return Err(ParseError::Missing(match h {
                    "via" => "Via",
                    "from" => "From",
                    "to" => "To",
                    "call-id" => "Call-ID",
                    _ => "CSeq",
                }));
            }
        }
        Ok(m)
    }

    /// The first header called `name` (either form, any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let want = canonical(name);
        self.headers
            .iter()
            .find(|(n, _)| canonical(n) == want)
            .map(|(_, v)| v.as_str())
    }

    /// Every header called `name`, each comma-separated value apart.
    pub fn all(&self, name: &str) -> Vec<String> {
        let want = canonical(name);
        self.headers
            .iter()
            .filter(|(n, _)| canonical(n) == want)
            .flat_map(|(_, v)| split_commas(v))
            .collect()
    }

    pub fn method(&self) -> Option<&str> {
        match &self.start {
            Start::Request { method, .. } => Some(method),
            Start::Response { .. } => None,
        }
    }

    pub fn code(&self) -> Option<u16> {
        match &self.start {
            Start::Response { code, .. } => Some(*code),
            Start::Request { .. } => None,
        }
    }

    pub fn call_id(&self) -> &str {
        self.header("call-id").unwrap_or("")
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> (u32, String) {
        let c = self.header("cseq").unwrap_or("");
        let (n, m) = c.split_once(' ').unwrap_or((c, ""));
        (n.trim().parse().unwrap_or(0), m.trim().to_string())
    }

    /// The branch of the top Via.
    pub fn branch(&self) -> String {
        self.all("via")
            .first()
            .and_then(|v| param(v, "branch"))
            .unwrap_or_default()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = String::new();
        match &self.start {
            Start::Request { method, uri } => {
                let _ = write!(s, "{method} {uri} SIP/2.0\r\n");
            }
            Start::Response { code, reason } => {
                let _ = write!(s, "SIP/2.0 {code} {reason}\r\n");
            }
        }
        for (n, v) in &self.headers {
            if canonical(n) != "content-length" {
                let _ = write!(s, "{n}: {v}\r\n");
            }
        }
        let _ = write!(
            s,
            "Content-Length: {}\r\n\r\n{}",
            self.body.len(),
            self.body
        );
        s.into_bytes()
    }

    pub fn request(method: &str, uri: &str) -> Self {
        Msg {
            start: Start::Request {
                method: method.to_string(),
                uri: uri.to_string(),
            },
            headers: Vec::new(),
            body: String::new(),
        }
    }

    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// A response to this request: Via, From, To (with `to_tag` if it has
    /// none), Call-ID and CSeq copied (RFC 3261 §8.2.6.2).
    pub fn response(&self, code: u16, reason: &str, to_tag: Option<&str>) -> Msg {
        let mut headers = Vec::new();
        for (n, v) in &self.headers {
            match canonical(n).as_str() {
                "via" | "from" | "call-id" | "cseq" | "record-route" => {
                    headers.push((n.clone(), v.clone()))
                }
                "to" => {
                    let v = match to_tag {
                        Some(t) if param(v, "tag").is_none() && code != 100 => {
                            format!("{v};tag={t}")
                        }
                        _ => v.clone(),
                    };
                    headers.push((n.clone(), v));
                }
                _ => {}
            }
        }
        Msg {
            start: Start::Response {
                code,
                reason: reason.to_string(),
            },
            headers,
            body: String::new(),
        }
    }
}

/// Split a header value at commas outside quotes and angle brackets.
pub fn split_commas(v: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut angle) = (Vec::new(), String::new(), false, false);
    for c in v.chars() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// A `;name=value` parameter of a header value (outside `<...>`).
pub fn param(v: &str, name: &str) -> Option<String> {
    let tail = match v.rfind('>') {
        Some(i) => &v[i + 1..],
        None => v,
    };
    tail.split(';').skip(1).find_map(|p| {
        let (k, val) = p.split_once('=').unwrap_or((p, ""));
        (k.trim().eq_ignore_ascii_case(name)).then(|| val.trim().to_string())
    })
}

/// The URI of a name-addr (`"x" <sip:a@b>;tag=1`) or addr-spec.
pub fn uri_of(v: &str) -> String {
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => v[a + 1..b].to_string(),
        _ => v.split(';').next().unwrap_or("").trim().to_string(),
    }
}

/// The user part of a SIP URI (`sip:+1555@host;x` -> `+1555`), unescaped
/// of `%2B` style escapes.
pub fn user_of(uri: &str) -> String {
    let u = uri
        .trim_start_matches("sips:")
        .trim_start_matches("sip:")
        .trim_start_matches("tel:");
    let user = match u.split_once('@') {
        Some((user, _)) => user,
        None if uri.starts_with("tel:") => u,
        None => "",
    };
    let user = user.split(';').next().unwrap_or("");
    let user = user.split(':').next().unwrap_or("");
    unescape(user)
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

// ------------------------------------------------------------ digest auth

/// A `WWW-Authenticate` / `Proxy-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub qop_auth: bool,
    pub algorithm: String,
}

/// Parse a Digest challenge (None: not Digest, or without realm/nonce).
pub fn parse_challenge(v: &str) -> Option<Challenge> {
    let rest = v.trim().strip_prefix("Digest")?.trim();
    let mut realm = None;
    let mut nonce = None;
    let mut opaque = None;
    let mut qop = String::new();
    let mut algorithm = "MD5".to_string();
    for kv in split_commas(rest) {
        let (k, val) = kv.split_once('=')?;
        let val = val.trim().trim_matches('"').to_string();
        match k.trim().to_ascii_lowercase().as_str() {
            "realm" => realm = Some(val),
            "nonce" => nonce = Some(val),
            "opaque" => opaque = Some(val),
            "qop" => qop = val,
            "algorithm" => algorithm = val,
            _ => {}
        }
    }
    Some(Challenge {
        realm: realm?,
        nonce: nonce?,
        opaque,
        qop_auth: qop.split(',').any(|q| q.trim() == "auth"),
        algorithm,
    })
}

fn md5_hex(s: &str) -> String {
    let d = Md5::digest(s.as_bytes());
    d.iter().fold(String::new(), |mut acc, b| {
        let _ = write!(acc, "{b:02x}");
        acc
    })
}

/// The `Authorization` value answering `c` for `method uri`.
pub fn authorization(
    c: &Challenge,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: u32,
) -> Result<String, String> {
    if !c.algorithm.eq_ignore_ascii_case("MD5") {
        return Err(format!(
            "the server asks for digest algorithm {}, cellsd answers MD5 only",
            c.algorithm
        ));
    }
    let ha1 = md5_hex(&format!("{user}:{}:{password}", c.realm));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    let mut v = format!(
        "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", algorithm=MD5",
        c.realm, c.nonce
    );
    let response = if c.qop_auth {
        let nc = format!("{nc:08x}");
        let r = md5_hex(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", c.nonce));
        let _ = write!(v, ", qop=auth, nc={nc}, cnonce=\"{cnonce}\"");
        r
    } else {
        md5_hex(&format!("{ha1}:{}:{ha2}", c.nonce))
    };
    let _ = write!(v, ", response=\"{response}\"");
    if let Some(o) = &c.opaque {
        let _ = write!(v, ", opaque=\"{o}\"");
    }
    Ok(v)
}

// ------------------------------------------------------------------- SDP

/// G.711 payload types (RFC 3551).
pub const PCMU: u8 = 0;
pub const PCMA: u8 = 8;

/// The audio stream an SDP offers or answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub addr: Ipv4Addr,
    pub port: u16,
    /// Payload types in preference order.
    pub formats: Vec<u8>,
}

pub fn parse_sdp(body: &str) -> Option<Media> {
    let mut session_addr = None;
    let mut media_addr = None;
    let mut audio: Option<(u16, Vec<u8>)> = None;
    let mut in_audio = false;
    for l in body.lines().map(str::trim) {
        if let Some(c) = l.strip_prefix("c=") {
            let a = c.split_whitespace().nth(2)?.split('/').next()?.parse().ok();
            if in_audio {
                media_addr = a;
            } else if audio.is_none() {
                session_addr = a;
            }
        } else if let Some(m) = l.strip_prefix("m=") {
            let f: Vec<&str> = m.split_whitespace().collect();
            in_audio = f.first() == Some(&"audio") && audio.is_none();
            if in_audio {
                let port = f.get(1)?.split('/').next()?.parse().ok()?;
                let formats = f.iter().skip(3).filter_map(|x| x.parse().ok()).collect();
                audio = Some((port, formats));
            }
        }
    }
    let (port, formats) = audio?;
    Some(Media {
        addr: media_addr.or(session_addr)?,
        port,
        formats,
    })
}

/// Our SDP: one audio stream at `addr:port` with `formats` (PCMU/PCMA).
pub fn sdp(session: u64, addr: Ipv4Addr, port: u16, formats: &[u8]) -> String {
    let mut s = format!(
        "v=0\r\no=cellsd {session} {session} IN IP4 {addr}\r\ns=cells\r\nc=IN IP4 {addr}\r\nt=0 0\r\nm=audio {port} RTP/AVP"
    );
    for f in formats {
        let _ = write!(s, " {f}");
    }
    s.push_str("\r\n");
    for f in formats {
        let name = if *f == PCMA { "PCMA" } else { "PCMU" };
        let _ = write!(s, "a=rtpmap:{f} {name}/8000\r\n");
    }
    s.push_str("a=ptime:20\r\na=sendrecv\r\n");
    s
}

/// The payload type to use with an offer: the first of its G.711 ones.
pub fn choose(offer: &Media) -> Option<u8> {
    offer
        .formats
        .iter()
        .copied()
        .find(|f| *f == PCMU || *f == PCMA)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:+15550101@127.0.0.1:5070 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc;rport\r\n\
v: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKdef\r\n\
Record-Route: <sip:127.0.0.1:5060;lr>\r\n\
From: \"Bob\" <sip:+15550199@127.0.0.1>;tag=f1\r\n\
To: <sip:+15550101@127.0.0.1>\r\n\
Call-ID: c1@x\r\n\
CSeq: 7 INVITE\r\n\
Contact: <sip:+15550199@127.0.0.1:5090>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 139\r\n\r\n\
v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 9 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";

    #[test]
    fn parses_a_request_with_compact_headers_and_sdp() {
        let m = Msg::parse(INVITE.as_bytes()).unwrap();
        assert_eq!(m.method(), Some("INVITE"));
        assert_eq!(m.call_id(), "c1@x");
        assert_eq!(m.cseq(), (7, "INVITE".into()));
        assert_eq!(m.branch(), "z9hG4bKabc");
        assert_eq!(m.all("via").len(), 2);
        assert_eq!(user_of(&uri_of(m.header("from").unwrap())), "+15550199");
        assert_eq!(
            param(m.header("from").unwrap(), "tag").as_deref(),
            Some("f1")
        );
        let media = parse_sdp(&m.body).unwrap();
        assert_eq!(media.port, 4000);
        assert_eq!(media.addr, Ipv4Addr::LOCALHOST);
        assert_eq!(choose(&media), Some(PCMA));
        let r = m.response(180, "Ringing", Some("t9"));
        let back = Msg::parse(&r.to_bytes()).unwrap();
        assert_eq!(back.code(), Some(180));
        assert_eq!(back.all("via").len(), 2, "every Via goes back");
        assert_eq!(
            param(back.header("to").unwrap(), "tag").as_deref(),
            Some("t9")
        );
        assert_eq!(back.header("record-route"), Some("<sip:127.0.0.1:5060;lr>"));
    }

    #[test]
    fn refuses_what_is_not_sip() {
        assert_eq!(Msg::parse(b""), Err(ParseError::NoStart));
        assert!(matches!(
            Msg::parse(b"HELLO\r\n\r\n"),
            Err(ParseError::BadStart(_))
        ));
        assert!(matches!(
            Msg::parse(b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n"),
            Err(ParseError::Missing(_))
        ));
        assert_eq!(Msg::parse(&[0xff, 0xfe]), Err(ParseError::Encoding));
    }

    #[test]
    fn digest_matches_rfc_2617_example() {
        // RFC 2617 §3.5 (HTTP, qop=auth).
        let c = parse_challenge(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        let v = authorization(
            &c,
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "0a4f113b",
            1,
        )
        .unwrap();
        assert!(
            v.contains("response=\"6629fae49393a05397450978507c4ef1\""),
            "{v}"
        );
        assert!(v.contains("nc=00000001"));
        // Without qop: MD5(HA1:nonce:HA2).
        let c2 = Challenge {
            qop_auth: false,
            ..c
        };
        let v2 = authorization(
            &c2,
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "x",
            1,
        )
        .unwrap();
        assert!(
            v2.contains("response=\"670fd8c2df070c60b045671b8b24ff02\""),
            "{v2}"
        );
    }

    #[test]
    fn user_parts_and_escapes() {
        assert_eq!(user_of("sip:%2B15550101@h;user=phone"), "+15550101");
        assert_eq!(user_of("tel:+15550101"), "+15550101");
        assert_eq!(user_of("sip:h"), "");
        assert_eq!(split_commas("<sip:a,b>, \"x,y\" <sip:c>").len(), 2);
    }

    #[test]
    fn our_sdp_parses_back() {
        let s = sdp(5, Ipv4Addr::new(10, 0, 0, 1), 4002, &[PCMU, PCMA]);
        let m = parse_sdp(&s).unwrap();
        assert_eq!(
            m,
            Media {
                addr: Ipv4Addr::new(10, 0, 0, 1),
                port: 4002,
                formats: vec![PCMU, PCMA]
            }
        );
    }
}
