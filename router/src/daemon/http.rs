//! Weave's HTTP API (`--http-addr`, default 127.0.0.1:6784) and its status
//! interface (`--status-addr`, default 127.0.0.1:6782), on axum.
//!
//! Handlers parse and check the request, then ask the router task through
//! its event queue; bad input gets a 400 with a message, never a panic.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use tokio::sync::{mpsc, oneshot};

use super::actor::{Control, Event, IpamCall};
use super::host_rules::{self, ExposeRequestError, HostRules};
use super::status::{self, Snapshot};
use crate::ipam::{Address, Cidr, Reply};
use crate::mesh::connection_maker::{DirectPeer, split_peer_spec};
use crate::overlay::dataplane::ContainerSpec;

/// What handlers share: the router task's queue, the subnet that
/// allocations without one use, and the host rules (for `/expose`).
#[derive(Clone)]
struct Api {
    events: mpsc::UnboundedSender<Event>,
    default_subnet: Cidr,
    host: Option<Arc<HostRules>>,
}

/// The routes both interfaces serve: status pages, report and metrics.
fn status_routes() -> Router<Api> {
    Router::new()
        .route("/status", get(status_page))
        .route("/status/targets", get(targets_page))
        .route("/status/connections", get(connections_page))
        .route("/status/peers", get(peers_page))
        .route("/status/ipam", get(ipam_page))
        .route("/report", get(report))
        .route("/metrics", get(metrics))
}

/// The full API of `--http-addr`; `host` serves `/expose` (without it,
/// `/expose` answers 503).
pub fn api_router(
    events: mpsc::UnboundedSender<Event>,
    default_subnet: Cidr,
    host: Option<Arc<HostRules>>,
) -> Router {
    status_routes()
        .route("/connect", post(connect))
        .route("/forget", post(forget))
        .route("/ipinfo/defaultsubnet", get(default_subnet_page))
        .route("/ip", get(owned))
        .route(
            "/ip/{id}",
            post(allocate_default)
                .get(lookup_default)
                .delete(delete_ident),
        )
        .route("/ip/{id}/{ip}", delete(free))
        .route(
            "/ip/{id}/{ip}/{prefix}",
            post(allocate_in).put(claim).get(lookup_in),
        )
        .route("/ring", get(ring))
        .route("/peer", delete(reset_peer))
        .route("/peer/{name}", delete(rmpeer))
        .route("/expose/{ip}/{prefix}", post(expose).delete(hide))
        .route(
            "/container/{id}",
            axum::routing::put(put_container).delete(delete_container),
        )
        .with_state(Api {
            events,
            default_subnet,
            host,
        })
}

/// The read-only interface of `--status-addr`; `host` adds the firewall
/// to `/report`.
pub fn status_router(
    events: mpsc::UnboundedSender<Event>,
    default_subnet: Cidr,
    host: Option<Arc<HostRules>>,
) -> Router {
    status_routes().with_state(Api {
        events,
        default_subnet,
        host,
    })
}

/// The interface of `--metrics-addr`: `/metrics` only (Weave's
/// `--metrics-addr`, which may face the whole network where the status
/// pages should not).
pub fn metrics_router(events: mpsc::UnboundedSender<Event>, default_subnet: Cidr) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(Api {
            events,
            default_subnet,
            host: None,
        })
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

/// Why a container registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerError {
    /// The body is not a JSON object.
    #[error("body is not a JSON object: {0}")]
    NotJson(String),
    /// `ips` is missing or not a list of strings.
    #[error("\"ips\" must be a list of IPv4 addresses with prefix length")]
    NoIps,
    /// An address does not parse.
    #[error("bad address {0:?}: expected e.g. 10.32.0.5/12")]
    BadIp(String),
    /// A field that must be a string is not.
    #[error("\"{0}\" must be a string")]
    NotAString(&'static str),
    /// The interface name is not one.
    #[error("bad interface name {0:?}")]
    BadIfname(String),
}

