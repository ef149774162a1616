//! The resources the double serves: their API group, names and scope, and
//! the fields each one can be selected by.

use serde_json::{Value, json};

/// One kind of object the double stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// core/v1 Namespace.
    Namespace,
    /// core/v1 Node.
    Node,
    /// core/v1 Pod.
    Pod,
    /// core/v1 ConfigMap.
    ConfigMap,
    /// core/v1 Event.
    Event,
    /// events.k8s.io/v1 Event.
    EventV1,
    /// networking.k8s.io/v1 NetworkPolicy.
    NetworkPolicy,
}

/// How a resource appears in the API.
#[derive(Debug)]
pub struct Resource {
    /// The kind it stores.
    pub kind: Kind,
    /// API group, empty for core.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// URL name, e.g. `pods`.
    pub plural: &'static str,
    /// Singular name, e.g. `pod`.
    pub singular: &'static str,
    /// The object's `kind`, e.g. `Pod`.
    pub kind_name: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Whether the object has a `status` subresource.
    pub status: bool,
    /// Whether the object has a `spec` (whose changes bump `generation`).
    pub spec: bool,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
    /// Field selector labels besides `metadata.name` and `metadata.namespace`,
    /// with the JSON path each one reads.
    pub fields: &'static [(&'static str, &'static [&'static str])],
}

/// Every resource, in discovery order.
pub static RESOURCES: &[Resource] = &[
    Resource {
        kind: Kind::Namespace,
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind_name: "Namespace",
        namespaced: false,
        status: true,
        spec: true,
        short_names: &["ns"],
        fields: &[("status.phase", &["status", "phase"])],
    },
    Resource {
        kind: Kind::Node,
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind_name: "Node",
        namespaced: false,
        status: true,
        spec: true,
        short_names: &["no"],
        fields: &[("spec.unschedulable", &["spec", "unschedulable"])],
    },
    Resource {
        kind: Kind::Pod,
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind_name: "Pod",
        namespaced: true,
        status: true,
        spec: true,
        short_names: &["po"],
        fields: &[
            ("spec.nodeName", &["spec", "nodeName"]),
            ("spec.restartPolicy", &["spec", "restartPolicy"]),
            ("spec.schedulerName", &["spec", "schedulerName"]),
            ("spec.serviceAccountName", &["spec", "serviceAccountName"]),
            ("spec.hostNetwork", &["spec", "hostNetwork"]),
            ("status.phase", &["status", "phase"]),
            ("status.podIP", &["status", "podIP"]),
            ("status.nominatedNodeName", &["status", "nominatedNodeName"]),
        ],
    },
    Resource {
        kind: Kind::ConfigMap,
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind_name: "ConfigMap",
        namespaced: true,
        status: false,
        spec: false,
        short_names: &["cm"],
        fields: &[],
    },
    Resource {
        kind: Kind::Event,
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind_name: "Event",
        namespaced: true,
        status: false,
        spec: false,
        short_names: &["ev"],
        fields: &[
            ("involvedObject.kind", &["involvedObject", "kind"]),
            ("involvedObject.namespace", &["involvedObject", "namespace"]),
            ("involvedObject.name", &["involvedObject", "name"]),
            ("involvedObject.uid", &["involvedObject", "uid"]),
            (
                "involvedObject.apiVersion",
                &["involvedObject", "apiVersion"],
            ),
            ("involvedObject.fieldPath", &["involvedObject", "fieldPath"]),
            ("reason", &["reason"]),
            ("type", &["type"]),
            ("source", &["source", "component"]),
        ],
    },
    Resource {
        kind: Kind::EventV1,
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind_name: "Event",
        namespaced: true,
        status: false,
        spec: false,
        short_names: &["ev"],
        fields: &[
            ("regarding.kind", &["regarding", "kind"]),
            ("regarding.namespace", &["regarding", "namespace"]),
            ("regarding.name", &["regarding", "name"]),
            ("reason", &["reason"]),
            ("type", &["type"]),
        ],
    },
    Resource {
        kind: Kind::NetworkPolicy,
        group: "networking.k8s.io",
        version: "v1",
        plural: "networkpolicies",
        singular: "networkpolicy",
        kind_name: "NetworkPolicy",
        namespaced: true,
        status: false,
        spec: true,
        short_names: &["netpol"],
        fields: &[],
    },
];

impl Kind {
    /// The resource description of this kind.
    pub fn resource(self) -> &'static Resource {
        // RESOURCES lists every kind once, in declaration order.
        &RESOURCES[self as usize]
    }
}

impl Resource {
    /// `apiVersion` of the objects, e.g. `v1` or `networking.k8s.io/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The name errors use: `pods`, or `networkpolicies.networking.k8s.io`.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Finds the resource served at `group`/`version`/`plural`.
    pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
        RESOURCES
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// The value of field selector label `field` on `object`, or `None` if
    /// the resource cannot be selected by that field.
    pub fn field_value(&self, field: &str, object: &Value) -> Option<String> {
        let path: &[&str] = match field {
            "metadata.name" => &["metadata", "name"],
            "metadata.namespace" => &["metadata", "namespace"],
            _ => self.fields.iter().find(|(f, _)| *f == field)?.1,
        };
        let mut at = object;
        for key in path {
            match at.get(key) {
                Some(v) => at = v,
                None => return Some(String::new()),
            }
        }
        Some(match at {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        })
    }

    /// This resource's entry in an `APIResourceList`.
    pub fn discovery(&self) -> Value {
        let mut verbs = vec![
            "create", "delete", "get", "list", "patch", "update", "watch",
        ];
        if self.kind != Kind::Namespace && self.kind != Kind::Node {
            verbs.push("deletecollection");
        }
        json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind_name,
            "verbs": verbs,
            "shortNames": self.short_names,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_maps_to_its_own_entry() {
        for (i, r) in RESOURCES.iter().enumerate() {
            assert_eq!(r.kind as usize, i);
            assert!(std::ptr::eq(r.kind.resource(), r));
        }
    }

    #[test]
    fn field_values_read_paths_and_reject_unknown_fields() {
        let pod = json!({"metadata": {"name": "a", "namespace": "x"}, "spec": {"nodeName": "n1"}});
        let r = Kind::Pod.resource();
        assert_eq!(r.field_value("spec.nodeName", &pod).as_deref(), Some("n1"));
        assert_eq!(r.field_value("status.phase", &pod).as_deref(), Some(""));
        assert_eq!(r.field_value("spec.bogus", &pod), None);
        assert_eq!(r.qualified(), "pods");
        assert_eq!(
            Kind::NetworkPolicy.resource().qualified(),
            "networkpolicies.networking.k8s.io"
        );
    }
}
