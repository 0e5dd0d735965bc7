//! The Manager's side of VP networking: addresses and adb ports allocated
//! and kept in vp.json, the monitor's network request, the VP's system
//! properties, and the port forwards while a VP runs.

use super::error::Error;
use super::{Inner, Manager};
use crate::config::VpConfig;
use crate::devices::network::{self, forward, NetRequest, PortForward, VpNetwork};
use crate::layout::write_atomic;

/// What a VP's ports look like to `cellctl port list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    pub host: u16,
    pub vp: u16,
    /// "adb" for the adb forward, "" for the user's.
    pub kind: &'static str,
    /// Listening now (the VP runs and the host port was free).
    pub active: bool,
}

impl Manager {
    fn taken_ports(inner: &Inner, except: &str) -> Vec<u16> {
        inner
            .vps
            .iter()
            .filter(|(n, _)| n.as_str() != except)
            .flat_map(|(_, v)| {
                let n = &v.config.cells.network;
                n.adb_port.into_iter().chain(n.ports.iter().map(|p| p.host))
            })
            .chain(
                inner
                    .reserved
                    .values()
                    .flat_map(|r| r.ports.iter().copied()),
            )
            .collect()
    }

    /// Give the VP an address and an adb port if it has none (new VPs, and
    /// VPs made before networking existed). Returns whether it changed.
    pub(super) fn allocate_network(
        &self,
        inner: &Inner,
        cfg: &mut VpConfig,
    ) -> Result<bool, Error> {
        let net_cfg = &self.net.cfg;
        let mut changed = false;
        let n = &mut cfg.cells.network;
        if n.policy.bridged() && !n.ip.is_some_and(|ip| net_cfg.subnet.contains(ip)) {
            let taken: Vec<_> = inner
                .vps
                .iter()
                .filter(|(name, _)| **name != cfg.name)
                .filter_map(|(_, v)| v.config.cells.network.ip)
                .chain(inner.reserved.values().filter_map(|r| r.ip))
                .collect();
            n.ip = Some(net_cfg.subnet.allocate(&taken)?);
            changed = true;
        }
        if n.adb_port.is_none() {
            let taken = Self::taken_ports(inner, &cfg.name);
            let base = net_cfg.adb_port_base;
            let port = (base..=u16::MAX)
                .find(|p| !taken.contains(p) && forward::port_free(*p))
                .ok_or_else(|| Error::Failed(network::NetError::NoAdbPort(base).to_string()))?;
            n.adb_port = Some(port);
            changed = true;
        }
        Ok(changed)
    }

    /// Allocate (if needed) and save a VP's network settings; returns the
    /// config to start with.
    pub(super) fn ensure_network(&self, name: &str) -> Result<VpConfig, Error> {
        let mut inner = self.lock();
        let mut cfg = inner
            .vps
            .get(name)
            .map(|v| v.config.clone())
            .ok_or_else(|| self.missing(name))?;
        if self.allocate_network(&inner, &mut cfg)? {
            self.save_config(&mut inner, cfg.clone())?;
        }
        Ok(cfg)
    }

    /// Write a VP's changed definition to its vp.json (atomically), then
    /// make it the one in memory.
    fn save_config(&self, inner: &mut Inner, cfg: VpConfig) -> Result<(), Error> {
        let name = cfg.name.clone();
        super::reserve::write_definition(&self.cfg.layout.vp_dir(&name), &cfg)
            .map_err(|e| Error::Failed(format!("saving VP '{name}': {e}")))?;
        let mut moved = false;
        if let Some(v) = inner.vps.get_mut(&name) {
            let (a, b) = (&v.config.cells.network, &cfg.cells.network);
            moved = a.policy != b.policy || a.ip != b.ip;
            v.config = cfg;
        }
        if moved {
            self.sync_sources(inner);
        }
        Ok(())
    }

