//! The reliability suites of cells (issue 11). Run them through
//! `tests/reliability/run chaos|soak|concurrency|fuzz|density [N]`; each
//! prints `N passed, N failed` and its figures, and exits non-zero on a
//! failure.
//!
//! - chaos: N trials; each starts an operation (create, start, stop,
//!   destroy, switch, exec writing /data, template build, port add), kills
//!   cellsd with SIGKILL at a random point of it (and sometimes a VP's
//!   monitor), restarts cellsd and checks that nothing acknowledged was lost
//!   and nothing was left behind.
//! - soak: N cycles of create, start, exec, switch, input, screenshot, adb
//!   shell, stop, destroy; leaks of mounts, net namespaces, links, cgroups,
//!   fds, FUSE connections, threads and RSS.
//! - concurrency: N clients for 60 s (CELLS_SECS) of random calls; one
//!   foreground at every sampled instant, every call answered, p50/p99.
//! - fuzz: N generated inputs per parser (see fuzz.rs).
//! - density: N networked VPs created and started; times, memory per VP,
//!   `cellctl list` and switch latency, stop of all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use cells_tests::stats::summarize;
use cells_tests::Cells;
use serde_json::Value;

mod fuzz;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = |d: usize| args.get(2).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (passed, failed) = match args.get(1).map(String::as_str) {
        Some("chaos") => chaos(n(100)),
        Some("soak") => soak(n(1000)),
        Some("concurrency") => concurrency(n(64)),
        Some("fuzz") => fuzz::run(n(1_000_000), args.get(3).map(String::as_str)),
        Some("density") => density(n(1000)),
        _ => {
            eprintln!("usage: cells-reliability chaos|soak|concurrency|fuzz|density [N]");
            std::process::exit(2);
        }
    };
    println!("{passed} passed, {failed} failed");
    std::process::exit(if failed == 0 { 0 } else { 1 });
}

struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let seed = std::env::var("CELLS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        println!("seed {seed} (rerun with CELLS_SEED={seed})");
        Self(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        (!v.is_empty()).then(|| &v[self.below(v.len())])
    }
}

