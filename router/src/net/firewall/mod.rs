//! Host firewall rules: FORWARD acceptance for the bridge, the WEAVE chains
//! and the masquerading of exposed subnets, as Weave 2.8.1 sets them.
//!
//! # Why iptables (in the host's variant) and not a native nftables table
//!
//! Netfilter runs every base chain hooked at FORWARD, of every table, in
//! both iptables variants and in native nftables. An ACCEPT only ends the
//! packet's walk through its own chain; a DROP anywhere is final. Docker (and
//! others) set the FORWARD policy of *their* table to DROP, so the only way to
//! let bridge traffic through is a rule in that same chain, ahead of the
//! drop. A native `inet weave` table could accept all it likes and the packet
//! would still die in Docker's chain. The rules must therefore be iptables
//! rules in whichever variant (legacy or nft) holds the host's other rules:
//! Weave's breakage on iptables-nft hosts (weave#3968) was exactly a router
//! writing into the other variant. [`detect`] picks the variant the way
//! Kubernetes' iptables-wrapper does. Keeping Weave's chains and rules also
//! means a Weave router and ours can replace each other on a host, and
//! either's `reset` cleans up after the other.
//!
//! Rule generation ([`rules`]) is pure; [`Firewall`] applies it
//! idempotently: the chains the router owns are rewritten whole, other
//! chains created when missing, rules in built-in chains appended only when
//! absent, the FORWARD block put back on top only when it is not there,
//! whole and in order.
//!
//! # A handful of processes
//!
//! Each iptables command is a process, and where iptables is slow (about a
//! second each in an emulated VM) a rule-by-rule set-up, a check and an
//! append per rule, took over half a minute. [`Firewall::install`] instead
//! reads every table with one `iptables-save`, works out from that listing
//! alone what must change ([`plan`]), and makes every change with one
//! `iptables-restore --noflush` in the same variant. Each table's part of
//! a restore is committed at once, so an owned chain is emptied and
//! refilled with no moment in between where it is empty, and chains and
//! rules not named in the input stay as they are. When everything is in
//! place already, the restore is skipped. A rule the listing cannot settle
//! (spelled differently by some iptables version) goes through the old
//! per-rule path, `iptables -C` then `-A`; so does everything when the
//! variant has no `iptables-restore`. Exposing and hiding one subnet at
//! run time stays per rule: a few rules, a few processes.
//!
//! The listing can be stale by the time the restore runs, when another
//! program changes the tables in between (the daemon serialises its own
//! changes). The restore deletes FORWARD rules by their spec, never by
//! position, so a rule added meanwhile by someone else is not hit; a rule
//! of ours deleted meanwhile makes the restore fail, reported as an error,
//! and the next set-up puts things right.

pub mod detect;
pub mod iptables;
pub mod plan;
pub mod rules;
pub mod saved;

use ipnet::Ipv4Net;

use self::iptables::{Iptables, IptablesError, Variant};
use self::rules::{FirewallConfig, Rule, Table, expose_rules, host_rules, teardown};
use self::saved::{Saved, SavedError};

/// Why the firewall could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// No iptables of either variant is installed.
    #[error("no iptables command found (neither iptables-legacy nor iptables-nft)")]
    NoIptables,
    /// An iptables command failed.
    #[error(transparent)]
    Iptables(#[from] IptablesError),
    /// The `iptables-save` listing could not be read.
    #[error("reading the {variant} listing: {source}")]
    Listing {
        /// The variant listed.
        variant: Variant,
        /// What is wrong with it.
        #[source]
        source: SavedError,
    },
}

/// A subnet to expose at set-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exposure {
    /// The bridge's address and prefix.
    pub subnet: Ipv4Net,
    /// Whether to leave the masquerading out.
    pub skip_nat: bool,
}

/// The router's host rules, in one iptables variant.
#[derive(Debug, Clone)]
pub struct Firewall {
    ipt: Iptables,
    reason: String,
}

impl Firewall {
    /// Picks the variant the host uses (in the calling thread's namespace).
    pub fn detect() -> Result<Firewall, FirewallError> {
        let choice = detect::detect().ok_or(FirewallError::NoIptables)?;
        Ok(Firewall {
            ipt: Iptables::new(choice.variant)?,
            reason: choice.reason,
        })
    }

    /// Uses `variant`.
    pub fn with_variant(variant: Variant) -> Result<Firewall, FirewallError> {
        Ok(Firewall {
            ipt: Iptables::new(variant)?,
            reason: "chosen by the caller".into(),
        })
    }

