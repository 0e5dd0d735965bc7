//! `cells-bench power [N]`: the power benchmarks.
//!
//! - a wake_lock write through a VP's /sys/power (the FUSE file its monitor
//!   serves; written through the init's root, the VP's own mount), lock and
//!   unlock alternating, next to the same write to a plain tmpfs file; and
//!   how long after the write cellsd's aggregated state (D-Bus `Power`)
//!   shows the lock;
//! - freeze and thaw of a VP running its persona and a shell loop: D-Bus
//!   `Freeze`/`Thaw` round trips and the time cellsd measured, next to
//!   stopping and continuing the same processes with SIGSTOP/SIGCONT;
//! - the D-Bus `Switch` to a frozen VP (it thaws inside the switch) next to
//!   the switch to a running one.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use cells_tests::stats::{summarize, Summary};
use cells_tests::Cells;

use crate::display::{proxy, rt};

fn us(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e6
}

fn line(label: &str, s: &Summary) {
    println!("  {label:<40} {s}");
}

fn open_w(path: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .unwrap_or_else(|e| panic!("open {path}: {e}"))
}

fn wake_lock_bench(c: &Cells, pid: u64, n: usize) -> serde_json::Value {
    let dir = format!("/proc/{pid}/root/sys/power");
    let mut lock = open_w(&format!("{dir}/wake_lock"));
    let mut unlock = open_w(&format!("{dir}/wake_unlock"));
    let (mut w_lock, mut w_unlock) = (Vec::new(), Vec::new());
    for i in 0..n + 20 {
        let name = format!("bench{}", i % 8);
        let t = Instant::now();
        lock.write_all(name.as_bytes()).expect("wake_lock write");
        let a = us(t);
        let t = Instant::now();
        unlock
            .write_all(name.as_bytes())
            .expect("wake_unlock write");
        let b = us(t);
        // The first writes warm the path up.
        if i >= 20 {
            w_lock.push(a);
            w_unlock.push(b);
        }
    }
    // Peer: the same writes to a regular file on tmpfs.
    let plain_path = c.root.join("plain-wake_lock");
    std::fs::write(&plain_path, b"").expect("plain file");
    let mut plain = std::fs::OpenOptions::new()
        .write(true)
        .open(&plain_path)
        .expect("plain file");
    let mut w_plain = Vec::new();
    for i in 0..n + 20 {
        let name = format!("bench{}", i % 8);
        let t = Instant::now();
        plain.write_all(name.as_bytes()).expect("write");
        if i >= 20 {
            w_plain.push(us(t));
        }
    }
    // Until cellsd's aggregated state shows it (polling D-Bus Power).
    let seen = rt().block_on(async {
        let (_conn, p) = proxy(c).await;
        let mut v = Vec::new();
        for i in 0..(n / 10).max(20) {
            let name = format!("seen{i}");
            let t = Instant::now();
            lock.write_all(name.as_bytes()).expect("wake_lock write");
            loop {
                let info = p.power().await.expect("Power");
                if info.wakelocks.get("a").is_some_and(|l| l.contains(&name)) {
                    break;
                }
            }
            v.push(us(t));
            unlock.write_all(name.as_bytes()).expect("unlock");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        v
    });
    let (l, u, pl, s) = (
        summarize(&w_lock),
        summarize(&w_unlock),
        summarize(&w_plain),
        summarize(&seen),
    );
    println!("wake_lock writes through the VP's /sys/power, {n} each (µs):");
    line("write NAME > wake_lock", &l);
    line("write NAME > wake_unlock", &u);
    line("peer: the same write to a tmpfs file", &pl);
    line("write -> cellsd's Power shows it", &s);
    println!(
        "  ratio wake_lock write / tmpfs write (p50) = {:.1}x",
        l.p50 / pl.p50
    );
    serde_json::json!({
        "wake_lock_write_us": crate::summary_json(&l),
        "wake_unlock_write_us": crate::summary_json(&u),
        "plain_tmpfs_write_us": crate::summary_json(&pl),
        "write_to_cellsd_us": crate::summary_json(&s),
        "ratio_wake_lock_vs_tmpfs": l.p50 / pl.p50,
    })
}

/// Pids of a VP's processes (its cgroup).
fn vp_pids(c: &Cells, vp: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for d in c.vp_cgroup_dirs(vp) {
        if let Ok(s) = std::fs::read_to_string(d.join("cgroup.procs")) {
            for p in s.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// The state letter of /proc/PID/stat.
fn proc_state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Peer of freeze/thaw: SIGSTOP every process and wait until each is
/// stopped; SIGCONT and wait until none is.
fn signal_stop_cont(pids: &[i32], n: usize) -> (Summary, Summary) {
    let (mut stop, mut cont) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        for p in pids {
            // SAFETY: signalling the benchmark VP's own processes.
            unsafe { libc::kill(*p, libc::SIGSTOP) };
        }
        while !pids.iter().all(|p| proc_state(*p).is_none_or(|s| s == 'T')) {
            std::hint::spin_loop();
        }
        stop.push(us(t));
        let t = Instant::now();
        for p in pids {
            // SAFETY: as above.
            unsafe { libc::kill(*p, libc::SIGCONT) };
        }
        while pids.iter().any(|p| proc_state(*p) == Some('T')) {
            std::hint::spin_loop();
        }
        cont.push(us(t));
        std::thread::sleep(Duration::from_millis(5));
    }
    (summarize(&stop), summarize(&cont))
}

fn freeze_bench(c: &Cells, n: usize) -> serde_json::Value {
    let pids = vp_pids(c, "b");
    let r = rt().block_on(async {
        let (_conn, p) = proxy(c).await;
        let (mut f_rtt, mut f_in, mut t_rtt, mut t_in) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut sw_running, mut sw_frozen) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let t = Instant::now();
            let inside = p.freeze("b").await.expect("Freeze");
            f_rtt.push(us(t));
            f_in.push(inside as f64);
            let t = Instant::now();
            let inside = p.thaw("b").await.expect("Thaw");
            t_rtt.push(us(t));
            t_in.push(inside as f64);
            tokio::time::sleep(Duration::from_millis(5)).await;
            // Switch to b while it runs, and back.
            let t = Instant::now();
            p.switch("b").await.expect("Switch");
            sw_running.push(us(t));
            p.switch("a").await.expect("Switch");
            // Switch to b while it is frozen (thawed within the switch).
            p.freeze("b").await.expect("Freeze");
            let t = Instant::now();
            p.switch("b").await.expect("Switch");
            sw_frozen.push(us(t));
            p.switch("a").await.expect("Switch");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (f_rtt, f_in, t_rtt, t_in, sw_running, sw_frozen)
    });
    let (f_rtt, f_in, t_rtt, t_in, sw_r, sw_f) = (
        summarize(&r.0),
        summarize(&r.1),
        summarize(&r.2),
        summarize(&r.3),
        summarize(&r.4),
        summarize(&r.5),
    );
    let (stop, cont) = signal_stop_cont(&pids, n);
    println!(
        "freeze and thaw of a VP with {} processes, {n} each (µs):",
        pids.len()
    );
    line("D-Bus Freeze round trip", &f_rtt);
    line("  freeze inside cellsd", &f_in);
    line("D-Bus Thaw round trip", &t_rtt);
    line("  thaw inside cellsd", &t_in);
    line("peer: SIGSTOP all, wait until stopped", &stop);
    line("peer: SIGCONT all, wait until running", &cont);
    println!(
        "  ratio freeze / SIGSTOP (p50) = {:.2}x, thaw / SIGCONT (p50) = {:.2}x",
        f_in.p50 / stop.p50,
        t_in.p50 / cont.p50
    );
    println!("switch, {n} each (µs):");
    line("D-Bus Switch to a running VP", &sw_r);
    line("D-Bus Switch to a frozen VP", &sw_f);
    println!(
        "  ratio frozen / running (p50) = {:.2}x",
        sw_f.p50 / sw_r.p50
    );
    serde_json::json!({
        "processes": pids.len(),
        "dbus_freeze_us": crate::summary_json(&f_rtt),
        "freeze_in_cellsd_us": crate::summary_json(&f_in),
        "dbus_thaw_us": crate::summary_json(&t_rtt),
        "thaw_in_cellsd_us": crate::summary_json(&t_in),
        "sigstop_us": crate::summary_json(&stop),
        "sigcont_us": crate::summary_json(&cont),
        "ratio_freeze_vs_sigstop": f_in.p50 / stop.p50,
        "ratio_thaw_vs_sigcont": t_in.p50 / cont.p50,
        "switch_to_running_us": crate::summary_json(&sw_r),
        "switch_to_frozen_us": crate::summary_json(&sw_f),
        "ratio_switch_frozen_vs_running": sw_f.p50 / sw_r.p50,
    })
}

pub fn bench(n: usize) -> i32 {
    let c = Cells::new();
    for vp in ["a", "b"] {
        c.ok(&["create", vp, "--template", "minimal"]);
        c.ok(&["start", vp]);
    }
    // b does something while it runs: a shell loop next to its persona.
    c.ok(&[
        "exec",
        "b",
        "--",
        "sh",
        "-c",
        "(while true; do sleep 0.01; done) </dev/null >/dev/null 2>&1 &",
    ]);
    let pid = c.status("a")["pid"].as_u64().expect("pid");
    let locks = wake_lock_bench(&c, pid, n);
    let freeze = freeze_bench(&c, (n / 20).max(20));
    println!(
        "{}",
        serde_json::json!({"bench": "power", "runs": n, "wake_lock": locks, "freeze": freeze})
    );
    0
}
