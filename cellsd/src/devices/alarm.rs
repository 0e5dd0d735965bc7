//! The alarm device: alarms that fire in the background and wake the
//! device, and the clock, per VP (Android's `/dev/alarm`).
//!
//! A VP holds neither CAP_WAKE_ALARM nor CAP_SYS_TIME of the host, so its
//! `timerfd`s cannot be `*_ALARM` ones and it cannot set the clock. Each VP
//! gets Android's `/dev/alarm` instead (its ioctls: `ANDROID_ALARM_SET`,
//! `_SET_AND_WAIT`, `_WAIT`, `_CLEAR`, `_SET_RTC`), served by its monitor
//! over FUSE:
//! - the monitor keeps the VP's alarms (one per type; RTC types on the
//!   real-time clock, ELAPSED ones on the boot-time clock) and fires them:
//!   a `WAIT` returns the mask of the types that fired. A frozen VP is
//!   thawed by cellsd when one of its alarms fires;
//! - the `*_WAKEUP` types wake the device: cellsd arms a host alarm timer
//!   (`CLOCK_REALTIME_ALARM` / `CLOCK_BOOTTIME_ALARM`, which it may) for
//!   the earliest wake-up alarm of all VPs, so a suspended device resumes
//!   for it;
//! - `SET_RTC` sets the clock of the device, which every VP shares: from
//!   the foreground VP only; from a background VP it is EPERM (the
//!   template's `alarm set-time` says so).
//!
//! The alarms live in the monitor (they survive a cellsd restart). The
//! template's `alarm` tool uses it (`alarm wait-in SECS [TYPE]`, `alarm
//! set-time EPOCH`). Policies: `shared` (default: alarms fire in the
//! background too), `none` (no /dev/alarm).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, IoctlFlags,
    OpenFlags, ReplyAttr, ReplyDirectory, ReplyEntry, ReplyIoctl, ReplyOpen, Request,
};
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType};
use serde::{Deserialize, Serialize};

use crate::devices::fusefs::{being_killed, KILLED_READERS_PERIOD};
use crate::devices::model::{DeviceSpec, Policy};
use crate::devices::registry::{
    io, Attach, Detach, Device, DeviceError, DeviceFds, DeviceRecord, HostDevice, Made, VpCtx,
    VpDevice,
};

pub const NAME: &str = "alarm";
pub const VP_PATH: &str = "/dev/alarm";

/// Android's alarm types.
pub const RTC_WAKEUP: u32 = 0;
pub const RTC: u32 = 1;
pub const ELAPSED_WAKEUP: u32 = 2;
pub const ELAPSED: u32 = 3;
pub const SYSTEMTIME: u32 = 4;
pub const TYPES: u32 = 5;
pub const TYPE_NAMES: [&str; 5] = [
    "rtc_wakeup",
    "rtc",
    "elapsed_wakeup",
    "elapsed",
    "systemtime",
];

/// The ioctls (android_alarm.h): `_IO('a', nr)` / `_IOW('a', nr, struct
/// timespec)`, the type in bits 4-7 of nr.
const IOC_TYPE: u32 = b'a' as u32;
const TIMESPEC: u32 = 16;
pub fn ioc_clear(t: u32) -> u32 {
    IOC_TYPE << 8 | (t << 4)
}
pub const IOC_WAIT: u32 = IOC_TYPE << 8 | 1;
pub fn ioc_set(t: u32) -> u32 {
    1 << 30 | TIMESPEC << 16 | IOC_TYPE << 8 | (2 | t << 4)
}
pub fn ioc_set_and_wait(t: u32) -> u32 {
    1 << 30 | TIMESPEC << 16 | IOC_TYPE << 8 | (3 | t << 4)
}
pub const IOC_SET_RTC: u32 = 1 << 30 | TIMESPEC << 16 | IOC_TYPE << 8 | 5;

