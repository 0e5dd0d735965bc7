//! `getevent`: Android's input event monitor over the VP's own input
//! devices, with its output format (`-p` capabilities with the ABS ranges,
//! `-l` labels, `-t` times, `-c N`, `-q`, `-i`, `-n`).

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use super::evdev::*;
use crate::evcodes;

const USAGE: &str = "\
Usage: getevent [-t] [-n] [-s switchmask] [-S] [-v [mask]] [-d] [-p] [-i] [-l] [-q] [-c count] [-r] [device]
    -t: show time stamps
    -n: don't print newlines
    -s: print switch states for given bits
    -S: print all switch states
    -v: verbosity mask (errs=1, dev=2, name=4, info=8, vers=16, pos. events=32, props=64)
    -d: show HID descriptor, if available
    -p: show possible events (errs, dev, name, pos. events)
    -i: show all device info and possible events
    -l: label event types and names in plain text
    -q: quiet (clear verbosity mask)
    -c: print given number of events then exit
    -r: print rate events are received
";

pub fn label(table: &[(u16, &'static str)], v: u16) -> Option<&'static str> {
    table.iter().find(|(c, _)| *c == v).map(|(_, n)| *n)
}

fn table_of(ev: u16) -> Option<&'static [(u16, &'static str)]> {
    Some(match ev {
        0 => evcodes::SYN,
        1 => evcodes::KEY,
        2 => evcodes::REL,
        3 => evcodes::ABS,
        4 => evcodes::MSC,
        5 => evcodes::SW,
        0x11 => evcodes::LED,
        0x12 => evcodes::SND,
        0x14 => evcodes::REP,
        _ => return None,
    })
}

fn type_tag(ev: u16) -> &'static str {
    match ev {
        1 => "KEY",
        2 => "REL",
        3 => "ABS",
        4 => "MSC",
        5 => "SW ",
        0x11 => "LED",
        0x12 => "SND",
        0x14 => "REP",
        0x15 => "FF ",
        0x16 => "PWR",
        0x17 => "FFS",
        _ => "???",
    }
}

/// What `-p`/`-i` print about one device's events (Android's layout).
pub struct Caps {
    /// (type, codes, codes held down)
    pub types: Vec<(u16, Vec<u16>, Vec<u16>)>,
    pub abs: Vec<(u16, AbsInfo)>,
}

pub fn possible_events(c: &Caps, labels: bool) -> String {
    let mut o = String::from("  events:\n");
    for (ev, codes, down) in &c.types {
        if codes.is_empty() {
            continue;
        }
        let per_line = if labels { 4 } else { 8 };
        for (n, code) in codes.iter().enumerate() {
            if n == 0 {
                o.push_str(&format!("    {} ({ev:04x}):", type_tag(*ev)));
            } else if n % per_line == 0 || *ev == EV_ABS {
                o.push_str("\n               ");
            }
            let mark = if down.contains(code) { '*' } else { ' ' };
            match table_of(*ev)
                .and_then(|t| label(t, *code))
                .filter(|_| labels)
            {
                Some(l) => {
                    let l: String = l.chars().take(20).collect();
                    o.push_str(&format!(" {l}{mark}{:w$}", "", w = 20 - l.len()));
                }
                None if labels && table_of(*ev).is_some() => {
                    o.push_str(&format!(" {code:04x}{mark}                "))
                }
                None => o.push_str(&format!(" {code:04x}{mark}")),
            }
            if *ev == EV_ABS {
                if let Some((_, a)) = c.abs.iter().find(|(k, _)| k == code) {
                    o.push_str(&format!(
                        " : value {}, min {}, max {}, fuzz {}, flat {}, resolution {}",
                        a.value, a.minimum, a.maximum, a.fuzz, a.flat, a.resolution
                    ));
                }
            }
        }
        o.push('\n');
    }
    o
}

pub fn input_props(props: Option<&[u16]>) -> String {
    let mut o = String::from("  input props:\n");
    match props {
        None => o.push_str("    <not available\n"),
        Some([]) => o.push_str("    <none>\n"),
        Some(p) => {
            for b in p {
                match label(evcodes::PROP, *b) {
                    Some(l) => o.push_str(&format!("    {l}\n")),
                    None => o.push_str(&format!("    {b:04x}\n")),
                }
            }
        }
    }
    o
}

