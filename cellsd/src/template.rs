//! Templates: the shared, read-only base filesystems VPs start from.
//!
//! A recipe lives in `rootfs-templates/NAME/template.toml` (see
//! rootfs-templates/README.md). Building one produces an immutable build
//! directory `<state>/templates/NAME/builds/N/rootfs`; `current` then points
//! at it (an atomic symlink swap). A build is never written again: a rebuild
//! makes build N+1, VPs that run keep the build they started with (their
//! overlay's lower layer), and old builds are deleted once no running VP
//! uses them. VPs only ever see a build through a read-only mount.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::layout::{write_atomic, Layout};
use crate::name::{self, NameError};

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("unknown template '{name}': no recipe at {path}; available: {available}")]
    UnknownRecipe {
        name: String,
        path: PathBuf,
        available: String,
    },
    #[error("recipe {path} is invalid: {msg}")]
    BadRecipe { path: PathBuf, msg: String },
    #[error("{path} is not a statically linked program; {fix}")]
    NotStatic { path: PathBuf, fix: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("template '{0}' is not built: run `cellctl template build {0}` first")]
    NotBuilt(String),
    #[error(transparent)]
    Untrusted(#[from] crate::trust::TrustError),
    #[error("{path} is {why}: a template takes regular files only (put links in the recipe's [symlinks], and leave devices and FIFOs out)")]
    NotRegular { path: PathBuf, why: String },
    #[error("{path} is {size} bytes, more than the {cap} bytes a template file may have")]
    TooLarge { path: PathBuf, size: u64, cap: u64 },
    #[error("the template would be {total} bytes, more than the {cap} bytes a build may have")]
    BuildTooLarge { total: u64, cap: u64 },
}

/// Largest file a template build copies, and largest build.
pub const MAX_FILE: u64 = 512 << 20;
pub const MAX_BUILD: u64 = 4 << 30;

fn ioe<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> TemplateError + 'a {
    move |source| TemplateError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Busybox {
    /// Debian's busybox-static on the host.
    pub path: PathBuf,
    pub dest: String,
    /// Directory in the rootfs that gets a symlink per applet.
    pub applets: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Program {
    /// A program of this project, built statically next to cellsd.
    pub name: String,
    pub dest: String,
}

/// A Debian system as a template's base (`[debian]`): made once with
/// Debian's mmdebstrap from the archive, kept as a tarball in the cache
/// (a rebuild of the same base needs no network), unpacked into the build;
/// the recipe's other steps then go on top.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DebianBase {
    /// e.g. "bookworm".
    pub suite: String,
    /// mmdebstrap's variant: minbase (default), required, important, ...
    #[serde(default = "default_variant")]
    pub variant: String,
    #[serde(default = "default_mirror")]
    pub mirror: String,
    /// Packages on top of the variant.
    #[serde(default)]
    pub packages: Vec<String>,
}

fn default_variant() -> String {
    "minbase".into()
}

fn default_mirror() -> String {
    "http://deb.debian.org/debian".into()
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub dirs: Vec<String>,
    /// Octal modes for some of `dirs`, e.g. "/tmp" = "1777".
    #[serde(default)]
    pub modes: BTreeMap<String, String>,
    /// link path -> target.
    #[serde(default)]
    pub symlinks: BTreeMap<String, String>,
    pub busybox: Option<Busybox>,
    #[serde(default)]
    pub programs: Vec<Program>,
    /// Folder (relative to the recipe) copied into the rootfs as is.
    pub files: Option<String>,
    /// Files of the machine that builds the template, copied to the same
    /// path in the rootfs (e.g. a Debian program and the C library it needs).
    #[serde(default)]
    pub host_files: Vec<String>,
    /// A Debian system under everything else.
    pub debian: Option<DebianBase>,
}

/// One step of a build, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum BuildStep {
    Dir {
        path: String,
        mode: u32,
    },
    Symlink {
        link: String,
        target: String,
    },
    Copy {
        src: PathBuf,
        dest: String,
        mode: u32,
    },
}

