//! `expose` and the host rules with a real `weave-router` (Bridge mode) in
//! a netlab host, once per iptables variant: the router finds the variant
//! holding the host's rules (seeded here, with a Docker-style FORWARD
//! policy of DROP), puts the FORWARD block and the nat chain there, and
//! `POST /expose/{ip}/{prefix}` gives the bridge the address: the host
//! reaches a container, and the container reaches another host's underlay
//! address masqueraded as its host. After a reload of the tables without
//! our rules (a firewall service restarting) they come back within the
//! canary interval. A restart keeps one copy of every rule,
//! `DELETE` hides the subnet again, bad requests get a 400, and
//! `weave-router reset` removes the rules and the address. Needs root.

mod common;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use weave_router::net::firewall::iptables::Variant;
use weave_tests::{Host, Lab, wait_for};

use common::{ROUTER, reset_removes_bridge, start, with_logs};

const EXPOSED: &str = "10.32.0.1/12";
const CONTAINER_IP: &str = "10.32.0.5";
const SERVER_PORT: &str = "7001";

/// `method path` on the router's API: the status code and the body.
fn call(host: &Host, method: &str, path: &str) -> Result<(u16, String)> {
    let url = format!("http://127.0.0.1:6784{path}");
    let out = host
        .run(&["curl", "-sS", "-X", method, "-w", "\n%{http_code}", &url])?
        .stdout;
    let (body, code) = out.rsplit_once('\n').context("no status line")?;
    Ok((code.trim().parse()?, body.to_string()))
}

fn ipt(variant: Variant) -> String {
    format!("iptables-{}", variant.suffix())
}

fn save(host: &Host, variant: Variant) -> Result<String> {
    Ok(host.run(&[&format!("{}-save", ipt(variant))])?.stdout)
}

/// How many rule lines of `save` are exactly `rule`.
fn count(save: &str, rule: &str) -> usize {
    save.lines().filter(|l| *l == rule).count()
}

fn other(variant: Variant) -> Variant {
    match variant {
        Variant::Legacy => Variant::Nft,
        Variant::Nft => Variant::Legacy,
    }
}

/// The rules `expose` and the start-up must leave, once each.
const HOST_RULES: [&str; 5] = [
    "-A FORWARD -i weave -o weave -j ACCEPT",
    "-A FORWARD -o weave -j WEAVE-EXPOSE",
    "-A FORWARD -i weave ! -o weave -j ACCEPT",
    "-A FORWARD -o weave -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    "-A POSTROUTING -j WEAVE",
];
const EXPOSE_RULES: [&str; 3] = [
    "-A WEAVE -s 10.32.0.0/12 ! -d 10.32.0.0/12 -j MASQUERADE",
    "-A WEAVE ! -s 10.32.0.0/12 -d 10.32.0.0/12 -j MASQUERADE",
    "-A WEAVE-EXPOSE -d 10.32.0.0/12 -j ACCEPT",
];

/// Every rule of `rules` is in `variant`'s listing exactly `times` times.
fn rules_present(host: &Host, variant: Variant, rules: &[&str], times: usize) -> Result<()> {
    let listing = save(host, variant)?;
    for rule in rules {
        ensure!(
            count(&listing, rule) == times,
            "{variant}: {rule:?} is there {} times, not {times}:\n{listing}",
            count(&listing, rule)
        );
    }
    Ok(())
}

/// A "container": a namespace whose eth0 is on the host's weave bridge,
/// with its default route through the exposed address.
fn attach(lab: &Lab, host: &Host) -> Result<String> {
    wait_for(Duration::from_secs(60), "the weave bridge", || {
        Ok(host.run(&["ip", "link", "show", "weave"]).is_ok())
    })?;
    let netns = lab.add_netns("c0")?;
    lab.connect(&netns, "eth0", host.netns(), "vc0")?;
    host.run(&["ip", "link", "set", "vc0", "master", "weave", "up"])?;
    for argv in [
        vec!["ip", "addr", "add", "10.32.0.5/12", "dev", "eth0"],
        vec!["ip", "link", "set", "eth0", "up"],
        vec!["ip", "link", "set", "lo", "up"],
        vec!["ip", "route", "add", "default", "via", "10.32.0.1"],
    ] {
        lab.run_in(&netns, &argv)?;
    }
    Ok(netns)
}

