//! Who a peer is: its 48-bit name (written like a MAC address), its
//! per-start UID and its 12-bit short ID.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;

/// The only peer-name flavour Weave Net 2.8.1 uses on the wire
/// (the `PeerNameFlavour` feature).
pub const PEER_NAME_FLAVOUR: &str = "mac";

/// Number of bytes of a peer name on the wire.
pub const NAME_SIZE: usize = 6;

/// Number of significant bits in a [`ShortId`].
pub const SHORT_ID_BITS: u32 = 12;

/// The number of distinct short IDs (4096).
pub const SHORT_ID_SPACE: u16 = 1 << SHORT_ID_BITS;

/// A peer's 48-bit name, shown as `aa:bb:cc:dd:ee:ff`.
///
/// Names order numerically; the ordering matters for route computation and
/// for the short-ID collision rule (the lower name keeps its short ID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PeerName(u64);

/// A peer name that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerNameError {
    /// The text is not one of the MAC-like forms Weave accepts.
    #[error("invalid peer name format: {0:?}")]
    Format(String),
    /// A binary name was not exactly six bytes long.
    #[error("peer name must be {NAME_SIZE} bytes, got {0}")]
    Length(usize),
}

impl PeerName {
    /// The "unknown" sentinel (all zero), used as the next hop of ourself.
    pub const UNKNOWN: PeerName = PeerName(0);

    /// Builds a name from its numeric value; bits above 48 are dropped.
    pub fn from_u64(value: u64) -> Self {
        PeerName(value & 0xffff_ffff_ffff)
    }

    /// The numeric value (48 bits), as gob carries a `PeerName` (a uint64).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// The six bytes of the name, most significant first (`NameByte`).
    pub fn to_bytes(self) -> [u8; NAME_SIZE] {
        let b = self.0.to_be_bytes();
        [b[2], b[3], b[4], b[5], b[6], b[7]]
    }

    /// Parses the six-byte binary form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PeerNameError> {
        if bytes.len() != NAME_SIZE {
            return Err(PeerNameError::Length(bytes.len()));
        }
        Ok(Self::from_bytes_lenient(bytes))
    }

    /// Folds any number of bytes into a name the way Weave does for
    /// `NameByte` fields received in topology updates: each byte shifts the
    /// value left by eight bits (so short input gives a small name, and only
    /// the last six bytes of long input survive).
    pub fn from_bytes_lenient(bytes: &[u8]) -> Self {
        let mut v: u64 = 0;
        for b in bytes {
            v = (v << 8) | u64::from(*b);
        }
        Self::from_u64(v)
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.to_bytes();
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// Parses one group of one or two hex digits.
fn hex_group(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 2 || !text.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

/// Parses a colon-separated list of groups; an empty string is no group.
fn hex_groups(text: &str) -> Option<Vec<u64>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split(':').map(hex_group).collect()
}

impl FromStr for PeerName {
    type Err = PeerNameError;

    /// Accepts the forms Weave accepts: six colon-separated groups of one or
    /// two hex digits, or an abbreviated form where `::` stands for zero
    /// groups and at most four groups are written in total (for example
    /// `::1`, `ab::` or `12:34::5`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || PeerNameError::Format(text.to_owned());
        let mut groups = [0u64; NAME_SIZE];
        match text.split_once("::") {
            None => {
                let all = hex_groups(text).ok_or_else(err)?;
                if all.len() != NAME_SIZE {
                    return Err(err());
                }
                groups.copy_from_slice(&all);
            }
            Some((left, right)) => {
                let left = hex_groups(left).ok_or_else(err)?;
                let right = hex_groups(right).ok_or_else(err)?;
                let total = left.len() + right.len();
                if total == 0 || total > 4 {
                    return Err(err());
                }
                for (i, g) in left.iter().enumerate() {
                    groups[i] = *g;
                }
                let start = NAME_SIZE - right.len();
                for (i, g) in right.iter().enumerate() {
                    groups[start + i] = *g;
                }
            }
        }
        let value = groups.iter().fold(0u64, |acc, g| (acc << 8) | g);
        Ok(PeerName(value))
    }
}

/// A peer's identity for one run of its router; a restarted peer gets a
/// new UID. Zero is reserved for placeholders of peers we only know by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PeerUid(pub u64);

impl PeerUid {
    /// Draws a fresh non-zero UID from the injected random source.
    pub fn random(rng: &mut dyn RngCore) -> Self {
        loop {
            let v = rng.next_u64();
            if v != 0 {
                return PeerUid(v);
            }
        }
    }
}

