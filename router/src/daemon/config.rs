//! The command line of `weave-router`, with Weave Net's `weaver` flag names
//! and defaults so that an operator's existing invocations carry over.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ipnet::Ipv4Net;

/// The default mesh port: TCP for control, UDP for sleeve (fastdp uses +1).
pub const DEFAULT_PORT: u16 = 6783;

/// Command line of `weave-router`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "weave-router",
    version,
    about = "The weave-rs router, wire-compatible with Weave Net 2.8.1"
)]
pub struct Options {
    /// What to do; without a subcommand the router runs.
    #[command(subcommand)]
    pub command: Option<Action>,

    /// Peer name (48 bits, written as a MAC); default: the weave bridge's
    /// MAC, else the MAC of the interface with the default route.
    #[arg(long)]
    pub name: Option<String>,

    /// Nickname shown in status; default: the host name.
    #[arg(long)]
    pub nickname: Option<String>,

    /// TCP port for mesh connections (UDP: sleeve; port+1: VXLAN).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// IPv4 address the router listens on: the TCP mesh listener and both
    /// sleeve UDP sockets (all addresses if absent). fastdp's VXLAN port
    /// belongs to the kernel, which binds it to all addresses.
    #[arg(long)]
    pub host: Option<std::net::IpAddr>,

    /// Network password: encrypts control and sleeve traffic. Also read
    /// from WEAVE_PASSWORD.
    #[arg(long, env = "WEAVE_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,

    /// Maximum number of mesh connections (0: unlimited).
    #[arg(long, default_value_t = 200)]
    pub conn_limit: u32,

    /// Comma-separated subnets whose peers are trusted: no encryption to them.
    #[arg(long, value_delimiter = ',')]
    pub trusted_subnets: Vec<Ipv4Net>,

    /// Reconnect to the peers remembered from the last run instead of the
    /// positional ones.
    #[arg(long)]
    pub resume: bool,

    /// Do not connect to peers learnt from other peers.
    #[arg(long)]
    pub no_discovery: bool,

    /// Address of the HTTP API (empty to disable).
    #[arg(long, default_value = "127.0.0.1:6784")]
    pub http_addr: String,

    /// Address of the status and metrics interface (empty to disable).
    #[arg(long, default_value = "127.0.0.1:6782")]
    pub status_addr: String,

    /// Address of a metrics-only interface (`/metrics`; empty: none), for
    /// scrapers that must not see the status pages.
    #[arg(long, default_value = "")]
    pub metrics_addr: String,

    /// The range IP addresses are allocated from.
    #[arg(long, default_value = "10.32.0.0/12")]
    pub ipalloc_range: Ipv4Net,

    /// Subnet to allocate within by default (default: the whole range).
    #[arg(long)]
    pub ipalloc_default_subnet: Option<Ipv4Net>,

    /// How the allocator's ring starts: `consensus[=N]`, `seed=<names>` or
    /// `observer` (default: consensus among the initial peers).
    #[arg(long)]
    pub ipalloc_init: Option<String>,

    /// Path prefix of the router's persistent data (`<prefix>data.db`).
    #[arg(long, default_value = "/weavedb/weave")]
    pub db_prefix: PathBuf,

    /// Directory where the CNI plugin leaves the releases of containers
    /// deleted while the router was down (its `ipam.pendingReleaseDir`);
    /// drained at start and every few seconds.
    #[arg(long, default_value = weave_cni::pending::DEFAULT_DIR)]
    pub pending_release_dir: PathBuf,

    /// Name of the weave bridge.
    #[arg(long, default_value = "weave")]
    pub weave_bridge: String,

    /// Name of the Open vSwitch datapath (BridgedFastdp).
    #[arg(long, default_value = "datapath")]
    pub datapath: String,

    /// Disable the fast datapath: use sleeve only.
    #[arg(long)]
    pub no_fastdp: bool,

    /// Use Fastdp (the weave bridge is the datapath) instead of
    /// BridgedFastdp.
    #[arg(long)]
    pub no_bridged_fastdp: bool,

    /// Install no proactive flows (from IPAM and the topology): every new
    /// destination then costs a miss upcall first, as in Weave. For
    /// measurements and debugging.
    #[arg(long, env = "WEAVE_NO_PROACTIVE_FLOWS")]
    pub no_proactive_flows: bool,

