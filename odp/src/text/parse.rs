//! Parsing `ovs-dpctl`'s flow and action syntax.
//!
//! The grammar is OVS's (`lib/odp-util.c`, 3.1): a key is a list of
//! `name(field=value[/mask],…)` attributes; fields left out are wildcarded
//! (their mask is zero) and fields given without `/mask` are exact. Numbers
//! are read like C's `%i` (decimal, `0x` hex, leading-zero octal).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::error::ParseError;
use super::format::{
    VXLAN_EXT_GBP, VXLAN_OPTS, ct_state_name, tcp_flag_name, tun_flag, tun_flag_name,
};
use crate::wire::action::{Action, CtAttr, NatAttr, SampleAttr, UserspaceAttr};
use crate::wire::flow::Ufid;
use crate::wire::key::{
    ArpKey, EthernetKey, FlowKey, IcmpKey, Ipv4Key, Ipv6Key, KeyAttr, NdKey, PortsKey,
    TunnelKeyAttr,
};
use crate::wire::nla::AttrWriter;
use crate::wire::types::{Be16, Be32, Be64, MacAddr};

/// How deep `encap(…)`, `clone(…)` and `sample(…)` may nest.
pub const MAX_NESTING: usize = 16;

/// A port-name lookup for `in_port(name)` and output actions.
pub type PortLookup<'a> = &'a dyn Fn(&str) -> Option<u32>;

/// A parsed flow: optional UFID, the key, and a mask with one attribute for
/// every key attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedFlow {
    /// The `ufid:` prefix, if the text had one.
    pub ufid: Option<Ufid>,
    /// The key.
    pub key: FlowKey,
    /// The mask (1 bits match).
    pub mask: FlowKey,
}

const DELIMS: &[u8] = b", \t\r\n";

struct Cur<'a> {
    s: &'a [u8],
    pos: usize,
    full: &'a str,
    ports: Option<PortLookup<'a>>,
    depth: usize,
}

