//! The overlay switch of one connection (Weave's `overlaySwitchForwarder`),
//! as a sans-IO state machine.
//!
//! Facts carried over from Weave Net 2.8.1:
//!
//! - Each router lists its overlays, most preferred first, in the `Overlays`
//!   feature of the connection handshake, separated by spaces
//!   (`"fastdp sleeve"`, or `"sleeve"` without a kernel datapath).
//! - The overlays both ends have are all started, in the order of the
//!   local list (Weave's code means to use the dialler's order, but mesh
//!   always passes the remote address, so every Weave router uses its own;
//!   all Weave routers list `fastdp` before `sleeve`, so both ends agree).
//!   At most 256 are used, since control messages carry the index in one
//!   byte. No overlay in common is an error that ends the connection.
//! - A peer that sends no `Overlays` feature predates the switch: the
//!   connection uses the sleeve alone, with its control messages sent as
//!   bare mesh tags 1–3 (see [`SwitchSetup::Compat`]).
//! - Control messages of overlay `i` travel as mesh tag 7
//!   (`ProtocolOverlayControlMsg`) with body `[i][tag][message]`.
//! - The best overlay is the most preferred one that is running, not on
//!   hold and established; failing that, the most preferred running one
//!   not on hold. When none is left the switch reports "no working
//!   forwarders" (and keeps its previous choice).
//! - An overlay reporting itself unhealthy (fastdp after 60 s without a
//!   heartbeat) is put on hold and skipped; healthy again, it is taken
//!   back. An overlay reporting an error is stopped for good.
//! - Sending tries the best overlay first and then each later running one
//!   (an overlay may decline a frame, e.g. fastdp before it knows the
//!   peer's address).

use std::collections::VecDeque;

/// Name of the handshake feature listing a router's overlays.
pub const OVERLAYS_FEATURE: &str = "Overlays";
/// Mesh message tag of wrapped overlay control messages.
pub const PROTOCOL_OVERLAY_CONTROL_MSG: u8 = 7;
/// Most overlays a switch runs (indices are one byte).
pub const MAX_OVERLAYS: usize = 256;

/// Errors of the switch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwitchError {
    /// The peer lists none of our overlays.
    #[error("no overlays in common with peer")]
    NoCommonOverlays,
    /// A wrapped control message lacks its index or tag.
    #[error("overlay control message of {0} bytes is too short")]
    ShortControl(usize),
    /// A wrapped control message names an overlay we do not run.
    #[error("overlay control message for unknown overlay {0}")]
    UnknownOverlay(u8),
}

/// The value of our `Overlays` feature.
pub fn overlays_feature(names: &[&str]) -> String {
    names.join(" ")
}

/// How a connection's overlays are set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchSetup {
    /// The peer sent no `Overlays` feature: use the sleeve alone, with
    /// bare control tags.
    Compat,
    /// Run these overlays (by name, in preference order) under a switch.
    Switch(Vec<String>),
}

/// Decides the overlays of a connection from our list and the peer's
/// `Overlays` feature (if it sent one).
pub fn negotiate(local: &[&str], remote_feature: Option<&str>) -> Result<SwitchSetup, SwitchError> {
    let Some(remote) = remote_feature else {
        return Ok(SwitchSetup::Compat);
    };
    let theirs: Vec<&str> = remote.split(' ').collect();
    let common: Vec<String> = local
        .iter()
        .filter(|name| theirs.contains(name))
        .map(|name| name.to_string())
        .take(MAX_OVERLAYS)
        .collect();
    if common.is_empty() {
        return Err(SwitchError::NoCommonOverlays);
    }
    Ok(SwitchSetup::Switch(common))
}

/// Wraps a control message of overlay `index` for mesh tag 7.
pub fn wrap_control(index: u8, tag: u8, msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.push(index);
    out.push(tag);
    out.extend_from_slice(msg);
    out
}

/// A control message addressed to one overlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverlayControl<'a> {
    /// The overlay's index in the switch.
    pub index: u8,
    /// The overlay's own tag.
    pub tag: u8,
    /// The message.
    pub msg: &'a [u8],
}

