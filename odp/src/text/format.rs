//! Printing keys, masks and actions the way `ovs-dpctl dump-flows` does.
//!
//! The rules follow OVS's `lib/odp-util.c` (3.1): a field whose mask is zero
//! is left out unless `verbose`; a field whose mask is all ones is printed
//! bare; anything in between is printed `value/mask`. Numbers keep OVS's
//! radix choices (ports and TTLs in decimal, marks and TOS in hex, where C's
//! `%#x` prints a zero as a bare `0`).

use std::collections::HashMap;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::action::{Action, CtAttr, NatAttr, SampleAttr, UserspaceAttr};
use crate::wire::key::{
    ArpKey, EthernetKey, FlowKey, IcmpKey, Ipv4Key, Ipv6Key, KeyAttr, NdKey, PortsKey,
    TunnelKeyAttr, attr,
};
use crate::wire::nla::{AttrIter, AttrWriter, Nla};
use crate::wire::types::{Be16, Be32, MacAddr};

/// Port numbers to print as names (what `ovs-dpctl -m` does by default).
pub type PortNames = HashMap<u32, String>;

/// Tunnel flag bits as OVS numbers them in its flow structure.
pub(crate) mod tun_flag {
    pub const OAM: u32 = 1 << 0;
    pub const DF: u32 = 1 << 1;
    pub const CSUM: u32 = 1 << 2;
    pub const KEY: u32 = 1 << 3;
    pub const ALL: u32 = 0xf;
}

pub(crate) fn tun_flag_name(bit: u32) -> Option<&'static str> {
    match bit {
        tun_flag::OAM => Some("oam"),
        tun_flag::DF => Some("df"),
        tun_flag::CSUM => Some("csum"),
        tun_flag::KEY => Some("key"),
        _ => None,
    }
}

pub(crate) fn tcp_flag_name(bit: u32) -> Option<&'static str> {
    Some(match bit {
        0x001 => "fin",
        0x002 => "syn",
        0x004 => "rst",
        0x008 => "psh",
        0x010 => "ack",
        0x020 => "urg",
        0x040 => "ece",
        0x080 => "cwr",
        0x100 => "ns",
        0x200 => "[200]",
        0x400 => "[400]",
        0x800 => "[800]",
        _ => return None,
    })
}

pub(crate) fn ct_state_name(bit: u32) -> Option<&'static str> {
    use crate::wire::key::ct_state as c;
    Some(match bit {
        c::NEW => "new",
        c::ESTABLISHED => "est",
        c::RELATED => "rel",
        c::REPLY_DIR => "rpl",
        c::INVALID => "inv",
        c::TRACKED => "trk",
        c::SRC_NAT => "snat",
        c::DST_NAT => "dnat",
        _ => return None,
    })
}

/// C's `%#x`: `0x` prefix except for zero.
fn hx(v: u64) -> String {
    if v == 0 {
        "0".to_owned()
    } else {
        format!("{v:#x}")
    }
}

/// glibc's `inet_ntop(AF_INET6)`: like Rust's display, except that an
/// address whose first 96 bits are zero (other than `::` and `::1`) is shown
/// with a dotted IPv4 tail.
pub(crate) fn in6(a: &Ipv6Addr) -> String {
    let s = a.segments();
    if s[..6] == [0; 6] && s[6] != 0 {
        let o = a.octets();
        return format!("::{}.{}.{}.{}", o[12], o[13], o[14], o[15]);
    }
    a.to_string()
}

fn chomp(out: &mut String, c: char) {
    if out.ends_with(c) {
        out.pop();
    }
}

/// `format_flags`: set bits by name joined with `del`, unknown ones as hex.
fn flags(out: &mut String, name: fn(u32) -> Option<&'static str>, mut v: u32, del: char) {
    if v == 0 {
        out.push('0');
        return;
    }
    let mut bad = 0;
    while v != 0 {
        let bit = v & v.wrapping_neg();
        match name(bit) {
            Some(s) => {
                out.push_str(s);
                out.push(del);
            }
            None => bad |= bit,
        }
        v &= !bit;
    }
    if bad != 0 {
        let _ = write!(out, "0x{bad:x}{del}");
    }
    chomp(out, del);
}

/// `format_flags_masked` without a field name.
fn flags_masked(
    out: &mut String,
    name: fn(u32) -> Option<&'static str>,
    v: u32,
    mut mask: u32,
    max: u32,
) {
    if mask == max {
        flags(out, name, v, '|');
        return;
    }
    if mask == 0 {
        out.push_str("0/0");
        return;
    }
    while mask != 0 {
        let bit = mask & mask.wrapping_neg();
        out.push(if v & bit != 0 { '+' } else { '-' });
        out.push_str(name(bit).unwrap_or("[Unknown]"));
        mask &= !bit;
    }
}

/// One `name=value[/mask],` field. `mask` is `None` for "no mask at all"
/// (exact); `empty` and `full` judge a given mask.
struct Field<'a, T> {
    out: &'a mut String,
    verbose: bool,
    name: &'a str,
    key: T,
    mask: Option<T>,
}

impl<T: Copy + PartialEq> Field<'_, T> {
    fn put(self, zero: T, full: fn(T) -> bool, show: fn(T) -> String, show_mask: fn(T) -> String) {
        let empty = self.mask == Some(zero);
        if self.verbose || !empty {
            let _ = write!(self.out, "{}={}", self.name, show(self.key));
            if let Some(m) = self.mask {
                if !full(m) {
                    let _ = write!(self.out, "/{}", show_mask(m));
                }
            }
            self.out.push(',');
        }
    }
}

macro_rules! field {
    ($out:expr, $v:expr, $name:expr, $key:expr, $mask:expr, $zero:expr, $full:expr, $show:expr, $showm:expr) => {
        Field {
            out: $out,
            verbose: $v,
            name: $name,
            key: $key,
            mask: $mask,
        }
        .put($zero, $full, $show, $showm)
    };
}

