//! The error every decoder in [`crate::wire`] returns.

use thiserror::Error;

/// Why a byte buffer could not be decoded.
///
/// Decoders never panic: every malformed input maps to one of these variants.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The buffer ended before a fixed-size structure was complete.
    #[error("{what}: need {need} bytes, have {have}")]
    Truncated {
        /// The structure being decoded.
        what: &'static str,
        /// Bytes required.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// A length field points outside its buffer or below its header size.
    #[error("{what}: bad length {len} (buffer holds {available})")]
    BadLength {
        /// The structure whose length is wrong.
        what: &'static str,
        /// The length the field claims.
        len: usize,
        /// The bytes actually available.
        available: usize,
    },
    /// An attribute's payload has the wrong size for its type.
    #[error("attribute {kind} of {what}: payload is {len} bytes, expected {expected}")]
    AttrSize {
        /// The attribute set (e.g. "flow key").
        what: &'static str,
        /// The attribute type number.
        kind: u16,
        /// The payload length found.
        len: usize,
        /// The payload length expected (a description, e.g. "4" or "at least 1").
        expected: &'static str,
    },
    /// A string attribute is not valid UTF-8.
    #[error("attribute {kind} of {what}: not a UTF-8 string")]
    BadString {
        /// The attribute set.
        what: &'static str,
        /// The attribute type number.
        kind: u16,
    },
    /// Nested attributes go deeper than the decoder allows.
    #[error("attributes nested deeper than {0} levels")]
    TooDeep(usize),
    /// A message carries the wrong netlink type for the decoder it was given to.
    #[error("unexpected message: {0}")]
    Unexpected(&'static str),
}

/// Checks that `buf` holds at least `need` bytes.
pub(crate) fn need(what: &'static str, buf: &[u8], need: usize) -> Result<(), DecodeError> {
    if buf.len() < need {
        Err(DecodeError::Truncated {
            what,
            need,
            have: buf.len(),
        })
    } else {
        Ok(())
    }
}
