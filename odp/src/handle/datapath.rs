//! Datapath create, lookup, enumeration, delete and set.

use super::Ovs;
use crate::transport::Error;
use crate::wire::datapath::{
    DatapathAttr, DatapathInfo, DatapathMessage, DpStats, MegaflowStats, UserFeatures,
};
use crate::wire::netlink::NLM_F_ECHO;
use crate::wire::ovs::ObjCmd;

/// Which user features to ask for when creating a datapath.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Features {
    /// Try per-CPU upcall dispatch with UNALIGNED, then per-vport PIDs with
    /// UNALIGNED, then UNALIGNED alone, then nothing, taking the first one the
    /// kernel accepts (it answers `EOPNOTSUPP` for unknown bits).
    #[default]
    Negotiate,
    /// Exactly these bits.
    Exactly(UserFeatures),
}

/// The feature sets [`Features::Negotiate`] tries, best first.
pub const NEGOTIATION_ORDER: [UserFeatures; 4] = [
    UserFeatures(UserFeatures::UNALIGNED.0 | UserFeatures::DISPATCH_UPCALL_PER_CPU.0),
    UserFeatures(UserFeatures::UNALIGNED.0 | UserFeatures::VPORT_PIDS.0),
    UserFeatures::UNALIGNED,
    UserFeatures(0),
];

/// How to create a datapath.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DatapathOptions {
    /// Upcall PID of the local port (0: no upcalls).
    pub upcall_pid: u32,
    /// Per-CPU upcall PIDs, used when per-CPU dispatch is negotiated.
    pub per_cpu_pids: Vec<u32>,
    /// User features.
    pub features: Features,
}

/// Datapath operations (from [`Ovs::datapaths`]).
#[derive(Debug)]
pub struct DatapathHandle<'a> {
    pub(super) ovs: &'a mut Ovs,
}

pub(super) fn one(replies: Vec<DatapathMessage>) -> Result<DatapathInfo, Error> {
    let m = replies
        .first()
        .ok_or(Error::Protocol("datapath request without a reply"))?;
    Ok(DatapathInfo::from_message(m)?)
}

/// Request builders shared by the sync and async handles.
pub(super) mod msg {
    use super::*;

    /// The feature sets to try, in order.
    pub fn attempts(opts: &DatapathOptions) -> Vec<UserFeatures> {
        match &opts.features {
            Features::Negotiate => NEGOTIATION_ORDER.to_vec(),
            Features::Exactly(f) => vec![*f],
        }
    }

    /// Whether a refusal of feature set means "try the next one".
    pub fn try_next(opts: &DatapathOptions, e: &Error) -> bool {
        matches!(e, Error::NotSupported { .. }) && opts.features == Features::Negotiate
    }

    /// NEW with feature set `f` (sent with `NLM_F_ECHO`).
    pub fn create(name: &str, opts: &DatapathOptions, f: UserFeatures) -> DatapathMessage {
        let mut attrs = vec![
            DatapathAttr::Name(name.to_owned()),
            DatapathAttr::UpcallPid(opts.upcall_pid),
            DatapathAttr::UserFeatures(f),
        ];
        if f.contains(UserFeatures::DISPATCH_UPCALL_PER_CPU) && !opts.per_cpu_pids.is_empty() {
            attrs.push(DatapathAttr::PerCpuPids(opts.per_cpu_pids.clone()));
        }
        DatapathMessage::new(ObjCmd::New, 0, attrs)
    }

    /// GET by name.
    pub fn get(name: &str) -> DatapathMessage {
        DatapathMessage::new(ObjCmd::Get, 0, vec![DatapathAttr::Name(name.to_owned())])
    }

    /// GET by the local port's ifindex.
    pub fn get_by_ifindex(dp_ifindex: i32) -> DatapathMessage {
        DatapathMessage::new(ObjCmd::Get, dp_ifindex, vec![])
    }

    /// The dump request listing every datapath.
    pub fn list() -> DatapathMessage {
        DatapathMessage::new(ObjCmd::Get, 0, vec![])
    }

    /// DEL by name.
    pub fn delete(name: &str) -> DatapathMessage {
        DatapathMessage::new(ObjCmd::Del, 0, vec![DatapathAttr::Name(name.to_owned())])
    }

    /// SET by name (sent with `NLM_F_ECHO`).
    pub fn set(name: &str, attrs: Vec<DatapathAttr>) -> DatapathMessage {
        let mut all = vec![DatapathAttr::Name(name.to_owned())];
        all.extend(attrs);
        DatapathMessage::new(ObjCmd::Set, 0, all)
    }

    /// The statistics of a GET reply.
    pub fn stats(info: &DatapathInfo) -> Result<DatapathStats, Error> {
        match (info.stats, info.megaflow_stats) {
            (Some(packets), Some(megaflows)) => Ok(DatapathStats { packets, megaflows }),
            _ => Err(Error::Protocol("datapath reply without statistics")),
        }
    }
}

/// A datapath's packet and megaflow statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DatapathStats {
    /// Hits, misses, lost upcalls and the number of flows.
    pub packets: DpStats,
    /// Mask lookups and the masks cache.
    pub megaflows: MegaflowStats,
}

impl DatapathHandle<'_> {
    /// Creates a datapath (genl version 2) and returns it as the kernel
    /// reports it, with the features that were accepted (NEW and SET answer
    /// only with `NLM_F_ECHO`, which is set). An existing datapath of that
    /// name is [`Error::Exists`].
    pub fn create(&mut self, name: &str, opts: &DatapathOptions) -> Result<DatapathInfo, Error> {
        let mut last = Error::Protocol("no feature set tried");
        for f in msg::attempts(opts) {
            match self.ovs.call(&msg::create(name, opts, f), NLM_F_ECHO) {
                Ok(r) => return one(r),
                Err(e) if msg::try_next(opts, &e) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Looks a datapath up by name.
    pub fn get(&mut self, name: &str) -> Result<DatapathInfo, Error> {
        one(self.ovs.call(&msg::get(name), 0)?)
    }

    /// Looks a datapath up by the ifindex of its local port.
    pub fn get_by_ifindex(&mut self, dp_ifindex: i32) -> Result<DatapathInfo, Error> {
        one(self.ovs.call(&msg::get_by_ifindex(dp_ifindex), 0)?)
    }

    /// Lists every datapath.
    pub fn list(&mut self) -> Result<Vec<DatapathInfo>, Error> {
        let mut out = Vec::new();
        self.ovs.dump(&msg::list(), |m| {
            out.push(DatapathInfo::from_message(&m)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Deletes a datapath by name (its vports and flows go with it).
    pub fn delete(&mut self, name: &str) -> Result<(), Error> {
        self.ovs.call(&msg::delete(name), 0).map(drop)
    }

    /// Changes a datapath's attributes (user features, per-CPU PIDs, masks
    /// cache size) and returns the result. Only for datapaths you own: taking
    /// features or PIDs away from another program's datapath steals its
    /// upcalls.
    pub fn set(&mut self, name: &str, attrs: Vec<DatapathAttr>) -> Result<DatapathInfo, Error> {
        one(self.ovs.call(&msg::set(name, attrs), NLM_F_ECHO)?)
    }

    /// A datapath's packet and megaflow statistics (a GET: safe on datapaths
    /// owned by others).
    pub fn stats(&mut self, name: &str) -> Result<DatapathStats, Error> {
        msg::stats(&self.get(name)?)
    }
}
