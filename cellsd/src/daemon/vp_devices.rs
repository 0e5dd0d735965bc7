//! A VP's devices as the manager sees them: preparing them for a start, handing them to the registry, the runtime environment.

use super::*;

impl Manager {
    /// What a starting VP's monitor makes: the panel's geometry and modes,
    /// and what each device's host side prepared (undone with
    /// `devices.unprepare` if the start fails).
    pub(super) fn prepare_devices(&self, config: &VpConfig) -> Result<DeviceRequest, Error> {
        let mut request = DeviceRequest {
            geometry: self.display.geometry(),
            input: self.cfg.devices.input_backend,
            display: self.display.mode(),
            config: BTreeMap::new(),
        };
        self.devices.prepare(
            &config.name,
            config.host_root_id().unwrap_or(0),
            &config.cells.devices,
            &mut request,
        )?;
        Ok(request)
    }

    /// Hand a running VP's devices to their host sides (the registry takes
    /// their fds from the VP's monitor).
    pub(super) fn attach_devices(
        &self,
        name: &str,
        st: &RunState,
        init: &Arc<OwnedFd>,
        policies: &crate::devices::model::DevicePolicies,
    ) {
        // The monitor, if it is still the one that started the VP.
        let monitor = sys::pidfd_open(st.monitor_pid)
            .ok()
            .filter(|_| sys::process_start_time(st.monitor_pid) == Some(st.monitor_start_time));
        self.devices.attach(&Attach {
            vp: name,
            fds: &st.devices,
            monitor: monitor.as_ref(),
            init: Some(init),
            run_dir: self.cfg.layout.vp_run_dir(name),
            policies,
        });
    }

    /// The VP ended: every device lets go of it (in reverse order).
    pub(super) fn detach_devices(&self, name: &str, st: &RunState, slot: Option<u32>) {
        self.devices.detach(&Detach {
            vp: name,
            fds: &st.devices,
            slot,
        });
    }

    /// Environment of the VP's processes that depends on the runtime, not on
    /// the definition: its colour and framebuffer, and a PATH that also
    /// finds a Debian template's programs (Android's folders first).
    pub(super) fn runtime_env(&self, cfg: &VpConfig) -> Vec<String> {
        let mut env = vec![
            format!("CELLS_COLOR={}", cfg.color().hex()),
            format!("CELLS_FB={}", crate::devices::display::VP_FB_PATHS[0]),
        ];
        // An OCI container's PATH is its image's.
        if cfg.cells.oci.is_none() {
            env.insert(
                0,
                "PATH=/system/bin:/system/xbin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
                    .to_string(),
            );
        }
        env
    }
}
