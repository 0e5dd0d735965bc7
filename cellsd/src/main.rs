//! cellsd: the privileged daemon that runs virtual phones.
//!
//! `cellsd [--state-dir DIR] [--run-dir DIR] ...` serves the control API on
//! `<run-dir>/cellsd.sock`. The same binary is re-exec'd as its own helpers
//! (`__monitor`, `__exec`), which must be dispatched before any thread or
//! async runtime exists.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;

use cellsd::cgroup::FreezerChoice;
use cellsd::daemon::{check_state_dir, DaemonConfig, Manager};
use cellsd::devices::binder::BinderMode;
use cellsd::devices::display::DisplayMode;
use cellsd::devices::input::sink::Backend;
use cellsd::devices::power::backend::{BackendChoice, SleepBackend};
use cellsd::devices::registry::HostConfig;
use cellsd::layout::{Layout, DEFAULT_RUN_DIR, DEFAULT_STATE_DIR};
use cellsd::template::Sources;
use mux_fb::panel::PanelSpec;

#[derive(Parser, Debug)]
#[command(
    name = "cellsd",
    version,
    about = "The cells daemon: runs isolated virtual phones (VPs) on one Linux kernel"
)]
struct Args {
    /// Persistent state: VP definitions, writable layers, /data, templates.
    #[arg(long, env = "CELLS_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Volatile state: the control socket (<run-dir>/cellsd.sock) and running VPs.
    #[arg(long, env = "CELLS_RUN_DIR", default_value = DEFAULT_RUN_DIR)]
    run_dir: PathBuf,
    /// Folder of template recipes (default: the repository's rootfs-templates).
    #[arg(long, env = "CELLS_TEMPLATES_DIR")]
    templates_dir: Option<PathBuf>,
    /// Folder of the statically built programs installed into templates
    /// (default: the folder of the cellsd executable).
    #[arg(long, env = "CELLS_PROGRAMS_DIR")]
    programs_dir: Option<PathBuf>,
    /// Where template bases fetched from the network (a Debian template's)
    /// are kept, so a rebuild needs no network (root's alone).
    #[arg(long, env = "CELLS_CACHE_DIR", default_value = cellsd::template::DEFAULT_CACHE_DIR)]
    cache_dir: PathBuf,
    /// First host uid/gid of the VPs' user namespaces (each VP gets 65536 ids).
    #[arg(long, default_value_t = cellsd::config::DEFAULT_ID_BASE)]
    id_base: u32,
    /// Cgroup (in every hierarchy) under which VP cgroups are created.
    #[arg(long, default_value = cellsd::config::DEFAULT_CGROUP_PARENT)]
    cgroup_parent: String,
    /// The panel: headless:WIDTHxHEIGHT (memory) or fbdev:/dev/fbN (a real
    /// display). Default: fbdev:/dev/fb0 where it exists, else headless:720x1280.
    #[arg(long, env = "CELLS_PANEL")]
    panel: Option<String>,
    /// How VP input devices are made: evdev (served by each VP's monitor,
    /// the default) or fifo (named pipes carrying the event stream).
    #[arg(long, value_enum, default_value_t = InputBackendArg::Evdev)]
    input_backend: InputBackendArg,
    /// Folder of the host input devices to multiplex to the foreground VP.
    #[arg(long, default_value = "/dev/input")]
    input_dir: PathBuf,
    /// Do not grab host input devices exclusively (they then also reach the host).
    #[arg(long)]
    no_grab: bool,
    /// Binder devices of VPs: auto (binderfs if the kernel has it, else the
    /// /dev/binderN pool of binder_linux, else none), none, binderfs, or
    /// pool:/dev/binder0,/dev/binder1,...
    #[arg(long, default_value = "auto")]
    binder: String,
    /// Who multiplexes the panel: kernel (the mux_fb module), userspace
    /// (cellsd's compositor), or auto (the module where it is loaded).
    #[arg(long, value_enum, default_value_t = DisplayMuxArg::Auto)]
    display_mux: DisplayMuxArg,
    /// What VP wakelocks do to the device: auto (android where the kernel
    /// has /sys/power/wake_lock, else logind where it is on the system bus,
    /// else none), android[:DIR] (mirror them as kernel wakelocks), logind
    /// (hold a sleep inhibitor while any is held), none (record only).
    #[arg(long, default_value = "auto")]
    power_backend: String,
    /// The device's modem: the baseband's AT command tty (e.g. /dev/ttyUSB2);
    /// its calls and messages go to the VP given by `cellctl phone assign`.
    #[arg(long)]
    modem: Option<PathBuf>,
    /// A SIP server (registrar and outbound proxy), sip:HOST[:PORT]: every
    /// running VP's number is registered there, and calls and messages to
    /// numbers no VP has go out through it with the VP's number.
    #[arg(long)]
    sip: Option<String>,
    /// The domain of the VPs' SIP addresses (default: the --sip host).
    #[arg(long, requires = "sip")]
    sip_domain: Option<String>,
    /// Passwords for the server's digest challenges: lines of NUMBER
    /// PASSWORD (`*` for every other number); owned by root, mode 0600.
    #[arg(long, requires = "sip")]
    sip_secrets: Option<PathBuf>,
    /// Serve the web console (the panel live, a persona switcher, touch and
    /// keys) on ADDR:PORT, loopback only; its URL, with the access token,
    /// is logged and printed by `cellctl web`.
    #[arg(long, value_name = "ADDR:PORT")]
    web: Option<String>,
    /// The console over TLS on loopback too (it always is elsewhere).
    #[arg(long, requires = "web")]
    web_tls: bool,
    /// The console's TLS certificate (PEM; default: a self-signed one made
    /// once and kept in <state>/web/).
    #[arg(long, requires_all = ["web", "web_key"], value_name = "FILE")]
    web_cert: Option<PathBuf>,
    /// The key of --web-cert (PEM).
    #[arg(long, requires = "web_cert", value_name = "FILE")]
    web_key: Option<PathBuf>,
    /// The device's speaker, where the VPs' audio is mixed to: auto (the
    /// first ALSA playback device, /dev/snd/pcmC*D*p, if the machine has
    /// one), none, or a device path.
    #[arg(long, default_value = "auto")]
    audio_output: String,
    /// Cgroup freezer for background VPs: auto (v1's freezer controller
    /// where mounted, else v2's cgroup.freeze), v1, v2.
    #[arg(long, value_enum, default_value_t = FreezerArg::Auto)]
    freezer: FreezerArg,
    /// Bridge VPs attach to (at most 9 characters).
    #[arg(long, default_value = cellsd::devices::network::DEFAULT_BRIDGE)]
    bridge: String,
    /// IPv4 subnet VP addresses come from; the bridge gets the first address.
    #[arg(long, default_value = cellsd::devices::network::DEFAULT_SUBNET)]
    subnet: String,
    /// Masquerade VP traffic to the outside (nftables; enables IPv4 forwarding).
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    nat: OnOff,
    /// Nameserver for VPs (repeatable; default: the host's non-loopback ones).
    #[arg(long)]
    dns: Vec<std::net::IpAddr>,
    /// First host port given to VPs' adb forwards.
    #[arg(long, default_value_t = cellsd::devices::network::DEFAULT_ADB_PORT_BASE)]
    adb_port_base: u16,
    /// Log filter (tracing env-filter syntax), e.g. debug or cellsd=trace.
    #[arg(long, env = "CELLS_LOG", default_value = "info")]
    log: String,
    /// Memory limit of a VP created without --memory: auto (2G, at most
    /// half the host's RAM), a size such as 1G, or none.
    #[arg(long, default_value = "auto")]
    default_memory: String,
    /// Memory kept out of all VPs' reach together (their cgroup parent is
    /// limited to RAM minus this): auto (a tenth of RAM, at least 1G), a
    /// size, or none (no limit over all VPs).
    #[arg(long, default_value = "auto")]
    memory_reserve: String,
    /// Disk of a VP created without --disk (its writable layer and /data on
    /// a sparse ext4 image of that size): auto (8G where mkfs.ext4 is
    /// installed, else none), a size such as 4G, or none.
    #[arg(long, default_value = "auto")]
    default_disk: String,
    /// Merge identical memory pages of VPs (KSM): VP processes are marked
    /// mergeable and the kernel's ksmd is turned on (/sys/kernel/mm/ksm/run;
    /// it costs ksmd CPU time). Cells did this at VP start.
    #[arg(long)]
    ksm: bool,
    /// The CRIU program `cellctl checkpoint` and `cellctl restore` run
    /// (CRIU 3.17 or later; a path or a name looked up in PATH).
    #[arg(long, default_value = "criu")]
    criu: PathBuf,
    /// CPU weight of a background VP, where the foreground VP has 100 (the
    /// cgroup v2 scale; v1's cpu.shares scaled to it): 5, as Android gives
    /// its background apps 52 of 1024 shares, keeps the foreground and cellsd
    /// quick while background VPs run; 100 treats all VPs alike.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=100))]
    background_cpu_weight: u16,
    /// What a call ringing in a background VP does: notify (it rings there
    /// and cellsd sends the IncomingCall signal) or switch (that VP also
    /// becomes the foreground, as a phone brings up its call screen).
    #[arg(long, value_enum, default_value_t = OnCallArg::Notify)]
    on_call: OnCallArg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum OnCallArg {
    Notify,
    Switch,
}

/// `--input-backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum InputBackendArg {
    /// The same as evdev.
    Auto,
    Evdev,
    Fifo,
}

