//! The lights device: the notification LEDs, the backlight and the
//! vibrator, as Cells' device namespaces gave them to each VP.
//!
//! Each VP has its own views of `/sys/class/leds` and
//! `/sys/class/backlight` (a FUSE file system its monitor serves, as
//! `/sys/power` is): the host's LED and backlight class devices (or, on a
//! host without them, cells' own: LEDs `red`, `green`, `blue`, backlight
//! `panel0`), and Android's LED vibrator `/sys/class/leds/vibrator`
//! (`duration` in ms, `activate`, `state`). A VP reads back what it wrote.
//! The foreground VP's writes reach the device (the host's sysfs file, or
//! cells' record of a device the host lacks); a background VP's writes
//! succeed and change nothing, and its last values are replayed when it
//! becomes the foreground; only the foreground vibrates. A bad write
//! (not a number, past `max_brightness`) is EINVAL and changes nothing.
//!
//! The values live in the monitor (they survive a cellsd restart; cellsd
//! asks for them again when it takes the VP over) and go to cellsd over a
//! socket pair whose other end cellsd takes from the monitor. One device in
//! the model for the three (one file system over both class folders).
//! Policies: `foreground` (default), `none`.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite,
    Request, TimeOrNow, WriteFlags,
};
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType};
use serde::{Deserialize, Serialize};

use crate::devices::model::{DeviceSpec, Policy};
use crate::devices::registry::{
    io, Attach, Detach, Device, DeviceError, DeviceRecord, HostDevice, Made, Prepare, VpCtx,
    VpDevice,
};

pub const NAME: &str = "lights";
/// The host's class folders (and the VP's views of them).
pub const LEDS: &str = "leds";
pub const BACKLIGHT: &str = "backlight";
pub const VIBRATOR: &str = "vibrator";
/// The longest vibration a VP may ask for (ms).
pub const MAX_VIBRATION_MS: u32 = 60_000;

pub const DEVICE: Device = Device {
    spec: DeviceSpec {
        name: NAME,
        default: Policy::Foreground,
        policies: &[Policy::Foreground, Policy::None],
        about: "/sys/class/leds (notification LEDs, the vibrator) and /sys/class/backlight of the VP's own: the foreground's writes reach the device, a background VP's succeed and change nothing until it is the foreground (then replayed); only the foreground vibrates",
    },
    vp_side,
};

/// One light a VP sees: its class folder, name and maximum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Light {
    pub class: String,
    pub name: String,
    pub max: u32,
}

/// What the host side prepares for a VP: the lights it sees.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LightsConfig {
    pub lights: Vec<Light>,
    pub vibrator: bool,
}

/// Monitor -> cellsd (and cellsd -> monitor: `Dump`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// The VP set a light's brightness.
    Set {
        class: String,
        name: String,
        value: u32,
    },
    /// The VP started its vibrator for `ms`.
    Vibrate { ms: u32 },
    /// cellsd asks for every value the VP set (after taking it over).
    Dump,
}

// ------------------------------------------------------------ VP side

fn vp_side(c: &VpCtx<'_>, m: &mut Made) -> Result<(), DeviceError> {
    if c.policy == Policy::None {
        return Ok(());
    }
    let cfg: LightsConfig = c.request.config_of(NAME).unwrap_or_default();
    let dir = c.dir.join("lights");
    let dev =
        crate::devices::fusefs::mount(&dir, "cells-lights").map_err(io("mount the lights"))?;
    let (ours, theirs) = socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(io("the lights' socket pair"))?;
    let link = Arc::new(ours);
    let state = Arc::new(Mutex::new(Tree::new(&cfg, c.owner.unwrap_or(0))));
    let fs = LightsFs {
        state: Arc::clone(&state),
        link: Arc::clone(&link),
    };
    let session =
        fuser::Session::from_fd(fs, dev, fuser::SessionACL::All, fuser::Config::default())
            .map_err(io("FUSE handshake of the lights"))?;
    m.fds.records.insert(
        NAME.to_string(),
        DeviceRecord {
            fds: vec![theirs.as_raw_fd()],
            data: serde_json::Value::Null,
        },
    );
    m.held.push(theirs);
    m.live.push(Box::new(VpLights {
        state,
        link,
        dir,
        session: Some(session),
        _served: None,
    }));
    Ok(())
}

