//! A VP's definition: the OCI runtime spec for the runtime part (process,
//! namespaces, mounts, devices, resources, capabilities) and the
//! cells-specific settings beside it. Stored as `<state>/vps/NAME/vp.json`.

use crate::devices::model::DevicePolicies;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxDeviceBuilder, LinuxDeviceType, LinuxIdMappingBuilder, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder,
    MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use serde::{Deserialize, Serialize};

use crate::name::{self, NameError};
use mux_fb::geometry::Rgb;

/// Current on-disk format of vp.json.
pub const CONFIG_VERSION: u32 = 1;
/// Each VP's user namespace maps this many ids (root = first one).
pub const ID_RANGE: u32 = 65536;
/// Default first host id of slot 0; VP slot N maps to base + N * ID_RANGE.
pub const DEFAULT_ID_BASE: u32 = 1_000_000;
/// Default pids limit: Android starts hundreds of processes; this bounds a
/// fork bomb without getting in a phone's way.
pub const DEFAULT_PIDS_LIMIT: i64 = 4096;
/// Smallest memory limit accepted: below this the VP's init cannot start.
pub const MIN_MEMORY: u64 = 16 << 20;
/// `--memory none`: no memory limit of its own (the limit over all VPs
/// still applies).
pub const NO_LIMIT: u64 = u64::MAX;
/// Default memory limit of a VP: 2 GiB, what an entry-level phone has
/// (Android Go targets 1-2 GiB) — enough for a persona, small enough that
/// one runaway VP cannot take the host's memory. Never more than half
/// the host's RAM (see [`default_memory`]).
pub const DEFAULT_MEMORY: u64 = 2 << 30;

/// The host's RAM (MemTotal), if /proc/meminfo says.
pub fn host_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The default VP memory limit for a host with `ram` bytes.
pub fn default_memory(ram: Option<u64>) -> u64 {
    ram.map(|r| (r / 2).max(MIN_MEMORY))
        .unwrap_or(DEFAULT_MEMORY)
        .min(DEFAULT_MEMORY)
}

/// What the host keeps out of all VPs' reach together: a tenth of its RAM,
/// at least 1 GiB (cellsd, the monitors' page cache, sshd, the kernel).
pub fn memory_reserve(ram: u64) -> u64 {
    (ram / 10).max(1 << 30).min(ram / 2)
}
pub const CPU_PERIOD_US: u64 = 100_000;
/// VP cgroups live under this cgroup (in every hierarchy).
pub const DEFAULT_CGROUP_PARENT: &str = "cells";

/// Capabilities taken out of every VP's bounding set: loading modules, raw
/// I/O, creating device nodes, rebooting, setting the clock, MAC policy and
/// the audit configuration are the host's business, never a VP's.
pub const DROPPED_CAPS: &[&str] = &[
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_MKNOD",
    "CAP_SYS_BOOT",
    "CAP_SYS_TIME",
    "CAP_MAC_ADMIN",
    "CAP_MAC_OVERRIDE",
    "CAP_AUDIT_CONTROL",
];

/// Linux capability names by number (linux/capability.h).
pub const CAP_NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

pub fn cap_number(name: &str) -> Option<u32> {
    CAP_NAMES.iter().position(|n| *n == name).map(|i| i as u32)
}

