//! One cgroup per VP, on cgroup v2 (a device) or v1 (this kind of host,
//! where the controllers are v1 and a near-empty v2 hierarchy sits at
//! /sys/fs/cgroup/unified and is used only to track the VP's processes).
//!
//! The translation from a VP's resources to cgroup files is a pure function
//! ([`limit_writes`]) so it is unit-tested; the file operations are plain
//! reads and writes on cgroupfs.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

/// v1 controllers a VP gets a cgroup in (when the host mounts them).
const V1_CONTROLLERS: &[&str] = &["memory", "pids", "cpu", "cpuacct", "freezer"];
/// v2 controllers enabled for VP cgroups (when the kernel offers them).
const V2_CONTROLLERS: &[&str] = &["memory", "pids", "cpu"];

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup hierarchy found in /proc/self/mountinfo: mount cgroup2 at /sys/fs/cgroup (or the v1 controllers) and restart cellsd")]
    NoHierarchy,
    #[error("cgroup {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cgroup {path} still has processes after killing them: {pids:?}")]
    Busy { path: PathBuf, pids: Vec<i32> },
    #[error("the {0} cgroup controller is not mounted: mount it (or cgroup2 with it) and restart cellsd")]
    NoController(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Hierarchy {
    /// Pure cgroup v2 (unified) mounted at `root`.
    V2 { root: PathBuf },
    /// cgroup v1 controllers, each at its mount point; `unified` is a v2
    /// hierarchy without controllers, if mounted (hybrid layout).
    V1 {
        controllers: Vec<(String, PathBuf)>,
        unified: Option<PathBuf>,
    },
}

impl Hierarchy {
    /// Read the hierarchy layout from /proc/self/mountinfo.
    pub fn detect() -> Result<Self, CgroupError> {
        let text = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(io_err(Path::new("/proc/self/mountinfo")))?;
        Self::from_mountinfo(&text)
    }

    pub fn from_mountinfo(text: &str) -> Result<Self, CgroupError> {
        let mut v2: Vec<PathBuf> = Vec::new();
        let mut controllers: Vec<(String, PathBuf)> = Vec::new();
        for line in text.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let fields: Vec<&str> = left.split_whitespace().collect();
            let rf: Vec<&str> = right.split_whitespace().collect();
            if fields.len() < 5 || rf.len() < 3 {
                continue;
            }
            let mount_point = PathBuf::from(unescape(fields[4]));
            match rf[0] {
                "cgroup2" => v2.push(mount_point),
                "cgroup" => {
                    for opt in rf[2].split(',') {
                        if V1_CONTROLLERS.contains(&opt)
                            && !controllers.iter().any(|(c, _)| c == opt)
                        {
                            controllers.push((opt.to_string(), mount_point.clone()));
                        }
                    }
                }
                _ => {}
            }
        }
        if controllers.is_empty() {
            // Prefer the canonical location when several cgroup2 mounts exist.
            let root = v2
                .iter()
                .find(|p| p.as_path() == Path::new("/sys/fs/cgroup"))
                .or_else(|| v2.first())
                .cloned()
                .ok_or(CgroupError::NoHierarchy)?;
            return Ok(Hierarchy::V2 { root });
        }
        Ok(Hierarchy::V1 {
            controllers,
            unified: v2.into_iter().next(),
        })
    }

    pub fn is_v2(&self) -> bool {
        matches!(self, Hierarchy::V2 { .. })
    }

    /// The directories that make up the cgroup `rel` (e.g. "cells/work").
    pub fn dirs(&self, rel: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        match self {
            Hierarchy::V2 { root } => out.push(root.join(rel)),
            Hierarchy::V1 {
                controllers,
                unified,
            } => {
                for (_, mp) in controllers {
                    let d = mp.join(rel);
                    if !out.contains(&d) {
                        out.push(d);
                    }
                }
                if let Some(u) = unified {
                    out.push(u.join(rel));
                }
            }
        }
        out
    }

    /// The v1 controller directories of `rel` (none on pure v2).
    pub fn v1_dirs(&self, rel: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        if let Hierarchy::V1 { controllers, .. } = self {
            for (_, mp) in controllers {
                let d = mp.join(rel);
                if !out.contains(&d) {
                    out.push(d);
                }
            }
        }
        out
    }

    /// The v2 directory of `rel`: the unified root, or the hybrid's
    /// controller-less v2 hierarchy.
    pub fn v2_dir(&self, rel: &Path) -> Option<PathBuf> {
        match self {
            Hierarchy::V2 { root } => Some(root.join(rel)),
            Hierarchy::V1 { unified, .. } => unified.as_ref().map(|u| u.join(rel)),
        }
    }

    fn controller_dir(&self, controller: &str, rel: &Path) -> Option<PathBuf> {
        match self {
            Hierarchy::V2 { root } => Some(root.join(rel)),
            Hierarchy::V1 { controllers, .. } => controllers
                .iter()
                .find(|(c, _)| c == controller)
                .map(|(_, mp)| mp.join(rel)),
        }
    }
}

