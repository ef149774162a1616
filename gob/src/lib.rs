//! Go's `encoding/gob` for the values Weave Net 2.8.1 exchanges.
//!
//! Two layers:
//!
//! - A general codec following Go's gob format: [`Encoder`] writes a stream
//!   (type descriptors once per encoder, before the first value of each
//!   type, with ids from 65 handed out as a fresh Go process does), and
//!   [`Decoder`] reads one from a byte slice into dynamic [`Value`]s or into
//!   typed values, matching struct fields by name like Go. Decoding never
//!   panics: lengths, nesting and value counts are bounded ([`DecodeLimits`])
//!   and every failure is a [`DecodeError`].
//! - Typed values: the [`Gob`] trait (a Go type description plus conversion
//!   to and from [`Value`]), implemented for the basic Go types, `Vec`,
//!   `BTreeMap`, [`Bytes`], and for every Weave wire type in [`weave`]:
//!   - Module [`weave::mesh`]: [`PeerName`](weave::mesh::PeerName),
//!     [`PeerUid`](weave::mesh::PeerUid), [`PeerShortId`](weave::mesh::PeerShortId),
//!     [`Features`](weave::mesh::Features) with
//!     [`encode_features`](weave::mesh::encode_features) /
//!     [`decode_features`](weave::mesh::decode_features),
//!     [`GossipEnvelope`](weave::mesh::GossipEnvelope) with
//!     [`GossipKind`](weave::mesh::GossipKind),
//!     [`PeerSummary`](weave::mesh::PeerSummary),
//!     [`ConnectionSummary`](weave::mesh::ConnectionSummary),
//!     [`PeerUpdate`](weave::mesh::PeerUpdate) with
//!     [`encode_topology`](weave::mesh::encode_topology) /
//!     [`decode_topology`](weave::mesh::decode_topology).
//!   - Module [`weave::ipam`]: [`Address`](weave::ipam::Address),
//!     [`Range`](weave::ipam::Range), [`Entry`](weave::ipam::Entry),
//!     [`Ring`](weave::ipam::Ring), [`NodeId`](weave::ipam::NodeId),
//!     [`ProposalId`](weave::ipam::ProposalId),
//!     [`AcceptedValue`](weave::ipam::AcceptedValue),
//!     [`NodeClaims`](weave::ipam::NodeClaims),
//!     [`PaxosClaims`](weave::ipam::PaxosClaims),
//!     [`GossipState`](weave::ipam::GossipState) and
//!     [`IpamUnicast`](weave::ipam::IpamUnicast).
//!   - Module [`weave::dns`]: [`DnsEntry`](weave::dns::DnsEntry),
//!     [`DnsGossipData`](weave::dns::DnsGossipData).
//!
//! The bytes are checked against fixtures written by Go's own encoder
//! (`gob/fixtures-gen/`, output in `gob/tests/fixtures/`).
//!
//! # Example
//!
//! ```
//! use weave_gob::weave::ipam::{Address, Range};
//! use weave_gob::weave::mesh::{GossipEnvelope, GossipKind, PeerName};
//! use weave_gob::{Decoder, Encoder, Value};
//!
//! // A typed value, to bytes and back.
//! let r = Range { start: Address(0x0a20_0000), end: Address(0x0a30_0000) };
//! let bytes = r.to_gob_bytes();
//! assert_eq!(Range::from_gob_bytes(&bytes).unwrap(), r);
//!
//! // A gossip envelope, as mesh writes it for a unicast message.
//! let env = GossipEnvelope {
//!     channel: "IPallocation".into(),
//!     source: "00:00:00:00:00:01".parse().unwrap(),
//!     destination: Some(PeerName(2)),
//!     payload: r.to_gob_bytes(),
//! };
//! let wire = env.encode();
//! assert_eq!(GossipEnvelope::decode(GossipKind::Unicast, &wire).unwrap(), env);
//!
//! // Several values on one stream; the Range descriptor is sent once.
//! let mut enc = Encoder::new();
//! enc.encode(&r).unwrap();
//! enc.encode(&Range::default()).unwrap();
//! let stream = enc.into_bytes();
//! let mut dec = Decoder::new(&stream);
//! assert_eq!(dec.decode::<Range>().unwrap(), r);
//! // Dynamic decoding: absent (zero) fields are simply not there.
//! assert_eq!(dec.next_value().unwrap(), Some(Value::Struct(Default::default())));
//! assert_eq!(dec.next_value().unwrap(), None);
//! ```

pub mod decoder;
pub mod encoder;
pub mod error;
pub mod fuzz;
pub mod typed;
pub mod types;
pub mod value;
pub mod weave;
pub mod wire;

pub use decoder::{DecodeLimits, Decoder, from_bytes};
pub use encoder::{Encoder, to_bytes};
pub use error::{DecodeError, EncodeError, ValueError};
pub use fuzz::fuzz_decode;
pub use typed::{Bytes, Gob};
pub use types::{Field, GoType, TypeId, WireType};
pub use value::{StructValue, Value};

/// Valid streams used as seeds by the fuzz test.
#[cfg(test)]
pub(crate) fn fixtures_for_fuzzing() -> Vec<Vec<u8>> {
    use weave::ipam::{GossipState, Range, Ring};
    use weave::mesh::{ConnectionSummary, PeerSummary, PeerUpdate};
    let mut f = Features::new();
    f.insert("Name".into(), "00:00:00:00:00:01".into());
    f.insert("UID".into(), "12345".into());
    let go = |b: &[u8]| b.to_vec();
    vec![
        go(include_bytes!("../tests/fixtures/gossip_state_paxos.gob")),
        go(include_bytes!("../tests/fixtures/stream_mixed.gob")),
        go(include_bytes!("../tests/fixtures/all_kinds.gob")),
        go(include_bytes!("../tests/fixtures/topology_two_peers.gob")),
        go(include_bytes!("../tests/fixtures/recursive_tree.gob")),
        go(include_bytes!("../tests/fixtures/opaque_time.gob")),
        weave::mesh::encode_features(&f),
        weave::mesh::encode_topology(&[PeerUpdate {
            summary: PeerSummary {
                name_byte: vec![0, 0, 0, 0, 0, 1],
                nick_name: "a".into(),
                version: 3,
                has_short_id: true,
                ..Default::default()
            },
            connections: vec![ConnectionSummary {
                name_byte: vec![0, 0, 0, 0, 0, 2],
                remote_tcp_addr: "10.0.0.2:6783".into(),
                outbound: true,
                established: true,
            }],
        }]),
        Range {
            start: weave::ipam::Address(1),
            end: weave::ipam::Address(300),
        }
        .to_gob_bytes(),
        GossipState {
            now: -5,
            paxos: Some(Default::default()),
            ring: Some(Ring {
                entries: vec![Default::default()],
                seeds: vec![weave::mesh::PeerName(7)],
                ..Default::default()
            }),
            ..Default::default()
        }
        .to_gob_bytes(),
    ]
}

#[cfg(test)]
use weave::mesh::Features;
