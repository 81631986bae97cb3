//! The worker loop, over any [`PacketIo`]: receive a batch per port, run it
//! through a [`Processor`], queue each frame for TX on the port its verdict
//! names, give the device back what it sent, and keep the fill rings stocked.
//! The same loop runs over AF_XDP ([`crate::io::xsk::XskIo`]) and over in-memory
//! rings ([`crate::io::mem::MemIo`], which the tests below use).
//!
//! Frames are owned as [`PacketIo`] describes; the worker's own are in `free`,
//! in the batch being processed, or in a port's TX backlog.
//!
//! Policies, and why:
//! - A full TX ring does not lose frames: they wait in the port's backlog and
//!   are retried every round (counted as `tx_deferred`), and the next batch
//!   shrinks to the room left, so overload backs up into the RX rings, where
//!   the device counts what it loses. Only a port whose TX ring takes nothing
//!   for [`TX_STALL`] (a link that stopped sending) drops its frames, counted
//!   as `tx_ring_full`, so it cannot stall the other ports.
//! - Fill rings are stocked by use, not split evenly: every port keeps at
//!   least a floor, and ports that received recently are topped up to the
//!   whole ring. With one-way traffic (in on one interface, out on another),
//!   an even split parked half the frames on the fill ring of the port that
//!   never receives.
//! - `Verdict::Pass` cannot be honoured: AF_XDP has no way to hand a frame back
//!   to the kernel stack. Such frames are counted as `not_ours` and recycled;
//!   the XDP program redirects only what xlb owns, so this should stay near 0.
//!
//! The unsafe calls hand frames across the [`PacketIo`] contract; each says
//! why the frame is in the worker's hands.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xlb_dataplane::drop::DropReason;
use xlb_dataplane::frame::{Frame, PortId, Verdict};
use xlb_dataplane::pipeline::Processor;
use xlb_dataplane::tables::{Tables, TablesHandle};

use crate::io::{recycle, PacketIo};
use crate::kernel::sys;

/// How long a worker keeps spinning after the last packet before it blocks in
/// `poll()` (unless `busy_poll`).
pub const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(200);
/// `poll()` timeout when idle: bounds how late a worker notices `stop`.
pub const IDLE_POLL_MS: i32 = 50;
/// A port whose TX ring accepted nothing for this long is stalled: frames for
/// it are dropped (counted) instead of holding back every port's RX.
pub const TX_STALL: Duration = Duration::from_millis(20);
/// A port that received within this long gets its fill ring topped up to the
/// whole ring; others keep the floor.
pub const FILL_ACTIVE: Duration = Duration::from_millis(100);

/// How often a worker copies its device's loss counters.
const DEVICE_STATS_EVERY: Duration = Duration::from_secs(1);

/// Lock-free counters of one worker, read by [`crate::runtime::Runtime::stats`].
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Frames received.
    pub rx: AtomicU64,
    /// Frames put on a TX ring.
    pub tx: AtomicU64,
    /// Frames whose verdict was `Pass` (not ours; recycled, not delivered).
    pub not_ours: AtomicU64,
    /// Frames dropped because their port's TX ring took nothing for
    /// [`TX_STALL`].
    pub tx_ring_full: AtomicU64,
    /// Frames that found their TX ring full and waited for room (sent later
    /// or, if the port stalled, counted in `tx_ring_full` too).
    pub tx_deferred: AtomicU64,
    /// Frames whose verdict named a port this worker has no socket for.
    pub bad_port: AtomicU64,
    /// Batches processed.
    pub batches: AtomicU64,
    /// Times the worker blocked waiting for traffic.
    pub sleeps: AtomicU64,
    /// TX wake-ups (`sendto` kicks).
    pub tx_kicks: AtomicU64,
    /// Drops by reason, indexed by `DropReason as usize`.
    pub drops: [AtomicU64; DropReason::SLOTS],
    /// Device-side losses (AF_XDP's `XDP_STATISTICS`, summed over the
    /// worker's sockets, refreshed about once a second): RX ring full.
    pub kernel_rx_ring_full: AtomicU64,
    /// Device-side: fill ring was empty when a frame arrived.
    pub kernel_fill_ring_empty: AtomicU64,
    /// Device-side: other RX drops (e.g. frame too large for a chunk).
    pub kernel_rx_dropped: AtomicU64,
    /// Device-side: invalid TX descriptors.
    pub kernel_tx_invalid: AtomicU64,
}

fn bump(a: &AtomicU64, n: u64) {
    if n > 0 {
        a.fetch_add(n, Ordering::Relaxed);
    }
}

/// One port's bookkeeping.
#[derive(Debug)]
struct Port<D> {
    /// Frames given to the fill ring and not yet received back.
    posted: u32,
    /// Frames put on the TX ring and not yet completed.
    in_flight: u32,
    /// Frames waiting for room on the TX ring, oldest first.
    backlog: Vec<D>,
    /// Of `backlog`, frames already counted in `tx_deferred`.
    deferred: usize,
    /// Since when the TX ring has taken nothing while frames waited.
    stuck_since: Option<u64>,
    /// When the port last received; `None` before its first frame.
    last_rx: Option<u64>,
}

