//! Registration and reclaim, as a sans-IO state machine: Weave Net
//! 2.8.1's kube-peers protocol on the registry ConfigMap (see
//! [`crate::registry`]), driven by a shell that performs each
//! [`Request`] and feeds back its answer as an [`Input`].
//!
//! One run:
//!
//! 1. **Register**: make sure this peer is listed under its Node (name and
//!    UID), writing with the resourceVersion read; on 409 Conflict, wait a
//!    jittered retry period (2–4 s, Weave's) and read again.
//! 2. **Round**: read the registry and LIST Nodes. The victims are listed
//!    peers (not this one) whose Node is gone — absent, or present with
//!    another UID than the one recorded — and other peers listed under this
//!    Node's name (the Node was recreated; Weave #3394). A Node list that
//!    does not show this agent's own Node is not trusted: no victims then.
//! 3. **Per victim**: re-read; skip it if no longer listed. Take its lock
//!    (`kube-peers.weave.works/<victim>` = my peer name) if none is held,
//!    or take over a lock whose holder is no longer listed (#3386); keep
//!    it if it is already mine (a restart mid-reclaim); otherwise another
//!    live peer is at it: skip. A lock write that meets 409 means someone
//!    else moved first: skip. With the lock, **re-read and check** the
//!    victim is still listed, then `DELETE /peer/<victim>` on the local
//!    router, then remove the victim, its lock and every lock it held in
//!    one write (retried on 409).
//! 4. Rounds repeat until one finds no victims, or three rounds in a row
//!    change nothing.
//!
//! Better than Weave: any other API or router failure is retried with
//! exponential backoff (1 s doubling to 60 s, jittered), never fatal; each
//! rmpeer is reported ([`Note::Reclaimed`]) so the shell records a
//! Kubernetes Event. Randomness comes from a seeded generator.
//!
//! Why one victim is never reclaimed twice: the lock is taken by a write
//! conditional on the resourceVersion that showed it free, so of two
//! agents racing for it exactly one write succeeds; the loser sees the
//! winner's lock (a listed peer) on its next read and skips. The winner
//! re-reads before `rmpeer`, so a victim already forgotten by a finished
//! reclaim is not removed again; and the forgetting write removes the
//! entry and its lock together, so no reader sees the victim listed
//! without its lock once the rmpeer is done.

use std::collections::VecDeque;
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;

use crate::nodes::NodeInfo;
use crate::registry::{PeerEntry, Registry};
use crate::start::{Me, node_exists};

/// Weave's conflict retry period; the wait is this plus up to as much
/// again (jitter factor 1).
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// First backoff after a failed call.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest backoff.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Rounds in a row without a change that end a run.
pub const QUIET_ROUNDS: u32 = 3;

/// A failed API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 409: the object changed since it was read.
    Conflict,
    /// Anything else (unreachable, 5xx, 403…), with its description.
    Other(String),
}

/// What the shell must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// GET the registry ConfigMap (absent: answer an empty [`Registry`]
    /// with no resourceVersion).
    ReadRegistry,
    /// LIST Nodes.
    ListNodes,
    /// Write the registry: PUT with its resourceVersion, or CREATE when it
    /// has none. Answer with the registry as written (new version).
    WriteRegistry(Registry),
    /// `DELETE /peer/<name>` on the local router.
    RmPeer(String),
    /// Wait, then answer [`Input::Woke`].
    Sleep(Duration),
    /// The run is over.
    Done,
}

/// The answer to the last request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// To [`Request::ReadRegistry`].
    Registry(Result<Registry, ApiError>),
    /// To [`Request::ListNodes`].
    Nodes(Result<Vec<NodeInfo>, ApiError>),
    /// To [`Request::WriteRegistry`].
    Written(Result<Registry, ApiError>),
    /// To [`Request::RmPeer`]: the router's answer text, or why it failed.
    RmPeer(Result<String, String>),
    /// To [`Request::Sleep`].
    Woke,
}

