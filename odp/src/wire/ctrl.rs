//! The generic-netlink control family (`nlctrl`): resolving a family name to
//! its id, version and multicast groups.

use super::error::DecodeError;
use super::netlink::{GenlHeader, RequestHeader, encode_genl};
use super::nla::{AttrIter, EncodeError};

/// The fixed id of the control family.
pub const GENL_ID_CTRL: u16 = 0x10;
/// Control command: a family description (reply).
pub const CTRL_CMD_NEWFAMILY: u8 = 1;
/// Control command: look a family up.
pub const CTRL_CMD_GETFAMILY: u8 = 3;
/// Control attribute: family id (`u16`).
pub const CTRL_ATTR_FAMILY_ID: u16 = 1;
/// Control attribute: family name (string).
pub const CTRL_ATTR_FAMILY_NAME: u16 = 2;
/// Control attribute: family version (`u32`).
pub const CTRL_ATTR_VERSION: u16 = 3;
/// Control attribute: user header size (`u32`).
pub const CTRL_ATTR_HDRSIZE: u16 = 4;
/// Control attribute: highest attribute number (`u32`).
pub const CTRL_ATTR_MAXATTR: u16 = 5;
/// Control attribute: multicast groups (nested array).
pub const CTRL_ATTR_MCAST_GROUPS: u16 = 7;
/// Multicast group attribute: name (string).
pub const CTRL_ATTR_MCAST_GRP_NAME: u16 = 1;
/// Multicast group attribute: id (`u32`).
pub const CTRL_ATTR_MCAST_GRP_ID: u16 = 2;

/// A generic-netlink multicast group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McastGroup {
    /// The group name (the OVS families name theirs after the family).
    pub name: String,
    /// The group id to join.
    pub id: u32,
}

/// What the kernel says about a family.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FamilyInfo {
    /// The family name.
    pub name: String,
    /// The family id: the netlink message type of its messages.
    pub id: u16,
    /// The family version the kernel implements.
    pub version: u32,
    /// The family's user header size.
    pub hdrsize: u32,
    /// The highest attribute number the family knows.
    pub maxattr: u32,
    /// The family's multicast groups.
    pub mcast_groups: Vec<McastGroup>,
}

impl FamilyInfo {
    /// The id of the multicast group called `name`.
    pub fn group(&self, name: &str) -> Option<u32> {
        self.mcast_groups
            .iter()
            .find(|g| g.name == name)
            .map(|g| g.id)
    }

    /// Decodes a `CTRL_CMD_NEWFAMILY` reply body (the bytes after the netlink
    /// header). Unknown attributes are skipped.
    pub fn parse(body: &[u8]) -> Result<Self, DecodeError> {
        let genl = GenlHeader::parse(body)?;
        if genl.cmd != CTRL_CMD_NEWFAMILY {
            return Err(DecodeError::Unexpected("control reply is not NEWFAMILY"));
        }
        const W: &str = "nlctrl";
        let mut info = FamilyInfo::default();
        for attr in AttrIter::new(W, body.get(4..).unwrap_or_default()) {
            let attr = attr?;
            match attr.kind {
                CTRL_ATTR_FAMILY_ID => info.id = attr.u16(W)?,
                CTRL_ATTR_FAMILY_NAME => info.name = attr.string(W)?,
                CTRL_ATTR_VERSION => info.version = attr.u32(W)?,
                CTRL_ATTR_HDRSIZE => info.hdrsize = attr.u32(W)?,
                CTRL_ATTR_MAXATTR => info.maxattr = attr.u32(W)?,
                CTRL_ATTR_MCAST_GROUPS => {
                    for grp in attr.nested(W) {
                        let mut name = None;
                        let mut id = None;
                        for a in grp?.nested(W) {
                            let a = a?;
                            match a.kind {
                                CTRL_ATTR_MCAST_GRP_NAME => name = Some(a.string(W)?),
                                CTRL_ATTR_MCAST_GRP_ID => id = Some(a.u32(W)?),
                                _ => {}
                            }
                        }
                        if let (Some(name), Some(id)) = (name, id) {
                            info.mcast_groups.push(McastGroup { name, id });
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(info)
    }
}

/// Appends a `CTRL_CMD_GETFAMILY` request for `name` to `buf`.
pub fn encode_get_family(
    buf: &mut Vec<u8>,
    flags: u16,
    seq: u32,
    name: &str,
) -> Result<(), EncodeError> {
    let req = RequestHeader {
        family: GENL_ID_CTRL,
        flags,
        seq,
        pid: 0,
        genl: GenlHeader {
            cmd: CTRL_CMD_GETFAMILY,
            version: 1,
        },
    };
    encode_genl(buf, req, |w| w.string(CTRL_ATTR_FAMILY_NAME, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::nla::AttrWriter;

    #[test]
    fn get_family_request_bytes() {
        let mut buf = Vec::new();
        encode_get_family(&mut buf, 0x4, 1, "ovs_flow").unwrap();
        // 16 header + 4 genl + attr(4 + 9 -> 12 padded)
        assert_eq!(buf.len(), 36);
        assert_eq!(&buf[16..20], &[3, 1, 0, 0]);
        assert_eq!(&buf[20..24], &[13, 0, 2, 0]);
        assert_eq!(&buf[24..36], b"ovs_flow\0\0\0\0");
    }

    #[test]
    fn parse_reply_with_groups() {
        let mut body = vec![CTRL_CMD_NEWFAMILY, 2, 0, 0];
        let mut w = AttrWriter::new(&mut body);
        w.string(CTRL_ATTR_FAMILY_NAME, "ovs_vport");
        w.u16(CTRL_ATTR_FAMILY_ID, 0x22);
        w.u32(CTRL_ATTR_VERSION, 1);
        w.u32(CTRL_ATTR_HDRSIZE, 4);
        w.nested(CTRL_ATTR_MCAST_GROUPS, |w| {
            w.nested(1, |w| {
                w.u32(CTRL_ATTR_MCAST_GRP_ID, 7);
                w.string(CTRL_ATTR_MCAST_GRP_NAME, "ovs_vport");
            })
        });
        w.u16(99, 0);
        w.finish().unwrap();
        let info = FamilyInfo::parse(&body).unwrap();
        assert_eq!(info.id, 0x22);
        assert_eq!(info.name, "ovs_vport");
        assert_eq!(info.version, 1);
        assert_eq!(info.group("ovs_vport"), Some(7));
    }
}