/// A node of the file system.
#[derive(Debug, Clone)]
enum Node {
    Dir {
        name: String,
        parent: u64,
    },
    /// An attribute file of light `light` (index into `Tree::values`).
    File {
        name: &'static str,
        parent: u64,
        light: usize,
    },
}

/// A light's state in the VP.
#[derive(Debug, Clone)]
struct Value {
    light: Light,
    value: u32,
    /// Set by the VP (sent to cellsd on a dump).
    written: bool,
    /// The vibrator: ms of the next activation, vibrating until.
    duration: u32,
    until: Option<Instant>,
}

struct Tree {
    nodes: BTreeMap<u64, Node>,
    values: Vec<Value>,
    owners: BTreeMap<u64, (u32, u32, u16)>,
}

const INO_ROOT: u64 = 1;

/// The attribute files of a light (name, mode).
fn attrs(l: &Light) -> &'static [(&'static str, u16)] {
    match (l.class.as_str(), l.name.as_str()) {
        (LEDS, VIBRATOR) => &[("activate", 0o644), ("duration", 0o644), ("state", 0o444)],
        (BACKLIGHT, _) => &[
            ("brightness", 0o644),
            ("max_brightness", 0o444),
            ("actual_brightness", 0o444),
            ("type", 0o444),
        ],
        _ => &[("brightness", 0o644), ("max_brightness", 0o444)],
    }
}

