//! UDP headers (RFC 768).
//!
//! Invariant: after [`Packet::check_len`] the 8-byte header lies inside the
//! buffer. The length field is not checked against the buffer here: a first
//! fragment carries a length for the whole datagram.

use super::view::view;
use crate::drop::DropReason;

/// Byte ranges of the header.
pub mod field {
    use core::ops::Range;
    /// Source port.
    pub const SRC_PORT: Range<usize> = 0..2;
    /// Destination port.
    pub const DST_PORT: Range<usize> = 2..4;
    /// Length of header + data.
    pub const LENGTH: Range<usize> = 4..6;
    /// Checksum (0 = none, IPv4 only).
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// Header length.
pub const HEADER_LEN: usize = 8;

view! {
    /// A read/write view of a UDP datagram.
    Packet
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// `TruncatedL4` if the header is cut short.
    pub fn check_len(&self) -> Result<(), DropReason> {
        if self.buffer.as_ref().len() < HEADER_LEN {
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
    /// Length field.
    pub fn len(&self) -> u16 {
        self.be16(field::LENGTH.start)
    }
    /// True if the length field says there is no data.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }
    /// Checksum.
    pub fn checksum(&self) -> u16 {
        self.be16(field::CHECKSUM.start)
    }
    /// Data after the header, up to the length field or the buffer end.
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = usize::from(self.len()).clamp(HEADER_LEN, b.len());
        &b[HEADER_LEN..end]
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
    /// Set the length field.
    pub fn set_len(&mut self, v: u16) {
        self.set16(field::LENGTH.start, v);
    }
    /// Set the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        self.set16(field::CHECKSUM.start, v);
    }
}