impl<'a> Cur<'a> {
    fn new(full: &'a str, ports: Option<PortLookup<'a>>) -> Self {
        Cur {
            s: full.as_bytes(),
            pos: 0,
            full,
            ports,
            depth: 0,
        }
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }
    fn rest(&self) -> &'a [u8] {
        self.s.get(self.pos..).unwrap_or(&[])
    }
    fn err(&self, what: &'static str) -> ParseError {
        let at = self.full.get(self.pos..).unwrap_or("").chars().take(40);
        ParseError::Syntax {
            what,
            at: at.collect(),
            offset: self.pos,
        }
    }
    fn eat(&mut self, lit: &str) -> bool {
        if self.rest().starts_with(lit.as_bytes()) {
            self.pos += lit.len();
            true
        } else {
            false
        }
    }
    fn expect(&mut self, lit: &'static str) -> Result<(), ParseError> {
        if self.eat(lit) {
            Ok(())
        } else {
            Err(self.err(lit))
        }
    }
    fn skip_delims(&mut self) {
        while self.peek().is_some_and(|c| DELIMS.contains(&c)) {
            self.pos += 1;
        }
    }
    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }
    /// `[a-z0-9_]+` followed by `=` or `(` (consumed).
    fn ident(&mut self) -> Option<&'a str> {
        let start = self.pos;
        let mut end = start;
        while self
            .s
            .get(end)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        {
            end += 1;
        }
        if end == start {
            return None;
        }
        match self.s.get(end) {
            Some(b'=') | Some(b'(') => {
                self.pos = end + 1;
                self.full.get(start..end)
            }
            _ => None,
        }
    }
    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        self.full.get(start..self.pos).unwrap_or("")
    }

    /// C `%i` into a u64 no larger than `max`.
    fn int(&mut self, max: u64) -> Result<u64, ParseError> {
        let r = self.rest();
        let (radix, skip) = if r.len() > 2 && (r.starts_with(b"0x") || r.starts_with(b"0X")) {
            (16, 2)
        } else if r.len() > 1 && r.starts_with(b"0") && r.get(1).is_some_and(u8::is_ascii_digit) {
            (8, 1)
        } else {
            (10, 0)
        };
        let digits: &[u8] = r.get(skip..).unwrap_or(&[]);
        let n = digits
            .iter()
            .take_while(|c| (**c as char).is_digit(radix))
            .count();
        if n == 0 {
            return Err(self.err("a number"));
        }
        let text = std::str::from_utf8(digits.get(..n).unwrap_or(&[])).unwrap_or("");
        let v = u64::from_str_radix(text, radix).map_err(|_| self.err("a number in range"))?;
        if v > max {
            return Err(self.err("a number in range"));
        }
        self.pos += skip + n;
        Ok(v)
    }
    fn u8(&mut self) -> Result<u8, ParseError> {
        self.int(u8::MAX.into()).map(|v| v as u8)
    }
    fn u16(&mut self) -> Result<u16, ParseError> {
        self.int(u16::MAX.into()).map(|v| v as u16)
    }
    fn u32(&mut self) -> Result<u32, ParseError> {
        self.int(u32::MAX.into()).map(|v| v as u32)
    }
    fn u64(&mut self) -> Result<u64, ParseError> {
        self.int(u64::MAX)
    }
    /// A value, then `/mask` or else `full`.
    fn masked<T>(
        &mut self,
        f: fn(&mut Self) -> Result<T, ParseError>,
        full: T,
    ) -> Result<(T, T), ParseError> {
        let v = f(self)?;
        if self.eat("/") {
            Ok((v, f(self)?))
        } else {
            Ok((v, full))
        }
    }
    fn ipv4(&mut self) -> Result<Ipv4Addr, ParseError> {
        let mut o = [0u8; 4];
        for (i, b) in o.iter_mut().enumerate() {
            if i > 0 {
                self.expect(".")?;
            }
            let t = self.take_while(|c| c.is_ascii_digit());
            *b = t.parse().map_err(|_| self.err("an IPv4 address"))?;
        }
        Ok(Ipv4Addr::from(o))
    }
    fn ipv6(&mut self) -> Result<Ipv6Addr, ParseError> {
        let t = self.take_while(|c| c.is_ascii_hexdigit() || c == b':' || c == b'.');
        t.parse().map_err(|_| self.err("an IPv6 address"))
    }
    fn mac(&mut self) -> Result<MacAddr, ParseError> {
        let mut o = [0u8; 6];
        for (i, b) in o.iter_mut().enumerate() {
            if i > 0 {
                self.expect(":")?;
            }
            let t = self.take_while(|c| c.is_ascii_hexdigit());
            if t.is_empty() || t.len() > 2 {
                return Err(self.err("a MAC address"));
            }
            *b = u8::from_str_radix(t, 16).map_err(|_| self.err("a MAC address"))?;
        }
        Ok(MacAddr(o))
    }
    /// `field=…` pairs up to `)`, each handled by `f`; a trailing comma is
    /// allowed, as OVS allows it.
    fn fields(
        &mut self,
        mut f: impl FnMut(&mut Self, &'a str) -> Result<(), ParseError>,
    ) -> Result<(), ParseError> {
        loop {
            if self.peek() == Some(b')') {
                break;
            }
            let save = self.pos;
            let Some(name) = self.ident() else {
                self.pos = save;
                return Err(self.err("a field name"));
            };
            f(self, name)?;
            if !self.eat(",") {
                break;
            }
        }
        self.expect(")")
    }
    /// Flag names joined by `|`, or `+name-name` masked form, or numbers,
    /// up to (not including) `)`. Returns (value, mask).
    fn flag_set(
        &mut self,
        name: fn(u32) -> Option<&'static str>,
        allowed: u32,
    ) -> Result<(u32, u32), ParseError> {
        // Numeric value/mask.
        let save = self.pos;
        if let Ok(v) = self.int(u32::MAX.into()) {
            if self.eat("/") {
                let m = self.u32()?;
                if (v as u32 | m) & !allowed != 0 {
                    return Err(self.err("known flags"));
                }
                return Ok((v as u32, m));
            }
        }
        self.pos = save;
        let lookup = |s: &[u8]| -> Option<u32> {
            (0..32)
                .map(|i| 1u32 << i)
                .find(|&bit| name(bit).is_some_and(|n| s.starts_with(n.as_bytes())))
        };
        if matches!(self.peek(), Some(b'+') | Some(b'-')) {
            let (mut v, mut m) = (0u32, 0u32);
            while let Some(c @ (b'+' | b'-')) = self.peek() {
                self.pos += 1;
                let bit = lookup(self.rest()).ok_or_else(|| self.err("a flag name"))?;
                if bit & !allowed != 0 || m & bit != 0 {
                    return Err(self.err("a flag given once"));
                }
                self.pos += name(bit).map_or(0, str::len);
                if c == b'+' {
                    v |= bit;
                }
                m |= bit;
            }
            return Ok((v, m));
        }
        let mut v = 0u32;
        while self.peek().is_some_and(|c| c != b')') {
            let save = self.pos;
            if let Ok(n) = self.int(u32::MAX.into()) {
                if n as u32 & !allowed != 0 || n > u32::MAX.into() {
                    self.pos = save;
                    return Err(self.err("known flags"));
                }
                v |= n as u32;
            } else {
                let bit = lookup(self.rest()).ok_or_else(|| self.err("a flag name"))?;
                if bit & !allowed != 0 {
                    return Err(self.err("an allowed flag"));
                }
                self.pos += name(bit).map_or(0, str::len);
                v |= bit;
            }
            if !self.eat("|") {
                break;
            }
        }
        Ok((v, allowed))
    }
}

fn ne_port<'a>(c: &mut Cur<'a>) -> Result<u32, ParseError> {
    if let Ok(v) = c.u32() {
        return Ok(v);
    }
    let name = c.take_while(|ch| !DELIMS.contains(&ch) && ch != b')' && ch != b'(');
    c.ports
        .and_then(|p| p(name))
        .ok_or_else(|| ParseError::UnknownPort(name.to_owned()))
}

type Pair = (KeyAttr, KeyAttr);

fn single_u32(c: &mut Cur<'_>, mk: fn(u32) -> KeyAttr) -> Result<Pair, ParseError> {
    let (v, m) = c.masked(Cur::u32, u32::MAX)?;
    c.expect(")")?;
    Ok((mk(v), mk(m)))
}

