//! The message shape shared by the four OVS families: genl header, `struct
//! ovs_header`, then a list of typed attributes.

use super::error::DecodeError;
use super::netlink::{GENL_HDRLEN, GenlHeader, OVS_HDRLEN, OvsHeader, RequestHeader, encode_genl};
use super::nla::{EncodeError, Nla, decode_all, emit_all};

/// Commands of the datapath, vport and flow families (they share numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjCmd {
    /// Create (or a notification/reply describing an object).
    New,
    /// Delete.
    Del,
    /// Look up, or dump with `NLM_F_DUMP`.
    Get,
    /// Modify.
    Set,
    /// A command number this crate does not know.
    Other(u8),
}

impl From<u8> for ObjCmd {
    fn from(v: u8) -> Self {
        match v {
            1 => ObjCmd::New,
            2 => ObjCmd::Del,
            3 => ObjCmd::Get,
            4 => ObjCmd::Set,
            o => ObjCmd::Other(o),
        }
    }
}

impl From<ObjCmd> for u8 {
    fn from(c: ObjCmd) -> u8 {
        match c {
            ObjCmd::New => 1,
            ObjCmd::Del => 2,
            ObjCmd::Get => 3,
            ObjCmd::Set => 4,
            ObjCmd::Other(o) => o,
        }
    }
}

/// Ties an attribute type to its family.
pub trait OvsFamily: Nla {
    /// The generic-netlink family name.
    const NAME: &'static str;
    /// The family version requests are sent with.
    const VERSION: u8;
    /// The family's command type.
    type Cmd: Copy + From<u8> + Into<u8> + std::fmt::Debug + PartialEq;
}

/// One message of an OVS family.
#[derive(Debug, Clone, PartialEq)]
pub struct OvsMessage<A: OvsFamily> {
    /// The command.
    pub cmd: A::Cmd,
    /// `ovs_header.dp_ifindex`.
    pub dp_ifindex: i32,
    /// The attributes, in order.
    pub attrs: Vec<A>,
}

impl<A: OvsFamily> OvsMessage<A> {
    /// A message with the given command, datapath and attributes.
    pub fn new(cmd: A::Cmd, dp_ifindex: i32, attrs: Vec<A>) -> Self {
        OvsMessage {
            cmd,
            dp_ifindex,
            attrs,
        }
    }

    /// Appends this message as a request to `buf` (see [`encode_genl`]).
    pub fn encode(
        &self,
        buf: &mut Vec<u8>,
        family: u16,
        flags: u16,
        seq: u32,
    ) -> Result<(), EncodeError> {
        let req = RequestHeader {
            family,
            flags,
            seq,
            pid: 0,
            genl: GenlHeader {
                cmd: self.cmd.into(),
                version: A::VERSION,
            },
        };
        encode_genl(buf, req, |w| {
            w.raw(&self.dp_ifindex.to_ne_bytes());
            emit_all(w, &self.attrs);
        })
    }

    /// Decodes a message body (the bytes after the netlink header).
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let genl = GenlHeader::parse(body)?;
        let rest = body.get(GENL_HDRLEN..).unwrap_or_default();
        let ovs = OvsHeader::parse(rest)?;
        let attrs = decode_all(A::NAME, rest.get(OVS_HDRLEN..).unwrap_or_default(), 0)?;
        Ok(OvsMessage {
            cmd: A::Cmd::from(genl.cmd),
            dp_ifindex: ovs.dp_ifindex,
            attrs,
        })
    }

    /// The first attribute for which `f` returns `Some`.
    pub fn find<'s, T>(&'s self, f: impl FnMut(&'s A) -> Option<T>) -> Option<T> {
        self.attrs.iter().find_map(f)
    }
}
