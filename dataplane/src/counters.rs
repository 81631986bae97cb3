//! Per-worker counters: written by exactly one worker, read by control.
//!
//! Each worker owns one [`CounterBlock`] behind an `Arc`; only that worker
//! writes it, so an increment is a relaxed load and store (no locked
//! read-modify-write, no shared cache line between workers). Control reads
//! with relaxed loads and sums across workers; a value may be one batch old.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::drop::DropReason;
use crate::pipeline::FastPathExit;
use crate::sync::AdoptFailure;
use crate::tables::{EndpointId, MAX_ENDPOINT_IDS};

/// Add `n` to a single-writer counter.
#[inline(always)]
pub fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// One worker's counters.
#[derive(Debug)]
pub struct CounterBlock {
    /// Frames received.
    pub rx_packets: AtomicU64,
    /// Bytes received.
    pub rx_bytes: AtomicU64,
    /// Frames transmitted (verdict Tx).
    pub tx_packets: AtomicU64,
    /// Bytes transmitted.
    pub tx_bytes: AtomicU64,
    /// Frames passed to the kernel.
    pub passed: AtomicU64,
    /// Drops by [`DropReason`] (index = reason number).
    pub drops: [AtomicU64; DropReason::SLOTS],
    /// Flows created (forward entries inserted).
    pub flows_created: AtomicU64,
    /// Flows removed (expired, evicted, or their endpoint went away).
    pub flows_removed: AtomicU64,
    /// Flows evicted early because their bucket was full.
    pub flows_evicted: AtomicU64,
    /// ICMP echo requests to a VIP answered by xlb itself.
    pub icmp_echo_replies: AtomicU64,
    /// New flows the new-flow path left to the general path, by
    /// [`FastPathExit`] (index = reason number).
    pub fast_path_exits: [AtomicU64; FastPathExit::SLOTS],
    /// Flows another member sent ([`crate::sync`]) that this worker
    /// installed in its shard (each worker installs its own copy). Not
    /// counted in `flows_created`; counted in `flows_removed` when they go.
    pub sync_adopted: AtomicU64,
    /// Flows another member sent again that this worker already held
    /// (replaced by what was sent, its idle time restarted).
    pub sync_refreshed: AtomicU64,
    /// Flows removed because another member said they ended.
    pub sync_closed: AtomicU64,
    /// Flows another member sent that this worker could not install, by
    /// [`AdoptFailure`] (index = reason number).
    pub sync_adopt_failures: [AtomicU64; AdoptFailure::SLOTS],
    /// Per endpoint id: packets and bytes forwarded to that endpoint (both
    /// directions), and flows opened to it (a rule's new flows are its
    /// endpoints'; ids are stable while the endpoint stays in its rule).
    endpoint: Box<[[AtomicU64; 3]]>,
}

impl CounterBlock {
    /// All zero.
    pub fn new() -> CounterBlock {
        CounterBlock {
            rx_packets: AtomicU64::new(0),
            rx_bytes: AtomicU64::new(0),
            tx_packets: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
            passed: AtomicU64::new(0),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
            flows_created: AtomicU64::new(0),
            flows_removed: AtomicU64::new(0),
            flows_evicted: AtomicU64::new(0),
            icmp_echo_replies: AtomicU64::new(0),
            fast_path_exits: std::array::from_fn(|_| AtomicU64::new(0)),
            sync_adopted: AtomicU64::new(0),
            sync_refreshed: AtomicU64::new(0),
            sync_closed: AtomicU64::new(0),
            sync_adopt_failures: std::array::from_fn(|_| AtomicU64::new(0)),
            endpoint: (0..MAX_ENDPOINT_IDS)
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
        }
    }

    /// Count a drop.
    #[inline(always)]
    pub fn count_drop(&self, r: DropReason) {
        bump(&self.drops[r as usize], 1);
    }

    /// Drops counted under `r`.
    pub fn drops(&self, r: DropReason) -> u64 {
        self.drops[r as usize].load(Relaxed)
    }

    /// Count a new flow that left the new-flow path for `why`.
    #[inline]
    pub fn count_fast_path_exit(&self, why: FastPathExit) {
        bump(&self.fast_path_exits[why as usize], 1);
    }

    /// New flows counted under `why`.
    pub fn fast_path_exit(&self, why: FastPathExit) -> u64 {
        self.fast_path_exits[why as usize].load(Relaxed)
    }

    /// Count a flow another member sent that could not be installed.
    #[inline]
    pub fn count_sync_adopt_failure(&self, why: AdoptFailure) {
        bump(&self.sync_adopt_failures[why as usize], 1);
    }

    /// Flows another member sent that were not installed for `why`.
    pub fn sync_adopt_failure(&self, why: AdoptFailure) -> u64 {
        self.sync_adopt_failures[why as usize].load(Relaxed)
    }

    /// Count a packet of `bytes` for endpoint `id`.
    #[inline(always)]
    pub fn endpoint_packet(&self, id: EndpointId, bytes: u64) {
        if let Some([p, b, _]) = self.endpoint.get(id as usize) {
            bump(p, 1);
            bump(b, bytes);
        }
    }

    /// Count a new flow to endpoint `id` (with its first packet, which
    /// [`CounterBlock::endpoint_packet`] counts).
    #[inline(always)]
    pub fn endpoint_flow(&self, id: EndpointId) {
        if let Some([_, _, f]) = self.endpoint.get(id as usize) {
            bump(f, 1);
        }
    }

    /// (packets, bytes) counted for endpoint `id` by this worker.
    pub fn endpoint(&self, id: EndpointId) -> (u64, u64) {
        match self.endpoint.get(id as usize) {
            Some([p, b, _]) => (p.load(Relaxed), b.load(Relaxed)),
            None => (0, 0),
        }
    }

    /// Flows this worker opened to endpoint `id`.
    pub fn endpoint_flows(&self, id: EndpointId) -> u64 {
        self.endpoint
            .get(id as usize)
            .map_or(0, |[_, _, f]| f.load(Relaxed))
    }

    /// Total drops over every reason.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().map(|c| c.load(Relaxed)).sum()
    }
}

impl Default for CounterBlock {
    fn default() -> Self {
        CounterBlock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_counters_are_per_id_and_out_of_range_ids_are_ignored() {
        let c = CounterBlock::new();
        c.endpoint_packet(3, 100);
        c.endpoint_packet(3, 50);
        c.endpoint_packet(MAX_ENDPOINT_IDS as u32, 1);
        assert_eq!(c.endpoint(3), (2, 150));
        assert_eq!(c.endpoint(4), (0, 0));
        assert_eq!(c.endpoint(MAX_ENDPOINT_IDS as u32), (0, 0));
        c.endpoint_flow(3);
        c.endpoint_flow(MAX_ENDPOINT_IDS as u32);
        assert_eq!(c.endpoint_flows(3), 1);
        assert_eq!(c.endpoint_flows(4), 0);
        assert_eq!(c.endpoint(3), (2, 150), "a flow is not a packet");
        c.count_drop(DropReason::NoEndpoint);
        assert_eq!(c.drops(DropReason::NoEndpoint), 1);
        assert_eq!(c.total_drops(), 1);
    }
}
