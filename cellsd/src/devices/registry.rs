//! The registry of the device model: every device of a VP, in order, with
//! its two sides (Cells' device namespaces, in user space).
//!
//! - The **VP side** runs in the VP's monitor ([`Device::vp_side`], before
//!   the init is cloned): it makes the device's nodes on the monitor's
//!   private tmpfs (bound into the VP's /dev), and may leave a [`VpDevice`]
//!   that lives on in the monitor (serves a FUSE file system, polls a pipe
//!   or a socket, cleans up when the VP ends). What cellsd needs from it
//!   (fd numbers in the monitor, facts) goes into [`DeviceFds`], kept in
//!   run.json, so a restarted cellsd takes the devices over again.
//! - The **host side** runs in cellsd ([`HostDevice`]): `prepare` before a
//!   start (what the VP side needs, e.g. a reserved pool device), `attach`
//!   once the VP runs or is adopted (takes the VP's fds from the monitor
//!   with pidfd_getfd), `set_foreground` on every switch (deactivate the old
//!   foreground's device, activate the new one's: Cells' notifier chain, in
//!   the order of [`DEVICES`], each step timed), `detach` when the VP ends
//!   (reverse order).
//!
//! Adding a device: a module of its own with its [`Device`] entry (spec and
//! VP side) and its host side, then one line in [`DEVICES`] and one in
//! [`Registry::build`]. Nothing else names it: the request to the monitor
//! carries its `prepare`d settings in [`DeviceRequest::config`], run.json its
//! fds and facts in [`DeviceFds::records`].

use std::any::Any;
use std::collections::BTreeMap;
use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mux_fb::Geometry;
use serde::{Deserialize, Serialize};

use crate::devices::binder::{self, BinderMode};
use crate::devices::display::{self, DisplayMode, Screen};
use crate::devices::input::router::DeviceKind;
use crate::devices::input::sink::Backend;
use crate::devices::input::{self, mux::InputMux};
use crate::devices::model::{DevicePolicies, DeviceSpec, Policy};
use crate::devices::network::{self, host::NetConfig, NetRequest};
use crate::devices::power::{self, backend::SleepBackend};
use crate::devices::{alarm, audio, lights, logger, sensors, telephony};

/// One device of the model: what it is and its VP side.
pub struct Device {
    pub spec: DeviceSpec,
    /// Runs in the monitor before the clone, for every VP (the device
    /// decides what its `none` policy means: usually nothing).
    pub vp_side: VpSide,
}

/// Every device, in the order a switch deactivates and activates them (and
/// the order start and adoption attach them).
pub const DEVICES: &[&Device] = &[
    &display::DEVICE,
    &input::DEVICE,
    &power::DEVICE,
    &binder::DEVICE,
    &network::DEVICE,
    &logger::DEVICE,
    &sensors::DEVICE,
    &lights::DEVICE,
    &alarm::DEVICE,
    &audio::DEVICE,
    &telephony::DEVICE,
];

/// The device named `name`.
pub fn device(name: &str) -> Option<&'static Device> {
    DEVICES.iter().copied().find(|d| d.spec.name == name)
}

/// Why a device could not be made, attached or prepared.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A condition the device explains itself (what is wrong, what to do).
    #[error("{0}")]
    Refused(String),
}

/// `map_err(io("what"))`: an I/O error with what was being done.
pub fn io<E: Into<std::io::Error>>(what: impl Into<String>) -> impl FnOnce(E) -> DeviceError {
    let what = what.into();
    move |e| DeviceError::Io {
        what,
        source: e.into(),
    }
}

// ------------------------------------------------------------ the VP side

/// The devices a VP gets: what cellsd tells its monitor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceRequest {
    /// The panel's geometry: the VP's framebuffer has the same.
    pub geometry: Geometry,
    pub input: Backend,
    /// Framebuffer file (cellsd composes) or a mux_fb kernel device.
    #[serde(default = "userspace_display")]
    pub display: DisplayMode,
    /// What each device's host side prepared for its VP side (by device
    /// name; see [`HostDevice::prepare`]).
    #[serde(default)]
    pub config: BTreeMap<String, serde_json::Value>,
}

fn userspace_display() -> DisplayMode {
    DisplayMode::Userspace
}

