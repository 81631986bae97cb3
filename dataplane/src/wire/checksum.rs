//! Checksum arithmetic: the Internet checksum (RFC 1071), its pseudo-headers
//! (RFC 791, RFC 8200 §8.1), incremental updates (RFC 1624) and SCTP's
//! CRC32c (RFC 9260 §6.8, Appendix A), over bytes and words only. Where a
//! parsed packet keeps its checksums is [`super::parse`]'s to say
//! ([`super::L4Checksum`]); writing them into frames is [`super::rewrite`]'s.
//!
//! Invariants:
//! - partial sums are `u32` values that are congruent, modulo 0xFFFF, to the
//!   one's-complement sum of big-endian 16-bit words; combine them with
//!   [`add`] and finish with [`fold`];
//! - nothing here reads a frame's headers or panics on any input;
//! - UDP (RFC 768): a computed zero is sent as 0xFFFF ([`udp_nonzero`]).

/// One's-complement addition of two partial sums (end-around carry, RFC 1071 §2(A)).
/// 2^32 ≡ 1 (mod 0xFFFF), so folding the 64-bit carry back in keeps the sum exact.
#[inline]
pub fn add(a: u32, b: u32) -> u32 {
    let s = u64::from(a) + u64::from(b);
    ((s & 0xffff_ffff) + (s >> 32)) as u32
}

/// Fold a partial sum to 16 bits (not complemented).
#[inline]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Partial one's-complement sum of `data` taken as big-endian 16-bit words; an
/// odd final byte is padded with a zero byte on the right (RFC 1071 §4.1).
/// `data` must start at an even offset of the checksummed region.
#[inline]
pub fn sum_bytes(data: &[u8]) -> u32 {
    let (words, rest) = data.as_chunks::<8>();
    let mut acc: u64 = 0;
    for w in words {
        let w = u64::from_be_bytes(*w);
        // Adding two 32-bit halves: 2^32 ≡ 1 (mod 0xFFFF), and the u64 cannot
        // overflow before 2^31 iterations (a 16 GiB buffer).
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    let (pairs, last) = rest.as_chunks::<2>();
    for p in pairs {
        acc += u64::from(u16::from_be_bytes(*p));
    }
    if let [b] = last {
        acc += u64::from(*b) << 8;
    }
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    ((acc & 0xffff_ffff) + (acc >> 32)) as u32
}

/// The Internet checksum of `data` (RFC 1071): the complement of the folded sum.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum_bytes(data))
}

/// Partial sum of the IPv4 pseudo-header (RFC 9293 §3.1, RFC 768).
#[inline]
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: u16) -> u32 {
    u32::from(u16::from_be_bytes([src[0], src[1]]))
        + u32::from(u16::from_be_bytes([src[2], src[3]]))
        + u32::from(u16::from_be_bytes([dst[0], dst[1]]))
        + u32::from(u16::from_be_bytes([dst[2], dst[3]]))
        + u32::from(proto)
        + u32::from(l4_len)
}

/// Partial sum of the IPv6 pseudo-header (RFC 8200 §8.1).
#[inline]
pub fn pseudo_v6(src: &[u8; 16], dst: &[u8; 16], proto: u8, l4_len: u32) -> u32 {
    add(
        add(sum_bytes(src), sum_bytes(dst)),
        (l4_len >> 16) + (l4_len & 0xffff) + u32::from(proto),
    )
}

/// RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')` for one 16-bit word `m` → `m'`.
#[inline]
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!hc) + u32::from(!old) + u32::from(new))
}

/// RFC 1624 eqn. 3 for a 32-bit field (two adjacent words, e.g. an IPv4 address
/// or a TCP sequence number).
#[inline]
pub fn update32(hc: u16, old: u32, new: u32) -> u16 {
    let s = u32::from(!hc)
        + u32::from(!(old >> 16) as u16)
        + u32::from(!(old as u16))
        + (new >> 16)
        + (new & 0xffff);
    !fold(s)
}

/// RFC 1624 eqn. 3 for a field of any length (IPv6 addresses, MACs don't count).
/// `old` and `new` are the field before and after the rewrite; they must have
/// the same length and start at an even offset of the checksummed region.
#[inline]
pub fn update_bytes(hc: u16, old: &[u8], new: &[u8]) -> u16 {
    let s = u32::from(!hc) + u32::from(!fold(sum_bytes(old))) + u32::from(fold(sum_bytes(new)));
    !fold(s)
}

/// The change of one 16-bit field (RFC 1624 eqn. 3's `~m + m'`), for
/// [`apply_delta`].
#[inline(always)]
pub fn delta16(old: u16, new: u16) -> u64 {
    u64::from(!old) + u64::from(new)
}

/// A one's-complement sum of 64 bits folded to 16 (end-around carries),
/// not complemented: a nonzero sum never folds to zero. The 64-bit sum
/// folds to 32 bits with an end-around carry, and the 32 bits to 16 as
/// Linux's `csum_fold` does: in `s + (s rotated by 16)` the high half is
/// the sum of both halves plus the carry out of the low half.
#[inline(always)]
pub fn fold_wide(s: u64) -> u16 {
    let (lo, carry) = (s as u32).overflowing_add((s >> 32) as u32);
    // With a carry, lo ≤ 2^32 - 2 (both terms are below 2^32), so this cannot wrap.
    let s = lo + u32::from(carry);
    (s.wrapping_add(s.rotate_right(16)) >> 16) as u16
}

/// Apply a summed change to a checksum field: HC' = ~(~HC + Σ(~m + m'))
/// (RFC 1624 eqn. 3). `delta` is below 2^63 (a handful of 32-bit terms).
#[inline(always)]
pub fn apply_delta(hc: u16, delta: u64) -> u16 {
    !fold_wide(u64::from(!hc) + delta)
}

