//! `cellctl doctor`: what this kernel and machine offer for VPs, Android
//! ones in particular, each finding with its fix. It runs here, without
//! cellsd (it is what to run when cellsd will not start), reading /proc,
//! /sys and /dev and trying the few things only a try can tell (a user
//! namespace, an idmapped mount of the state folder, a sealed memfd, a
//! seccomp filter). Run as root for the checks that need it.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Level {
    /// Present and working.
    Ok,
    /// Missing, but VPs work without it (what is lost is said).
    Optional,
    /// Missing: VPs (or Android VPs) need it.
    Missing,
    /// Not checked (e.g. needs root).
    Skipped,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Optional => "optional",
            Level::Missing => "MISSING",
            Level::Skipped => "skipped",
        }
    }
}

#[derive(Debug)]
pub struct Finding {
    pub name: &'static str,
    pub level: Level,
    pub detail: String,
    pub fix: String,
}

fn f(
    name: &'static str,
    level: Level,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        name,
        level,
        detail: detail.into(),
        fix: fix.into(),
    }
}

/// What the kernel has, read once: the inputs of every check.
pub struct Facts {
    pub filesystems: String,
    pub release: String,
    pub modules_dir: Option<std::path::PathBuf>,
}

impl Facts {
    pub fn read() -> Facts {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
        let m = Path::new("/lib/modules").join(&release);
        Facts {
            filesystems: std::fs::read_to_string("/proc/filesystems").unwrap_or_default(),
            modules_dir: m.is_dir().then_some(m),
            release,
        }
    }

    fn has_fs(&self, name: &str) -> bool {
        self.filesystems
            .lines()
            .any(|l| l.split_whitespace().last() == Some(name))
    }

    /// Is `module` built for this kernel (so `modprobe` would load it)?
    fn module(&self, module: &str) -> bool {
        let Some(dir) = &self.modules_dir else {
            return false;
        };
        for list in ["modules.dep", "modules.builtin"] {
            let text = std::fs::read_to_string(dir.join(list)).unwrap_or_default();
            if text.lines().any(|l| {
                let path = l.split(':').next().unwrap_or("");
                let file = path.rsplit('/').next().unwrap_or("");
                let stem = file.split('.').next().unwrap_or("");
                stem.replace('-', "_") == module
            }) {
                return true;
            }
        }
        false
    }
}

fn is_char(p: &str) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_char_device())
}

fn binder(k: &Facts) -> Finding {
    let pool: Vec<String> = std::fs::read_dir("/dev")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("binder") || n.ends_with("binder"))
        .filter(|n| is_char(&format!("/dev/{n}")))
        .collect();
    if k.has_fs("binder") {
        f(
            "binder",
            Level::Ok,
            "binderfs: each VP gets its own binder, hwbinder and vndbinder",
            "",
        )
    } else if !pool.is_empty() {
        f(
            "binder",
            Level::Ok,
            format!(
                "a fixed pool ({}) of binder_linux devices: one VP per device, no binderfs",
                pool.join(", ")
            ),
            "for a binder per VP without a pool: a kernel with CONFIG_ANDROID_BINDERFS=y",
        )
    } else if k.module("binder_linux") {
        f(
            "binder",
            Level::Missing,
            "the binder_linux module is built but not loaded",
            "modprobe binder_linux (binderfs comes with it; Android VPs need binder)",
        )
    } else {
        f(
            "binder",
            Level::Missing,
            "no binderfs and no /dev/binder*: Android's system services cannot talk",
            "a kernel with CONFIG_ANDROID_BINDER_IPC=y and CONFIG_ANDROID_BINDERFS=y \
             (or =m, then modprobe binder_linux)",
        )
    }
}