impl Hierarchy {
    /// Cap the memory of everything under `parent` (all VPs together, and
    /// their monitors) at `bytes`: whatever VPs do, the host keeps the rest,
    /// and an out-of-memory kill happens among them, never to cellsd or
    /// another host process. (Memory protection for the host side that does
    /// not need CAP_SYS_RESOURCE: oom_score_adj cannot go negative here.)
    pub fn limit_parent_memory(&self, parent: &Path, bytes: u64) -> Result<PathBuf, CgroupError> {
        let Some(dir) = self.controller_dir("memory", parent) else {
            return Err(CgroupError::NoController("memory".into()));
        };
        if let Hierarchy::V2 { root } = self {
            // The memory controller must reach `parent` from the root.
            let mut d = root.clone();
            for c in parent.components() {
                let p = d.join("cgroup.subtree_control");
                std::fs::write(&p, "+memory").map_err(io_err(&p))?;
                d = d.join(c);
                std::fs::create_dir_all(&d).map_err(io_err(&d))?;
            }
        }
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let file = dir.join(if self.is_v2() {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        });
        std::fs::write(&file, bytes.to_string()).map_err(io_err(&file))?;
        Ok(file)
    }
}

/// Mountinfo escapes spaces and such as octal (\040).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let octal = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok());
            if let Some(v) = octal {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One write to a cgroup control file: (controller, file, value).
pub type LimitWrite = (&'static str, &'static str, String);

/// The control-file writes that apply `res` on the given hierarchy version.
pub fn limit_writes(v2: bool, res: &LinuxResources) -> Vec<LimitWrite> {
    let mut w = Vec::new();
    if let Some(limit) = res.memory().as_ref().and_then(|m| m.limit()) {
        if v2 {
            w.push(("memory", "memory.max", limit.to_string()));
        } else {
            w.push(("memory", "memory.limit_in_bytes", limit.to_string()));
        }
    }
    if let Some(p) = res.pids().as_ref() {
        let v = if p.limit() > 0 {
            p.limit().to_string()
        } else {
            "max".to_string()
        };
        w.push(("pids", "pids.max", v));
    }
    if let Some(cpu) = res.cpu().as_ref() {
        if let (Some(quota), Some(period)) = (cpu.quota(), cpu.period()) {
            if v2 {
                w.push(("cpu", "cpu.max", format!("{quota} {period}")));
            } else {
                // The period first: the kernel checks the quota against it.
                w.push(("cpu", "cpu.cfs_period_us", period.to_string()));
                w.push(("cpu", "cpu.cfs_quota_us", quota.to_string()));
            }
        }
    }
    w
}

/// A VP's CPU weight on the cgroup v2 scale (1..=10000, the kernel's
/// default 100).
pub const FULL_CPU_WEIGHT: u16 = 100;

/// The write that gives a cgroup `weight` (v2 scale) of the CPU: v2's
/// cpu.weight, or v1's cpu.shares scaled so that 100 is v1's default 1024
/// (v1's minimum is 2).
pub fn cpu_weight_write(v2: bool, weight: u16) -> LimitWrite {
    let weight = weight.clamp(1, 10000);
    if v2 {
        ("cpu", "cpu.weight", weight.to_string())
    } else {
        let shares = (u64::from(weight) * 1024 / 100).max(2);
        ("cpu", "cpu.shares", shares.to_string())
    }
}

/// Which cgroup freezer cellsd uses (`--freezer`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FreezerChoice {
    /// The v1 freezer controller where it is mounted, else v2's cgroup.freeze.
    #[default]
    Auto,
    V1,
    V2,
}

