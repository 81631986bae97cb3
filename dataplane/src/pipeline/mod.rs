//! The per-packet pipeline: parse → VIP lookup → connection tracking →
//! backend choice → NAT rewrite → verdict.
//!
//! A [`Pipeline`] belongs to one worker. It reads one [`Tables`] snapshot per
//! batch, owns its connection-tracking shard (and reads the other workers'),
//! and counts everything in its own [`CounterBlock`]. A batch goes through
//! named stages, chunk by chunk, so that the cache misses of a large flow
//! table overlap instead of queueing:
//!
//! 1. [`parse_and_prefetch`]: parse every frame (the fast parser first),
//!    hash its key, prefetch the tag line of its key's first bucket;
//! 2. [`probe_first_buckets`]: match the tags, prefetch the candidate slot
//!    (or, with none, the second bucket's tag line);
//! 3. [`probe_second_buckets`]: the same in the second buckets, for the
//!    frames the first had no candidate for;
//! 4. [`Pipeline::predict_new_flows`]: for the frames still without one
//!    that open a flow, the rule, backend and source-NAT port, and
//!    prefetches of the reply entry's buckets;
//! 5. [`fast::forward_established`]: every frame of an established IPv4
//!    flow whose entry this worker holds;
//! 6. [`Pipeline::decide_rest`]: the rest, in order: the new-flow path
//!    where it applies (else [`FastPathExit`] says why not), the general
//!    path for everything else.
//!
//! Files: [`fast`] (the fast paths and the look ahead), [`general`] (the
//! general path), [`icmp`] (ICMP errors and echo), [`gc`] (expiry pacing),
//! [`exit`] (why a new flow left the fast path), [`sync`] (connection sync
//! with the other members of an HA group).
//!
//! CONTRACT for I/O layers: a worker loop owns one [`Processor`], loads the
//! tables once per batch, and calls [`Processor::process_batch`]; when idle it
//! calls [`Processor::idle`] so flows still expire (and flows other members
//! sent are installed: an idle worker installs them only there).

mod exit;
mod fast;
mod gc;
mod general;
mod icmp;
mod sync;

use std::sync::Arc;

pub use exit::FastPathExit;

use crate::conntrack::{Conntrack, FlowHasher, FlowKey, ShardView, ShardWriter, NO_SLOT};
use crate::counters::{bump, CounterBlock};
use crate::drop::DropReason;
use crate::frags::FragTable;
use crate::frame::{Frame, Verdict};
use crate::prefetch::prefetch_addr;
use crate::select::Selector;
use crate::tables::Tables;
use crate::wire::{self, PacketMeta};
use fast::{fast_words, NewFlowHint, PortCache};

