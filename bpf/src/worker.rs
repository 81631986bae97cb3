//! One worker: the AF_XDP sockets of every configured interface at one queue
//! index, sharing one UMEM, and the loop that feeds their frames through a
//! [`Processor`].
//!
//! Frame ownership (the invariant every unsafe block below leans on): each
//! UMEM frame is, at any instant, in exactly one place - a fill ring, the
//! kernel, an RX ring, this worker's hands (`free` or the current batch), a TX
//! ring, or a completion ring. The worker only touches bytes of frames in its
//! hands. Because the UMEM is shared by the worker's sockets on every
//! interface, a frame received on one interface is transmitted on another
//! without a copy.
//!
//! `Verdict::Pass` cannot be honoured: AF_XDP has no way to hand a frame back
//! to the kernel stack. Such frames are counted as `not_ours` and recycled; the
//! XDP program redirects only what xlb owns, so this should stay near zero.
#![allow(unsafe_code)]

use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xlb_dataplane::drop::DropReason;
use xlb_dataplane::frame::{Frame, PortId, Verdict};
use xlb_dataplane::pipeline::Processor;
use xlb_dataplane::tables::TablesHandle;
use xsk_rs::config::{BindFlags, LibxdpFlags, QueueSize, SocketConfig, UmemConfig};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use crate::sys;

/// Size of every UMEM frame (chunk). A power of two (aligned mode); leaves
/// room after a 1500-byte packet for encapsulation.
pub const FRAME_SIZE: u32 = 4096;
/// How long a worker keeps spinning after the last packet before it blocks in
/// `poll()` (unless `busy_poll`).
pub const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(200);
/// `poll()` timeout when idle: bounds how late a worker notices `stop`.
pub const IDLE_POLL_MS: i32 = 50;

/// Lock-free counters of one worker, read by [`crate::Runtime::stats`].
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Frames received.
    pub rx: AtomicU64,
    /// Frames put on a TX ring.
    pub tx: AtomicU64,
    /// Frames whose verdict was `Pass` (not ours; recycled, not delivered).
    pub not_ours: AtomicU64,
    /// Frames dropped because the TX ring was full.
    pub tx_ring_full: AtomicU64,
    /// Frames whose verdict named a port this worker has no socket for.
    pub bad_port: AtomicU64,
    /// Batches processed.
    pub batches: AtomicU64,
    /// Times the worker blocked in `poll()`.
    pub sleeps: AtomicU64,
    /// TX wake-ups (`sendto` kicks).
    pub tx_kicks: AtomicU64,
    /// Drops by reason, indexed by `DropReason as usize`.
    pub drops: [AtomicU64; DropReason::SLOTS],
    /// Kernel-side losses (`XDP_STATISTICS`, summed over the worker's
    /// sockets, refreshed about once a second): RX ring full.
    pub kernel_rx_ring_full: AtomicU64,
    /// Kernel-side: fill ring was empty when a frame arrived.
    pub kernel_fill_ring_empty: AtomicU64,
    /// Kernel-side: other RX drops (e.g. frame too large for a chunk).
    pub kernel_rx_dropped: AtomicU64,
    /// Kernel-side: invalid TX descriptors.
    pub kernel_tx_invalid: AtomicU64,
}

/// How often a worker copies its sockets' kernel statistics.
const KERNEL_STATS_EVERY: Duration = Duration::from_secs(1);

/// Socket-creation failure of one (interface, queue).
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    /// the UMEM could not be created
    #[error("UMEM of {frames} frames: {source}")]
    Umem {
        /// Frame count asked for.
        frames: u32,
        /// xsk-rs's error.
        #[source]
        source: xsk_rs::umem::UmemCreateError,
    },
    /// the AF_XDP socket could not be created or bound
    #[error("AF_XDP socket on {iface} queue {queue}: {source}")]
    Socket {
        /// Interface.
        iface: String,
        /// Queue index.
        queue: u32,
        /// xsk-rs's error; its source is the errno.
        #[source]
        source: xsk_rs::socket::SocketCreateError,
    },
    /// invalid ring or frame size
    #[error("invalid AF_XDP configuration: {0}")]
    Config(String),
}

