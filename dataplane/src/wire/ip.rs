//! What IPv4 and IPv6 share: the protocol numbers xlb knows (IANA's
//! "Assigned Internet Protocol Numbers", the IPv4 protocol field and the
//! IPv6 next header alike) and where a packet sits in a fragmented
//! datagram. The one place either is written down in Rust; the XDP
//! program's copies (`bpf/xlb_consts.h`) are checked against these
//! by a test (`dataplane/tests/c_consts.rs`).

/// IP protocol numbers. (IPv6 extension headers are in
/// [`super::ipv6::next_header`].)
pub mod proto {
    /// ICMP for IPv4 (RFC 792).
    pub const ICMP: u8 = 1;
    /// IPv4 in IPv4 (RFC 2003): DSR over IPIP.
    pub const IPIP: u8 = 4;
    /// TCP (RFC 9293).
    pub const TCP: u8 = 6;
    /// UDP (RFC 768).
    pub const UDP: u8 = 17;
    /// ICMPv6 (RFC 4443).
    pub const ICMPV6: u8 = 58;
    /// SCTP (RFC 9260).
    pub const SCTP: u8 = 132;

    /// ICMP of either family (rules for it have no port; its echo
    /// identifier plays the ports of a flow).
    #[inline]
    pub fn is_icmp(p: u8) -> bool {
        p == ICMP || p == ICMPV6
    }
}

/// Where a packet sits in a fragmented datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Frag {
    /// Not fragmented (IPv6 atomic fragments included, RFC 6946).
    #[default]
    None,
    /// Offset 0 with more fragments: carries the L4 header.
    First,
    /// Offset ≠ 0: no L4 header.
    Later,
}
