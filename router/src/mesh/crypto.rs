//! Connection encryption as Weave's mesh does it when a password is set:
//! a Curve25519 key exchange, a session key derived from the NaCl `box`
//! shared key and the password, and a NaCl `secretbox` around every message.

use rand::RngCore;
use salsa20::cipher::consts::U10;
use salsa20::cipher::generic_array::GenericArray;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use xsalsa20poly1305::XSalsa20Poly1305;
use xsalsa20poly1305::aead::{AeadInPlace, KeyInit};

/// Length of a Curve25519 public key on the wire.
pub const PUBLIC_KEY_LEN: usize = 32;

/// Bytes a secretbox adds to a message (the Poly1305 tag).
pub const SECRETBOX_OVERHEAD: usize = 16;

/// A received secretbox failed to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unable to decrypt TCP message")]
pub struct DecryptError;

/// Our half of the key exchange: a Curve25519 key pair.
pub struct KeyPair {
    secret: StaticSecret,
    public: [u8; PUBLIC_KEY_LEN],
}

impl KeyPair {
    /// Generates a key pair from the injected random source. The shell must
    /// seed that source from the operating system's entropy.
    pub fn generate(rng: &mut dyn RngCore) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        Self::from_secret_bytes(bytes)
    }

    /// A key pair from a given private key (clamped as Curve25519 requires).
    pub fn from_secret_bytes(bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret).to_bytes();
        KeyPair { secret, public }
    }

    /// The public key we send to the peer.
    pub fn public(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.public
    }

    /// NaCl's `box` precomputation: HSalsa20 (zero input) over the X25519
    /// shared secret with the peer's public key.
    pub fn box_shared_key(&self, remote_public: &[u8; PUBLIC_KEY_LEN]) -> [u8; 32] {
        let shared = self
            .secret
            .diffie_hellman(&PublicKey::from(*remote_public))
            .to_bytes();
        let key = GenericArray::from(shared);
        let zeros = GenericArray::from([0u8; 16]);
        salsa20::hsalsa::<U10>(&key, &zeros).into()
    }
}

/// The symmetric key of one connection.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey(pub [u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

/// Derives the session key the way mesh does: SHA-256 over the `box`
/// shared key followed by the password bytes.
pub fn form_session_key(
    local: &KeyPair,
    remote_public: &[u8; PUBLIC_KEY_LEN],
    password: &[u8],
) -> SessionKey {
    let mut h = Sha256::new();
    h.update(local.box_shared_key(remote_public));
    h.update(password);
    SessionKey(h.finalize().into())
}

/// One direction of an encrypted TCP stream: the key plus a nonce whose
/// first byte carries the sender's polarity (top bit set for the side that
/// dialled out) and the "TCP" bit (next bit), and whose last eight bytes
/// carry a big-endian message counter that starts at zero.
pub struct CryptoStream {
    cipher: XSalsa20Poly1305,
    nonce: [u8; 24],
    seq: u64,
}

impl CryptoStream {
    /// The state for messages sent by the side whose polarity is
    /// `sender_outbound`.
    pub fn new(key: &SessionKey, sender_outbound: bool) -> Self {
        let mut nonce = [0u8; 24];
        if sender_outbound {
            nonce[0] |= 1 << 7;
        }
        nonce[0] |= 1 << 6;
        CryptoStream {
            cipher: XSalsa20Poly1305::new(GenericArray::from_slice(&key.0)),
            nonce,
            seq: 0,
        }
    }

    fn advance(&mut self) {
        self.seq = self.seq.wrapping_add(1);
        self.nonce[16..24].copy_from_slice(&self.seq.to_be_bytes());
    }

    /// Seals one message: NaCl layout, the 16-byte tag first.
    pub fn seal(&mut self, msg: &[u8]) -> Vec<u8> {
        let mut body = msg.to_vec();
        let nonce = GenericArray::from(self.nonce);
        // Encryption with an in-memory buffer cannot fail for sizes below
        // the cipher's 256 GiB limit; frames are capped at 10 MiB.
        let tag = self
            .cipher
            .encrypt_in_place_detached(&nonce, b"", &mut body)
            .unwrap_or_default();
        self.advance();
        let mut out = Vec::with_capacity(SECRETBOX_OVERHEAD + body.len());
        out.extend_from_slice(&tag);
        out.extend_from_slice(&body);
        out
    }

