//! Checkpoint and restore of a running VP with CRIU: what to tell `criu dump`
//! and `criu restore` about a VP (pure functions, tested apart from the
//! daemon and the monitor that run them), and the checkpoint's manifest.
//!
//! The VP's tree has mounts CRIU cannot recreate from its images: binds of
//! the monitor's device files, FUSE file systems served by the monitor, the
//! VP's disk, its devpts. They are *external*: `criu dump` records only a key
//! for each, and the monitor that restores builds the same tree (as for a
//! start) and names, for each key, the mount CRIU binds there. proc and
//! sysfs are CRIU's own (remade in the VP's new namespaces). `/dev` itself is
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
    /// maps name it): a restore under another range moves those maps.
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
    /// Files of the monitor's FUSE devices the VP's processes had open
    /// (streams CRIU cannot reopen and seek): handed over new at restore.
    #[serde(default)]
    pub files: Vec<ExternalFile>,
}

/// An open file of a device served by the monitor (an evdev node, a power
/// or alarm file): CRIU's key, its path in the VP and its open flags.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExternalFile {
    pub key: String,
    pub path: String,
    pub flags: i32,
}

/// An open file of a VP process: from /proc/PID/fdinfo/N (mnt_id, flags),
/// stat (inode) and the fd's link (path).
#[derive(Debug, Clone, PartialEq)]
pub struct OpenFile {
    pub mnt_id: u32,
    /// On a FUSE file system (statfs).
    pub fuse: bool,
    pub ino: u64,
    pub flags: i32,
    pub path: String,
}

/// The open files that must be external: those of the monitor's FUSE
/// devices, once each, with the flags they are reopened with (access mode
/// and O_NONBLOCK). A restored VP's were handed over by its monitor, opened
/// in the monitor's tree at `rootfs`: their mount is not the VP's, their
/// path starts with `rootfs` (then cut off).
pub fn external_files(open: &[OpenFile], mounts: &[Mount], rootfs: &str) -> Vec<ExternalFile> {
    let mut out: Vec<ExternalFile> = Vec::new();
    for f in open {
        let vp_mount = mounts.iter().find(|m| m.id == f.mnt_id);
        let path = match vp_mount {
            Some(m) if m.fstype.starts_with("fuse") => f.path.clone(),
            None if f.fuse => match f.path.strip_prefix(rootfs) {
                Some(rest) if rest.starts_with('/') => rest.to_string(),
                _ => continue,
            },
            _ => continue,
        };
        if !path.starts_with('/') {
            continue;
        }
        let key = format!("file[{:x}:{:x}]", f.mnt_id, f.ino);
        if out.iter().any(|e| e.key == key) {
            continue;
        }
        out.push(ExternalFile {
            key,
            path,
            flags: f.flags & (libc::O_ACCMODE | libc::O_NONBLOCK),
        });
    }
    out
}

/// `flags:` of /proc/PID/fdinfo/N (octal).
pub fn fdinfo_field(text: &str, name: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .map(|v| v.trim().to_string())
}

pub const MANIFEST: &str = "checkpoint.json";
pub const IMAGES: &str = "images";
pub const FRAMEBUFFER: &str = "framebuffer.raw";
pub const MANIFEST_VERSION: u32 = 1;

/// The error lines of a criu log (the first eight), for a message.
pub fn log_errors(log: &Path) -> String {
    std::fs::read_to_string(log)
        .map(|t| {
            t.lines()
                .filter(|l| l.contains("Error"))
                .take(8)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// One line of /proc/PID/mountinfo, as much as the plan needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    pub id: u32,
    /// The mount's root within its file system.
    pub root: String,
    pub mount_point: String,
    pub fstype: String,
}

/// A mount table's octal escapes (`\040` for a space) undone.
pub(crate) fn unescape(s: &str) -> String {
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
                id: f.first()?.parse().ok()?,
                root: unescape(f.get(3)?),
                mount_point: unescape(f.get(4)?),
                fstype: (*f.get(dash + 1)?).to_string(),
            })
        })
        .collect()
}

