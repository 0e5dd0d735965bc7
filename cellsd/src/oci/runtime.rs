//! `cells-runtime`: an OCI runtime CLI (the commands and flags containerd's
//! `io.containerd.runc.v2` shim calls on runc) whose containers are cells
//! VPs. It is the cellsd binary under another name (a link), so that the
//! processes the shim must reap are its own children:
//!
//! - `create` spawns the VP's monitor (`cellsd __monitor --oci-stdio`,
//!   with the runtime's stdio as the container's) and hands it to cellsd
//!   (`OciCreate`), which makes the VP and drives the start; the pid file
//!   gets the monitor's pid. When `create` exits the monitor is reparented
//!   to the shim (a subreaper); it ends with the container's init and with
//!   its exit status (128+N for signal N), so the shim sees the exit.
//! - `start` opens the exec fifo the init waits at.
//! - `exec` spawns the exec helper (`cellsd __exec`) and hands its request
//!   socket and the runtime's stdio to cellsd (`OciExec`); the pid file gets
//!   the helper's pid (it forwards signals and exits with the command's
//!   status).
//! - `state`, `kill`, `ps`, `delete`, `pause`, `resume`, `update`,
//!   `features` act on the VP through cellsd and its run state.
//!
//! A container's record (`<root>/<id>/state.json`: its VP, bundle, creation
//! time) is what maps containerd's ids to VP names.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::bundle;
use crate::api::Manager1Proxy;

/// The fifo a created container's init waits at (in the VP's run dir).
pub const EXEC_FIFO: &str = "exec.fifo";
/// Where records live without `--root`.
pub const DEFAULT_ROOT: &str = "/run/cells-runtime";
/// What this runtime is called (argv[0]'s file name selects it).
pub const NAME: &str = "cells-runtime";

/// A failure: the message says what was wrong and what to do.
#[derive(Debug)]
pub struct Failure(pub String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

fn fail<T>(msg: impl Into<String>) -> Result<T, Failure> {
    Err(Failure(msg.into()))
}

/// The global flags (runc's).
#[derive(Debug, Clone, Default)]
struct Global {
    root: PathBuf,
    log: Option<PathBuf>,
    json_log: bool,
    socket: PathBuf,
}

/// What `<root>/<id>/state.json` records of a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: String,
    vp: String,
    bundle: PathBuf,
    /// RFC 3339.
    created: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    /// The VP's monitor (the pid containerd knows the container by).
    #[serde(default)]
    monitor: i32,
}

impl Record {
    /// The container's OCI state with `status` and init `pid`.
    fn state(&self, status: &'static str, pid: u32) -> State {
        State {
            oci_version: "1.0.2",
            id: self.id.clone(),
            status,
            pid,
            rootfs: self.bundle.join("rootfs"),
            bundle: self.bundle.clone(),
            created: self.created.clone(),
            owner: "",
            annotations: self.annotations.clone(),
        }
    }
}

/// The OCI state of a container (`state`).
#[derive(Debug, Serialize)]
struct State {
    #[serde(rename = "ociVersion")]
    oci_version: &'static str,
    id: String,
    status: &'static str,
    pid: u32,
    bundle: PathBuf,
    rootfs: PathBuf,
    created: String,
    owner: &'static str,
    annotations: BTreeMap<String, String>,
}