fn f_ipv4(out: &mut String, v: bool, name: &str, k: Ipv4Addr, m: Option<Ipv4Addr>) {
    field!(
        out,
        v,
        name,
        k,
        m,
        Ipv4Addr::UNSPECIFIED,
        |m| m == Ipv4Addr::BROADCAST,
        |a| a.to_string(),
        |a| a.to_string()
    );
}

fn f_in6(out: &mut String, v: bool, name: &str, k: Ipv6Addr, m: Option<Ipv6Addr>) {
    field!(
        out,
        v,
        name,
        k,
        m,
        Ipv6Addr::UNSPECIFIED,
        |m| m.octets() == [0xff; 16],
        |a| in6(&a),
        |a| in6(&a)
    );
}

fn f_eth(out: &mut String, v: bool, name: &str, k: MacAddr, m: Option<MacAddr>) {
    field!(
        out,
        v,
        name,
        k,
        m,
        MacAddr([0; 6]),
        |m| m == MacAddr::BROADCAST,
        |a| a.to_string(),
        |a| a.to_string()
    );
}

fn f_u8x(out: &mut String, v: bool, name: &str, k: u8, m: Option<u8>) {
    field!(
        out,
        v,
        name,
        k,
        m,
        0,
        |m| m == u8::MAX,
        |x| hx(x.into()),
        |x| hx(x.into())
    );
}

fn f_u8u(out: &mut String, v: bool, name: &str, k: u8, m: Option<u8>) {
    field!(
        out,
        v,
        name,
        k,
        m,
        0,
        |m| m == u8::MAX,
        |x| x.to_string(),
        |x| hx(x.into())
    );
}

fn f_be16(out: &mut String, v: bool, name: &str, k: Be16, m: Option<Be16>) {
    field!(
        out,
        v,
        name,
        k.get(),
        m.map(Be16::get),
        0,
        |m| m == u16::MAX,
        |x| x.to_string(),
        |x| hx(x.into())
    );
}

fn f_label(out: &mut String, v: bool, k: Be32, m: Option<Be32>) {
    field!(
        out,
        v,
        "label",
        k.get(),
        m.map(Be32::get),
        0,
        |m| m & 0xfffff == 0xfffff,
        |x| hx(x.into()),
        |x| hx(x.into())
    );
}

fn f_be64(out: &mut String, v: bool, name: &str, k: u64, m: Option<u64>) {
    field!(
        out,
        v,
        name,
        k,
        m,
        0,
        |m| m == u64::MAX,
        |x| format!("0x{x:x}"),
        hx
    );
}

fn f_frag(out: &mut String, k: u8, m: Option<u8>) {
    let empty = m == Some(0);
    let full = m.is_none_or(|m| m == u8::MAX);
    if !empty && !full {
        let _ = write!(
            out,
            "error: partial mask not supported for frag ({}),",
            hx(m.unwrap_or(0).into())
        );
    } else if !empty {
        let s = match k {
            0 => "no",
            1 => "first",
            2 => "later",
            _ => "<error>",
        };
        let _ = write!(out, "frag={s},");
    }
}

/// The value of `attr`'s mask counterpart, or `None` if the mask is absent.
macro_rules! mask_of {
    ($ma:expr, $variant:ident) => {
        match $ma {
            Some(KeyAttr::$variant(m)) => Some(*m),
            _ => None,
        }
    };
}

/// OVS's "is this mask attribute constant": wildcard for 0, exact for 0xff.
fn mask_is_constant(ma: &KeyAttr, b: u8) -> bool {
    match ma {
        KeyAttr::Encap(_) => false,
        KeyAttr::TcpFlags(m) => {
            let want = if b == 0 { 0 } else { 0xfff };
            m.get() & 0xfff == want
        }
        KeyAttr::Ipv6(m) => {
            let all = if b == 0 { 0u8 } else { 0xff };
            let addr = [all; 16];
            let label = if b == 0 { 0 } else { 0xfffff };
            m.label.get() & 0xfffff == label
                && m.proto == all
                && m.tclass == all
                && m.hlimit == all
                && m.frag == all
                && m.src.octets() == addr
                && m.dst.octets() == addr
        }
        KeyAttr::Arp(_) => {
            let p = ma.payload_bytes();
            p.get(..22).is_some_and(|s| s.iter().all(|&x| x == b))
        }
        KeyAttr::Other { kind, .. } if *kind > 31 => false,
        _ => ma.payload_bytes().iter().all(|&x| x == b),
    }
}

/// A mask attribute matching nothing, shaped like `a` (OVS builds one when a
/// mask lacks an attribute the key has).
fn wildcard_of(a: &KeyAttr) -> KeyAttr {
    match a {
        KeyAttr::Encap(v) => KeyAttr::Encap(v.iter().map(wildcard_of).collect()),
        KeyAttr::Tunnel(v) => KeyAttr::Tunnel(v.iter().map(tun_wildcard_of).collect()),
        other => {
            let zero = vec![0u8; other.payload_bytes().len()];
            KeyAttr::decode_payload(other.kind(), &zero, 0).unwrap_or(KeyAttr::Other {
                kind: other.kind(),
                data: zero,
            })
        }
    }
}

fn tun_wildcard_of(a: &TunnelKeyAttr) -> TunnelKeyAttr {
    use std::net::Ipv4Addr as V4;
    match a {
        TunnelKeyAttr::Id(_) => TunnelKeyAttr::Id(Default::default()),
        TunnelKeyAttr::Ipv4Src(_) => TunnelKeyAttr::Ipv4Src(V4::UNSPECIFIED),
        TunnelKeyAttr::Ipv4Dst(_) => TunnelKeyAttr::Ipv4Dst(V4::UNSPECIFIED),
        TunnelKeyAttr::Tos(_) => TunnelKeyAttr::Tos(0),
        TunnelKeyAttr::Ttl(_) => TunnelKeyAttr::Ttl(0),
        TunnelKeyAttr::TpSrc(_) => TunnelKeyAttr::TpSrc(Be16(0)),
        TunnelKeyAttr::TpDst(_) => TunnelKeyAttr::TpDst(Be16(0)),
        TunnelKeyAttr::Ipv6Src(_) => TunnelKeyAttr::Ipv6Src(Ipv6Addr::UNSPECIFIED),
        TunnelKeyAttr::Ipv6Dst(_) => TunnelKeyAttr::Ipv6Dst(Ipv6Addr::UNSPECIFIED),
        TunnelKeyAttr::GeneveOpts(d) => TunnelKeyAttr::GeneveOpts(vec![0; d.len()]),
        TunnelKeyAttr::Other { kind, data } if *kind == VXLAN_OPTS => TunnelKeyAttr::Other {
            kind: *kind,
            data: zero_nested(data),
        },
        TunnelKeyAttr::Other { kind, data } => TunnelKeyAttr::Other {
            kind: *kind,
            data: vec![0; data.len()],
        },
        flag => flag.clone(),
    }
}

