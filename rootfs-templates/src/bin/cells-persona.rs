//! cells-persona: the phone persona app of the `minimal` template.
//!
//! Fills the VP's framebuffer with the persona colour (CELLS_COLOR, else one
//! derived from the name), writes the VP's name (CELLS_VP), shows how many
//! touches it received and where the last one was, and appends every input
//! event it reads from /dev/input/event* to /data/input.log as
//! `DEVICE TYPE CODE VALUE` (e.g. `event0 EV_ABS ABS_MT_POSITION_X 360`).
//!
//! The framebuffer's geometry comes from the fbdev ioctls where they work (a
//! real device, the mux_fb kernel module), else from
//! /dev/graphics/fb0.info (userspace mode).
//!
//! `cells-persona --animate [--frames N]` redraws the whole frame 60 times a
//! second instead (for measuring the compositor), N frames or forever.
//! `cells-persona --draw-bench SECS [DEVICE]` fills whole frames as fast as it
//! can for SECS seconds and prints the frames per second.
//! `cells-persona --blank on|off` asks the framebuffer to blank (FBIOBLANK).

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use cells_templates::fb::Framebuffer;
use mux_fb::draw::{contrast, fill, fill_rect, text, text_width};
use mux_fb::fbabi;
use mux_fb::geometry::Rgb;

const INPUT_LOG: &str = "/data/input.log";

#[derive(Default)]
struct Seen {
    touches: u64,
    keys: u64,
    x: i32,
    y: i32,
    touching: bool,
    last: Option<(i32, i32)>,
}

fn draw(fb: &mut Framebuffer, name: &str, color: Rgb, seen: &Seen) {
    let g = fb.g;
    let ink = contrast(color);
    let Some(px) = fb.pixels_mut() else { return };
    fill(px, &g, color);
    let scale = ((g.width * 8 / 10) / text_width(name, 1).max(1)).clamp(2, 24);
    let w = text_width(name, scale);
    text(
        px,
        &g,
        g.width.saturating_sub(w) / 2,
        g.height * 35 / 100,
        name,
        scale,
        ink,
    );
    let line = format!("touches: {}  keys: {}", seen.touches, seen.keys);
    let s = (g.width / 200).max(2);
    text(
        px,
        &g,
        g.width.saturating_sub(text_width(&line, s)) / 2,
        g.height * 60 / 100,
        &line,
        s,
        ink,
    );
    let last = match seen.last {
        Some((x, y)) => format!("last touch: {x},{y}"),
        None => "last touch: -".to_string(),
    };
    text(
        px,
        &g,
        g.width.saturating_sub(text_width(&last, s)) / 2,
        g.height * 65 / 100,
        &last,
        s,
        ink,
    );
    if let Some((x, y)) = seen.last {
        let r = (g.width / 40).max(4);
        fill_rect(
            px,
            &g,
            (x as u32).saturating_sub(r),
            (y as u32).saturating_sub(r),
            2 * r,
            2 * r,
            ink,
        );
    }
    let foot = "cells persona";
    text(
        px,
        &g,
        g.width.saturating_sub(text_width(foot, 2)) / 2,
        g.height - 40,
        foot,
        2,
        ink,
    );
}

fn type_name(t: u16) -> String {
    match t {
        0 => "EV_SYN".into(),
        1 => "EV_KEY".into(),
        2 => "EV_REL".into(),
        3 => "EV_ABS".into(),
        4 => "EV_MSC".into(),
        _ => format!("EV_{t}"),
    }
}

fn code_name(t: u16, c: u16) -> String {
    let known: &[(u16, u16, &str)] = &[
        (0, 0, "SYN_REPORT"),
        (3, 0x00, "ABS_X"),
        (3, 0x01, "ABS_Y"),
        (3, 0x2f, "ABS_MT_SLOT"),
        (3, 0x35, "ABS_MT_POSITION_X"),
        (3, 0x36, "ABS_MT_POSITION_Y"),
        (3, 0x39, "ABS_MT_TRACKING_ID"),
        (1, 0x14a, "BTN_TOUCH"),
        (1, 0x145, "BTN_TOOL_FINGER"),
        (1, 0x110, "BTN_LEFT"),
        (1, 172, "KEY_HOMEPAGE"),
        (1, 158, "KEY_BACK"),
        (1, 139, "KEY_MENU"),
        (1, 116, "KEY_POWER"),
        (1, 115, "KEY_VOLUMEUP"),
        (1, 114, "KEY_VOLUMEDOWN"),
        (1, 28, "KEY_ENTER"),
        (1, 42, "KEY_LEFTSHIFT"),
    ];
    known
        .iter()
        .find(|(tt, cc, _)| *tt == t && *cc == c)
        .map(|(_, _, n)| n.to_string())
        .unwrap_or_else(|| match t {
            1 => format!("KEY_{c}"),
            3 => format!("ABS_{c}"),
            _ => format!("{c}"),
        })
}