/// A worker: one [`PacketIo`] and the loop over it (see the module docs).
pub struct Worker<I: PacketIo> {
    io: I,
    ports: Vec<Port<I::Desc>>,
    /// Frames in the worker's hands, free for fill rings.
    free: Vec<I::Desc>,
    batch: usize,
    fill_cap: u32,
    fill_floor: u32,
    backlog_cap: usize,
    // Scratch, sized once: no allocation in the loop.
    rx_descs: Vec<I::Desc>,
    comp_descs: Vec<I::Desc>,
    lens: Vec<usize>,
    verdicts: Vec<Verdict>,
    frames_store: Vec<Frame<'static>>,
    drops: [u64; DropReason::SLOTS],
}

impl<I: PacketIo> std::fmt::Debug for Worker<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("ports", &self.ports.len())
            .field("free", &self.free.len())
            .field("batch", &self.batch)
            .finish()
    }
}

impl<I: PacketIo> Worker<I> {
    /// A worker over `io`, receiving up to `batch` frames per port and round.
    /// Takes the I/O's frames and stocks every fill ring to the floor.
    pub fn new(mut io: I, batch: usize) -> Worker<I> {
        let batch = batch.max(1);
        let nports = io.ports().max(1);
        let free = io.take_frames();
        let fill_cap = io.fill_ring_size();
        let fill_floor = ((2 * batch) as u32)
            .max(fill_cap / (4 * nports as u32))
            .min(fill_cap);
        let backlog_cap = 2 * batch;
        let ports = (0..io.ports())
            .map(|_| Port {
                posted: 0,
                in_flight: 0,
                backlog: Vec::with_capacity(backlog_cap),
                deferred: 0,
                stuck_since: None,
                last_rx: None,
            })
            .collect();
        let mut w = Worker {
            ports,
            free,
            batch,
            fill_cap,
            fill_floor,
            backlog_cap,
            rx_descs: vec![I::Desc::default(); batch],
            comp_descs: vec![I::Desc::default(); batch.max(fill_cap as usize)],
            lens: vec![0; batch],
            verdicts: vec![Verdict::Pass; batch],
            frames_store: Vec::with_capacity(batch),
            drops: [0; DropReason::SLOTS],
            io,
        };
        w.refill(0);
        w
    }

    /// The I/O (tests and benchmarks drive its device side).
    pub fn io(&self) -> &I {
        &self.io
    }

    /// The I/O, writable.
    pub fn io_mut(&mut self) -> &mut I {
        &mut self.io
    }

    /// Frames in the worker's hands (free, or waiting in a TX backlog).
    pub fn frames_in_hand(&self) -> usize {
        self.free.len() + self.ports.iter().map(|p| p.backlog.len()).sum::<usize>()
    }

    /// Frames on `port`'s fill ring or with the device waiting to be received.
    pub fn posted(&self, port: usize) -> u32 {
        self.ports[port].posted
    }

    /// Frames put on `port`'s TX ring and not yet completed.
    pub fn in_flight(&self, port: usize) -> u32 {
        self.ports[port].in_flight
    }

    /// Frames waiting for room on `port`'s TX ring.
    pub fn backlog(&self, port: usize) -> usize {
        self.ports[port].backlog.len()
    }

    fn stalled(&self, p: usize, now_ns: u64) -> bool {
        matches!(self.ports[p].stuck_since,
            Some(t) if now_ns.saturating_sub(t) >= TX_STALL.as_nanos() as u64)
    }

    /// Frames the next RX batch may take: no more than every port that can
    /// still send has backlog room for, so a batch never overflows one.
    fn rx_budget(&self, now_ns: u64) -> usize {
        let mut budget = self.batch;
        for (i, p) in self.ports.iter().enumerate() {
            if !self.stalled(i, now_ns) {
                budget = budget.min(self.backlog_cap - p.backlog.len().min(self.backlog_cap));
            }
        }
        budget
    }

    /// One round: a batch from every port through `processor`, then TX,
    /// completions and fill rings. Returns the frames received.
    pub fn poll_once(
        &mut self,
        processor: &mut dyn Processor,
        tables: &Tables,
        now_ns: u64,
        stats: &WorkerStats,
    ) -> usize {
        let mut got = 0;
        for pi in 0..self.ports.len() {
            let budget = self.rx_budget(now_ns);
            if budget == 0 {
                break;
            }
            got += self.rx_batch(pi, budget, processor, tables, now_ns, stats);
        }
        self.flush_tx(now_ns, stats);
        self.reclaim();
        self.refill(now_ns);
        got
    }

