//! adbd for cells VPs: the device side of the Android Debug Bridge, so the
//! stock `adb` client drives a VP as it drives a phone.
//!
//! - [`protocol`]: the transport messages (CNXN, OPEN, OKAY, WRTE, CLSE);
//! - [`transport`]: one host connection, its streams and their flow control;
//! - [`shell`]: `shell:` (v1), `shell,v2,...:` (shell protocol v2 with the
//!   exit status) and `exec:`;
//! - [`sync`]: `sync:` (push, pull, stat, list);
//! - [`tcp`]: `tcp:PORT[:HOST]`, the device side of `adb forward tcp:X tcp:Y`;
//! - [`local`]: `localabstract:`, `localreserved:`, `localfilesystem:`;
//! - [`reverse`]: `reverse:` (`adb reverse`), streams the device opens;
//! - [`device`]: `framebuffer:`, `root:`, `unroot:`, `remount:`, `reboot:`.
//!
//! - [`auth`]: adb's AUTH: only hosts whose key is in the VP's authorized
//!   keys (`cellctl adb VP --authorize`) get in, as on a `ro.adb.secure=1`
//!   phone. The daemon listens on the VP's own loopback; cellsd forwards a
//!   host loopback port to it.

pub mod auth;
pub mod device;
pub mod local;
pub mod protocol;
pub mod relay;
pub mod reverse;
pub mod shell;
pub mod sync;
pub mod tcp;
pub mod transport;

use std::sync::Arc;
use transport::{Services, Stream, StreamIo};

/// The services this daemon offers, for [`transport::serve_connection`].
pub fn services(shell_path: String) -> Services {
    Arc::new(
        move |name: &str| -> Option<Box<dyn FnOnce(Stream) + Send>> {
            if name == "sync:" {
                return Some(Box::new(|stream: Stream| {
                    let mut io = StreamIo::new(&stream);
                    if let Err(e) = sync::serve(&mut io) {
                        eprintln!("adbd: sync: {e}");
                    }
                    drop(io);
                    stream.close();
                }));
            }
            if let Some(target) = tcp::parse_service(name) {
                return Some(Box::new(move |stream: Stream| tcp::run(&target, stream)));
            }
            if let Some(target) = local::Local::parse(name) {
                return Some(Box::new(move |stream: Stream| local::run(&target, stream)));
            }
            if let Some(cmd) = name.strip_prefix("reverse:") {
                let cmd = cmd.to_string();
                return Some(Box::new(move |stream: Stream| reverse::run(&cmd, stream)));
            }
            if name == "framebuffer:" {
                return Some(Box::new(device::framebuffer));
            }
            if name.starts_with("reboot:") {
                return Some(Box::new(device::reboot));
            }
            if let Some(reply) = device::answer(name) {
                return Some(Box::new(move |stream: Stream| device::text(reply, stream)));
            }
            let req = shell::parse_service(name)?;
            let sh = shell_path.clone();
            Some(Box::new(move |stream: Stream| shell::run(&sh, req, stream)))
        },
    )
}
