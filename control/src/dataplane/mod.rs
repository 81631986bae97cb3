//! The dataplane as control sees it: what the controller publishes to, what
//! the API reads statistics from, and the host network the tables are built
//! for — each behind a small trait, so control runs (and is tested) without
//! a NIC and the AF_XDP implementation plugs in.
//!
//! - [`Publisher`]: takes each new table snapshot and makes it live — the
//!   workers' tables, and everything that follows them (the XDP steering
//!   maps, the addresses the host answers ARP/NDP for) — in one call.
//! - [`DataplaneView`]: read-only statistics from the running workers
//!   (per-endpoint counters, the connection tables, per-worker counters).
//! - [`NetEnv`]: the host's interfaces and neighbours, which control needs to
//!   build a complete [`xlb_dataplane::tables::TablesSpec`].
//!
//! [`afxdp`] implements all three over the AF_XDP runtime (`xlb run`);
//! [`fixed`] holds the ones for `--no-dataplane` and tests.
//!
//! The controller calls [`Publisher`] and [`NetEnv`] from its own thread;
//! [`DataplaneView`] is read by the API's tasks directly. None of them may
//! wait on the workers.

pub mod afxdp;
pub mod fixed;
mod host;
pub mod ledger;
mod net;

pub use fixed::{StaticNet, StaticView, Unattached};
pub use net::KernelNet;

use std::net::IpAddr;
use std::sync::Arc;

use xlb_dataplane::pipeline::FastPathExit;
use xlb_dataplane::tables::{EndpointId, L4Proto, NextHop, PortSpec, Tables};
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
    /// New flows opened to endpoint `id`, summed over workers (0 where
    /// the implementation does not count them).
    fn endpoint_new_flows(&self, id: EndpointId) -> u64 {
        let _ = id;
        0
    }
    /// A snapshot of the connection tables (may be truncated by the implementation).
    fn conntrack(&self) -> Vec<CtEntry>;
    /// Per-worker counters.
    fn worker_stats(&self) -> Vec<WorkerStats>;
    /// How many times a served interface was found without xlb's XDP
    /// program (removed by someone else; each removal counted once).
    fn xdp_programs_removed(&self) -> u64 {
        0
    }
}

/// The host's network as the tables need it.
pub trait NetEnv: Send + Sync {
    /// The balancer's ports (interfaces) and their own addresses.
    fn ports(&self) -> Vec<PortSpec>;
    /// The next hop for each of `addrs` that is known now; unknown ones are
    /// left out. Called on the controller's thread: it must not wait on the
    /// network (resolve in the background and report through
    /// [`NetEnv::on_change`]).
    fn next_hops(&self, addrs: &[IpAddr]) -> Vec<(IpAddr, NextHop)>;
    /// Asked by the controller every [`REFRESH_EVERY`]: whether the tables
    /// should be rebuilt to pick up what changed in the network (a neighbour
    /// moved, a next hop is still unresolved). `round` counts the calls, for
    /// implementations that also re-resolve everything now and then.
    fn needs_refresh(&self, round: u64) -> bool {
        let _ = round;
        false
    }
    /// Call `wake` whenever [`NetEnv::needs_refresh`] would now answer true
    /// (a next hop was found, changed or lost), so the tables follow at
    /// once rather than at the next round. The controller sets it at start.
    fn on_change(&self, wake: Box<dyn Fn() + Send + Sync>) {
        let _ = wake;
    }
}

/// How often the controller asks [`NetEnv::needs_refresh`].
pub const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Makes table snapshots live.
pub trait Publisher: Send + Sync {
    /// The snapshot the workers read now.
    fn current(&self) -> Arc<Tables>;
    /// Make `tables` the workers' snapshot, then bring what follows the
    /// tables in line with it (the XDP steering maps, the VIPs held on the
    /// host). The tables are live when this returns; what follows them may
    /// be finished in the background, and failures there are logged and
    /// retried by the implementation, never refused: the snapshot was
    /// checked when it was built.
    fn publish(&self, tables: Tables);
    /// The election moved the hold gate the published snapshot reads
    /// ([`xlb_dataplane::tables::HoldGate`]): bring what follows the tables
    /// in line with it — the steering maps before this returns, the
    /// addresses on the host right after. Called from the election's task,
    /// never waiting on the controller.
    fn roles_changed(&self) {}
}

/// What a running dataplane hands control: where snapshots go, a view of
/// the workers' statistics, and the host network it forwards on.
pub struct Dataplane {
    /// Publishes table snapshots to the workers (and what follows them).
    pub publisher: Arc<dyn Publisher>,
    /// Worker statistics.
    pub view: Arc<dyn DataplaneView>,
    /// Interfaces and neighbours.
    pub net: Arc<dyn NetEnv>,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane").finish_non_exhaustive()
    }
}

impl Dataplane {
    /// No dataplane (`--no-dataplane`, tests): tables are built and
    /// published to a [`Unattached`] handle that nothing else reads.
    pub fn none() -> Dataplane {
        Dataplane::unattached(xlb_dataplane::tables::TablesHandle::new())
    }

    /// No dataplane, publishing to `handle` (for tests that read what was
    /// published).
    pub fn unattached(handle: xlb_dataplane::tables::TablesHandle) -> Dataplane {
        Dataplane {
            publisher: Arc::new(Unattached::new(handle)),
            view: Arc::new(StaticView::new()),
            net: Arc::new(StaticNet::default()),
        }
    }
}
