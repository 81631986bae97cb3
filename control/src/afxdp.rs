//! The AF_XDP dataplane behind `xlb run`: starts one pipeline per NIC queue
//! under the xlb-bpf runtime, and gives control what it needs from it — the
//! tables handle the workers read, a [`DataplaneView`] over their counters
//! and connection tables, and a [`NetEnv`] over the kernel's interfaces and
//! neighbours.
//!
//! Two background duties keep the kernel in step with the published tables:
//! - the XDP steering maps follow every new snapshot (checked every 20 ms);
//! - VIPs and source-NAT addresses are added to `lo` so the kernel answers
//!   ARP/NDP for them (and removed again when no rule uses them).
//!
//! A third follows the kernel: [`KernelNet::watch_neighbours`] listens for
//! neighbour changes (rtnetlink) and flags a next hop whose MAC changed, so
//! the refresher rebuilds the tables within its next tick.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use xlb_bpf::{netinfo, Runtime, RuntimeConfig, XdpMode};
use xlb_dataplane::conntrack::{flags, mode, Conntrack, ConntrackConfig, Kind};
use xlb_dataplane::counters::CounterBlock;
use xlb_dataplane::pipeline::{FastPathExit, Pipeline, Processor};
use xlb_dataplane::tables::{EndpointId, L4Proto, NextHop, PortSpec, Tables, TablesHandle};
use xlb_dataplane::DropReason;

use crate::daemon::Dataplane;
use crate::env::{CtEntry, DataplaneView, NetEnv, WorkerStats};

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
    Runtime(#[from] xlb_bpf::RuntimeError),
}

/// The running dataplane. [`Running::shutdown`] stops the background sync;
/// dropping the last reference stops the workers and detaches XDP.
pub struct Running {
    /// Keeps the workers and XDP programs alive as long as the dataplane is.
    _runtime: Arc<Runtime>,
    ct: Arc<Conntrack>,
    counters: Vec<Arc<CounterBlock>>,
    handle: TablesHandle,
    stop: Arc<AtomicBool>,
    sync_thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("workers", &self.counters.len())
            .finish_non_exhaustive()
    }
}

