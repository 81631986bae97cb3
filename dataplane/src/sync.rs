//! Connection-state sync between the nodes of an HA group, the dataplane's
//! side: what a flow is when it travels between nodes ([`SyncedFlow`]), the
//! events workers hand to control ([`SyncEvent`]), and the bounded
//! lock-free queues that carry them each way ([`sync_queues`]).
//!
//! Each worker owns one end of two single-producer single-consumer rings:
//! - *out*: the worker pushes an event for every flow it opens and every
//!   flow it ends that it forwarded packets of (not the copies other
//!   members sent that saw no packet here); control's sync thread drains
//!   every worker's ring, batches the events and sends them to the other
//!   members. A full ring is counted ([`SyncHub::dropped`]) and the event
//!   lost; the worker never waits.
//! - *in*: control pushes the flows (and ends of flows) other members sent,
//!   to every worker ([`SyncHub::deliver`]); each worker drains its ring
//!   once per batch (and when idle) and installs them in its own shard of
//!   the flow table, as they were on the node that opened them (the same
//!   backend, translation and source-NAT port), without counting them as
//!   flows it opened ([`crate::pipeline::Pipeline::set_sync`]).
//!
//! Why every worker: which queue, hence which worker, the NIC hands a
//! flow's packets to is the NIC's hash, which this node cannot compute, and
//! a worker's fast paths read only its own shard. With a copy in every
//! shard, the forward packets find the flow on whichever worker they reach,
//! the backend's answers likewise, and every worker's source-NAT port
//! search sees the flow's port taken. The price: a node keeps a copy per
//! worker of each flow it adopted (size the table for it), and its dumps
//! merge the copies ([`dump`]).
//!
//! A push or pop is a few loads and stores on the ring's two indices: no
//! allocation, lock or syscall ([`rtrb`]).
//!
//! Node-independent: a [`SyncedFlow`] names its rule by what the client
//! addressed (VIP, protocol, port) and its backend by address and port, so
//! the receiving node maps both to its own tables; next hops are the
//! receiver's own, but for the client's last hop, which is the same
//! neighbour on every member of the segment.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::conntrack::{Conntrack, FlowKey, FlowRecord, NewFlowV4};
use crate::frame::PortId;
use crate::net::{Ip16, MacAddr};
use crate::prefetch::prefetch_addr;
use crate::tables::{Endpoint, Tables};
use crate::wire::proto;
use crate::wire::rewrite::{TupleV4, Xlat};

/// A flow as it travels between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncedFlow {
    /// The forward key: the client's packet as it arrives at the VIP.
    pub key: FlowKey,
    /// What the client's packets become (on the node that opened it).
    pub xlat: Xlat,
    /// The backend: its address and port (in DSR, where `xlat.dst` stays
    /// the VIP, the only place the backend is named).
    pub backend: Ip16,
    /// The backend's port (0: the rule keeps the client's port).
    pub backend_port: u16,
    /// The rule's NAT mode number ([`crate::conntrack::mode`]).
    pub mode: u8,
    /// The rule's idle timeout, seconds.
    pub timeout_s: u32,
    /// [`crate::conntrack::flags`] seen from the client.
    pub fwd_flags: u8,
    /// [`crate::conntrack::flags`] seen from the backend.
    pub rep_flags: u8,
    /// The client's last hop (the client, or the router before it), whose
    /// MAC is the same seen from any member of the segment. `None`: the
    /// flow has no reply entry (DSR).
    pub client_mac: Option<MacAddr>,
    /// The port the opening node received the client's packets on (its
    /// port id; 0 for DSR). A receiver sends the backend's answers out of
    /// its port of the same id if it has one and no next hop of its own
    /// for the client (members configured with the same interfaces in the
    /// same order number their ports alike).
    pub client_port: PortId,
    /// When the opening node saw the flow's first packet (Unix time, ns):
    /// the receiver measures the sync lag from it. (A flow from a dump
    /// carries the time of the dump.)
    pub opened_unix_ns: u64,
}