/// Entry point: `argv` without the program name. Returns the exit code.
pub fn main(argv: Vec<String>) -> i32 {
    let mut g = Global {
        root: PathBuf::from(DEFAULT_ROOT),
        socket: std::env::var_os("CELLS_SOCKET")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(crate::api::paths::DEFAULT_RUN_DIR).join(crate::api::paths::SOCKET_NAME)
            }),
        ..Default::default()
    };
    let mut args = argv.into_iter().peekable();
    let mut command = None;
    let parsed: Result<(), Failure> = (|| {
        while let Some(a) = args.next() {
            let (flag, inline) = match a.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (a.clone(), None),
            };
            let mut value = |name: &str| -> Result<String, Failure> {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| Failure(format!("{name} needs a value")))
            };
            match flag.as_str() {
                "--root" => g.root = PathBuf::from(value("--root")?),
                "--log" => g.log = Some(PathBuf::from(value("--log")?)),
                "--log-format" => g.json_log = value("--log-format")? == "json",
                "--socket" => g.socket = PathBuf::from(value("--socket")?),
                // runc's flags that change nothing here.
                "--debug" | "--systemd-cgroup" | "--rootless" => {}
                "--criu" => {
                    value("--criu")?;
                }
                "--version" | "-v" => {
                    command = Some("--version".to_string());
                    return Ok(());
                }
                f if f.starts_with('-') => {
                    return fail(format!("unknown global flag {f} (see `{NAME} --help`)"))
                }
                _ => {
                    command = Some(a);
                    return Ok(());
                }
            }
        }
        Ok(())
    })();
    let rest: Vec<String> = args.collect();
    let result = parsed.and_then(|_| match command.as_deref() {
        None | Some("help") | Some("--help") => {
            println!("{}", usage());
            Ok(0)
        }
        Some("--version") => {
            println!("{NAME} version {}\nspec: 1.0.2", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        Some("features") => features(),
        Some(cmd) => run_command(&g, cmd, rest),
    });
    match result {
        Ok(code) => code,
        Err(Failure(msg)) => {
            log_error(&g, &msg);
            1
        }
    }
}

fn usage() -> String {
    format!(
        "{NAME}: an OCI runtime whose containers are cells VPs (for containerd's runc shim)\n\
         usage: {NAME} [--root DIR] [--log FILE] [--log-format json|text] [--socket CELLSD-SOCKET] COMMAND\n\
         commands: create, start, state, kill, delete, ps, exec, pause, resume, update, features"
    )
}

/// An error on stderr and, with `--log`, in the log (JSON lines with
/// `--log-format json`: containerd's shim reports the last one).
fn log_error(g: &Global, msg: &str) {
    eprintln!("{NAME}: {msg}");
    let Some(path) = &g.log else { return };
    let line = if g.json_log {
        serde_json::json!({"level": "error", "msg": msg, "time": now_rfc3339()}).to_string()
    } else {
        format!("{} error: {msg}", now_rfc3339())
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs(), d.subsec_nanos())
}

/// Unix time as RFC 3339 in UTC.
fn rfc3339(secs: u64, nanos: u32) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `features`: what this runtime supports (runtime-spec's features.json).
fn features() -> Result<i32, Failure> {
    let f = serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.0.2",
        "hooks": ["createRuntime", "prestart", "poststart", "poststop"],
        "mountOptions": ["ro", "rw", "bind", "rbind", "nosuid", "nodev", "noexec"],
        "linux": {
            "namespaces": ["pid", "network", "ipc", "uts", "mount", "user", "cgroup"],
            "capabilities": crate::config::CAP_NAMES,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {"enabled": true},
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false}
        },
        "annotations": {
            "org.cells.runtime": "cells",
            "org.cells.runtime.userns": "always: VP root is an unprivileged host id range"
        }
    });
    println!("{}", serde_json::to_string_pretty(&f)?);
    Ok(0)
}

/// A command's own flags and its positional arguments.
struct Parsed {
    flags: BTreeMap<String, String>,
    positional: Vec<String>,
}

/// Parse `args` with `valued` flags taking a value and `bools` not; short
/// aliases map to long names.
fn parse(
    args: Vec<String>,
    valued: &[&str],
    bools: &[&str],
    alias: &[(&str, &str)],
) -> Result<Parsed, Failure> {
    let mut flags = BTreeMap::new();
    let mut positional = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if !positional.is_empty() || !a.starts_with('-') || a == "-" {
            positional.push(a);
            continue;
        }
        if a == "--" {
            positional.extend(it.by_ref());
            break;
        }
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (a.clone(), None),
        };
        let name = alias
            .iter()
            .find(|(s, _)| *s == name)
            .map(|(_, l)| l.to_string())
            .unwrap_or(name);
        let key = name.trim_start_matches('-').to_string();
        if valued.contains(&key.as_str()) {
            let v = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .ok_or_else(|| Failure(format!("--{key} needs a value")))?,
            };
            flags.insert(key, v);
        } else if bools.contains(&key.as_str()) {
            flags.insert(key, inline.unwrap_or_else(|| "true".into()));
        } else {
            return fail(format!("unknown flag {a}"));
        }
    }
    Ok(Parsed { flags, positional })
}

impl Parsed {
    fn id(&self) -> Result<&str, Failure> {
        let id = self
            .positional
            .first()
            .ok_or_else(|| Failure("no container id given".into()))?;
        check_id(id)?;
        Ok(id)
    }
    fn on(&self, k: &str) -> bool {
        self.flags.get(k).is_some_and(|v| v != "false")
    }
}

/// Container ids: what runc accepts.
fn check_id(id: &str) -> Result<(), Failure> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c));
    if ok {
        Ok(())
    } else {
        fail(format!(
            "invalid container id {id:?}: use letters, digits, '_', '+', '-' and '.'"
        ))
    }
}