/// Whether CRIU makes this mount itself (proc, sysfs and their binds: they
/// belong to the VP's new pid and network namespaces) rather than binding
/// one the restoring monitor made (everything else, the tmpfs masks too:
/// made by CRIU inside the VP's user namespace they would belong to VP
/// root).
fn criu_makes(m: &Mount) -> bool {
    matches!(m.fstype.as_str(), "proc" | "sysfs")
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

/// `--external file[…]` for each external file (added to the dump's args).
pub fn file_args(files: &[ExternalFile]) -> Vec<String> {
    files
        .iter()
        .flat_map(|f| ["--external".to_string(), f.key.clone()])
        .collect()
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

/// CRIU image magics (criu/include/magic.h).
const IMG_COMMON_MAGIC: u32 = 0x5456_4319;
const FILES_MAGIC: u32 = 0x5630_3138;

fn read_varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A protobuf field: (field number, wire type, the whole encoded field,
/// the value's bytes for a length-delimited field).
type Field<'a> = (u64, u64, &'a [u8], &'a [u8]);

/// The fields of a protobuf message.
fn fields(b: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let start = at;
        let key = read_varint(b, &mut at)?;
        let (num, wire) = (key >> 3, key & 7);
        let value = match wire {
            0 => {
                read_varint(b, &mut at)?;
                &b[at..at]
            }
            1 => {
                at = at.checked_add(8).filter(|e| *e <= b.len())?;
                &b[at..at]
            }
            2 => {
                let n = usize::try_from(read_varint(b, &mut at)?).ok()?;
                let end = at.checked_add(n).filter(|e| *e <= b.len())?;
                let v = &b[at..end];
                at = end;
                v
            }
            5 => {
                at = at.checked_add(4).filter(|e| *e <= b.len())?;
                &b[at..at]
            }
            _ => return None,
        };
        out.push((num, wire, &b[start..at], value));
    }
    Some(out)
}

/// A reg_file_entry with `pos` (field 3) set to "none" (u64::MAX) when it
/// is an external file (`ext`, field 9, true); None if it is not one.
fn unpositioned_reg(reg: &[u8]) -> Option<Vec<u8>> {
    let f = fields(reg)?;
    let ext = f.iter().any(|(n, w, raw, _)| {
        *n == 9 && *w == 0 && {
            let mut at = 0;
            // The key is one byte for field 9.
            at += 1;
            read_varint(raw, &mut at) == Some(1)
        }
    });
    if !ext {
        return None;
    }
    let mut out = Vec::with_capacity(reg.len() + 10);
    for (n, w, raw, _) in f {
        if n == 3 && w == 0 {
            write_varint(&mut out, 3 << 3);
            write_varint(&mut out, u64::MAX);
        } else {
            out.extend_from_slice(raw);
        }
    }
    Some(out)
}

/// CRIU restores an open file's position with lseek, which a stream (the
/// monitor's evdev, power and alarm files) refuses; `pos` = u64::MAX means
/// "leave it" (as CRIU does itself for /dev/kmsg). Rewrites `files.img` so
/// for every external file. Returns how many entries changed.
pub fn unposition_external_files(img: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let mut changed = 0;
    let out = rewrite_entries(img, FILES_MAGIC, "files.img", &mut |f, new| {
        for (n, w, raw, value) in f {
            match (n == 3 && w == 2)
                .then(|| unpositioned_reg(value))
                .flatten()
            {
                Some(reg) => {
                    write_varint(new, (3 << 3) | 2);
                    write_varint(new, reg.len() as u64);
                    new.extend_from_slice(&reg);
                    changed += 1;
                }
                None => new.extend_from_slice(raw),
            }
        }
        Ok(())
    })?;
    Ok((out, changed))
}

/// Rewrites one entry of an image: its fields in, the new message out.
type EntryRewrite<'r> = dyn FnMut(Vec<Field<'_>>, &mut Vec<u8>) -> Result<(), String> + 'r;

/// A CRIU image (`IMG_COMMON_MAGIC`, `magic`, then entries of a u32 size
/// and a protobuf message) with each entry rewritten by `entry(fields,
/// out)`; errors are prefixed with `name`.
fn rewrite_entries(
    img: &[u8],
    magic: u32,
    name: &str,
    entry: &mut EntryRewrite<'_>,
) -> Result<Vec<u8>, String> {
    let bad = |what: &str| format!("{name}: {what}");
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(img.get(at..at + 4)?.try_into().ok()?))
    };
    if word(0) != Some(IMG_COMMON_MAGIC) || word(4) != Some(magic) {
        return Err(bad("not the CRIU image expected"));
    }
    let mut out = img[..8].to_vec();
    let mut at = 8;
    while at < img.len() {
        let len = word(at).ok_or_else(|| bad("truncated entry size"))? as usize;
        let e = img
            .get(at + 4..at + 4 + len)
            .ok_or_else(|| bad("truncated entry"))?;
        at += 4 + len;
        let f = fields(e).ok_or_else(|| bad("an entry is not protobuf"))?;
        let mut new = Vec::with_capacity(e.len() + 10);
        entry(f, &mut new).map_err(|m| bad(&m))?;
        out.extend_from_slice(&(new.len() as u32).to_le_bytes());
        out.extend_from_slice(&new);
    }
    Ok(out)
}

