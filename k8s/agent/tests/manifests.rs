//! The manifests in `deploy/kubernetes/` against the Kubernetes 1.33
//! schema (k8s-openapi's types, feature v1_33): every object parses as its
//! type, and no field is unknown — the typed object serialises back to
//! exactly the document (k8s-openapi's decoders skip unknown fields, so a
//! misspelt one would silently vanish; the round trip catches it). Then
//! what the install promises: Weave's object names, least-privilege RBAC,
//! and the DaemonSet's containers, probes and environment.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde::Deserialize;
use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/kubernetes");

#[derive(Default)]
struct Objects {
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    daemon_sets: Vec<DaemonSet>,
}

/// Parses `doc` as `T` and checks it serialises back to `doc` unchanged.
fn strict<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value, what: &str) -> Result<T> {
    let typed: T = serde_json::from_value(doc.clone()).with_context(|| format!("{what}: parse"))?;
    let back = serde_json::to_value(&typed)?;
    if &back != doc {
        bail!(
            "{what}: fields unknown to the 1.33 schema (or mistyped):\nwritten: {}\nschema:  {}",
            serde_json::to_string(doc)?,
            serde_json::to_string(&back)?
        );
    }
    Ok(typed)
}

fn load() -> Result<Objects> {
    let mut objects = Objects::default();
    let mut files: Vec<_> = std::fs::read_dir(DIR)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    ensure!(!files.is_empty(), "no manifests in {DIR}");
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        let name = Path::new(&file).display().to_string();
        for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let doc = Value::deserialize(doc).with_context(|| format!("{name} #{i}: YAML"))?;
            if doc.is_null() {
                continue;
            }
            let what = format!("{name} #{i}");
            let kind = (doc["apiVersion"].as_str(), doc["kind"].as_str());
            match kind {
                (Some("v1"), Some("ServiceAccount")) => {
                    objects.service_accounts.push(strict(&doc, &what)?)
                }
                (Some("rbac.authorization.k8s.io/v1"), Some("ClusterRole")) => {
                    objects.cluster_roles.push(strict(&doc, &what)?)
                }
                (Some("rbac.authorization.k8s.io/v1"), Some("ClusterRoleBinding")) => {
                    objects.cluster_role_bindings.push(strict(&doc, &what)?)
                }
                (Some("rbac.authorization.k8s.io/v1"), Some("Role")) => {
                    objects.roles.push(strict(&doc, &what)?)
                }
                (Some("rbac.authorization.k8s.io/v1"), Some("RoleBinding")) => {
                    objects.role_bindings.push(strict(&doc, &what)?)
                }
                (Some("apps/v1"), Some("DaemonSet")) => {
                    objects.daemon_sets.push(strict(&doc, &what)?)
                }
                other => bail!("{what}: unexpected object {other:?}"),
            }
        }
    }
    Ok(objects)
}

fn allows(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        r.api_groups
            .as_ref()
            .is_some_and(|g| g.iter().any(|g| g == group))
            && r.resources
                .as_ref()
                .is_some_and(|rs| rs.iter().any(|x| x == resource))
            && r.verbs.iter().any(|v| v == verb)
    })
}

#[test]
fn manifests_match_the_1_33_schema_exactly() -> Result<()> {
    let objects = load()?;
    assert_eq!(objects.service_accounts.len(), 1);
    assert_eq!(objects.cluster_roles.len(), 1);
    assert_eq!(objects.cluster_role_bindings.len(), 1);
    assert_eq!(objects.roles.len(), 1);
    assert_eq!(objects.role_bindings.len(), 1);
    assert_eq!(objects.daemon_sets.len(), 1);
    Ok(())
}

#[test]
fn a_misspelt_field_is_caught() {
    let doc: Value = serde_json::json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "x", "namspace": "kube-system"}
    });
    assert!(strict::<ServiceAccount>(&doc, "test").is_err());
}