/// Paths masked inside every VP, as container runtimes do: kernel memory,
/// keys and timing side channels, firmware tables.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths made read-only inside every VP: global kernel knobs.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Character devices every VP's /dev holds (besides console, ptmx and pts,
/// which the runtime creates per VP): (name, major, minor).
pub const DEVICES: &[(&str, i64, i64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("invalid memory size '{0}': give a number with an optional K, M, G or T suffix, at least 16M (for example 512M)")]
    BadMemory(String),
    #[error("invalid CPU limit '{0}': give the number of CPUs as a positive number, for example 1 or 0.5")]
    BadCpus(String),
    #[error("invalid disk size '{0}': give at least 64M (for example 4G), or none")]
    BadDisk(String),
    #[error("invalid pids limit {0}: give a number of at least 16")]
    BadPids(i64),
    #[error("invalid colour '{0}': give six hex digits RRGGBB, for example ff0000 for red")]
    BadColor(String),
    #[error("invalid hostname '{0}': use 1 to 63 characters from a-z, A-Z, 0-9 and '-'")]
    BadHostname(String),
    #[error("invalid background policy '{0}': use run, stop or freeze-after=DURATION (for example freeze-after=30s; units ms, s, m, h)")]
    BadBackground(String),
    #[error("invalid seccomp setting: {0}; use --seccomp default, off or FILE (a profile in docker's JSON format)")]
    BadSeccomp(String),
    #[error(transparent)]
    Devices(#[from] crate::devices::model::PolicyError),
    #[error("the network device is none but the network policy is {0}: give one of --device network=none or --network")]
    NetworkConflict(String),
    #[error("building the OCI runtime spec failed: {0}")]
    Spec(#[from] oci_spec::OciSpecError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid VP definition ({source}); move it away or fix it, then restart cellsd")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} has format version {found}, this cellsd reads version {CONFIG_VERSION}: use a matching cellsd")]
    Version { path: PathBuf, found: u32 },
    #[error("{path}: {field} {why}; cellsd does not start a VP whose definition it did not write: restore the file (or recreate the VP), then restart cellsd; nothing of the VP was changed or removed")]
    Invalid {
        path: PathBuf,
        field: String,
        why: String,
    },
}

/// What `cellctl create` asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateOptions {
    pub template: String,
    pub hostname: Option<String>,
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    pub pids: Option<i64>,
    /// Disk size (writable layer and /data together); NO_LIMIT: none.
    pub disk: Option<u64>,
    /// No user namespace: VP root is host root (minus the dropped capabilities).
    pub privileged: bool,
    /// Persona colour, e.g. "ff0000" (default: derived from the name).
    pub color: Option<String>,
    /// What happens to the VP in the background (default: it runs).
    pub background: Option<BackgroundPolicy>,
    /// Its network policy (default: isolated).
    pub network: Option<crate::devices::network::NetworkPolicy>,
    /// Its seccomp filter (default: cells' default profile).
    pub seccomp: Option<Seccomp>,
    /// Its device policies (default: every device's own).
    pub devices: Option<DevicePolicies>,
    /// A VP from an OCI bundle (`cells-runtime create`): its root, process
    /// and mounts come from there; `template` is unused.
    pub oci: Option<crate::oci::OciSource>,
}

/// A VP's seccomp filter (see [`crate::seccomp`]): stored in vp.json as
/// `"off"`, or as the profile itself (docker's JSON format); absent means
/// the default profile.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Seccomp {
    #[default]
    Default,
    Off,
    Custom(serde_json::Value),
}

impl Seccomp {
    pub fn is_default(&self) -> bool {
        *self == Seccomp::Default
    }

    /// `default`, `off`, or a profile's JSON text.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        match s.trim() {
            "default" => Ok(Seccomp::Default),
            "off" => Ok(Seccomp::Off),
            t if t.starts_with('{') => serde_json::from_str(t).map(Seccomp::Custom).map_err(|e| {
                ConfigError::BadSeccomp(format!("the profile is not valid JSON: {e}"))
            }),
            other => Err(ConfigError::BadSeccomp(format!(
                "'{other}' is neither default, off nor a profile"
            ))),
        }
    }

    pub fn describe(&self) -> &'static str {
        match self {
            Seccomp::Default => "default",
            Seccomp::Off => "off",
            Seccomp::Custom(_) => "custom",
        }
    }
}

impl Serialize for Seccomp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Seccomp::Default => s.serialize_str("default"),
            Seccomp::Off => s.serialize_str("off"),
            Seccomp::Custom(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Seccomp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => match s.as_str() {
                "default" => Ok(Seccomp::Default),
                "off" => Ok(Seccomp::Off),
                other => Err(serde::de::Error::custom(format!(
                    "seccomp '{other}': use default, off or a profile object"
                ))),
            },
            v @ serde_json::Value::Object(_) => Ok(Seccomp::Custom(v)),
            _ => Err(serde::de::Error::custom(
                "seccomp: use default, off or a profile object",
            )),
        }
    }
}

/// What happens to a VP while it is not the foreground.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BackgroundPolicy {
    /// It keeps running (draws into its framebuffer, gets no input).
    #[default]
    Run,
    /// Its processes are frozen (cgroup freezer) once it has been in the
    /// background this long, unless it holds a wakelock or runs an exec.
    FreezeAfter(std::time::Duration),
    /// It is stopped when it leaves the foreground.
    Stop,
}

impl BackgroundPolicy {
    pub fn is_run(&self) -> bool {
        *self == BackgroundPolicy::Run
    }
}

/// Parse "30s", "500ms", "2m", "1h" or plain seconds ("30").
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let t = s.trim();
    let (num, unit_ms) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (t, 1000)
    };
    let v: u64 = num.trim().parse().ok()?;
    // A week is plenty; beyond it is a typo.
    let ms = v
        .checked_mul(unit_ms)
        .filter(|ms| *ms <= 7 * 24 * 3_600_000)?;
    Some(std::time::Duration::from_millis(ms))
}

