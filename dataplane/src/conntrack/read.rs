//! Reading the table: look-ups by any worker (under each slot's sequence
//! lock, with a retry when an entry moved between its buckets meanwhile),
//! the owner's fast-path view of its own shard (prefetches and reads
//! without the lock), and dumps.
//!
//! Invariant: nothing here writes a key, a translation or a form; the
//! only writes are the counts, last-seen times and flag bits of the entry a
//! packet matched.

use std::sync::atomic::{fence, Ordering};

use hashbrown::HashMap;

use super::entry::{flags, FlowData, FlowRecord, Kind};
use super::key::FlowKey;
use super::slot::{FastHit, Slot};
use super::tags::{alt_bucket, tag_of, BucketTags, Tags};
use super::{Conntrack, Shard, ShardWriter, NO_SLOT, WAYS};
use crate::prefetch::prefetch;

impl Shard {
    /// The entry keyed `key` (hash `hash`): in its first bucket, or else in
    /// its second. Exact for the owner; another worker may miss an entry the
    /// owner is moving meanwhile ([`Shard::find_stable`]).
    #[inline]
    pub(super) fn find(&self, key: &FlowKey, hash: u64) -> Option<(usize, FlowData, u64)> {
        // (Tags first, inline: a key that is not there, as every new
        // flow's are, costs two vector compares and no call.)
        let b = self.bucket(hash);
        let tag = tag_of(hash);
        let ways = self.tags.matches(b, tag, Ordering::Acquire);
        if ways != 0 {
            if let Some(hit) = self.read_ways(b, ways, key) {
                return Some(hit);
            }
        }
        let b2 = alt_bucket(b, tag, self.mask);
        if b2 == b {
            return None;
        }
        let ways = self.tags.matches(b2, tag, Ordering::Acquire);
        if ways == 0 {
            return None;
        }
        self.read_ways(b2, ways, key)
    }

    /// The slot among `ways` (a bit per way) of bucket `b` that holds `key`.
    fn read_ways(&self, b: usize, mut ways: u32, key: &FlowKey) -> Option<(usize, FlowData, u64)> {
        while ways != 0 {
            let i = b * WAYS + ways.trailing_zeros() as usize;
            ways &= ways - 1;
            if let Some((_, d, last)) = self.slots.get(i).and_then(|s| s.read(Some(key))) {
                return Some((i, d, last));
            }
        }
        None
    }

    /// [`Shard::find`] for a reader that is not the owner: a miss counts
    /// only if no entry moved between buckets while it looked (a moving
    /// entry is copied to its other bucket before it leaves the first, but
    /// a reader could look at the destination before and the source after).
    pub(super) fn find_stable(&self, key: &FlowKey, hash: u64) -> Option<(usize, FlowData, u64)> {
        for _ in 0..4 {
            let m = self.moves.load(Ordering::Acquire);
            if m & 1 == 0 {
                if let Some(hit) = self.find(key, hash) {
                    return Some(hit);
                }
                fence(Ordering::Acquire);
                if self.moves.load(Ordering::Relaxed) == m {
                    return None;
                }
            }
            std::hint::spin_loop();
        }
        self.find(key, hash)
    }
}

/// A hit in the table.
#[derive(Debug, Clone, Copy)]
pub struct Hit {
    /// Shard (worker) that owns the entry.
    pub shard: usize,
    /// Slot index within the shard.
    pub slot: usize,
    /// The entry.
    pub data: FlowData,
    /// When a packet last matched it (ns).
    pub last_seen: u64,
}

/// One shard's arrays, looked up once per batch by the fast path of the
/// shard's writer ([`Conntrack::owner_view`]).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ShardView<'a> {
    tags: &'a [BucketTags],
    slots: &'a [Slot],
    mask: usize,
}

impl<'a> ShardView<'a> {
    /// Prefetch the tag line a lookup of `hash` will read (the first stage of a
    /// batch; [`ShardView::probe`] follows once the line has arrived).
    #[inline(always)]
    pub fn prefetch(&self, hash: u64) {
        if let Some(w) = self.tags.get((hash as usize) & self.mask) {
            prefetch(w);
        }
    }

    /// The first slot of `hash`'s bucket whose tag matches (or [`NO_SLOT`]),
    /// with its first cache line prefetched, which is all the fast path
    /// reads of a line-form entry (for a frame bound for the slow path, the
    /// caller prefetches the second, [`ShardView::prefetch_second`]): the second
    /// stage of a batch's prefetching, run after [`ShardView::prefetch`]
    /// had time to bring the tag line in. The slot is only a candidate: its
    /// key is checked when it is read ([`ShardView::read_v4`]). With no
    /// match, both lines of the first free slot are prefetched: likely a new
    /// flow, whose forward entry goes there.
    #[inline(always)]
    pub fn probe(&self, hash: u64) -> usize {
        let b = (hash as usize) & self.mask;
        let Some(words) = self.tags.get(b) else {
            return NO_SLOT;
        };
        let hits = Tags::matches_in(words, tag_of(hash), Ordering::Acquire);
        let hit = hits != 0;
        let way = if hit {
            hits.trailing_zeros() as usize
        } else {
            let free = Tags::matches_in(words, 0, Ordering::Relaxed);
            if free == 0 {
                return NO_SLOT;
            }
            free.trailing_zeros() as usize
        };
        let i = b * WAYS + way;
        if let Some(slot) = self.slots.get(i) {
            slot.prefetch(!hit);
        }
        if hit {
            i
        } else {
            NO_SLOT
        }
    }

