//! The table of every peer we know (ourself included), with each peer's
//! connections as that peer last reported them; merging of topology updates
//! by version and UID; short-ID bookkeeping; garbage collection of peers
//! that are no longer reachable.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::{Rng, RngCore};

use super::codec::{ConnectionSummary, PeerSummary, TopologyEntry};
use super::identity::{PeerName, PeerUid, SHORT_ID_SPACE, ShortId};
use super::routes;

/// One connection of a peer, as that peer describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConnection {
    /// The peer at the other end.
    pub remote: PeerName,
    /// The other end's TCP address as reported (`ip:port`).
    pub remote_tcp_addr: String,
    /// Whether the describing peer dialled.
    pub outbound: bool,
    /// Whether the connection's overlay is up.
    pub established: bool,
}

/// What we know about one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its name.
    pub name: PeerName,
    /// Its nickname.
    pub nickname: String,
    /// Its UID (0 for a placeholder only known as a connection end).
    pub uid: PeerUid,
    /// The version of its entry.
    pub version: u64,
    /// Its short ID.
    pub short_id: ShortId,
    /// Whether `short_id` is known.
    pub has_short_id: bool,
    /// Its connections by remote name.
    pub connections: BTreeMap<PeerName, PeerConnection>,
    /// How many of our local connections hold on to this peer (a held peer
    /// is never garbage-collected).
    pub local_refs: u64,
}

impl Peer {
    /// A fresh peer entry with a short ID and no connections.
    pub fn new(
        name: PeerName,
        nickname: &str,
        uid: PeerUid,
        version: u64,
        short_id: ShortId,
    ) -> Self {
        Peer {
            name,
            nickname: nickname.to_owned(),
            uid,
            version,
            short_id,
            has_short_id: true,
            connections: BTreeMap::new(),
            local_refs: 0,
        }
    }

    fn placeholder(name: PeerName) -> Self {
        Peer {
            name,
            nickname: String::new(),
            uid: PeerUid(0),
            version: 0,
            short_id: ShortId::new(0),
            has_short_id: false,
            connections: BTreeMap::new(),
            local_refs: 0,
        }
    }

    fn from_summary(s: &PeerSummary) -> Self {
        Peer {
            name: PeerName::from_bytes_lenient(&s.name_byte),
            nickname: s.nickname.clone(),
            uid: PeerUid(s.uid),
            version: s.version,
            short_id: ShortId::new(s.short_id),
            has_short_id: s.has_short_id,
            connections: BTreeMap::new(),
            local_refs: 0,
        }
    }

    /// This peer as a topology-update entry.
    pub fn to_entry(&self) -> TopologyEntry {
        TopologyEntry {
            peer: PeerSummary {
                name_byte: self.name.to_bytes().to_vec(),
                nickname: self.nickname.clone(),
                uid: self.uid.0,
                version: self.version,
                short_id: self.short_id.get(),
                has_short_id: self.has_short_id,
            },
            connections: self
                .connections
                .values()
                .map(|c| ConnectionSummary {
                    name_byte: c.remote.to_bytes().to_vec(),
                    remote_tcp_addr: c.remote_tcp_addr.clone(),
                    outbound: c.outbound,
                    established: c.established,
                })
                .collect(),
        }
    }
}

/// Side effects of a change to the table, for the caller to act on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PeersChanges {
    /// Peers that were garbage-collected.
    pub removed: Vec<PeerName>,
    /// The short-ID-to-peer mapping changed.
    pub short_ids_changed: bool,
    /// Our own short ID collided with a lower-named peer and must change.
    pub reassign_local_short_id: bool,
    /// Our own entry changed and should be broadcast.
    pub local_modified: bool,
}

impl PeersChanges {
    fn merge(&mut self, other: PeersChanges) {
        self.removed.extend(other.removed);
        self.short_ids_changed |= other.short_ids_changed;
        self.reassign_local_short_id |= other.reassign_local_short_id;
        self.local_modified |= other.local_modified;
    }
}

