//! One mesh TCP connection as a state machine: the protocol header, the
//! encryption flag and key exchange, the features exchange, then tagged
//! messages with heartbeats and a read deadline. Bytes in, bytes out; the
//! caller owns the socket and the clock.
//!
//! Both protocol versions are spoken; the highest one both headers allow
//! wins. They differ only between the header and the first tagged message
//! and in how messages are delimited:
//!
//! - Version 2: an encryption flag byte (and a 32-byte public key when it
//!   is 1), then length-prefixed frames; the first frame is the features
//!   map, already sealed on an encrypted link.
//! - Version 1: no flag byte. Each side's features map is the first value
//!   of a gob stream and travels in the clear; an encrypting side adds its
//!   public key to it as 64 hex digits under `PublicKey`. Only `ConnID`,
//!   `Name`, `NickName`, `PeerNameFlavour` and `UID` are sent and kept
//!   (so no `ShortID`, `Trusted` or `Overlays`). Every later message is a
//!   gob `[]byte` value, sealed inside when the link is encrypted. A wrong
//!   password therefore shows on the first message after the intro.

use std::time::{Duration, Instant};

use super::codec::Features;
use super::crypto::{
    CryptoStream, DecryptError, KeyPair, PUBLIC_KEY_LEN, SessionKey, form_session_key,
};
use super::identity::{
    PEER_NAME_FLAVOUR, PeerName, PeerNameError, PeerUid, ShortId, parse_go_bool,
};
use super::wire::{self, FrameReader, GobMessage, HEADER_LEN, ProtocolTag, WireError};

/// How long the protocol header exchange may take.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Interval between heartbeats on an idle connection.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);

/// A connection that receives nothing for this long is dropped.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The features a version-1 connection carries (in the clear); all others
/// are dropped on sending and on receipt.
pub const V1_FEATURES: [&str; 5] = ["ConnID", "Name", "NickName", "PeerNameFlavour", "UID"];

/// The feature that carries the public key on an encrypted version-1
/// connection.
pub const V1_PUBLIC_KEY_FEATURE: &str = "PublicKey";

/// Bound on the type definitions we buffer before a version-1 features
/// value (a Go peer sends one of about twenty bytes).
const V1_MAX_TYPE_DEFINITIONS: usize = 64 * 1024;

