//! Host-namespace tests of the host firewall rules, in both iptables
//! variants: idempotent application, the FORWARD block's place and order,
//! variant detection and teardown. iptables state is per network namespace,
//! so each test works inside a netlab host. They need root.

use std::net::Ipv4Addr;

use anyhow::Result;
use ipnet::Ipv4Net;
use weave_router::net::firewall::iptables::{IptablesError, Variant};
use weave_router::net::firewall::rules::{
    DockerBridge, FirewallConfig, Table, expose_rules, host_rules,
};
use weave_router::net::firewall::saved::Saved;
use weave_router::net::firewall::{CANARY_TABLES, Exposure, Firewall, detect, teardown_all};
use weave_router::net::netns::{in_netns, named};
use weave_tests::{Host, Lab};

/// Runs `work` inside `host`'s network namespace.
fn on<T, F>(host: &Host, work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    in_netns(&named(host.netns()), work)?
}

fn full_config() -> FirewallConfig {
    let mut config = FirewallConfig::new("weave");
    config.docker_bridge = Some(DockerBridge {
        name: "docker0".into(),
        ip: Ipv4Addr::new(172, 17, 0, 1),
    });
    config.control_port = Some(6784);
    config
}

fn save(host: &Host, variant: Variant) -> Result<String> {
    Ok(host
        .run(&[&format!("iptables-{}-save", variant.suffix())])?
        .stdout)
}

/// The rule lines of a save listing.
fn rule_lines(save: &str) -> Vec<String> {
    save.lines()
        .filter(|l| l.starts_with("-A "))
        .map(str::to_string)
        .collect()
}

fn forward_rules(host: &Host, variant: Variant) -> Result<Vec<String>> {
    Ok(host
        .run(&[&format!("iptables-{}", variant.suffix()), "-S", "FORWARD"])?
        .stdout
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(str::to_string)
        .collect())
}

const OUR_FORWARD: [&str; 5] = [
    "-A FORWARD -i docker0 -o weave -j DROP",
    "-A FORWARD -i weave -o weave -j ACCEPT",
    "-A FORWARD -o weave -j WEAVE-EXPOSE",
    "-A FORWARD -i weave ! -o weave -j ACCEPT",
    "-A FORWARD -o weave -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
];

#[test]
fn netns_rules_applied_twice_stay_single_in_both_variants() -> Result<()> {
    let lab = Lab::new(1)?;
    let host = lab.host(0);
    let subnet: Ipv4Net = "10.32.0.1/12".parse()?;
    for variant in Variant::ALL {
        let config = full_config();
        on(host, move || {
            let fw = Firewall::with_variant(variant)?;
            fw.setup(&config, &[subnet])?;
            Ok(())
        })?;
        let first = save(host, variant)?;
        let config = full_config();
        on(host, move || {
            let fw = Firewall::with_variant(variant)?;
            fw.setup(&config, &[subnet])?;
            fw.expose(&config, subnet, false)?;
            Ok(())
        })?;
        let second = save(host, variant)?;
        let rules = rule_lines(&second);
        assert_eq!(rule_lines(&first), rules, "{variant}");
        for rule in &rules {
            assert_eq!(
                rules.iter().filter(|r| *r == rule).count(),
                1,
                "{variant}: {rule} twice in\n{second}"
            );
        }
        for want in [
            "-A POSTROUTING -j WEAVE",
            "-A WEAVE -s 10.32.0.0/12 ! -d 10.32.0.0/12 -j MASQUERADE",
            "-A WEAVE-EXPOSE -d 10.32.0.0/12 -j ACCEPT",
            "-A INPUT -d 172.17.0.1/32 -i docker0 -p tcp -m tcp --dport 6783 -j DROP",
            "-A INPUT -i docker0 -p udp -m udp --dport 53 -j ACCEPT",
        ] {
            assert!(
                rules.iter().any(|r| r == want),
                "{variant}: no {want} in\n{second}"
            );
        }
        assert!(
            rules
                .iter()
                .any(|r| r.contains("--dport 6784") && r.contains("Block non-local access")),
            "{variant}: no control-port rule in\n{second}"
        );
        assert_eq!(forward_rules(host, variant)?, OUR_FORWARD, "{variant}");
    }
    Ok(())
}