fn run_command(g: &Global, cmd: &str, args: Vec<String>) -> Result<i32, Failure> {
    match cmd {
        "create" => {
            let p = parse(
                args,
                &["bundle", "pid-file", "console-socket", "preserve-fds"],
                &["no-pivot", "no-new-keyring"],
                &[("-b", "--bundle")],
            )?;
            create(g, &p)
        }
        "start" => start(g, parse(args, &[], &[], &[])?.id()?),
        "state" => state(g, parse(args, &[], &[], &[])?.id()?),
        "kill" => {
            let p = parse(args, &[], &["all"], &[("-a", "--all")])?;
            let sig = p.positional.get(1).map(String::as_str).unwrap_or("SIGTERM");
            kill(g, p.id()?, signal_number(sig)?, p.on("all"))
        }
        "delete" => {
            let p = parse(args, &[], &["force"], &[("-f", "--force")])?;
            delete(g, p.id()?, p.on("force"))
        }
        "ps" => {
            let p = parse(args, &["format"], &[], &[("-f", "--format")])?;
            ps(
                g,
                p.id()?,
                p.flags.get("format").map(String::as_str) == Some("json"),
            )
        }
        "exec" => {
            let p = parse(
                args,
                &[
                    "process",
                    "pid-file",
                    "console-socket",
                    "cwd",
                    "env",
                    "user",
                    "preserve-fds",
                ],
                &["detach", "tty", "no-new-privs"],
                &[
                    ("-p", "--process"),
                    ("-d", "--detach"),
                    ("-t", "--tty"),
                    ("-e", "--env"),
                    ("-u", "--user"),
                ],
            )?;
            exec(g, &p)
        }
        "pause" => freeze(g, parse(args, &[], &[], &[])?.id()?, true),
        "resume" => freeze(g, parse(args, &[], &[], &[])?.id()?, false),
        "update" => {
            let p = parse(
                args,
                &[
                    "resources",
                    "memory",
                    "pids-limit",
                    "cpu-quota",
                    "cpu-period",
                ],
                &[],
                &[("-r", "--resources")],
            )?;
            update(g, &p)
        }
        other => fail(format!("unknown command '{other}' (see `{NAME} --help`)")),
    }
}

/// A signal by name (`KILL`, `SIGKILL`) or number.
fn signal_number(s: &str) -> Result<i32, Failure> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let name = s.strip_prefix("SIG").unwrap_or(s).to_ascii_uppercase();
    let n = match name.as_str() {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "WINCH" => libc::SIGWINCH,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        _ => {
            return fail(format!(
                "unknown signal {s:?}: give a name such as TERM or a number"
            ))
        }
    };
    Ok(n)
}

fn record_dir(g: &Global, id: &str) -> PathBuf {
    g.root.join(id)
}

fn load_record(g: &Global, id: &str) -> Result<Record, Failure> {
    let path = record_dir(g, id).join("state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Failure(format!("container {id} does not exist"))
        } else {
            Failure(format!("reading {}: {e}", path.display()))
        }
    })?;
    serde_json::from_str(&text).map_err(|e| Failure(format!("{}: {e}", path.display())))
}

/// The VP's run dir (cellsd's run dir is its socket's folder).
fn vp_run_dir(g: &Global, vp: &str) -> PathBuf {
    g.socket
        .parent()
        .unwrap_or(Path::new("/"))
        .join("vps")
        .join(vp)
}

/// Write `path` whole (a temp file renamed over it).
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), Failure> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(|e| Failure(format!("writing {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| Failure(format!("writing {}: {e}", path.display())))?;
    Ok(())
}

/// Run `f` with a D-Bus connection to cellsd (a runtime of its own: the
/// command's children are spawned before it exists).
fn with_cellsd<T>(
    g: &Global,
    f: impl AsyncFnOnce(&Manager1Proxy<'static>) -> Result<T, Failure>,
) -> Result<T, Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let stream = tokio::net::UnixStream::connect(&g.socket)
            .await
            .map_err(|e| {
                Failure(format!(
                "cannot reach cellsd at {} ({e}): start cellsd, or point {NAME} at its socket with \
                 --socket PATH or CELLS_SOCKET",
                g.socket.display()
            ))
            })?;
        let conn = zbus::connection::Builder::unix_stream(stream)
            .p2p()
            .build()
            .await?;
        let proxy = Manager1Proxy::builder(&conn)
            .destination("org.cells")?
            .build()
            .await?;
        f(&proxy).await
    })
}

fn dbus_err(e: zbus::Error) -> Failure {
    match e {
        zbus::Error::MethodError(_, Some(msg), _) => Failure(msg),
        other => Failure(other.to_string()),
    }
}