impl DeviceRequest {
    /// What `device`'s host side prepared, as its type.
    pub fn config_of<T: serde::de::DeserializeOwned>(&self, device: &str) -> Option<T> {
        self.config
            .get(device)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }
}

/// What one device's VP side reports to cellsd (a device added after the
/// first five keeps its fds and facts here).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DeviceRecord {
    /// Fd numbers in the monitor (cellsd takes them with pidfd_getfd).
    #[serde(default)]
    pub fds: Vec<i32>,
    #[serde(default)]
    pub data: serde_json::Value,
}

/// The VP's devices as the monitor holds them: fd numbers in the monitor
/// (cellsd takes them with pidfd_getfd) and what they are. The first
/// devices' fields are kept as they were (a cellsd adopts VPs started by an
/// older one); newer devices use `records`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceFds {
    pub geometry: Geometry,
    pub fb: i32,
    pub input_backend: Backend,
    pub inputs: Vec<(DeviceKind, i32)>,
    /// The pool binder device the VP holds, if any.
    #[serde(default)]
    pub binder: Option<PathBuf>,
    /// With the mux_fb kernel module: N of the VP's /dev/fbN (fb is -1).
    #[serde(default)]
    pub fb_node: Option<u32>,
    /// Every other device's record, by device name.
    #[serde(default)]
    pub records: BTreeMap<String, DeviceRecord>,
}

impl DeviceFds {
    pub fn new(geometry: Geometry, input_backend: Backend) -> Self {
        Self {
            geometry,
            fb: -1,
            input_backend,
            inputs: Vec::new(),
            binder: None,
            fb_node: None,
            records: BTreeMap::new(),
        }
    }
}

/// What a device's VP side gets, in the monitor.
#[derive(Clone, Copy)]
pub struct VpCtx<'a> {
    pub vp: &'a str,
    /// The VP's policy for this device.
    pub policy: Policy,
    /// The monitor's device folder (a tmpfs of its own, `<run>/vps/NAME/dev`).
    pub dir: &'a Path,
    /// The VP's run dir (`<run>/vps/NAME`: its sockets).
    pub run_dir: &'a Path,
    /// VP root's host id (None: a privileged VP, host root).
    pub owner: Option<u32>,
    pub request: &'a DeviceRequest,
    /// The VP's network, as cellsd asked for it.
    pub network: Option<&'a NetRequest>,
}

/// What the VP sides made before the clone.
pub struct Made {
    /// What cellsd takes over (fd numbers in this monitor).
    pub fds: DeviceFds,
    /// Files to bind into the VP: (file here, path in the VP).
    pub nodes: Vec<(PathBuf, String)>,
    /// Folders to bind into the VP.
    pub dirs: Vec<(PathBuf, String)>,
    /// Folders the VP may only read.
    pub ro_dirs: Vec<(PathBuf, String)>,
    /// The init mounts a binderfs instance of its own.
    pub binderfs: bool,
    /// Fds to keep open while the VP runs.
    pub held: Vec<OwnedFd>,
    /// The devices that live on in the monitor.
    pub live: Vec<Box<dyn VpDevice>>,
}

impl Made {
    pub fn new(fds: DeviceFds) -> Self {
        Self {
            fds,
            nodes: Vec::new(),
            dirs: Vec::new(),
            ro_dirs: Vec::new(),
            binderfs: false,
            held: Vec::new(),
            live: Vec::new(),
        }
    }

    /// The VP ended or its start failed: every live device cleans up.
    pub fn ended(&mut self) {
        for d in self.live.iter_mut().rev() {
            d.ended();
        }
    }
}

