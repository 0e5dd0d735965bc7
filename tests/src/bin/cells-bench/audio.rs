//! `cells-bench audio [N]`: the audio device (two `debian` VPs, Debian's
//! aplay; the output taken by the D-Bus `AudioRecord`, 10 ms windows).
//!
//! - switch → audible change: A plays 440 Hz, B 880 Hz; a recording runs
//!   while `Switch` is called; the latency is from the call to the first
//!   10 ms window of the new foreground's tone (resolution: one window).
//!   Peer: the `Switch` round trip itself.
//! - playback start: `cellctl exec VP -- aplay TONE` in the foreground VP
//!   until its tone is in the output. Peer: `cellctl exec VP -- true`.

use std::time::{Duration, Instant};

use cells_tests::stats::summarize;
use cells_tests::Cells;

use cells_tests::sound::amplitude;

use crate::display::{proxy, rt};
use crate::summary_json;

const RATE: f64 = 48_000.0;
const WINDOW: usize = 480;

fn tone(freq: f64, secs: f64) -> Vec<u8> {
    cells_tests::sound::tone_wav(freq, secs, 48_000)
}

/// The first 10 ms window (index) where `freq` is the louder of the two.
pub(crate) fn first_window(pcm: &[u8], freq: f64, other: f64) -> Option<usize> {
    let left = cells_tests::sound::left(pcm);
    left.chunks(WINDOW).position(|w| {
        let (a, b) = (amplitude(w, freq), amplitude(w, other));
        a > 2000.0 && a > 4.0 * b
    })
}

fn push(c: &Cells, vp: &str, dst: &str, data: &[u8]) {
    use std::io::Write;
    let mut p = c
        .ctl_cmd()
        .args(["exec", vp, "--", "sh", "-c", &format!("cat > {dst}")])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("exec");
    p.stdin
        .take()
        .expect("stdin")
        .write_all(data)
        .expect("push");
    assert!(p.wait().expect("wait").success());
}

