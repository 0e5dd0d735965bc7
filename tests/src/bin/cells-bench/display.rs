//! `cells-bench display [N]`: the foreground/background benchmarks.
//!
//! - switch round trip: `cellctl switch` (the command) and the D-Bus
//!   `Switch` call from a connected client, N switches among three VPs;
//! - time from a switch request until the panel shows the new foreground's
//!   frame (measured by the compositor), at 720x1280 and 1080x2400, next to
//!   a plain copy of one frame (the peer: the least a switch must do);
//! - input latency: from the D-Bus `InputKey` call to the event being
//!   readable in the foreground VP's device, next to a plain pipe write/read;
//! - CPU share of one core used by the compositor while the foreground app
//!   redraws every frame at 60 fps, next to a plain copy of every frame.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use cells_tests::stats::{summarize, Summary};
use cells_tests::Cells;
use cellsd::api::Manager1Proxy;

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

pub async fn proxy(c: &Cells) -> (zbus::Connection, Manager1Proxy<'static>) {
    c.dbus().await
}

fn display_u64(
    info: &std::collections::HashMap<String, zbus::zvariant::OwnedValue>,
    key: &str,
) -> u64 {
    info.get(key)
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(0)
}

fn recipes_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("cells-bench-recipes-{}", std::process::id()))
}

/// A daemon with `panel`, three VPs whose framebuffers each hold a different
/// full frame, and no persona service (so that the benchmark is the only
/// reader of the VPs' input devices).
fn setup(panel: &str) -> Cells {
    let recipes = cells_tests::copy_recipes(&recipes_dir());
    let _ = std::fs::remove_file(recipes.join("minimal/files/system/etc/services.d/persona"));
    let c = Cells::with_args(Some(recipes), &["--panel", panel]);
    c.ok(&["template", "build", "minimal"]);
    for (vp, color) in [("a", "ff0000"), ("b", "00ff00"), ("c", "0000ff")] {
        c.ok(&["create", vp, "--template", "minimal", "--color", color]);
        c.ok(&["start", vp]);
        c.ok(&[
            "exec",
            vp,
            "--",
            "/system/bin/persona",
            "--animate",
            "--frames",
            "1",
        ]);
    }
    c
}

fn line(label: &str, s: &Summary) {
    println!("  {label:<34} {s}");
}

/// Median time of a plain copy of `bytes` (the peer of a switch).
fn plain_copy_ms(bytes: usize, n: usize) -> Summary {
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    let mut v = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        dst.copy_from_slice(&src);
        v.push(ms(t));
        std::hint::black_box(&dst[i % bytes]);
    }
    summarize(&v)
}

/// Median time of a copy of one of three frames in turn into a fourth:
/// the working set of a switch among three VPs (their frames are not in
/// the cache as the one frame of [`plain_copy_ms`] is).
fn three_frames_copy_ms(bytes: usize, n: usize) -> Summary {
    let srcs: Vec<Vec<u8>> = (1..=3u8).map(|b| vec![b; bytes]).collect();
    let mut dst = vec![0u8; bytes];
    let mut v = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        dst.copy_from_slice(&srcs[i % 3]);
        v.push(ms(t));
        std::hint::black_box(&dst[i % bytes]);
    }
    summarize(&v)
}

