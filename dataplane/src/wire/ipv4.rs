//! IPv4 headers (RFC 791 §3.1), options included.
//!
//! Invariant: after [`Packet::check_len`] the whole header (IHL words) and the
//! datagram up to its total length lie inside the buffer; trailing bytes past
//! the total length (Ethernet padding) are allowed and ignored by `payload`.

use super::checksum;
use super::view::view;
use crate::drop::DropReason;

/// Byte ranges of the fixed header.
pub mod field {
    use core::ops::Range;
    /// Version (high nibble) and IHL (low nibble, in 32-bit words).
    pub const VER_IHL: usize = 0;
    /// DSCP/ECN.
    pub const TOS: usize = 1;
    /// Total length of the datagram.
    pub const LENGTH: Range<usize> = 2..4;
    /// Identification.
    pub const IDENT: Range<usize> = 4..6;
    /// Flags (3 bits) and fragment offset (13 bits, 8-byte units).
    pub const FLG_OFF: Range<usize> = 6..8;
    /// Time to live.
    pub const TTL: usize = 8;
    /// Protocol.
    pub const PROTOCOL: usize = 9;
    /// Header checksum.
    pub const CHECKSUM: Range<usize> = 10..12;
    /// Source address.
    pub const SRC: Range<usize> = 12..16;
    /// Destination address.
    pub const DST: Range<usize> = 16..20;
}

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;
/// The first byte of a header without options: version 4, IHL 5 words.
pub const VER_IHL_NO_OPTIONS: u8 = 0x45;

/// The header length in bytes that a version/IHL byte ([`field::VER_IHL`])
/// gives (its low nibble counts 32-bit words).
#[inline(always)]
pub fn header_len(ver_ihl: u8) -> usize {
    usize::from(ver_ihl & 0x0f) * 4
}
/// Don't Fragment flag in the flags/offset word.
pub const FLAG_DF: u16 = 0x4000;
/// More Fragments flag in the flags/offset word.
pub const FLAG_MF: u16 = 0x2000;
/// Fragment offset mask (8-byte units).
pub const OFFSET_MASK: u16 = 0x1fff;

