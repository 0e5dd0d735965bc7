//! A VP's devices as the manager sees them: handing them to the registry, binder devices, the runtime environment.

use super::*;

impl Manager {
    /// Hand a running VP's devices to their host sides (the registry takes
    /// their fds from the VP's monitor).
    pub(super) fn attach_devices(
        &self,
        name: &str,
        st: &RunState,
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
            power_socket: self.cfg.layout.vp_power_socket(name),
            policies,
        });
    }

    pub(super) fn detach_devices(&self, name: &str, st: &RunState) {
        self.devices.detach(name, &st.devices);
    }

    pub(super) fn release_binder(&self, b: &Path) {
        self.binders.release(b);
    }

    /// The binder device for a starting VP (reserved until it ends; from
    /// the pool, one this VP's uid used before or one nobody used).
    pub(super) fn reserve_binder(&self, vp: &str, uid: u32) -> Result<BinderRequest, CellsError> {
        Ok(match &self.cfg.binder {
            BinderMode::None => BinderRequest::None,
            BinderMode::Binderfs => BinderRequest::Binderfs,
            BinderMode::Pool(pool) => {
                let owners = Path::new(binder::OWNERS_DIR);
                let mut held = self.binders.held();
                let Some(dev) =
                    binder::pick(pool, &held, uid, |d| binder::owner_of(owners, d)).cloned()
                else {
                    return Err(CellsError::Failed(format!(
                        "no binder device for VP '{vp}': of the {} devices, the free ones have had \
                         another VP as their context manager since boot (binder_linux keeps that); \
                         load binder_linux with more devices= (or stop a VP)",
                        pool.len()
                    )));
                };
                binder::record_owner(owners, &dev, uid)
                    .map_err(failed("recording the binder device's owner"))?;
                held.push(dev.clone());
                BinderRequest::Device(dev)
            }
        })
    }

    /// Environment of the VP's processes that depends on the runtime, not on
    /// the definition: its colour and framebuffer.
    pub(super) fn runtime_env(&self, cfg: &VpConfig) -> Vec<String> {
        vec![
            format!("CELLS_COLOR={}", cfg.color().hex()),
            format!("CELLS_FB={}", crate::devices::display::VP_FB_PATHS[0]),
        ]
    }
}
