//! `am` (activity manager) and `monkey` over the VP's app model
//! ([`super::packages`]): starting an activity runs its executable in its
//! own session (cwd its data folder, `CELLS_PACKAGE`/`CELLS_ACTIVITY` in the
//! environment); the most recently started activity that still runs has the
//! focus, else the home app (the persona).
//!
//! The activity stack is `/data/system/am/stack` (one `PKG ACTIVITY` line
//! each, oldest first). A package's processes are those whose environment
//! names it, or whose command runs one of its activities' executables (the
//! persona, started by init).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::packages::{self, Activity, Package};
use super::store::system_dir;

fn stack_file() -> PathBuf {
    system_dir().join("am").join("stack")
}

pub fn stack() -> Vec<(String, String)> {
    std::fs::read_to_string(stack_file())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (p, a) = l.split_once(' ')?;
            Some((p.to_string(), a.to_string()))
        })
        .collect()
}

fn save_stack(s: &[(String, String)]) {
    let path = stack_file();
    if let Some(d) = path.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    let text: String = s.iter().map(|(p, a)| format!("{p} {a}\n")).collect();
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, &path);
    }
}

fn proc_dir() -> PathBuf {
    std::env::var_os("CELLS_PROC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/proc"))
}

/// The pids of a package's processes (not this tool's own).
pub fn pids_of(p: &Package) -> Vec<i32> {
    let me = std::process::id() as i32;
    let execs: Vec<String> = p
        .activities
        .iter()
        .map(|a| p.exec_path(a).to_string_lossy().into_owned())
        .collect();
    let tag = format!("CELLS_PACKAGE={}", p.name);
    let mut out = Vec::new();
    for e in std::fs::read_dir(proc_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me || pid == 1 {
            continue;
        }
        let dir = e.path();
        // A zombie or a kernel thread has an empty command line.
        let cmd = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        if cmd.is_empty() {
            continue;
        }
        let argv: Vec<String> = cmd
            .split(|b| *b == 0)
            .take(2)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let by_exec = argv.iter().any(|a| execs.contains(a));
        let by_env = !by_exec
            && std::fs::read(dir.join("environ"))
                .unwrap_or_default()
                .split(|b| *b == 0)
                .any(|v| v == tag.as_bytes());
        if by_exec || by_env {
            out.push(pid);
        }
    }
    out.sort();
    out
}

/// The focused activity: (package, activity name as in the manifest, pid).
pub fn focus() -> Option<(Package, String, i32)> {
    for (p, a) in stack().into_iter().rev() {
        let Some(pkg) = packages::find(&p) else {
            continue;
        };
        if let Some(pid) = pids_of(&pkg).first() {
            return Some((pkg, a, *pid));
        }
    }
    let (pkg, a) = packages::home()?;
    let pid = *pids_of(&pkg).first()?;
    Some((pkg, a.name, pid))
}

