//! The host side of the device model: what cellsd does with a VP's
//! devices once its monitor made them. Each device's host side implements
//! [`HostDevice`]; the [`Registry`] lists them in the model's order
//! ([`super::model::DEVICES`]) and cellsd's start, adoption, switch and stop
//! go through it:
//!
//! - attach (a VP started or was adopted): take the VP's device fds from its
//!   monitor (pidfd_getfd) and hand them to the multiplexer;
//! - switch (Cells' notifier chain): every device in order is told the new
//!   foreground, deactivates the old one's and activates the new one's; each
//!   step is timed;
//! - detach (the VP ended), in reverse order.
//!
//! A device that fails to attach is logged and the others still attach.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::devices::display::Screen;
use crate::devices::input::mux::InputMux;
use crate::devices::input::sink::Sink;
use crate::devices::model;
use crate::devices::power::hub::PowerHub;
use crate::monitor::DeviceFds;
use crate::sys;

/// What a device's host side gets when a running VP's devices are taken
/// over.
pub struct Attach<'a> {
    pub vp: &'a str,
    /// The fds (in the monitor) and facts the monitor reported.
    pub fds: &'a DeviceFds,
    /// The VP's monitor, whose fds are taken; None if it is gone.
    pub monitor: Option<&'a OwnedFd>,
    /// The VP's /sys/power link socket.
    pub power_socket: PathBuf,
    /// The VP's device policies.
    pub policies: &'a model::DevicePolicies,
}

impl Attach<'_> {
    fn monitor(&self) -> std::io::Result<&OwnedFd> {
        self.monitor
            .ok_or_else(|| std::io::Error::other("the VP's monitor is gone"))
    }
}

/// A device's host side.
pub trait HostDevice: Send + Sync {
    /// Its name in the model ([`model::DEVICES`]).
    fn name(&self) -> &'static str;
    /// Take over a running VP's device.
    fn attach(&self, a: &Attach<'_>) -> std::io::Result<()>;
    /// The VP ended: let go of its device.
    fn detach(&self, vp: &str, fds: &DeviceFds);
    /// `fg` is the foreground now (None: no VP is): deactivate the previous
    /// foreground's device, activate fg's.
    fn set_foreground(&self, fg: Option<&str>);
}

/// The devices' host sides, in the model's order.
pub struct Registry {
    devices: Vec<Arc<dyn HostDevice>>,
}

impl Registry {
    /// `devices` in any order: they are kept in the model's.
    pub fn new(mut devices: Vec<Arc<dyn HostDevice>>) -> Self {
        let rank = |d: &Arc<dyn HostDevice>| {
            model::DEVICES
                .iter()
                .position(|s| s.name == d.name())
                .unwrap_or(usize::MAX)
        };
        devices.sort_by_key(rank);
        Self { devices }
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.devices.iter().map(|d| d.name()).collect()
    }

