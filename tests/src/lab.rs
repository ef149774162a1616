//! Labs: hosts in namespaces on a shared underlay.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

use crate::netns::{Netns, list_namespaces, remove_namespace, require_root};
use crate::process::{Command, Output, Process};

/// Prefix of every namespace a lab makes: `nl<pid>_<serial>-<role>`.
const PREFIX: &str = "nl";

/// Counts labs made by this process, to keep their names apart.
static SERIAL: AtomicU32 = AtomicU32::new(0);

/// How to build a [`Lab`].
#[derive(Debug, Clone)]
pub struct LabBuilder {
    hosts: usize,
    underlay: Ipv4Addr,
    prefix_len: u8,
    mtu: Option<u32>,
}

impl LabBuilder {
    /// A lab of `hosts` hosts on 192.168.77.0/24 (host `i` is `.(i+1)`).
    pub fn new(hosts: usize) -> LabBuilder {
        LabBuilder {
            hosts,
            underlay: Ipv4Addr::new(192, 168, 77, 0),
            prefix_len: 24,
            mtu: None,
        }
    }

    /// Uses `network/prefix_len` as the underlay subnet.
    pub fn underlay(mut self, network: Ipv4Addr, prefix_len: u8) -> LabBuilder {
        self.underlay = network;
        self.prefix_len = prefix_len;
        self
    }

    /// Sets the MTU of every underlay link.
    pub fn mtu(mut self, mtu: u32) -> LabBuilder {
        self.mtu = Some(mtu);
        self
    }

    /// Makes the namespaces and links.
    pub fn build(self) -> Result<Lab> {
        require_root()?;
        sweep_stale();
        let capacity = (1u64 << (32 - u32::from(self.prefix_len))).saturating_sub(2);
        if self.prefix_len > 30 || self.hosts as u64 > capacity {
            bail!(
                "{} hosts do not fit in {}/{}",
                self.hosts,
                self.underlay,
                self.prefix_len
            );
        }
        let id = format!(
            "{PREFIX}{}_{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join("netlab").join(&id);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let hub = Netns::create(&format!("{id}-hub"))?;
        hub.run(&["ip", "link", "add", "underlay", "type", "bridge"])?;
        hub.run(&["ip", "link", "set", "underlay", "up"])?;
        let mut lab = Lab {
            id,
            dir,
            hub,
            hosts: Vec::new(),
            extra: Mutex::new(Vec::new()),
        };
        for index in 0..self.hosts {
            let netns = Netns::create(&format!("{}-h{index}", lab.id))?;
            let port = format!("p{index}");
            // The host's end is made inside the host, the hub's end in the hub:
            // nothing ever appears in the namespace the test runs in.
            netns.run(&[
                "ip",
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                lab.hub.name(),
            ])?;
            lab.hub
                .run(&["ip", "link", "set", &port, "master", "underlay", "up"])?;
            if let Some(mtu) = self.mtu {
                let mtu = mtu.to_string();
                netns.run(&["ip", "link", "set", "eth0", "mtu", &mtu])?;
                lab.hub.run(&["ip", "link", "set", &port, "mtu", &mtu])?;
            }
            let offset = u32::try_from(index + 1).context("too many hosts")?;
            let ip = Ipv4Addr::from(u32::from(self.underlay) + offset);
            netns.run(&[
                "ip",
                "addr",
                "add",
                &format!("{ip}/{}", self.prefix_len),
                "dev",
                "eth0",
            ])?;
            netns.run(&["ip", "link", "set", "eth0", "up"])?;
            lab.hosts.push(Host {
                index,
                netns,
                ip,
                prefix_len: self.prefix_len,
                dir: lab.dir.clone(),
            });
        }
        Ok(lab)
    }
}

/// A set of hosts (network namespaces) on one underlay subnet.
///
/// Dropping the lab stops what runs in it and deletes its namespaces. Its
/// log directory is kept when the drop happens during a panic, so a failed
/// test leaves the logs of the processes it started.
#[derive(Debug)]
pub struct Lab {
    id: String,
    dir: PathBuf,
    // Field order is drop order: hosts and extra namespaces go before the hub.
    hosts: Vec<Host>,
    extra: Mutex<Vec<Netns>>,
    hub: Netns,
}

impl Lab {
    /// A lab of `hosts` hosts with default settings.
    pub fn new(hosts: usize) -> Result<Lab> {
        LabBuilder::new(hosts).build()
    }

