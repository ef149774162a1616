//! Typed handles for tokio: the same operations as the synchronous
//! [`Ovs`](super::Ovs) handles, built from the same request builders and
//! decoders, over an [`AsyncConnection`]. Flow and vport dumps are streams;
//! vport events and upcalls are streams on their own sockets.
//!
//! ```no_run
//! # async fn demo() -> Result<(), odp::transport::Error> {
//! use odp::handle::aio::AsyncOvs;
//! use odp::handle::{DatapathOptions, VportSpec};
//! use odp::wire::flow::UfidFlags;
//! let mut ovs = AsyncOvs::connect().await?;
//! let mut events = ovs.vport_events().await?;
//! let dp = ovs.datapaths().create("dp0", &DatapathOptions::default()).await?;
//! ovs.vports(dp.dp_ifindex).create(&VportSpec::internal("dp0-int")).await?;
//! let added = events.next().await;
//! let mut flows = ovs.flows(dp.dp_ifindex).dump(UfidFlags(0)).await?;
//! while let Some(flow) = flows.next().await {
//!     println!("{:?}", flow?.key);
//! }
//! # Ok(()) }
//! ```

use super::Families;
use super::datapath::{self, DatapathOptions, DatapathStats};
use super::flow::{self, CreateBatch, FlowId, FlowSpec};
use super::packet::execute_request;
use super::vport::{self, VportSpec};
use crate::transport::aio::{AsyncConnection, Dump, Notifications};
use crate::transport::{Error, OvsRequest};
use crate::wire::action::Action;
use crate::wire::datapath::{DatapathAttr, DatapathInfo};
use crate::wire::flow::{FlowAttr, FlowInfo, FlowMessage, UfidFlags};
use crate::wire::key::FlowKey;
use crate::wire::netlink::{NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL};
use crate::wire::ovs::{ObjCmd, OvsFamily, OvsMessage};
use crate::wire::packet::{PacketAttr, Upcall};
use crate::wire::vport::{VportAttr, VportInfo, VportMessage, VportStats};

/// A vport notification from the `ovs_vport` multicast group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VportEvent {
    /// NEW (added), DEL (removed, also when its netdev disappeared) or SET.
    pub cmd: ObjCmd,
    /// The vport as the notification describes it.
    pub vport: VportInfo,
}

/// Vport notifications as a stream (from [`AsyncOvs::vport_events`]).
pub type VportEvents = Notifications<VportEvent>;
/// Upcalls as a stream (from [`AsyncOvs::upcalls`]).
pub type Upcalls = Notifications<Upcall>;
/// A flow dump as a stream (from [`AsyncFlowHandle::dump`]).
pub type FlowDump<'a> = Dump<'a, FlowInfo>;

fn decode_flow(b: &[u8]) -> Result<FlowInfo, Error> {
    Ok(FlowInfo::from_message(&FlowMessage::decode(b)?))
}

fn decode_vport(b: &[u8]) -> Result<VportInfo, Error> {
    Ok(VportInfo::from_message(&VportMessage::decode(b)?)?)
}

fn decode_datapath(b: &[u8]) -> Result<DatapathInfo, Error> {
    Ok(DatapathInfo::from_message(&OvsMessage::decode(b)?)?)
}

fn decode_vport_event(b: &[u8]) -> Result<VportEvent, Error> {
    let m = VportMessage::decode(b)?;
    Ok(VportEvent {
        cmd: m.cmd,
        vport: VportInfo::from_message(&m)?,
    })
}

fn decode_upcall(b: &[u8]) -> Result<Upcall, Error> {
    Ok(Upcall::decode(b)?)
}

/// An async connection to the kernel datapath with the OVS families resolved.
#[derive(Debug)]
pub struct AsyncOvs {
    conn: AsyncConnection,
    fam: Families,
}

impl AsyncOvs {
    /// Opens a socket and resolves the four OVS families. Without the
    /// openvswitch module this is [`Error::FamilyNotFound`]; outside a tokio
    /// runtime [`Error::NoRuntime`].
    pub async fn connect() -> Result<Self, Error> {
        Self::with_connection(AsyncConnection::open()?).await
    }