fn tunnel(c: &mut Cur<'_>) -> Result<Pair, ParseError> {
    let mut k = Vec::new();
    let mut m = Vec::new();
    c.fields(|c, name| {
        match name {
            "tun_id" => {
                let (v, mm) = c.masked(Cur::u64, u64::MAX)?;
                k.push(TunnelKeyAttr::Id(Be64(v)));
                m.push(TunnelKeyAttr::Id(Be64(mm)));
            }
            "src" | "dst" => {
                let (v, mm) = c.masked(Cur::ipv4, Ipv4Addr::BROADCAST)?;
                if name == "src" {
                    k.push(TunnelKeyAttr::Ipv4Src(v));
                    m.push(TunnelKeyAttr::Ipv4Src(mm));
                } else {
                    k.push(TunnelKeyAttr::Ipv4Dst(v));
                    m.push(TunnelKeyAttr::Ipv4Dst(mm));
                }
            }
            "ipv6_src" | "ipv6_dst" => {
                let (v, mm) = c.masked(Cur::ipv6, Ipv6Addr::from([0xff; 16]))?;
                if name == "ipv6_src" {
                    k.push(TunnelKeyAttr::Ipv6Src(v));
                    m.push(TunnelKeyAttr::Ipv6Src(mm));
                } else {
                    k.push(TunnelKeyAttr::Ipv6Dst(v));
                    m.push(TunnelKeyAttr::Ipv6Dst(mm));
                }
            }
            "tos" | "ttl" => {
                let (v, mm) = c.masked(Cur::u8, u8::MAX)?;
                if name == "tos" {
                    k.push(TunnelKeyAttr::Tos(v));
                    m.push(TunnelKeyAttr::Tos(mm));
                } else {
                    k.push(TunnelKeyAttr::Ttl(v));
                    m.push(TunnelKeyAttr::Ttl(mm));
                }
            }
            "tp_src" | "tp_dst" => {
                let (v, mm) = c.masked(Cur::u16, u16::MAX)?;
                if name == "tp_src" {
                    k.push(TunnelKeyAttr::TpSrc(Be16(v)));
                    m.push(TunnelKeyAttr::TpSrc(Be16(mm)));
                } else {
                    k.push(TunnelKeyAttr::TpDst(Be16(v)));
                    m.push(TunnelKeyAttr::TpDst(Be16(mm)));
                }
            }
            "vxlan" => {
                c.expect("gbp(")?;
                let (mut id, mut idm, mut fl, mut flm) = (0u16, 0u16, 0u8, 0u8);
                c.fields(|c, name| {
                    match name {
                        "id" => (id, idm) = c.masked(Cur::u16, u16::MAX)?,
                        "flags" => (fl, flm) = c.masked(Cur::u8, u8::MAX)?,
                        _ => return Err(ParseError::Unsupported(format!("gbp field {name}"))),
                    }
                    Ok(())
                })?;
                c.expect(")")?;
                let gbp = |v: u32| {
                    let mut data = Vec::new();
                    let mut w = AttrWriter::new(&mut data);
                    w.with(VXLAN_EXT_GBP, |w| w.raw(&v.to_ne_bytes()));
                    let _ = w.finish();
                    TunnelKeyAttr::Other {
                        kind: VXLAN_OPTS,
                        data,
                    }
                };
                // OVS leaves a zero value (or mask) out altogether.
                let kv = u32::from(fl) << 16 | u32::from(id);
                let mv = u32::from(flm) << 16 | u32::from(idm);
                if kv != 0 {
                    k.push(gbp(kv));
                }
                if mv != 0 {
                    m.push(gbp(mv));
                }
            }
            "flags" => {
                let (v, mm) = c.flag_set(tun_flag_name, tun_flag::ALL)?;
                c.expect(")")?;
                for (bit, attr) in [
                    (tun_flag::DF, TunnelKeyAttr::DontFragment),
                    (tun_flag::CSUM, TunnelKeyAttr::Csum),
                    (tun_flag::OAM, TunnelKeyAttr::Oam),
                ] {
                    if v & bit != 0 {
                        k.push(attr.clone());
                    }
                    if mm & bit != 0 {
                        m.push(attr);
                    }
                }
            }
            _ => return Err(ParseError::Unsupported(format!("tunnel field {name}"))),
        }
        Ok(())
    })?;
    Ok((KeyAttr::Tunnel(k), KeyAttr::Tunnel(m)))
}

fn vlan(c: &mut Cur<'_>) -> Result<Pair, ParseError> {
    let mut k: u16 = 0x1000;
    let mut m: u16 = 0x1000;
    c.fields(|c, name| {
        let (bits, shift) = match name {
            "vid" => (12, 0),
            "pcp" => (3, 13),
            "cfi" => (1, 12),
            _ => return Err(ParseError::Unsupported(format!("vlan field {name}"))),
        };
        let field: u16 = ((1u32 << bits) - 1) as u16;
        let v = c.u16()?;
        if v > field {
            return Err(c.err("a value that fits the field"));
        }
        k = (k & !(field << shift)) | (v << shift);
        if c.eat("/") {
            let mm = c.u16()?;
            if mm > field {
                return Err(c.err("a mask that fits the field"));
            }
            m = (m & !(field << shift)) | (mm << shift);
        } else {
            m |= field << shift;
        }
        Ok(())
    })?;
    Ok((KeyAttr::Vlan(Be16(k)), KeyAttr::Vlan(Be16(m))))
}