    /// The same firewall, with `reason` as the reason for its variant.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Firewall {
        self.reason = reason.into();
        self
    }

    /// The variant in use.
    pub fn variant(&self) -> Variant {
        self.ipt.variant()
    }

    /// Why that variant was chosen.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The iptables commands used.
    pub fn iptables(&self) -> &Iptables {
        &self.ipt
    }

    /// Sets the rules up at router start: empties the chains of exposed
    /// subnets, puts every rule in place, then exposes `exposed` again (the
    /// bridge's addresses, which survive a router restart), masqueraded.
    /// Running it again leaves one copy of everything. See
    /// [`install`](Self::install).
    pub fn setup(&self, config: &FirewallConfig, exposed: &[Ipv4Net]) -> Result<(), FirewallError> {
        let exposures: Vec<Exposure> = exposed
            .iter()
            .map(|&subnet| Exposure {
                subnet,
                skip_nat: false,
            })
            .collect();
        self.install(config, &exposures, false)
    }

    /// [`setup`](Self::setup) with the masquerading chosen per subnet, and,
    /// when `canaries`, the canary chains planted too (see
    /// [`plant_canaries`](Self::plant_canaries)). One `iptables-save` and at
    /// most one `iptables-restore` (see the module doc).
    pub fn install(
        &self,
        config: &FirewallConfig,
        exposed: &[Exposure],
        canaries: bool,
    ) -> Result<(), FirewallError> {
        if !self.ipt.can_restore() {
            self.setup_per_rule(config, exposed)?;
            if canaries {
                self.plant_canaries()?;
            }
            return Ok(());
        }
        let set = host_rules(config);
        let extra: Vec<Rule> = exposed
            .iter()
            .flat_map(|e| expose_rules(e.subnet, e.skip_nat, config.npc))
            .collect();
        let canary_chains: Vec<rules::Chain> = if canaries {
            CANARY_TABLES
                .iter()
                .map(|&t| rules::Chain::new(t, rules::CANARY_CHAIN))
                .collect()
        } else {
            Vec::new()
        };
        let listing = self.ipt.save(None)?;
        let saved = Saved::parse(&listing).map_err(|source| FirewallError::Listing {
            variant: self.variant(),
            source,
        })?;
        let plan = plan::plan(&set, &extra, &canary_chains, &saved);
        if !plan.input.is_empty() {
            self.ipt.restore(&plan.input)?;
        }
        for rule in &plan.unsure {
            self.ipt.append_unique(rule)?;
        }
        if plan.forward_unsure {
            self.ipt
                .ensure_at_top(Table::Filter, "FORWARD", &set.forward_top)?;
        }
        Ok(())
    }

    /// The set-up one command per check and per change, for a variant
    /// without `iptables-restore`.
    fn setup_per_rule(
        &self,
        config: &FirewallConfig,
        exposed: &[Exposure],
    ) -> Result<(), FirewallError> {
        let set = host_rules(config);
        for chain in &set.flushed_at_start {
            self.ipt.clear_chain(chain)?;
        }
        for chain in &set.chains {
            self.ipt.ensure_chain(chain)?;
        }
        for rule in &set.appended {
            self.ipt.append_unique(rule)?;
        }
        self.ipt
            .ensure_at_top(Table::Filter, "FORWARD", &set.forward_top)?;
        for e in exposed {
            self.expose(config, e.subnet, e.skip_nat)?;
        }
        Ok(())
    }

    /// The rules that expose `subnet` (see [`rules::expose_rules`]).
    pub fn expose(
        &self,
        config: &FirewallConfig,
        subnet: Ipv4Net,
        skip_nat: bool,
    ) -> Result<(), FirewallError> {
        for rule in expose_rules(subnet, skip_nat, config.npc) {
            self.ipt.append_unique(&rule)?;
        }
        Ok(())
    }

    /// Removes the rules that expose `subnet`.
    pub fn hide(&self, config: &FirewallConfig, subnet: Ipv4Net) -> Result<(), FirewallError> {
        for rule in expose_rules(subnet, false, config.npc) {
            if self
                .ipt
                .chain_exists(&rules::Chain::new(rule.table, &rule.chain))?
            {
                self.ipt.delete_all(&rule)?;
            }
        }
        Ok(())
    }
}

/// The tables that hold a canary chain; the first is the one watched.
pub const CANARY_TABLES: [rules::Table; 3] = [Table::Mangle, Table::Nat, Table::Filter];

impl Firewall {
    /// Creates the empty canary chains (`WEAVE-CANARY`) whose disappearance
    /// tells that the tables were reloaded or flushed under us (a firewall
    /// service restarting, say), as Weave does.
    pub fn plant_canaries(&self) -> Result<(), FirewallError> {
        for table in CANARY_TABLES {
            self.ipt
                .ensure_chain(&rules::Chain::new(table, rules::CANARY_CHAIN))?;
        }
        Ok(())
    }

    /// Whether the watched canary is gone.
    pub fn canary_missing(&self) -> Result<bool, FirewallError> {
        let chain = rules::Chain::new(CANARY_TABLES[0], rules::CANARY_CHAIN);
        Ok(!self.ipt.chain_exists(&chain)?)
    }

    /// Deletes the canary chains (when the router stops).
    pub fn remove_canaries(&self) -> Result<(), FirewallError> {
        for table in CANARY_TABLES {
            self.ipt
                .delete_chain(&rules::Chain::new(table, rules::CANARY_CHAIN))?;
        }
        Ok(())
    }
}

/// Removes every rule and chain of the router (and of Weave) from one
/// variant. Idempotent.
pub fn teardown_variant(ipt: &Iptables, config: &FirewallConfig) -> Result<(), FirewallError> {
    let down = teardown(config);
    for rule in &down.rules {
        let chains = ipt.chains(rule.table)?;
        // No rule can jump to a chain that does not exist, and iptables
        // refuses even to look for one.
        let target_missing = rule
            .jump_target()
            .is_some_and(|t| t.starts_with("WEAVE") && !chains.iter().any(|c| c == t));
        if chains.contains(&rule.chain) && !target_missing {
            ipt.delete_all(rule)?;
        }
    }
    for chain in &down.chains {
        ipt.delete_chain(chain)?;
    }
    Ok(())
}

/// [`teardown_variant`] for every installed variant: rules may have been
/// left in either by an earlier router or by Weave.
pub fn teardown_all(config: &FirewallConfig) -> Result<Vec<Variant>, FirewallError> {
    let mut cleaned = Vec::new();
    for variant in Variant::ALL {
        if let Ok(ipt) = Iptables::new(variant) {
            teardown_variant(&ipt, config)?;
            cleaned.push(variant);
        }
    }
    Ok(cleaned)
}
