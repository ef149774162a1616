//! IP address management: the sans-IO core of Weave's allocator.
//!
//! The allocation range is divided among peers by a ring CRDT ([`ring`]);
//! the first division is agreed by single-value Paxos over gossip
//! ([`paxos`]); each peer hands out addresses from what it owns
//! ([`space`]); [`allocator`] ties them together as a state machine that
//! takes inputs with the current time and returns outputs (replies, gossip,
//! unicasts, persistence writes). Nothing here does I/O or reads a clock.
//! [`messages`] holds the plain-Rust form of the wire payloads and [`wire`]
//! turns them into Weave's gob bytes (through `weave-gob`) and back.

pub mod address;
pub mod allocator;
pub mod messages;
pub mod paxos;
pub mod peer;
pub mod ring;
pub mod space;
pub mod wire;

pub use address::{Address, AddressError, Cidr, Range, cidr_view};
pub use allocator::{
    Allocator, CONTAINER_DIED_TIMEOUT, Config, InitMode, IpamMetrics, IpamStatus, NO_CONTAINER_ID,
    PreClaim, TICK_INTERVAL,
};
pub use messages::{
    GossipState, Input, OpError, OpId, Output, OwnedData, PendingReason, PersistWrite, Persisted,
    Reply, UnicastMsg, UpdateError,
};
pub use peer::{PeerName, SeededRng};
pub use ring::{Entry, MergeError, MergeReport, Ring, RingError};
pub use space::Space;