fn mpls(c: &mut Cur<'_>) -> Result<Pair, ParseError> {
    const MAX: usize = 3;
    let mut k = [0u32; MAX];
    let mut m = [0u32; MAX];
    let mut idx = 0usize;
    let mut seen = 0u8;
    c.fields(|c, name| {
        let (bit, bits, shift) = match name {
            "label" => (1u8, 20, 12),
            "tc" => (2, 3, 9),
            "ttl" => (4, 8, 0),
            "bos" => (8, 1, 8),
            _ => return Err(ParseError::Unsupported(format!("mpls field {name}"))),
        };
        if seen & bit != 0 {
            seen = 0;
            idx += 1;
            if idx == MAX {
                return Err(c.err("at most 3 MPLS labels"));
            }
        }
        seen |= bit;
        let field = (1u32 << bits) - 1;
        let v = c.u32()?;
        if v > field {
            return Err(c.err("a value that fits the field"));
        }
        let (kk, mm) = (
            k.get_mut(idx).ok_or(ParseError::TooDeep)?,
            m.get_mut(idx).ok_or(ParseError::TooDeep)?,
        );
        *kk = (*kk & !(field << shift)) | (v << shift);
        if c.eat("/") {
            let mv = c.u32()?;
            if mv > field {
                return Err(c.err("a mask that fits the field"));
            }
            *mm = (*mm & !(field << shift)) | (mv << shift);
        } else {
            *mm |= field << shift;
        }
        Ok(())
    })?;
    let n = idx + 1;
    let kv = k.iter().take(n).map(|&x| Be32(x)).collect();
    let mv = m.iter().take(n).map(|&x| Be32(x)).collect();
    Ok((KeyAttr::Mpls(kv), KeyAttr::Mpls(mv)))
}

fn frag(c: &mut Cur<'_>) -> Result<u8, ParseError> {
    let w = c.take_while(|ch| ch.is_ascii_lowercase());
    match w {
        "no" => Ok(0),
        "first" => Ok(1),
        "later" => Ok(2),
        _ => Err(c.err("no, first or later")),
    }
}

fn ports_attr(c: &mut Cur<'_>, mk: fn(PortsKey) -> KeyAttr) -> Result<Pair, ParseError> {
    let mut k = PortsKey::default();
    let mut m = PortsKey::default();
    c.fields(|c, name| {
        let (v, mm) = c.masked(Cur::u16, u16::MAX)?;
        match name {
            "src" => (k.src, m.src) = (Be16(v), Be16(mm)),
            "dst" => (k.dst, m.dst) = (Be16(v), Be16(mm)),
            _ => return Err(ParseError::Unsupported(format!("port field {name}"))),
        }
        Ok(())
    })?;
    Ok((mk(k), mk(m)))
}

fn icmp_attr(c: &mut Cur<'_>, mk: fn(IcmpKey) -> KeyAttr) -> Result<Pair, ParseError> {
    let mut k = IcmpKey::default();
    let mut m = IcmpKey::default();
    c.fields(|c, name| {
        let (v, mm) = c.masked(Cur::u8, u8::MAX)?;
        match name {
            "type" => (k.icmp_type, m.icmp_type) = (v, mm),
            "code" => (k.code, m.code) = (v, mm),
            _ => return Err(ParseError::Unsupported(format!("icmp field {name}"))),
        }
        Ok(())
    })?;
    Ok((mk(k), mk(m)))
}

const V6_FULL: [u8; 16] = [0xff; 16];