/// Start the workers and return what control plugs in, plus the running dataplane.
pub fn start(
    opts: &DataplaneOptions,
) -> Result<(Dataplane, Arc<Running>, Arc<KernelNet>), StartError> {
    let first = opts.ifaces.first().ok_or(StartError::NoInterface)?;
    let workers = match opts.queues {
        Some(q) => q.max(1) as usize,
        None => netinfo::rx_queues(first)? as usize,
    };
    reserve_nat_ports();
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
    let runtime = loop {
        attempt += 1;
        counters.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let made = counters.clone();
        let ct_for_workers = ct.clone();
        match Runtime::start(cfg.clone(), handle.clone(), move |w| {
            let p = Pipeline::new(w, workers, &ct_for_workers);
            made.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((w, p.counters()));
            Box::new(p) as Box<dyn Processor + Send>
        }) {
            Ok(rt) => break rt,
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
    let net = Arc::new(KernelNet {
        ports: runtime.port_specs(),
        cache: Mutex::default(),
        wanted: Mutex::default(),
        changed: AtomicBool::new(false),
    });
    KernelNet::watch_neighbours(&net);
    let stop = Arc::new(AtomicBool::new(false));
    let sync_thread = {
        let (runtime, handle, stop) = (runtime.clone(), handle.clone(), stop.clone());
        std::thread::Builder::new()
            .name("xlb-sync".into())
            .spawn(move || sync_loop(&runtime, &handle, &stop))
            .ok()
    };
    tracing::info!(
        ifaces = ?opts.ifaces,
        workers,
        ports = ?runtime.ports().iter().map(|p| (&p.iface.name, p.xdp_mode)).collect::<Vec<_>>(),
        "dataplane started"
    );
    let running = Arc::new(Running {
        _runtime: runtime,
        ct,
        counters: counters.into_iter().map(|(_, c)| c).collect(),
        handle: handle.clone(),
        stop,
        sync_thread: Mutex::new(sync_thread),
    });
    let dataplane = Dataplane {
        handle,
        view: running.clone(),
        net: net.clone(),
    };
    Ok((dataplane, running, net))
}

impl Running {
    /// Stop the background sync, which removes the addresses xlb added to
    /// `lo`. The workers stop and the XDP programs are detached when the last
    /// reference to the runtime drops (the API's view holds one until exit).
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let t = self
            .sync_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(t) = t {
            let _ = t.join();
        }
    }
}

/// Keep the XDP maps and the local addresses in step with the published tables.
fn sync_loop(runtime: &Runtime, handle: &TablesHandle, stop: &AtomicBool) {
    let mut seen = u64::MAX;
    // Addresses this loop added to `lo`, so it removes only its own.
    let mut owned = BTreeSet::new();
    while !stop.load(Ordering::Relaxed) {
        let t = handle.current();
        if t.generation != seen {
            match runtime.sync(&t) {
                Ok(r) => {
                    seen = t.generation;
                    tracing::debug!(generation = seen, ?r, "steering maps synced");
                }
                Err(e) => tracing::error!("syncing the XDP steering maps: {e}"),
            }
            set_local_addrs(&wanted_local_addrs(&t), &mut owned, &t.ports);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    set_local_addrs(&BTreeSet::new(), &mut owned, &[]);
}

/// Addresses the kernel must answer ARP/NDP for: every VIP and every source-NAT
/// address that is not already one of the ports' own addresses.
fn wanted_local_addrs(t: &Tables) -> BTreeSet<IpAddr> {
    let port_addrs: BTreeSet<IpAddr> = t.ports.iter().flat_map(|p| p.addrs.clone()).collect();
    t.vips()
        .chain(t.snat_addrs.iter().copied())
        .map(IpAddr::from)
        .filter(|a| !port_addrs.contains(a))
        .collect()
}

fn set_local_addrs(want: &BTreeSet<IpAddr>, owned: &mut BTreeSet<IpAddr>, ports: &[PortSpec]) {
    for a in want.difference(&owned.clone()) {
        let prefix = if a.is_ipv4() { 32 } else { 128 };
        let out = Command::new("ip")
            .args(["addr", "add", &format!("{a}/{prefix}"), "dev", "lo"])
            .output();
        match out {
            Ok(o) if o.status.success() => {
                owned.insert(*a);
                announce(*a, ports);
            }
            // Already there (configured by the operator): answer for it, but never remove it.
            Ok(o) if String::from_utf8_lossy(&o.stderr).contains("File exists") => {}
            Ok(o) => {
                tracing::warn!(addr = %a, "adding a VIP to lo: {}", String::from_utf8_lossy(&o.stderr).trim())
            }
            Err(e) => tracing::warn!(addr = %a, "adding a VIP to lo: {e}"),
        }
    }
    for a in owned.clone().difference(want) {
        let prefix = if a.is_ipv4() { 32 } else { 128 };
        let _ = Command::new("ip")
            .args(["addr", "del", &format!("{a}/{prefix}"), "dev", "lo"])
            .output();
        owned.remove(a);
    }
}

/// Tell the LAN that `addr` now lives here: gratuitous ARP (IPv4, RFC 5227
/// announcement) on every port that has an IPv4 address, so
/// neighbours and switches update at once after a takeover. IPv6 neighbours
/// learn from the kernel's own unsolicited advertisements when the address is added.
fn announce(addr: IpAddr, ports: &[PortSpec]) {
    let IpAddr::V4(a) = addr else { return };
    for p in ports {
        if !p.addrs.iter().any(IpAddr::is_ipv4) {
            continue;
        }
        // Best effort and in the background: arping waits for its one packet.
        let spawned = Command::new("arping")
            .args([
                "-U",
                "-c",
                "1",
                "-I",
                &p.name,
                "-s",
                &a.to_string(),
                &a.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        match spawned {
            Ok(mut child) => {
                std::thread::spawn(move || child.wait());
            }
            Err(e) => tracing::warn!(addr = %a, port = %p.name, "gratuitous ARP: arping: {e}"),
        }
    }
}

/// Keep the kernel's own connections out of the source-NAT port range, so
/// return traffic the XDP program steers to xlb is never the node's own.
fn reserve_nat_ports() {
    let (lo, hi) = xlb_dataplane::tables::DEFAULT_NAT_PORTS;
    let path = "/proc/sys/net/ipv4/ip_local_reserved_ports";
    if let Err(e) = std::fs::write(path, format!("{lo}-{hi}")) {
        tracing::warn!("reserving NAT ports {lo}-{hi} in {path}: {e}");
    }
}

impl DataplaneView for Running {
    fn endpoint_counters(&self, id: EndpointId) -> (u64, u64) {
        self.counters.iter().fold((0, 0), |(p, b), c| {
            let (cp, cb) = c.endpoint(id);
            (p + cp, b + cb)
        })
    }

    fn conntrack(&self) -> Vec<CtEntry> {
        let t = self.handle.current();
        let all = self.ct.dump();
        let replies: HashMap<_, _> = all
            .iter()
            .filter(|f| f.data.kind == Kind::Reply)
            .map(|f| (f.key, f))
            .collect();
        all.iter()
            .filter(|f| f.data.kind == Kind::Forward)
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
        let io = self._runtime.stats().workers;
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
}

/// The kernel's interfaces and neighbours, as the tables need them.
pub struct KernelNet {
    ports: Vec<PortSpec>,
    cache: Mutex<HashMap<IpAddr, NextHop>>,
    /// Every address the tables asked for last time.
    wanted: Mutex<Vec<IpAddr>>,
    /// A neighbour on a served port changed its MAC (or a next hop's entry
    /// went away) since the last [`KernelNet::take_changed`].
    changed: AtomicBool,
}

impl std::fmt::Debug for KernelNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelNet")
            .field("ports", &self.ports)
            .finish_non_exhaustive()
    }
}

impl KernelNet {
    /// Whether an address the tables use has no next hop yet (the tables
    /// should be rebuilt, which retries the resolution).
    pub fn missing_next_hops(&self) -> bool {
        let wanted = self
            .wanted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        wanted.iter().any(|a| !cache.contains_key(a))
    }

    /// Whether a neighbour changed since the last call (then the next hops
    /// should be forgotten and the tables rebuilt).
    pub fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::Relaxed)
    }

    /// Follow the kernel's neighbour table from a background thread (in the
    /// caller's network namespace) and set the `changed` flag when a
    /// neighbour on a served port changes its MAC, or a cached next hop's
    /// entry is removed. State transitions (reachable, stale, ...) with the
    /// same MAC are ignored. The thread ends when `net` is dropped.
    pub fn watch_neighbours(net: &Arc<KernelNet>) {
        let weak = Arc::downgrade(net);
        let served: Vec<u32> = net
            .ports
            .iter()
            .filter_map(|p| netinfo::ifindex(&p.name).ok())
            .collect();
        let spawned = std::thread::Builder::new()
            .name("xlb-neigh".into())
            .spawn(move || {
                let mut watch = match xlb_bpf::neigh::NeighWatch::new() {
                    Ok(w) => w,
                    Err(e) => {
                        tracing::warn!("not watching neighbours ({e}); MAC changes reach the tables by the periodic refresh");
                        return;
                    }
                };
                // Subscribed first, then the table: no change falls between.
                let mut known: HashMap<(IpAddr, u32), xlb_dataplane::net::MacAddr> =
                    xlb_bpf::neigh::dump()
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|n| Some(((n.addr, n.ifindex), n.mac?)))
                        .collect();
                use xlb_bpf::neigh::NeighEvent;
                loop {
                    let events = match watch.next(Duration::from_secs(1)) {
                        Ok(e) => e,
                        Err(e) => {
                            tracing::warn!("watching neighbours: {e}");
                            std::thread::sleep(Duration::from_secs(1));
                            Vec::new()
                        }
                    };
                    let Some(net) = weak.upgrade() else { return };
                    for ev in events {
                        let changed = match ev {
                            NeighEvent::Changed(n) if served.contains(&n.ifindex) => {
                                match n.mac {
                                    Some(mac) => known
                                        .insert((n.addr, n.ifindex), mac)
                                        .is_some_and(|old| old != mac),
                                    None => false,
                                }
                            }
                            NeighEvent::Removed(n) if served.contains(&n.ifindex) => {
                                known.remove(&(n.addr, n.ifindex));
                                net.cache
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .contains_key(&n.addr)
                            }
                            _ => false,
                        };
                        if changed {
                            tracing::info!(?ev, "neighbour changed; refreshing next hops");
                            net.changed.store(true, Ordering::Relaxed);
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("not watching neighbours: {e}");
        }
    }

    /// Forget every cached next hop (they are resolved again on the next build,
    /// which picks up changed MAC addresses).
    pub fn forget(&self) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl NetEnv for KernelNet {
    fn ports(&self) -> Vec<PortSpec> {
        self.ports.clone()
    }

    fn next_hops(&self, addrs: &[IpAddr]) -> Vec<(IpAddr, NextHop)> {
        *self.wanted.lock().unwrap_or_else(|e| e.into_inner()) = addrs.to_vec();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let unknown: Vec<IpAddr> = addrs
            .iter()
            .filter(|a| !cache.contains_key(a))
            .copied()
            .collect();
        if !unknown.is_empty() {
            // Resolve new addresses now (the kernel sends ARP/NDP), waiting a
            // little so the first table already reaches them.
            match netinfo::next_hops(&unknown, &self.ports, Duration::from_millis(500)) {
                Ok(found) => {
                    for (a, nh) in found {
                        cache.insert(a, nh);
                    }
                }
                Err(e) => tracing::warn!("resolving next hops: {e}"),
            }
            for a in &unknown {
                if !cache.contains_key(a) {
                    tracing::warn!(addr = %a, "no next hop yet; its packets drop as no_neighbor");
                }
            }
        }
        addrs
            .iter()
            .filter_map(|a| cache.get(a).map(|nh| (*a, *nh)))
            .collect()
    }
}
