//! Flow keys and the flow table's hash of them.
//!
//! Invariant: a key's [`FlowKey::words`] are what a slot stores and what
//! the hash reads; an IPv4 key's words 0 and 2 are zero (its addresses sit
//! in the high halves of words 1 and 3, as [`Ip16::words`] lays them out).

use crate::net::{fmix64, Ip16};

/// The 5-tuple of a packet as it appears on the wire. For ICMP echo the echo
/// identifier stands in for both ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// Source address.
    pub src: Ip16,
    /// Destination address.
    pub dst: Ip16,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
}

/// The flow table's hash of a [`FlowKey`]: direction-sensitive, its low
/// bits pick a key's first bucket, its top 16 the tag (which also picks the
/// second bucket, [`super::tags::alt_bucket`]).
///
/// Keyed: each table draws its own keys when it is made (from std's
/// `RandomState`, whose keys come from the OS once per process), so a
/// client cannot choose 5-tuples that all land in one bucket (hash
/// flooding) without knowing them. Three folded multiplies (the 128-bit
/// product's halves XORed, as foldhash and wyhash do): every input bit
/// reaches every output bit, and for an IPv4 key, whose words 0 and 2 are
/// zero, the first is a constant of the table.
#[derive(Debug, Clone, Copy)]
pub struct FlowHasher {
    k: [u64; 4],
    /// `folded_mul(k[0], k[1])`: the first step for an IPv4 key.
    v4_first: u64,
}

impl FlowHasher {
    /// A hasher with keys derived from `seed` (tests and benchmarks that
    /// need the same placement every run).
    pub fn with_seed(seed: u64) -> FlowHasher {
        // The first three keys are random; the last multiplier stays a
        // fixed constant (digits of pi): a random multiplier is sometimes a
        // poor one (a small high word spreads structured keys, such as one
        // client's ports, over fewer tags), while the keyed value it
        // multiplies already depends on every key.
        let k = [
            0x243f_6a88_85a3_08d3 ^ fmix64(seed),
            0x1319_8a2e_0370_7344 ^ fmix64(seed ^ 0x9e37_79b9_7f4a_7c15),
            0xa409_3822_299f_31d0 ^ fmix64(seed ^ 0x3c6e_f372_fe94_f82a),
            0x082e_fa98_ec4e_6c89,
        ];
        FlowHasher {
            k,
            v4_first: folded_mul(k[0], k[1]),
        }
    }

    /// A hasher with random keys, different for every call.
    pub fn random() -> FlowHasher {
        use std::hash::BuildHasher;
        // Each RandomState has its own keys: random per process, then
        // incremented per instance.
        FlowHasher::with_seed(std::collections::hash_map::RandomState::new().hash_one(0u64))
    }

    /// The hash of `key`.
    #[inline]
    pub fn hash(&self, key: &FlowKey) -> u64 {
        self.hash_words(&key.words())
    }

    /// The hash of a key given as its [`FlowKey::words`].
    #[inline]
    pub fn hash_words(&self, w: &[u64; 5]) -> u64 {
        let m = folded_mul(w[0] ^ self.k[0], w[2] ^ self.k[1]);
        let m = folded_mul(w[1] ^ m, w[3] ^ self.k[2]);
        folded_mul(m ^ w[4], self.k[3])
    }

    /// [`FlowHasher::hash_words`] of an IPv4 key `[0, w1, 0, w3, w4]` (the
    /// fast path builds the words straight from the frame).
    #[inline(always)]
    pub fn hash_v4(&self, w1: u64, w3: u64, w4: u64) -> u64 {
        let m = folded_mul(w1 ^ self.v4_first, w3 ^ self.k[2]);
        folded_mul(m ^ w4, self.k[3])
    }
}

impl FlowKey {
    /// The key as the five words a slot stores: both addresses as
    /// [`Ip16::words`], then `sport << 32 | dport << 16 | proto`.
    #[inline]
    pub fn words(&self) -> [u64; 5] {
        let s = self.src.words();
        let d = self.dst.words();
        [
            s[0],
            s[1],
            d[0],
            d[1],
            (u64::from(self.sport) << 32) | (u64::from(self.dport) << 16) | u64::from(self.proto),
        ]
    }

    #[inline]
    pub(super) fn from_words(w: [u64; 5]) -> FlowKey {
        FlowKey {
            src: Ip16::from_words([w[0], w[1]]),
            dst: Ip16::from_words([w[2], w[3]]),
            sport: (w[4] >> 32) as u16,
            dport: (w[4] >> 16) as u16,
            proto: w[4] as u8,
        }
    }
}

/// The key word an IPv4 address takes: the high word of its
/// [`Ip16::words`] (`::ffff:a.b.c.d`: the address in the high half, in
/// the byte order it lies in a frame; `0xffff_0000` in the low half). The
/// fast paths build keys from frames with it.
#[inline(always)]
pub fn v4_word(a: [u8; 4]) -> u64 {
    0xffff_0000 | (u64::from(u32::from_le_bytes(a)) << 32)
}

/// The 128-bit product of `a` and `b`, its halves XORed.
#[inline(always)]
fn folded_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}
