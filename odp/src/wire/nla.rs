//! Netlink attributes (`struct nlattr`): a reader that never panics and a
//! writer that handles lengths, nesting and 4-byte padding.
//!
//! An attribute is a 4-byte header (`u16` length including the header, `u16`
//! type) followed by its payload and padding up to a multiple of four. The two
//! top bits of the type are flags: [`NLA_F_NESTED`] and
//! [`NLA_F_NET_BYTEORDER`]; the reader strips them from [`Attr::kind`] and
//! reports them separately. The writer never sets `NLA_F_NESTED`, like the
//! Open vSwitch userspace tools, because the OVS families do not ask for it.
//!
//! The final attribute of a buffer may lack its padding (the kernel sends
//! upcall packets that way when a datapath has the `UNALIGNED` feature); the
//! reader accepts that.

use super::error::DecodeError;
use super::types::{Be16, Be32, Be64, array_at};

/// Attribute type flag: the payload is a nested attribute set.
pub const NLA_F_NESTED: u16 = 1 << 15;
/// Attribute type flag: the payload is in network byte order.
pub const NLA_F_NET_BYTEORDER: u16 = 1 << 14;
/// The bits of the attribute type that carry the type number.
pub const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);
/// Size of `struct nlattr`.
pub const NLA_HDRLEN: usize = 4;
/// The deepest attribute nesting the decoders follow.
pub const MAX_DEPTH: usize = 32;

/// Rounds `len` up to the netlink alignment of four bytes.
pub const fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// One attribute borrowed from a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    /// The type number, without the flag bits.
    pub kind: u16,
    /// The flag bits (`NLA_F_NESTED`, `NLA_F_NET_BYTEORDER`) as they were sent.
    pub flags: u16,
    /// The payload, without header or padding.
    pub payload: &'a [u8],
}

/// Iterates over the attributes in a buffer. Yields an error (and then stops)
/// on a header or length that does not fit.
#[derive(Debug, Clone)]
pub struct AttrIter<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> AttrIter<'a> {
    /// Reads the attribute set in `buf`; `what` names it in errors.
    pub fn new(what: &'static str, buf: &'a [u8]) -> Self {
        AttrIter { buf, what }
    }
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = Result<Attr<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let Some(hdr) = array_at::<4>(self.buf, 0) else {
            let have = self.buf.len();
            self.buf = &[];
            return Some(Err(DecodeError::Truncated {
                what: self.what,
                need: NLA_HDRLEN,
                have,
            }));
        };
        let len = usize::from(u16::from_ne_bytes([hdr[0], hdr[1]]));
        let raw_kind = u16::from_ne_bytes([hdr[2], hdr[3]]);
        let available = self.buf.len();
        if len < NLA_HDRLEN || len > available {
            self.buf = &[];
            return Some(Err(DecodeError::BadLength {
                what: self.what,
                len,
                available,
            }));
        }
        let payload = self.buf.get(NLA_HDRLEN..len).unwrap_or_default();
        // An unpadded last attribute is fine: clamp the step to what is left.
        let step = align4(len).min(available);
        self.buf = self.buf.get(step..).unwrap_or_default();
        Some(Ok(Attr {
            kind: raw_kind & NLA_TYPE_MASK,
            flags: raw_kind & !NLA_TYPE_MASK,
            payload,
        }))
    }
}

impl<'a> Attr<'a> {
    fn size_err(&self, what: &'static str, expected: &'static str) -> DecodeError {
        DecodeError::AttrSize {
            what,
            kind: self.kind,
            len: self.payload.len(),
            expected,
        }
    }

