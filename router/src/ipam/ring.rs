//! The ring CRDT: who owns which part of the allocation range.
//!
//! The range `[start, end)` is seen as a circle. Each [`Entry`] is a token:
//! the peer named in it owns the addresses from its token up to the next
//! token (wrapping past the end back to the start). Every entry carries a
//! version; replicas merge by keeping, per token, the entry with the highest
//! version. Only the owner of an entry changes it (splitting it, handing it
//! to another peer, or reporting its free count), except for the operator's
//! `rmpeer`, which moves a dead peer's entries to a living one with a large
//! version bump.
//!
//! Weave Net 2.8.1's ring has no tombstones: tokens are never deleted, a
//! departed peer's entries stay until another peer takes them over.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::address::{Address, Range};
use super::peer::{PeerName, SeededRng};

/// How much `rmpeer`/reset raises a transferred entry's version, so that the
/// transfer wins over ordinary edits the old owner may have made.
pub const TRANSFER_VERSION_BUMP: u32 = 100;

/// One token of the ring. The field names follow Weave's wire form.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Entry {
    /// First address of the range this entry covers.
    pub token: Address,
    /// The owner of the range.
    pub peer: PeerName,
    /// Raised by every edit; merges keep the highest.
    pub version: u32,
    /// How many addresses of the range the owner last reported free.
    pub free: u32,
}

impl Entry {
    fn same_claim(&self, other: &Entry) -> bool {
        self.token == other.token && self.peer == other.peer && self.version == other.version
    }

    fn reassign(&mut self, peer: PeerName, free: u32) {
        self.peer = peer;
        self.version = self.version.wrapping_add(1);
        self.free = free;
    }
}

/// A ring that breaks the CRDT's rules (out of order, out of range, or
/// claiming more free addresses than a range holds).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The entries are not in ascending token order.
    #[error("ring not sorted")]
    NotSorted,
    /// The same token appears twice.
    #[error("token {0} appears twice in ring")]
    TokenRepeated(Address),
    /// A token lies outside the ring's range.
    #[error("token {0} is out of range")]
    TokenOutOfRange(Address),
    /// An entry reports more free addresses than its range holds.
    #[error("entry {token}-{next} reporting too much free space: {free} > {distance}")]
    TooMuchFree {
        /// The entry's token.
        token: Address,
        /// The next token.
        next: Address,
        /// The reported free count.
        free: u32,
        /// The size of the entry's range.
        distance: u32,
    },
    /// A ring must have `start < end`.
    #[error("empty ring range {start}..{end}")]
    EmptyRange {
        /// Start of the range.
        start: Address,
        /// End of the range.
        end: Address,
    },
    /// `claim_for_peers` on a ring that already has entries, or with no peers.
    #[error("cannot seed ring: {0}")]
    CannotSeed(&'static str),
    /// A grant of a range this peer does not wholly own, or out of bounds.
    #[error("cannot grant {range:?} to {to}: {why}")]
    BadGrant {
        /// The range asked for.
        range: Range,
        /// The intended recipient.
        to: PeerName,
        /// What is wrong.
        why: &'static str,
    },
    /// A free-space report for a range this peer does not own.
    #[error("free-space report for {token}: {why}")]
    BadReport {
        /// Token reported on.
        token: Address,
        /// What is wrong.
        why: &'static str,
    },
}

