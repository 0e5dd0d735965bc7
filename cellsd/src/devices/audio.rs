//! The audio device: playback and capture per VP, mixed by cellsd into the
//! device's one output and fed from its one microphone (AndCont's rule, as
//! Cells' notes give it: the foreground is heard, a call monopolizes audio).
//!
//! - **What the VP sees**: `/dev/snd/cells-playback`, a pipe the VP
//!   writes (S16_LE, 48 kHz, stereo), and `/dev/snd/cells-capture`, a
//!   read-only file (served by its monitor over FUSE) whose reads return the
//!   microphone stream in that format, each read whole once the audio has
//!   come; and an ALSA configuration (the templates' `/etc/asound.conf`)
//!   whose `default` PCM converts any format to that and writes/reads
//!   them — so Debian's unmodified `aplay`/`arecord` (and anything on
//!   alsa-lib) play and record. cellsd drains playback and feeds capture at
//!   the real rate, so a VP's player and recorder are paced by the device's
//!   clock (the playback pipe holds ≈ 85 ms).
//! - **Policies** (`--device audio=`): `foreground` (default: heard while
//!   it is the foreground, muted behind it), `duck` (heard at −12 dB in the
//!   background), `shared` (mixed at full volume in the background: music
//!   while another VP is in front), `none`. A background VP's playback is
//!   drained at the same rate whether heard or not (its player never
//!   stalls). The microphone goes to the foreground only; a background VP
//!   reads silence. A VP in a call ([`Mixer::set_call`]) is the only one
//!   heard and the only one recording, whoever is in front.
//! - **Host side**: a mixer thread, one 10 ms period at a time on an
//!   absolute clock. The mix goes to the output backend: on this host
//!   (no sound card) the mix is available to `cellctl audio record` and
//!   the microphone is what `cellctl audio mic` feeds (as input's host
//!   backend is `cellctl input`).

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::devices::model::{DeviceSpec, Policy};
use crate::devices::registry::{
    io, Attach, Detach, Device, DeviceError, DeviceRecord, HostDevice, Made, VpCtx,
};

pub const NAME: &str = "audio";
pub const PLAYBACK_PATH: &str = "/dev/snd/cells-playback";
pub const CAPTURE_PATH: &str = "/dev/snd/cells-capture";
pub use cells_api::audio::{parse_wav, wav, CHANNELS, FRAME_BYTES, RATE};
/// One mixer period: 10 ms.
pub const PERIOD_FRAMES: usize = RATE as usize / 100;
pub const PERIOD_SAMPLES: usize = PERIOD_FRAMES * CHANNELS;
pub const PERIOD_BYTES: usize = PERIOD_FRAMES * FRAME_BYTES;
/// The pipes' size: four pages (≈ 85 ms). A pipe holds whole pages: with
/// one, a partly read page would block the writer until it is read out.
pub const PIPE_BYTES: i32 = 16384;
/// A ducked VP's gain (−12 dB).
pub const DUCK_GAIN: f32 = 0.25;
/// At most this much microphone audio is queued (60 s).
pub const MIC_MAX_SAMPLES: usize = RATE as usize * CHANNELS * 60;
/// `cellctl audio record` takes at most this long.
pub const RECORD_MAX_MS: u32 = 60_000;

pub const DEVICE: Device = Device {
    spec: DeviceSpec {
        name: NAME,
        default: Policy::Foreground,
        policies: &[Policy::Foreground, Policy::Duck, Policy::Shared, Policy::None],
        about: "/dev/snd/cells-playback and /dev/snd/cells-capture (S16_LE 48 kHz stereo; ALSA's default PCM in the templates): heard only while the foreground (foreground), or at -12 dB (duck) or fully (shared) in the background too; the microphone reaches only the foreground; a call monopolizes both",
    },
    vp_side,
};

fn mkfifo(path: &Path, owner: Option<u32>) -> Result<(), DeviceError> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o660))
        .map_err(io(format!("mkfifo {}", path.display())))?;
    if let Some(uid) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(uid))
            .map_err(io(format!("chown {}", path.display())))?;
    }
    // mkfifo honours the umask: make the mode exact.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o660))
        .map_err(io(format!("chmod {}", path.display())))
}

/// Opened read-write (the monitor's and cellsd's end: the VP's opens never
/// block, the VP's end never sees EOF), non-blocking, [`PIPE_BYTES`] big.
fn open_pipe(path: &Path) -> Result<OwnedFd, DeviceError> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(io(format!("open {}", path.display())))?;
    // SAFETY: fcntl on an fd we own, integer argument.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) } < 0 {
        return Err(io(format!("F_SETPIPE_SZ {}", path.display()))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(f.into())
}