    /// Opens one message; the counter only advances on success.
    pub fn open(&mut self, sealed: &[u8]) -> Result<Vec<u8>, DecryptError> {
        if sealed.len() < SECRETBOX_OVERHEAD {
            return Err(DecryptError);
        }
        let (tag, body) = sealed.split_at(SECRETBOX_OVERHEAD);
        let mut body = body.to_vec();
        let nonce = GenericArray::from(self.nonce);
        self.cipher
            .decrypt_in_place_detached(&nonce, b"", &mut body, GenericArray::from_slice(tag))
            .map_err(|_| DecryptError)?;
        self.advance();
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The classic NaCl test vector (Alice/Bob keys, `box` precomputation
    /// and the first bytes of the secretbox), as published with NaCl and
    /// reused by Go's x/crypto tests.
    #[test]
    fn box_precompute_matches_nacl_vector() {
        let alice_sk: [u8; 32] =
            hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .try_into()
                .unwrap();
        let bob_pk: [u8; 32] =
            hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
                .try_into()
                .unwrap();
        let alice = KeyPair::from_secret_bytes(alice_sk);
        assert_eq!(
            alice.public().to_vec(),
            hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        // NaCl's tests/box.c: the precomputed key "firstkey".
        assert_eq!(
            alice.box_shared_key(&bob_pk).to_vec(),
            hex("1b27556473e985d462cd51197a9a46c76009549eac6474f206c4ee0844f68389")
        );
        // NaCl's tests/secretbox.c: first bytes of the box of the 131-byte
        // message under firstkey and the published nonce.
        let nonce = hex("69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37");
        let msg = hex(concat!(
            "be075fc53c81f2d5cf141316ebeb0c7b5228c52a4c62cbd44b66849b64244ffc",
            "e5ecbaaf33bd751a1ac728d45e6c61296cdc3c01233561f41db66cce314adb31",
            "0e3be8250c46f06dceea3a7fa1348057e2f6556ad6b1318a024a838f21af1fde",
            "048977eb48f59ffd4924ca1c60902e52f0a089bc76897040e082f93776384864",
            "5e0705"
        ));
        let key = GenericArray::from_slice(&alice.box_shared_key(&bob_pk)).to_owned();
        let cipher = XSalsa20Poly1305::new(&key);
        let mut body = msg.clone();
        let tag = cipher
            .encrypt_in_place_detached(GenericArray::from_slice(&nonce), b"", &mut body)
            .unwrap();
        assert_eq!(tag.to_vec(), hex("f3ffc7703f9400e52a7dfb4b3d3305d9"));
        assert_eq!(body[..8].to_vec(), hex("8e993b9f48681273"));
    }

    #[test]
    fn both_sides_derive_the_same_session_key() {
        let a = KeyPair::from_secret_bytes([1; 32]);
        let b = KeyPair::from_secret_bytes([2; 32]);
        let ka = form_session_key(&a, &b.public(), b"secret");
        let kb = form_session_key(&b, &a.public(), b"secret");
        assert_eq!(ka, kb);
        assert_ne!(ka, form_session_key(&b, &a.public(), b"other"));
    }

    #[test]
    fn streams_use_direction_and_sequence() {
        let key = SessionKey([9; 32]);
        let mut out_tx = CryptoStream::new(&key, true);
        let mut in_rx = CryptoStream::new(&key, true);
        let mut in_tx = CryptoStream::new(&key, false);
        let a = out_tx.seal(b"hello");
        let b = out_tx.seal(b"hello");
        assert_ne!(a, b, "sequence must change the nonce");
        assert_eq!(a.len(), 5 + SECRETBOX_OVERHEAD);
        assert_ne!(in_tx.seal(b"hello"), a, "direction must change the nonce");
        assert_eq!(in_rx.open(&a).unwrap(), b"hello");
        assert_eq!(in_rx.open(&b).unwrap(), b"hello");
        assert_eq!(in_rx.open(&a), Err(DecryptError), "replay is refused");
        assert_eq!(in_rx.open(b"short"), Err(DecryptError));
    }

    #[test]
    fn nonce_layout() {
        let key = SessionKey([0; 32]);
        let mut s = CryptoStream::new(&key, true);
        assert_eq!(s.nonce[0], 0xc0);
        assert_eq!(&s.nonce[1..], &[0u8; 23]);
        s.seal(b"");
        s.seal(b"");
        assert_eq!(&s.nonce[16..], &2u64.to_be_bytes());
        assert_eq!(CryptoStream::new(&key, false).nonce[0], 0x40);
    }
}