    /// Like [`AsyncOvs::connect`] on an existing connection.
    pub async fn with_connection(mut conn: AsyncConnection) -> Result<Self, Error> {
        let fam = Families {
            datapath: conn.family_id::<DatapathAttr>().await?,
            vport: conn.family_id::<VportAttr>().await?,
            flow: conn.family_id::<FlowAttr>().await?,
            packet: conn.family_id::<PacketAttr>().await?,
        };
        Ok(AsyncOvs { conn, fam })
    }

    /// The underlying connection.
    pub fn connection(&mut self) -> &mut AsyncConnection {
        &mut self.conn
    }

    /// The resolved family ids.
    pub fn families(&self) -> Families {
        self.fam
    }

    /// Datapath operations.
    pub fn datapaths(&mut self) -> AsyncDatapathHandle<'_> {
        AsyncDatapathHandle { ovs: self }
    }

    /// Vport operations on the datapath with this ifindex.
    pub fn vports(&mut self, dp_ifindex: i32) -> AsyncVportHandle<'_> {
        AsyncVportHandle {
            ovs: self,
            dp_ifindex,
        }
    }

    /// Flow operations on the datapath with this ifindex.
    pub fn flows(&mut self, dp_ifindex: i32) -> AsyncFlowHandle<'_> {
        AsyncFlowHandle {
            ovs: self,
            dp_ifindex,
        }
    }

    /// Packet execution on the datapath with this ifindex.
    pub fn packets(&mut self, dp_ifindex: i32) -> AsyncPacketHandle<'_> {
        AsyncPacketHandle {
            ovs: self,
            dp_ifindex,
        }
    }

    /// A stream of vport notifications (NEW, DEL, SET) for every datapath,
    /// on a socket of its own that joined the `ovs_vport` group.
    pub async fn vport_events(&mut self) -> Result<VportEvents, Error> {
        let group = self
            .conn
            .family(VportAttr::NAME)
            .await?
            .group(VportAttr::NAME)
            .ok_or(Error::Protocol("ovs_vport has no multicast group"))?;
        let events = Notifications::open(self.fam.vport, decode_vport_event)?;
        events.join(group)?;
        Ok(events)
    }

    /// A stream of upcalls on a socket of its own: give its
    /// [`pid`](Notifications::pid) to vports (per-vport dispatch) or to the
    /// datapath's per-CPU PIDs.
    pub fn upcalls(&self) -> Result<Upcalls, Error> {
        Notifications::open(self.fam.packet, decode_upcall)
    }

    async fn call<A: OvsFamily>(
        &mut self,
        msg: &OvsMessage<A>,
        flags: u16,
    ) -> Result<Vec<OvsMessage<A>>, Error> {
        let family = self.fam.of::<A>();
        let replies = self
            .conn
            .request(&OvsRequest { family, flags, msg })
            .await?;
        AsyncConnection::decode_all::<A>(&replies)
    }

    async fn dump<A: OvsFamily, T>(
        &mut self,
        msg: &OvsMessage<A>,
        decode: fn(&[u8]) -> Result<T, Error>,
    ) -> Result<Dump<'_, T>, Error> {
        let family = self.fam.of::<A>();
        let req = OvsRequest {
            family,
            flags: 0,
            msg,
        };
        self.conn.dump(&req, decode).await
    }
}

/// Async datapath operations (from [`AsyncOvs::datapaths`]).
#[derive(Debug)]
pub struct AsyncDatapathHandle<'a> {
    ovs: &'a mut AsyncOvs,
}

