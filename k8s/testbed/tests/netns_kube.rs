//! Two netlab hosts, each with containerd, weave-router (Bridge mode) and
//! the test kubelet; four Pods created on the API double. containerd's CRI
//! runs the weave-net plugin, each pod gets a 10.32.x address in
//! `status.podIP`, pods on different hosts reach each other, the K8S_POD_*
//! CNI_ARGS reach the plugin, a containerd restart leaves the pods
//! working, and deleting a Pod frees its address in the router's IPAM.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command as StdCommand;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use weave_k8s_apiserver::{ApiServer, Config, listen_in_netns};
use weave_k8s_testbed::image::build_pause_image;
use weave_k8s_testbed::node::{Binaries, KubeNode, router_http};
use weave_tests::{Lab, require_root, wait_for};

/// The hub's address on the underlay, where the API double listens.
const API_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 254);

fn binaries() -> Result<Binaries> {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let status = StdCommand::new(env!("CARGO"))
        .args(["build", "-p", "weave-router", "-p", "weave-cni", "--bins"])
        .current_dir(&root)
        .status()
        .context("cargo build")?;
    if !status.success() {
        bail!("building weave-router and the plugins failed");
    }
    let kubelet = PathBuf::from(env!("CARGO_BIN_EXE_weave-test-kubelet"));
    let dir = kubelet
        .parent()
        .context("kubelet has no directory")?
        .to_path_buf();
    Ok(Binaries {
        router: dir.join("weave-router"),
        plugins: dir.clone(),
        kubelet,
    })
}

fn pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "kube-test"}},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "weave.test/pause:1"}]},
    }))
    .expect("a valid pod")
}

#[test]
fn netns_kube_pods_through_containerd_and_weave() -> Result<()> {
    if let Err(e) = require_root() {
        eprintln!("SKIPPED: {e}");
        return Ok(());
    }
    let started = Instant::now();
    let bins = binaries()?;
    let lab = Lab::new(2)?;
    lab.run_in(
        lab.hub_netns(),
        &[
            "ip",
            "addr",
            "add",
            &format!("{API_IP}/24"),
            "dev",
            "underlay",
        ],
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let _enter = rt.enter();
    let server = ApiServer::serve(
        vec![
            std::net::TcpListener::bind("127.0.0.1:0")?,
            listen_in_netns(lab.hub_netns(), SocketAddr::from((API_IP, 0)))?,
        ],
        Config::default(),
    )?;
    let api_for_hosts = format!("http://{}", server.addrs()[1]);
    let client = kube::Client::try_from(kube::Config::new(server.url().parse()?))?;
    let pause = build_pause_image(lab.dir())?;
    let peers: Vec<Ipv4Addr> = lab.hosts().iter().map(|h| h.underlay_ip()).collect();
    let mut nodes = Vec::new();
    for host in lab.hosts() {
        nodes.push(KubeNode::start(
            &lab,
            host,
            &bins,
            &api_for_hosts,
            &pause,
            &peers,
        )?);
    }
    eprintln!("nodes up after {:?}", started.elapsed());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let names = ["p0", "p1", "p2", "p3"];
    for (i, name) in names.iter().enumerate() {
        rt.block_on(pods.create(
            &PostParams::default(),
            &pod(name, &format!("node{}", i % 2)),
        ))?;
    }
    // Every pod gets an address from the weave range in its status.
    let mut ips = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut ip = String::new();
        wait_for(Duration::from_secs(120), "the pod's status.podIP", || {
            let p = rt.block_on(pods.get(name))?;
            ip = p.status.and_then(|s| s.pod_ip).unwrap_or_default();
            Ok(!ip.is_empty())
        })
        .with_context(|| nodes[i % 2].kubelet_log())?;
        let addr: Ipv4Addr = ip.parse()?;
        assert!(
            "10.32.0.0/12".parse::<ipnet::Ipv4Net>()?.contains(&addr),
            "{name} got {addr}, outside 10.32.0.0/12"
        );
        ips.push(addr);
    }
    eprintln!("pods have addresses after {:?}: {ips:?}", started.elapsed());
    let sandbox = |nodes: &[KubeNode], i: usize| -> Result<(String, i32)> {
        let uid = rt
            .block_on(pods.get(names[i]))?
            .metadata
            .uid
            .unwrap_or_default();
        nodes[i % 2].sandbox_of(&uid)?.context("no sandbox")
    };
    let ping_all = |nodes: &[KubeNode], what: &str| -> Result<()> {
        for from in 0..names.len() {
            let (_, pid) = sandbox(nodes, from)?;
            for to in 0..names.len() {
                if from % 2 == to % 2 {
                    continue;
                }
                let target = ips[to].to_string();
                wait_for(
                    Duration::from_secs(30),
                    &format!("{what}: {} reaches {}", names[from], names[to]),
                    || {
                        let out = weave_tests::Command::new("nsenter")
                            .args(["-t", &pid.to_string(), "-n", "ping", "-c1", "-W1", &target])
                            .output()?;
                        Ok(out.status.success())
                    },
                )?;
            }
        }
        Ok(())
    };
    ping_all(&nodes, "first")?;
    eprintln!("cross-host pings after {:?}", started.elapsed());

    // The router holds each address under the sandbox id, and libcni's
    // cache shows containerd passed the K8S_POD_* CNI_ARGS.
    for i in 0..names.len() {
        let (id, _) = sandbox(&nodes, i)?;
        let owned = router_http(lab.host(i % 2), "GET", &format!("/ip/{id}"))?;
        assert_eq!(
            owned
                .as_deref()
                .map(|s| s.split('/').next().unwrap_or_default()),
            Some(ips[i].to_string().as_str())
        );
        let cache = std::fs::read_to_string(format!("/var/lib/cni/results/weave-{id}-eth0"))
            .context("libcni's cached result")?;
        for arg in [
            format!("K8S_POD_NAME\",\"{}", names[i]),
            "K8S_POD_NAMESPACE\",\"default".into(),
            format!("K8S_POD_INFRA_CONTAINER_ID\",\"{id}"),
        ] {
            assert!(cache.contains(&arg), "{arg} missing from {cache}");
        }
    }

    // containerd restarted with pods running leaves them working.
    let host0 = lab.host(0);
    nodes[0].restart_containerd(host0)?;
    ping_all(&nodes, "after a containerd restart")?;
    let (id0, _) = sandbox(&nodes, 0)?;
    eprintln!("containerd restart checked after {:?}", started.elapsed());

    // Deleting a Pod removes its sandbox and frees its address.
    rt.block_on(pods.delete("p0", &DeleteParams::default()))?;
    wait_for(
        Duration::from_secs(60),
        "p0's address freed in the IPAM",
        || Ok(router_http(host0, "GET", &format!("/ip/{id0}"))?.is_none()),
    )
    .with_context(|| nodes[0].kubelet_log())?;
    let uid_gone = nodes[0].sandbox_of("none")?;
    assert!(uid_gone.is_none());
    assert!(!std::path::Path::new(&format!("/var/lib/cni/results/weave-{id0}-eth0")).exists());
    eprintln!("done after {:?}", started.elapsed());
    drop(nodes);
    drop(server);
    Ok(())
}