/// Parses the body of `PUT /container/{id}`:
/// `{"ips":["10.32.0.5/12"],"mac":"aa:bb:cc:dd:ee:ff","host_veth":"vethwepl…"}`
/// (`mac` and `host_veth` optional).
pub fn parse_container(id: &str, body: &[u8]) -> Result<ContainerSpec, ContainerError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ContainerError::NotJson(e.to_string()))?;
    let object = value
        .as_object()
        .ok_or_else(|| ContainerError::NotJson("not an object".into()))?;
    let list = object
        .get("ips")
        .and_then(|v| v.as_array())
        .ok_or(ContainerError::NoIps)?;
    let mut ips = Vec::new();
    for item in list {
        let text = item.as_str().ok_or(ContainerError::NoIps)?;
        let ip = text
            .parse::<ipnet::Ipv4Net>()
            .or_else(|_| text.parse::<std::net::Ipv4Addr>().map(ipnet::Ipv4Net::from))
            .map_err(|_| ContainerError::BadIp(text.to_string()))?;
        ips.push(ip);
    }
    let string = |key: &'static str| -> Result<Option<String>, ContainerError> {
        match object.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v
                .as_str()
                .map(|s| Some(s.to_string()))
                .ok_or(ContainerError::NotAString(key)),
        }
    };
    let mac = string("mac")?;
    let host_veth = string("host_veth")?;
    if let Some(name) = &host_veth
        && (name.is_empty()
            || name.len() > crate::net::link::MAX_IFNAME_LEN
            || name.contains(['/', ' ', '\0']))
    {
        return Err(ContainerError::BadIfname(name.clone()));
    }
    Ok(ContainerSpec {
        id: id.to_string(),
        ips,
        mac,
        host_veth,
    })
}

async fn put_container(State(api): State<Api>, Path(id): Path<String>, body: Bytes) -> Response {
    let spec = match parse_container(&id, &body) {
        Ok(spec) => spec,
        Err(error) => return bad_request(error),
    };
    let (reply, answer) = oneshot::channel();
    let control = Control::ContainerAdded { spec, reply };
    if api.events.send(Event::Control(control)).is_err() {
        return unavailable();
    }
    match answer.await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(_) => unavailable(),
    }
}

async fn delete_container(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let (reply, answer) = oneshot::channel();
    let control = Control::ContainerRemoved { id, reply };
    if api.events.send(Event::Control(control)).is_err() {
        return unavailable();
    }
    match answer.await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(_) => unavailable(),
    }
}

async fn status_page(State(api): State<Api>) -> Response {
    api.text(status::status_text).await
}

async fn ipam_page(State(api): State<Api>) -> Response {
    api.text(status::ipam_text).await
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
        Some(snapshot) => {
            let mut report = status::report_json(&snapshot);
            if let (Some(host), Some(fields)) = (&api.host, report.as_object_mut()) {
                fields.insert("Firewall".into(), host.report_json());
            }
            (
                [(header::CONTENT_TYPE, "application/json")],
                format!("{report:#}\n"),
            )
                .into_response()
        }
        None => unavailable(),
    }
}

// ----- expose (Weave's `weave expose` / `weave hide`) -----

fn expose_failed(error: &ExposeRequestError, what: &str) -> Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, format!("unable to {what}: {error}\n")).into_response()
}

/// Runs `work` on the host rules off the async threads.
async fn on_host(
    api: &Api,
    what: &str,
    work: impl FnOnce(&HostRules) -> Result<(), ExposeRequestError> + Send + 'static,
) -> Response {
    let Some(host) = api.host.clone() else {
        let error = ExposeRequestError::Unavailable("this interface has no host rules".into());
        return expose_failed(&error, what);
    };
    match tokio::task::spawn_blocking(move || work(&host)).await {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(error)) => expose_failed(&error, what),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unable to {what}: {error}\n"),
        )
            .into_response(),
    }
}

/// `POST /expose/{ip}/{prefix}[?skipNAT=true]`: the bridge gets the
/// address; the subnet's traffic leaving the host is masqueraded unless
/// `skipNAT`. 204 when done.
async fn expose(
    State(api): State<Api>,
    Path((ip, prefix)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let addr = match host_rules::parse_exposed(&ip, &prefix) {
        Ok(addr) => addr,
        Err(error) => return expose_failed(&error, "expose"),
    };
    let mut skip_nat = false;
    for value in values(&form(query.as_deref(), &body), "skipNAT") {
        match crate::mesh::identity::parse_go_bool(&value) {
            Some(flag) => skip_nat = flag,
            None => {
                return bad_request(format!(
                    "unable to parse skipNAT option {value:?}: expected true or false"
                ));
            }
        }
    }
    let what = format!("expose {addr}");
    on_host(&api, &what, move |host| host.expose(addr, skip_nat)).await
}

/// `DELETE /expose/{ip}/{prefix}`: the reverse of `POST` (Weave's `hide`).
/// 204 when done, 404 when the bridge does not have the address.
async fn hide(State(api): State<Api>, Path((ip, prefix)): Path<(String, String)>) -> Response {
    let addr = match host_rules::parse_exposed(&ip, &prefix) {
        Ok(addr) => addr,
        Err(error) => return expose_failed(&error, "hide"),
    };
    let what = format!("hide {addr}");
    on_host(&api, &what, move |host| host.hide(addr)).await
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

// ----- IPAM (Weave's ipam/http.go behaviour) -----

fn bad_request(message: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
}

impl Api {
    async fn ipam(&self, call: IpamCall) -> Result<Reply, Response> {
        let (reply, answer) = oneshot::channel();
        if self
            .events
            .send(Event::Control(Control::Ipam { call, reply }))
            .is_err()
        {
            return Err(unavailable());
        }
        match answer.await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(error)) => Err(bad_request(error)),
            Err(_) => Err(unavailable()),
        }
    }

    async fn lookup(&self, ident: String, subnet: Cidr) -> Response {
        let (reply, answer) = oneshot::channel();
        let control = Control::Lookup {
            ident,
            range: subnet.host_range(),
            reply,
        };
        if self.events.send(Event::Control(control)).is_err() {
            return unavailable();
        }
        match answer.await {
            Ok(found) if found.is_empty() => StatusCode::NOT_FOUND.into_response(),
            Ok(found) => found
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
                .into_response(),
            Err(_) => unavailable(),
        }
    }
}