/// One event as getevent prints it (without the device and time).
pub fn event_text(t: u16, c: u16, v: i32, labels: bool) -> String {
    if !labels {
        return format!("{t:04x} {c:04x} {:08x}", v as u32);
    }
    let tl = label(evcodes::EV, t);
    let cl = table_of(t).and_then(|tab| label(tab, c));
    let vl = (t == EV_KEY).then_some(match v {
        0 => Some("UP"),
        1 => Some("DOWN"),
        2 => Some("REPEAT"),
        _ => None,
    });
    let mut s = match tl {
        Some(l) => format!("{l:<12.12}"),
        None => format!("{t:04x}        "),
    };
    match cl {
        Some(l) => s.push_str(&format!(" {l:<20.20}")),
        None => s.push_str(&format!(" {c:04x}                ")),
    }
    match vl.flatten() {
        Some(l) => s.push_str(&format!(" {l:<20.20}")),
        None => s.push_str(&format!(" {:08x}            ", v as u32)),
    }
    s
}

#[derive(Default)]
struct Opts {
    time: bool,
    newline: bool,
    labels: bool,
    count: u64,
    dev: bool,
    name: bool,
    info: bool,
    version: bool,
    events: bool,
    props: bool,
    device: Option<PathBuf>,
}

fn caps(d: &Device) -> Caps {
    let mut types = Vec::new();
    let mut abs = Vec::new();
    for ev in EV_KEY..=EV_MAX {
        let codes = d.codes(ev);
        if codes.is_empty() {
            continue;
        }
        if ev == EV_ABS {
            for c in &codes {
                if let Some(a) = d.abs(*c) {
                    abs.push((*c, a));
                }
            }
        }
        let down = if ev == EV_KEY {
            d.keys_down()
        } else {
            Vec::new()
        };
        types.push((ev, codes, down));
    }
    Caps { types, abs }
}

