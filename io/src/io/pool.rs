//! A safe owner of one [`PacketIo`]'s frames, for loops simpler than a
//! worker's: write frames of your own onto a TX ring and take them back as
//! completions, keep a fill ring stocked and read what arrives. The traffic
//! generator (`xlb-pktgen`) sends and receives through it over
//! [`XskIo`](super::xsk::XskIo); tests drive it over
//! [`MemIo`](super::mem::MemIo).
//!
//! Invariant: every frame of the I/O is either in the pool's free list or
//! with the I/O (a fill, RX, TX or completion ring, or the device). Frames
//! move only between the two, each once, and views of a frame's bytes live
//! only inside one call, before the frame is handed over; so the
//! [`PacketIo`] contract holds by construction and callers need no `unsafe`.
// The calls across the PacketIo contract are unsafe; each says why the
// frames it hands over are in the pool's hands.
#![allow(unsafe_code)]

use std::io;

use xlb_dataplane::frame::{Frame, PortId};

use super::{recycle, DeviceStats, PacketIo};

/// One [`PacketIo`] and the frames not with it (see the module docs).
pub struct FramePool<I: PacketIo> {
    io: I,
    /// Frames in the pool's hands.
    free: Vec<I::Desc>,
    /// Descs taken from an RX or completion ring, sized to a ring.
    scratch: Vec<I::Desc>,
    /// Lengths written by `send`'s writer.
    lens: Vec<usize>,
    /// Frame views of one call; empty between calls (only the allocation
    /// is kept).
    views: Vec<Frame<'static>>,
    /// Per port: frames on the TX ring or with the device, not completed.
    in_flight: Vec<u32>,
}

