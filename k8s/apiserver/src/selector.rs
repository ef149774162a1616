//! Label and field selectors, parsed as the real server parses the
//! `labelSelector` and `fieldSelector` query parameters.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::error::ApiError;
use crate::resource::Resource;

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    NotExists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
}

/// A parsed `labelSelector` (all requirements must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    /// Parses `app=x,tier!=db,env in (a,b),!legacy`.
    pub fn parse(text: &str) -> Result<LabelSelector, ApiError> {
        let bad = |why: &str| {
            ApiError::BadRequest(format!(
                "unable to parse requirement: {why} in label selector {text:?}"
            ))
        };
        let mut out = Vec::new();
        for term in split_terms(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            if let Some(key) = term.strip_prefix('!') {
                out.push(Requirement::NotExists(
                    check_key(key.trim()).map_err(|e| bad(&e))?,
                ));
                continue;
            }
            if let Some((key, rest)) = split_word(term, " notin ") {
                out.push(Requirement::NotIn(
                    check_key(key).map_err(|e| bad(&e))?,
                    parse_set(rest).map_err(|e| bad(&e))?,
                ));
            } else if let Some((key, rest)) = split_word(term, " in ") {
                out.push(Requirement::In(
                    check_key(key).map_err(|e| bad(&e))?,
                    parse_set(rest).map_err(|e| bad(&e))?,
                ));
            } else if let Some((key, value)) = term.split_once("!=") {
                out.push(Requirement::NotEquals(
                    check_key(key.trim()).map_err(|e| bad(&e))?,
                    check_value(value.trim()).map_err(|e| bad(&e))?,
                ));
            } else if let Some((key, value)) =
                term.split_once("==").or_else(|| term.split_once('='))
            {
                out.push(Requirement::Equals(
                    check_key(key.trim()).map_err(|e| bad(&e))?,
                    check_value(value.trim()).map_err(|e| bad(&e))?,
                ));
            } else if term.contains(['<', '>']) {
                return Err(bad("numeric comparisons are not supported by this double"));
            } else {
                out.push(Requirement::Exists(check_key(term).map_err(|e| bad(&e))?));
            }
        }
        Ok(LabelSelector(out))
    }

    /// Whether `labels` (an object's `metadata.labels`) satisfy the selector.
    pub fn matches(&self, labels: Option<&Value>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, set) => get(k).is_some_and(|v| set.contains(v)),
            Requirement::NotIn(k, set) => get(k).is_none_or(|v| !set.contains(v)),
        })
    }
}

/// Splits on commas outside parentheses.
fn split_terms(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}

fn split_word<'a>(term: &'a str, word: &str) -> Option<(&'a str, &'a str)> {
    let i = term.find(word)?;
    Some((term[..i].trim(), term[i + word.len()..].trim()))
}

fn parse_set(text: &str) -> Result<BTreeSet<String>, String> {
    let inner = text
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised set, found {text:?}"))?;
    inner
        .split(',')
        .map(|v| check_value(v.trim()))
        .collect::<Result<_, _>>()
}

fn check_key(key: &str) -> Result<String, String> {
    if crate::validate::qualified_name(key).is_some() {
        return Err(format!("invalid label key {key:?}"));
    }
    Ok(key.to_owned())
}

fn check_value(value: &str) -> Result<String, String> {
    if crate::validate::label_value(value).is_some() {
        return Err(format!("invalid label value {value:?}"));
    }
    Ok(value.to_owned())
}

/// A parsed `fieldSelector`: `field=value` and `field!=value` terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses `spec.nodeName=n1,metadata.name!=x`, checking every field is
    /// one `resource` can be selected by.
    pub fn parse(text: &str, resource: &Resource) -> Result<FieldSelector, ApiError> {
        let probe = Value::Null;
        let mut out = Vec::new();
        for term in text.split(',') {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, true, v)
            } else {
                return Err(ApiError::BadRequest(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                )));
            };
            let field = field.trim();
            if resource.field_value(field, &probe).is_none() {
                return Err(ApiError::BadRequest(format!(
                    "field label not supported: {field}"
                )));
            }
            out.push((field.to_owned(), equal, value.trim().to_owned()));
        }
        Ok(FieldSelector(out))
    }

    /// Whether `object` satisfies the selector.
    pub fn matches(&self, resource: &Resource, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let actual = resource.field_value(field, object).unwrap_or_default();
            (actual == *value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resource::Kind;

    #[test]
    fn label_selectors_parse_and_match() {
        let labels = json!({"app": "web", "tier": "front"});
        let yes = [
            "",
            "app=web",
            "app==web",
            "app",
            "!db",
            "tier!=back",
            "app in (web, api)",
            "app notin (db)",
            "app=web,tier in (front)",
        ];
        for s in yes {
            let sel = LabelSelector::parse(s).expect(s);
            assert!(sel.matches(Some(&labels)), "{s}");
        }
        for s in [
            "app=api",
            "db",
            "!app",
            "tier notin (front,back)",
            "x in (a)",
        ] {
            let sel = LabelSelector::parse(s).expect(s);
            assert!(!sel.matches(Some(&labels)), "{s}");
        }
        assert!(LabelSelector::parse("!app").expect("parses").matches(None));
        for bad in ["a b=c", "app in web", "app=-x", "x>1"] {
            let e = LabelSelector::parse(bad).expect_err(bad);
            assert_eq!(e.code(), 400, "{bad}");
        }
    }

    #[test]
    fn field_selectors_check_fields_per_resource() {
        let pods = Kind::Pod.resource();
        let sel = FieldSelector::parse("spec.nodeName=n1,metadata.name!=b", pods).expect("parses");
        let pod = json!({"metadata": {"name": "a"}, "spec": {"nodeName": "n1"}});
        assert!(sel.matches(pods, &pod));
        let other = json!({"metadata": {"name": "b"}, "spec": {"nodeName": "n1"}});
        assert!(!sel.matches(pods, &other));
        let unscheduled = FieldSelector::parse("spec.nodeName=", pods).expect("parses");
        assert!(unscheduled.matches(pods, &json!({"metadata": {"name": "c"}, "spec": {}})));
        let e = FieldSelector::parse("spec.nodeName=x", Kind::ConfigMap.resource())
            .expect_err("configmaps have no nodeName");
        assert_eq!(e.to_string(), "field label not supported: spec.nodeName");
    }
}
