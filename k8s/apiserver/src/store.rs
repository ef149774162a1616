//! The sans-IO store: objects, the resourceVersion counter, the window of
//! past events that watches start from, and every write rule (creation,
//! optimistic concurrency, status subresource, patches, deletion).
//!
//! Time comes in as `now` (an RFC 3339 string); nothing here does I/O.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Map, Value, json};

use crate::error::{ApiError, Cause};
use crate::patch::{self, PatchType};
use crate::resource::{Kind, RESOURCES, Resource};
use crate::selector::{FieldSelector, LabelSelector};
use crate::validate;

/// Where an object lives: kind, namespace (empty for cluster objects), name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// The kind.
    pub kind: Kind,
    /// The namespace, empty for cluster-scoped kinds.
    pub namespace: String,
    /// The name.
    pub name: String,
}

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The object appeared.
    Added,
    /// The object changed.
    Modified,
    /// The object is gone.
    Deleted,
}

impl EventType {
    /// The wire name, `ADDED` etc.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the history.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The resourceVersion of the change.
    pub rv: u64,
    /// Which object.
    pub key: Key,
    /// What happened.
    pub event_type: EventType,
    /// The object after the change (for deletes: its last state).
    pub object: Value,
    /// The object before the change (modifications only).
    pub old: Option<Value>,
}

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// The object (status changes ignored where a status subresource exists).
    Main,
    /// `/status`: only the status changes.
    Status,
}

/// The result of a write.
#[derive(Debug, Clone)]
pub struct Write {
    /// The object as stored (for deletes: as it was removed).
    pub object: Value,
    /// The changes made, oldest first (already in the history).
    pub events: Vec<Event>,
    /// Unknown fields the request carried (dropped, as the real server does).
    pub unknown_fields: Vec<String>,
}

/// What a LIST asks for.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only this namespace (None: all).
    pub namespace: Option<String>,
    /// The label selector.
    pub labels: LabelSelector,
    /// The field selector.
    pub fields: FieldSelector,
    /// Page size.
    pub limit: Option<usize>,
    /// Continue token from the previous page.
    pub continue_token: Option<String>,
}

/// Which objects a watch sees.
#[derive(Debug, Clone)]
pub struct WatchFilter {
    /// The kind.
    pub kind: Kind,
    /// Only this namespace (None: all).
    pub namespace: Option<String>,
    /// The label selector.
    pub labels: LabelSelector,
    /// The field selector.
    pub fields: FieldSelector,
}

impl WatchFilter {
    fn selects(&self, namespace: &str, object: &Value) -> bool {
        let resource = self.kind.resource();
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && self.labels.matches(object["metadata"].get("labels"))
            && self.fields.matches(resource, object)
    }

    /// What a watcher with this filter sees of `event`: objects entering
    /// the selection are ADDED, objects leaving it are DELETED.
    pub fn translate(&self, event: &Event) -> Option<(EventType, Value)> {
        if event.key.kind != self.kind {
            return None;
        }
        let ns = &event.key.namespace;
        let now = self.selects(ns, &event.object);
        match event.event_type {
            EventType::Added => now.then(|| (EventType::Added, event.object.clone())),
            EventType::Deleted => now.then(|| (EventType::Deleted, event.object.clone())),
            EventType::Modified => {
                let before = event.old.as_ref().is_some_and(|o| self.selects(ns, o));
                match (before, now) {
                    (true, true) => Some((EventType::Modified, event.object.clone())),
                    (false, true) => Some((EventType::Added, event.object.clone())),
                    (true, false) => {
                        let mut last = event.old.clone().unwrap_or(Value::Null);
                        set_rv(&mut last, event.rv);
                        Some((EventType::Deleted, last))
                    }
                    (false, false) => None,
                }
            }
        }
    }
}

/// Namespaces every cluster starts with.
const INITIAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: VecDeque<Event>,
    history_limit: usize,
    /// Watches may start from this version or later.
    oldest: u64,
    serial: u64,
}

fn set_rv(object: &mut Value, rv: u64) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".to_owned(), json!(rv.to_string()));
    }
}

fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object["metadata"][field].as_str().unwrap_or_default()
}

/// Parses a resourceVersion parameter or field.
pub fn parse_rv(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::BadRequest(format!("invalid resource version {text:?}: not a number"))
    })
}

