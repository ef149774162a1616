//! Scenario tests of the fastdp state machine: two or three peers, frames
//! as the kernel would report them, and the operations that come out.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use odp::handle::FlowId;
use odp::wire::action::Action;
use odp::wire::flow::{FlowInfo, FlowStats};
use odp::wire::key::{EthernetKey, FlowKey, KeyAttr, TunnelKeyAttr};
use odp::wire::types::{Be64, MacAddr};

use super::DpOp;
use super::forwarder::ConnectionParams;
use super::mac_table::Location;
use super::machine::{Fastdp, FastdpConfig, Output, PortKind, Topology};
use super::proactive::is_proactive_ufid;
use crate::mesh::identity::{PeerName, ShortId};
use crate::sleeve::fastdp_health::heartbeat_frame;

const A: u64 = 0xa;
const B: u64 = 0xb;
const C: u64 = 0xc;
const MAC_A1: MacAddr = MacAddr([2, 0, 0, 0, 0xa, 1]);
const MAC_B1: MacAddr = MacAddr([2, 0, 0, 0, 0xb, 1]);
const BCAST: MacAddr = MacAddr::BROADCAST;
const VXLAN: u32 = 2;
const BRIDGE: u32 = 1;
const INTERNAL: u32 = 0;

fn p(n: u64) -> PeerName {
    PeerName::from_u64(n)
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 77, last)
}

fn topology(with_c: bool) -> Topology {
    let mut t = Topology::default();
    t.short_ids.insert(p(A), ShortId::new(1));
    t.short_ids.insert(p(B), ShortId::new(2));
    t.unicast.insert(p(B), p(B));
    t.broadcast.insert(p(A), vec![p(B)]);
    t.broadcast.insert(p(B), vec![]);
    if with_c {
        t.short_ids.insert(p(C), ShortId::new(3));
        t.unicast.insert(p(C), p(C));
        t.broadcast.insert(p(A), vec![p(B), p(C)]);
        t.broadcast.insert(p(B), vec![p(C)]);
    }
    t
}

fn frame(src: MacAddr, dst: MacAddr) -> Vec<u8> {
    let mut f = dst.0.to_vec();
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x08, 0x00]);
    f.resize(60, 0);
    f
}

fn local_key(port: u32, src: MacAddr, dst: MacAddr) -> FlowKey {
    FlowKey::new()
        .with(KeyAttr::InPort(port))
        .with(KeyAttr::Ethernet(EthernetKey { src, dst }))
}

fn tunnel_key(id: u64, from: Ipv4Addr, src: MacAddr, dst: MacAddr) -> FlowKey {
    FlowKey::new()
        .with(KeyAttr::InPort(VXLAN))
        .with(KeyAttr::Tunnel(vec![
            TunnelKeyAttr::Id(Be64(id)),
            TunnelKeyAttr::Ipv4Src(from),
            TunnelKeyAttr::Ipv4Dst(ip(1)),
            TunnelKeyAttr::Ttl(62),
        ]))
        .with(KeyAttr::Ethernet(EthernetKey { src, dst }))
}

fn conn(peer: u64, last: u8) -> ConnectionParams {
    ConnectionParams {
        peer: p(peer),
        conn_uid: 1000 + peer,
        local_ip: ip(1),
        remote_tcp: SocketAddrV4::new(ip(last), 6783),
        outbound: true,
    }
}

fn ops(f: &mut Fastdp) -> Vec<DpOp> {
    f.drain_outputs()
        .into_iter()
        .filter_map(|o| match o {
            Output::Datapath(op) => Some(op),
            _ => None,
        })
        .collect()
}

fn created(ops: &[DpOp]) -> Vec<&odp::handle::FlowSpec> {
    ops.iter()
        .filter_map(|o| match o {
            DpOp::CreateFlow(s) => Some(s),
            _ => None,
        })
        .collect()
}

fn executed(ops: &[DpOp]) -> Vec<&Vec<Action>> {
    ops.iter()
        .filter_map(|o| match o {
            DpOp::Execute { actions, .. } => Some(actions),
            _ => None,
        })
        .collect()
}

fn tunnel_of(actions: &[Action]) -> Vec<(u64, Ipv4Addr)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Set(KeyAttr::Tunnel(t)) => {
                super::tunnel::received_tunnel(t).map(|x| (x.0, x.2))
            }
            _ => None,
        })
        .collect()
}

