//! Cache prefetch hints. One of the three modules that opt out of the
//! crate's `deny(unsafe_code)` (with `simd` and `hugemem`): the x86
//! intrinsic is marked unsafe only because it is a `target_feature`
//! function; a prefetch never faults and never changes program state.
#![allow(unsafe_code)]

/// Hint the CPU to pull the cache line holding `*p` into L1.
#[inline(always)]
pub fn prefetch<T>(p: &T) {
    prefetch_addr(std::ptr::from_ref(p).cast::<u8>());
}

/// Hint the CPU to pull the cache line at address `p` into L1. `p` is
/// never dereferenced: any address will do (one past a buffer's end, or an
/// empty buffer's dangling pointer, included).
#[inline(always)]
pub fn prefetch_addr(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE is part of the x86_64 baseline, so the target feature the
        // intrinsic requires is always present; PREFETCHT0 is a hint that never
        // faults, whatever the address, and never changes program state.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = p;
    }
}
