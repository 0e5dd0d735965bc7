//! `adbd` of a VP (`/system/bin/adbd`, started by the VP's init from
//! services.d). Listens on TCP 5555 in the VP's network namespace.
//!
//! ```text
//! adbd [--port 5555] [--listen 0.0.0.0] [--shell /system/bin/sh] [--keys /dev/adb/adb_keys]
//! ```
//!
//! Only hosts whose key is in the keys file get in (adb's AUTH); cells
//! keeps that file with the VP (`cellctl adb VP --authorize`) and binds it
//! read-only into the VP. A host has 60 s to authenticate.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::Arc;

use cells_adbd::auth::Keys;
use cells_adbd::transport::{serve_connection, Auth, DeviceInfo};
use cells_templates::props::PropStore;

struct Args {
    addr: SocketAddr,
    shell: String,
    keys: std::path::PathBuf,
}

/// Where cells binds the VP's authorized keys.
const KEYS: &str = "/dev/adb/adb_keys";
/// How long a host may take to authenticate.
const AUTH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

fn parse_args() -> Result<Args, String> {
    let mut port: u16 = 5555;
    let mut ip: IpAddr = IpAddr::from([0, 0, 0, 0]);
    let mut shell = ["/system/bin/sh", "/bin/sh"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("/bin/sh")
        .to_string();
    let mut keys = std::path::PathBuf::from(KEYS);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = |what: &str| it.next().ok_or(format!("{what} needs a value"));
        match a.as_str() {
            "--port" => {
                let v = val("--port")?;
                port = v
                    .parse()
                    .map_err(|_| format!("--port {v:?} is not a port number (1-65535)"))?;
            }
            "--listen" => {
                let v = val("--listen")?;
                ip = v
                    .parse()
                    .map_err(|_| format!("--listen {v:?} is not an IP address"))?;
            }
            "--shell" => shell = val("--shell")?,
            "--keys" => keys = val("--keys")?.into(),
            "-h" | "--help" => {
                println!("usage: adbd [--port 5555] [--listen 0.0.0.0] [--shell /system/bin/sh] [--keys {KEYS}]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(Args {
        addr: SocketAddr::new(ip, port),
        shell,
        keys,
    })
}

fn device_info() -> DeviceInfo {
    let props = PropStore::default();
    let host = nix_hostname();
    let get = |k: &str, d: &str| {
        props
            .get(k)
            .filter(|v| !v.is_empty())
            .unwrap_or(d.to_string())
    };
    DeviceInfo {
        name: get("ro.product.name", &host),
        model: get("ro.product.model", &host),
        device: get("ro.product.device", "cells"),
    }
}

fn nix_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "cells".to_string())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("adbd: {e}");
            std::process::exit(2);
        }
    };
    // A host that goes away mid-write must not kill the daemon.
    // SAFETY: setting a signal disposition.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let listener = match TcpListener::bind(args.addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("adbd: listen on {}: {e}", args.addr);
            std::process::exit(1);
        }
    };
    eprintln!("adbd: listening on {}", args.addr);
    let services = cells_adbd::services(args.shell);
    let services = Arc::clone(&services);
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                eprintln!("adbd: accept: {e}");
                continue;
            }
        };
        let _ = conn.set_nodelay(true);
        let services = services.clone();
        // Read the banner's properties per connection: setprop may change
        // ro.* only once, but the daemon may start before they are set.
        let info = device_info();
        let keys = args.keys.clone();
        std::thread::spawn(move || {
            let peer = conn.peer_addr().ok();
            let writer = match conn.try_clone() {
                Ok(w) => w,
                Err(e) => {
                    eprintln!("adbd: {e}");
                    return;
                }
            };
            // Until it is authenticated, a silent host is dropped.
            let _ = conn.set_read_timeout(Some(AUTH_DEADLINE));
            let lift = writer.try_clone().ok();
            let connected = move || {
                if let Some(s) = &lift {
                    let _ = s.set_read_timeout(None);
                }
            };
            let auth = Auth {
                keys: Some(Keys::File(keys)),
                connected: &connected,
            };
            if let Err(e) = serve_connection(conn, writer, &info, services, &auth) {
                eprintln!("adbd: connection from {peer:?}: {e}");
            }
        });
    }
}