/// The source address `server_host` sees for a TCP connection from the
/// container.
fn source_seen(lab: &Lab, container: &str, server_host: &Host) -> Result<String> {
    let server = server_host.spawn(
        "peer-server",
        &[
            "python3",
            "-c",
            "import socket\n\
             s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             s.bind(('0.0.0.0',7001));s.listen(1)\n\
             c,a=s.accept();print('peer',a[0],flush=True)\n",
        ],
    )?;
    wait_for(Duration::from_secs(60), "the server to listen", || {
        Ok(server_host
            .run(&["ss", "-ltn", "sport = :7001"])?
            .stdout
            .contains(SERVER_PORT))
    })?;
    let client = format!(
        "import socket\nsocket.create_connection(('{}',{SERVER_PORT}),timeout=30).close()\n",
        server_host.underlay_ip()
    );
    lab.run_in(container, &["python3", "-c", &client])?;
    let mut seen = String::new();
    wait_for(
        Duration::from_secs(60),
        "the server to see the peer",
        || {
            seen = server
                .log()
                .lines()
                .find_map(|l| l.strip_prefix("peer ").map(str::to_string))
                .unwrap_or_default();
            Ok(!seen.is_empty())
        },
    )?;
    Ok(seen)
}

/// Waits (minutes: iptables is slow in an emulated VM) until the router's
/// host rules are installed; returns the `Firewall` entry of `/report`.
fn installed(host: &Host) -> Result<serde_json::Value> {
    let mut firewall = serde_json::Value::Null;
    wait_for(Duration::from_secs(180), "the host rules", || {
        firewall = match call(host, "GET", "/report") {
            Ok((200, body)) => {
                serde_json::from_str::<serde_json::Value>(&body)?["Firewall"].clone()
            }
            _ => return Ok(false),
        };
        Ok(firewall["State"] != "installing")
    })?;
    ensure!(firewall["State"] == "installed", "{firewall}");
    Ok(firewall)
}

fn bridge_addresses(host: &Host) -> Result<String> {
    Ok(host
        .run(&["ip", "-4", "-o", "addr", "show", "dev", "weave"])?
        .stdout)
}

