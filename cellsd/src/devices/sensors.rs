//! The sensors device: an accelerometer and a GPS receiver per VP, fed
//! from the host (`cellctl sensor set accel X Y Z`, `cellctl location set
//! LAT LON [ALT]`).
//!
//! - The accelerometer is an evdev device of the VP's own,
//!   `/dev/input/event2` ("cells accelerometer", `INPUT_PROP_ACCELEROMETER`,
//!   ABS_X/Y/Z in milli-g, resolution 1000 per g, ±8 g), served by the
//!   monitor over FUSE as the input devices are; cellsd writes its events
//!   into a pipe.
//! - The GPS receiver is a tty of the VP's own devpts, `/dev/ttyGPS0`, in
//!   raw mode; cellsd writes NMEA 0183 sentences (GGA, RMC) to its master
//!   once a second while it knows a location, as a receiver does (gpsd,
//!   Android's GPS HALs read it).
//!
//! Policies: `foreground` (default; as in Cells, only the foreground VP
//! gets readings: a background VP's streams stop and it gets the values in
//! force when it comes back), `shared` (every VP gets them always), `none`.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde::Serialize;

use crate::devices::input::evdev_fs::{self, AbsInfo, VpInput, BUS_VIRTUAL};
use crate::devices::input::event::{InputEvent, EV_ABS, EV_SYN, SYN_REPORT};
use crate::devices::input::sink::{Backend, Sink};
use crate::devices::model::{DeviceSpec, Policy};
use crate::devices::registry::{
    io, Attach, Detach, Device, DeviceError, DeviceFds, DeviceRecord, HostDevice, Made, VpCtx,
    VpDevice,
};

pub const NAME: &str = "sensors";
/// Where the VP finds them.
pub const ACCEL_NODE: &str = "event2";
pub const ACCEL_PATH: &str = "/dev/input/event2";
pub const GPS_PATH: &str = "/dev/ttyGPS0";
/// Standard gravity (m/s² per g).
pub const G: f64 = 9.80665;
/// The accelerometer's range, in milli-g (±8 g).
pub const ACCEL_MAX_MG: i32 = 8000;
const ABS_Z: u16 = 0x02;
const INPUT_PROP_ACCELEROMETER: u16 = 0x06;

pub const DEVICE: Device = Device {
    spec: DeviceSpec {
        name: NAME,
        default: Policy::Foreground,
        policies: &[Policy::Foreground, Policy::Shared, Policy::None],
        about: "/dev/input/event2 (an accelerometer) and /dev/ttyGPS0 (a GPS receiver speaking NMEA), fed from the host (`cellctl sensor`, `cellctl location`): only the foreground's streams run (foreground), or every VP's (shared)",
    },
    vp_side,
};

/// The accelerometer's capabilities.
pub fn accel_spec() -> evdev_fs::DeviceSpec {
    let axis = AbsInfo {
        minimum: -ACCEL_MAX_MG,
        maximum: ACCEL_MAX_MG,
        resolution: 1000,
        ..Default::default()
    };
    evdev_fs::DeviceSpec {
        name: "cells accelerometer".into(),
        id: [BUS_VIRTUAL, 0xce11, 3, 1],
        evbits: vec![EV_SYN, EV_ABS],
        keybits: Vec::new(),
        abs: [(0u16, axis), (1, axis), (ABS_Z, axis)]
            .into_iter()
            .collect(),
        props: vec![INPUT_PROP_ACCELEROMETER],
    }
}

/// The accelerometer (its FUSE device and the pipe cellsd writes into);
/// the GPS tty is made once the VP's devpts is mounted.
fn vp_side(c: &VpCtx<'_>, m: &mut Made) -> Result<(), DeviceError> {
    if c.policy == Policy::None {
        return Ok(());
    }
    let dir = c.dir.join("sensors");
    let (input, mut writers) =
        VpInput::mount(&dir, vec![(ACCEL_NODE.to_string(), accel_spec())], c.owner)
            .map_err(|e| DeviceError::Refused(format!("the accelerometer: {e}")))?;
    let w = writers
        .pop()
        .ok_or_else(|| DeviceError::Refused("the accelerometer has no pipe".into()))?;
    m.fds.records.insert(
        NAME.to_string(),
        DeviceRecord {
            fds: vec![w.as_raw_fd()],
            data: serde_json::json!({"accel": ACCEL_PATH, "gps": GPS_PATH}),
        },
    );
    m.held.push(w);
    m.nodes.push((dir.join(ACCEL_NODE), ACCEL_PATH.to_string()));
    m.live.push(Box::new(VpSensors {
        input,
        owner: c.owner,
        gps: None,
    }));
    Ok(())
}

