//! `cellctl logcat VP|--all [-f] [logcat options]`: a VP's log read from
//! its monitor (D-Bus `LogOpen` gives a reader socket; the entries are
//! formatted here, as the VP's logcat does). With `--all`, every running
//! VP's, each line after the VP's name: merged by time, or as they come
//! with `-f`.

use std::io::Write;
use std::os::fd::OwnedFd;

use cells_log::format::format;
use cells_log::logcat::Options;
use cells_log::Entry;

/// Print the entries of each (VP, reader), as `o` says.
pub fn print(readers: Vec<(String, OwnedFd)>, o: &Options, column: bool) -> Result<(), String> {
    let width = readers.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let line = move |vp: &str, e: &Entry| -> String {
        let text = format(e, o.format);
        if !column {
            return text;
        }
        text.lines()
            .map(|l| format!("{vp:<width$}  {l}\n"))
            .collect()
    };
    if o.request.dump {
        // Everything there is, merged by time.
        let mut all: Vec<(String, Entry)> = Vec::new();
        for (vp, fd) in &readers {
            cells_log::client::read(fd, &o.request, |e| {
                if o.shows(&e) {
                    all.push((vp.clone(), e));
                }
                true
            })
            .map_err(|e| format!("reading the log of VP '{vp}': {e}"))?;
        }
        all.sort_by_key(|(_, e)| (e.sec, e.nsec));
        let skip = o.max.map(|m| all.len().saturating_sub(m)).unwrap_or(0);
        let mut out = std::io::stdout().lock();
        for (vp, e) in &all[skip..] {
            if out.write_all(line(vp, e).as_bytes()).is_err() {
                break;
            }
        }
        return Ok(());
    }
    // Following: one reader thread per VP, lines as they come.
    std::thread::scope(|s| {
        for (vp, fd) in &readers {
            let line = &line;
            s.spawn(move || {
                let r = cells_log::client::read(fd, &o.request, |e| {
                    if !o.shows(&e) {
                        return true;
                    }
                    let mut out = std::io::stdout().lock();
                    out.write_all(line(vp, &e).as_bytes()).is_ok() && out.flush().is_ok()
                });
                if let Err(e) = r {
                    eprintln!("cellctl: the log of VP '{vp}' ended: {e}");
                }
            });
        }
    });
    Ok(())
}
