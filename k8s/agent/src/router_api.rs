//! The local router's HTTP API as the agent uses it: readiness, `rmpeer`,
//! replacing the peer list (`POST /connect?replace=true`, what Weave's
//! `ReplacePeers` called), and exposing the bridge. Calls are blocking
//! (`weave_cni::http`), run off the async threads.

use std::time::Duration;

use ipnet::Ipv4Net;
use weave_cni::http::{Client, Response};
use weave_cni::router::EXPOSE_ID;

use crate::config::ExposeAddr;

/// A router call that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    /// No answer.
    #[error("weave-router at {addr}: {error}")]
    Unreachable {
        /// Its address.
        addr: String,
        /// Why.
        error: String,
    },
    /// An answer other than success.
    #[error("weave-router refused {what}: HTTP {status}: {body}")]
    Refused {
        /// The call.
        what: String,
        /// The status.
        status: u16,
        /// The body.
        body: String,
    },
    /// An answer that makes no sense.
    #[error("weave-router answered {what} with {body:?}")]
    Unexpected {
        /// The call.
        what: String,
        /// The body.
        body: String,
    },
}

/// The router at one address.
#[derive(Debug, Clone)]
pub struct RouterApi {
    client: Client,
}

/// Form-encodes `peer=` values (addresses and `host:port`; anything else
/// is percent-encoded).
fn peer_form(peers: &[String]) -> String {
    let mut out = String::new();
    for peer in peers {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str("peer=");
        for b in peer.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

impl RouterApi {
    /// The router at `addr` (`ip:port`).
    pub fn new(addr: &str) -> RouterApi {
        RouterApi {
            client: Client::new(addr, Duration::from_secs(2), Duration::from_secs(30)),
        }
    }

    async fn call(
        &self,
        method: &'static str,
        path: String,
        body: Option<String>,
    ) -> Result<Response, RouterError> {
        let client = self.client.clone();
        let addr = client.addr().to_string();
        let result = tokio::task::spawn_blocking(move || {
            let body = body
                .as_ref()
                .map(|b| ("application/x-www-form-urlencoded", b.as_bytes()));
            client.request(method, &path, body)
        })
        .await;
        match result {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(RouterError::Unreachable {
                addr,
                error: error.to_string(),
            }),
            Err(error) => Err(RouterError::Unreachable {
                addr,
                error: error.to_string(),
            }),
        }
    }

    async fn ok(
        &self,
        method: &'static str,
        path: String,
        body: Option<String>,
    ) -> Result<String, RouterError> {
        let what = format!("{method} {path}");
        let response = self.call(method, path, body).await?;
        if response.is_success() {
            Ok(response.body)
        } else {
            Err(RouterError::Refused {
                what,
                status: response.status,
                body: response.body.trim().to_string(),
            })
        }
    }

    /// Whether `GET /status` answers 200.
    pub async fn is_up(&self) -> bool {
        matches!(self.call("GET", "/status".into(), None).await, Ok(r) if r.is_success())
    }

    /// `DELETE /peer/<name>`: takes over the peer's address space; the
    /// router's answer (`N IPs taken over from …`).
    pub async fn rmpeer(&self, peer: &str) -> Result<String, RouterError> {
        self.ok("DELETE", format!("/peer/{peer}"), None).await
    }

    /// Makes `peers` the router's whole list of peers to connect to.
    pub async fn replace_peers(&self, peers: &[String]) -> Result<(), RouterError> {
        let mut body = "replace=true".to_string();
        if !peers.is_empty() {
            body.push('&');
            body.push_str(&peer_form(peers));
        }
        self.ok("POST", "/connect".into(), Some(body))
            .await
            .map(|_| ())
    }

    /// Gives the bridge its address (allocated as `weave:expose`, or the
    /// one configured, claimed when inside the range) and the host rules;
    /// the address exposed.
    pub async fn expose(&self, addr: ExposeAddr, range: Ipv4Net) -> Result<Ipv4Net, RouterError> {
        let cidr = match addr {
            ExposeAddr::Allocate => {
                let what = format!("POST /ip/{EXPOSE_ID}");
                let body = self.ok("POST", format!("/ip/{EXPOSE_ID}"), None).await?;
                body.trim()
                    .parse::<Ipv4Net>()
                    .map_err(|_| RouterError::Unexpected { what, body })?
            }
            ExposeAddr::Fixed(net) => {
                if range.contains(&net.addr()) {
                    self.ok(
                        "PUT",
                        format!("/ip/{EXPOSE_ID}/{}/{}", net.addr(), net.prefix_len()),
                        None,
                    )
                    .await?;
                }
                net
            }
        };
        self.ok(
            "POST",
            format!("/expose/{}/{}", cidr.addr(), cidr.prefix_len()),
            None,
        )
        .await?;
        Ok(cidr)
    }
}

#[cfg(test)]
mod tests {
    use super::peer_form;

    #[test]
    fn peers_are_form_encoded() {
        assert_eq!(
            peer_form(&["10.0.0.1".into(), "host:6783".into()]),
            "peer=10.0.0.1&peer=host%3A6783"
        );
    }
}