#[derive(Debug, Default, Clone)]
struct ShortIdEntry {
    /// The peer that owns the ID (lowest name among claimants); `None` when
    /// the ID was used before and is free now.
    principal: Option<PeerName>,
    /// Other claimants.
    others: Vec<PeerName>,
}

/// The outcome of merging a topology update.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UpdateResult {
    /// Every peer named in the update.
    pub received: BTreeSet<PeerName>,
    /// Peers whose entries the update added or improved ("news").
    pub improved: BTreeSet<PeerName>,
    /// Side effects.
    pub changes: PeersChanges,
}

/// The peers table.
#[derive(Debug, Clone)]
pub struct Peers {
    ourself: PeerName,
    by_name: BTreeMap<PeerName, Peer>,
    by_short_id: HashMap<u16, ShortIdEntry>,
    /// Bumped by every call that may change the table.
    generation: u64,
}

impl Peers {
    /// A table holding only ourself.
    pub fn new(ourself: Peer) -> Self {
        let name = ourself.name;
        let mut p = Peers {
            ourself: name,
            by_name: BTreeMap::new(),
            by_short_id: HashMap::new(),
            generation: 0,
        };
        let mut ch = PeersChanges::default();
        p.add_by_short_id(&ourself, &mut ch);
        p.by_name.insert(name, ourself);
        p
    }

    /// A number that changes whenever the table may have changed (every
    /// call taking `&mut self` bumps it), so that anything derived from
    /// the table, such as encoded gossip, can be reused while it stays.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Our name.
    pub fn ourself_name(&self) -> PeerName {
        self.ourself
    }

    /// Our own entry.
    pub fn ourself(&self) -> &Peer {
        // The table always holds ourself: it is inserted at creation and
        // garbage collection never removes the start of its walk.
        match self.by_name.get(&self.ourself) {
            Some(p) => p,
            None => unreachable_ourself(),
        }
    }

    fn ourself_mut(&mut self) -> &mut Peer {
        match self.by_name.get_mut(&self.ourself) {
            Some(p) => p,
            None => unreachable_ourself(),
        }
    }

    /// A peer by name.
    pub fn get(&self, name: &PeerName) -> Option<&Peer> {
        self.by_name.get(name)
    }

    /// All peers, ordered by name.
    pub fn iter(&self) -> impl Iterator<Item = &Peer> {
        self.by_name.values()
    }

    /// Number of peers known (ourself included).
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether the table is empty (never: ourself is always present).
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// All names.
    pub fn names(&self) -> BTreeSet<PeerName> {
        self.by_name.keys().copied().collect()
    }

    /// The peer that owns a short ID, if any.
    pub fn by_short_id(&self, id: ShortId) -> Option<&Peer> {
        self.by_short_id
            .get(&id.get())
            .and_then(|e| e.principal)
            .and_then(|n| self.by_name.get(&n))
    }

    /// Whether we currently own our short ID.
    pub fn owns_local_short_id(&self) -> bool {
        let me = self.ourself();
        self.by_short_id
            .get(&me.short_id.get())
            .and_then(|e| e.principal)
            == Some(self.ourself)
    }

    fn add_by_short_id(&mut self, peer: &Peer, ch: &mut PeersChanges) {
        if !peer.has_short_id {
            return;
        }
        let Some(entry) = self.by_short_id.get_mut(&peer.short_id.get()) else {
            self.by_short_id.insert(
                peer.short_id.get(),
                ShortIdEntry {
                    principal: Some(peer.name),
                    others: Vec::new(),
                },
            );
            return;
        };
        match entry.principal {
            None => {
                // Reusing an ID that was used before: the mapping changes.
                entry.principal = Some(peer.name);
                ch.short_ids_changed = true;
            }
            Some(p) if peer.name < p => {
                if p == self.ourself {
                    ch.reassign_local_short_id = true;
                }
                entry.others.push(p);
                entry.principal = Some(peer.name);
                ch.short_ids_changed = true;
            }
            Some(_) => entry.others.push(peer.name),
        }
    }

