//! Links and their addresses, managed over rtnetlink.
//!
//! Every operation names links by name, as Weave does, and looks the index
//! up when the kernel needs one. Creation is "create if absent": asking for
//! a link that already exists with the right kind is not an error.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    BridgeStpState, InfoBridge, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::rtnl::{Rtnl, RtnlError};

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

const ENODEV: i32 = libc::ENODEV;
const EEXIST: i32 = libc::EEXIST;
const EADDRNOTAVAIL: i32 = libc::EADDRNOTAVAIL;

/// A 48-bit Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// A MAC address that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a MAC address: {0:?}")]
pub struct BadMac(pub String);

impl FromStr for MacAddr {
    type Err = BadMac;

    fn from_str(s: &str) -> Result<MacAddr, BadMac> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in out.iter_mut() {
            let part = parts.next().ok_or_else(|| BadMac(s.to_string()))?;
            if part.is_empty() || part.len() > 2 {
                return Err(BadMac(s.to_string()));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| BadMac(s.to_string()))?;
        }
        if parts.next().is_some() {
            return Err(BadMac(s.to_string()));
        }
        Ok(MacAddr(out))
    }
}

/// The kind of a link, as the kernel reports it in `IFLA_INFO_KIND`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LinkKind {
    /// A Linux bridge.
    Bridge,
    /// One end of a veth pair.
    Veth,
    /// An Open vSwitch datapath's internal port (kind `openvswitch`).
    Openvswitch,
    /// A kernel VXLAN device.
    Vxlan,
    /// Any other kind, by its kernel name.
    Other(String),
    /// The kernel reported no kind (physical devices, loopback).
    Unspecified,
}

impl fmt::Display for LinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkKind::Bridge => f.write_str("bridge"),
            LinkKind::Veth => f.write_str("veth"),
            LinkKind::Openvswitch => f.write_str("openvswitch"),
            LinkKind::Vxlan => f.write_str("vxlan"),
            LinkKind::Other(kind) => f.write_str(kind),
            LinkKind::Unspecified => f.write_str("device"),
        }
    }
}

impl LinkKind {
    fn from_info(kind: &InfoKind) -> LinkKind {
        match kind {
            InfoKind::Bridge => LinkKind::Bridge,
            InfoKind::Veth => LinkKind::Veth,
            InfoKind::Vxlan => LinkKind::Vxlan,
            InfoKind::Other(name) if name == "openvswitch" => LinkKind::Openvswitch,
            other => LinkKind::Other(other.to_string()),
        }
    }
}