    /// Receive up to `budget` frames on port `pi`, run them through
    /// `processor`, queue them by verdict. Returns the number received.
    fn rx_batch(
        &mut self,
        pi: usize,
        budget: usize,
        processor: &mut dyn Processor,
        tables: &Tables,
        now_ns: u64,
        stats: &WorkerStats,
    ) -> usize {
        let n = self.io.rx(pi, &mut self.rx_descs[..budget]);
        if n == 0 {
            return 0;
        }
        let port = &mut self.ports[pi];
        port.posted = port.posted.saturating_sub(n as u32);
        port.last_rx = Some(now_ns);
        {
            let mut frames = recycle(std::mem::take(&mut self.frames_store));
            // SAFETY: the descs were just received, so they are frames of this
            // I/O in the worker's hands, each once (a ring holds a frame once).
            // The views die (recycled below) before any desc goes to a ring.
            unsafe {
                self.io
                    .frames(&self.rx_descs[..n], pi as PortId, &mut frames)
            };
            self.verdicts[..n].fill(Verdict::Pass);
            processor.process_batch(tables, now_ns, &mut frames, &mut self.verdicts[..n]);
            for (l, f) in self.lens.iter_mut().zip(frames.iter()) {
                *l = f.len;
            }
            self.frames_store = recycle(frames);
        }
        let nports = self.ports.len();
        let (mut not_ours, mut bad_port, mut lost) = (0u64, 0u64, 0u64);
        for i in 0..n {
            let mut d = self.rx_descs[i];
            match self.verdicts[i] {
                Verdict::Tx(p) if (p as usize) < nports => {
                    let backlog = &mut self.ports[p as usize].backlog;
                    if backlog.len() < self.backlog_cap {
                        // SAFETY: `d` is in the worker's hands; no frame view
                        // is alive any more.
                        unsafe { self.io.set_len(&mut d, self.lens[i]) };
                        backlog.push(d);
                    } else {
                        // Only a stalled port's backlog can be full here
                        // (`rx_budget` left room on every other one).
                        lost += 1;
                        self.free.push(d);
                    }
                }
                Verdict::Tx(_) => {
                    bad_port += 1;
                    self.free.push(d);
                }
                Verdict::Pass => {
                    not_ours += 1;
                    self.free.push(d);
                }
                Verdict::Drop(r) => {
                    self.drops[r as usize] += 1;
                    self.free.push(d);
                }
            }
        }
        stats.rx.fetch_add(n as u64, Ordering::Relaxed);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        bump(&stats.not_ours, not_ours);
        bump(&stats.bad_port, bad_port);
        bump(&stats.tx_ring_full, lost);
        n
    }

    /// Move backlogs onto TX rings as far as they fit, kick the device, and
    /// drop (counted) the backlog of a port that has stalled.
    fn flush_tx(&mut self, now_ns: u64, stats: &WorkerStats) {
        for pi in 0..self.ports.len() {
            let stalled_before = self.stalled(pi, now_ns);
            let p = &mut self.ports[pi];
            if !p.backlog.is_empty() {
                // SAFETY: backlog frames are in the worker's hands, each once,
                // lengths set when they were queued.
                let sent = unsafe { self.io.tx(pi, &p.backlog) };
                p.backlog.drain(..sent);
                p.in_flight += sent as u32;
                bump(&stats.tx, sent as u64);
                let already = p.deferred.saturating_sub(sent);
                bump(&stats.tx_deferred, (p.backlog.len() - already) as u64);
                p.deferred = p.backlog.len();
                if sent > 0 {
                    p.stuck_since = None;
                } else if p.stuck_since.is_none() {
                    p.stuck_since = Some(now_ns);
                }
            }
            if p.in_flight > 0 {
                bump(&stats.tx_kicks, u64::from(self.io.kick_tx(pi)));
            }
            if stalled_before && self.stalled(pi, now_ns) {
                let p = &mut self.ports[pi];
                bump(&stats.tx_ring_full, p.backlog.len() as u64);
                self.free.append(&mut p.backlog);
                p.deferred = 0;
            }
        }
    }

    /// Take back frames the device finished sending.
    fn reclaim(&mut self) {
        for pi in 0..self.ports.len() {
            if self.ports[pi].in_flight == 0 {
                continue;
            }
            let n = self.io.completions(pi, &mut self.comp_descs);
            self.free.extend_from_slice(&self.comp_descs[..n]);
            let p = &mut self.ports[pi];
            p.in_flight = p.in_flight.saturating_sub(n as u32);
        }
    }

    /// Stock the fill rings: every port to the floor first, then ports that
    /// received within [`FILL_ACTIVE`] to the whole ring.
    fn refill(&mut self, now_ns: u64) {
        let active = FILL_ACTIVE.as_nanos() as u64;
        for pi in 0..self.ports.len() {
            self.fill_to(pi, self.fill_floor);
        }
        for pi in 0..self.ports.len() {
            if matches!(self.ports[pi].last_rx, Some(t) if now_ns.saturating_sub(t) < active) {
                self.fill_to(pi, self.fill_cap);
            }
        }
    }

    fn fill_to(&mut self, pi: usize, target: u32) {
        let want = target.saturating_sub(self.ports[pi].posted) as usize;
        if want == 0 || self.free.is_empty() {
            return;
        }
        let n = want.min(self.free.len()).min(self.io.fill_room(pi));
        if n == 0 {
            return;
        }
        let start = self.free.len() - n;
        // SAFETY: frames in the worker's hands (`free`), each once; the ones
        // the ring takes leave `free` right below.
        let done = unsafe { self.io.fill(pi, &self.free[start..]) };
        self.free.drain(start..start + done);
        self.ports[pi].posted += done as u32;
    }

