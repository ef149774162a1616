//! Flow create, modify, lookup, delete, flush, dump, and batched create and
//! delete.

use super::Ovs;
use crate::transport::pending::Outcome;
use crate::transport::{Error, Request};
use crate::wire::action::Action;
use crate::wire::flow::{FlowAttr, FlowInfo, FlowMessage, Ufid, UfidFlags, attr};
use crate::wire::key::FlowKey;
use crate::wire::netlink::{GenlHeader, NLM_F_CREATE, NLM_F_EXCL, RequestHeader, encode_genl};
use crate::wire::nla::emit_all;
use crate::wire::ovs::ObjCmd;
use crate::wire::ovs::OvsFamily;
use crate::wire::validate::validate_flow;

/// A flow to install.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlowSpec {
    /// The key.
    pub key: FlowKey,
    /// The mask; `None` matches every given key field exactly.
    pub mask: Option<FlowKey>,
    /// The actions; empty drops.
    pub actions: Vec<Action>,
    /// An optional unique flow id.
    pub ufid: Option<Ufid>,
}

impl FlowSpec {
    /// A flow with this key and these actions.
    pub fn new(key: FlowKey, actions: Vec<Action>) -> Self {
        FlowSpec {
            key,
            mask: None,
            actions,
            ufid: None,
        }
    }
    /// Sets the mask (builder style).
    pub fn with_mask(mut self, mask: FlowKey) -> Self {
        self.mask = Some(mask);
        self
    }
    /// Sets the UFID (builder style).
    pub fn with_ufid(mut self, ufid: Ufid) -> Self {
        self.ufid = Some(ufid);
        self
    }

    /// Checks the flow against the kernel's rules.
    pub fn validate(&self) -> Result<(), Error> {
        validate_flow(
            &self.key.0,
            self.mask.as_ref().map(|m| m.0.as_slice()),
            &self.actions,
        )?;
        Ok(())
    }

    /// Appends the flow as a request to `buf` without copying it into a
    /// [`FlowMessage`] first (the batch path).
    fn encode(
        &self,
        buf: &mut Vec<u8>,
        req: RequestHeader,
        dp_ifindex: i32,
    ) -> Result<(), crate::wire::EncodeError> {
        encode_genl(buf, req, |w| {
            w.raw(&dp_ifindex.to_ne_bytes());
            if let Some(u) = &self.ufid {
                w.bytes(attr::UFID, u.as_bytes());
            }
            w.nested(attr::KEY, |w| self.key.emit(w));
            if let Some(m) = &self.mask {
                w.nested(attr::MASK, |w| m.emit(w));
            }
            w.nested(attr::ACTIONS, |w| emit_all(w, &self.actions));
        })
    }

    pub(super) fn message(&self, cmd: ObjCmd, dp_ifindex: i32) -> FlowMessage {
        let mut attrs = Vec::with_capacity(4);
        if let Some(u) = &self.ufid {
            attrs.push(FlowAttr::Ufid(u.clone()));
        }
        attrs.push(FlowAttr::Key(self.key.clone()));
        if let Some(m) = &self.mask {
            attrs.push(FlowAttr::Mask(m.clone()));
        }
        attrs.push(FlowAttr::Actions(self.actions.clone()));
        FlowMessage::new(cmd, dp_ifindex, attrs)
    }
}

/// A flow NEW request (`NLM_F_CREATE | NLM_F_EXCL`) borrowing its spec.
pub(super) struct FlowPut<'a> {
    family: u16,
    dp_ifindex: i32,
    spec: &'a FlowSpec,
}

impl Request for FlowPut<'_> {
    fn encode(
        &self,
        buf: &mut Vec<u8>,
        seq: u32,
        extra_flags: u16,
    ) -> Result<(), crate::wire::EncodeError> {
        let req = RequestHeader {
            family: self.family,
            flags: NLM_F_CREATE | NLM_F_EXCL | extra_flags,
            seq,
            pid: 0,
            genl: GenlHeader {
                cmd: ObjCmd::New.into(),
                version: FlowAttr::VERSION,
            },
        };
        self.spec.encode(buf, req, self.dp_ifindex)
    }
}

