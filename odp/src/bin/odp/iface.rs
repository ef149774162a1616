//! The `NAME,key=value,…` interface argument of add-if and set-if.

use odp::handle::VportSpec;
use odp::wire::vport::{TunnelOption, VportType, VxlanExt};

/// One parsed interface argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    /// Interface name.
    pub name: String,
    /// `type=`, if given.
    pub kind: Option<VportType>,
    /// `port_no=`, if given.
    pub port_no: Option<u32>,
    /// `dst_port=`, if given.
    pub dst_port: Option<u16>,
    /// `exts=gbp`.
    pub gbp: bool,
    /// `upcall_pid=` (an extension of this tool; set-if only).
    pub upcall_pid: Option<u32>,
    /// Options the kernel datapath has no place for (ovs-vswitchd keeps
    /// them in userspace), e.g. `remote_ip`, `key`.
    pub ignored: Vec<String>,
}

/// The type names ovs-dpctl uses.
pub fn parse_type(s: &str) -> Result<VportType, String> {
    Ok(match s {
        "system" | "netdev" => VportType::Netdev,
        "internal" => VportType::Internal,
        "gre" => VportType::Gre,
        "vxlan" => VportType::Vxlan,
        "geneve" => VportType::Geneve,
        other => return Err(format!("unknown interface type {other:?}")),
    })
}

/// ovs-dpctl's name for a vport type.
pub fn type_name(t: VportType) -> String {
    match t {
        VportType::Netdev => "system".into(),
        VportType::Internal => "internal".into(),
        VportType::Gre => "gre".into(),
        VportType::Vxlan => "vxlan".into(),
        VportType::Geneve => "geneve".into(),
        VportType::Other(n) => format!("type{n}"),
    }
}

fn num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{key}: bad number {v:?}"))
}

impl Iface {
    /// Parses `NAME[,key=value]...`.
    pub fn parse(arg: &str) -> Result<Self, String> {
        let mut parts = arg.split(',');
        let name = parts.next().unwrap_or("").to_owned();
        if name.is_empty() {
            return Err(format!("{arg:?}: missing interface name"));
        }
        let mut out = Iface {
            name,
            kind: None,
            port_no: None,
            dst_port: None,
            gbp: false,
            upcall_pid: None,
            ignored: Vec::new(),
        };
        for p in parts.filter(|p| !p.is_empty()) {
            let Some((k, v)) = p.split_once('=') else {
                return Err(format!("{p:?}: option is not key=value"));
            };
            match k {
                "type" => out.kind = Some(parse_type(v)?),
                "port_no" => out.port_no = Some(num(k, v)?),
                "dst_port" => out.dst_port = Some(num(k, v)?),
                "upcall_pid" => out.upcall_pid = Some(num(k, v)?),
                "exts" => {
                    for e in v.split(['|', ' ']) {
                        match e {
                            "gbp" => out.gbp = true,
                            "" => {}
                            other => return Err(format!("exts: unknown extension {other:?}")),
                        }
                    }
                }
                _ => out.ignored.push(k.to_owned()),
            }
        }
        Ok(out)
    }

    /// The vport to create (netdev unless `type=` says otherwise; VXLAN and
    /// Geneve default to their IANA ports, as OVS does).
    pub fn spec(&self) -> Result<VportSpec, String> {
        let kind = self.kind.unwrap_or(VportType::Netdev);
        let mut spec = match kind {
            VportType::Netdev => VportSpec::netdev(&self.name),
            VportType::Internal => VportSpec::internal(&self.name),
            VportType::Gre => VportSpec::gre(&self.name),
            VportType::Vxlan => VportSpec::vxlan(&self.name, self.dst_port.unwrap_or(4789)),
            VportType::Geneve => VportSpec::geneve(&self.name, self.dst_port.unwrap_or(6081)),
            VportType::Other(n) => return Err(format!("cannot create vports of type {n}")),
        };
        if self.dst_port.is_some() && !matches!(kind, VportType::Vxlan | VportType::Geneve) {
            return Err(format!(
                "{}: dst_port needs type=vxlan or geneve",
                self.name
            ));
        }
        if self.gbp {
            if kind != VportType::Vxlan {
                return Err(format!("{}: exts=gbp needs type=vxlan", self.name));
            }
            spec.options
                .push(TunnelOption::Extension(vec![VxlanExt::Gbp]));
        }
        if let Some(p) = self.port_no {
            spec = spec.with_port_no(p);
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ovs_dpctl_style_arguments() {
        let i =
            Iface::parse("vxlan0,type=vxlan,remote_ip=192.0.2.2,dst_port=8472,exts=gbp").unwrap();
        assert_eq!(i.name, "vxlan0");
        assert_eq!(i.kind, Some(VportType::Vxlan));
        assert_eq!(i.dst_port, Some(8472));
        assert!(i.gbp);
        assert_eq!(i.ignored, vec!["remote_ip".to_owned()]);
        let spec = i.spec().unwrap();
        assert!(spec.options.contains(&TunnelOption::DstPort(8472)));
        let plain = Iface::parse("veth0").unwrap().spec().unwrap();
        assert_eq!(plain.kind, VportType::Netdev);
        assert!(Iface::parse("x,type=bogus").is_err());
        assert!(Iface::parse(",type=internal").is_err());
        assert!(Iface::parse("x,dst_port=1").unwrap().spec().is_err());
        assert_eq!(
            Iface::parse("p,port_no=7,type=internal")
                .unwrap()
                .spec()
                .unwrap()
                .port_no,
            Some(7)
        );
    }
}
