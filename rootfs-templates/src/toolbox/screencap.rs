//! `screencap`: the VP's own framebuffer, foreground or not, as Android's
//! screencap writes it: PNG with `-p` (or a FILE ending in .png), else raw
//! (a 16-byte header — width, height, format 1 = RGBA_8888, dataspace
//! sRGB — then RGBA pixels, as Android 12+ writes it).

use std::io::Write;

use crate::fb::{to_rgba, Framebuffer};
use mux_fb::Geometry;

/// PIXEL_FORMAT_RGBA_8888.
pub const FORMAT_RGBA_8888: u32 = 1;
/// ADATASPACE_SRGB.
pub const DATASPACE_SRGB: u32 = 142_671_872;

const USAGE: &str = "\
usage: screencap [-hp] [-d display-id] [FILENAME]
   -h: this message
   -p: save the file as a png.
   -d: specify the display ID to dump. Default: 0.
If FILENAME ends with .png it will be saved as a png.
If FILENAME is not given, the results will be printed to stdout.
";

/// The raw format: header and RGBA rows.
pub fn raw(frame: &[u8], g: &Geometry) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + g.width as usize * g.height as usize * 4);
    for v in [g.width, g.height, FORMAT_RGBA_8888, DATASPACE_SRGB] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&to_rgba(frame, g));
    out
}

pub fn run(args: &[String]) -> i32 {
    let mut png = false;
    let mut file: Option<String> = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "-p" => png = true,
            "-h" => {
                eprint!("{USAGE}");
                return 0;
            }
            "-d" => {
                let id = args.get(i + 1).map(String::as_str).unwrap_or("");
                if id != "0" {
                    eprintln!("screencap: display {id:?} does not exist: a VP has display 0 only (dumpsys SurfaceFlinger --display-id)");
                    return 1;
                }
                i += 1;
            }
            a if a.starts_with('-') && a.len() > 1 => {
                eprint!("screencap: unknown option {a}\n{USAGE}");
                return 1;
            }
            f => file = Some(f.to_string()),
        }
        i += 1;
    }
    if file.as_deref().is_some_and(|f| f.ends_with(".png")) {
        png = true;
    }
    let fb = match Framebuffer::open(false) {
        Ok(fb) => fb,
        Err(e) => {
            eprintln!("screencap: the VP has no framebuffer ({e}): its display device is off");
            return 1;
        }
    };
    let frame = fb.snapshot();
    let bytes = if png {
        match mux_fb::screenshot::encode_png(&frame, &fb.g) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("screencap: PNG: {e}");
                return 1;
            }
        }
    } else {
        raw(&frame, &fb.g)
    };
    let r = match &file {
        Some(f) => std::fs::write(f, &bytes),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes).and_then(|_| out.flush())
        }
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!(
                "screencap: writing {}: {e}",
                file.as_deref().unwrap_or("stdout")
            );
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_has_androids_header() {
        let g = Geometry::new(2, 1);
        let r = raw(&[1, 2, 3, 0, 4, 5, 6, 0], &g);
        assert_eq!(&r[0..4], &2u32.to_le_bytes());
        assert_eq!(&r[4..8], &1u32.to_le_bytes());
        assert_eq!(&r[8..12], &1u32.to_le_bytes());
        assert_eq!(&r[12..16], &DATASPACE_SRGB.to_le_bytes());
        assert_eq!(&r[16..], &[3, 2, 1, 255, 6, 5, 4, 255]);
    }
}
