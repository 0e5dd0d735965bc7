//! cellctl: the control CLI of cells. Talks D-Bus (org.cells.Manager1) to
//! cellsd over its peer-to-peer socket.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use futures_util::StreamExt;
use zbus::zvariant::Value;

use cells_api::paths::{DEFAULT_RUN_DIR, SOCKET_NAME};
use cells_api::{CellsError, Manager1Proxy, TemplateInfo, VpInfo};

mod console;
mod doctor;
mod image;
mod logcat;
mod relay;
mod remote;
mod table;

/// Byte that detaches `cellctl console` (Ctrl-]).
pub const DETACH_KEY: u8 = 0x1d;

#[derive(Parser)]
#[command(
    name = "cellctl",
    version,
    about = "Control cells virtual phones (VPs) through cellsd",
    after_help = "The daemon's socket is <run-dir>/cellsd.sock (default /run/cells/cellsd.sock); \
                  set it with --socket or CELLS_SOCKET."
)]
struct Cli {
    /// Path of cellsd's control socket.
    #[arg(long, global = true, env = "CELLS_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Drive the cellsd of another host over SSH, ssh://[USER@]HOST[:PORT]
    /// (as `docker -H ssh://`; CELLS_SSH_COMMAND for ssh's options): there,
    /// `cellctl dial-stdio` connects to it as the SSH user.
    #[arg(long, global = true, env = "CELLS_HOST", value_name = "URL")]
    host: Option<String>,
    /// With --host: that cellsd's socket, if not the default.
    #[arg(long, global = true, value_name = "PATH")]
    host_socket: Option<String>,
    /// With --host: the cellctl program there (default: cellctl on its PATH).
    #[arg(long, global = true, value_name = "PATH", default_value = "cellctl")]
    host_cellctl: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum SnapshotCmd {
    /// A VP's snapshots, oldest first.
    List {
        #[arg(value_name = "VP")]
        vp: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a snapshot.
    Delete {
        #[arg(value_name = "VP")]
        vp: String,
        #[arg(value_name = "NAME")]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum FarmCmd {
    /// The VPs of every host given (`local` for this one's cellsd, or
    /// ssh://[USER@]HOST[:PORT]; default: the hosts in CELLS_FARM, separated
    /// by spaces), with a HOST column; a host that cannot be reached is
    /// named on stderr and the others are listed.
    List {
        #[arg(value_name = "HOST")]
        hosts: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Build and list templates (the shared read-only base filesystems).
    #[command(subcommand)]
    Template(TemplateCmd),
    /// Define a new VP on a template.
    Create(CreateArgs),
    /// Start VPs; returns once each VP's init runs.
    Start {
        #[arg(required = true, value_name = "VP")]
        names: Vec<String>,
    },
    /// Stop VPs: SIGTERM to the VP's init, SIGKILL after the timeout.
    Stop {
        #[arg(required = true, value_name = "VP")]
        names: Vec<String>,
        /// Seconds to wait for a clean shutdown before killing.
        #[arg(long, default_value_t = 10)]
        timeout: u32,
    },
    /// Remove stopped VPs with their writable layer and /data.
    Destroy {
        #[arg(required = true, value_name = "VP")]
        names: Vec<String>,
    },
    /// List VPs: name, state, init pid, template, uptime.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one VP.
    Status {
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a command inside a running VP; its stdin, stdout, stderr and exit
    /// status are this command's.
    Exec(ExecArgs),
    /// Attach to the console of a VP's init (detach with Ctrl-]).
    Console { name: String },
    /// Print a VP's log as logcat does (or every running VP's, with a VP
    /// column), then exit; with -f keep following it.
    Logcat(LogcatArgs),
    /// Make a running VP the foreground: it gets the screen and the input.
    Switch { name: String },
    /// Print the foreground VP (nothing if none).
    Foreground,
    /// Switch to the next running VP (name order, wrapping).
    Next,
    /// Switch to the previous running VP.
    Prev,
    /// Save a PNG of what the panel shows, or of a VP's own framebuffer.
    Screenshot {
        /// Output file.
        #[arg(short = 'o', long, default_value = "screen.png")]
        output: PathBuf,
        /// A VP's framebuffer instead of the panel (works for background VPs).
        #[arg(long)]
        vp: Option<String>,
    },
    /// Inject input into the foreground VP.
    #[command(subcommand)]
    Input(InputCmd),
    /// The panel and the compositor and input counters.
    Display {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The device's sensors: `sensor set accel X Y Z` (m/s²), or what is in
    /// force and which VPs get it.
    Sensor {
        #[command(subcommand)]
        cmd: Option<SensorCmd>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The device's audio: who is heard and who records; `audio record
    /// FILE.wav` takes the device's output, `audio mic FILE.wav` feeds its
    /// microphone.
    Audio {
        #[command(subcommand)]
        cmd: Option<AudioCmd>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Telephony: every VP's number, the calls and the last messages;
    /// `phone number VP NUMBER` gives a VP its number.
    Phone {
        #[command(subcommand)]
        cmd: Option<PhoneCmd>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a running VP dial NUMBER (as its dialer would; its number is the
    /// caller ID).
    Call { name: String, number: String },
    /// Answer the call ringing in a VP.
    Answer { name: String },
    /// End a VP's call (ringing or active); the other side hears NO CARRIER.
    Hangup { name: String },
    /// Make a running VP send a text message to NUMBER.
    Sms {
        name: String,
        number: String,
        text: String,
    },
    /// The device's location, as the VPs' GPS receivers (/dev/ttyGPS0)
    /// report it: `location set LAT LON [ALT]`.
    Location {
        #[command(subcommand)]
        cmd: LocationCmd,
    },
    /// Every VP's wake-up alarms, the host alarm timers armed for them,
    /// and the last clock change.
    Alarms {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The device's power: may it suspend, who blocks it, every VP's wakelocks.
    Power {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One VP's wakelocks, one per line.
    Wakelocks {
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Snapshot a VP's writable layer and /data: `cellctl snapshot VP NAME`
    /// (a running VP is paused for the copy); `snapshot list VP`,
    /// `snapshot delete VP NAME`.
    #[command(args_conflicts_with_subcommands = true)]
    Snapshot {
        #[command(subcommand)]
        cmd: Option<SnapshotCmd>,
        #[arg(value_name = "VP")]
        vp: Option<String>,
        #[arg(value_name = "NAME")]
        name: Option<String>,
    },
    /// Save a running VP's processes with CRIU (live): the VP ends, its
    /// processes wait in cellsd's state until `cellctl restore VP`; with
    /// --leave-running it runs on (a copy of that moment). With -o, the
    /// stopped VP and its checkpoint are also written as an archive (FILE,
    /// or - for stdout) that `cellctl restore FILE` brings back on another
    /// cells host.
    Checkpoint {
        #[arg(value_name = "VP")]
        vp: String,
        #[arg(long)]
        leave_running: bool,
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<String>,
    },
    /// Bring a checkpointed VP back: its processes continue where they were,
    /// its devices attached again (screen contents, input, power and its
    /// wakelocks, network, a new console session). Given an archive made by
    /// `cellctl checkpoint VP -o FILE` (a path, or - for stdin; root only),
    /// the VP is imported here first (this host's ids, address and adb
    /// port) and removed again if its restore fails.
    Restore {
        #[arg(value_name = "VP|FILE")]
        vp: String,
        /// The imported VP's name here (default: its name in the archive).
        #[arg(long)]
        name: Option<String>,
    },
    /// Write a stopped VP (settings, disk, adb keys, forwards, number, its
    /// template's fingerprint) as an archive: to FILE, or to stdout with -.
    Export {
        #[arg(value_name = "VP")]
        vp: String,
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: String,
        /// Only what changed since the last export (for a VP that was
        /// imported from it on the other host and has not run there since).
        #[arg(long)]
        incremental: bool,
        /// With its checkpoint (`cellctl checkpoint VP`), for `cellctl
        /// restore FILE` on another host: a live move.
        #[arg(long, conflicts_with = "incremental")]
        checkpoint: bool,
    },
    /// Make a VP of an archive (FILE, or - for stdin) made by `cellctl
    /// export`: it gets this host's ids, address and adb port.
    Import {
        #[arg(value_name = "FILE")]
        file: String,
        /// Its name here (default: its name in the archive).
        #[arg(long)]
        name: Option<String>,
        /// Accept this host's build of its template although its content
        /// differs from the one the VP ran on.
        #[arg(long)]
        any_build: bool,
    },
    /// Move a VP to another cells host over SSH: stop it, export it into
    /// `ssh HOST cellctl import -`, and remove it here once it is there
    /// (set CELLS_SSH_COMMAND for ssh's options, e.g. "ssh -i KEY").
    Move {
        #[arg(value_name = "VP")]
        vp: String,
        /// ssh://[USER@]HOST[:PORT]
        #[arg(long, value_name = "URL")]
        to: String,
        /// Its name there (default: the same).
        #[arg(long)]
        name: Option<String>,
        /// Keep it here (stopped) after the move.
        #[arg(long)]
        keep: bool,
        /// The remote cellsd's socket, if not the default.
        #[arg(long, value_name = "PATH")]
        remote_socket: Option<String>,
        /// The remote cellctl program (default: cellctl on its PATH).
        #[arg(long, value_name = "PATH", default_value = "cellctl")]
        remote_cellctl: String,
        #[arg(long)]
        any_build: bool,
        /// Send only what changed since the last move or export (the copy
        /// there must not have run since).
        #[arg(long)]
        incremental: bool,
        /// Move it running (CRIU): checkpoint it here, restore it there —
        /// its processes go on where they were (root on both hosts).
        #[arg(long, conflicts_with_all = ["incremental", "any_build"])]
        live: bool,
    },
    /// Print the web console's URL (with its access token): cellsd --web.
    Web,
    /// Several cells hosts at once.
    #[command(subcommand)]
    Farm(FarmCmd),
    /// Relay this host's cellsd socket on stdin/stdout (what `cellctl --host
    /// ssh://…` runs here through ssh).
    #[command(name = "dial-stdio", hide = true)]
    DialStdio,
    /// Put a stopped VP's writable layer and /data back to a snapshot.
    Rollback {
        #[arg(value_name = "VP")]
        vp: String,
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Put a stopped VP back to its template: an empty writable layer and
    /// /data (its definition, number, adb keys and snapshots stay).
    Reset {
        #[arg(value_name = "VP")]
        vp: String,
    },
    /// Freeze a background VP's processes (cgroup freezer) until it is
    /// thawed or becomes the foreground.
    Freeze {
        #[arg(required = true, value_name = "VP")]
        names: Vec<String>,
    },
    /// Thaw frozen VPs.
    Thaw {
        #[arg(required = true, value_name = "VP")]
        names: Vec<String>,
    },
    /// Print the serial to give adb for a VP (last line), e.g.
    /// `adb connect $(cellctl adb work)`.
    Adb {
        name: String,
        /// Also run `adb connect SERIAL` (needs adb in PATH).
        #[arg(long)]
        connect: bool,
        /// Let an adb key into the VP's adbd: KEYFILE (an adbkey.pub), by
        /// default the calling user's ~/.android/adbkey.pub (adb makes it at
        /// its first start). Kept with the VP.
        #[arg(long, value_name = "KEYFILE", num_args = 0..=1, default_missing_value = "")]
        authorize: Option<String>,
        /// Take a key's access away: KEYFILE, or every key when none is given.
        #[arg(long, value_name = "KEYFILE", num_args = 0..=1, default_missing_value = "", conflicts_with = "authorize")]
        revoke: Option<String>,
        /// List the VP's authorized keys.
        #[arg(long)]
        keys: bool,
    },
    /// Change a stopped VP's network policy: isolated, shared-bridge or none.
    Network {
        name: String,
        #[arg(value_name = "POLICY")]
        policy: String,
    },
    /// Forward host loopback ports to a VP's ports.
    #[command(subcommand)]
    Port(PortCmd),
    /// What this kernel and machine offer for VPs (binder, memfd, fuse,
    /// uinput, overlay, idmapped mounts on the state folder, cgroups,
    /// seccomp, user namespaces), each with its fix. Runs without cellsd;
    /// exits 1 when something VPs need is missing.
    Doctor {
        /// The state folder cellsd uses (its file system must take
        /// idmapped mounts).
        #[arg(long, env = "CELLS_STATE_DIR", default_value = cells_api::paths::DEFAULT_STATE_DIR)]
        state_dir: std::path::PathBuf,
        /// One JSON object: {"kernel", "checks": [{check, level, detail, fix}], "missing"}.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum PortCmd {
    /// Forward 127.0.0.1:HOST to the VP's port: `cellctl port add work 8080:80`.
    /// Kept with the VP; relays while it runs.
    Add {
        name: String,
        #[arg(value_name = "HOST:VP")]
        spec: String,
    },
    /// List a VP's forwards (its adb forward first).
    List {
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove the forward from host port HOST.
    Remove {
        name: String,
        #[arg(value_name = "HOST")]
        host_port: u16,
    },
}

#[derive(Subcommand)]
enum InputCmd {
    /// Tap at X Y (panel pixels).
    Tap { x: i32, y: i32 },
    /// Swipe from X1 Y1 to X2 Y2 over MS milliseconds (default 300).
    Swipe {
        x1: i32,
        y1: i32,
        x2: i32,
        y2: i32,
        #[arg(default_value_t = 300)]
        ms: u32,
    },
    /// Press a key: HOME, BACK, MENU, POWER, VOLUME_UP, ENTER, a letter ...
    Key {
        name: String,
        /// Only press it (and keep it held).
        #[arg(long, conflicts_with = "up")]
        down: bool,
        /// Only release it.
        #[arg(long)]
        up: bool,
    },
    /// Type text (US keyboard layout).
    Text { text: String },
}

#[derive(Subcommand)]
enum TemplateCmd {
    /// Build a template from rootfs-templates/NAME (a new immutable build;
    /// running VPs keep the build they started with).
    Build { name: String },
    /// Import an image as a template: an OCI image (`oci:DIR[:TAG]`,
    /// `oci-archive:FILE[:TAG]`, `docker-archive:FILE`: its layers applied
    /// with their whiteouts), or an Android build's images (`--android
    /// SYSTEM_IMG`: raw or sparse ext4, or erofs, as an AOSP or emulator
    /// build writes them; docs/ADB.md). The VP boots the image's /init.
    Import {
        name: String,
        /// The OCI image: oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE.
        #[arg(conflicts_with = "system")]
        image: Option<String>,
        /// The system image (system.img).
        #[arg(long = "android", value_name = "SYSTEM_IMG")]
        system: Option<PathBuf>,
        #[arg(long)]
        vendor: Option<PathBuf>,
        #[arg(long)]
        product: Option<PathBuf>,
        #[arg(long = "system-ext")]
        system_ext: Option<PathBuf>,
        #[arg(long)]
        odm: Option<PathBuf>,
    },
    /// Pull an OCI image from a registry as a template:
    /// HOST[:PORT]/REPO[:TAG|@DIGEST] (plain HTTP for localhost and
    /// 127.0.0.1 or with http://, else HTTPS; anonymous access).
    Pull { name: String, reference: String },
    /// List templates: recipes and builds.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct CreateArgs {
    /// VP name: 1 to 32 characters from a-z, 0-9 and '-'.
    name: String,
    /// Template the VP starts from (see `cellctl template list`).
    #[arg(long)]
    template: String,
    /// Host name inside the VP (default: the VP's name).
    #[arg(long)]
    hostname: Option<String>,
    /// Memory limit, e.g. 512M or 2G, or none (default: cellsd's --default-memory, 2G on most hosts).
    #[arg(long)]
    memory: Option<String>,
    /// Disk size of the VP's writable layer and /data together, e.g. 4G, or
    /// none (default: cellsd's --default-disk, 8G where mkfs.ext4 exists).
    #[arg(long)]
    disk: Option<String>,
    /// CPU limit in CPUs, e.g. 1.5.
    #[arg(long)]
    cpus: Option<String>,
    /// Maximum number of processes (default 4096).
    #[arg(long)]
    pids: Option<u32>,
    /// No user namespace: VP root is host root (less isolation).
    #[arg(long)]
    privileged: bool,
    /// Persona colour as RRGGBB, e.g. ff0000 (default: derived from the name).
    #[arg(long)]
    color: Option<String>,
    /// In the background: run (default), freeze-after=DURATION (e.g. 30s;
    /// not while it holds a wakelock), or stop.
    #[arg(long, value_name = "POLICY")]
    background: Option<String>,
    /// Network: isolated (default: reaches the host and, with NAT, the
    /// outside, but no other VP), shared-bridge (also the other
    /// shared-bridge VPs) or none (loopback only).
    #[arg(long, value_name = "POLICY")]
    network: Option<String>,
    /// Seccomp filter: default (cells' profile, see docs/SECURITY.md), off,
    /// or FILE, a profile in docker's JSON format.
    #[arg(long, value_name = "default|off|FILE")]
    seccomp: Option<String>,
    /// A device's policy, repeatable: display=foreground|none,
    /// input=foreground|none, power=shared|foreground, binder=shared|none,
    /// network=shared|none (none: the VP has no such device; foreground: it
    /// acts only while the VP is the foreground; shared: in the background
    /// too). Defaults: display and input foreground, the others shared.
    #[arg(long = "device", value_name = "NAME=POLICY")]
    devices: Vec<String>,
}

#[derive(Subcommand)]
enum SensorCmd {
    /// Set a sensor's reading: `accel X Y Z` in m/s² (each -78.5 to 78.5),
    /// e.g. `accel 0 9.81 0` for a phone standing upright.
    Set {
        sensor: String,
        #[arg(allow_hyphen_values = true)]
        values: Vec<f64>,
    },
}

#[derive(Subcommand)]
enum PhoneCmd {
    /// Give a VP its phone number (up to 15 digits, optionally after '+'),
    /// unique among the VPs; kept across restarts.
    Number { name: String, number: String },
    /// Give the device's cellular line (the modem's number, its calls and
    /// messages) to a VP.
    Assign { name: String },
}

#[derive(Subcommand)]
enum AudioCmd {
    /// Save what the device plays (the mix of the VPs heard now) for
    /// SECONDS as a WAV file (S16_LE, 48 kHz, stereo).
    Record {
        file: PathBuf,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Play a WAV file (16-bit PCM, 48 kHz, mono or stereo) into the
    /// device's microphone: the foreground VP (or the VP in a call) records
    /// it, the others read silence.
    Mic { file: PathBuf },
}

#[derive(Subcommand)]
enum LocationCmd {
    /// Set the location: latitude and longitude in degrees (south and west
    /// negative), altitude in metres (default 0).
    Set {
        #[arg(allow_hyphen_values = true)]
        lat: f64,
        #[arg(allow_hyphen_values = true)]
        lon: f64,
        #[arg(allow_hyphen_values = true, default_value_t = 0.0)]
        alt: f64,
    },
}

#[derive(Args)]
struct LogcatArgs {
    /// Every running VP's log, each line after the VP's name.
    #[arg(long)]
    all: bool,
    /// Keep following the log (else print what there is and exit).
    #[arg(short = 'f', long)]
    follow: bool,
    /// The VP (without --all), then logcat's options: -v FORMAT
    /// (threadtime, time, brief, tag, process, thread, raw, long), -t N,
    /// -m N, -b BUFFER, --pid=PID, -s, TAG:PRIO ... (see `logcat -h` in a VP)
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "VP|ARGS"
    )]
    args: Vec<String>,
}

#[derive(Args)]
struct ExecArgs {
    name: String,
    /// Run the command on a terminal: a pty of the VP's own, relayed to
    /// this one (raw mode; the VP's line discipline handles Ctrl-C).
    #[arg(long, short = 't')]
    tty: bool,
    /// Pass this terminal's input to the command even without -t (input
    /// that is not a terminal — a file, a pipe — always is).
    #[arg(long, short = 'i')]
    interactive: bool,
    /// Working directory inside the VP.
    #[arg(long, short = 'w', default_value = "/")]
    cwd: String,
    /// Extra environment variables, KEY=VALUE.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// The command and its arguments (after --).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// A failure, printed as `cellctl: MESSAGE` with exit status 1.
#[derive(Debug)]
struct Failure(String);

impl From<CellsError> for Failure {
    fn from(e: CellsError) -> Self {
        Failure(e.message())
    }
}

impl From<zbus::Error> for Failure {
    fn from(e: zbus::Error) -> Self {
        // Errors of our interface carry their own message; others as is.
        Failure(CellsError::from(e).message())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure(e.to_string())
    }
}

fn socket_path(cli: &Option<PathBuf>) -> PathBuf {
    cli.clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR).join(SOCKET_NAME))
}

fn in_cells_group() -> bool {
    let Some(gid) = cells_api::access::cells_group() else {
        return false;
    };
    nix::unistd::getgroups()
        .map(|g| g.iter().any(|x| x.as_raw() == gid))
        .unwrap_or(false)
        || nix::unistd::getegid().as_raw() == gid
}

async fn connect(path: &PathBuf) -> Result<zbus::Connection, Failure> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 && !in_cells_group() {
        return Err(Failure(
            "cellctl must run as root (or as a member of the 'cells' group): run it with sudo"
                .into(),
        ));
    }
    let stream = match tokio::net::UnixStream::connect(path).await {
        Ok(s) => s,
        Err(e) => {
            use std::io::ErrorKind::*;
            let msg = match e.kind() {
                NotFound | ConnectionRefused => format!(
                    "cellsd is not running (nothing answers at {}): start it with `cellsd &` \
                     (with --run-dir DIR if you use another run dir), or point cellctl at its \
                     socket with --socket PATH or CELLS_SOCKET",
                    path.display()
                ),
                PermissionDenied => format!(
                    "permission denied on {}: run cellctl as root (or as a member of the 'cells' group)",
                    path.display()
                ),
                _ => format!("cannot connect to cellsd at {}: {e}", path.display()),
            };
            return Err(Failure(msg));
        }
    };
    Ok(zbus::connection::Builder::unix_stream(stream)
        .p2p()
        .build()
        .await?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(Failure(msg)) => {
            eprintln!("cellctl: {msg}");
            ExitCode::from(1)
        }
    }
}

async fn proxy(conn: &zbus::Connection) -> Result<Manager1Proxy<'static>, Failure> {
    Ok(Manager1Proxy::builder(conn)
        .destination("org.cells")?
        .build()
        .await?)
}

async fn run(cli: Cli) -> Result<u8, Failure> {
    if let Command::Doctor { state_dir, json } = &cli.command {
        return Ok(doctor::print(state_dir, *json));
    }
    if let Command::DialStdio = &cli.command {
        return remote::dial_stdio(&socket_path(&cli.socket)).await;
    }
    if let Command::Farm(FarmCmd::List { hosts, json }) = &cli.command {
        return farm_list(&cli, hosts, *json).await;
    }
    let (conn, _ssh) = match &cli.host {
        Some(url) => {
            if remote::passes_fds(&cli.command) {
                return Err(Failure(format!(
                    "this command hands cellsd a file (a terminal, a pipe, an archive), which cannot cross SSH: run it there (`ssh {} cellctl …`)",
                    remote::parse(url)?.0
                )));
            }
            let (c, child) =
                remote::connect(url, cli.host_socket.as_deref(), &cli.host_cellctl).await?;
            (c, Some(child))
        }
        None => (connect(&socket_path(&cli.socket)).await?, None),
    };
    let p = proxy(&conn).await?;
    match cli.command {
        Command::Doctor { state_dir, json } => Ok(doctor::print(&state_dir, json)),
        Command::Template(TemplateCmd::Build { name }) => template_build(&p, &name).await,
        Command::Template(TemplateCmd::Import {
            name,
            image: Some(image),
            ..
        }) => {
            let img = image::open(&image)?;
            template_import_oci(&p, &name, img).await
        }
        Command::Template(TemplateCmd::Pull { name, reference }) => {
            let bar = new_bar(
                "{prefix} [{bar:40}] {bytes}/{total_bytes} {wide_msg}",
                format!("pulling {reference}"),
            );
            let img = image::pull(&reference, |done, total, what| {
                bar.set_length(total);
                bar.set_position(done);
                bar.set_message(what.to_string());
            });
            bar.finish_and_clear();
            template_import_oci(&p, &name, img?).await
        }
        Command::Template(TemplateCmd::Import {
            name,
            system,
            vendor,
            product,
            system_ext,
            odm,
            ..
        }) => {
            if system.is_none() {
                return Err(Failure(
                    "no image given: an OCI image (oci:DIR[:TAG], oci-archive:FILE[:TAG] or \
                     docker-archive:FILE) or an Android build's system image (--android SYSTEM_IMG)"
                        .into(),
                ));
            }
            let mut images = HashMap::new();
            for (role, path) in [
                ("system", system),
                ("vendor", vendor),
                ("product", product),
                ("system_ext", system_ext),
                ("odm", odm),
            ] {
                let Some(path) = path else { continue };
                // Opened here, with this user's rights: cellsd reads no
                // path for a caller.
                let f = std::fs::File::open(&path).map_err(|e| {
                    Failure(format!(
                        "cannot open the {role} image {}: {e}",
                        path.display()
                    ))
                })?;
                let fd: std::os::fd::OwnedFd = f.into();
                images.insert(role.to_string(), zbus::zvariant::OwnedFd::from(fd));
            }
            let call = p.template_import(&name, images);
            template_progress(&p, &name, "importing", call).await
        }
        Command::Template(TemplateCmd::List { json }) => {
            let list: Vec<TemplateInfo> = p.template_list().await?;
            if json {
                let v: Vec<_> = list.iter().map(TemplateInfo::to_json).collect();
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print!("{}", table::templates(&list));
            }
            Ok(0)
        }
        Command::Create(a) => {
            let mut o: HashMap<&str, Value<'_>> = HashMap::new();
            o.insert("template", Value::from(a.template.as_str()));
            if let Some(h) = &a.hostname {
                o.insert("hostname", Value::from(h.as_str()));
            }
            if let Some(d) = &a.disk {
                o.insert("disk", Value::from(d.as_str()));
            }
            if let Some(m) = &a.memory {
                o.insert("memory", Value::from(m.as_str()));
            }
            if let Some(c) = &a.cpus {
                o.insert("cpus", Value::from(c.as_str()));
            }
            if let Some(n) = a.pids {
                o.insert("pids", Value::from(n));
            }
            if a.privileged {
                o.insert("privileged", Value::from(true));
            }
            if let Some(c) = &a.color {
                o.insert("color", Value::from(c.as_str()));
            }
            if let Some(b) = &a.background {
                o.insert("background", Value::from(b.as_str()));
            }
            if let Some(n) = &a.network {
                o.insert("network", Value::from(n.as_str()));
            }
            let seccomp = match a.seccomp.as_deref() {
                None => None,
                Some(v @ ("default" | "off")) => Some(v.to_string()),
                Some(file) => Some(std::fs::read_to_string(file).map_err(|e| {
                    Failure(format!(
                        "--seccomp {file}: cannot read it ({e}); give default, off or the path of a profile in docker's JSON format"
                    ))
                })?),
            };
            if let Some(s) = &seccomp {
                o.insert("seccomp", Value::from(s.as_str()));
            }
            let devices = a.devices.join(",");
            if !devices.is_empty() {
                o.insert("devices", Value::from(devices.as_str()));
            }
            p.create(&a.name, o).await?;
            Ok(0)
        }
        Command::Start { names } => {
            for n in names {
                p.start(&n).await?;
            }
            Ok(0)
        }
        Command::Stop { names, timeout } => {
            for n in names {
                p.stop(&n, timeout).await?;
            }
            Ok(0)
        }
        Command::Destroy { names } => {
            for n in names {
                p.destroy(&n).await?;
            }
            Ok(0)
        }
        Command::List { json } => {
            let list: Vec<VpInfo> = p.list().await?;
            if json {
                let v: Vec<_> = list.iter().map(VpInfo::to_json).collect();
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print!("{}", table::vps(&list));
            }
            Ok(0)
        }
        Command::Status { name, json } => {
            let s = p.status(&name).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&s.to_json()).unwrap_or_default()
                );
            } else {
                print!("{}", table::status(&s));
            }
            Ok(0)
        }
        Command::Exec(a) => exec(&p, a).await,
        Command::Power { json } => {
            let info = p.power().await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&info.to_json()).unwrap_or_default()
                );
            } else {
                print!("{}", table::power(&info));
            }
            Ok(0)
        }
        Command::Wakelocks { name, json } => {
            let locks = p.wakelocks(&name).await?;
            if json {
                println!("{}", serde_json::to_string(&locks).unwrap_or_default());
            } else {
                for l in locks {
                    println!("{l}");
                }
            }
            Ok(0)
        }
        Command::Checkpoint {
            vp,
            leave_running,
            output,
        } => {
            if output.is_some() && leave_running {
                return Err(Failure(
                    "--leave-running with -o: the VP's disk would go on changing under the saved processes; checkpoint without --leave-running to write an archive".into(),
                ));
            }
            let out = match &output {
                Some(o) => Some(open_output(o)?),
                None => None,
            };
            let t0 = std::time::Instant::now();
            let m = match p.checkpoint(&vp, leave_running).await {
                Ok(m) => m,
                Err(e) => {
                    // The file made for the archive is not left empty.
                    if let Some(o) = output.as_deref().filter(|o| *o != "-") {
                        let _ = std::fs::remove_file(o);
                    }
                    return Err(e.into());
                }
            };
            let m: serde_json::Value = serde_json::from_str(&m).unwrap_or_default();
            println!(
                "checkpointed {vp} in {} ms ({} external mounts, {} terminals{}){}",
                t0.elapsed().as_millis(),
                m["mounts"].as_array().map(|a| a.len()).unwrap_or(0),
                m["ttys"].as_array().map(|a| a.len()).unwrap_or(0),
                if m["framebuffer"] == true { ", the screen" } else { "" },
                if leave_running { "; it runs on" } else { "; restore it with `cellctl restore`" }
            );
            if let Some(fd) = out {
                let call = p.export_checkpoint(&vp, zbus::zvariant::OwnedFd::from(fd));
                let r = transfer_progress(&p, &vp, "exporting", call).await?;
                let v: serde_json::Value = serde_json::from_str(&r).unwrap_or_default();
                eprintln!(
                    "wrote {vp} with its checkpoint: {} bytes; `cellctl restore FILE` brings it back on another host",
                    v["bytes"]
                );
            }
            Ok(0)
        }
        Command::Restore { vp, name } => {
            let t0 = std::time::Instant::now();
            let archive = vp == "-"
                || vp.contains('/')
                || (std::path::Path::new(&vp).is_file() && p.status(&vp).await.is_err());
            if !archive {
                if name.is_some() {
                    return Err(Failure(format!(
                        "--name is for restoring an archive; '{vp}' is a VP here (give a file as ./{vp} if you meant the file)"
                    )));
                }
                p.restore(&vp).await?;
                println!("restored {vp} in {} ms", t0.elapsed().as_millis());
                return Ok(0);
            }
            let vp_name = import_archive(&p, &vp, name.as_deref(), false).await?;
            let imported = t0.elapsed();
            match p.restore(&vp_name).await {
                Ok(_) => {
                    println!(
                        "restored {vp_name} in {} ms (import {} ms)",
                        t0.elapsed().as_millis(),
                        imported.as_millis()
                    );
                    Ok(0)
                }
                Err(e) => {
                    let e = Failure::from(e);
                    let left = match p.destroy(&vp_name).await {
                        Ok(()) => "the imported VP was removed again".to_string(),
                        Err(d) => format!("removing the imported VP failed too: {}", Failure::from(d).0),
                    };
                    Err(Failure(format!("restoring {vp_name}: {}; {left}", e.0)))
                }
            }
        }
        Command::Snapshot { cmd, vp, name } => match (cmd, vp, name) {
            (Some(SnapshotCmd::List { vp, json }), _, _) => {
                let v: serde_json::Value =
                    serde_json::from_str(&p.snapshots(&vp).await?).unwrap_or_default();
                if json {
                    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                } else {
                    println!("NAME  CREATED  BYTES  RUNNING  TOOK_MS");
                    for s in v.as_array().into_iter().flatten() {
                        println!(
                            "{}  {}  {}  {}  {}",
                            s["name"].as_str().unwrap_or("-"),
                            utc(s["created"].as_u64().unwrap_or(0)),
                            s["bytes"],
                            if s["running"] == true { "yes" } else { "no" },
                            s["took_ms"]
                        );
                    }
                }
                Ok(0)
            }
            (Some(SnapshotCmd::Delete { vp, name }), _, _) => {
                p.snapshot_delete(&vp, &name).await?;
                Ok(0)
            }
            (None, Some(vp), Some(name)) => {
                let v: serde_json::Value =
                    serde_json::from_str(&p.snapshot(&vp, &name).await?).unwrap_or_default();
                println!(
                    "snapshot {name} of {vp}: {} bytes in {} ms{}",
                    v["bytes"],
                    v["took_ms"],
                    if v["running"] == true {
                        " (paused meanwhile)"
                    } else {
                        ""
                    }
                );
                Ok(0)
            }
            _ => Err(Failure(
                "give a VP and a snapshot name (`cellctl snapshot VP NAME`), or `snapshot list VP`, `snapshot delete VP NAME`".into(),
            )),
        },
        Command::Export {
            vp,
            output,
            incremental,
            checkpoint,
        } => {
            let fd = zbus::zvariant::OwnedFd::from(open_output(&output)?);
            let r = if checkpoint {
                transfer_progress(&p, &vp, "exporting", p.export_checkpoint(&vp, fd)).await?
            } else {
                transfer_progress(&p, &vp, "exporting", p.export(&vp, fd, incremental)).await?
            };
            let v: serde_json::Value = serde_json::from_str(&r).unwrap_or_default();
            eprintln!(
                "exported {vp}: {} bytes ({} of data in a {}-byte disk)",
                v["bytes"], v["data_bytes"], v["disk_bytes"]
            );
            Ok(0)
        }
        Command::Import {
            file,
            name,
            any_build,
        } => {
            let vp = import_archive(&p, &file, name.as_deref(), any_build).await?;
            println!("{vp}");
            Ok(0)
        }
        Command::Move {
            vp,
            to,
            name,
            keep,
            remote_socket,
            remote_cellctl,
            any_build,
            incremental,
            live,
        } => {
            let o = MoveOpts {
                name,
                keep,
                remote_socket,
                remote_cellctl,
                any_build,
                incremental,
                live,
            };
            move_vp(&p, &vp, &to, o).await
        }
        Command::DialStdio | Command::Farm(_) => Ok(0),
        Command::Web => {
            let url = p.web().await?;
            if url.is_empty() {
                return Err(Failure(
                    "cellsd serves no web console: start it with --web 127.0.0.1:PORT".into(),
                ));
            }
            println!("{url}");
            Ok(0)
        }
        Command::Rollback { vp, name } => {
            p.rollback(&vp, &name).await?;
            Ok(0)
        }
        Command::Reset { vp } => {
            p.reset(&vp).await?;
            Ok(0)
        }
        Command::Freeze { names } => {
            for n in names {
                p.freeze(&n).await?;
            }
            Ok(0)
        }
        Command::Thaw { names } => {
            for n in names {
                p.thaw(&n).await?;
            }
            Ok(0)
        }
        Command::Adb {
            name,
            connect,
            authorize,
            revoke,
            keys,
        } => {
            if let Some(file) = authorize {
                let (path, key) = read_adb_key(&file)?;
                p.adb_authorize(&name, &key).await?;
                eprintln!("authorized {} for VP '{name}'", path.display());
            }
            if let Some(file) = revoke {
                let key = if file.is_empty() {
                    String::new()
                } else {
                    read_adb_key(&file)?.1
                };
                let n = p.adb_revoke(&name, &key).await?;
                eprintln!("revoked {n} key(s) of VP '{name}'");
            }
            if keys {
                for (comment, start) in p.adb_keys(&name).await? {
                    println!("{start}...  {comment}");
                }
                return Ok(0);
            }
            let serial = p.adb(&name).await?;
            let running = p.status(&name).await?.state != "stopped";
            if !running {
                eprintln!(
                    "note: VP '{name}' is not running; its adb port answers once it is started"
                );
            }
            if connect {
                let st = std::process::Command::new("adb")
                    .args(["connect", &serial])
                    .status()
                    .map_err(|e| {
                        Failure(format!(
                            "cannot run adb ({e}): install Debian's adb package"
                        ))
                    })?;
                if !st.success() {
                    return Ok(1);
                }
            }
            println!("{serial}");
            Ok(0)
        }
        Command::Network { name, policy } => {
            p.set_network(&name, &policy).await?;
            Ok(0)
        }
        Command::Port(PortCmd::Add { name, spec }) => {
            p.port_add(&name, &spec).await?;
            Ok(0)
        }
        Command::Port(PortCmd::Remove { name, host_port }) => {
            p.port_remove(&name, host_port).await?;
            Ok(0)
        }
        Command::Port(PortCmd::List { name, json }) => {
            let ports = p.ports(&name).await?;
            if json {
                let v: Vec<_> = ports
                    .iter()
                    .map(|(h, v, kind, active)| {
                        serde_json::json!({"host": h, "vp": v, "adb": kind == "adb", "active": active})
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print!("{}", table::ports(&ports));
            }
            Ok(0)
        }
        Command::Switch { name } => {
            p.switch(&name).await?;
            Ok(0)
        }
        Command::Foreground => {
            let fg = p.foreground().await?;
            if !fg.is_empty() {
                println!("{fg}");
            }
            Ok(0)
        }
        Command::Next => {
            println!("{}", p.next().await?);
            Ok(0)
        }
        Command::Prev => {
            println!("{}", p.prev().await?);
            Ok(0)
        }
        Command::Screenshot { output, vp } => {
            let png = p.screenshot(vp.as_deref().unwrap_or("")).await?;
            std::fs::write(&output, &png)
                .map_err(|e| Failure(format!("cannot write {}: {e}", output.display())))?;
            Ok(0)
        }
        Command::Input(cmd) => {
            match cmd {
                InputCmd::Tap { x, y } => p.input_tap(x, y).await?,
                InputCmd::Swipe { x1, y1, x2, y2, ms } => p.input_swipe(x1, y1, x2, y2, ms).await?,
                InputCmd::Key { name, down, up } => {
                    let action = if down {
                        "down"
                    } else if up {
                        "up"
                    } else {
                        "press"
                    };
                    p.input_key(&name, action).await?
                }
                InputCmd::Text { text } => p.input_text(&text).await?,
            }
            Ok(0)
        }
        Command::Display { json } => {
            let info = p.display_info().await?;
            let mut keys: Vec<&String> = info.keys().collect();
            keys.sort();
            let value = |v: &zbus::zvariant::OwnedValue| -> serde_json::Value {
                match &**v {
                    Value::Str(s) => s.as_str().into(),
                    Value::U32(n) => (*n).into(),
                    Value::U64(n) => (*n).into(),
                    Value::Array(a) => a
                        .iter()
                        .map(|x| match x {
                            Value::Str(s) => serde_json::Value::from(s.as_str()),
                            other => serde_json::Value::from(format!("{other:?}")),
                        })
                        .collect(),
                    other => format!("{other:?}").into(),
                }
            };
            // The brightness in force (the backlight) and the lights.
            let lights: serde_json::Value =
                serde_json::from_str(&p.lights().await?).unwrap_or_default();
            let brightness: serde_json::Map<String, serde_json::Value> = lights["lights"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.starts_with("backlight/"))
                .map(|(k, v)| (k["backlight/".len()..].to_string(), v["value"].clone()))
                .collect();
            if json {
                let mut m: serde_json::Map<String, serde_json::Value> = keys
                    .iter()
                    .map(|k| (k.to_string(), value(&info[*k])))
                    .collect();
                m.insert("brightness".into(), brightness.into());
                m.insert("lights".into(), lights);
                println!("{}", serde_json::to_string_pretty(&m).unwrap_or_default());
            } else {
                for k in keys {
                    println!("{k}: {}", value(&info[k]));
                }
                for (k, v) in brightness {
                    println!("brightness {k}: {v}");
                }
            }
            Ok(0)
        }
        Command::Audio { cmd, json } => audio(&p, cmd, json).await,
        Command::Phone { cmd, json } => {
            match cmd {
                Some(PhoneCmd::Number { name, number }) => {
                    p.phone_number(&name, &number).await?;
                    return Ok(0);
                }
                Some(PhoneCmd::Assign { name }) => {
                    p.phone_assign(&name).await?;
                    return Ok(0);
                }
                None => {}
            }
            let v: serde_json::Value = serde_json::from_str(&p.phone().await?).unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                return Ok(0);
            }
            if let Some(c) = v["cellular"].as_object() {
                println!(
                    "cellular: {} {} {} signal {} number {} -> {}{}",
                    c["modem"].as_str().unwrap_or("-"),
                    if c["registered"].as_bool() == Some(true) {
                        "registered"
                    } else {
                        "not registered"
                    },
                    c["operator"].as_str().unwrap_or(""),
                    c["signal"],
                    c["number"].as_str().unwrap_or("-"),
                    c["owner"]
                        .as_str()
                        .unwrap_or("no VP (cellctl phone assign VP)"),
                    c["error"]
                        .as_str()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                );
            }
            let sip = v["sip"].as_object();
            if let Some(s) = sip {
                println!(
                    "sip: {} (domain {}, cellsd at {}){}",
                    s["server"].as_str().unwrap_or("-"),
                    s["domain"].as_str().unwrap_or("-"),
                    s["local"].as_str().unwrap_or("-"),
                    s["error"]
                        .as_str()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                );
            }
            let registration = |number: &str| -> String {
                let Some(s) = sip else {
                    return "-".into();
                };
                let r = s["registrations"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["number"].as_str() == Some(number));
                match r {
                    None => "-".into(),
                    Some(r) if r["registered"].as_bool() == Some(true) => "registered".into(),
                    Some(r) => format!(
                        "not registered ({})",
                        r["error"].as_str().unwrap_or("waiting for the server")
                    ),
                }
            };
            println!("VP  NUMBER  MODEM  SIP");
            for r in v["vps"].as_array().into_iter().flatten() {
                let number = r["number"]
                    .as_str()
                    .filter(|n| !n.is_empty())
                    .unwrap_or("-");
                println!(
                    "{}  {}  {}  {}",
                    r["vp"].as_str().unwrap_or("-"),
                    number,
                    if r["running"].as_bool() == Some(true) {
                        "up"
                    } else {
                        "down"
                    },
                    registration(number)
                );
            }
            for c in v["calls"].as_array().into_iter().flatten() {
                println!(
                    "call {} ({}): {} ({}) -> {} ({}) {}",
                    c["id"],
                    c["via"].as_str().unwrap_or("-"),
                    c["from"].as_str().unwrap_or("-"),
                    c["from_vp"].as_str().unwrap_or("-"),
                    c["to"].as_str().unwrap_or("-"),
                    c["to_vp"].as_str().unwrap_or("-"),
                    c["state"].as_str().unwrap_or("-")
                );
            }
            for m in v["messages"].as_array().into_iter().flatten() {
                println!(
                    "sms {} ({}) -> {} ({}): {}",
                    m["from"].as_str().unwrap_or("-"),
                    m["from_vp"].as_str().unwrap_or("-"),
                    m["to"].as_str().unwrap_or("-"),
                    m["to_vp"].as_str().unwrap_or("-"),
                    m["text"].as_str().unwrap_or("")
                );
            }
            Ok(0)
        }
        Command::Call { name, number } => {
            p.phone_action(&name, "dial", &number, "").await?;
            Ok(0)
        }
        Command::Answer { name } => {
            p.phone_action(&name, "answer", "", "").await?;
            Ok(0)
        }
        Command::Hangup { name } => {
            p.phone_action(&name, "hangup", "", "").await?;
            Ok(0)
        }
        Command::Sms { name, number, text } => {
            p.phone_action(&name, "sms", &number, &text).await?;
            Ok(0)
        }
        Command::Sensor { cmd, json } => {
            if let Some(SensorCmd::Set { sensor, values }) = cmd {
                p.sensor_set(&sensor, &values).await?;
                return Ok(0);
            }
            let s = p.sensors().await?;
            let fmt = |v: &[f64]| {
                if v.is_empty() {
                    "not set".to_string()
                } else {
                    v.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                }
            };
            if json {
                let v = serde_json::json!({"accel": s.accel, "location": s.location, "active": s.active});
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!("accel (m/s²): {}", fmt(&s.accel));
                println!("location (lat lon alt): {}", fmt(&s.location));
                println!("streams run in: {}", s.active.join(" "));
            }
            Ok(0)
        }
        Command::Alarms { json } => {
            let v: serde_json::Value = serde_json::from_str(&p.alarms().await?).unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                return Ok(0);
            }
            let secs = |ns: &serde_json::Value| -> String {
                ns.as_f64()
                    .map(|n| format!("{:.3}", n / 1e9))
                    .unwrap_or_else(|| "-".into())
            };
            println!("VP  RTC_WAKEUP(unix s)  ELAPSED_WAKEUP(boot s)  FIRED");
            for (vp, a) in v["vps"].as_object().into_iter().flatten() {
                println!(
                    "{vp}  {}  {}  {}",
                    secs(&a["rtc_wakeup_ns"]),
                    secs(&a["elapsed_wakeup_ns"]),
                    a["fired"]
                );
            }
            println!(
                "host alarm timers: real-time {}, boot-time {}",
                secs(&v["host_rtc_alarm_ns"]),
                secs(&v["host_boottime_alarm_ns"])
            );
            if let Some(e) = v["wake_error"].as_str().filter(|e| !e.is_empty()) {
                println!("note: {e}");
            }
            Ok(0)
        }
        Command::Location {
            cmd: LocationCmd::Set { lat, lon, alt },
        } => {
            p.location_set(lat, lon, alt).await?;
            Ok(0)
        }
        Command::Logcat(a) => {
            // -f and --all may come after the VP too.
            let (mut follow, mut all) = (a.follow, a.all);
            let mut args: Vec<String> = a
                .args
                .into_iter()
                .filter(|x| match x.as_str() {
                    "-f" | "--follow" => {
                        follow = true;
                        false
                    }
                    "--all" => {
                        all = true;
                        false
                    }
                    _ => true,
                })
                .collect();
            let vps: Vec<String> = if all {
                p.list()
                    .await?
                    .into_iter()
                    .filter(|v| v.state == "running" || v.state == "frozen")
                    .map(|v| v.name)
                    .collect()
            } else {
                if args.is_empty() || args[0].starts_with('-') {
                    return Err(Failure(
                        "give a VP (cellctl logcat VP [options]) or --all".into(),
                    ));
                }
                vec![args.remove(0)]
            };
            let mut o = cells_log::logcat::Options::parse(&args).map_err(Failure)?;
            if o.clear || o.sizes {
                return Err(Failure(
                    "-c and -g act in the VP: cellctl exec VP -- logcat -c".into(),
                ));
            }
            // Dump unless following.
            o.request.dump = !follow;
            let mut readers = Vec::new();
            for vp in vps {
                match p.log_open(&vp).await {
                    Ok(fd) => readers.push((vp, std::os::fd::OwnedFd::from(fd))),
                    Err(e) if all => {
                        eprintln!("cellctl: VP '{vp}': {}", CellsError::from(e).message())
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            logcat::print(readers, &o, all).map_err(Failure)?;
            Ok(0)
        }
        Command::Console { name } => {
            let fd = p.console(&name).await?;
            let stream = std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(fd));
            console::attach(&name, stream)?;
            Ok(0)
        }
    }
}

/// The calling user's adb public key: `~/.android/adbkey.pub` of the user
/// who ran sudo (SUDO_USER), else of $ANDROID_USER_HOME or $HOME; or `file`.
fn read_adb_key(file: &str) -> Result<(PathBuf, String), Failure> {
    let path = if !file.is_empty() {
        PathBuf::from(file)
    } else {
        let home = std::env::var("SUDO_USER")
            .ok()
            .filter(|u| !u.is_empty() && u != "root")
            .and_then(|u| {
                std::fs::read_to_string("/etc/passwd")
                    .ok()?
                    .lines()
                    .find_map(|l| {
                        let f: Vec<&str> = l.split(':').collect();
                        (f.first() == Some(&u.as_str()))
                            .then(|| PathBuf::from(f.get(5).copied().unwrap_or("")))
                    })
            });
        match (home, std::env::var_os("ANDROID_USER_HOME")) {
            (Some(h), _) => h.join(".android/adbkey.pub"),
            (None, Some(a)) => PathBuf::from(a).join("adbkey.pub"),
            (None, None) => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".android/adbkey.pub"),
        }
    };
    let key = std::fs::read_to_string(&path).map_err(|e| {
        Failure(format!(
            "cannot read the adb key {} ({e}): run `adb start-server` once as that user (adb makes ~/.android/adbkey.pub), or give the key file: --authorize KEYFILE",
            path.display()
        ))
    })?;
    Ok((path, key.trim().to_string()))
}

async fn template_build(p: &Manager1Proxy<'_>, name: &str) -> Result<u8, Failure> {
    template_progress(p, name, "building", p.template_build(name)).await
}

/// Run a template build or import, showing its progress signals as a bar.
/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
fn utc(secs: u64) -> String {
    let (y, m, d) = cells_log::format::civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A progress bar on stderr.
fn new_bar(template: &str, prefix: String) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix);
    bar
}

/// A transfer's progress bar (on stderr) while `call` runs.
async fn transfer_progress(
    p: &Manager1Proxy<'_>,
    vp: &str,
    verb: &str,
    call: impl std::future::Future<Output = zbus::Result<String>>,
) -> Result<String, Failure> {
    let progress = p.receive_vp_transfer_progress().await?;
    let bar = new_bar(
        "{prefix} [{bar:40}] {bytes}/{total_bytes} {wide_msg}",
        format!("{verb} {vp}"),
    );
    let r = drive(&bar, progress, call, |bar, sig| {
        if let Ok(a) = sig.args() {
            if a.step == verb {
                bar.set_length(a.total);
                bar.set_position(a.done);
            }
        }
    })
    .await?;
    bar.finish_and_clear();
    Ok(r)
}

/// Run `call` while `progress`' signals move `bar`; the bar is left as it
/// was when the call fails.
async fn drive<T, S: futures_util::Stream + Unpin>(
    bar: &indicatif::ProgressBar,
    mut progress: S,
    call: impl std::future::Future<Output = zbus::Result<T>>,
    mut update: impl FnMut(&indicatif::ProgressBar, S::Item),
) -> Result<T, Failure> {
    tokio::pin!(call);
    loop {
        tokio::select! {
            r = &mut call => {
                return r.map_err(|e| {
                    bar.abandon();
                    e.into()
                });
            }
            Some(sig) = progress.next() => update(bar, sig),
        }
    }
}

/// `cellctl farm list`: every host's VPs, with the host.
async fn farm_list(cli: &Cli, hosts: &[String], json: bool) -> Result<u8, Failure> {
    let hosts: Vec<String> = if hosts.is_empty() {
        std::env::var("CELLS_FARM")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    } else {
        hosts.to_vec()
    };
    if hosts.is_empty() {
        return Err(Failure(
            "no hosts: give them (`cellctl farm list local ssh://root@phone2`) or set CELLS_FARM"
                .into(),
        ));
    }
    let mut all = Vec::new();
    let mut failed = 0u8;
    for h in &hosts {
        let got = async {
            let (conn, ssh) = if h == "local" {
                (connect(&socket_path(&cli.socket)).await?, None)
            } else {
                let (c, s) =
                    remote::connect(h, cli.host_socket.as_deref(), &cli.host_cellctl).await?;
                (c, Some(s))
            };
            let list: Vec<VpInfo> = proxy(&conn).await?.list().await?;
            drop(ssh);
            Ok::<_, Failure>(list)
        }
        .await;
        match got {
            Ok(list) => all.extend(list.into_iter().map(|v| (h.clone(), v))),
            Err(e) => {
                eprintln!("cellctl: {h}: {}", e.0);
                failed = 1;
            }
        }
    }
    if json {
        let v: Vec<_> = all
            .iter()
            .map(|(h, v)| {
                let mut j = v.to_json();
                j["host"] = serde_json::Value::String(h.clone());
                j
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        // One table (its columns as wide as all hosts' rows need), in the
        // order given, each line after its host.
        let vps: Vec<VpInfo> = all.iter().map(|(_, v)| v.clone()).collect();
        let width = all.iter().map(|(h, _)| h.len()).max().unwrap_or(0).max(4);
        if vps.is_empty() {
            print!("{}", table::vps(&vps));
        } else {
            let text = table::vps(&vps);
            let mut lines = text.lines();
            println!("{:<width$}  {}", "HOST", lines.next().unwrap_or(""));
            for ((h, _), l) in all.iter().zip(lines) {
                println!("{h:<width$}  {l}");
            }
        }
    }
    Ok(failed)
}

/// `cellctl import FILE|-`: the imported VP's name.
async fn import_archive(
    p: &Manager1Proxy<'_>,
    file: &str,
    name: Option<&str>,
    any_build: bool,
) -> Result<String, Failure> {
    use std::os::fd::{AsFd, OwnedFd};
    let fd: OwnedFd = if file == "-" {
        std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Failure(format!("stdin: {e}")))?
    } else {
        std::fs::File::open(file)
            .map_err(|e| Failure(format!("cannot read {file}: {e}")))?
            .into()
    };
    let label = name.unwrap_or(file).to_string();
    let call = p.import(
        zbus::zvariant::OwnedFd::from(fd),
        name.unwrap_or(""),
        any_build,
    );
    let r = transfer_progress(p, &label, "importing", call).await?;
    let v: serde_json::Value = serde_json::from_str(&r).unwrap_or_default();
    for w in v["warnings"].as_array().into_iter().flatten() {
        eprintln!("warning: {}", w.as_str().unwrap_or(""));
    }
    Ok(v["vp"].as_str().unwrap_or("").to_string())
}

/// An output file (0600, truncated), or stdout for -.
fn open_output(output: &str) -> Result<std::os::fd::OwnedFd, Failure> {
    use std::os::fd::AsFd;
    if output == "-" {
        return std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Failure(format!("stdout: {e}")));
    }
    use std::os::unix::fs::OpenOptionsExt;
    Ok(std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(output)
        .map_err(|e| Failure(format!("cannot write {output}: {e}")))?
        .into())
}

struct MoveOpts {
    name: Option<String>,
    keep: bool,
    remote_socket: Option<String>,
    remote_cellctl: String,
    any_build: bool,
    incremental: bool,
    live: bool,
}

/// `cellctl move`: export into `ssh HOST cellctl import -` (with --live:
/// checkpoint, then the archive with the checkpoint into `cellctl restore -`).
async fn move_vp(p: &Manager1Proxy<'_>, vp: &str, to: &str, o: MoveOpts) -> Result<u8, Failure> {
    let MoveOpts {
        name,
        keep,
        remote_socket,
        remote_cellctl,
        any_build,
        incremental,
        live,
    } = o;
    let remote_cellctl = remote_cellctl.as_str();
    let there = name.as_deref().unwrap_or(vp);
    let mut args = vec![
        if live { "restore" } else { "import" },
        "-",
        "--name",
        there,
    ];
    if any_build {
        args.push("--any-build");
    }
    let words = remote::cellctl_line(remote_socket.as_deref(), remote_cellctl, &args);
    let (mut cmd, prog) = remote::ssh(to, &words).map_err(|e| Failure(format!("--to {}", e.0)))?;
    let prog = prog.as_str();
    let userhost = remote::parse(to)?.0;
    let was_running = p
        .status(vp)
        .await
        .map(|s| s.state == "running")
        .unwrap_or(false);
    if live {
        if !was_running {
            return Err(Failure(format!(
                "{vp} is not running: a live move moves a running VP; move it without --live"
            )));
        }
        let t0 = std::time::Instant::now();
        p.checkpoint(vp, false).await?;
        eprintln!("checkpointed {vp} in {} ms", t0.elapsed().as_millis());
    } else if was_running {
        eprintln!("stopping {vp} to move it");
        p.stop(vp, 10).await?;
    }
    let (r, w) = nix::unistd::pipe().map_err(|e| Failure(format!("pipe: {e}")))?;
    cmd.stdin(std::process::Stdio::from(r));
    let mut child = cmd
        .spawn()
        .map_err(|e| Failure(format!("cannot run {prog}: {e}")))?;
    // The pipe's read end is ssh's alone now: if ssh ends early, the
    // export gets EPIPE instead of waiting for a reader.
    drop(cmd);
    let exported = if live {
        let call = p.export_checkpoint(vp, zbus::zvariant::OwnedFd::from(w));
        transfer_progress(p, vp, "exporting", call).await
    } else {
        let call = p.export(vp, zbus::zvariant::OwnedFd::from(w), incremental);
        transfer_progress(p, vp, "exporting", call).await
    };
    let status = child
        .wait()
        .await
        .map_err(|e| Failure(format!("{prog}: {e}")))?;
    let failed = match (&exported, status.success()) {
        (Ok(_), true) => None,
        (Err(e), _) => Some(format!("exporting {vp}: {}", e.0)),
        (Ok(_), false) => Some(format!(
            "the import on {userhost} failed ({prog} exited with {status}; its message is above)"
        )),
    };
    if let Some(why) = failed {
        if live {
            // Its processes go on here instead.
            return match p.restore(vp).await {
                Ok(_) => Err(Failure(format!("{why}: {vp} runs here again, restored"))),
                Err(e) => Err(Failure(format!(
                    "{why}; restoring {vp} here failed too: {} (its checkpoint is kept: `cellctl restore {vp}`)",
                    Failure::from(e).0
                ))),
            };
        }
        if was_running {
            let _ = p.start(vp).await;
        }
        return Err(Failure(format!("{why}: {vp} stays here, unchanged")));
    }
    if keep {
        eprintln!("{vp} is on {userhost} now; kept here, stopped");
    } else {
        p.destroy(vp).await?;
        eprintln!("{vp} is on {userhost} now, and gone from here");
    }
    Ok(0)
}

/// Hand an OCI image (its config, a fd per layer) to cellsd.
async fn template_import_oci(
    p: &Manager1Proxy<'_>,
    name: &str,
    img: image::Image,
) -> Result<u8, Failure> {
    let layers: Vec<zbus::zvariant::Fd<'_>> =
        img.layers.iter().map(zbus::zvariant::Fd::from).collect();
    let call = p.template_import_oci(name, &img.config, layers);
    template_progress(p, name, "importing", call).await
}

async fn template_progress(
    p: &Manager1Proxy<'_>,
    name: &str,
    verb: &str,
    call: impl std::future::Future<Output = zbus::Result<String>>,
) -> Result<u8, Failure> {
    let progress = p.receive_template_build_progress().await?;
    let bar = new_bar(
        "{prefix} [{bar:40}] {pos}/{len} {wide_msg}",
        format!("{verb} {name}"),
    );
    let id = drive(&bar, progress, call, |bar, sig| {
        if let Ok(a) = sig.args() {
            if a.template == name {
                bar.set_length(a.total);
                bar.set_position(a.done);
                bar.set_message(a.step.clone());
            }
        }
    })
    .await?;
    bar.finish_with_message("done");
    println!("template {name}: build {id} is current");
    Ok(0)
}

async fn exec(p: &Manager1Proxy<'_>, a: ExecArgs) -> Result<u8, Failure> {
    use std::os::fd::OwnedFd;
    let mut env: Vec<String> = a.env.clone();
    for kv in &env {
        if !kv.contains('=') || kv.starts_with('=') {
            return Err(Failure(format!("--env '{kv}' must look like KEY=VALUE")));
        }
    }
    if let Ok(term) = std::env::var("TERM") {
        if !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push(format!("TERM={term}"));
        }
    }
    let argv: Vec<&str> = a.command.iter().map(String::as_str).collect();
    let envs: Vec<&str> = env.iter().map(String::as_str).collect();
    let (rows, cols) = relay::winsize().unwrap_or((24, 80));
    let (id, fds) = p
        .exec_start(&a.name, &argv, &envs, &a.cwd, a.tty, rows, cols)
        .await?;
    let mut fds: Vec<OwnedFd> = fds.into_iter().map(OwnedFd::from).collect();
    let (done_r, done_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Failure(format!("pipe: {e}")))?;
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut forwarded = vec![
        SignalKind::terminate(),
        SignalKind::hangup(),
        SignalKind::quit(),
    ];
    let (relay, _raw) = if a.tty {
        let master = fds
            .pop()
            .ok_or_else(|| Failure("cellsd sent no pty for the command".into()))?;
        let raw = relay::RawMode::enter();
        // The VP's pty follows our terminal's size.
        let winch = master.try_clone()?;
        let mut s = signal(SignalKind::window_change())?;
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                relay::resize(std::os::fd::AsRawFd::as_raw_fd(&winch));
            }
        });
        (
            std::thread::spawn(move || relay::tty(master, done_r)),
            Some(raw),
        )
    } else {
        let [stdin, stdout, stderr]: [OwnedFd; 3] = fds
            .try_into()
            .map_err(|_| Failure("cellsd sent no pipes for the command".into()))?;
        // Ctrl-C at our terminal goes to the command.
        forwarded.push(SignalKind::interrupt());
        // A terminal's input is the user's next commands: the command gets
        // it only when asked for (-i), as with docker exec.
        // SAFETY: isatty has no preconditions.
        let give_stdin = a.interactive || unsafe { libc::isatty(0) } != 1;
        (
            std::thread::spawn(move || {
                relay::pipes(give_stdin.then_some(stdin), [stdout, stderr], done_r)
            }),
            None,
        )
    };
    for k in forwarded {
        let mut s = signal(k)?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                if tx.send(k.as_raw_value()).is_err() {
                    break;
                }
            }
        });
    }
    let wait = p.exec_wait(id);
    tokio::pin!(wait);
    let code = loop {
        tokio::select! {
            r = &mut wait => break r,
            Some(sig) = rx.recv() => p.exec_signal(id, sig).await?,
        }
    };
    // The command has exited: the relay drains what it wrote and ends.
    drop(done_w);
    let _ = tokio::task::spawn_blocking(move || relay.join()).await;
    Ok(code?.clamp(0, 255) as u8)
}

