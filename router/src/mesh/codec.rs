//! The values the mesh puts inside messages (features map, topology
//! summaries, gossip envelope) and the boundary to their encoding.
//!
//! On the wire to Weave these are Go `encoding/gob` streams; that encoding
//! lives in the `weave-gob` crate and is plugged in through [`MeshCodec`]
//! as [`GobCodec`]. [`PlainCodec`] is a small binary format of our own, kept
//! only to show the core does not depend on the encoding (and as a cheaper
//! option for very large simulations): Weave routers cannot read it.

use std::collections::BTreeMap;

use super::identity::PeerName;

/// The features map exchanged as the first message of a connection.
pub type Features = BTreeMap<String, String>;

/// One peer in a topology update (Weave's `peerSummary`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PeerSummary {
    /// The name's bytes (normally six).
    pub name_byte: Vec<u8>,
    /// Human-readable nickname.
    pub nickname: String,
    /// The peer's UID for this run.
    pub uid: u64,
    /// Version of this peer's entry; bumped by its owner on every change.
    pub version: u64,
    /// Short ID (12 bits).
    pub short_id: u16,
    /// Whether `short_id` is meaningful.
    pub has_short_id: bool,
}

/// One connection of a peer in a topology update (`connectionSummary`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ConnectionSummary {
    /// The remote peer's name bytes.
    pub name_byte: Vec<u8>,
    /// The remote's TCP address as `ip:port`.
    pub remote_tcp_addr: String,
    /// Whether the summarised peer dialled this connection.
    pub outbound: bool,
    /// Whether the connection's overlay is up.
    pub established: bool,
}

/// A peer with its connections: the unit a topology update is made of.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TopologyEntry {
    /// The peer.
    pub peer: PeerSummary,
    /// Its connections.
    pub connections: Vec<ConnectionSummary>,
}

/// The envelope of every gossip message: channel, source, destination (for
/// unicast only) and the channel's payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GossipEnvelope {
    /// Channel name (`topology`, `IPallocation`, ...).
    pub channel: String,
    /// The peer the message is from (the originator for broadcast and
    /// unicast, the immediate sender for plain gossip).
    pub src: PeerName,
    /// The destination of a unicast.
    pub dst: Option<PeerName>,
    /// The channel's own bytes.
    pub payload: Vec<u8>,
}

/// An encoding or decoding failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mesh codec: {0}")]
pub struct CodecError(pub String);

/// How the mesh's message contents become bytes. The production
/// implementation is Go's gob (crate `weave-gob`).
pub trait MeshCodec {
    /// Encodes a features map (gob `map[string]string`).
    fn encode_features(&self, features: &Features) -> Result<Vec<u8>, CodecError>;
    /// Decodes a features map.
    fn decode_features(&self, bytes: &[u8]) -> Result<Features, CodecError>;
    /// Encodes a topology update: per peer, its summary then its
    /// connection summaries, in one stream.
    fn encode_topology(&self, entries: &[TopologyEntry]) -> Result<Vec<u8>, CodecError>;
    /// Decodes a topology update.
    fn decode_topology(&self, bytes: &[u8]) -> Result<Vec<TopologyEntry>, CodecError>;
    /// Encodes a gossip envelope (channel, source, destination if unicast,
    /// payload).
    fn encode_envelope(&self, env: &GossipEnvelope) -> Result<Vec<u8>, CodecError>;
    /// Decodes a gossip envelope; `unicast` says whether a destination is
    /// present.
    fn decode_envelope(&self, bytes: &[u8], unicast: bool) -> Result<GossipEnvelope, CodecError>;
}

/// A compact binary codec of our own for tests and simulation (length
/// prefixed fields, big-endian integers). Not understood by Weave.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainCodec;

struct Writer(Vec<u8>);

impl Writer {
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(&(b.len() as u32).to_be_bytes());
        self.0.extend_from_slice(b);
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bool(&mut self, v: bool) {
        self.0.push(u8::from(v));
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.0.len() < n {
            return Err(CodecError("truncated".into()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u64(&mut self) -> Result<u64, CodecError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn u32(&mut self) -> Result<usize, CodecError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u32()?;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, CodecError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|e| CodecError(e.to_string()))
    }
    fn bool(&mut self) -> Result<bool, CodecError> {
        Ok(self.take(1)?.first().copied().unwrap_or(0) != 0)
    }
    fn end(&self) -> Result<(), CodecError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(CodecError("trailing bytes".into()))
        }
    }
}

impl MeshCodec for PlainCodec {
    fn encode_features(&self, features: &Features) -> Result<Vec<u8>, CodecError> {
        let mut w = Writer(Vec::new());
        w.u64(features.len() as u64);
        for (k, v) in features {
            w.bytes(k.as_bytes());
            w.bytes(v.as_bytes());
        }
        Ok(w.0)
    }

