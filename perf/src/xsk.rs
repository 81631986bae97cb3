//! The generator's AF_XDP socket: one UMEM and one socket on (interface,
//! queue), used to transmit templates or to receive and count.
//!
//! Why not xlb-bpf's `WorkerIo`: it owns its loop (`run` feeds a
//! `Processor`) and exposes no way to put frames of our own on a TX ring, so
//! this duplicates the minimal socket setup (same xsk-rs calls and flags:
//! copy mode, need_wakeup, our own XDP program's XSKMAP). RX steering reuses
//! xlb-bpf's steering program through its public API (see `rx.rs`).
//!
//! Frame ownership: each UMEM frame is in exactly one place - `free` (ours),
//! the fill ring, the kernel, the RX ring, the TX ring or the completion
//! ring. We only touch bytes of frames in `free` or just consumed from RX.
#![allow(unsafe_code)]

use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};

use xsk_rs::config::{BindFlags, FrameSize, LibxdpFlags, QueueSize, SocketConfig, UmemConfig};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

/// UMEM chunk size (holds a 1518-byte frame).
pub const FRAME_SIZE: u32 = 2048;

/// Socket setup failed.
#[derive(Debug, thiserror::Error)]
pub enum XskOpenError {
    /// bad sizes
    #[error("AF_XDP configuration: {0}")]
    Config(String),
    /// UMEM creation failed
    #[error("UMEM: {0}")]
    Umem(#[source] xsk_rs::umem::UmemCreateError),
    /// the socket could not be created or bound
    #[error("AF_XDP socket on {iface} queue {queue}: {source}")]
    Socket {
        /// Interface.
        iface: String,
        /// Queue.
        queue: u32,
        /// xsk-rs's error.
        #[source]
        source: xsk_rs::socket::SocketCreateError,
    },
}

/// One AF_XDP socket and its UMEM.
pub struct XskPort {
    umem: Umem,
    tx: TxQueue,
    rx: RxQueue,
    fq: FillQueue,
    cq: CompQueue,
    free: Vec<FrameDesc>,
    scratch: Vec<FrameDesc>,
    batch: Vec<FrameDesc>,
    in_flight: u32,
    ring: u32,
}

impl std::fmt::Debug for XskPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskPort")
            .field("free", &self.free.len())
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl XskPort {
    /// A socket on `iface` queue `queue` with `frames` UMEM frames. For RX,
    /// half the frames go to the fill ring at once.
    pub fn open(iface: &str, queue: u32, frames: u32, rx: bool) -> Result<XskPort, XskOpenError> {
        let frames = frames.clamp(256, 1 << 16).next_power_of_two();
        let ring = (frames / 2).clamp(64, 4096);
        let cfg = |e: &dyn std::fmt::Display| XskOpenError::Config(e.to_string());
        let qs = |n| QueueSize::new(n).map_err(|e| cfg(&e));
        let umem_cfg = UmemConfig::builder()
            .frame_size(FrameSize::new(FRAME_SIZE).map_err(|e| cfg(&e))?)
            .fill_queue_size(qs(ring)?)
            .comp_queue_size(qs(ring)?)
            .build()
            .map_err(|e| cfg(&e))?;
        let n = NonZeroU32::new(frames).ok_or_else(|| cfg(&"zero frames"))?;
        let (umem, descs) = Umem::new(umem_cfg, n, false).map_err(XskOpenError::Umem)?;
        let sock_cfg = SocketConfig::builder()
            .rx_queue_size(qs(ring)?)
            .tx_queue_size(qs(ring)?)
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(BindFlags::XDP_COPY | BindFlags::XDP_USE_NEED_WAKEUP)
            .build();
        let name: xsk_rs::config::Interface = iface
            .parse()
            .map_err(|_| cfg(&format!("bad interface name {iface:?}")))?;
        // SAFETY: one socket per UMEM, so (interface, queue) is bound once on
        // it; XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD is set as xsk-rs requires
        // when it must not load libxdp's program.
        let (tx, rxq, fqcq) =
            unsafe { Socket::new(sock_cfg, &umem, &name, queue) }.map_err(|source| {
                XskOpenError::Socket {
                    iface: iface.to_string(),
                    queue,
                    source,
                }
            })?;
        let (fq, cq) = fqcq.ok_or_else(|| cfg(&"UMEM already bound"))?;
        let mut p = XskPort {
            umem,
            tx,
            rx: rxq,
            fq,
            cq,
            free: descs,
            scratch: vec![FrameDesc::default(); ring as usize],
            batch: Vec::with_capacity(ring as usize),
            in_flight: 0,
            ring,
        };
        if rx {
            p.refill();
        }
        Ok(p)
    }

    /// The socket's fd (for an XSKMAP).
    pub fn fd(&self) -> RawFd {
        self.rx.fd().as_raw_fd()
    }

    /// Frames on the TX ring or in the kernel, not yet completed.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Take back completed TX frames; returns how many.
    pub fn reclaim(&mut self) -> usize {
        if self.in_flight == 0 {
            return 0;
        }
        // SAFETY: the completion ring hands back frames of this UMEM that the
        // kernel has finished sending; they return to `free`.
        let n = unsafe { self.cq.consume(&mut self.scratch) };
        self.free.extend_from_slice(&self.scratch[..n]);
        self.in_flight = self.in_flight.saturating_sub(n as u32);
        n
    }

    /// Write up to `n` frames with `fill(i, chunk) -> len` (0 = stop early)
    /// and put them on the TX ring; kick the kernel. Returns frames queued.
    pub fn send(&mut self, n: usize, mut fill: impl FnMut(usize, &mut [u8]) -> usize) -> usize {
        let room = self.tx.nb_free(n as u32) as usize;
        let n = n.min(self.free.len()).min(room);
        self.batch.clear();
        for i in 0..n {
            let Some(mut d) = self.free.pop() else { break };
            let len = {
                // SAFETY: `d` is a frame of this UMEM in our hands (`free`);
                // nothing else references its bytes until it is produced.
                let mut data = unsafe { self.umem.data_mut(&mut d) };
                data.cursor().set_pos(usize::MAX); // widen to the chunk (clamped)
                let len = fill(i, data.contents_mut());
                data.cursor().set_pos(len);
                len
            };
            if len == 0 {
                self.free.push(d);
                break;
            }
            self.batch.push(d);
        }
        let sent = if self.batch.is_empty() {
            0
        } else {
            // SAFETY: frames of this UMEM in our hands with lengths set; the
            // kernel owns them from here until they come back on `cq`.
            unsafe { self.tx.produce(&self.batch) }
        };
        if sent == 0 {
            // All-or-nothing reservation refused: the frames stay ours.
            self.free.extend_from_slice(&self.batch);
        }
        self.in_flight += sent as u32;
        self.kick();
        sent
    }

    /// Kick TX while frames are in flight (copy mode sends a few dozen per kick).
    pub fn kick(&mut self) {
        if self.in_flight > 0 && self.tx.needs_wakeup() {
            let _ = self.tx.wakeup();
        }
    }

    /// Put free frames on the fill ring, up to its size.
    fn refill(&mut self) {
        let want = self.fq.nb_free(self.ring) as usize;
        let n = want.min(self.free.len());
        if n == 0 {
            return;
        }
        let start = self.free.len() - n;
        // SAFETY: frames of this UMEM in our hands; after produce the kernel
        // owns the produced ones (all-or-nothing: `done` is n or 0).
        let done = unsafe { self.fq.produce(&self.free[start..]) };
        self.free.truncate(self.free.len() - done);
    }

    /// Receive up to `max` frames, call `each(bytes)` for every one, give the
    /// frames back to the fill ring. Returns frames received.
    pub fn recv(&mut self, max: usize, mut each: impl FnMut(&[u8])) -> usize {
        let max = max.min(self.scratch.len());
        // SAFETY: the RX ring hands over frames of this UMEM the kernel filled.
        let n = unsafe { self.rx.consume(&mut self.scratch[..max]) };
        for d in &self.scratch[..n] {
            // SAFETY: `d` was just consumed from RX: ours until refilled below.
            let data = unsafe { self.umem.data(d) };
            each(data.contents());
        }
        self.free.extend_from_slice(&self.scratch[..n]);
        self.refill();
        n
    }

    /// Block up to `timeout_ms` for RX frames.
    pub fn wait_rx(&mut self, timeout_ms: i32) {
        let _ = self.rx.poll(timeout_ms);
    }

    /// Kernel RX counters: (ring full, fill ring empty, dropped).
    pub fn kernel_rx_drops(&self) -> (u64, u64, u64) {
        match self.rx.fd().xdp_statistics() {
            Ok(s) => (
                s.rx_ring_full(),
                s.rx_fill_ring_empty_descs(),
                s.rx_dropped(),
            ),
            Err(_) => (0, 0, 0),
        }
    }
}
