//! The VP's `alarm`: Android's /dev/alarm from the shell (served by the
//! VP's monitor; see cellsd's `devices::alarm`).
//!
//! ```text
//! alarm wait-in SECS [rtc_wakeup|rtc|elapsed_wakeup|elapsed]   set an alarm SECS from now, wait for it
//! alarm set-time UNIX_SECS|+SECS|-SECS   set the device's clock (+/-: from now) (the foreground VP only; every VP shares it)
//! alarm clear TYPE
//! ```

use std::os::fd::AsRawFd;

const TYPES: [&str; 5] = [
    "rtc_wakeup",
    "rtc",
    "elapsed_wakeup",
    "elapsed",
    "systemtime",
];
const DEV: &str = "/dev/alarm";

fn ioc_clear(t: u32) -> u64 {
    (b'a' as u64) << 8 | (t as u64) << 4
}
const IOC_WAIT: u64 = (b'a' as u64) << 8 | 1;
fn ioc_set(t: u32) -> u64 {
    1 << 30 | 16 << 16 | (b'a' as u64) << 8 | (2 | (t as u64) << 4)
}
const IOC_SET_RTC: u64 = 1 << 30 | 16 << 16 | (b'a' as u64) << 8 | 5;

fn now(clock: libc::clockid_t) -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts
}

fn ioctl(fd: &std::fs::File, cmd: u64, ts: Option<&libc::timespec>) -> std::io::Result<i32> {
    let arg = ts
        .map(|t| t as *const libc::timespec)
        .unwrap_or(std::ptr::null());
    // SAFETY: an ioctl on our open file with a valid (or null) timespec.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), cmd as _, arg) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r)
}

fn usage() -> i32 {
    eprintln!(
        "usage: alarm wait-in SECS [{}] | set-time UNIX_SECS|+SECS|-SECS | clear TYPE",
        TYPES[..4].join("|")
    );
    2
}

fn run(args: &[String]) -> i32 {
    let ty = |s: Option<&String>| -> Option<u32> {
        match s {
            None => Some(2),
            Some(n) => TYPES.iter().position(|t| t == n).map(|i| i as u32),
        }
    };
    let fd = match std::fs::OpenOptions::new().read(true).write(true).open(DEV) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("alarm: {DEV}: {e} (is the VP's alarm device on?)");
            return 1;
        }
    };
    match args.first().map(String::as_str) {
        Some("wait-in") => {
            let (Some(secs), Some(t)) = (
                args.get(1).and_then(|s| s.parse::<f64>().ok()),
                ty(args.get(2)),
            ) else {
                return usage();
            };
            let clock = if t <= 1 {
                libc::CLOCK_REALTIME
            } else {
                libc::CLOCK_BOOTTIME
            };
            let start = now(libc::CLOCK_MONOTONIC);
            let mut at = now(clock);
            // c_long is i64 on 64-bit targets and i32 on 32-bit ones.
            #[allow(clippy::useless_conversion)]
            let ns = i64::from(at.tv_nsec) + (secs.fract() * 1e9) as i64;
            at.tv_sec += secs.trunc() as libc::time_t + (ns / 1_000_000_000) as libc::time_t;
            at.tv_nsec = (ns % 1_000_000_000) as libc::c_long;
            if let Err(e) = ioctl(&fd, ioc_set(t), Some(&at)) {
                eprintln!("alarm: set: {e}");
                return 1;
            }
            loop {
                match ioctl(&fd, IOC_WAIT, None) {
                    Ok(mask) if mask & (1 << t) != 0 => break,
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        eprintln!("alarm: wait: {e}");
                        return 1;
                    }
                }
            }
            let end = now(libc::CLOCK_MONOTONIC);
            let took =
                (end.tv_sec - start.tv_sec) as f64 + (end.tv_nsec - start.tv_nsec) as f64 / 1e9;
            println!("fired {} after {took:.2}s", TYPES[t as usize]);
            0
        }
        Some("set-time") => {
            // UNIX_SECS, or +SECS / -SECS from now.
            let arg = args.get(1).map(String::as_str).unwrap_or("");
            let t = now(libc::CLOCK_REALTIME);
            let now_s = t.tv_sec as f64 + t.tv_nsec as f64 / 1e9;
            let secs = match arg.as_bytes().first() {
                Some(b'+') | Some(b'-') => arg.parse::<f64>().ok().map(|d| now_s + d),
                _ => arg.parse::<f64>().ok(),
            };
            let Some(secs) = secs.filter(|s| *s >= 0.0) else {
                return usage();
            };
            let ts = libc::timespec {
                tv_sec: secs.trunc() as libc::time_t,
                tv_nsec: (secs.fract() * 1e9) as libc::c_long,
            };
            match ioctl(&fd, IOC_SET_RTC, Some(&ts)) {
                Ok(_) => 0,
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                    eprintln!("alarm: only the foreground VP may set the clock (it is the device's, every VP shares it): switch to this VP first");
                    1
                }
                Err(e) => {
                    eprintln!("alarm: set-time: {e}");
                    1
                }
            }
        }
        Some("clear") => {
            let Some(t) = ty(args.get(1)) else {
                return usage();
            };
            match ioctl(&fd, ioc_clear(t), None) {
                Ok(_) => 0,
                Err(e) => {
                    eprintln!("alarm: clear: {e}");
                    1
                }
            }
        }
        _ => usage(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(run(&args));
}