pub type VpSide = fn(&VpCtx<'_>, &mut Made) -> Result<(), DeviceError>;

/// A device's VP side that lives on in the monitor, after the clone. The
/// monitor is single-threaded until [`VpDevice::serve`]; it polls every
/// device's fds in one loop with the console and the init's end.
pub trait VpDevice {
    fn name(&self) -> &'static str;
    /// The init is cloned and waits: start serving (threads may start
    /// now; the VP's tree is mounted next, binding this device's nodes).
    fn serve(&mut self, _init: libc::pid_t, _fds: &mut DeviceFds) -> Result<(), DeviceError> {
        Ok(())
    }
    /// The VP's tree is mounted at `root` (the init still waits): add to it
    /// what needs it (a pty of the VP's devpts), and to `fds` what cellsd
    /// takes over that exists only now.
    fn mounted(&mut self, _root: &Path, _fds: &mut DeviceFds) -> Result<(), DeviceError> {
        Ok(())
    }
    /// The init was released and is on its way to exec: work that must be
    /// done before cellsd takes the VP over but need not delay the init
    /// (it runs on another CPU meanwhile).
    fn released(&mut self) {}
    /// The fds the monitor polls for this device.
    fn poll_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }
    /// Which of them are readable (in the order of `poll_fds`); also called
    /// when the timeout passed.
    fn handle(&mut self, _ready: &[bool]) {}
    /// When to be called again at the latest.
    fn timeout(&self) -> Option<Duration> {
        None
    }
    /// Whether cellsd is freezing the VP (the device that carries cellsd's
    /// link to the monitor says; the others are told).
    fn freezing(&self) -> Option<bool> {
        None
    }
    /// The VP is being frozen: a blocked read of the VP's must end.
    fn set_freezing(&mut self, _on: bool) {}
    /// The VP ended, or its start failed after the device was made.
    fn ended(&mut self) {}
}

/// The monitor: run every device's VP side in the model's order (`base`
/// with each device's policy). On an error, the devices already made
/// clean up.
pub fn make_vp_devices(
    base: VpCtx<'_>,
    policies: &DevicePolicies,
    made: &mut Made,
) -> Result<(), (&'static str, DeviceError)> {
    for d in DEVICES {
        let ctx = VpCtx {
            policy: policies.get(d.spec.name),
            ..base
        };
        let t = std::time::Instant::now();
        if let Err(e) = (d.vp_side)(&ctx, made) {
            made.ended();
            return Err((d.spec.name, e));
        }
        tracing::debug!(
            device = d.spec.name,
            us = t.elapsed().as_micros() as u64,
            "made"
        );
    }
    Ok(())
}

// ---------------------------------------------------------- the host side

/// Before a VP starts: what its host sides see.
pub struct Prepare<'a> {
    pub vp: &'a str,
    /// The VP's policy for the device.
    pub policy: Policy,
    /// VP root's host uid (0 for a privileged VP).
    pub uid: u32,
}

/// What a device's host side gets when a running VP's devices are taken
/// over.
pub struct Attach<'a> {
    pub vp: &'a str,
    /// The fds (in the monitor) and facts the monitor reported.
    pub fds: &'a DeviceFds,
    /// The VP's monitor, whose fds are taken; None if it is gone.
    pub monitor: Option<&'a OwnedFd>,
    /// The VP's init.
    pub init: Option<&'a Arc<OwnedFd>>,
    /// The VP's run dir (`<run>/vps/NAME`: its sockets).
    pub run_dir: PathBuf,
    /// The VP's device policies.
    pub policies: &'a DevicePolicies,
}

impl Attach<'_> {
    pub fn monitor(&self) -> Result<&OwnedFd, DeviceError> {
        self.monitor
            .ok_or_else(|| DeviceError::Refused("the VP's monitor is gone".into()))
    }
}

/// A VP ended: what its host sides let go of.
pub struct Detach<'a> {
    pub vp: &'a str,
    pub fds: &'a DeviceFds,
    /// The VP's slot (its network port's name), if its definition is known.
    pub slot: Option<u32>,
}