impl SyncedFlow {
    /// The flow `rec` to endpoint `ep` (its backend), first seen at
    /// `opened_unix_ns`.
    pub fn of(rec: &FlowRecord, ep: &Endpoint, opened_unix_ns: u64) -> SyncedFlow {
        SyncedFlow {
            key: rec.key,
            xlat: rec.xlat,
            backend: ep.addr,
            backend_port: ep.port,
            mode: rec.mode,
            timeout_s: rec.timeout_s,
            fwd_flags: rec.fwd_flags,
            rep_flags: rec.rep_flags,
            client_mac: rec.to_client.map(|h| h.mac),
            client_port: rec.to_client.map_or(0, |h| h.port),
            opened_unix_ns,
        }
    }

    /// The flow `rec` of this node's table, its backend resolved in `t`
    /// (the tables it was opened or last validated against, or later
    /// ones), stamped `opened_unix_ns`; `None` if its endpoint is no longer
    /// configured (the flow is re-selected on its next packet: nothing
    /// worth handing on).
    pub fn from_record(rec: &FlowRecord, t: &Tables, opened_unix_ns: u64) -> Option<SyncedFlow> {
        let (_, ep) = t.endpoint(rec.endpoint)?;
        ep.holds_flow_of(rec.gen)
            .then(|| SyncedFlow::of(rec, ep, opened_unix_ns))
    }

    /// The rule the flow belongs to, as [`Tables::lookup`] takes it: (VIP,
    /// protocol, port), port 0 for ICMP ([`FlowRecord::rule`]).
    pub fn rule(&self) -> (Ip16, u8, u16) {
        let k = &self.key;
        let port = if proto::is_icmp(k.proto) { 0 } else { k.dport };
        (k.dst, k.proto, port)
    }
}

/// Why a worker could not install a flow another member sent: one reason
/// per case, counted per worker
/// ([`crate::counters::CounterBlock::sync_adopt_failure`]).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AdoptFailure {
    /// No rule here for the flow's VIP, protocol and port.
    NoRule = 0,
    /// The rule here has no endpoint with the flow's backend address and
    /// port.
    NoBackend = 1,
    /// No next hop (or no port of this node's) towards the backend.
    NoNextHop = 2,
    /// No room in the worker's shard (every candidate was protected).
    TableFull = 3,
}

impl AdoptFailure {
    /// Every reason, in numeric order.
    pub const ALL: [AdoptFailure; 4] = [
        AdoptFailure::NoRule,
        AdoptFailure::NoBackend,
        AdoptFailure::NoNextHop,
        AdoptFailure::TableFull,
    ];
    /// Size of a counter array indexed by `reason as usize`.
    pub const SLOTS: usize = 4;

    /// Stable snake_case name, for a `reason` label in metrics.
    pub fn name(self) -> &'static str {
        match self {
            AdoptFailure::NoRule => "no_rule",
            AdoptFailure::NoBackend => "no_backend",
            AdoptFailure::NoNextHop => "no_next_hop",
            AdoptFailure::TableFull => "table_full",
        }
    }
}

/// This node's flows for another member: one per flow (a node keeps a copy
/// per worker of the flows it adopted: their flags are merged), stamped
/// `stamp_unix_ns`. With `since` (monotonic ns, the workers' clock), only
/// the flows this node forwarded packets of and saw a packet of at or
/// after `since` ([`Conntrack::sync_flows`]): the holder's periodic
/// refresh, so that the other members' copies do not expire. Flows whose
/// endpoint is no longer in `t` are left out. Allocates and reads the
/// whole table: control plane only.
pub fn dump(ct: &Conntrack, t: &Tables, since: Option<u64>, stamp_unix_ns: u64) -> Vec<SyncedFlow> {
    ct.sync_flows(since)
        .iter()
        .filter_map(|r| SyncedFlow::from_record(r, t, stamp_unix_ns))
        .collect()
}

/// What a worker tells control, or control a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncEvent {
    /// A flow was opened (or, from a dump, exists).
    Open(SyncedFlow),
    /// The flow with this forward key ended (closed, expired, evicted or
    /// re-selected).
    Close(FlowKey),
}

/// Default capacity of each ring, in events.
pub const DEFAULT_QUEUE: usize = 16 * 1024;

