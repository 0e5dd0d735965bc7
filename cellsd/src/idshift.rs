//! `cellsd __shift-ids IMAGE MOUNTPOINT OLD NEW`: an imported VP's disk
//! image holds its files with the host ids of the VP's range on the host it
//! came from (OLD.. OLD+65536); here the VP has another range (NEW..). The
//! helper (a fresh exec of cellsd: single-threaded) mounts the image in a
//! mount namespace of its own and moves every owner in the old range to the
//! same place in the new one, without following any link (the image's
//! content is the VP's). A chown clears setuid/setgid bits: they are put
//! back. File capabilities (`security.capability`) do not survive a chown
//! and are not restored.

use std::ffi::{CStr, CString};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use crate::config::ID_RANGE;

fn shift(id: u32, old: u32, new: u32) -> u32 {
    if id >= old && id - old < ID_RANGE {
        new + (id - old)
    } else {
        id
    }
}

fn err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Walk the directory `dir` (an open fd), shifting every entry's owner.
fn walk(dir: RawFd, old: u32, new: u32, depth: u32, count: &mut u64) -> Result<(), String> {
    if depth > 512 {
        return Err("the VP's tree is deeper than 512 folders".into());
    }
    // SAFETY: dup of a valid fd; fdopendir takes the duplicate.
    let dup = unsafe { libc::fcntl(dir, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(err("dup"));
    }
    // SAFETY: fdopendir on our duplicate (it owns it from now on).
    let d = unsafe { libc::fdopendir(dup) };
    if d.is_null() {
        // SAFETY: closing our own duplicate.
        unsafe { libc::close(dup) };
        return Err(err("fdopendir"));
    }
    let mut names: Vec<CString> = Vec::new();
    loop {
        // SAFETY: readdir on the open DIR stream.
        let e = unsafe { libc::readdir(d) };
        if e.is_null() {
            break;
        }
        // SAFETY: d_name is a NUL-terminated array within the dirent.
        let name = unsafe { CStr::from_ptr((*e).d_name.as_ptr()) };
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
    // SAFETY: closing the stream we opened.
    unsafe { libc::closedir(d) };
    for name in names {
        // SAFETY: a zeroed stat filled by fstatat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstatat relative to our dir fd, not following links.
        if unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } != 0 {
            return Err(err("fstatat"));
        }
        let (uid, gid) = (shift(st.st_uid, old, new), shift(st.st_gid, old, new));
        if (uid, gid) != (st.st_uid, st.st_gid) {
            // SAFETY: fchownat relative to our dir fd, not following links.
            if unsafe { libc::fchownat(dir, name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) }
                != 0
            {
                return Err(err("fchownat"));
            }
            *count += 1;
            let kind = st.st_mode & libc::S_IFMT;
            if kind == libc::S_IFREG && st.st_mode & 0o6000 != 0 {
                // SAFETY: fchmodat on a regular file (checked above without
                // following links; nothing else changes the tree now).
                if unsafe { libc::fchmodat(dir, name.as_ptr(), st.st_mode & 0o7777, 0) } != 0 {
                    return Err(err("fchmodat"));
                }
            }
        }
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            // SAFETY: openat relative to our dir fd; a folder only, no link.
            let sub = unsafe {
                libc::openat(
                    dir,
                    name.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                )
            };
            if sub < 0 {
                return Err(err("openat"));
            }
            // SAFETY: a fresh fd of ours.
            let sub = unsafe { OwnedFd::from_raw_fd(sub) };
            walk(
                std::os::fd::AsRawFd::as_raw_fd(&sub),
                old,
                new,
                depth + 1,
                count,
            )?;
        }
    }
    Ok(())
}

/// The helper's entry point; returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let run = || -> Result<u64, String> {
        let [image, mountpoint, old, new] = args else {
            return Err("usage: cellsd __shift-ids IMAGE MOUNTPOINT OLD NEW".into());
        };
        let old: u32 = old.parse().map_err(|_| format!("bad id {old}"))?;
        let new: u32 = new.parse().map_err(|_| format!("bad id {new}"))?;
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
            .map_err(|e| format!("unshare: {e}"))?;
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| format!("make mounts private: {e}"))?;
        std::fs::create_dir_all(mountpoint).map_err(|e| format!("{mountpoint}: {e}"))?;
        crate::disk::mount(&crate::disk::DiskRequest {
            image: image.into(),
            mountpoint: mountpoint.into(),
        })
        .map_err(|e| e.to_string())?;
        let c = CString::new(mountpoint.as_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: open of the mount point, a folder, no link.
        let root = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if root < 0 {
            return Err(err("open the mounted image"));
        }
        // SAFETY: a fresh fd of ours.
        let root = unsafe { OwnedFd::from_raw_fd(root) };
        let mut count = 0;
        walk(
            std::os::fd::AsRawFd::as_raw_fd(&root),
            old,
            new,
            0,
            &mut count,
        )?;
        // SAFETY: syncfs on our fd.
        unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&root)) };
        Ok(count)
    };
    match run() {
        Ok(n) => {
            println!("{n}");
            0
        }
        Err(e) => {
            eprintln!("shifting the image's owners: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_old_range_moves() {
        let (old, new) = (100_000, 165_536);
        assert_eq!(shift(old, old, new), new);
        assert_eq!(shift(old + 1000, old, new), new + 1000);
        assert_eq!(shift(old + ID_RANGE - 1, old, new), new + ID_RANGE - 1);
        assert_eq!(shift(old + ID_RANGE, old, new), old + ID_RANGE);
        assert_eq!(shift(0, old, new), 0);
        assert_eq!(shift(old - 1, old, new), old - 1);
    }
}
