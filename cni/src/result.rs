//! The ADD result: interfaces, addresses, routes and DNS, written in the
//! layout of the version the runtime asked for and read back from any
//! supported layout (a `prevResult`, or a delegated plugin's answer).

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Map, Value, json};

use crate::version::Version;

/// An interface the attachment made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its hardware address, if it has one.
    pub mac: Option<String>,
    /// Its MTU, if known.
    pub mtu: Option<u32>,
    /// The namespace it lives in (`CNI_NETNS`); `None` on the host.
    pub sandbox: Option<String>,
    /// A socket path, for interfaces that have one.
    pub socket_path: Option<String>,
    /// A PCI id, for interfaces that have one.
    pub pci_id: Option<String>,
}

/// An address the attachment assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// The address with its prefix length.
    pub address: IpNet,
    /// The subnet's gateway.
    pub gateway: Option<IpAddr>,
    /// Index into [`CniResult::interfaces`].
    pub interface: Option<usize>,
}

/// A route the attachment made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Next hop; `None` means the address's gateway.
    pub gw: Option<IpAddr>,
    /// Path MTU (1.1.0).
    pub mtu: Option<u32>,
    /// Advertised MSS (1.1.0).
    pub advmss: Option<u32>,
    /// Priority (1.1.0).
    pub priority: Option<u32>,
    /// Routing table (1.1.0).
    pub table: Option<u32>,
    /// Scope (1.1.0).
    pub scope: Option<u32>,
}

impl Route {
    /// A plain route to `dst` via `gw`.
    pub fn via(dst: IpNet, gw: Option<IpAddr>) -> Route {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

/// DNS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    /// Name servers, in order.
    pub nameservers: Vec<String>,
    /// Local domain.
    pub domain: Option<String>,
    /// Search domains.
    pub search: Vec<String>,
    /// Resolver options.
    pub options: Vec<String>,
}

impl Dns {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// A result, independent of the version it is written in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    /// Interfaces.
    pub interfaces: Vec<Interface>,
    /// Addresses.
    pub ips: Vec<IpConfig>,
    /// Routes.
    pub routes: Vec<Route>,
    /// DNS.
    pub dns: Dns,
}

/// Why a result could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("result: {0}")]
pub struct ResultError(pub String);

fn bad(what: impl Into<String>) -> ResultError {
    ResultError(what.into())
}

fn opt_str(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, ResultError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(bad(format!("{key} is not a string: {other}"))),
    }
}

fn opt_u32(obj: &Map<String, Value>, key: &str) -> Result<Option<u32>, ResultError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| bad(format!("{key} is not a 32-bit unsigned number: {v}"))),
    }
}

fn str_list(obj: &Map<String, Value>, key: &str) -> Result<Vec<String>, ResultError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(format!("{key} holds a non-string: {item}")))
            })
            .collect(),
        Some(other) => Err(bad(format!("{key} is not a list: {other}"))),
    }
}

fn array<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a [Value], ResultError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(bad(format!("{key} is not a list: {other}"))),
    }
}

fn object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, ResultError> {
    value
        .as_object()
        .ok_or_else(|| bad(format!("{what} is not an object: {value}")))
}

fn parse_net(text: &str, what: &str) -> Result<IpNet, ResultError> {
    text.parse::<IpNet>().map_err(|_| {
        bad(format!(
            "{what} {text:?} is not an address in CIDR notation"
        ))
    })
}

fn parse_ip(text: &str, what: &str) -> Result<IpAddr, ResultError> {
    text.parse::<IpAddr>()
        .map_err(|_| bad(format!("{what} {text:?} is not an IP address")))
}

/// Reads a list of routes (a result's `routes`, or `ipam.routes`).
pub fn parse_routes(items: &[Value]) -> Result<Vec<Route>, ResultError> {
    items
        .iter()
        .map(|item| {
            let obj = object(item, "route")?;
            let dst = opt_str(obj, "dst")?.ok_or_else(|| bad("route without dst"))?;
            Ok(Route {
                dst: parse_net(&dst, "route dst")?,
                gw: opt_str(obj, "gw")?
                    .map(|gw| parse_ip(&gw, "route gw"))
                    .transpose()?,
                mtu: opt_u32(obj, "mtu")?,
                advmss: opt_u32(obj, "advmss")?,
                priority: opt_u32(obj, "priority")?,
                table: opt_u32(obj, "table")?,
                scope: opt_u32(obj, "scope")?,
            })
        })
        .collect()
}