    fn busy(&self) -> bool {
        self.ports
            .iter()
            .any(|p| p.in_flight > 0 || !p.backlog.is_empty())
    }

    fn publish_device_stats(&self, stats: &WorkerStats) {
        let d = self.io.device_stats();
        stats
            .kernel_rx_ring_full
            .store(d.rx_ring_full, Ordering::Relaxed);
        stats
            .kernel_fill_ring_empty
            .store(d.fill_ring_empty, Ordering::Relaxed);
        stats
            .kernel_rx_dropped
            .store(d.rx_dropped, Ordering::Relaxed);
        stats
            .kernel_tx_invalid
            .store(d.tx_invalid, Ordering::Relaxed);
    }

    fn publish_drops(&mut self, stats: &WorkerStats) {
        for (i, d) in self.drops.iter_mut().enumerate() {
            if *d > 0 {
                stats.drops[i].fetch_add(*d, Ordering::Relaxed);
                *d = 0;
            }
        }
    }

    /// The worker loop: runs until `stop` is set. Spins while traffic flows
    /// (or frames are in flight), and after [`SPIN_BEFORE_SLEEP`] without any
    /// calls `processor.idle` and blocks in the I/O's `wait` - unless
    /// `busy_poll`.
    pub fn run(
        mut self,
        mut processor: Box<dyn Processor + Send>,
        tables: TablesHandle,
        busy_poll: bool,
        stop: Arc<AtomicBool>,
        stats: Arc<WorkerStats>,
    ) {
        let mut last_traffic = Instant::now();
        let mut last_device_stats = last_traffic;
        while !stop.load(Ordering::Relaxed) {
            let got = {
                let snapshot = tables.load(); // once per round (all ports)
                let now = sys::monotonic_ns();
                self.poll_once(processor.as_mut(), &snapshot, now, &stats)
            };
            if got > 0 {
                self.publish_drops(&stats);
                last_traffic = Instant::now();
                if last_traffic.duration_since(last_device_stats) >= DEVICE_STATS_EVERY {
                    self.publish_device_stats(&stats);
                    last_device_stats = last_traffic;
                }
                continue;
            }
            if busy_poll || self.busy() || last_traffic.elapsed() < SPIN_BEFORE_SLEEP {
                std::hint::spin_loop();
                continue;
            }
            // Idle: block until a port has frames (or the timeout, to notice
            // `stop`). Never burns a core while nothing flows.
            stats.sleeps.fetch_add(1, Ordering::Relaxed);
            processor.idle(&tables.load(), sys::monotonic_ns());
            if last_device_stats.elapsed() >= DEVICE_STATS_EVERY {
                self.publish_device_stats(&stats);
                last_device_stats = Instant::now();
            }
            let wait = processor
                .idle_wait_ms()
                .map_or(IDLE_POLL_MS, |w| w.clamp(1, IDLE_POLL_MS));
            if let Err(e) = self.io.wait(wait) {
                tracing::warn!(error = %e, "waiting for packets failed");
                std::thread::sleep(Duration::from_millis(wait as u64));
            }
        }
        self.publish_drops(&stats);
        self.publish_device_stats(&stats);
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, SocketAddr};
    use std::sync::Mutex;

    use xlb_dataplane::conntrack::{Conntrack, ConntrackConfig};
    use xlb_dataplane::pipeline::Pipeline;
    use xlb_dataplane::tables::{NatMode, NextHop, Selection};
    use xlb_dataplane::wire::{self, build::Builder};
    use xlb_testkit::fixtures::two_port::{
        self, be_mac, BACKENDS_V4, BACKEND_PORT, CLIENT_MAC, CLIENT_PORT, LB_MAC0, LB_MAC1,
    };
    use xlb_testkit::fixtures::{ip, sa, Service};

    use super::*;
    use crate::io::mem::{MemDesc, MemIo};

    const MS: u64 = 1_000_000;

    /// A processor that obeys the frame: first byte `b'0' + p` → TX on port
    /// `p` (and the second byte is bumped, so the output shows it ran),
    /// `D` → drop, `P` → pass, anything else → a port that does not exist.
    /// Records batch sizes and idle calls.
    #[derive(Default)]
    struct Steer {
        batches: Arc<Mutex<Vec<usize>>>,
        idles: Arc<AtomicU64>,
        /// What `idle_wait_ms` says (a pipeline with sync on says 2).
        idle_wait: Option<i32>,
    }

    impl Processor for Steer {
        fn process_batch(
            &mut self,
            _tables: &Tables,
            _now_ns: u64,
            frames: &mut [Frame<'_>],
            verdicts: &mut [Verdict],
        ) {
            self.batches.lock().expect("test lock").push(frames.len());
            for (f, v) in frames.iter_mut().zip(verdicts.iter_mut()) {
                let d = f.data_mut();
                *v = match d[0] {
                    b'0'..=b'9' => {
                        d[1] = d[1].wrapping_add(1);
                        Verdict::Tx(PortId::from(d[0] - b'0'))
                    }
                    b'D' => Verdict::Drop(DropReason::NoService),
                    b'P' => Verdict::Pass,
                    _ => Verdict::Tx(77),
                };
            }
        }

        fn idle(&mut self, _tables: &Tables, _now_ns: u64) {
            self.idles.fetch_add(1, Ordering::Relaxed);
        }

        fn idle_wait_ms(&self) -> Option<i32> {
            self.idle_wait
        }
    }

