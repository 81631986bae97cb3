//! Large tables backed by transparent huge pages where the kernel offers
//! them. One of the three modules that opt out of the crate's
//! `deny(unsafe_code)` (with `prefetch` and `simd`): a slice is allocated
//! uninitialised, advised (`madvise(MADV_HUGEPAGE)`) before any of its
//! pages is touched, and only then filled — so the first touch of each
//! 2 MiB range faults in one huge page instead of 512 small ones.
//!
//! Why: a flow table of a million flows spans hundreds of MiB; with 4 KiB
//! pages nearly every lookup also misses the TLB, and the page walk is a
//! second dependent cache miss that no prefetch of the entry can hide.
//! Advice is best effort: with THP disabled, or on another OS, the table is
//! the same, on small pages.
#![allow(unsafe_code)]

/// Below this size the advice is not worth a syscall.
const MIN_BYTES: usize = 4 << 20;
/// The huge page size the advice aims at (x86-64 and aarch64 with 4 KiB pages).
const HUGE: usize = 2 << 20;

/// A boxed slice of `n` values made by `init`, advised to live on huge pages
/// if it is large.
pub fn slice<T>(n: usize, mut init: impl FnMut() -> T) -> Box<[T]> {
    let mut b = Box::<[T]>::new_uninit_slice(n);
    advise(b.as_ptr().cast::<u8>(), std::mem::size_of_val(&*b));
    for v in b.iter_mut() {
        v.write(init());
    }
    // SAFETY: every element was written just above (the loop visits each of
    // the `n` elements once), so the slice is fully initialised.
    unsafe { b.assume_init() }
}

/// `madvise(MADV_HUGEPAGE)` on the whole 2 MiB pages inside `[p, p + len)`.
fn advise(p: *const u8, len: usize) {
    if len < MIN_BYTES {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let start = (p as usize).next_multiple_of(HUGE);
        let end = (p as usize + len) / HUGE * HUGE;
        if end > start {
            // SAFETY: madvise with MADV_HUGEPAGE only changes how the kernel
            // backs the range, never its contents or validity; the range lies
            // inside the live allocation `[p, p + len)` that this module owns
            // (both ends are rounded inwards). An error (THP disabled,
            // unsupported kernel) leaves small pages, which is fine.
            let _ = unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE)
            };
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (p, HUGE);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn slice_holds_what_init_made() {
        let mut k = 0u64;
        let s = super::slice(3 << 20, || {
            k += 1;
            k
        });
        assert_eq!(s.len(), 3 << 20);
        assert!(s.iter().enumerate().all(|(i, &v)| v == i as u64 + 1));
        let small = super::slice(5, || 7u8);
        assert_eq!(&*small, &[7u8; 5]);
    }
}
