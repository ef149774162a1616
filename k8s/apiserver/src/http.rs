//! The thin HTTP shell: routing, query parameters, streaming watches and
//! fault injection around the sans-IO [`Store`].

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::discovery;
use crate::error::ApiError;
use crate::patch::PatchType;
use crate::resource::Resource;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Event, EventType, ListQuery, Store, Subresource, WatchFilter, Write, parse_rv};

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// Events kept for watches that resume from a resourceVersion.
    pub history: usize,
    /// How often a watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
    /// Watch length when the client gives no `timeoutSeconds`.
    pub default_watch_timeout: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            history: 1000,
            bookmark_interval: Duration::from_secs(5),
            default_watch_timeout: Duration::from_secs(1800),
        }
    }
}

/// Faults waiting to be injected.
#[derive(Debug, Default)]
struct Faults {
    /// The next this many writes to existing objects fail with 409.
    conflicts: u32,
    /// The next this many requests wait this long first.
    stall: Option<(Duration, u32)>,
}

/// State shared by all connections.
#[derive(Debug)]
pub(crate) struct Shared {
    store: Mutex<Store>,
    events: broadcast::Sender<Arc<Event>>,
    /// Bumped to end every open watch.
    generation: watch::Sender<u64>,
    faults: Mutex<Faults>,
    config: Config,
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

impl Shared {
    pub(crate) fn new(config: Config) -> Shared {
        let (events, _) = broadcast::channel(4096);
        let (generation, _) = watch::channel(0);
        Shared {
            store: Mutex::new(Store::new(config.history, &now())),
            events,
            generation,
            faults: Mutex::new(Faults::default()),
            config,
        }
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends every open watch.
    pub(crate) fn drop_watches(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Makes the next `count` writes to existing objects fail with 409.
    pub(crate) fn conflict_next(&self, count: u32) {
        self.faults().conflicts = count;
    }

    /// Makes the next `count` requests wait `delay` first.
    pub(crate) fn stall_next(&self, delay: Duration, count: u32) {
        self.faults().stall = (count > 0).then_some((delay, count));
    }

    /// Acts as a restarted API server over a compacted etcd: open watches
    /// end, and resuming from any earlier version gets 410 Gone.
    pub(crate) fn restart(&self) {
        let mut store = self.store();
        store.compact();
        self.drop_watches();
    }

    pub(crate) fn resource_version(&self) -> u64 {
        self.store().resource_version()
    }

    /// Runs a write under the store lock and publishes its events while
    /// still holding it, so a watch subscribing under the lock sees every
    /// later event exactly once.
    fn write(
        &self,
        dry_run: bool,
        f: impl FnOnce(&mut Store) -> Result<Write, ApiError>,
    ) -> Result<Write, ApiError> {
        let mut store = self.store();
        if dry_run {
            let mut copy = store.clone();
            let mut w = f(&mut copy)?;
            w.events.clear();
            return Ok(w);
        }
        let w = f(&mut store)?;
        for e in &w.events {
            // No receivers is fine: nobody watches.
            let _ = self.events.send(Arc::new(e.clone()));
        }
        Ok(w)
    }

    fn take_conflict(&self) -> bool {
        let mut faults = self.faults();
        if faults.conflicts > 0 {
            faults.conflicts -= 1;
            true
        } else {
            false
        }
    }

    fn take_stall(&self) -> Option<Duration> {
        let mut faults = self.faults();
        let (delay, count) = faults.stall?;
        faults.stall = (count > 1).then_some((delay, count - 1));
        Some(delay)
    }
}

/// The axum router serving everything.
pub(crate) fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(shared)
}

fn json_response(code: StatusCode, value: &Value) -> Response {
    let mut resp = Response::new(Body::from(value.to_string()));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(e: &ApiError) -> Response {
    let code = StatusCode::from_u16(e.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &e.status())
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let query: HashMap<String, String> =
        form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    if let Some(control) = path.strip_prefix("/_weave/") {
        return control_request(&shared, &parts.method, control, &query);
    }
    if let Some(delay) = shared.take_stall() {
        tokio::time::sleep(delay).await;
    }
    let body = match axum::body::to_bytes(body, 16 << 20).await {
        Ok(b) => b,
        Err(e) => return error_response(&ApiError::BadRequest(format!("reading the body: {e}"))),
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    tracing::debug!(method = %parts.method, %path, ?query, "request");
    let result = route(
        &shared,
        &parts.method,
        &path,
        &query,
        &content_type,
        &host,
        &body,
    )
    .await;
    match result {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(method = %parts.method, %path, code = e.code(), "{e}");
            error_response(&e)
        }
    }
}

fn control_request(
    shared: &Shared,
    method: &Method,
    what: &str,
    query: &HashMap<String, String>,
) -> Response {
    let number = |k: &str, default: u64| -> Result<u64, ApiError> {
        query
            .get(k)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| ApiError::BadRequest(format!("{k} must be a number")))
            })
            .unwrap_or(Ok(default))
    };
    let result = match (method, what) {
        (&Method::GET, "state") => {
            let store = shared.store();
            Ok(json!({
                "resourceVersion": store.resource_version(),
                "oldestWatchable": store.oldest_watchable(),
                "watches": shared.events.receiver_count(),
            }))
        }
        (&Method::POST, "faults/drop-watches") => {
            shared.drop_watches();
            Ok(json!({"dropped": true}))
        }
        (&Method::POST, "faults/restart") => {
            shared.restart();
            Ok(json!({"restarted": true}))
        }
        (&Method::POST, "faults/conflict") => number("count", 1).map(|n| {
            shared.conflict_next(u32::try_from(n).unwrap_or(u32::MAX));
            json!({"conflicts": n})
        }),
        (&Method::POST, "faults/stall") => number("millis", 1000).and_then(|ms| {
            let n = number("count", 1)?;
            shared.stall_next(
                Duration::from_millis(ms),
                u32::try_from(n).unwrap_or(u32::MAX),
            );
            Ok(json!({"stallMillis": ms, "count": n}))
        }),
        _ => Err(ApiError::NoRoute),
    };
    match result {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => error_response(&e),
    }
}