async fn audio(p: &Manager1Proxy<'_>, cmd: Option<AudioCmd>, json: bool) -> Result<u8, Failure> {
    match cmd {
        Some(AudioCmd::Record { file, seconds }) => {
            if !(seconds > 0.0 && seconds <= 60.0) {
                return Err(Failure(format!(
                    "--seconds {seconds}: record 0.001 to 60 seconds"
                )));
            }
            let pcm = p
                .audio_record((seconds * 1000.0).round().max(1.0) as u32)
                .await?;
            let data = cells_api::audio::wav(&cells_api::audio::from_bytes(&pcm));
            std::fs::write(&file, data)
                .map_err(|e| Failure(format!("write {}: {e}", file.display())))?;
            Ok(0)
        }
        Some(AudioCmd::Mic { file }) => {
            let data = std::fs::read(&file)
                .map_err(|e| Failure(format!("read {}: {e}", file.display())))?;
            let s = cells_api::audio::parse_wav(&data)
                .map_err(|e| Failure(format!("{}: {e}", file.display())))?;
            p.audio_mic(&cells_api::audio::to_bytes(&s)).await?;
            Ok(0)
        }
        None => {
            let v: serde_json::Value = serde_json::from_str(&p.audio().await?).unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                return Ok(0);
            }
            let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
            println!("format: {}", s("format"));
            println!("output: {}", s("output"));
            println!("microphone: {}", s("microphone"));
            let calls: Vec<&str> = v["calls"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str())
                .collect();
            println!(
                "in a call: {}",
                if calls.is_empty() {
                    "-".to_string()
                } else {
                    calls.join(", ")
                }
            );
            println!("VP  POLICY  GAIN  MIC  PLAYED_MS  HEARD_MS  CAPTURED_MS");
            for r in v["vps"].as_array().into_iter().flatten() {
                println!(
                    "{}  {}  {}  {}  {}  {}  {}",
                    r["vp"].as_str().unwrap_or("-"),
                    r["policy"].as_str().unwrap_or("-"),
                    r["gain"],
                    if r["mic"].as_bool() == Some(true) {
                        "yes"
                    } else {
                        "no"
                    },
                    r["played_ms"],
                    r["heard_ms"],
                    r["captured_ms"]
                );
            }
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn unix_seconds_as_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_796_647_615), "2026-12-07T12:46:55Z");
    }
}
