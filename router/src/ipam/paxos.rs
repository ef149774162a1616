//! Single-value Paxos over gossip, used once: to agree on the set of peers
//! among which the empty ring is first divided.
//!
//! Every node gossips what it knows of every node's claims (its promise and
//! what it accepted). A node proposes by raising its own promise to a round
//! above any it has seen; a proposer whose promise is shared by a quorum
//! accepts its proposal (carrying the highest value already accepted by any
//! of the quorum, or else the names of all nodes it knows); a node whose
//! promise matches some node's accepted proposal accepts it too. Consensus
//! is a quorum of nodes having accepted values of the same origin.
//!
//! Node ids include the peer's UID. A weave-rs router persists its Paxos
//! state (see `allocator`), so a restart keeps the acceptor's identity and
//! promises; Weave Net itself does not, which lets a restarted node act as a
//! fresh acceptor.

use std::collections::BTreeMap;

use super::peer::PeerName;

/// A Paxos participant: a peer in one particular run (name and UID).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct NodeId {
    /// The peer name.
    pub name: PeerName,
    /// The peer's UID for the run in which it joined the vote.
    pub uid: u64,
}

/// A proposal number: round first, then the proposer (lower proposals
/// precede higher ones). Round 0 is "none".
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct ProposalId {
    /// The round, from 1.
    pub round: u64,
    /// Who proposed.
    pub proposer: NodeId,
}

impl ProposalId {
    /// True for a real proposal (round above 0).
    pub fn is_valid(&self) -> bool {
        self.round > 0
    }
}

/// An accepted value with the proposal that first chose it.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct AcceptedValue {
    /// The peer names to divide the ring among (unsorted, may repeat).
    pub value: Vec<PeerName>,
    /// The proposal that picked the value.
    pub origin: ProposalId,
}

/// What one node has promised and accepted.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct NodeClaims {
    /// The node accepts no proposal below this one.
    pub promise: ProposalId,
    /// The proposal accepted, if valid.
    pub accepted: ProposalId,
    /// The value of the accepted proposal.
    pub accepted_val: AcceptedValue,
}

impl NodeClaims {
    fn same(&self, other: &NodeClaims) -> bool {
        self.promise == other.promise
            && self.accepted == other.accepted
            && self.accepted_val.origin == other.accepted_val.origin
    }
}

/// The gossiped Paxos state: every known node's claims.
pub type PaxosState = BTreeMap<NodeId, NodeClaims>;

/// An electing Paxos node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaxosNode {
    id: NodeId,
    quorum: u32,
    knows: PaxosState,
}

/// What the status page shows while consensus is pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaxosStatus {
    /// True for an elector, false for an observer.
    pub elector: bool,
    /// How many nodes' claims we know.
    pub known_nodes: usize,
    /// How many must agree.
    pub quorum: u32,
}

/// Proposing with no quorum set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Paxos proposal attempted before a quorum was set")]
pub struct NoQuorum;

impl PaxosNode {
    /// A node knowing nothing, with quorum 0 (unset).
    pub fn new(id: NodeId) -> Self {
        PaxosNode {
            id,
            quorum: 0,
            knows: PaxosState::new(),
        }
    }

    /// A node restored from persisted state.
    pub fn restore(id: NodeId, knows: PaxosState) -> Self {
        PaxosNode {
            id,
            quorum: 0,
            knows,
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Sets how many nodes must agree.
    pub fn set_quorum(&mut self, quorum: u32) {
        self.quorum = quorum;
    }

    /// The quorum in force (0 when unset).
    pub fn quorum(&self) -> u32 {
        self.quorum
    }

    /// The state to gossip.
    pub fn state(&self) -> &PaxosState {
        &self.knows
    }

    /// Learns from another node's gossip; true when something was new.
    pub fn update(&mut self, from: &PaxosState) -> bool {
        let mut changed = false;
        for (id, theirs) in from {
            match self.knows.get_mut(id) {
                Some(ours) => {
                    if ours.promise < theirs.promise {
                        ours.promise = theirs.promise;
                        changed = true;
                    }
                    if ours.accepted < theirs.accepted {
                        ours.accepted = theirs.accepted;
                        ours.accepted_val = theirs.accepted_val.clone();
                        changed = true;
                    }
                }
                None => {
                    self.knows.insert(*id, theirs.clone());
                    changed = true;
                }
            }
        }
        changed
    }

    /// Starts a new proposal above every round seen.
    pub fn propose(&mut self) -> Result<(), NoQuorum> {
        if self.quorum == 0 {
            return Err(NoQuorum);
        }
        let round = self
            .knows
            .values()
            .map(|c| c.promise.round.max(c.accepted.round))
            .max()
            .unwrap_or(0);
        let ours = self.knows.entry(self.id).or_default();
        ours.promise = ProposalId {
            round: round.saturating_add(1),
            proposer: self.id,
        };
        if self.quorum == 1 {
            self.think();
        }
        Ok(())
    }

    /// Runs the Paxos steps on what we know; true when our claims changed.
    pub fn think(&mut self) -> bool {
        let before = self.knows.get(&self.id).cloned().unwrap_or_default();
        let mut ours = before.clone();

        // Promise: follow the highest promise anyone made.
        if let Some(top) = self.knows.values().map(|c| c.promise).max() {
            if ours.promise < top {
                ours.promise = top;
            }
        }

        // Accept request: our proposal is still our promise, and a quorum
        // promised it.
        if ours.promise.proposer == self.id && ours.promise.is_valid() {
            let mut count = 0u32;
            let mut best = ProposalId::default();
            let mut best_val = AcceptedValue::default();
            for c in self.knows.values() {
                if c.promise == ours.promise {
                    count += 1;
                    if best < c.accepted {
                        best = c.accepted;
                        best_val = c.accepted_val.clone();
                    }
                }
            }
            if count >= self.quorum {
                if !best.is_valid() {
                    best_val = AcceptedValue {
                        value: self.knows.keys().map(|id| id.name).collect(),
                        origin: ours.promise,
                    };
                }
                ours.accepted = ours.promise;
                ours.accepted_val = best_val;
            }
        }

        // Accepted: someone accepted the proposal we promised; so do we.
        if let Some(c) = self
            .knows
            .values()
            .find(|c| c.accepted == ours.promise && c.accepted.is_valid())
        {
            ours.accepted = c.accepted;
            ours.accepted_val = c.accepted_val.clone();
        }

        if ours.same(&before) && self.knows.contains_key(&self.id) {
            return false;
        }
        self.knows.insert(self.id, ours);
        true
    }

    /// The agreed value, once a quorum accepted values of one origin.
    pub fn consensus(&self) -> Option<AcceptedValue> {
        if self.quorum == 0 {
            return None;
        }
        let mut counts: BTreeMap<ProposalId, u32> = BTreeMap::new();
        for c in self.knows.values() {
            if c.accepted.is_valid() {
                let n = counts.entry(c.accepted_val.origin).or_insert(0);
                *n += 1;
                if *n >= self.quorum {
                    return Some(c.accepted_val.clone());
                }
            }
        }
        None
    }

    /// Status for `/status/ipam`.
    pub fn status(&self) -> PaxosStatus {
        PaxosStatus {
            elector: true,
            known_nodes: self.knows.len(),
            quorum: self.quorum,
        }
    }
}

/// Our role in the initial consensus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Participant {
    /// Votes and may propose.
    Elector(PaxosNode),
    /// Never votes; waits for a ring from another peer.
    Observer,
}

impl Participant {
    /// True for an elector.
    pub fn is_elector(&self) -> bool {
        matches!(self, Participant::Elector(_))
    }

