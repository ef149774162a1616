//! `weave`, the operator command line of weave-rs: Weave Net's `weave`
//! script's router commands (`status`, `report`, `rmpeer`, `connect`,
//! `forget`, `expose`, `hide`, `reset`, `ps`) against the local router's
//! HTTP API, so `kubectl exec … -c weave -- weave --local status` works as
//! it did with Weave. The router renders the status pages in Weave's
//! format; this prints them.
//!
//! A crate of its own (not inside `weave-kube`): it is useful on any host
//! that runs `weave-router`, not only under Kubernetes, and it stays small
//! — no Kubernetes client, no async runtime — the blocking HTTP client of
//! `weave_cni::http` is all it needs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use weave_cni::http::{Client, Response};

/// Where the router's API is unless `WEAVE_HTTP_ADDR` or `--http-addr`
/// says otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:6784";
/// The IPAM identity of the bridge's own addresses.
pub const EXPOSE_ID: &str = "weave:expose";

/// A command that failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The router does not answer.
    #[error("weave-router is not running (no answer at {addr}): {error}")]
    NotRunning {
        /// Where it was asked.
        addr: String,
        /// Why.
        error: String,
    },
    /// The router refused.
    #[error("{what}: HTTP {status}: {body}")]
    Refused {
        /// The call.
        what: String,
        /// Its status.
        status: u16,
        /// The router's message.
        body: String,
    },
    /// Bad arguments or a bad answer.
    #[error("{0}")]
    Usage(String),
    /// A local step failed.
    #[error("{0}")]
    Local(String),
}

/// The router's API.
#[derive(Debug, Clone)]
pub struct Weave {
    client: Client,
}

impl Weave {
    /// The router at `addr`.
    pub fn new(addr: &str) -> Weave {
        Weave {
            client: Client::new(addr, Duration::from_secs(3), Duration::from_secs(120)),
        }
    }

    fn call(&self, method: &str, path: &str, form: Option<&str>) -> Result<Response, CliError> {
        let body = form.map(|f| ("application/x-www-form-urlencoded", f.as_bytes()));
        self.client
            .request(method, path, body)
            .map_err(|e| CliError::NotRunning {
                addr: self.client.addr().to_string(),
                error: e.to_string(),
            })
    }

    fn ok(&self, method: &str, path: &str, form: Option<&str>) -> Result<String, CliError> {
        let response = self.call(method, path, form)?;
        if response.is_success() {
            Ok(response.body)
        } else {
            Err(CliError::Refused {
                what: format!("{method} {path}"),
                status: response.status,
                body: response.body.trim().to_string(),
            })
        }
    }

    /// `weave status [targets|connections|peers|ipam]`: the router's page.
    pub fn status(&self, what: Option<&str>) -> Result<String, CliError> {
        let path = match what {
            None => "/status".to_string(),
            Some(page @ ("targets" | "connections" | "peers" | "ipam")) => {
                format!("/status/{page}")
            }
            Some("dns") => {
                return Err(CliError::Usage(
                    "weave-rs has no DNS service: `weave status dns` does not apply".into(),
                ));
            }
            Some(other) => {
                return Err(CliError::Usage(format!(
                    "unknown status page {other:?}: targets, connections, peers or ipam"
                )));
            }
        };
        self.ok("GET", &path, None)
    }

    /// `weave report`: the router's JSON report.
    pub fn report(&self) -> Result<String, CliError> {
        self.ok("GET", "/report", None)
    }

    /// `weave rmpeer <peer>`: takes over the peer's address space.
    pub fn rmpeer(&self, peer: &str) -> Result<String, CliError> {
        self.ok("DELETE", &format!("/peer/{}", encode(peer)), None)
    }

    /// `weave connect [--replace] <peer>…`.
    pub fn connect(&self, replace: bool, peers: &[String]) -> Result<(), CliError> {
        let mut form = peer_form(peers);
        if replace {
            form = if form.is_empty() {
                "replace=true".into()
            } else {
                format!("replace=true&{form}")
            };
        }
        self.ok("POST", "/connect", Some(&form)).map(|_| ())
    }

    /// `weave forget <peer>…`.
    pub fn forget(&self, peers: &[String]) -> Result<(), CliError> {
        self.ok("POST", "/forget", Some(&peer_form(peers)))
            .map(|_| ())
    }

