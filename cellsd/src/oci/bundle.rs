//! A bundle's config.json made into an [`OciSource`] and create options;
//! the read-only layers of a root file system from a mount table; the VP
//! name of a container. Pure but for the files it is given to read.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use sha2::{Digest, Sha256};

use super::{
    OciBind, OciJoin, OciRlimit, OciSource, OciTmpfs, CRI_CONTAINER_NAME, CRI_SANDBOX_NAME,
};
use crate::config::CreateOptions;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an OCI runtime config: {why}")]
    Parse { path: PathBuf, why: String },
    #[error("the bundle's {field} {why}")]
    Unsupported { field: String, why: String },
}

fn unsupported(field: &str, why: impl Into<String>) -> BundleError {
    BundleError::Unsupported {
        field: field.into(),
        why: why.into(),
    }
}

/// Folders cells mounts itself in every VP (the bundle's mounts there are
/// not used).
const OWN_MOUNTS: &[&str] = &["/proc", "/sys", "/dev", "/dev/pts"];

/// Read `bundle/config.json`.
pub fn load(bundle: &Path) -> Result<Spec, BundleError> {
    let path = bundle.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| BundleError::Read {
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| BundleError::Parse {
        path,
        why: e.to_string(),
    })
}

/// The root file system's path (`root.path`, relative to the bundle).
pub fn root_path(bundle: &Path, spec: &Spec) -> PathBuf {
    let p = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_else(|| PathBuf::from("rootfs"));
    if p.is_absolute() {
        p
    } else {
        bundle.join(p)
    }
}

/// What the VP takes of `spec`; `layers` are its root's (see [`layers`]).
pub fn source(
    id: &str,
    bundle: &Path,
    spec: &Spec,
    layers: Vec<PathBuf>,
) -> Result<OciSource, BundleError> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| unsupported("process", "is missing"))?;
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(unsupported(
            "process.args",
            "are empty: name the program to run",
        ));
    }
    if process.terminal() == Some(true) {
        return Err(unsupported(
            "process.terminal",
            "is true: cells-runtime runs containers without a terminal (run `ctr run` without -t; \
             `cellctl console VP` gives the VP's console)",
        ));
    }
    let user = process.user();
    let mut binds = Vec::new();
    let mut tmpfs = Vec::new();
    for m in spec.mounts().iter().flatten() {
        let dest = m.destination().to_string_lossy().to_string();
        let opts = m.options().clone().unwrap_or_default();
        let bind =
            m.typ().as_deref() == Some("bind") || opts.iter().any(|o| o == "bind" || o == "rbind");
        if OWN_MOUNTS.contains(&dest.as_str()) {
            continue;
        }
        if !bind && m.typ().as_deref() == Some("tmpfs") {
            if !dest.starts_with('/') || dest.split('/').any(|c| c == "..") {
                return Err(unsupported(
                    &format!("mount {dest}"),
                    "needs an absolute destination without '..'",
                ));
            }
            tmpfs.push(OciTmpfs {
                source: m
                    .source()
                    .as_ref()
                    .and_then(|s| s.to_str())
                    .filter(|s| !s.is_empty() && !s.contains(','))
                    .unwrap_or("tmpfs")
                    .to_string(),
                destination: dest,
                options: opts
                    .into_iter()
                    .filter(|o| super::tmpfs_option_ok(o))
                    .collect(),
            });
            continue;
        }
        if !bind {
            continue;
        }
        let source = m
            .source()
            .clone()
            .ok_or_else(|| unsupported(&format!("mount {dest}"), "has no source"))?;
        if !source.is_absolute() || !dest.starts_with('/') || dest.split('/').any(|c| c == "..") {
            return Err(unsupported(
                &format!("mount {dest}"),
                "needs an absolute source and destination without '..'",
            ));
        }
        binds.push(OciBind {
            source,
            destination: dest,
            readonly: opts.iter().any(|o| o == "ro"),
        });
    }
    let mut join = Vec::new();
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for ns in namespaces {
        let Some(path) = ns.path().clone() else {
            continue;
        };
        let kind = match ns.typ() {
            oci_spec::runtime::LinuxNamespaceType::Network => "network",
            oci_spec::runtime::LinuxNamespaceType::Ipc => "ipc",
            oci_spec::runtime::LinuxNamespaceType::Uts => "uts",
            other => {
                return Err(unsupported(
                    &format!("{other:?} namespace"),
                    format!(
                        "is joined by path ({}): a VP joins only network, ipc and uts namespaces",
                        path.display()
                    ),
                ))
            }
        };
        join.push(OciJoin {
            kind: kind.into(),
            path,
        });
    }
    Ok(OciSource {
        id: id.to_string(),
        bundle: bundle.to_path_buf(),
        layers,
        args,
        env: process.env().clone().unwrap_or_default(),
        cwd: process.cwd().to_string_lossy().to_string(),
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        hostname: spec.hostname().clone().filter(|h| !h.is_empty()),
        binds,
        join,
        annotations: spec
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        capabilities: process
            .capabilities()
            .as_ref()
            .and_then(|c| c.bounding().as_ref())
            .map(|set| {
                set.iter()
                    .filter_map(|c| serde_json::to_value(c).ok())
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            }),
        rlimits: process
            .rlimits()
            .iter()
            .flatten()
            .map(|r| OciRlimit {
                kind: serde_json::to_value(r.typ())
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                soft: r.soft(),
                hard: r.hard(),
            })
            .collect(),
        tmpfs,
    })
}

