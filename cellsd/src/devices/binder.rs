//! Binder: each VP gets its own binder device, seen as /dev/binder, so that
//! each VP has its own context manager and Android IPC never crosses VPs
//! (Cells did this with one binder context per device namespace).
//!
//! Backends, chosen by `cellsd --binder`:
//! - `binderfs` (kernels with CONFIG_ANDROID_BINDERFS): the VP's init mounts
//!   its own binderfs instance at /dev/binderfs (inside the VP's user
//!   namespace, so VP root owns it) and /dev/binder, /dev/hwbinder and
//!   /dev/vndbinder point into it;
//! - `pool` (binder_linux loaded with `devices=binder0,binder1,...`, as
//!   Debian's 6.1 kernel, which has no binderfs): cellsd gives each running
//!   VP one free device of the pool; its monitor hands it to VP root and binds
//!   it as /dev/binder;
//! - `none`: hosts without binder (this project's test host); VPs get none.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BinderMode {
    None,
    Binderfs,
    Pool(Vec<PathBuf>),
}

impl BinderMode {
    /// binderfs if the kernel has it, else the binder devices in `dev`.
    pub fn detect(dev: &Path) -> Self {
        let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
        if fs
            .lines()
            .any(|l| l.split_whitespace().last() == Some("binder"))
        {
            return BinderMode::Binderfs;
        }
        let pool = pool_in(dev);
        if pool.is_empty() {
            BinderMode::None
        } else {
            BinderMode::Pool(pool)
        }
    }

    pub fn parse(s: &str, dev: &Path) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::detect(dev)),
            "none" => Ok(BinderMode::None),
            "binderfs" => Ok(BinderMode::Binderfs),
            _ => match s.strip_prefix("pool:") {
                Some(list) => {
                    let v: Vec<PathBuf> = list
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .map(PathBuf::from)
                        .collect();
                    if v.is_empty() || v.iter().any(|p| !p.is_absolute()) {
                        return Err(format!("--binder {s}: give absolute device paths, e.g. pool:/dev/binder0,/dev/binder1"));
                    }
                    Ok(BinderMode::Pool(v))
                }
                None => Err(format!(
                    "--binder {s}: use auto, none, binderfs or pool:/dev/binder0,/dev/binder1,..."
                )),
            },
        }
    }
}

/// The binder devices of binder_linux's `devices=` list: binder<N> nodes.
pub fn pool_in(dev: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dev)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            n.strip_prefix("binder")
                .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit()))
        })
        .map(|e| e.path())
        .collect();
    v.sort_by_key(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.trim_start_matches("binder").parse::<u32>().ok())
            .unwrap_or(u32::MAX)
    });
    v
}

/// The first device of the pool that no running VP holds.
pub fn pick<'a>(pool: &'a [PathBuf], in_use: &[PathBuf]) -> Option<&'a PathBuf> {
    pool.iter().find(|p| !in_use.contains(p))
}

/// What the VP's init mounts for a binderfs instance, and the links in /dev.
pub const BINDERFS_DIR: &str = "/dev/binderfs";
pub const BINDERFS_LINKS: &[&str] = &["binder", "hwbinder", "vndbinder"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_is_found_in_numeric_order_and_shared_out() {
        let d = std::env::temp_dir().join(format!("binder-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        for n in [
            "binder10",
            "binder2",
            "binder",
            "binder-control",
            "hwbinder",
            "binderx",
        ] {
            std::fs::write(d.join(n), "").unwrap();
        }
        let pool = pool_in(&d);
        let names: Vec<_> = pool
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, ["binder2", "binder10"]);
        assert_eq!(pick(&pool, &[]), Some(&pool[0]));
        assert_eq!(pick(&pool, &[pool[0].clone()]), Some(&pool[1]));
        assert_eq!(pick(&pool, &pool.clone()), None);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn modes_parse() {
        let d = Path::new("/nonexistent");
        assert_eq!(BinderMode::parse("none", d).unwrap(), BinderMode::None);
        assert_eq!(
            BinderMode::parse("pool:/dev/binder0,/dev/binder1", d).unwrap(),
            BinderMode::Pool(vec!["/dev/binder0".into(), "/dev/binder1".into()])
        );
        assert!(BinderMode::parse("pool:binder0", d).is_err());
        assert!(BinderMode::parse("magic", d)
            .unwrap_err()
            .contains("auto, none, binderfs"));
    }
}
