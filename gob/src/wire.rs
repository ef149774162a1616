//! The primitive encodings of gob: unsigned and signed integers, floats and
//! length-prefixed byte strings, plus a bounded reader over a message.

use crate::error::DecodeError;

/// Appends `x` in gob's unsigned form: values below 128 are one byte; larger
/// values are a byte holding the negated byte count followed by the
/// big-endian bytes without leading zeros.
pub fn put_uint(buf: &mut Vec<u8>, x: u64) {
    if x < 0x80 {
        buf.push(x as u8);
        return;
    }
    let bytes = x.to_be_bytes();
    let skip = (x.leading_zeros() / 8) as usize;
    let n = bytes.len() - skip;
    buf.push((n as u8).wrapping_neg());
    buf.extend_from_slice(&bytes[skip..]);
}

/// Maps a signed integer onto gob's unsigned form: bit 0 is the sign, the
/// rest is the value (complemented when negative).
pub fn int_to_uint(i: i64) -> u64 {
    if i < 0 {
        ((!i as u64) << 1) | 1
    } else {
        (i as u64) << 1
    }
}

/// The inverse of [`int_to_uint`].
pub fn uint_to_int(x: u64) -> i64 {
    let v = (x >> 1) as i64;
    if x & 1 == 1 { !v } else { v }
}

/// Appends a signed integer.
pub fn put_int(buf: &mut Vec<u8>, i: i64) {
    put_uint(buf, int_to_uint(i));
}

/// Appends a float: its IEEE-754 bits byte-reversed, as an unsigned integer
/// (so that small exponents give short encodings).
pub fn put_float(buf: &mut Vec<u8>, f: f64) {
    put_uint(buf, f.to_bits().swap_bytes());
}

/// Appends a length-prefixed byte string (gob strings and `[]byte`).
pub fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_uint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

/// A cursor over bytes that never reads past its end.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// How many bytes were read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Reads one byte.
    pub fn byte(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let b = *self
            .data
            .get(self.pos)
            .ok_or(DecodeError::UnexpectedEof(what))?;
        self.pos += 1;
        Ok(b)
    }

    /// Reads `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(DecodeError::UnexpectedEof(what))?;
        let s = self
            .data
            .get(self.pos..end)
            .ok_or(DecodeError::UnexpectedEof(what))?;
        self.pos = end;
        Ok(s)
    }

    /// Reads an unsigned integer.
    pub fn uint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let b = self.byte(what)?;
        if b < 0x80 {
            return Ok(u64::from(b));
        }
        let n = usize::from(b.wrapping_neg());
        if n > 8 {
            return Err(DecodeError::BadUint(n));
        }
        let bytes = self.take(n, what)?;
        Ok(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// Reads a signed integer.
    pub fn int(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        self.uint(what).map(uint_to_int)
    }

    /// Reads a float.
    pub fn float(&mut self, what: &'static str) -> Result<f64, DecodeError> {
        self.uint(what).map(|x| f64::from_bits(x.swap_bytes()))
    }

    /// Reads a length and checks it against the bytes left, assuming every
    /// counted item takes at least `min_item` bytes.
    pub fn count(&mut self, min_item: usize, what: &'static str) -> Result<usize, DecodeError> {
        let n = self.uint(what)?;
        let left = self.remaining();
        let need = n.checked_mul(min_item as u64);
        match need {
            Some(need) if need <= left as u64 => Ok(n as usize),
            _ => Err(DecodeError::LengthTooBig { len: n, left }),
        }
    }

    /// Reads a length-prefixed byte string.
    pub fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.count(1, what)?;
        self.take(n, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc_uint(x: u64) -> Vec<u8> {
        let mut b = Vec::new();
        put_uint(&mut b, x);
        b
    }

    #[test]
    fn uint_forms_match_the_spec_examples() {
        // Examples from the encoding/gob documentation.
        assert_eq!(enc_uint(0), [0x00]);
        assert_eq!(enc_uint(7), [0x07]);
        assert_eq!(enc_uint(127), [0x7f]);
        assert_eq!(enc_uint(256), [0xfe, 0x01, 0x00]);
        assert_eq!(
            enc_uint(u64::MAX),
            [0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
    }

    #[test]
    fn int_and_float_forms() {
        assert_eq!(int_to_uint(-1), 1);
        assert_eq!(int_to_uint(1), 2);
        assert_eq!(int_to_uint(-129), 257);
        for i in [0i64, 1, -1, 63, -64, i64::MIN, i64::MAX] {
            assert_eq!(uint_to_int(int_to_uint(i)), i);
        }
        let mut b = Vec::new();
        put_float(&mut b, 17.0);
        assert_eq!(b, [0xfe, 0x31, 0x40]);
        assert_eq!(Reader::new(&b).float("f"), Ok(17.0));
    }

    #[test]
    fn reader_rejects_short_and_oversized_input() {
        assert_eq!(
            Reader::new(&[0xfe, 0x01]).uint("x"),
            Err(DecodeError::UnexpectedEof("x"))
        );
        assert_eq!(Reader::new(&[0xf7]).uint("x"), Err(DecodeError::BadUint(9)));
        assert!(matches!(
            Reader::new(&[0x05, 1, 2]).bytes("s"),
            Err(DecodeError::LengthTooBig { len: 5, left: 2 })
        ));
        for x in [0u64, 1, 127, 128, 255, 256, 65535, 1 << 40, u64::MAX] {
            assert_eq!(Reader::new(&enc_uint(x)).uint("x"), Ok(x));
        }
    }
}
