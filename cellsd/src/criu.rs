//! Checkpoint and restore of a running VP with CRIU: what to tell `criu dump`
//! and `criu restore` about a VP (pure functions, tested apart from the
//! daemon and the monitor that run them), and the checkpoint's manifest.
//!
//! The VP's tree has mounts CRIU cannot recreate from its images: binds of
//! the monitor's device files, FUSE file systems served by the monitor, the
//! VP's disk, its devpts. They are *external*: `criu dump` records only a key
//! for each, and the monitor that restores builds the same tree (as for a
//! start) and names, for each key, the mount CRIU binds there. proc, sysfs
//! and fresh tmpfs masks are CRIU's own (dumped and remade). `/dev` itself is
//! external too (its owner is the VP's host id), from a copy of its skeleton
//! without the mounts below it (a bind of a mount with locked submounts is
//! refused inside the VP's user namespace).
//!
//! Terminals whose other end is outside the VP (the console, GPS and modem
//! ptys) are external ttys: at restore the monitor hands CRIU its new ptys.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The checkpoint's manifest (`checkpoint.json` beside CRIU's images).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub version: u32,
    pub vp: String,
    pub template: String,
    pub template_build: String,
    /// VP root's host id when it was dumped (the images' user namespace
    /// maps name it): a restore needs the same id range.
    pub host_root_id: Option<u32>,
    /// (key, mount point in the VP) of each external mount.
    pub mounts: Vec<(String, String)>,
    /// (criu's tty key, path in the VP) of each external terminal.
    pub ttys: Vec<(String, String)>,
    /// The framebuffer's contents were saved as `framebuffer.raw`.
    pub framebuffer: bool,
    /// The VP's wakelocks when it was dumped.
    #[serde(default)]
    pub wakelocks: Vec<String>,
}

pub const MANIFEST: &str = "checkpoint.json";
pub const IMAGES: &str = "images";
pub const FRAMEBUFFER: &str = "framebuffer.raw";
pub const MANIFEST_VERSION: u32 = 1;

/// One line of /proc/PID/mountinfo, as much as the plan needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    /// The mount's root within its file system.
    pub root: String,
    pub mount_point: String,
    pub fstype: String,
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse /proc/PID/mountinfo.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let dash = f.iter().position(|x| *x == "-")?;
            Some(Mount {
                root: unescape(f.get(3)?),
                mount_point: unescape(f.get(4)?),
                fstype: (*f.get(dash + 1)?).to_string(),
            })
        })
        .collect()
}

/// Whether CRIU makes this mount itself (proc, sysfs and their binds, a
/// fresh tmpfs) rather than binding one the restoring monitor made.
fn criu_makes(m: &Mount) -> bool {
    match m.fstype.as_str() {
        "proc" | "sysfs" => true,
        "tmpfs" => m.root == "/" && m.mount_point != "/dev",
        _ => false,
    }
}

/// The external mounts of a VP's tree: (key, mount point), keys `m0`, `m1`, …
/// in mountinfo's order (which is the order they were made in).
pub fn external_mounts(mounts: &[Mount]) -> Vec<(String, String)> {
    mounts
        .iter()
        .filter(|m| m.mount_point != "/" && !criu_makes(m))
        .enumerate()
        .map(|(i, m)| (format!("m{i}"), m.mount_point.clone()))
        .collect()
}

/// The terminals of the tree that are external: binds of single devpts
/// entries (the console, GPS and modem ptys, whose masters the monitor and
/// cellsd hold), by path in the VP.
pub fn external_tty_paths(mounts: &[Mount]) -> Vec<String> {
    mounts
        .iter()
        .filter(|m| m.fstype == "devpts" && m.root != "/")
        .map(|m| m.mount_point.clone())
        .collect()
}

/// CRIU's key of a tty: `tty[RDEV:DEV]` (st_rdev, st_dev, hexadecimal).
pub fn tty_key(rdev: u64, dev: u64) -> String {
    format!("tty[{rdev:x}:{dev:x}]")
}

/// What `criu dump` is told (besides the pid and the images folder).
pub fn dump_args(
    mounts: &[(String, String)],
    ttys: &[(String, String)],
    freezer: Option<&Path>,
    leave_running: bool,
) -> Vec<String> {
    let mut a: Vec<String> = [
        "--empty-ns",
        "net",
        "--network-lock",
        "skip",
        "--tcp-close",
        "--manage-cgroups=ignore",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(f) = freezer {
        a.push("--freeze-cgroup".into());
        a.push(f.display().to_string());
    }
    if leave_running {
        a.push("--leave-running".into());
    }
    for (key, mp) in mounts {
        a.push("--external".into());
        a.push(format!("mnt[{mp}]:{key}"));
    }
    for (key, _) in ttys {
        a.push("--external".into());
        a.push(key.clone());
    }
    a
}

/// What `criu restore` is told: `sources` maps each external mount's key to
/// the path (in the restoring monitor's mount namespace) CRIU binds there;
/// `tty_fds` each external tty's key to the fd number it inherits.
pub fn restore_args(
    root: &Path,
    sources: &[(String, PathBuf)],
    tty_fds: &[(String, i32)],
    action_script: &Path,
) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "--root".into(),
        root.display().to_string(),
        "--empty-ns".into(),
        "net".into(),
        "--tcp-close".into(),
        "--manage-cgroups=ignore".into(),
        "--mntns-compat-mode".into(),
        "--restore-detached".into(),
        "--action-script".into(),
        action_script.display().to_string(),
    ];
    for (key, src) in sources {
        a.push("--external".into());
        a.push(format!("mnt[{key}]:{}", src.display()));
    }
    for (key, fd) in tty_fds {
        a.push("--inherit-fd".into());
        a.push(format!("fd[{fd}]:{key}"));
    }
    a
}

