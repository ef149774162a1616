//! Byte-level pieces of a mesh TCP connection: the protocol header, the
//! version-2 length-prefixed framing, the version-1 gob stream framing and
//! the message tags.
//!
//! Version 1 has no framing of its own: after the header each side runs
//! one Go `encoding/gob` stream. Its first value is the features map (never
//! encrypted); every later value is a `[]byte` holding one message (sealed
//! when the link is encrypted). A gob stream is a sequence of messages, each
//! a gob unsigned length followed by a signed type id and the value; a
//! negative id introduces a type definition. `[]byte` is one of gob's
//! predeclared types, so its messages need no definition.

/// The protocol identification that opens every connection.
pub const PROTOCOL: &[u8; 5] = b"weave";

/// The lowest protocol version this implementation can speak.
pub const PROTOCOL_MIN_VERSION: u8 = 1;

/// The highest protocol version this implementation can speak.
pub const PROTOCOL_MAX_VERSION: u8 = 2;

/// Length of the protocol header: `weave`, min version, max version.
pub const HEADER_LEN: usize = PROTOCOL.len() + 2;

/// The largest message (after encryption) a version-2 frame may carry.
pub const MAX_TCP_MSG_SIZE: usize = 10 * 1024 * 1024;

/// Gob's predeclared type id of `[]byte`.
pub const GOB_BYTES_TYPE_ID: i64 = 5;

/// The largest gob message we accept on a version-1 stream: a maximal
/// message plus room for gob's own few header bytes. (Go itself has a much
/// higher limit there; ours keeps memory bounded like version 2.)
pub const MAX_V1_GOB_MSG_SIZE: usize = MAX_TCP_MSG_SIZE + 64;

/// Errors in the protocol header or the framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The peer did not open with `weave`.
    #[error("remote protocol header not recognised: {0:?}")]
    BadProtocol(Vec<u8>),
    /// No version is in both ranges.
    #[error(
        "remote version range [{their_min},{their_max}] is incompatible with ours [{our_min},{our_max}]"
    )]
    IncompatibleVersions {
        /// The peer's lowest version.
        their_min: u8,
        /// The peer's highest version.
        their_max: u8,
        /// Our lowest version.
        our_min: u8,
        /// Our highest version.
        our_max: u8,
    },
    /// A received frame announces more than [`MAX_TCP_MSG_SIZE`] bytes.
    #[error("incoming message exceeds maximum size: {0} > {MAX_TCP_MSG_SIZE}")]
    IncomingTooLarge(u64),
    /// A message to send is larger than [`MAX_TCP_MSG_SIZE`] bytes.
    #[error("outgoing message exceeds maximum size: {0} > {MAX_TCP_MSG_SIZE}")]
    OutgoingTooLarge(usize),
    /// A version-1 gob message announces more than [`MAX_V1_GOB_MSG_SIZE`]
    /// bytes.
    #[error("incoming gob message exceeds maximum size: {0} > {MAX_V1_GOB_MSG_SIZE}")]
    GobTooLarge(u64),
    /// A version-1 gob message is malformed or of an unexpected type.
    #[error("bad gob message on a version-1 connection: {0}")]
    BadGob(String),
}

/// The seven header bytes we send: `weave`, then our min and max version.
pub fn header(min_version: u8, max_version: u8) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..PROTOCOL.len()].copy_from_slice(PROTOCOL);
    h[PROTOCOL.len()] = min_version;
    h[PROTOCOL.len() + 1] = max_version;
    h
}

/// Picks the protocol version from the peer's header: the highest version
/// both ranges contain.
pub fn negotiate(our_min: u8, our_max: u8, theirs: &[u8; HEADER_LEN]) -> Result<u8, WireError> {
    if &theirs[..PROTOCOL.len()] != PROTOCOL {
        return Err(WireError::BadProtocol(theirs[..PROTOCOL.len()].to_vec()));
    }
    let their_min = theirs[PROTOCOL.len()];
    let their_max = theirs[PROTOCOL.len() + 1];
    let lo = our_min.max(their_min);
    let hi = our_max.min(their_max);
    if lo > hi {
        return Err(WireError::IncompatibleVersions {
            their_min,
            their_max,
            our_min,
            our_max,
        });
    }
    Ok(hi)
}

/// The first byte of every message after the features exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProtocolTag {
    /// Keeps the connection alive; empty body.
    Heartbeat,
    /// Legacy overlay control message (1).
    Reserved1,
    /// Legacy overlay control message (2).
    Reserved2,
    /// Legacy overlay control message (3).
    Reserved3,
    /// Gossip to neighbours.
    Gossip,
    /// Gossip to one peer, relayed along unicast routes.
    GossipUnicast,
    /// Gossip to all peers, relayed along broadcast routes.
    GossipBroadcast,
    /// Overlay control message: `[overlay index][sub-tag][body]`.
    OverlayControl,
}

