//! The IP allocator's gob values (Weave `ipam/`): the gossip state carried
//! on the `IPallocation` channel, with either the Paxos claims of the
//! initial election or the ring, and the unicast messages for space
//! requests.
//!
//! Go facts (weaveworks/weave 2.8.1): addresses and counts are `uint32`;
//! ring entries are sent through a slice of pointers, so their struct
//! descriptor has an empty name, and the Paxos node id is first met as a map
//! key, so its descriptor is unnamed too. A unicast message is one tag byte
//! (0 space request, 1 ring update, 2 space request denied) followed by one
//! gob stream (a `Range`, or a `gossipState` for the ring update).

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use crate::decoder::from_bytes;
use crate::encoder::to_bytes;
use crate::error::{DecodeError, ValueError};
use crate::typed::Gob;
use crate::types::{Field, GoType};
use crate::value::{StructValue, Value};
use crate::weave::mesh::{PeerName, PeerUid};

/// An IPv4 address as a number (Go `address.Address`, a `uint32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Address(pub u32);

impl From<Ipv4Addr> for Address {
    fn from(ip: Ipv4Addr) -> Self {
        Address(u32::from(ip))
    }
}

impl From<Address> for Ipv4Addr {
    fn from(a: Address) -> Self {
        Ipv4Addr::from(a.0)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Ipv4Addr::from(self.0).fmt(f)
    }
}

impl Gob for Address {
    fn go_type() -> GoType {
        GoType::Uint
    }
    fn to_gob(&self) -> Value {
        Value::Uint(u64::from(self.0))
    }
    fn from_gob(value: Value) -> Result<Self, ValueError> {
        u32::from_gob(value).map(Address)
    }
}

fn encode_always<T: Gob>(v: &T) -> Vec<u8> {
    // The types in this module always encode; an error would be a bug in
    // their definitions, caught by the fixture tests.
    to_bytes(v).unwrap_or_default()
}

/// A half-open address range `[start, end)` (Go `address.Range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Range {
    /// `Start`: first address.
    pub start: Address,
    /// `End`: one past the last address.
    pub end: Address,
}

impl Range {
    /// The gob bytes of this range alone (one fresh encoder).
    pub fn to_gob_bytes(&self) -> Vec<u8> {
        encode_always(self)
    }

    /// Decodes a range written by one fresh encoder.
    pub fn from_gob_bytes(bytes: &[u8]) -> Result<Range, DecodeError> {
        from_bytes(bytes)
    }
}

impl Gob for Range {
    fn go_type() -> GoType {
        GoType::structure(
            "Range",
            vec![
                Field::new("Start", GoType::Uint),
                Field::new("End", GoType::Uint),
            ],
        )
    }
    fn to_gob(&self) -> Value {
        Value::Struct(
            StructValue::new()
                .with("Start", self.start.to_gob())
                .with("End", self.end.to_gob()),
        )
    }
    fn from_gob(value: Value) -> Result<Self, ValueError> {
        let mut s = value.into_struct()?;
        Ok(Range {
            start: s.field("Start")?,
            end: s.field("End")?,
        })
    }
}

/// One token of the ring (Go `ring.entry`): the range starting at `token`
/// up to the next token belongs to `peer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Entry {
    /// `Token`: first address of the range.
    pub token: Address,
    /// `Peer`: the owner.
    pub peer: PeerName,
    /// `Version`: bumped by the owner on every change.
    pub version: u32,
    /// `Free`: free addresses in the range, as last told by the owner.
    pub free: u32,
}

