//! The host's side of VP networking, owned by cellsd: the bridge and its
//! address, the nftables ruleset, IPv4 forwarding for NAT, the clean-up of
//! what a crash left behind, and the port forwards.

use std::net::IpAddr;
use std::sync::Arc;

use super::forward::{Forwarder, NetnsSockets};
use super::netlink::Rtnl;
use super::*;

/// cellsd's network settings (its command line).
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub bridge: String,
    pub subnet: Subnet,
    /// Masquerade VP traffic to the outside (needs nft).
    pub nat: bool,
    /// Nameservers for VPs (empty: the host's non-loopback ones).
    pub dns: Vec<IpAddr>,
    pub adb_port_base: u16,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            bridge: DEFAULT_BRIDGE.to_string(),
            subnet: Subnet::parse(DEFAULT_SUBNET).unwrap_or(Subnet {
                network: std::net::Ipv4Addr::new(10, 47, 0, 0),
                prefix: 16,
            }),
            nat: true,
            dns: Vec::new(),
            adb_port_base: DEFAULT_ADB_PORT_BASE,
        }
    }
}

pub struct HostNet {
    pub cfg: NetConfig,
    /// Held for cellsd's life: one cellsd per bridge (another one's
    /// clean-up would remove this one's VP ports, its ruleset replace ours).
    _bridge_lock: Option<std::fs::File>,
    /// Why VPs cannot be attached to the bridge, if they cannot.
    bridge_error: Option<String>,
    /// The nftables ruleset is in place.
    nft: bool,
    pub forwards: Arc<Forwarder>,
}

impl HostNet {
    /// Make the bridge and the ruleset (replacing a previous cellsd's).
    pub fn init(cfg: NetConfig) -> std::io::Result<HostNet> {
        let forwards = Forwarder::new(NetnsSockets::start()?);
        let (bridge_lock, lock_error) = match lock_bridge(&cfg.bridge) {
            Ok(l) => (l, None),
            Err(e) => (None, Some(e)),
        };
        let bridge_error = match lock_error {
            Some(e) => Some(e),
            None => setup_bridge(&cfg).err().map(|e| e.to_string()),
        };
        if let Some(e) = &bridge_error {
            tracing::warn!("VP networking is off: {e}");
        }
        let mut nft_ok = false;
        if bridge_error.is_none() {
            if nft::available() {
                match nft::apply(&nft::ruleset(&cfg.bridge, &cfg.subnet, cfg.nat)) {
                    Ok(()) => nft_ok = true,
                    Err(e) => tracing::warn!("nftables ruleset not applied: {e}"),
                }
            } else {
                tracing::warn!(
                    "nft is not installed: isolated VPs rely on the bridge's port isolation only, \
                     no NAT, no shared-bridge VPs (install Debian's nftables)"
                );
            }
            if cfg.nat && nft_ok {
                enable_ip_forward();
            }
        }
        Ok(HostNet {
            cfg,
            _bridge_lock: bridge_lock,
            bridge_error,
            nft: nft_ok,
            forwards,
        })
    }