/// The bundle's resources as create options (memory, CPUs, pids).
pub fn resource_options(spec: &Spec, opts: &mut CreateOptions) {
    let Some(r) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) else {
        return;
    };
    if let Some(m) = r
        .memory()
        .as_ref()
        .and_then(|m| m.limit())
        .filter(|m| *m > 0)
    {
        opts.memory = Some(m as u64);
    }
    if let Some(cpu) = r.cpu() {
        if let (Some(q), Some(p)) = (cpu.quota(), cpu.period()) {
            if q > 0 && p > 0 {
                opts.cpus = Some(q as f64 / p as f64);
            }
        }
    }
    if let Some(p) = r.pids().as_ref().map(|p| p.limit()).filter(|p| *p > 0) {
        opts.pids = Some(p);
    }
}

/// The read-only layers of the root file system mounted at `root`, top
/// first, from a mount table (`/proc/self/mountinfo`'s text): an overlay's
/// upper and lower folders (containerd's snapshot), else `root` itself.
pub fn layers(mountinfo: &str, root: &Path) -> Vec<PathBuf> {
    let mut found = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(point) = left.split(' ').nth(4) else {
            continue;
        };
        if Path::new(&crate::criu::unescape(point)) != root {
            continue;
        }
        let mut r = right.split(' ');
        let fstype = r.next().unwrap_or("");
        let _source = r.next();
        let opts = r.next().unwrap_or("");
        // The last mount on the path is the one seen there.
        found = Some((fstype.to_string(), opts.to_string()));
    }
    let Some((_, opts)) = found.filter(|(t, _)| t == "overlay") else {
        return vec![root.to_path_buf()];
    };
    let mut upper = Vec::new();
    let mut lower = Vec::new();
    for o in opts.split(',') {
        if let Some(u) = o.strip_prefix("upperdir=") {
            upper.push(PathBuf::from(crate::criu::unescape(u)));
        } else if let Some(l) = o.strip_prefix("lowerdir=") {
            lower.extend(
                l.split(':')
                    .map(|p| PathBuf::from(crate::criu::unescape(p))),
            );
        }
    }
    upper.into_iter().chain(lower).collect()
}

/// `dest` (a path in the container) with the symlinks of the image under
/// `root` resolved, never leaving `root` (as runc's secure join does): the
/// VP's mounts never go through a symlink, and the image may have
/// `/etc -> /system/etc`. Read before the container ever ran (nothing of it
/// is the VP's yet).
pub fn resolve_in(root: &Path, dest: &str) -> Result<String, BundleError> {
    let mut todo: std::collections::VecDeque<String> = dest.split('/').map(String::from).collect();
    let mut out: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop_front() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                out.pop();
                continue;
            }
            _ => {}
        }
        let here = out
            .iter()
            .fold(root.to_path_buf(), |p, c| p.join(c))
            .join(&c);
        match std::fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err(unsupported(
                        &format!("mount {dest}"),
                        "goes through more than 40 symlinks in the image",
                    ));
                }
                let target = std::fs::read_link(&here).map_err(|source| BundleError::Read {
                    path: here.clone(),
                    source,
                })?;
                let t = target.to_string_lossy();
                if t.starts_with('/') {
                    out.clear();
                }
                for (i, part) in t.split('/').enumerate() {
                    todo.insert(i, part.to_string());
                }
            }
            _ => out.push(c),
        }
    }
    Ok(format!("/{}", out.join("/")))
}

