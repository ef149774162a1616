//! Checks a flow against the rules the kernel enforces before it is sent.
//!
//! The kernel answers a bad flow with a bare `EINVAL` (the reason goes to the
//! kernel log only, rate-limited). [`validate_flow`] finds the same mistakes
//! in userspace and names them. The rules follow the kernel's flow parser
//! (`net/openvswitch/flow_netlink.c`):
//!
//! * a key needs `ethernet()` or `eth_type()`; an ethertype below 0x0600 is
//!   refused; no attribute may appear twice in one set;
//! * eth_type 0x0800 needs an `ipv4()` attribute, 0x86dd `ipv6()`, 0x0806 and
//!   0x8035 `arp()`, 0x8847/0x8848 `mpls()`; an IPv4/IPv6 key that is not a
//!   later fragment needs `tcp()` and `tcp_flags()` for protocol 6, `udp()`
//!   for 17, `sctp()` for 132, `icmp()` for 1 (IPv4) and `icmpv6()` for 58
//!   (IPv6), plus `nd()` for ICMPv6 types 135/136;
//! * a VLAN key (eth_type 0x8100/0x88a8 with `ethernet()`) needs `vlan()`
//!   and `encap()`, and the TCI needs the 0x1000 "tag present" bit (a zero TCI
//!   is allowed only with an empty encap); `vlan()` without a VLAN ethertype
//!   is refused;
//! * a tunnel key (and `set(tunnel(...))`) needs a non-zero destination and a
//!   TTL, and must not mix IPv4 and IPv6;
//! * mask attributes that are non-zero must have a key attribute of the same
//!   type (in_port, ethertype and tunnel excepted); a non-zero L3 mask needs
//!   an exact ethertype match, a non-zero L4 mask (tcp, tcp_flags, udp, sctp,
//!   icmp, icmpv6) an exact IP protocol mask, an `nd()` mask an exact ICMPv6
//!   type mask; a masked VLAN match needs an exact TPID and the tag-present
//!   bit in the TCI mask;
//! * actions: the output port and in_port must be below 65536; `drop` must be
//!   the last action of its list; `clone`/`sample` lists may nest at most 16
//!   deep (the kernel answers `EOVERFLOW` past that); `set_masked` cannot
//!   target the tunnel; `set`/`set_masked` cannot change the ethertype, VLAN
//!   or encap; setting an L3/L4 header needs a key of that kind; `push_vlan`
//!   needs a VLAN TPID and the tag-present bit; `userspace` needs a PID.

use std::collections::HashSet;

use thiserror::Error;

use super::action::{Action, SampleAttr, UserspaceAttr};
use super::key::{KeyAttr, TunnelKeyAttr, attr as k};
use super::nla::Nla;

/// The kernel's limit on nested action lists (`clone`, `sample`).
pub const MAX_ACTIONS_DEPTH: usize = 16;
/// Port numbers must be below this (`DP_MAX_PORTS`).
pub const DP_MAX_PORTS: u32 = 65536;
const VLAN_TAG_PRESENT: u16 = 0x1000;