/// Parses one attribute at the cursor (its name already consumed).
fn key_attr(c: &mut Cur<'_>, name: &str) -> Result<Pair, ParseError> {
    Ok(match name {
        "skb_priority" => single_u32(c, KeyAttr::Priority)?,
        "skb_mark" => single_u32(c, KeyAttr::SkbMark)?,
        "dp_hash" => single_u32(c, KeyAttr::DpHash)?,
        "ct_mark" => single_u32(c, KeyAttr::CtMark)?,
        "recirc_id" => {
            let v = c.u32()?;
            c.expect(")")?;
            (KeyAttr::RecircId(v), KeyAttr::RecircId(u32::MAX))
        }
        "ct_state" => {
            let (v, m) = c.flag_set(ct_state_name, 0xff)?;
            c.expect(")")?;
            (KeyAttr::CtState(v), KeyAttr::CtState(m))
        }
        "ct_zone" => {
            let (v, m) = c.masked(Cur::u16, u16::MAX)?;
            c.expect(")")?;
            (KeyAttr::CtZone(v), KeyAttr::CtZone(m))
        }
        "ct_label" => {
            let (v, m) = c.masked(Cur::u128_hex, u128::MAX)?;
            c.expect(")")?;
            (
                KeyAttr::CtLabels(v.to_ne_bytes()),
                KeyAttr::CtLabels(m.to_ne_bytes()),
            )
        }
        "tunnel" => tunnel(c)?,
        "in_port" => {
            let v = ne_port(c)?;
            let m = if c.eat("/") { c.u32()? } else { u32::MAX };
            c.expect(")")?;
            (KeyAttr::InPort(v), KeyAttr::InPort(m))
        }
        "eth" => {
            let mut k = EthernetKey::default();
            let mut m = EthernetKey::default();
            c.fields(|c, name| {
                let (v, mm) = c.masked(Cur::mac, MacAddr::BROADCAST)?;
                match name {
                    "src" => (k.src, m.src) = (v, mm),
                    "dst" => (k.dst, m.dst) = (v, mm),
                    _ => return Err(ParseError::Unsupported(format!("eth field {name}"))),
                }
                Ok(())
            })?;
            (KeyAttr::Ethernet(k), KeyAttr::Ethernet(m))
        }
        "vlan" => vlan(c)?,
        "eth_type" => {
            let (v, m) = c.masked(Cur::u16, u16::MAX)?;
            c.expect(")")?;
            (KeyAttr::EtherType(Be16(v)), KeyAttr::EtherType(Be16(m)))
        }
        "mpls" => mpls(c)?,
        "ipv4" => {
            let mut k = Ipv4Key::default();
            let mut m = Ipv4Key::default();
            c.fields(|c, name| {
                match name {
                    "src" | "dst" => {
                        let (v, mm) = c.masked(Cur::ipv4, Ipv4Addr::BROADCAST)?;
                        if name == "src" {
                            (k.src, m.src) = (v, mm);
                        } else {
                            (k.dst, m.dst) = (v, mm);
                        }
                    }
                    "proto" => (k.proto, m.proto) = c.masked(Cur::u8, u8::MAX)?,
                    "tos" => (k.tos, m.tos) = c.masked(Cur::u8, u8::MAX)?,
                    "ttl" => (k.ttl, m.ttl) = c.masked(Cur::u8, u8::MAX)?,
                    "frag" => (k.frag, m.frag) = (frag(c)?, u8::MAX),
                    _ => return Err(ParseError::Unsupported(format!("ipv4 field {name}"))),
                }
                Ok(())
            })?;
            (KeyAttr::Ipv4(k), KeyAttr::Ipv4(m))
        }
        "ipv6" => {
            let mut k = Ipv6Key::default();
            let mut m = Ipv6Key::default();
            c.fields(|c, name| {
                match name {
                    "src" => (k.src, m.src) = c.masked(Cur::ipv6, Ipv6Addr::from(V6_FULL))?,
                    "dst" => (k.dst, m.dst) = c.masked(Cur::ipv6, Ipv6Addr::from(V6_FULL))?,
                    "label" => {
                        let (v, mm) = c.masked(Cur::u32, 0xfffff)?;
                        if (v | mm) & !0xfffff != 0 {
                            return Err(c.err("a 20-bit flow label"));
                        }
                        (k.label, m.label) = (Be32(v), Be32(mm));
                    }
                    "proto" => (k.proto, m.proto) = c.masked(Cur::u8, u8::MAX)?,
                    "tclass" => (k.tclass, m.tclass) = c.masked(Cur::u8, u8::MAX)?,
                    "hlimit" => (k.hlimit, m.hlimit) = c.masked(Cur::u8, u8::MAX)?,
                    "frag" => (k.frag, m.frag) = (frag(c)?, u8::MAX),
                    _ => return Err(ParseError::Unsupported(format!("ipv6 field {name}"))),
                }
                Ok(())
            })?;
            (KeyAttr::Ipv6(k), KeyAttr::Ipv6(m))
        }
        "tcp" => ports_attr(c, KeyAttr::Tcp)?,
        "udp" => ports_attr(c, KeyAttr::Udp)?,
        "sctp" => ports_attr(c, KeyAttr::Sctp)?,
        "tcp_flags" => {
            let (v, m) = c.flag_set(tcp_flag_name, 0xfff)?;
            c.expect(")")?;
            (
                KeyAttr::TcpFlags(Be16(v as u16)),
                KeyAttr::TcpFlags(Be16(m as u16)),
            )
        }
        "icmp" => icmp_attr(c, KeyAttr::Icmp)?,
        "icmpv6" => icmp_attr(c, KeyAttr::Icmpv6)?,
        "arp" => {
            let mut k = ArpKey::default();
            let mut m = ArpKey::default();
            c.fields(|c, name| {
                match name {
                    "sip" => (k.sip, m.sip) = c.masked(Cur::ipv4, Ipv4Addr::BROADCAST)?,
                    "tip" => (k.tip, m.tip) = c.masked(Cur::ipv4, Ipv4Addr::BROADCAST)?,
                    "op" => {
                        let (v, mm) = c.masked(Cur::u16, u16::MAX)?;
                        (k.op, m.op) = (Be16(v), Be16(mm));
                    }
                    "sha" => (k.sha, m.sha) = c.masked(Cur::mac, MacAddr::BROADCAST)?,
                    "tha" => (k.tha, m.tha) = c.masked(Cur::mac, MacAddr::BROADCAST)?,
                    _ => return Err(ParseError::Unsupported(format!("arp field {name}"))),
                }
                Ok(())
            })?;
            (KeyAttr::Arp(k), KeyAttr::Arp(m))
        }
        "nd" => {
            let z = NdKey {
                target: Ipv6Addr::UNSPECIFIED,
                sll: MacAddr::default(),
                tll: MacAddr::default(),
            };
            let (mut k, mut m) = (z, z);
            c.fields(|c, name| {
                match name {
                    "target" => {
                        (k.target, m.target) = c.masked(Cur::ipv6, Ipv6Addr::from(V6_FULL))?
                    }
                    "sll" => (k.sll, m.sll) = c.masked(Cur::mac, MacAddr::BROADCAST)?,
                    "tll" => (k.tll, m.tll) = c.masked(Cur::mac, MacAddr::BROADCAST)?,
                    _ => return Err(ParseError::Unsupported(format!("nd field {name}"))),
                }
                Ok(())
            })?;
            (KeyAttr::Nd(k), KeyAttr::Nd(m))
        }
        "encap" => {
            if c.depth >= MAX_NESTING {
                return Err(ParseError::TooDeep);
            }
            c.depth += 1;
            let (mut k, mut m) = (Vec::new(), Vec::new());
            loop {
                c.skip_delims();
                match c.peek() {
                    None => return Err(c.err(")")),
                    Some(b')') => break,
                    _ => {}
                }
                let (a, b) = one_attr(c)?;
                k.push(a);
                m.push(b);
            }
            c.pos += 1;
            c.depth -= 1;
            (KeyAttr::Encap(k), KeyAttr::Encap(m))
        }
        other => return Err(ParseError::Unsupported(format!("key attribute {other}"))),
    })
}

