//! The per-packet pipeline: parse → VIP lookup → connection tracking →
//! backend choice → NAT rewrite → verdict.
//!
//! A [`Pipeline`] belongs to one worker. It reads one [`Tables`] snapshot per
//! batch, owns its connection-tracking shard (and reads the other workers'),
//! and counts everything in its own [`CounterBlock`]. Per batch it first parses
//! every frame and prefetches the conntrack buckets, then decides each frame —
//! so the cache misses of a large flow table overlap instead of queueing.
//!
//! CONTRACT for I/O layers: a worker loop owns one [`Processor`], loads the
//! tables once per batch, and calls [`Processor::process_batch`]; when idle it
//! calls [`Pipeline::maintain`] so flows still expire.

use std::sync::Arc;

use crate::conntrack::{
    flags, mode, v4_word, Conntrack, FlowData, FlowKey, FlowRecord, Hashed, Hit, Kind, NewFlowV4,
    Removed, ShardView, ShardWriter, NO_SLOT,
};
use crate::counters::{bump, CounterBlock};
use crate::drop::DropReason;
use crate::frags::FragTable;
use crate::frame::{Frame, PortId, Verdict};
use crate::net::Ip16;
use crate::prefetch::prefetch_addr;
use crate::select::{self, Selector};
use crate::snat::{NatWalk, Target};
use crate::tables::{Endpoint, EndpointState, NatMode, NextHop, Selection, Service, Tables};
use crate::wire::rewrite::{
    self, answer_echo, encap_ipip, fast_deltas, rewrite_fast, rewrite_fast_tcp, rewrite_fast_udp,
    set_macs, src_mac_ipv4, translate_icmp_error, FastXlat, TupleV4, Xlat, FAST_TCP_END,
    FAST_UDP_END,
};
use crate::wire::tcp::flags as tcp_flags;
use crate::wire::{self, ethernet, ipv4, proto, tcp, FastMeta, Frag, PacketMeta};

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
    /// every few tens of milliseconds), so time-driven work such as flow
    /// expiry goes on while traffic is idle.
    fn idle(&mut self, now_ns: u64) {
        let _ = now_ns;
    }
}

/// Frames decided per inner step; larger batches are processed in chunks.
/// (16 measured 8-13 % faster in the pipeline benches, established at 10k
/// flows and new flows, by keeping fewer slot prefetches in flight; but in
/// the daemon under a SYN flood, half its runs fell into a slower regime,
/// ~260k instead of ~440k new flows/s, which 64 never did.)
pub const CHUNK: usize = 64;
// (Stage 2 marks the frames it decided in one u64.)
const _: () = assert!(CHUNK <= 64);
/// The flow table is swept for expired flows once per this period; each
/// batch examines the share of buckets that the time since the last batch
/// calls for, so the cost per packet falls as the packet rate rises.
const GC_SWEEP_NS: u64 = 1_000_000_000;
/// A hit idle for longer than this is checked against its flow's timeout
/// (the shortest timeout a rule can have is one second).
const MIN_IDLE_CHECK_NS: u64 = 1_000_000_000;
/// Most buckets examined after one batch (bounds the latency of a batch).
const GC_MAX_BUCKETS: u64 = 256;
/// Most buckets swept per second: a table bigger than this is swept over
/// several seconds. Judging a flow reads its partner entry at a random place,
/// so sweeping a million-flow table (512 MiB) every second would take most of
/// a core in cache misses. Sweeping slower is safe: a hit checks its flow's
/// timeout itself, and a full bucket evicts expired flows first.
const GC_MAX_BUCKETS_PER_S: u64 = 65_536;

/// How long one sweep of a table of `buckets` takes: a second, or longer for
/// tables of more than [`GC_MAX_BUCKETS_PER_S`] buckets.
fn sweep_period_ns(buckets: u64) -> u64 {
    GC_SWEEP_NS.max(buckets.saturating_mul(GC_SWEEP_NS) / GC_MAX_BUCKETS_PER_S)
}

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
    /// What stage 1.75 worked out for the frame being decided, if it looked
    /// like the first packet of a new flow ([`NewFlowHint::NONE`] otherwise).
    hint: NewFlowHint,
    /// Bit `h % 64` set for the hash `h` of every key inserted since this
    /// chunk's stage 1.5 (a one-word Bloom filter): a key that stages 1.5
    /// and 1.6 found no tag for in either bucket, and whose bit is clear, is
    /// still not in the table.
    inserted: u64,
    /// Whether [`Pipeline::fresh`] takes the common new flows (else every
    /// new flow goes through [`Pipeline::new_flow`]).
    fresh_path: bool,
    /// The flows of fragmented datagrams whose first fragment this worker
    /// forwarded, for their later fragments.
    frags: FragTable,
}

/// Fragmented datagrams a worker follows at once ([`FragTable`]).
const FRAG_SLOTS: usize = 1024;

/// Stage 1.75's look ahead at a frame that seems to start a new flow: its
/// service and (for the pure selections, Maglev hash and persist) its
/// endpoint, so stage 2 does not look them up again. Stage 1.75 also
/// predicts the source-NAT port the flow will get and prefetches its reply
/// entry's bucket; a wrong prediction costs only that cache miss, since
/// stage 2 runs the port search as always.
#[derive(Debug, Clone, Copy)]
struct NewFlowHint {
    /// Index in [`Tables::services`] of [`Tables::lookup`]'s answer for the
    /// frame (`u32::MAX`: no hint).
    svc: u32,
    /// [`Pipeline::choose`]'s answer for the frame (`u16::MAX`: none known).
    ei: u16,
    /// The NAT cursor the prediction took its port at, and the hash of the
    /// reply entry's key with that port (0: no prediction). The port search
    /// starting at the same cursor for the same endpoint meets the same key.
    cursor: u32,
    reply_hash: u64,
    /// The source-NAT candidate at `cursor` (its address's [`Ip16::words`]
    /// high word, IPv4 only, and port), when `reply_hash` is set and the
    /// address is IPv4 (else `nat_src` is 0).
    nat_src: u64,
    nat_port: u16,
    /// The frame's key is known to be absent from this worker's shard
    /// (set in stage 2 from stage 1.6 and [`Pipeline::inserted`]).
    absent: bool,
    /// Stage 1.75 saw a free way in the key's first bucket. Without one
    /// the new-flow path is not tried: in a full table the general path
    /// evicts anyway (and the rare key whose second bucket has room takes
    /// the general path too, with the same result).
    room: bool,
}

