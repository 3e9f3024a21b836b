//! Linear memories of small components, kept mapped and resident between
//! calls and cleared in place.
//!
//! Why: wasmtime's on-demand allocator maps a fresh 4 GiB reservation for
//! every call, maps the component's data image over it, faults in each page
//! the call touches and unmaps it all afterwards. On a virtual machine a
//! page fault costs over a microsecond, and that mapping was most of a short
//! call (`benches/calls.rs`: half of `clock.now`). wasmtime's pooling
//! allocator keeps memories, but it reserves address space for all of them
//! up front, more than 39-bit ARM boards have. [`MemoryPool`] keeps at most
//! [`KEEP`] memories instead, each cleared by writing zeros over the pages
//! the call made resident, so the next call finds them mapped and faults on
//! none of them.
//!
//! What it costs: a custom memory has no copy-on-write image, so wasmtime
//! copies a component's data segments in at each instantiation. That is why
//! only small components run on the engine that uses it (`engine.rs`): for a
//! 11 MB Python image a copy per call would cost more than the faults.
//!
//! Invariants:
//! - A memory handed out is all zeros, and nothing past its size is
//!   accessible: the rest of the reservation and the guards on both sides
//!   are `PROT_NONE`, so an access out of bounds traps as it would in a
//!   fresh mapping, even where the last call had grown the memory.
//! - Clearing covers every page the last call could have written: resident
//!   pages are zeroed, and each run of pages not resident is dropped with
//!   `MADV_DONTNEED` (a written page swapped out is not resident, and still
//!   holds data). A memory that left more than [`RESIDENT_MAX`] resident
//!   is dropped whole instead.
//! - A memory is in one call's hands or in the free list, never both.
//!
//! Linux only (`mincore`); elsewhere the engine does not use it.

use crate::stacks::page;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use wasmtime::{LinearMemory, MemoryCreator, MemoryType};

/// Memories kept for reuse: one per concurrent call of a small component
/// this many deep; more concurrent calls map their own and unmap them after.
pub const KEEP: usize = 4;

/// A memory that left more resident than this is dropped, not cleared:
/// zeroing it would cost more than faulting it in again, and the pool's
/// memory stays bounded by `KEEP * RESIDENT_MAX`.
pub const RESIDENT_MAX: usize = 4 << 20;

/// Memories for wasmtime (`Config::with_host_memory`), reused across calls.
#[derive(Default)]
pub struct MemoryPool {
    free: Arc<Mutex<Vec<Region>>>,
    reused: Arc<AtomicU64>,
}

impl MemoryPool {
    /// How many memories wait for a call.
    pub fn kept(&self) -> usize {
        self.free.lock().unwrap().len()
    }

    /// How many memories were handed out again after a call.
    pub fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }

    /// Unmap every memory waiting for a call (an idle daemon keeps none).
    pub fn release(&self) {
        let free = std::mem::take(&mut *self.free.lock().unwrap());
        drop(free);
    }
}

fn os_error(what: &str) -> wasmtime::Error {
    wasmtime::format_err!("{what}: {}", std::io::Error::last_os_error())
}

/// One reservation: `guard` bytes, the memory's `capacity` bytes (of which
/// the first `size` are read-write), then `guard` bytes again.
struct Region {
    start: usize,
    guard: usize,
    capacity: usize,
    size: usize,
}

impl Region {
    fn map(capacity: usize, guard: usize) -> wasmtime::Result<Region> {
        let len = guard + capacity + guard;
        // SAFETY: a new private anonymous mapping nothing else refers to.
        let start = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if start == libc::MAP_FAILED {
            return Err(os_error(&format!("cannot reserve {len} bytes for a linear memory")));
        }
        // Huge pages would make clearing zero 2 MiB for each page touched.
        // SAFETY: advice on the mapping just made; failure only costs speed.
        unsafe { libc::madvise(start, len, libc::MADV_NOHUGEPAGE) };
        Ok(Region { start: start as usize, guard, capacity, size: 0 })
    }

    fn base(&self) -> usize {
        self.start + self.guard
    }

    /// Make the first `size` bytes, and nothing after them, accessible.
    fn resize(&mut self, size: usize) -> wasmtime::Result<()> {
        let (from, to, prot) = match size.cmp(&self.size) {
            std::cmp::Ordering::Equal => return Ok(()),
            std::cmp::Ordering::Greater => (self.size, size, libc::PROT_READ | libc::PROT_WRITE),
            std::cmp::Ordering::Less => (size, self.size, libc::PROT_NONE),
        };
        // SAFETY: within this region's capacity (checked by the callers).
        if unsafe { libc::mprotect((self.base() + from) as *mut _, to - from, prot) } != 0 {
            return Err(os_error("cannot resize a linear memory"));
        }
        self.size = size;
        Ok(())
    }

    /// Zero everything the last call could have written; false if the
    /// region should be unmapped instead.
    fn clear(&mut self) -> bool {
        let page = page();
        let pages = self.size / page;
        let mut resident = vec![0u8; pages];
        // SAFETY: the accessible part of this region, one byte per page.
        if unsafe { libc::mincore(self.base() as *mut _, self.size, resident.as_mut_ptr()) } != 0 {
            return false;
        }
        if resident.iter().filter(|r| *r & 1 == 1).count() * page > RESIDENT_MAX {
            return false;
        }
        let mut at = 0;
        while at < pages {
            let here = resident[at] & 1;
            let run = resident[at..].iter().take_while(|r| *r & 1 == here).count();
            let (addr, len) = (self.base() + at * page, run * page);
            if here == 1 {
                // SAFETY: read-write pages of this region, in no call's hands.
                unsafe { std::ptr::write_bytes(addr as *mut u8, 0, len) };
            } else {
                // SAFETY: as above; dropped private anonymous pages read as zeros.
                if unsafe { libc::madvise(addr as *mut _, len, libc::MADV_DONTNEED) } != 0 {
                    return false;
                }
            }
            at += run;
        }
        true
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the whole mapping made in `map`, in no call's hands.
        unsafe { libc::munmap(self.start as *mut _, self.guard + self.capacity + self.guard) };
    }
}