    fn pkt(to: u8, seq: u16) -> Vec<u8> {
        let mut p = vec![to, 0, 0, 0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0xab; 58]);
        p
    }

    fn worker(ports: usize, frames: u32, ring: usize, batch: usize) -> Worker<MemIo> {
        Worker::new(MemIo::new(ports, frames, 2048, ring), batch)
    }

    /// A worker loop on its own thread, as the runtime starts one.
    struct Looping {
        stop: Arc<AtomicBool>,
        stats: Arc<WorkerStats>,
        thread: std::thread::JoinHandle<()>,
    }

    impl Looping {
        fn start(w: Worker<MemIo>, p: Steer, busy_poll: bool) -> Looping {
            let stop = Arc::new(AtomicBool::new(false));
            let stats = Arc::new(WorkerStats::default());
            let thread = {
                let (stop, stats) = (stop.clone(), stats.clone());
                std::thread::spawn(move || {
                    w.run(Box::new(p), TablesHandle::new(), busy_poll, stop, stats)
                })
            };
            Looping {
                stop,
                stats,
                thread,
            }
        }

        /// Stop the loop and wait for its thread; its statistics.
        fn finish(self) -> Arc<WorkerStats> {
            self.stop.store(true, Ordering::Relaxed);
            self.thread.join().expect("worker thread");
            self.stats
        }
    }

    /// No frame is lost or duplicated: every frame is in the worker's hands
    /// (free or backlog) or on the ring the worker's books say.
    fn assert_accounted(w: &Worker<MemIo>, frames: usize) {
        let c = w.io().census();
        assert_eq!(c.total(), frames);
        assert_eq!(
            c.hands,
            w.frames_in_hand(),
            "frames in hand vs worker's books: {c:?}"
        );
        let posted: u32 = (0..w.io().ports()).map(|p| w.posted(p)).sum();
        assert_eq!(c.fill + c.rx, posted as usize, "{c:?}");
        let in_flight: u32 = (0..w.io().ports()).map(|p| w.in_flight(p)).sum();
        assert_eq!(c.tx + c.comp, in_flight as usize, "{c:?}");
    }

    fn round(w: &mut Worker<MemIo>, p: &mut dyn Processor, now: u64, st: &WorkerStats) -> usize {
        w.poll_once(p, &Tables::empty(), now, st)
    }

    // ------------------------------------------------ with the real pipeline

    /// The test kit's two-port lab with a UDP VIP in DNAT mode (backends
    /// answer through xlb) and the client's next hop: what the worker runs,
    /// and a pipeline of its own as the reference.
    fn two_arm_lab() -> two_port::Lab {
        let dns = Service::udp("192.0.2.10", 53)
            .sel(Selection::RoundRobin)
            .mode(NatMode::Dnat)
            .eps(BACKENDS_V4, 5353)
            .timeout(20)
            .name("dns");
        let mut spec = two_port::spec([dns]);
        spec.next_hops.push((
            ip("10.0.0.2"),
            NextHop {
                mac: CLIENT_MAC,
                port: CLIENT_PORT,
            },
        ));
        two_port::Lab::new(spec)
    }

    fn pipeline() -> Pipeline {
        let ct = Arc::new(Conntrack::new(
            1,
            ConntrackConfig {
                buckets_per_shard: 256,
            },
        ));
        Pipeline::new(0, 1, &ct)
    }