    /// The payload as exactly `N` bytes.
    pub fn array<const N: usize>(&self, what: &'static str) -> Result<[u8; N], DecodeError> {
        if self.payload.len() != N {
            return Err(DecodeError::AttrSize {
                what,
                kind: self.kind,
                len: self.payload.len(),
                expected: match N {
                    1 => "1",
                    2 => "2",
                    4 => "4",
                    8 => "8",
                    16 => "16",
                    _ => "a fixed size",
                },
            });
        }
        array_at::<N>(self.payload, 0).ok_or_else(|| self.size_err(what, "a fixed size"))
    }
    /// A `u8` payload.
    pub fn u8(&self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }
    /// A host-order `u16` payload.
    pub fn u16(&self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_ne_bytes(self.array(what)?))
    }
    /// A host-order `u32` payload.
    pub fn u32(&self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_ne_bytes(self.array(what)?))
    }
    /// A host-order `u64` payload.
    pub fn u64(&self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_ne_bytes(self.array(what)?))
    }
    /// A network-order 16-bit payload.
    pub fn be16(&self, what: &'static str) -> Result<Be16, DecodeError> {
        Ok(Be16::from_bytes(self.array(what)?))
    }
    /// A network-order 32-bit payload.
    pub fn be32(&self, what: &'static str) -> Result<Be32, DecodeError> {
        Ok(Be32::from_bytes(self.array(what)?))
    }
    /// A network-order 64-bit payload.
    pub fn be64(&self, what: &'static str) -> Result<Be64, DecodeError> {
        Ok(Be64::from_bytes(self.array(what)?))
    }
    /// A flag attribute (no payload expected; a payload is tolerated).
    pub fn flag(&self) -> bool {
        true
    }
    /// A string payload, NUL-terminated or not; stops at the first NUL.
    pub fn string(&self, what: &'static str) -> Result<String, DecodeError> {
        let end = self
            .payload
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.payload.len());
        let bytes = self.payload.get(..end).unwrap_or_default();
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| DecodeError::BadString {
                what,
                kind: self.kind,
            })
    }
    /// An array of host-order `u32` values (the payload length must be a multiple of 4).
    pub fn u32_array(&self, what: &'static str) -> Result<Vec<u32>, DecodeError> {
        if self.payload.len() % 4 != 0 {
            return Err(self.size_err(what, "a multiple of 4"));
        }
        Ok(self
            .payload
            .chunks_exact(4)
            .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
    /// The nested attributes in the payload.
    pub fn nested(&self, what: &'static str) -> AttrIter<'a> {
        AttrIter::new(what, self.payload)
    }
}

/// Too much data for one attribute or message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// An attribute's length does not fit its 16-bit length field.
    #[error("attribute {kind} is {len} bytes, over the 65535-byte netlink attribute limit")]
    AttrTooLong {
        /// The attribute type.
        kind: u16,
        /// The length it would have had.
        len: usize,
    },
}

/// Appends attributes to a byte vector.
///
/// Emitting is infallible per call; a length overflow is remembered and
/// reported by [`AttrWriter::finish`].
#[derive(Debug)]
pub struct AttrWriter<'a> {
    buf: &'a mut Vec<u8>,
    error: Option<EncodeError>,
}