pub const DEVICE: Device = Device {
    spec: DeviceSpec {
        name: NAME,
        default: Policy::Shared,
        policies: &[Policy::Shared, Policy::None],
        about: "/dev/alarm (Android's alarm driver): alarms that fire in the background too (a frozen VP is thawed) and, for the wake-up types, wake the device; the clock set by the foreground VP (SET_RTC) applies to every VP, a background VP's is refused (EPERM)",
    },
    vp_side,
};

/// The clock of an alarm type.
pub fn clock_of(t: u32) -> libc::clockid_t {
    match t {
        RTC_WAKEUP | RTC => libc::CLOCK_REALTIME,
        ELAPSED_WAKEUP | ELAPSED => libc::CLOCK_BOOTTIME,
        _ => libc::CLOCK_MONOTONIC,
    }
}

/// A clock's time in nanoseconds.
pub fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

fn timespec_ns(b: &[u8]) -> Option<i128> {
    let s = i64::from_ne_bytes(b.get(..8)?.try_into().ok()?);
    let ns = i64::from_ne_bytes(b.get(8..16)?.try_into().ok()?);
    if !(0..1_000_000_000).contains(&ns) || s < 0 {
        return None;
    }
    Some(s as i128 * 1_000_000_000 + ns as i128)
}

/// Monitor <-> cellsd, over the device's socket pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// The VP's earliest wake-up alarms: real-time and boot-time ns.
    Next {
        rtc_ns: Option<i128>,
        elapsed_ns: Option<i128>,
    },
    /// An alarm of the VP fired (cellsd thaws a frozen VP).
    Fired { kind: u32 },
    /// The VP set the clock.
    ClockSet { ns: i128 },
    /// cellsd -> monitor: whether the VP is the foreground.
    Foreground { on: bool },
    /// cellsd -> monitor: send `Next` (after taking the VP over).
    Dump,
}