impl Gob for Entry {
    fn go_type() -> GoType {
        // Unnamed: Go meets this struct as the element of `[]*entry`.
        GoType::structure(
            "",
            vec![
                Field::new("Token", GoType::Uint),
                Field::new("Peer", GoType::Uint),
                Field::new("Version", GoType::Uint),
                Field::new("Free", GoType::Uint),
            ],
        )
    }
    fn to_gob(&self) -> Value {
        Value::Struct(
            StructValue::new()
                .with("Token", self.token.to_gob())
                .with("Peer", self.peer.to_gob())
                .with("Version", Value::Uint(u64::from(self.version)))
                .with("Free", Value::Uint(u64::from(self.free))),
        )
    }
    fn from_gob(value: Value) -> Result<Self, ValueError> {
        let mut s = value.into_struct()?;
        Ok(Entry {
            token: s.field("Token")?,
            peer: s.field("Peer")?,
            version: s.field("Version")?,
            free: s.field("Free")?,
        })
    }
}

/// The ring CRDT as sent (Go `ring.Ring`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ring {
    /// `Start`: first address of the whole allocation range.
    pub start: Address,
    /// `End`: one past the last address.
    pub end: Address,
    /// `Peer`: the peer that holds this copy.
    pub peer: PeerName,
    /// `Entries`: tokens sorted by address.
    pub entries: Vec<Entry>,
    /// `Seeds`: the peers the ring was seeded with.
    pub seeds: Vec<PeerName>,
}

fn peer_names_type(name: &str) -> GoType {
    GoType::slice(name, GoType::Uint)
}

fn peer_names_value(names: &[PeerName]) -> Value {
    Value::Slice(names.iter().map(Gob::to_gob).collect())
}

impl Gob for Ring {
    fn go_type() -> GoType {
        GoType::structure(
            "Ring",
            vec![
                Field::new("Start", GoType::Uint),
                Field::new("End", GoType::Uint),
                Field::new("Peer", GoType::Uint),
                Field::new("Entries", GoType::slice("entries", Entry::go_type())),
                Field::new("Seeds", peer_names_type("[]mesh.PeerName")),
            ],
        )
    }
    fn to_gob(&self) -> Value {
        Value::Struct(
            StructValue::new()
                .with("Start", self.start.to_gob())
                .with("End", self.end.to_gob())
                .with("Peer", self.peer.to_gob())
                .with(
                    "Entries",
                    Value::Slice(self.entries.iter().map(Gob::to_gob).collect()),
                )
                .with("Seeds", peer_names_value(&self.seeds)),
        )
    }
    fn from_gob(value: Value) -> Result<Self, ValueError> {
        let mut s = value.into_struct()?;
        Ok(Ring {
            start: s.field("Start")?,
            end: s.field("End")?,
            peer: s.field("Peer")?,
            entries: s.field("Entries")?,
            seeds: s.field("Seeds")?,
        })
    }
}

/// A Paxos participant (Go `paxos.NodeID`): peer name plus UID, so a
/// restarted peer is a new participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId {
    /// `Name`.
    pub name: PeerName,
    /// `UID`.
    pub uid: PeerUid,
}

impl Gob for NodeId {
    fn go_type() -> GoType {
        // Unnamed: Go first meets it as the key of `paxos.GossipState`.
        GoType::structure(
            "",
            vec![
                Field::new("Name", GoType::Uint),
                Field::new("UID", GoType::Uint),
            ],
        )
    }
    fn to_gob(&self) -> Value {
        Value::Struct(
            StructValue::new()
                .with("Name", self.name.to_gob())
                .with("UID", self.uid.to_gob()),
        )
    }
    fn from_gob(value: Value) -> Result<Self, ValueError> {
        let mut s = value.into_struct()?;
        Ok(NodeId {
            name: s.field("Name")?,
            uid: s.field("UID")?,
        })
    }
}

/// A Paxos proposal number (Go `paxos.ProposalID`); round 0 means none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ProposalId {
    /// `Round` (Go `uint`).
    pub round: u64,
    /// `Proposer`.
    pub proposer: NodeId,
}

