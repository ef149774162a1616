//! The agent's configuration: the environment variables of Weave Net
//! 2.8.1's `launch.sh` and `init.sh`, with the same names and defaults,
//! checked up front, and their mapping onto `weave-router`'s flags.
//!
//! As in the shell scripts, a variable set to the empty string counts as
//! unset. Unlike them, a value that cannot mean anything is an error
//! naming the variable, not a silent fallback: booleans take Go's
//! `strconv.ParseBool` spellings (`1`, `true`, `0`, `false`, …), so
//! `WEAVE_NO_FASTDP=false` no longer turns fastdp off as the script's
//! "non-empty" test did.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use weave_router::daemon::config::IptablesBackend;

/// `IPALLOC_RANGE`'s default, Weave's.
pub const DEFAULT_RANGE: &str = "10.32.0.0/12";
/// `WEAVE_HTTP_ADDR`'s default: the router's API, on loopback only.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:6784";
/// `WEAVE_METRICS_ADDR`'s default: metrics for every scraper.
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:6782";
/// `CONN_LIMIT`'s default.
pub const DEFAULT_CONN_LIMIT: u32 = 200;
/// `HOST_ROOT`'s default: where the manifest mounts the host's `/`.
pub const DEFAULT_HOST_ROOT: &str = "/host";
/// `DB_PREFIX`'s default: the router's data lives at `<prefix>data.redb`.
pub const DEFAULT_DB_PREFIX: &str = "/weavedb/weave-net";
/// The smallest overlay MTU accepted (IPv4's minimum reassembly size).
pub const MIN_MTU: u32 = 576;

/// A bad configuration value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}={value:?}: {why}")]
pub struct ConfigError {
    /// The variable.
    pub var: &'static str,
    /// Its value (for a password: `<hidden>`).
    pub value: String,
    /// What is wrong with it.
    pub why: String,
}

fn bad(var: &'static str, value: &str, why: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        value: value.to_string(),
        why: why.into(),
    }
}

/// A network password, kept out of `Debug` output and of command lines
/// (the router gets it in its environment).
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// The password itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<hidden>)")
    }
}

/// The address `WEAVE_EXPOSE_IP` asks the bridge to get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExposeAddr {
    /// An address the router allocates (`weave:expose`), Weave's default.
    Allocate,
    /// This address, with the range's prefix length unless one was given.
    Fixed(Ipv4Net),
}

/// Everything the agent is told by its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `IPALLOC_RANGE`: the range addresses come from.
    pub ipalloc_range: Ipv4Net,
    /// `IPALLOC_INIT`: how the ring starts, if given; otherwise the agent
    /// decides from the registry and the Nodes (see `consensus`).
    pub ipalloc_init: Option<String>,
    /// `KUBE_PEERS`: peers given by hand, replacing the Node list.
    pub kube_peers: Option<Vec<String>>,
    /// `CONN_LIMIT`: the router's connection limit.
    pub conn_limit: u32,
    /// `WEAVE_MTU`: the overlay MTU, if given.
    pub mtu: Option<u32>,
    /// `WEAVE_NO_FASTDP`: sleeve only.
    pub no_fastdp: bool,
    /// `WEAVE_PASSWORD`, or the content of `WEAVE_PASSWORD_FILE`.
    pub password: Option<Password>,
    /// `EXTRA_ARGS`: more router flags, split at white space.
    pub extra_args: Vec<String>,
    /// `NO_MASQ_LOCAL` (default on): do not masquerade traffic from
    /// outside to local pods. Checked, but not passed on: weave-router has
    /// no equivalent of weaver's `--no-masq-local` yet.
    pub no_masq_local: bool,
    /// `EXPECT_NPC` (default on): weave-npc runs beside the router.
    pub expect_npc: bool,
    /// `IPTABLES_BACKEND`: `legacy` or `nft`; detected if absent.
    pub iptables_backend: Option<IptablesBackend>,
    /// `HAIRPIN_MODE` (default on): written into the CNI configuration.
    pub hairpin_mode: bool,
    /// `WEAVE_EXPOSE_IP`: the bridge's address.
    pub expose: ExposeAddr,
    /// `WEAVE_METRICS_ADDR`: where metrics are served (empty: nowhere).
    pub metrics_addr: Option<SocketAddr>,
    /// `WEAVE_STATUS_ADDR`: where status pages are served (off unless set).
    pub status_addr: Option<SocketAddr>,
    /// `WEAVE_HTTP_ADDR`: the router's API.
    pub http_addr: SocketAddr,
    /// `HOST_ROOT`: where the host's file system is mounted.
    pub host_root: PathBuf,
    /// `DB_PREFIX`: the router's data path prefix.
    pub db_prefix: PathBuf,
    /// `HOSTNAME`: this Node's name (the manifest sets it from
    /// `spec.nodeName`), also the router's nickname.
    pub node_name: Option<String>,
}

