//! OCI helpers for the cells-runtime tests and benchmark: bundles whose
//! root is an overlay mount (as containerd's snapshotter makes it), OCI
//! image archives made from a template's build (for `ctr images import`),
//! and Debian's containerd (unpacked into target/containerd by
//! scripts/install-deps) run with its config, state and socket in a temp
//! folder, ended by pid with the shims it started.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Cells;

/// `cells-runtime`: a link to this build's cellsd in `dir` (its name
/// selects the runtime CLI).
pub fn runtime_link(bin: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let link = dir.join("cells-runtime");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(bin.join("cellsd"), &link).unwrap();
    link
}

/// The current build of template `t` of this cellsd.
pub fn template_rootfs(c: &Cells, t: &str) -> PathBuf {
    let builds = c.state.join("templates").join(t).join("builds");
    let current = std::fs::read_link(c.state.join("templates").join(t).join("current"))
        .ok()
        .map(|p| builds.join(p.file_name().unwrap()));
    let dir = current.unwrap_or_else(|| {
        std::fs::read_dir(&builds)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.join("rootfs").is_dir())
            .expect("a build of the template")
    });
    dir.join("rootfs")
}

/// A bundle at `dir` whose root is an overlay of `lower` (a fresh upper
/// layer, as containerd's snapshotter mounts it) and whose config is
/// `config` (root.path "rootfs"). Unmounted on drop.
pub struct Bundle {
    pub dir: PathBuf,
    pub upper: PathBuf,
}

impl Bundle {
    pub fn new(dir: &Path, lower: &Path, config: &serde_json::Value) -> Bundle {
        for d in ["rootfs", "upper", "work"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            dir.join("upper").display(),
            dir.join("work").display()
        );
        let st = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(dir.join("rootfs"))
            .status()
            .unwrap();
        assert!(st.success(), "mount the bundle's overlay");
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_vec_pretty(config).unwrap(),
        )
        .unwrap();
        Bundle {
            dir: dir.to_path_buf(),
            upper: dir.join("upper"),
        }
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.join("rootfs"))
            .status();
    }
}

/// A runtime config (what `runc spec` gives, trimmed) running `args`.
pub fn config(args: &[&str], env: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "oci-box",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": env,
            "cwd": "/"
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts"},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["ro"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "resources": {"memory": {"limit": 268435456}}
        }
    })
}

fn sha256_file(p: &Path) -> String {
    let o = Command::new("sha256sum").arg(p).output().unwrap();
    assert!(o.status.success());
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// An OCI image archive (an image layout in a tar, what `ctr images
/// import` takes) of `rootfs` as one layer, named `name` (fully qualified,
/// e.g. `docker.io/cells/minimal:1`), with `cmd` as its command.
pub fn image_archive(rootfs: &Path, name: &str, cmd: &[&str], work: &Path) -> PathBuf {
    let layout = work.join("layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let layer = work.join("layer.tar");
    let st = Command::new("tar")
        .args(["--numeric-owner", "--xattrs", "-C"])
        .arg(rootfs)
        .arg("-cf")
        .arg(&layer)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "tar the layer");
    let layer_sum = sha256_file(&layer);
    let layer_size = std::fs::metadata(&layer).unwrap().len();
    std::fs::rename(&layer, blobs.join(&layer_sum)).unwrap();
    let put = |v: &serde_json::Value| -> (String, u64) {
        let data = serde_json::to_vec(v).unwrap();
        let f = work.join("blob.tmp");
        std::fs::write(&f, &data).unwrap();
        let sum = sha256_file(&f);
        std::fs::rename(&f, blobs.join(&sum)).unwrap();
        (sum, data.len() as u64)
    };
    let (cfg_sum, cfg_size) = put(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/system/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_sum}")]}
    }));
    let (man_sum, man_size) = put(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{cfg_sum}"), "size": cfg_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{layer_sum}"), "size": layer_size}]
    }));
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "digest": format!("sha256:{man_sum}"), "size": man_size,
                           "annotations": {"io.containerd.image.name": name,
                                           "org.opencontainers.image.ref.name": name.rsplit(':').next().unwrap()}}]
        }))
        .unwrap(),
    )
    .unwrap();
    let out = work.join("image.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&out)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "tar the image");
    out
}

pub fn containerd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/containerd")
}

pub fn containerd_available() -> bool {
    containerd_dir().join("usr/bin/containerd").exists()
}

/// A containerd of the test's own.
pub struct Containerd {
    child: Child,
    /// /run/containerd was not there before (ctr and the shims make
    /// folders there whatever the config says): removed again.
    made_run_dir: bool,
    /// One containerd at a time in a test process (they share /run/containerd).
    _one: std::sync::MutexGuard<'static, ()>,
    pub dir: PathBuf,
    pub socket: PathBuf,
}