impl<I: PacketIo> std::fmt::Debug for FramePool<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramePool")
            .field("free", &self.free.len())
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl<I: PacketIo> FramePool<I> {
    /// Take all of `io`'s frames into the pool.
    pub fn new(mut io: I) -> FramePool<I> {
        let free = io.take_frames();
        let ring = (io.fill_ring_size() as usize).max(1);
        FramePool {
            in_flight: vec![0; io.ports()],
            scratch: vec![I::Desc::default(); ring],
            lens: Vec::with_capacity(ring),
            views: Vec::with_capacity(ring),
            free,
            io,
        }
    }

    /// The I/O (its device side, for tests; its counters).
    pub fn io(&self) -> &I {
        &self.io
    }

    /// The I/O, writable.
    pub fn io_mut(&mut self) -> &mut I {
        &mut self.io
    }

    /// Frames in the pool's hands.
    pub fn free(&self) -> usize {
        self.free.len()
    }

    /// Frames put on `port`'s TX ring and not yet completed.
    pub fn in_flight(&self, port: usize) -> u32 {
        self.in_flight[port]
    }

    /// Write up to `n` frames with `write(i, buffer) -> length` (the whole
    /// frame buffer; a length of 0 stops early and leaves that frame free),
    /// put them on `port`'s TX ring and kick the device. Returns how many
    /// went on the ring: the first that many written, in order; the rest
    /// stay free.
    pub fn send(
        &mut self,
        port: usize,
        n: usize,
        mut write: impl FnMut(usize, &mut [u8]) -> usize,
    ) -> usize {
        let n = n.min(self.free.len()).min(self.io.tx_room(port));
        let start = self.free.len() - n;
        self.lens.clear();
        if n > 0 {
            let mut views = recycle(std::mem::take(&mut self.views));
            // SAFETY: `free[start..]` are frames in the pool's hands, each
            // once (a frame enters `free` only when it leaves the I/O). The
            // views are gone (recycled below) before any of them is handed on.
            unsafe {
                self.io
                    .frames(&self.free[start..], port as PortId, &mut views)
            };
            for (i, f) in views.iter_mut().enumerate() {
                let len = write(i, &mut f.buf[..]).min(f.buf.len());
                if len == 0 {
                    break;
                }
                self.lens.push(len);
            }
            self.views = recycle(views);
        }
        let written = start..start + self.lens.len();
        for (d, &len) in self.free[written.clone()].iter_mut().zip(&self.lens) {
            // SAFETY: in the pool's hands; no view of it is alive.
            unsafe { self.io.set_len(d, len) };
        }
        let sent = if written.is_empty() {
            0
        } else {
            // SAFETY: frames in the pool's hands, each once, lengths set; the
            // ones the ring takes leave `free` right below.
            unsafe { self.io.tx(port, &self.free[written.clone()]) }
        };
        self.free.drain(start..start + sent);
        self.in_flight[port] += sent as u32;
        self.kick(port);
        sent
    }

    /// Make the device send what waits on `port`'s TX ring, while frames are
    /// in flight there. Returns the wake-ups made.
    pub fn kick(&mut self, port: usize) -> u32 {
        if self.in_flight[port] == 0 {
            return 0;
        }
        self.io.kick_tx(port)
    }

    /// Take back `port`'s frames whose transmission finished; returns how many.
    pub fn reclaim(&mut self, port: usize) -> usize {
        if self.in_flight[port] == 0 {
            return 0;
        }
        let n = self.io.completions(port, &mut self.scratch);
        self.free.extend_from_slice(&self.scratch[..n]);
        self.in_flight[port] = self.in_flight[port].saturating_sub(n as u32);
        n
    }

    /// Put free frames on `port`'s fill ring, as many as it has room for;
    /// returns how many.
    pub fn refill(&mut self, port: usize) -> usize {
        let n = self.io.fill_room(port).min(self.free.len());
        if n == 0 {
            return 0;
        }
        let start = self.free.len() - n;
        // SAFETY: frames in the pool's hands, each once; the ones the ring
        // takes (a prefix) leave `free` right below.
        let done = unsafe { self.io.fill(port, &self.free[start..]) };
        self.free.drain(start..start + done);
        done
    }

    /// Receive up to `max` frames on `port`, call `each(packet)` for every
    /// one, then give them back to the fill ring. Returns frames received.
    pub fn recv(&mut self, port: usize, max: usize, mut each: impl FnMut(&[u8])) -> usize {
        let max = max.min(self.scratch.len());
        let n = self.io.rx(port, &mut self.scratch[..max]);
        if n > 0 {
            let mut views = recycle(std::mem::take(&mut self.views));
            // SAFETY: just received, so in the pool's hands, each once (a
            // ring holds a frame once); the views are gone before the frames
            // go back to the fill ring.
            unsafe {
                self.io
                    .frames(&self.scratch[..n], port as PortId, &mut views)
            };
            for f in &views {
                each(f.data());
            }
            self.views = recycle(views);
            self.free.extend_from_slice(&self.scratch[..n]);
        }
        self.refill(port);
        n
    }

    /// Block until a port has received frames, or `timeout_ms` passes.
    pub fn wait(&mut self, timeout_ms: i32) -> io::Result<()> {
        self.io.wait(timeout_ms)
    }

    /// The device's own loss counters.
    pub fn device_stats(&self) -> DeviceStats {
        self.io.device_stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::mem::MemIo;

    fn pool(frames: u32, ring: usize) -> FramePool<MemIo> {
        FramePool::new(MemIo::new(1, frames, 256, ring))
    }

    /// Every frame is free, or on the ring the pool's books say.
    fn assert_accounted(p: &FramePool<MemIo>, frames: usize) {
        let c = p.io().census();
        assert_eq!(c.total(), frames);
        assert_eq!(c.hands, p.free(), "{c:?}");
        assert_eq!(c.tx + c.comp, p.in_flight(0) as usize, "{c:?}");
    }

    #[test]
    fn sent_frames_carry_what_the_writer_wrote_and_come_back() {
        let mut p = pool(64, 32);
        p.io_mut().set_tx_per_kick(8);
        let n = p.send(0, 10, |i, buf| {
            buf[..3].copy_from_slice(&[7, i as u8, 9]);
            3
        });
        assert_eq!(n, 10);
        assert_accounted(&p, 64);
        // One kick (in send) moved 8 frames; the next kick the other 2.
        assert_eq!(p.io_mut().sent(0).len(), 8);
        p.kick(0);
        let sent = p.io_mut().sent(0);
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1], vec![7, 9, 9]);
        assert_eq!(p.reclaim(0), 10);
        assert_eq!((p.free(), p.in_flight(0)), (64, 0));
        assert_accounted(&p, 64);
    }

    #[test]
    fn a_writer_that_stops_early_leaves_the_rest_free() {
        let mut p = pool(64, 32);
        let n = p.send(0, 10, |i, _| if i < 4 { 60 } else { 0 });
        assert_eq!(n, 4);
        assert_eq!((p.free(), p.in_flight(0)), (60, 4));
        assert_accounted(&p, 64);
        assert_eq!(p.send(0, 5, |_, _| 0), 0, "nothing written, nothing sent");
        assert_accounted(&p, 64);
    }

    #[test]
    fn sends_stop_at_the_tx_ring_and_the_free_frames() {
        let mut p = pool(64, 16);
        p.io_mut().pause_tx(0, true);
        assert_eq!(p.send(0, 100, |_, _| 60), 16, "the TX ring holds 16");
        assert_eq!(p.send(0, 100, |_, _| 60), 0, "and it is full");
        p.io_mut().pause_tx(0, false);
        p.kick(0);
        assert_eq!(p.reclaim(0), 16);
        assert_accounted(&p, 64);
    }

    #[test]
    fn received_frames_are_read_and_go_back_to_the_fill_ring() {
        let mut p = pool(64, 16);
        assert_eq!(p.refill(0), 16);
        assert_eq!(p.io().fill_queued(0), 16);
        for i in 0..5u8 {
            assert!(p.io_mut().deliver(0, &[i; 20]));
        }
        let mut got = Vec::new();
        assert_eq!(p.recv(0, 3, |b| got.push(b.to_vec())), 3);
        assert_eq!(p.recv(0, 64, |b| got.push(b.to_vec())), 2);
        assert_eq!(got, (0..5u8).map(|i| vec![i; 20]).collect::<Vec<_>>());
        assert_eq!(p.io().fill_queued(0), 16, "refilled after each receive");
        assert_eq!(p.recv(0, 64, |_| {}), 0);
        assert_accounted(&p, 64);
    }
}
