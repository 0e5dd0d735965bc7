//! `cells-bench adb [N]`: what adb-driven test suites call most, with
//! Debian's stock adb client (N runs each, default 100, interleaved with
//! their peers):
//!
//! - `adb exec-out screencap -p` round trip (the VP's framebuffer as PNG on
//!   the client's stdout), next to `cellctl screenshot --vp VP` (the same
//!   PNG through cellsd's API) and `adb shell true` (what any adb command
//!   costs here);
//! - `adb shell input tap X Y` → the first event read in the VP (a
//!   `getevent -t` on the VP's touchscreen, started once), and until the
//!   command returns; next to `cellctl input tap` (the panel's input
//!   multiplexed to the foreground VP) read by the same reader.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cells_tests::stats::summarize;
use cells_tests::Cells;

use crate::summary_json;

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Lines a long-running command prints, with the time each was read.
struct Reader {
    child: std::process::Child,
    rx: mpsc::Receiver<(Instant, String)>,
}

impl Reader {
    fn start(mut cmd: Command) -> Reader {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the reader");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Reader { child, rx }
    }

    /// The first event line after now, within 5 s.
    fn next_event(&self) -> Option<Instant> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let (at, line) = self.rx.recv_timeout(left).ok()?;
            if line.starts_with('[') {
                return Some(at);
            }
        }
    }

    fn drain(&self) {
        std::thread::sleep(Duration::from_millis(20));
        while self.rx.try_recv().is_ok() {}
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Time from spawning `cmd` to the reader's first event, and to `cmd`'s end.
fn tap(reader: &Reader, mut cmd: Command) -> (f64, f64) {
    reader.drain();
    let t0 = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the tap");
    let first = reader.next_event().expect("the tap reached the VP");
    let st = child.wait().expect("wait");
    let done = ms(t0);
    assert!(st.success(), "{cmd:?}");
    (first.duration_since(t0).as_secs_f64() * 1000.0, done)
}

pub fn bench(n: usize) -> i32 {
    let c = Cells::new();
    c.ok(&["create", "ph", "--template", "minimal"]);
    c.ok(&["start", "ph"]);
    c.ok(&["switch", "ph"]);
    let serial = c
        .ok(&["adb", "ph"])
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .to_string();
    let adb = cells_tests::adb::Adb::new(&c);
    adb.authorize(&c, "ph");
    adb.connect(&serial);
    let quiet = |args: &[&str]| {
        let mut cmd = adb.cmd();
        cmd.args(["-s", &serial]).args(args);
        cmd
    };
    let timed_out = |mut cmd: Command| -> (f64, usize) {
        let t = Instant::now();
        let o = cmd.stdin(Stdio::null()).output().expect("spawn");
        let d = ms(t);
        assert!(
            o.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        (d, o.stdout.len())
    };

    // Screenshots.
    let shot = c.root.join("shot.png");
    for _ in 0..3 {
        timed_out(quiet(&["exec-out", "screencap", "-p"]));
    }
    let (mut cap, mut api, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    let mut png_bytes = 0;
    for _ in 0..n {
        let (d, len) = timed_out(quiet(&["exec-out", "screencap", "-p"]));
        assert!(len > 1000, "screencap -p gave {len} bytes");
        png_bytes = len;
        cap.push(d);
        let mut s = c.ctl_cmd();
        s.args(["screenshot", "--vp", "ph", "-o"]).arg(&shot);
        api.push(timed_out(s).0);
        floor.push(timed_out(quiet(&["shell", "true"])).0);
    }
    let (cp, ap, fl) = (summarize(&cap), summarize(&api), summarize(&floor));
    println!("screenshots in ms, {n} runs each (PNG of {png_bytes} bytes)");
    println!("  adb exec-out screencap -p            {cp}");
    println!("  cellctl screenshot --vp VP           {ap}");
    println!("  adb shell true (any adb command)     {fl}");
    println!(
        "ratio of medians: screencap / cellctl screenshot = {:.2}x; screencap - shell true = {:.2} ms",
        cp.p50 / ap.p50,
        cp.p50 - fl.p50
    );

    // Taps.
    let mut r = c.ctl_cmd();
    r.args(["exec", "ph", "--", "getevent", "-t", "/dev/input/event0"]);
    let reader = Reader::start(r);
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        tap(&reader, quiet(&["shell", "input", "tap", "100", "200"]));
    }
    let (mut a_ev, mut a_done, mut p_ev, mut p_done) = (vec![], vec![], vec![], vec![]);
    for i in 0..n {
        let x = (50 + i % 300).to_string();
        let (e, d) = tap(&reader, quiet(&["shell", "input", "tap", &x, "200"]));
        a_ev.push(e);
        a_done.push(d);
        let mut p = c.ctl_cmd();
        p.args(["input", "tap", &x, "200"]);
        let (e, d) = tap(&reader, p);
        p_ev.push(e);
        p_done.push(d);
    }
    let (ae, ad, pe, pd) = (
        summarize(&a_ev),
        summarize(&a_done),
        summarize(&p_ev),
        summarize(&p_done),
    );
    println!("taps in ms, {n} runs each (event = first line of getevent -t in the VP)");
    println!("  adb shell input tap → event          {ae}");
    println!("  adb shell input tap, command ends    {ad}");
    println!("  cellctl input tap → event            {pe}");
    println!("  cellctl input tap, command ends      {pd}");
    println!(
        "ratio of medians: adb input tap / cellctl input tap (to the event) = {:.2}x",
        ae.p50 / pe.p50
    );
    drop(reader);
    let json = serde_json::json!({
        "bench": "adb",
        "n": n,
        "png_bytes": png_bytes,
        "adb_screencap_ms": summary_json(&cp),
        "cellctl_screenshot_ms": summary_json(&ap),
        "adb_shell_true_ms": summary_json(&fl),
        "ratio_screencap_vs_cellctl_screenshot": cp.p50 / ap.p50,
        "adb_input_tap_to_event_ms": summary_json(&ae),
        "adb_input_tap_command_ms": summary_json(&ad),
        "cellctl_input_tap_to_event_ms": summary_json(&pe),
        "cellctl_input_tap_command_ms": summary_json(&pd),
        "ratio_adb_tap_vs_cellctl_tap": ae.p50 / pe.p50,
    });
    println!("{json}");
    let _ = adb.run(&["kill-server"]);
    0
}
