//! Connection-state sync between the nodes of an HA group, the dataplane's
//! side: what a flow is when it travels between nodes ([`SyncedFlow`]), the
//! events workers hand to control ([`SyncEvent`]), and the bounded
//! lock-free queues that carry them each way ([`sync_queues`]).
//!
//! Each worker owns one end of two single-producer single-consumer rings:
//! - *out*: the worker pushes an event for every flow it opens and every
//!   flow it ends; control's sync thread drains every worker's ring,
//!   batches the events and sends them to the other members. A full ring
//!   is counted ([`SyncOut::dropped`]) and the event lost; the worker never
//!   waits.
//! - *in*: control pushes the flows (and ends of flows) other members sent;
//!   the worker drains its ring once per batch and installs them in its
//!   own shard of the flow table, as they were on the node that opened them
//!   (the same backend, translation and source-NAT port), without counting
//!   them as flows it opened.
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

use crate::conntrack::FlowKey;
use crate::net::{Ip16, MacAddr};
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
    /// When the opening node saw the flow's first packet (Unix time, ns):
    /// the receiver measures the sync lag from it.
    pub opened_unix_ns: u64,
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

    /// Give `ev`, from another node, to the worker that is to install it
    /// (chosen by its forward key, so that a flow's end reaches the worker
    /// that installed it).
    pub fn deliver(&mut self, ev: SyncEvent) -> Result<(), QueueFull> {
        if self.ins.is_empty() {
            return Err(QueueFull);
        }
        let key = match &ev {
            SyncEvent::Open(f) => &f.key,
            SyncEvent::Close(k) => k,
        };
        let w = worker_of(key, self.ins.len());
        self.ins[w].push(ev).map_err(|_| {
            self.refused += 1;
            QueueFull
        })
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

/// The worker of `workers` that installs the flow keyed `key`: a fixed
/// function of the key, so its open and its close meet.
pub fn worker_of(key: &FlowKey, workers: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key
        .src
        .0
        .iter()
        .chain(key.dst.0.iter())
        .chain(key.sport.to_be_bytes().iter())
        .chain(key.dport.to_be_bytes().iter())
        .chain(std::iter::once(&key.proto))
    {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % workers.max(1) as u64) as usize
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
    fn an_open_and_its_close_reach_the_same_worker() {
        let (mut hub, mut ends) = sync_queues(3, 64);
        for sport in 0..30 {
            hub.deliver(SyncEvent::Close(key(sport))).expect("room");
        }
        let mut per_worker = vec![0; 3];
        for (w, e) in ends.iter_mut().enumerate() {
            while let Some(SyncEvent::Close(k)) = e.receive() {
                assert_eq!(worker_of(&k, 3), w);
                per_worker[w] += 1;
            }
        }
        assert_eq!(per_worker.iter().sum::<i32>(), 30);
        assert!(per_worker.iter().all(|&n| n > 0), "{per_worker:?}");
    }

    #[test]
    fn a_full_inbound_ring_refuses_and_counts() {
        let (mut hub, _ends) = sync_queues(1, 2);
        assert!(hub.deliver(SyncEvent::Close(key(1))).is_ok());
        assert!(hub.deliver(SyncEvent::Close(key(2))).is_ok());
        assert_eq!(hub.deliver(SyncEvent::Close(key(3))), Err(QueueFull));
        assert_eq!(hub.refused(), 1);
    }
}
