//! The VP's app model and `pm`.
//!
//! A *cells app package* is a tar archive (ustar or pax, as `tar` and
//! Python's tarfile write it) named `*.apk` so that `adb install` takes it,
//! holding a `cells-manifest.prop` and the app's files:
//!
//! ```text
//! package=com.example.hello        (letters, digits, _ and at least one '.')
//! versionCode=3
//! versionName=1.2
//! label=Hello
//! activity=.Main bin/hello launcher   (NAME EXECUTABLE [launcher] [home])
//! ```
//!
//! An activity's executable is a path in the package (or absolute, for
//! the template's own programs); `am start -n PKG/.Main` runs it. The
//! template's programs are *system packages*: `/system/app/*/cells-manifest.prop`
//! (the persona is `cells.persona`, the launcher). `pm install` unpacks a
//! package into `/data/app/PKG/` (keeping the file as `base.apk`) and makes
//! its data folder `/data/data/PKG/`; everything is the VP's own.
//! A real Android APK (a zip of dex code) is refused with a clear reason:
//! a VP runs Linux programs, not an Android runtime.

use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::store::system_dir;

pub const MANIFEST: &str = "cells-manifest.prop";
pub const BASE_APK: &str = "base.apk";

fn root(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}
pub fn system_app_dir() -> PathBuf {
    root("CELLS_SYSTEM_APP", "/system/app")
}
pub fn data_app_dir() -> PathBuf {
    root("CELLS_DATA_APP", "/data/app")
}
pub fn data_data_dir() -> PathBuf {
    root("CELLS_DATA_DATA", "/data/data")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    /// As the manifest names it: ".Main" or "com.example.Main".
    pub name: String,
    pub exec: String,
    pub launcher: bool,
    pub home: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version_code: u64,
    pub version_name: String,
    pub label: String,
    pub activities: Vec<Activity>,
    pub dir: PathBuf,
    pub system: bool,
}

impl Package {
    /// The file `pm path` names.
    pub fn path(&self) -> PathBuf {
        if self.system {
            self.dir.join(MANIFEST)
        } else {
            self.dir.join(BASE_APK)
        }
    }

    /// An activity's full class name ("com.example.Main").
    pub fn full(&self, act: &str) -> String {
        match act.strip_prefix('.') {
            Some(rest) => format!("{}.{rest}", self.name),
            None => act.to_string(),
        }
    }

    /// Android's short form ("com.example/.Main" when it can).
    pub fn short(&self, act: &str) -> String {
        let full = self.full(act);
        match full.strip_prefix(&format!("{}.", self.name)) {
            Some(rest) => format!(".{rest}"),
            None => full,
        }
    }

    pub fn activity(&self, act: &str) -> Option<&Activity> {
        let want = self.full(act);
        self.activities.iter().find(|a| self.full(&a.name) == want)
    }

    pub fn launcher(&self) -> Option<&Activity> {
        self.activities.iter().find(|a| a.launcher)
    }

    /// The executable of an activity, absolute.
    pub fn exec_path(&self, a: &Activity) -> PathBuf {
        if a.exec.starts_with('/') {
            PathBuf::from(&a.exec)
        } else {
            self.dir.join(&a.exec)
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        data_data_dir().join(&self.name)
    }
}

pub fn valid_package_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 255
        && n.contains('.')
        && n.split('.').all(|p| {
            !p.is_empty()
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !p.starts_with(|c: char| c.is_ascii_digit())
        })
}