impl Containerd {
    /// Start containerd with `extra` appended to its config (TOML), and
    /// `cells_socket` as the CELLS_SOCKET its shims (and so cells-runtime)
    /// get.
    pub fn start(dir: &Path, cells_socket: &Path, extra: &str) -> Containerd {
        let bin = containerd_dir().join("usr/bin");
        static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let one = ONE.lock().unwrap_or_else(|p| p.into_inner());
        let made_run_dir = !Path::new("/run/containerd").exists();
        std::fs::create_dir_all(dir).unwrap();
        let socket = dir.join("containerd.sock");
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             [grpc]\n  address = \"{sock}\"\n\
             [ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [debug]\n  address = \"{sock}.debug\"\n\
             {extra}\n",
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            sock = socket.display(),
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let path = format!(
            "{}:{}:{}",
            bin.display(),
            containerd_dir().join("usr/sbin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = Command::new(bin.join("containerd"))
            .arg("--config")
            .arg(dir.join("config.toml"))
            .env("PATH", path)
            .env("CELLS_SOCKET", cells_socket)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let c = Containerd {
            child,
            made_run_dir,
            _one: one,
            dir: dir.to_path_buf(),
            socket,
        };
        let up = Cells::wait_until(Duration::from_secs(20), || {
            c.ctr(&["version"]).status.success()
        });
        assert!(up, "containerd did not come up: {}", c.log());
        c
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    pub fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new(containerd_dir().join("usr/bin/ctr"))
            .arg("--address")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// The shims this containerd started (their -address is its socket).
    fn shims(&self) -> Vec<i32> {
        let want = self.socket.to_string_lossy().to_string();
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .map(|c| {
                        let args: Vec<String> = c
                            .split(|b| *b == 0)
                            .map(|a| String::from_utf8_lossy(a).into_owned())
                            .collect();
                        args.first().is_some_and(|a| a.contains("containerd-shim"))
                            && args.contains(&want)
                    })
                    .unwrap_or(false)
            })
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let shims = self.shims();
        // SAFETY: signalling the containerd this helper started, by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for p in shims {
            // SAFETY: a shim of this containerd (matched by its socket), by pid.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        // Whatever containerd left mounted under its root.
        if let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") {
            let root = self.dir.to_string_lossy().to_string();
            let mut points: Vec<&str> = mi
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|p| p.starts_with(&root))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = Command::new("umount").arg("-l").arg(p).status();
            }
        }
        if self.made_run_dir {
            // Made by this containerd, its ctr and its shims alone (one
            // containerd at a time here): shim sockets of killed shims too.
            let _ = std::fs::remove_dir_all("/run/containerd");
        }
    }
}

pub fn cri_client_available() -> bool {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/pylib/cri_api")
        .exists()
}

/// containerd's CRI plugin: runtime handlers `cells` (cells-runtime) and
/// `runc` (Debian's runc), the sandbox image, no CNI (pods on the host's
/// network); this VM lacks CAP_SYS_RESOURCE, hence restrict_oom_score_adj.
pub fn cri_config(work: &Path, runtime: &Path, sandbox_image: &str) -> String {
    let runc = containerd_dir().join("usr/sbin/runc");
    for d in ["cni-bin", "cni-conf"] {
        std::fs::create_dir_all(work.join(d)).unwrap();
    }
    format!(
        r#"[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        Root = "{runc_root}"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.cells]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.cells.options]
        BinaryName = "{runtime}"
        Root = "{cells_root}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
"#,
        runc = runc.display(),
        runc_root = work.join("runc-root").display(),
        runtime = runtime.display(),
        cells_root = work.join("cells-root").display(),
        cni_bin = work.join("cni-bin").display(),
        cni_conf = work.join("cni-conf").display(),
    )
}

/// A `docker save` archive made by hand: each folder of `layers` (bottom
/// first) tarred as one uncompressed layer, names kept as they are (a
/// `.wh.NAME` file is a whiteout), numeric owners kept; `cmd` the image's
/// command.
pub fn docker_archive(layers: &[&Path], cmd: &[&str], work: &Path) -> PathBuf {
    let dir = work.join("docker");
    std::fs::create_dir_all(&dir).unwrap();
    let mut names = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let name = format!("layer{i}.tar");
        let st = Command::new("tar")
            .args(["--numeric-owner", "-C"])
            .arg(l)
            .arg("-cf")
            .arg(dir.join(&name))
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success(), "tar layer {i}");
        diff_ids.push(format!("sha256:{}", sha256_file(&dir.join(&name))));
        names.push(name);
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": cmd},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::json!([{"Config": "config.json", "RepoTags": ["cells/test:1"], "Layers": names}])
            .to_string(),
    )
    .unwrap();
    let out = work.join("image-docker.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .arg("-cf")
        .arg(&out)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    out
}

pub fn registry_available() -> bool {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/registry/usr/bin/docker-registry")
        .exists()
        && Path::new("/usr/bin/skopeo").exists()
}

/// Debian's docker-registry on a free loopback port, storage in `dir`;
/// ended by pid.
pub struct Registry {
    child: Child,
    pub addr: String,
}

impl Registry {
    pub fn start(dir: &Path) -> Registry {
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let port = crate::sip::free_port();
        let addr = format!("127.0.0.1:{port}");
        let cfg = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\nlog:\n  level: warn\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("config.yml"), cfg).unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/registry/usr/bin/docker-registry"),
        )
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
        let r = Registry { child, addr };
        let up = Cells::wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(&r.addr).is_ok()
        });
        assert!(up, "the registry did not come up");
        r
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Kubernetes node for the CRI test and benchmark: containerd with its
/// CRI plugin (runtime handlers `cells` and `runc`) for the cellsd of `c`,
/// with the `minimal` template imported as `docker.io/cells/minimal:1` and
/// a sandbox ("pause") image made of it.
pub fn cri_node(c: &Cells, work: &Path) -> Containerd {
    let runtime = runtime_link(&c.bin, &work.join("bin"));
    let rootfs = template_rootfs(c, "minimal");
    let app = image_archive(
        &rootfs,
        "docker.io/cells/minimal:1",
        &["/init"],
        &work.join("app"),
    );
    let pause = image_archive(
        &rootfs,
        "docker.io/cells/pause:1",
        &[
            "/bin/sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 1; done",
        ],
        &work.join("pause"),
    );
    let ctrd = Containerd::start(
        &work.join("containerd"),
        &c.socket,
        &cri_config(work, &runtime, "docker.io/cells/pause:1"),
    );
    for img in [&app, &pause] {
        let o = ctrd.ctr(&["-n", "k8s.io", "images", "import", img.to_str().unwrap()]);
        assert!(
            o.status.success(),
            "import: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    ctrd
}
