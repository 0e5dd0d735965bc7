//! What the VP's FUSE devices share (its `/sys/power` and its
//! `/dev/input`): the mount made by the monitor on its own tmpfs, and the
//! owners and modes of their files, which VP root may change (Android's
//! init and ueventd chown and chmod them).

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use fuser::{FileAttr, FileType, INodeNo};
use nix::mount::MsFlags;

/// Mount a FUSE file system named `fsname` at `dir` (made if missing) on a
/// new /dev/fuse fd, which is returned for the session. `allow_other`: the
/// VP's processes are other users (in another user namespace);
/// `default_permissions`: the kernel checks modes and owners.
pub fn mount(dir: &Path, fsname: &str) -> std::io::Result<OwnedFd> {
    std::fs::create_dir_all(dir)?;
    let dev: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/fuse")
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("open /dev/fuse (load the fuse module: modprobe fuse): {e}"),
            )
        })?
        .into();
    let data = format!(
        "fd={},rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions",
        dev.as_raw_fd()
    );
    nix::mount::mount(
        Some(fsname),
        dir,
        Some("fuse"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(data.as_str()),
    )
    .map_err(|e| std::io::Error::other(format!("mount {fsname} on {}: {e}", dir.display())))?;
    Ok(dev)
}

/// How often a monitor looks whether a task waiting in a blocking read of
/// its FUSE devices is being killed.
pub const KILLED_READERS_PERIOD: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether thread `tid` (as the monitor sees it: the FUSE request's pid)
/// has SIGKILL pending, i.e. it is being killed: by a fatal signal (the
/// kernel turns one into SIGKILL for every thread), by `kill -9`, or by its
/// pid namespace's end. fuser does not pass on FUSE_INTERRUPT (it answers
/// ENOSYS, and the kernel then sends none), and the kernel waits for the
/// answer to a request it already handed over, even for a task being
/// killed: without an answer such a task never ends, nor then its VP. So
/// the devices answer a blocked read of such a task with EINTR themselves.
pub fn being_killed(tid: u32) -> bool {
    const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        // Gone (or not ours to see): nobody waits for the answer any more.
        return true;
    };
    status.lines().any(|l| {
        l.strip_prefix("SigPnd:")
            .or_else(|| l.strip_prefix("ShdPnd:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .is_some_and(|mask| mask & SIGKILL_BIT != 0)
    })
}

#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    pub mode: u16,
}

/// The owner and mode of every inode (inode 1 is the root directory).
pub struct Owners(Mutex<BTreeMap<u64, Owner>>);

impl Owners {
    pub fn new(map: BTreeMap<u64, Owner>) -> Self {
        Owners(Mutex::new(map))
    }

    /// A chown/chmod the kernel allowed (default_permissions checked it).
    pub fn set(&self, ino: u64, mode: Option<u32>, uid: Option<u32>, gid: Option<u32>) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = m.get_mut(&ino) {
            if let Some(mode) = mode {
                o.mode = (mode & 0o7777) as u16;
            }
            if let Some(u) = uid {
                o.uid = u;
            }
            if let Some(g) = gid {
                o.gid = g;
            }
        }
    }

    /// The attributes of `ino` (a directory if it is the root), `size` bytes.
    pub fn attr(&self, ino: u64, size: u64) -> Option<FileAttr> {
        let o = *self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&ino)?;
        let dir = ino == 1;
        let t = SystemTime::UNIX_EPOCH;
        Some(FileAttr {
            ino: INodeNo(ino),
            size: if dir { 0 } else { size },
            blocks: 0,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: if dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: o.mode,
            nlink: if dir { 2 } else { 1 },
            uid: o.uid,
            gid: o.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }
}