    fn delete_by_short_id(
        &mut self,
        name: PeerName,
        short_id: ShortId,
        has: bool,
        ch: &mut PeersChanges,
    ) {
        if !has {
            return;
        }
        let Some(entry) = self.by_short_id.get_mut(&short_id.get()) else {
            return;
        };
        if entry.principal != Some(name) {
            entry.others.retain(|n| *n != name);
        } else if let Some(min) = entry.others.iter().copied().min() {
            entry.others.retain(|n| *n != min);
            entry.principal = Some(min);
            ch.short_ids_changed = true;
        } else {
            // Keep an empty entry so a later reuse counts as a change.
            entry.principal = None;
            entry.others.clear();
        }
    }

    /// Finds or adds the peer a new connection leads to and holds a
    /// reference to it. Returns the UID the table had for that peer before
    /// (to spot a restarted peer) if it was already known.
    pub fn fetch_with_default(&mut self, peer: Peer) -> (Option<PeerUid>, PeersChanges) {
        self.generation += 1;
        let mut ch = PeersChanges::default();
        if let Some(existing) = self.by_name.get_mut(&peer.name) {
            existing.local_refs += 1;
            return (Some(existing.uid), ch);
        }
        let mut peer = peer;
        peer.local_refs = 1;
        self.add_by_short_id(&peer, &mut ch);
        self.by_name.insert(peer.name, peer);
        (None, ch)
    }

    /// Takes a reference on a known peer; `None` if unknown.
    pub fn fetch_and_add_ref(&mut self, name: PeerName) -> Option<PeerUid> {
        self.generation += 1;
        let p = self.by_name.get_mut(&name)?;
        p.local_refs += 1;
        Some(p.uid)
    }

    /// Drops a reference taken by a connection.
    pub fn dereference(&mut self, name: PeerName) {
        self.generation += 1;
        if let Some(p) = self.by_name.get_mut(&name) {
            p.local_refs = p.local_refs.saturating_sub(1);
        }
    }

    /// Records a new local connection of ours (bumps our version).
    pub fn add_local_connection(&mut self, conn: PeerConnection) {
        self.generation += 1;
        let me = self.ourself_mut();
        me.connections.insert(conn.remote, conn);
        me.version += 1;
    }

    /// Removes a local connection of ours (bumps our version).
    pub fn delete_local_connection(&mut self, remote: PeerName) {
        self.generation += 1;
        let me = self.ourself_mut();
        if me.connections.remove(&remote).is_some() {
            me.version += 1;
        }
    }

    /// Marks a local connection established (bumps our version).
    pub fn local_connection_established(&mut self, remote: PeerName) {
        self.generation += 1;
        let me = self.ourself_mut();
        if let Some(c) = me.connections.get_mut(&remote) {
            c.established = true;
        }
        me.version += 1;
    }

    /// Raises our version above `version`; true if it changed.
    pub fn set_local_version_beyond(&mut self, version: u64) -> bool {
        self.generation += 1;
        let me = self.ourself_mut();
        if version >= me.version {
            me.version = version + 1;
            true
        } else {
            false
        }
    }

    /// Picks a free short ID for ourself (if one exists) and takes it.
    pub fn reassign_local_short_id(&mut self, rng: &mut dyn RngCore) -> (bool, PeersChanges) {
        self.generation += 1;
        let mut ch = PeersChanges::default();
        let Some(id) = self.choose_short_id(rng) else {
            return (false, ch);
        };
        let me = self.ourself().clone();
        self.delete_by_short_id(me.name, me.short_id, me.has_short_id, &mut ch);
        {
            let me = self.ourself_mut();
            me.short_id = id;
            me.version += 1;
        }
        let me = self.ourself().clone();
        self.add_by_short_id(&me, &mut ch);
        (true, ch)
    }