fn expose_in(variant: Variant) -> Result<()> {
    let lab = Lab::new(2)?;
    let (host, far) = (lab.host(0), lab.host(1));
    // The host's own rules, Docker style, in `variant` only.
    let cmd = ipt(variant);
    host.accept_input_ports(&cmd, &[9001, 9002, 9003])?;
    host.run(&[&cmd, "-P", "FORWARD", "DROP"])?;
    host.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;

    let mut router = start(host, &["--no-fastdp"], &[])?;
    let container = with_logs(attach(&lab, host), &[&router])?;
    let checked = (|| -> Result<()> {
        // The variant, and why, in the log and the report.
        let seeded = match variant {
            Variant::Legacy => "3 legacy rules, 0 nft rules",
            Variant::Nft => "0 legacy rules, 3 nft rules",
        };
        let firewall = installed(host)?;
        ensure!(
            firewall["Variant"] == variant.to_string().as_str(),
            "{firewall}"
        );
        ensure!(
            firewall["Reason"].as_str().is_some_and(|r| r == seeded),
            "{firewall}"
        );
        ensure!(firewall["Error"].is_null(), "{firewall}");
        let log = router.log();
        ensure!(
            log.contains(&format!("host firewall rules go in {variant}")),
            "the log does not name the variant"
        );
        rules_present(host, variant, &HOST_RULES, 1)?;
        rules_present(host, variant, &EXPOSE_RULES, 0)?;
        let untouched = save(host, other(variant))?;
        ensure!(!untouched.contains("WEAVE"), "{untouched}");

        // Before expose the host has no way to the container.
        ensure!(
            !host
                .cmd("ping")
                .args(["-c1", "-W1", CONTAINER_IP])
                .output()?
                .status
                .success(),
            "the host reached the container before expose"
        );

        // Bad requests: 400 with a reason; hiding what is not there: 404.
        for (path, says) in [
            ("/expose/10.32.0.300/12", "not an IPv4 address"),
            ("/expose/10.32.0.1/40", "prefix length"),
            ("/expose/10.32.0.0/12", "network address"),
            ("/expose/10.32.0.1/12?skipNAT=perhaps", "skipNAT"),
        ] {
            let (code, body) = call(host, "POST", path)?;
            ensure!(code == 400 && body.contains(says), "{path}: {code} {body}");
        }
        let (code, body) = call(host, "DELETE", "/expose/10.32.0.9/12")?;
        ensure!(code == 404 && body.contains("not exposed"), "{code} {body}");

        let (code, body) = call(host, "POST", "/expose/10.32.0.1/12")?;
        ensure!(code == 204, "expose: {code} {body}");
        // Twice is harmless.
        let (code, body) = call(host, "POST", "/expose/10.32.0.1/12")?;
        ensure!(code == 204, "expose again: {code} {body}");
        ensure!(bridge_addresses(host)?.contains(EXPOSED));
        rules_present(host, variant, &HOST_RULES, 1)?;
        rules_present(host, variant, &EXPOSE_RULES, 1)?;
        wait_for(
            Duration::from_secs(60),
            "the host to ping the container",
            || {
                Ok(host
                    .cmd("ping")
                    .args(["-c1", "-W1", CONTAINER_IP])
                    .output()?
                    .status
                    .success())
            },
        )?;
        // Out through the DROP policy, as the host's address.
        let seen = source_seen(&lab, &container, far)?;
        ensure!(
            seen == host.underlay_ip().to_string(),
            "{far:?} saw {seen}, not the host's {}",
            host.underlay_ip()
        );

        // A firewall service reloads the tables without our rules: the
        // canary goes with them, and the router puts everything back.
        let reload = format!("{0}-save | grep -vi weave | {0}-restore", ipt(variant));
        host.run(&["sh", "-c", &reload])?;
        ensure!(
            !save(host, variant)?.contains("WEAVE"),
            "the reload kept ours"
        );
        // The log line comes once everything is back.
        wait_for(Duration::from_secs(120), "the rules to come back", || {
            Ok(router.log().contains("exposed again after the flush"))
        })?;
        rules_present(host, variant, &HOST_RULES, 1)?;
        rules_present(host, variant, &EXPOSE_RULES, 1)?;
        let listing = save(host, variant)?;
        ensure!(listing.contains("--dport 9001 -j ACCEPT"), "{listing}");
        Ok(())
    })();
    with_logs(checked, &[&router])?;

    // A restart exposes the bridge's address again, with one copy of each
    // rule.
    router.stop(Duration::from_secs(10))?;
    let mut router = start(host, &["--no-fastdp"], &[])?;
    let checked = (|| -> Result<()> {
        installed(host)?;
        ensure!(
            router.log().contains("exposed again"),
            "no re-expose logged"
        );
        rules_present(host, variant, &HOST_RULES, 1)?;
        rules_present(host, variant, &EXPOSE_RULES, 1)?;

        // Hide: the address and the subnet's rules go, the host block stays.
        let (code, body) = call(host, "DELETE", "/expose/10.32.0.1/12")?;
        ensure!(code == 204, "hide: {code} {body}");
        ensure!(!bridge_addresses(host)?.contains(EXPOSED));
        rules_present(host, variant, &EXPOSE_RULES, 0)?;
        rules_present(host, variant, &HOST_RULES, 1)?;
        let (code, _) = call(host, "DELETE", "/expose/10.32.0.1/12")?;
        ensure!(code == 404, "hide again: {code}");

        // Without masquerading: accepted, not translated.
        let (code, body) = call(host, "POST", "/expose/10.32.0.1/12?skipNAT=true")?;
        ensure!(code == 204, "expose skipNAT: {code} {body}");
        rules_present(host, variant, &EXPOSE_RULES[2..], 1)?;
        rules_present(host, variant, &EXPOSE_RULES[..2], 0)?;
        Ok(())
    })();
    with_logs(checked, &[&router])?;
    router.stop(Duration::from_secs(10))?;

    // reset: no rule or chain of ours in either variant, the host's stay,
    // and the bridge (with its address) is gone.
    reset_removes_bridge(host)?;
    for v in Variant::ALL {
        let listing = save(host, v)?;
        ensure!(
            !listing.contains("WEAVE") && !listing.contains("weave"),
            "{v} after reset:\n{listing}"
        );
    }
    let listing = save(host, variant)?;
    ensure!(listing.contains("--dport 9002 -j ACCEPT"), "{listing}");
    ensure!(listing.contains(":FORWARD DROP"), "{listing}");
    Ok(())
}

