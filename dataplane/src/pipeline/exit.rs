//! Why the first packet of a new flow left the new-flow path for the
//! general path: one reason per case, counted per worker
//! ([`crate::counters::CounterBlock::fast_path_exit`]) and exported by
//! control as `xlb_worker_new_flow_fallbacks_total{reason}`.
//!
//! A fallback is not an error: the general path handles every case, at a
//! few hundred instructions more per flow. The counts say which rules and
//! conditions keep new flows off the dedicated path. Only frames that open
//! a flow (an IPv4 TCP SYN or a UDP datagram, on a key the table does not
//! hold) count; every one either takes the new-flow path or one of these.

/// Why a new flow took the general path. `repr(u8)`; the numbers index
/// the counters and do not change once released.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FastPathExit {
    /// The new-flow path is switched off
    /// ([`super::Pipeline::set_new_flow_path`]).
    Disabled = 0,
    /// No rule for the packet's VIP, protocol and port (the general path
    /// drops or passes it).
    NoRule = 1,
    /// The rule chooses by round robin, priority or least connections,
    /// which count per worker in order: the general path chooses.
    Selection = 2,
    /// No endpoint of the rule takes new flows.
    NoEndpoint = 3,
    /// The rule has `allowedSources`.
    SourceFilter = 4,
    /// The rule is DSR.
    Dsr = 5,
    /// No next hop, or no port of the balancer's, towards the backend.
    NoNextHop = 6,
    /// No source-NAT address or port for the flow (one-arm and full NAT).
    NoNatPort = 7,
    /// TTL 1 or 0: the general path drops it.
    Ttl = 8,
    /// A key of the flow meets a tag already in its buckets (the first
    /// source-NAT candidate is taken, an old entry is to be overwritten,
    /// or another key shares the tag), or the reply key equals the forward
    /// key: the general path searches on or overwrites.
    Collision = 9,
    /// No free way in the key's buckets (for either entry): the general
    /// path moves entries or evicts.
    TableFull = 10,
    /// A case the path does not handle and the tables never produce for an
    /// IPv4 flow today (an IPv6 backend or source-NAT address).
    Unsupported = 11,
}

impl FastPathExit {
    /// Every reason, in numeric order.
    pub const ALL: [FastPathExit; 12] = [
        FastPathExit::Disabled,
        FastPathExit::NoRule,
        FastPathExit::Selection,
        FastPathExit::NoEndpoint,
        FastPathExit::SourceFilter,
        FastPathExit::Dsr,
        FastPathExit::NoNextHop,
        FastPathExit::NoNatPort,
        FastPathExit::Ttl,
        FastPathExit::Collision,
        FastPathExit::TableFull,
        FastPathExit::Unsupported,
    ];
    /// Size of a counter array indexed by `reason as usize`.
    pub const SLOTS: usize = 12;

    /// Stable snake_case name, the `reason` label in metrics.
    pub fn name(self) -> &'static str {
        match self {
            FastPathExit::Disabled => "disabled",
            FastPathExit::NoRule => "no_rule",
            FastPathExit::Selection => "selection",
            FastPathExit::NoEndpoint => "no_endpoint",
            FastPathExit::SourceFilter => "source_filter",
            FastPathExit::Dsr => "dsr",
            FastPathExit::NoNextHop => "no_next_hop",
            FastPathExit::NoNatPort => "no_nat_port",
            FastPathExit::Ttl => "ttl",
            FastPathExit::Collision => "collision",
            FastPathExit::TableFull => "table_full",
            FastPathExit::Unsupported => "unsupported",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_dense_unique_and_fit_the_counter_array() {
        for (i, r) in FastPathExit::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?} out of order");
            assert!((*r as usize) < FastPathExit::SLOTS);
        }
        let mut names: Vec<_> = FastPathExit::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FastPathExit::ALL.len());
    }
}
