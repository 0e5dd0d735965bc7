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
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::devices::model::{self, DeviceSpec, Policy};
use crate::devices::registry::{
    io, Attach, Detach, Device, DeviceError, DeviceRequest, HostDevice, Made, Prepare, VpCtx,
};

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

/// Where cellsd remembers which host uid used each pool device since boot
/// (a tmpfs: binder_linux forgets at reboot too).
pub const OWNERS_DIR: &str = "/run/cells-binder";

/// binder_linux lets a device's context manager be set again only by the
/// uid that set it first (`binder_context_mgr_uid` outlives the process),
/// so a device once used by one VP's root is that VP's until reboot. The
/// uid each device was given to, from `owners` (device name -> uid).
pub fn owner_of(owners: &Path, dev: &Path) -> Option<u32> {
    let name = dev.file_name()?;
    std::fs::read_to_string(owners.join(name))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Record that `dev` is `uid`'s from now on.
pub fn record_owner(owners: &Path, dev: &Path, uid: u32) -> std::io::Result<()> {
    std::fs::create_dir_all(owners)?;
    std::fs::set_permissions(owners, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let name = dev.file_name().unwrap_or_default();
    crate::layout::write_atomic(&owners.join(name), uid.to_string().as_bytes())
}

/// The device for a VP whose root is host `uid`: one no running VP holds
/// that this uid already used, else one nobody used yet.
pub fn pick<'a>(
    pool: &'a [PathBuf],
    in_use: &[PathBuf],
    uid: u32,
    owner: impl Fn(&Path) -> Option<u32>,
) -> Option<&'a PathBuf> {
    let free = || pool.iter().filter(|p| !in_use.contains(p));
    free()
        .find(|p| owner(p) == Some(uid))
        .or_else(|| free().find(|p| owner(p).is_none()))
}

/// What the VP's init mounts for a binderfs instance, and the links in /dev.
pub const BINDERFS_DIR: &str = "/dev/binderfs";
pub const BINDERFS_LINKS: &[&str] = &["binder", "hwbinder", "vndbinder"];

pub const DEVICE: Device = Device {
    spec: DeviceSpec {
        name: model::BINDER,
        default: Policy::Shared,
        policies: &[Policy::Shared, Policy::None],
        about: "/dev/binder: a binder device of the VP's own (binderfs or one of binder_linux's pool), where the host has binder",
    },
    vp_side,
};

/// The VP's binder device, as cellsd prepared it for the monitor.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum BinderRequest {
    #[default]
    None,
    /// The init mounts its own binderfs instance.
    Binderfs,
    /// This node of binder_linux's pool becomes the VP's /dev/binder.
    Device(PathBuf),
}

impl BinderRequest {
    /// What cellsd prepared for a VP's start.
    pub fn of(request: &DeviceRequest) -> Self {
        request.config_of(model::BINDER).unwrap_or_default()
    }
}

/// The pool binder device, this VP root's while it runs, through a private
/// node (the host's node keeps its owner and mode); binderfs is mounted by
/// the init itself.
fn vp_side(c: &VpCtx<'_>, m: &mut Made) -> Result<(), DeviceError> {
    match BinderRequest::of(c.request) {
        BinderRequest::None => {}
        BinderRequest::Binderfs => m.binderfs = true,
        BinderRequest::Device(node) => {
            let private = c.dir.join("binder");
            crate::sys::private_node(&node, &private, c.owner, 0o600).map_err(io("binder node"))?;
            m.nodes.push((private, "/dev/binder".to_string()));
            m.fds.binder = Some(node);
        }
    }
    Ok(())
}

/// cellsd's side: binder_linux pool devices held by running (or starting)
/// VPs; a device is held from the start that reserved it until its VP ends.
pub struct BinderHost {
    mode: BinderMode,
    held: Mutex<Vec<PathBuf>>,
}

impl BinderHost {
    pub fn new(mode: BinderMode) -> Self {
        Self {
            mode,
            held: Mutex::new(Vec::new()),
        }
    }