/// Peer A with ports 0 (internal), 1 (bridge veth), 2 (VXLAN) and a
/// selected fastdp connection to B.
fn setup(t0: Instant) -> Fastdp {
    setup_with(FastdpConfig::new(p(A), 1376), t0)
}

/// [`setup`] with the given settings.
fn setup_with(config: FastdpConfig, t0: Instant) -> Fastdp {
    let mut f = Fastdp::new(config, t0);
    let first = ops(&mut f);
    assert_eq!(
        first,
        vec![DpOp::FlushFlows, DpOp::CreateVxlanVport { udp_port: 6784 }]
    );
    f.set_topology(topology(false));
    f.port_added(INTERNAL, "datapath", PortKind::Local);
    f.port_added(BRIDGE, "vethwe-datapath", PortKind::Local);
    f.port_added(VXLAN, "vxlan-6784", PortKind::Vxlan { udp_port: 6784 });
    f.add_connection(conn(B, 2)).unwrap();
    f.set_selected(p(B), true).unwrap();
    f.drain_outputs();
    f
}

#[test]
fn reactive_broadcast_unicast_and_learning() {
    let t0 = Instant::now();
    let mut f = setup(t0);

    // ARP-like broadcast from a local container: flooded locally and to B,
    // with a flow.
    f.handle_miss(frame(MAC_A1, BCAST), &local_key(BRIDGE, MAC_A1, BCAST), t0);
    let o = ops(&mut f);
    let flows = created(&o);
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].key.in_port(), Some(BRIDGE));
    let acts = executed(&o);
    assert_eq!(acts.len(), 1);
    assert!(acts[0].contains(&Action::Output(INTERNAL)));
    assert!(!acts[0].contains(&Action::Output(BRIDGE)));
    assert_eq!(tunnel_of(acts[0]), vec![(0x2001, ip(2))]);
    assert_eq!(f.mac_location(MAC_A1), Some(Location::Local(BRIDGE)));

    // B answers over the tunnel (id = B | A << 12): delivered to the bridge
    // port, B's MAC learnt, a flow matching the tunnel.
    f.handle_miss(
        frame(MAC_B1, MAC_A1),
        &tunnel_key(0x1002, ip(2), MAC_B1, MAC_A1),
        t0,
    );
    let o = ops(&mut f);
    assert_eq!(executed(&o), vec![&vec![Action::Output(BRIDGE)]]);
    let flows = created(&o);
    assert_eq!(flows.len(), 1);
    flows[0].validate().unwrap();
    assert!(flows[0].key.get(odp::wire::key::attr::TUNNEL).is_some());
    assert_eq!(f.mac_location(MAC_B1), Some(Location::Peer(p(B))));

    // Unicast to B's MAC: tunnel, with a flow.
    f.handle_miss(
        frame(MAC_A1, MAC_B1),
        &local_key(BRIDGE, MAC_A1, MAC_B1),
        t0,
    );
    let o = ops(&mut f);
    assert_eq!(created(&o).len(), 1);
    assert_eq!(tunnel_of(executed(&o)[0]), vec![(0x2001, ip(2))]);

    // Unknown unicast: flooded, no flow.
    let unknown = MacAddr([2, 9, 9, 9, 9, 9]);
    f.handle_miss(
        frame(MAC_A1, unknown),
        &local_key(BRIDGE, MAC_A1, unknown),
        t0,
    );
    let o = ops(&mut f);
    assert!(created(&o).is_empty());
    assert_eq!(executed(&o).len(), 1);

    // A local frame claiming B's MAC is dropped; a hairpin is not sent.
    f.handle_miss(frame(MAC_B1, BCAST), &local_key(BRIDGE, MAC_B1, BCAST), t0);
    assert!(ops(&mut f).is_empty());
    f.handle_miss(
        frame(MAC_A1, MAC_A1),
        &local_key(BRIDGE, MAC_A1, MAC_A1),
        t0,
    );
    assert!(ops(&mut f).is_empty());
}

