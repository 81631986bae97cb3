//! What control needs from the world around it, behind two small traits, so the
//! API runs (and is tested) without a NIC, and the real implementations plug in.
//!
//! - [`DataplaneView`]: read-only statistics from the running workers
//!   (per-endpoint counters, the connection tables, per-worker counters).
//! - [`NetEnv`]: the host's interfaces and neighbours, which control needs to
//!   build a complete [`xlb_dataplane::tables::TablesSpec`].
//!
//! Both are called from the API's async tasks with the control lock held, so
//! implementations must answer quickly and never block on the workers.

use std::net::IpAddr;
use std::sync::Mutex;

use xlb_dataplane::pipeline::FastPathExit;
use xlb_dataplane::tables::{EndpointId, L4Proto, NextHop, PortSpec};
use xlb_dataplane::DropReason;

/// One tracked connection, as `GET /config/conntrack/all` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtEntry {
    /// Client address.
    pub src: IpAddr,
    /// Client port (0 for ICMP).
    pub src_port: u16,
    /// Destination as the client sent it (the VIP).
    pub dst: IpAddr,
    /// Destination port.
    pub dst_port: u16,
    /// Protocol.
    pub proto: L4Proto,
    /// Connection state, e.g. "est", "syn-sent", "closed".
    pub state: String,
    /// What is done to it, e.g. "fdnat-10.0.0.5:8080".
    pub action: String,
    /// Packets in both directions.
    pub packets: u64,
    /// Bytes in both directions.
    pub bytes: u64,
    /// Rule name (or "" if the rule has none).
    pub service: String,
}

/// Counters of one worker (one queue).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkerStats {
    /// Worker index.
    pub worker: u32,
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames transmitted.
    pub tx_packets: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Drops per reason (reasons with zero drops may be left out).
    pub drops: Vec<(DropReason, u64)>,
    /// Connections tracked now.
    pub ct_entries: u64,
    /// Connection-table capacity.
    pub ct_capacity: u64,
    /// Frames lost in packet I/O (not by the pipeline), by cause: the
    /// worker's (`tx_ring_full`, `bad_port`) and the kernel's AF_XDP socket
    /// counters (`kernel_rx_ring_full`, `kernel_fill_ring_empty`,
    /// `kernel_rx_dropped`, `kernel_tx_invalid`).
    pub io_drops: Vec<(&'static str, u64)>,
    /// Frames that waited for room on a full TX ring (sent later, not lost).
    pub tx_deferred: u64,
    /// Flows evicted before their time because their bucket was full.
    pub flows_evicted: u64,
    /// New flows the dedicated new-flow path left to the general path, by
    /// reason (reasons with none may be left out).
    pub fast_path_exits: Vec<(FastPathExit, u64)>,
}

/// Read-only statistics from the dataplane workers.
pub trait DataplaneView: Send + Sync {
    /// (packets, bytes) sent to this endpoint, summed over workers, since the id
    /// was assigned; (0, 0) for unknown ids.
    fn endpoint_counters(&self, id: EndpointId) -> (u64, u64);
    /// A snapshot of the connection tables (may be truncated by the implementation).
    fn conntrack(&self) -> Vec<CtEntry>;
    /// Per-worker counters.
    fn worker_stats(&self) -> Vec<WorkerStats>;
}

/// The host's network as the tables need it.
pub trait NetEnv: Send + Sync {
    /// The balancer's ports (interfaces) and their own addresses.
    fn ports(&self) -> Vec<PortSpec>;
    /// The next hop for each of `addrs` that is reachable; unknown ones are left out.
    fn next_hops(&self, addrs: &[IpAddr]) -> Vec<(IpAddr, NextHop)>;
}

/// A dataplane that is not running (`xlb run --no-dataplane`) or a test fake:
/// it reports what was put in it.
#[derive(Debug, Default)]
pub struct StaticView {
    inner: Mutex<StaticViewData>,
}

#[derive(Debug, Default)]
struct StaticViewData {
    counters: Vec<(EndpointId, u64, u64)>,
    conntrack: Vec<CtEntry>,
    workers: Vec<WorkerStats>,
}

impl StaticView {
    /// An empty view.
    pub fn new() -> StaticView {
        StaticView::default()
    }

    fn data(&self) -> std::sync::MutexGuard<'_, StaticViewData> {
        // A poisoned lock only means a panicking test; the data is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Set an endpoint's counters.
    pub fn set_counters(&self, id: EndpointId, packets: u64, bytes: u64) {
        let mut d = self.data();
        d.counters.retain(|c| c.0 != id);
        d.counters.push((id, packets, bytes));
    }

    /// Set the connection table.
    pub fn set_conntrack(&self, entries: Vec<CtEntry>) {
        self.data().conntrack = entries;
    }

    /// Set the worker counters.
    pub fn set_workers(&self, workers: Vec<WorkerStats>) {
        self.data().workers = workers;
    }
}

impl DataplaneView for StaticView {
    fn endpoint_counters(&self, id: EndpointId) -> (u64, u64) {
        self.data()
            .counters
            .iter()
            .find(|c| c.0 == id)
            .map_or((0, 0), |c| (c.1, c.2))
    }
    fn conntrack(&self) -> Vec<CtEntry> {
        self.data().conntrack.clone()
    }
    fn worker_stats(&self) -> Vec<WorkerStats> {
        self.data().workers.clone()
    }
}

/// A fixed network: the given ports and next hops (empty by default).
#[derive(Debug, Default, Clone)]
pub struct StaticNet {
    /// Ports.
    pub ports: Vec<PortSpec>,
    /// Next hops.
    pub hops: Vec<(IpAddr, NextHop)>,
}

impl NetEnv for StaticNet {
    fn ports(&self) -> Vec<PortSpec> {
        self.ports.clone()
    }
    fn next_hops(&self, addrs: &[IpAddr]) -> Vec<(IpAddr, NextHop)> {
        self.hops
            .iter()
            .filter(|(a, _)| addrs.contains(a))
            .copied()
            .collect()
    }
}
