//! The `nameserver` gossip channel's payload (Weave `nameserver.GossipData`):
//! a timestamp and the DNS entries, sent as one struct on a fresh encoder.
//!
//! Go facts: the entries field is an embedded named slice (`Entries`, of
//! `Entry`), so on the wire it is a field called `Entries`; Weave sorts the
//! entries case-sensitively (hostname, origin, container id, address)
//! before encoding, which is the caller's job here.

use crate::decoder::from_bytes;
use crate::encoder::to_bytes;
use crate::error::{DecodeError, ValueError};
use crate::typed::Gob;
use crate::types::{Field, GoType};
use crate::value::{StructValue, Value};
use crate::weave::ipam::Address;
use crate::weave::mesh::PeerName;

/// One DNS record (Go `nameserver.Entry`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct DnsEntry {
    /// `ContainerID`.
    pub container_id: String,
    /// `Origin`: the peer that owns the record.
    pub origin: PeerName,
    /// `Addr`: the IPv4 address.
    pub addr: Address,
    /// `Hostname`: as supplied (case kept).
    pub hostname: String,
    /// `Version` (Go `int`).
    pub version: i64,
    /// `Tombstone`: Unix time of deletion, 0 when live.
    pub tombstone: i64,
}

impl Gob for DnsEntry {
    fn go_type() -> GoType {
        GoType::structure(
            "Entry",
            vec![
                Field::new("ContainerID", GoType::String),
                Field::new("Origin", GoType::Uint),
                Field::new("Addr", GoType::Uint),
                Field::new("Hostname", GoType::String),
                Field::new("Version", GoType::Int),
                Field::new("Tombstone", GoType::Int),
            ],
        )
    }
    fn to_gob(&self) -> Value {
        Value::Struct(
            StructValue::new()
                .with("ContainerID", Value::String(self.container_id.clone()))
                .with("Origin", self.origin.to_gob())
                .with("Addr", self.addr.to_gob())
                .with("Hostname", Value::String(self.hostname.clone()))
                .with("Version", Value::Int(self.version))
                .with("Tombstone", Value::Int(self.tombstone)),
        )
    }
    fn from_gob(value: Value) -> Result<Self, ValueError> {
        let mut s = value.into_struct()?;
        Ok(DnsEntry {
            container_id: s.field("ContainerID")?,
            origin: s.field("Origin")?,
            addr: s.field("Addr")?,
            hostname: s.field("Hostname")?,
            version: s.field("Version")?,
            tombstone: s.field("Tombstone")?,
        })
    }
}

/// The DNS gossip payload (Go `nameserver.GossipData`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DnsGossipData {
    /// `Timestamp`: Unix seconds of the newest change.
    pub timestamp: i64,
    /// `Entries`.
    pub entries: Vec<DnsEntry>,
}

impl DnsGossipData {
    /// The gob bytes (one fresh encoder), the gossip payload.
    pub fn to_gob_bytes(&self) -> Vec<u8> {
        // Always encodes; checked by the fixture tests.
        to_bytes(self).unwrap_or_default()
    }

    /// Decodes a gossip payload.
    pub fn from_gob_bytes(bytes: &[u8]) -> Result<DnsGossipData, DecodeError> {
        from_bytes(bytes)
    }
}

impl Gob for DnsGossipData {
    fn go_type() -> GoType {
        GoType::structure(
            "GossipData",
            vec![
                Field::new("Timestamp", GoType::Int),
                Field::new("Entries", GoType::slice("Entries", DnsEntry::go_type())),
            ],
        )
    }
    fn to_gob(&self) -> Value {
        Value::Struct(
            StructValue::new()
                .with("Timestamp", Value::Int(self.timestamp))
                .with(
                    "Entries",
                    Value::Slice(self.entries.iter().map(Gob::to_gob).collect()),
                ),
        )
    }
    fn from_gob(value: Value) -> Result<Self, ValueError> {
        let mut s = value.into_struct()?;
        Ok(DnsGossipData {
            timestamp: s.field("Timestamp")?,
            entries: s.field("Entries")?,
        })
    }
}
