//! kube-rs (`Client`, `Api`, `runtime::watcher`) against the API server
//! double on loopback: lists, watches, conflicts, 410 relists, status
//! patches and the injected faults.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher;
use kube::{Client, Config as KubeConfig};
use serde_json::json;
use weave_k8s_apiserver::{ApiServer, Config};

fn start() -> (ApiServer, Client) {
    start_with_bookmarks(Duration::from_millis(200))
}

fn start_with_bookmarks(every: Duration) -> (ApiServer, Client) {
    let server = ApiServer::bind(
        "127.0.0.1:0".parse().expect("address"),
        Config {
            bookmark_interval: every,
            ..Config::default()
        },
    )
    .expect("binds");
    let config = KubeConfig::new(server.url().parse().expect("url"));
    let client = Client::try_from(config).expect("client");
    (server, client)
}

fn pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "t"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "pause"}]},
    }))
    .expect("pod")
}

fn api_code(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("not an API error: {other:?}"),
    }
}

#[tokio::test]
async fn crud_conflicts_and_validation() {
    let (_server, client) = start();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let created = pods
        .create(&PostParams::default(), &pod("a", "n1"))
        .await
        .expect("create");
    assert_eq!(created.metadata.namespace.as_deref(), Some("default"));
    assert!(created.metadata.uid.is_some());
    assert_eq!(
        created.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );
    let (code, reason) = api_code(
        pods.create(&PostParams::default(), &pod("a", "n1"))
            .await
            .expect_err("exists"),
    );
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));
    let (code, _) = api_code(pods.get("nope").await.expect_err("missing"));
    assert_eq!(code, 404);
    let (code, reason) = api_code(
        pods.create(&PostParams::default(), &pod("Bad_Name", "n1"))
            .await
            .expect_err("invalid"),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    let other: Api<Pod> = Api::namespaced(client.clone(), "no-such-ns");
    let (code, _) = api_code(
        other
            .create(&PostParams::default(), &pod("x", "n1"))
            .await
            .expect_err("no ns"),
    );
    assert_eq!(code, 404);

    // A stale resourceVersion on replace is a conflict.
    let mut stale = pods.get("a").await.expect("get");
    let mut fresh = stale.clone();
    fresh
        .metadata
        .labels
        .get_or_insert_default()
        .insert("v".into(), "1".into());
    pods.replace("a", &PostParams::default(), &fresh)
        .await
        .expect("replace");
    stale
        .metadata
        .labels
        .get_or_insert_default()
        .insert("v".into(), "2".into());
    let (code, reason) = api_code(
        pods.replace("a", &PostParams::default(), &stale)
            .await
            .expect_err("stale"),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));

    // Status goes through the subresource only.
    let status = json!({"status": {"phase": "Running", "podIP": "10.32.0.5", "podIPs": [{"ip": "10.32.0.5"}]}});
    let patched = pods
        .patch_status("a", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status patch");
    assert_eq!(
        patched.status.as_ref().and_then(|s| s.pod_ip.as_deref()),
        Some("10.32.0.5")
    );
    let mut main = patched.clone();
    main.status.get_or_insert_default().phase = Some("Failed".into());
    let after = pods
        .replace("a", &PostParams::default(), &main)
        .await
        .expect("replace");
    assert_eq!(
        after.status.and_then(|s| s.phase).as_deref(),
        Some("Running")
    );

    // Field selectors.
    pods.create(&PostParams::default(), &pod("b", "n2"))
        .await
        .expect("create b");
    let on_n2 = pods
        .list(&ListParams::default().fields("spec.nodeName=n2"))
        .await
        .expect("list");
    let names: Vec<_> = on_n2
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names, ["b"]);
    let all: Api<Pod> = Api::all(client.clone());
    let labelled = all
        .list(&ListParams::default().labels("app=t,v=1"))
        .await
        .expect("list");
    assert_eq!(labelled.items.len(), 1);
    let paged = all
        .list(&ListParams::default().limit(1))
        .await
        .expect("page 1");
    assert_eq!(paged.items.len(), 1);
    let token = paged.metadata.continue_.clone().expect("continue token");
    let rest = all
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
        .expect("page 2");
    assert_eq!(rest.items.len(), 1);
    assert_ne!(rest.items[0].metadata.name, paged.items[0].metadata.name);

    // Delete with a stale precondition is refused, then succeeds.
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            resource_version: Some("1".into()),
            uid: None,
        }),
        ..DeleteParams::default()
    };
    let (code, _) = api_code(pods.delete("b", &dp).await.expect_err("precondition"));
    assert_eq!(code, 409);
    pods.delete("b", &DeleteParams::default())
        .await
        .expect("delete");
    let (code, _) = api_code(pods.get("b").await.expect_err("gone"));
    assert_eq!(code, 404);
}

