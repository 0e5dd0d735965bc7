//! Small device services: `framebuffer:` (the VP's own framebuffer, in
//! adb's framebuffer format version 1), `root:`, `unroot:`, `remount:` and
//! `reboot:` (restarts the VP: cellsd starts it again and the host's adb
//! reconnects).

use crate::transport::Stream;
use cells_templates::fb::{to_rgba, Framebuffer};

/// adb's `struct fbinfo` (version 1) for an RGBA8888 frame, then the pixels.
pub fn framebuffer_bytes(rgba: &[u8], width: u32, height: u32) -> Vec<u8> {
    let header: [u32; 13] = [
        1,
        32,
        rgba.len() as u32,
        width,
        height,
        0,  // red offset
        8,  // red length
        16, // blue offset
        8,
        8, // green offset
        8,
        24, // alpha offset
        8,
    ];
    let mut out = Vec::with_capacity(52 + rgba.len());
    for v in header {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(rgba);
    out
}

pub fn framebuffer(stream: Stream) {
    match Framebuffer::open(false) {
        Ok(fb) => {
            let rgba = to_rgba(&fb.snapshot(), &fb.g);
            let _ = stream.send(&framebuffer_bytes(&rgba, fb.g.width, fb.g.height));
        }
        Err(e) => eprintln!("adbd: framebuffer: {e}"),
    }
    stream.close();
}

/// Whether the VP's /system can be written (its root is the VP's own
/// writable layer over the shared read-only template).
fn system_writable() -> bool {
    let c = c"/system";
    // SAFETY: access(2) with a valid NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// The text `root:`, `unroot:` and `remount:` answer.
pub fn answer(service: &str) -> Option<String> {
    Some(match service {
        "root:" => "adbd is already running as root\n".into(),
        "unroot:" => "adbd cannot run as non-root in a cells VP: its root is the VP's own, unprivileged on the host\n".into(),
        s if s.starts_with("remount:") => {
            if system_writable() {
                "remount succeeded\n".into()
            } else {
                "remount failed: the VP's /system is read-only\n".into()
            }
        }
        _ => return None,
    })
}

pub fn text(reply: String, stream: Stream) {
    let _ = stream.send(reply.as_bytes());
    stream.close();
}

pub fn reboot(stream: Stream) {
    stream.close();
    // SAFETY: kill(2) of the VP's init with its reboot signal.
    unsafe { libc::kill(1, cells_templates::toolbox::reboot_signal()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framebuffer_header_is_adbs_v1() {
        let b = framebuffer_bytes(&[1, 2, 3, 255], 1, 1);
        let w: Vec<u32> = b[..52]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(w, vec![1, 32, 4, 1, 1, 0, 8, 16, 8, 8, 8, 24, 8]);
        assert_eq!(&b[52..], &[1, 2, 3, 255]);
    }
}
