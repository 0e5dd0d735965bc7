//! logcat's output formats (Android's logprint): each line of a message
//! gets the format's prefix.

use crate::{prio_char, Entry};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Brief,
    Process,
    Tag,
    Thread,
    Raw,
    Time,
    ThreadTime,
    Long,
}

impl Format {
    pub const NAMES: &'static [&'static str] = &[
        "brief",
        "process",
        "tag",
        "thread",
        "raw",
        "time",
        "threadtime",
        "long",
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "brief" => Format::Brief,
            "process" => Format::Process,
            "tag" => Format::Tag,
            "thread" => Format::Thread,
            "raw" => Format::Raw,
            "time" => Format::Time,
            "threadtime" => Format::ThreadTime,
            "long" => Format::Long,
            _ => return None,
        })
    }
}

/// The civil date (year, month 1-12, day 1-31) of a count of days since
/// 1970-01-01 (Howard Hinnant's civil_from_days). Shared by what prints
/// UTC dates without a time library (cellctl, the toolbox, NMEA).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m as u32, d as u32)
}

/// `MM-DD HH:MM:SS.mmm` in local time (UTC where the system has no zone).
pub fn time_text(sec: u32, nsec: u32) -> String {
    let t = sec as libc::time_t;
    // SAFETY: localtime_r fills our zeroed tm from a valid time_t.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        tm
    };
    format!(
        "{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        nsec / 1_000_000
    )
}

/// The entry as logcat prints it in `fmt` (with its final newline).
pub fn format(e: &Entry, fmt: Format) -> String {
    let (prio, tag, msg) = e.parts();
    let p = prio_char(prio);
    let time = || time_text(e.sec, e.nsec);
    let (prefix, suffix) = match fmt {
        Format::Brief => (format!("{p}/{tag:<8}({:>5}): ", e.pid), String::new()),
        Format::Process => (format!("{p}({:>5}) ", e.pid), format!("  ({tag})")),
        Format::Tag => (format!("{p}/{tag:<8}: "), String::new()),
        Format::Thread => (format!("{p}({:>5}:{:>5}) ", e.pid, e.tid), String::new()),
        Format::Raw => (String::new(), String::new()),
        Format::Time => (
            format!("{} {p}/{tag:<8}({:>5}): ", time(), e.pid),
            String::new(),
        ),
        Format::ThreadTime => (
            format!("{} {:>5} {:>5} {p} {tag:<8}: ", time(), e.pid, e.tid),
            String::new(),
        ),
        Format::Long => {
            return format!(
                "[ {} {:>5}:{:>5} {p}/{tag:<8} ]\n{msg}\n\n",
                time(),
                e.pid,
                e.tid
            )
        }
    };
    let mut out = String::new();
    for line in msg.split('\n') {
        out.push_str(&prefix);
        out.push_str(line);
        out.push_str(&suffix);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
    use crate::{Entry, INFO, LOG_ID_MAIN};

    #[test]
    fn formats_are_logcats() {
        std::env::set_var("TZ", "UTC");
        let e = Entry::text(
            LOG_ID_MAIN,
            123,
            456,
            86400 + 3661,
            5_000_000,
            0,
            INFO,
            "MyTag",
            "hi",
        );
        assert_eq!(format(&e, Format::Brief), "I/MyTag   (  123): hi\n");
        assert_eq!(format(&e, Format::Tag), "I/MyTag   : hi\n");
        assert_eq!(format(&e, Format::Process), "I(  123) hi  (MyTag)\n");
        assert_eq!(format(&e, Format::Thread), "I(  123:  456) hi\n");
        assert_eq!(format(&e, Format::Raw), "hi\n");
        assert_eq!(
            format(&e, Format::Time),
            "01-02 01:01:01.005 I/MyTag   (  123): hi\n"
        );
        assert_eq!(
            format(&e, Format::ThreadTime),
            "01-02 01:01:01.005   123   456 I MyTag   : hi\n"
        );
        assert_eq!(
            format(&e, Format::Long),
            "[ 01-02 01:01:01.005   123:  456 I/MyTag    ]\nhi\n\n"
        );
        let two = Entry::text(LOG_ID_MAIN, 1, 1, 0, 0, 0, INFO, "t", "a\nb");
        assert_eq!(format(&two, Format::Tag), "I/t       : a\nI/t       : b\n");
    }
}