/// The monitor's side.
struct VpSensors {
    input: VpInput,
    owner: Option<u32>,
    /// The GPS tty's master and slave (open for the VP's life).
    gps: Option<(OwnedFd, OwnedFd)>,
}

impl VpDevice for VpSensors {
    fn name(&self) -> &'static str {
        NAME
    }

    fn serve(&mut self, _init: libc::pid_t, _fds: &mut DeviceFds) -> Result<(), DeviceError> {
        self.input
            .serve()
            .map_err(|e| DeviceError::Refused(format!("the accelerometer: {e}")))
    }

    /// The GPS tty: a pty of the VP's devpts, raw, bound at /dev/ttyGPS0.
    fn mounted(&mut self, root: &Path, fds: &mut DeviceFds) -> Result<(), DeviceError> {
        let (master, slave) = crate::rootfs::bind_new_pty(root, GPS_PATH, self.owner)
            .map_err(|e| DeviceError::Refused(format!("the GPS tty: {e}")))?;
        let mut t = nix::sys::termios::tcgetattr(&slave).map_err(io("tcgetattr of the GPS tty"))?;
        nix::sys::termios::cfmakeraw(&mut t);
        nix::sys::termios::tcsetattr(&slave, nix::sys::termios::SetArg::TCSANOW, &t)
            .map_err(io("tcsetattr of the GPS tty"))?;
        // Read and written by the VP's GPS service (group tty, as serial
        // ports are dialout's).
        nix::sys::stat::fchmod(&slave, nix::sys::stat::Mode::from_bits_truncate(0o660))
            .map_err(io("chmod the GPS tty"))?;
        if let Some(r) = fds.records.get_mut(NAME) {
            r.fds.push(master.as_raw_fd());
            r.fds.push(slave.as_raw_fd());
        }
        self.gps = Some((master, slave));
        Ok(())
    }

    fn poll_fds(&self) -> Vec<RawFd> {
        self.input.poll_fds()
    }

    fn handle(&mut self, ready: &[bool]) {
        for (i, r) in ready.iter().enumerate() {
            if *r {
                self.input.handle(i);
            }
        }
        self.input.answer_killed();
    }

    fn timeout(&self) -> Option<Duration> {
        self.input.next_check()
    }

    fn set_freezing(&mut self, on: bool) {
        self.input.set_freezing(on);
    }
}

/// The readings in force, kept in the run dir: they outlive a cellsd
/// restart, as the VPs do.
pub const READINGS_FILE: &str = "sensors.json";

/// An acceleration (m/s²) and a location, as the host sets them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Readings {
    pub accel: Option<[f64; 3]>,
    /// Latitude, longitude (degrees), altitude (m).
    pub location: Option<[f64; 3]>,
}

/// Why a reading was refused.
pub fn check_accel(v: &[f64]) -> Result<[f64; 3], String> {
    let max = ACCEL_MAX_MG as f64 / 1000.0 * G;
    match v {
        [x, y, z] if v.iter().all(|a| a.is_finite() && a.abs() <= max) => Ok([*x, *y, *z]),
        [_, _, _] => Err(format!(
            "an acceleration is -{max:.1} to {max:.1} m/s² on each axis (the accelerometer's ±8 g)"
        )),
        _ => Err("give the acceleration as X Y Z in m/s², e.g. 0 9.81 0".into()),
    }
}