#[test]
fn netns_expose_with_iptables_legacy() -> Result<()> {
    expose_in(Variant::Legacy)
}

#[test]
fn netns_expose_with_iptables_nft() -> Result<()> {
    expose_in(Variant::Nft)
}

/// `--iptables-backend` overrides the detection.
#[test]
fn netns_iptables_backend_flag_overrides_detection() -> Result<()> {
    let lab = Lab::new(1)?;
    let host = lab.host(0);
    host.accept_input_ports("iptables-nft", &[9001, 9002])?;
    let mut router = start(host, &["--no-fastdp", "--iptables-backend", "legacy"], &[])?;
    let checked = (|| -> Result<()> {
        let firewall = installed(host)?;
        ensure!(firewall["Variant"] == "iptables-legacy", "{firewall}");
        ensure!(
            firewall["Reason"] == "--iptables-backend iptables-legacy",
            "{firewall}"
        );
        rules_present(host, Variant::Legacy, &HOST_RULES, 1)?;
        ensure!(!save(host, Variant::Nft)?.contains("WEAVE"));
        Ok(())
    })();
    with_logs(checked, &[&router])?;
    router.stop(Duration::from_secs(10))?;
    host.run(&[ROUTER, "reset"])?;
    ensure!(!save(host, Variant::Legacy)?.contains("WEAVE"));
    Ok(())
}

/// `--docker-bridge`: Docker's bridge may not send to ours, its containers
/// may not reach the router's ports on its address; `reset` with the same
/// flag removes those rules too. A name that is no link stops the router
/// with a message naming the flag.
#[test]
fn netns_docker_bridge_rules() -> Result<()> {
    let lab = Lab::new(1)?;
    let host = lab.host(0);
    let mut router = start(host, &["--no-fastdp", "--docker-bridge", "docker0"], &[])?;
    let exited = router.wait_timeout(Duration::from_secs(120))?;
    let log = router.log();
    ensure!(
        exited.is_some_and(|s| !s.success()),
        "the router did not refuse: {log}"
    );
    ensure!(
        log.contains("--docker-bridge docker0: there is no such link"),
        "{log}"
    );

    host.run(&["ip", "link", "add", "docker0", "type", "bridge"])?;
    host.run(&["ip", "addr", "add", "172.17.0.1/16", "dev", "docker0"])?;
    let mut router = start(host, &["--no-fastdp", "--docker-bridge", "docker0"], &[])?;
    let variant = Variant::Nft;
    let checked = (|| -> Result<()> {
        ensure!(installed(host)?["Variant"] == variant.to_string().as_str());
        let listing = save(host, variant)?;
        for rule in [
            "-A FORWARD -i docker0 -o weave -j DROP",
            "-A INPUT -d 172.17.0.1/32 -i docker0 -p tcp -m tcp --dport 6783 -j DROP",
            "-A INPUT -d 172.17.0.1/32 -i docker0 -p udp -m udp --dport 6784 -j DROP",
            "-A INPUT -i docker0 -p udp -m udp --dport 53 -j ACCEPT",
        ] {
            ensure!(count(&listing, rule) == 1, "no {rule:?} in\n{listing}");
        }
        let forward: Vec<&str> = listing
            .lines()
            .filter(|l| l.starts_with("-A FORWARD"))
            .collect();
        ensure!(
            forward.first() == Some(&"-A FORWARD -i docker0 -o weave -j DROP"),
            "{forward:?}"
        );
        Ok(())
    })();
    with_logs(checked, &[&router])?;
    router.stop(Duration::from_secs(10))?;
    host.run(&[ROUTER, "--docker-bridge", "docker0", "reset"])?;
    let listing = save(host, variant)?;
    ensure!(
        !listing.contains("docker0") && !listing.contains("WEAVE"),
        "{listing}"
    );
    Ok(())
}