/// Why a connection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnError {
    /// Header or framing problem.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The negotiated version is one we do not implement.
    #[error("protocol version {0} is not supported by this implementation")]
    UnsupportedVersion(u8),
    /// We have a password, the peer asked for an unencrypted connection.
    #[error("password specified, but peer requested an unencrypted connection")]
    ExpectedCrypto,
    /// We have no password, the peer asked for an encrypted connection.
    #[error("no password specified, but peer requested an encrypted connection")]
    ExpectedNoCrypto,
    /// The encryption flag byte was neither 0 nor 1.
    #[error("bad encryption flag {0}")]
    BadEncryptionFlag(u8),
    /// The peer's first encrypted message did not authenticate: the two
    /// sides almost certainly use different passwords.
    #[error(
        "could not decrypt the peer's features message: the peers' passwords differ (or the stream is corrupt)"
    )]
    PasswordMismatch,
    /// A later message did not authenticate.
    #[error(transparent)]
    Decrypt(#[from] DecryptError),
    /// The features message did not decode.
    #[error("bad features message: {0}")]
    Features(String),
    /// A version-1 peer's gob stream carried a value of a type we do not
    /// expect there.
    #[error("unexpected gob value of type id {0} on a version-1 connection")]
    UnexpectedGobType(i64),
    /// A required feature is missing.
    #[error("field {0} is missing")]
    MissingFeature(&'static str),
    /// The peer uses another kind of peer names.
    #[error("peer name flavour mismatch (ours: '{PEER_NAME_FLAVOUR}', theirs: '{0}')")]
    FlavourMismatch(String),
    /// The peer's name did not parse.
    #[error(transparent)]
    Name(#[from] PeerNameError),
    /// A numeric or boolean feature did not parse.
    #[error("feature {key} has a bad value {value:?}")]
    BadFeature {
        /// Which feature.
        key: &'static str,
        /// Its value.
        value: String,
    },
    /// The header exchange took longer than [`HEADER_TIMEOUT`].
    #[error("timed out waiting for the protocol header")]
    HeaderTimeout,
    /// Nothing was received for [`READ_TIMEOUT`].
    #[error("read timed out: nothing received for {0:?}")]
    ReadTimeout(Duration),
    /// Messages were sent before the features exchange finished.
    #[error("connection is not ready for messages")]
    NotReady,
    /// The connection already failed.
    #[error("connection already failed")]
    Failed,
}

/// What we tell the peer about ourselves and how we protect the link.
pub struct ConnectionParams {
    /// Whether we dialled.
    pub outbound: bool,
    /// Our lowest acceptable protocol version.
    pub min_version: u8,
    /// Our highest protocol version.
    pub max_version: u8,
    /// The password, if the mesh is encrypted, with our key pair for it.
    pub crypto: Option<(Vec<u8>, KeyPair)>,
    /// Our encoded features map, sent as the first framed message of a
    /// version-2 connection.
    pub features: Vec<u8>,
    /// Our features map as such: a version-1 connection sends its
    /// [`V1_FEATURES`] part (plus `PublicKey`) gob-encoded, whatever codec
    /// encoded `features`.
    pub features_v1: Features,
}

/// The peer's features as the intro delivered them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteFeatures {
    /// Version 2: the first framed message, in the router's codec.
    Encoded(Vec<u8>),
    /// Version 1: decoded from the peer's gob stream and cut down to
    /// [`V1_FEATURES`].
    Decoded(Features),
}

/// Something the connection produced for its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnEvent {
    /// The intro finished: the peer's encoded features map, the version,
    /// and the session key when the link is encrypted.
    Ready {
        /// The peer's features.
        features: RemoteFeatures,
        /// The negotiated protocol version.
        version: u8,
        /// The session key (for an overlay that wants it).
        session_key: Option<SessionKey>,
    },
    /// A tagged message arrived.
    Message {
        /// The tag.
        tag: ProtocolTag,
        /// The bytes after the tag.
        payload: Vec<u8>,
    },
    /// A message with a tag outside 0–7 arrived (ignored by Weave).
    UnknownTag(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitHeader,
    AwaitFlag,
    AwaitKey,
    AwaitFeatures,
    AwaitFeaturesV1,
    Ready,
    Failed,
}

/// The state machine of one connection.
pub struct Connection {
    state: State,
    outbound: bool,
    min_version: u8,
    max_version: u8,
    version: u8,
    crypto: Option<(Vec<u8>, KeyPair)>,
    features: Vec<u8>,
    features_v1: Features,
    /// Version 1: gob type definitions received before the features value.
    v1_type_defs: Vec<u8>,
    /// Whether a tagged message arrived since the intro.
    received_message: bool,
    reader: FrameReader,
    out: Vec<u8>,
    tx: Option<CryptoStream>,
    rx: Option<CryptoStream>,
    session_key: Option<SessionKey>,
    header_deadline: Instant,
    read_deadline: Instant,
    next_heartbeat: Option<Instant>,
}

impl Connection {
    /// Starts a connection: our header is queued for sending at once.
    pub fn new(params: ConnectionParams, now: Instant) -> Self {
        let mut c = Connection {
            state: State::AwaitHeader,
            outbound: params.outbound,
            min_version: params.min_version,
            max_version: params.max_version,
            version: 0,
            crypto: params.crypto,
            features: params.features,
            features_v1: params.features_v1,
            v1_type_defs: Vec::new(),
            received_message: false,
            reader: FrameReader::new(),
            out: Vec::new(),
            tx: None,
            rx: None,
            session_key: None,
            header_deadline: now + HEADER_TIMEOUT,
            read_deadline: now + HEADER_TIMEOUT,
            next_heartbeat: None,
        };
        c.out
            .extend_from_slice(&wire::header(c.min_version, c.max_version));
        c
    }

    /// Whether the features exchange has finished.
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// Whether we dialled.
    pub fn is_outbound(&self) -> bool {
        self.outbound
    }

    /// The negotiated protocol version (0 before the header exchange).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// Whether messages are encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.tx.is_some()
    }

    /// Takes the bytes waiting to be written to the socket.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    fn fail<T>(&mut self, e: ConnError) -> Result<T, ConnError> {
        self.state = State::Failed;
        Err(e)
    }

    /// Feeds received bytes; returns what they completed.
    pub fn receive(&mut self, bytes: &[u8], now: Instant) -> Result<Vec<ConnEvent>, ConnError> {
        if self.state == State::Failed {
            return Err(ConnError::Failed);
        }
        self.reader.push(bytes);
        let mut events = Vec::new();
        loop {
            match self.state {
                State::Failed => return Err(ConnError::Failed),
                State::AwaitHeader => {
                    let Some(h) = self.reader.take_raw(HEADER_LEN) else {
                        break;
                    };
                    let mut arr = [0u8; HEADER_LEN];
                    arr.copy_from_slice(&h);
                    let version = match wire::negotiate(self.min_version, self.max_version, &arr) {
                        Ok(v) => v,
                        Err(e) => return self.fail(e.into()),
                    };
                    if version != 1 && version != 2 {
                        return self.fail(ConnError::UnsupportedVersion(version));
                    }
                    self.version = version;
                    // After the header the deadline becomes the normal
                    // read deadline (two heartbeat intervals).
                    self.read_deadline = now + READ_TIMEOUT;
                    if version == 1 {
                        self.send_features_v1();
                        self.state = State::AwaitFeaturesV1;
                        continue;
                    }
                    match &self.crypto {
                        None => self.out.push(0),
                        Some((_, kp)) => {
                            self.out.push(1);
                            self.out.extend_from_slice(&kp.public());
                        }
                    }
                    self.state = State::AwaitFlag;
                }
                State::AwaitFlag => {
                    let Some(flag) = self.reader.take_raw(1) else {
                        break;
                    };
                    match (flag.first().copied().unwrap_or(0), self.crypto.is_some()) {
                        (0, false) => {
                            self.send_features()?;
                            self.state = State::AwaitFeatures;
                        }
                        (0, true) => return self.fail(ConnError::ExpectedCrypto),
                        (1, true) => self.state = State::AwaitKey,
                        (1, false) => return self.fail(ConnError::ExpectedNoCrypto),
                        (f, _) => return self.fail(ConnError::BadEncryptionFlag(f)),
                    }
                }
                State::AwaitKey => {
                    let Some(key) = self.reader.take_raw(PUBLIC_KEY_LEN) else {
                        break;
                    };
                    let mut remote = [0u8; PUBLIC_KEY_LEN];
                    remote.copy_from_slice(&key);
                    if let Some((password, kp)) = &self.crypto {
                        let sk = form_session_key(kp, &remote, password);
                        self.tx = Some(CryptoStream::new(&sk, self.outbound));
                        self.rx = Some(CryptoStream::new(&sk, !self.outbound));
                        self.session_key = Some(sk);
                    }
                    self.send_features()?;
                    self.state = State::AwaitFeatures;
                }
                State::AwaitFeatures => {
                    let frame = match self.reader.next_frame() {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(e) => return self.fail(e.into()),
                    };
                    let features = match &mut self.rx {
                        None => frame,
                        Some(rx) => match rx.open(&frame) {
                            Ok(f) => f,
                            Err(_) => return self.fail(ConnError::PasswordMismatch),
                        },
                    };
                    self.state = State::Ready;
                    self.read_deadline = now + READ_TIMEOUT;
                    self.next_heartbeat = Some(now + HEARTBEAT_INTERVAL);
                    events.push(ConnEvent::Ready {
                        features: RemoteFeatures::Encoded(features),
                        version: self.version,
                        session_key: self.session_key.clone(),
                    });
                }
                State::AwaitFeaturesV1 => {
                    let msg = match self.reader.next_gob_message() {
                        Ok(Some(m)) => m,
                        Ok(None) => break,
                        Err(e) => return self.fail(e.into()),
                    };
                    let features = match wire::parse_gob_message(&msg) {
                        Err(e) => return self.fail(e.into()),
                        Ok(GobMessage::TypeDefinition(_)) => {
                            if self.v1_type_defs.len() + msg.len() > V1_MAX_TYPE_DEFINITIONS {
                                return self.fail(ConnError::Features(
                                    "too many gob type definitions before the features".into(),
                                ));
                            }
                            self.v1_type_defs
                                .extend(wire::gob_message_with_length(&msg));
                            continue;
                        }
                        Ok(GobMessage::Bytes(_)) => {
                            return self
                                .fail(ConnError::UnexpectedGobType(wire::GOB_BYTES_TYPE_ID));
                        }
                        Ok(GobMessage::Value(_)) => {
                            let mut stream = std::mem::take(&mut self.v1_type_defs);
                            stream.extend(wire::gob_message_with_length(&msg));
                            match weave_gob::weave::mesh::decode_features(&stream) {
                                Ok(f) => f,
                                Err(e) => return self.fail(ConnError::Features(e.to_string())),
                            }
                        }
                    };
                    if let Err(e) = self.start_v1_crypto(&features) {
                        return self.fail(e);
                    }
                    self.state = State::Ready;
                    self.read_deadline = now + READ_TIMEOUT;
                    self.next_heartbeat = Some(now + HEARTBEAT_INTERVAL);
                    events.push(ConnEvent::Ready {
                        features: RemoteFeatures::Decoded(v1_subset(&features)),
                        version: self.version,
                        session_key: self.session_key.clone(),
                    });
                }
                State::Ready => {
                    let body = if self.version == 1 {
                        let msg = match self.reader.next_gob_message() {
                            Ok(Some(m)) => m,
                            Ok(None) => break,
                            Err(e) => return self.fail(e.into()),
                        };
                        match wire::parse_gob_message(&msg) {
                            Ok(GobMessage::Bytes(b)) => b,
                            // Only the features map's type is ever defined;
                            // a stray definition is harmless.
                            Ok(GobMessage::TypeDefinition(_)) => continue,
                            Ok(GobMessage::Value(id)) => {
                                return self.fail(ConnError::UnexpectedGobType(id));
                            }
                            Err(e) => return self.fail(e.into()),
                        }
                    } else {
                        match self.reader.next_frame() {
                            Ok(Some(f)) => f,
                            Ok(None) => break,
                            Err(e) => return self.fail(e.into()),
                        }
                    };
                    let first = !self.received_message;
                    self.received_message = true;
                    let msg = match &mut self.rx {
                        None => body,
                        Some(rx) => match rx.open(&body) {
                            Ok(m) => m,
                            // On version 1 the features travel in the
                            // clear, so a password mismatch first shows
                            // here.
                            Err(_) if first && self.version == 1 => {
                                return self.fail(ConnError::PasswordMismatch);
                            }
                            Err(e) => return self.fail(e.into()),
                        },
                    };
                    self.read_deadline = now + READ_TIMEOUT;
                    let Some((&tag, payload)) = msg.split_first() else {
                        // Weave ignores blank messages.
                        continue;
                    };
                    match ProtocolTag::from_byte(tag) {
                        Some(t) => events.push(ConnEvent::Message {
                            tag: t,
                            payload: payload.to_vec(),
                        }),
                        None => events.push(ConnEvent::UnknownTag(tag)),
                    }
                }
            }
        }
        Ok(events)
    }

    fn send_features(&mut self) -> Result<(), ConnError> {
        let features = std::mem::take(&mut self.features);
        self.send_frame(&features)
    }

    /// Version 1: our features (the version-1 part, plus our public key
    /// when encrypting) open our gob stream, in the clear.
    fn send_features_v1(&mut self) {
        let mut features = v1_subset(&self.features_v1);
        if let Some((_, kp)) = &self.crypto {
            features.insert(V1_PUBLIC_KEY_FEATURE.into(), to_hex(&kp.public()));
        }
        self.out
            .extend(weave_gob::weave::mesh::encode_features(&features));
    }

    /// Version 1: checks the peer's `PublicKey` against our own encryption
    /// setting and derives the session key.
    fn start_v1_crypto(&mut self, features: &Features) -> Result<(), ConnError> {
        let remote = features.get(V1_PUBLIC_KEY_FEATURE);
        let Some((password, kp)) = &self.crypto else {
            return match remote {
                Some(_) => Err(ConnError::ExpectedNoCrypto),
                None => Ok(()),
            };
        };
        let Some(hex) = remote else {
            return Err(ConnError::ExpectedCrypto);
        };
        let key: [u8; PUBLIC_KEY_LEN] =
            from_hex(hex)
                .and_then(|k| k.try_into().ok())
                .ok_or_else(|| ConnError::BadFeature {
                    key: V1_PUBLIC_KEY_FEATURE,
                    value: hex.clone(),
                })?;
        let sk = form_session_key(kp, &key, password);
        self.tx = Some(CryptoStream::new(&sk, self.outbound));
        self.rx = Some(CryptoStream::new(&sk, !self.outbound));
        self.session_key = Some(sk);
        Ok(())
    }

    fn send_frame(&mut self, msg: &[u8]) -> Result<(), ConnError> {
        let sealed;
        let body = match &mut self.tx {
            None => msg,
            Some(tx) => {
                if msg.len() + super::crypto::SECRETBOX_OVERHEAD > wire::MAX_TCP_MSG_SIZE {
                    return Err(WireError::OutgoingTooLarge(msg.len()).into());
                }
                sealed = tx.seal(msg);
                &sealed
            }
        };
        let framed = if self.version == 1 {
            wire::encode_v1_message(body)?
        } else {
            wire::encode_frame(body)?
        };
        self.out.extend_from_slice(&framed);
        Ok(())
    }

    /// Queues a tagged message. Fails before the connection is ready and
    /// for messages over the size limit (which leave the stream intact).
    pub fn send(&mut self, tag: ProtocolTag, payload: &[u8]) -> Result<(), ConnError> {
        if self.state != State::Ready {
            return Err(ConnError::NotReady);
        }
        let mut msg = Vec::with_capacity(1 + payload.len());
        msg.push(tag.byte());
        msg.extend_from_slice(payload);
        self.send_frame(&msg)
    }

    /// When [`Connection::handle_timeout`] next needs calling.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Failed => None,
            State::AwaitHeader => Some(self.header_deadline.min(self.read_deadline)),
            _ => Some(match self.next_heartbeat {
                Some(h) => h.min(self.read_deadline),
                None => self.read_deadline,
            }),
        }
    }

    /// Fires due timers: sends a heartbeat when one is due, fails the
    /// connection when the read deadline passed.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ConnError> {
        match self.state {
            State::Failed => return Err(ConnError::Failed),
            State::AwaitHeader if now >= self.header_deadline => {
                return self.fail(ConnError::HeaderTimeout);
            }
            _ => {}
        }
        if now >= self.read_deadline {
            return self.fail(ConnError::ReadTimeout(READ_TIMEOUT));
        }
        if let Some(h) = self.next_heartbeat {
            if now >= h {
                self.send(ProtocolTag::Heartbeat, &[])?;
                self.next_heartbeat = Some(now + HEARTBEAT_INTERVAL);
            }
        }
        Ok(())
    }
}

