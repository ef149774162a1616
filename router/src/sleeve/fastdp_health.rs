//! The health of a fastdp connection as the overlay switch sees it:
//! Weave Net 2.8.1's fastdp heartbeats (`router/fastdp.go`), timing and
//! payload only. Sending the heartbeat through the kernel datapath (a
//! VXLAN frame to the peer) is the fastdp code's job; this decides when,
//! and what a received one means for health.
//!
//! - After confirmation, the first heartbeat goes at once if the peer's
//!   address is known, then every 500 ms until the peer acknowledges one
//!   over the control channel (fastdp control tag 0), then every 10 s.
//! - A heartbeat frame is an Ethernet frame with zero MACs and type, the
//!   connection UID (u64 BE), then the frame's own length (u16 BE), zero
//!   padded to `14 + MTU` bytes and sent DF, so it doubles as an MTU check.
//! - The first valid heartbeat from the peer is acknowledged; each one
//!   restarts a 60 s timeout.
//! - When the timeout fires the forwarder reports itself unhealthy (the
//!   switch puts it on hold) and drops to the slow interval; the next
//!   valid heartbeat reports it healthy again.

use std::time::{Duration, Instant};

use super::frame::ETHERNET_OVERHEAD;
use super::heartbeat::{FAST_HEARTBEAT, HEARTBEAT_TIMEOUT, SLOW_HEARTBEAT};

/// Fastdp control tag: heartbeat acknowledged.
pub const FASTDP_HEARTBEAT_ACK: u8 = 0;
/// Fastdp control tag: IPsec SA set-up (not handled here).
pub const FASTDP_CRYPTO_INIT_SA_REMOTE: u8 = 1;

/// Builds a fastdp heartbeat frame for an interface MTU of `mtu`.
pub fn heartbeat_frame(conn_uid: u64, mtu: usize) -> Vec<u8> {
    let len = ETHERNET_OVERHEAD + mtu.max(10);
    let mut frame = vec![0u8; len];
    frame[ETHERNET_OVERHEAD..ETHERNET_OVERHEAD + 8].copy_from_slice(&conn_uid.to_be_bytes());
    frame[ETHERNET_OVERHEAD + 8..ETHERNET_OVERHEAD + 10]
        .copy_from_slice(&(len as u16).to_be_bytes());
    frame
}

/// Whether a special frame received over VXLAN is a valid heartbeat of
/// this connection (UID matches and the length field equals the frame's
/// length, i.e. it arrived whole).
pub fn is_heartbeat(frame: &[u8], conn_uid: u64) -> bool {
    let Some(body) = frame.get(ETHERNET_OVERHEAD..) else {
        return false;
    };
    let (Some(uid), Some(len)) = (body.first_chunk::<8>(), body.get(8..10)) else {
        return false;
    };
    u64::from_be_bytes(*uid) == conn_uid
        && u16::from_be_bytes([len[0], len[1]]) == frame.len() as u16
}

/// What the fastdp connection must do, or report to the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastdpEvent {
    /// Send a heartbeat frame now.
    SendHeartbeat,
    /// Acknowledge the peer's heartbeat (control tag 0).
    AckPeer,
    /// The peer acknowledged ours: established (reported once).
    Established,
    /// Health changed: tell the switch.
    Health(bool),
}

/// Fastdp heartbeat timing and health of one connection.
#[derive(Debug, Clone)]
pub struct FastdpHealth {
    confirmed: bool,
    interval: Duration,
    next_send: Option<Instant>,
    timeout_at: Option<Instant>,
    acked_peer: bool,
    established: bool,
    healthy: bool,
}

impl Default for FastdpHealth {
    fn default() -> Self {
        Self::new()
    }
}

impl FastdpHealth {
    /// State before confirmation: healthy, fast interval.
    pub fn new() -> Self {
        FastdpHealth {
            confirmed: false,
            interval: FAST_HEARTBEAT,
            next_send: None,
            timeout_at: None,
            acked_peer: false,
            established: false,
            healthy: true,
        }
    }