    fn is_free(&self, id: u16) -> bool {
        self.by_short_id
            .get(&id)
            .and_then(|e| e.principal)
            .is_none()
    }

    fn choose_short_id(&self, rng: &mut dyn RngCore) -> Option<ShortId> {
        for _ in 0..10 {
            let id = rng.gen_range(0..SHORT_ID_SPACE);
            if self.is_free(id) {
                return Some(ShortId::new(id));
            }
        }
        let free: Vec<u16> = (0..SHORT_ID_SPACE).filter(|i| self.is_free(*i)).collect();
        if free.is_empty() {
            return None;
        }
        let i = rng.gen_range(0..free.len());
        free.get(i).map(|id| ShortId::new(*id))
    }

    /// Merges a decoded topology update. New peers are added (and peers
    /// only named as connection ends get placeholders); known peers take
    /// the update's entry when it has a higher version, or the same version
    /// and a higher UID, or the same version and UID and a short ID that we
    /// lacked. An entry about ourself from an older run makes us raise our
    /// version past it.
    pub fn apply_update(&mut self, entries: &[TopologyEntry]) -> UpdateResult {
        self.generation += 1;
        let mut res = UpdateResult::default();
        let decoded: Vec<Peer> = entries
            .iter()
            .map(|e| Peer::from_summary(&e.peer))
            .collect();
        // Add unknown peers, then placeholders for unknown connection ends.
        let mut fresh: BTreeSet<PeerName> = BTreeSet::new();
        for p in &decoded {
            if !self.by_name.contains_key(&p.name) {
                fresh.insert(p.name);
                let mut ch = PeersChanges::default();
                self.add_by_short_id(p, &mut ch);
                res.changes.merge(ch);
                self.by_name.insert(p.name, p.clone());
            }
        }
        for e in entries {
            for c in &e.connections {
                let n = PeerName::from_bytes_lenient(&c.name_byte);
                self.by_name
                    .entry(n)
                    .or_insert_with(|| Peer::placeholder(n));
            }
        }
        for (p, e) in decoded.iter().zip(entries) {
            res.received.insert(p.name);
            let conns = connections_from(&e.connections);
            if p.name == self.ourself {
                if p.uid != self.ourself().uid && self.set_local_version_beyond(p.version) {
                    res.changes.local_modified = true;
                }
                continue;
            }
            if fresh.remove(&p.name) {
                if let Some(peer) = self.by_name.get_mut(&p.name) {
                    peer.connections = conns;
                }
                res.improved.insert(p.name);
                continue;
            }
            let Some(existing) = self.by_name.get(&p.name) else {
                continue;
            };
            let older = p.version < existing.version
                || (p.version == existing.version
                    && (p.uid < existing.uid
                        || (p.uid == existing.uid && (!p.has_short_id || existing.has_short_id))));
            if older {
                continue;
            }
            let (old_id, old_has) = (existing.short_id, existing.has_short_id);
            if let Some(peer) = self.by_name.get_mut(&p.name) {
                peer.version = p.version;
                peer.uid = p.uid;
                peer.nickname = p.nickname.clone();
                peer.connections = conns;
            }
            if p.short_id != old_id || p.has_short_id != old_has {
                let mut ch = PeersChanges::default();
                self.delete_by_short_id(p.name, old_id, old_has, &mut ch);
                if let Some(peer) = self.by_name.get_mut(&p.name) {
                    peer.short_id = p.short_id;
                    peer.has_short_id = p.has_short_id;
                }
                if let Some(peer) = self.by_name.get(&p.name).cloned() {
                    self.add_by_short_id(&peer, &mut ch);
                }
                res.changes.merge(ch);
            }
            res.improved.insert(p.name);
        }
        res
    }

