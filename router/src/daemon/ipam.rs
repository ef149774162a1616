//! The allocator on the mesh: the `IPallocation` gossip channel, the
//! translation between the mesh's and the allocator's types and clocks,
//! and `--ipalloc-init` parsing.
//!
//! [`IpamChannel`] owns the [`Allocator`] and is registered with the mesh
//! as the owner of the channel; whatever the allocator answers (replies,
//! gossip, unicasts, store writes) waits in its outbox until the router
//! task takes it with [`IpamChannel::take_outputs`] and carries it out in
//! order.

use std::any::Any;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::ipam::wire::{decode_gossip, decode_unicast, encode_gossip};
use crate::ipam::{self, Allocator, InitMode, Input};
use crate::mesh::gossip::{GossipData, GossipError, Gossiper};
use crate::mesh::identity::PeerName as MeshName;

/// The gossip channel Weave's allocator uses.
pub const CHANNEL: &str = "IPallocation";

/// The allocator's peer name for a mesh peer name (both are 48-bit).
pub fn ipam_name(name: MeshName) -> ipam::PeerName {
    ipam::PeerName(name.as_u64())
}

/// The mesh peer name for an allocator peer name.
pub fn mesh_name(name: ipam::PeerName) -> MeshName {
    MeshName::from_u64(name.0)
}

/// Parses `--ipalloc-init`: `consensus[=N]`, `seed=<name>,<name>…` or
/// `observer`; absent means consensus with the quorum guessed from the
/// number of initial peers, as in Weave.
pub fn parse_init_mode(text: Option<&str>) -> Result<InitMode, String> {
    let Some(text) = text else {
        return Ok(InitMode::Consensus { peer_count: None });
    };
    let (mode, arg) = match text.split_once('=') {
        Some((mode, arg)) => (mode, Some(arg)),
        None => (text, None),
    };
    match (mode, arg) {
        ("consensus", None) => Ok(InitMode::Consensus { peer_count: None }),
        ("consensus", Some(n)) => n
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .map(|n| InitMode::Consensus {
                peer_count: Some(n),
            })
            .ok_or_else(|| format!("--ipalloc-init consensus={n}: not a positive peer count")),
        ("seed", Some(names)) => names
            .split(',')
            .map(|name| {
                name.parse::<MeshName>()
                    .map(ipam_name)
                    .map_err(|error| format!("--ipalloc-init seed: {error}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(InitMode::Seed),
        ("observer", None) => Ok(InitMode::Observer),
        _ => Err(format!(
            "--ipalloc-init {text:?}: expected consensus[=N], seed=<names> or observer"
        )),
    }
}

/// Wall-clock time derived from monotonic instants: the allocator keeps
/// time as a duration since the Unix epoch (it puts it in its gossip), and
/// the mesh hands its channels an `Instant`.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    base_wall: Duration,
}

impl Clock {
    /// A clock anchored at the current time.
    pub fn new() -> Clock {
        Clock {
            base: Instant::now(),
            base_wall: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }

    /// The wall-clock time at `now`.
    pub fn wall(&self, now: Instant) -> Duration {
        self.base_wall + now.saturating_duration_since(self.base)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// The `IPallocation` channel's owner.
pub struct IpamChannel {
    allocator: Allocator,
    clock: Clock,
    outbox: Vec<ipam::Output>,
}

impl IpamChannel {
    /// Wraps `allocator`, with the outputs it produced when starting.
    pub fn new(allocator: Allocator, clock: Clock, startup: Vec<ipam::Output>) -> IpamChannel {
        IpamChannel {
            allocator,
            clock,
            outbox: startup,
        }
    }

    /// The allocator, for read-only queries (status, lookups).
    pub fn allocator(&self) -> &Allocator {
        &self.allocator
    }

    /// Feeds one input at `now`; its outputs join the outbox.
    pub fn handle(&mut self, now: Instant, input: Input) {
        let outputs = self.allocator.handle(self.clock.wall(now), input);
        self.outbox.extend(outputs);
    }

    /// Takes everything waiting to be carried out, in order.
    pub fn take_outputs(&mut self) -> Vec<ipam::Output> {
        std::mem::take(&mut self.outbox)
    }

    fn state_bytes(&self) -> GossipData {
        vec![encode_gossip(&self.allocator.gossip_state())]
    }
}

impl Gossiper for IpamChannel {
    fn on_gossip_unicast(
        &mut self,
        src: MeshName,
        msg: &[u8],
        now: Instant,
    ) -> Result<(), GossipError> {
        let msg = decode_unicast(msg).map_err(|e| GossipError(format!("IPAM unicast: {e}")))?;
        self.handle(
            now,
            Input::Unicast {
                sender: ipam_name(src),
                msg,
            },
        );
        Ok(())
    }

    fn on_gossip_broadcast(
        &mut self,
        src: MeshName,
        update: &[u8],
        now: Instant,
    ) -> Result<Option<GossipData>, GossipError> {
        let state =
            decode_gossip(update).map_err(|e| GossipError(format!("IPAM broadcast: {e}")))?;
        self.handle(
            now,
            Input::GossipBroadcast {
                sender: ipam_name(src),
                state,
            },
        );
        // Passed on as our own merged state, as Weave's allocator does.
        Ok(Some(self.state_bytes()))
    }

    fn gossip(&mut self, _now: Instant) -> Option<GossipData> {
        Some(self.state_bytes())
    }

    fn on_gossip(&mut self, msg: &[u8], now: Instant) -> Result<Option<GossipData>, GossipError> {
        let state = decode_gossip(msg).map_err(|e| GossipError(format!("IPAM gossip: {e}")))?;
        self.handle(now, Input::GossipPeriodic { state });
        Ok(None)
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_modes_parse_like_weave() {
        assert_eq!(
            parse_init_mode(None),
            Ok(InitMode::Consensus { peer_count: None })
        );
        assert_eq!(
            parse_init_mode(Some("consensus=3")),
            Ok(InitMode::Consensus {
                peer_count: Some(3)
            })
        );
        assert_eq!(parse_init_mode(Some("observer")), Ok(InitMode::Observer));
        match parse_init_mode(Some("seed=00:00:00:00:00:01,00:00:00:00:00:02")) {
            Ok(InitMode::Seed(names)) => assert_eq!(names.len(), 2),
            other => panic!("{other:?}"),
        }
        for bad in [
            "consensus=0",
            "consensus=x",
            "seed=nope",
            "leader",
            "observer=1",
        ] {
            assert!(parse_init_mode(Some(bad)).is_err(), "{bad}");
        }
    }
}