impl Store {
    /// A store holding the initial namespaces, keeping `history_limit`
    /// events for watches.
    pub fn new(history_limit: usize, now: &str) -> Store {
        let mut store = Store {
            objects: BTreeMap::new(),
            rv: 0,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            oldest: 0,
            serial: 0,
        };
        for ns in INITIAL_NAMESPACES {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            // Cannot fail: fixed valid names in an empty store.
            if let Err(e) = store.create(Kind::Namespace, None, body, now) {
                tracing::error!("initial namespace {ns}: {e}");
            }
        }
        store.history.clear();
        store.oldest = store.rv;
        store
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// The oldest resourceVersion a watch can start from.
    pub fn oldest_watchable(&self) -> u64 {
        self.oldest
    }

    /// Forgets the event history: every watch from an older version gets
    /// 410 Gone (as after an API server restart with a compacted etcd).
    pub fn compact(&mut self) {
        self.history.clear();
        self.oldest = self.rv;
    }

    /// The events after `rv`, or 410 Gone if they are no longer kept.
    pub fn events_since(&self, rv: u64) -> Result<Vec<Event>, ApiError> {
        if rv < self.oldest {
            return Err(ApiError::Gone {
                requested: rv,
                oldest: self.oldest,
            });
        }
        Ok(self.history.iter().filter(|e| e.rv > rv).cloned().collect())
    }

    /// Every object `filter` selects, as ADDED events at their versions.
    pub fn snapshot(&self, filter: &WatchFilter) -> Vec<(EventType, Value)> {
        self.objects
            .iter()
            .filter(|(k, o)| k.kind == filter.kind && filter.selects(&k.namespace, o))
            .map(|(_, o)| (EventType::Added, o.clone()))
            .collect()
    }

    fn record(&mut self, event: Event) -> Event {
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some(gone) = self.history.pop_front() {
                self.oldest = gone.rv;
            }
        }
        event
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn key(resource: &Resource, namespace: Option<&str>, name: &str) -> Key {
        Key {
            kind: resource.kind,
            namespace: if resource.namespaced {
                namespace.unwrap_or_default().to_owned()
            } else {
                String::new()
            },
            name: name.to_owned(),
        }
    }

    /// GET.
    pub fn get(&self, kind: Kind, namespace: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let resource = kind.resource();
        self.objects
            .get(&Self::key(resource, namespace, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(resource, name))
    }

    /// LIST: a `…List` object at the current resourceVersion.
    pub fn list(&self, kind: Kind, query: &ListQuery) -> Result<Value, ApiError> {
        let resource = kind.resource();
        let after = match &query.continue_token {
            Some(token) => Some(decode_continue(token)?),
            None => None,
        };
        let mut items = Vec::new();
        let mut more = None;
        let mut remaining = 0usize;
        for (key, object) in &self.objects {
            if key.kind != kind
                || query
                    .namespace
                    .as_deref()
                    .is_some_and(|ns| ns != key.namespace)
                || after
                    .as_ref()
                    .is_some_and(|(ns, name)| (&key.namespace, &key.name) <= (ns, name))
                || !query.labels.matches(object["metadata"].get("labels"))
                || !query.fields.matches(resource, object)
            {
                continue;
            }
            if query.limit.is_some_and(|l| l > 0 && items.len() >= l) {
                remaining += 1;
                continue;
            }
            let mut item = object.clone();
            if let Some(map) = item.as_object_mut() {
                // The real server leaves the type out of list items.
                map.remove("kind");
                map.remove("apiVersion");
            }
            more = Some((key.namespace.clone(), key.name.clone()));
            items.push(item);
        }
        let mut metadata = Map::new();
        metadata.insert("resourceVersion".to_owned(), json!(self.rv.to_string()));
        if remaining > 0 {
            if let Some((ns, name)) = more {
                metadata.insert("continue".to_owned(), json!(encode_continue(&ns, &name)));
                metadata.insert("remainingItemCount".to_owned(), json!(remaining));
            }
        }
        Ok(json!({
            "kind": format!("{}List", resource.kind_name),
            "apiVersion": resource.api_version(),
            "metadata": metadata,
            "items": items,
        }))
    }

    /// POST.
    pub fn create(
        &mut self,
        kind: Kind,
        namespace: Option<&str>,
        mut body: Value,
        now: &str,
    ) -> Result<Write, ApiError> {
        let resource = kind.resource();
        check_type(resource, &body)?;
        let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) else {
            return Err(ApiError::invalid(
                resource,
                "",
                vec![Cause::required(
                    "metadata.name",
                    "name or generateName is required",
                )],
            ));
        };
        if meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .is_empty()
        {
            if let Some(prefix) = meta.get("generateName").and_then(Value::as_str) {
                self.serial += 1;
                let name = format!("{prefix}{}", suffix(self.serial));
                meta.insert("name".to_owned(), json!(name));
            }
        }
        place_namespace(resource, meta, namespace)?;
        for field in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "generation",
            "managedFields",
        ] {
            meta.remove(field);
        }
        let (mut object, unknown_fields) = validate::decode(resource, &body)?;
        validate::check(resource, &object)?;
        let name = meta_str(&object, "name").to_owned();
        let ns = meta_str(&object, "namespace").to_owned();
        if resource.namespaced
            && !self.objects.contains_key(&Key {
                kind: Kind::Namespace,
                namespace: String::new(),
                name: ns.clone(),
            })
        {
            return Err(ApiError::not_found(Kind::Namespace.resource(), &ns));
        }
        let key = Self::key(resource, Some(&ns), &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(resource, &name));
        }
        self.serial += 1;
        let uid = format!("6b1e0c2a-0000-4000-8000-{:012x}", self.serial);
        let rv = self.next_rv();
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("uid".to_owned(), json!(uid));
            meta.insert("creationTimestamp".to_owned(), json!(now));
            meta.insert("resourceVersion".to_owned(), json!(rv.to_string()));
            if resource.spec {
                meta.insert("generation".to_owned(), json!(1));
            }
            if kind == Kind::Namespace {
                let labels = meta
                    .entry("labels")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(labels) = labels.as_object_mut() {
                    labels.insert("kubernetes.io/metadata.name".to_owned(), json!(name));
                }
            }
        }
        default_status(kind, &mut object);
        self.objects.insert(key.clone(), object.clone());
        let event = self.record(Event {
            rv,
            key,
            event_type: EventType::Added,
            object: object.clone(),
            old: None,
        });
        Ok(Write {
            object,
            events: vec![event],
            unknown_fields,
        })
    }

    /// PUT.
    pub fn replace(
        &mut self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        sub: Subresource,
        mut body: Value,
        now: &str,
    ) -> Result<Write, ApiError> {
        let resource = kind.resource();
        check_type(resource, &body)?;
        let body_name = meta_str(&body, "name");
        if body_name != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            place_namespace(resource, meta, namespace)?;
        }
        let key = Self::key(resource, namespace, name);
        let current = self
            .objects
            .get(&key)
            .ok_or_else(|| ApiError::not_found(resource, name))?;
        let wanted = meta_str(&body, "resourceVersion");
        if !wanted.is_empty() && wanted != meta_str(current, "resourceVersion") {
            return Err(ApiError::modified(resource, name));
        }
        self.update(key, sub, body, now)
    }

    /// PATCH.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        sub: Subresource,
        patch_type: PatchType,
        patch: &Value,
        now: &str,
    ) -> Result<Write, ApiError> {
        let resource = kind.resource();
        let key = Self::key(resource, namespace, name);
        let current = self
            .objects
            .get(&key)
            .ok_or_else(|| ApiError::not_found(resource, name))?;
        let mut object = current.clone();
        let rv_before = meta_str(current, "resourceVersion").to_owned();
        patch::apply(patch_type, kind, &mut object, patch)?;
        let wanted = meta_str(&object, "resourceVersion");
        if !wanted.is_empty() && wanted != rv_before {
            return Err(ApiError::modified(resource, name));
        }
        if meta_str(&object, "name") != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta_str(&object, "name")
            )));
        }
        self.update(key, sub, object, now)
    }

    /// The common part of PUT and PATCH once the precondition holds.
    fn update(
        &mut self,
        key: Key,
        sub: Subresource,
        body: Value,
        now: &str,
    ) -> Result<Write, ApiError> {
        let resource = key.kind.resource();
        let (body, unknown_fields) = validate::decode(resource, &body)?;
        let Some(old) = self.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(resource, &key.name));
        };
        let mut object = match sub {
            Subresource::Status => {
                let mut o = old.clone();
                if let Some(map) = o.as_object_mut() {
                    match body.get("status") {
                        Some(s) => map.insert("status".to_owned(), s.clone()),
                        None => map.remove("status"),
                    };
                }
                o
            }
            Subresource::Main => {
                let mut o = body;
                if resource.status {
                    if let Some(map) = o.as_object_mut() {
                        match old.get("status") {
                            Some(s) => map.insert("status".to_owned(), s.clone()),
                            None => map.remove("status"),
                        };
                    }
                }
                o
            }
        };
        // Fields the server owns.
        if let (Some(meta), Some(old_meta)) = (
            object.get_mut("metadata").and_then(Value::as_object_mut),
            old["metadata"].as_object(),
        ) {
            for field in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "generation",
                "namespace",
                "resourceVersion",
            ] {
                match old_meta.get(field) {
                    Some(v) => meta.insert(field.to_owned(), v.clone()),
                    None => meta.remove(field),
                };
            }
        }
        validate::check(resource, &object)?;
        if key.kind == Kind::Pod && sub == Subresource::Main {
            check_pod_update(&old, &object)?;
        }
        if object == old {
            // A no-op write changes nothing, not even the resourceVersion.
            return Ok(Write {
                object,
                events: Vec::new(),
                unknown_fields,
            });
        }
        if resource.spec && object.get("spec") != old.get("spec") {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("generation".to_owned(), json!(generation));
            }
        }
        let rv = self.next_rv();
        set_rv(&mut object, rv);
        let finalized = !meta_str(&object, "deletionTimestamp").is_empty()
            && object["metadata"]["finalizers"]
                .as_array()
                .is_none_or(Vec::is_empty);
        let _ = now;
        if finalized {
            self.objects.remove(&key);
            let event = self.record(Event {
                rv,
                key,
                event_type: EventType::Deleted,
                object: object.clone(),
                old: None,
            });
            return Ok(Write {
                object,
                events: vec![event],
                unknown_fields,
            });
        }
        self.objects.insert(key.clone(), object.clone());
        let event = self.record(Event {
            rv,
            key,
            event_type: EventType::Modified,
            object: object.clone(),
            old: Some(old),
        });
        Ok(Write {
            object,
            events: vec![event],
            unknown_fields,
        })
    }

    /// DELETE, with the preconditions of a DeleteOptions body. Objects
    /// with finalizers get a deletionTimestamp and stay until the last
    /// finalizer is removed; deleting a namespace deletes what is in it.
    pub fn delete(
        &mut self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        options: &Value,
        now: &str,
    ) -> Result<Write, ApiError> {
        let resource = kind.resource();
        let key = Self::key(resource, namespace, name);
        let current = self
            .objects
            .get(&key)
            .ok_or_else(|| ApiError::not_found(resource, name))?;
        let pre = &options["preconditions"];
        if let Some(rv) = pre["resourceVersion"].as_str() {
            if rv != meta_str(current, "resourceVersion") {
                return Err(ApiError::Conflict {
                    resource: resource.qualified(),
                    group: resource.group.to_owned(),
                    name: name.to_owned(),
                    reason: format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        meta_str(current, "resourceVersion")
                    ),
                });
            }
        }
        if let Some(uid) = pre["uid"].as_str() {
            if uid != meta_str(current, "uid") {
                return Err(ApiError::Conflict {
                    resource: resource.qualified(),
                    group: resource.group.to_owned(),
                    name: name.to_owned(),
                    reason: format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta_str(current, "uid")
                    ),
                });
            }
        }
        let has_finalizers = current["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if !meta_str(current, "deletionTimestamp").is_empty() {
                return Ok(Write {
                    object: current.clone(),
                    events: Vec::new(),
                    unknown_fields: Vec::new(),
                });
            }
            let old = current.clone();
            let mut object = old.clone();
            if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("deletionTimestamp".to_owned(), json!(now));
                meta.insert("deletionGracePeriodSeconds".to_owned(), json!(0));
            }
            let rv = self.next_rv();
            set_rv(&mut object, rv);
            self.objects.insert(key.clone(), object.clone());
            let event = self.record(Event {
                rv,
                key,
                event_type: EventType::Modified,
                object: object.clone(),
                old: Some(old),
            });
            return Ok(Write {
                object,
                events: vec![event],
                unknown_fields: Vec::new(),
            });
        }
        let mut events = Vec::new();
        if kind == Kind::Namespace {
            let inside: Vec<Key> = self
                .objects
                .keys()
                .filter(|k| k.kind != Kind::Namespace && k.namespace == name)
                .cloned()
                .collect();
            for k in inside {
                if let Some(mut object) = self.objects.remove(&k) {
                    let rv = self.next_rv();
                    set_rv(&mut object, rv);
                    events.push(self.record(Event {
                        rv,
                        key: k,
                        event_type: EventType::Deleted,
                        object,
                        old: None,
                    }));
                }
            }
        }
        let Some(mut object) = self.objects.remove(&key) else {
            return Err(ApiError::not_found(resource, name));
        };
        let rv = self.next_rv();
        set_rv(&mut object, rv);
        events.push(self.record(Event {
            rv,
            key,
            event_type: EventType::Deleted,
            object: object.clone(),
            old: None,
        }));
        Ok(Write {
            object,
            events,
            unknown_fields: Vec::new(),
        })
    }

    /// Every kind the store holds, for discovery.
    pub fn resources() -> &'static [Resource] {
        RESOURCES
    }
}

