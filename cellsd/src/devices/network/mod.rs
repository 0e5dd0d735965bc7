//! A VP's network: its own network namespace (made by the clone), a veth
//! pair from it to the bridge `cells0` in the host's namespace, an address
//! from cellsd's subnet, a default route through the bridge, resolv.conf and
//! hosts; NAT to the outside and the isolation between VPs in nftables; and
//! port forwards from host loopback into the VP (adb's among them).
//!
//! - [`netlink`]: the rtnetlink requests (links, addresses, routes), synchronous,
//!   used by the monitor (which attaches a VP before it runs) and by cellsd
//!   (bridge, clean-up);
//! - [`nft`]: the nftables ruleset (text for `nft -f`);
//! - [`forward`]: the port forwards, a TCP relay in cellsd whose VP-side
//!   sockets are made inside the VP's network namespace (so they reach a
//!   service listening on the VP's loopback, whatever its network policy).
//!
//! Policies: `isolated` (default) — reaches the host and (with NAT) the
//! outside, no other VP; `shared-bridge` — also reaches the other
//! shared-bridge VPs; `none` — loopback only. Isolation is enforced twice:
//! the bridge port's `isolated` flag (in the kernel, no nftables needed) and
//! nftables rules (also between isolated and shared ports and through the
//! gateway).

pub mod forward;
pub mod host;
pub mod netlink;
pub mod nft;

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Host port adb forwards are allocated from (5555-5585 are what adb
/// scans for emulators; these are clear of them).
pub const DEFAULT_ADB_PORT_BASE: u16 = 5600;
/// adbd's port inside every VP.
pub const VP_ADB_PORT: u16 = 5555;
pub const DEFAULT_BRIDGE: &str = "cells0";
pub const DEFAULT_SUBNET: &str = "10.47.0.0/16";
/// The VP side of its veth pair.
pub const VP_IF: &str = "eth0";
/// A host veth name is bridge + 'i'/'s' + slot and must fit IFNAMSIZ - 1.
pub const BRIDGE_NAME_MAX: usize = 9;
pub const SLOT_MAX: u32 = 99_999;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("bad subnet {0:?}: give an IPv4 network as A.B.C.D/N with N from 8 to 30, e.g. {DEFAULT_SUBNET}")]
    BadSubnet(String),
    #[error("bad bridge name {0:?}: 1 to {BRIDGE_NAME_MAX} letters, digits, '-' or '_'")]
    BadBridge(String),
    #[error("bad network policy {0:?}: use isolated, shared-bridge or none")]
    BadPolicy(String),
    #[error("bad port forward {0:?}: use HOST:VP with ports 1-65535, e.g. 8080:80")]
    BadForward(String),
    #[error("no free address left in {0}: destroy a VP or give cellsd a larger --subnet")]
    SubnetFull(String),
    #[error("no free host port from {0} up for adb: give cellsd another --adb-port-base")]
    NoAdbPort(u16),
    #[error("VP slot {0} is too large for a veth name (at most {SLOT_MAX})")]
    SlotTooLarge(u32),
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("{what}: {err}")]
    Io {
        what: String,
        #[source]
        err: std::io::Error,
    },
    #[error("nft: {0}")]
    Nft(String),
}

pub type Result<T> = std::result::Result<T, NetError>;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkPolicy {
    #[default]
    Isolated,
    SharedBridge,
    None,
}

impl NetworkPolicy {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "isolated" => Ok(NetworkPolicy::Isolated),
            "shared-bridge" | "shared" => Ok(NetworkPolicy::SharedBridge),
            "none" => Ok(NetworkPolicy::None),
            _ => Err(NetError::BadPolicy(s.to_string())),
        }
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            NetworkPolicy::Isolated => "isolated",
            NetworkPolicy::SharedBridge => "shared-bridge",
            NetworkPolicy::None => "none",
        }
    }
    pub fn is_isolated(&self) -> bool {
        *self == NetworkPolicy::Isolated
    }
    pub fn bridged(&self) -> bool {
        *self != NetworkPolicy::None
    }
}

/// A forward from host loopback `host` to port `vp` on the VP's loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    pub host: u16,
    pub vp: u16,
}