impl<'a> AttrWriter<'a> {
    /// Writes attributes at the end of `buf`.
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        AttrWriter { buf, error: None }
    }

    /// Reports an attribute that was too long, if any.
    pub fn finish(self) -> Result<(), EncodeError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Appends raw bytes (used for fixed headers before the attributes).
    pub fn raw(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// An attribute whose payload `f` writes; the length is patched afterwards.
    pub fn with(&mut self, kind: u16, f: impl FnOnce(&mut AttrWriter<'_>)) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        let inner_error = {
            let mut inner = AttrWriter {
                buf: &mut *self.buf,
                error: None,
            };
            f(&mut inner);
            inner.error
        };
        if self.error.is_none() {
            self.error = inner_error;
        }
        let len = self.buf.len() - start;
        match u16::try_from(len) {
            Ok(l) => {
                if let Some(slot) = self.buf.get_mut(start..start + 2) {
                    slot.copy_from_slice(&l.to_ne_bytes());
                }
            }
            Err(_) => {
                if self.error.is_none() {
                    self.error = Some(EncodeError::AttrTooLong { kind, len });
                }
            }
        }
        self.buf.resize(start + align4(len), 0);
    }

    /// A nested attribute set.
    pub fn nested(&mut self, kind: u16, f: impl FnOnce(&mut AttrWriter<'_>)) {
        self.with(kind, f)
    }
    /// An attribute with raw payload bytes.
    pub fn bytes(&mut self, kind: u16, data: &[u8]) {
        self.with(kind, |w| w.raw(data))
    }
    /// An attribute with no payload.
    pub fn flag(&mut self, kind: u16) {
        self.bytes(kind, &[])
    }
    /// A `u8` attribute.
    pub fn u8(&mut self, kind: u16, v: u8) {
        self.bytes(kind, &[v])
    }
    /// A host-order `u16` attribute.
    pub fn u16(&mut self, kind: u16, v: u16) {
        self.bytes(kind, &v.to_ne_bytes())
    }
    /// A host-order `u32` attribute.
    pub fn u32(&mut self, kind: u16, v: u32) {
        self.bytes(kind, &v.to_ne_bytes())
    }
    /// A host-order `u64` attribute.
    pub fn u64(&mut self, kind: u16, v: u64) {
        self.bytes(kind, &v.to_ne_bytes())
    }
    /// A network-order 16-bit attribute.
    pub fn be16(&mut self, kind: u16, v: Be16) {
        self.bytes(kind, &v.to_bytes())
    }
    /// A network-order 32-bit attribute.
    pub fn be32(&mut self, kind: u16, v: Be32) {
        self.bytes(kind, &v.to_bytes())
    }
    /// A network-order 64-bit attribute.
    pub fn be64(&mut self, kind: u16, v: Be64) {
        self.bytes(kind, &v.to_bytes())
    }
    /// A NUL-terminated string attribute.
    pub fn string(&mut self, kind: u16, s: &str) {
        self.with(kind, |w| {
            w.raw(s.as_bytes());
            w.raw(&[0]);
        })
    }
    /// An array of host-order `u32` values.
    pub fn u32_array(&mut self, kind: u16, v: &[u32]) {
        self.with(kind, |w| {
            for x in v {
                w.raw(&x.to_ne_bytes());
            }
        })
    }
}

/// An attribute set member: knows its type number, how to write its payload
/// and how to read itself back. Unknown types decode to an `Other` variant, so
/// [`Nla::decode`] fails only on a malformed payload of a known type.
pub trait Nla: Sized {
    /// The attribute type number.
    fn kind(&self) -> u16;
    /// Writes the payload (not the header).
    fn emit_payload(&self, w: &mut AttrWriter<'_>);
    /// Decodes one attribute; `depth` counts enclosing nests.
    fn decode(attr: &Attr<'_>, depth: usize) -> Result<Self, DecodeError>;

    /// Writes the whole attribute (header, payload, padding).
    fn emit(&self, w: &mut AttrWriter<'_>) {
        w.with(self.kind(), |w| self.emit_payload(w))
    }
}

/// Writes every attribute of a set.
pub fn emit_all<T: Nla>(w: &mut AttrWriter<'_>, attrs: &[T]) {
    for a in attrs {
        a.emit(w);
    }
}

/// Decodes every attribute in `buf` as `T`.
pub fn decode_all<T: Nla>(
    what: &'static str,
    buf: &[u8],
    depth: usize,
) -> Result<Vec<T>, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep(MAX_DEPTH));
    }
    let mut out = Vec::new();
    for attr in AttrIter::new(what, buf) {
        out.push(T::decode(&attr?, depth)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_pads_and_nests() {
        let mut buf = Vec::new();
        let mut w = AttrWriter::new(&mut buf);
        w.u8(1, 7);
        w.nested(2, |w| w.u32(3, 0x0102_0304));
        w.finish().unwrap();
        let mut expect = vec![5, 0, 1, 0, 7, 0, 0, 0, 12, 0, 2, 0, 8, 0, 3, 0];
        expect.extend_from_slice(&0x0102_0304u32.to_ne_bytes());
        assert_eq!(buf, expect);
        let attrs: Vec<_> = AttrIter::new("t", &buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[0].u8("t").unwrap(), 7);
        let inner: Vec<_> = attrs[1].nested("t").collect::<Result<_, _>>().unwrap();
        assert_eq!(inner[0].u32("t").unwrap(), 0x0102_0304);
    }

    #[test]
    fn unpadded_final_attribute_is_accepted() {
        // A 5-byte payload with no padding after it: length 9, buffer 9 bytes.
        let buf = [9, 0, 1, 0, 1, 2, 3, 4, 5];
        let attrs: Vec<_> = AttrIter::new("t", &buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            attrs,
            vec![Attr {
                kind: 1,
                flags: 0,
                payload: &[1, 2, 3, 4, 5]
            }]
        );
    }

    #[test]
    fn flags_are_stripped_from_kind() {
        let buf = [4, 0, 5, 0x80];
        let a = AttrIter::new("t", &buf).next().unwrap().unwrap();
        assert_eq!((a.kind, a.flags), (5, NLA_F_NESTED));
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert!(AttrIter::new("t", &[3, 0, 1, 0]).next().unwrap().is_err());
        assert!(
            AttrIter::new("t", &[9, 0, 1, 0, 0])
                .next()
                .unwrap()
                .is_err()
        );
        assert!(AttrIter::new("t", &[9, 0]).next().unwrap().is_err());
    }

    #[test]
    fn overlong_attribute_is_reported() {
        let mut buf = Vec::new();
        let mut w = AttrWriter::new(&mut buf);
        w.bytes(1, &vec![0; 70_000]);
        assert!(matches!(
            w.finish(),
            Err(EncodeError::AttrTooLong { kind: 1, .. })
        ));
    }
}
