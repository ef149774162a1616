//! Seeded random values of every Weave wire type: typed encode then decode
//! gives the value back, and dynamic decode + re-encode gives the bytes back.

use std::collections::BTreeMap;

use weave_gob::weave::ipam::{
    AcceptedValue, Address, Entry, GossipState, IpamUnicast, NodeClaims, NodeId, ProposalId, Range,
    Ring,
};
use weave_gob::weave::mesh::{
    self, ConnectionSummary, Features, GossipEnvelope, PeerName, PeerShortId, PeerSummary, PeerUid,
    PeerUpdate,
};
use weave_gob::{Decoder, Encoder, Gob};

/// xorshift64*: deterministic, no dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Often zero or small, sometimes huge: exercises omitted fields and
    /// every integer width.
    fn num(&mut self) -> u64 {
        match self.below(4) {
            0 => 0,
            1 => self.below(200),
            2 => self.next() >> (self.below(64)),
            _ => self.next(),
        }
    }
    fn text(&mut self) -> String {
        let n = self.below(12) as usize;
        (0..n)
            .map(|_| char::from(b"abc-_.:0123\xc3"[self.below(12) as usize]))
            .collect()
    }
    fn bytes(&mut self) -> Vec<u8> {
        let n = self.below(8) as usize;
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn peer(&mut self) -> PeerName {
        PeerName(self.num() & 0xffff_ffff_ffff)
    }
    fn node(&mut self) -> NodeId {
        NodeId {
            name: self.peer(),
            uid: PeerUid(self.num()),
        }
    }
    fn proposal(&mut self) -> ProposalId {
        ProposalId {
            round: self.num(),
            proposer: self.node(),
        }
    }
    fn peers(&mut self) -> Vec<PeerName> {
        (0..self.below(4)).map(|_| self.peer()).collect()
    }
    fn ring(&mut self) -> Ring {
        Ring {
            start: Address(self.num() as u32),
            end: Address(self.num() as u32),
            peer: self.peer(),
            entries: (0..self.below(5))
                .map(|_| Entry {
                    token: Address(self.num() as u32),
                    peer: self.peer(),
                    version: self.num() as u32,
                    free: self.num() as u32,
                })
                .collect(),
            seeds: self.peers(),
        }
    }
    fn gossip_state(&mut self) -> GossipState {
        let paxos = match self.below(3) {
            0 => None,
            _ => Some(
                (0..self.below(4))
                    .map(|_| {
                        let claims = NodeClaims {
                            promise: self.proposal(),
                            accepted: self.proposal(),
                            accepted_val: AcceptedValue {
                                value: self.peers(),
                                origin: self.proposal(),
                            },
                        };
                        (self.node(), claims)
                    })
                    .collect::<BTreeMap<_, _>>(),
            ),
        };
        GossipState {
            now: self.num() as i64,
            nicknames: (0..self.below(4))
                .map(|_| (self.peer(), self.text()))
                .collect(),
            paxos,
            ring: if self.below(2) == 0 {
                None
            } else {
                Some(self.ring())
            },
        }
    }
    fn peer_update(&mut self) -> PeerUpdate {
        PeerUpdate {
            summary: PeerSummary {
                name_byte: self.bytes(),
                nick_name: self.text(),
                uid: PeerUid(self.num()),
                version: self.num(),
                short_id: PeerShortId(self.num() as u16),
                has_short_id: self.below(2) == 1,
            },
            connections: (0..self.below(4))
                .map(|_| ConnectionSummary {
                    name_byte: self.bytes(),
                    remote_tcp_addr: self.text(),
                    outbound: self.below(2) == 1,
                    established: self.below(2) == 1,
                })
                .collect(),
        }
    }
}

fn dynamic_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut dec = Decoder::new(bytes);
    let mut enc = Encoder::new();
    while let Some((ty, v)) = dec.next_dynamic().unwrap() {
        enc.encode_value(&ty, &v).unwrap();
    }
    enc.into_bytes()
}

#[test]
fn random_weave_values_round_trip() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for _ in 0..500 {
        let g = rng.gossip_state();
        let b = g.to_gob_bytes();
        assert_eq!(GossipState::from_gob_bytes(&b).unwrap(), g);
        assert_eq!(dynamic_bytes(&b), b);

        let peers: Vec<PeerUpdate> = (0..rng.below(4)).map(|_| rng.peer_update()).collect();
        let b = mesh::encode_topology(&peers);
        assert_eq!(mesh::decode_topology(&b).unwrap(), peers);
        assert_eq!(dynamic_bytes(&b), b);

        let f: Features = (0..rng.below(9))
            .map(|_| (rng.text(), rng.text()))
            .collect();
        let b = mesh::encode_features(&f);
        assert_eq!(mesh::decode_features(&b).unwrap(), f);

        let env = GossipEnvelope {
            channel: rng.text(),
            source: rng.peer(),
            destination: if rng.below(2) == 0 {
                None
            } else {
                Some(rng.peer())
            },
            payload: rng.bytes(),
        };
        assert_eq!(
            GossipEnvelope::decode(env.kind(), &env.encode()).unwrap(),
            env
        );

        let r = Range {
            start: Address(rng.num() as u32),
            end: Address(rng.num() as u32),
        };
        for m in [
            IpamUnicast::SpaceRequest(r),
            IpamUnicast::SpaceRequestDenied(r),
            IpamUnicast::RingUpdate(g.clone()),
        ] {
            assert_eq!(IpamUnicast::decode(&m.encode()).unwrap(), m);
        }
    }
}

#[test]
fn many_values_on_one_stream() {
    let mut rng = Rng(42);
    let states: Vec<GossipState> = (0..50).map(|_| rng.gossip_state()).collect();
    let mut enc = Encoder::new();
    for s in &states {
        enc.encode(s).unwrap();
    }
    let b = enc.into_bytes();
    // Descriptors once: the name appears a single time however many values.
    assert_eq!(b.windows(11).filter(|w| w == b"gossipState").count(), 1);
    let mut dec = Decoder::new(&b);
    for s in &states {
        assert_eq!(&dec.decode::<GossipState>().unwrap(), s);
    }
    assert!(dec.next_value().unwrap().is_none());
    assert_eq!(dynamic_bytes(&b), b);
}

#[test]
fn go_types_are_stable_descriptions() {
    // The structural identity used for type ids: equal descriptions, one id.
    assert_eq!(NodeId::go_type(), NodeId::go_type());
    assert_ne!(Range::go_type(), Ring::go_type());
    assert_eq!(
        Ring::go_type().to_string(),
        "Ring struct { Start uint; End uint; Peer uint; \
         Entries entries []struct { Token uint; Peer uint; Version uint; Free uint }; \
         Seeds []mesh.PeerName []uint }"
    );
}
