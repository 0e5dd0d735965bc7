//! A VP's disk: its writable layer and /data on a file system of their own,
//! so that a VP's disk use is bounded (`cellctl create --disk SIZE`).
//!
//! This host's state file system (ext4 on `/`) has no project quotas, so
//! each VP gets a sparse ext4 image, `vps/NAME/disk.img`, made at create
//! (mkfs.ext4 with the VP's folders, owned as on the host). Its monitor
//! attaches it to a loop device (autoclear) and mounts it in the monitor's
//! private mount namespace, so the mount (and the loop device) go away with
//! the monitor whatever happens, and nothing is mounted on the host. A
//! full VP gets ENOSPC; the host's file system only holds the image, which
//! never grows past SIZE. ext4's journal keeps what was acknowledged
//! (fsync) through a crash; the next mount replays it.

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// The image in `vps/NAME`.
pub const IMAGE_FILE: &str = "disk.img";
/// Smallest disk accepted (the journal and metadata take a few MiB).
pub const MIN_DISK: u64 = 64 << 20;
/// Default disk of a VP: 8 GiB (sparse: only what the VP writes is used on
/// the host). A phone persona's apps and data fit; a runaway writer stops.
pub const DEFAULT_DISK: u64 = 8 << 30;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(
        "mkfs.ext4 is not installed: install Debian's e2fsprogs, or create the VP with --disk none"
    )]
    NoMkfs,
    #[error("making the VP's disk image {path}: {msg}")]
    Mkfs { path: PathBuf, msg: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no free loop device for {0} (is the loop module loaded? `modprobe loop`)")]
    NoLoop(PathBuf),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DiskError + 'a {
    move |source| DiskError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What the monitor mounts before it builds the VP's root.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DiskRequest {
    pub image: PathBuf,
    /// Where it is mounted (in the monitor's namespace): the VP's upper,
    /// work and data folders are below it.
    pub mountpoint: PathBuf,
}

pub fn mkfs_available() -> bool {
    find_mkfs().is_some()
}