impl Gob for ProposalId {
    fn go_type() -> GoType {
        GoType::structure(
            "ProposalID",
            vec![
                Field::new("Round", GoType::Uint),
                Field::new("Proposer", NodeId::go_type()),
            ],
        )
    }
    fn to_gob(&self) -> Value {
        Value::Struct(
            StructValue::new()
                .with("Round", Value::Uint(self.round))
                .with("Proposer", self.proposer.to_gob()),
        )
    }
    fn from_gob(value: Value) -> Result<Self, ValueError> {
        let mut s = value.into_struct()?;
        Ok(ProposalId {
            round: s.field("Round")?,
            proposer: s.field("Proposer")?,
        })
    }
}

/// An accepted Paxos value with the proposal it came from (Go
/// `paxos.AcceptedValue`); the value is the set of peers to seed the ring with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AcceptedValue {
    /// `Value` (Go `paxos.Value`, a `[]mesh.PeerName`).
    pub value: Vec<PeerName>,
    /// `Origin`.
    pub origin: ProposalId,
}

impl Gob for AcceptedValue {
    fn go_type() -> GoType {
        GoType::structure(
            "AcceptedValue",
            vec![
                Field::new("Value", peer_names_type("Value")),
                Field::new("Origin", ProposalId::go_type()),
            ],
        )
    }
    fn to_gob(&self) -> Value {
        Value::Struct(
            StructValue::new()
                .with("Value", peer_names_value(&self.value))
                .with("Origin", self.origin.to_gob()),
        )
    }
    fn from_gob(value: Value) -> Result<Self, ValueError> {
        let mut s = value.into_struct()?;
        Ok(AcceptedValue {
            value: s.field("Value")?,
            origin: s.field("Origin")?,
        })
    }
}

/// What one node has promised and accepted (Go `paxos.NodeClaims`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeClaims {
    /// `Promise`: proposals below this are refused.
    pub promise: ProposalId,
    /// `Accepted`: the accepted proposal (round 0: none).
    pub accepted: ProposalId,
    /// `AcceptedVal`.
    pub accepted_val: AcceptedValue,
}

impl Gob for NodeClaims {
    fn go_type() -> GoType {
        // Unnamed: Go first meets it as the element of `paxos.GossipState`.
        GoType::structure(
            "",
            vec![
                Field::new("Promise", ProposalId::go_type()),
                Field::new("Accepted", ProposalId::go_type()),
                Field::new("AcceptedVal", AcceptedValue::go_type()),
            ],
        )
    }
    fn to_gob(&self) -> Value {
        Value::Struct(
            StructValue::new()
                .with("Promise", self.promise.to_gob())
                .with("Accepted", self.accepted.to_gob())
                .with("AcceptedVal", self.accepted_val.to_gob()),
        )
    }
    fn from_gob(value: Value) -> Result<Self, ValueError> {
        let mut s = value.into_struct()?;
        Ok(NodeClaims {
            promise: s.field("Promise")?,
            accepted: s.field("Accepted")?,
            accepted_val: s.field("AcceptedVal")?,
        })
    }
}

/// The Paxos knowledge gossiped before the ring exists (Go
/// `paxos.GossipState`, `map[NodeID]NodeClaims`).
pub type PaxosClaims = BTreeMap<NodeId, NodeClaims>;

fn paxos_claims_type() -> GoType {
    GoType::map("GossipState", NodeId::go_type(), NodeClaims::go_type())
}

/// The `IPallocation` gossip payload (Go `ipam.gossipState`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GossipState {
    /// `Now`: the sender's Unix time in seconds (informational).
    pub now: i64,
    /// `Nicknames`: peer nicknames for status output.
    pub nicknames: BTreeMap<PeerName, String>,
    /// `Paxos`: the claims while no ring exists. `None` is Go's nil map
    /// (an observer, or a peer that has a ring); `Some` of an empty map is
    /// a distinct value on the wire and to Weave.
    pub paxos: Option<PaxosClaims>,
    /// `Ring`: the ring once agreed (Go nil pointer when `None`).
    pub ring: Option<Ring>,
}