impl NewFlowHint {
    const NONE: NewFlowHint = NewFlowHint {
        svc: u32::MAX,
        ei: u16::MAX,
        cursor: 0,
        reply_hash: 0,
        nat_src: 0,
        nat_port: 0,
        absent: false,
        room: false,
    };
}

/// [`Pipeline::inserted`]'s bit for a key hash.
#[inline(always)]
fn bloom_bit(hash: u64) -> u64 {
    1 << ((hash >> 32) & 63)
}

/// How stage 1 parsed a frame.
const PARSED_NONE: u8 = 0;
/// [`wire::parse_fast`] took it: `words[1]`, `words[3]` and `words[4]`
/// hold its key (the other two are zero for IPv4), `hashes` its hash.
const PARSED_FAST: u8 = 1;
/// [`wire::parse`] took it (in `metas`); `words` and `hashes` hold its key
/// if it is IP.
const PARSED_FULL: u8 = 2;
const PARSED_FULL_IP: u8 = 3;

/// What stage 1 learns about each frame of a chunk, for the later stages.
#[derive(Debug)]
struct Scratch {
    /// Full parse (frames the fast parser did not take).
    metas: [Result<PacketMeta, DropReason>; CHUNK],
    /// `PARSED_*`.
    parsed: [u8; CHUNK],
    words: [[u64; 5]; CHUNK],
    hashes: [u64; CHUNK],
    /// Candidate conntrack slot from stage 1.5 ([`NO_SLOT`] if none).
    cands: [usize; CHUNK],
    /// Stage 1.75's hints for frames that look like new flows.
    hints: [NewFlowHint; CHUNK],
    /// Predicted reply-entry hash of each new flow (0: none), for the
    /// second prefetch pass of stage 1.75.
    reply_hashes: [u64; CHUNK],
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
        }
    }
}

