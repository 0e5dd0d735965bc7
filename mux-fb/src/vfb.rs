//! A VP's virtual framebuffer in userspace mode: a file of one frame
//! (XRGB8888, the panel's geometry) on a tmpfs, bind-mounted into the VP as
//! /dev/fb0 and /dev/graphics/fb0, and mapped shared by cellsd to compose.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use crate::geometry::Geometry;

/// Map `len` bytes of `fd` read-write and shared (a framebuffer file or
/// device). The caller unmaps it and keeps accesses within `len`.
pub(crate) fn map_shared(fd: &OwnedFd, len: usize) -> io::Result<*mut u8> {
    // SAFETY: a fresh mapping chosen by the kernel; nothing is accessed here.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(map.cast())
}

pub struct VirtualFb {
    geometry: Geometry,
    map: *mut u8,
    _fd: OwnedFd,
}

// SAFETY: the mapping is shared memory that other processes (the VP) write
// at any time anyway; this type only hands out raw copies of it.
unsafe impl Send for VirtualFb {}
// SAFETY: as above.
unsafe impl Sync for VirtualFb {}

impl VirtualFb {
    /// Create the framebuffer file (zero-filled: black) and map it.
    pub fn create(path: &Path, geometry: Geometry) -> io::Result<Self> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        f.set_len(geometry.size() as u64)?;
        Self::from_fd(OwnedFd::from(f), geometry)
    }

    /// Map an open framebuffer file.
    pub fn from_fd(fd: OwnedFd, geometry: Geometry) -> io::Result<Self> {
        let len = std::fs::File::from(fd.try_clone()?).metadata()?.len();
        if len < geometry.size() as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "framebuffer file is {len} bytes, {} expected",
                    geometry.size()
                ),
            ));
        }
        // The file holds the size checked above.
        let map = map_shared(&fd, geometry.size())?;
        Ok(Self {
            geometry,
            map,
            _fd: fd,
        })
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The current contents. The VP may be writing them at the same time
    /// (as with any framebuffer without page flipping).
    pub fn pixels(&self) -> &[u8] {
        // SAFETY: the mapping is geometry.size() bytes and lives as long as self.
        unsafe { std::slice::from_raw_parts(self.map, self.geometry.size()) }
    }

    /// Write access, for drawing from the host (tests, the persona of a test).
    #[allow(clippy::mut_from_ref)]
    pub fn pixels_mut(&self) -> &mut [u8] {
        // SAFETY: as above; concurrent writers are the nature of a framebuffer.
        unsafe { std::slice::from_raw_parts_mut(self.map, self.geometry.size()) }
    }
}

impl Drop for VirtualFb {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping once.
        unsafe { libc::munmap(self.map.cast(), self.geometry.size()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Rgb;

    #[test]
    fn two_mappings_share_memory() {
        let p = std::env::temp_dir().join(format!("vfb-{}", std::process::id()));
        let g = Geometry::new(32, 16);
        let a = VirtualFb::create(&p, g).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        let b = VirtualFb::from_fd(OwnedFd::from(f), g).unwrap();
        crate::draw::fill(a.pixels_mut(), &g, Rgb(0x00ff00));
        assert_eq!(Rgb::read(b.pixels(), g.offset(31, 15)), Rgb(0x00ff00));
        let short = std::fs::File::create(p.with_extension("short")).unwrap();
        assert!(VirtualFb::from_fd(OwnedFd::from(short), g).is_err());
        let _ = std::fs::remove_file(p.with_extension("short"));
        std::fs::remove_file(&p).unwrap();
    }
}