#[test]
fn relay_keeps_the_tunnel_id_and_refuses_hairpins() {
    let t0 = Instant::now();
    let mut f = setup(t0);
    f.set_topology(topology(true));
    f.add_connection(conn(C, 3)).unwrap();
    f.set_selected(p(C), true).unwrap();
    f.drain_outputs();
    // B → C through us: relayed to C with the same id.
    let id = 2 | (3 << 12);
    f.handle_miss(
        frame(MAC_B1, MAC_A1),
        &tunnel_key(id, ip(2), MAC_B1, MAC_A1),
        t0,
    );
    let o = ops(&mut f);
    assert_eq!(tunnel_of(executed(&o)[0]), vec![(id, ip(3))]);
    assert_eq!(created(&o).len(), 1);
    // B → B's own id coming back from B: a hairpin, dropped.
    let mut t = topology(true);
    t.unicast.insert(p(C), p(B));
    f.set_topology(t);
    f.drain_outputs();
    let key = FlowKey::new()
        .with(KeyAttr::InPort(VXLAN))
        .with(KeyAttr::Tunnel(vec![
            TunnelKeyAttr::Id(Be64(id)),
            TunnelKeyAttr::Ipv4Src(ip(2)),
            TunnelKeyAttr::Ipv4Dst(ip(1)),
        ]))
        .with(KeyAttr::Ethernet(EthernetKey {
            src: MAC_B1,
            dst: MAC_A1,
        }));
    f.handle_miss(frame(MAC_B1, MAC_A1), &key, t0);
    assert!(ops(&mut f).is_empty());
}

/// An Ethernet frame with IPv4 ICMP of `icmp_type`/`code` in it.
fn icmp_frame(src: MacAddr, dst: MacAddr, icmp_type: u8, code: u8) -> Vec<u8> {
    let mut f = dst.0.to_vec();
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[8] = 64;
    ip[9] = 1;
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[icmp_type, code, 0, 0, 0, 0, 0x05, 0x46]);
    f.resize(70, 0);
    f
}

#[test]
fn kernel_frag_needed_on_our_own_tunnel_reaches_the_local_sender() {
    let t0 = Instant::now();
    let mut f = setup(t0);
    // A's container is known on the bridge port.
    f.handle_miss(frame(MAC_A1, BCAST), &local_key(BRIDGE, MAC_A1, BCAST), t0);
    f.drain_outputs();
    // The kernel found A's DF packet to B too big for the path and handed
    // back ICMP frag-needed on A's own tunnel id (A | B << 12) with the
    // outer addresses swapped: it goes to A's container, with no flow and
    // nothing learnt.
    let own = 0x2001;
    f.handle_miss(
        icmp_frame(MAC_B1, MAC_A1, 3, 4),
        &tunnel_key(own, ip(2), MAC_B1, MAC_A1),
        t0,
    );
    let o = ops(&mut f);
    assert_eq!(executed(&o), vec![&vec![Action::Output(BRIDGE)]]);
    assert!(created(&o).is_empty());
    assert_eq!(f.mac_location(MAC_B1), None);
    // Anything else on our own id is still a hairpin, dropped.
    for other in [icmp_frame(MAC_B1, MAC_A1, 3, 1), frame(MAC_B1, MAC_A1)] {
        f.handle_miss(other, &tunnel_key(own, ip(2), MAC_B1, MAC_A1), t0);
        assert!(executed(&ops(&mut f)).is_empty());
    }
}

#[test]
fn sleeve_takes_frames_when_fastdp_is_not_selected() {
    let t0 = Instant::now();
    let mut f = setup(t0);
    f.handle_miss(
        frame(MAC_B1, MAC_A1),
        &tunnel_key(0x1002, ip(2), MAC_B1, MAC_A1),
        t0,
    );
    f.set_selected(p(B), false).unwrap();
    let o = f.drain_outputs();
    assert!(o.contains(&Output::Datapath(DpOp::FlushFlows)));
    f.handle_miss(
        frame(MAC_A1, MAC_B1),
        &local_key(BRIDGE, MAC_A1, MAC_B1),
        t0,
    );
    let o = f.drain_outputs();
    assert_eq!(
        o,
        vec![Output::Sleeve {
            next_hop: p(B),
            src: p(A),
            dst: p(B),
            frame: frame(MAC_A1, MAC_B1),
        }]
    );
    // What the sleeve brings in is delivered by execute, without flows.
    f.inject(p(B), p(A), frame(MAC_B1, MAC_A1), t0);
    let o = ops(&mut f);
    assert!(created(&o).is_empty());
    assert_eq!(executed(&o), vec![&vec![Action::Output(BRIDGE)]]);
}