fn create(g: &Global, p: &Parsed) -> Result<i32, Failure> {
    let id = p.id()?.to_string();
    if p.flags.contains_key("console-socket") {
        return fail(
            "a terminal (--console-socket) is not supported: run the container without one \
             (`ctr run` without -t); `cellctl console VP` gives the VP's console",
        );
    }
    let dir = record_dir(g, &id);
    if dir.exists() {
        return fail(format!("container {id} already exists"));
    }
    let bundle = match p.flags.get("bundle") {
        Some(b) => PathBuf::from(b),
        None => std::env::current_dir()?,
    };
    let bundle = bundle
        .canonicalize()
        .map_err(|e| Failure(format!("bundle {}: {e}", bundle.display())))?;
    let spec = bundle::load(&bundle)?;
    if let Some(h) = spec.hooks() {
        let inside = h.create_container().as_ref().is_some_and(|v| !v.is_empty())
            || h.start_container().as_ref().is_some_and(|v| !v.is_empty());
        if inside {
            return fail(
                "the bundle has createContainer/startContainer hooks, which run inside the container: \
                 cells-runtime does not run host programs in a VP; use createRuntime/prestart/poststart hooks",
            );
        }
    }
    let root = bundle::root_path(&bundle, &spec);
    let root = root
        .canonicalize()
        .map_err(|e| Failure(format!("the bundle's root {}: {e}", root.display())))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let layers = bundle::layers(&mountinfo, &root);
    if let Some(bad) = layers.iter().find(|l| {
        let s = l.to_string_lossy();
        s.contains(',') || s.contains(':') || s.contains('\\')
    }) {
        return fail(format!(
            "the root's layer {} has ',', ':' or '\\' in its path, which overlayfs cannot take",
            bad.display()
        ));
    }
    let mut source = bundle::source(&id, &bundle, &spec, layers)?;
    for b in source.binds.iter_mut() {
        b.destination = bundle::resolve_in(&root, &b.destination)?;
    }
    resolve_joins(g, &mut source)?;
    let vp = bundle::vp_name(&id, &source.annotations);
    let mut opts = crate::config::CreateOptions::default();
    bundle::resource_options(&spec, &mut opts);

    // The monitor: spawned here (its parent is the shim once we exit),
    // with our stdio as the container's (fds 3, 4, 5).
    let (in_r, in_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.arg("__monitor")
        .arg("--oci-stdio")
        .stdin(std::process::Stdio::from(in_r))
        .stdout(std::process::Stdio::from(out_w));
    // Copies of our stdio (the child's 0 and 1 are the pipes by the time
    // pre_exec runs).
    let stdio: Vec<i32> = [
        std::io::stdin().as_fd().try_clone_to_owned()?,
        std::io::stdout().as_fd().try_clone_to_owned()?,
        std::io::stderr().as_fd().try_clone_to_owned()?,
    ]
    .into_iter()
    .map(std::os::fd::IntoRawFd::into_raw_fd)
    .collect();
    // SAFETY: only dup2 (async-signal-safe) between fork and exec; this
    // process is single-threaded here.
    unsafe {
        cmd.pre_exec(move || {
            for (i, fd) in stdio.iter().enumerate() {
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| Failure(format!("spawning the VP's monitor: {e}")))?;
    let pid = child.id() as i32;
    let pidfd = crate::sys::pidfd_open(pid)?;
    let mut options: std::collections::HashMap<&str, zbus::zvariant::Value<'_>> =
        std::collections::HashMap::new();
    if let Some(m) = opts.memory {
        options.insert("memory", zbus::zvariant::Value::from(m.to_string()));
    }
    if let Some(c) = opts.cpus {
        options.insert("cpus", zbus::zvariant::Value::from(c));
    }
    if let Some(n) = opts.pids {
        options.insert("pids", zbus::zvariant::Value::from(n));
    }
    if source.is_sandbox() {
        // A pod's sandbox only holds the pod's namespaces: no devices (and
        // so never the foreground).
        let none: Vec<String> = crate::devices::registry::specs()
            .map(|d| format!("{}=none", d.name))
            .collect();
        options.insert("devices", zbus::zvariant::Value::from(none.join(",")));
    }
    if source.join.iter().any(|j| j.kind == "network") {
        // The pod's network namespace is its network (CNI's).
        options.insert("network", zbus::zvariant::Value::from("none"));
    }
    let oci_json = serde_json::to_string(&source)?;
    let created = with_cellsd(g, async |m| {
        m.oci_create(
            &vp,
            options,
            &oci_json,
            zbus::zvariant::Fd::from(&in_w),
            zbus::zvariant::Fd::from(&out_r),
            zbus::zvariant::Fd::from(&pidfd),
        )
        .await
        .map_err(dbus_err)
    });
    drop((in_w, out_r));
    if let Err(e) = created {
        let _ = crate::sys::pidfd_send_signal(&pidfd, libc::SIGKILL);
        let mut child = child;
        let _ = child.wait();
        return Err(e);
    }
    let record = Record {
        id: id.clone(),
        vp: vp.clone(),
        bundle: bundle.clone(),
        created: now_rfc3339(),
        annotations: source.annotations.clone(),
        monitor: pid,
    };
    std::fs::create_dir_all(&g.root)?;
    std::fs::create_dir(&dir).map_err(|e| Failure(format!("{}: {e}", dir.display())))?;
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    write_atomic(
        &dir.join("state.json"),
        serde_json::to_string_pretty(&record)?.as_bytes(),
    )?;
    if let Some(pf) = p.flags.get("pid-file") {
        write_atomic(Path::new(pf), pid.to_string().as_bytes())?;
    }
    let (_, init) = status_of(g, &record)?;
    if let Err(e) = run_hooks(&record, "createRuntime", "created", init) {
        // A failing hook: the container is ended and removed, naming why.
        let _ = crate::sys::pidfd_send_signal(&pidfd, libc::SIGKILL);
        let mut child = child;
        let _ = child.wait();
        let _ = delete(g, &id, true);
        return Err(e);
    }
    // Not waited for: the shim reaps it.
    std::mem::forget(child);
    Ok(0)
}

/// The namespaces a container joins, checked: `/proc/PID/ns/KIND` of a
/// cells container's monitor (the pid containerd knows a sandbox by) means
/// that VP's namespace (its init's); a namespace of the host (this
/// runtime's own) is refused: a VP never shares one.
fn resolve_joins(g: &Global, source: &mut super::OciSource) -> Result<(), Failure> {
    let records: Vec<Record> = std::fs::read_dir(&g.root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("state.json")).ok())
        .filter_map(|t| serde_json::from_str(&t).ok())
        .collect();
    let ns_id = |p: &Path| {
        std::fs::metadata(p).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino())
        })
    };
    for j in source.join.iter_mut() {
        let proc_kind = match j.kind.as_str() {
            "network" => "net",
            other => other,
        };
        let pid = j
            .path
            .strip_prefix("/proc")
            .ok()
            .and_then(|rest| rest.iter().next())
            .and_then(|p| p.to_str())
            .and_then(|p| p.parse::<i32>().ok());
        if let Some(r) = pid.and_then(|p| records.iter().find(|r| r.monitor == p)) {
            let (_, init) = status_of(g, r)?;
            if init == 0 {
                return fail(format!(
                    "the {} namespace to join is container {}'s, which is not running",
                    j.kind, r.id
                ));
            }
            j.path = PathBuf::from(format!("/proc/{init}/ns/{proc_kind}"));
        }
        let theirs = ns_id(&j.path).ok_or_else(|| {
            Failure(format!(
                "the {} namespace {} does not exist",
                j.kind,
                j.path.display()
            ))
        })?;
        if ns_id(Path::new(&format!("/proc/self/ns/{proc_kind}"))) == Some(theirs) {
            return fail(format!(
                "the bundle joins the host's {} namespace ({}): a VP never shares the host's namespaces",
                j.kind,
                j.path.display()
            ));
        }
    }
    Ok(())
}

