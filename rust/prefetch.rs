//! Software prefetch. Paths live in separate Python objects scattered over the heap, and we
//! visit them in sorted order, which defeats the hardware prefetcher: without a hint, every path
//! costs a few cache misses.

/// Ask the CPU to start loading the cache lines of `bytes`.
#[inline(always)]
pub fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let mut off = 0;
        while off < bytes.len() {
            // SAFETY: `off < bytes.len()`, so the pointer is inside a live slice; and a prefetch
            // is only a hint that never faults or changes memory, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(bytes.as_ptr().add(off).cast()) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// Ask the CPU to start loading the header of a Python object (its refcount, type and, for
/// `str`, its cached hash).
#[inline(always)]
pub fn prefetch_object(obj: &pyo3::Bound<'_, pyo3::PyAny>) {
    let header = obj.as_ptr().cast::<u8>().cast_const();
    // SAFETY: `obj` is a live object, and every Python object starts with a header of at least
    // 16 bytes (refcount and type pointer), so the slice is readable memory; the slice is only
    // used to issue a prefetch, which reads nothing and never faults.
    prefetch(unsafe { std::slice::from_raw_parts(header, 16) });
}

/// How many items ahead to prefetch when walking paths in sorted order.
pub const AHEAD: usize = 8;