impl BuildStep {
    fn describe(&self) -> String {
        match self {
            BuildStep::Dir { path, .. } => format!("mkdir {path}"),
            BuildStep::Symlink { link, target } => format!("ln -s {target} {link}"),
            BuildStep::Copy { dest, .. } => format!("install {dest}"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BuildInfo {
    pub template: String,
    pub build: String,
    /// Unix seconds.
    pub created: u64,
    pub description: String,
    pub files: u64,
    pub bytes: u64,
}

/// Where recipes and project programs are found.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The rootfs-templates folder.
    pub recipes: PathBuf,
    /// Folder with the project's statically built programs (cells-init ...).
    pub programs: PathBuf,
    /// Where bases fetched from the network are kept (root's alone).
    pub cache: PathBuf,
}

/// Default of `Sources::cache` (`cellsd --cache-dir`).
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/cells";

/// A name Debian's tools take as a suite, variant or package.
fn debian_word(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

impl DebianBase {
    fn check(&self, recipe: &Path) -> Result<(), TemplateError> {
        let bad = |msg: String| TemplateError::BadRecipe {
            path: recipe.to_path_buf(),
            msg,
        };
        for (what, w) in [("suite", &self.suite), ("variant", &self.variant)] {
            if !debian_word(w) {
                return Err(bad(format!("[debian] {what} '{w}' is not a Debian name")));
            }
        }
        if let Some(p) = self.packages.iter().find(|p| !debian_word(p)) {
            return Err(bad(format!(
                "[debian] package '{p}' is not a Debian package name"
            )));
        }
        let m = &self.mirror;
        if !(m.starts_with("http://") || m.starts_with("https://"))
            || m.bytes()
                .any(|b| b.is_ascii_whitespace() || b"'\"\\`$;|&<>".contains(&b))
        {
            return Err(bad(format!("[debian] mirror '{m}' is not an http(s) URL")));
        }
        Ok(())
    }

    /// The cached base's file name: the suite, variant and a hash of what
    /// makes it (mirror, packages, architecture).
    pub fn cache_name(&self) -> String {
        let mut pkgs = self.packages.clone();
        pkgs.sort();
        pkgs.dedup();
        let key = format!(
            "{}|{}|{}|{}|{}",
            self.suite,
            self.variant,
            self.mirror,
            pkgs.join(","),
            std::env::consts::ARCH
        );
        let h = xxhash_rust::xxh3::xxh3_64(key.as_bytes());
        format!("debian-{}-{}-{h:016x}.tar", self.suite, self.variant)
    }
}

/// The Debian base as a tarball in the cache: made with mmdebstrap if it is
/// not there. `progress` gets mmdebstrap's lines.
fn debian_tarball(
    cache: &Path,
    base: &DebianBase,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, TemplateError> {
    std::fs::create_dir_all(cache).map_err(ioe("mkdir", cache))?;
    std::fs::set_permissions(cache, std::fs::Permissions::from_mode(0o700))
        .map_err(ioe("chmod", cache))?;
    crate::trust::check_dir(cache, "template cache")?;
    let tar = cache.join(base.cache_name());
    // One maker of a base at a time (two cellsd, or two builds): the other
    // waits and then finds it made.
    let lock_path = cache.join(format!(".{}.lock", base.cache_name()));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&lock_path)
        .map_err(ioe("open", &lock_path))?;
    // SAFETY: flock on our open file; released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(ioe("lock", &lock_path)(std::io::Error::last_os_error()));
    }
    if tar.is_file() {
        progress(&format!("using the cached Debian base {}", tar.display()));
        return Ok(tar);
    }
    let mm = ["/usr/bin/mmdebstrap", "/bin/mmdebstrap"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .ok_or_else(|| TemplateError::BadRecipe {
            path: tar.clone(),
            msg: "a [debian] base needs Debian's mmdebstrap: apt-get install mmdebstrap".into(),
        })?;
    let partial = cache.join(format!(".{}.partial", base.cache_name()));
    let _ = std::fs::remove_file(&partial);
    let mut cmd = std::process::Command::new(mm);
    // Without recommends: a base of what the recipe names and needs.
    cmd.args([
        "--mode=root",
        "--format=tar",
        "--skip=output/dev",
        "--aptopt=Apt::Install-Recommends \"false\"",
    ])
    .arg(format!("--variant={}", base.variant));
    if !base.packages.is_empty() {
        cmd.arg(format!("--include={}", base.packages.join(",")));
    }
    cmd.arg(&base.suite)
        .arg(&partial)
        .arg(&base.mirror)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    progress(&format!(
        "mmdebstrap {} {} (downloads from {})",
        base.suite, base.variant, base.mirror
    ));
    let mut child = cmd.spawn().map_err(ioe("run", mm))?;
    let mut last = Vec::new();
    if let Some(err) = child.stderr.take() {
        use std::io::BufRead;
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            progress(&format!("mmdebstrap: {}", line.trim()));
            last.push(line);
            if last.len() > 20 {
                last.remove(0);
            }
        }
    }
    let status = child.wait().map_err(ioe("wait for", mm))?;
    if !status.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(TemplateError::BadRecipe {
            path: tar,
            msg: format!(
                "mmdebstrap failed ({status}); check the network and the mirror. Its last lines:\n{}",
                last.join("\n")
            ),
        });
    }
    std::fs::rename(&partial, &tar).map_err(ioe("rename", &partial))?;
    Ok(tar)
}

/// Unpack the base into `rootfs` (owners, modes and links as they are);
/// returns its files and bytes.
fn unpack_debian(tar: &Path, rootfs: &Path) -> Result<(u64, u64), TemplateError> {
    let tool = ["/usr/bin/tar", "/bin/tar"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .ok_or_else(|| TemplateError::BadRecipe {
            path: tar.to_path_buf(),
            msg: "unpacking a Debian base needs tar: apt-get install tar".into(),
        })?;
    let out = std::process::Command::new(tool)
        .args(["--numeric-owner", "--xattrs", "-xpf"])
        .arg(tar)
        .arg("-C")
        .arg(rootfs)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(ioe("run", tool))?;
    if !out.status.success() {
        return Err(TemplateError::BadRecipe {
            path: tar.to_path_buf(),
            msg: format!(
                "unpacking failed: {}; remove the cached base to fetch it again",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(count_tree(rootfs))
}

/// A path inside the rootfs: absolute, no "..".
fn rootfs_path(recipe: &Path, p: &str) -> Result<String, TemplateError> {
    let path = Path::new(p);
    let ok = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !ok {
        return Err(TemplateError::BadRecipe {
            path: recipe.to_path_buf(),
            msg: format!("'{p}' must be an absolute path without '..'"),
        });
    }
    Ok(p.to_string())
}

pub fn recipe_path(src: &Sources, template: &str) -> PathBuf {
    src.recipes.join(template).join("template.toml")
}

/// Names of all recipes in the sources.
pub fn available_recipes(src: &Sources) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(&src.recipes)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("template.toml").is_file())
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .collect();
    v.sort();
    v
}

pub fn load_recipe(src: &Sources, template: &str) -> Result<Recipe, TemplateError> {
    name::validate("template", template)?;
    let path = recipe_path(src, template);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let avail = available_recipes(src);
            return Err(TemplateError::UnknownRecipe {
                name: template.to_string(),
                path,
                available: if avail.is_empty() {
                    "none".into()
                } else {
                    avail.join(", ")
                },
            });
        }
        Err(e) => return Err(ioe("read", &path)(e)),
    };
    toml::from_str(&text).map_err(|e| TemplateError::BadRecipe {
        path: path.clone(),
        msg: e.to_string(),
    })
}

/// True if the ELF file has no program interpreter (PT_INTERP), i.e. runs
/// in a rootfs without a dynamic loader.
pub fn is_static_elf(path: &Path) -> std::io::Result<bool> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let mut buf = Vec::new();
    f.by_ref().take(64 * 1024).read_to_end(&mut buf)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not a 64-bit ELF file");
    if buf.len() < 64 || &buf[..4] != b"\x7fELF" || buf[4] != 2 {
        return Err(bad());
    }
    let u16_at = |o: usize| u16::from_le_bytes([buf[o], buf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(buf[0x20..0x28].try_into().map_err(|_| bad())?) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        if o + 4 > buf.len() {
            return Err(bad());
        }
        let p_type = u32::from_le_bytes(buf[o..o + 4].try_into().map_err(|_| bad())?);
        if p_type == 3 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Applet names of a busybox binary, read from the binary itself (its
/// sorted, NUL-separated name table, which starts "[", "[["): cellsd never
/// runs a program a recipe names.
pub fn busybox_applets(busybox: &Path) -> Result<Vec<String>, TemplateError> {
    let data = read_regular(busybox, MAX_FILE)?;
    let list = applet_table(&data);
    if list.is_empty() {
        return Err(TemplateError::BadRecipe {
            path: busybox.to_path_buf(),
            msg: "no busybox applet table found in it (is it Debian's busybox-static?)".into(),
        });
    }
    Ok(list)
}

/// The applet names in a busybox binary's bytes.
pub fn applet_table(data: &[u8]) -> Vec<String> {
    let start = match data.windows(5).position(|w| w == b"[\0[[\0") {
        Some(p) => p,
        None => return Vec::new(),
    };
    let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-[".contains(&b);
    data[start..]
        .split(|b| *b == 0)
        .take_while(|n| !n.is_empty() && n.len() < 64 && n.iter().all(|b| ok(*b)))
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

/// Open a file the build reads: never through a symlink as its last
/// component, never blocking (a FIFO), and it must be a regular file of at
/// most `cap` bytes. Folders on the way are checked by the caller.
fn open_regular(path: &Path, cap: u64) -> Result<(std::fs::File, u64), TemplateError> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                TemplateError::NotRegular {
                    path: path.to_path_buf(),
                    why: "a symlink".into(),
                }
            } else {
                ioe("open", path)(e)
            }
        })?;
    let meta = f.metadata().map_err(ioe("stat", path))?;
    if !meta.is_file() {
        return Err(TemplateError::NotRegular {
            path: path.to_path_buf(),
            why: "not a regular file".into(),
        });
    }
    if meta.len() > cap {
        return Err(TemplateError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            cap,
        });
    }
    Ok((f, meta.len()))
}

fn read_regular(path: &Path, cap: u64) -> Result<Vec<u8>, TemplateError> {
    let (f, len) = open_regular(path, cap)?;
    let mut v = Vec::with_capacity(len as usize);
    f.take(cap).read_to_end(&mut v).map_err(ioe("read", path))?;
    Ok(v)
}

/// A host file a recipe names (busybox, host_files, programs): absolute,
/// in folders only root may change, itself a regular file.
fn check_host_file(path: &Path, what: &str) -> Result<(), TemplateError> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    crate::trust::check_dir(parent, &format!("{what}'s folder"))?;
    open_regular(path, MAX_FILE).map(|_| ())
}

fn parse_mode(recipe: &Path, s: &str) -> Result<u32, TemplateError> {
    u32::from_str_radix(s, 8).map_err(|_| TemplateError::BadRecipe {
        path: recipe.to_path_buf(),
        msg: format!("mode '{s}' is not octal"),
    })
}

/// Every file below `dir`, as (host path, path relative to dir), sorted.
fn walk(dir: &Path) -> Result<Vec<(PathBuf, PathBuf)>, TemplateError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(ioe("read", &d))? {
            let e = e.map_err(ioe("read", &d))?;
            let p = e.path();
            let ft = e.file_type().map_err(ioe("stat", &p))?;
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                let rel = p.strip_prefix(dir).unwrap_or(&p).to_path_buf();
                out.push((p, rel));
            } else {
                return Err(TemplateError::NotRegular {
                    path: p,
                    why: if ft.is_symlink() {
                        "a symlink".into()
                    } else {
                        "not a regular file".into()
                    },
                });
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// The ordered steps of a build. Pure apart from reading the recipe's files
/// folder; `applets` is the busybox applet list.
pub fn plan(
    src: &Sources,
    template: &str,
    recipe: &Recipe,
    applets: &[String],
) -> Result<Vec<BuildStep>, TemplateError> {
    let rpath = recipe_path(src, template);
    let mut steps = Vec::new();
    for d in &recipe.dirs {
        let path = rootfs_path(&rpath, d)?;
        let mode = match recipe.modes.get(d) {
            Some(m) => parse_mode(&rpath, m)?,
            None => 0o755,
        };
        steps.push(BuildStep::Dir { path, mode });
    }
    if let Some(bb) = &recipe.busybox {
        let dest = rootfs_path(&rpath, &bb.dest)?;
        let dir = rootfs_path(&rpath, &bb.applets)?;
        steps.push(BuildStep::Copy {
            src: bb.path.clone(),
            dest: dest.clone(),
            mode: 0o755,
        });
        let dest_name = Path::new(&dest)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Applets never shadow the recipe's own programs and links (busybox
        // has an `init` applet: /system/bin/init is cells-init; and a
        // `reboot`: /system/bin/reboot is the toolbox's).
        let own: Vec<String> = recipe
            .programs
            .iter()
            .map(|p| p.dest.clone())
            .chain(recipe.symlinks.keys().cloned())
            .collect();
        for a in applets {
            let link = format!("{}/{a}", dir.trim_end_matches('/'));
            if *a == dest_name || own.contains(&link) {
                continue;
            }
            steps.push(BuildStep::Symlink {
                link,
                target: dest_name.clone(),
            });
        }
    }
    for p in &recipe.programs {
        steps.push(BuildStep::Copy {
            src: src.programs.join(&p.name),
            dest: rootfs_path(&rpath, &p.dest)?,
            mode: 0o755,
        });
    }
    if let Some(files) = &recipe.files {
        let base = src.recipes.join(template).join(files);
        for (host, rel) in walk(&base)? {
            let meta = std::fs::metadata(&host).map_err(ioe("stat", &host))?;
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            steps.push(BuildStep::Copy {
                src: host,
                dest: format!("/{}", rel.display()),
                mode,
            });
        }
    }
    for f in &recipe.host_files {
        let dest = rootfs_path(&rpath, f)?;
        steps.push(BuildStep::Copy {
            src: PathBuf::from(f),
            dest,
            mode: 0o755,
        });
    }
    for (link, target) in &recipe.symlinks {
        steps.push(BuildStep::Symlink {
            link: rootfs_path(&rpath, link)?,
            target: target.clone(),
        });
    }
    Ok(steps)
}

fn check_sources(src: &Sources, recipe: &Recipe) -> Result<(), TemplateError> {
    crate::trust::check_dir(&src.recipes, "recipes folder")?;
    if let Some(d) = &recipe.debian {
        d.check(&src.recipes)?;
    }
    if !recipe.programs.is_empty() {
        crate::trust::check_dir(&src.programs, "programs folder")?;
    }
    if let Some(bb) = &recipe.busybox {
        check_host_file(&bb.path, "busybox")?;
        match is_static_elf(&bb.path) {
            Ok(true) => {}
            Ok(false) => {
                return Err(TemplateError::NotStatic {
                    path: bb.path.clone(),
                    fix: "install Debian's busybox-static: apt-get install busybox-static".into(),
                })
            }
            Err(e) => {
                return Err(TemplateError::NotStatic {
                    path: bb.path.clone(),
                    fix: format!(
                        "({e}); install Debian's busybox-static: apt-get install busybox-static"
                    ),
                })
            }
        }
    }
    for f in &recipe.host_files {
        check_host_file(Path::new(f), "host file")?;
    }
    for p in &recipe.programs {
        let path = src.programs.join(&p.name);
        if p.name.contains('/') {
            return Err(TemplateError::BadRecipe {
                path: path.clone(),
                msg: format!("program name '{}' must be a file name", p.name),
            });
        }
        open_regular(&path, MAX_FILE)?;
        if !matches!(is_static_elf(&path), Ok(true)) {
            return Err(TemplateError::NotStatic {
                path,
                fix: "build the project first (`cargo build --release` at the repository root) \
                      or point cellsd --programs-dir at the folder holding it"
                    .into(),
            });
        }
    }
    Ok(())
}

/// Id of the build `current` points at, if the template is built.
pub fn current_build(layout: &Layout, template: &str) -> Option<String> {
    let target = std::fs::read_link(layout.template_current(template)).ok()?;
    let id = target.file_name()?.to_str()?.to_string();
    layout
        .template_build_rootfs(template, &id)
        .is_dir()
        .then_some(id)
}

pub fn build_info(layout: &Layout, template: &str, build: &str) -> Option<BuildInfo> {
    let p = layout
        .template_builds(template)
        .join(build)
        .join("build.json");
    serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
}

/// Names of the templates that have a current build.
pub fn built_templates(layout: &Layout) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(layout.templates_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|t| current_build(layout, t).is_some())
        .collect();
    v.sort();
    v
}

fn next_build_id(layout: &Layout, template: &str) -> u64 {
    std::fs::read_dir(layout.template_builds(template))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .trim_end_matches(".partial")
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0)
        + 1
}

/// Build `template`: runs the whole recipe into a new build directory and
/// makes it current. `progress(done, total, step)` is called as it goes.
/// A new build's id and its `ID.partial` folder (not created yet).
pub fn new_partial(layout: &Layout, template: &str) -> Result<(String, PathBuf), TemplateError> {
    let builds = layout.template_builds(template);
    std::fs::create_dir_all(&builds).map_err(ioe("mkdir", &builds))?;
    let id = next_build_id(layout, template).to_string();
    let partial = builds.join(format!("{id}.partial"));
    Ok((id, partial))
}

/// Make a finished `partial` (with its `rootfs`) the template's current
/// build: build.json, everything synced, renamed into place, `current`
/// swapped atomically.
pub fn commit_build(
    layout: &Layout,
    partial: &Path,
    info: &BuildInfo,
) -> Result<(), TemplateError> {
    let template = info.template.as_str();
    let id = &info.build;
    let builds = layout.template_builds(template);
    let info_path = partial.join("build.json");
    write_atomic(
        &info_path,
        serde_json::to_string_pretty(info)
            .unwrap_or_default()
            .as_bytes(),
    )
    .map_err(ioe("write", &info_path))?;
    // Everything of the build is on disk before anything points at it: a
    // crash or power loss after `current` moves must not leave a VP a
    // lower layer of empty files.
    sync_fs(partial).map_err(ioe("syncfs", partial))?;
    let done = builds.join(id);
    std::fs::rename(partial, &done).map_err(ioe("rename", partial))?;
    sync_dir(&builds).map_err(ioe("fsync", &builds))?;
    // Swap `current` atomically: a new symlink renamed over the old one.
    let current = layout.template_current(template);
    let tmp = layout.template_dir(template).join(".current.tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(format!("builds/{id}"), &tmp).map_err(ioe("symlink", &tmp))?;
    std::fs::rename(&tmp, &current).map_err(ioe("rename", &current))?;
    let tdir = layout.template_dir(template);
    sync_dir(&tdir).map_err(ioe("fsync", &tdir))?;
    Ok(())
}

pub fn build(
    layout: &Layout,
    src: &Sources,
    template: &str,
    mut progress: impl FnMut(u64, u64, &str),
) -> Result<BuildInfo, TemplateError> {
    let recipe = load_recipe(src, template)?;
    check_sources(src, &recipe)?;
    let applets = match &recipe.busybox {
        Some(bb) => busybox_applets(&bb.path)?,
        None => Vec::new(),
    };
    let steps = plan(src, template, &recipe, &applets)?;
    let (id, partial) = new_partial(layout, template)?;
    let rootfs = partial.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(ioe("mkdir", &rootfs))?;
    std::fs::set_permissions(&rootfs, std::fs::Permissions::from_mode(0o755))
        .map_err(ioe("chmod", &rootfs))?;

    // A Debian base takes the first part of the progress: 100 steps.
    let base_steps: u64 = if recipe.debian.is_some() { 100 } else { 0 };
    let total = steps.len() as u64 + base_steps;
    let (mut files, mut bytes) = (0u64, 0u64);
    let result = (|| {
        if let Some(base) = &recipe.debian {
            let mut seen = 0u64;
            let mut report = |line: &str| {
                seen = (seen + 1).min(base_steps - 2);
                progress(seen, total, line);
            };
            let tar = debian_tarball(&src.cache, base, &mut report)?;
            progress(base_steps - 1, total, "unpack the Debian base");
            (files, bytes) = unpack_debian(&tar, &rootfs)?;
        }
        for (i, step) in steps.iter().enumerate() {
            let i = i as u64 + base_steps;
            progress(i, total, &step.describe());
            apply_step(&rootfs, step, &mut files, &mut bytes)?;
        }
        Ok::<(), TemplateError>(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e);
    }
    let info = BuildInfo {
        template: template.to_string(),
        build: id.clone(),
        created: now_secs(),
        description: recipe.description.clone(),
        files,
        bytes,
    };
    commit_build(layout, &partial, &info)?;
    progress(total, total, "done");
    Ok(info)
}

fn apply_step(
    rootfs: &Path,
    step: &BuildStep,
    files: &mut u64,
    bytes: &mut u64,
) -> Result<(), TemplateError> {
    let at = |p: &str| rootfs.join(p.trim_start_matches('/'));
    match step {
        BuildStep::Dir { path, mode } => {
            let p = at(path);
            std::fs::create_dir_all(&p).map_err(ioe("mkdir", &p))?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))
                .map_err(ioe("chmod", &p))?;
        }
        BuildStep::Symlink { link, target } => {
            let p = at(link);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(ioe("mkdir", parent))?;
            }
            let _ = std::fs::remove_file(&p);
            symlink(target, &p).map_err(ioe("symlink", &p))?;
            *files += 1;
        }
        BuildStep::Copy { src, dest, mode } => {
            let p = at(dest);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(ioe("mkdir", parent))?;
            }
            // Replace, never write through: the destination may be a symlink
            // (an applet) whose target must stay as it is.
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ioe("replace", &p)(e)),
            }
            let (mut from, len) = open_regular(src, MAX_FILE)?;
            if *bytes + len > MAX_BUILD {
                return Err(TemplateError::BuildTooLarge {
                    total: *bytes + len,
                    cap: MAX_BUILD,
                });
            }
            let mut to = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&p)
                .map_err(ioe("create", &p))?;
            *bytes += std::io::copy(&mut (&mut from).take(MAX_FILE), &mut to)
                .map_err(ioe("copy", src))?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))
                .map_err(ioe("chmod", &p))?;
            *files += 1;
        }
    }
    Ok(())
}