/// `OVS_TUNNEL_KEY_ATTR_VXLAN_OPTS`: nested `OVS_VXLAN_EXT_*` attributes.
pub(crate) const VXLAN_OPTS: u16 = 11;
/// `OVS_VXLAN_EXT_GBP` inside [`VXLAN_OPTS`] (`u32`: flags << 16 | id).
pub(crate) const VXLAN_EXT_GBP: u16 = 1;

/// The nested attributes of `data`, same headers, zero payloads.
fn zero_nested(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = AttrWriter::new(&mut out);
    for a in AttrIter::new("vxlan options", data).map_while(Result::ok) {
        w.with(a.kind, |w| w.raw(&vec![0; a.payload.len()]));
    }
    let _ = w.finish();
    out
}

/// Nested attributes as (kind, payload) pairs; stops at the first bad one.
fn nested_pairs(data: &[u8]) -> Vec<(u16, Vec<u8>)> {
    AttrIter::new("vxlan options", data)
        .map_while(Result::ok)
        .map(|a| (a.kind, a.payload.to_vec()))
        .collect()
}

/// `format_odp_tun_vxlan_opt`.
fn format_vxlan_opts(out: &mut String, key: &[u8], mask: Option<&[u8]>, v: bool) {
    let masks = mask.map(nested_pairs);
    for (kind, payload) in nested_pairs(key) {
        let m: Option<Vec<u8>> = masks.as_ref().map(|ms| {
            ms.iter()
                .find(|(k, _)| *k == kind)
                .map_or_else(|| vec![0; payload.len()], |(_, p)| p.clone())
        });
        let as_u32 = |b: &[u8]| -> Option<u32> { Some(u32::from_ne_bytes(b.try_into().ok()?)) };
        match (kind, as_u32(&payload)) {
            (VXLAN_EXT_GBP, Some(k)) if m.as_deref().is_none_or(|m| m.len() == 4) => {
                let mm = m.as_deref().and_then(as_u32);
                out.push_str("gbp(");
                f_be16(
                    out,
                    v,
                    "id",
                    Be16((k & 0xffff) as u16),
                    mm.map(|m| Be16((m & 0xffff) as u16)),
                );
                f_u8x(
                    out,
                    v,
                    "flags",
                    (k >> 16) as u8,
                    mm.map(|m| (m >> 16) as u8),
                );
                chomp(out, ',');
                out.push_str("),");
            }
            _ => {
                let _ = write!(out, "key{kind}(");
                hex_bytes(out, &payload);
                if let Some(m) = &m {
                    if m.iter().any(|&x| x != 0xff) {
                        out.push('/');
                        hex_bytes(out, m);
                    }
                }
                out.push_str("),");
            }
        }
    }
    chomp(out, ',');
}

/// OVS's name for a key attribute type.
pub(crate) fn key_name(kind: u16) -> String {
    let s = match kind {
        0 => "unspec",
        attr::ENCAP => "encap",
        attr::PRIORITY => "skb_priority",
        attr::SKB_MARK => "skb_mark",
        attr::CT_STATE => "ct_state",
        attr::CT_ZONE => "ct_zone",
        attr::CT_MARK => "ct_mark",
        attr::CT_LABELS => "ct_label",
        26 => "ct_tuple4",
        27 => "ct_tuple6",
        attr::TUNNEL => "tunnel",
        attr::IN_PORT => "in_port",
        attr::ETHERNET => "eth",
        attr::VLAN => "vlan",
        attr::ETHERTYPE => "eth_type",
        attr::IPV4 => "ipv4",
        attr::IPV6 => "ipv6",
        attr::TCP => "tcp",
        attr::TCP_FLAGS => "tcp_flags",
        attr::UDP => "udp",
        attr::SCTP => "sctp",
        attr::ICMP => "icmp",
        attr::ICMPV6 => "icmpv6",
        attr::ARP => "arp",
        attr::ND => "nd",
        attr::MPLS => "mpls",
        attr::DP_HASH => "dp_hash",
        attr::RECIRC_ID => "recirc_id",
        28 => "nsh",
        // OVS 3.1 numbers its userspace-only types 29 and 30; 31 is the
        // kernel's internal tunnel info.
        29 => "packet_type",
        30 => "nd_ext",
        31 => "<error: kernel-only tunnel_info>",
        k => return format!("key{k}"),
    };
    s.to_owned()
}

fn hex_bytes(out: &mut String, b: &[u8]) {
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(out, "{x:02x}");
    }
}

/// `ds_put_hex`: a big-endian byte string as one hex number.
fn put_hex(out: &mut String, b: &[u8]) {
    let mut printed = false;
    for &x in b {
        if x != 0 || printed {
            if printed {
                let _ = write!(out, "{x:02x}");
            } else {
                let _ = write!(out, "0x{x:x}");
            }
            printed = true;
        }
    }
    if !printed {
        out.push('0');
    }
}

/// A conntrack label as OVS sees it: a native-order 128-bit number.
fn label_be(b: &[u8; 16]) -> [u8; 16] {
    u128::from_ne_bytes(*b).to_be_bytes()
}

