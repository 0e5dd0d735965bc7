//! Thin, safe wrappers over the Linux system calls the runtime needs that
//! neither std nor nix wrap: the new mount API (open_tree, mount_setattr,
//! move_mount), pidfds, pivot_root, raw clone and the capability bounding set.
//!
//! Every wrapper returns `std::io::Result` with the errno of the failed call;
//! callers add context (which path, which VP).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub const OPEN_TREE_CLONE: u32 = 1;
pub const OPEN_TREE_CLOEXEC: u32 = libc::O_CLOEXEC as u32;
pub const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x0000_0004;
pub const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
pub const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
pub const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` from <linux/mount.h>.
#[repr(C)]
#[derive(Debug, Default)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

pub fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Clone the mount at `path` into a new detached mount (`open_tree` with
/// OPEN_TREE_CLONE). The result can be changed with [`mount_setattr`] and
/// attached with [`move_mount`].
pub fn open_tree_clone(path: &Path, recursive: bool) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    let mut flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    // SAFETY: c is a valid NUL-terminated string; the kernel returns a new fd.
    let fd =
        check(unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) })?;
    // SAFETY: the fd was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Set attributes on a detached mount; `userns` is required with
/// MOUNT_ATTR_IDMAP and names the user namespace whose id mapping is applied.
pub fn mount_setattr(
    mount: &OwnedFd,
    attr_set: u64,
    userns: Option<&OwnedFd>,
    recursive: bool,
) -> io::Result<()> {
    let attr = MountAttr {
        attr_set,
        userns_fd: userns.map(|f| f.as_raw_fd() as u64).unwrap_or(0),
        ..Default::default()
    };
    let mut flags = libc::AT_EMPTY_PATH;
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    // SAFETY: attr is a properly laid out struct mount_attr living across the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mount.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })?;
    Ok(())
}

/// Attach a detached mount at `target`.
pub fn move_mount(mount: &OwnedFd, target: &Path) -> io::Result<()> {
    let c = cstr(target)?;
    // SAFETY: both strings are valid for the duration of the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })?;
    Ok(())
}

/// Make the mount at `to` (a mount's root; private) a peer of the shared
/// mount at `from` (a mount of the same file system whose root holds
/// `to`'s): `move_mount(MOVE_MOUNT_SET_GROUP)`, Linux 5.15+. Both may be in
/// different mount namespaces.
pub fn move_mount_set_group(from: &impl AsRawFd, to: &impl AsRawFd) -> io::Result<()> {
    const MOVE_MOUNT_SET_GROUP: libc::c_uint = 0x100;
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    // SAFETY: two open fds and empty strings valid for the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            c"".as_ptr(),
            to.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_SET_GROUP | MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })?;
    Ok(())
}

pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: fresh fd from the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A duplicate, in this process, of fd `target_fd` of the process behind
/// `pidfd` (the same open file description).
pub fn pidfd_getfd(pidfd: &impl AsRawFd, target_fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd =
        check(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target_fd, 0) })?;
    // SAFETY: fresh fd from the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub fn pidfd_send_signal(pidfd: &impl AsRawFd, signal: i32) -> io::Result<()> {
    // SAFETY: null siginfo is allowed and means "as kill(2) would send it".
    check(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })?;
    Ok(())
}

pub fn setns(fd: &impl AsRawFd, nstype: i32) -> io::Result<()> {
    // SAFETY: plain syscall with integer arguments.
    check(unsafe { libc::setns(fd.as_raw_fd(), nstype) } as libc::c_long)?;
    Ok(())
}

pub fn pivot_root(new_root: &Path, put_old: &Path) -> io::Result<()> {
    let a = cstr(new_root)?;
    let b = cstr(put_old)?;
    // SAFETY: both strings are valid for the duration of the call.
    check(unsafe { libc::syscall(libc::SYS_pivot_root, a.as_ptr(), b.as_ptr()) })?;
    Ok(())
}

/// fork(2) as a raw clone with extra namespace flags: the child starts in new
/// namespaces (with CLONE_NEWPID it is pid 1 of the new pid namespace).
///
/// Only call this from a single-threaded process (the re-exec'd helpers):
/// the child continues on a copy of the caller's stack, as after fork.
///
/// # Safety
/// The caller must be single-threaded; in the child only async-signal-safe
/// work should happen until exec or _exit, as after fork(2).
pub unsafe fn clone_process(namespace_flags: libc::c_int) -> io::Result<libc::pid_t> {
    let flags = (namespace_flags | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: a NULL stack makes clone behave like fork (copy-on-write stack).
    let ret = check(unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            0usize,
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0usize,
        )
    })?;
    Ok(ret as libc::pid_t)
}

pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` of clone3(2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Like [`clone_process`], through clone3, placing the child in the v2
/// cgroup open at `cgroup` (CLONE_INTO_CGROUP) as it is created, which costs
/// no cgroup migration.
///
/// # Safety
/// As for [`clone_process`].
pub unsafe fn clone_into_cgroup(
    namespace_flags: libc::c_int,
    cgroup: &impl AsRawFd,
) -> io::Result<libc::pid_t> {
    let args = CloneArgs {
        flags: namespace_flags as u32 as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..Default::default()
    };
    // SAFETY: a zero stack makes clone3 behave like fork; args outlives the call.
    let ret = check(unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    })?;
    Ok(ret as libc::pid_t)
}

