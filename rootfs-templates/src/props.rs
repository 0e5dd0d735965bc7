//! The VP's system properties, as Android has them (`getprop`, `setprop`).
//!
//! Three layers, looked up in this order:
//! 1. the runtime store `/dev/__properties__/properties`: made by the VP's
//!    monitor at every start with what cellsd knows (`ro.product.model` = the
//!    VP's name, `ro.serialno`, `ro.cells.vp`, ...), then changed by `setprop`;
//!    gone when the VP stops, like Android's property area at reboot;
//! 2. `persist.*` properties, also kept in `/data/property/persistent_properties`
//!    so they survive a restart of the VP;
//! 3. the template's `/system/build.prop` and `/vendor/build.prop`.
//!
//! `ro.*` properties are set once: a `setprop` of an `ro.*` name that already
//! has a value fails, as on Android. Writers take an exclusive `flock` on the
//! store and replace it atomically (write + rename), so readers never see a
//! half-written store and two `setprop`s never lose each other's value.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub const RUNTIME_DIR: &str = "/dev/__properties__";
pub const RUNTIME_FILE: &str = "properties";
pub const PERSIST_FILE: &str = "/data/property/persistent_properties";
pub const BUILD_PROPS: [&str; 2] = ["/system/build.prop", "/vendor/build.prop"];

/// Android's limits (system_properties.h): PROP_VALUE_MAX is 92 with the NUL;
/// names are not limited there any more, 256 keeps files sane.
pub const VALUE_MAX: usize = 91;
pub const NAME_MAX: usize = 256;

#[derive(Debug)]
pub enum PropError {
    BadName(String),
    ValueTooLong { name: String, len: usize },
    ReadOnly(String),
    Io(PathBuf, std::io::Error),
}

impl std::fmt::Display for PropError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PropError::BadName(n) => write!(
                f,
                "invalid property name {n:?}: use letters, digits and . _ - : @ (at most {NAME_MAX} characters)"
            ),
            PropError::ValueTooLong { name, len } => write!(
                f,
                "value of {name} is {len} bytes; property values are at most {VALUE_MAX} bytes (ro.* names excepted)"
            ),
            PropError::ReadOnly(n) => {
                write!(f, "{n} is read-only and already set: ro.* properties are set once per boot")
            }
            PropError::Io(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

impl std::error::Error for PropError {}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:@".contains(&b))
}

/// Parse `name=value` lines; `#` comments and blank lines are skipped, as in
/// build.prop. Later lines win.
pub fn parse(text: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let k = k.trim();
            if valid_name(k) {
                m.insert(k.to_string(), v.trim_end_matches(['\r', '\n']).to_string());
            }
        }
    }
    m
}

pub fn render(props: &BTreeMap<String, String>) -> String {
    let mut s = String::new();
    for (k, v) in props {
        // A value cannot span lines in the file format.
        s.push_str(k);
        s.push('=');
        s.push_str(&v.replace('\n', " "));
        s.push('\n');
    }
    s
}

/// Where a VP's properties live; the paths are parameters so the logic can
/// be tested outside a VP.
#[derive(Debug, Clone)]
pub struct PropStore {
    pub runtime: PathBuf,
    pub persist: PathBuf,
    pub build: Vec<PathBuf>,
}

impl Default for PropStore {
    fn default() -> Self {
        PropStore {
            runtime: Path::new(RUNTIME_DIR).join(RUNTIME_FILE),
            persist: PathBuf::from(PERSIST_FILE),
            build: BUILD_PROPS.iter().map(PathBuf::from).collect(),
        }
    }
}

fn read_map(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .map(|t| parse(&t))
        .unwrap_or_default()
}

impl PropStore {
    /// Every property with its effective value.
    pub fn all(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        for b in &self.build {
            m.extend(read_map(b));
        }
        m.extend(read_map(&self.persist));
        m.extend(read_map(&self.runtime));
        m
    }

    pub fn get(&self, name: &str) -> Option<String> {
        if let Some(v) = read_map(&self.runtime).remove(name) {
            return Some(v);
        }
        if let Some(v) = read_map(&self.persist).remove(name) {
            return Some(v);
        }
        self.build
            .iter()
            .rev()
            .find_map(|b| read_map(b).remove(name))
    }

