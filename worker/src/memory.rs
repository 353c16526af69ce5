//! What the engine's heap holds, counted by the allocator itself.
//!
//! In the browser the worker's wasm module installs [`CountingAllocator`] as its global
//! allocator, so the memory ledger (`getMemoryUsage`) reports measured bytes, not estimates:
//! the tokenizer's in-memory size is the heap growth while it is built, and
//! `engineHeapBytes` is everything live. Natively (the CLI, tests) nothing counts: the
//! functions below say so (`heap_bytes()` is 0, `heap_bytes_if_counted()` is `None`).
//!
//! Freed bytes go back to the allocator and are reused by later allocations; a wasm memory
//! never shrinks (WebAssembly has no way to return pages), so the browser's view of the
//! worker's memory stays at its peak while the engine's live bytes drop.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static COUNTING: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting live bytes.
pub struct CountingAllocator;

// SAFETY: every call forwards to `System` with the same arguments; the counters are only
// statistics.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        counted(System.alloc(layout), layout.size())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        counted(System.alloc_zeroed(layout), layout.size())
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = System.realloc(ptr, layout, new_size);
        if !new.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE.fetch_add(new_size, Ordering::Relaxed);
        }
        new
    }
}

/// Counts a fresh allocation of `size` bytes at `ptr` (none when it failed).
fn counted(ptr: *mut u8, size: usize) -> *mut u8 {
    COUNTING.store(1, Ordering::Relaxed);
    if !ptr.is_null() {
        LIVE.fetch_add(size, Ordering::Relaxed);
    }
    ptr
}

/// Live heap bytes (0 where the counting allocator is not installed).
pub fn heap_bytes() -> u64 {
    LIVE.load(Ordering::Relaxed) as u64
}

/// Live heap bytes, or `None` where nothing counts them.
pub fn heap_bytes_if_counted() -> Option<u64> {
    (COUNTING.load(Ordering::Relaxed) == 1).then(heap_bytes)
}