    /// Removes peers we cannot reach over any connection (in any state) and
    /// that no local connection holds.
    pub fn garbage_collect(&mut self) -> PeersChanges {
        self.generation += 1;
        let mut ch = PeersChanges::default();
        let (_, reached) = routes::walk_hops(self, self.ourself, None, false);
        let gone: Vec<PeerName> = self
            .by_name
            .values()
            .filter(|p| {
                !reached.contains_key(&p.name) && p.local_refs == 0 && p.name != self.ourself
            })
            .map(|p| p.name)
            .collect();
        for n in gone {
            if let Some(p) = self.by_name.remove(&n) {
                self.delete_by_short_id(p.name, p.short_id, p.has_short_id, &mut ch);
                ch.removed.push(n);
            }
        }
        if !ch.removed.is_empty() && !self.owns_local_short_id() {
            ch.reassign_local_short_id = true;
        }
        ch
    }

    /// The named peers as a topology update (unknown names are skipped).
    pub fn encode_entries(&self, names: &BTreeSet<PeerName>) -> Vec<TopologyEntry> {
        names
            .iter()
            .filter_map(|n| self.by_name.get(n))
            .map(Peer::to_entry)
            .collect()
    }
}

fn unreachable_ourself() -> ! {
    // A broken internal invariant, not bad input: no wire data can remove
    // ourself from the table.
    panic!("peers table lost the local peer")
}