impl fmt::Display for PeerUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A 12-bit identifier used by the fast datapath (VXLAN VNIs). Chosen at
/// random; on a collision the peer with the higher name picks another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ShortId(u16);

impl ShortId {
    /// Builds a short ID, keeping the low 12 bits.
    pub fn new(value: u16) -> Self {
        ShortId(value & (SHORT_ID_SPACE - 1))
    }

    /// Builds a short ID if `value` fits in 12 bits.
    pub fn checked(value: u64) -> Option<Self> {
        if value < u64::from(SHORT_ID_SPACE) {
            u16::try_from(value).ok().map(ShortId)
        } else {
            None
        }
    }

    /// The numeric value (0..4096).
    pub fn get(self) -> u16 {
        self.0
    }

    /// Draws a short ID uniformly from the injected random source.
    pub fn random(rng: &mut dyn RngCore) -> Self {
        // Truncation keeps the low 12 bits, which is the intent.
        Self::new((rng.next_u32() & 0xfff) as u16)
    }
}

impl fmt::Display for ShortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Go's `strconv.ParseBool`: the spellings Weave accepts for the `Trusted`
/// feature and for boolean form values such as `skipNAT`.
pub fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn name_formats_as_lowercase_mac() {
        let n = PeerName::from_u64(0x0a0b_0c0d_0eff);
        assert_eq!(n.to_string(), "0a:0b:0c:0d:0e:ff");
        assert_eq!(PeerName::from_u64(1).to_string(), "00:00:00:00:00:01");
    }

    #[test]
    fn name_parses_full_and_abbreviated_forms() {
        let full: PeerName = "0A:0b:0c:0d:0e:ff".parse().unwrap();
        assert_eq!(full.as_u64(), 0x0a0b_0c0d_0eff);
        let one_digit: PeerName = "a:b:c:d:e:f".parse().unwrap();
        assert_eq!(one_digit.as_u64(), 0x0a0b_0c0d_0e0f);
        assert_eq!("::1".parse::<PeerName>().unwrap().as_u64(), 1);
        assert_eq!(
            "ab::".parse::<PeerName>().unwrap().as_u64(),
            0xab00_0000_0000
        );
        assert_eq!(
            "12:34::5".parse::<PeerName>().unwrap().as_u64(),
            0x1234_0000_0005
        );
        assert_eq!(
            "::1:2:3:4".parse::<PeerName>().unwrap().as_u64(),
            0x0102_0304
        );
        assert_eq!(
            "1:2:3:4::".parse::<PeerName>().unwrap().as_u64(),
            0x0102_0304_0000
        );
    }

    #[test]
    fn name_rejects_bad_text() {
        for bad in [
            "",
            "::",
            "1:2:3:4:5",
            "1:2:3:4:5:6:7",
            "123:0:0:0:0:0",
            "g::",
            "1::2::3",
            "::1:2:3:4:5",
            "1:2:3:4:5:",
            " 1::",
            "0x1::",
        ] {
            assert!(bad.parse::<PeerName>().is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn name_round_trips_through_bytes_and_text() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..1000 {
            let n = PeerName::from_u64(rng.next_u64());
            assert_eq!(PeerName::from_bytes(&n.to_bytes()).unwrap(), n);
            assert_eq!(n.to_string().parse::<PeerName>().unwrap(), n);
        }
        assert_eq!(PeerName::from_bytes(&[1, 2]), Err(PeerNameError::Length(2)));
        assert_eq!(PeerName::from_bytes_lenient(&[1, 2]).as_u64(), 0x102);
    }

    #[test]
    fn uid_is_never_zero_and_short_id_fits() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..1000 {
            assert_ne!(PeerUid::random(&mut rng).0, 0);
            assert!(ShortId::random(&mut rng).get() < SHORT_ID_SPACE);
        }
        assert_eq!(ShortId::checked(4095).map(ShortId::get), Some(4095));
        assert_eq!(ShortId::checked(4096), None);
    }

    #[test]
    fn go_bool_spellings() {
        assert_eq!(parse_go_bool("True"), Some(true));
        assert_eq!(parse_go_bool("0"), Some(false));
        assert_eq!(parse_go_bool("yes"), None);
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(t), Some(true));
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(f), Some(false));
        }
        for bad in ["", "yes", "tRUE", "2"] {
            assert_eq!(parse_go_bool(bad), None);
        }
    }
}