view! {
    /// A read/write view of an IPv4 packet.
    Packet
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// `TruncatedL3` if the fixed header is cut short; `BadIpv4Header` if the
    /// version is not 4 or IHL is below 5 words or past the buffer;
    /// `BadIpLength` if the total length is below IHL or past the buffer.
    pub fn check_len(&self) -> Result<(), DropReason> {
        let b = self.buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(DropReason::TruncatedL3);
        }
        if self.version() != 4 {
            return Err(DropReason::BadIpv4Header);
        }
        let ihl = self.header_len();
        if ihl < MIN_HEADER_LEN || ihl > b.len() {
            return Err(DropReason::BadIpv4Header);
        }
        let total = usize::from(self.total_len());
        if total < ihl || total > b.len() {
            return Err(DropReason::BadIpLength);
        }
        Ok(())
    }

    /// IP version (4).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }
    /// Header length in bytes (IHL × 4).
    pub fn header_len(&self) -> usize {
        header_len(self.buffer.as_ref()[field::VER_IHL])
    }
    /// DSCP/ECN byte.
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }
    /// Total length of the datagram.
    pub fn total_len(&self) -> u16 {
        self.be16(field::LENGTH.start)
    }
    /// Identification.
    pub fn ident(&self) -> u16 {
        self.be16(field::IDENT.start)
    }
    /// Don't Fragment.
    pub fn dont_frag(&self) -> bool {
        self.be16(field::FLG_OFF.start) & FLAG_DF != 0
    }
    /// More Fragments.
    pub fn more_frags(&self) -> bool {
        self.be16(field::FLG_OFF.start) & FLAG_MF != 0
    }
    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (self.be16(field::FLG_OFF.start) & OFFSET_MASK) << 3
    }
    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }
    /// Protocol number.
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }
    /// Header checksum.
    pub fn checksum(&self) -> u16 {
        self.be16(field::CHECKSUM.start)
    }
    /// Source address.
    pub fn src_addr(&self) -> [u8; 4] {
        let b = &self.buffer.as_ref()[field::SRC];
        [b[0], b[1], b[2], b[3]]
    }
    /// Destination address.
    pub fn dst_addr(&self) -> [u8; 4] {
        let b = &self.buffer.as_ref()[field::DST];
        [b[0], b[1], b[2], b[3]]
    }
    /// The options (between the fixed header and IHL).
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }
    /// True if the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum_bytes(
            &self.buffer.as_ref()[..self.header_len()],
        )) == 0xffff
    }
    /// The payload up to the total length (Ethernet padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set version 4 and the header length in bytes (a multiple of 4, 20..=60).
    pub fn set_version_and_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((len / 4) as u8 & 0x0f);
    }
    /// Set the DSCP/ECN byte.
    pub fn set_tos(&mut self, v: u8) {
        self.buffer.as_mut()[field::TOS] = v;
    }
    /// Set the total length.
    pub fn set_total_len(&mut self, v: u16) {
        self.set16(field::LENGTH.start, v);
    }
    /// Set the identification.
    pub fn set_ident(&mut self, v: u16) {
        self.set16(field::IDENT.start, v);
    }
    /// Set flags (DF, MF) and fragment offset (in bytes, a multiple of 8).
    pub fn set_frag(&mut self, df: bool, mf: bool, offset_bytes: u16) {
        let mut w = (offset_bytes >> 3) & OFFSET_MASK;
        if df {
            w |= FLAG_DF;
        }
        if mf {
            w |= FLAG_MF;
        }
        self.set16(field::FLG_OFF.start, w);
    }
    /// Set the TTL (the checksum is not updated).
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }
    /// Set the protocol.
    pub fn set_protocol(&mut self, v: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = v;
    }
    /// Set the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        self.set16(field::CHECKSUM.start, v);
    }
    /// Set the source address (the checksum is not updated).
    pub fn set_src_addr(&mut self, a: [u8; 4]) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a);
    }
    /// Set the destination address (the checksum is not updated).
    pub fn set_dst_addr(&mut self, a: [u8; 4]) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a);
    }
    /// Decrement the TTL and patch the checksum incrementally (RFC 1624 §5:
    /// the TTL shares a word with the protocol).
    pub fn decrement_ttl(&mut self) {
        let ttl = self.ttl();
        let proto = self.protocol();
        let old = u16::from_be_bytes([ttl, proto]);
        let new = u16::from_be_bytes([ttl.wrapping_sub(1), proto]);
        self.set_ttl(ttl.wrapping_sub(1));
        let c = checksum::update16(self.checksum(), old, new);
        self.set_checksum(c);
    }
    /// Recompute the header checksum.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(&self.buffer.as_ref()[..self.header_len()]);
        self.set_checksum(c);
    }
    /// The payload up to the total length, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (h, t) = (self.header_len(), usize::from(self.total_len()));
        &mut self.buffer.as_mut()[h..t]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_ihl_and_total_length() {
        let mut b = [0u8; 28];
        b[0] = 0x45;
        b[2..4].copy_from_slice(&28u16.to_be_bytes());
        assert!(Packet::new_checked(&b[..]).is_ok());
        b[0] = 0x44;
        assert_eq!(
            Packet::new_checked(&b[..]).err(),
            Some(DropReason::BadIpv4Header)
        );
        b[0] = 0x48; // 32-byte header, longer than the 28-byte total length
        assert_eq!(
            Packet::new_checked(&b[..]).err(),
            Some(DropReason::BadIpv4Header)
        );
        b[0] = 0x46;
        assert_eq!(
            Packet::new_checked(&b[..])
                .expect("24-byte header")
                .options()
                .len(),
            4
        );
        b[0] = 0x45;
        b[2..4].copy_from_slice(&29u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&b[..]).err(),
            Some(DropReason::BadIpLength)
        );
        b[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&b[..]).err(),
            Some(DropReason::BadIpLength)
        );
        assert_eq!(
            Packet::new_checked(&b[..19]).err(),
            Some(DropReason::TruncatedL3)
        );
    }

    #[test]
    fn ttl_decrement_keeps_the_checksum_valid() {
        let mut b = [0u8; 20];
        b[0] = 0x45;
        b[2..4].copy_from_slice(&20u16.to_be_bytes());
        b[8] = 64;
        b[9] = 6;
        let mut p = Packet::new_checked(&mut b[..]).expect("valid");
        p.fill_checksum();
        assert!(p.verify_checksum());
        p.decrement_ttl();
        assert_eq!(p.ttl(), 63);
        assert!(p.verify_checksum());
    }
}