fn format_u128(out: &mut String, k: &[u8; 16], m: Option<&[u8; 16]>, verbose: bool) {
    if verbose || m.is_some_and(|m| m.iter().any(|&x| x != 0)) {
        put_hex(out, &label_be(k));
        if let Some(m) = m {
            if m.iter().any(|&x| x != 0xff) {
                out.push('/');
                put_hex(out, &label_be(m));
            }
        }
    }
}

fn format_vlan_tci(out: &mut String, tci: u16, mask: u16, verbose: bool) {
    let vid = |t: u16| t & 0xfff;
    let pcp = |t: u16| (t >> 13) & 7;
    if verbose || vid(tci) != 0 || vid(mask) != 0 {
        let _ = write!(out, "vid={}", vid(tci));
        if vid(mask) != 0xfff {
            let _ = write!(out, "/0x{:x}", vid(mask));
        }
        out.push(',');
    }
    if verbose || pcp(tci) != 0 || pcp(mask) != 0 {
        let _ = write!(out, "pcp={}", pcp(tci));
        if pcp(mask) != 7 {
            let _ = write!(out, "/0x{:x}", pcp(mask));
        }
        out.push(',');
    }
    if tci & 0x1000 == 0 {
        out.push_str("cfi=0,");
    }
    chomp(out, ',');
}

fn mpls_parts(l: u32) -> (u32, u32, u32, u32) {
    (l >> 12, (l >> 9) & 7, l & 0xff, (l >> 8) & 1)
}

fn format_mpls_lse(out: &mut String, l: u32) {
    let (label, tc, ttl, bos) = mpls_parts(l);
    let _ = write!(out, "label={label},tc={tc},ttl={ttl},bos={bos}");
}

fn format_tunnel(out: &mut String, key: &[TunnelKeyAttr], mask: Option<&[TunnelKeyAttr]>, v: bool) {
    let mut fl = 0u32;
    let mut mfl = 0u32;
    for a in key {
        let ma: Option<TunnelKeyAttr> = mask.map(|m| {
            m.iter()
                .find(|x| x.kind() == a.kind())
                .cloned()
                .unwrap_or_else(|| tun_wildcard_of(a))
        });
        macro_rules! tm {
            ($variant:ident) => {
                match &ma {
                    Some(TunnelKeyAttr::$variant(m)) => Some(*m),
                    _ => None,
                }
            };
        }
        match a {
            TunnelKeyAttr::Id(k) => {
                f_be64(out, v, "tun_id", k.get(), tm!(Id).map(|m| m.get()));
                fl |= tun_flag::KEY;
                if ma.is_some() {
                    mfl |= tun_flag::KEY;
                }
            }
            TunnelKeyAttr::Ipv4Src(k) => f_ipv4(out, v, "src", *k, tm!(Ipv4Src)),
            TunnelKeyAttr::Ipv4Dst(k) => f_ipv4(out, v, "dst", *k, tm!(Ipv4Dst)),
            TunnelKeyAttr::Ipv6Src(k) => f_in6(out, v, "ipv6_src", *k, tm!(Ipv6Src)),
            TunnelKeyAttr::Ipv6Dst(k) => f_in6(out, v, "ipv6_dst", *k, tm!(Ipv6Dst)),
            TunnelKeyAttr::Tos(k) => f_u8x(out, v, "tos", *k, tm!(Tos)),
            TunnelKeyAttr::Ttl(k) => f_u8u(out, v, "ttl", *k, tm!(Ttl)),
            TunnelKeyAttr::DontFragment => fl |= tun_flag::DF,
            TunnelKeyAttr::Csum => fl |= tun_flag::CSUM,
            TunnelKeyAttr::Oam => fl |= tun_flag::OAM,
            TunnelKeyAttr::TpSrc(k) => f_be16(out, v, "tp_src", *k, tm!(TpSrc)),
            TunnelKeyAttr::TpDst(k) => f_be16(out, v, "tp_dst", *k, tm!(TpDst)),
            TunnelKeyAttr::Other { kind, data } if *kind == VXLAN_OPTS => {
                let m = match &ma {
                    Some(TunnelKeyAttr::Other { data, .. }) => Some(data.as_slice()),
                    _ => None,
                };
                out.push_str("vxlan(");
                format_vxlan_opts(out, data, m, v);
                out.push_str("),");
            }
            other => {
                // Options this crate keeps raw (Geneve, ERSPAN...).
                let _ = write!(out, "key{}(", other.kind());
                let mut kb = Vec::new();
                let mut mb = Vec::new();
                raw_tun(other, &mut kb);
                hex_bytes(out, &kb);
                if let Some(m) = &ma {
                    raw_tun(m, &mut mb);
                    if mb.iter().any(|&x| x != 0xff) {
                        out.push('/');
                        hex_bytes(out, &mb);
                    }
                }
                out.push_str("),");
            }
        }
    }
    if let Some(m) = mask {
        for a in m {
            match a {
                TunnelKeyAttr::DontFragment => mfl |= tun_flag::DF,
                TunnelKeyAttr::Csum => mfl |= tun_flag::CSUM,
                TunnelKeyAttr::Oam => mfl |= tun_flag::OAM,
                _ => {}
            }
        }
    }
    // format_tun_flags
    let empty = mask.is_some() && mfl == 0;
    if v || !empty {
        out.push_str("flags(");
        if mask.is_some() {
            flags_masked(out, tun_flag_name, fl, mfl & tun_flag::ALL, tun_flag::ALL);
        } else {
            flags(out, tun_flag_name, fl, '|');
        }
        out.push_str("),");
    }
    chomp(out, ',');
}

fn raw_tun(a: &TunnelKeyAttr, out: &mut Vec<u8>) {
    match a {
        TunnelKeyAttr::GeneveOpts(d) | TunnelKeyAttr::Other { data: d, .. } => {
            out.extend_from_slice(d)
        }
        _ => {}
    }
}

fn port(out: &mut String, p: u32, names: Option<&PortNames>) {
    match names.and_then(|n| n.get(&p)) {
        Some(name) => out.push_str(name),
        None => {
            let _ = write!(out, "{p}");
        }
    }
}

