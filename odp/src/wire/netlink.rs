//! Netlink and generic-netlink framing: `struct nlmsghdr`, `struct
//! genlmsghdr`, the OVS `struct ovs_header`, acknowledgements and errors with
//! extended-ack attributes.

use super::error::{DecodeError, need};
use super::nla::{AttrIter, AttrWriter, EncodeError, align4};
use super::types::array_at;

/// Message type: nothing (to be skipped).
pub const NLMSG_NOOP: u16 = 1;
/// Message type: an error or an acknowledgement (`struct nlmsgerr`).
pub const NLMSG_ERROR: u16 = 2;
/// Message type: end of a multi-part dump.
pub const NLMSG_DONE: u16 = 3;
/// Message type: data lost.
pub const NLMSG_OVERRUN: u16 = 4;

/// Flag: this is a request.
pub const NLM_F_REQUEST: u16 = 0x1;
/// Flag: part of a multi-part reply.
pub const NLM_F_MULTI: u16 = 0x2;
/// Flag: ask for an acknowledgement.
pub const NLM_F_ACK: u16 = 0x4;
/// Flag: echo the request back (OVS then builds a reply for flows).
pub const NLM_F_ECHO: u16 = 0x8;
/// Flag on dump replies: the dump was interrupted by a change.
pub const NLM_F_DUMP_INTR: u16 = 0x10;
/// GET flag: return the whole table.
pub const NLM_F_ROOT: u16 = 0x100;
/// GET flag: return all matching entries.
pub const NLM_F_MATCH: u16 = 0x200;
/// GET flag: a dump (`ROOT | MATCH`).
pub const NLM_F_DUMP: u16 = NLM_F_ROOT | NLM_F_MATCH;
/// NEW flag: replace an existing object.
pub const NLM_F_REPLACE: u16 = 0x100;
/// NEW flag: fail if the object exists.
pub const NLM_F_EXCL: u16 = 0x200;
/// NEW flag: create the object if it does not exist.
pub const NLM_F_CREATE: u16 = 0x400;
/// ERROR flag: the original request's payload was left out.
pub const NLM_F_CAPPED: u16 = 0x100;
/// ERROR flag: extended-ack attributes follow.
pub const NLM_F_ACK_TLVS: u16 = 0x200;

/// Extended-ack attribute: a human-readable error message.
pub const NLMSGERR_ATTR_MSG: u16 = 1;
/// Extended-ack attribute: offset of the offending attribute in the request.
pub const NLMSGERR_ATTR_OFFS: u16 = 2;

/// Size of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
/// Size of `struct genlmsghdr`.
pub const GENL_HDRLEN: usize = 4;
/// Size of `struct ovs_header`.
pub const OVS_HDRLEN: usize = 4;

/// `struct nlmsghdr`. All fields are in host byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NlMsgHeader {
    /// Length of the message including this header.
    pub len: u32,
    /// Message type: a control type (`NLMSG_*`) or a generic-netlink family id.
    pub kind: u16,
    /// `NLM_F_*` flags.
    pub flags: u16,
    /// Sequence number; 0 on unsolicited kernel messages such as upcalls.
    pub seq: u32,
    /// Port id of the sender (0 for the kernel) or of the requester.
    pub pid: u32,
}

impl NlMsgHeader {
    /// Decodes the first 16 bytes of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Self, DecodeError> {
        let b: [u8; NLMSG_HDRLEN] = array_at(buf, 0).ok_or(DecodeError::Truncated {
            what: "nlmsghdr",
            need: NLMSG_HDRLEN,
            have: buf.len(),
        })?;
        Ok(NlMsgHeader {
            len: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            kind: u16::from_ne_bytes([b[4], b[5]]),
            flags: u16::from_ne_bytes([b[6], b[7]]),
            seq: u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
            pid: u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
        })
    }

    /// The 16-byte wire form.
    pub fn to_bytes(&self) -> [u8; NLMSG_HDRLEN] {
        let mut b = [0u8; NLMSG_HDRLEN];
        b[0..4].copy_from_slice(&self.len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.kind.to_ne_bytes());
        b[6..8].copy_from_slice(&self.flags.to_ne_bytes());
        b[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        b[12..16].copy_from_slice(&self.pid.to_ne_bytes());
        b
    }
}