#[test]
fn weaves_names_and_least_privilege_rbac() -> Result<()> {
    let o = load()?;
    let sa = &o.service_accounts[0];
    assert_eq!(sa.metadata.name.as_deref(), Some("weave-net"));
    assert_eq!(sa.metadata.namespace.as_deref(), Some("kube-system"));
    let cr = o.cluster_roles[0].rules.clone().unwrap_or_default();
    for (group, resource, verb) in [
        ("", "nodes", "list"),
        ("", "nodes", "watch"),
        ("", "pods", "watch"),
        ("", "namespaces", "watch"),
        ("networking.k8s.io", "networkpolicies", "watch"),
        ("", "nodes/status", "patch"),
    ] {
        assert!(allows(&cr, group, resource, verb), "{resource} {verb}");
    }
    // Nothing writes cluster-wide except the Node status.
    for rule in &cr {
        for verb in &rule.verbs {
            let resources = rule.resources.clone().unwrap_or_default();
            assert!(
                ["get", "list", "watch"].contains(&verb.as_str()) || resources == ["nodes/status"],
                "cluster-wide {verb} on {resources:?}"
            );
        }
        assert!(!rule.verbs.iter().any(|v| v == "*"));
    }
    let role = &o.roles[0];
    assert_eq!(role.metadata.namespace.as_deref(), Some("kube-system"));
    let rules = role.rules.clone().unwrap_or_default();
    assert!(allows(&rules, "", "configmaps", "update"));
    assert!(allows(&rules, "", "configmaps", "create"));
    assert!(allows(&rules, "", "events", "create"));
    assert!(allows(&rules, "", "events", "patch"));
    let by_name = rules
        .iter()
        .find(|r| r.verbs.iter().any(|v| v == "update"))
        .and_then(|r| r.resource_names.clone());
    assert_eq!(by_name, Some(vec!["weave-net".to_string()]));
    for binding in [
        &o.cluster_role_bindings[0].subjects,
        &o.role_bindings[0].subjects,
    ] {
        let s = &binding.as_ref().context("subjects")?[0];
        assert_eq!(
            (s.kind.as_str(), s.name.as_str()),
            ("ServiceAccount", "weave-net")
        );
    }
    Ok(())
}

#[test]
fn daemonset_is_weaves_with_probes_and_password() -> Result<()> {
    let o = load()?;
    let ds = &o.daemon_sets[0];
    assert_eq!(ds.metadata.name.as_deref(), Some("weave-net"));
    assert_eq!(ds.metadata.namespace.as_deref(), Some("kube-system"));
    let spec = ds.spec.as_ref().context("spec")?;
    assert_eq!(spec.min_ready_seconds, Some(5));
    let pod = spec.template.spec.as_ref().context("pod spec")?;
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.service_account_name.as_deref(), Some("weave-net"));
    let tolerations = pod.tolerations.clone().unwrap_or_default();
    for effect in ["NoSchedule", "NoExecute"] {
        assert!(tolerations.iter().any(
            |t| t.effect.as_deref() == Some(effect) && t.operator.as_deref() == Some("Exists")
        ));
    }
    let init = &pod.init_containers.as_ref().context("init")?[0];
    assert_eq!(
        init.command.as_deref(),
        Some(&["/usr/bin/weave-kube".to_string(), "init".into()][..])
    );
    let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["weave", "weave-npc"]);
    let weave = &pod.containers[0];
    assert!(weave.readiness_probe.is_some());
    let liveness = weave.liveness_probe.as_ref().context("liveness")?;
    let startup = weave.startup_probe.as_ref().context("startup probe")?;
    // A router waiting for peers or the ring is not killed: the startup
    // probe allows hours before liveness counts.
    let patience = startup.period_seconds.unwrap_or(10) * startup.failure_threshold.unwrap_or(3);
    assert!(patience >= 3600, "startup patience {patience}s");
    assert!(liveness.failure_threshold.unwrap_or(3) * liveness.period_seconds.unwrap_or(10) >= 60);
    assert!(
        weave
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .is_some()
    );
    let env = weave.env.clone().unwrap_or_default();
    let password = env
        .iter()
        .find(|e| e.name == "WEAVE_PASSWORD")
        .context("password")?;
    let secret = password
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref())
        .context("from a Secret")?;
    assert_eq!(secret.optional, Some(true));
    let hostname = env
        .iter()
        .find(|e| e.name == "HOSTNAME")
        .context("HOSTNAME")?;
    assert_eq!(
        hostname
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str()),
        Some("spec.nodeName")
    );
    // Every literal value the manifest sets is one weave-kube accepts.
    for container in pod.init_containers.iter().flatten().chain(&pod.containers) {
        let literal: Vec<(String, String)> = container
            .env
            .iter()
            .flatten()
            .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
            .collect();
        weave_kube::config::Config::from_vars(&|var| {
            literal
                .iter()
                .find(|(k, _)| k == var)
                .map(|(_, v)| v.clone())
        })
        .map_err(|e| anyhow::anyhow!("{}: {e}", container.name))?;
    }
    Ok(())
}