/// A memory in one call's hands; cleared and returned to the pool when
/// wasmtime drops it.
struct Resident {
    region: Option<Region>,
    maximum: Option<usize>,
    free: Arc<Mutex<Vec<Region>>>,
}

impl Resident {
    fn region(&self) -> &Region {
        self.region.as_ref().expect("present until dropped")
    }
}

// SAFETY: the region is this memory's alone while wasmtime holds it:
// `byte_size` bytes at `as_ptr` are read-write, the rest of the `capacity`
// and the guards are inaccessible, and the base never moves.
unsafe impl LinearMemory for Resident {
    fn byte_size(&self) -> usize {
        self.region().size
    }

    fn byte_capacity(&self) -> usize {
        self.region().capacity
    }

    fn grow_to(&mut self, new_size: usize) -> wasmtime::Result<()> {
        let region = self.region.as_mut().expect("present until dropped");
        if new_size > region.capacity || self.maximum.is_some_and(|max| new_size > max) {
            wasmtime::bail!("cannot grow a linear memory to {new_size} bytes");
        }
        region.resize(new_size)
    }

    fn as_ptr(&self) -> *mut u8 {
        self.region().base() as *mut u8
    }
}

impl Drop for Resident {
    fn drop(&mut self) {
        let Some(mut region) = self.region.take() else { return };
        // Cleared outside the lock: other calls take and return memories
        // meanwhile. A region not pushed is unmapped as it drops.
        if self.free.lock().unwrap().len() < KEEP && region.clear() {
            let mut free = self.free.lock().unwrap();
            if free.len() < KEEP {
                free.push(region);
            }
        }
    }
}

// SAFETY: every memory made is zero-filled, reserves `reserved` bytes (or
// its maximum) plus the guard after it, and never moves (see `Resident`).
unsafe impl MemoryCreator for MemoryPool {
    fn new_memory(
        &self,
        ty: MemoryType,
        minimum: usize,
        maximum: Option<usize>,
        reserved: Option<usize>,
        guard: usize,
    ) -> Result<Box<dyn LinearMemory>, String> {
        if ty.is_shared() {
            return Err("shared memories are not supported".into());
        }
        let capacity = reserved.or(maximum).unwrap_or(minimum).max(minimum).next_multiple_of(page());
        let guard = guard.next_multiple_of(page());
        let kept = {
            let mut free = self.free.lock().unwrap();
            let fits = free.iter().rposition(|r| r.capacity == capacity && r.guard == guard);
            fits.map(|i| free.swap_remove(i))
        };
        let region = match kept {
            Some(region) => {
                self.reused.fetch_add(1, Ordering::Relaxed);
                Ok(region)
            }
            None => Region::map(capacity, guard),
        };
        let mut region = region.map_err(|e| format!("{e:#}"))?;
        region.resize(minimum).map_err(|e| format!("{e:#}"))?;
        Ok(Box::new(Resident { region: Some(region), maximum, free: self.free.clone() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(pool: &MemoryPool, pages: usize) -> Box<dyn LinearMemory> {
        let ty = MemoryType::new(pages as u32, None);
        pool.new_memory(ty, pages << 16, None, Some(1 << 30), 1 << 20).unwrap()
    }

    fn bytes(m: &dyn LinearMemory) -> &[u8] {
        // SAFETY: the accessible part of a memory this test holds.
        unsafe { std::slice::from_raw_parts(m.as_ptr(), m.byte_size()) }
    }

    #[test]
    fn a_kept_memory_comes_back_zeroed_and_no_larger_than_asked() {
        let pool = MemoryPool::default();
        let mut m = memory(&pool, 2);
        m.grow_to(40 << 16).unwrap();
        // SAFETY: within the accessible part; written from both ends.
        unsafe {
            std::ptr::write_bytes(m.as_ptr(), 0xAB, 3 << 16);
            std::ptr::write_bytes(m.as_ptr().add(39 << 16), 0xCD, 1 << 16);
        }
        drop(m);
        assert_eq!(pool.kept(), 1);
        let mut again = memory(&pool, 2);
        assert_eq!((pool.reused(), again.byte_size()), (1, 2 << 16));
        again.grow_to(40 << 16).unwrap();
        assert!(bytes(&*again).iter().all(|b| *b == 0), "a reused memory holds the last call's bytes");
    }

    #[test]
    fn the_pool_keeps_a_few_and_a_large_resident_memory_is_dropped() {
        let pool = MemoryPool::default();
        let held: Vec<_> = (0..KEEP + 2).map(|_| memory(&pool, 1)).collect();
        drop(held);
        assert_eq!(pool.kept(), KEEP);
        pool.release();
        let mut big = memory(&pool, 1);
        let size = RESIDENT_MAX + (1 << 16);
        big.grow_to(size).unwrap();
        // SAFETY: within the accessible part.
        unsafe { std::ptr::write_bytes(big.as_ptr(), 1, size) };
        drop(big);
        assert_eq!(pool.kept(), 0);
    }
}