    /// Whether the last report was healthy.
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Whether the peer acknowledged a heartbeat.
    pub fn established(&self) -> bool {
        self.established
    }

    /// When [`FastdpHealth::poll`] next has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.next_send, self.timeout_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// The mesh confirmed the connection.
    pub fn confirm(&mut self, now: Instant, have_addr: bool) {
        if self.confirmed {
            return;
        }
        self.confirmed = true;
        self.next_send = have_addr.then_some(now);
        self.timeout_at = Some(now + HEARTBEAT_TIMEOUT);
    }

    /// A valid heartbeat arrived; `addr_learned` when it taught us the
    /// peer's address.
    pub fn on_heartbeat(&mut self, now: Instant, addr_learned: bool, out: &mut Vec<FastdpEvent>) {
        if addr_learned && self.confirmed {
            self.next_send = Some(now);
        }
        if !self.acked_peer {
            self.acked_peer = true;
            out.push(FastdpEvent::AckPeer);
        }
        // The receive timer exists from confirmation on, fired or not.
        if self.confirmed {
            self.timeout_at = Some(now + HEARTBEAT_TIMEOUT);
            if !self.healthy {
                self.healthy = true;
                out.push(FastdpEvent::Health(true));
            }
        }
    }

    /// The peer acknowledged our heartbeat.
    pub fn on_ack(&mut self, now: Instant, out: &mut Vec<FastdpEvent>) {
        if !self.established {
            self.established = true;
            out.push(FastdpEvent::Established);
        }
        if self.interval != SLOW_HEARTBEAT {
            self.interval = SLOW_HEARTBEAT;
            if self.next_send.is_some() {
                self.next_send = Some(now + SLOW_HEARTBEAT);
            }
        }
    }