/// Why a received ring could not be merged. The messages say what an
/// operator can do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// The received ring is malformed.
    #[error("received ring is invalid: {0}")]
    Invalid(RingError),
    /// Merging would produce a malformed ring.
    #[error("merge of incoming data causes: {0}")]
    Causes(RingError),
    /// The two rings were created independently from different seed peers.
    #[error(
        "IP allocation was seeded by different peers (received: {theirs:?}, ours: {ours:?}). \
         The two groups of peers agreed on their rings separately (a partition during the \
         initial consensus, or different --ipalloc-init seed lists) and cannot be joined. \
         Keep one group; stop every router of the other group, delete its persisted IPAM data \
         (weave reset / remove the data dir) and start it again so it joins the surviving ring"
    )]
    DifferentSeeds {
        /// Seeds of our ring.
        ours: Vec<PeerName>,
        /// Seeds of the received ring.
        theirs: Vec<PeerName>,
    },
    /// The two rings cover different address ranges.
    #[error(
        "incompatible IP allocation ranges (received: {theirs}, ours: {ours}). Every peer must \
         be started with the same --ipalloc-range; restart the odd ones with the common range \
         (and without their persisted IPAM data)"
    )]
    DifferentRange {
        /// Our range.
        ours: String,
        /// The received range.
        theirs: String,
    },
    /// Another peer claims a range inside ours where we hold allocations.
    #[error(
        "peer {peer} says it owns the IP range from {token}, which I think I own and have \
         addresses allocated in; the ring is inconsistent (usually rmpeer of a peer that was \
         still alive). Stop one of the two peers and reset its IPAM data"
    )]
    EntryInMyRange {
        /// The peer making the claim.
        peer: PeerName,
        /// Its token.
        token: Address,
    },
    /// Same token and version, different owner, and we hold allocations there.
    #[error(
        "inconsistent entries for {token}: owned by {mine} but incoming message says {theirs}; \
         both cannot be right and this peer has addresses allocated there. Stop one of the two \
         peers and reset its IPAM data"
    )]
    InconsistentEntry {
        /// The token.
        token: Address,
        /// Owner in our ring.
        mine: PeerName,
        /// Owner in the received ring.
        theirs: PeerName,
    },
    /// A newer entry gives away a range we own and hold allocations in.
    #[error(
        "received update for IP range I own at {token} v{mine_version}: incoming message says \
         owner {theirs} v{theirs_version}, but I have addresses allocated there (was this peer \
         removed with rmpeer while still running?). Stop one of the two peers and reset its IPAM data"
    )]
    NewerVersion {
        /// The token.
        token: Address,
        /// Our version.
        mine_version: u32,
        /// The claimed new owner.
        theirs: PeerName,
        /// The received version.
        theirs_version: u32,
    },
}

/// Two replicas of the same token with the same version but different
/// contents, found (and resolved deterministically) during a merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryConflict {
    /// Our copy.
    pub mine: Entry,
    /// The received copy.
    pub theirs: Entry,
    /// The copy kept.
    pub kept: Entry,
}

/// What a successful merge did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeReport {
    /// True when our ring changed.
    pub updated: bool,
    /// Same-version disagreements that were resolved by the tie-break.
    pub conflicts: Vec<EntryConflict>,
}

/// A range of the ring with its owner, for status output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeInfo {
    /// The owner.
    pub peer: PeerName,
    /// The addresses.
    pub range: Range,
    /// The entry's version.
    pub version: u32,
}

/// The ring itself. The field names follow Weave's wire form (`Start`,
/// `End`, `Peer`, `Entries`, `Seeds`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Ring {
    /// First address of the allocation range.
    pub start: Address,
    /// First address after the allocation range.
    pub end: Address,
    /// The peer holding this replica.
    pub peer: PeerName,
    /// Entries in ascending token order.
    pub entries: Vec<Entry>,
    /// The peers the ring was first divided among.
    pub seeds: Vec<PeerName>,
}

impl Ring {
    /// An empty ring over `[start, end)` held by `peer`.
    pub fn new(start: Address, end: Address, peer: PeerName) -> Result<Ring, RingError> {
        if start >= end {
            return Err(RingError::EmptyRange { start, end });
        }
        Ok(Ring {
            start,
            end,
            peer,
            entries: Vec::new(),
            seeds: Vec::new(),
        })
    }

    /// The whole range of the ring.
    pub fn range(&self) -> Range {
        Range::new(self.start, self.end)
    }

    /// True when nobody owns anything yet.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True when `addr` is inside the ring's range.
    pub fn contains(&self, addr: Address) -> bool {
        self.range().contains(addr)
    }

    /// Same entries and seeds (the holder's name is not compared).
    pub fn same_contents(&self, other: &Ring) -> bool {
        self.start == other.start
            && self.end == other.end
            && self.entries == other.entries
            && self.seeds == other.seeds
    }

