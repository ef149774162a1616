//! The network configuration on stdin, as `weave-net` and `weave-ipam`
//! read it: Weave's keys (`bridge`, `mtu`, `hairpinMode`, `ipam.subnet`,
//! `ipam.gateway`, `ipam.routes`), weave-rs's `ipam.pendingReleaseDir`,
//! plus what the spec adds (`prevResult`,
//! `cni.dev/valid-attachments`).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde_json::{Map, Value};

use crate::error::{CniError, Code};
use crate::pending::PendingDir;
use crate::result::{CniResult, Dns, Route, parse_dns, parse_routes};
use crate::version::Version;

/// Weave's bridge.
pub const DEFAULT_BRIDGE: &str = "weave";
/// The IPAM plugin that talks to weave-router; `weave-net` runs it in
/// process.
pub const WEAVE_IPAM: &str = "weave-ipam";

/// The `ipam` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpamConf {
    /// The IPAM plugin; empty means weave-ipam.
    pub plugin: String,
    /// Allocate in this subnet instead of the router's default subnet.
    pub subnet: Option<Ipv4Net>,
    /// The gateway to report (and route through) instead of the bridge.
    pub gateway: Option<Ipv4Addr>,
    /// Routes to install instead of the default route.
    pub routes: Vec<Route>,
    /// Where DEL leaves a release for the router when it cannot be
    /// reached (`pendingReleaseDir`; default [`crate::pending::DEFAULT_DIR`]).
    pub pending_release_dir: Option<PathBuf>,
}

impl IpamConf {
    /// Whether weave-router's IPAM serves this network.
    pub fn is_weave(&self) -> bool {
        self.plugin.is_empty() || self.plugin == WEAVE_IPAM
    }

    /// The directory of deferred releases.
    pub fn pending(&self) -> PendingDir {
        PendingDir::new(
            self.pending_release_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(crate::pending::DEFAULT_DIR)),
        )
    }
}

/// One still-valid attachment named by GC.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attachment {
    /// Its `CNI_CONTAINERID`.
    pub container_id: String,
    /// Its `CNI_IFNAME`.
    pub ifname: String,
}

/// A plugin configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConf {
    /// The version results and errors are written in.
    pub version: Version,
    /// The network's name.
    pub name: String,
    /// The plugin type.
    pub plugin: String,
    /// The bridge containers are attached to.
    pub bridge: String,
    /// The veth MTU; `None` means the bridge's.
    pub mtu: Option<u32>,
    /// Whether the bridge port hairpins.
    pub hairpin_mode: bool,
    /// The `ipam` section.
    pub ipam: IpamConf,
    /// DNS settings to report.
    pub dns: Dns,
    /// The previous plugin's result, if any.
    pub prev_result: Option<CniResult>,
    /// GC's list of attachments to keep, if given.
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// The version string of a configuration, however broken the rest is:
/// errors are reported in it when it is one we speak.
pub fn sniff_version(data: &[u8]) -> Option<Version> {
    let value: Value = serde_json::from_slice(data).ok()?;
    Version::parse(value.get("cniVersion")?.as_str()?)
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(Code::InvalidConfig, msg)
}

fn get_str(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(format!("{key} must be a string, not {other}"))),
    }
}

fn get_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(invalid(format!("{key} must be true or false, not {other}"))),
    }
}

/// Checks a name the kernel would take for an interface.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