/// `format_odp_key_attr__`: one attribute with its (possibly absent) mask.
fn key_attr(
    out: &mut String,
    a: &KeyAttr,
    ma: Option<&KeyAttr>,
    names: Option<&PortNames>,
    v: bool,
) {
    let is_exact = ma.is_none_or(|m| mask_is_constant(m, 0xff));
    let mask_empty = ma.is_none_or(|m| m.payload_bytes().iter().all(|&x| x == 0));
    out.push_str(&key_name(a.kind()));
    out.push('(');
    match a {
        KeyAttr::Encap(k) => {
            let m = match ma {
                Some(KeyAttr::Encap(m)) if !m.is_empty() => Some(m.as_slice()),
                _ => None,
            };
            if !k.is_empty() {
                flow_attrs(out, k, m, names, v);
            }
        }
        KeyAttr::Priority(k) | KeyAttr::SkbMark(k) | KeyAttr::DpHash(k) | KeyAttr::RecircId(k) => {
            out.push_str(&hx((*k).into()));
            if !is_exact {
                let m = u32_of(ma);
                let _ = write!(out, "/{}", hx(m.into()));
            }
        }
        KeyAttr::CtMark(k) => {
            if v || !mask_empty {
                out.push_str(&hx((*k).into()));
                if !is_exact {
                    let _ = write!(out, "/{}", hx(u32_of(ma).into()));
                }
            }
        }
        KeyAttr::CtState(k) => {
            let m = if mask_empty { 0 } else { u32_of(ma) };
            if v {
                out.push_str(&hx((*k).into()));
                if !is_exact {
                    let _ = write!(out, "/{}", hx(m.into()));
                }
            } else if !is_exact {
                flags_masked(out, ct_state_name, *k, m, u32::MAX);
            } else {
                flags(out, ct_state_name, *k, '|');
            }
        }
        KeyAttr::CtZone(k) => {
            if v || !mask_empty {
                out.push_str(&hx((*k).into()));
                if !is_exact {
                    let m = match ma {
                        Some(KeyAttr::CtZone(m)) => *m,
                        _ => 0,
                    };
                    let _ = write!(out, "/{}", hx(m.into()));
                }
            }
        }
        KeyAttr::CtLabels(k) => {
            let m = match ma {
                Some(KeyAttr::CtLabels(m)) => Some(m),
                _ => None,
            };
            format_u128(out, k, m, v);
        }
        KeyAttr::Tunnel(k) => {
            let m = match ma {
                Some(KeyAttr::Tunnel(m)) => Some(m.as_slice()),
                _ => None,
            };
            format_tunnel(out, k, m, v);
        }
        KeyAttr::InPort(k) => {
            if is_exact {
                port(out, *k, names);
            } else {
                let _ = write!(out, "{k}/{}", hx(u32_of(ma).into()));
            }
        }
        KeyAttr::Ethernet(k) => {
            let m: Option<EthernetKey> = mask_of!(ma, Ethernet);
            f_eth(out, v, "src", k.src, m.map(|m| m.src));
            f_eth(out, v, "dst", k.dst, m.map(|m| m.dst));
            chomp(out, ',');
        }
        KeyAttr::Vlan(k) => {
            let m = mask_of!(ma, Vlan).map_or(u16::MAX, |m: Be16| m.get());
            format_vlan_tci(out, k.get(), m, v);
        }
        KeyAttr::Mpls(k) => {
            if k.is_empty() {
                out.push_str("(bad key length 0)");
                return;
            }
            let m = match ma {
                Some(KeyAttr::Mpls(m)) if !is_exact => Some(m),
                _ => None,
            };
            match m {
                Some(m) if m.len() != k.len() => {
                    let _ = write!(
                        out,
                        "(key length {} != mask length {})",
                        k.len() * 4,
                        m.len() * 4
                    );
                    return;
                }
                _ => {}
            }
            for (i, l) in k.iter().enumerate() {
                match m.and_then(|m| m.get(i)) {
                    None => format_mpls_lse(out, l.get()),
                    Some(ml) => {
                        let (a, b, c, d) = mpls_parts(l.get());
                        let (ma_, mb, mc, md) = mpls_parts(ml.get());
                        let _ = write!(
                            out,
                            "label={a}/0x{ma_:x},tc={b}/{mb:x},ttl={c}/0x{mc:x},bos={d}/{md:x}"
                        );
                    }
                }
                out.push(',');
            }
            chomp(out, ',');
        }
        KeyAttr::EtherType(k) => {
            let _ = write!(out, "0x{:04x}", k.get());
            if !is_exact {
                let m = mask_of!(ma, EtherType).map_or(0, |m: Be16| m.get());
                let _ = write!(out, "/0x{m:04x}");
            }
        }
        KeyAttr::Ipv4(k) => {
            let m: Option<Ipv4Key> = mask_of!(ma, Ipv4);
            f_ipv4(out, v, "src", k.src, m.map(|m| m.src));
            f_ipv4(out, v, "dst", k.dst, m.map(|m| m.dst));
            f_u8u(out, v, "proto", k.proto, m.map(|m| m.proto));
            f_u8x(out, v, "tos", k.tos, m.map(|m| m.tos));
            f_u8u(out, v, "ttl", k.ttl, m.map(|m| m.ttl));
            f_frag(out, k.frag, m.map(|m| m.frag));
            chomp(out, ',');
        }
        KeyAttr::Ipv6(k) => {
            let m: Option<Ipv6Key> = mask_of!(ma, Ipv6);
            f_in6(out, v, "src", k.src, m.map(|m| m.src));
            f_in6(out, v, "dst", k.dst, m.map(|m| m.dst));
            f_label(out, v, k.label, m.map(|m| m.label));
            f_u8u(out, v, "proto", k.proto, m.map(|m| m.proto));
            f_u8x(out, v, "tclass", k.tclass, m.map(|m| m.tclass));
            f_u8u(out, v, "hlimit", k.hlimit, m.map(|m| m.hlimit));
            f_frag(out, k.frag, m.map(|m| m.frag));
            chomp(out, ',');
        }
        KeyAttr::Tcp(k) | KeyAttr::Udp(k) | KeyAttr::Sctp(k) => {
            let m: Option<PortsKey> = match ma {
                Some(KeyAttr::Tcp(m) | KeyAttr::Udp(m) | KeyAttr::Sctp(m)) => Some(*m),
                _ => None,
            };
            f_be16(out, v, "src", k.src, m.map(|m| m.src));
            f_be16(out, v, "dst", k.dst, m.map(|m| m.dst));
            chomp(out, ',');
        }
        KeyAttr::TcpFlags(k) => {
            if !is_exact {
                let m = mask_of!(ma, TcpFlags).map_or(0, |m: Be16| m.get());
                flags_masked(
                    out,
                    tcp_flag_name,
                    k.get().into(),
                    u32::from(m & 0xfff),
                    0xfff,
                );
            } else {
                flags(out, tcp_flag_name, k.get().into(), '|');
            }
        }
        KeyAttr::Icmp(k) | KeyAttr::Icmpv6(k) => {
            let m: Option<IcmpKey> = match ma {
                Some(KeyAttr::Icmp(m) | KeyAttr::Icmpv6(m)) => Some(*m),
                _ => None,
            };
            f_u8u(out, v, "type", k.icmp_type, m.map(|m| m.icmp_type));
            f_u8u(out, v, "code", k.code, m.map(|m| m.code));
            chomp(out, ',');
        }
        KeyAttr::Arp(k) => {
            let m: Option<ArpKey> = mask_of!(ma, Arp);
            f_ipv4(out, v, "sip", k.sip, m.map(|m| m.sip));
            f_ipv4(out, v, "tip", k.tip, m.map(|m| m.tip));
            f_be16(out, v, "op", k.op, m.map(|m| m.op));
            f_eth(out, v, "sha", k.sha, m.map(|m| m.sha));
            f_eth(out, v, "tha", k.tha, m.map(|m| m.tha));
            chomp(out, ',');
        }
        KeyAttr::Nd(k) => {
            let m: Option<NdKey> = mask_of!(ma, Nd);
            f_in6(out, v, "target", k.target, m.map(|m| m.target));
            f_eth(out, v, "sll", k.sll, m.map(|m| m.sll));
            f_eth(out, v, "tll", k.tll, m.map(|m| m.tll));
            chomp(out, ',');
        }
        other => {
            hex_bytes(out, &other.payload_bytes());
            if !is_exact {
                out.push('/');
                if let Some(m) = ma {
                    hex_bytes(out, &m.payload_bytes());
                }
            }
        }
    }
    out.push(')');
}

