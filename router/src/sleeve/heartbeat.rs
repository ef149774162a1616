//! Sleeve heartbeats and connection health, with Weave Net 2.8.1's
//! timing.
//!
//! - Nothing is sent before the mesh confirms the connection. From then on
//!   heartbeats go every 500 ms on the DF stream, once the peer's UDP
//!   address is known (the dialling side knows it from the TCP connection;
//!   the other side learns it from the first heartbeat it receives).
//! - A heartbeat carrying our connection UID is answered once, over the
//!   control channel ("connection established"), and restarts the 60 s
//!   receive timeout (six slow intervals).
//! - When the peer's answer arrives the connection is established:
//!   heartbeats slow to every 10 s, and the fragmentation test and path
//!   MTU discovery start; the fragmentation test repeats every 5 minutes.
//! - 60 s without a heartbeat ends the connection.

use std::time::{Duration, Instant};

/// Heartbeat interval until the peer has answered.
pub const FAST_HEARTBEAT: Duration = Duration::from_millis(500);
/// Heartbeat interval once established.
pub const SLOW_HEARTBEAT: Duration = Duration::from_secs(10);
/// Slow intervals without a heartbeat before the connection is dead.
pub const MAX_MISSED_HEARTBEATS: u32 = 6;
/// Time without a heartbeat before the connection is dead (60 s).
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10 * MAX_MISSED_HEARTBEATS as u64);
/// How often the fragmentation test repeats.
pub const FRAG_TEST_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// What the connection must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatEvent {
    /// Send a heartbeat now.
    SendHeartbeat,
    /// Tell the peer (control channel) its heartbeat arrived.
    AckPeer,
    /// The connection just became established.
    Established,
    /// Run the fragmentation test now.
    FragTest,
    /// Send the oversized DF frame that starts path MTU discovery.
    StartPmtuDiscovery,
    /// No heartbeat for [`HEARTBEAT_TIMEOUT`]: the connection is dead.
    TimedOut,
}

/// Heartbeat timing and health of one sleeve connection.
#[derive(Debug, Clone, Default)]
pub struct Heartbeats {
    interval: Option<Duration>,
    next_send: Option<Instant>,
    timeout_at: Option<Instant>,
    frag_test_at: Option<Instant>,
    acked_peer: bool,
    established: bool,
    last_heard: Option<Instant>,
}

impl Heartbeats {
    /// State before confirmation.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the mesh confirmed the connection.
    pub fn confirmed(&self) -> bool {
        self.interval.is_some()
    }

    /// Whether the peer answered our heartbeats.
    pub fn established(&self) -> bool {
        self.established
    }

    /// The interval in force (none before confirmation).
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// When the last valid heartbeat arrived.
    pub fn last_heard(&self) -> Option<Instant> {
        self.last_heard
    }

    /// When [`Heartbeats::poll`] next has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.next_send, self.timeout_at, self.frag_test_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// The mesh confirmed the connection; `have_addr` says whether the
    /// peer's UDP address is known.
    pub fn confirm(&mut self, now: Instant, have_addr: bool, out: &mut Vec<HeartbeatEvent>) {
        if self.interval.is_some() {
            return;
        }
        self.interval = Some(FAST_HEARTBEAT);
        if have_addr {
            self.sent(now);
            out.push(HeartbeatEvent::SendHeartbeat);
        }
        self.timeout_at = Some(now + HEARTBEAT_TIMEOUT);
    }

    fn sent(&mut self, now: Instant) {
        self.next_send = self.interval.map(|i| now + i);
    }

    /// A heartbeat with our connection UID arrived; `addr_learned` is true
    /// when it taught us the peer's address for the first time.
    pub fn on_heartbeat(
        &mut self,
        now: Instant,
        addr_learned: bool,
        out: &mut Vec<HeartbeatEvent>,
    ) {
        self.last_heard = Some(now);
        if addr_learned && self.interval.is_some() {
            self.sent(now);
            out.push(HeartbeatEvent::SendHeartbeat);
        }
        if !self.acked_peer {
            self.acked_peer = true;
            out.push(HeartbeatEvent::AckPeer);
        }
        if self.timeout_at.is_some() {
            self.timeout_at = Some(now + HEARTBEAT_TIMEOUT);
        }
    }

    /// The peer acknowledged our heartbeat.
    pub fn on_ack(&mut self, now: Instant, out: &mut Vec<HeartbeatEvent>) {
        if self.interval != Some(SLOW_HEARTBEAT) {
            self.interval = Some(SLOW_HEARTBEAT);
            if self.next_send.is_some() {
                self.sent(now);
            }
            if !self.established {
                self.established = true;
                out.push(HeartbeatEvent::Established);
            }
        }
        self.frag_test_at = Some(now + FRAG_TEST_INTERVAL);
        out.push(HeartbeatEvent::FragTest);
        out.push(HeartbeatEvent::StartPmtuDiscovery);
    }

