//! A Kubernetes node made of a netlab host: containerd with the weave-net
//! CNI configuration (from `weave-router install-cni`), the pause image,
//! weave-router in Bridge mode and the test kubelet.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_cri::v1::{ListPodSandboxRequest, PodSandboxFilter, PodSandboxStatusRequest};
use weave_tests::{Host, Lab, Process, wait_for};

use crate::containerd::{Containerd, run_async};
use crate::cri;
use crate::kubelet::UID_LABEL;

/// The range the routers allocate pod addresses from.
pub const IPALLOC_RANGE: &str = "10.32.0.0/12";

/// Where Debian's containernetworking-plugins are.
const DEBIAN_CNI: &str = "/usr/lib/cni";

/// The programs a node runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `weave-router`.
    pub router: PathBuf,
    /// The directory holding `weave-net` and `weave-ipam`.
    pub plugins: PathBuf,
    /// `weave-test-kubelet`.
    pub kubelet: PathBuf,
}

/// A running node. Dropping it stops the kubelet, removes every pod
/// through the CRI (CNI DEL while the router still runs), tears containerd
/// down, then stops the router.
#[derive(Debug)]
pub struct KubeNode {
    name: String,
    kubelet: Option<Process>,
    containerd: Containerd,
    router: Option<Process>,
}

impl KubeNode {
    /// Starts node `name` on `host`: the router (peered with `peers`),
    /// containerd with the CNI plugins and the pause image, and the
    /// kubelet talking to `api` (an URL the host reaches).
    pub fn start(
        lab: &Lab,
        host: &Host,
        bins: &Binaries,
        api: &str,
        pause_archive: &Path,
        peers: &[Ipv4Addr],
    ) -> Result<KubeNode> {
        let name = format!("node{}", host.index());
        let dir = lab.dir().join(format!("kube-{name}"));
        std::fs::create_dir_all(&dir)?;
        let router = start_router(host, bins, &dir, &name, peers)?;
        let containerd = Containerd::start(host, &dir.join("containerd"))?;
        let out = weave_tests::Command::new(&bins.router.to_string_lossy())
            .args(["install-cni", "--from"])
            .arg(bins.plugins.to_string_lossy())
            .arg("--plugin-dir")
            .arg(containerd.cni_bin_dir().to_string_lossy())
            .arg("--conf-dir")
            .arg(containerd.cni_conf_dir().to_string_lossy())
            .run()?;
        tracing::debug!("{}", out.stdout);
        for plugin in ["loopback", "portmap"] {
            let from = Path::new(DEBIAN_CNI).join(plugin);
            std::fs::copy(&from, containerd.cni_bin_dir().join(plugin)).with_context(|| {
                format!("copying {} (containernetworking-plugins)", from.display())
            })?;
        }
        containerd.import(pause_archive)?;
        let mut node = KubeNode {
            name: name.clone(),
            kubelet: None,
            containerd,
            router: Some(router),
        };
        let ip = host.underlay_ip().to_string();
        let socket = node.containerd.socket().to_string_lossy().into_owned();
        let logs = dir.join("pod-logs").to_string_lossy().into_owned();
        let kubelet = host.spawn(
            &format!("kubelet-{name}"),
            &[
                &bins.kubelet.to_string_lossy(),
                "--node",
                &name,
                "--node-ip",
                &ip,
                "--api",
                api,
                "--cri",
                &socket,
                "--log-dir",
                &logs,
            ],
        )?;
        node.kubelet = Some(kubelet);
        Ok(node)
    }

    /// The node name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's containerd.
    pub fn containerd(&self) -> &Containerd {
        &self.containerd
    }

    /// Restarts containerd (pods keep running).
    pub fn restart_containerd(&mut self, host: &Host) -> Result<()> {
        self.containerd.restart(host)
    }

    /// The router's pid.
    pub fn router_pid(&self) -> Option<u32> {
        self.router.as_ref().map(Process::pid)
    }

    /// The kubelet's log so far.
    pub fn kubelet_log(&self) -> String {
        self.kubelet.as_ref().map(Process::log).unwrap_or_default()
    }

    /// The sandbox id and pause pid of the pod with `uid`, if it has one.
    pub fn sandbox_of(&self, uid: &str) -> Result<Option<(String, i32)>> {
        let socket = self.containerd.socket();
        let uid = uid.to_owned();
        run_async(async move {
            let mut rt = cri::connect(&socket).await?;
            let filter = PodSandboxFilter {
                label_selector: [(UID_LABEL.to_owned(), uid)].into(),
                ..Default::default()
            };
            let list = rt
                .list_pod_sandbox(ListPodSandboxRequest {
                    filter: Some(filter),
                })
                .await?
                .into_inner();
            let Some(s) = list.items.into_iter().next() else {
                return Ok(None);
            };
            let status = rt
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: s.id.clone(),
                    verbose: true,
                })
                .await?
                .into_inner();
            let info = status.info.get("info").cloned().unwrap_or_default();
            let info: serde_json::Value = serde_json::from_str(&info).unwrap_or_default();
            let pid = info["pid"].as_i64().unwrap_or(0);
            Ok(Some((s.id, i32::try_from(pid).unwrap_or(0))))
        })
    }
}

impl Drop for KubeNode {
    fn drop(&mut self) {
        if let Some(mut k) = self.kubelet.take() {
            let _ = k.stop(Duration::from_secs(5));
        }
        if let Err(e) = self.containerd.remove_all_sandboxes() {
            eprintln!("testbed: {}: removing pods: {e:#}", self.name);
        }
        // The containerd teardown itself runs when the field drops, before
        // the router (declared after it).
    }
}

fn start_router(
    host: &Host,
    bins: &Binaries,
    dir: &Path,
    name: &str,
    peers: &[Ipv4Addr],
) -> Result<Process> {
    let db = dir.join("weavedb");
    std::fs::create_dir_all(&db)?;
    let mut argv: Vec<String> = vec![
        bins.router.to_string_lossy().into_owned(),
        "--name".into(),
        format!("aa:00:00:00:01:{:02x}", host.index() + 1),
        "--nickname".into(),
        name.into(),
        "--db-prefix".into(),
        format!("{}/weave", db.display()),
        "--ipalloc-range".into(),
        IPALLOC_RANGE.into(),
        "--no-fastdp".into(),
    ];
    argv.extend(
        peers
            .iter()
            .filter(|p| **p != host.underlay_ip())
            .map(ToString::to_string),
    );
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let router = host.spawn(&format!("router-{name}"), &argv)?;
    wait_for(Duration::from_secs(60), "the router's HTTP API", || {
        Ok(router_http(host, "GET", "/status").is_ok())
    })?;
    Ok(router)
}

/// A request to the router of `host` (curl in its namespace); `None` for 404.
pub fn router_http(host: &Host, method: &str, path: &str) -> Result<Option<String>> {
    let url = format!("http://127.0.0.1:6784{path}");
    let out = host
        .cmd("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
            &url,
        ])
        .output()?;
    let text = out.stdout;
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    match code.trim() {
        "404" => Ok(None),
        c if c.starts_with('2') => Ok(Some(body.to_owned())),
        c => bail!("{method} {path}: HTTP {c}: {body}"),
    }
}
