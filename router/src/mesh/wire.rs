//! Byte-level pieces of a mesh TCP connection: the protocol header, the
//! version-2 length-prefixed framing and the message tags.

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
