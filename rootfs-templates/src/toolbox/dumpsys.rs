//! `dumpsys`: the VP's state in the text Android's services print, for
//! what suites parse: `display` (orientation), `window` (focus, display
//! size), `activity` (resumed/top activity), `power` (screen and wake
//! locks, from the VP's own power device), `battery`, `SurfaceFlinger
//! --display-id`, `meminfo`, `package PKG`, `input`.

use super::am;
use super::packages::{self, Package};
use super::wm;

pub const SERVICES: &[&str] = &[
    "SurfaceFlinger",
    "activity",
    "battery",
    "display",
    "input",
    "meminfo",
    "package",
    "power",
    "window",
];

/// A stable short hex id for a record (Android prints identity hashes).
pub fn hash(s: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

pub struct Focus {
    pub package: String,
    /// Short form (".Main") and full class name.
    pub short: String,
    pub full: String,
    pub pid: i32,
}

impl Focus {
    pub fn of(p: &Package, act: &str, pid: i32) -> Self {
        Self {
            package: p.name.clone(),
            short: p.short(act),
            full: p.full(act),
            pid,
        }
    }
    fn record(&self) -> String {
        format!(
            "ActivityRecord{{{} u0 {}/{} t1}}",
            hash(&format!("{}/{}", self.package, self.full)),
            self.package,
            self.short
        )
    }
    fn window(&self) -> String {
        format!(
            "Window{{{} u0 {}/{}}}",
            hash(&format!("w{}/{}", self.package, self.full)),
            self.package,
            self.full
        )
    }
}

fn focus_lines(f: Option<&Focus>) -> String {
    match f {
        Some(f) => format!(
            "  mCurrentFocus={}\n  mFocusedApp={}\n",
            f.window(),
            f.record()
        ),
        None => "  mCurrentFocus=null\n  mFocusedApp=null\n".into(),
    }
}

pub fn window_windows(f: Option<&Focus>) -> String {
    let mut t = String::from("WINDOW MANAGER WINDOWS (dumpsys window windows)\n");
    if let Some(f) = f {
        t.push_str(&format!("  Window #0 {}:\n", f.window()));
        t.push_str(&format!(
            "    mDisplayId=0 rootTaskId=1 mSession=Session{{{} {}:u0a10000}} mClient=android.os.BinderProxy@{}\n",
            hash(&f.package),
            f.pid,
            hash(&f.full)
        ));
        t.push_str(&format!(
            "    mOwnerUid=10000 showForAllUsers=false package={} appop=NONE\n",
            f.package
        ));
        t.push_str("    mHasSurface=true isReadyForDisplay()=true mWindowRemovalAllowed=false\n");
    }
    t.push('\n');
    t.push_str(&focus_lines(f));
    t
}

pub fn window_displays(d: &wm::Display, f: Option<&Focus>) -> String {
    let (p, s) = (d.physical, d.size());
    let short = s.w.min(s.h);
    let long = s.w.max(s.h);
    let mut t = String::from("WINDOW MANAGER DISPLAY CONTENTS (dumpsys window displays)\n");
    t.push_str("  Display: mDisplayId=0 rootTasks=1\n");
    t.push_str(&format!(
        "    init={}x{} {}dpi base={}x{} {}dpi cur={}x{} app={}x{} rng={short}x{short}-{long}x{long}\n",
        p.w,
        p.h,
        d.density,
        s.w,
        s.h,
        d.dpi(),
        s.w,
        s.h,
        s.w,
        s.h
    ));
    t.push_str("    deferred=false mLayoutNeeded=false mTouchExcludeRegion=SkRegion()\n\n");
    t.push_str(&focus_lines(f));
    t
}

pub fn display(d: &wm::Display, screen_on: bool) -> String {
    let (p, s) = (d.physical, d.size());
    let state = if screen_on { "ON" } else { "OFF" };
    let mut t = String::from("DISPLAY MANAGER (dumpsys display)\n");
    t.push_str("  mOnlyCore=false\n  mSafeMode=false\n  mPendingTraversal=false\n");
    t.push_str(&format!("  mGlobalDisplayState={state}\n"));
    t.push_str(&format!(
        "  mViewports=[DisplayViewport{{type=INTERNAL, valid=true, isActive=true, displayId=0, uniqueId='local:0', physicalPort=0, orientation=0, logicalFrame=Rect(0, 0 - {w}, {h}), physicalFrame=Rect(0, 0 - {pw}, {ph}), deviceWidth={pw}, deviceHeight={ph}}}]\n",
        w = s.w,
        h = s.h,
        pw = p.w,
        ph = p.h
    ));
    t.push_str("\nDisplay Devices: size=1\n");
    t.push_str(&format!(
        "  DisplayDeviceInfo{{\"Built-in Screen\": uniqueId=\"local:0\", {} x {}, modeId 1, renderFrameRate 60.0, defaultModeId 1, density {}, {}.0 x {}.0 dpi, appVsyncOff 0, presDeadline 16666666, touch INTERNAL, rotation 0, type INTERNAL, address {{port=0}}, state {state}, committedState {state}, FLAG_DEFAULT_DISPLAY, FLAG_ROTATES_WITH_CONTENT, FLAG_SECURE, FLAG_SUPPORTS_PROTECTED_BUFFERS}}\n",
        p.w, p.h, d.density, d.density, d.density
    ));
    t.push_str("    mCurrentOrientation=0\n");
    t.push_str("\nLogical Displays: size=1\n  Display 0:\n    mDisplayId=0\n");
    t.push_str(&format!(
        "    mBaseDisplayInfo=DisplayInfo{{\"Built-in Screen\", displayId 0, type INTERNAL, real {} x {}, largest app {} x {}, smallest app {} x {}, density {} ({}.0 x {}.0) dpi, rotation 0, state {state}}}\n",
        s.w, s.h, s.w, s.h, s.w, s.h, d.dpi(), d.dpi(), d.dpi()
    ));
    t
}

pub fn activity_activities(f: Option<&Focus>) -> String {
    let mut t = String::from("ACTIVITY MANAGER ACTIVITIES (dumpsys activity activities)\n");
    t.push_str("Display #0 (activities from top to bottom):\n");
    if let Some(f) = f {
        t.push_str(&format!(
            "  * Task{{{} #1 type=standard A=10000:{}}}\n",
            hash(&f.package),
            f.package
        ));
        t.push_str(&format!("    * {}\n", f.record()));
        t.push_str(&format!("  mResumedActivity: {}\n", f.record()));
        t.push_str(&format!("  ResumedActivity: {}\n", f.record()));
    }
    t
}

pub fn activity_top(f: Option<&Focus>) -> String {
    let mut t = String::from("ACTIVITY MANAGER TOP ACTIVITIES (dumpsys activity top)\n");
    if let Some(f) = f {
        t.push_str(&format!("TASK 10000:{} id=1 userId=0\n", f.package));
        t.push_str(&format!(
            "  ACTIVITY {}/{} {} pid={}\n",
            f.package,
            f.short,
            hash(&format!("{}/{}", f.package, f.full)),
            f.pid
        ));
    }
    t
}

pub fn power(screen_on: bool, locks: &[String], stay_on: bool) -> String {
    let mut t = String::from("POWER MANAGER (dumpsys power)\n\nPower Manager State:\n");
    t.push_str("  mDirty=0x0\n");
    t.push_str(&format!(
        "  mWakefulness={}\n",
        if screen_on { "Awake" } else { "Asleep" }
    ));
    t.push_str("  mWakefulnessChanging=false\n  mIsPowered=true\n  mPlugType=1\n");
    t.push_str(&format!("  mStayOn={stay_on}\n"));
    t.push_str(&format!(
        "  mHoldingWakeLockSuspendBlocker={}\n",
        !locks.is_empty()
    ));
    t.push_str(&format!("  mHoldingDisplaySuspendBlocker={screen_on}\n"));
    t.push_str(&format!(
        "  mDisplayReady=true\n  mScreenOn={screen_on}\n\nWake Locks: size={}\n",
        locks.len()
    ));
    for l in locks {
        t.push_str(&format!(
            "  PARTIAL_WAKE_LOCK              '{l}' (uid=0, pid=0, ws=null)\n"
        ));
    }
    t
}

/// From the VP's power device: is its screen on (its framebuffer awake)?
/// `wait_for_fb_wake` answers at once when awake; opened non-blocking it
/// says EAGAIN when asleep. Without the device the VP's screen is on.
pub fn screen_on() -> bool {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::var_os("CELLS_SYS_POWER")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("/sys/power"));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(dir.join("wait_for_fb_wake"));
    let Ok(mut f) = f else {
        return true;
    };
    let mut s = String::new();
    match f.read_to_string(&mut s) {
        Ok(_) => s.trim() == "awake",
        Err(_) => false,
    }
}

