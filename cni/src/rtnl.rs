//! A small synchronous rtnetlink client with the link, address and route
//! operations the plugin needs.
//!
//! A netlink socket belongs to the network namespace of the thread that
//! opened it, for its whole life: open one on a thread inside the
//! container's namespace (see [`crate::netns`]) to work there.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

use ipnet::Ipv4Net;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
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
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

const RECV_BUFFER: usize = 64 * 1024;
const HEADER_LEN: usize = 16;

/// What went wrong talking rtnetlink.
#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    /// The socket failed.
    #[error("rtnetlink socket: {0}")]
    Socket(#[source] io::Error),
    /// The kernel refused a request.
    #[error("{op}: {source}")]
    Kernel {
        /// The request, in words.
        op: String,
        /// The positive errno.
        errno: i32,
        /// The errno as an I/O error.
        #[source]
        source: io::Error,
    },
    /// A reply could not be decoded.
    #[error("malformed rtnetlink reply: {0}")]
    Decode(String),
    /// A reply was not what the request calls for.
    #[error("unexpected rtnetlink reply: {0}")]
    Unexpected(String),
}

impl RtnlError {
    /// The kernel's errno, if the kernel refused.
    pub fn errno(&self) -> Option<i32> {
        match self {
            RtnlError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// What the kernel says about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Kind (`bridge`, `veth`, `openvswitch`, …); empty for plain devices.
    pub kind: String,
    /// MTU.
    pub mtu: u32,
    /// Index of its master (bridge), if enslaved.
    pub master: Option<u32>,
    /// Hardware address, as `aa:bb:…`.
    pub mac: Option<String>,
    /// Administratively up.
    pub up: bool,
}

/// A route in the main table, as far as CHECK looks at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    /// Destination.
    pub dst: Ipv4Net,
    /// Next hop.
    pub gw: Option<Ipv4Addr>,
    /// Output interface.
    pub oif: Option<u32>,
}

/// Formats a hardware address.
pub fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn link_from(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        kind: String::new(),
        mtu: 0,
        master: None,
        mac: None,
        up: msg.header.flags.contains(LinkFlags::Up),
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::Controller(m) if *m != 0 => link.master = Some(*m),
            LinkAttribute::Address(bytes) if bytes.len() == 6 => link.mac = Some(format_mac(bytes)),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = kind.to_string();
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn index_message(index: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg
}

/// A netlink-route socket bound to the namespace it was opened in.
#[derive(Debug)]
pub struct Rtnl {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Rtnl {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Rtnl, RtnlError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(RtnlError::Socket)?;
        socket.bind_auto().map_err(RtnlError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(RtnlError::Socket)?;
        Ok(Rtnl {
            socket,
            seq: 0,
            buf: vec![0; RECV_BUFFER],
        })
    }

    fn execute(&mut self, op: &str, msg: RouteNetlinkMessage, flags: u16) -> Result<(), RtnlError> {
        self.exchange(op, msg, flags | NLM_F_ACK, false).map(|_| ())
    }

    fn get(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
    ) -> Result<RouteNetlinkMessage, RtnlError> {
        let mut replies = self.exchange(op, msg, NLM_F_ACK, false)?;
        match replies.len() {
            1 => replies
                .pop()
                .ok_or_else(|| RtnlError::Unexpected(format!("{op}: no reply"))),
            n => Err(RtnlError::Unexpected(format!("{op}: {n} replies"))),
        }
    }

    fn dump(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, RtnlError> {
        self.exchange(op, msg, NLM_F_DUMP, true)
    }

    fn exchange(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
        dump: bool,
    ) -> Result<Vec<RouteNetlinkMessage>, RtnlError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
        packet.header.flags = NLM_F_REQUEST | flags;
        packet.header.sequence_number = seq;
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0).map_err(RtnlError::Socket)?;
        let mut replies = Vec::new();
        loop {
            let n = self
                .socket
                .recv(&mut &mut self.buf[..], 0)
                .map_err(RtnlError::Socket)?;
            let data = self
                .buf
                .get(..n)
                .ok_or_else(|| RtnlError::Decode(format!("receive length {n}")))?;
            for frame in split_messages(data)? {
                let message: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(frame)
                        .map_err(|e| RtnlError::Decode(e.to_string()))?;
                if message.header.sequence_number != seq {
                    continue;
                }
                match message.payload {
                    NetlinkPayload::InnerMessage(inner) => {
                        replies.push(inner);
                        if !dump && flags & NLM_F_ACK == 0 {
                            return Ok(replies);
                        }
                    }
                    NetlinkPayload::Error(err) => {
                        return match err.code {
                            None => Ok(replies),
                            Some(code) => {
                                let errno = code.get().checked_neg().unwrap_or(i32::MAX);
                                Err(RtnlError::Kernel {
                                    op: op.to_string(),
                                    errno,
                                    source: io::Error::from_raw_os_error(errno),
                                })
                            }
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::Noop => {}
                    other => return Err(RtnlError::Unexpected(format!("{op}: {other:?}"))),
                }
            }
        }
    }

    /// The link called `name`, if any.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>, RtnlError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        let op = format!("looking up link {name}");
        match self.get(&op, RouteNetlinkMessage::GetLink(msg)) {
            Ok(RouteNetlinkMessage::NewLink(msg)) => Ok(Some(link_from(&msg))),
            Ok(other) => Err(RtnlError::Unexpected(format!("{op}: {other:?}"))),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link in the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>, RtnlError> {
        let replies = self.dump(
            "listing links",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
        )?;
        Ok(replies
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(msg) => Some(link_from(msg)),
                _ => None,
            })
            .collect())
    }

    /// Creates the veth pair `name` (here) / `peer`, the peer made directly
    /// inside the namespace open at `peer_netns`. Both get `mtu`.
    pub fn add_veth(
        &mut self,
        name: &str,
        peer: &str,
        mtu: u32,
        peer_netns: RawFd,
    ) -> Result<(), RtnlError> {
        let mut peer_msg = LinkMessage::default();
        peer_msg
            .attributes
            .push(LinkAttribute::IfName(peer.to_string()));
        peer_msg.attributes.push(LinkAttribute::Mtu(mtu));
        peer_msg.attributes.push(LinkAttribute::NetNsFd(peer_netns));
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.execute(
            &format!("creating veth pair {name}/{peer}"),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Deletes link `index`; false if it was already gone.
    pub fn delete_link(&mut self, index: u32) -> Result<bool, RtnlError> {
        match self.execute(
            &format!("deleting link #{index}"),
            RouteNetlinkMessage::DelLink(index_message(index)),
            0,
        ) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Enslaves link `index` to bridge `master`.
    pub fn set_master(&mut self, index: u32, master: u32) -> Result<(), RtnlError> {
        let mut msg = index_message(index);
        msg.attributes.push(LinkAttribute::Controller(master));
        self.execute(
            &format!("attaching link #{index} to #{master}"),
            RouteNetlinkMessage::SetLink(msg),
            0,
        )
    }

    /// Sets hairpin mode on the bridge port `index`.
    pub fn set_hairpin(&mut self, index: u32, on: bool) -> Result<(), RtnlError> {
        let mut msg = index_message(index);
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
                on,
            )])),
        ]));
        self.execute(
            &format!("setting hairpin mode on link #{index}"),
            RouteNetlinkMessage::NewLink(msg),
            0,
        )
    }

    /// Sets the MAC address of link `index` (the same one is fine: the
    /// kernel still announces the change to its address listeners, which
    /// with `arp_notify` send a gratuitous ARP).
    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<(), RtnlError> {
        let mut msg = index_message(index);
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        self.execute(
            &format!("setting the MAC address of link #{index}"),
            RouteNetlinkMessage::SetLink(msg),
            0,
        )
    }

    /// Brings link `index` up.
    pub fn set_up(&mut self, index: u32) -> Result<(), RtnlError> {
        let mut msg = index_message(index);
        msg.header.change_mask = LinkFlags::Up;
        msg.header.flags = LinkFlags::Up;
        self.execute(
            &format!("setting link #{index} up"),
            RouteNetlinkMessage::SetLink(msg),
            0,
        )
    }

    /// The IPv4 addresses of link `index`.
    pub fn addresses_v4(&mut self, index: u32) -> Result<Vec<Ipv4Net>, RtnlError> {
        let mut query = AddressMessage::default();
        query.header.family = AddressFamily::Inet;
        let replies = self.dump("listing addresses", RouteNetlinkMessage::GetAddress(query))?;
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

    /// Adds `addr` to link `index`; false if it was there already.
    pub fn add_address(&mut self, index: u32, addr: Ipv4Net) -> Result<bool, RtnlError> {
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
        match self.execute(
            &format!("adding address {addr} to link #{index}"),
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds a route to `dst` out of link `oif`, via `gw` if given, in the
    /// main table unless `table` says otherwise. An identical route already
    /// there is not an error.
    #[allow(clippy::too_many_arguments)]
    pub fn add_route(
        &mut self,
        dst: Ipv4Net,
        gw: Option<Ipv4Addr>,
        oif: u32,
        link_scope: bool,
        metric: Option<u32>,
        table: Option<u32>,
        mtu: Option<u32>,
        advmss: Option<u32>,
    ) -> Result<(), RtnlError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = dst.prefix_len();
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = if link_scope {
            RouteScope::Link
        } else {
            RouteScope::Universe
        };
        msg.header.kind = RouteType::Unicast;
        if dst.prefix_len() > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::Inet(
                    dst.network(),
                )));
        }
        if let Some(gw) = gw {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        }
        msg.attributes.push(RouteAttribute::Oif(oif));
        if let Some(metric) = metric {
            msg.attributes.push(RouteAttribute::Priority(metric));
        }
        if let Some(table) = table {
            match u8::try_from(table) {
                Ok(t) => msg.header.table = t,
                Err(_) => {
                    msg.header.table = 252; // RT_TABLE_COMPAT: the real id follows
                }
            }
            msg.attributes.push(RouteAttribute::Table(table));
        }
        let mut metrics = Vec::new();
        if let Some(mtu) = mtu {
            metrics.push(netlink_packet_route::route::RouteMetric::Mtu(mtu));
        }
        if let Some(advmss) = advmss {
            metrics.push(netlink_packet_route::route::RouteMetric::Advmss(advmss));
        }
        if !metrics.is_empty() {
            msg.attributes.push(RouteAttribute::Metrics(metrics));
        }
        let via = gw.map(|g| format!(" via {g}")).unwrap_or_default();
        match self.execute(
            &format!("adding route {dst}{via}"),
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Ok(()) => Ok(()),
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The IPv4 routes of the main table.
    pub fn routes_v4(&mut self) -> Result<Vec<RouteEntry>, RtnlError> {
        let mut query = RouteMessage::default();
        query.header.address_family = AddressFamily::Inet;
        let replies = self.dump("listing routes", RouteNetlinkMessage::GetRoute(query))?;
        let mut out = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewRoute(msg) = reply else {
                continue;
            };
            if msg.header.table != RouteHeader::RT_TABLE_MAIN {
                continue;
            }
            let mut dst = Ipv4Addr::UNSPECIFIED;
            let mut gw = None;
            let mut oif = None;
            for attr in &msg.attributes {
                match attr {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gw = Some(*ip),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            if let Ok(dst) = Ipv4Net::new(dst, msg.header.destination_prefix_length) {
                out.push(RouteEntry { dst, gw, oif });
            }
        }
        Ok(out)
    }
}

/// Splits one datagram into its netlink messages, checking every length.
pub fn split_messages(mut data: &[u8]) -> Result<Vec<&[u8]>, RtnlError> {
    let mut frames = Vec::new();
    while !data.is_empty() {
        let len_bytes: [u8; 4] = data
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| RtnlError::Decode(format!("{} trailing bytes", data.len())))?;
        let len = u32::from_ne_bytes(len_bytes) as usize;
        if len < HEADER_LEN || len > data.len() {
            return Err(RtnlError::Decode(format!(
                "message length {len} with {} bytes left",
                data.len()
            )));
        }
        frames.push(data.get(..len).unwrap_or_default());
        let step = len.saturating_add(3) & !3;
        data = data.get(step..).unwrap_or_default();
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_rejects_bad_lengths() {
        assert!(split_messages(&[1, 2]).is_err());
        assert!(split_messages(&[8, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let mut two = vec![0u8; 40];
        two[..4].copy_from_slice(&18u32.to_ne_bytes());
        two[20..24].copy_from_slice(&20u32.to_ne_bytes());
        assert_eq!(split_messages(&two).unwrap().len(), 2);
    }

    #[test]
    fn macs_are_formatted() {
        assert_eq!(format_mac(&[0xaa, 1, 2, 3, 4, 0xff]), "aa:01:02:03:04:ff");
    }
}