pub fn run(args: &[String]) -> i32 {
    let mut o = Opts {
        newline: true,
        dev: true,
        name: true,
        ..Default::default()
    };
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if let Some(flags) = a.strip_prefix('-').filter(|f| !f.is_empty()) {
            let mut chars = flags.chars().peekable();
            while let Some(f) = chars.next() {
                match f {
                    't' => o.time = true,
                    'n' => o.newline = false,
                    'l' => o.labels = true,
                    'q' => {
                        o.dev = false;
                        o.name = false;
                    }
                    'p' => {
                        o.dev = true;
                        o.name = true;
                        o.events = true;
                        o.props = true;
                    }
                    'i' => {
                        o.dev = true;
                        o.name = true;
                        o.info = true;
                        o.version = true;
                        o.events = true;
                        o.props = true;
                    }
                    'S' | 'd' | 'r' => {}
                    'c' | 's' | 'v' => {
                        let rest: String = chars.by_ref().collect();
                        let v = if rest.is_empty() {
                            i += 1;
                            args.get(i).cloned().unwrap_or_default()
                        } else {
                            rest
                        };
                        if f == 'c' {
                            match v.parse() {
                                Ok(n) => o.count = n,
                                Err(_) => {
                                    eprintln!("getevent: bad count '{v}'\n{USAGE}");
                                    return 1;
                                }
                            }
                        }
                    }
                    'h' => {
                        eprint!("{USAGE}");
                        return 0;
                    }
                    _ => {
                        eprintln!("getevent: invalid option -- {f}\n{USAGE}");
                        return 1;
                    }
                }
            }
        } else {
            o.device = Some(PathBuf::from(a));
        }
        i += 1;
    }
    let paths = match &o.device {
        Some(p) => vec![p.clone()],
        None => nodes(),
    };
    let mut devs = Vec::new();
    let mut out = std::io::stdout().lock();
    for p in paths {
        let d = match Device::open(&p, false) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("could not open {}, {e}", p.display());
                continue;
            }
        };
        d.set_monotonic();
        let n = devs.len() + 1;
        let mut t = String::new();
        if o.dev {
            t.push_str(&format!("add device {n}: {}\n", p.display()));
        }
        if o.info && !d.fifo {
            let id = d.id().unwrap_or_default();
            t.push_str(&format!(
                "  bus:      {:04x}\n  vendor    {:04x}\n  product   {:04x}\n  version   {:04x}\n",
                id[0], id[1], id[2], id[3]
            ));
        }
        if o.name {
            t.push_str(&format!("  name:     \"{}\"\n", d.name()));
        }
        if o.info && !d.fifo {
            t.push_str(&format!(
                "  location: \"{}\"\n  id:       \"{}\"\n",
                d.phys(),
                d.uniq()
            ));
        }
        if o.version && !d.fifo {
            let v = d.version().unwrap_or(0);
            t.push_str(&format!(
                "  version:  {}.{}.{}\n",
                v >> 16,
                (v >> 8) & 0xff,
                v & 0xff
            ));
        }
        if o.events && !d.fifo {
            t.push_str(&possible_events(&caps(&d), o.labels));
        }
        if o.props && !d.fifo {
            t.push_str(&input_props(d.props().as_deref()));
        }
        let _ = out.write_all(t.as_bytes());
        devs.push(d);
    }
    let _ = out.flush();
    if o.events || o.info {
        // -p / -i describe the devices and end.
        return 0;
    }
    let many = o.device.is_none();
    let nl = if o.newline { "\n" } else { "" };
    let mut left = o.count;
    let mut buf = [0u8; 24 * 64];
    loop {
        let mut fds: Vec<libc::pollfd> = devs
            .iter()
            .map(|d| libc::pollfd {
                fd: d.file.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        if fds.is_empty() {
            return 1;
        }
        // SAFETY: polling our own pollfd array.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            continue;
        }
        for (k, p) in fds.iter().enumerate() {
            if p.revents & libc::POLLIN == 0 {
                continue;
            }
            let r = match devs[k].file.read(&mut buf) {
                Ok(r) => r,
                Err(_) => continue,
            };
            let mut text = String::new();
            for ev in buf[..r].chunks_exact(24) {
                let sec = i64::from_ne_bytes(ev[0..8].try_into().unwrap_or([0; 8]));
                let usec = i64::from_ne_bytes(ev[8..16].try_into().unwrap_or([0; 8]));
                let t = u16::from_ne_bytes([ev[16], ev[17]]);
                let c = u16::from_ne_bytes([ev[18], ev[19]]);
                let v = i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]);
                if o.time {
                    text.push_str(&format!("[{sec:8}.{usec:06}] "));
                }
                if many {
                    text.push_str(&format!("{}: ", devs[k].path.display()));
                }
                text.push_str(&event_text(t, c, v, o.labels));
                text.push_str(nl);
                if left > 0 {
                    left -= 1;
                    if left == 0 {
                        let _ = out.write_all(text.as_bytes());
                        let _ = out.flush();
                        return 0;
                    }
                }
            }
            if out
                .write_all(text.as_bytes())
                .and_then(|_| out.flush())
                .is_err()
            {
                return 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Android's getevent -p / -lp text for a touchscreen like the VP's
    /// (the layout of system/core/toolbox/getevent.c).
    #[test]
    fn possible_events_are_laid_out_as_androids() {
        let abs = |max| AbsInfo {
            maximum: max,
            ..Default::default()
        };
        let c = Caps {
            types: vec![
                (EV_KEY, vec![0x145, 0x14a], vec![]),
                (EV_ABS, vec![0x00, 0x35], vec![]),
            ],
            abs: vec![(0x00, abs(719)), (0x35, abs(719))],
        };
        assert_eq!(
            possible_events(&c, false),
            "  events:\n\
             \x20   KEY (0001): 0145  014a \n\
             \x20   ABS (0003): 0000  : value 0, min 0, max 719, fuzz 0, flat 0, resolution 0\n\
             \x20               0035  : value 0, min 0, max 719, fuzz 0, flat 0, resolution 0\n"
        );
        assert_eq!(
            possible_events(&c, true),
            "  events:\n\
             \x20   KEY (0001): BTN_TOOL_FINGER       BTN_TOUCH            \n\
             \x20   ABS (0003): ABS_X                 : value 0, min 0, max 719, fuzz 0, flat 0, resolution 0\n\
             \x20               ABS_MT_POSITION_X     : value 0, min 0, max 719, fuzz 0, flat 0, resolution 0\n"
        );
        assert_eq!(
            input_props(Some(&[1])),
            "  input props:\n    INPUT_PROP_DIRECT\n"
        );
        assert_eq!(input_props(Some(&[])), "  input props:\n    <none>\n");
    }

    #[test]
    fn events_print_as_androids() {
        assert_eq!(event_text(3, 0x35, 360, false), "0003 0035 00000168");
        assert_eq!(event_text(3, 0x39, -1, false), "0003 0039 ffffffff");
        assert_eq!(
            event_text(1, 0x14a, 1, true),
            "EV_KEY       BTN_TOUCH            DOWN                "
        );
        assert_eq!(
            event_text(0, 0, 0, true),
            "EV_SYN       SYN_REPORT           00000000            "
        );
    }
}
