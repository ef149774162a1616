//! Deciding whom to dial and when: the targets given on the command line
//! or through `/connect` ("direct peers"), peers discovered through other
//! peers' connections, and the reconnect backoff (2 s growing by half each
//! failure up to 6 min, jittered).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::{Rng, RngCore};

use super::identity::PeerName;
use super::peers::Peers;

/// First retry interval.
pub const INITIAL_INTERVAL: Duration = Duration::from_secs(2);

/// Largest retry interval.
pub const MAX_INTERVAL: Duration = Duration::from_secs(6 * 60);

/// A connection that lived at least this long past its attempt time
/// resets the backoff.
pub const RESET_AFTER: Duration = Duration::from_secs(60);

/// A peer address given by the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerSpecError {
    /// Not `host[:port]`.
    Invalid(String),
}

impl std::fmt::Display for PeerSpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerSpecError::Invalid(s) => {
                write!(f, "invalid peer name {s:?}, should be host[:port]")
            }
        }
    }
}

impl std::error::Error for PeerSpecError {}

/// Splits a user-given peer (`host`, `host:port`, `[v6]:port`) into host
/// and optional port, as Weave does before resolving the host.
pub fn split_peer_spec(spec: &str) -> Result<(String, Option<u16>), PeerSpecError> {
    let bad = || PeerSpecError::Invalid(spec.to_owned());
    let (host, port) = if let Some(rest) = spec.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        match after.strip_prefix(':') {
            Some(p) => (h.to_owned(), Some(p)),
            None if after.is_empty() => (h.to_owned(), None),
            None => return Err(bad()),
        }
    } else {
        match spec.matches(':').count() {
            0 => (spec.to_owned(), None),
            1 => {
                let (h, p) = spec.split_once(':').ok_or_else(bad)?;
                (h.to_owned(), Some(p))
            }
            // A bare IPv6 address: no port.
            _ => (spec.to_owned(), None),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = match port {
        None => None,
        Some(p) => {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let v: u16 = p.parse().map_err(|_| bad())?;
            // Port 0 means "no port given", as in Weave.
            if v == 0 { None } else { Some(v) }
        }
    };
    Ok((host, port))
}

/// A direct peer after the shell resolved its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectPeer {
    /// The resolved address.
    pub ip: IpAddr,
    /// The port, if one was given (otherwise the mesh port is used).
    pub port: Option<u16>,
}

/// A connection of ours as the connection maker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OurConnection {
    /// The peer at the other end.
    pub remote: PeerName,
    /// The remote TCP address (the dialled target for outbound ones).
    pub remote_addr: SocketAddr,
    /// Whether we dialled.
    pub outbound: bool,
}

/// Why a connection ended, as far as retrying is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Termination {
    /// An ordinary failure; retry with backoff.
    Error(String),
    /// We connected to ourself: never retry, and do not count it.
    ConnectToSelf,
    /// Another peer uses our name: never retry.
    NameCollision(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetState {
    Waiting,
    Attempting,
    Connected,
    Suspended,
}

#[derive(Debug, Clone)]
struct Target {
    state: TargetState,
    last_error: Option<String>,
    /// `None` means never.
    try_after: Option<Instant>,
    try_interval: Duration,
}

impl Target {
    fn try_now(&mut self, now: Instant) {
        self.try_after = Some(now);
        self.try_interval = INITIAL_INTERVAL;
    }

    fn try_never(&mut self) {
        self.try_after = None;
        self.try_interval = MAX_INTERVAL;
    }

    /// Next attempt after a random delay in [i/2, 3i/2); the interval then
    /// grows by half, capped at [`MAX_INTERVAL`].
    fn try_later(&mut self, now: Instant, rng: &mut dyn RngCore) {
        let i = self.try_interval.as_nanos().max(1) as u64;
        let jitter = rng.gen_range(0..i);
        self.try_after = Some(now + self.try_interval / 2 + Duration::from_nanos(jitter));
        self.try_interval = (self.try_interval * 3 / 2).min(MAX_INTERVAL);
    }
}

/// A dial the shell should make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Whether the peer may be unknown to us (true for direct peers).
    pub accept_new_peer: bool,
}

/// A target's line in the status output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetStatus {
    /// The address.
    pub address: SocketAddr,
    /// `waiting`, `failed`, `connecting` or `retrying`.
    pub state: &'static str,
    /// The last error and, for waiting ones, when the next try is.
    pub info: String,
    /// When the next attempt is due (`None`: never or not waiting).
    pub retry_at: Option<Instant>,
}

/// The connection maker's state.
#[derive(Debug, Clone)]
pub struct ConnectionMaker {
    port: u16,
    discovery: bool,
    direct: BTreeMap<String, DirectPeer>,
    targets: BTreeMap<SocketAddr, Target>,
    termination_count: u64,
    next_check: Option<Instant>,
}

