//! `settings` (Android's settings provider, per VP: /data/system/settings/
//! {system,secure,global}.prop) and `svc` (power stayon, wifi, data).
//!
//! `svc power stayon true` also takes a wake lock in the VP's power device
//! (`/sys/power/wake_lock`), so it means what it does on a phone: the VP
//! keeps its screen on while it is the foreground.

use std::collections::BTreeMap;

use super::store::PropFile;

pub const NAMESPACES: &[&str] = &["system", "secure", "global"];

/// Values a fresh phone has (Android's defaults for what suites read).
pub fn defaults(ns: &str) -> BTreeMap<String, String> {
    let pairs: &[(&str, &str)] = match ns {
        "system" => &[
            ("screen_brightness", "102"),
            ("screen_brightness_mode", "0"),
            ("screen_off_timeout", "60000"),
            ("accelerometer_rotation", "0"),
            ("user_rotation", "0"),
            ("font_scale", "1.0"),
        ],
        "secure" => &[
            ("default_input_method", ""),
            ("location_mode", "3"),
            ("install_non_market_apps", "1"),
        ],
        "global" => &[
            ("adb_enabled", "1"),
            ("airplane_mode_on", "0"),
            ("stay_on_while_plugged_in", "0"),
            ("wifi_on", "1"),
            ("mobile_data", "1"),
            ("development_settings_enabled", "1"),
            ("window_animation_scale", "1.0"),
            ("transition_animation_scale", "1.0"),
            ("animator_duration_scale", "1.0"),
            ("device_provisioned", "1"),
        ],
        _ => &[],
    };
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn file(ns: &str) -> PropFile {
    PropFile::system(&format!("settings/{ns}.prop"))
}

/// The value of a setting, the default if never put.
pub fn get(ns: &str, key: &str) -> Option<String> {
    file(ns).get(key).or_else(|| defaults(ns).remove(key))
}

pub fn put(ns: &str, key: &str, value: &str) -> std::io::Result<()> {
    file(ns).set(key, value)
}

const USAGE: &str = "\
Settings provider (settings) commands:
  help
      Print this help text.
  get [--user <USER_ID> | current] NAMESPACE KEY
      Retrieve the current value of KEY.
  put [--user <USER_ID> | current] NAMESPACE KEY VALUE [TAG] [default]
      Change the contents of KEY to VALUE.
  delete [--user <USER_ID> | current] NAMESPACE KEY
      Delete the entry for KEY.
  reset [--user <USER_ID> | current] NAMESPACE {PACKAGE_NAME | RESET_MODE}
      Reset the global/secure table.
  list [--user <USER_ID> | current] NAMESPACE
      Print all defined keys.
      NAMESPACE is one of {system, secure, global}, case-insensitive
";

pub fn run(args: &[String]) -> i32 {
    let mut a: Vec<String> = args.to_vec();
    // --user N / current: a VP has one user.
    if let Some(i) = a.iter().position(|x| x == "--user") {
        a.drain(i..(i + 2).min(a.len()));
    }
    let ns_ok = |ns: &str| -> Option<String> {
        let l = ns.to_ascii_lowercase();
        NAMESPACES.contains(&l.as_str()).then_some(l)
    };
    let bad_ns = |ns: &str| {
        eprintln!("Invalid namespace '{ns}': give system, secure or global\n{USAGE}");
        1
    };
    let s: Vec<&str> = a.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["get", ns, key] => match ns_ok(ns) {
            Some(ns) => {
                println!("{}", get(&ns, key).unwrap_or_else(|| "null".into()));
                0
            }
            None => bad_ns(ns),
        },
        ["put", ns, key, value, ..] => match ns_ok(ns) {
            Some(ns) => match put(&ns, key, value) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("settings: cannot put {ns} {key}: {e}");
                    1
                }
            },
            None => bad_ns(ns),
        },
        ["delete", ns, key] => match ns_ok(ns) {
            Some(ns) => match file(&ns).remove(key) {
                Ok(had) => {
                    println!("Deleted {} rows", u8::from(had));
                    0
                }
                Err(e) => {
                    eprintln!("settings: cannot delete {ns} {key}: {e}");
                    1
                }
            },
            None => bad_ns(ns),
        },
        ["reset", ns, ..] => match ns_ok(ns) {
            Some(ns) => match file(&ns).save(&BTreeMap::new()) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("settings: cannot reset {ns}: {e}");
                    1
                }
            },
            None => bad_ns(ns),
        },
        ["list", ns] => match ns_ok(ns) {
            Some(ns) => {
                let mut all = defaults(&ns);
                all.extend(file(&ns).load());
                for (k, v) in all {
                    println!("{k}={v}");
                }
                0
            }
            None => bad_ns(ns),
        },
        [] | ["help"] | ["-h"] => {
            print!("{USAGE}");
            0
        }
        _ => {
            eprintln!("Invalid command: {}\n{USAGE}", s.join(" "));
            1
        }
    }
}

/// The wake lock `svc power stayon` holds.
pub const STAYON_LOCK: &str = "svc_power_stayon";

fn power_file(name: &str) -> std::path::PathBuf {
    std::env::var_os("CELLS_SYS_POWER")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("/sys/power"))
        .join(name)
}

pub fn svc(args: &[String]) -> i32 {
    let s: Vec<&str> = args.iter().map(String::as_str).collect();
    let usage = "\
Available commands:
    help     Show information about the subcommands
    power    Control the power manager
    data     Control mobile data connectivity
    wifi     Control the Wi-Fi manager
";
    let save = |ns: &str, k: &str, v: &str| match put(ns, k, v) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("svc: cannot save {k}: {e}");
            1
        }
    };
    match s.as_slice() {
        ["power", "stayon", how] => {
            let v = match *how {
                "true" => 7,
                "false" => 0,
                "ac" => 1,
                "usb" => 2,
                "wireless" => 4,
                _ => {
                    eprintln!("svc power stayon: give true, false, usb, ac or wireless");
                    return 1;
                }
            };
            // The lock is the VP's own (its /sys/power); a VP without the
            // power device still records the setting.
            let (f, text) = if v != 0 {
                ("wake_lock", STAYON_LOCK)
            } else {
                ("wake_unlock", STAYON_LOCK)
            };
            if let Err(e) = std::fs::write(power_file(f), text) {
                if v != 0 {
                    eprintln!("svc: no wake lock taken ({e}): is the VP's power device off?");
                }
            }
            save("global", "stay_on_while_plugged_in", &v.to_string())
        }
        ["wifi", "enable"] => save("global", "wifi_on", "1"),
        ["wifi", "disable"] => save("global", "wifi_on", "0"),
        ["data", "enable"] => save("global", "mobile_data", "1"),
        ["data", "disable"] => save("global", "mobile_data", "0"),
        [] | ["help", ..] => {
            print!("{usage}");
            0
        }
        _ => {
            eprintln!("svc: unknown command {}\n{usage}", s.join(" "));
            1
        }
    }
}
