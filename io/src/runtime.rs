//! The I/O runtime the `xlb` daemon starts: XDP programs on every configured
//! interface, one pinned worker thread per queue index owning that queue's
//! AF_XDP sockets on every interface, and the map sync that keeps the XDP
//! program's steering maps equal to the published tables.
//!
//! Lifecycle: [`Runtime::start`] detaches stale programs, attaches ours, syncs
//! the maps from the current tables, creates sockets (registering them in the
//! XSKMAPs) and spawns workers. [`Runtime::stop`] (or dropping the runtime)
//! stops and joins the workers, closes the sockets and detaches the programs;
//! the maps vanish with their last fd.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use xlb_dataplane::drop::DropReason;
use xlb_dataplane::pipeline::Processor;
use xlb_dataplane::tables::{PortSpec, Tables, TablesHandle};

use crate::io::xsk::{XskConfig, XskError, XskIo};
use crate::kernel::napi::NapiTuning;
use crate::kernel::netinfo::{self, IfaceInfo, NetInfoError};
use crate::kernel::sys;
use crate::worker::{Worker, WorkerStats};
use crate::xdp::maps::{MapSync, SyncReport, MAX_QUEUES};
use crate::xdp::program::XdpProgram;
use crate::xdp::stats::XdpStats;
use crate::xdp::{XdpError, XdpMode};

/// How to run the I/O layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Interfaces to serve; port id = index in this list.
    pub ifaces: Vec<String>,
    /// Queue indices (= workers) to serve; `None` = the interfaces' rx queue
    /// count (which must then agree across interfaces).
    pub queues: Option<u32>,
    /// Core per worker; `None` = worker i on core i (mod the core count).
    pub cores: Option<Vec<usize>>,
    /// XDP attach mode (native falls back to generic with a warning).
    pub xdp_mode: XdpMode,
    /// Spin even when idle (lowest latency, burns a core per worker), with
    /// preferred busy polling: each worker runs its receive queues' NAPI in
    /// its own syscalls, on its own core (see [`crate::kernel::napi`]).
    pub busy_poll: bool,
    /// RX batch size per socket.
    pub batch: usize,
    /// UMEM frames per worker (shared by its sockets on every interface).
    pub frame_count: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            ifaces: Vec::new(),
            queues: None,
            cores: None,
            xdp_mode: XdpMode::Native,
            busy_poll: false,
            batch: 64,
            frame_count: 4096,
        }
    }
}

/// Why the runtime could not start (or sync).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// the configuration is unusable
    #[error("invalid runtime configuration: {0}")]
    Config(String),
    /// a configured interface does not exist
    #[error("interface {0:?} does not exist")]
    InterfaceMissing(String),
    /// not enough privileges
    #[error("not enough privileges: xlb needs root (or CAP_NET_ADMIN, CAP_BPF, CAP_NET_RAW) to attach XDP and open AF_XDP sockets")]
    NotPrivileged,
    /// the interfaces' queue counts do not fit the configuration
    #[error("queue count mismatch: {0}")]
    QueueMismatch(String),
    /// the kernel or interface does not support AF_XDP
    #[error("AF_XDP is not supported on {iface} queue {queue}: {source}")]
    AfXdpUnsupported {
        /// Interface.
        iface: String,
        /// Queue.
        queue: u32,
        /// The socket error.
        #[source]
        source: XskError,
    },
    /// an AF_XDP socket or UMEM could not be set up
    #[error(transparent)]
    Xsk(#[from] XskError),
    /// the XDP program could not be loaded, attached or updated
    #[error(transparent)]
    Xdp(#[from] XdpError),
    /// reading interface information failed
    #[error(transparent)]
    NetInfo(NetInfoError),
    /// a worker thread could not be spawned
    #[error("spawning worker {0}: {1}")]
    Spawn(usize, std::io::Error),
    /// a worker thread panicked
    #[error("worker {0} panicked")]
    WorkerPanicked(usize),
}

/// One served interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Port id used in verdicts (index in `RuntimeConfig::ifaces`).
    pub id: u16,
    /// Interface facts (name, ifindex, MAC, addresses, queues).
    pub iface: IfaceInfo,
    /// The mode XDP ended up attached in.
    pub xdp_mode: XdpMode,
}

impl PortInfo {
    /// The dataplane's [`PortSpec`] for this port (for `TablesSpec::ports`).
    pub fn port_spec(&self) -> PortSpec {
        self.iface.port_spec(self.id)
    }
}

/// A snapshot of the runtime's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeStats {
    /// Per worker (index = queue).
    pub workers: Vec<WorkerCounters>,
    /// Per port: the XDP program's action counters.
    pub xdp: Vec<XdpStats>,
}

