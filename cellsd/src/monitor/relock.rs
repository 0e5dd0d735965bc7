//! A restored VP's /proc and /sys made *locked* again, as a fresh VP's are.
//!
//! CRIU makes a restored VP's mounts inside the VP's own user namespace, so
//! none of them is locked: VP root could unmount a mask (`/proc/acpi`,
//! `/sys/firmware`) or remount a read-only path (`/proc/sys`) writable. The
//! only mounts that hide something of the host are those on /proc and /sys
//! (everything else hides the VP's own files), so at CRIU's `post-restore`
//! action — the processes exist, none runs yet — the monitor:
//!
//! 1. builds, in its own namespace under `<run>/relock`, the VP's proc and
//!    sysfs (mounted from inside the VP's pid and network namespaces, as for
//!    a start) with the same masks, read-only paths and device mounts as the
//!    start's plan and its devices give them;
//! 2. has a helper in the VP's mount namespace detach CRIU's /proc and /sys;
//! 3. makes the VP's root mount a peer of its own bind of the same overlay
//!    (`move_mount(MOVE_MOUNT_SET_GROUP)`, Linux 5.15+) and binds the two
//!    trees there: they propagate into the VP's namespace, and a propagation
//!    into a less privileged user namespace *locks* what it brings (every
//!    mount below the propagated one, and the flags of all: the kernel's
//!    `lock_mnt_tree`). The two tops themselves may be unmounted by VP root,
//!    which reveals the overlay's empty folders, and then no proc or sysfs
//!    is left fully visible, so none can be mounted anew;
//! 4. makes every mount in both namespaces private again, so nothing mounted
//!    later on either side shows on the other.
//!
//! [`kernel_steps`] and [`extra_mounts`] are pure and unit-tested.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::MonitorError;
use crate::criu;
use crate::rootfs::{self, Step};
use crate::sys;

/// The VP folders whose trees are made anew.
const TOPS: [&str; 2] = ["proc", "sys"];

fn target(s: &Step) -> Option<&Path> {
    match s {
        Step::VpKernel(k) => Some(&k.target),
        Step::Mount { target, .. } | Step::BindNode { target, .. } => Some(target),
        Step::Mask { path } | Step::ReadOnly { path } => Some(path),
        Step::Console { .. } | Step::Symlink { .. } => None,
    }
}

fn under_tops(p: &Path, root: &Path) -> bool {
    p.strip_prefix(root)
        .ok()
        .and_then(|rel| rel.components().next())
        .is_some_and(|c| TOPS.iter().any(|t| c.as_os_str() == *t))
}

/// Of the start's plan for a tree rooted at `root`, the steps that build
/// /proc and /sys (their file systems, masks, read-only paths, binds).
pub(super) fn kernel_steps(plan: Vec<Step>, root: &Path) -> Vec<Step> {
    plan.into_iter()
        .filter(|s| target(s).is_some_and(|t| under_tops(t, root)))
        .collect()
}

/// The plan's mount targets relative to the tree's `root`.
fn planned(steps: &[Step], root: &Path) -> HashSet<PathBuf> {
    steps
        .iter()
        .filter_map(target)
        .filter_map(|t| t.strip_prefix(root).ok().map(Path::to_path_buf))
        .collect()
}

/// Mount points below `rootfs`'s /proc and /sys in the monitor's mount
/// table that the plan does not make (`made`: relative paths; what devices
/// mounted there themselves, e.g. the power device's /sys/power), as paths
/// relative to `rootfs`, in mount order.
pub(super) fn extra_mounts(
    mountinfo: &str,
    rootfs: &Path,
    made: &HashSet<PathBuf>,
) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for m in criu::parse_mountinfo(mountinfo) {
        let Ok(rel) = Path::new(&m.mount_point).strip_prefix(rootfs) else {
            continue;
        };
        let deep = rel.components().count() > 1;
        if deep
            && under_tops(&rootfs.join(rel), rootfs)
            && !made.contains(rel)
            && !out.iter().any(|p: &PathBuf| p == rel)
        {
            out.push(rel.to_path_buf());
        }
    }
    out
}

fn fail(what: &str) -> impl FnOnce(nix::Error) -> MonitorError + '_ {
    move |e| MonitorError::Failed(format!("locking the restored VP's mounts: {what}: {e}"))
}