impl ConnectionMaker {
    /// A connection maker for a mesh listening on `port`; with `discovery`
    /// it also dials peers that others are connected to.
    pub fn new(port: u16, discovery: bool) -> Self {
        ConnectionMaker {
            port,
            discovery,
            direct: BTreeMap::new(),
            targets: BTreeMap::new(),
            termination_count: 0,
            next_check: None,
        }
    }

    fn complete(&self, p: &DirectPeer) -> SocketAddr {
        SocketAddr::new(p.ip, p.port.unwrap_or(self.port))
    }

    /// Adds direct peers (`replace` forgets the previous ones first). A
    /// peer already being retried is tried again at once.
    pub fn initiate_connections(
        &mut self,
        peers: Vec<(String, DirectPeer)>,
        replace: bool,
        now: Instant,
    ) {
        if replace {
            self.direct.clear();
        }
        for (spec, p) in peers {
            let addr = self.complete(&p);
            self.direct.insert(spec, p);
            if let Some(t) = self.targets.get_mut(&addr) {
                t.try_now(now);
            }
        }
        self.next_check = Some(now);
    }

    /// Forgets direct peers by the text they were given as.
    pub fn forget_connections(&mut self, specs: &[String], now: Instant) {
        for s in specs {
            self.direct.remove(s);
        }
        self.next_check = Some(now);
    }

    /// The direct peers, optionally without those we gave up on.
    pub fn targets(&self, active_only: bool) -> Vec<String> {
        self.direct
            .iter()
            .filter(|(_, p)| {
                !active_only
                    || self
                        .targets
                        .get(&self.complete(p))
                        .is_none_or(|t| t.try_after.is_some())
            })
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// How many connections ended (not counting connections to ourself).
    pub fn termination_count(&self) -> u64 {
        self.termination_count
    }

    /// A dial failed before any connection existed.
    pub fn connection_aborted(
        &mut self,
        addr: SocketAddr,
        error: String,
        now: Instant,
        rng: &mut dyn RngCore,
    ) {
        if let Some(t) = self.targets.get_mut(&addr) {
            t.state = TargetState::Waiting;
            t.last_error = Some(error);
            t.try_later(now, rng);
        }
        self.next_check = Some(now);
    }

    /// An outbound connection to `target` finished its intro and was added.
    pub fn connection_created(&mut self, target: SocketAddr) {
        if let Some(t) = self.targets.get_mut(&target) {
            t.state = TargetState::Connected;
        }
    }

    /// A connection ended; `target` is set for outbound ones.
    pub fn connection_terminated(
        &mut self,
        target: Option<SocketAddr>,
        why: Termination,
        now: Instant,
        rng: &mut dyn RngCore,
    ) {
        if why != Termination::ConnectToSelf {
            self.termination_count += 1;
        }
        if let Some(t) = target.and_then(|a| self.targets.get_mut(&a)) {
            t.state = TargetState::Waiting;
            match &why {
                Termination::ConnectToSelf => {
                    t.last_error = Some("cannot connect to ourself".into());
                    t.try_never();
                }
                Termination::NameCollision(e) => {
                    t.last_error = Some(e.clone());
                    t.try_never();
                }
                Termination::Error(e) => {
                    t.last_error = Some(e.clone());
                    let long_lived = t.try_after.is_none_or(|at| now > at + RESET_AFTER);
                    if long_lived {
                        t.try_now(now);
                    } else {
                        t.try_later(now, rng);
                    }
                }
            }
        }
        self.next_check = Some(now);
    }

    /// Asks for a check at `now` (after topology news).
    pub fn refresh(&mut self, now: Instant) {
        self.next_check = Some(now);
    }

    /// When [`ConnectionMaker::check`] should next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_check
    }