/// What a path addresses.
enum Target {
    Document(Value),
    Collection {
        resource: &'static Resource,
        namespace: Option<String>,
    },
    Object {
        resource: &'static Resource,
        namespace: Option<String>,
        name: String,
        sub: Subresource,
    },
}

fn parse_path(path: &str, host: &str) -> Result<Target, ApiError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["version"] => return Ok(Target::Document(discovery::version())),
        ["api"] => return Ok(Target::Document(discovery::core_versions(host))),
        ["apis"] => return Ok(Target::Document(discovery::group_list())),
        ["apis", g] => {
            return discovery::group(g)
                .map(Target::Document)
                .ok_or(ApiError::NoRoute);
        }
        ["openapi", "v3"] => return Ok(Target::Document(discovery::openapi_v3_index())),
        ["openapi", "v3", "api", v] => {
            return discovery::openapi_v3("", v)
                .map(Target::Document)
                .ok_or(ApiError::NoRoute);
        }
        ["openapi", "v3", "apis", g, v] => {
            return discovery::openapi_v3(g, v)
                .map(Target::Document)
                .ok_or(ApiError::NoRoute);
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::NoRoute),
    };
    if rest.is_empty() {
        return discovery::resource_list(group, version)
            .map(Target::Document)
            .ok_or(ApiError::NoRoute);
    }
    let find = |plural: &str| Resource::find(group, version, plural).ok_or(ApiError::NoRoute);
    let sub = |s: Option<&&str>| match s {
        None => Ok(Subresource::Main),
        Some(&"status") => Ok(Subresource::Status),
        Some(_) => Err(ApiError::NoRoute),
    };
    let namespaced_path = rest.len() >= 3 && rest[0] == "namespaces" && group.is_empty()
        || rest.len() >= 3 && rest[0] == "namespaces" && !group.is_empty();
    let namespaced_path =
        namespaced_path && rest.get(2) != Some(&"status") && rest.get(2) != Some(&"finalize");
    if namespaced_path {
        let resource = find(rest[2])?;
        if !resource.namespaced || rest.len() > 5 {
            return Err(ApiError::NoRoute);
        }
        let namespace = Some(rest[1].to_owned());
        return Ok(match rest.get(3) {
            None => Target::Collection {
                resource,
                namespace,
            },
            Some(name) => Target::Object {
                resource,
                namespace,
                name: (*name).to_owned(),
                sub: sub(rest.get(4))?,
            },
        });
    }
    let resource = find(rest[0])?;
    match rest.get(1) {
        None => Ok(Target::Collection {
            resource,
            namespace: None,
        }),
        Some(name) if !resource.namespaced && rest.len() <= 3 => Ok(Target::Object {
            resource,
            namespace: None,
            name: (*name).to_owned(),
            sub: sub(rest.get(2))?,
        }),
        Some(_) => Err(ApiError::NoRoute),
    }
}

