//! The test kubelet: registers its Node, watches the Pods bound to it on
//! the API server, makes each one's sandbox through the CRI
//! (`RunPodSandbox`, so containerd runs the CNI configuration with the
//! K8S_POD_* CNI_ARGS exactly as under kubelet), writes `status.podIP`,
//! `podIPs`, `hostIP` and the phase back, and stops and removes the
//! sandbox when the Pod goes. Pod containers are not run: tests enter the
//! sandbox's network namespace (its pause process) instead.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::StreamExt;
use k8s_cri::v1::{
    ListPodSandboxRequest, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest,
    PortMapping, RemovePodSandboxRequest, RunPodSandboxRequest, StopPodSandboxRequest,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::cri::{self, Runtime};

/// Label on every sandbox: the Pod's uid.
pub const UID_LABEL: &str = "weave.test/pod-uid";

/// What the kubelet needs to know.
#[derive(Debug, Clone)]
pub struct Options {
    /// The node name.
    pub node: String,
    /// The node's address (Node `InternalIP`, pods' `hostIP`).
    pub node_ip: Ipv4Addr,
    /// The CRI socket.
    pub cri_socket: PathBuf,
    /// Where sandboxes' logs go.
    pub log_dir: PathBuf,
}

/// A sandbox made for a pod.
#[derive(Debug, Clone)]
struct Sandbox {
    id: String,
    ip: Option<String>,
}

/// The kubelet's state.
pub struct Kubelet {
    options: Options,
    client: kube::Client,
    runtime: Runtime,
    /// Sandboxes by pod uid.
    sandboxes: HashMap<String, Sandbox>,
    /// Pods bound here by uid, as last seen.
    pods: HashMap<String, Pod>,
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

impl Kubelet {
    /// Connects to the CRI and registers the Node.
    pub async fn new(options: Options, client: kube::Client) -> Result<Kubelet> {
        let runtime = cri::connect(&options.cri_socket).await?;
        let mut k = Kubelet {
            options,
            client,
            runtime,
            sandboxes: HashMap::new(),
            pods: HashMap::new(),
        };
        k.register().await?;
        k.adopt().await?;
        Ok(k)
    }

    async fn register(&self) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.options.node, "labels": {
                "kubernetes.io/hostname": self.options.node, "kubernetes.io/os": "linux"}},
        }))?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e).context("registering the node"),
        }
        let status = json!({"status": {
            "addresses": [{"type": "InternalIP", "address": self.options.node_ip.to_string()},
                {"type": "Hostname", "address": self.options.node}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "weave-rs test kubelet is posting ready status",
                "lastHeartbeatTime": now(), "lastTransitionTime": now()}],
            "nodeInfo": {"containerRuntimeVersion": "containerd://1.6", "kubeletVersion": "v1.33.0-weave-test",
                "architecture": "amd64", "operatingSystem": "linux", "bootID": "", "kernelVersion": "",
                "kubeProxyVersion": "", "machineID": "", "osImage": "Debian", "systemUUID": ""},
        }});
        nodes
            .patch_status(
                &self.options.node,
                &PatchParams::default(),
                &Patch::Strategic(&status),
            )
            .await
            .context("posting the node status")?;
        Ok(())
    }

    /// Takes over the sandboxes a previous run of this kubelet made.
    async fn adopt(&mut self) -> Result<()> {
        let list = self
            .runtime
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await?
            .into_inner();
        for s in list.items {
            if let Some(uid) = s.labels.get(UID_LABEL) {
                self.sandboxes.insert(
                    uid.clone(),
                    Sandbox {
                        id: s.id.clone(),
                        ip: None,
                    },
                );
            }
        }
        Ok(())
    }

    /// Runs until the watch stream ends (never, normally).
    pub async fn run(mut self) -> Result<()> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let config =
            watcher::Config::default().fields(&format!("spec.nodeName={}", self.options.node));
        let mut events = watcher(pods, config).default_backoff().boxed();
        let mut resync = tokio::time::interval(Duration::from_secs(3));
        let mut listing: Option<Vec<String>> = None;
        loop {
            tokio::select! {
                event = events.next() => {
                    let Some(event) = event else { return Ok(()) };
                    match event {
                        Ok(watcher::Event::Init) => listing = Some(Vec::new()),
                        Ok(watcher::Event::InitApply(pod)) => {
                            if let (Some(l), Some(uid)) = (listing.as_mut(), pod.metadata.uid.clone()) {
                                l.push(uid);
                            }
                            self.apply(pod).await;
                        }
                        Ok(watcher::Event::InitDone) => {
                            let seen = listing.take().unwrap_or_default();
                            let gone: Vec<String> = self.sandboxes.keys()
                                .filter(|uid| !seen.contains(uid)).cloned().collect();
                            for uid in gone {
                                self.pods.remove(&uid);
                                self.remove(&uid).await;
                            }
                        }
                        Ok(watcher::Event::Apply(pod)) => self.apply(pod).await,
                        Ok(watcher::Event::Delete(pod)) => {
                            if let Some(uid) = pod.metadata.uid {
                                self.pods.remove(&uid);
                                self.remove(&uid).await;
                            }
                        }
                        Err(e) => tracing::warn!("pod watch: {e}"),
                    }
                }
                _ = resync.tick() => {
                    let waiting: Vec<Pod> = self.pods.iter()
                        .filter(|(uid, _)| self.sandboxes.get(*uid).is_none_or(|s| s.ip.is_none()))
                        .map(|(_, p)| p.clone()).collect();
                    for pod in waiting {
                        self.apply(pod).await;
                    }
                }
            }
        }
    }

    async fn apply(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        self.pods.insert(uid.clone(), pod.clone());
        if let Err(e) = self.sync(&uid, &pod).await {
            let name = pod.metadata.name.clone().unwrap_or_default();
            tracing::warn!(pod = %name, "{e:#}");
            let status = json!({"status": {"phase": "Pending", "message": format!("{e:#}"),
                "reason": "SandboxFailed"}});
            let _ = self.patch_status(&pod, &status).await;
        }
    }

    async fn sync(&mut self, uid: &str, pod: &Pod) -> Result<()> {
        let id = match self.sandboxes.get(uid) {
            Some(s) => s.id.clone(),
            None => {
                let id = self.run_sandbox(uid, pod).await?;
                self.sandboxes.insert(
                    uid.to_owned(),
                    Sandbox {
                        id: id.clone(),
                        ip: None,
                    },
                );
                id
            }
        };
        let status = self
            .runtime
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: false,
            })
            .await
            .context("PodSandboxStatus")?
            .into_inner();
        let network = status.status.and_then(|s| s.network);
        let ip = network.as_ref().map(|n| n.ip.clone()).unwrap_or_default();
        if ip.is_empty() {
            anyhow::bail!("sandbox {id} has no IP address");
        }
        let mut ips = vec![json!({"ip": ip})];
        for extra in network.iter().flat_map(|n| n.additional_ips.iter()) {
            ips.push(json!({"ip": extra.ip}));
        }
        let current = pod.status.as_ref();
        let already = current.and_then(|s| s.pod_ip.as_deref()) == Some(ip.as_str())
            && current.and_then(|s| s.phase.as_deref()) == Some("Running");
        if !already {
            let host_ip = self.options.node_ip.to_string();
            let status = json!({"status": {
                "phase": "Running", "podIP": ip, "podIPs": ips,
                "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
                "startTime": now(), "message": null, "reason": null,
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now()},
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now()},
                    {"type": "Ready", "status": "True", "lastTransitionTime": now()},
                ],
            }});
            self.patch_status(pod, &status).await?;
        }
        if let Some(s) = self.sandboxes.get_mut(uid) {
            s.ip = Some(ip);
        }
        Ok(())
    }

    async fn run_sandbox(&mut self, uid: &str, pod: &Pod) -> Result<String> {
        let meta = &pod.metadata;
        let name = meta.name.clone().unwrap_or_default();
        let namespace = meta.namespace.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let mut port_mappings = Vec::new();
        for c in &spec.containers {
            for p in c.ports.iter().flatten() {
                if let Some(host_port) = p.host_port {
                    let protocol = match p.protocol.as_deref() {
                        Some("UDP") => 1,
                        Some("SCTP") => 2,
                        _ => 0,
                    };
                    port_mappings.push(PortMapping {
                        protocol,
                        container_port: p.container_port,
                        host_port,
                        host_ip: p.host_ip.clone().unwrap_or_default(),
                    });
                }
            }
        }
        let log_dir = self
            .options
            .log_dir
            .join(format!("{namespace}_{name}_{uid}"));
        std::fs::create_dir_all(&log_dir)?;
        let mut labels: HashMap<String, String> = meta
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        labels.insert(UID_LABEL.to_owned(), uid.to_owned());
        labels.insert("io.kubernetes.pod.name".to_owned(), name.clone());
        labels.insert("io.kubernetes.pod.namespace".to_owned(), namespace.clone());
        labels.insert("io.kubernetes.pod.uid".to_owned(), uid.to_owned());
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.clone(),
                uid: uid.to_owned(),
                namespace,
                attempt: 0,
            }),
            hostname: spec.hostname.clone().unwrap_or_else(|| name.clone()),
            log_directory: log_dir.to_string_lossy().into_owned(),
            port_mappings,
            labels,
            annotations: meta
                .annotations
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let response = self
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .context("RunPodSandbox")?;
        let id = response.into_inner().pod_sandbox_id;
        tracing::info!(pod = %name, sandbox = %id, "sandbox running");
        Ok(id)
    }

    async fn remove(&mut self, uid: &str) {
        let Some(sandbox) = self.sandboxes.remove(uid) else {
            return;
        };
        let id = sandbox.id;
        if let Err(e) = self
            .runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
        {
            tracing::warn!(sandbox = %id, "StopPodSandbox: {e}");
        }
        match self
            .runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
        {
            Ok(_) => tracing::info!(sandbox = %id, "sandbox removed"),
            Err(e) => tracing::warn!(sandbox = %id, "RemovePodSandbox: {e}"),
        }
    }

    async fn patch_status(&self, pod: &Pod, status: &serde_json::Value) -> Result<()> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .with_context(|| format!("writing the status of {ns}/{name}"))?;
        Ok(())
    }
}
