//! Status pages in Weave Net's formats: the text of `/status` and its
//! sub-pages (what `weave status` prints), the JSON of `/report`, and the
//! Prometheus text of `/metrics`. Pure functions of a [`Snapshot`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::ipam::{IpamMetrics, IpamStatus};
use crate::mesh::identity::PeerName;
use crate::mesh::router::{ConnectionStatus, MeshCounters, MeshStatus};
use crate::overlay::dataplane::{ConnOverlayStatus, Counters, FastdpReport};
use crate::overlay::runtime::DataplaneMode;

/// Everything the status pages show, taken from the router in one go.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Our version string.
    pub version: String,
    /// The mesh.
    pub mesh: MeshStatus,
    /// Mesh counters.
    pub counters: MeshCounters,
    /// The data plane's state of each connection, by peer.
    pub overlay: BTreeMap<PeerName, ConnOverlayStatus>,
    /// The allocator, when it runs.
    pub ipam: Option<IpamStatus>,
    /// The allocator's metrics, when it runs.
    pub ipam_metrics: Option<IpamMetrics>,
    /// How the data plane runs, when there is one.
    pub dataplane: Option<DataplaneMode>,
    /// Fastdp's latest report, when it runs.
    pub fastdp: Option<FastdpReport>,
    /// The data plane's counters (sleeve sockets, capture, injection),
    /// when it runs.
    pub sleeve: Option<Counters>,
}

/// The connection states in the order Weave lists their counts.
const CONNECTION_STATES: &[&str] = &["established", "pending", "retrying", "failed", "connecting"];

fn enabled(flag: bool) -> &'static str {
    if flag { "enabled" } else { "disabled" }
}

