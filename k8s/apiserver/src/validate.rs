//! Validation: objects are decoded with the real types (k8s-openapi), then
//! checked with the rules of the real server for the fields tests touch
//! (names, labels, annotations, pod containers, policy types, event
//! references).

use std::collections::BTreeSet;

use k8s_openapi::api::{core::v1 as core, events::v1 as events, networking::v1 as networking};
use serde_json::Value;

use crate::error::{ApiError, Cause};
use crate::resource::{Kind, Resource};

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const QUALIFIED_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// Why `s` is not an RFC 1123 label, or `None` if it is one.
pub fn dns_label(s: &str) -> Option<String> {
    if s.len() > 63 {
        return Some("must be no more than 63 characters".to_owned());
    }
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    (!ok).then(|| LABEL_MSG.to_owned())
}

/// Why `s` is not an RFC 1123 subdomain, or `None` if it is one.
pub fn dns_subdomain(s: &str) -> Option<String> {
    if s.len() > 253 {
        return Some("must be no more than 253 characters".to_owned());
    }
    let ok = !s.is_empty()
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    (!ok).then(|| SUBDOMAIN_MSG.to_owned())
}

fn name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Why `s` is not a qualified name (label or annotation key), or `None`.
pub fn qualified_name(s: &str) -> Option<String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if let Some(why) = dns_subdomain(p) {
            return Some(format!("prefix part {why}"));
        }
    }
    (!name_part(name)).then(|| QUALIFIED_MSG.to_owned())
}

/// Why `s` is not a label value, or `None`.
pub fn label_value(s: &str) -> Option<String> {
    (!(s.is_empty() || name_part(s))).then(|| VALUE_MSG.to_owned())
}

/// Decodes `object` as `kind` with the real type and checks it. Returns
/// the object as the type serialises it (unknown fields dropped, as the
/// real server drops them) and the paths of the unknown fields.
pub fn decode(resource: &Resource, object: &Value) -> Result<(Value, Vec<String>), ApiError> {
    let normal = match resource.kind {
        Kind::Namespace => roundtrip::<core::Namespace>(object),
        Kind::Node => roundtrip::<core::Node>(object),
        Kind::Pod => roundtrip::<core::Pod>(object),
        Kind::ConfigMap => roundtrip::<core::ConfigMap>(object),
        Kind::Event => roundtrip::<core::Event>(object),
        Kind::EventV1 => roundtrip::<events::Event>(object),
        Kind::NetworkPolicy => roundtrip::<networking::NetworkPolicy>(object),
    }
    .map_err(|e| ApiError::BadRequest(format!("{}: {e}", resource.kind_name)))?;
    let mut unknown = Vec::new();
    unknown_fields(object, &normal, "", &mut unknown);
    Ok((normal, unknown))
}

fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(
    object: &Value,
) -> Result<Value, serde_json::Error> {
    let typed: T = serde_json::from_value(object.clone())?;
    serde_json::to_value(typed)
}

fn unknown_fields(input: &Value, normal: &Value, path: &str, out: &mut Vec<String>) {
    match (input, normal) {
        (Value::Object(i), Value::Object(n)) => {
            for (k, v) in i {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match n.get(k) {
                    Some(nv) => unknown_fields(v, nv, &sub, out),
                    None if v.is_null() => {}
                    None => out.push(sub),
                }
            }
        }
        (Value::Array(i), Value::Array(n)) => {
            for (idx, (iv, nv)) in i.iter().zip(n).enumerate() {
                unknown_fields(iv, nv, &format!("{path}[{idx}]"), out);
            }
        }
        _ => {}
    }
}