/// CRIU's user namespace image (`userns-*.img`).
const USERNS_MAGIC: u32 = 0x5547_4906;

/// A VP's id maps in CRIU's `userns-*.img` moved from one host id range to
/// another (a VP restored with other host ids than it was dumped with:
/// moved to another cellsd, or imported under another range). Each
/// extent's host side (`lower_first`) in `[old, old+size)` moves by
/// `new - old`; one already in `[new, new+size)` is left (a second run
/// changes nothing); any other is refused. Returns the image and how many
/// extents moved.
pub fn shift_userns(img: &[u8], old: u32, new: u32, size: u32) -> Result<(Vec<u8>, usize), String> {
    let within = |x: u64, base: u32| x >= u64::from(base) && x < u64::from(base) + u64::from(size);
    let mut moved = 0;
    let out = rewrite_entries(img, USERNS_MAGIC, "userns image", &mut |f, new_entry| {
        for (n, w, raw, value) in f {
            if !((n == 1 || n == 2) && w == 2) {
                new_entry.extend_from_slice(raw);
                continue;
            }
            // A uid_gid_extent: first = 1, lower_first = 2, count = 3.
            let ext = fields(value).ok_or("an extent is not protobuf")?;
            let mut e = Vec::with_capacity(value.len() + 4);
            for (en, ew, eraw, _) in ext {
                if en == 2 && ew == 0 {
                    let mut i = 0;
                    read_varint(eraw, &mut i);
                    let lower = read_varint(eraw, &mut i).ok_or("lower_first")?;
                    let to = if within(lower, old) {
                        moved += 1;
                        lower - u64::from(old) + u64::from(new)
                    } else if within(lower, new) {
                        lower
                    } else {
                        return Err(format!(
                            "an id map to host id {lower}, outside the VP's range {old}+{size}"
                        ));
                    };
                    write_varint(&mut e, 2 << 3);
                    write_varint(&mut e, to);
                } else {
                    e.extend_from_slice(eraw);
                }
            }
            write_varint(new_entry, (n << 3) | 2);
            write_varint(new_entry, e.len() as u64);
            new_entry.extend_from_slice(&e);
        }
        Ok(())
    })?;
    Ok((out, moved))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extent(first: u64, lower: u64, count: u64) -> Vec<u8> {
        let mut e = Vec::new();
        for (n, v) in [(1u64, first), (2, lower), (3, count)] {
            write_varint(&mut e, n << 3);
            write_varint(&mut e, v);
        }
        e
    }

    fn userns_img(lower: u64) -> Vec<u8> {
        let mut entry = Vec::new();
        for field in [1u64, 2] {
            let e = extent(0, lower, 65536);
            write_varint(&mut entry, (field << 3) | 2);
            write_varint(&mut entry, e.len() as u64);
            entry.extend_from_slice(&e);
        }
        let mut img = IMG_COMMON_MAGIC.to_le_bytes().to_vec();
        img.extend_from_slice(&USERNS_MAGIC.to_le_bytes());
        img.extend_from_slice(&(entry.len() as u32).to_le_bytes());
        img.extend_from_slice(&entry);
        img
    }

    #[test]
    fn id_maps_move_to_the_new_range_once() {
        let img = userns_img(1_065_536);
        let (out, n) = shift_userns(&img, 1_065_536, 3_000_000, 65536).unwrap();
        assert_eq!(n, 2, "the uid and the gid map");
        assert_eq!(out, userns_img(3_000_000));
        // Again: nothing left to move, the same image.
        let (again, n) = shift_userns(&out, 1_065_536, 3_000_000, 65536).unwrap();
        assert_eq!((again, n), (out, 0));
        // A map to someone else's ids (host root) is refused.
        let e = shift_userns(&userns_img(0), 1_065_536, 3_000_000, 65536).unwrap_err();
        assert!(e.contains("outside the VP's range"), "{e}");
        assert!(shift_userns(b"junk", 1, 2, 3).is_err());
    }

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
                "/proc/acpi",
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
        assert_eq!(ext[9].0, "m9");
        assert_eq!(
            external_tty_paths(&m),
            ["/dev/console".to_string(), "/dev/ttyGPS0".to_string()]
        );
    }

    #[test]
    fn files_on_the_monitor_s_fuse_devices_are_external() {
        let m = parse_mountinfo(INFO);
        let fuse = m.iter().find(|x| x.mount_point == "/sys/power").unwrap().id;
        let data = m.iter().find(|x| x.mount_point == "/data").unwrap().id;
        assert_eq!(fuse, 203);
        let of = |mnt_id, fuse, ino, flags, path: &str| OpenFile {
            mnt_id,
            fuse,
            ino,
            flags,
            path: path.into(),
        };
        let open = vec![
            of(
                fuse,
                true,
                5,
                0o4000 | 0o100000,
                "/sys/power/wait_for_fb_wake",
            ),
            // The same file in another process: once.
            of(fuse, true, 5, 0o4000, "/sys/power/wait_for_fb_wake"),
            // A regular file of /data is CRIU's.
            of(data, false, 9, 2, "/data/log"),
            // Not a path (a deleted or anonymous file): left to CRIU.
            of(fuse, true, 6, 0, "anon_inode:x"),
            // Handed over at an earlier restore: the monitor's mount.
            of(58, true, 7, 0o4000, "/run/v/rootfs/dev/input/event0"),
            // Another mount the VP does not have, not FUSE: CRIU's.
            of(59, false, 8, 0, "/run/v/rootfs/x"),
        ];
        let ext = external_files(&open, &m, "/run/v/rootfs");
        assert_eq!(
            ext,
            vec![
                ExternalFile {
                    key: "file[cb:5]".into(),
                    path: "/sys/power/wait_for_fb_wake".into(),
                    flags: libc::O_NONBLOCK,
                },
                ExternalFile {
                    key: "file[3a:7]".into(),
                    path: "/dev/input/event0".into(),
                    flags: libc::O_NONBLOCK,
                },
            ]
        );
        assert_eq!(
            file_args(&ext),
            ["--external", "file[cb:5]", "--external", "file[3a:7]"]
        );
        let info = "pos:\t0\nflags:\t0104002\nmnt_id:\t203\nino:\t5\n";
        assert_eq!(fdinfo_field(info, "flags").as_deref(), Some("0104002"));
        assert_eq!(fdinfo_field(info, "mnt_id").as_deref(), Some("203"));
    }

    fn entry(fields: &[u8]) -> Vec<u8> {
        let mut e = (fields.len() as u32).to_le_bytes().to_vec();
        e.extend_from_slice(fields);
        e
    }

    /// file_entry { type = 1 (REG), id = 7, reg = { id = 7, flags = 0x800, pos = 0, name = "file[cb:5]", ext = true } }
    fn reg_entry(ext: bool, pos: u8) -> Vec<u8> {
        let mut reg = vec![0x08, 7, 0x10, 0x80, 0x10, 0x18, pos, 0x32, 10];
        reg.extend_from_slice(b"file[cb:5]");
        if ext {
            reg.extend_from_slice(&[0x48, 1]);
        }
        let mut f = vec![0x08, 1, 0x10, 7, 0x1a, reg.len() as u8];
        f.extend_from_slice(&reg);
        entry(&f)
    }

    #[test]
    fn external_files_are_not_positioned_at_restore() {
        let mut img = Vec::new();
        img.extend_from_slice(&IMG_COMMON_MAGIC.to_le_bytes());
        img.extend_from_slice(&FILES_MAGIC.to_le_bytes());
        img.extend(reg_entry(true, 0));
        img.extend(reg_entry(false, 5));
        let (out, changed) = unposition_external_files(&img).unwrap();
        assert_eq!(changed, 1);
        // Read it back: the external one's pos is u64::MAX, the other's 5.
        let mut at = 8;
        let mut pos = Vec::new();
        while at < out.len() {
            let len = u32::from_le_bytes(out[at..at + 4].try_into().unwrap()) as usize;
            let e = &out[at + 4..at + 4 + len];
            at += 4 + len;
            let f = fields(e).unwrap();
            let reg = f.iter().find(|x| x.0 == 3).unwrap().3;
            let rf = fields(reg).unwrap();
            let raw = rf.iter().find(|x| x.0 == 3).unwrap().2;
            let mut i = 1;
            pos.push(read_varint(raw, &mut i).unwrap());
            // Everything else is as it was.
            assert!(rf.iter().any(|x| x.0 == 6 && x.3 == b"file[cb:5]"));
        }
        assert_eq!(pos, vec![u64::MAX, 5]);
        // Idempotent, and strangers are refused.
        assert_eq!(unposition_external_files(&out).unwrap().0, out);
        assert!(unposition_external_files(b"not an image").is_err());
        let mut cut = img.clone();
        cut.truncate(img.len() - 3);
        assert!(unposition_external_files(&cut).is_err());
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
