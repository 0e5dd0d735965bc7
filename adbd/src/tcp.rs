//! `tcp:PORT` and `tcp:PORT:HOST` (SERVICES.TXT): a stream connected to a
//! TCP port on the device, which is how `adb forward tcp:X tcp:Y` reaches a
//! service in the VP.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

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
    let stream = Arc::new(stream);
    let sock = match TcpStream::connect((target.0.as_str(), target.1)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("adbd: tcp:{}:{}: {e}", target.1, target.0);
            stream.close();
            return;
        }
    };
    let _ = sock.set_nodelay(true);
    let mut to_sock = match sock.try_clone() {
        Ok(s) => s,
        Err(_) => {
            stream.close();
            return;
        }
    };
    // Host → socket on its own thread; socket → host here.
    let s2 = stream.clone();
    let writer = std::thread::spawn(move || {
        while let Some(data) = s2.recv() {
            if to_sock.write_all(&data).is_err() {
                break;
            }
        }
        let _ = to_sock.shutdown(std::net::Shutdown::Write);
    });
    let mut from_sock = sock;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from_sock.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.send(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from_sock.shutdown(std::net::Shutdown::Both);
    stream.close();
    let _ = writer.join();
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
