//! logcat's command line (Android's options that test suites use), shared
//! by the VP's `logcat` and `cellctl logcat`.

use crate::filter::Filter;
use crate::format::Format;
use crate::request::Request;

#[derive(Debug, Clone)]
pub struct Options {
    pub format: Format,
    /// Dump and exit (`-d`, `-t N`); else follow.
    pub dump: bool,
    /// Clear the buffers and exit (`-c`).
    pub clear: bool,
    /// Print the buffers' sizes and exit (`-g`).
    pub sizes: bool,
    pub request: Request,
    pub filter: Filter,
    /// Stop after this many lines (`-m N`).
    pub max: Option<usize>,
}

pub const USAGE: &str = "usage: logcat [-v FORMAT] [-d] [-c] [-g] [-s] [-t N] [-T N] [-m N] [-b BUFFER]... [--pid=PID] [TAG:PRIO]...
  -v FORMAT   brief, process, tag, thread, raw, time, threadtime (default), long
  -d          print the log and exit (else: keep following it)
  -c          clear the buffers and exit
  -g          print the buffers' sizes and exit
  -s          silence every tag not named (as *:S)
  -t N        print the last N lines and exit;  -T N: the last N, then follow
  -m N        exit after N lines
  -b BUFFER   main, system, radio, events, crash, all, default (repeatable or comma-separated)
  --pid=PID   only that process
  TAG:PRIO    show TAG at PRIO (V D I W E F S) and above; *:PRIO for every other tag";

fn value<'a>(args: &'a [String], i: &mut usize, flag: &str) -> Result<&'a str, String> {
    *i += 1;
    args.get(*i)
        .map(String::as_str)
        .ok_or_else(|| format!("option {flag} needs a value\n{USAGE}"))
}

impl Options {
    /// Parse logcat's arguments (without the program name).
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut o = Options {
            format: Format::ThreadTime,
            dump: false,
            clear: false,
            sizes: false,
            request: Request::default(),
            filter: Filter::default(),
            max: None,
        };
        if let Ok(tags) = std::env::var("ANDROID_LOG_TAGS") {
            let _ = o.filter.add(&tags);
        }
        let mut buffers: Vec<u8> = Vec::new();
        let mut silence = false;
        let mut specs = Vec::new();
        let mut i = 0;
        while i < args.len() {
            let a = args[i].as_str();
            // -vtime, -t5: values attached to the flag.
            let (flag, attached) = if a.starts_with("--") || a.len() <= 2 || !a.starts_with('-') {
                (a, None)
            } else {
                (&a[..2], Some(&a[2..]))
            };
            let val = |i: &mut usize| -> Result<String, String> {
                match attached {
                    Some(v) => Ok(v.to_string()),
                    None => value(args, i, flag).map(String::from),
                }
            };
            match flag {
                "-v" | "--format" => {
                    let v = val(&mut i)?;
                    // Modifiers (color, uid, ...) are accepted and ignored.
                    for word in v.split([',', ' ']) {
                        if let Some(f) = Format::parse(word) {
                            o.format = f;
                        }
                    }
                }
                "-d" => o.dump = true,
                "-c" | "--clear" => o.clear = true,
                "-g" | "--buffer-size" => o.sizes = true,
                "-s" => silence = true,
                "-t" => {
                    let v = val(&mut i)?;
                    o.request.tail = Some(v.parse().map_err(|_| format!("-t {v}: give a count"))?);
                    o.dump = true;
                }
                "-T" => {
                    let v = val(&mut i)?;
                    o.request.tail = Some(v.parse().map_err(|_| format!("-T {v}: give a count"))?);
                }
                "-m" | "--max-count" => {
                    let v = val(&mut i)?;
                    o.max = Some(v.parse().map_err(|_| format!("-m {v}: give a count"))?);
                }
                "-b" | "--buffer" => {
                    for b in val(&mut i)?.split(',') {
                        match b {
                            "all" => buffers.extend(crate::BUFFERS.iter().map(|(_, id)| *id)),
                            "default" => buffers.extend(Request::default().lids),
                            _ => buffers.push(crate::buffer_id(b).ok_or_else(|| {
                                format!("unknown buffer '{b}': use main, system, radio, events, crash, all or default")
                            })?),
                        }
                    }
                }
                _ if a.starts_with("--pid=") => {
                    let v = &a[6..];
                    o.request.pid = Some(v.parse().map_err(|_| format!("--pid={v}: give a pid"))?);
                }
                "-h" | "--help" => return Err(USAGE.to_string()),
                _ if a.starts_with('-') => {
                    return Err(format!("logcat: unknown option {a}\n{USAGE}"));
                }
                _ => specs.push(a.to_string()),
            }
            i += 1;
        }
        if !buffers.is_empty() {
            buffers.sort_unstable();
            buffers.dedup();
            o.request.lids = buffers;
        }
        if silence {
            o.filter.silence_others();
        }
        for s in specs {
            o.filter.add(&s)?;
        }
        o.request.dump = o.dump;
        Ok(o)
    }

    /// Whether an entry is shown.
    pub fn shows(&self, e: &crate::Entry) -> bool {
        let (prio, tag, _) = e.parts();
        self.filter.shows(&tag, prio)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: &[&str]) -> Result<Options, String> {
        Options::parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options_parse_as_logcats() {
        let o = p(&["-v", "time", "-d", "MyApp:D", "*:S"]).unwrap();
        assert_eq!(o.format, Format::Time);
        assert!(o.dump && o.request.dump);
        assert!(o.filter.shows("MyApp", crate::DEBUG));
        assert!(!o.filter.shows("Other", crate::FATAL));
        let o = p(&["-vbrief", "-t", "5", "-b", "main,system"]).unwrap();
        assert_eq!(o.format, Format::Brief);
        assert_eq!(o.request.tail, Some(5));
        assert!(o.dump);
        assert_eq!(o.request.lids, [0, 3]);
        let o = p(&["-v", "threadtime,color", "-T", "3", "--pid=42"]).unwrap();
        assert!(!o.dump);
        assert_eq!((o.request.tail, o.request.pid), (Some(3), Some(42)));
        assert!(p(&["-x"]).unwrap_err().contains("unknown option -x"));
        assert!(p(&["-b", "nope"]).unwrap_err().contains("unknown buffer"));
        assert!(p(&["-s", "Tag:Q"]).unwrap_err().contains("bad priority"));
        assert!(p(&["-c"]).unwrap().clear);
    }
}