/// Release what a removed flow held. A free function so it can be called while
/// the conntrack writer is mutably borrowed.
fn on_removed(select: &mut Selector, counters: &CounterBlock, r: Removed) {
    select.closed(r.data.endpoint, r.data.gen);
    bump(&counters.flows_removed, 1);
    if r.early {
        bump(&counters.flows_evicted, 1);
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

    /// Expire idle flows; call when no traffic arrived for a while.
    pub fn maintain(&mut self, now_ns: u64, buckets: usize) -> usize {
        let (sel, counters) = (&mut self.select, &self.counters);
        self.ct
            .expire(now_ns, buckets, &mut |r| on_removed(sel, counters, r))
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

    /// Decide one parsed frame.
    fn decide(
        &mut self,
        t: &Tables,
        now: u64,
        f: &mut Frame<'_>,
        m: &PacketMeta,
        key: &FlowKey,
        hash: u64,
    ) -> Verdict {
        if m.frag == Frag::Later {
            // It follows its datagram's first fragment, if this worker
            // forwarded that one.
            if let Some((fk, fh)) = self.frags.flow_of(m, now) {
                if let Some(hit) = self.find_anywhere(&fk, fh) {
                    // (Its ports are the first fragment's; it has none. The
                    // rewrite leaves what follows the IP header alone.)
                    let fm = PacketMeta {
                        sport: fk.sport,
                        dport: fk.dport,
                        ..*m
                    };
                    return self.tracked(t, now, f, &fm, &fk, fh, &hit);
                }
            }
            return if t.is_vip(m.dst) || t.is_snat_addr(m.dst) {
                Verdict::Drop(DropReason::Fragment)
            } else {
                Verdict::Pass
            };
        }
        let icmp = proto::is_icmp(m.proto);
        if m.is_icmp_error() {
            return self.icmp_error(t, f, m);
        }
        // (Stages 1.5 and 1.6 may have shown the key absent already.)
        let hit = if self.hint.absent {
            debug_assert!(self.ct.table().find_in(self.worker, key, hash).is_none());
            None
        } else {
            self.ct.table().find_in(self.worker, key, hash)
        };
        if let Some(hit) = hit {
            return self.tracked(t, now, f, m, key, hash, &hit);
        }
        // (The hint, when there is one, is this very look-up, done in stage 1.75.)
        let svc = match self.hint.svc {
            u32::MAX => t.lookup(m.dst, m.proto, service_port(m)),
            i => t.services.get(i as usize).map(|s| &**s),
        };
        if let Some(svc) = svc {
            return self.new_flow(t, now, f, m, key, hash, svc, false);
        }
        if let Some(hit) = self.ct.table().find_elsewhere(self.worker, key, hash) {
            return self.tracked(t, now, f, m, key, hash, &hit);
        }
        if t.is_vip(m.dst) {
            if m.is_echo_request() {
                return self.echo_reply(t, f, m);
            }
            return Verdict::Drop(if icmp {
                DropReason::IcmpUnsupported
            } else {
                DropReason::NoService
            });
        }
        if t.is_snat_addr(m.dst) {
            return Verdict::Drop(DropReason::UntrackedReply);
        }
        Verdict::Pass
    }

    /// The entry keyed `key` (hash `hash`): in this worker's shard, else in
    /// another's.
    fn find_anywhere(&self, key: &FlowKey, hash: u64) -> Option<Hit> {
        let ct = self.ct.table();
        ct.find_in(self.worker, key, hash)
            .or_else(|| ct.find_elsewhere(self.worker, key, hash))
    }

    /// A packet of a tracked flow.
    #[allow(clippy::too_many_arguments)]
    fn tracked(
        &mut self,
        t: &Tables,
        now: u64,
        f: &mut Frame<'_>,
        m: &PacketMeta,
        key: &FlowKey,
        hash: u64,
        hit: &Hit,
    ) -> Verdict {
        let mut d = hit.data;
        if d.kind == Kind::Forward
            && hit.shard == self.worker
            && now.saturating_sub(hit.last_seen) > MIN_IDLE_CHECK_NS
            && self.ct.is_expired(hit.slot, now)
        {
            // Idle past its timeout but not yet swept: the flow is over, and
            // this packet starts a new one (chosen afresh).
            return self.restart_flow(t, now, f, m, key, hash, hit.slot, false);
        }
        if d.kind == Kind::Reply
            && hit.shard == self.worker
            && now.saturating_sub(hit.last_seen) > MIN_IDLE_CHECK_NS
            && self.ct.is_expired(hit.slot, now)
        {
            // Likewise from the backend's side: the flow is over, so this
            // answer is treated as the sweep would have left it, untracked
            // (it must not bring the flow back).
            let (sel, counters) = (&mut self.select, &self.counters);
            if let Some(r) = self.ct.remove_pair(hit.slot, false) {
                on_removed(sel, counters, r);
            }
            return self.decide(t, now, f, m, key, hash);
        }
        if d.kind == Kind::Forward && d.gen != t.generation as u32 && hit.shard == self.worker {
            // The tables changed since this flow last passed: is its backend still there?
            // (An id its backend gave up may since have gone to another:
            // then this flow is not that one's.)
            match t.endpoint(d.endpoint) {
                Some((_, ep)) if ep.state != EndpointState::Down && ep.holds_flow_of(d.gen) => {
                    if let Some(nh) = ep.next_hop {
                        d.mac = nh.mac;
                        d.port = nh.port;
                    }
                    d.gen = t.generation as u32;
                    self.ct.revalidate(hit.slot, &d);
                }
                _ => {
                    // Backend removed or down: re-select. TCP mid-stream packets go
                    // to the new backend too, which resets them, so the client
                    // reconnects at once instead of timing out.
                    return self.restart_flow(t, now, f, m, key, hash, hit.slot, true);
                }
            }
        }
        let mut fl = flags::SEEN;
        if m.proto == proto::TCP {
            fl |= tcp_flag_bits(m.tcp_flags);
        }
        self.ct.table().add_flags(hit, fl);
        self.ct.table().touch(hit, now, f.len as u64);
        self.counters.endpoint_packet(d.endpoint, f.len as u64);
        self.apply(t, f, m, &d)
    }

    /// End the flow in `slot` and treat this packet as the first of a new one.
    /// `reselect`: the old backend went away, so the flow is removed early and
    /// a TCP packet without SYN may start the new flow (the new backend resets
    /// it and the client reconnects at once).
    #[allow(clippy::too_many_arguments)]
    fn restart_flow(
        &mut self,
        t: &Tables,
        now: u64,
        f: &mut Frame<'_>,
        m: &PacketMeta,
        key: &FlowKey,
        hash: u64,
        slot: usize,
        reselect: bool,
    ) -> Verdict {
        let (sel, counters) = (&mut self.select, &self.counters);
        if let Some(r) = self.ct.remove_pair(slot, reselect) {
            on_removed(sel, counters, r);
        }
        match t.lookup(m.dst, m.proto, service_port(m)) {
            Some(svc) => self.new_flow(t, now, f, m, key, hash, svc, reselect),
            None => Verdict::Drop(DropReason::NoService),
        }
    }

    /// The first packet of a flow to service `svc`.
    #[allow(clippy::too_many_arguments)]
    fn new_flow(
        &mut self,
        t: &Tables,
        now: u64,
        f: &mut Frame<'_>,
        m: &PacketMeta,
        key: &FlowKey,
        hash: u64,
        svc: &Service,
        reselect: bool,
    ) -> Verdict {
        let spec = &svc.spec;
        if !spec.allowed_sources.is_empty()
            && !spec
                .allowed_sources
                .iter()
                .any(|c| c.contains(m.src.into()))
        {
            return Verdict::Drop(DropReason::SourceNotAllowed);
        }
        if m.proto == proto::TCP
            && !reselect
            && (m.tcp_flags & tcp_flags::SYN == 0 || m.tcp_flags & tcp_flags::ACK != 0)
        {
            return Verdict::Drop(DropReason::TcpNotSyn);
        }
        let icmp = proto::is_icmp(m.proto);
        if icmp && !m.is_echo_request() {
            return Verdict::Drop(DropReason::IcmpUnsupported);
        }
        // Checked before anything is chosen or tracked: a packet that cannot
        // be forwarded starts no flow (no entries, NAT port, round-robin
        // turn or connection count). DSR forwards it as it is.
        if spec.mode != NatMode::Dsr && m.ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExceeded);
        }
        // Stage 1.75 made this same keyed choice for this frame.
        let keyed = (self.hint.svc == svc.index && self.hint.ei != u16::MAX)
            .then_some(usize::from(self.hint.ei));
        let affinity = self.ct.table().affinity();
        let Some(ei) = self.select.choose(svc, key, now, affinity, keyed) else {
            return Verdict::Drop(DropReason::NoEndpoint);
        };
        let ep: &Endpoint = &svc.endpoints[ei];
        let Some(nh) = ep.next_hop else {
            return Verdict::Drop(DropReason::NoNeighbor);
        };
        if t.port(nh.port).is_none() {
            return Verdict::Drop(DropReason::NoPort);
        }
        let bport = if icmp || ep.port == 0 {
            m.dport
        } else {
            ep.port
        };
        let flow_mode = match spec.mode {
            NatMode::Dnat => mode::DNAT,
            NatMode::OneArm => mode::ONE_ARM,
            NatMode::FullNat => mode::FULL_NAT,
            NatMode::Dsr if spec.dsr_ipip => mode::DSR_IPIP,
            NatMode::Dsr => mode::DSR,
        };
        // The reply entry's key hash, when the NAT port search computed it.
        let (new_src, new_sport, reply_hash) = match spec.mode {
            NatMode::Dnat | NatMode::Dsr => (m.src, m.sport, None),
            NatMode::OneArm | NatMode::FullNat => {
                let Some(snat) = ep.snat_addr else {
                    return Verdict::Drop(DropReason::NatPortsExhausted);
                };
                // Stage 1.75 hashed the first candidate's reply key if it
                // predicted this very search (same endpoint, same cursor).
                let h = self.hint;
                let predicted = (h.svc == svc.index
                    && usize::from(h.ei) == ei
                    && h.cursor == self.nat_cursor
                    && h.reply_hash != 0)
                    .then_some(h.reply_hash);
                let to = Target {
                    addr: ep.addr,
                    port: bport,
                    proto: m.proto,
                };
                let found = NatWalk::new(t, snat, self.worker, self.workers).and_then(|walk| {
                    let shard = self.worker;
                    walk.search(&mut self.nat_cursor, self.ct.table(), shard, &to, predicted)
                });
                match found {
                    Some((addr, port, h)) => (addr, port, Some(h)),
                    None => return Verdict::Drop(DropReason::NatPortsExhausted),
                }
            }
        };
        let dsr = spec.mode == NatMode::Dsr;
        let mut fwd_flags = flags::SEEN;
        if m.proto == proto::TCP {
            fwd_flags |= tcp_flag_bits(m.tcp_flags);
        }
        let flow = FlowRecord {
            key: *key,
            xlat: Xlat {
                src: new_src,
                dst: if dsr { m.dst } else { ep.addr },
                sport: new_sport,
                dport: if icmp {
                    new_sport
                } else if dsr {
                    m.dport
                } else {
                    bport
                },
            },
            mode: flow_mode,
            timeout_s: spec.inactive_timeout_s,
            fwd_flags,
            rep_flags: 0,
            endpoint: ep.id,
            service: svc.index as u16,
            gen: t.generation as u32,
            to_backend: nh,
            to_client: (!dsr).then(|| NextHop {
                mac: ethernet::src_mac(f.data()),
                port: f.rx_port,
            }),
        };
        // The forward key is absent from this shard: `decide` looked it up,
        // or `restart_flow` just removed it. The NAT port search found the
        // reply key absent; without it (DNAT) an old entry may hold the key
        // and is overwritten.
        let (rep, rep_absent) = match reply_hash {
            _ if dsr => (0, false),
            Some(h) => (h, true),
            None => (self.ct.table().hash(&flow.reply_key()), false),
        };
        let at = Hashed {
            fwd: hash,
            fwd_absent: true,
            rep,
            rep_absent,
        };
        self.inserted |= bloom_bit(hash) | if dsr { 0 } else { bloom_bit(rep) };
        let (sel, counters) = (&mut self.select, &self.counters);
        let res = self
            .ct
            .insert_hashed(&flow, &at, now, &mut |r| on_removed(sel, counters, r));
        let fwd = flow.forward();
        let Ok((_, deltas)) = res else {
            return Verdict::Drop(DropReason::ConntrackFull);
        };
        self.select.opened(ep);
        bump(&self.counters.flows_created, 1);
        self.counters.endpoint_packet(ep.id, f.len as u64);
        // (The entry's checksum changes are this packet's: it is keyed by it.)
        self.apply_with(t, f, m, &fwd, deltas)
    }

    /// Rewrite a frame by a flow entry and pick its port.
    fn apply(&mut self, t: &Tables, f: &mut Frame<'_>, m: &PacketMeta, d: &FlowData) -> Verdict {
        self.apply_with(t, f, m, d, None)
    }

    /// [`Pipeline::apply`], with the entry's checksum changes if known
    /// ([`rewrite::fast_deltas`] from the frame's addresses and ports).
    fn apply_with(
        &mut self,
        t: &Tables,
        f: &mut Frame<'_>,
        m: &PacketMeta,
        d: &FlowData,
        deltas: Option<u32>,
    ) -> Verdict {
        let Some(port) = t.port(d.port) else {
            return Verdict::Drop(DropReason::NoPort);
        };
        let src_mac = port.mac;
        // DSR changes only the L2 header (the backend answers the client
        // directly, from the VIP), so not even the TTL is touched.
        let dsr = d.kind == Kind::Forward && mode::is_dsr(d.mode);
        if !dsr && m.ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExceeded);
        }
        // The common shape takes the fixed-offset rewrite (same bytes,
        // tested), with the entry's checksum changes, or (an entry that does
        // not keep them) those summed here.
        let simple = !dsr
            && m.v4
            && usize::from(m.l3_off) == wire::FAST_L3
            && usize::from(m.l4_off) == wire::FAST_L4
            && m.frag == Frag::None
            && (m.proto == proto::TCP || m.proto == proto::UDP)
            && {
                let new = TupleV4 {
                    src: d.new_src.v4_octets(),
                    dst: d.new_dst.v4_octets(),
                    sport: d.new_sport,
                    dport: d.new_dport,
                };
                let deltas = deltas.unwrap_or_else(|| {
                    let old = TupleV4 {
                        src: m.src.v4_octets(),
                        dst: m.dst.v4_octets(),
                        sport: m.sport,
                        dport: m.dport,
                    };
                    fast_deltas(old, new)
                });
                rewrite_fast(
                    f.data_mut(),
                    m.proto == proto::TCP,
                    deltas,
                    new,
                    d.mac,
                    src_mac,
                )
            };
        if !simple {
            if dsr {
                set_macs(f.data_mut(), d.mac, src_mac);
            } else {
                rewrite::forward(f.data_mut(), m, &d.xlat(), d.mac, src_mac);
            }
        }
        if d.kind == Kind::Forward && d.mode == mode::DSR_IPIP {
            if let Err(r) = ipip_wrap(t, &port.addrs, f, m, d) {
                return Verdict::Drop(r);
            }
        }
        Verdict::Tx(d.port)
    }

    /// An ICMP error: translate it like the flow it is about, or drop it.
    fn icmp_error(&mut self, t: &Tables, f: &mut Frame<'_>, m: &PacketMeta) -> Verdict {
        let ours = t.is_vip(m.dst) || t.is_snat_addr(m.dst);
        let Some(inner) = wire::parse_icmp_inner(f.data(), m) else {
            return if ours {
                Verdict::Drop(DropReason::IcmpUntracked)
            } else {
                Verdict::Pass
            };
        };
        // The error travels against the quoted packet: the entry for traffic in
        // the error's direction is keyed by the quoted packet reversed.
        let key = FlowKey {
            src: inner.dst,
            dst: inner.src,
            sport: inner.dport,
            dport: inner.sport,
            proto: inner.proto,
        };
        let hash = self.ct.table().hash(&key);
        let Some(hit) = self.find_anywhere(&key, hash) else {
            return if ours {
                Verdict::Drop(DropReason::IcmpUntracked)
            } else {
                Verdict::Pass
            };
        };
        let d = hit.data;
        if d.kind == Kind::Forward && mode::is_dsr(d.mode) {
            // DSR never rewrote the flow: forward the error unchanged to the
            // backend, the way the flow's own packets go (IPIP too).
            let Some(port) = t.port(d.port) else {
                return Verdict::Drop(DropReason::NoPort);
            };
            set_macs(f.data_mut(), d.mac, port.mac);
            if d.mode == mode::DSR_IPIP {
                if let Err(r) = ipip_wrap(t, &port.addrs, f, m, &d) {
                    return Verdict::Drop(r);
                }
            }
            self.counters.endpoint_packet(d.endpoint, f.len as u64);
            return Verdict::Tx(d.port);
        }
        let Some(port) = t.port(d.port) else {
            return Verdict::Drop(DropReason::NoPort);
        };
        if m.ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExceeded);
        }
        let data = f.data_mut();
        // The quoted packet must look like the one the receiver of the
        // error sent; the error comes from the VIP (or SNAT address).
        translate_icmp_error(data, m, &inner, &d.xlat());
        set_macs(data, d.mac, port.mac);
        self.counters.endpoint_packet(d.endpoint, f.len as u64);
        Verdict::Tx(d.port)
    }

    /// Answer an echo request to a VIP that has no ICMP rule: the VIP is alive.
    fn echo_reply(&mut self, t: &Tables, f: &mut Frame<'_>, m: &PacketMeta) -> Verdict {
        let Some(port) = t.port(f.rx_port) else {
            return Verdict::Drop(DropReason::NoPort);
        };
        let port_mac = port.mac;
        answer_echo(f.data_mut(), m, port_mac);
        bump(&self.counters.icmp_echo_replies, 1);
        Verdict::Tx(f.rx_port)
    }
}