impl XskError {
    /// The errno behind a socket failure, if any.
    pub fn errno(&self) -> Option<i32> {
        use std::error::Error;
        let src = self.source()?.source()?;
        src.downcast_ref::<std::io::Error>()?.raw_os_error()
    }
}

struct PortIo {
    tx: TxQueue,
    rx: RxQueue,
    fq: FillQueue,
    cq: CompQueue,
    /// Frames put on `tx` and not yet seen on `cq`.
    in_flight: u32,
}

/// Everything a worker thread owns.
pub struct WorkerIo {
    umem: Umem,
    ports: Vec<PortIo>,
    /// Frames in the worker's hands, free for fill rings.
    free: Vec<FrameDesc>,
    fill_target: u32,
    batch: usize,
    // Scratch, sized once: no allocation in the loop.
    rx_descs: Vec<FrameDesc>,
    comp_descs: Vec<FrameDesc>,
    lens: Vec<usize>,
    verdicts: Vec<Verdict>,
    tx_pending: Vec<Vec<FrameDesc>>,
    frames_store: Vec<Frame<'static>>,
    poll_fds: Vec<RawFd>,
    pollfds: Vec<libc::pollfd>,
    drops: [u64; DropReason::SLOTS],
}

impl std::fmt::Debug for WorkerIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerIo")
            .field("ports", &self.ports.len())
            .field("free", &self.free.len())
            .finish()
    }
}

/// A ring size (power of two, 64..=4096) no larger than `n` where possible,
/// so the fill rings never hold more than the frames meant for them.
fn ring_size(n: u32) -> u32 {
    let n = n.clamp(64, 4096);
    1 << (31 - n.leading_zeros())
}

impl WorkerIo {
    /// One UMEM of `frame_count` frames and a socket on every interface of
    /// `ifaces` at `queue`. Returns the sockets' fds (in `ifaces` order) for
    /// the XSKMAPs.
    pub fn create(
        ifaces: &[String],
        queue: u32,
        frame_count: u32,
        batch: usize,
    ) -> Result<(WorkerIo, Vec<RawFd>), XskError> {
        let nports = ifaces.len().max(1) as u32;
        // Half the frames wait in fill rings, the rest cover batches and TX.
        let ring = ring_size(frame_count / (2 * nports));
        let qs = |n| QueueSize::new(n).map_err(|e| XskError::Config(e.to_string()));
        let umem_cfg = UmemConfig::builder()
            .frame_size(
                xsk_rs::config::FrameSize::new(FRAME_SIZE)
                    .map_err(|e| XskError::Config(e.to_string()))?,
            )
            .fill_queue_size(qs(ring)?)
            .comp_queue_size(qs(ring)?)
            .build()
            .map_err(|e| XskError::Config(e.to_string()))?;
        let frames = NonZeroU32::new(frame_count)
            .ok_or_else(|| XskError::Config("frame_count is 0".into()))?;
        let (umem, descs) =
            Umem::new(umem_cfg, frames, false).map_err(|source| XskError::Umem {
                frames: frame_count,
                source,
            })?;
        let sock_cfg = SocketConfig::builder()
            .rx_queue_size(qs(ring)?)
            .tx_queue_size(qs(ring)?)
            // Our XDP program and XSKMAP, not libxdp's default program.
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            // veth (and generic XDP) only support copy mode.
            .bind_flags(BindFlags::XDP_COPY | BindFlags::XDP_USE_NEED_WAKEUP)
            .build();
        let mut ports = Vec::with_capacity(ifaces.len());
        let mut fds = Vec::with_capacity(ifaces.len());
        for iface in ifaces {
            let name: xsk_rs::config::Interface = iface
                .parse()
                .map_err(|_| XskError::Config(format!("bad interface name {iface:?}")))?;
            // SAFETY: each (interface, queue) is bound once per UMEM, and
            // XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD is set (xsk-rs's requirement
            // for shared UMEMs).
            let (tx, rx, fqcq) =
                unsafe { Socket::new(sock_cfg, &umem, &name, queue) }.map_err(|source| {
                    XskError::Socket {
                        iface: iface.clone(),
                        queue,
                        source,
                    }
                })?;
            let (fq, cq) = fqcq.ok_or_else(|| {
                XskError::Config(format!("{iface} queue {queue} bound twice on one UMEM"))
            })?;
            fds.push(rx.fd().as_raw_fd());
            ports.push(PortIo {
                tx,
                rx,
                fq,
                cq,
                in_flight: 0,
            });
        }
        let mut io = WorkerIo {
            umem,
            poll_fds: fds.clone(),
            pollfds: Vec::with_capacity(ports.len()),
            tx_pending: (0..ports.len())
                .map(|_| Vec::with_capacity(batch * ports.len()))
                .collect(),
            ports,
            free: descs,
            fill_target: ring,
            batch,
            rx_descs: vec![FrameDesc::default(); batch],
            comp_descs: vec![FrameDesc::default(); batch.max(ring as usize)],
            lens: vec![0; batch],
            verdicts: vec![Verdict::Pass; batch],
            frames_store: Vec::with_capacity(batch),
            drops: [0; DropReason::SLOTS],
        };
        io.refill();
        Ok((io, fds))
    }

