//! `weave` against real `weave-router` processes (Bridge mode) in netlab
//! hosts: status pages in Weave's format, report, connect/forget,
//! connect --replace, expose/ps/hide, rmpeer of a stopped peer, and
//! reset. Needs root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use weave_tests::{Host, Lab, Process, wait_for};

const WEAVE: &str = env!("CARGO_BIN_EXE_weave");

/// The weave-router of this build (built if missing), or
/// `WEAVE_ROUTER_BIN`.
fn router_bin() -> Result<PathBuf> {
    if let Ok(bin) = std::env::var("WEAVE_ROUTER_BIN") {
        return Ok(bin.into());
    }
    let dir = Path::new(WEAVE).parent().context("weave's directory")?;
    let bin = dir.join("weave-router");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "weave-router", "--bin", "weave-router"])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .context("building weave-router")?;
        ensure!(status.success(), "building weave-router failed ({status})");
    }
    Ok(bin)
}

fn start(router: &Path, host: &Host, peers: &[&Host]) -> Result<Process> {
    let db = format!(
        "/tmp/netns-cli-{}-{}/weave",
        std::process::id(),
        host.netns()
    );
    let mut argv: Vec<String> = vec![
        router.display().to_string(),
        format!("--name=00:00:00:00:00:{:02x}", host.index() + 1),
        format!("--nickname=h{}", host.index()),
        format!("--db-prefix={db}"),
        "--no-fastdp".into(),
        "--ipalloc-init=consensus=2".into(),
    ];
    argv.extend(peers.iter().map(|p| p.underlay_ip().to_string()));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    host.spawn("router", &argv)
}

/// `weave args…` on `host`: stdout, failing unless it exits 0.
fn weave(host: &Host, args: &[&str]) -> Result<String> {
    let mut argv = vec![WEAVE, "--local"];
    argv.extend(args);
    Ok(host.run(&argv)?.stdout)
}

fn established(host: &Host) -> Result<usize> {
    let text = weave(host, &["status", "connections"])?;
    Ok(text.lines().filter(|l| l.contains("established")).count())
}

#[test]
fn netns_cli_against_real_routers() -> Result<()> {
    weave_tests::require_root()?;
    let router = router_bin()?;
    let lab = Lab::new(3)?;
    let (h0, h1, h2) = (lab.host(0), lab.host(1), lab.host(2));

    // No router yet: a clear error, non-zero exit.
    let out = h0.cmd(WEAVE).args(["status"]).output()?;
    ensure!(!out.status.success(), "status without a router succeeded");
    ensure!(out.stderr.contains("not running"), "{}", out.stderr);

    let mut r0 = start(&router, h0, &[h1])?;
    let r1 = start(&router, h1, &[h0])?;
    let mut r2 = start(&router, h2, &[])?;
    let result = (|| -> Result<()> {
        wait_for(Duration::from_secs(30), "h0 and h1 to connect", || {
            weave(h0, &["status"]).map(|s| s.contains("Connections: 1 (1 established)"))
        })?;
        let status = weave(h0, &["status"])?;
        for line in [
            "        Service: router",
            "           Name: 00:00:00:00:00:01(h0)",
            "        Targets: 1",
            "        Service: ipam",
        ] {
            ensure!(status.contains(line), "{line:?} missing from:\n{status}");
        }
        let peers = weave(h0, &["status", "peers"])?;
        ensure!(
            peers.contains("00:00:00:00:00:01(h0)") && peers.contains("00:00:00:00:00:02(h1)"),
            "{peers}"
        );
        let targets = weave(h0, &["status", "targets"])?;
        ensure!(targets.trim() == h1.underlay_ip().to_string(), "{targets}");
        let conns = weave(h0, &["status", "connections"])?;
        ensure!(
            // Both dialled; either direction may be the one kept.
            conns.lines().any(|l| {
                l.contains(&format!("{}:", h1.underlay_ip()))
                    && l.contains("established")
                    && l.contains("00:00:00:00:00:02(h1)")
            }),
            "{conns}"
        );
        let report: serde_json::Value = serde_json::from_str(&weave(h0, &["report"])?)?;
        ensure!(report["Router"]["Name"] == "00:00:00:00:00:01", "{report}");

        // connect adds h2; forget drops it from the targets.
        weave(h0, &["connect", &h2.underlay_ip().to_string()])?;
        wait_for(Duration::from_secs(30), "h0 to connect to h2", || {
            Ok(established(h0)? == 2)
        })?;
        weave(h0, &["forget", &h2.underlay_ip().to_string()])?;
        let targets = weave(h0, &["status", "targets"])?;
        ensure!(
            !targets.contains(&h2.underlay_ip().to_string()),
            "{targets}"
        );
        // connect --replace: the targets become exactly the list given.
        weave(h1, &["connect", "--replace", &h2.underlay_ip().to_string()])?;
        let targets = weave(h1, &["status", "targets"])?;
        ensure!(targets.trim() == h2.underlay_ip().to_string(), "{targets}");

        // expose / ps / hide.
        // Printed as Weave did: the address alone.
        let ip = weave(h0, &["expose"])?.trim().to_string();
        let addr: std::net::Ipv4Addr = ip.parse().with_context(|| ip.clone())?;
        ensure!(
            "10.32.0.0/12".parse::<ipnet::Ipv4Net>()?.contains(&addr),
            "{ip}"
        );
        let exposed = format!("{ip}/12");
        let addrs = h0
            .run(&["ip", "-o", "-4", "addr", "show", "dev", "weave"])?
            .stdout;
        ensure!(addrs.contains(&exposed), "{addrs}");
        let ps = weave(h0, &["ps"])?;
        let bridge_mac = h0.run(&["cat", "/sys/class/net/weave/address"])?.stdout;
        ensure!(
            ps.contains(&format!("weave:expose {} {exposed}", bridge_mac.trim())),
            "{ps}"
        );
        let hidden = weave(h0, &["hide"])?;
        ensure!(hidden.trim() == ip, "{hidden}");
        let addrs = h0
            .run(&["ip", "-o", "-4", "addr", "show", "dev", "weave"])?
            .stdout;
        ensure!(!addrs.contains(&exposed), "{addrs}");
        ensure!(!weave(h0, &["ps"])?.contains("weave:expose"));

        // h2 owns part of the ring once it allocated; stop it and rmpeer it.
        wait_for(Duration::from_secs(30), "h2 to allocate", || {
            Ok(weave(h2, &["expose"]).is_ok())
        })?;
        r2.stop(Duration::from_secs(5))?;
        let out = weave(h0, &["rmpeer", "00:00:00:00:00:03"])?;
        ensure!(
            out.contains("IPs taken over from 00:00:00:00:00:03"),
            "{out}"
        );
        let ipam = weave(h0, &["status", "ipam"])?;
        ensure!(!ipam.contains("00:00:00:00:00:03"), "{ipam}");

        // reset on h2 (router stopped): --force goes on without it.
        let out = h2.cmd(WEAVE).args(["reset"]).output()?;
        ensure!(
            !out.status.success(),
            "reset without router and without --force"
        );
        let router_text = router.display().to_string();
        weave(h2, &["reset", "--force", "--router", &router_text])?;
        if h2.run(&["ip", "link", "show", "weave"]).is_ok() {
            bail!("reset left the weave bridge on h2");
        }
        Ok(())
    })();
    let logs = || {
        [&r0, &r1]
            .iter()
            .map(|r| r.log())
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    if let Err(error) = result {
        let text = logs();
        let tail: Vec<&str> = text.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(error.context(tail.join("\n")));
    }
    r0.stop(Duration::from_secs(5))?;
    Ok(())
}
