//! Blocked connections, read by the controller itself from NFLOG (the drop
//! rules log to group [`GROUP`], Weave's 86) over nfnetlink_log: no ulogd,
//! no FIFO.

use std::io;
use std::net::Ipv4Addr;

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

/// The NFLOG group our drop rules log to (Weave's).
pub const GROUP: u16 = 86;

const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
const NLMSG_ERROR: u16 = 2;

/// A dropped packet as NFLOG reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The log prefix: which of our chains dropped it.
    pub prefix: String,
    /// Source address.
    pub saddr: Ipv4Addr,
    /// Destination address.
    pub daddr: Ipv4Addr,
    /// IP protocol number.
    pub proto: u8,
    /// Destination port (TCP, UDP, SCTP).
    pub dport: Option<u16>,
}

/// A subscription to our NFLOG group in the current network namespace.
pub struct Reader {
    sock: Socket,
}

fn config_msg(group: u16, attr_ty: u16, attr: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    let len = 16 + 4 + 4 + attr.len().div_ceil(4) * 4;
    b.extend_from_slice(&(len as u32).to_ne_bytes());
    b.extend_from_slice(&((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG).to_ne_bytes());
    b.extend_from_slice(&(0x1u16 | 0x4).to_ne_bytes()); // REQUEST | ACK
    b.extend_from_slice(&1u32.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.push(0); // AF_UNSPEC
    b.push(0);
    b.extend_from_slice(&group.to_be_bytes());
    b.extend_from_slice(&((4 + attr.len()) as u16).to_ne_bytes());
    b.extend_from_slice(&attr_ty.to_ne_bytes());
    b.extend_from_slice(attr);
    while b.len() % 4 != 0 {
        b.push(0);
    }
    b
}

impl Reader {
    /// Binds group `group`, copying the first 64 bytes of each packet.
    pub fn open(group: u16) -> io::Result<Reader> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        let mut mode = 64u32.to_be_bytes().to_vec();
        mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
        for msg in [
            config_msg(group, NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]),
            config_msg(group, NFULA_CFG_MODE, &mode),
        ] {
            sock.send(&msg, 0)?;
            let (ack, _) = sock.recv_from_full()?;
            if ack.len() >= 20 && u16::from_ne_bytes([ack[4], ack[5]]) == NLMSG_ERROR {
                let errno = i32::from_ne_bytes([ack[16], ack[17], ack[18], ack[19]]);
                if errno != 0 {
                    return Err(io::Error::from_raw_os_error(-errno));
                }
            }
        }
        Ok(Reader { sock })
    }

    /// Waits for the next datagram and returns the packets in it.
    pub fn read(&mut self) -> io::Result<Vec<Blocked>> {
        let (data, _) = self.sock.recv_from_full()?;
        Ok(parse(&data))
    }
}

/// Parses a datagram of NFULNL_MSG_PACKET messages (others are skipped).
pub fn parse(data: &[u8]) -> Vec<Blocked> {
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= 20 {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let ty = u16::from_ne_bytes([rest[4], rest[5]]);
        if len < 20 || len > rest.len() {
            break;
        }
        if ty == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET
            && let Some(b) = parse_packet(&rest[20..len])
        {
            out.push(b);
        }
        rest = &rest[(len.div_ceil(4) * 4).min(rest.len())..];
    }
    out
}

fn parse_packet(mut attrs: &[u8]) -> Option<Blocked> {
    let mut prefix = String::new();
    let mut payload: &[u8] = &[];
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let ty = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            break;
        }
        let value = &attrs[4..len];
        match ty {
            NFULA_PREFIX => {
                prefix = String::from_utf8_lossy(value)
                    .trim_end_matches('\0')
                    .to_string();
            }
            NFULA_PAYLOAD => payload = value,
            _ => {}
        }
        attrs = &attrs[(len.div_ceil(4) * 4).min(attrs.len())..];
    }
    if payload.len() < 20 || payload[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(payload[0] & 0xf) * 4;
    let proto = payload[9];
    let saddr = Ipv4Addr::new(payload[12], payload[13], payload[14], payload[15]);
    let daddr = Ipv4Addr::new(payload[16], payload[17], payload[18], payload[19]);
    let dport = match proto {
        6 | 17 | 132 if payload.len() >= ihl + 4 => {
            Some(u16::from_be_bytes([payload[ihl + 2], payload[ihl + 3]]))
        }
        _ => None,
    };
    Some(Blocked {
        prefix,
        saddr,
        daddr,
        proto,
        dport,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_packet_message() {
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0];
        ip.extend_from_slice(&[10, 40, 0, 12, 10, 40, 0, 11]);
        ip.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0, 0]);
        let mut attrs = Vec::new();
        let mut put = |ty: u16, v: &[u8]| {
            attrs.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
            attrs.extend_from_slice(&ty.to_ne_bytes());
            attrs.extend_from_slice(v);
            while attrs.len() % 4 != 0 {
                attrs.push(0);
            }
        };
        put(NFULA_PREFIX, b"weave-npc ingress\0");
        put(NFULA_PAYLOAD, &ip);
        let mut msg = Vec::new();
        msg.extend_from_slice(&((20 + attrs.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&(NFNL_SUBSYS_ULOG << 8).to_ne_bytes());
        msg.extend_from_slice(&[0; 10]);
        msg.extend_from_slice(&[2, 0, 0, 86]);
        msg.extend_from_slice(&attrs);
        let got = parse(&msg);
        assert_eq!(
            got,
            vec![Blocked {
                prefix: "weave-npc ingress".into(),
                saddr: Ipv4Addr::new(10, 40, 0, 12),
                daddr: Ipv4Addr::new(10, 40, 0, 11),
                proto: 6,
                dport: Some(80),
            }]
        );
        assert!(parse(&msg[..30]).is_empty());
    }
}
