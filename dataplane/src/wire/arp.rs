//! ARP for IPv4 over Ethernet (RFC 826): the packet's layout, for the
//! requests [`super::build::arp_request`] makes (the pipeline hands ARP to
//! the kernel, which answers for the addresses xlb puts on `lo`).

/// Byte ranges of an Ethernet/IPv4 ARP packet.
pub mod field {
    use core::ops::Range;
    /// Hardware type (1 = Ethernet).
    pub const HTYPE: Range<usize> = 0..2;
    /// Protocol type (0x0800 = IPv4).
    pub const PTYPE: Range<usize> = 2..4;
    /// Hardware address length (6).
    pub const HLEN: usize = 4;
    /// Protocol address length (4).
    pub const PLEN: usize = 5;
    /// Operation (1 request, 2 reply).
    pub const OPER: Range<usize> = 6..8;
    /// Sender hardware address.
    pub const SHA: Range<usize> = 8..14;
    /// Sender protocol address.
    pub const SPA: Range<usize> = 14..18;
    /// Target hardware address.
    pub const THA: Range<usize> = 18..24;
    /// Target protocol address.
    pub const TPA: Range<usize> = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;
/// Hardware type: Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;
/// Operation: request.
pub const OP_REQUEST: u16 = 1;
