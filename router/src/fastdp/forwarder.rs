//! The fastdp side of one mesh connection (Weave's
//! `fastDatapathForwarder`): the peer's VXLAN address, heartbeat timing and
//! health, and whether the overlay switch currently sends through fastdp.
//!
//! Facts from Weave Net 2.8.1 (`router/fastdp.go`):
//!
//! - the peer's VXLAN address starts as its TCP address with the VXLAN
//!   port: the mesh port + 1 it dialled for an outbound connection, our own
//!   VXLAN port for an inbound one. A valid heartbeat from another address
//!   replaces it (the peer's address changed);
//! - heartbeats are VXLAN frames with zero MACs carrying the connection
//!   UID and their own length, padded to the MTU and sent DF; the first
//!   valid one received is acknowledged over the TCP connection with
//!   fastdp control tag 0 (an `OverlayControlMsg` whose body is
//!   `[overlay index][0]`, no payload); timing and health are
//!   [`FastdpHealth`]'s.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use crate::mesh::identity::PeerName;
use crate::sleeve::fastdp_health::{FastdpEvent, FastdpHealth, is_heartbeat};

/// What the mesh tells fastdp about a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionParams {
    /// The remote peer.
    pub peer: PeerName,
    /// The connection's UID (both ends know it from the handshake).
    pub conn_uid: u64,
    /// Our address on the connection (the outer source of our frames).
    pub local_ip: Ipv4Addr,
    /// The remote end of the TCP connection.
    pub remote_tcp: SocketAddrV4,
    /// Whether we dialled.
    pub outbound: bool,
}

/// One connection's fastdp state.
#[derive(Debug, Clone)]
pub struct Forwarder {
    params: ConnectionParams,
    remote: SocketAddrV4,
    health: FastdpHealth,
    selected: bool,
}

impl Forwarder {
    /// A forwarder for `params`; `local_vxlan_port` is our own VXLAN port.
    /// Returns `None` when the peer's VXLAN port would overflow.
    pub fn new(params: ConnectionParams, local_vxlan_port: u16) -> Option<Self> {
        let port = if params.outbound {
            params.remote_tcp.port().checked_add(1)?
        } else {
            local_vxlan_port
        };
        Some(Forwarder {
            params,
            remote: SocketAddrV4::new(*params.remote_tcp.ip(), port),
            health: FastdpHealth::new(),
            selected: false,
        })
    }

    /// The connection parameters.
    pub fn params(&self) -> &ConnectionParams {
        &self.params
    }

    /// The peer's VXLAN address.
    pub fn remote(&self) -> SocketAddrV4 {
        self.remote
    }

    /// Whether the overlay switch sends through fastdp on this connection.
    pub fn selected(&self) -> bool {
        self.selected
    }

    /// Sets whether the overlay switch sends through fastdp.
    pub fn set_selected(&mut self, selected: bool) {
        self.selected = selected;
    }

    /// The heartbeat state.
    pub fn health(&self) -> &FastdpHealth {
        &self.health
    }

    /// The mesh confirmed the connection: heartbeats start.
    pub fn confirm(&mut self, now: Instant) {
        self.health.confirm(now, true);
    }

    /// When [`Forwarder::poll`] next has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.health.next_deadline()
    }

    /// Runs the timers.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<FastdpEvent>) {
        self.health.poll(now, out);
    }

    /// The peer acknowledged a heartbeat.
    pub fn on_ack(&mut self, now: Instant, out: &mut Vec<FastdpEvent>) {
        self.health.on_ack(now, out);
    }

    /// A special (zero-MAC) frame arrived over VXLAN from `sender`. Returns
    /// whether it was a valid heartbeat of this connection and whether the
    /// peer's address changed.
    pub fn on_special_frame(
        &mut self,
        frame: &[u8],
        sender: SocketAddrV4,
        now: Instant,
        out: &mut Vec<FastdpEvent>,
    ) -> (bool, bool) {
        if !is_heartbeat(frame, self.params.conn_uid) {
            return (false, false);
        }
        let moved = sender != self.remote;
        if moved {
            self.remote = sender;
        }
        self.health.on_heartbeat(now, false, out);
        (true, moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sleeve::fastdp_health::heartbeat_frame;

    fn params(outbound: bool) -> ConnectionParams {
        ConnectionParams {
            peer: PeerName::from_u64(2),
            conn_uid: 77,
            local_ip: Ipv4Addr::new(192, 0, 2, 1),
            remote_tcp: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), 40000),
            outbound,
        }
    }

    #[test]
    fn vxlan_address_of_outbound_and_inbound() {
        let f = Forwarder::new(params(true), 6784).unwrap();
        assert_eq!(f.remote().port(), 40001);
        let f = Forwarder::new(params(false), 6784).unwrap();
        assert_eq!(f.remote().port(), 6784);
        let mut p = params(true);
        p.remote_tcp.set_port(u16::MAX);
        assert!(Forwarder::new(p, 6784).is_none());
    }

    #[test]
    fn heartbeat_acknowledged_once_and_address_follows_sender() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(params(false), 6784).unwrap();
        f.confirm(t0);
        let mut out = Vec::new();
        f.poll(t0, &mut out);
        assert_eq!(out, vec![FastdpEvent::SendHeartbeat]);
        out.clear();
        let hb = heartbeat_frame(77, 1376);
        let from = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 9), 6784);
        assert_eq!(f.on_special_frame(&hb, from, t0, &mut out), (true, true));
        assert_eq!(f.remote(), from);
        assert_eq!(f.on_special_frame(&hb, from, t0, &mut out), (true, false));
        assert_eq!(out, vec![FastdpEvent::AckPeer]);
        let other = heartbeat_frame(78, 1376);
        assert_eq!(
            f.on_special_frame(&other, from, t0, &mut out),
            (false, false)
        );
    }
}
