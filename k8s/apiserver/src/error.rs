//! API errors and the `Status` bodies the real API server answers them with.

use serde_json::{Value, json};

use crate::resource::Resource;

/// One field problem of an invalid object (`details.causes[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueForbidden`, ...
    pub reason: &'static str,
    /// The field path, e.g. `metadata.name`.
    pub field: String,
    /// The message without the field, e.g. `Required value`.
    pub message: String,
}

impl Cause {
    /// A `Required value` cause.
    pub fn required(field: impl Into<String>, detail: &str) -> Cause {
        let message = if detail.is_empty() {
            "Required value".to_owned()
        } else {
            format!("Required value: {detail}")
        };
        Cause {
            reason: "FieldValueRequired",
            field: field.into(),
            message,
        }
    }

    /// An `Invalid value` cause for the string `value`.
    pub fn invalid(field: impl Into<String>, value: &str, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {value:?}: {detail}"),
        }
    }

    /// A `Forbidden` cause.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {detail}"),
        }
    }

    /// A `Duplicate value` cause.
    pub fn duplicate(field: impl Into<String>, value: &str) -> Cause {
        Cause {
            reason: "FieldValueDuplicate",
            field: field.into(),
            message: format!("Duplicate value: {value:?}"),
        }
    }

    /// An `Unsupported value` cause.
    pub fn unsupported(field: impl Into<String>, value: &str, supported: &[&str]) -> Cause {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Cause {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!(
                "Unsupported value: {value:?}: supported values: {}",
                list.join(", ")
            ),
        }
    }
}

/// An error the API answers with a `Status` object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 404 for an object.
    #[error("{resource} {name:?} not found")]
    NotFound {
        /// Qualified resource name (`pods`, `networkpolicies.networking.k8s.io`).
        resource: String,
        /// API group of the resource.
        group: String,
        /// Object name.
        name: String,
    },
    /// 404 for a path the server does not serve.
    #[error("the server could not find the requested resource")]
    NoRoute,
    /// 409 on create of an existing name.
    #[error("{resource} {name:?} already exists")]
    AlreadyExists {
        /// Qualified resource name.
        resource: String,
        /// API group.
        group: String,
        /// Object name.
        name: String,
    },
    /// 409 on a stale resourceVersion or failed precondition.
    #[error("Operation cannot be fulfilled on {resource} {name:?}: {reason}")]
    Conflict {
        /// Qualified resource name.
        resource: String,
        /// API group.
        group: String,
        /// Object name.
        name: String,
        /// Why, e.g. the standard "object has been modified" sentence.
        reason: String,
    },
    /// 422 for an object that fails validation.
    #[error("{kind} {name:?} is invalid: {}", causes_text(.causes))]
    Invalid {
        /// The object's kind, e.g. `Pod`.
        kind: String,
        /// API group.
        group: String,
        /// Object name.
        name: String,
        /// What is wrong.
        causes: Vec<Cause>,
    },
    /// 400 for a malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// 410 for a resourceVersion older than the history kept.
    #[error("too old resource version: {requested} ({oldest})")]
    Gone {
        /// The version asked for.
        requested: u64,
        /// The oldest version still served.
        oldest: u64,
    },
    /// 405.
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// 415 for a patch or body type the server does not take.
    #[error(
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json"
    )]
    UnsupportedMediaType,
    /// 500.
    #[error("{0}")]
    Internal(String),
}

fn causes_text(causes: &[Cause]) -> String {
    let parts: Vec<String> = causes
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect();
    if parts.len() == 1 {
        parts[0].clone()
    } else {
        format!("[{}]", parts.join(", "))
    }
}

impl ApiError {
    /// 404 for `name` of `resource`.
    pub fn not_found(resource: &Resource, name: &str) -> ApiError {
        ApiError::NotFound {
            resource: resource.qualified(),
            group: resource.group.to_owned(),
            name: name.to_owned(),
        }
    }

    /// 409 AlreadyExists for `name` of `resource`.
    pub fn already_exists(resource: &Resource, name: &str) -> ApiError {
        ApiError::AlreadyExists {
            resource: resource.qualified(),
            group: resource.group.to_owned(),
            name: name.to_owned(),
        }
    }