fn switch_bench(panel: &str, bytes: usize, n: usize) -> serde_json::Value {
    let c = setup(panel);
    let rt = rt();
    let (rtt, panel_ms, version) = rt.block_on(async {
        let (_conn, p) = proxy(&c).await;
        let order = ["a", "b", "c"];
        let (mut rtt, mut panel_ms, mut version) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            // Peer: a D-Bus call that does nothing (Version).
            let t = Instant::now();
            p.version().await.expect("Version");
            version.push(ms(t));
            let vp = order[i % 3];
            let t = Instant::now();
            p.switch(vp).await.expect("Switch");
            rtt.push(ms(t));
            let info = p.display_info().await.expect("DisplayInfo");
            panel_ms.push(display_u64(&info, "last_switch_us") as f64 / 1000.0);
        }
        (rtt, panel_ms, version)
    });
    let mut cellctl = Vec::new();
    for i in 0..n {
        let vp = ["a", "b", "c"][i % 3];
        let t = Instant::now();
        let o = c.ctl(&["switch", vp]);
        cellctl.push(ms(t));
        assert_eq!(o.code, 0, "{o:?}");
    }
    let (a, b, p, copy, three, noop) = (
        summarize(&cellctl),
        summarize(&rtt),
        summarize(&panel_ms),
        plain_copy_ms(bytes, n),
        three_frames_copy_ms(bytes, n),
        summarize(&version),
    );
    println!("switch at {panel}, {n} switches (ms):");
    line("cellctl switch (command)", &a);
    line("D-Bus Switch round trip", &b);
    line("peer: D-Bus Version round trip", &noop);
    line("switch request -> panel shows frame", &p);
    line("peer: plain copy of one frame", &copy);
    line("peer: copy of one of 3 frames", &three);
    println!(
        "  ratio panel update / plain copy (p50) = {:.2}x, / copy of one of 3 frames = {:.2}x; \
         Switch round trip / Version (p50) = {:.2}x",
        p.p50 / copy.p50,
        p.p50 / three.p50,
        b.p50 / noop.p50
    );
    serde_json::json!({
        "panel": panel,
        "cellctl_switch_ms": crate::summary_json(&a),
        "dbus_switch_ms": crate::summary_json(&b),
        "dbus_version_ms": crate::summary_json(&noop),
        "panel_updated_ms": crate::summary_json(&p),
        "plain_frame_copy_ms": crate::summary_json(&copy),
        "three_frames_copy_ms": crate::summary_json(&three),
        "ratio_panel_vs_copy": p.p50 / copy.p50,
        "ratio_panel_vs_three_frames_copy": p.p50 / three.p50,
        "ratio_switch_vs_version": b.p50 / noop.p50,
    })
}

