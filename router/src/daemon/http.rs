//! Weave's HTTP API (`--http-addr`, default 127.0.0.1:6784) and its status
//! interface (`--status-addr`, default 127.0.0.1:6782), on axum.
//!
//! Handlers parse and check the request, then ask the router task through
//! its event queue; bad input gets a 400 with a message, never a panic.

use std::net::{IpAddr, SocketAddr};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{mpsc, oneshot};

use super::actor::{Control, Event};
use super::status::{self, Snapshot};
use crate::mesh::connection_maker::{DirectPeer, split_peer_spec};

/// What handlers share: the router task's queue.
#[derive(Clone)]
struct Api {
    events: mpsc::UnboundedSender<Event>,
}

/// The routes both interfaces serve: status pages, report and metrics.
fn status_routes() -> Router<Api> {
    Router::new()
        .route("/status", get(status_page))
        .route("/status/targets", get(targets_page))
        .route("/status/connections", get(connections_page))
        .route("/status/peers", get(peers_page))
        .route("/report", get(report))
        .route("/metrics", get(metrics))
}

/// The full API of `--http-addr`.
pub fn api_router(events: mpsc::UnboundedSender<Event>) -> Router {
    status_routes()
        .route("/connect", post(connect))
        .route("/forget", post(forget))
        .with_state(Api { events })
}

/// The read-only interface of `--status-addr`.
pub fn status_router(events: mpsc::UnboundedSender<Event>) -> Router {
    status_routes().with_state(Api { events })
}

/// Serves `router` on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, router: Router) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router).await
}

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "router is shutting down\n").into_response()
}

impl Api {
    async fn snapshot(&self) -> Option<Snapshot> {
        let (reply, answer) = oneshot::channel();
        self.events
            .send(Event::Control(Control::Status(reply)))
            .ok()?;
        answer.await.ok()
    }

    async fn text(&self, render: fn(&Snapshot) -> String) -> Response {
        match self.snapshot().await {
            Some(snapshot) => render(&snapshot).into_response(),
            None => unavailable(),
        }
    }
}

async fn status_page(State(api): State<Api>) -> Response {
    api.text(status::status_text).await
}

async fn targets_page(State(api): State<Api>) -> Response {
    api.text(status::targets_text).await
}

async fn connections_page(State(api): State<Api>) -> Response {
    api.text(status::connections_text).await
}

async fn peers_page(State(api): State<Api>) -> Response {
    api.text(status::peers_text).await
}

async fn report(State(api): State<Api>) -> Response {
    match api.snapshot().await {
        Some(snapshot) => (
            [(header::CONTENT_TYPE, "application/json")],
            format!("{:#}\n", status::report_json(&snapshot)),
        )
            .into_response(),
        None => unavailable(),
    }
}

async fn metrics(State(api): State<Api>) -> Response {
    match api.snapshot().await {
        Some(snapshot) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            status::metrics_text(&snapshot),
        )
            .into_response(),
        None => unavailable(),
    }
}

/// The form values of a request, from its query string and its
/// url-encoded body together, as Go's `ParseForm` gathers them.
fn form(query: Option<&str>, body: &[u8]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    pairs.extend(form_urlencoded::parse(body).into_owned());
    pairs
}

fn values(form: &[(String, String)], key: &str) -> Vec<String> {
    form.iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}

/// Resolves a user-given peer (`host[:port]`) to an address.
async fn resolve(spec: &str) -> Result<DirectPeer, String> {
    let (host, port) = split_peer_spec(spec).map_err(|error| error.to_string())?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(DirectPeer { ip, port });
    }
    let mut addrs = tokio::net::lookup_host((host.as_str(), 0))
        .await
        .map_err(|error| format!("cannot resolve {host:?}: {error}"))?;
    let ip = addrs
        .find(SocketAddr::is_ipv4)
        .map(|addr| addr.ip())
        .ok_or_else(|| format!("{host:?} has no IPv4 address"))?;
    Ok(DirectPeer { ip, port })
}

/// Resolves every peer, collecting all the errors.
pub async fn resolve_all(specs: &[String]) -> Result<Vec<(String, DirectPeer)>, Vec<String>> {
    let mut peers = Vec::new();
    let mut errors = Vec::new();
    for spec in specs {
        match resolve(spec).await {
            Ok(peer) => peers.push((spec.clone(), peer)),
            Err(error) => errors.push(error),
        }
    }
    if errors.is_empty() {
        Ok(peers)
    } else {
        Err(errors)
    }
}

async fn connect(State(api): State<Api>, RawQuery(query): RawQuery, body: Bytes) -> Response {
    let form = form(query.as_deref(), &body);
    let replace = values(&form, "replace").iter().any(|v| v == "true");
    let peers = match resolve_all(&values(&form, "peer")).await {
        Ok(peers) => peers,
        Err(errors) => {
            return (StatusCode::BAD_REQUEST, format!("{}\n", errors.join("\n"))).into_response();
        }
    };
    let (reply, done) = oneshot::channel();
    let control = Control::Connect {
        peers,
        replace,
        reply,
    };
    if api.events.send(Event::Control(control)).is_err() || done.await.is_err() {
        return unavailable();
    }
    StatusCode::OK.into_response()
}

async fn forget(State(api): State<Api>, RawQuery(query): RawQuery, body: Bytes) -> Response {
    let form = form(query.as_deref(), &body);
    let (reply, done) = oneshot::channel();
    let control = Control::Forget {
        peers: values(&form, "peer"),
        reply,
    };
    if api.events.send(Event::Control(control)).is_err() || done.await.is_err() {
        return unavailable();
    }
    StatusCode::OK.into_response()
}

#[cfg(test)]
mod tests {
    use super::{form, values};

    #[test]
    fn form_values_come_from_query_and_body() {
        let form = form(
            Some("peer=10.0.0.1&replace=true"),
            b"peer=10.0.0.2%3A6790&peer=h3",
        );
        assert_eq!(values(&form, "peer"), ["10.0.0.1", "10.0.0.2:6790", "h3"]);
        assert_eq!(values(&form, "replace"), ["true"]);
        assert!(values(&form, "absent").is_empty());
    }
}