/// Where the restoring monitor finds the mount for each external mount
/// point: the same path in the tree it built at `rootfs`, except `/dev`,
/// which comes from `dev_skeleton`.
pub fn restore_sources(
    mounts: &[(String, String)],
    rootfs: &Path,
    dev_skeleton: &Path,
) -> Vec<(String, PathBuf)> {
    mounts
        .iter()
        .map(|(key, mp)| {
            let src = if mp == "/dev" {
                dev_skeleton.to_path_buf()
            } else {
                rootfs.join(mp.trim_start_matches('/'))
            };
            (key.clone(), src)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
193 120 0:48 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
194 193 0:50 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
195 194 0:54 / /proc/acpi ro,nosuid,nodev,noexec,relatime - tmpfs tmpfs ro,size=0k
196 194 0:6 /null /proc/keys rw,relatime - devtmpfs devtmpfs rw
198 194 0:50 /bus /proc/bus ro,nosuid,nodev,noexec,relatime - proc proc rw
202 193 0:51 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
203 202 0:42 / /sys/power rw,nosuid,nodev,noexec,relatime - fuse cells-power rw
208 193 0:52 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755,uid=1000000,gid=1000000
209 208 0:53 / /dev/pts rw,nosuid,noexec,relatime - devpts devpts rw,gid=1000005,mode=620
216 208 0:40 /fb0 /dev/graphics/fb0 rw,nosuid,relatime - tmpfs tmpfs rw,size=4624k,mode=755
228 208 0:53 /0 /dev/console rw,nosuid,noexec,relatime - devpts devpts rw,gid=1000005
229 208 0:53 /1 /dev/ttyGPS0 rw,nosuid,noexec,relatime - devpts devpts rw,gid=1000005
230 208 0:51 / /dev/.sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
232 193 254:0 /state/vps/a/data /data rw,nosuid,nodev,relatime - ext4 /dev/vda rw
233 193 0:40 /net/resolv.conf /system/etc/resolv\\040conf rw,nosuid,relatime - tmpfs tmpfs rw
";

    #[test]
    fn externals_are_what_the_monitor_makes() {
        let m = parse_mountinfo(INFO);
        assert_eq!(m.len(), 15);
        let ext = external_mounts(&m);
        let points: Vec<&str> = ext.iter().map(|(_, p)| p.as_str()).collect();
        assert_eq!(
            points,
            [
                "/proc/keys",
                "/sys/power",
                "/dev",
                "/dev/pts",
                "/dev/graphics/fb0",
                "/dev/console",
                "/dev/ttyGPS0",
                "/data",
                "/system/etc/resolv conf",
            ]
        );
        assert_eq!(ext[0].0, "m0");
        assert_eq!(ext[8].0, "m8");
        assert_eq!(
            external_tty_paths(&m),
            ["/dev/console".to_string(), "/dev/ttyGPS0".to_string()]
        );
    }

    #[test]
    fn tty_keys_are_criu_s() {
        // /dev/pts/0 (136:0) of a devpts with st_dev 0x2a.
        assert_eq!(tty_key(0x8800, 0x2a), "tty[8800:2a]");
    }

    #[test]
    fn dump_and_restore_args() {
        let mounts = vec![
            ("m0".to_string(), "/dev".to_string()),
            ("m1".to_string(), "/data".to_string()),
        ];
        let ttys = vec![("tty[8800:2a]".to_string(), "/dev/console".to_string())];
        let d = dump_args(
            &mounts,
            &ttys,
            Some(Path::new("/sys/fs/cgroup/cells/a")),
            false,
        );
        let s = d.join(" ");
        assert!(
            s.contains("--external mnt[/dev]:m0 --external mnt[/data]:m1"),
            "{s}"
        );
        assert!(s.contains("--external tty[8800:2a]"), "{s}");
        assert!(s.contains("--freeze-cgroup /sys/fs/cgroup/cells/a"), "{s}");
        assert!(s.contains("--empty-ns net"), "{s}");
        assert!(!s.contains("--leave-running"), "{s}");
        assert!(dump_args(&mounts, &ttys, None, true).contains(&"--leave-running".to_string()));

        let src = restore_sources(
            &mounts,
            Path::new("/run/v/rootfs"),
            Path::new("/run/v/devskel"),
        );
        assert_eq!(
            src,
            vec![
                ("m0".to_string(), PathBuf::from("/run/v/devskel")),
                ("m1".to_string(), PathBuf::from("/run/v/rootfs/data")),
            ]
        );
        let r = restore_args(
            Path::new("/run/v/rootfs"),
            &src,
            &[("tty[8800:2a]".into(), 10)],
            Path::new("/run/v/act"),
        )
        .join(" ");
        assert!(r.contains("--root /run/v/rootfs"), "{r}");
        assert!(
            r.contains("--external mnt[m0]:/run/v/devskel --external mnt[m1]:/run/v/rootfs/data"),
            "{r}"
        );
        assert!(r.contains("--inherit-fd fd[10]:tty[8800:2a]"), "{r}");
        assert!(r.contains("--restore-detached"), "{r}");
    }
}
