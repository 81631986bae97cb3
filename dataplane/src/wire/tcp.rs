//! TCP headers (RFC 9293 §3.1).
//!
//! Invariant: after [`Packet::check_len`] the header, options included (data
//! offset words), lies inside the buffer.

use super::view::view;
use crate::drop::DropReason;

/// Byte ranges of the fixed header.
pub mod field {
    use core::ops::Range;
    /// Source port.
    pub const SRC_PORT: Range<usize> = 0..2;
    /// Destination port.
    pub const DST_PORT: Range<usize> = 2..4;
    /// Sequence number.
    pub const SEQ_NUM: Range<usize> = 4..8;
    /// Acknowledgment number.
    pub const ACK_NUM: Range<usize> = 8..12;
    /// Data offset (high nibble, 32-bit words).
    pub const DATA_OFF: usize = 12;
    /// Flags (CWR ECE URG ACK PSH RST SYN FIN).
    pub const FLAGS: usize = 13;
    /// Window.
    pub const WINDOW: Range<usize> = 14..16;
    /// Checksum.
    pub const CHECKSUM: Range<usize> = 16..18;
    /// Urgent pointer.
    pub const URGENT: Range<usize> = 18..20;
}

/// Flag bits of [`field::FLAGS`].
pub mod flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset.
    pub const RST: u8 = 0x04;
    /// Push.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer significant.
    pub const URG: u8 = 0x20;
    /// ECN echo (RFC 3168).
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced (RFC 3168).
    pub const CWR: u8 = 0x80;
}

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;

/// The header length in bytes that a data-offset byte
/// ([`field::DATA_OFF`]) gives (its high nibble counts 32-bit words).
#[inline(always)]
pub fn header_len(data_off: u8) -> usize {
    usize::from(data_off >> 4) * 4
}

view! {
    /// A read/write view of a TCP segment.
    Packet
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// `TruncatedL4` if the fixed header is cut short, or the data offset is
    /// below 5 words or past the buffer.
    pub fn check_len(&self) -> Result<(), DropReason> {
        let b = self.buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(DropReason::TruncatedL4);
        }
        let h = self.header_len();
        if h < MIN_HEADER_LEN || h > b.len() {
            return Err(DropReason::TruncatedL4);
        }
        Ok(())
    }
    /// Source port.
    pub fn src_port(&self) -> u16 {
        self.be16(field::SRC_PORT.start)
    }
    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        self.be16(field::DST_PORT.start)
    }
    /// Sequence number.
    pub fn seq_number(&self) -> u32 {
        self.be32(field::SEQ_NUM.start)
    }
    /// Acknowledgment number.
    pub fn ack_number(&self) -> u32 {
        self.be32(field::ACK_NUM.start)
    }
    /// Header length in bytes (data offset × 4).
    pub fn header_len(&self) -> usize {
        header_len(self.buffer.as_ref()[field::DATA_OFF])
    }
    /// The flags byte (see [`flags`]).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }
    /// Window.
    pub fn window(&self) -> u16 {
        self.be16(field::WINDOW.start)
    }
    /// Checksum.
    pub fn checksum(&self) -> u16 {
        self.be16(field::CHECKSUM.start)
    }
    /// Urgent pointer.
    pub fn urgent(&self) -> u16 {
        self.be16(field::URGENT.start)
    }
    /// Options.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }
    /// Data after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the source port (checksum not updated).
    pub fn set_src_port(&mut self, v: u16) {
        self.set16(field::SRC_PORT.start, v);
    }
    /// Set the destination port (checksum not updated).
    pub fn set_dst_port(&mut self, v: u16) {
        self.set16(field::DST_PORT.start, v);
    }
    /// Set the sequence number.
    pub fn set_seq_number(&mut self, v: u32) {
        self.set32(field::SEQ_NUM.start, v);
    }
    /// Set the acknowledgment number.
    pub fn set_ack_number(&mut self, v: u32) {
        self.set32(field::ACK_NUM.start, v);
    }
    /// Set the header length in bytes (a multiple of 4, 20..=60).
    pub fn set_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[field::DATA_OFF] = ((len / 4) as u8) << 4;
    }
    /// Set the flags byte.
    pub fn set_flags(&mut self, f: u8) {
        self.buffer.as_mut()[field::FLAGS] = f;
    }
    /// Set the window.
    pub fn set_window(&mut self, v: u16) {
        self.set16(field::WINDOW.start, v);
    }
    /// Set the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        self.set16(field::CHECKSUM.start, v);
    }
    /// Set the urgent pointer.
    pub fn set_urgent(&mut self, v: u16) {
        self.set16(field::URGENT.start, v);
    }
}