/// Where a VP's cgroup is frozen and thawed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freezer {
    /// v1: the freezer controller's directory (freezer.state).
    V1(PathBuf),
    /// v2: the cgroup's directory (cgroup.freeze, cgroup.events).
    V2(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezeState {
    Thawed,
    /// Asked to freeze; some task has not stopped yet.
    Freezing,
    Frozen,
}

impl Freezer {
    pub fn describe(&self) -> &'static str {
        match self {
            Freezer::V1(_) => "cgroup v1 freezer",
            Freezer::V2(_) => "cgroup v2 cgroup.freeze",
        }
    }

    /// Ask the kernel to freeze (or thaw) every task of the cgroup. Freezing
    /// completes asynchronously: see [`Freezer::state`].
    pub fn set(&self, frozen: bool) -> Result<(), CgroupError> {
        let (path, value) = match self {
            Freezer::V1(d) => (
                d.join("freezer.state"),
                if frozen { "FROZEN" } else { "THAWED" },
            ),
            Freezer::V2(d) => (d.join("cgroup.freeze"), if frozen { "1" } else { "0" }),
        };
        std::fs::write(&path, value).map_err(io_err(&path))
    }

    pub fn state(&self) -> Result<FreezeState, CgroupError> {
        match self {
            Freezer::V1(d) => {
                let p = d.join("freezer.state");
                let s = std::fs::read_to_string(&p).map_err(io_err(&p))?;
                Ok(match s.trim() {
                    "FROZEN" => FreezeState::Frozen,
                    "FREEZING" => FreezeState::Freezing,
                    _ => FreezeState::Thawed,
                })
            }
            Freezer::V2(d) => {
                let p = d.join("cgroup.freeze");
                let asked = std::fs::read_to_string(&p).map_err(io_err(&p))?.trim() == "1";
                if !asked {
                    return Ok(FreezeState::Thawed);
                }
                let p = d.join("cgroup.events");
                let ev = std::fs::read_to_string(&p).map_err(io_err(&p))?;
                let frozen = ev.lines().any(|l| l.trim() == "frozen 1");
                Ok(if frozen {
                    FreezeState::Frozen
                } else {
                    FreezeState::Freezing
                })
            }
        }
    }
}

/// A VP's cgroup across every hierarchy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VpCgroup {
    pub hierarchy: Hierarchy,
    pub rel: PathBuf,
}

impl VpCgroup {
    pub fn new(hierarchy: Hierarchy, rel: impl Into<PathBuf>) -> Self {
        Self {
            hierarchy,
            rel: rel.into(),
        }
    }

    pub fn dirs(&self) -> Vec<PathBuf> {
        self.hierarchy.dirs(&self.rel)
    }

    /// v2: the parent chain must delegate the controllers to its children.
    fn enable_v2_controllers(&self, root: &Path) -> Result<(), CgroupError> {
        let mut dir = root.to_path_buf();
        let components: Vec<_> = self.rel.components().collect();
        // Enable at the root and every intermediate level, not at the leaf
        // (a cgroup with processes may not delegate: "no internal processes").
        for (i, comp) in components.iter().enumerate() {
            let available =
                std::fs::read_to_string(dir.join("cgroup.controllers")).map_err(io_err(&dir))?;
            let enable: Vec<String> = V2_CONTROLLERS
                .iter()
                .filter(|c| available.split_whitespace().any(|a| a == **c))
                .map(|c| format!("+{c}"))
                .collect();
            if !enable.is_empty() {
                let p = dir.join("cgroup.subtree_control");
                std::fs::write(&p, enable.join(" ")).map_err(io_err(&p))?;
            }
            dir = dir.join(comp);
            if i + 1 < components.len() {
                std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            }
        }
        Ok(())
    }