/// A flow the kernel would refuse, and why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FlowError {
    /// The same attribute type twice in one key, mask or nested set.
    #[error("duplicate {set} attribute {kind}")]
    Duplicate {
        /// "key", "mask" or "tunnel".
        set: &'static str,
        /// The attribute type.
        kind: u16,
    },
    /// Key types 29..=31 exist in userspace or inside the kernel only.
    #[error("key attribute {0} is not accepted from userspace")]
    ReservedKey(u16),
    /// Neither `ethernet()` nor `eth_type()`.
    #[error("the key needs an ethernet() or eth_type() attribute")]
    MissingEthernet,
    /// An ethertype below 0x0600 is a length, not a type.
    #[error("eth_type {0:#06x} is below 0x0600")]
    EtherTypeTooSmall(u16),
    /// A key attribute the ethertype or protocol requires is missing.
    #[error("eth_type {eth_type:#06x} (ip proto {proto:?}) needs a {needed}() key attribute")]
    MissingKey {
        /// The effective ethertype.
        eth_type: u16,
        /// The IP protocol, when relevant.
        proto: Option<u8>,
        /// The missing attribute, in ovs-dpctl's name.
        needed: &'static str,
    },
    /// A VLAN ethertype without `vlan()` and `encap()`.
    #[error("a VLAN key (eth_type 0x8100/0x88a8) needs vlan() and encap()")]
    VlanWithoutEncap,
    /// A VLAN TCI without the tag-present (0x1000) bit.
    #[error("VLAN TCI {0:#06x} lacks the 0x1000 tag-present bit")]
    VlanTciWithoutCfi(u16),
    /// `vlan()` in a key whose ethertype is not a VLAN type.
    #[error("vlan() without a VLAN eth_type")]
    VlanUnexpected,
    /// A VLAN mask that does not match the TPID exactly or misses the tag bit.
    #[error("a VLAN mask needs eth_type mask 0xffff and the 0x1000 bit in the vlan mask")]
    VlanMaskNotExact,
    /// A tunnel key or set(tunnel) without a non-zero destination.
    #[error("tunnel metadata needs a non-zero destination address")]
    TunnelMissingDst,
    /// A tunnel key or set(tunnel) without TTL.
    #[error("tunnel metadata needs a ttl")]
    TunnelMissingTtl,
    /// IPv4 and IPv6 tunnel addresses together.
    #[error("tunnel metadata mixes IPv4 and IPv6 addresses")]
    TunnelMixedFamilies,
    /// IPv4/IPv6 fragment type above 2.
    #[error("fragment type {0} is out of range")]
    BadFragType(u8),
    /// IPv6 flow label wider than 20 bits.
    #[error("IPv6 flow label {0:#x} is wider than 20 bits")]
    BadFlowLabel(u32),
    /// ARP opcode above 255.
    #[error("ARP opcode {0} is out of range")]
    BadArpOp(u16),
    /// A port number of 65536 or more.
    #[error("port {0} is out of range")]
    PortOutOfRange(u32),
    /// A non-zero mask attribute with no key attribute of its type.
    #[error("mask attribute {0} has no matching key attribute")]
    MaskWithoutKey(u16),
    /// A non-zero L3 mask without an exact ethertype match.
    #[error("mask attribute {0} (L3) needs an exact eth_type mask")]
    L3MaskNeedsExactEthType(u16),
    /// A non-zero L4 mask without an exact IP protocol mask.
    #[error("mask attribute {0} (L4) needs an exact IP protocol mask")]
    L4MaskNeedsExactIpProto(u16),
    /// An `nd()` mask without an exact ICMPv6 type mask.
    #[error("an nd() mask needs an exact icmpv6 type mask")]
    NdMaskNeedsExactIcmpType,
    /// `drop` followed by another action.
    #[error("drop must be the last action")]
    DropNotLast,
    /// Action lists nested deeper than [`MAX_ACTIONS_DEPTH`].
    #[error("actions nested deeper than {MAX_ACTIONS_DEPTH}")]
    ActionsTooDeep,
    /// `set_masked(tunnel(...))`.
    #[error("set_masked cannot change tunnel metadata")]
    SetMaskedTunnel,
    /// set/set_masked with value and mask of different types.
    #[error("set_masked value and mask differ in type")]
    SetMaskedMismatch,
    /// A key type `set` cannot change.
    #[error("set cannot change key attribute {0}")]
    UnsettableKey(u16),
    /// Setting a header the flow's key does not match on.
    #[error("set of key attribute {0} needs a flow key of that kind")]
    SetNeedsMatchingKey(u16),
    /// A bad push_vlan.
    #[error("push_vlan needs TPID 0x8100/0x88a8 and the 0x1000 bit in the TCI")]
    BadPushVlan,
    /// A userspace action without PID.
    #[error("userspace action without a pid")]
    UserspaceWithoutPid,
}

fn is_vlan_type(t: u16) -> bool {
    t == 0x8100 || t == 0x88a8
}

fn nonzero(a: &KeyAttr) -> bool {
    a.payload_bytes().iter().any(|&b| b != 0)
}