fn counts(counts: &BTreeMap<&str, usize>, order: &[&str]) -> String {
    order
        .iter()
        .filter_map(|state| counts.get(state).map(|n| format!("{n} {state}")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `GET /status`.
pub fn status_text(snapshot: &Snapshot) -> String {
    let mesh = &snapshot.mesh;
    let protocol = if mesh.protocol_min_version == mesh.protocol_max_version {
        mesh.protocol_max_version.to_string()
    } else {
        format!(
            "{}..{}",
            mesh.protocol_min_version, mesh.protocol_max_version
        )
    };
    let mut conn_counts = BTreeMap::new();
    for conn in &mesh.connections {
        *conn_counts.entry(conn.state.as_str()).or_insert(0) += 1;
    }
    let mut peer_conn_counts = BTreeMap::new();
    for peer in &mesh.peers {
        for conn in &peer.connections {
            let state = if conn.established {
                "established"
            } else {
                "pending"
            };
            *peer_conn_counts.entry(state).or_insert(0) += 1;
        }
    }
    let conn_counts = counts(&conn_counts, CONNECTION_STATES);
    let peer_conn_counts = counts(&peer_conn_counts, &["established", "pending"]);
    let mut out = String::new();
    let _ = writeln!(out, "        Version: {}", snapshot.version);
    let _ = writeln!(out);
    let _ = writeln!(out, "        Service: router");
    let _ = writeln!(out, "       Protocol: weave {protocol}");
    let _ = writeln!(out, "           Name: {}({})", mesh.name, mesh.nickname);
    let _ = writeln!(out, "     Encryption: {}", enabled(mesh.encryption));
    let _ = writeln!(out, "  PeerDiscovery: {}", enabled(mesh.peer_discovery));
    let _ = writeln!(out, "        Targets: {}", mesh.targets.len());
    let _ = write!(out, "    Connections: {}", mesh.connections.len());
    if !conn_counts.is_empty() {
        let _ = write!(out, " ({conn_counts})");
    }
    let _ = writeln!(out);
    let _ = write!(out, "          Peers: {}", mesh.peers.len());
    if !peer_conn_counts.is_empty() {
        let _ = write!(out, " (with {peer_conn_counts} connections)");
    }
    let _ = writeln!(out);
    let trusted = if mesh.trusted_subnets.is_empty() {
        "none".to_string()
    } else {
        mesh.trusted_subnets.join(", ")
    };
    let _ = writeln!(out, " TrustedSubnets: {trusted}");
    if let Some(mode) = &snapshot.dataplane {
        let _ = writeln!(out, "     BridgeType: {}", mode.bridge_type);
        let _ = writeln!(out, "         FastDP: {}", mode.fastdp_line());
    }
    if let Some(ipam) = &snapshot.ipam {
        let _ = writeln!(out);
        let _ = writeln!(out, "        Service: ipam");
        ipam_state_lines(ipam, &mut out);
    }
    out
}

/// The allocator's state in `/status`'s layout: its status (ready,
/// awaiting consensus with the quorum, priming, idle), the range, the
/// owned prefixes and what waits.
fn ipam_state_lines(ipam: &IpamStatus, out: &mut String) {
    let _ = writeln!(out, "         Status: {}", ipam.status_line());
    let _ = writeln!(out, "          Range: {}", ipam.range);
    let _ = writeln!(out, "  DefaultSubnet: {}", ipam.range);
    if !ipam.cidr_view.is_empty() {
        let prefixes: Vec<String> = ipam.cidr_view.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "       Prefixes: {}", prefixes.join(" "));
    }
    for pending in ipam.pending_allocates.iter().chain(&ipam.pending_claims) {
        let _ = writeln!(
            out,
            "        Waiting: {} {}: {}",
            pending.ident, pending.cidr, pending.reason
        );
    }
}

/// `GET /status/ipam`: each owning peer's share of the range, and our
/// owned ranges as the aligned prefixes the data plane installs. Before
/// the ring has an owner (no allocation or claim yet) Weave's page would
/// be empty; ours then says the allocator's state instead: the range and
/// that it awaits consensus (with quorum and known peers), primes or idles.
pub fn ipam_text(snapshot: &Snapshot) -> String {
    match &snapshot.ipam {
        Some(ipam) if ipam.entries.is_empty() => {
            let mut text = String::new();
            ipam_state_lines(ipam, &mut text);
            text
        }
        Some(ipam) => {
            let mut text = ipam.ranges_text();
            if !ipam.cidr_view.is_empty() {
                let prefixes: Vec<String> =
                    ipam.cidr_view.iter().map(ToString::to_string).collect();
                text.push_str(&format!("owned prefixes: {}\n", prefixes.join(" ")));
            }
            text
        }
        None => "IP address allocation is not running\n".into(),
    }
}

/// `GET /status/targets`: one target per line.
pub fn targets_text(snapshot: &Snapshot) -> String {
    snapshot
        .mesh
        .targets
        .iter()
        .map(|target| format!("{target}\n"))
        .collect()
}

fn direction(outbound: bool) -> &'static str {
    if outbound { "->" } else { "<-" }
}

/// `GET /status/connections`: one line per connection or attempt, with
/// Weave's `Info` (overlay, peer) and then our extras: the overlay's
/// other attributes and why that overlay carries the traffic.
pub fn connections_text(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    for conn in &snapshot.mesh.connections {
        let overlay = connection_overlay(snapshot, conn);
        let mut extras = String::new();
        if let Some(o) = overlay {
            for (key, value) in o.attrs.iter().filter(|(k, _)| k != "name") {
                let _ = write!(extras, " {key}={value}");
            }
            let _ = write!(extras, " ({})", o.reason);
        }
        let _ = writeln!(
            out,
            "{} {:<21} {:<11} {}{extras}",
            direction(conn.outbound),
            conn.address,
            conn.state,
            weave_info(conn, overlay, snapshot.mesh.encryption),
        );
    }
    out
}

/// The data plane's state of `conn`'s peer, for a connection (not for a
/// target, which has no peer yet).
fn connection_overlay<'a>(
    snapshot: &'a Snapshot,
    conn: &ConnectionStatus,
) -> Option<&'a ConnOverlayStatus> {
    conn.remote
        .as_ref()
        .and_then(|(name, _)| snapshot.overlay.get(name))
}

/// The overlay carrying a connection's traffic, `none` while there is
/// none (Weave's word).
fn overlay_name(overlay: Option<&ConnOverlayStatus>) -> &str {
    overlay.and_then(|o| o.overlay.as_deref()).unwrap_or("none")
}

/// A connection's `Info` as Weave writes it: the overlay padded to six
/// columns and the peer; when the router has a password, prefixed by
/// `encrypted` or `unencrypted` (a trusted subnet) padded to eleven. A
/// target's `Info` (its last error) is left as it is.
fn weave_info(
    conn: &ConnectionStatus,
    overlay: Option<&ConnOverlayStatus>,
    using_password: bool,
) -> String {
    if conn.remote.is_none() {
        return conn.info.clone();
    }
    let info = format!("{:<6} {}", overlay_name(overlay), conn.info);
    if using_password {
        let word = if conn.encrypted {
            "encrypted"
        } else {
            "unencrypted"
        };
        format!("{word:<11} {info}")
    } else {
        info
    }
}

