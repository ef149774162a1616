//! The body of the `decode` fuzz target, kept in the crate so it also runs as
//! an ordinary unit test (cargo-fuzz needs a nightly toolchain).

use super::action::decode_actions;
use super::ctrl::FamilyInfo;
use super::datapath::DatapathMessage;
use super::flow::{FlowMessage, decode_flow_attrs};
use super::key::FlowKey;
use super::netlink::{MessageIter, Payload};
use super::packet::{PacketMessage, Upcall};
use super::vport::VportMessage;

/// Feeds `data` to every decoder in [`crate::wire`]. Must never panic; what
/// decodes is re-encoded (which must not panic either) and decoded again.
pub fn fuzz_decode(data: &[u8]) {
    for msg in MessageIter::new(data) {
        let Ok(msg) = msg else { break };
        if let Ok(Payload::Data(body)) = msg.payload() {
            decode_body(body);
        }
    }
    decode_body(data);
    if let Ok(k) = FlowKey::decode(data, 0) {
        let mut buf = Vec::new();
        let mut w = super::nla::AttrWriter::new(&mut buf);
        k.emit(&mut w);
        if w.finish().is_ok() {
            let _ = FlowKey::decode(&buf, 0);
        }
    }
    let _ = decode_actions(data, 0);
    let _ = decode_flow_attrs(data);
}

fn decode_body(body: &[u8]) {
    let _ = FamilyInfo::parse(body);
    let _ = Upcall::decode(body);
    if let Ok(m) = DatapathMessage::decode(body) {
        reencode(
            |b| m.encode(b, 1, 0, 0),
            |b| DatapathMessage::decode(b).is_ok(),
        );
    }
    if let Ok(m) = VportMessage::decode(body) {
        reencode(
            |b| m.encode(b, 1, 0, 0),
            |b| VportMessage::decode(b).is_ok(),
        );
    }
    if let Ok(m) = FlowMessage::decode(body) {
        reencode(|b| m.encode(b, 1, 0, 0), |b| FlowMessage::decode(b).is_ok());
    }
    if let Ok(m) = PacketMessage::decode(body) {
        reencode(
            |b| m.encode(b, 1, 0, 0),
            |b| PacketMessage::decode(b).is_ok(),
        );
    }
}

fn reencode(
    enc: impl FnOnce(&mut Vec<u8>) -> Result<(), super::nla::EncodeError>,
    dec: impl FnOnce(&[u8]) -> bool,
) {
    let mut buf = Vec::new();
    if enc(&mut buf).is_ok() {
        let _ = dec(buf.get(16..).unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::action::Action;
    use crate::wire::flow::FlowAttr;
    use crate::wire::key::{EthernetKey, Ipv4Key, KeyAttr, TunnelKeyAttr};
    use crate::wire::ovs::ObjCmd;
    use crate::wire::types::{Be16, Be64};
    use std::net::Ipv4Addr;

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn seed_message() -> Vec<u8> {
        let key = FlowKey::new()
            .with(KeyAttr::Tunnel(vec![
                TunnelKeyAttr::Id(Be64(5)),
                TunnelKeyAttr::Ipv4Dst(Ipv4Addr::new(1, 2, 3, 4)),
                TunnelKeyAttr::Ttl(64),
            ]))
            .with(KeyAttr::InPort(1))
            .with(KeyAttr::Ethernet(EthernetKey::default()))
            .with(KeyAttr::EtherType(Be16(0x0800)))
            .with(KeyAttr::Ipv4(Ipv4Key::default()));
        let m = FlowMessage::new(
            ObjCmd::New,
            3,
            vec![
                FlowAttr::Key(key.clone()),
                FlowAttr::Mask(key),
                FlowAttr::Actions(vec![
                    Action::Clone(vec![Action::Output(1)]),
                    Action::Set(KeyAttr::SkbMark(1)),
                    Action::Output(2),
                ]),
            ],
        );
        let mut buf = Vec::new();
        m.encode(&mut buf, 0x20, 0, 1).ok();
        buf
    }

    #[test]
    fn fuzz_decode_survives_random_and_mutated_inputs() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        // Real kernel messages (see tests/golden) and one of our own.
        let seeds: [&[u8]; 5] = [
            include_bytes!("../../tests/golden/dp_get.bin"),
            include_bytes!("../../tests/golden/vport_vxlan_gbp.bin"),
            include_bytes!("../../tests/golden/flow_get.bin"),
            include_bytes!("../../tests/golden/upcall_miss_arp.bin"),
            &seed_message()[16..],
        ];
        for s in seeds {
            fuzz_decode(s);
        }
        for i in 0..6000 {
            let seed = seeds[i % seeds.len()];
            let data: Vec<u8> = if i % 2 == 0 {
                let len = (rng.next() % 256) as usize;
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                let mut d = seed.to_vec();
                for _ in 0..(1 + rng.next() % 6) {
                    let pos = (rng.next() as usize) % d.len();
                    d[pos] = rng.next() as u8;
                }
                let cut = (rng.next() as usize) % (d.len() + 1);
                d.truncate(cut.max(d.len() / 2));
                d
            };
            fuzz_decode(&data);
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        // 5000 nested ENCAP attributes would overflow the stack if followed.
        let mut inner: Vec<u8> = Vec::new();
        for _ in 0..5000 {
            let len = (inner.len() + 4).min(u16::MAX as usize) as u16;
            let mut next = len.to_ne_bytes().to_vec();
            next.extend_from_slice(&1u16.to_ne_bytes());
            next.extend_from_slice(&inner);
            inner = next;
            if inner.len() > 60_000 {
                break;
            }
        }
        assert!(FlowKey::decode(&inner, 0).is_err());
        fuzz_decode(&inner);
    }
}