fn u32_of(ma: Option<&KeyAttr>) -> u32 {
    match ma {
        Some(
            KeyAttr::Priority(m)
            | KeyAttr::SkbMark(m)
            | KeyAttr::DpHash(m)
            | KeyAttr::RecircId(m)
            | KeyAttr::CtMark(m)
            | KeyAttr::CtState(m)
            | KeyAttr::InPort(m),
        ) => *m,
        _ => 0,
    }
}

/// `odp_flow_format` over a list of attributes.
fn flow_attrs(
    out: &mut String,
    key: &[KeyAttr],
    mask: Option<&[KeyAttr]>,
    names: Option<&PortNames>,
    v: bool,
) {
    let mask = mask.filter(|m| !m.is_empty());
    let mut first = true;
    for a in key {
        let kind = a.kind();
        let found = mask.and_then(|m| m.iter().find(|x| x.kind() == kind));
        let nested = kind == attr::ENCAP || kind == attr::TUNNEL || kind == 28;
        let is_wildcard = match mask {
            Some(_) => found.is_none_or(|m| mask_is_constant(m, 0)),
            None => false,
        };
        if v || !is_wildcard || nested {
            let generated;
            let ma = if is_wildcard && found.is_none() {
                generated = wildcard_of(a);
                Some(&generated)
            } else {
                found
            };
            if !first {
                out.push(',');
            }
            key_attr(out, a, ma, names, v);
            first = false;
        } else if kind == attr::ETHERNET {
            // OVS prints a wildcarded Ethernet attribute as `eth()` since its
            // presence says the packet is Ethernet. (It does not clear its
            // first-field marker here; neither do we.)
            if !first {
                out.push(',');
            }
            out.push_str("eth()");
        }
    }
}

/// Prints a flow key with its mask as `ovs-dpctl dump-flows` does (`verbose`
/// as with `-m`: wildcarded fields shown too). `names` maps port numbers to
/// names for `in_port` and outputs.
pub fn format_flow_key(
    key: &FlowKey,
    mask: Option<&FlowKey>,
    names: Option<&PortNames>,
    verbose: bool,
) -> String {
    let mut out = String::new();
    flow_attrs(
        &mut out,
        &key.0,
        mask.map(|m| m.0.as_slice()),
        names,
        verbose,
    );
    out
}

/// Prints one key attribute as a `set(...)` action shows it.
fn set_attr(out: &mut String, a: &KeyAttr) {
    key_attr(out, a, None, None, true);
}

