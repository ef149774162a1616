//! The mesh library's gob values: the features map sent after the protocol
//! intro, the gossip envelope of every gossip message, and the `topology`
//! channel's payload.
//!
//! Go facts (weaveworks/mesh): a peer name is a `uint64` (the MAC flavour);
//! gossip messages are several gob values written one after the other on a
//! single encoder (channel name, source peer, the destination for unicast,
//! then the payload bytes); a topology update is, per peer, a `peerSummary`
//! value followed by a `[]connectionSummary` value, on one encoder.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::decoder::{Decoder, from_bytes};
use crate::encoder::{Encoder, to_bytes};
use crate::error::{DecodeError, ValueError};
use crate::typed::{Bytes, Gob};
use crate::types::{Field, GoType};
use crate::value::{StructValue, Value};

/// A peer's name: 48 bits written as a MAC address (Go `mesh.PeerName`, a `uint64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PeerName(pub u64);

impl PeerName {
    /// The name from its binary form (`NameByte`): the bytes big-endian,
    /// as many as given (six for MAC names; extra leading bytes shift out).
    pub fn from_name_bytes(bytes: &[u8]) -> PeerName {
        PeerName(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// The six-byte binary form sent as `NameByte`.
    pub fn to_name_bytes(self) -> Vec<u8> {
        self.0.to_be_bytes()[2..].to_vec()
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0.to_be_bytes();
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[2], b[3], b[4], b[5], b[6], b[7]
        )
    }
}

/// A peer name that is not six colon-separated hex bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid peer name {0:?} (want six hex bytes like 00:00:00:00:00:01)")]
pub struct PeerNameParseError(pub String);

impl FromStr for PeerName {
    type Err = PeerNameParseError;

    /// Parses the full form `aa:bb:cc:dd:ee:ff` (the `::` short forms are
    /// left to the router's flag parsing).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PeerNameParseError(s.to_string());
        let mut n = 0u64;
        let mut parts = 0;
        for p in s.split(':') {
            if p.is_empty() || p.len() > 2 {
                return Err(err());
            }
            n = (n << 8) | u64::from(u8::from_str_radix(p, 16).map_err(|_| err())?);
            parts += 1;
        }
        if parts != 6 {
            return Err(err());
        }
        Ok(PeerName(n))
    }
}

impl Gob for PeerName {
    fn go_type() -> GoType {
        GoType::Uint
    }
    fn to_gob(&self) -> Value {
        Value::Uint(self.0)
    }
    fn from_gob(value: Value) -> Result<Self, ValueError> {
        u64::from_gob(value).map(PeerName)
    }
}

/// A peer's random per-start identifier (Go `mesh.PeerUID`, a `uint64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PeerUid(pub u64);

impl Gob for PeerUid {
    fn go_type() -> GoType {
        GoType::Uint
    }
    fn to_gob(&self) -> Value {
        Value::Uint(self.0)
    }
    fn from_gob(value: Value) -> Result<Self, ValueError> {
        u64::from_gob(value).map(PeerUid)
    }
}

/// A peer's 12-bit short id (Go `mesh.PeerShortID`, a `uint16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PeerShortId(pub u16);

impl Gob for PeerShortId {
    fn go_type() -> GoType {
        GoType::Uint
    }
    fn to_gob(&self) -> Value {
        Value::Uint(u64::from(self.0))
    }
    fn from_gob(value: Value) -> Result<Self, ValueError> {
        u16::from_gob(value).map(PeerShortId)
    }
}

/// The connection features map (`map[string]string`: PeerNameFlavour, Name,
/// NickName, ShortID, UID, ConnID, Trusted, Overlays, ...).
pub type Features = BTreeMap<String, String>;

/// Encodes the features map as the first message of a version-2 connection
/// (one fresh encoder, one value). Entries are written in key order.
pub fn encode_features(features: &Features) -> Vec<u8> {
    // A map of strings always encodes.
    to_bytes(features).unwrap_or_default()
}

/// Decodes a features map.
pub fn decode_features(bytes: &[u8]) -> Result<Features, DecodeError> {
    from_bytes(bytes)
}

