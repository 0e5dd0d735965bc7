//! Android images as templates (`cellctl template import NAME --android
//! system.img [--vendor vendor.img] [--product ...]`).
//!
//! The images are what an AOSP or emulator build writes: raw or sparse
//! (`img2simg`'s format) ext4, or erofs. Each is read from a file
//! descriptor the caller opened (cellsd reads nothing on a caller's behalf
//! by path), made raw if sparse, and extracted in user space —
//! `fuse2fs` (a FUSE ext4 reader) and `cp -a` for ext4, `fsck.erofs
//! --extract` (erofs-utils) for erofs — never mounted by the kernel: the
//! kernel's file systems do not parse the image. The
//! extractor runs in a mount namespace of its own where every mount is
//! read-only except the staging folder, so an image whose entries play
//! tricks (a symlink, then files "under" it) cannot write anywhere else.
//!
//! Layout: a system-as-root image (it has `/system/`) is the rootfs; an
//! older system image becomes `/system`. `vendor`, `product`, `system_ext`
//! and `odm` images go to their folders. The VP boots the image's own
//! `/init` (a `/system/bin/init` gets an `/init` link); an image without
//! one is refused. The result is an ordinary template build: read-only,
//! shared by its VPs, replaced atomically by the next import.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use crate::layout::Layout;
use crate::template::{self, BuildInfo};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("unknown image role '{0}': give system, vendor, product, system_ext or odm")]
    Role(String),
    #[error("no system image: give one with --android system.img")]
    NoSystem,
    #[error("{role}.img is not an image cells can import ({why}): give a raw or sparse ext4 image, or an erofs image, as an Android build writes them")]
    Format { role: String, why: String },
    #[error("{role}.img: bad sparse image: {why}")]
    Sparse { role: String, why: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("extracting {role}.img failed: {why}")]
    Extract { role: String, why: String },
    #[error("{tool} is not installed: it extracts {kind} images (apt-get install {package}, or run scripts/install-deps)")]
    MissingTool {
        tool: &'static str,
        kind: &'static str,
        package: &'static str,
    },
    #[error("the system image has no /init nor /system/bin/init: a VP boots the image's own init")]
    NoInit,
    #[error(transparent)]
    Template(#[from] template::TemplateError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImportError {
    let what = what.into();
    move |source| ImportError::Io { what, source }
}

/// What an image is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    System,
    Vendor,
    Product,
    SystemExt,
    Odm,
}