    /// `weave expose [<cidr>] [--without-masquerade]`: an address for the
    /// bridge (allocated in the default subnet, allocated in a subnet given
    /// as its network address, or claimed as given), then the host rules.
    /// Returns the address exposed.
    pub fn expose(&self, cidr: Option<&str>, skip_nat: bool) -> Result<String, CliError> {
        let addr = match cidr {
            None => self.ok("POST", &format!("/ip/{EXPOSE_ID}"), None)?,
            Some(text) => {
                let (ip, prefix) = split_cidr(text)?;
                let net = network_of(&ip, prefix)?;
                if net == ip {
                    self.ok("POST", &format!("/ip/{EXPOSE_ID}/{ip}/{prefix}"), None)?
                } else {
                    self.ok("PUT", &format!("/ip/{EXPOSE_ID}/{ip}/{prefix}"), None)?;
                    text.to_string()
                }
            }
        };
        let addr = addr.trim().to_string();
        let (ip, prefix) = split_cidr(&addr)?;
        let query = if skip_nat { "?skipNAT=true" } else { "" };
        self.ok("POST", &format!("/expose/{ip}/{prefix}{query}"), None)?;
        Ok(addr)
    }

    /// `weave hide [<cidr>]`: takes the address off the bridge and frees it
    /// (without an argument: every `weave:expose` address). Returns the
    /// addresses hidden.
    pub fn hide(&self, cidr: Option<&str>) -> Result<Vec<String>, CliError> {
        let addrs: Vec<String> = match cidr {
            Some(text) => vec![text.to_string()],
            None => self
                .ps()?
                .into_iter()
                .filter(|(id, _)| id == EXPOSE_ID)
                .flat_map(|(_, addrs)| addrs)
                .collect(),
        };
        for addr in &addrs {
            let (ip, prefix) = split_cidr(addr)?;
            self.ok("DELETE", &format!("/expose/{ip}/{prefix}"), None)?;
            let response = self.call("DELETE", &format!("/ip/{EXPOSE_ID}/{ip}"), None)?;
            if !response.is_success() && response.status != 404 {
                return Err(CliError::Refused {
                    what: format!("DELETE /ip/{EXPOSE_ID}/{ip}"),
                    status: response.status,
                    body: response.body.trim().to_string(),
                });
            }
        }
        Ok(addrs)
    }

    /// Every identity with addresses on this router (`GET /ip`).
    pub fn ps(&self) -> Result<Vec<(String, Vec<String>)>, CliError> {
        let body = self.ok("GET", "/ip", None)?;
        parse_owned(&body)
    }

    /// `DELETE /peer`: the router gives its address space to the others
    /// and stops allocating (the first half of `weave reset`).
    pub fn leave(&self) -> Result<(), CliError> {
        self.ok("DELETE", "/peer", None).map(|_| ())
    }
}

/// Decodes `GET /ip`'s `{"owned":[{"containerid":…,"addrs":[…]}]}`.
pub fn parse_owned(body: &str) -> Result<Vec<(String, Vec<String>)>, CliError> {
    let bad = |why: &str| CliError::Usage(format!("GET /ip answered something else: {why}"));
    let value: Value = serde_json::from_str(body).map_err(|e| bad(&e.to_string()))?;
    let list = match value.get("owned") {
        Some(Value::Array(list)) => list.clone(),
        Some(Value::Null) | None => Vec::new(),
        Some(_) => return Err(bad("owned is not a list")),
    };
    list.iter()
        .map(|entry| {
            let id = entry
                .get("containerid")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("an entry without containerid"))?;
            let addrs = entry
                .get("addrs")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            Ok((id.to_string(), addrs))
        })
        .collect()
}

/// `weave ps` lines as Weave printed them: the identity (a container id
/// shortened to 12 characters), the MAC, the addresses. The router's API
/// knows a MAC only for the bridge (`weave:expose`, read from the bridge);
/// others show `-`.
pub fn ps_lines(owned: &[(String, Vec<String>)], bridge_mac: Option<&str>) -> Vec<String> {
    owned
        .iter()
        .map(|(id, addrs)| {
            let is_expose = id == EXPOSE_ID;
            let shown = if !is_expose && id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
            {
                &id[..12]
            } else {
                id.as_str()
            };
            let mac = match (is_expose, bridge_mac) {
                (true, Some(mac)) => mac,
                _ => "-",
            };
            format!("{shown} {mac} {}", addrs.join(" "))
        })
        .collect()
}

