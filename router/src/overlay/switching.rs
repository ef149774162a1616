//! Where a frame goes: MAC learning and the forwarding decision of the
//! Bridge-mode data plane, sans-IO.
//!
//! The rules are Weave Net 2.8.1's (`router/network_router.go`,
//! `router/mac_cache.go`), in our own words:
//!
//! - **Captured frames** (from the local bridge) teach "this source MAC is
//!   here". A source already known behind another peer is a conflict (most
//!   likely a frame we injected ourselves coming back): the frame is
//!   dropped and the table left alone. Spanning-tree frames are dropped.
//!   A destination known to be local is dropped (the bridge should not
//!   have sent it to us); a destination behind a peer goes along the
//!   unicast route to that peer; an unknown destination (broadcasts,
//!   multicast, not yet learned) is flooded along our broadcast routes.
//! - **Forwarded frames** (from a peer, naming a source and a destination
//!   peer) that are addressed to another peer are relayed along the
//!   unicast route. Those addressed to us always move their source MAC to
//!   the source peer, are injected into the bridge, and, unless the
//!   destination MAC is known to be local, are flooded on along the
//!   broadcast routes of the source peer (a flooded frame names the
//!   next-hop peer as destination on every hop).
//! - Entries not seen for ten minutes expire; a peer that goes away takes
//!   its entries with it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::mesh::identity::PeerName;
use crate::mesh::peers::Peers;
use crate::mesh::routes::{Routes, broadcast_hops};

/// An Ethernet address.
pub type Mac = [u8; 6];

/// How long a MAC entry lives without being seen (Weave's `macMaxAge`).
pub const MAC_MAX_AGE: Duration = Duration::from_secs(10 * 60);

/// Last-seen times are refreshed at most this often, to keep the hot path
/// free of writes.
const REFRESH: Duration = Duration::from_secs(60);

/// The destination of IEEE 802.1D spanning-tree frames.
pub const STP_DST: Mac = [0x01, 0x80, 0xc2, 0x00, 0x00, 0x00];

/// Where a MAC address lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Location {
    /// On our bridge.
    Local,
    /// Behind this peer.
    Peer(PeerName),
}

/// What learning a source address did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// A new entry.
    New,
    /// Same place as before.
    Unchanged,
    /// The address moved from this location.
    Moved(Location),
    /// A local frame claims an address known behind this peer; the table
    /// is unchanged.
    Conflict(PeerName),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    location: Location,
    last_seen: Instant,
}

/// The MAC learning table.
#[derive(Debug, Clone)]
pub struct MacCache {
    entries: HashMap<Mac, Entry>,
    max_age: Duration,
}

impl MacCache {
    /// An empty table whose entries live `max_age` unseen.
    pub fn new(max_age: Duration) -> Self {
        MacCache {
            entries: HashMap::new(),
            max_age,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Where `mac` lives, if known.
    pub fn lookup(&self, mac: &Mac) -> Option<Location> {
        self.entries.get(mac).map(|e| e.location)
    }

    /// A frame from `mac` was captured on our bridge.
    pub fn learn_local(&mut self, mac: Mac, now: Instant) -> Learned {
        match self.entries.get_mut(&mac) {
            Some(e) => match e.location {
                Location::Peer(peer) => Learned::Conflict(peer),
                Location::Local => {
                    refresh(e, now);
                    Learned::Unchanged
                }
            },
            None => {
                self.entries.insert(
                    mac,
                    Entry {
                        location: Location::Local,
                        last_seen: now,
                    },
                );
                Learned::New
            }
        }
    }

    /// A frame from `mac` arrived from `peer`, addressed to us: the
    /// address moves there whatever it was before.
    pub fn learn_remote(&mut self, mac: Mac, peer: PeerName, now: Instant) -> Learned {
        let location = Location::Peer(peer);
        match self.entries.get_mut(&mac) {
            Some(e) if e.location == location => {
                refresh(e, now);
                Learned::Unchanged
            }
            Some(e) => {
                let old = e.location;
                *e = Entry {
                    location,
                    last_seen: now,
                };
                Learned::Moved(old)
            }
            None => {
                self.entries.insert(
                    mac,
                    Entry {
                        location,
                        last_seen: now,
                    },
                );
                Learned::New
            }
        }
    }

    /// Removes entries unseen for the maximum age; returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<(Mac, Location)> {
        let max_age = self.max_age;
        let mut gone = Vec::new();
        self.entries.retain(|mac, e| {
            let keep = now.saturating_duration_since(e.last_seen) < max_age;
            if !keep {
                gone.push((*mac, e.location));
            }
            keep
        });
        gone
    }

    /// Forgets every address behind `peer`; returns how many.
    pub fn forget_peer(&mut self, peer: PeerName) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| e.location != Location::Peer(peer));
        before - self.entries.len()
    }
}

