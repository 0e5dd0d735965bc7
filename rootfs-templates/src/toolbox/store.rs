//! The toolbox's per-VP state: small `key=value` files under /data/system
//! (the VP's own writable /data, so each VP has its own and it survives
//! restarts). Written whole to a temporary file and renamed: a crash leaves
//! the old or the new file, never half of one.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where the toolbox keeps its state; `CELLS_DATA_SYSTEM` overrides it
/// (the tests run the tools outside a VP).
pub fn system_dir() -> PathBuf {
    std::env::var_os("CELLS_DATA_SYSTEM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/data/system"))
}

pub struct PropFile {
    path: PathBuf,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut it = v.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('n') => out.push('\n'),
                Some(o) => out.push(o),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl PropFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// `name` under [`system_dir`].
    pub fn system(name: &str) -> Self {
        Self::new(system_dir().join(name))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every entry; a missing or unreadable file is empty.
    pub fn load(&self) -> BTreeMap<String, String> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (unescape(k), unescape(v)))
            .collect()
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.load().remove(key)
    }

    pub fn set(&self, key: &str, value: &str) -> std::io::Result<()> {
        if key.is_empty() || key.contains(['=', '\n']) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bad name '{key}': a name is not empty and has no '=' or newline"),
            ));
        }
        let mut m = self.load();
        m.insert(key.to_string(), value.to_string());
        self.save(&m)
    }

    /// True if the key was there.
    pub fn remove(&self, key: &str) -> std::io::Result<bool> {
        let mut m = self.load();
        let had = m.remove(key).is_some();
        if had {
            self.save(&m)?;
        }
        Ok(had)
    }

    pub fn save(&self, m: &BTreeMap<String, String>) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut text = String::new();
        for (k, v) in m {
            text.push_str(&format!("{}={}\n", escape(k), escape(v)));
        }
        let tmp = self
            .path
            .with_extension(format!("tmp{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_with_newlines_and_equals() {
        let dir = std::env::temp_dir().join(format!("cells-store-{}", std::process::id()));
        let f = PropFile::new(dir.join("x.prop"));
        assert_eq!(f.get("a"), None);
        f.set("a", "1=2\nthree\\").unwrap();
        f.set("b", "").unwrap();
        assert_eq!(f.get("a").as_deref(), Some("1=2\nthree\\"));
        assert_eq!(f.get("b").as_deref(), Some(""));
        assert!(f.remove("a").unwrap());
        assert!(!f.remove("a").unwrap());
        assert_eq!(f.load().len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
