//! Measures (and bounds) the userspace cost of validating and encoding flows.

use std::net::Ipv4Addr;
use std::time::Instant;

use odp::wire::action::Action;
use odp::wire::flow::{FlowAttr, FlowMessage};
use odp::wire::key::{EthernetKey, FlowKey, IcmpKey, Ipv4Key, KeyAttr};
use odp::wire::ovs::ObjCmd;
use odp::wire::types::Be16;
use odp::wire::validate::validate_flow;

#[test]
fn validating_and_encoding_5000_flows_is_cheap() {
    let t = Instant::now();
    let mut buf = Vec::new();
    for i in 0..5000u32 {
        let key = FlowKey::new()
            .with(KeyAttr::InPort(1))
            .with(KeyAttr::Ethernet(EthernetKey::default()))
            .with(KeyAttr::EtherType(Be16(0x0800)))
            .with(KeyAttr::Ipv4(Ipv4Key {
                dst: Ipv4Addr::from(i),
                proto: 1,
                ..Default::default()
            }))
            .with(KeyAttr::Icmp(IcmpKey {
                icmp_type: 8,
                code: 0,
            }));
        let actions = vec![Action::Output(2)];
        validate_flow(&key.0, None, &actions).unwrap();
        let m = FlowMessage::new(
            ObjCmd::New,
            1,
            vec![FlowAttr::Key(key), FlowAttr::Actions(actions)],
        );
        m.encode(&mut buf, 0x20, 0, i).unwrap();
    }
    let el = t.elapsed();
    eprintln!(
        "5000 flows validated and encoded in {el:?} ({} bytes)",
        buf.len()
    );
    assert!(el.as_secs_f64() < 2.0);
}