impl NetConf {
    /// Reads a configuration from stdin's bytes.
    pub fn parse(data: &[u8]) -> Result<NetConf, CniError> {
        let value: Value = serde_json::from_slice(data).map_err(|e| {
            CniError::new(Code::Decode, "the network configuration is not valid JSON")
                .with_details(e.to_string())
        })?;
        let obj = value.as_object().ok_or_else(|| {
            CniError::new(
                Code::Decode,
                "the network configuration is not a JSON object",
            )
        })?;
        let version_text = match obj.get("cniVersion") {
            None | Some(Value::Null) => "0.1.0".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(CniError::new(
                    Code::Decode,
                    format!("cniVersion must be a string, not {other}"),
                ));
            }
        };
        let version = Version::parse(&version_text).ok_or_else(|| {
            CniError::new(
                Code::IncompatibleVersion,
                format!("incompatible CNI versions: config is {version_text:?}"),
            )
            .with_details(format!(
                "plugin supports {}",
                crate::version::SUPPORTED.map(Version::as_str).join(", ")
            ))
        })?;
        for key in ["isGateway", "ipMasq"] {
            if get_bool(obj, key)? == Some(true) {
                return Err(CniError::new(
                    Code::UnsupportedField,
                    format!(
                        "unsupported field {key}=true: weave-net does not do {}",
                        match key {
                            "isGateway" =>
                                "gateway functionality (the bridge address is the router's to manage)",
                            _ => "IP masquerading (weave-router manages NAT)",
                        }
                    ),
                ));
            }
        }
        let bridge = get_str(obj, "bridge")?.unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
        if !valid_ifname(&bridge) {
            return Err(invalid(format!(
                "bridge {bridge:?} is not an interface name"
            )));
        }
        let mtu = match obj.get("mtu") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(0) => None,
                Some(n @ 68..=65535) => Some(n as u32),
                _ => return Err(invalid(format!("mtu must be 0 or 68..65535, not {v}"))),
            },
        };
        let ipam = match obj.get("ipam") {
            None | Some(Value::Null) => IpamConf::default(),
            Some(Value::Object(ipam)) => parse_ipam(ipam)?,
            Some(other) => return Err(invalid(format!("ipam must be an object, not {other}"))),
        };
        let dns = parse_dns(obj.get("dns")).map_err(|e| invalid(e.to_string()))?;
        let prev_result = match obj.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                CniResult::from_value(v)
                    .map_err(|e| CniError::new(Code::Decode, format!("prevResult: {e}")))?,
            ),
        };
        let valid_attachments = match obj
            .get("cni.dev/valid-attachments")
            .or_else(|| obj.get("cni.dev/attachments"))
        {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(parse_attachments(items)?),
            Some(other) => {
                return Err(invalid(format!(
                    "cni.dev/valid-attachments must be a list, not {other}"
                )));
            }
        };
        Ok(NetConf {
            version,
            name: get_str(obj, "name")?.unwrap_or_default(),
            plugin: get_str(obj, "type")?.unwrap_or_default(),
            bridge,
            mtu,
            hairpin_mode: get_bool(obj, "hairpinMode")?.unwrap_or(true),
            ipam,
            dns,
            prev_result,
            valid_attachments,
        })
    }
}

fn parse_ipam(obj: &Map<String, Value>) -> Result<IpamConf, CniError> {
    let subnet = match get_str(obj, "subnet")?.filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => {
            let net: Ipv4Net = text
                .parse()
                .map_err(|_| invalid(format!("ipam.subnet {text:?} is not an IPv4 CIDR")))?;
            if net.trunc() != net {
                return Err(invalid(format!(
                    "ipam.subnet {text:?} has host bits set (did you mean {}?)",
                    net.trunc()
                )));
            }
            if net.prefix_len() > 30 {
                return Err(invalid(format!("ipam.subnet {text:?} is too small")));
            }
            Some(net)
        }
    };
    let gateway = match get_str(obj, "gateway")?.filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => match text.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => Some(ip),
            _ => {
                return Err(invalid(format!(
                    "ipam.gateway {text:?} is not an IPv4 address"
                )));
            }
        },
    };
    let routes = match obj.get("routes") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            parse_routes(items).map_err(|e| invalid(format!("ipam.routes: {e}")))?
        }
        Some(other) => return Err(invalid(format!("ipam.routes must be a list, not {other}"))),
    };
    let pending_release_dir = match get_str(obj, "pendingReleaseDir")?.filter(|s| !s.is_empty()) {
        None => None,
        Some(dir) if dir.starts_with('/') => Some(PathBuf::from(dir)),
        Some(dir) => {
            return Err(invalid(format!(
                "ipam.pendingReleaseDir {dir:?} is not an absolute path"
            )));
        }
    };
    Ok(IpamConf {
        plugin: get_str(obj, "type")?.unwrap_or_default(),
        subnet,
        gateway,
        routes,
        pending_release_dir,
    })
}