fn check_type(resource: &Resource, body: &Value) -> Result<(), ApiError> {
    let Some(map) = body.as_object() else {
        return Err(ApiError::BadRequest(
            "the body of the request must be a JSON object".to_owned(),
        ));
    };
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "Object 'Kind' is missing in '{body}'"
        )));
    }
    if kind != resource.kind_name || api_version != resource.api_version() {
        return Err(ApiError::BadRequest(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            resource.api_version()
        )));
    }
    Ok(())
}

fn place_namespace(
    resource: &Resource,
    meta: &mut Map<String, Value>,
    namespace: Option<&str>,
) -> Result<(), ApiError> {
    if !resource.namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    let url_ns = namespace.unwrap_or_default();
    let body_ns = meta
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !body_ns.is_empty() && !url_ns.is_empty() && body_ns != url_ns {
        return Err(ApiError::BadRequest(
            "the namespace of the provided object does not match the namespace sent on the request"
                .to_owned(),
        ));
    }
    if body_ns.is_empty() {
        meta.insert("namespace".to_owned(), json!(url_ns));
    }
    Ok(())
}

fn default_status(kind: Kind, object: &mut Value) {
    let Some(map) = object.as_object_mut() else {
        return;
    };
    match kind {
        Kind::Pod => {
            let status = map.entry("status").or_insert_with(|| json!({}));
            if let Some(s) = status.as_object_mut() {
                s.entry("phase").or_insert_with(|| json!("Pending"));
            }
        }
        Kind::Namespace => {
            map.insert("status".to_owned(), json!({"phase": "Active"}));
            map.entry("spec")
                .or_insert_with(|| json!({"finalizers": ["kubernetes"]}));
        }
        _ => {}
    }
}

/// The real server allows a running pod's spec to change only in a few
/// places; the double allows container images and nothing else.
fn check_pod_update(old: &Value, new: &Value) -> Result<(), ApiError> {
    let strip = |pod: &Value| {
        let mut spec = pod["spec"].clone();
        if let Some(list) = spec.get_mut("containers").and_then(Value::as_array_mut) {
            for c in list {
                if let Some(c) = c.as_object_mut() {
                    c.remove("image");
                }
            }
        }
        spec
    };
    if strip(old) != strip(new) {
        return Err(ApiError::invalid(
            Kind::Pod.resource(),
            meta_str(new, "name"),
            vec![Cause::forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            )],
        ));
    }
    Ok(())
}

/// Five characters from the generateName alphabet, from a serial number.
fn suffix(serial: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = serial.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

fn encode_continue(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_continue(token: &str) -> Result<(String, String), ApiError> {
    let bad = || ApiError::BadRequest(format!("continue key is not valid: {token:?}"));
    if token.len() % 2 != 0 {
        return Err(bad());
    }
    let bytes: Vec<u8> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (ns, name) = text.split_once('/').ok_or_else(bad)?;
    Ok((ns.to_owned(), name.to_owned()))
}
