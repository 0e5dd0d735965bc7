//! Sound for the audio tests and benchmarks: tones to play, and how loud a
//! frequency is in what was recorded.

/// A mono 16-bit WAV of a sine at `freq` Hz (amplitude 12000).
pub fn tone_wav(freq: f64, secs: f64, rate: u32) -> Vec<u8> {
    let n = (rate as f64 * secs) as usize;
    let data: Vec<u8> = (0..n)
        .flat_map(|i| {
            let v = (12000.0 * (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin())
                as i16;
            v.to_le_bytes()
        })
        .collect();
    let mut w = Vec::with_capacity(44 + data.len());
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&rate.to_le_bytes());
    w.extend_from_slice(&(rate * 2).to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(data.len() as u32).to_le_bytes());
    w.extend_from_slice(&data);
    w
}

/// The left channel of S16_LE stereo bytes.
pub fn left(pcm: &[u8]) -> Vec<f64> {
    cellsd::api::audio::from_bytes(pcm)
        .iter()
        .step_by(2)
        .map(|v| *v as f64)
        .collect()
}

/// Amplitude of the `freq` Hz component of 48 kHz samples (Goertzel): ≈
/// the sine's amplitude for a steady tone, ≈ 0 where there is none.
pub fn amplitude(s: &[f64], freq: f64) -> f64 {
    amplitude_at(s, freq, 48_000.0)
}

/// [`amplitude`] of samples at `rate` Hz.
pub fn amplitude_at(s: &[f64], freq: f64, rate: f64) -> f64 {
    let k = 2.0 * (2.0 * std::f64::consts::PI * freq / rate).cos();
    let (mut a, mut b) = (0.0, 0.0);
    for x in s {
        let n = x + k * a - b;
        b = a;
        a = n;
    }
    2.0 * (a * a + b * b - k * a * b).max(0.0).sqrt() / s.len().max(1) as f64
}

/// Make `vp` (a VP of any template) play `freq` Hz for ever with stock
/// tools: raw S16 48 kHz stereo written by busybox's cat into its playback
/// device, in a session of its own; `/data/player.pid` ends it.
pub fn play_forever(c: &crate::Cells, vp: &str, freq: f64) {
    use std::io::Write;
    let raw: Vec<u8> = tone_wav(freq, 1.0, 48_000)[44..]
        .chunks_exact(2)
        .flat_map(|s| [s[0], s[1], s[0], s[1]])
        .collect();
    let mut p = c
        .ctl_cmd()
        .args(["exec", vp, "--", "sh", "-c", "cat > /data/tone.raw"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("cellctl exec");
    p.stdin
        .take()
        .expect("stdin")
        .write_all(&raw)
        .expect("push the tone");
    assert!(p.wait().expect("wait").success());
    c.sh_ok(
        vp,
        "setsid sh -c 'echo $$ > /data/player.pid; \
         while true; do cat /data/tone.raw; done > /dev/snd/cells-playback' \
         < /dev/null > /dev/null 2>&1 &",
    );
}
