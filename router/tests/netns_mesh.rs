//! The mesh with real `weave-router` processes, one per network namespace
//! on a shared underlay: full mesh from a chain of targets, rerouting when
//! a peer dies (a square without discovery, and the middle of a line), a
//! wrong password refused, `/connect` and `/forget`.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use weave_tests::{Host, Lab, Process, wait_for};

mod common;
use common::{ROUTER, SETTLE, http, report, start, view, with_logs};

#[test]
fn netns_mesh_five_routers_form_a_full_mesh_from_a_chain() -> Result<()> {
    let lab = Lab::new(5)?;
    let mut routers = Vec::new();
    for i in 0..5 {
        let peers: Vec<&Host> = if i == 0 {
            vec![]
        } else {
            vec![lab.host(i - 1)]
        };
        routers.push(start(lab.host(i), &[], &peers)?);
    }
    let refs: Vec<&Process> = routers.iter().collect();
    with_logs(
        wait_for(
            SETTLE,
            "every router to see 5 peers and 4 connections",
            || {
                for host in lab.hosts() {
                    let (names, established) = view(host)?;
                    if names.len() != 5 || established != 4 {
                        return Ok(false);
                    }
                }
                Ok(true)
            },
        ),
        &refs,
    )?;
    // /status and /status/peers on every router list all five peers.
    for host in lab.hosts() {
        let status = http(host, "GET", "/status", &[])?;
        ensure!(status.contains("Peers: 5"), "/status:\n{status}");
        ensure!(
            status.contains("Connections: 4 (4 established)"),
            "/status:\n{status}"
        );
        let peers = http(host, "GET", "/status/peers", &[])?;
        for i in 0..5 {
            ensure!(
                peers.contains(&format!("00:00:00:00:00:{:02x}(h{i})", i + 1)),
                "/status/peers of h{}:\n{peers}",
                host.index()
            );
        }
    }
    Ok(())
}