    pub fn held(&self) -> MutexGuard<'_, Vec<PathBuf>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn release(&self, dev: &Path) {
        self.held().retain(|x| x != dev);
    }
}

impl HostDevice for BinderHost {
    fn name(&self) -> &'static str {
        model::BINDER
    }

    /// The binder device for a starting VP (reserved until it ends; from
    /// the pool, one this VP's uid used before or one nobody used).
    fn prepare(&self, p: &Prepare<'_>) -> Result<Option<serde_json::Value>, DeviceError> {
        if p.policy == Policy::None {
            return Ok(None);
        }
        let request = match &self.mode {
            BinderMode::None => return Ok(None),
            BinderMode::Binderfs => BinderRequest::Binderfs,
            BinderMode::Pool(pool) => {
                let owners = Path::new(OWNERS_DIR);
                let mut held = self.held();
                let Some(dev) = pick(pool, &held, p.uid, |d| owner_of(owners, d)).cloned() else {
                    return Err(DeviceError::Refused(format!(
                        "no binder device for VP '{}': of the {} devices, the free ones have had \
                         another VP as their context manager since boot (binder_linux keeps that); \
                         load binder_linux with more devices= (or stop a VP)",
                        p.vp,
                        pool.len()
                    )));
                };
                record_owner(owners, &dev, p.uid)
                    .map_err(io("recording the binder device's owner"))?;
                held.push(dev.clone());
                BinderRequest::Device(dev)
            }
        };
        serde_json::to_value(request)
            .map(Some)
            .map_err(|e| DeviceError::Refused(e.to_string()))
    }

    fn unprepare(&self, _vp: &str, request: &DeviceRequest) {
        if let BinderRequest::Device(b) = BinderRequest::of(request) {
            self.release(&b);
        }
    }

    /// An adopted VP's device is held again (a started VP's already is).
    fn attach(&self, a: &Attach<'_>) -> Result<(), DeviceError> {
        if let Some(b) = &a.fds.binder {
            let mut held = self.held();
            if !held.contains(b) {
                held.push(b.clone());
            }
        }
        Ok(())
    }

    fn detach(&self, d: &Detach<'_>) {
        if let Some(b) = &d.fds.binder {
            self.release(b);
        }
    }

    /// Every VP has its own binder device: a switch changes nothing.
    fn set_foreground(&self, _: Option<&str>) {}

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

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
        let none = |_: &Path| None;
        assert_eq!(pick(&pool, &[], 7, none), Some(&pool[0]));
        assert_eq!(pick(&pool, &[pool[0].clone()], 7, none), Some(&pool[1]));
        assert_eq!(pick(&pool, &pool.clone(), 7, none), None);
        // Devices remember their first context manager's uid.
        let owners = d.join("owners");
        record_owner(&owners, &pool[0], 1000).unwrap();
        assert_eq!(owner_of(&owners, &pool[0]), Some(1000));
        let own = |p: &Path| owner_of(&owners, p);
        assert_eq!(pick(&pool, &[], 1000, own), Some(&pool[0]), "its own again");
        assert_eq!(
            pick(&pool, &[], 2000, own),
            Some(&pool[1]),
            "never another's"
        );
        record_owner(&owners, &pool[1], 2000).unwrap();
        assert_eq!(pick(&pool, &[], 3000, own), None, "every device is taken");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn binder_devices_are_held_until_their_vp_ends() {
        use crate::devices::registry::tests::{attach, detach, fds};
        let b = BinderHost::new(BinderMode::None);
        let mut f = fds();
        f.binder = Some(PathBuf::from("/dev/binder3"));
        let policies = model::DevicePolicies::default();
        let a = attach(&f, &policies);
        b.attach(&a).unwrap();
        b.attach(&a).unwrap();
        assert_eq!(*b.held(), [PathBuf::from("/dev/binder3")]);
        b.detach(&detach(&f));
        assert!(b.held().is_empty());
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
