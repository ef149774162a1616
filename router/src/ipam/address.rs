//! IPv4 addresses, half-open address ranges and CIDR prefixes.
//!
//! Addresses are plain `u32`s in host order, as Weave's allocator keeps
//! them. A [`Range`] is `[start, end)`; the allocator never works with a
//! range that ends past `255.255.255.255`, so `end` always fits in a `u32`.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 address as a host-order 32-bit number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Address(pub u32);

impl Address {
    /// The address `n` places after this one, wrapping at 2^32.
    pub fn offset(self, n: u32) -> Address {
        Address(self.0.wrapping_add(n))
    }

    /// The standard-library form of this address.
    pub fn to_ipv4(self) -> Ipv4Addr {
        Ipv4Addr::from(self.0)
    }
}

impl From<Ipv4Addr> for Address {
    fn from(ip: Ipv4Addr) -> Self {
        Address(u32::from(ip))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_ipv4())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_ipv4())
    }
}

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<Ipv4Addr>()
            .map(Address::from)
            .map_err(|_| AddressError::BadAddress(s.to_string()))
    }
}

/// Errors from parsing or building addresses, ranges and prefixes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The text is not a dotted-quad IPv4 address.
    #[error("not an IPv4 address: {0:?}")]
    BadAddress(String),
    /// The text is not `a.b.c.d/len` with `len` in 0..=32.
    #[error("not an IPv4 CIDR: {0:?}")]
    BadCidr(String),
    /// The CIDR has bits set after the prefix.
    #[error("invalid subnet - bits after network prefix are not all zero: {0}")]
    NotASubnet(Cidr),
    /// The subnet is smaller than the allocator accepts.
    #[error("invalid subnet - smaller than minimum size {min}: {cidr}")]
    TooSmall {
        /// The offending subnet.
        cidr: Cidr,
        /// The smallest accepted number of addresses.
        min: u32,
    },
    /// The range reaches 255.255.255.255, whose exclusive end does not fit in 32 bits.
    #[error("range {0} reaches the top of the IPv4 space, which the allocator cannot represent")]
    RangeAtTop(Cidr),
}

/// A half-open range of addresses `[start, end)`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Range {
    /// First address in the range.
    pub start: Address,
    /// First address after the range.
    pub end: Address,
}

impl Range {
    /// The range `[start, end)`.
    pub fn new(start: Address, end: Address) -> Range {
        Range { start, end }
    }

    /// The range of `size` addresses starting at `start`.
    pub fn sized(start: Address, size: u32) -> Range {
        Range {
            start,
            end: start.offset(size),
        }
    }

    /// Number of addresses in the range (0 when `end <= start`).
    pub fn size(&self) -> u32 {
        self.end.0.saturating_sub(self.start.0)
    }

    /// True when the range holds no address.
    pub fn is_empty(&self) -> bool {
        self.size() == 0
    }

    /// True when `addr` lies in the range.
    pub fn contains(&self, addr: Address) -> bool {
        addr >= self.start && addr < self.end
    }

    /// True when the two ranges share at least one address.
    pub fn overlaps(&self, other: &Range) -> bool {
        !(self.start >= other.end || self.end <= other.start)
    }

    /// The part of both ranges, if any.
    pub fn intersect(&self, other: &Range) -> Option<Range> {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        (start < end).then_some(Range { start, end })
    }

    /// The minimal list of CIDR-aligned prefixes that together cover exactly
    /// this range, in address order (the "CIDR view").
    pub fn cidrs(&self) -> Vec<Cidr> {
        let mut out = Vec::new();
        let mut start = u64::from(self.start.0);
        let end = u64::from(self.end.0);
        while start < end {
            // Largest block aligned at `start` ...
            let align = if start == 0 {
                1u64 << 32
            } else {
                1u64 << start.trailing_zeros()
            };
            // ... that still fits before `end`.
            let mut size = align;
            while size > end - start {
                size >>= 1;
            }
            let prefix_len = 32 - size.trailing_zeros() as u8;
            out.push(Cidr {
                addr: Address(start as u32),
                prefix_len,
            });
            start += size;
        }
        out
    }

