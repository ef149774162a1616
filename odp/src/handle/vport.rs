//! Vport create, lookup, enumeration, delete, upcall PIDs and statistics.

use super::Ovs;
use crate::transport::Error;
use crate::wire::netlink::NLM_F_ECHO;
use crate::wire::ovs::ObjCmd;
use crate::wire::vport::{
    TunnelOption, VportAttr, VportInfo, VportMessage, VportStats, VportType, VxlanExt,
};

/// A vport to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VportSpec {
    /// Name (of the netdev for netdev ports; created for internal/tunnel ports).
    pub name: String,
    /// Type.
    pub kind: VportType,
    /// Port number to ask for; the kernel picks one when `None`.
    pub port_no: Option<u32>,
    /// Tunnel options.
    pub options: Vec<TunnelOption>,
    /// Upcall PIDs; empty means `[0]` (no upcalls).
    pub upcall_pids: Vec<u32>,
}

impl VportSpec {
    fn new(name: &str, kind: VportType) -> Self {
        VportSpec {
            name: name.to_owned(),
            kind,
            port_no: None,
            options: Vec::new(),
            upcall_pids: Vec::new(),
        }
    }
    /// Attach an existing network device.
    pub fn netdev(name: &str) -> Self {
        Self::new(name, VportType::Netdev)
    }
    /// Create an internal device.
    pub fn internal(name: &str) -> Self {
        Self::new(name, VportType::Internal)
    }
    /// A VXLAN tunnel port on UDP `dst_port`.
    pub fn vxlan(name: &str, dst_port: u16) -> Self {
        let mut s = Self::new(name, VportType::Vxlan);
        s.options.push(TunnelOption::DstPort(dst_port));
        s
    }
    /// A VXLAN tunnel port with the group-based-policy extension.
    pub fn vxlan_gbp(name: &str, dst_port: u16) -> Self {
        let mut s = Self::vxlan(name, dst_port);
        s.options.push(TunnelOption::Extension(vec![VxlanExt::Gbp]));
        s
    }
    /// A Geneve tunnel port on UDP `dst_port`.
    pub fn geneve(name: &str, dst_port: u16) -> Self {
        let mut s = Self::new(name, VportType::Geneve);
        s.options.push(TunnelOption::DstPort(dst_port));
        s
    }
    /// A GRE tunnel port.
    pub fn gre(name: &str) -> Self {
        Self::new(name, VportType::Gre)
    }
    /// Sets the upcall PIDs (builder style).
    pub fn with_upcall_pids(mut self, pids: Vec<u32>) -> Self {
        self.upcall_pids = pids;
        self
    }
    /// Asks for a port number (builder style).
    pub fn with_port_no(mut self, port_no: u32) -> Self {
        self.port_no = Some(port_no);
        self
    }
}

/// Vport operations on one datapath (from [`Ovs::vports`]).
#[derive(Debug)]
pub struct VportHandle<'a> {
    pub(super) ovs: &'a mut Ovs,
    pub(super) dp_ifindex: i32,
}

pub(super) fn one(replies: Vec<VportMessage>) -> Result<VportInfo, Error> {
    let m = replies
        .first()
        .ok_or(Error::Protocol("vport request without a reply"))?;
    Ok(VportInfo::from_message(m)?)
}

/// Request builders shared by the sync and async handles.
pub(super) mod msg {
    use super::*;

    /// NEW (sent with `NLM_F_ECHO`: NEW and SET answer through a
    /// notification, which the flag sends to us).
    pub fn create(dp: i32, spec: &VportSpec) -> VportMessage {
        let mut attrs = vec![
            VportAttr::Name(spec.name.clone()),
            VportAttr::Type(spec.kind),
        ];
        if let Some(p) = spec.port_no {
            attrs.push(VportAttr::PortNo(p));
        }
        if !spec.options.is_empty() {
            attrs.push(VportAttr::Options(spec.options.clone()));
        }
        let pids = if spec.upcall_pids.is_empty() {
            vec![0]
        } else {
            spec.upcall_pids.clone()
        };
        attrs.push(VportAttr::UpcallPids(pids));
        VportMessage::new(ObjCmd::New, dp, attrs)
    }

    /// A message addressing one vport by name.
    pub fn by_name(cmd: ObjCmd, dp: i32, name: &str) -> VportMessage {
        VportMessage::new(cmd, dp, vec![VportAttr::Name(name.to_owned())])
    }

    /// A message addressing one vport by port number.
    pub fn by_port(cmd: ObjCmd, dp: i32, port_no: u32) -> VportMessage {
        VportMessage::new(cmd, dp, vec![VportAttr::PortNo(port_no)])
    }

    /// The dump request listing a datapath's vports.
    pub fn list(dp: i32) -> VportMessage {
        VportMessage::new(ObjCmd::Get, dp, vec![])
    }

    /// SET of the upcall PIDs (sent with `NLM_F_ECHO`).
    pub fn set_upcall_pids(dp: i32, name: &str, pids: Vec<u32>) -> VportMessage {
        VportMessage::new(
            ObjCmd::Set,
            dp,
            vec![
                VportAttr::Name(name.to_owned()),
                VportAttr::UpcallPids(pids),
            ],
        )
    }

    /// The statistics of a GET reply.
    pub fn stats(info: &VportInfo) -> Result<VportStats, Error> {
        info.stats
            .ok_or(Error::Protocol("vport reply without statistics"))
    }
}

impl VportHandle<'_> {
    /// Creates a vport and returns it as the kernel reports it.
    pub fn create(&mut self, spec: &VportSpec) -> Result<VportInfo, Error> {
        one(self
            .ovs
            .call(&msg::create(self.dp_ifindex, spec), NLM_F_ECHO)?)
    }

    /// Looks a vport up by name.
    pub fn get(&mut self, name: &str) -> Result<VportInfo, Error> {
        one(self
            .ovs
            .call(&msg::by_name(ObjCmd::Get, self.dp_ifindex, name), 0)?)
    }

    /// Looks a vport up by port number.
    pub fn get_by_port(&mut self, port_no: u32) -> Result<VportInfo, Error> {
        one(self
            .ovs
            .call(&msg::by_port(ObjCmd::Get, self.dp_ifindex, port_no), 0)?)
    }

    /// Lists the datapath's vports.
    pub fn list(&mut self) -> Result<Vec<VportInfo>, Error> {
        let mut out = Vec::new();
        self.ovs.dump(&msg::list(self.dp_ifindex), |m| {
            out.push(VportInfo::from_message(&m)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Deletes a vport by name.
    pub fn delete(&mut self, name: &str) -> Result<(), Error> {
        self.ovs
            .call(&msg::by_name(ObjCmd::Del, self.dp_ifindex, name), 0)
            .map(drop)
    }

    /// Deletes a vport by port number.
    pub fn delete_by_port(&mut self, port_no: u32) -> Result<(), Error> {
        self.ovs
            .call(&msg::by_port(ObjCmd::Del, self.dp_ifindex, port_no), 0)
            .map(drop)
    }

    /// Replaces a vport's upcall PIDs (`[0]` turns upcalls off).
    pub fn set_upcall_pids(&mut self, name: &str, pids: Vec<u32>) -> Result<VportInfo, Error> {
        let m = msg::set_upcall_pids(self.dp_ifindex, name, pids);
        one(self.ovs.call(&m, NLM_F_ECHO)?)
    }

    /// A vport's packet and byte counters.
    pub fn stats(&mut self, name: &str) -> Result<VportStats, Error> {
        msg::stats(&self.get(name)?)
    }
}