    /// 409 Conflict for a stale resourceVersion.
    pub fn modified(resource: &Resource, name: &str) -> ApiError {
        ApiError::Conflict {
            resource: resource.qualified(),
            group: resource.group.to_owned(),
            name: name.to_owned(),
            reason: "the object has been modified; please apply your changes to the latest version and try again".to_owned(),
        }
    }

    /// 422 Invalid for `name` of `resource`.
    pub fn invalid(resource: &Resource, name: &str, causes: Vec<Cause>) -> ApiError {
        ApiError::Invalid {
            kind: resource.kind_name.to_owned(),
            group: resource.group.to_owned(),
            name: name.to_owned(),
            causes,
        }
    }

    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound { .. } | ApiError::NoRoute => 404,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => 409,
            ApiError::Invalid { .. } => 422,
            ApiError::BadRequest(_) => 400,
            ApiError::Gone { .. } => 410,
            ApiError::MethodNotAllowed => 405,
            ApiError::UnsupportedMediaType => 415,
            ApiError::Internal(_) => 500,
        }
    }

    /// The `reason` of the Status.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } | ApiError::NoRoute => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Gone { .. } => "Expired",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::UnsupportedMediaType => "UnsupportedMediaType",
            ApiError::Internal(_) => "InternalError",
        }
    }

    /// The `Status` object the real server sends for this error.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        let details = match self {
            ApiError::NotFound {
                resource,
                group,
                name,
            }
            | ApiError::AlreadyExists {
                resource,
                group,
                name,
            }
            | ApiError::Conflict {
                resource,
                group,
                name,
                ..
            } => {
                let plural = resource.split('.').next().unwrap_or(resource);
                Some(details(name, group, plural, None))
            }
            ApiError::Invalid {
                kind,
                group,
                name,
                causes,
            } => {
                let causes: Vec<Value> = causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
                Some(details(name, group, kind, Some(causes)))
            }
            ApiError::NoRoute => Some(json!({})),
            _ => None,
        };
        if let (Some(details), Some(map)) = (details, status.as_object_mut()) {
            map.insert("details".to_owned(), details);
        }
        status
    }
}

fn details(name: &str, group: &str, kind: &str, causes: Option<Vec<Value>>) -> Value {
    let mut d = serde_json::Map::new();
    d.insert("name".to_owned(), json!(name));
    if !group.is_empty() {
        d.insert("group".to_owned(), json!(group));
    }
    d.insert("kind".to_owned(), json!(kind));
    if let Some(causes) = causes {
        d.insert("causes".to_owned(), Value::Array(causes));
    }
    Value::Object(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Kind;

    #[test]
    fn statuses_are_shaped_like_the_real_servers() {
        let e = ApiError::modified(Kind::Pod.resource(), "a");
        assert_eq!(
            e.status(),
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "Operation cannot be fulfilled on pods \"a\": the object has been modified; please apply your changes to the latest version and try again",
                "reason": "Conflict", "details": {"name": "a", "kind": "pods"}, "code": 409})
        );
        let e = ApiError::not_found(Kind::NetworkPolicy.resource(), "p");
        assert_eq!(
            e.status()["message"],
            "networkpolicies.networking.k8s.io \"p\" not found"
        );
        assert_eq!(
            e.status()["details"],
            json!({"name": "p", "group": "networking.k8s.io", "kind": "networkpolicies"})
        );
        let e = ApiError::invalid(
            Kind::Pod.resource(),
            "A",
            vec![Cause::invalid("metadata.name", "A", "bad")],
        );
        assert_eq!(
            e.status()["message"],
            "Pod \"A\" is invalid: metadata.name: Invalid value: \"A\": bad"
        );
        assert_eq!(e.code(), 422);
        let e = ApiError::Gone {
            requested: 3,
            oldest: 9,
        };
        assert_eq!(e.status()["reason"], "Expired");
        assert_eq!(e.status()["message"], "too old resource version: 3 (9)");
    }
}
