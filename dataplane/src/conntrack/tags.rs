//! The 16-bit tags that say which slots of a bucket may hold a key, and
//! the two buckets a key may sit in (partial-key cuckoo hashing).
//!
//! Invariants: tag 0 marks an empty slot, so every key's tag is odd
//! ([`tag_of`]); only a shard's owner writes its tags, a lane at a time,
//! and readers load whole words.

use std::sync::atomic::{AtomicU64, Ordering};

use super::WAYS;

/// The 16-bit tags of a shard's slots (0 = empty), a bucket's eight in two
/// atomic words, so that matching a bucket is two loads and one vector
/// compare (SWAR where there is no SSE2), without a data-dependent branch
/// per way. Only the shard's owner writes them (a lane update is a load and
/// a store of its word); readers load whole words.
#[derive(Debug)]
pub(super) struct Tags(pub(super) Box<[BucketTags]>);

/// One bucket's tags: way `w` is lane `w % 4` (bits `16 * (w % 4)..`) of word `w / 4`.
pub(super) type BucketTags = [AtomicU64; 2];

const LANES: usize = 4;

impl Tags {
    pub(super) fn new(slots: usize) -> Tags {
        Tags(crate::hugemem::slice(slots.div_ceil(WAYS), || {
            [AtomicU64::new(0), AtomicU64::new(0)]
        }))
    }

    /// The word holding slot `i`'s tag, and the tag's shift in it.
    #[inline]
    pub(super) fn word(&self, i: usize) -> Option<(&AtomicU64, usize)> {
        let w = self.0.get(i / WAYS)?.get(i % WAYS / LANES)?;
        Some((w, 16 * (i % LANES)))
    }

    /// Tag of slot `i` (0 for a slot out of range: empty).
    #[inline]
    pub(super) fn get(&self, i: usize, order: Ordering) -> u16 {
        self.word(i)
            .map_or(0, |(w, shift)| (w.load(order) >> shift) as u16)
    }

    /// Owner only: set the tag of slot `i`.
    #[inline]
    pub(super) fn set(&self, i: usize, tag: u16) {
        if let Some((w, shift)) = self.word(i) {
            let v = w.load(Ordering::Relaxed) & !(0xffff << shift);
            w.store(v | (u64::from(tag) << shift), Ordering::Release);
        }
    }

    /// Bit `w` set for each way `w` of bucket `b` whose tag equals `tag`
    /// (`tag` 0: the free ways).
    #[inline]
    pub(super) fn matches(&self, b: usize, tag: u16, order: Ordering) -> u32 {
        self.0
            .get(b)
            .map_or(0, |words| Tags::matches_in(words, tag, order))
    }

    /// [`Tags::matches`] on a bucket's words.
    #[inline(always)]
    pub(super) fn matches_in(words: &BucketTags, tag: u16, order: Ordering) -> u32 {
        crate::simd::eq_lanes16(words[0].load(order), words[1].load(order), tag)
    }

    /// Way of bucket `b` holding the first tag equal to `tag` (nonzero).
    #[cfg(test)]
    pub(super) fn first_match(&self, b: usize, tag: u16) -> Option<usize> {
        let m = self.matches(b, tag, Ordering::Acquire);
        (m != 0).then(|| m.trailing_zeros() as usize)
    }
}

#[inline]
pub(super) fn tag_of(hash: u64) -> u16 {
    ((hash >> 48) as u16) | 1
}

/// The other bucket of an entry with tag `tag` in bucket `b` (of a shard
/// with bucket mask `mask`): every key may sit in its first bucket (its
/// hash's low bits) or in this one. It follows from the tag alone, so the
/// owner can move an entry to its other bucket without reading the entry's
/// key (partial-key cuckoo hashing, as cuckoo filters do); applied twice it
/// gives `b` back. Never `b` itself unless the shard has one bucket.
#[inline(always)]
pub(super) fn alt_bucket(b: usize, tag: u16, mask: usize) -> usize {
    let o = (u64::from(tag).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as usize & mask;
    b ^ ((o | usize::from(o == 0)) & mask)
}