#[test]
fn netns_forward_block_goes_on_top_and_is_restored_in_order() -> Result<()> {
    let lab = Lab::new(1)?;
    let host = lab.host(0);
    let variant = Variant::Nft;
    let ipt = format!("iptables-{}", variant.suffix());
    // Rules someone else put there first, Docker style.
    host.run(&[&ipt, "-N", "DOCKER-USER"])?;
    host.run(&[&ipt, "-A", "FORWARD", "-j", "DOCKER-USER"])?;
    host.run(&[&ipt, "-A", "FORWARD", "-j", "DROP"])?;
    let apply = || {
        on(host, move || {
            Firewall::with_variant(variant)?.setup(&full_config(), &[])?;
            Ok(())
        })
    };
    apply()?;
    let mut want: Vec<String> = OUR_FORWARD.iter().map(|s| s.to_string()).collect();
    want.push("-A FORWARD -j DOCKER-USER".into());
    want.push("-A FORWARD -j DROP".into());
    assert_eq!(forward_rules(host, variant)?, want);

    // Someone deletes one of ours; the next set-up puts the block back,
    // whole, in order, on top, with no copies.
    host.run(&[&ipt, "-D", "FORWARD", "-o", "weave", "-j", "WEAVE-EXPOSE"])?;
    apply()?;
    assert_eq!(forward_rules(host, variant)?, want);
    Ok(())
}

#[test]
fn netns_setup_forgets_subnets_no_longer_exposed() -> Result<()> {
    for variant in Variant::ALL {
        let lab = Lab::new(1)?;
        let host = lab.host(0);
        let a: Ipv4Net = "10.32.0.1/12".parse()?;
        let b: Ipv4Net = "10.64.0.1/16".parse()?;
        on(host, move || {
            let fw = Firewall::with_variant(variant)?;
            let config = FirewallConfig::new("weave");
            fw.setup(&config, &[a])?;
            fw.expose(&config, b, true)?;
            Ok(())
        })?;
        let before = save(host, variant)?;
        assert!(before.contains("10.32.0.0/12") && before.contains("10.64.0.0/16"));
        // skip_nat: b is accepted but not masqueraded.
        assert!(!before.contains("-s 10.64.0.0/16 ! -d 10.64.0.0/16 -j MASQUERADE"));

        on(host, move || {
            Firewall::with_variant(variant)?.setup(&FirewallConfig::new("weave"), &[b])?;
            Ok(())
        })?;
        let after = save(host, variant)?;
        assert!(!after.contains("10.32.0.0/12"), "{variant}: {after}");
        assert!(
            after.contains("-A WEAVE -s 10.64.0.0/16 ! -d 10.64.0.0/16 -j MASQUERADE"),
            "{variant}: {after}"
        );

        on(host, move || {
            Firewall::with_variant(variant)?.hide(&FirewallConfig::new("weave"), b)?;
            Ok(())
        })?;
        let hidden = save(host, variant)?;
        assert!(!hidden.contains("10.64.0.0/16"), "{variant}: {hidden}");
    }
    Ok(())
}

