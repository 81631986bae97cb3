//! The one numbered list of reasons a packet is dropped. The numbers are
//! stable: they appear in metrics (`reason` label). The XDP program
//! (`bpf/xlb.bpf.c`) drops nothing itself — it steers what xlb owns to
//! user space and passes the rest — so every drop is counted here.

/// Why a frame was dropped. `repr(u8)`; values never change once released.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Frame shorter than an Ethernet header, or empty.
    TruncatedEthernet = 1,
    /// VLAN tag or L3 header cut short.
    TruncatedL3 = 2,
    /// IPv4 header length field below 5 words or past the frame.
    BadIpv4Header = 3,
    /// IP total/payload length disagrees with the frame.
    BadIpLength = 4,
    /// IPv6 extension header chain malformed or too long to walk.
    BadIpv6ExtHeader = 5,
    /// L4 header cut short or its length fields are inconsistent.
    TruncatedL4 = 6,
    /// A later fragment (not the first) of a datagram to a VIP or a
    /// source-NAT address whose first fragment this worker did not forward
    /// in the last 5 s ([`crate::frags`]; xlb does not reassemble).
    Fragment = 7,
    /// Packet to a VIP whose rule has no endpoint that can take new flows.
    NoEndpoint = 8,
    /// Source address not in the rule's `allowedSources`.
    SourceNotAllowed = 9,
    /// No next-hop MAC address known for the chosen backend.
    NoNeighbor = 10,
    /// Connection table full and nothing could be evicted.
    ConntrackFull = 11,
    /// Source-NAT port pool exhausted.
    NatPortsExhausted = 12,
    /// TCP packet to a VIP that is neither a SYN nor part of a tracked flow.
    TcpNotSyn = 13,
    /// IP TTL / hop limit would reach zero.
    TtlExceeded = 14,
    /// Frame would exceed the buffer after encapsulation.
    NoRoom = 15,
    /// VIP matched but the port/protocol did not (no rule for this service).
    NoService = 16,
    /// ICMP error that refers to no tracked flow.
    IcmpUntracked = 17,
    /// Reserved, never counted: a design that handed packets to the worker
    /// owning their flow would count full hand-off rings here, but workers
    /// read each other's flows in place instead. Kept so that the numbers
    /// after it, which metrics and dashboards see, do not move.
    HandoffFull = 18,
    /// An ICMP type xlb does not forward to a VIP (only echo and errors are handled).
    IcmpUnsupported = 19,
    /// Traffic to a source-NAT address, or from a backend, that matches no tracked flow.
    UntrackedReply = 20,
    /// An endpoint's next hop port is not one the balancer owns.
    NoPort = 21,
}

impl DropReason {
    /// Every reason, in numeric order.
    pub const ALL: [DropReason; 21] = [
        DropReason::TruncatedEthernet,
        DropReason::TruncatedL3,
        DropReason::BadIpv4Header,
        DropReason::BadIpLength,
        DropReason::BadIpv6ExtHeader,
        DropReason::TruncatedL4,
        DropReason::Fragment,
        DropReason::NoEndpoint,
        DropReason::SourceNotAllowed,
        DropReason::NoNeighbor,
        DropReason::ConntrackFull,
        DropReason::NatPortsExhausted,
        DropReason::TcpNotSyn,
        DropReason::TtlExceeded,
        DropReason::NoRoom,
        DropReason::NoService,
        DropReason::IcmpUntracked,
        DropReason::HandoffFull,
        DropReason::IcmpUnsupported,
        DropReason::UntrackedReply,
        DropReason::NoPort,
    ];
    /// Size of a counter array indexed by `reason as usize`.
    pub const SLOTS: usize = 22;

    /// Stable snake_case name, used as the `reason` label in metrics.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::TruncatedEthernet => "truncated_ethernet",
            DropReason::TruncatedL3 => "truncated_l3",
            DropReason::BadIpv4Header => "bad_ipv4_header",
            DropReason::BadIpLength => "bad_ip_length",
            DropReason::BadIpv6ExtHeader => "bad_ipv6_ext_header",
            DropReason::TruncatedL4 => "truncated_l4",
            DropReason::Fragment => "fragment",
            DropReason::NoEndpoint => "no_endpoint",
            DropReason::SourceNotAllowed => "source_not_allowed",
            DropReason::NoNeighbor => "no_neighbor",
            DropReason::ConntrackFull => "conntrack_full",
            DropReason::NatPortsExhausted => "nat_ports_exhausted",
            DropReason::TcpNotSyn => "tcp_not_syn",
            DropReason::TtlExceeded => "ttl_exceeded",
            DropReason::NoRoom => "no_room",
            DropReason::NoService => "no_service",
            DropReason::IcmpUntracked => "icmp_untracked",
            DropReason::HandoffFull => "handoff_full",
            DropReason::IcmpUnsupported => "icmp_unsupported",
            DropReason::UntrackedReply => "untracked_reply",
            DropReason::NoPort => "no_port",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_dense_unique_and_fit_the_counter_array() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i + 1, "{r:?} out of order");
            assert!((*r as usize) < DropReason::SLOTS);
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
    }
}