/// The next hop `host` uses towards the peer named `dest`, from /report.
fn next_hop(host: &Host, dest: &str) -> Result<Option<String>> {
    let report = report(host)?;
    Ok(report["Router"]["UnicastRoutes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["Dest"] == dest)
        .and_then(|r| r["Via"].as_str().map(str::to_string)))
}

#[test]
fn netns_mesh_killing_the_middle_of_a_line_reroutes() -> Result<()> {
    // A line h0 <- h1 <- h2 <- h3 <- h4 (each given only its left
    // neighbour). Discovery adds the direct links; when the middle router
    // dies the others keep reaching each other directly and the dead one is
    // collected everywhere.
    let lab = Lab::new(5)?;
    let mut routers = Vec::new();
    for i in 0..5 {
        let peers: Vec<&Host> = if i == 0 {
            vec![]
        } else {
            vec![lab.host(i - 1)]
        };
        routers.push(start(lab.host(i), &[], &peers)?);
    }
    let (h0, h4) = ("00:00:00:00:00:01", "00:00:00:00:00:05");
    let refs: Vec<&Process> = routers.iter().collect();
    with_logs(
        wait_for(SETTLE, "the line to become a full mesh with routes", || {
            for host in lab.hosts() {
                if view(host)?.1 != 4 {
                    return Ok(false);
                }
            }
            // The far ends' entries (and so the route) may lag the
            // connection counts by a gossip.
            Ok(next_hop(lab.host(0), h4)?.is_some())
        }),
        &refs,
    )?;
    routers[2].kill()?;
    let refs: Vec<&Process> = routers.iter().collect();
    with_logs(
        wait_for(SETTLE, "the others to drop h2 and route directly", || {
            for i in [0, 1, 3, 4] {
                let (names, established) = view(lab.host(i))?;
                if names.len() != 4 || established != 3 {
                    return Ok(false);
                }
                if names.iter().any(|n| n == "00:00:00:00:00:03") {
                    return Ok(false);
                }
            }
            Ok(next_hop(lab.host(0), h4)?.as_deref() == Some(h4)
                && next_hop(lab.host(4), h0)?.as_deref() == Some(h0))
        }),
        &refs,
    )?;
    let status = http(lab.host(1), "GET", "/status", &[])?;
    ensure!(status.contains("Peers: 4"), "/status:\n{status}");
    Ok(())
}

#[test]
fn netns_mesh_routes_around_a_dead_peer() -> Result<()> {
    // A square without discovery: 0-1-2 and 0-3-2. Traffic from 0 to 2
    // goes through 1 or 3; kill that one and the route moves to the other.
    let lab = Lab::new(4)?;
    let no_discovery = ["--no-discovery"];
    let r0 = start(lab.host(0), &no_discovery, &[])?;
    let r1 = start(lab.host(1), &no_discovery, &[lab.host(0)])?;
    let r2 = start(lab.host(2), &no_discovery, &[lab.host(1), lab.host(3)])?;
    let r3 = start(lab.host(3), &no_discovery, &[lab.host(0)])?;
    let mut routers = [r0, r1, r2, r3];
    let via = |host: &Host| next_hop(host, "00:00:00:00:00:03");
    let refs: Vec<&Process> = routers.iter().collect();
    with_logs(
        wait_for(SETTLE, "host 0 to have a route to host 2", || {
            Ok(view(lab.host(0))?.0.len() == 4 && via(lab.host(0))?.is_some())
        }),
        &refs,
    )?;
    let first = via(lab.host(0))?.context("route")?;
    let (dead, other) = match first.as_str() {
        "00:00:00:00:00:02" => (1, "00:00:00:00:00:04"),
        "00:00:00:00:00:04" => (3, "00:00:00:00:00:02"),
        via => anyhow::bail!("unexpected next hop {via}"),
    };
    routers[dead].kill()?;
    let refs: Vec<&Process> = routers.iter().collect();
    with_logs(
        wait_for(SETTLE, "the route to move and the dead peer to go", || {
            let (names, _) = view(lab.host(0))?;
            Ok(via(lab.host(0))?.as_deref() == Some(other) && names.len() == 3)
        }),
        &refs,
    )?;
    Ok(())
}

#[test]
fn netns_mesh_wrong_password_is_refused_on_both_sides() -> Result<()> {
    let lab = Lab::new(2)?;
    let r0 = start(lab.host(0), &["--password", "right"], &[])?;
    let r1 = start(lab.host(1), &["--password", "wrong"], &[lab.host(0)])?;
    let refs = [&r0, &r1];
    with_logs(
        wait_for(SETTLE, "both logs to report the password mismatch", || {
            let needle = "passwords differ";
            Ok(r0.log().contains(needle) && r1.log().contains(needle))
        }),
        &refs,
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let (names, established) = view(lab.host(0))?;
    ensure!(
        names.len() == 1 && established == 0,
        "connected anyway: {names:?}"
    );
    Ok(())
}

#[test]
fn netns_mesh_connect_and_forget_over_http() -> Result<()> {
    let lab = Lab::new(2)?;
    let r0 = start(lab.host(0), &[], &[])?;
    let r1 = start(lab.host(1), &[], &[])?;
    let refs = [&r0, &r1];
    let target = lab.host(1).underlay_ip().to_string();
    with_logs(
        wait_for(SETTLE, "the HTTP API", || {
            Ok(http(lab.host(0), "GET", "/status", &[]).is_ok())
        }),
        &refs,
    )?;
    http(
        lab.host(0),
        "POST",
        "/connect",
        &[&format!("peer={target}")],
    )?;
    with_logs(
        wait_for(SETTLE, "the two routers to connect", || {
            Ok(view(lab.host(0))?.1 == 1)
        }),
        &refs,
    )?;
    let targets = http(lab.host(0), "GET", "/status/targets", &[])?;
    ensure!(targets.lines().any(|t| t == target), "targets: {targets:?}");
    // Both ends list each other.
    let peers = http(lab.host(1), "GET", "/status/peers", &[])?;
    ensure!(peers.contains("00:00:00:00:00:01(h0)"), "{peers}");
    http(lab.host(0), "POST", "/forget", &[&format!("peer={target}")])?;
    let targets = http(lab.host(0), "GET", "/status/targets", &[])?;
    ensure!(!targets.contains(&target), "still a target: {targets:?}");
    // As in Weave, forgetting a target leaves its live connection alone.
    ensure!(view(lab.host(0))?.1 == 1, "forget dropped the connection");
    // A malformed peer is a 400 with a message, not a crash.
    let bad = lab
        .host(0)
        .cmd("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args([
            "--data",
            "peer=bad:port:x:",
            "http://127.0.0.1:6784/connect",
        ])
        .output()?;
    ensure!(
        bad.stdout.trim() == "400",
        "malformed peer gave {}",
        bad.stdout
    );
    Ok(())
}

#[test]
fn netns_mesh_resume_reconnects_to_the_last_peers() -> Result<()> {
    let lab = Lab::new(2)?;
    let r0 = start(lab.host(0), &[], &[])?;
    let mut r1 = start(lab.host(1), &[], &[lab.host(0)])?;
    with_logs(
        wait_for(SETTLE, "the first connection", || {
            Ok(view(lab.host(1))?.1 == 1)
        }),
        &[&r0, &r1],
    )?;
    r1.stop(Duration::from_secs(5))?;
    // Same --db-prefix (start derives it from the namespace), no peers.
    let r1 = start(lab.host(1), &["--resume"], &[])?;
    with_logs(
        wait_for(SETTLE, "the resumed connection", || {
            Ok(view(lab.host(1))?.1 == 1)
        }),
        &[&r0, &r1],
    )?;
    let targets = http(lab.host(1), "GET", "/status/targets", &[])?;
    ensure!(
        targets.contains(&lab.host(0).underlay_ip().to_string()),
        "targets after --resume: {targets:?}"
    );
    // --resume with peers given is refused, as in Weave.
    let refused = lab
        .host(1)
        .cmd(ROUTER)
        .args(["--name", "00:00:00:00:00:09", "--resume", "10.9.9.9"])
        .output()?;
    ensure!(
        !refused.status.success(),
        "--resume with peers was accepted"
    );
    ensure!(refused.stderr.contains("--resume"), "{}", refused.stderr);
    Ok(())
}