impl Role {
    pub fn parse(s: &str) -> Result<Self, ImportError> {
        Ok(match s {
            "system" => Role::System,
            "vendor" => Role::Vendor,
            "product" => Role::Product,
            "system_ext" | "system-ext" => Role::SystemExt,
            "odm" => Role::Odm,
            _ => return Err(ImportError::Role(s.to_string())),
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Vendor => "vendor",
            Role::Product => "product",
            Role::SystemExt => "system_ext",
            Role::Odm => "odm",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Sparse,
    Ext4,
    Erofs,
}

pub const SPARSE_MAGIC: u32 = 0xED26_FF3A;
pub const EROFS_MAGIC: u32 = 0xE0F5_E1E2;
pub const EXT4_MAGIC: u16 = 0xEF53;

/// What the first 4 KiB of an image say it is.
pub fn sniff(head: &[u8]) -> Result<Format, String> {
    let u32_at = |o: usize| {
        head.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u16_at = |o: usize| head.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    if u32_at(0) == Some(SPARSE_MAGIC) {
        return Ok(Format::Sparse);
    }
    if u32_at(1024) == Some(EROFS_MAGIC) {
        return Ok(Format::Erofs);
    }
    if u16_at(1024 + 56) == Some(EXT4_MAGIC) {
        return Ok(Format::Ext4);
    }
    if head.len() < 1084 {
        return Err(format!("only {} bytes", head.len()));
    }
    Err("no sparse, ext4 or erofs magic".into())
}

const CHUNK_RAW: u16 = 0xCAC1;
const CHUNK_FILL: u16 = 0xCAC2;
const CHUNK_DONT_CARE: u16 = 0xCAC3;
const CHUNK_CRC32: u16 = 0xCAC4;

/// Write the raw image a sparse image describes (holes stay holes).
/// Returns the raw size. `progress(done, total)` in bytes of output.
pub fn unsparse(
    src: &mut impl Read,
    dst: &mut std::fs::File,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, String> {
    let mut h = [0u8; 28];
    src.read_exact(&mut h).map_err(|e| format!("header: {e}"))?;
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    if u32_at(&h, 0) != SPARSE_MAGIC {
        return Err("no sparse magic".into());
    }
    if u16_at(&h, 4) != 1 {
        return Err(format!("version {} (only 1 exists)", u16_at(&h, 4)));
    }
    let file_hdr = u16_at(&h, 8) as usize;
    let chunk_hdr = u16_at(&h, 10) as usize;
    let blk = u32_at(&h, 12) as u64;
    let total_blks = u32_at(&h, 16) as u64;
    let chunks = u32_at(&h, 20);
    if file_hdr < 28 || chunk_hdr < 12 || blk == 0 || !blk.is_multiple_of(4) {
        return Err(format!(
            "header sizes {file_hdr}/{chunk_hdr}, block size {blk}"
        ));
    }
    let total = total_blks * blk;
    skip(src, (file_hdr - 28) as u64)?;
    let mut at_blk = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for n in 0..chunks {
        let mut c = vec![0u8; chunk_hdr];
        src.read_exact(&mut c)
            .map_err(|e| format!("chunk {n}: {e}"))?;
        let kind = u16_at(&c, 0);
        let blocks = u32_at(&c, 4) as u64;
        let size = u32_at(&c, 8) as u64;
        let data = size
            .checked_sub(chunk_hdr as u64)
            .ok_or_else(|| format!("chunk {n}: size {size} below its header"))?;
        if at_blk + blocks > total_blks {
            return Err(format!(
                "chunk {n} runs past the image's {total_blks} blocks"
            ));
        }
        let out_len = blocks * blk;
        match kind {
            CHUNK_RAW => {
                if data != out_len {
                    return Err(format!("raw chunk {n}: {data} bytes for {blocks} blocks"));
                }
                dst.seek(SeekFrom::Start(at_blk * blk))
                    .map_err(|e| e.to_string())?;
                let mut left = data;
                while left > 0 {
                    let k = left.min(buf.len() as u64) as usize;
                    src.read_exact(&mut buf[..k])
                        .map_err(|e| format!("chunk {n}: {e}"))?;
                    dst.write_all(&buf[..k]).map_err(|e| e.to_string())?;
                    left -= k as u64;
                }
            }
            CHUNK_FILL => {
                if data != 4 {
                    return Err(format!("fill chunk {n}: {data} bytes of pattern"));
                }
                let mut p = [0u8; 4];
                src.read_exact(&mut p)
                    .map_err(|e| format!("chunk {n}: {e}"))?;
                if p != [0; 4] {
                    let pattern: Vec<u8> = p.iter().copied().cycle().take(buf.len()).collect();
                    dst.seek(SeekFrom::Start(at_blk * blk))
                        .map_err(|e| e.to_string())?;
                    let mut left = out_len;
                    while left > 0 {
                        let k = left.min(pattern.len() as u64) as usize;
                        dst.write_all(&pattern[..k]).map_err(|e| e.to_string())?;
                        left -= k as u64;
                    }
                }
                // A zero fill is a hole.
            }
            CHUNK_DONT_CARE => {
                if data != 0 {
                    return Err(format!("don't-care chunk {n} carries {data} bytes"));
                }
            }
            CHUNK_CRC32 => {
                skip(src, data)?;
                continue;
            }
            k => return Err(format!("chunk {n} has unknown type {k:#x}")),
        }
        at_blk += blocks;
        progress(at_blk * blk, total);
    }
    dst.set_len(total).map_err(|e| e.to_string())?;
    Ok(total)
}

fn skip(src: &mut impl Read, n: u64) -> Result<(), String> {
    std::io::copy(&mut src.take(n), &mut std::io::sink())
        .map_err(|e| e.to_string())
        .and_then(|k| {
            if k == n {
                Ok(())
            } else {
                Err("cut short".into())
            }
        })
}

fn tool(names: &[&'static str]) -> Option<&'static str> {
    names.iter().copied().find(|t| Path::new(t).is_file())
}

/// The extractor's jail: a private mount namespace in which every mount is
/// made read-only but the staging folder ($1), then the tool is exec'd.
const JAIL: &str = r#"set -e
stage="$1"; shift
mount --make-rprivate /
mount --bind "$stage" "$stage"
while read -r _ _ _ _ m opts _; do
  m=$(printf '%b' "$m")
  [ "$m" = "$stage" ] && continue
  case ",$opts," in *,ro,*) continue ;; esac
  mount -o remount,bind,ro "$m" || { echo "cannot make $m read-only" >&2; exit 70; }
done < /proc/self/mountinfo
exec "$@"
"#;

/// ext4: mount the image (fd 3) with fuse2fs read-only on $2, copy it to $3.
const EXT4_COPY: &str = r#""$1" -o ro,fakeroot /dev/fd/3 "$2" >&2 || exit 65
cp -a "$2/." "$3/"; rc=$?
umount "$2" 2>/dev/null || true
exit $rc
"#;

/// Run `tool` (program and arguments) in the extraction jail of `stage`
/// (everything but `stage` read-only) with `input` as its fd 3; its output.
pub fn run_in_jail(
    stage: &Path,
    argv: &[std::ffi::OsString],
    input: &OwnedFd,
) -> std::io::Result<std::process::Output> {
    let unshare = tool(&["/usr/bin/unshare", "/bin/unshare"]).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no unshare: apt install util-linux",
        )
    })?;
    let mut cmd = std::process::Command::new(unshare);
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "/bin/sh",
        "-c",
        JAIL,
        "jail",
    ])
    .arg(stage)
    .args(argv);
    let fd = input.as_raw_fd();
    // SAFETY: between fork and exec the child only calls dup2 (async-signal-safe).
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.stdin(std::process::Stdio::null()).output()
}

/// Extract a raw image read from `image` (fd 3 in the extractor) into the
/// new folder `out` (under `stage`, the only place it may write).
pub fn extract(
    fmt: Format,
    role: Role,
    image: &OwnedFd,
    stage: &Path,
    out: &Path,
) -> Result<(), ImportError> {
    if tool(&["/usr/bin/unshare", "/bin/unshare"]).is_none() {
        return Err(ImportError::MissingTool {
            tool: "unshare",
            kind: "all",
            package: "util-linux",
        });
    }
    let argv: Vec<std::ffi::OsString> = match fmt {
        Format::Ext4 => {
            let t = tool(&["/usr/bin/fuse2fs", "/sbin/fuse2fs", "/usr/sbin/fuse2fs"]).ok_or(
                ImportError::MissingTool {
                    tool: "fuse2fs",
                    kind: "ext4",
                    package: "fuse2fs",
                },
            )?;
            let mnt = stage.join(format!("m-{}", role.name()));
            std::fs::create_dir(&mnt).map_err(io(format!("mkdir {}", mnt.display())))?;
            std::fs::create_dir(out).map_err(io(format!("mkdir {}", out.display())))?;
            // fuse2fs reads the image in user space (in this jail); `cp -a`
            // keeps owners, every mode bit and the xattrs. The mount is the
            // jail's own and goes with it.
            vec![
                "/bin/sh".into(),
                "-c".into(),
                EXT4_COPY.into(),
                "ext4".into(),
                t.into(),
                mnt.into_os_string(),
                out.as_os_str().to_owned(),
            ]
        }
        Format::Erofs => {
            let t = tool(&["/usr/bin/fsck.erofs", "/usr/sbin/fsck.erofs"]).ok_or(
                ImportError::MissingTool {
                    tool: "fsck.erofs",
                    kind: "erofs",
                    package: "erofs-utils",
                },
            )?;
            vec![
                t.into(),
                format!("--extract={}", out.display()).into(),
                "--preserve".into(),
                "/dev/fd/3".into(),
            ]
        }
        Format::Sparse => {
            return Err(ImportError::Extract {
                role: role.name().into(),
                why: "a sparse image must be made raw first".into(),
            })
        }
    };
    let o = run_in_jail(stage, &argv, image).map_err(io("run unshare"))?;
    if fmt == Format::Ext4 {
        let _ = std::fs::remove_dir(stage.join(format!("m-{}", role.name())));
    }
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        let img = format!("{}.img", role.name());
        let why: Vec<String> = err
            .lines()
            .map(str::trim)
            .filter(|l| {
                !l.is_empty() && *l != "Mounting read-only." && !l.starts_with("Please run e2fsck")
            })
            .map(|l| l.replace("/dev/fd/3", &img))
            .collect();
        return Err(ImportError::Extract {
            role: role.name().into(),
            why: if why.is_empty() {
                format!("the extractor ended with {}", o.status)
            } else {
                format!(
                    "{} (is the image damaged? check it with e2fsck -fn or fsck.erofs)",
                    why.join("; ")
                )
            },
        });
    }
    Ok(())
}