fn connections_from(summaries: &[ConnectionSummary]) -> BTreeMap<PeerName, PeerConnection> {
    summaries
        .iter()
        .map(|c| {
            let remote = PeerName::from_bytes_lenient(&c.name_byte);
            (
                remote,
                PeerConnection {
                    remote,
                    remote_tcp_addr: c.remote_tcp_addr.clone(),
                    outbound: c.outbound,
                    established: c.established,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn n(i: u64) -> PeerName {
        PeerName::from_u64(i)
    }

    fn entry(
        name: u64,
        uid: u64,
        version: u64,
        short: Option<u16>,
        conns: &[u64],
    ) -> TopologyEntry {
        TopologyEntry {
            peer: PeerSummary {
                name_byte: n(name).to_bytes().to_vec(),
                nickname: format!("p{name}"),
                uid,
                version,
                short_id: short.unwrap_or(0),
                has_short_id: short.is_some(),
            },
            connections: conns
                .iter()
                .map(|c| ConnectionSummary {
                    name_byte: n(*c).to_bytes().to_vec(),
                    remote_tcp_addr: format!("10.0.0.{c}:6783"),
                    outbound: true,
                    established: true,
                })
                .collect(),
        }
    }

    fn me() -> Peers {
        Peers::new(Peer::new(n(5), "me", PeerUid(55), 1, ShortId::new(100)))
    }

    #[test]
    fn new_peers_and_placeholders_are_added() {
        let mut p = me();
        let r = p.apply_update(&[entry(2, 22, 1, Some(7), &[5, 9])]);
        assert_eq!(r.received, BTreeSet::from([n(2)]));
        assert_eq!(r.improved, BTreeSet::from([n(2)]));
        assert_eq!(p.len(), 3, "ourself, 2, and a placeholder for 9");
        let ph = p.get(&n(9)).unwrap();
        assert_eq!(
            (ph.uid, ph.version, ph.has_short_id),
            (PeerUid(0), 0, false)
        );
        assert_eq!(p.by_short_id(ShortId::new(7)).unwrap().name, n(2));
    }

    #[test]
    fn merge_rule_prefers_version_then_uid_then_short_id() {
        let mut p = me();
        p.apply_update(&[entry(2, 22, 5, None, &[])]);
        // Older version: ignored.
        assert!(
            p.apply_update(&[entry(2, 99, 4, Some(1), &[5])])
                .improved
                .is_empty()
        );
        // Same version, lower UID: ignored.
        assert!(
            p.apply_update(&[entry(2, 21, 5, Some(1), &[5])])
                .improved
                .is_empty()
        );
        // Same version and UID, now with a short ID: taken.
        assert_eq!(
            p.apply_update(&[entry(2, 22, 5, Some(1), &[5])]).improved,
            BTreeSet::from([n(2)])
        );
        assert!(p.get(&n(2)).unwrap().has_short_id);
        // Same again: nothing new.
        assert!(
            p.apply_update(&[entry(2, 22, 5, Some(1), &[5])])
                .improved
                .is_empty()
        );
        // Same version, higher UID (a restarted peer racing): taken.
        assert_eq!(
            p.apply_update(&[entry(2, 23, 5, Some(1), &[])])
                .improved
                .len(),
            1
        );
        assert_eq!(p.get(&n(2)).unwrap().uid, PeerUid(23));
        // Higher version: taken, connections replaced.
        p.apply_update(&[entry(2, 23, 6, Some(1), &[5])]);
        assert_eq!(p.get(&n(2)).unwrap().connections.len(), 1);
    }

    #[test]
    fn stale_entry_about_ourself_raises_our_version() {
        let mut p = me();
        let r = p.apply_update(&[entry(5, 1234, 40, Some(3), &[])]);
        assert!(r.changes.local_modified);
        assert_eq!(p.ourself().version, 41);
        // Our own current incarnation: nothing changes.
        let r = p.apply_update(&[entry(5, 55, 400, Some(3), &[])]);
        assert!(!r.changes.local_modified);
        assert_eq!(p.ourself().version, 41);
    }

    #[test]
    fn short_id_collision_lower_name_wins_and_we_move() {
        let mut p = me(); // name 5, short id 100
        // A higher name with our ID: it is secondary, we keep ours.
        let r = p.apply_update(&[entry(9, 9, 1, Some(100), &[5])]);
        assert!(!r.changes.reassign_local_short_id);
        assert_eq!(p.by_short_id(ShortId::new(100)).unwrap().name, n(5));
        // A lower name with our ID: it wins, we must move.
        let r = p.apply_update(&[entry(2, 2, 1, Some(100), &[5])]);
        assert!(r.changes.reassign_local_short_id);
        assert_eq!(p.by_short_id(ShortId::new(100)).unwrap().name, n(2));
        assert!(!p.owns_local_short_id());
        let mut rng = StdRng::seed_from_u64(1);
        let v = p.ourself().version;
        let (ok, _) = p.reassign_local_short_id(&mut rng);
        assert!(ok);
        assert_ne!(p.ourself().short_id, ShortId::new(100));
        assert!(p.owns_local_short_id());
        assert_eq!(p.ourself().version, v + 1);
    }

    #[test]
    fn gc_removes_unreachable_unheld_peers() {
        let mut p = me();
        p.add_local_connection(PeerConnection {
            remote: n(2),
            remote_tcp_addr: "10.0.0.2:6783".into(),
            outbound: true,
            established: true,
        });
        // 2 connects to 3; 7 is an island.
        p.apply_update(&[
            entry(2, 2, 1, Some(2), &[5, 3]),
            entry(3, 3, 1, Some(3), &[2]),
            entry(7, 7, 1, Some(7), &[]),
        ]);
        let ch = p.garbage_collect();
        assert_eq!(ch.removed, vec![n(7)]);
        // Drop our link: 2 and 3 become unreachable, but a held 2 stays.
        p.fetch_and_add_ref(n(2));
        p.delete_local_connection(n(2));
        let ch = p.garbage_collect();
        assert_eq!(ch.removed, vec![n(3)]);
        p.dereference(n(2));
        assert_eq!(p.garbage_collect().removed, vec![n(2)]);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn freed_short_id_reuse_is_a_change() {
        let mut p = me();
        p.apply_update(&[entry(2, 2, 1, Some(9), &[])]);
        let ch = p.garbage_collect();
        assert_eq!(ch.removed, vec![n(2)]);
        let r = p.apply_update(&[entry(3, 3, 1, Some(9), &[])]);
        assert!(r.changes.short_ids_changed);
    }
}