/// The VP name of container `id`: the id itself where it is a VP name,
/// else the CRI container's (or pod's) name, made a name, with a hash of
/// the id (containerd's ids are 64 hex digits; names are at most 32).
pub fn vp_name(id: &str, annotations: &std::collections::BTreeMap<String, String>) -> String {
    if crate::name::validate("VP", id).is_ok() {
        return id.to_string();
    }
    let base = annotations
        .get(CRI_CONTAINER_NAME)
        .or_else(|| annotations.get(CRI_SANDBOX_NAME))
        .map(String::as_str)
        .unwrap_or("oci");
    let mut clean: String = base
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    clean.truncate(23);
    let clean = clean.trim_matches('-');
    let clean = if clean.is_empty() { "oci" } else { clean };
    let hash = Sha256::digest(id.as_bytes());
    let hex: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{clean}-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_layers_upper_first() {
        let mi = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
                  90 22 0:50 / /run/c/b/rootfs rw,relatime - overlay overlay rw,lowerdir=/s/2/fs:/s/1/fs,upperdir=/s/3/fs,workdir=/s/3/work\n";
        assert_eq!(
            layers(mi, Path::new("/run/c/b/rootfs")),
            vec![
                PathBuf::from("/s/3/fs"),
                PathBuf::from("/s/2/fs"),
                PathBuf::from("/s/1/fs")
            ]
        );
        // Not a mount point (a plain folder): the folder itself.
        assert_eq!(
            layers(mi, Path::new("/b/rootfs")),
            vec![PathBuf::from("/b/rootfs")]
        );
        let mi2 = "91 22 8:1 /x /a\\040b rw - ext4 /dev/sda1 rw\n";
        assert_eq!(layers(mi2, Path::new("/a b")), vec![PathBuf::from("/a b")]);
    }

    #[test]
    fn destinations_resolve_inside_the_image() {
        let d = std::env::temp_dir().join(format!("cells-resolve-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("system/etc")).unwrap();
        std::os::unix::fs::symlink("system/etc", d.join("etc")).unwrap();
        std::os::unix::fs::symlink("/../../etc", d.join("up")).unwrap();
        std::os::unix::fs::symlink("loop", d.join("loop")).unwrap();
        assert_eq!(resolve_in(&d, "/etc/hosts").unwrap(), "/system/etc/hosts");
        assert_eq!(resolve_in(&d, "/up/x").unwrap(), "/system/etc/x");
        assert_eq!(resolve_in(&d, "/new/dir").unwrap(), "/new/dir");
        assert!(resolve_in(&d, "/loop/x").is_err());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn names_of_containers() {
        let none = Default::default();
        assert_eq!(vp_name("web", &none), "web");
        let id = "3f".repeat(32);
        let n = vp_name(&id, &none);
        assert!(n.starts_with("oci-") && n.len() == 12, "{n}");
        let mut a = std::collections::BTreeMap::new();
        a.insert(CRI_CONTAINER_NAME.to_string(), "My_Phone.App".to_string());
        let n = vp_name(&id, &a);
        assert!(n.starts_with("my-phone-app-"), "{n}");
        assert!(crate::name::validate("VP", &n).is_ok());
        assert_ne!(vp_name(&"40".repeat(32), &a), n);
    }

    #[test]
    fn source_takes_process_binds_and_joined_namespaces() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"args": ["/init"], "env": ["A=1"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "hostname": "pod",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/etc/hosts", "type": "bind", "source": "/var/x/hosts", "options": ["rbind", "ro"]},
                {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue"}
            ],
            "linux": {"namespaces": [
                {"type": "pid"},
                {"type": "network", "path": "/var/run/netns/cni-1"}
            ]}
        }))
        .unwrap();
        let s = source("c1", Path::new("/b"), &spec, vec![]).unwrap();
        assert_eq!(s.args, vec!["/init"]);
        assert_eq!(s.hostname.as_deref(), Some("pod"));
        assert_eq!(s.binds.len(), 1);
        assert!(s.binds[0].readonly);
        assert_eq!(s.join[0].kind, "network");
        let mut bad = spec.clone();
        let v = serde_json::json!([{"type": "pid", "path": "/proc/1/ns/pid"}]);
        if let Some(l) = bad.linux_mut().as_mut() {
            l.set_namespaces(serde_json::from_value(v).ok());
        }
        let e = source("c1", Path::new("/b"), &bad, vec![]).unwrap_err();
        assert!(e.to_string().contains("joins only network"), "{e}");
    }
}