fn vp_side(c: &VpCtx<'_>, m: &mut Made) -> Result<(), DeviceError> {
    if c.policy == Policy::None {
        return Ok(());
    }
    let dir = c.dir.join("alarm");
    let dev = crate::devices::fusefs::mount(&dir, "cells-alarm").map_err(io("mount /dev/alarm"))?;
    let (ours, theirs) = socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(io("the alarms' socket pair"))?;
    let (notify, notify_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(io("pipe"))?;
    let link = Arc::new(ours);
    let state = Arc::new(Mutex::new(Alarms {
        at: [None; TYPES as usize],
        fired: 0,
        waiters: Vec::new(),
        foreground: false,
        freezing: false,
    }));
    let owner = c.owner.unwrap_or(0);
    let fs = AlarmFs {
        state: Arc::clone(&state),
        link: Arc::clone(&link),
        notify: notify_w,
        owner: Mutex::new((owner, owner + 1000, 0o664)),
    };
    let session =
        fuser::Session::from_fd(fs, dev, fuser::SessionACL::All, fuser::Config::default())
            .map_err(io("FUSE handshake of /dev/alarm"))?;
    m.fds.records.insert(
        NAME.to_string(),
        DeviceRecord {
            fds: vec![theirs.as_raw_fd()],
            data: serde_json::Value::Null,
        },
    );
    m.held.push(theirs);
    m.nodes.push((dir.join("alarm"), VP_PATH.to_string()));
    m.live.push(Box::new(VpAlarm {
        state,
        link,
        notify,
        session: Some(session),
        _served: None,
        checked: Instant::now(),
    }));
    Ok(())
}

/// The VP's alarms.
struct Alarms {
    /// When each type fires (ns on its clock).
    at: [Option<i128>; TYPES as usize],
    /// Types that fired and no WAIT took yet.
    fired: u32,
    /// Blocked WAITs: the reply, the thread (host tid).
    waiters: Vec<(ReplyIoctl, u32)>,
    foreground: bool,
    /// cellsd freezes the VP: WAITs answer EINTR (a task blocked in FUSE
    /// cannot freeze), as an interrupted wait would.
    freezing: bool,
}

impl Alarms {
    /// Fire what is due; true if anything did.
    fn fire_due(&mut self) -> u32 {
        let mut now_fired = 0;
        for t in 0..TYPES {
            if let Some(at) = self.at[t as usize] {
                if now_ns(clock_of(t)) >= at {
                    self.at[t as usize] = None;
                    now_fired |= 1 << t;
                }
            }
        }
        self.fired |= now_fired;
        self.deliver();
        now_fired
    }

    fn deliver(&mut self) {
        if self.fired != 0 && !self.waiters.is_empty() {
            let mask = std::mem::take(&mut self.fired);
            for (r, _) in self.waiters.drain(..) {
                r.ioctl(mask as i32, &[]);
            }
        }
    }

    /// How long until the next alarm (at most a second: the real-time
    /// clock may be set meanwhile).
    fn timeout(&self) -> Option<Duration> {
        (0..TYPES)
            .filter_map(|t| {
                self.at[t as usize].map(|at| {
                    let left = (at - now_ns(clock_of(t))).max(0) as u64;
                    Duration::from_nanos(left).min(Duration::from_secs(1))
                })
            })
            .min()
    }

    fn next(&self) -> Message {
        let pick = |a: u32| self.at[a as usize];
        Message::Next {
            rtc_ns: pick(RTC_WAKEUP),
            elapsed_ns: pick(ELAPSED_WAKEUP),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn send(link: &OwnedFd, m: &Message) {
    if let Ok(b) = serde_json::to_vec(m) {
        let _ = socket::send(link.as_raw_fd(), &b, MsgFlags::MSG_DONTWAIT);
    }
}

/// `/dev/alarm`: a FUSE file system of one file, `alarm`.
struct AlarmFs {
    state: Arc<Mutex<Alarms>>,
    link: Arc<OwnedFd>,
    /// Written when the alarms changed or a WAIT blocks.
    notify: OwnedFd,
    /// The node's owner and mode (Android: system:system 0664; VP root may
    /// change them).
    owner: Mutex<(u32, u32, u16)>,
}

const INO_ROOT: u64 = 1;
const INO_ALARM: u64 = 2;
const TTL: Duration = Duration::from_secs(3600);

impl AlarmFs {
    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (uid, gid, mode) = *lock(&self.owner);
        let dir = match ino {
            INO_ROOT => true,
            INO_ALARM => false,
            _ => return None,
        };
        let t = SystemTime::UNIX_EPOCH;
        Some(FileAttr {
            ino: INodeNo(ino),
            size: 0,
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
            perm: if dir { 0o755 } else { mode },
            nlink: if dir { 2 } else { 1 },
            uid,
            gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn poke(&self) {
        let _ = nix::unistd::write(&self.notify, b"a");
    }
}

impl Filesystem for AlarmFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match (parent.0 == INO_ROOT && name == "alarm")
            .then(|| self.attr(INO_ALARM))
            .flatten()
        {
            Some(a) => reply.entry(&TTL, &a, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
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
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if ino.0 == INO_ALARM {
            let mut o = lock(&self.owner);
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
        match self.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino.0 != INO_ALARM {
            return reply.error(Errno::EISDIR);
        }
        reply.opened(
            FileHandle(0),
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NONSEEKABLE,
        );
    }

    fn ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        if ino.0 != INO_ALARM || (cmd >> 8) & 0xff != IOC_TYPE {
            return reply.error(Errno::ENOTTY);
        }
        let t = (cmd & 0xff) >> 4;
        let base = cmd & !(0xf0);
        let mut st = lock(&self.state);
        let mut wait = false;
        let mut clock = None;
        if t >= TYPES && cmd != IOC_SET_RTC && cmd != IOC_WAIT {
            return reply.error(Errno::EINVAL);
        }
        if base == ioc_clear(0) {
            st.at[t as usize] = None;
            st.fired &= !(1 << t);
        } else if cmd == IOC_WAIT {
            wait = true;
        } else if base == ioc_set(0) || base == ioc_set_and_wait(0) {
            let Some(ns) = timespec_ns(in_data) else {
                return reply.error(Errno::EINVAL);
            };
            st.at[t as usize] = Some(ns);
            st.fired &= !(1 << t);
            wait = base == ioc_set_and_wait(0);
        } else if cmd == IOC_SET_RTC {
            let Some(ns) = timespec_ns(in_data) else {
                return reply.error(Errno::EINVAL);
            };
            if !st.foreground {
                // The clock is the device's: only the foreground sets it.
                return reply.error(Errno::EPERM);
            }
            let ts = libc::timespec {
                tv_sec: (ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (ns % 1_000_000_000) as libc::c_long,
            };
            // SAFETY: setting the clock from a valid timespec (the monitor
            // is host root).
            if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
                return reply.error(Errno::from_i32(
                    std::io::Error::last_os_error()
                        .raw_os_error()
                        .unwrap_or(libc::EPERM),
                ));
            }
            clock = Some(ns);
        } else {
            return reply.error(Errno::ENOTTY);
        }
        if !wait {
            reply.ioctl(0, &[]);
        } else if st.fired != 0 {
            let mask = std::mem::take(&mut st.fired);
            reply.ioctl(mask as i32, &[]);
        } else if st.freezing {
            reply.error(Errno::EINTR);
        } else {
            st.waiters.push((reply, req.pid()));
        }
        let next = st.next();
        drop(st);
        send(&self.link, &next);
        if let Some(ns) = clock {
            send(&self.link, &Message::ClockSet { ns });
        }
        self.poke();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino.0 != INO_ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = [
            (INO_ROOT, FileType::Directory, "."),
            (INO_ROOT, FileType::Directory, ".."),
            (INO_ALARM, FileType::RegularFile, "alarm"),
        ];
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// The monitor's side: fires the alarms, talks to cellsd.
struct VpAlarm {
    state: Arc<Mutex<Alarms>>,
    link: Arc<OwnedFd>,
    notify: OwnedFd,
    session: Option<fuser::Session<AlarmFs>>,
    _served: Option<fuser::BackgroundSession>,
    checked: Instant,
}

impl VpDevice for VpAlarm {
    fn name(&self) -> &'static str {
        NAME
    }

    fn serve(&mut self, _init: libc::pid_t, _fds: &mut DeviceFds) -> Result<(), DeviceError> {
        if let Some(s) = self.session.take() {
            self._served = Some(s.spawn().map_err(io("serve /dev/alarm"))?);
        }
        Ok(())
    }

    fn poll_fds(&self) -> Vec<RawFd> {
        vec![self.link.as_raw_fd(), self.notify.as_raw_fd()]
    }

    fn handle(&mut self, ready: &[bool]) {
        if ready.get(1).copied().unwrap_or(false) {
            let mut b = [0u8; 64];
            while matches!(nix::unistd::read(&self.notify, &mut b), Ok(n) if n > 0) {}
        }
        if ready.first().copied().unwrap_or(false) {
            let mut b = [0u8; 512];
            while let Ok(n) = socket::recv(self.link.as_raw_fd(), &mut b, MsgFlags::MSG_DONTWAIT) {
                if n == 0 {
                    break;
                }
                match serde_json::from_slice::<Message>(&b[..n]) {
                    Ok(Message::Foreground { on }) => lock(&self.state).foreground = on,
                    Ok(Message::Dump) => {
                        let next = lock(&self.state).next();
                        send(&self.link, &next);
                    }
                    _ => {}
                }
            }
        }
        let fired = lock(&self.state).fire_due();
        for t in 0..TYPES {
            if fired & (1 << t) != 0 {
                send(&self.link, &Message::Fired { kind: t });
            }
        }
        if fired != 0 {
            let next = lock(&self.state).next();
            send(&self.link, &next);
        }
        if self.checked.elapsed() >= KILLED_READERS_PERIOD {
            self.checked = Instant::now();
            let mut st = lock(&self.state);
            let (gone, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut st.waiters)
                .into_iter()
                .partition(|(_, tid)| being_killed(*tid));
            st.waiters = keep;
            for (r, _) in gone {
                r.error(Errno::EINTR);
            }
        }
    }

    fn timeout(&self) -> Option<Duration> {
        let st = lock(&self.state);
        let killed = (!st.waiters.is_empty())
            .then(|| KILLED_READERS_PERIOD.saturating_sub(self.checked.elapsed()));
        match (st.timeout(), killed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn set_freezing(&mut self, on: bool) {
        let mut st = lock(&self.state);
        st.freezing = on;
        if on {
            for (r, _) in st.waiters.drain(..) {
                r.error(Errno::EINTR);
            }
        }
    }
}

// ---------------------------------------------------------- host side

/// What cellsd does when a VP's alarm fires (thaw it, re-arm its freeze
/// delay): the manager's.
pub type WakeHook = Arc<dyn Fn(&str) + Send + Sync>;

struct VpHost {
    link: Arc<tokio::io::unix::AsyncFd<OwnedFd>>,
    task: tokio::task::JoinHandle<()>,
    rtc_ns: Option<i128>,
    elapsed_ns: Option<i128>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VpAlarms {
    /// The VP's earliest wake-up alarms, Unix ns / boot-time ns.
    pub rtc_wakeup_ns: Option<i128>,
    pub elapsed_wakeup_ns: Option<i128>,
    pub fired: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AlarmsReport {
    pub vps: std::collections::BTreeMap<String, VpAlarms>,
    /// The host alarm timers armed now (ns on their clocks; None: none).
    pub host_rtc_alarm_ns: Option<i128>,
    pub host_boottime_alarm_ns: Option<i128>,
    /// Why the host's alarm timers are not the `*_ALARM` clocks (they then
    /// do not wake a suspended device), if they are not.
    pub wake_error: String,
    /// The last clock change: who, to what (Unix ns).
    pub clock_set_by: String,
    pub clock_set_ns: Option<i128>,
}

struct HostState {
    vps: HashMap<String, VpHost>,
    fg: Option<String>,
    report: AlarmsReport,
}

/// cellsd's side: the host alarm timers for the earliest wake-up alarms,
/// and the VPs' links.
pub struct AlarmHost {
    state: Mutex<HostState>,
    rtc_timer: Option<OwnedFd>,
    boot_timer: Option<OwnedFd>,
    wake: Mutex<Option<WakeHook>>,
}

fn timerfd(clock: libc::clockid_t) -> std::io::Result<OwnedFd> {
    // SAFETY: timerfd_create returns a new fd or -1.
    let fd = unsafe { libc::timerfd_create(clock, libc::TFD_CLOEXEC | libc::TFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// Arm `fd` to fire at `ns` on its clock (None: disarm).
fn arm(fd: &OwnedFd, ns: Option<i128>) {
    let v = ns.unwrap_or(0).max(0);
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: (v / 1_000_000_000) as libc::time_t,
            tv_nsec: (v % 1_000_000_000) as libc::c_long,
        },
    };
    // SAFETY: arming our timerfd with a valid itimerspec.
    unsafe {
        libc::timerfd_settime(
            fd.as_raw_fd(),
            libc::TFD_TIMER_ABSTIME,
            &spec,
            std::ptr::null_mut(),
        )
    };
}

/// When `fd` fires next, as ns on its clock (None: disarmed).
fn armed_at(fd: &OwnedFd, clock: libc::clockid_t) -> Option<i128> {
    // SAFETY: a zeroed itimerspec for timerfd_gettime to fill.
    let mut cur: libc::itimerspec = unsafe { std::mem::zeroed() };
    // SAFETY: querying our timerfd.
    if unsafe { libc::timerfd_gettime(fd.as_raw_fd(), &mut cur) } != 0 {
        return None;
    }
    let left = cur.it_value.tv_sec as i128 * 1_000_000_000 + cur.it_value.tv_nsec as i128;
    (left > 0).then(|| now_ns(clock) + left)
}

impl AlarmHost {
    pub fn new() -> Self {
        let mut errors = Vec::new();
        let mut make = |alarm: libc::clockid_t, plain: libc::clockid_t, name: &str| {
            timerfd(alarm)
                .map_err(|e| errors.push(format!("{name}: {e}")))
                .ok()
                .or_else(|| timerfd(plain).ok())
        };
        let rtc_timer = make(
            libc::CLOCK_REALTIME_ALARM,
            libc::CLOCK_REALTIME,
            "CLOCK_REALTIME_ALARM",
        );
        let boot_timer = make(
            libc::CLOCK_BOOTTIME_ALARM,
            libc::CLOCK_BOOTTIME,
            "CLOCK_BOOTTIME_ALARM",
        );
        let wake_error = if errors.is_empty() {
            String::new()
        } else {
            format!(
                "{} (no RTC that can wake the device, or no CAP_WAKE_ALARM): alarms fire while the device is awake only",
                errors.join("; ")
            )
        };
        Self {
            state: Mutex::new(HostState {
                vps: HashMap::new(),
                fg: None,
                report: AlarmsReport {
                    wake_error,
                    ..Default::default()
                },
            }),
            rtc_timer,
            boot_timer,
            wake: Mutex::new(None),
        }
    }

    /// What to do when a VP's alarm fires (the manager thaws it).
    pub fn set_wake_hook(&self, hook: WakeHook) {
        *lock(&self.wake) = Some(hook);
    }

    pub fn report(&self) -> AlarmsReport {
        let mut st = lock(&self.state);
        st.report.host_rtc_alarm_ns = self
            .rtc_timer
            .as_ref()
            .and_then(|t| armed_at(t, libc::CLOCK_REALTIME));
        st.report.host_boottime_alarm_ns = self
            .boot_timer
            .as_ref()
            .and_then(|t| armed_at(t, libc::CLOCK_BOOTTIME));
        let HostState { vps, report, .. } = &mut *st;
        for (n, v) in vps.iter() {
            let e = report.vps.entry(n.clone()).or_default();
            e.rtc_wakeup_ns = v.rtc_ns;
            e.elapsed_wakeup_ns = v.elapsed_ns;
        }
        report.vps.retain(|n, _| vps.contains_key(n));
        report.clone()
    }

    /// The host timers follow the earliest wake-up alarms of all VPs.
    fn rearm(&self, st: &HostState) {
        let rtc = st.vps.values().filter_map(|v| v.rtc_ns).min();
        let boot = st.vps.values().filter_map(|v| v.elapsed_ns).min();
        if let Some(t) = &self.rtc_timer {
            arm(t, rtc);
        }
        if let Some(t) = &self.boot_timer {
            arm(t, boot);
        }
    }

    fn received(&self, vp: &str, m: Message) {
        match m {
            Message::Next { rtc_ns, elapsed_ns } => {
                let mut st = lock(&self.state);
                if let Some(v) = st.vps.get_mut(vp) {
                    v.rtc_ns = rtc_ns;
                    v.elapsed_ns = elapsed_ns;
                }
                self.rearm(&st);
            }
            Message::Fired { .. } => {
                lock(&self.state)
                    .report
                    .vps
                    .entry(vp.to_string())
                    .or_default()
                    .fired += 1;
                let hook = lock(&self.wake).clone();
                if let Some(h) = hook {
                    h(vp);
                }
            }
            Message::ClockSet { ns } => {
                tracing::info!(vp, "the clock was set");
                let mut st = lock(&self.state);
                st.report.clock_set_by = vp.to_string();
                st.report.clock_set_ns = Some(ns);
            }
            Message::Foreground { .. } | Message::Dump => {}
        }
    }

    fn tell(v: &VpHost, m: &Message) {
        if let Ok(b) = serde_json::to_vec(m) {
            let _ = socket::send(v.link.get_ref().as_raw_fd(), &b, MsgFlags::MSG_DONTWAIT);
        }
    }
}

impl Default for AlarmHost {
    fn default() -> Self {
        Self::new()
    }
}

/// The registry's handle (the link tasks hold the host side).
pub struct AlarmDevice(pub Arc<AlarmHost>);

impl HostDevice for AlarmDevice {
    fn name(&self) -> &'static str {
        NAME
    }

    fn attach(&self, a: &Attach<'_>) -> Result<(), DeviceError> {
        let Some(fd) = a.fds.records.get(NAME).and_then(|r| r.fds.first()) else {
            return Ok(());
        };
        let fd = crate::sys::pidfd_getfd(a.monitor()?, *fd).map_err(io("take the alarms' link"))?;
        // SAFETY: the AsyncFd owns `fd`, so it stays open while registered.
        let link = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }
        .map(Arc::new)
        .map_err(io("the alarms' link"))?;
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
        let fg = st.fg.as_deref() == Some(a.vp);
        let v = VpHost {
            link,
            task,
            rtc_ns: None,
            elapsed_ns: None,
        };
        AlarmHost::tell(&v, &Message::Foreground { on: fg });
        AlarmHost::tell(&v, &Message::Dump);
        if let Some(old) = st.vps.insert(a.vp.to_string(), v) {
            old.task.abort();
        }
        Ok(())
    }

    fn detach(&self, d: &Detach<'_>) {
        let mut st = lock(&self.0.state);
        if let Some(v) = st.vps.remove(d.vp) {
            v.task.abort();
        }
        self.0.rearm(&st);
    }

    fn set_foreground(&self, fg: Option<&str>) {
        let mut st = lock(&self.0.state);
        let old = std::mem::replace(&mut st.fg, fg.map(String::from));
        if old.as_deref() == fg {
            return;
        }
        // Told off the switch's path (a send wakes the monitor): the
        // monitors learn it a moment later.
        let links: Vec<(Arc<tokio::io::unix::AsyncFd<OwnedFd>>, bool)> =
            [(old.as_deref(), false), (fg, true)]
                .into_iter()
                .filter_map(|(n, on)| {
                    n.and_then(|n| st.vps.get(n))
                        .map(|v| (Arc::clone(&v.link), on))
                })
                .collect();
        let send_all = move || {
            for (link, on) in links {
                if let Ok(b) = serde_json::to_vec(&Message::Foreground { on }) {
                    let _ = socket::send(link.get_ref().as_raw_fd(), &b, MsgFlags::MSG_DONTWAIT);
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move { send_all() });
            }
            Err(_) => send_all(),
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_are_androids() {
        // From android_alarm.h, as compiled for 64-bit.
        assert_eq!(IOC_WAIT, 0x6101);
        assert_eq!(ioc_set(ELAPSED_WAKEUP), 0x4010_6122);
        assert_eq!(ioc_clear(RTC), 0x6110);
        assert_eq!(IOC_SET_RTC, 0x4010_6105);
        assert_eq!(ioc_set_and_wait(RTC_WAKEUP), 0x4010_6103);
    }

    #[test]
    fn alarms_fire_when_due_and_report_the_earliest_wakeups() {
        let mut a = Alarms {
            at: [None; TYPES as usize],
            fired: 0,
            waiters: Vec::new(),
            foreground: false,
            freezing: false,
        };
        let now = now_ns(libc::CLOCK_BOOTTIME);
        a.at[ELAPSED_WAKEUP as usize] = Some(now - 1);
        a.at[RTC_WAKEUP as usize] = Some(now_ns(libc::CLOCK_REALTIME) + 60_000_000_000);
        assert_eq!(a.fire_due(), 1 << ELAPSED_WAKEUP);
        assert_eq!(a.fired, 1 << ELAPSED_WAKEUP, "kept for the next WAIT");
        assert!(a.timeout().unwrap() <= Duration::from_secs(1));
        assert!(matches!(
            a.next(),
            Message::Next {
                rtc_ns: Some(_),
                elapsed_ns: None
            }
        ));
        assert!(timespec_ns(&[0u8; 8]).is_none());
    }
}