impl FlowData {
    /// DSR keeps the VIP as destination; the backend address comes from the tables.
    fn new_dst_backend(&self, t: &Tables) -> Ip16 {
        t.endpoint(self.endpoint)
            .map_or(self.new_dst, |(_, e)| e.addr)
    }
}

/// Wrap the packet `m` of a DSR-over-IPIP flow `d` for its backend: an
/// outer IPv4 header from the transmit port's IPv4 address (`addrs`).
fn ipip_wrap(
    t: &Tables,
    addrs: &[std::net::IpAddr],
    f: &mut Frame<'_>,
    m: &PacketMeta,
    d: &FlowData,
) -> Result<(), DropReason> {
    let outer_src = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .map(|a| Ip16::from(*a))
        .ok_or(DropReason::NoPort)?;
    if encap_ipip(f, m, outer_src, d.new_dst_backend(t)) {
        Ok(())
    } else {
        Err(DropReason::NoRoom)
    }
}

/// The port a packet is matched against rules with: ICMP rules use port 0
/// (the echo identifier in `dport` is a flow key, not a service port).
fn service_port(m: &PacketMeta) -> u16 {
    if proto::is_icmp(m.proto) {
        0
    } else {
        m.dport
    }
}

/// The [`flags`] bits a TCP segment with flags `tcp` sets: FIN, SYN and
/// RST share their TCP bit positions; ACK counts only without SYN.
#[inline(always)]
const fn tcp_flag_bits(tcp: u8) -> u8 {
    use tcp_flags::{ACK, FIN, RST, SYN};
    const _: () = assert!(flags::FIN == FIN && flags::SYN == SYN && flags::RST == RST);
    let ack_only = (tcp & (ACK | SYN) == ACK) as u8;
    (tcp & (FIN | SYN | RST)) | (ack_only * flags::ACK)
}