fn input_bench(n: usize) -> serde_json::Value {
    let c = setup("headless:720x1280");
    c.ok(&["switch", "a"]);
    let pid = c.status("a")["pid"].as_u64().expect("pid");
    // The VP's keys device, read from the host through the VP's root.
    let path = format!("/proc/{pid}/root/dev/input/event1");
    let mut dev = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .expect("open the VP's keys device");
    let (tx, rx) = std::sync::mpsc::channel::<Instant>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 48];
        while dev.read_exact(&mut buf).is_ok() {
            if tx.send(Instant::now()).is_err() {
                break;
            }
        }
    });
    // The raw injection socket: a message of input_events, like a device.
    let sock = c.run.join("input.sock");
    let raw = {
        use cellsd::devices::input::event::{InputEvent, EV_KEY};
        use cellsd::devices::input::inject::{message, KIND_KEYS};
        // SAFETY: socket(2) returns a new fd or -1.
        let fd =
            unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0);
        let c_path = std::ffi::CString::new(sock.to_string_lossy().as_bytes()).expect("path");
        // SAFETY: a zeroed sockaddr_un with the NUL-terminated path.
        unsafe {
            let mut addr: libc::sockaddr_un = std::mem::zeroed();
            addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
            for (i, b) in c_path.as_bytes_with_nul().iter().enumerate() {
                addr.sun_path[i] = *b as libc::c_char;
            }
            let r = libc::connect(
                fd,
                (&addr as *const libc::sockaddr_un).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            );
            assert_eq!(r, 0, "connect {}", sock.display());
        }
        let mut v = Vec::new();
        for i in 0..n + 10 {
            let m = message(
                KIND_KEYS,
                &[
                    InputEvent::new(EV_KEY, 30, (i % 2 == 0) as i32),
                    InputEvent::syn(),
                ],
            );
            let t = Instant::now();
            // SAFETY: sending our buffer on our socket.
            let sent = unsafe { libc::send(fd, m.as_ptr().cast(), m.len(), 0) };
            assert_eq!(sent, m.len() as isize);
            let got = rx
                .recv_timeout(Duration::from_secs(5))
                .expect("event readable");
            if i >= 10 {
                v.push(got.duration_since(t).as_secs_f64() * 1e6);
            }
        }
        // SAFETY: closing our socket.
        unsafe { libc::close(fd) };
        v
    };
    let rt = rt();
    let lat = rt.block_on(async {
        let (_conn, p) = proxy(&c).await;
        let mut v = Vec::new();
        for i in 0..n + 10 {
            let action = if i % 2 == 0 { "down" } else { "up" };
            let t = Instant::now();
            p.input_key("A", action).await.expect("InputKey");
            let got = rx
                .recv_timeout(Duration::from_secs(5))
                .expect("event readable");
            if i >= 10 {
                v.push(got.duration_since(t).as_secs_f64() * 1e6);
            }
        }
        v
    });
    drop(c);
    let _ = reader.join();
    // Peer: a plain pipe, writer here, reader on another thread.
    let (mut r, mut w) = std::io::pipe().expect("pipe");
    let (ptx, prx) = std::sync::mpsc::channel::<Instant>();
    let pr = std::thread::spawn(move || {
        let mut buf = [0u8; 48];
        while r.read_exact(&mut buf).is_ok() {
            if ptx.send(Instant::now()).is_err() {
                break;
            }
        }
    });
    let mut pipe = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        std::io::Write::write_all(&mut w, &[0u8; 48]).expect("pipe write");
        let got = prx.recv().expect("pipe read");
        pipe.push(got.duration_since(t).as_secs_f64() * 1e6);
    }
    drop(w);
    let _ = pr.join();
    let (a, r, b) = (summarize(&lat), summarize(&raw), summarize(&pipe));
    println!("input latency, injection -> readable in the VP's device, {n} events (us):");
    line("input.sock message -> readable", &r);
    line("D-Bus InputKey -> readable", &a);
    line("peer: plain pipe write -> read", &b);
    serde_json::json!({
        "socket_latency_us": crate::summary_json(&r),
        "dbus_latency_us": crate::summary_json(&a),
        "plain_pipe_us": crate::summary_json(&b),
        "ratio_socket_vs_pipe": r.p50 / b.p50,
    })
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn cpu_bench(secs: u64) -> serde_json::Value {
    let c = setup("headless:720x1280");
    c.ok(&["switch", "a"]);
    let rt = rt();
    let frames = (secs * 60).to_string();
    let (share, fps) = rt.block_on(async {
        let (_conn, p) = proxy(&c).await;
        let mut app = c
            .ctl_cmd()
            .args([
                "exec",
                "a",
                "--",
                "/system/bin/persona",
                "--animate",
                "--frames",
                &frames,
            ])
            .spawn()
            .expect("animate");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let i0 = p.display_info().await.expect("info");
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs - 1)).await;
        let i1 = p.display_info().await.expect("info");
        let wall = t.elapsed().as_secs_f64();
        let _ = app.wait();
        let cpu = (display_u64(&i1, "compositor_cpu_ns") - display_u64(&i0, "compositor_cpu_ns"))
            as f64
            / 1e9;
        let shown = display_u64(&i1, "frames_shown") - display_u64(&i0, "frames_shown");
        (cpu / wall, shown as f64 / wall)
    });
    // Peer: copy a whole frame 60 times a second on one thread.
    let peer = std::thread::spawn(move || {
        let bytes = 720 * 1280 * 4;
        let src = vec![1u8; bytes];
        let mut dst = vec![0u8; bytes];
        let c0 = thread_cpu_ns();
        let t = Instant::now();
        let mut next = Instant::now();
        while t.elapsed() < Duration::from_secs(secs - 1) {
            dst.copy_from_slice(&src);
            std::hint::black_box(&dst[7]);
            next += Duration::from_nanos(16_666_667);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        (thread_cpu_ns() - c0) as f64 / 1e9 / t.elapsed().as_secs_f64()
    })
    .join()
    .unwrap_or(f64::NAN);
    // Peer 2: the same copy of a frame that another thread draws in full
    // 60 times a second (as the VP's app does): the frame comes from
    // another core's cache or from memory, not from this one's.
    let drawn = drawn_frame_copy_share(secs);
    println!("frame path CPU at 60 fps, app redrawing every frame, 720x1280:");
    println!(
        "  compositor: {:.1}% of a core, {fps:.1} frames shown/s",
        share * 100.0
    );
    println!(
        "  peer: plain copy of every frame: {:.1}% of a core",
        peer * 100.0
    );
    println!(
        "  peer: copy of every frame another thread draws: {:.1}% of a core",
        drawn * 100.0
    );
    println!(
        "  ratio compositor / plain copy = {:.2}x, / copy of a drawn frame = {:.2}x",
        share / peer,
        share / drawn
    );
    serde_json::json!({
        "compositor_core_share": share,
        "frames_shown_per_s": fps,
        "plain_copy_core_share": peer,
        "drawn_frame_copy_core_share": drawn,
        "ratio_vs_plain_copy": share / peer,
        "ratio_vs_drawn_frame_copy": share / drawn,
    })
}