/// Something that decides, for each frame of a batch, what happens to it.
/// `verdicts.len() >= frames.len()`; entry `i` is written for frame `i`.
pub trait Processor {
    /// Process one batch. `now_ns` is a monotonic clock in nanoseconds
    /// (CLOCK_MONOTONIC), read once per batch.
    fn process_batch(
        &mut self,
        tables: &Tables,
        now_ns: u64,
        frames: &mut [Frame<'_>],
        verdicts: &mut [Verdict],
    );

    /// Called by the worker loop when no frame arrived for a while (at most
    /// every few tens of milliseconds), with the current tables, so
    /// time-driven work such as flow expiry, and installing the flows other
    /// members of an HA group sent, goes on while traffic is idle.
    fn idle(&mut self, tables: &Tables, now_ns: u64) {
        let _ = (tables, now_ns);
    }

    /// The longest the worker loop may block while idle before it calls
    /// [`Processor::idle`] again, in ms (`None`: the loop's own default).
    /// A pipeline with connection sync on says [`SYNC_IDLE_MS`], so that
    /// flows other members send are installed within milliseconds on an
    /// idle backup too.
    fn idle_wait_ms(&self) -> Option<i32> {
        None
    }
}

/// [`Processor::idle_wait_ms`] of a pipeline with connection sync on.
pub const SYNC_IDLE_MS: i32 = 2;

/// Frames decided per inner step; larger batches are processed in chunks.
/// (16 measured 8-13 % faster in the pipeline benches, established at 10k
/// flows and new flows, by keeping fewer slot prefetches in flight; but in
/// the daemon under a SYN flood, half its runs fell into a slower regime,
/// ~260k instead of ~440k new flows/s, which 64 never did.)
pub const CHUNK: usize = 64;
// (forward_established marks the frames it took in one u64.)
const _: () = assert!(CHUNK <= 64);
/// A hit idle for longer than this is checked against its flow's timeout
/// (the shortest timeout a rule can have is one second).
const MIN_IDLE_CHECK_NS: u64 = 1_000_000_000;

/// One worker's pipeline.
#[derive(Debug)]
pub struct Pipeline {
    worker: usize,
    workers: usize,
    ct: ShardWriter,
    counters: Arc<CounterBlock>,
    /// Backend choice: round-robin cursors and flow counts.
    select: Selector,
    /// Next source-NAT port candidate (index into this worker's share of the range).
    nat_cursor: u32,
    /// When expiry last ran, and the fraction of a bucket it still owes (in ns·buckets).
    gc_last: u64,
    gc_owed: u64,
    /// Per-frame state between the stages of a batch. Kept here, not on the
    /// stack, so a batch does not start by zeroing ~8 KiB; taken out of the
    /// pipeline for the length of a batch (so `self` stays borrowable).
    scratch: Option<Box<Scratch>>,
    /// The flow table, for reads; taken out like `scratch` for a batch (the
    /// writer `ct` holds the same table).
    table: Option<Arc<Conntrack>>,
    /// What [`Pipeline::predict_new_flows`] worked out for the frame being
    /// decided, if it opens a flow ([`NewFlowHint::NONE`] otherwise).
    hint: NewFlowHint,
    /// Bit `h % 64` set for the hash `h` of every key inserted since this
    /// chunk's bucket probes (a one-word Bloom filter): a key the probes
    /// found no tag for in either bucket, and whose bit is clear, is still
    /// not in the table.
    inserted: u64,
    /// Whether the new-flow path takes the common new flows (else every
    /// new flow goes the general way).
    fresh_path: bool,
    /// The flows of fragmented datagrams whose first fragment this worker
    /// forwarded, for their later fragments.
    frags: FragTable,
    /// Connection sync with the other members of an HA group, if on
    /// ([`Pipeline::set_sync`]).
    sync: Option<sync::SyncEnds>,
}

/// Fragmented datagrams a worker follows at once ([`FragTable`]).
const FRAG_SLOTS: usize = 1024;

/// [`Pipeline::inserted`]'s bit for a key hash.
#[inline(always)]
fn bloom_bit(hash: u64) -> u64 {
    1 << ((hash >> 32) & 63)
}

/// How [`parse_and_prefetch`] parsed a frame.
const PARSED_NONE: u8 = 0;
/// [`wire::parse_fast`] took it: `words[1]`, `words[3]` and `words[4]`
/// hold its key (the other two are zero for IPv4), `hashes` its hash.
const PARSED_FAST: u8 = 1;
/// [`wire::parse`] took it (in `metas`); `words` and `hashes` hold its key
/// if it is IP.
const PARSED_FULL: u8 = 2;
const PARSED_FULL_IP: u8 = 3;

/// What the stages learn about each frame of a chunk, for the later ones.
#[derive(Debug)]
struct Scratch {
    /// Full parse (frames the fast parser did not take).
    metas: [Result<PacketMeta, DropReason>; CHUNK],
    /// `PARSED_*`.
    parsed: [u8; CHUNK],
    words: [[u64; 5]; CHUNK],
    hashes: [u64; CHUNK],
    /// Candidate flow-table slot from the bucket probes ([`NO_SLOT`] if
    /// none).
    cands: [usize; CHUNK],
    /// [`Pipeline::predict_new_flows`]' hints for frames that open flows.
    hints: [NewFlowHint; CHUNK],
    /// Predicted reply-entry hash of each new flow (0: none), for the
    /// second prefetch pass of [`Pipeline::predict_new_flows`].
    reply_hashes: [u64; CHUNK],
    /// Whether the look ahead ran for this chunk (some fast-parsed frame
    /// had no candidate in either bucket): `hints` are this chunk's.
    predicted: bool,
    /// The frames [`fast::forward_established`] took (bit `i`).
    done: u64,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            metas: [Err(DropReason::TruncatedEthernet); CHUNK],
            parsed: [PARSED_NONE; CHUNK],
            words: [[0u64; 5]; CHUNK],
            hashes: [0u64; CHUNK],
            cands: [NO_SLOT; CHUNK],
            hints: [NewFlowHint::NONE; CHUNK],
            reply_hashes: [0u64; CHUNK],
            predicted: false,
            done: 0,
        }
    }
}

