//! The VP's Android command-line tools, one multi-call program
//! (`cells-toolbox`, linked as each tool's name in /system/bin): what
//! adb-driven test suites call on a device — `screencap`, `input`, `wm`,
//! `getevent`, `dumpsys`, `settings`, `svc`, `pm`, `am`, `monkey`,
//! `reboot` — printing Android's text, since suites parse it.
//!
//! Everything acts on the VP's own devices and its own /data: a tool run in
//! a background VP sees and changes that VP only.

pub mod am;
pub mod dumpsys;
pub mod evdev;
pub mod getevent;
pub mod input;
pub mod packages;
pub mod screencap;
pub mod settings;
pub mod store;
pub mod wm;

pub const APPLETS: &[&str] = &[
    "am",
    "dumpsys",
    "getevent",
    "input",
    "monkey",
    "pm",
    "reboot",
    "screencap",
    "settings",
    "svc",
    "wm",
];

/// The signal that asks the VP's init (cells-init) to restart the VP
/// (systemd's convention: SIGRTMIN+5 is reboot).
pub fn reboot_signal() -> i32 {
    libc::SIGRTMIN() + 5
}

/// `reboot [-p] [REASON]`: ask init to restart the VP (`-p`: to stop it).
/// cellsd starts a rebooted VP again; adb clients reconnect.
pub fn reboot(args: &[String]) -> i32 {
    let poweroff = args.iter().any(|a| a == "-p");
    // SIGUSR2: busybox's poweroff, which cells-init takes as "stop".
    let sig = if poweroff {
        libc::SIGUSR2
    } else {
        reboot_signal()
    };
    // SAFETY: kill(2) of the VP's init.
    if unsafe { libc::kill(1, sig) } != 0 {
        eprintln!(
            "reboot: cannot signal init: {}",
            std::io::Error::last_os_error()
        );
        return 1;
    }
    0
}

fn usage() -> i32 {
    eprintln!(
        "usage: cells-toolbox TOOL [ARGS...], or run it as one of: {}",
        APPLETS.join(", ")
    );
    1
}

pub fn main(argv0: &str, mut args: Vec<String>) -> i32 {
    let mut tool = std::path::Path::new(argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !APPLETS.contains(&tool.as_str()) {
        if args.is_empty() {
            return usage();
        }
        tool = args.remove(0);
    }
    match tool.as_str() {
        "am" => am::run(&args),
        "dumpsys" => dumpsys::run(&args),
        "getevent" => getevent::run(&args),
        "input" => input::run(&args),
        "monkey" => am::monkey(&args),
        "pm" => packages::run(&args),
        "reboot" => reboot(&args),
        "screencap" => screencap::run(&args),
        "settings" => settings::run(&args),
        "svc" => settings::svc(&args),
        "wm" => wm::run(&args),
        _ => usage(),
    }
}