    /// Works out the targets and returns the dials due now.
    pub fn check(&mut self, now: Instant, ours: &[OurConnection], peers: &Peers) -> Vec<Attempt> {
        let connected_peers: BTreeSet<PeerName> = ours.iter().map(|c| c.remote).collect();
        let connected_addrs: BTreeSet<SocketAddr> = ours.iter().map(|c| c.remote_addr).collect();
        let inbound_ips: BTreeSet<IpAddr> = ours
            .iter()
            .filter(|c| !c.outbound)
            .map(|c| c.remote_addr.ip())
            .collect();
        let mut valid: BTreeSet<SocketAddr> = BTreeSet::new();
        let mut direct: BTreeSet<SocketAddr> = BTreeSet::new();
        let mut wanted: Vec<SocketAddr> = Vec::new();
        for p in self.direct.values() {
            let addr = self.complete(p);
            direct.insert(addr);
            // A peer given without a port is not dialled while it has an
            // inbound connection to us from that IP.
            if p.port.is_none() && inbound_ips.contains(&p.ip) {
                continue;
            }
            wanted.push(addr);
        }
        if self.discovery {
            let me = peers.ourself_name();
            for peer in peers.iter().filter(|p| p.name != me) {
                for (other, conn) in &peer.connections {
                    if *other == me || connected_peers.contains(other) {
                        continue;
                    }
                    let Ok(addr) = conn.remote_tcp_addr.parse::<SocketAddr>() else {
                        continue;
                    };
                    if conn.outbound {
                        wanted.push(addr);
                    } else {
                        // The far end of an inbound connection is an
                        // ephemeral port: try the mesh port instead.
                        wanted.push(SocketAddr::new(addr.ip(), self.port));
                    }
                }
            }
        }
        for addr in wanted {
            if connected_addrs.contains(&addr) {
                continue;
            }
            valid.insert(addr);
            self.targets.entry(addr).or_insert_with(|| {
                let mut t = Target {
                    state: TargetState::Waiting,
                    last_error: None,
                    try_after: None,
                    try_interval: INITIAL_INTERVAL,
                };
                t.try_now(now);
                t
            });
        }
        let mut attempts = Vec::new();
        let mut next: Option<Instant> = None;
        let mut drop = Vec::new();
        for (addr, t) in self.targets.iter_mut() {
            if t.state != TargetState::Waiting && t.state != TargetState::Suspended {
                continue;
            }
            if !valid.contains(addr) {
                if direct.contains(addr) {
                    t.state = TargetState::Suspended;
                } else {
                    drop.push(*addr);
                }
                continue;
            }
            let Some(at) = t.try_after else {
                continue;
            };
            t.state = TargetState::Waiting;
            if at <= now {
                t.state = TargetState::Attempting;
                attempts.push(Attempt {
                    addr: *addr,
                    accept_new_peer: direct.contains(addr),
                });
            } else if next.is_none_or(|n| at < n) {
                next = Some(at);
            }
        }
        for a in drop {
            self.targets.remove(&a);
        }
        self.next_check = next;
        attempts
    }

