//! The guest's anonymous-mmap region: a first-fit allocator of page ranges inside the heap
//! window of the layout. Freed ranges are handed back to the host (zeroed, refaulted on touch)
//! by the caller.

use std::collections::BTreeMap;

use super::layout::PAGE;

/// Page ranges of the heap window; free ranges keyed by start address.
#[derive(Debug)]
pub struct Heap {
    start: u64,
    end: u64,
    free: BTreeMap<u64, u64>,
}

impl Heap {
    /// A heap over `start..end` (page aligned), initially all free.
    pub fn new(start: u64, end: u64) -> Heap {
        let mut free = BTreeMap::new();
        if end > start {
            free.insert(start, end - start);
        }
        Heap { start, end, free }
    }

    /// Allocate `len` bytes (rounded up to pages); `None` when no free range is large enough.
    pub fn alloc(&mut self, len: u64) -> Option<u64> {
        let len = len.checked_next_multiple_of(PAGE)?;
        if len == 0 {
            return None;
        }
        let (&addr, &size) = self.free.iter().find(|&(_, &size)| size >= len)?;
        self.free.remove(&addr);
        if size > len {
            self.free.insert(addr + len, size - len);
        }
        Some(addr)
    }

    /// Free `addr..addr+len` (rounded up to pages), merging with free neighbours. Returns the
    /// part of the range inside the heap window, or `None` if the range is outside it or
    /// misaligned. Freeing pages that are already free is harmless, as `munmap` allows.
    pub fn free(&mut self, addr: u64, len: u64) -> Option<(u64, u64)> {
        let len = len.checked_next_multiple_of(PAGE)?;
        if !addr.is_multiple_of(PAGE) || len == 0 || addr < self.start || addr.checked_add(len)? > self.end {
            return None;
        }
        let (mut lo, mut hi) = (addr, addr + len);
        // Absorb every free range that overlaps or touches lo..hi.
        let touching: Vec<(u64, u64)> =
            self.free.range(..=hi).filter(|&(&a, &s)| a + s >= lo).map(|(&a, &s)| (a, s)).collect();
        for (a, s) in touching {
            self.free.remove(&a);
            lo = lo.min(a);
            hi = hi.max(a + s);
        }
        self.free.insert(lo, hi - lo);
        Some((addr, len))
    }

    /// The free ranges, (start, length) in address order, for a snapshot.
    pub fn free_ranges(&self) -> Vec<(u64, u64)> {
        self.free.iter().map(|(&a, &l)| (a, l)).collect()
    }

    /// A heap over `start..end` with exactly the free ranges `free` (from a snapshot), or why
    /// they cannot be: each must be page aligned, non-empty, inside the window, in address
    /// order and apart from the next (the allocator merges touching ranges).
    pub fn from_free_ranges(start: u64, end: u64, free: &[(u64, u64)]) -> Result<Heap, String> {
        let mut map = BTreeMap::new();
        let mut prev_end = start;
        for (i, &(a, l)) in free.iter().enumerate() {
            let e = a.checked_add(l).ok_or_else(|| format!("free heap range {i} overflows"))?;
            if !a.is_multiple_of(PAGE) || !l.is_multiple_of(PAGE) || l == 0 {
                return Err(format!("free heap range {i} ({a:#x}+{l:#x}) is not whole pages"));
            }
            if a < prev_end || (i > 0 && a == prev_end) || e > end {
                return Err(format!(
                    "free heap range {i} ({a:#x}+{l:#x}) is outside the heap {start:#x}..{end:#x} or out of order"
                ));
            }
            map.insert(a, l);
            prev_end = e;
        }
        Ok(Heap { start, end, free: map })
    }

    /// Bytes currently free.
    pub fn free_bytes(&self) -> u64 {
        self.free.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_rounds_to_pages_and_first_fits() {
        let mut h = Heap::new(0x40_0000, 0x80_0000);
        assert_eq!(h.alloc(1), Some(0x40_0000));
        assert_eq!(h.alloc(0x1001), Some(0x40_1000));
        assert_eq!(h.free_bytes(), 0x40_0000 - 0x3000);
    }

    #[test]
    fn freed_ranges_merge_and_are_reused() {
        let mut h = Heap::new(0x40_0000, 0x80_0000);
        let a = h.alloc(0x2000).unwrap();
        let b = h.alloc(0x2000).unwrap();
        assert_eq!(h.free(a, 0x2000), Some((a, 0x2000)));
        assert_eq!(h.free(b, 0x2000), Some((b, 0x2000)));
        assert_eq!(h.free_bytes(), 0x40_0000);
        assert_eq!(h.alloc(0x40_0000), Some(0x40_0000));
    }

    #[test]
    fn free_ranges_round_trip_and_bad_ones_are_refused() {
        let mut h = Heap::new(0x40_0000, 0x80_0000);
        h.alloc(0x2000).unwrap();
        let saved = h.free_ranges();
        let back = Heap::from_free_ranges(0x40_0000, 0x80_0000, &saved).unwrap();
        assert_eq!(back.free_ranges(), saved);
        for bad in [
            vec![(0x40_0001, 0x1000)],
            vec![(0x3f_f000, 0x1000)],
            vec![(0x7f_f000, 0x2000)],
            vec![(0x50_0000, 0x1000), (0x40_0000, 0x1000)],
            vec![(0x40_0000, 0x1000), (0x40_1000, 0x1000)],
            vec![(0x40_0000, u64::MAX - 0xfff)],
            vec![(0x40_0000, 0)],
        ] {
            assert!(Heap::from_free_ranges(0x40_0000, 0x80_0000, &bad).is_err(), "{bad:x?}");
        }
    }

    #[test]
    fn alloc_fails_when_exhausted_and_free_rejects_outside_ranges() {
        let mut h = Heap::new(0x40_0000, 0x40_2000);
        assert_eq!(h.alloc(0x3000), None);
        assert_eq!(h.free(0x1000, 0x1000), None);
        assert_eq!(h.free(0x40_0001, 0x1000), None);
    }
}