    /// Prefetch the second line of slot `slot` (none for [`NO_SLOT`]).
    #[inline(always)]
    pub fn prefetch_second(&self, slot: usize) {
        if let Some(slot) = self.slots.get(slot) {
            slot.prefetch_second();
        }
    }

    /// Prefetch the tag line of `hash`'s second bucket: the first probe does it
    /// for frames whose first bucket held no candidate, so that
    /// [`ShardView::probe_alt`] (and the slow path's look-ups) find it in.
    #[inline(always)]
    pub fn prefetch_alt(&self, hash: u64) {
        let b = (hash as usize) & self.mask;
        let b2 = alt_bucket(b, tag_of(hash), self.mask);
        if b2 != b {
            if let Some(w) = self.tags.get(b2) {
                prefetch(w);
            }
        }
    }

    /// [`ShardView::probe`] of `hash`'s second bucket, for a frame whose
    /// first bucket had no candidate: the first slot there whose tag matches
    /// (prefetched), or [`NO_SLOT`].
    #[inline]
    pub fn probe_alt(&self, hash: u64) -> usize {
        let b = (hash as usize) & self.mask;
        let tag = tag_of(hash);
        let b2 = alt_bucket(b, tag, self.mask);
        if b2 == b {
            return NO_SLOT;
        }
        let Some(words) = self.tags.get(b2) else {
            return NO_SLOT;
        };
        let hits = Tags::matches_in(words, tag, Ordering::Acquire);
        if hits == 0 {
            return NO_SLOT;
        }
        let i = b2 * WAYS + hits.trailing_zeros() as usize;
        if let Some(slot) = self.slots.get(i) {
            slot.prefetch(true);
        }
        i
    }

    /// Whether `hash`'s first bucket has a free way (without one, a new
    /// entry most likely needs the general insert's moves or an eviction).
    #[inline(always)]
    pub fn has_room(&self, hash: u64) -> bool {
        self.tags
            .get((hash as usize) & self.mask)
            .is_some_and(|w| Tags::matches_in(w, 0, Ordering::Relaxed) != 0)
    }

    /// Read slot `slot` if it holds the IPv4 key `[0, w1, 0, w3, w4]`
    /// ([`FlowKey::words`]); `None` for [`NO_SLOT`]. Only the shard's
    /// writer reads this way ([`Conntrack::owner_view`]).
    #[inline(always)]
    pub fn read_v4(&self, slot: usize, w1: u64, w3: u64, w4: u64) -> Option<FastHit<'a>> {
        self.slots.get(slot)?.read_v4_owned(w1, w3, w4)
    }
}

/// A tracked flow, for dumps (`config/conntrack/all`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowInfo {
    /// The entry's key.
    pub key: FlowKey,
    /// The entry.
    pub data: FlowData,
    /// Packets that matched it.
    pub packets: u64,
    /// Bytes that matched it.
    pub bytes: u64,
    /// Last match (ns, monotonic).
    pub last_seen: u64,
}

impl Conntrack {
    /// Look a key up in shard `shard`.
    #[inline]
    pub fn find_in(&self, shard: usize, key: &FlowKey, hash: u64) -> Option<Hit> {
        let s = self.shards.get(shard)?;
        s.find(key, hash).map(|(slot, data, last_seen)| Hit {
            shard,
            slot,
            data,
            last_seen,
        })
    }

    /// Look a key up in every shard but `except` (cross-queue replies).
    #[inline]
    pub fn find_elsewhere(&self, except: usize, key: &FlowKey, hash: u64) -> Option<Hit> {
        (0..self.shards.len())
            .filter(|&i| i != except)
            .find_map(|i| {
                let s = self.shards.get(i)?;
                s.find_stable(key, hash).map(|(slot, data, last_seen)| Hit {
                    shard: i,
                    slot,
                    data,
                    last_seen,
                })
            })
    }