/// The playback pipe, bound at /dev/snd/cells-playback; the capture pipe
/// (cellsd writes, the monitor reads) and the FUSE file the VP reads it
/// through, bound at /dev/snd/cells-capture.
fn vp_side(c: &VpCtx<'_>, m: &mut Made) -> Result<(), DeviceError> {
    if c.policy == Policy::None {
        return Ok(());
    }
    let dir = c.dir.join("snd");
    std::fs::create_dir(&dir).map_err(io(format!("mkdir {}", dir.display())))?;
    let (p, cap) = (dir.join("playback"), dir.join("capture-feed"));
    mkfifo(&p, c.owner)?;
    mkfifo(&cap, None)?;
    let pf = open_pipe(&p)?;
    let cf = open_pipe(&cap)?;
    let fs = CaptureFs::mount(&c.dir.join("sndfs"), c.owner, &cf)?;
    m.fds.records.insert(
        NAME.to_string(),
        DeviceRecord {
            fds: vec![pf.as_raw_fd(), cf.as_raw_fd()],
            data: serde_json::json!({
                "playback": PLAYBACK_PATH, "capture": CAPTURE_PATH,
                "format": "S16_LE", "rate": RATE, "channels": CHANNELS,
            }),
        },
    );
    m.held.push(pf);
    m.held.push(cf);
    m.nodes.push((p, PLAYBACK_PATH.to_string()));
    m.nodes.push((
        c.dir.join("sndfs").join(CAPTURE_FILE),
        CAPTURE_PATH.to_string(),
    ));
    m.live.push(Box::new(fs));
    Ok(())
}

// ------------------------------------------------- the capture file (monitor)

const CAPTURE_FILE: &str = "capture";
const INO_ROOT: u64 = 1;
const INO_CAPTURE: u64 = 2;
/// What the monitor keeps of the capture stream while nobody reads: 40 ms
/// (a reader that comes gets at most that much old audio).
const CAPTURE_KEEP: usize = PERIOD_BYTES * 4;
/// Most reads blocked at once (each is a request the monitor holds).
const MAX_READERS: usize = 16;

/// The capture stream in the monitor: what cellsd sent and not yet read,
/// and the reads waiting for enough of it.
#[derive(Default)]
struct Capture {
    buf: VecDeque<u8>,
    /// (reply, bytes wanted, reading thread).
    waiting: VecDeque<(fuser::ReplyData, usize, u32)>,
    freezing: bool,
}

impl Capture {
    /// Answer the waiting reads, oldest first, while there is enough;
    /// without readers keep only the last [`CAPTURE_KEEP`] bytes.
    fn answer(&mut self) {
        while let Some((_, want, _)) = self.waiting.front() {
            if self.buf.len() < *want {
                break;
            }
            let want = *want;
            if let Some((r, _, _)) = self.waiting.pop_front() {
                let data: Vec<u8> = self.buf.drain(..want).collect();
                r.data(&data);
            }
        }
        let keep = self
            .waiting
            .iter()
            .map(|(_, w, _)| *w)
            .max()
            .unwrap_or(0)
            .max(CAPTURE_KEEP);
        if self.buf.len() > keep {
            let extra = self.buf.len() - keep;
            self.buf.drain(..extra);
        }
    }
}

/// `/dev/snd/cells-capture`: a read of N bytes returns N bytes of the
/// VP's microphone stream once cellsd has sent them (paced by the device's
/// clock, as a sound card's capture is); a FIFO would return short reads,
/// which alsa-lib's file plugin fills with silence.
struct CaptureFsInner {
    state: Arc<Mutex<Capture>>,
    owners: crate::devices::fusefs::Owners,
}

fn cap_lock(m: &Mutex<Capture>) -> MutexGuard<'_, Capture> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

const FS_TTL: Duration = Duration::from_secs(3600);

impl fuser::Filesystem for CaptureFsInner {
    fn lookup(
        &self,
        _req: &fuser::Request,
        parent: fuser::INodeNo,
        name: &std::ffi::OsStr,
        reply: fuser::ReplyEntry,
    ) {
        match (parent.0 == INO_ROOT && name == CAPTURE_FILE)
            .then(|| self.owners.attr(INO_CAPTURE, 0))
            .flatten()
        {
            Some(a) => reply.entry(&FS_TTL, &a, fuser::Generation(0)),
            None => reply.error(fuser::Errno::ENOENT),
        }
    }

