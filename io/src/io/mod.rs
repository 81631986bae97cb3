//! The worker loop's view of packet I/O: numbered ports, each with the four
//! rings of an AF_XDP socket (fill, RX, TX, completion), over one pool of
//! frame buffers. [`crate::worker::Worker`] runs the same loop over any
//! [`PacketIo`]: AF_XDP sockets ([`xsk::XskIo`]), in-memory rings
//! ([`mem::MemIo`], for tests and NIC-less benchmarks), and later other
//! kernel-bypass backends (a DPDK port maps onto it: its mbuf pool is the
//! frame pool, rx/tx bursts are the RX/TX rings, freed mbufs are completions).
//! Loops simpler than a worker's (the traffic generator's) go through
//! [`pool::FramePool`], which keeps the contract for them.
//!
//! Frame ownership is the contract: every frame is, at any instant, in exactly
//! one place - the caller's hands, a fill ring, the device (waiting to receive
//! or transmitting), an RX ring, a TX ring or a completion ring. Frames come
//! into the caller's hands from [`PacketIo::take_frames`], [`PacketIo::rx`]
//! and [`PacketIo::completions`], and leave them through [`PacketIo::fill`]
//! and [`PacketIo::tx`]. The methods that read or hand over a frame's bytes are
//! `unsafe`: a backend whose buffers the kernel writes (a UMEM) is sound only
//! if the caller keeps this contract; the in-memory backend checks it.
// Declares the unsafe methods of the contract; no unsafe block lives here.
#![allow(unsafe_code)]

pub mod mem;
pub mod pool;
pub mod xsk;

use std::io;

use xlb_dataplane::frame::{Frame, PortId};

/// Kernel-side losses of one I/O (AF_XDP's `XDP_STATISTICS`, summed over its
/// ports). Backends without such counters report zeros.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Frames lost because an RX ring was full.
    pub rx_ring_full: u64,
    /// Frames lost because a fill ring was empty.
    pub fill_ring_empty: u64,
    /// Other RX losses (e.g. a frame too large for a buffer).
    pub rx_dropped: u64,
    /// Invalid TX descriptors.
    pub tx_invalid: u64,
}

/// Packet I/O over numbered ports sharing one pool of frames.
///
/// `port` arguments are below [`PacketIo::ports`]; backends may panic
/// otherwise (a bug in the caller, not bad input).
pub trait PacketIo {
    /// A handle naming one frame of the pool and, when on an RX or TX ring,
    /// the length of the packet in it.
    type Desc: Copy + Default;

    /// Number of ports.
    fn ports(&self) -> usize;

    /// Slots of each port's fill ring.
    fn fill_ring_size(&self) -> u32;

    /// All frames of the pool, into the caller's hands; empty on later calls.
    fn take_frames(&mut self) -> Vec<Self::Desc>;

    /// Take up to `out.len()` received frames of `port` into the caller's
    /// hands; returns how many were written to `out`.
    fn rx(&mut self, port: usize, out: &mut [Self::Desc]) -> usize;

    /// Take up to `out.len()` frames whose transmission on `port` finished
    /// into the caller's hands; returns how many.
    fn completions(&mut self, port: usize, out: &mut [Self::Desc]) -> usize;

    /// Free slots on `port`'s fill ring.
    fn fill_room(&mut self, port: usize) -> usize;

    /// Free slots on `port`'s TX ring.
    fn tx_room(&mut self, port: usize) -> usize;

    /// Views of the frames `descs` for the pipeline: each [`Frame`] spans the
    /// whole buffer, holds the received length and is tagged `rx_port`.
    /// Appended to `out` in `descs` order.
    ///
    /// # Safety
    /// Every desc is a frame of this I/O in the caller's hands, and no desc
    /// appears twice.
    unsafe fn frames<'a>(
        &'a mut self,
        descs: &[Self::Desc],
        rx_port: PortId,
        out: &mut Vec<Frame<'a>>,
    );

    /// Set the packet length of `desc` (before it goes to a TX ring).
    ///
    /// # Safety
    /// `desc` is a frame of this I/O in the caller's hands.
    unsafe fn set_len(&mut self, desc: &mut Self::Desc, len: usize);

    /// Put a prefix of `descs` on `port`'s fill ring: as many as fit. Returns
    /// how many; those leave the caller's hands.
    ///
    /// # Safety
    /// Every desc is a frame of this I/O in the caller's hands, none twice.
    unsafe fn fill(&mut self, port: usize, descs: &[Self::Desc]) -> usize;

    /// Put a prefix of `descs` on `port`'s TX ring: as many as fit. Returns how
    /// many; those leave the caller's hands until they come back as
    /// completions.
    ///
    /// # Safety
    /// As for [`PacketIo::fill`]; lengths set with [`PacketIo::set_len`].
    unsafe fn tx(&mut self, port: usize, descs: &[Self::Desc]) -> usize;

    /// Make the device send what is on `port`'s TX ring, where it needs to be
    /// told. Returns the number of wake-ups (syscalls) made.
    fn kick_tx(&mut self, port: usize) -> u32;

    /// Block until a port has received frames, or `timeout_ms` passes.
    fn wait(&mut self, timeout_ms: i32) -> io::Result<()>;

    /// The device's own loss counters.
    fn device_stats(&self) -> DeviceStats {
        DeviceStats::default()
    }
}

/// Reuse a frame vector's allocation across batches whose frames borrow
/// different lifetimes. The vector is emptied first, so no value changes type;
/// std's in-place `collect` keeps the allocation (same size and alignment).
// filter_map (not map + unreachable!) so there is no panic path at all.
#[allow(clippy::unnecessary_filter_map)]
pub(crate) fn recycle<'a, 'b>(mut v: Vec<Frame<'a>>) -> Vec<Frame<'b>> {
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
}