impl PortForward {
    /// "8080:80"
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || NetError::BadForward(s.to_string());
        let (h, v) = s.split_once(':').ok_or_else(bad)?;
        let host: u16 = h.trim().parse().map_err(|_| bad())?;
        let vp: u16 = v.trim().parse().map_err(|_| bad())?;
        if host == 0 || vp == 0 {
            return Err(bad());
        }
        Ok(PortForward { host, vp })
    }
}

impl std::fmt::Display for PortForward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.vp)
    }
}

/// A VP's network settings, kept in its vp.json.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpNetwork {
    #[serde(default)]
    pub policy: NetworkPolicy,
    /// Allocated at create (or at the first start of an older VP); stays
    /// the VP's while it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// The stable host port forwarded to the VP's adbd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adb_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortForward>,
}

/// An IPv4 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || NetError::BadSubnet(s.to_string());
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(bad());
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Subnet {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }
    fn mask(&self) -> u32 {
        u32::MAX << (32 - self.prefix)
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }
    /// The host side (the bridge's address): the first address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }
    /// The lowest address that is neither the network, the gateway, the
    /// broadcast nor taken.
    pub fn allocate(&self, taken: &[Ipv4Addr]) -> Result<Ipv4Addr> {
        let first = u32::from(self.network) + 2;
        let last = u32::from(self.broadcast()) - 1;
        (first..=last)
            .map(Ipv4Addr::from)
            .find(|ip| !taken.contains(ip))
            .ok_or_else(|| NetError::SubnetFull(self.to_string()))
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

pub fn check_bridge_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= BRIDGE_NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(NetError::BadBridge(name.to_string()))
    }
}

/// The host end of a VP's veth: `cells0i3` (isolated) or `cells0s3` (shared).
/// The letter lets one static nftables rule match every isolated port.
pub fn host_if(bridge: &str, slot: u32, policy: NetworkPolicy) -> Result<String> {
    if slot > SLOT_MAX {
        return Err(NetError::SlotTooLarge(slot));
    }
    let kind = if policy.is_isolated() { 'i' } else { 's' };
    Ok(format!("{bridge}{kind}{slot}"))
}

/// If `name` is a VP port of `bridge`, its slot.
pub fn slot_of_host_if(bridge: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(bridge)?;
    let digits = rest.strip_prefix('i').or_else(|| rest.strip_prefix('s'))?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A stable, locally administered MAC for a VP address (02:ce:11 + the
/// address's last three bytes), so neighbours' caches survive a restart.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0xce, 0x11, o[1], o[2], o[3]]
}

/// resolv.conf for VPs: the host's IPv4 nameservers, except loopback ones
/// (a resolver on the host's 127.0.0.53 is not reachable from a VP; VPs have
/// IPv4 only), or the `dns` cellsd was given.
pub fn resolv_conf(host_resolv: &str, dns: &[std::net::IpAddr]) -> String {
    let mut out =
        String::from("# Made by cellsd for this VP (cellsd --dns to choose the servers).\n");
    if !dns.is_empty() {
        for d in dns {
            out.push_str(&format!("nameserver {d}\n"));
        }
        return out;
    }
    let mut servers = 0;
    for line in host_resolv.lines() {
        let l = line.trim();
        if let Some(ns) = l.strip_prefix("nameserver") {
            match ns.trim().parse::<std::net::IpAddr>() {
                Ok(ip) if ip.is_ipv4() && !ip.is_loopback() => {
                    servers += 1;
                    out.push_str(&format!("nameserver {ip}\n"));
                }
                _ => {}
            }
        } else if l.starts_with("search") || l.starts_with("options") {
            out.push_str(l);
            out.push('\n');
        }
    }
    if servers == 0 {
        out.push_str("# The host has no nameserver a VP can reach (only loopback ones).\n");
    }
    out
}

pub fn hosts_file(hostname: &str, ip: Option<Ipv4Addr>) -> String {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    match ip {
        Some(ip) => s.push_str(&format!("{ip}\t{hostname}\n")),
        None => s.push_str(&format!("127.0.1.1\t{hostname}\n")),
    }
    s
}

/// What the monitor needs to attach a VP to the bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attach {
    pub bridge: String,
    pub host_if: String,
    pub isolated: bool,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mac: [u8; 6],
}

/// The VP's network as the monitor makes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetRequest {
    /// None: loopback only (policy none).
    pub attach: Option<Attach>,
    pub resolv_conf: String,
    pub hosts: String,
}