    fn decode_features(&self, bytes: &[u8]) -> Result<Features, CodecError> {
        let mut r = Reader(bytes);
        let n = r.u64()?;
        let mut out = Features::new();
        for _ in 0..n {
            let k = r.string()?;
            let v = r.string()?;
            out.insert(k, v);
        }
        r.end()?;
        Ok(out)
    }

    fn encode_topology(&self, entries: &[TopologyEntry]) -> Result<Vec<u8>, CodecError> {
        let mut w = Writer(Vec::new());
        for e in entries {
            w.bytes(&e.peer.name_byte);
            w.bytes(e.peer.nickname.as_bytes());
            w.u64(e.peer.uid);
            w.u64(e.peer.version);
            w.u64(u64::from(e.peer.short_id));
            w.bool(e.peer.has_short_id);
            w.u64(e.connections.len() as u64);
            for c in &e.connections {
                w.bytes(&c.name_byte);
                w.bytes(c.remote_tcp_addr.as_bytes());
                w.bool(c.outbound);
                w.bool(c.established);
            }
        }
        Ok(w.0)
    }

    fn decode_topology(&self, bytes: &[u8]) -> Result<Vec<TopologyEntry>, CodecError> {
        let mut r = Reader(bytes);
        let mut out = Vec::new();
        while !r.0.is_empty() {
            let name_byte = r.bytes()?.to_vec();
            let nickname = r.string()?;
            let uid = r.u64()?;
            let version = r.u64()?;
            let short_id = u16::try_from(r.u64()?).map_err(|e| CodecError(e.to_string()))?;
            let has_short_id = r.bool()?;
            let n = r.u64()?;
            let mut connections = Vec::new();
            for _ in 0..n {
                connections.push(ConnectionSummary {
                    name_byte: r.bytes()?.to_vec(),
                    remote_tcp_addr: r.string()?,
                    outbound: r.bool()?,
                    established: r.bool()?,
                });
            }
            out.push(TopologyEntry {
                peer: PeerSummary {
                    name_byte,
                    nickname,
                    uid,
                    version,
                    short_id,
                    has_short_id,
                },
                connections,
            });
        }
        Ok(out)
    }

    fn encode_envelope(&self, env: &GossipEnvelope) -> Result<Vec<u8>, CodecError> {
        let mut w = Writer(Vec::new());
        w.bytes(env.channel.as_bytes());
        w.u64(env.src.as_u64());
        if let Some(d) = env.dst {
            w.u64(d.as_u64());
        }
        w.bytes(&env.payload);
        Ok(w.0)
    }

    fn decode_envelope(&self, bytes: &[u8], unicast: bool) -> Result<GossipEnvelope, CodecError> {
        let mut r = Reader(bytes);
        let channel = r.string()?;
        let src = PeerName::from_u64(r.u64()?);
        let dst = if unicast {
            Some(PeerName::from_u64(r.u64()?))
        } else {
            None
        };
        let payload = r.bytes()?.to_vec();
        r.end()?;
        Ok(GossipEnvelope {
            channel,
            src,
            dst,
            payload,
        })
    }
}

/// The production codec: Go's gob, as Weave Net writes these values
/// (crate `weave-gob`).
#[derive(Clone, Copy, Debug, Default)]
pub struct GobCodec;

fn gob_err(e: impl std::fmt::Display) -> CodecError {
    CodecError(e.to_string())
}

impl MeshCodec for GobCodec {
    fn encode_features(&self, features: &Features) -> Result<Vec<u8>, CodecError> {
        Ok(weave_gob::weave::mesh::encode_features(features))
    }

    fn decode_features(&self, bytes: &[u8]) -> Result<Features, CodecError> {
        weave_gob::weave::mesh::decode_features(bytes).map_err(gob_err)
    }

    fn encode_topology(&self, entries: &[TopologyEntry]) -> Result<Vec<u8>, CodecError> {
        use weave_gob::weave::mesh as g;
        let updates: Vec<g::PeerUpdate> = entries
            .iter()
            .map(|e| g::PeerUpdate {
                summary: g::PeerSummary {
                    name_byte: e.peer.name_byte.clone(),
                    nick_name: e.peer.nickname.clone(),
                    uid: g::PeerUid(e.peer.uid),
                    version: e.peer.version,
                    short_id: g::PeerShortId(e.peer.short_id),
                    has_short_id: e.peer.has_short_id,
                },
                connections: e
                    .connections
                    .iter()
                    .map(|c| g::ConnectionSummary {
                        name_byte: c.name_byte.clone(),
                        remote_tcp_addr: c.remote_tcp_addr.clone(),
                        outbound: c.outbound,
                        established: c.established,
                    })
                    .collect(),
            })
            .collect();
        Ok(g::encode_topology(&updates))
    }