/// An IPv4 flow's opening or end as a worker hands it to control, in one
/// cache line (a [`SyncEvent`] takes two and a half: its addresses are
/// 16-byte [`Ip16`]s). Writing the event into a ring slot the control
/// thread read last is a cache miss per new flow; one line instead of
/// three is most of what announcing a flow costs on the new-flow path.
///
/// Every flow of an IPv4 rule is IPv4 throughout (a rule's endpoints are
/// of its VIP's family), so all of such a flow's events travel this way,
/// in one ring, in order; IPv6 flows' take the [`SyncEvent`] ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct EventV4 {
    key: TupleV4,
    xlat: TupleV4,
    opened_unix_ns: u64,
    timeout_s: u32,
    backend: [u8; 4],
    backend_port: u16,
    client_port: PortId,
    client_mac: [u8; 6],
    proto: u8,
    mode: u8,
    fwd_flags: u8,
    rep_flags: u8,
    /// [`EventV4::OPEN`], [`EventV4::OPEN_DSR`] (no client MAC) or
    /// [`EventV4::CLOSE`] (only `key` and `proto` meaningful).
    what: u8,
}

impl EventV4 {
    const OPEN: u8 = 0;
    const OPEN_DSR: u8 = 1;
    const CLOSE: u8 = 2;

    /// The flow the IPv4 new-flow path opened, to endpoint `ep`, at
    /// `opened_unix_ns`.
    #[inline]
    pub fn open(f: &NewFlowV4, ep: &Endpoint, opened_unix_ns: u64) -> EventV4 {
        EventV4 {
            key: f.key,
            xlat: f.xlat,
            opened_unix_ns,
            timeout_s: f.timeout_s,
            backend: ep.addr.v4_octets(),
            backend_port: ep.port,
            client_port: f.to_client.port,
            client_mac: f.to_client.mac.0,
            proto: f.proto,
            mode: f.mode,
            fwd_flags: f.fwd_flags,
            rep_flags: 0,
            what: EventV4::OPEN,
        }
    }

    /// `ev` in one line, if it is an IPv4 flow's.
    #[inline]
    pub fn compact(ev: &SyncEvent) -> Option<EventV4> {
        let (key, f) = match ev {
            SyncEvent::Open(f) => (&f.key, Some(f)),
            SyncEvent::Close(k) => (k, None),
        };
        if !key.src.is_v4() {
            return None;
        }
        let tuple = |src: &Ip16, dst: &Ip16, sport, dport| TupleV4 {
            src: src.v4_octets(),
            dst: dst.v4_octets(),
            sport,
            dport,
        };
        let mut e = EventV4 {
            key: tuple(&key.src, &key.dst, key.sport, key.dport),
            xlat: TupleV4::default(),
            opened_unix_ns: 0,
            timeout_s: 0,
            backend: [0; 4],
            backend_port: 0,
            client_port: 0,
            client_mac: [0; 6],
            proto: key.proto,
            mode: 0,
            fwd_flags: 0,
            rep_flags: 0,
            what: EventV4::CLOSE,
        };
        if let Some(f) = f {
            e.xlat = tuple(&f.xlat.src, &f.xlat.dst, f.xlat.sport, f.xlat.dport);
            e.opened_unix_ns = f.opened_unix_ns;
            e.timeout_s = f.timeout_s;
            e.backend = f.backend.v4_octets();
            e.backend_port = f.backend_port;
            e.client_port = f.client_port;
            e.client_mac = f.client_mac.map_or([0; 6], |m| m.0);
            e.mode = f.mode;
            e.fwd_flags = f.fwd_flags;
            e.rep_flags = f.rep_flags;
            e.what = if f.client_mac.is_some() {
                EventV4::OPEN
            } else {
                EventV4::OPEN_DSR
            };
        }
        Some(e)
    }

    /// The event this line holds.
    pub fn expand(&self) -> SyncEvent {
        let k = &self.key;
        let key = FlowKey {
            src: Ip16::v4(k.src),
            dst: Ip16::v4(k.dst),
            sport: k.sport,
            dport: k.dport,
            proto: self.proto,
        };
        if self.what == EventV4::CLOSE {
            return SyncEvent::Close(key);
        }
        let x = &self.xlat;
        SyncEvent::Open(SyncedFlow {
            key,
            xlat: Xlat {
                src: Ip16::v4(x.src),
                dst: Ip16::v4(x.dst),
                sport: x.sport,
                dport: x.dport,
            },
            backend: Ip16::v4(self.backend),
            backend_port: self.backend_port,
            mode: self.mode,
            timeout_s: self.timeout_s,
            fwd_flags: self.fwd_flags,
            rep_flags: self.rep_flags,
            client_mac: (self.what == EventV4::OPEN).then_some(MacAddr(self.client_mac)),
            client_port: self.client_port,
            opened_unix_ns: self.opened_unix_ns,
        })
    }
}