/// Parse a manifest; `dir` is where the package lives.
pub fn parse_manifest(text: &str, dir: &Path, system: bool) -> Result<Package, String> {
    let mut p = Package {
        name: String::new(),
        version_code: 1,
        version_name: "1.0".into(),
        label: String::new(),
        activities: Vec::new(),
        dir: dir.to_path_buf(),
        system,
    };
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!(
                "{MANIFEST} line {}: not key=value: {line:?}",
                n + 1
            ));
        };
        let v = v.trim();
        match k.trim() {
            "package" => p.name = v.to_string(),
            "versionCode" => {
                p.version_code = v
                    .parse()
                    .map_err(|_| format!("{MANIFEST}: versionCode {v:?} is not a number"))?
            }
            "versionName" => p.version_name = v.to_string(),
            "label" => p.label = v.to_string(),
            "activity" => {
                let mut w = v.split_whitespace();
                let (Some(name), Some(exec)) = (w.next(), w.next()) else {
                    return Err(format!(
                        "{MANIFEST} line {}: activity=NAME EXECUTABLE [launcher] [home]",
                        n + 1
                    ));
                };
                let flags: Vec<&str> = w.collect();
                if let Some(f) = flags.iter().find(|f| !["launcher", "home"].contains(f)) {
                    return Err(format!("{MANIFEST} line {}: unknown flag {f:?}", n + 1));
                }
                if !exec.starts_with('/') && !safe_relative(exec) {
                    return Err(format!(
                        "{MANIFEST}: activity {name}: {exec:?} must be a path inside the package"
                    ));
                }
                p.activities.push(Activity {
                    name: name.to_string(),
                    exec: exec.to_string(),
                    launcher: flags.contains(&"launcher"),
                    home: flags.contains(&"home"),
                });
            }
            _ => {} // later keys are ignored, as unknown manifest attributes are
        }
    }
    // The system's own package is "android"; an app's name has two parts.
    if !(valid_package_name(&p.name) || (system && p.name == "android")) {
        return Err(format!(
            "{MANIFEST}: package name {:?} is invalid: use letters, digits and _ in at least two parts separated by '.' (com.example.app)",
            p.name
        ));
    }
    if p.label.is_empty() {
        p.label = p.name.clone();
    }
    Ok(p)
}

fn load_dir(dir: &Path, system: bool) -> Option<Package> {
    let text = std::fs::read_to_string(dir.join(MANIFEST)).ok()?;
    parse_manifest(&text, dir, system).ok()
}

/// Every package: the template's, then the installed ones.
pub fn all() -> Vec<Package> {
    let mut out = Vec::new();
    for (base, system) in [(system_app_dir(), true), (data_app_dir(), false)] {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&base)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        dirs.sort();
        for d in dirs {
            if let Some(p) = load_dir(&d, system) {
                if !out.iter().any(|o: &Package| o.name == p.name) {
                    out.push(p);
                }
            }
        }
    }
    out
}

pub fn find(name: &str) -> Option<Package> {
    all().into_iter().find(|p| p.name == name)
}

/// The home app (the launcher every VP returns to).
pub fn home() -> Option<(Package, Activity)> {
    all().into_iter().find_map(|p| {
        let a = p.activities.iter().find(|a| a.home)?.clone();
        Some((p, a))
    })
}

fn safe_relative(p: &str) -> bool {
    let path = Path::new(p);
    !p.is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && path.components().any(|c| matches!(c, Component::Normal(_)))
}

/// One member of a tar archive.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    Dir {
        path: String,
    },
}