    /// Runs whatever is due at `now`.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<FastdpEvent>) {
        if self.next_send.is_some_and(|t| t <= now) {
            out.push(FastdpEvent::SendHeartbeat);
            self.next_send = Some(now + self.interval);
        }
        if self.timeout_at.is_some_and(|t| t <= now) {
            // The timer is not re-armed until a heartbeat arrives.
            self.timeout_at = None;
            out.push(FastdpEvent::Health(false));
            self.healthy = false;
            if self.interval != SLOW_HEARTBEAT {
                self.interval = SLOW_HEARTBEAT;
                if self.next_send.is_some() {
                    self.next_send = Some(now + SLOW_HEARTBEAT);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FastdpEvent::*;
    use super::*;

    #[test]
    fn heartbeat_payload() {
        let f = heartbeat_frame(0x0102_0304_0506_0708, 1376);
        assert_eq!(f.len(), 1390);
        assert_eq!(&f[..14], &[0; 14]);
        assert_eq!(&f[14..24], &[1, 2, 3, 4, 5, 6, 7, 8, 0x05, 0x6e]);
        assert!(f[24..].iter().all(|b| *b == 0));
        assert!(is_heartbeat(&f, 0x0102_0304_0506_0708));
        assert!(!is_heartbeat(&f, 1));
        assert!(!is_heartbeat(&f[..1000], 0x0102_0304_0506_0708));
        assert!(!is_heartbeat(&f[..20], 0x0102_0304_0506_0708));
    }

    #[test]
    fn timeline_with_loss_and_recovery() {
        let t0 = Instant::now();
        let mut h = FastdpHealth::new();
        let mut out = Vec::new();
        h.confirm(t0, true);
        h.poll(t0, &mut out);
        assert_eq!(out, vec![SendHeartbeat]);
        out.clear();
        h.poll(t0 + FAST_HEARTBEAT, &mut out);
        assert_eq!(out, vec![SendHeartbeat]);
        out.clear();
        h.on_heartbeat(t0 + FAST_HEARTBEAT, false, &mut out);
        h.on_ack(t0 + FAST_HEARTBEAT, &mut out);
        assert_eq!(out, vec![AckPeer, Established]);
        assert_eq!(
            h.next_deadline(),
            Some(t0 + FAST_HEARTBEAT + SLOW_HEARTBEAT)
        );
        // Heartbeats stop arriving: unhealthy 60 s after the last one.
        let last = t0 + FAST_HEARTBEAT;
        out.clear();
        let mut t = last;
        while t < last + HEARTBEAT_TIMEOUT {
            t = h.next_deadline().unwrap();
            h.poll(t, &mut out);
        }
        assert_eq!(t, last + HEARTBEAT_TIMEOUT);
        assert_eq!(out.iter().filter(|e| **e == Health(false)).count(), 1);
        assert!(!h.healthy());
        // Heartbeats keep going at the slow rate; no more health reports.
        out.clear();
        h.poll(t + Duration::from_secs(120), &mut out);
        assert_eq!(out, vec![SendHeartbeat]);
        // One heartbeat back: healthy.
        out.clear();
        h.on_heartbeat(t + Duration::from_secs(121), false, &mut out);
        assert_eq!(out, vec![Health(true)]);
        assert!(h.healthy());
    }

    #[test]
    fn unacked_connection_goes_slow_after_timeout() {
        let t0 = Instant::now();
        let mut h = FastdpHealth::new();
        h.confirm(t0, false);
        let mut out = Vec::new();
        h.poll(t0 + HEARTBEAT_TIMEOUT, &mut out);
        assert_eq!(out, vec![Health(false)]);
        out.clear();
        h.on_heartbeat(t0 + HEARTBEAT_TIMEOUT, true, &mut out);
        assert_eq!(out, vec![AckPeer, Health(true)]);
        out.clear();
        h.poll(t0 + HEARTBEAT_TIMEOUT, &mut out);
        assert_eq!(out, vec![SendHeartbeat]);
        assert_eq!(
            h.next_deadline(),
            Some(t0 + HEARTBEAT_TIMEOUT + SLOW_HEARTBEAT)
        );
    }

    /// Two ends exchanging heartbeats, the path cut `cut` after they were
    /// confirmed; each heartbeat is acknowledged at once. Returns how long
    /// after the cut each end reported itself unhealthy, stepping from
    /// deadline to deadline as the data plane's poll loop does.
    fn detection_after_cut(cut: Duration) -> [Duration; 2] {
        let t0 = Instant::now();
        let cut_at = t0 + cut;
        let mut ends = [FastdpHealth::new(), FastdpHealth::new()];
        for h in &mut ends {
            h.confirm(t0, true);
        }
        let mut unhealthy: [Option<Instant>; 2] = [None, None];
        while unhealthy.iter().any(Option::is_none) {
            let now = ends
                .iter()
                .filter_map(FastdpHealth::next_deadline)
                .min()
                .unwrap();
            assert!(now < cut_at + Duration::from_secs(600), "never detected");
            for i in 0..2 {
                let mut out = Vec::new();
                ends[i].poll(now, &mut out);
                for e in out {
                    match e {
                        SendHeartbeat if now < cut_at => {
                            let mut back = Vec::new();
                            ends[1 - i].on_heartbeat(now, false, &mut back);
                            if back.contains(&AckPeer) {
                                ends[i].on_ack(now, &mut Vec::new());
                            }
                        }
                        Health(false) if unhealthy[i].is_none() => unhealthy[i] = Some(now),
                        _ => {}
                    }
                }
            }
        }
        unhealthy.map(|t| t.unwrap() - cut_at)
    }

    #[test]
    fn loss_is_detected_at_most_the_timeout_after_the_cut_whatever_its_phase() {
        // Cuts every 100 ms across two slow heartbeat cycles, long after
        // acknowledgement: the timeout runs from the last heartbeat that
        // got through, so each end notices between one slow interval less
        // than the timeout and the timeout itself after the cut.
        for step in 0..200u32 {
            let cut = Duration::from_secs(30) + Duration::from_millis(100) * step;
            for d in detection_after_cut(cut) {
                assert!(
                    d <= HEARTBEAT_TIMEOUT,
                    "cut at {cut:?}: detected {d:?} later"
                );
                assert!(
                    d + SLOW_HEARTBEAT >= HEARTBEAT_TIMEOUT,
                    "cut at {cut:?}: detected only {d:?} later"
                );
            }
        }
    }
}