/// Unwraps the body of a mesh tag-7 message.
pub fn unwrap_control(body: &[u8]) -> Result<OverlayControl<'_>, SwitchError> {
    match body {
        [index, tag, msg @ ..] => Ok(OverlayControl {
            index: *index,
            tag: *tag,
            msg,
        }),
        _ => Err(SwitchError::ShortControl(body.len())),
    }
}

/// Where one overlay of the switch stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubState {
    /// Started and not failed.
    Running,
    /// Could not be started for this connection.
    NotStarted(String),
    /// Reported an error and was stopped.
    Failed(String),
}

/// One overlay under the switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubOverlay {
    /// Its name (`fastdp`, `sleeve`, …).
    pub name: String,
    /// Running, never started, or failed.
    pub state: SubState,
    /// Whether it said it is established.
    pub established: bool,
    /// Whether it is on hold after reporting itself unhealthy.
    pub on_hold: bool,
}

impl SubOverlay {
    fn usable(&self) -> bool {
        self.state == SubState::Running && !self.on_hold
    }
}

/// Something the shell must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchEvent {
    /// The first overlay became established: so is the connection.
    Established,
    /// Traffic now goes over this overlay.
    Using {
        /// Its index.
        index: usize,
        /// Its name.
        name: String,
    },
    /// The shell must stop this overlay's connection.
    Stop(usize),
    /// No overlay can carry traffic: the connection must end.
    NoWorkingForwarders,
}

/// Why an overlay is (not) in use, for `/status/connections`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The most preferred overlay is established and in use.
    Preferred,
    /// The most preferred overlay is in use but not yet established.
    Starting,
    /// A more preferred overlay is passed over.
    Fallback {
        /// The most preferred overlay.
        preferred: String,
        /// Why it is passed over.
        cause: FallbackCause,
    },
    /// Nothing can carry traffic.
    NoneWorking,
}

/// Why a preferred overlay is not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FallbackCause {
    /// It has not become established yet while this one has.
    NotEstablished,
    /// It lost its heartbeats and is on hold.
    Unhealthy,
    /// It failed with this error.
    Failed(String),
    /// It could not be started.
    NotStarted(String),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Preferred => f.write_str("preferred overlay"),
            Reason::Starting => f.write_str("preferred overlay, not yet established"),
            Reason::NoneWorking => f.write_str("no working overlay"),
            Reason::Fallback { preferred, cause } => match cause {
                FallbackCause::NotEstablished => write!(f, "{preferred} not yet established"),
                FallbackCause::Unhealthy => write!(f, "{preferred} on hold: heartbeats lost"),
                FallbackCause::Failed(e) => write!(f, "{preferred} failed: {e}"),
                FallbackCause::NotStarted(e) => write!(f, "{preferred} unavailable: {e}"),
            },
        }
    }
}

/// The overlay in use and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchStatus {
    /// The overlay carrying traffic.
    pub overlay: Option<String>,
    /// Why.
    pub reason: Reason,
}

/// The switch of one connection.
#[derive(Debug, Clone)]
pub struct OverlaySwitch {
    subs: Vec<SubOverlay>,
    best: Option<usize>,
    established: bool,
    stopped: bool,
    events: VecDeque<SwitchEvent>,
}

impl OverlaySwitch {
    /// A switch over `overlays` (preference order), each either started
    /// (`Ok`) or not (`Err` with why).
    pub fn new(overlays: Vec<(String, Result<(), String>)>) -> Self {
        let subs = overlays
            .into_iter()
            .take(MAX_OVERLAYS)
            .map(|(name, started)| SubOverlay {
                name,
                state: match started {
                    Ok(()) => SubState::Running,
                    Err(e) => SubState::NotStarted(e),
                },
                established: false,
                on_hold: false,
            })
            .collect();
        let mut switch = OverlaySwitch {
            subs,
            best: None,
            established: false,
            stopped: false,
            events: VecDeque::new(),
        };
        switch.choose_best();
        switch
    }

    /// The next event for the shell.
    pub fn poll_event(&mut self) -> Option<SwitchEvent> {
        self.events.pop_front()
    }

    /// The overlays and their states.
    pub fn overlays(&self) -> &[SubOverlay] {
        &self.subs
    }

    /// Index of the overlay currently preferred for traffic.
    pub fn best(&self) -> Option<usize> {
        self.best
    }