/// A device's host side.
pub trait HostDevice: Send + Sync + Any {
    /// Its name in the model ([`DEVICES`]).
    fn name(&self) -> &'static str;
    /// Before a start: what the VP side needs (kept in the request's
    /// `config` under the device's name). Undone by `unprepare` if the start
    /// fails, else by `detach`.
    fn prepare(&self, _p: &Prepare<'_>) -> Result<Option<serde_json::Value>, DeviceError> {
        Ok(None)
    }
    /// The start failed after `prepare`.
    fn unprepare(&self, _vp: &str, _request: &DeviceRequest) {}
    /// Take over a running VP's device.
    fn attach(&self, a: &Attach<'_>) -> Result<(), DeviceError>;
    /// The VP ended: let go of its device.
    fn detach(&self, d: &Detach<'_>);
    /// `fg` is the foreground now (None: no VP is): deactivate the previous
    /// foreground's device, activate fg's.
    fn set_foreground(&self, fg: Option<&str>);
    fn as_any(&self) -> &dyn Any;
}

/// What cellsd's command line says about its devices.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The panel: `headless:WxH` or `fbdev:/dev/fbN`.
    pub panel: mux_fb::panel::PanelSpec,
    /// Who multiplexes the panel (None: the kernel module where it is loaded).
    pub display_mode: Option<DisplayMode>,
    /// How VP input devices are made (evdev over FUSE, or FIFOs).
    pub input_backend: Backend,
    /// Folder of the host's input devices to multiplex (None: none).
    pub input_dir: Option<PathBuf>,
    /// Grab host input devices exclusively.
    pub grab_input: bool,
    /// The raw input injection socket.
    pub input_socket: Option<PathBuf>,
    /// How VPs get their binder device.
    pub binder: BinderMode,
    /// The bridge, subnet, NAT and adb ports of VP networking.
    pub network: NetConfig,
    /// cellsd's run dir: where a device keeps what must outlive a cellsd
    /// restart (as the VPs do), e.g. the sensor readings in force.
    pub run_dir: PathBuf,
    /// cellsd's state folder (what devices keep: the VPs' phone numbers).
    pub state_dir: PathBuf,
    /// The device's modem: the baseband's AT tty (None: no cellular line).
    pub modem: Option<PathBuf>,
    /// The device's speaker: a kernel ALSA playback device (None: no sound
    /// card, the mix is only recorded on request).
    pub audio_output: Option<PathBuf>,
    /// The VoIP line's SIP server (None: numbers reach only VPs and the
    /// cellular line).
    pub sip: Option<telephony::voip::SipConfig>,
}

/// The devices' host sides, in the model's order.
pub struct Registry {
    devices: Vec<Arc<dyn HostDevice>>,
}

impl Registry {
    /// Start every device's host side.
    pub fn build(cfg: &HostConfig, sleep: SleepBackend) -> Result<Self, DeviceError> {
        let screen = Arc::new(Screen::open(&cfg.panel, cfg.display_mode).map_err(|e| {
            DeviceError::Refused(format!(
                "cannot open the panel {:?}: {e}; use --panel headless:720x1280 where there is no display",
                cfg.panel
            ))
        })?);
        tracing::info!(panel = screen.describe(), "display");
        let input = InputMux::start(
            cfg.input_dir.clone(),
            screen.geometry(),
            cfg.grab_input,
            cfg.input_socket.clone(),
        )
        .map_err(io("start the input multiplexer"))?;
        let mixer = Arc::new(audio::Mixer::new(cfg.audio_output.as_deref())?);
        Ok(Self::new(vec![
            screen.clone(),
            Arc::new(input),
            Arc::new(power::PowerHost::new(sleep)),
            Arc::new(binder::BinderHost::new(cfg.binder.clone())),
            Arc::new(network::host::HostNet::start(cfg.network.clone())?),
            Arc::new(logger::LoggerHost),
            Arc::new(sensors::SensorsHost::new(
                &cfg.run_dir,
                cfg.input_dir.as_deref(),
            )?),
            Arc::new(lights::LightsDevice(Arc::new(lights::LightsHost::new(
                Path::new("/sys/class"),
            )))),
            Arc::new(alarm::AlarmDevice(Arc::new(alarm::AlarmHost::new()))),
            Arc::new(audio::AudioDevice(Arc::clone(&mixer))),
            Arc::new(telephony::TelephonyDevice(telephony::Switchboard::new(
                &cfg.state_dir,
                cfg.modem.as_deref(),
                cfg.sip.clone(),
                Some(mixer),
            )?)),
        ]))
    }

    /// `devices` in any order: they are kept in the model's.
    pub fn new(mut devices: Vec<Arc<dyn HostDevice>>) -> Self {
        let rank = |d: &Arc<dyn HostDevice>| {
            DEVICES
                .iter()
                .position(|s| s.spec.name == d.name())
                .unwrap_or(usize::MAX)
        };
        devices.sort_by_key(rank);
        Self { devices }
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.devices.iter().map(|d| d.name()).collect()
    }

