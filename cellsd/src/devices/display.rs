//! The display device of a VP: its virtual framebuffer.
//!
//! Userspace mode (this module; the mux_fb kernel module replaces it where it
//! is loaded): the framebuffer is a plain file of one frame on a tmpfs private
//! to the VP's monitor, bind-mounted into the VP as `/dev/graphics/fb0`
//! (Android's path) and `/dev/fb0`. A program maps it shared and draws; cellsd
//! maps the same file and shows it on the panel while the VP is foreground.
//!
//! How a program learns the geometry and format: the fbdev ioctls do not work
//! on a plain file (ENOTTY), so `/dev/graphics/fb0.info` holds it as
//! `key=value` lines:
//!
//! ```text
//! width=720
//! height=1280
//! stride=2880
//! bits_per_pixel=32
//! format=XRGB8888
//! ```
//!
//! XRGB8888 is 32 bits per pixel, little endian: bytes B, G, R, unused.
//! A program should first try FBIOGET_VSCREENINFO/FBIOGET_FSCREENINFO (they
//! work with the kernel module and on real devices) and fall back to the
//! info file, as the persona app does.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use mux_fb::geometry::info_text;
use mux_fb::Geometry;

use crate::devices::model::{self, DeviceSpec, Policy};
use crate::devices::registry::{
    io as io_err, Attach, Detach, Device, DeviceError, HostDevice, Made, VpCtx, VpDevice,
};

pub const DEVICE: Device = Device {
    spec: DeviceSpec {
        name: model::DISPLAY,
        default: Policy::Foreground,
        policies: &[Policy::Foreground, Policy::None],
        about: "/dev/graphics/fb0 and /dev/fb0: the VP always draws into its own framebuffer; the panel shows the foreground's",
    },
    vp_side,
};

/// The framebuffer (a file cellsd composes, or a mux_fb node) and its info
/// file. Without it (display=none) cellsd sees fb -1 and no node.
fn vp_side(c: &VpCtx<'_>, m: &mut Made) -> Result<(), DeviceError> {
    if c.policy == Policy::None {
        return Ok(());
    }
    let g = c.request.geometry;
    let (fb_file, info) = match c.request.display {
        DisplayMode::Userspace => {
            let fb = create(c.dir, g, c.owner).map_err(io_err("framebuffer"))?;
            m.fds.fb = fb.fd.as_raw_fd();
            let fill = fb.fd.try_clone().map_err(io_err("framebuffer"))?;
            m.live.push(Box::new(Preallocate {
                fd: Some(fill),
                len: g.size(),
            }));
            m.held.push(fb.fd);
            (fb.file, fb.info)
        }
        DisplayMode::Kernel => {
            let (n, node) =
                create_kernel_fb(c.dir, c.owner).map_err(io_err("mux_fb framebuffer"))?;
            m.live.push(Box::new(KernelFb(n)));
            let info = write_info(c.dir, g, c.owner).map_err(io_err("framebuffer info"))?;
            m.fds.fb_node = Some(n);
            (node, info)
        }
    };
    m.nodes
        .extend(VP_FB_PATHS.iter().map(|p| (fb_file.clone(), p.to_string())));
    m.nodes.push((info, VP_FB_INFO.to_string()));
    Ok(())
}

/// The userspace framebuffer's pages, allocated by the monitor while it
/// still sits in the VP's cgroup (the frame is the VP's memory; cellsd
/// reads it through a mapping, and a hole read there would allocate a
/// page charged to cellsd). Done once the init is released: the zeroing
/// (≈ 1 ms for 720x1280) runs while the init pivots and execs on another
/// CPU, not before it.
struct Preallocate {
    fd: Option<OwnedFd>,
    len: usize,
}

impl VpDevice for Preallocate {
    fn name(&self) -> &'static str {
        model::DISPLAY
    }

    fn released(&mut self) {
        let Some(fd) = self.fd.take() else { return };
        // SAFETY: fallocate on our own open file, within its size.
        if unsafe { libc::fallocate(fd.as_raw_fd(), 0, 0, self.len as libc::off_t) } != 0 {
            // The VP's memory limit is reached: its writes to the frame
            // fail as they would have; cellsd's reads of holes still work.
            tracing::warn!(
                error = %io::Error::last_os_error(),
                "allocating the VP's framebuffer"
            );
        }
    }
}

/// A mux_fb device of the VP (kernel mode): removed when the VP ends.
struct KernelFb(u32);

impl VpDevice for KernelFb {
    fn name(&self) -> &'static str {
        model::DISPLAY
    }

    fn ended(&mut self) {
        destroy_kernel_fb(self.0);
    }
}

pub const VP_FB_PATHS: &[&str] = &["/dev/graphics/fb0", "/dev/fb0"];
pub const VP_FB_INFO: &str = "/dev/graphics/fb0.info";

