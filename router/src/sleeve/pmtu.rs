//! Path MTU discovery for one sleeve connection, as Weave Net 2.8.1 runs
//! it.
//!
//! DF datagrams go out with the kernel's PMTU discovery on. When one is
//! refused as too big (`EMSGSIZE`), the shell reads the path MTU the kernel
//! now believes (`IP_MTU`) and hands it to [`Pmtu::on_msg_too_big`]. The
//! overlay MTU that path allows (path MTU minus the sleeve's DF overhead)
//! becomes both the working MTU and the first candidate, and a binary
//! search between 552 (always assumed good) and that candidate verifies
//! it: each candidate is probed with a special all-zero frame of
//! `candidate + 14` bytes on the DF stream, which the peer acknowledges
//! over the control channel with the size it got. A probe is retried with
//! a timeout of 10 ms doubled per attempt; after 8 unanswered attempts
//! the candidate counts as bad. The search ends when the highest good and
//! lowest bad sizes meet, and the highest good one becomes the MTU.

use std::time::{Duration, Instant};

use super::frame::{ETHERNET_OVERHEAD, UDP_OVERHEAD};

/// The overlay MTU before anything is known.
pub const DEFAULT_MTU: usize = 65535;
/// Size of the oversized frame sent once a connection is up, to make the
/// kernel report the path MTU.
pub const PMTU_DISCOVERY_SIZE: usize = 60000;
/// The size the search assumes always gets through.
pub const MIN_GOOD_MTU: usize = 552;
/// Unanswered probes of one candidate before it counts as too big.
pub const MTU_VERIFY_ATTEMPTS: u32 = 8;
/// Timeout of the first probe of a candidate; doubled with each attempt.
pub const MTU_VERIFY_TIMEOUT: Duration = Duration::from_millis(10);

/// Something the connection must send for the search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PmtuStep {
    /// Send a probe: a special all-zero frame of this many bytes on the
    /// DF stream.
    Probe {
        /// Frame bytes (candidate MTU plus the Ethernet header).
        frame_len: usize,
    },
    /// The search ended; this MTU is now in force.
    Verified {
        /// The verified overlay MTU.
        mtu: usize,
    },
}

/// The discovery state of one connection.
#[derive(Debug, Clone)]
pub struct Pmtu {
    overhead_df: usize,
    mtu: usize,
    max_payload: usize,
    highest_good: usize,
    lowest_bad: usize,
    candidate: usize,
    tests_sent: u32,
    deadline: Option<Instant>,
}

impl Pmtu {
    /// Fresh state for a connection whose DF overhead (IP + UDP + sleeve
    /// headers + one frame header + Ethernet) is `overhead_df`.
    pub fn new(overhead_df: usize) -> Self {
        Pmtu {
            overhead_df,
            mtu: DEFAULT_MTU,
            max_payload: DEFAULT_MTU - UDP_OVERHEAD,
            highest_good: 0,
            lowest_bad: 0,
            candidate: 0,
            tests_sent: 0,
            deadline: None,
        }
    }

    /// The overlay MTU in force: frames larger than this plus the Ethernet
    /// header cannot go on the DF stream.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// The most UDP payload bytes a datagram may have when aggregating.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// The MTU being probed, if a search is running.
    pub fn candidate(&self) -> Option<usize> {
        (self.candidate != 0).then_some(self.candidate)
    }

    /// When the outstanding probe times out.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The sleeve's DF overhead this state was made with.
    pub fn overhead_df(&self) -> usize {
        self.overhead_df
    }

    /// A DF send failed with `EMSGSIZE` and the kernel now reports
    /// `underlay_pmtu`. Starts (or restarts) the search unless a running
    /// search already probes at or below what this path allows.
    pub fn on_msg_too_big(&mut self, now: Instant, underlay_pmtu: usize) -> Option<PmtuStep> {
        let mtu = underlay_pmtu.saturating_sub(self.overhead_df).max(1);
        if self.candidate != 0 && mtu >= self.candidate {
            return None;
        }
        self.highest_good = MIN_GOOD_MTU;
        self.lowest_bad = mtu + 1;
        self.candidate = mtu;
        self.tests_sent = 0;
        self.max_payload = underlay_pmtu.saturating_sub(UDP_OVERHEAD);
        self.mtu = mtu;
        Some(self.probe(now))
    }

    fn probe(&mut self, now: Instant) -> PmtuStep {
        let wait = MTU_VERIFY_TIMEOUT
            .checked_mul(1 << self.tests_sent.min(20))
            .unwrap_or(Duration::MAX);
        self.deadline = now.checked_add(wait);
        self.tests_sent += 1;
        PmtuStep::Probe {
            frame_len: self.candidate + ETHERNET_OVERHEAD,
        }
    }

    /// The peer acknowledged a probe of `mtu` bytes (frame minus Ethernet
    /// header). Acks for anything but the current candidate are ignored.
    pub fn on_ack(&mut self, now: Instant, mtu: u16) -> Option<PmtuStep> {
        if self.candidate == 0 || usize::from(mtu) != self.candidate {
            return None;
        }
        self.highest_good = self.candidate;
        Some(self.search(now))
    }