    /// The host side of type `T` (the manager's handle on a device).
    pub fn get<T: HostDevice>(&self) -> Option<Arc<T>> {
        self.devices.iter().find_map(|d| {
            d.as_any().is::<T>().then(|| {
                let d = Arc::clone(d);
                // SAFETY: the value behind the pointer is a T (checked
                // just above); the Arc's allocation and count are reused.
                unsafe { Arc::from_raw(Arc::into_raw(d).cast::<T>()) }
            })
        })
    }

    /// Prepare every device for a start; on an error what was prepared is
    /// undone.
    pub fn prepare(
        &self,
        vp: &str,
        uid: u32,
        policies: &DevicePolicies,
        request: &mut DeviceRequest,
    ) -> Result<(), DeviceError> {
        for d in &self.devices {
            let p = Prepare {
                vp,
                policy: policies.get(d.name()),
                uid,
            };
            match d.prepare(&p) {
                Ok(Some(v)) => {
                    request.config.insert(d.name().to_string(), v);
                }
                Ok(None) => {}
                Err(e) => {
                    self.unprepare(vp, request);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// A start failed: undo every device's `prepare`.
    pub fn unprepare(&self, vp: &str, request: &DeviceRequest) {
        for d in self.devices.iter().rev() {
            d.unprepare(vp, request);
        }
    }

    /// Attach every device of a running VP; returns the ones that failed
    /// (one failing does not keep the others from attaching).
    pub fn attach(&self, a: &Attach<'_>) -> Vec<(&'static str, DeviceError)> {
        let mut failed = Vec::new();
        for d in &self.devices {
            if let Err(e) = d.attach(a) {
                tracing::warn!(vp = a.vp, device = d.name(), "not attached: {e}");
                failed.push((d.name(), e));
            }
        }
        failed
    }

    /// Detach every device of a VP that ended, in reverse order.
    pub fn detach(&self, d: &Detach<'_>) {
        for dev in self.devices.iter().rev() {
            dev.detach(d);
        }
    }

    /// Tell every device the new foreground, in order; how long each took.
    pub fn switch(&self, fg: Option<&str>) -> Vec<(&'static str, Duration)> {
        self.devices
            .iter()
            .map(|d| {
                let t = Instant::now();
                d.set_foreground(fg);
                let took = t.elapsed();
                tracing::debug!(
                    vp = fg.unwrap_or(""),
                    device = d.name(),
                    us = took.as_micros() as u64,
                    "switch"
                );
                (d.name(), took)
            })
            .collect()
    }
}

/// The model's devices (see [`model`]): their specs in order.
pub fn specs() -> impl Iterator<Item = &'static DeviceSpec> {
    DEVICES.iter().map(|d| &d.spec)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::devices::model;
    use std::sync::Mutex;

    /// A device that records what it was told.
    pub(crate) struct Probe {
        pub(crate) name: &'static str,
        pub(crate) log: Arc<Mutex<Vec<String>>>,
    }

    impl HostDevice for Probe {
        fn name(&self) -> &'static str {
            self.name
        }
        fn prepare(&self, p: &Prepare<'_>) -> Result<Option<serde_json::Value>, DeviceError> {
            self.log
                .lock()
                .unwrap()
                .push(format!("{} prepare {}", self.name, p.vp));
            if self.name == model::BINDER {
                return Err(DeviceError::Refused("no binder device".into()));
            }
            Ok(Some(serde_json::json!(self.name)))
        }
        fn unprepare(&self, vp: &str, _: &DeviceRequest) {
            self.log
                .lock()
                .unwrap()
                .push(format!("{} unprepare {vp}", self.name));
        }
        fn attach(&self, a: &Attach<'_>) -> Result<(), DeviceError> {
            self.log
                .lock()
                .unwrap()
                .push(format!("{} attach {}", self.name, a.vp));
            if self.name == model::DISPLAY {
                return Err(DeviceError::Refused("no panel".into()));
            }
            Ok(())
        }
        fn detach(&self, d: &Detach<'_>) {
            self.log
                .lock()
                .unwrap()
                .push(format!("{} detach {}", self.name, d.vp));
        }
        fn set_foreground(&self, fg: Option<&str>) {
            self.log
                .lock()
                .unwrap()
                .push(format!("{} fg {}", self.name, fg.unwrap_or("-")));
        }
        fn as_any(&self) -> &dyn Any {
            self
        }
    }

    pub(crate) fn fds() -> DeviceFds {
        DeviceFds::new(
            Geometry {
                width: 4,
                height: 4,
                stride: 16,
            },
            Backend::Evdev,
        )
    }

    /// VP "a"'s attach, with no monitor.
    pub(crate) fn attach<'a>(fds: &'a DeviceFds, policies: &'a DevicePolicies) -> Attach<'a> {
        Attach {
            vp: "a",
            fds,
            monitor: None,
            init: None,
            run_dir: PathBuf::new(),
            policies,
        }
    }

    pub(crate) fn detach(fds: &DeviceFds) -> Detach<'_> {
        Detach {
            vp: "a",
            fds,
            slot: None,
        }
    }

    fn request() -> DeviceRequest {
        DeviceRequest {
            geometry: Geometry::new(4, 4),
            input: Backend::Evdev,
            display: DisplayMode::Userspace,
            config: BTreeMap::new(),
        }
    }

    #[test]
    fn devices_run_in_the_models_order_and_detach_in_reverse() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let probe = |name| -> Arc<dyn HostDevice> {
            Arc::new(Probe {
                name,
                log: log.clone(),
            })
        };
        // Given out of order.
        let r = Registry::new(vec![
            probe(model::POWER),
            probe(model::DISPLAY),
            probe(model::INPUT),
        ]);
        assert_eq!(r.names(), [model::DISPLAY, model::INPUT, model::POWER]);
        let f = fds();
        let policies = DevicePolicies::default();
        let a = attach(&f, &policies);
        // One device failing does not keep the others from attaching.
        let failed = r.attach(&a);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, model::DISPLAY);
        let timings = r.switch(Some("a"));
        assert_eq!(
            timings.iter().map(|t| t.0).collect::<Vec<_>>(),
            [model::DISPLAY, model::INPUT, model::POWER]
        );
        r.detach(&detach(&f));
        assert_eq!(
            *log.lock().unwrap(),
            [
                "display attach a",
                "input attach a",
                "power attach a",
                "display fg a",
                "input fg a",
                "power fg a",
                "power detach a",
                "input detach a",
                "display detach a",
            ]
        );
    }