pub fn wake_locks() -> Vec<String> {
    let dir = std::env::var_os("CELLS_SYS_POWER")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("/sys/power"));
    std::fs::read_to_string(dir.join("wake_lock"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// `key: value` from a power_supply uevent file.
fn supply() -> Option<std::collections::BTreeMap<String, String>> {
    for e in std::fs::read_dir("/sys/class/power_supply").ok()?.flatten() {
        let text = std::fs::read_to_string(e.path().join("uevent")).unwrap_or_default();
        let m: std::collections::BTreeMap<String, String> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| {
                (
                    k.trim_start_matches("POWER_SUPPLY_").to_string(),
                    v.to_string(),
                )
            })
            .collect();
        if m.get("TYPE").map(String::as_str) == Some("Battery") {
            return Some(m);
        }
    }
    None
}

/// A battery as the VP sees it: the host's (read-only sysfs) if it has
/// one, else a mains-powered full one (a server or emulator).
pub fn battery() -> String {
    let b = supply();
    let get = |k: &str, d: &str| -> String {
        b.as_ref()
            .and_then(|m| m.get(k).cloned())
            .unwrap_or_else(|| d.to_string())
    };
    let level = get("CAPACITY", "100");
    let status = match get("STATUS", "Full").as_str() {
        "Charging" => 2,
        "Discharging" => 3,
        "Not charging" => 4,
        "Full" => 5,
        _ => 1,
    };
    let ac = b.is_none() || status != 3;
    let mv = get("VOLTAGE_NOW", "5000000")
        .parse::<i64>()
        .unwrap_or(5_000_000)
        / 1000;
    format!(
        "Current Battery Service state:\n  AC powered: {ac}\n  USB powered: false\n  Wireless powered: false\n  Dock powered: false\n  Max charging current: 0\n  Max charging voltage: 0\n  Charging counter: 0\n  status: {status}\n  health: 2\n  present: {}\n  level: {level}\n  scale: 100\n  voltage: {mv}\n  temperature: 250\n  technology: {}\n",
        b.is_some(),
        get("TECHNOLOGY", "Li-ion")
    )
}

pub fn surface_flinger_ids(vp: &str) -> String {
    format!("Display 0 (HWC display 0): port=0 pnpId=CEL displayName=\"cells {vp}\"\n")
}

pub fn meminfo() -> String {
    let m = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kb = |k: &str| -> u64 {
        m.lines()
            .find(|l| l.starts_with(&format!("{k}:")))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let (total, free, cached, avail) = (
        kb("MemTotal"),
        kb("MemFree"),
        kb("Cached"),
        kb("MemAvailable"),
    );
    let fmt = |v: u64| {
        let s = v.to_string();
        let mut o = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                o.push(',');
            }
            o.push(c);
        }
        format!("{o}K")
    };
    format!(
        "Applications Memory Usage (in Kilobytes):\nUptime: {} Realtime: {}\n\nTotal RAM: {} (status normal)\n Free RAM: {} ({} cached pss + {} cached kernel + {} free)\n Used RAM: {}\n",
        uptime_ms(),
        uptime_ms(),
        fmt(total),
        fmt(avail),
        fmt(0),
        fmt(cached),
        fmt(free),
        fmt(total.saturating_sub(avail))
    )
}

