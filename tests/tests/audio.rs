//! The audio device, proven by sound: Debian's unmodified `aplay` and
//! `arecord` in `debian`-template VPs; the device's output taken with
//! `cellctl audio record`, its microphone fed with `cellctl audio mic`;
//! tones told apart by their power at each frequency (Goertzel).

use std::time::Duration;

use cells_tests::Cells;

use cells_tests::sound::{amplitude, tone_wav as tone};

/// The left channel of a 48 kHz stereo 16-bit WAV.
fn left(wav: &[u8]) -> Vec<f64> {
    let pcm = cellsd::api::audio::parse_wav(wav).expect("a WAV of the device's format");
    pcm.iter().step_by(2).map(|v| *v as f64).collect()
}

fn record(c: &Cells, secs: f64) -> Vec<f64> {
    let f = c.root.join("out.wav");
    c.ok(&[
        "audio",
        "record",
        f.to_str().unwrap(),
        "--seconds",
        &secs.to_string(),
    ]);
    left(&std::fs::read(&f).unwrap())
}

fn push(c: &Cells, vp: &str, dst: &str, data: &[u8]) {
    use std::io::Write;
    let mut p = c
        .ctl_cmd()
        .args(["exec", vp, "--", "sh", "-c", &format!("cat > {dst}")])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin.take().unwrap().write_all(data).unwrap();
    assert!(p.wait().unwrap().success());
}

fn play(c: &Cells, vp: &str) {
    c.sh_ok(
        vp,
        "nohup aplay -q /data/tone.wav > /data/aplay.log 2>&1 & echo $! > /data/aplay.pid",
    );
}

/// Heard: 440 (A) and 880 (B) amplitudes of a recording.
fn heard(c: &Cells) -> (f64, f64) {
    let s = record(c, 0.5);
    (amplitude(&s, 440.0), amplitude(&s, 880.0))
}

fn debian_vps(c: &Cells, list: &[(&str, &[&str])]) {
    c.ok(&["template", "build", "debian"]);
    for (vp, extra) in list {
        let mut args = vec!["create", vp, "--template", "debian"];
        args.extend_from_slice(extra);
        c.ok(&args);
        c.ok(&["start", vp]);
    }
}

#[test]
fn the_foreground_is_heard_the_background_muted_ducked_or_mixed() {
    let c = Cells::new();
    debian_vps(
        &c,
        &[
            ("a", &[]),
            ("b", &[]),
            ("m", &["--device", "audio=shared"]),
            ("d", &["--device", "audio=duck"]),
        ],
    );
    // A plays 440 Hz (at 44.1 kHz: alsa converts), B 880 Hz (22.05 kHz,
    // mono as well), long enough for the whole test.
    push(&c, "a", "/data/tone.wav", &tone(440.0, 60.0, 44_100));
    push(&c, "b", "/data/tone.wav", &tone(880.0, 60.0, 22_050));
    c.ok(&["switch", "a"]);
    play(&c, "a");
    play(&c, "b");
    std::thread::sleep(Duration::from_millis(300));
    let (a, b) = heard(&c);
    assert!(a > 10_000.0, "A (foreground) is heard: 440 Hz at {a:.0}");
    assert!(b < 100.0, "B (background) is muted: 880 Hz at {b:.0}");
    c.ok(&["switch", "b"]);
    std::thread::sleep(Duration::from_millis(200));
    let (a, b) = heard(&c);
    assert!(
        b > 10_000.0,
        "B (now foreground) is heard: 880 Hz at {b:.0}"
    );
    assert!(a < 100.0, "A (now background) is muted: 440 Hz at {a:.0}");
    // The background VP's player was never stalled: A played all along.
    let v: serde_json::Value =
        serde_json::from_str(&c.ok(&["audio", "--json"])).expect("audio --json");
    let vps = v["vps"].as_array().unwrap();
    let row = |n: &str| vps.iter().find(|r| r["vp"] == n).unwrap().clone();
    assert!(row("a")["played_ms"].as_u64().unwrap() >= 900, "{v}");
    assert_eq!(row("b")["mic"], true, "{v}");
    assert_eq!(row("a")["mic"], false, "{v}");
    for vp in ["a", "b"] {
        c.sh_ok(vp, "kill $(cat /data/aplay.pid)");
    }

    // shared: the background VP is mixed in at full volume; duck: lowered.
    push(&c, "m", "/data/tone.wav", &tone(440.0, 30.0, 48_000));
    push(&c, "d", "/data/tone.wav", &tone(880.0, 30.0, 48_000));
    c.ok(&["switch", "a"]);
    play(&c, "m");
    play(&c, "d");
    std::thread::sleep(Duration::from_millis(300));
    let (m, d) = heard(&c);
    assert!(m > 10_000.0, "shared VP heard in the background: {m:.0}");
    assert!(
        d > 1_500.0 && d < m / 2.0,
        "ducked VP heard lower: {d:.0} against {m:.0}"
    );
    for vp in ["m", "d"] {
        c.sh_ok(vp, "kill $(cat /data/aplay.pid)");
    }
}

