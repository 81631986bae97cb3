//! SCTP common header (RFC 9260 §3.1). The checksum is CRC32c, stored
//! least-significant byte first (RFC 9260 Appendix A); see
//! [`super::checksum::sctp_crc`].
//!
//! Invariant: after [`Packet::check_len`] the 12-byte common header lies inside
//! the buffer.

use super::checksum;
use super::view::view;
use crate::drop::DropReason;

/// Byte ranges of the common header.
pub mod field {
    use core::ops::{Range, RangeFrom};
    /// Source port.
    pub const SRC_PORT: Range<usize> = 0..2;
    /// Destination port.
    pub const DST_PORT: Range<usize> = 2..4;
    /// Verification tag.
    pub const VTAG: Range<usize> = 4..8;
    /// CRC32c checksum.
    pub const CHECKSUM: Range<usize> = 8..12;
    /// Chunks.
    pub const CHUNKS: RangeFrom<usize> = 12..;
}

/// Common header length.
pub const HEADER_LEN: usize = 12;

view! {
    /// A read/write view of an SCTP packet.
    Packet
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// `TruncatedL4` if the common header is cut short.
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
    /// Verification tag.
    pub fn verification_tag(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VTAG];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
    /// The CRC32c as a number (decoded from its little-endian wire form).
    pub fn checksum(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::CHECKSUM];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    /// True if the CRC32c over the whole buffer verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::sctp_crc(self.buffer.as_ref()) == self.checksum()
    }
    /// The chunks.
    pub fn chunks(&self) -> &[u8] {
        &self.buffer.as_ref()[field::CHUNKS]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the source port (recompute the CRC afterwards).
    pub fn set_src_port(&mut self, v: u16) {
        self.set16(field::SRC_PORT.start, v);
    }
    /// Set the destination port (recompute the CRC afterwards).
    pub fn set_dst_port(&mut self, v: u16) {
        self.set16(field::DST_PORT.start, v);
    }
    /// Set the verification tag.
    pub fn set_verification_tag(&mut self, v: u32) {
        self.buffer.as_mut()[field::VTAG].copy_from_slice(&v.to_be_bytes());
    }
    /// Recompute the CRC32c over the whole buffer.
    pub fn fill_checksum(&mut self) {
        let c = checksum::sctp_crc(self.buffer.as_ref());
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&c.to_le_bytes());
    }
}