    /// MTU of the overlay: default 1376 with a datapath (1460 less the
    /// VXLAN and ESP headroom); a plain Bridge defaults to 65535 and lets
    /// the sleeve tell senders the path MTU.
    #[arg(long)]
    pub mtu: Option<u32>,

    /// Name of the Docker bridge: traffic between it and the weave bridge
    /// is dropped, and its containers may not reach the router's ports on
    /// its address (empty: no Docker bridge).
    #[arg(long, default_value = "")]
    pub docker_bridge: String,

    /// A network-policy controller runs: hand traffic to and from the bridge
    /// to its WEAVE-NPC chains instead of accepting it.
    #[arg(long)]
    pub expect_npc: bool,

    /// Which iptables holds the host rules: `legacy` or `nft` (default: the
    /// one holding most of the host's rules). Also read from
    /// IPTABLES_BACKEND, as Weave's Kubernetes image did.
    #[arg(long, env = "IPTABLES_BACKEND", value_enum)]
    pub iptables_backend: Option<IptablesBackend>,

    /// Log level: error, warn, info, debug or trace (RUST_LOG overrides).
    #[arg(long, default_value = "info")]
    pub log_level: String,

    /// Initial peers: addresses or host names, optionally with `:port`.
    #[arg(value_name = "PEER")]
    pub peers: Vec<String>,
}

/// An iptables variant named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IptablesBackend {
    /// `iptables-legacy` (x_tables).
    Legacy,
    /// `iptables-nft` (nf_tables).
    Nft,
}

impl IptablesBackend {
    /// The variant it names.
    pub fn variant(self) -> crate::net::firewall::iptables::Variant {
        use crate::net::firewall::iptables::Variant;
        match self {
            IptablesBackend::Legacy => Variant::Legacy,
            IptablesBackend::Nft => Variant::Nft,
        }
    }
}

/// Subcommands of `weave-router`.
#[derive(Debug, Clone, Subcommand)]
pub enum Action {
    /// Print the peer name this router would use, and exit.
    PrintPeerName,
    /// Remove the bridge, the datapath, weave's veths and the host firewall
    /// rules (what a run set up), then exit.
    Reset,
    /// Install the `weave-net` and `weave-ipam` CNI plugins and the network
    /// configuration list `10-weave.conflist` (weave-net chained with
    /// portmap), then exit.
    InstallCni {
        /// Where the plugin binaries are; default: next to this executable.
        #[arg(long)]
        from: Option<PathBuf>,
        /// Where CNI runtimes look for plugins.
        #[arg(long, default_value = "/opt/cni/bin")]
        plugin_dir: PathBuf,
        /// Where CNI runtimes look for network configurations.
        #[arg(long, default_value = "/etc/cni/net.d")]
        conf_dir: PathBuf,
    },
}

impl Options {
    /// The bridge options, for a router whose bridge address is `mac`.
    pub fn bridge_config(&self, mac: crate::net::link::MacAddr) -> crate::net::plan::BridgeConfig {
        let mut config = crate::net::plan::BridgeConfig::new(mac);
        config.weave_bridge = self.weave_bridge.clone();
        config.datapath = self.datapath.clone();
        config.no_fastdp = self.no_fastdp;
        config.no_bridged_fastdp = self.no_bridged_fastdp;
        config.mtu = self.mtu;
        config
    }

    /// What the host rules depend on; `docker_ip` is the Docker bridge's
    /// address (needed when `--docker-bridge` names one). The control port
    /// is the HTTP API's, as weaver takes it from `--http-addr`.
    pub fn firewall_config(
        &self,
        docker_ip: Option<std::net::Ipv4Addr>,
    ) -> crate::net::firewall::rules::FirewallConfig {
        use crate::net::firewall::rules::{DockerBridge, FirewallConfig};
        let mut config = FirewallConfig::new(&self.weave_bridge);
        config.port = self.port;
        config.npc = self.expect_npc;
        config.control_port = self.http_addr().ok().flatten().map(|a| a.port());
        config.docker_bridge = match (self.docker_bridge.as_str(), docker_ip) {
            ("", _) | (_, None) => None,
            (name, Some(ip)) => Some(DockerBridge {
                name: name.to_string(),
                ip,
            }),
        };
        config
    }

