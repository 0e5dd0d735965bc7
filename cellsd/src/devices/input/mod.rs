//! Input: the host's input devices and injected input, multiplexed to the
//! foreground VP's own devices. See [`router`] for the routing rules,
//! [`sink`] and [`evdev_fs`] for the VP devices (evdev served by the VP's
//! monitor, or FIFOs).

pub mod evdev;
pub mod evdev_fs;
pub mod event;
pub mod inject;
pub mod keys;
pub mod mux;
pub mod router;
pub mod sink;

use std::os::fd::{AsRawFd, RawFd};

use crate::devices::model::{self, DeviceSpec, Policy};
use crate::devices::registry::{
    io, Attach, Detach, Device, DeviceError, HostDevice, Made, VpCtx, VpDevice,
};
use mux::InputMux;
use sink::{Backend, Sink};

pub const DEVICE: Device = Device {
    spec: DeviceSpec {
        name: model::INPUT,
        default: Policy::Foreground,
        policies: &[Policy::Foreground, Policy::None],
        about: "/dev/input/event*: the panel's touch and keys reach the foreground only; `cellctl input --vp` reaches the VP's own",
    },
    vp_side,
};

/// The touchscreen and keys: evdev devices served over FUSE, or FIFOs.
fn vp_side(c: &VpCtx<'_>, m: &mut Made) -> Result<(), DeviceError> {
    if c.policy == Policy::None {
        return Ok(());
    }
    let g = c.request.geometry;
    match c.request.input {
        Backend::Fifo => {
            let fifos = sink::create_fifos(c.dir, c.owner)
                .map_err(|e| DeviceError::Refused(format!("input devices (FIFOs): {e}")))?;
            for i in fifos {
                m.nodes.push((i.node.clone(), i.vp_path.clone()));
                m.fds.inputs.push((i.kind, i.fd.as_raw_fd()));
                m.held.push(i.fd);
            }
        }
        Backend::Evdev => {
            let devices = sink::VP_DEVICES
                .iter()
                .map(|(kind, node, name)| (node.to_string(), evdev_fs::spec_for(*kind, name, g)))
                .collect();
            let dir = c.dir.join("input");
            let (vi, writers) = evdev_fs::VpInput::mount(&dir, devices, c.owner)
                .map_err(|e| DeviceError::Refused(format!("input devices: {e}")))?;
            // Each node bound on its own: /dev/input is the VP's folder,
            // other devices (sensors) add theirs.
            for ((kind, node, _), w) in sink::VP_DEVICES.iter().zip(writers) {
                m.fds.inputs.push((*kind, w.as_raw_fd()));
                m.held.push(w);
                m.nodes.push((dir.join(node), format!("/dev/input/{node}")));
            }
            m.live.push(Box::new(vi));
        }
    }
    Ok(())
}

/// The VP's evdev devices in the monitor: fed from cellsd's pipes.
impl VpDevice for evdev_fs::VpInput {
    fn name(&self) -> &'static str {
        model::INPUT
    }

    fn serve(
        &mut self,
        _init: libc::pid_t,
        _fds: &mut crate::devices::registry::DeviceFds,
    ) -> Result<(), DeviceError> {
        evdev_fs::VpInput::serve(self).map_err(|e| DeviceError::Refused(e.to_string()))
    }

    fn poll_fds(&self) -> Vec<RawFd> {
        evdev_fs::VpInput::poll_fds(self)
    }

    fn handle(&mut self, ready: &[bool]) {
        for (i, r) in ready.iter().enumerate() {
            if *r {
                evdev_fs::VpInput::handle(self, i);
            }
        }
        self.answer_killed();
    }

    fn timeout(&self) -> Option<std::time::Duration> {
        self.next_check()
    }

    /// A VP being frozen must not sit in a blocked read of ours.
    fn set_freezing(&mut self, on: bool) {
        evdev_fs::VpInput::set_freezing(self, on);
    }
}

impl HostDevice for InputMux {
    fn name(&self) -> &'static str {
        model::INPUT
    }

    fn attach(&self, a: &Attach<'_>) -> Result<(), DeviceError> {
        // input=none: no devices.
        if a.fds.inputs.is_empty() {
            return Ok(());
        }
        let monitor = a.monitor()?;
        let mut sinks = Vec::new();
        for (kind, fd) in &a.fds.inputs {
            let fd =
                crate::sys::pidfd_getfd(monitor, *fd).map_err(io("take the VP's input device"))?;
            sinks.push((*kind, Sink::new(fd, a.fds.input_backend)));
        }
        InputMux::attach(self, a.vp, sinks);
        Ok(())
    }

    fn detach(&self, d: &Detach<'_>) {
        InputMux::detach(self, d.vp);
    }

    fn set_foreground(&self, fg: Option<&str>) {
        InputMux::set_foreground(self, fg);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