/// Something worth telling the operator (logs, Kubernetes Events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// This agent added or updated its registry entry.
    Registered,
    /// This agent ran `rmpeer` on a victim.
    Reclaimed {
        /// The victim's peer name.
        victim: String,
        /// The Node it was listed under.
        node: String,
        /// The router's answer (`N IPs taken over from …`).
        result: String,
    },
    /// Another live peer holds the victim's lock.
    LockedByOther {
        /// The victim.
        victim: String,
        /// The holder.
        holder: String,
    },
    /// A call failed; it is retried after `after`.
    Retrying {
        /// What failed.
        what: String,
        /// How.
        error: String,
        /// The wait.
        after: Duration,
    },
    /// The registry holds something unreadable; the run stops (a later
    /// trigger tries again).
    Unreadable(String),
}

/// The machine's output for one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// What to do next.
    pub request: Request,
    /// What happened.
    pub notes: Vec<Note>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Reading to register.
    RegisterRead,
    /// Writing my entry.
    RegisterWrite,
    /// Reading at a round's start.
    RoundRead,
    /// Listing Nodes for the round (the registry read is kept).
    RoundNodes(Registry),
    /// Reading before taking a victim's lock.
    LockRead,
    /// Writing the lock.
    LockWrite,
    /// Re-reading with the lock held.
    Recheck,
    /// Waiting for the router's rmpeer.
    RmPeer,
    /// Reading to forget the victim.
    ForgetRead,
    /// Writing the forgetting.
    ForgetWrite,
    /// Sleeping, then `then`.
    Sleeping(Box<Phase>),
    /// Over.
    Done,
}

/// One registration-and-reclaim run.
#[derive(Debug)]
pub struct Reclaim {
    me: Me,
    rng: StdRng,
    phase: Phase,
    /// Victims of this round still to handle: (peer, node).
    queue: VecDeque<(String, String)>,
    /// Whether this round changed anything.
    changed: bool,
    quiet: u32,
    failures: u32,
    /// Whether to register first.
    register: bool,
    /// Whether to reclaim (false: register only).
    rounds: bool,
}

impl Reclaim {
    /// A run for `me`; `register` first ensures its own entry (the run at
    /// start does; those triggered later may skip it). `rng` is seeded by
    /// the caller.
    pub fn new(me: Me, register: bool, rng: StdRng) -> Reclaim {
        Reclaim {
            me,
            rng,
            phase: Phase::Done,
            queue: VecDeque::new(),
            changed: false,
            quiet: 0,
            failures: 0,
            register,
            rounds: true,
        }
    }

    /// Only registers (before the router runs, rmpeer is impossible).
    pub fn register_only(mut self) -> Reclaim {
        self.register = true;
        self.rounds = false;
        self
    }

    fn after_registering(&mut self, notes: Vec<Note>) -> Output {
        if self.rounds {
            let mut out = self.read(Phase::RoundRead);
            out.notes = notes;
            out
        } else {
            self.finish(notes)
        }
    }

    /// Whether the run is over.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Starts the run: the first request.
    pub fn start(&mut self) -> Output {
        self.phase = if self.register {
            Phase::RegisterRead
        } else {
            Phase::RoundRead
        };
        self.out(Request::ReadRegistry, vec![])
    }

    fn out(&self, request: Request, notes: Vec<Note>) -> Output {
        Output { request, notes }
    }

    fn jitter(&mut self) -> Duration {
        let extra = self.rng.gen_range(0..=RETRY_PERIOD.as_millis() as u64);
        RETRY_PERIOD + Duration::from_millis(extra)
    }

    /// Sleeps before retrying `phase` after a failed call `what`.
    fn backoff(&mut self, what: &str, error: &ApiError, retry: Phase) -> Output {
        let error = match error {
            ApiError::Conflict => "409 Conflict".to_string(),
            ApiError::Other(e) => e.clone(),
        };
        self.failures = self.failures.saturating_add(1);
        let exp = BACKOFF_MIN.saturating_mul(1u32 << self.failures.min(7).saturating_sub(1));
        let base = exp.min(BACKOFF_MAX);
        let after =
            base + Duration::from_millis(self.rng.gen_range(0..=base.as_millis() as u64 / 2));
        self.phase = Phase::Sleeping(Box::new(retry));
        let note = Note::Retrying {
            what: what.to_string(),
            error,
            after,
        };
        self.out(Request::Sleep(after), vec![note])
    }

