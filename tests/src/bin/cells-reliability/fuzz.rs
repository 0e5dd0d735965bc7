//! Generated inputs for every parser and protocol handler that takes input
//! from outside (a VP, a client, a file on disk): no panic, no hang.
//!
//! A small mutational fuzzer that runs on stable Rust: each target has
//! seeds (valid inputs); each round takes a seed or an earlier input and
//! mutates it (bit flips, byte changes, inserts, deletions, splices,
//! interesting numbers and tokens). A panic is a crasher: its input is
//! written to tests/reliability/crashers/TARGET-N and the run fails. An
//! input that takes over a second is a hang. Inputs are at most 64 KiB,
//! so an allocation that grows with what an input claims (not with its
//! size) shows up as a hang or an abort.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"null",
    b"-1",
    b"4294967295",
    b"18446744073709551616",
    b"1e999",
    b"\\u0000",
    b"\n",
    b"=",
    b"..",
    b"/",
    b"\0",
    b"CNXN",
    b"AUTH",
    b"OPEN",
    b"WRTE",
    b"OKAY",
    b"CLSE",
    b"shell,v2,raw:",
    b"tcp:",
    b"localabstract:",
    b"ff",
    b"9999999999G",
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8]) {
    let rounds = 1 + rng.below(8);
    for _ in 0..rounds {
        let len = input.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                input.insert(i, rng.next() as u8);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                input.drain(i..i + n);
            }
            4 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                let i = rng.below(len + 1);
                input.splice(i..i, t.iter().copied());
            }
            5 if !other.is_empty() => {
                // Splice a piece of another input in.
                let a = rng.below(other.len());
                let b = a + rng.below(other.len() - a + 1);
                let i = rng.below(len + 1);
                input.splice(i..i, other[a..b].iter().copied());
            }
            6 if len >= 4 => {
                // An interesting 32-bit number (lengths, counts, ids).
                let i = rng.below(len - 3);
                let v: u32 =
                    [0, 1, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 0x10_0000, 24][rng.below(7)];
                input[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            7 if len > 1 => {
                let cut = rng.below(len);
                input.truncate(cut);
            }
            _ => {
                // Repeat a piece (deep nesting, long strings).
                if len > 0 {
                    let a = rng.below(len);
                    let b = (a + 1 + rng.below(8)).min(len);
                    let piece = input[a..b].to_vec();
                    for _ in 0..rng.below(64) {
                        input.extend_from_slice(&piece);
                    }
                }
            }
        }
        input.truncate(64 << 10);
    }
}