fn uptime_ms() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| {
            t.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|s| (s * 1000.0) as u64)
        .unwrap_or(0)
}

fn current_focus() -> Option<Focus> {
    am::focus().map(|(p, a, pid)| Focus::of(&p, &a, pid))
}

fn input() -> String {
    let mut t = String::from(
        "INPUT MANAGER (dumpsys input)\n\nInput Manager State:\n  Event Hub State:\n    Devices:\n",
    );
    for (i, p) in super::evdev::nodes().iter().enumerate() {
        let name = super::evdev::Device::open(p, false)
            .map(|d| d.name())
            .unwrap_or_default();
        t.push_str(&format!(
            "      {}: {name}\n        Path: {}\n",
            i + 1,
            p.display()
        ));
    }
    t
}

pub fn run(args: &[String]) -> i32 {
    let s: Vec<&str> = args.iter().map(String::as_str).collect();
    let disp = || wm::load();
    let vp = crate::props::PropStore::default()
        .get("ro.cells.vp")
        .unwrap_or_default();
    let text = match s.as_slice() {
        ["-l"] => {
            let mut t = String::from("Currently running services:\n");
            for sv in SERVICES {
                t.push_str(&format!("  {sv}\n"));
            }
            t
        }
        ["display", ..] => match disp() {
            Ok(d) => display(&d, screen_on()),
            Err(e) => {
                eprintln!("dumpsys display: {e}");
                return 1;
            }
        },
        ["window", "displays", ..] => match disp() {
            Ok(d) => window_displays(&d, current_focus().as_ref()),
            Err(e) => {
                eprintln!("dumpsys window: {e}");
                return 1;
            }
        },
        ["window", "windows", ..] | ["window", "w", ..] => window_windows(current_focus().as_ref()),
        ["window", ..] => {
            let f = current_focus();
            let mut t = window_windows(f.as_ref());
            if let Ok(d) = disp() {
                t.push('\n');
                t.push_str(&window_displays(&d, f.as_ref()));
            }
            t
        }
        ["activity", "top", ..] => activity_top(current_focus().as_ref()),
        ["activity", ..] => activity_activities(current_focus().as_ref()),
        ["power", ..] => {
            let stay = super::settings::get("global", "stay_on_while_plugged_in")
                .is_some_and(|v| v != "0");
            power(screen_on(), &wake_locks(), stay)
        }
        ["battery", ..] => battery(),
        ["SurfaceFlinger", "--display-id", ..] => surface_flinger_ids(&vp),
        ["SurfaceFlinger", ..] => match disp() {
            Ok(d) => format!(
                "{}Display 0 HWC layers: {}x{}\n",
                surface_flinger_ids(&vp),
                d.physical.w,
                d.physical.h
            ),
            Err(e) => {
                eprintln!("dumpsys SurfaceFlinger: {e}");
                return 1;
            }
        },
        ["meminfo", ..] => meminfo(),
        ["input", ..] => input(),
        ["package", name] => match packages::find(name) {
            Some(p) => packages::dump(&p),
            None => format!("Unable to find package: {name}\n"),
        },
        ["package", ..] => {
            let mut t = String::from("Packages:\n");
            for p in packages::all() {
                t.push_str(&format!("  Package [{}]\n", p.name));
            }
            t
        }
        [svc, ..] => {
            eprintln!(
                "Can't find service: {svc} (a VP has: {})",
                SERVICES.join(", ")
            );
            return 1;
        }
        [] => {
            for sv in ["activity", "display", "power", "window"] {
                println!("-------------------------------------------------------------------------------\nDUMP OF SERVICE {sv}:");
                run(&[sv.to_string()]);
            }
            return 0;
        }
    };
    print!("{text}");
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn pkg() -> Package {
        packages::parse_manifest(
            "package=com.example.hello\nactivity=.Main bin/hello launcher\n",
            Path::new("/data/app/com.example.hello"),
            false,
        )
        .unwrap()
    }

    /// The regular expressions adbutils (2.12) and uiautomator2 apply.
    #[test]
    fn focus_lines_match_what_suites_parse() {
        let f = Focus::of(&pkg(), ".Main", 321);
        let w = window_windows(Some(&f));
        assert!(w.contains("  mCurrentFocus=Window{"), "{w}");
        assert!(
            w.contains(" u0 com.example.hello/com.example.hello.Main}\n"),
            "{w}"
        );
        assert!(w.contains("mFocusedApp=ActivityRecord{"), "{w}");
        assert!(w.contains(" u0 com.example.hello/.Main t1}"), "{w}");
        let a = activity_activities(Some(&f));
        assert!(a.contains("  mResumedActivity: ActivityRecord{"), "{a}");
        let t = activity_top(Some(&f));
        let line = t.lines().find(|l| l.starts_with("  ACTIVITY ")).unwrap();
        // ACTIVITY (pkg)/(act) \w+ pid=(\d+)
        let rest = line
            .trim()
            .strip_prefix("ACTIVITY com.example.hello/.Main ")
            .unwrap();
        let (h, pid) = rest.split_once(' ').unwrap();
        assert!(h.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(pid, "pid=321");
        assert!(window_windows(None).contains("mCurrentFocus=null"));
    }

    #[test]
    fn display_and_power_carry_what_suites_read() {
        let d = wm::Display {
            physical: wm::Size { w: 720, h: 1280 },
            override_size: None,
            density: 320,
            override_density: None,
        };
        let t = display(&d, true);
        assert!(t.contains("orientation=0,"));
        assert!(t.contains("DisplayViewport{type=INTERNAL, valid=true, isActive=true,"));
        assert!(t.contains("deviceWidth=720, deviceHeight=1280}"));
        let p = power(true, &["svc_power_stayon".into()], true);
        assert!(p.contains("mHoldingDisplaySuspendBlocker=true\n"));
        assert!(p.contains("mWakefulness=Awake\n"));
        assert!(power(false, &[], false).contains("mHoldingDisplaySuspendBlocker=false\n"));
        // adbutils: r"Display (\d+) " then `screencap -d ID`.
        assert!(surface_flinger_ids("a").starts_with("Display 0 (HWC display 0): "));
        let w = window_displays(&d, None);
        assert!(w.contains("init=720x1280 320dpi base=720x1280 320dpi cur=720x1280"));
        let b = battery();
        for k in ["AC powered: ", "level: ", "scale: 100", "technology: "] {
            assert!(b.contains(k), "{b}");
        }
    }
}