fn get(vars: &dyn Fn(&str) -> Option<String>, var: &str) -> Option<String> {
    vars(var).filter(|value| !value.is_empty())
}

fn flag(
    vars: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    match get(vars, var) {
        None => Ok(default),
        Some(value) => weave_router::mesh::identity::parse_go_bool(value.trim())
            .ok_or_else(|| bad(var, &value, "expected a boolean: 1, true, 0 or false")),
    }
}

fn addr(
    vars: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
    default: Option<&str>,
) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(value) = get(vars, var).or_else(|| default.map(str::to_string)) else {
        return Ok(None);
    };
    value
        .trim()
        .parse()
        .map(Some)
        .map_err(|_| bad(var, &value, "expected <ip>:<port>"))
}

impl Config {
    /// The configuration in the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars(&|var| std::env::var(var).ok())
    }

    /// The configuration in `vars` (a lookup by variable name).
    pub fn from_vars(vars: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let range_text = get(vars, "IPALLOC_RANGE").unwrap_or_else(|| DEFAULT_RANGE.into());
        let ipalloc_range: Ipv4Net = range_text
            .trim()
            .parse()
            .map_err(|_| bad("IPALLOC_RANGE", &range_text, "expected an IPv4 CIDR"))?;
        if ipalloc_range != ipalloc_range.trunc() {
            return Err(bad(
                "IPALLOC_RANGE",
                &range_text,
                format!("host bits set; did you mean {}?", ipalloc_range.trunc()),
            ));
        }
        let ipalloc_init = get(vars, "IPALLOC_INIT").map(|v| v.trim().to_string());
        if let Some(init) = &ipalloc_init {
            weave_router::daemon::ipam::parse_init_mode(Some(init))
                .map_err(|why| bad("IPALLOC_INIT", init, why))?;
        }
        let kube_peers = get(vars, "KUBE_PEERS")
            .map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .filter(|peers| !peers.is_empty());
        let conn_limit = match get(vars, "CONN_LIMIT") {
            None => DEFAULT_CONN_LIMIT,
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| bad("CONN_LIMIT", &v, "expected a number (0: no limit)"))?,
        };
        let mtu = match get(vars, "WEAVE_MTU") {
            None => None,
            Some(v) => Some(
                v.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|m| (MIN_MTU..=65535).contains(m))
                    .ok_or_else(|| {
                        bad(
                            "WEAVE_MTU",
                            &v,
                            format!("expected {MIN_MTU} to 65535 bytes"),
                        )
                    })?,
            ),
        };
        let password = match (
            get(vars, "WEAVE_PASSWORD"),
            get(vars, "WEAVE_PASSWORD_FILE"),
        ) {
            (Some(_), Some(file)) => {
                return Err(bad(
                    "WEAVE_PASSWORD_FILE",
                    &file,
                    "WEAVE_PASSWORD is set too: give one of them",
                ));
            }
            (Some(password), None) => Some(Password(password)),
            (None, Some(file)) => Some(read_password(Path::new(&file))?),
            (None, None) => None,
        };
        let extra_args = get(vars, "EXTRA_ARGS")
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let iptables_backend = match get(vars, "IPTABLES_BACKEND") {
            None => None,
            Some(v) => Some(match v.trim() {
                "legacy" => IptablesBackend::Legacy,
                "nft" => IptablesBackend::Nft,
                _ => return Err(bad("IPTABLES_BACKEND", &v, "expected legacy or nft")),
            }),
        };
        let expose = match get(vars, "WEAVE_EXPOSE_IP") {
            None => ExposeAddr::Allocate,
            Some(v) => ExposeAddr::Fixed(
                parse_expose(v.trim(), ipalloc_range)
                    .map_err(|why| bad("WEAVE_EXPOSE_IP", &v, why))?,
            ),
        };
        let http_addr = addr(vars, "WEAVE_HTTP_ADDR", Some(DEFAULT_HTTP_ADDR))?
            .ok_or_else(|| bad("WEAVE_HTTP_ADDR", "", "the agent needs the router's API"))?;
        let node_name = get(vars, "HOSTNAME").map(|v| v.trim().to_string());
        if let Some(name) = &node_name {
            check_node_name(name).map_err(|why| bad("HOSTNAME", name, why))?;
        }
        Ok(Config {
            ipalloc_range,
            ipalloc_init,
            kube_peers,
            conn_limit,
            mtu,
            no_fastdp: flag(vars, "WEAVE_NO_FASTDP", false)?,
            password,
            extra_args,
            no_masq_local: flag(vars, "NO_MASQ_LOCAL", true)?,
            expect_npc: flag(vars, "EXPECT_NPC", true)?,
            iptables_backend,
            hairpin_mode: flag(vars, "HAIRPIN_MODE", true)?,
            expose,
            metrics_addr: addr(vars, "WEAVE_METRICS_ADDR", Some(DEFAULT_METRICS_ADDR))?,
            status_addr: addr(vars, "WEAVE_STATUS_ADDR", None)?,
            http_addr,
            host_root: PathBuf::from(
                get(vars, "HOST_ROOT").unwrap_or_else(|| DEFAULT_HOST_ROOT.into()),
            ),
            db_prefix: PathBuf::from(
                get(vars, "DB_PREFIX").unwrap_or_else(|| DEFAULT_DB_PREFIX.into()),
            ),
            node_name,
        })
    }

    /// This Node's name, which the run mode cannot do without.
    pub fn require_node_name(&self) -> Result<&str, ConfigError> {
        self.node_name.as_deref().ok_or_else(|| {
            bad(
                "HOSTNAME",
                "",
                "unset: the DaemonSet sets it from spec.nodeName",
            )
        })
    }

    /// The router's data file (weave-rs's store at `DB_PREFIX`).
    pub fn db_file(&self) -> PathBuf {
        weave_router::daemon::ipam_store::store_path(&self.db_prefix)
    }

    /// The marker the agent leaves once this router is in the registry:
    /// its data then belongs to a registered peer (Weave kept this as the
    /// `peer-reclaim` flag inside its database).
    pub fn registered_marker(&self) -> PathBuf {
        let mut path = self.db_prefix.as_os_str().to_owned();
        path.push("kube-registered");
        PathBuf::from(path)
    }

    /// `weave-router`'s command line (without the program name) for a
    /// router named `peer_name` that starts its ring with `ipalloc_init`
    /// and connects to `peers`. The password is not on it: it goes into
    /// the router's environment (`WEAVE_PASSWORD`).
    pub fn router_args(
        &self,
        peer_name: &str,
        ipalloc_init: &str,
        peers: &[String],
    ) -> Vec<String> {
        let mut args = vec![
            "--port=6783".to_string(),
            "--datapath=datapath".to_string(),
            format!("--name={peer_name}"),
            format!("--http-addr={}", self.http_addr),
            format!("--db-prefix={}", self.db_prefix.display()),
            format!("--ipalloc-range={}", self.ipalloc_range),
            format!("--ipalloc-init={ipalloc_init}"),
            format!("--conn-limit={}", self.conn_limit),
        ];
        if let Some(mtu) = self.mtu {
            args.push(format!("--mtu={mtu}"));
        }
        if self.no_fastdp {
            args.push("--no-fastdp".into());
        }
        if let Some(name) = &self.node_name {
            args.push(format!("--nickname={name}"));
        }
        // Weave served metrics on their own address and status only when
        // asked; one address for both serves both.
        match (self.status_addr, self.metrics_addr) {
            (Some(status), Some(metrics)) if status == metrics => {
                args.push(format!("--status-addr={status}"));
            }
            (status, metrics) => {
                args.push(format!(
                    "--status-addr={}",
                    status.map(|a| a.to_string()).unwrap_or_default()
                ));
                if let Some(metrics) = metrics {
                    args.push(format!("--metrics-addr={metrics}"));
                }
            }
        }
        if self.expect_npc {
            args.push("--expect-npc".into());
        }
        match self.iptables_backend {
            Some(IptablesBackend::Legacy) => args.push("--iptables-backend=legacy".into()),
            Some(IptablesBackend::Nft) => args.push("--iptables-backend=nft".into()),
            None => {}
        }
        args.extend(self.extra_args.iter().cloned());
        args.extend(peers.iter().cloned());
        args
    }
}

