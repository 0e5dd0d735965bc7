//! Drawing into an XRGB8888 buffer: fills and scaled text.

use crate::font::{self, GLYPH_H, GLYPH_W};
use crate::geometry::{Geometry, Rgb};

/// Fill the rectangle (x, y, w, h), clipped to the buffer.
pub fn fill_rect(buf: &mut [u8], g: &Geometry, x: u32, y: u32, w: u32, h: u32, color: Rgb) {
    let px = color.bytes();
    let x1 = (x + w).min(g.width);
    let y1 = (y + h).min(g.height);
    if x >= x1 || y >= y1 {
        return;
    }
    for row in y..y1 {
        let start = g.offset(x, row);
        let end = g.offset(x1, row);
        for p in buf[start..end].chunks_exact_mut(4) {
            p.copy_from_slice(&px);
        }
    }
}

pub fn fill(buf: &mut [u8], g: &Geometry, color: Rgb) {
    fill_rect(buf, g, 0, 0, g.width, g.height, color);
}

/// Width in pixels of `text` at `scale`.
pub fn text_width(text: &str, scale: u32) -> u32 {
    text.chars().count() as u32 * (GLYPH_W + 1) * scale
}

/// Draw `text` with its top-left corner at (x, y), each font pixel a
/// `scale` x `scale` square.
pub fn text(buf: &mut [u8], g: &Geometry, x: u32, y: u32, text: &str, scale: u32, color: Rgb) {
    for (i, c) in text.chars().enumerate() {
        let cx = x + i as u32 * (GLYPH_W + 1) * scale;
        for col in 0..GLYPH_W {
            for row in 0..GLYPH_H {
                if font::pixel(c, col, row) {
                    fill_rect(
                        buf,
                        g,
                        cx + col * scale,
                        y + row * scale,
                        scale,
                        scale,
                        color,
                    );
                }
            }
        }
    }
}

/// Black or white, whichever reads better on `bg`.
pub fn contrast(bg: Rgb) -> Rgb {
    let luma = 299 * bg.r() as u32 + 587 * bg.g() as u32 + 114 * bg.b() as u32;
    if luma > 128_000 {
        Rgb(0)
    } else {
        Rgb(0xff_ffff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_and_clip() {
        let g = Geometry::new(16, 16);
        let mut buf = vec![0u8; g.size()];
        fill(&mut buf, &g, Rgb(0x112233));
        assert_eq!(Rgb::read(&buf, g.offset(15, 15)), Rgb(0x112233));
        fill_rect(&mut buf, &g, 10, 10, 100, 100, Rgb(0xff0000));
        assert_eq!(Rgb::read(&buf, g.offset(15, 15)), Rgb(0xff0000));
        assert_eq!(Rgb::read(&buf, g.offset(9, 9)), Rgb(0x112233));
        fill_rect(&mut buf, &g, 20, 20, 5, 5, Rgb(0)); // fully outside: nothing
    }

    #[test]
    fn text_is_drawn_scaled() {
        let g = Geometry::new(64, 32);
        let mut buf = vec![0u8; g.size()];
        text(&mut buf, &g, 0, 0, "I", 2, Rgb(0xffffff));
        // The bar of 'I' is column 2 -> pixels 4..6 at scale 2, all 14 rows.
        assert_eq!(Rgb::read(&buf, g.offset(4, 0)), Rgb(0xffffff));
        assert_eq!(Rgb::read(&buf, g.offset(5, 13)), Rgb(0xffffff));
        assert_eq!(Rgb::read(&buf, g.offset(4, 14)), Rgb(0));
        assert_eq!(text_width("ab", 3), 36);
        assert_eq!(contrast(Rgb(0xffff00)), Rgb(0));
        assert_eq!(contrast(Rgb(0x000080)), Rgb(0xffffff));
    }
}
