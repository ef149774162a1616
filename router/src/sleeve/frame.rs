//! The sleeve datagram layout, shared with Weave Net 2.8.1.
//!
//! A sleeve UDP datagram starts with the six-byte name of the peer that
//! sent it. What follows is either the plaintext frame list or, when the
//! connection is encrypted, a sealed frame list (see [`super::crypto`]).
//!
//! The frame list is a run of records, each
//!
//! ```text
//! +----------+----------+-----------------+------------------------+
//! | src name | dst name | length (u16 BE) | ethernet frame, length |
//! |  6 bytes |  6 bytes |     2 bytes     |         bytes          |
//! +----------+----------+-----------------+------------------------+
//! ```
//!
//! with `src`/`dst` naming the peers the frame travels between (which
//! differ from the datagram's sender when it is relayed). A datagram holds
//! as many records as fit under the size limit in force.

use std::ops::Range;

/// Bytes in a peer name on the wire.
pub const NAME_SIZE: usize = 6;

/// Bytes in front of each frame: source name, destination name, length.
pub const FRAME_HEADER_LEN: usize = NAME_SIZE + NAME_SIZE + 2;

/// Largest datagram the sleeve ever builds or expects.
pub const MAX_UDP_PACKET_SIZE: usize = 65535;

/// IPv4 plus UDP header bytes that wrap every sleeve datagram.
pub const UDP_OVERHEAD: usize = 28;

/// Bytes of an Ethernet header (no VLAN tag).
pub const ETHERNET_OVERHEAD: usize = 14;

/// A peer name as its six wire bytes.
pub type NameBytes = [u8; NAME_SIZE];

/// Why a datagram or frame list could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The datagram is shorter than the sender name.
    #[error("datagram of {0} bytes is too short to hold a sender name")]
    NoSender(usize),
    /// A record announces more frame bytes than remain.
    #[error("too short; expected frame of length {expected}, got {got}")]
    Truncated {
        /// The length the record header announced.
        expected: usize,
        /// The bytes left after the header.
        got: usize,
    },
    /// Fewer bytes than a record header remain after the last record.
    #[error("{0} octets of trailing garbage")]
    TrailingGarbage(usize),
}

/// A frame cannot be encoded because its length does not fit in 16 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame of {0} bytes does not fit a sleeve record")]
pub struct FrameTooLong(pub usize);

/// Splits a received datagram into its sender's name and the rest.
pub fn split_sender(datagram: &[u8]) -> Result<(NameBytes, &[u8]), FrameError> {
    let (name, rest) = datagram
        .split_first_chunk::<NAME_SIZE>()
        .ok_or(FrameError::NoSender(datagram.len()))?;
    Ok((*name, rest))
}

/// One record of a frame list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef<'a> {
    /// The peer the frame comes from.
    pub src: NameBytes,
    /// The peer the frame goes to.
    pub dst: NameBytes,
    /// The Ethernet frame.
    pub frame: &'a [u8],
}

/// Iterates over the records of a plaintext frame list.
///
/// Records are yielded in order; a malformed tail yields one error and
/// then the iteration ends, so the records before it are still usable (as
/// Weave delivers them).
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    rest: &'a [u8],
    done: bool,
}

/// Decodes a plaintext frame list.
pub fn frames(list: &[u8]) -> Frames<'_> {
    Frames {
        rest: list,
        done: false,
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<FrameRef<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let Some((header, body)) = self.rest.split_first_chunk::<FRAME_HEADER_LEN>() else {
            self.done = true;
            return match self.rest.len() {
                0 => None,
                n => Some(Err(FrameError::TrailingGarbage(n))),
            };
        };
        let (src, header) = header.split_at(NAME_SIZE);
        let (dst, len) = header.split_at(NAME_SIZE);
        let src: NameBytes = src.try_into().unwrap_or_default();
        let dst: NameBytes = dst.try_into().unwrap_or_default();
        let len = usize::from(u16::from_be_bytes([
            len.first().copied().unwrap_or(0),
            len.get(1).copied().unwrap_or(0),
        ]));
        let Some((frame, rest)) = body.split_at_checked(len) else {
            self.done = true;
            return Some(Err(FrameError::Truncated {
                expected: len,
                got: body.len(),
            }));
        };
        self.rest = rest;
        Some(Ok(FrameRef { src, dst, frame }))
    }
}

/// Appends one record to a frame list.
pub fn append_frame(
    list: &mut Vec<u8>,
    src: &NameBytes,
    dst: &NameBytes,
    frame: &[u8],
) -> Result<(), FrameTooLong> {
    append_frame_parts(list, src, dst, [frame, &[]])
}

/// Appends one record whose frame is the concatenation of `parts` (a
/// segment's headers and its payload, copied straight from where each
/// lies).
pub fn append_frame_parts(
    list: &mut Vec<u8>,
    src: &NameBytes,
    dst: &NameBytes,
    parts: [&[u8]; 2],
) -> Result<(), FrameTooLong> {
    let frame_len = parts[0].len() + parts[1].len();
    let len = u16::try_from(frame_len).map_err(|_| FrameTooLong(frame_len))?;
    list.reserve(FRAME_HEADER_LEN + frame_len);
    list.extend_from_slice(src);
    list.extend_from_slice(dst);
    list.extend_from_slice(&len.to_be_bytes());
    list.extend_from_slice(parts[0]);
    list.extend_from_slice(parts[1]);
    Ok(())
}

