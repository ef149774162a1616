//! Vport create, lookup, enumeration, delete and upcall PIDs.

use super::Ovs;
use crate::transport::Error;
use crate::wire::netlink::NLM_F_ECHO;
use crate::wire::ovs::ObjCmd;
use crate::wire::vport::{TunnelOption, VportAttr, VportInfo, VportMessage, VportType, VxlanExt};

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

fn one(replies: Vec<VportMessage>) -> Result<VportInfo, Error> {
    let m = replies
        .first()
        .ok_or(Error::Protocol("vport request without a reply"))?;
    Ok(VportInfo::from_message(m)?)
}

impl VportHandle<'_> {
    /// Creates a vport and returns it as the kernel reports it.
    pub fn create(&mut self, spec: &VportSpec) -> Result<VportInfo, Error> {
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
        let msg = VportMessage::new(ObjCmd::New, self.dp_ifindex, attrs);
        // NEW and SET answer through a notification: NLM_F_ECHO sends it to us.
        one(self.ovs.call(&msg, NLM_F_ECHO)?)
    }

    /// Looks a vport up by name.
    pub fn get(&mut self, name: &str) -> Result<VportInfo, Error> {
        let msg = VportMessage::new(
            ObjCmd::Get,
            self.dp_ifindex,
            vec![VportAttr::Name(name.to_owned())],
        );
        one(self.ovs.call(&msg, 0)?)
    }

    /// Looks a vport up by port number.
    pub fn get_by_port(&mut self, port_no: u32) -> Result<VportInfo, Error> {
        let msg = VportMessage::new(
            ObjCmd::Get,
            self.dp_ifindex,
            vec![VportAttr::PortNo(port_no)],
        );
        one(self.ovs.call(&msg, 0)?)
    }

    /// Lists the datapath's vports.
    pub fn list(&mut self) -> Result<Vec<VportInfo>, Error> {
        let mut out = Vec::new();
        let msg = VportMessage::new(ObjCmd::Get, self.dp_ifindex, vec![]);
        self.ovs.dump(&msg, |m| {
            out.push(VportInfo::from_message(&m)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Deletes a vport by name.
    pub fn delete(&mut self, name: &str) -> Result<(), Error> {
        let msg = VportMessage::new(
            ObjCmd::Del,
            self.dp_ifindex,
            vec![VportAttr::Name(name.to_owned())],
        );
        self.ovs.call(&msg, 0).map(drop)
    }

    /// Deletes a vport by port number.
    pub fn delete_by_port(&mut self, port_no: u32) -> Result<(), Error> {
        let msg = VportMessage::new(
            ObjCmd::Del,
            self.dp_ifindex,
            vec![VportAttr::PortNo(port_no)],
        );
        self.ovs.call(&msg, 0).map(drop)
    }

    /// Replaces a vport's upcall PIDs (`[0]` turns upcalls off).
    pub fn set_upcall_pids(&mut self, name: &str, pids: Vec<u32>) -> Result<VportInfo, Error> {
        let msg = VportMessage::new(
            ObjCmd::Set,
            self.dp_ifindex,
            vec![
                VportAttr::Name(name.to_owned()),
                VportAttr::UpcallPids(pids),
            ],
        );
        one(self.ovs.call(&msg, NLM_F_ECHO)?)
    }
}
