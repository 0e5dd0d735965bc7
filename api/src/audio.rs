//! The audio format of the device (`Audio*` methods) and WAV files of it:
//! S16_LE, 48 kHz, stereo.

pub const RATE: u32 = 48_000;
pub const CHANNELS: usize = 2;
/// Bytes per frame (S16_LE stereo).
pub const FRAME_BYTES: usize = 2 * CHANNELS;

pub fn to_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

pub fn from_bytes(pcm: &[u8]) -> Vec<i16> {
    pcm.chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// A WAV file's PCM as 48 kHz stereo S16 samples: 16-bit PCM at 48 kHz,
/// mono (duplicated) or stereo.
pub fn parse_wav(data: &[u8]) -> Result<Vec<i16>, String> {
    let fix = "convert it with e.g. `sox IN -r 48000 -b 16 -e signed OUT.wav`";
    if data.len() < 12 || &data[0..4] != b"RIFF" || &data[8..12] != b"WAVE" {
        return Err(format!("not a WAV file: {fix}"));
    }
    let (mut fmt, mut pcm) = (None, None);
    let mut off = 12;
    while off + 8 <= data.len() {
        let id = &data[off..off + 4];
        let len = u32::from_le_bytes([data[off + 4], data[off + 5], data[off + 6], data[off + 7]])
            as usize;
        let body = &data[off + 8..(off + 8 + len).min(data.len())];
        match id {
            b"fmt " if body.len() >= 16 => fmt = Some(body),
            b"data" => pcm = Some(body),
            _ => {}
        }
        off += 8 + len + (len & 1);
    }
    let (Some(f), Some(pcm)) = (fmt, pcm) else {
        return Err(format!("the WAV file has no fmt or data chunk: {fix}"));
    };
    let u16_at = |i: usize| u16::from_le_bytes([f[i], f[i + 1]]);
    let rate = u32::from_le_bytes([f[4], f[5], f[6], f[7]]);
    let (tag, channels, bits) = (u16_at(0), u16_at(2), u16_at(14));
    if !(tag == 1 || tag == 0xFFFE) || bits != 16 || rate != RATE || !(1..=2).contains(&channels) {
        return Err(format!(
            "the WAV file is {bits}-bit, {rate} Hz, {channels} channel(s) (format {tag}): the device takes \
             16-bit PCM at {RATE} Hz, mono or stereo; {fix}"
        ));
    }
    let s = from_bytes(pcm);
    Ok(if channels == 1 {
        s.iter().flat_map(|v| [*v, *v]).collect()
    } else {
        s
    })
}

/// A WAV file of 48 kHz stereo S16 samples.
pub fn wav(samples: &[i16]) -> Vec<u8> {
    let data = to_bytes(samples);
    let mut out = Vec::with_capacity(44 + data.len());
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&(CHANNELS as u16).to_le_bytes());
    out.extend_from_slice(&RATE.to_le_bytes());
    out.extend_from_slice(&(RATE * FRAME_BYTES as u32).to_le_bytes());
    out.extend_from_slice(&(FRAME_BYTES as u16).to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_round_trips_and_bad_files_name_the_fix() {
        let s: Vec<i16> = (0..960).map(|i| i as i16 * 3).collect();
        assert_eq!(parse_wav(&wav(&s)).unwrap(), s);
        // Mono is duplicated.
        let mut mono = wav(&[1, 2, 3]);
        mono[22] = 1; // channels
        mono[32] = 2; // block align
        assert_eq!(parse_wav(&mono).unwrap()[..4], [1, 1, 2, 2]);
        let mut slow = wav(&s);
        slow[24..28].copy_from_slice(&44_100u32.to_le_bytes());
        let e = parse_wav(&slow).unwrap_err();
        assert!(e.contains("44100 Hz") && e.contains("sox"), "{e}");
        assert!(parse_wav(b"hello").unwrap_err().contains("not a WAV"));
    }
}
