//! Writing the table: a shard's owner inserts flows (as [`FlowRecord`]s,
//! or [`NewFlowV4`]s on the new-flow path), makes room by moving entries to
//! their other buckets or evicting, refreshes entries after a table change,
//! and expires idle flows.
//!
//! Invariants: only the shard's owner (the one [`ShardWriter`]) runs any of
//! this; a flow's entries are inserted and removed together (a reply entry
//! that cannot be placed takes its forward entry out again); an entry moves
//! to its other bucket copied first, so a reader never misses it for long
//! ([`Shard::moves`] tells it to look again).

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use super::entry::{flags, flow_timeout_ns, mode, FlowData, FlowRecord, Kind, NewFlowV4, Removed};
use super::key::FlowKey;
use super::slot::{v4_deltas, LinePair};
use super::tags::{alt_bucket, tag_of};
use super::{Conntrack, Shard, WAYS};
use crate::wire::proto;
use crate::wire::rewrite::reverse_deltas;

/// Write access to one shard; owned by its worker.
#[derive(Debug)]
pub struct ShardWriter {
    pub(super) ct: Arc<Conntrack>,
    pub(super) me: usize,
    gc_cursor: usize,
}

/// What the caller of [`ShardWriter::insert_hashed`] already knows of a
/// flow's keys: the table's hash of each ([`Conntrack::hash`]; the reply's
/// is ignored for a flow without one) and whether it knows each absent from
/// the shard (then the look-up for an entry to overwrite is skipped).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hashed {
    /// Hash of the forward key.
    pub fwd: u64,
    /// The forward key is not in the shard.
    pub fwd_absent: bool,
    /// Hash of the reply key.
    pub rep: u64,
    /// The reply key is not in the shard.
    pub rep_absent: bool,
}

/// Why [`ShardWriter::insert_new_v4`] left a flow to the general insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decline {
    /// A tag of either key in either of its buckets (an entry to
    /// overwrite, or another key with the same tag), or a reply key equal
    /// to the forward key.
    Collision,
    /// No free way for either entry (moves or an eviction needed).
    NoRoom,
    /// An endpoint id the line form cannot hold.
    Wide,
}