/// Run `work` in a child that joined `init`'s mount namespace (setns to a
/// mount namespace needs a single-threaded caller): raw system calls only.
fn in_vp_mntns(init: i32, what: &str, work: &dyn Fn() -> i32) -> Result<(), MonitorError> {
    let pidfd = sys::pidfd_open(init).map_err(|e| {
        MonitorError::Failed(format!("locking the restored VP's mounts: pidfd: {e}"))
    })?;
    // SAFETY: after fork only async-signal-safe system calls run in the
    // child (`work` makes raw mount calls on strings prepared before).
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(MonitorError::Failed(format!(
            "locking the restored VP's mounts: fork: {}",
            std::io::Error::last_os_error()
        )));
    }
    if child == 0 {
        // SAFETY: raw system calls only; _exit never returns.
        unsafe {
            if libc::setns(std::os::fd::AsRawFd::as_raw_fd(&pidfd), libc::CLONE_NEWNS) != 0 {
                libc::_exit(100);
            }
            libc::_exit(work());
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    match code {
        0 => Ok(()),
        100 => Err(MonitorError::Failed(
            "locking the restored VP's mounts: could not enter its mount namespace".into(),
        )),
        n => Err(MonitorError::Failed(format!(
            "locking the restored VP's mounts: {what} failed in its namespace ({})",
            std::io::Error::from_raw_os_error(n)
        ))),
    }
}

/// The mount flags of the mount holding `p`, for a bind to keep.
fn flags_of(p: &Path) -> MsFlags {
    use nix::sys::statvfs::FsFlags;
    let mut f = MsFlags::empty();
    if let Ok(st) = nix::sys::statvfs::statvfs(p) {
        for (a, b) in [
            (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        ] {
            if st.flags().contains(a) {
                f |= b;
            }
        }
    }
    f
}

/// Lock the restored VP's /proc and /sys (see the module's text). `init`:
/// the restored init (stopped by CRIU); `rootfs`: the monitor's tree of
/// the VP; `clean_root`: CRIU's root (a bind of the overlay alone);
/// `plan`: the start's plan for a tree at `relock`.
pub(super) fn relock(
    init: i32,
    rootfs: &Path,
    clean_root: &Path,
    relock: &Path,
    plan: Vec<Step>,
    owner: Option<u32>,
) -> Result<(), MonitorError> {
    let steps = kernel_steps(plan, relock);
    std::fs::create_dir_all(relock).map_err(|e| {
        MonitorError::Failed(format!("locking the restored VP's mounts: mkdir: {e}"))
    })?;
    let result = relock_inner(init, rootfs, clean_root, relock, &steps, owner);
    // The monitor's copies go; the VP's stay.
    for top in TOPS {
        let _ = umount2(&clean_root.join(top), MntFlags::MNT_DETACH);
        let _ = umount2(&relock.join(top), MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir_all(relock);
    result
}

fn relock_inner(
    init: i32,
    rootfs: &Path,
    clean_root: &Path,
    relock: &Path,
    steps: &[Step],
    owner: Option<u32>,
) -> Result<(), MonitorError> {
    // 1. The trees, in the monitor's namespace.
    rootfs::apply(relock, steps, owner, &mut |k| {
        super::start::vp_kernel_mounts(init, k)
    })?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| {
        MonitorError::Failed(format!("locking the restored VP's mounts: mountinfo: {e}"))
    })?;
    for rel in extra_mounts(&info, rootfs, &planned(steps, relock)) {
        let (src, dst) = (rootfs.join(&rel), relock.join(&rel));
        mount(
            Some(&src),
            &dst,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(fail("bind a device mount"))?;
        let f = flags_of(&src);
        if !f.is_empty() {
            mount(
                None::<&str>,
                &dst,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | f,
                None::<&str>,
            )
            .map_err(fail("remount a device mount"))?;
        }
    }
    // 2. CRIU's /proc and /sys leave the VP (lazily: open files stay valid).
    let (proc_c, sys_c, root_c) = (c"/proc", c"/sys", c"/");
    in_vp_mntns(init, "detaching CRIU's /proc and /sys", &|| {
        // SAFETY: umount2 on constant strings.
        unsafe {
            for p in [proc_c, sys_c] {
                if libc::umount2(p.as_ptr(), libc::MNT_DETACH) != 0 {
                    return *libc::__errno_location();
                }
            }
        }
        0
    })?;
    // 3. The VP's root a peer of our bind of the overlay; the trees bound
    //    there propagate into its namespace, locked.
    mount(
        None::<&str>,
        clean_root,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .map_err(fail("share CRIU's root"))?;
    let from = std::fs::File::open(clean_root).map_err(|e| {
        MonitorError::Failed(format!("locking the restored VP's mounts: open root: {e}"))
    })?;
    let to = std::fs::File::open(format!("/proc/{init}/root")).map_err(|e| {
        MonitorError::Failed(format!(
            "locking the restored VP's mounts: open its root: {e}"
        ))
    })?;
    sys::move_mount_set_group(&from, &to).map_err(|e| {
        MonitorError::Failed(format!(
            "locking the restored VP's mounts: move_mount(MOVE_MOUNT_SET_GROUP) (Linux 5.15+): {e}"
        ))
    })?;
    let bound = TOPS.iter().try_for_each(|top| {
        mount(
            Some(&relock.join(top)),
            &clean_root.join(top),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(fail("bind the new tree"))
    });
    // 4. Private again on both sides (also when the bind failed).
    let _ = mount(
        None::<&str>,
        clean_root,
        None::<&str>,
        MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        None::<&str>,
    );
    in_vp_mntns(init, "making its mounts private", &|| {
        // SAFETY: mount(2) with constant strings.
        unsafe {
            if libc::mount(
                std::ptr::null(),
                root_c.as_ptr(),
                std::ptr::null(),
                libc::MS_PRIVATE | libc::MS_REC,
                std::ptr::null(),
            ) != 0
            {
                return *libc::__errno_location();
            }
        }
        0
    })?;
    bound
}

#[cfg(test)]
mod tests {
    use super::*;

    fn km(t: &str) -> Step {
        Step::VpKernel(rootfs::KernelMount {
            fstype: "proc".into(),
            target: PathBuf::from(t),
            flags: MsFlags::empty(),
            data: None,
        })
    }

    #[test]
    fn only_proc_and_sys_are_made_anew() {
        let plan = vec![
            km("/r/proc"),
            km("/r/sys"),
            Step::Mount {
                source: "tmpfs".into(),
                target: "/r/dev".into(),
                fstype: Some("tmpfs".into()),
                flags: MsFlags::empty(),
                data: None,
                remount: None,
            },
            Step::Mask {
                path: "/r/proc/acpi".into(),
            },
            Step::ReadOnly {
                path: "/r/proc/sys".into(),
            },
            Step::Mask {
                path: "/r/sys/firmware".into(),
            },
            Step::Mask {
                path: "/r/processes".into(),
            },
            Step::Symlink {
                target: "/proc/self/fd".into(),
                link: "/r/dev/fd".into(),
            },
        ];
        let kept = kernel_steps(plan, Path::new("/r"));
        let targets: Vec<_> = kept.iter().filter_map(target).collect();
        assert_eq!(
            targets,
            [
                Path::new("/r/proc"),
                Path::new("/r/sys"),
                Path::new("/r/proc/acpi"),
                Path::new("/r/proc/sys"),
                Path::new("/r/sys/firmware"),
            ]
        );
    }

    #[test]
    fn device_mounts_below_sys_are_found() {
        let info = "\
20 1 0:5 / /run/v/rootfs rw - overlay overlay rw
21 20 0:6 / /run/v/rootfs/proc rw - proc proc rw
22 21 0:7 / /run/v/rootfs/proc/acpi ro - tmpfs tmpfs ro
23 20 0:8 / /run/v/rootfs/sys ro - sysfs sysfs ro
24 23 0:9 / /run/v/rootfs/sys/power rw - fuse power rw
25 20 0:10 / /run/v/rootfs/dev rw - tmpfs tmpfs rw
26 25 0:11 / /run/v/rootfs/dev/input rw - fuse input rw
27 1 0:6 / /proc rw - proc proc rw
";
        let plan = vec![Step::Mask {
            path: "/r/proc/acpi".into(),
        }];
        assert_eq!(
            extra_mounts(
                info,
                Path::new("/run/v/rootfs"),
                &planned(&plan, Path::new("/r"))
            ),
            [PathBuf::from("sys/power")]
        );
    }
}