    fn decode_topology(&self, bytes: &[u8]) -> Result<Vec<TopologyEntry>, CodecError> {
        let updates = weave_gob::weave::mesh::decode_topology(bytes).map_err(gob_err)?;
        Ok(updates
            .into_iter()
            .map(|u| TopologyEntry {
                peer: PeerSummary {
                    name_byte: u.summary.name_byte,
                    nickname: u.summary.nick_name,
                    uid: u.summary.uid.0,
                    version: u.summary.version,
                    short_id: u.summary.short_id.0,
                    has_short_id: u.summary.has_short_id,
                },
                connections: u
                    .connections
                    .into_iter()
                    .map(|c| ConnectionSummary {
                        name_byte: c.name_byte,
                        remote_tcp_addr: c.remote_tcp_addr,
                        outbound: c.outbound,
                        established: c.established,
                    })
                    .collect(),
            })
            .collect())
    }

    fn encode_envelope(&self, env: &GossipEnvelope) -> Result<Vec<u8>, CodecError> {
        use weave_gob::weave::mesh as g;
        Ok(g::GossipEnvelope {
            channel: env.channel.clone(),
            source: g::PeerName(env.src.as_u64()),
            destination: env.dst.map(|d| g::PeerName(d.as_u64())),
            payload: env.payload.clone(),
        }
        .encode())
    }

    fn decode_envelope(&self, bytes: &[u8], unicast: bool) -> Result<GossipEnvelope, CodecError> {
        use weave_gob::weave::mesh as g;
        let kind = if unicast {
            g::GossipKind::Unicast
        } else {
            g::GossipKind::Gossip
        };
        let e = g::GossipEnvelope::decode(kind, bytes).map_err(gob_err)?;
        Ok(GossipEnvelope {
            channel: e.channel,
            src: PeerName::from_u64(e.source.0),
            dst: e.destination.map(|d| PeerName::from_u64(d.0)),
            payload: e.payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_codec_round_trips() {
        let c = PlainCodec;
        let mut f = Features::new();
        f.insert("Name".into(), "00:00:00:00:00:01".into());
        assert_eq!(
            c.decode_features(&c.encode_features(&f).unwrap()).unwrap(),
            f
        );
        let t = vec![TopologyEntry {
            peer: PeerSummary {
                name_byte: vec![0, 0, 0, 0, 0, 1],
                nickname: "a".into(),
                uid: 5,
                version: 2,
                short_id: 7,
                has_short_id: true,
            },
            connections: vec![ConnectionSummary {
                name_byte: vec![0, 0, 0, 0, 0, 2],
                remote_tcp_addr: "10.0.0.2:6783".into(),
                outbound: true,
                established: false,
            }],
        }];
        assert_eq!(
            c.decode_topology(&c.encode_topology(&t).unwrap()).unwrap(),
            t
        );
        let e = GossipEnvelope {
            channel: "topology".into(),
            src: PeerName::from_u64(1),
            dst: Some(PeerName::from_u64(2)),
            payload: vec![1, 2, 3],
        };
        assert_eq!(
            c.decode_envelope(&c.encode_envelope(&e).unwrap(), true)
                .unwrap(),
            e
        );
        assert!(c.decode_envelope(&[0, 0, 0, 9], false).is_err());
    }

    #[test]
    fn gob_codec_round_trips_every_value() {
        let c = GobCodec;
        let mut f = Features::new();
        f.insert("Name".into(), "00:00:00:00:00:01".into());
        f.insert("UID".into(), "12345".into());
        assert_eq!(
            c.decode_features(&c.encode_features(&f).unwrap()).unwrap(),
            f
        );
        let t = vec![
            TopologyEntry {
                peer: PeerSummary {
                    name_byte: vec![0, 0, 0, 0, 0, 1],
                    nickname: "a".into(),
                    uid: u64::MAX,
                    version: 2,
                    short_id: 4095,
                    has_short_id: true,
                },
                connections: vec![ConnectionSummary {
                    name_byte: vec![0, 0, 0, 0, 0, 2],
                    remote_tcp_addr: "10.0.0.2:6783".into(),
                    outbound: true,
                    established: false,
                }],
            },
            TopologyEntry::default(),
        ];
        assert_eq!(
            c.decode_topology(&c.encode_topology(&t).unwrap()).unwrap(),
            t
        );
        for dst in [None, Some(PeerName::from_u64(2))] {
            let e = GossipEnvelope {
                channel: "IPallocation".into(),
                src: PeerName::from_u64(0xffff_ffff_ffff),
                dst,
                payload: vec![1, 2, 3],
            };
            let bytes = c.encode_envelope(&e).unwrap();
            assert_eq!(c.decode_envelope(&bytes, dst.is_some()).unwrap(), e);
        }
        assert!(c.decode_envelope(&[0xff, 0xff], false).is_err());
    }
}
