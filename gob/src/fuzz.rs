//! The body of the decoder fuzz target, callable from unit tests (cargo-fuzz
//! needs nightly; `gob/fuzz/` wraps this same function).

use crate::decoder::{DecodeLimits, Decoder};
use crate::encoder::Encoder;
use crate::weave;

/// Feeds arbitrary bytes to every decoder of the crate. It must return
/// without panicking whatever the input. Values that decode are re-encoded;
/// that stream must decode again and re-encode to the very same bytes (one
/// pass normalises non-canonical input, the second must be a fixpoint).
pub fn fuzz_decode(data: &[u8]) {
    let first = reencode(data);
    let second = reencode(&first);
    assert_eq!(first, second, "re-encoding is not a fixpoint");

    let _ = weave::mesh::decode_features(data);
    let _ = weave::mesh::decode_topology(data);
    for kind in [
        weave::mesh::GossipKind::Gossip,
        weave::mesh::GossipKind::Broadcast,
        weave::mesh::GossipKind::Unicast,
    ] {
        let _ = weave::mesh::GossipEnvelope::decode(kind, data);
    }
    let _ = weave::ipam::GossipState::from_gob_bytes(data);
    let _ = weave::ipam::IpamUnicast::decode(data);
    let _ = weave::dns::DnsGossipData::from_gob_bytes(data);
}

/// Decodes every value it can from `data` and re-encodes them on one encoder.
fn reencode(data: &[u8]) -> Vec<u8> {
    let limits = DecodeLimits {
        max_message: 1 << 20,
        max_depth: 32,
        max_values: 1 << 16,
        max_type_nodes: 2000,
    };
    let mut dec = Decoder::with_limits(data, limits);
    let mut enc = Encoder::new();
    let mut n = 0;
    while let Ok(Some((ty, v))) = dec.next_dynamic() {
        let _ = enc.encode_value(&ty, &v);
        n += 1;
        if n > 64 {
            break;
        }
    }
    enc.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift64*), no external crates.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    #[test]
    fn fuzz_decode_survives_random_and_mutated_input() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let seeds: Vec<Vec<u8>> = crate::fixtures_for_fuzzing();
        // WEAVE_GOB_FUZZ_ROUNDS raises the count for a longer local run.
        let rounds: u32 = std::env::var("WEAVE_GOB_FUZZ_ROUNDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(6000);
        for round in 0..rounds {
            let input: Vec<u8> = if round % 2 == 0 || seeds.is_empty() {
                let len = (rng.next() % 200) as usize;
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                // Mutate a valid stream: flip, insert or drop a few bytes.
                let mut s = seeds[(rng.next() as usize) % seeds.len()].clone();
                for _ in 0..1 + rng.next() % 4 {
                    if s.is_empty() {
                        break;
                    }
                    let at = (rng.next() as usize) % s.len();
                    match rng.next() % 3 {
                        0 => s[at] ^= 1 << (rng.next() % 8),
                        1 => s.insert(at, rng.next() as u8),
                        _ => {
                            s.remove(at);
                        }
                    }
                }
                s
            };
            fuzz_decode(&input);
        }
    }
}