impl ProtocolTag {
    /// The tag byte.
    pub fn byte(self) -> u8 {
        match self {
            ProtocolTag::Heartbeat => 0,
            ProtocolTag::Reserved1 => 1,
            ProtocolTag::Reserved2 => 2,
            ProtocolTag::Reserved3 => 3,
            ProtocolTag::Gossip => 4,
            ProtocolTag::GossipUnicast => 5,
            ProtocolTag::GossipBroadcast => 6,
            ProtocolTag::OverlayControl => 7,
        }
    }

    /// The tag for a byte, if it is one of 0–7.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => ProtocolTag::Heartbeat,
            1 => ProtocolTag::Reserved1,
            2 => ProtocolTag::Reserved2,
            3 => ProtocolTag::Reserved3,
            4 => ProtocolTag::Gossip,
            5 => ProtocolTag::GossipUnicast,
            6 => ProtocolTag::GossipBroadcast,
            7 => ProtocolTag::OverlayControl,
            _ => return None,
        })
    }

    /// Whether this tag carries a message for the overlay (1–3 and 7).
    pub fn is_overlay_control(self) -> bool {
        matches!(
            self,
            ProtocolTag::Reserved1
                | ProtocolTag::Reserved2
                | ProtocolTag::Reserved3
                | ProtocolTag::OverlayControl
        )
    }
}

/// Prefixes `msg` with its big-endian u32 length.
pub fn encode_frame(msg: &[u8]) -> Result<Vec<u8>, WireError> {
    if msg.len() > MAX_TCP_MSG_SIZE {
        return Err(WireError::OutgoingTooLarge(msg.len()));
    }
    let len = u32::try_from(msg.len()).map_err(|_| WireError::OutgoingTooLarge(msg.len()))?;
    let mut out = Vec::with_capacity(4 + msg.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    Ok(out)
}

/// Wraps one message as a version-1 gob value: the gob `[]byte` a Go
/// encoder writes for it (length, type id 5, the zero field delta of a
/// non-struct value, then the byte string).
pub fn encode_v1_message(msg: &[u8]) -> Result<Vec<u8>, WireError> {
    if msg.len() > MAX_TCP_MSG_SIZE {
        return Err(WireError::OutgoingTooLarge(msg.len()));
    }
    let mut body = Vec::with_capacity(msg.len() + 12);
    weave_gob::wire::put_int(&mut body, GOB_BYTES_TYPE_ID);
    weave_gob::wire::put_uint(&mut body, 0);
    weave_gob::wire::put_bytes(&mut body, msg);
    let mut out = Vec::with_capacity(body.len() + 9);
    weave_gob::wire::put_uint(&mut out, body.len() as u64);
    out.extend_from_slice(&body);
    Ok(out)
}

/// What one gob message on a version-1 stream holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GobMessage {
    /// A type definition (negative id); version-1 senders only define the
    /// features map's type.
    TypeDefinition(i64),
    /// A `[]byte` value: one connection message.
    Bytes(Vec<u8>),
    /// A value of some other type (the features map, at the start).
    Value(i64),
}

fn gob_err(e: weave_gob::DecodeError) -> WireError {
    WireError::BadGob(e.to_string())
}

/// Classifies one gob message body (without its length) and extracts the
/// bytes of a `[]byte` value.
pub fn parse_gob_message(body: &[u8]) -> Result<GobMessage, WireError> {
    let mut r = weave_gob::wire::Reader::new(body);
    let id = r.int("type id").map_err(gob_err)?;
    if id < 0 {
        return Ok(GobMessage::TypeDefinition(id));
    }
    if id != GOB_BYTES_TYPE_ID {
        return Ok(GobMessage::Value(id));
    }
    let delta = r.uint("field delta").map_err(gob_err)?;
    if delta != 0 {
        return Err(WireError::BadGob(format!(
            "non-zero field delta {delta} in a []byte value"
        )));
    }
    let bytes = r.bytes("[]byte value").map_err(gob_err)?.to_vec();
    if !r.is_empty() {
        return Err(WireError::BadGob(format!(
            "{} bytes after a []byte value",
            r.remaining()
        )));
    }
    Ok(GobMessage::Bytes(bytes))
}