/// Write only the info file (kernel mode: the device answers the ioctls
/// too, the file keeps programs that read it working).
pub fn write_info(dir: &Path, g: Geometry, owner: Option<u32>) -> io::Result<PathBuf> {
    let info = dir.join("fb0.info");
    std::fs::write(&info, info_text(&g))?;
    if let Some(id) = owner {
        std::os::unix::fs::chown(&info, Some(id), Some(id))?;
    }
    std::fs::set_permissions(&info, std::fs::Permissions::from_mode(0o444))?;
    Ok(info)
}

/// The framebuffer made by a VP's monitor.
pub struct CreatedFb {
    pub file: PathBuf,
    pub info: PathBuf,
    pub fd: OwnedFd,
}

/// Make a VP's framebuffer in `dir` (the monitor's private tmpfs): black,
/// owned by VP root (`owner`), with its info file.
pub fn create(dir: &Path, g: Geometry, owner: Option<u32>) -> io::Result<CreatedFb> {
    let file = dir.join("fb0");
    let info = dir.join("fb0.info");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&file)?;
    // Sized now, allocated once the init is released ([`Preallocate`]).
    f.set_len(g.size() as u64)?;
    std::fs::write(&info, info_text(&g))?;
    for (p, mode) in [(&file, 0o660), (&info, 0o444)] {
        if let Some(id) = owner {
            std::os::unix::fs::chown(p, Some(id), Some(id))?;
        }
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(CreatedFb {
        file,
        info,
        fd: OwnedFd::from(f),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_framebuffer_is_black_and_sized() {
        let dir = std::env::temp_dir().join(format!("fbdev-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let g = Geometry::new(64, 32);
        let fb = create(&dir, g, None).unwrap();
        let data = std::fs::read(&fb.file).unwrap();
        assert_eq!(data.len(), g.size());
        assert!(data.iter().all(|b| *b == 0));
        let vfb = mux_fb::vfb::VirtualFb::from_fd(fb.fd, g);
        assert!(vfb.frame().iter().all(|b| *b == 0));
        let info = std::fs::read_to_string(&fb.info).unwrap();
        assert_eq!(mux_fb::geometry::parse_info(&info), Some(g));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

// ------------------------------------------------------------------ screen

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mux_fb::compositor::{Display, Stats, Target};
use mux_fb::kernel;
use mux_fb::panel::PanelSpec;
use mux_fb::vfb::VirtualFb;
use serde::{Deserialize, Serialize};

/// Who multiplexes the panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DisplayMode {
    /// cellsd's compositor; VP framebuffers are files (this module).
    Userspace,
    /// The mux_fb kernel module; VP framebuffers are fbdev devices.
    Kernel,
}

/// The display as cellsd drives it: the userspace compositor, or the
/// mux_fb kernel module where it is loaded. Same behaviour for cellctl.
pub enum Screen {
    Compositor(Display),
    Kernel(KernelScreen),
}

pub struct KernelScreen {
    ctl: kernel::Control,
    panel: PathBuf,
    geometry: Geometry,
    describe: String,
    vps: Mutex<HashMap<String, u32>>,
    stats: Mutex<Stats>,
}

impl Screen {
    /// `mode` None: the kernel module if it is loaded and the panel is a
    /// real fbdev device, else the userspace compositor.
    pub fn open(spec: &PanelSpec, mode: Option<DisplayMode>) -> io::Result<Self> {
        let kernel_ok = kernel::available() && matches!(spec, PanelSpec::Fbdev(_));
        let mode = mode.unwrap_or(if kernel_ok {
            DisplayMode::Kernel
        } else {
            DisplayMode::Userspace
        });
        match (mode, spec) {
            (DisplayMode::Kernel, PanelSpec::Fbdev(path)) => {
                let f = std::fs::File::open(path)?;
                let (var, fix) = mux_fb::fbabi::screen_info(std::os::fd::AsRawFd::as_raw_fd(&f))
                    .ok_or_else(|| {
                        io::Error::other(format!("{} is not a framebuffer", path.display()))
                    })?;
                let geometry = Geometry {
                    width: var.xres,
                    height: var.yres,
                    stride: fix.line_length,
                };
                let end = fix.id.iter().position(|b| *b == 0).unwrap_or(fix.id.len());
                let id = String::from_utf8_lossy(&fix.id[..end]).into_owned();
                Ok(Screen::Kernel(KernelScreen {
                    ctl: kernel::Control::open()?,
                    panel: path.clone(),
                    geometry,
                    describe: format!(
                        "fbdev {} ({id}) {}x{} via the mux_fb kernel module",
                        path.display(),
                        geometry.width,
                        geometry.height
                    ),
                    vps: Mutex::new(HashMap::new()),
                    stats: Mutex::new(Stats::default()),
                }))
            }
            (DisplayMode::Kernel, _) => Err(io::Error::other(
                "the mux_fb kernel module needs a real panel: --panel fbdev:/dev/fbN",
            )),
            (DisplayMode::Userspace, _) => Ok(Screen::Compositor(Display::start(spec.open()?))),
        }
    }

    pub fn mode(&self) -> DisplayMode {
        match self {
            Screen::Compositor(_) => DisplayMode::Userspace,
            Screen::Kernel(_) => DisplayMode::Kernel,
        }
    }

    pub fn geometry(&self) -> Geometry {
        match self {
            Screen::Compositor(d) => d.geometry(),
            Screen::Kernel(k) => k.geometry,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Screen::Compositor(d) => d.describe().to_string(),
            Screen::Kernel(k) => k.describe.clone(),
        }
    }

    /// A VP's framebuffer file (userspace mode).
    pub fn attach_file(&self, name: &str, vfb: Arc<VirtualFb>) {
        if let Screen::Compositor(d) = self {
            d.attach(name, vfb);
        }
    }

    /// A VP's framebuffer device /dev/fbN (kernel mode).
    pub fn attach_node(&self, name: &str, n: u32) {
        if let Screen::Kernel(k) = self {
            k.vps
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.to_string(), n);
        }
    }

    pub fn detach(&self, name: &str) {
        match self {
            Screen::Compositor(d) => d.detach(name),
            Screen::Kernel(k) => {
                k.vps.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
            }
        }
    }

    pub fn set_foreground(&self, name: Option<&str>) {
        match self {
            Screen::Compositor(d) => d.set_foreground(name),
            Screen::Kernel(k) => {
                let n = name.and_then(|v| {
                    k.vps
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(v)
                        .copied()
                });
                let t = Instant::now();
                if let Err(e) = k.ctl.set_foreground(n) {
                    tracing::warn!("mux_fb switch: {e}");
                    return;
                }
                let mut st = k.stats.lock().unwrap_or_else(|p| p.into_inner());
                st.switches += 1;
                // The kernel copies the frame within the ioctl.
                st.last_switch_us = t.elapsed().as_micros() as u64;
            }
        }
    }

    /// Notices by VP (a call ringing there): the panel shows the first
    /// whose VP is not in front (userspace compositor; the kernel
    /// multiplexer draws nothing of cellsd's).
    pub fn set_notices(&self, notices: Vec<(String, String)>) {
        match self {
            Screen::Compositor(d) => d.set_notices(notices),
            Screen::Kernel(_) => {
                if !notices.is_empty() {
                    tracing::debug!("a notice is not shown with the kernel multiplexer");
                }
            }
        }
    }

    /// The notice on the panel now.
    pub fn notice(&self) -> Option<String> {
        match self {
            Screen::Compositor(d) => d.notice(),
            Screen::Kernel(_) => None,
        }
    }

    /// The pixels of the panel or of a VP's framebuffer.
    pub fn capture(&self, target: Target) -> Option<Vec<u8>> {
        match self {
            Screen::Compositor(d) => d.capture(target),
            Screen::Kernel(k) => {
                let size = k.geometry.size();
                let path = match target {
                    Target::Panel => k.panel.clone(),
                    Target::Vp(v) => {
                        let n = *k.vps.lock().unwrap_or_else(|p| p.into_inner()).get(&v)?;
                        kernel::fb_path(n)
                    }
                };
                kernel::read_frame(&path, size).ok()
            }
        }
    }

    pub fn stats(&self) -> Stats {
        match self {
            Screen::Compositor(d) => d.stats(),
            Screen::Kernel(k) => k.stats.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}

/// Make a VP framebuffer device with the kernel module (in the monitor):
/// returns N and a private node of it in `dir` (the monitor's own tmpfs),
/// owned by VP root. The host's /dev/fbN keeps its owner and mode: what VP
/// root does to its node (chmod) reaches nothing on the host.
pub fn create_kernel_fb(dir: &Path, owner: Option<u32>) -> io::Result<(u32, PathBuf)> {
    let n = kernel::Control::open()?.create()?;
    let node = kernel::fb_path(n);
    // devtmpfs makes the node; give it a moment.
    for _ in 0..200 {
        if node.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let private = dir.join(format!("fb{n}"));
    crate::sys::private_node(&node, &private, owner, 0o660)?;
    Ok((n, private))
}

pub fn destroy_kernel_fb(n: u32) {
    if let Ok(c) = kernel::Control::open() {
        let _ = c.destroy(n);
    }
}

impl HostDevice for Screen {
    fn name(&self) -> &'static str {
        model::DISPLAY
    }

    fn attach(&self, a: &Attach<'_>) -> Result<(), DeviceError> {
        let d = a.fds;
        // display=none: neither a file nor a node.
        if d.fb < 0 && d.fb_node.is_none() {
            return Ok(());
        }
        if d.geometry != self.geometry() {
            return Err(DeviceError::Refused(format!(
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
        let fb = crate::sys::pidfd_getfd(a.monitor()?, d.fb)
            .map_err(io_err("take the VP's framebuffer"))?;
        let vfb = VirtualFb::from_fd(fb, d.geometry);
        self.attach_file(a.vp, Arc::new(vfb));
        Ok(())
    }

    fn detach(&self, d: &Detach<'_>) {
        Screen::detach(self, d.vp);
    }

    fn set_foreground(&self, fg: Option<&str>) {
        Screen::set_foreground(self, fg);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
