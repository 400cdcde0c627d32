//! The binary's global allocator: mimalloc, asked the way its fast path answers.
//!
//! The `mimalloc` crate (0.1.52, the newest) hands every allocation to `mi_malloc_aligned`,
//! whatever its alignment. mimalloc 3 answers that from its fast path only for blocks of at most
//! 1 KiB that happen to be aligned already; anything else (an 8 KiB read buffer, a 1 KB body, a
//! record of an odd size class) goes to the generic path, which over-allocates by the alignment
//! and marks the page as holding interior pointers, so frees on it take the slow way too.
//! callgrind counted ~10 such allocations in every proxied request, ~230 instructions each. A
//! plain `mi_malloc` already returns 16-byte aligned blocks for any size of 16 bytes or more (its
//! size classes are multiples of 16 bytes from 16 up, and every page's first block is 16-byte
//! aligned), so requests that need no more than that take it, as the standard library's
//! `System` allocator does with `malloc`; larger alignments still go to the aligned calls.
//!
//! Shared by `main.rs` and the logs bench (`#[path]`), so the bench measures the writer on the
//! allocator it runs on. Not part of the library, which has no `unsafe` at all.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// The alignment every block of 16 bytes or more from a plain `mi_malloc` has
/// (`MI_MAX_ALIGN_SIZE`).
const PLAIN_ALIGN: usize = 16;

/// Whether a plain (unaligned) mimalloc call already satisfies `align` for `size` bytes.
const fn plain_suffices(size: usize, align: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

/// mimalloc, with `mi_malloc`/`mi_zalloc`/`mi_realloc` where they satisfy the layout.
pub struct Mimalloc;

// SAFETY: every pointer returned comes from mimalloc and is aligned as the layout asks: plain
// calls only where their guaranteed alignment (16 bytes for blocks of 16 bytes or more, and `align
// <= size` keeps smaller blocks out) covers it, mimalloc's aligned calls otherwise. `mi_free` and
// `mi_realloc` accept pointers from either kind of call.
#[expect(unsafe_code, reason = "a global allocator is an unsafe trait; mimalloc is called through its C API")]
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: mimalloc's allocation calls take any size and a power-of-two alignment.
        unsafe {
            if plain_suffices(size, align) {
                libmimalloc_sys::mi_malloc(size).cast()
            } else {
                libmimalloc_sys::mi_malloc_aligned(size, align).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: as in `alloc`.
        unsafe {
            if plain_suffices(size, align) {
                libmimalloc_sys::mi_zalloc(size).cast()
            } else {
                libmimalloc_sys::mi_zalloc_aligned(size, align).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the trait's contract), so from mimalloc.
        unsafe { libmimalloc_sys::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        // SAFETY: `ptr` came from this allocator with `layout` (the trait's contract).
        unsafe {
            if plain_suffices(new_size, align) {
                libmimalloc_sys::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                libmimalloc_sys::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, align).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    // Imports inside each test: the logs bench compiles this module without running tests.

    #[test]
    fn plain_calls_only_where_their_alignment_covers_the_layout() {
        use super::plain_suffices;
        assert!(plain_suffices(1, 1));
        assert!(plain_suffices(8192, 8));
        assert!(plain_suffices(16, 16));
        // A block smaller than its alignment may sit in the 8-byte size class.
        assert!(!plain_suffices(8, 16));
        // Cache-line aligned (tokio's task cells): the aligned call.
        assert!(!plain_suffices(256, 64));
    }

    /// Every layout gets a block aligned as asked, through allocation, zeroed allocation and
    /// reallocation (growing and shrinking), and the contents survive a reallocation.
    #[test]
    #[expect(unsafe_code, reason = "drives the allocator's unsafe trait directly")]
    #[expect(clippy::cast_possible_truncation, reason = "a byte pattern below 251")]
    fn blocks_are_aligned_and_keep_their_contents() {
        use super::Mimalloc;
        use std::alloc::{GlobalAlloc, Layout};
        let sizes = (1..=80).chain([100, 127, 128, 129, 1000, 1024, 1500, 4095, 4096, 8192, 8199, 70_000]);
        for size in sizes {
            for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
                let Ok(layout) = Layout::from_size_align(size, align) else { continue };
                // SAFETY: non-zero sizes; each block is written within its size and freed once
                // with the layout it has.
                unsafe {
                    for new_size in [size * 3 + 5, (size / 2).max(1)] {
                        let p = Mimalloc.alloc(layout);
                        assert!(!p.is_null());
                        assert_eq!(p as usize % align, 0, "alloc {size} aligned {align}");
                        for i in 0..size {
                            p.add(i).write((i % 251) as u8);
                        }
                        let q = Mimalloc.realloc(p, layout, new_size);
                        assert!(!q.is_null());
                        assert_eq!(q as usize % align, 0, "realloc {size} to {new_size} aligned {align}");
                        for i in 0..size.min(new_size) {
                            assert_eq!(q.add(i).read(), (i % 251) as u8, "content after realloc {size} to {new_size}");
                        }
                        Mimalloc.dealloc(q, Layout::from_size_align_unchecked(new_size, align));
                    }
                    let z = Mimalloc.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "alloc_zeroed {size} aligned {align}");
                    assert!((0..size).all(|i| z.add(i).read() == 0));
                    Mimalloc.dealloc(z, layout);
                }
            }
        }
    }
}
