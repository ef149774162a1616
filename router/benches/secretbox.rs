//! The sleeve's `secretbox` against the `xsalsa20poly1305` crate it
//! replaced, on datagram-sized messages (not a test: it prints ns per byte
//! and the ratio, both measured in this run).
//!
//! `cargo bench -p weave-router --bench secretbox`

use std::hint::black_box;
use std::time::{Duration, Instant};

use poly1305::Poly1305;
use weave_router::sleeve::secretbox::{SecretBox, poly1305_tag};
use xsalsa20poly1305::XSalsa20Poly1305;
use xsalsa20poly1305::aead::{AeadInPlace, KeyInit, generic_array::GenericArray};

/// Runs `f` on a `len`-byte buffer for about `time`; returns ns per byte.
fn per_byte(len: usize, time: Duration, mut f: impl FnMut(&mut [u8])) -> f64 {
    let mut buf = vec![0x5au8; len];
    let mut rounds = 0u64;
    let start = Instant::now();
    while start.elapsed() < time {
        for _ in 0..64 {
            f(black_box(&mut buf));
        }
        rounds += 64;
    }
    start.elapsed().as_nanos() as f64 / (rounds as f64 * len as f64)
}

fn main() {
    let key = [7u8; 32];
    let nonce = [9u8; 24];
    let ours = SecretBox::new(&key);
    let theirs = XSalsa20Poly1305::new(GenericArray::from_slice(&key));
    let time = Duration::from_millis(700);
    println!(
        "{:>6} {:>12} {:>12} {:>7} {:>18} {:>16} {:>7}",
        "bytes", "crate ns/B", "ours ns/B", "ratio", "crate poly1305", "our poly1305", "ratio"
    );
    for len in [64, 256, 1400, 8192, 65_000] {
        let crate_seal = per_byte(len, time, |buf| {
            let tag = theirs
                .encrypt_in_place_detached(GenericArray::from_slice(&nonce), b"", buf)
                .expect("seal");
            black_box(tag);
        });
        let our_seal = per_byte(len, time, |buf| {
            black_box(ours.seal_in_place(&nonce, buf));
        });
        let mac = per_byte(len, time, |buf| {
            let tag = Poly1305::new(GenericArray::from_slice(&[7u8; 32])).compute_unpadded(buf);
            black_box(tag);
        });
        let our_mac = per_byte(len, time, |buf| {
            black_box(poly1305_tag(&[7u8; 32], buf));
        });
        println!(
            "{len:>6} {crate_seal:>12.3} {our_seal:>12.3} {:>7.2} {mac:>18.3} {our_mac:>16.3} {:>7.2}",
            crate_seal / our_seal,
            mac / our_mac
        );
    }
}