/// Refuses bodies in encodings the double does not decode (protobuf,
/// CBOR), with the 415 the real server gives for unknown ones.
fn check_body_type(content_type: &str) -> Result<(), ApiError> {
    match content_type.split(';').next().unwrap_or_default().trim() {
        "" | "application/json" | "application/yaml" | "*/*" => Ok(()),
        _ => Err(ApiError::UnsupportedMediaType),
    }
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body of the request could not be decoded as JSON: {e}"
        ))
    })
}

fn is_true(query: &HashMap<String, String>, key: &str) -> bool {
    query.get(key).is_some_and(|v| v == "true" || v == "1")
}

/// Turns a write into a response, enforcing `fieldValidation`.
fn write_response(
    code: StatusCode,
    query: &HashMap<String, String>,
    result: Result<Write, ApiError>,
    resource: &Resource,
) -> Result<Response, ApiError> {
    let w = result?;
    let validation = query
        .get("fieldValidation")
        .map(String::as_str)
        .unwrap_or("Warn");
    if !w.unknown_fields.is_empty() && validation == "Strict" {
        let list: Vec<String> = w
            .unknown_fields
            .iter()
            .map(|f| format!("unknown field {f:?}"))
            .collect();
        return Err(ApiError::BadRequest(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
            resource.kind_name,
            resource.api_version(),
            resource.kind_name,
            list.join(", ")
        )));
    }
    let mut resp = json_response(code, &w.object);
    if validation == "Warn" {
        for f in &w.unknown_fields {
            if let Ok(v) = HeaderValue::from_str(&format!("299 - \"unknown field \\\"{f}\\\"\"")) {
                resp.headers_mut().append(header::WARNING, v);
            }
        }
    }
    Ok(resp)
}