/// Prefixes a gob message body with its gob length again (to hand whole
/// messages to a gob decoder).
pub fn gob_message_with_length(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 9);
    weave_gob::wire::put_uint(&mut out, body.len() as u64);
    out.extend_from_slice(body);
    out
}

/// Splits a byte stream into version-2 frames. Bytes go in with
/// [`FrameReader::push`]; whole frames come out of [`FrameReader::next_frame`].
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet consumed.
    pub fn pending(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }

    /// Takes exactly `n` raw bytes (used before framing starts), if present.
    pub fn take_raw(&mut self, n: usize) -> Option<Vec<u8>> {
        let avail = self.pending();
        if avail.len() < n {
            return None;
        }
        let out = avail.get(..n)?.to_vec();
        self.consume(n);
        Some(out)
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// The next complete frame's body, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, WireError> {
        let avail = self.pending();
        let Some(prefix) = avail.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        let len_usize = len as usize;
        if len_usize > MAX_TCP_MSG_SIZE {
            return Err(WireError::IncomingTooLarge(u64::from(len)));
        }
        let Some(body) = avail.get(4..4 + len_usize) else {
            return Ok(None);
        };
        let body = body.to_vec();
        self.consume(4 + len_usize);
        Ok(Some(body))
    }

    /// The next complete version-1 gob message's body (after its gob
    /// length), `Ok(None)` if more bytes are needed.
    pub fn next_gob_message(&mut self) -> Result<Option<Vec<u8>>, WireError> {
        let avail = self.pending();
        let Some(&first) = avail.first() else {
            return Ok(None);
        };
        let (len, prefix) = if first < 0x80 {
            (u64::from(first), 1usize)
        } else {
            let n = usize::from(first.wrapping_neg());
            if n > 8 {
                return Err(WireError::BadGob(format!("bad length byte {first:#04x}")));
            }
            let Some(digits) = avail.get(1..1 + n) else {
                return Ok(None);
            };
            let len = digits.iter().fold(0u64, |a, &d| (a << 8) | u64::from(d));
            (len, 1 + n)
        };
        if len > MAX_V1_GOB_MSG_SIZE as u64 {
            return Err(WireError::GobTooLarge(len));
        }
        if len == 0 {
            return Err(WireError::BadGob("empty message".into()));
        }
        let len = len as usize;
        let Some(body) = avail.get(prefix..prefix + len) else {
            return Ok(None);
        };
        let body = body.to_vec();
        self.consume(prefix + len);
        Ok(Some(body))
    }
}