    /// Write the resource limits (the cgroup exists).
    pub fn apply_limits(&self, res: Option<&LinuxResources>) -> Result<(), CgroupError> {
        if let Some(res) = res {
            for (controller, file, value) in limit_writes(self.hierarchy.is_v2(), res) {
                let Some(dir) = self.hierarchy.controller_dir(controller, &self.rel) else {
                    tracing::warn!(controller, "controller not mounted; limit not applied");
                    continue;
                };
                let path = dir.join(file);
                std::fs::write(&path, &value).map_err(io_err(&path))?;
            }
        }
        Ok(())
    }

    /// A spare cgroup (v1 hierarchies only) that the calling process joins
    /// ahead of time. Moving a process between cgroups waits for an RCU
    /// grace period (milliseconds); doing it before a VP is asked for keeps
    /// that wait out of the VP's start, which then only renames the spare
    /// ([`VpCgroup::claim`]). v2 needs no spare: the VP's init is cloned
    /// straight into its v2 cgroup (CLONE_INTO_CGROUP).
    pub fn prepare_spare(&self) -> Result<(), CgroupError> {
        let me = std::process::id().to_string();
        for d in self.hierarchy.v1_dirs(&self.rel) {
            std::fs::create_dir_all(&d).map_err(io_err(&d))?;
            let p = d.join("cgroup.procs");
            std::fs::write(&p, &me).map_err(io_err(&p))?;
        }
        Ok(())
    }

    /// Make this VP's cgroup out of a prepared `spare` (v1: rename, keeping
    /// the processes in it), create the v2 part, apply the limits. Returns
    /// the v2 directory, opened, for CLONE_INTO_CGROUP.
    pub fn claim(
        &self,
        spare: Option<&VpCgroup>,
        res: Option<&LinuxResources>,
    ) -> Result<Option<std::os::fd::OwnedFd>, CgroupError> {
        if let Hierarchy::V2 { root } = &self.hierarchy {
            self.enable_v2_controllers(root)?;
        }
        let targets = self.hierarchy.v1_dirs(&self.rel);
        let sources = spare.map(|s| s.hierarchy.v1_dirs(&s.rel));
        for (i, to) in targets.iter().enumerate() {
            match sources.as_ref().and_then(|s| s.get(i)) {
                Some(from) => {
                    if to.exists() {
                        // Left over by a crash: clear it out of the way.
                        let _ = std::fs::remove_dir(to);
                    }
                    std::fs::rename(from, to).map_err(io_err(to))?;
                }
                None => std::fs::create_dir_all(to).map_err(io_err(to))?,
            }
        }
        let v2 = match self.hierarchy.v2_dir(&self.rel) {
            Some(d) => {
                std::fs::create_dir_all(&d).map_err(io_err(&d))?;
                let f = std::fs::File::open(&d).map_err(io_err(&d))?;
                Some(std::os::fd::OwnedFd::from(f))
            }
            None => None,
        };
        self.apply_limits(res)?;
        Ok(v2)
    }

    /// Set the cgroup's CPU weight (v2 scale, see [`cpu_weight_write`]).
    pub fn set_cpu_weight(&self, weight: u16) -> Result<(), CgroupError> {
        let (controller, file, value) = cpu_weight_write(self.hierarchy.is_v2(), weight);
        let Some(dir) = self.hierarchy.controller_dir(controller, &self.rel) else {
            return Err(CgroupError::NoController(controller.into()));
        };
        let path = dir.join(file);
        std::fs::write(&path, value).map_err(io_err(&path))
    }

    /// Move a process to the parent of this cgroup in the v1 hierarchies
    /// (the monitor, once the VP's init runs, leaves the VP's cgroup).
    pub fn move_to_parent_v1(&self, pid: i32) -> Result<(), CgroupError> {
        let Some(parent) = self.rel.parent() else {
            return Ok(());
        };
        for d in self.hierarchy.v1_dirs(parent) {
            let p = d.join("cgroup.procs");
            std::fs::write(&p, pid.to_string()).map_err(io_err(&p))?;
        }
        Ok(())
    }

    /// Move a process out of the cgroup in every hierarchy: to the parent
    /// in v1, to the root in v2 (a v2 parent with controllers for its
    /// children may hold no process).
    pub fn leave(&self, pid: i32) -> Result<(), CgroupError> {
        self.move_to_parent_v1(pid)?;
        if let Some(d) = self.hierarchy.v2_dir(Path::new("")) {
            let p = d.join("cgroup.procs");
            std::fs::write(&p, pid.to_string()).map_err(io_err(&p))?;
        }
        Ok(())
    }