pub fn force_stop(name: &str) {
    if let Some(p) = packages::find(name) {
        for pid in pids_of(&p) {
            // SAFETY: kill(2) on a pid we found; at worst ESRCH.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let s: Vec<_> = stack().into_iter().filter(|(p, _)| p != name).collect();
    save_stack(&s);
}

fn push_stack(p: &Package, a: &Activity) {
    let mut s: Vec<_> = stack()
        .into_iter()
        .filter(|(pp, aa)| !(pp == &p.name && p.full(aa) == p.full(&a.name)))
        .collect();
    s.push((p.name.clone(), a.name.clone()));
    // Bounded: the oldest entries go.
    let n = s.len().saturating_sub(64);
    save_stack(&s[n..]);
}

/// Run an activity's executable in its own session.
pub fn launch(p: &Package, a: &Activity) -> std::io::Result<u32> {
    let data = p.data_dir();
    let _ = std::fs::create_dir_all(&data);
    let mut cmd = Command::new(p.exec_path(a));
    cmd.current_dir(&data)
        .env("CELLS_PACKAGE", &p.name)
        .env("CELLS_ACTIVITY", p.full(&a.name))
        .env("HOME", &data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec the child only calls setsid and
    // sigprocmask (async-signal-safe).
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    let pid = child.id();
    // Not waited for: init reaps it once this tool has exited.
    std::mem::forget(child);
    push_stack(p, a);
    Ok(pid)
}

pub enum Started {
    Cold,
    /// Already running: brought to the front.
    Hot,
}

/// Start `act` of `pkg` (bring it to the front if it runs).
pub fn start(pkg: &Package, act: &Activity, stop_first: bool) -> Result<Started, String> {
    if stop_first {
        force_stop(&pkg.name);
    }
    if !pids_of(pkg).is_empty() {
        push_stack(pkg, act);
        return Ok(Started::Hot);
    }
    launch(pkg, act)
        .map(|_| Started::Cold)
        .map_err(|e| format!("cannot run {}: {e}", pkg.exec_path(act).display()))
}

/// An Intent as Android prints it.
fn intent_text(
    action: Option<&str>,
    data: Option<&str>,
    cats: &[String],
    cmp: Option<&str>,
) -> String {
    let mut parts = Vec::new();
    if let Some(a) = action {
        parts.push(format!("act={a}"));
    }
    if !cats.is_empty() {
        parts.push(format!("cat=[{}]", cats.join(",")));
    }
    if let Some(d) = data {
        parts.push(format!("dat={d}"));
    }
    if let Some(c) = cmp {
        parts.push(format!("cmp={c}"));
    }
    format!("Intent {{ {} }}", parts.join(" "))
}

/// What `am start -W` prints once the activity runs (Android 10+).
fn wait_text(component: &str, cold: bool, ms: u128) -> String {
    format!(
        "Status: ok\nLaunchState: {}\nActivity: {component}\nTotalTime: {ms}\nWaitTime: {ms}\nComplete\n",
        if cold { "COLD" } else { "HOT" }
    )
}

const USAGE: &str = "\
Activity manager (activity) commands:
  start [-W] [-S] [-n COMPONENT] [-a ACTION] [-c CATEGORY] [-d DATA] ...
  force-stop PACKAGE
  kill PACKAGE
  broadcast [-a ACTION] ...
  get-current-user
A cells VP's activities are those of its packages (pm list packages).
";

fn am_start(args: &[String]) -> i32 {
    let (mut wait, mut stop) = (false, false);
    let (mut cmp, mut action, mut data) = (None::<String>, None::<String>, None::<String>);
    let mut cats = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned();
        match args[i].as_str() {
            "-W" => wait = true,
            "-S" => stop = true,
            "-D" | "-N" | "-R" | "-P" | "--activity-clear-top" | "--activity-new-task" => {}
            "-n" => {
                cmp = v;
                i += 1;
            }
            "-a" => {
                action = v;
                i += 1;
            }
            "-d" => {
                data = v;
                i += 1;
            }
            "-c" => {
                cats.extend(v);
                i += 1;
            }
            "--user" | "-f" | "--start-profiler" | "--display" | "--windowingMode" => i += 1,
            // Extras: NAME VALUE pairs (or one NAME for --esn).
            "--esn" => i += 1,
            e if e.starts_with("--e") || e == "-e" => i += 2,
            s if !s.starts_with('-') && cmp.is_none() && s.contains('/') => {
                cmp = Some(s.to_string())
            }
            s => {
                eprintln!("Error: Unknown option: {s}");
                return 1;
            }
        }
        i += 1;
    }
    // Which activity: an explicit component, else HOME / a launcher match.
    let target: Option<(Package, Activity)> = match &cmp {
        Some(c) => {
            let Some((p, a)) = c.split_once('/') else {
                eprintln!("Error: Bad component name: {c}");
                return 1;
            };
            packages::find(p).and_then(|pkg| {
                let act = pkg.activity(a)?.clone();
                Some((pkg, act))
            })
        }
        None if cats.iter().any(|c| c == "android.intent.category.HOME") => packages::home(),
        None => None,
    };
    let shown_cmp = target
        .as_ref()
        .map(|(p, a)| format!("{}/{}", p.name, p.short(&a.name)))
        .or(cmp.clone());
    let intent = intent_text(
        action.as_deref(),
        data.as_deref(),
        &cats,
        shown_cmp.as_deref(),
    );
    let Some((pkg, act)) = target else {
        match &cmp {
            Some(c) => {
                let (p, a) = c.split_once('/').unwrap_or((c, ""));
                let full = if let Some(rest) = a.strip_prefix('.') {
                    format!("{p}.{rest}")
                } else {
                    a.to_string()
                };
                println!("Starting: {intent}");
                eprintln!("Error type 3");
                eprintln!("Error: Activity class {{{p}/{full}}} does not exist.");
            }
            None => {
                println!("Starting: {intent}");
                eprintln!("Error: Activity not started, unable to resolve {intent}");
            }
        }
        return 1;
    };
    println!("Starting: {intent}");
    let t0 = Instant::now();
    match start(&pkg, &act, stop) {
        Ok(how) => {
            let ms = t0.elapsed().as_millis();
            if matches!(how, Started::Hot) && !wait {
                println!(
                    "Warning: Activity not started, its current task has been brought to the front"
                );
            }
            if wait {
                print!(
                    "{}",
                    wait_text(
                        &format!("{}/{}", pkg.name, pkg.short(&act.name)),
                        matches!(how, Started::Cold),
                        ms
                    )
                );
            }
            0
        }
        Err(e) => {
            eprintln!("Error: {e}");
            1
        }
    }
}

pub fn run(args: &[String]) -> i32 {
    let s: Vec<&str> = args.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["start" | "start-activity", rest @ ..] => {
            let rest: Vec<String> = rest.iter().map(|x| x.to_string()).collect();
            am_start(&rest)
        }
        ["force-stop" | "kill", rest @ ..] => {
            match rest.iter().find(|r| !r.starts_with('-') && r.contains('.')) {
                Some(p) => {
                    force_stop(p);
                    0
                }
                None => {
                    eprintln!("Error: package name not specified");
                    1
                }
            }
        }
        ["broadcast", rest @ ..] => {
            let action = rest
                .iter()
                .position(|r| *r == "-a")
                .and_then(|i| rest.get(i + 1))
                .map(|a| a.to_string());
            // No receivers exist in a cells VP's app model.
            println!(
                "Broadcasting: {}",
                intent_text(action.as_deref(), None, &[], None)
            );
            println!("Broadcast completed: result=0");
            0
        }
        ["get-current-user"] => {
            println!("0");
            0
        }
        [] | ["help"] => {
            print!("{USAGE}");
            0
        }
        _ => {
            eprintln!("Unknown command: {}\n{USAGE}", s.join(" "));
            1
        }
    }
}

/// `monkey -p PKG -c android.intent.category.LAUNCHER 1`: start the
/// package's launcher activity (the one use suites make of it).
pub fn monkey(args: &[String]) -> i32 {
    let mut pkgs = Vec::new();
    let mut i = 0;
    let mut out = std::io::stdout().lock();
    while i < args.len() {
        let _ = writeln!(out, "  bash arg: {}", args[i]);
        if args[i] == "-p" {
            if let Some(p) = args.get(i + 1) {
                let _ = writeln!(out, "  bash arg: {p}");
                pkgs.push(p.clone());
                i += 1;
            }
        }
        i += 1;
    }
    let t0 = Instant::now();
    let target = pkgs.iter().find_map(|p| {
        let pkg = packages::find(p)?;
        let a = pkg.launcher()?.clone();
        Some((pkg, a))
    });
    let Some((pkg, act)) = target else {
        let _ = writeln!(out, "** No activities found to run, monkey aborted.");
        return 252;
    };
    if let Err(e) = start(&pkg, &act, false) {
        let _ = writeln!(out, "** monkey aborted: {e}");
        return 1;
    }
    let ms = t0.elapsed().as_millis();
    let _ = writeln!(out, "Events injected: 1");
    let _ = writeln!(
        out,
        "## Network stats: elapsed time={ms}ms (0ms mobile, 0ms wifi, {ms}ms not connected)"
    );
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Android 14's `am start` lines (an emulator), as suites parse them.
    #[test]
    fn start_texts_are_androids() {
        assert_eq!(
            format!(
                "Starting: {}\n{}",
                intent_text(None, None, &[], Some("com.android.settings/.Settings")),
                wait_text("com.android.settings/.Settings", true, 521)
            ),
            "Starting: Intent { cmp=com.android.settings/.Settings }\n\
             Status: ok\n\
             LaunchState: COLD\n\
             Activity: com.android.settings/.Settings\n\
             TotalTime: 521\n\
             WaitTime: 521\n\
             Complete\n"
        );
        assert_eq!(
            intent_text(
                Some("android.intent.action.MAIN"),
                None,
                &["android.intent.category.HOME".to_string()],
                None
            ),
            "Intent { act=android.intent.action.MAIN cat=[android.intent.category.HOME] }"
        );
        assert_eq!(
            intent_text(
                Some("android.intent.action.VIEW"),
                Some("https://example.com"),
                &[],
                Some("com.example/.Main")
            ),
            "Intent { act=android.intent.action.VIEW dat=https://example.com cmp=com.example/.Main }"
        );
    }
}