    /// Whether any overlay became established.
    pub fn is_established(&self) -> bool {
        self.established
    }

    /// Overlays to offer a frame to, in order: the best one, then every
    /// later running one (the first that accepts the frame carries it).
    pub fn send_order(&self) -> impl Iterator<Item = usize> + '_ {
        let start = self.best.unwrap_or(self.subs.len());
        (start..self.subs.len()).filter(|i| {
            self.subs
                .get(*i)
                .is_some_and(|s| s.state == SubState::Running)
        })
    }

    /// Running overlays (for confirming the connection to each of them).
    pub fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.subs.len()).filter(|i| {
            self.subs
                .get(*i)
                .is_some_and(|s| s.state == SubState::Running)
        })
    }

    /// Overlay `index` reports it is established.
    pub fn on_established(&mut self, index: usize) {
        if self.stopped {
            return;
        }
        let Some(sub) = self.subs.get_mut(index) else {
            return;
        };
        sub.established = true;
        if !self.established {
            self.established = true;
            self.events.push_back(SwitchEvent::Established);
        }
        self.choose_best();
    }

    /// Overlay `index` failed: it is stopped and never used again.
    pub fn on_error(&mut self, index: usize, error: impl Into<String>) {
        if self.stopped {
            return;
        }
        let Some(sub) = self.subs.get_mut(index) else {
            return;
        };
        if sub.state == SubState::Running {
            sub.state = SubState::Failed(error.into());
            self.events.push_back(SwitchEvent::Stop(index));
        }
        self.choose_best();
    }

    /// Overlay `index` reports its health.
    pub fn on_health(&mut self, index: usize, healthy: bool) {
        if self.stopped {
            return;
        }
        let Some(sub) = self.subs.get_mut(index) else {
            return;
        };
        if sub.on_hold == healthy {
            sub.on_hold = !healthy;
            self.choose_best();
        }
    }

    /// The connection is closing: every running overlay must stop.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        for (i, sub) in self.subs.iter_mut().enumerate() {
            if sub.state == SubState::Running {
                sub.state = SubState::Failed("connection closed".into());
                self.events.push_back(SwitchEvent::Stop(i));
            }
        }
    }

    fn choose_best(&mut self) {
        let usable = || self.subs.iter().enumerate().filter(|(_, s)| s.usable());
        let best = usable()
            .find(|(_, s)| s.established)
            .or_else(|| usable().next())
            .map(|(i, _)| i);
        let Some(best) = best else {
            self.events.push_back(SwitchEvent::NoWorkingForwarders);
            return;
        };
        if self.best != Some(best) {
            self.best = Some(best);
            let name = self
                .subs
                .get(best)
                .map(|s| s.name.clone())
                .unwrap_or_default();
            self.events
                .push_back(SwitchEvent::Using { index: best, name });
        }
    }

    /// The overlay in use and why, for `/status/connections`.
    pub fn status(&self) -> SwitchStatus {
        let current = self.best.and_then(|b| self.subs.get(b).map(|s| (b, s)));
        let Some((b, sub)) = current.filter(|(_, s)| s.usable()) else {
            return SwitchStatus {
                overlay: None,
                reason: Reason::NoneWorking,
            };
        };
        let reason = match self.subs.first() {
            Some(first) if b > 0 => Reason::Fallback {
                preferred: first.name.clone(),
                cause: match &first.state {
                    SubState::NotStarted(e) => FallbackCause::NotStarted(e.clone()),
                    SubState::Failed(e) => FallbackCause::Failed(e.clone()),
                    SubState::Running if first.on_hold => FallbackCause::Unhealthy,
                    SubState::Running => FallbackCause::NotEstablished,
                },
            },
            _ if sub.established => Reason::Preferred,
            _ => Reason::Starting,
        };
        SwitchStatus {
            overlay: Some(sub.name.clone()),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switch(names: &[&str]) -> OverlaySwitch {
        OverlaySwitch::new(names.iter().map(|n| (n.to_string(), Ok(()))).collect())
    }

    fn events(s: &mut OverlaySwitch) -> Vec<SwitchEvent> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    fn using(index: usize, name: &str) -> SwitchEvent {
        SwitchEvent::Using {
            index,
            name: name.into(),
        }
    }

    #[test]
    fn negotiation() {
        let ours = ["fastdp", "sleeve"];
        assert_eq!(overlays_feature(&ours), "fastdp sleeve");
        assert_eq!(negotiate(&ours, None), Ok(SwitchSetup::Compat));
        assert_eq!(
            negotiate(&ours, Some("sleeve")),
            Ok(SwitchSetup::Switch(vec!["sleeve".into()]))
        );
        assert_eq!(
            negotiate(&ours, Some("sleeve fastdp")),
            Ok(SwitchSetup::Switch(vec!["fastdp".into(), "sleeve".into()]))
        );
        assert_eq!(
            negotiate(&ours, Some("awsvpc")),
            Err(SwitchError::NoCommonOverlays)
        );
        assert_eq!(
            negotiate(&ours, Some("")),
            Err(SwitchError::NoCommonOverlays)
        );
    }

    #[test]
    fn control_wrapping() {
        assert_eq!(wrap_control(1, 3, &[0x05, 0x9e]), vec![1, 3, 0x05, 0x9e]);
        assert_eq!(
            unwrap_control(&[0, 1]),
            Ok(OverlayControl {
                index: 0,
                tag: 1,
                msg: &[]
            })
        );
        assert_eq!(unwrap_control(&[0]), Err(SwitchError::ShortControl(1)));
    }

    #[test]
    fn prefers_established_then_order() {
        let mut s = switch(&["fastdp", "sleeve"]);
        assert_eq!(events(&mut s), vec![using(0, "fastdp")]);
        assert_eq!(s.status().reason, Reason::Starting);
        // Sleeve comes up first: it carries traffic until fastdp does.
        s.on_established(1);
        assert_eq!(
            events(&mut s),
            vec![SwitchEvent::Established, using(1, "sleeve")]
        );
        assert_eq!(s.status().reason.to_string(), "fastdp not yet established");
        assert_eq!(s.send_order().collect::<Vec<_>>(), vec![1]);
        s.on_established(0);
        assert_eq!(events(&mut s), vec![using(0, "fastdp")]);
        assert_eq!(s.status().reason, Reason::Preferred);
        assert_eq!(s.send_order().collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn hold_and_release() {
        let mut s = switch(&["fastdp", "sleeve"]);
        s.on_established(0);
        s.on_established(1);
        events(&mut s);
        s.on_health(0, false);
        assert_eq!(events(&mut s), vec![using(1, "sleeve")]);
        let st = s.status();
        assert_eq!(st.overlay.as_deref(), Some("sleeve"));
        assert_eq!(st.reason.to_string(), "fastdp on hold: heartbeats lost");
        s.on_health(0, false);
        assert!(events(&mut s).is_empty());
        s.on_health(0, true);
        assert_eq!(events(&mut s), vec![using(0, "fastdp")]);
        assert_eq!(s.status().reason, Reason::Preferred);
    }

    #[test]
    fn errors_and_nothing_left() {
        let mut s = OverlaySwitch::new(vec![
            ("fastdp".into(), Err("no datapath".into())),
            ("sleeve".into(), Ok(())),
        ]);
        assert_eq!(events(&mut s), vec![using(1, "sleeve")]);
        s.on_established(1);
        events(&mut s);
        assert_eq!(
            s.status().reason.to_string(),
            "fastdp unavailable: no datapath"
        );
        assert_eq!(s.running().collect::<Vec<_>>(), vec![1]);
        s.on_error(1, "timed out waiting for UDP heartbeat");
        assert_eq!(
            events(&mut s),
            vec![SwitchEvent::Stop(1), SwitchEvent::NoWorkingForwarders]
        );
        assert_eq!(s.best(), Some(1), "previous choice kept");
        assert_eq!(s.send_order().count(), 0);
        assert_eq!(s.status().reason, Reason::NoneWorking);
        // Events for unknown indices are ignored.
        s.on_health(9, true);
        s.on_established(9);
        s.on_error(9, "x");
        assert!(events(&mut s).is_empty());
    }

    #[test]
    fn failure_of_preferred_and_stop() {
        let mut s = switch(&["fastdp", "sleeve"]);
        s.on_established(0);
        s.on_established(1);
        events(&mut s);
        s.on_error(0, "boom");
        assert_eq!(
            events(&mut s),
            vec![SwitchEvent::Stop(0), using(1, "sleeve")]
        );
        assert_eq!(s.status().reason.to_string(), "fastdp failed: boom");
        s.stop();
        assert_eq!(events(&mut s), vec![SwitchEvent::Stop(1)]);
        s.on_health(1, false);
        assert!(events(&mut s).is_empty());
    }

    #[test]
    fn all_on_hold_reports_none_working() {
        let mut s = switch(&["fastdp"]);
        events(&mut s);
        s.on_health(0, false);
        assert_eq!(events(&mut s), vec![SwitchEvent::NoWorkingForwarders]);
        // Weave keeps trying the held overlay when sending.
        assert_eq!(s.send_order().collect::<Vec<_>>(), vec![0]);
    }

    /// Fastdp between two routers, with the underlay's UDP 6784 blocked
    /// for a while: simulated time, both ends' fastdp heartbeats, each
    /// end's switch (the sleeve stays healthy throughout).
    #[test]
    fn fastdp_falls_back_to_sleeve_and_returns() {
        use super::super::fastdp_health::{FastdpEvent, FastdpHealth};
        use std::time::{Duration, Instant};

        let t0 = Instant::now();
        let mut health = [FastdpHealth::new(), FastdpHealth::new()];
        let mut switches = [switch(&["fastdp", "sleeve"]), switch(&["fastdp", "sleeve"])];
        for s in &mut switches {
            s.on_established(1);
            events(s);
        }
        health[0].confirm(t0, true);
        health[1].confirm(t0, false);
        let block_from = t0 + Duration::from_secs(100);
        let block_until = t0 + Duration::from_secs(300);
        let mut history: Vec<(Instant, usize, String)> = Vec::new();
        let mut now = t0;
        let mut peer_known = [true, false];
        while now < t0 + Duration::from_secs(400) {
            let mut pending: Vec<(usize, FastdpEvent)> = Vec::new();
            for (i, h) in health.iter_mut().enumerate() {
                let mut out = Vec::new();
                h.poll(now, &mut out);
                pending.extend(out.into_iter().map(|e| (i, e)));
            }
            while let Some((i, e)) = pending.pop() {
                let j = 1 - i;
                let mut out = Vec::new();
                match e {
                    FastdpEvent::SendHeartbeat => {
                        let blocked = now >= block_from && now < block_until;
                        if !blocked {
                            let learned = !peer_known[j];
                            peer_known[j] = true;
                            health[j].on_heartbeat(now, learned, &mut out);
                            pending.extend(out.drain(..).map(|e| (j, e)));
                        }
                    }
                    // Acks travel over TCP, which is never blocked.
                    FastdpEvent::AckPeer => {
                        health[j].on_ack(now, &mut out);
                        pending.extend(out.drain(..).map(|e| (j, e)));
                    }
                    FastdpEvent::Established => switches[i].on_established(0),
                    FastdpEvent::Health(ok) => switches[i].on_health(0, ok),
                }
            }
            for (i, s) in switches.iter_mut().enumerate() {
                for ev in events(s) {
                    if let SwitchEvent::Using { name, .. } = ev {
                        history.push((now, i, name));
                    }
                }
            }
            now = health
                .iter()
                .filter_map(|h| h.next_deadline())
                .min()
                .unwrap_or(now + Duration::from_secs(1))
                .max(now + Duration::from_millis(1));
        }
        for side in 0..2 {
            let mine: Vec<_> = history.iter().filter(|(_, i, _)| *i == side).collect();
            let names: Vec<&str> = mine.iter().map(|(_, _, n)| n.as_str()).collect();
            assert_eq!(names, vec!["fastdp", "sleeve", "fastdp"], "side {side}");
            let (fell, back) = (mine[1].0, mine[2].0);
            assert!(fell >= block_from && fell <= block_from + Duration::from_secs(60));
            assert!(back >= block_until && back <= block_until + Duration::from_secs(10));
        }
        assert_eq!(switches[0].status().reason, Reason::Preferred);
    }
}