fn nat(out: &mut String, n: &[NatAttr]) {
    let has = |f: fn(&NatAttr) -> bool| n.iter().any(f);
    let src = has(|a| matches!(a, NatAttr::Src));
    let dst = has(|a| matches!(a, NatAttr::Dst));
    let ip_min = n.iter().find_map(|a| match a {
        NatAttr::IpMin(ip) => Some(*ip),
        _ => None,
    });
    let ip_max = n.iter().find_map(|a| match a {
        NatAttr::IpMax(ip) => Some(*ip),
        _ => None,
    });
    let p_min = n.iter().find_map(|a| match a {
        NatAttr::ProtoMin(p) => Some(*p),
        _ => None,
    });
    let p_max = n.iter().find_map(|a| match a {
        NatAttr::ProtoMax(p) => Some(*p),
        _ => None,
    });
    let persistent = has(|a| matches!(a, NatAttr::Persistent));
    let hash = has(|a| matches!(a, NatAttr::ProtoHash));
    let random = has(|a| matches!(a, NatAttr::ProtoRandom));
    let any_opt = ip_min.is_some()
        || ip_max.is_some()
        || p_min.is_some()
        || p_max.is_some()
        || persistent
        || hash
        || random;
    if !(src || dst) && any_opt {
        out.push_str("nat(error: options allowed only with \"src\" or \"dst\")");
        return;
    }
    if src && dst {
        out.push_str("nat(error: Only one of \"src\" or \"dst\" may be present.)");
        return;
    }
    if ip_min.is_none() && p_min.is_some() {
        out.push_str("nat(error: proto but no IP.)");
        return;
    }
    if (ip_min.is_none() && ip_max.is_some()) || (p_min.is_none() && p_max.is_some()) {
        out.push_str("nat(error: range max without min.)");
        return;
    }
    let mismatch = matches!(
        (ip_min, ip_max),
        (Some(IpAddr::V4(_)), Some(IpAddr::V6(_))) | (Some(IpAddr::V6(_)), Some(IpAddr::V4(_)))
    );
    if mismatch {
        out.push_str("nat(error: IP address sizes do not match)");
        return;
    }
    let pmin = p_min.unwrap_or(0);
    let pmax = p_max.unwrap_or(0);
    let range_bad = match (ip_min, ip_max) {
        (Some(IpAddr::V4(a)), Some(IpAddr::V4(b))) => !b.is_unspecified() && a > b,
        (Some(IpAddr::V6(a)), Some(IpAddr::V6(b))) => !b.is_unspecified() && a > b,
        _ => false,
    } || (pmax != 0 && pmin > pmax);
    if range_bad {
        out.push_str("nat(range error)");
        return;
    }
    out.push_str("nat");
    if src || dst {
        out.push('(');
        out.push_str(if src { "src" } else { "dst" });
        if let Some(min) = ip_min {
            out.push('=');
            match min {
                IpAddr::V4(a) => {
                    let _ = write!(out, "{a}");
                    if let Some(IpAddr::V4(b)) = ip_max {
                        if !b.is_unspecified() && b != a {
                            let _ = write!(out, "-{b}");
                        }
                    }
                }
                IpAddr::V6(a) => {
                    let br = |x: &Ipv6Addr| {
                        if pmin != 0 {
                            format!("[{}]", in6(x))
                        } else {
                            in6(x)
                        }
                    };
                    out.push_str(&br(&a));
                    if let Some(IpAddr::V6(b)) = ip_max {
                        if !b.is_unspecified() && b != a {
                            out.push('-');
                            out.push_str(&br(&b));
                        }
                    }
                }
            }
            if pmin != 0 {
                let _ = write!(out, ":{pmin}");
                if pmax != 0 && pmax != pmin {
                    let _ = write!(out, "-{pmax}");
                }
            }
        }
        out.push(',');
        if persistent {
            out.push_str("persistent,");
        }
        if hash {
            out.push_str("hash,");
        }
        if random {
            out.push_str("random,");
        }
        chomp(out, ',');
        out.push(')');
    }
}

fn ct(out: &mut String, c: &[CtAttr]) {
    let commit = c.iter().any(|a| matches!(a, CtAttr::Commit));
    let force = c.iter().any(|a| matches!(a, CtAttr::ForceCommit));
    let zone = c
        .iter()
        .find_map(|a| match a {
            CtAttr::Zone(z) => Some(*z),
            _ => None,
        })
        .unwrap_or(0);
    let mark = c.iter().find_map(|a| match a {
        CtAttr::Mark { value, mask } => Some((*value, *mask)),
        _ => None,
    });
    let label = c.iter().find_map(|a| match a {
        CtAttr::Labels { value, mask } => Some((value, mask)),
        _ => None,
    });
    let helper = c.iter().find_map(|a| match a {
        CtAttr::Helper(s) => Some(s),
        _ => None,
    });
    let timeout = c.iter().find_map(|a| match a {
        CtAttr::Timeout(s) => Some(s),
        _ => None,
    });
    let nat_attrs = c.iter().find_map(|a| match a {
        CtAttr::Nat(n) => Some(n),
        _ => None,
    });
    out.push_str("ct");
    if commit
        || force
        || zone != 0
        || mark.is_some()
        || label.is_some()
        || helper.is_some()
        || timeout.is_some()
        || nat_attrs.is_some()
    {
        out.push('(');
        if commit {
            out.push_str("commit,");
        }
        if force {
            out.push_str("force_commit,");
        }
        if zone != 0 {
            let _ = write!(out, "zone={zone},");
        }
        if let Some((v, m)) = mark {
            let _ = write!(out, "mark={}/{},", hx(v.into()), hx(m.into()));
        }
        if let Some((v, m)) = label {
            out.push_str("label=");
            format_u128(out, v, Some(m), true);
            out.push(',');
        }
        if let Some(h) = helper {
            let _ = write!(out, "helper={h},");
        }
        if let Some(t) = timeout {
            let _ = write!(out, "timeout={t},");
        }
        if let Some(n) = nat_attrs {
            nat(out, n);
        }
        chomp(out, ',');
        out.push(')');
    }
}

fn userspace(out: &mut String, u: &[UserspaceAttr], names: Option<&PortNames>) {
    let pid = u.iter().find_map(|a| match a {
        UserspaceAttr::Pid(p) => Some(*p),
        _ => None,
    });
    let Some(pid) = pid else {
        out.push_str("userspace(error)");
        return;
    };
    let _ = write!(out, "userspace(pid={pid}");
    if let Some(d) = u.iter().find_map(|a| match a {
        UserspaceAttr::Userdata(d) => Some(d),
        _ => None,
    }) {
        out.push_str(",userdata(");
        for b in d {
            let _ = write!(out, "{b:02x}");
        }
        out.push(')');
    }
    if u.iter().any(|a| matches!(a, UserspaceAttr::Actions)) {
        out.push_str(",actions");
    }
    if let Some(p) = u.iter().find_map(|a| match a {
        UserspaceAttr::EgressTunPort(p) => Some(*p),
        _ => None,
    }) {
        out.push_str(",tunnel_out_port=");
        port(out, p, names);
    }
    out.push(')');
}