/// Checks the rules of the real server on a decoded object.
pub fn check(resource: &Resource, object: &Value) -> Result<(), ApiError> {
    let meta = &object["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    let mut causes = Vec::new();
    if name.is_empty() {
        causes.push(Cause::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        let why = match resource.kind {
            Kind::Namespace => dns_label(name),
            _ => dns_subdomain(name),
        };
        if let Some(why) = why {
            causes.push(Cause::invalid("metadata.name", name, &why));
        }
    }
    if resource.namespaced && meta["namespace"].as_str().unwrap_or_default().is_empty() {
        causes.push(Cause::required("metadata.namespace", ""));
    }
    if let Some(labels) = meta["labels"].as_object() {
        for (k, v) in labels {
            if let Some(why) = qualified_name(k) {
                causes.push(Cause::invalid("metadata.labels", k, &why));
            }
            let v = v.as_str().unwrap_or_default();
            if let Some(why) = label_value(v) {
                causes.push(Cause::invalid("metadata.labels", v, &why));
            }
        }
    }
    if let Some(annotations) = meta["annotations"].as_object() {
        for k in annotations.keys() {
            if let Some(why) = qualified_name(&k.to_ascii_lowercase()) {
                causes.push(Cause::invalid("metadata.annotations", k, &why));
            }
        }
    }
    match resource.kind {
        Kind::Pod => check_pod(object, &mut causes),
        Kind::ConfigMap => check_config_map(object, &mut causes),
        Kind::NetworkPolicy => check_policy(object, &mut causes),
        Kind::Event => check_event(object, &mut causes),
        Kind::Namespace | Kind::Node | Kind::EventV1 => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(resource, name, causes))
    }
}

fn check_pod(pod: &Value, causes: &mut Vec<Cause>) {
    let containers = pod["spec"]["containers"].as_array();
    match containers {
        None => causes.push(Cause::required("spec.containers", "")),
        Some(list) if list.is_empty() => causes.push(Cause::required("spec.containers", "")),
        Some(list) => {
            let mut seen = BTreeSet::new();
            for (i, c) in list.iter().enumerate() {
                let name = c["name"].as_str().unwrap_or_default();
                let field = format!("spec.containers[{i}].name");
                if name.is_empty() {
                    causes.push(Cause::required(field, ""));
                } else if let Some(why) = dns_label(name) {
                    causes.push(Cause::invalid(field, name, &why));
                } else if !seen.insert(name.to_owned()) {
                    causes.push(Cause::duplicate(field, name));
                }
                if c["image"].as_str().unwrap_or_default().is_empty() {
                    causes.push(Cause::required(format!("spec.containers[{i}].image"), ""));
                }
                for (j, p) in c["ports"].as_array().into_iter().flatten().enumerate() {
                    let port = p["containerPort"].as_i64().unwrap_or(0);
                    if !(1..=65535).contains(&port) {
                        causes.push(Cause::invalid(
                            format!("spec.containers[{i}].ports[{j}].containerPort"),
                            &port.to_string(),
                            "must be between 1 and 65535, inclusive",
                        ));
                    }
                    if let Some(proto) = p["protocol"].as_str() {
                        check_protocol(
                            proto,
                            &format!("spec.containers[{i}].ports[{j}].protocol"),
                            causes,
                        );
                    }
                }
            }
        }
    }
}

fn check_protocol(proto: &str, field: &str, causes: &mut Vec<Cause>) {
    const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
    if !PROTOCOLS.contains(&proto) {
        causes.push(Cause::unsupported(field, proto, PROTOCOLS));
    }
}

fn check_config_map(cm: &Value, causes: &mut Vec<Cause>) {
    for section in ["data", "binaryData"] {
        for k in cm[section].as_object().into_iter().flat_map(|m| m.keys()) {
            let ok = !k.is_empty()
                && k.len() <= 253
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !ok {
                causes.push(Cause::invalid(
                    section,
                    k,
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                ));
            }
        }
    }
}

fn check_policy(policy: &Value, causes: &mut Vec<Cause>) {
    let spec = &policy["spec"];
    for (i, t) in spec["policyTypes"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let t = t.as_str().unwrap_or_default();
        if t != "Ingress" && t != "Egress" {
            causes.push(Cause::unsupported(
                format!("spec.policyTypes[{i}]"),
                t,
                &["Egress", "Ingress"],
            ));
        }
    }
    for dir in ["ingress", "egress"] {
        for (i, rule) in spec[dir].as_array().into_iter().flatten().enumerate() {
            for (j, p) in rule["ports"].as_array().into_iter().flatten().enumerate() {
                if let Some(proto) = p["protocol"].as_str() {
                    check_protocol(
                        proto,
                        &format!("spec.{dir}[{i}].ports[{j}].protocol"),
                        causes,
                    );
                }
                if let (Some(port), Some(end)) = (p["port"].as_i64(), p["endPort"].as_i64()) {
                    if end < port {
                        causes.push(Cause::invalid(
                            format!("spec.{dir}[{i}].ports[{j}].endPort"),
                            &end.to_string(),
                            "must be greater than or equal to `port`",
                        ));
                    }
                }
            }
            let peers = if dir == "ingress" { "from" } else { "to" };
            for (j, peer) in rule[peers].as_array().into_iter().flatten().enumerate() {
                if let Some(cidr) = peer["ipBlock"]["cidr"].as_str() {
                    if cidr.parse::<ipnet::IpNet>().is_err() {
                        causes.push(Cause::invalid(
                            format!("spec.{dir}[{i}].{peers}[{j}].ipBlock.cidr"),
                            cidr,
                            "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                        ));
                    }
                }
            }
        }
    }
}

fn check_event(event: &Value, causes: &mut Vec<Cause>) {
    let ns = event["metadata"]["namespace"].as_str().unwrap_or_default();
    let involved = event["involvedObject"]["namespace"]
        .as_str()
        .unwrap_or_default();
    if !involved.is_empty() && involved != ns {
        causes.push(Cause::invalid(
            "involvedObject.namespace",
            involved,
            "does not match event.namespace",
        ));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn names_follow_rfc_1123() {
        assert!(dns_label("a-1").is_none());
        assert!(dns_label("A").is_some());
        assert!(dns_label("a.b").is_some());
        assert!(dns_subdomain("a.b-c").is_none());
        assert!(dns_subdomain("a..b").is_some());
        assert!(qualified_name("kube-peers.weave.works/peers").is_none());
        assert!(qualified_name("a/b/c").is_some());
        assert!(label_value("").is_none());
        assert!(label_value("-x").is_some());
    }

    #[test]
    fn decode_reports_unknown_fields_and_type_errors() {
        let pods = Kind::Pod.resource();
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"},
            "spec": {"containers": [{"name": "c", "image": "i", "bogus": 1}], "nope": true}});
        let (normal, unknown) = decode(pods, &pod).expect("decodes");
        assert_eq!(unknown, vec!["spec.containers[0].bogus", "spec.nope"]);
        assert!(normal["spec"].get("nope").is_none());
        let bad = json!({"metadata": {"name": 5}});
        assert_eq!(decode(pods, &bad).expect_err("type error").code(), 400);
    }

    #[test]
    fn pods_need_containers_with_images() {
        let pods = Kind::Pod.resource();
        let pod = json!({"metadata": {"name": "Bad", "namespace": "x"},
            "spec": {"containers": [{"name": "c"}, {"name": "c", "image": "i"}]}});
        let ApiError::Invalid { causes, .. } = check(pods, &pod).expect_err("invalid") else {
            panic!("not Invalid");
        };
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "metadata.name",
                "spec.containers[0].image",
                "spec.containers[1].name"
            ]
        );
    }
}