fn memfd() -> Finding {
    // SAFETY: a NUL-terminated name and flags; the kernel returns a new fd.
    let fd = unsafe {
        libc::memfd_create(
            c"cells-doctor".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return f(
            "memfd",
            Level::Missing,
            format!("memfd_create: {}", std::io::Error::last_os_error()),
            "a kernel with CONFIG_MEMFD_CREATE=y (Android's shared memory uses it when there is no ashmem)",
        );
    }
    // SAFETY: fd was just returned by the kernel; nobody else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: fcntl on an fd we own with integer arguments.
    let sealed = unsafe {
        libc::fcntl(
            fd.as_raw_fd(),
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
        )
    } == 0;
    let ashmem = if is_char("/dev/ashmem") {
        "; /dev/ashmem too"
    } else {
        "; no /dev/ashmem (Android 10+ uses memfd)"
    };
    if sealed {
        f(
            "memfd",
            Level::Ok,
            format!("memfd_create with seals{ashmem}"),
            "",
        )
    } else {
        f(
            "memfd",
            Level::Missing,
            "memfd without seals",
            "a kernel with file sealing (Linux 3.17+)",
        )
    }
}

fn fuse(k: &Facts) -> Finding {
    if is_char("/dev/fuse") && k.has_fs("fuse") {
        f(
            "fuse",
            Level::Ok,
            "/dev/fuse: each VP's /sys/power, input and display files",
            "",
        )
    } else {
        f(
            "fuse",
            Level::Missing,
            "no /dev/fuse: cellsd serves each VP's /sys/power and devices with FUSE",
            if k.module("fuse") {
                "modprobe fuse"
            } else {
                "a kernel with CONFIG_FUSE_FS"
            },
        )
    }
}

fn uinput(k: &Facts) -> Finding {
    if is_char("/dev/uinput") || is_char("/dev/input/uinput") {
        f(
            "uinput",
            Level::Ok,
            "/dev/uinput: Android's virtual input devices",
            "",
        )
    } else {
        f(
            "uinput",
            Level::Optional,
            "no /dev/uinput: VPs' own input devices are cells' (they work); Android \
             services that make virtual input devices (Bluetooth HID, some test tools) fail",
            if k.module("uinput") {
                "modprobe uinput"
            } else {
                "a kernel with CONFIG_INPUT_UINPUT"
            },
        )
    }
}

fn overlay(k: &Facts) -> Finding {
    if k.has_fs("overlay") {
        f(
            "overlay",
            Level::Ok,
            "overlayfs: a VP's writable layer over its template",
            "",
        )
    } else if k.module("overlay") {
        f(
            "overlay",
            Level::Missing,
            "overlayfs is built but not loaded",
            "modprobe overlay",
        )
    } else {
        f(
            "overlay",
            Level::Missing,
            "no overlayfs: VPs cannot share a template",
            "a kernel with CONFIG_OVERLAY_FS",
        )
    }
}

/// A child in a new user namespace mapping 0..65536 to 100000.. (when
/// run as root); killed, by its pid, when dropped.
struct UserNs {
    _child: Reaped,
    fd: OwnedFd,
}

struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn new_userns() -> std::io::Result<UserNs> {
    let mut cmd = std::process::Command::new("/bin/sleep");
    cmd.arg("30")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: between fork and exec the child only calls unshare.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // spawn returns once the child has exec'd: it is in its namespace.
    let child = Reaped(cmd.spawn()?);
    let pid = child.0.id();
    if is_root() {
        std::fs::write(format!("/proc/{pid}/uid_map"), "0 100000 65536\n")?;
        std::fs::write(format!("/proc/{pid}/gid_map"), "0 100000 65536\n")?;
    }
    let fd = std::fs::File::open(format!("/proc/{pid}/ns/user"))?.into();
    Ok(UserNs { _child: child, fd })
}

fn userns() -> Finding {
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    if max == Some(0) {
        return f(
            "user namespaces",
            Level::Missing,
            "user.max_user_namespaces is 0",
            "sysctl -w user.max_user_namespaces=15000 (and in /etc/sysctl.d)",
        );
    }
    match new_userns() {
        Ok(_) => f(
            "user namespaces",
            Level::Ok,
            "a VP's root is an unprivileged host uid",
            "",
        ),
        Err(e) => f(
            "user namespaces",
            Level::Missing,
            format!("unshare(CLONE_NEWUSER): {e}"),
            "a kernel with CONFIG_USER_NS=y; on Debian also sysctl kernel.unprivileged_userns_clone=1 \
             if unprivileged; without them VPs need --privileged",
        ),
    }
}

#[repr(C)]
#[derive(Default)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const OPEN_TREE_CLONE: u32 = 1;

fn fs_name(magic: i64) -> String {
    match magic {
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x794C_7630 => "overlayfs".into(),
        0x6573_5546 => "fuse".into(),
        0x2FC1_2FC1 => "zfs".into(),
        0xF2F5_2010 => "f2fs".into(),
        0x6969 => "nfs".into(),
        m => format!("fs magic {m:#x}"),
    }
}

fn idmap(state: &Path) -> Finding {
    const NAME: &str = "idmapped mounts";
    if !is_root() {
        return f(
            NAME,
            Level::Skipped,
            "needs root",
            "run cellctl doctor as root",
        );
    }
    // The nearest existing folder: the state folder or where it will be.
    let mut dir = state.to_path_buf();
    while !dir.is_dir() {
        match dir.parent() {
            Some(p) => dir = p.to_path_buf(),
            None => break,
        }
    }
    let Ok(c) = CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return f(
            NAME,
            Level::Skipped,
            "the state folder's name has a NUL",
            "",
        );
    };
    // SAFETY: statfs into a zeroed struct we own; c is NUL-terminated.
    let kind = unsafe {
        let mut s: libc::statfs = std::mem::zeroed();
        if libc::statfs(c.as_ptr(), &mut s) == 0 {
            fs_name(s.f_type)
        } else {
            "unknown fs".into()
        }
    };
    let where_ = format!("{} ({kind})", dir.display());
    let ns = match new_userns() {
        Ok(ns) => ns,
        Err(e) => {
            return f(
                NAME,
                Level::Skipped,
                format!("no user namespace to map with: {e}"),
                "see user namespaces",
            )
        }
    };
    // SAFETY: c is a valid string; the kernel returns a new detached mount fd.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as u32,
        )
    };
    if fd < 0 {
        return f(
            NAME,
            Level::Missing,
            format!("open_tree {where_}: {}", std::io::Error::last_os_error()),
            "Linux 5.12+",
        );
    }
    // SAFETY: fd was just returned by the kernel; nobody else owns it.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        userns_fd: ns.fd.as_raw_fd() as u64,
        ..Default::default()
    };
    // SAFETY: attr is a struct mount_attr living across the call; the mount
    // is detached (it goes when `tree` is closed).
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r == 0 {
        f(
            NAME,
            Level::Ok,
            format!("on {where_}: templates are shared, idmapped, by every VP"),
            "",
        )
    } else {
        let e = std::io::Error::last_os_error();
        f(
            NAME,
            Level::Missing,
            format!("on {where_}: {e}"),
            "put the state folder (--state-dir) on ext4, xfs, btrfs or tmpfs (Linux 6.3+); \
             else VPs need --privileged",
        )
    }
}