/// What a peer says about itself in topology gossip (Go `peerSummary`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerSummary {
    /// `NameByte`: the peer name's binary form.
    pub name_byte: Vec<u8>,
    /// `NickName`.
    pub nick_name: String,
    /// `UID`.
    pub uid: PeerUid,
    /// `Version`: bumped on every change of the peer's connections.
    pub version: u64,
    /// `ShortID`.
    pub short_id: PeerShortId,
    /// `HasShortID`.
    pub has_short_id: bool,
}

impl Gob for PeerSummary {
    fn go_type() -> GoType {
        GoType::structure(
            "peerSummary",
            vec![
                Field::new("NameByte", GoType::Bytes),
                Field::new("NickName", GoType::String),
                Field::new("UID", GoType::Uint),
                Field::new("Version", GoType::Uint),
                Field::new("ShortID", GoType::Uint),
                Field::new("HasShortID", GoType::Bool),
            ],
        )
    }
    fn to_gob(&self) -> Value {
        Value::Struct(
            StructValue::new()
                .with("NameByte", Value::Bytes(self.name_byte.clone()))
                .with("NickName", Value::String(self.nick_name.clone()))
                .with("UID", self.uid.to_gob())
                .with("Version", Value::Uint(self.version))
                .with("ShortID", self.short_id.to_gob())
                .with("HasShortID", Value::Bool(self.has_short_id)),
        )
    }
    fn from_gob(value: Value) -> Result<Self, ValueError> {
        let mut s = value.into_struct()?;
        Ok(PeerSummary {
            name_byte: s.field::<Bytes>("NameByte")?.0,
            nick_name: s.field("NickName")?,
            uid: s.field("UID")?,
            version: s.field("Version")?,
            short_id: s.field("ShortID")?,
            has_short_id: s.field("HasShortID")?,
        })
    }
}

/// One connection of a peer in topology gossip (Go `connectionSummary`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectionSummary {
    /// `NameByte`: the remote peer's name, binary form.
    pub name_byte: Vec<u8>,
    /// `RemoteTCPAddr`: `ip:port` of the remote end.
    pub remote_tcp_addr: String,
    /// `Outbound`: we dialled it.
    pub outbound: bool,
    /// `Established`: the connection is up.
    pub established: bool,
}

impl Gob for ConnectionSummary {
    fn go_type() -> GoType {
        GoType::structure(
            "connectionSummary",
            vec![
                Field::new("NameByte", GoType::Bytes),
                Field::new("RemoteTCPAddr", GoType::String),
                Field::new("Outbound", GoType::Bool),
                Field::new("Established", GoType::Bool),
            ],
        )
    }
    fn to_gob(&self) -> Value {
        Value::Struct(
            StructValue::new()
                .with("NameByte", Value::Bytes(self.name_byte.clone()))
                .with("RemoteTCPAddr", Value::String(self.remote_tcp_addr.clone()))
                .with("Outbound", Value::Bool(self.outbound))
                .with("Established", Value::Bool(self.established)),
        )
    }
    fn from_gob(value: Value) -> Result<Self, ValueError> {
        let mut s = value.into_struct()?;
        Ok(ConnectionSummary {
            name_byte: s.field::<Bytes>("NameByte")?.0,
            remote_tcp_addr: s.field("RemoteTCPAddr")?,
            outbound: s.field("Outbound")?,
            established: s.field("Established")?,
        })
    }
}

/// One peer's entry in a topology update: its summary and its connections.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerUpdate {
    /// The peer itself.
    pub summary: PeerSummary,
    /// Its connections (the Go side sends `[]connectionSummary{}`, possibly empty).
    pub connections: Vec<ConnectionSummary>,
}

/// Encodes a `topology` gossip payload: for each peer, a `peerSummary`
/// value then a `[]connectionSummary` value, all on one encoder.
pub fn encode_topology(peers: &[PeerUpdate]) -> Vec<u8> {
    let mut enc = Encoder::new();
    for p in peers {
        // These types always encode; an error here would be a bug in their definitions.
        let _ = enc.encode(&p.summary);
        let _ = enc.encode(&p.connections);
    }
    enc.into_bytes()
}

