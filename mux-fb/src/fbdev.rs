//! The real panel: a Linux fbdev device (/dev/fbN), its geometry and format
//! from FBIOGET_VSCREENINFO / FBIOGET_FSCREENINFO, its video memory mmap'd.
//!
//! Only XRGB8888 (32 bpp, red at bit 16) is accepted, which is what bochs-drm
//! (the emulator's panel) and most phone panels offer through fbdev.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::fbabi::{self, FbFixScreeninfo, FbVarScreeninfo, FBIOBLANK};
use crate::geometry::{Geometry, BITS_PER_PIXEL};
use crate::panel::Panel;

pub struct FbdevPanel {
    path: PathBuf,
    fd: OwnedFd,
    geometry: Geometry,
    name: String,
    map: *mut u8,
    map_len: usize,
}

// SAFETY: the mapping is owned by this value and only accessed through &self/&mut self.
unsafe impl Send for FbdevPanel {}

impl FbdevPanel {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        let fd = OwnedFd::from(file);
        let (var, fix) = fbabi::screen_info(fd.as_raw_fd()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is not a framebuffer device (FBIOGET_VSCREENINFO failed)",
                    path.display()
                ),
            )
        })?;
        check_format(path, &var)?;
        let geometry = Geometry {
            width: var.xres,
            height: var.yres,
            stride: fix.line_length,
        };
        let map_len = (fix.smem_len as usize).max(geometry.size());
        // The device's video memory, for its whole length.
        let map = crate::vfb::map_shared(&fd, map_len)?;
        Ok(Self {
            path: path.to_path_buf(),
            fd,
            geometry,
            name: fix_id(&fix),
            map,
            map_len,
        })
    }
}

fn fix_id(fix: &FbFixScreeninfo) -> String {
    let end = fix.id.iter().position(|b| *b == 0).unwrap_or(fix.id.len());
    String::from_utf8_lossy(&fix.id[..end]).into_owned()
}

fn check_format(path: &Path, var: &FbVarScreeninfo) -> io::Result<()> {
    if var.bits_per_pixel != BITS_PER_PIXEL || var.red.offset != 16 || var.blue.offset != 0 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "{}: {} bpp with red at bit {} is not supported: cells needs XRGB8888 (32 bpp); set the mode with fbset -depth 32",
                path.display(),
                var.bits_per_pixel,
                var.red.offset
            ),
        ));
    }
    Ok(())
}

impl Panel for FbdevPanel {
    fn geometry(&self) -> Geometry {
        self.geometry
    }
    fn pixels(&self) -> &[u8] {
        // SAFETY: the mapping is map_len >= geometry.size() bytes and lives as long as self.
        unsafe { std::slice::from_raw_parts(self.map, self.geometry.size()) }
    }
    fn pixels_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self gives exclusive access from this process.
        unsafe { std::slice::from_raw_parts_mut(self.map, self.geometry.size()) }
    }
    fn describe(&self) -> String {
        format!(
            "fbdev {} ({}) {}x{}",
            self.path.display(),
            self.name,
            self.geometry.width,
            self.geometry.height
        )
    }
    fn set_blank(&mut self, blank: bool) -> io::Result<()> {
        // FB_BLANK_UNBLANK = 0, FB_BLANK_POWERDOWN = 4.
        let level: libc::c_int = if blank { 4 } else { 0 };
        // SAFETY: FBIOBLANK takes an int argument by value.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), FBIOBLANK, level) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for FbdevPanel {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping once.
        unsafe { libc::munmap(self.map.cast(), self.map_len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_file_is_not_a_framebuffer() {
        let e = match FbdevPanel::open(Path::new("/etc/hostname")) {
            Err(e) => e,
            Ok(_) => panic!("a plain file opened as a framebuffer"),
        };
        assert!(e.to_string().contains("not a framebuffer device"), "{e}");
    }

    #[test]
    fn only_xrgb8888_is_accepted() {
        let mut var = FbVarScreeninfo {
            bits_per_pixel: 16,
            ..Default::default()
        };
        assert!(check_format(Path::new("/dev/fb0"), &var).is_err());
        var.bits_per_pixel = 32;
        var.red.offset = 16;
        assert!(check_format(Path::new("/dev/fb0"), &var).is_ok());
    }
}