/// Reads a password file (a mounted Secret): its bytes as they are, so a
/// Secret shared with Weave 2.8.1 nodes (which took it from the
/// environment) gives the same key; an empty file is an error.
fn read_password(path: &Path) -> Result<Password, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad("WEAVE_PASSWORD_FILE", &shown, format!("cannot read: {e}")))?;
    if text.is_empty() {
        return Err(bad("WEAVE_PASSWORD_FILE", &shown, "the file is empty"));
    }
    Ok(Password(text))
}

/// `WEAVE_EXPOSE_IP`: `a.b.c.d` (the range's prefix length) or
/// `a.b.c.d/n`, inside the range and not its network or broadcast address.
fn parse_expose(text: &str, range: Ipv4Net) -> Result<Ipv4Net, String> {
    let net = match text.split_once('/') {
        Some(_) => text
            .parse::<Ipv4Net>()
            .map_err(|_| "expected an IPv4 address, optionally /prefix".to_string())?,
        None => {
            let ip: Ipv4Addr = text
                .parse()
                .map_err(|_| "expected an IPv4 address, optionally /prefix".to_string())?;
            Ipv4Net::new(ip, range.prefix_len()).map_err(|e| e.to_string())?
        }
    };
    if net.addr() == net.network() || net.addr() == net.broadcast() {
        return Err(format!(
            "{net} is the network or broadcast address of its subnet"
        ));
    }
    Ok(net)
}

