//! The VP's root filesystem, from its OCI spec: the mounts, the device
//! nodes, the masked and read-only paths, and pivot_root.
//!
//! The VP's monitor builds the whole tree in its own private mount
//! namespace (host root, the host's user namespace) before the VP's init
//! runs; the init then enters a copy of that namespace from inside the
//! VP's user namespace, which makes every mount of it *locked*: VP root can
//! neither unmount a mask (revealing what it hides) nor remount a read-only
//! path writable. Only proc and sysfs must be mounted from inside the VP's
//! pid and network namespaces; the monitor has a short-lived helper there
//! do it (see [`Step::VpKernel`]), before any of the VP's code runs.
//!
//! [`plan`] is a pure function from the spec to a list of [`Step`]s, so the
//! order and the flags are unit-tested; [`apply`] carries the steps out.
//! The tree is built while no process of the VP exists, so what is checked
//! about it (no symlink on a mount target's path) stays true until the
//! mount is made.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{symlink, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::Spec;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("mount destination {0} is not an absolute path inside the VP")]
    BadDestination(PathBuf),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0} in the VP's filesystem is a symlink; refusing to mount over it (remove it from the VP's writable layer)")]
    Symlink(PathBuf),
    #[error("mounting {what} inside the VP's namespaces failed: {msg}")]
    VpKernel { what: String, msg: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A file system that belongs to the VP's pid or network namespace
    /// (proc, sysfs): mounted by a helper that lives in those namespaces.
    VpKernel(KernelMount),
    /// mkdir -p then mount(2).
    Mount {
        source: String,
        target: PathBuf,
        fstype: Option<String>,
        flags: MsFlags,
        data: Option<String>,
        /// For bind mounts that change flags: remount with these afterwards.
        remount: Option<MsFlags>,
    },
    /// Create an empty file and bind-mount a host node (device, pty) on it.
    BindNode {
        source: PathBuf,
        target: PathBuf,
    },
    /// The VP's console: a new pty of the VP's own devpts (mounted at
    /// `devpts`), its slave bound at `target`.
    Console {
        devpts: PathBuf,
        target: PathBuf,
    },
    Symlink {
        target: String,
        link: PathBuf,
    },
    /// Hide a path: /dev/null over a file, an empty read-only tmpfs over a directory.
    Mask {
        path: PathBuf,
    },
    /// Bind the path over itself read-only.
    ReadOnly {
        path: PathBuf,
    },
}

/// A mount made inside the VP's pid and network namespaces.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelMount {
    pub fstype: String,
    pub target: PathBuf,
    pub flags: MsFlags,
    pub data: Option<String>,
}

/// Map fstab-style options to mount flags and the data string.
/// Returns (flags, data, is_bind, flags to apply with a bind remount).
pub fn parse_options(options: &[String]) -> (MsFlags, Option<String>, bool, MsFlags) {
    let mut flags = MsFlags::empty();
    let mut data: Vec<&str> = Vec::new();
    let mut bind = false;
    for o in options {
        let (set, clear) = match o.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "bind" => {
                bind = true;
                (MsFlags::MS_BIND, MsFlags::empty())
            }
            "rbind" => {
                bind = true;
                (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty())
            }
            "private" | "rprivate" | "slave" | "rslave" | "shared" | "rshared" => {
                (MsFlags::empty(), MsFlags::empty())
            }
            other => {
                data.push(other);
                (MsFlags::empty(), MsFlags::empty())
            }
        };
        flags |= set;
        flags &= !clear;
    }
    // A bind mount ignores every flag but MS_BIND/MS_REC on the first call;
    // the others need a remount (MS_REMOUNT | MS_BIND | flags).
    let extra = flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
    let data = if data.is_empty() {
        None
    } else {
        Some(data.join(","))
    };
    (flags, data, bind, extra)
}

