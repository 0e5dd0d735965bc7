//! The VP's input devices as evdev devices served in user space: a FUSE
//! file system, mounted by the VP's monitor and bound as the VP's
//! `/dev/input`, with `event0` (the touchscreen) and `event1` (the keys).
//!
//! Why not uinput: a uinput device is a device of the host's input core,
//! so every host handler binds to it — the VT keyboard, the sysrq handler
//! (Alt+SysRq+B reboots the host), mousedev, logind's power-switch watch
//! (KEY_POWER powers the host off) — and whatever a VP writes to its
//! evdev node is injected there too. These devices belong to no kernel
//! input core: events reach exactly the readers of that VP's device.
//!
//! What a reader gets is evdev's ABI: `read` returns whole `struct
//! input_event`s (blocking, or EAGAIN with O_NONBLOCK), `poll` works, and
//! the ioctls programs use to classify and read a device answer as evdev
//! does: EVIOCGVERSION, EVIOCGID, EVIOCGNAME, EVIOCGPHYS/UNIQ (none),
//! EVIOCGPROP, EVIOCGBIT for every type, EVIOCGKEY/LED/SND/SW (state),
//! EVIOCGABS, EVIOCSABS (ignored), EVIOCGRAB (a grab is this device's only:
//! the grabbing reader alone gets events, as in Cells), EVIOCREVOKE,
//! EVIOCSCLOCKID (realtime, monotonic, boottime). Not: EVIOCGMTSLOTS (its
//! argument is read and written, which FUSE does not pass), key remapping,
//! force feedback. Each reader has its own queue; one that does not drain
//! it loses the oldest events and reads SYN_DROPPED, as with evdev. Writes
//! of `input_event`s are delivered to the device's readers (`sendevent`).
//!
//! Events come from cellsd through a pipe per device (cellsd writes the
//! router's frames; the monitor's loop reads them and calls
//! [`EvdevState::push`]); the file system runs on a fuser thread.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::devices::fusefs::{being_killed, Owner, Owners, KILLED_READERS_PERIOD};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, IoctlFlags,
    LockOwner, OpenFlags, PollEvents, PollFlags, PollNotifier, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyPoll, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};

use super::event::*;
use super::router::DeviceKind;
use mux_fb::Geometry;

/// `struct input_absinfo`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AbsInfo {
    pub value: i32,
    pub minimum: i32,
    pub maximum: i32,
    pub fuzz: i32,
    pub flat: i32,
    pub resolution: i32,
}

impl AbsInfo {
    fn bytes(&self) -> Vec<u8> {
        [
            self.value,
            self.minimum,
            self.maximum,
            self.fuzz,
            self.flat,
            self.resolution,
        ]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect()
    }
}

pub const BUS_VIRTUAL: u16 = 0x06;
const INPUT_PROP_DIRECT: u16 = 0x01;
const EV_MAX: u16 = 0x1f;
const KEY_CNT: usize = 0x300;
const ABS_CNT: usize = 0x40;

/// What a VP device is: its name, id and capabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSpec {
    pub name: String,
    /// bustype, vendor, product, version.
    pub id: [u16; 4],
    pub evbits: Vec<u16>,
    pub keybits: Vec<u16>,
    pub abs: BTreeMap<u16, AbsInfo>,
    pub props: Vec<u16>,
}

/// The capabilities of the devices every VP gets: a multitouch
/// touchscreen (protocol B, 10 slots, panel pixels) and the phone's keys.
pub fn spec_for(kind: DeviceKind, name: &str, g: Geometry) -> DeviceSpec {
    let mut s = DeviceSpec {
        name: name.to_string(),
        id: [BUS_VIRTUAL, 0xce11, 1, 1],
        evbits: vec![EV_SYN, EV_KEY],
        keybits: Vec::new(),
        abs: BTreeMap::new(),
        props: Vec::new(),
    };
    match kind {
        DeviceKind::Touch => {
            s.evbits.push(EV_ABS);
            s.keybits = vec![BTN_TOUCH, BTN_TOOL_FINGER];
            s.props.push(INPUT_PROP_DIRECT);
            let (w, h) = (g.width as i32 - 1, g.height as i32 - 1);
            for (code, max) in [
                (ABS_X, w),
                (ABS_Y, h),
                (ABS_MT_SLOT, MAX_SLOTS as i32 - 1),
                (ABS_MT_TRACKING_ID, 0xffff),
                (ABS_MT_POSITION_X, w),
                (ABS_MT_POSITION_Y, h),
            ] {
                s.abs.insert(
                    code,
                    AbsInfo {
                        maximum: max,
                        ..Default::default()
                    },
                );
            }
        }
        DeviceKind::Keys => {
            s.keybits = (1..=KEY_MAX_USED)
                .filter(|c| !(0x100..0x160).contains(c))
                .collect();
        }
    }
    s
}

