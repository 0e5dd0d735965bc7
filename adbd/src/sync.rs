//! The `sync:` service (AOSP `adb/SYNC.TXT`, file_sync_service): STAT, LIST,
//! SEND (push), RECV (pull), QUIT, and the v2 stat and list (`stat_v2`,
//! `ls_v2`: 64-bit sizes and times, errno on failure). Requests are `[id: 4][len: u32 LE]` and a
//! path; integers are little-endian.
//!
//! A pushed file is written to a temporary name beside its destination and
//! renamed over it at DONE, so a push that fails half-way leaves the old file
//! (or nothing) rather than a truncated one. Parent directories are made as
//! needed (the `fixed_push_mkdir` feature).

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Longest path a request may carry (adb's limit).
pub const PATH_MAX: u32 = 1024;
/// Largest DATA chunk (SYNC_DATA_MAX).
pub const DATA_MAX: usize = 64 * 1024;

fn le(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_request(r: &mut impl Read) -> io::Result<Option<([u8; 4], u32)>> {
    let mut id = [0u8; 4];
    match r.read_exact(&mut id) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    Ok(Some((id, read_u32(r)?)))
}

fn read_path(r: &mut impl Read, len: u32) -> io::Result<String> {
    if len > PATH_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("sync path of {len} bytes is longer than {PATH_MAX}"),
        ));
    }
    let mut b = vec![0u8; len as usize];
    r.read_exact(&mut b)?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

fn fail(w: &mut impl Write, msg: &str) -> io::Result<()> {
    w.write_all(b"FAIL")?;
    w.write_all(&le(msg.len() as u32))?;
    w.write_all(msg.as_bytes())?;
    w.flush()
}

/// mode, size, mtime of a path (lstat, as v1 STAT does); zeros if missing.
fn stat_v1(path: &str) -> [u32; 3] {
    match fs::symlink_metadata(path) {
        Ok(m) => [m.mode(), m.size() as u32, m.mtime() as u32],
        Err(_) => [0; 3],
    }
}