/// `/a/b` inside the VP -> `<rootfs>/a/b` on the host. Rejects `..`.
pub fn in_root(rootfs: &Path, dest: &Path) -> Result<PathBuf, RootfsError> {
    if !dest.is_absolute() {
        return Err(RootfsError::BadDestination(dest.to_path_buf()));
    }
    let mut out = rootfs.to_path_buf();
    for c in dest.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(RootfsError::BadDestination(dest.to_path_buf()))
            }
        }
    }
    Ok(out)
}

/// The VP's own devices: host nodes to bind (node, path in the VP),
/// directories to bind over the VP's (the power file system over
/// /sys/power), and whether the VP gets its own binderfs instance (mounted
/// by its init, see [`binderfs_steps`]).
#[derive(Debug, Clone, Default)]
pub struct DeviceMounts {
    pub nodes: Vec<(PathBuf, String)>,
    pub dirs: Vec<(PathBuf, String)>,
    /// Host folders the VP may only read (its adb keys).
    pub ro_dirs: Vec<(PathBuf, String)>,
    pub binderfs: bool,
}

/// tmpfs and devpts options name VP ids (`gid=5`, the VP's tty group); the
/// monitor mounts them as host root, so they are translated to host ids,
/// and a tmpfs root without `uid=`/`gid=` belongs to VP root.
fn host_id_options(fstype: &str, data: Option<String>, owner: Option<u32>) -> Option<String> {
    let Some(base) = owner else { return data };
    if fstype != "tmpfs" && fstype != "devpts" {
        return data;
    }
    let mut opts: Vec<String> = data
        .map(|d| d.split(',').map(String::from).collect())
        .unwrap_or_default();
    for o in opts.iter_mut() {
        for key in ["uid=", "gid="] {
            if let Some(v) = o.strip_prefix(key).and_then(|v| v.parse::<u32>().ok()) {
                *o = format!("{key}{}", base.saturating_add(v));
            }
        }
    }
    if fstype == "tmpfs" {
        for key in ["uid=", "gid="] {
            if !opts.iter().any(|o| o.starts_with(key)) {
                opts.push(format!("{key}{base}"));
            }
        }
    }
    Some(opts.join(","))
}