/// The part of a features map a version-1 connection carries.
pub fn v1_subset(features: &Features) -> Features {
    V1_FEATURES
        .iter()
        .filter_map(|k| features.get(*k).map(|v| ((*k).to_owned(), v.clone())))
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    s.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => Some(digit(*hi)? << 4 | digit(*lo)?),
            _ => None,
        })
        .collect()
}

/// What the peer told us about itself in its features map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteIntro {
    /// Its name.
    pub name: PeerName,
    /// Its nickname.
    pub nickname: String,
    /// Its UID.
    pub uid: PeerUid,
    /// Its short ID, if it sent one.
    pub short_id: Option<ShortId>,
    /// Whether it trusts us (the `Trusted` feature; absent means no).
    pub trusts_us: bool,
    /// Its half of the connection ID.
    pub conn_id: u64,
    /// All features as sent (for the overlay).
    pub features: Features,
}

/// Our features map for one connection, as Weave builds it; `extra` holds
/// what the overlay adds (for example `Overlays`).
pub fn make_features(
    name: PeerName,
    nickname: &str,
    short_id: ShortId,
    uid: PeerUid,
    conn_id: u64,
    trust_remote: bool,
    extra: &Features,
) -> Features {
    let mut f = extra.clone();
    f.insert("PeerNameFlavour".into(), PEER_NAME_FLAVOUR.into());
    f.insert("Name".into(), name.to_string());
    f.insert("NickName".into(), nickname.into());
    f.insert("ShortID".into(), short_id.get().to_string());
    f.insert("UID".into(), uid.0.to_string());
    f.insert("ConnID".into(), conn_id.to_string());
    f.insert("Trusted".into(), trust_remote.to_string());
    f
}

