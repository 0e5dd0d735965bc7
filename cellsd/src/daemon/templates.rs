//! Templates: builds, their garbage collection and the build a starting VP pins.

use super::*;

impl Manager {
    pub(super) fn check_template_known(&self, t: &str) -> Result<(), Error> {
        name::validate("template", t)?;
        let has_recipe = template::recipe_path(&self.cfg.sources, t).is_file();
        let built = template::current_build(&self.cfg.layout, t).is_some();
        if has_recipe || built {
            return Ok(());
        }
        let mut known = template::available_recipes(&self.cfg.sources);
        known.extend(template::built_templates(&self.cfg.layout));
        known.sort();
        known.dedup();
        Err(Error::UnknownTemplate(format!(
            "unknown template '{t}': known templates are {}; see `cellctl template list`",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )))
    }

    pub async fn template_build(self: &Arc<Self>, t: &str) -> Result<String, Error> {
        name::validate("template", t)?;
        let _guard = self.build_guard()?;
        let layout = self.cfg.layout.clone();
        let sources = self.cfg.sources.clone();
        let mgr = Arc::clone(self);
        let tname = t.to_string();
        let info = tokio::task::spawn_blocking(move || {
            remove_unfinished(&layout, &tname);
            template::build(&layout, &sources, &tname, progress(&mgr, &tname))
        })
        .await
        .map_err(|e| Error::Failed(e.to_string()))?
        .map_err(|e| match e {
            template::TemplateError::UnknownRecipe { .. } => Error::UnknownTemplate(e.to_string()),
            template::TemplateError::Name(n) => Error::InvalidName(n.to_string()),
            other => Error::Failed(other.to_string()),
        })?;
        tracing::info!(
            template = t,
            build = info.build.as_str(),
            files = info.files,
            "template built"
        );
        self.template_gc().await;
        Ok(info.build)
    }

    /// Import Android images (role -> an fd the caller opened) as a new
    /// build of `t`; returns its id. See [`crate::android_image`].
    pub async fn template_import(
        self: &Arc<Self>,
        t: &str,
        images: Vec<(String, OwnedFd)>,
    ) -> Result<String, Error> {
        name::validate("template", t)?;
        if template::recipe_path(&self.cfg.sources, t).is_file() {
            return Err(Error::InvalidArgument(format!(
                "template '{t}' has a recipe (rootfs-templates/{t}): import the images under another name"
            )));
        }
        let mut roles = Vec::new();
        for (role, fd) in images {
            let r = crate::android_image::Role::parse(&role)
                .map_err(|e| Error::InvalidArgument(e.to_string()))?;
            if roles.iter().any(|(x, _)| *x == r) {
                return Err(Error::InvalidArgument(format!(
                    "two {role} images: give each once"
                )));
            }
            roles.push((r, fd));
        }
        self.import_build(t, "Android images", move |layout, t, progress| {
            crate::android_image::import(layout, t, roles, progress).map_err(|e| match e {
                crate::android_image::ImportError::Role(_)
                | crate::android_image::ImportError::NoSystem
                | crate::android_image::ImportError::Format { .. }
                | crate::android_image::ImportError::Sparse { .. }
                | crate::android_image::ImportError::NoInit => {
                    Error::InvalidArgument(e.to_string())
                }
                other => Error::Failed(other.to_string()),
            })
        })
        .await
    }

    /// Make template `t` of an OCI image: its config (JSON) and its layers
    /// (files, bottom first). Returns the new build's id.
    pub async fn template_import_oci(
        self: &Arc<Self>,
        t: &str,
        config: String,
        layers: Vec<OwnedFd>,
    ) -> Result<String, Error> {
        name::validate("template", t)?;
        if template::recipe_path(&self.cfg.sources, t).is_file() {
            return Err(Error::InvalidArgument(format!(
                "template '{t}' has a recipe (rootfs-templates/{t}): import the image under another name"
            )));
        }
        if layers.is_empty() {
            return Err(Error::InvalidArgument("the image has no layers".into()));
        }
        self.import_build(t, "OCI image", move |layout, t, progress| {
            crate::oci::image::import(layout, t, &config, layers, progress).map_err(|e| match e {
                crate::oci::image::ImageError::Layer { .. }
                | crate::oci::image::ImageError::Config(_)
                | crate::oci::image::ImageError::NoInit => Error::InvalidArgument(e.to_string()),
                other => Error::Failed(other.to_string()),
            })
        })
        .await
    }

    /// An import into a new build of template `t` (`run`, on the blocking
    /// pool, under the build lock, with progress signals); the build's id.
    async fn import_build<F>(
        self: &Arc<Self>,
        t: &str,
        what: &'static str,
        run: F,
    ) -> Result<String, Error>
    where
        F: FnOnce(
                &Layout,
                &str,
                &mut dyn FnMut(u64, u64, &str),
            ) -> Result<template::BuildInfo, Error>
            + Send
            + 'static,
    {
        let _guard = self.build_guard()?;
        let layout = self.cfg.layout.clone();
        let mgr = Arc::clone(self);
        let tname = t.to_string();
        let info = tokio::task::spawn_blocking(move || {
            remove_unfinished(&layout, &tname);
            let mut p = progress(&mgr, &tname);
            run(&layout, &tname, &mut p)
        })
        .await
        .map_err(|e| Error::Failed(e.to_string()))??;
        tracing::info!(
            template = t,
            build = info.build.as_str(),
            files = info.files,
            "{what} imported"
        );
        self.template_gc().await;
        Ok(info.build)
    }