    #[test]
    fn two_arm_frames_leave_on_the_port_the_pipeline_chose_with_its_bytes() {
        let mut lab = two_arm_lab();
        let mut w = worker(2, 256, 64, 16);
        let mut live = pipeline();
        let st = WorkerStats::default();
        let now = lab.now;

        // Client → VIP: ten flows, in on port 0, out on port 1.
        let queries: Vec<Vec<u8>> = (0..10)
            .map(|i| {
                Builder::udp(sa(&format!("10.0.0.2:{}", 1000 + i)), sa("192.0.2.10:53"))
                    .payload(b"query")
                    .macs(CLIENT_MAC, LB_MAC0)
                    .to_vec()
                    .expect("buildable")
            })
            .collect();
        for q in &queries {
            assert!(w.io_mut().deliver(0, q));
        }
        assert_eq!(w.poll_once(&mut live, &lab.tables, now, &st), 10);
        let want = lab.run_batch(0, CLIENT_PORT, &queries);
        let out = w.io_mut().sent(1);
        assert!(
            w.io_mut().sent(0).is_empty(),
            "nothing goes back to the client port"
        );
        assert_eq!(out.len(), 10);
        let mut chosen = std::collections::BTreeSet::new();
        for (got, (v, bytes)) in out.iter().zip(&want) {
            assert_eq!(*v, Verdict::Tx(1));
            assert_eq!(got, bytes, "the worker sends exactly the pipeline's bytes");
            let m = wire::parse(got).expect("parsable");
            assert_eq!(
                got[..6],
                be_mac(IpAddr::from(m.dst)).0,
                "to a backend's MAC"
            );
            assert_eq!(m.dport, 5353);
            chosen.insert(IpAddr::from(m.dst));
        }
        assert_eq!(chosen.len(), 3, "round robin spreads the flows");

        // Backend → client: replies come in on port 1 and leave on port 0,
        // from the VIP.
        let replies: Vec<Vec<u8>> = out
            .iter()
            .map(|q| {
                let m = wire::parse(q).expect("parsable");
                let be = SocketAddr::new(m.dst.into(), m.dport);
                let client = SocketAddr::new(m.src.into(), m.sport);
                Builder::udp(be, client)
                    .payload(b"answer")
                    .macs(be_mac(be.ip()), LB_MAC1)
                    .to_vec()
                    .expect("buildable")
            })
            .collect();
        for r in &replies {
            assert!(w.io_mut().deliver(1, r));
        }
        assert_eq!(w.poll_once(&mut live, &lab.tables, now + MS, &st), 10);
        lab.now = now + MS;
        let want = lab.run_batch(0, BACKEND_PORT, &replies);
        let back = w.io_mut().sent(0);
        assert_eq!(back.len(), 10);
        for (i, (got, (v, bytes))) in back.iter().zip(&want).enumerate() {
            assert_eq!(*v, Verdict::Tx(0));
            assert_eq!(got, bytes);
            let m = wire::parse(got).expect("parsable");
            assert_eq!(IpAddr::from(m.src), ip("192.0.2.10"));
            assert_eq!((m.sport, m.dport), (53, 1000 + i as u16));
            assert_eq!(got[..6], CLIENT_MAC.0);
        }
        assert_eq!(st.tx.load(Ordering::Relaxed), 20);
        for _ in 0..3 {
            w.poll_once(&mut live, &lab.tables, now + 2 * MS, &st);
        }
        assert_accounted(&w, 256);
    }

    #[test]
    fn batches_hold_at_most_batch_frames_per_port_and_round() {
        let mut w = worker(1, 512, 256, 16);
        let mut p = Steer::default();
        let st = WorkerStats::default();
        for i in 0..(3 * 16 + 5) {
            assert!(w.io_mut().deliver(0, &pkt(b'0', i)));
        }
        assert_eq!(round(&mut w, &mut p, MS, &st), 16);
        assert_eq!(st.rx.load(Ordering::Relaxed), 16);
        for r in 2..=5 {
            round(&mut w, &mut p, r * MS, &st);
        }
        assert_eq!(*p.batches.lock().expect("test lock"), vec![16, 16, 16, 5]);
        assert_eq!(st.batches.load(Ordering::Relaxed), 4);
        let out = w.io_mut().sent(0);
        assert_eq!(out.len(), 53, "one-arm: every frame leaves on its own port");
        for (i, f) in out.iter().enumerate() {
            let mut want = pkt(b'0', i as u16);
            want[1] = 1;
            assert_eq!(
                f, &want,
                "frame {i}: in order, bytes as the processor left them"
            );
        }
    }

    #[test]
    fn verdicts_are_counted_and_their_frames_recycled() {
        let mut w = worker(2, 256, 64, 32);
        let mut p = Steer::default();
        let st = WorkerStats::default();
        for (i, k) in [b'D', b'P', b'X', b'1', b'D'].iter().enumerate() {
            assert!(w.io_mut().deliver(0, &pkt(*k, i as u16)));
        }
        round(&mut w, &mut p, MS, &st);
        w.publish_drops(&st);
        assert_eq!(
            st.drops[DropReason::NoService as usize].load(Ordering::Relaxed),
            2
        );
        assert_eq!(st.not_ours.load(Ordering::Relaxed), 1);
        assert_eq!(st.bad_port.load(Ordering::Relaxed), 1);
        assert_eq!(st.tx.load(Ordering::Relaxed), 1);
        assert_eq!(w.io_mut().sent(1).len(), 1);
        round(&mut w, &mut p, 2 * MS, &st);
        assert_accounted(&w, 256);
    }

    /// Copy-mode AF_XDP sends at most 32 frames per kick; a worker taking 64
    /// per round used to overrun its TX ring and drop the rest. Now the rest
    /// waits and RX slows down instead: nothing is lost.
    #[test]
    fn a_full_tx_ring_defers_frames_and_loses_none() {
        let mut w = worker(2, 1024, 64, 64);
        w.io_mut().set_tx_per_kick(32);
        let mut p = Steer::default();
        let st = WorkerStats::default();
        let (total, mut delivered, mut seen) = (3000u16, 0u16, 0usize);
        let mut now = MS;
        while seen < total as usize && now < 10_000 * MS {
            // The client sends as fast as the fill ring lets it.
            while delivered < total && w.io_mut().deliver(0, &pkt(b'1', delivered)) {
                delivered += 1;
            }
            round(&mut w, &mut p, now, &st);
            for f in w.io_mut().sent(1) {
                assert_eq!(u16::from_be_bytes([f[4], f[5]]), seen as u16, "in order");
                seen += 1;
            }
            now += 10_000; // 10 us a round: never long enough to look stalled
        }
        assert_eq!(seen, total as usize, "every frame was sent");
        assert_eq!(st.tx_ring_full.load(Ordering::Relaxed), 0);
        assert!(
            st.tx_deferred.load(Ordering::Relaxed) > 0,
            "the TX ring did fill up"
        );
        assert!(
            p.batches.lock().expect("test lock").iter().any(|&b| b < 64),
            "RX batches shrank while frames waited"
        );
        for _ in 0..4 {
            round(&mut w, &mut p, now, &st);
        }
        assert_accounted(&w, 1024);
    }

