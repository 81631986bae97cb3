//! The AF_XDP dataplane behind `xlb run`: starts one pipeline per NIC queue
//! under the xlb-io runtime, and gives control what it needs from it
//! ([`super::Dataplane`]): a [`Publisher`] that makes a snapshot live — the
//! workers' tables, then the XDP steering maps, in that order, before it
//! returns; then the addresses on `lo` in the background ([`super::host`]) —
//! a [`DataplaneView`] over the workers' counters and connection tables,
//! and the kernel's interfaces and neighbours ([`KernelNet`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use xlb_dataplane::conntrack::{flags, mode, Conntrack, ConntrackConfig, Kind};
use xlb_dataplane::counters::CounterBlock;
use xlb_dataplane::pipeline::{FastPathExit, Pipeline, Processor};
use xlb_dataplane::sync::{self, sync_queues, SyncHub, SyncedFlow, WorkerSync, DEFAULT_QUEUE};
use xlb_dataplane::tables::{EndpointId, L4Proto, Tables, TablesHandle};
use xlb_dataplane::DropReason;
use xlb_io::kernel::netinfo;
use xlb_io::{Runtime, RuntimeConfig, XdpMode};

use super::host::{self, Follower};
use super::ledger::{Ledger, LedgerError};
use super::{CtEntry, Dataplane, DataplaneView, KernelNet, Publisher, WorkerStats};

/// How often starting the runtime is tried when AF_XDP sockets are still busy.
const START_ATTEMPTS: u32 = 20;

/// Each worker's counter block, by worker index, as the workers are made.
type WorkerCounters = Vec<(usize, Arc<CounterBlock>)>;

/// How `xlb run` wants the dataplane.
#[derive(Debug, Clone)]
pub struct DataplaneOptions {
    /// Interfaces to serve.
    pub ifaces: Vec<String>,
    /// Queues per interface (default: all the first interface has).
    pub queues: Option<u32>,
    /// Cores to pin workers to, in worker order.
    pub cores: Option<Vec<usize>>,
    /// XDP attach mode (native falls back to generic with a warning).
    pub xdp_mode: XdpMode,
    /// Spin instead of blocking when idle.
    pub busy_poll: bool,
    /// Connection-table buckets per worker (8 entries of 128 B each; a flow takes two).
    pub conntrack_buckets: usize,
    /// Give every worker the rings of connection-state sync
    /// ([`Running::take_sync_hub`] hands control its end).
    pub sync: bool,
}