/// The bundle's hooks of `kind` (`createRuntime`, `prestart`, `poststart`,
/// `poststop`), run here in order with the container's state on stdin,
/// each within its timeout. cells-runtime runs the hooks that run in the
/// runtime's namespaces; `createContainer` and `startContainer` (which run
/// inside the container) are refused at create.
fn run_hooks(r: &Record, kind: &str, status: &'static str, pid: u32) -> Result<(), Failure> {
    let Ok(spec) = bundle::load(&r.bundle) else {
        return Ok(());
    };
    let Some(hooks) = spec.hooks().as_ref() else {
        return Ok(());
    };
    #[allow(deprecated)]
    let list = match kind {
        "createRuntime" => hooks.create_runtime().clone(),
        "prestart" => hooks.prestart().clone(),
        "poststart" => hooks.poststart().clone(),
        "poststop" => hooks.poststop().clone(),
        _ => None,
    };
    let state = serde_json::to_vec(&r.state(status, pid))?;
    for h in list.unwrap_or_default() {
        let path = h.path();
        let args = h.args().clone().unwrap_or_default();
        let mut cmd = std::process::Command::new(path);
        if let Some((arg0, rest)) = args.split_first() {
            cmd.arg0(arg0).args(rest);
        }
        cmd.env_clear()
            .envs(h.env().iter().flatten().filter_map(|e| e.split_once('=')))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| Failure(format!("{kind} hook {}: {e}", path.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(&state);
        }
        let deadline = h
            .timeout()
            .filter(|t| *t > 0)
            .map(|t| std::time::Instant::now() + Duration::from_secs(t as u64));
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if deadline.is_some_and(|d| std::time::Instant::now() > d) {
                let _ = child.kill();
                let _ = child.wait();
                return fail(format!("{kind} hook {} timed out", path.display()));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if !status.success() {
            return fail(format!("{kind} hook {} failed ({status})", path.display()));
        }
    }
    Ok(())
}

fn start(g: &Global, id: &str) -> Result<i32, Failure> {
    let r = load_record(g, id)?;
    let fifo = vp_run_dir(g, &r.vp).join(EXEC_FIFO);
    if !fifo.exists() {
        return fail(format!(
            "container {id} is not in the created state (already started, or stopped)"
        ));
    }
    let (_, pid) = status_of(g, &r)?;
    // Before the program runs; a failing hook ends the container.
    if let Err(e) = run_hooks(&r, "prestart", "created", pid) {
        if let Ok(fd) = crate::sys::pidfd_open(pid as i32) {
            let _ = crate::sys::pidfd_send_signal(&fd, libc::SIGKILL);
        }
        return Err(e);
    }
    let code = open_exec_fifo(g, id, &r, &fifo)?;
    if let Err(e) = run_hooks(&r, "poststart", "running", pid) {
        // The container runs on (the spec: a warning).
        eprintln!("{NAME}: warning: {}", e.0);
    }
    Ok(code)
}

fn open_exec_fifo(g: &Global, id: &str, r: &Record, fifo: &Path) -> Result<i32, Failure> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(fifo)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Failure(format!(
                    "container {id} is not in the created state (already started, or stopped)"
                ))
            } else {
                Failure(format!("opening {}: {e}", fifo.display()))
            }
        })?;
    let _ = std::fs::remove_file(fifo);
    // The init writes one byte once it has the fifo open; it may have died.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut pfd = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 100) };
        if n > 0 && pfd.revents & libc::POLLIN != 0 {
            let mut b = [0u8; 1];
            if let Ok(1) = (&f).read(&mut b) {
                return Ok(0);
            }
        }
        if std::time::Instant::now() > deadline {
            return fail(format!("container {id}'s init did not start within 30 s"));
        }
        let info = with_cellsd(g, async |m| m.status(&r.vp).await.map_err(dbus_err))?;
        if info.pid == 0 {
            return fail(format!("container {id}'s init ended before it started"));
        }
    }
}