    fn getattr(
        &self,
        _req: &fuser::Request,
        ino: fuser::INodeNo,
        _fh: Option<fuser::FileHandle>,
        reply: fuser::ReplyAttr,
    ) {
        match self.owners.attr(ino.0, 0) {
            Some(a) => reply.attr(&FS_TTL, &a),
            None => reply.error(fuser::Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &fuser::Request,
        ino: fuser::INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<fuser::FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: fuser::ReplyAttr,
    ) {
        // The kernel checked the caller may (default_permissions).
        self.owners.set(ino.0, mode, uid, gid);
        match self.owners.attr(ino.0, 0) {
            Some(a) => reply.attr(&FS_TTL, &a),
            None => reply.error(fuser::Errno::ENOENT),
        }
    }

    fn open(
        &self,
        _req: &fuser::Request,
        ino: fuser::INodeNo,
        flags: fuser::OpenFlags,
        reply: fuser::ReplyOpen,
    ) {
        if ino.0 != INO_CAPTURE {
            return reply.error(fuser::Errno::EISDIR);
        }
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(fuser::Errno::EACCES);
        }
        reply.opened(
            fuser::FileHandle(0),
            fuser::FopenFlags::FOPEN_DIRECT_IO | fuser::FopenFlags::FOPEN_NONSEEKABLE,
        );
    }

    fn read(
        &self,
        req: &fuser::Request,
        ino: fuser::INodeNo,
        _fh: fuser::FileHandle,
        _offset: u64,
        size: u32,
        flags: fuser::OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: fuser::ReplyData,
    ) {
        if ino.0 != INO_CAPTURE {
            return reply.error(fuser::Errno::EISDIR);
        }
        let want = size as usize;
        let mut st = cap_lock(&self.state);
        if st.waiting.is_empty() && st.buf.len() >= want {
            let data: Vec<u8> = st.buf.drain(..want).collect();
            return reply.data(&data);
        }
        if flags.0 & libc::O_NONBLOCK != 0 {
            return reply.error(fuser::Errno::EAGAIN);
        }
        if st.freezing {
            return reply.error(fuser::Errno::EINTR);
        }
        if st.waiting.len() >= MAX_READERS {
            return reply.error(fuser::Errno::EAGAIN);
        }
        st.waiting.push_back((reply, want, req.pid()));
    }

    fn readdir(
        &self,
        _req: &fuser::Request,
        ino: fuser::INodeNo,
        _fh: fuser::FileHandle,
        offset: u64,
        mut reply: fuser::ReplyDirectory,
    ) {
        if ino.0 != INO_ROOT {
            return reply.error(fuser::Errno::ENOTDIR);
        }
        let entries = [
            (INO_ROOT, fuser::FileType::Directory, "."),
            (INO_ROOT, fuser::FileType::Directory, ".."),
            (INO_CAPTURE, fuser::FileType::RegularFile, CAPTURE_FILE),
        ];
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(fuser::INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// The monitor's audio device: the capture file system and the pipe from
/// cellsd that feeds it.
struct CaptureFs {
    state: Arc<Mutex<Capture>>,
    feed: OwnedFd,
    session: Option<fuser::Session<CaptureFsInner>>,
    _served: Option<fuser::BackgroundSession>,
    checked: Instant,
}

impl CaptureFs {
    fn mount(dir: &Path, owner: Option<u32>, feed: &OwnedFd) -> Result<Self, DeviceError> {
        let dev = crate::devices::fusefs::mount(dir, "cells-audio")
            .map_err(io("the audio capture file system"))?;
        let id = owner.unwrap_or(0);
        let owners = crate::devices::fusefs::Owners::new(
            [
                (
                    INO_ROOT,
                    crate::devices::fusefs::Owner {
                        uid: id,
                        gid: id,
                        mode: 0o755,
                    },
                ),
                (
                    INO_CAPTURE,
                    crate::devices::fusefs::Owner {
                        uid: id,
                        gid: id,
                        mode: 0o440,
                    },
                ),
            ]
            .into_iter()
            .collect(),
        );
        let state = Arc::new(Mutex::new(Capture::default()));
        let fs = CaptureFsInner {
            state: Arc::clone(&state),
            owners,
        };
        let session =
            fuser::Session::from_fd(fs, dev, fuser::SessionACL::All, fuser::Config::default())
                .map_err(io("FUSE handshake of the audio capture file system"))?;
        Ok(Self {
            state,
            feed: feed.try_clone().map_err(io("dup the capture pipe"))?,
            session: Some(session),
            _served: None,
            checked: Instant::now(),
        })
    }
}

impl crate::devices::registry::VpDevice for CaptureFs {
    fn name(&self) -> &'static str {
        NAME
    }

    fn serve(
        &mut self,
        _init: libc::pid_t,
        _fds: &mut crate::devices::registry::DeviceFds,
    ) -> Result<(), DeviceError> {
        if let Some(s) = self.session.take() {
            self._served = Some(s.spawn().map_err(io("serve /dev/snd/cells-capture"))?);
        }
        Ok(())
    }

    fn poll_fds(&self) -> Vec<std::os::fd::RawFd> {
        vec![self.feed.as_raw_fd()]
    }

    fn handle(&mut self, ready: &[bool]) {
        let mut st = cap_lock(&self.state);
        if ready.first().copied().unwrap_or(false) {
            let mut b = [0u8; 8192];
            while let Ok(n) = nix::unistd::read(&self.feed, &mut b) {
                if n == 0 {
                    break;
                }
                st.buf.extend(&b[..n]);
            }
            st.answer();
        }
        if self.checked.elapsed() >= crate::devices::fusefs::KILLED_READERS_PERIOD {
            self.checked = Instant::now();
            let (gone, keep): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut st.waiting)
                .into_iter()
                .partition(|(_, _, tid)| crate::devices::fusefs::being_killed(*tid));
            st.waiting = keep;
            for (r, _, _) in gone {
                r.error(fuser::Errno::EINTR);
            }
        }
    }

    fn timeout(&self) -> Option<Duration> {
        let st = cap_lock(&self.state);
        (!st.waiting.is_empty()).then(|| {
            crate::devices::fusefs::KILLED_READERS_PERIOD.saturating_sub(self.checked.elapsed())
        })
    }

    /// A task blocked in a read cannot be frozen: answer EINTR (alsa-lib
    /// retries), and block no new read until thawed.
    fn set_freezing(&mut self, on: bool) {
        let mut st = cap_lock(&self.state);
        st.freezing = on;
        if on {
            for (r, _, _) in st.waiting.drain(..) {
                r.error(fuser::Errno::EINTR);
            }
        }
    }
}

// ---------------------------------------------------------------- the plan

/// Where a VP's audio goes this period.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub vp: String,
    /// Its playback's gain in the mix (0 = drained, not heard).
    pub gain: f32,
    /// Whether it gets the microphone (else it reads silence).
    pub mic: bool,
}

/// Who is heard and who records, from the foreground, the VP in a call
/// and each VP's policy. Pure.
pub fn plan(fg: Option<&str>, calls: &[String], vps: &[(String, Policy)]) -> Vec<Route> {
    vps.iter()
        .map(|(vp, policy)| {
            let (gain, mic) = match calls.is_empty() {
                false => {
                    if calls.contains(vp) {
                        (1.0, true)
                    } else {
                        (0.0, false)
                    }
                }
                true if fg == Some(vp.as_str()) => (1.0, true),
                true => match policy {
                    Policy::Shared => (1.0, false),
                    Policy::Duck => (DUCK_GAIN, false),
                    _ => (0.0, false),
                },
            };
            Route {
                vp: vp.clone(),
                gain,
                mic,
            }
        })
        .collect()
}

/// Add `input` (S16 samples) times `gain` into `acc`.
pub fn mix_into(acc: &mut [i32], input: &[i16], gain: f32) {
    if gain == 0.0 {
        return;
    }
    for (a, s) in acc.iter_mut().zip(input) {
        *a += (*s as f32 * gain) as i32;
    }
}

/// The mix, clipped to S16.
pub fn clip(acc: &[i32]) -> Vec<i16> {
    acc.iter()
        .map(|v| (*v).clamp(i16::MIN as i32, i16::MAX as i32) as i16)
        .collect()
}

// ------------------------------------------------------------ the host side

struct VpAudio {
    play: OwnedFd,
    cap: OwnedFd,
    policy: Policy,
    /// Bytes of a frame cut by a short read, kept for the next period.
    carry: Vec<u8>,
    played_frames: u64,
    heard_frames: u64,
    captured_frames: u64,
}

struct Tap {
    want: usize,
    got: Vec<i16>,
    done: mpsc::Sender<Vec<i16>>,
}

/// A call's audio on the network (VoIP): its downlink is mixed into the
/// output, the microphone goes to its uplink.
struct LineBuf {
    down: VecDeque<i16>,
    up: mpsc::SyncSender<Vec<i16>>,
}

/// At most this much downlink is queued (200 ms): a late reader loses the
/// oldest, the delay stays short.
const LINE_MAX_SAMPLES: usize = RATE as usize * CHANNELS / 5;

struct State {
    lines: BTreeMap<u64, LineBuf>,
    next_line: u64,
    vps: BTreeMap<String, VpAudio>,
    foreground: Option<String>,
    calls: Vec<String>,
    taps: Vec<Tap>,
    /// Continuous listeners of the output (the web console's sound).
    listeners: Vec<mpsc::SyncSender<Vec<i16>>>,
    mic: VecDeque<i16>,
    periods: u64,
    /// Periods the thread started late by more than one period.
    late: u64,
    /// What the output is, as `cellctl audio` says it.
    output: String,
}

/// What `cellctl audio` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub format: String,
    pub output: String,
    pub microphone: String,
    pub foreground: Option<String>,
    /// The VPs in a call (they alone are heard and record).
    pub calls: Vec<String>,
    pub vps: Vec<VpReport>,
    pub periods: u64,
    pub late_periods: u64,
    pub mic_queued_ms: u64,
    /// Each call line's downlink waiting for the output (VoIP calls).
    pub call_lines_queued_ms: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VpReport {
    pub vp: String,
    pub policy: Policy,
    pub gain: f32,
    pub mic: bool,
    pub played_ms: u64,
    pub heard_ms: u64,
    pub captured_ms: u64,
}

/// cellsd's side: the VPs' pipes and the mixer thread.
pub struct Mixer {
    state: Arc<Mutex<State>>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn frames_ms(f: u64) -> u64 {
    f * 1000 / RATE as u64
}

/// Read what a VP played this period (non-blocking): whole frames, the
/// rest zero; and how many frames it played.
fn read_period(v: &mut VpAudio) -> (Vec<i16>, u64) {
    let mut bytes = std::mem::take(&mut v.carry);
    let mut buf = [0u8; PERIOD_BYTES];
    while bytes.len() < PERIOD_BYTES {
        let want = PERIOD_BYTES - bytes.len();
        match nix::unistd::read(&v.play, &mut buf[..want]) {
            Ok(n) if n > 0 => bytes.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let whole = bytes.len() / FRAME_BYTES * FRAME_BYTES;
    v.carry = bytes.split_off(whole);
    let frames = (whole / FRAME_BYTES) as u64;
    v.played_frames += frames;
    let mut out = vec![0i16; PERIOD_SAMPLES];
    for (i, s) in bytes.chunks_exact(2).enumerate() {
        out[i] = i16::from_le_bytes([s[0], s[1]]);
    }
    (out, frames)
}

use cells_api::audio::to_bytes;

/// The mixer thread: a period at a time, paced by the speaker's clock
/// (its writes block while its buffer is full) or by a timer.
fn run(weak: Weak<Mutex<State>>, mut speaker: Option<crate::devices::alsa::Playback>) {
    let period = Duration::from_millis(10);
    if let Some(s) = &speaker {
        // Four periods of silence ahead: room for the mixer's jitter.
        let _ = s.write(&vec![0i16; PERIOD_SAMPLES * 4]);
    }
    let mut next = Instant::now() + period;
    loop {
        if speaker.is_none() {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
        }
        let Some(state) = weak.upgrade() else { return };
        let out = {
            let mut st = lock(&state);
            let out = tick(&mut st);
            // Behind by more than a period (a stopped process, a loaded
            // machine): counted; after a tenth of a second the clock
            // starts again rather than burst.
            let now = Instant::now();
            if speaker.is_none() && now > next + period {
                st.late += 1;
            }
            next += period;
            if now > next + 10 * period {
                next = now + period;
            }
            out
        };
        drop(state);
        if let Some(s) = &speaker {
            if let Err(e) = s.write(&out) {
                tracing::warn!(device = %s.path().display(), "audio output failed, the mix goes nowhere now: {e}");
                if let Some(state) = weak.upgrade() {
                    lock(&state).output =
                        format!("failed ({e}); host: `cellctl audio record` takes the mix");
                }
                speaker = None;
                next = Instant::now() + period;
            }
        }
    }
}

/// One period: drain every VP's playback, mix by the plan, hand the mix to
/// the taps, give the microphone (or silence) to every VP's capture.
fn tick(st: &mut State) -> Vec<i16> {
    let vps: Vec<(String, Policy)> = st.vps.iter().map(|(n, v)| (n.clone(), v.policy)).collect();
    let routes = plan(st.foreground.as_deref(), &st.calls, &vps);
    let mut acc = vec![0i32; PERIOD_SAMPLES];
    for r in &routes {
        if let Some(v) = st.vps.get_mut(&r.vp) {
            let (p, frames) = read_period(v);
            if r.gain > 0.0 {
                v.heard_frames += frames;
            }
            mix_into(&mut acc, &p, r.gain);
        }
    }
    for l in st.lines.values_mut() {
        let n = PERIOD_SAMPLES.min(l.down.len());
        let p: Vec<i16> = l.down.drain(..n).collect();
        mix_into(&mut acc, &p, 1.0);
    }
    let out = clip(&acc);
    // A listener that is gone is dropped; one that is behind loses this
    // period.
    st.listeners.retain(|l| {
        !matches!(
            l.try_send(out.clone()),
            Err(mpsc::TrySendError::Disconnected(_))
        )
    });
    let mut i = 0;
    while i < st.taps.len() {
        let t = &mut st.taps[i];
        let room = t.want - t.got.len();
        t.got.extend_from_slice(&out[..room.min(out.len())]);
        if t.got.len() >= t.want {
            let t = st.taps.swap_remove(i);
            let _ = t.done.send(t.got);
        } else {
            i += 1;
        }
    }
    let n = PERIOD_SAMPLES.min(st.mic.len());
    let mut mic: Vec<i16> = st.mic.drain(..n).collect();
    mic.resize(PERIOD_SAMPLES, 0);
    for l in st.lines.values() {
        // A full uplink (its sender stalled) loses this period.
        let _ = l.up.try_send(mic.clone());
    }
    let (mic, silence) = (to_bytes(&mic), vec![0u8; PERIOD_BYTES]);
    for r in &routes {
        if let Some(v) = st.vps.get_mut(&r.vp) {
            // A reader that is not there, or slow, loses this period
            // (EAGAIN): a capture never stalls the mixer.
            let data = if r.mic { &mic } else { &silence };
            if let Ok(k) = nix::unistd::write(&v.cap, data) {
                v.captured_frames += (k / FRAME_BYTES) as u64;
            }
        }
    }
    st.periods += 1;
    out
}

impl Mixer {
    /// Start the mixer thread. `output`: a kernel ALSA playback device (the
    /// device's speaker; its clock then paces the mixer), or None (no sound
    /// card: a timer paces it, the mix goes to `record` only).
    pub fn new(output: Option<&Path>) -> Result<Self, DeviceError> {
        let speaker = match output {
            Some(p) => Some(
                crate::devices::alsa::Playback::open(p, RATE, CHANNELS as u32, PERIOD_FRAMES as u32, 8)
                    .map_err(|e| {
                        DeviceError::Refused(format!(
                            "the audio output: {e}; give another with --audio-output PATH, or --audio-output none"
                        ))
                    })?,
            ),
            None => None,
        };
        // The card's controls: pcmC<card>D<dev>p -> controlC<card>.
        if let Some(p) = output {
            let card = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("pcmC"))
                .and_then(|n| n.split('D').next())
                .map(|c| p.with_file_name(format!("controlC{c}")));
            if let Some(ctl) = card {
                match crate::devices::alsa::unmute(&ctl) {
                    Ok(set) => tracing::info!(control = %ctl.display(), ?set, "speaker unmuted"),
                    Err(e) => {
                        tracing::warn!(control = %ctl.display(), "cannot unmute the speaker: {e}")
                    }
                }
            }
        }
        let output = match &speaker {
            Some(s) => format!("ALSA {} (its clock paces the mixer)", s.path().display()),
            None => "host: no sound card; `cellctl audio record` takes the mix".into(),
        };
        let state = Arc::new(Mutex::new(State {
            lines: BTreeMap::new(),
            next_line: 0,
            vps: BTreeMap::new(),
            foreground: None,
            calls: Vec::new(),
            taps: Vec::new(),
            listeners: Vec::new(),
            mic: VecDeque::new(),
            periods: 0,
            late: 0,
            output,
        }));
        let weak: Weak<Mutex<State>> = Arc::downgrade(&state);
        std::thread::Builder::new()
            .name("audio".into())
            .spawn(move || run(weak, speaker))
            .map_err(io("start the audio thread"))?;
        Ok(Self { state })
    }

    /// The device's output for the next `ms` milliseconds (S16_LE 48 kHz
    /// stereo samples); waits that long.
    pub fn record(&self, ms: u32) -> Result<Vec<i16>, String> {
        if ms == 0 || ms > RECORD_MAX_MS {
            return Err(format!(
                "record 1 to {RECORD_MAX_MS} ms of the output (asked {ms})"
            ));
        }
        let want = ms as usize * RATE as usize / 1000 * CHANNELS;
        let (tx, rx) = mpsc::channel();
        lock(&self.state).taps.push(Tap {
            want,
            got: Vec::with_capacity(want),
            done: tx,
        });
        rx.recv_timeout(Duration::from_millis(ms as u64 + 5000))
            .map_err(|_| "the audio thread did not deliver the recording".to_string())
    }

    /// Hear the output from now on, 10 ms (S16 48 kHz stereo) at a time,
    /// until the receiver is dropped (≤ 200 ms queued).
    pub fn listen(&self) -> mpsc::Receiver<Vec<i16>> {
        let (tx, rx) = mpsc::sync_channel(20);
        lock(&self.state).listeners.push(tx);
        rx
    }

    /// Queue samples (S16 48 kHz stereo) as the device's microphone.
    pub fn feed_mic(&self, samples: &[i16]) -> Result<(), String> {
        if !samples.len().is_multiple_of(CHANNELS) {
            return Err("microphone samples must be whole stereo frames".into());
        }
        let mut st = lock(&self.state);
        if st.mic.len() + samples.len() > MIC_MAX_SAMPLES {
            return Err(format!(
                "at most 60 s of microphone audio may be queued ({} ms are): wait for it to play",
                frames_ms((st.mic.len() / CHANNELS) as u64)
            ));
        }
        st.mic.extend(samples.iter().copied());
        Ok(())
    }

    /// Open a call's line: what is played into it is heard on the output
    /// (at full volume, whoever is in front), and it receives the
    /// microphone, a 10 ms period at a time. Closed when dropped.
    pub fn open_line(&self) -> CallLine {
        let (tx, rx) = mpsc::sync_channel(50);
        let mut st = lock(&self.state);
        st.next_line += 1;
        let id = st.next_line;
        st.lines.insert(
            id,
            LineBuf {
                down: VecDeque::new(),
                up: tx,
            },
        );
        CallLine {
            id,
            state: Arc::downgrade(&self.state),
            up: rx,
        }
    }

    /// The VPs in a call: the only ones heard and recording (empty: no
    /// call). The telephony device sets it as calls become active and end.
    pub fn set_calls(&self, vps: Vec<String>) {
        lock(&self.state).calls = vps;
    }

    pub fn report(&self) -> Report {
        let st = lock(&self.state);
        let vps: Vec<(String, Policy)> =
            st.vps.iter().map(|(n, v)| (n.clone(), v.policy)).collect();
        let routes = plan(st.foreground.as_deref(), &st.calls, &vps);
        Report {
            format: format!("S16_LE {RATE} Hz {CHANNELS} channels, 10 ms periods"),
            output: st.output.clone(),
            microphone: "host: `cellctl audio mic` feeds it".into(),
            foreground: st.foreground.clone(),
            calls: st.calls.clone(),
            vps: routes
                .into_iter()
                .filter_map(|r| {
                    let v = st.vps.get(&r.vp)?;
                    Some(VpReport {
                        vp: r.vp,
                        policy: v.policy,
                        gain: r.gain,
                        mic: r.mic,
                        played_ms: frames_ms(v.played_frames),
                        heard_ms: frames_ms(v.heard_frames),
                        captured_ms: frames_ms(v.captured_frames),
                    })
                })
                .collect(),
            periods: st.periods,
            late_periods: st.late,
            mic_queued_ms: frames_ms((st.mic.len() / CHANNELS) as u64),
            call_lines_queued_ms: st
                .lines
                .values()
                .map(|l| frames_ms((l.down.len() / CHANNELS) as u64))
                .collect(),
        }
    }
}

/// A call's line into the mixer ([`Mixer::open_line`]).
pub struct CallLine {
    id: u64,
    state: Weak<Mutex<State>>,
    /// The microphone, 10 ms (S16 48 kHz stereo) at a time.
    pub up: mpsc::Receiver<Vec<i16>>,
}

impl CallLine {
    /// Queue downlink audio (S16 48 kHz stereo) for the output.
    pub fn play(&self, samples: &[i16]) {
        let Some(state) = self.state.upgrade() else {
            return;
        };
        let mut st = lock(&state);
        if let Some(l) = st.lines.get_mut(&self.id) {
            l.down.extend(samples.iter().copied());
            let over = l.down.len().saturating_sub(LINE_MAX_SAMPLES);
            l.down.drain(..over);
        }
    }
}

impl Drop for CallLine {
    fn drop(&mut self) {
        if let Some(state) = self.state.upgrade() {
            lock(&state).lines.remove(&self.id);
        }
    }
}

/// The registry's handle (the manager finds it by this type).
pub struct AudioDevice(pub Arc<Mixer>);

impl HostDevice for AudioDevice {
    fn name(&self) -> &'static str {
        NAME
    }

    fn attach(&self, a: &Attach<'_>) -> Result<(), DeviceError> {
        let Some(rec) = a.fds.records.get(NAME) else {
            return Ok(()); // audio=none, or a VP of an older cellsd
        };
        let monitor = a.monitor()?;
        let take = |fd: Option<&i32>| {
            crate::sys::pidfd_getfd(monitor, *fd.unwrap_or(&-1)).map_err(io("take an audio pipe"))
        };
        let play = take(rec.fds.first())?;
        let cap = take(rec.fds.get(1))?;
        // pidfd_getfd's copies share the monitor's file: still non-blocking.
        lock(&self.0.state).vps.insert(
            a.vp.to_string(),
            VpAudio {
                play,
                cap,
                policy: a.policies.get(NAME),
                carry: Vec::new(),
                played_frames: 0,
                heard_frames: 0,
                captured_frames: 0,
            },
        );
        Ok(())
    }

    fn detach(&self, d: &Detach<'_>) {
        let mut st = lock(&self.0.state);
        st.vps.remove(d.vp);
        st.calls.retain(|v| v != d.vp);
    }

    fn set_foreground(&self, fg: Option<&str>) {
        lock(&self.0.state).foreground = fg.map(String::from);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vps(list: &[(&str, Policy)]) -> Vec<(String, Policy)> {
        list.iter().map(|(n, p)| (n.to_string(), *p)).collect()
    }

    fn gains(r: &[Route]) -> Vec<(String, f32, bool)> {
        r.iter().map(|r| (r.vp.clone(), r.gain, r.mic)).collect()
    }

    #[test]
    fn the_foreground_is_heard_and_a_call_monopolizes() {
        let v = vps(&[
            ("a", Policy::Foreground),
            ("b", Policy::Foreground),
            ("c", Policy::Duck),
            ("d", Policy::Shared),
        ]);
        assert_eq!(
            gains(&plan(Some("a"), &[], &v)),
            vec![
                ("a".into(), 1.0, true),
                ("b".into(), 0.0, false),
                ("c".into(), DUCK_GAIN, false),
                ("d".into(), 1.0, false),
            ]
        );
        // No foreground: only the background policies are heard, nobody records.
        assert_eq!(
            gains(&plan(None, &[], &v)),
            vec![
                ("a".into(), 0.0, false),
                ("b".into(), 0.0, false),
                ("c".into(), DUCK_GAIN, false),
                ("d".into(), 1.0, false),
            ]
        );
        // b in a call while a is in front: only b, whatever the policies.
        assert_eq!(
            gains(&plan(Some("a"), &["b".to_string()], &v)),
            vec![
                ("a".into(), 0.0, false),
                ("b".into(), 1.0, true),
                ("c".into(), 0.0, false),
                ("d".into(), 0.0, false),
            ]
        );
    }

    #[test]
    fn mixing_adds_with_gain_and_clips() {
        let mut acc = vec![0i32; 4];
        mix_into(&mut acc, &[1000, -1000, 30000, -30000], 1.0);
        mix_into(&mut acc, &[1000, 1000, 30000, -30000], 0.25);
        assert_eq!(acc, vec![1250, -750, 37500, -37500]);
        assert_eq!(clip(&acc), vec![1250, -750, i16::MAX, i16::MIN]);
    }

    #[test]
    fn a_period_reads_whole_frames_and_carries_the_rest() {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK).unwrap();
        let (cr, cw) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK).unwrap();
        let mut v = VpAudio {
            play: r,
            cap: cw,
            policy: Policy::Foreground,
            carry: Vec::new(),
            played_frames: 0,
            heard_frames: 0,
            captured_frames: 0,
        };
        // 1.5 frames: one frame now, the half kept.
        nix::unistd::write(&w, &[1, 0, 2, 0, 3, 0]).unwrap();
        let (p, n) = read_period(&mut v);
        assert_eq!(n, 1);
        assert_eq!(&p[..3], &[1, 2, 0]);
        assert_eq!(v.carry, vec![3, 0]);
        nix::unistd::write(&w, &[4, 0]).unwrap();
        let (p, _) = read_period(&mut v);
        assert_eq!(&p[..3], &[3, 4, 0]);
        assert_eq!(v.played_frames, 2);
        drop(cr);
    }
}
