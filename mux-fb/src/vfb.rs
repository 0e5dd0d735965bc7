//! A VP's virtual framebuffer in userspace mode: a file of one frame
//! (XRGB8888, the panel's geometry) on a tmpfs, bind-mounted into the VP as
//! /dev/fb0 and /dev/graphics/fb0.
//!
//! The VP owns that file and may do anything to it at any time: draw,
//! truncate it to nothing, grow it, punch holes, chmod it. cellsd reads it
//! through a guarded mapping ([`crate::shm::SharedMap`]: copied out, never
//! handed out as a slice; a truncation under it reads black instead of
//! raising SIGBUS), and while the file is shorter than a frame with
//! `pread(2)`, so what it still has shows and the rest reads black.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use crate::geometry::Geometry;
use crate::shm::SharedMap;

/// Map `len` bytes of `fd` read-write and shared (the real panel's video
/// memory). The caller unmaps it and keeps accesses within `len`.
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

/// One VP's framebuffer file, read (and, for host-side drawing in tests,
/// written) through its fd only.
pub struct VirtualFb {
    geometry: Geometry,
    fd: OwnedFd,
    /// The file mapped (None: no guard slot free, or mmap failed; then
    /// every read is a pread).
    map: Option<SharedMap>,
}

impl VirtualFb {
    /// Create the framebuffer file (zero-filled: black).
    pub fn create(path: &Path, geometry: Geometry) -> io::Result<Self> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        f.set_len(geometry.size() as u64)?;
        Ok(Self::from_fd(OwnedFd::from(f), geometry))
    }

    /// An open framebuffer file (whatever its size now: the VP may change it).
    pub fn from_fd(fd: OwnedFd, geometry: Geometry) -> Self {
        let map = SharedMap::map(&fd, geometry.size()).ok().flatten();
        Self { geometry, fd, map }
    }

    /// The file's size now.
    fn file_len(&self) -> usize {
        // SAFETY: fstat into a zeroed stat of our own.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(self.fd.as_raw_fd(), &mut st) != 0 {
                return 0;
            }
            st.st_size as usize
        }
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Copy the current frame into `out` (one frame long). The VP may be
    /// drawing at the same time, as with any framebuffer without page
    /// flipping; what the file lacks (it was truncated) reads as black.
    /// Errors (an fd that cannot be read) also leave black.
    pub fn read_into(&self, out: &mut [u8]) {
        self.read_at(0, out);
    }

    /// Copy `out.len()` bytes of the frame from byte `offset` into `out`
    /// (a band of rows); as [`VirtualFb::read_into`], what the file lacks
    /// reads as black, and nothing past the frame is read.
    pub fn read_at(&self, offset: usize, out: &mut [u8]) {
        if let Some(m) = &self.map {
            // Cut short before: whole again? Then mapped anew.
            let usable = !m.poisoned()
                || (self.file_len() >= self.geometry.size() && m.remap(&self.fd).is_ok());
            if usable {
                m.copy_out(offset, out);
                if !m.poisoned() {
                    return;
                }
                // Cut short during this copy: read what the file still has.
            }
        }
        self.pread_at(offset, out);
    }

    fn pread_at(&self, offset: usize, out: &mut [u8]) {
        let len = out.len().min(self.geometry.size().saturating_sub(offset));
        let mut done = 0;
        while done < len {
            // SAFETY: pread into our own buffer, within its length.
            let n = unsafe {
                libc::pread(
                    self.fd.as_raw_fd(),
                    out[done..len].as_mut_ptr().cast(),
                    len - done,
                    (offset + done) as libc::off_t,
                )
            };
            match n {
                n if n > 0 => done += n as usize,
                -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                _ => break, // end of a truncated file, or an error
            }
        }
        out[done..].fill(0);
    }

    /// The current frame, copied.
    pub fn frame(&self) -> Vec<u8> {
        let mut v = vec![0; self.geometry.size()];
        self.read_into(&mut v);
        v
    }

    /// Write a whole frame into the file (drawing from the host: tests,
    /// benchmarks).
    pub fn write_frame(&self, frame: &[u8]) -> io::Result<()> {
        let f = std::fs::File::from(self.fd.try_clone()?);
        std::os::unix::fs::FileExt::write_all_at(&f, frame, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Rgb;

    #[test]
    fn two_handles_share_the_file() {
        let p = std::env::temp_dir().join(format!("vfb-{}", std::process::id()));
        let g = Geometry::new(32, 16);
        let a = VirtualFb::create(&p, g).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        let b = VirtualFb::from_fd(OwnedFd::from(f), g);
        let mut frame = vec![0; g.size()];
        crate::draw::fill(&mut frame, &g, Rgb(0x00ff00));
        a.write_frame(&frame).unwrap();
        assert_eq!(Rgb::read(&b.frame(), g.offset(31, 15)), Rgb(0x00ff00));
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn a_truncated_or_grown_file_is_read_safely() {
        let p = std::env::temp_dir().join(format!("vfb-trunc-{}", std::process::id()));
        let g = Geometry::new(16, 16);
        let v = VirtualFb::create(&p, g).unwrap();
        let mut frame = vec![0; g.size()];
        crate::draw::fill(&mut frame, &g, Rgb(0xffffff));
        v.write_frame(&frame).unwrap();
        // What a VP can do to its own file: cut it in half, then to nothing.
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(g.size() as u64 / 2).unwrap();
        let got = v.frame();
        assert_eq!(Rgb::read(&got, 0), Rgb(0xffffff));
        assert_eq!(
            Rgb::read(&got, g.size() - 4),
            Rgb(0),
            "past the end reads black"
        );
        f.set_len(0).unwrap();
        assert!(v.frame().iter().all(|b| *b == 0));
        // Grown far past a frame: only one frame is read.
        f.set_len(64 << 20).unwrap();
        assert_eq!(v.frame().len(), g.size());
        std::fs::remove_file(&p).unwrap();
    }
}