type Target = (&'static str, Vec<Vec<u8>>, Box<dyn Fn(&[u8])>);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn targets() -> Vec<Target> {
    use cellsd::config::VpConfig;
    let layout = cellsd::layout::Layout::new("/nonexistent/state", "/nonexistent/run");
    let data = layout.vp_data("vp");
    let opts = cellsd::config::CreateOptions {
        template: "minimal".into(),
        ..Default::default()
    };
    let vp_json = VpConfig::new("vp", &opts, 3, 1_000_000, &data, 1)
        .map(|c| c.to_json())
        .unwrap_or_default();
    let recipe = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../rootfs-templates/minimal/template.toml"),
    )
    .unwrap_or_default();
    let mut t: Vec<Target> = Vec::new();
    t.push((
        "vp.json",
        vec![vp_json.clone().into_bytes()],
        Box::new(move |b| {
            let path = Path::new("/nonexistent/vp.json");
            if let Ok(c) = VpConfig::from_json(path, &text(b)) {
                let _ = c.validate_loaded(path, "vp", &data);
                let _ = c.create_options();
                let _ = c.to_json();
            }
        }),
    ));
    t.push((
        "recipe",
        vec![recipe],
        Box::new(|b| {
            let _ = toml::from_str::<cellsd::template::Recipe>(&text(b));
        }),
    ));
    t.push((
        "options",
        vec![
            b"512M".to_vec(),
            b"1.5".to_vec(),
            b"freeze-after=30s".to_vec(),
            b"8080:80".to_vec(),
            b"shared-bridge".to_vec(),
        ],
        Box::new(|b| {
            let s = text(b);
            let _ = cellsd::config::parse_memory(&s);
            let _ = cellsd::config::parse_cpus(&s);
            let _ = cellsd::config::parse_duration(&s);
            let _ = s.parse::<cellsd::config::BackgroundPolicy>();
            let _ = cellsd::devices::network::PortForward::parse(&s);
            let _ = cellsd::devices::network::NetworkPolicy::parse(&s);
            let _ = cellsd::devices::network::Subnet::parse(&s);
            let _ = cellsd::name::validate("VP", &s);
            let _ = cellsd::config::validate_hostname(&s);
            let _ = cellsd::config::Seccomp::parse(&s);
        }),
    ));
    t.push((
        "dbus-create-options",
        vec![b"template=minimal;memory=512M;disk=4G;pids=100;cpus=1.5;color=ff0000".to_vec()],
        Box::new(|b| {
            // a{sv} as a client sends it: keys and values of any type.
            use zbus::zvariant::{OwnedValue, Value};
            let mut map = std::collections::HashMap::new();
            for kv in text(b).split(';') {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                let val: Value = match v.len() % 5 {
                    0 => Value::from(v.to_string()),
                    1 => Value::from(v.len() as u64),
                    2 => Value::from(v.starts_with('t')),
                    3 => Value::from(v.parse::<f64>().unwrap_or(-1.0)),
                    _ => Value::from(-(v.len() as i64)),
                };
                if let Ok(o) = OwnedValue::try_from(val) {
                    map.insert(k.to_string(), o);
                }
            }
            if let Ok(o) = cellsd::daemon::create_options(&map) {
                let _ = o.validate();
            }
        }),
    ));
    t.push((
        "seccomp-profile",
        vec![br#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#.to_vec()],
        Box::new(|b| {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(b) {
                let _ = cellsd::seccomp::parse_profile(&v, &["CAP_SYS_ADMIN".to_string()]);
            }
        }),
    ));
    t.push((
        "sys-power",
        vec![b"mylock 1000000000\n".to_vec(), b"mylock".to_vec()],
        Box::new(|b| {
            let _ = cellsd::devices::power::parse_wake_lock(b);
            let _ = cellsd::devices::power::parse_wake_unlock(b);
        }),
    ));
    t.push((
        "input.sock",
        vec![{
            use cellsd::devices::input::event::InputEvent;
            let evs = [
                InputEvent::new(3, 0x35, 100),
                InputEvent::new(3, 0x36, 200),
                InputEvent::new(1, 0x14a, 1),
                InputEvent::new(0, 0, 0),
            ];
            cellsd::devices::input::inject::message(1, &evs)
        }],
        Box::new(|b| {
            use cellsd::devices::input::evdev::{AbsRange, Class, Normalizer};
            use cellsd::devices::input::event::{InputEvent, EVENT_SIZE};
            let g = mux_fb::Geometry::new(720, 1280);
            let r = AbsRange { min: 0, max: 719 };
            for class in [Class::MultiTouch, Class::SingleTouch, Class::Keys] {
                let mut n = Normalizer::new(1, class, r, r, g);
                for c in b.get(4..).unwrap_or_default().chunks_exact(EVENT_SIZE) {
                    if let Some(e) = InputEvent::from_bytes(c) {
                        let _ = n.feed(&e);
                    }
                }
            }
        }),
    ));
    t.push((
        "adbd-protocol",
        vec![{
            let mut v = Vec::new();
            let m = cells_adbd::protocol::Message::new(
                0x4e584e43,
                0x0100_0001,
                256 << 10,
                b"host::features=shell_v2\0".to_vec(),
            );
            let _ = m.write_to(&mut v);
            let o =
                cells_adbd::protocol::Message::new(0x4e45504f, 1, 0, b"shell,v2,raw:ls\0".to_vec());
            let _ = o.write_to(&mut v);
            v
        }],
        Box::new(|b| {
            let mut cur = std::io::Cursor::new(b);
            for check in [true, false] {
                cur.set_position(0);
                while let Ok(m) = cells_adbd::protocol::Message::read_from(&mut cur, 1 << 20, check)
                {
                    let name = text(&m.data);
                    let _ = cells_adbd::shell::parse_service(&name);
                    let _ = cells_adbd::tcp::parse_service(&name);
                    let _ = cells_adbd::protocol::banner_features(&m.data);
                    let _ = cells_adbd::protocol::command_name(m.command);
                }
            }
        }),
    ));
    t.push((
        "adbd-shell-v2",
        vec![
            cells_adbd::shell::packet(0, b"echo hi\n"),
            cells_adbd::shell::packet(5, b"24x80,0x0\0"),
        ],
        Box::new(|b| {
            let mut r = cells_adbd::shell::PacketReader::default();
            for chunk in b.chunks(7) {
                for (_, body) in r.push(chunk) {
                    let _ = cells_adbd::shell::parse_window_size(&text(&body));
                }
            }
        }),
    ));
    t.push((
        "adb-keys-and-props",
        vec![
            b"QAAAAH0= user@host\n".to_vec(),
            b"ro.product.model=work\n# c\nsys.x=1\n".to_vec(),
        ],
        Box::new(|b| {
            let s = text(b);
            let _ = cells_templates::adbkey::parse_file(&s);
            let _ = cells_templates::adbkey::parse_line(&s);
            let _ = cells_templates::props::parse(&s);
        }),
    ));
    t.push((
        "monitor-protocol",
        vec![
            br#"{"event":"init","pid":42}"#.to_vec(),
            br#"{"command":"fb","awake":true}"#.to_vec(),
            br#"{"event":"locks","locks":["a"]}"#.to_vec(),
        ],
        Box::new(|b| {
            let _ = serde_json::from_slice::<cellsd::monitor::MonitorEvent>(b);
            let _ = serde_json::from_slice::<cellsd::monitor::MonitorRequest>(b);
            let _ = serde_json::from_slice::<cellsd::monitor::RunState>(b);
            let _ = serde_json::from_slice::<cellsd::devices::power::PowerCommand>(b);
            let _ = serde_json::from_slice::<cellsd::devices::power::PowerEvent>(b);
            let _ = serde_json::from_slice::<cellsd::execer::ExecRequest>(b);
        }),
    ));
    t
}

