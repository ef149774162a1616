//! Server-side printing: the `meta.k8s.io/v1` `Table` kubectl asks for
//! (`Accept: application/json;as=Table;…`), with the columns the real
//! server prints for the kinds the double serves.

use serde_json::{Value, json};

use crate::resource::{Kind, Resource};

/// Whether an `Accept` header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

fn column(name: &str, kind: &str, priority: u8) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": kind, "format": format, "description": "", "priority": priority})
}

/// The column definitions for `resource`.
pub fn columns(resource: &Resource) -> Value {
    let cols = match resource.kind {
        Kind::Pod => vec![
            column("Name", "string", 0),
            column("Ready", "string", 0),
            column("Status", "string", 0),
            column("Restarts", "string", 0),
            column("Age", "string", 0),
            column("IP", "string", 1),
            column("Node", "string", 1),
        ],
        Kind::Node => vec![
            column("Name", "string", 0),
            column("Status", "string", 0),
            column("Roles", "string", 0),
            column("Age", "string", 0),
            column("Version", "string", 0),
            column("Internal-IP", "string", 1),
        ],
        Kind::Namespace => vec![
            column("Name", "string", 0),
            column("Status", "string", 0),
            column("Age", "string", 0),
        ],
        Kind::ConfigMap => vec![
            column("Name", "string", 0),
            column("Data", "integer", 0),
            column("Age", "string", 0),
        ],
        Kind::NetworkPolicy => vec![
            column("Name", "string", 0),
            column("Pod-Selector", "string", 0),
            column("Age", "string", 0),
        ],
        Kind::Event | Kind::EventV1 => vec![
            column("Name", "string", 0),
            column("Reason", "string", 0),
            column("Age", "string", 0),
        ],
    };
    Value::Array(cols)
}

/// Kubernetes' short human duration: `45s`, `12m`, `5h`, `3d`.
pub fn age(created: &str, now: jiff::Timestamp) -> String {
    let Ok(t) = created.parse::<jiff::Timestamp>() else {
        return "<unknown>".to_owned();
    };
    let secs = (now.as_second() - t.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 * 3 => format!("{}m", s / 60),
        s if s < 86400 * 2 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn cells(resource: &Resource, o: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let name = o["metadata"]["name"].as_str().unwrap_or_default();
    let age = age(
        o["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or_default(),
        now,
    );
    let s = |v: &Value| v.as_str().unwrap_or("<none>").to_owned();
    match resource.kind {
        Kind::Pod => {
            let phase = s(&o["status"]["phase"]);
            let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
            let ready = if phase == "Running" { total } else { 0 };
            let status = if o["metadata"].get("deletionTimestamp").is_some() {
                "Terminating".to_owned()
            } else {
                phase
            };
            vec![
                json!(name),
                json!(format!("{ready}/{total}")),
                json!(status),
                json!("0"),
                json!(age),
                json!(s(&o["status"]["podIP"])),
                json!(s(&o["spec"]["nodeName"])),
            ]
        }
        Kind::Node => {
            let ready = o["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready")
                .map(|c| c["status"] == "True");
            let status = match ready {
                Some(true) => "Ready",
                _ => "NotReady",
            };
            let ip = o["status"]["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["type"] == "InternalIP")
                .map(|a| s(&a["address"]))
                .unwrap_or_else(|| "<none>".to_owned());
            vec![
                json!(name),
                json!(status),
                json!("<none>"),
                json!(age),
                json!(s(&o["status"]["nodeInfo"]["kubeletVersion"])),
                json!(ip),
            ]
        }
        Kind::Namespace => vec![json!(name), json!(s(&o["status"]["phase"])), json!(age)],
        Kind::ConfigMap => {
            let data = o["data"].as_object().map_or(0, |m| m.len())
                + o["binaryData"].as_object().map_or(0, |m| m.len());
            vec![json!(name), json!(data), json!(age)]
        }
        Kind::NetworkPolicy => {
            let labels = o["spec"]["podSelector"]["matchLabels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "<none>".to_owned());
            vec![json!(name), json!(labels), json!(age)]
        }
        Kind::Event | Kind::EventV1 => vec![json!(name), json!(s(&o["reason"])), json!(age)],
    }
}

fn row(resource: &Resource, object: &Value, include: &str, now: jiff::Timestamp) -> Value {
    let embedded = match include {
        "None" => Value::Null,
        "Object" => object.clone(),
        _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": object["metadata"]}),
    };
    json!({"cells": cells(resource, object, now), "object": embedded})
}

/// A Table of `objects` at `resource_version`.
pub fn table(
    resource: &Resource,
    objects: &[Value],
    resource_version: &str,
    include: &str,
    with_columns: bool,
) -> Value {
    let now = jiff::Timestamp::now();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| row(resource, o, include, now))
        .collect();
    let mut t = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "rows": rows,
    });
    if with_columns {
        t["columnDefinitions"] = columns(resource);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_rows_carry_ip_and_node() {
        let pod = json!({"metadata": {"name": "a", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
            "status": {"phase": "Running", "podIP": "10.32.0.1"}});
        let t = table(Kind::Pod.resource(), &[pod], "7", "Metadata", true);
        assert_eq!(t["rows"][0]["cells"][5], "10.32.0.1");
        assert_eq!(t["rows"][0]["cells"][6], "n1");
        assert_eq!(t["rows"][0]["cells"][1], "1/1");
        assert_eq!(t["columnDefinitions"][0]["name"], "Name");
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }

    #[test]
    fn ages_read_like_kubectl() {
        let now: jiff::Timestamp = "2026-01-01T01:00:00Z".parse().expect("time");
        assert_eq!(age("2026-01-01T00:59:15Z", now), "45s");
        assert_eq!(age("2026-01-01T00:30:00Z", now), "30m");
        assert_eq!(age("bogus", now), "<unknown>");
    }
}