#[test]
fn heartbeats_acks_and_health() {
    let t0 = Instant::now();
    let mut f = setup(t0);
    f.confirm_connection(p(B), t0).unwrap();
    let o = ops(&mut f);
    let [
        DpOp::Execute {
            packet, actions, ..
        },
    ] = o.as_slice()
    else {
        panic!("{o:?}")
    };
    assert_eq!(packet.len(), 14 + 1376);
    assert_eq!(&packet[..14], &[0; 14]);
    assert_eq!(tunnel_of(actions), vec![(0x2001, ip(2))]);
    // B's heartbeat arrives: acknowledged over TCP with tag 0.
    let hb = heartbeat_frame(1000 + B, 1376);
    let zero = MacAddr([0; 6]);
    f.handle_miss(hb.clone(), &tunnel_key(0x1002, ip(2), zero, zero), t0);
    assert_eq!(
        f.drain_outputs(),
        vec![Output::Control {
            peer: p(B),
            tag: 0,
            msg: vec![]
        }]
    );
    // B acknowledges ours: established, heartbeats slow down to 10 s.
    f.control_message(p(B), 0, &[], t0);
    assert_eq!(f.drain_outputs(), vec![Output::Established { peer: p(B) }]);
    assert_eq!(f.next_deadline(), Some(t0 + Duration::from_secs(10)));
    // Silence for 60 s: unhealthy.
    let mut t = t0;
    let mut health = Vec::new();
    while t < t0 + Duration::from_secs(61) {
        t += Duration::from_secs(1);
        f.poll(t);
        for o in f.drain_outputs() {
            if let Output::Health { peer, healthy } = o {
                health.push((peer, healthy, t - t0));
            }
        }
    }
    assert_eq!(health, vec![(p(B), false, Duration::from_secs(60))]);
    f.handle_miss(hb, &tunnel_key(0x1002, ip(2), zero, zero), t);
    assert!(f.drain_outputs().contains(&Output::Health {
        peer: p(B),
        healthy: true
    }));
    assert!(f.status().peers[0].healthy);
}

#[test]
fn proactive_flows_follow_ipam_routes_and_selection() {
    let t0 = Instant::now();
    let mut f = setup(t0);
    f.set_cidr_view(vec![
        ("10.32.0.0/13".parse().unwrap(), p(A)),
        ("10.40.0.0/13".parse().unwrap(), p(B)),
    ]);
    f.add_local_destination("10.32.0.0/13".parse().unwrap(), "vethwe-datapath");
    let o = ops(&mut f);
    let flows = created(&o);
    // Egress from ports 0 and 1 to B, ingress from VXLAN to port 1, and
    // port 0 → port 1.
    assert_eq!(flows.len(), 4, "{flows:#?}");
    for s in &flows {
        s.validate().unwrap();
        assert!(s.ufid.as_ref().is_some_and(is_proactive_ufid));
    }
    assert_eq!(f.status().proactive_flows, 4);
    // B falls back to the sleeve: the flows are flushed and only the local
    // ones come back.
    f.set_selected(p(B), false).unwrap();
    let o = ops(&mut f);
    assert_eq!(o.first(), Some(&DpOp::FlushFlows));
    assert_eq!(created(&o).len(), 2);
    // Back on fastdp, then B's range moves to C, who is unreachable.
    f.set_selected(p(B), true).unwrap();
    f.drain_outputs();
    f.set_cidr_view(vec![
        ("10.32.0.0/13".parse().unwrap(), p(A)),
        ("10.40.0.0/13".parse().unwrap(), p(C)),
    ]);
    let o = ops(&mut f);
    let deleted = o
        .iter()
        .filter(|op| matches!(op, DpOp::DeleteFlow(FlowId::Ufid(_))))
        .count();
    assert_eq!((deleted, created(&o).len()), (2, 0));
}