/// Reads a `dns` object.
pub fn parse_dns(value: Option<&Value>) -> Result<Dns, ResultError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(Dns::default());
    };
    let obj = object(value, "dns")?;
    Ok(Dns {
        nameservers: str_list(obj, "nameservers")?,
        domain: opt_str(obj, "domain")?,
        search: str_list(obj, "search")?,
        options: str_list(obj, "options")?,
    })
}

impl CniResult {
    /// Reads a result in any supported layout.
    pub fn from_value(value: &Value) -> Result<CniResult, ResultError> {
        let obj = object(value, "result")?;
        let mut result = CniResult::default();
        for item in array(obj, "interfaces")? {
            let i = object(item, "interface")?;
            result.interfaces.push(Interface {
                name: opt_str(i, "name")?.unwrap_or_default(),
                mac: opt_str(i, "mac")?,
                mtu: opt_u32(i, "mtu")?,
                sandbox: opt_str(i, "sandbox")?.filter(|s| !s.is_empty()),
                socket_path: opt_str(i, "socketPath")?,
                pci_id: opt_str(i, "pciID")?,
            });
        }
        for item in array(obj, "ips")? {
            let ip = object(item, "ips entry")?;
            let address =
                opt_str(ip, "address")?.ok_or_else(|| bad("ips entry without address"))?;
            let interface = opt_u32(ip, "interface")?.map(|i| i as usize);
            if let Some(index) = interface {
                if index >= result.interfaces.len() {
                    return Err(bad(format!(
                        "ips entry names interface {index} of {}",
                        result.interfaces.len()
                    )));
                }
            }
            result.ips.push(IpConfig {
                address: parse_net(&address, "address")?,
                gateway: opt_str(ip, "gateway")?
                    .map(|gw| parse_ip(&gw, "gateway"))
                    .transpose()?,
                interface,
            });
        }
        result.routes = parse_routes(array(obj, "routes")?)?;
        result.dns = parse_dns(obj.get("dns"))?;
        Ok(result)
    }

    /// Reads a result from JSON bytes.
    pub fn from_slice(data: &[u8]) -> Result<CniResult, ResultError> {
        let value: Value =
            serde_json::from_slice(data).map_err(|e| bad(format!("not JSON: {e}")))?;
        CniResult::from_value(&value)
    }

    /// The result in the layout of `version`.
    pub fn to_value(&self, version: Version) -> Value {
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version.as_str()));
        if !self.interfaces.is_empty() {
            let list: Vec<Value> = self
                .interfaces
                .iter()
                .map(|i| {
                    let mut o = Map::new();
                    o.insert("name".into(), json!(i.name));
                    if let Some(mac) = &i.mac {
                        o.insert("mac".into(), json!(mac));
                    }
                    if let Some(mtu) = i.mtu.filter(|_| version >= Version::V110) {
                        o.insert("mtu".into(), json!(mtu));
                    }
                    if let Some(sandbox) = &i.sandbox {
                        o.insert("sandbox".into(), json!(sandbox));
                    }
                    if let Some(path) = i.socket_path.as_ref().filter(|_| version >= Version::V100)
                    {
                        o.insert("socketPath".into(), json!(path));
                    }
                    if let Some(pci) = i.pci_id.as_ref().filter(|_| version >= Version::V110) {
                        o.insert("pciID".into(), json!(pci));
                    }
                    Value::Object(o)
                })
                .collect();
            out.insert("interfaces".into(), Value::Array(list));
        }
        if !self.ips.is_empty() {
            let list: Vec<Value> = self
                .ips
                .iter()
                .map(|ip| {
                    let mut o = Map::new();
                    if version.ips_have_version() {
                        let family = if ip.address.addr().is_ipv4() {
                            "4"
                        } else {
                            "6"
                        };
                        o.insert("version".into(), json!(family));
                    }
                    o.insert("address".into(), json!(ip.address.to_string()));
                    if let Some(gw) = ip.gateway {
                        o.insert("gateway".into(), json!(gw.to_string()));
                    }
                    if let Some(index) = ip.interface {
                        o.insert("interface".into(), json!(index));
                    }
                    Value::Object(o)
                })
                .collect();
            out.insert("ips".into(), Value::Array(list));
        }
        if !self.routes.is_empty() {
            let list: Vec<Value> = self
                .routes
                .iter()
                .map(|r| route_value(r, version >= Version::V110))
                .collect();
            out.insert("routes".into(), Value::Array(list));
        }
        out.insert("dns".into(), dns_value(&self.dns));
        Value::Object(out)
    }
}

