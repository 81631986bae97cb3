//! The dataplane when none runs (`xlb run --no-dataplane`) and in tests:
//! snapshots go to a tables handle nothing else reads, statistics and the
//! network are whatever was put in.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use xlb_dataplane::tables::{EndpointId, NextHop, PortSpec, Tables, TablesHandle};

use super::{CtEntry, DataplaneView, NetEnv, Publisher, WorkerStats};

/// Publishes to a [`TablesHandle`] and nothing else: no workers, no XDP
/// maps, no host addresses. Tests read the handle to see what was published.
#[derive(Debug, Default, Clone)]
pub struct Unattached {
    /// The handle snapshots are published to.
    pub handle: TablesHandle,
}

impl Unattached {
    /// Publish to `handle`.
    pub fn new(handle: TablesHandle) -> Unattached {
        Unattached { handle }
    }
}

impl Publisher for Unattached {
    fn current(&self) -> Arc<Tables> {
        self.handle.current()
    }
    fn publish(&self, tables: Tables) {
        self.handle.publish(tables);
    }
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