fn form_flag(query: Option<&str>, body: &[u8], key: &str) -> bool {
    values(&form(query, body), key).iter().any(|v| v == "true")
}

async fn default_subnet_page(State(api): State<Api>) -> Response {
    api.default_subnet.to_string().into_response()
}

async fn allocate(api: &Api, ident: String, subnet: Cidr, is_container: bool) -> Response {
    let call = IpamCall::Allocate {
        ident,
        subnet,
        is_container,
    };
    match api.ipam(call).await {
        Ok(Reply::Allocated(cidr)) => cidr.to_string().into_response(),
        Ok(other) => bad_request(format!("unexpected allocator reply {other:?}")),
        Err(response) => response,
    }
}

async fn allocate_default(
    State(api): State<Api>,
    Path(ident): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let is_container = form_flag(query.as_deref(), &body, "check-alive");
    let subnet = api.default_subnet;
    allocate(&api, ident, subnet, is_container).await
}

async fn allocate_in(
    State(api): State<Api>,
    Path((ident, ip, prefix)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let subnet = match Cidr::parse_subnet(&format!("{ip}/{prefix}")) {
        Ok(subnet) => subnet,
        Err(error) => return bad_request(error),
    };
    let is_container = form_flag(query.as_deref(), &body, "check-alive");
    allocate(&api, ident, subnet, is_container).await
}

async fn claim(
    State(api): State<Api>,
    Path((ident, ip, prefix)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let cidr = match Cidr::parse(&format!("{ip}/{prefix}")) {
        Ok(cidr) => cidr,
        Err(error) => return bad_request(error),
    };
    let call = IpamCall::Claim {
        ident,
        cidr,
        is_container: form_flag(query.as_deref(), &body, "check-alive"),
        no_error_on_unknown: form_flag(query.as_deref(), &body, "noErrorOnUnknown"),
    };
    match api.ipam(call).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(response) => response,
    }
}

async fn lookup_default(State(api): State<Api>, Path(ident): Path<String>) -> Response {
    let subnet = api.default_subnet;
    api.lookup(ident, subnet).await
}

async fn lookup_in(
    State(api): State<Api>,
    Path((ident, ip, prefix)): Path<(String, String, String)>,
) -> Response {
    match Cidr::parse_subnet(&format!("{ip}/{prefix}")) {
        Ok(subnet) => api.lookup(ident, subnet).await,
        Err(error) => bad_request(error),
    }
}

async fn owned(State(api): State<Api>) -> Response {
    let (reply, answer) = oneshot::channel();
    if api
        .events
        .send(Event::Control(Control::Owned(reply)))
        .is_err()
    {
        return unavailable();
    }
    let Ok(owned) = answer.await else {
        return unavailable();
    };
    let owned: Vec<serde_json::Value> = owned
        .into_iter()
        .map(|(ident, cidrs)| {
            serde_json::json!({
                "containerid": ident,
                "addrs": cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })
        })
        .collect();
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!("{}\n", serde_json::json!({ "owned": owned })),
    )
        .into_response()
}

async fn delete_ident(State(api): State<Api>, Path(ident): Path<String>) -> Response {
    match api.ipam(IpamCall::Delete { ident }).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(response) => response,
    }
}

