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
use crate::wire::rewrite::Xlat;

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

    /// [`SyncedFlow::of`] the flow the new-flow path opened (without
    /// making its [`FlowRecord`] first: this runs for every new flow).
    #[inline]
    pub fn of_v4(f: &NewFlowV4, ep: &Endpoint, opened_unix_ns: u64) -> SyncedFlow {
        SyncedFlow {
            key: f.forward_key(),
            xlat: f.translation(),
            backend: ep.addr,
            backend_port: ep.port,
            mode: f.mode,
            timeout_s: f.timeout_s,
            fwd_flags: f.fwd_flags,
            rep_flags: 0,
            client_mac: Some(f.to_client.mac),
            client_port: f.to_client.port,
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

/// Default capacity of each ring, in events (~128 bytes each).
pub const DEFAULT_QUEUE: usize = 16 * 1024;

/// A worker's ends of its two rings.
#[derive(Debug)]
pub struct WorkerSync {
    out: rtrb::Producer<SyncEvent>,
    inbound: rtrb::Consumer<SyncEvent>,
    dropped: Arc<AtomicU64>,
}

impl WorkerSync {
    /// Hand `ev` to control; if the ring is full, count it and let it go.
    #[inline]
    pub fn emit(&mut self, ev: SyncEvent) {
        if self.out.push(ev).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // The next event's slot, fetched now: it is written one new flow
        // later, and a slot is otherwise a cache miss on the packet path
        // (control's thread read it last, or nothing has touched it).
        if let Ok(mut next) = self.out.write_chunk_uninit(1) {
            if let Some(slot) = next.as_mut_slices().0.first() {
                let at = std::ptr::from_ref(slot).cast::<u8>();
                let size = std::mem::size_of::<SyncEvent>();
                for off in (0..size).step_by(64).chain(std::iter::once(size - 1)) {
                    prefetch_addr(at.wrapping_add(off));
                }
            }
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
    /// each worker in turn. Returns how many.
    pub fn drain(&mut self, into: &mut Vec<SyncEvent>, max: usize) -> usize {
        let mut n = 0;
        for c in &mut self.outs {
            while n < max {
                match c.pop() {
                    Ok(ev) => {
                        into.push(ev);
                        n += 1;
                    }
                    Err(_) => break,
                }
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
        outs: Vec::with_capacity(workers),
        ins: Vec::with_capacity(workers),
        dropped: Vec::with_capacity(workers),
        refused: 0,
    };
    let mut ends = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (out_p, out_c) = rtrb::RingBuffer::new(capacity);
        let (in_p, in_c) = rtrb::RingBuffer::new(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        hub.outs.push(out_c);
        hub.ins.push(in_p);
        hub.dropped.push(dropped.clone());
        ends.push(WorkerSync {
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

    #[test]
    fn a_full_out_ring_counts_and_never_blocks() {
        let (mut hub, mut ends) = sync_queues(2, 4);
        for i in 0..10 {
            ends[0].emit(SyncEvent::Close(key(i)));
        }
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
        assert!(hub.deliver(SyncEvent::Close(key(1))).is_ok());
        assert!(hub.deliver(SyncEvent::Close(key(2))).is_ok());
        // Worker 1 makes room; worker 0 does not.
        assert_eq!(ends[1].receive(), Some(SyncEvent::Close(key(1))));
        assert_eq!(hub.deliver(SyncEvent::Close(key(3))), Err(QueueFull));
        assert_eq!(hub.refused(), 1);
        assert_eq!(ends[1].receive(), Some(SyncEvent::Close(key(2))));
        assert_eq!(ends[1].receive(), Some(SyncEvent::Close(key(3))));
        assert_eq!(ends[0].receive(), Some(SyncEvent::Close(key(1))));
        assert_eq!(ends[0].receive(), Some(SyncEvent::Close(key(2))));
        assert_eq!(ends[0].receive(), None);
    }
}