/// Write out the file system holding `path` (every file of a build at once).
fn sync_fs(path: &Path) -> std::io::Result<()> {
    let f = std::fs::File::open(path)?;
    // SAFETY: syncfs on an fd we own.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Make a rename or a new entry in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Remove builds left unfinished by a build that was cut short (a crash):
/// call only while no build runs (under the build lock).
pub fn remove_partial(layout: &Layout, template: &str) -> Vec<String> {
    let mut removed = Vec::new();
    for e in std::fs::read_dir(layout.template_builds(template))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Some(id) = e.file_name().to_str().map(String::from) else {
            continue;
        };
        if id.ends_with(".partial") && std::fs::remove_dir_all(e.path()).is_ok() {
            removed.push(id);
        }
    }
    removed
}

/// Delete the builds of `template` that are neither current nor in `in_use`
/// (builds that running or starting VPs have as their lower layer). A build
/// in progress (`N.partial`) is never touched here: [`remove_partial`]
/// removes the ones a crash left. Returns what was removed.
pub fn gc(layout: &Layout, template: &str, in_use: &[String]) -> Vec<String> {
    let current = current_build(layout, template);
    let mut removed = Vec::new();
    for e in std::fs::read_dir(layout.template_builds(template))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Some(id) = e.file_name().to_str().map(String::from) else {
            continue;
        };
        let keep = Some(&id) == current.as_ref()
            || in_use.contains(&id)
            || id.ends_with(".partial")
            || id.starts_with('.');
        if !keep && std::fs::remove_dir_all(e.path()).is_ok() {
            removed.push(id);
        }
    }
    removed
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Files (everything but folders) under `dir` and their bytes; links are
/// counted, not followed.
/// A build's content fingerprint: every entry's path, type, mode, owner,
/// size, link target and content (xxh3), in path order — what a VP on it
/// sees, not when it was built. Kept in `builds/N/fingerprint` once made
/// (a build never changes). A VP archive names its template by it.
pub fn fingerprint(layout: &Layout, template: &str, build: &str) -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let cache = layout
        .template_builds(template)
        .join(build)
        .join("fingerprint");
    if let Ok(s) = std::fs::read_to_string(&cache) {
        if s.trim().len() == 32 {
            return Ok(s.trim().to_string());
        }
    }
    let root = layout.template_build_rootfs(template, build);
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(root.join(&rel))?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        names.sort();
        // Depth first, in name order: children pushed in reverse.
        let mut dirs = Vec::new();
        for n in names {
            let r = rel.join(&n);
            let p = root.join(&r);
            let md = std::fs::symlink_metadata(&p)?;
            h.update(r.as_os_str().as_encoded_bytes());
            h.update(&[0]);
            h.update(&md.mode().to_le_bytes());
            h.update(&md.uid().to_le_bytes());
            h.update(&md.gid().to_le_bytes());
            if md.file_type().is_symlink() {
                h.update(std::fs::read_link(&p)?.as_os_str().as_encoded_bytes());
            } else if md.is_file() {
                h.update(&md.len().to_le_bytes());
                let mut f = std::fs::File::open(&p)?;
                let mut fh = xxhash_rust::xxh3::Xxh3::new();
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let k = std::io::Read::read(&mut f, &mut buf)?;
                    if k == 0 {
                        break;
                    }
                    fh.update(&buf[..k]);
                }
                h.update(&fh.digest().to_le_bytes());
            } else if md.is_dir() {
                dirs.push(r);
            } else {
                h.update(&md.rdev().to_le_bytes());
            }
        }
        stack.extend(dirs.into_iter().rev());
    }
    let fp = format!("{:032x}", h.digest128());
    let _ = crate::layout::write_atomic(&cache, fp.as_bytes());
    Ok(fp)
}

