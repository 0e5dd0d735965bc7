//! OCI images as templates (`cellctl template import NAME oci:…`, `cellctl
//! template pull`): the layers (fds from the client, bottom first) applied
//! into a new template build, with the OCI whiteouts (`.wh.NAME` removes
//! NAME of the layers below, `.wh..wh..opq` empties its folder of them).
//!
//! A layer is untrusted: each one is applied by GNU tar in the extraction
//! jail of Android imports (a mount namespace where everything but the
//! staging folder is read-only): names with `..` or a leading `/` are
//! refused by tar, symlinks it makes are delayed, and whatever a symlink of
//! an earlier layer points at outside the staging folder cannot be written
//! (read-only) or hard-linked (another mount). Device nodes stay inert (a
//! template is attached `nodev`).

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::layout::Layout;
use crate::template::{self, BuildInfo, TemplateError};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("layer {layer} of the image: {why}")]
    Layer { layer: usize, why: String },
    #[error("the image's config is not valid JSON: {0}")]
    Config(String),
    #[error(
        "the image has no /init to boot: a cells template boots /init (make it the image's \
         entrypoint, e.g. a cells template exported as an image)"
    )]
    NoInit,
    #[error(transparent)]
    Template(#[from] TemplateError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    let what = what.into();
    move |source| ImageError::Io { what, source }
}

/// How a layer is compressed, by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

pub fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// One layer, in the jail: whiteouts of the members first (they concern
/// the layers below, and a layer may not hold a path and its whiteout),
/// then the layer itself without them. $1: the root, $2: the decompressor;
/// the layer is fd 3 (a file: it is read twice).
const APPLY: &str = r#"set -o pipefail
root="$1"; dec="$2"
$dec </dev/fd/3 | tar -tf - | while IFS= read -r m; do
  m=${m#./}; base=${m##*/}; dir=${m%"$base"}
  case "$base" in
    .wh..wh..opq) if [ -d "$root/$dir" ] && [ ! -L "$root/${dir%/}" ]; then
        find "$root/$dir" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} + ; fi ;;
    .wh.*) rm -rf -- "$root/$dir${base#.wh.}" ;;
  esac
done
$dec </dev/fd/3 | tar -xpf - -C "$root" --numeric-owner --same-owner --xattrs \
  --xattrs-include='*' --exclude='.wh.*' --exclude='./.wh.*'
"#;

/// The image's default command (entrypoint + cmd), from its config.
pub fn command(config: &serde_json::Value) -> Vec<String> {
    let c = &config["config"];
    let list = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = list(&c["Entrypoint"]);
    out.extend(list(&c["Cmd"]));
    out
}

/// Make a template build of `layers` (bottom first) with `config` (the
/// image's config JSON).
pub fn import(
    layout: &Layout,
    template_name: &str,
    config: &str,
    layers: Vec<OwnedFd>,
    mut progress: impl FnMut(u64, u64, &str),
) -> Result<BuildInfo, ImageError> {
    let cfg: serde_json::Value =
        serde_json::from_str(config).map_err(|e| ImageError::Config(e.to_string()))?;
    let (id, partial) = template::new_partial(layout, template_name)?;
    std::fs::create_dir_all(&partial).map_err(io(format!("mkdir {}", partial.display())))?;
    let result = (|| -> Result<BuildInfo, ImageError> {
        let rootfs = partial.join("rootfs");
        std::fs::create_dir(&rootfs).map_err(io("mkdir rootfs"))?;
        std::fs::set_permissions(&rootfs, std::fs::Permissions::from_mode(0o755))
            .map_err(io("chmod rootfs"))?;
        let n = layers.len().max(1) as u64;
        for (i, fd) in layers.iter().enumerate() {
            progress(
                i as u64 * 1000 / n,
                1000,
                &format!("layer {} of {n}", i + 1),
            );
            apply(&partial, &rootfs, i + 1, fd)?;
        }
        for (d, mode) in [
            ("proc", 0o755),
            ("sys", 0o755),
            ("dev", 0o755),
            ("data", 0o771),
        ] {
            let p = rootfs.join(d);
            if std::fs::symlink_metadata(&p).is_err() {
                std::fs::create_dir(&p).map_err(io(format!("mkdir {}", p.display())))?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                    .map_err(io(format!("chmod {}", p.display())))?;
            }
        }
        let init = rootfs.join("init");
        if std::fs::symlink_metadata(&init).is_err() {
            // The image's entrypoint as /init, where it is one program.
            match command(&cfg).first() {
                Some(p) if p.starts_with('/') && !p.contains("..") && p != "/init" => {
                    let target = p.trim_start_matches('/');
                    if std::fs::symlink_metadata(rootfs.join(target)).is_err() {
                        return Err(ImageError::NoInit);
                    }
                    std::os::unix::fs::symlink(target, &init).map_err(io("link /init"))?;
                }
                _ => return Err(ImageError::NoInit),
            }
        }
        let (files, bytes) = template::count_tree(&rootfs);
        let info = BuildInfo {
            template: template_name.to_string(),
            build: id.clone(),
            created: template::now_secs(),
            description: format!(
                "OCI image ({} layers; {})",
                layers.len(),
                command(&cfg).join(" ")
            ),
            files,
            bytes,
        };
        progress(990, 1000, "commit the build");
        template::commit_build(layout, &partial, &info)?;
        progress(1000, 1000, "done");
        Ok(info)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    result
}

/// Apply one layer (`fd`, a file) onto `rootfs` in the jail (writable:
/// `stage` alone).
fn apply(stage: &Path, rootfs: &Path, layer: usize, fd: &OwnedFd) -> Result<(), ImageError> {
    let bad = |why: String| ImageError::Layer { layer, why };
    let mut f = std::fs::File::from(fd.try_clone().map_err(io("dup a layer"))?);
    let mut head = [0u8; 8];
    let got = f
        .read(&mut head)
        .map_err(io(format!("read layer {layer}")))?;
    f.seek(SeekFrom::Start(0))
        .map_err(|e| bad(format!("not seekable ({e}): give a file")))?;
    let dec = match sniff(&head[..got]) {
        Compression::None => "cat",
        Compression::Gzip => "gzip -dc",
        Compression::Zstd => {
            if !Path::new("/usr/bin/zstd").exists() {
                return Err(bad(
                    "zstd-compressed, and there is no zstd: apt install zstd".into(),
                ));
            }
            "zstd -dc"
        }
    };
    let argv: Vec<std::ffi::OsString> = vec![
        "/bin/bash".into(),
        "-c".into(),
        APPLY.into(),
        "apply".into(),
        rootfs.as_os_str().to_owned(),
        dec.into(),
    ];
    let o = crate::android_image::run_in_jail(stage, &argv, &OwnedFd::from(f))
        .map_err(io("run unshare (util-linux)"))?;
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        let why: Vec<&str> = err
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        return Err(bad(if why.is_empty() {
            format!("applying it ended with {}", o.status)
        } else {
            format!(
                "{} (a damaged layer, or one with unsafe members: nothing of this import is kept)",
                why.join("; ")
            )
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_and_command() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(sniff(b"./\0\0"), Compression::None);
        let c = serde_json::json!({"config": {"Entrypoint": ["/init"], "Cmd": ["-v"]}});
        assert_eq!(command(&c), vec!["/init", "-v"]);
        assert!(command(&serde_json::json!({})).is_empty());
    }
}