impl Tree {
    fn new(cfg: &LightsConfig, owner: u32) -> Self {
        let mut t = Tree {
            nodes: BTreeMap::new(),
            values: Vec::new(),
            owners: BTreeMap::new(),
        };
        let mut next = INO_ROOT;
        let dir = |t: &mut Tree, next: &mut u64, name: &str, parent: u64| -> u64 {
            let ino = *next;
            *next += 1;
            t.nodes.insert(
                ino,
                Node::Dir {
                    name: name.to_string(),
                    parent,
                },
            );
            t.owners.insert(ino, (owner, owner, 0o755));
            ino
        };
        dir(&mut t, &mut next, "", INO_ROOT);
        let class_dirs: Vec<(String, u64)> = [LEDS, BACKLIGHT]
            .iter()
            .map(|c| (c.to_string(), dir(&mut t, &mut next, c, INO_ROOT)))
            .collect();
        let mut lights = cfg.lights.clone();
        if cfg.vibrator {
            lights.push(Light {
                class: LEDS.into(),
                name: VIBRATOR.into(),
                max: 1,
            });
        }
        for l in lights {
            let Some((_, cdir)) = class_dirs.iter().find(|(c, _)| *c == l.class) else {
                continue;
            };
            let d = dir(&mut t, &mut next, &l.name, *cdir);
            let idx = t.values.len();
            for (name, mode) in attrs(&l) {
                let ino = next;
                next += 1;
                t.nodes.insert(
                    ino,
                    Node::File {
                        name,
                        parent: d,
                        light: idx,
                    },
                );
                t.owners.insert(ino, (owner, owner, *mode));
            }
            t.values.push(Value {
                light: l,
                value: 0,
                written: false,
                duration: 0,
                until: None,
            });
        }
        t
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let node = self.nodes.get(&ino)?;
        let (uid, gid, mode) = *self.owners.get(&ino)?;
        let dir = matches!(node, Node::Dir { .. });
        let t = SystemTime::UNIX_EPOCH;
        Some(FileAttr {
            ino: INodeNo(ino),
            size: if dir { 0 } else { 4096 },
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
            perm: mode,
            nlink: if dir { 2 } else { 1 },
            uid,
            gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn child(&self, parent: u64, name: &OsStr) -> Option<u64> {
        self.nodes.iter().find_map(|(ino, n)| match n {
            Node::Dir {
                name: nm,
                parent: p,
            } if *p == parent && *ino != INO_ROOT => (OsStr::new(nm) == name).then_some(*ino),
            Node::File {
                name: nm,
                parent: p,
                ..
            } if *p == parent => (OsStr::new(nm) == name).then_some(*ino),
            _ => None,
        })
    }

    fn read(&self, ino: u64) -> Option<String> {
        let Node::File { name, light, .. } = self.nodes.get(&ino)? else {
            return None;
        };
        let v = self.values.get(*light)?;
        let vibrating = v.until.is_some_and(|u| u > Instant::now());
        Some(
            match *name {
                "brightness" | "actual_brightness" => v.value.to_string(),
                "max_brightness" => v.light.max.to_string(),
                "type" => "raw".into(),
                "duration" => v.duration.to_string(),
                "activate" | "state" => u32::from(vibrating).to_string(),
                _ => return None,
            } + "\n",
        )
    }

    /// A write: the message for cellsd, or why it is refused.
    fn write(&mut self, ino: u64, data: &[u8]) -> Result<Option<Message>, Errno> {
        let Some(Node::File { name, light, .. }) = self.nodes.get(&ino).cloned() else {
            return Err(Errno::ENOENT);
        };
        let n: u32 = std::str::from_utf8(data)
            .ok()
            .map(str::trim)
            .and_then(|s| s.parse().ok())
            .ok_or(Errno::EINVAL)?;
        let v = self.values.get_mut(light).ok_or(Errno::ENOENT)?;
        match name {
            "brightness" => {
                if n > v.light.max {
                    return Err(Errno::EINVAL);
                }
                v.value = n;
                v.written = true;
                Ok(Some(Message::Set {
                    class: v.light.class.clone(),
                    name: v.light.name.clone(),
                    value: n,
                }))
            }
            "duration" => {
                if n > MAX_VIBRATION_MS {
                    return Err(Errno::EINVAL);
                }
                v.duration = n;
                Ok(None)
            }
            "activate" => match n {
                0 => {
                    v.until = None;
                    Ok(Some(Message::Vibrate { ms: 0 }))
                }
                1 => {
                    v.until = Some(Instant::now() + Duration::from_millis(v.duration as u64));
                    Ok(Some(Message::Vibrate { ms: v.duration }))
                }
                _ => Err(Errno::EINVAL),
            },
            _ => Err(Errno::EACCES),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn send(link: &OwnedFd, m: &Message) {
    if let Ok(b) = serde_json::to_vec(m) {
        // cellsd not reading (restarting): the value is kept here and
        // dumped to the next one.
        let _ = socket::send(link.as_raw_fd(), &b, MsgFlags::MSG_DONTWAIT);
    }
}

/// The VP's views of the class folders.
struct LightsFs {
    state: Arc<Mutex<Tree>>,
    link: Arc<OwnedFd>,
}

const TTL: Duration = Duration::from_secs(3600);

impl Filesystem for LightsFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let t = lock(&self.state);
        match t.child(parent.0, name).and_then(|i| t.attr(i)) {
            Some(a) => reply.entry(&TTL, &a, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match lock(&self.state).attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // chown/chmod as the kernel allowed (Android's init chowns these to
        // system); a truncate is accepted and ignored, as sysfs does.
        let mut t = lock(&self.state);
        if let Some(o) = t.owners.get_mut(&ino.0) {
            if let Some(m) = mode {
                o.2 = (m & 0o7777) as u16;
            }
            if let Some(u) = uid {
                o.0 = u;
            }
            if let Some(g) = gid {
                o.1 = g;
            }
        }
        match t.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if lock(&self.state).attr(ino.0).is_none() {
            return reply.error(Errno::ENOENT);
        }
        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        _size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match lock(&self.state).read(ino.0) {
            Some(text) => {
                let b = text.as_bytes();
                reply.data(&b[(offset as usize).min(b.len())..]);
            }
            None => reply.error(Errno::EISDIR),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let r = lock(&self.state).write(ino.0, data);
        match r {
            Ok(msg) => {
                reply.written(data.len() as u32);
                if let Some(m) = msg {
                    send(&self.link, &m);
                }
            }
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let t = lock(&self.state);
        let Some(Node::Dir { parent, .. }) = t.nodes.get(&ino.0) else {
            return reply.error(Errno::ENOTDIR);
        };
        let mut entries: Vec<(u64, FileType, String)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (*parent, FileType::Directory, "..".into()),
        ];
        for (i, n) in &t.nodes {
            match n {
                Node::Dir { name, parent } if *parent == ino.0 && *i != INO_ROOT => {
                    entries.push((*i, FileType::Directory, name.clone()))
                }
                Node::File { name, parent, .. } if *parent == ino.0 => {
                    entries.push((*i, FileType::RegularFile, name.to_string()))
                }
                _ => {}
            }
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// The monitor's side: the file system, and cellsd's requests for a dump.
struct VpLights {
    state: Arc<Mutex<Tree>>,
    link: Arc<OwnedFd>,
    /// The file system's mount point (its `leds` and `backlight` folders
    /// are bound over the VP's class folders).
    dir: PathBuf,
    session: Option<fuser::Session<LightsFs>>,
    _served: Option<fuser::BackgroundSession>,
}

impl VpDevice for VpLights {
    fn name(&self) -> &'static str {
        NAME
    }

    fn serve(
        &mut self,
        _init: libc::pid_t,
        _fds: &mut crate::devices::registry::DeviceFds,
    ) -> Result<(), DeviceError> {
        if let Some(s) = self.session.take() {
            self._served = Some(s.spawn().map_err(io("serve the lights"))?);
        }
        Ok(())
    }

    /// The views go over the VP's `/sys/class/leds` and `backlight`. A
    /// kernel without such a class has no folder to bind over (sysfs makes
    /// none): then `/sys/class` becomes a read-only tmpfs of symlinks into
    /// the VP's sysfs (bound at `/dev/.sys`, so sysfs' own relative links
    /// resolve) beside the views.
    fn mounted(
        &mut self,
        root: &Path,
        _fds: &mut crate::devices::registry::DeviceFds,
    ) -> Result<(), DeviceError> {
        use nix::mount::{mount, MsFlags};
        let class = root.join("sys/class");
        let missing = [LEDS, BACKLIGHT].iter().any(|c| !class.join(c).is_dir());
        if missing {
            let hidden = root.join("dev/.sys");
            std::fs::create_dir_all(&hidden).map_err(io("mkdir /dev/.sys"))?;
            mount(
                Some(root.join("sys").as_path()),
                &hidden,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(io("bind /sys at /dev/.sys"))?;
            mount(
                Some("tmpfs"),
                &class,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("mode=755,size=64k"),
            )
            .map_err(io("a tmpfs over /sys/class"))?;
            for e in std::fs::read_dir(hidden.join("class"))
                .map_err(io("read /sys/class"))?
                .flatten()
            {
                let n = e.file_name();
                std::os::unix::fs::symlink(Path::new("/dev/.sys/class").join(&n), class.join(&n))
                    .map_err(io("a /sys/class link"))?;
            }
            for c in [LEDS, BACKLIGHT] {
                let p = class.join(c);
                if std::fs::symlink_metadata(&p).is_ok() {
                    std::fs::remove_file(&p).map_err(io("replace a /sys/class link"))?;
                }
                std::fs::create_dir(&p).map_err(io("mkdir a /sys/class folder"))?;
            }
        }
        for c in [LEDS, BACKLIGHT] {
            mount(
                Some(self.dir.join(c).as_path()),
                &class.join(c),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(io(format!("bind the VP's /sys/class/{c}")))?;
        }
        if missing {
            mount(
                None::<&str>,
                &class,
                None::<&str>,
                MsFlags::MS_REMOUNT
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC,
                Some("mode=755,size=64k"),
            )
            .map_err(io("make /sys/class read-only"))?;
        }
        Ok(())
    }

    fn poll_fds(&self) -> Vec<RawFd> {
        vec![self.link.as_raw_fd()]
    }

    fn handle(&mut self, ready: &[bool]) {
        if !ready.first().copied().unwrap_or(false) {
            return;
        }
        let mut b = [0u8; 512];
        while let Ok(n) = socket::recv(self.link.as_raw_fd(), &mut b, MsgFlags::MSG_DONTWAIT) {
            if n == 0 {
                break;
            }
            if matches!(
                serde_json::from_slice::<Message>(&b[..n]),
                Ok(Message::Dump)
            ) {
                let t = lock(&self.state);
                for v in t.values.iter().filter(|v| v.written) {
                    send(
                        &self.link,
                        &Message::Set {
                            class: v.light.class.clone(),
                            name: v.light.name.clone(),
                            value: v.value,
                        },
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------- host side

/// Where a light's value goes when the foreground sets it.
#[derive(Debug, Clone)]
enum Backend {
    /// The host's class device (its `brightness` file).
    Sysfs(PathBuf),
    /// cells' record (the host has no such device).
    Virtual,
}

/// What the device shows now, and who set it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InForce {
    pub value: u32,
    pub max: u32,
    /// The VP whose write is in force ("" if none yet).
    pub by: String,
    /// The host's device ("sysfs") or cells' record ("virtual").
    pub backend: &'static str,
}

/// The last vibration the device made.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Vibration {
    pub vp: String,
    pub ms: u32,
    /// Unix time in ms.
    pub at_ms: u64,
    pub backend: &'static str,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LightsReport {
    /// "class/name" -> what is in force.
    pub lights: BTreeMap<String, InForce>,
    pub vibration: Option<Vibration>,
    /// Vibrations asked for by background VPs (not made).
    pub vibrations_ignored: u64,
}

struct VpState {
    values: BTreeMap<(String, String), u32>,
    /// Its link's reader task.
    task: tokio::task::JoinHandle<()>,
    link: Arc<tokio::io::unix::AsyncFd<OwnedFd>>,
}

struct HostState {
    fg: Option<String>,
    vps: HashMap<String, VpState>,
    report: LightsReport,
}

/// cellsd's side: which lights there are, what is in force, the VPs' last
/// values.
pub struct LightsHost {
    lights: Vec<(Light, Backend)>,
    vibrator: Option<PathBuf>,
    state: Arc<Mutex<HostState>>,
}

/// The host's class devices of `class` (name, max_brightness, its folder).
fn host_lights(sys: &Path, class: &str) -> Vec<(Light, PathBuf)> {
    let mut v: Vec<(Light, PathBuf)> = std::fs::read_dir(sys.join(class))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            if name == VIBRATOR || name.contains('/') {
                return None;
            }
            let max = std::fs::read_to_string(e.path().join("max_brightness"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some((
                Light {
                    class: class.into(),
                    name,
                    max,
                },
                e.path(),
            ))
        })
        .collect();
    v.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    v
}

impl LightsHost {
    /// The host's LEDs and backlights under `sys` (/sys/class), or cells'
    /// own where it has none.
    pub fn new(sys: &Path) -> Self {
        let mut lights = Vec::new();
        for (class, defaults) in [
            (LEDS, &["red", "green", "blue"][..]),
            (BACKLIGHT, &["panel0"][..]),
        ] {
            let host = host_lights(sys, class);
            if host.is_empty() {
                lights.extend(defaults.iter().map(|n| {
                    (
                        Light {
                            class: class.into(),
                            name: n.to_string(),
                            max: 255,
                        },
                        Backend::Virtual,
                    )
                }));
            } else {
                lights.extend(
                    host.into_iter()
                        .map(|(l, dir)| (l, Backend::Sysfs(dir.join("brightness")))),
                );
            }
        }
        let vibrator = [
            sys.join("leds/vibrator/activate"),
            sys.join("timed_output/vibrator/enable"),
        ]
        .into_iter()
        .find(|p| p.exists());
        let report = LightsReport {
            lights: lights
                .iter()
                .map(|(l, b)| {
                    let value = match b {
                        Backend::Sysfs(p) => std::fs::read_to_string(p)
                            .ok()
                            .and_then(|s| s.trim().parse().ok())
                            .unwrap_or(0),
                        Backend::Virtual if l.class == BACKLIGHT => l.max,
                        Backend::Virtual => 0,
                    };
                    (
                        format!("{}/{}", l.class, l.name),
                        InForce {
                            value,
                            max: l.max,
                            by: String::new(),
                            backend: match b {
                                Backend::Sysfs(_) => "sysfs",
                                Backend::Virtual => "virtual",
                            },
                        },
                    )
                })
                .collect(),
            ..Default::default()
        };
        Self {
            lights,
            vibrator,
            state: Arc::new(Mutex::new(HostState {
                fg: None,
                vps: HashMap::new(),
                report,
            })),
        }
    }

    pub fn report(&self) -> LightsReport {
        lock(&self.state).report.clone()
    }

    /// Make `value` the light's (the foreground set it).
    fn apply(&self, st: &mut HostState, vp: &str, class: &str, name: &str, value: u32) {
        let Some((light, backend)) = self
            .lights
            .iter()
            .find(|(l, _)| l.class == class && l.name == name)
        else {
            return;
        };
        let value = value.min(light.max);
        if let Backend::Sysfs(p) = backend {
            if let Err(e) = std::fs::write(p, value.to_string()) {
                tracing::warn!(vp, "{}: {e}", p.display());
                return;
            }
        }
        if let Some(f) = st.report.lights.get_mut(&format!("{class}/{name}")) {
            f.value = value;
            f.by = vp.to_string();
        }
    }

    fn vibrate(&self, st: &mut HostState, vp: &str, ms: u32) {
        let backend = match &self.vibrator {
            Some(p) => {
                let r = if p.ends_with("enable") {
                    std::fs::write(p, ms.to_string())
                } else {
                    let dir = p.parent().unwrap_or(Path::new("/"));
                    std::fs::write(dir.join("duration"), ms.to_string())
                        .and_then(|_| std::fs::write(p, if ms > 0 { "1" } else { "0" }))
                };
                if let Err(e) = r {
                    tracing::warn!(vp, "vibrator {}: {e}", p.display());
                }
                "sysfs"
            }
            None => "virtual",
        };
        st.report.vibration = Some(Vibration {
            vp: vp.to_string(),
            ms,
            at_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            backend,
        });
    }

    /// A message from `vp`'s monitor.
    fn received(self: &Arc<Self>, vp: &str, m: Message) {
        let mut st = lock(&self.state);
        let fg = st.fg.as_deref() == Some(vp);
        match m {
            Message::Set { class, name, value } => {
                if let Some(v) = st.vps.get_mut(vp) {
                    v.values.insert((class.clone(), name.clone()), value);
                }
                if fg {
                    self.apply(&mut st, vp, &class, &name, value);
                }
            }
            Message::Vibrate { ms } => {
                if fg {
                    self.vibrate(&mut st, vp, ms);
                } else {
                    st.report.vibrations_ignored += 1;
                }
            }
            Message::Dump => {}
        }
    }
}

/// The registry's handle: the host side in an Arc (its link tasks hold it).
pub struct LightsDevice(pub Arc<LightsHost>);

impl HostDevice for LightsDevice {
    fn name(&self) -> &'static str {
        NAME
    }

    fn prepare(&self, p: &Prepare<'_>) -> Result<Option<serde_json::Value>, DeviceError> {
        if p.policy == Policy::None {
            return Ok(None);
        }
        let cfg = LightsConfig {
            lights: self.0.lights.iter().map(|(l, _)| l.clone()).collect(),
            vibrator: true,
        };
        serde_json::to_value(cfg)
            .map(Some)
            .map_err(|e| DeviceError::Refused(e.to_string()))
    }

    /// Take the VP's link and read it; ask for its values (after a cellsd
    /// restart the monitor has them).
    fn attach(&self, a: &Attach<'_>) -> Result<(), DeviceError> {
        let Some(fd) = a.fds.records.get(NAME).and_then(|r| r.fds.first()) else {
            return Ok(());
        };
        let fd = crate::sys::pidfd_getfd(a.monitor()?, *fd).map_err(io("take the lights' link"))?;
        // SAFETY: the AsyncFd owns `fd`, so it stays open while registered.
        let link = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }
        .map(Arc::new)
        .map_err(io("the lights' link"))?;
        let host = Arc::clone(&self.0);
        let (vp, l) = (a.vp.to_string(), Arc::clone(&link));
        let task = tokio::spawn(async move {
            let mut b = [0u8; 512];
            loop {
                let Ok(mut guard) = l.readable().await else {
                    return;
                };
                match guard.try_io(|fd| {
                    socket::recv(fd.get_ref().as_raw_fd(), &mut b, MsgFlags::MSG_DONTWAIT)
                        .map_err(std::io::Error::from)
                }) {
                    Ok(Ok(0)) | Ok(Err(_)) => return,
                    Ok(Ok(n)) => {
                        if let Ok(m) = serde_json::from_slice::<Message>(&b[..n]) {
                            host.received(&vp, m);
                        }
                    }
                    Err(_would_block) => {}
                }
            }
        });
        let mut st = lock(&self.0.state);
        if let Some(old) = st.vps.insert(
            a.vp.to_string(),
            VpState {
                values: BTreeMap::new(),
                task,
                link: Arc::clone(&link),
            },
        ) {
            old.task.abort();
        }
        drop(st);
        if let Ok(b) = serde_json::to_vec(&Message::Dump) {
            let _ = socket::send(link.get_ref().as_raw_fd(), &b, MsgFlags::MSG_DONTWAIT);
        }
        Ok(())
    }

    fn detach(&self, d: &Detach<'_>) {
        if let Some(v) = lock(&self.0.state).vps.remove(d.vp) {
            v.task.abort();
            drop(v.link);
        }
    }

    /// The new foreground's values are replayed to the device.
    fn set_foreground(&self, fg: Option<&str>) {
        let mut st = lock(&self.0.state);
        if st.fg.as_deref() == fg {
            return;
        }
        st.fg = fg.map(String::from);
        let Some(vp) = fg else { return };
        let values: Vec<((String, String), u32)> = st
            .vps
            .get(vp)
            .map(|v| v.values.iter().map(|(k, x)| (k.clone(), *x)).collect())
            .unwrap_or_default();
        for ((class, name), value) in values {
            self.0.apply(&mut st, vp, &class, &name, value);
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LightsConfig {
        LightsConfig {
            lights: vec![
                Light {
                    class: LEDS.into(),
                    name: "red".into(),
                    max: 255,
                },
                Light {
                    class: BACKLIGHT.into(),
                    name: "panel0".into(),
                    max: 100,
                },
            ],
            vibrator: true,
        }
    }

    fn file(t: &Tree, path: &[&str]) -> u64 {
        let mut ino = INO_ROOT;
        for p in path {
            ino = t.child(ino, OsStr::new(p)).unwrap();
        }
        ino
    }

    #[test]
    fn the_tree_answers_as_sysfs_and_refuses_bad_writes() {
        let mut t = Tree::new(&cfg(), 1000);
        let red = file(&t, &["leds", "red", "brightness"]);
        assert_eq!(
            t.read(file(&t, &["leds", "red", "max_brightness"]))
                .unwrap(),
            "255\n"
        );
        assert_eq!(
            t.write(red, b"200\n").unwrap(),
            Some(Message::Set {
                class: "leds".into(),
                name: "red".into(),
                value: 200
            })
        );
        assert_eq!(t.read(red).unwrap(), "200\n");
        assert_eq!(t.write(red, b"256"), Err(Errno::EINVAL));
        assert_eq!(t.write(red, b"bright"), Err(Errno::EINVAL));
        assert_eq!(t.read(red).unwrap(), "200\n", "a bad write changes nothing");
        let bl = file(&t, &["backlight", "panel0", "brightness"]);
        assert_eq!(t.write(bl, b"101"), Err(Errno::EINVAL));
        assert!(t.write(bl, b"50").is_ok());
        assert_eq!(
            t.read(file(&t, &["backlight", "panel0", "actual_brightness"]))
                .unwrap(),
            "50\n"
        );
        let dur = file(&t, &["leds", "vibrator", "duration"]);
        let act = file(&t, &["leds", "vibrator", "activate"]);
        assert_eq!(t.write(dur, b"100").unwrap(), None);
        assert_eq!(
            t.write(act, b"1").unwrap(),
            Some(Message::Vibrate { ms: 100 })
        );
        assert_eq!(
            t.read(file(&t, &["leds", "vibrator", "state"])).unwrap(),
            "1\n"
        );
        assert_eq!(t.write(act, b"2"), Err(Errno::EINVAL));
        assert_eq!(t.write(dur, b"60001"), Err(Errno::EINVAL));
        assert_eq!(
            t.write(file(&t, &["leds", "red", "max_brightness"]), b"1"),
            Err(Errno::EACCES)
        );
    }

    #[test]
    fn a_host_without_lights_gets_cells_own() {
        let h = LightsHost::new(Path::new("/nonexistent"));
        let names: Vec<String> = h
            .lights
            .iter()
            .map(|(l, _)| format!("{}/{}", l.class, l.name))
            .collect();
        assert_eq!(
            names,
            ["leds/red", "leds/green", "leds/blue", "backlight/panel0"]
        );
        assert!(h.vibrator.is_none());
        assert_eq!(h.report().lights["backlight/panel0"].value, 255);
    }
}