#[test]
fn the_microphone_reaches_only_the_foreground() {
    let c = Cells::new();
    debian_vps(&c, &[("a", &[]), ("b", &[])]);
    c.ok(&["switch", "a"]);
    let mic = c.root.join("mic.wav");
    std::fs::write(&mic, tone(660.0, 3.0, 48_000)).unwrap();
    // Both record 2 s (arecord as it is, paced by the device: it takes 2 s).
    let rec = |vp: &str| {
        c.ctl_cmd()
            .args([
                "exec",
                vp,
                "--",
                "sh",
                "-c",
                "arecord -q -d 2 -f S16_LE -r 48000 -c 2 /data/rec.wav",
            ])
            .spawn()
            .unwrap()
    };
    let t0 = std::time::Instant::now();
    let (mut ra, mut rb) = (rec("a"), rec("b"));
    std::thread::sleep(Duration::from_millis(200));
    c.ok(&["audio", "mic", mic.to_str().unwrap()]);
    assert!(ra.wait().unwrap().success());
    assert!(rb.wait().unwrap().success());
    assert!(
        t0.elapsed() >= Duration::from_millis(1900),
        "arecord -d 2 ended after {:?}: not paced by the device",
        t0.elapsed()
    );
    let got = |vp: &str| {
        let out = c
            .ctl_cmd()
            .args(["exec", vp, "--", "cat", "/data/rec.wav"])
            .output()
            .unwrap();
        left(&out.stdout)
    };
    let (a, b) = (got("a"), got("b"));
    assert_eq!(a.len(), 96_000, "2 s at 48 kHz");
    // The foreground recorded the microphone (most of the 2 s: the feed
    // began 0.2 s in); the background recorded silence.
    let tail = |s: &[f64]| s[s.len() / 2..].to_vec();
    let fa = amplitude(&tail(&a), 660.0);
    assert!(fa > 10_000.0, "A (foreground) recorded 660 Hz at {fa:.0}");
    assert!(
        b.iter().all(|v| *v == 0.0),
        "B (background) recorded something"
    );
    // Bad input is refused by name, nothing queued.
    let bad = c.root.join("bad.wav");
    std::fs::write(&bad, tone(660.0, 0.1, 44_100)).unwrap();
    let e = c.fails(&["audio", "mic", bad.to_str().unwrap()]);
    assert!(e.contains("44100 Hz") && e.contains("sox"), "{e}");
    let e = c.fails(&["audio", "record", "/tmp/x.wav", "--seconds", "0"]);
    assert!(e.contains("--seconds"), "{e}");
}

/// What a VP can do with its audio nodes stays in the VP: it cannot write
/// the microphone, flood cellsd, or reach another VP's stream.
#[test]
fn a_vps_audio_nodes_reach_nothing_else() {
    let c = Cells::new();
    debian_vps(&c, &[("a", &[]), ("b", &[])]);
    c.ok(&["switch", "b"]);
    // The capture node is read-only; the playback pipe is the VP's own.
    let o = c.sh("a", "echo x > /dev/snd/cells-capture");
    assert_ne!(o.code, 0, "wrote the microphone: {o:?}");
    let o = c.sh("a", "ls -l /dev/snd/; ls /dev/snd | wc -l");
    assert!(o.stdout.trim_end().ends_with('2'), "{o:?}");
    // A background VP writing as fast as it can (no pacing on its side)
    // is drained at the device's rate: it does not speed up the clock or
    // starve the foreground.
    push(&c, "b", "/data/tone.wav", &tone(880.0, 20.0, 48_000));
    play(&c, "b");
    c.sh_ok(
        "a",
        "nohup sh -c 'cat /dev/zero > /dev/snd/cells-playback' > /dev/null 2>&1 & echo $! > /data/flood.pid",
    );
    std::thread::sleep(Duration::from_millis(300));
    let before: serde_json::Value = serde_json::from_str(&c.ok(&["audio", "--json"])).unwrap();
    let (a, b) = heard(&c);
    assert!(b > 10_000.0 && a < 100.0, "{a:.0} {b:.0}");
    let after: serde_json::Value = serde_json::from_str(&c.ok(&["audio", "--json"])).unwrap();
    let played = |v: &serde_json::Value, n: &str| {
        v["vps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["vp"] == n)
            .unwrap()["played_ms"]
            .as_u64()
            .unwrap()
    };
    let flood = played(&after, "a") - played(&before, "a");
    assert!(
        (300..=1500).contains(&flood),
        "the flooding VP was drained at the device's rate: {flood} ms of audio in ≈ 0.5 s"
    );
    c.sh_ok("a", "kill $(cat /data/flood.pid)");
    // Policy none: no node at all (control: a has them).
    c.ok(&[
        "create",
        "n",
        "--template",
        "debian",
        "--device",
        "audio=none",
    ]);
    c.ok(&["start", "n"]);
    let o = c.sh("n", "ls /dev/snd 2>&1");
    assert!(!o.stdout.contains("cells-playback"), "{o:?}");
}