/// `struct genlmsghdr`: the command and family version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GenlHeader {
    /// The family-specific command.
    pub cmd: u8,
    /// The family interface version the sender speaks.
    pub version: u8,
}

impl GenlHeader {
    /// Decodes the first 4 bytes of `buf` (the reserved field is ignored).
    pub fn parse(buf: &[u8]) -> Result<Self, DecodeError> {
        let b: [u8; GENL_HDRLEN] = array_at(buf, 0).ok_or(DecodeError::Truncated {
            what: "genlmsghdr",
            need: GENL_HDRLEN,
            have: buf.len(),
        })?;
        Ok(GenlHeader {
            cmd: b[0],
            version: b[1],
        })
    }
    /// The 4-byte wire form.
    pub fn to_bytes(&self) -> [u8; GENL_HDRLEN] {
        [self.cmd, self.version, 0, 0]
    }
}

/// `struct ovs_header`: which datapath a request or reply concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OvsHeader {
    /// The ifindex of the datapath's local port, or 0 (datapath requests may
    /// then select by name).
    pub dp_ifindex: i32,
}

impl OvsHeader {
    /// Decodes the first 4 bytes of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Self, DecodeError> {
        let b: [u8; OVS_HDRLEN] = array_at(buf, 0).ok_or(DecodeError::Truncated {
            what: "ovs_header",
            need: OVS_HDRLEN,
            have: buf.len(),
        })?;
        Ok(OvsHeader {
            dp_ifindex: i32::from_ne_bytes(b),
        })
    }
}

/// One netlink message borrowed from a receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawMessage<'a> {
    /// The message header.
    pub header: NlMsgHeader,
    /// Everything after the header, up to `nlmsg_len`.
    pub body: &'a [u8],
}

/// Iterates over the netlink messages packed in one datagram.
///
/// A message's `nlmsg_len` need not be a multiple of four when it is the last
/// one in the buffer (the `UNALIGNED` datapath feature).
#[derive(Debug, Clone)]
pub struct MessageIter<'a> {
    buf: &'a [u8],
}

impl<'a> MessageIter<'a> {
    /// Reads the messages in `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        MessageIter { buf }
    }
}

impl<'a> Iterator for MessageIter<'a> {
    type Item = Result<RawMessage<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let header = match NlMsgHeader::parse(self.buf) {
            Ok(h) => h,
            Err(e) => {
                self.buf = &[];
                return Some(Err(e));
            }
        };
        let len = header.len as usize;
        let available = self.buf.len();
        if len < NLMSG_HDRLEN || len > available {
            self.buf = &[];
            return Some(Err(DecodeError::BadLength {
                what: "nlmsghdr",
                len,
                available,
            }));
        }
        let body = self.buf.get(NLMSG_HDRLEN..len).unwrap_or_default();
        let step = align4(len).min(available);
        self.buf = self.buf.get(step..).unwrap_or_default();
        Some(Ok(RawMessage { header, body }))
    }
}

/// A decoded `NLMSG_ERROR` message: an acknowledgement when `errno` is 0.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorMessage {
    /// The positive errno value, or 0 for an acknowledgement.
    pub errno: i32,
    /// The header of the request this answers.
    pub request: NlMsgHeader,
    /// The kernel's extended-ack message (`NLMSGERR_ATTR_MSG`), if any.
    pub ext_msg: Option<String>,
    /// The offset of the offending attribute in the request (`NLMSGERR_ATTR_OFFS`).
    pub ext_offset: Option<u32>,
}