/// Serve sync requests until QUIT or the end of the stream.
pub fn serve(io: &mut (impl Read + Write)) -> io::Result<()> {
    while let Some((id, len)) = read_request(io)? {
        match &id {
            b"STAT" => {
                let path = read_path(io, len)?;
                io.write_all(b"STAT")?;
                for v in stat_v1(&path) {
                    io.write_all(&le(v))?;
                }
                io.flush()?;
            }
            b"LIST" => {
                let path = read_path(io, len)?;
                list(io, &path)?;
            }
            b"STA2" | b"LST2" => {
                let path = read_path(io, len)?;
                let m = if &id == b"STA2" {
                    fs::metadata(&path)
                } else {
                    fs::symlink_metadata(&path)
                };
                io.write_all(&id)?;
                io.write_all(&stat_v2(m))?;
                io.flush()?;
            }
            b"LIS2" => {
                let path = read_path(io, len)?;
                list_v2(io, &path)?;
            }
            b"SEND" => {
                let spec = read_path(io, len)?;
                send(io, &spec)?;
            }
            b"RECV" => {
                let path = read_path(io, len)?;
                recv(io, &path)?;
            }
            b"QUIT" => return Ok(()),
            other => {
                let msg = format!("unknown sync request {:?}", String::from_utf8_lossy(other));
                fail(io, &msg)?;
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The body of a v2 stat (after the 4-byte id): error, dev, ino, mode,
/// nlink, uid, gid, size, atime, mtime, ctime (file_sync_protocol.h's
/// sync_stat_v2). On failure only the errno is set.
fn stat_v2(m: io::Result<fs::Metadata>) -> Vec<u8> {
    let mut b = Vec::with_capacity(68);
    match m {
        Ok(m) => {
            b.extend_from_slice(&le(0));
            b.extend_from_slice(&m.dev().to_le_bytes());
            b.extend_from_slice(&m.ino().to_le_bytes());
            b.extend_from_slice(&le(m.mode()));
            b.extend_from_slice(&le(m.nlink() as u32));
            b.extend_from_slice(&le(m.uid()));
            b.extend_from_slice(&le(m.gid()));
            b.extend_from_slice(&m.size().to_le_bytes());
            b.extend_from_slice(&m.atime().to_le_bytes());
            b.extend_from_slice(&m.mtime().to_le_bytes());
            b.extend_from_slice(&m.ctime().to_le_bytes());
        }
        Err(e) => {
            b.extend_from_slice(&le(e.raw_os_error().unwrap_or(libc::EIO) as u32));
            b.resize(68, 0);
        }
    }
    b
}

fn list_v2(io: &mut impl Write, path: &str) -> io::Result<()> {
    if let Ok(rd) = fs::read_dir(path) {
        let mut names: Vec<String> = vec![".".into(), "..".into()];
        names.extend(
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned()),
        );
        for name in names {
            let m = Path::new(path).join(&name).symlink_metadata();
            if m.is_err() {
                continue;
            }
            io.write_all(b"DNT2")?;
            io.write_all(&stat_v2(m))?;
            io.write_all(&le(name.len() as u32))?;
            io.write_all(name.as_bytes())?;
        }
    }
    io.write_all(b"DONE")?;
    io.write_all(&[0u8; 72])?;
    io.flush()
}

fn list(io: &mut impl Write, path: &str) -> io::Result<()> {
    let mut entries: Vec<(String, fs::Metadata)> = Vec::new();
    if let Ok(rd) = fs::read_dir(path) {
        for e in rd.flatten() {
            if let Ok(m) = e.path().symlink_metadata() {
                entries.push((e.file_name().to_string_lossy().into_owned(), m));
            }
        }
    }
    // adbd lists . and .. too; clients skip them.
    for dot in [".", ".."] {
        if let Ok(m) = Path::new(path).join(dot).symlink_metadata() {
            entries.insert(0, (dot.to_string(), m));
        }
    }
    for (name, m) in entries {
        io.write_all(b"DENT")?;
        io.write_all(&le(m.mode()))?;
        io.write_all(&le(m.size() as u32))?;
        io.write_all(&le(m.mtime() as u32))?;
        io.write_all(&le(name.len() as u32))?;
        io.write_all(name.as_bytes())?;
    }
    io.write_all(b"DONE")?;
    io.write_all(&[0u8; 16])?;
    io.flush()
}

/// Where a push is written before it is renamed into place.
fn temp_name(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.adb-{}", std::process::id()))
}

fn send(io: &mut (impl Read + Write), spec: &str) -> io::Result<()> {
    // "path,mode"; a path may itself contain commas, the mode never.
    let (path, mode) = match spec.rsplit_once(',') {
        Some((p, m)) => match m.parse::<u32>() {
            Ok(m) => (p.to_string(), m),
            Err(_) => (spec.to_string(), 0o100644),
        },
        None => (spec.to_string(), 0o100644),
    };
    let dest = PathBuf::from(&path);
    let is_link = mode & libc::S_IFMT == libc::S_IFLNK;
    // Open first; on failure the data is still read (and dropped) up to DONE,
    // then the reason is sent.
    let mut error: Option<String> = None;
    if let Some(parent) = dest.parent() {
        if !parent.as_os_str().is_empty() {
            if let Err(e) = fs::create_dir_all(parent) {
                error = Some(format!("secure_mkdirs failed: {}: {e}", parent.display()));
            }
        }
    }
    let tmp = temp_name(&dest);
    let mut file: Option<fs::File> = None;
    let mut link_target: Vec<u8> = Vec::new();
    if error.is_none() && !is_link {
        match fs::File::create(&tmp) {
            Ok(f) => file = Some(f),
            Err(e) => error = Some(format!("couldn't create file: {path}: {e}")),
        }
    }
    let mtime = loop {
        let (id, len) = match read_request(io)? {
            Some(r) => r,
            None => {
                let _ = fs::remove_file(&tmp);
                return Ok(());
            }
        };
        match &id {
            b"DATA" => {
                if len as usize > DATA_MAX {
                    let _ = fs::remove_file(&tmp);
                    return fail(io, &format!("DATA chunk of {len} bytes exceeds {DATA_MAX}"));
                }
                let mut b = vec![0u8; len as usize];
                io.read_exact(&mut b)?;
                if is_link {
                    link_target.extend_from_slice(&b);
                } else if let Some(f) = file.as_mut() {
                    if let Err(e) = f.write_all(&b) {
                        error = Some(format!("write failed: {path}: {e}"));
                        file = None;
                    }
                }
            }
            b"DONE" => break len,
            other => {
                let _ = fs::remove_file(&tmp);
                return fail(
                    io,
                    &format!(
                        "expected DATA or DONE, got {:?}",
                        String::from_utf8_lossy(other)
                    ),
                );
            }
        }
    };
    if error.is_none() {
        let r = if is_link {
            let target = String::from_utf8_lossy(&link_target).into_owned();
            let _ = fs::remove_file(&dest);
            std::os::unix::fs::symlink(target.trim_end_matches('\0'), &dest)
        } else {
            finish_file(file.take(), &tmp, &dest, mode, mtime)
        };
        if let Err(e) = r {
            error = Some(format!("{path}: {e}"));
        }
    }
    match error {
        Some(msg) => {
            let _ = fs::remove_file(&tmp);
            fail(io, &msg)
        }
        None => {
            io.write_all(b"OKAY")?;
            io.write_all(&le(0))?;
            io.flush()
        }
    }
}

fn finish_file(
    file: Option<fs::File>,
    tmp: &Path,
    dest: &Path,
    mode: u32,
    mtime: u32,
) -> io::Result<()> {
    let f = file.ok_or_else(|| io::Error::other("file not open"))?;
    f.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime as u64);
    f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))?;
    drop(f);
    fs::rename(tmp, dest)
}