fn refresh(e: &mut Entry, now: Instant) {
    if now.saturating_duration_since(e.last_seen) >= REFRESH {
        e.last_seen = now;
    }
}

/// The mesh routes as the data plane needs them: next hops towards each
/// reachable peer, and for each source the neighbours a flood from it is
/// passed on to. Computed by the control plane, swapped in whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    /// Next hop towards each peer (over established, symmetric links).
    pub unicast: BTreeMap<PeerName, PeerName>,
    /// Neighbours a flood started by each source goes on to.
    pub broadcast: BTreeMap<PeerName, Vec<PeerName>>,
}

impl RouteTable {
    /// Builds the table from the mesh's peers and routes.
    pub fn from_mesh(peers: &Peers, routes: &Routes) -> Self {
        let unicast = routes.unicast.clone();
        let broadcast = peers
            .iter()
            .map(|p| (p.name, broadcast_hops(peers, p.name, true)))
            .collect();
        RouteTable { unicast, broadcast }
    }
}

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A captured frame's source is known behind this peer.
    Conflict(PeerName),
    /// A spanning-tree frame.
    Stp,
    /// A captured frame for a local address.
    LocalDestination,
    /// No route to the destination peer.
    NoRoute(PeerName),
}

/// Sending one frame to a neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Send {
    /// The neighbour whose connection carries it.
    pub via: PeerName,
    /// The source peer named in the frame record.
    pub src: PeerName,
    /// The destination peer named in the frame record.
    pub dst: PeerName,
}

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing.
    Drop(DropReason),
    /// Send it to one neighbour.
    Unicast(Send),
    /// Inject it into the bridge only.
    Inject,
    /// Flood it from `src` to every neighbour in
    /// [`Switch::broadcast_hops`]`(src)`, each hop named as destination;
    /// with `inject`, also inject it into the bridge.
    Flood {
        /// The peer the flood started at.
        src: PeerName,
        /// Whether to inject it locally too.
        inject: bool,
    },
}

/// The forwarding state of one router: its name, the MAC table and the
/// routes.
#[derive(Debug, Clone)]
pub struct Switch {
    ourself: PeerName,
    macs: MacCache,
    routes: RouteTable,
}

impl Switch {
    /// A switch for peer `ourself` with no routes yet.
    pub fn new(ourself: PeerName) -> Self {
        Switch {
            ourself,
            macs: MacCache::new(MAC_MAX_AGE),
            routes: RouteTable::default(),
        }
    }

    /// Our peer name.
    pub fn ourself(&self) -> PeerName {
        self.ourself
    }

    /// The MAC table.
    pub fn macs(&self) -> &MacCache {
        &self.macs
    }

    /// The MAC table, to expire or forget entries.
    pub fn macs_mut(&mut self) -> &mut MacCache {
        &mut self.macs
    }

    /// Replaces the routes.
    pub fn set_routes(&mut self, routes: RouteTable) {
        self.routes = routes;
    }

    /// Whether `peer` is in the mesh's peer table (as of the last routes).
    pub fn knows(&self, peer: PeerName) -> bool {
        self.routes.broadcast.contains_key(&peer)
    }

