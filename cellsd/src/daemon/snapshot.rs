//! Snapshots of a VP's writable layer and /data (`cellctl snapshot`,
//! `rollback`, `reset`): kept in `vps/NAME/snapshots/SNAP/`, a sparse copy
//! of the VP's disk image (or, for a VP without one, copies of its upper
//! and data folders, owners, modes, xattrs and overlay whiteouts kept).
//!
//! A running VP is paused (cgroup freezer) and its file system synced
//! (syncfs through its monitor's mount) for the copy: the snapshot is what
//! a power cut at that moment would leave, which ext4's journal recovers.
//! Rollback and reset need the VP stopped; each builds the new state
//! beside the old one and renames it in place, so a failure leaves the VP
//! as it was.

use std::os::fd::AsRawFd;
use std::os::unix::fs::{chown, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::*;
use crate::cgroup::FreezeState;

const SNAPSHOTS: &str = "snapshots";
const INFO: &str = "snapshot.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub name: String,
    /// Unix seconds.
    pub created: u64,
    /// Bytes of data it holds (holes not counted).
    pub bytes: u64,
    /// Taken while the VP ran (paused for the copy).
    pub running: bool,
    /// How long the copy took (and the VP was paused, if it ran), ms.
    pub took_ms: u64,
}

fn snapshots_dir(layout: &crate::layout::Layout, vp: &str) -> PathBuf {
    layout.vp_dir(vp).join(SNAPSHOTS)
}