/// The container's status and init pid, by its VP.
fn status_of(g: &Global, r: &Record) -> Result<(&'static str, u32), Failure> {
    let info = with_cellsd(g, async |m| Ok(m.status(&r.vp).await))?;
    let info = match info {
        Ok(i) => i,
        // The VP is gone (destroyed, or cellsd lost it): stopped.
        Err(_) => return Ok(("stopped", 0)),
    };
    let fifo = vp_run_dir(g, &r.vp).join(EXEC_FIFO);
    let status = match info.state.as_str() {
        "starting" => "creating",
        "running" | "frozen" if info.frozen => "paused",
        "running" if fifo.exists() => "created",
        "running" => "running",
        _ => "stopped",
    };
    Ok((status, if status == "stopped" { 0 } else { info.pid }))
}

fn state(g: &Global, id: &str) -> Result<i32, Failure> {
    let r = load_record(g, id)?;
    let (status, pid) = status_of(g, &r)?;
    let s = r.state(status, pid);
    println!("{}", serde_json::to_string_pretty(&s)?);
    Ok(0)
}

/// The host pids of the processes in the pid namespace of `init`.
fn pids_of(init: u32) -> Vec<i32> {
    let ns = |pid: &str| {
        std::fs::metadata(format!("/proc/{pid}/ns/pid"))
            .ok()
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino())
            })
    };
    let Some(theirs) = ns(&init.to_string()) else {
        return Vec::new();
    };
    let mut out: Vec<i32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|p| ns(&p.to_string()) == Some(theirs))
        .collect();
    out.sort_unstable();
    out
}

fn kill(g: &Global, id: &str, sig: i32, all: bool) -> Result<i32, Failure> {
    let r = load_record(g, id)?;
    let (status, pid) = status_of(g, &r)?;
    if status == "stopped" || pid == 0 {
        // runc's words: containerd's shim takes them for "already ended".
        return fail(format!("container not running: {id} has ended"));
    }
    let targets = if all { pids_of(pid) } else { vec![pid as i32] };
    for p in targets {
        if let Ok(fd) = crate::sys::pidfd_open(p) {
            let _ = crate::sys::pidfd_send_signal(&fd, sig);
        }
    }
    Ok(0)
}