    /// Attach every device of a running VP; returns the ones that failed.
    pub fn attach(&self, a: &Attach<'_>) -> Vec<(&'static str, std::io::Error)> {
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
    pub fn detach(&self, vp: &str, fds: &DeviceFds) {
        for d in self.devices.iter().rev() {
            d.detach(vp, fds);
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

impl HostDevice for Screen {
    fn name(&self) -> &'static str {
        model::DISPLAY
    }

    fn attach(&self, a: &Attach<'_>) -> std::io::Result<()> {
        let d = a.fds;
        // display=none: neither a file nor a node.
        if d.fb < 0 && d.fb_node.is_none() {
            return Ok(());
        }
        if d.geometry != self.geometry() {
            return Err(std::io::Error::other(format!(
                "the VP's framebuffer is {}x{}, the panel {}x{}: restart the VP to show it",
                d.geometry.width,
                d.geometry.height,
                self.geometry().width,
                self.geometry().height
            )));
        }
        if let Some(n) = d.fb_node {
            self.attach_node(a.vp, n);
            return Ok(());
        }
        let fb = sys::pidfd_getfd(a.monitor()?, d.fb)?;
        let vfb = mux_fb::vfb::VirtualFb::from_fd(fb, d.geometry);
        self.attach_file(a.vp, Arc::new(vfb));
        Ok(())
    }

    fn detach(&self, vp: &str, _: &DeviceFds) {
        Screen::detach(self, vp);
    }

    fn set_foreground(&self, fg: Option<&str>) {
        Screen::set_foreground(self, fg);
    }
}

impl HostDevice for InputMux {
    fn name(&self) -> &'static str {
        model::INPUT
    }

    fn attach(&self, a: &Attach<'_>) -> std::io::Result<()> {
        // input=none: no devices.
        if a.fds.inputs.is_empty() {
            return Ok(());
        }
        let monitor = a.monitor()?;
        let mut sinks = Vec::new();
        for (kind, fd) in &a.fds.inputs {
            sinks.push((
                *kind,
                Sink::new(sys::pidfd_getfd(monitor, *fd)?, a.fds.input_backend),
            ));
        }
        InputMux::attach(self, a.vp, sinks);
        Ok(())
    }

    fn detach(&self, vp: &str, _: &DeviceFds) {
        InputMux::detach(self, vp);
    }

    fn set_foreground(&self, fg: Option<&str>) {
        InputMux::set_foreground(self, fg);
    }
}

/// The power hub's side: the VP's /sys/power link.
pub struct PowerHost(pub Arc<PowerHub>);

impl HostDevice for PowerHost {
    fn name(&self) -> &'static str {
        model::POWER
    }

    fn attach(&self, a: &Attach<'_>) -> std::io::Result<()> {
        let foreground_only = a.policies.get(model::POWER) == model::Policy::Foreground;
        self.0.attach(a.vp, a.power_socket.clone(), foreground_only);
        Ok(())
    }

    fn detach(&self, vp: &str, _: &DeviceFds) {
        self.0.detach(vp);
    }

    fn set_foreground(&self, fg: Option<&str>) {
        self.0.set_foreground(fg);
    }
}

/// binder_linux pool devices held by running (or starting) VPs: a device is
/// held from the start that reserved it until its VP ends.
#[derive(Default)]
pub struct BinderHost {
    held: Mutex<Vec<PathBuf>>,
}

impl BinderHost {
    pub fn held(&self) -> MutexGuard<'_, Vec<PathBuf>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn release(&self, dev: &std::path::Path) {
        self.held().retain(|x| x != dev);
    }
}

impl HostDevice for BinderHost {
    fn name(&self) -> &'static str {
        model::BINDER
    }

    /// An adopted VP's device is held again (a started VP's already is).
    fn attach(&self, a: &Attach<'_>) -> std::io::Result<()> {
        if let Some(b) = &a.fds.binder {
            let mut held = self.held();
            if !held.contains(b) {
                held.push(b.clone());
            }
        }
        Ok(())
    }

    fn detach(&self, _: &str, fds: &DeviceFds) {
        if let Some(b) = &fds.binder {
            self.release(b);
        }
    }

    /// Every VP has its own binder device: a switch changes nothing.
    fn set_foreground(&self, _: Option<&str>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device that records what it was told.
    struct Probe {
        name: &'static str,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl HostDevice for Probe {
        fn name(&self) -> &'static str {
            self.name
        }
        fn attach(&self, a: &Attach<'_>) -> std::io::Result<()> {
            self.log
                .lock()
                .unwrap()
                .push(format!("{} attach {}", self.name, a.vp));
            if self.name == model::DISPLAY {
                return Err(std::io::Error::other("no panel"));
            }
            Ok(())
        }
        fn detach(&self, vp: &str, _: &DeviceFds) {
            self.log
                .lock()
                .unwrap()
                .push(format!("{} detach {vp}", self.name));
        }
        fn set_foreground(&self, fg: Option<&str>) {
            self.log
                .lock()
                .unwrap()
                .push(format!("{} fg {}", self.name, fg.unwrap_or("-")));
        }
    }

    fn fds() -> DeviceFds {
        DeviceFds {
            geometry: mux_fb::Geometry {
                width: 4,
                height: 4,
                stride: 16,
            },
            fb: -1,
            input_backend: crate::devices::input::sink::Backend::Evdev,
            inputs: Vec::new(),
            binder: None,
            fb_node: None,
        }
    }

    /// VP "a"'s attach, with no monitor.
    fn attach<'a>(fds: &'a DeviceFds, policies: &'a model::DevicePolicies) -> Attach<'a> {
        Attach {
            vp: "a",
            fds,
            monitor: None,
            power_socket: PathBuf::new(),
            policies,
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
        let policies = model::DevicePolicies::default();
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
        r.detach("a", &f);
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
    fn binder_devices_are_held_until_their_vp_ends() {
        let b = BinderHost::default();
        let mut f = fds();
        f.binder = Some(PathBuf::from("/dev/binder3"));
        let policies = model::DevicePolicies::default();
        let a = attach(&f, &policies);
        b.attach(&a).unwrap();
        b.attach(&a).unwrap();
        assert_eq!(*b.held(), [PathBuf::from("/dev/binder3")]);
        b.detach("a", &f);
        assert!(b.held().is_empty());
    }
}