fn list(c: &Cells) -> Vec<Value> {
    serde_json::from_str::<Value>(&c.ctl(&["list", "--json"]).stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

fn names_in(l: &[Value], state: Option<&str>) -> Vec<String> {
    l.iter()
        .filter(|v| state.is_none_or(|s| v["state"] == s))
        .filter_map(|v| v["name"].as_str().map(String::from))
        .collect()
}

/// Monitors of this harness's daemon (their log, fd 2, is in its folders).
fn monitors(c: &Cells) -> Vec<i32> {
    let root = c.root.to_string_lossy().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmd.split(|b| *b == 0).nth(1) != Some(b"__monitor".as_slice()) {
            continue;
        }
        let log = std::fs::read_link(format!("/proc/{pid}/fd/2")).unwrap_or_default();
        if log.to_string_lossy().starts_with(&root) {
            out.push(pid);
        }
    }
    out
}

/// Child cgroups of the harness's parent (every hierarchy, deduplicated).
fn cgroups(c: &Cells) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Ok(h) = cellsd::cgroup::Hierarchy::detect() {
        for d in h.dirs(Path::new(&c.cgroup_parent)) {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    out.insert(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
    }
    out
}

/// What is left that should not be: host mounts of the harness, cgroups,
/// links and monitors that no running VP (or the one spare) accounts for.
fn leftovers(c: &Cells) -> Vec<String> {
    let running = names_in(&list(c), Some("running"));
    let mut bad = Vec::new();
    let mounts = c.host_mounts();
    if !mounts.is_empty() {
        bad.push(format!("host mounts: {mounts:?}"));
    }
    let extra: Vec<String> = cgroups(c)
        .into_iter()
        .filter(|g| !running.contains(g) && !g.starts_with(".spare-"))
        .collect();
    if !extra.is_empty() {
        bad.push(format!("cgroups without a running VP: {extra:?}"));
    }
    let spares = cgroups(c)
        .iter()
        .filter(|g| g.starts_with(".spare-"))
        .count();
    if spares > 1 {
        bad.push(format!("{spares} spare cgroups"));
    }
    let ports = c.network_links().len().saturating_sub(1);
    if ports > running.len() {
        bad.push(format!(
            "{ports} VP links for {} running VPs",
            running.len()
        ));
    }
    let m = monitors(c).len();
    if m > running.len() + 1 {
        bad.push(format!(
            "{m} monitors for {} running VPs (+1 spare)",
            running.len()
        ));
    }
    bad
}

fn settled_leftovers(c: &Cells) -> Vec<String> {
    let mut last = Vec::new();
    Cells::wait_until(Duration::from_secs(8), || {
        last = leftovers(c);
        last.is_empty()
    });
    last
}

fn ctl_child(c: &Cells, args: &[String]) -> Child {
    c.ctl_cmd()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn cellctl")
}

/// Values /data/f may hold: what was last acknowledged, and what a write
/// cut short may have made of it.
#[derive(Default, Clone)]
struct Model {
    /// Acknowledged VPs -> allowed contents of /data/f (None: absent).
    vps: BTreeMap<String, Vec<Option<String>>>,
    /// VPs whose create or destroy was cut short: either way is right.
    unsure: BTreeSet<String>,
}

fn read_f(c: &Cells, vp: &str) -> Result<Option<String>, String> {
    let o = c.sh(vp, "cat /data/f 2>/dev/null || echo ABSENT");
    if o.code != 0 {
        return Err(format!("exec into {vp}: {o:?}"));
    }
    let t = o.stdout.trim().to_string();
    Ok(if t == "ABSENT" { None } else { Some(t) })
}

fn chaos(trials: usize) -> (usize, usize) {
    let mut rng = Rng::seeded();
    let mut c = Cells::new();
    let mut model = Model::default();
    let (mut passed, mut failed) = (0, 0);
    let mut next = 0;
    let mut killed_monitors = 0;
    let mut by_op: BTreeMap<&str, usize> = BTreeMap::new();
    for t in 0..trials {
        let l = list(&c);
        let defined = names_in(&l, None);
        let running = names_in(&l, Some("running"));
        let stopped = names_in(&l, Some("stopped"));
        let ops = [
            "create", "start", "stop", "destroy", "switch", "exec", "build", "port",
        ];
        let mut op = *rng.pick(&ops).unwrap_or(&"create");
        if defined.len() < 2 || (defined.len() < 6 && op == "destroy") {
            op = "create";
        }
        let target = match op {
            "start" | "destroy" => rng.pick(&stopped).cloned(),
            "stop" | "switch" | "exec" => rng.pick(&running).cloned(),
            "port" => rng.pick(&defined).cloned(),
            _ => None,
        };
        let value = format!("trial-{t}");
        let args: Vec<String> = match (op, &target) {
            ("create", _) => {
                next += 1;
                vec!["create".into(), format!("v{next}"), "--template".into(), "minimal".into(), "--disk".into(), "128M".into()]
            }
            ("build", _) => vec!["template".into(), "build".into(), "minimal".into()],
            ("exec", Some(v)) => vec![
                "exec".into(),
                v.clone(),
                "--".into(),
                "sh".into(),
                "-c".into(),
                format!("echo {value} > /data/f.tmp && sync /data/f.tmp && mv /data/f.tmp /data/f && sync"),
            ],
            ("port", Some(v)) => vec![
                "port".into(),
                "add".into(),
                v.clone(),
                format!("{}:80", c.adb_port_base as usize + 200 + t),
            ],
            (o, Some(v)) => vec![o.into(), v.clone()],
            _ => {
                next += 1;
                vec!["create".into(), format!("v{next}"), "--template".into(), "minimal".into()]
            }
        };
        let op = args[0].as_str().to_string();
        *by_op
            .entry(match op.as_str() {
                "create" => "create",
                "start" => "start",
                "stop" => "stop",
                "destroy" => "destroy",
                "switch" => "switch",
                "exec" => "exec",
                "template" => "build",
                _ => "port",
            })
            .or_default() += 1;
        let mut child = ctl_child(&c, &args);
        std::thread::sleep(Duration::from_micros(rng.below(40_000) as u64));
        c.end_daemon(libc::SIGKILL);
        if rng.below(3) == 0 {
            if let Some(m) = rng.pick(&monitors(&c)).copied() {
                // SAFETY: a monitor of this harness's daemon, by pid.
                unsafe { libc::kill(m, libc::SIGKILL) };
                killed_monitors += 1;
            }
        }
        let acked = child.wait().is_ok_and(|s| s.success());
        // What the model allows now.
        match (op.as_str(), &target) {
            ("create", _) => {
                let name = args[1].clone();
                if acked {
                    model.vps.insert(name, vec![None]);
                } else {
                    model.unsure.insert(name);
                }
            }
            ("destroy", Some(v)) => {
                model.vps.remove(v);
                if !acked {
                    model.unsure.insert(v.clone());
                }
            }
            ("exec", Some(v)) => {
                if let Some(allowed) = model.vps.get_mut(v) {
                    if acked {
                        *allowed = vec![Some(value.clone())];
                    } else {
                        allowed.push(Some(value.clone()));
                    }
                }
            }
            _ => {}
        }
        c.start_daemon();
        let mut problems = Vec::new();
        let l = list(&c);
        let now = names_in(&l, None);
        for (vp, allowed) in &model.vps {
            let Some(v) = l.iter().find(|v| v["name"] == vp.as_str()) else {
                problems.push(format!("VP {vp} was acknowledged and is gone"));
                continue;
            };
            if v["state"] == "invalid" {
                problems.push(format!("VP {vp} is invalid: {}", v["error"]));
            }
            if v["state"] == "running" {
                match read_f(&c, vp) {
                    Ok(got) if allowed.contains(&got) => {}
                    Ok(got) => {
                        problems.push(format!("VP {vp}: /data/f is {got:?}, allowed {allowed:?}"))
                    }
                    Err(e) => problems.push(e),
                }
            }
        }
        for vp in &now {
            if !model.vps.contains_key(vp) && !model.unsure.contains(vp) {
                problems.push(format!("VP {vp} exists but was never created"));
            }
        }
        // Unsure VPs are settled by what cellsd now says.
        for vp in std::mem::take(&mut model.unsure) {
            if now.contains(&vp) {
                model.vps.entry(vp).or_insert_with(|| vec![None]);
            }
        }
        problems.extend(settled_leftovers(&c));
        if problems.is_empty() {
            passed += 1;
        } else {
            failed += 1;
            println!(
                "trial {t} ({}): FAILED\n  {}",
                args.join(" "),
                problems.join("\n  ")
            );
        }
    }
    // Last: every VP starts, its /data is what was acknowledged, and after
    // destroying them all nothing is left.
    let mut final_problems = Vec::new();
    for (vp, allowed) in &model.vps {
        let _ = c.ctl(&["start", vp]);
        match read_f(&c, vp) {
            Ok(got) if allowed.contains(&got) => {}
            Ok(got) => {
                final_problems.push(format!("VP {vp}: /data/f is {got:?}, allowed {allowed:?}"))
            }
            Err(e) => final_problems.push(e),
        }
    }
    for vp in names_in(&list(&c), None) {
        let _ = c.ctl(&["stop", &vp]);
        let _ = c.ctl(&["destroy", &vp]);
    }
    final_problems.extend(settled_leftovers(&c));
    let left: Vec<_> = std::fs::read_dir(c.state.join("vps"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if !left.is_empty() {
        final_problems.push(format!("state/vps still holds {left:?}"));
    }
    if final_problems.is_empty() {
        passed += 1;
    } else {
        failed += 1;
        println!("final check: FAILED\n  {}", final_problems.join("\n  "));
    }
    println!(
        "chaos: {trials} trials (+1 final check), operations {by_op:?}, {killed_monitors} monitors killed too, {} VPs verified at the end",
        model.vps.len()
    );
    (passed, failed)
}

fn rss_kib(pid: i32) -> u64 {
    status_field(pid, "VmRSS:")
}

/// A process's private memory (USS: pages no other process maps).
fn private_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("Private_Clean:") || l.starts_with("Private_Dirty:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

fn status_field(pid: i32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn count_dir(p: &str) -> usize {
    std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0)
}

/// Distinct network namespaces of all processes.
fn net_namespaces() -> usize {
    let mut s = BTreeSet::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(l) = std::fs::read_link(e.path().join("ns/net")) {
            s.insert(l);
        }
    }
    s.len()
}

/// FUSE mounts of the host and of this daemon's monitors' namespaces (the
/// VPs' /sys/power and /dev/input).
fn fuse_mounts(c: &Cells) -> usize {
    let count = |p: String| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" - fuse"))
            .count()
    };
    count("/proc/self/mountinfo".into())
        + monitors(c)
            .iter()
            .map(|m| count(format!("/proc/{m}/mountinfo")))
            .sum::<usize>()
}

#[derive(Debug, Clone, PartialEq)]
struct Resources {
    mounts: usize,
    netns: usize,
    links: usize,
    cgroups: usize,
    fuse: usize,
    fds: usize,
    threads: u64,
    rss_kib: u64,
    spare_rss_kib: u64,
    loops: usize,
}

fn resources(c: &Cells) -> Resources {
    let pid = c.daemon_pid().unwrap_or(0) as i32;
    let loops = std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
        .filter(|e| e.path().join("loop/backing_file").exists())
        .count();
    Resources {
        mounts: std::fs::read_to_string("/proc/self/mountinfo")
            .map(|s| s.lines().count())
            .unwrap_or(0),
        netns: net_namespaces(),
        links: c.network_links().len(),
        cgroups: cgroups(c)
            .iter()
            .filter(|g| !g.starts_with(".spare-"))
            .count(),
        fuse: fuse_mounts(c),
        fds: count_dir(&format!("/proc/{pid}/fd")),
        threads: status_field(pid, "Threads:"),
        rss_kib: rss_kib(pid),
        spare_rss_kib: monitors(c).first().map(|m| rss_kib(*m)).unwrap_or(0),
        loops,
    }
}

fn soak(cycles: usize) -> (usize, usize) {
    let c = Cells::new();
    c.create_start("anchor");
    let adb = cells_tests::adb::Adb::new(&c);
    let (mut passed, mut failed) = (0, 0);
    let mut times = Vec::new();
    let cycle = |i: usize| -> Result<(), String> {
        let vp = format!("s{}", i % 4);
        let step = |args: &[&str]| -> Result<String, String> {
            let o = c.ctl(args);
            if o.code == 0 {
                Ok(o.stdout)
            } else {
                Err(format!("cellctl {args:?}: {}", o.stderr.trim()))
            }
        };
        step(&["create", &vp, "--template", "minimal"])?;
        step(&["start", &vp])?;
        let out = step(&[
            "exec",
            &vp,
            "--",
            "sh",
            "-c",
            "echo $((6*7)) > /data/x; cat /data/x",
        ])?;
        if out.trim() != "42" {
            return Err(format!("exec said {out:?}"));
        }
        step(&["switch", &vp])?;
        step(&["input", "tap", "100", "200"])?;
        let shot = c.root.join("soak.png");
        step(&["screenshot", "-o", &shot.to_string_lossy()])?;
        if i.is_multiple_of(10) {
            adb.authorize(&c, &vp);
            let serial = step(&["adb", &vp])?
                .lines()
                .last()
                .unwrap_or("")
                .trim()
                .to_string();
            adb.connect(&serial);
            let o = adb.run(&["-s", &serial, "shell", "cat /data/x"]);
            let _ = adb.run(&["disconnect", &serial]);
            if o.stdout.trim() != "42" {
                return Err(format!("adb shell said {o:?}"));
            }
        }
        step(&["switch", "anchor"])?;
        step(&["stop", &vp])?;
        step(&["destroy", &vp])?;
        Ok(())
    };
    let warmup = cycles.min(20);
    for i in 0..warmup {
        if let Err(e) = cycle(i) {
            println!("warm-up cycle {i}: {e}");
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = resources(&c);
    for i in 0..cycles {
        let t = Instant::now();
        match cycle(warmup + i) {
            Ok(()) => passed += 1,
            Err(e) => {
                failed += 1;
                println!("cycle {i}: FAILED: {e}");
            }
        }
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut after = resources(&c);
    // The spare monitor may be in the middle of being replaced, and the
    // runtime's blocking-pool threads end only after 10 s idle: a leaked
    // thread never does.
    Cells::wait_until(Duration::from_secs(15), || {
        after = resources(&c);
        after.mounts <= before.mounts && after.fds <= before.fds && after.threads <= before.threads
    });
    println!("soak: {cycles} cycles (create, start, exec, switch, tap, screenshot, adb shell every 10th, stop, destroy)");
    println!("cycle ms: {}", summarize(&times));
    println!("before: {before:?}\nafter:  {after:?}");
    let mut leaks = Vec::new();
    let d = |a: usize, b: usize| b as i64 - a as i64;
    for (what, delta) in [
        ("mounts", d(before.mounts, after.mounts)),
        ("net namespaces", d(before.netns, after.netns)),
        ("links", d(before.links, after.links)),
        ("cgroups", d(before.cgroups, after.cgroups)),
        ("FUSE connections", d(before.fuse, after.fuse)),
        ("cellsd fds", d(before.fds, after.fds)),
        ("loop devices", d(before.loops, after.loops)),
        (
            "cellsd threads",
            after.threads as i64 - before.threads as i64,
        ),
    ] {
        if delta > 0 {
            leaks.push(format!("{what} +{delta}"));
        }
    }
    let rss = after.rss_kib as i64 - before.rss_kib as i64;
    let spare = after.spare_rss_kib as i64 - before.spare_rss_kib as i64;
    println!("cellsd RSS growth {rss} KiB, spare monitor RSS growth {spare} KiB");
    if rss >= 1024 {
        leaks.push(format!("cellsd RSS +{rss} KiB"));
    }
    if spare >= 1024 {
        leaks.push(format!("monitor RSS +{spare} KiB"));
    }
    if leaks.is_empty() {
        passed += 1;
        println!("leaks: none");
    } else {
        failed += 1;
        println!("leaks: FAILED {}", leaks.join(", "));
    }
    (passed, failed)
}

fn concurrency(clients: usize) -> (usize, usize) {
    let secs: u64 = std::env::var("CELLS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let c = std::sync::Arc::new(Cells::new());
    let pool: Vec<String> = (0..6).map(|i| format!("p{i}")).collect();
    for vp in &pool {
        c.ok(&["create", vp, "--template", "minimal"]);
    }
    c.ok(&["start", "p0"]);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The sampler: exactly one foreground whenever a VP runs.
    let sampler = {
        let (c, stop) = (c.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut samples, mut bad) = (0usize, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Never more than one foreground. While a VP is running,
                // exactly one: a running one, or one being stopped (it keeps
                // the panel until it has ended). With none running, only a
                // VP being stopped may still hold it: the panel is not
                // handed to a VP that is itself going away.
                let l = list(&c);
                let is = |v: &Value, s: &str| v["state"] == s;
                let running = l.iter().filter(|v| is(v, "running")).count();
                let fg: Vec<&Value> = l.iter().filter(|v| v["foreground"] == true).collect();
                let fg_ok = fg.iter().all(|v| is(v, "running") || is(v, "stopping"));
                samples += 1;
                let wrong = fg.len() > 1
                    || !fg_ok
                    || (running > 0 && fg.len() != 1)
                    || (running == 0 && fg.iter().any(|v| is(v, "running")));
                if wrong {
                    let states: Vec<String> = l
                        .iter()
                        .map(|v| {
                            format!(
                                "{}:{}{}",
                                v["name"],
                                v["state"],
                                if v["foreground"] == true { "*" } else { "" }
                            )
                        })
                        .collect();
                    bad.push(states.join(" "));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (samples, bad)
        })
    };
    let workers: Vec<_> = (0..clients)
        .map(|w| {
            let (c, pool) = (c.clone(), pool.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(0x1234_5678 + w as u64 * 7919);
                let mut times: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
                let mut unanswered = Vec::new();
                while Instant::now() < deadline {
                    let vp = rng.pick(&pool).cloned().unwrap_or_default();
                    let ops: [(&'static str, Vec<&str>); 8] = [
                        ("start", vec!["start", &vp]),
                        ("stop", vec!["stop", &vp, "--timeout", "2"]),
                        ("switch", vec!["switch", &vp]),
                        ("exec", vec!["exec", &vp, "--", "true"]),
                        ("list", vec!["list"]),
                        (
                            "screenshot",
                            vec!["screenshot", "--vp", &vp, "-o", "/dev/null"],
                        ),
                        ("freeze", vec!["freeze", &vp]),
                        ("thaw", vec!["thaw", &vp]),
                    ];
                    let (name, args) = &ops[rng.below(ops.len())];
                    let t = Instant::now();
                    let mut child = c
                        .ctl_cmd()
                        .args(args)
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::piped())
                        .spawn()
                        .expect("cellctl");
                    // An answer (success or a clear error) within 30 s. An
                    // exec whose VP another client froze meanwhile waits, as
                    // its command does, until a thaw: thaw it when the other
                    // clients are done or have not for 5 s.
                    let waited = Instant::now();
                    let mut answered = false;
                    while !answered && waited.elapsed() < Duration::from_secs(30) {
                        answered = Cells::wait_until(Duration::from_secs(1), || {
                            matches!(child.try_wait(), Ok(Some(_)))
                        });
                        let long = waited.elapsed() > Duration::from_secs(5);
                        if !answered && *name == "exec" && (long || Instant::now() > deadline) {
                            let frozen = serde_json::from_str::<Value>(
                                &c.ctl(&["status", &vp, "--json"]).stdout,
                            )
                            .is_ok_and(|v| v["frozen"] == true);
                            if frozen {
                                let _ = c.ctl(&["thaw", &vp]);
                            }
                        }
                    }
                    if !answered {
                        let _ = child.kill();
                        unanswered.push(format!("{args:?}"));
                    }
                    let _ = child.wait();
                    times
                        .entry(name)
                        .or_default()
                        .push(t.elapsed().as_secs_f64() * 1000.0);
                }
                (times, unanswered)
            })
        })
        .collect();
    let mut all: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut unanswered = Vec::new();
    for w in workers {
        if let Ok((t, u)) = w.join() {
            for (k, v) in t {
                all.entry(k).or_default().extend(v);
            }
            unanswered.extend(u);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (samples, bad) = sampler.join().unwrap_or_default();
    println!(
        "concurrency: {clients} clients for {secs} s, {} calls",
        all.values().map(Vec::len).sum::<usize>()
    );
    for (k, v) in &all {
        let s = summarize(v);
        println!(
            "  {k:<10} n={:<6} p50 {:>8.1} ms  p99 {:>8.1} ms",
            s.n, s.p50, s.p99
        );
    }
    println!("foreground samples: {samples}, wrong: {}", bad.len());
    let (mut passed, mut failed) = (0, 0);
    for (what, problems) in [("every call answered", unanswered), ("one foreground", bad)] {
        if problems.is_empty() {
            passed += 1;
        } else {
            failed += 1;
            println!("{what}: FAILED {:?}", &problems[..problems.len().min(10)]);
        }
    }
    // The daemon is alive and consistent at the end.
    let left = c.ctl(&["list"]);
    if left.code == 0 {
        passed += 1;
    } else {
        failed += 1;
        println!("cellsd after the run: FAILED {left:?}");
    }
    (passed, failed)
}

/// KiB held by each slab cache (active objects × object size).
fn slab_kib() -> std::collections::HashMap<String, u64> {
    std::fs::read_to_string("/proc/slabinfo")
        .unwrap_or_default()
        .lines()
        .skip(2)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (active, size) = (
                f.get(1)?.parse::<u64>().ok()?,
                f.get(3)?.parse::<u64>().ok()?,
            );
            Some((f.first()?.to_string(), active * size / 1024))
        })
        .collect()
}

/// The slab caches that grew most between two readings, per VP.
fn slab_growth(
    before: &std::collections::HashMap<String, u64>,
    after: &std::collections::HashMap<String, u64>,
    vps: usize,
) -> String {
    let mut g: Vec<(i64, &String)> = after
        .iter()
        .map(|(k, v)| (*v as i64 - before.get(k).copied().unwrap_or(0) as i64, k))
        .filter(|(d, _)| *d > 0)
        .collect();
    g.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    g.iter()
        .take(12)
        .map(|(d, k)| format!("{k} {:.1}", *d as f64 / vps.max(1) as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Kernel memory in use (slab objects, page tables, kernel stacks) in KiB.
/// Slab objects, not slab pages: after VPs went, the caches hold free
/// objects that new ones fill without a new page.
fn kernel_kib() -> u64 {
    slab_total(&slab_kib()) + meminfo_kib("PageTables:") + meminfo_kib("KernelStack:")
}

/// KiB in use over all slab caches.
fn slab_total(slabs: &std::collections::HashMap<String, u64>) -> u64 {
    slabs.values().sum()
}

/// The peer: what the kernel itself charges for the objects a VP is made
/// of, made k times without cells (processes, namespaces, a veth pair on a
/// bridge in a network namespace, cgroups in the hierarchies cells uses),
/// in KiB per object. Everything made here is removed again.
fn kernel_baseline(k: usize) -> String {
    use std::process::{Command, Stdio};
    let cmd = |args: &[&str]| {
        let mut c = Command::new(args[0]);
        c.args(&args[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let run = |args: &[&str]| cmd(args).status().is_ok_and(|s| s.success());
    let spawn = |args: &[&str]| cmd(args).spawn().ok();
    let settle = || std::thread::sleep(Duration::from_millis(500));
    let per = |before: u64, after: u64| after.saturating_sub(before) as f64 / k as f64;
    let end = |mut kids: Vec<std::process::Child>| {
        for c in &mut kids {
            let _ = c.kill();
            let _ = c.wait();
        }
    };
    settle();
    let b = kernel_kib();
    let kids: Vec<_> = (0..k).filter_map(|_| spawn(&["sleep", "600"])).collect();
    settle();
    let proc_kib = per(b, kernel_kib());
    end(kids);
    // A user, mount, pid, ipc, uts and cgroup namespace (two processes:
    // unshare and its child).
    settle();
    let b = kernel_kib();
    let kids: Vec<_> = (0..k)
        .filter_map(|_| {
            spawn(&[
                "unshare",
                "-Urmpiu",
                "-C",
                "--fork",
                "--kill-child",
                "sleep",
                "600",
            ])
        })
        .collect();
    settle();
    let ns_kib = per(b, kernel_kib()) - 2.0 * proc_kib;
    end(kids);
    // A network namespace with a veth pair, one end on a bridge.
    let br = format!("cdbr{}", std::process::id() % 100000);
    settle();
    let b = kernel_kib();
    let mut made = 0;
    if run(&["ip", "link", "add", &br, "type", "bridge"]) {
        for i in 0..k {
            let ns = format!("cdb{}-{i}", std::process::id());
            let host = format!("cdbh{i}");
            if run(&["ip", "netns", "add", &ns])
                && run(&[
                    "ip", "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns",
                    &ns,
                ])
                && run(&["ip", "link", "set", &host, "master", &br, "up"])
                && run(&["ip", "-n", &ns, "link", "set", "lo", "up"])
                && run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])
            {
                made += 1;
            }
        }
    }
    settle();
    let net_kib = kernel_kib().saturating_sub(b) as f64 / made.max(1) as f64;
    for i in 0..k {
        run(&["ip", "link", "del", &format!("cdbh{i}")]);
        run(&[
            "ip",
            "netns",
            "del",
            &format!("cdb{}-{i}", std::process::id()),
        ]);
    }
    run(&["ip", "link", "del", &br]);
    // Cgroups: one per VP in each hierarchy cells uses, with a memory limit.
    let roots: Vec<std::path::PathBuf> = ["cpu", "cpuacct", "memory", "freezer", "pids", "unified"]
        .iter()
        .map(|h| Path::new("/sys/fs/cgroup").join(h))
        .filter(|p| p.join("cgroup.procs").exists())
        .collect();
    let roots = if roots.is_empty() {
        vec![std::path::PathBuf::from("/sys/fs/cgroup")]
    } else {
        roots
    };
    let parent = format!("cells-baseline-{}", std::process::id());
    settle();
    let b = kernel_kib();
    for r in &roots {
        let _ = std::fs::create_dir(r.join(&parent));
        for i in 0..k {
            let d = r.join(&parent).join(i.to_string());
            let _ = std::fs::create_dir(&d);
            let _ = std::fs::write(d.join("memory.limit_in_bytes"), "2G");
            let _ = std::fs::write(d.join("memory.max"), "2G");
        }
    }
    settle();
    let cg_kib = per(b, kernel_kib());
    for r in &roots {
        for i in 0..k {
            let _ = std::fs::remove_dir(r.join(&parent).join(i.to_string()));
        }
        let _ = std::fs::remove_dir(r.join(&parent));
    }
    format!(
        "a process {proc_kib:.0}, namespaces (user, mount, pid, ipc, uts, cgroup) {ns_kib:.0}, a network namespace with a veth pair on a bridge {net_kib:.0}, cgroups in {} hierarchies {cg_kib:.0} (made {k} times each without cells)",
        roots.len()
    )
}

fn meminfo_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// CELLS_WARM=1: where the machine is a VM whose balloon reports freed
/// memory to its host (virtio-balloon free page reporting; the host discards
/// it), every page the kernel hands out afresh costs a fault in the host:
/// ≈ 17 µs here against ≈ 1.8 µs for a page used before, so a VP's first
/// frame alone (900 pages) costs 15 ms. This pauses the reporting (its
/// order raised past the largest free block) and touches `bytes` of memory
/// once, so that the run measures cells and the kernel rather than the
/// hypervisor; the reporting order is restored on drop.
struct WarmMemory {
    saved: Option<String>,
}

const PAGE_REPORTING_ORDER: &str = "/sys/module/page_reporting/parameters/page_reporting_order";

impl WarmMemory {
    fn new(bytes: usize) -> Self {
        let saved = std::fs::read_to_string(PAGE_REPORTING_ORDER).ok();
        if saved.is_none() || std::fs::write(PAGE_REPORTING_ORDER, "11").is_err() {
            println!("warm: no page reporting to pause here ({PAGE_REPORTING_ORDER})");
            return Self { saved: None };
        }
        let t = Instant::now();
        // SAFETY: a fresh private anonymous mapping, touched one byte per
        // page through a raw pointer within its length, then unmapped.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            );
            if p != libc::MAP_FAILED {
                let p = p.cast::<u8>();
                for off in (0..bytes).step_by(4096) {
                    p.add(off).write_volatile(1);
                }
                libc::munmap(p.cast(), bytes);
            }
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "warm: page reporting paused, {} MiB touched in {secs:.1} s ({:.1} us per page)",
            bytes >> 20,
            secs * 1e6 / (bytes / 4096).max(1) as f64
        );
        Self { saved }
    }
}

impl Drop for WarmMemory {
    fn drop(&mut self) {
        if let Some(v) = &self.saved {
            let _ = std::fs::write(PAGE_REPORTING_ORDER, v.trim());
        }
    }
}

/// Busy and total jiffies of the machine's CPUs (/proc/stat).
fn cpu_jiffies() -> Option<(u64, u64)> {
    let t = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> = t
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

/// Wait until the machine's CPUs are less than a quarter busy over half a
/// second; None if that does not happen within `limit`.
fn cpu_settled(limit: Duration) -> Option<()> {
    let end = Instant::now() + limit;
    let mut last = cpu_jiffies()?;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(500));
        let now = cpu_jiffies()?;
        let (busy, total) = (now.0 - last.0, now.1 - last.1);
        if total > 0 && busy * 4 < total {
            return Some(());
        }
        last = now;
    }
    None
}

fn density(n: usize) -> (usize, usize) {
    // A subnet big enough for n VPs; CELLS_KSM=1: with cellsd --ksm (ksmd's
    // settings are restored at the end).
    let ksm = std::env::var("CELLS_KSM").is_ok_and(|v| v == "1");
    // CELLS_DISK=SIZE|none: the VPs' --disk (default: cellsd's default).
    let disk = std::env::var("CELLS_DISK").ok();
    let ksm_dir = Path::new("/sys/kernel/mm/ksm");
    let ksm_saved: Vec<(String, String)> = ["run", "pages_to_scan", "sleep_millisecs"]
        .iter()
        .filter_map(|f| {
            Some((
                f.to_string(),
                std::fs::read_to_string(ksm_dir.join(f)).ok()?,
            ))
        })
        .collect();
    let mut args = vec!["--subnet", "10.96.0.0/20"];
    if ksm {
        args.push("--ksm");
        let _ = std::fs::write(ksm_dir.join("pages_to_scan"), "4000");
        let _ = std::fs::write(ksm_dir.join("sleep_millisecs"), "10");
    }
    // CELLS_BG_WEIGHT=W: cellsd --background-cpu-weight W (default 5).
    let bg_weight = std::env::var("CELLS_BG_WEIGHT").ok();
    if let Some(w) = bg_weight.as_deref() {
        args.extend(["--background-cpu-weight", w]);
    }
    let warm = std::env::var("CELLS_WARM")
        .is_ok_and(|v| v == "1")
        .then(|| {
            let avail = (meminfo_kib("MemAvailable:") as usize) << 10;
            WarmMemory::new((n * (12 << 20)).min(avail.saturating_sub(4 << 30)))
        });
    // The peer, measured first (before VPs come and go).
    let baseline = kernel_baseline(n.clamp(1, 100));
    let mut c = Cells::with_args(None, &args);
    c.ok(&["template", "build", "minimal"]);
    let (mut passed, mut failed) = (0, 0);
    let t0 = Instant::now();
    for i in 0..n {
        let name = format!("d{i}");
        let mut a = vec!["create", &name, "--template", "minimal"];
        if let Some(d) = disk.as_deref() {
            a.extend(["--disk", d]);
        }
        let o = c.ctl(&a);
        if o.code != 0 {
            println!("create d{i}: {}", o.stderr.trim());
            break;
        }
    }
    let create_s = t0.elapsed().as_secs_f64();
    let mem0 = meminfo_kib("MemAvailable:");
    let pt0 = meminfo_kib("PageTables:");
    let ks0 = meminfo_kib("KernelStack:");
    let slabs0 = slab_kib();
    let (cached0, shmem0) = (meminfo_kib("Cached:"), meminfo_kib("Shmem:"));
    let t0 = Instant::now();
    let mut curve = Vec::new();
    let mut started = 0;
    // Started by 8 clients at once (as a farm's scripts would).
    let chunks: Vec<Vec<usize>> = (0..8)
        .map(|k| (0..n).filter(|i| i % 8 == k).collect())
        .collect();
    let done = std::sync::Mutex::new(Vec::<(f64, f64)>::new());
    let results: Vec<usize> = std::thread::scope(|s| {
        let hs: Vec<_> = chunks
            .iter()
            .map(|ch| {
                let (c, done) = (&c, &done);
                s.spawn(move || {
                    let mut ok = 0;
                    for i in ch {
                        let t = Instant::now();
                        let o = c.ctl(&["start", &format!("d{i}")]);
                        if o.code == 0 {
                            ok += 1;
                            if let Ok(mut d) = done.lock() {
                                d.push((
                                    t0.elapsed().as_secs_f64(),
                                    t.elapsed().as_secs_f64() * 1000.0,
                                ));
                            }
                        } else {
                            println!("start d{i}: {}", o.stderr.trim());
                        }
                    }
                    ok
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or(0)).collect()
    });
    started += results.iter().sum::<usize>();
    let start_s = t0.elapsed().as_secs_f64();
    let mut done = done.into_inner().unwrap_or_default();
    done.sort_by(|a, b| a.0.total_cmp(&b.0));
    let step = (done.len() / 10).max(1);
    for block in done.chunks(step) {
        let lat: Vec<f64> = block.iter().map(|d| d.1).collect();
        curve.push((
            curve.last().map(|c: &(usize, f64, f64)| c.0).unwrap_or(0) + block.len(),
            block.last().map(|d| d.0).unwrap_or(0.0),
            summarize(&lat).p50,
        ));
    }
    // The VPs' own boot (init, services, the persona's first frame) goes on
    // after their start calls returned: until the CPU is idle again.
    let settled_s = cpu_settled(Duration::from_secs(120)).map(|_| t0.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_secs(2));
    let mut ksm_note = String::new();
    if ksm {
        // Let ksmd go over the VPs' memory.
        let sharing = || {
            std::fs::read_to_string(ksm_dir.join("pages_sharing"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let mut last = 0;
        for _ in 0..30 {
            std::thread::sleep(Duration::from_secs(2));
            let now = sharing();
            if now > 0 && now <= last + last / 50 {
                break;
            }
            last = now;
        }
        ksm_note = format!(
            "; KSM: {} pages shared = {:.1} MiB saved ({:.0} KiB per VP)",
            sharing(),
            (sharing() * 4) as f64 / 1024.0,
            (sharing() * 4) as f64 / started.max(1) as f64
        );
    }
    let mem1 = meminfo_kib("MemAvailable:");
    let pt1 = meminfo_kib("PageTables:");
    let ks1 = meminfo_kib("KernelStack:");
    let slabs1 = slab_kib();
    let (cached1, shmem1) = (meminfo_kib("Cached:"), meminfo_kib("Shmem:"));
    let mut list_ms = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        c.ok(&["list"]);
        list_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let mut switch_ms = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        c.ok(&["switch", &format!("d{}", (i * 37) % started.max(1))]);
        switch_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    // Memory of one VP's own processes (init and its services) and monitor.
    let l = list(&c);
    let pid = l.iter().find_map(|v| v["pid"].as_u64()).unwrap_or(0) as i32;
    let vp_rss: u64 = c
        .vp_cgroup_dirs("d0")
        .iter()
        .find_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .unwrap_or_default()
        .lines()
        .filter_map(|p| p.parse::<i32>().ok())
        .map(private_kib)
        .sum();
    let mon = monitors(&c);
    let mon_rss = mon.iter().map(|m| private_kib(*m)).sum::<u64>() / mon.len().max(1) as u64;
    let per_vp = (mem0.saturating_sub(mem1)) as f64 / started.max(1) as f64;
    let fb = (720 * 1280 * 4) as f64 / 1024.0;
    let t0 = Instant::now();
    let names: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
    std::thread::scope(|s| {
        for ch in names.chunks(names.len().div_ceil(8).max(1)) {
            let c = &c;
            s.spawn(move || {
                for vp in ch {
                    let _ = c.ctl(&["stop", vp, "--timeout", "5"]);
                }
            });
        }
    });
    let stop_s = t0.elapsed().as_secs_f64();
    for (f, v) in &ksm_saved {
        let _ = std::fs::write(ksm_dir.join(f), v.trim());
    }
    // The template's files are in the page cache once: what the page cache
    // grew by per VP, less shared memory (framebuffers, tmpfs), is far less
    // than the busybox binary every VP runs.
    let busybox = std::fs::metadata("/bin/busybox")
        .map(|m| m.len() / 1024)
        .unwrap_or(0);
    let file_cache_per_vp =
        (cached1 as f64 - cached0 as f64 - (shmem1 as f64 - shmem0 as f64)) / started.max(1) as f64;
    println!(
        "density: {n} networked VPs ({} disks, 2G memory limits{}, background CPU weight {}{})",
        disk.as_deref().unwrap_or("8G sparse"),
        if ksm { ", --ksm" } else { "" },
        bg_weight.as_deref().unwrap_or("5"),
        if warm.is_some() {
            ", page reporting paused and memory warm"
        } else {
            ""
        }
    );
    println!(
        "  page cache per VP beyond shared memory: {file_cache_per_vp:.0} KiB (every VP runs the same {busybox} KiB busybox: one copy){ksm_note}"
    );
    println!("  created in {create_s:.1} s, {started} started in {start_s:.1} s (8 clients), all stopped in {stop_s:.1} s");
    println!(
        "  the VPs' own boot done (machine's CPU below a quarter busy again) after {}",
        settled_s.map_or("more than 120 s".to_string(), |s| format!("{s:.1} s"))
    );
    println!(
        "  start curve (running, seconds, p50 ms of that block): {}",
        curve
            .iter()
            .map(|(n, s, p)| format!("{n}@{s:.1}s/{p:.0}ms"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "  cellctl list with {started} running: {}",
        summarize(&list_ms)
    );
    println!("  switch: {}", summarize(&switch_ms));
    println!(
        "  memory per running VP (MemAvailable): {per_vp:.0} KiB; of it: its processes' private memory {vp_rss} KiB (init pid {pid}; the persona maps the framebuffer), framebuffer {fb:.0} KiB, monitor private memory {mon_rss} KiB, kernel slab objects {:.0} KiB + page tables {:.0} KiB + kernel stacks {:.0} KiB",
        (slab_total(&slabs1) as f64 - slab_total(&slabs0) as f64)
            / started.max(1) as f64,
        (pt1 as f64 - pt0 as f64) / started.max(1) as f64,
        (ks1 as f64 - ks0 as f64) / started.max(1) as f64,
    );
    println!(
        "  slab caches that grew most (KiB per VP): {}",
        slab_growth(&slabs0, &slabs1, started)
    );
    println!("  the kernel's own cost (KiB each, slab + page tables + kernel stacks): {baseline}");
    if started == n {
        passed += 1;
    } else {
        failed += 1;
    }
    let left = settled_leftovers(&c);
    if left.is_empty() {
        passed += 1;
    } else {
        failed += 1;
        println!("after stopping all: FAILED {left:?}");
    }
    c.end_daemon(libc::SIGTERM);
    c.start_daemon();
    (passed, failed)
}