pub fn check_location(lat: f64, lon: f64, alt: f64) -> Result<[f64; 3], String> {
    if !(lat.is_finite() && (-90.0..=90.0).contains(&lat)) {
        return Err(format!("latitude {lat} is not -90 to 90 degrees"));
    }
    if !(lon.is_finite() && (-180.0..=180.0).contains(&lon)) {
        return Err(format!("longitude {lon} is not -180 to 180 degrees"));
    }
    if !(alt.is_finite() && (-1000.0..=100_000.0).contains(&alt)) {
        return Err(format!("altitude {alt} is not -1000 to 100000 m"));
    }
    Ok([lat, lon, alt])
}

/// The accelerometer's events for an acceleration (m/s²).
pub fn accel_events(a: [f64; 3]) -> Vec<InputEvent> {
    let mg = |v: f64| (v / G * 1000.0).round() as i32;
    vec![
        InputEvent::new(EV_ABS, 0, mg(a[0])),
        InputEvent::new(EV_ABS, 1, mg(a[1])),
        InputEvent::new(EV_ABS, ABS_Z, mg(a[2])),
        InputEvent::new(EV_SYN, SYN_REPORT, 0),
    ]
}

/// `ddmm.mmmm,N` / `dddmm.mmmm,E` of a coordinate.
fn nmea_coord(v: f64, lat: bool) -> String {
    let (pos, neg) = if lat { ('N', 'S') } else { ('E', 'W') };
    let a = v.abs();
    let deg = a.trunc();
    let min = (a - deg) * 60.0;
    let d = if lat {
        format!("{:02}{min:07.4}", deg as u32)
    } else {
        format!("{:03}{min:07.4}", deg as u32)
    };
    format!("{d},{}", if v < 0.0 { neg } else { pos })
}

fn nmea_sentence(body: &str) -> String {
    let sum = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{sum:02X}\r\n")
}

/// The GGA and RMC sentences of a location at Unix time `t`.
pub fn nmea(loc: [f64; 3], t: u64) -> String {
    let (days, secs) = (t / 86400, t % 86400);
    let hms = format!(
        "{:02}{:02}{:02}.00",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    );
    let (year, month, day) = cells_log::format::civil_from_days(days as i64);
    let (lat, lon) = (nmea_coord(loc[0], true), nmea_coord(loc[1], false));
    nmea_sentence(&format!(
        "GPGGA,{hms},{lat},{lon},1,08,0.9,{:.1},M,0.0,M,,",
        loc[2]
    )) + &nmea_sentence(&format!(
        "GPRMC,{hms},A,{lat},{lon},0.0,0.0,{day:02}{month:02}{:02},,,A",
        year % 100
    ))
}

/// A VP's sensors, as cellsd holds them.
struct VpHost {
    accel: Sink,
    gps: Option<OwnedFd>,
    /// The receiver's tty (its input is flushed when its stream stops).
    gps_tty: Option<OwnedFd>,
    shared: bool,
}

struct HostState {
    readings: Readings,
    foreground: Option<String>,
    vps: HashMap<String, VpHost>,
}

impl HostState {
    fn active(&self, vp: &str) -> bool {
        self.vps
            .get(vp)
            .is_some_and(|v| v.shared || self.foreground.as_deref() == Some(vp))
    }
}

/// cellsd's side: the readings in force, and the VPs' streams.
pub struct SensorsHost {
    state: Arc<Mutex<HostState>>,
    file: Arc<std::path::PathBuf>,
    /// The host's accelerometers read (their paths).
    pub host_accelerometers: Vec<std::path::PathBuf>,
}

/// Keep the readings in the run dir: renamed into place, not synced (the
/// run dir lasts until a reboot, and readings may come many times a
/// second).
fn save(file: &Path, r: &Readings) {
    if let Ok(text) = serde_json::to_vec(r) {
        let tmp = file.with_extension("tmp");
        if let Err(e) = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, file)) {
            tracing::warn!("{}: {e}", file.display());
        }
    }
}

/// The device's acceleration changed: every VP whose sensors run gets it.
fn apply_accel(state: &Mutex<HostState>, file: &Path, a: [f64; 3]) {
    let mut st = lock(state);
    st.readings.accel = Some(a);
    save(file, &st.readings);
    let events = accel_events(a);
    let active: Vec<String> = st.vps.keys().filter(|n| st.active(n)).cloned().collect();
    for n in active {
        if let Some(v) = st.vps.get_mut(&n) {
            let _ = v.accel.write(&events);
        }
    }
}

