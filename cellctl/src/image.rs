//! OCI images as templates, the client's half: `cellctl template import
//! NAME oci:DIR[:TAG] | oci-archive:FILE[:TAG] | docker-archive:FILE` and
//! `cellctl template pull NAME REF`. The image is read here, with the
//! caller's rights (archives unpacked into a private temp folder, a
//! registry's blobs downloaded there), every blob checked against its
//! digest; cellsd gets the image's config and one fd per layer, bottom
//! first, and applies them (whiteouts included) into a new template build.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::Failure;

/// A resolved image: its config (JSON) and its layers, bottom first.
pub struct Image {
    pub config: String,
    pub layers: Vec<File>,
    /// The temp folder the layers live in, if any (removed on drop).
    _tmp: Option<TempDir>,
}

/// A private temp folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, Failure> {
        let base = std::env::temp_dir().join(format!(
            "cellctl-image-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir(&base)
            .map_err(|e| Failure(format!("a temp folder {}: {e}", base.display())))?;
        std::fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| Failure(format!("chmod {}: {e}", base.display())))?;
        Ok(TempDir(base))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Open `source` (`oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`,
/// `docker-archive:FILE`).
pub fn open(source: &str) -> Result<Image, Failure> {
    let (kind, rest) = source.split_once(':').ok_or_else(|| {
        Failure(format!(
            "'{source}' names no image: give oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE"
        ))
    })?;
    match kind {
        "oci" => {
            let (dir, tag) = split_tag(rest);
            let img = from_layout(Path::new(dir), tag)?;
            Ok(img)
        }
        "oci-archive" => {
            let (file, tag) = split_tag(rest);
            let tmp = TempDir::new()?;
            untar(Path::new(file), &tmp.0)?;
            let mut img = from_layout(&tmp.0, tag)?;
            img._tmp = Some(tmp);
            Ok(img)
        }
        "docker-archive" => {
            let tmp = TempDir::new()?;
            untar(Path::new(rest), &tmp.0)?;
            let mut img = from_docker_archive(&tmp.0)?;
            img._tmp = Some(tmp);
            Ok(img)
        }
        other => Err(Failure(format!(
            "unknown image kind '{other}': give oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE"
        ))),
    }
}

/// `PATH:TAG` → (PATH, Some(TAG)); a path with no ':' has no tag.
fn split_tag(s: &str) -> (&str, Option<&str>) {
    match s.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') && !t.is_empty() => (p, Some(t)),
        _ => (s, None),
    }
}

/// Unpack an archive with GNU tar into `dir` (it refuses `..` and
/// absolute names and makes no symlink it could write through).
fn untar(archive: &Path, dir: &Path) -> Result<(), Failure> {
    let o = std::process::Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(dir)
        .args(["--no-same-owner", "--no-same-permissions"])
        .output()
        .map_err(|e| Failure(format!("running tar: {e}")))?;
    if !o.status.success() {
        return Err(Failure(format!(
            "cannot unpack {}: {}",
            archive.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    Ok(())
}

/// A regular file of the image (never through a symlink).
fn open_plain(path: &Path) -> Result<File, Failure> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Failure(format!("the image's {}: {e}", path.display())))?;
    let m = f
        .metadata()
        .map_err(|e| Failure(format!("{}: {e}", path.display())))?;
    if !m.is_file() {
        return Err(Failure(format!(
            "the image's {} is not a file",
            path.display()
        )));
    }
    Ok(f)
}

fn sha256_of(f: &mut File) -> Result<String, Failure> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Failure(format!("reading a blob: {e}")))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The hex of a `sha256:` digest (the only algorithm read).
fn sha256_hex(digest: &str) -> Result<&str, Failure> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| Failure(format!("unsupported digest '{digest}' (sha256 only)")))
}

/// A blob of an OCI layout by digest, its content checked.
fn blob(dir: &Path, digest: &str) -> Result<File, Failure> {
    let hex = sha256_hex(digest)?;
    let path = dir.join("blobs/sha256").join(hex);
    let mut f = open_plain(&path)?;
    if sha256_of(&mut f)? != hex.to_ascii_lowercase() {
        return Err(Failure(format!(
            "blob {digest} is damaged: its content does not match its digest"
        )));
    }
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(0))
        .map_err(|e| Failure(format!("seek: {e}")))?;
    Ok(f)
}