/// The steps that build the VP's filesystem under `rootfs` (the overlay,
/// still at its host path in the monitor's namespace), with `devices` the
/// VP's own devices and `owner` VP root's host id (None: no user namespace).
pub fn plan(
    spec: &Spec,
    rootfs: &Path,
    devices: &DeviceMounts,
    owner: Option<u32>,
) -> Result<Vec<Step>, RootfsError> {
    let mut steps = Vec::new();
    let mut devpts = None;
    for m in spec.mounts().as_deref().unwrap_or_default() {
        let target = in_root(rootfs, m.destination())?;
        let opts = m.options().clone().unwrap_or_default();
        let (flags, data, bind, extra) = parse_options(&opts);
        let fstype = m.typ().clone().filter(|t| t != "bind");
        let source = m
            .source()
            .as_ref()
            .map(|s| s.to_string_lossy().into_owned())
            .or_else(|| fstype.clone())
            .unwrap_or_else(|| "none".to_string());
        if !bind && matches!(fstype.as_deref(), Some("proc" | "sysfs")) {
            steps.push(Step::VpKernel(KernelMount {
                fstype: fstype.clone().unwrap_or_default(),
                target,
                flags,
                data,
            }));
            continue;
        }
        if fstype.as_deref() == Some("devpts") {
            devpts = Some(target.clone());
        }
        let data = match &fstype {
            Some(t) if !bind => host_id_options(t, data, owner),
            _ => data,
        };
        steps.push(Step::Mount {
            source,
            target,
            fstype: if bind { None } else { fstype },
            flags: if bind {
                flags & (MsFlags::MS_BIND | MsFlags::MS_REC)
            } else {
                flags
            },
            data: if bind { None } else { data },
            remount: (bind && !extra.is_empty()).then_some(extra),
        });
    }
    let linux = spec.linux().as_ref();
    for d in linux
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
    {
        // Device nodes cannot be created in a user namespace (and mknod is
        // not in the VP's bounding set); the host's nodes are bind-mounted.
        steps.push(Step::BindNode {
            source: d.path().clone(),
            target: in_root(rootfs, d.path())?,
        });
    }
    for (node, vp_path) in &devices.nodes {
        steps.push(Step::BindNode {
            source: node.clone(),
            target: in_root(rootfs, Path::new(vp_path))?,
        });
    }
    // After the spec's mounts: /sys/power sits on the VP's /sys.
    for (dir, vp_path) in &devices.dirs {
        steps.push(Step::Mount {
            source: dir.to_string_lossy().into_owned(),
            target: in_root(rootfs, Path::new(vp_path))?,
            fstype: None,
            flags: MsFlags::MS_BIND,
            data: None,
            remount: None,
        });
    }
    for (dir, vp_path) in &devices.ro_dirs {
        steps.push(Step::Mount {
            source: dir.to_string_lossy().into_owned(),
            target: in_root(rootfs, Path::new(vp_path))?,
            fstype: None,
            flags: MsFlags::MS_BIND,
            data: None,
            remount: Some(
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            ),
        });
    }
    let dev = in_root(rootfs, Path::new("/dev"))?;
    if let Some(devpts) = devpts {
        steps.push(Step::Console {
            devpts,
            target: dev.join("console"),
        });
    }
    steps.push(Step::Symlink {
        target: "pts/ptmx".into(),
        link: dev.join("ptmx"),
    });
    for (name, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        steps.push(Step::Symlink {
            target: to.into(),
            link: dev.join(name),
        });
    }
    for p in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
    {
        steps.push(Step::Mask {
            path: in_root(rootfs, Path::new(p))?,
        });
    }
    for p in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
    {
        steps.push(Step::ReadOnly {
            path: in_root(rootfs, Path::new(p))?,
        });
    }
    Ok(steps)
}

/// What the VP's init mounts itself, after pivot_root, inside its own
/// namespaces: a binderfs instance owned by VP root, and the links into it.
pub fn binderfs_steps() -> Vec<Step> {
    let dev = PathBuf::from("/dev");
    let mut steps = vec![Step::Mount {
        source: "binder".into(),
        target: PathBuf::from(crate::devices::binder::BINDERFS_DIR),
        fstype: Some("binder".into()),
        flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        data: None,
        remount: None,
    }];
    for name in crate::devices::binder::BINDERFS_LINKS {
        steps.push(Step::Symlink {
            target: format!("binderfs/{name}"),
            link: dev.join(name),
        });
    }
    steps
}

fn ioe<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RootfsError + 'a {
    move |source| RootfsError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn nixe<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(nix::Error) -> RootfsError + 'a {
    move |e| RootfsError::Io {
        what,
        path: path.to_path_buf(),
        source: io::Error::from(e),
    }
}

/// Refuse targets that pass through a symlink below `rootfs`: the VP's
/// writable layer is the VP's to change, and a symlink there must not
/// redirect a mount made by the runtime.
fn check_no_symlink(rootfs: &Path, target: &Path) -> Result<(), RootfsError> {
    let Ok(rel) = target.strip_prefix(rootfs) else {
        return Ok(());
    };
    let mut p = rootfs.to_path_buf();
    for c in rel.components() {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => return Err(RootfsError::Symlink(p)),
            Ok(_) => {}
            Err(_) => break, // does not exist yet: created as a directory
        }
    }
    Ok(())
}

/// Current flags of the mount holding `path`, as MS_* bits that a bind
/// remount must keep (a user namespace may not clear them).
fn locked_flags(path: &Path) -> MsFlags {
    let mut f = MsFlags::empty();
    if let Ok(st) = nix::sys::statvfs::statvfs(path) {
        use nix::sys::statvfs::FsFlags;
        let fl = st.flags();
        for (a, b) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if fl.contains(a) {
                f |= b;
            }
        }
    }
    f
}