/// A host accelerometer: its path, fd, each axis' units per g and value
/// now (evdev reports only changes).
type HostAccel = (std::path::PathBuf, OwnedFd, [f64; 3], [i32; 3]);

/// The host's accelerometers under `dir` (evdev devices with
/// `INPUT_PROP_ACCELEROMETER`), opened.
fn host_accelerometers(dir: &Path) -> Vec<HostAccel> {
    const EVIOCGPROP: libc::c_ulong = 2 << 30 | 4 << 16 | (b'E' as libc::c_ulong) << 8 | 0x09;
    let eviocgabs = |code: u16| -> libc::c_ulong {
        2 << 30 | 24 << 16 | (b'E' as libc::c_ulong) << 8 | (0x40 + code as libc::c_ulong)
    };
    let mut found = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("event"))
        })
        .collect();
    entries.sort();
    for path in entries {
        let Ok(f) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
        else {
            continue;
        };
        let fd = OwnedFd::from(f);
        let mut props = [0u8; 4];
        // SAFETY: EVIOCGPROP writes at most 4 bytes into our buffer.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), EVIOCGPROP, props.as_mut_ptr()) };
        if r < 0 || props[0] & (1 << INPUT_PROP_ACCELEROMETER) == 0 {
            continue;
        }
        let mut per_g = [0f64; 3];
        let mut now = [0i32; 3];
        for (i, code) in [0u16, 1, ABS_Z].iter().enumerate() {
            let mut info = [0i32; 6];
            // SAFETY: EVIOCGABS writes a struct input_absinfo (6 ints).
            let r = unsafe { libc::ioctl(fd.as_raw_fd(), eviocgabs(*code), info.as_mut_ptr()) };
            // Kernel drivers give the resolution in units per g; one that
            // gives none is taken as 1 g at its range's end.
            now[i] = if r >= 0 { info[0] } else { 0 };
            per_g[i] = match (r, info[5], info[2]) {
                (r, res, _) if r >= 0 && res > 0 => res as f64,
                (r, _, max) if r >= 0 && max > 0 => max as f64,
                _ => 1000.0,
            };
        }
        found.push((path, fd, per_g, now));
    }
    found
}