fn animate(fb: &mut Framebuffer, name: &str, color: Rgb, frames: Option<u64>) {
    let period = Duration::from_nanos(16_666_667);
    let mut next = Instant::now();
    let dark = Rgb::new(color.r() / 2, color.g() / 2, color.b() / 2);
    let mut n = 0u64;
    while frames.is_none_or(|f| n < f) {
        let g = fb.g;
        let Some(px) = fb.pixels_mut() else { return };
        // Every frame differs everywhere: the compositor's worst case.
        fill(px, &g, if n.is_multiple_of(2) { color } else { dark });
        let bar = (n % g.height as u64) as u32;
        fill_rect(px, &g, 0, bar, g.width, 8, contrast(color));
        text(px, &g, 20, 20, name, 4, contrast(color));
        n += 1;
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = std::env::var("CELLS_VP").unwrap_or_else(|_| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_string()
    });
    let color = std::env::var("CELLS_COLOR")
        .ok()
        .and_then(|c| Rgb::parse_hex(&c))
        .unwrap_or_else(|| Rgb::from_name(&name));
    let mut fb = match Framebuffer::open(true) {
        Ok(fb) => fb,
        Err(e) => {
            eprintln!("persona: {e}");
            std::process::exit(1);
        }
    };
    if let Some(i) = args.iter().position(|a| a == "--draw-bench") {
        let secs: f64 = args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(3.0);
        if let Some(dev) = args.get(i + 2) {
            fb = match Framebuffer::open_any(&[dev.as_str()], true) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("persona: {e}");
                    std::process::exit(1);
                }
            };
        }
        let g = fb.g;
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed().as_secs_f64() < secs {
            let c = if n.is_multiple_of(2) {
                color
            } else {
                Rgb(!color.0 & 0xff_ffff)
            };
            if let Some(px) = fb.pixels_mut() {
                fill(px, &g, c);
            }
            n += 1;
        }
        let fps = n as f64 / start.elapsed().as_secs_f64();
        println!(
            "draw-bench: {fps:.1} frames/s ({:.1} MB/s)",
            fps * g.size() as f64 / 1e6
        );
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--set-mode") {
        // FBIOPUT_VSCREENINFO with another resolution: the mux only takes the panel's.
        let want = args.get(i + 1).cloned().unwrap_or_default();
        let (w, h) = want
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
            .unwrap_or((0, 0));
        let fd = fb.fd();
        let Some((mut var, _)) = fbabi::screen_info(fd) else {
            println!("not an fbdev device");
            std::process::exit(1);
        };
        var.xres = w;
        var.yres = h;
        var.xres_virtual = w;
        var.yres_virtual = h;
        // SAFETY: FBIOPUT_VSCREENINFO reads and writes a struct fb_var_screeninfo.
        if unsafe { libc::ioctl(fd, fbabi::FBIOPUT_VSCREENINFO, &mut var) } != 0 {
            println!(
                "FBIOPUT_VSCREENINFO {want}: {}",
                std::io::Error::last_os_error()
            );
            std::process::exit(1);
        }
        println!("FBIOPUT_VSCREENINFO {want}: ok");
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--blank") {
        // FB_BLANK_POWERDOWN = 4, FB_BLANK_UNBLANK = 0.
        let level: libc::c_int = if args.get(i + 1).map(String::as_str) == Some("off") {
            0
        } else {
            4
        };
        // SAFETY: FBIOBLANK takes an int by value.
        let r = unsafe { libc::ioctl(fb.fd(), fbabi::FBIOBLANK, level) };
        if r != 0 {
            println!("FBIOBLANK: {}", std::io::Error::last_os_error());
            std::process::exit(1);
        }
        println!("FBIOBLANK {level}: ok");
        return;
    }
    if args.iter().any(|a| a == "--animate") {
        let frames = args
            .iter()
            .position(|a| a == "--frames")
            .and_then(|i| args.get(i + 1))
            .and_then(|n| n.parse().ok());
        animate(&mut fb, &name, color, frames);
        return;
    }
    let mut seen = Seen::default();
    draw(&mut fb, &name, color, &seen);

    let mut devices: Vec<(String, OwnedFd)> = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir("/dev/input")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("event"))
        })
        .collect();
    paths.sort();
    for p in paths {
        let Ok(c) = std::ffi::CString::new(p.to_string_lossy().as_bytes()) else {
            continue;
        };
        // SAFETY: open with a valid path.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd >= 0 {
            let dev = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // SAFETY: a fresh fd.
            devices.push((dev, unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(INPUT_LOG)
        .ok();
    let mut buf = [0u8; 24 * 64];
    loop {
        let mut fds: Vec<libc::pollfd> = devices
            .iter()
            .map(|(_, fd)| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: polling our own pollfd array.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n <= 0 {
            if devices.is_empty() {
                // Nothing to read: keep the picture up.
                std::thread::sleep(Duration::from_secs(3600));
            }
            continue;
        }
        let mut dirty = false;
        let mut lines = String::new();
        for (i, p) in fds.iter().enumerate() {
            if p.revents & libc::POLLIN == 0 {
                continue;
            }
            // SAFETY: reading into our own buffer.
            let r = unsafe { libc::read(p.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if r <= 0 {
                continue;
            }
            for ev in buf[..r as usize].chunks_exact(24) {
                let t = u16::from_ne_bytes([ev[16], ev[17]]);
                let c = u16::from_ne_bytes([ev[18], ev[19]]);
                let v = i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]);
                lines.push_str(&format!(
                    "{} {} {} {}\n",
                    devices[i].0,
                    type_name(t),
                    code_name(t, c),
                    v
                ));
                match (t, c) {
                    (3, 0x39) if v >= 0 => {
                        seen.touches += 1;
                        seen.touching = true;
                    }
                    (3, 0x35) | (3, 0x00) => seen.x = v,
                    (3, 0x36) | (3, 0x01) => seen.y = v,
                    (1, code) if v == 1 && !(0x100..0x160).contains(&code) => seen.keys += 1,
                    (0, 0) => {
                        if seen.touching {
                            seen.last = Some((seen.x, seen.y));
                            seen.touching = false;
                        }
                        dirty = true;
                    }
                    _ => {}
                }
            }
        }
        if let Some(f) = log.as_mut() {
            let _ = f.write_all(lines.as_bytes());
        }
        if dirty {
            draw(&mut fb, &name, color, &seen);
        }
    }
}
