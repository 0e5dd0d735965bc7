//! Relaying bytes between an adb stream and a socket (TCP or Unix): what
//! `tcp:`, `localabstract:` and `reverse:` connections do once set up.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use crate::transport::Stream;

/// A connected socket that can be split into a reader and a writer.
pub trait Duplex: Read + Write + Send + Sized + 'static {
    fn split(&self) -> std::io::Result<Self>;
    fn close_write(&self);
    fn close_both(&self);
}

impl Duplex for TcpStream {
    fn split(&self) -> std::io::Result<Self> {
        let _ = self.set_nodelay(true);
        self.try_clone()
    }
    fn close_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
    fn close_both(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}

impl Duplex for UnixStream {
    fn split(&self) -> std::io::Result<Self> {
        self.try_clone()
    }
    fn close_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
    fn close_both(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}

/// Copy both ways until either side closes; then close both.
pub fn relay<S: Duplex>(stream: Stream, sock: S) {
    let stream = Arc::new(stream);
    let mut to_sock = match sock.split() {
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
        to_sock.close_write();
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
    from_sock.close_both();
    stream.close();
    let _ = writer.join();
}
