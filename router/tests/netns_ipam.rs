//! IP allocation with real `weave-router` processes: concurrent
//! allocations over HTTP on three routers, addresses kept across a kill -9,
//! rmpeer of a stopped peer, and a claim of an address another peer owns.

use std::collections::BTreeSet;

use anyhow::{Context, Result, ensure};
use weave_tests::{Host, Lab, Process, wait_for};

mod common;
use common::{SETTLE, http, start, with_logs};

/// Starts three routers in a chain (1 → 0, 2 → 1) with consensus among 3.
fn three(lab: &Lab) -> Result<Vec<Process>> {
    let init = ["--ipalloc-init", "consensus=3"];
    Ok(vec![
        start(lab.host(0), &init, &[])?,
        start(lab.host(1), &init, &[lab.host(0)])?,
        start(lab.host(2), &init, &[lab.host(1)])?,
    ])
}

fn allocate(host: &Host, ident: &str) -> Result<String> {
    let out = http(host, "POST", &format!("/ip/{ident}"), &[])?;
    ensure!(out.contains('/'), "allocation of {ident} answered {out:?}");
    Ok(out.trim().to_string())
}

fn wait_for_api(lab: &Lab, routers: &[&Process]) -> Result<()> {
    with_logs(
        wait_for(SETTLE, "every router's HTTP API", || {
            Ok(lab
                .hosts()
                .iter()
                .all(|h| http(h, "GET", "/ipinfo/defaultsubnet", &[]).is_ok()))
        }),
        routers,
    )
}

#[test]
fn netns_ipam_concurrent_allocations_are_unique_and_survive_kill_9() -> Result<()> {
    let lab = Lab::new(3)?;
    let mut routers = three(&lab)?;
    let refs: Vec<&Process> = routers.iter().collect();
    wait_for_api(&lab, &refs)?;
    // Each router allocates for 8 containers at the same time as the others;
    // the first requests wait for consensus among the three.
    let results: Vec<Result<Vec<(usize, String, String)>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = lab
            .hosts()
            .iter()
            .map(|host| {
                scope.spawn(move || {
                    (0..8)
                        .map(|n| {
                            let ident = format!("c{}-{n}", host.index());
                            allocate(host, &ident).map(|addr| (host.index(), ident, addr))
                        })
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("thread panicked")))
            })
            .collect()
    });
    let mut all = Vec::new();
    for result in results {
        all.extend(with_logs(result, &refs)?);
    }
    let addresses: BTreeSet<&str> = all.iter().map(|(_, _, a)| a.as_str()).collect();
    ensure!(addresses.len() == 24, "duplicate addresses: {all:?}");
    for (_, _, addr) in &all {
        ensure!(addr.ends_with("/12") && addr.starts_with("10."), "{addr}");
    }
    let status = http(lab.host(0), "GET", "/status", &[])?;
    ensure!(status.contains("Status: ready"), "/status:\n{status}");
    let ranges = http(lab.host(0), "GET", "/status/ipam", &[])?;
    ensure!(
        ranges.lines().filter(|l| l.contains("IPs (")).count() == 3,
        "/status/ipam:\n{ranges}"
    );
    // The CIDR view: our share as aligned prefixes, one megaflow each.
    ensure!(
        ranges.contains("owned prefixes: 10."),
        "/status/ipam:\n{ranges}"
    );

    // kill -9 router 1 and start it again: every address it gave is kept.
    routers[1].kill()?;
    routers[1] = start(
        lab.host(1),
        &["--ipalloc-init", "consensus=3"],
        &[lab.host(0)],
    )?;
    let refs: Vec<&Process> = routers.iter().collect();
    with_logs(
        wait_for(SETTLE, "router 1 to answer again", || {
            Ok(http(lab.host(1), "GET", "/ipinfo/defaultsubnet", &[]).is_ok())
        }),
        &refs,
    )?;
    for (host, ident, addr) in all.iter().filter(|(h, _, _)| *h == 1) {
        let found = http(lab.host(*host), "GET", &format!("/ip/{ident}"), &[])?;
        ensure!(found.trim() == addr, "{ident} had {addr}, now {found:?}");
    }
    // A new allocation after the restart does not reuse any of them.
    let fresh = allocate(lab.host(1), "after-restart")?;
    ensure!(
        !addresses.contains(fresh.as_str()),
        "{fresh} handed out twice"
    );
    Ok(())
}

