//! The mux_fb kernel module (mux-fb/kernel/) from userspace: its control
//! node /dev/mux_fb, through which the root namespace makes VP framebuffer
//! devices and chooses the foreground. With the module loaded a VP's
//! /dev/fb0 is a real fbdev device (all fbdev ioctls work) and the kernel
//! does the multiplexing; cellsd's compositor is not used.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub const CTL_PATH: &str = "/dev/mux_fb";

// _IOR('M', 1, __u32), _IOW('M', 2, __u32), _IOW('M', 3, __s32), _IOR('M', 4, __s32)
const MUXFB_IOC_CREATE: libc::c_ulong = 0x8004_4d01;
const MUXFB_IOC_DESTROY: libc::c_ulong = 0x4004_4d02;
const MUXFB_IOC_SET_FG: libc::c_ulong = 0x4004_4d03;
const MUXFB_IOC_GET_FG: libc::c_ulong = 0x8004_4d04;

/// Is the module loaded?
pub fn available() -> bool {
    Path::new(CTL_PATH).exists()
}

pub struct Control(File);

impl Control {
    pub fn open() -> io::Result<Self> {
        Ok(Self(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(CTL_PATH)?,
        ))
    }

    fn ioctl<T>(&self, req: libc::c_ulong, arg: &mut T) -> io::Result<()> {
        // SAFETY: every request of this device takes a pointer to one 32-bit value.
        if unsafe { libc::ioctl(self.0.as_raw_fd(), req, arg as *mut T) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Make a VP framebuffer; returns N of its /dev/fbN.
    pub fn create(&self) -> io::Result<u32> {
        let mut n: u32 = 0;
        self.ioctl(MUXFB_IOC_CREATE, &mut n)?;
        Ok(n)
    }

    pub fn destroy(&self, n: u32) -> io::Result<()> {
        let mut v = n as i32;
        self.ioctl(MUXFB_IOC_DESTROY, &mut v)
    }

    /// Make framebuffer N the foreground (None: nobody).
    pub fn set_foreground(&self, n: Option<u32>) -> io::Result<()> {
        let mut v = n.map(|n| n as i32).unwrap_or(-1);
        self.ioctl(MUXFB_IOC_SET_FG, &mut v)
    }

    pub fn foreground(&self) -> io::Result<Option<u32>> {
        let mut v: i32 = -1;
        self.ioctl(MUXFB_IOC_GET_FG, &mut v)?;
        Ok((v >= 0).then_some(v as u32))
    }
}

/// The device node of framebuffer N.
pub fn fb_path(n: u32) -> PathBuf {
    PathBuf::from(format!("/dev/fb{n}"))
}

/// Read one whole frame of a framebuffer device with read(2): for a VP
/// device that is the panel when it is foreground, its own buffer otherwise.
pub fn read_frame(path: &Path, size: usize) -> io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; size];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ioctl_numbers_match_the_header() {
        // _IOC(dir, 'M' = 0x4d, nr, 4)
        let ioc =
            |dir: libc::c_ulong, nr: libc::c_ulong| (dir << 30) | (4 << 16) | (0x4d << 8) | nr;
        assert_eq!(super::MUXFB_IOC_CREATE, ioc(2, 1));
        assert_eq!(super::MUXFB_IOC_DESTROY, ioc(1, 2));
        assert_eq!(super::MUXFB_IOC_SET_FG, ioc(1, 3));
        assert_eq!(super::MUXFB_IOC_GET_FG, ioc(2, 4));
    }
}