fn format_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else {
        format!("{}s", ms / 1000)
    }
}

impl std::str::FromStr for BackgroundPolicy {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::BadBackground(s.to_string());
        match s.trim() {
            "run" => Ok(BackgroundPolicy::Run),
            "stop" => Ok(BackgroundPolicy::Stop),
            "freeze" => Ok(BackgroundPolicy::FreezeAfter(std::time::Duration::ZERO)),
            t => {
                let d = t
                    .strip_prefix("freeze-after=")
                    .or_else(|| t.strip_prefix("freeze-after:"))
                    .ok_or_else(bad)?;
                parse_duration(d)
                    .map(BackgroundPolicy::FreezeAfter)
                    .ok_or_else(bad)
            }
        }
    }
}

impl std::fmt::Display for BackgroundPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackgroundPolicy::Run => f.write_str("run"),
            BackgroundPolicy::Stop => f.write_str("stop"),
            BackgroundPolicy::FreezeAfter(d) => write!(f, "freeze-after={}", format_duration(*d)),
        }
    }
}

impl Serialize for BackgroundPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for BackgroundPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Settings that are the project's own, not the OCI runtime's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CellsSettings {
    pub template: String,
    /// Index of the VP's id range: host ids id_base + slot * ID_RANGE ...
    pub slot: u32,
    pub privileged: bool,
    /// Unix seconds.
    pub created: u64,
    /// Persona colour as hex RGB; None: derived from the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    #[serde(default, skip_serializing_if = "BackgroundPolicy::is_run")]
    pub background: BackgroundPolicy,
    /// Network policy, address, adb port and port forwards.
    #[serde(default)]
    pub network: crate::devices::network::VpNetwork,
    #[serde(default, skip_serializing_if = "Seccomp::is_default")]
    pub seccomp: Seccomp,
    /// Device policies that differ from the devices' defaults
    /// ([`crate::devices::model`]).
    #[serde(default, skip_serializing_if = "DevicePolicies::is_default")]
    pub devices: DevicePolicies,
    /// Size of the VP's disk image (`vps/NAME/disk.img`), which holds its
    /// writable layer and /data; None: they are folders of the state fs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<u64>,
    /// The OCI bundle the VP was made from (`cells-runtime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<crate::oci::OciSource>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VpConfig {
    pub version: u32,
    pub name: String,
    pub cells: CellsSettings,
    pub runtime: Spec,
}

/// Parse "512M", "2G", "1048576", "64MiB" (binary units).
pub fn parse_memory(s: &str) -> Result<u64, ConfigError> {
    let bad = || ConfigError::BadMemory(s.to_string());
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(bad()),
            };
            (&t[..t.len() - 1], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num.trim().parse().map_err(|_| bad())?;
    let bytes = n.checked_mul(mult).ok_or_else(bad)?;
    if bytes < MIN_MEMORY || bytes > i64::MAX as u64 {
        return Err(bad());
    }
    Ok(bytes)
}

pub fn parse_cpus(s: &str) -> Result<f64, ConfigError> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| ConfigError::BadCpus(s.to_string()))?;
    check_cpus(v).map_err(|_| ConfigError::BadCpus(s.to_string()))
}

fn check_cpus(v: f64) -> Result<f64, ConfigError> {
    // 0.01 CPU is the smallest quota the kernel accepts at our period (1 ms).
    if !v.is_finite() || !(0.01..=1024.0).contains(&v) {
        return Err(ConfigError::BadCpus(v.to_string()));
    }
    Ok(v)
}

pub fn validate_hostname(h: &str) -> Result<(), ConfigError> {
    let ok = !h.is_empty()
        && h.len() <= 63
        && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !h.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::BadHostname(h.to_string()))
    }
}