fn cgroups() -> Vec<Finding> {
    let v2_root = if Path::new("/sys/fs/cgroup/cgroup.controllers").is_file() {
        Some("/sys/fs/cgroup")
    } else if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").is_file() {
        Some("/sys/fs/cgroup/unified")
    } else {
        None
    };
    let v1: Vec<String> = std::fs::read_to_string("/proc/cgroups")
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            // subsys hierarchy num_cgroups enabled; hierarchy 0 = not on v1.
            (c.len() == 4 && c[1] != "0" && c[3] == "1").then(|| c[0].to_string())
        })
        .collect();
    let mut out = Vec::new();
    match v2_root {
        Some(root) if root == "/sys/fs/cgroup" => {
            let ctl =
                std::fs::read_to_string(format!("{root}/cgroup.controllers")).unwrap_or_default();
            let have: Vec<&str> = ctl.split_whitespace().collect();
            let missing: Vec<&str> = ["cpu", "memory", "pids", "cpuset", "io"]
                .into_iter()
                .filter(|c| !have.contains(c))
                .collect();
            out.push(if missing.is_empty() {
                f(
                    "cgroup v2",
                    Level::Ok,
                    format!("pure v2 at {root}: {}", have.join(" ")),
                    "",
                )
            } else {
                f(
                    "cgroup v2",
                    if missing.iter().any(|m| ["memory", "pids"].contains(m)) {
                        Level::Missing
                    } else {
                        Level::Optional
                    },
                    format!(
                        "pure v2 at {root}: {}; no {}",
                        have.join(" "),
                        missing.join(" ")
                    ),
                    format!(
                        "enable them in the kernel (CONFIG_CGROUP_*, CONFIG_MEMCG) or on its \
                         command line (cgroup_enable=memory); missing: {}",
                        missing.join(", ")
                    ),
                )
            });
            // v2's freezer is cgroup.freeze in every non-root group (5.2+).
            let freeze = std::fs::read_dir(root)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.path().join("cgroup.freeze").exists())
                || probe_freeze(root);
            out.push(if freeze {
                f("freezer", Level::Ok, "cgroup v2's cgroup.freeze", "")
            } else {
                f(
                    "freezer",
                    Level::Missing,
                    "no cgroup.freeze: background VPs cannot be frozen",
                    "Linux 5.2+",
                )
            });
        }
        _ => {
            let want = ["freezer", "memory", "cpu", "pids", "devices"];
            let missing: Vec<&str> = want
                .into_iter()
                .filter(|c| !v1.iter().any(|h| h == c))
                .collect();
            out.push(if missing.is_empty() {
                f(
                    "cgroups",
                    Level::Ok,
                    format!(
                        "v1 ({}){}",
                        v1.join(" "),
                        if v2_root.is_some() {
                            " with a v2 hierarchy at /sys/fs/cgroup/unified"
                        } else {
                            ""
                        }
                    ),
                    "",
                )
            } else {
                f(
                    "cgroups",
                    if missing.contains(&"freezer") || missing.contains(&"memory") {
                        Level::Missing
                    } else {
                        Level::Optional
                    },
                    format!("v1 has {}; no {}", v1.join(" "), missing.join(" ")),
                    "mount the missing v1 controllers, or boot with a pure cgroup v2 \
                     (systemd.unified_cgroup_hierarchy=1)",
                )
            });
        }
    }
    out
}