    /// The build lock (one build or import at a time), or Busy.
    fn build_guard(&self) -> Result<tokio::sync::MutexGuard<'_, ()>, Error> {
        self.build_lock.try_lock().map_err(|_| {
            Error::Busy("another template build is running; wait for it to finish".into())
        })
    }

    /// Remove template builds that are neither current nor used by a running VP.
    pub(super) async fn template_gc(&self) {
        let in_use: Vec<(String, String)> = {
            let inner = self.lock();
            inner
                .vps
                .values()
                .filter_map(|v| {
                    v.run.as_ref().map(|r| {
                        (
                            v.config.cells.template.clone(),
                            r.state.template_build.clone(),
                        )
                    })
                })
                .collect()
        };
        let layout = self.cfg.layout.clone();
        let pinned = Arc::clone(&self.pinned);
        let _ = tokio::task::spawn_blocking(move || {
            let pins = pinned.lock().unwrap_or_else(|p| p.into_inner());
            for t in template::built_templates(&layout) {
                let used: Vec<String> = in_use
                    .iter()
                    .chain(pins.iter())
                    .filter(|(tt, _)| *tt == t)
                    .map(|(_, b)| b.clone())
                    .collect();
                for b in template::gc(&layout, &t, &used) {
                    tracing::info!(
                        template = t.as_str(),
                        build = b.as_str(),
                        "removed old template build"
                    );
                }
            }
        })
        .await;
    }

    pub fn template_list(&self) -> Vec<TemplateInfo> {
        let layout = &self.cfg.layout;
        let mut names = template::available_recipes(&self.cfg.sources);
        names.extend(template::built_templates(layout));
        names.sort();
        names.dedup();
        let inner = self.lock();
        names
            .into_iter()
            .map(|n| {
                let build = template::current_build(layout, &n);
                let info = build
                    .as_ref()
                    .and_then(|b| template::build_info(layout, &n, b));
                let description =
                    info.as_ref()
                        .map(|i| i.description.clone())
                        .unwrap_or_else(|| {
                            template::load_recipe(&self.cfg.sources, &n)
                                .map(|r| r.description)
                                .unwrap_or_default()
                        });
                TemplateInfo {
                    built: build.is_some(),
                    recipe: template::recipe_path(&self.cfg.sources, &n).is_file(),
                    build: build.unwrap_or_default(),
                    created: info.as_ref().map(|i| i.created).unwrap_or(0),
                    description,
                    files: info.as_ref().map(|i| i.files).unwrap_or(0),
                    bytes: info.as_ref().map(|i| i.bytes).unwrap_or(0),
                    vps: inner
                        .vps
                        .values()
                        .filter(|v| v.config.cells.template == n)
                        .count() as u32,
                    name: n,
                }
            })
            .collect()
    }
}

/// A starting VP's hold on the template build it picked (see
/// `Manager::pinned`); released when the start ends, by then the running
/// VP's run state keeps the build.
pub(super) struct BuildPin {
    pins: Arc<Mutex<Vec<(String, String)>>>,
    template: String,
    pub(super) build: String,
}

impl BuildPin {
    /// Pick the current build of `template` and pin it (None: not built).
    pub(super) fn take(
        pins: &Arc<Mutex<Vec<(String, String)>>>,
        layout: &Layout,
        template: &str,
    ) -> Option<Self> {
        let mut held = pins.lock().unwrap_or_else(|p| p.into_inner());
        let build = template::current_build(layout, template)?;
        held.push((template.to_string(), build.clone()));
        Some(Self {
            pins: Arc::clone(pins),
            template: template.to_string(),
            build,
        })
    }
}

impl Drop for BuildPin {
    fn drop(&mut self) {
        let mut held = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = held
            .iter()
            .position(|(t, b)| *t == self.template && *b == self.build)
        {
            held.remove(i);
        }
    }
}

/// No build runs now (the caller holds the build lock): what a crash left
/// half-built goes.
fn remove_unfinished(layout: &crate::layout::Layout, t: &str) {
    for p in template::remove_partial(layout, t) {
        tracing::info!(
            template = t,
            build = p.as_str(),
            "removed an unfinished build"
        );
    }
}

/// A build's progress as TemplateProgress signals: at most ~100, and not
/// more than every 20 ms (the last always).
fn progress<'a>(mgr: &'a Arc<Manager>, t: &'a str) -> impl FnMut(u64, u64, &str) + 'a {
    let mut last = (u64::MAX, std::time::Instant::now());
    move |done, total, step| {
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        if done == total || pct != last.0 && last.1.elapsed() >= Duration::from_millis(20) {
            last = (pct, std::time::Instant::now());
            mgr.emit(Event::TemplateProgress {
                template: t.to_string(),
                done,
                total,
                step: step.to_string(),
            });
        }
    }
}