impl Pipeline {
    /// The pipeline of worker `worker` out of `workers`, sharing `ct`.
    pub fn new(worker: usize, workers: usize, ct: &Arc<Conntrack>) -> Pipeline {
        Pipeline {
            worker,
            workers: workers.max(1),
            ct: ct.writer(worker),
            counters: Arc::new(CounterBlock::new()),
            select: Selector::new(),
            nat_cursor: 0,
            gc_last: 0,
            gc_owed: 0,
            scratch: Some(Box::new(Scratch::new())),
            table: Some(ct.clone()),
            hint: NewFlowHint::NONE,
            inserted: 0,
            fresh_path: true,
            frags: FragTable::new(FRAG_SLOTS),
            sync: None,
        }
    }

    /// Whether the first packets of common new flows (IPv4 TCP SYN or UDP
    /// to a Maglev or persist rule, DNAT, one-arm or full NAT) take the
    /// dedicated new-flow path (the default), or, with `false`, the general
    /// path as every other new flow does. Both give the same frames,
    /// entries and counters: this is for tests that compare them, and for
    /// measuring what the dedicated path saves.
    pub fn set_new_flow_path(&mut self, on: bool) {
        self.fresh_path = on;
    }

    /// Forget every flow this worker tracks (its shard of the table, and
    /// the least-connections counts those flows held), keeping the table's
    /// memory: a benchmark's way to start again from an empty table without
    /// freeing and faulting in hundreds of MiB. Counters are left as they
    /// are. Returns how many entries were dropped.
    pub fn clear_flows(&mut self) -> u64 {
        self.select.forget_flows();
        self.ct.clear()
    }

    /// This worker's counters (control reads them).
    pub fn counters(&self) -> Arc<CounterBlock> {
        self.counters.clone()
    }
}

/// What every stage of a batch reads besides the pipeline: the tables and
/// the clock, the owner's view of its shard, the flow hash and the
/// counters. (What a batch changes as it goes, the last port looked up and
/// its own counts, the stages take apart: kept out of anything a call
/// that is not inlined sees, the compiler holds them in registers.)
#[derive(Clone, Copy)]
struct Batch<'b> {
    tables: &'b Tables,
    now: u64,
    mine: ShardView<'b>,
    hasher: FlowHasher,
    counters: &'b CounterBlock,
}

/// A batch's own counts, stored into the [`CounterBlock`] once at its end
/// (a single writer, and control reads counters that may be a batch old).
#[derive(Debug, Default)]
struct Counted {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
    passed: u64,
}

impl Counted {
    /// A frame of `len` bytes transmitted.
    #[inline(always)]
    fn tx(&mut self, len: usize) {
        self.tx_packets += 1;
        self.tx_bytes += len as u64;
    }

    /// Add the batch's counts to `c`.
    fn store(&self, c: &CounterBlock) {
        bump(&c.rx_packets, self.rx_packets);
        bump(&c.rx_bytes, self.rx_bytes);
        bump(&c.tx_packets, self.tx_packets);
        bump(&c.tx_bytes, self.tx_bytes);
        bump(&c.passed, self.passed);
    }
}

/// Stage: parse every frame (the fast parser first) and prefetch the
/// flow-table tag line of its key's first bucket.
#[inline(always)]
fn parse_and_prefetch(b: &Batch<'_>, sc: &mut Scratch, fc: &[Frame<'_>], counted: &mut Counted) {
    let hasher = b.hasher;
    let Scratch {
        metas,
        parsed,
        words,
        hashes,
        ..
    } = sc;
    for (i, f) in fc.iter().enumerate().take(CHUNK) {
        counted.rx_packets += 1;
        counted.rx_bytes += f.len as u64;
        let data = f.data();
        let w = &mut words[i];
        if let Some(q) = wire::parse_fast(data) {
            let k = fast_words(&q);
            (w[1], w[3], w[4]) = (k[1], k[3], k[4]);
            parsed[i] = PARSED_FAST;
            // The zero words as constants: the hash folds them away.
            hashes[i] = hasher.hash_v4(k[1], k[3], k[4]);
        } else {
            metas[i] = wire::parse(data);
            match &metas[i] {
                Ok(m) if m.is_ip() => {
                    *w = FlowKey {
                        src: m.src,
                        dst: m.dst,
                        sport: m.sport,
                        dport: m.dport,
                        proto: m.proto,
                    }
                    .words();
                    parsed[i] = PARSED_FULL_IP;
                    hashes[i] = hasher.hash_words(w);
                }
                _ => {
                    parsed[i] = PARSED_FULL;
                    continue;
                }
            }
        }
        b.mine.prefetch(hashes[i]);
    }
}