    /// The state to gossip (none for an observer, which asks for a ring
    /// by gossiping no Paxos state at all).
    pub fn state(&self) -> Option<&PaxosState> {
        match self {
            Participant::Elector(n) => Some(n.state()),
            Participant::Observer => None,
        }
    }

    /// See [`PaxosNode::set_quorum`].
    pub fn set_quorum(&mut self, q: u32) {
        if let Participant::Elector(n) = self {
            n.set_quorum(q);
        }
    }

    /// See [`PaxosNode::update`].
    pub fn update(&mut self, from: &PaxosState) -> bool {
        match self {
            Participant::Elector(n) => n.update(from),
            Participant::Observer => false,
        }
    }

    /// See [`PaxosNode::propose`].
    pub fn propose(&mut self) -> Result<(), NoQuorum> {
        match self {
            Participant::Elector(n) => n.propose(),
            Participant::Observer => Ok(()),
        }
    }

    /// See [`PaxosNode::think`].
    pub fn think(&mut self) -> bool {
        match self {
            Participant::Elector(n) => n.think(),
            Participant::Observer => false,
        }
    }

    /// See [`PaxosNode::consensus`].
    pub fn consensus(&self) -> Option<AcceptedValue> {
        match self {
            Participant::Elector(n) => n.consensus(),
            Participant::Observer => None,
        }
    }

    /// See [`PaxosNode::status`].
    pub fn status(&self) -> PaxosStatus {
        match self {
            Participant::Elector(n) => n.status(),
            Participant::Observer => PaxosStatus {
                elector: false,
                known_nodes: 0,
                quorum: 0,
            },
        }
    }
}

/// Sorts and de-duplicates an agreed value into the ring's seed list.
pub fn normalize_consensus(value: &[PeerName]) -> Vec<PeerName> {
    let mut v = value.to_vec();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::peer::SeededRng;

    fn node(n: u64) -> PaxosNode {
        PaxosNode::new(NodeId {
            name: PeerName(n),
            uid: n * 1000,
        })
    }

    #[test]
    fn quorum_of_one_decides_alone() {
        let mut a = node(1);
        assert_eq!(a.propose(), Err(NoQuorum));
        a.set_quorum(1);
        assert!(a.propose().is_ok());
        let c = a.consensus();
        assert_eq!(c.map(|c| c.value), Some(vec![PeerName(1)]));
    }

    /// Random gossip among nodes that propose at random: every node that
    /// reaches consensus reaches the same value.
    #[test]
    fn random_gossip_agrees() {
        let mut reached = 0;
        for seed in 0..300u64 {
            let mut rng = SeededRng::new(seed);
            let n = 2 + rng.below(6) as usize;
            let quorum = (n / 2 + 1) as u32;
            let mut nodes: Vec<PaxosNode> = (1..=n as u64).map(node).collect();
            for x in nodes.iter_mut() {
                x.set_quorum(quorum);
            }
            let mut decided: Option<AcceptedValue> = None;
            for _ in 0..400 {
                let i = rng.below(n as u64) as usize;
                if rng.below(10) == 0 {
                    assert!(nodes[i].propose().is_ok());
                } else {
                    let j = rng.below(n as u64) as usize;
                    let st = nodes[j].state().clone();
                    if nodes[i].update(&st) {
                        nodes[i].think();
                    }
                }
                for x in &nodes {
                    if let Some(v) = x.consensus() {
                        match &decided {
                            None => decided = Some(v),
                            Some(d) => assert_eq!(d.origin, v.origin, "seed {seed}"),
                        }
                    }
                }
            }
            reached += usize::from(decided.is_some());
        }
        assert!(
            reached > 250,
            "consensus reached in only {reached} of 300 runs"
        );
    }
}