/// UDP's rules for a freshly computed checksum (RFC 768): zero goes out as 0xFFFF.
#[inline]
pub fn udp_nonzero(c: u16) -> u16 {
    if c == 0 {
        0xffff
    } else {
        c
    }
}

/// CRC32c (Castagnoli, reflected polynomial 0x82F63B78) lookup table.
const CRC32C_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82f6_3b78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC32c of `data` (RFC 9260 Appendix A; RFC 3720 §B.4 test vectors).
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c_update(0xffff_ffff, data) ^ 0xffff_ffff
}

/// Feed `data` into a running (pre-inversion) CRC32c register.
#[inline]
fn crc32c_update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = CRC32C_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// SCTP's checksum of a whole SCTP packet (`seg` = common header + chunks),
/// computed as if the checksum field (bytes 8..12) were zero. The value goes
/// on the wire least-significant byte first (RFC 9260 Appendix A).
pub fn sctp_crc(seg: &[u8]) -> u32 {
    let (head, tail) = seg.split_at(seg.len().min(8));
    let mut crc = crc32c_update(0xffff_ffff, head);
    if tail.len() >= 4 {
        crc = crc32c_update(crc, &[0; 4]);
        crc = crc32c_update(crc, &tail[4..]);
    } else {
        crc = crc32c_update(crc, tail);
    }
    crc ^ 0xffff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 1071 §4.1, word by word: the reference the fast paths are checked against.
    pub(crate) fn reference_sum(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        let mut i = 0;
        while i + 1 < data.len() {
            sum += u32::from(u16::from_be_bytes([data[i], data[i + 1]]));
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            i += 2;
        }
        if i < data.len() {
            sum += u32::from(data[i]) << 8;
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
        }
        sum as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum_bytes(&d)), 0xddf2);
        assert_eq!(checksum(&d), !0xddf2);
    }

    #[test]
    fn crc32c_test_vectors() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        // RFC 3720 §B.4: 32 bytes of zeros, and 32 bytes of 0xff.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62a8_ab43);
    }

    #[test]
    fn sctp_crc_skips_the_checksum_field() {
        let mut p = [7u8; 40];
        let c = sctp_crc(&p);
        p[8..12].fill(0);
        assert_eq!(c, crc32c(&p));
    }

    /// RFC 1624 eqn. 3 the long way: four 16-bit folds.
    fn apply_delta_reference(hc: u16, delta: u64) -> u16 {
        let mut s = u64::from(!hc) + delta;
        s = (s & 0xffff_ffff) + (s >> 32);
        s = (s & 0xffff_ffff) + (s >> 32);
        let mut s = s as u32;
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        !(s as u16)
    }

    proptest! {
        /// The rotate fold gives what four plain folds give, carries included.
        #[test]
        fn apply_delta_matches_plain_folds(
            hc in prop_oneof![Just(0u16), Just(0xffff), any::<u16>()],
            delta in prop_oneof![
                Just(0u64),
                Just(0xffff),
                Just(0xffff_ffff),
                Just(0x1_0000_fffe),
                0u64..(1 << 40),
                0u64..(1 << 62),
            ],
        ) {
            prop_assert_eq!(apply_delta(hc, delta), apply_delta_reference(hc, delta));
        }

        #[test]
        fn sum_bytes_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            prop_assert_eq!(fold(sum_bytes(&data)) % 0xffff, reference_sum(&data) % 0xffff);
            // non-zero data never folds to +0
            if data.iter().any(|&b| b != 0) {
                prop_assert_ne!(fold(sum_bytes(&data)), 0);
            }
        }

        #[test]
        fn split_sums_add_up(data in proptest::collection::vec(any::<u8>(), 0..600), cut in 0usize..300) {
            let cut = (cut * 2).min(data.len() & !1);
            let s = add(sum_bytes(&data[..cut]), sum_bytes(&data[cut..]));
            prop_assert_eq!(fold(s) % 0xffff, reference_sum(&data) % 0xffff);
        }

        #[test]
        fn incremental_updates_equal_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 40..200),
            at in 0usize..9,
            new16 in any::<u16>(),
            new32 in any::<u32>(),
            new128 in any::<[u8; 16]>(),
        ) {
            // A header with a valid checksum in bytes 0..2 (any non-zero content).
            data[39] |= 1;
            data[0] = 0; data[1] = 0;
            let c = checksum(&data);
            data[..2].copy_from_slice(&c.to_be_bytes());
            let at = 2 + 2 * at; // an even offset past the checksum field

            let mut d16 = data.clone();
            let old = u16::from_be_bytes([d16[at], d16[at + 1]]);
            d16[at..at + 2].copy_from_slice(&new16.to_be_bytes());
            let inc = update16(c, old, new16);
            d16[..2].fill(0);
            prop_assert_eq!(inc, checksum(&d16));

            let mut d32 = data.clone();
            let old = u32::from_be_bytes([d32[at], d32[at + 1], d32[at + 2], d32[at + 3]]);
            d32[at..at + 4].copy_from_slice(&new32.to_be_bytes());
            let inc = update32(c, old, new32);
            d32[..2].fill(0);
            prop_assert_eq!(inc, checksum(&d32));

            if at + 16 <= data.len() {
                let mut d = data.clone();
                let old: [u8; 16] = d[at..at + 16].try_into().expect("16 bytes");
                d[at..at + 16].copy_from_slice(&new128);
                let inc = update_bytes(c, &old, &new128);
                d[..2].fill(0);
                prop_assert_eq!(inc, checksum(&d));
            }
        }
    }
}
