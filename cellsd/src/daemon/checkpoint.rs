//! `cellctl checkpoint` and `cellctl restore`: a running VP's processes saved
//! with CRIU (`crate::criu`) into `<state>/vps/NAME/checkpoint`, and brought
//! back by a monitor that rebuilds the VP's devices and tree around them.
//!
//! The checkpoint lives in cellsd's own state (root's, 0700): criu writes
//! there as root, so no client names a folder for it, and a restore reads
//! images nobody else could have written.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Instant;

use super::*;
use crate::criu::{self, Manifest};

/// A checkpoint's manifest once a fresh start made it stale.
const STALE: &str = "checkpoint.stale.json";

impl Manager {
    fn checkpoint_dir(&self, vp: &str) -> PathBuf {
        self.cfg
            .layout
            .vp_dir(vp)
            .join(crate::vparchive::CHECKPOINT_DIR)
    }

    /// A fresh start changes the VP's files under its checkpoint: the
    /// checkpoint can no longer be restored (nor exported).
    pub(super) fn retire_checkpoint(&self, vp: &str) {
        let dir = self.checkpoint_dir(vp);
        if dir.join(criu::MANIFEST).exists() {
            tracing::info!(vp, "started afresh: its checkpoint is stale now");
            let _ = std::fs::rename(dir.join(criu::MANIFEST), dir.join(STALE));
        }
    }

    /// The VP's checkpoint manifest, or why there is none to use.
    fn read_checkpoint(&self, vp: &str) -> Result<Manifest, Error> {
        let dir = self.checkpoint_dir(vp);
        let text = std::fs::read_to_string(dir.join(criu::MANIFEST)).map_err(|_| {
            if dir.join(STALE).exists() {
                Error::InvalidArgument(format!(
                    "the checkpoint of VP '{vp}' is older than its last fresh start (its files moved on since): make a new one with `cellctl checkpoint {vp}`"
                ))
            } else {
                Error::InvalidArgument(format!(
                    "VP '{vp}' has no checkpoint: make one with `cellctl checkpoint {vp}`"
                ))
            }
        })?;
        serde_json::from_str(&text).map_err(|e| {
            Error::Failed(format!("the checkpoint manifest of '{vp}' is damaged: {e}"))
        })
    }

    /// The checkpoint of a stopped VP for an archive: its manifest and its
    /// files (archive name, path here).
    pub(super) fn checkpoint_for_export(
        &self,
        vp: &str,
    ) -> Result<(serde_json::Value, Vec<(String, PathBuf)>), Error> {
        let manifest = self.read_checkpoint(vp)?;
        let dir = self.checkpoint_dir(vp);
        let mut files = Vec::new();
        let images = dir.join(criu::IMAGES);
        for e in std::fs::read_dir(&images).map_err(failed("list the checkpoint's images"))? {
            let e = e.map_err(failed("list the checkpoint's images"))?;
            let name = format!(
                "{}/{}/{}",
                crate::vparchive::CHECKPOINT_DIR,
                criu::IMAGES,
                e.file_name().to_string_lossy()
            );
            let ft = e.file_type().map_err(failed("stat a checkpoint image"))?;
            if !ft.is_file() || !crate::vparchive::allowed(&name) {
                return Err(Error::Failed(format!(
                    "the checkpoint of '{vp}' holds {} which an archive cannot carry",
                    e.path().display()
                )));
            }
            files.push((name, e.path()));
        }
        files.sort();
        if manifest.framebuffer {
            files.push((
                format!("{}/{}", crate::vparchive::CHECKPOINT_DIR, criu::FRAMEBUFFER),
                dir.join(criu::FRAMEBUFFER),
            ));
        }
        let json = serde_json::to_value(&manifest).map_err(|e| Error::Failed(e.to_string()))?;
        Ok((json, files))
    }