fn bind_remount(path: &Path, flags: MsFlags) -> Result<(), RootfsError> {
    let keep = locked_flags(path);
    mount(
        None::<&str>,
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | keep | flags,
        None::<&str>,
    )
    .map_err(nixe("remount", path))
}

/// What [`apply`] leaves for the monitor: the console pty (master, and the
/// slave kept open so the master never sees a hang-up between users).
#[derive(Default)]
pub struct Applied {
    pub console: Option<(OwnedFd, OwnedFd)>,
}

/// mkdir -p below `rootfs`; what is created belongs to `owner` (VP root),
/// as if the VP had made it.
fn make_dirs(path: &Path, owner: Option<u32>) -> Result<(), RootfsError> {
    let mut missing = Vec::new();
    let mut p = path.to_path_buf();
    while std::fs::symlink_metadata(&p).is_err() {
        missing.push(p.clone());
        if !p.pop() {
            break;
        }
    }
    for d in missing.into_iter().rev() {
        match std::fs::create_dir(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(ioe("mkdir", &d)(e)),
        }
        if let Some(id) = owner {
            std::os::unix::fs::lchown(&d, Some(id), Some(id)).map_err(ioe("chown", &d))?;
        }
    }
    Ok(())
}

/// An empty file to mount a node on (created if missing, owned by `owner`).
fn make_file(path: &Path, owner: Option<u32>) -> Result<(), RootfsError> {
    if let Some(parent) = path.parent() {
        make_dirs(parent, owner)?;
    }
    match std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(_) => {
            if let Some(id) = owner {
                std::os::unix::fs::lchown(path, Some(id), Some(id)).map_err(ioe("chown", path))?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(ioe("create", path)(e)),
    }
}

/// A new pty of the devpts instance mounted at `devpts`, its slave owned by
/// VP root (group tty, 5 in the VP) as a console is.
fn new_pty(devpts: &Path, owner: Option<u32>) -> Result<(OwnedFd, OwnedFd, PathBuf), RootfsError> {
    use std::os::fd::FromRawFd;
    let ptmx = devpts.join("ptmx");
    let c = crate::sys::cstr(&ptmx).map_err(ioe("open", &ptmx))?;
    // SAFETY: open with a valid path; the fd is owned below.
    let raw = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(ioe("open", &ptmx)(io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd.
    let master = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut n: libc::c_uint = 0;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int, TIOCGPTN writes an unsigned int.
    let ok = unsafe {
        libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) == 0
            && libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) == 0
    };
    if !ok {
        return Err(ioe("unlock pty of", &ptmx)(io::Error::last_os_error()));
    }
    let slave_path = devpts.join(n.to_string());
    let slave: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&slave_path)
        .map_err(ioe("open", &slave_path))?
        .into();
    if let Some(id) = owner {
        nix::unistd::fchown(
            &slave,
            Some(nix::unistd::Uid::from_raw(id)),
            Some(nix::unistd::Gid::from_raw(id + 5)),
        )
        .map_err(|e| ioe("chown", &slave_path)(e.into()))?;
    }
    Ok((master, slave, slave_path))
}

