//! Expiry pacing: how much of its shard a worker sweeps for idle flows
//! after each batch (or while idle), and what a removed flow releases.
//!
//! Invariant: a table is swept whole once per [`GC_SWEEP_NS`] (or more
//! slowly if it has more than [`GC_MAX_BUCKETS_PER_S`] buckets), in steps of
//! at most [`GC_MAX_BUCKETS`] buckets, so the cost per packet falls as the
//! packet rate rises and no batch waits long for the sweep. Sweeping late
//! is safe: a hit checks its flow's timeout itself, and a full bucket
//! evicts expired flows first.

use crate::conntrack::Removed;
use crate::counters::{bump, CounterBlock};
use crate::select::Selector;

use super::sync::{announce_end, SyncEnds};
use super::Pipeline;

/// The flow table is swept for expired flows once per this period; each
/// batch examines the share of buckets that the time since the last batch
/// calls for, so the cost per packet falls as the packet rate rises.
const GC_SWEEP_NS: u64 = 1_000_000_000;
/// Most buckets examined after one batch (bounds the latency of a batch).
const GC_MAX_BUCKETS: u64 = 256;
/// Most buckets swept per second: a table bigger than this is swept over
/// several seconds. Judging a flow reads its partner entry at a random place,
/// so sweeping a million-flow table (512 MiB) every second would take most of
/// a core in cache misses.
const GC_MAX_BUCKETS_PER_S: u64 = 65_536;

/// How long one sweep of a table of `buckets` takes: a second, or longer for
/// tables of more than [`GC_MAX_BUCKETS_PER_S`] buckets.
fn sweep_period_ns(buckets: u64) -> u64 {
    GC_SWEEP_NS.max(buckets.saturating_mul(GC_SWEEP_NS) / GC_MAX_BUCKETS_PER_S)
}

/// Release what a removed flow held (its least-connections count), count
/// it, and announce its end to the other members of the HA group if it is
/// to be ([`announce_end`]). A free function so it can be called while the
/// flow table's writer is mutably borrowed.
pub(super) fn on_removed(
    select: &mut Selector,
    counters: &CounterBlock,
    sync: &mut Option<SyncEnds>,
    r: Removed,
) {
    release(select, counters, &r);
    announce_end(sync, &r);
}

/// [`on_removed`] but the announcement: for a flow another member ended.
pub(super) fn release(select: &mut Selector, counters: &CounterBlock, r: &Removed) {
    select.closed(r.data.endpoint, r.data.gen);
    bump(&counters.flows_removed, 1);
    if r.early {
        bump(&counters.flows_evicted, 1);
    }
}

impl Pipeline {
    /// Expire idle flows, examining `buckets` buckets of this worker's
    /// shard; returns how many flows went.
    pub fn maintain(&mut self, now_ns: u64, buckets: usize) -> usize {
        let (sel, counters, sync) = (&mut self.select, &self.counters, &mut self.sync);
        self.ct
            .expire(now_ns, buckets, &mut |r| on_removed(sel, counters, sync, r))
    }

    /// Run the share of the expiry sweep that is due at `now`.
    pub fn expire_due(&mut self, now: u64) {
        if self.gc_last == 0 || now < self.gc_last {
            self.gc_last = now;
            return;
        }
        let buckets = self.ct.buckets() as u64;
        let period = sweep_period_ns(buckets);
        self.gc_owed += (now - self.gc_last).min(period) * buckets;
        self.gc_last = now;
        let due = (self.gc_owed / period).min(GC_MAX_BUCKETS);
        if due > 0 {
            self.gc_owed = self.gc_owed.saturating_sub(due * period);
            self.maintain(now, due as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_tables_are_swept_at_a_bounded_rate() {
        // The default table (2^15 buckets) is swept once a second.
        assert_eq!(sweep_period_ns(1 << 15), GC_SWEEP_NS);
        assert_eq!(sweep_period_ns(GC_MAX_BUCKETS_PER_S), GC_SWEEP_NS);
        // A million-flow table (2^19 buckets): every 8 s, 65,536 buckets/s.
        assert_eq!(sweep_period_ns(1 << 19), 8 * GC_SWEEP_NS);
        let per_s = (1u64 << 19) * GC_SWEEP_NS / sweep_period_ns(1 << 19);
        assert_eq!(per_s, GC_MAX_BUCKETS_PER_S);
    }
}
