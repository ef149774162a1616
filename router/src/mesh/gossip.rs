//! Gossip channels: the interface a channel's owner (IPAM, DNS, ...)
//! implements, and the stand-in used for channels nobody here owns.

use std::any::Any;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::identity::PeerName;

/// Gossip data already encoded as the channel's messages: each element
/// becomes one gossip message.
pub type GossipData = Vec<Vec<u8>>;

/// A channel owner rejected a message (the connection it came on is then
/// closed, as Weave does).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gossip: {0}")]
pub struct GossipError(pub String);

/// The receiving side of a gossip channel, implemented by its owner as a
/// sans-IO state machine.
pub trait Gossiper {
    /// A unicast message for us from `src`.
    fn on_gossip_unicast(
        &mut self,
        src: PeerName,
        msg: &[u8],
        now: Instant,
    ) -> Result<(), GossipError>;

    /// A broadcast from `src`: merge it and return what to pass on (usually
    /// the update itself), or `None` to stop it here.
    fn on_gossip_broadcast(
        &mut self,
        src: PeerName,
        update: &[u8],
        now: Instant,
    ) -> Result<Option<GossipData>, GossipError>;

    /// Everything we know, sent to random neighbours every gossip interval
    /// and down every new connection; `None` when there is nothing.
    fn gossip(&mut self, now: Instant) -> Option<GossipData>;

    /// Gossip from a neighbour: merge it and return what was news to us
    /// (passed on to random neighbours), or `None`.
    fn on_gossip(&mut self, msg: &[u8], now: Instant) -> Result<Option<GossipData>, GossipError>;

    /// Access to the concrete type, so the shell can reach its state.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// Stands in for a channel no local component owns: ignores unicasts,
/// passes broadcasts on unchanged, and passes gossip on unless the same
/// bytes were seen within the last gossip interval.
#[derive(Debug)]
pub struct SurrogateGossiper {
    interval: Duration,
    seen: VecDeque<(Instant, u64, Vec<u8>)>,
}

impl SurrogateGossiper {
    /// A surrogate remembering messages for `interval`.
    pub fn new(interval: Duration) -> Self {
        SurrogateGossiper {
            interval,
            seen: VecDeque::new(),
        }
    }
}

/// 64-bit FNV-1a, as used to spot repeated gossip.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Gossiper for SurrogateGossiper {
    fn on_gossip_unicast(
        &mut self,
        _src: PeerName,
        _msg: &[u8],
        _now: Instant,
    ) -> Result<(), GossipError> {
        Ok(())
    }

    fn on_gossip_broadcast(
        &mut self,
        _src: PeerName,
        update: &[u8],
        _now: Instant,
    ) -> Result<Option<GossipData>, GossipError> {
        Ok(Some(vec![update.to_vec()]))
    }

    fn gossip(&mut self, _now: Instant) -> Option<GossipData> {
        None
    }

    fn on_gossip(&mut self, msg: &[u8], now: Instant) -> Result<Option<GossipData>, GossipError> {
        let h = fnv1a(msg);
        if self.seen.iter().any(|(_, sh, m)| *sh == h && m == msg) {
            return Ok(None);
        }
        while let Some((t, _, _)) = self.seen.front() {
            if *t + self.interval <= now {
                self.seen.pop_front();
            } else {
                break;
            }
        }
        self.seen.push_back((now, h, msg.to_vec()));
        Ok(Some(vec![msg.to_vec()]))
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surrogate_drops_repeats_within_the_interval() {
        let t0 = Instant::now();
        let mut s = SurrogateGossiper::new(Duration::from_secs(30));
        let src = PeerName::from_u64(1);
        assert!(s.on_gossip(b"a", t0).unwrap().is_some());
        assert!(
            s.on_gossip(b"a", t0 + Duration::from_secs(1))
                .unwrap()
                .is_none()
        );
        assert!(
            s.on_gossip(b"b", t0 + Duration::from_secs(1))
                .unwrap()
                .is_some()
        );
        // After the interval the old copy is forgotten.
        assert!(
            s.on_gossip(b"c", t0 + Duration::from_secs(31))
                .unwrap()
                .is_some()
        );
        assert!(
            s.on_gossip(b"a", t0 + Duration::from_secs(32))
                .unwrap()
                .is_some()
        );
        assert_eq!(
            s.on_gossip_broadcast(src, b"x", t0).unwrap(),
            Some(vec![b"x".to_vec()])
        );
        assert!(s.gossip(t0).is_none());
        assert!(s.on_gossip_unicast(src, b"x", t0).is_ok());
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }
}