impl CreateOptions {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.oci.is_none() {
            name::validate("template", &self.template)?;
        }
        if let Some(d) = &self.devices {
            d.check()?;
        }
        if let Some(h) = &self.hostname {
            validate_hostname(h)?;
        }
        if let Some(m) = self.memory {
            if m < MIN_MEMORY {
                return Err(ConfigError::BadMemory(m.to_string()));
            }
        }
        if let Some(c) = self.cpus {
            check_cpus(c)?;
        }
        if let Some(d) = self.disk.filter(|d| *d != NO_LIMIT) {
            if d < crate::disk::MIN_DISK {
                return Err(ConfigError::BadDisk(d.to_string()));
            }
        }
        if let Some(c) = &self.color {
            if Rgb::parse_hex(c).is_none() {
                return Err(ConfigError::BadColor(c.clone()));
            }
        }
        if let Some(p) = self.pids {
            if p < 16 {
                return Err(ConfigError::BadPids(p));
            }
        }
        if let Some(Seccomp::Custom(v)) = &self.seccomp {
            // Compiled as a VP would get it (the bounding set is the same
            // for every VP), so a bad profile is refused at create.
            let caps: Vec<String> = CAP_NAMES
                .iter()
                .filter(|c| !DROPPED_CAPS.contains(c))
                .map(|c| c.to_string())
                .collect();
            crate::seccomp::parse_profile(v, &caps)
                .and_then(|p| crate::seccomp::compile(&p))
                .map_err(|e| ConfigError::BadSeccomp(e.to_string()))?;
        }
        Ok(())
    }
}

fn caps(names: impl Iterator<Item = &'static str>) -> Capabilities {
    names
        .filter_map(|n| serde_json::from_value::<Capability>(serde_json::Value::from(n)).ok())
        .collect()
}

