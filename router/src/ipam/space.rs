//! The addresses this peer owns, split into those in use and those free.

use std::fmt;

use super::address::{Address, Range};

/// A set of addresses kept as sorted, non-overlapping, non-adjacent ranges.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct RangeSet {
    ranges: Vec<Range>,
}

impl RangeSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The ranges, in address order.
    pub fn ranges(&self) -> &[Range] {
        &self.ranges
    }

    /// True when `addr` is in the set.
    pub fn contains(&self, addr: Address) -> bool {
        let i = self.ranges.partition_point(|r| r.end <= addr);
        self.ranges.get(i).is_some_and(|r| r.contains(addr))
    }

    /// Number of addresses in the set.
    pub fn count(&self) -> u64 {
        self.ranges.iter().map(|r| u64::from(r.size())).sum()
    }

    /// Number of addresses of the set inside `within`.
    pub fn count_in(&self, within: Range) -> u64 {
        self.pieces_in(within).map(|r| u64::from(r.size())).sum()
    }

    /// The parts of the set inside `within`, in address order.
    pub fn pieces_in(&self, within: Range) -> impl Iterator<Item = Range> + '_ {
        let i = self.ranges.partition_point(|r| r.end <= within.start);
        self.ranges[i..]
            .iter()
            .take_while(move |r| r.start < within.end)
            .filter_map(move |r| r.intersect(&within))
    }

    /// Adds every address of `r`.
    pub fn add(&mut self, r: Range) {
        if r.is_empty() {
            return;
        }
        // Ranges touching or overlapping r are merged into it.
        let lo = self.ranges.partition_point(|x| x.end < r.start);
        let hi = self.ranges.partition_point(|x| x.start <= r.end);
        let mut merged = r;
        if let Some(first) = self.ranges.get(lo).filter(|_| lo < hi) {
            merged.start = merged.start.min(first.start);
        }
        if hi > lo {
            if let Some(last) = self.ranges.get(hi - 1) {
                merged.end = merged.end.max(last.end);
            }
        }
        self.ranges.splice(lo..hi, [merged]);
    }

    /// Removes every address of `r`.
    pub fn remove(&mut self, r: Range) {
        if r.is_empty() {
            return;
        }
        let lo = self.ranges.partition_point(|x| x.end <= r.start);
        let hi = self.ranges.partition_point(|x| x.start < r.end);
        if lo >= hi {
            return;
        }
        let mut keep = Vec::with_capacity(2);
        if let Some(first) = self.ranges.get(lo) {
            if first.start < r.start {
                keep.push(Range::new(first.start, r.start));
            }
        }
        if let Some(last) = self.ranges.get(hi - 1) {
            if last.end > r.end {
                keep.push(Range::new(r.end, last.end));
            }
        }
        self.ranges.splice(lo..hi, keep);
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.ranges.clear();
    }
}

/// Why a single-address operation on a [`Space`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpaceError {
    /// The address is in use or not ours.
    #[error("address {0} is not free to claim")]
    NotFree(Address),
    /// The address is not one we handed out.
    #[error("address {0} is not ours")]
    NotOurs(Address),
}

/// The addresses a peer owns: `used` are allocated to containers, `free`
/// are available. The two sets never overlap.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct Space {
    used: RangeSet,
    free: RangeSet,
}

impl Space {
    /// A space owning nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets everything (when leaving the network).
    pub fn clear(&mut self) {
        self.used.clear();
        self.free.clear();
    }

    /// Adds `r` as free space.
    pub fn add_free(&mut self, r: Range) {
        self.free.add(r);
    }

    /// Takes the lowest free address in `r`.
    pub fn allocate(&mut self, r: Range) -> Option<Address> {
        let addr = self.free.pieces_in(r).next()?.start;
        let one = Range::sized(addr, 1);
        self.free.remove(one);
        self.used.add(one);
        Some(addr)
    }

    /// Takes a specific free address.
    pub fn claim(&mut self, addr: Address) -> Result<(), SpaceError> {
        if !self.free.contains(addr) {
            return Err(SpaceError::NotFree(addr));
        }
        let one = Range::sized(addr, 1);
        self.free.remove(one);
        self.used.add(one);
        Ok(())
    }

    /// Returns an allocated address to the free pool.
    pub fn free(&mut self, addr: Address) -> Result<(), SpaceError> {
        if !self.used.contains(addr) {
            return Err(SpaceError::NotOurs(addr));
        }
        let one = Range::sized(addr, 1);
        self.used.remove(one);
        self.free.add(one);
        Ok(())
    }

    /// True when `addr` is allocated here.
    pub fn is_used(&self, addr: Address) -> bool {
        self.used.contains(addr)
    }

    /// How many addresses are allocated.
    pub fn num_used(&self) -> u64 {
        self.used.count()
    }

    /// How many addresses are free.
    pub fn num_free(&self) -> u64 {
        self.free.count()
    }

    /// How many free addresses lie inside `r`.
    pub fn num_free_in(&self, r: Range) -> u32 {
        self.free.count_in(r).min(u64::from(u32::MAX)) as u32
    }

