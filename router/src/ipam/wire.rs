//! The `IPallocation` channel's bytes: the allocator's plain types
//! converted to and from the gob types of `weave-gob` (Weave's
//! `gossipState`, `Range`, and the tagged unicast messages).

use std::collections::BTreeMap;
use std::time::Duration;

use weave_gob::DecodeError;
use weave_gob::weave::ipam as gob;
use weave_gob::weave::mesh::{PeerName as GobPeerName, PeerUid};

use super::address::{Address, Range};
use super::messages::{GossipState, Input, UnicastMsg};
use super::paxos::{AcceptedValue, NodeClaims, NodeId, PaxosState, ProposalId};
use super::peer::PeerName;
use super::ring::{Entry, Ring};

/// A payload on the `IPallocation` channel that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The gob bytes are malformed or of the wrong type.
    #[error("bad IPAM payload: {0}")]
    Decode(#[from] DecodeError),
}

fn peer_to(p: PeerName) -> GobPeerName {
    GobPeerName(p.0)
}

fn peer_from(p: GobPeerName) -> PeerName {
    PeerName(p.0)
}

fn range_to(r: Range) -> gob::Range {
    gob::Range {
        start: gob::Address(r.start.0),
        end: gob::Address(r.end.0),
    }
}

fn range_from(r: gob::Range) -> Range {
    Range::new(Address(r.start.0), Address(r.end.0))
}

fn node_to(n: NodeId) -> gob::NodeId {
    gob::NodeId {
        name: peer_to(n.name),
        uid: PeerUid(n.uid),
    }
}

fn node_from(n: gob::NodeId) -> NodeId {
    NodeId {
        name: peer_from(n.name),
        uid: n.uid.0,
    }
}

fn proposal_to(p: ProposalId) -> gob::ProposalId {
    gob::ProposalId {
        round: p.round,
        proposer: node_to(p.proposer),
    }
}

fn proposal_from(p: gob::ProposalId) -> ProposalId {
    ProposalId {
        round: p.round,
        proposer: node_from(p.proposer),
    }
}

fn claims_to(c: &NodeClaims) -> gob::NodeClaims {
    gob::NodeClaims {
        promise: proposal_to(c.promise),
        accepted: proposal_to(c.accepted),
        accepted_val: gob::AcceptedValue {
            value: c.accepted_val.value.iter().copied().map(peer_to).collect(),
            origin: proposal_to(c.accepted_val.origin),
        },
    }
}

fn claims_from(c: gob::NodeClaims) -> NodeClaims {
    NodeClaims {
        promise: proposal_from(c.promise),
        accepted: proposal_from(c.accepted),
        accepted_val: AcceptedValue {
            value: c.accepted_val.value.into_iter().map(peer_from).collect(),
            origin: proposal_from(c.accepted_val.origin),
        },
    }
}

/// Our ring in Weave's wire form.
pub fn ring_to_gob(r: &Ring) -> gob::Ring {
    gob::Ring {
        start: gob::Address(r.start.0),
        end: gob::Address(r.end.0),
        peer: peer_to(r.peer),
        entries: r
            .entries
            .iter()
            .map(|e| gob::Entry {
                token: gob::Address(e.token.0),
                peer: peer_to(e.peer),
                version: e.version,
                free: e.free,
            })
            .collect(),
        seeds: r.seeds.iter().copied().map(peer_to).collect(),
    }
}

/// A received ring (not validated here: merging checks it).
pub fn ring_from_gob(r: gob::Ring) -> Ring {
    Ring {
        start: Address(r.start.0),
        end: Address(r.end.0),
        peer: peer_from(r.peer),
        entries: r
            .entries
            .into_iter()
            .map(|e| Entry {
                token: Address(e.token.0),
                peer: peer_from(e.peer),
                version: e.version,
                free: e.free,
            })
            .collect(),
        seeds: r.seeds.into_iter().map(peer_from).collect(),
    }
}

/// Our gossip state in Weave's wire form.
pub fn gossip_to_gob(s: &GossipState) -> gob::GossipState {
    gob::GossipState {
        now: s.now,
        nicknames: s
            .nicknames
            .iter()
            .map(|(p, n)| (peer_to(*p), n.clone()))
            .collect(),
        paxos: s.paxos.as_ref().map(|p| {
            p.iter()
                .map(|(id, c)| (node_to(*id), claims_to(c)))
                .collect::<BTreeMap<_, _>>()
        }),
        ring: s.ring.as_ref().map(ring_to_gob),
    }
}