/// Plain copies of one worker's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerCounters {
    /// Frames received.
    pub rx: u64,
    /// Frames transmitted (put on a TX ring).
    pub tx: u64,
    /// `Verdict::Pass` frames (not ours; recycled).
    pub not_ours: u64,
    /// Frames lost to a TX ring that stayed full (a stalled port).
    pub tx_ring_full: u64,
    /// Frames that waited for room on a full TX ring.
    pub tx_deferred: u64,
    /// Frames sent to a port that does not exist.
    pub bad_port: u64,
    /// Batches processed.
    pub batches: u64,
    /// Times the worker blocked in `poll()`.
    pub sleeps: u64,
    /// TX kicks (`sendto`).
    pub tx_kicks: u64,
    /// Drops by reason (`DropReason as usize`).
    pub drops: [u64; DropReason::SLOTS],
    /// Kernel: RX ring full (frames lost before the worker saw them).
    pub kernel_rx_ring_full: u64,
    /// Kernel: fill ring empty when a frame arrived.
    pub kernel_fill_ring_empty: u64,
    /// Kernel: other RX drops.
    pub kernel_rx_dropped: u64,
    /// Kernel: invalid TX descriptors.
    pub kernel_tx_invalid: u64,
}

impl WorkerCounters {
    fn from_stats(s: &WorkerStats) -> WorkerCounters {
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let mut drops = [0; DropReason::SLOTS];
        for (d, a) in drops.iter_mut().zip(s.drops.iter()) {
            *d = l(a);
        }
        WorkerCounters {
            rx: l(&s.rx),
            tx: l(&s.tx),
            not_ours: l(&s.not_ours),
            tx_ring_full: l(&s.tx_ring_full),
            tx_deferred: l(&s.tx_deferred),
            bad_port: l(&s.bad_port),
            batches: l(&s.batches),
            sleeps: l(&s.sleeps),
            tx_kicks: l(&s.tx_kicks),
            drops,
            kernel_rx_ring_full: l(&s.kernel_rx_ring_full),
            kernel_fill_ring_empty: l(&s.kernel_fill_ring_empty),
            kernel_rx_dropped: l(&s.kernel_rx_dropped),
            kernel_tx_invalid: l(&s.kernel_tx_invalid),
        }
    }
}

impl RuntimeStats {
    /// Sum of `rx` over workers.
    pub fn rx(&self) -> u64 {
        self.workers.iter().map(|w| w.rx).sum()
    }
    /// Sum of `tx` over workers.
    pub fn tx(&self) -> u64 {
        self.workers.iter().map(|w| w.tx).sum()
    }
}

/// The running I/O layer.
pub struct Runtime {
    stop: Arc<AtomicBool>,
    threads: Vec<(usize, JoinHandle<()>)>,
    stats: Vec<Arc<WorkerStats>>,
    ports: Vec<PortInfo>,
    sync: Mutex<MapSync>,
    // Dropped after the workers (and so the sockets) are gone.
    _napi: Option<NapiTuning>,
    programs: Vec<XdpProgram>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("ports", &self.ports)
            .field("workers", &self.threads.len())
            .finish()
    }
}

fn classify_socket_error(iface: &str, queue: u32, e: XskError) -> RuntimeError {
    match e.errno() {
        Some(libc::EPERM) | Some(libc::EACCES) => RuntimeError::NotPrivileged,
        Some(libc::EAFNOSUPPORT) | Some(libc::EOPNOTSUPP) | Some(libc::EPROTONOSUPPORT) => {
            RuntimeError::AfXdpUnsupported {
                iface: iface.to_string(),
                queue,
                source: e,
            }
        }
        _ => RuntimeError::Xsk(e),
    }
}

