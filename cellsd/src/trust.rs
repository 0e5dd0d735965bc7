//! Which host paths cellsd may trust: it writes VP data, follows paths and
//! reads recipes there as root, so nobody but root may be able to change
//! them — not the directory itself, and not any directory on the way to it
//! (a user who can rename a parent can swap the whole tree). Sticky,
//! root-owned directories such as /tmp are fine on the way (others cannot
//! rename or remove what root made in them), symlinks only if root owns
//! them.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{what} {path}: {on} is {why}; cellsd works there as root, so only root may change it or any folder above it: {fix}")]
    Untrusted {
        what: String,
        path: PathBuf,
        on: PathBuf,
        why: String,
        fix: String,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} must be an absolute path")]
    Relative { what: String, path: PathBuf },
    #[error("{what} {path}: too many symlinks")]
    Loop { what: String, path: PathBuf },
}

/// Why a directory (or symlink) is not root's alone, if it is not.
fn untrusted(meta: &std::fs::Metadata, final_dir: bool) -> Option<(String, String)> {
    let mode = meta.mode();
    if meta.uid() != 0 {
        return Some((
            format!("owned by uid {}", meta.uid()),
            "chown root:root it".to_string(),
        ));
    }
    if meta.file_type().is_symlink() {
        return None;
    }
    let writable = mode & 0o022 != 0;
    let sticky = mode & 0o1000 != 0;
    if writable && (final_dir || !sticky) {
        return Some((
            format!(
                "writable by {} (mode {:o})",
                if mode & 0o002 != 0 {
                    "others"
                } else {
                    "its group"
                },
                mode & 0o7777
            ),
            "chmod go-w it".to_string(),
        ));
    }
    None
}

/// Check that `path` (an existing directory) and every directory above it
/// can be changed by root only. `what` names it in errors ("state dir").
pub fn check_dir(path: &Path, what: &str) -> Result<(), TrustError> {
    if !path.is_absolute() {
        return Err(TrustError::Relative {
            what: what.into(),
            path: path.into(),
        });
    }
    let mut todo: Vec<std::ffi::OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .rev()
        .collect();
    let mut at = PathBuf::from("/");
    let mut hops = 0;
    let bad = |on: &Path, (why, fix): (String, String)| TrustError::Untrusted {
        what: what.into(),
        path: path.into(),
        on: on.into(),
        why,
        fix: format!("{fix} ({}), or use another folder", on.display()),
    };
    let root = std::fs::symlink_metadata(&at).map_err(|source| TrustError::Io {
        what: what.into(),
        path: path.into(),
        source,
    })?;
    if let Some(w) = untrusted(&root, todo.is_empty()) {
        return Err(bad(&at, w));
    }
    while let Some(c) = todo.pop() {
        if c == ".." {
            at.pop();
            continue;
        }
        let next = at.join(&c);
        let meta = std::fs::symlink_metadata(&next).map_err(|source| TrustError::Io {
            what: what.into(),
            path: path.into(),
            source,
        })?;
        let last = todo.is_empty();
        if let Some(w) = untrusted(&meta, last) {
            return Err(bad(&next, w));
        }
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return Err(TrustError::Loop {
                    what: what.into(),
                    path: path.into(),
                });
            }
            let target = std::fs::read_link(&next).map_err(|source| TrustError::Io {
                what: what.into(),
                path: path.into(),
                source,
            })?;
            if target.is_absolute() {
                at = PathBuf::from("/");
            }
            for t in target.components().rev() {
                match t {
                    Component::Normal(n) => todo.push(n.to_os_string()),
                    Component::ParentDir => todo.push("..".into()),
                    _ => {}
                }
            }
            continue;
        }
        at = next;
    }
    if !std::fs::metadata(&at).map(|m| m.is_dir()).unwrap_or(false) {
        return Err(TrustError::Io {
            what: what.into(),
            path: path.into(),
            source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cells-trust-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    #[test]
    fn root_only_paths_pass_and_others_are_named() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return; // needs root to make root-owned folders
        }
        let d = tmp("a");
        let state = d.join("state");
        std::fs::create_dir_all(&state).unwrap();
        // /tmp is sticky and world-writable: fine on the way.
        check_dir(&state, "state dir").unwrap();
        // Writable by others: refused, naming the folder and the fix.
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_dir(&state, "state dir").unwrap_err().to_string();
        assert!(
            e.contains("writable by others") && e.contains("chmod go-w"),
            "{e}"
        );
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o711)).unwrap();
        // A parent owned by a user: refused.
        std::os::unix::fs::chown(&d, Some(65534), None).unwrap();
        let e = check_dir(&state, "state dir").unwrap_err().to_string();
        assert!(
            e.contains("owned by uid 65534") && e.contains(&d.display().to_string()),
            "{e}"
        );
        std::os::unix::fs::chown(&d, Some(0), None).unwrap();
        // A root-owned symlink on the way is followed and its target checked.
        let link = d.join("link");
        std::os::unix::fs::symlink(&state, &link).unwrap();
        check_dir(&link, "state dir").unwrap();
        check_dir(&state.join("../state"), "state dir").unwrap();
        // A sticky dir is not trusted as the folder itself.
        let sticky = d.join("sticky");
        std::fs::create_dir(&sticky).unwrap();
        std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(check_dir(&sticky, "run dir").is_err());
        assert!(check_dir(Path::new("relative"), "run dir").is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