/// `cp -a` (owners, modes, xattrs, devices: overlay's whiteouts) of a
/// folder's contents into a new folder.
fn copy_tree(src: &Path, dst: &Path) -> Result<(), Error> {
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg("--no-target-directory")
        .arg(src)
        .arg(dst)
        .output()
        .map_err(failed("run cp"))?;
    if !out.status.success() {
        return Err(Error::Failed(format!(
            "copying {}: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn tree_bytes(p: &Path) -> u64 {
    let Ok(md) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if md.is_dir() {
        std::fs::read_dir(p)
            .map(|d| d.flatten().map(|e| tree_bytes(&e.path())).sum())
            .unwrap_or(0)
    } else if md.is_file() {
        md.len()
    } else {
        0
    }
}

impl Manager {
    /// Names are VP-like: 1-32 of a-z 0-9 '-'.
    fn snapshot_name(snap: &str) -> Result<(), Error> {
        name::validate("snapshot", snap).map_err(Error::from)
    }

    pub async fn snapshot(&self, vp: &str, snap: &str) -> Result<SnapshotInfo, Error> {
        Self::snapshot_name(snap)?;
        let op = self.op_lock(vp)?;
        let _op = op.lock().await;
        let layout = self.cfg.layout.clone();
        let dir = snapshots_dir(&layout, vp);
        if dir.join(snap).exists() {
            return Err(Error::AlreadyExists(format!(
                "VP '{vp}' has a snapshot '{snap}': pick another name, or delete it with `cellctl snapshot delete {vp} {snap}`"
            )));
        }
        let (config, running) = {
            let inner = self.lock();
            let v = inner.vps.get(vp).ok_or_else(|| self.missing(vp))?;
            let run = v.run.as_ref().filter(|_| v.phase == Phase::Running);
            (
                v.config.clone(),
                run.map(|r| (r.state.monitor_pid, v.frozen)),
            )
        };
        std::fs::create_dir_all(&dir).map_err(failed("create the snapshots folder"))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(failed("chmod the snapshots folder"))?;
        let tmp = dir.join(format!("{}{snap}", crate::layout::CREATING_PREFIX));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).map_err(failed("create the snapshot folder"))?;
        let t0 = Instant::now();
        // A running VP: paused, its file system synced, for the copy.
        let pause = match running {
            Some((monitor, already_frozen)) => Some(
                self.pause_for_copy(vp, &config, monitor, already_frozen)
                    .await?,
            ),
            None => None,
        };
        let copied = self.copy_vp_state(vp, &config, &tmp);
        if let Some(p) = pause {
            self.resume_after_copy(vp, p);
        }
        let took = t0.elapsed();
        let bytes = match copied {
            Ok(b) => b,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        let info = SnapshotInfo {
            name: snap.to_string(),
            created: unix_now(),
            bytes,
            running: running.is_some(),
            took_ms: took.as_millis() as u64,
        };
        let json = serde_json::to_vec_pretty(&info).map_err(|e| Error::Failed(e.to_string()))?;
        crate::layout::write_atomic(&tmp.join(INFO), &json)
            .map_err(failed("write snapshot.json"))?;
        std::fs::rename(&tmp, dir.join(snap)).map_err(failed("put the snapshot in place"))?;
        tracing::info!(vp, snap, bytes, ms = info.took_ms, "snapshot");
        Ok(info)
    }

    /// Freeze the VP (if it is not frozen already) and sync its disk.
    pub(super) async fn pause_for_copy(
        &self,
        vp: &str,
        config: &VpConfig,
        monitor: i32,
        already_frozen: bool,
    ) -> Result<Option<crate::cgroup::Freezer>, Error> {
        let mut freezer = None;
        if !already_frozen {
            let f = self.freezer_of(config).ok_or_else(|| {
                Error::Failed(
                    "no cgroup freezer to pause the VP for its snapshot: stop it first, or mount the freezer".into(),
                )
            })?;
            self.power.set_freezing(vp, true);
            f.set(true).map_err(|source| Error::Freezer {
                doing: "pausing for a snapshot",
                vp: vp.to_string(),
                source,
            })?;
            let t = Instant::now();
            while f.state().ok() != Some(FreezeState::Frozen) {
                if t.elapsed() > Duration::from_secs(10) {
                    let _ = f.set(false);
                    self.power.set_freezing(vp, false);
                    return Err(Error::Busy(format!(
                        "VP '{vp}' did not pause within 10 s (a process in an uninterruptible wait): no snapshot taken"
                    )));
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            freezer = Some(f);
        }
        if config.cells.disk.is_some() {
            // The VP's file system is mounted in its monitor's namespace.
            let mnt = PathBuf::from(format!("/proc/{monitor}/root")).join(
                self.cfg
                    .layout
                    .vp_run_dir(vp)
                    .join("disk")
                    .strip_prefix("/")
                    .unwrap_or(Path::new("")),
            );
            let synced = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
                .open(&mnt)
                // SAFETY: syncfs on a directory fd of our own.
                .map(|d| unsafe { libc::syncfs(d.as_raw_fd()) } == 0);
            if synced.ok() != Some(true) {
                if let Some(f) = &freezer {
                    let _ = f.set(false);
                    self.power.set_freezing(vp, false);
                }
                return Err(Error::Failed(format!(
                    "syncing VP '{vp}''s disk ({}) for its snapshot failed: no snapshot taken",
                    mnt.display()
                )));
            }
        }
        Ok(freezer)
    }

    pub(super) fn resume_after_copy(&self, vp: &str, freezer: Option<crate::cgroup::Freezer>) {
        if let Some(f) = freezer {
            if let Err(e) = f.set(false) {
                tracing::warn!(vp, "resuming after the snapshot: {e}");
            }
            self.power.set_freezing(vp, false);
        }
    }

    /// Copy the VP's disk image (or upper and data folders) into `dst`.
    fn copy_vp_state(&self, vp: &str, config: &VpConfig, dst: &Path) -> Result<u64, Error> {
        let layout = &self.cfg.layout;
        if config.cells.disk.is_some() {
            let img = layout.vp_dir(vp).join(crate::disk::IMAGE_FILE);
            return crate::disk::copy_sparse(&img, &dst.join(crate::disk::IMAGE_FILE))
                .map_err(|e| Error::Failed(e.to_string()));
        }
        copy_tree(&layout.vp_upper(vp), &dst.join("upper"))?;
        copy_tree(&layout.vp_data(vp), &dst.join("data"))?;
        Ok(tree_bytes(&dst.join("upper")) + tree_bytes(&dst.join("data")))
    }

    pub fn snapshots(&self, vp: &str) -> Result<Vec<SnapshotInfo>, Error> {
        name::validate("VP", vp)?;
        if !self.lock().vps.contains_key(vp) {
            return Err(self.missing(vp));
        }
        let dir = snapshots_dir(&self.cfg.layout, vp);
        let mut v: Vec<SnapshotInfo> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .filter_map(|e| std::fs::read(e.path().join(INFO)).ok())
                    .filter_map(|b| serde_json::from_slice(&b).ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by(|a: &SnapshotInfo, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
        Ok(v)
    }

    pub async fn snapshot_delete(&self, vp: &str, snap: &str) -> Result<(), Error> {
        Self::snapshot_name(snap)?;
        let op = self.op_lock(vp)?;
        let _op = op.lock().await;
        let d = snapshots_dir(&self.cfg.layout, vp).join(snap);
        if !d.join(INFO).exists() {
            return Err(self.no_snapshot(vp, snap));
        }
        let gone = d.with_file_name(format!("{}{snap}", crate::layout::DESTROYING_PREFIX));
        std::fs::rename(&d, &gone).map_err(failed("remove the snapshot"))?;
        std::fs::remove_dir_all(&gone).map_err(failed("remove the snapshot"))
    }

    fn no_snapshot(&self, vp: &str, snap: &str) -> Error {
        Error::InvalidArgument(format!(
            "VP '{vp}' has no snapshot '{snap}': see `cellctl snapshot list {vp}`"
        ))
    }

    /// The VP, stopped, for a rollback or reset.
    fn stopped_config(&self, vp: &str, what: &str) -> Result<VpConfig, Error> {
        let inner = self.lock();
        let v = inner.vps.get(vp).ok_or_else(|| self.missing(vp))?;
        if v.phase != Phase::Stopped {
            return Err(Error::Running(format!(
                "VP '{vp}' runs: stop it first (`cellctl stop {vp}`), then {what}"
            )));
        }
        Ok(v.config.clone())
    }

    /// Put the VP's writable layer and /data back to snapshot `snap`.
    pub async fn rollback(&self, vp: &str, snap: &str) -> Result<(), Error> {
        Self::snapshot_name(snap)?;
        let op = self.op_lock(vp)?;
        let _op = op.lock().await;
        let config = self.stopped_config(vp, "roll it back")?;
        let src = snapshots_dir(&self.cfg.layout, vp).join(snap);
        if !src.join(INFO).exists() {
            return Err(self.no_snapshot(vp, snap));
        }
        let layout = &self.cfg.layout;
        let vp_dir = layout.vp_dir(vp);
        if config.cells.disk.is_some() {
            let img = src.join(crate::disk::IMAGE_FILE);
            if !img.exists() {
                return Err(Error::Failed(format!(
                    "snapshot '{snap}' of VP '{vp}' holds no disk image (taken before the VP had a disk?)"
                )));
            }
            let tmp = vp_dir.join(format!(
                "{}{}",
                crate::layout::CREATING_PREFIX,
                crate::disk::IMAGE_FILE
            ));
            let _ = std::fs::remove_file(&tmp);
            if let Err(e) = crate::disk::copy_sparse(&img, &tmp) {
                let _ = std::fs::remove_file(&tmp);
                return Err(Error::Failed(e.to_string()));
            }
            std::fs::rename(&tmp, vp_dir.join(crate::disk::IMAGE_FILE))
                .map_err(failed("put the rolled-back disk in place"))?;
        } else {
            for part in ["upper", "data"] {
                let tmp = vp_dir.join(format!("{}{part}", crate::layout::CREATING_PREFIX));
                let _ = std::fs::remove_dir_all(&tmp);
                copy_tree(&src.join(part), &tmp)?;
            }
            self.swap_in(&vp_dir)?;
        }
        tracing::info!(vp, snap, "rolled back");
        Ok(())
    }

    /// `.creating-upper` / `.creating-data` replace `upper` / `data`.
    fn swap_in(&self, vp_dir: &Path) -> Result<(), Error> {
        for part in ["upper", "data"] {
            let new = vp_dir.join(format!("{}{part}", crate::layout::CREATING_PREFIX));
            let old = vp_dir.join(format!("{}{part}", crate::layout::DESTROYING_PREFIX));
            let _ = std::fs::remove_dir_all(&old);
            std::fs::rename(vp_dir.join(part), &old).map_err(failed("move the old state aside"))?;
            std::fs::rename(&new, vp_dir.join(part))
                .map_err(failed("put the new state in place"))?;
            let _ = std::fs::remove_dir_all(&old);
        }
        Ok(())
    }

    /// Back to the template: an empty writable layer and /data (as at
    /// create); the definition, number, adb keys and snapshots are kept.
    pub async fn reset(&self, vp: &str) -> Result<(), Error> {
        let op = self.op_lock(vp)?;
        let _op = op.lock().await;
        let config = self.stopped_config(vp, "reset it")?;
        let vp_dir = self.cfg.layout.vp_dir(vp);
        let owner = config.host_root_id();
        let seed = vp_dir.join(format!("{}seed", crate::layout::CREATING_PREFIX));
        let _ = std::fs::remove_dir_all(&seed);
        let made = (|| -> std::io::Result<()> {
            std::fs::create_dir(&seed)?;
            std::fs::set_permissions(&seed, std::fs::Permissions::from_mode(0o700))?;
            for (d, mode, vp_owned) in [
                ("upper", 0o755, true),
                ("data", 0o771, true),
                ("work", 0o700, false),
            ] {
                let p = seed.join(d);
                std::fs::create_dir(&p)?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
                if let (true, Some(id)) = (vp_owned, owner) {
                    chown(&p, Some(id), Some(id))?;
                }
            }
            Ok(())
        })();
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&seed);
            return Err(Error::Failed(format!("resetting VP '{vp}': {e}")));
        }
        let result = match config.cells.disk {
            Some(size) => {
                let tmp = vp_dir.join(format!(
                    "{}{}",
                    crate::layout::CREATING_PREFIX,
                    crate::disk::IMAGE_FILE
                ));
                let _ = std::fs::remove_file(&tmp);
                crate::disk::make_image(&tmp, size, &seed)
                    .map_err(|e| Error::Failed(e.to_string()))
                    .and_then(|_| {
                        std::fs::rename(&tmp, vp_dir.join(crate::disk::IMAGE_FILE))
                            .map_err(failed("put the fresh disk in place"))
                    })
            }
            None => {
                let moved = ["upper", "data"].iter().try_for_each(|part| {
                    std::fs::rename(
                        seed.join(part),
                        vp_dir.join(format!("{}{part}", crate::layout::CREATING_PREFIX)),
                    )
                    .map_err(failed("prepare the fresh state"))
                });
                moved.and_then(|_| self.swap_in(&vp_dir))
            }
        };
        let _ = std::fs::remove_dir_all(&seed);
        result?;
        tracing::info!(vp, "reset to its template");
        Ok(())
    }
}
