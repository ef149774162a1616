//! Typed synchronous handles over a [`Connection`]: [`Ovs`] resolves the four
//! families once and hands out per-object handles. [`aio`] (feature `tokio`,
//! on by default) has the same handles for tokio.
//!
//! ```no_run
//! use odp::handle::{Ovs, DatapathOptions, VportSpec};
//! let mut ovs = Ovs::connect()?;
//! let dp = ovs.datapaths().create("dp0", &DatapathOptions::default())?;
//! let port = ovs.vports(dp.dp_ifindex).create(&VportSpec::internal("dp0-int"))?;
//! println!("{} has port {} ({})", dp.name, port.port_no, port.name);
//! # Ok::<(), odp::transport::Error>(())
//! ```

#[cfg(feature = "tokio")]
pub mod aio;
mod datapath;
mod flow;
mod packet;
mod vport;

pub use datapath::{DatapathHandle, DatapathOptions, DatapathStats, Features, NEGOTIATION_ORDER};
pub use flow::{FlowHandle, FlowId, FlowSpec};
pub use packet::PacketHandle;
pub use vport::{VportHandle, VportSpec};

use crate::transport::pending::Outcome;
use crate::transport::{Connection, Error, UpcallSocket};
use crate::wire::datapath::DatapathAttr;
use crate::wire::flow::FlowAttr;
use crate::wire::ovs::{OvsFamily, OvsMessage};
use crate::wire::packet::PacketAttr;
use crate::wire::vport::VportAttr;

/// The ids of the four OVS families, resolved once per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Families {
    /// `ovs_datapath`.
    pub datapath: u16,
    /// `ovs_vport`.
    pub vport: u16,
    /// `ovs_flow`.
    pub flow: u16,
    /// `ovs_packet`.
    pub packet: u16,
}

impl Families {
    /// The id of family `A`.
    pub fn of<A: OvsFamily>(&self) -> u16 {
        match A::NAME {
            "ovs_datapath" => self.datapath,
            "ovs_vport" => self.vport,
            "ovs_flow" => self.flow,
            _ => self.packet,
        }
    }
}

/// A connection to the kernel datapath with the OVS families resolved.
#[derive(Debug)]
pub struct Ovs {
    conn: Connection,
    fam: Families,
}

impl Ovs {
    /// Opens a socket and resolves `ovs_datapath`, `ovs_vport`, `ovs_flow` and
    /// `ovs_packet`. Without the openvswitch module this is
    /// [`Error::FamilyNotFound`].
    pub fn connect() -> Result<Self, Error> {
        Self::with_connection(Connection::open()?)
    }

    /// Like [`Ovs::connect`] on an existing connection.
    pub fn with_connection(mut conn: Connection) -> Result<Self, Error> {
        let datapath = conn.family_id::<DatapathAttr>()?;
        let vport = conn.family_id::<VportAttr>()?;
        let flow = conn.family_id::<FlowAttr>()?;
        let packet = conn.family_id::<PacketAttr>()?;
        Ok(Ovs {
            conn,
            fam: Families {
                datapath,
                vport,
                flow,
                packet,
            },
        })
    }

    /// The underlying connection.
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The `ovs_packet` family id (to filter upcalls).
    pub fn packet_family(&self) -> u16 {
        self.fam.packet
    }

    /// The `ovs_vport` family id (to decode vport notifications).
    pub fn vport_family(&self) -> u16 {
        self.fam.vport
    }

    /// The `ovs_flow` family id.
    pub fn flow_family(&self) -> u16 {
        self.fam.flow
    }

    /// The `ovs_datapath` family id.
    pub fn datapath_family(&self) -> u16 {
        self.fam.datapath
    }

    /// Datapath operations.
    pub fn datapaths(&mut self) -> DatapathHandle<'_> {
        DatapathHandle { ovs: self }
    }

    /// Vport operations on the datapath with this ifindex.
    pub fn vports(&mut self, dp_ifindex: i32) -> VportHandle<'_> {
        VportHandle {
            ovs: self,
            dp_ifindex,
        }
    }

    /// Flow operations on the datapath with this ifindex.
    pub fn flows(&mut self, dp_ifindex: i32) -> FlowHandle<'_> {
        FlowHandle {
            ovs: self,
            dp_ifindex,
        }
    }

    /// Packet execution on the datapath with this ifindex.
    pub fn packets(&mut self, dp_ifindex: i32) -> PacketHandle<'_> {
        PacketHandle {
            ovs: self,
            dp_ifindex,
        }
    }

    /// A socket subscribed to vport notifications (NEW, DEL, SET), decoded
    /// with [`UpcallSocket::recv_vport_events`] and [`Ovs::vport_family`].
    pub fn vport_events(&mut self) -> Result<UpcallSocket, Error> {
        let group = self
            .conn
            .family(VportAttr::NAME)?
            .group(VportAttr::NAME)
            .ok_or(Error::Protocol("ovs_vport has no multicast group"))?;
        let sock = UpcallSocket::open()?;
        sock.join(group)?;
        Ok(sock)
    }

    /// The resolved family ids.
    pub fn families(&self) -> Families {
        self.fam
    }

    /// Many requests of family `A` (no extra flags) sent as batches; one
    /// outcome (reply bodies or error) per message.
    fn batch<A: OvsFamily>(&mut self, msgs: &[OvsMessage<A>]) -> Result<Vec<Outcome>, Error> {
        let family = self.fam.of::<A>();
        let reqs: Vec<_> = msgs
            .iter()
            .map(|msg| crate::transport::OvsRequest {
                family,
                flags: 0,
                msg,
            })
            .collect();
        self.conn.transact(&reqs)
    }

    /// One request with an ack; the replies decoded as family `A`.
    fn call<A: OvsFamily>(
        &mut self,
        msg: &OvsMessage<A>,
        flags: u16,
    ) -> Result<Vec<OvsMessage<A>>, Error> {
        let family = self.fam.of::<A>();
        let replies = self
            .conn
            .request(&crate::transport::OvsRequest { family, flags, msg })?;
        Connection::decode_all::<A>(&replies)
    }

    /// A dump of family `A`.
    fn dump<A: OvsFamily>(
        &mut self,
        msg: &OvsMessage<A>,
        mut each: impl FnMut(OvsMessage<A>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let family = self.fam.of::<A>();
        self.conn.dump(
            &crate::transport::OvsRequest {
                family,
                flags: 0,
                msg,
            },
            |b| each(OvsMessage::<A>::decode(b)?),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without the openvswitch module (the build host), connecting names the
    /// missing family, the error the router falls back on.
    #[test]
    fn connect_without_the_module_is_family_not_found() {
        if std::path::Path::new("/sys/module/openvswitch").exists() {
            eprintln!("openvswitch is loaded here; nothing to check");
            return;
        }
        match Ovs::connect() {
            Err(Error::FamilyNotFound { family }) => assert_eq!(family, "ovs_datapath"),
            other => panic!("expected FamilyNotFound, got {other:?}"),
        }
    }
}
