//! The VP side of its devices (one function per device, run in the model's order for the devices the VP has): the framebuffer, input devices, binder node; and the runtime files (properties, network) the VP reads.

use super::*;

/// What the VP sides of its devices made before the clone.
pub(super) struct Made {
    /// What cellsd takes over (fd numbers in this monitor).
    pub(super) fds: DeviceFds,
    /// Nodes to bind into the VP: (file here, path in the VP).
    pub(super) nodes: Vec<(PathBuf, String)>,
    /// Fds to keep open while the VP runs.
    pub(super) held: Vec<OwnedFd>,
    /// The FUSE-served input devices, if any.
    pub(super) vp_input: Option<input::evdev_fs::VpInput>,
}

/// What a device's VP side gets: the request and the monitor's device
/// folder (a tmpfs of its own).
struct Ctx<'a> {
    req: &'a MonitorRequest,
    dir: &'a Path,
    owner: Option<u32>,
}

type VpSide = fn(&Ctx<'_>, &mut Made) -> Result<(), String>;

/// The VP side of each device that has one here (in the model's order);
/// power's (/sys/power, a FUSE file system the monitor serves) and
/// network's (the veth, after the clone) are made in `start`. A device
/// whose policy is `none` makes nothing.
const VP_SIDES: &[(&str, VpSide)] = &[
    (model::DISPLAY, display_side),
    (model::INPUT, input_side),
    (model::BINDER, binder_side),
];

/// Make the VP's devices on a tmpfs private to this monitor
/// (`<run>/vps/NAME/dev`).
pub(super) fn make_devices(req: &MonitorRequest) -> Result<Made, String> {
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
    let ctx = Ctx {
        req,
        dir: &dir,
        owner: req.config.host_root_id(),
    };
    let mut made = Made {
        fds: DeviceFds {
            geometry: g,
            fb: -1,
            input_backend: req.devices.input,
            inputs: Vec::new(),
            binder: None,
            fb_node: None,
        },
        nodes: Vec::new(),
        held: Vec::new(),
        vp_input: None,
    };
    for (device, side) in VP_SIDES {
        if req.config.cells.devices.has(device) {
            side(&ctx, &mut made)?;
        }
    }
    Ok(made)
}

/// The framebuffer (a file cellsd composes, or a mux_fb node) and its info
/// file. Without it (display=none) cellsd sees fb -1 and no node.
fn display_side(c: &Ctx<'_>, m: &mut Made) -> Result<(), String> {
    let g = c.req.devices.geometry;
    let (fb_file, info) = match c.req.devices.display {
        DisplayMode::Userspace => {
            let fb = display::create(c.dir, g, c.owner).map_err(errstr("framebuffer"))?;
            m.fds.fb = fb.fd.as_raw_fd();
            m.held.push(fb.fd);
            (fb.file, fb.info)
        }
        DisplayMode::Kernel => {
            let (n, node) =
                display::create_kernel_fb(c.dir, c.owner).map_err(errstr("mux_fb framebuffer"))?;
            let info =
                display::write_info(c.dir, g, c.owner).map_err(errstr("framebuffer info"))?;
            m.fds.fb_node = Some(n);
            (node, info)
        }
    };
    m.nodes.extend(
        display::VP_FB_PATHS
            .iter()
            .map(|p| (fb_file.clone(), p.to_string())),
    );
    m.nodes.push((info, display::VP_FB_INFO.to_string()));
    Ok(())
}

/// The pool binder device, this VP root's while it runs, through a private
/// node (the host's node keeps its owner and mode). binderfs is mounted by
/// the init itself.
fn binder_side(c: &Ctx<'_>, m: &mut Made) -> Result<(), String> {
    if let BinderRequest::Device(node) = &c.req.devices.binder {
        let private = c.dir.join("binder");
        sys::private_node(node, &private, c.owner, 0o600).map_err(errstr("binder node"))?;
        m.nodes.push((private, "/dev/binder".to_string()));
        m.fds.binder = Some(node.clone());
    }
    Ok(())
}

/// The touchscreen and keys: evdev devices served over FUSE, or FIFOs.
fn input_side(c: &Ctx<'_>, m: &mut Made) -> Result<(), String> {
    let g = c.req.devices.geometry;
    match c.req.devices.input {
        Backend::Fifo => {
            let fifos = input::sink::create_fifos(c.dir, c.owner)
                .map_err(|e| format!("input devices (FIFOs): {e}"))?;
            for i in fifos {
                m.nodes.push((i.node.clone(), i.vp_path.clone()));
                m.fds.inputs.push((i.kind, i.fd.as_raw_fd()));
                m.held.push(i.fd);
            }
        }
        Backend::Evdev => {
            let devices = input::sink::VP_DEVICES
                .iter()
                .map(|(kind, node, name)| {
                    (node.to_string(), input::evdev_fs::spec_for(*kind, name, g))
                })
                .collect();
            let (vi, writers) =
                input::evdev_fs::VpInput::mount(&c.dir.join("input"), devices, c.owner)
                    .map_err(|e| format!("input devices: {e}"))?;
            for ((kind, _, _), w) in input::sink::VP_DEVICES.iter().zip(writers) {
                m.fds.inputs.push((*kind, w.as_raw_fd()));
                m.held.push(w);
            }
            m.vp_input = Some(vi);
        }
    }
    Ok(())
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