    /// The arrays of `w`'s shard, for the fast path's lookups on the
    /// thread that holds `w` (its reads skip the sequence check that other
    /// threads' reads need: see [`ShardView::read_v4`]). `None` if `w` is
    /// another table's writer.
    #[inline]
    pub(crate) fn owner_view(&self, w: &ShardWriter) -> Option<ShardView<'_>> {
        if !std::ptr::eq(self, &*w.ct) {
            return None;
        }
        let s = self.shards.get(w.me)?;
        Some(ShardView {
            tags: &s.tags.0,
            slots: &s.slots,
            mask: s.mask,
        })
    }

    /// Count a packet of `bytes` on a hit entry and refresh its last-seen time.
    /// Called by whichever worker received the packet; each direction of a flow
    /// arrives on one queue, so every entry has a single writer here too.
    #[inline]
    pub fn touch(&self, hit: &Hit, now: u64, bytes: u64) {
        self.touch_at(hit.shard, hit.slot, hit.last_seen, now, bytes);
    }

    #[inline]
    fn touch_at(&self, shard: usize, slot: usize, last_seen: u64, now: u64, bytes: u64) {
        if let Some(slot) = self.shards.get(shard).and_then(|s| s.slots.get(slot)) {
            slot.touch(last_seen, now, bytes);
        }
    }

    /// Record flag bits on a hit entry (any worker; atomic OR, only when new).
    #[inline]
    pub fn add_flags(&self, hit: &Hit, f: u8) {
        self.add_flags_at(hit.shard, hit.slot, hit.data.flags, f);
    }

    #[inline]
    fn add_flags_at(&self, shard: usize, slot: usize, have: u8, f: u8) {
        if have & f != f {
            if let Some(slot) = self.shards.get(shard).and_then(|s| s.slots.get(slot)) {
                slot.add_flags(f);
            }
        }
    }

    /// Every entry, as the table stores them (shard by shard, slot by
    /// slot), with its counters: for diagnostics. Allocates: control plane
    /// only.
    pub fn dump(&self) -> Vec<FlowInfo> {
        let mut out = Vec::new();
        for s in self.shards.iter() {
            for (i, slot) in s.slots.iter().enumerate() {
                if s.tags.get(i, Ordering::Relaxed) == 0 {
                    continue;
                }
                if let Some((key, data, last_seen)) = slot.read(None) {
                    let (packets, bytes) = slot.counters();
                    out.push(FlowInfo {
                        key,
                        data,
                        packets,
                        bytes,
                        last_seen,
                    });
                }
            }
        }
        out
    }

    /// Every flow, as one record each (its forward entry with its reply
    /// entry, if any): what a node would hand another. Allocates: control
    /// plane only. A reply entry whose forward entry is gone (a flow being
    /// removed as the dump reads it) is left out.
    pub fn flows(&self) -> Vec<FlowRecord> {
        let entries = self.dump();
        let replies: HashMap<FlowKey, &FlowData> = entries
            .iter()
            .filter(|e| e.data.kind == Kind::Reply)
            .map(|e| (e.key, &e.data))
            .collect();
        entries
            .iter()
            .filter(|e| e.data.kind == Kind::Forward)
            .map(|e| {
                let rep = replies.get(&e.data.partner_key(e.key.proto)).copied();
                FlowRecord::from_entries(&e.key, &e.data, rep)
            })
            .collect()
    }

    /// Every flow once, as connection sync hands it to another member
    /// ([`crate::sync::dump`]): a node keeps a copy per worker of each
    /// flow another member sent it, so the copies are merged (their flag
    /// bits together, their last packet the latest of any). With `since`
    /// (ns, the workers' clock), only the flows this node forwarded packets
    /// of (some copy's forward entry has [`flags::SEEN`]: not the copies
    /// other members sent that saw no packet here, which a member that
    /// re-sent its recent flows would otherwise send back) and saw a
    /// packet of at or after `since`. Allocates: control plane only.
    pub fn sync_flows(&self, since: Option<u64>) -> Vec<FlowRecord> {
        let entries = self.dump();
        // Reply key -> (flags of every copy, latest last-seen, one copy).
        let mut replies: HashMap<FlowKey, (u8, u64, &FlowData)> = HashMap::new();
        for e in entries.iter().filter(|e| e.data.kind == Kind::Reply) {
            let r = replies.entry(e.key).or_insert((0, 0, &e.data));
            r.0 |= e.data.flags;
            r.1 = r.1.max(e.last_seen);
        }
        // Forward key -> (the merged record, latest last-seen).
        let mut flows: HashMap<FlowKey, (FlowRecord, u64)> = HashMap::new();
        for e in entries.iter().filter(|e| e.data.kind == Kind::Forward) {
            let rep = replies.get(&e.data.partner_key(e.key.proto));
            let last = e.last_seen.max(rep.map_or(0, |r| r.1));
            flows
                .entry(e.key)
                .and_modify(|(r, l)| {
                    r.fwd_flags |= e.data.flags;
                    *l = (*l).max(last);
                })
                .or_insert_with(|| {
                    let mut r = FlowRecord::from_entries(&e.key, &e.data, rep.map(|r| r.2));
                    r.rep_flags = rep.map_or(0, |r| r.0);
                    (r, last)
                });
        }
        flows
            .into_values()
            .filter(|(r, last)| since.is_none_or(|s| r.fwd_flags & flags::SEEN != 0 && *last >= s))
            .map(|(r, _)| r)
            .collect()
    }
}