/// [`flags::SEEN`] with the [`tcp_flag_bits`] of every TCP flags byte: the
/// fast path's one load per segment.
static TCP_SEEN_BITS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = flags::SEEN | tcp_flag_bits(i as u8);
        i += 1;
    }
    t
};

impl Pipeline {
    /// The established-flow fast path for a frame [`wire::parse_fast`]
    /// accepted, whose flow stage 1.5 found a candidate slot for in this
    /// worker's shard: `Some(port)` if it forwarded the frame. It does
    /// exactly what [`Pipeline::decide`] → [`Pipeline::tracked`] →
    /// [`Pipeline::apply`] would, for the common case only; `None` (with
    /// nothing changed) hands the frame to that slow path: no entry here, an
    /// entry in another shard, a forward entry whose next hop predates the
    /// tables or that was idle for over a second, DSR, no such port, TTL ≤ 1.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn fast(
        counters: &CounterBlock,
        t: &Tables,
        now: u64,
        ct: ShardView<'_>,
        ports: &mut PortCache,
        f: &mut Frame<'_>,
        w: &[u64; 5],
        cand: usize,
    ) -> Option<PortId> {
        let hit = ct.read_v4(cand, w[1], w[3], w[4])?;
        if now.saturating_sub(hit.last_seen) > MIN_IDLE_CHECK_NS
            || (hit.kind() == Kind::Forward && hit.gen16() != t.generation as u16)
        {
            // Idle long enough that the flow may have expired (in either
            // direction), or a table change under a forward entry: the slow
            // path decides. (DSR entries take the general form, so the fast
            // read never takes them.)
            return None;
        }
        debug_assert!(!mode::is_dsr(hit.mode()));
        let port_id = hit.port();
        let port_mac = ports.src(t, port_id)?;
        let bytes = f.len as u64;
        // parse_fast checked that the frame holds its headers.
        let data = f.data_mut();
        let x = || FastXlat {
            deltas: hit.deltas(),
            src: hit.new_src_v4(),
            dst: hit.new_dst_v4(),
            ports: hit.ports_wire(),
            mac_dst: hit.mac8(),
            src_type: port_mac,
        };
        if w[4] as u8 == proto::TCP {
            let h = data.first_chunk_mut::<FAST_TCP_END>()?;
            if h[wire::FAST_L3 + ipv4::field::TTL] <= 1 {
                return None;
            }
            // (The rewrite first, which consumes most of what the read
            // loaded; it leaves the TCP flags as they are.)
            rewrite_fast_tcp(h, &x());
            hit.touch(
                now,
                bytes,
                TCP_SEEN_BITS[usize::from(h[wire::FAST_L4 + tcp::field::FLAGS])],
            );
            counters.endpoint_packet(hit.endpoint(), bytes);
        } else {
            let h = data.first_chunk_mut::<FAST_UDP_END>()?;
            if h[wire::FAST_L3 + ipv4::field::TTL] <= 1 {
                return None;
            }
            rewrite_fast_udp(h, &x());
            hit.touch(now, bytes, flags::SEEN);
            counters.endpoint_packet(hit.endpoint(), bytes);
        }
        Some(port_id)
    }

    /// The new-flow path: the first packet of an IPv4 TCP or UDP flow (a
    /// frame [`wire::parse_fast`] took, key words `w`, hash `hash`) that
    /// stage 1.75 found a service and a Maglev/persist backend for (`h`),
    /// whose key is known absent from this worker's shard: `Some(port)` if
    /// it tracked and forwarded the frame. It does exactly what
    /// [`Pipeline::new_flow`] → [`Pipeline::apply_with`] would (the same
    /// entries in the same slots, counters, NAT port and bytes; tested
    /// against it), from the words in hand and without a re-parse, for the
    /// common case only; `None` (with nothing changed) hands the frame to
    /// that general path: a rule with `allowedSources`, DSR, an IPv6
    /// backend or source-NAT address, no next hop or port, TTL ≤ 1, the
    /// first source-NAT candidate taken, or an insert that needs more than
    /// a free slot ([`ShardWriter::insert_fresh_v4`]).
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn fresh(
        &mut self,
        t: &Tables,
        now: u64,
        ports: &mut PortCache,
        f: &mut Frame<'_>,
        w: &[u64; 5],
        hash: u64,
        h: &NewFlowHint,
    ) -> Option<PortId> {
        let svc = t.services.get(h.svc as usize)?;
        let spec = &svc.spec;
        let ep = svc.endpoints.get(usize::from(h.ei))?;
        let nh = ep.next_hop?;
        if !spec.allowed_sources.is_empty() || !ep.addr.is_v4() {
            return None;
        }
        let port_mac = ports.src(t, nh.port)?;
        let proto = w[4] as u8;
        let (sport, dport) = ((w[4] >> 32) as u16, (w[4] >> 16) as u16);
        let bport = if ep.port == 0 { dport } else { ep.port };
        let ep_hi = ep.addr.words()[1];
        let rep_w4 = (u64::from(bport) << 32) | u64::from(proto);
        let hasher = self.ct.table().hasher();
        // (source address word, source port, reply key hash, NAT cursor after)
        let (flow_mode, src_hi, new_sport, rep_hash, cursor) = match spec.mode {
            NatMode::Dnat => (
                mode::DNAT,
                w[1],
                sport,
                hasher.hash_v4(ep_hi, w[1], rep_w4 | (u64::from(sport) << 16)),
                self.nat_cursor,
            ),
            NatMode::OneArm | NatMode::FullNat => {
                // The port search's first candidate (stage 1.75 took it at
                // this cursor if it predicted this search); if it is taken,
                // the general path searches on from the same cursor.
                let (src_hi, port, rep_hash) =
                    if h.cursor == self.nat_cursor && h.reply_hash != 0 && h.nat_src != 0 {
                        (h.nat_src, h.nat_port, h.reply_hash)
                    } else {
                        let nat = NatWalk::new(t, ep.snat_addr?, self.worker, self.workers)?;
                        let (addr, port) = nat.candidate(self.nat_cursor);
                        if !addr.is_v4() {
                            return None;
                        }
                        let src_hi = addr.words()[1];
                        let rep_hash =
                            hasher.hash_v4(ep_hi, src_hi, rep_w4 | (u64::from(port) << 16));
                        (src_hi, port, rep_hash)
                    };
                let m = if spec.mode == NatMode::OneArm {
                    mode::ONE_ARM
                } else {
                    mode::FULL_NAT
                };
                (m, src_hi, port, rep_hash, self.nat_cursor.wrapping_add(1))
            }
            NatMode::Dsr => return None,
        };
        let rx_port = f.rx_port;
        let bytes = f.len as u64;
        let data = f.data_mut();
        let client_mac = ethernet::src_mac(data);
        let tcp = proto == proto::TCP;
        // parse_fast checked that the frame holds its headers.
        let (ttl, tcp_flags) = if tcp {
            let hd = data.first_chunk::<FAST_TCP_END>()?;
            (
                hd[wire::FAST_L3 + ipv4::field::TTL],
                hd[wire::FAST_L4 + tcp::field::FLAGS],
            )
        } else {
            (
                data.first_chunk::<FAST_UDP_END>()?[wire::FAST_L3 + ipv4::field::TTL],
                0,
            )
        };
        if ttl <= 1 {
            return None;
        }
        let v4 = |hi: u64| ((hi >> 32) as u32).to_le_bytes();
        let mut fwd_flags = flags::SEEN;
        if tcp {
            fwd_flags |= tcp_flag_bits(tcp_flags);
        }
        let flow = NewFlowV4 {
            key: TupleV4 {
                src: v4(w[1]),
                dst: v4(w[3]),
                sport,
                dport,
            },
            proto,
            xlat: TupleV4 {
                src: v4(src_hi),
                dst: v4(ep_hi),
                sport: new_sport,
                dport: bport,
            },
            fwd_flags,
            mode: flow_mode,
            timeout_s: spec.inactive_timeout_s,
            endpoint: ep.id,
            service: svc.index as u16,
            gen: t.generation as u32,
            to_backend: nh,
            to_client: NextHop {
                mac: client_mac,
                port: rx_port,
            },
        };
        let (_, deltas) = self.ct.insert_new_v4(&flow, hash, rep_hash, now)?;
        if spec.sel == Selection::Persist {
            let client = Ip16::from_words([0, w[1]]);
            self.ct
                .table()
                .affinity()
                .set(svc.rule_key, &client, ep.id, now);
        }
        self.nat_cursor = cursor;
        self.inserted |= bloom_bit(hash) | bloom_bit(rep_hash);
        self.select.opened(ep);
        bump(&self.counters.flows_created, 1);
        self.counters.endpoint_packet(ep.id, bytes);
        let (s, d, m) = (new_sport.to_be_bytes(), bport.to_be_bytes(), nh.mac.0);
        let x = FastXlat {
            deltas,
            src: flow.xlat.src,
            dst: flow.xlat.dst,
            ports: [s[0], s[1], d[0], d[1]],
            mac_dst: [m[0], m[1], m[2], m[3], m[4], m[5], 0, 0],
            src_type: port_mac,
        };
        if tcp {
            rewrite_fast_tcp(data.first_chunk_mut::<FAST_TCP_END>()?, &x);
        } else {
            rewrite_fast_udp(data.first_chunk_mut::<FAST_UDP_END>()?, &x);
        }
        Some(nh.port)
    }

    /// Stage 1.75 for a frame [`wire::parse_fast`] took (key words `w`)
    /// with no candidate entry: if it looks like the first packet of a new
    /// flow (at `now`), its service and keyed backend choice, and the hash of the reply
    /// entry it would get with the NAT port at `cursor` (advanced if so; 0
    /// if no prediction). Changes nothing but `cursor`: stage 2 decides.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn predict<'t>(
        &self,
        t: &'t Tables,
        data: &[u8],
        w: &[u64; 5],
        room: bool,
        now: u64,
        cursor: &mut u32,
        last: &mut LastLookups<'t>,
    ) -> (NewFlowHint, u64) {
        let proto = w[4] as u8;
        let opening = match proto {
            proto::TCP => data
                .get(wire::FAST_L4 + tcp::field::FLAGS)
                .is_some_and(|&f| f & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN),
            proto::UDP => true,
            _ => false,
        };
        if !opening {
            return (NewFlowHint::NONE, 0);
        }
        // (Words 0 and 2 of a fast-parsed frame are not written: an IPv4
        // key's are zero.)
        let key = FlowKey {
            src: Ip16::from_words([0, w[1]]),
            dst: Ip16::from_words([0, w[3]]),
            sport: (w[4] >> 32) as u16,
            dport: (w[4] >> 16) as u16,
            proto,
        };
        let Some(svc) = last.service(t, w) else {
            return (NewFlowHint::NONE, 0);
        };
        let mut hint = NewFlowHint {
            svc: svc.index,
            room,
            ..NewFlowHint::NONE
        };
        let Some(ei) = select::keyed(self.ct.table().affinity(), svc, &key, now) else {
            return (hint, 0);
        };
        hint.ei = ei as u16;
        let spec = &svc.spec;
        let Some(ep) = svc.endpoints.get(ei) else {
            return (hint, 0);
        };
        let (NatMode::OneArm | NatMode::FullNat, Some(snat), Some(_)) =
            (spec.mode, ep.snat_addr, ep.next_hop)
        else {
            return (hint, 0);
        };
        if !spec.allowed_sources.is_empty()
            && !spec
                .allowed_sources
                .iter()
                .any(|c| c.contains(key.src.into()))
        {
            return (hint, 0);
        }
        let Some(nat) = last.nat(t, snat, self.worker, self.workers) else {
            return (hint, 0);
        };
        let (addr, port) = nat.candidate(*cursor);
        hint.cursor = *cursor;
        *cursor = cursor.wrapping_add(1);
        let to = Target {
            addr: ep.addr,
            port: if ep.port == 0 { key.dport } else { ep.port },
            proto,
        };
        hint.reply_hash = self.ct.table().hash(&to.reply_key(addr, port));
        if addr.is_v4() {
            (hint.nat_src, hint.nat_port) = (addr.words()[1], port);
        }
        (hint, hint.reply_hash)
    }

    /// The slow path: every frame the fast path does not take.
    #[inline(never)]
    fn slow(
        &mut self,
        t: &Tables,
        now: u64,
        f: &mut Frame<'_>,
        meta: &Result<PacketMeta, DropReason>,
        hash: u64,
    ) -> Verdict {
        match meta {
            Err(r) => Verdict::Drop(*r),
            Ok(m) if !m.is_ip() => Verdict::Pass,
            Ok(m) => {
                let m = *m;
                let key = FlowKey {
                    src: m.src,
                    dst: m.dst,
                    sport: m.sport,
                    dport: m.dport,
                    proto: m.proto,
                };
                let v = self.decide(t, now, f, &m, &key, hash);
                if m.frag == Frag::First && matches!(v, Verdict::Tx(_)) {
                    self.frags.remember(&m, key, hash, now);
                }
                v
            }
        }
    }

    /// The slow path of a frame [`wire::parse_fast`] took (parsed again:
    /// cheaper than keeping every frame's parse for the few that need it).
    #[inline(never)]
    fn slow_fast(&mut self, t: &Tables, now: u64, f: &mut Frame<'_>, hash: u64) -> Verdict {
        let meta = match wire::parse_fast(f.data()) {
            Some(q) => Ok(q.to_meta()),
            None => wire::parse(f.data()),
        };
        self.slow(t, now, f, &meta, hash)
    }
}