/// A bitmap of `codes` (evdev's layout: bit n of byte n/8), `len` bytes.
fn bitmap(codes: impl IntoIterator<Item = u16>, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    for c in codes {
        if let Some(b) = v.get_mut(c as usize / 8) {
            *b |= 1 << (c % 8);
        }
    }
    v
}

/// Most events a reader's queue holds (evdev's buffer is of this order).
pub const QUEUE_MAX: usize = 1024;

/// An event as queued: the event and the clocks at its arrival.
#[derive(Debug, Clone, Copy)]
struct Queued {
    ev: InputEvent,
    realtime: libc::timespec,
    monotonic: libc::timespec,
    boottime: libc::timespec,
}

fn now(clock: libc::clockid_t) -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts
}

struct Client {
    dev: usize,
    queue: VecDeque<Queued>,
    clock: libc::clockid_t,
    /// A read waiting for events, with the size it asked for.
    /// A blocked read: its reply, size and the reading thread (host tid).
    pending: Option<(ReplyData, usize, u32)>,
    poll: Option<PollNotifier>,
    revoked: bool,
}

struct Device {
    spec: DeviceSpec,
    keys: Vec<bool>,
    abs_value: HashMap<u16, i32>,
    /// The reader holding EVIOCGRAB.
    grab: Option<u64>,
}

/// The devices of one VP and their readers.
pub struct EvdevState {
    devices: Vec<Device>,
    clients: HashMap<u64, Client>,
    next_fh: u64,
    /// The VP is being frozen: blocked reads answer EINTR (see power::fs).
    freezing: bool,
}

/// Errors of the ioctls, as evdev gives them.
type IoctlResult = Result<(i32, Vec<u8>), Errno>;

// ioctl number fields (asm-generic/ioctl.h).
const IOC_READ: u32 = 2;
const IOC_WRITE: u32 = 1;

fn ioc_dir(cmd: u32) -> u32 {
    cmd >> 30
}
fn ioc_size(cmd: u32) -> usize {
    ((cmd >> 16) & 0x3fff) as usize
}
fn ioc_type(cmd: u32) -> u32 {
    (cmd >> 8) & 0xff
}
fn ioc_nr(cmd: u32) -> u32 {
    cmd & 0xff
}

impl EvdevState {
    pub fn new(specs: Vec<DeviceSpec>) -> Self {
        Self {
            devices: specs
                .into_iter()
                .map(|spec| Device {
                    abs_value: spec.abs.keys().map(|c| (*c, 0)).collect(),
                    spec,
                    keys: vec![false; KEY_CNT],
                    grab: None,
                })
                .collect(),
            clients: HashMap::new(),
            next_fh: 1,
            freezing: false,
        }
    }