/// The insert could not find room (every candidate was protected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl ShardWriter {
    /// The writer of shard `me` of `ct`.
    pub(super) fn new(ct: Arc<Conntrack>, me: usize) -> ShardWriter {
        ShardWriter {
            ct,
            me,
            gc_cursor: 0,
        }
    }

    /// Buckets in this writer's shard.
    pub fn buckets(&self) -> usize {
        self.shard_ref().mask + 1
    }

    /// This writer's shard index.
    pub fn shard(&self) -> usize {
        self.me
    }

    /// The table (for reads in any shard).
    pub fn table(&self) -> &Conntrack {
        &self.ct
    }

    /// The table, shared.
    pub fn table_arc(&self) -> &Arc<Conntrack> {
        &self.ct
    }

    fn shard_ref(&self) -> &Shard {
        &self.ct.shards[self.me]
    }

    /// Install `flow`: its forward entry and, if it has one, its reply
    /// entry; an entry already keyed like either is overwritten. Flows
    /// evicted to make room are passed to `on_removed` (to release what
    /// they held). Returns the forward entry's slot.
    pub fn insert(
        &mut self,
        flow: &FlowRecord,
        now: u64,
        on_removed: &mut dyn FnMut(Removed),
    ) -> Result<usize, Full> {
        let rep = flow.reply().map_or(0, |(rkey, _)| self.ct.hash(&rkey));
        let at = Hashed {
            fwd: self.ct.hash(&flow.key),
            fwd_absent: false,
            rep,
            rep_absent: false,
        };
        self.insert_hashed(flow, &flow.forward(), &at, now, on_removed)
            .map(|(slot, _)| slot)
    }

    /// [`ShardWriter::insert`] with what the caller already knows of the
    /// keys ([`Hashed`]) and the forward entry, `fwd` (`flow.forward()`,
    /// which the general path builds anyway to rewrite the packet by).
    /// Returns the forward entry's slot and, for an IPv4 flow that is not
    /// DSR, its rewrite's checksum changes
    /// ([`crate::wire::rewrite::fast_deltas`]).
    #[inline(always)]
    pub(crate) fn insert_hashed(
        &mut self,
        flow: &FlowRecord,
        fwd: &FlowData,
        at: &Hashed,
        now: u64,
        on_removed: &mut dyn FnMut(Removed),
    ) -> Result<(usize, Option<u32>), Full> {
        debug_assert_eq!(*fwd, flow.forward());
        let fdeltas = v4_deltas(&flow.key, &flow.xlat, flow.mode);
        let fslot = self.insert_one(
            &flow.key,
            at.fwd,
            at.fwd_absent,
            fwd,
            fdeltas,
            now,
            None,
            on_removed,
        )?;
        if let Some((rkey, rep)) = flow.reply_of(fwd) {
            // The reply undoes the forward rewrite: its checksum changes
            // are the forward's reversed. (A reply key equal to the
            // forward key is there now.)
            let absent = at.rep_absent && rkey != flow.key;
            let rdeltas = fdeltas.map(|d| u64::from(reverse_deltas(d as u32)));
            debug_assert_eq!(rdeltas, v4_deltas(&rkey, &rep.xlat(), rep.mode));
            let placed = self.insert_one(
                &rkey,
                at.rep,
                absent,
                &rep,
                rdeltas,
                now,
                Some(fslot),
                on_removed,
            );
            if let Err(e) = placed {
                self.clear_slot(fslot);
                return Err(e);
            }
        }
        Ok((fslot, fdeltas.map(|d| d as u32)))
    }

    /// The new-flow path's insert of an IPv4 flow (keys hashed `fwd_hash`
    /// and `rep_hash`), for the common case only: both keys absent and a
    /// free slot for each in one of its buckets. It places the entries
    /// where [`ShardWriter::insert`] would (the forward entry first: the
    /// first free way of its first bucket, else of its second; then the
    /// reply likewise), in the line form, and returns the forward entry's
    /// slot and its rewrite's checksum changes
    /// ([`crate::wire::rewrite::fast_deltas`]). A [`Decline`], with nothing
    /// changed, leaves the flow to the general insert.
    #[inline]
    pub(crate) fn insert_new_v4(
        &mut self,
        f: &NewFlowV4,
        fwd_hash: u64,
        rep_hash: u64,
        now: u64,
    ) -> Result<(usize, u32), Decline> {
        let s = self.shard_ref();
        debug_assert_eq!(fwd_hash, self.ct.hash(&FlowRecord::from(f).key));
        debug_assert_eq!(
            Some(rep_hash),
            FlowRecord::from(f).reply().map(|(k, _)| self.ct.hash(&k))
        );
        let (k, x) = (&f.key, &f.xlat);
        if (x.dst, x.src, x.dport, x.sport) == (k.src, k.dst, k.sport, k.dport) {
            return Err(Decline::Collision);
        }
        if !LinePair::fits(f) {
            return Err(Decline::Wide);
        }
        let (fb1, ftag) = (s.bucket(fwd_hash), tag_of(fwd_hash));
        let fb2 = alt_bucket(fb1, ftag, s.mask);
        let (rb1, rtag) = (s.bucket(rep_hash), tag_of(rep_hash));
        let rb2 = alt_bucket(rb1, rtag, s.mask);
        let tagged = |b: usize, tag: u16| s.tags.matches(b, tag, Ordering::Relaxed);
        if tagged(fb1, ftag) | tagged(fb2, ftag) | tagged(rb1, rtag) | tagged(rb2, rtag) != 0 {
            return Err(Decline::Collision);
        }
        let fi = self
            .free_way(fb1)
            .or_else(|| self.free_way(fb2))
            .ok_or(Decline::NoRoom)?;
        // The reply's free ways, but the one the forward entry takes.
        let free = |b: usize| {
            let mut m = s.tags.matches(b, 0, Ordering::Relaxed);
            if b == fi / WAYS {
                m &= !(1 << (fi % WAYS));
            }
            (m != 0).then(|| b * WAYS + m.trailing_zeros() as usize)
        };
        let ri = free(rb1).or_else(|| free(rb2)).ok_or(Decline::NoRoom)?;
        let (Some(fslot), Some(rslot)) = (s.slots.get(fi), s.slots.get(ri)) else {
            return Err(Decline::NoRoom);
        };
        // (The words are made only now: all the search above keeps fewer
        // values live.)
        let pair = LinePair::of(f);
        pair.write(fslot, rslot, now);
        s.tags.set(fi, ftag);
        s.tags.set(ri, rtag);
        crate::counters::bump(&s.used, 2);
        Ok((fi, pair.deltas))
    }

    /// Place one entry (`d`, with its checksum changes if it takes the
    /// line form) keyed `key` (hash `hash`; `absent`: known not to be in
    /// the shard), overwriting an entry with the same key, else in a free
    /// way of either bucket, else after moves or an eviction. The slot
    /// `protect` (the flow's other entry) is neither moved nor evicted.
    // (The key, its hash and `absent` are separate arguments, not a struct
    // passed by reference: every flow the general path inserts calls this
    // twice, and reading them back from the struct cost loads each time.)
    #[allow(clippy::too_many_arguments)]
    fn insert_one(
        &mut self,
        key: &FlowKey,
        hash: u64,
        absent: bool,
        d: &FlowData,
        deltas: Option<u64>,
        now: u64,
        protect: Option<usize>,
        on_removed: &mut dyn FnMut(Removed),
    ) -> Result<usize, Full> {
        debug_assert_eq!(hash, self.ct.hash(key));
        debug_assert_eq!(deltas, v4_deltas(key, &d.xlat(), d.mode));
        let (b1, b2, tag) = {
            let s = self.shard_ref();
            let b1 = s.bucket(hash);
            let tag = tag_of(hash);
            (b1, alt_bucket(b1, tag, s.mask), tag)
        };
        // Same key already present (e.g. a stale entry): overwrite it.
        if absent {
            debug_assert!(
                self.shard_ref().find(key, hash).is_none(),
                "{key:?} is present"
            );
        } else if let Some((i, _, _)) = self.shard_ref().find(key, hash) {
            self.shard_ref().slots[i].write(key, d, deltas, now);
            return Ok(i);
        }
        // The first bucket if it has room (so that most keys are found in
        // the bucket looked at first), else the second, else make room by
        // moving entries to their other buckets; evict only if that fails.
        let free = self
            .free_way(b1)
            .or_else(|| self.free_way(b2))
            .or_else(|| self.make_room(b1, b2, protect));
        let idx = match free {
            Some(i) => i,
            None => {
                let victim = self.pick_victim(b1 * WAYS, now, protect).ok_or(Full)?;
                if let Some(r) = self.remove_pair(victim, true) {
                    on_removed(r);
                }
                self.free_way(b1)
                    .or_else(|| self.free_way(b2))
                    .ok_or(Full)?
            }
        };
        let s = self.shard_ref();
        s.slots[idx].write(key, d, deltas, now);
        s.tags.set(idx, tag);
        // Only the owner writes `used` (readers sum it): no locked add needed.
        crate::counters::bump(&s.used, 1);
        Ok(idx)
    }

    /// The first free slot of bucket `b`.
    fn free_way(&self, b: usize) -> Option<usize> {
        let free = self.shard_ref().tags.matches(b, 0, Ordering::Relaxed);
        (free != 0).then(|| b * WAYS + free.trailing_zeros() as usize)
    }

    /// Both buckets of a new entry, `b1` and `b2`, are full: free a slot in
    /// one of them by moving an entry to its other bucket, or an entry of
    /// that bucket to its own other bucket first (a breadth-first search two
    /// moves deep, over the tags alone). The slot `protect` stays where it
    /// is. Not tried in a shard over 31/32 full (97 %): a flood of new
    /// flows into a full table evicts anyway, and would otherwise pay for a
    /// search on every insert to keep the table a little fuller.
    fn make_room(&self, b1: usize, b2: usize, protect: Option<usize>) -> Option<usize> {
        let s = self.shard_ref();
        let used = s.used.load(Ordering::Relaxed) as usize;
        if used * 32 >= s.slots.len() * 31 {
            return None;
        }
        // (slot, its other bucket) of the entries one move away.
        let mut first = [(0usize, 0usize); 2 * WAYS];
        let mut n = 0;
        let buckets = if b1 == b2 { &[b1][..] } else { &[b1, b2][..] };
        for &b in buckets {
            for i in b * WAYS..(b + 1) * WAYS {
                if Some(i) == protect {
                    continue;
                }
                let alt = alt_bucket(b, s.tags.get(i, Ordering::Relaxed), s.mask);
                if alt == b {
                    continue;
                }
                if let Some(j) = self.free_way(alt) {
                    self.move_entry(i, j);
                    return Some(i);
                }
                first[n] = (i, alt);
                n += 1;
            }
        }
        for &(i, alt) in &first[..n] {
            for k in alt * WAYS..(alt + 1) * WAYS {
                if Some(k) == protect {
                    continue;
                }
                let alt2 = alt_bucket(alt, s.tags.get(k, Ordering::Relaxed), s.mask);
                if alt2 == alt {
                    continue;
                }
                if let Some(j) = self.free_way(alt2) {
                    self.move_entry(k, j);
                    self.move_entry(i, k);
                    return Some(i);
                }
            }
        }
        None
    }

    /// Move the entry in slot `from` to the free slot `to` (its other
    /// bucket). Readers in other workers see it in `to` before it leaves
    /// `from`; [`Shard::moves`] tells one that looked at `to` too early.
    fn move_entry(&self, from: usize, to: usize) {
        let s = self.shard_ref();
        let (Some(src), Some(dst)) = (s.slots.get(from), s.slots.get(to)) else {
            return;
        };
        let m = s.moves.load(Ordering::Relaxed);
        s.moves.store(m.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        let tag = s.tags.get(from, Ordering::Relaxed);
        dst.copy_from(src);
        s.tags.set(to, tag);
        s.tags.set(from, 0);
        src.clear();
        s.moves.store(m.wrapping_add(2), Ordering::Release);
    }

    fn pick_victim(&self, base: usize, now: u64, protect: Option<usize>) -> Option<usize> {
        let mut best: Option<(u8, u64, usize)> = None;
        for i in base..base + WAYS {
            if Some(i) == protect {
                continue;
            }
            let Some(v) = self.flow_view(i) else { continue };
            let rank = if now.saturating_sub(v.last) > v.timeout_ns {
                0
            } else if !(v.proto == proto::TCP && v.established) {
                1
            } else {
                2
            };
            if best.is_none_or(|(r, l, _)| (rank, v.last) < (r, l)) {
                best = Some((rank, v.last, i));
            }
        }
        best.map(|(_, _, i)| i)
    }

    /// Whether the flow of slot `i` has been idle (in both directions) for
    /// longer than its timeout.
    pub fn is_expired(&self, i: usize, now: u64) -> bool {
        self.flow_view(i)
            .is_some_and(|v| now.saturating_sub(v.last) > v.timeout_ns)
    }

    /// The flow that slot `i` belongs to, seen through both of its entries.
    fn flow_view(&self, i: usize) -> Option<FlowView> {
        let s = self.shard_ref();
        if s.tags.get(i, Ordering::Relaxed) == 0 {
            return None;
        }
        let (key, d, last) = s.slots[i].read(None)?;
        let pk = d.partner_key(key.proto);
        let (plast, pflags) = s
            .find(&pk, self.ct.hash(&pk))
            .map_or((0, 0), |(_, pd, pl)| (pl, pd.flags));
        let (fwd, rep) = match d.kind {
            Kind::Forward => (d.flags, pflags),
            Kind::Reply => (pflags, d.flags),
        };
        Some(FlowView {
            proto: key.proto,
            last: last.max(plast),
            timeout_ns: flow_timeout_ns(d.timeout_s, key.proto, d.mode, fwd, rep),
            established: rep & flags::SEEN != 0 || (mode::is_dsr(d.mode) && fwd & flags::ACK != 0),
        })
    }

    fn clear_slot(&self, i: usize) {
        let s = self.shard_ref();
        if s.tags.get(i, Ordering::Relaxed) != 0 {
            s.tags.set(i, 0);
            s.slots[i].clear();
            let u = &s.used;
            u.store(u.load(Ordering::Relaxed).wrapping_sub(1), Ordering::Relaxed);
        }
    }

    /// Owner only: empty the whole shard in place (its memory is kept, so
    /// the next flows land in pages that are already mapped, as they do in
    /// a worker that runs for days). Flows dropped this way are not counted
    /// anywhere: for benchmarks and tests that need an empty table, not for
    /// expiry. Returns how many entries there were.
    pub fn clear(&mut self) -> u64 {
        let s = self.shard_ref();
        let before = s.used.load(Ordering::Relaxed);
        for i in 0..s.slots.len() {
            self.clear_slot(i);
        }
        before
    }

    /// Remove the entry in slot `i` and its partner. Returns the forward entry's data.
    pub fn remove_pair(&mut self, i: usize, early: bool) -> Option<Removed> {
        let (key, d, _) = self.shard_ref().slots.get(i)?.read(None)?;
        self.clear_slot(i);
        let pk = d.partner_key(key.proto);
        let mut fwd = if d.kind == Kind::Forward {
            Some(d)
        } else {
            None
        };
        if let Some((pi, pd, _)) = self.shard_ref().find(&pk, self.ct.hash(&pk)) {
            self.clear_slot(pi);
            if pd.kind == Kind::Forward {
                fwd = Some(pd);
            }
        }
        // (A reply entry's partner key is its flow's forward key.)
        let fwd_key = if d.kind == Kind::Forward { key } else { pk };
        Some(Removed {
            key: fwd_key,
            data: fwd.unwrap_or(d),
            early,
        })
    }

    /// Refresh the cached next hop and generation of an entry (after a table change).
    pub fn revalidate(&self, slot: usize, d: &FlowData) {
        if let Some(s) = self.shard_ref().slots.get(slot) {
            s.revalidate(d);
        }
    }

    /// Expire flows: examine up to `buckets` buckets from where the last call stopped.
    /// Returns the number of flows removed; each is passed to `on_removed`.
    pub fn expire(
        &mut self,
        now: u64,
        buckets: usize,
        on_removed: &mut dyn FnMut(Removed),
    ) -> usize {
        let nb = self.shard_ref().mask + 1;
        let mut removed = 0;
        for _ in 0..buckets.min(nb) {
            let b = self.gc_cursor;
            self.gc_cursor = (self.gc_cursor + 1) & (nb - 1);
            for i in b * WAYS..(b + 1) * WAYS {
                let Some(v) = self.flow_view(i) else { continue };
                if now.saturating_sub(v.last) > v.timeout_ns {
                    if let Some(r) = self.remove_pair(i, false) {
                        removed += 1;
                        on_removed(r);
                    }
                }
            }
        }
        removed
    }
}

/// A flow judged from both of its entries.
struct FlowView {
    proto: u8,
    last: u64,
    timeout_ns: u64,
    established: bool,
}