fn recv(io: &mut impl Write, path: &str) -> io::Result<()> {
    let mut f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return fail(io, &format!("{path}: {e}")),
    };
    let mut buf = vec![0u8; DATA_MAX];
    loop {
        let n = match f.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return fail(io, &format!("read failed: {path}: {e}")),
        };
        if n == 0 {
            break;
        }
        io.write_all(b"DATA")?;
        io.write_all(&le(n as u32))?;
        io.write_all(&buf[..n])?;
    }
    io.write_all(b"DONE")?;
    io.write_all(&le(0))?;
    io.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request script in, replies out.
    struct Duplex {
        input: io::Cursor<Vec<u8>>,
        output: Vec<u8>,
    }
    impl Read for Duplex {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            self.input.read(b)
        }
    }
    impl Write for Duplex {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.output.write(b)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn req(id: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = id.to_vec();
        v.extend_from_slice(&(body.len() as u32).to_le_bytes());
        v.extend_from_slice(body);
        v
    }

    fn run(script: Vec<u8>) -> Vec<u8> {
        let mut d = Duplex {
            input: io::Cursor::new(script),
            output: Vec::new(),
        };
        serve(&mut d).unwrap();
        d.output
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cells-adbd-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn push_stat_pull_list() {
        let d = tmpdir("push");
        let dest = d.join("sub/dir/file.bin");
        let spec = format!("{},{}", dest.display(), 0o100640);
        let payload: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
        let mut s = req(b"SEND", spec.as_bytes());
        for c in payload.chunks(DATA_MAX) {
            s.extend(req(b"DATA", c));
        }
        s.extend(b"DONE");
        s.extend(1_600_000_000u32.to_le_bytes());
        s.extend(req(b"STAT", dest.to_str().unwrap().as_bytes()));
        s.extend(req(b"RECV", dest.to_str().unwrap().as_bytes()));
        s.extend(req(
            b"LIST",
            dest.parent().unwrap().to_str().unwrap().as_bytes(),
        ));
        s.extend(req(b"QUIT", b""));
        let out = run(s);
        assert_eq!(&out[..8], b"OKAY\0\0\0\0");
        assert_eq!(fs::read(&dest).unwrap(), payload);
        let m = fs::metadata(&dest).unwrap();
        assert_eq!(m.mode() & 0o777, 0o640);
        assert_eq!(m.mtime(), 1_600_000_000);
        // STAT
        assert_eq!(&out[8..12], b"STAT");
        let f = |o: usize| u32::from_le_bytes(out[o..o + 4].try_into().unwrap());
        assert_eq!(f(12), 0o100640);
        assert_eq!(f(16), payload.len() as u32);
        assert_eq!(f(20), 1_600_000_000);
        // RECV: DATA chunks then DONE
        let mut pos = 24;
        let mut pulled = Vec::new();
        while &out[pos..pos + 4] == b"DATA" {
            let n = f(pos + 4) as usize;
            pulled.extend_from_slice(&out[pos + 8..pos + 8 + n]);
            pos += 8 + n;
        }
        assert_eq!(&out[pos..pos + 4], b"DONE");
        assert_eq!(pulled, payload);
        pos += 8;
        // LIST has the file
        let rest = String::from_utf8_lossy(&out[pos..]);
        assert!(rest.contains("file.bin"), "{rest}");
        assert!(rest.ends_with("DONE\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"));
        // No temporary file left behind.
        let names: Vec<_> = fs::read_dir(dest.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stat_and_list_v2() {
        let d = tmpdir("v2");
        fs::write(d.join("f"), vec![7u8; 5000]).unwrap();
        let mut s = req(b"STA2", d.join("f").to_str().unwrap().as_bytes());
        s.extend(req(b"LST2", d.join("missing").to_str().unwrap().as_bytes()));
        s.extend(req(b"LIS2", d.to_str().unwrap().as_bytes()));
        let out = run(s);
        let u32at = |o: usize| u32::from_le_bytes(out[o..o + 4].try_into().unwrap());
        let u64at = |o: usize| u64::from_le_bytes(out[o..o + 8].try_into().unwrap());
        // STA2: id, error 0, dev, ino, mode, nlink, uid, gid, size (offset 40), times.
        assert_eq!(&out[..4], b"STA2");
        assert_eq!(u32at(4), 0);
        assert_eq!(u32at(24) & libc::S_IFMT, libc::S_IFREG);
        assert_eq!(u64at(40), 5000);
        // LST2 of a missing path: the errno, the rest zero.
        assert_eq!(&out[72..76], b"LST2");
        assert_eq!(u32at(76), libc::ENOENT as u32);
        assert!(out[80..144].iter().all(|&b| b == 0));
        // LIS2: DNT2 entries (stat body + name) then DONE with a zero dent.
        let rest = &out[144..];
        let text = String::from_utf8_lossy(rest);
        assert!(rest.starts_with(b"DNT2") && text.contains('f'), "{text}");
        assert!(rest.ends_with(&[&b"DONE"[..], &[0u8; 72][..]].concat()));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn failures_are_reported_and_leave_nothing() {
        let d = tmpdir("fail");
        let missing = d.join("nope");
        let out = run(req(b"RECV", missing.to_str().unwrap().as_bytes()));
        assert_eq!(&out[..4], b"FAIL");
        assert!(String::from_utf8_lossy(&out[8..]).contains("No such file"));
        let out = run(req(b"STAT", missing.to_str().unwrap().as_bytes()));
        assert_eq!(&out[4..16], &[0u8; 12]);
        // A push into a path whose parent is a file: FAIL after DONE, nothing written.
        fs::write(d.join("file"), b"x").unwrap();
        let spec = format!("{}/inside,33188", d.join("file").display());
        let mut s = req(b"SEND", spec.as_bytes());
        s.extend(req(b"DATA", b"data"));
        s.extend(b"DONE\0\0\0\0");
        let out = run(s);
        assert_eq!(&out[..4], b"FAIL");
        assert_eq!(fs::read(d.join("file")).unwrap(), b"x");
        // Over-long paths are refused.
        let mut d2 = Duplex {
            input: io::Cursor::new(req(b"STAT", &vec![b'a'; 2000])),
            output: Vec::new(),
        };
        assert!(serve(&mut d2).is_err());
        fs::remove_dir_all(&d).unwrap();
    }
}