    pub fn open(&mut self, dev: usize) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.clients.insert(
            fh,
            Client {
                dev,
                queue: VecDeque::new(),
                clock: libc::CLOCK_REALTIME,
                pending: None,
                poll: None,
                revoked: false,
            },
        );
        fh
    }

    pub fn release(&mut self, fh: u64) {
        if let Some(c) = self.clients.remove(&fh) {
            if let Some(d) = self.devices.get_mut(c.dev) {
                if d.grab == Some(fh) {
                    d.grab = None;
                }
            }
            if let Some((r, _, _)) = c.pending {
                r.error(Errno::EBADF);
            }
        }
    }

    /// Readers of device `dev` now.
    pub fn readers(&self, dev: usize) -> usize {
        self.clients.values().filter(|c| c.dev == dev).count()
    }

    /// Events for device `dev`: its state follows them, and every reader
    /// (only the grabbing one, if one grabbed) gets them.
    pub fn push(&mut self, dev: usize, events: &[InputEvent]) {
        let Some(d) = self.devices.get_mut(dev) else {
            return;
        };
        for e in events {
            match e.type_ {
                EV_KEY => {
                    if let Some(k) = d.keys.get_mut(e.code as usize) {
                        *k = e.value != 0;
                    }
                }
                EV_ABS => {
                    if let Some(v) = d.abs_value.get_mut(&e.code) {
                        *v = e.value;
                    }
                }
                _ => {}
            }
        }
        let grab = d.grab;
        let (realtime, monotonic, boottime) = (
            now(libc::CLOCK_REALTIME),
            now(libc::CLOCK_MONOTONIC),
            now(libc::CLOCK_BOOTTIME),
        );
        for (fh, c) in self.clients.iter_mut() {
            if c.dev != dev || c.revoked || grab.is_some_and(|g| g != *fh) {
                continue;
            }
            for e in events {
                if c.queue.len() >= QUEUE_MAX {
                    // Overflow: the reader learns it lost events.
                    c.queue.clear();
                    c.queue.push_back(Queued {
                        ev: InputEvent::new(EV_SYN, SYN_DROPPED, 0),
                        realtime,
                        monotonic,
                        boottime,
                    });
                }
                c.queue.push_back(Queued {
                    ev: *e,
                    realtime,
                    monotonic,
                    boottime,
                });
            }
            if let Some((reply, size, _)) = c.pending.take() {
                reply.data(&take_events(c, size));
            }
            if let Some(p) = c.poll.take() {
                let _ = p.notify();
            }
        }
    }

    /// A read of `size` bytes; answered now, or when events come.
    pub fn read(&mut self, fh: u64, size: usize, nonblock: bool, tid: u32, reply: ReplyData) {
        let freezing = self.freezing;
        let Some(c) = self.clients.get_mut(&fh) else {
            return reply.error(Errno::EBADF);
        };
        if c.revoked {
            return reply.error(Errno::ENODEV);
        }
        if size < EVENT_SIZE {
            return reply.error(Errno::EINVAL);
        }
        if !c.queue.is_empty() {
            let data = take_events(c, size);
            return reply.data(&data);
        }
        if nonblock {
            return reply.error(Errno::EAGAIN);
        }
        if freezing {
            return reply.error(Errno::EINTR);
        }
        if let Some((old, _, _)) = c.pending.replace((reply, size, tid)) {
            old.error(Errno::EINTR);
        }
    }

    /// Whether a read is blocked (waiting for events).
    pub fn has_blocked_reads(&self) -> bool {
        self.clients.values().any(|c| c.pending.is_some())
    }

    /// Answer EINTR to every blocked read whose thread `dying` says is
    /// being killed (see [`crate::devices::fusefs::being_killed`]).
    pub fn answer_killed(&mut self, dying: impl Fn(u32) -> bool) {
        for c in self.clients.values_mut() {
            if c.pending.as_ref().is_some_and(|(_, _, tid)| dying(*tid)) {
                if let Some((r, _, _)) = c.pending.take() {
                    r.error(Errno::EINTR);
                }
            }
        }
    }

    /// poll: readable when the queue has events; with `notify`, the kernel
    /// is told once events come.
    pub fn poll(&mut self, fh: u64, notify: Option<PollNotifier>) -> Result<PollEvents, Errno> {
        let c = self.clients.get_mut(&fh).ok_or(Errno::EBADF)?;
        if c.revoked {
            return Ok(PollEvents::POLLERR | PollEvents::POLLHUP);
        }
        let mut ev = PollEvents::POLLOUT | PollEvents::POLLWRNORM;
        if !c.queue.is_empty() {
            ev |= PollEvents::POLLIN | PollEvents::POLLRDNORM;
        } else if let Some(n) = notify {
            c.poll = Some(n);
        }
        Ok(ev)
    }

    pub fn set_freezing(&mut self, on: bool) {
        self.freezing = on;
        if on {
            for c in self.clients.values_mut() {
                if let Some((r, _, _)) = c.pending.take() {
                    r.error(Errno::EINTR);
                }
            }
        }
    }

    /// An evdev ioctl on reader `fh`: the return value and the bytes for
    /// the caller's buffer.
    pub fn ioctl(&mut self, fh: u64, cmd: u32, input: &[u8], out_size: usize) -> IoctlResult {
        let c = self.clients.get(&fh).ok_or(Errno::EBADF)?;
        if c.revoked {
            return Err(Errno::ENODEV);
        }
        let dev = c.dev;
        if ioc_type(cmd) != b'E' as u32 {
            return Err(Errno::ENOTTY);
        }
        let int_arg = || -> Result<i32, Errno> {
            let b: [u8; 4] = input
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or(Errno::EFAULT)?;
            Ok(i32::from_ne_bytes(b))
        };
        let d = &self.devices[dev];
        let nr = ioc_nr(cmd);
        let dir = ioc_dir(cmd);
        let len = ioc_size(cmd).min(out_size);
        let sized = |mut v: Vec<u8>| -> IoctlResult {
            v.truncate(len);
            Ok((v.len() as i32, v))
        };
        match (dir, nr) {
            (IOC_READ, 0x01) => Ok((0, 0x0001_0001i32.to_ne_bytes().to_vec())), // EVIOCGVERSION
            (IOC_READ, 0x02) => {
                // EVIOCGID: struct input_id
                let id: Vec<u8> = d.spec.id.iter().flat_map(|v| v.to_ne_bytes()).collect();
                Ok((0, id))
            }
            (IOC_READ, 0x06) => {
                // EVIOCGNAME(len): the name with its NUL, cut to len.
                let mut n = d.spec.name.as_bytes().to_vec();
                n.push(0);
                sized(n)
            }
            (IOC_READ, 0x07) | (IOC_READ, 0x08) => Err(Errno::ENOENT), // PHYS, UNIQ: none
            (IOC_READ, 0x09) => sized(bitmap(d.spec.props.iter().copied(), len)), // EVIOCGPROP
            (IOC_READ, 0x18) => {
                // EVIOCGKEY: which keys are down
                let down = d
                    .keys
                    .iter()
                    .enumerate()
                    .filter(|(_, k)| **k)
                    .map(|(i, _)| i as u16);
                sized(bitmap(down, len))
            }
            (IOC_READ, 0x19..=0x1b) => sized(vec![0; len]), // LED, SND, SW: none lit
            (IOC_READ, n) if (0x20..=0x20 + EV_MAX as u32).contains(&n) => {
                // EVIOCGBIT(ev, len)
                let ev = (n - 0x20) as u16;
                let codes: Vec<u16> = match ev {
                    0 => d.spec.evbits.clone(),
                    EV_KEY => d.spec.keybits.clone(),
                    EV_ABS => d.spec.abs.keys().copied().collect(),
                    _ => Vec::new(),
                };
                sized(bitmap(codes, len))
            }
            (IOC_READ, n) if (0x40..0x40 + ABS_CNT as u32).contains(&n) => {
                // EVIOCGABS(abs)
                let code = (n - 0x40) as u16;
                let mut info = *d.spec.abs.get(&code).ok_or(Errno::EINVAL)?;
                info.value = d.abs_value.get(&code).copied().unwrap_or(0);
                Ok((0, info.bytes()))
            }
            (IOC_WRITE, n) if (0xc0..0xc0 + ABS_CNT as u32).contains(&n) => Ok((0, Vec::new())), // EVIOCSABS
            (IOC_WRITE, 0x90) => {
                // EVIOCGRAB: this device's own grab.
                let on = int_arg()? != 0;
                let d = &mut self.devices[dev];
                match (on, d.grab) {
                    (true, Some(g)) if g != fh => Err(Errno::EBUSY),
                    (true, _) => {
                        d.grab = Some(fh);
                        Ok((0, Vec::new()))
                    }
                    (false, Some(g)) if g == fh => {
                        d.grab = None;
                        Ok((0, Vec::new()))
                    }
                    (false, _) => Err(Errno::EINVAL),
                }
            }
            (IOC_WRITE, 0x91) => {
                // EVIOCREVOKE
                if int_arg()? != 0 {
                    return Err(Errno::EINVAL);
                }
                if let Some(c) = self.clients.get_mut(&fh) {
                    c.revoked = true;
                    c.queue.clear();
                    if let Some((r, _, _)) = c.pending.take() {
                        r.error(Errno::ENODEV);
                    }
                }
                let d = &mut self.devices[dev];
                if d.grab == Some(fh) {
                    d.grab = None;
                }
                Ok((0, Vec::new()))
            }
            (IOC_WRITE, 0xa0) => {
                // EVIOCSCLOCKID
                let clock = int_arg()?;
                if ![
                    libc::CLOCK_REALTIME,
                    libc::CLOCK_MONOTONIC,
                    libc::CLOCK_BOOTTIME,
                ]
                .contains(&clock)
                {
                    return Err(Errno::EINVAL);
                }
                if let Some(c) = self.clients.get_mut(&fh) {
                    c.clock = clock;
                    c.queue.clear();
                }
                Ok((0, Vec::new()))
            }
            _ => Err(Errno::EINVAL),
        }
    }
}