    /// Call when [`Pmtu::deadline`] has passed.
    pub fn on_timeout(&mut self, now: Instant) -> Option<PmtuStep> {
        match self.deadline {
            Some(d) if d <= now => {}
            _ => return None,
        }
        self.deadline = None;
        if self.tests_sent < MTU_VERIFY_ATTEMPTS {
            return Some(self.probe(now));
        }
        self.lowest_bad = self.candidate;
        Some(self.search(now))
    }

    fn search(&mut self, now: Instant) -> PmtuStep {
        if self.highest_good + 1 >= self.lowest_bad {
            let mtu = self.highest_good;
            self.deadline = None;
            self.candidate = 0;
            self.max_payload = (mtu + self.overhead_df).saturating_sub(UDP_OVERHEAD);
            self.mtu = mtu;
            return PmtuStep::Verified { mtu };
        }
        self.candidate = (self.highest_good + self.lowest_bad) / 2;
        self.tests_sent = 0;
        self.probe(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OVERHEAD: usize = 28 + 6 + 14 + 14;

    fn probe_len(step: Option<PmtuStep>) -> usize {
        match step {
            Some(PmtuStep::Probe { frame_len }) => frame_len,
            other => panic!("expected a probe, got {other:?}"),
        }
    }

    #[test]
    fn first_candidate_verified_at_once() {
        let t = Instant::now();
        let mut p = Pmtu::new(OVERHEAD);
        assert_eq!((p.mtu(), p.max_payload()), (65535, 65507));
        let len = probe_len(p.on_msg_too_big(t, 1500));
        assert_eq!(len, 1438 + 14);
        assert_eq!(
            (p.mtu(), p.max_payload(), p.candidate()),
            (1438, 1472, Some(1438))
        );
        assert_eq!(p.deadline(), Some(t + Duration::from_millis(10)));
        // A stale ack changes nothing.
        assert_eq!(p.on_ack(t, 1000), None);
        assert_eq!(p.on_ack(t, 1438), Some(PmtuStep::Verified { mtu: 1438 }));
        assert_eq!(
            (p.mtu(), p.max_payload(), p.candidate(), p.deadline()),
            (1438, 1472, None, None)
        );
    }

    #[test]
    fn retries_double_then_binary_search() {
        let mut t = Instant::now();
        let mut p = Pmtu::new(OVERHEAD);
        probe_len(p.on_msg_too_big(t, 1500));
        // Seven more attempts at 20, 40, … ms, then the candidate is bad.
        for attempt in 1..MTU_VERIFY_ATTEMPTS {
            let d = p.deadline().unwrap();
            assert_eq!(d - t, MTU_VERIFY_TIMEOUT * (1 << (attempt - 1)));
            assert_eq!(p.on_timeout(d - Duration::from_millis(1)), None);
            t = d;
            assert_eq!(probe_len(p.on_timeout(t)), 1438 + 14);
        }
        t = p.deadline().unwrap();
        // Search between 552 and 1438: (552 + 1438) / 2 = 995.
        assert_eq!(probe_len(p.on_timeout(t)), 995 + 14);
        assert_eq!(p.deadline(), Some(t + MTU_VERIFY_TIMEOUT));
        // Simulate a path that passes up to 1200: ack what fits, time out
        // the rest, until the search ends.
        let limit = 1200;
        let mut verified = None;
        for _ in 0..200 {
            let c = p.candidate().unwrap();
            let step = if c <= limit {
                p.on_ack(t, c as u16)
            } else {
                t = p.deadline().unwrap();
                p.on_timeout(t)
            };
            if let Some(PmtuStep::Verified { mtu }) = step {
                verified = Some(mtu);
                break;
            }
        }
        assert_eq!(verified, Some(1200));
        assert_eq!(p.mtu(), 1200);
        assert_eq!(p.max_payload(), 1200 + OVERHEAD - 28);
    }

    #[test]
    fn lower_pmtu_restarts_higher_is_ignored() {
        let t = Instant::now();
        let mut p = Pmtu::new(OVERHEAD);
        probe_len(p.on_msg_too_big(t, 9000));
        assert_eq!(p.on_msg_too_big(t, 9000), None);
        assert_eq!(p.on_msg_too_big(t, 9500), None);
        assert_eq!(probe_len(p.on_msg_too_big(t, 1500)), 1438 + 14);
        assert_eq!(p.mtu(), 1438);
        // After verification any report restarts the search.
        p.on_ack(t, 1438);
        assert_eq!(probe_len(p.on_msg_too_big(t, 1500)), 1452);
    }

    #[test]
    fn tiny_path_verifies_the_floor() {
        let mut t = Instant::now();
        let mut p = Pmtu::new(OVERHEAD);
        probe_len(p.on_msg_too_big(t, 576));
        // Candidate 514 is below the assumed-good 552: one failure ends it.
        let mut last = None;
        for _ in 0..MTU_VERIFY_ATTEMPTS {
            t = p.deadline().unwrap();
            last = p.on_timeout(t);
        }
        assert_eq!(last, Some(PmtuStep::Verified { mtu: 552 }));
    }
}