fn octal(field: &[u8]) -> Option<u64> {
    let s: String = field
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// The members of a ustar/pax/GNU tar archive: regular files and
/// folders only, with safe relative paths.
pub fn read_tar(data: &[u8]) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    let mut off = 0usize;
    let mut long_name: Option<String> = None;
    let mut ended = false;
    while off + 512 <= data.len() {
        let h = &data[off..off + 512];
        if h.iter().all(|b| *b == 0) {
            ended = true;
            break;
        }
        let size = octal(&h[124..136]).ok_or("a tar header has a bad size field")? as usize;
        let body_start = off + 512;
        let body_end = body_start
            .checked_add(size)
            .filter(|e| *e <= data.len())
            .ok_or("the archive is cut short")?;
        let body = &data[body_start..body_end];
        off = body_start + size.div_ceil(512) * 512;
        let kind = h[156];
        let mut name = cstr(&h[0..100]);
        if &h[257..262] == b"ustar" {
            let prefix = cstr(&h[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        match kind {
            b'x' => {
                // pax: "LEN key=value\n" records; only path matters here.
                let text = String::from_utf8_lossy(body);
                for rec in text.split('\n') {
                    if let Some((_, kv)) = rec.split_once(' ') {
                        if let Some(p) = kv.strip_prefix("path=") {
                            long_name = Some(p.to_string());
                        }
                    }
                }
                continue;
            }
            b'g' => continue,
            b'L' => {
                long_name = Some(cstr(body));
                continue;
            }
            _ => {}
        }
        if let Some(l) = long_name.take() {
            name = l;
        }
        let clean = name
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        if clean.is_empty() || clean == "." {
            continue;
        }
        if !safe_relative(&clean) {
            return Err(format!(
                "member {name:?} is not a path inside the package (absolute or with ..)"
            ));
        }
        match kind {
            b'0' | 0 | b'7' => out.push(Entry::File {
                path: clean,
                mode: octal(&h[100..108]).unwrap_or(0o644) as u32 & 0o7777,
                data: body.to_vec(),
            }),
            b'5' => out.push(Entry::Dir { path: clean }),
            b'1' | b'2' => {
                return Err(format!(
                    "member {name:?} is a link: a cells app package holds files and folders only"
                ))
            }
            k => {
                return Err(format!(
                    "member {name:?} is of tar type {:?}: a cells app package holds files and folders only",
                    k as char
                ))
            }
        }
    }
    if !ended && off != data.len() {
        return Err("the archive is cut short".into());
    }
    Ok(out)
}

/// Why an install failed, as Android's `Failure [CODE: message]`.
#[derive(Debug)]
pub struct Failure {
    pub code: &'static str,
    pub msg: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.msg.is_empty() {
            write!(f, "Failure [{}]", self.code)
        } else {
            write!(f, "Failure [{}: {}]", self.code, self.msg)
        }
    }
}

fn fail(code: &'static str, msg: impl Into<String>) -> Failure {
    Failure {
        code,
        msg: msg.into(),
    }
}

pub struct InstallFlags {
    pub replace: bool,
    pub downgrade: bool,
}

fn write_entries(dir: &Path, entries: &[Entry]) -> std::io::Result<()> {
    for e in entries {
        match e {
            Entry::Dir { path } => std::fs::create_dir_all(dir.join(path))?,
            Entry::File { path, mode, data } => {
                let p = dir.join(path);
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let m = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(m)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&p)?;
                std::io::Write::write_all(&mut f, data)?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m))?;
            }
        }
    }
    Ok(())
}