    /// The biggest CIDR-aligned block inside this range (ties go to the
    /// higher-addressed block); empty when the range is empty.
    pub fn biggest_cidr_range(&self) -> Range {
        let mut best = Range::new(self.start, self.start);
        for c in self.cidrs() {
            let r = c.range();
            if r.size() >= best.size() {
                best = r;
            }
        }
        best
    }

    /// Text in Weave's style: CIDR notation when the range is exactly one
    /// aligned prefix, otherwise `first-last`.
    pub fn as_cidr_string(&self) -> String {
        match self.cidrs().as_slice() {
            [one] => one.to_string(),
            _ => self.to_string(),
        }
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, Address(self.end.0.wrapping_sub(1)))
    }
}

impl fmt::Debug for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

/// An address with a prefix length, e.g. `10.32.0.5/12`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    /// The address (not necessarily the network address).
    pub addr: Address,
    /// Prefix length, 0..=32.
    pub prefix_len: u8,
}

impl Cidr {
    /// Builds a CIDR; `prefix_len` above 32 is an error.
    pub fn new(addr: Address, prefix_len: u8) -> Result<Cidr, AddressError> {
        if prefix_len > 32 {
            return Err(AddressError::BadCidr(format!("{addr}/{prefix_len}")));
        }
        Ok(Cidr { addr, prefix_len })
    }

    /// Number of addresses the prefix spans, as u64 (a /0 spans 2^32).
    pub fn size64(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix_len.min(32)))
    }

    /// The netmask as a number.
    pub fn mask(&self) -> u32 {
        (!0u64 << (32 - u32::from(self.prefix_len.min(32)))) as u32
    }

    /// The network address.
    pub fn network(&self) -> Address {
        Address(self.addr.0 & self.mask())
    }

    /// True when no bit after the prefix is set.
    pub fn is_subnet(&self) -> bool {
        self.addr.0 & !self.mask() == 0
    }

    /// The addresses of the prefix as a range starting at `addr`. For a
    /// prefix that reaches 255.255.255.255 the end wraps to 0; use
    /// [`Cidr::checked_range`] where that matters.
    pub fn range(&self) -> Range {
        Range {
            start: self.addr,
            end: Address((u64::from(self.addr.0) + self.size64()) as u32),
        }
    }

    /// The range of the prefix, or an error when its end does not fit.
    pub fn checked_range(&self) -> Result<Range, AddressError> {
        let end = u64::from(self.addr.0) + self.size64();
        if end > u64::from(u32::MAX) {
            return Err(AddressError::RangeAtTop(*self));
        }
        Ok(Range {
            start: self.addr,
            end: Address(end as u32),
        })
    }

    /// The usable host addresses: the range without its first and last
    /// address (RFC 1122), as Weave allocates within a subnet.
    pub fn host_range(&self) -> Range {
        let r = self.range();
        if self.size64() < 2 {
            return Range::new(r.start, r.start);
        }
        Range {
            start: r.start.offset(1),
            end: Address(r.end.0.wrapping_sub(1)),
        }
    }

    /// Parses `a.b.c.d/len`.
    pub fn parse(s: &str) -> Result<Cidr, AddressError> {
        let bad = || AddressError::BadCidr(s.to_string());
        let (a, l) = s.split_once('/').ok_or_else(bad)?;
        let addr: Address = a.parse().map_err(|_| bad())?;
        let prefix_len: u8 = l.parse().map_err(|_| bad())?;
        Cidr::new(addr, prefix_len).map_err(|_| bad())
    }

    /// Parses a subnet for allocation: it must be a network address, span
    /// at least [`MIN_SUBNET_SIZE`] addresses and not reach 255.255.255.255.
    pub fn parse_subnet(s: &str) -> Result<Cidr, AddressError> {
        let c = Cidr::parse(s)?;
        if !c.is_subnet() {
            return Err(AddressError::NotASubnet(c));
        }
        if c.size64() < u64::from(MIN_SUBNET_SIZE) {
            return Err(AddressError::TooSmall {
                cidr: c,
                min: MIN_SUBNET_SIZE,
            });
        }
        c.checked_range()?;
        Ok(c)
    }
}