/// How to address one flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowId {
    /// By the key it was created with.
    Key(FlowKey),
    /// By UFID.
    Ufid(Ufid),
}

impl FlowId {
    pub(super) fn attrs(&self) -> Vec<FlowAttr> {
        match self {
            FlowId::Key(k) => vec![FlowAttr::Key(k.clone())],
            FlowId::Ufid(u) => vec![FlowAttr::Ufid(u.clone())],
        }
    }
}

/// A batch of flow creations after validation: the requests to send and
/// where each outcome goes (shared by the sync and async handles).
pub(super) struct CreateBatch<'a> {
    /// The requests for the flows that passed validation.
    pub reqs: Vec<FlowPut<'a>>,
    idx: Vec<usize>,
    out: Vec<Option<Result<(), Error>>>,
}

impl<'a> CreateBatch<'a> {
    /// Validates every spec; the failures get their outcome now.
    pub fn new(family: u16, dp_ifindex: i32, specs: &'a [FlowSpec]) -> Self {
        let mut b = CreateBatch {
            reqs: Vec::with_capacity(specs.len()),
            idx: Vec::with_capacity(specs.len()),
            out: Vec::with_capacity(specs.len()),
        };
        for (i, spec) in specs.iter().enumerate() {
            match spec.validate() {
                Ok(()) => {
                    b.reqs.push(FlowPut {
                        family,
                        dp_ifindex,
                        spec,
                    });
                    b.idx.push(i);
                    b.out.push(None);
                }
                Err(e) => b.out.push(Some(Err(e))),
            }
        }
        b
    }

    /// Merges the kernel's outcomes (one per request, in order).
    pub fn finish(self, results: Vec<Outcome>) -> Vec<Result<(), Error>> {
        let mut out = self.out;
        for (i, r) in self.idx.into_iter().zip(results) {
            if let Some(slot) = out.get_mut(i) {
                *slot = Some(r.map(drop));
            }
        }
        out.into_iter()
            .map(|o| o.unwrap_or(Err(Error::Protocol("missing outcome"))))
            .collect()
    }
}

/// Request builders shared by the sync and async handles.
pub(super) mod msg {
    use super::*;

    /// GET of one flow.
    pub fn get(dp: i32, id: &FlowId) -> FlowMessage {
        FlowMessage::new(ObjCmd::Get, dp, id.attrs())
    }

    /// DEL of one flow.
    pub fn delete(dp: i32, id: &FlowId) -> FlowMessage {
        FlowMessage::new(ObjCmd::Del, dp, id.attrs())
    }

    /// DEL without key or UFID: the whole table.
    pub fn flush(dp: i32) -> FlowMessage {
        FlowMessage::new(ObjCmd::Del, dp, vec![])
    }

    /// The dump request, terse when `flags` asks for it.
    pub fn dump(dp: i32, flags: UfidFlags) -> FlowMessage {
        let attrs = if flags.0 == 0 {
            vec![]
        } else {
            vec![FlowAttr::UfidFlags(flags)]
        };
        FlowMessage::new(ObjCmd::Get, dp, attrs)
    }

    /// The one reply of a GET.
    pub fn one(replies: Vec<FlowMessage>) -> Result<FlowInfo, Error> {
        let m = replies
            .first()
            .ok_or(Error::Protocol("flow GET without a reply"))?;
        Ok(FlowInfo::from_message(m))
    }
}

/// Flow operations on one datapath (from [`Ovs::flows`]).
#[derive(Debug)]
pub struct FlowHandle<'a> {
    pub(super) ovs: &'a mut Ovs,
    pub(super) dp_ifindex: i32,
}