/// Run `n` inputs per target; returns (passed targets, failed targets).
pub fn run(n: usize, only: Option<&str>) -> (usize, usize) {
    let crashers = PathBuf::from("tests/reliability/crashers");
    // Panics are caught and reported here, not printed by the hook.
    std::panic::set_hook(Box::new(|_| {}));
    let (mut passed, mut failed) = (0, 0);
    for (name, seeds, f) in targets() {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (name.len() as u64 * 7919));
        let mut pool: Vec<Vec<u8>> = seeds.clone();
        let t0 = Instant::now();
        let (mut crashes, mut hangs, mut slowest) = (0usize, 0usize, Duration::ZERO);
        for i in 0..n {
            let base = pool[rng.below(pool.len())].clone();
            let other = pool[rng.below(pool.len())].clone();
            let mut input = base;
            mutate(&mut rng, &mut input, &other);
            let t = Instant::now();
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| f(&input)));
            let took = t.elapsed();
            slowest = slowest.max(took);
            if took > Duration::from_secs(1) {
                hangs += 1;
            }
            if r.is_err() {
                crashes += 1;
                let _ = std::fs::create_dir_all(&crashers);
                let _ = std::fs::write(crashers.join(format!("{name}-{i}")), &input);
            }
            // Keep some inputs as new bases (a cheap stand-in for coverage).
            if i % 64 == 0 && pool.len() < 256 {
                pool.push(input);
            }
        }
        let ok = crashes == 0 && hangs == 0;
        println!(
            "fuzz {name:<20} {n} inputs in {:.1}s: {crashes} crashes, {hangs} hangs, slowest {:.2} ms  {}",
            t0.elapsed().as_secs_f64(),
            slowest.as_secs_f64() * 1000.0,
            if ok { "ok" } else { "FAILED" }
        );
        if ok {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    let _ = std::panic::take_hook();
    (passed, failed)
}