fn find_mkfs() -> Option<PathBuf> {
    [
        "/usr/sbin/mkfs.ext4",
        "/sbin/mkfs.ext4",
        "/usr/bin/mkfs.ext4",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// Make a sparse ext4 image of `size` bytes at `image` holding a copy of
/// the folder `seed` (its entries with their owners and modes).
pub fn make_image(image: &Path, size: u64, seed: &Path) -> Result<(), DiskError> {
    let mkfs = find_mkfs().ok_or(DiskError::NoMkfs)?;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(image)
        .map_err(io("create", image))?;
    f.set_len(size).map_err(io("size", image))?;
    drop(f);
    let out = Command::new(mkfs)
        .args(["-q", "-F", "-t", "ext4", "-J", "size=4", "-m", "0"])
        .args([
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0",
        ])
        .arg("-d")
        .arg(seed)
        .arg(image)
        .env("MKE2FS_SYNC", "0")
        .output()
        .map_err(io("run mkfs.ext4 for", image))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(image);
        return Err(DiskError::Mkfs {
            path: image.to_path_buf(),
            msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    std::fs::File::open(image)
        .and_then(|f| f.sync_all())
        .map_err(io("sync", image))
}

// linux/loop.h
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Attach `image` to a free loop device (detached by the kernel when its
/// last user, the mount, goes) and mount it at `mountpoint` (nosuid, nodev).
pub fn mount(req: &DiskRequest) -> Result<(), DiskError> {
    let image = &req.image;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(image)
        .map_err(io("open", image))?;
    let ctl = std::fs::File::open("/dev/loop-control")
        .map_err(io("open", Path::new("/dev/loop-control")))?;
    let mut dev = None;
    for _ in 0..16 {
        // SAFETY: an ioctl without arguments on /dev/loop-control.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(io("LOOP_CTL_GET_FREE", Path::new("/dev/loop-control"))(
                std::io::Error::last_os_error(),
            ));
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let Ok(loopdev) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        else {
            continue;
        };
        // SAFETY: the struct is plain data; zeroes are its defaults.
        let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
        cfg.fd = file.as_raw_fd() as u32;
        // Direct I/O: the image's blocks are cached once, by the VP's ext4,
        // not a second time in the host's page cache (the kernel falls back
        // to buffered I/O where the host file system cannot do direct I/O).
        // The block size is left to the kernel: a small image has 1 KiB
        // file system blocks, which a forced 4 KiB would refuse to mount.
        cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO;
        // SAFETY: LOOP_CONFIGURE with a valid loop_config on a loop device.
        let r = unsafe { libc::ioctl(loopdev.as_raw_fd(), LOOP_CONFIGURE as _, &cfg) };
        if r == 0 {
            dev = Some((path, loopdev));
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(io("LOOP_CONFIGURE", &path)(e));
        }
        // Someone else took it between GET_FREE and CONFIGURE: next one.
    }
    let Some((path, loopdev)) = dev else {
        return Err(DiskError::NoLoop(image.clone()));
    };
    std::fs::create_dir_all(&req.mountpoint).map_err(io("mkdir", &req.mountpoint))?;
    let ext4 = |opts: &str| {
        nix::mount::mount(
            Some(path.as_path()),
            &req.mountpoint,
            Some("ext4"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(opts),
        )
    };
    // discard: what the VP deletes is given back to the host's file system
    // (holes punched in the sparse image). no_prefetch_block_bitmaps: the
    // kernel would read every group's bitmap in the background after each
    // mount (CPU at every start, nothing gained on a mostly empty disk);
    // kernels before 5.9 do not know the option.
    let r = match ext4("errors=remount-ro,discard,no_prefetch_block_bitmaps") {
        Err(nix::errno::Errno::EINVAL) => ext4("errors=remount-ro,discard"),
        r => r,
    };
    // The mount holds the loop device now; with autoclear it is detached
    // when the mount goes (or now, if the mount failed).
    drop(loopdev);
    r.map_err(|e| io("mount the VP's disk", &req.mountpoint)(e.into()))
}

/// Copy `src` to a new file `dst` (mode 0600) keeping its holes: only the
/// extents with data are read and written (SEEK_DATA/SEEK_HOLE, then
/// copy_file_range, which the file system may do without moving the
/// bytes). Returns the bytes of data copied. `dst` is synced.
pub fn copy_sparse(src: &Path, dst: &Path) -> Result<u64, DiskError> {
    let from = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(src)
        .map_err(io("open", src))?;
    let len = from.metadata().map_err(io("stat", src))?.len();
    let to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dst)
        .map_err(io("create", dst))?;
    to.set_len(len).map_err(io("size", dst))?;
    let mut copied = 0u64;
    let mut pos = 0i64;
    while (pos as u64) < len {
        // SAFETY: lseek on our own open file.
        let data = unsafe { libc::lseek(from.as_raw_fd(), pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole is left
            }
            return Err(io("seek data in", src)(e));
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(from.as_raw_fd(), data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io("seek a hole in", src)(std::io::Error::last_os_error()));
        }
        let mut off_in = data;
        let mut off_out = data;
        while off_in < hole {
            let want = (hole - off_in) as usize;
            // SAFETY: copy_file_range between our own open files, with
            // offsets of our own.
            let n = unsafe {
                libc::copy_file_range(
                    from.as_raw_fd(),
                    &mut off_in,
                    to.as_raw_fd(),
                    &mut off_out,
                    want.min(1 << 30),
                    0,
                )
            };
            if n < 0 {
                return Err(io("copy", src)(std::io::Error::last_os_error()));
            }
            if n == 0 {
                break; // the file shrank under us
            }
            copied += n as u64;
        }
        pos = hole;
    }
    to.sync_all().map_err(io("sync", dst))?;
    Ok(copied)
}
