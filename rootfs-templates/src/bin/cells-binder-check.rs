//! cells-binder-check: is /dev/binder this VP's own?
//!
//! Opens /dev/binder, asks its protocol version, maps it as binder users
//! must, and becomes its context manager (what Android's servicemanager
//! does). Only one process per binder device can be context manager, so this
//! succeeds in every VP at once only if no two VPs share a device.
//! Prints `binder version N; context manager: ok` and exits 0, or says what
//! failed and exits 1.

use std::os::fd::AsRawFd;

const BINDER_VERSION: libc::c_ulong = 0xc004_6209; // _IOWR('b', 9, struct binder_version)
const BINDER_SET_CONTEXT_MGR: libc::c_ulong = 0x4004_6207; // _IOW('b', 7, __s32)

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/dev/binder".to_string());
    let dev = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => {
            println!("{path}: {e}");
            std::process::exit(1);
        }
    };
    let fd = dev.as_raw_fd();
    let mut version: i32 = 0;
    // SAFETY: BINDER_VERSION writes one s32.
    if unsafe { libc::ioctl(fd, BINDER_VERSION, &mut version) } != 0 {
        println!(
            "{path}: BINDER_VERSION: {}",
            std::io::Error::last_os_error()
        );
        std::process::exit(1);
    }
    // SAFETY: mapping the binder buffer read-only, as libbinder does.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            128 * 1024,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            fd,
            0,
        )
    };
    if map == libc::MAP_FAILED {
        println!("{path}: mmap: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    // SAFETY: BINDER_SET_CONTEXT_MGR takes an s32 by value.
    let r = unsafe { libc::ioctl(fd, BINDER_SET_CONTEXT_MGR, 0 as libc::c_int) };
    if r != 0 {
        println!(
            "binder version {version}; context manager: {}",
            std::io::Error::last_os_error()
        );
        std::process::exit(1);
    }
    println!("binder version {version}; context manager: ok");
}