/// Is an extracted system image system-as-root (it holds `/system/`)?
pub fn system_as_root(tree: &Path) -> bool {
    let sys = tree.join("system");
    is_dir(&sys) && (is_file(&sys.join("build.prop")) || is_dir(&sys.join("bin")))
}

// The image's own entries are never followed: a link in an image may point
// anywhere on the host.
fn is_dir(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

fn is_file(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file())
}

/// Mount points a VP's root needs, made if the image lacks them.
pub const ROOT_DIRS: &[(&str, u32)] = &[
    ("dev", 0o755),
    ("proc", 0o755),
    ("sys", 0o755),
    ("data", 0o771),
    ("mnt", 0o755),
    ("tmp", 0o1777),
];

/// A description from the image's build.prop.
fn describe(rootfs: &Path) -> String {
    let path = rootfs.join("system/build.prop");
    let props = if is_dir(&rootfs.join("system")) && is_file(&path) {
        std::fs::read_to_string(&path).unwrap_or_default()
    } else {
        String::new()
    };
    let get = |k: &str| {
        props
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
    };
    match (get("ro.build.fingerprint"), get("ro.build.version.release")) {
        (Some(f), _) => format!("Android image {f}"),
        (None, Some(r)) => format!("Android {r} image"),
        _ => "Android image".into(),
    }
}

