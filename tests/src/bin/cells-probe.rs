//! cells-probe: the escape suite's tool inside a VP (tests/tests/security.rs
//! copies it into the VP's /data). Each subcommand tries one thing a hostile
//! VP root would try and prints what the kernel answered, one result per
//! line, so the test decides what must have been denied.
//!
//! ```text
//! cells-probe inotify-hold          take inotify instances until refused, print "held N", wait for stdin EOF
//! cells-probe keyring [DESC]        print "session SERIAL" and whether a "user" key DESC is possessed
//! cells-probe uid-scan SECS         for SECS seconds, print every process whose uid is not mapped here
//! ```

use std::io::{BufRead, Write};

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn inotify_hold() -> i32 {
    let mut held = Vec::new();
    loop {
        // SAFETY: inotify_init1 with a flag; the fd is kept until exit.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        if fd < 0 {
            break;
        }
        held.push(fd);
        if held.len() >= 100_000 {
            break;
        }
    }
    println!("held {} (refused with errno {})", held.len(), errno());
    let _ = std::io::stdout().flush();
    // Hold them until the test is done.
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    0
}

fn keyring(desc: Option<&str>) -> i32 {
    const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
    const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
    // SAFETY: keyctl with integer arguments.
    let id = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_GET_KEYRING_ID,
            KEY_SPEC_SESSION_KEYRING,
            0,
        )
    };
    if id < 0 {
        println!("session error {}", errno());
    } else {
        println!("session {id}");
    }
    if let Some(d) = desc {
        let c = std::ffi::CString::new(d).unwrap_or_default();
        // SAFETY: request_key only looks up (no callout info given).
        let k = unsafe {
            libc::syscall(
                libc::SYS_request_key,
                c"user".as_ptr(),
                c.as_ptr(),
                std::ptr::null::<libc::c_char>(),
                0,
            )
        };
        if k < 0 {
            println!("key {d} error {}", errno());
        } else {
            println!("key {d} found {k}");
        }
    }
    0
}

/// Processes whose real or effective uid has no mapping in this user
/// namespace show as the overflow uid (65534): a host-credentialed process
/// inside the VP.
fn uid_scan(secs: u64) -> i32 {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let me = std::process::id().to_string();
    let mut scans = 0u64;
    while std::time::Instant::now() < end {
        scans += 1;
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
                continue;
            }
            let Ok(st) = std::fs::read_to_string(format!("/proc/{name}/status")) else {
                continue;
            };
            let uid = st.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
            if uid.split_whitespace().skip(1).any(|u| u == "65534") {
                let cmd = st.lines().next().unwrap_or("");
                println!("unmapped pid {name} {cmd} {uid}");
            }
        }
    }
    println!("scans {scans}");
    0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let code = match args.get(1).map(String::as_str) {
        Some("inotify-hold") => inotify_hold(),
        Some("keyring") => keyring(args.get(2).map(String::as_str)),
        Some("uid-scan") => uid_scan(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5)),
        _ => {
            eprintln!("usage: cells-probe inotify-hold | keyring [DESC] | uid-scan SECS");
            2
        }
    };
    std::process::exit(code);
}