    fn at(entries: &[Entry], i: isize) -> Entry {
        let n = entries.len() as isize;
        entries[i.rem_euclid(n.max(1)) as usize]
    }

    fn at_mut(entries: &mut [Entry], i: isize) -> &mut Entry {
        let n = entries.len() as isize;
        &mut entries[i.rem_euclid(n.max(1)) as usize]
    }

    /// Addresses from `a` going up to `b`, wrapping round the ring; equal
    /// tokens are a whole lap apart.
    fn distance(&self, a: Address, b: Address) -> u32 {
        if b > a {
            b.0 - a.0
        } else {
            (self.end.0 - a.0).wrapping_add(b.0.wrapping_sub(self.start.0))
        }
    }

    /// Checks this ring's invariants.
    pub fn check(&self) -> Result<(), RingError> {
        self.check_entries(&self.entries)
    }

    fn check_entries(&self, entries: &[Entry]) -> Result<(), RingError> {
        for w in entries.windows(2) {
            if w[0].token == w[1].token {
                return Err(RingError::TokenRepeated(w[0].token));
            }
            if w[0].token > w[1].token {
                return Err(RingError::NotSorted);
            }
        }
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(());
        };
        if first.token < self.start {
            return Err(RingError::TokenOutOfRange(first.token));
        }
        if last.token >= self.end {
            return Err(RingError::TokenOutOfRange(last.token));
        }
        for (i, e) in entries.iter().enumerate() {
            let next = Self::at(entries, i as isize + 1).token;
            let distance = self.distance(e.token, next);
            if e.free > distance {
                return Err(RingError::TooMuchFree {
                    token: e.token,
                    next,
                    free: e.free,
                    distance,
                });
            }
        }
        Ok(())
    }

    /// Index of the entry covering `addr` (the last token at or below it,
    /// wrapping to the last entry); the ring must not be empty.
    fn covering_index(&self, addr: Address) -> isize {
        self.entries.partition_point(|e| e.token <= addr) as isize - 1
    }

    /// The owner of `addr`, or `None` when the ring is empty or `addr` is
    /// outside the ring.
    pub fn owner(&self, addr: Address) -> Option<PeerName> {
        if self.is_empty() || !self.contains(addr) {
            return None;
        }
        Some(Self::at(&self.entries, self.covering_index(addr)).peer)
    }

    /// Divides the empty ring among `peers` (already sorted, no
    /// duplicates) in CIDR-aligned halves, and records them as the seeds.
    pub fn claim_for_peers(&mut self, peers: &[PeerName]) -> Result<(), RingError> {
        if !self.is_empty() {
            return Err(RingError::CannotSeed("ring already has entries"));
        }
        if peers.is_empty() {
            return Err(RingError::CannotSeed("no peers"));
        }
        let mut out = Vec::new();
        Self::subdivide(self.start.0, self.end.0, peers, &mut out);
        self.entries = out;
        self.seeds = peers.to_vec();
        self.check()
    }

    fn subdivide(from: u32, to: u32, peers: &[PeerName], out: &mut Vec<Entry>) {
        let share = to - from;
        let Some(first) = peers.first() else { return };
        if share == 0 {
            return;
        }
        if share == 1 || peers.len() == 1 {
            out.push(Entry {
                token: Address(from),
                peer: *first,
                version: 0,
                free: share,
            });
            return;
        }
        let mid = from + share / 2;
        let (lo, hi) = peers.split_at(peers.len() / 2);
        Self::subdivide(from, mid, lo, out);
        // An odd share leaves its middle address to the lower half's range.
        Self::subdivide(mid + share % 2, to, hi, out);
    }

    /// Hands `[start, end)`, which this peer must wholly own, to `to`. Adds
    /// at most two tokens.
    pub fn grant_range_to_host(
        &mut self,
        start: Address,
        end: Address,
        to: PeerName,
    ) -> Result<(), RingError> {
        let range = Range::new(start, end);
        let bad = |why| RingError::BadGrant { range, to, why };
        if start >= end {
            return Err(bad("empty range"));
        }
        if start < self.start || end > self.end {
            return Err(bad("outside the ring"));
        }
        if self.is_empty() {
            return Err(bad("ring is empty"));
        }
        let prev = self.covering_index(start);
        if Self::at(&self.entries, prev).peer != self.peer {
            return Err(bad("start is not ours"));
        }
        let mut pos = prev + 1;
        while pos < self.entries.len() as isize && Self::at(&self.entries, pos).token < end {
            if Self::at(&self.entries, pos).peer != self.peer {
                return Err(bad("part of the range is not ours"));
            }
            pos += 1;
        }

        let next_token = Self::at(&self.entries, prev + 1).token;
        let start_free = self
            .distance(start, next_token)
            .min(self.distance(start, end));
        let start_idx: isize = if Self::at(&self.entries, prev).token == start {
            Self::at_mut(&mut self.entries, prev).reassign(to, start_free);
            prev
        } else {
            let prev_token = Self::at(&self.entries, prev).token;
            let prev_free = self.distance(prev_token, start);
            let me = self.peer;
            Self::at_mut(&mut self.entries, prev).reassign(me, prev_free);
            let at = (prev + 1) as usize;
            self.entries.insert(
                at,
                Entry {
                    token: start,
                    peer: to,
                    version: 0,
                    free: start_free,
                },
            );
            at as isize
        };

        let mut pos = start_idx + 1;
        while pos < self.entries.len() as isize && Self::at(&self.entries, pos).token < end {
            let e = Self::at(&self.entries, pos);
            let free = e.free.min(self.distance(e.token, end));
            Self::at_mut(&mut self.entries, pos).reassign(to, free);
            pos += 1;
        }

        let end_token = if end == self.end { self.start } else { end };
        if self.entries.iter().any(|e| e.token == end_token) {
            return self.check();
        }
        let following = Self::at(&self.entries, pos).token;
        let free = self.distance(end_token, following);
        let at = self.entries.partition_point(|e| e.token < end_token);
        self.entries.insert(
            at,
            Entry {
                token: end_token,
                peer: self.peer,
                version: 0,
                free,
            },
        );
        self.check()
    }

    /// Splits `[start, end)` (where `end <= start` means it wraps) into
    /// non-wrapping ranges in address order.
    pub fn make_ranges(&self, start: Address, end: Address) -> Vec<Range> {
        self.split_over_zero(vec![Range::new(start, end)])
    }

    fn split_over_zero(&self, mut ranges: Vec<Range>) -> Vec<Range> {
        let Some(last) = ranges.last_mut() else {
            return ranges;
        };
        if last.end == self.start {
            last.end = self.end;
        } else if last.end <= last.start {
            let head = Range::new(self.start, last.end);
            last.end = self.end;
            ranges.insert(0, head);
        }
        ranges
    }

    /// Merges a received replica into this one. `has_allocations` says
    /// whether this peer has addresses in use in any of the given ranges;
    /// it guards the cases where the received ring would take space from us.
    pub fn merge(
        &mut self,
        theirs: &Ring,
        has_allocations: impl Fn(&[Range]) -> bool,
    ) -> Result<MergeReport, MergeError> {
        theirs.check().map_err(MergeError::Invalid)?;
        if !theirs.seeds.is_empty() && !self.seeds.is_empty() && theirs.seeds != self.seeds {
            return Err(MergeError::DifferentSeeds {
                ours: self.seeds.clone(),
                theirs: theirs.seeds.clone(),
            });
        }
        if self.start != theirs.start || self.end != theirs.end {
            return Err(MergeError::DifferentRange {
                ours: self.range().as_cidr_string(),
                theirs: Range::new(theirs.start, theirs.end).as_cidr_string(),
            });
        }

        let me = self.peer;
        let mine_all = &self.entries;
        let other = &theirs.entries;
        let mut report = MergeReport::default();
        let mut result: Vec<Entry> = Vec::with_capacity(mine_all.len() + other.len());
        // Owner of the entry just before the next one we add, when that
        // entry came from our side.
        let mut prev_owner: Option<PeerName> = None;
        let (mut i, mut j) = (0usize, 0usize);
        let next_mine = |i: usize| Self::at(mine_all, i as isize + 1).token;

        while i < mine_all.len() || j < other.len() {
            let (m, t) = (mine_all.get(i).copied(), other.get(j).copied());
            match (m, t) {
                (Some(m), t) if t.is_none_or(|t| m.token < t.token) => {
                    result.push(m);
                    prev_owner = Some(m.peer);
                    i += 1;
                }
                (m, Some(t)) if m.is_none_or(|m| t.token < m.token) => {
                    if prev_owner == Some(me) && t.peer != me {
                        // A foreign token inside a range we hold.
                        let upto = m.map_or_else(|| Self::at(mine_all, 0).token, |m| m.token);
                        if has_allocations(&self.make_ranges(t.token, upto)) {
                            return Err(MergeError::EntryInMyRange {
                                peer: t.peer,
                                token: t.token,
                            });
                        }
                    }
                    result.push(t);
                    report.updated = true;
                    prev_owner = None;
                    j += 1;
                }
                (Some(m), Some(t)) => {
                    // Same token.
                    if m.version > t.version || m == t {
                        result.push(m);
                        prev_owner = Some(m.peer);
                    } else if m.version == t.version {
                        if m.peer == me
                            && !m.same_claim(&t)
                            && has_allocations(&self.make_ranges(m.token, next_mine(i)))
                        {
                            return Err(MergeError::InconsistentEntry {
                                token: m.token,
                                mine: m.peer,
                                theirs: t.peer,
                            });
                        }
                        // Deterministic tie-break: more free wins, then the
                        // higher peer name, so every replica picks the same.
                        let keep_mine = (m.free, m.peer) >= (t.free, t.peer);
                        let kept = if keep_mine { m } else { t };
                        if !m.same_claim(&t) {
                            report.conflicts.push(EntryConflict {
                                mine: m,
                                theirs: t,
                                kept,
                            });
                        }
                        result.push(kept);
                        if keep_mine {
                            prev_owner = Some(m.peer);
                        } else {
                            report.updated = true;
                            prev_owner = None;
                        }
                    } else if m.peer == me {
                        if t.peer != me
                            && !has_allocations(&self.make_ranges(m.token, next_mine(i)))
                        {
                            // Someone gave our (unused) range away; accept.
                            result.push(t);
                            report.updated = true;
                            prev_owner = None;
                        } else if t.peer == me {
                            // A newer copy of our own entry (we restarted
                            // from older state): reassert ours above it.
                            let mut e = m;
                            e.version = t.version.wrapping_add(1);
                            result.push(e);
                            report.updated = true;
                            prev_owner = Some(me);
                        } else {
                            return Err(MergeError::NewerVersion {
                                token: m.token,
                                mine_version: m.version,
                                theirs: t.peer,
                                theirs_version: t.version,
                            });
                        }
                    } else {
                        result.push(t);
                        report.updated = true;
                        prev_owner = None;
                    }
                    i += 1;
                    j += 1;
                }
                (None, None) => break,
                _ => break,
            }
        }

        // An entry of ours may now claim more free space than its range
        // holds (it was split by a token we accepted); shrink it, raising
        // the version so the corrected count wins everywhere.
        let n = result.len();
        for k in 0..n {
            let next = Self::at(&result, k as isize + 1).token;
            let d = self.distance(result[k].token, next);
            if result[k].peer == me && result[k].free > d {
                result[k].free = d;
                result[k].version = result[k].version.wrapping_add(1);
                report.updated = true;
            }
        }
        self.check_entries(&result).map_err(MergeError::Causes)?;
        if self.seeds.is_empty() && !theirs.seeds.is_empty() {
            self.seeds = theirs.seeds.clone();
            report.updated = true;
        }
        self.entries = result;
        Ok(report)
    }

    /// The ranges `peer` owns, in address order, split where they wrap.
    pub fn owned_ranges_of(&self, peer: PeerName) -> Vec<Range> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            if e.peer == peer {
                let next = Self::at(&self.entries, i as isize + 1).token;
                out.push(Range::new(e.token, next));
            }
        }
        self.split_over_zero(out)
    }

    /// The ranges this replica's peer owns.
    pub fn owned_ranges(&self) -> Vec<Range> {
        self.owned_ranges_of(self.peer)
    }

    /// Every range with its owner and version, in token order.
    pub fn all_range_info(&self) -> Vec<RangeInfo> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            let next = Self::at(&self.entries, i as isize + 1).token;
            for range in self.make_ranges(e.token, next) {
                out.push(RangeInfo {
                    peer: e.peer,
                    range,
                    version: e.version,
                });
            }
        }
        out
    }

    /// Records how many addresses are free in each of our ranges (keyed by
    /// the start of a range from [`Ring::owned_ranges`]). Returns true when
    /// anything changed; each changed entry gets a new version.
    pub fn report_free(&mut self, mut free: BTreeMap<Address, u32>) -> Result<bool, RingError> {
        let Some(first) = self.entries.first().copied() else {
            return Ok(false);
        };
        let Some(last) = self.entries.last().copied() else {
            return Ok(false);
        };
        // `owned_ranges` splits a wrapping range at the ring's start; fold
        // the piece after the start back into the last entry.
        if first.token != self.start {
            if let Some(extra) = free.remove(&self.start) {
                let slot = free.entry(last.token).or_insert(0);
                *slot = slot.saturating_add(extra);
            }
        }
        let mut updated = false;
        for (token, count) in free {
            let i = self.entries.partition_point(|e| e.token < token);
            let ok = self
                .entries
                .get(i)
                .is_some_and(|e| e.token == token && e.peer == self.peer);
            if !ok {
                return Err(RingError::BadReport {
                    token,
                    why: "not a token we own",
                });
            }
            let next = Self::at(&self.entries, i as isize + 1).token;
            if count > self.distance(token, next) {
                return Err(RingError::BadReport {
                    token,
                    why: "more free than the range holds",
                });
            }
            let e = &mut self.entries[i];
            if e.free != count {
                e.free = count;
                e.version = e.version.wrapping_add(1);
                updated = true;
            }
        }
        Ok(updated)
    }

    /// Peers other than us that reported free space overlapping
    /// `[start, end)`, in random order weighted by how much they have free.
    pub fn choose_peers_to_ask_for_space(
        &self,
        start: Address,
        end: Address,
        rng: &mut SeededRng,
    ) -> Vec<PeerName> {
        let mut space: BTreeMap<PeerName, u64> = BTreeMap::new();
        let n = self.entries.len();
        for (i, e) in self.entries.iter().enumerate() {
            if i + 1 < n && self.entries[i + 1].token.0.wrapping_sub(1) < start.0 {
                continue; // entirely below the wanted range
            }
            if e.token >= end {
                break;
            }
            if e.free == 0 || e.peer == self.peer {
                continue;
            }
            *space.entry(e.peer).or_insert(0) += u64::from(e.free);
        }
        let mut weighted: Vec<(f64, PeerName)> = space
            .into_iter()
            .map(|(p, s)| (s as f64 * rng.next_f64(), p))
            .collect();
        weighted.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        weighted.into_iter().map(|(_, p)| p).collect()
    }

    /// The first peer other than us, in token order, that owns an entry and
    /// passes `is_valid`.
    pub fn pick_peer_for_transfer(&self, is_valid: impl Fn(PeerName) -> bool) -> Option<PeerName> {
        self.entries
            .iter()
            .map(|e| e.peer)
            .find(|&p| p != self.peer && is_valid(p))
    }

    /// Gives every entry of `from` to `to` with a large version bump, and
    /// returns the ranges moved (split where they wrap).
    pub fn transfer(&mut self, from: PeerName, to: PeerName) -> Vec<Range> {
        let mut moved = Vec::new();
        for i in 0..self.entries.len() {
            if self.entries[i].peer == from {
                let next = Self::at(&self.entries, i as isize + 1).token;
                let e = &mut self.entries[i];
                e.peer = to;
                e.version = e.version.wrapping_add(TRANSFER_VERSION_BUMP);
                moved.push(Range::new(e.token, next));
            }
        }
        self.split_over_zero(moved)
    }

    /// Every peer named in an entry.
    pub fn peer_names(&self) -> BTreeSet<PeerName> {
        self.entries.iter().map(|e| e.peer).collect()
    }
}