/// `pm install FILE`: unpack, check, put in place. Returns the package.
pub fn install(file: &Path, flags: &InstallFlags) -> Result<Package, Failure> {
    let mut data = Vec::new();
    std::fs::File::open(file)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|e| {
            fail(
                "INSTALL_FAILED_INVALID_URI",
                format!("cannot read {}: {e}", file.display()),
            )
        })?;
    if data.starts_with(b"PK\x03\x04") {
        return Err(fail(
            "INSTALL_PARSE_FAILED_NOT_APK",
            format!(
                "{} is an Android APK (a zip of dex code); a cells VP runs Linux programs packaged as cells app packages (a tar with {MANIFEST}, see docs/ADB.md)",
                file.display()
            ),
        ));
    }
    let entries = read_tar(&data).map_err(|e| {
        fail(
            "INSTALL_FAILED_INVALID_APK",
            format!("{}: {e}", file.display()),
        )
    })?;
    let manifest = entries
        .iter()
        .find_map(|e| match e {
            Entry::File { path, data, .. } if path == MANIFEST => {
                Some(String::from_utf8_lossy(data).into_owned())
            }
            _ => None,
        })
        .ok_or_else(|| {
            fail(
                "INSTALL_FAILED_INVALID_APK",
                format!(
                    "{} has no {MANIFEST}: not a cells app package (see docs/ADB.md)",
                    file.display()
                ),
            )
        })?;
    let apps = data_app_dir();
    let target = |name: &str| apps.join(name);
    let pkg = parse_manifest(&manifest, Path::new("/"), false)
        .map_err(|e| fail("INSTALL_PARSE_FAILED_MANIFEST_MALFORMED", e))?;
    let pkg = Package {
        dir: target(&pkg.name),
        ..pkg
    };
    for a in &pkg.activities {
        if !a.exec.starts_with('/')
            && !entries
                .iter()
                .any(|e| matches!(e, Entry::File { path, .. } if *path == a.exec.trim_start_matches("./")))
        {
            return Err(fail(
                "INSTALL_FAILED_INVALID_APK",
                format!("activity {} runs {} which the package does not hold", a.name, a.exec),
            ));
        }
    }
    if let Some(old) = find(&pkg.name) {
        if old.system {
            return Err(fail(
                "INSTALL_FAILED_DUPLICATE_PACKAGE",
                format!("{} is a system package of this VP's template", pkg.name),
            ));
        }
        if !flags.replace {
            return Err(fail(
                "INSTALL_FAILED_ALREADY_EXISTS",
                format!(
                    "Attempt to re-install {} without first uninstalling.",
                    pkg.name
                ),
            ));
        }
        if old.version_code > pkg.version_code && !flags.downgrade {
            return Err(fail(
                "INSTALL_FAILED_VERSION_DOWNGRADE",
                format!(
                    "Downgrade detected: Update version code {} is older than current {}",
                    pkg.version_code, old.version_code
                ),
            ));
        }
    }
    let io = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| fail("INSTALL_FAILED_INTERNAL_ERROR", format!("{what}: {e}"))
    };
    std::fs::create_dir_all(&apps).map_err(io(&format!("create {}", apps.display())))?;
    let stage = apps.join(format!(".stage-{}-{}", pkg.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir(&stage).map_err(io(&format!("create {}", stage.display())))?;
    let staged = write_entries(&stage, &entries)
        .and_then(|_| std::fs::write(stage.join(BASE_APK), &data))
        .map_err(io("unpack"));
    if let Err(e) = staged {
        let _ = std::fs::remove_dir_all(&stage);
        return Err(e);
    }
    let dest = target(&pkg.name);
    let old = apps.join(format!(".old-{}-{}", pkg.name, std::process::id()));
    let had = dest.exists();
    if had {
        std::fs::rename(&dest, &old).map_err(io("replace"))?;
    }
    if let Err(e) = std::fs::rename(&stage, &dest) {
        if had {
            let _ = std::fs::rename(&old, &dest);
        }
        let _ = std::fs::remove_dir_all(&stage);
        return Err(io("install")(e));
    }
    let _ = std::fs::remove_dir_all(&old);
    let data_dir = pkg.data_dir();
    std::fs::create_dir_all(&data_dir).map_err(io(&format!("create {}", data_dir.display())))?;
    let now = now_secs().to_string();
    let times = system_dir().join("packages");
    let _ = std::fs::create_dir_all(&times);
    let first = std::fs::read_to_string(times.join(format!("{}.first", pkg.name)))
        .ok()
        .filter(|_| had)
        .unwrap_or_else(|| now.clone());
    let _ = std::fs::write(times.join(format!("{}.first", pkg.name)), first);
    let _ = std::fs::write(times.join(format!("{}.updated", pkg.name)), &now);
    Ok(pkg)
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// "YYYY-MM-DD HH:MM:SS" (UTC) of a Unix time.
pub fn date_time(secs: u64) -> String {
    let (y, m, d) = cells_log::format::civil_from_days((secs / 86400) as i64);
    let rem = secs % 86400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn install_times(p: &Package) -> (u64, u64) {
    let dir = system_dir().join("packages");
    let read = |ext: &str| {
        std::fs::read_to_string(dir.join(format!("{}.{ext}", p.name)))
            .ok()
            .and_then(|t| t.trim().parse().ok())
    };
    let fallback = std::fs::metadata(p.path())
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (
        read("first").unwrap_or(fallback),
        read("updated").unwrap_or(fallback),
    )
}

/// A digest of the package's file (FNV-1a 64): what `dumpsys package`
/// shows where Android shows the signing certificate.
pub fn digest(p: &Package) -> String {
    let data = std::fs::read(p.path()).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// `dumpsys package PKG` (the lines suites parse).
pub fn dump(p: &Package) -> String {
    let (first, updated) = install_times(p);
    let flags = if p.system {
        "[ SYSTEM HAS_CODE ALLOW_CLEAR_USER_DATA ]"
    } else {
        "[ HAS_CODE ALLOW_CLEAR_USER_DATA ]"
    };
    let hash = &digest(p)[..8];
    let mut t = String::from("Packages:\n");
    t.push_str(&format!("  Package [{}] ({hash}):\n", p.name));
    t.push_str("    userId=10000\n");
    t.push_str(&format!("    pkg=Package{{{hash} {}}}\n", p.name));
    t.push_str(&format!("    codePath={}\n", p.dir.display()));
    t.push_str(&format!("    dataDir={}\n", p.data_dir().display()));
    t.push_str(&format!(
        "    versionCode={} minSdk=21 targetSdk=34\n",
        p.version_code
    ));
    t.push_str(&format!("    versionName={}\n", p.version_name));
    t.push_str(&format!("    flags={flags}\n"));
    t.push_str(&format!("    timeStamp={}\n", date_time(updated)));
    t.push_str(&format!("    firstInstallTime={}\n", date_time(first)));
    t.push_str(&format!("    lastUpdateTime={}\n", date_time(updated)));
    t.push_str(&format!(
        "    signatures=PackageSignatures{{{hash} version:3, signatures:[{}], past signatures:[]}}\n",
        &digest(p)
    ));
    t.push_str(&format!("    pkgFlags={flags}\n"));
    for a in &p.activities {
        t.push_str(&format!(
            "    activity {}/{} exec={}{}\n",
            p.name,
            p.short(&a.name),
            p.exec_path(a).display(),
            if a.launcher { " (launcher)" } else { "" }
        ));
    }
    t
}

const USAGE: &str = "\
Package manager (package) commands:
  list packages [-f] [-d] [-e] [-s] [-3] [-i] [-u] [--user USER_ID] [FILTER]
  path PACKAGE
  install [-r] [-t] [-d] [-g] PATH
  uninstall [-k] PACKAGE
  clear PACKAGE
  dump PACKAGE
A cells VP's packages are cells app packages (a tar with cells-manifest.prop),
see docs/ADB.md.
";

pub fn run(args: &[String]) -> i32 {
    let mut a: Vec<String> = args.to_vec();
    if let Some(i) = a.iter().position(|x| x == "--user") {
        a.drain(i..(i + 2).min(a.len()));
    }
    let s: Vec<&str> = a.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["list", "packages", rest @ ..] => {
            let mut files = false;
            let mut only: Option<bool> = None; // Some(true): system only
            let mut filter = None;
            for r in rest {
                match *r {
                    "-f" => files = true,
                    "-s" => only = Some(true),
                    "-3" => only = Some(false),
                    "-d" => return 0, // nothing is disabled
                    "-e" | "-i" | "-u" | "-U" | "--show-versioncode" => {}
                    f if !f.starts_with('-') => filter = Some(f.to_string()),
                    f => {
                        eprintln!("Error: Unknown option: {f}");
                        return 1;
                    }
                }
            }
            for p in all() {
                if only.is_some_and(|sys| sys != p.system) {
                    continue;
                }
                if filter
                    .as_ref()
                    .is_some_and(|f| !p.name.contains(f.as_str()))
                {
                    continue;
                }
                if files {
                    println!("package:{}={}", p.path().display(), p.name);
                } else {
                    println!("package:{}", p.name);
                }
            }
            0
        }
        ["path", name] => match find(name) {
            Some(p) => {
                println!("package:{}", p.path().display());
                0
            }
            None => 1,
        },
        ["install", rest @ ..] => {
            let mut flags = InstallFlags {
                replace: false,
                downgrade: false,
            };
            let mut path = None;
            let mut i = 0;
            while i < rest.len() {
                match rest[i] {
                    "-r" => flags.replace = true,
                    "-d" => flags.downgrade = true,
                    "-t" | "-g" | "-f" | "-l" | "--dont-kill" | "--fastdeploy" => {}
                    "-i" | "--user" | "--install-reason" | "-S" => i += 1,
                    f if f.starts_with('-') => {
                        println!("Failure [INSTALL_FAILED_INTERNAL_ERROR: unknown option {f}]");
                        return 1;
                    }
                    p => path = Some(p.to_string()),
                }
                i += 1;
            }
            let Some(path) = path else {
                eprintln!("Error: no package specified\n{USAGE}");
                return 1;
            };
            match install(Path::new(&path), &flags) {
                Ok(p) => {
                    super::am::force_stop(&p.name);
                    println!("Success");
                    0
                }
                Err(f) => {
                    println!("{f}");
                    1
                }
            }
        }
        ["uninstall", rest @ ..] => {
            let keep = rest.contains(&"-k");
            let Some(name) = rest.iter().find(|r| !r.starts_with('-')) else {
                eprintln!("Error: package name not specified");
                return 1;
            };
            match find(name) {
                Some(p) if !p.system => {
                    super::am::force_stop(&p.name);
                    let gone = std::fs::remove_dir_all(&p.dir);
                    if !keep {
                        let _ = std::fs::remove_dir_all(p.data_dir());
                    }
                    let dir = system_dir().join("packages");
                    let _ = std::fs::remove_file(dir.join(format!("{}.first", p.name)));
                    let _ = std::fs::remove_file(dir.join(format!("{}.updated", p.name)));
                    match gone {
                        Ok(()) => {
                            println!("Success");
                            0
                        }
                        Err(e) => {
                            println!("Failure [DELETE_FAILED_INTERNAL_ERROR: {e}]");
                            1
                        }
                    }
                }
                _ => {
                    println!("Failure [DELETE_FAILED_INTERNAL_ERROR]");
                    1
                }
            }
        }
        ["clear", name] => match find(name) {
            Some(p) => {
                super::am::force_stop(&p.name);
                let d = p.data_dir();
                let _ = std::fs::remove_dir_all(&d);
                match std::fs::create_dir_all(&d) {
                    Ok(()) => {
                        println!("Success");
                        0
                    }
                    Err(e) => {
                        eprintln!("pm clear: {}: {e}", d.display());
                        println!("Failed");
                        1
                    }
                }
            }
            None => {
                println!("Failed");
                1
            }
        },
        ["dump", name] => match find(name) {
            Some(p) => {
                print!("{}", dump(&p));
                0
            }
            None => 1,
        },
        ["grant", ..] | ["revoke", ..] => 0,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, size: usize, kind: u8) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000755");
        let s = format!("{size:011o}");
        h[124..135].copy_from_slice(s.as_bytes());
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h
    }

    fn tar(members: &[(&str, &[u8], u8)]) -> Vec<u8> {
        let mut t = Vec::new();
        for (n, d, k) in members {
            t.extend(header(n, d.len(), *k));
            t.extend_from_slice(d);
            t.resize(t.len().div_ceil(512) * 512, 0);
        }
        t.extend(vec![0u8; 1024]);
        t
    }

    #[test]
    fn tar_members_are_read_and_escapes_refused() {
        let t = tar(&[("./bin/", b"", b'5'), ("./bin/app", b"#!/bin/sh\n", b'0')]);
        let e = read_tar(&t).unwrap();
        assert_eq!(
            e,
            vec![
                Entry::Dir { path: "bin".into() },
                Entry::File {
                    path: "bin/app".into(),
                    mode: 0o755,
                    data: b"#!/bin/sh\n".to_vec()
                }
            ]
        );
        assert!(read_tar(&tar(&[("../x", b"", b'0')]))
            .unwrap_err()
            .contains("inside"));
        assert!(read_tar(&tar(&[("/etc/x", b"", b'0')]))
            .unwrap_err()
            .contains("inside"));
        assert!(read_tar(&tar(&[("l", b"", b'2')]))
            .unwrap_err()
            .contains("link"));
        // pax path records win over the header's name.
        let pax = b"30 path=long/name/of/a/file\n";
        let t = tar(&[("PaxHeader", pax, b'x'), ("short", b"x", b'0')]);
        assert!(
            matches!(&read_tar(&t).unwrap()[0], Entry::File { path, .. } if path == "long/name/of/a/file")
        );
        assert!(read_tar(&t[..600]).unwrap_err().contains("cut short"));
    }

    #[test]
    fn manifests_parse_and_name_their_errors() {
        let p = parse_manifest(
            "package=com.example.hello\nversionCode=3\nversionName=1.2\nactivity=.Main bin/hello launcher\n",
            Path::new("/data/app/com.example.hello"),
            false,
        )
        .unwrap();
        assert_eq!(p.version_code, 3);
        assert_eq!(p.short("com.example.hello.Main"), ".Main");
        assert_eq!(p.full(".Main"), "com.example.hello.Main");
        assert!(p.activity("com.example.hello.Main").is_some());
        assert_eq!(p.launcher().map(|a| a.exec.as_str()), Some("bin/hello"));
        assert_eq!(
            p.exec_path(&p.activities[0]),
            PathBuf::from("/data/app/com.example.hello/bin/hello")
        );
        let e = parse_manifest("package=nodots\n", Path::new("/"), false).unwrap_err();
        assert!(e.contains("invalid"), "{e}");
        let e = parse_manifest(
            "package=a.b\nactivity=.M ../../bin/sh\n",
            Path::new("/"),
            false,
        )
        .unwrap_err();
        assert!(e.contains("inside the package"), "{e}");
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(date_time(0), "1970-01-01 00:00:00");
        assert_eq!(date_time(1_796_601_600), "2026-12-07 00:00:00");
        assert_eq!(date_time(951_782_400 + 3661), "2000-02-29 01:01:01");
    }
}