/// A connection's `Attrs` as Weave fills them: the overlay's `name` and
/// `mtu`, and `encrypted: true` on an encrypted link; `null` for a target
/// or while no overlay carries the connection. Our other attributes are
/// in `Dataplane.Connections`.
fn weave_attrs(conn: &ConnectionStatus, overlay: Option<&ConnOverlayStatus>) -> Value {
    let Some(o) = overlay.filter(|o| o.overlay.is_some()) else {
        return Value::Null;
    };
    let mut attrs = serde_json::Map::new();
    attrs.insert("name".into(), json!(overlay_name(Some(o))));
    if let Some((_, mtu)) = o.attrs.iter().find(|(k, _)| k == "mtu") {
        let mtu = mtu.parse::<u64>().map_or_else(|_| json!(mtu), |n| json!(n));
        attrs.insert("mtu".into(), mtu);
    }
    if conn.encrypted {
        attrs.insert("encrypted".into(), json!(true));
    }
    Value::Object(attrs)
}

/// `GET /status/peers`: each peer and the connections it reports.
pub fn peers_text(snapshot: &Snapshot) -> String {
    let mesh = &snapshot.mesh;
    let nicknames: BTreeMap<_, _> = mesh
        .peers
        .iter()
        .map(|peer| (peer.name, peer.nickname.as_str()))
        .collect();
    let mut out = String::new();
    for peer in &mesh.peers {
        let _ = writeln!(out, "{}({})", peer.name, peer.nickname);
        for conn in &peer.connections {
            let nickname = nicknames.get(&conn.remote).copied().unwrap_or("");
            let _ = writeln!(
                out,
                "   {} {:<21} {:<37} {}",
                direction(conn.outbound),
                conn.remote_tcp_addr,
                format!("{}({nickname})", conn.remote),
                if conn.established {
                    "established"
                } else {
                    "pending"
                }
            );
        }
    }
    out
}

fn connection_json(snapshot: &Snapshot, conn: &ConnectionStatus) -> Value {
    let overlay = connection_overlay(snapshot, conn);
    json!({
        "Address": conn.address,
        "Outbound": conn.outbound,
        "State": conn.state,
        "Info": weave_info(conn, overlay, snapshot.mesh.encryption),
        "Attrs": weave_attrs(conn, overlay),
    })
}

/// `GET /report`: the JSON document `weave report` prints, with Weave's
/// field names for the parts we have.
pub fn report_json(snapshot: &Snapshot) -> Value {
    let mesh = &snapshot.mesh;
    let nicknames: BTreeMap<_, _> = mesh
        .peers
        .iter()
        .map(|peer| (peer.name, peer.nickname.clone()))
        .collect();
    let peers: Vec<Value> = mesh
        .peers
        .iter()
        .map(|peer| {
            let connections: Vec<Value> = peer
                .connections
                .iter()
                .map(|conn| {
                    json!({
                        "Name": conn.remote.to_string(),
                        "NickName": nicknames.get(&conn.remote).cloned().unwrap_or_default(),
                        "Address": conn.remote_tcp_addr,
                        "Outbound": conn.outbound,
                        "Established": conn.established,
                    })
                })
                .collect();
            json!({
                "Name": peer.name.to_string(),
                "NickName": peer.nickname,
                "UID": peer.uid.0,
                "ShortID": peer.short_id.get(),
                "Version": peer.version,
                "Connections": connections,
            })
        })
        .collect();
    let unicast: Vec<Value> = mesh
        .unicast_routes
        .iter()
        .map(|(dest, via)| json!({"Dest": dest.to_string(), "Via": via.to_string()}))
        .collect();
    json!({
        "Ready": true,
        "Version": snapshot.version,
        "Router": {
            "Protocol": "weave",
            "ProtocolMinVersion": mesh.protocol_min_version,
            "ProtocolMaxVersion": mesh.protocol_max_version,
            "Encryption": mesh.encryption,
            "PeerDiscovery": mesh.peer_discovery,
            "Name": mesh.name.to_string(),
            "NickName": mesh.nickname,
            "Port": mesh.port,
            "Peers": peers,
            "UnicastRoutes": unicast,
            "BroadcastRoutes": mesh.broadcast_routes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "Connections": mesh.connections.iter().map(|c| connection_json(snapshot, c)).collect::<Vec<_>>(),
            "TerminationCount": mesh.termination_count,
            "Targets": mesh.targets,
            "TrustedSubnets": mesh.trusted_subnets,
        },
        "IPAM": snapshot.ipam.as_ref().map(ipam_json),
        "Dataplane": dataplane_json(snapshot),
    })
}