#[test]
fn netns_detection_follows_where_the_host_rules_are() -> Result<()> {
    let lab = Lab::new(2)?;
    let (legacy_host, nft_host) = (lab.host(0), lab.host(1));
    legacy_host.accept_input_ports("iptables-legacy", &[8000, 8001, 8002])?;
    nft_host.accept_input_ports("iptables-nft", &[8000, 8001, 8002])?;
    // Weave's own rules in the other variant do not outvote the host's.
    legacy_host.run(&["iptables-nft", "-t", "nat", "-N", "WEAVE"])?;
    for i in 0..5 {
        let net = format!("10.{i}.0.0/16");
        legacy_host.run(&[
            "iptables-nft",
            "-t",
            "nat",
            "-A",
            "WEAVE",
            "-s",
            &net,
            "-j",
            "MASQUERADE",
        ])?;
    }
    let picked = on(legacy_host, || Ok(detect::detect()))?.expect("iptables is installed");
    assert_eq!(picked.variant, Variant::Legacy, "{}", picked.reason);
    assert!(
        picked.reason.contains("3 legacy rules, 0 nft rules"),
        "{}",
        picked.reason
    );
    let fw = on(nft_host, || Ok(Firewall::detect()?.variant()))?;
    assert_eq!(fw, Variant::Nft);
    Ok(())
}

#[test]
fn netns_teardown_cleans_both_variants_and_leaves_other_rules() -> Result<()> {
    let lab = Lab::new(1)?;
    let host = lab.host(0);
    host.run(&["iptables-nft", "-A", "FORWARD", "-j", "DROP"])?;
    host.run(&[
        "iptables-legacy",
        "-A",
        "INPUT",
        "-p",
        "udp",
        "--dport",
        "9",
        "-j",
        "DROP",
    ])?;
    for variant in Variant::ALL {
        on(host, move || {
            let mut config = full_config();
            config.npc = false;
            Firewall::with_variant(variant)?.setup(&config, &["10.32.0.1/12".parse()?])?;
            Ok(())
        })?;
    }
    for _ in 0..2 {
        let cleaned = on(host, || Ok(teardown_all(&full_config())?))?;
        assert_eq!(cleaned, Variant::ALL);
        for variant in Variant::ALL {
            let out = save(host, variant)?;
            assert!(
                !out.contains("WEAVE") && !out.contains("weave"),
                "{variant}:\n{out}"
            );
            assert!(!out.contains("docker0"), "{variant}:\n{out}");
        }
    }
    assert!(save(host, Variant::Nft)?.contains("-A FORWARD -j DROP"));
    assert!(save(host, Variant::Legacy)?.contains("--dport 9 -j DROP"));
    Ok(())
}

/// The rule lines and chain declarations of a save listing (counters and
/// comments left out), in order.
fn state(save: &str) -> Vec<String> {
    save.lines()
        .filter(|l| l.starts_with("-A ") || l.starts_with('*') || l.starts_with(':'))
        .map(|l| l.split(" [").next().unwrap_or(l).to_string())
        .collect()
}

/// Drops every rule and user chain of every table, as a firewall service
/// reloading its own rules would.
fn reload(host: &Host, variant: Variant) -> Result<()> {
    let ipt = format!("iptables-{}", variant.suffix());
    for table in ["filter", "nat", "mangle"] {
        host.run(&[&ipt, "-t", table, "-F"])?;
        host.run(&[&ipt, "-t", table, "-X"])?;
    }
    Ok(())
}