    #[test]
    fn prepare_fills_the_request_and_a_failure_undoes_it() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let probe = |name| -> Arc<dyn HostDevice> {
            Arc::new(Probe {
                name,
                log: log.clone(),
            })
        };
        let r = Registry::new(vec![probe(model::DISPLAY), probe(model::POWER)]);
        let mut req = request();
        r.prepare("a", 0, &DevicePolicies::default(), &mut req)
            .unwrap();
        assert_eq!(
            req.config_of::<String>(model::POWER).as_deref(),
            Some("power")
        );
        // A device that refuses: the others' preparation is undone.
        let r = Registry::new(vec![probe(model::DISPLAY), probe(model::BINDER)]);
        log.lock().unwrap().clear();
        let e = r
            .prepare("a", 0, &DevicePolicies::default(), &mut request())
            .unwrap_err();
        assert_eq!(e.to_string(), "no binder device");
        assert_eq!(
            *log.lock().unwrap(),
            [
                "display prepare a",
                "binder prepare a",
                "binder unprepare a",
                "display unprepare a"
            ]
        );
    }

    #[test]
    fn the_manager_finds_a_device_by_its_type() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let r = Registry::new(vec![Arc::new(Probe {
            name: model::POWER,
            log,
        })]);
        assert_eq!(r.get::<Probe>().map(|p| p.name), Some(model::POWER));
        assert!(r.get::<binder::BinderHost>().is_none());
    }

    #[test]
    fn a_run_state_of_an_older_cellsd_reads_with_no_records() {
        let old = r#"{"geometry":{"width":4,"height":4,"stride":16},"fb":5,
            "input_backend":"evdev","inputs":[["touch",6]]}"#;
        let f: DeviceFds = serde_json::from_str(old).unwrap();
        assert_eq!(f.fb, 5);
        assert!(f.records.is_empty());
    }
}