    /// Gives away a CIDR-aligned block of free space from `r`: the biggest
    /// block available, but no more than half of what is free in `r`
    /// (rounded up, so never nothing when anything is free).
    pub fn donate(&mut self, r: Range) -> Option<Range> {
        let mut best: Option<Range> = None;
        for piece in self.free.pieces_in(r) {
            let block = piece.biggest_cidr_range();
            if best.is_none_or(|b| block.size() >= b.size()) {
                best = Some(block);
            }
        }
        let mut best = best.filter(|b| !b.is_empty())?;
        let total = self.num_free_in(r);
        if best.size() > total / 2 {
            best.start = best.start.offset(best.size() / 2);
        }
        self.free.remove(best);
        Some(best)
    }

    /// Everything owned (used or free), coalesced, in address order.
    pub fn owned_ranges(&self) -> Vec<Range> {
        let mut all = self.free.clone();
        for r in self.used.ranges() {
            all.add(*r);
        }
        all.ranges().to_vec()
    }

    /// Makes the owned set exactly `ranges`: new space becomes free, free
    /// space no longer owned is dropped. Allocated addresses outside
    /// `ranges` are kept and returned (the caller treats them as an error).
    pub fn set_ranges(&mut self, ranges: &[Range]) -> Vec<Address> {
        let mut target = RangeSet::new();
        for r in ranges {
            target.add(*r);
        }
        let mut new_free = target.clone();
        for r in self.used.ranges() {
            new_free.remove(*r);
        }
        self.free = new_free;
        let mut stray = Vec::new();
        for r in self.used.ranges() {
            for a in r.start.0..r.end.0 {
                if !target.contains(Address(a)) {
                    stray.push(Address(a));
                }
            }
        }
        stray
    }
}

impl fmt::Display for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.used.ranges().is_empty() && self.free.ranges().is_empty() {
            return write!(f, "No address ranges owned");
        }
        write!(f, "used:")?;
        for r in self.used.ranges() {
            write!(f, " {}+{}", r.start, r.size())?;
        }
        write!(f, " free:")?;
        for r in self.free.ranges() {
            write!(f, " {}+{}", r.start, r.size())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: u32, b: u32) -> Range {
        Range::new(Address(a), Address(b))
    }

    #[test]
    fn range_set_add_remove_coalesce() {
        let mut s = RangeSet::new();
        s.add(r(10, 20));
        s.add(r(30, 40));
        s.add(r(20, 30));
        assert_eq!(s.ranges(), &[r(10, 40)]);
        s.remove(r(15, 16));
        assert_eq!(s.ranges(), &[r(10, 15), r(16, 40)]);
        s.remove(r(0, 12));
        s.remove(r(35, 100));
        assert_eq!(s.ranges(), &[r(12, 15), r(16, 35)]);
        assert!(s.contains(Address(12)) && !s.contains(Address(15)) && s.contains(Address(34)));
        assert_eq!(s.count(), 22);
        assert_eq!(s.count_in(r(14, 17)), 2);
        s.add(r(5, 50));
        assert_eq!(s.ranges(), &[r(5, 50)]);
    }

    #[test]
    fn range_set_matches_a_bitmap() {
        let mut rng = crate::ipam::peer::SeededRng::new(42);
        let mut s = RangeSet::new();
        let mut bits = [false; 64];
        for _ in 0..5000 {
            let a = rng.below(64) as u32;
            let b = a + rng.below(64 - u64::from(a) + 1) as u32;
            if rng.below(2) == 0 {
                s.add(r(a, b));
                bits[a as usize..b as usize]
                    .iter_mut()
                    .for_each(|x| *x = true);
            } else {
                s.remove(r(a, b));
                bits[a as usize..b as usize]
                    .iter_mut()
                    .for_each(|x| *x = false);
            }
            for (i, bit) in bits.iter().enumerate() {
                assert_eq!(s.contains(Address(i as u32)), *bit);
            }
            for w in s.ranges().windows(2) {
                assert!(w[0].end < w[1].start);
            }
        }
    }

    #[test]
    fn allocate_claim_free_donate() {
        let mut s = Space::new();
        s.add_free(r(0, 32));
        assert_eq!(s.allocate(r(1, 31)), Some(Address(1)));
        assert!(s.claim(Address(5)).is_ok());
        assert!(s.claim(Address(5)).is_err());
        assert_eq!(s.num_used(), 2);
        assert_eq!(s.num_free(), 30);
        assert!(s.free(Address(5)).is_ok());
        assert!(s.free(Address(5)).is_err());
        // 31 free: the biggest block is [16,32) (16 > 31/2), so half of it.
        assert_eq!(s.donate(r(0, 32)), Some(r(24, 32)));
        assert_eq!(s.owned_ranges(), vec![r(0, 24)]);
        // Single address donation for claims.
        assert_eq!(s.donate(r(7, 8)), Some(r(7, 8)));
        assert_eq!(s.donate(r(1, 2)), None);
        let stray = s.set_ranges(&[r(8, 24)]);
        assert_eq!(stray, vec![Address(1)]);
        assert_eq!(s.num_free(), 16);
    }
}
