//! The VP's own framebuffer, as programs inside the VP see it:
//! `/dev/graphics/fb0` (Android's path) or `/dev/fb0`, whether the VP is in
//! the foreground or not (a background VP keeps drawing into its own).
//!
//! The geometry comes from the fbdev ioctls where they work (a real device,
//! the mux_fb kernel module), else from `/dev/graphics/fb0.info`
//! (userspace mode). Pixels are XRGB8888 (bytes B, G, R, X).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use mux_fb::fbabi;
use mux_fb::geometry::{parse_info, Geometry};

pub const FB_PATHS: &[&str] = &["/dev/graphics/fb0", "/dev/fb0"];
pub const FB_INFO: &str = "/dev/graphics/fb0.info";

/// One mapping of a framebuffer's first frame.
pub struct Framebuffer {
    pub g: Geometry,
    pub path: String,
    map: *mut u8,
    writable: bool,
    fd: OwnedFd,
}

impl Framebuffer {
    /// The VP's framebuffer, mapped for reading and (if `write`) writing.
    pub fn open(write: bool) -> Result<Self, String> {
        Self::open_any(FB_PATHS, write)
    }

    /// The first of `paths` that opens and maps.
    pub fn open_any(paths: &[&str], write: bool) -> Result<Self, String> {
        let mut last = String::from("no framebuffer");
        for p in paths {
            match Self::open_path(p, write) {
                Ok(fb) => return Ok(fb),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    pub fn open_path(p: &str, write: bool) -> Result<Self, String> {
        let c = std::ffi::CString::new(p).map_err(|e| e.to_string())?;
        let mode = if write { libc::O_RDWR } else { libc::O_RDONLY };
        // SAFETY: open with a valid path.
        let fd = unsafe { libc::open(c.as_ptr(), mode | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(format!("{p}: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: a fresh fd.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let g = match fbabi::screen_info(fd.as_raw_fd()) {
            Some((var, fix)) if var.bits_per_pixel == 32 => Geometry {
                width: var.xres,
                height: var.yres,
                stride: fix.line_length,
            },
            Some((var, _)) => return Err(format!("{p}: {} bpp, need 32", var.bits_per_pixel)),
            None => std::fs::read_to_string(FB_INFO)
                .ok()
                .and_then(|t| parse_info(&t))
                .ok_or_else(|| format!("{p}: no fbdev ioctls and no readable {FB_INFO}"))?,
        };
        let prot = if write {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: mapping one frame of the framebuffer, shared.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                g.size(),
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(format!("mmap {p}: {}", std::io::Error::last_os_error()));
        }
        Ok(Self {
            g,
            path: p.to_string(),
            map: map.cast(),
            writable: write,
            fd,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The frame to draw into (the VP's own app: it alone draws here).
    /// None if it was opened read-only.
    pub fn pixels_mut(&mut self) -> Option<&mut [u8]> {
        if !self.writable {
            return None;
        }
        // SAFETY: the mapping is g.size() writable bytes and lives as long
        // as self; &mut self makes this the only slice of it we hand out.
        Some(unsafe { std::slice::from_raw_parts_mut(self.map, self.g.size()) })
    }

    /// A copy of the frame (XRGB8888 with the framebuffer's stride). Read
    /// word by word as volatile: the VP's apps draw into it meanwhile.
    pub fn snapshot(&self) -> Vec<u8> {
        let size = self.g.size();
        let words = size / 8;
        let mut out = vec![0u8; size];
        let src = self.map as *const u64;
        for (i, chunk) in out.chunks_exact_mut(8).take(words).enumerate() {
            // SAFETY: i < size / 8 and the mapping is page aligned (so u64
            // aligned) and size bytes long.
            let w = unsafe { std::ptr::read_volatile(src.add(i)) };
            chunk.copy_from_slice(&w.to_ne_bytes());
        }
        for (i, b) in out.iter_mut().enumerate().skip(words * 8) {
            // SAFETY: i < size: inside the mapping.
            *b = unsafe { std::ptr::read_volatile(self.map.add(i)) };
        }
        out
    }
}

impl Drop for Framebuffer {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping of g.size() bytes.
        unsafe { libc::munmap(self.map.cast(), self.g.size()) };
    }
}

/// RGBA8888 rows (no padding) of an XRGB8888 frame: Android's screencap
/// raw format and the `framebuffer:` service's pixels. Alpha is opaque.
pub fn to_rgba(frame: &[u8], g: &Geometry) -> Vec<u8> {
    let mut out = Vec::with_capacity(g.width as usize * g.height as usize * 4);
    for y in 0..g.height {
        let Some(row) = frame.get(g.offset(0, y)..g.offset(g.width, y)) else {
            break;
        };
        for px in row.chunks_exact(4) {
            out.extend_from_slice(&[px[2], px[1], px[0], 0xff]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgba_swaps_blue_and_red_and_drops_padding() {
        let g = Geometry {
            width: 2,
            height: 1,
            stride: 12,
        };
        let frame = [1, 2, 3, 0, 4, 5, 6, 0, 9, 9, 9, 9];
        assert_eq!(to_rgba(&frame, &g), vec![3, 2, 1, 255, 6, 5, 4, 255]);
    }
}
