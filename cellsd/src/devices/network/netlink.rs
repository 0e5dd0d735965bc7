//! rtnetlink requests, synchronous (the monitor is single-threaded and
//! cellsd calls these from blocking tasks): links (bridge, veth, up, delete,
//! the bridge port's isolated flag), addresses and routes.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::{NetError, Result};

fn nl<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> NetError + '_ {
    move |e| NetError::Netlink(format!("{what}: {e}"))
}

/// A route netlink socket, bound to the network namespace it was opened in.
pub struct Rtnl {
    sock: Socket,
    seq: std::cell::Cell<u32>,
}

/// A link as a dump lists it.
#[derive(Debug, Clone)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub master: Option<u32>,
}

impl Rtnl {
    pub fn open() -> Result<Rtnl> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(nl("socket"))?;
        sock.bind_auto().map_err(nl("bind"))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(nl("connect"))?;
        Ok(Rtnl {
            sock,
            seq: std::cell::Cell::new(1),
        })
    }

    /// A socket in the network namespace of process `pid`: this thread
    /// enters it, opens the socket (which stays bound to it) and returns to
    /// its own namespace.
    pub fn open_in_netns_of(pid: i32) -> Result<Rtnl> {
        let io = |what: String| move |err| NetError::Io { what, err };
        let own = File::open("/proc/thread-self/ns/net").map_err(io("open own netns".into()))?;
        let target = File::open(format!("/proc/{pid}/ns/net"))
            .map_err(io(format!("open the netns of {pid}")))?;
        nix::sched::setns(target.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(nl("setns into the VP's netns"))?;
        let r = Rtnl::open();
        if let Err(e) = nix::sched::setns(own.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET) {
            // This thread would go on in the VP's namespace: never.
            eprintln!("cellsd: cannot return to the host's network namespace: {e}");
            std::process::abort();
        }
        r
    }

    /// Send a request; collect replies until the ack (or the end of a dump).
    fn request(&self, msg: RouteNetlinkMessage, flags: u16) -> Result<Vec<RouteNetlinkMessage>> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        let seq = self.seq.get();
        self.seq.set(seq.wrapping_add(1));
        header.sequence_number = seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        req.finalize();
        let mut buf = vec![0u8; req.buffer_len()];
        req.serialize(&mut buf);
        self.sock.send(&buf, 0).map_err(nl("send"))?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.sock.recv_from_full().map_err(nl("recv"))?;
            let mut off = 0;
            while off < data.len() {
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..])
                    .map_err(nl("parse reply"))?;
                let len = m.header.length as usize;
                if len == 0 {
                    break;
                }
                off += (len + 3) & !3;
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::InnerMessage(i) => out.push(i),
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => match e.code {
                        None => {
                            if !dump {
                                return Ok(out);
                            }
                        }
                        Some(_) => {
                            return Err(NetError::Io {
                                what: "netlink".into(),
                                err: e.to_io(),
                            })
                        }
                    },
                    _ => {}
                }
            }
        }
    }

    fn ack(&self, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        self.request(msg, NLM_F_ACK | flags).map(|_| ())
    }

    /// The index of link `name`, None if there is none.
    pub fn link_index(&self, name: &str) -> Result<Option<u32>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(m), NLM_F_ACK) {
            Ok(replies) => Ok(replies.into_iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                _ => None,
            })),
            Err(NetError::Io { err, .. }) if err.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn links(&self) -> Result<Vec<Link>> {
        let replies = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => {
                    let mut name = None;
                    let mut master = None;
                    for a in &l.attributes {
                        match a {
                            LinkAttribute::IfName(n) => name = Some(n.clone()),
                            LinkAttribute::Controller(m) => master = Some(*m),
                            _ => {}
                        }
                    }
                    Some(Link {
                        index: l.header.index,
                        name: name?,
                        master,
                    })
                }
                _ => None,
            })
            .collect())
    }

    pub fn add_bridge(&self, name: &str) -> Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.ack(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|e| NetError::Netlink(format!("create bridge {name}: {e}")))
    }

    /// A veth pair `host` / `peer` with `peer` made directly in the network
    /// namespace of `pid` and `host` on bridge `master`.
    pub fn add_veth_into(
        &self,
        host: &str,
        peer: &str,
        pid: u32,
        master: u32,
        mac: [u8; 6],
    ) -> Result<()> {
        let mut p = LinkMessage::default();
        p.attributes.push(LinkAttribute::IfName(peer.to_string()));
        p.attributes.push(LinkAttribute::NetNsPid(pid));
        p.attributes.push(LinkAttribute::Address(mac.to_vec()));
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(host.to_string()));
        m.attributes.push(LinkAttribute::Controller(master));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]));
        self.ack(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|e| NetError::Netlink(format!("create veth {host}: {e}")))
    }

    /// The bridge port's `isolated` flag: isolated ports cannot reach each
    /// other through the bridge, only non-isolated ones (the host).
    pub fn set_bridge_port_isolated(&self, index: u32, isolated: bool) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::Isolated(
                isolated,
            )])),
        ]));
        self.ack(RouteNetlinkMessage::NewLink(m), 0)
            .map_err(|e| NetError::Netlink(format!("set bridge port {index} isolated: {e}")))
    }

    pub fn set_up(&self, index: u32) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        self.ack(RouteNetlinkMessage::NewLink(m), 0)
            .map_err(|e| NetError::Netlink(format!("set link {index} up: {e}")))
    }

    pub fn del_link(&self, index: u32) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.ack(RouteNetlinkMessage::DelLink(m), 0)
    }

    pub fn add_addr(&self, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = prefix;
        m.header.index = index;
        let bcast = Ipv4Addr::from(u32::from(ip) | !(u32::MAX << (32 - prefix)));
        m.attributes.push(AddressAttribute::Local(ip.into()));
        m.attributes.push(AddressAttribute::Address(ip.into()));
        m.attributes.push(AddressAttribute::Broadcast(bcast));
        match self.ack(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Err(NetError::Io { err, .. }) if err.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r.map_err(|e| NetError::Netlink(format!("add address {ip}/{prefix}: {e}"))),
        }
    }

    pub fn add_default_route(&self, gateway: Ipv4Addr, index: u32) -> Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        m.attributes.push(RouteAttribute::Oif(index));
        self.ack(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|e| NetError::Netlink(format!("add default route via {gateway}: {e}")))
    }
}
