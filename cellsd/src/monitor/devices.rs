//! The VP side of its devices: the monitor's device tmpfs, each device's VP side run from the registry in the model's order; and the runtime files (properties, network) the VP reads.

use super::*;
use crate::devices::registry::{self, Made, VpCtx};

/// Make the VP's devices on a tmpfs private to this monitor
/// (`<run>/vps/NAME/dev`).
pub(super) fn make_devices(req: &MonitorRequest) -> Result<Made, MonitorError> {
    let dir = req.run_dir.join("dev");
    std::fs::create_dir_all(&dir).map_err(step("mkdir dev"))?;
    let g = req.devices.geometry;
    let size = format!("size={},mode=755", g.size() + (1 << 20));
    mount(
        Some("tmpfs"),
        &dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some(size.as_str()),
    )
    .map_err(step("mount the device tmpfs"))?;
    let base = VpCtx {
        vp: &req.config.name,
        policy: model::Policy::None,
        dir: &dir,
        run_dir: &req.run_dir,
        owner: req.config.host_root_id(),
        request: &req.devices,
        network: req.network.as_ref(),
    };
    let mut made = Made::new(DeviceFds::new(g, req.devices.input));
    registry::make_vp_devices(base, &req.config.cells.devices, &mut made)
        .map_err(|(device, source)| MonitorError::Device { device, source })?;
    Ok(made)
}

/// The lower layer whose /etc the VP sees: the template, or the topmost
/// layer of an OCI container's root that has one.
pub(super) fn lower_with_etc(req: &MonitorRequest) -> PathBuf {
    match &req.config.cells.oci {
        Some(o) => o
            .layers
            .iter()
            .find(|l| std::fs::symlink_metadata(l.join("etc")).is_ok())
            .cloned()
            .unwrap_or_default(),
        None => req.template_rootfs.clone(),
    }
}

/// Where the template keeps /etc, as a path in the VP: Android's layout
/// has `/etc -> /system/etc` (binds must not go through a symlink).
pub(super) fn vp_etc(template_rootfs: &Path) -> String {
    match std::fs::read_link(template_rootfs.join("etc")) {
        Ok(t) => {
            let t = t.to_string_lossy().trim_start_matches('/').to_string();
            if t.is_empty() || t.contains("..") {
                "/etc".to_string()
            } else {
                format!("/{t}")
            }
        }
        Err(_) => "/etc".to_string(),
    }
}

/// Files the VP gets at each start, on the monitor's device tmpfs: the
/// property store (`/dev/__properties__`, see cells_templates::props) and
/// with a network, resolv.conf and hosts over the template's.
pub(super) fn runtime_files(
    req: &MonitorRequest,
    nodes: &mut Vec<(PathBuf, String)>,
    dirs: &mut Vec<(PathBuf, String)>,
) -> Result<(), MonitorError> {
    let dev = req.run_dir.join("dev");
    let owner = req.config.host_root_id();
    let chown = |p: &Path| -> Result<(), MonitorError> {
        if let Some(id) = owner {
            std::os::unix::fs::chown(p, Some(id), Some(id))
                .map_err(step(&format!("chown {}", p.display())))?;
        }
        Ok(())
    };
    let props = dev.join("properties");
    std::fs::create_dir_all(&props).map_err(step("mkdir properties"))?;
    let text: String = req
        .properties
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    let store = props.join("properties");
    std::fs::write(&store, text).map_err(step("write properties"))?;
    chown(&props)?;
    chown(&store)?;
    dirs.push((props, "/dev/__properties__".to_string()));
    if let Some(net) = &req.network {
        let etc = vp_etc(&lower_with_etc(req));
        let dir = dev.join("net");
        std::fs::create_dir_all(&dir).map_err(step("mkdir net"))?;
        for (name, text) in [("resolv.conf", &net.resolv_conf), ("hosts", &net.hosts)] {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(step(&format!("write {name}")))?;
            chown(&p)?;
            nodes.push((p, format!("{etc}/{name}")));
        }
    }
    Ok(())
}