async fn free(State(api): State<Api>, Path((ident, ip)): Path<(String, String)>) -> Response {
    let addr = match ip.parse::<std::net::Ipv4Addr>() {
        Ok(ip) => Address(u32::from(ip)),
        Err(error) => return bad_request(format!("{ip:?}: {error}")),
    };
    match api.ipam(IpamCall::Free { ident, addr }).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(response) => response,
    }
}

async fn ring(State(api): State<Api>) -> Response {
    match api.ipam(IpamCall::Prime).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(response) => response,
    }
}

async fn rmpeer(State(api): State<Api>, Path(peer): Path<String>) -> Response {
    match api.ipam(IpamCall::Takeover { peer: peer.clone() }).await {
        Ok(Reply::TakenOver(count)) => {
            format!("{count} IPs taken over from {peer}\n").into_response()
        }
        Ok(other) => bad_request(format!("unexpected allocator reply {other:?}")),
        Err(response) => response,
    }
}

async fn reset_peer(State(api): State<Api>) -> Response {
    match api.ipam(IpamCall::Shutdown).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(response) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::{form, parse_container, values};

    #[test]
    fn container_bodies() {
        let spec = parse_container(
            "abc",
            br#"{"ips":["10.32.0.5/12","10.40.0.1"],"mac":"aa:bb:cc:dd:ee:ff","host_veth":"vethwepl123"}"#,
        )
        .unwrap();
        assert_eq!(spec.id, "abc");
        assert_eq!(spec.ips.len(), 2);
        assert_eq!(spec.ips[0].to_string(), "10.32.0.5/12");
        assert_eq!(spec.ips[1].to_string(), "10.40.0.1/32");
        assert_eq!(spec.host_veth.as_deref(), Some("vethwepl123"));
        let spec = parse_container("x", br#"{"ips":[]}"#).unwrap();
        assert!(spec.ips.is_empty() && spec.mac.is_none());
        for bad in [
            &b"nope"[..],
            br#"[1]"#,
            br#"{"ips":"10.0.0.1"}"#,
            br#"{"ips":["300.0.0.1/8"]}"#,
            br#"{"ips":[], "host_veth": 5}"#,
            br#"{"ips":[], "host_veth": "a/b"}"#,
        ] {
            assert!(
                parse_container("x", bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// Sends one request to `router` over a real socket; returns the
    /// status code and the body.
    #[test]
    fn metrics_interface_serves_metrics_only() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (events, queue) = tokio::sync::mpsc::unbounded_channel();
            // No actor behind the channel: /metrics answers 503, which
            // shows the route exists; the status pages and the API do not.
            drop(queue);
            let subnet = crate::ipam::Cidr::parse("10.32.0.0/12").unwrap();
            let router = super::metrics_router(events, subnet);
            for (method, path, code) in [
                ("GET", "/metrics", 503),
                ("GET", "/status", 404),
                ("GET", "/report", 404),
                ("POST", "/connect", 404),
                ("DELETE", "/peer/00:00:00:00:00:01", 404),
            ] {
                let (got, body) = request(router.clone(), method, path).await;
                assert_eq!(got, code, "{method} {path}: {body}");
            }
        });
    }

    async fn request(router: axum::Router, method: &str, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        let code = reply
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = reply.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (code, body.to_string())
    }

    #[test]
    fn expose_requests_are_checked_before_anything_runs() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (events, _queue) = tokio::sync::mpsc::unbounded_channel();
            let subnet = crate::ipam::Cidr::parse("10.32.0.0/12").unwrap();
            let router = super::api_router(events, subnet, None);
            for (method, path, code, says) in [
                ("POST", "/expose/10.32.0.300/12", 400, "not an IPv4 address"),
                ("POST", "/expose/10.32.0.1/33", 400, "prefix length"),
                ("POST", "/expose/10.32.0.1/%FF", 400, ""),
                ("POST", "/expose/10.32.0.0/12", 400, "network address"),
                ("POST", "/expose/10.32.0.1/12?skipNAT=maybe", 400, "skipNAT"),
                ("DELETE", "/expose/nonsense/12", 400, "not an IPv4 address"),
                // Well formed, but this router has no host rules.
                ("POST", "/expose/10.32.0.1/12", 503, "not available"),
                (
                    "POST",
                    "/expose/10.32.0.1/12?skipNAT=true",
                    503,
                    "not available",
                ),
                ("DELETE", "/expose/10.32.0.1/12", 503, "not available"),
                ("GET", "/expose/10.32.0.1/12", 405, ""),
            ] {
                let (got, body) = request(router.clone(), method, path).await;
                assert_eq!(got, code, "{method} {path}: {body}");
                assert!(body.contains(says), "{method} {path}: {body}");
            }
        });
    }

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
