//! NaCl `secretbox` (XSalsa20 and Poly1305), the cipher of every
//! encrypted sleeve datagram, with the Salsa20 keystream computed four
//! blocks at a time.
//!
//! Why our own: profiling the encrypted sleeve put a quarter of all CPU
//! samples in the `salsa20` crate's keystream, which (as of 0.10) works on
//! one 64-byte block at a time with scalar code. Salsa20's rounds are
//! additions, XORs and rotations of 32-bit words, so four blocks fit the
//! four lanes of an SSE2 register (part of every x86-64 CPU, so no runtime
//! detection is needed): each register holds one state word of four
//! consecutive blocks. Other architectures use the same round code on
//! plain `u32`s. Poly1305 is ours too ([`poly1305_tag`], five 26-bit
//! limbs with 64-bit products): the `poly1305` crate's AVX2 code spends
//! about 1.4 µs setting up each key, which for a 1400-byte datagram is
//! more than the hashing itself, and every datagram has its own key. The
//! construction is NaCl's, as the `xsalsa20poly1305`
//! crate and Go's `secretbox` build it: HSalsa20 turns the key and the
//! first 16 nonce bytes into a subkey; the first 32 bytes of the Salsa20
//! keystream (subkey, last 8 nonce bytes) are the Poly1305 key; the
//! message is XORed with the keystream from byte 32 on; the tag is
//! Poly1305 of the ciphertext. Tests check it byte for byte against the
//! `xsalsa20poly1305` crate.

/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// Bytes of a nonce.
pub const NONCE_LEN: usize = 24;
/// Bytes of the Poly1305 tag.
pub const TAG_LEN: usize = 16;

/// The four constant words, "expand 32-byte k".
const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

/// A tag did not match: the box was forged, damaged or sealed under
/// another key or nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("secretbox did not authenticate")]
pub struct Forged;

/// A `secretbox` key.
#[derive(Clone)]
pub struct SecretBox {
    key: [u32; 8],
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// The box for `key`.
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        SecretBox { key: words(key) }
    }

    /// Encrypts `buf` in place under `nonce`; returns the tag.
    pub fn seal_in_place(&self, nonce: &[u8; NONCE_LEN], buf: &mut [u8]) -> [u8; TAG_LEN] {
        let stream = Stream::new(&self.key, nonce);
        let first = stream.four_blocks(0);
        stream.xor_from_32(&first, buf);
        mac(&first, buf)
    }

    /// Checks `tag` over the ciphertext `buf` and decrypts it in place;
    /// on a mismatch `buf` is left as it was.
    pub fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Forged> {
        let stream = Stream::new(&self.key, nonce);
        let first = stream.four_blocks(0);
        let expected = mac(&first, buf);
        // Compare without an early exit.
        let diff = expected
            .iter()
            .zip(tag)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if std::hint::black_box(diff) != 0 {
            return Err(Forged);
        }
        stream.xor_from_32(&first, buf);
        Ok(())
    }
}

/// Poly1305 of `data` under the first 32 bytes of keystream block 0.
fn mac(first: &[u8; 256], data: &[u8]) -> [u8; TAG_LEN] {
    let mut key = [0u8; 32];
    key.copy_from_slice(&first[..32]);
    poly1305_tag(&key, data)
}

/// Bits of one limb.
const LIMB: u32 = 0x03ff_ffff;

/// The little-endian `u32` at `at` of a 16-byte block.
fn le32(block: &[u8; 16], at: usize) -> u32 {
    u32::from_le_bytes([block[at], block[at + 1], block[at + 2], block[at + 3]])
}