/// [`FlowKey::words`] of an IPv4 5-tuple, straight from the frame's bytes
/// (an IPv4 address maps to `::ffff:a.b.c.d`: low word 0, high word
/// `0xffff_0000 | a.b.c.d << 32` in little-endian byte order).
#[inline(always)]
fn fast_words(q: &FastMeta) -> [u64; 5] {
    [
        0,
        v4_word(q.src),
        0,
        v4_word(q.dst),
        (u64::from(q.sport) << 32) | (u64::from(q.dport) << 16) | u64::from(q.proto),
    ]
}

/// The last port the fast path looked up in this batch's tables, and its
/// MAC (most frames of a batch leave by the same port; the tables do not
/// change during a batch, so this is exactly [`Tables::port`]).
#[derive(Default)]
struct PortCache {
    /// The port id plus one (0: none yet).
    id: u32,
    /// Its MAC and the IPv4 ethertype ([`src_mac_ipv4`]).
    src: [u8; 8],
}

impl PortCache {
    /// Port `id`'s MAC as the fast rewrite writes it (with the IPv4
    /// ethertype after it).
    #[inline(always)]
    fn src(&mut self, t: &Tables, id: PortId) -> Option<[u8; 8]> {
        if self.id == u32::from(id) + 1 {
            return Some(self.src);
        }
        let src = src_mac_ipv4(t.port(id)?.mac);
        (self.id, self.src) = (u32::from(id) + 1, src);
        Some(src)
    }
}

