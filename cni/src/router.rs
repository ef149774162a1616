//! The weave-router HTTP API as the plugins use it: Weave's IPAM calls
//! (`/ip/...`), readiness, exposing the bridge, and registering containers
//! for fastdp.

use std::time::Duration;

use ipnet::Ipv4Net;
use serde_json::Value;

use crate::error::{CniError, Code};
use crate::http::{Client, HttpError, Response};

/// Where the router listens unless `WEAVE_HTTP_ADDR` says otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:6784";

/// The IPAM identity Weave's plugin gave the bridge's own address.
pub const EXPOSE_ID: &str = "weave:expose";

/// A router, reached over HTTP.
#[derive(Debug, Clone)]
pub struct Router {
    client: Client,
}

/// One identity's addresses, from `GET /ip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    /// The identity (a container id, or `weave:expose` and the like).
    pub id: String,
    /// Its addresses.
    pub addrs: Vec<Ipv4Net>,
}

fn unreachable(error: HttpError) -> CniError {
    CniError::new(
        Code::TryAgainLater,
        "weave-router cannot be reached; try again later",
    )
    .with_details(error.to_string())
}

fn refused(what: &str, response: &Response) -> CniError {
    let code = if response.status == 503 {
        Code::TryAgainLater
    } else {
        Code::Router
    };
    CniError::new(code, format!("weave-router refused to {what}")).with_details(format!(
        "HTTP {}: {}",
        response.status,
        response.body.trim()
    ))
}

fn parse_cidr(text: &str) -> Result<Ipv4Net, CniError> {
    text.trim().parse::<Ipv4Net>().map_err(|_| {
        CniError::new(
            Code::Router,
            format!("weave-router answered {:?}, not an address", text.trim()),
        )
    })
}

impl Router {
    /// The router at `addr`.
    pub fn new(addr: &str) -> Router {
        Router {
            // Allocations wait for the ring's consensus on a fresh cluster.
            client: Client::new(addr, Duration::from_secs(2), Duration::from_secs(60)),
        }
    }

    /// The router named by `WEAVE_HTTP_ADDR`, or the default address.
    pub fn from_env() -> Router {
        let addr = std::env::var("WEAVE_HTTP_ADDR")
            .ok()
            .filter(|a| !a.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_ADDR.to_string());
        Router::new(&addr)
    }