/// `--display-mux`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DisplayMuxArg {
    Auto,
    Kernel,
    Userspace,
}

/// `--freezer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FreezerArg {
    Auto,
    V1,
    V2,
}

/// `--nat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

/// Kernel limits that bound how many VPs one cellsd can run: the open-file
/// limit is raised to its hard limit (cellsd holds about a dozen fds per VP:
/// pidfds, devices, links, the adb listener); pid_max is reported (every VP
/// process and monitor thread takes a pid of the host's namespace too).
fn capacity_checks() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    const FDS_PER_VP: u64 = 16;
    let vps_by_fds = lim.rlim_cur / FDS_PER_VP;
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    const PIDS_PER_VP: u64 = 12;
    let vps_by_pids = pid_max / PIDS_PER_VP;
    tracing::info!(
        open_files = lim.rlim_cur,
        pid_max,
        "capacity: about {} running VPs (open files allow {vps_by_fds}, pids {vps_by_pids})",
        vps_by_fds.min(vps_by_pids)
    );
    if vps_by_fds < 1000 {
        tracing::warn!(
            "the open-file limit {} allows about {vps_by_fds} running VPs: raise it (LimitNOFILE= in the unit, ulimit -Hn) for more",
            lim.rlim_cur
        );
    }
    if vps_by_pids < 1000 {
        tracing::warn!(
            "kernel.pid_max {pid_max} allows about {vps_by_pids} running VPs: raise it (sysctl kernel.pid_max=4194304) for more"
        );
    }
}