    /// A port whose TX ring stopped moving loses its frames (counted) after
    /// TX_STALL, and does not hold back traffic between the other ports.
    #[test]
    fn a_stalled_port_drops_counted_and_others_keep_flowing() {
        let mut w = worker(2, 1024, 64, 32);
        w.io_mut().pause_tx(1, true);
        let mut p = Steer::default();
        let st = WorkerStats::default();
        let stall = TX_STALL.as_nanos() as u64;
        let mut now = MS;
        let (mut to1, mut to0) = (0u64, 0u64);
        for r in 0..200u16 {
            for i in 0..8 {
                if w.io_mut().deliver(0, &pkt(b'1', r * 8 + i)) {
                    to1 += 1;
                }
                if w.io_mut().deliver(0, &pkt(b'0', r * 8 + i)) {
                    to0 += 1;
                }
            }
            round(&mut w, &mut p, now, &st);
            now += stall / 20;
        }
        for _ in 0..3 {
            round(&mut w, &mut p, now, &st);
        }
        let sent0 = w.io_mut().sent(0).len() as u64;
        assert_eq!(w.io_mut().sent(1).len(), 0);
        let lost = st.tx_ring_full.load(Ordering::Relaxed);
        // Port 1's ring (64) holds frames forever; the rest is counted lost.
        assert_eq!(w.io().tx_queued(1), 64);
        assert_eq!(
            lost + 64 + w.backlog(1) as u64,
            to1,
            "every frame to port 1 is accounted"
        );
        assert_eq!(sent0, to0, "port 0 traffic went on");
        // The link comes back: port 1 sends again and stops losing frames.
        w.io_mut().pause_tx(1, false);
        for r in 0..3 {
            round(&mut w, &mut p, now + r, &st);
        }
        assert!(!w.io_mut().sent(1).is_empty());
        assert!(w.io_mut().deliver(0, &pkt(b'1', 0)));
        round(&mut w, &mut p, now + 10, &st);
        assert_eq!(st.tx_ring_full.load(Ordering::Relaxed), lost);
        assert_eq!(w.io_mut().sent(1).len(), 1);
        assert_accounted(&w, 1024);
    }

    /// One-way traffic, in on port 0 and out on port 1: the receiving port's
    /// fill ring gets the whole ring, the other one only the floor. An even
    /// split (the old policy) parked half the frames where nothing arrives,
    /// and a burst larger than half a ring found the fill ring empty.
    #[test]
    fn fill_rings_follow_traffic_so_one_way_bursts_find_buffers() {
        let (frames, ring, batch) = (512u32, 256usize, 32usize);
        let mut w = worker(2, frames, ring, batch);
        let mut p = Steer::default();
        let st = WorkerStats::default();
        let floor = w.fill_floor;
        assert!(floor < ring as u32 / 2, "the floor is below an even split");
        assert_eq!((w.posted(0), w.posted(1)), (floor, floor));
        assert!(w.io_mut().deliver(0, &pkt(b'1', 0)));
        round(&mut w, &mut p, MS, &st);
        round(&mut w, &mut p, 2 * MS, &st);
        assert_eq!(
            w.posted(0),
            ring as u32,
            "the receiving port gets the whole ring"
        );
        assert_eq!(w.posted(1), floor);
        assert_eq!(w.io_mut().sent(1).len(), 1);
        // A burst of 200 (more than an even split's 128) arrives at once.
        for i in 0..200 {
            assert!(
                w.io_mut().deliver(0, &pkt(b'1', i)),
                "frame {i} found a buffer"
            );
        }
        assert_eq!(w.io().device_stats().fill_ring_empty, 0);
        let mut now = 3 * MS;
        let mut sent = 0;
        while sent < 200 && now < 100 * MS {
            round(&mut w, &mut p, now, &st);
            sent += w.io_mut().sent(1).len();
            now += MS;
        }
        assert_eq!(sent, 200);
        assert_eq!(
            w.posted(1),
            floor,
            "the sending-only port stays at the floor"
        );
        assert_accounted(&w, frames as usize);
    }