impl AsyncDatapathHandle<'_> {
    /// Creates a datapath, negotiating features (see
    /// [`DatapathHandle::create`](super::DatapathHandle::create)).
    pub async fn create(
        &mut self,
        name: &str,
        opts: &DatapathOptions,
    ) -> Result<DatapathInfo, Error> {
        let mut last = Error::Protocol("no feature set tried");
        for f in datapath::msg::attempts(opts) {
            let m = datapath::msg::create(name, opts, f);
            match self.ovs.call(&m, NLM_F_ECHO).await {
                Ok(r) => return datapath::one(r),
                Err(e) if datapath::msg::try_next(opts, &e) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Looks a datapath up by name.
    pub async fn get(&mut self, name: &str) -> Result<DatapathInfo, Error> {
        datapath::one(self.ovs.call(&datapath::msg::get(name), 0).await?)
    }

    /// Looks a datapath up by the ifindex of its local port.
    pub async fn get_by_ifindex(&mut self, dp_ifindex: i32) -> Result<DatapathInfo, Error> {
        let m = datapath::msg::get_by_ifindex(dp_ifindex);
        datapath::one(self.ovs.call(&m, 0).await?)
    }

    /// Lists every datapath.
    pub async fn list(&mut self) -> Result<Vec<DatapathInfo>, Error> {
        let m = datapath::msg::list();
        self.ovs.dump(&m, decode_datapath).await?.collect().await
    }

    /// Deletes a datapath by name.
    pub async fn delete(&mut self, name: &str) -> Result<(), Error> {
        self.ovs
            .call(&datapath::msg::delete(name), 0)
            .await
            .map(drop)
    }

    /// Changes a datapath's attributes (only for datapaths you own, see
    /// [`DatapathHandle::set`](super::DatapathHandle::set)).
    pub async fn set(
        &mut self,
        name: &str,
        attrs: Vec<DatapathAttr>,
    ) -> Result<DatapathInfo, Error> {
        let m = datapath::msg::set(name, attrs);
        datapath::one(self.ovs.call(&m, NLM_F_ECHO).await?)
    }

    /// A datapath's packet and megaflow statistics.
    pub async fn stats(&mut self, name: &str) -> Result<DatapathStats, Error> {
        datapath::msg::stats(&self.get(name).await?)
    }
}

/// Async vport operations on one datapath (from [`AsyncOvs::vports`]).
#[derive(Debug)]
pub struct AsyncVportHandle<'a> {
    ovs: &'a mut AsyncOvs,
    dp_ifindex: i32,
}

impl<'a> AsyncVportHandle<'a> {
    /// Creates a vport and returns it as the kernel reports it.
    pub async fn create(&mut self, spec: &VportSpec) -> Result<VportInfo, Error> {
        let m = vport::msg::create(self.dp_ifindex, spec);
        vport::one(self.ovs.call(&m, NLM_F_ECHO).await?)
    }

    /// Looks a vport up by name.
    pub async fn get(&mut self, name: &str) -> Result<VportInfo, Error> {
        let m = vport::msg::by_name(ObjCmd::Get, self.dp_ifindex, name);
        vport::one(self.ovs.call(&m, 0).await?)
    }

    /// Looks a vport up by port number.
    pub async fn get_by_port(&mut self, port_no: u32) -> Result<VportInfo, Error> {
        let m = vport::msg::by_port(ObjCmd::Get, self.dp_ifindex, port_no);
        vport::one(self.ovs.call(&m, 0).await?)
    }

    /// The datapath's vports as a stream.
    pub async fn dump(self) -> Result<Dump<'a, VportInfo>, Error> {
        let m = vport::msg::list(self.dp_ifindex);
        self.ovs.dump(&m, decode_vport).await
    }

    /// Lists the datapath's vports.
    pub async fn list(&mut self) -> Result<Vec<VportInfo>, Error> {
        let m = vport::msg::list(self.dp_ifindex);
        self.ovs.dump(&m, decode_vport).await?.collect().await
    }

    /// Deletes a vport by name.
    pub async fn delete(&mut self, name: &str) -> Result<(), Error> {
        let m = vport::msg::by_name(ObjCmd::Del, self.dp_ifindex, name);
        self.ovs.call(&m, 0).await.map(drop)
    }

    /// Deletes a vport by port number.
    pub async fn delete_by_port(&mut self, port_no: u32) -> Result<(), Error> {
        let m = vport::msg::by_port(ObjCmd::Del, self.dp_ifindex, port_no);
        self.ovs.call(&m, 0).await.map(drop)
    }

    /// Replaces a vport's upcall PIDs (`[0]` turns upcalls off).
    pub async fn set_upcall_pids(
        &mut self,
        name: &str,
        pids: Vec<u32>,
    ) -> Result<VportInfo, Error> {
        let m = vport::msg::set_upcall_pids(self.dp_ifindex, name, pids);
        vport::one(self.ovs.call(&m, NLM_F_ECHO).await?)
    }

    /// A vport's packet and byte counters.
    pub async fn stats(&mut self, name: &str) -> Result<VportStats, Error> {
        vport::msg::stats(&self.get(name).await?)
    }
}

