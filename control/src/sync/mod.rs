//! Connection-state sync between the members of a cluster (issue 17), the
//! network side: every flow the holder of the VIPs opens or ends reaches
//! the other members within milliseconds, so that they forward it
//! unchanged when they take over.
//!
//! Each member listens on its sync port and dials every other member
//! ([`peer`]); a connection starts with a handshake that proves both ends
//! hold the cluster key ([`wire`]), and then carries the dialer's events
//! only. So every member has one connection out to each peer (its own
//! events) and one in from each (theirs).
//!
//! A pump task drains the workers' out rings ([`SyncHub::drain`]) every
//! [`PUMP_EVERY`]; while this node holds the VIPs ([`Holding`]) it batches
//! the events to every connected peer, otherwise it discards them (a
//! backup's events are its own bookkeeping of synced copies, which the
//! holder already decides). While holding, it also re-sends every
//! [`REFRESH`] the flows that saw traffic since the last refresh, so that
//! the peers' copies, which see no packets, do not expire.
//!
//! When a connection out comes up while this node holds, the peer first
//! gets the full table (a dump), then a DumpDone marker, then the live
//! stream; the peer's [`SyncService::complete_from`] turns true at the
//! marker, so a returning node can tell when it has the holder's table.
//!
//! Received events go to the workers' in rings ([`SyncHub::deliver`]); a
//! full ring is counted. Nothing a peer sends is believed before its tag
//! checks out, and whatever is wrong with it is counted and ends the
//! connection (the dialer reconnects, and a holder dumps again).

mod peer;
pub mod wire;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use xlb_dataplane::sync::{SyncEvent, SyncHub, SyncedFlow};
use xlb_dataplane::tables::HoldGate;

use self::wire::{Item, SyncKey, WireError};

/// The default TCP port of connection sync.
pub const DEFAULT_PORT: u16 = 11113;
/// How often the pump drains the workers' rings.
pub const PUMP_EVERY: Duration = Duration::from_millis(1);
/// How often a holder re-sends the flows that saw traffic, so that the
/// peers' copies do not expire.
pub const REFRESH: Duration = Duration::from_secs(2);
/// Events taken from the rings per pump round at most (the rest wait for
/// the next round).
const DRAIN_MAX: usize = 64 * 1024;
/// Frames waiting for one peer's connection at most; a peer that falls
/// further behind is disconnected (and dumped to again when it is back).
const PEER_QUEUE: usize = 4096;

/// Where the members' sync endpoints are and who this node is.
#[derive(Clone)]
pub struct SyncConfig {
    /// Every member's sync address (IP and sync port), by member index, in
    /// the same order as the election's members.
    pub peers: Vec<SocketAddr>,
    /// This node's index.
    pub me: usize,
    /// The cluster's shared key (the sync key is derived from it).
    pub key: Vec<u8>,
}

impl std::fmt::Debug for SyncConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncConfig")
            .field("peers", &self.peers)
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// The sync addresses of the election's `members`: the same IPs, on `port`.
pub fn sync_addrs(members: &[SocketAddr], port: u16) -> Vec<SocketAddr> {
    members
        .iter()
        .map(|m| SocketAddr::new(m.ip(), port))
        .collect()
}

/// Where the flows come from when a peer needs more than the live stream.
pub trait FlowSource: Send + Sync + 'static {
    /// Every flow in the table (for a peer that just connected).
    fn dump(&self) -> Vec<SyncedFlow>;
    /// The flows that saw a packet at or after `unix_ns` (Unix time, ns).
    fn active_since(&self, unix_ns: u64) -> Vec<SyncedFlow>;
}

/// Whether this node holds the VIPs now: only a holder's events are sent.
pub trait Holding: Send + Sync + 'static {
    /// Holds now.
    fn holding(&self) -> bool;
}

impl Holding for HoldGate {
    fn holding(&self) -> bool {
        HoldGate::holding(self)
    }
}

/// Holding as a member's roles say: the election made it the holder, or a
/// controller (kube-loxilb's `--setRoles`, keepalived's notify hook) made
/// one of its instances MASTER.
#[derive(Debug, Clone)]
pub struct Roles {
    /// The election's gate ([`crate::controller::ControlState::gate`]).
    pub elected: HoldGate,
    /// A controller's MASTER ([`crate::controller::ControlState::masters`]).
    pub controlled: HoldGate,
}

impl Holding for Roles {
    fn holding(&self) -> bool {
        self.elected.holding() || self.controlled.holding()
    }
}

