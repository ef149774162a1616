//! Helpers shared by the tests that run real `weave-router` processes in
//! netlab hosts.

#![allow(dead_code)]

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use weave_tests::{Host, Process};

pub const ROUTER: &str = env!("CARGO_BIN_EXE_weave-router");
pub const SETTLE: Duration = Duration::from_secs(30);

/// Starts a router on `host` named `00:00:00:00:00:0<index+1>`.
pub fn start(host: &Host, extra: &[&str], peers: &[&Host]) -> Result<Process> {
    let name = format!("00:00:00:00:00:{:02x}", host.index() + 1);
    let nickname = format!("h{}", host.index());
    let db = format!(
        "/tmp/netns-mesh-{}-{}/weave",
        std::process::id(),
        host.netns()
    );
    let mut argv: Vec<String> = vec![
        ROUTER.into(),
        "--name".into(),
        name,
        "--nickname".into(),
        nickname,
        "--db-prefix".into(),
        db,
        "--log-level".into(),
        "debug".into(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    argv.extend(peers.iter().map(|peer| peer.underlay_ip().to_string()));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    host.spawn("router", &argv)
}

pub fn http(host: &Host, method: &str, path: &str, data: &[&str]) -> Result<String> {
    let url = format!("http://127.0.0.1:6784{path}");
    let mut argv = vec!["curl", "-sS", "--fail-with-body", "-X", method, &url];
    for d in data {
        argv.extend(["--data-urlencode", d]);
    }
    Ok(host.run(&argv)?.stdout)
}

pub fn report(host: &Host) -> Result<Value> {
    let text = http(host, "GET", "/report", &[])?;
    serde_json::from_str(&text).with_context(|| format!("report is not JSON: {text}"))
}

/// Names of the peers `host` knows, and how many established connections
/// its own entry lists.
pub fn view(host: &Host) -> Result<(Vec<String>, usize)> {
    let report = report(host)?;
    let me = report["Router"]["Name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let peers = report["Router"]["Peers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut names: Vec<String> = peers
        .iter()
        .filter_map(|p| p["Name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    let established = peers
        .iter()
        .find(|p| p["Name"] == me.as_str())
        .and_then(|p| p["Connections"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|c| c["Established"] == true)
        .count();
    Ok((names, established))
}

pub fn with_logs<T>(result: Result<T>, routers: &[&Process]) -> Result<T> {
    result.map_err(|error| {
        let logs: Vec<String> = routers
            .iter()
            .map(|r| format!("--- {} ---\n{}", r.description(), tail(&r.log(), 30)))
            .collect();
        error.context(logs.join("\n"))
    })
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs `weave-router reset` on `host` and checks that it removed the
/// `weave` bridge, which is then gone; returns reset's output.
pub fn reset_removes_bridge(host: &Host) -> Result<String> {
    let out = host.run(&[ROUTER, "reset"])?.stdout;
    anyhow::ensure!(out.contains("removed weave"), "{out}");
    anyhow::ensure!(
        host.run(&["ip", "link", "show", "weave"]).is_err(),
        "the weave bridge is still there after reset"
    );
    Ok(out)
}
