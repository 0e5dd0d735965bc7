//! The VP's root filesystem setup, from its OCI spec: the mounts, the device
//! nodes, the masked and read-only paths, and pivot_root.
//!
//! [`plan`] is a pure function from the spec to a list of [`Step`]s, so the
//! order and the flags are unit-tested; [`apply`] carries the steps out with
//! real mount(2) calls inside the VP's new mount namespace (in the monitor's
//! child, before exec of the VP's init).

use std::io;
use std::os::unix::fs::symlink;
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
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
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

/// The VP's own devices: host nodes to bind (host node, path in the VP),
/// directories to bind over the VP's (the power file system over
/// /sys/power), and whether the VP gets its own binderfs instance.
#[derive(Debug, Clone, Default)]
pub struct DeviceMounts {
    pub nodes: Vec<(PathBuf, String)>,
    pub dirs: Vec<(PathBuf, String)>,
    pub binderfs: bool,
}

/// The steps that build the VP's filesystem under `rootfs` (the overlay,
/// still at its host path), with `console` the pty slave for /dev/console
/// and `devices` the VP's own devices.
pub fn plan(
    spec: &Spec,
    rootfs: &Path,
    console: &Path,
    devices: &DeviceMounts,
) -> Result<Vec<Step>, RootfsError> {
    let mut steps = Vec::new();
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
    let dev = in_root(rootfs, Path::new("/dev"))?;
    if devices.binderfs {
        // Mounted inside the VP's user namespace: VP root owns the instance.
        steps.push(Step::Mount {
            source: "binder".into(),
            target: in_root(rootfs, Path::new(crate::devices::binder::BINDERFS_DIR))?,
            fstype: Some("binder".into()),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            data: None,
            remount: None,
        });
        for name in crate::devices::binder::BINDERFS_LINKS {
            steps.push(Step::Symlink {
                target: format!("binderfs/{name}"),
                link: dev.join(name),
            });
        }
    }
    steps.push(Step::BindNode {
        source: console.to_path_buf(),
        target: dev.join("console"),
    });
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

/// Carry out the steps. Runs in the VP's mount namespace, before pivot_root.
pub fn apply(rootfs: &Path, steps: &[Step]) -> Result<(), RootfsError> {
    for step in steps {
        match step {
            Step::Mount {
                source,
                target,
                fstype,
                flags,
                data,
                remount,
            } => {
                check_no_symlink(rootfs, target)?;
                std::fs::create_dir_all(target).map_err(ioe("mkdir", target))?;
                let res = mount(
                    Some(source.as_str()),
                    target,
                    fstype.as_deref(),
                    *flags,
                    data.as_deref(),
                );
                match res {
                    Ok(()) => {}
                    // A kernel that refuses a fresh sysfs here (it is only
                    // allowed when the host's /sys is fully visible) gets the
                    // host's /sys bound read-only instead.
                    Err(_) if fstype.as_deref() == Some("sysfs") => {
                        mount(
                            Some("/sys"),
                            target,
                            None::<&str>,
                            MsFlags::MS_BIND | MsFlags::MS_REC,
                            None::<&str>,
                        )
                        .map_err(nixe("bind /sys on", target))?;
                        bind_remount(target, MsFlags::MS_RDONLY)?;
                    }
                    Err(e) => return Err(nixe("mount", target)(e)),
                }
                if let Some(extra) = remount {
                    bind_remount(target, *extra)?;
                }
            }
            Step::BindNode { source, target } => {
                check_no_symlink(rootfs, target)?;
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(ioe("mkdir", parent))?;
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(target)
                    .map_err(ioe("create", target))?;
                mount(
                    Some(source.as_path()),
                    target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(nixe("bind", target))?;
            }
            Step::Symlink { target, link } => {
                check_no_symlink(rootfs, link.parent().unwrap_or(rootfs))?;
                match symlink(target, link) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(ioe("symlink", link)(e)),
                }
            }
            Step::Mask { path } => {
                check_no_symlink(rootfs, path)?;
                let Ok(meta) = std::fs::symlink_metadata(path) else {
                    continue; // nothing to hide
                };
                if meta.is_dir() {
                    mount(
                        Some("tmpfs"),
                        path,
                        Some("tmpfs"),
                        MsFlags::MS_RDONLY
                            | MsFlags::MS_NOSUID
                            | MsFlags::MS_NODEV
                            | MsFlags::MS_NOEXEC,
                        Some("size=0"),
                    )
                    .map_err(nixe("mask", path))?;
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
    Ok(())
}

/// Make `rootfs` the root: pivot_root(".", ".") then detach the old root,
/// which leaves nothing of the host's tree reachable.
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
            binderfs: true,
        };
        let steps = plan(&spec(), Path::new("/r"), Path::new("/dev/pts/7"), &devs).unwrap();
        assert!(steps
            .iter()
            .any(|s| matches!(s, Step::Mount { fstype: Some(t), target, .. }
            if t == "binder" && target == Path::new("/r/dev/binderfs"))));
        assert!(steps
            .iter()
            .any(|s| matches!(s, Step::Symlink { target, link }
            if target == "binderfs/binder" && link == Path::new("/r/dev/binder"))));
        let pos = |pred: &dyn Fn(&Step) -> bool| steps.iter().position(pred).unwrap();
        let dev_tmpfs =
            pos(&|s| matches!(s, Step::Mount { target, .. } if target == Path::new("/r/dev")));
        let pts =
            pos(&|s| matches!(s, Step::Mount { target, .. } if target == Path::new("/r/dev/pts")));
        let null = pos(
            &|s| matches!(s, Step::BindNode { target, .. } if target == Path::new("/r/dev/null")),
        );
        let console = pos(
            &|s| matches!(s, Step::BindNode { source, target } if source == Path::new("/dev/pts/7") && target == Path::new("/r/dev/console")),
        );
        let proc_mount =
            pos(&|s| matches!(s, Step::Mount { target, .. } if target == Path::new("/r/proc")));
        let kcore =
            pos(&|s| matches!(s, Step::Mask { path } if path == Path::new("/r/proc/kcore")));
        let sys_ro =
            pos(&|s| matches!(s, Step::ReadOnly { path } if path == Path::new("/r/proc/sys")));
        let sysfs =
            pos(&|s| matches!(s, Step::Mount { target, .. } if target == Path::new("/r/sys")));
        let power = pos(&|s| {
            matches!(s, Step::Mount { source, target, flags, .. }
            if source == "/run/x/power" && target == Path::new("/r/sys/power") && *flags == MsFlags::MS_BIND)
        });
        assert!(dev_tmpfs < pts && pts < null && null < console);
        assert!(proc_mount < kcore && proc_mount < sys_ro);
        assert!(sysfs < power, "the power file system goes on top of /sys");
        // /dev holds exactly the listed nodes.
        let nodes: Vec<_> = steps
            .iter()
            .filter_map(|s| match s {
                Step::BindNode { target, .. } => {
                    target.file_name().map(|n| n.to_string_lossy().into_owned())
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            nodes,
            ["null", "zero", "full", "random", "urandom", "tty", "fb0", "console"]
        );
        assert!(steps
            .iter()
            .any(|s| matches!(s, Step::BindNode { source, target }
            if source == Path::new("/run/x/fb0") && target == Path::new("/r/dev/graphics/fb0"))));
        // /sys is read-only; /data is a bind of the VP's data dir.
        assert!(steps
            .iter()
            .any(|s| matches!(s, Step::Mount { target, flags, .. }
            if target == Path::new("/r/sys") && flags.contains(MsFlags::MS_RDONLY))));
        assert!(steps.iter().any(
            |s| matches!(s, Step::Mount { source, target, fstype: None, remount: Some(_), .. }
            if source == "/state/vps/w/data" && target == Path::new("/r/data"))
        ));
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