fn action(out: &mut String, a: &Action, names: Option<&PortNames>) {
    match a {
        Action::Meter(m) => {
            let _ = write!(out, "meter({m})");
        }
        Action::Output(p) => port(out, *p, names),
        Action::Trunc(n) => {
            let _ = write!(out, "trunc({n})");
        }
        Action::Userspace(u) => userspace(out, u, names),
        Action::Recirc(r) => {
            let _ = write!(out, "recirc({})", hx((*r).into()));
        }
        Action::Hash { alg, basis } => match alg {
            0 => {
                let _ = write!(out, "hash(l4({basis}))");
            }
            1 => {
                let _ = write!(out, "hash(sym_l4({basis}))");
            }
            _ => {
                let _ = write!(out, "hash(Unknown hash algorithm({alg}))");
            }
        },
        Action::SetMasked { value, mask } => {
            out.push_str("set(");
            if value.kind() == attr::TUNNEL {
                key_attr(out, value, None, None, false);
            } else {
                key_attr(out, value, Some(mask), None, false);
            }
            out.push(')');
        }
        Action::Set(k) => {
            out.push_str("set(");
            set_attr(out, k);
            out.push(')');
        }
        Action::PushEth(e) => {
            let _ = write!(out, "push_eth(src={},dst={})", e.src, e.dst);
        }
        Action::PopEth => out.push_str("pop_eth"),
        Action::PushVlan { tpid, tci } => {
            out.push_str("push_vlan(");
            if tpid.get() != 0x8100 {
                let _ = write!(out, "tpid=0x{:04x},", tpid.get());
            }
            format_vlan_tci(out, tci.get(), u16::MAX, false);
            out.push(')');
        }
        Action::PopVlan => out.push_str("pop_vlan"),
        Action::PushMpls { lse, ethertype } => {
            out.push_str("push_mpls(");
            format_mpls_lse(out, lse.get());
            let _ = write!(out, ",eth_type=0x{:x})", ethertype.get());
        }
        Action::PopMpls(t) => {
            let _ = write!(out, "pop_mpls(eth_type=0x{:x})", t.get());
        }
        Action::Sample(s) => {
            out.push_str("sample");
            let prob = s.iter().find_map(|a| match a {
                SampleAttr::Probability(p) => Some(*p),
                _ => None,
            });
            let acts = s.iter().find_map(|a| match a {
                SampleAttr::Actions(x) => Some(x),
                _ => None,
            });
            match (prob, acts) {
                (Some(p), Some(acts)) => {
                    let pct = 100.0 * f64::from(p) / f64::from(u32::MAX);
                    let _ = write!(out, "(sample={pct:.1}%,actions(");
                    actions_into(out, acts, names);
                    out.push_str("))");
                }
                _ => out.push_str("(error)"),
            }
        }
        Action::Ct(c) => ct(out, c),
        Action::CtClear => out.push_str("ct_clear"),
        Action::Clone(c) => {
            out.push_str("clone(");
            actions_into(out, c, names);
            out.push(')');
        }
        Action::Drop(_) => out.push_str("drop"),
        other => {
            let _ = write!(out, "action{}", other.kind());
            let mut buf = Vec::new();
            let mut w = AttrWriter::new(&mut buf);
            other.emit_payload(&mut w);
            let _ = w.finish();
            for (i, b) in buf.iter().enumerate() {
                out.push(if i == 0 { '(' } else { ' ' });
                let _ = write!(out, "{b:02x}");
            }
            if !buf.is_empty() {
                out.push(')');
            }
        }
    }
}

fn actions_into(out: &mut String, acts: &[Action], names: Option<&PortNames>) {
    if acts.is_empty() {
        out.push_str("drop");
        return;
    }
    for (i, a) in acts.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        action(out, a, names);
    }
}

/// Prints an action list as `ovs-dpctl` does (`drop` when empty).
pub fn format_actions(acts: &[Action], names: Option<&PortNames>) -> String {
    let mut out = String::new();
    actions_into(&mut out, acts, names);
    out
}

/// Prints a UFID as OVS does: `ufid:` and a UUID built from the id's four
/// native-order 32-bit words. Ids shorter than 16 bytes are zero-padded.
pub fn format_ufid(ufid: &[u8]) -> String {
    let mut b = [0u8; 16];
    for (d, s) in b.iter_mut().zip(ufid) {
        *d = *s;
    }
    let w = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let (a, c, d, e) = (w(0), w(4), w(8), w(12));
    format!(
        "ufid:{a:08x}-{:04x}-{:04x}-{:04x}-{:04x}{e:08x}",
        c >> 16,
        c & 0xffff,
        d >> 16,
        d & 0xffff
    )
}

/// Prints the `packets:…, bytes:…, used:…[, flags:…]` part of a dumped
/// flow; `now_ms` is the current `CLOCK_MONOTONIC` time in milliseconds.
pub fn format_stats(
    n_packets: u64,
    n_bytes: u64,
    used_ms: Option<u64>,
    tcp_flags: Option<u8>,
    now_ms: u64,
) -> String {
    let mut out = format!("packets:{n_packets}, bytes:{n_bytes}, used:");
    match used_ms {
        Some(u) if u != 0 => {
            let secs = (now_ms as f64 - u as f64) / 1000.0;
            let _ = write!(out, "{secs:.3}s");
        }
        _ => out.push_str("never"),
    }
    if let Some(f) = tcp_flags.filter(|&f| f != 0) {
        out.push_str(", flags:");
        for (bit, c) in [
            (0x02, "S"),
            (0x01, "F"),
            (0x08, "P"),
            (0x04, "R"),
            (0x20, "U"),
            (0x10, "."),
            (0x40, "E"),
            (0x80, "C"),
        ] {
            if f & bit != 0 {
                out.push_str(c);
            }
        }
    }
    out
}