fn read_json(f: &mut File, what: &str) -> Result<serde_json::Value, Failure> {
    let mut s = String::new();
    f.read_to_string(&mut s)
        .map_err(|e| Failure(format!("reading {what}: {e}")))?;
    serde_json::from_str(&s).map_err(|e| Failure(format!("{what} is not JSON: {e}")))
}

/// This machine's architecture as OCI names it.
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// From an index's manifests: the one named `tag` (or the only one), and
/// of an image index the one for linux on this architecture.
fn pick<'a>(
    manifests: &'a [serde_json::Value],
    tag: Option<&str>,
) -> Result<&'a serde_json::Value, Failure> {
    let named = |m: &&serde_json::Value| {
        let a = &m["annotations"];
        tag.is_none_or(|t| {
            a["org.opencontainers.image.ref.name"].as_str() == Some(t)
                || a["io.containerd.image.name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with(&format!(":{t}")))
        })
    };
    let platform_ok = |m: &&serde_json::Value| {
        let p = &m["platform"];
        p.is_null() || (p["os"] == "linux" && p["architecture"] == arch())
    };
    let found: Vec<&serde_json::Value> =
        manifests.iter().filter(named).filter(platform_ok).collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(Failure(match tag {
            Some(t) => format!(
                "the image has no manifest tagged '{t}' for linux/{}",
                arch()
            ),
            None => format!("the image has no manifest for linux/{}", arch()),
        })),
        [first, ..] if tag.is_some() => Ok(first),
        _ => Err(Failure(
            "the image holds several manifests: name one with :TAG".into(),
        )),
    }
}

fn from_layout(dir: &Path, tag: Option<&str>) -> Result<Image, Failure> {
    let index = read_json(&mut open_plain(&dir.join("index.json"))?, "index.json")?;
    let mut desc = pick(
        index["manifests"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]),
        tag,
    )?
    .clone();
    // An image index inside: one more level.
    for _ in 0..4 {
        let media = desc["mediaType"].as_str().unwrap_or(MANIFEST);
        if media != INDEX && media != DOCKER_LIST {
            break;
        }
        let d = desc["digest"].as_str().unwrap_or("").to_string();
        let inner = read_json(&mut blob(dir, &d)?, "an image index")?;
        desc = pick(
            inner["manifests"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[]),
            None,
        )?
        .clone();
    }
    let d = desc["digest"].as_str().unwrap_or("").to_string();
    let manifest = read_json(&mut blob(dir, &d)?, "the manifest")?;
    let media = manifest["mediaType"].as_str().unwrap_or(MANIFEST);
    if media != MANIFEST && media != DOCKER_MANIFEST {
        return Err(Failure(format!("unsupported manifest type '{media}'")));
    }
    let cd = manifest["config"]["digest"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut config = String::new();
    blob(dir, &cd)?
        .read_to_string(&mut config)
        .map_err(|e| Failure(format!("reading the config: {e}")))?;
    let layers = manifest["layers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|l| blob(dir, l["digest"].as_str().unwrap_or("")))
        .collect::<Result<Vec<_>, _>>()?;
    if layers.is_empty() {
        return Err(Failure("the image has no layers".into()));
    }
    Ok(Image {
        config,
        layers,
        _tmp: None,
    })
}

/// `docker save`'s format: manifest.json names the config and the layers
/// (files of the archive).
fn from_docker_archive(dir: &Path) -> Result<Image, Failure> {
    let m = read_json(
        &mut open_plain(&dir.join("manifest.json"))?,
        "manifest.json",
    )?;
    let entries = m.as_array().map(Vec::as_slice).unwrap_or(&[]);
    let [entry] = entries else {
        return Err(Failure(format!(
            "the docker archive holds {} images: cells imports archives of one",
            entries.len()
        )));
    };
    let inside = |p: &str| -> Result<PathBuf, Failure> {
        if p.starts_with('/') || p.split('/').any(|c| c == "..") {
            return Err(Failure(format!("the archive names '{p}', outside itself")));
        }
        Ok(dir.join(p))
    };
    let mut config = String::new();
    open_plain(&inside(entry["Config"].as_str().unwrap_or(""))?)?
        .read_to_string(&mut config)
        .map_err(|e| Failure(format!("reading the config: {e}")))?;
    let layers = entry["Layers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|l| open_plain(&inside(l.as_str().unwrap_or(""))?))
        .collect::<Result<Vec<_>, _>>()?;
    if layers.is_empty() {
        return Err(Failure("the image has no layers".into()));
    }
    Ok(Image {
        config,
        layers,
        _tmp: None,
    })
}

/// A registry reference: `[http://|https://]HOST[:PORT]/REPO[:TAG|@DIGEST]`
/// (no scheme: plain HTTP for localhost and 127.0.0.1, HTTPS elsewhere).
#[derive(Debug, PartialEq)]
pub struct Reference {
    pub base: String,
    pub repo: String,
    pub reference: String,
}

pub fn parse_reference(r: &str) -> Result<Reference, Failure> {
    let bad = || {
        Failure(format!(
            "'{r}' is not an image reference: give HOST[:PORT]/REPO[:TAG] (e.g. 127.0.0.1:5000/cells/minimal:1)"
        ))
    };
    let (scheme, rest) = match r.split_once("://") {
        Some((s @ ("http" | "https"), rest)) => (Some(s), rest),
        Some(_) => return Err(bad()),
        None => (None, r),
    };
    let (host, path) = rest.split_once('/').ok_or_else(bad)?;
    if host.is_empty() || path.is_empty() {
        return Err(bad());
    }
    let (repo, reference) = if let Some((p, d)) = path.split_once('@') {
        (p, d)
    } else {
        match path.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p, t),
            _ => (path, "latest"),
        }
    };
    if repo.is_empty()
        || !repo
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c))
    {
        return Err(bad());
    }
    let local =
        host.starts_with("localhost") || host.starts_with("127.") || host.starts_with("[::1]");
    let scheme = scheme.unwrap_or(if local { "http" } else { "https" });
    Ok(Reference {
        base: format!("{scheme}://{host}"),
        repo: repo.to_string(),
        reference: reference.to_string(),
    })
}

