//! Small value types shared by the families: network-order integers and MAC
//! addresses.
//!
//! Netlink framing fields (lengths, port numbers, PIDs, ifindexes) are in the
//! host's byte order and are plain `u16`/`u32`/`u64` in this crate. Fields that
//! are copied from packet headers (ethertypes, L4 ports, tunnel ids, VLAN TCIs,
//! IPv6 flow labels) travel in network byte order; they get the distinct types
//! [`Be16`], [`Be32`] and [`Be64`] so the two can never be mixed up silently.

use std::fmt;

macro_rules! be_int {
    ($name:ident, $int:ty, $n:expr, $doc:expr) => {
        #[doc = $doc]
        ///
        /// The value is held as a number; it is written big-endian on the wire.
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
        pub struct $name(pub $int);

        impl $name {
            /// Wraps a number that will be written in network byte order.
            pub const fn new(v: $int) -> Self {
                Self(v)
            }
            /// The number this field holds.
            pub const fn get(self) -> $int {
                self.0
            }
            /// The wire representation (big-endian bytes).
            pub const fn to_bytes(self) -> [u8; $n] {
                self.0.to_be_bytes()
            }
            /// Decodes from big-endian bytes.
            pub const fn from_bytes(b: [u8; $n]) -> Self {
                Self(<$int>::from_be_bytes(b))
            }
        }

        impl From<$int> for $name {
            fn from(v: $int) -> Self {
                Self(v)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:#x})", stringify!($name), self.0)
            }
        }
    };
}

be_int!(
    Be16,
    u16,
    2,
    "A 16-bit field in network byte order (ethertype, port, VLAN TCI)."
);
be_int!(
    Be32,
    u32,
    4,
    "A 32-bit field in network byte order (IPv6 flow label, MPLS LSE)."
);
be_int!(
    Be64,
    u64,
    8,
    "A 64-bit field in network byte order (tunnel id)."
);

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The all-ones address, also the exact-match mask.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// Copies `N` bytes at `off` out of `buf`, or `None` when they are not all there.
pub(crate) fn array_at<const N: usize>(buf: &[u8], off: usize) -> Option<[u8; N]> {
    let end = off.checked_add(N)?;
    buf.get(off..end)?.try_into().ok()
}