/// What stage 1.75 last looked up in this batch's tables: the service by
/// the IPv4 destination and `dport << 16 | proto` it was looked up for, and
/// the source-NAT walk by its address (a SYN flood, or a busy service,
/// brings batches of new flows to one rule; the tables do not change
/// during a batch, so these are exactly what looking up again gives).
#[derive(Default)]
struct LastLookups<'t> {
    svc: Option<(u64, u32, Option<&'t Service>)>,
    nat: Option<(Ip16, Option<NatWalk<'t>>)>,
}

impl<'t> LastLookups<'t> {
    /// [`Tables::lookup`] of the IPv4 key words `w` ([`FlowKey::words`];
    /// words 0 and 2 are not read).
    #[inline(always)]
    fn service(&mut self, t: &'t Tables, w: &[u64; 5]) -> Option<&'t Service> {
        let (dst, port_proto) = (w[3], w[4] as u32);
        match self.svc {
            Some((d, pp, svc)) if d == dst && pp == port_proto => svc,
            _ => {
                let svc = t.lookup(
                    Ip16::from_words([0, dst]),
                    port_proto as u8,
                    (port_proto >> 16) as u16,
                );
                self.svc = Some((dst, port_proto, svc));
                svc
            }
        }
    }

    /// [`NatWalk::new`] for source-NAT address `snat`.
    #[inline(always)]
    fn nat(
        &mut self,
        t: &'t Tables,
        snat: Ip16,
        worker: usize,
        workers: usize,
    ) -> Option<NatWalk<'t>> {
        match self.nat {
            Some((a, walk)) if a == snat => walk,
            _ => {
                let walk = NatWalk::new(t, snat, worker, workers);
                self.nat = Some((snat, walk));
                walk
            }
        }
    }
}

/// Frames ahead of the one being decided whose first line is prefetched:
/// stage 1 read every header, but frame buffers sit a power of two apart
/// (2–4 KiB), so 64 headers share a few L1 sets and most are evicted by
/// the time stage 2 comes back to them.
const FRAME_PREFETCH_AHEAD: usize = 4;

impl Processor for Pipeline {
    fn process_batch(
        &mut self,
        tables: &Tables,
        now_ns: u64,
        frames: &mut [Frame<'_>],
        verdicts: &mut [Verdict],
    ) {
        self.select.follow(tables);
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
        let hasher = *table.hasher();
        let mut ports = PortCache::default();
        let Scratch {
            metas,
            parsed,
            words,
            hashes,
            cands,
            hints,
            reply_hashes,
        } = &mut *sc;
        // Counted in locals and stored once per batch (single writer; control
        // reads counters that may be a batch old anyway).
        let (mut rx_packets, mut rx_bytes) = (0u64, 0u64);
        let (mut tx_packets, mut tx_bytes, mut passed) = (0u64, 0u64, 0u64);
        for (fc, vc) in frames.chunks_mut(CHUNK).zip(verdicts.chunks_mut(CHUNK)) {
            // chunks_mut yields at most CHUNK frames; saying so lets the
            // compiler drop the bounds checks on the scratch arrays.
            let n = fc.len().min(vc.len()).min(CHUNK);
            let (fc, vc) = (&mut fc[..n], &mut vc[..n]);
            self.inserted = 0;
            // Stage 1: parse everything and prefetch the flow-table tag lines.
            for (i, f) in fc.iter().enumerate() {
                rx_packets += 1;
                rx_bytes += f.len as u64;
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
                mine.prefetch(hashes[i]);
            }
            // Stage 1.5: the tag lines have had a stage to arrive; find each
            // frame's candidate slot in its first bucket and prefetch it;
            // with none there, prefetch the second bucket's tag line.
            // (Whether any fast-parsed frame has no candidate: only then
            // does stage 1.6 run, and can stage 1.75 find a new flow.)
            let mut unmatched = false;
            for i in 0..n {
                let p = parsed[i];
                cands[i] = NO_SLOT;
                if p & 1 != 0 {
                    let c = mine.probe(hashes[i]);
                    cands[i] = c;
                    if c == NO_SLOT {
                        mine.prefetch_alt(hashes[i]);
                        unmatched |= p == PARSED_FAST;
                    } else if p == PARSED_FULL_IP {
                        // Bound for the slow path, which reads the whole
                        // slot. (The fast path reads only a line-form
                        // entry's first line, which the probe prefetched.)
                        mine.prefetch_second(c);
                    }
                }
            }
            // Stage 1.6: the second buckets of those frames (an entry goes
            // there only when its first bucket was full).
            if unmatched {
                unmatched = false;
                for i in 0..n {
                    if parsed[i] == PARSED_FAST && cands[i] == NO_SLOT {
                        cands[i] = mine.probe_alt(hashes[i]);
                        unmatched |= cands[i] == NO_SLOT;
                    }
                }
            }
            // Stage 1.75: frames with no candidate that look like the first
            // packet of a new flow (TCP SYN, UDP): look up the service and
            // the backend now, predict the source-NAT port and prefetch the
            // reply entry's tag lines; then, once those lines are in, probe
            // the reply buckets so their free slots are prefetched too.
            if unmatched {
                let mut cursor = self.nat_cursor;
                let mut any = false;
                let mut last = LastLookups::default();
                for i in 0..n {
                    (hints[i], reply_hashes[i]) = match fc.get(i) {
                        Some(f) if parsed[i] == PARSED_FAST && cands[i] == NO_SLOT => {
                            let room = mine.has_room(hashes[i]);
                            let w = &words[i];
                            self.predict(tables, f.data(), w, room, now_ns, &mut cursor, &mut last)
                        }
                        _ => (NewFlowHint::NONE, 0),
                    };
                    if reply_hashes[i] != 0 {
                        // (The port search looks in both buckets.)
                        mine.prefetch(reply_hashes[i]);
                        mine.prefetch_alt(reply_hashes[i]);
                        any = true;
                    }
                }
                if any {
                    for &h in reply_hashes.iter().take(n) {
                        if h != 0 {
                            mine.probe(h);
                        }
                    }
                }
            }
            // Stage 2: the established fast path, for every frame it takes
            // (bit i of `done`). Kept apart from the slow paths, its loop
            // holds its state in registers. It moves no entry, so its
            // frames see the table as the batch found it: a frame decided
            // later in stage 2.5 may still insert a flow that moves or
            // evicts one of theirs, as if they had come just before it. A
            // flow's frames that it leaves (a table change, an idle flow)
            // all go to stage 2.5, in their order.
            let mut done = 0u64;
            for i in 0..n {
                if let Some(ahead) = fc.get(i + FRAME_PREFETCH_AHEAD) {
                    prefetch_addr(ahead.buf.as_ptr());
                }
                let (Some(f), Some(v)) = (fc.get_mut(i), vc.get_mut(i)) else {
                    break;
                };
                // (A candidate of NO_SLOT is out of range: no fast read.)
                if parsed[i] == PARSED_FAST {
                    if let Some(port) = Pipeline::fast(
                        &counters, tables, now_ns, mine, &mut ports, f, &words[i], cands[i],
                    ) {
                        *v = Verdict::Tx(port);
                        tx_packets += 1;
                        tx_bytes += f.len as u64;
                        done |= 1 << i;
                    }
                }
            }
            // Stage 2.5: every other frame, in order.
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
                if parsed[i] == PARSED_FAST {
                    // A new flow with a pure backend choice made in stage
                    // 1.75, whose key had no tag in either bucket then: the
                    // new-flow path (which checks the tags again).
                    if unmatched
                        && cands[i] == NO_SLOT
                        && hints[i].ei != u16::MAX
                        && hints[i].room
                        && self.fresh_path
                    {
                        if let Some(port) = self.fresh(
                            tables, now_ns, &mut ports, f, &words[i], hashes[i], &hints[i],
                        ) {
                            *v = Verdict::Tx(port);
                            tx_packets += 1;
                            tx_bytes += f.len as u64;
                            continue;
                        }
                    }
                }
                *v = if parsed[i] == PARSED_FAST {
                    // (Stage 1.75 wrote hints only if it ran.)
                    if unmatched {
                        self.hint = hints[i];
                        // No tag in either bucket then, and not inserted since.
                        self.hint.absent =
                            cands[i] == NO_SLOT && self.inserted & bloom_bit(hashes[i]) == 0;
                    }
                    let v = self.slow_fast(tables, now_ns, f, hashes[i]);
                    self.hint = NewFlowHint::NONE;
                    v
                } else {
                    self.slow(tables, now_ns, f, &metas[i], hashes[i])
                };
                match *v {
                    Verdict::Tx(_) => {
                        tx_packets += 1;
                        tx_bytes += f.len as u64;
                    }
                    Verdict::Pass => passed += 1,
                    Verdict::Drop(r) => counters.count_drop(r),
                }
            }
        }
        bump(&counters.rx_packets, rx_packets);
        bump(&counters.rx_bytes, rx_bytes);
        bump(&counters.tx_packets, tx_packets);
        bump(&counters.tx_bytes, tx_bytes);
        bump(&counters.passed, passed);
        self.scratch = Some(sc);
        self.table = Some(table);
        self.expire_due(now_ns);
    }

    fn idle(&mut self, now_ns: u64) {
        self.expire_due(now_ns);
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