/// Poly1305 (RFC 8439 §2.5) of `data` under the one-time `key`: the
/// accumulator and `r` are held in five 26-bit limbs so that every
/// product of two limbs, and the sum of five of them, fits in 64 bits;
/// no branch or index depends on secret data.
pub fn poly1305_tag(key: &[u8; 32], data: &[u8]) -> [u8; TAG_LEN] {
    let mut rk = [0u8; 16];
    rk.copy_from_slice(&key[..16]);
    // r, clamped as the algorithm requires, split into limbs.
    let r = [
        le32(&rk, 0) & 0x03ff_ffff,
        (le32(&rk, 3) >> 2) & 0x03ff_ff03,
        (le32(&rk, 6) >> 4) & 0x03ff_c0ff,
        (le32(&rk, 9) >> 6) & 0x03f0_3fff,
        (le32(&rk, 12) >> 8) & 0x000f_ffff,
    ]
    .map(u64::from);
    // Limb products that wrap past 2^130 come back multiplied by 5.
    let s = [r[1] * 5, r[2] * 5, r[3] * 5, r[4] * 5];
    let mut h = [0u64; 5];

    let mut absorb = |block: &[u8; 16], top: u64| {
        h[0] += u64::from(le32(block, 0) & LIMB);
        h[1] += u64::from((le32(block, 3) >> 2) & LIMB);
        h[2] += u64::from((le32(block, 6) >> 4) & LIMB);
        h[3] += u64::from((le32(block, 9) >> 6) & LIMB);
        h[4] += u64::from(le32(block, 12) >> 8) | top;
        let d = [
            h[0] * r[0] + h[1] * s[3] + h[2] * s[2] + h[3] * s[1] + h[4] * s[0],
            h[0] * r[1] + h[1] * r[0] + h[2] * s[3] + h[3] * s[2] + h[4] * s[1],
            h[0] * r[2] + h[1] * r[1] + h[2] * r[0] + h[3] * s[3] + h[4] * s[2],
            h[0] * r[3] + h[1] * r[2] + h[2] * r[1] + h[3] * r[0] + h[4] * s[3],
            h[0] * r[4] + h[1] * r[3] + h[2] * r[2] + h[3] * r[1] + h[4] * r[0],
        ];
        let mut carry = 0u64;
        for (limb, product) in h.iter_mut().zip(d) {
            let v = product + carry;
            *limb = v & u64::from(LIMB);
            carry = v >> 26;
        }
        h[0] += carry * 5;
        h[1] += h[0] >> 26;
        h[0] &= u64::from(LIMB);
    };
    let mut blocks = data.chunks_exact(16);
    for block in &mut blocks {
        let mut b = [0u8; 16];
        b.copy_from_slice(block);
        absorb(&b, 1 << 24);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        // A short last block gets its 1 bit right after its bytes.
        let mut b = [0u8; 16];
        b[..tail.len()].copy_from_slice(tail);
        b[tail.len()] = 1;
        absorb(&b, 0);
    }

    // Carry fully, then subtract p = 2^130 - 5 if h >= p.
    let mut h = h.map(|v| v as u32);
    let mut carry = 0u32;
    for limb in h.iter_mut().skip(1) {
        *limb += carry;
        carry = *limb >> 26;
        *limb &= LIMB;
    }
    h[0] += carry * 5;
    carry = h[0] >> 26;
    h[0] &= LIMB;
    h[1] += carry;
    let mut g = [0u32; 5];
    let mut carry = 5u32;
    for (gi, hi) in g.iter_mut().zip(h).take(4) {
        let v = hi + carry;
        *gi = v & LIMB;
        carry = v >> 26;
    }
    g[4] = h[4].wrapping_add(carry).wrapping_sub(1 << 26);
    // All ones when h + 5 reached 2^130 (g4 did not go negative).
    let take_g = (g[4] >> 31).wrapping_sub(1);
    for (hi, gi) in h.iter_mut().zip(g) {
        *hi = (*hi & !take_g) | (gi & take_g);
    }
    // h mod 2^128 in four 32-bit words, plus the key's second half.
    let words = [
        h[0] | (h[1] << 26),
        (h[1] >> 6) | (h[2] << 20),
        (h[2] >> 12) | (h[3] << 14),
        (h[3] >> 18) | (h[4] << 8),
    ];
    let mut tag = [0u8; TAG_LEN];
    let mut carry = 0u64;
    for (i, (out, word)) in tag.chunks_exact_mut(4).zip(words).enumerate() {
        let pad = u64::from(u32::from_le_bytes([
            key[16 + 4 * i],
            key[17 + 4 * i],
            key[18 + 4 * i],
            key[19 + 4 * i],
        ]));
        let v = u64::from(word) + pad + carry;
        out.copy_from_slice(&(v as u32).to_le_bytes());
        carry = v >> 32;
    }
    tag
}

/// Little-endian words of `bytes`.
fn words<const N: usize>(bytes: &[u8]) -> [u32; N] {
    let mut out = [0u32; N];
    for (w, chunk) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *w = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    out
}

/// What the Salsa20 rounds need of a lane: one word, or the same word of
/// several blocks side by side.
trait Lane: Copy {
    fn add(self, other: Self) -> Self;
    fn xor(self, other: Self) -> Self;
    /// Rotates left by `n` bits (one of Salsa20's 7, 9, 13, 18).
    fn rotl(self, n: u32) -> Self;
}