    /// The neighbours a flood started at `src` goes on to.
    pub fn broadcast_hops(&self, src: PeerName) -> &[PeerName] {
        self.routes
            .broadcast
            .get(&src)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    fn unicast(&self, src: PeerName, dst: PeerName) -> Decision {
        match self.routes.unicast.get(&dst) {
            Some(via) if *via != PeerName::UNKNOWN => Decision::Unicast(Send {
                via: *via,
                src,
                dst,
            }),
            _ => Decision::Drop(DropReason::NoRoute(dst)),
        }
    }

    /// Decides about a frame captured on our bridge.
    pub fn captured(&mut self, src_mac: Mac, dst_mac: Mac, now: Instant) -> Decision {
        if let Learned::Conflict(peer) = self.macs.learn_local(src_mac, now) {
            return Decision::Drop(DropReason::Conflict(peer));
        }
        if dst_mac == STP_DST {
            return Decision::Drop(DropReason::Stp);
        }
        match self.macs.lookup(&dst_mac) {
            Some(Location::Local) => Decision::Drop(DropReason::LocalDestination),
            Some(Location::Peer(peer)) => self.unicast(self.ourself, peer),
            None => Decision::Flood {
                src: self.ourself,
                inject: false,
            },
        }
    }

    /// Decides about a frame that arrived from a peer, naming `src` and
    /// `dst` peers.
    pub fn forwarded(
        &mut self,
        src: PeerName,
        dst: PeerName,
        src_mac: Mac,
        dst_mac: Mac,
        now: Instant,
    ) -> Decision {
        if dst != self.ourself {
            return self.unicast(src, dst);
        }
        self.macs.learn_remote(src_mac, src, now);
        match self.macs.lookup(&dst_mac) {
            Some(Location::Local) => Decision::Inject,
            _ => Decision::Flood { src, inject: true },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u64) -> PeerName {
        PeerName::from_u64(n)
    }

    const M1: Mac = [2, 0, 0, 0, 0, 1];
    const M2: Mac = [2, 0, 0, 0, 0, 2];
    const BCAST: Mac = [0xff; 6];

    /// A line 1 - 2 - 3 seen from 2: both neighbours direct; a flood from
    /// 1 goes on to 3 and vice versa; our own floods go to both.
    fn line_from_2() -> Switch {
        let mut s = Switch::new(p(2));
        s.set_routes(RouteTable {
            unicast: [(p(1), p(1)), (p(2), PeerName::UNKNOWN), (p(3), p(3))].into(),
            broadcast: [
                (p(1), vec![p(3)]),
                (p(2), vec![p(1), p(3)]),
                (p(3), vec![p(1)]),
            ]
            .into(),
        });
        s
    }

    #[test]
    fn captured_frames_learn_and_flood_until_the_destination_is_known() {
        let t = Instant::now();
        let mut s = line_from_2();
        assert_eq!(
            s.captured(M1, BCAST, t),
            Decision::Flood {
                src: p(2),
                inject: false
            }
        );
        assert_eq!(s.broadcast_hops(p(2)), &[p(1), p(3)]);
        assert_eq!(s.macs().lookup(&M1), Some(Location::Local));
        // The answer comes from peer 3: learnt there.
        assert_eq!(s.forwarded(p(3), p(2), M2, M1, t), Decision::Inject);
        assert_eq!(s.macs().lookup(&M2), Some(Location::Peer(p(3))));
        // Now unicast.
        assert_eq!(
            s.captured(M1, M2, t),
            Decision::Unicast(Send {
                via: p(3),
                src: p(2),
                dst: p(3)
            })
        );
        // A local destination is not ours to forward; STP is dropped.
        assert_eq!(
            s.captured(M2.map(|b| b ^ 0x10), M1, t),
            Decision::Drop(DropReason::LocalDestination)
        );
        assert_eq!(s.captured(M1, STP_DST, t), Decision::Drop(DropReason::Stp));
    }

    #[test]
    fn a_captured_source_known_remotely_is_a_conflict() {
        let t = Instant::now();
        let mut s = line_from_2();
        s.forwarded(p(1), p(2), M1, BCAST, t);
        assert_eq!(
            s.captured(M1, M2, t),
            Decision::Drop(DropReason::Conflict(p(1)))
        );
        assert_eq!(s.macs().lookup(&M1), Some(Location::Peer(p(1))));
        // A forwarded frame moves it regardless.
        assert_eq!(
            s.macs.learn_remote(M1, p(3), t),
            Learned::Moved(Location::Peer(p(1)))
        );
    }

    #[test]
    fn forwarded_frames_are_relayed_or_injected_and_flooded_on() {
        let t = Instant::now();
        let mut s = line_from_2();
        // For peer 3, from 1: relayed, names kept.
        assert_eq!(
            s.forwarded(p(1), p(3), M1, M2, t),
            Decision::Unicast(Send {
                via: p(3),
                src: p(1),
                dst: p(3)
            })
        );
        // Relaying learns nothing.
        assert_eq!(s.macs().lookup(&M1), None);
        // A broadcast from 1 to us: injected and passed on to 3.
        assert_eq!(
            s.forwarded(p(1), p(2), M1, BCAST, t),
            Decision::Flood {
                src: p(1),
                inject: true
            }
        );
        assert_eq!(s.broadcast_hops(p(1)), &[p(3)]);
        // Unknown peers have no route.
        assert_eq!(
            s.forwarded(p(1), p(9), M1, M2, t),
            Decision::Drop(DropReason::NoRoute(p(9)))
        );
        assert_eq!(s.broadcast_hops(p(9)), &[] as &[PeerName]);
    }

    #[test]
    fn entries_expire_and_go_with_their_peer() {
        let t = Instant::now();
        let mut c = MacCache::new(Duration::from_secs(600));
        assert_eq!(c.learn_local(M1, t), Learned::New);
        assert_eq!(c.learn_remote(M2, p(5), t), Learned::New);
        assert_eq!(c.learn_remote(M2, p(5), t), Learned::Unchanged);
        // Seen again after 5 minutes: kept past the first deadline.
        c.learn_local(M1, t + Duration::from_secs(300));
        let gone = c.expire(t + Duration::from_secs(601));
        assert_eq!(gone, vec![(M2, Location::Peer(p(5)))]);
        assert_eq!(c.len(), 1);
        c.learn_remote(M2, p(5), t);
        assert_eq!(c.forget_peer(p(5)), 1);
        assert!(c.expire(t + Duration::from_secs(901)).len() == 1);
        assert!(c.is_empty());
    }
}