#[test]
fn no_proactive_flows_when_disabled() {
    let t0 = Instant::now();
    let mut config = FastdpConfig::new(p(A), 1376);
    config.proactive = false;
    let mut f = setup_with(config, t0);
    f.set_cidr_view(vec![
        ("10.32.0.0/13".parse().unwrap(), p(A)),
        ("10.40.0.0/13".parse().unwrap(), p(B)),
    ]);
    f.add_local_destination("10.32.0.0/13".parse().unwrap(), "vethwe-datapath");
    let o = ops(&mut f);
    assert!(created(&o).is_empty(), "{o:#?}");
    assert_eq!(f.status().proactive_flows, 0);
    // The reactive path still works: broadcast from A1, B1's answer and
    // A1's unicast to B1 each get a MAC-pair flow.
    f.handle_miss(frame(MAC_A1, BCAST), &local_key(BRIDGE, MAC_A1, BCAST), t0);
    f.handle_miss(
        frame(MAC_B1, MAC_A1),
        &tunnel_key(0x1002, ip(2), MAC_B1, MAC_A1),
        t0,
    );
    f.handle_miss(
        frame(MAC_A1, MAC_B1),
        &local_key(BRIDGE, MAC_A1, MAC_B1),
        t0,
    );
    let flows = ops(&mut f);
    let flows = created(&flows);
    assert_eq!(flows.len(), 3);
    assert!(
        flows
            .iter()
            .all(|s| !s.ufid.as_ref().is_some_and(is_proactive_ufid))
    );
}

#[test]
fn topology_change_flushes_and_forgets_lost_peers() {
    let t0 = Instant::now();
    let mut f = setup(t0);
    f.handle_miss(
        frame(MAC_B1, MAC_A1),
        &tunnel_key(0x1002, ip(2), MAC_B1, MAC_A1),
        t0,
    );
    f.drain_outputs();
    let mut t = topology(false);
    t.short_ids.remove(&p(B));
    t.unicast.clear();
    f.set_topology(t);
    assert_eq!(ops(&mut f), vec![DpOp::FlushFlows]);
    assert_eq!(f.mac_location(MAC_B1), None);
    // The same topology again changes nothing.
    let same = topology(false);
    f.set_topology(same.clone());
    f.drain_outputs();
    f.set_topology(same);
    assert!(f.drain_outputs().is_empty());
}

#[test]
fn sweep_deletes_idle_reactive_flows_only() {
    let t0 = Instant::now();
    let mut f = setup(t0);
    let idle = local_key(BRIDGE, MAC_A1, MAC_B1);
    let busy = local_key(BRIDGE, MAC_B1, MAC_A1);
    let info = |key: &FlowKey, n: u64, ufid: Option<u128>| FlowInfo {
        key: Some(key.clone()),
        stats: Some(FlowStats {
            n_packets: n,
            n_bytes: n * 60,
        }),
        ufid: ufid.map(odp::wire::flow::Ufid::from_u128),
        ..Default::default()
    };
    let proactive = (u128::from(super::proactive::UFID_TAG) << 64) | 1;
    let t = t0 + super::machine::FLOW_SWEEP_INTERVAL;
    f.poll(t);
    assert_eq!(ops(&mut f), vec![DpOp::SweepFlows]);
    f.sweep_flows(
        t,
        vec![
            info(&idle, 3, None),
            info(&busy, 5, None),
            info(&idle, 0, Some(proactive)),
        ],
    );
    assert!(ops(&mut f).is_empty());
    f.sweep_flows(
        t,
        vec![
            info(&idle, 3, None),
            info(&busy, 9, None),
            info(&idle, 0, Some(proactive)),
        ],
    );
    assert_eq!(ops(&mut f), vec![DpOp::DeleteFlow(FlowId::Key(idle))]);
}

/// Pseudo-random frames and keys from every kind of port: the machine
/// never panics, and every flow it asks for passes the kernel's rules.
#[test]
fn random_misses_only_produce_valid_flows() {
    let t0 = Instant::now();
    let mut f = setup(t0);
    f.set_topology(topology(true));
    f.add_connection(conn(C, 3)).unwrap();
    f.set_selected(p(C), true).unwrap();
    f.set_cidr_view(vec![
        ("10.32.0.0/13".parse().unwrap(), p(A)),
        ("10.40.0.0/13".parse().unwrap(), p(B)),
        ("10.48.0.0/13".parse().unwrap(), p(C)),
    ]);
    f.add_local_destination("10.32.0.0/13".parse().unwrap(), "vethwe-datapath");
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let macs = [
        MAC_A1,
        MAC_B1,
        BCAST,
        MacAddr([0; 6]),
        MacAddr([2, 7, 7, 7, 7, 7]),
    ];
    let mut flows = 0;
    for round in 0..3000u32 {
        let r = next();
        let src = macs[(r % 5) as usize];
        let dst = macs[((r >> 8) % 5) as usize];
        let port = ((r >> 16) % 4) as u32;
        let mut pkt = frame(src, dst);
        pkt.truncate(((r >> 24) % 80) as usize);
        let now = t0 + Duration::from_millis(u64::from(round) * 50);
        match (r >> 32) % 4 {
            0 => {
                let id = (r >> 40) & 0xff_ffff;
                f.handle_miss(pkt, &tunnel_key(id % 0x4000, ip(2), src, dst), now);
            }
            1 => f.inject(p(1 + (r >> 40) % 0xd), p(A), pkt, now),
            2 => f.handle_miss(pkt, &FlowKey::new().with(KeyAttr::InPort(port)), now),
            _ => f.handle_miss(pkt, &local_key(port, src, dst), now),
        }
        if round % 500 == 0 {
            f.poll(now);
        }
        for o in ops(&mut f) {
            if let DpOp::CreateFlow(spec) = o {
                spec.validate().unwrap();
                flows += 1;
            }
        }
    }
    assert!(flows > 100, "only {flows} flows");
}