impl fmt::Display for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ring [{}, {})", self.start, self.end)?;
        for e in &self.entries {
            write!(f, "\n  {} -> {} (v{})", e.token, e.peer, e.version)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: PeerName = PeerName(1);
    const B: PeerName = PeerName(2);
    const C: PeerName = PeerName(3);

    fn ring(peer: PeerName) -> Ring {
        Ring::new(Address(0), Address(256), peer).unwrap_or_else(|_| unreachable_ring())
    }

    fn unreachable_ring() -> Ring {
        Ring {
            start: Address(0),
            end: Address(1),
            peer: PeerName(0),
            entries: vec![],
            seeds: vec![],
        }
    }

    fn no_allocs(_: &[Range]) -> bool {
        false
    }

    #[test]
    fn claim_for_peers_splits_evenly_and_aligned() {
        let mut r = ring(A);
        assert!(r.claim_for_peers(&[A, B, C]).is_ok());
        let toks: Vec<(u32, PeerName, u32)> = r
            .entries
            .iter()
            .map(|e| (e.token.0, e.peer, e.free))
            .collect();
        assert_eq!(toks, vec![(0, A, 128), (128, B, 64), (192, C, 64)]);
        assert_eq!(r.seeds, vec![A, B, C]);
        assert!(r.claim_for_peers(&[A]).is_err());
        assert_eq!(r.owner(Address(130)), Some(B));
        assert_eq!(r.owner(Address(300)), None);
    }

    #[test]
    fn grant_in_the_middle_adds_two_tokens() {
        let mut r = ring(A);
        assert!(r.claim_for_peers(&[A]).is_ok());
        assert!(r.grant_range_to_host(Address(64), Address(128), B).is_ok());
        assert_eq!(
            r.owned_ranges(),
            vec![
                Range::new(Address(0), Address(64)),
                Range::new(Address(128), Address(256))
            ]
        );
        assert_eq!(
            r.owned_ranges_of(B),
            vec![Range::new(Address(64), Address(128))]
        );
        // B cannot grant what A owns.
        let mut rb = r.clone();
        rb.peer = B;
        assert!(rb.grant_range_to_host(Address(0), Address(8), C).is_err());
        assert!(rb.grant_range_to_host(Address(64), Address(72), C).is_ok());
        // A grant to the end of the ring wraps the end token to the start.
        let mut r2 = ring(A);
        assert!(r2.claim_for_peers(&[A]).is_ok());
        assert!(
            r2.grant_range_to_host(Address(200), Address(256), B)
                .is_ok()
        );
        assert_eq!(r2.entries.len(), 2);
        assert_eq!(r2.owner(Address(255)), Some(B));
        assert_eq!(r2.owner(Address(0)), Some(A));
    }

    #[test]
    fn grant_wrapping_start_checks_ownership() {
        // B owns [128, 256) and, by wrap, [0, 64).
        let mut r = ring(B);
        r.entries = vec![
            Entry {
                token: Address(64),
                peer: A,
                version: 0,
                free: 64,
            },
            Entry {
                token: Address(128),
                peer: B,
                version: 0,
                free: 192,
            },
        ];
        assert!(r.check().is_ok());
        assert_eq!(
            r.owned_ranges(),
            vec![
                Range::new(Address(0), Address(64)),
                Range::new(Address(128), Address(256))
            ]
        );
        assert!(r.grant_range_to_host(Address(10), Address(20), C).is_ok());
        assert_eq!(r.owner(Address(15)), Some(C));
        assert_eq!(r.owner(Address(5)), Some(B));
        assert_eq!(r.owner(Address(25)), Some(B));
        let mut ra = r.clone();
        ra.peer = A;
        assert!(ra.grant_range_to_host(Address(0), Address(5), C).is_err());
    }

    #[test]
    fn merge_takes_newer_and_reports_seed_mismatch() {
        let mut a = ring(A);
        assert!(a.claim_for_peers(&[A, B]).is_ok());
        let mut b = a.clone();
        b.peer = B;
        assert!(b.grant_range_to_host(Address(128), Address(160), C).is_ok());
        let rep = a.merge(&b, no_allocs);
        assert!(matches!(rep, Ok(MergeReport { updated: true, .. })));
        assert!(a.same_contents(&b));
        // Idempotent.
        assert!(matches!(
            a.merge(&b, no_allocs),
            Ok(MergeReport { updated: false, .. })
        ));

        let mut other = ring(C);
        assert!(other.claim_for_peers(&[C]).is_ok());
        let err = a.merge(&other, no_allocs);
        assert!(matches!(err, Err(MergeError::DifferentSeeds { .. })));
        let msg = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("delete its persisted IPAM data"), "{msg}");
        let mut wide =
            Ring::new(Address(0), Address(512), C).unwrap_or_else(|_| unreachable_ring());
        assert!(wide.claim_for_peers(&[A, B]).is_ok());
        assert!(matches!(
            a.merge(&wide, no_allocs),
            Err(MergeError::DifferentRange { .. })
        ));
    }

    #[test]
    fn merge_refuses_to_lose_allocated_space() {
        let mut a = ring(A);
        assert!(a.claim_for_peers(&[A, B]).is_ok());
        // C wrongly believes it took over A's range.
        let mut c = a.clone();
        c.peer = C;
        c.transfer(A, C);
        let mut a2 = a.clone();
        let r = a2.merge(&c, |_| true);
        assert!(matches!(r, Err(MergeError::NewerVersion { .. })));
        // Without allocations A accepts.
        assert!(a.merge(&c, no_allocs).is_ok());
        assert_eq!(a.owner(Address(0)), Some(C));
    }

    #[test]
    fn concurrent_transfers_conflict_and_converge() {
        let mut base = ring(A);
        assert!(base.claim_for_peers(&[A, B, C]).is_ok());
        let mut b = base.clone();
        b.peer = B;
        b.transfer(A, B);
        let mut c = base.clone();
        c.peer = C;
        c.transfer(A, C);
        let mut b2 = b.clone();
        let mut c2 = c.clone();
        let rb = b2.merge(&c, no_allocs);
        let rc = c2.merge(&b, no_allocs);
        assert!(rb.as_ref().is_ok_and(|r| r.conflicts.len() == 1), "{rb:?}");
        assert!(rc.as_ref().is_ok_and(|r| r.conflicts.len() == 1), "{rc:?}");
        assert_eq!(b2.entries, c2.entries);
        base.entries.clear();
    }

    #[test]
    fn report_free_and_choose_peers() {
        let mut r = ring(A);
        assert!(r.claim_for_peers(&[A, B, C]).is_ok());
        let mut m = BTreeMap::new();
        m.insert(Address(0), 100);
        assert!(matches!(r.report_free(m.clone()), Ok(true)));
        assert!(matches!(r.report_free(m), Ok(false)));
        let mut bad = BTreeMap::new();
        bad.insert(Address(128), 1);
        assert!(r.report_free(bad).is_err());
        let mut rng = SeededRng::new(1);
        let mut peers = r.choose_peers_to_ask_for_space(Address(0), Address(256), &mut rng);
        peers.sort();
        assert_eq!(peers, vec![B, C]);
        let only_c = r.choose_peers_to_ask_for_space(Address(200), Address(256), &mut rng);
        assert_eq!(only_c, vec![C]);
    }

    #[test]
    fn transfer_moves_everything() {
        let mut r = ring(A);
        assert!(r.claim_for_peers(&[A, B, C]).is_ok());
        let moved = r.transfer(B, A);
        assert_eq!(moved, vec![Range::new(Address(128), Address(192))]);
        assert_eq!(r.entries[1].version, TRANSFER_VERSION_BUMP);
        assert_eq!(r.pick_peer_for_transfer(|_| true), Some(C));
        assert_eq!(r.pick_peer_for_transfer(|p| p != C), None);
    }
}
