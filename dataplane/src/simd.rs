//! Vector compares for the flow table's tag match. `unsafe` only because
//! the SSE2 intrinsics are `#[target_feature]` functions; SSE2 is part of the
//! x86-64 baseline, so the feature is always there. Other targets use the
//! portable SWAR form.
#![allow(unsafe_code)]

/// Bit `k` set for each 16-bit lane `k` of `lo` (lanes 0–3, low bits first)
/// and `hi` (lanes 4–7) equal to `tag`.
#[inline(always)]
pub fn eq_lanes16(lo: u64, hi: u64, tag: u16) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the function only needs SSE2, which every x86-64 CPU has
        // (it is in the target's baseline feature set); it touches no memory.
        unsafe { eq_lanes16_sse2(lo, hi, tag) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        swar(lo, tag) | (swar(hi, tag) << 4)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
#[inline]
fn eq_lanes16_sse2(lo: u64, hi: u64, tag: u16) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi16, _mm_movemask_epi8, _mm_packs_epi16, _mm_set1_epi16, _mm_set_epi64x,
        _mm_setzero_si128,
    };
    // Lanes equal to the tag become -1; the saturating pack narrows each lane
    // to one byte, so the byte mask has bit k for lane k.
    let v = _mm_set_epi64x(hi as i64, lo as i64);
    let eq = _mm_cmpeq_epi16(v, _mm_set1_epi16(tag as i16));
    _mm_movemask_epi8(_mm_packs_epi16(eq, _mm_setzero_si128())) as u32
}

/// Bit `k` set for each 16-bit lane `k` of `word` equal to `tag`.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline(always)]
fn swar(word: u64, tag: u16) -> u32 {
    const LANE_ONES: u64 = 0x0001_0001_0001_0001;
    const LANE_HIGHS: u64 = 0x8000_8000_8000_8000;
    let x = word ^ (u64::from(tag) * LANE_ONES);
    // A lane is nonzero iff its low 15 bits plus 0x7fff carry into bit 15,
    // or bit 15 is already set; no carry crosses lanes.
    let nonzero = ((x & !LANE_HIGHS) + !LANE_HIGHS) | x;
    let zero = (!nonzero & LANE_HIGHS) >> 15;
    // Gather bits 0, 16, 32, 48 into bits 60..63: the partial products land
    // on distinct bits, so nothing carries.
    (zero.wrapping_mul((1 << 60) | (1 << 45) | (1 << 30) | (1 << 15)) >> 60) as u32
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// The vector compare and the SWAR one agree with a lane-by-lane scan.
        #[test]
        fn lanes_equal_to_the_tag(
            lanes in proptest::array::uniform8(prop_oneof![
                Just(0u16), Just(1), Just(0x8000), Just(0x8001), Just(0xffff), any::<u16>()
            ]),
            tag in prop_oneof![Just(0u16), Just(1), Just(0x8001), Just(0xffff), any::<u16>()],
        ) {
            let word = |l: &[u16]| l.iter().rev().fold(0u64, |w, &x| (w << 16) | u64::from(x));
            let (lo, hi) = (word(&lanes[..4]), word(&lanes[4..]));
            let want: u32 = lanes
                .iter()
                .enumerate()
                .filter(|&(_, &l)| l == tag)
                .map(|(k, _)| 1 << k)
                .sum();
            prop_assert_eq!(super::eq_lanes16(lo, hi, tag), want);
            prop_assert_eq!(super::swar(lo, tag) | (super::swar(hi, tag) << 4), want);
        }
    }
}