/// Why the dataplane did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// the interface list is empty
    #[error("no interface given (--iface)")]
    NoInterface,
    /// the interface's queues could not be read
    #[error("{0}")]
    Queues(#[from] netinfo::NetInfoError),
    /// the AF_XDP runtime refused to start
    #[error("{0}")]
    Runtime(#[from] xlb_io::RuntimeError),
    /// the record of what xlb changes on the host could not be kept
    #[error("{0}")]
    Ledger(#[from] LedgerError),
}

/// The running dataplane. [`Running::shutdown`] removes the addresses xlb
/// added to the host; dropping the last reference stops the workers and
/// detaches XDP.
pub struct Running {
    /// Keeps the workers and XDP programs alive as long as the dataplane is.
    runtime: Arc<Runtime>,
    ct: Arc<Conntrack>,
    counters: Vec<Arc<CounterBlock>>,
    handle: TablesHandle,
    host: Follower,
    /// Control's end of the workers' sync rings, until taken.
    sync_hub: Mutex<Option<SyncHub>>,
    /// What this xlb changed on the host. Last: dropped (the reserved
    /// ports given back, the record removed) after the runtime reference
    /// above, usually the last, has detached the programs.
    _ledger: Arc<Ledger>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("workers", &self.counters.len())
            .finish_non_exhaustive()
    }
}

/// Start the workers and return what control plugs in, plus the running
/// dataplane (to shut down at exit).
pub fn start(opts: &DataplaneOptions) -> Result<(Dataplane, Arc<Running>), StartError> {
    let first = opts.ifaces.first().ok_or(StartError::NoInterface)?;
    let workers = match opts.queues {
        Some(q) => q.max(1) as usize,
        None => netinfo::rx_queues(first)? as usize,
    };
    // First: what a dead xlb left (addresses, programs, reserved ports) goes.
    let ledger = Arc::new(Ledger::open()?);
    host::reserve_nat_ports(&ledger);
    let handle = TablesHandle::new();
    let ct = Arc::new(Conntrack::new(
        workers,
        ConntrackConfig {
            buckets_per_shard: opts.conntrack_buckets,
        },
    ));
    let counters: Arc<Mutex<WorkerCounters>> = Arc::default();
    let cfg = RuntimeConfig {
        ifaces: opts.ifaces.clone(),
        queues: opts.queues,
        cores: opts.cores.clone(),
        xdp_mode: opts.xdp_mode,
        busy_poll: opts.busy_poll,
        ..RuntimeConfig::default()
    };
    // After a crash the kernel releases the dead process's AF_XDP sockets a
    // little later; until then binding the same queue fails. Retry for a while
    // (a supervisor restarting xlb at once hits exactly this).
    let mut attempt = 0;
    let (runtime, sync_hub) = loop {
        attempt += 1;
        counters.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let made = counters.clone();
        let ct_for_workers = ct.clone();
        // Fresh rings for every attempt: a failed one consumed its workers' ends.
        let (hub, ends) = if opts.sync {
            let (hub, ends) = sync_queues(workers, DEFAULT_QUEUE);
            (Some(hub), ends.into_iter().map(Some).collect())
        } else {
            (None, Vec::new())
        };
        let ends: Arc<Mutex<Vec<Option<WorkerSync>>>> = Arc::new(Mutex::new(ends));
        match Runtime::start(cfg.clone(), handle.clone(), move |w| {
            let mut p = Pipeline::new(w, workers, &ct_for_workers);
            let mine = ends
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(w)
                .and_then(Option::take);
            if let Some(e) = mine {
                p.set_sync(e, unix_offset_ns());
            }
            made.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((w, p.counters()));
            Box::new(p) as Box<dyn Processor + Send>
        }) {
            Ok(rt) => break (rt, hub),
            Err(e) if attempt < START_ATTEMPTS && e.to_string().contains("AF_XDP socket") => {
                tracing::warn!(attempt, "starting the dataplane: {e}; retrying");
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => return Err(e.into()),
        }
    };
    let mut counters = std::mem::take(&mut *counters.lock().unwrap_or_else(|e| e.into_inner()));
    counters.sort_by_key(|(w, _)| *w);
    let runtime = Arc::new(runtime);
    ledger.set_programs(runtime.attached_programs());
    let net = KernelNet::new(runtime.port_specs());
    tracing::info!(
        ifaces = ?opts.ifaces,
        workers,
        ports = ?runtime.ports().iter().map(|p| (&p.iface.name, p.xdp_mode)).collect::<Vec<_>>(),
        "dataplane started"
    );
    let running = Arc::new(Running {
        host: Follower::start(runtime.clone(), ledger.clone()),
        runtime,
        ct,
        counters: counters.into_iter().map(|(_, c)| c).collect(),
        handle,
        sync_hub: Mutex::new(sync_hub),
        _ledger: ledger,
    });
    let dataplane = Dataplane {
        publisher: running.clone(),
        view: running.clone(),
        net,
    };
    Ok((dataplane, running))
}

/// Unix time now, ns.
fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Unix time minus the workers' clock (CLOCK_MONOTONIC), ns: what a worker
/// adds to its `now` to stamp a flow's opening for other members.
fn unix_offset_ns() -> i64 {
    unix_now_ns() as i64 - xlb_io::monotonic_ns() as i64
}

/// The flow table as connection sync reads it: whole for a member that
/// connects, the recently active part for the holder's refresh.
#[derive(Debug)]
pub struct TableSource {
    ct: Arc<Conntrack>,
    handle: TablesHandle,
}

impl crate::sync::FlowSource for TableSource {
    fn dump(&self) -> Vec<SyncedFlow> {
        sync::dump(&self.ct, &self.handle.current(), None, unix_now_ns())
    }

    fn active_since(&self, unix_ns: u64) -> Vec<SyncedFlow> {
        let since = (unix_ns as i64 - unix_offset_ns()).max(0) as u64;
        sync::dump(&self.ct, &self.handle.current(), Some(since), unix_now_ns())
    }
}

impl Running {
    /// Control's end of the workers' sync rings (once; `None` without
    /// [`DataplaneOptions::sync`]), and the flow table to dump from.
    pub fn take_sync_hub(&self) -> Option<(SyncHub, TableSource)> {
        let hub = self
            .sync_hub
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        Some((
            hub,
            TableSource {
                ct: self.ct.clone(),
                handle: self.handle.clone(),
            },
        ))
    }

    /// Whether the dataplane still forwards: every worker running and the
    /// XDP programs attached (`Err` says what is wrong). For `/readyz`.
    pub fn check(&self) -> Result<(), String> {
        self.runtime.check()
    }

    /// Remove the addresses xlb added to `lo`. The workers stop and the XDP
    /// programs are detached when the last reference to the runtime drops
    /// (the API's view holds one until exit).
    pub fn shutdown(&self) {
        self.host.stop();
    }
}

impl Publisher for Running {
    fn current(&self) -> Arc<Tables> {
        self.handle.current()
    }

    /// Tables first, then the steering maps (so the workers know a VIP
    /// before its packets are steered to them), synchronously: when this
    /// returns, traffic for the snapshot's VIPs reaches the workers. The
    /// addresses on `lo` follow in the background.
    fn publish(&self, tables: Tables) {
        let stale = match self.runtime.publish(&self.handle, tables) {
            Ok(r) => {
                tracing::debug!(?r, "steering maps synced");
                false
            }
            Err(e) => {
                tracing::error!("syncing the XDP steering maps: {e}; retrying");
                true
            }
        };
        self.host.published(self.handle.current(), stale);
    }

    fn roles_changed(&self) {
        let current = self.handle.current();
        let stale = match self.runtime.sync(&current) {
            Ok(r) => {
                tracing::debug!(?r, "steering maps follow the new role");
                false
            }
            Err(e) => {
                tracing::error!("syncing the XDP steering maps: {e}; retrying");
                true
            }
        };
        self.host.published(current, stale);
    }
}

impl DataplaneView for Running {
    fn endpoint_counters(&self, id: EndpointId) -> (u64, u64) {
        self.counters.iter().fold((0, 0), |(p, b), c| {
            let (cp, cb) = c.endpoint(id);
            (p + cp, b + cb)
        })
    }

    fn endpoint_new_flows(&self, id: EndpointId) -> u64 {
        self.counters.iter().map(|c| c.endpoint_flows(id)).sum()
    }

    fn conntrack(&self) -> Vec<CtEntry> {
        let t = self.handle.current();
        let all = self.ct.dump();
        let replies: HashMap<_, _> = all
            .iter()
            .filter(|f| f.data.kind == Kind::Reply)
            .map(|f| (f.key, f))
            .collect();
        // A member keeps a copy of each synced flow per worker: show it once.
        let mut seen = std::collections::HashSet::new();
        all.iter()
            .filter(|f| f.data.kind == Kind::Forward && seen.insert(f.key))
            .take(100_000)
            .map(|f| {
                let reply = replies.get(&f.data.partner_key(f.key.proto));
                let rflags = reply.map_or(0, |r| r.data.flags);
                let state = match f.key.proto {
                    6 if (f.data.flags | rflags) & flags::RST != 0 => "closed",
                    6 if f.data.flags & flags::FIN != 0 || rflags & flags::FIN != 0 => "fin-wait",
                    6 if rflags & flags::SEEN != 0 || f.data.flags & flags::ACK != 0 => "est",
                    6 => "syn-sent",
                    _ if rflags & flags::SEEN != 0 => "est",
                    _ => "new",
                };
                let act = match f.data.mode {
                    mode::DNAT => "dnat",
                    mode::ONE_ARM | mode::FULL_NAT => "fdnat",
                    _ => "dsr",
                };
                let proto = match f.key.proto {
                    6 => L4Proto::Tcp,
                    17 => L4Proto::Udp,
                    132 => L4Proto::Sctp,
                    _ => L4Proto::Icmp,
                };
                CtEntry {
                    src: f.key.src.into(),
                    src_port: f.key.sport,
                    dst: f.key.dst.into(),
                    dst_port: f.key.dport,
                    proto,
                    state: state.into(),
                    action: format!(
                        "{act}-{}:{}",
                        IpAddr::from(f.data.new_dst),
                        f.data.new_dport
                    ),
                    packets: f.packets + reply.map_or(0, |r| r.packets),
                    bytes: f.bytes + reply.map_or(0, |r| r.bytes),
                    service: t
                        .services
                        .get(usize::from(f.data.service))
                        .map(|s| s.spec.name.clone())
                        .unwrap_or_default(),
                }
            })
            .collect()
    }

    fn worker_stats(&self) -> Vec<WorkerStats> {
        let io = self.runtime.stats().workers;
        self.counters
            .iter()
            .enumerate()
            .map(|(w, c)| {
                let d = io.get(w).cloned().unwrap_or_default();
                (w, c, d)
            })
            .map(|(w, c, d)| WorkerStats {
                worker: w as u32,
                rx_packets: c.rx_packets.load(Ordering::Relaxed),
                rx_bytes: c.rx_bytes.load(Ordering::Relaxed),
                tx_packets: c.tx_packets.load(Ordering::Relaxed),
                tx_bytes: c.tx_bytes.load(Ordering::Relaxed),
                drops: DropReason::ALL
                    .iter()
                    .map(|&r| (r, c.drops(r)))
                    .filter(|&(_, v)| v > 0)
                    .collect(),
                // Worker w writes shard w.
                ct_entries: self.ct.used_in(w),
                ct_capacity: self.ct.capacity_in(w) as u64,
                io_drops: vec![
                    ("tx_ring_full", d.tx_ring_full),
                    ("bad_port", d.bad_port),
                    ("kernel_rx_ring_full", d.kernel_rx_ring_full),
                    ("kernel_fill_ring_empty", d.kernel_fill_ring_empty),
                    ("kernel_rx_dropped", d.kernel_rx_dropped),
                    ("kernel_tx_invalid", d.kernel_tx_invalid),
                ],
                tx_deferred: d.tx_deferred,
                flows_evicted: c.flows_evicted.load(Ordering::Relaxed),
                fast_path_exits: FastPathExit::ALL
                    .iter()
                    .map(|&e| (e, c.fast_path_exit(e)))
                    .filter(|&(_, v)| v > 0)
                    .collect(),
            })
            .collect()
    }

    fn xdp_programs_removed(&self) -> u64 {
        self.host.programs_removed()
    }
}

impl Drop for Running {
    /// Whatever way the daemon ends, xlb's addresses leave `lo` (and the
    /// follower's reference to the runtime goes, so the workers stop and
    /// the XDP programs are detached when the rest of it drops).
    fn drop(&mut self) {
        self.host.stop();
    }
}