/// CPU share of one thread copying, 60 times a second, a 720x1280 frame
/// that another thread redraws in full 60 times a second.
fn drawn_frame_copy_share(secs: u64) -> f64 {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let bytes = 720 * 1280 * 4;
    let frame: Arc<Vec<AtomicU64>> = Arc::new((0..bytes / 8).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let (f, st) = (Arc::clone(&frame), Arc::clone(&stop));
    let drawer = std::thread::spawn(move || {
        let mut n = 0u64;
        let mut next = Instant::now();
        while !st.load(Ordering::Relaxed) {
            n = n.wrapping_add(0x0101_0101_0101_0101);
            for w in f.iter() {
                w.store(n, Ordering::Relaxed);
            }
            next += Duration::from_nanos(16_666_667);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    });
    let f = Arc::clone(&frame);
    let share = std::thread::spawn(move || {
        let mut dst = vec![0u8; bytes];
        let c0 = thread_cpu_ns();
        let t = Instant::now();
        let mut next = Instant::now();
        while t.elapsed() < Duration::from_secs(secs - 1) {
            // SAFETY: copying the bytes of the frame (within its length)
            // while the drawer stores into it, as the compositor copies a
            // VP's frame out of a mapping: the copy may hold a mix.
            unsafe {
                std::ptr::copy_nonoverlapping(f.as_ptr() as *const u8, dst.as_mut_ptr(), bytes)
            };
            std::hint::black_box(&dst[7]);
            next += Duration::from_nanos(16_666_667);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        (thread_cpu_ns() - c0) as f64 / 1e9 / t.elapsed().as_secs_f64()
    })
    .join()
    .unwrap_or(f64::NAN);
    stop.store(true, Ordering::Relaxed);
    let _ = drawer.join();
    share
}

pub fn bench(n: usize) -> i32 {
    let small = switch_bench("headless:720x1280", 720 * 1280 * 4, n);
    let large = switch_bench("headless:1080x2400", 1080 * 2400 * 4, n);
    let input = input_bench(n);
    let cpu = cpu_bench(10);
    let _ = std::fs::remove_dir_all(recipes_dir());
    println!(
        "{}",
        serde_json::json!({"bench": "display", "runs": n, "switch_720x1280": small,
            "switch_1080x2400": large, "input": input, "cpu": cpu})
    );
    0
}