    /// Move a process into the cgroup's v1 hierarchies but the freezer's
    /// (an OCI container's monitor: containerd's shim reads the container's
    /// statistics from its cgroups, but the monitor serves the VP's FUSE
    /// devices and must never be frozen with it). Nothing on pure v2, where
    /// the freezer is every controller's cgroup.
    pub fn add_unfrozen(&self, pid: i32) -> Result<(), CgroupError> {
        let Hierarchy::V1 { controllers, .. } = &self.hierarchy else {
            return Ok(());
        };
        let freezer: Vec<&PathBuf> = controllers
            .iter()
            .filter(|(c, _)| c == "freezer")
            .map(|(_, mp)| mp)
            .collect();
        let mut done: Vec<&PathBuf> = Vec::new();
        for (_, mp) in controllers {
            if freezer.contains(&mp) || done.contains(&mp) {
                continue;
            }
            done.push(mp);
            let p = mp.join(&self.rel).join("cgroup.procs");
            std::fs::write(&p, pid.to_string()).map_err(io_err(&p))?;
        }
        Ok(())
    }

    /// Move a process into the cgroup in every hierarchy.
    pub fn add(&self, pid: i32) -> Result<(), CgroupError> {
        for d in self.dirs() {
            let p = d.join("cgroup.procs");
            std::fs::write(&p, pid.to_string()).map_err(io_err(&p))?;
        }
        Ok(())
    }