impl Cur<'_> {
    /// A 128-bit number: hex with `0x` (any length up to 32 digits) or decimal.
    fn u128_hex(&mut self) -> Result<u128, ParseError> {
        if self.eat("0x") || self.eat("0X") {
            let t = self.take_while(|c| c.is_ascii_hexdigit());
            if t.is_empty() || t.len() > 32 {
                return Err(self.err("a 128-bit hex number"));
            }
            u128::from_str_radix(t, 16).map_err(|_| self.err("a 128-bit hex number"))
        } else {
            Ok(self.u64()?.into())
        }
    }
}

fn one_attr(c: &mut Cur<'_>) -> Result<Pair, ParseError> {
    let save = c.pos;
    match c.ident() {
        Some(name) if c.s.get(c.pos.wrapping_sub(1)) == Some(&b'(') => key_attr(c, name),
        _ => {
            c.pos = save;
            Err(c.err("a key attribute such as in_port(…)"))
        }
    }
}

/// Parses a UFID in OVS's `ufid:xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` form.
pub fn parse_ufid(s: &str) -> Result<Ufid, ParseError> {
    let hex = s.strip_prefix("ufid:").unwrap_or(s);
    let parts: Vec<&str> = hex.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    if parts.len() != 5
        || parts
            .iter()
            .zip(lens)
            .any(|(p, l)| p.len() != l || !p.bytes().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(ParseError::BadUfid(s.to_owned()));
    }
    let word = |t: &str| u32::from_str_radix(t, 16).map_err(|_| ParseError::BadUfid(s.to_owned()));
    let p = |i: usize| parts.get(i).copied().unwrap_or("");
    let a = word(p(0))?;
    let b = word(p(1))? << 16 | word(p(2))?;
    let last = p(4);
    let c = word(p(3))? << 16 | word(last.get(..4).unwrap_or(""))?;
    let d = word(last.get(4..).unwrap_or(""))?;
    let mut bytes = Vec::with_capacity(16);
    for w in [a, b, c, d] {
        bytes.extend_from_slice(&w.to_ne_bytes());
    }
    Ufid::new(&bytes).ok_or_else(|| ParseError::BadUfid(s.to_owned()))
}

fn flow_from(c: &mut Cur<'_>) -> Result<ParsedFlow, ParseError> {
    let mut out = ParsedFlow {
        ufid: None,
        key: FlowKey::new(),
        mask: FlowKey::new(),
    };
    loop {
        c.skip_delims();
        if c.at_end() {
            return Ok(out);
        }
        if c.rest().starts_with(b"ufid:") {
            let t = c.take_while(|ch| !DELIMS.contains(&ch));
            out.ufid = Some(parse_ufid(t)?);
            continue;
        }
        let (k, m) = one_attr(c)?;
        out.key.push(k);
        out.mask.push(m);
    }
}

/// Parses a flow key (with masks and an optional `ufid:` prefix) in
/// `ovs-dpctl`'s syntax, e.g.
/// `in_port(1),eth(src=02:00:00:00:00:01),eth_type(0x0800),ipv4(dst=10.32.0.0/255.240.0.0)`.
pub fn parse_flow(s: &str, ports: Option<PortLookup<'_>>) -> Result<ParsedFlow, ParseError> {
    let mut c = Cur::new(s, ports);
    flow_from(&mut c)
}

fn is_all_ones(a: &KeyAttr) -> bool {
    a.payload_bytes().iter().all(|&b| b == 0xff)
}

fn action_list(c: &mut Cur<'_>, close: bool) -> Result<Vec<Action>, ParseError> {
    let mut out = Vec::new();
    loop {
        c.skip_delims();
        match c.peek() {
            None if !close => return Ok(out),
            None => return Err(c.err(")")),
            Some(b')') if close => return Ok(out),
            _ => {}
        }
        out.push(one_action(c)?);
    }
}

fn nested_actions(c: &mut Cur<'_>) -> Result<Vec<Action>, ParseError> {
    if c.depth >= MAX_NESTING {
        return Err(ParseError::TooDeep);
    }
    c.depth += 1;
    let acts = if c.rest().starts_with(b"drop)") {
        c.pos += 4;
        Vec::new()
    } else {
        action_list(c, true)?
    };
    c.depth -= 1;
    c.expect(")")?;
    Ok(acts)
}