    /// The HTTP API address, or `None` when disabled.
    pub fn http_addr(&self) -> Result<Option<SocketAddr>, String> {
        parse_optional_addr("--http-addr", &self.http_addr)
    }

    /// The metrics address, or `None` when disabled.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, String> {
        parse_optional_addr("--metrics-addr", &self.metrics_addr)
    }

    /// The status address, or `None` when disabled.
    pub fn status_addr(&self) -> Result<Option<SocketAddr>, String> {
        parse_optional_addr("--status-addr", &self.status_addr)
    }
}

fn parse_optional_addr(flag: &str, text: &str) -> Result<Option<SocketAddr>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|error| format!("{flag} {text:?}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weaver_style_flags_parse() {
        let options = Options::try_parse_from([
            "weave-router",
            "--name",
            "00:00:00:00:00:01",
            "--trusted-subnets",
            "10.0.0.0/8,192.168.0.0/16",
            "--http-addr",
            "",
            "10.0.0.2",
            "host3:6790",
        ])
        .expect("parse");
        assert_eq!(options.trusted_subnets.len(), 2);
        assert_eq!(options.http_addr(), Ok(None));
        assert_eq!(options.peers, ["10.0.0.2", "host3:6790"]);
        assert_eq!(options.metrics_addr(), Ok(None));
        assert_eq!(options.port, 6783);
        assert_eq!(options.ipalloc_range.to_string(), "10.32.0.0/12");
        let bridge = options.bridge_config(crate::net::link::MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(
            bridge.requested_type(),
            crate::net::plan::BridgeType::BridgedFastdp
        );
        assert_eq!(bridge.datapath, "datapath");
        let options =
            Options::try_parse_from(["weave-router", "--no-bridged-fastdp", "--mtu", "1400"])
                .expect("parse");
        let bridge = options.bridge_config(crate::net::link::MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(
            bridge.requested_type(),
            crate::net::plan::BridgeType::Fastdp
        );
        assert_eq!(bridge.mtu, Some(1400));
        let options = Options::try_parse_from(["weave-router", "reset"]).expect("parse");
        assert!(matches!(options.command, Some(Action::Reset)));
    }

    #[test]
    fn firewall_flags() {
        let options = Options::try_parse_from(["weave-router"]).expect("parse");
        let fw = options.firewall_config(None);
        assert_eq!(fw.bridge, "weave");
        assert_eq!(fw.control_port, Some(6784));
        assert!(!fw.npc && fw.docker_bridge.is_none());
        assert_eq!(options.iptables_backend, None);
        let options = Options::try_parse_from([
            "weave-router",
            "--docker-bridge",
            "docker0",
            "--expect-npc",
            "--iptables-backend",
            "legacy",
            "--http-addr",
            "",
            "--port",
            "6790",
        ])
        .expect("parse");
        let fw = options.firewall_config(Some(std::net::Ipv4Addr::new(172, 17, 0, 1)));
        assert!(fw.npc);
        assert_eq!(fw.port, 6790);
        assert_eq!(fw.control_port, None);
        assert_eq!(fw.docker_bridge.map(|d| d.name), Some("docker0".into()));
        assert_eq!(
            options.iptables_backend.map(IptablesBackend::variant),
            Some(crate::net::firewall::iptables::Variant::Legacy)
        );
        assert!(
            Options::try_parse_from(["weave-router", "--iptables-backend", "ebtables"]).is_err()
        );
    }

    #[test]
    fn bad_flags_are_errors_not_panics() {
        assert!(
            Options::try_parse_from(["weave-router", "--ipalloc-range", "10.0.0.0/33"]).is_err()
        );
        assert!(Options::try_parse_from(["weave-router", "--port", "70000"]).is_err());
        let options =
            Options::try_parse_from(["weave-router", "--status-addr", "nowhere"]).expect("parse");
        assert!(options.status_addr().is_err());
        let options = Options::try_parse_from(["weave-router", "--metrics-addr", "0.0.0.0:6782"])
            .expect("parse");
        assert_eq!(
            options.metrics_addr(),
            Ok(Some("0.0.0.0:6782".parse().unwrap()))
        );
        let options =
            Options::try_parse_from(["weave-router", "--metrics-addr", "x"]).expect("parse");
        assert!(
            options
                .metrics_addr()
                .unwrap_err()
                .contains("--metrics-addr")
        );
    }
}