/// Stage: the tag lines have had a stage to arrive; find each frame's
/// candidate slot in its first bucket and prefetch it; with none there,
/// prefetch the second bucket's tag line. Returns whether any
/// fast-parsed frame has no candidate: only then do the second buckets
/// need probing, and can a frame open a new flow.
#[inline(always)]
fn probe_first_buckets(b: &Batch<'_>, sc: &mut Scratch, n: usize) -> bool {
    let mine = b.mine;
    let mut unmatched = false;
    for i in 0..n.min(CHUNK) {
        let p = sc.parsed[i];
        sc.cands[i] = NO_SLOT;
        if p & 1 != 0 {
            let c = mine.probe(sc.hashes[i]);
            sc.cands[i] = c;
            if c == NO_SLOT {
                mine.prefetch_alt(sc.hashes[i]);
                unmatched |= p == PARSED_FAST;
            } else if p == PARSED_FULL_IP {
                // Bound for the general path, which reads the whole slot.
                // (The fast path reads only a line-form entry's first
                // line, which the probe prefetched.)
                mine.prefetch_second(c);
            }
        }
    }
    unmatched
}

/// Stage: the second buckets of the fast-parsed frames the first had no
/// candidate for (an entry goes there only when its first bucket was
/// full). Returns whether any still has none.
#[inline(always)]
fn probe_second_buckets(b: &Batch<'_>, sc: &mut Scratch, n: usize) -> bool {
    let mut unmatched = false;
    for i in 0..n.min(CHUNK) {
        if sc.parsed[i] == PARSED_FAST && sc.cands[i] == NO_SLOT {
            sc.cands[i] = b.mine.probe_alt(sc.hashes[i]);
            unmatched |= sc.cands[i] == NO_SLOT;
        }
    }
    unmatched
}

