//! Unix sockets of the device (SERVICES.TXT): `localabstract:NAME` (the
//! abstract namespace, the VP's own: it belongs to the VP's network
//! namespace), `localreserved:NAME` (`/dev/socket/NAME`),
//! `localfilesystem:PATH` and `local:PATH`. `adb forward tcp:X
//! localabstract:NAME` reaches a VP's app this way.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};

use crate::transport::Stream;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    Abstract(String),
    Path(String),
}

impl Local {
    pub fn parse(name: &str) -> Option<Self> {
        let (kind, rest) = name.split_once(':')?;
        if rest.is_empty() || rest.contains('\0') {
            return None;
        }
        Some(match kind {
            "localabstract" => Local::Abstract(rest.to_string()),
            "localreserved" if !rest.contains('/') => Local::Path(format!("/dev/socket/{rest}")),
            "localfilesystem" | "local" => Local::Path(rest.to_string()),
            _ => return None,
        })
    }

    pub fn name(&self) -> String {
        match self {
            Local::Abstract(n) => format!("localabstract:{n}"),
            Local::Path(p) => format!("localfilesystem:{p}"),
        }
    }

    pub fn connect(&self) -> std::io::Result<UnixStream> {
        match self {
            Local::Abstract(n) => UnixStream::connect_addr(&SocketAddr::from_abstract_name(n)?),
            Local::Path(p) => UnixStream::connect(p),
        }
    }

    pub fn listen(&self) -> std::io::Result<UnixListener> {
        match self {
            Local::Abstract(n) => UnixListener::bind_addr(&SocketAddr::from_abstract_name(n)?),
            Local::Path(p) => UnixListener::bind(p),
        }
    }
}

pub fn run(target: &Local, stream: Stream) {
    match target.connect() {
        Ok(sock) => crate::relay::relay(stream, sock),
        Err(e) => {
            eprintln!("adbd: {}: {e}", target.name());
            stream.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            Local::parse("localabstract:chrome_devtools_remote"),
            Some(Local::Abstract("chrome_devtools_remote".into()))
        );
        assert_eq!(
            Local::parse("localreserved:logd"),
            Some(Local::Path("/dev/socket/logd".into()))
        );
        assert_eq!(
            Local::parse("localfilesystem:/data/x.sock"),
            Some(Local::Path("/data/x.sock".into()))
        );
        for bad in ["localabstract:", "localreserved:../x", "tcp:1", "jdwp:1"] {
            assert_eq!(Local::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn abstract_sockets_connect() {
        let l = Local::Abstract(format!("cells-adbd-test-{}", std::process::id()));
        let listener = l.listen().unwrap();
        let _c = l.connect().unwrap();
        assert!(listener.accept().is_ok());
    }
}