    #[test]
    fn no_frame_leaks_over_many_rounds_of_mixed_traffic() {
        let frames = 384u32;
        let mut w = worker(2, frames, 128, 16);
        w.io_mut().set_tx_per_kick(8);
        let mut p = Steer::default();
        let st = WorkerStats::default();
        let kinds = [b'0', b'1', b'1', b'D', b'P', b'X', b'0'];
        let mut now = MS;
        for r in 0..500u16 {
            for i in 0..(r % 40) {
                let k = kinds[usize::from(r + i) % kinds.len()];
                w.io_mut().deliver(usize::from(i % 2), &pkt(k, i));
            }
            round(&mut w, &mut p, now, &st);
            assert_accounted(&w, frames as usize);
            w.io_mut().sent(0);
            w.io_mut().sent(1);
            now += 100_000;
        }
        for _ in 0..20 {
            round(&mut w, &mut p, now, &st);
        }
        let c = w.io().census();
        assert_eq!(
            (c.rx, c.tx, c.comp),
            (0, 0, 0),
            "all traffic drained: {c:?}"
        );
        assert_eq!(c.hands + c.fill, frames as usize);
        assert_eq!(st.tx_ring_full.load(Ordering::Relaxed), 0);
        assert!(st.rx.load(Ordering::Relaxed) > 4000);
    }

    #[test]
    fn an_idle_worker_waits_calls_idle_and_wakes_on_traffic() {
        let mut io = MemIo::new(1, 256, 2048, 64);
        let link = io.link();
        let waits = io.wait_stats();
        let (tap, sent) = std::sync::mpsc::channel();
        io.tap_sent(tap);
        let w = Worker::new(io, 16);
        let p = Steer::default();
        let idles = p.idles.clone();
        let running = Looping::start(w, p, false);
        let stats = running.stats.clone();
        let deadline = Instant::now() + Duration::from_secs(5);
        while idles.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            idles.load(Ordering::Relaxed) > 0,
            "processor.idle was called"
        );
        // Idle for 300 ms: the worker blocks (50 ms waits), it does not spin.
        let before = stats.sleeps.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(300));
        let slept = stats.sleeps.load(Ordering::Relaxed) - before;
        assert!((1..=12).contains(&slept), "{slept} sleeps in 300 ms");
        assert_eq!(waits.woken.load(Ordering::Relaxed), 0);
        // Traffic wakes it, well before the wait would have timed out.
        assert!(link.send(0, &pkt(b'0', 7)));
        let (port, f) = sent
            .recv_timeout(Duration::from_secs(5))
            .expect("the frame was forwarded");
        assert_eq!((port, f[1]), (0, 1));
        assert_eq!(waits.woken.load(Ordering::Relaxed), 1, "woken by the frame");
        let stats = running.finish();
        assert_eq!(stats.rx.load(Ordering::Relaxed), 1);
    }

    /// A processor that wants to be called often while idle (connection
    /// sync's flows from other members wait in its ring) gets short waits.
    #[test]
    fn an_idle_worker_waits_no_longer_than_its_processor_asks() {
        let io = MemIo::new(1, 256, 2048, 64);
        let w = Worker::new(io, 16);
        let p = Steer {
            idle_wait: Some(2),
            ..Steer::default()
        };
        let idles = p.idles.clone();
        let running = Looping::start(w, p, false);
        std::thread::sleep(Duration::from_millis(100));
        let before = idles.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(300));
        let called = idles.load(Ordering::Relaxed) - before;
        running.finish();
        // 2 ms waits: ~150 in 300 ms; 50 ms ones would give 6.
        assert!(called >= 30, "idle called {called} times in 300 ms");
    }

    #[test]
    fn busy_poll_never_waits() {
        let io = MemIo::new(1, 256, 2048, 64);
        let waits = io.wait_stats();
        let w = Worker::new(io, 16);
        let running = Looping::start(w, Steer::default(), true);
        std::thread::sleep(Duration::from_millis(100));
        let stats = running.finish();
        assert_eq!(waits.waits.load(Ordering::Relaxed), 0);
        assert_eq!(stats.sleeps.load(Ordering::Relaxed), 0);
    }

    #[test]
    #[should_panic(expected = "not in hand")]
    fn the_memory_rings_catch_a_frame_handed_over_twice() {
        let mut io = MemIo::new(1, 8, 2048, 8);
        let f = io.take_frames();
        // SAFETY: deliberately broken contract; MemIo checks and panics
        // before anything is aliased.
        unsafe {
            io.fill(0, &f[..1]);
            io.fill(0, &f[..1]);
        }
    }

    #[test]
    fn mem_descs_round_trip_through_frames() {
        let mut io = MemIo::new(1, 4, 256, 4);
        let f: Vec<MemDesc> = io.take_frames();
        // SAFETY: frames from take_frames, in hand, each once.
        assert_eq!(unsafe { io.fill(0, &f) }, 4);
        assert!(io.deliver(0, b"hello"));
        let mut d = [MemDesc::default(); 4];
        assert_eq!(io.rx(0, &mut d), 1);
        let mut frames = Vec::new();
        // SAFETY: `d[0]` was just received: in hand, once.
        unsafe { io.frames(&d[..1], 3, &mut frames) };
        assert_eq!(
            (frames[0].data(), frames[0].buf.len(), frames[0].rx_port),
            (&b"hello"[..], 256, 3)
        );
    }
}
