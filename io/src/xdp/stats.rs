//! The steering program's per-action counters: the numbering of its per-CPU
//! `stats` array (`enum xlb_stat` in `bpf/xlb_consts.h`, mirrored by
//! [`Stat`]) and their sums over CPUs ([`XdpStats`]).

/// Number of slots in the program's `stats` array (`XLB_STAT_MAX`).
pub const STAT_SLOTS: usize = 8;

/// The program's per-action counters (`enum xlb_stat` in `xlb_consts.h`).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// Not ours: handed to the kernel stack.
    Pass = 0,
    /// To a configured VIP/proto/port (or ICMP to a VIP).
    RedirectVip = 1,
    /// Return traffic to a source-NAT address in the NAT port range.
    RedirectSnat = 2,
    /// Return traffic from a DNAT backend.
    RedirectBackend = 3,
    /// Fragment / unparsed IPv6 chain to a VIP address.
    RedirectUnparsed = 4,
    /// Ours (also counted by class), but no AF_XDP socket on the rx queue:
    /// passed to the kernel.
    NoSocket = 5,
    /// Headers cut short: passed to the kernel.
    Malformed = 6,
}

impl Stat {
    /// Every counter, in slot order.
    pub const ALL: [Stat; 7] = [
        Stat::Pass,
        Stat::RedirectVip,
        Stat::RedirectSnat,
        Stat::RedirectBackend,
        Stat::RedirectUnparsed,
        Stat::NoSocket,
        Stat::Malformed,
    ];
}

/// Per-action counters of one interface's program, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpStats {
    /// Indexed by [`Stat`] as usize.
    pub counts: [u64; STAT_SLOTS],
}

impl XdpStats {
    /// One counter.
    pub fn get(&self, s: Stat) -> u64 {
        self.counts[s as usize]
    }
}
