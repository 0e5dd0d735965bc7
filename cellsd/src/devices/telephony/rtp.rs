//! A call's audio on the network: RTP (RFC 3550) with G.711 (µ-law, A-law;
//! 8 kHz mono, 20 ms packets), converted to and from the device audio's
//! format (S16 48 kHz stereo) — the downlink goes to the device's output
//! through the mixer, the microphone to the uplink.

/// Samples of one 20 ms G.711 packet.
pub const PACKET_SAMPLES: usize = 160;
/// 48 kHz stereo samples per 8 kHz mono sample.
const UP: usize = 6;

const BIAS: i32 = 0x84;
const CLIP: i32 = 32635;

pub fn ulaw_encode(s: i16) -> u8 {
    let mut v = s as i32;
    let sign = if v < 0 {
        v = -v;
        0x80
    } else {
        0
    };
    v = v.min(CLIP) + BIAS;
    let mut exp = 7;
    let mut mask = 0x4000;
    while exp > 0 && v & mask == 0 {
        exp -= 1;
        mask >>= 1;
    }
    let mant = (v >> (exp + 3)) & 0x0f;
    !(sign | (exp << 4) as u8 | mant as u8)
}

pub fn ulaw_decode(b: u8) -> i16 {
    let b = !b;
    let sign = b & 0x80;
    let exp = ((b >> 4) & 0x07) as i32;
    let mant = (b & 0x0f) as i32;
    let v = (((mant << 3) + BIAS) << exp) - BIAS;
    (if sign != 0 { -v } else { v }) as i16
}

pub fn alaw_encode(s: i16) -> u8 {
    let mut v = s as i32;
    let sign = if v >= 0 { 0x80 } else { 0 };
    if v < 0 {
        v = -v - 1;
    }
    v = v.min(0x7fff);
    let out = if v < 256 {
        (v >> 4) as u8
    } else {
        let mut exp = 7;
        while exp > 1 && v & (0x4000 >> (7 - exp)) == 0 {
            exp -= 1;
        }
        ((exp << 4) | ((v >> (exp + 3)) & 0x0f)) as u8
    };
    (out | sign) ^ 0x55
}

pub fn alaw_decode(b: u8) -> i16 {
    let b = b ^ 0x55;
    let exp = ((b >> 4) & 0x07) as i32;
    let mant = (b & 0x0f) as i32;
    let v = if exp == 0 {
        (mant << 4) + 8
    } else {
        ((mant << 4) + 0x108) << (exp - 1)
    };
    (if b & 0x80 != 0 { v } else { -v }) as i16
}

/// 48 kHz stereo to 8 kHz mono: both channels and six frames averaged (a
/// box filter: enough for speech and tones below 1.5 kHz).
pub fn down(stereo48: &[i16]) -> Vec<i16> {
    stereo48
        .chunks_exact(UP * 2)
        .map(|c| (c.iter().map(|s| *s as i32).sum::<i32>() / (UP as i32 * 2)) as i16)
        .collect()
}

/// 8 kHz mono to 48 kHz stereo, linear between samples; `last` is the
/// sample before `mono` (kept across packets).
pub fn up(mono8: &[i16], last: &mut i16) -> Vec<i16> {
    let mut out = Vec::with_capacity(mono8.len() * UP * 2);
    for s in mono8 {
        let (a, b) = (*last as i32, *s as i32);
        for k in 1..=UP as i32 {
            let v = (a + (b - a) * k / UP as i32) as i16;
            out.push(v);
            out.push(v);
        }
        *last = *s;
    }
    out
}

/// An RTP packet's header fields and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: &'a [u8],
}