/// A Node name is a DNS subdomain (RFC 1123): at most 253 characters of
/// lower-case letters, digits, `-` and `.`, starting and ending
/// alphanumeric.
pub fn check_node_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty() || name.len() > 253 {
        return Err("a Node name has 1 to 253 characters".into());
    }
    if !name.chars().all(ok_char) || !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        return Err("not a Node name (lower-case letters, digits, '-' and '.')".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_vars(&move |var| map.get(var).cloned())
    }

    #[test]
    fn defaults_are_launch_sh_defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.ipalloc_range.to_string(), "10.32.0.0/12");
        assert_eq!(c.conn_limit, 200);
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:6784");
        assert_eq!(c.metrics_addr.unwrap().to_string(), "0.0.0.0:6782");
        assert_eq!(c.status_addr, None);
        assert_eq!(c.host_root, PathBuf::from("/host"));
        assert_eq!(c.db_prefix, PathBuf::from("/weavedb/weave-net"));
        assert_eq!(c.db_file(), PathBuf::from("/weavedb/weave-netdata.redb"));
        assert!(c.expect_npc && c.no_masq_local && c.hairpin_mode && !c.no_fastdp);
        assert_eq!(c.expose, ExposeAddr::Allocate);
        assert!(c.password.is_none() && c.kube_peers.is_none() && c.ipalloc_init.is_none());
        assert!(c.require_node_name().is_err());
        // Empty values count as unset, as `${X:-default}` does.
        let c = config(&[("CONN_LIMIT", ""), ("IPALLOC_RANGE", "")]).unwrap();
        assert_eq!(c.conn_limit, 200);
        assert_eq!(c.ipalloc_range.to_string(), "10.32.0.0/12");
    }

    #[test]
    fn router_flags() {
        let c = config(&[
            ("IPALLOC_RANGE", "10.40.0.0/16"),
            ("CONN_LIMIT", "30"),
            ("WEAVE_MTU", "1400"),
            ("WEAVE_NO_FASTDP", "1"),
            ("EXPECT_NPC", "0"),
            ("IPTABLES_BACKEND", "nft"),
            ("EXTRA_ARGS", "--log-level=debug  --no-discovery"),
            ("HOSTNAME", "node-1"),
            ("WEAVE_STATUS_ADDR", "0.0.0.0:6782"),
        ])
        .unwrap();
        let args = c.router_args("aa:bb:cc:dd:ee:ff", "consensus=3", &["10.0.0.2".into()]);
        let has = |a: &str| args.iter().any(|x| x == a);
        for expected in [
            "--name=aa:bb:cc:dd:ee:ff",
            "--ipalloc-range=10.40.0.0/16",
            "--ipalloc-init=consensus=3",
            "--conn-limit=30",
            "--mtu=1400",
            "--no-fastdp",
            "--nickname=node-1",
            "--iptables-backend=nft",
            "--status-addr=0.0.0.0:6782",
            "--db-prefix=/weavedb/weave-net",
            "--http-addr=127.0.0.1:6784",
        ] {
            assert!(has(expected), "{expected} missing from {args:?}");
        }
        assert!(!has("--expect-npc"));
        assert!(!args.iter().any(|a| a.starts_with("--metrics-addr")));
        assert_eq!(
            &args[args.len() - 3..],
            ["--log-level=debug", "--no-discovery", "10.0.0.2"]
        );
        // Defaults: status off, metrics on their own address, npc hooks on.
        let args = config(&[])
            .unwrap()
            .router_args("aa:bb:cc:dd:ee:ff", "observer", &[]);
        assert!(args.contains(&"--status-addr=".to_string()));
        assert!(args.contains(&"--metrics-addr=0.0.0.0:6782".to_string()));
        assert!(args.contains(&"--expect-npc".to_string()));
        assert!(!args.iter().any(|a| a.contains("password")));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value, why) in [
            ("IPALLOC_RANGE", "10.32.0.0", "CIDR"),
            ("IPALLOC_RANGE", "10.32.0.1/12", "host bits"),
            ("IPALLOC_INIT", "consensus=zero", "positive"),
            ("IPALLOC_INIT", "seed=nonsense", "seed"),
            ("CONN_LIMIT", "-1", "number"),
            ("WEAVE_MTU", "100", "576"),
            ("WEAVE_MTU", "jumbo", "576"),
            ("WEAVE_NO_FASTDP", "yes please", "boolean"),
            ("EXPECT_NPC", "maybe", "boolean"),
            ("IPTABLES_BACKEND", "nftables", "legacy or nft"),
            ("WEAVE_EXPOSE_IP", "10.32.0.0", "network"),
            ("WEAVE_EXPOSE_IP", "bridge", "IPv4"),
            ("WEAVE_HTTP_ADDR", "localhost", "<ip>:<port>"),
            ("WEAVE_METRICS_ADDR", ":6782", "<ip>:<port>"),
            ("HOSTNAME", "Node_1", "Node name"),
            (
                "WEAVE_PASSWORD_FILE",
                "/nonexistent/weave-rs-test",
                "cannot read",
            ),
        ] {
            let error = config(&[(var, value)]).unwrap_err();
            assert_eq!(error.var, var);
            assert!(error.to_string().contains(why), "{var}={value}: {error}");
        }
    }

    #[test]
    fn booleans_take_go_spellings() {
        let c = config(&[("NO_MASQ_LOCAL", "0"), ("HAIRPIN_MODE", "false")]).unwrap();
        assert!(!c.no_masq_local && !c.hairpin_mode);
        let c = config(&[("WEAVE_NO_FASTDP", "true"), ("EXPECT_NPC", "1")]).unwrap();
        assert!(c.no_fastdp && c.expect_npc);
    }

    #[test]
    fn expose_and_peers() {
        let c = config(&[
            ("WEAVE_EXPOSE_IP", "10.32.0.9"),
            ("KUBE_PEERS", " 10.0.0.1  10.0.0.2\n"),
            ("IPALLOC_INIT", "observer"),
        ])
        .unwrap();
        assert_eq!(c.expose, ExposeAddr::Fixed("10.32.0.9/12".parse().unwrap()));
        assert_eq!(c.kube_peers.unwrap(), ["10.0.0.1", "10.0.0.2"]);
        let c = config(&[("WEAVE_EXPOSE_IP", "192.168.5.1/24")]).unwrap();
        assert_eq!(
            c.expose,
            ExposeAddr::Fixed("192.168.5.1/24".parse().unwrap())
        );
    }

    #[test]
    fn password_from_env_or_file() {
        let c = config(&[("WEAVE_PASSWORD", "s3cret")]).unwrap();
        assert_eq!(c.password.as_ref().unwrap().expose(), "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        let path = std::env::temp_dir().join(format!("weave-kube-pw-{}", std::process::id()));
        std::fs::write(&path, "from-secret\n").unwrap();
        let file = path.to_string_lossy().into_owned();
        let c = config(&[("WEAVE_PASSWORD_FILE", &file)]).unwrap();
        assert_eq!(c.password.unwrap().expose(), "from-secret\n");
        let both = config(&[("WEAVE_PASSWORD_FILE", &file), ("WEAVE_PASSWORD", "x")]);
        assert!(both.unwrap_err().why.contains("one of them"));
        std::fs::write(&path, "").unwrap();
        assert!(
            config(&[("WEAVE_PASSWORD_FILE", &file)])
                .unwrap_err()
                .why
                .contains("empty")
        );
        let _ = std::fs::remove_file(&path);
    }
}