/// Attach a VP (whose init is `pid`, in its new network namespace) to the
/// bridge: a veth pair made with its VP end already in the VP's namespace
/// (so a crash never leaves a half-made pair in the host's), the host end on
/// the bridge, then the VP end's address, link and default route, set from
/// inside the VP's namespace. Runs in the monitor before the VP is released.
pub fn attach_vp(pid: i32, a: &Attach) -> Result<()> {
    let host = netlink::Rtnl::open()?;
    let bridge = host.link_index(&a.bridge)?.ok_or_else(|| {
        NetError::Netlink(format!(
            "bridge {} is missing (is cellsd running?)",
            a.bridge
        ))
    })?;
    // A leftover of a VP with this slot (cellsd cleans them, but a start may race it).
    if let Some(old) = host.link_index(&a.host_if)? {
        host.del_link(old)?;
    }
    host.add_veth_into(&a.host_if, VP_IF, pid as u32, bridge, a.mac)?;
    let idx = host
        .link_index(&a.host_if)?
        .ok_or_else(|| NetError::Netlink(format!("{} vanished after creation", a.host_if)))?;
    host.set_bridge_port_isolated(idx, a.isolated)?;
    host.set_up(idx)?;
    let vp = netlink::Rtnl::open_in_netns_of(pid)?;
    let eth = vp
        .link_index(VP_IF)?
        .ok_or_else(|| NetError::Netlink(format!("{VP_IF} did not arrive in the VP")))?;
    vp.add_addr(eth, a.ip, a.prefix)?;
    vp.set_up(eth)?;
    vp.add_default_route(a.gateway, eth)?;
    Ok(())
}

use crate::devices::model::{self, DeviceSpec, Policy};
use crate::devices::registry::{
    io as io_err, Attach as AttachVp, Detach, Device, DeviceError, HostDevice, Made, VpCtx,
    VpDevice,
};

pub const DEVICE: Device = Device {
    spec: DeviceSpec {
        name: model::NETWORK,
        default: Policy::Shared,
        policies: &[Policy::Shared, Policy::None],
        about: "eth0 on cellsd's bridge, as the VP's network policy says (`--network`); none: loopback only (as `--network none`)",
    },
    vp_side,
};

/// The veth pair is made once the init is cloned (its end goes straight
/// into the init's network namespace), before the init runs.
fn vp_side(c: &VpCtx<'_>, m: &mut Made) -> std::result::Result<(), DeviceError> {
    if c.policy == Policy::None {
        return Ok(());
    }
    if let Some(a) = c.network.and_then(|n| n.attach.clone()) {
        m.live.push(Box::new(VpLink(a)));
    }
    Ok(())
}

/// The monitor's side: attach the cloned init to the bridge.
struct VpLink(Attach);

impl VpDevice for VpLink {
    fn name(&self) -> &'static str {
        model::NETWORK
    }

    fn serve(
        &mut self,
        init: libc::pid_t,
        _fds: &mut crate::devices::registry::DeviceFds,
    ) -> std::result::Result<(), DeviceError> {
        attach_vp(init, &self.0).map_err(|e| {
            DeviceError::Refused(format!("attaching the VP to bridge {}: {e}", self.0.bridge))
        })
    }
}

impl host::HostNet {
    /// [`host::HostNet::init`] for the registry.
    pub fn start(cfg: host::NetConfig) -> std::result::Result<Self, DeviceError> {
        Self::init(cfg).map_err(io_err("start VP networking"))
    }
}