/// IPv4 events a worker holds before it hands them over
/// ([`WorkerSync::flush`]): 4 KiB, at home in its L1 cache.
const PENDING_V4: usize = 64;

/// A worker's ends of its rings.
#[derive(Debug)]
pub struct WorkerSync {
    /// IPv4 flows' events of this batch, not handed over yet (allocated
    /// once, [`PENDING_V4`]; never grows).
    pending4: Vec<EventV4>,
    /// IPv4 flows' events, a line each.
    out4: rtrb::Producer<EventV4>,
    /// Every other event.
    out: rtrb::Producer<SyncEvent>,
    inbound: rtrb::Consumer<SyncEvent>,
    dropped: Arc<AtomicU64>,
}

/// Push `ev` on `ring` and fetch the slot after it (written one event
/// later; otherwise a cache miss on the packet path: control's thread read
/// it last, or nothing has touched it). A full ring counts in `dropped`.
#[inline]
fn push_ahead<T>(ring: &mut rtrb::Producer<T>, dropped: &AtomicU64, ev: T) {
    if ring.push(ev).is_err() {
        dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if let Ok(mut next) = ring.write_chunk_uninit(1) {
        if let Some(slot) = next.as_mut_slices().0.first() {
            let at = std::ptr::from_ref(slot).cast::<u8>();
            let size = std::mem::size_of::<T>();
            for off in (0..size).step_by(64).chain(std::iter::once(size - 1)) {
                prefetch_addr(at.wrapping_add(off));
            }
        }
    }
}

impl WorkerSync {
    /// Hand `ev` to control (an IPv4 flow's at the next
    /// [`WorkerSync::flush`]); if its ring is full, count it and let it go.
    #[inline]
    pub fn emit(&mut self, ev: SyncEvent) {
        match EventV4::compact(&ev) {
            Some(line) => self.emit_v4(line),
            None => push_ahead(&mut self.out, &self.dropped, ev),
        }
    }

    /// [`WorkerSync::emit`] of an IPv4 flow's event made by
    /// [`EventV4::open`]: kept in the worker's own buffer until the batch
    /// ends, then copied into the ring with the batch's others. A store
    /// into a ring slot is a cache miss (control's thread read the slot
    /// last); a batch's worth of them in a row overlap, one per new flow
    /// on the packet path would not.
    #[inline]
    pub fn emit_v4(&mut self, ev: EventV4) {
        if self.pending4.len() == PENDING_V4 {
            self.flush();
        }
        self.pending4.push(ev);
    }

    /// Hand the IPv4 events held since the last call to control: the
    /// pipeline calls it at the end of every batch and idle call. What
    /// does not fit in the ring is counted and let go.
    #[inline]
    pub fn flush(&mut self) {
        let n = self.pending4.len();
        if n == 0 {
            return;
        }
        let room = n.min(self.out4.slots());
        if let Ok(chunk) = self.out4.write_chunk_uninit(room) {
            chunk.fill_from_iter(self.pending4.drain(..room));
        }
        let lost = self.pending4.len();
        if lost > 0 {
            self.dropped.fetch_add(lost as u64, Ordering::Relaxed);
            self.pending4.clear();
        }
    }

    /// The next event control delivered, if any.
    #[inline]
    pub fn receive(&mut self) -> Option<SyncEvent> {
        self.inbound.pop().ok()
    }

    /// Whether control delivered anything (one load of the ring's index).
    #[inline]
    pub fn has_inbound(&self) -> bool {
        !self.inbound.is_empty()
    }
}

/// Control's ends of every worker's rings.
#[derive(Debug)]
pub struct SyncHub {
    outs4: Vec<rtrb::Consumer<EventV4>>,
    outs: Vec<rtrb::Consumer<SyncEvent>>,
    ins: Vec<rtrb::Producer<SyncEvent>>,
    dropped: Vec<Arc<AtomicU64>>,
    /// Deliveries refused because the worker's inbound ring was full.
    refused: u64,
}

/// The inbound ring of the worker a flow was to go to is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a worker's inbound sync queue is full")]
pub struct QueueFull;

impl SyncHub {
    /// Move up to `max` events the workers emitted into `into`, taking from
    /// each worker in turn. Returns how many. (A flow's events are in
    /// order: all of them travel in the same ring.)
    pub fn drain(&mut self, into: &mut Vec<SyncEvent>, max: usize) -> usize {
        let mut n = 0;
        for (c4, c) in self.outs4.iter_mut().zip(&mut self.outs) {
            while n < max {
                let Ok(line) = c4.pop() else { break };
                into.push(line.expand());
                n += 1;
            }
            while n < max {
                let Ok(ev) = c.pop() else { break };
                into.push(ev);
                n += 1;
            }
        }
        n
    }

    /// Give `ev`, from another node, to every worker: each installs (or
    /// removes) its own copy of the flow (see the module's notes for why).
    /// A worker whose inbound ring is full misses it (counted in
    /// [`SyncHub::refused`], once per worker); then this is `Err`, though
    /// the other workers have it.
    pub fn deliver(&mut self, ev: SyncEvent) -> Result<(), QueueFull> {
        if self.ins.is_empty() {
            return Err(QueueFull);
        }
        let mut res = Ok(());
        for ring in &mut self.ins {
            if ring.push(ev).is_err() {
                self.refused += 1;
                res = Err(QueueFull);
            }
        }
        res
    }

    /// Room for how many more events every worker's inbound ring has now
    /// (the fullest ring's), so that control can hold a burst back until
    /// the workers have taken what came before instead of losing it.
    pub fn room(&self) -> usize {
        self.ins
            .iter()
            .map(rtrb::Producer::slots)
            .min()
            .unwrap_or(0)
    }

    /// Events the workers could not hand over (their out ring was full).
    pub fn dropped(&self) -> u64 {
        self.dropped.iter().map(|d| d.load(Ordering::Relaxed)).sum()
    }

    /// Deliveries refused because a worker's inbound ring was full.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// How many workers.
    pub fn workers(&self) -> usize {
        self.ins.len()
    }
}

/// The rings of `workers` workers, each `capacity` events each way: control's
/// ends and each worker's.
pub fn sync_queues(workers: usize, capacity: usize) -> (SyncHub, Vec<WorkerSync>) {
    let mut hub = SyncHub {
        outs4: Vec::with_capacity(workers),
        outs: Vec::with_capacity(workers),
        ins: Vec::with_capacity(workers),
        dropped: Vec::with_capacity(workers),
        refused: 0,
    };
    let mut ends = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (out4_p, out4_c) = rtrb::RingBuffer::new(capacity);
        let (out_p, out_c) = rtrb::RingBuffer::new(capacity);
        let (in_p, in_c) = rtrb::RingBuffer::new(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        hub.outs4.push(out4_c);
        hub.outs.push(out_c);
        hub.ins.push(in_p);
        hub.dropped.push(dropped.clone());
        ends.push(WorkerSync {
            pending4: Vec::with_capacity(PENDING_V4),
            out4: out4_p,
            out: out_p,
            inbound: in_c,
            dropped,
        });
    }
    (hub, ends)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sport: u16) -> FlowKey {
        FlowKey {
            src: Ip16::v4([10, 0, 0, 1]),
            dst: Ip16::v4([10, 0, 0, 100]),
            sport,
            dport: 80,
            proto: 6,
        }
    }

    #[test]
    fn adopt_failure_numbers_are_dense_unique_and_fit_the_counter_array() {
        for (i, r) in AdoptFailure::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?} out of order");
            assert!((*r as usize) < AdoptFailure::SLOTS);
        }
        let mut names: Vec<_> = AdoptFailure::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), AdoptFailure::ALL.len());
    }

    fn flow(src: Ip16, dst: Ip16, mac: Option<MacAddr>) -> SyncedFlow {
        SyncedFlow {
            key: FlowKey {
                src,
                dst,
                sport: 40001,
                dport: 6443,
                proto: 6,
            },
            xlat: Xlat {
                src: dst,
                dst: src,
                sport: 50002,
                dport: 6444,
            },
            backend: src,
            backend_port: 6444,
            mode: 2,
            timeout_s: 7200,
            fwd_flags: 0x5,
            rep_flags: 0x3,
            client_mac: mac,
            client_port: 3,
            opened_unix_ns: 1_765_000_000_123_456_789,
        }
    }

    #[test]
    fn an_ipv4_flows_events_fit_a_line_and_come_back_whole() {
        assert_eq!(std::mem::size_of::<EventV4>(), 64);
        let (a, b) = (Ip16::v4([10, 0, 0, 1]), Ip16::v4([192, 168, 7, 9]));
        let mac = Some(MacAddr([2, 0, 0, 0, 0, 0x42]));
        for ev in [
            SyncEvent::Open(flow(a, b, mac)),
            SyncEvent::Open(flow(a, b, None)),
            SyncEvent::Close(key(9)),
        ] {
            let line = EventV4::compact(&ev).expect("an IPv4 flow's event");
            assert_eq!(line.expand(), ev);
        }
        let v6 = Ip16::v6([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(EventV4::compact(&SyncEvent::Open(flow(v6, v6, mac))), None);
    }

    #[test]
    fn each_familys_events_reach_control_in_order() {
        let (mut hub, mut ends) = sync_queues(1, 16);
        let v6 = Ip16::v6([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        let v4 = Ip16::v4([10, 0, 0, 1]);
        let sent = [
            SyncEvent::Open(flow(v4, v4, None)),
            SyncEvent::Open(flow(v6, v6, None)),
            SyncEvent::Close(flow(v4, v4, None).key),
            SyncEvent::Close(flow(v6, v6, None).key),
        ];
        for ev in sent {
            ends[0].emit(ev);
        }
        ends[0].flush();
        let mut got = Vec::new();
        assert_eq!(hub.drain(&mut got, 100), 4);
        let of = |fam: bool| -> Vec<SyncEvent> {
            got.iter()
                .filter(|e| match e {
                    SyncEvent::Open(f) => f.key.src.is_v4() == fam,
                    SyncEvent::Close(k) => k.src.is_v4() == fam,
                })
                .copied()
                .collect()
        };
        assert_eq!(of(true), vec![sent[0], sent[2]]);
        assert_eq!(of(false), vec![sent[1], sent[3]]);
    }

    #[test]
    fn a_full_out_ring_counts_and_never_blocks() {
        let (mut hub, mut ends) = sync_queues(2, 4);
        for i in 0..10 {
            ends[0].emit(SyncEvent::Close(key(i)));
        }
        assert_eq!(hub.dropped(), 0, "held until the batch ends");
        ends[0].flush();
        assert_eq!(hub.dropped(), 6);
        let mut got = Vec::new();
        assert_eq!(hub.drain(&mut got, 100), 4);
        assert_eq!(got[0], SyncEvent::Close(key(0)));
        assert_eq!(got[3], SyncEvent::Close(key(3)));
    }

    #[test]
    fn every_worker_gets_every_event_in_order() {
        let (mut hub, mut ends) = sync_queues(3, 64);
        for sport in 0..30 {
            hub.deliver(SyncEvent::Close(key(sport))).expect("room");
        }
        for e in &mut ends {
            assert!(e.has_inbound());
            let got: Vec<u16> = std::iter::from_fn(|| e.receive())
                .map(|ev| match ev {
                    SyncEvent::Close(k) => k.sport,
                    SyncEvent::Open(f) => panic!("no open was sent: {f:?}"),
                })
                .collect();
            assert_eq!(got, (0..30).collect::<Vec<u16>>());
            assert!(!e.has_inbound());
        }
    }

    #[test]
    fn a_full_inbound_ring_refuses_and_counts() {
        let (mut hub, mut ends) = sync_queues(2, 2);
        assert_eq!(hub.room(), 2);
        assert!(hub.deliver(SyncEvent::Close(key(1))).is_ok());
        assert_eq!(hub.room(), 1);
        assert!(hub.deliver(SyncEvent::Close(key(2))).is_ok());
        // Worker 1 makes room; worker 0 does not.
        assert_eq!(ends[1].receive(), Some(SyncEvent::Close(key(1))));
        assert_eq!(hub.room(), 0, "the fullest ring's room");
        assert_eq!(hub.deliver(SyncEvent::Close(key(3))), Err(QueueFull));
        assert_eq!(hub.refused(), 1);
        assert_eq!(ends[1].receive(), Some(SyncEvent::Close(key(2))));
        assert_eq!(ends[1].receive(), Some(SyncEvent::Close(key(3))));
        assert_eq!(ends[0].receive(), Some(SyncEvent::Close(key(1))));
        assert_eq!(ends[0].receive(), Some(SyncEvent::Close(key(2))));
        assert_eq!(ends[0].receive(), None);
    }
}