/// Async flow operations on one datapath (from [`AsyncOvs::flows`]).
#[derive(Debug)]
pub struct AsyncFlowHandle<'a> {
    ovs: &'a mut AsyncOvs,
    dp_ifindex: i32,
}

impl<'a> AsyncFlowHandle<'a> {
    /// Installs a flow after validating it; an existing one is
    /// [`Error::Exists`].
    pub async fn create(&mut self, spec: &FlowSpec) -> Result<(), Error> {
        spec.validate()?;
        let m = spec.message(ObjCmd::New, self.dp_ifindex);
        self.ovs.call(&m, NLM_F_CREATE | NLM_F_EXCL).await.map(drop)
    }

    /// Installs many flows in as few `send`s as the batch limits allow; one
    /// outcome per flow, in order (flows failing validation are not sent).
    pub async fn create_batch(
        &mut self,
        specs: &[FlowSpec],
    ) -> Result<Vec<Result<(), Error>>, Error> {
        let batch = CreateBatch::new(self.ovs.fam.flow, self.dp_ifindex, specs);
        let results = self.ovs.conn.transact(&batch.reqs).await?;
        Ok(batch.finish(results))
    }

    /// Replaces an existing flow's actions; a missing flow is
    /// [`Error::NotFound`].
    pub async fn modify(&mut self, spec: &FlowSpec) -> Result<(), Error> {
        spec.validate()?;
        let m = spec.message(ObjCmd::Set, self.dp_ifindex);
        self.ovs.call(&m, 0).await.map(drop)
    }

    /// Fetches one flow with its statistics and last-used time.
    pub async fn get(&mut self, id: &FlowId) -> Result<FlowInfo, Error> {
        let m = flow::msg::get(self.dp_ifindex, id);
        flow::msg::one(self.ovs.call(&m, 0).await?)
    }

    /// Deletes one flow.
    pub async fn delete(&mut self, id: &FlowId) -> Result<(), Error> {
        let m = flow::msg::delete(self.dp_ifindex, id);
        self.ovs.call(&m, 0).await.map(drop)
    }

    /// Deletes many flows in as few `send`s as the batch limits allow; one
    /// outcome per flow, in order.
    pub async fn delete_batch(&mut self, ids: &[FlowId]) -> Result<Vec<Result<(), Error>>, Error> {
        let family = self.ovs.fam.flow;
        let msgs: Vec<FlowMessage> = ids
            .iter()
            .map(|id| flow::msg::delete(self.dp_ifindex, id))
            .collect();
        let reqs: Vec<_> = msgs
            .iter()
            .map(|msg| OvsRequest {
                family,
                flags: 0,
                msg,
            })
            .collect();
        let results = self.ovs.conn.transact(&reqs).await?;
        Ok(results.into_iter().map(|r| r.map(drop)).collect())
    }

    /// Deletes every flow of the datapath.
    pub async fn flush(&mut self) -> Result<(), Error> {
        let m = flow::msg::flush(self.dp_ifindex);
        self.ovs.call(&m, 0).await.map(drop)
    }

    /// The datapath's flows as a stream; `flags` may ask for terse entries.
    pub async fn dump(self, flags: UfidFlags) -> Result<FlowDump<'a>, Error> {
        let m = flow::msg::dump(self.dp_ifindex, flags);
        self.ovs.dump(&m, decode_flow).await
    }
}

