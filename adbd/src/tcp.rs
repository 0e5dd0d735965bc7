//! `tcp:PORT` and `tcp:PORT:HOST` (SERVICES.TXT): a stream connected to a
//! TCP port on the device, which is how `adb forward tcp:X tcp:Y` reaches a
//! service in the VP.

use std::net::TcpStream;

use crate::transport::Stream;

/// `tcp:8080` → ("127.0.0.1", 8080); `tcp:8080:example` → ("example", 8080).
pub fn parse_service(name: &str) -> Option<(String, u16)> {
    let rest = name.strip_prefix("tcp:")?;
    let (port, host) = match rest.split_once(':') {
        Some((p, h)) if !h.is_empty() => (p, h.to_string()),
        Some(_) => return None,
        None => (rest, "127.0.0.1".to_string()),
    };
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    Some((host, port))
}

pub fn run(target: &(String, u16), stream: Stream) {
    match TcpStream::connect((target.0.as_str(), target.1)) {
        Ok(sock) => crate::relay::relay(stream, sock),
        Err(e) => {
            eprintln!("adbd: tcp:{}:{}: {e}", target.1, target.0);
            stream.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names() {
        assert_eq!(parse_service("tcp:8080"), Some(("127.0.0.1".into(), 8080)));
        assert_eq!(
            parse_service("tcp:53:dns.lan"),
            Some(("dns.lan".into(), 53))
        );
        for bad in ["tcp:", "tcp:0", "tcp:x", "tcp:70000", "tcp:80:", "udp:53"] {
            assert_eq!(parse_service(bad), None, "{bad}");
        }
    }
}