fn feature<'a>(f: &'a Features, key: &'static str) -> Result<&'a str, ConnError> {
    f.get(key)
        .map(String::as_str)
        .ok_or(ConnError::MissingFeature(key))
}

fn parse_u64(key: &'static str, value: &str) -> Result<u64, ConnError> {
    // Go's ParseUint accepts only plain decimal digits here.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConnError::BadFeature {
            key,
            value: value.into(),
        });
    }
    value.parse().map_err(|_| ConnError::BadFeature {
        key,
        value: value.into(),
    })
}

/// Checks and parses the peer's features the way Weave does.
pub fn parse_features(features: Features) -> Result<RemoteIntro, ConnError> {
    for key in ["PeerNameFlavour", "Name", "NickName", "UID", "ConnID"] {
        feature(&features, key)?;
    }
    let flavour = feature(&features, "PeerNameFlavour")?;
    if flavour != PEER_NAME_FLAVOUR {
        return Err(ConnError::FlavourMismatch(flavour.into()));
    }
    let name: PeerName = feature(&features, "Name")?.parse()?;
    let nickname = feature(&features, "NickName")?.to_owned();
    let short_id = match features.get("ShortID") {
        None => None,
        Some(s) => {
            let v = parse_u64("ShortID", s)?;
            Some(ShortId::checked(v).ok_or_else(|| ConnError::BadFeature {
                key: "ShortID",
                value: s.clone(),
            })?)
        }
    };
    let trusts_us = match features.get("Trusted") {
        None => false,
        Some(s) => parse_go_bool(s).ok_or_else(|| ConnError::BadFeature {
            key: "Trusted",
            value: s.clone(),
        })?,
    };
    let uid = PeerUid(parse_u64("UID", feature(&features, "UID")?)?);
    let conn_id = parse_u64("ConnID", feature(&features, "ConnID")?)?;
    Ok(RemoteIntro {
        name,
        nickname,
        uid,
        short_id,
        trusts_us,
        conn_id,
        features,
    })
}