/// The MAC of `bridge`, from sysfs.
pub fn bridge_mac(bridge: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/sys/class/net").join(bridge).join("address"))
        .ok()
        .map(|s| s.trim().to_string())
}

fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn peer_form(peers: &[String]) -> String {
    peers
        .iter()
        .map(|p| format!("peer={}", encode(p).replace(':', "%3A")))
        .collect::<Vec<_>>()
        .join("&")
}

fn split_cidr(text: &str) -> Result<(String, u8), CliError> {
    let bad = || CliError::Usage(format!("{text:?} is not an address/prefix"));
    let (ip, prefix) = text.trim().split_once('/').ok_or_else(bad)?;
    let _: std::net::Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(bad)?;
    Ok((ip.to_string(), prefix))
}

fn network_of(ip: &str, prefix: u8) -> Result<String, CliError> {
    let addr: std::net::Ipv4Addr = ip
        .parse()
        .map_err(|_| CliError::Usage(format!("{ip:?} is not an IPv4 address")))?;
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    Ok(std::net::Ipv4Addr::from(u32::from(addr) & mask).to_string())
}

/// `weave reset`'s local half: `weave-router reset` (bridge, datapath,
/// veths, host rules) and the router's data under `db_prefix`.
pub fn reset_host(router_bin: &Path, db_prefix: Option<&Path>) -> Result<String, CliError> {
    let out = std::process::Command::new(router_bin)
        .arg("reset")
        .output()
        .map_err(|e| CliError::Local(format!("running {} reset: {e}", router_bin.display())))?;
    if !out.status.success() {
        return Err(CliError::Local(format!(
            "{} reset failed: {}",
            router_bin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    if let Some(prefix) = db_prefix {
        for suffix in ["data.redb", "peers"] {
            let mut path = prefix.as_os_str().to_owned();
            path.push(suffix);
            let path = PathBuf::from(path);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(CliError::Local(format!("removing {}: {e}", path.display())));
                }
            }
        }
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_shortens_container_ids() {
        let id = "a".repeat(64);
        let owned = vec![
            (EXPOSE_ID.to_string(), vec!["10.32.0.1/12".to_string()]),
            (
                id,
                vec!["10.32.0.2/12".to_string(), "10.40.0.2/16".to_string()],
            ),
        ];
        assert_eq!(
            ps_lines(&owned, Some("7a:00:00:00:00:01")),
            [
                "weave:expose 7a:00:00:00:00:01 10.32.0.1/12",
                "aaaaaaaaaaaa - 10.32.0.2/12 10.40.0.2/16"
            ]
        );
    }

    #[test]
    fn owned_parses_and_rejects() {
        let owned =
            parse_owned(r#"{"owned":[{"containerid":"x","addrs":["10.32.0.3/12"]}]}"#).unwrap();
        assert_eq!(owned, [("x".to_string(), vec!["10.32.0.3/12".to_string()])]);
        assert!(parse_owned(r#"{"owned":null}"#).unwrap().is_empty());
        assert!(parse_owned("nope").is_err());
        assert!(parse_owned(r#"{"owned":[{"addrs":[]}]}"#).is_err());
    }

    #[test]
    fn forms_and_cidrs() {
        assert_eq!(
            peer_form(&["10.0.0.1".into(), "h:6783".into()]),
            "peer=10.0.0.1&peer=h%3A6783"
        );
        assert_eq!(
            split_cidr("10.32.0.1/12").unwrap(),
            ("10.32.0.1".into(), 12)
        );
        assert!(split_cidr("10.32.0.1").is_err());
        assert!(split_cidr("10.32.0.1/40").is_err());
        assert_eq!(network_of("10.32.0.1", 12).unwrap(), "10.32.0.0");
        assert!(Weave::new("127.0.0.1:1").status(Some("dns")).is_err());
        assert!(matches!(
            Weave::new("127.0.0.1:1").status(None),
            Err(CliError::NotRunning { .. })
        ));
    }
}