fn nat_action(c: &mut Cur<'_>) -> Result<Vec<NatAttr>, ParseError> {
    let mut n = Vec::new();
    if !c.eat("(") {
        return Ok(n);
    }
    let addr = |c: &mut Cur<'_>| -> Result<IpAddr, ParseError> {
        if c.eat("[") {
            let a = c.ipv6()?;
            c.expect("]")?;
            Ok(IpAddr::V6(a))
        } else {
            let save = c.pos;
            match c.ipv4() {
                Ok(a) => Ok(IpAddr::V4(a)),
                Err(_) => {
                    c.pos = save;
                    Ok(IpAddr::V6(c.ipv6()?))
                }
            }
        }
    };
    loop {
        if c.eat("src") {
            n.push(NatAttr::Src);
        } else if c.eat("dst") {
            n.push(NatAttr::Dst);
        } else if c.eat("persistent") {
            n.push(NatAttr::Persistent);
        } else if c.eat("hash") {
            n.push(NatAttr::ProtoHash);
        } else if c.eat("random") {
            n.push(NatAttr::ProtoRandom);
        } else {
            return Err(c.err("src, dst, persistent, hash or random"));
        }
        if matches!(n.last(), Some(NatAttr::Src | NatAttr::Dst)) && c.eat("=") {
            let min = addr(c)?;
            n.push(NatAttr::IpMin(min));
            if c.eat("-") {
                n.push(NatAttr::IpMax(addr(c)?));
            }
            if c.eat(":") {
                n.push(NatAttr::ProtoMin(c.u16()?));
                if c.eat("-") {
                    n.push(NatAttr::ProtoMax(c.u16()?));
                }
            }
        }
        if !c.eat(",") {
            break;
        }
    }
    c.expect(")")?;
    Ok(n)
}

fn ct_action(c: &mut Cur<'_>) -> Result<Action, ParseError> {
    let mut attrs = Vec::new();
    if !c.eat("(") {
        return Ok(Action::Ct(attrs));
    }
    loop {
        if c.peek() == Some(b')') {
            break;
        }
        if c.eat("commit") {
            attrs.push(CtAttr::Commit);
        } else if c.eat("force_commit") {
            attrs.push(CtAttr::ForceCommit);
        } else if c.eat("zone=") {
            attrs.push(CtAttr::Zone(c.u16()?));
        } else if c.eat("mark=") {
            let (value, mask) = c.masked(Cur::u32, u32::MAX)?;
            attrs.push(CtAttr::Mark { value, mask });
        } else if c.eat("label=") {
            let (v, m) = c.masked(Cur::u128_hex, u128::MAX)?;
            attrs.push(CtAttr::Labels {
                value: v.to_ne_bytes(),
                mask: m.to_ne_bytes(),
            });
        } else if c.eat("helper=") {
            let h = c.take_while(|ch| ch.is_ascii_alphanumeric() || ch == b'_' || ch == b'-');
            attrs.push(CtAttr::Helper(h.to_owned()));
        } else if c.eat("timeout=") {
            let t = c.take_while(|ch| ch.is_ascii_alphanumeric() || ch == b'_' || ch == b'-');
            attrs.push(CtAttr::Timeout(t.to_owned()));
        } else if c.eat("nat") {
            attrs.push(CtAttr::Nat(nat_action(c)?));
        } else {
            return Err(c.err("a ct option"));
        }
        if !c.eat(",") {
            break;
        }
    }
    c.expect(")")?;
    Ok(Action::Ct(attrs))
}