fn check_dups(set: &'static str, attrs: &[KeyAttr]) -> Result<(), FlowError> {
    let mut seen = HashSet::new();
    for a in attrs {
        if !seen.insert(a.kind()) {
            return Err(FlowError::Duplicate {
                set,
                kind: a.kind(),
            });
        }
    }
    Ok(())
}

/// Checks tunnel metadata in a key or a set action.
pub fn validate_tunnel(t: &[TunnelKeyAttr]) -> Result<(), FlowError> {
    let mut seen = HashSet::new();
    let (mut v4, mut v6, mut dst_ok, mut ttl) = (false, false, false, false);
    for a in t {
        if !seen.insert(a.kind()) {
            return Err(FlowError::Duplicate {
                set: "tunnel",
                kind: a.kind(),
            });
        }
        match a {
            TunnelKeyAttr::Ipv4Src(_) => v4 = true,
            TunnelKeyAttr::Ipv4Dst(d) => {
                v4 = true;
                dst_ok = !d.is_unspecified();
            }
            TunnelKeyAttr::Ipv6Src(_) => v6 = true,
            TunnelKeyAttr::Ipv6Dst(d) => {
                v6 = true;
                dst_ok = !d.is_unspecified();
            }
            TunnelKeyAttr::Ttl(_) => ttl = true,
            _ => {}
        }
    }
    if v4 && v6 {
        return Err(FlowError::TunnelMixedFamilies);
    }
    if !dst_ok {
        return Err(FlowError::TunnelMissingDst);
    }
    if !ttl {
        return Err(FlowError::TunnelMissingTtl);
    }
    Ok(())
}

/// What the key matches on, after looking through VLAN encapsulation.
#[derive(Debug, Default, Clone, Copy)]
struct Summary {
    eth_type: Option<u16>,
    proto: Option<u8>,
    frag_later: bool,
}

fn find(attrs: &[KeyAttr], kind: u16) -> Option<&KeyAttr> {
    attrs.iter().find(|a| a.kind() == kind)
}