impl FlowHandle<'_> {
    /// Installs a flow after validating it. An existing flow with the same
    /// key (or UFID) is [`Error::Exists`] (`NLM_F_CREATE | NLM_F_EXCL`).
    pub fn create(&mut self, spec: &FlowSpec) -> Result<(), Error> {
        spec.validate()?;
        self.ovs
            .call(
                &spec.message(ObjCmd::New, self.dp_ifindex),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .map(drop)
    }

    /// Installs many flows with as few `send`s as the connection's batch
    /// limits allow. Flows that fail validation are not sent. Returns one
    /// outcome per flow, in order.
    pub fn create_batch(&mut self, specs: &[FlowSpec]) -> Result<Vec<Result<(), Error>>, Error> {
        let batch = CreateBatch::new(self.ovs.fam.flow, self.dp_ifindex, specs);
        let results = self.ovs.conn.transact(&batch.reqs)?;
        Ok(batch.finish(results))
    }

    /// Replaces an existing flow's actions (SET). A missing flow is
    /// [`Error::NotFound`].
    pub fn modify(&mut self, spec: &FlowSpec) -> Result<(), Error> {
        spec.validate()?;
        self.ovs
            .call(&spec.message(ObjCmd::Set, self.dp_ifindex), 0)
            .map(drop)
    }

    /// Fetches one flow with its statistics and last-used time.
    pub fn get(&mut self, id: &FlowId) -> Result<FlowInfo, Error> {
        msg::one(self.ovs.call(&msg::get(self.dp_ifindex, id), 0)?)
    }

    /// Deletes one flow.
    pub fn delete(&mut self, id: &FlowId) -> Result<(), Error> {
        self.ovs
            .call(&msg::delete(self.dp_ifindex, id), 0)
            .map(drop)
    }

    /// Deletes many flows with as few `send`s as the connection's batch
    /// limits allow; one outcome per flow, in order (a missing flow is
    /// [`Error::NotFound`]).
    pub fn delete_batch(&mut self, ids: &[FlowId]) -> Result<Vec<Result<(), Error>>, Error> {
        let msgs: Vec<FlowMessage> = ids
            .iter()
            .map(|id| msg::delete(self.dp_ifindex, id))
            .collect();
        let results = self.ovs.batch(&msgs)?;
        Ok(results.into_iter().map(|r| r.map(drop)).collect())
    }

    /// Deletes every flow of the datapath.
    pub fn flush(&mut self) -> Result<(), Error> {
        self.ovs.call(&msg::flush(self.dp_ifindex), 0).map(drop)
    }

    /// Calls `each` for every flow; `flags` may ask for terse entries
    /// (flows created with a UFID then come back without key, mask or actions).
    pub fn dump_each(
        &mut self,
        flags: UfidFlags,
        mut each: impl FnMut(FlowInfo) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.ovs.dump(&msg::dump(self.dp_ifindex, flags), |m| {
            each(FlowInfo::from_message(&m))
        })
    }

    /// Every flow of the datapath.
    pub fn dump(&mut self) -> Result<Vec<FlowInfo>, Error> {
        let mut out = Vec::new();
        self.dump_each(UfidFlags(0), |f| {
            out.push(f);
            Ok(())
        })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::key::KeyAttr;
    use crate::wire::types::Be16;

    /// The borrowed batch encoding is byte-identical to the message path.
    #[test]
    fn flow_put_matches_message_encoding() {
        let spec = FlowSpec::new(
            FlowKey::new()
                .with(KeyAttr::InPort(1))
                .with(KeyAttr::EtherType(Be16(0x0806))),
            vec![Action::Output(2)],
        )
        .with_mask(FlowKey::new().with(KeyAttr::InPort(u32::MAX)))
        .with_ufid(Ufid::from_u128(9));
        let mut a = Vec::new();
        FlowPut {
            family: 0x20,
            dp_ifindex: 4,
            spec: &spec,
        }
        .encode(&mut a, 7, 0)
        .unwrap();
        let mut b = Vec::new();
        spec.message(ObjCmd::New, 4)
            .encode(&mut b, 0x20, NLM_F_CREATE | NLM_F_EXCL, 7)
            .unwrap();
        assert_eq!(a, b);
    }
}
