//! Peer names as the allocator sees them, and a small seeded RNG.

use std::fmt;
use std::str::FromStr;

/// A mesh peer name: 48 bits, shown as a MAC address (`00:00:00:00:00:01`).
/// The value 0 means "unknown peer".
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PeerName(pub u64);

impl PeerName {
    /// The "no peer" name.
    pub const UNKNOWN: PeerName = PeerName(0);

    /// True for [`PeerName::UNKNOWN`].
    pub fn is_unknown(self) -> bool {
        self.0 == 0
    }
}

/// A peer name that is not six colon-separated hex bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid peer name {0:?}: expected six hex bytes like 00:00:00:00:00:01")]
pub struct PeerNameError(pub String);

impl FromStr for PeerName {
    type Err = PeerNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PeerNameError(s.to_string());
        let mut v = 0u64;
        let mut n = 0;
        for part in s.split(':') {
            if part.is_empty() || part.len() > 2 {
                return Err(err());
            }
            let b = u8::from_str_radix(part, 16).map_err(|_| err())?;
            v = (v << 8) | u64::from(b);
            n += 1;
        }
        if n != 6 {
            return Err(err());
        }
        Ok(PeerName(v))
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

impl fmt::Debug for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A small deterministic random number generator (SplitMix64). The
/// allocator's only randomness (which peer to ask for space) comes from it,
/// so a seed fixes every decision.
#[derive(Debug, Clone)]
pub struct SeededRng(u64);

impl SeededRng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        SeededRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A float in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_name_text_round_trip() {
        let p: PeerName = "00:00:00:00:00:01".parse().unwrap_or_default();
        assert_eq!(p, PeerName(1));
        let p: PeerName = "ca:fe:00:12:34:56".parse().unwrap_or_default();
        assert_eq!(p.to_string(), "ca:fe:00:12:34:56");
        assert!("ca:fe".parse::<PeerName>().is_err());
        assert!("ca:fe:00:12:34:567".parse::<PeerName>().is_err());
        assert!("ca:fe:00:12:34:zz".parse::<PeerName>().is_err());
    }

    #[test]
    fn rng_is_deterministic() {
        let mut a = SeededRng::new(7);
        let mut b = SeededRng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
            let f = a.next_f64();
            assert!((0.0..1.0).contains(&f));
            b.next_f64();
        }
    }
}
