//! In-memory rings: a [`PacketIo`] with no device behind it, for worker-loop
//! tests and benchmarks on machines without a NIC.
//!
//! The "device" side is driven by the owner: [`MemIo::deliver`] plays a frame
//! arriving on a port (it takes a buffer from that port's fill ring, as a NIC
//! would, or counts a fill-ring-empty loss), and TX rings drain when the
//! worker kicks them, into a per-port log of sent packets ([`MemIo::sent`]),
//! up to [`MemIo::set_tx_per_kick`] frames per kick (copy-mode AF_XDP sends
//! at most 32), or not at all while [`MemIo::pause_tx`] holds them (a link
//! that stopped sending). A [`MemLink`] delivers from another thread, so a
//! worker running its loop can be fed and watched.
//!
//! Every frame's place is tracked and every transition checked: a frame
//! handed over twice, or not in the caller's hands, panics - the contract of
//! [`PacketIo`] broken by the caller, which is what the tests look for.
//! [`MemIo::census`] counts frames by place, so a test can prove no buffer
//! leaked.
// The frame pool is one allocation handed out as disjoint slices, checked
// against the PacketIo contract at every hand-over.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use xlb_dataplane::frame::{Frame, PortId};

use super::{DeviceStats, PacketIo};

/// A frame of a [`MemIo`]: its index in the pool and a packet length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemDesc {
    /// Frame index.
    pub frame: u32,
    /// Packet length (meaningful on RX and TX rings).
    pub len: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Hands,
    Fill(usize),
    Rx(usize),
    Tx(usize),
    Comp(usize),
}

/// Frames by place (see [`MemIo::census`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    /// In the caller's hands (taken and not handed back).
    pub hands: usize,
    /// On fill rings.
    pub fill: usize,
    /// On RX rings.
    pub rx: usize,
    /// On TX rings.
    pub tx: usize,
    /// On completion rings.
    pub comp: usize,
}

impl Census {
    /// All frames.
    pub fn total(&self) -> usize {
        self.hands + self.fill + self.rx + self.tx + self.comp
    }
}

#[derive(Debug, Default)]
struct PortRings {
    fill: VecDeque<u32>,
    rx: VecDeque<MemDesc>,
    tx: VecDeque<MemDesc>,
    comp: VecDeque<u32>,
    sent: Vec<Vec<u8>>,
    tx_paused: bool,
}

/// How a [`MemIo`]'s `wait` calls ended, readable from any thread.
#[derive(Debug, Default)]
pub struct WaitStats {
    /// Calls to `wait`.
    pub waits: AtomicU64,
    /// Of those, calls that returned because a frame arrived (not by timeout).
    pub woken: AtomicU64,
}

/// Feeds a [`MemIo`] from another thread: frames sent here are delivered
/// when the I/O next receives or waits.
#[derive(Debug, Clone)]
pub struct MemLink {
    tx: Sender<(usize, Vec<u8>)>,
}

impl MemLink {
    /// Queue `bytes` to arrive on `port`. False if the I/O is gone.
    pub fn send(&self, port: usize, bytes: &[u8]) -> bool {
        self.tx.send((port, bytes.to_vec())).is_ok()
    }
}

/// In-memory packet I/O (see the module docs).
pub struct MemIo {
    // The pool: one allocation, never resized, touched only through `base`
    // once created (so slices of frames in the caller's hands never alias a
    // borrow of the whole vector).
    _pool: Vec<u8>,
    base: *mut u8,
    frame_size: usize,
    ring: usize,
    place: Vec<Place>,
    lent: Vec<u64>,
    lend_gen: u64,
    taken: bool,
    ports: Vec<PortRings>,
    tx_per_kick: usize,
    kicks: u64,
    stats: DeviceStats,
    link_rx: Receiver<(usize, Vec<u8>)>,
    link_tx: Sender<(usize, Vec<u8>)>,
    sent_to: Option<Sender<(usize, Vec<u8>)>>,
    wait_stats: Arc<WaitStats>,
}

// SAFETY: `base` points into `_pool`, owned by this value and moving with it;
// nothing else holds the pointer, so sending the whole I/O to another thread
// moves all access to the pool with it.
unsafe impl Send for MemIo {}

impl std::fmt::Debug for MemIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemIo")
            .field("ports", &self.ports.len())
            .field("census", &self.census())
            .finish()
    }
}

