//! The VP archive (`cellctl export`/`import`): one stream, written and
//! read in one pass (a pipe to `ssh` works), holding a VP's definition and
//! its disk image with the image's holes left out.
//!
//! ```text
//! "CELLSVP1\n"
//! u32 LE n, then n bytes of manifest JSON (≤ 1 MiB)
//! for each file of the manifest, for each of its segments: its bytes
//! u64 LE xxh3-64 of every byte after the magic
//! ```
//!
//! Only the files the manifest may name are written on import
//! ([`allowed`]: the disk image, and for a live move the VP's checkpoint —
//! CRIU's images and the framebuffer's contents — under `checkpoint/`),
//! each within its declared size, segments in order and inside it: an
//! archive cannot write anywhere else.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

pub const MAGIC: &[u8] = b"CELLSVP1\n";
const MAX_MANIFEST: u32 = 1 << 20;
/// The folder of a checkpoint's files in an archive (and in a VP's state).
pub const CHECKPOINT_DIR: &str = "checkpoint";

/// Whether an archive may carry a file of this name: the disk image, the
/// framebuffer's contents of a checkpoint, or one of its CRIU images (a
/// plain file name in `checkpoint/images/`).
pub fn allowed(name: &str) -> bool {
    if name == crate::disk::IMAGE_FILE
        || name == format!("{CHECKPOINT_DIR}/{}", crate::criu::FRAMEBUFFER)
    {
        return true;
    }
    name.strip_prefix(&format!("{CHECKPOINT_DIR}/{}/", crate::criu::IMAGES))
        .is_some_and(|f| {
            !f.is_empty()
                && f.len() <= 128
                && !f.starts_with('.')
                && f.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        })
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub version: u32,
    /// The VP's definition (vp.json) as exported.
    pub definition: serde_json::Value,
    pub template: TemplateRef,
    /// Its adb keys (adb_keys text).
    #[serde(default)]
    pub adb_keys: String,
    /// Its phone number, if it had one.
    #[serde(default)]
    pub number: Option<String>,
    pub files: Vec<FileEntry>,
    /// This export's id (an incremental export names the one it builds on).
    #[serde(default)]
    pub export_id: String,
    /// Set: only the blocks changed since export `base` are in the archive,
    /// for a VP imported from that export and not changed since.
    #[serde(default)]
    pub base: Option<String>,
    /// A live move: the VP's checkpoint manifest ([`crate::criu::Manifest`]);
    /// its files are the `checkpoint/…` entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TemplateRef {
    pub name: String,
    pub build: String,
    /// [`crate::template::fingerprint`] of that build.
    pub fingerprint: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    /// (offset, length) of each extent with data, in order.
    pub segments: Vec<(u64, u64)>,
    /// (offset, length) of each range that became a hole (incremental).
    #[serde(default)]
    pub zero: Vec<(u64, u64)>,
}

