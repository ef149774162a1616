//! The datapath side of the set-up, behind a small trait.
//!
//! Creating an Open vSwitch datapath and its vports is generic-netlink work
//! that belongs to the `odp` crate; the bridge set-up only needs the four
//! operations of [`DatapathOps`]. The odp-backed implementation provides
//! them; this module also has the one question that can be answered
//! without it: does the kernel offer the openvswitch families at all
//! ([`probe_openvswitch`])?

use std::io;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_GENERIC};
use odp::wire::ctrl::{FamilyInfo, encode_get_family};
use odp::wire::netlink::{MessageIter, NLM_F_ACK, Payload};

use super::plan::OdpSupport;

/// The generic-netlink family every datapath operation goes through.
pub const DATAPATH_FAMILY: &str = "ovs_datapath";
/// The family of vport operations.
pub const VPORT_FAMILY: &str = "ovs_vport";

/// A datapath operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {message}")]
pub struct DatapathError {
    /// What was attempted.
    pub op: String,
    /// Why it failed.
    pub message: String,
}

/// What the bridge set-up and `reset` need from a datapath driver. Every
/// operation is idempotent.
pub trait DatapathOps {
    /// Creates the datapath `name` (its internal port is a netdev of the
    /// same name) unless it exists.
    fn create_datapath(&mut self, name: &str) -> Result<(), DatapathError>;
    /// Makes the existing netdev `ifname` a port of `datapath`, unless it is
    /// one already.
    fn add_netdev_port(&mut self, datapath: &str, ifname: &str) -> Result<(), DatapathError>;
    /// Deletes the datapath `name`; `Ok(false)` if there was none.
    fn delete_datapath(&mut self, name: &str) -> Result<bool, DatapathError>;
}

/// Why probing failed before the kernel could answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The generic-netlink socket failed.
    #[error("generic netlink socket: {0}")]
    Socket(#[source] io::Error),
    /// The reply made no sense.
    #[error("generic netlink reply: {0}")]
    Reply(String),
}

/// Looks up the generic-netlink family `name` in the calling thread's
/// namespace: `Ok(None)` if the kernel does not have it.
pub fn lookup_family(name: &str) -> Result<Option<FamilyInfo>, ProbeError> {
    let mut socket = Socket::new(NETLINK_GENERIC).map_err(ProbeError::Socket)?;
    socket.bind_auto().map_err(ProbeError::Socket)?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(ProbeError::Socket)?;
    let mut request = Vec::new();
    encode_get_family(&mut request, NLM_F_ACK, 1, name)
        .map_err(|e| ProbeError::Reply(e.to_string()))?;
    socket.send(&request, 0).map_err(ProbeError::Socket)?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut found = None;
    loop {
        let n = socket
            .recv(&mut &mut buf[..], 0)
            .map_err(ProbeError::Socket)?;
        let data = buf.get(..n).unwrap_or_default();
        for msg in MessageIter::new(data) {
            let msg = msg.map_err(|e| ProbeError::Reply(e.to_string()))?;
            if msg.header.seq != 1 {
                continue;
            }
            match msg
                .payload()
                .map_err(|e| ProbeError::Reply(e.to_string()))?
            {
                Payload::Data(body) => {
                    found = Some(
                        FamilyInfo::parse(body).map_err(|e| ProbeError::Reply(e.to_string()))?,
                    );
                }
                Payload::Error(err) if err.errno == 0 => return Ok(found),
                Payload::Error(err) if err.errno == libc::ENOENT => return Ok(None),
                Payload::Error(err) => {
                    return Err(ProbeError::Reply(format!(
                        "looking up {name}: {}",
                        io::Error::from_raw_os_error(err.errno)
                    )));
                }
                Payload::Done(_) => return Ok(found),
                Payload::Noop => {}
                Payload::Overrun => return Err(ProbeError::Reply("overrun".into())),
            }
        }
    }
}

/// Whether the kernel (in the calling thread's namespace) has the
/// openvswitch families; the reason when not, worded for `/status`.
pub fn probe_openvswitch() -> OdpSupport {
    for family in [DATAPATH_FAMILY, VPORT_FAMILY] {
        match lookup_family(family) {
            Ok(Some(_)) => {}
            Ok(None) => {
                return OdpSupport::Missing(format!(
                    "the kernel has no {family} generic netlink family (openvswitch module not loaded?)"
                ));
            }
            Err(e) => return OdpSupport::Missing(format!("probing {family}: {e}")),
        }
    }
    OdpSupport::Available
}