fn one_action(c: &mut Cur<'_>) -> Result<Action, ParseError> {
    if c.peek().is_some_and(|ch| ch.is_ascii_digit()) {
        return Ok(Action::Output(c.u32()?));
    }
    macro_rules! paren_u32 {
        ($lit:expr, $mk:expr) => {
            if c.eat($lit) {
                let v = c.u32()?;
                c.expect(")")?;
                return Ok($mk(v));
            }
        };
    }
    paren_u32!("trunc(", Action::Trunc);
    paren_u32!("recirc(", Action::Recirc);
    paren_u32!("meter(", Action::Meter);
    if c.eat("userspace(") {
        c.expect("pid=")?;
        let mut u = vec![UserspaceAttr::Pid(c.u32()?)];
        while c.eat(",") {
            if c.eat("userdata(") {
                let h = c.take_while(|ch| ch.is_ascii_hexdigit());
                if h.len() % 2 != 0 {
                    return Err(c.err("an even number of hex digits"));
                }
                let bytes = (0..h.len() / 2)
                    .map(|i| u8::from_str_radix(h.get(2 * i..2 * i + 2).unwrap_or(""), 16))
                    .collect::<Result<Vec<u8>, _>>()
                    .map_err(|_| c.err("hex userdata"))?;
                c.expect(")")?;
                u.push(UserspaceAttr::Userdata(bytes));
            } else if c.eat("actions") {
                u.push(UserspaceAttr::Actions);
            } else if c.eat("tunnel_out_port=") {
                u.push(UserspaceAttr::EgressTunPort(ne_port(c)?));
            } else {
                return Err(c.err("userdata(…), actions or tunnel_out_port="));
            }
        }
        c.expect(")")?;
        return Ok(Action::Userspace(u));
    }
    if c.eat("set(") {
        let (k, m) = one_attr(c)?;
        c.expect(")")?;
        if matches!(k, KeyAttr::Tunnel(_)) || is_all_ones(&m) {
            return Ok(Action::Set(k));
        }
        return Ok(Action::SetMasked { value: k, mask: m });
    }
    if c.eat("push_vlan(") {
        let mut tpid = 0x8100u16;
        let (mut vid, mut pcp, mut cfi) = (None, None, 1u16);
        c.fields(|c, name| {
            match name {
                "tpid" => tpid = c.u16()?,
                "vid" => vid = Some(c.u16()?),
                "pcp" => pcp = Some(c.u16()?),
                "cfi" => cfi = c.u16()?,
                _ => return Err(ParseError::Unsupported(format!("push_vlan field {name}"))),
            }
            Ok(())
        })?;
        let vid = vid.unwrap_or(0);
        let pcp = pcp.unwrap_or(0);
        if vid > 0xfff || pcp > 7 {
            return Err(c.err("vid < 4096 and pcp < 8"));
        }
        let tci = vid | (pcp << 13) | if cfi != 0 { 0x1000 } else { 0 };
        return Ok(Action::PushVlan {
            tpid: Be16(tpid),
            tci: Be16(tci),
        });
    }
    if c.eat("pop_vlan") {
        return Ok(Action::PopVlan);
    }
    if c.eat("pop_eth") {
        return Ok(Action::PopEth);
    }
    if c.eat("push_eth(") {
        let mut e = EthernetKey::default();
        c.fields(|c, name| {
            match name {
                "src" => e.src = c.mac()?,
                "dst" => e.dst = c.mac()?,
                _ => return Err(ParseError::Unsupported(format!("push_eth field {name}"))),
            }
            Ok(())
        })?;
        return Ok(Action::PushEth(e));
    }
    if c.eat("hash(") {
        let alg = if c.eat("l4(") {
            0
        } else if c.eat("sym_l4(") {
            1
        } else {
            return Err(c.err("l4( or sym_l4("));
        };
        let basis = c.u32()?;
        c.expect("))")?;
        return Ok(Action::Hash { alg, basis });
    }
    if c.eat("push_mpls(") || c.eat("add_mpls(") {
        let mut lse = 0u32;
        let mut eth = 0u16;
        c.fields(|c, name| {
            match name {
                "label" => lse |= (c.u32()? & 0xfffff) << 12,
                "tc" => lse |= (u32::from(c.u8()?) & 7) << 9,
                "ttl" => lse |= u32::from(c.u8()?),
                "bos" => lse |= (u32::from(c.u8()?) & 1) << 8,
                "eth_type" => eth = c.u16()?,
                _ => return Err(ParseError::Unsupported(format!("push_mpls field {name}"))),
            }
            Ok(())
        })?;
        return Ok(Action::PushMpls {
            lse: Be32(lse),
            ethertype: Be16(eth),
        });
    }
    if c.eat("pop_mpls(eth_type=") {
        let t = c.u16()?;
        c.expect(")")?;
        return Ok(Action::PopMpls(Be16(t)));
    }
    if c.eat("sample(sample=") {
        let t = c.take_while(|ch| ch.is_ascii_digit() || ch == b'.');
        let pct: f64 = t.parse().map_err(|_| c.err("a percentage"))?;
        if !(0.0..=100.0).contains(&pct) {
            return Err(c.err("a percentage from 0 to 100"));
        }
        c.expect("%,actions(")?;
        let p = (f64::from(u32::MAX) * (pct / 100.0) + 0.5).floor();
        let prob = if p <= 0.0 {
            0
        } else if p >= f64::from(u32::MAX) {
            u32::MAX
        } else {
            p as u32
        };
        let acts = nested_actions(c)?;
        c.expect(")")?;
        return Ok(Action::Sample(vec![
            SampleAttr::Probability(prob),
            SampleAttr::Actions(acts),
        ]));
    }
    if c.eat("clone(") {
        return Ok(Action::Clone(nested_actions(c)?));
    }
    if c.eat("ct_clear") {
        return Ok(Action::CtClear);
    }
    if c.rest().starts_with(b"ct") {
        c.pos += 2;
        return ct_action(c);
    }
    if c.eat("drop") {
        return Ok(Action::Drop(0));
    }
    // A port name.
    if c.ports.is_some() {
        let save = c.pos;
        let name = c.take_while(|ch| !DELIMS.contains(&ch) && ch != b')' && ch != b'(');
        if let Some(p) = c.ports.and_then(|f| f(name)) {
            return Ok(Action::Output(p));
        }
        c.pos = save;
    }
    Err(c.err("an action"))
}

/// Parses an action list in `ovs-dpctl`'s syntax, e.g.
/// `set(tunnel(tun_id=0x5,dst=192.0.2.2,ttl=64,flags(df))),2`. The single
/// word `drop` is the empty list (which the kernel treats as drop).
pub fn parse_actions(s: &str, ports: Option<PortLookup<'_>>) -> Result<Vec<Action>, ParseError> {
    if s.trim().eq_ignore_ascii_case("drop") {
        return Ok(Vec::new());
    }
    let mut c = Cur::new(s, ports);
    action_list(&mut c, false)
}
