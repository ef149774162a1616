//! PATCH bodies: JSON merge patch (RFC 7386) and strategic merge patch for
//! the list fields the real types mark with a merge key.

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::resource::Kind;

/// The patch types the double applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    StrategicMerge,
    /// `application/json-patch+json` (RFC 6902).
    Json,
}

impl PatchType {
    /// The patch type of a `Content-Type`, if it is one the double applies.
    pub fn from_content_type(content_type: &str) -> Option<PatchType> {
        match content_type.split(';').next().unwrap_or_default().trim() {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::StrategicMerge),
            "application/json-patch+json" => Some(PatchType::Json),
            _ => None,
        }
    }
}

/// Applies `patch` of type `kind` to `target`.
pub fn apply(
    patch_type: PatchType,
    kind: Kind,
    target: &mut Value,
    patch: &Value,
) -> Result<(), ApiError> {
    match patch_type {
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(ApiError::BadRequest(
                    "a merge patch must be a JSON object".to_owned(),
                ));
            }
            merge(target, patch);
            Ok(())
        }
        PatchType::StrategicMerge => {
            let Value::Object(p) = patch else {
                return Err(ApiError::BadRequest(
                    "a strategic merge patch must be a JSON object".to_owned(),
                ));
            };
            strategic(kind, &mut Vec::new(), target, p)
        }
        PatchType::Json => json_patch(target, patch),
    }
}

/// RFC 7386: objects merge recursively, `null` removes, anything else
/// replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// The merge key of the list at `path` (array indices left out), as the
/// real types declare it with `patchMergeKey`.
fn merge_key(kind: Kind, path: &[String]) -> Option<&'static str> {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    match (kind, p.as_slice()) {
        (_, ["metadata", "ownerReferences"]) => Some("uid"),
        (Kind::Node | Kind::Namespace | Kind::Pod, ["status", "conditions"]) => Some("type"),
        (Kind::Node, ["status", "addresses"]) => Some("type"),
        (Kind::Node, ["spec", "taints"]) => Some("key"),
        (Kind::Pod, ["status", "podIPs"] | ["status", "hostIPs"]) => Some("ip"),
        (
            Kind::Pod,
            [
                "spec",
                "containers" | "initContainers" | "ephemeralContainers",
            ]
            | ["spec", "volumes"]
            | ["spec", "imagePullSecrets"],
        ) => Some("name"),
        (Kind::Pod, ["spec", _, "env"]) => Some("name"),
        (Kind::Pod, ["spec", _, "volumeMounts"]) => Some("mountPath"),
        (Kind::Pod, ["spec", _, "ports"]) => Some("containerPort"),
        _ => None,
    }
}

/// Lists of scalars merged as sets (`patchStrategy: merge` without a key).
fn merges_scalars(path: &[String]) -> bool {
    path.len() == 2 && path[0] == "metadata" && path[1] == "finalizers"
}

fn strategic(
    kind: Kind,
    path: &mut Vec<String>,
    target: &mut Value,
    patch: &Map<String, Value>,
) -> Result<(), ApiError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *target = Value::Object(strip_directives(patch));
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Object(Map::new());
            return Ok(());
        }
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "unknown patch type: {other:?}"
            )));
        }
        None => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else {
        return Ok(());
    };
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(gone)) = (t.get_mut(field), v) {
                list.retain(|x| !gone.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            // $setElementOrder/…, $retainKeys: ordering and pruning hints.
            continue;
        }
        path.push(k.clone());
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Object(sub) => {
                if sub.get("$patch").and_then(Value::as_str) == Some("delete") {
                    t.remove(k);
                } else {
                    strategic(kind, path, t.entry(k.clone()).or_insert(Value::Null), sub)?;
                }
            }
            Value::Array(items) => {
                let slot = t.entry(k.clone()).or_insert(Value::Array(Vec::new()));
                if let Some(key) = merge_key(kind, path) {
                    merge_list(kind, path, slot, items, key)?;
                } else if merges_scalars(path) {
                    let list = as_array(slot);
                    for item in items {
                        if !list.contains(item) {
                            list.push(item.clone());
                        }
                    }
                } else {
                    *slot = Value::Array(items.clone());
                }
            }
            scalar => {
                t.insert(k.clone(), scalar.clone());
            }
        }
        path.pop();
    }
    Ok(())
}

fn as_array(slot: &mut Value) -> &mut Vec<Value> {
    if !slot.is_array() {
        *slot = Value::Array(Vec::new());
    }
    match slot {
        Value::Array(list) => list,
        _ => unreachable!("made an array above"),
    }
}

fn merge_list(
    kind: Kind,
    path: &mut Vec<String>,
    slot: &mut Value,
    items: &[Value],
    key: &str,
) -> Result<(), ApiError> {
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *slot = Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .cloned()
                .collect(),
        );
        return Ok(());
    }
    let list = as_array(slot);
    for item in items {
        let Value::Object(fields) = item else {
            return Err(ApiError::BadRequest(format!(
                "list {} is merged by {key:?}: its items must be objects",
                path.join(".")
            )));
        };
        let Some(id) = fields.get(key) else {
            return Err(ApiError::BadRequest(format!(
                "map: {item} does not contain declared merge key: {key}"
            )));
        };
        let found = list.iter().position(|x| x.get(key) == Some(id));
        match (fields.get("$patch").and_then(Value::as_str), found) {
            (Some("delete"), Some(i)) => {
                list.remove(i);
            }
            (Some("delete"), None) => {}
            (_, Some(i)) => strategic(kind, path, &mut list[i], fields)?,
            (_, None) => list.push(Value::Object(strip_directives(fields))),
        }
    }
    Ok(())
}

