//! The agent's API calls against the API server double on loopback (no
//! root needed): the registry ConfigMap is created, replaced with its
//! resourceVersion and refused with 409 (mapped to `ApiError::Conflict`)
//! when stale; a registration run lists the agent with its Node UID; the
//! Node condition lands in the status; a reclaim Event is accepted.

use std::collections::BTreeMap;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{Event, Node};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;
use weave_k8s_apiserver::ApiServer;
use weave_kube::kube_api::KubeApi;
use weave_kube::reclaim::{ApiError, Note, Reclaim};
use weave_kube::registry::{PEERS_KEY, Registry};
use weave_kube::router_api::RouterApi;
use weave_kube::start::Me;

#[test]
fn kube_api_against_the_double() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = ApiServer::bind("127.0.0.1:0".parse()?, Default::default())?;
        let client = Client::try_from(kube::Config::new(server.url().parse()?))?;
        // kube-system exists from the start, as on a real cluster.
        let nodes: Api<Node> = Api::all(client.clone());
        let node = nodes
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "n1"}}))?,
            )
            .await?;
        let uid = node.metadata.uid.context("the double gives a UID")?;

        let mut kube = KubeApi::new(client.clone());
        // Absent registry reads as empty; a write without version creates.
        let empty = kube
            .read_registry()
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        ensure!(empty == Registry::default(), "{empty:?}");
        let mut annotations = BTreeMap::new();
        annotations.insert(PEERS_KEY.to_string(), r#"{"Peers":null}"#.to_string());
        let created = kube
            .write_registry(Registry {
                resource_version: None,
                annotations,
            })
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        ensure!(created.resource_version.is_some());
        // A second create, and a write with a stale version: 409.
        let again = kube
            .write_registry(Registry {
                resource_version: None,
                annotations: BTreeMap::new(),
            })
            .await;
        ensure!(again == Err(ApiError::Conflict), "{again:?}");
        let mut changed = created.clone();
        changed.set_lock("aa:00:00:00:00:09", "aa:00:00:00:00:01");
        kube.write_registry(changed.clone())
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let stale = kube.write_registry(changed).await;
        ensure!(stale == Err(ApiError::Conflict), "{stale:?}");

        // A registration run.
        let me = Me {
            peer: "aa:00:00:00:00:01".into(),
            node: "n1".into(),
            node_uid: Some(uid.clone()),
        };
        let machine = Reclaim::new(me.clone(), true, StdRng::seed_from_u64(1)).register_only();
        let router = RouterApi::new("127.0.0.1:1");
        let notes = weave_kube::run::drive(machine, &mut kube, &router, &me).await;
        ensure!(notes.contains(&Note::Registered), "{notes:?}");
        let list = kube
            .read_registry()
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .peers()?;
        let entry = list.get(&me.peer).context("registered")?;
        ensure!(entry.node_uid.as_deref() == Some(uid.as_str()), "{entry:?}");
        // The lock annotation written before is kept (not ours to drop).
        let raw = kube
            .read_registry()
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        ensure!(raw.lock_holder("aa:00:00:00:00:09") == Some("aa:00:00:00:00:01"));

        // The Node condition, through the status subresource.
        kube.set_network_available("n1")
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let node = nodes.get("n1").await?;
        let conditions = node
            .status
            .and_then(|s| s.conditions)
            .context("conditions")?;
        ensure!(
            conditions.iter().any(|c| c.type_ == "NetworkUnavailable"
                && c.status == "False"
                && c.reason.as_deref() == Some("WeaveIsUp")),
            "{conditions:?}"
        );

        // A reclaim Event.
        kube.record_event("PeerReclaimed", "peer x reclaimed", "n1")
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let events: Api<Event> = Api::namespaced(client, "kube-system");
        let list = events.list(&ListParams::default()).await?;
        ensure!(
            list.items
                .iter()
                .any(|e| e.reason.as_deref() == Some("PeerReclaimed")
                    && e.involved_object.name.as_deref() == Some("weave-net")),
            "{:?}",
            list.items
        );
        Ok(())
    })
}