/// A new pty of the VP's devpts (at `rootfs/dev/pts`), its slave bound at
/// `target` (a path in the VP, e.g. `/dev/ttyGPS0`), owned by VP root as a
/// console is: for a device that serves a tty (a GPS receiver). Returns the
/// master and the slave (kept open: the master never sees a hang-up).
pub fn bind_new_pty(
    rootfs: &Path,
    target: &str,
    owner: Option<u32>,
) -> Result<(OwnedFd, OwnedFd), RootfsError> {
    let target = in_root(rootfs, Path::new(target))?;
    check_no_symlink(rootfs, &target)?;
    let (master, slave, slave_path) = new_pty(&rootfs.join("dev/pts"), owner)?;
    make_file(&target, owner)?;
    mount(
        Some(slave_path.as_path()),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(nixe("bind", &target))?;
    Ok((master, slave))
}

/// Carry out the steps: in the monitor's mount namespace, before the VP's
/// init runs (or, for [`binderfs_steps`], in the init after pivot_root).
/// `vp_kernel` mounts the [`Step::VpKernel`] file systems from inside the
/// VP's namespaces; it is called once, first, with all of them (their
/// targets exist by then).
pub fn apply(
    rootfs: &Path,
    steps: &[Step],
    owner: Option<u32>,
    vp_kernel: &mut dyn FnMut(&[KernelMount]) -> Result<(), RootfsError>,
) -> Result<Applied, RootfsError> {
    let mut applied = Applied::default();
    let mut dir_mask: Option<PathBuf> = None;
    let kernel: Vec<KernelMount> = steps
        .iter()
        .filter_map(|s| match s {
            Step::VpKernel(k) => Some(k.clone()),
            _ => None,
        })
        .collect();
    if !kernel.is_empty() {
        for k in &kernel {
            check_no_symlink(rootfs, &k.target)?;
            make_dirs(&k.target, owner)?;
        }
        vp_kernel(&kernel)?;
    }
    for step in steps {
        match step {
            Step::VpKernel(_) => {}
            Step::Mount {
                source,
                target,
                fstype,
                flags,
                data,
                remount,
            } => {
                check_no_symlink(rootfs, target)?;
                // A bind of a file (an OCI bundle's /etc/hosts) needs a
                // file to mount on.
                let file_bind = fstype.is_none()
                    && flags.contains(MsFlags::MS_BIND)
                    && std::fs::metadata(source).is_ok_and(|m| !m.is_dir());
                if file_bind {
                    make_file(target, owner)?;
                } else {
                    make_dirs(target, owner)?;
                }
                mount(
                    Some(source.as_str()),
                    target,
                    fstype.as_deref(),
                    *flags,
                    data.as_deref(),
                )
                .map_err(nixe("mount", target))?;
                if let Some(extra) = remount {
                    bind_remount(target, *extra)?;
                }
            }
            Step::BindNode { source, target } => {
                check_no_symlink(rootfs, target)?;
                make_file(target, owner)?;
                mount(
                    Some(source.as_path()),
                    target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(nixe("bind", target))?;
            }
            Step::Console { devpts, target } => {
                check_no_symlink(rootfs, target)?;
                let (master, slave, slave_path) = new_pty(devpts, owner)?;
                make_file(target, owner)?;
                mount(
                    Some(slave_path.as_path()),
                    target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(nixe("bind", target))?;
                applied.console = Some((master, slave));
            }
            Step::Symlink { target, link } => {
                check_no_symlink(rootfs, link.parent().unwrap_or(rootfs))?;
                match symlink(target, link) {
                    Ok(()) => {
                        if let Some(id) = owner {
                            let _ = std::os::unix::fs::lchown(link, Some(id), Some(id));
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(ioe("symlink", link)(e)),
                }
            }
            Step::Mask { path } => {
                check_no_symlink(rootfs, path)?;
                let Ok(meta) = std::fs::symlink_metadata(path) else {
                    continue; // nothing to hide
                };
                let ro = MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC;
                if let (true, Some(first)) = (meta.is_dir(), dir_mask.as_ref()) {
                    // Every further folder mask is the first one bound
                    // read-only again: one empty file system per VP, not one
                    // per mask (each file system costs every memory cgroup on
                    // the machine kernel memory: the shrinkers).
                    mount(
                        Some(first),
                        path,
                        None::<&str>,
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )
                    .map_err(nixe("mask", path))?;
                    bind_remount(path, ro)?;
                } else if meta.is_dir() {
                    mount(Some("tmpfs"), path, Some("tmpfs"), ro, Some("size=0"))
                        .map_err(nixe("mask", path))?;
                    dir_mask = Some(path.clone());
                } else {
                    mount(
                        Some("/dev/null"),
                        path,
                        None::<&str>,
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )
                    .map_err(nixe("mask", path))?;
                }
            }
            Step::ReadOnly { path } => {
                check_no_symlink(rootfs, path)?;
                if std::fs::symlink_metadata(path).is_err() {
                    continue;
                }
                mount(
                    Some(path.as_path()),
                    path,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(nixe("bind", path))?;
                bind_remount(path, MsFlags::MS_RDONLY)?;
            }
        }
    }
    Ok(applied)
}

/// Make `rootfs` the root: pivot_root(".", ".") then detach the old root,
/// which leaves nothing of the host's tree reachable. `rootfs` may be
/// relative to the current directory.
pub fn pivot(rootfs: &Path) -> Result<(), RootfsError> {
    std::env::set_current_dir(rootfs).map_err(ioe("chdir", rootfs))?;
    crate::sys::pivot_root(Path::new("."), Path::new(".")).map_err(ioe("pivot_root", rootfs))?;
    // The old root is now stacked on top of "/"; detaching it exposes the new one.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(nixe("make old root slave", rootfs))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(nixe("detach old root", rootfs))?;
    std::env::set_current_dir("/").map_err(ioe("chdir", Path::new("/")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CreateOptions, VpConfig};

    fn spec() -> Spec {
        let o = CreateOptions {
            template: "minimal".into(),
            ..Default::default()
        };
        VpConfig::new("w", &o, 0, 1_000_000, Path::new("/state/vps/w/data"), 0)
            .unwrap()
            .runtime
    }

    #[test]
    fn options_map_to_flags() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (f, d, bind, _) = parse_options(&s(&["nosuid", "noexec", "nodev", "ro"]));
        assert!(f.contains(
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV | MsFlags::MS_RDONLY
        ));
        assert!(d.is_none() && !bind);
        let (f, d, _, _) = parse_options(&s(&["nosuid", "mode=755", "size=65536k"]));
        assert_eq!(f, MsFlags::MS_NOSUID);
        assert_eq!(d.as_deref(), Some("mode=755,size=65536k"));
        let (f, _, bind, extra) = parse_options(&s(&["rbind", "rw", "nosuid"]));
        assert!(bind && f.contains(MsFlags::MS_REC));
        assert_eq!(extra, MsFlags::MS_NOSUID);
        let (f, _, _, _) = parse_options(&s(&["ro", "rw"]));
        assert!(!f.contains(MsFlags::MS_RDONLY), "later option wins");
    }

    #[test]
    fn destinations_stay_inside_the_root() {
        let r = Path::new("/r");
        assert_eq!(
            in_root(r, Path::new("/dev/pts")).unwrap(),
            Path::new("/r/dev/pts")
        );
        assert!(in_root(r, Path::new("/../etc")).is_err());
        assert!(in_root(r, Path::new("relative")).is_err());
    }

    #[test]
    fn plan_orders_mounts_before_nodes_and_masks() {
        let devs = DeviceMounts {
            nodes: vec![(PathBuf::from("/run/x/fb0"), "/dev/graphics/fb0".to_string())],
            dirs: vec![(PathBuf::from("/run/x/power"), "/sys/power".to_string())],
            ro_dirs: vec![(PathBuf::from("/s/vps/w/adb"), "/dev/adb".to_string())],
            binderfs: true,
        };
        let steps = plan(&spec(), Path::new("/r"), &devs, Some(1_000_000)).unwrap();
        let pos = |pred: &dyn Fn(&Step) -> bool| steps.iter().position(pred).unwrap();
        // proc and sysfs are mounted from inside the VP's namespaces.
        let proc_mount = pos(
            &|s| matches!(s, Step::VpKernel(k) if k.fstype == "proc" && k.target == Path::new("/r/proc")),
        );
        let sysfs = pos(
            &|s| matches!(s, Step::VpKernel(k) if k.fstype == "sysfs" && k.flags.contains(MsFlags::MS_RDONLY)),
        );
        let dev_tmpfs =
            pos(&|s| matches!(s, Step::Mount { target, .. } if target == Path::new("/r/dev")));
        let pts =
            pos(&|s| matches!(s, Step::Mount { target, .. } if target == Path::new("/r/dev/pts")));
        let null = pos(
            &|s| matches!(s, Step::BindNode { target, .. } if target == Path::new("/r/dev/null")),
        );
        let console = pos(&|s| {
            matches!(s, Step::Console { devpts, target }
            if devpts == Path::new("/r/dev/pts") && target == Path::new("/r/dev/console"))
        });
        let kcore =
            pos(&|s| matches!(s, Step::Mask { path } if path == Path::new("/r/proc/kcore")));
        let sys_ro =
            pos(&|s| matches!(s, Step::ReadOnly { path } if path == Path::new("/r/proc/sys")));
        let power = pos(&|s| {
            matches!(s, Step::Mount { source, target, flags, .. }
            if source == "/run/x/power" && target == Path::new("/r/sys/power") && *flags == MsFlags::MS_BIND)
        });
        assert!(dev_tmpfs < pts && pts < null && null < console);
        assert!(proc_mount < kcore && proc_mount < sys_ro);
        assert!(sysfs < power, "the power file system goes on top of /sys");
        assert!(steps.iter().any(|s| matches!(s, Step::Mount { source, target, remount: Some(r), .. }
            if source == "/s/vps/w/adb" && target == Path::new("/r/dev/adb") && r.contains(MsFlags::MS_RDONLY))));
        // VP ids in tmpfs and devpts options become host ids; /dev is VP root's.
        assert!(steps.iter().any(|s| matches!(s, Step::Mount { target, data: Some(d), .. }
            if target == Path::new("/r/dev") && d.contains("uid=1000000") && d.contains("gid=1000000"))));
        assert!(steps.iter().any(|s| matches!(s, Step::Mount { target, data: Some(d), .. }
            if target == Path::new("/r/dev/pts") && d.contains("gid=1000005") && !d.contains("gid=5,"))));
        // binderfs is the init's own mount, not the monitor's.
        assert!(!steps
            .iter()
            .any(|s| matches!(s, Step::Mount { fstype: Some(t), .. } if t == "binder")));
        assert!(binderfs_steps()
            .iter()
            .any(|s| matches!(s, Step::Symlink { target, link }
            if target == "binderfs/binder" && link == Path::new("/dev/binder"))));
        // /dev holds exactly the listed nodes.
        let nodes: Vec<_> = steps
            .iter()
            .filter_map(|s| match s {
                Step::BindNode { target, .. } | Step::Console { target, .. } => {
                    target.file_name().map(|n| n.to_string_lossy().into_owned())
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            nodes,
            ["null", "zero", "full", "random", "urandom", "tty", "fb0", "console"]
        );
        // /data is a bind of the VP's data dir.
        assert!(steps.iter().any(
            |s| matches!(s, Step::Mount { source, target, fstype: None, remount: Some(_), .. }
            if source == "/state/vps/w/data" && target == Path::new("/r/data"))
        ));
        // A privileged VP's options stay as written.
        let steps = plan(&spec(), Path::new("/r"), &devs, None).unwrap();
        assert!(steps
            .iter()
            .any(|s| matches!(s, Step::Mount { target, data: Some(d), .. }
            if target == Path::new("/r/dev/pts") && d.contains("gid=5"))));
    }

    #[test]
    fn symlinked_targets_are_refused() {
        let dir = std::env::temp_dir().join(format!("cells-rootfs-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("real")).unwrap();
        symlink("/etc", dir.join("proc")).unwrap();
        let e = check_no_symlink(&dir, &dir.join("proc/kcore")).unwrap_err();
        assert!(matches!(e, RootfsError::Symlink(_)));
        check_no_symlink(&dir, &dir.join("real/x")).unwrap();
        check_no_symlink(&dir, &dir.join("missing/x")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