    /// Status lines for targets that are not connected.
    pub fn target_statuses(&self) -> Vec<TargetStatus> {
        let mut out = Vec::new();
        for (addr, t) in &self.targets {
            let (state, info) = match t.state {
                TargetState::Waiting => match &t.last_error {
                    None => ("waiting", String::new()),
                    Some(e) => ("failed", e.clone()),
                },
                TargetState::Attempting => match &t.last_error {
                    None => ("connecting", String::new()),
                    Some(e) => ("retrying", e.clone()),
                },
                TargetState::Connected | TargetState::Suspended => continue,
            };
            out.push(TargetStatus {
                address: *addr,
                state,
                info,
                retry_at: if t.state == TargetState::Waiting {
                    t.try_after
                } else {
                    None
                },
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::identity::{PeerUid, ShortId};
    use crate::mesh::peers::{Peer, PeerConnection};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn peers() -> Peers {
        Peers::new(Peer::new(
            PeerName::from_u64(1),
            "me",
            PeerUid(1),
            0,
            ShortId::new(1),
        ))
    }

    fn dp(ip: &str, port: Option<u16>) -> DirectPeer {
        DirectPeer {
            ip: ip.parse().unwrap(),
            port,
        }
    }

    #[test]
    fn peer_specs_split_like_weave() {
        assert_eq!(split_peer_spec("host"), Ok(("host".into(), None)));
        assert_eq!(
            split_peer_spec("10.0.0.1:6790"),
            Ok(("10.0.0.1".into(), Some(6790)))
        );
        assert_eq!(
            split_peer_spec("[::1]:6783"),
            Ok(("::1".into(), Some(6783)))
        );
        assert_eq!(split_peer_spec("fe80::1"), Ok(("fe80::1".into(), None)));
        assert_eq!(split_peer_spec("h:0"), Ok(("h".into(), None)));
        assert!(split_peer_spec(":6783").is_err());
        assert!(split_peer_spec("h:x").is_err());
        assert!(split_peer_spec("h:").is_err());
    }

    #[test]
    fn direct_targets_are_dialled_and_backed_off() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(1);
        let mut cm = ConnectionMaker::new(6783, true);
        let p = peers();
        cm.initiate_connections(vec![("10.0.0.2".into(), dp("10.0.0.2", None))], false, t0);
        let a = cm.check(t0, &[], &p);
        let addr: SocketAddr = "10.0.0.2:6783".parse().unwrap();
        assert_eq!(
            a,
            vec![Attempt {
                addr,
                accept_new_peer: true
            }]
        );
        // Attempting: no second dial.
        assert!(cm.check(t0, &[], &p).is_empty());
        // Failures back off: delays within [i/2, 3i/2) with i = 2, 3, 4.5 s...
        let mut now = t0;
        let mut interval = INITIAL_INTERVAL;
        for _ in 0..20 {
            cm.connection_aborted(addr, "refused".into(), now, &mut rng);
            assert!(cm.check(now, &[], &p).is_empty());
            let due = cm.poll_timeout().unwrap();
            let delay = due - now;
            assert!(
                delay >= interval / 2 && delay < interval * 3 / 2,
                "{delay:?} vs {interval:?}"
            );
            assert_eq!(cm.target_statuses()[0].state, "failed");
            now = due;
            assert_eq!(cm.check(now, &[], &p).len(), 1);
            interval = (interval * 3 / 2).min(MAX_INTERVAL);
        }
        assert_eq!(interval, MAX_INTERVAL);
    }

    #[test]
    fn long_lived_connection_resets_backoff_and_self_is_never_retried() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(2);
        let mut cm = ConnectionMaker::new(6783, true);
        let p = peers();
        let addr: SocketAddr = "10.0.0.2:6783".parse().unwrap();
        cm.initiate_connections(vec![("10.0.0.2".into(), dp("10.0.0.2", None))], false, t0);
        cm.check(t0, &[], &p);
        cm.connection_created(addr);
        let later = t0 + Duration::from_secs(3600);
        cm.connection_terminated(
            Some(addr),
            Termination::Error("eof".into()),
            later,
            &mut rng,
        );
        assert_eq!(cm.check(later, &[], &p).len(), 1, "retried at once");
        cm.connection_terminated(Some(addr), Termination::ConnectToSelf, later, &mut rng);
        assert!(cm.check(later + MAX_INTERVAL * 10, &[], &p).is_empty());
        assert_eq!(cm.termination_count(), 1);
        assert!(cm.targets(true).is_empty());
        assert_eq!(cm.targets(false), vec!["10.0.0.2".to_string()]);
    }

    #[test]
    fn replace_forget_and_inbound_rule() {
        let t0 = Instant::now();
        let mut cm = ConnectionMaker::new(6783, false);
        let p = peers();
        cm.initiate_connections(
            vec![
                ("a".into(), dp("10.0.0.2", None)),
                ("b".into(), dp("10.0.0.3", Some(7000))),
            ],
            false,
            t0,
        );
        // An inbound connection from 10.0.0.2 suppresses the port-less target.
        let ours = [OurConnection {
            remote: PeerName::from_u64(2),
            remote_addr: "10.0.0.2:41234".parse().unwrap(),
            outbound: false,
        }];
        let a = cm.check(t0, &ours, &p);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].addr, "10.0.0.3:7000".parse().unwrap());
        cm.initiate_connections(vec![("c".into(), dp("10.0.0.4", None))], true, t0);
        assert_eq!(cm.targets(false), vec!["c".to_string()]);
        cm.forget_connections(&["c".into()], t0);
        assert!(cm.targets(false).is_empty());
    }

    #[test]
    fn discovery_dials_peers_of_peers() {
        let t0 = Instant::now();
        let mut cm = ConnectionMaker::new(6783, true);
        let mut p = peers();
        p.add_local_connection(PeerConnection {
            remote: PeerName::from_u64(2),
            remote_tcp_addr: "10.0.0.2:6783".into(),
            outbound: true,
            established: true,
        });
        use crate::mesh::codec::{ConnectionSummary, PeerSummary, TopologyEntry};
        p.apply_update(&[TopologyEntry {
            peer: PeerSummary {
                name_byte: PeerName::from_u64(2).to_bytes().to_vec(),
                nickname: "two".into(),
                uid: 2,
                version: 1,
                short_id: 2,
                has_short_id: true,
            },
            connections: vec![
                ConnectionSummary {
                    name_byte: PeerName::from_u64(3).to_bytes().to_vec(),
                    remote_tcp_addr: "10.0.0.3:6783".into(),
                    outbound: true,
                    established: true,
                },
                ConnectionSummary {
                    name_byte: PeerName::from_u64(4).to_bytes().to_vec(),
                    remote_tcp_addr: "10.0.0.4:51000".into(),
                    outbound: false,
                    established: true,
                },
            ],
        }]);
        let ours = [OurConnection {
            remote: PeerName::from_u64(2),
            remote_addr: "10.0.0.2:6783".parse().unwrap(),
            outbound: true,
        }];
        let mut a: Vec<SocketAddr> = cm
            .check(t0, &ours, &p)
            .into_iter()
            .map(|a| a.addr)
            .collect();
        a.sort();
        assert_eq!(
            a,
            vec![
                "10.0.0.3:6783".parse().unwrap(),
                "10.0.0.4:6783".parse().unwrap()
            ]
        );
    }
}