fn dataplane_json(snapshot: &Snapshot) -> Value {
    let Some(mode) = &snapshot.dataplane else {
        return Value::Null;
    };
    let fastdp = snapshot.fastdp.as_ref().map(|f| {
        json!({
            "Datapath": f.datapath,
            "Vports": f.vports.iter().map(|v| json!({
                "PortNo": v.port_no,
                "Name": v.name,
                "Type": v.kind,
            })).collect::<Vec<_>>(),
            "Flows": f.flows,
            "ProactiveFlows": f.status.proactive_flows,
            "MACs": f.status.macs,
            "Hit": f.hit_missed_lost.0,
            "Missed": f.hit_missed_lost.1,
            "Lost": f.hit_missed_lost.2,
            "Misses": f.status.counters.misses,
            "ReactiveFlows": f.status.counters.reactive_flows,
            "Heartbeats": f.status.counters.heartbeats,
            "Containers": f.containers,
            "Failures": f.failures,
            "Peers": f.status.peers.iter().map(|p| json!({
                "Name": p.peer.to_string(),
                "VXLAN": p.remote.to_string(),
                "Selected": p.selected,
                "Established": p.established,
                "Healthy": p.healthy,
            })).collect::<Vec<_>>(),
        })
    });
    let sleeve = snapshot.sleeve.as_ref().map(|c| {
        json!({
            "Captured": c.captured,
            "GSOCaptured": c.gso_captured,
            "GSODropped": c.gso_dropped,
            "ChecksumsCompleted": c.checksums_completed,
            "CaptureReads": c.capture_reads,
            "CaptureDrops": c.capture_drops,
            "DatagramsOut": c.datagrams_out,
            "UDPSends": c.udp_sends,
            "SendFailures": c.send_failures,
            "DatagramsIn": c.datagrams_in,
            "UDPReads": c.udp_reads,
            "BadDatagrams": c.bad_datagrams,
            "Injected": c.injected,
            "Coalesced": c.coalesced,
            "InjectSends": c.inject_sends,
            "InjectFailures": c.inject_failures,
            "Dropped": c.dropped,
        })
    });
    json!({
        "BridgeType": mode.bridge_type.as_str(),
        "Requested": mode.requested.as_str(),
        "FastDP": mode.fastdp_line(),
        "FastDPEnabled": mode.overlays.contains(&"fastdp"),
        "FallbackReason": mode.fallback,
        "MTU": mode.mtu,
        "Bridge": mode.bridge,
        "Datapath": mode.datapath,
        "Overlays": mode.overlays,
        "Fastdp": fastdp,
        "Sleeve": sleeve,
        "Connections": overlay_connections_json(snapshot),
    })
}

/// Per peer, what the data plane knows of its connection beyond Weave's
/// `Attrs`: the peer's name and nickname, the overlay, why that one,
/// whether it is established, and every attribute (fastdp health, the
/// VXLAN endpoint, the sleeve's MTU).
fn overlay_connections_json(snapshot: &Snapshot) -> Vec<Value> {
    let nicknames: BTreeMap<_, _> = snapshot
        .mesh
        .peers
        .iter()
        .map(|peer| (peer.name, peer.nickname.as_str()))
        .collect();
    snapshot
        .overlay
        .iter()
        .map(|(peer, o)| {
            let attrs: serde_json::Map<String, Value> =
                o.attrs.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            json!({
                "Peer": peer.to_string(),
                "NickName": nicknames.get(peer).copied().unwrap_or(""),
                "Overlay": overlay_name(Some(o)),
                "Reason": o.reason,
                "Established": o.established,
                "Attrs": attrs,
            })
        })
        .collect()
}