#[tokio::test]
async fn node_conditions_merge_by_type_and_configmaps_update() {
    let (server, client) = start();
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n1"}}))
    .expect("node");
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create");
    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    nodes
        .patch_status("n1", &PatchParams::default(), &Patch::Strategic(&ready))
        .await
        .expect("ready");
    let weave = json!({"status": {"conditions": [{"type": "NetworkUnavailable", "status": "False", "reason": "WeaveIsUp"}]}});
    let n = nodes
        .patch_status("n1", &PatchParams::default(), &Patch::Strategic(&weave))
        .await
        .expect("weave");
    let types: Vec<String> = n
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.type_)
        .collect();
    assert_eq!(types, ["Ready", "NetworkUnavailable"]);

    // ConfigMap updates with the resourceVersion, as kube-peers does; an
    // injected conflict fails exactly one write.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let cm: ConfigMap = serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "weave-net", "annotations": {"kube-peers.weave.works/peers": "{}"}}}))
    .expect("cm");
    let cm = cms
        .create(&PostParams::default(), &cm)
        .await
        .expect("create");
    server.conflict_next(1);
    let (code, _) = api_code(
        cms.replace("weave-net", &PostParams::default(), &cm)
            .await
            .expect_err("injected"),
    );
    assert_eq!(code, 409);
    let mut next = cm.clone();
    next.data = Some([("k".to_owned(), "v".to_owned())].into());
    let stored = cms
        .replace("weave-net", &PostParams::default(), &next)
        .await
        .expect("replace");
    assert_ne!(
        stored.metadata.resource_version,
        cm.metadata.resource_version
    );
    // A no-op write keeps the version.
    let again = cms
        .replace("weave-net", &PostParams::default(), &stored)
        .await
        .expect("noop");
    assert_eq!(
        again.metadata.resource_version,
        stored.metadata.resource_version
    );
}

#[tokio::test]
async fn raw_watch_resumes_bookmarks_and_expires() {
    let (server, client) = start();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let first = pods
        .create(&PostParams::default(), &pod("a", "n1"))
        .await
        .expect("create");
    let rv = first.metadata.resource_version.clone().expect("rv");
    pods.create(&PostParams::default(), &pod("b", "n1"))
        .await
        .expect("create");
    let mut stream = pods
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .expect("watch")
        .boxed();
    match stream.try_next().await.expect("event") {
        Some(WatchEvent::Added(p)) => assert_eq!(p.metadata.name.as_deref(), Some("b")),
        other => panic!("expected ADDED b, got {other:?}"),
    }
    // Bookmarks arrive when nothing happens.
    match tokio::time::timeout(Duration::from_secs(3), stream.try_next()).await {
        Ok(Ok(Some(WatchEvent::Bookmark(b)))) => assert!(!b.metadata.resource_version.is_empty()),
        other => panic!("expected a bookmark, got {other:?}"),
    }
    drop(stream);
    server.restart();
    let mut stream = pods
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch")
        .boxed();
    match stream.try_next().await.expect("event") {
        Some(WatchEvent::Error(status)) => assert_eq!(status.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn watcher_follows_changes_and_relists_after_faults() {
    // No bookmarks in time: the watcher's version stays that of its last event.
    let (server, client) = start_with_bookmarks(Duration::from_secs(600));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("a", "n1"))
        .await
        .expect("create");
    let mut events = watcher(
        pods.clone(),
        watcher::Config::default().fields("spec.nodeName=n1"),
    )
    .boxed();
    let mut next = async || {
        let e = tokio::time::timeout(Duration::from_secs(10), events.try_next())
            .await
            .expect("event in time")
            .expect("no watcher error")
            .expect("stream continues");
        eprintln!(
            "watcher event {}",
            match &e {
                watcher::Event::Apply(p)
                | watcher::Event::InitApply(p)
                | watcher::Event::Delete(p) => format!("{:?}", p.metadata.name),
                other => format!("{other:?}"),
            }
        );
        e
    };
    assert!(matches!(next().await, watcher::Event::Init));
    assert!(
        matches!(next().await, watcher::Event::InitApply(p) if p.metadata.name.as_deref() == Some("a"))
    );
    assert!(matches!(next().await, watcher::Event::InitDone));
    pods.create(&PostParams::default(), &pod("b", "n1"))
        .await
        .expect("create");
    pods.create(&PostParams::default(), &pod("other-node", "n2"))
        .await
        .expect("create");
    assert!(
        matches!(next().await, watcher::Event::Apply(p) if p.metadata.name.as_deref() == Some("b"))
    );
    pods.delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(
        matches!(next().await, watcher::Event::Delete(p) if p.metadata.name.as_deref() == Some("a"))
    );

    // Dropped watches resume without a relist.
    server.drop_watches();
    pods.create(&PostParams::default(), &pod("c", "n1"))
        .await
        .expect("create");
    assert!(
        matches!(next().await, watcher::Event::Apply(p) if p.metadata.name.as_deref() == Some("c"))
    );

    // A restart with compacted history after changes the watcher did not
    // see makes it relist on 410.
    pods.create(&PostParams::default(), &pod("unseen", "n2"))
        .await
        .expect("create");
    server.restart();
    pods.create(&PostParams::default(), &pod("d", "n1"))
        .await
        .expect("create");
    let mut seen = Vec::new();
    let mut expired = false;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("event in time")
            .expect("stream continues");
        let event = match event {
            Ok(e) => e,
            Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                expired = true;
                continue;
            }
            Err(e) => panic!("watcher error {e}"),
        };
        match event {
            watcher::Event::Init => seen.clear(),
            watcher::Event::InitApply(p) => seen.extend(p.metadata.name),
            watcher::Event::InitDone => break,
            watcher::Event::Apply(p) => seen.extend(p.metadata.name),
            watcher::Event::Delete(_) => {}
        }
    }
    assert!(expired, "the watcher saw 410 Gone");
    seen.sort();
    assert_eq!(seen, ["b", "c", "d"]);
}

#[tokio::test]
async fn stalled_requests_wait() {
    let (server, client) = start();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    server.stall_next(Duration::from_millis(600), 1);
    let t = std::time::Instant::now();
    pods.list(&ListParams::default()).await.expect("list");
    assert!(t.elapsed() >= Duration::from_millis(600));
    let t = std::time::Instant::now();
    pods.list(&ListParams::default()).await.expect("list");
    assert!(t.elapsed() < Duration::from_millis(600));
}