/// `--default-memory` and `--memory-reserve`: (default per VP, all VPs).
fn memory_settings(default: &str, reserve: &str) -> anyhow::Result<(Option<u64>, Option<u64>)> {
    use cellsd::config::{default_memory, host_memory, memory_reserve, parse_memory};
    let ram = host_memory();
    let size = |flag: &str, v: &str| {
        parse_memory(v).map_err(|e| anyhow::anyhow!("--{flag}: {e}, or auto, or none"))
    };
    let per_vp = match default {
        "auto" => Some(default_memory(ram)),
        "none" => None,
        v => Some(size("default-memory", v)?),
    };
    let all = match (reserve, ram) {
        ("none", _) => None,
        (_, None) => {
            bail!("--memory-reserve: /proc/meminfo has no MemTotal; give --memory-reserve none")
        }
        ("auto", Some(r)) => Some(r - memory_reserve(r)),
        (v, Some(r)) => {
            let keep = size("memory-reserve", v)?;
            if keep >= r {
                bail!(
                    "--memory-reserve {v} is all of the host's {} MiB: give less",
                    r >> 20
                );
            }
            Some(r - keep)
        }
    };
    Ok((per_vp, all))
}

/// The helpers log as cellsd does (tracing's format, on stderr: the
/// monitor's is its VP's monitor log, the exec helper's cellsd's own); the
/// filter comes from CELLS_LOG (default info). No thread is started.
fn helper_log() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CELLS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