/// A datagram being filled with frames before it is sealed.
///
/// The buffer starts with room for the whole datagram header (sender
/// name, and for encrypted streams the sequence number and the
/// authentication tag), so sealing works in place and the length of the
/// buffer is always the length of the datagram it will become.
#[derive(Debug, Clone)]
pub struct DatagramBuilder {
    buf: Vec<u8>,
    header_len: usize,
    frames: usize,
}

impl DatagramBuilder {
    /// An empty datagram from `sender` whose header takes `header_len`
    /// bytes (at least the name; the rest is filled in when sealed).
    pub fn new(sender: &NameBytes, header_len: usize) -> Self {
        let header_len = header_len.max(NAME_SIZE);
        let mut buf = Vec::with_capacity(header_len + 1500);
        buf.extend_from_slice(sender);
        buf.resize(header_len, 0);
        DatagramBuilder {
            buf,
            header_len,
            frames: 0,
        }
    }

    /// Bytes the datagram has now (header included).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no frame has been added.
    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// How many frames have been added.
    pub fn frame_count(&self) -> usize {
        self.frames
    }

    /// Whether a frame of `frame_len` bytes can be added without the
    /// datagram growing past `limit` bytes.
    pub fn fits(&self, frame_len: usize, limit: usize) -> bool {
        self.buf.len() + FRAME_HEADER_LEN + frame_len <= limit
    }

    /// Adds one record.
    pub fn push(
        &mut self,
        src: &NameBytes,
        dst: &NameBytes,
        frame: &[u8],
    ) -> Result<(), FrameTooLong> {
        self.push_parts(src, dst, [frame, &[]])
    }

    /// Adds one record whose frame is the concatenation of `parts`.
    pub fn push_parts(
        &mut self,
        src: &NameBytes,
        dst: &NameBytes,
        parts: [&[u8]; 2],
    ) -> Result<(), FrameTooLong> {
        append_frame_parts(&mut self.buf, src, dst, parts)?;
        self.frames += 1;
        Ok(())
    }

    /// Where the frame list sits in the buffer.
    pub fn body_range(&self) -> Range<usize> {
        self.header_len..self.buf.len()
    }

    /// Gives up the buffer (header and frame list) for sealing.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NameBytes = [0, 0, 0, 0, 0, 1];
    const B: NameBytes = [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff];

    #[test]
    fn golden_plain_datagram() {
        let mut d = DatagramBuilder::new(&A, NAME_SIZE);
        d.push(&A, &B, &[1, 2, 3]).unwrap();
        d.push(&B, &A, &[]).unwrap();
        assert_eq!(d.frame_count(), 2);
        let bytes = d.into_buffer();
        let want: Vec<u8> = [
            &A[..],
            &A[..],
            &B[..],
            &[0x00, 0x03, 1, 2, 3],
            &B[..],
            &A[..],
            &[0x00, 0x00],
        ]
        .concat();
        assert_eq!(bytes, want);
        let (sender, rest) = split_sender(&bytes).unwrap();
        assert_eq!(sender, A);
        let got: Vec<_> = frames(rest).collect::<Result<_, _>>().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].src, got[0].dst, got[0].frame),
            (A, B, &[1, 2, 3][..])
        );
        assert_eq!((got[1].src, got[1].dst, got[1].frame), (B, A, &[][..]));
    }

    #[test]
    fn length_is_big_endian() {
        let mut list = Vec::new();
        append_frame(&mut list, &A, &B, &[0u8; 0x1234]).unwrap();
        assert_eq!(&list[12..14], &[0x12, 0x34]);
        assert_eq!(
            append_frame(&mut list, &A, &B, &vec![0u8; 65536]),
            Err(FrameTooLong(65536))
        );
    }

    #[test]
    fn errors_are_typed_and_keep_earlier_frames() {
        assert_eq!(split_sender(&[1, 2, 3]), Err(FrameError::NoSender(3)));
        let mut list = Vec::new();
        append_frame(&mut list, &A, &B, &[9; 4]).unwrap();
        let mut bad = list.clone();
        bad.extend_from_slice(&[1, 2, 3]);
        let got: Vec<_> = frames(&bad).collect();
        assert_eq!(got.len(), 2);
        assert!(got[0].is_ok());
        assert_eq!(got[1], Err(FrameError::TrailingGarbage(3)));

        let mut short = list.clone();
        append_frame(&mut short, &A, &B, &[7; 10]).unwrap();
        short.truncate(short.len() - 4);
        let got: Vec<_> = frames(&short).collect();
        assert_eq!(
            got[1],
            Err(FrameError::Truncated {
                expected: 10,
                got: 6
            })
        );
        assert_eq!(got.len(), 2);
        assert_eq!(frames(&[]).count(), 0);
    }

    #[test]
    fn builder_fits_counts_the_whole_datagram() {
        let d = DatagramBuilder::new(&A, 30);
        assert_eq!(d.len(), 30);
        assert!(d.fits(100, 30 + 14 + 100));
        assert!(!d.fits(101, 30 + 14 + 100));
        assert_eq!(d.body_range(), 30..30);
    }
}