async fn route(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    content_type: &str,
    host: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    if matches!(path, "/healthz" | "/livez" | "/readyz") {
        let mut resp = Response::new(Body::from("ok"));
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return Ok(resp);
    }
    let dry_run = query.get("dryRun").is_some_and(|v| v == "All");
    let now = now();
    match parse_path(path, host)? {
        Target::Document(doc) => {
            if method != Method::GET {
                return Err(ApiError::MethodNotAllowed);
            }
            Ok(json_response(StatusCode::OK, &doc))
        }
        Target::Collection {
            resource,
            namespace,
        } => {
            let labels = LabelSelector::parse(query.get("labelSelector").map_or("", |s| s))?;
            let fields =
                FieldSelector::parse(query.get("fieldSelector").map_or("", |s| s), resource)?;
            match *method {
                Method::GET if is_true(query, "watch") => {
                    let filter = WatchFilter {
                        kind: resource.kind,
                        namespace,
                        labels,
                        fields,
                    };
                    watch_response(shared, filter, query)
                }
                Method::GET => {
                    let limit =
                        match query.get("limit") {
                            Some(l) => Some(l.parse::<usize>().map_err(|_| {
                                ApiError::BadRequest(format!("invalid limit {l:?}"))
                            })?),
                            None => None,
                        };
                    if let Some(rv) = query.get("resourceVersion").filter(|v| !v.is_empty()) {
                        parse_rv(rv)?;
                    }
                    let list_query = ListQuery {
                        namespace,
                        labels,
                        fields,
                        limit,
                        continue_token: query.get("continue").filter(|c| !c.is_empty()).cloned(),
                    };
                    let list = shared.store().list(resource.kind, &list_query)?;
                    Ok(json_response(StatusCode::OK, &list))
                }
                Method::POST => {
                    if resource.namespaced && namespace.is_none() {
                        return Err(ApiError::MethodNotAllowed);
                    }
                    check_body_type(content_type)?;
                    let object = parse_body(body)?;
                    let result = shared.write(dry_run, |s| {
                        s.create(resource.kind, namespace.as_deref(), object, &now)
                    });
                    write_response(StatusCode::CREATED, query, result, resource)
                }
                Method::DELETE => {
                    let list_query = ListQuery {
                        namespace,
                        labels,
                        fields,
                        limit: None,
                        continue_token: None,
                    };
                    let result = shared.write(dry_run, |s| {
                        let list = s.list(resource.kind, &list_query)?;
                        let mut events = Vec::new();
                        let mut items = Vec::new();
                        for item in list["items"].as_array().into_iter().flatten() {
                            let ns = item["metadata"]["namespace"].as_str();
                            let name = item["metadata"]["name"].as_str().unwrap_or_default();
                            let w = s.delete(resource.kind, ns, name, &Value::Null, &now)?;
                            events.extend(w.events);
                            items.push(w.object);
                        }
                        let mut object = list.clone();
                        object["items"] = Value::Array(items);
                        Ok(Write {
                            object,
                            events,
                            unknown_fields: Vec::new(),
                        })
                    });
                    write_response(StatusCode::OK, query, result, resource)
                }
                _ => Err(ApiError::MethodNotAllowed),
            }
        }
        Target::Object {
            resource,
            namespace,
            name,
            sub,
        } => {
            let ns = namespace.as_deref();
            let kind = resource.kind;
            match *method {
                Method::GET => {
                    let object = shared.store().get(kind, ns, &name)?;
                    Ok(json_response(StatusCode::OK, &object))
                }
                Method::PUT | Method::PATCH | Method::DELETE if shared.take_conflict() => {
                    Err(ApiError::modified(resource, &name))
                }
                Method::PUT => {
                    check_body_type(content_type)?;
                    let object = parse_body(body)?;
                    let result =
                        shared.write(dry_run, |s| s.replace(kind, ns, &name, sub, object, &now));
                    write_response(StatusCode::OK, query, result, resource)
                }
                Method::PATCH => {
                    let patch_type = PatchType::from_content_type(content_type)
                        .ok_or(ApiError::UnsupportedMediaType)?;
                    let patch = parse_body(body)?;
                    let result = shared.write(dry_run, |s| {
                        s.patch(kind, ns, &name, sub, patch_type, &patch, &now)
                    });
                    write_response(StatusCode::OK, query, result, resource)
                }
                Method::DELETE if sub == Subresource::Main => {
                    let options = if body.is_empty() {
                        Value::Null
                    } else {
                        parse_body(body)?
                    };
                    let result =
                        shared.write(dry_run, |s| s.delete(kind, ns, &name, &options, &now));
                    write_response(StatusCode::OK, query, result, resource)
                }
                _ => Err(ApiError::MethodNotAllowed),
            }
        }
    }
}

