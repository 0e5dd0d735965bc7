//! Cold move of a VP between cells hosts: `cellctl export VP -o FILE|-`
//! writes a [`crate::vparchive`] (its settings, disk image without holes,
//! adb keys, port forwards, number, and its template by content
//! fingerprint) to an fd the caller opened; `cellctl import FILE|-
//! [--name NEW]` makes a new VP of it here — created as `cellctl create`
//! would (its own id range, address and adb port of this host), then its
//! disk put in: checked with `e2fsck -fn` before it is ever mounted, its
//! owners moved to this VP's id range (`cellsd __shift-ids`). A failed
//! import leaves no VP behind.

use std::io::BufReader;
use std::os::fd::OwnedFd;

use serde::{Deserialize, Serialize};

use super::*;
use crate::vparchive::{self, FileEntry, Manifest, TemplateRef};

/// What an export or an import left, for the next incremental one:
/// `vps/NAME/export.json` (what was sent) and `import.json` (what the image
/// here was made into).
#[derive(Debug, Serialize, Deserialize)]
struct Blocks {
    id: String,
    blocks: Vec<u64>,
}

const EXPORT_STATE: &str = "export.json";
const IMPORT_STATE: &str = "import.json";

fn read_blocks(p: &std::path::Path) -> Option<Blocks> {
    serde_json::from_slice(&std::fs::read(p).ok()?).ok()
}

fn write_blocks(p: &std::path::Path, b: &Blocks) -> Result<(), Error> {
    let j = serde_json::to_vec(b).map_err(|e| Error::Failed(e.to_string()))?;
    crate::layout::write_atomic(p, &j).map_err(failed("save the block list"))
}