/// The highest capability number this kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Drop one capability from the calling thread's bounding set.
pub fn capbset_drop(cap: u32) -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
    if r < 0 {
        let e = io::Error::last_os_error();
        // EINVAL: the kernel does not know this capability; nothing to drop.
        if e.raw_os_error() == Some(libc::EINVAL) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

pub fn capbset_read(cap: u32) -> bool {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) == 1 }
}

/// Process start time (field 22 of /proc/PID/stat, clock ticks since boot):
/// together with the pid it names one process across pid reuse.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; the
    // fields after the last ')' are fixed.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Mark an fd close-on-exec (or not).
pub fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on an fd number; errors are reported.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, new) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Make a character device node `path` with the device number `rdev`
/// (a private copy of a host node, on a tmpfs of the monitor's own).
pub fn mknod_char(path: &Path, rdev: u64, mode: u32) -> io::Result<()> {
    let c = cstr(path)?;
    // SAFETY: mknod with a valid path and integer arguments.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | (mode & 0o7777), rdev) };
    check(r as libc::c_long)?;
    Ok(())
}

/// A private copy of the character device `host` at `private` (on a tmpfs
/// of the monitor's), owned by `owner` with `mode`. The VP gets the copy:
/// whatever VP root does to its node (chmod, chown) stays on the copy, and
/// the host's node keeps its owner and mode.
pub fn private_node(host: &Path, private: &Path, owner: Option<u32>, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(host)?;
    if !meta.file_type().is_char_device() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a character device", host.display()),
        ));
    }
    match std::fs::remove_file(private) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    mknod_char(private, meta.rdev(), mode)?;
    if let Some(id) = owner {
        std::os::unix::fs::lchown(private, Some(id), Some(id))?;
    }
    // mknod applies the umask.
    std::fs::set_permissions(private, std::os::unix::fs::PermissionsExt::from_mode(mode))
}

/// While alive, the calling (single-threaded) process has this effective
/// uid with its file system uid left at 0: processes it creates then own
/// what their effective uid owns (a new user namespace is owned by, and
/// its kernel counts charged to, the effective uid), while file access
/// (cgroup.procs of CLONE_INTO_CGROUP) still works as root. Dropped, it
/// restores effective uid 0 and with it the effective capabilities.
pub struct EuidGuard(());

impl EuidGuard {
    pub fn set(euid: u32) -> io::Result<Self> {
        // SAFETY: setresuid/setfsuid with integer arguments; -1 keeps a value.
        check(unsafe { libc::setresuid(u32::MAX, euid, u32::MAX) } as libc::c_long)?;
        // setfsuid cannot fail when the real uid is 0 and reports no error.
        // SAFETY: as above.
        unsafe { libc::setfsuid(0) };
        Ok(EuidGuard(()))
    }
}

impl Drop for EuidGuard {
    fn drop(&mut self) {
        // SAFETY: back to effective uid 0 (the saved uid is 0); setresuid
        // also sets the file system uid to the effective one.
        unsafe { libc::setresuid(u32::MAX, 0, u32::MAX) };
    }
}

/// A new, empty session keyring for the calling process (owned by its
/// current uid): nothing of the keyring it had is possessed any more.
pub fn join_new_session_keyring() -> io::Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl with a NULL name creates an anonymous keyring.
    check(unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    })?;
    Ok(())
}

/// Mark the calling process non-dumpable: processes of a less privileged
/// user namespace can then neither ptrace it nor open its /proc files.
pub fn set_non_dumpable() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } as libc::c_long)?;
    Ok(())
}

/// Send `fds` with one byte of data over a unix socket (SCM_RIGHTS).
pub fn send_fds(sock: &impl AsRawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let iov = [io::IoSlice::new(data)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None)?;
    Ok(())
}