pub fn bench(n: usize) -> i32 {
    let c = Cells::new();
    c.ok(&["template", "build", "debian"]);
    for vp in ["a", "b"] {
        c.ok(&["create", vp, "--template", "debian"]);
        c.ok(&["start", vp]);
    }
    push(&c, "a", "/data/long.wav", &tone(440.0, 600.0));
    push(&c, "b", "/data/long.wav", &tone(880.0, 600.0));
    push(&c, "b", "/data/short.wav", &tone(660.0, 0.5));
    c.ok(&["switch", "a"]);
    for vp in ["a", "b"] {
        c.sh_ok(vp, "nohup aplay -q /data/long.wav > /dev/null 2>&1 &");
    }
    std::thread::sleep(Duration::from_millis(500));

    let rt = rt();
    let (audible, rtt) = rt.block_on(async {
        let (_conn, p) = proxy(&c).await;
        let (mut audible, mut rtt) = (Vec::new(), Vec::new());
        let mut fg = "a";
        for _ in 0..n {
            let (to, freq, other) = if fg == "a" {
                ("b", 880.0, 440.0)
            } else {
                ("a", 440.0, 880.0)
            };
            let t_rec = Instant::now();
            let rec = p.audio_record(500);
            let sw = async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let t = Instant::now();
                p.switch(to).await.expect("switch");
                (t, t.elapsed())
            };
            let (pcm, (t_sw, d)) = tokio::join!(rec, sw);
            let pcm = pcm.expect("record");
            rtt.push(d.as_secs_f64() * 1000.0);
            if let Some(k) = first_window(&pcm, freq, other) {
                let at = t_rec + Duration::from_millis(10 * k as u64);
                // Signed: the window grid (10 ms) can put the first new
                // window before the call was sent.
                let d = if at >= t_sw {
                    at.duration_since(t_sw).as_secs_f64()
                } else {
                    -(t_sw.duration_since(at).as_secs_f64())
                };
                audible.push(d * 1000.0);
            }
            fg = to;
        }
        (audible, rtt)
    });
    let (au, sw) = (summarize(&audible), summarize(&rtt));
    println!(
        "switch -> audible change in ms, {n} switches ({} measured; 10 ms windows)",
        au.n
    );
    println!("  switch -> new foreground's tone      {au}");
    println!("  Switch round trip (peer)             {sw}");

    // Playback start: B in front, its short tone.
    c.ok(&["switch", "b"]);
    c.sh_ok("a", "pkill aplay || true");
    c.sh_ok("b", "pkill aplay || true");
    let m = n.min(30);
    let (start, floor) = rt.block_on(async {
        let (_conn, p) = proxy(&c).await;
        let (mut start, mut floor) = (Vec::new(), Vec::new());
        for _ in 0..m {
            let t_rec = Instant::now();
            let rec = p.audio_record(1500);
            let play = async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let t = Instant::now();
                let mut cmd = tokio::process::Command::new(c.bin.join("cellctl"));
                cmd.env("CELLS_SOCKET", &c.socket).args([
                    "exec",
                    "b",
                    "--",
                    "aplay",
                    "-q",
                    "/data/short.wav",
                ]);
                let st = cmd.status().await.expect("aplay");
                assert!(st.success());
                t
            };
            let (pcm, t_play) = tokio::join!(rec, play);
            if let Some(k) = first_window(&pcm.expect("record"), 660.0, 880.0) {
                let at = t_rec + Duration::from_millis(10 * k as u64);
                start.push(at.saturating_duration_since(t_play).as_secs_f64() * 1000.0);
            }
            let t = Instant::now();
            let mut cmd = tokio::process::Command::new(c.bin.join("cellctl"));
            cmd.env("CELLS_SOCKET", &c.socket)
                .args(["exec", "b", "--", "true"]);
            assert!(cmd.status().await.expect("true").success());
            floor.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        (start, floor)
    });
    // Round trip: the device's microphone -> the foreground VP, which
    // plays what it records (arecord | aplay, as a call app does) -> the
    // output. A 100 ms 1 kHz burst into the microphone; the time until it
    // is in the output.
    c.sh_ok(
        "b",
        // 40 ms buffers, as a call app asks (arecord/aplay's default is 500 ms).
        "nohup sh -c 'arecord -q -B 40000 -t raw -f S16_LE -r 48000 -c 2 | aplay -q -B 40000 -t raw -f S16_LE -r 48000 -c 2' > /dev/null 2>&1 &",
    );
    std::thread::sleep(Duration::from_millis(500));
    let trips = rt.block_on(async {
        let (_conn, p) = proxy(&c).await;
        mic_round_trips(&p, m).await
    });
    let rt_s = summarize(&trips);
    println!("audio round trip in ms, {m} runs ({} measured): microphone -> VP (arecord -B 40000 | aplay -B 40000) -> output", rt_s.n);
    println!("  round trip                            {rt_s}");
    let (st, fl) = (summarize(&start), summarize(&floor));
    println!("playback start in ms, {m} runs ({} measured)", st.n);
    println!("  exec aplay -> its tone in the output  {st}");
    println!("  cellctl exec VP -- true (peer)        {fl}");
    println!(
        "ratio of medians: audible switch / Switch round trip = {:.2}x; playback start - exec = {:.1} ms",
        au.p50 / sw.p50,
        st.p50 - fl.p50
    );
    let json = serde_json::json!({
        "bench": "audio",
        "n": n,
        "switch_to_audible_ms": summary_json(&au),
        "switch_rtt_ms": summary_json(&sw),
        "playback_start_ms": summary_json(&st),
        "exec_true_ms": summary_json(&fl),
        "mic_to_output_round_trip_ms": summary_json(&rt_s),
    });
    println!("{json}");
    0
}

/// `runs` times: a 100 ms 1 kHz burst into the device's microphone while
/// the output is recorded; the time from the feed to the first 10 ms
/// window where the burst is in the output (whatever loops it back: a VP,
/// a call's far end).
pub(crate) async fn mic_round_trips(p: &cellsd::api::Manager1Proxy<'_>, runs: usize) -> Vec<f64> {
    let burst: Vec<i16> = (0..4800)
        .flat_map(|i| {
            let v =
                (12000.0 * (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / RATE).sin()) as i16;
            [v, v]
        })
        .collect();
    let burst = cellsd::api::audio::to_bytes(&burst);
    let mut trips = Vec::new();
    for _ in 0..runs {
        let t_rec = Instant::now();
        let rec = p.audio_record(1500);
        let feed = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let t = Instant::now();
            p.audio_mic(&burst).await.expect("mic");
            t
        };
        let (pcm, t_feed) = tokio::join!(rec, feed);
        if let Some(k) = first_window(&pcm.expect("record"), 1000.0, 880.0) {
            let at = t_rec + Duration::from_millis(10 * k as u64);
            trips.push(at.saturating_duration_since(t_feed).as_secs_f64() * 1000.0);
        }
    }
    trips
}
