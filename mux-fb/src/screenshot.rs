//! PNG screenshots of XRGB8888 frames.

use crate::geometry::Geometry;

/// Encode a frame as an RGB PNG.
pub fn encode_png(pixels: &[u8], g: &Geometry) -> Result<Vec<u8>, png::EncodingError> {
    let mut rgb = Vec::with_capacity(g.width as usize * g.height as usize * 3);
    for y in 0..g.height {
        let row = &pixels[g.offset(0, y)..g.offset(g.width, y)];
        for px in row.chunks_exact(4) {
            rgb.extend_from_slice(&[px[2], px[1], px[0]]);
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, g.width, g.height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        let mut w = enc.write_header()?;
        w.write_image_data(&rgb)?;
    }
    Ok(out)
}

/// Decode an RGB PNG into (width, height, RGB bytes). For tests and tools.
pub fn decode_png(data: &[u8]) -> Result<(u32, u32, Vec<u8>), png::DecodingError> {
    let dec = png::Decoder::new(std::io::Cursor::new(data));
    let mut reader = dec.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size().unwrap_or(0)];
    let info = reader.next_frame(&mut buf)?;
    buf.truncate(info.buffer_size());
    Ok((info.width, info.height, buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Rgb;

    #[test]
    fn round_trip_keeps_pixels() {
        let g = Geometry::new(20, 10);
        let mut px = vec![0u8; g.size()];
        crate::draw::fill(&mut px, &g, Rgb(0x123456));
        crate::draw::fill_rect(&mut px, &g, 0, 0, 1, 1, Rgb(0xff0000));
        let png = encode_png(&px, &g).unwrap();
        let (w, h, rgb) = decode_png(&png).unwrap();
        assert_eq!((w, h), (20, 10));
        assert_eq!(&rgb[0..3], &[0xff, 0, 0]);
        assert_eq!(&rgb[3..6], &[0x12, 0x34, 0x56]);
    }
}