/// Validates the key; returns the set of attribute kinds present at the
/// innermost level together with the outer ones, and a summary.
fn validate_key(key: &[KeyAttr]) -> Result<(HashSet<u16>, Summary), FlowError> {
    check_dups("key", key)?;
    let mut kinds: HashSet<u16> = key.iter().map(Nla::kind).collect();
    for a in key {
        match a {
            KeyAttr::Other { kind, .. } if (29..=31).contains(kind) => {
                return Err(FlowError::ReservedKey(*kind));
            }
            KeyAttr::InPort(p) if *p >= DP_MAX_PORTS => return Err(FlowError::PortOutOfRange(*p)),
            KeyAttr::Tunnel(t) => validate_tunnel(t)?,
            _ => {}
        }
    }
    let has_eth = kinds.contains(&k::ETHERNET);
    let outer_type = key.iter().find_map(|a| match a {
        KeyAttr::EtherType(t) => Some(t.get()),
        _ => None,
    });
    if !has_eth && outer_type.is_none() {
        return Err(FlowError::MissingEthernet);
    }
    let mut level: Vec<KeyAttr> = key.to_vec();
    let mut eth_type = outer_type.unwrap_or(0x05ff);
    // Walk VLAN tags (at most two levels: S-VLAN then C-VLAN).
    for _ in 0..2 {
        if has_eth && is_vlan_type(eth_type) {
            let tci = level.iter().find_map(|a| match a {
                KeyAttr::Vlan(t) => Some(t.get()),
                _ => None,
            });
            let encap = level.iter().find_map(|a| match a {
                KeyAttr::Encap(e) => Some(e.clone()),
                _ => None,
            });
            let (Some(tci), Some(encap)) = (tci, encap) else {
                return Err(FlowError::VlanWithoutEncap);
            };
            if tci & VLAN_TAG_PRESENT == 0 {
                if tci != 0 || !encap.is_empty() {
                    return Err(FlowError::VlanTciWithoutCfi(tci));
                }
                return Ok((
                    kinds,
                    Summary {
                        eth_type: Some(eth_type),
                        ..Summary::default()
                    },
                ));
            }
            check_dups("key", &encap)?;
            kinds.extend(encap.iter().map(Nla::kind));
            eth_type = encap
                .iter()
                .find_map(|a| match a {
                    KeyAttr::EtherType(t) => Some(t.get()),
                    _ => None,
                })
                .unwrap_or(0x05ff);
            level = encap;
        } else if find(&level, k::VLAN).is_some() {
            return Err(FlowError::VlanUnexpected);
        } else {
            break;
        }
    }
    if eth_type < 0x0600 && eth_type != 0x05ff {
        return Err(FlowError::EtherTypeTooSmall(eth_type));
    }
    let mut s = Summary {
        eth_type: Some(eth_type),
        ..Summary::default()
    };
    let need = |kind: u16, name: &'static str, proto: Option<u8>| -> Result<(), FlowError> {
        if find(&level, kind).is_none() {
            Err(FlowError::MissingKey {
                eth_type,
                proto,
                needed: name,
            })
        } else {
            Ok(())
        }
    };
    match eth_type {
        0x0806 | 0x8035 => {
            need(k::ARP, "arp", None)?;
            if let Some(KeyAttr::Arp(a)) = find(&level, k::ARP) {
                if a.op.get() & 0xff00 != 0 {
                    return Err(FlowError::BadArpOp(a.op.get()));
                }
            }
        }
        0x8847 | 0x8848 => need(k::MPLS, "mpls", None)?,
        0x0800 => {
            need(k::IPV4, "ipv4", None)?;
            if let Some(KeyAttr::Ipv4(ip)) = find(&level, k::IPV4) {
                if ip.frag > 2 {
                    return Err(FlowError::BadFragType(ip.frag));
                }
                s.proto = Some(ip.proto);
                s.frag_later = ip.frag == 2;
            }
        }
        0x86dd => {
            need(k::IPV6, "ipv6", None)?;
            if let Some(KeyAttr::Ipv6(ip)) = find(&level, k::IPV6) {
                if ip.frag > 2 {
                    return Err(FlowError::BadFragType(ip.frag));
                }
                if ip.label.get() & 0xfff0_0000 != 0 {
                    return Err(FlowError::BadFlowLabel(ip.label.get()));
                }
                s.proto = Some(ip.proto);
                s.frag_later = ip.frag == 2;
            }
        }
        _ => {}
    }
    if let (Some(proto), false) = (s.proto, s.frag_later) {
        let v6 = eth_type == 0x86dd;
        match proto {
            6 => {
                need(k::TCP, "tcp", Some(6))?;
                need(k::TCP_FLAGS, "tcp_flags", Some(6))?;
            }
            17 => need(k::UDP, "udp", Some(17))?,
            132 => need(k::SCTP, "sctp", Some(132))?,
            1 if !v6 => need(k::ICMP, "icmp", Some(1))?,
            58 if v6 => {
                need(k::ICMPV6, "icmpv6", Some(58))?;
                if let Some(KeyAttr::Icmpv6(i)) = find(&level, k::ICMPV6) {
                    if i.icmp_type == 135 || i.icmp_type == 136 {
                        need(k::ND, "nd", Some(58))?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok((kinds, s))
}

fn validate_mask(
    mask: &[KeyAttr],
    key_kinds: &HashSet<u16>,
    key: &[KeyAttr],
) -> Result<(), FlowError> {
    check_dups("mask", mask)?;
    let mut attrs: Vec<&KeyAttr> = mask.iter().collect();
    // A masked VLAN match: look into the encap mask too.
    if let Some(KeyAttr::Encap(inner)) = find(mask, k::ENCAP) {
        let tci_key = key.iter().find_map(|a| match a {
            KeyAttr::Vlan(t) => Some(t.get()),
            _ => None,
        });
        let tci_mask = mask.iter().find_map(|a| match a {
            KeyAttr::Vlan(t) => Some(t.get()),
            _ => None,
        });
        let tpid_mask = mask.iter().find_map(|a| match a {
            KeyAttr::EtherType(t) => Some(t.get()),
            _ => None,
        });
        if tci_key.unwrap_or(0) & VLAN_TAG_PRESENT == 0
            || tpid_mask != Some(0xffff)
            || tci_mask.unwrap_or(0) & VLAN_TAG_PRESENT == 0
        {
            return Err(FlowError::VlanMaskNotExact);
        }
        check_dups("mask", inner)?;
        attrs.retain(|a| !matches!(a.kind(), k::ENCAP | k::VLAN | k::ETHERTYPE));
        attrs.extend(inner.iter());
    }
    let eth_exact = attrs
        .iter()
        .any(|a| matches!(a, KeyAttr::EtherType(t) if t.get() != 0));
    let proto_exact = attrs.iter().any(|a| match a {
        KeyAttr::Ipv4(ip) => ip.proto == 0xff,
        KeyAttr::Ipv6(ip) => ip.proto == 0xff,
        _ => false,
    });
    let icmp_type_exact = attrs
        .iter()
        .any(|a| matches!(a, KeyAttr::Icmpv6(i) if i.icmp_type == 0xff));
    for a in attrs {
        let kind = a.kind();
        if kind == k::ENCAP || !nonzero(a) {
            continue;
        }
        if let KeyAttr::InPort(_) | KeyAttr::Tunnel(_) | KeyAttr::EtherType(_) = a {
            continue;
        }
        if !key_kinds.contains(&kind) {
            return Err(FlowError::MaskWithoutKey(kind));
        }
        match kind {
            k::IPV4 | k::IPV6 | k::ARP | k::MPLS if !eth_exact => {
                return Err(FlowError::L3MaskNeedsExactEthType(kind));
            }
            k::TCP | k::TCP_FLAGS | k::UDP | k::SCTP | k::ICMP | k::ICMPV6 if !proto_exact => {
                return Err(FlowError::L4MaskNeedsExactIpProto(kind));
            }
            k::ND if !icmp_type_exact => return Err(FlowError::NdMaskNeedsExactIcmpType),
            _ => {}
        }
    }
    Ok(())
}

fn validate_set(value: &KeyAttr, s: &Summary, masked: bool) -> Result<(), FlowError> {
    let kind = value.kind();
    let proto = if s.frag_later { None } else { s.proto };
    let ok = match value {
        KeyAttr::Tunnel(t) => {
            if masked {
                return Err(FlowError::SetMaskedTunnel);
            }
            validate_tunnel(t)?;
            true
        }
        KeyAttr::EtherType(_) | KeyAttr::Vlan(_) | KeyAttr::Encap(_) => {
            return Err(FlowError::UnsettableKey(kind));
        }
        KeyAttr::Ipv4(_) => s.eth_type == Some(0x0800),
        KeyAttr::Ipv6(_) => s.eth_type == Some(0x86dd),
        KeyAttr::Tcp(_) => proto == Some(6),
        KeyAttr::Udp(_) => proto == Some(17),
        KeyAttr::Sctp(_) => proto == Some(132),
        KeyAttr::Mpls(_) => matches!(s.eth_type, Some(0x8847 | 0x8848)),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(FlowError::SetNeedsMatchingKey(kind))
    }
}

fn validate_actions(actions: &[Action], s: &Summary, depth: usize) -> Result<(), FlowError> {
    if depth > MAX_ACTIONS_DEPTH {
        return Err(FlowError::ActionsTooDeep);
    }
    let last = actions.len().saturating_sub(1);
    for (i, a) in actions.iter().enumerate() {
        match a {
            Action::Drop(_) if i != last => return Err(FlowError::DropNotLast),
            Action::Output(p) if *p >= DP_MAX_PORTS => return Err(FlowError::PortOutOfRange(*p)),
            Action::Set(v) => validate_set(v, s, false)?,
            Action::SetMasked { value, mask } => {
                if value.kind() != mask.kind() {
                    return Err(FlowError::SetMaskedMismatch);
                }
                validate_set(value, s, true)?;
            }
            Action::PushVlan { tpid, tci }
                if !is_vlan_type(tpid.get()) || tci.get() & VLAN_TAG_PRESENT == 0 =>
            {
                return Err(FlowError::BadPushVlan);
            }
            Action::Userspace(u) if !u.iter().any(|x| matches!(x, UserspaceAttr::Pid(_))) => {
                return Err(FlowError::UserspaceWithoutPid);
            }
            Action::Clone(inner) => validate_actions(inner, s, depth + 1)?,
            Action::Sample(attrs) => {
                for x in attrs {
                    if let SampleAttr::Actions(inner) = x {
                        validate_actions(inner, s, depth + 1)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Validates a flow: its key, optional mask and actions.
pub fn validate_flow(
    key: &[KeyAttr],
    mask: Option<&[KeyAttr]>,
    actions: &[Action],
) -> Result<(), FlowError> {
    let (kinds, summary) = validate_key(key)?;
    if let Some(mask) = mask {
        validate_mask(mask, &kinds, key)?;
    }
    validate_actions(actions, &summary, 0)
}

/// Validates an action list on its own (the key is taken as unknown, so set
/// actions on L3/L4 headers are not checked against it).
pub fn validate_actions_only(actions: &[Action]) -> Result<(), FlowError> {
    fn walk(actions: &[Action], depth: usize) -> Result<(), FlowError> {
        if depth > MAX_ACTIONS_DEPTH {
            return Err(FlowError::ActionsTooDeep);
        }
        let last = actions.len().saturating_sub(1);
        for (i, a) in actions.iter().enumerate() {
            match a {
                Action::Drop(_) if i != last => return Err(FlowError::DropNotLast),
                Action::Clone(inner) => walk(inner, depth + 1)?,
                Action::Set(KeyAttr::Tunnel(t)) => validate_tunnel(t)?,
                _ => {}
            }
        }
        Ok(())
    }
    walk(actions, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::key::{EthernetKey, IcmpKey, Ipv4Key, Ipv6Key, PortsKey};
    use crate::wire::types::{Be16, Be64};
    use std::net::Ipv4Addr;

    fn eth() -> KeyAttr {
        KeyAttr::Ethernet(EthernetKey::default())
    }
    fn et(t: u16) -> KeyAttr {
        KeyAttr::EtherType(Be16(t))
    }
    fn ip4(proto: u8) -> KeyAttr {
        KeyAttr::Ipv4(Ipv4Key {
            proto,
            ..Default::default()
        })
    }

    #[test]
    fn good_flows_pass() {
        let key = vec![KeyAttr::InPort(1), eth(), et(0x0800), ip4(0)];
        validate_flow(&key, None, &[Action::Output(2)]).unwrap();
        let key = vec![
            eth(),
            et(0x0800),
            ip4(6),
            KeyAttr::Tcp(PortsKey::default()),
            KeyAttr::TcpFlags(Be16(0)),
        ];
        validate_flow(&key, None, &[]).unwrap();
        // Only ethernet: 802.2 frames.
        validate_flow(&[eth()], None, &[Action::Drop(0)]).unwrap();
    }

    #[test]
    fn key_rules() {
        assert_eq!(
            validate_flow(&[KeyAttr::InPort(1)], None, &[]),
            Err(FlowError::MissingEthernet)
        );
        assert!(matches!(
            validate_flow(&[eth(), et(0x0800)], None, &[]),
            Err(FlowError::MissingKey { needed: "ipv4", .. })
        ));
        assert!(matches!(
            validate_flow(&[eth(), et(0x0800), ip4(6)], None, &[]),
            Err(FlowError::MissingKey { needed: "tcp", .. })
        ));
        assert!(matches!(
            validate_flow(
                &[eth(), et(0x0800), ip4(6), KeyAttr::Tcp(PortsKey::default())],
                None,
                &[]
            ),
            Err(FlowError::MissingKey {
                needed: "tcp_flags",
                ..
            })
        ));
        assert!(matches!(
            validate_flow(&[eth(), et(0x0800), ip4(17)], None, &[]),
            Err(FlowError::MissingKey { needed: "udp", .. })
        ));
        assert!(matches!(
            validate_flow(&[eth(), et(0x0800), ip4(1)], None, &[]),
            Err(FlowError::MissingKey { needed: "icmp", .. })
        ));
        // A later fragment carries no L4 header.
        let frag = KeyAttr::Ipv4(Ipv4Key {
            proto: 6,
            frag: 2,
            ..Default::default()
        });
        validate_flow(&[eth(), et(0x0800), frag], None, &[]).unwrap();
        let v6 = KeyAttr::Ipv6(Ipv6Key {
            proto: 58,
            ..Default::default()
        });
        let ns = KeyAttr::Icmpv6(IcmpKey {
            icmp_type: 135,
            code: 0,
        });
        assert!(matches!(
            validate_flow(&[eth(), et(0x86dd), v6, ns], None, &[]),
            Err(FlowError::MissingKey { needed: "nd", .. })
        ));
        assert!(matches!(
            validate_flow(&[eth(), et(0x0806)], None, &[]),
            Err(FlowError::MissingKey { needed: "arp", .. })
        ));
        assert_eq!(
            validate_flow(&[eth(), et(0x0800), et(0x0800), ip4(0)], None, &[]),
            Err(FlowError::Duplicate {
                set: "key",
                kind: 6
            })
        );
        assert_eq!(
            validate_flow(&[eth(), et(0x0100)], None, &[]),
            Err(FlowError::EtherTypeTooSmall(0x100))
        );
        assert_eq!(
            validate_flow(
                &[
                    eth(),
                    KeyAttr::Other {
                        kind: 29,
                        data: vec![]
                    }
                ],
                None,
                &[]
            ),
            Err(FlowError::ReservedKey(29))
        );
        assert_eq!(
            validate_flow(&[KeyAttr::InPort(70000), eth()], None, &[]),
            Err(FlowError::PortOutOfRange(70000))
        );
    }

    #[test]
    fn vlan_rules() {
        assert_eq!(
            validate_flow(&[eth(), et(0x8100)], None, &[]),
            Err(FlowError::VlanWithoutEncap)
        );
        let enc = KeyAttr::Encap(vec![et(0x0800), ip4(0)]);
        assert_eq!(
            validate_flow(
                &[eth(), et(0x8100), KeyAttr::Vlan(Be16(5)), enc.clone()],
                None,
                &[]
            ),
            Err(FlowError::VlanTciWithoutCfi(5))
        );
        validate_flow(
            &[eth(), et(0x8100), KeyAttr::Vlan(Be16(0x1005)), enc],
            None,
            &[],
        )
        .unwrap();
        // The inner ethertype's rules apply inside the encap.
        let enc = KeyAttr::Encap(vec![et(0x0800)]);
        assert!(matches!(
            validate_flow(
                &[eth(), et(0x8100), KeyAttr::Vlan(Be16(0x1005)), enc],
                None,
                &[]
            ),
            Err(FlowError::MissingKey { needed: "ipv4", .. })
        ));
        assert_eq!(
            validate_flow(
                &[eth(), et(0x0800), ip4(0), KeyAttr::Vlan(Be16(0x1005))],
                None,
                &[]
            ),
            Err(FlowError::VlanUnexpected)
        );
    }

    #[test]
    fn tunnel_rules() {
        let t = |attrs: Vec<TunnelKeyAttr>| vec![KeyAttr::Tunnel(attrs), eth(), et(0x0800), ip4(0)];
        assert_eq!(
            validate_flow(
                &t(vec![TunnelKeyAttr::Id(Be64(1)), TunnelKeyAttr::Ttl(64)]),
                None,
                &[]
            ),
            Err(FlowError::TunnelMissingDst)
        );
        assert_eq!(
            validate_flow(
                &t(vec![TunnelKeyAttr::Ipv4Dst(Ipv4Addr::new(192, 0, 2, 2))]),
                None,
                &[]
            ),
            Err(FlowError::TunnelMissingTtl)
        );
        validate_flow(
            &t(vec![
                TunnelKeyAttr::Ipv4Dst(Ipv4Addr::new(192, 0, 2, 2)),
                TunnelKeyAttr::Ttl(64),
            ]),
            None,
            &[],
        )
        .unwrap();
        let key = vec![eth(), et(0x0800), ip4(0)];
        let set = Action::Set(KeyAttr::Tunnel(vec![TunnelKeyAttr::Id(Be64(5))]));
        assert_eq!(
            validate_flow(&key, None, &[set, Action::Output(1)]),
            Err(FlowError::TunnelMissingDst)
        );
    }

    #[test]
    fn mask_rules() {
        let key = vec![
            eth(),
            et(0x0800),
            ip4(6),
            KeyAttr::Tcp(PortsKey::default()),
            KeyAttr::TcpFlags(Be16(0)),
        ];
        let ip_mask = KeyAttr::Ipv4(Ipv4Key {
            dst: Ipv4Addr::BROADCAST,
            ..Default::default()
        });
        assert_eq!(
            validate_flow(&key, Some(std::slice::from_ref(&ip_mask)), &[]),
            Err(FlowError::L3MaskNeedsExactEthType(k::IPV4))
        );
        validate_flow(&key, Some(&[et(0xffff), ip_mask.clone()]), &[]).unwrap();
        let tcp_mask = KeyAttr::Tcp(PortsKey {
            src: Be16(0),
            dst: Be16(0xffff),
        });
        assert_eq!(
            validate_flow(&key, Some(&[et(0xffff), ip_mask, tcp_mask.clone()]), &[]),
            Err(FlowError::L4MaskNeedsExactIpProto(k::TCP))
        );
        let ip_mask = KeyAttr::Ipv4(Ipv4Key {
            proto: 0xff,
            ..Default::default()
        });
        validate_flow(&key, Some(&[et(0xffff), ip_mask, tcp_mask]), &[]).unwrap();
        // An all-zero mask attribute is ignored, as the kernel does.
        validate_flow(&key, Some(&[ip4(0)]), &[]).unwrap();
        assert_eq!(
            validate_flow(&key, Some(&[KeyAttr::SkbMark(1)]), &[]),
            Err(FlowError::MaskWithoutKey(k::SKB_MARK))
        );
    }

    #[test]
    fn action_rules() {
        let key = vec![eth(), et(0x0800), ip4(0)];
        assert_eq!(
            validate_flow(&key, None, &[Action::Drop(0), Action::Output(1)]),
            Err(FlowError::DropNotLast)
        );
        let mut deep = vec![Action::Output(1)];
        for _ in 0..16 {
            deep = vec![Action::Clone(deep)];
        }
        validate_flow(&key, None, &deep).unwrap();
        let deeper = vec![Action::Clone(deep)];
        assert_eq!(
            validate_flow(&key, None, &deeper),
            Err(FlowError::ActionsTooDeep)
        );
        assert_eq!(
            validate_flow(&key, None, &[Action::Set(et(0x86dd))]),
            Err(FlowError::UnsettableKey(k::ETHERTYPE))
        );
        assert_eq!(
            validate_flow(
                &key,
                None,
                &[Action::Set(KeyAttr::Tcp(PortsKey::default()))]
            ),
            Err(FlowError::SetNeedsMatchingKey(k::TCP))
        );
        assert_eq!(
            validate_flow(
                &key,
                None,
                &[Action::PushVlan {
                    tpid: Be16(0x8100),
                    tci: Be16(5)
                }]
            ),
            Err(FlowError::BadPushVlan)
        );
        assert_eq!(
            validate_flow(&key, None, &[Action::Userspace(vec![])]),
            Err(FlowError::UserspaceWithoutPid)
        );
        assert_eq!(
            validate_flow(
                &key,
                None,
                &[Action::SetMasked {
                    value: KeyAttr::Tunnel(vec![]),
                    mask: KeyAttr::Tunnel(vec![])
                }]
            ),
            Err(FlowError::SetMaskedTunnel)
        );
    }
}