#[test]
fn netns_ipam_rmpeer_and_claim_transfer() -> Result<()> {
    let lab = Lab::new(3)?;
    let mut routers = three(&lab)?;
    let refs: Vec<&Process> = routers.iter().collect();
    wait_for_api(&lab, &refs)?;
    // Force consensus and learn the ring.
    let first = with_logs(allocate(lab.host(0), "first"), &refs)?;
    with_logs(
        wait_for(SETTLE, "every router to know the ring", || {
            let mut seen = Vec::new();
            for h in lab.hosts() {
                let text = http(h, "GET", "/status/ipam", &[])?;
                // The consensus may seed the ring among a quorum only.
                if !text.contains("IPs (") {
                    seen.push(format!("host {}:\n{text}", h.index()));
                }
            }
            if seen.is_empty() {
                Ok(true)
            } else {
                anyhow::bail!("{}", seen.join("\n"))
            }
        }),
        &refs,
    )?;

    // Claim on router 0 an address out of router 2's share: the owner
    // hands it over.
    let theirs = with_logs(allocate(lab.host(2), "probe"), &refs)?;
    http(lab.host(2), "DELETE", "/ip/probe", &[])?;
    let ip = theirs.split('/').next().context("address")?;
    http(lab.host(0), "PUT", &format!("/ip/claimed/{ip}/12"), &[])?;
    let found = http(lab.host(0), "GET", "/ip/claimed", &[])?;
    ensure!(
        found.trim() == theirs,
        "claimed {theirs}, lookup gives {found:?}"
    );
    ensure!(theirs != first);

    // Stop router 2 for good; rmpeer on router 0 takes its ranges.
    routers[2].kill()?;
    let out = http(lab.host(0), "DELETE", "/peer/00:00:00:00:00:03", &[])?;
    let taken: u64 = out
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("rmpeer answered {out:?}"))?;
    ensure!(taken > 0, "rmpeer took nothing: {out}");
    ensure!(
        out.contains("IPs taken over from 00:00:00:00:00:03"),
        "{out}"
    );
    let ranges = http(lab.host(0), "GET", "/status/ipam", &[])?;
    ensure!(
        !ranges.contains("00:00:00:00:00:03"),
        "still owns ranges:\n{ranges}"
    );
    // Bad input is a 400 with a message.
    let bad = lab
        .host(0)
        .cmd("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
        .arg("http://127.0.0.1:6784/ip/x/10.32.0.300/12")
        .output()?;
    ensure!(bad.stdout.trim() == "400", "bad claim gave {}", bad.stdout);
    Ok(())
}

/// `/status/ipam` is never an empty page: before any allocation it shows
/// the range and Weave's `idle` (consensus is deferred to the first
/// request), and while the first request waits for a quorum it shows
/// that it awaits consensus, with quorum and known peers, and what waits.
#[test]
fn netns_ipam_status_page_before_the_ring_exists() -> Result<()> {
    let lab = Lab::new(1)?;
    let host = lab.host(0);
    // Consensus among two, and the other never comes.
    let router = start(host, &["--ipalloc-init", "consensus=2"], &[])?;
    wait_for_api(&lab, &[&router])?;
    let idle = http(host, "GET", "/status/ipam", &[])?;
    ensure!(
        idle.contains("Status: idle") && idle.contains("Range: 10.32.0.0/12"),
        "/status/ipam before any request:\n{idle}"
    );
    let _waiting = host.spawn(
        "allocate",
        &[
            "curl",
            "-sS",
            "--max-time",
            "60",
            "-X",
            "POST",
            "http://127.0.0.1:6784/ip/first-0123456789",
        ],
    )?;
    let mut page = String::new();
    with_logs(
        wait_for(SETTLE, "/status/ipam to say it awaits consensus", || {
            page = http(host, "GET", "/status/ipam", &[])?;
            Ok(
                page.contains("Status: awaiting consensus (quorum: 2, known: 1)")
                    && page.contains("Range: 10.32.0.0/12")
                    && page.contains("Waiting: first-0123456789"),
            )
        }),
        &[&router],
    )
    .with_context(|| format!("/status/ipam:\n{page}"))?;
    Ok(())
}