pub fn parse(b: &[u8]) -> Option<Packet<'_>> {
    if b.len() < 12 || b[0] >> 6 != 2 {
        return None;
    }
    let cc = (b[0] & 0x0f) as usize;
    let mut start = 12 + 4 * cc;
    if b[0] & 0x10 != 0 {
        // Header extension: 4 bytes, then its length in words.
        let ext = b.get(start + 2..start + 4)?;
        start += 4 + 4 * u16::from_be_bytes([ext[0], ext[1]]) as usize;
    }
    let mut end = b.len();
    if b[0] & 0x20 != 0 {
        end = end.checked_sub(*b.last()? as usize)?;
    }
    Some(Packet {
        payload_type: b[1] & 0x7f,
        seq: u16::from_be_bytes([b[2], b[3]]),
        timestamp: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        payload: b.get(start..end)?,
    })
}

pub fn build(p: &Packet<'_>, marker: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + p.payload.len());
    v.push(0x80);
    v.push(p.payload_type | if marker { 0x80 } else { 0 });
    v.extend_from_slice(&p.seq.to_be_bytes());
    v.extend_from_slice(&p.timestamp.to_be_bytes());
    v.extend_from_slice(&p.ssrc.to_be_bytes());
    v.extend_from_slice(p.payload);
    v
}

pub fn encode(pt: u8, mono8: &[i16]) -> Vec<u8> {
    mono8
        .iter()
        .map(|s| {
            if pt == super::sip::PCMA {
                alaw_encode(*s)
            } else {
                ulaw_encode(*s)
            }
        })
        .collect()
}

pub fn decode(pt: u8, payload: &[u8]) -> Vec<i16> {
    payload
        .iter()
        .map(|b| {
            if pt == super::sip::PCMA {
                alaw_decode(*b)
            } else {
                ulaw_decode(*b)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_known_values_and_round_trip() {
        // ITU-T G.711 code points: silence and full scale.
        assert_eq!(ulaw_encode(0), 0xff);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(ulaw_decode(0xff), 0);
        assert_eq!(alaw_encode(0), 0xd5);
        for s in (-32000i32..32000).step_by(97) {
            let s = s as i16;
            for (e, d) in [
                (ulaw_encode(s), ulaw_decode as fn(u8) -> i16),
                (alaw_encode(s), alaw_decode as fn(u8) -> i16),
            ] {
                let back = d(e) as i32;
                // Logarithmic: the error grows with the level (< 1/16).
                let tol = (s as i32).abs() / 16 + 16;
                assert!((back - s as i32).abs() <= tol, "{s} -> {e:#x} -> {back}");
            }
        }
    }

    #[test]
    fn resampling_keeps_a_tone() {
        // 48 kHz stereo 440 Hz, down to 8 kHz and back: same tone, same level.
        let n = 4800;
        let stereo: Vec<i16> = (0..n)
            .flat_map(|i| {
                let v = (10000.0 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / 48000.0).sin())
                    as i16;
                [v, v]
            })
            .collect();
        let mono = down(&stereo);
        assert_eq!(mono.len(), n / 6);
        let mut last = 0;
        let back = up(&mono, &mut last);
        assert_eq!(back.len(), stereo.len());
        let rms = |v: &[i16]| {
            (v.iter().map(|s| (*s as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
        };
        let (a, b) = (rms(&stereo), rms(&back));
        assert!((b / a) > 0.9 && (b / a) < 1.05, "{a} {b}");
    }

    #[test]
    fn rtp_header_round_trip_and_refusals() {
        let payload = [1u8, 2, 3];
        let p = Packet {
            payload_type: 0,
            seq: 65535,
            timestamp: 160,
            ssrc: 0xdeadbeef,
            payload: &payload,
        };
        let b = build(&p, true);
        let back = parse(&b).unwrap();
        assert_eq!(back.payload, &payload);
        assert_eq!(back.seq, 65535);
        assert_eq!(back.ssrc, 0xdeadbeef);
        assert!(parse(&b[..11]).is_none());
        let mut v1 = b.clone();
        v1[0] = 0x40;
        assert!(parse(&v1).is_none(), "version 1 refused");
        let mut padded = b.clone();
        padded[0] |= 0x20;
        *padded.last_mut().unwrap() = 200;
        assert!(parse(&padded).is_none(), "padding longer than the packet");
    }
}