impl FileEntry {
    pub fn data_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.1).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("not a cells VP archive (made by `cellctl export`)")]
    NotArchive,
    #[error("the archive is cut short or damaged: {0}")]
    Damaged(String),
    #[error("the archive's checksum does not match: it was damaged in transit; export it again")]
    Checksum,
    #[error("the archive names a file it may not carry: '{0}'")]
    Forbidden(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ArchiveError {
    let what = what.into();
    move |source| ArchiveError::Io { what, source }
}

/// The data extents of an open file (SEEK_DATA/SEEK_HOLE).
pub fn segments(f: &std::fs::File) -> Result<Vec<(u64, u64)>, ArchiveError> {
    let len = f.metadata().map_err(io("stat"))?.len() as i64;
    let mut out = Vec::new();
    let mut pos = 0i64;
    while pos < len {
        // SAFETY: lseek on an open file of ours.
        let data = unsafe { libc::lseek(f.as_raw_fd(), pos, libc::SEEK_DATA) };
        if data < 0 {
            break; // ENXIO: only a hole is left
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(f.as_raw_fd(), data, libc::SEEK_HOLE) };
        if hole <= data {
            return Err(io("seek a hole")(std::io::Error::last_os_error()));
        }
        out.push((data as u64, (hole - data) as u64));
        pos = hole;
    }
    Ok(out)
}

/// (offset, length) in a file.
pub type Range = (u64, u64);

/// Block size of incremental exports.
pub const BLOCK: u64 = 1 << 20;

/// The xxh3 of each [`BLOCK`] of an open file (holes read as zeros; a
/// block without data is not read).
pub fn block_hashes(f: &std::fs::File) -> Result<Vec<u64>, ArchiveError> {
    let len = f.metadata().map_err(io("stat"))?.len();
    let data = segments(f)?;
    let zero = xxhash_rust::xxh3::xxh3_64(&vec![0u8; BLOCK as usize]);
    let n = len.div_ceil(BLOCK);
    let mut out = Vec::with_capacity(n as usize);
    let mut buf = vec![0u8; BLOCK as usize];
    let mut seg = 0;
    for i in 0..n {
        let (start, end) = (i * BLOCK, ((i + 1) * BLOCK).min(len));
        while seg < data.len() && data[seg].0 + data[seg].1 <= start {
            seg += 1;
        }
        let has_data = seg < data.len() && data[seg].0 < end;
        if !has_data && end - start == BLOCK {
            out.push(zero);
            continue;
        }
        let want = (end - start) as usize;
        let mut got = 0;
        while got < want {
            let k = nix::sys::uio::pread(f, &mut buf[got..want], (start as usize + got) as i64)
                .map_err(|e| io("read")(std::io::Error::from(e)))?;
            if k == 0 {
                break;
            }
            got += k;
        }
        buf[got..want].fill(0);
        out.push(xxhash_rust::xxh3::xxh3_64(&buf[..want]));
    }
    Ok(out)
}

/// Ranges of the blocks that differ between two hash lists: (data, zero),
/// adjacent blocks joined; `size` clips the last.
pub fn changed_blocks(old: &[u64], new: &[u64], size: u64) -> (Vec<Range>, Vec<Range>) {
    let zero = xxhash_rust::xxh3::xxh3_64(&vec![0u8; BLOCK as usize]);
    let (mut data, mut zeros): (Vec<Range>, Vec<Range>) = (Vec::new(), Vec::new());
    for (i, h) in new.iter().enumerate() {
        if old.get(i) == Some(h) {
            continue;
        }
        let start = i as u64 * BLOCK;
        let len = BLOCK.min(size - start);
        let list = if *h == zero && len == BLOCK {
            &mut zeros
        } else {
            &mut data
        };
        match list.last_mut() {
            Some(r) if r.0 + r.1 == start => r.1 += len,
            _ => list.push((start, len)),
        }
    }
    (data, zeros)
}

/// Counts what passes, for the checksum and progress.
struct Hashing<W> {
    inner: W,
    hash: Xxh3,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(b)?;
        self.hash.update(&b[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Write the archive: `files` are (entry, open file) in manifest order.
/// `progress(done, total)` is called as data goes out.
pub fn write(
    out: impl Write,
    manifest: &Manifest,
    files: &[std::fs::File],
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64, ArchiveError> {
    let mut out = Hashing {
        inner: std::io::BufWriter::with_capacity(1 << 20, out),
        hash: Xxh3::new(),
        bytes: 0,
    };
    out.inner.write_all(MAGIC).map_err(io("write"))?;
    let m = serde_json::to_vec(manifest).map_err(|e| ArchiveError::Damaged(e.to_string()))?;
    out.write_all(&(m.len() as u32).to_le_bytes())
        .and_then(|_| out.write_all(&m))
        .map_err(io("write the manifest"))?;
    let total: u64 = manifest.files.iter().map(FileEntry::data_bytes).sum();
    let mut done = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for (e, f) in manifest.files.iter().zip(files) {
        for &(off, len) in &e.segments {
            let mut left = len;
            let mut at = off;
            while left > 0 {
                let want = (left as usize).min(buf.len());
                let n = nix::sys::uio::pread(f, &mut buf[..want], at as i64)
                    .map_err(|e| io(format!("read {}", e))(std::io::Error::from(e)))?;
                if n == 0 {
                    return Err(ArchiveError::Damaged(format!(
                        "{} shrank while it was exported",
                        e.name
                    )));
                }
                out.write_all(&buf[..n]).map_err(io("write"))?;
                left -= n as u64;
                at += n as u64;
                done += n as u64;
            }
            progress(done, total);
        }
    }
    let sum = out.hash.digest();
    out.inner
        .write_all(&sum.to_le_bytes())
        .and_then(|_| out.inner.flush())
        .map_err(io("write"))?;
    Ok(out.bytes + MAGIC.len() as u64 + 8)
}

/// Read exactly `b.len()` bytes, hashing them.
fn read_hashed(r: &mut impl Read, hash: &mut Xxh3, b: &mut [u8]) -> Result<(), ArchiveError> {
    r.read_exact(b)
        .map_err(|e| ArchiveError::Damaged(format!("{e}")))?;
    hash.update(b);
    Ok(())
}

/// Read the magic and the manifest; check what it names.
pub fn read_manifest(r: &mut impl Read, hash: &mut Xxh3) -> Result<Manifest, ArchiveError> {
    let mut magic = [0u8; 9];
    r.read_exact(&mut magic)
        .map_err(|_| ArchiveError::NotArchive)?;
    if magic != MAGIC {
        return Err(ArchiveError::NotArchive);
    }
    let mut n = [0u8; 4];
    read_hashed(r, hash, &mut n)?;
    let n = u32::from_le_bytes(n);
    if n == 0 || n > MAX_MANIFEST {
        return Err(ArchiveError::Damaged(format!("a manifest of {n} bytes")));
    }
    let mut m = vec![0u8; n as usize];
    read_hashed(r, hash, &mut m)?;
    let m: Manifest =
        serde_json::from_slice(&m).map_err(|e| ArchiveError::Damaged(format!("manifest: {e}")))?;
    if m.version != 1 {
        return Err(ArchiveError::Damaged(format!(
            "archive version {} (this cellsd reads 1): import it with a newer cells",
            m.version
        )));
    }
    let mut names = std::collections::HashSet::new();
    for f in &m.files {
        if !allowed(&f.name) {
            return Err(ArchiveError::Forbidden(f.name.clone()));
        }
        if !names.insert(f.name.as_str()) {
            return Err(ArchiveError::Damaged(format!("{} twice", f.name)));
        }
        if f.name.starts_with(CHECKPOINT_DIR) && (m.checkpoint.is_none() || m.base.is_some()) {
            return Err(ArchiveError::Damaged(format!(
                "{}: checkpoint files in an archive without a checkpoint, or in an incremental one",
                f.name
            )));
        }
        let mut end = 0u64;
        for &(off, len) in &f.segments {
            let e = off.checked_add(len);
            if off < end || e.is_none_or(|e| e > f.size) || len == 0 {
                return Err(ArchiveError::Damaged(format!(
                    "{}: a segment ({off}, {len}) out of order or past its size {}",
                    f.name, f.size
                )));
            }
            end = off + len;
        }
        for &(off, len) in &f.zero {
            if off.checked_add(len).is_none_or(|e| e > f.size) || len == 0 {
                return Err(ArchiveError::Damaged(format!(
                    "{}: a hole ({off}, {len}) past its size {}",
                    f.name, f.size
                )));
            }
        }
        if m.base.is_none() && !f.zero.is_empty() {
            return Err(ArchiveError::Damaged("holes in a whole export".into()));
        }
    }
    Ok(m)
}

/// Write the files of the archive into `dir` (each created new, mode
/// 0600, holes kept), then check the checksum.
pub fn read_files(
    r: &mut impl Read,
    hash: &mut Xxh3,
    m: &Manifest,
    dir: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), ArchiveError> {
    use std::os::unix::fs::OpenOptionsExt;
    let total: u64 = m.files.iter().map(FileEntry::data_bytes).sum();
    let mut done = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for e in &m.files {
        let path = dir.join(&e.name);
        if let Some(parent) = Path::new(&e.name)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            // Only `checkpoint/images` ([`allowed`]), made by us, 0700.
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir.join(parent))
                .map_err(io(format!("create {}", parent.display())))?;
        }
        let f = if m.base.is_some() {
            // An incremental archive updates the file there (same size).
            let f = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(io(format!("open {}", path.display())))?;
            if f.metadata().map_err(io("stat"))?.len() != e.size {
                return Err(ArchiveError::Damaged(format!(
                    "{} here is not the size the archive updates",
                    e.name
                )));
            }
            for &(off, len) in &e.zero {
                // SAFETY: fallocate on our own open file.
                let r = unsafe {
                    libc::fallocate(
                        f.as_raw_fd(),
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        off as i64,
                        len as i64,
                    )
                };
                if r != 0 {
                    return Err(io("punch a hole")(std::io::Error::last_os_error()));
                }
            }
            f
        } else {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(io(format!("create {}", path.display())))?;
            f.set_len(e.size).map_err(io("size"))?;
            f
        };
        for &(off, len) in &e.segments {
            let mut left = len;
            let mut at = off;
            while left > 0 {
                let want = (left as usize).min(buf.len());
                read_hashed(r, hash, &mut buf[..want])?;
                let mut w = 0;
                while w < want {
                    let n = nix::sys::uio::pwrite(&f, &buf[w..want], (at + w as u64) as i64)
                        .map_err(|e| io("write")(std::io::Error::from(e)))?;
                    w += n;
                }
                left -= want as u64;
                at += want as u64;
                done += want as u64;
            }
            progress(done, total);
        }
        f.sync_all().map_err(io("sync"))?;
    }
    let mut sum = [0u8; 8];
    r.read_exact(&mut sum)
        .map_err(|_| ArchiveError::Damaged("no checksum at the end".into()))?;
    if u64::from_le_bytes(sum) != hash.digest() {
        return Err(ArchiveError::Checksum);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("cells-vparchive-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn sample(dir: &Path) -> (Manifest, std::fs::File) {
        let p = dir.join("src.img");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        f.set_len(64 << 20).unwrap();
        nix::sys::uio::pwrite(&f, b"head", 0).unwrap();
        nix::sys::uio::pwrite(&f, &vec![7u8; 100_000], 32 << 20).unwrap();
        f.sync_all().unwrap();
        let segs = segments(&f).unwrap();
        let m = Manifest {
            version: 1,
            definition: serde_json::json!({"name": "a"}),
            template: TemplateRef {
                name: "minimal".into(),
                build: "1".into(),
                fingerprint: "x".into(),
            },
            adb_keys: String::new(),
            number: Some("+15550001".into()),
            files: vec![FileEntry {
                name: crate::disk::IMAGE_FILE.into(),
                size: 64 << 20,
                segments: segs,
                zero: Vec::new(),
            }],
            export_id: "e1".into(),
            base: None,
            checkpoint: None,
        };
        (m, f)
    }

    /// Write `m` with `files`, read it back into `d/dst`: the stream's
    /// length and that folder.
    fn round_trip(m: &Manifest, files: &[std::fs::File], d: &Path) -> (usize, std::path::PathBuf) {
        let mut out = Vec::new();
        write(&mut out, m, files, &mut |_, _| {}).unwrap();
        let mut r = &out[..];
        let mut h = Xxh3::new();
        let back = read_manifest(&mut r, &mut h).unwrap();
        assert_eq!(&back, m);
        let dst = d.join("dst");
        std::fs::create_dir(&dst).unwrap();
        read_files(&mut r, &mut h, &back, &dst, &mut |_, _| {}).unwrap();
        (out.len(), dst)
    }

    #[test]
    fn round_trip_keeps_data_and_holes() {
        let d = tmp("rt");
        let (m, f) = sample(&d);
        assert!(m.files[0].data_bytes() < 1 << 20, "only the data is listed");
        let (len, dst) = round_trip(&m, &[f], &d);
        assert!(len < 2 << 20, "the holes are not in the stream");
        let a = std::fs::read(d.join("src.img")).unwrap();
        let b = std::fs::read(dst.join(crate::disk::IMAGE_FILE)).unwrap();
        assert!(a == b, "byte-identical");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn block_hashes_find_what_changed() {
        let d = tmp("blocks");
        let (_, f) = sample(&d);
        let a = block_hashes(&f).unwrap();
        assert_eq!(a.len(), 64);
        nix::sys::uio::pwrite(&f, b"x", (5 << 20) + 7).unwrap();
        // SAFETY: punching a hole in our own test file.
        unsafe {
            libc::fallocate(
                f.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                32 << 20,
                1 << 20,
            )
        };
        let b = block_hashes(&f).unwrap();
        let (data, zero) = changed_blocks(&a, &b, 64 << 20);
        assert_eq!(data, vec![(5 << 20, 1 << 20)]);
        assert_eq!(zero, vec![(32 << 20, 1 << 20)]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn damaged_or_forbidden_archives_are_refused() {
        let d = tmp("bad");
        let (m, f) = sample(&d);
        let mut out = Vec::new();
        write(&mut out, &m, &[f], &mut |_, _| {}).unwrap();
        // A flipped byte in the data: the checksum.
        let mut bad = out.clone();
        let i = bad.len() - 20;
        bad[i] ^= 1;
        let mut r = &bad[..];
        let mut h = Xxh3::new();
        let back = read_manifest(&mut r, &mut h).unwrap();
        let dst = d.join("dst");
        std::fs::create_dir(&dst).unwrap();
        assert!(matches!(
            read_files(&mut r, &mut h, &back, &dst, &mut |_, _| {}),
            Err(ArchiveError::Checksum)
        ));
        // Cut short.
        let mut r = &out[..out.len() / 2];
        let mut h = Xxh3::new();
        let back = read_manifest(&mut r, &mut h).unwrap();
        let dst2 = d.join("dst2");
        std::fs::create_dir(&dst2).unwrap();
        assert!(matches!(
            read_files(&mut r, &mut h, &back, &dst2, &mut |_, _| {}),
            Err(ArchiveError::Damaged(_))
        ));
        // Not an archive; a file it may not carry; a segment past the end.
        let mut h = Xxh3::new();
        assert!(matches!(
            read_manifest(&mut &b"PK\x03\x04 zip"[..], &mut h),
            Err(ArchiveError::NotArchive)
        ));
        for (name, segs) in [
            ("../../etc/passwd", vec![(0u64, 1u64)]),
            // Checkpoint files in an archive without a checkpoint.
            ("checkpoint/images/core-1.img", vec![(0, 1)]),
            (crate::disk::IMAGE_FILE, vec![(0, 10), (5, 10)]),
            (crate::disk::IMAGE_FILE, vec![((64 << 20) - 1, 2)]),
        ] {
            let mut m2 = m.clone();
            m2.files[0].name = name.into();
            m2.files[0].segments = segs;
            let j = serde_json::to_vec(&m2).unwrap();
            let mut a = MAGIC.to_vec();
            a.extend_from_slice(&(j.len() as u32).to_le_bytes());
            a.extend_from_slice(&j);
            let mut h = Xxh3::new();
            let e = read_manifest(&mut &a[..], &mut h).unwrap_err();
            assert!(
                matches!(e, ArchiveError::Forbidden(_) | ArchiveError::Damaged(_)),
                "{e}"
            );
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn only_a_checkpoint_s_own_files_may_come() {
        for ok in [
            crate::disk::IMAGE_FILE,
            "checkpoint/framebuffer.raw",
            "checkpoint/images/core-1.img",
            "checkpoint/images/pages-12.img",
        ] {
            assert!(allowed(ok), "{ok}");
        }
        for bad in [
            "checkpoint/images/../../x",
            "checkpoint/images/",
            "checkpoint/images/.hidden",
            "checkpoint/images/a/b",
            "checkpoint/checkpoint.json",
            "checkpoint/images/x\n",
            "/etc/passwd",
            "checkpoint/framebuffer.raw/x",
        ] {
            assert!(!allowed(bad), "{bad}");
        }
    }

    #[test]
    fn a_checkpoint_travels_in_its_folder() {
        let d = tmp("ckpt");
        let (mut m, f) = sample(&d);
        let core = d.join("core.img");
        std::fs::write(&core, b"criu core").unwrap();
        m.checkpoint = Some(serde_json::json!({"vp": "a"}));
        m.files.push(FileEntry {
            name: "checkpoint/images/core-1.img".into(),
            size: 9,
            segments: vec![(0, 9)],
            zero: Vec::new(),
        });
        let (_, dst) = round_trip(&m, &[f, std::fs::File::open(&core).unwrap()], &d);
        assert_eq!(
            std::fs::read(dst.join("checkpoint/images/core-1.img")).unwrap(),
            b"criu core"
        );
        // An incremental archive carries no checkpoint.
        let mut inc = m.clone();
        inc.base = Some("e0".into());
        let j = serde_json::to_vec(&inc).unwrap();
        let mut a = MAGIC.to_vec();
        a.extend_from_slice(&(j.len() as u32).to_le_bytes());
        a.extend_from_slice(&j);
        let e = read_manifest(&mut &a[..], &mut Xxh3::new()).unwrap_err();
        assert!(matches!(e, ArchiveError::Damaged(_)), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