/// Import `images` as a new build of `template`. `progress(done, total,
/// step)`: done/total in per-mille of the whole import.
pub fn import(
    layout: &Layout,
    template_name: &str,
    images: Vec<(Role, OwnedFd)>,
    mut progress: impl FnMut(u64, u64, &str),
) -> Result<BuildInfo, ImportError> {
    if !images.iter().any(|(r, _)| *r == Role::System) {
        return Err(ImportError::NoSystem);
    }
    let mut images = images;
    images.sort_by_key(|(r, _)| *r);
    let (id, partial) = template::new_partial(layout, template_name)?;
    std::fs::create_dir_all(&partial).map_err(io(format!("mkdir {}", partial.display())))?;
    let result = (|| -> Result<BuildInfo, ImportError> {
        let n = images.len() as u64;
        let rootfs = partial.join("rootfs");
        for (i, (role, fd)) in images.iter().enumerate() {
            let base = i as u64 * 1000 / n;
            let span = 1000 / n;
            let name = role.name();
            let file = std::fs::File::from(fd.try_clone().map_err(io(format!("{name}.img")))?);
            let mut head = vec![0u8; 4096];
            let got = (&file)
                .read(&mut head)
                .map_err(io(format!("read {name}.img")))?;
            head.truncate(got);
            let fmt = sniff(&head).map_err(|why| ImportError::Format {
                role: name.into(),
                why,
            })?;
            (&file)
                .seek(SeekFrom::Start(0))
                .map_err(io(format!("{name}.img: seek (give a file, not a pipe)")))?;
            // A sparse image is made raw in the staging folder first.
            let (raw_fd, fmt) = if fmt == Format::Sparse {
                let raw_path = partial.join(format!("{name}.raw"));
                let mut raw = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&raw_path)
                    .map_err(io(format!("create {}", raw_path.display())))?;
                let mut reader = std::io::BufReader::with_capacity(1 << 20, &file);
                let step = format!("{name}.img: sparse to raw");
                unsparse(&mut reader, &mut raw, |d, t| {
                    progress(base + span / 2 * d / t.max(1), 1000, &step)
                })
                .map_err(|why| ImportError::Sparse {
                    role: name.into(),
                    why,
                })?;
                raw.seek(SeekFrom::Start(0)).map_err(io("seek"))?;
                let mut h = vec![0u8; 4096];
                let k = raw.read(&mut h).map_err(io("read"))?;
                h.truncate(k);
                let inner = sniff(&h).map_err(|why| ImportError::Format {
                    role: name.into(),
                    why: format!("inside the sparse image: {why}"),
                })?;
                // The raw file goes as soon as the extractor has it open.
                let _ = std::fs::remove_file(&raw_path);
                (OwnedFd::from(raw), inner)
            } else {
                (OwnedFd::from(file), fmt)
            };
            progress(
                base + span / 2,
                1000,
                &format!("extract {name}.img ({fmt:?})"),
            );
            let out = partial.join(format!("x-{name}"));
            extract(fmt, *role, &raw_fd, &partial, &out)?;
            match role {
                Role::System if system_as_root(&out) => {
                    std::fs::rename(&out, &rootfs).map_err(io("place the system image"))?
                }
                Role::System => {
                    std::fs::create_dir(&rootfs).map_err(io("mkdir rootfs"))?;
                    std::fs::rename(&out, rootfs.join("system"))
                        .map_err(io("place the system image"))?;
                }
                other => {
                    let dest = rootfs.join(other.name());
                    match std::fs::symlink_metadata(&dest) {
                        Ok(m) if m.is_dir() => std::fs::remove_dir(&dest).map_err(io(format!(
                            "{}: the system image's /{} is not empty",
                            dest.display(),
                            other.name()
                        )))?,
                        Ok(_) => std::fs::remove_file(&dest)
                            .map_err(io(format!("replace {}", dest.display())))?,
                        Err(_) => {}
                    }
                    std::fs::rename(&out, &dest).map_err(io(format!("place {name}.img")))?;
                }
            }
        }
        std::fs::set_permissions(&rootfs, std::fs::Permissions::from_mode(0o755))
            .map_err(io("chmod rootfs"))?;
        for (d, mode) in ROOT_DIRS {
            let p = rootfs.join(d);
            if std::fs::symlink_metadata(&p).is_err() {
                std::fs::create_dir(&p).map_err(io(format!("mkdir {}", p.display())))?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))
                    .map_err(io(format!("chmod {}", p.display())))?;
            }
        }
        let init = rootfs.join("init");
        if std::fs::symlink_metadata(&init).is_err() {
            let sys_init = rootfs.join("system/bin/init");
            if is_dir(&rootfs.join("system/bin")) && std::fs::symlink_metadata(&sys_init).is_ok() {
                std::os::unix::fs::symlink("system/bin/init", &init).map_err(io("link /init"))?;
            } else {
                return Err(ImportError::NoInit);
            }
        }
        let (files, bytes) = template::count_tree(&rootfs);
        let info = BuildInfo {
            template: template_name.to_string(),
            build: id.clone(),
            created: template::now_secs(),
            description: describe(&rootfs),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sparse(blk: u32, chunks: &[(u16, u32, Vec<u8>)], total_blks: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(SPARSE_MAGIC.to_le_bytes());
        v.extend(1u16.to_le_bytes());
        v.extend(0u16.to_le_bytes());
        v.extend(28u16.to_le_bytes());
        v.extend(12u16.to_le_bytes());
        v.extend(blk.to_le_bytes());
        v.extend(total_blks.to_le_bytes());
        v.extend((chunks.len() as u32).to_le_bytes());
        v.extend(0u32.to_le_bytes());
        for (kind, blocks, data) in chunks {
            v.extend(kind.to_le_bytes());
            v.extend(0u16.to_le_bytes());
            v.extend(blocks.to_le_bytes());
            v.extend((12 + data.len() as u32).to_le_bytes());
            v.extend(data);
        }
        v
    }

    #[test]
    fn sparse_images_become_raw() {
        let img = sparse(
            8,
            &[
                (CHUNK_RAW, 1, b"ABCDEFGH".to_vec()),
                (CHUNK_DONT_CARE, 2, vec![]),
                (CHUNK_FILL, 1, vec![1, 2, 3, 4]),
                (CHUNK_CRC32, 0, vec![0; 4]),
            ],
            4,
        );
        let path = std::env::temp_dir().join(format!("cells-sparse-{}", std::process::id()));
        let mut out = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let n = unsparse(&mut img.as_slice(), &mut out, |_, _| {}).unwrap();
        assert_eq!(n, 32);
        let raw = std::fs::read(&path).unwrap();
        assert_eq!(&raw[..8], b"ABCDEFGH");
        assert_eq!(&raw[8..24], &[0; 16]);
        assert_eq!(&raw[24..], &[1, 2, 3, 4, 1, 2, 3, 4]);
        // Chunks past the end, and cut short images, are refused.
        let bad = sparse(8, &[(CHUNK_DONT_CARE, 5, vec![])], 4);
        assert!(unsparse(&mut bad.as_slice(), &mut out, |_, _| {})
            .unwrap_err()
            .contains("runs past"));
        let cut = &img[..40];
        assert!(unsparse(&mut &cut[..], &mut out, |_, _| {}).is_err());
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn formats_by_magic() {
        let mut h = vec![0u8; 4096];
        assert!(sniff(&h).is_err());
        h[1080..1082].copy_from_slice(&EXT4_MAGIC.to_le_bytes());
        assert_eq!(sniff(&h), Ok(Format::Ext4));
        h[1024..1028].copy_from_slice(&EROFS_MAGIC.to_le_bytes());
        assert_eq!(sniff(&h), Ok(Format::Erofs));
        h[0..4].copy_from_slice(&SPARSE_MAGIC.to_le_bytes());
        assert_eq!(sniff(&h), Ok(Format::Sparse));
        assert!(sniff(&h[..100]).is_ok());
        assert!(sniff(&[0u8; 100]).unwrap_err().contains("100 bytes"));
        assert_eq!(Role::parse("system-ext").unwrap(), Role::SystemExt);
        assert!(Role::parse("boot").is_err());
    }
}