impl Lane for u32 {
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        self.wrapping_add(other)
    }
    #[inline(always)]
    fn xor(self, other: Self) -> Self {
        self ^ other
    }
    #[inline(always)]
    fn rotl(self, n: u32) -> Self {
        self.rotate_left(n)
    }
}

/// Salsa20's quarter-round on words `a`, `b`, `c`, `d` of `x`.
#[inline(always)]
fn quarter<L: Lane>(x: &mut [L; 16], a: usize, b: usize, c: usize, d: usize) {
    x[b] = x[b].xor(x[a].add(x[d]).rotl(7));
    x[c] = x[c].xor(x[b].add(x[a]).rotl(9));
    x[d] = x[d].xor(x[c].add(x[b]).rotl(13));
    x[a] = x[a].xor(x[d].add(x[c]).rotl(18));
}

/// The 20 rounds (10 column and row round pairs).
#[inline(always)]
fn rounds<L: Lane>(x: &mut [L; 16]) {
    for _ in 0..10 {
        quarter(x, 0, 4, 8, 12);
        quarter(x, 5, 9, 13, 1);
        quarter(x, 10, 14, 2, 6);
        quarter(x, 15, 3, 7, 11);
        quarter(x, 0, 1, 2, 3);
        quarter(x, 5, 6, 7, 4);
        quarter(x, 10, 11, 8, 9);
        quarter(x, 15, 12, 13, 14);
    }
}

/// The initial state for `key`, with words 6..10 (nonce and counter, or
/// HSalsa20's 16 nonce bytes) given.
fn state(key: &[u32; 8], middle: [u32; 4]) -> [u32; 16] {
    [
        SIGMA[0], key[0], key[1], key[2], key[3], SIGMA[1], middle[0], middle[1], middle[2],
        middle[3], SIGMA[2], key[4], key[5], key[6], key[7], SIGMA[3],
    ]
}

/// HSalsa20: the subkey for `key` and 16 nonce bytes.
fn hsalsa(key: &[u32; 8], nonce: &[u8]) -> [u32; 8] {
    let mut x = state(key, words(nonce));
    rounds(&mut x);
    [x[0], x[5], x[10], x[15], x[6], x[7], x[8], x[9]]
}

/// The Salsa20 keystream of one XSalsa20 nonce.
struct Stream {
    subkey: [u32; 8],
    nonce: [u32; 2],
}

impl Stream {
    fn new(key: &[u32; 8], nonce: &[u8; NONCE_LEN]) -> Self {
        Stream {
            subkey: hsalsa(key, &nonce[..16]),
            nonce: words(&nonce[16..]),
        }
    }

    fn input(&self, counter: u64) -> [u32; 16] {
        state(
            &self.subkey,
            [
                self.nonce[0],
                self.nonce[1],
                counter as u32,
                (counter >> 32) as u32,
            ],
        )
    }

    /// Keystream block `counter`.
    #[cfg(any(test, not(target_arch = "x86_64")))]
    fn block(&self, counter: u64) -> [u8; 64] {
        let input = self.input(counter);
        let mut x = input;
        rounds(&mut x);
        let mut out = [0u8; 64];
        for ((o, w), i) in out.chunks_exact_mut(4).zip(x).zip(input) {
            o.copy_from_slice(&w.wrapping_add(i).to_le_bytes());
        }
        out
    }

    /// XORs `data` with the keystream from byte 32 on: the rest of blocks
    /// 0 to 3 (given as `first`), then blocks 4, 5, …, four at a time.
    fn xor_from_32(&self, first: &[u8; 256], data: &mut [u8]) {
        let head = data.len().min(256 - 32);
        let (start, rest) = data.split_at_mut(head);
        xor(start, &first[32..32 + head]);
        let mut counter = 4u64;
        for chunk in rest.chunks_mut(256) {
            xor(chunk, &self.four_blocks(counter));
            counter += 4;
        }
    }

    /// Keystream blocks `counter` to `counter + 3`.
    #[cfg(target_arch = "x86_64")]
    fn four_blocks(&self, counter: u64) -> [u8; 256] {
        sse2::four_blocks(&self.input(counter), counter)
    }

    /// Keystream blocks `counter` to `counter + 3`.
    #[cfg(not(target_arch = "x86_64"))]
    fn four_blocks(&self, counter: u64) -> [u8; 256] {
        let mut out = [0u8; 256];
        for (i, chunk) in out.chunks_exact_mut(64).enumerate() {
            chunk.copy_from_slice(&self.block(counter + i as u64));
        }
        out
    }
}