    /// The lab's unique name; every namespace it makes starts with it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The directory holding the logs of processes started in the lab.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Host `index`.
    ///
    /// # Panics
    /// If there is no such host: that is a bug in the test itself.
    pub fn host(&self, index: usize) -> &Host {
        &self.hosts[index]
    }

    /// All hosts.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Makes one more namespace (a "container", say), named
    /// `<lab id>-<suffix>`, deleted with the lab.
    pub fn add_netns(&self, suffix: &str) -> Result<String> {
        let netns = Netns::create(&format!("{}-{suffix}", self.id))?;
        let name = netns.name().to_string();
        self.extra
            .lock()
            .map_err(|_| anyhow::anyhow!("lab lock poisoned"))?
            .push(netns);
        Ok(name)
    }

    /// Joins namespace `a` and namespace `b` with a veth pair whose ends are
    /// named `a_if` and `b_if`.
    pub fn connect(&self, a: &str, a_if: &str, b: &str, b_if: &str) -> Result<()> {
        Command::new("ip")
            .args([
                "-n", a, "link", "add", a_if, "type", "veth", "peer", "name", b_if,
            ])
            .args(["netns", b])
            .run()?;
        Ok(())
    }

    /// The hub namespace, whose bridge `underlay` joins the hosts (give it
    /// an address to serve something every host reaches, e.g. an API
    /// server).
    pub fn hub_netns(&self) -> &str {
        self.hub.name()
    }

    /// Runs `argv` in namespace `netns` and fails unless it exits 0.
    pub fn run_in(&self, netns: &str, argv: &[&str]) -> Result<Output> {
        let (program, args) = argv.split_first().context("empty command line")?;
        Command::new(program)
            .args(args.iter().copied())
            .in_netns(netns)
            .run()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Namespaces are deleted by their own destructors, hosts first.
        if std::thread::panicking() {
            eprintln!(
                "netlab: logs of lab {} kept in {}",
                self.id,
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One host of a lab: a network namespace with `eth0` on the underlay.
#[derive(Debug)]
pub struct Host {
    index: usize,
    netns: Netns,
    ip: Ipv4Addr,
    prefix_len: u8,
    dir: PathBuf,
}

impl Host {
    /// Its position in the lab.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Its namespace's name.
    pub fn netns(&self) -> &str {
        self.netns.name()
    }

    /// Its address on the underlay.
    pub fn underlay_ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The underlay's prefix length.
    pub fn underlay_prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// A command to run on this host.
    pub fn cmd(&self, program: &str) -> Command {
        self.netns.cmd(program)
    }

    /// Runs `argv` on this host and fails unless it exits 0.
    pub fn run(&self, argv: &[&str]) -> Result<Output> {
        self.netns.run(argv)
    }

    /// Gives this host firewall rules of its own, as a host with a
    /// firewall has before any router starts: one `INPUT … --dport <port>
    /// -j ACCEPT` rule per port, written with `iptables` (a program name
    /// such as `iptables-nft`, which picks the variant that holds them).
    pub fn accept_input_ports(&self, iptables: &str, ports: &[u16]) -> Result<()> {
        for port in ports {
            let port = port.to_string();
            self.run(&[
                iptables, "-A", "INPUT", "-p", "tcp", "--dport", &port, "-j", "ACCEPT",
            ])?;
        }
        Ok(())
    }

    /// Starts `argv` in the background on this host; its output goes to
    /// `<lab dir>/h<index>-<name>.log`. It is stopped when the returned
    /// [`Process`] is dropped, and killed with the lab in any case.
    pub fn spawn(&self, name: &str, argv: &[&str]) -> Result<Process> {
        let (program, args) = argv.split_first().context("empty command line")?;
        self.cmd(program)
            .args(args.iter().copied())
            .spawn(self.dir.join(format!("h{}-{name}.log", self.index)))
    }

    /// The process ids running on this host.
    pub fn pids(&self) -> Vec<i32> {
        self.netns.pids()
    }
}

/// Deletes namespaces left by lab processes that no longer exist (killed
/// before their destructors ran).
fn sweep_stale() {
    for name in list_namespaces() {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('_') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            remove_namespace(&name);
        }
    }
}
