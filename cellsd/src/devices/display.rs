//! The display device of a VP: its virtual framebuffer.
//!
//! Userspace mode (this module; the mux_fb kernel module replaces it where it
//! is loaded): the framebuffer is a plain file of one frame on a tmpfs private
//! to the VP's monitor, bind-mounted into the VP as `/dev/graphics/fb0`
//! (Android's path) and `/dev/fb0`. A program maps it shared and draws; cellsd
//! maps the same file and shows it on the panel while the VP is foreground.
//!
//! How a program learns the geometry and format: the fbdev ioctls do not work
//! on a plain file (ENOTTY), so `/dev/graphics/fb0.info` holds it as
//! `key=value` lines:
//!
//! ```text
//! width=720
//! height=1280
//! stride=2880
//! bits_per_pixel=32
//! format=XRGB8888
//! ```
//!
//! XRGB8888 is 32 bits per pixel, little endian: bytes B, G, R, unused.
//! A program should first try FBIOGET_VSCREENINFO/FBIOGET_FSCREENINFO (they
//! work with the kernel module and on real devices) and fall back to the
//! info file, as the persona app does.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use mux_fb::geometry::info_text;
use mux_fb::Geometry;

pub const VP_FB_PATHS: &[&str] = &["/dev/graphics/fb0", "/dev/fb0"];
pub const VP_FB_INFO: &str = "/dev/graphics/fb0.info";

/// The framebuffer made by a VP's monitor.
pub struct CreatedFb {
    pub file: PathBuf,
    pub info: PathBuf,
    pub fd: OwnedFd,
}

/// Make a VP's framebuffer in `dir` (the monitor's private tmpfs): black,
/// owned by VP root (`owner`), with its info file.
pub fn create(dir: &Path, g: Geometry, owner: Option<u32>) -> io::Result<CreatedFb> {
    let file = dir.join("fb0");
    let info = dir.join("fb0.info");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&file)?;
    f.set_len(g.size() as u64)?;
    std::fs::write(&info, info_text(&g))?;
    for (p, mode) in [(&file, 0o660), (&info, 0o444)] {
        if let Some(id) = owner {
            std::os::unix::fs::chown(p, Some(id), Some(id))?;
        }
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(CreatedFb {
        file,
        info,
        fd: OwnedFd::from(f),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_framebuffer_is_black_and_sized() {
        let dir = std::env::temp_dir().join(format!("fbdev-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let g = Geometry::new(64, 32);
        let fb = create(&dir, g, None).unwrap();
        let data = std::fs::read(&fb.file).unwrap();
        assert_eq!(data.len(), g.size());
        assert!(data.iter().all(|b| *b == 0));
        let vfb = mux_fb::vfb::VirtualFb::from_fd(fb.fd, g).unwrap();
        assert_eq!(vfb.pixels().len(), g.size());
        let info = std::fs::read_to_string(&fb.info).unwrap();
        assert_eq!(mux_fb::geometry::parse_info(&info), Some(g));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