    pub fn set(&self, name: &str, value: &str) -> Result<(), PropError> {
        if !valid_name(name) {
            return Err(PropError::BadName(name.to_string()));
        }
        let ro = name.starts_with("ro.");
        if !ro && value.len() > VALUE_MAX {
            return Err(PropError::ValueTooLong {
                name: name.to_string(),
                len: value.len(),
            });
        }
        let _lock = lock(&self.runtime)?;
        if ro && self.get(name).is_some() {
            return Err(PropError::ReadOnly(name.to_string()));
        }
        let mut m = read_map(&self.runtime);
        m.insert(name.to_string(), value.to_string());
        write_atomic(&self.runtime, &render(&m))?;
        if name.starts_with("persist.") {
            let mut p = read_map(&self.persist);
            p.insert(name.to_string(), value.to_string());
            if let Some(dir) = self.persist.parent() {
                std::fs::create_dir_all(dir).map_err(|e| PropError::Io(dir.to_path_buf(), e))?;
            }
            write_atomic(&self.persist, &render(&p))?;
        }
        Ok(())
    }
}

/// An exclusive lock next to the store (the store itself is replaced by
/// rename, so it cannot carry the lock).
fn lock(store: &Path) -> Result<std::fs::File, PropError> {
    let path = store.with_extension("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| PropError::Io(path.clone(), e))?;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(PropError::Io(path, std::io::Error::last_os_error()));
    }
    Ok(f)
}

fn write_atomic(path: &Path, text: &str) -> Result<(), PropError> {
    let tmp = path.with_extension("tmp");
    let io = |e| PropError::Io(path.to_path_buf(), e);
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> PropStore {
        std::fs::write(
            dir.join("build.prop"),
            "# template\nro.build.version.sdk=34\nro.product.model=generic\n",
        )
        .unwrap();
        std::fs::write(dir.join("properties"), "ro.product.model=work\n").unwrap();
        PropStore {
            runtime: dir.join("properties"),
            persist: dir.join("data/persistent_properties"),
            build: vec![dir.join("build.prop")],
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cells-props-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn layers_and_read_only() {
        let d = tmp("layers");
        let s = store(&d);
        assert_eq!(s.get("ro.product.model").as_deref(), Some("work"));
        assert_eq!(s.get("ro.build.version.sdk").as_deref(), Some("34"));
        assert!(matches!(
            s.set("ro.product.model", "x"),
            Err(PropError::ReadOnly(_))
        ));
        assert!(matches!(
            s.set("ro.build.version.sdk", "1"),
            Err(PropError::ReadOnly(_))
        ));
        s.set("ro.new", "first").unwrap();
        assert!(s.set("ro.new", "second").is_err());
        s.set("debug.x", "1").unwrap();
        s.set("debug.x", "2").unwrap();
        assert_eq!(s.get("debug.x").as_deref(), Some("2"));
        assert_eq!(s.get("missing"), None);
        let all = s.all();
        assert_eq!(all["ro.product.model"], "work");
        assert_eq!(all["debug.x"], "2");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn persist_survives_a_new_runtime_store() {
        let d = tmp("persist");
        let s = store(&d);
        s.set("persist.sys.locale", "fr-FR").unwrap();
        std::fs::write(d.join("properties"), "").unwrap();
        assert_eq!(s.get("persist.sys.locale").as_deref(), Some("fr-FR"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_input_changes_nothing() {
        let d = tmp("bad");
        let s = store(&d);
        for bad in ["", "a b", "a\nb", ".x", "x.", "a..b", &"n".repeat(300)] {
            assert!(
                matches!(s.set(bad, "1"), Err(PropError::BadName(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            s.set("debug.long", &"v".repeat(92)),
            Err(PropError::ValueTooLong { .. })
        ));
        s.set("debug.ok", &"v".repeat(91)).unwrap();
        // Sorted by name: nothing of the bad writes got in.
        assert_eq!(
            std::fs::read_to_string(d.join("properties")).unwrap(),
            format!("debug.ok={}\nro.product.model=work\n", "v".repeat(91))
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
