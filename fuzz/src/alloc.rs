//! The global allocator of the harnesses: the system allocator, aborting on any single
//! allocation above [`MAX_ALLOCATION`].
//!
//! Fuzz inputs are at most a few hundred KiB, so a request this large can only come from a size
//! the input declares (a header announcing 10^12 items) and not from data actually present: the
//! reader must refuse it before allocating. Without this cap such a request could succeed
//! lazily (overcommit) and go unnoticed, or be reported late as an out-of-memory.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;

/// The largest allocation a harness may make (512 MiB, the image decoder's own default cap).
pub const MAX_ALLOCATION: usize = 512 << 20;

/// [`System`], with the [`MAX_ALLOCATION`] cap.
pub struct CappedAlloc;

fn check(size: usize) {
    if size > MAX_ALLOCATION {
        // Unbuffered and allocation-free: the allocator must not re-enter itself.
        let _ = std::io::stderr().write_all(b"nasnet-fuzz: allocation above MAX_ALLOCATION\n");
        std::process::abort();
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the size
// check only adds an abort before the call.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through this allocator) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        // SAFETY: `ptr` was allocated by `System` with `layout`; the caller upholds the rest.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
