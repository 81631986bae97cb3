//! Ethernet II frames (IEEE 802.3 §3.2.6) with up to two VLAN tags (IEEE 802.1Q
//! C-tag 0x8100, 802.1ad S-tag 0x88A8): the header's layout and the
//! EtherTypes xlb knows. [`super::parse`] walks the tags (at most
//! [`MAX_VLAN_TAGS`]); nothing here reads past a slice.

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

/// The source MAC of `frame` (zero if the frame is shorter than a header).
#[inline]
pub fn src_mac(frame: &[u8]) -> MacAddr {
    let mut m = [0u8; 6];
    if let Some(s) = frame.get(field::SRC) {
        m.copy_from_slice(s);
    }
    MacAddr(m)
}

/// True for the TPIDs that introduce a VLAN tag.
#[inline]
pub fn is_vlan_tpid(t: u16) -> bool {
    t == ethertype::VLAN || t == ethertype::QINQ
}