/// A registry client: anonymous, with the bearer token a registry asks for.
struct Registry {
    agent: ureq::Agent,
    token: Option<String>,
}

impl Registry {
    fn get(&mut self, url: &str, accept: &str) -> Result<ureq::Response, Failure> {
        for _ in 0..2 {
            let mut req = self.agent.get(url).set("Accept", accept);
            if let Some(t) = &self.token {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
            match req.call() {
                Ok(r) => return Ok(r),
                Err(ureq::Error::Status(401, r)) if self.token.is_none() => {
                    let challenge = r.header("www-authenticate").unwrap_or("").to_string();
                    self.token = Some(self.fetch_token(&challenge)?);
                }
                Err(ureq::Error::Status(code, r)) => {
                    return Err(Failure(format!(
                        "{url}: the registry answered {code} {}",
                        r.status_text()
                    )))
                }
                Err(e) => return Err(Failure(format!("{url}: {e}"))),
            }
        }
        Err(Failure(format!(
            "{url}: the registry refused the token it gave"
        )))
    }

    /// `Bearer realm="…",service="…",scope="…"` → an anonymous token.
    fn fetch_token(&self, challenge: &str) -> Result<String, Failure> {
        let params = challenge.strip_prefix("Bearer ").ok_or_else(|| {
            Failure(format!(
                "the registry wants authentication cells does not do ({challenge}); pull with skopeo into an oci-archive and import that"
            ))
        })?;
        let mut realm = None;
        let mut query = Vec::new();
        for part in params.split(',') {
            let Some((k, v)) = part.trim().split_once('=') else {
                continue;
            };
            let v = v.trim_matches('"');
            if k == "realm" {
                realm = Some(v.to_string());
            } else {
                query.push((k.to_string(), v.to_string()));
            }
        }
        let realm = realm.ok_or_else(|| Failure("the registry's challenge has no realm".into()))?;
        let mut req = self.agent.get(&realm);
        for (k, v) in &query {
            req = req.query(k, v);
        }
        let v: serde_json::Value = req
            .call()
            .map_err(|e| Failure(format!("token from {realm}: {e}")))?
            .into_json()
            .map_err(|e| Failure(format!("token from {realm}: {e}")))?;
        v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .map(String::from)
            .ok_or_else(|| Failure(format!("{realm} gave no token")))
    }
}

/// Download `reference` into a temp OCI layout (every blob checked against
/// its digest) and open it. `progress(done, total, what)`.
pub fn pull(reference: &str, mut progress: impl FnMut(u64, u64, &str)) -> Result<Image, Failure> {
    let r = parse_reference(reference)?;
    let tmp = TempDir::new()?;
    let blobs = tmp.0.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| Failure(format!("mkdir: {e}")))?;
    let mut reg = Registry {
        agent: ureq::AgentBuilder::new()
            .timeout_connect(std::time::Duration::from_secs(10))
            .build(),
        token: None,
    };
    let accept = [MANIFEST, DOCKER_MANIFEST, INDEX, DOCKER_LIST].join(", ");
    // The manifest (through an index to this platform's).
    let mut want = r.reference.clone();
    let (manifest, mdigest) = loop {
        let url = format!("{}/v2/{}/manifests/{want}", r.base, r.repo);
        let resp = reg.get(&url, &accept)?;
        let mut body = Vec::new();
        resp.into_reader()
            .take(4 << 20)
            .read_to_end(&mut body)
            .map_err(|e| Failure(format!("{url}: {e}")))?;
        let digest = format!(
            "sha256:{}",
            Sha256::digest(&body)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        if want.starts_with("sha256:") && want != digest {
            return Err(Failure(format!(
                "{url}: the manifest does not match its digest"
            )));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| Failure(format!("{url}: {e}")))?;
        let media = v["mediaType"].as_str().unwrap_or(MANIFEST);
        if media == INDEX || media == DOCKER_LIST {
            let m = pick(
                v["manifests"].as_array().map(Vec::as_slice).unwrap_or(&[]),
                None,
            )?;
            want = m["digest"].as_str().unwrap_or("").to_string();
            continue;
        }
        std::fs::write(blobs.join(digest.trim_start_matches("sha256:")), &body)
            .map_err(|e| Failure(format!("saving the manifest: {e}")))?;
        break (v, digest);
    };
    let mut wanted = vec![manifest["config"].clone()];
    wanted.extend(manifest["layers"].as_array().cloned().unwrap_or_default());
    let total: u64 = wanted.iter().filter_map(|d| d["size"].as_u64()).sum();
    let mut done = 0u64;
    for d in &wanted {
        let digest = d["digest"].as_str().unwrap_or("");
        let hex = sha256_hex(digest)?;
        let url = format!("{}/v2/{}/blobs/{digest}", r.base, r.repo);
        let resp = reg.get(&url, "*/*")?;
        let mut out =
            File::create(blobs.join(hex)).map_err(|e| Failure(format!("saving {digest}: {e}")))?;
        let mut reader = resp.into_reader();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| Failure(format!("{url}: {e}")))?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])
                .map_err(|e| Failure(format!("saving {digest}: {e}")))?;
            done += n as u64;
            progress(done, total.max(done), "download");
        }
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": manifest["mediaType"].as_str().unwrap_or(MANIFEST),
                       "digest": mdigest, "size": 0}]
    });
    std::fs::write(tmp.0.join("index.json"), index.to_string())
        .map_err(|e| Failure(format!("index.json: {e}")))?;
    let mut img = from_layout(&tmp.0, None)?;
    img._tmp = Some(tmp);
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = parse_reference("127.0.0.1:5000/cells/minimal:1").unwrap();
        assert_eq!(
            r,
            Reference {
                base: "http://127.0.0.1:5000".into(),
                repo: "cells/minimal".into(),
                reference: "1".into()
            }
        );
        let r = parse_reference("registry.example/a/b").unwrap();
        assert_eq!(
            (r.base.as_str(), r.reference.as_str()),
            ("https://registry.example", "latest")
        );
        let r = parse_reference("http://reg:80/x@sha256:abc").unwrap();
        assert_eq!(r.reference, "sha256:abc");
        assert!(parse_reference("nohost").is_err());
        assert!(parse_reference("ftp://h/x").is_err());
        assert!(parse_reference("h/UPPER").is_err());
        assert_eq!(split_tag("/a/b:1"), ("/a/b", Some("1")));
        assert_eq!(split_tag("/a/b"), ("/a/b", None));
    }
}
