//! The VP's `log` and `logcat` (one program; the name it is called by
//! picks the tool), clients of the VP's logger (`/dev/socket/logd*`, served
//! by its monitor).
//!
//! ```text
//! log [-p PRIORITY] [-t TAG] [-b BUFFER] MESSAGE...    (no MESSAGE: each line of stdin)
//! logcat [-v FORMAT] [-d] [-c] [-g] [-t N] [TAG:PRIO]...  (see logcat -h)
//! ```

use std::io::{BufRead, Write};

use cells_log::client;
use cells_log::format::format;
use cells_log::logcat::{Options, USAGE};

fn log_tool(args: &[String]) -> i32 {
    let usage = "usage: log [-p v|d|i|w|e|f] [-t TAG] [-b main|system|radio|crash] MESSAGE...";
    let (mut prio, mut tag, mut lid) = (cells_log::INFO, "log".to_string(), cells_log::LOG_ID_MAIN);
    let mut i = 0;
    while i < args.len() && args[i].starts_with('-') && args[i].len() > 1 {
        let v = args.get(i + 1).cloned();
        match (args[i].as_str(), v) {
            ("-p", Some(p)) => match cells_log::parse_prio(&p) {
                Some(x) if x != cells_log::SILENT => prio = x,
                _ => {
                    eprintln!("log: bad priority '{p}'\n{usage}");
                    return 2;
                }
            },
            ("-t", Some(t)) => tag = t,
            ("-b", Some(b)) => match cells_log::buffer_id(&b) {
                Some(x) if x != cells_log::LOG_ID_EVENTS => lid = x,
                _ => {
                    eprintln!("log: unknown buffer '{b}'\n{usage}");
                    return 2;
                }
            },
            _ => {
                eprintln!("{usage}");
                return 2;
            }
        }
        i += 2;
    }
    let send = |msg: &str| -> i32 {
        match client::write(lid, prio, &tag, msg) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!(
                    "log: {}: {e} (is the VP's logger device on?)",
                    client::LOGDW
                );
                1
            }
        }
    };
    if i < args.len() {
        return send(&args[i..].join(" "));
    }
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let r = send(&line);
        if r != 0 {
            return r;
        }
    }
    0
}

fn logcat(args: &[String]) -> i32 {
    let o = match Options::parse(args) {
        Ok(o) => o,
        Err(e) => {
            let help = args.iter().any(|a| a == "-h" || a == "--help");
            if help {
                println!("{USAGE}");
                return 0;
            }
            eprintln!("{e}");
            return 2;
        }
    };
    if o.clear || o.sizes {
        for lid in &o.request.lids {
            let name = cells_log::buffer_name(*lid);
            let cmd = if o.clear { "clear" } else { "getLogSize" };
            match client::control(&format!("{cmd} {lid}")) {
                Ok(r) if o.clear && r == "success" => {}
                Ok(r) if o.sizes => {
                    let used =
                        client::control(&format!("getLogSizeUsed {lid}")).unwrap_or_default();
                    let kib = |s: &str| s.parse::<usize>().map(|b| b / 1024).unwrap_or(0);
                    println!(
                        "{name}: ring buffer is {} KiB ({} KiB consumed), max entry is {} B, max payload is {} B",
                        kib(&r),
                        kib(&used),
                        cells_log::MAX_PAYLOAD,
                        cells_log::MAX_PAYLOAD
                    );
                }
                Ok(r) => {
                    eprintln!("logcat: {cmd} {name}: {r}");
                    return 1;
                }
                Err(e) => {
                    eprintln!("logcat: {}: {e}", client::LOGD);
                    return 1;
                }
            }
        }
        return 0;
    }
    let fd = match client::connect(client::LOGDR, libc::SOCK_SEQPACKET) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "logcat: {}: {e} (is the VP's logger device on?)",
                client::LOGDR
            );
            return 1;
        }
    };
    let out = std::io::stdout();
    let mut shown = 0usize;
    let r = client::read(&fd, &o.request, |e| {
        if !o.shows(&e) {
            return true;
        }
        let mut w = out.lock();
        if w.write_all(format(&e, o.format).as_bytes()).is_err() {
            return false;
        }
        if !o.dump {
            let _ = w.flush();
        }
        shown += 1;
        o.max.is_none_or(|m| shown < m)
    });
    let _ = out.lock().flush();
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("logcat: reading the log: {e}");
            1
        }
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    let argv0 = args.remove(0);
    let mut tool = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if tool != "log" && tool != "logcat" {
        tool = if args.is_empty() {
            String::new()
        } else {
            args.remove(0)
        };
    }
    let code = match tool.as_str() {
        "log" => log_tool(&args),
        "logcat" => logcat(&args),
        _ => {
            eprintln!("usage: cells-logtools log|logcat ARGS... (or call it as log or logcat)");
            2
        }
    };
    std::process::exit(code);
}