/// A route as JSON; `rich` adds the 1.1.0 fields.
pub fn route_value(route: &Route, rich: bool) -> Value {
    let mut o = Map::new();
    o.insert("dst".into(), json!(route.dst.to_string()));
    if let Some(gw) = route.gw {
        o.insert("gw".into(), json!(gw.to_string()));
    }
    if rich {
        for (key, value) in [
            ("mtu", route.mtu),
            ("advmss", route.advmss),
            ("priority", route.priority),
            ("table", route.table),
            ("scope", route.scope),
        ] {
            if let Some(value) = value {
                o.insert(key.into(), json!(value));
            }
        }
    }
    Value::Object(o)
}

fn dns_value(dns: &Dns) -> Value {
    let mut o = Map::new();
    if !dns.nameservers.is_empty() {
        o.insert("nameservers".into(), json!(dns.nameservers));
    }
    if let Some(domain) = &dns.domain {
        o.insert("domain".into(), json!(domain));
    }
    if !dns.search.is_empty() {
        o.insert("search".into(), json!(dns.search));
    }
    if !dns.options.is_empty() {
        o.insert("options".into(), json!(dns.options));
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "vethwepl1234567".into(),
                    mac: Some("aa:bb:cc:dd:ee:ff".into()),
                    ..Interface::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("aa:bb:cc:dd:ee:01".into()),
                    mtu: Some(1376),
                    sandbox: Some("/run/netns/x".into()),
                    ..Interface::default()
                },
            ],
            ips: vec![IpConfig {
                address: "10.32.0.5/12".parse().unwrap(),
                gateway: Some("10.32.0.1".parse().unwrap()),
                interface: Some(1),
            }],
            routes: vec![Route::via("0.0.0.0/0".parse().unwrap(), None)],
            dns: Dns {
                nameservers: vec!["10.96.0.10".into()],
                ..Dns::default()
            },
        }
    }

    #[test]
    fn layouts_differ_only_where_the_versions_do() {
        let result = sample();
        let old = result.to_value(Version::V040);
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["cniVersion"], "0.4.0");
        assert!(old["interfaces"][1].get("mtu").is_none());
        let new = result.to_value(Version::V110);
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(new["ips"][0]["interface"], 1);
        assert_eq!(new["interfaces"][1]["sandbox"], "/run/netns/x");
        assert_eq!(new["interfaces"][1]["mtu"], 1376);
        assert!(new["interfaces"][0].get("sandbox").is_none());
        for v in crate::version::SUPPORTED {
            let back = CniResult::from_value(&result.to_value(v)).unwrap();
            let mut expected = result.clone();
            if v < Version::V110 {
                expected.interfaces[1].mtu = None;
            }
            assert_eq!(back, expected, "{v}");
        }
    }

    #[test]
    fn bad_results_are_errors() {
        for text in [
            "[]",
            r#"{"ips":[{"address":"10.0.0.1"}]}"#,
            r#"{"ips":[{"address":"10.0.0.1/8","interface":3}]}"#,
            r#"{"interfaces":{}}"#,
            r#"{"routes":[{"gw":"1.2.3.4"}]}"#,
            r#"{"dns":{"nameservers":[1]}}"#,
            r#"{"interfaces":[{"mtu":-1}]}"#,
        ] {
            assert!(CniResult::from_slice(text.as_bytes()).is_err(), "{text}");
        }
    }
}