fn main() {
    // Helpers first: they are single-threaded and must stay so.
    let argv: Vec<String> = std::env::args().collect();
    // Called as `cells-runtime` (a link to cellsd): the OCI runtime CLI.
    let called = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str());
    if called == Some(cellsd::oci::runtime::NAME) {
        helper_log();
        std::process::exit(cellsd::oci::runtime::main(argv[1..].to_vec()))
    }
    match argv.get(1).map(String::as_str) {
        Some("__monitor") => {
            helper_log();
            std::process::exit(cellsd::monitor::main(argv.get(2).map(String::as_str)))
        }
        Some("__exec") => {
            helper_log();
            std::process::exit(cellsd::execer::main())
        }
        Some("__shift-ids") => std::process::exit(cellsd::idshift::main(&argv[2..])),
        _ => {}
    }
    cellsd::sys::daemon_malloc();
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("cellsd: {e:#}");
        std::process::exit(1);
    }
}

fn default_templates_dir(exe: &std::path::Path) -> PathBuf {
    // Installed next to the binary (share/cells/rootfs-templates), else the
    // source tree this binary was built from.
    let installed = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|p| p.join("share/cells/rootfs-templates"));
    match installed {
        Some(p) if p.is_dir() => p,
        _ => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../rootfs-templates")),
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "cellsd must run as root (it creates namespaces, mounts and cgroups): run it with sudo"
        );
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    capacity_checks();

    let state = std::path::absolute(&args.state_dir).context("state dir")?;
    let run_dir = std::path::absolute(&args.run_dir).context("run dir")?;
    check_state_dir(&state).map_err(anyhow::Error::msg)?;
    check_state_dir(&run_dir).map_err(anyhow::Error::msg)?;
    // Made (if missing) as root, then checked: only root may be able to
    // change them or any folder above them.
    for (d, mode, what) in [(&state, 0o711, "state dir"), (&run_dir, 0o755, "run dir")] {
        std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
        cellsd::trust::check_dir(d, what)?;
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    }
    let layout = Layout::new(&state, &run_dir);
    if args.cgroup_parent.split('/').any(|c| c == ".." || c == ".")
        || args.cgroup_parent.trim_matches('/').is_empty()
    {
        bail!(
            "--cgroup-parent '{}' must be a relative cgroup path such as 'cells'",
            args.cgroup_parent
        );
    }

    // One cellsd per run dir.
    let lock_path = run_dir.join("cellsd.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("open {}", lock_path.display()))?;
    // The lock of a cellsd that was just killed can outlive it by a moment:
    // a child it was spawning holds a copy of the fd until its exec closes
    // it. While the recorded cellsd is gone, wait up to 2 s for it.
    let mut waited = 0;
    // SAFETY: flock on an fd we own.
    while unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let pid = std::fs::read_to_string(layout.pid_file()).unwrap_or_default();
        let alive = pid
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|p| *p > 0)
            // SAFETY: signal 0 only checks that the process exists.
            .is_some_and(|p| unsafe { libc::kill(p, 0) } == 0);
        if alive || waited >= 40 {
            bail!(
                "another cellsd (pid {}) already serves {}: stop it first, or give this one another --run-dir",
                pid.trim(),
                run_dir.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        waited += 1;
    }

    let panel = match &args.panel {
        Some(p) => PanelSpec::parse(p)?,
        None => PanelSpec::default_for_host(),
    };
    let exe = std::fs::read_link("/proc/self/exe").context("find own executable")?;
    let sources = Sources {
        recipes: args
            .templates_dir
            .unwrap_or_else(|| default_templates_dir(&exe)),
        programs: args
            .programs_dir
            .unwrap_or_else(|| exe.parent().map(PathBuf::from).unwrap_or_default()),
        cache: args.cache_dir.clone(),
    };
    let (default_memory, vps_memory) = memory_settings(&args.default_memory, &args.memory_reserve)?;
    let default_disk = match args.default_disk.as_str() {
        "none" => None,
        "auto" if !cellsd::disk::mkfs_available() => {
            tracing::warn!("mkfs.ext4 is not installed: VPs get no disk limit (install e2fsprogs)");
            None
        }
        "auto" => Some(cellsd::disk::DEFAULT_DISK),
        v => {
            let size = cellsd::config::parse_memory(v).map_err(|_| {
                anyhow::anyhow!("--default-disk '{v}': give a size such as 4G, or auto, or none")
            })?;
            if size < cellsd::disk::MIN_DISK {
                bail!("--default-disk {v}: give at least 64M");
            }
            Some(size)
        }
    };
    if args.ksm {
        if let Err(e) = std::fs::write("/sys/kernel/mm/ksm/run", "1") {
            tracing::warn!("--ksm: turning ksmd on: {e} (the kernel needs CONFIG_KSM)");
        }
    }
    let sip = match &args.sip {
        None => None,
        Some(uri) => {
            let secrets = match &args.sip_secrets {
                Some(p) => Some(read_secrets(p)?),
                None => None,
            };
            Some(
                cellsd::devices::telephony::voip::SipConfig::parse(
                    uri,
                    args.sip_domain.as_deref(),
                    secrets.as_deref(),
                )
                .map_err(|e| anyhow::anyhow!(e))?,
            )
        }
    };
    let web = args
        .web
        .as_deref()
        .map(|w| {
            let cert = args.web_cert.clone().zip(args.web_key.clone());
            cellsd::web::WebConfig::parse(w, args.web_tls, cert)
        })
        .transpose()
        .map_err(|e| anyhow::anyhow!(e))?;
    let cfg = DaemonConfig {
        ksm: args.ksm,
        background_cpu_weight: args.background_cpu_weight,
        on_call_switch: args.on_call == OnCallArg::Switch,
        criu: args.criu.clone(),
        default_disk,
        default_memory,
        vps_memory,
        layout: layout.clone(),
        sources,
        id_base: args.id_base,
        self_exe: exe,
        cgroup_parent: args.cgroup_parent.trim_matches('/').to_string(),
        freezer: match args.freezer {
            FreezerArg::V1 => FreezerChoice::V1,
            FreezerArg::V2 => FreezerChoice::V2,
            FreezerArg::Auto => FreezerChoice::Auto,
        },
        devices: HostConfig {
            panel,
            input_backend: match args.input_backend {
                InputBackendArg::Fifo => Backend::Fifo,
                InputBackendArg::Auto | InputBackendArg::Evdev => Backend::Evdev,
            },
            input_dir: Some(args.input_dir.clone()),
            grab_input: !args.no_grab,
            input_socket: Some(layout.input_socket()),
            run_dir: layout.run.clone(),
            state_dir: layout.state.clone(),
            modem: args.modem.clone(),
            sip,
            audio_output: match args.audio_output.as_str() {
                "none" => None,
                "auto" => cellsd::devices::alsa::first_playback(std::path::Path::new("/dev/snd")),
                p => Some(PathBuf::from(p)),
            },
            display_mode: match args.display_mux {
                DisplayMuxArg::Kernel => Some(DisplayMode::Kernel),
                DisplayMuxArg::Userspace => Some(DisplayMode::Userspace),
                DisplayMuxArg::Auto => None,
            },
            binder: BinderMode::parse(&args.binder, std::path::Path::new("/dev"))
                .map_err(anyhow::Error::msg)?,
            network: {
                use cellsd::devices::network::{check_bridge_name, host::NetConfig, Subnet};
                check_bridge_name(&args.bridge)?;
                NetConfig {
                    bridge: args.bridge.clone(),
                    subnet: Subnet::parse(&args.subnet)?,
                    nat: args.nat == OnOff::On,
                    dns: args.dns.clone(),
                    adb_port_base: args.adb_port_base,
                }
            },
        },
    };
    let power_backend: BackendChoice = args.power_backend.parse().map_err(anyhow::Error::msg)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let power = SleepBackend::open(&power_backend)
            .await
            .map_err(|e| anyhow::anyhow!("power backend {}: {e}", args.power_backend))?;
        tracing::info!(backend = power.name(), "power");
        let mgr = Manager::new(cfg, power)?;
        mgr.refill_spare().await;
        let listener = cellsd::server::bind(&layout.socket())
            .with_context(|| format!("bind {}", layout.socket().display()))?;
        let mut pidf = std::fs::File::create(layout.pid_file())?;
        writeln!(pidf, "{}", std::process::id())?;
        tracing::info!(
            socket = %layout.socket().display(),
            state = %layout.state.display(),
            vps = mgr.list().len(),
            "cellsd ready"
        );
        if let Some(w) = &web {
            let tls = w.acceptor(&layout.state).map_err(|e| anyhow::anyhow!(e))?;
            let l = tokio::net::TcpListener::bind(w.addr)
                .await
                .with_context(|| format!("--web {}: cannot listen there", w.addr))?;
            let url = w.url(l.local_addr()?);
            let fingerprint = tls.as_ref().map(|t| t.1.clone()).unwrap_or_default();
            tracing::info!(
                url = url.as_str(),
                tls_sha256 = fingerprint.as_str(),
                "web console"
            );
            let shown = if fingerprint.is_empty() {
                url
            } else {
                format!("{url}\ncertificate SHA-256 {fingerprint}")
            };
            let _ = cellsd::web::URL.set(shown);
            tokio::spawn(cellsd::web::serve(
                l,
                mgr.clone(),
                w.token.clone(),
                tls.map(|t| t.0),
            ));
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let served = mgr.clone();
        tokio::select! {
            _ = cellsd::server::serve(listener, served) => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        // VPs keep running under their monitors; the next cellsd adopts them
        // (and their network: the bridge stays while any VP runs).
        mgr.flush_writes();
        mgr.shutdown_network();
        let _ = std::fs::remove_file(layout.socket());
        let _ = std::fs::remove_file(layout.pid_file());
        tracing::info!("cellsd stopped (running VPs keep running)");
        drop(lock);
        Ok(())
    })
}

/// `--sip-secrets`: root's own file, readable by nobody else.
fn read_secrets(p: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(p)
        .map_err(|e| anyhow::anyhow!("--sip-secrets {}: {e}", p.display()))?;
    let md = f
        .metadata()
        .map_err(|e| anyhow::anyhow!("--sip-secrets {}: {e}", p.display()))?;
    if md.uid() != 0 || md.mode() & 0o077 != 0 || !md.is_file() {
        bail!(
            "--sip-secrets {}: it holds passwords, so it must be a file owned by root that only root reads: chown root {0} && chmod 600 {0}",
            p.display()
        );
    }
    let mut s = String::new();
    f.read_to_string(&mut s)
        .map_err(|e| anyhow::anyhow!("--sip-secrets {}: {e}", p.display()))?;
    Ok(s)
}