#[test]
fn netns_setup_takes_two_processes_and_changes_nothing_when_repeated() -> Result<()> {
    let subnet: Ipv4Net = "10.32.0.1/12".parse()?;
    let other: Ipv4Net = "10.64.0.1/16".parse()?;
    let exposed = [
        Exposure {
            subnet,
            skip_nat: false,
        },
        Exposure {
            subnet: other,
            skip_nat: true,
        },
    ];
    for variant in Variant::ALL {
        let lab = Lab::new(1)?;
        let host = lab.host(0);
        let install = move || {
            on(host, move || {
                let fw = Firewall::with_variant(variant)?;
                let start = std::time::Instant::now();
                fw.install(&full_config(), &exposed, true)?;
                Ok((fw.iptables().spawned(), start.elapsed()))
            })
        };
        let (fresh, took) = install()?;
        eprintln!("{variant}: fresh install: {fresh} processes, {took:?}");
        assert!(fresh <= 8, "{variant}: {fresh} processes");
        let first = save(host, variant)?;
        let listed = Saved::parse(&first)?;
        for table in CANARY_TABLES {
            assert!(
                listed.has_chain(table, "WEAVE-CANARY"),
                "{variant}: no canary in {table}:\n{first}"
            );
        }
        let (again, took) = install()?;
        eprintln!("{variant}: repeated install: {again} processes, {took:?}");
        assert!(again <= fresh, "{variant}: {again} processes");
        assert_eq!(state(&save(host, variant)?), state(&first), "{variant}");

        // A reload drops everything; the next install puts it all back.
        reload(host, variant)?;
        install()?;
        assert_eq!(state(&save(host, variant)?), state(&first), "{variant}");
        let rules = rule_lines(&first);
        for rule in &rules {
            assert_eq!(rules.iter().filter(|r| *r == rule).count(), 1, "{rule}");
        }
        assert!(
            rules
                .iter()
                .any(|r| r == "-A WEAVE-EXPOSE -d 10.64.0.0/16 -j ACCEPT")
        );
        assert!(
            !first.contains("-s 10.64.0.0/16 ! -d 10.64.0.0/16"),
            "{first}"
        );
    }
    Ok(())
}

/// Our specs are spelled as iptables-save prints them, in both variants
/// and for every configuration: set-up compares them word by word.
#[test]
fn netns_specs_are_spelled_as_iptables_save_prints_them() -> Result<()> {
    let subnet: Ipv4Net = "10.32.0.1/12".parse()?;
    for variant in Variant::ALL {
        for npc in [false, true] {
            let lab = Lab::new(1)?;
            let host = lab.host(0);
            let mut config = full_config();
            config.npc = npc;
            let applied = config.clone();
            on(host, move || {
                Firewall::with_variant(variant)?.setup(&applied, &[subnet])?;
                Ok(())
            })?;
            let listing = save(host, variant)?;
            let saved = Saved::parse(&listing)?;
            let set = host_rules(&config);
            let mut wanted = set.appended.clone();
            wanted.extend(expose_rules(subnet, false, npc));
            for rule in &wanted {
                let found = saved.rules_of(rule.table, &rule.chain);
                assert_eq!(
                    found.iter().filter(|r| **r == rule.spec.as_slice()).count(),
                    1,
                    "{variant} npc={npc}: {rule} not once in\n{listing}"
                );
            }
            let forward = saved.rules_of(Table::Filter, "FORWARD");
            let top: Vec<&[String]> = set.forward_top.iter().map(Vec::as_slice).collect();
            assert_eq!(forward, top, "{variant} npc={npc}:\n{listing}");
        }
    }
    Ok(())
}

/// A refused restore names the failing line of its input.
#[test]
fn netns_failed_restore_names_the_line() -> Result<()> {
    let lab = Lab::new(1)?;
    let host = lab.host(0);
    for variant in Variant::ALL {
        let error = on(host, move || {
            let fw = Firewall::with_variant(variant)?;
            Ok(fw
                .iptables()
                .restore("*filter\n:WEAVE-X - [0:0]\n-A WEAVE-X -j NO-SUCH-CHAIN\nCOMMIT\n")
                .err())
        })?;
        match error {
            Some(IptablesError::Restore {
                line, input_line, ..
            }) => {
                // iptables-nft finds the missing chain at the table's COMMIT.
                let (want, text) = match variant {
                    Variant::Legacy => (3, "-A WEAVE-X -j NO-SUCH-CHAIN"),
                    Variant::Nft => (4, "COMMIT"),
                };
                assert_eq!(line, Some(want), "{variant}");
                assert_eq!(input_line.as_deref(), Some(text), "{variant}");
            }
            other => panic!("{variant}: {other:?}"),
        }
    }
    Ok(())
}