/// Decodes a `topology` gossip payload. Like mesh, a trailing summary whose
/// connection list is missing (input ends) is dropped rather than rejected.
pub fn decode_topology(bytes: &[u8]) -> Result<Vec<PeerUpdate>, DecodeError> {
    let mut dec = Decoder::new(bytes);
    let mut out = Vec::new();
    while let Some(summary) = dec.next_typed::<PeerSummary>()? {
        match dec.next_typed::<Vec<ConnectionSummary>>()? {
            Some(connections) => out.push(PeerUpdate {
                summary,
                connections,
            }),
            None => break,
        }
    }
    Ok(out)
}

/// Which protocol message carries a gossip envelope; it decides whether a
/// destination is present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GossipKind {
    /// Tag 4, `ProtocolGossip`: to neighbours.
    Gossip,
    /// Tag 5, `ProtocolGossipUnicast`: to one peer, with a destination.
    Unicast,
    /// Tag 6, `ProtocolGossipBroadcast`: to all peers.
    Broadcast,
}

/// The gob part of a gossip message: separate gob values on one encoder —
/// channel name (`string`), source peer (`PeerName`), for unicast the
/// destination peer, then the payload (`[]byte`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GossipEnvelope {
    /// The gossip channel (`topology`, `IPallocation`, `nameserver`, ...).
    pub channel: String,
    /// The originating peer.
    pub source: PeerName,
    /// The destination (unicast only).
    pub destination: Option<PeerName>,
    /// The channel's payload bytes.
    pub payload: Vec<u8>,
}

impl GossipEnvelope {
    /// The message kind this envelope is sent as: unicast when it has a destination.
    pub fn kind(&self) -> GossipKind {
        if self.destination.is_some() {
            GossipKind::Unicast
        } else {
            GossipKind::Gossip
        }
    }

    /// Encodes the envelope (the same bytes for gossip and broadcast; a
    /// destination, when present, is written between source and payload).
    pub fn encode(&self) -> Vec<u8> {
        let mut enc = Encoder::new();
        // Basic types always encode.
        let _ = enc.encode(&self.channel);
        let _ = enc.encode(&self.source);
        if let Some(d) = &self.destination {
            let _ = enc.encode(d);
        }
        let _ = enc.encode(&Bytes(self.payload.clone()));
        enc.into_bytes()
    }

    /// Decodes an envelope of the given kind. Only unicast reads a destination.
    pub fn decode(kind: GossipKind, bytes: &[u8]) -> Result<GossipEnvelope, DecodeError> {
        let mut dec = Decoder::new(bytes);
        let channel = dec.decode::<String>()?;
        let source = dec.decode::<PeerName>()?;
        let destination = match kind {
            GossipKind::Unicast => Some(dec.decode::<PeerName>()?),
            GossipKind::Gossip | GossipKind::Broadcast => None,
        };
        let payload = dec.decode::<Bytes>()?.0;
        Ok(GossipEnvelope {
            channel,
            source,
            destination,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_names_print_and_parse_as_macs() {
        let n: PeerName = "00:11:22:aa:bb:cc".parse().unwrap();
        assert_eq!(n, PeerName(0x0011_22aa_bbcc));
        assert_eq!(n.to_string(), "00:11:22:aa:bb:cc");
        assert_eq!(n.to_name_bytes(), [0x00, 0x11, 0x22, 0xaa, 0xbb, 0xcc]);
        assert_eq!(PeerName::from_name_bytes(&n.to_name_bytes()), n);
        assert!("00:11:22:aa:bb".parse::<PeerName>().is_err());
        assert!("00:11:22:aa:bb:cc:dd".parse::<PeerName>().is_err());
        assert!("zz:11:22:aa:bb:cc".parse::<PeerName>().is_err());
    }

    #[test]
    fn envelope_destination_only_for_unicast() {
        let e = GossipEnvelope {
            channel: "IPallocation".into(),
            source: PeerName(1),
            destination: Some(PeerName(2)),
            payload: vec![1, 2, 3],
        };
        let bytes = e.encode();
        assert_eq!(
            GossipEnvelope::decode(GossipKind::Unicast, &bytes),
            Ok(e.clone())
        );
        // Read as a broadcast, the destination is taken for the payload: a type error.
        assert!(GossipEnvelope::decode(GossipKind::Broadcast, &bytes).is_err());
    }
}