fn delete(g: &Global, id: &str, force: bool) -> Result<i32, Failure> {
    let r = match load_record(g, id) {
        Ok(r) => r,
        Err(_) if force => return Ok(0),
        Err(e) => return Err(e),
    };
    let (status, pid) = status_of(g, &r)?;
    if !force && !matches!(status, "stopped" | "created") {
        return fail(format!(
            "cannot delete container {id}: it is {status} (stop it first, or use --force)"
        ));
    }
    if status != "stopped" && pid != 0 {
        if let Ok(fd) = crate::sys::pidfd_open(pid as i32) {
            let _ = crate::sys::pidfd_send_signal(&fd, libc::SIGKILL);
        }
    }
    // The VP ends (its monitor cleans up), then it is destroyed.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let res = with_cellsd(g, async |m| Ok(m.destroy(&r.vp).await))?;
        match res {
            Ok(()) => break,
            Err(zbus::Error::MethodError(name, _, _)) if name.as_str().ends_with("NotFound") => {
                break
            }
            Err(e) if std::time::Instant::now() > deadline => return Err(dbus_err(e)),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    if let Err(e) = run_hooks(&r, "poststop", "stopped", 0) {
        eprintln!("{NAME}: warning: {}", e.0);
    }
    let _ = std::fs::remove_dir_all(record_dir(g, id));
    Ok(0)
}

fn ps(g: &Global, id: &str, json: bool) -> Result<i32, Failure> {
    let r = load_record(g, id)?;
    let (_, pid) = status_of(g, &r)?;
    let pids = if pid == 0 { Vec::new() } else { pids_of(pid) };
    if json {
        println!("{}", serde_json::to_string(&pids)?);
    } else {
        println!("PID");
        for p in pids {
            println!("{p}");
        }
    }
    Ok(0)
}

fn freeze(g: &Global, id: &str, on: bool) -> Result<i32, Failure> {
    let r = load_record(g, id)?;
    with_cellsd(g, async |m| {
        if on {
            m.freeze(&r.vp).await.map_err(dbus_err)?;
        } else {
            m.thaw(&r.vp).await.map_err(dbus_err)?;
        }
        Ok(())
    })?;
    Ok(0)
}

/// `update --resources FILE|-` (or --memory, --pids-limit, --cpu-quota,
/// --cpu-period): the limits written to the VP's cgroup.
fn update(g: &Global, p: &Parsed) -> Result<i32, Failure> {
    let id = p.id()?;
    let r = load_record(g, id)?;
    let (status, pid) = status_of(g, &r)?;
    if status == "stopped" {
        // runc's words: containerd's shim takes them for "already ended".
        return fail(format!("container not running: {id} has ended"));
    }
    let mut res: oci_spec::runtime::LinuxResources =
        match p.flags.get("resources").map(String::as_str) {
            Some("-") => {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                serde_json::from_str(&s)
                    .map_err(|e| Failure(format!("the resources (JSON): {e}")))?
            }
            Some(f) => serde_json::from_str(&std::fs::read_to_string(f)?)
                .map_err(|e| Failure(format!("the resources in {f} (JSON): {e}")))?,
            None => Default::default(),
        };
    let num = |k: &str| -> Result<Option<i64>, Failure> {
        p.flags
            .get(k)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| Failure(format!("--{k} takes a number")))
            })
            .transpose()
    };
    if let Some(m) = num("memory")? {
        let mut mem = (*res.memory()).unwrap_or_default();
        mem.set_limit(Some(m));
        res.set_memory(Some(mem));
    }
    if let Some(n) = num("pids-limit")? {
        res.set_pids(Some(
            oci_spec::runtime::LinuxPidsBuilder::default()
                .limit(n)
                .build()?,
        ));
    }
    if let (Some(q), Some(per)) = (num("cpu-quota")?, num("cpu-period")?) {
        let mut cpu = res.cpu().clone().unwrap_or_default();
        cpu.set_quota(Some(q));
        cpu.set_period(Some(per as u64));
        res.set_cpu(Some(cpu));
    }
    let hierarchy = crate::cgroup::Hierarchy::detect()?;
    let rel = vp_cgroup_of(pid)?;
    let cg = crate::cgroup::VpCgroup::new(hierarchy, rel);
    cg.apply_limits(Some(&res))?;
    Ok(0)
}