    /// An imported VP's checkpoint (the archive's `checkpoint/` folder,
    /// written into `staged`) put in place as this VP's: its name and this
    /// host's build of the same template content. Its id maps are moved to
    /// this VP's range at restore.
    pub(super) fn place_imported_checkpoint(
        &self,
        vp: &str,
        json: &serde_json::Value,
        staged: &Path,
    ) -> Result<(), Error> {
        let mut m: Manifest = serde_json::from_value(json.clone()).map_err(|e| {
            Error::InvalidArgument(format!(
                "the archive's checkpoint manifest is not one this cellsd reads: {e}"
            ))
        })?;
        if m.version != criu::MANIFEST_VERSION {
            return Err(Error::InvalidArgument(format!(
                "the archive's checkpoint is version {} (this cellsd reads {}): restore it with the same cells version",
                m.version,
                criu::MANIFEST_VERSION
            )));
        }
        if !staged.join(criu::IMAGES).is_dir() {
            return Err(Error::InvalidArgument(
                "the archive names a checkpoint but carries none of its images".into(),
            ));
        }
        m.vp = vp.to_string();
        m.template_build = crate::template::current_build(&self.cfg.layout, &m.template)
            .ok_or_else(|| {
                Error::TemplateNotBuilt(format!("template '{}' is not built here", m.template))
            })?;
        // As criu dump leaves them: criu reads some images after it entered
        // the VP's user namespace (as VP root, through the folder fd it
        // opened as root); the 0700 folder above keeps everyone else out.
        let images = staged.join(criu::IMAGES);
        std::fs::set_permissions(&images, std::fs::Permissions::from_mode(0o755))
            .map_err(failed("chmod the checkpoint's images"))?;
        for e in std::fs::read_dir(&images).map_err(failed("list the checkpoint's images"))? {
            let e = e.map_err(failed("list the checkpoint's images"))?;
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o644))
                .map_err(failed("chmod a checkpoint image"))?;
        }
        let dir = self.checkpoint_dir(vp);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(staged, &dir).map_err(failed("put the imported checkpoint in place"))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(failed("chmod the checkpoint folder"))?;
        let text = serde_json::to_vec_pretty(&m).map_err(|e| Error::Failed(e.to_string()))?;
        crate::layout::write_atomic(&dir.join(criu::MANIFEST), &text)
            .map_err(failed("write the checkpoint manifest"))
    }

    /// The checkpoint's user namespace images moved to the VP's host id
    /// range when it was made under another one (see
    /// [`criu::shift_userns`]); the manifest says so after.
    fn shift_checkpoint_ids(
        &self,
        vp: &str,
        manifest: &mut Manifest,
        config: &VpConfig,
    ) -> Result<(), Error> {
        let (Some(old), Some(new)) = (manifest.host_root_id, config.host_root_id()) else {
            return Err(Error::InvalidArgument(format!(
                "the checkpoint of '{vp}' was made with VP root at host id {:?}, the VP now has {:?}: a privileged VP and an unprivileged one cannot trade checkpoints",
                manifest.host_root_id,
                config.host_root_id()
            )));
        };
        let size = config
            .runtime
            .linux()
            .as_ref()
            .and_then(|l| l.uid_mappings().as_ref())
            .and_then(|m| m.iter().find(|m| m.container_id() == 0))
            .map(|m| m.size())
            .unwrap_or(0);
        let dir = self.checkpoint_dir(vp);
        let images = dir.join(criu::IMAGES);
        for e in std::fs::read_dir(&images).map_err(failed("list the checkpoint's images"))? {
            let e = e.map_err(failed("list the checkpoint's images"))?;
            let n = e.file_name().to_string_lossy().into_owned();
            if !(n.starts_with("userns-") && n.ends_with(".img")) {
                continue;
            }
            let img = std::fs::read(e.path()).map_err(failed("read a userns image"))?;
            let (out, moved) = criu::shift_userns(&img, old, new, size)
                .map_err(|e| Error::InvalidArgument(format!("the checkpoint of '{vp}': {e}")))?;
            crate::layout::write_atomic(&e.path(), &out).map_err(failed("write a userns image"))?;
            tracing::info!(vp, image = n.as_str(), moved, old, new, "id maps moved");
        }
        manifest.host_root_id = Some(new);
        let text =
            serde_json::to_vec_pretty(&*manifest).map_err(|e| Error::Failed(e.to_string()))?;
        crate::layout::write_atomic(&dir.join(criu::MANIFEST), &text)
            .map_err(failed("write the checkpoint manifest"))
    }

    /// Save a running VP's processes. Without `leave_running` the VP ends
    /// (its processes are in the checkpoint); with it, it runs on.
    pub async fn checkpoint(
        self: &Arc<Self>,
        vp: &str,
        leave_running: bool,
    ) -> Result<Manifest, Error> {
        let op = self.op_lock(vp)?;
        let guard = op.lock().await;
        let (config, state, frozen, ended) = {
            let inner = self.lock();
            let v = inner.vps.get(vp).ok_or_else(|| self.missing(vp))?;
            let Some(run) = v.run.as_ref().filter(|_| v.phase == Phase::Running) else {
                return Err(Error::not_running(vp));
            };
            (
                v.config.clone(),
                run.state.clone(),
                v.frozen,
                run.ended.clone(),
            )
        };
        oci::refuse(
            &config,
            "checkpointed (containerd owns its life: `ctr task checkpoint` is runc's)",
        )?;
        if !criu_found(&self.cfg.criu) {
            return Err(Error::Failed(format!(
                "no criu at '{}': install CRIU (Debian: apt install criu) or give cellsd --criu PATH; the VP was not touched",
                self.cfg.criu.display()
            )));
        }
        if state.devices.fb < 0 && state.devices.fb_node.is_some() {
            return Err(Error::InvalidArgument(format!(
                "VP '{vp}' draws on a mux_fb kernel framebuffer (/dev/fb{}): CRIU cannot save a device's mapping; checkpoints need cellsd's own framebuffer (without the mux_fb module)",
                state.devices.fb_node.unwrap_or(0)
            )));
        }
        if let Some((p, path)) = binder_user(&self.cgroup_of(&config).pids()) {
            return Err(Error::InvalidArgument(format!(
                "process {p} of VP '{vp}' has {path} open: CRIU cannot save binder state (nor Android's ashmem); checkpoint a VP whose processes do not use binder"
            )));
        }
        let pid = state.init_pid;
        let dir = self.checkpoint_dir(vp);
        let _ = std::fs::remove_dir_all(&dir);
        let images = dir.join(criu::IMAGES);
        std::fs::create_dir_all(&images).map_err(failed("create the checkpoint folder"))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(failed("chmod the checkpoint folder"))?;

        let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .map_err(failed("read the VP's mounts"))?;
        let mounts = criu::parse_mountinfo(&info);
        let external = criu::external_mounts(&mounts);
        let mut ttys = Vec::new();
        let mut tty_rdevs = Vec::new();
        for p in criu::external_tty_paths(&mounts) {
            // A mount point the VP cannot replace (its mounts are locked).
            let m = std::fs::symlink_metadata(format!("/proc/{pid}/root{p}"))
                .map_err(failed(&format!("stat the VP's {p}")))?;
            ttys.push((criu::tty_key(m.rdev(), m.dev()), p));
            tty_rdevs.push(m.rdev());
        }
        // The framebuffer's contents (the monitor's file, not a VP path).
        let fb = state.devices.fb;
        let framebuffer = fb >= 0
            && std::fs::copy(
                format!("/proc/{}/fd/{fb}", state.monitor_pid),
                dir.join(criu::FRAMEBUFFER),
            )
            .is_ok();

        let freezer = self.freezer_of(&config).ok_or_else(|| {
            Error::Failed(
                "no cgroup freezer to hold the VP still for its checkpoint: mount the freezer"
                    .into(),
            )
        })?;
        let freezer_dir = match &freezer {
            crate::cgroup::Freezer::V1(d) | crate::cgroup::Freezer::V2(d) => d.clone(),
        };
        let pause = self
            .pause_for_copy(vp, &config, state.monitor_pid, frozen)
            .await?;
        // The console's session is hung up: its terminal's other end stays
        // here (init starts a new one on the restored VP's console).
        let pids = self.cgroup_of(&config).pids();
        hang_up(&pids, &tty_rdevs).await;
        // Open files of the monitor's devices: new ones at restore.
        let rootfs = self.cfg.layout.vp_run_dir(vp).join("rootfs");
        let files = criu::external_files(&open_files(&pids), &mounts, &rootfs.to_string_lossy());

        // Its wakelocks, read while it is paused (they go with its end).
        let wakelocks = self.power.locks(vp).unwrap_or_default();
        let log = dir.join("dump.log");
        let mut args = vec![
            "dump".to_string(),
            "-t".into(),
            pid.to_string(),
            "-D".into(),
            images.display().to_string(),
            "-o".into(),
            log.display().to_string(),
            "-v2".into(),
        ];
        args.extend(criu::dump_args(
            &external,
            &ttys,
            Some(&freezer_dir),
            leave_running,
        ));
        args.extend(criu::file_args(&files));
        let t0 = Instant::now();
        let out = tokio::process::Command::new(&self.cfg.criu)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .await;
        let took = t0.elapsed();
        let dumped = match out {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(Error::Failed(format!(
                "criu dump failed ({}): {}; see {}:\n{}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim(),
                log.display(),
                criu::log_errors(&log)
            ))),
            Err(e) => Err(Error::Failed(format!(
                "run {}: {e}: install CRIU (Debian: apt install criu) or give cellsd --criu PATH",
                self.cfg.criu.display()
            ))),
        };
        if dumped.is_err() || leave_running {
            self.resume_after_copy(vp, pause);
        } else {
            // The cgroup goes with the VP; nothing to thaw.
            drop(pause);
        }
        dumped?;
        if !files.is_empty() {
            // The device files are streams: CRIU must not seek them.
            let img = images.join("files.img");
            let fixed = std::fs::read(&img)
                .map_err(failed("read criu's files.img"))
                .and_then(|b| criu::unposition_external_files(&b).map_err(Error::Failed))?;
            std::fs::write(&img, fixed.0).map_err(failed("write criu's files.img"))?;
        }
        tracing::info!(vp, ms = took.as_millis() as u64, "checkpoint dumped");
        let manifest = Manifest {
            version: criu::MANIFEST_VERSION,
            vp: vp.to_string(),
            template: config.cells.template.clone(),
            template_build: state.template_build.clone(),
            host_root_id: config.host_root_id(),
            mounts: external,
            ttys,
            framebuffer,
            wakelocks,
            files,
        };
        let text =
            serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Failed(e.to_string()))?;
        std::fs::write(dir.join(criu::MANIFEST), text)
            .map_err(failed("write the checkpoint manifest"))?;
        if !leave_running {
            // criu ended the VP's processes: wait for its cleanup.
            let mut ended = ended;
            if tokio::time::timeout(Duration::from_secs(30), ended.wait_for(|e| *e))
                .await
                .is_err()
            {
                tracing::warn!(vp, "the checkpointed VP did not end within 30 s");
            }
            self.power.set_freezing(vp, false);
        }
        drop(guard);
        Ok(manifest)
    }

    /// Bring a checkpointed VP back: its processes continue in a new
    /// monitor's devices and tree.
    pub async fn restore(self: &Arc<Self>, vp: &str) -> Result<Manifest, Error> {
        let dir = self.checkpoint_dir(vp);
        let mut manifest = self.read_checkpoint(vp)?;
        if !criu_found(&self.cfg.criu) {
            return Err(Error::Failed(format!(
                "no criu at '{}': install CRIU (Debian: apt install criu) or give cellsd --criu PATH; the checkpoint was not touched",
                self.cfg.criu.display()
            )));
        }
        let config = {
            let inner = self.lock();
            inner
                .vps
                .get(vp)
                .ok_or_else(|| self.missing(vp))?
                .config
                .clone()
        };
        if manifest.host_root_id != config.host_root_id() {
            // Made under another id range (a live move): its id maps follow.
            self.shift_checkpoint_ids(vp, &mut manifest, &config)?;
        }
        let current = crate::template::current_build(&self.cfg.layout, &config.cells.template);
        if current.as_deref() != Some(manifest.template_build.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "the checkpoint of '{vp}' runs template '{}' build {}, the current build is {}: its programs' files must be the same; rebuild is not possible, start the VP afresh with `cellctl start {vp}`",
                manifest.template,
                manifest.template_build,
                current.as_deref().unwrap_or("none")
            )));
        }
        let req = crate::monitor::RestoreRequest {
            criu: self.cfg.criu.clone(),
            images: dir.join(criu::IMAGES),
            mounts: manifest.mounts.clone(),
            ttys: manifest.ttys.clone(),
            files: manifest.files.clone(),
            framebuffer: manifest.framebuffer.then(|| dir.join(criu::FRAMEBUFFER)),
            log: dir.join("restore.log"),
        };
        self.start_inner(vp, Some(req), None).await?;
        // The wakelocks it held, taken again in its new power file system
        // (the monitor's mount, not a path of the VP's).
        let monitor = {
            let inner = self.lock();
            inner
                .vps
                .get(vp)
                .and_then(|v| v.run.as_ref())
                .map(|r| r.state.monitor_pid)
        };
        if let Some(m) = monitor {
            let run = self.cfg.layout.vp_run_dir(vp);
            let file = PathBuf::from(format!("/proc/{m}/root"))
                .join(run.strip_prefix("/").unwrap_or(&run))
                .join("dev/power/wake_lock");
            for lock in &manifest.wakelocks {
                if let Err(e) = std::fs::write(&file, lock) {
                    tracing::warn!(vp, lock, "taking the wakelock again: {e}");
                }
            }
        }
        // Restored once: a second restore would run the same processes twice
        // against files that moved on.
        let _ = std::fs::rename(
            dir.join(criu::MANIFEST),
            dir.join("checkpoint.restored.json"),
        );
        Ok(manifest)
    }
}