impl MemIo {
    /// `ports` ports over a pool of `frames` buffers of `frame_size` bytes;
    /// every ring has `ring` slots.
    pub fn new(ports: usize, frames: u32, frame_size: usize, ring: usize) -> MemIo {
        let mut pool = vec![0u8; frames as usize * frame_size];
        let base = pool.as_mut_ptr();
        let (link_tx, link_rx) = mpsc::channel();
        MemIo {
            _pool: pool,
            base,
            frame_size,
            ring,
            place: vec![Place::Hands; frames as usize],
            lent: vec![0; frames as usize],
            lend_gen: 0,
            taken: false,
            ports: (0..ports).map(|_| PortRings::default()).collect(),
            tx_per_kick: usize::MAX,
            kicks: 0,
            stats: DeviceStats::default(),
            link_rx,
            link_tx,
            sent_to: None,
            wait_stats: Arc::default(),
        }
    }

    /// A handle that delivers frames from another thread.
    pub fn link(&self) -> MemLink {
        MemLink {
            tx: self.link_tx.clone(),
        }
    }

    /// How `wait` calls ended (shared: readable while a worker owns the I/O).
    pub fn wait_stats(&self) -> Arc<WaitStats> {
        self.wait_stats.clone()
    }

    /// Also send a copy of every transmitted packet, with its port, here.
    pub fn tap_sent(&mut self, to: Sender<(usize, Vec<u8>)>) {
        self.sent_to = Some(to);
    }

    /// Frames a TX kick sends at most (default: all on the ring).
    pub fn set_tx_per_kick(&mut self, n: usize) {
        self.tx_per_kick = n;
    }

    /// Hold (or release) `port`'s TX ring: while held, kicks send nothing.
    pub fn pause_tx(&mut self, port: usize, paused: bool) {
        self.ports[port].tx_paused = paused;
    }

    /// A frame arrives on `port`: false (and counted) if its fill ring is
    /// empty or its RX ring full, as a NIC would lose it.
    pub fn deliver(&mut self, port: usize, bytes: &[u8]) -> bool {
        let p = &mut self.ports[port];
        if p.rx.len() >= self.ring {
            self.stats.rx_ring_full += 1;
            return false;
        }
        if bytes.len() > self.frame_size {
            self.stats.rx_dropped += 1;
            return false;
        }
        let Some(f) = p.fill.pop_front() else {
            self.stats.fill_ring_empty += 1;
            return false;
        };
        debug_assert_eq!(self.place[f as usize], Place::Fill(port));
        self.place[f as usize] = Place::Rx(port);
        p.rx.push_back(MemDesc {
            frame: f,
            len: bytes.len() as u32,
        });
        self.chunk(f)[..bytes.len()].copy_from_slice(bytes);
        true
    }

    /// Packets sent on `port` so far, oldest first; the log is emptied.
    pub fn sent(&mut self, port: usize) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.ports[port].sent)
    }

    /// Frames waiting on `port`'s TX ring.
    pub fn tx_queued(&self, port: usize) -> usize {
        self.ports[port].tx.len()
    }

    /// Frames on `port`'s fill ring.
    pub fn fill_queued(&self, port: usize) -> usize {
        self.ports[port].fill.len()
    }

    /// TX kicks made so far.
    pub fn kicks(&self) -> u64 {
        self.kicks
    }

    /// Frames by place.
    pub fn census(&self) -> Census {
        let mut c = Census::default();
        for p in &self.place {
            match p {
                Place::Hands => c.hands += 1,
                Place::Fill(_) => c.fill += 1,
                Place::Rx(_) => c.rx += 1,
                Place::Tx(_) => c.tx += 1,
                Place::Comp(_) => c.comp += 1,
            }
        }
        c
    }

    /// The bytes of frame `f`, for the device side (frames not in the
    /// caller's hands).
    fn chunk(&mut self, f: u32) -> &mut [u8] {
        assert!(
            (f as usize) < self.place.len(),
            "frame {f} is not of this pool"
        );
        // SAFETY: `f` is an index of the pool (checked), so the chunk lies in
        // the allocation behind `base`; `&mut self` excludes every other
        // slice of the pool (frames() slices borrow `self` mutably too).
        unsafe {
            std::slice::from_raw_parts_mut(
                self.base.add(f as usize * self.frame_size),
                self.frame_size,
            )
        }
    }

    fn take_link(&mut self) {
        while let Ok((port, bytes)) = self.link_rx.try_recv() {
            self.deliver(port, &bytes);
        }
    }

    fn give(&mut self, frame: u32, to: Place) {
        let p = self
            .place
            .get_mut(frame as usize)
            .unwrap_or_else(|| panic!("frame {frame} is not of this pool"));
        assert_eq!(
            *p,
            Place::Hands,
            "frame {frame} handed over but not in hand"
        );
        *p = to;
    }

    fn send_port(&mut self, port: usize) {
        let mut budget = self.tx_per_kick;
        if self.ports[port].tx_paused {
            return;
        }
        while budget > 0 && self.ports[port].comp.len() < self.ring {
            let Some(d) = self.ports[port].tx.pop_front() else {
                break;
            };
            let bytes = self.chunk(d.frame)[..d.len as usize].to_vec();
            if let Some(t) = &self.sent_to {
                let _ = t.send((port, bytes.clone()));
            }
            let p = &mut self.ports[port];
            p.sent.push(bytes);
            p.comp.push_back(d.frame);
            self.place[d.frame as usize] = Place::Comp(port);
            budget -= 1;
        }
    }
}