fn strip_directives(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// RFC 6902 JSON patch: add, remove, replace, move, copy, test.
fn json_patch(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let bad = |why: String| ApiError::BadRequest(format!("json patch: {why}"));
    let ops = patch
        .as_array()
        .ok_or_else(|| bad("the body must be a list of operations".to_owned()))?;
    for op in ops {
        let name = op["op"].as_str().unwrap_or_default();
        let path = op["path"]
            .as_str()
            .ok_or_else(|| bad("an operation has no path".to_owned()))?;
        match name {
            "add" | "replace" | "test" => {
                let value = op
                    .get("value")
                    .ok_or_else(|| bad(format!("{name} needs a value")))?
                    .clone();
                match name {
                    "test" => {
                        if target.pointer(path) != Some(&value) {
                            return Err(ApiError::Invalid {
                                kind: String::new(),
                                group: String::new(),
                                name: String::new(),
                                causes: vec![crate::error::Cause::invalid(
                                    path,
                                    &value.to_string(),
                                    "test failed",
                                )],
                            });
                        }
                    }
                    "replace" => {
                        let slot = target
                            .pointer_mut(path)
                            .ok_or_else(|| bad(format!("replace of missing {path}")))?;
                        *slot = value;
                    }
                    _ => insert(target, path, value).map_err(bad)?,
                }
            }
            "remove" => {
                remove(target, path).map_err(bad)?;
            }
            "move" | "copy" => {
                let from = op["from"]
                    .as_str()
                    .ok_or_else(|| bad(format!("{name} needs from")))?;
                let value = if name == "move" {
                    remove(target, from).map_err(bad)?
                } else {
                    target
                        .pointer(from)
                        .cloned()
                        .ok_or_else(|| bad(format!("missing {from}")))?
                };
                insert(target, path, value).map_err(bad)?;
            }
            other => return Err(bad(format!("unknown operation {other:?}"))),
        }
    }
    Ok(())
}

fn split_pointer(path: &str) -> Result<(&str, String), String> {
    let i = path
        .rfind('/')
        .ok_or_else(|| format!("bad pointer {path:?}"))?;
    let last = path[i + 1..].replace("~1", "/").replace("~0", "~");
    Ok((&path[..i], last))
}

fn insert(target: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let (parent, last) = split_pointer(path)?;
    match target.pointer_mut(parent) {
        Some(Value::Object(m)) => {
            m.insert(last, value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .map_err(|_| format!("bad index {last:?}"))?
            };
            if i > a.len() {
                return Err(format!("index {i} out of range"));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err(format!("missing parent of {path}")),
    }
}

fn remove(target: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    match target.pointer_mut(parent) {
        Some(Value::Object(m)) => m.remove(&last).ok_or_else(|| format!("missing {path}")),
        Some(Value::Array(a)) => {
            let i: usize = last.parse().map_err(|_| format!("bad index {last:?}"))?;
            if i < a.len() {
                Ok(a.remove(i))
            } else {
                Err(format!("index {i} out of range"))
            }
        }
        _ => Err(format!("missing parent of {path}")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        merge(&mut t, &json!({"a": {"b": null, "d": 3}, "l": [3]}));
        assert_eq!(t, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }

    #[test]
    fn strategic_merge_keys_node_conditions_by_type() {
        let mut node = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "NetworkUnavailable", "status": "True", "reason": "NoRoute"}]}});
        let patch = json!({"status": {"conditions": [
            {"type": "NetworkUnavailable", "status": "False", "reason": "WeaveIsUp"},
            {"type": "MemoryPressure", "status": "False"}],
            "$setElementOrder/conditions": [{"type": "Ready"}]}});
        apply(PatchType::StrategicMerge, Kind::Node, &mut node, &patch).expect("applies");
        assert_eq!(
            node["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"},
                {"type": "NetworkUnavailable", "status": "False", "reason": "WeaveIsUp"},
                {"type": "MemoryPressure", "status": "False"}])
        );
        let delete = json!({"status": {"conditions": [{"type": "Ready", "$patch": "delete"}]}});
        apply(PatchType::StrategicMerge, Kind::Node, &mut node, &delete).expect("applies");
        assert_eq!(
            node["status"]["conditions"].as_array().map(Vec::len),
            Some(2)
        );
    }

    #[test]
    fn strategic_merge_replaces_unkeyed_lists_and_merges_labels() {
        let mut pol = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"ingress": [{"ports": [{"port": 80}]}]}});
        let patch = json!({"metadata": {"labels": {"b": "2", "a": null}}, "spec": {"ingress": [{"ports": [{"port": 81}]}]}});
        apply(
            PatchType::StrategicMerge,
            Kind::NetworkPolicy,
            &mut pol,
            &patch,
        )
        .expect("applies");
        assert_eq!(
            pol,
            json!({"metadata": {"labels": {"b": "2"}}, "spec": {"ingress": [{"ports": [{"port": 81}]}]}})
        );
        let bad = json!({"status": {"conditions": [{"status": "x"}]}});
        let e = apply(PatchType::StrategicMerge, Kind::Node, &mut pol, &bad).expect_err("no key");
        assert_eq!(e.code(), 400);
    }

    #[test]
    fn json_patch_applies_operations_in_order() {
        let mut t = json!({"metadata": {"labels": {"a": "1"}}, "l": [1]});
        let patch = json!([
            {"op": "add", "path": "/metadata/labels/b", "value": "2"},
            {"op": "remove", "path": "/metadata/labels/a"},
            {"op": "add", "path": "/l/-", "value": 2},
            {"op": "test", "path": "/l/1", "value": 2}]);
        apply(PatchType::Json, Kind::Pod, &mut t, &patch).expect("applies");
        assert_eq!(t, json!({"metadata": {"labels": {"b": "2"}}, "l": [1, 2]}));
    }
}