impl GossipState {
    /// The gob bytes of this state (one fresh encoder), the gossip payload.
    pub fn to_gob_bytes(&self) -> Vec<u8> {
        encode_always(self)
    }

    /// Decodes a gossip payload.
    pub fn from_gob_bytes(bytes: &[u8]) -> Result<GossipState, DecodeError> {
        from_bytes(bytes)
    }
}

impl Gob for GossipState {
    fn go_type() -> GoType {
        GoType::structure(
            "gossipState",
            vec![
                Field::new("Now", GoType::Int),
                Field::new(
                    "Nicknames",
                    GoType::map("map[mesh.PeerName]string", GoType::Uint, GoType::String),
                ),
                Field::new("Paxos", paxos_claims_type()),
                Field::pointer("Ring", Ring::go_type()),
            ],
        )
    }
    fn to_gob(&self) -> Value {
        let mut s = StructValue::new()
            .with("Now", Value::Int(self.now))
            // Weave's nickname map is never nil, so it is always sent.
            .with("Nicknames", self.nicknames.to_gob());
        if let Some(p) = &self.paxos {
            s.push("Paxos", p.to_gob());
        }
        if let Some(r) = &self.ring {
            s.push("Ring", r.to_gob());
        }
        Value::Struct(s)
    }
    fn from_gob(value: Value) -> Result<Self, ValueError> {
        let mut s = value.into_struct()?;
        Ok(GossipState {
            now: s.field("Now")?,
            nicknames: s.field("Nicknames")?,
            paxos: s.optional_field("Paxos")?,
            ring: s.optional_field("Ring")?,
        })
    }
}

/// Tag byte of a space request.
pub const MSG_SPACE_REQUEST: u8 = 0;
/// Tag byte of a ring update.
pub const MSG_RING_UPDATE: u8 = 1;
/// Tag byte of a denied space request.
pub const MSG_SPACE_REQUEST_DENIED: u8 = 2;

/// A unicast message on the `IPallocation` channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpamUnicast {
    /// Asks the receiver to donate space (the range it should donate from).
    SpaceRequest(Range),
    /// Sends the whole gossip state (with the ring) to one peer.
    RingUpdate(GossipState),
    /// The receiver had no space to give for this range.
    SpaceRequestDenied(Range),
}

impl IpamUnicast {
    /// Encodes: the tag byte, then the gob stream.
    pub fn encode(&self) -> Vec<u8> {
        let (tag, body) = match self {
            IpamUnicast::SpaceRequest(r) => (MSG_SPACE_REQUEST, r.to_gob_bytes()),
            IpamUnicast::RingUpdate(g) => (MSG_RING_UPDATE, g.to_gob_bytes()),
            IpamUnicast::SpaceRequestDenied(r) => (MSG_SPACE_REQUEST_DENIED, r.to_gob_bytes()),
        };
        let mut out = Vec::with_capacity(1 + body.len());
        out.push(tag);
        out.extend_from_slice(&body);
        out
    }

    /// Decodes a unicast payload. An empty payload or an unknown tag is an
    /// error (Weave ignores unknown tags; the caller may do the same).
    pub fn decode(bytes: &[u8]) -> Result<IpamUnicast, DecodeError> {
        let (&tag, body) = bytes
            .split_first()
            .ok_or(DecodeError::Malformed("empty IPAM unicast message"))?;
        match tag {
            MSG_SPACE_REQUEST => Ok(IpamUnicast::SpaceRequest(Range::from_gob_bytes(body)?)),
            MSG_RING_UPDATE => Ok(IpamUnicast::RingUpdate(GossipState::from_gob_bytes(body)?)),
            MSG_SPACE_REQUEST_DENIED => Ok(IpamUnicast::SpaceRequestDenied(Range::from_gob_bytes(
                body,
            )?)),
            _ => Err(DecodeError::Malformed("unknown IPAM unicast tag")),
        }
    }
}