/// The smallest subnet the allocator accepts: the first and last address are
/// excluded, so fewer than four would leave too little.
pub const MIN_SUBNET_SIZE: u32 = 4;

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cidr::parse(s)
    }
}

/// The CIDR view of a list of ranges: every range's minimal prefix cover,
/// concatenated in the order given.
pub fn cidr_view(ranges: &[Range]) -> Vec<Cidr> {
    ranges.iter().flat_map(Range::cidrs).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Address {
        s.parse().unwrap_or_default()
    }

    #[test]
    fn cidr_cover_of_aligned_and_unaligned_ranges() {
        let r = Range::new(a("10.32.0.0"), a("10.48.0.0"));
        assert_eq!(
            r.cidrs(),
            vec![Cidr::parse("10.32.0.0/12").unwrap_or(Cidr {
                addr: Address(0),
                prefix_len: 0
            })]
        );
        let r = Range::new(a("10.0.0.1"), a("10.0.0.7"));
        let got: Vec<String> = r.cidrs().iter().map(|c| c.to_string()).collect();
        assert_eq!(
            got,
            ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
        );
        assert!(Range::new(a("1.1.1.1"), a("1.1.1.1")).cidrs().is_empty());
        // The whole space minus its last address.
        let r = Range::new(Address(0), Address(u32::MAX));
        assert_eq!(r.cidrs().len(), 32);
        assert_eq!(r.cidrs()[0].to_string(), "0.0.0.0/1");
    }

    #[test]
    fn cidr_cover_is_exact_and_minimal() {
        // Exhaustive over small ranges: the cover tiles the range exactly,
        // each block is aligned, and no two neighbours could be merged.
        for start in 0u32..70 {
            for end in start..140 {
                let cs = Range::new(Address(start), Address(end)).cidrs();
                let mut next = start;
                for c in &cs {
                    assert!(c.is_subnet());
                    assert_eq!(c.addr.0, next);
                    next += c.size64() as u32;
                }
                assert_eq!(next, end);
                for w in cs.windows(2) {
                    let (x, y) = (w[0], w[1]);
                    let mergeable = x.prefix_len == y.prefix_len
                        && x.prefix_len > 0
                        && Cidr {
                            addr: x.addr,
                            prefix_len: x.prefix_len - 1,
                        }
                        .is_subnet();
                    assert!(!mergeable, "{x} {y} could merge");
                }
            }
        }
    }

    #[test]
    fn biggest_cidr_block() {
        let r = Range::new(Address(3), Address(17));
        assert_eq!(r.biggest_cidr_range(), Range::new(Address(8), Address(16)));
        let r = Range::new(Address(5), Address(6));
        assert_eq!(r.biggest_cidr_range(), r);
    }

    #[test]
    fn parse_and_host_range() {
        let c = Cidr::parse_subnet("10.32.0.0/12").unwrap_or(Cidr {
            addr: Address(0),
            prefix_len: 0,
        });
        assert_eq!(
            c.host_range(),
            Range::new(a("10.32.0.1"), a("10.47.255.255"))
        );
        assert!(matches!(
            Cidr::parse_subnet("10.32.0.1/12"),
            Err(AddressError::NotASubnet(_))
        ));
        assert!(matches!(
            Cidr::parse_subnet("10.32.0.0/31"),
            Err(AddressError::TooSmall { .. })
        ));
        assert!(matches!(
            Cidr::parse_subnet("255.0.0.0/8"),
            Err(AddressError::RangeAtTop(_))
        ));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("10.0.0/8").is_err());
        assert_eq!(
            Range::new(a("10.0.0.0"), a("10.0.1.0")).as_cidr_string(),
            "10.0.0.0/24"
        );
        assert_eq!(
            Range::new(a("10.0.0.0"), a("10.0.0.3")).as_cidr_string(),
            "10.0.0.0-10.0.0.2"
        );
    }
}