/// Fuzz entry point: feeds arbitrary bytes to a fresh connection (plain
/// and encrypted) and checks it never panics.
pub fn fuzz_connection(data: &[u8]) {
    let now = Instant::now();
    for crypto in [
        None,
        Some((b"pw".to_vec(), KeyPair::from_secret_bytes([5; 32]))),
    ] {
        let mut c = Connection::new(
            ConnectionParams {
                outbound: false,
                min_version: 1,
                max_version: 2,
                crypto,
                features: Vec::new(),
                features_v1: Features::new(),
            },
            now,
        );
        let (a, b) = data.split_at(data.len() / 2);
        let _ = c.receive(a, now);
        let _ = c.receive(b, now);
        let _ = c.handle_timeout(now + READ_TIMEOUT);
    }
    if let Ok(f) = super::codec::MeshCodec::decode_features(&super::codec::PlainCodec, data) {
        let _ = parse_features(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(outbound: bool, password: Option<&[u8]>, seed: u8) -> ConnectionParams {
        ConnectionParams {
            outbound,
            min_version: 1,
            max_version: 2,
            crypto: password.map(|p| (p.to_vec(), KeyPair::from_secret_bytes([seed; 32]))),
            features: format!("features-{seed}").into_bytes(),
            features_v1: Features::from([
                ("Name".to_string(), format!("00:00:00:00:00:0{seed}")),
                ("ShortID".to_string(), "7".to_string()),
            ]),
        }
    }

    fn v1_params(outbound: bool, password: Option<&[u8]>, seed: u8) -> ConnectionParams {
        let mut p = params(outbound, password, seed);
        p.max_version = 1;
        p
    }

    /// Shuttles bytes between two connections until both are quiet.
    fn pump(
        a: &mut Connection,
        b: &mut Connection,
        now: Instant,
    ) -> (
        Vec<ConnEvent>,
        Vec<ConnEvent>,
        Option<ConnError>,
        Option<ConnError>,
    ) {
        let (mut ea, mut eb, mut fa, mut fb) = (Vec::new(), Vec::new(), None, None);
        for _ in 0..10 {
            let ab = a.take_output();
            let ba = b.take_output();
            if ab.is_empty() && ba.is_empty() {
                break;
            }
            if fb.is_none() {
                match b.receive(&ab, now) {
                    Ok(e) => eb.extend(e),
                    Err(e) => fb = Some(e),
                }
            }
            if fa.is_none() {
                match a.receive(&ba, now) {
                    Ok(e) => ea.extend(e),
                    Err(e) => fa = Some(e),
                }
            }
        }
        (ea, eb, fa, fb)
    }

    #[test]
    fn plain_intro_bytes_are_exactly_meshs() {
        let now = Instant::now();
        let mut a = Connection::new(params(true, None, 1), now);
        assert_eq!(a.take_output(), b"weave\x01\x02");
        let ev = a.receive(b"weave\x01\x02", now).unwrap();
        assert!(ev.is_empty());
        // The flag goes out first; features only once the peer's flag
        // has been read (as mesh does).
        assert_eq!(a.take_output(), vec![0u8]);
        let mut reply = vec![0u8];
        reply.extend(wire::encode_frame(b"theirs").unwrap());
        reply.extend(wire::encode_frame(&[4, 9, 9]).unwrap());
        reply.extend(wire::encode_frame(&[]).unwrap());
        reply.extend(wire::encode_frame(&[200]).unwrap());
        let ev = a.receive(&reply, now).unwrap();
        assert_eq!(
            ev,
            vec![
                ConnEvent::Ready {
                    features: RemoteFeatures::Encoded(b"theirs".to_vec()),
                    version: 2,
                    session_key: None
                },
                ConnEvent::Message {
                    tag: ProtocolTag::Gossip,
                    payload: vec![9, 9]
                },
                ConnEvent::UnknownTag(200),
            ]
        );
        let mut expect = Vec::new();
        expect.extend_from_slice(&10u32.to_be_bytes());
        expect.extend_from_slice(b"features-1");
        assert_eq!(a.take_output(), expect);
        a.send(ProtocolTag::GossipUnicast, b"x").unwrap();
        assert_eq!(
            a.take_output(),
            [&2u32.to_be_bytes()[..], &[5, b'x']].concat()
        );
    }

    #[test]
    fn encrypted_intro_and_messages() {
        let now = Instant::now();
        let mut a = Connection::new(params(true, Some(b"pw"), 1), now);
        let mut b = Connection::new(params(false, Some(b"pw"), 2), now);
        let (ea, eb, fa, fb) = pump(&mut a, &mut b, now);
        assert_eq!((fa, fb), (None, None));
        let ConnEvent::Ready {
            features,
            session_key,
            ..
        } = &ea[0]
        else {
            panic!("{ea:?}")
        };
        assert_eq!(features, &RemoteFeatures::Encoded(b"features-2".to_vec()));
        let ConnEvent::Ready {
            features: fb2,
            session_key: kb,
            ..
        } = &eb[0]
        else {
            panic!("{eb:?}")
        };
        assert_eq!(fb2, &RemoteFeatures::Encoded(b"features-1".to_vec()));
        assert_eq!(session_key, kb);
        assert!(a.is_encrypted() && b.is_encrypted());
        a.send(ProtocolTag::Gossip, b"hello").unwrap();
        a.send(ProtocolTag::Gossip, b"again").unwrap();
        b.send(ProtocolTag::GossipBroadcast, b"back").unwrap();
        let (ea, eb, fa, fb) = pump(&mut a, &mut b, now);
        assert_eq!((fa, fb), (None, None));
        assert_eq!(eb.len(), 2);
        assert_eq!(
            ea,
            vec![ConnEvent::Message {
                tag: ProtocolTag::GossipBroadcast,
                payload: b"back".to_vec()
            }]
        );
    }

    #[test]
    fn wrong_password_fails_clearly_on_both_sides() {
        let now = Instant::now();
        let mut a = Connection::new(params(true, Some(b"right"), 1), now);
        let mut b = Connection::new(params(false, Some(b"wrong"), 2), now);
        let (_, _, fa, fb) = pump(&mut a, &mut b, now);
        assert_eq!(fa, Some(ConnError::PasswordMismatch));
        assert_eq!(fb, Some(ConnError::PasswordMismatch));
        assert!(fa.unwrap().to_string().contains("passwords differ"));
    }

    #[test]
    fn crypto_mismatch_is_refused() {
        let now = Instant::now();
        let mut a = Connection::new(params(true, Some(b"pw"), 1), now);
        let mut b = Connection::new(params(false, None, 2), now);
        let (_, _, fa, fb) = pump(&mut a, &mut b, now);
        assert_eq!(fa, Some(ConnError::ExpectedCrypto));
        assert_eq!(fb, Some(ConnError::ExpectedNoCrypto));
    }

    /// A Go encoder's opening of a version-1 stream whose features map is
    /// `{"Name": "x"}` (type definition, then the value), as printed by Go
    /// 1.19's encoding/gob.
    const GO_V1_FEATURES: &[u8] = &[
        0x0e, 0xff, 0x81, 0x04, 0x01, 0x02, 0xff, 0x82, 0x00, 0x01, 0x0c, 0x01, 0x0c, 0x00, 0x00,
        0x0b, 0xff, 0x82, 0x00, 0x01, 0x04, b'N', b'a', b'm', b'e', 0x01, b'x',
    ];

    #[test]
    fn version_one_intro_bytes_both_ways() {
        let now = Instant::now();
        let mut a = Connection::new(params(true, None, 1), now);
        assert_eq!(a.take_output(), b"weave\x01\x02");
        // The peer offers only version 1: no flag byte, our features go
        // out at once as a gob stream, version-1 fields only.
        assert!(a.receive(b"weave\x01\x01", now).unwrap().is_empty());
        assert_eq!(a.version(), 1);
        let ours = a.take_output();
        let expect = weave_gob::weave::mesh::encode_features(&Features::from([(
            "Name".to_string(),
            "00:00:00:00:00:01".to_string(),
        )]));
        assert_eq!(ours, expect, "ShortID is not sent on version 1");
        // Its exact bytes: Go's map[string]string definition (id 65), then
        // the value.
        assert_eq!(&ours[..15], &GO_V1_FEATURES[..15]);
        assert_eq!(ours[15], 0x1b);
        // The peer's features (from Go), then two messages and a stray
        // type definition, as gob []byte values.
        let mut reply = GO_V1_FEATURES.to_vec();
        reply.extend(wire::encode_v1_message(&[4, 9, 9]).unwrap());
        reply.extend_from_slice(&[0x03, 0xff, 0x83, 0x00]);
        reply.extend(wire::encode_v1_message(&[0]).unwrap());
        let ev = a.receive(&reply, now).unwrap();
        assert_eq!(
            ev,
            vec![
                ConnEvent::Ready {
                    features: RemoteFeatures::Decoded(Features::from([(
                        "Name".to_string(),
                        "x".to_string()
                    )])),
                    version: 1,
                    session_key: None
                },
                ConnEvent::Message {
                    tag: ProtocolTag::Gossip,
                    payload: vec![9, 9]
                },
                ConnEvent::Message {
                    tag: ProtocolTag::Heartbeat,
                    payload: vec![]
                },
            ]
        );
        a.send(ProtocolTag::GossipUnicast, b"x").unwrap();
        assert_eq!(a.take_output(), [0x05, 0x0a, 0x00, 0x02, 5, b'x']);
        // A value of another type where a message belongs is refused.
        assert_eq!(
            a.receive(&[0x03, 0x0c, 0x00, 0x00], now),
            Err(ConnError::UnexpectedGobType(6))
        );
    }

    #[test]
    fn version_one_features_are_filtered_on_receipt() {
        let now = Instant::now();
        let mut a = Connection::new(params(false, None, 1), now);
        a.receive(b"weave\x01\x01", now).unwrap();
        let theirs = Features::from([
            ("Name".to_string(), "00:00:00:00:00:09".to_string()),
            ("UID".to_string(), "5".to_string()),
            ("Overlays".to_string(), "sleeve".to_string()),
            ("Trusted".to_string(), "true".to_string()),
        ]);
        let ev = a
            .receive(&weave_gob::weave::mesh::encode_features(&theirs), now)
            .unwrap();
        let ConnEvent::Ready { features, .. } = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!(
            features,
            &RemoteFeatures::Decoded(Features::from([
                ("Name".to_string(), "00:00:00:00:00:09".to_string()),
                ("UID".to_string(), "5".to_string()),
            ]))
        );
    }

    #[test]
    fn version_one_between_two_of_ours_plain_and_encrypted() {
        let now = Instant::now();
        for pw in [None, Some(&b"pw"[..])] {
            // One side may speak only version 1; both settle on it.
            let mut a = Connection::new(v1_params(true, pw, 1), now);
            let mut b = Connection::new(params(false, pw, 2), now);
            let (ea, eb, fa, fb) = pump(&mut a, &mut b, now);
            assert_eq!((fa, fb), (None, None));
            let (
                ConnEvent::Ready {
                    version: va,
                    session_key: ka,
                    ..
                },
                ConnEvent::Ready {
                    version: vb,
                    session_key: kb,
                    ..
                },
            ) = (&ea[0], &eb[0])
            else {
                panic!("{ea:?} {eb:?}")
            };
            assert_eq!((*va, *vb), (1, 1));
            assert_eq!(ka, kb);
            assert_eq!(ka.is_some(), pw.is_some());
            assert_eq!(a.is_encrypted(), pw.is_some());
            a.send(ProtocolTag::Gossip, b"hello").unwrap();
            b.send(ProtocolTag::GossipBroadcast, b"back").unwrap();
            b.send(ProtocolTag::Heartbeat, b"").unwrap();
            let (ea, eb, fa, fb) = pump(&mut a, &mut b, now);
            assert_eq!((fa, fb), (None, None));
            assert_eq!(
                eb,
                vec![ConnEvent::Message {
                    tag: ProtocolTag::Gossip,
                    payload: b"hello".to_vec()
                }]
            );
            assert_eq!(ea.len(), 2);
        }
    }

    #[test]
    fn version_one_encrypted_features_carry_the_public_key_in_the_clear() {
        let now = Instant::now();
        let mut a = Connection::new(params(true, Some(b"pw"), 1), now);
        a.take_output();
        a.receive(b"weave\x01\x01", now).unwrap();
        let sent = weave_gob::weave::mesh::decode_features(&a.take_output()).unwrap();
        let public = KeyPair::from_secret_bytes([1; 32]).public();
        assert_eq!(sent[V1_PUBLIC_KEY_FEATURE], to_hex(&public));
        assert_eq!(sent[V1_PUBLIC_KEY_FEATURE].len(), 64);
        assert_eq!(
            from_hex(&sent[V1_PUBLIC_KEY_FEATURE]),
            Some(public.to_vec())
        );
        assert_eq!(from_hex("0g"), None);
        assert_eq!(from_hex("abc"), None);
        // A peer key that is not 32 bytes of hex is refused.
        let mut bad = Features::new();
        bad.insert(V1_PUBLIC_KEY_FEATURE.into(), "abcd".into());
        assert!(matches!(
            a.receive(&weave_gob::weave::mesh::encode_features(&bad), now),
            Err(ConnError::BadFeature {
                key: "PublicKey",
                ..
            })
        ));
    }

    #[test]
    fn version_one_crypto_mismatch_and_wrong_password() {
        let now = Instant::now();
        let mut a = Connection::new(v1_params(true, Some(b"pw"), 1), now);
        let mut b = Connection::new(v1_params(false, None, 2), now);
        let (_, _, fa, fb) = pump(&mut a, &mut b, now);
        assert_eq!(fa, Some(ConnError::ExpectedCrypto));
        assert_eq!(fb, Some(ConnError::ExpectedNoCrypto));
        // Different passwords: the intro succeeds (features are in the
        // clear), the first message fails on both sides with a clear error.
        let mut a = Connection::new(v1_params(true, Some(b"right"), 1), now);
        let mut b = Connection::new(v1_params(false, Some(b"wrong"), 2), now);
        let (ea, eb, fa, fb) = pump(&mut a, &mut b, now);
        assert_eq!((fa, fb), (None, None));
        assert!(matches!(ea[0], ConnEvent::Ready { .. }));
        assert!(matches!(eb[0], ConnEvent::Ready { .. }));
        a.send(ProtocolTag::Gossip, b"x").unwrap();
        b.send(ProtocolTag::Gossip, b"y").unwrap();
        let (_, _, fa, fb) = pump(&mut a, &mut b, now);
        assert_eq!(fa, Some(ConnError::PasswordMismatch));
        assert_eq!(fb, Some(ConnError::PasswordMismatch));
    }

    #[test]
    fn version_negotiation_limits() {
        let now = Instant::now();
        let mut p = params(true, None, 1);
        p.min_version = 2;
        let mut a = Connection::new(p, now);
        assert!(matches!(
            a.receive(b"weave\x01\x01", now),
            Err(ConnError::Wire(WireError::IncompatibleVersions { .. }))
        ));
        let mut a = Connection::new(params(true, None, 1), now);
        a.take_output();
        a.receive(b"weave\x01\x02", now).unwrap();
        assert_eq!(a.receive(&[7], now), Err(ConnError::BadEncryptionFlag(7)));
    }

    #[test]
    fn heartbeats_and_deadlines() {
        let t0 = Instant::now();
        let mut a = Connection::new(params(true, None, 1), t0);
        let mut b = Connection::new(params(false, None, 2), t0);
        assert_eq!(a.poll_timeout(), Some(t0 + HEADER_TIMEOUT));
        pump(&mut a, &mut b, t0);
        assert_eq!(a.poll_timeout(), Some(t0 + HEARTBEAT_INTERVAL));
        let t30 = t0 + HEARTBEAT_INTERVAL;
        a.handle_timeout(t30).unwrap();
        let hb = a.take_output();
        assert_eq!(hb, [&1u32.to_be_bytes()[..], &[0]].concat());
        assert_eq!(
            b.receive(&hb, t30).unwrap(),
            vec![ConnEvent::Message {
                tag: ProtocolTag::Heartbeat,
                payload: vec![]
            }]
        );
        // a heard nothing since t0: at t0+60 s it gives up.
        assert_eq!(a.poll_timeout(), Some(t0 + READ_TIMEOUT));
        assert_eq!(
            a.handle_timeout(t0 + READ_TIMEOUT),
            Err(ConnError::ReadTimeout(READ_TIMEOUT))
        );
        // b heard a heartbeat at t30: its deadline moved to t30 + 60 s.
        assert!(b.handle_timeout(t0 + READ_TIMEOUT).is_ok());
        assert_eq!(
            b.handle_timeout(t30 + READ_TIMEOUT),
            Err(ConnError::ReadTimeout(READ_TIMEOUT))
        );
        let mut c = Connection::new(params(true, None, 3), t0);
        assert_eq!(
            c.handle_timeout(t0 + HEADER_TIMEOUT),
            Err(ConnError::HeaderTimeout)
        );
    }

    #[test]
    fn features_are_built_and_parsed_like_weave() {
        let f = make_features(
            PeerName::from_u64(0x0102_0304_0506),
            "host1",
            ShortId::new(77),
            PeerUid(123),
            456,
            false,
            &Features::from([("Overlays".to_string(), "fastdp sleeve".to_string())]),
        );
        assert_eq!(f["Name"], "01:02:03:04:05:06");
        assert_eq!(f["PeerNameFlavour"], "mac");
        assert_eq!(f["Trusted"], "false");
        let r = parse_features(f.clone()).unwrap();
        assert_eq!(r.name.as_u64(), 0x0102_0304_0506);
        assert_eq!(r.short_id, Some(ShortId::new(77)));
        assert_eq!((r.uid, r.conn_id, r.trusts_us), (PeerUid(123), 456, false));
        let mut g = f.clone();
        g.remove("ConnID");
        assert_eq!(parse_features(g), Err(ConnError::MissingFeature("ConnID")));
        let mut g = f.clone();
        g.insert("ShortID".into(), "4096".into());
        assert!(matches!(
            parse_features(g),
            Err(ConnError::BadFeature { key: "ShortID", .. })
        ));
        let mut g = f.clone();
        g.insert("PeerNameFlavour".into(), "hash".into());
        assert!(matches!(
            parse_features(g),
            Err(ConnError::FlavourMismatch(_))
        ));
        let mut g = f;
        g.remove("ShortID");
        g.remove("Trusted");
        let r = parse_features(g).unwrap();
        assert_eq!((r.short_id, r.trusts_us), (None, false));
    }

    /// Fuzz entry point: arbitrary bytes into a fresh connection never panic.
    #[test]
    fn fuzz_connection_never_panics() {
        let mut x: u64 = 42;
        for i in 0..3000 {
            let mut data: Vec<u8> = b"weave\x01\x02".to_vec();
            if i % 3 == 0 {
                data.clear();
            } else if i % 5 == 0 {
                data = b"weave\x01\x01".to_vec();
                data.extend_from_slice(GO_V1_FEATURES);
            }
            data.push((i % 3) as u8);
            for _ in 0..(i % 80) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                data.push((x >> 32) as u8);
            }
            fuzz_connection(&data);
        }
    }
}