    /// Put free frames on every fill ring, up to its target.
    fn refill(&mut self) {
        for p in &mut self.ports {
            let want = p.fq.nb_free(self.fill_target) as usize;
            let n = want.min(self.free.len());
            if n == 0 {
                continue;
            }
            let start = self.free.len() - n;
            // SAFETY: the descriptors come from this worker's UMEM and are in
            // its hands (`free`); after this call the kernel owns the produced
            // ones, which are removed from `free` below.
            // `produce` reserves all-or-nothing: `done` is `n` or 0.
            let done = unsafe { p.fq.produce(&self.free[start..]) };
            self.free.truncate(self.free.len() - done);
        }
    }

    /// Take back frames the kernel finished transmitting.
    fn drain_completions(&mut self) {
        for p in &mut self.ports {
            if p.in_flight == 0 {
                continue;
            }
            // SAFETY: the descriptors written are this UMEM's frames the kernel
            // has finished with; they return to the worker's hands.
            let n = unsafe { p.cq.consume(&mut self.comp_descs) };
            self.free.extend_from_slice(&self.comp_descs[..n]);
            p.in_flight = p.in_flight.saturating_sub(n as u32);
        }
    }

    /// Receive one batch on port `pi`, run it through `processor`, dispatch the
    /// verdicts. Returns the number of frames received.
    fn rx_batch(
        &mut self,
        pi: usize,
        processor: &mut dyn Processor,
        tables: &xlb_dataplane::tables::Tables,
        now_ns: u64,
        stats: &WorkerStats,
    ) -> usize {
        let batch = self.batch;
        // SAFETY: the ring hands over frames of this UMEM that the kernel has
        // filled; from here they are in the worker's hands.
        let n = unsafe { self.ports[pi].rx.consume(&mut self.rx_descs[..batch]) };
        if n == 0 {
            return 0;
        }
        let rx_port = pi as PortId;
        {
            let mut frames = recycle(std::mem::take(&mut self.frames_store));
            for d in &mut self.rx_descs[..n] {
                // SAFETY: `d` describes a frame of this UMEM that the worker
                // owns until it is produced to a ring below.
                let mut data = unsafe { self.umem.data_mut(d) };
                let len = data.contents().len();
                // Widen the segment to the chunk's end (set_pos clamps), then
                // take the pointer last: `data` is not touched again, so the
                // pointer stays the most recent borrow of these bytes. The
                // descriptor's length is stale from here on; TX sets it below.
                data.cursor().set_pos(usize::MAX);
                let whole = data.contents_mut();
                let (ptr, cap) = (whole.as_mut_ptr(), whole.len());
                // SAFETY: `ptr..ptr+cap` is the rest of this frame's chunk
                // (xsk-rs's data segment runs from the packet to the chunk end),
                // inside the mapped UMEM. Frames are disjoint chunks and each is
                // in exactly one slot of this batch, so the slices never alias;
                // the kernel does not touch a frame in the worker's hands. The
                // slices die (frames is recycled) before the descriptors go back
                // to any ring or are touched through xsk-rs again.
                let buf: &mut [u8] = unsafe { std::slice::from_raw_parts_mut(ptr, cap) };
                frames.push(Frame::new(buf, len, rx_port));
            }
            self.verdicts[..n].fill(Verdict::Pass);
            processor.process_batch(tables, now_ns, &mut frames, &mut self.verdicts[..n]);
            for (l, f) in self.lens.iter_mut().zip(frames.iter()) {
                *l = f.len;
            }
            self.frames_store = recycle(frames);
        }
        let nports = self.ports.len();
        let (mut not_ours, mut bad_port) = (0u64, 0u64);
        for i in 0..n {
            let mut d = self.rx_descs[i];
            match self.verdicts[i] {
                Verdict::Tx(p) if (p as usize) < nports => {
                    // SAFETY: as above; no frame slice is alive any more.
                    unsafe { self.umem.data_mut(&mut d) }
                        .cursor()
                        .set_pos(self.lens[i]);
                    self.tx_pending[p as usize].push(d);
                }
                Verdict::Tx(_) => {
                    // Fill rings ignore the length, so the stale one is fine.
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
        if not_ours > 0 {
            stats.not_ours.fetch_add(not_ours, Ordering::Relaxed);
        }
        if bad_port > 0 {
            stats.bad_port.fetch_add(bad_port, Ordering::Relaxed);
        }
        n
    }

    /// Put pending frames on TX rings and kick the kernel where it asks.
    fn flush_tx(&mut self, stats: &WorkerStats) {
        for (pi, p) in self.ports.iter_mut().enumerate() {
            let pending = &mut self.tx_pending[pi];
            if !pending.is_empty() {
                // SAFETY: frames of this UMEM in the worker's hands, lengths
                // set; the kernel owns the produced ones until completion.
                let mut sent = unsafe { p.tx.produce(pending) };
                if sent == 0 {
                    // All-or-nothing: try what fits.
                    let room = p.tx.nb_free(pending.len() as u32) as usize;
                    if room > 0 {
                        // SAFETY: as above.
                        sent = unsafe { p.tx.produce(&pending[..room]) };
                    }
                }
                p.in_flight += sent as u32;
                stats.tx.fetch_add(sent as u64, Ordering::Relaxed);
                let full = pending.len() - sent;
                if full > 0 {
                    stats.tx_ring_full.fetch_add(full as u64, Ordering::Relaxed);
                    self.free.extend_from_slice(&pending[sent..]);
                }
                pending.clear();
            }
            // Copy mode sends at most a few dozen frames per kick, so kick
            // again while anything is in flight and the kernel wants it.
            if p.in_flight > 0 && p.tx.needs_wakeup() {
                if let Err(e) = p.tx.wakeup() {
                    tracing::debug!(error = %e, "AF_XDP TX wakeup failed");
                }
                stats.tx_kicks.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn in_flight(&self) -> bool {
        self.ports.iter().any(|p| p.in_flight > 0)
    }

    /// Copy the kernel's per-socket counters (one getsockopt per socket).
    fn publish_kernel_stats(&self, stats: &WorkerStats) {
        let (mut full, mut empty, mut dropped, mut invalid) = (0, 0, 0, 0);
        for p in &self.ports {
            if let Ok(k) = p.rx.fd().xdp_statistics() {
                full += k.rx_ring_full();
                empty += k.rx_fill_ring_empty_descs();
                dropped += k.rx_dropped();
                invalid += k.tx_invalid_descs();
            }
        }
        stats.kernel_rx_ring_full.store(full, Ordering::Relaxed);
        stats.kernel_fill_ring_empty.store(empty, Ordering::Relaxed);
        stats.kernel_rx_dropped.store(dropped, Ordering::Relaxed);
        stats.kernel_tx_invalid.store(invalid, Ordering::Relaxed);
    }

    fn publish_drops(&mut self, stats: &WorkerStats) {
        for (i, d) in self.drops.iter_mut().enumerate() {
            if *d > 0 {
                stats.drops[i].fetch_add(*d, Ordering::Relaxed);
                *d = 0;
            }
        }
    }

    /// The worker loop: runs until `stop` is set.
    pub fn run(
        mut self,
        mut processor: Box<dyn Processor + Send>,
        tables: TablesHandle,
        busy_poll: bool,
        stop: Arc<AtomicBool>,
        stats: Arc<WorkerStats>,
    ) {
        let mut last_traffic = Instant::now();
        let mut last_kernel_stats = last_traffic;
        while !stop.load(Ordering::Relaxed) {
            let mut got = 0;
            {
                let snapshot = tables.load(); // once per batch (all ports of this round)
                let now = sys::monotonic_ns();
                for pi in 0..self.ports.len() {
                    got += self.rx_batch(pi, processor.as_mut(), &snapshot, now, &stats);
                }
            }
            self.flush_tx(&stats);
            self.drain_completions();
            self.refill();
            if got > 0 {
                self.publish_drops(&stats);
                last_traffic = Instant::now();
                if last_traffic.duration_since(last_kernel_stats) >= KERNEL_STATS_EVERY {
                    self.publish_kernel_stats(&stats);
                    last_kernel_stats = last_traffic;
                }
                continue;
            }
            if busy_poll || self.in_flight() || last_traffic.elapsed() < SPIN_BEFORE_SLEEP {
                std::hint::spin_loop();
                continue;
            }
            // Idle: block until a socket is readable (or the timeout, to notice
            // `stop`). Never burns a core while nothing flows.
            stats.sleeps.fetch_add(1, Ordering::Relaxed);
            processor.idle(sys::monotonic_ns());
            if last_kernel_stats.elapsed() >= KERNEL_STATS_EVERY {
                self.publish_kernel_stats(&stats);
                last_kernel_stats = Instant::now();
            }
            if let Err(e) = sys::poll_readable(&self.poll_fds, &mut self.pollfds, IDLE_POLL_MS) {
                tracing::warn!(error = %e, "poll on AF_XDP sockets failed");
                std::thread::sleep(Duration::from_millis(IDLE_POLL_MS as u64));
            }
        }
        self.publish_drops(&stats);
        self.publish_kernel_stats(&stats);
    }
}

/// Reuse a frame vector's allocation across batches whose frames borrow
/// different lifetimes. The vector is emptied first, so no value changes type;
/// std's in-place `collect` keeps the allocation (same size and alignment).
// filter_map (not map + unreachable!) so there is no panic path at all.
#[allow(clippy::unnecessary_filter_map)]
fn recycle<'a, 'b>(mut v: Vec<Frame<'a>>) -> Vec<Frame<'b>> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycle_keeps_the_allocation() {
        let mut buf = [0u8; 8];
        let mut v: Vec<Frame<'_>> = Vec::with_capacity(64);
        v.push(Frame::new(&mut buf, 4, 0));
        let cap = v.capacity();
        let ptr = v.as_ptr() as usize;
        let w: Vec<Frame<'static>> = recycle(v);
        assert!(w.is_empty());
        assert_eq!(w.capacity(), cap);
        assert_eq!(w.as_ptr() as usize, ptr);
    }

    #[test]
    fn ring_sizes_are_powers_of_two_in_range() {
        for n in [0, 1, 63, 64, 100, 1000, 5000, 100_000] {
            let r = ring_size(n);
            assert!(
                r.is_power_of_two() && (64..=4096).contains(&r),
                "{n} -> {r}"
            );
        }
    }
}