/// No child group to look at (a fresh v2 tree): make one, look, remove it.
fn probe_freeze(root: &str) -> bool {
    if !is_root() {
        return false;
    }
    let dir = Path::new(root).join(format!("cells-doctor-{}", std::process::id()));
    if std::fs::create_dir(&dir).is_err() {
        return false;
    }
    let has = dir.join("cgroup.freeze").exists();
    let _ = std::fs::remove_dir(&dir);
    has
}

fn seccomp() -> Finding {
    // With a NULL program, PR_SET_SECCOMP/SECCOMP_MODE_FILTER fails with
    // EFAULT where filters exist and EINVAL where they do not.
    // SAFETY: prctl with integer arguments and a NULL pointer the kernel
    // only reads (and rejects).
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            std::ptr::null::<libc::c_void>(),
            0,
            0,
        )
    };
    let e = std::io::Error::last_os_error();
    if r != 0 && e.raw_os_error() == Some(libc::EFAULT) {
        f(
            "seccomp",
            Level::Ok,
            "seccomp filters: cellsd's VP filter and Android's own (zygote's) work",
            "",
        )
    } else {
        f(
            "seccomp",
            Level::Missing,
            format!("no seccomp filters ({e})"),
            "a kernel with CONFIG_SECCOMP_FILTER=y",
        )
    }
}

/// Every check, in order.
pub fn check(state: &Path) -> Vec<Finding> {
    let k = Facts::read();
    let mut out = vec![
        binder(&k),
        memfd(),
        fuse(&k),
        uinput(&k),
        overlay(&k),
        idmap(state),
    ];
    out.extend(cgroups());
    out.push(seccomp());
    out.push(userns());
    out
}

pub fn print(state: &Path, json: bool) -> u8 {
    let release = Facts::read().release;
    let found = check(state);
    let bad = found.iter().filter(|x| x.level == Level::Missing).count();
    if json {
        let v: Vec<serde_json::Value> = found
            .iter()
            .map(|x| {
                serde_json::json!({
                    "check": x.name,
                    "level": x.level.word().to_lowercase(),
                    "detail": x.detail,
                    "fix": x.fix,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"kernel": release, "checks": v, "missing": bad})
        );
    } else {
        println!("kernel {release}");
        let w = found.iter().map(|x| x.name.len()).max().unwrap_or(0);
        for x in &found {
            println!("{:<8} {:<w$}  {}", x.level.word(), x.name, x.detail);
            if !x.fix.is_empty() && x.level != Level::Ok {
                println!("{:<8} {:<w$}  fix: {}", "", "", x.fix);
            }
        }
        if bad == 0 {
            println!("nothing missing");
        } else {
            println!("{bad} missing: see each fix");
        }
    }
    if bad == 0 {
        0
    } else {
        1
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}