/// What a netlink message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload<'a> {
    /// A no-op message.
    Noop,
    /// Error or acknowledgement.
    Error(ErrorMessage),
    /// End of a dump; carries the dump's final status (a positive errno or 0)
    /// and extended-ack text.
    Done(ErrorMessage),
    /// The kernel lost data.
    Overrun,
    /// A family message: the bytes after the netlink header.
    Data(&'a [u8]),
}

fn parse_ext_ack(buf: &[u8], out: &mut ErrorMessage) -> Result<(), DecodeError> {
    for attr in AttrIter::new("extended ack", buf) {
        let attr = attr?;
        match attr.kind {
            NLMSGERR_ATTR_MSG => out.ext_msg = Some(attr.string("extended ack")?),
            NLMSGERR_ATTR_OFFS => out.ext_offset = Some(attr.u32("extended ack")?),
            _ => {}
        }
    }
    Ok(())
}

impl<'a> RawMessage<'a> {
    /// Classifies the message by its netlink type.
    pub fn payload(&self) -> Result<Payload<'a>, DecodeError> {
        match self.header.kind {
            NLMSG_NOOP => Ok(Payload::Noop),
            NLMSG_OVERRUN => Ok(Payload::Overrun),
            NLMSG_ERROR => {
                need("nlmsgerr", self.body, 4 + NLMSG_HDRLEN)?;
                let code = array_at::<4>(self.body, 0)
                    .map(i32::from_ne_bytes)
                    .unwrap_or(0);
                let request = NlMsgHeader::parse(self.body.get(4..).unwrap_or_default())?;
                let mut msg = ErrorMessage {
                    errno: code.checked_neg().unwrap_or(i32::MAX),
                    request,
                    ext_msg: None,
                    ext_offset: None,
                };
                if self.header.flags & NLM_F_ACK_TLVS != 0 {
                    let mut off = 4 + NLMSG_HDRLEN;
                    if self.header.flags & NLM_F_CAPPED == 0 && code != 0 {
                        let orig = (request.len as usize).saturating_sub(NLMSG_HDRLEN);
                        off = off.saturating_add(align4(orig));
                    }
                    let tlvs = self.body.get(off..).unwrap_or_default();
                    parse_ext_ack(tlvs, &mut msg)?;
                }
                Ok(Payload::Error(msg))
            }
            NLMSG_DONE => {
                let code = array_at::<4>(self.body, 0)
                    .map(i32::from_ne_bytes)
                    .unwrap_or(0);
                let mut msg = ErrorMessage {
                    errno: code.checked_neg().unwrap_or(i32::MAX),
                    ..ErrorMessage::default()
                };
                if self.header.flags & NLM_F_ACK_TLVS != 0 {
                    parse_ext_ack(self.body.get(4..).unwrap_or_default(), &mut msg)?;
                }
                Ok(Payload::Done(msg))
            }
            _ => Ok(Payload::Data(self.body)),
        }
    }
}

/// Addressing for one outgoing generic-netlink request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// The family id (the netlink message type).
    pub family: u16,
    /// `NLM_F_*` flags; `NLM_F_REQUEST` is added by the encoder.
    pub flags: u16,
    /// Sequence number.
    pub seq: u32,
    /// The sender's port id (0 lets the kernel fill it in).
    pub pid: u32,
    /// Command and version.
    pub genl: GenlHeader,
}