/// The OCI runtime spec of a VP.
pub fn build_spec(
    name: &str,
    opts: &CreateOptions,
    host_id: u32,
    data_dir: &Path,
) -> Result<Spec, ConfigError> {
    let kept = || {
        CAP_NAMES
            .iter()
            .copied()
            .filter(|c| !DROPPED_CAPS.contains(c))
    };
    // An OCI bundle's own set narrows cells' (never widens it).
    let given: Option<Vec<String>> = opts.oci.as_ref().and_then(|o| o.capabilities.clone());
    let kept = || {
        kept().filter(|c| {
            given.as_ref().is_none_or(|g| {
                g.iter()
                    .any(|x| x == c || x.strip_prefix("CAP_") == Some(c))
            })
        })
    };
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps(kept()))
        .effective(caps(kept()))
        .permitted(caps(kept()))
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()?;
    let oci = opts.oci.as_ref();
    let (user, args, env, cwd) = match oci {
        Some(o) => {
            let mut env = o.env.clone();
            env.retain(|e| !e.starts_with("CELLS_VP="));
            env.push(format!("CELLS_VP={name}"));
            let mut user = UserBuilder::default().uid(o.uid).gid(o.gid);
            if !o.additional_gids.is_empty() {
                user = user.additional_gids(o.additional_gids.clone());
            }
            (user.build()?, o.args.clone(), env, o.cwd.clone())
        }
        None => (
            UserBuilder::default().uid(0u32).gid(0u32).build()?,
            vec!["/init".to_string()],
            vec![
                "PATH=/system/bin:/system/xbin:/bin".to_string(),
                "HOME=/data".to_string(),
                "TERM=linux".to_string(),
                "ANDROID_ROOT=/system".to_string(),
                "ANDROID_DATA=/data".to_string(),
                format!("CELLS_VP={name}"),
            ],
            "/".to_string(),
        ),
    };
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(args)
        .env(env)
        .cwd(cwd)
        .no_new_privileges(false)
        .capabilities(capabilities)
        .build()?;

    let mount = |dest: &str, typ: &str, src: &str, options: &[&str]| {
        MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(src)
            .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .build()
    };
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        MountBuilder::default()
            .destination("/data")
            .typ("bind")
            .source(data_dir)
            .options(vec![
                "rbind".to_string(),
                "rw".to_string(),
                "nosuid".to_string(),
                "nodev".to_string(),
            ])
            .build()?,
    ];
    if let Some(o) = oci {
        // No /data of cells' own: the image's root has what it needs.
        mounts.pop();
        for t in &o.tmpfs {
            mounts.push(
                MountBuilder::default()
                    .destination(&t.destination)
                    .typ("tmpfs")
                    .source(if t.source.is_empty() {
                        "tmpfs"
                    } else {
                        &t.source
                    })
                    .options(t.options.clone())
                    .build()?,
            );
        }
        for b in &o.binds {
            let mut options = vec![
                "rbind".to_string(),
                "nosuid".to_string(),
                "nodev".to_string(),
            ];
            options.push(if b.readonly { "ro" } else { "rw" }.to_string());
            mounts.push(
                MountBuilder::default()
                    .destination(&b.destination)
                    .typ("bind")
                    .source(&b.source)
                    .options(options)
                    .build()?,
            );
        }
    }

    let mut namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ];
    if !opts.privileged {
        namespaces.push(LinuxNamespaceType::User);
    }
    let joined = |t: LinuxNamespaceType| {
        let kind = match t {
            LinuxNamespaceType::Network => "network",
            LinuxNamespaceType::Ipc => "ipc",
            LinuxNamespaceType::Uts => "uts",
            _ => return None,
        };
        oci?.join
            .iter()
            .find(|j| j.kind == kind)
            .map(|j| j.path.clone())
    };
    let namespaces = namespaces
        .into_iter()
        .map(|t| {
            let b = LinuxNamespaceBuilder::default().typ(t);
            match joined(t) {
                Some(p) => b.path(p).build(),
                None => b.build(),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;

    let devices = DEVICES
        .iter()
        .map(|(n, major, minor)| {
            LinuxDeviceBuilder::default()
                .path(format!("/dev/{n}"))
                .typ(LinuxDeviceType::C)
                .major(*major)
                .minor(*minor)
                .file_mode(0o666u32)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut resources = LinuxResourcesBuilder::default().pids(
        LinuxPidsBuilder::default()
            .limit(opts.pids.unwrap_or(DEFAULT_PIDS_LIMIT))
            .build()?,
    );
    if let Some(m) = opts.memory.filter(|m| *m != NO_LIMIT) {
        resources = resources.memory(LinuxMemoryBuilder::default().limit(m as i64).build()?);
    }
    if let Some(c) = opts.cpus {
        let quota = (c * CPU_PERIOD_US as f64).round() as i64;
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .quota(quota)
                .period(CPU_PERIOD_US)
                .build()?,
        );
    }

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .devices(devices)
        .resources(resources.build()?)
        .cgroups_path(format!("{DEFAULT_CGROUP_PARENT}/{name}"))
        .masked_paths(
            MASKED_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .readonly_paths(
            READONLY_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .rootfs_propagation("private");
    if !opts.privileged {
        let map = LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(host_id)
            .size(ID_RANGE)
            .build()?;
        linux = linux.uid_mappings(vec![map]).gid_mappings(vec![map]);
    }

    let mut annotations = HashMap::new();
    annotations.insert("org.cells.vp".to_string(), name.to_string());
    match oci {
        Some(o) => {
            annotations.insert("org.cells.oci.id".to_string(), o.id.clone());
        }
        None => {
            annotations.insert("org.cells.template".to_string(), opts.template.clone());
        }
    }
    let hostname = opts
        .hostname
        .clone()
        .or_else(|| oci.and_then(|o| o.hostname.clone()))
        .unwrap_or_else(|| name.to_string());

    Ok(SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(false)
                .build()?,
        )
        .hostname(hostname)
        .process(process)
        .mounts(mounts)
        .linux(linux.build()?)
        .annotations(annotations)
        .build()?)
}

impl VpConfig {
    pub fn new(
        name: &str,
        opts: &CreateOptions,
        slot: u32,
        id_base: u32,
        data_dir: &Path,
        created: u64,
    ) -> Result<Self, ConfigError> {
        name::validate("VP", name)?;
        opts.validate()?;
        let host_id = id_base + slot * ID_RANGE;
        Ok(Self {
            version: CONFIG_VERSION,
            name: name.to_string(),
            cells: CellsSettings {
                template: opts.template.clone(),
                slot,
                privileged: opts.privileged,
                created,
                color: opts
                    .color
                    .as_deref()
                    .and_then(Rgb::parse_hex)
                    .map(|c| c.hex()),
                background: opts.background.unwrap_or_default(),
                network: crate::devices::network::VpNetwork {
                    policy: opts.network.unwrap_or_default(),
                    ..Default::default()
                },
                seccomp: opts.seccomp.clone().unwrap_or_default(),
                disk: opts.disk.filter(|d| *d != NO_LIMIT),
                devices: opts.devices.clone().unwrap_or_default(),
                oci: opts.oci.clone(),
            },
            runtime: build_spec(name, opts, host_id, data_dir)?,
        })
    }

    /// Put the VP's cgroup under `parent` (default "cells"): `parent/NAME`.
    pub fn set_cgroup_parent(&mut self, parent: &str) {
        if let Some(linux) = self.runtime.linux_mut().as_mut() {
            linux.set_cgroups_path(Some(PathBuf::from(format!("{parent}/{}", self.name))));
        }
    }

    /// The names of the capabilities in the VP's bounding set.
    pub fn capability_names(&self) -> Vec<String> {
        crate::monitor::bounding_set(self)
            .into_iter()
            .filter_map(|c| CAP_NAMES.get(c as usize).map(|n| n.to_string()))
            .collect()
    }

    /// The VP's compiled seccomp filter (None: `--seccomp off`).
    pub fn seccomp_filter(
        &self,
    ) -> Result<Option<crate::seccomp::Filter>, crate::seccomp::SeccompError> {
        let profile = match &self.cells.seccomp {
            Seccomp::Off => return Ok(None),
            Seccomp::Default => crate::seccomp::default_profile(),
            Seccomp::Custom(v) => crate::seccomp::parse_profile(v, &self.capability_names())?,
        };
        crate::seccomp::compile(&profile).map(Some)
    }

    /// Host uid/gid that VP root maps to, or None for a privileged VP.
    pub fn host_root_id(&self) -> Option<u32> {
        self.runtime
            .linux()
            .as_ref()?
            .uid_mappings()
            .as_ref()?
            .iter()
            .find(|m| m.container_id() == 0)
            .map(|m| m.host_id())
    }

    /// The persona colour: the one given at create, else one derived from the name.
    pub fn color(&self) -> Rgb {
        self.cells
            .color
            .as_deref()
            .and_then(Rgb::parse_hex)
            .unwrap_or_else(|| Rgb::from_name(&self.name))
    }

    pub fn hostname(&self) -> &str {
        self.runtime.hostname().as_deref().unwrap_or(&self.name)
    }

    pub fn memory_limit(&self) -> Option<i64> {
        self.resources()?.memory().as_ref()?.limit()
    }

    pub fn pids_limit(&self) -> Option<i64> {
        Some(self.resources()?.pids().as_ref()?.limit())
    }

    /// CPU limit as a number of CPUs.
    pub fn cpus(&self) -> Option<f64> {
        let cpu = self.resources()?.cpu().as_ref()?;
        Some(cpu.quota()? as f64 / cpu.period()? as f64)
    }

    fn resources(&self) -> Option<&oci_spec::runtime::LinuxResources> {
        self.runtime.linux().as_ref()?.resources().as_ref()
    }

    /// The options the VP was (or would have been) created with.
    pub fn create_options(&self) -> CreateOptions {
        CreateOptions {
            template: self.cells.template.clone(),
            hostname: self.runtime.hostname().clone(),
            memory: self.memory_limit().map(|m| m.max(0) as u64),
            cpus: self.cpus(),
            pids: self.pids_limit(),
            privileged: self.cells.privileged,
            color: self.cells.color.clone(),
            background: Some(self.cells.background),
            network: Some(self.cells.network.policy),
            seccomp: Some(self.cells.seccomp.clone()),
            disk: Some(self.cells.disk.unwrap_or(NO_LIMIT)),
            devices: Some(self.cells.devices.clone()),
            oci: self.cells.oci.clone(),
        }
    }

    /// Check a definition read from disk against what cells itself would
    /// have written for this VP: its name is its folder's, its ids are a
    /// full range of its own above the system's, and its runtime spec is
    /// exactly the one its settings make (a spec changed by hand could bind
    /// a host path into the VP or map VP root to host root). `path` names
    /// the file in errors; `data_dir` is the VP's data folder.
    pub fn validate_loaded(
        &self,
        path: &Path,
        dir_name: &str,
        data_dir: &Path,
    ) -> Result<(), ConfigError> {
        let invalid = |field: &str, why: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field: field.to_string(),
            why,
        };
        if self.name != dir_name {
            return Err(invalid(
                "name",
                format!("is '{}', but the VP's folder is '{dir_name}'", self.name),
            ));
        }
        let opts = self.create_options();
        opts.validate()
            .map_err(|e| invalid("cells", format!("is not valid: {e}")))?;
        let host_id = match (self.cells.privileged, self.host_root_id()) {
            (true, None) => 0,
            (false, Some(id)) => id,
            (true, Some(_)) => {
                return Err(invalid(
                    "runtime.linux.uidMappings",
                    "map ids of a privileged VP".into(),
                ))
            }
            (false, None) => {
                return Err(invalid("runtime.linux.uidMappings", "are missing".into()))
            }
        };
        if !self.cells.privileged && (host_id < ID_RANGE || host_id.checked_add(ID_RANGE).is_none())
        {
            return Err(invalid(
                "runtime.linux.uidMappings",
                format!(
                    "map VP root to host id {host_id}, inside the system's first {ID_RANGE} ids"
                ),
            ));
        }
        let mut expected = build_spec(&self.name, &opts, host_id, data_dir)
            .map_err(|e| invalid("runtime", format!("cannot be rebuilt: {e}")))?;
        // The cgroup parent is cellsd's choice at create (--cgroup-parent).
        let cg = self
            .runtime
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone())
            .unwrap_or_default();
        let parent = cg
            .to_string_lossy()
            .strip_suffix(&format!("/{}", self.name))
            .map(String::from)
            .filter(|p| {
                !p.is_empty() && !p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
            });
        let Some(parent) = parent else {
            return Err(invalid(
                "runtime.linux.cgroupsPath",
                format!("is '{}', not PARENT/{}", cg.display(), self.name),
            ));
        };
        if let Some(l) = expected.linux_mut().as_mut() {
            l.set_cgroups_path(Some(PathBuf::from(format!("{parent}/{}", self.name))));
        }
        if expected == self.runtime {
            return Ok(());
        }
        // Name the first part that differs.
        let a = serde_json::to_value(&self.runtime).unwrap_or_default();
        let b = serde_json::to_value(&expected).unwrap_or_default();
        let mut field = "runtime".to_string();
        if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            if let Some(k) = keys.into_iter().find(|k| a.get(*k) != b.get(*k)) {
                field = format!("runtime.{k}");
                if let (Some(la), Some(lb)) = (
                    a.get(k).and_then(|v| v.as_object()),
                    b.get(k).and_then(|v| v.as_object()),
                ) {
                    let sub: std::collections::BTreeSet<&String> =
                        la.keys().chain(lb.keys()).collect();
                    if let Some(k2) = sub.into_iter().find(|k2| la.get(*k2) != lb.get(*k2)) {
                        field = format!("runtime.{k}.{k2}");
                    }
                }
            }
        }
        Err(invalid(
            &field,
            "differs from what cells makes for this VP's settings".into(),
        ))
    }

    pub fn to_json(&self) -> String {
        // Serializing plain data structures cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn from_json(path: &Path, text: &str) -> Result<Self, ConfigError> {
        #[derive(Deserialize)]
        struct Probe {
            version: u32,
        }
        let probe: Probe = serde_json::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        if probe.version != CONFIG_VERSION {
            return Err(ConfigError::Version {
                path: path.to_path_buf(),
                found: probe.version,
            });
        }
        let cfg: VpConfig = serde_json::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        name::validate("VP", &cfg.name)?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> CreateOptions {
        CreateOptions {
            template: "minimal".into(),
            ..Default::default()
        }
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("512M").unwrap(), 512 << 20);
        assert_eq!(parse_memory("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_memory("2g").unwrap(), 2 << 30);
        assert_eq!(parse_memory("16777216").unwrap(), 16 << 20);
        for bad in ["", "M", "12X", "-5M", "1M", "99999999999T", "1.5G"] {
            let e = parse_memory(bad).unwrap_err();
            assert!(e.to_string().contains("invalid memory size"), "{bad}: {e}");
        }
    }

    #[test]
    fn cpu_limits() {
        assert_eq!(parse_cpus("1.5").unwrap(), 1.5);
        for bad in ["0", "-1", "abc", "NaN", "inf", "5000"] {
            assert!(parse_cpus(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn spec_has_every_namespace_and_maps_root() {
        let cfg = VpConfig::new("work", &opts(), 2, 1_000_000, Path::new("/s/data"), 7).unwrap();
        let linux = cfg.runtime.linux().as_ref().unwrap();
        let ns: Vec<_> = linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        for t in [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Cgroup,
            LinuxNamespaceType::User,
        ] {
            assert!(ns.contains(&t), "{t:?} missing");
        }
        assert_eq!(cfg.host_root_id(), Some(1_000_000 + 2 * ID_RANGE));
        assert_eq!(cfg.hostname(), "work");
        assert_eq!(cfg.pids_limit(), Some(DEFAULT_PIDS_LIMIT));
        assert_eq!(cfg.memory_limit(), None);
    }

    #[test]
    fn background_policies_parse_and_print() {
        use std::time::Duration;
        for (text, want, shown) in [
            ("run", BackgroundPolicy::Run, "run"),
            ("stop", BackgroundPolicy::Stop, "stop"),
            (
                "freeze",
                BackgroundPolicy::FreezeAfter(Duration::ZERO),
                "freeze-after=0s",
            ),
            (
                "freeze-after=30s",
                BackgroundPolicy::FreezeAfter(Duration::from_secs(30)),
                "freeze-after=30s",
            ),
            (
                "freeze-after=250ms",
                BackgroundPolicy::FreezeAfter(Duration::from_millis(250)),
                "freeze-after=250ms",
            ),
            (
                "freeze-after=2m",
                BackgroundPolicy::FreezeAfter(Duration::from_secs(120)),
                "freeze-after=120s",
            ),
            (
                "freeze-after=5",
                BackgroundPolicy::FreezeAfter(Duration::from_secs(5)),
                "freeze-after=5s",
            ),
        ] {
            let p: BackgroundPolicy = text.parse().unwrap();
            assert_eq!(p, want, "{text}");
            assert_eq!(p.to_string(), shown);
            assert_eq!(shown.parse::<BackgroundPolicy>().unwrap(), p);
        }
        for bad in [
            "",
            "sleep",
            "freeze-after=",
            "freeze-after=soon",
            "freeze-after=-1s",
            "freeze-after=9999h",
        ] {
            let e = bad.parse::<BackgroundPolicy>().unwrap_err().to_string();
            assert!(e.contains("freeze-after=DURATION"), "{bad}: {e}");
        }
        // Stored in vp.json as the same text; absent means run.
        let mut cfg = VpConfig::new("w", &opts(), 0, 1_000_000, Path::new("/d"), 0).unwrap();
        assert!(!cfg.to_json().contains("background"));
        cfg.cells.background = BackgroundPolicy::FreezeAfter(Duration::from_secs(30));
        let back = VpConfig::from_json(Path::new("/x"), &cfg.to_json()).unwrap();
        assert_eq!(back.cells.background, cfg.cells.background);
    }

    #[test]
    fn privileged_has_no_user_namespace() {
        let o = CreateOptions {
            privileged: true,
            ..opts()
        };
        let cfg = VpConfig::new("p", &o, 0, 1_000_000, Path::new("/d"), 0).unwrap();
        assert_eq!(cfg.host_root_id(), None);
        let ns = cfg
            .runtime
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .clone()
            .unwrap();
        assert!(!ns.iter().any(|n| n.typ() == LinuxNamespaceType::User));
    }

    #[test]
    fn limits_land_in_resources() {
        let o = CreateOptions {
            hostname: Some("personal".into()),
            memory: Some(512 << 20),
            cpus: Some(0.5),
            pids: Some(100),
            ..opts()
        };
        let cfg = VpConfig::new("personal", &o, 0, 1_000_000, Path::new("/d"), 0).unwrap();
        assert_eq!(cfg.memory_limit(), Some(512 << 20));
        assert_eq!(cfg.cpus(), Some(0.5));
        assert_eq!(cfg.pids_limit(), Some(100));
    }

    #[test]
    fn bounding_set_lacks_dangerous_capabilities() {
        let cfg = VpConfig::new("w", &opts(), 0, 1_000_000, Path::new("/d"), 0).unwrap();
        let bounding = cfg
            .runtime
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .clone()
            .unwrap();
        let names: Vec<String> = bounding
            .iter()
            .map(|c| {
                serde_json::to_value(c)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        for d in DROPPED_CAPS {
            assert!(!names.iter().any(|n| n == d), "{d} still in bounding set");
        }
        assert!(names.iter().any(|n| n == "CAP_SYS_ADMIN"));
    }

    #[test]
    fn json_round_trip_and_version_check() {
        let cfg = VpConfig::new("w", &opts(), 0, 1_000_000, Path::new("/d"), 0).unwrap();
        let text = cfg.to_json();
        let back = VpConfig::from_json(Path::new("vp.json"), &text).unwrap();
        assert_eq!(cfg, back);
        let future = text.replacen("\"version\": 1", "\"version\": 99", 1);
        let e = VpConfig::from_json(Path::new("vp.json"), &future).unwrap_err();
        assert!(e.to_string().contains("version 99"), "{e}");
        let e = VpConfig::from_json(Path::new("vp.json"), "{").unwrap_err();
        assert!(e.to_string().contains("not a valid VP definition"), "{e}");
    }

    #[test]
    fn bad_options_are_named() {
        let o = CreateOptions {
            hostname: Some("bad host".into()),
            ..opts()
        };
        let e = VpConfig::new("w", &o, 0, 1, Path::new("/d"), 0).unwrap_err();
        assert!(e.to_string().contains("invalid hostname 'bad host'"));
        let o = CreateOptions {
            template: "Bad".into(),
            ..Default::default()
        };
        let e = VpConfig::new("w", &o, 0, 1, Path::new("/d"), 0).unwrap_err();
        assert!(e.to_string().contains("template name 'Bad'"), "{e}");
    }
}