/// Whole events from the front of a reader's queue, at most `size` bytes,
/// stamped with the reader's clock.
fn take_events(c: &mut Client, size: usize) -> Vec<u8> {
    let n = (size / EVENT_SIZE).min(c.queue.len());
    let mut out = Vec::with_capacity(n * EVENT_SIZE);
    for q in c.queue.drain(..n) {
        let ts = match c.clock {
            libc::CLOCK_MONOTONIC => q.monotonic,
            libc::CLOCK_BOOTTIME => q.boottime,
            _ => q.realtime,
        };
        let e = InputEvent {
            sec: ts.tv_sec,
            usec: ts.tv_nsec / 1000,
            ..q.ev
        };
        out.extend_from_slice(&to_bytes(&[e]));
    }
    out
}

const INO_ROOT: u64 = 1;
const TTL: Duration = Duration::from_secs(3600);

/// The file system: the root and one file per device (inode 2 + index).
pub struct EvdevFs {
    state: Arc<Mutex<EvdevState>>,
    names: Vec<String>,
    owners: Owners,
    /// Written when a read blocks: wakes the monitor, which then watches
    /// the reader (is it being killed?).
    notify: OwnedFd,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Android's input group (AID_INPUT).
const AID_INPUT: u32 = 1004;

impl EvdevFs {
    fn dev_of(&self, ino: u64) -> Option<usize> {
        ino.checked_sub(2)
            .map(|i| i as usize)
            .filter(|i| *i < self.names.len())
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        self.owners.attr(ino, 0)
    }
}

impl Filesystem for EvdevFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = (parent.0 == INO_ROOT)
            .then(|| self.names.iter().position(|n| OsStr::new(n) == name))
            .flatten()
            .and_then(|i| self.attr(2 + i as u64));
        match found {
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
        // The kernel checked the right to chown/chmod (default_permissions);
        // Android's ueventd sets these. A truncate means nothing here.
        self.owners.set(ino.0, mode, uid, gid);
        match self.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let Some(dev) = self.dev_of(ino.0) else {
            return reply.error(Errno::EISDIR);
        };
        let fh = lock(&self.state).open(dev);
        // Every read reaches us; the file is a stream, not seekable (like
        // a real evdev node: no pread, no sendfile — which would go through
        // the page cache of a size-0 file and see EOF). A checkpoint hands
        // these files to CRIU as external files.
        reply.opened(
            FileHandle(fh),
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NONSEEKABLE | FopenFlags::FOPEN_STREAM,
        );
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _offset: u64,
        size: u32,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let nonblock = flags.0 & libc::O_NONBLOCK != 0;
        let mut st = lock(&self.state);
        st.read(fh.0, size as usize, nonblock, req.pid(), reply);
        let blocked = st.has_blocked_reads();
        drop(st);
        if blocked {
            let _ = nix::unistd::write(&self.notify, b"r");
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
        let Some(dev) = self.dev_of(ino.0) else {
            return reply.error(Errno::EBADF);
        };
        if data.len() < EVENT_SIZE {
            return reply.error(Errno::EINVAL);
        }
        let events: Vec<InputEvent> = data
            .chunks_exact(EVENT_SIZE)
            .filter_map(InputEvent::from_bytes)
            .collect();
        lock(&self.state).push(dev, &events);
        reply.written((events.len() * EVENT_SIZE) as u32);
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

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.state).release(fh.0);
        reply.ok();
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        match lock(&self.state).ioctl(fh.0, cmd, in_data, out_size as usize) {
            Ok((ret, data)) => reply.ioctl(ret, &data),
            Err(e) => reply.error(e),
        }
    }

    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        ph: PollNotifier,
        _events: PollEvents,
        flags: PollFlags,
        reply: ReplyPoll,
    ) {
        let notify = flags
            .contains(PollFlags::FUSE_POLL_SCHEDULE_NOTIFY)
            .then_some(ph);
        match lock(&self.state).poll(fh.0, notify) {
            Ok(ev) => reply.poll(ev),
            Err(e) => reply.error(e),
        }
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
        let mut entries: Vec<(u64, FileType, String)> = vec![
            (INO_ROOT, FileType::Directory, ".".into()),
            (INO_ROOT, FileType::Directory, "..".into()),
        ];
        for (i, n) in self.names.iter().enumerate() {
            entries.push((2 + i as u64, FileType::RegularFile, n.clone()));
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct EvdevFsError {
    what: String,
    #[source]
    source: std::io::Error,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> EvdevFsError {
    let what = what.into();
    move |source| EvdevFsError { what, source }
}

/// The monitor's input devices of one VP: the mounted file system and the
/// pipes cellsd writes events into.
pub struct VpInput {
    state: Arc<Mutex<EvdevState>>,
    session: Option<fuser::Session<EvdevFs>>,
    _served: Option<fuser::BackgroundSession>,
    /// Read ends (the monitor's), one per device; a partial event waits.
    pipes: Vec<(OwnedFd, Vec<u8>)>,
    /// Readable when a read blocked (see [`EvdevFs`]).
    notify: OwnedFd,
    /// When blocked readers were last looked at (being killed?).
    checked: std::time::Instant,
}

impl VpInput {
    /// Mount the devices (`names` with `specs`) at `dir` (bound as the
    /// VP's /dev/input later); `owner`: VP root's host id. Returns the
    /// devices and the write ends of their pipes (for cellsd).
    pub fn mount(
        dir: &Path,
        devices: Vec<(String, DeviceSpec)>,
        owner: Option<u32>,
    ) -> Result<(Self, Vec<OwnedFd>), EvdevFsError> {
        let dev = crate::devices::fusefs::mount(dir, "cells-input")
            .map_err(io_err("the input devices"))?;
        let id = owner.unwrap_or(0);
        let mut owners = BTreeMap::new();
        owners.insert(
            INO_ROOT,
            Owner {
                uid: id,
                gid: id,
                mode: 0o755,
            },
        );
        let mut names = Vec::new();
        let mut specs = Vec::new();
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for (i, (name, spec)) in devices.into_iter().enumerate() {
            owners.insert(
                2 + i as u64,
                Owner {
                    uid: id,
                    gid: id + AID_INPUT,
                    mode: 0o660,
                },
            );
            names.push(name);
            specs.push(spec);
            // O_NONBLOCK for cellsd's end: a VP that is slow to take its
            // input loses frames, it never stalls cellsd.
            let (r, w) =
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                    .map_err(|e| io_err("pipe")(e.into()))?;
            ours.push((r, Vec::new()));
            theirs.push(w);
        }
        let state = Arc::new(Mutex::new(EvdevState::new(specs)));
        let (notify, notify_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(|e| io_err("pipe")(e.into()))?;
        let fs = EvdevFs {
            state: state.clone(),
            names,
            owners: Owners::new(owners),
            notify: notify_w,
        };
        // The kernel queued INIT at mount: answered here, single-threaded.
        let session =
            fuser::Session::from_fd(fs, dev, fuser::SessionACL::All, fuser::Config::default())
                .map_err(io_err("FUSE handshake of the input devices"))?;
        Ok((
            Self {
                state,
                session: Some(session),
                _served: None,
                pipes: ours,
                notify,
                checked: std::time::Instant::now(),
            },
            theirs,
        ))
    }

    /// Serve the file system (one thread). Call once the init is cloned.
    pub fn serve(&mut self) -> Result<(), EvdevFsError> {
        if let Some(s) = self.session.take() {
            self._served = Some(s.spawn().map_err(io_err("start the input devices"))?);
        }
        Ok(())
    }

    /// The fds the monitor polls: the pipes from cellsd, then the notify
    /// pipe (a read blocked).
    pub fn poll_fds(&self) -> Vec<RawFd> {
        self.pipes
            .iter()
            .map(|(p, _)| p.as_raw_fd())
            .chain([self.notify.as_raw_fd()])
            .collect()
    }

    /// Read what cellsd wrote to device `i` and deliver it (`i` past the
    /// devices: the notify pipe, emptied).
    pub fn handle(&mut self, i: usize) {
        let Some((pipe, partial)) = self.pipes.get_mut(i) else {
            let mut b = [0u8; 64];
            while matches!(nix::unistd::read(&self.notify, &mut b), Ok(n) if n > 0) {}
            return;
        };
        let mut buf = [0u8; 16 * EVENT_SIZE];
        loop {
            match nix::unistd::read(&*pipe, &mut buf) {
                Ok(n) if n > 0 => partial.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        let whole = partial.len() / EVENT_SIZE * EVENT_SIZE;
        let events: Vec<InputEvent> = partial[..whole]
            .chunks_exact(EVENT_SIZE)
            .filter_map(InputEvent::from_bytes)
            .collect();
        partial.drain(..whole);
        if !events.is_empty() {
            lock(&self.state).push(i, &events);
        }
    }

    pub fn set_freezing(&self, on: bool) {
        lock(&self.state).set_freezing(on);
    }

    /// When the monitor should call [`VpInput::answer_killed`] next: while
    /// a read is blocked, every [`KILLED_READERS_PERIOD`].
    pub fn next_check(&self) -> Option<std::time::Duration> {
        lock(&self.state)
            .has_blocked_reads()
            .then(|| KILLED_READERS_PERIOD.saturating_sub(self.checked.elapsed()))
    }

    /// A blocked read of a thread that is being killed gets EINTR (else the
    /// thread, and then its VP, could never end; see
    /// [`crate::devices::fusefs::being_killed`]). At most once a period.
    pub fn answer_killed(&mut self) {
        if self.checked.elapsed() < KILLED_READERS_PERIOD {
            return;
        }
        self.checked = std::time::Instant::now();
        lock(&self.state).answer_killed(being_killed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> EvdevState {
        let g = Geometry::new(720, 1280);
        EvdevState::new(vec![
            spec_for(DeviceKind::Touch, "cells touchscreen", g),
            spec_for(DeviceKind::Keys, "cells keys", g),
        ])
    }

    /// _IOC(dir, 'E', nr, size)
    fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
        dir << 30 | (size as u32) << 16 | (b'E' as u32) << 8 | nr
    }

    #[test]
    fn ioctls_answer_as_evdev() {
        let mut s = state();
        let t = s.open(0);
        let k = s.open(1);
        let (_, v) = s.ioctl(t, ioc(IOC_READ, 0x01, 4), &[], 4).unwrap();
        assert_eq!(i32::from_ne_bytes(v[..4].try_into().unwrap()), 0x10001);
        let (n, name) = s.ioctl(t, ioc(IOC_READ, 0x06, 256), &[], 256).unwrap();
        assert_eq!(&name, b"cells touchscreen\0");
        assert_eq!(n, 18);
        let (_, name) = s.ioctl(t, ioc(IOC_READ, 0x06, 5), &[], 5).unwrap();
        assert_eq!(&name, b"cells", "cut to the caller's length");
        let (_, id) = s.ioctl(k, ioc(IOC_READ, 0x02, 8), &[], 8).unwrap();
        assert_eq!(u16::from_ne_bytes([id[0], id[1]]), BUS_VIRTUAL);
        // EVIOCGBIT: types, keys, abs.
        let (_, ev) = s.ioctl(t, ioc(IOC_READ, 0x20, 4), &[], 4).unwrap();
        assert_eq!(ev[0], 1 << EV_SYN | 1 << EV_KEY | 1 << EV_ABS);
        let (_, keys) = s
            .ioctl(k, ioc(IOC_READ, 0x20 + EV_KEY as u32, 96), &[], 96)
            .unwrap();
        assert_eq!(keys.len(), 96);
        assert!(keys[116 / 8] & (1 << (116 % 8)) != 0, "KEY_POWER");
        let (_, abs) = s
            .ioctl(t, ioc(IOC_READ, 0x20 + EV_ABS as u32, 8), &[], 8)
            .unwrap();
        assert!(abs[ABS_MT_POSITION_X as usize / 8] & (1 << (ABS_MT_POSITION_X % 8)) != 0);
        let (_, props) = s.ioctl(t, ioc(IOC_READ, 0x09, 4), &[], 4).unwrap();
        assert_eq!(props[0], 1 << INPUT_PROP_DIRECT);
        // EVIOCGABS carries the range and the current value.
        s.push(
            0,
            &[
                InputEvent::new(EV_ABS, ABS_MT_POSITION_X, 360),
                InputEvent::syn(),
            ],
        );
        let (_, info) = s
            .ioctl(
                t,
                ioc(IOC_READ, 0x40 + ABS_MT_POSITION_X as u32, 24),
                &[],
                24,
            )
            .unwrap();
        let f = |i: usize| i32::from_ne_bytes(info[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!((f(0), f(1), f(2)), (360, 0, 719));
        assert_eq!(
            s.ioctl(t, ioc(IOC_READ, 0x40 + 0x10, 24), &[], 24),
            Err(Errno::EINVAL)
        );
        // EVIOCGKEY follows presses.
        s.push(1, &[InputEvent::new(EV_KEY, 116, 1), InputEvent::syn()]);
        let (_, st) = s.ioctl(k, ioc(IOC_READ, 0x18, 96), &[], 96).unwrap();
        assert!(st[116 / 8] & (1 << (116 % 8)) != 0);
        // Not evdev's: ENOTTY.
        assert_eq!(s.ioctl(t, 0x5401, &[], 0), Err(Errno::ENOTTY));
    }

    #[test]
    fn every_reader_gets_every_event_unless_one_grabs() {
        let mut s = state();
        let a = s.open(1);
        let b = s.open(1);
        let other = s.open(0);
        s.push(1, &[InputEvent::new(EV_KEY, 30, 1), InputEvent::syn()]);
        for fh in [a, b] {
            assert_eq!(s.clients[&fh].queue.len(), 2);
        }
        assert!(
            s.clients[&other].queue.is_empty(),
            "another device's reader"
        );
        // A grab is virtual: this device only, its grabber only.
        let grab = ioc(IOC_WRITE, 0x90, 4);
        s.ioctl(a, grab, &1i32.to_ne_bytes(), 0).unwrap();
        assert_eq!(s.ioctl(b, grab, &1i32.to_ne_bytes(), 0), Err(Errno::EBUSY));
        s.push(1, &[InputEvent::new(EV_KEY, 30, 0), InputEvent::syn()]);
        assert_eq!(s.clients[&a].queue.len(), 4);
        assert_eq!(s.clients[&b].queue.len(), 2);
        s.release(a);
        s.push(1, &[InputEvent::syn()]);
        assert_eq!(
            s.clients[&b].queue.len(),
            3,
            "the grab ends with its reader"
        );
    }

    #[test]
    fn a_full_queue_drops_and_says_so() {
        let mut s = state();
        let a = s.open(1);
        let many: Vec<InputEvent> = (0..QUEUE_MAX + 10).map(|_| InputEvent::syn()).collect();
        s.push(1, &many);
        let q = &s.clients[&a].queue;
        assert!(q.len() <= QUEUE_MAX);
        assert!(q
            .iter()
            .any(|e| e.ev.code == SYN_DROPPED && e.ev.type_ == EV_SYN));
        // Reads hand out whole events with the reader's clock.
        let c = s.clients.get_mut(&a).unwrap();
        let data = take_events(c, EVENT_SIZE * 2 + 5);
        assert_eq!(data.len(), EVENT_SIZE * 2);
        let e = InputEvent::from_bytes(&data[..EVENT_SIZE]).unwrap();
        assert!(e.sec > 1_000_000_000, "realtime by default");
        let clock = ioc(IOC_WRITE, 0xa0, 4);
        s.ioctl(a, clock, &libc::CLOCK_MONOTONIC.to_ne_bytes(), 0)
            .unwrap();
        s.push(1, &[InputEvent::syn()]);
        let c = s.clients.get_mut(&a).unwrap();
        let e = InputEvent::from_bytes(&take_events(c, EVENT_SIZE)).unwrap();
        assert!(e.sec < 1_000_000_000, "monotonic after EVIOCSCLOCKID");
        assert_eq!(
            s.ioctl(a, clock, &99i32.to_ne_bytes(), 0),
            Err(Errno::EINVAL)
        );
    }
}