/// The VP's cgroup (relative to the hierarchies' roots), from its init's.
fn vp_cgroup_of(init: u32) -> Result<PathBuf, Failure> {
    let text = std::fs::read_to_string(format!("/proc/{init}/cgroup"))?;
    let path = text
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .find(|p| *p != "/")
        .ok_or_else(|| Failure(format!("the init {init} is in no cgroup of its own")))?;
    Ok(PathBuf::from(path.trim_start_matches('/')))
}

fn exec(g: &Global, p: &Parsed) -> Result<i32, Failure> {
    let id = p.id()?;
    if p.on("tty") || p.flags.contains_key("console-socket") {
        return fail("a terminal for exec is not supported: run it without -t/--console-socket");
    }
    let r = load_record(g, id)?;
    let (args, env, cwd, user) = match p.flags.get("process") {
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| Failure(format!("the process file {f}: {e}")))?;
            let proc: oci_spec::runtime::Process = serde_json::from_str(&text)
                .map_err(|e| Failure(format!("the process file {f}: {e}")))?;
            if proc.terminal() == Some(true) {
                return fail("the process asks for a terminal, which is not supported");
            }
            let u = proc.user();
            (
                proc.args().clone().unwrap_or_default(),
                proc.env().clone().unwrap_or_default(),
                proc.cwd().to_string_lossy().to_string(),
                (
                    u.uid(),
                    u.gid(),
                    u.additional_gids().clone().unwrap_or_default(),
                ),
            )
        }
        None => {
            let user = match p.flags.get("user") {
                Some(spec) => {
                    let (u, g) = spec.split_once(':').unwrap_or((spec, "0"));
                    let num = |s: &str| {
                        s.parse::<u32>().map_err(|_| {
                            Failure(format!("--user takes UID[:GID] (numbers), not {spec:?}"))
                        })
                    };
                    (num(u)?, num(g)?, Vec::new())
                }
                None => (0, 0, Vec::new()),
            };
            (
                p.positional[1..].to_vec(),
                p.flags.get("env").cloned().into_iter().collect(),
                p.flags.get("cwd").cloned().unwrap_or_else(|| "/".into()),
                user,
            )
        }
    };
    if args.is_empty() {
        return fail("no command to run: give --process FILE or the command after the id");
    }
    let (ours, helpers) = std::os::unix::net::UnixStream::pair()?;
    let mut child = std::process::Command::new("/proc/self/exe")
        .arg("__exec")
        .stdin(std::process::Stdio::from(OwnedFd::from(helpers)))
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| Failure(format!("spawning the exec helper: {e}")))?;
    let stdio: Vec<OwnedFd> = [
        std::io::stdin().as_fd().try_clone_to_owned()?,
        std::io::stdout().as_fd().try_clone_to_owned()?,
        std::io::stderr().as_fd().try_clone_to_owned()?,
    ]
    .into();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let envv: Vec<&str> = env.iter().map(String::as_str).collect();
    let done = with_cellsd(g, async |m| {
        m.oci_exec(
            &r.vp,
            &argv,
            &envv,
            &cwd,
            &user,
            zbus::zvariant::Fd::from(&ours),
            stdio.iter().map(zbus::zvariant::Fd::from).collect(),
        )
        .await
        .map_err(dbus_err)
    });
    drop(stdio);
    drop(ours);
    if let Err(e) = done {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    if let Some(pf) = p.flags.get("pid-file") {
        write_atomic(Path::new(pf), child.id().to_string().as_bytes())?;
    }
    if p.on("detach") {
        // Not waited for: the shim reaps it.
        std::mem::forget(child);
        return Ok(0);
    }
    let st = child.wait()?;
    Ok(st
        .code()
        .unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&st).unwrap_or(0)))
}

use std::os::unix::fs::OpenOptionsExt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(1_796_601_600, 5), "2026-12-07T00:00:00.000000005Z");
    }

    #[test]
    fn flags_and_ids() {
        let p = parse(
            vec!["--bundle=/b".into(), "-f".into(), "c1".into(), "--x".into()],
            &["bundle"],
            &["force"],
            &[("-f", "--force")],
        )
        .unwrap();
        assert_eq!(p.flags.get("bundle").unwrap(), "/b");
        assert!(p.on("force"));
        assert_eq!(p.positional, vec!["c1", "--x"]);
        assert!(parse(vec!["--nope".into()], &[], &[], &[]).is_err());
        assert!(check_id("abc_1.2+x").is_ok());
        assert!(check_id("../x").is_err());
        assert!(check_id("").is_err());
        assert_eq!(signal_number("KILL").unwrap(), 9);
        assert_eq!(signal_number("SIGTERM").unwrap(), 15);
        assert_eq!(signal_number("10").unwrap(), 10);
        assert!(signal_number("BOGUS").is_err());
    }
}