    /// Remove VP ports of the bridge whose slot is not running (a crash
    /// between a VP's end and its clean-up, or of a monitor mid-start).
    pub fn clean_leftovers(&self, running_slots: &[u32]) {
        if self.bridge_error.is_some() {
            return;
        }
        let r = (|| -> Result<()> {
            let rtnl = Rtnl::open()?;
            for l in rtnl.links()? {
                if let Some(slot) = slot_of_host_if(&self.cfg.bridge, &l.name) {
                    if !running_slots.contains(&slot) {
                        tracing::info!(link = %l.name, "removing a leftover VP port");
                        let _ = rtnl.del_link(l.index);
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = r {
            tracing::warn!("cleaning leftover VP ports: {e}");
        }
    }

    /// What the monitor makes for a VP with these settings.
    pub fn request(
        &self,
        net: &VpNetwork,
        slot: u32,
        hostname: &str,
    ) -> std::result::Result<NetRequest, String> {
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let resolv_conf = resolv_conf(&host_resolv, &self.cfg.dns);
        if !net.policy.bridged() {
            return Ok(NetRequest {
                attach: None,
                resolv_conf,
                hosts: hosts_file(hostname, None),
            });
        }
        if let Some(e) = &self.bridge_error {
            return Err(format!(
                "the VP's network ({}) needs the bridge {}, which cellsd could not set up: {e}; \
                 fix that and restart cellsd, or create the VP with --network none",
                net.policy.as_str(),
                self.cfg.bridge
            ));
        }
        if net.policy == NetworkPolicy::SharedBridge && !self.nft {
            return Err("network policy shared-bridge needs nftables to keep isolated VPs away from shared ones, \
                 and nft is not available: install Debian's nftables and restart cellsd, or use --network isolated"
                .to_string());
        }
        let ip = net
            .ip
            .filter(|ip| self.cfg.subnet.contains(*ip))
            .ok_or_else(|| "the VP has no address in cellsd's subnet".to_string())?;
        Ok(NetRequest {
            attach: Some(Attach {
                bridge: self.cfg.bridge.clone(),
                host_if: host_if(&self.cfg.bridge, slot, net.policy).map_err(|e| e.to_string())?,
                isolated: net.policy.is_isolated(),
                ip,
                prefix: self.cfg.subnet.prefix,
                gateway: self.cfg.subnet.gateway(),
                mac: mac_for(ip),
            }),
            resolv_conf,
            hosts: hosts_file(hostname, Some(ip)),
        })
    }

    /// A VP ended: its forwards stop relaying (their listeners stay); its
    /// port goes now rather than when the kernel gets round to destroying
    /// its namespace.
    /// Which sources the VP ports may send from (every defined bridged VP):
    /// replaces the ruleset's set. Nothing to do without nftables (the
    /// kernel's port isolation then keeps isolated VPs apart, with no check
    /// of sources).
    pub fn set_sources(&self, sources: &[nft::Source]) {
        if !self.nft {
            return;
        }
        if let Err(e) = nft::apply(&nft::sources_script(&self.cfg.bridge, sources)) {
            tracing::warn!("nftables: the VPs' source addresses not set: {e}");
        }
    }

    /// One VP's source added (created) or removed (destroyed).
    pub fn change_source(&self, source: &nft::Source, add: bool) {
        if !self.nft {
            return;
        }
        if let Err(e) = nft::apply(&nft::source_script(&self.cfg.bridge, source, add)) {
            tracing::warn!("nftables: a VP's source address not updated: {e}");
        }
    }

    pub fn vp_stopped(&self, name: &str, slot: u32) {
        self.forwards.set_target(name, None);
        if self.bridge_error.is_some() {
            return;
        }
        if let Ok(rtnl) = Rtnl::open() {
            for policy in [NetworkPolicy::Isolated, NetworkPolicy::SharedBridge] {
                if let Ok(n) = host_if(&self.cfg.bridge, slot, policy) {
                    if let Ok(Some(i)) = rtnl.link_index(&n) {
                        let _ = rtnl.del_link(i);
                    }
                }
            }
        }
    }

    /// cellsd exits: give the bridge's lock file back (removed while the
    /// lock is still held; see lock_bridge).
    pub fn release(&self) {
        if self._bridge_lock.is_some() {
            let _ = std::fs::remove_file(
                std::path::Path::new(BRIDGE_LOCK_DIR).join(format!("{}.lock", self.cfg.bridge)),
            );
        }
    }

    /// cellsd exits and no VP runs: remove the bridge and the ruleset.
    pub fn teardown(&self) {
        if self.bridge_error.is_some() {
            return;
        }
        if let Ok(rtnl) = Rtnl::open() {
            if let Ok(Some(i)) = rtnl.link_index(&self.cfg.bridge) {
                let _ = rtnl.del_link(i);
            }
        }
        if self.nft {
            if let Err(e) = nft::apply(&nft::delete_script(&self.cfg.bridge)) {
                tracing::warn!("removing the nftables ruleset: {e}");
            }
        }
    }
}

/// Where cellsd locks its bridge (the lock dies with the process).
pub const BRIDGE_LOCK_DIR: &str = "/run/cells-bridges";

/// Take the bridge's lock; another cellsd holding it is an error naming its
/// pid. A lock that cannot be made at all (no /run) is only warned about.
fn lock_bridge(bridge: &str) -> std::result::Result<Option<std::fs::File>, String> {
    use std::io::{Seek, Write};
    use std::os::fd::AsRawFd;
    if let Err(e) = std::fs::create_dir_all(BRIDGE_LOCK_DIR) {
        tracing::warn!("cannot lock bridge {bridge} ({BRIDGE_LOCK_DIR}: {e})");
        return Ok(None);
    }
    let path = std::path::Path::new(BRIDGE_LOCK_DIR).join(format!("{bridge}.lock"));
    // Lock, then check the file is still the one at the path: a cellsd that
    // exits removes its lock file, and one that had it open meanwhile must
    // not keep a lock on a file nobody else can find.
    let mut f = loop {
        let f = match std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("cannot lock bridge {bridge} ({}: {e})", path.display());
                return Ok(None);
            }
        };
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(format!(
                "bridge {bridge} belongs to another cellsd (pid {}): give this one its own --bridge and --subnet",
                pid.trim()
            ));
        }
        use std::os::unix::fs::MetadataExt;
        let same = match (f.metadata(), std::fs::metadata(&path)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        };
        if same {
            break f;
        }
    };
    let _ = f.set_len(0);
    let _ = f.rewind();
    let _ = writeln!(f, "{}", std::process::id());
    Ok(Some(f))
}

fn setup_bridge(cfg: &NetConfig) -> Result<()> {
    check_bridge_name(&cfg.bridge)?;
    let rtnl = Rtnl::open()?;
    let idx = match rtnl.link_index(&cfg.bridge)? {
        Some(i) => i,
        None => {
            rtnl.add_bridge(&cfg.bridge)?;
            rtnl.link_index(&cfg.bridge)?
                .ok_or_else(|| NetError::Netlink(format!("bridge {} vanished", cfg.bridge)))?
        }
    };
    rtnl.add_addr(idx, cfg.subnet.gateway(), cfg.subnet.prefix)?;
    rtnl.set_up(idx)
}

fn enable_ip_forward() {
    let p = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(p)
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
    {
        return;
    }
    match std::fs::write(p, "1") {
        Ok(()) => tracing::info!("enabled IPv4 forwarding (net.ipv4.ip_forward=1) for VP NAT"),
        Err(e) => tracing::warn!("cannot enable IPv4 forwarding for NAT: {e}"),
    }
}
