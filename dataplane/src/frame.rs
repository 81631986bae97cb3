//! A frame as the pipeline sees it, and what the pipeline decides about it.
//!
//! A [`Frame`] borrows the whole buffer the I/O layer owns (an AF_XDP UMEM chunk
//! or a test buffer); the packet occupies `buf[..len]`. The pipeline may grow the
//! packet (IPIP encapsulation) up to `buf.len()` by moving it, so I/O layers hand
//! over their full chunk, not just the received bytes.

use crate::drop::DropReason;

/// Index of a port (interface) in the I/O layer's list; the tables name ports by it.
pub type PortId = u16;

/// One frame in a batch.
#[derive(Debug)]
pub struct Frame<'a> {
    /// The whole buffer; the packet is `buf[..len]`.
    pub buf: &'a mut [u8],
    /// Length of the packet in `buf`.
    pub len: usize,
    /// The port the frame arrived on.
    pub rx_port: PortId,
}

impl<'a> Frame<'a> {
    /// A frame of `len` bytes in `buf`, received on `rx_port`.
    #[inline]
    pub fn new(buf: &'a mut [u8], len: usize, rx_port: PortId) -> Self {
        let len = len.min(buf.len());
        Frame { buf, len, rx_port }
    }

    /// The packet bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The packet bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }

    /// Insert `n` zero bytes at offset `at`, moving the rest of the packet back.
    /// Returns false (and changes nothing) if the buffer has no room.
    pub fn insert(&mut self, at: usize, n: usize) -> bool {
        if at > self.len || self.len + n > self.buf.len() {
            return false;
        }
        self.buf.copy_within(at..self.len, at + n);
        self.buf[at..at + n].fill(0);
        self.len += n;
        true
    }

    /// Remove `n` bytes at offset `at`. Returns false if out of range.
    pub fn remove(&mut self, at: usize, n: usize) -> bool {
        if at + n > self.len {
            return false;
        }
        self.buf.copy_within(at + n..self.len, at);
        self.len -= n;
        true
    }
}

/// What to do with a frame after the pipeline has run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the (rewritten) frame on this port.
    Tx(PortId),
    /// Not ours: hand the untouched frame to the kernel stack.
    Pass,
    /// Drop, counted under this reason.
    Drop(DropReason),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_and_remove_move_the_tail_and_respect_capacity() {
        let mut buf = [0u8; 8];
        buf[..4].copy_from_slice(&[1, 2, 3, 4]);
        let mut f = Frame::new(&mut buf, 4, 0);
        assert!(f.insert(2, 3));
        assert_eq!(f.data(), &[1, 2, 0, 0, 0, 3, 4]);
        assert!(!f.insert(0, 2), "needs 9 bytes in an 8-byte buffer");
        assert_eq!(f.len, 7);
        assert!(f.remove(2, 3));
        assert_eq!(f.data(), &[1, 2, 3, 4]);
        assert!(!f.remove(3, 2));
    }
}