pub fn count_tree(dir: &Path) -> (u64, u64) {
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => {
                    files += 1;
                    bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                }
                Err(_) => {}
            }
        }
    }
    (files, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cells-tpl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn sources(root: &Path, recipe: &str) -> Sources {
        let r = root.join("recipes/t");
        std::fs::create_dir_all(r.join("files/system/etc")).unwrap();
        std::fs::write(r.join("template.toml"), recipe).unwrap();
        std::fs::write(r.join("files/system/etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        Sources {
            recipes: root.join("recipes"),
            programs: root.join("bin"),
            cache: root.join("cache"),
        }
    }

    const RECIPE: &str = r#"
description = "test"
dirs = ["/system", "/system/bin", "/tmp"]
files = "files"
[modes]
"/tmp" = "1777"
[symlinks]
"/etc" = "system/etc"
"#;

    #[test]
    fn plan_orders_dirs_files_then_links() {
        let root = tmp("plan");
        let src = sources(&root, RECIPE);
        let recipe = load_recipe(&src, "t").unwrap();
        let steps = plan(&src, "t", &recipe, &[]).unwrap();
        assert_eq!(
            steps[0],
            BuildStep::Dir {
                path: "/system".into(),
                mode: 0o755
            }
        );
        assert!(steps.contains(&BuildStep::Dir {
            path: "/tmp".into(),
            mode: 0o1777
        }));
        assert!(matches!(steps.last(), Some(BuildStep::Symlink { link, .. }) if link == "/etc"));
        assert!(steps.iter().any(|s| matches!(s, BuildStep::Copy { dest, mode: 0o644, .. } if dest == "/system/etc/hosts")));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn busybox_applets_become_symlinks() {
        let root = tmp("bb");
        let src = sources(
            &root,
            "[busybox]\npath = \"/bin/busybox\"\ndest = \"/system/bin/busybox\"\napplets = \"/system/bin\"\n\
             [[programs]]\nname = \"cells-init\"\ndest = \"/system/bin/init\"\n",
        );
        let recipe = load_recipe(&src, "t").unwrap();
        let applets = vec!["sh".to_string(), "init".to_string(), "busybox".to_string()];
        let steps = plan(&src, "t", &recipe, &applets).unwrap();
        assert!(steps.contains(&BuildStep::Symlink {
            link: "/system/bin/sh".into(),
            target: "busybox".into()
        }));
        assert!(!steps.iter().any(
            |s| matches!(s, BuildStep::Symlink { link, .. } if link == "/system/bin/busybox")
        ));
        // The init applet would shadow the recipe's own /system/bin/init.
        assert!(!steps
            .iter()
            .any(|s| matches!(s, BuildStep::Symlink { link, .. } if link == "/system/bin/init")));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn bad_recipes_are_named() {
        let root = tmp("bad");
        let src = sources(&root, "dirs = [\"../escape\"]\n");
        let recipe = load_recipe(&src, "t").unwrap();
        let e = plan(&src, "t", &recipe, &[]).unwrap_err();
        assert!(e.to_string().contains("absolute path without '..'"), "{e}");
        let src = sources(&root, "unknown_key = 1\n");
        let e = load_recipe(&src, "t").unwrap_err();
        assert!(e.to_string().contains("is invalid"), "{e}");
        let e = load_recipe(&src, "nope").unwrap_err();
        assert!(
            e.to_string().contains("unknown template 'nope'")
                && e.to_string().contains("available: t"),
            "{e}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn build_is_atomic_and_gc_keeps_in_use() {
        let root = tmp("build");
        let src = sources(&root, RECIPE);
        let layout = Layout::new(root.join("state"), root.join("run"));
        let mut calls = 0;
        let b1 = build(&layout, &src, "t", |_, _, _| calls += 1).unwrap();
        assert!(calls > 3);
        assert_eq!(current_build(&layout, "t").as_deref(), Some("1"));
        let rootfs = layout.template_build_rootfs("t", "1");
        assert_eq!(
            std::fs::read_link(rootfs.join("etc")).unwrap(),
            Path::new("system/etc")
        );
        let mode = std::fs::metadata(rootfs.join("tmp"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o1777);
        assert_eq!(build_info(&layout, "t", "1").unwrap(), b1);

        let b2 = build(&layout, &src, "t", |_, _, _| {}).unwrap();
        assert_eq!(b2.build, "2");
        assert_eq!(current_build(&layout, "t").as_deref(), Some("2"));
        // Build 1 is in use by a running VP: kept. Then unused: removed.
        assert!(gc(&layout, "t", &["1".into()]).is_empty());
        assert_eq!(gc(&layout, "t", &[]), vec!["1".to_string()]);
        assert!(layout.template_build_rootfs("t", "2").is_dir());
        assert_eq!(built_templates(&layout), vec!["t".to_string()]);
        // Regression (issue 11): gc deleted a build in progress. A
        // `N.partial` stays through gc; only remove_partial (no build
        // running) takes it.
        let partial = layout.template_builds("t").join("3.partial");
        std::fs::create_dir_all(partial.join("rootfs")).unwrap();
        assert!(gc(&layout, "t", &[]).is_empty());
        assert!(partial.is_dir());
        assert_eq!(remove_partial(&layout, "t"), vec!["3.partial".to_string()]);
        assert!(!partial.exists());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn busybox_applets_come_from_its_table_not_from_running_it() {
        let bb = Path::new("/bin/busybox");
        if !bb.exists() {
            return;
        }
        let listed = std::process::Command::new(bb)
            .arg("--list")
            .output()
            .unwrap();
        let listed: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(busybox_applets(bb).unwrap(), listed);
        assert!(applet_table(b"no table here").is_empty());
    }

    #[test]
    fn recipes_take_regular_files_from_root_only_folders() {
        let root = tmp("regular");
        // A symlink in the recipe's files: refused, not followed.
        let src = sources(&root, RECIPE);
        std::os::unix::fs::symlink("/etc/shadow", root.join("recipes/t/files/shadow")).unwrap();
        let recipe = load_recipe(&src, "t").unwrap();
        let e = plan(&src, "t", &recipe, &[]).unwrap_err().to_string();
        assert!(e.contains("a symlink") && e.contains("[symlinks]"), "{e}");
        std::fs::remove_file(root.join("recipes/t/files/shadow")).unwrap();
        let layout = Layout::new(root.join("state"), root.join("run"));
        // A FIFO among the host files: refused, never read (no hang).
        let fifo = root.join("fifo");
        let c = crate::sys::cstr(&fifo).unwrap();
        // SAFETY: mkfifo with a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        std::fs::write(
            root.join("recipes/t/template.toml"),
            format!("host_files = [\"{}\"]\n", fifo.display()),
        )
        .unwrap();
        let src = Sources {
            recipes: root.join("recipes"),
            programs: root.join("bin"),
            cache: root.join("cache"),
        };
        let e = build(&layout, &src, "t", |_, _, _| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        // Too large (sparse, so cheap to make).
        let big = root.join("big");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_FILE + 1)
            .unwrap();
        std::fs::write(
            root.join("recipes/t/template.toml"),
            format!("host_files = [\"{}\"]\n", big.display()),
        )
        .unwrap();
        let e = build(&layout, &src, "t", |_, _, _| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than the"), "{e}");
        // A host file in a folder others may change: refused.
        use std::os::unix::fs::PermissionsExt;
        let open = root.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(open.join("f"), "x").unwrap();
        std::fs::write(
            root.join("recipes/t/template.toml"),
            format!("host_files = [\"{}\"]\n", open.join("f").display()),
        )
        .unwrap();
        let e = build(&layout, &src, "t", |_, _, _| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("writable by others"), "{e}");
        // A recipes folder others may change: refused.
        std::fs::set_permissions(root.join("recipes"), std::fs::Permissions::from_mode(0o777))
            .unwrap();
        let e = build(&layout, &src, "t", |_, _, _| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("recipes folder"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn static_check() {
        // Debian's busybox-static (a project dependency) is static.
        if Path::new("/bin/busybox").exists() {
            assert!(is_static_elf(Path::new("/bin/busybox")).unwrap());
        }
        // A dynamically linked system program is not.
        assert!(!is_static_elf(Path::new("/usr/bin/env")).unwrap());
        assert!(is_static_elf(Path::new("/etc/hostname")).is_err());
    }
}