fn parse_attachments(items: &[Value]) -> Result<Vec<Attachment>, CniError> {
    items
        .iter()
        .map(|item| {
            let obj = item
                .as_object()
                .ok_or_else(|| invalid(format!("attachment {item} is not an object")))?;
            Ok(Attachment {
                container_id: get_str(obj, "containerID")?
                    .ok_or_else(|| invalid(format!("attachment {item} has no containerID")))?,
                ifname: get_str(obj, "ifname")?.unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weave_defaults() {
        let conf =
            NetConf::parse(br#"{"cniVersion":"1.1.0","name":"weave","type":"weave-net"}"#).unwrap();
        assert_eq!(conf.version, Version::V110);
        assert_eq!(conf.bridge, "weave");
        assert!(conf.hairpin_mode);
        assert_eq!(conf.mtu, None);
        assert!(conf.ipam.is_weave());
        assert!(conf.prev_result.is_none() && conf.valid_attachments.is_none());
    }

    #[test]
    fn full_config() {
        let conf = NetConf::parse(
            br#"{"cniVersion":"0.4.0","name":"n","type":"weave-net","bridge":"br9","mtu":1400,
            "hairpinMode":false,"ipam":{"type":"weave-ipam","subnet":"10.40.0.0/16",
            "gateway":"10.40.0.1","routes":[{"dst":"10.0.0.0/8"}]},
            "dns":{"nameservers":["1.1.1.1"]},
            "cni.dev/valid-attachments":[{"containerID":"abc","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(conf.bridge, "br9");
        assert_eq!(conf.mtu, Some(1400));
        assert!(!conf.hairpin_mode);
        assert_eq!(conf.ipam.subnet, Some("10.40.0.0/16".parse().unwrap()));
        assert_eq!(conf.ipam.gateway, Some(Ipv4Addr::new(10, 40, 0, 1)));
        assert_eq!(conf.ipam.routes.len(), 1);
        assert_eq!(conf.dns.nameservers, ["1.1.1.1"]);
        assert_eq!(conf.valid_attachments.unwrap()[0].container_id, "abc");
    }

    #[test]
    fn errors_carry_the_spec_codes() {
        let cases: &[(&[u8], Code)] = &[
            (b"{", Code::Decode),
            (b"[1]", Code::Decode),
            (br#"{"cniVersion":"9.9.9"}"#, Code::IncompatibleVersion),
            (br#"{"name":"x"}"#, Code::IncompatibleVersion),
            (br#"{"cniVersion":1}"#, Code::Decode),
            (
                br#"{"cniVersion":"1.0.0","isGateway":true}"#,
                Code::UnsupportedField,
            ),
            (
                br#"{"cniVersion":"1.0.0","ipMasq":true}"#,
                Code::UnsupportedField,
            ),
            (
                br#"{"cniVersion":"1.0.0","ipMasq":"yes"}"#,
                Code::InvalidConfig,
            ),
            (
                br#"{"cniVersion":"1.0.0","mtu":70000}"#,
                Code::InvalidConfig,
            ),
            (
                br#"{"cniVersion":"1.0.0","bridge":"a/b"}"#,
                Code::InvalidConfig,
            ),
            (
                br#"{"cniVersion":"1.0.0","ipam":{"subnet":"10.0.0.1/8"}}"#,
                Code::InvalidConfig,
            ),
            (
                br#"{"cniVersion":"1.0.0","ipam":{"subnet":"fd00::/64"}}"#,
                Code::InvalidConfig,
            ),
            (
                br#"{"cniVersion":"1.0.0","ipam":{"gateway":"x"}}"#,
                Code::InvalidConfig,
            ),
            (
                br#"{"cniVersion":"1.0.0","prevResult":{"ips":[{}]}}"#,
                Code::Decode,
            ),
        ];
        for (text, code) in cases {
            let error = NetConf::parse(text).unwrap_err();
            assert_eq!(
                error.code,
                *code,
                "{}: {error}",
                String::from_utf8_lossy(text)
            );
        }
        let gw = NetConf::parse(br#"{"cniVersion":"1.0.0","isGateway":true}"#).unwrap_err();
        assert!(gw.msg.contains("isGateway=true"), "{}", gw.msg);
    }

    #[test]
    fn sniffing_finds_the_version_of_broken_configs() {
        assert_eq!(
            sniff_version(br#"{"cniVersion":"0.3.1","mtu":"x"}"#),
            Some(Version::V031)
        );
        assert_eq!(sniff_version(b"nonsense"), None);
    }

    #[test]
    fn interface_names() {
        assert!(valid_ifname("eth0") && valid_ifname("vethwepl1234567"));
        for bad in ["", ".", "..", "a/b", "a b", "a:b", "sixteen-chars-xx"] {
            assert!(!valid_ifname(bad), "{bad}");
        }
    }
}