    fn conflict_wait(&mut self, retry: Phase) -> Output {
        let after = self.jitter();
        self.phase = Phase::Sleeping(Box::new(retry));
        self.out(Request::Sleep(after), vec![])
    }

    fn read(&mut self, phase: Phase) -> Output {
        self.phase = phase;
        self.out(Request::ReadRegistry, vec![])
    }

    fn finish(&mut self, notes: Vec<Note>) -> Output {
        self.phase = Phase::Done;
        self.out(Request::Done, notes)
    }

    fn current_victim(&self) -> Option<(String, String)> {
        self.queue.front().cloned()
    }

    /// Goes on with the next victim, or ends the round.
    fn next_victim(&mut self, notes: Vec<Note>) -> Output {
        if !self.queue.is_empty() {
            let mut out = self.read(Phase::LockRead);
            out.notes = notes;
            return out;
        }
        if self.changed {
            self.quiet = 0;
        } else {
            self.quiet += 1;
        }
        if self.quiet >= QUIET_ROUNDS {
            return self.finish(notes);
        }
        self.changed = false;
        if self.quiet == 0 {
            let mut out = self.read(Phase::RoundRead);
            out.notes = notes;
            out
        } else {
            // Nothing moved (locks held by others): give them time.
            let after = self.jitter();
            self.phase = Phase::Sleeping(Box::new(Phase::RoundRead));
            self.out(Request::Sleep(after), notes)
        }
    }

    /// The victims in `registry` given `nodes`, or `None` when `nodes`
    /// cannot be trusted (it does not show this agent's Node).
    pub fn victims(me: &Me, registry: &Registry, nodes: &[NodeInfo]) -> Option<Vec<PeerEntry>> {
        if !nodes.iter().any(|n| n.name == me.node) {
            return None;
        }
        let list = registry.peers().ok()?;
        Some(
            list.peers
                .into_iter()
                .filter(|e| e.peer_name != me.peer)
                .filter(|e| e.node_name == me.node || !node_exists(e, nodes))
                .collect(),
        )
    }