/// Async packet execution on one datapath (from [`AsyncOvs::packets`]).
#[derive(Debug)]
pub struct AsyncPacketHandle<'a> {
    ovs: &'a mut AsyncOvs,
    dp_ifindex: i32,
}

impl AsyncPacketHandle<'_> {
    /// Runs `actions` on `packet` (see
    /// [`PacketHandle::execute`](super::PacketHandle::execute)).
    pub async fn execute(
        &mut self,
        packet: &[u8],
        key: FlowKey,
        actions: Vec<Action>,
    ) -> Result<(), Error> {
        let m = execute_request(self.dp_ifindex, packet, key, actions)?;
        self.ovs.call(&m, 0).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opening an async socket outside a runtime is a typed error.
    #[test]
    fn outside_a_runtime_is_no_runtime() {
        assert!(matches!(AsyncConnection::open(), Err(Error::NoRuntime)));
    }

    /// Without the openvswitch module (the build host) connecting names the
    /// missing family; with it, the families resolve like the sync ones.
    #[tokio::test]
    async fn connect_resolves_or_names_the_missing_family() {
        match AsyncOvs::connect().await {
            Err(Error::FamilyNotFound { family }) => assert_eq!(family, "ovs_datapath"),
            Ok(ovs) => {
                let sync = super::super::Ovs::connect().unwrap();
                assert_eq!(ovs.families(), sync.families());
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }

    /// Requests, batches and dumps over the async transport against the
    /// always-present `nlctrl` family.
    #[tokio::test]
    async fn async_transport_against_nlctrl() {
        use crate::transport::conn::{DumpFamilies, GetFamily};
        use crate::wire::ctrl::FamilyInfo;
        let mut c = AsyncConnection::open().unwrap();
        assert_eq!(c.family("nlctrl").await.unwrap().id, 0x10);
        c.set_batch_limits(3, 4096);
        let names = ["nlctrl", "weave_nope", "nlctrl", "nlctrl", "weave_nope2"];
        let reqs: Vec<_> = names.iter().map(|n| GetFamily(n)).collect();
        let out = c.transact(&reqs).await.unwrap();
        for (n, o) in names.iter().zip(&out) {
            assert_eq!(o.is_err(), n.starts_with("weave_nope"), "{n}: {o:?}");
        }
        let fams = c
            .dump(&DumpFamilies, |b| Ok(FamilyInfo::parse(b)?))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert!(fams.iter().any(|f| f.name == "nlctrl"));
        // An abandoned dump does not disturb later requests.
        let mut d = c
            .dump(&DumpFamilies, |b| Ok(FamilyInfo::parse(b)?))
            .await
            .unwrap();
        assert!(d.next().await.is_some());
        drop(d);
        assert_eq!(c.request(&GetFamily("nlctrl")).await.unwrap().len(), 1);
        // A second dump right after an abandoned one gets everything (the
        // kernel allows one dump per socket: the rest of the first is read
        // before the second starts).
        for _ in 0..3 {
            let mut d = c
                .dump(&DumpFamilies, |b| Ok(FamilyInfo::parse(b)?))
                .await
                .unwrap();
            assert!(d.next().await.is_some());
        }
        let again = c
            .dump(&DumpFamilies, |b| Ok(FamilyInfo::parse(b)?))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(again.len(), fams.len());
    }

    /// A full receive queue loses replies: the affected requests say so and
    /// the connection goes on with a fresh socket.
    #[tokio::test]
    async fn async_overrun_recovers() {
        use crate::transport::conn::GetFamily;
        let mut c = AsyncConnection::open().unwrap();
        c.set_recv_queue(1).unwrap();
        c.set_batch_limits(500, 1 << 20);
        let reqs: Vec<_> = (0..500).map(|_| GetFamily("nlctrl")).collect();
        let out = c.transact(&reqs).await.unwrap();
        assert!(out.iter().any(|o| matches!(o, Err(Error::Overrun))));
        assert!(
            out.iter()
                .all(|o| o.is_ok() || matches!(o, Err(Error::Overrun)))
        );
        assert_eq!(c.request(&GetFamily("nlctrl")).await.unwrap().len(), 1);
    }
}