    /// Tell the ruleset which source (MAC, address) each defined bridged
    /// VP's port may send from.
    pub(super) fn sync_sources(&self, inner: &Inner) {
        let sources: Vec<crate::devices::network::nft::Source> = inner
            .vps
            .values()
            .filter_map(|v| self.source_of(&v.config))
            .collect();
        self.net.set_sources(&sources);
    }

    /// The source a bridged VP's port may send from.
    pub(super) fn source_of(&self, cfg: &VpConfig) -> Option<crate::devices::network::nft::Source> {
        let n = &cfg.cells.network;
        let ip = n.ip.filter(|_| n.policy.bridged())?;
        let ifname = network::host_if(&self.net.cfg.bridge, cfg.cells.slot, n.policy).ok()?;
        Some((ifname, network::mac_for(ip), ip))
    }

    pub(super) fn net_request(&self, cfg: &VpConfig) -> Result<NetRequest, Error> {
        self.net
            .request(&cfg.cells.network, cfg.cells.slot, cfg.hostname())
            .map_err(|e| Error::Failed(format!("VP '{}': {e}", cfg.name)))
    }

    /// The VP's per-boot system properties (see cells_templates::props).
    pub(super) fn properties(&self, cfg: &VpConfig) -> Vec<(String, String)> {
        let n = &cfg.cells.network;
        let mut p = vec![
            ("ro.product.model".into(), cfg.name.clone()),
            ("ro.product.name".into(), cfg.name.clone()),
            ("ro.serialno".into(), serial_number(&cfg.name)),
            ("ro.boot.serialno".into(), serial_number(&cfg.name)),
            ("ro.cells.vp".into(), cfg.name.clone()),
            ("ro.cells.template".into(), cfg.cells.template.clone()),
            ("ro.cells.network".into(), n.policy.as_str().into()),
            ("net.hostname".into(), cfg.hostname().to_string()),
        ];
        if let Some(ip) = n.ip.filter(|_| n.policy.bridged()) {
            p.push(("ro.cells.ip".into(), ip.to_string()));
        }
        p
    }