/// SIGKILL to the VP's processes whose controlling terminal is one of the
/// external ttys (the console's session); waits until they are zombies.
async fn hang_up(pids: &[i32], ttys: &[u64]) {
    let on_tty = |pid: i32| -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // Fields after the command's closing parenthesis: state ppid pgrp session tty_nr.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let tty = rest
            .split_whitespace()
            .nth(4)
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0);
        tty != 0 && ttys.contains(&tty)
    };
    let victims: Vec<i32> = pids.iter().copied().filter(|p| on_tty(*p)).collect();
    for p in &victims {
        // SAFETY: a signal to a process of the VP's cgroup, frozen (its pid
        // cannot be reused before its parent, also frozen, reaps it).
        unsafe { libc::kill(*p, libc::SIGKILL) };
    }
    let zombie = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true)
    };
    let t0 = Instant::now();
    while !victims.iter().all(|p| zombie(*p)) && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Every open file of these processes (frozen: the set holds still).
fn open_files(pids: &[i32]) -> Vec<criu::OpenFile> {
    let mut out = Vec::new();
    for p in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{p}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let n = fd.file_name();
            let Ok(info) =
                std::fs::read_to_string(format!("/proc/{p}/fdinfo/{}", n.to_string_lossy()))
            else {
                continue;
            };
            let mnt_id = criu::fdinfo_field(&info, "mnt_id").and_then(|v| v.parse().ok());
            let flags =
                criu::fdinfo_field(&info, "flags").and_then(|v| i32::from_str_radix(&v, 8).ok());
            let (Some(mnt_id), Some(flags)) = (mnt_id, flags) else {
                continue;
            };
            let Ok(meta) = std::fs::metadata(fd.path()) else {
                continue;
            };
            let Ok(path) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let fuse = nix::sys::statfs::statfs(&fd.path())
                .map(|s| s.filesystem_type() == nix::sys::statfs::FUSE_SUPER_MAGIC)
                .unwrap_or(false);
            out.push(criu::OpenFile {
                mnt_id,
                fuse,
                ino: meta.ino(),
                flags,
                path: path.to_string_lossy().into_owned(),
            });
        }
    }
    out
}

/// A process with a binder device open, and that device's path.
fn binder_user(pids: &[i32]) -> Option<(i32, String)> {
    for p in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{p}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            if t.starts_with("/dev/") && t.contains("binder") {
                return Some((*p, t.into_owned()));
            }
        }
    }
    None
}

/// Whether `criu` names an executable file (a path, or a name in PATH).
fn criu_found(criu: &Path) -> bool {
    let exec = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if criu.components().count() > 1 {
        return exec(criu);
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| exec(&d.join(criu))))
        .unwrap_or(false)
}