impl Runtime {
    /// Start serving `cfg.ifaces`. `make_processor(worker_index)` builds each
    /// worker's pipeline; workers read `tables` once per batch. The steering
    /// maps are synced from `tables`' current snapshot before any socket opens.
    pub fn start<F>(
        cfg: RuntimeConfig,
        tables: TablesHandle,
        make_processor: F,
    ) -> Result<Runtime, RuntimeError>
    where
        F: Fn(usize) -> Box<dyn Processor + Send>,
    {
        if cfg.ifaces.is_empty() {
            return Err(RuntimeError::Config("no interfaces".into()));
        }
        if cfg.ifaces.len() > usize::from(u16::MAX) {
            return Err(RuntimeError::Config("too many interfaces".into()));
        }
        if cfg.batch == 0 || cfg.batch > 1024 {
            return Err(RuntimeError::Config(format!(
                "batch {} not in 1..=1024",
                cfg.batch
            )));
        }
        if cfg.frame_count < 2 * cfg.batch as u32 * cfg.ifaces.len() as u32 {
            return Err(RuntimeError::Config(format!(
                "frame_count {} too small for batch {} on {} interfaces",
                cfg.frame_count,
                cfg.batch,
                cfg.ifaces.len()
            )));
        }
        if sys::euid() != 0 {
            return Err(RuntimeError::NotPrivileged);
        }
        let mut infos = Vec::with_capacity(cfg.ifaces.len());
        for name in &cfg.ifaces {
            match netinfo::iface_info(name) {
                Ok(i) => infos.push(i),
                Err(NetInfoError::NoInterface(n)) => return Err(RuntimeError::InterfaceMissing(n)),
                Err(e) => return Err(RuntimeError::NetInfo(e)),
            }
        }
        let queues = match cfg.queues {
            Some(q) => {
                if q == 0 {
                    return Err(RuntimeError::Config("queues = 0".into()));
                }
                if let Some(i) = infos.iter().find(|i| i.rx_queues < q) {
                    return Err(RuntimeError::QueueMismatch(format!(
                        "{} queues configured but {} has {}",
                        q, i.name, i.rx_queues
                    )));
                }
                q
            }
            None => {
                let q = infos[0].rx_queues;
                if let Some(i) = infos.iter().find(|i| i.rx_queues != q) {
                    return Err(RuntimeError::QueueMismatch(format!(
                        "{} has {} rx queues but {} has {}; set `queues` explicitly",
                        infos[0].name, q, i.name, i.rx_queues
                    )));
                }
                q
            }
        };
        if queues > MAX_QUEUES {
            return Err(RuntimeError::QueueMismatch(format!(
                "{queues} queues; the XSKMAP holds {}",
                MAX_QUEUES
            )));
        }
        if let Some(c) = &cfg.cores {
            if c.len() < queues as usize {
                return Err(RuntimeError::Config(format!(
                    "{} cores given for {} workers",
                    c.len(),
                    queues
                )));
            }
        }

        // XDP programs: the first owns the steering maps, the others share them.
        let mut programs: Vec<XdpProgram> = Vec::with_capacity(infos.len());
        for info in &infos {
            let shared = match programs.first() {
                Some(p) => Some(p.steering_maps()?),
                None => None,
            };
            let p =
                XdpProgram::load_and_attach_sharing(info.ifindex, cfg.xdp_mode, shared.as_ref())
                    .map_err(|e| match &e {
                        XdpError::Load(le)
                            if le.kind() == libbpf_rs::ErrorKind::PermissionDenied =>
                        {
                            RuntimeError::NotPrivileged
                        }
                        _ => RuntimeError::Xdp(e),
                    })?;
            programs.push(p);
        }
        let mut sync = MapSync::new(programs[0].steering_maps()?);
        sync.sync(&tables.load())?;

        let napi = cfg.busy_poll.then(|| NapiTuning::apply(&infos));
        let ports: Vec<PortInfo> = infos
            .into_iter()
            .zip(programs.iter())
            .enumerate()
            .map(|(i, (iface, p))| PortInfo {
                id: i as u16,
                iface,
                xdp_mode: p.mode(),
            })
            .collect();

        // Sockets, before any thread starts, so errors come back from here.
        let mut ios = Vec::with_capacity(queues as usize);
        let xsk = XskConfig {
            frame_count: cfg.frame_count,
            busy_poll_budget: cfg.busy_poll.then_some(cfg.batch as u16),
            ..XskConfig::default()
        };
        for q in 0..queues {
            let (io, fds) = XskIo::create(&cfg.ifaces, q, &xsk).map_err(|e| {
                let iface = match &e {
                    XskError::Socket { iface, .. } => iface.clone(),
                    _ => cfg.ifaces[0].clone(),
                };
                classify_socket_error(&iface, q, e)
            })?;
            for (p, fd) in programs.iter().zip(fds) {
                p.register_socket(q, fd)?;
            }
            ios.push(Worker::new(io, cfg.batch));
        }

        let stop = Arc::new(AtomicBool::new(false));
        let ncores = core_affinity::get_core_ids().unwrap_or_default();
        let mut rt = Runtime {
            stop: stop.clone(),
            threads: Vec::with_capacity(ios.len()),
            stats: Vec::with_capacity(ios.len()),
            ports,
            sync: Mutex::new(sync),
            _napi: napi,
            programs,
        };
        for (w, io) in ios.into_iter().enumerate() {
            let core = match &cfg.cores {
                Some(c) => Some(core_affinity::CoreId { id: c[w] }),
                None if !ncores.is_empty() => Some(ncores[w % ncores.len()]),
                None => None,
            };
            let processor = make_processor(w);
            let stats = Arc::new(WorkerStats::default());
            rt.stats.push(stats.clone());
            let (stop, tables, busy) = (stop.clone(), tables.clone(), cfg.busy_poll);
            let h = std::thread::Builder::new()
                .name(format!("xlb-worker-{w}"))
                .spawn(move || {
                    if let Some(c) = core {
                        if !core_affinity::set_for_current(c) {
                            tracing::warn!(worker = w, core = c.id, "could not pin worker");
                        }
                    }
                    io.run(processor, tables, busy, stop, stats);
                })
                .map_err(|e| RuntimeError::Spawn(w, e))?;
            rt.threads.push((w, h));
        }
        Ok(rt)
    }

