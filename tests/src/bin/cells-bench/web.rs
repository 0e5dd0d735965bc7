//! `cells-bench web [N]`: the web console in Debian's chromium (headless,
//! puppeteer-core): a VP's draw until the page has the frame (p50/p99 over
//! N draws of an 8x8 block written into the VP's framebuffer), frames per
//! second and bandwidth while the foreground redraws its whole frame 60
//! times a second, cellsd's CPU per viewer, with 1 and 3 viewers. Peer:
//! `cellctl screenshot` (a whole-panel PNG), what a screenshot-polling
//! viewer would pay per frame.

use std::time::{Duration, Instant};

use cells_tests::browser::Browser;
use cells_tests::stats::summarize;
use cells_tests::Cells;

use crate::{ms, summary_json};

fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit(") ").next()?.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

pub fn bench(n: usize) -> i32 {
    if !Browser::available() {
        println!("web: skipped (chromium or puppeteer-core missing: scripts/install-deps)");
        return 0;
    }
    let c = Cells::with_args(None, &["--web", "127.0.0.1:0"]);
    c.ok(&["template", "build", "minimal"]);
    for (vp, color) in [("still", "202020"), ("anim", "ff0000")] {
        c.ok(&["create", vp, "--template", "minimal", "--color", color]);
        c.ok(&["start", vp]);
    }
    c.ok(&["switch", "still"]);
    let url = c.ok(&["web"]).trim().to_string();
    let daemon = c.daemon_pid().unwrap_or(0);
    let mut b = Browser::start();
    b.ask(serde_json::json!({"op": "open", "url": url}));
    b.ask(serde_json::json!({"op": "pixel", "x": 5, "y": 600, "rgb": [32, 32, 32]}));
    std::thread::sleep(Duration::from_millis(500));

    // Draw -> frame in the page: an 8x8 block written into still's
    // framebuffer (from the host, through its /proc root) at a known time.
    let init = c.status("still")["pid"].as_u64().unwrap_or(0);
    let fb = format!("/proc/{init}/root/dev/fb0");
    let mut lat = Vec::new();
    for i in 0..n + 2 {
        b.send(serde_json::json!({"op": "until-frame", "timeout": 2000}));
        std::thread::sleep(Duration::from_millis(60));
        let v = if i % 2 == 0 { 0xffu8 } else { 0x10 };
        let px: Vec<u8> = (0..8).flat_map(|_| [v, v, v, 0]).collect();
        let t = Instant::now();
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&fb) {
            for row in 0..8u64 {
                let _ = nix::sys::uio::pwrite(&f, &px, ((700 + row) * 720 * 4 + 400 * 4) as i64);
            }
        }
        let r = b.recv();
        if i >= 2 && r["frames"].as_u64().unwrap_or(0) > 0 {
            lat.push(ms(t));
        }
    }
    // Frames, bytes and cellsd's CPU while anim redraws every frame.
    c.ok(&["switch", "anim"]);
    let mut anim = c
        .ctl_cmd()
        .args([
            "exec",
            "anim",
            "--",
            "/system/bin/persona",
            "--animate",
            "--frames",
            "100000",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("animate");
    std::thread::sleep(Duration::from_millis(1000));
    let watch = |viewers: &mut [Browser]| {
        let tick = 100.0; // USER_HZ
        let c0 = cpu_ticks(daemon);
        for v in viewers.iter_mut() {
            v.send(serde_json::json!({"op": "watch", "ms": 5000}));
        }
        let rs: Vec<serde_json::Value> = viewers.iter_mut().map(|v| v.recv()).collect();
        let cpu = (cpu_ticks(daemon) - c0) as f64 / tick / 5.0;
        let fps: Vec<f64> = rs
            .iter()
            .map(|r| r["frames"].as_f64().unwrap_or(0.0) * 1000.0 / r["ms"].as_f64().unwrap_or(1.0))
            .collect();
        let kbps: Vec<f64> = rs
            .iter()
            .map(|r| {
                r["bytes"].as_f64().unwrap_or(0.0)
                    / 1024.0
                    / (r["ms"].as_f64().unwrap_or(1.0) / 1000.0)
            })
            .collect();
        (fps, kbps, cpu)
    };
    let (fps1, kb1, cpu1) = watch(std::slice::from_mut(&mut b));
    let mut more = vec![Browser::start(), Browser::start()];
    for v in more.iter_mut() {
        v.ask(serde_json::json!({"op": "open", "url": url}));
    }
    let mut all: Vec<Browser> = Vec::new();
    all.push(b);
    all.append(&mut more);
    std::thread::sleep(Duration::from_millis(1000));
    let (fps3, kb3, cpu3) = watch(&mut all);
    drop(all);
    let _ = anim.kill();
    let _ = anim.wait();
    // Peer: a whole-panel PNG by `cellctl screenshot`.
    let shot = c.root.join("shot.png");
    let mut peer = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        c.ok(&["screenshot", "-o", shot.to_str().unwrap_or_default()]);
        peer.push(ms(t));
    }
    let (l, p) = (summarize(&lat), summarize(&peer));
    println!("web console (chromium headless, puppeteer-core), panel 720x1280");
    println!("  VP draw (8x8) -> frame in the page   {l}");
    println!("  cellctl screenshot (peer, full PNG)  {p}");
    println!(
        "  1 viewer, full-frame animation: {:.1} fps, {:.0} KiB/s ({:.1} KiB per frame), cellsd {:.0}% of a core",
        fps1[0],
        kb1[0],
        kb1[0] / fps1[0].max(0.1),
        cpu1 * 100.0
    );
    println!(
        "  3 viewers: {} fps, {} KiB/s each, cellsd {:.0}% of a core ({:.0}% per viewer)",
        fps3.iter()
            .map(|f| format!("{f:.1}"))
            .collect::<Vec<_>>()
            .join("/"),
        kb3.iter()
            .map(|k| format!("{k:.0}"))
            .collect::<Vec<_>>()
            .join("/"),
        cpu3 * 100.0,
        cpu3 * 100.0 / 3.0
    );
    println!(
        "ratio of medians: draw -> page / screenshot = {:.2}x",
        l.p50 / p.p50
    );
    let json = serde_json::json!({
        "bench": "web",
        "draw_to_page_ms": summary_json(&l),
        "screenshot_ms": summary_json(&p),
        "fps_1_viewer": fps1[0],
        "kib_per_s_1_viewer": kb1[0],
        "cellsd_cpu_1_viewer": cpu1,
        "fps_3_viewers": fps3,
        "kib_per_s_3_viewers": kb3,
        "cellsd_cpu_3_viewers": cpu3,
    });
    println!("{json}");
    0
}