impl Holding for AtomicBool {
    fn holding(&self) -> bool {
        self.load(Ordering::Acquire)
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// `me` is not an index of `peers`
    #[error("sync: member {me} is not one of the {n} members")]
    SelfOutOfRange {
        /// The index given.
        me: usize,
        /// How many members.
        n: usize,
    },
    /// the listening socket could not be bound
    #[error("binding the sync socket {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// One peer, as the service tracks it.
#[derive(Debug, Default)]
struct PeerState {
    /// This node's connection to it is up (handshake done).
    out_up: AtomicBool,
    /// Its connection to this node is up.
    in_up: AtomicBool,
    /// DumpDone arrived on its current connection to this node.
    dump_complete: AtomicBool,
    /// Which of its connections to this node is current: a newer one
    /// replaces an older one.
    inbound_gen: AtomicU64,
    /// When a valid frame from it last arrived: ms since the service
    /// started, plus one (0: never).
    heard_ms: AtomicU64,
    /// Events sent to it.
    sent: AtomicU64,
    /// Bytes of frames sent to it (what the link carries, TCP/IP headers
    /// aside).
    bytes_sent: AtomicU64,
    /// Events received from it.
    received: AtomicU64,
    /// Of those, delivered to a worker's ring.
    delivered: AtomicU64,
    /// Wakes the dialler out of its backoff: the peer just connected to
    /// this node, so it is back (a returning node gets the holder's dump
    /// without waiting out the holder's backoff).
    redial: tokio::sync::Notify,
}

/// The lag histogram's bucket bounds, in seconds.
pub const LAG_BUCKETS: [f64; 14] = [
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

/// Sync lag (the opening node's first packet → delivered here) of live
/// Opens.
#[derive(Debug, Default)]
struct Lag {
    /// Per bucket of [`LAG_BUCKETS`], not cumulative; the last is +Inf.
    buckets: [AtomicU64; LAG_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Lag {
    fn observe(&self, ns: u64) {
        let s = ns as f64 / 1e9;
        let i = LAG_BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(LAG_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> LagStatus {
        let mut acc = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                acc += b.load(Ordering::Relaxed);
                acc
            })
            .collect();
        LagStatus {
            cumulative,
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// The service's counters.
#[derive(Debug, Default)]
struct Counters {
    received_open: AtomicU64,
    received_refresh: AtomicU64,
    received_close: AtomicU64,
    /// Events drained while this node did not hold.
    discarded_inactive: AtomicU64,
    /// Peers disconnected because they fell [`PEER_QUEUE`] frames behind.
    peer_overflows: AtomicU64,
    /// By [`WireError::ALL`] order.
    rejected: [AtomicU64; WireError::ALL.len()],
    /// Handshakes that did not finish in time, and connections in that
    /// went silent.
    timeouts: AtomicU64,
}

/// What every task of the service shares.
struct Shared {
    peers_addr: Vec<SocketAddr>,
    me: usize,
    key: SyncKey,
    hub: Mutex<SyncHub>,
    source: Arc<dyn FlowSource>,
    holding: Arc<dyn Holding>,
    peers: Vec<PeerState>,
    /// The live queues of the connections out that are up, by member.
    outs: Mutex<Vec<Option<mpsc::Sender<Batch>>>>,
    counters: Counters,
    lag: Lag,
    started: Instant,
}

/// Encoded events on their way to the peers (one encoding for all).
#[derive(Debug, Clone)]
struct Batch {
    body: Arc<Vec<u8>>,
    count: usize,
}

impl Shared {
    fn reject(&self, e: WireError) {
        if let Some(i) = WireError::ALL.iter().position(|&x| x == e) {
            self.counters.rejected[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn heard(&self, peer: usize) {
        let ms = self.started.elapsed().as_millis() as u64 + 1;
        self.peers[peer].heard_ms.store(ms, Ordering::Relaxed);
    }

    /// Send `items` to every connection out; a connection whose queue is
    /// full is dropped.
    fn broadcast(&self, items: &[Item]) {
        let mut outs = lock(&self.outs);
        if outs.iter().all(Option::is_none) {
            return;
        }
        for chunk in items.chunks(wire::MAX_EVENTS) {
            let batch = Batch {
                body: Arc::new(wire::encode_items(chunk)),
                count: chunk.len(),
            };
            for (peer, slot) in outs.iter_mut().enumerate() {
                let Some(tx) = slot else { continue };
                if let Err(e) = tx.try_send(batch.clone()) {
                    if matches!(e, mpsc::error::TrySendError::Full(_)) {
                        self.counters.peer_overflows.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            peer = %self.peers_addr[peer],
                            "sync: the peer fell too far behind; reconnecting"
                        );
                    }
                    *slot = None;
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Now, as Unix time in ns.
fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A running sync service.
pub struct SyncService {
    shared: Arc<Shared>,
    local: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for SyncService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncService")
            .field("local", &self.local)
            .field("me", &self.shared.me)
            .finish_non_exhaustive()
    }
}

impl SyncService {
    /// Listen on `cfg.peers[cfg.me]`, dial every other member, and start
    /// the pump over `hub`. `source` serves dumps and refreshes; `holding`
    /// says whether this node's events are to be sent. Call inside a tokio
    /// runtime; the service stops when dropped.
    pub async fn start(
        cfg: SyncConfig,
        hub: SyncHub,
        source: Arc<dyn FlowSource>,
        holding: Arc<dyn Holding>,
    ) -> Result<SyncService, SyncError> {
        let n = cfg.peers.len();
        if cfg.me >= n {
            return Err(SyncError::SelfOutOfRange { me: cfg.me, n });
        }
        let bind = cfg.peers[cfg.me];
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|e| SyncError::Bind(bind, e))?;
        let local = listener
            .local_addr()
            .map_err(|e| SyncError::Bind(bind, e))?;
        let shared = Arc::new(Shared {
            key: SyncKey::derive(&cfg.key),
            peers_addr: cfg.peers.clone(),
            me: cfg.me,
            hub: Mutex::new(hub),
            source,
            holding,
            peers: (0..n).map(|_| PeerState::default()).collect(),
            outs: Mutex::new(vec![None; n]),
            counters: Counters::default(),
            lag: Lag::default(),
            started: Instant::now(),
        });
        let mut tasks = vec![
            tokio::spawn(peer::listen(shared.clone(), listener)),
            tokio::spawn(pump(shared.clone())),
        ];
        for p in (0..n).filter(|&p| p != cfg.me) {
            tasks.push(tokio::spawn(peer::dial(shared.clone(), p)));
        }
        tracing::info!(listen = %local, peers = ?cfg.peers, me = cfg.me, "connection sync started");
        Ok(SyncService {
            shared,
            local,
            tasks,
        })
    }

    /// The address the service listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Whether this node has the full table of `member`: `member`'s
    /// connection to this node is up and its dump has arrived in full
    /// (it held the VIPs when the connection came up). The election asks
    /// this of the current holder before a returning node may campaign.
    pub fn complete_from(&self, member: usize) -> bool {
        self.shared.peers.get(member).is_some_and(|p| {
            p.in_up.load(Ordering::Acquire) && p.dump_complete.load(Ordering::Acquire)
        })
    }

    /// The service's state and counters now.
    pub fn status(&self) -> SyncStatus {
        let s = &self.shared;
        let (queue_dropped, delivery_refused) = {
            let hub = lock(&s.hub);
            (hub.dropped(), hub.refused())
        };
        let now_ms = s.started.elapsed().as_millis() as u64 + 1;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let peers = s
            .peers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != s.me)
            .map(|(i, p)| PeerStatus {
                member: i,
                addr: s.peers_addr[i],
                outbound_up: p.out_up.load(Ordering::Relaxed),
                inbound_up: p.in_up.load(Ordering::Relaxed),
                dump_complete: p.dump_complete.load(Ordering::Relaxed),
                last_heard: match load(&p.heard_ms) {
                    0 => None,
                    at => Some(Duration::from_millis(now_ms.saturating_sub(at))),
                },
                sent: load(&p.sent),
                bytes_sent: load(&p.bytes_sent),
                received: load(&p.received),
                delivered: load(&p.delivered),
            })
            .collect::<Vec<_>>();
        let c = &s.counters;
        let mut rejected: Vec<(&'static str, u64)> = WireError::ALL
            .iter()
            .zip(&c.rejected)
            .map(|(e, n)| (e.name(), load(n)))
            .collect();
        rejected.push(("timeout", load(&c.timeouts)));
        SyncStatus {
            holding: s.holding.holding(),
            sent: peers.iter().map(|p| p.sent).sum(),
            bytes_sent: peers.iter().map(|p| p.bytes_sent).sum(),
            received: vec![
                ("open", load(&c.received_open)),
                ("refresh", load(&c.received_refresh)),
                ("close", load(&c.received_close)),
            ],
            delivered: peers.iter().map(|p| p.delivered).sum(),
            queue_dropped,
            delivery_refused,
            discarded_inactive: load(&c.discarded_inactive),
            peer_overflows: load(&c.peer_overflows),
            rejected,
            lag: s.lag.snapshot(),
            peers,
        }
    }

    /// Stop every task and close every connection.
    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for SyncService {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One peer as [`SyncService::status`] shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStatus {
    /// Its member index.
    pub member: usize,
    /// Its sync address.
    pub addr: SocketAddr,
    /// This node's connection to it (carrying this node's events) is up.
    pub outbound_up: bool,
    /// Its connection to this node is up.
    pub inbound_up: bool,
    /// Its full dump arrived on its current connection to this node.
    pub dump_complete: bool,
    /// How long ago a valid frame from it arrived.
    pub last_heard: Option<Duration>,
    /// Events sent to it.
    pub sent: u64,
    /// Bytes of frames sent to it.
    pub bytes_sent: u64,
    /// Events received from it.
    pub received: u64,
    /// Of those, handed to a worker.
    pub delivered: u64,
}

/// The lag histogram: cumulative counts per bucket of [`LAG_BUCKETS`], then
/// +Inf.
#[derive(Debug, Clone, PartialEq)]
pub struct LagStatus {
    /// Cumulative counts, one per bound of [`LAG_BUCKETS`] and a last for +Inf.
    pub cumulative: Vec<u64>,
    /// Sum of the lags, seconds.
    pub sum_seconds: f64,
    /// How many lags.
    pub count: u64,
}

/// The sync service's state and counters.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncStatus {
    /// Whether this node holds (and so sends its events).
    pub holding: bool,
    /// Every other member.
    pub peers: Vec<PeerStatus>,
    /// Events sent (over all peers).
    pub sent: u64,
    /// Bytes of frames sent (over all peers).
    pub bytes_sent: u64,
    /// Events received, by kind: open (new flows), refresh (dumps and
    /// refreshes), close.
    pub received: Vec<(&'static str, u64)>,
    /// Received events handed to a worker.
    pub delivered: u64,
    /// Events the workers could not hand to the pump (their ring was full).
    pub queue_dropped: u64,
    /// Received events a worker's full ring refused.
    pub delivery_refused: u64,
    /// Events drained while this node did not hold (not sent).
    pub discarded_inactive: u64,
    /// Peers disconnected for falling behind.
    pub peer_overflows: u64,
    /// Frames and handshakes refused, by reason.
    pub rejected: Vec<(&'static str, u64)>,
    /// Sync lag of live Opens received.
    pub lag: LagStatus,
}

/// Drain the workers' rings every [`PUMP_EVERY`]; while holding, send the
/// events and every [`REFRESH`] the flows active since the last refresh.
///
/// The refresh reads the whole flow table (tens of milliseconds for a
/// large one): it runs beside the pump, which goes on sending new flows
/// every millisecond meanwhile, so their sync lag does not wait for it.
/// The ends of flows drained while it runs are held back and sent right
/// after the refreshed flows: a Close that follows the snapshot must
/// follow its refreshed Open on the wire, or the peer would install the
/// ended flow again.
async fn pump(shared: Arc<Shared>) {
    let mut events: Vec<SyncEvent> = Vec::with_capacity(4096);
    let mut items: Vec<Item> = Vec::with_capacity(4096);
    let mut held: Vec<Item> = Vec::new();
    let mut tick = tokio::time::interval(PUMP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // While holding: when the next refresh is due, and the start of the
    // window it covers.
    let mut refresh: Option<(Instant, u64)> = None;
    // The refresh under way: the snapshot's start and its task.
    let mut running: Option<(u64, JoinHandle<Vec<SyncedFlow>>)> = None;
    loop {
        tick.tick().await;
        events.clear();
        lock(&shared.hub).drain(&mut events, DRAIN_MAX);
        if !shared.holding.holding() {
            shared
                .counters
                .discarded_inactive
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            refresh = None;
            held.clear();
            if let Some((_, task)) = running.take() {
                task.abort();
            }
            continue;
        }
        items.clear();
        for &event in &events {
            let item = Item {
                event,
                refresh: false,
            };
            match event {
                SyncEvent::Close(_) if running.is_some() => held.push(item),
                _ => items.push(item),
            }
        }
        shared.broadcast(&items);
        if running.as_ref().is_some_and(|(_, t)| t.is_finished()) {
            if let Some((start, task)) = running.take() {
                let flows = task.await.unwrap_or_default();
                items.clear();
                items.extend(flows.into_iter().map(|f| Item {
                    event: SyncEvent::Open(f),
                    refresh: true,
                }));
                shared.broadcast(&items);
                shared.broadcast(&held);
                held.clear();
                refresh = Some((Instant::now() + REFRESH, start));
            }
        }
        if running.is_some() {
            continue;
        }
        let (due, since) = *refresh.get_or_insert_with(|| {
            // The first refresh covers the flows active just before this
            // node took over too.
            let window = REFRESH.as_nanos() as u64;
            (Instant::now() + REFRESH, unix_ns().saturating_sub(window))
        });
        if Instant::now() < due {
            continue;
        }
        // Taken after the events drained above were sent: what the
        // snapshot misses of later ones, the live stream carries.
        let start = unix_ns();
        let source = shared.source.clone();
        running = Some((
            start,
            tokio::task::spawn_blocking(move || source.active_since(since)),
        ));
    }
}