/// Appends one generic-netlink message to `buf`: netlink header, genl header,
/// then whatever `body` writes (fixed headers and attributes). Several calls
/// on the same buffer build a batch for one `send`.
pub fn encode_genl(
    buf: &mut Vec<u8>,
    req: RequestHeader,
    body: impl FnOnce(&mut AttrWriter<'_>),
) -> Result<(), EncodeError> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; NLMSG_HDRLEN]);
    buf.extend_from_slice(&req.genl.to_bytes());
    let mut w = AttrWriter::new(buf);
    body(&mut w);
    let res = w.finish();
    let len = buf.len() - start;
    let header = NlMsgHeader {
        len: u32::try_from(len).unwrap_or(u32::MAX),
        kind: req.family,
        flags: req.flags | NLM_F_REQUEST,
        seq: req.seq,
        pid: req.pid,
    };
    if let Some(slot) = buf.get_mut(start..start + NLMSG_HDRLEN) {
        slot.copy_from_slice(&header.to_bytes());
    }
    if res.is_err() {
        buf.truncate(start);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack_bytes(code: i32, flags: u16, tlvs: &[u8]) -> Vec<u8> {
        let req = NlMsgHeader {
            len: 24,
            kind: 0x20,
            flags: 5,
            seq: 9,
            pid: 0,
        };
        let mut body = code.to_ne_bytes().to_vec();
        body.extend_from_slice(&req.to_bytes());
        body.extend_from_slice(tlvs);
        let hdr = NlMsgHeader {
            len: (NLMSG_HDRLEN + body.len()) as u32,
            kind: NLMSG_ERROR,
            flags,
            seq: 9,
            pid: 1234,
        };
        let mut out = hdr.to_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn ack_and_error_with_ext_msg() {
        let ack = ack_bytes(0, NLM_F_CAPPED, &[]);
        let m = MessageIter::new(&ack).next().unwrap().unwrap();
        let Payload::Error(e) = m.payload().unwrap() else {
            panic!()
        };
        assert_eq!((e.errno, e.request.seq, e.ext_msg), (0, 9, None));

        let mut tlv = Vec::new();
        AttrWriter::new(&mut tlv).string(NLMSGERR_ATTR_MSG, "bad key");
        let err = ack_bytes(-22, NLM_F_CAPPED | NLM_F_ACK_TLVS, &tlv);
        let m = MessageIter::new(&err).next().unwrap().unwrap();
        let Payload::Error(e) = m.payload().unwrap() else {
            panic!()
        };
        assert_eq!(e.errno, 22);
        assert_eq!(e.ext_msg.as_deref(), Some("bad key"));
    }

    #[test]
    fn error_with_uncapped_payload_skips_request_body() {
        // The request was 24 bytes: 8 bytes of payload echoed back, then TLVs.
        let mut tail = vec![0xaa; 8];
        AttrWriter::new(&mut tail).string(NLMSGERR_ATTR_MSG, "x");
        let err = ack_bytes(-2, NLM_F_ACK_TLVS, &tail);
        let m = MessageIter::new(&err).next().unwrap().unwrap();
        let Payload::Error(e) = m.payload().unwrap() else {
            panic!()
        };
        assert_eq!((e.errno, e.ext_msg.as_deref()), (2, Some("x")));
    }

    #[test]
    fn encode_genl_layout() {
        let mut buf = Vec::new();
        let req = RequestHeader {
            family: 0x10,
            flags: NLM_F_ACK,
            seq: 7,
            pid: 0,
            genl: GenlHeader { cmd: 3, version: 1 },
        };
        encode_genl(&mut buf, req, |w| w.u16(1, 0x1c)).unwrap();
        let mut expect = Vec::new();
        expect.extend_from_slice(&28u32.to_ne_bytes());
        expect.extend_from_slice(&0x10u16.to_ne_bytes());
        expect.extend_from_slice(&5u16.to_ne_bytes());
        expect.extend_from_slice(&7u32.to_ne_bytes());
        expect.extend_from_slice(&0u32.to_ne_bytes());
        expect.extend_from_slice(&[3, 1, 0, 0]);
        expect.extend_from_slice(&[6, 0, 1, 0]);
        expect.extend_from_slice(&0x1cu16.to_ne_bytes());
        expect.extend_from_slice(&[0, 0]);
        assert_eq!(buf, expect);
    }

    #[test]
    fn unaligned_last_message() {
        let hdr = NlMsgHeader {
            len: 17,
            kind: 0x30,
            flags: 0,
            seq: 0,
            pid: 0,
        };
        let mut buf = hdr.to_bytes().to_vec();
        buf.push(0x42);
        let msgs: Vec<_> = MessageIter::new(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].payload().unwrap(), Payload::Data(&[0x42]));
    }
}