fn ipam_json(ipam: &IpamStatus) -> Value {
    let entries: Vec<Value> = ipam
        .entries
        .iter()
        .map(|entry| {
            json!({
                "Token": entry.token.to_string(),
                "Size": entry.size,
                "Peer": entry.peer.to_string(),
                "Nickname": entry.nickname.clone().unwrap_or_default(),
                "IsKnownPeer": entry.is_known_peer,
                "Version": entry.version,
            })
        })
        .collect();
    let pending = |list: &[crate::ipam::allocator::PendingStatus]| -> Vec<Value> {
        list.iter()
            .map(|p| json!({"Ident": p.ident, "CIDR": p.cidr.to_string(), "Reason": p.reason.to_string()}))
            .collect()
    };
    json!({
        "Paxos": ipam.paxos.as_ref().map(|p| json!({
            "Elector": p.elector,
            "KnownNodes": p.known_nodes,
            "Quorum": p.quorum,
        })),
        "Range": ipam.range.to_string(),
        "RangeNumIPs": ipam.range_num_ips,
        "ActiveIPs": ipam.active_ips,
        "DefaultSubnet": ipam.range.to_string(),
        "Entries": entries,
        "PendingClaims": pending(&ipam.pending_claims),
        "PendingAllocates": pending(&ipam.pending_allocates),
        "Status": ipam.status_line(),
        "OwnedCIDRs": ipam.cidr_view.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

/// `GET /metrics`: Prometheus text exposition, with Weave's metric names.
pub fn metrics_text(snapshot: &Snapshot) -> String {
    let mesh = &snapshot.mesh;
    let mut out = String::new();
    let mut by_label: BTreeMap<(String, &str), usize> = BTreeMap::new();
    for conn in &mesh.connections {
        let encryption = if conn.encrypted { "yes" } else { "no" };
        *by_label
            .entry((conn.state.clone(), encryption))
            .or_insert(0) += 1;
    }
    let _ = writeln!(
        out,
        "# HELP weave_connections Number of peer-to-peer connections."
    );
    let _ = writeln!(out, "# TYPE weave_connections gauge");
    for state in CONNECTION_STATES {
        for encryption in ["no", "yes"] {
            let n = by_label
                .get(&((*state).to_string(), encryption))
                .copied()
                .unwrap_or(0);
            let _ = writeln!(
                out,
                "weave_connections{{encryption=\"{encryption}\",state=\"{state}\",type=\"\"}} {n}"
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP weave_connection_terminations_total Number of peer-to-peer connections terminated."
    );
    let _ = writeln!(out, "# TYPE weave_connection_terminations_total counter");
    let _ = writeln!(
        out,
        "weave_connection_terminations_total {}",
        mesh.termination_count
    );
    let _ = writeln!(out, "# HELP weave_peers Number of peers known.");
    let _ = writeln!(out, "# TYPE weave_peers gauge");
    let _ = writeln!(out, "weave_peers {}", mesh.peers.len());
    let _ = writeln!(
        out,
        "# HELP weave_gossip_messages_total Gossip messages, by direction."
    );
    let _ = writeln!(out, "# TYPE weave_gossip_messages_total counter");
    let _ = writeln!(
        out,
        "weave_gossip_messages_total{{direction=\"sent\"}} {}",
        snapshot.counters.gossip_sent
    );
    let _ = writeln!(
        out,
        "weave_gossip_messages_total{{direction=\"received\"}} {}",
        snapshot.counters.gossip_received
    );
    if let Some(f) = &snapshot.fastdp {
        let _ = writeln!(
            out,
            "# HELP weave_flows Number of flows installed in the kernel datapath."
        );
        let _ = writeln!(out, "# TYPE weave_flows gauge");
        let _ = writeln!(out, "weave_flows {}", f.flows);
    }
    if let Some(m) = &snapshot.ipam_metrics {
        for (name, help, value) in [
            ("weave_ips", "Number of IP addresses allocated here.", m.ips),
            (
                "weave_max_ips",
                "Size of the IP allocation range.",
                m.max_ips,
            ),
            (
                "weave_ipam_unreachable_count",
                "Number of ring ranges owned by unreachable peers.",
                m.unreachable_count,
            ),
            (
                "weave_ipam_pending_allocates",
                "Number of allocations waiting for space or consensus.",
                m.pending_allocates,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {value}");
        }
    }
    out
}
