//! The VP side of its devices: the framebuffer, input devices, binder node, and the runtime files (properties, network) the VP reads.

use super::*;

/// Make the VP's devices on a tmpfs private to this monitor
/// (`<run>/vps/NAME/dev`): returns their fds (for cellsd), the nodes to bind
/// into the VP, and the fds to keep open.
#[allow(clippy::type_complexity)]
pub(super) fn make_devices(
    req: &MonitorRequest,
) -> Result<
    (
        DeviceFds,
        Vec<(PathBuf, String)>,
        Vec<OwnedFd>,
        Option<input::evdev_fs::VpInput>,
    ),
    String,
> {
    let dir = req.run_dir.join("dev");
    std::fs::create_dir_all(&dir).map_err(errstr("mkdir dev"))?;
    let g = req.devices.geometry;
    let size = format!("size={},mode=755", g.size() + (1 << 20));
    mount(
        Some("tmpfs"),
        &dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some(size.as_str()),
    )
    .map_err(errstr("mount the device tmpfs"))?;
    let owner = req.config.host_root_id();
    let policies = &req.config.cells.devices;
    let mut nodes: Vec<(PathBuf, String)> = Vec::new();
    let (mut fb_fd, mut fb_node) = (None, None);
    // display=none: no framebuffer at all (cellsd sees fb -1, no node).
    if policies.has(model::DISPLAY) {
        let (fb_file, info) = match req.devices.display {
            DisplayMode::Userspace => {
                let fb = display::create(&dir, g, owner).map_err(errstr("framebuffer"))?;
                fb_fd = Some(fb.fd);
                (fb.file, fb.info)
            }
            DisplayMode::Kernel => {
                let (n, node) =
                    display::create_kernel_fb(&dir, owner).map_err(errstr("mux_fb framebuffer"))?;
                let info =
                    display::write_info(&dir, g, owner).map_err(errstr("framebuffer info"))?;
                fb_node = Some(n);
                (node, info)
            }
        };
        nodes.extend(
            display::VP_FB_PATHS
                .iter()
                .map(|p| (fb_file.clone(), p.to_string())),
        );
        nodes.push((info, display::VP_FB_INFO.to_string()));
    }
    let mut fds = DeviceFds {
        geometry: g,
        fb: fb_fd.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1),
        input_backend: req.devices.input,
        inputs: Vec::new(),
        binder: None,
        fb_node,
    };
    if let BinderRequest::Device(node) = &req.devices.binder {
        // The pool device is this VP root's while it runs, through a
        // private node: the host's node keeps its owner and mode.
        let private = dir.join("binder");
        sys::private_node(node, &private, owner, 0o600).map_err(errstr("binder node"))?;
        nodes.push((private, "/dev/binder".to_string()));
        fds.binder = Some(node.clone());
    }
    let mut held: Vec<OwnedFd> = fb_fd.into_iter().collect();
    let mut vp_input = None;
    match req.devices.input {
        // input=none: no input devices.
        _ if !policies.has(model::INPUT) => {}
        Backend::Fifo => {
            let fifos = input::sink::create_fifos(&dir, owner)
                .map_err(|e| format!("input devices (FIFOs): {e}"))?;
            for i in fifos {
                nodes.push((i.node.clone(), i.vp_path.clone()));
                fds.inputs.push((i.kind, i.fd.as_raw_fd()));
                held.push(i.fd);
            }
        }
        Backend::Evdev => {
            let devices = input::sink::VP_DEVICES
                .iter()
                .map(|(kind, node, name)| {
                    (node.to_string(), input::evdev_fs::spec_for(*kind, name, g))
                })
                .collect();
            let (vi, writers) = input::evdev_fs::VpInput::mount(&dir.join("input"), devices, owner)
                .map_err(|e| format!("input devices: {e}"))?;
            for ((kind, _, _), w) in input::sink::VP_DEVICES.iter().zip(writers) {
                fds.inputs.push((*kind, w.as_raw_fd()));
                held.push(w);
            }
            vp_input = Some(vi);
        }
    }
    Ok((fds, nodes, held, vp_input))
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
) -> Result<(), String> {
    let dev = req.run_dir.join("dev");
    let owner = req.config.host_root_id();
    let chown = |p: &Path| -> Result<(), String> {
        if let Some(id) = owner {
            std::os::unix::fs::chown(p, Some(id), Some(id))
                .map_err(errstr(&format!("chown {}", p.display())))?;
        }
        Ok(())
    };
    let props = dev.join("properties");
    std::fs::create_dir_all(&props).map_err(errstr("mkdir properties"))?;
    let text: String = req
        .properties
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    let store = props.join("properties");
    std::fs::write(&store, text).map_err(errstr("write properties"))?;
    chown(&props)?;
    chown(&store)?;
    dirs.push((props, "/dev/__properties__".to_string()));
    if let Some(net) = &req.network {
        let etc = vp_etc(&req.template_rootfs);
        let dir = dev.join("net");
        std::fs::create_dir_all(&dir).map_err(errstr("mkdir net"))?;
        for (name, text) in [("resolv.conf", &net.resolv_conf), ("hosts", &net.hosts)] {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(errstr(&format!("write {name}")))?;
            chown(&p)?;
            nodes.push((p, format!("{etc}/{name}")));
        }
    }
    Ok(())
}