impl PacketIo for MemIo {
    type Desc = MemDesc;

    fn ports(&self) -> usize {
        self.ports.len()
    }

    fn fill_ring_size(&self) -> u32 {
        self.ring as u32
    }

    fn take_frames(&mut self) -> Vec<MemDesc> {
        if std::mem::replace(&mut self.taken, true) {
            return Vec::new();
        }
        (0..self.place.len() as u32)
            .map(|frame| MemDesc { frame, len: 0 })
            .collect()
    }

    fn rx(&mut self, port: usize, out: &mut [MemDesc]) -> usize {
        self.take_link();
        let p = &mut self.ports[port];
        let n = out.len().min(p.rx.len());
        for (o, d) in out.iter_mut().zip(p.rx.drain(..n)) {
            self.place[d.frame as usize] = Place::Hands;
            *o = d;
        }
        n
    }

    fn completions(&mut self, port: usize, out: &mut [MemDesc]) -> usize {
        let p = &mut self.ports[port];
        let n = out.len().min(p.comp.len());
        for (o, f) in out.iter_mut().zip(p.comp.drain(..n)) {
            self.place[f as usize] = Place::Hands;
            *o = MemDesc { frame: f, len: 0 };
        }
        n
    }

    fn fill_room(&mut self, port: usize) -> usize {
        self.ring - self.ports[port].fill.len()
    }

    fn tx_room(&mut self, port: usize) -> usize {
        self.ring - self.ports[port].tx.len()
    }

    unsafe fn frames<'a>(
        &'a mut self,
        descs: &[MemDesc],
        rx_port: PortId,
        out: &mut Vec<Frame<'a>>,
    ) {
        self.lend_gen += 1;
        for d in descs {
            let f = d.frame as usize;
            assert_eq!(
                self.place.get(f),
                Some(&Place::Hands),
                "frame {f} not in hand"
            );
            assert_ne!(self.lent[f], self.lend_gen, "frame {f} lent twice");
            self.lent[f] = self.lend_gen;
        }
        for d in descs {
            // SAFETY: `frame` is an index of the pool (checked above), so the
            // chunk lies inside the allocation behind `base`. The chunks are
            // disjoint and each desc is lent once per call (checked above), so
            // no two slices alias; the pool is touched elsewhere only for
            // frames not in the caller's hands (deliver, send_port), and the
            // slices borrow `self` mutably, so none of that runs while they
            // live.
            let buf = unsafe {
                std::slice::from_raw_parts_mut(
                    self.base.add(d.frame as usize * self.frame_size),
                    self.frame_size,
                )
            };
            out.push(Frame::new(buf, d.len as usize, rx_port));
        }
    }

    unsafe fn set_len(&mut self, desc: &mut MemDesc, len: usize) {
        desc.len = len.min(self.frame_size) as u32;
    }

    unsafe fn fill(&mut self, port: usize, descs: &[MemDesc]) -> usize {
        let n = descs.len().min(self.fill_room(port));
        for d in &descs[..n] {
            self.give(d.frame, Place::Fill(port));
            self.ports[port].fill.push_back(d.frame);
        }
        n
    }

    unsafe fn tx(&mut self, port: usize, descs: &[MemDesc]) -> usize {
        let n = descs.len().min(self.tx_room(port));
        for d in &descs[..n] {
            self.give(d.frame, Place::Tx(port));
            self.ports[port].tx.push_back(*d);
        }
        n
    }

    fn kick_tx(&mut self, port: usize) -> u32 {
        if self.ports[port].tx.is_empty() {
            return 0;
        }
        self.kicks += 1;
        self.send_port(port);
        1
    }

    fn wait(&mut self, timeout_ms: i32) -> io::Result<()> {
        self.wait_stats.waits.fetch_add(1, Ordering::Relaxed);
        self.take_link();
        if self.ports.iter().any(|p| !p.rx.is_empty()) {
            self.wait_stats.woken.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let t = Duration::from_millis(timeout_ms.max(0) as u64);
        match self.link_rx.recv_timeout(t) {
            Ok((port, bytes)) => {
                self.deliver(port, &bytes);
                self.wait_stats.woken.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(RecvTimeoutError::Timeout) => Ok(()),
            // Our own sender lives in `self`: never disconnected.
            Err(RecvTimeoutError::Disconnected) => Ok(()),
        }
    }

    fn device_stats(&self) -> DeviceStats {
        self.stats
    }
}