/// `data ^= stream`, over the shorter of the two (the compiler turns the
/// loop into vector XORs).
fn xor(data: &mut [u8], stream: &[u8]) {
    for (a, b) in data.iter_mut().zip(stream) {
        *a ^= b;
    }
}

/// Four blocks in the lanes of SSE2 registers.
#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_add_epi32, _mm_cvtsi32_si128, _mm_or_si128, _mm_set_epi32, _mm_set1_epi32,
        _mm_sll_epi32, _mm_srl_epi32, _mm_storeu_si128, _mm_xor_si128,
    };

    use super::{Lane, rounds};

    /// One state word of four consecutive blocks.
    #[derive(Clone, Copy)]
    struct X4(__m128i);

    // SAFETY (every `unsafe` block below): SSE2 is part of the x86-64
    // baseline, so these instructions exist on every CPU this code runs
    // on; the intrinsics touch no memory except where noted.
    impl Lane for X4 {
        #[inline(always)]
        fn add(self, other: Self) -> Self {
            X4(unsafe { _mm_add_epi32(self.0, other.0) })
        }
        #[inline(always)]
        fn xor(self, other: Self) -> Self {
            X4(unsafe { _mm_xor_si128(self.0, other.0) })
        }
        #[inline(always)]
        fn rotl(self, n: u32) -> Self {
            // Shift counts in a register; with `n` a constant after
            // inlining, the compiler emits the immediate forms.
            let (left, right) = (n as i32, 32 - n as i32);
            X4(unsafe {
                _mm_or_si128(
                    _mm_sll_epi32(self.0, _mm_cvtsi32_si128(left)),
                    _mm_srl_epi32(self.0, _mm_cvtsi32_si128(right)),
                )
            })
        }
    }

    /// Keystream blocks `counter` to `counter + 3` for the state `input`
    /// of block `counter`.
    pub(super) fn four_blocks(input: &[u32; 16], counter: u64) -> [u8; 256] {
        let counters: [u64; 4] = std::array::from_fn(|i| counter.wrapping_add(i as u64));
        let lanes = |f: &dyn Fn(u64) -> u32| -> X4 {
            // _mm_set_epi32 takes the highest lane first.
            X4(unsafe {
                _mm_set_epi32(
                    f(counters[3]) as i32,
                    f(counters[2]) as i32,
                    f(counters[1]) as i32,
                    f(counters[0]) as i32,
                )
            })
        };
        let start: [X4; 16] = std::array::from_fn(|i| match i {
            8 => lanes(&|c| c as u32),
            9 => lanes(&|c| (c >> 32) as u32),
            _ => X4(unsafe { _mm_set1_epi32(input[i] as i32) }),
        });
        let mut x = start;
        rounds(&mut x);
        let mut words = [[0u32; 4]; 16];
        for ((out, w), s) in words.iter_mut().zip(x).zip(start) {
            let sum = w.add(s);
            // SAFETY: `out` is 16 writable bytes; storeu needs no
            // alignment.
            unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), sum.0) };
        }
        let mut bytes = [0u8; 256];
        for (block, out) in bytes.chunks_exact_mut(64).enumerate() {
            for (word, o) in out.chunks_exact_mut(4).enumerate() {
                o.copy_from_slice(&words[word][block].to_le_bytes());
            }
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xsalsa20poly1305::XSalsa20Poly1305;
    use xsalsa20poly1305::aead::{AeadInPlace, KeyInit as _, generic_array::GenericArray};

    /// A deterministic byte source (xorshift), for keys, nonces and data.
    struct Bytes(u64);

    impl Bytes {
        fn fill(&mut self, out: &mut [u8]) {
            for b in out {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                *b = self.0 as u8;
            }
        }
    }

    #[test]
    fn seals_exactly_as_the_xsalsa20poly1305_crate_and_opens_its_boxes() {
        let mut rng = Bytes(0x5eed_1234_abcd_0001);
        // Lengths around every boundary: the 32 bytes of block 0, the
        // 64-byte blocks, the 256-byte groups of four, and datagram sizes.
        let lengths = (0..=600).chain([1000, 1376, 1438, 4096, 8191, 65_000]);
        for len in lengths {
            let mut key = [0u8; KEY_LEN];
            let mut nonce = [0u8; NONCE_LEN];
            rng.fill(&mut key);
            rng.fill(&mut nonce);
            let mut plain = vec![0u8; len];
            rng.fill(&mut plain);

            let reference = XSalsa20Poly1305::new(GenericArray::from_slice(&key));
            let mut theirs = plain.clone();
            let their_tag = reference
                .encrypt_in_place_detached(GenericArray::from_slice(&nonce), b"", &mut theirs)
                .expect("seal");

            let ours = SecretBox::new(&key);
            let mut mine = plain.clone();
            let tag = ours.seal_in_place(&nonce, &mut mine);
            assert_eq!(mine, theirs, "ciphertext, length {len}");
            assert_eq!(tag.as_slice(), their_tag.as_slice(), "tag, length {len}");

            ours.open_in_place(&nonce, &mut theirs, &their_tag.into())
                .expect("opens the crate's box");
            assert_eq!(theirs, plain, "plaintext, length {len}");
        }
    }

    #[test]
    fn a_changed_byte_tag_or_nonce_is_refused_and_leaves_the_buffer() {
        let key = [7u8; KEY_LEN];
        let nonce = [9u8; NONCE_LEN];
        let b = SecretBox::new(&key);
        let mut sealed = b"weave sleeve frames".to_vec();
        let tag = b.seal_in_place(&nonce, &mut sealed);
        let untouched = sealed.clone();

        let mut damaged = sealed.clone();
        damaged[3] ^= 1;
        let before = damaged.clone();
        assert_eq!(b.open_in_place(&nonce, &mut damaged, &tag), Err(Forged));
        assert_eq!(damaged, before);

        let mut bad_tag = tag;
        bad_tag[15] ^= 0x80;
        assert_eq!(b.open_in_place(&nonce, &mut sealed, &bad_tag), Err(Forged));
        assert_eq!(sealed, untouched);

        let mut other_nonce = nonce;
        other_nonce[20] ^= 1;
        assert_eq!(
            b.open_in_place(&other_nonce, &mut sealed, &tag),
            Err(Forged)
        );
        assert_eq!(b.open_in_place(&nonce, &mut sealed, &tag), Ok(()));
        assert_eq!(sealed, b"weave sleeve frames");
    }

    #[test]
    fn poly1305_matches_rfc_8439_and_the_poly1305_crate() {
        // RFC 8439 §2.5.2.
        let key: [u8; 32] = [
            0x85, 0xd6, 0xbe, 0x78, 0x57, 0x55, 0x6d, 0x33, 0x7f, 0x44, 0x52, 0xfe, 0x42, 0xd5,
            0x06, 0xa8, 0x01, 0x03, 0x80, 0x8a, 0xfb, 0x0d, 0xb2, 0xfd, 0x4a, 0xbf, 0xf6, 0xaf,
            0x41, 0x49, 0xf5, 0x1b,
        ];
        let tag = poly1305_tag(&key, b"Cryptographic Forum Research Group");
        assert_eq!(
            tag,
            [
                0xa8, 0x06, 0x1d, 0xc1, 0x30, 0x51, 0x36, 0xc6, 0xc2, 0x2b, 0x8b, 0xaf, 0x0c, 0x01,
                0x27, 0xa9
            ]
        );
        use poly1305::Poly1305;
        use poly1305::universal_hash::KeyInit as _;
        let mut rng = Bytes(0x9e37_79b9_7f4a_7c15);
        for len in (0..=300).chain([1376, 1438, 4096, 65_000]) {
            let mut key = [0u8; 32];
            rng.fill(&mut key);
            if len % 7 == 0 {
                // Limbs at their largest, to reach the final reduction.
                key[..16].fill(0xff);
            }
            let mut data = vec![0u8; len];
            rng.fill(&mut data);
            if len % 5 == 0 {
                data.fill(0xff);
            }
            let theirs = Poly1305::new(poly1305::Key::from_slice(&key)).compute_unpadded(&data);
            assert_eq!(
                poly1305_tag(&key, &data).as_slice(),
                theirs.as_slice(),
                "length {len}"
            );
        }
    }

    #[test]
    fn four_block_keystream_matches_one_block_at_a_time_across_the_counter_carry() {
        let stream = Stream::new(&[0x0102_0304; 8], &[0xa5; NONCE_LEN]);
        // The low counter word wraps inside the group of four.
        let start = u64::from(u32::MAX) - 1;
        let four = stream.four_blocks(start);
        for i in 0..4u64 {
            let one = stream.block(start + i);
            let at = usize::try_from(i).expect("small") * 64;
            assert_eq!(&four[at..at + 64], &one[..], "block {i}");
        }
    }
}
