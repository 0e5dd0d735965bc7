//! `wm size` / `wm density`: the VP's display size and density, with
//! Android's overrides (kept in /data/system/wm.prop, per VP).
//!
//! The physical size is the VP's framebuffer's; the physical density
//! `ro.sf.lcd_density` if the template sets it, else one picked from the
//! width as phones of that size have it. An override changes what apps are
//! told (and `input` scales its coordinates from it); the framebuffer keeps
//! its size, as a phone's panel does.

use super::store::PropFile;
use crate::fb::Framebuffer;

const WM: &str = "wm.prop";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub w: u32,
    pub h: u32,
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.w, self.h)
    }
}

pub fn parse_size(s: &str) -> Option<Size> {
    let (w, h) = s.split_once(['x', 'X'])?;
    let (w, h) = (w.trim().parse().ok()?, h.trim().parse().ok()?);
    ((1..=16384).contains(&w) && (1..=16384).contains(&h)).then_some(Size { w, h })
}

/// The display as the VP's tools report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Display {
    pub physical: Size,
    pub override_size: Option<Size>,
    pub density: u32,
    pub override_density: Option<u32>,
}

impl Display {
    /// What apps see (the override if any).
    pub fn size(&self) -> Size {
        self.override_size.unwrap_or(self.physical)
    }
    pub fn dpi(&self) -> u32 {
        self.override_density.unwrap_or(self.density)
    }
}

/// A density for a panel `width` pixels wide (xhdpi for 720, ...).
pub fn default_density(width: u32) -> u32 {
    match width {
        w if w >= 1440 => 560,
        w if w >= 1080 => 420,
        w if w >= 720 => 320,
        w if w >= 480 => 240,
        _ => 160,
    }
}

pub fn physical_size() -> Result<Size, String> {
    let fb = Framebuffer::open(false).map_err(|e| format!("no display: {e}"))?;
    Ok(Size {
        w: fb.g.width,
        h: fb.g.height,
    })
}

pub fn load() -> Result<Display, String> {
    let physical = physical_size()?;
    let store = PropFile::system(WM).load();
    let density = crate::props::PropStore::default()
        .get("ro.sf.lcd_density")
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| default_density(physical.w));
    Ok(Display {
        physical,
        override_size: store.get("size").and_then(|s| parse_size(s)),
        density,
        override_density: store.get("density").and_then(|d| d.parse().ok()),
    })
}

/// Android's text for `wm size` and `wm density`.
pub fn size_text(d: &Display) -> String {
    let mut t = format!("Physical size: {}\n", d.physical);
    if let Some(o) = d.override_size {
        t.push_str(&format!("Override size: {o}\n"));
    }
    t
}

pub fn density_text(d: &Display) -> String {
    let mut t = format!("Physical density: {}\n", d.density);
    if let Some(o) = d.override_density {
        t.push_str(&format!("Override density: {o}\n"));
    }
    t
}

const USAGE: &str = "\
Window manager (window) commands:
  help
      Print this help text.
  size [reset|WxH|WdpxHdp]
    Return or override display size.
    width and height in pixels unless suffixed with 'dp'.
  density [reset|DENSITY]
    Return or override display density.
";

pub fn run(args: &[String]) -> i32 {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    // `-d DISPLAY` comes after the verb on Android: only display 0 exists.
    let (a, display) = match a.iter().position(|x| *x == "-d") {
        Some(i) => {
            let d = a.get(i + 1).copied().unwrap_or("");
            let mut rest = a.clone();
            rest.drain(i..(i + 2).min(a.len()));
            (rest, Some(d))
        }
        None => (a, None),
    };
    if let Some(d) = display {
        if d != "0" {
            eprintln!("Error: display {d} does not exist: a VP has display 0 only");
            return 1;
        }
    }
    let store = PropFile::system(WM);
    let d = match load() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("Error: {e}");
            return 1;
        }
    };
    let saved = |r: std::io::Result<()>| match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error: cannot save {}: {e}", store.path().display());
            1
        }
    };
    match a.as_slice() {
        ["size"] => {
            print!("{}", size_text(&d));
            0
        }
        ["size", "reset"] => saved(store.remove("size").map(|_| ())),
        ["size", s] => {
            let px = |v: &str| -> Option<u32> {
                match v.strip_suffix("dp") {
                    Some(dp) => dp.parse::<u32>().ok().map(|n| n * d.density / 160),
                    None => v.parse().ok(),
                }
            };
            match s
                .split_once(['x', 'X'])
                .and_then(|(w, h)| parse_size(&format!("{}x{}", px(w)?, px(h)?)))
            {
                Some(sz) => saved(store.set("size", &sz.to_string())),
                None => {
                    eprintln!("Error: bad size {s}: give WxH in pixels (e.g. 720x1280) or WdpxHdp");
                    1
                }
            }
        }
        ["density"] => {
            print!("{}", density_text(&d));
            0
        }
        ["density", "reset"] => saved(store.remove("density").map(|_| ())),
        ["density", n] => match n.parse::<u32>() {
            Ok(v) if (72..=1000).contains(&v) => saved(store.set("density", &v.to_string())),
            _ => {
                eprintln!("Error: bad density {n}: give dots per inch, 72 to 1000");
                1
            }
        },
        [] | ["help"] | ["-h"] => {
            print!("{USAGE}");
            0
        }
        _ => {
            eprintln!("Unknown command: {}\n{USAGE}", a.join(" "));
            255
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_androids() {
        let mut d = Display {
            physical: Size { w: 720, h: 1280 },
            override_size: None,
            density: 320,
            override_density: None,
        };
        // Android 14's `wm size` / `wm density` (emulator, no override).
        assert_eq!(size_text(&d), "Physical size: 720x1280\n");
        assert_eq!(density_text(&d), "Physical density: 320\n");
        d.override_size = Some(Size { w: 480, h: 800 });
        d.override_density = Some(240);
        assert_eq!(
            size_text(&d),
            "Physical size: 720x1280\nOverride size: 480x800\n"
        );
        assert_eq!(
            density_text(&d),
            "Physical density: 320\nOverride density: 240\n"
        );
        assert_eq!(d.size(), Size { w: 480, h: 800 });
        assert_eq!(parse_size("1080x2400"), Some(Size { w: 1080, h: 2400 }));
        assert_eq!(parse_size("0x10"), None);
        assert_eq!(parse_size("axb"), None);
    }
}