fn event_line(event_type: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": event_type, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn bookmark(resource: &Resource, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"kind": resource.kind_name, "apiVersion": resource.api_version(), "metadata": meta}),
    )
}

/// The state of one open watch stream.
struct WatchStream {
    pending: VecDeque<Bytes>,
    filter: WatchFilter,
    events: Option<broadcast::Receiver<Arc<Event>>>,
    generation: watch::Receiver<u64>,
    deadline: Instant,
    bookmarks: Option<Duration>,
    next_bookmark: Instant,
    last_rv: u64,
}

impl WatchStream {
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Some(line);
            }
            let events = self.events.as_mut()?;
            let bookmark_at = if self.bookmarks.is_some() {
                self.next_bookmark
            } else {
                self.deadline
            };
            tokio::select! {
                received = events.recv() => match received {
                    Ok(event) => {
                        self.last_rv = self.last_rv.max(event.rv);
                        if let Some((t, mut object)) = self.filter.translate(&event) {
                            if t == EventType::Deleted {
                                if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                                    meta.insert("resourceVersion".to_owned(), json!(event.rv.to_string()));
                                }
                            }
                            return Some(event_line(t.as_str(), &object));
                        }
                    }
                    // A watcher too slow to keep up is closed; it resumes
                    // from its last resourceVersion as with the real server.
                    Err(_) => return None,
                },
                _ = self.generation.changed() => return None,
                _ = tokio::time::sleep_until(self.deadline) => return None,
                _ = tokio::time::sleep_until(bookmark_at), if self.bookmarks.is_some() => {
                    if let Some(every) = self.bookmarks {
                        self.next_bookmark = Instant::now() + every;
                    }
                    return Some(bookmark(self.filter.kind.resource(), self.last_rv, false));
                }
            }
        }
    }
}

fn watch_response(
    shared: &Arc<Shared>,
    filter: WatchFilter,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let resource = filter.kind.resource();
    let timeout = match query.get("timeoutSeconds") {
        Some(t) => Duration::from_secs(
            t.parse::<u64>()
                .map_err(|_| ApiError::BadRequest(format!("invalid timeoutSeconds {t:?}")))?,
        ),
        None => shared.config.default_watch_timeout,
    };
    let bookmarks =
        is_true(query, "allowWatchBookmarks").then_some(shared.config.bookmark_interval);
    let send_initial = is_true(query, "sendInitialEvents");
    let rv = query
        .get("resourceVersion")
        .filter(|v| !v.is_empty())
        .map(|v| parse_rv(v))
        .transpose()?;
    let mut pending = VecDeque::new();
    let (events, last_rv) = {
        let store = shared.store();
        let current = store.resource_version();
        match rv {
            Some(rv) if rv != 0 && !send_initial => match store.events_since(rv) {
                Ok(list) => {
                    for e in &list {
                        if let Some((t, object)) = filter.translate(e) {
                            pending.push_back(event_line(t.as_str(), &object));
                        }
                    }
                    (Some(shared.events.subscribe()), current)
                }
                Err(e) => {
                    pending.push_back(event_line("ERROR", &e.status()));
                    (None, current)
                }
            },
            _ => {
                for (t, object) in store.snapshot(&filter) {
                    pending.push_back(event_line(t.as_str(), &object));
                }
                if send_initial && bookmarks.is_some() {
                    pending.push_back(bookmark(resource, current, true));
                }
                (Some(shared.events.subscribe()), current)
            }
        }
    };
    let start = Instant::now();
    let stream = WatchStream {
        pending,
        filter,
        events,
        generation: shared.generation.subscribe(),
        deadline: start + timeout,
        bookmarks,
        next_bookmark: start + bookmarks.unwrap_or_default(),
        last_rv,
    };
    let body = futures_util::stream::unfold(stream, |mut s| async move {
        let line = s.next().await?;
        Some((Ok::<Bytes, Infallible>(line), s))
    });
    let mut resp = Response::new(Body::from_stream(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
