//! Software prefetch. Paths live in separate Python objects scattered over the heap, and we
//! visit them in sorted order, which defeats the hardware prefetcher: without a hint, every path
//! costs a few cache misses.
//!
//! A prefetch is a hint that reads nothing the program can observe and never faults, so it takes
//! a raw pointer and never forms a reference (a `&[u8]` over memory that another thread may
//! write, such as a Python object's header, would be undefined behaviour in principle).

/// Ask the CPU to start loading the cache lines of `len` bytes from `ptr`.
#[inline(always)]
pub fn prefetch_raw(ptr: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let mut off = 0;
        while off < len {
            // `wrapping_add` makes no claim that the address is in bounds of anything.
            let p = ptr.wrapping_add(off).cast::<i8>();
            // SAFETY: `_mm_prefetch` is a hint: it does not dereference `p` in the sense of the
            // memory model, never faults (even on an unmapped address) and changes no memory.
            // The SSE feature it needs is part of the x86_64 baseline.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (ptr, len);
}

/// Ask the CPU to start loading the cache lines of `bytes` (immutable bytes we borrow).
#[inline(always)]
pub fn prefetch(bytes: &[u8]) {
    prefetch_raw(bytes.as_ptr(), bytes.len());
}

/// Ask the CPU to start loading the header of a Python object (its refcount, type and, for
/// `str`, its cached hash). Only the object's address is used: no reference to its memory is
/// formed.
#[inline(always)]
pub fn prefetch_object(obj: &pyo3::Bound<'_, pyo3::PyAny>) {
    prefetch_raw(obj.as_ptr().cast::<u8>().cast_const(), 16);
}

/// How many items ahead to prefetch when walking paths in sorted order.
pub const AHEAD: usize = 8;