impl Pipeline {
    /// Stage: every frame [`fast::forward_established`] did not take (the
    /// bits clear in `sc.done`), in order. A frame that opens a flow the
    /// look ahead prepared (if it ran: `sc.predicted`) takes the new-flow
    /// path, or is counted with the reason it cannot; the general path
    /// decides the rest.
    #[inline(always)]
    fn decide_rest(
        &mut self,
        b: &Batch<'_>,
        sc: &Scratch,
        fc: &mut [Frame<'_>],
        vc: &mut [Verdict],
        ports: &mut PortCache,
        counted: &mut Counted,
    ) {
        let (done, predicted) = (sc.done, sc.predicted);
        let n = fc.len().min(vc.len()).min(CHUNK);
        let (tables, now) = (b.tables, b.now);
        let all = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        let mut rest = all & !done;
        while rest != 0 {
            let i = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            // The frame after this one that is still to come.
            if rest != 0 {
                if let Some(next) = fc.get(rest.trailing_zeros() as usize) {
                    prefetch_addr(next.buf.as_ptr());
                }
            }
            let (Some(f), Some(v)) = (fc.get_mut(i), vc.get_mut(i)) else {
                break;
            };
            if sc.parsed[i] == PARSED_FAST && predicted && sc.cands[i] == NO_SLOT {
                // A frame that opens a flow whose key had no tag in either
                // bucket: the new-flow path (which checks the tags again),
                // or the reason it cannot take it.
                let h = &sc.hints[i];
                let why = match h.exit {
                    Some(why) => Some(why),
                    None if !h.opens() => None,
                    None if !self.fresh_path => Some(FastPathExit::Disabled),
                    None if !h.room => Some(FastPathExit::TableFull),
                    None => match self.open_new_flow(b, ports, f, &sc.words[i], sc.hashes[i], h) {
                        Ok(port) => {
                            *v = Verdict::Tx(port);
                            counted.tx(f.len);
                            continue;
                        }
                        Err(why) => Some(why),
                    },
                };
                if let Some(why) = why {
                    b.counters.count_fast_path_exit(why);
                }
            }
            *v = if sc.parsed[i] == PARSED_FAST {
                // (The look ahead wrote hints only if it ran.)
                if predicted {
                    self.hint = sc.hints[i];
                    // No tag in either bucket then, and not inserted since.
                    self.hint.absent =
                        sc.cands[i] == NO_SLOT && self.inserted & bloom_bit(sc.hashes[i]) == 0;
                }
                let v = self.slow_fast(tables, now, f, sc.hashes[i]);
                self.hint = NewFlowHint::NONE;
                v
            } else {
                self.slow(tables, now, f, &sc.metas[i], sc.hashes[i])
            };
            match *v {
                Verdict::Tx(_) => counted.tx(f.len),
                Verdict::Pass => counted.passed += 1,
                Verdict::Drop(r) => b.counters.count_drop(r),
            }
        }
    }
}

impl Processor for Pipeline {
    fn process_batch(
        &mut self,
        tables: &Tables,
        now_ns: u64,
        frames: &mut [Frame<'_>],
        verdicts: &mut [Verdict],
    ) {
        self.select.follow(tables);
        if self.sync_pending() {
            self.drain_sync(tables, now_ns, sync::PER_BATCH);
        }
        // Always present outside a batch; allocating is only the fallback.
        let mut sc = self
            .scratch
            .take()
            .unwrap_or_else(|| Box::new(Scratch::new()));
        let table = self
            .table
            .take()
            .unwrap_or_else(|| self.ct.table_arc().clone());
        let counters = self.counters.clone();
        // This worker's own shard, which only this thread rewrites. (A
        // worker index past the table's shards finds nothing, fast or slow.)
        let mine = match table.owner_view(&self.ct) {
            Some(v) if self.ct.shard() == self.worker => v,
            _ => Default::default(),
        };
        let b = Batch {
            tables,
            now: now_ns,
            mine,
            hasher: *table.hasher(),
            counters: &counters,
        };
        let mut ports = PortCache::default();
        let mut counted = Counted::default();
        for (fc, vc) in frames.chunks_mut(CHUNK).zip(verdicts.chunks_mut(CHUNK)) {
            // chunks_mut yields at most CHUNK frames; saying so lets the
            // compiler drop the bounds checks on the scratch arrays.
            let n = fc.len().min(vc.len()).min(CHUNK);
            let (fc, vc) = (&mut fc[..n], &mut vc[..n]);
            self.inserted = 0;
            parse_and_prefetch(&b, &mut sc, fc, &mut counted);
            let mut unmatched = probe_first_buckets(&b, &mut sc, n);
            if unmatched {
                unmatched = probe_second_buckets(&b, &mut sc, n);
            }
            sc.predicted = unmatched;
            if unmatched {
                self.predict_new_flows(&b, &mut sc, fc);
            }
            sc.done = fast::forward_established(&b, &sc, fc, vc, &mut ports, &mut counted);
            self.decide_rest(&b, &sc, fc, vc, &mut ports, &mut counted);
        }
        counted.store(&counters);
        self.scratch = Some(sc);
        self.table = Some(table);
        self.expire_due(now_ns);
        self.flush_sync();
    }

    fn idle(&mut self, tables: &Tables, now_ns: u64) {
        if self.sync_pending() {
            self.drain_sync(tables, now_ns, sync::PER_IDLE);
        }
        self.expire_due(now_ns);
        self.flush_sync();
    }

    fn idle_wait_ms(&self) -> Option<i32> {
        self.sync.is_some().then_some(SYNC_IDLE_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Ip16;
    use crate::wire::FastMeta;

    #[test]
    fn fast_words_are_the_flow_key_words() {
        let q = FastMeta {
            src: [10, 0, 0, 2],
            dst: [192, 0, 2, 250],
            sport: 40001,
            dport: 443,
            proto: 17,
            tcp_flags: 0,
            ttl: 9,
            l4_len: 8,
        };
        let key = FlowKey {
            src: Ip16::v4(q.src),
            dst: Ip16::v4(q.dst),
            sport: q.sport,
            dport: q.dport,
            proto: q.proto,
        };
        assert_eq!(fast_words(&q), key.words());
        let h = crate::conntrack::FlowHasher::random();
        let w = fast_words(&q);
        assert_eq!(h.hash_words(&w), h.hash(&key));
        assert_eq!(h.hash_v4(w[1], w[3], w[4]), h.hash(&key));
    }
}