    /// Runs whatever is due at `now`.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<HeartbeatEvent>) {
        if self.timeout_at.is_some_and(|t| t <= now) {
            self.timeout_at = None;
            self.next_send = None;
            self.frag_test_at = None;
            out.push(HeartbeatEvent::TimedOut);
            return;
        }
        if self.next_send.is_some_and(|t| t <= now) {
            self.sent(now);
            out.push(HeartbeatEvent::SendHeartbeat);
        }
        if self.frag_test_at.is_some_and(|t| t <= now) {
            self.frag_test_at = Some(now + FRAG_TEST_INTERVAL);
            out.push(HeartbeatEvent::FragTest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HeartbeatEvent::*;
    use super::*;

    fn run(h: &mut Heartbeats, now: Instant) -> Vec<HeartbeatEvent> {
        let mut out = Vec::new();
        h.poll(now, &mut out);
        out
    }

    #[test]
    fn dialler_timeline() {
        let t0 = Instant::now();
        let mut h = Heartbeats::new();
        assert_eq!(h.next_deadline(), None);
        let mut out = Vec::new();
        h.confirm(t0, true, &mut out);
        assert_eq!(out, vec![SendHeartbeat]);
        h.confirm(t0, true, &mut out);
        assert_eq!(out.len(), 1, "confirm is idempotent");
        assert_eq!(h.next_deadline(), Some(t0 + FAST_HEARTBEAT));
        assert_eq!(run(&mut h, t0 + Duration::from_millis(499)), vec![]);
        assert_eq!(run(&mut h, t0 + FAST_HEARTBEAT), vec![SendHeartbeat]);
        // The peer's heartbeat: answered once, timeout pushed back.
        let t1 = t0 + Duration::from_millis(700);
        out.clear();
        h.on_heartbeat(t1, false, &mut out);
        assert_eq!(out, vec![AckPeer]);
        out.clear();
        h.on_heartbeat(t1, false, &mut out);
        assert!(out.is_empty());
        // Its ack: established, slow heartbeats, tests start.
        h.on_ack(t1, &mut out);
        assert_eq!(out, vec![Established, FragTest, StartPmtuDiscovery]);
        assert!(h.established());
        assert_eq!(h.interval(), Some(SLOW_HEARTBEAT));
        assert_eq!(run(&mut h, t1 + SLOW_HEARTBEAT), vec![SendHeartbeat]);
        // A second ack re-runs the tests but is not a new establishment.
        out.clear();
        h.on_ack(t1 + SLOW_HEARTBEAT, &mut out);
        assert_eq!(out, vec![FragTest, StartPmtuDiscovery]);
        // The frag test repeats every five minutes.
        let due = t1 + SLOW_HEARTBEAT + FRAG_TEST_INTERVAL;
        let mut h2 = h.clone();
        h2.on_heartbeat(due - Duration::from_secs(1), false, &mut Vec::new());
        assert!(run(&mut h2, due).contains(&FragTest));
        // Silence for 60 s after the last heartbeat kills it.
        assert!(
            !run(&mut h, t1 + HEARTBEAT_TIMEOUT - Duration::from_millis(1)).contains(&TimedOut)
        );
        assert_eq!(run(&mut h, t1 + HEARTBEAT_TIMEOUT), vec![TimedOut]);
        assert_eq!(h.next_deadline(), None);
    }

    #[test]
    fn listener_learns_address_from_first_heartbeat() {
        let t0 = Instant::now();
        let mut h = Heartbeats::new();
        let mut out = Vec::new();
        h.confirm(t0, false, &mut out);
        assert!(out.is_empty());
        assert_eq!(h.next_deadline(), Some(t0 + HEARTBEAT_TIMEOUT));
        h.on_heartbeat(t0 + Duration::from_secs(1), true, &mut out);
        assert_eq!(out, vec![SendHeartbeat, AckPeer]);
        // Nothing heard at all: dead after 60 s from confirmation.
        let mut quiet = Heartbeats::new();
        quiet.confirm(t0, false, &mut Vec::new());
        assert_eq!(run(&mut quiet, t0 + HEARTBEAT_TIMEOUT), vec![TimedOut]);
    }

    #[test]
    fn heartbeat_before_confirmation_only_acks() {
        let t0 = Instant::now();
        let mut h = Heartbeats::new();
        let mut out = Vec::new();
        h.on_heartbeat(t0, true, &mut out);
        assert_eq!(out, vec![AckPeer]);
        assert_eq!(h.next_deadline(), None);
    }
}