/// A received gossip state.
pub fn gossip_from_gob(s: gob::GossipState) -> GossipState {
    GossipState {
        now: s.now,
        nicknames: s
            .nicknames
            .into_iter()
            .map(|(p, n)| (peer_from(p), n))
            .collect(),
        paxos: s.paxos.map(|p| {
            p.into_iter()
                .map(|(id, c)| (node_from(id), claims_from(c)))
                .collect::<PaxosState>()
        }),
        ring: s.ring.map(ring_from_gob),
    }
}

/// Bytes for a gossip broadcast or periodic gossip.
pub fn encode_gossip(s: &GossipState) -> Vec<u8> {
    gossip_to_gob(s).to_gob_bytes()
}

/// Reads a gossip payload.
pub fn decode_gossip(bytes: &[u8]) -> Result<GossipState, WireError> {
    Ok(gossip_from_gob(gob::GossipState::from_gob_bytes(bytes)?))
}

/// Bytes for a unicast: the tag byte, then the gob body.
pub fn encode_unicast(m: &UnicastMsg) -> Vec<u8> {
    let u = match m {
        UnicastMsg::SpaceRequest(r) => gob::IpamUnicast::SpaceRequest(range_to(*r)),
        UnicastMsg::RingUpdate(s) => gob::IpamUnicast::RingUpdate(gossip_to_gob(s)),
        UnicastMsg::SpaceRequestDenied(r) => gob::IpamUnicast::SpaceRequestDenied(range_to(*r)),
    };
    u.encode()
}

/// Reads a unicast.
pub fn decode_unicast(bytes: &[u8]) -> Result<UnicastMsg, WireError> {
    Ok(match gob::IpamUnicast::decode(bytes)? {
        gob::IpamUnicast::SpaceRequest(r) => UnicastMsg::SpaceRequest(range_from(r)),
        gob::IpamUnicast::RingUpdate(s) => UnicastMsg::RingUpdate(gossip_from_gob(s)),
        gob::IpamUnicast::SpaceRequestDenied(r) => UnicastMsg::SpaceRequestDenied(range_from(r)),
    })
}