    /// A VP's forwards: listening from its creation (or cellsd's start) to
    /// its destruction; relaying to it while it runs (the network device's
    /// host side sets the VP's init as their target on attach).
    pub(super) fn open_forwards(&self, name: &str, net: &VpNetwork) {
        let mut all: Vec<PortForward> = net
            .adb_port
            .map(|host| PortForward {
                host,
                vp: network::VP_ADB_PORT,
            })
            .into_iter()
            .collect();
        all.extend(net.ports.iter().copied());
        let fw = self.net.forwards.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            for f in all {
                if let Err(e) = fw.listen(&name, f).await {
                    tracing::warn!(vp = %name, "port forward {f}: host port {} unavailable: {e}", f.host);
                }
            }
        });
    }

    /// Change a stopped VP's network policy (kept in vp.json; an address is
    /// given if it now needs one).
    pub async fn set_network(&self, name: &str, policy: &str) -> Result<(), Error> {
        let policy = network::NetworkPolicy::parse(policy)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let op = self.op_lock(name)?;
        let _guard = op.lock().await;
        let mut inner = self.lock();
        let vp = inner.vps.get(name).ok_or_else(|| self.missing(name))?;
        if vp.phase != super::Phase::Stopped {
            return Err(Error::Running(format!(
                "VP '{name}' is {}: its network changes while it is stopped; run `cellctl stop {name}` first",
                vp.phase.state().as_str()
            )));
        }
        let mut cfg = vp.config.clone();
        cfg.cells.network.policy = policy;
        self.allocate_network(&inner, &mut cfg)?;
        self.save_config(&mut inner, cfg)
    }

    /// cellsd exits: with no VP running, remove the bridge and the ruleset.
    pub fn shutdown_network(&self) {
        let any_running = self.lock().vps.values().any(|v| v.run.is_some());
        if !any_running {
            self.net.teardown();
        }
        self.net.release();
    }

    /// The serial `adb connect` takes for a VP.
    pub fn adb_serial(&self, name: &str) -> Result<String, Error> {
        let inner = self.lock();
        let vp = inner.vps.get(name).ok_or_else(|| self.missing(name))?;
        match vp.config.cells.network.adb_port {
            Some(p) => Ok(format!("127.0.0.1:{p}")),
            None => Err(Error::NotRunning(format!(
                "VP '{name}' has no adb port yet: start it with `cellctl start {name}` (an adb port is given at the first start)"
            ))),
        }
    }

    /// The keys a VP's adbd lets in (one `BASE64 comment` line each).
    fn adb_keys_of(&self, name: &str) -> Result<Vec<cells_templates::adbkey::AdbKey>, Error> {
        if !self.lock().vps.contains_key(name) {
            return Err(self.missing(name));
        }
        let text = std::fs::read_to_string(self.cfg.layout.vp_adb_keys(name)).unwrap_or_default();
        Ok(cells_templates::adbkey::parse_file(&text))
    }

    fn write_adb_keys(
        &self,
        name: &str,
        keys: &[cells_templates::adbkey::AdbKey],
    ) -> Result<(), Error> {
        ensure_adb_dir(&self.cfg.layout, name)?;
        let text: String = keys
            .iter()
            .map(|k| format!("{} {}\n", k.base64, k.comment).replace(" \n", "\n"))
            .collect();
        write_atomic(&self.cfg.layout.vp_adb_keys(name), text.as_bytes())
            .map_err(|e| Error::Failed(format!("writing the VP's adb keys: {e}")))
    }

    /// Let the holder of `key` (an adbkey.pub line) into the VP's adbd,
    /// from the next connection on (running or not).
    pub fn adb_authorize(&self, name: &str, key: &str) -> Result<(), Error> {
        crate::name::validate("VP", name)?;
        let k = cells_templates::adbkey::parse_line(key).map_err(|e| {
            Error::InvalidArgument(format!(
                "not an adb public key ({e}): give the contents of an adbkey.pub (adb makes ~/.android/adbkey.pub at its first start)"
            ))
        })?;
        let mut keys = self.adb_keys_of(name)?;
        if !keys.iter().any(|x| x.base64 == k.base64) {
            keys.push(k);
        }
        self.write_adb_keys(name, &keys)
    }

    /// Take a key's access away ("" takes every key's); adb connections
    /// already made stay until they close.
    pub fn adb_revoke(&self, name: &str, key: &str) -> Result<u32, Error> {
        crate::name::validate("VP", name)?;
        let mut keys = self.adb_keys_of(name)?;
        let before = keys.len();
        if key.trim().is_empty() {
            keys.clear();
        } else {
            let k = cells_templates::adbkey::parse_line(key)
                .map_err(|e| Error::InvalidArgument(format!("not an adb public key ({e})")))?;
            keys.retain(|x| x.base64 != k.base64);
            if keys.len() == before {
                return Err(Error::InvalidArgument(format!(
                    "that key ({}) is not authorized for VP '{name}': see `cellctl adb {name} --keys`",
                    k.comment
                )));
            }
        }
        self.write_adb_keys(name, &keys)?;
        Ok((before - keys.len()) as u32)
    }

    /// The authorized keys of a VP: (comment, the key's first characters).
    pub fn adb_keys(&self, name: &str) -> Result<Vec<(String, String)>, Error> {
        crate::name::validate("VP", name)?;
        Ok(self
            .adb_keys_of(name)?
            .into_iter()
            .map(|k| (k.comment, k.base64.chars().take(24).collect()))
            .collect())
    }

    pub fn ports(&self, name: &str) -> Result<Vec<PortInfo>, Error> {
        let net = {
            let inner = self.lock();
            inner
                .vps
                .get(name)
                .map(|v| v.config.cells.network.clone())
                .ok_or_else(|| self.missing(name))?
        };
        // Listening, and relaying to a running VP.
        let active = if self.net.forwards.reaches(name) {
            self.net.forwards.active(name)
        } else {
            Vec::new()
        };
        let mut out: Vec<PortInfo> = net
            .adb_port
            .map(|host| PortInfo {
                host,
                vp: network::VP_ADB_PORT,
                kind: "adb",
                active: active.contains(&host),
            })
            .into_iter()
            .collect();
        out.extend(net.ports.iter().map(|p| PortInfo {
            host: p.host,
            vp: p.vp,
            kind: "",
            active: active.contains(&p.host),
        }));
        Ok(out)
    }

    /// Add a forward to a VP: listening at once, kept in vp.json.
    pub async fn port_add(&self, name: &str, spec: &str) -> Result<PortForward, Error> {
        let f = PortForward::parse(spec).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        {
            let inner = self.lock();
            if !inner.vps.contains_key(name) {
                return Err(self.missing(name));
            }
            if Self::taken_ports(&inner, "").contains(&f.host) {
                return Err(Error::AlreadyExists(format!(
                    "host port {} is already forwarded (see `cellctl port list`); pick another host port",
                    f.host
                )));
            }
        }
        self.net.forwards.listen(name, f).await.map_err(|e| {
            Error::Busy(format!(
                "cannot listen on 127.0.0.1:{} ({e}): another program has it; pick another host port",
                f.host
            ))
        })?;
        if let Err(e) = self.port_add_config(name, f) {
            self.net.forwards.remove(name, f.host).await;
            return Err(e);
        }
        Ok(f)
    }

    fn port_add_config(&self, name: &str, f: PortForward) -> Result<(), Error> {
        let mut inner = self.lock();
        let mut cfg = inner
            .vps
            .get(name)
            .map(|v| v.config.clone())
            .ok_or_else(|| self.missing(name))?;
        cfg.cells.network.ports.push(f);
        self.save_config(&mut inner, cfg)
    }

    pub async fn port_remove(&self, name: &str, host: u16) -> Result<(), Error> {
        self.port_remove_config(name, host)?;
        self.net.forwards.remove(name, host).await;
        Ok(())
    }

    fn port_remove_config(&self, name: &str, host: u16) -> Result<(), Error> {
        let mut inner = self.lock();
        let vp = inner.vps.get(name).ok_or_else(|| self.missing(name))?;
        if vp.config.cells.network.adb_port == Some(host) {
            return Err(Error::InvalidArgument(format!(
                "host port {host} is VP '{name}''s adb port, which cannot be removed"
            )));
        }
        let mut cfg = vp.config.clone();
        let before = cfg.cells.network.ports.len();
        cfg.cells.network.ports.retain(|p| p.host != host);
        if cfg.cells.network.ports.len() == before {
            return Err(Error::InvalidArgument(format!(
                "VP '{name}' has no forward from host port {host}: see `cellctl port list {name}`"
            )));
        }
        self.save_config(&mut inner, cfg)
    }
}

/// Tells the manager of forward traffic (a weak link: the forwarder lives in
/// the manager).
pub(super) struct ForwardActivity(pub std::sync::Weak<Manager>);

impl network::forward::ForwardHooks for ForwardActivity {
    fn activity(&self, vp: &str) {
        if let Some(m) = self.0.upgrade() {
            m.forward_activity(vp);
        }
    }
}

/// ro.serialno of a VP: stable, and what `adb devices` would show on USB.
pub fn serial_number(name: &str) -> String {
    format!("cells-{name}")
}

/// The VP's adb folder and keys file (an empty file: nobody is let in),
/// made if missing; root's, readable by the VP through its bind.
pub(super) fn ensure_adb_dir(layout: &crate::layout::Layout, name: &str) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let dir = layout.vp_adb_dir(name);
    let res = (|| -> std::io::Result<()> {
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        let keys = layout.vp_adb_keys(name);
        if std::fs::symlink_metadata(&keys).is_err() {
            write_atomic(&keys, b"")?;
        }
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644))
    })();
    res.map_err(|e| Error::Failed(format!("the adb keys folder {}: {e}", dir.display())))
}