    /// The address it is reached at.
    pub fn addr(&self) -> &str {
        self.client.addr()
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<Response, CniError> {
        self.client.request(method, path, body).map_err(unreachable)
    }

    /// Allocates (or returns the existing) address of `id`, in `subnet` or
    /// in the router's default subnet.
    pub fn allocate(&self, id: &str, subnet: Option<Ipv4Net>) -> Result<Ipv4Net, CniError> {
        let path = match subnet {
            Some(net) => format!("/ip/{id}/{}/{}", net.network(), net.prefix_len()),
            None => format!("/ip/{id}"),
        };
        let response = self.call("POST", &path, None)?;
        if !response.is_success() {
            return Err(refused(&format!("allocate an address for {id}"), &response));
        }
        parse_cidr(&response.body)
    }

    /// The addresses of `id` in `subnet` (or the default subnet).
    pub fn lookup(&self, id: &str, subnet: Option<Ipv4Net>) -> Result<Vec<Ipv4Net>, CniError> {
        let path = match subnet {
            Some(net) => format!("/ip/{id}/{}/{}", net.network(), net.prefix_len()),
            None => format!("/ip/{id}"),
        };
        let response = self.call("GET", &path, None)?;
        match response.status {
            404 => Ok(Vec::new()),
            s if (200..300).contains(&s) => {
                response.body.split_whitespace().map(parse_cidr).collect()
            }
            _ => Err(refused(
                &format!("look up the addresses of {id}"),
                &response,
            )),
        }
    }

    /// Frees every address of `id`. Having none is not an error.
    pub fn release(&self, id: &str) -> Result<(), CniError> {
        let response = self.call("DELETE", &format!("/ip/{id}"), None)?;
        // Weave's allocator answers 400 "Delete: no addresses for …" when
        // there is nothing to free: that is DEL's idempotent success.
        if response.is_success()
            || response.status == 404
            || (response.status == 400 && response.body.contains("no addresses for"))
        {
            return Ok(());
        }
        Err(refused(&format!("free the addresses of {id}"), &response))
    }

    /// The subnet allocations without one use.
    pub fn default_subnet(&self) -> Result<Ipv4Net, CniError> {
        let response = self.call("GET", "/ipinfo/defaultsubnet", None)?;
        if !response.is_success() {
            return Err(refused("tell its default subnet", &response));
        }
        parse_cidr(&response.body)
    }

    /// Every identity with addresses owned here.
    pub fn owned(&self) -> Result<Vec<Owned>, CniError> {
        let response = self.call("GET", "/ip", None)?;
        if !response.is_success() {
            return Err(refused("list owned addresses", &response));
        }
        parse_owned(&response.body)
    }

    /// Whether the router answers and runs IP allocation.
    pub fn ipam_ready(&self) -> Result<(), CniError> {
        let response = self.client.request("GET", "/report", None).map_err(|e| {
            CniError::new(Code::NotAvailable, "weave-router cannot be reached")
                .with_details(e.to_string())
        })?;
        if !response.is_success() {
            return Err(
                CniError::new(Code::NotAvailable, "weave-router is not ready").with_details(
                    format!("HTTP {}: {}", response.status, response.body.trim()),
                ),
            );
        }
        let report: Value = serde_json::from_str(&response.body).map_err(|e| {
            CniError::new(Code::NotAvailable, "weave-router's report is not JSON")
                .with_details(e.to_string())
        })?;
        if report.get("IPAM").is_none_or(Value::is_null) {
            return Err(CniError::new(
                Code::NotAvailable,
                "weave-router runs without IP address allocation (--ipalloc-range \"\")",
            ));
        }
        Ok(())
    }

    /// Asks the router to expose `addr` on the bridge. `Ok(false)` when the
    /// router has no such call, or cannot set host rules on this host (503:
    /// no working iptables); the caller then puts the address on the bridge
    /// itself, without masquerading.
    pub fn expose(&self, addr: Ipv4Net) -> Result<bool, CniError> {
        let path = format!("/expose/{}/{}", addr.addr(), addr.prefix_len());
        let response = self.call("POST", &path, None)?;
        match response.status {
            404 | 405 | 503 => Ok(false),
            s if (200..300).contains(&s) => Ok(true),
            _ => Err(refused(&format!("expose {addr}"), &response)),
        }
    }

    /// Tells the router about a container so fastdp can install its flows
    /// at once. Failures are logged on stderr, never returned: the router
    /// learns the container from its traffic anyway (a Linux bridge
    /// carries it). See [`Router::attach_container`] for pure Fastdp.
    pub fn register_container(&self, id: &str, ips: &[Ipv4Net], mac: &str, host_veth: &str) {
        let result = self.put_container(id, ips, mac, host_veth);
        log_registration("register", id, result);
    }

    /// Pure Fastdp: the router makes `host_veth` a port of its datapath
    /// and installs the container's flows. Without this the container has
    /// no connectivity, so every failure is returned.
    pub fn attach_container(
        &self,
        id: &str,
        ips: &[Ipv4Net],
        mac: &str,
        host_veth: &str,
    ) -> Result<(), CniError> {
        let response = self
            .put_container(id, ips, mac, host_veth)
            .map_err(unreachable)?;
        if response.is_success() {
            Ok(())
        } else {
            Err(refused(
                &format!("attach container {id} to its datapath"),
                &response,
            ))
        }
    }

    fn put_container(
        &self,
        id: &str,
        ips: &[Ipv4Net],
        mac: &str,
        host_veth: &str,
    ) -> Result<Response, HttpError> {
        let body = serde_json::json!({
            "ips": ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "mac": mac,
            "host_veth": host_veth,
        })
        .to_string();
        self.client.request(
            "PUT",
            &format!("/container/{id}"),
            Some(("application/json", body.as_bytes())),
        )
    }

    /// Tells the router a container is gone; failures only logged.
    pub fn unregister_container(&self, id: &str) {
        let result = self
            .client
            .request("DELETE", &format!("/container/{id}"), None);
        log_registration("unregister", id, result);
    }
}

fn log_registration(what: &str, id: &str, result: Result<Response, HttpError>) {
    match result {
        Ok(r) if r.is_success() => {}
        // An older router without the call; nothing to do.
        Ok(r) if r.status == 404 || r.status == 405 => {}
        Ok(r) => eprintln!(
            "weave-cni: {what} container {id}: HTTP {}: {}",
            r.status,
            r.body.trim()
        ),
        Err(e) => eprintln!("weave-cni: {what} container {id}: {e}"),
    }
}

/// Reads `GET /ip`'s answer: `{"owned":[{"containerid":…,"addrs":[…]}]}`.
pub fn parse_owned(body: &str) -> Result<Vec<Owned>, CniError> {
    let bad = |what: &str| CniError::new(Code::Router, format!("GET /ip: {what}"));
    let value: Value = serde_json::from_str(body).map_err(|_| bad("not JSON"))?;
    let list = match value.get("owned") {
        Some(Value::Array(list)) => list.as_slice(),
        Some(Value::Null) | None => &[],
        Some(_) => return Err(bad("owned is not a list")),
    };
    list.iter()
        .map(|entry| {
            let id = entry
                .get("containerid")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("entry without containerid"))?;
            let addrs = match entry.get("addrs") {
                Some(Value::Array(addrs)) => addrs
                    .iter()
                    .map(|a| {
                        a.as_str()
                            .ok_or_else(|| bad("address not a string"))
                            .and_then(parse_cidr)
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                _ => Vec::new(),
            };
            Ok(Owned {
                id: id.to_string(),
                addrs,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_list_is_read() {
        let owned = parse_owned(
            r#"{"owned":[{"containerid":"c1","addrs":["10.32.0.1/12"]},{"containerid":"weave:expose","addrs":[]}]}"#,
        )
        .unwrap();
        assert_eq!(owned.len(), 2);
        assert_eq!(
            owned[0].addrs[0],
            "10.32.0.1/12".parse::<Ipv4Net>().unwrap()
        );
        assert!(parse_owned(r#"{"owned":[{"addrs":[]}]}"#).is_err());
        assert!(parse_owned("x").is_err());
        assert!(parse_owned(r#"{"owned":null}"#).unwrap().is_empty());
    }

    #[test]
    fn unreachable_router_means_try_again_later() {
        // A port nothing listens on: bind, note the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let router = Router::new(&format!("127.0.0.1:{port}"));
        assert_eq!(router.release("c1").unwrap_err().code, Code::TryAgainLater);
        assert_eq!(
            router.allocate("c1", None).unwrap_err().code,
            Code::TryAgainLater
        );
        assert_eq!(router.ipam_ready().unwrap_err().code, Code::NotAvailable);
    }
}