    /// Feeds the answer to the last request.
    pub fn step(&mut self, input: Input) -> Output {
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        match (phase, input) {
            (Phase::Sleeping(next), Input::Woke) => match *next {
                Phase::RoundNodes(reg) => {
                    self.phase = Phase::RoundNodes(reg);
                    self.out(Request::ListNodes, vec![])
                }
                Phase::RmPeer => {
                    let (victim, _) = self.current_victim().unwrap_or_default();
                    self.phase = Phase::RmPeer;
                    self.out(Request::RmPeer(victim), vec![])
                }
                // Every other phase begins with a read.
                other => self.read(other),
            },

            // ----- registration -----
            (Phase::RegisterRead, Input::Registry(Err(e))) => {
                self.backoff("reading the registry", &e, Phase::RegisterRead)
            }
            (Phase::RegisterRead, Input::Registry(Ok(mut reg))) => {
                self.failures = 0;
                let mut list = match reg.peers() {
                    Ok(list) => list,
                    Err(e) => return self.finish(vec![Note::Unreadable(e.to_string())]),
                };
                let want = PeerEntry {
                    peer_name: self.me.peer.clone(),
                    node_name: self.me.node.clone(),
                    node_uid: self.me.node_uid.clone(),
                };
                let present = list.get(&self.me.peer).cloned();
                match present {
                    Some(entry)
                        if entry == want
                            || (entry.node_name == want.node_name && want.node_uid.is_none()) =>
                    {
                        self.after_registering(vec![])
                    }
                    Some(_) => {
                        for entry in list
                            .peers
                            .iter_mut()
                            .filter(|e| e.peer_name == want.peer_name)
                        {
                            *entry = want.clone();
                        }
                        reg.set_peers(&list);
                        self.phase = Phase::RegisterWrite;
                        self.out(Request::WriteRegistry(reg), vec![])
                    }
                    None => {
                        list.peers.push(want);
                        reg.set_peers(&list);
                        self.phase = Phase::RegisterWrite;
                        self.out(Request::WriteRegistry(reg), vec![])
                    }
                }
            }
            (Phase::RegisterWrite, Input::Written(Ok(_))) => {
                self.failures = 0;
                self.after_registering(vec![Note::Registered])
            }
            (Phase::RegisterWrite, Input::Written(Err(ApiError::Conflict))) => {
                self.conflict_wait(Phase::RegisterRead)
            }
            (Phase::RegisterWrite, Input::Written(Err(e))) => {
                self.backoff("registering", &e, Phase::RegisterRead)
            }

            // ----- a round -----
            (Phase::RoundRead, Input::Registry(Err(e))) => {
                self.backoff("reading the registry", &e, Phase::RoundRead)
            }
            (Phase::RoundRead, Input::Registry(Ok(reg))) => {
                self.failures = 0;
                self.phase = Phase::RoundNodes(reg);
                self.out(Request::ListNodes, vec![])
            }
            (Phase::RoundNodes(reg), Input::Nodes(Err(e))) => {
                self.backoff("listing Nodes", &e, Phase::RoundNodes(reg))
            }
            (Phase::RoundNodes(reg), Input::Nodes(Ok(nodes))) => {
                self.failures = 0;
                if let Err(e) = reg.peers() {
                    return self.finish(vec![Note::Unreadable(e.to_string())]);
                }
                match Reclaim::victims(&self.me, &reg, &nodes) {
                    None => {
                        let note = Note::Retrying {
                            what: "listing Nodes".into(),
                            error: format!("the list does not show this Node {:?}", self.me.node),
                            after: Duration::ZERO,
                        };
                        self.backoff_note(note, Phase::RoundRead)
                    }
                    Some(victims) if victims.is_empty() => self.finish(vec![]),
                    Some(victims) => {
                        self.queue = victims
                            .into_iter()
                            .map(|e| (e.peer_name, e.node_name))
                            .collect();
                        self.read(Phase::LockRead)
                    }
                }
            }

            // ----- one victim -----
            (Phase::LockRead, Input::Registry(Err(e))) => {
                self.backoff("reading the registry", &e, Phase::LockRead)
            }
            (Phase::LockRead, Input::Registry(Ok(mut reg))) => {
                self.failures = 0;
                let Some((victim, _)) = self.current_victim() else {
                    return self.next_victim(vec![]);
                };
                let list = match reg.peers() {
                    Ok(list) => list,
                    Err(e) => return self.finish(vec![Note::Unreadable(e.to_string())]),
                };
                if !list.contains(&victim) {
                    self.queue.pop_front();
                    return self.next_victim(vec![]);
                }
                match reg.lock_holder(&victim).map(str::to_string) {
                    Some(holder) if holder == self.me.peer => self.read(Phase::Recheck),
                    Some(holder) if list.contains(&holder) => {
                        self.queue.pop_front();
                        self.next_victim(vec![Note::LockedByOther { victim, holder }])
                    }
                    // Free, or held by a peer no longer listed: take it.
                    _ => {
                        reg.set_lock(&victim, &self.me.peer);
                        self.phase = Phase::LockWrite;
                        self.out(Request::WriteRegistry(reg), vec![])
                    }
                }
            }
            (Phase::LockWrite, Input::Written(Ok(_))) => {
                self.failures = 0;
                self.read(Phase::Recheck)
            }
            (Phase::LockWrite, Input::Written(Err(ApiError::Conflict))) => {
                // Someone else wrote first; the next round looks again.
                self.queue.pop_front();
                self.next_victim(vec![])
            }
            (Phase::LockWrite, Input::Written(Err(e))) => {
                self.backoff("taking a reclaim lock", &e, Phase::LockRead)
            }
            (Phase::Recheck, Input::Registry(Err(e))) => {
                self.backoff("reading the registry", &e, Phase::Recheck)
            }
            (Phase::Recheck, Input::Registry(Ok(reg))) => {
                self.failures = 0;
                let Some((victim, _)) = self.current_victim() else {
                    return self.next_victim(vec![]);
                };
                let listed = reg.peers().map(|l| l.contains(&victim)).unwrap_or(false);
                let mine = reg.lock_holder(&victim) == Some(self.me.peer.as_str());
                if listed && mine {
                    self.phase = Phase::RmPeer;
                    self.out(Request::RmPeer(victim), vec![])
                } else if listed {
                    // The lock was taken over meanwhile: not ours any more.
                    self.queue.pop_front();
                    self.next_victim(vec![])
                } else {
                    // Already forgotten by another reclaim: just tidy up.
                    self.read(Phase::ForgetRead)
                }
            }
            (Phase::RmPeer, Input::RmPeer(Err(e))) => {
                self.backoff("rmpeer on the router", &ApiError::Other(e), Phase::RmPeer)
            }
            (Phase::RmPeer, Input::RmPeer(Ok(result))) => {
                self.failures = 0;
                let (victim, node) = self.current_victim().unwrap_or_default();
                self.changed = true;
                let mut out = self.read(Phase::ForgetRead);
                out.notes.push(Note::Reclaimed {
                    victim,
                    node,
                    result: result.trim().to_string(),
                });
                out
            }
            (Phase::ForgetRead, Input::Registry(Err(e))) => {
                self.backoff("reading the registry", &e, Phase::ForgetRead)
            }
            (Phase::ForgetRead, Input::Registry(Ok(mut reg))) => {
                self.failures = 0;
                let (victim, _) = self.current_victim().unwrap_or_default();
                let before = reg.clone();
                if let Err(e) = reg.forget(&victim) {
                    return self.finish(vec![Note::Unreadable(e.to_string())]);
                }
                if reg == before {
                    self.queue.pop_front();
                    return self.next_victim(vec![]);
                }
                self.phase = Phase::ForgetWrite;
                self.out(Request::WriteRegistry(reg), vec![])
            }
            (Phase::ForgetWrite, Input::Written(Ok(_))) => {
                self.failures = 0;
                self.changed = true;
                self.queue.pop_front();
                self.next_victim(vec![])
            }
            (Phase::ForgetWrite, Input::Written(Err(ApiError::Conflict))) => {
                self.conflict_wait(Phase::ForgetRead)
            }
            (Phase::ForgetWrite, Input::Written(Err(e))) => {
                self.backoff("forgetting a reclaimed peer", &e, Phase::ForgetRead)
            }

            // An answer that does not fit the request: a shell bug. Keep
            // the phase and ask again for what it needs.
            (phase, _) => {
                let request = match &phase {
                    Phase::RoundNodes(_) => Request::ListNodes,
                    Phase::RmPeer => Request::RmPeer(self.current_victim().unwrap_or_default().0),
                    Phase::Sleeping(_) => Request::Sleep(Duration::ZERO),
                    Phase::Done => Request::Done,
                    Phase::RegisterWrite | Phase::LockWrite | Phase::ForgetWrite => {
                        // The write's outcome is unknown: read again.
                        let retry = match phase {
                            Phase::RegisterWrite => Phase::RegisterRead,
                            Phase::LockWrite => Phase::LockRead,
                            _ => Phase::ForgetRead,
                        };
                        return self.read(retry);
                    }
                    _ => Request::ReadRegistry,
                };
                self.phase = phase;
                self.out(request, vec![])
            }
        }
    }

    fn backoff_note(&mut self, note: Note, retry: Phase) -> Output {
        let Note::Retrying { what, error, .. } = note else {
            return self.finish(vec![note]);
        };
        let mut out = self.backoff(&what, &ApiError::Other(error), retry);
        out.notes.truncate(1);
        out
    }
}

#[cfg(test)]
mod tests;