/// What the kernel says about one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Its kind.
    pub kind: LinkKind,
    /// Its MTU.
    pub mtu: u32,
    /// The index of the bridge (or other master) it is enslaved to.
    pub master: Option<u32>,
    /// Its Ethernet address, when it has a 6-byte one.
    pub mac: Option<MacAddr>,
    /// Whether it is administratively up.
    pub up: bool,
    /// For a bridge: whether the kernel runs STP on it.
    pub stp: Option<bool>,
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Result<Link, RtnlError> {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            kind: LinkKind::Unspecified,
            mtu: 0,
            master: None,
            mac: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            stp: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name = name.clone(),
                LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
                LinkAttribute::Controller(master) if *master != 0 => link.master = Some(*master),
                LinkAttribute::Address(bytes) => {
                    link.mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(MacAddr);
                }
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(kind) => link.kind = LinkKind::from_info(kind),
                            LinkInfo::Data(InfoData::Bridge(opts)) => {
                                for opt in opts {
                                    if let InfoBridge::StpState(state) = opt {
                                        link.stp = Some(*state != BridgeStpState::Disabled);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if link.name.is_empty() {
            return Err(RtnlError::Decode(format!(
                "link {} has no name",
                msg.header.index
            )));
        }
        Ok(link)
    }
}

fn check_name(name: &str) -> Result<(), RtnlError> {
    if name.is_empty() || name.len() > MAX_IFNAME_LEN || name.contains(['/', ' ', '\0']) {
        return Err(RtnlError::Unexpected(format!(
            "{name:?} is not a valid interface name"
        )));
    }
    Ok(())
}

fn name_message(name: &str) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    msg
}

fn index_message(index: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg
}

impl Rtnl {
    /// Every link in the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>, RtnlError> {
        let replies = self.dump(
            "listing links",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
        )?;
        let mut links = Vec::with_capacity(replies.len());
        for reply in replies {
            if let RouteNetlinkMessage::NewLink(msg) = reply {
                links.push(Link::from_message(&msg)?);
            }
        }
        Ok(links)
    }

    /// The link called `name`, if there is one.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>, RtnlError> {
        check_name(name)?;
        let op = format!("looking up link {name}");
        match self.get(&op, RouteNetlinkMessage::GetLink(name_message(name))) {
            Ok(RouteNetlinkMessage::NewLink(msg)) => Link::from_message(&msg).map(Some),
            Ok(other) => Err(RtnlError::Unexpected(format!("{op}: {other:?}"))),
            Err(e) if e.errno() == Some(ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The link called `name`, which must exist.
    pub fn require_link(&mut self, name: &str) -> Result<Link, RtnlError> {
        self.link(name)?
            .ok_or_else(|| RtnlError::NoSuchLink(name.to_string()))
    }

    /// The link with index `index`, if there is one.
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>, RtnlError> {
        let op = format!("looking up link #{index}");
        match self.get(&op, RouteNetlinkMessage::GetLink(index_message(index))) {
            Ok(RouteNetlinkMessage::NewLink(msg)) => Link::from_message(&msg).map(Some),
            Ok(other) => Err(RtnlError::Unexpected(format!("{op}: {other:?}"))),
            Err(e) if e.errno() == Some(ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The kind of the link called `name`, if it exists.
    pub fn link_kind(&mut self, name: &str) -> Result<Option<LinkKind>, RtnlError> {
        Ok(self.link(name)?.map(|l| l.kind))
    }

    /// The Ethernet address of the link called `name`.
    pub fn link_mac(&mut self, name: &str) -> Result<Option<MacAddr>, RtnlError> {
        Ok(self.require_link(name)?.mac)
    }

    /// Creates a Linux bridge with STP off. Returns false, changing nothing,
    /// when a bridge of that name exists already; fails when a link of
    /// another kind holds the name.
    pub fn add_bridge(&mut self, name: &str) -> Result<bool, RtnlError> {
        check_name(name)?;
        if let Some(existing) = self.link(name)? {
            return match existing.kind {
                LinkKind::Bridge => Ok(false),
                kind => Err(RtnlError::Unexpected(format!(
                    "link {name} exists as {kind}, not as a bridge"
                ))),
            };
        }
        let mut msg = name_message(name);
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Bridge),
            LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::StpState(
                BridgeStpState::Disabled,
            )])),
        ]));
        self.execute(
            &format!("creating bridge {name}"),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(true)
    }

    /// Turns STP on or off on an existing bridge.
    pub fn set_bridge_stp(&mut self, name: &str, on: bool) -> Result<(), RtnlError> {
        let link = self.require_link(name)?;
        let mut msg = index_message(link.index);
        let state = if on {
            BridgeStpState::KernelStp
        } else {
            BridgeStpState::Disabled
        };
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Bridge),
            LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::StpState(state)])),
        ]));
        self.execute(
            &format!("setting STP on {name}"),
            RouteNetlinkMessage::NewLink(msg),
            0,
        )
    }

    /// Creates the veth pair `name`/`peer`, both ends with `mtu`. Returns
    /// false, changing nothing, when both ends exist already as veths; fails
    /// when only one does, or a link of another kind holds a name.
    pub fn add_veth(&mut self, name: &str, peer: &str, mtu: u32) -> Result<bool, RtnlError> {
        check_name(name)?;
        check_name(peer)?;
        let here = self.link(name)?;
        let there = self.link(peer)?;
        match (&here, &there) {
            (None, None) => {}
            (Some(a), Some(b)) if a.kind == LinkKind::Veth && b.kind == LinkKind::Veth => {
                return Ok(false);
            }
            _ => {
                return Err(RtnlError::Unexpected(format!(
                    "veth pair {name}/{peer} half exists ({name}: {}, {peer}: {})",
                    describe(&here),
                    describe(&there)
                )));
            }
        }
        let mut peer_msg = name_message(peer);
        peer_msg.attributes.push(LinkAttribute::Mtu(mtu));
        let mut msg = name_message(name);
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.execute(
            &format!("creating veth pair {name}/{peer}"),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(true)
    }

    /// Deletes the link called `name`; false if there was none.
    pub fn delete_link(&mut self, name: &str) -> Result<bool, RtnlError> {
        let Some(link) = self.link(name)? else {
            return Ok(false);
        };
        match self.execute(
            &format!("deleting link {name}"),
            RouteNetlinkMessage::DelLink(index_message(link.index)),
            0,
        ) {
            Ok(()) => Ok(true),
            // Deleting one end of a veth takes the other with it; a race
            // with that (or anyone else) is not a failure.
            Err(e) if e.errno() == Some(ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn set_attrs(
        &mut self,
        op: &str,
        name: &str,
        attrs: Vec<LinkAttribute>,
    ) -> Result<(), RtnlError> {
        let link = self.require_link(name)?;
        let mut msg = index_message(link.index);
        msg.attributes = attrs;
        self.execute(op, RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Sets the MTU of `name`.
    pub fn set_mtu(&mut self, name: &str, mtu: u32) -> Result<(), RtnlError> {
        self.set_attrs(
            &format!("setting MTU {mtu} on {name}"),
            name,
            vec![LinkAttribute::Mtu(mtu)],
        )
    }

    /// Sets the Ethernet address of `name`.
    pub fn set_mac(&mut self, name: &str, mac: MacAddr) -> Result<(), RtnlError> {
        self.set_attrs(
            &format!("setting address {mac} on {name}"),
            name,
            vec![LinkAttribute::Address(mac.0.to_vec())],
        )
    }

    /// Enslaves `name` to the bridge `master`.
    pub fn set_master(&mut self, name: &str, master: &str) -> Result<(), RtnlError> {
        let master_index = self.require_link(master)?.index;
        self.set_attrs(
            &format!("attaching {name} to {master}"),
            name,
            vec![LinkAttribute::Controller(master_index)],
        )
    }

    /// Brings `name` up (`up`) or down.
    pub fn set_up(&mut self, name: &str, up: bool) -> Result<(), RtnlError> {
        let link = self.require_link(name)?;
        let mut msg = index_message(link.index);
        msg.header.change_mask = LinkFlags::Up;
        if up {
            msg.header.flags = LinkFlags::Up;
        }
        let word = if up { "up" } else { "down" };
        self.execute(
            &format!("setting {name} {word}"),
            RouteNetlinkMessage::SetLink(msg),
            0,
        )
    }

    /// The IPv4 addresses of `name`, with their prefix lengths.
    pub fn addresses_v4(&mut self, name: &str) -> Result<Vec<Ipv4Net>, RtnlError> {
        let index = self.require_link(name)?.index;
        let mut query = AddressMessage::default();
        query.header.family = AddressFamily::Inet;
        let replies = self.dump(
            &format!("listing addresses of {name}"),
            RouteNetlinkMessage::GetAddress(query),
        )?;
        let mut out = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewAddress(msg) = reply else {
                continue;
            };
            if msg.header.index != index || msg.header.family != AddressFamily::Inet {
                continue;
            }
            let mut local = None;
            let mut address = None;
            for attr in &msg.attributes {
                match attr {
                    AddressAttribute::Local(IpAddr::V4(ip)) => local = Some(*ip),
                    AddressAttribute::Address(IpAddr::V4(ip)) => address = Some(*ip),
                    _ => {}
                }
            }
            if let Some(ip) = local.or(address) {
                let net = Ipv4Net::new(ip, msg.header.prefix_len)
                    .map_err(|e| RtnlError::Decode(format!("address {ip}: {e}")))?;
                out.push(net);
            }
        }
        Ok(out)
    }

    fn address_message(index: u32, addr: Ipv4Net) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = addr.prefix_len();
        msg.header.index = index;
        let ip = IpAddr::V4(addr.addr());
        msg.attributes.push(AddressAttribute::Local(ip));
        msg.attributes.push(AddressAttribute::Address(ip));
        if addr.prefix_len() < 31 {
            msg.attributes
                .push(AddressAttribute::Broadcast(addr.broadcast()));
        }
        msg
    }

    /// Adds `addr` to `name`; false if it was there already.
    pub fn add_address(&mut self, name: &str, addr: Ipv4Net) -> Result<bool, RtnlError> {
        let index = self.require_link(name)?.index;
        match self.execute(
            &format!("adding address {addr} to {name}"),
            RouteNetlinkMessage::NewAddress(Self::address_message(index, addr)),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes `addr` from `name`; false if it was not there.
    pub fn delete_address(&mut self, name: &str, addr: Ipv4Net) -> Result<bool, RtnlError> {
        let index = self.require_link(name)?.index;
        match self.execute(
            &format!("removing address {addr} from {name}"),
            RouteNetlinkMessage::DelAddress(Self::address_message(index, addr)),
            0,
        ) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(EADDRNOTAVAIL) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn describe(link: &Option<Link>) -> String {
    match link {
        None => "absent".to_string(),
        Some(l) => l.kind.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips() {
        let mac: MacAddr = "0a:1b:2c:3d:4e:5f".parse().unwrap();
        assert_eq!(mac.0, [0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f]);
        assert_eq!(mac.to_string(), "0a:1b:2c:3d:4e:5f");
        for bad in [
            "",
            "0a:1b",
            "0a:1b:2c:3d:4e:5f:00",
            "0a:1b:2c:3d:4e:zz",
            "0a::2c:3d:4e:5f",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("weave").is_ok());
        assert!(check_name("vethwe-datapath").is_ok());
        assert!(check_name("vethwe-datapath0").is_err());
        assert!(check_name("").is_err());
        assert!(check_name("a/b").is_err());
    }

    #[test]
    fn kinds_map_from_the_kernel_names() {
        assert_eq!(LinkKind::from_info(&InfoKind::Bridge), LinkKind::Bridge);
        assert_eq!(
            LinkKind::from_info(&InfoKind::Other("openvswitch".into())),
            LinkKind::Openvswitch
        );
        assert_eq!(
            LinkKind::from_info(&InfoKind::Dummy),
            LinkKind::Other("dummy".into())
        );
    }
}