/// cellsd's side: forwards relay into the VP while it runs; its bridge
/// port goes as soon as it ends.
impl HostDevice for host::HostNet {
    fn name(&self) -> &'static str {
        model::NETWORK
    }

    fn attach(&self, a: &AttachVp<'_>) -> std::result::Result<(), DeviceError> {
        self.forwards.set_target(a.vp, a.init.cloned());
        Ok(())
    }

    fn detach(&self, d: &Detach<'_>) {
        match d.slot {
            Some(slot) => self.vp_stopped(d.vp, slot),
            None => self.forwards.set_target(d.vp, None),
        }
    }

    /// Every VP has its own network: a switch changes nothing.
    fn set_foreground(&self, _: Option<&str>) {}

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_and_allocation() {
        let s = Subnet::parse("10.47.3.9/16").unwrap();
        assert_eq!(s.to_string(), "10.47.0.0/16");
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 47, 0, 1));
        assert_eq!(s.allocate(&[]).unwrap(), Ipv4Addr::new(10, 47, 0, 2));
        let taken = [Ipv4Addr::new(10, 47, 0, 2), Ipv4Addr::new(10, 47, 0, 4)];
        assert_eq!(s.allocate(&taken).unwrap(), Ipv4Addr::new(10, 47, 0, 3));
        assert!(s.contains(Ipv4Addr::new(10, 47, 255, 1)));
        assert!(!s.contains(Ipv4Addr::new(10, 48, 0, 1)));
        let small = Subnet::parse("192.168.5.0/30").unwrap();
        let one = small.allocate(&[]).unwrap();
        assert_eq!(one, Ipv4Addr::new(192, 168, 5, 2));
        assert!(matches!(
            small.allocate(&[one]),
            Err(NetError::SubnetFull(_))
        ));
        for bad in [
            "10.0.0.0",
            "10.0.0.0/31",
            "10.0.0.0/4",
            "x/16",
            "10.0.0.0/abc",
        ] {
            assert!(Subnet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(
            host_if("cells0", 3, NetworkPolicy::Isolated).unwrap(),
            "cells0i3"
        );
        assert_eq!(
            host_if("cells0", 12, NetworkPolicy::SharedBridge).unwrap(),
            "cells0s12"
        );
        assert!(host_if("cells0", SLOT_MAX + 1, NetworkPolicy::Isolated).is_err());
        let longest = host_if("abcdefghi", SLOT_MAX, NetworkPolicy::Isolated).unwrap();
        assert!(longest.len() <= 15);
        assert_eq!(slot_of_host_if("cells0", "cells0i3"), Some(3));
        assert_eq!(slot_of_host_if("cells0", "cells0s44"), Some(44));
        assert_eq!(slot_of_host_if("cells0", "cells0"), None);
        assert_eq!(slot_of_host_if("cells0", "cells0x1"), None);
        assert_eq!(slot_of_host_if("cells0", "cells01i1"), None);
        assert!(check_bridge_name("cells0").is_ok());
        for bad in ["", "toolongname", "a b", "a/b"] {
            assert!(check_bridge_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn policies_and_forwards() {
        assert_eq!(
            NetworkPolicy::parse("isolated").unwrap(),
            NetworkPolicy::Isolated
        );
        assert_eq!(
            NetworkPolicy::parse("shared-bridge").unwrap(),
            NetworkPolicy::SharedBridge
        );
        assert_eq!(NetworkPolicy::parse("none").unwrap(), NetworkPolicy::None);
        assert!(NetworkPolicy::parse("open").is_err());
        assert_eq!(
            PortForward::parse("8080:80").unwrap(),
            PortForward { host: 8080, vp: 80 }
        );
        for bad in ["8080", "0:80", "80:0", "x:1", "70000:1", ""] {
            assert!(PortForward::parse(bad).is_err(), "{bad}");
        }
        let n: VpNetwork = serde_json::from_str("{}").unwrap();
        assert_eq!(n.policy, NetworkPolicy::Isolated);
        let j = serde_json::to_string(&VpNetwork {
            policy: NetworkPolicy::SharedBridge,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(j, r#"{"policy":"shared-bridge"}"#);
    }

    #[test]
    fn resolv_conf_skips_loopback_servers() {
        let host = "nameserver 127.0.0.53\nnameserver 192.168.1.1\nnameserver fd00::1\nsearch lan\noptions edns0\n";
        let r = resolv_conf(host, &[]);
        assert!(r.contains("nameserver 192.168.1.1\n"));
        assert!(!r.contains("127.0.0.53") && !r.contains("fd00::1"));
        assert!(r.contains("search lan\n"));
        let r = resolv_conf("nameserver 127.0.0.53\n", &[]);
        assert!(!r.lines().any(|l| l.starts_with("nameserver")), "{r}");
        let r = resolv_conf(host, &["9.9.9.9".parse().unwrap()]);
        assert!(r.contains("nameserver 9.9.9.9\n") && !r.contains("192.168.1.1"));
        assert_eq!(
            mac_for(Ipv4Addr::new(10, 47, 1, 2)),
            [2, 0xce, 0x11, 47, 1, 2]
        );
    }
}
