//! The native stacks guest calls run on, kept for the next call.
//!
//! Every call runs in a fresh store, and wasmtime's on-demand allocator maps
//! a new stack (2 MiB and a guard page) for each and unmaps it after: three
//! system calls and fresh zero-filled pages that were about a tenth of a
//! short call (`benches/calls.rs`). [`StackPool`] hands a dropped stack to
//! the next call instead, keeping at most [`KEEP`]. (wasmtime's pooling
//! allocator reuses stacks too, but it also reserves address space for all
//! its memories up front, more than 39-bit ARM boards have.)
//!
//! Invariants: a stack is never handed to two calls at once (it leaves the
//! free list while in use), and its guard page stays inaccessible. A reused
//! stack keeps what the last call left on it unless wasmtime asks for a
//! zeroed one (`async_stack_zeroing`, off by default): guest code cannot
//! address its native stack, only wasmtime's own frames live there, which
//! is what wasmtime's pooling allocator assumes too.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use wasmtime::{StackCreator, StackMemory};

/// Stacks kept for reuse: one per concurrent call this many deep; more
/// concurrent calls map their own and unmap them after.
pub const KEEP: usize = 8;

/// Stacks for wasmtime (`Config::with_host_stack`), reused across calls.
#[derive(Default)]
pub struct StackPool {
    free: Arc<Mutex<Vec<Mapping>>>,
}

impl StackPool {
    /// How many stacks wait for a call.
    pub fn kept(&self) -> usize {
        self.free.lock().unwrap().len()
    }
}

/// One mapping: the guard page at `base`, then the stack of `size` bytes.
struct Mapping {
    base: usize,
    size: usize,
}

/// The system's page size.
pub(crate) fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

impl Mapping {
    fn new(size: usize) -> wasmtime::Result<Mapping> {
        let size = size.next_multiple_of(page());
        let len = size + page();
        // SAFETY: a new private anonymous mapping; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            wasmtime::bail!("cannot map a {len}-byte stack: {}", std::io::Error::last_os_error());
        }
        let mapping = Mapping { base: base as usize, size };
        // SAFETY: the first page of the mapping just made.
        if unsafe { libc::mprotect(base, page(), libc::PROT_NONE) } != 0 {
            wasmtime::bail!("cannot protect a stack's guard page: {}", std::io::Error::last_os_error());
        }
        Ok(mapping)
    }

    fn stack(&self) -> Range<usize> {
        self.base + page()..self.base + page() + self.size
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the whole mapping made in `new`, no longer in use.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.size + page()) };
    }
}

/// A stack lent to one call; back to the free list when wasmtime drops it.
struct Lent {
    mapping: Option<Mapping>,
    free: Arc<Mutex<Vec<Mapping>>>,
}

impl Lent {
    fn mapping(&self) -> &Mapping {
        self.mapping.as_ref().expect("taken only on drop")
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let mut free = self.free.lock().unwrap();
        if free.len() < KEEP {
            free.extend(self.mapping.take());
        }
    }
}

// SAFETY: `top` and `range` describe the writable stack of a live mapping
// owned by this value, and `guard_range` its inaccessible first page.
unsafe impl StackMemory for Lent {
    fn top(&self) -> *mut u8 {
        self.mapping().stack().end as *mut u8
    }

    fn range(&self) -> Range<usize> {
        self.mapping().stack()
    }

    fn guard_range(&self) -> Range<*mut u8> {
        let base = self.mapping().base;
        base as *mut u8..(base + page()) as *mut u8
    }
}

// SAFETY: every stack returned is page aligned with a guard page below it,
// lent to one call at a time, and zero-filled when `zeroed` asks for it.
unsafe impl StackCreator for StackPool {
    fn new_stack(&self, size: usize, zeroed: bool) -> wasmtime::Result<Box<dyn StackMemory>> {
        let wanted = size.next_multiple_of(page());
        let reused = {
            let mut free = self.free.lock().unwrap();
            free.iter().position(|m| m.size == wanted).map(|i| free.swap_remove(i))
        };
        let mapping = match reused {
            Some(m) => {
                if zeroed {
                    let stack = m.stack();
                    // SAFETY: private anonymous pages of a stack not in use:
                    // they read as zero afterwards.
                    if unsafe { libc::madvise(stack.start as *mut libc::c_void, stack.len(), libc::MADV_DONTNEED) } != 0
                    {
                        wasmtime::bail!("cannot zero a stack: {}", std::io::Error::last_os_error());
                    }
                }
                m
            }
            None => Mapping::new(size)?,
        };
        Ok(Box::new(Lent { mapping: Some(mapping), free: self.free.clone() }))
    }
}