/// Receive one message of at most `buf.len()` bytes and up to `max_fds`
/// fds (SCM_RIGHTS, close-on-exec). Returns the bytes read and the fds.
pub fn recv_fds(
    sock: &impl AsRawFd,
    buf: &mut [u8],
    max_fds: usize,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut iov = [io::IoSliceMut::new(buf)];
    // CMSG_SPACE of max_fds ints: header plus payload, rounded up.
    // SAFETY: CMSG_SPACE only computes a size.
    let space_len = unsafe { libc::CMSG_SPACE((max_fds.max(1) * 4) as u32) } as usize;
    let mut space = vec![0u8; space_len];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(v) = c {
            for fd in v {
                // SAFETY: the kernel just installed these fds for us.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Ok((msg.bytes, fds))
}

/// Open files per VP process: soft, hard. The hard limit bounds what one
/// process of a VP holds (Android's init uses 32768 too); the soft one is
/// Linux's usual default, which a process raises as far as the hard one.
/// (The kernel charges open files to the VP's memory cgroup, so all of a
/// VP's files together are bounded by its memory limit.)
pub const VP_NOFILE: (u64, u64) = (1024, 32768);

/// Apply the VP's resource limits to the calling process (only ever
/// lowers: raising a hard limit needs CAP_SYS_RESOURCE).
pub fn apply_vp_rlimits() -> io::Result<()> {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit into a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let max = cur.rlim_max.min(VP_NOFILE.1);
    let lim = libc::rlimit {
        rlim_cur: VP_NOFILE.0.min(max),
        rlim_max: max,
    };
    // SAFETY: setrlimit with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Set resource limit `kind` (`RLIMIT_NOFILE`, ...): what an OCI bundle
/// asks (raising a hard limit needs a privilege the VP lacks: refused).
pub fn set_rlimit(kind: &str, soft: u64, hard: u64) -> io::Result<()> {
    let resource = match kind {
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "unknown resource limit",
            ))
        }
    };
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit with a valid struct.
    if unsafe { libc::setrlimit(resource, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fds_pass_over_a_socketpair() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        send_fds(&a, b"x", &[f.as_raw_fd()]).unwrap();
        let mut buf = [0u8; 4];
        let (n, fds) = recv_fds(&b, &mut buf, 4).unwrap();
        assert_eq!((n, &buf[..1], fds.len()), (1, &b"x"[..], 1));
    }

    #[test]
    fn start_time_of_self_is_stable() {
        let pid = std::process::id() as i32;
        let a = process_start_time(pid).expect("own stat readable");
        let b = process_start_time(pid).expect("own stat readable");
        assert_eq!(a, b);
        assert!(process_start_time(i32::MAX).is_none());
    }

    #[test]
    fn cstr_rejects_nul() {
        assert!(cstr(Path::new("a\0b")).is_err());
        assert!(cstr(Path::new("/ok")).is_ok());
    }
}

/// One malloc arena for every thread of the process, and large blocks
/// always mapped on their own. glibc gives each new thread that allocates
/// its own arena (up to 8 per CPU), each with pages of its own; a monitor's
/// few threads allocate little and rarely, so one shared arena costs nothing
/// in contention and saves ≈ 140 KiB per thread. A fixed mmap threshold
/// keeps glibc from raising it after a large free, which would put the FUSE
/// server's 16 MiB request buffer on the heap, zeroed page by page, instead
/// of in a mapping whose untouched pages cost nothing.
pub fn lean_malloc() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes malloc's tuning; called before threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Give back memory that a long-lived process used once while it set
/// things up: the free pages of the malloc heap, and the main thread's
/// stack below the current frame (the deep frames of parsing and setup).
/// Both come back as zero pages if they are used again.
/// cellsd's own: a fixed mmap threshold, so that frames (a screenshot's
/// copy, its PNG) are mappings given back when freed. With glibc's dynamic
/// threshold, the first such free raises it past a frame, and later frames
/// come from the heap of whichever thread's arena ran the call, which
/// keeps them (the soak saw cellsd's RSS grow by two frames).
pub fn daemon_malloc() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes malloc's tuning; called before threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

pub fn release_setup_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
    let here = 0u8;
    let sp = std::ptr::addr_of!(here) as usize;
    let Some(low) = std::fs::read_to_string("/proc/self/maps")
        .ok()
        .and_then(|m| stack_start(&m, sp))
    else {
        return;
    };
    // Keep two pages under this frame (the red zone, the calls below).
    let end = (sp.saturating_sub(2 * 4096)) & !4095;
    if end > low {
        // SAFETY: [low, end) is the part of this thread's own stack mapping
        // below every live frame (the stack grows down from sp); nothing
        // refers to it, and DONTNEED makes it read back as zeros.
        unsafe {
            libc::madvise(low as *mut libc::c_void, end - low, libc::MADV_DONTNEED);
        }
    }
}

/// The start address of the `[stack]` mapping that holds `sp`.
fn stack_start(maps: &str, sp: usize) -> Option<usize> {
    maps.lines().find_map(|l| {
        if !l.ends_with("[stack]") {
            return None;
        }
        let (range, _) = l.split_once(' ')?;
        let (a, b) = range.split_once('-')?;
        let (a, b) = (
            usize::from_str_radix(a, 16).ok()?,
            usize::from_str_radix(b, 16).ok()?,
        );
        (a..b).contains(&sp).then_some(a)
    })
}

#[cfg(test)]
mod memory_tests {
    use super::*;

    #[test]
    fn finds_the_stack_mapping_that_holds_sp() {
        let maps = "55d0-55e0 r-xp 00000000 08:01 1 /bin/x\n\
                    7ffc1000-7ffc3000 rw-p 00000000 00:00 0                          [stack]\n";
        assert_eq!(stack_start(maps, 0x7ffc2500), Some(0x7ffc1000));
        assert_eq!(stack_start(maps, 0x7ffc3000), None);
        assert_eq!(stack_start(maps, 0x55d8), None);
    }
}
