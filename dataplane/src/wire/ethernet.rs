//! Ethernet II frames (IEEE 802.3 §3.2.6) with up to two VLAN tags (IEEE 802.1Q
//! C-tag 0x8100, 802.1ad S-tag 0x88A8).
//!
//! Invariant: after [`Frame::check_len`] succeeds, the fixed header and every
//! VLAN tag the accessors walk (at most [`MAX_VLAN_TAGS`]) lie inside the buffer.

use crate::drop::DropReason;
use crate::net::MacAddr;

/// Byte ranges of the untagged header.
pub mod field {
    use core::ops::{Range, RangeFrom};
    /// Destination MAC.
    pub const DST: Range<usize> = 0..6;
    /// Source MAC.
    pub const SRC: Range<usize> = 6..12;
    /// EtherType, or a VLAN TPID when tagged.
    pub const ETHERTYPE: Range<usize> = 12..14;
    /// First byte after the untagged header.
    pub const PAYLOAD: RangeFrom<usize> = 14..;
}

/// Byte ranges of a VLAN tag (IEEE 802.1Q), from the tag's start; its TPID
/// sits where an untagged frame has its EtherType.
pub mod vlan_field {
    use core::ops::Range;
    /// Priority (3 bits), drop eligible (1) and VLAN id (12).
    pub const TCI: Range<usize> = 0..2;
    /// The EtherType of what follows (or the next tag's TPID).
    pub const ETHERTYPE: Range<usize> = 2..4;
}

/// The VLAN id bits of a tag's TCI.
pub const VID_MASK: u16 = 0x0fff;

/// EtherType values xlb cares about.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP (RFC 826).
    pub const ARP: u16 = 0x0806;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// IEEE 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// IEEE 802.1ad service VLAN tag (QinQ outer tag).
    pub const QINQ: u16 = 0x88a8;
    /// LLDP (IEEE 802.1AB).
    pub const LLDP: u16 = 0x88cc;
}

/// Length of the untagged header.
pub const HEADER_LEN: usize = 14;
/// Length of one VLAN tag (TPID + TCI).
pub const VLAN_TAG_LEN: usize = 4;
/// Most VLAN tags walked; a third tag leaves its TPID as the final EtherType.
pub const MAX_VLAN_TAGS: usize = 2;

/// True for the TPIDs that introduce a VLAN tag.
#[inline]
pub fn is_vlan_tpid(t: u16) -> bool {
    t == ethertype::VLAN || t == ethertype::QINQ
}

/// A read/write view of an Ethernet II frame.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wrap without checking; accessors may panic until [`Frame::check_len`] passes.
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// Wrap and check the length ([`Frame::check_len`]).
    pub fn new_checked(buffer: T) -> Result<Frame<T>, DropReason> {
        let f = Frame::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// `TruncatedEthernet` if the untagged header is cut short, `TruncatedL3` if a
    /// VLAN tag is.
    pub fn check_len(&self) -> Result<(), DropReason> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(DropReason::TruncatedEthernet);
        }
        if b.len() < self.header_len_unchecked() {
            return Err(DropReason::TruncatedL3);
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn be16(&self, at: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    /// Header length implied by the TPIDs present (reads only what exists).
    fn header_len_unchecked(&self) -> usize {
        let b = self.buffer.as_ref();
        let mut off = field::ETHERTYPE.start;
        let mut n = 0;
        while n < MAX_VLAN_TAGS {
            match b.get(off..off + 2) {
                Some(t) if is_vlan_tpid(u16::from_be_bytes([t[0], t[1]])) => {
                    off += VLAN_TAG_LEN;
                    n += 1;
                }
                _ => break,
            }
        }
        off + 2
    }

    /// Destination MAC.
    pub fn dst_addr(&self) -> MacAddr {
        let b = self.buffer.as_ref();
        let mut m = [0u8; 6];
        m.copy_from_slice(&b[field::DST]);
        MacAddr(m)
    }

    /// Source MAC.
    pub fn src_addr(&self) -> MacAddr {
        let b = self.buffer.as_ref();
        let mut m = [0u8; 6];
        m.copy_from_slice(&b[field::SRC]);
        MacAddr(m)
    }

    /// Number of VLAN tags (0..=2).
    pub fn vlan_count(&self) -> usize {
        (self.header_len() - HEADER_LEN) / VLAN_TAG_LEN
    }

    /// The 12-bit VLAN id of tag `i` (0 = outer), if present.
    pub fn vlan_id(&self, i: usize) -> Option<u16> {
        if i >= self.vlan_count() {
            return None;
        }
        Some(self.be16(field::ETHERTYPE.start + VLAN_TAG_LEN * i + 2) & 0x0fff)
    }

    /// The EtherType after all walked VLAN tags.
    pub fn ethertype(&self) -> u16 {
        self.be16(self.header_len() - 2)
    }

    /// Length of the header including VLAN tags: the offset of the L3 header.
    pub fn header_len(&self) -> usize {
        self.header_len_unchecked()
    }

    /// The bytes after the header.
    pub fn payload(&self) -> &[u8] {
        let h = self.header_len();
        &self.buffer.as_ref()[h..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Set the destination MAC.
    pub fn set_dst_addr(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&m.0);
    }

    /// Set the source MAC.
    pub fn set_src_addr(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&m.0);
    }

    /// Set the EtherType after the VLAN tags.
    pub fn set_ethertype(&mut self, t: u16) {
        let at = self.header_len() - 2;
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&t.to_be_bytes());
    }

    /// Set the VLAN id of tag `i`, keeping its priority bits. Returns false if
    /// there is no such tag.
    pub fn set_vlan_id(&mut self, i: usize, id: u16) -> bool {
        if i >= self.vlan_count() {
            return false;
        }
        let at = field::ETHERTYPE.start + VLAN_TAG_LEN * i + 2;
        let tci = (self.be16(at) & 0xf000) | (id & 0x0fff);
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&tci.to_be_bytes());
        true
    }

    /// The bytes after the header, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let h = self.header_len();
        &mut self.buffer.as_mut()[h..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_two_tags_and_stops_at_the_third() {
        let mut f = [0u8; 14 + 12 + 2];
        f[12..14].copy_from_slice(&0x88a8u16.to_be_bytes());
        f[14..16].copy_from_slice(&0x0064u16.to_be_bytes());
        f[16..18].copy_from_slice(&0x8100u16.to_be_bytes());
        f[18..20].copy_from_slice(&0x00c8u16.to_be_bytes());
        f[20..22].copy_from_slice(&0x8100u16.to_be_bytes());
        let e = Frame::new_checked(&f[..]).expect("valid");
        assert_eq!(e.vlan_count(), 2);
        assert_eq!(e.vlan_id(0), Some(100));
        assert_eq!(e.vlan_id(1), Some(200));
        assert_eq!(e.ethertype(), 0x8100);
        assert_eq!(e.header_len(), 22);
        for n in 0..22 {
            assert!(Frame::new_checked(&f[..n]).is_err(), "{n}");
        }
        assert_eq!(
            Frame::new_checked(&f[..16]).err(),
            Some(DropReason::TruncatedL3)
        );
    }
}