    /// Every process in the cgroup (union over the hierarchies).
    pub fn pids(&self) -> Vec<i32> {
        let mut out = Vec::new();
        for d in self.dirs() {
            if let Ok(s) = std::fs::read_to_string(d.join("cgroup.procs")) {
                for p in s.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    if !out.contains(&p) {
                        out.push(p);
                    }
                }
            }
        }
        out
    }

    pub fn exists(&self) -> bool {
        self.dirs().iter().any(|d| d.exists())
    }

    /// The VP's freezer: v1's controller where it is mounted (and not
    /// overridden), else the v2 cgroup's cgroup.freeze (Linux 5.2+).
    pub fn freezer(&self, choice: FreezerChoice) -> Option<Freezer> {
        let v1 = match &self.hierarchy {
            Hierarchy::V1 { controllers, .. } => controllers
                .iter()
                .find(|(c, _)| c == "freezer")
                .map(|(_, mp)| Freezer::V1(mp.join(&self.rel))),
            Hierarchy::V2 { .. } => None,
        };
        let v2 = self.hierarchy.v2_dir(&self.rel).map(Freezer::V2);
        match choice {
            FreezerChoice::Auto => v1.or(v2),
            FreezerChoice::V1 => v1,
            FreezerChoice::V2 => v2,
        }
    }

    /// Thaw whatever freezer holds the cgroup (a frozen task does not act
    /// on SIGKILL under v1, so a frozen VP could not be ended).
    pub fn thaw_all(&self) {
        for choice in [FreezerChoice::V1, FreezerChoice::V2] {
            if let Some(f) = self.freezer(choice) {
                if matches!(f.state(), Ok(FreezeState::Frozen | FreezeState::Freezing)) {
                    let _ = f.set(false);
                }
            }
        }
    }

    /// Kill what is left inside and remove the cgroup directories.
    pub fn destroy(&self, timeout: Duration) -> Result<(), CgroupError> {
        let deadline = Instant::now() + timeout;
        self.thaw_all();
        loop {
            let pids = self.pids();
            for p in &pids {
                // SAFETY: kill(2) with a pid read from the VP's own cgroup.
                unsafe { libc::kill(*p, libc::SIGKILL) };
            }
            let mut busy = None;
            // Children before parents does not matter here: the leaf is the
            // VP's cgroup; the shared parent ("cells") stays.
            for d in self.dirs() {
                match std::fs::remove_dir(&d) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => busy = Some((d, e)),
                }
            }
            match busy {
                None => return Ok(()),
                Some((d, e)) if Instant::now() >= deadline => {
                    let pids = self.pids();
                    if pids.is_empty() {
                        return Err(CgroupError::Io { path: d, source: e });
                    }
                    return Err(CgroupError::Busy { path: d, pids });
                }
                Some(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
    };

    const HYBRID: &str = "\
25 1 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
27 25 0:25 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
28 25 0:26 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
29 25 0:27 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
30 25 0:28 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
31 25 0:29 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
32 25 0:30 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
";
    const PURE_V2: &str = "\
24 1 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate
";
    const COMOUNTED: &str = "\
27 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
29 25 0:27 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
";

    #[test]
    fn detects_hybrid_v1() {
        let h = Hierarchy::from_mountinfo(HYBRID).unwrap();
        let Hierarchy::V1 {
            controllers,
            unified,
        } = &h
        else {
            panic!("expected v1: {h:?}")
        };
        assert_eq!(
            unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        let names: Vec<&str> = controllers.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(names, ["cpu", "cpuacct", "memory", "pids", "freezer"]);
        let dirs = h.dirs(Path::new("cells/w"));
        assert!(dirs.contains(&PathBuf::from("/sys/fs/cgroup/memory/cells/w")));
        assert!(dirs.contains(&PathBuf::from("/sys/fs/cgroup/unified/cells/w")));
        assert!(!dirs.iter().any(|d| d.starts_with("/sys/fs/cgroup/systemd")));
    }

    #[test]
    fn detects_pure_v2() {
        let h = Hierarchy::from_mountinfo(PURE_V2).unwrap();
        assert_eq!(
            h,
            Hierarchy::V2 {
                root: "/sys/fs/cgroup".into()
            }
        );
        assert_eq!(
            h.dirs(Path::new("cells/w")),
            vec![PathBuf::from("/sys/fs/cgroup/cells/w")]
        );
    }

    #[test]
    fn comounted_controllers_share_one_dir() {
        let h = Hierarchy::from_mountinfo(COMOUNTED).unwrap();
        let dirs = h.dirs(Path::new("cells/w"));
        assert_eq!(dirs.len(), 2, "{dirs:?}");
    }

    #[test]
    fn no_cgroups_is_an_error_with_a_fix() {
        let e = Hierarchy::from_mountinfo("").unwrap_err();
        assert!(e.to_string().contains("mount cgroup2"));
    }

    #[test]
    fn limits_translate_per_version() {
        let res = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(512i64 << 20)
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(100).build().unwrap())
            .cpu(
                LinuxCpuBuilder::default()
                    .quota(50_000i64)
                    .period(100_000u64)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let v2 = limit_writes(true, &res);
        assert!(v2.contains(&("memory", "memory.max", (512u64 << 20).to_string())));
        assert!(v2.contains(&("pids", "pids.max", "100".into())));
        assert!(v2.contains(&("cpu", "cpu.max", "50000 100000".into())));
        let v1 = limit_writes(false, &res);
        assert!(v1.contains(&(
            "memory",
            "memory.limit_in_bytes",
            (512u64 << 20).to_string()
        )));
        let period = v1.iter().position(|w| w.1 == "cpu.cfs_period_us").unwrap();
        let quota = v1.iter().position(|w| w.1 == "cpu.cfs_quota_us").unwrap();
        assert!(period < quota);
    }

    #[test]
    fn mountinfo_unescapes_spaces() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn cpu_weight_maps_to_v1_shares() {
        assert_eq!(cpu_weight_write(true, 5), ("cpu", "cpu.weight", "5".into()));
        assert_eq!(
            cpu_weight_write(false, 100),
            ("cpu", "cpu.shares", "1024".into())
        );
        assert_eq!(
            cpu_weight_write(false, 5),
            ("cpu", "cpu.shares", "51".into())
        );
        // v1's floor and v2's bounds.
        assert_eq!(
            cpu_weight_write(false, 0),
            ("cpu", "cpu.shares", "10".into())
        );
        assert_eq!(cpu_weight_write(true, 0), ("cpu", "cpu.weight", "1".into()));
        assert_eq!(
            cpu_weight_write(true, 20000),
            ("cpu", "cpu.weight", "10000".into())
        );
    }
}