/// Read the host's accelerometers: each report sets the device's
/// acceleration.
fn read_host_accelerometers(
    devs: Vec<HostAccel>,
    state: Weak<Mutex<HostState>>,
    file: Arc<std::path::PathBuf>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("accelerometers".into())
        .spawn(move || {
            let mut axes: Vec<[i32; 3]> = devs.iter().map(|d| d.3).collect();
            loop {
                let mut pfds: Vec<libc::pollfd> = devs
                    .iter()
                    .map(|(_, fd, _, _)| libc::pollfd {
                        fd: fd.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    })
                    .collect();
                // SAFETY: pfds is a valid array for the call.
                if unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) } < 0 {
                    continue;
                }
                for (i, p) in pfds.iter().enumerate() {
                    if p.revents & libc::POLLIN == 0 {
                        continue;
                    }
                    let mut buf = [0u8; 24 * 32];
                    // SAFETY: reading into our buffer.
                    let n = unsafe { libc::read(p.fd, buf.as_mut_ptr().cast(), buf.len()) };
                    if n <= 0 {
                        continue;
                    }
                    for e in buf[..n as usize].chunks_exact(24) {
                        let Some(ev) = InputEvent::from_bytes(e) else {
                            continue;
                        };
                        match (ev.type_, ev.code) {
                            (EV_ABS, c @ (0 | 1 | ABS_Z)) => {
                                axes[i][if c == ABS_Z { 2 } else { c as usize }] = ev.value
                            }
                            (EV_SYN, SYN_REPORT) => {
                                let Some(state) = state.upgrade() else { return };
                                let per_g = devs[i].2;
                                let a = [0, 1, 2].map(|k| axes[i][k] as f64 / per_g[k] * G);
                                if check_accel(&a).is_ok() {
                                    apply_accel(&state, &file, a);
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        })
        .map(|_| ())
}

fn lock(m: &Mutex<HostState>) -> MutexGuard<'_, HostState> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn write_gps(fd: &OwnedFd, text: &str) {
    // What the VP wrote to its receiver goes nowhere (a real one would
    // take commands): drained so the tty never fills.
    let mut b = [0u8; 512];
    while matches!(nix::unistd::read(fd, &mut b), Ok(n) if n > 0) {}
    // A VP that does not read its receiver loses sentences, as with a real
    // one; it never stalls cellsd (the master is non-blocking).
    let _ = nix::unistd::write(fd, text.as_bytes());
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl SensorsHost {
    /// Starts the thread that sends the location once a second, and one
    /// that reads the host's accelerometers in `input_dir` (if it has any);
    /// the readings a previous cellsd left in `run_dir` are in force again.
    pub fn new(run_dir: &Path, input_dir: Option<&Path>) -> Result<Self, DeviceError> {
        let file = Arc::new(run_dir.join(READINGS_FILE));
        let readings = std::fs::read(file.as_path())
            .ok()
            .and_then(|b| serde_json::from_slice::<Readings>(&b).ok())
            .filter(|r| {
                r.accel.is_none_or(|a| check_accel(&a).is_ok())
                    && r.location
                        .is_none_or(|l| check_location(l[0], l[1], l[2]).is_ok())
            })
            .unwrap_or_default();
        let state = Arc::new(Mutex::new(HostState {
            readings,
            foreground: None,
            vps: HashMap::new(),
        }));
        let weak: Weak<Mutex<HostState>> = Arc::downgrade(&state);
        std::thread::Builder::new()
            .name("gps".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(1));
                let Some(state) = weak.upgrade() else { return };
                let st = lock(&state);
                if let Some(loc) = st.readings.location {
                    let text = nmea(loc, unix_now());
                    for (name, v) in &st.vps {
                        if let (true, Some(fd)) = (st.active(name), &v.gps) {
                            write_gps(fd, &text);
                        }
                    }
                }
            })
            .map_err(io("start the gps thread"))?;
        let devs = input_dir.map(host_accelerometers).unwrap_or_default();
        let host_accelerometers: Vec<std::path::PathBuf> =
            devs.iter().map(|(p, _, _, _)| p.clone()).collect();
        if !devs.is_empty() {
            tracing::info!(devices = ?host_accelerometers, "host accelerometers feed the VPs");
            read_host_accelerometers(devs, Arc::downgrade(&state), Arc::clone(&file))
                .map_err(io("start the accelerometers thread"))?;
        }
        Ok(Self {
            state,
            file,
            host_accelerometers,
        })
    }

    pub fn readings(&self) -> Readings {
        lock(&self.state).readings
    }

    /// The VPs whose sensors run now.
    pub fn active_vps(&self) -> Vec<String> {
        let st = lock(&self.state);
        let mut v: Vec<String> = st.vps.keys().filter(|n| st.active(n)).cloned().collect();
        v.sort();
        v
    }

    /// The device's acceleration changed: every VP whose sensors run gets it.
    pub fn set_accel(&self, a: [f64; 3]) {
        apply_accel(&self.state, &self.file, a);
    }

    /// The device's location changed: sent at once, then every second.
    pub fn set_location(&self, loc: [f64; 3]) {
        let mut st = lock(&self.state);
        st.readings.location = Some(loc);
        save(&self.file, &st.readings);
        let text = nmea(loc, unix_now());
        for (name, v) in &st.vps {
            if let (true, Some(fd)) = (st.active(name), &v.gps) {
                write_gps(fd, &text);
            }
        }
    }

    /// A VP's streams start: it gets the readings in force at once.
    fn start_streams(st: &mut HostState, vp: &str) {
        let readings = st.readings;
        if let Some(v) = st.vps.get_mut(vp) {
            if let Some(a) = readings.accel {
                let _ = v.accel.write(&accel_events(a));
            }
            if let (Some(loc), Some(fd)) = (readings.location, &v.gps) {
                write_gps(fd, &nmea(loc, unix_now()));
            }
        }
    }
}

impl HostDevice for SensorsHost {
    fn name(&self) -> &'static str {
        NAME
    }

    fn attach(&self, a: &Attach<'_>) -> Result<(), DeviceError> {
        let Some(rec) = a.fds.records.get(NAME) else {
            return Ok(()); // sensors=none, or a VP of an older cellsd
        };
        let monitor = a.monitor()?;
        let take = |fd: i32| crate::sys::pidfd_getfd(monitor, fd).map_err(io("take a sensor fd"));
        let accel = Sink::new(take(*rec.fds.first().unwrap_or(&-1))?, Backend::Evdev);
        let gps = match rec.fds.get(1) {
            Some(fd) => {
                let fd = take(*fd)?;
                let fl = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)
                    .map_err(io("the GPS tty's flags"))?;
                let fl = nix::fcntl::OFlag::from_bits_truncate(fl) | nix::fcntl::OFlag::O_NONBLOCK;
                nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(fl))
                    .map_err(io("the GPS tty non-blocking"))?;
                Some(fd)
            }
            None => None,
        };
        let gps_tty = rec.fds.get(2).map(|fd| take(*fd)).transpose()?;
        let shared = a.policies.get(NAME) == Policy::Shared;
        let mut st = lock(&self.state);
        st.vps.insert(
            a.vp.to_string(),
            VpHost {
                accel,
                gps,
                gps_tty,
                shared,
            },
        );
        if st.active(a.vp) {
            Self::start_streams(&mut st, a.vp);
        }
        Ok(())
    }

    fn detach(&self, d: &Detach<'_>) {
        lock(&self.state).vps.remove(d.vp);
    }

    /// Foreground policy: the old foreground's streams stop, the new one's
    /// start with the readings in force.
    fn set_foreground(&self, fg: Option<&str>) {
        let mut st = lock(&self.state);
        if st.foreground.as_deref() == fg {
            return;
        }
        let old = std::mem::replace(&mut st.foreground, fg.map(String::from));
        // The old foreground's receiver goes quiet: what it has not read
        // yet is dropped, so it never reads a stale position later.
        if let Some(v) = old.and_then(|o| st.vps.get(&o)).filter(|v| !v.shared) {
            if let Some(fd) = &v.gps_tty {
                let _ = nix::sys::termios::tcflush(fd, nix::sys::termios::FlushArg::TCIFLUSH);
            }
        }
        if let Some(n) = fg {
            let shared = st.vps.get(n).is_some_and(|v| v.shared);
            if !shared {
                Self::start_streams(&mut st, n);
            }
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
    fn nmea_sentences_are_well_formed() {
        // 2026-12-07 12:34:56 UTC.
        let t = 1_796_646_896;
        let s = nmea([48.8584, -2.2945, 35.0], t);
        let lines: Vec<&str> = s.split("\r\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("$GPGGA,123456.00,4851.5040,N,00217.6700,W,1,08,0.9,35.0,M"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("$GPRMC,123456.00,A,4851.5040,N,00217.6700,W,0.0,0.0,071226,"),
            "{}",
            lines[1]
        );
        for l in lines {
            let (body, sum) = l[1..].split_once('*').unwrap();
            let x = body.bytes().fold(0u8, |a, b| a ^ b);
            assert_eq!(format!("{x:02X}"), sum);
        }
    }

    #[test]
    fn readings_are_checked() {
        assert_eq!(check_accel(&[0.0, 9.81, 0.0]).unwrap(), [0.0, 9.81, 0.0]);
        assert!(check_accel(&[0.0, 100.0, 0.0])
            .unwrap_err()
            .contains("±8 g"));
        assert!(check_accel(&[1.0]).unwrap_err().contains("X Y Z"));
        assert!(check_accel(&[f64::NAN, 0.0, 0.0]).is_err());
        assert!(check_location(91.0, 0.0, 0.0)
            .unwrap_err()
            .contains("latitude 91"));
        assert!(check_location(0.0, -181.0, 0.0)
            .unwrap_err()
            .contains("longitude"));
        assert!(check_location(45.0, 7.0, 200.0).is_ok());
        let ev = accel_events([0.0, G, -G / 2.0]);
        assert_eq!(
            ev.iter().map(|e| e.value).collect::<Vec<_>>(),
            [0, 1000, -500, 0]
        );
    }
}