#[test]
fn proactive_flows_leave_group_macs_alone() {
    let (key, mask) = super::flows::prefix_match(1, "10.40.0.0/13".parse().unwrap());
    let eth = |k: &FlowKey| k.ethernet().unwrap();
    assert_eq!(eth(&mask).dst, MacAddr([1, 0, 0, 0, 0, 0]));
    assert_eq!(eth(&mask).src, MacAddr([0; 6]));
    // Masked, a broadcast destination differs from the key's; a unicast one
    // does not.
    let matches = |dst: MacAddr| dst.0[0] & eth(&mask).dst.0[0] == eth(&key).dst.0[0];
    assert!(matches(MAC_B1));
    assert!(!matches(BCAST));
}

/// A peer whose connection offers only the sleeve (e.g. a router in
/// Bridge mode): frames to it leave by the sleeve, never by the tunnel,
/// and no proactive flow points at it; ICMP made here for a local sender
/// goes to its port without teaching the MAC table anything.
#[test]
fn sleeve_only_peer_and_local_icmp() {
    let t0 = Instant::now();
    let mut f = setup(t0);
    f.set_topology(topology(true));
    f.add_sleeve_connection(p(C));
    f.set_cidr_view(vec![
        ("10.32.0.0/13".parse().unwrap(), p(B)),
        ("10.40.0.0/13".parse().unwrap(), p(C)),
    ]);
    let o = ops(&mut f);
    let egress: Vec<_> = created(&o)
        .into_iter()
        .filter(|s| s.actions.len() == 2)
        .collect();
    assert_eq!(
        egress.len(),
        2,
        "one egress flow per local port, for B only"
    );
    // A learns a local MAC; a frame to C's container goes by the sleeve.
    f.handle_miss(frame(MAC_A1, BCAST), &local_key(BRIDGE, MAC_A1, BCAST), t0);
    let o = f.drain_outputs();
    assert!(
        o.iter()
            .any(|x| matches!(x, Output::Sleeve { next_hop, .. } if *next_hop == p(C))),
        "the broadcast is flooded to C by the sleeve: {o:?}"
    );
    let mac_c1 = MacAddr([2, 0, 0, 0, 0xc, 1]);
    f.inject(p(C), p(A), frame(mac_c1, MAC_A1), t0);
    f.drain_outputs();
    f.handle_miss(
        frame(MAC_A1, mac_c1),
        &local_key(BRIDGE, MAC_A1, mac_c1),
        t0,
    );
    let o = f.drain_outputs();
    assert_eq!(
        o,
        vec![Output::Sleeve {
            next_hop: p(C),
            src: p(A),
            dst: p(C),
            frame: frame(MAC_A1, mac_c1),
        }]
    );
    // ICMP back to A1 from "C1" (the frame the sleeve refused): delivered
    // to A1's port; C1 stays where it was learnt.
    f.deliver_local(frame(mac_c1, MAC_A1));
    let o = ops(&mut f);
    assert_eq!(executed(&o), vec![&vec![Action::Output(BRIDGE)]]);
    assert_eq!(f.mac_location(mac_c1), Some(Location::Peer(p(C))));
    // The connection goes: nothing reaches C any more.
    f.remove_connection(p(C));
    f.drain_outputs();
    f.handle_miss(
        frame(MAC_A1, mac_c1),
        &local_key(BRIDGE, MAC_A1, mac_c1),
        t0,
    );
    let o = f.drain_outputs();
    assert!(
        !o.iter().any(|x| matches!(x, Output::Sleeve { .. })),
        "{o:?}"
    );
}
