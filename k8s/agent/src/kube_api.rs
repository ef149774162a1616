//! The Kubernetes API calls of the agent (kube-rs), each mapped onto the
//! core's types: the registry ConfigMap, Nodes, the Node condition and
//! Events.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Event, EventSource, Node, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::nodes::{NodeInfo, node_info};
use crate::reclaim::ApiError;
use crate::registry::{NAME, NAMESPACE, Registry};

/// The agent's name in Events and field managers.
pub const COMPONENT: &str = "weave-kube";

fn api_error(error: kube::Error) -> ApiError {
    match &error {
        kube::Error::Api(status) if status.code == 409 => ApiError::Conflict,
        _ => ApiError::Other(error.to_string()),
    }
}

/// The API calls, with the last registry object read (a write replaces
/// the whole ConfigMap, as Weave's Update did, so its data and labels are
/// kept).
#[derive(Clone)]
pub struct KubeApi {
    client: Client,
    last: Option<ConfigMap>,
}

impl KubeApi {
    /// Calls through `client`.
    pub fn new(client: Client) -> KubeApi {
        KubeApi { client, last: None }
    }

    fn configmaps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    /// GET the registry; absent reads as empty.
    pub async fn read_registry(&mut self) -> Result<Registry, ApiError> {
        let cm = self.configmaps().get_opt(NAME).await.map_err(api_error)?;
        let registry = match &cm {
            None => Registry::default(),
            Some(cm) => Registry {
                resource_version: cm.metadata.resource_version.clone(),
                annotations: cm.metadata.annotations.clone().unwrap_or_default(),
            },
        };
        self.last = cm;
        Ok(registry)
    }

    /// PUT the registry with its resourceVersion, or create it.
    pub async fn write_registry(&mut self, registry: Registry) -> Result<Registry, ApiError> {
        let annotations: BTreeMap<String, String> = registry.annotations.clone();
        let written = match &registry.resource_version {
            None => {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(NAME.into()),
                        namespace: Some(NAMESPACE.into()),
                        annotations: Some(annotations),
                        ..ObjectMeta::default()
                    },
                    ..ConfigMap::default()
                };
                self.configmaps()
                    .create(&PostParams::default(), &cm)
                    .await
                    .map_err(api_error)?
            }
            Some(rv) => {
                let mut cm = match &self.last {
                    Some(last) if last.metadata.resource_version.as_ref() == Some(rv) => {
                        last.clone()
                    }
                    // Not the object last read: fetch it, so its data and
                    // labels are kept; if it moved on, that is a conflict.
                    _ => match self.configmaps().get_opt(NAME).await.map_err(api_error)? {
                        Some(current) if current.metadata.resource_version.as_ref() == Some(rv) => {
                            current
                        }
                        _ => return Err(ApiError::Conflict),
                    },
                };
                cm.metadata.resource_version = Some(rv.clone());
                cm.metadata.annotations = Some(annotations);
                self.configmaps()
                    .replace(NAME, &PostParams::default(), &cm)
                    .await
                    .map_err(api_error)?
            }
        };
        let registry = Registry {
            resource_version: written.metadata.resource_version.clone(),
            annotations: written.metadata.annotations.clone().unwrap_or_default(),
        };
        self.last = Some(written);
        Ok(registry)
    }

    /// LIST Nodes.
    pub async fn list_nodes(&self) -> Result<Vec<NodeInfo>, ApiError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let list = nodes
            .list(&ListParams::default())
            .await
            .map_err(api_error)?;
        Ok(list.items.iter().filter_map(node_info).collect())
    }

    /// GET one Node.
    pub async fn node(&self, name: &str) -> Result<Option<NodeInfo>, ApiError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node = nodes.get_opt(name).await.map_err(api_error)?;
        Ok(node.as_ref().and_then(node_info))
    }

    /// Sets the Node condition `NetworkUnavailable=False`, reason
    /// `WeaveIsUp`, with a strategic merge patch of the status subresource
    /// (conditions merge by `type`).
    pub async fn set_network_available(&self, node: &str) -> Result<(), ApiError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let now = Time(Timestamp::now());
        let patch = json!({
            "status": {
                "conditions": [{
                    "type": "NetworkUnavailable",
                    "status": "False",
                    "reason": "WeaveIsUp",
                    "message": "weave-kube has set up the network on this node",
                    "lastTransitionTime": now,
                    "lastHeartbeatTime": now,
                }]
            }
        });
        nodes
            .patch_status(node, &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .map_err(api_error)?;
        Ok(())
    }

    /// Records an Event on the registry ConfigMap.
    pub async fn record_event(
        &self,
        reason: &str,
        message: &str,
        reporting_node: &str,
    ) -> Result<(), ApiError> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), NAMESPACE);
        let now = Timestamp::now();
        let name = format!("{NAME}.{reporting_node}.{:x}", now.as_nanosecond());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(NAMESPACE.into()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("ConfigMap".into()),
                name: Some(NAME.into()),
                namespace: Some(NAMESPACE.into()),
                uid: self.last.as_ref().and_then(|cm| cm.metadata.uid.clone()),
                ..ObjectReference::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some("Normal".into()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            action: Some("Reclaim".into()),
            reporting_component: Some(format!("weave.works/{COMPONENT}")),
            reporting_instance: Some(reporting_node.into()),
            source: Some(EventSource {
                component: Some(COMPONENT.into()),
                host: Some(reporting_node.into()),
            }),
            ..Event::default()
        };
        events
            .create(&PostParams::default(), &event)
            .await
            .map_err(api_error)?;
        Ok(())
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}