/// Fuzz entry point: feeds arbitrary bytes to the frame reader in two
/// pieces and drains it; must never panic.
pub fn fuzz_frames(data: &[u8]) {
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let (a, b) = data.split_at(split);
    let mut r = FrameReader::new();
    r.push(a);
    while let Ok(Some(_)) = r.next_frame() {}
    r.push(b);
    while let Ok(Some(_)) = r.next_frame() {}
    let mut g = FrameReader::new();
    g.push(data);
    while let Ok(Some(m)) = g.next_gob_message() {
        let _ = parse_gob_message(&m);
    }
    if let Some(h) = data.get(..HEADER_LEN) {
        let mut arr = [0u8; HEADER_LEN];
        arr.copy_from_slice(h);
        let _ = negotiate(PROTOCOL_MIN_VERSION, PROTOCOL_MAX_VERSION, &arr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes_match_mesh() {
        assert_eq!(&header(1, 2), b"weave\x01\x02");
    }

    #[test]
    fn negotiation_picks_highest_common_version() {
        assert_eq!(negotiate(1, 2, b"weave\x01\x02"), Ok(2));
        assert_eq!(negotiate(1, 2, b"weave\x01\x01"), Ok(1));
        assert_eq!(negotiate(1, 2, b"weave\x02\x05"), Ok(2));
        assert!(matches!(
            negotiate(2, 2, b"weave\x01\x01"),
            Err(WireError::IncompatibleVersions { .. })
        ));
        assert!(matches!(
            negotiate(1, 2, b"wEave\x01\x02"),
            Err(WireError::BadProtocol(_))
        ));
    }

    #[test]
    fn frames_round_trip_in_pieces() {
        let mut stream = Vec::new();
        for n in [0usize, 1, 5, 300] {
            stream.extend(encode_frame(&vec![n as u8; n]).unwrap());
        }
        let mut r = FrameReader::new();
        let mut got = Vec::new();
        for byte in &stream {
            r.push(std::slice::from_ref(byte));
            while let Some(f) = r.next_frame().unwrap() {
                got.push(f.len());
            }
        }
        assert_eq!(got, vec![0, 1, 5, 300]);
        assert!(r.pending().is_empty());
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut r = FrameReader::new();
        r.push(&((MAX_TCP_MSG_SIZE as u32) + 1).to_be_bytes());
        assert_eq!(
            r.next_frame(),
            Err(WireError::IncomingTooLarge(MAX_TCP_MSG_SIZE as u64 + 1))
        );
        let mut r = FrameReader::new();
        r.push(&(MAX_TCP_MSG_SIZE as u32).to_be_bytes());
        assert_eq!(r.next_frame(), Ok(None));
        assert!(matches!(
            encode_frame(&vec![0; MAX_TCP_MSG_SIZE + 1]),
            Err(WireError::OutgoingTooLarge(_))
        ));
    }

    /// Bytes printed by Go 1.19's encoding/gob for `Encode([]byte("hi"))`,
    /// `Encode([]byte{})` and the first bytes of `Encode(make([]byte, 200))`
    /// on an encoder (a throwaway program of ours, not kept).
    #[test]
    fn v1_messages_match_go_gob() {
        assert_eq!(
            encode_v1_message(b"hi").unwrap(),
            [0x05, 0x0a, 0x00, 0x02, b'h', b'i']
        );
        assert_eq!(encode_v1_message(b"").unwrap(), [0x03, 0x0a, 0x00, 0x00]);
        let big = encode_v1_message(&[0u8; 200]).unwrap();
        assert_eq!(big.len(), 206);
        assert_eq!(big[..8], [0xff, 0xcc, 0x0a, 0x00, 0xff, 0xc8, 0x00, 0x00]);
    }

    #[test]
    fn v1_messages_split_and_parse_in_pieces() {
        let mut stream = Vec::new();
        // A Go map[string]string type definition then a value, as a Go
        // encoder opens a version-1 stream (features {"Name": "x"}).
        let go_map: &[u8] = &[
            0x0e, 0xff, 0x81, 0x04, 0x01, 0x02, 0xff, 0x82, 0x00, 0x01, 0x0c, 0x01, 0x0c, 0x00,
            0x00, 0x0b, 0xff, 0x82, 0x00, 0x01, 0x04, b'N', b'a', b'm', b'e', 0x01, b'x',
        ];
        stream.extend_from_slice(go_map);
        for n in [0usize, 3, 300] {
            stream.extend(encode_v1_message(&vec![7u8; n]).unwrap());
        }
        let mut r = FrameReader::new();
        let mut got = Vec::new();
        for byte in &stream {
            r.push(std::slice::from_ref(byte));
            while let Some(m) = r.next_gob_message().unwrap() {
                got.push(parse_gob_message(&m).unwrap());
            }
        }
        assert_eq!(
            got,
            vec![
                GobMessage::TypeDefinition(-65),
                GobMessage::Value(65),
                GobMessage::Bytes(vec![]),
                GobMessage::Bytes(vec![7; 3]),
                GobMessage::Bytes(vec![7; 300]),
            ]
        );
        assert!(r.pending().is_empty());
    }

    #[test]
    fn bad_v1_messages_are_refused() {
        let mut r = FrameReader::new();
        r.push(&[0xf7]);
        assert!(matches!(r.next_gob_message(), Err(WireError::BadGob(_))));
        let mut r = FrameReader::new();
        r.push(&[0xfc, 0x7f, 0xff, 0xff, 0xff]);
        assert_eq!(
            r.next_gob_message(),
            Err(WireError::GobTooLarge(0x7fff_ffff))
        );
        let mut r = FrameReader::new();
        r.push(&[0x00]);
        assert!(matches!(r.next_gob_message(), Err(WireError::BadGob(_))));
        assert!(matches!(
            parse_gob_message(&[0x0a, 0x02, 0x00]),
            Err(WireError::BadGob(_))
        ));
        assert!(matches!(
            parse_gob_message(&[0x0a, 0x00, 0x05, 1]),
            Err(WireError::BadGob(_))
        ));
        assert!(matches!(
            parse_gob_message(&[0x0a, 0x00, 0x01, 1, 2]),
            Err(WireError::BadGob(_))
        ));
        assert_eq!(parse_gob_message(&[0x0c, 0x00]), Ok(GobMessage::Value(6)));
    }

    #[test]
    fn tags_round_trip() {
        for b in 0..=7u8 {
            assert_eq!(ProtocolTag::from_byte(b).map(ProtocolTag::byte), Some(b));
        }
        assert_eq!(ProtocolTag::from_byte(8), None);
    }

    #[test]
    fn fuzz_frames_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..4000 {
            let len = i % 97;
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect();
            fuzz_frames(&data);
        }
    }
}