/// Fuzz target body: arbitrary bytes as a gossip broadcast and as a
/// unicast, fed to a live allocator. Must never panic.
pub fn fuzz_ipam_payload(data: &[u8]) {
    use super::address::Cidr;
    use super::allocator::{Allocator, Config, InitMode};
    use super::messages::Persisted;

    let universe = Cidr {
        addr: Address(0x0a20_0000),
        prefix_len: 24,
    };
    let modes = [
        InitMode::Seed(vec![PeerName(1), PeerName(2)]),
        InitMode::Consensus {
            peer_count: Some(3),
        },
    ];
    for mode in modes {
        let cfg = Config {
            our_name: PeerName(1),
            our_uid: 1,
            our_nickname: "fuzz".into(),
            universe,
            mode,
            target_count: 1,
            pre_claims: Vec::new(),
            rng_seed: 1,
        };
        let Ok((mut a, _)) = Allocator::new(cfg, Persisted::default(), Duration::ZERO) else {
            return;
        };
        let sender = PeerName(2);
        if let Ok(state) = decode_gossip(data) {
            a.handle(Duration::ZERO, Input::GossipBroadcast { sender, state });
        }
        if let Ok(msg) = decode_unicast(data) {
            a.handle(Duration::ZERO, Input::Unicast { sender, msg });
        }
        a.handle(
            Duration::from_secs(5),
            Input::Allocate {
                op: super::messages::OpId(1),
                ident: "x".into(),
                subnet: universe,
                is_container: true,
            },
        );
        a.handle(Duration::from_secs(10), Input::Tick);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::peer::SeededRng;

    fn sample_state() -> GossipState {
        let mut ring = Ring::new(Address(0x0a20_0000), Address(0x0a30_0000), PeerName(1))
            .unwrap_or_else(|e| panic!("{e}"));
        let _ = ring.claim_for_peers(&[PeerName(1), PeerName(2)]);
        let mut paxos = PaxosState::new();
        paxos.insert(
            NodeId {
                name: PeerName(1),
                uid: 99,
            },
            NodeClaims {
                promise: ProposalId {
                    round: 2,
                    proposer: NodeId {
                        name: PeerName(1),
                        uid: 99,
                    },
                },
                ..NodeClaims::default()
            },
        );
        let mut nicknames = BTreeMap::new();
        nicknames.insert(PeerName(1), "one".to_string());
        GossipState {
            now: 1_700_000_000,
            nicknames,
            paxos: Some(paxos),
            ring: Some(ring),
        }
    }

    #[test]
    fn gossip_and_unicasts_round_trip_through_gob() {
        let s = sample_state();
        let back = decode_gossip(&encode_gossip(&s));
        assert_eq!(back.as_ref().ok(), Some(&s));
        for m in [
            UnicastMsg::SpaceRequest(Range::new(Address(1), Address(9))),
            UnicastMsg::SpaceRequestDenied(Range::new(Address(1), Address(2))),
            UnicastMsg::RingUpdate(s.clone()),
        ] {
            let bytes = encode_unicast(&m);
            assert_eq!(bytes.first().copied(), Some(m.tag()));
            assert_eq!(decode_unicast(&bytes).ok(), Some(m));
        }
        assert!(decode_unicast(&[]).is_err());
        assert!(decode_unicast(&[7, 1, 2]).is_err());
    }

    #[test]
    fn fuzz_payloads_never_panic() {
        let mut rng = SeededRng::new(0xfeed);
        let good = encode_gossip(&sample_state());
        let uni = encode_unicast(&UnicastMsg::RingUpdate(sample_state()));
        for i in 0..3000 {
            let mut data = if i % 3 == 0 {
                good.clone()
            } else if i % 3 == 1 {
                uni.clone()
            } else {
                (0..rng.below(64)).map(|_| rng.next_u64() as u8).collect()
            };
            // Flip a few bytes of the valid encodings.
            for _ in 0..rng.below(4) {
                if !data.is_empty() {
                    let k = rng.below(data.len() as u64) as usize;
                    data[k] ^= rng.next_u64() as u8;
                }
            }
            fuzz_ipam_payload(&data);
        }
    }

    #[test]
    fn arbitrary_rings_from_peers_never_panic() {
        // Structured fuzzing: well-typed but nonsensical rings and Paxos
        // claims, merged into a live allocator.
        let mut rng = SeededRng::new(5);
        for _ in 0..3000 {
            let mut entries: Vec<Entry> = (0..rng.below(6))
                .map(|_| Entry {
                    token: Address(0x0a20_0000 + rng.below(300) as u32),
                    peer: PeerName(rng.below(4)),
                    version: rng.next_u64() as u32,
                    free: rng.below(400) as u32,
                })
                .collect();
            if rng.below(2) == 0 {
                entries.sort_by_key(|e| e.token);
                entries.dedup_by_key(|e| e.token);
            }
            let ring = Ring {
                start: Address(0x0a20_0000 + rng.below(2) as u32),
                end: Address(0x0a20_0100 - rng.below(2) as u32),
                peer: PeerName(2),
                entries,
                seeds: (0..rng.below(3)).map(|k| PeerName(k + 1)).collect(),
            };
            let mut paxos = PaxosState::new();
            let id = NodeId {
                name: PeerName(rng.below(3)),
                uid: rng.next_u64(),
            };
            let pid = ProposalId {
                round: if rng.below(2) == 0 {
                    u64::MAX
                } else {
                    rng.below(5)
                },
                proposer: id,
            };
            paxos.insert(
                id,
                NodeClaims {
                    promise: pid,
                    accepted: pid,
                    accepted_val: AcceptedValue {
                        value: vec![PeerName(rng.below(3))],
                        origin: pid,
                    },
                },
            );
            let state = GossipState {
                now: 0,
                nicknames: BTreeMap::new(),
                paxos: (rng.below(2) == 0).then_some(paxos),
                ring: (rng.below(2) == 0).then_some(ring),
            };
            fuzz_ipam_payload(&encode_gossip(&state));
        }
    }
}
