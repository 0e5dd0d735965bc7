//! Framebuffer geometry and the pixel format.

use serde::{Deserialize, Serialize};

/// Size and layout of a framebuffer: `stride` bytes per line, 32 bits per
/// pixel (XRGB8888).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Geometry {
    pub width: u32,
    pub height: u32,
    /// Bytes per line (at least width * 4; a real panel may pad lines).
    pub stride: u32,
}

pub const BYTES_PER_PIXEL: u32 = 4;
pub const BITS_PER_PIXEL: u32 = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size '{0}': give WIDTHxHEIGHT, e.g. 720x1280 (each 16 to 8192)")]
pub struct BadSize(pub String);

impl Geometry {
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            stride: width * BYTES_PER_PIXEL,
        }
    }

    /// Parse "720x1280".
    pub fn parse(s: &str) -> Result<Self, BadSize> {
        let bad = || BadSize(s.to_string());
        let (w, h) = s.split_once('x').ok_or_else(bad)?;
        let w: u32 = w.trim().parse().map_err(|_| bad())?;
        let h: u32 = h.trim().parse().map_err(|_| bad())?;
        if !(16..=8192).contains(&w) || !(16..=8192).contains(&h) {
            return Err(bad());
        }
        Ok(Self::new(w, h))
    }

    /// Bytes of a whole frame.
    pub fn size(&self) -> usize {
        self.stride as usize * self.height as usize
    }

    /// Byte offset of pixel (x, y).
    pub fn offset(&self, x: u32, y: u32) -> usize {
        y as usize * self.stride as usize + x as usize * BYTES_PER_PIXEL as usize
    }
}

/// The text of a userspace-mode framebuffer's info file
/// (`/dev/graphics/fb0.info`): `key=value` lines.
pub fn info_text(g: &Geometry) -> String {
    format!(
        "width={}\nheight={}\nstride={}\nbits_per_pixel={BITS_PER_PIXEL}\nformat=XRGB8888\n",
        g.width, g.height, g.stride
    )
}

/// Parse an info file.
pub fn parse_info(text: &str) -> Option<Geometry> {
    let get = |k: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(k)?
                .strip_prefix('=')?
                .trim()
                .parse::<u32>()
                .ok()
        })
    };
    let g = Geometry {
        width: get("width")?,
        height: get("height")?,
        stride: get("stride")?,
    };
    (g.stride >= g.width * BYTES_PER_PIXEL && get("bits_per_pixel") == Some(BITS_PER_PIXEL))
        .then_some(g)
}

/// An XRGB8888 colour, 0x00RRGGBB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rgb(pub u32);

impl Rgb {
    pub fn new(r: u8, g: u8, b: u8) -> Self {
        Rgb((r as u32) << 16 | (g as u32) << 8 | b as u32)
    }
    pub fn r(self) -> u8 {
        (self.0 >> 16) as u8
    }
    pub fn g(self) -> u8 {
        (self.0 >> 8) as u8
    }
    pub fn b(self) -> u8 {
        self.0 as u8
    }
    /// Parse "ff0000" or "#ff0000".
    pub fn parse_hex(s: &str) -> Option<Self> {
        let h = s.trim().trim_start_matches('#');
        if h.len() != 6 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(h, 16).ok().map(Rgb)
    }
    pub fn hex(self) -> String {
        format!("{:06x}", self.0 & 0xff_ffff)
    }
    /// Memory bytes of one pixel (B, G, R, X).
    pub fn bytes(self) -> [u8; 4] {
        (self.0 & 0xff_ffff).to_le_bytes()
    }
    /// The pixel at `off` of an XRGB8888 buffer.
    pub fn read(buf: &[u8], off: usize) -> Self {
        Rgb(u32::from_le_bytes([
            buf[off],
            buf[off + 1],
            buf[off + 2],
            0,
        ]))
    }
    /// A saturated colour derived from a name (stable across runs).
    pub fn from_name(name: &str) -> Self {
        // FNV-1a: stable, no dependency.
        let mut h: u32 = 0x811c_9dc5;
        for b in name.bytes() {
            h ^= b as u32;
            h = h.wrapping_mul(0x0100_0193);
        }
        let hue = (h % 360) as f32;
        hsv(hue, 0.85, 0.95)
    }
}

fn hsv(h: f32, s: f32, v: f32) -> Rgb {
    let c = v * s;
    let x = c * (1.0 - ((h / 60.0) % 2.0 - 1.0).abs());
    let m = v - c;
    let (r, g, b) = match (h / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let q = |v: f32| ((v + m) * 255.0).round() as u8;
    Rgb::new(q(r), q(g), q(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        let g = Geometry::parse("720x1280").unwrap();
        assert_eq!(
            (g.width, g.height, g.stride, g.size()),
            (720, 1280, 2880, 720 * 1280 * 4)
        );
        assert_eq!(g.offset(1, 2), 2 * 2880 + 4);
        for bad in ["", "720", "0x10", "720x", "axb", "99999x10"] {
            assert!(Geometry::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn info_round_trip() {
        let g = Geometry::new(720, 1280);
        assert_eq!(parse_info(&info_text(&g)), Some(g));
        assert_eq!(parse_info("width=1\nheight=1\n"), None);
        assert_eq!(
            parse_info("width=10\nheight=10\nstride=4\nbits_per_pixel=32"),
            None
        );
    }

    #[test]
    fn colours() {
        let red = Rgb::parse_hex("#ff0000").unwrap();
        assert_eq!(red.bytes(), [0, 0, 0xff, 0]);
        assert_eq!(Rgb::read(&red.bytes(), 0), red);
        assert_eq!(red.hex(), "ff0000");
        assert!(Rgb::parse_hex("ff00").is_none() && Rgb::parse_hex("gg0000").is_none());
        assert_eq!(Rgb::from_name("work"), Rgb::from_name("work"));
        assert_ne!(Rgb::from_name("work"), Rgb::from_name("personal"));
    }
}