impl Manager {
    /// Progress as VpTransferProgress signals (≤ ~100, ≥ 20 ms apart).
    fn transfer_progress<'a>(
        self: &'a Arc<Self>,
        vp: &'a str,
        step: &'a str,
    ) -> impl FnMut(u64, u64) + 'a {
        let mut last = (u64::MAX, std::time::Instant::now());
        move |done, total| {
            let pct = (done * 100).checked_div(total).unwrap_or(100);
            if done == total || pct != last.0 && last.1.elapsed() >= Duration::from_millis(20) {
                last = (pct, std::time::Instant::now());
                self.emit(Event::TransferProgress {
                    vp: vp.to_string(),
                    done,
                    total,
                    step: step.to_string(),
                });
            }
        }
    }

    pub async fn export(
        self: &Arc<Self>,
        vp: &str,
        out: OwnedFd,
        incremental: bool,
        with_checkpoint: bool,
    ) -> Result<String, Error> {
        if incremental && with_checkpoint {
            return Err(Error::InvalidArgument(
                "a checkpoint goes in a whole export only: export without --incremental".into(),
            ));
        }
        let op = self.op_lock(vp)?;
        let _op = op.lock().await;
        let config = {
            let inner = self.lock();
            let v = inner.vps.get(vp).ok_or_else(|| self.missing(vp))?;
            if v.phase != Phase::Stopped {
                return Err(Error::Running(format!(
                    "VP '{vp}' runs: stop it first (`cellctl stop {vp}`), then export it"
                )));
            }
            v.config.clone()
        };
        oci::refuse(
            &config,
            "exported (it moves with its image: run it from the image there)",
        )?;
        if config.cells.disk.is_none() {
            return Err(Error::InvalidArgument(format!(
                "VP '{vp}' has no disk image of its own (created with --disk none): only a VP with one can be exported"
            )));
        }
        let layout = self.cfg.layout.clone();
        let t = config.cells.template.clone();
        let build = crate::template::current_build(&layout, &t).ok_or_else(|| {
            Error::TemplateNotBuilt(format!(
                "template '{t}' of VP '{vp}' is not built here: build it (`cellctl template build {t}`) before exporting"
            ))
        })?;
        let number = self.switchboard().ok().and_then(|s| {
            s.report()
                .vps
                .into_iter()
                .find(|r| r.vp == vp)
                .map(|r| r.number)
                .filter(|n| !n.is_empty())
        });
        let adb_keys = std::fs::read_to_string(layout.vp_adb_keys(vp)).unwrap_or_default();
        let checkpoint = if with_checkpoint {
            Some(self.checkpoint_for_export(vp)?)
        } else {
            None
        };
        let mgr = Arc::clone(self);
        let name = vp.to_string();
        tokio::task::spawn_blocking(move || -> Result<String, Error> {
            let fingerprint = crate::template::fingerprint(&layout, &t, &build)
                .map_err(failed("fingerprint the template"))?;
            let img_path = layout.vp_dir(&name).join(crate::disk::IMAGE_FILE);
            let img = std::fs::File::open(&img_path).map_err(failed("open the VP's disk image"))?;
            let size = img.metadata().map_err(failed("stat the disk image"))?.len();
            let hashes = vparchive::block_hashes(&img).map_err(|e| Error::Failed(e.to_string()))?;
            let state = layout.vp_dir(&name).join(EXPORT_STATE);
            let (segments, zero, base) = if incremental {
                let prev = read_blocks(&state).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "VP '{name}' was not exported before: export it whole first (without --incremental)"
                    ))
                })?;
                let (data, zero) = vparchive::changed_blocks(&prev.blocks, &hashes, size);
                (data, zero, Some(prev.id))
            } else {
                let segs = vparchive::segments(&img).map_err(|e| Error::Failed(e.to_string()))?;
                (segs, Vec::new(), None)
            };
            let export_id = crate::devices::telephony::voip::random_hex(8);
            let mut entries = vec![FileEntry {
                name: crate::disk::IMAGE_FILE.to_string(),
                size,
                segments,
                zero,
            }];
            let mut open = vec![img];
            let mut checkpoint_json = None;
            if let Some((json, files)) = checkpoint {
                for (name, path) in files {
                    let f = std::fs::File::open(&path).map_err(failed("open a checkpoint file"))?;
                    let size = f.metadata().map_err(failed("stat a checkpoint file"))?.len();
                    let segments =
                        vparchive::segments(&f).map_err(|e| Error::Failed(e.to_string()))?;
                    entries.push(FileEntry {
                        name,
                        size,
                        segments,
                        zero: Vec::new(),
                    });
                    open.push(f);
                }
                checkpoint_json = Some(json);
            }
            let manifest = Manifest {
                version: 1,
                definition: serde_json::to_value(&config).map_err(|e| Error::Failed(e.to_string()))?,
                template: TemplateRef {
                    name: t,
                    build,
                    fingerprint,
                },
                adb_keys,
                number,
                files: entries,
                export_id: export_id.clone(),
                base,
                checkpoint: checkpoint_json,
            };
            let data: u64 = manifest.files.iter().map(FileEntry::data_bytes).sum();
            let mut progress = mgr.transfer_progress(&name, "exporting");
            let bytes = vparchive::write(std::fs::File::from(out), &manifest, &open, &mut progress)
                .map_err(|e| Error::Failed(format!("exporting VP '{name}': {e}")))?;
            // The next incremental export starts from what was just sent.
            write_blocks(&state, &Blocks { id: export_id, blocks: hashes })?;
            tracing::info!(
                vp = name.as_str(),
                bytes,
                data,
                incremental,
                with_checkpoint = manifest.checkpoint.is_some(),
                "exported"
            );
            Ok(serde_json::json!({"vp": name, "bytes": bytes, "data_bytes": data, "disk_bytes": size})
                .to_string())
        })
        .await
        .map_err(|e| Error::Failed(e.to_string()))?
    }

    /// Import an archive read from `input`; returns JSON {vp, warnings}.
    pub async fn import(
        self: &Arc<Self>,
        input: OwnedFd,
        name: Option<String>,
        any_build: bool,
        caller_is_root: bool,
    ) -> Result<String, Error> {
        let mut reader = BufReader::with_capacity(1 << 20, std::fs::File::from(input));
        // The manifest first (small): what to create.
        let (manifest, mut hash, reader) = tokio::task::spawn_blocking(move || {
            let mut hash = xxhash_rust::xxh3::Xxh3::new();
            vparchive::read_manifest(&mut reader, &mut hash).map(|m| (m, hash, reader))
        })
        .await
        .map_err(|e| Error::Failed(e.to_string()))?
        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let old: VpConfig = serde_json::from_value(manifest.definition.clone()).map_err(|e| {
            Error::InvalidArgument(format!(
                "the archive's VP definition is not one cells reads: {e}"
            ))
        })?;
        let name = name.unwrap_or_else(|| old.name.clone());
        name::validate("VP", &name)?;
        if manifest.checkpoint.is_some() && !caller_is_root {
            // CRIU restores whatever its images say, as root: they are
            // taken only from whom could run criu himself.
            return Err(Error::Api(crate::api::CellsError::AccessDenied(
                "the archive carries a checkpoint (a live move): CRIU restores what its images say as host root, so only root may import one; import it as root, or export the VP without its checkpoint (`cellctl export`)".into(),
            )));
        }
        if manifest.base.is_some() {
            return self
                .import_update(&name, &old, manifest, reader, hash)
                .await;
        }
        let t = &manifest.template;
        if old.cells.template != t.name {
            return Err(Error::InvalidArgument(
                "the archive's definition and its template reference disagree".into(),
            ));
        }
        // Not built here but its recipe is: built now (a build of the same
        // recipe and programs has the same content, so the check below
        // passes where the hosts agree).
        if crate::template::current_build(&self.cfg.layout, &t.name).is_none()
            && crate::template::recipe_path(&self.cfg.sources, &t.name).is_file()
        {
            tracing::info!(
                template = t.name.as_str(),
                "building the imported VP's template"
            );
            self.template_build(&t.name).await?;
        }
        let build = crate::template::current_build(&self.cfg.layout, &t.name).ok_or_else(|| {
            Error::TemplateNotBuilt(format!(
                "template '{}' is not built here and has no recipe here: import it (`cellctl template import`) or build it, then import the VP again",
                t.name
            ))
        })?;
        let (layout, tn) = (self.cfg.layout.clone(), t.name.clone());
        let here =
            tokio::task::spawn_blocking(move || crate::template::fingerprint(&layout, &tn, &build))
                .await
                .map_err(|e| Error::Failed(e.to_string()))?
                .map_err(failed("fingerprint the template"))?;
        let mut warnings = Vec::new();
        if here != t.fingerprint {
            if manifest.checkpoint.is_some() {
                return Err(Error::InvalidArgument(format!(
                    "template '{}' here is not the build the checkpointed VP's programs run from (content {} here, {} in the archive): a live move needs the same template content; import the template (`cellctl template import`) or move the VP cold (`cellctl export`)",
                    t.name, here, t.fingerprint
                )));
            }
            if !any_build {
                return Err(Error::InvalidArgument(format!(
                    "template '{}' here is not the build the VP ran on (content {} here, {} in the archive): \
                     the VP's writable layer sits on top of it; import with --any-build to accept this build",
                    t.name, here, t.fingerprint
                )));
            }
            warnings.push(format!(
                "template '{}' here differs from the VP's (content {here} vs {})",
                t.name, t.fingerprint
            ));
        }
        let opts = old.create_options();
        let size = opts
            .disk
            .filter(|d| *d != crate::config::NO_LIMIT)
            .ok_or_else(|| Error::InvalidArgument("the archive's VP has no disk image".into()))?;
        let entry = manifest
            .files
            .iter()
            .find(|f| f.name == crate::disk::IMAGE_FILE)
            .ok_or_else(|| Error::InvalidArgument("the archive holds no disk image".into()))?;
        if entry.size != size {
            return Err(Error::InvalidArgument(format!(
                "the archive's disk image is {} bytes, its definition says {size}",
                entry.size
            )));
        }
        // The VP as `create` makes it here (ids, address, adb port, disk).
        self.create(&name, opts)?;
        match self
            .import_into(&name, &old, manifest, reader, &mut hash, &mut warnings)
            .await
        {
            Ok(()) => {
                tracing::info!(vp = name.as_str(), "imported");
                Ok(serde_json::json!({"vp": name, "warnings": warnings}).to_string())
            }
            Err(e) => {
                if let Err(d) = self.destroy(&name).await {
                    tracing::warn!(vp = name.as_str(), "removing the half-imported VP: {d}");
                }
                Err(e)
            }
        }
    }

    async fn import_into(
        self: &Arc<Self>,
        name: &str,
        old: &VpConfig,
        manifest: Manifest,
        mut reader: BufReader<std::fs::File>,
        hash: &mut xxhash_rust::xxh3::Xxh3,
        warnings: &mut Vec<String>,
    ) -> Result<(), Error> {
        let layout = self.cfg.layout.clone();
        let vp_dir = layout.vp_dir(name);
        let staging = vp_dir.join(format!("{}import", crate::layout::CREATING_PREFIX));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir(&staging).map_err(failed("create the import folder"))?;
        let new_root = {
            let inner = self.lock();
            inner.vps.get(name).and_then(|v| v.config.host_root_id())
        };
        let old_root = old.host_root_id();
        let mgr = Arc::clone(self);
        let (st, n, m) = (staging.clone(), name.to_string(), manifest.clone());
        let mut h = hash.clone();
        tokio::task::spawn_blocking(move || {
            let mut progress = mgr.transfer_progress(&n, "importing");
            vparchive::read_files(&mut reader, &mut h, &m, &st, &mut progress)
        })
        .await
        .map_err(|e| Error::Failed(e.to_string()))?
        .map_err(|e| Error::InvalidArgument(format!("importing VP '{name}': {e}")))?;
        let img = staging.join(crate::disk::IMAGE_FILE);
        self.check_and_shift(name, &img, old_root, new_root).await?;
        std::fs::rename(&img, vp_dir.join(crate::disk::IMAGE_FILE))
            .map_err(failed("put the imported disk in place"))?;
        if let Some(json) = &manifest.checkpoint {
            self.place_imported_checkpoint(name, json, &staging.join(vparchive::CHECKPOINT_DIR))?;
        }
        let _ = std::fs::remove_dir_all(&staging);
        if !manifest.adb_keys.is_empty() {
            crate::layout::write_atomic(&layout.vp_adb_keys(name), manifest.adb_keys.as_bytes())
                .map_err(failed("write the VP's adb keys"))?;
        }
        for f in &old.cells.network.ports {
            if let Err(e) = self.port_add(name, &format!("{}:{}", f.host, f.vp)).await {
                warnings.push(format!("port forward {}:{}: {e}", f.host, f.vp));
            }
        }
        if let Some(number) = &manifest.number {
            if let Ok(sb) = self.switchboard() {
                if let Err(e) = sb.set_number(name, number) {
                    warnings.push(format!("phone number {number}: {e}"));
                }
            }
        }
        self.record_import(name, &manifest.export_id).await
    }

    /// `e2fsck -fn` (before the kernel ever mounts it), then the owners
    /// moved from the old id range to this VP's.
    async fn check_and_shift(
        &self,
        name: &str,
        img: &std::path::Path,
        old_root: Option<u32>,
        new_root: Option<u32>,
    ) -> Result<(), Error> {
        let layout = &self.cfg.layout;
        // Checked before the kernel ever mounts it.
        let fsck = tokio::process::Command::new("e2fsck")
            .args(["-f", "-n"])
            .arg(img)
            .output()
            .await
            .map_err(failed("run e2fsck (Debian's e2fsprogs)"))?;
        if !fsck.status.success() {
            return Err(Error::InvalidArgument(format!(
                "the archive's disk image is not a sound ext4 file system (e2fsck: {}): not imported",
                String::from_utf8_lossy(&fsck.stdout)
                    .lines()
                    .chain(String::from_utf8_lossy(&fsck.stderr).lines())
                    .rfind(|l| !l.trim().is_empty())
                    .unwrap_or("")
            )));
        }
        if let (Some(o), Some(n)) = (old_root, new_root) {
            if o != n {
                let mnt = layout
                    .vp_run_dir(name)
                    .join(format!("{}shift", crate::layout::CREATING_PREFIX));
                let out = tokio::process::Command::new(&self.cfg.self_exe)
                    .arg("__shift-ids")
                    .arg(img)
                    .arg(&mnt)
                    .arg(o.to_string())
                    .arg(n.to_string())
                    .output()
                    .await
                    .map_err(failed("run cellsd __shift-ids"))?;
                let _ = std::fs::remove_dir(&mnt);
                if !out.status.success() {
                    return Err(Error::Failed(format!(
                        "importing VP '{name}': {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    )));
                }
            }
        } else if old_root != new_root {
            return Err(Error::InvalidArgument(
                "the archive's VP and this one differ in being privileged".into(),
            ));
        }
        Ok(())
    }

    /// What the image here is now, for the next incremental import.
    async fn record_import(&self, name: &str, export_id: &str) -> Result<(), Error> {
        let dir = self.cfg.layout.vp_dir(name);
        let id = export_id.to_string();
        tokio::task::spawn_blocking(move || {
            let img = std::fs::File::open(dir.join(crate::disk::IMAGE_FILE))
                .map_err(failed("open the disk image"))?;
            let blocks = vparchive::block_hashes(&img).map_err(|e| Error::Failed(e.to_string()))?;
            write_blocks(&dir.join(IMPORT_STATE), &Blocks { id, blocks })
        })
        .await
        .map_err(|e| Error::Failed(e.to_string()))?
    }

    /// An incremental archive: the changed blocks go into the VP of that
    /// name here, which must be the one imported from the base export and
    /// unchanged since (else nothing is touched).
    async fn import_update(
        self: &Arc<Self>,
        name: &str,
        old: &VpConfig,
        manifest: Manifest,
        mut reader: BufReader<std::fs::File>,
        mut hash: xxhash_rust::xxh3::Xxh3,
    ) -> Result<String, Error> {
        let base = manifest.base.clone().unwrap_or_default();
        let op = self.op_lock(name).map_err(|_| {
            Error::InvalidArgument(format!(
                "the archive updates VP '{name}', which is not here: import its whole export first"
            ))
        })?;
        let _op = op.lock().await;
        let new_root = {
            let inner = self.lock();
            let v = inner.vps.get(name).ok_or_else(|| self.missing(name))?;
            if v.phase != Phase::Stopped {
                return Err(Error::Running(format!(
                    "VP '{name}' runs here: stop it first, then import the update"
                )));
            }
            v.config.host_root_id()
        };
        let dir = self.cfg.layout.vp_dir(name);
        let img = dir.join(crate::disk::IMAGE_FILE);
        let recorded = read_blocks(&dir.join(IMPORT_STATE));
        let i2 = img.clone();
        let now = tokio::task::spawn_blocking(move || {
            let f = std::fs::File::open(&i2).map_err(failed("open the disk image"))?;
            vparchive::block_hashes(&f).map_err(|e| Error::Failed(e.to_string()))
        })
        .await
        .map_err(|e| Error::Failed(e.to_string()))??;
        match recorded {
            Some(r) if r.id == base && r.blocks == now => {}
            Some(r) if r.id == base => {
                return Err(Error::InvalidArgument(format!(
                    "VP '{name}' changed here since it was imported (it ran): the update would mix two histories; import a whole export instead"
                )))
            }
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "VP '{name}' here was not imported from the export this update builds on: import a whole export instead"
                )))
            }
        }
        // Into a copy: a failure leaves the VP as it was.
        let staging = dir.join(format!("{}update", crate::layout::CREATING_PREFIX));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir(&staging).map_err(failed("create the update folder"))?;
        let copy = staging.join(crate::disk::IMAGE_FILE);
        let result = async {
            crate::disk::copy_sparse(&img, &copy).map_err(|e| Error::Failed(e.to_string()))?;
            let mgr = Arc::clone(self);
            let (st, n, m) = (staging.clone(), name.to_string(), manifest.clone());
            tokio::task::spawn_blocking(move || {
                let mut progress = mgr.transfer_progress(&n, "importing");
                vparchive::read_files(&mut reader, &mut hash, &m, &st, &mut progress)
            })
            .await
            .map_err(|e| Error::Failed(e.to_string()))?
            .map_err(|e| Error::InvalidArgument(format!("updating VP '{name}': {e}")))?;
            self.check_and_shift(name, &copy, old.host_root_id(), new_root)
                .await?;
            std::fs::rename(&copy, &img).map_err(failed("put the updated disk in place"))
        }
        .await;
        let _ = std::fs::remove_dir_all(&staging);
        result?;
        if !manifest.adb_keys.is_empty() {
            crate::layout::write_atomic(
                &self.cfg.layout.vp_adb_keys(name),
                manifest.adb_keys.as_bytes(),
            )
            .map_err(failed("write the VP's adb keys"))?;
        }
        self.record_import(name, &manifest.export_id).await?;
        tracing::info!(vp = name, "updated from an incremental export");
        Ok(serde_json::json!({"vp": name, "warnings": [], "updated": true}).to_string())
    }
}
