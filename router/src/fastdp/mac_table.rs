//! Where each MAC address was last seen: on one of our datapath ports, or
//! behind a peer.
//!
//! The rules follow Weave Net 2.8.1 (`router/mac_cache.go` and the fastdp
//! bridge in `router/fastdp.go`), merged into one table:
//!
//! - a frame entering on a local port teaches "this MAC is here". If the
//!   MAC is already known behind another peer that is a conflict: Weave
//!   drops such a frame rather than move the address;
//! - a frame arriving from a peer (over the tunnel, addressed to us) always
//!   wins: the MAC moves to that peer, and a move means flows built on the
//!   old location are stale;
//! - entries not seen for ten minutes are forgotten; the last-seen time is
//!   refreshed at most every tenth of that, as Weave does, so that busy
//!   flows (whose packets never reach us) keep their entries alive through
//!   the flow-expiry sweep.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use odp::wire::types::MacAddr;

use crate::mesh::identity::PeerName;

/// How long an entry lives without being seen (Weave's `macMaxAge`).
pub const MAC_MAX_AGE: Duration = Duration::from_secs(10 * 60);

/// Where a MAC address lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Location {
    /// Behind a local datapath port (netdev or internal vport).
    Local(u32),
    /// Behind a remote peer.
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
    /// A local frame claims an address known behind this peer: the table
    /// is unchanged and the frame should be dropped.
    Conflict(PeerName),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    location: Location,
    last_seen: Instant,
}

/// The MAC learning table.
#[derive(Debug, Clone)]
pub struct MacTable {
    entries: HashMap<MacAddr, Entry>,
    max_age: Duration,
}

impl Default for MacTable {
    fn default() -> Self {
        Self::new(MAC_MAX_AGE)
    }
}

impl MacTable {
    /// An empty table whose entries live `max_age` unseen.
    pub fn new(max_age: Duration) -> Self {
        MacTable {
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
    pub fn lookup(&self, mac: MacAddr) -> Option<Location> {
        self.entries.get(&mac).map(|e| e.location)
    }

    fn refresh(&self, e: &mut Entry, now: Instant) {
        if now.saturating_duration_since(e.last_seen) >= self.max_age / 10 {
            e.last_seen = now;
        }
    }

    /// `mac` was the source of a frame entering on local `port`.
    pub fn learn_local(&mut self, mac: MacAddr, port: u32, now: Instant) -> Learned {
        let location = Location::Local(port);
        let Some(mut e) = self.entries.get(&mac).copied() else {
            self.entries.insert(
                mac,
                Entry {
                    location,
                    last_seen: now,
                },
            );
            return Learned::New;
        };
        let result = match e.location {
            Location::Peer(p) => return Learned::Conflict(p),
            l if l == location => Learned::Unchanged,
            old => {
                e.location = location;
                Learned::Moved(old)
            }
        };
        self.refresh(&mut e, now);
        self.entries.insert(mac, e);
        result
    }

    /// `mac` was the source of a frame that `peer` sent to us.
    pub fn learn_remote(&mut self, mac: MacAddr, peer: PeerName, now: Instant) -> Learned {
        let location = Location::Peer(peer);
        let Some(mut e) = self.entries.get(&mac).copied() else {
            self.entries.insert(
                mac,
                Entry {
                    location,
                    last_seen: now,
                },
            );
            return Learned::New;
        };
        let result = if e.location == location {
            Learned::Unchanged
        } else {
            let old = e.location;
            e.location = location;
            Learned::Moved(old)
        };
        self.refresh(&mut e, now);
        self.entries.insert(mac, e);
        result
    }

    /// Marks `mac` as seen (a flow using it carried traffic).
    pub fn touch(&mut self, mac: MacAddr, now: Instant) {
        let max_age = self.max_age;
        if let Some(e) = self.entries.get_mut(&mac)
            && now.saturating_duration_since(e.last_seen) >= max_age / 10
        {
            e.last_seen = now;
        }
    }

    /// Removes and returns the entries not seen for the maximum age.
    pub fn expire(&mut self, now: Instant) -> Vec<(MacAddr, Location)> {
        let max_age = self.max_age;
        let mut gone = Vec::new();
        self.entries.retain(|mac, e| {
            let keep = now.saturating_duration_since(e.last_seen) < max_age;
            if !keep {
                gone.push((*mac, e.location));
            }
            keep
        });
        gone.sort();
        gone
    }

    /// Forgets every address at `location`; returns how many.
    pub fn forget(&mut self, location: Location) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| e.location != location);
        before - self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb]);

    fn peer(n: u64) -> PeerName {
        PeerName::from_u64(n)
    }

    #[test]
    fn local_does_not_steal_from_a_peer_but_remote_does() {
        let t0 = Instant::now();
        let mut t = MacTable::default();
        assert_eq!(t.learn_remote(A, peer(1), t0), Learned::New);
        assert_eq!(t.learn_local(A, 3, t0), Learned::Conflict(peer(1)));
        assert_eq!(t.lookup(A), Some(Location::Peer(peer(1))));
        assert_eq!(t.learn_local(B, 3, t0), Learned::New);
        assert_eq!(t.learn_local(B, 3, t0), Learned::Unchanged);
        assert_eq!(t.learn_local(B, 4, t0), Learned::Moved(Location::Local(3)));
        assert_eq!(
            t.learn_remote(B, peer(2), t0),
            Learned::Moved(Location::Local(4))
        );
        assert_eq!(
            t.learn_remote(B, peer(1), t0),
            Learned::Moved(Location::Peer(peer(2)))
        );
        assert_eq!(t.forget(Location::Peer(peer(1))), 2);
        assert!(t.is_empty());
    }

    #[test]
    fn expiry_after_max_age_and_touch_keeps_alive() {
        let t0 = Instant::now();
        let mut t = MacTable::new(Duration::from_secs(100));
        t.learn_local(A, 1, t0);
        t.learn_local(B, 1, t0);
        // Touching within a tenth of the age does not move last-seen.
        t.touch(A, t0 + Duration::from_secs(5));
        t.touch(A, t0 + Duration::from_secs(50));
        assert!(t.expire(t0 + Duration::from_secs(99)).is_empty());
        assert_eq!(
            t.expire(t0 + Duration::from_secs(100)),
            vec![(B, Location::Local(1))]
        );
        assert_eq!(t.lookup(A), Some(Location::Local(1)));
        assert_eq!(t.expire(t0 + Duration::from_secs(150)).len(), 1);
        assert!(t.is_empty());
    }
}