    /// The served ports, in `RuntimeConfig::ifaces` order.
    pub fn ports(&self) -> &[PortInfo] {
        &self.ports
    }

    /// The ports as the dataplane's [`PortSpec`]s (for `TablesSpec::ports`).
    pub fn port_specs(&self) -> Vec<PortSpec> {
        self.ports.iter().map(PortInfo::port_spec).collect()
    }

    /// Current counters.
    pub fn stats(&self) -> RuntimeStats {
        RuntimeStats {
            workers: self
                .stats
                .iter()
                .map(|s| WorkerCounters::from_stats(s))
                .collect(),
            xdp: self
                .programs
                .iter()
                .map(|p| p.stats().unwrap_or_default())
                .collect(),
        }
    }

    /// `(ifindex, program id)` of the steering program on each served
    /// interface, for the record of what this process attached.
    pub fn attached_programs(&self) -> Vec<(u32, u32)> {
        self.programs
            .iter()
            .map(|p| (p.ifindex(), p.prog_id()))
            .collect()
    }

    /// The served interfaces (names) that no longer run this runtime's
    /// steering program: someone detached or replaced it, and their VIP
    /// traffic goes to the kernel instead of the workers.
    pub fn programs_removed(&self) -> Vec<String> {
        self.programs
            .iter()
            .zip(&self.ports)
            .filter(|(p, _)| matches!(p.still_attached(), Ok(false)))
            .map(|(_, port)| port.iface.name.clone())
            .collect()
    }

    /// Bring the XDP steering maps in line with `tables`. Control calls this
    /// after each `TablesHandle::publish` (order: publish, then sync, so the
    /// workers already know a VIP when its packets start arriving).
    pub fn sync(&self, tables: &Tables) -> Result<SyncReport, RuntimeError> {
        let mut s = self.sync.lock().unwrap_or_else(|p| p.into_inner());
        Ok(s.sync(tables)?)
    }

    /// Publish `tables` to the workers, then sync the steering maps to it: the
    /// order that never steers a packet to workers that do not know its
    /// service yet (new VIPs reach the kernel until the sync; removed VIPs
    /// reach the workers, which drop them as `NoService`, until the sync).
    pub fn publish(
        &self,
        handle: &TablesHandle,
        tables: Tables,
    ) -> Result<SyncReport, RuntimeError> {
        handle.publish(tables);
        self.sync(&handle.current())
    }

    /// Whether every worker thread is still running (one that ended on a
    /// panic has not) and an XDP program is still attached to every port
    /// (an operator's `ip link set dev X xdp off` would take it away);
    /// `Err` says which is not. For readiness probes: one netlink query per
    /// port, no waiting on the workers.
    pub fn check(&self) -> Result<(), String> {
        if let Some((w, _)) = self.threads.iter().find(|(_, h)| h.is_finished()) {
            return Err(format!("worker {w} has stopped"));
        }
        for p in &self.ports {
            match netinfo::xdp_prog_id(&p.iface.name) {
                Ok(0) => return Err(format!("no XDP program attached to {}", p.iface.name)),
                Ok(_) => {}
                Err(e) => return Err(format!("asking for {}'s XDP program: {e}", p.iface.name)),
            }
        }
        Ok(())
    }

    /// A flag that stops the workers when set (the runtime still needs
    /// [`Runtime::stop`] or a drop to join them and detach the programs).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Stop the workers, close the sockets, detach the programs.
    pub fn stop(mut self) -> Result<(), RuntimeError> {
        let r = self.join_workers();
        let mut first_err = r.err();
        for p in std::mem::take(&mut self.programs) {
            if let Err(e) = p.detach() {
                first_err.get_or_insert(RuntimeError::Xdp(e));
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Stop the workers but leave the XDP programs attached, as a crashed
    /// process would. Only for tests of stale-program recovery.
    #[doc(hidden)]
    pub fn abandon(mut self) {
        let _ = self.join_workers();
        for p in std::mem::take(&mut self.programs) {
            p.leak_attached();
        }
    }

    fn join_workers(&mut self) -> Result<(), RuntimeError> {
        self.stop.store(true, Ordering::Relaxed);
        let mut res = Ok(());
        for (w, h) in self.threads.drain(..) {
            if h.join().is_err() {
                res = Err(RuntimeError::WorkerPanicked(w));
            }
        }
        res
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Err(e) = self.join_workers() {
            tracing::warn!(error = %e, "worker failed");
        }
        // Programs detach in their own Drop.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_can_be_shared_with_control_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Runtime>();
    }
}
