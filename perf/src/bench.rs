//! The side-by-side benchmark: one namespaced topology, one traffic pattern
//! (UDP 64 B, 1024 flows, as fast as the generator goes), several
//! contenders on the same core placement, repetitions interleaved so drift
//! hits every contender alike.
//!
//! Topologies (all namespaces and veths owned by a [`Lab`], removed on drop),
//! see [`Topology`]. `bridged`, the max-rate runs' default (LAB-NOTES' lab):
//! ```text
//!  cl: c0 10.98.0.2 ── l0 10.98.0.1 :lb: l1 10.98.1.1 ── p0 :br: br0 ─┬ p1 ── b0 10.98.1.11 :b0
//!      (xlb-pktgen TX)     (contender)                  (bridge)      ├ p2 ── b1 10.98.1.12 :b1
//!                                                                     └ p3 ── b2 10.98.1.13 :b2
//!                                               (each backend's kernel counts and drops at ingress)
//! ```
//! `direct`, also where the paced latency runs go:
//! ```text
//!  cl: c0 10.98.0.2 ── l0 10.98.0.1 :lb: l1 10.98.1.1 ── b0 10.98.1.2 :be
//!      (xlb-pktgen TX)     (contender)                      + backends .11 .12 .13
//!                                                           (xlb-pktgen RX, AF_XDP)
//! ```
//! Contenders: `xlb` (the real `Pipeline`, DNAT, Maglev over three backends,
//! under the xlb-bpf `Runtime`), `fwd` (a trivial `Processor` under the same
//! Runtime: hash → rewrite MACs and destination → TX, no conntrack, no
//! lookup), `nft` (kernel nftables DNAT with conntrack).
//!
//! Every contender runs in each [`Placement`]: on veth the receiving side's
//! NAPI runs in the sender's softirq, so by default part of the balancer's
//! work lands on the generator's core. `owned` keeps all of it on the
//! balancer's core, as a NIC's interrupts would; `shared` is veth's default.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use xlb_bpf::{Runtime, RuntimeConfig, XdpMode};
use xlb_dataplane::conntrack::{Conntrack, ConntrackConfig};
use xlb_dataplane::drop::DropReason;
use xlb_dataplane::frame::{Frame, Verdict};
use xlb_dataplane::net::{fmix64, Ip16, MacAddr};
use xlb_dataplane::pipeline::{Pipeline, Processor};
use xlb_dataplane::tables::{
    EndpointSpec, EndpointState, L4Proto, NatMode, Selection, ServiceKey, ServiceSpec, Tables,
    TablesHandle, TablesSpec,
};
use xlb_dataplane::wire::checksum::{udp_nonzero, update_bytes};

use crate::engine::{RxMode, Summary};
use crate::lab::{self, enter_netns, ns_sh, sh, Lab};
use crate::pktgen::{self, RxOpts, TxOpts};
use crate::procs::{loadavg, net_rx_softirqs, CpuShare, CpuTimes};

/// The service address.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 98, 9, 100);
/// The service port.
pub const VIP_PORT: u16 = 7;
/// The backends (all on the sink namespace's interface).
pub const BACKENDS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 98, 1, 11),
    Ipv4Addr::new(10, 98, 1, 12),
    Ipv4Addr::new(10, 98, 1, 13),
];
pub(crate) const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 2);
pub(crate) const LB_FRONT: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 1);
pub(crate) const LB_BACK: Ipv4Addr = Ipv4Addr::new(10, 98, 1, 1);
const SINK: Ipv4Addr = Ipv4Addr::new(10, 98, 1, 2);

/// A contender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Contender {
    /// xlb's Pipeline under the xlb-bpf Runtime.
    Xlb,
    /// A minimal AF_XDP forwarder under the same Runtime.
    Fwd,
    /// Kernel nftables DNAT with conntrack.
    Nft,
}

impl Contender {
    /// Display name.
    pub fn label(self) -> &'static str {
        match self {
            Contender::Xlb => "xlb (Pipeline, DNAT, AF_XDP)",
            Contender::Fwd => "minimal AF_XDP forwarder",
            Contender::Nft => "nftables DNAT + conntrack",
        }
    }
    /// Short name (tables, chart).
    pub fn short(self) -> &'static str {
        match self {
            Contender::Xlb => "xlb",
            Contender::Fwd => "fwd",
            Contender::Nft => "nft",
        }
    }
}

/// Where the balancer's receive work runs (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// All of the balancer's work on its own core, as with a NIC whose
    /// interrupts go to that core. AF_XDP workers run as `xlb run
    /// --busy-poll` does: preferred busy polling plus NAPI deferral on the
    /// balancer's veths. veth gives AF_XDP sockets no NAPI id, so the busy
    /// polling itself cannot engage; the deferral keeps the ingress NAPI on
    /// the core where its timer fires (the balancer's, as each run's NET_RX
    /// counts show), at the cost of up to `gro_flush_timeout` of latency. The
    /// kernel contender's ingress NAPI is threaded and its kthread pinned to
    /// the balancer's core.
    Owned,
    /// veth's default: the balancer's ingress receive (XDP and the copy into
    /// the UMEM, or the kernel's veth receive) runs in the generator's
    /// softirq on the generator's core; AF_XDP workers spin while traffic
    /// flows and block in poll() when idle; nftables gets RPS to the
    /// balancer's core, its best setting in LAB-NOTES.
    Shared,
}

impl Placement {
    /// Short name (tables, chart).
    pub fn short(self) -> &'static str {
        match self {
            Placement::Owned => "owned",
            Placement::Shared => "shared",
        }
    }
}

/// How the backends are wired and what counts their packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Topology {
    /// LAB-NOTES' lab, where its reference rates were measured: the
    /// balancer's backend-side veth goes to a bridge namespace (static FDB
    /// entries, bridge netfilter off) with three backend namespaces, one
    /// backend each. Each backend's kernel counts the service's datagrams at
    /// its interface's ingress (an nftables netdev counter) and drops them,
    /// as a real server's NIC would take them off the wire. No stamps: max
    /// rate only; the paced latency runs use `direct`.
    Bridged,
    /// One backend namespace holding the three backend addresses, where
    /// xlb-pktgen's AF_XDP receiver checks every frame's stamp, order and
    /// checksum. Its receive (XDP and the copy into its UMEM) runs in the
    /// balancer's transmit on the balancer's core, its thread on the
    /// receiver CPU: both cost the balancer and the generator capacity that a
    /// separate backend machine would not.
    Direct,
}

impl Topology {
    /// Short name.
    pub fn short(self) -> &'static str {
        match self {
            Topology::Bridged => "bridged",
            Topology::Direct => "direct",
        }
    }
}

/// Harness options.
#[derive(Debug, Clone)]
pub struct BenchOpts {
    /// Repetitions per contender.
    pub reps: u32,
    /// Seconds of traffic per run.
    pub secs: f64,
    /// Contenders, in run order within a repetition.
    pub contenders: Vec<Contender>,
    /// Generator CPU.
    pub gen_cpu: usize,
    /// Balancer CPU (AF_XDP worker; RPS target for the kernel path).
    pub lb_cpu: usize,
    /// Receiver CPU.
    pub rx_cpu: usize,
    /// Placements, each runs every contender (the first also hosts the
    /// fixed-rate latency runs).
    pub placements: Vec<Placement>,
    /// Topology of the max-rate runs (the paced runs are always `direct`).
    pub topology: Topology,
    /// Flows.
    pub flows: u32,
    /// AF_XDP contenders: RX batch (the Runtime's `batch`).
    pub batch: usize,
    /// AF_XDP contenders: UMEM frames per worker.
    pub frames: u32,
    /// Nice value for the generator, receiver and AF_XDP workers (`None` = leave).
    pub nice: Option<i32>,
    /// Output directory (Markdown, JSON, SVG, PNG).
    pub out: std::path::PathBuf,
    /// After the max-rate runs, one run per contender and repetition at this
    /// fixed rate (packets/s) for latency (`None` = skip).
    pub lat_rate: Option<u64>,
    /// Print progress.
    pub verbose: bool,
}

/// One run of one contender.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Placement.
    pub placement: Placement,
    /// Contender.
    pub contender: Contender,
    /// Repetition (0-based).
    pub rep: u32,
    /// Paced at this rate for latency (`None`: as fast as possible).
    pub paced_pps: Option<u64>,
    /// Offered Mpps (generator).
    pub offered_mpps: f64,
    /// Delivered Mpps (stamped packets at the backends / generator run time).
    pub delivered_mpps: f64,
    /// Loss fraction.
    pub loss: f64,
    /// Reordered packets.
    pub reordered: u64,
    /// Bad checksums seen at the backends.
    pub bad_checksum: u64,
    /// `bridged`: datagrams counted at each backend, in [`BACKENDS`] order
    /// (empty in `direct`).
    pub per_backend: Vec<u64>,
    /// Latency p50 / p99 (µs).
    pub p50_us: f64,
    /// p99 (µs).
    pub p99_us: f64,
    /// The generator's CPU.
    pub gen_cpu: Vec<i32>,
    /// The receiver's CPU.
    pub rx_cpu: Vec<i32>,
    /// CPUs the balancer's worker threads were seen on (AF_XDP contenders).
    pub worker_cpus: Vec<i32>,
    /// NET_RX softirqs per CPU during the run (where NAPI/forwarding ran).
    pub net_rx_softirqs: Vec<u64>,
    /// Each CPU's time over the run: which core was saturated.
    pub cpus: Vec<CpuShare>,
    /// 1-minute load average before the run.
    pub loadavg: f64,
    /// The full pktgen summary.
    pub pktgen: Summary,
}

/// Median, min, max of one metric.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Spread {
    /// Median.
    pub median: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
}

/// Median/min/max of `v` (empty → zeros).
pub fn spread(v: &[f64]) -> Spread {
    if v.is_empty() {
        return Spread::default();
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Spread {
        median,
        min: s[0],
        max: s[n - 1],
    }
}

/// Per-contender summary.
#[derive(Debug, Clone, Serialize)]
pub struct ContenderSummary {
    /// Placement.
    pub placement: Placement,
    /// Contender.
    pub contender: Contender,
    /// Offered Mpps.
    pub offered: Spread,
    /// Delivered Mpps.
    pub delivered: Spread,
    /// Median loss.
    pub loss: f64,
    /// Median delivered of this contender ÷ xlb's (same placement).
    pub ratio_to_xlb: Option<f64>,
    /// xlb's median delivered ÷ this contender's (same placement).
    pub xlb_over_this: Option<f64>,
    /// Paced runs: median p50 latency (µs).
    pub lat_p50_us: f64,
    /// Paced runs: median p99 latency (µs).
    pub lat_p99_us: f64,
    /// Paced runs: median loss.
    pub lat_loss: f64,
}

/// Everything a bench run produced.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// When (UTC, from `date -u`).
    pub when: String,
    /// The command line.
    pub command: String,
    /// Kernel.
    pub kernel: String,
    /// Topology description.
    pub topology: String,
    /// Placement description.
    pub placement: String,
    /// Load average at start and end.
    pub loadavg: (f64, f64),
    /// Per contender.
    pub summary: Vec<ContenderSummary>,
    /// Every run.
    pub runs: Vec<RunResult>,
}

// ---------------------------------------------------------------- topology

pub(crate) struct Topo {
    pub(crate) lab: Lab,
    pub(crate) cl: String,
    pub(crate) lb: String,
    /// The (first) backend namespace and its interface.
    pub(crate) be: String,
    pub(crate) c0: String,
    pub(crate) l0: String,
    pub(crate) l1: String,
    pub(crate) b0: String,
    /// `bridged`: every backend's (namespace, interface), each counting the
    /// service's datagrams in [`SINK_TABLE`]; empty in `direct`, where
    /// xlb-pktgen receives on `b0`.
    pub(crate) sinks: Vec<(String, String)>,
}

/// The backends' nftables netdev table (`bridged`), its counter named
/// `delivered`.
const SINK_TABLE: &str = "xlbsink";

/// Threaded NAPI on `iface` in `ns`, its kthread pinned to `cpu` (and
/// reniced): GRO on keeps the veth's NAPI instance alive, so the kthread
/// exists before any XDP program is attached.
fn thread_napi(ns: &str, iface: &str, cpu: usize, nice: Option<i32>) -> Result<Vec<i32>> {
    ns_sh(ns, &["ethtool", "-K", iface, "gro", "on"])?;
    ns_sh(
        ns,
        &[
            "sh",
            "-c",
            &format!("echo 1 > /sys/class/net/{iface}/threaded"),
        ],
    )?;
    // Kthread names are "napi/<iface>-<id>", cut at 15 characters.
    let want: String = format!("napi/{iface}").chars().take(15).collect();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim_end().starts_with(&want) {
            sh(&["taskset", "-pc", &cpu.to_string(), &pid.to_string()])?;
            if let Some(n) = nice {
                lab::renice(pid, n);
            }
            pids.push(pid);
        }
    }
    if pids.is_empty() {
        bail!("no NAPI kthread for {iface} after enabling threaded NAPI");
    }
    Ok(pids)
}

/// Undo [`thread_napi`]: NAPI back in the sender's softirq, GRO off again.
fn unthread_napi(ns: &str, iface: &str) -> Result<()> {
    ns_sh(
        ns,
        &[
            "sh",
            "-c",
            &format!("echo 0 > /sys/class/net/{iface}/threaded"),
        ],
    )?;
    ns_sh(ns, &["ethtool", "-K", iface, "gro", "off"])?;
    Ok(())
}

/// Both topologies' front: namespaces `cl` and `lb`, the client's veth to
/// the balancer, its route to the VIP, forwarding on in the balancer.
/// Returns (cl, lb, c0, l0).
fn front(lab: &mut Lab) -> Result<(String, String, String, String)> {
    let cl = lab.ns("cl")?;
    let lb = lab.ns("lb")?;
    let (c0, l0) = (lab.ifname("c0"), lab.ifname("l0"));
    lab::veth(
        &cl,
        &c0,
        &format!("{CLIENT}/24"),
        &lb,
        &l0,
        &format!("{LB_FRONT}/24"),
        1,
    )?;
    sh(&[
        "ip",
        "-n",
        &cl,
        "route",
        "add",
        &format!("{VIP}/32"),
        "via",
        &LB_FRONT.to_string(),
    ])?;
    ns_sh(&lb, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    Ok((cl, lb, c0, l0))
}

/// A backend namespace's address on `iface` and its route back to the
/// client's subnet through the balancer.
fn backend_addr(ns: &str, iface: &str, addr: Ipv4Addr, route: bool) -> Result<()> {
    sh(&[
        "ip",
        "-n",
        ns,
        "addr",
        "add",
        &format!("{addr}/24"),
        "dev",
        iface,
    ])?;
    if route {
        sh(&[
            "ip",
            "-n",
            ns,
            "route",
            "add",
            "10.98.0.0/24",
            "via",
            &LB_BACK.to_string(),
        ])?;
    }
    Ok(())
}

/// The client — balancer — backends topology, its namespaces tagged `what`.
pub(crate) fn build_topology(what: &str) -> Result<Topo> {
    let mut lab = Lab::new(what)?;
    let (cl, lb, c0, l0) = front(&mut lab)?;
    let be = lab.ns("be")?;
    let (l1, b0) = (lab.ifname("l1"), lab.ifname("b0"));
    lab::veth(
        &lb,
        &l1,
        &format!("{LB_BACK}/24"),
        &be,
        &b0,
        &format!("{SINK}/24"),
        1,
    )?;
    for (i, b) in BACKENDS.into_iter().enumerate() {
        backend_addr(&be, &b0, b, i == 0)?;
    }
    // Let the balancer learn the backends (and they it) before any contender.
    let mac = lab::mac_of(&be, &b0)?;
    for b in BACKENDS {
        lab::neigh_permanent(&lb, &b.to_string(), &mac, &l1)?;
    }
    Ok(Topo {
        lab,
        cl,
        lb,
        be,
        c0,
        l0,
        l1,
        b0,
        sinks: Vec::new(),
    })
}

/// The client — balancer — bridge — three backends topology (see
/// [`Topology::Bridged`]), its namespaces tagged `what`.
pub(crate) fn build_bridged(what: &str) -> Result<Topo> {
    let mut lab = Lab::new(what)?;
    let (cl, lb, c0, l0) = front(&mut lab)?;
    let br = lab.ns("br")?;
    let (l1, p0) = (lab.ifname("l1"), lab.ifname("p0"));
    lab::veth_pair(&lb, &l1, &br, &p0, 1)?;
    sh(&[
        "ip",
        "-n",
        &lb,
        "addr",
        "add",
        &format!("{LB_BACK}/24"),
        "dev",
        &l1,
    ])?;
    ns_sh(&br, &["ip", "link", "add", "br0", "type", "bridge"])?;
    ns_sh(&br, &["ip", "link", "set", "br0", "up"])?;
    // The bridge's netfilter hooks are built into this kernel (LAB-NOTES);
    // the sysctls exist only once br_netfilter is loaded.
    for k in ["iptables", "ip6tables", "arptables"] {
        let _ = ns_sh(
            &br,
            &["sysctl", "-qw", &format!("net.bridge.bridge-nf-call-{k}=0")],
        );
    }
    let port = |port: &str, mac: &str| -> Result<()> {
        ns_sh(&br, &["ip", "link", "set", port, "master", "br0"])?;
        ns_sh(
            &br,
            &[
                "bridge", "fdb", "replace", mac, "dev", port, "master", "static",
            ],
        )?;
        Ok(())
    };
    port(&p0, &lab::mac_of(&lb, &l1)?)?;
    let mut sinks = Vec::new();
    for (i, b) in BACKENDS.into_iter().enumerate() {
        let ns = lab.ns(&format!("b{i}"))?;
        let (p, bi) = (
            lab.ifname(&format!("p{}", i + 1)),
            lab.ifname(&format!("b{i}")),
        );
        lab::veth_pair(&br, &p, &ns, &bi, 1)?;
        backend_addr(&ns, &bi, b, true)?;
        // Backends that only receive are never learned: without static
        // entries the bridge floods every frame to all of them (LAB-NOTES).
        let mac = lab::mac_of(&ns, &bi)?;
        port(&p, &mac)?;
        lab::load_nft(
            &ns,
            "sink",
            &format!(
                "table netdev {SINK_TABLE} {{\n  counter delivered {{ }}\n  chain ingress {{\n    type filter hook ingress device \"{bi}\" priority 0; policy accept;\n    udp dport {VIP_PORT} counter name \"delivered\" drop\n  }}\n}}\n"
            ),
        )?;
        lab::neigh_permanent(&lb, &b.to_string(), &mac, &l1)?;
        sinks.push((ns, bi));
    }
    let (be, b0) = sinks[0].clone();
    Ok(Topo {
        lab,
        cl,
        lb,
        be,
        c0,
        l0,
        l1,
        b0,
        sinks,
    })
}

/// Datagrams counted so far at each backend of a `bridged` topology.
fn delivered_per_backend(t: &Topo) -> Result<Vec<u64>> {
    t.sinks
        .iter()
        .map(|(ns, _)| lab::nft_counter(ns, "netdev", SINK_TABLE, "delivered"))
        .collect()
}

// ---------------------------------------------------------------- contenders

/// The minimal forwarder: for UDP to VIP:port, hash the source, pick a
/// backend, rewrite the destination address (incremental checksums), set
/// the MACs, transmit. No conntrack, no service lookup.
#[derive(Debug)]
pub struct MinFwd {
    backends: Vec<Ipv4Addr>,
    /// Per backend: (dst MAC, src MAC, port), refreshed per tables generation.
    hops: Vec<Option<(MacAddr, MacAddr, u16)>>,
    gen: u64,
}

impl MinFwd {
    /// A forwarder to `backends`.
    pub fn new(backends: &[Ipv4Addr]) -> MinFwd {
        MinFwd {
            backends: backends.to_vec(),
            hops: Vec::new(),
            gen: u64::MAX,
        }
    }
}

impl Processor for MinFwd {
    fn process_batch(
        &mut self,
        tables: &Tables,
        _now_ns: u64,
        frames: &mut [Frame<'_>],
        verdicts: &mut [Verdict],
    ) {
        if tables.generation != self.gen {
            self.gen = tables.generation;
            self.hops = self
                .backends
                .iter()
                .map(|b| {
                    let nh = tables.next_hops.get(&Ip16::from(IpAddr::V4(*b)))?;
                    let port = tables.port(nh.port)?;
                    Some((nh.mac, port.mac, nh.port))
                })
                .collect();
        }
        let nb = self.backends.len().max(1) as u64;
        for (f, v) in frames.iter_mut().zip(verdicts.iter_mut()) {
            let p = f.data_mut();
            // Ethernet + IPv4 without options + UDP to VIP:port.
            if p.len() < 42
                || p[12..14] != [0x08, 0x00]
                || p[14] != 0x45
                || p[23] != 17
                || p[30..34] != VIP.octets()
                || p[36..38] != VIP_PORT.to_be_bytes()
            {
                *v = Verdict::Drop(DropReason::NoService);
                continue;
            }
            let h = fmix64(
                u64::from(u32::from_be_bytes([p[26], p[27], p[28], p[29]])) << 16
                    | u64::from(u16::from_be_bytes([p[34], p[35]])),
            );
            let i = (h % nb) as usize;
            let Some((dmac, smac, port)) = self.hops.get(i).copied().flatten() else {
                *v = Verdict::Drop(DropReason::NoNeighbor);
                continue;
            };
            let new = self.backends[i].octets();
            let old = [p[30], p[31], p[32], p[33]];
            let ip_sum = u16::from_be_bytes([p[24], p[25]]);
            p[24..26].copy_from_slice(&update_bytes(ip_sum, &old, &new).to_be_bytes());
            let udp_sum = u16::from_be_bytes([p[40], p[41]]);
            if udp_sum != 0 {
                let c = udp_nonzero(update_bytes(udp_sum, &old, &new));
                p[40..42].copy_from_slice(&c.to_be_bytes());
            }
            p[30..34].copy_from_slice(&new);
            p[0..6].copy_from_slice(&dmac.0);
            p[6..12].copy_from_slice(&smac.0);
            *v = Verdict::Tx(port);
        }
    }
}

fn service() -> ServiceSpec {
    ServiceSpec {
        key: ServiceKey {
            vip: IpAddr::V4(VIP),
            proto: L4Proto::Udp,
            port_min: VIP_PORT,
            port_max: VIP_PORT,
            block: 0,
        },
        sel: Selection::Hash,
        mode: NatMode::Dnat,
        allowed_sources: vec![],
        endpoints: BACKENDS
            .iter()
            .map(|b| EndpointSpec {
                addr: IpAddr::V4(*b),
                port: VIP_PORT,
                weight: 1,
                state: EndpointState::Active,
            })
            .collect(),
        inactive_timeout_s: 60,
        dsr_ipip: false,
        name: "bench-udp".into(),
    }
}

/// A running AF_XDP contender: a thread in the balancer namespace holds the
/// Runtime until told to stop (start, sync and stop in one namespace).
struct XskContender {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<Result<String>>,
    worker_cpus: Arc<std::sync::Mutex<Vec<i32>>>,
}

fn start_xsk(t: &Topo, which: Contender, o: &BenchOpts, busy: bool) -> Result<XskContender> {
    let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let (lb, l0, l1) = (t.lb.clone(), t.l0.clone(), t.l1.clone());
    let (cpu, batch, frames) = (o.lb_cpu, o.batch, o.frames);
    let worker_cpus = Arc::new(std::sync::Mutex::new(Vec::new()));
    let thread = std::thread::Builder::new()
        .name(format!("bench-{}", which.short()))
        .spawn(move || -> Result<String> {
            let started = (|| -> Result<(Runtime, TablesHandle)> {
                enter_netns(&lb)?;
                let handle = TablesHandle::new();
                handle.publish(Tables::build(
                    TablesSpec {
                        services: vec![service()],
                        ..Default::default()
                    },
                    &handle.current(),
                )?);
                let cfg = RuntimeConfig {
                    ifaces: vec![l0.clone(), l1.clone()],
                    queues: Some(1),
                    cores: Some(vec![cpu]),
                    xdp_mode: XdpMode::Native,
                    busy_poll: busy,
                    batch,
                    frame_count: frames,
                };
                let ct = Arc::new(Conntrack::new(1, ConntrackConfig::default()));
                let rt = Runtime::start(cfg, handle.clone(), |w| match which {
                    Contender::Fwd => Box::new(MinFwd::new(&BACKENDS)),
                    _ => Box::new(Pipeline::new(w, 1, &ct)),
                })?;
                let ports = rt.port_specs();
                let dsts: Vec<IpAddr> = BACKENDS.iter().map(|b| IpAddr::V4(*b)).collect();
                let hops = xlb_bpf::netinfo::next_hops(&dsts, &ports, Duration::from_secs(3))?;
                if hops.len() != BACKENDS.len() {
                    bail!(
                        "only {} of {} backend next hops resolved",
                        hops.len(),
                        BACKENDS.len()
                    );
                }
                let tables = Tables::build(
                    TablesSpec {
                        services: vec![service()],
                        next_hops: hops,
                        ports,
                        ..Default::default()
                    },
                    &handle.current(),
                )?;
                rt.publish(&handle, tables)?;
                Ok((rt, handle))
            })();
            let (rt, _handle) = match started {
                Ok(v) => {
                    let _ = ready_tx.send(Ok(()));
                    v
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    let _ = ready_tx.send(Err(e));
                    return Err(anyhow!(msg));
                }
            };
            // Bounded: the harness always sends stop; 15 minutes is the backstop.
            let _ = stop_rx.recv_timeout(Duration::from_secs(900));
            let st = rt.stats();
            rt.stop()?;
            Ok(format!("{:?}", st.workers))
        })
        .context("spawning the contender thread")?;
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| anyhow!("{} did not start in 30 s", which.short()))??;
    Ok(XskContender {
        stop: stop_tx,
        thread,
        worker_cpus,
    })
}

fn nft_ruleset() -> String {
    let [a, b, c] = BACKENDS;
    format!(
        "table ip xlbbench {{\n  chain pre {{\n    type nat hook prerouting priority dstnat; policy accept;\n    ip daddr {VIP} udp dport {VIP_PORT} dnat to jhash ip saddr . udp sport mod 3 map {{ 0 : {a}, 1 : {b}, 2 : {c} }}\n  }}\n}}\n"
    )
}

/// Preferred busy polling's device settings on the balancer's veths (see
/// `xlb_bpf::napi`; the contender thread cannot write them itself because
/// /sys shows the host's namespace). veth's sockets get no NAPI id, so busy
/// polling does not engage; the deferral timer then runs the ingress NAPI on
/// the core where it was armed, the balancer's (see [`Placement::Owned`]).
/// Off again for the kernel contender.
fn napi_defer(t: &Topo, on: bool) -> Result<()> {
    use xlb_bpf::napi::{DEFER_HARD_IRQS, GRO_FLUSH_TIMEOUT_NS};
    let (defer, timeout) = if on {
        (DEFER_HARD_IRQS, GRO_FLUSH_TIMEOUT_NS)
    } else {
        (0, 0)
    };
    for iface in [&t.l0, &t.l1] {
        let d = format!("/sys/class/net/{iface}");
        ns_sh(
            &t.lb,
            &[
                "sh",
                "-c",
                &format!("echo {defer} > {d}/napi_defer_hard_irqs && echo {timeout} > {d}/gro_flush_timeout"),
            ],
        )?;
    }
    Ok(())
}

fn set_rps(t: &Topo, cpus_mask: &str) -> Result<()> {
    let path = format!("/sys/class/net/{}/queues/rx-0/rps_cpus", t.l0);
    ns_sh(&t.lb, &["sh", "-c", &format!("echo {cpus_mask} > {path}")])?;
    Ok(())
}

/// Load the DNAT rules and set up `placement`. Returns the balancer CPU's
/// ksoftirqd and its previous nice when it was reniced (for [`stop_nft`]).
fn start_nft(t: &Topo, o: &BenchOpts, placement: Placement) -> Result<Option<(i32, i32)>> {
    let f = std::env::temp_dir().join(format!("xlbbench-{}.nft", std::process::id()));
    std::fs::write(&f, nft_ruleset())?;
    let r = ns_sh(&t.lb, &["nft", "-f", &f.to_string_lossy()]);
    let _ = std::fs::remove_file(&f);
    r.context("loading the nftables DNAT rules (is nftables installed? scripts/deps.sh)")?;
    match placement {
        // The whole kernel path runs in the ingress NAPI kthread on lb_cpu,
        // at the harness's nice.
        Placement::Owned => {
            thread_napi(&t.lb, &t.l0, o.lb_cpu, o.nice)?;
            Ok(None)
        }
        // RPS runs it in NET_RX softirqs on lb_cpu, which the kernel hands to
        // ksoftirqd (nice 0) under load; the AF_XDP workers run at the
        // harness's nice, so ksoftirqd gets it too for the run.
        Placement::Shared => {
            set_rps(t, &format!("{:x}", 1u64 << o.lb_cpu))?;
            let reniced = o.nice.and_then(|n| {
                let (pid, was) = lab::ksoftirqd(o.lb_cpu)?;
                lab::renice(pid, n).then_some((pid, was))
            });
            Ok(reniced)
        }
    }
}

fn stop_nft(t: &Topo, placement: Placement, ksoftirqd: Option<(i32, i32)>) -> Result<()> {
    if let Some((pid, was)) = ksoftirqd {
        lab::renice(pid, was);
    }
    match placement {
        Placement::Owned => unthread_napi(&t.lb, &t.l0)?,
        Placement::Shared => set_rps(t, "0")?,
    }
    ns_sh(&t.lb, &["nft", "delete", "table", "ip", "xlbbench"])?;
    Ok(())
}

// ---------------------------------------------------------------- sampling

/// CPUs of this process's threads named `xlb-worker-*` right now.
fn worker_cpus() -> Vec<i32> {
    let mut v = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return v;
    };
    for e in dir.flatten() {
        let p = e.path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        if !comm.starts_with("xlb-worker") {
            continue;
        }
        let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
        // Field 39 (processor), counted after the ")" that ends the name.
        if let Some(rest) = stat.rsplit_once(')').map(|x| x.1) {
            if let Some(cpu) = rest.split_whitespace().nth(36).and_then(|c| c.parse().ok()) {
                v.push(cpu);
            }
        }
    }
    v
}

// ---------------------------------------------------------------- runs

fn one_run(
    t: &Topo,
    o: &BenchOpts,
    placement: Placement,
    which: Contender,
    rep: u32,
    paced: Option<u64>,
) -> Result<RunResult> {
    let load = loadavg();
    let mut xsk = None;
    let mut ksoftirqd = None;
    let owned = placement == Placement::Owned;
    match which {
        Contender::Xlb | Contender::Fwd => {
            if owned {
                napi_defer(t, true)?;
            }
            xsk = Some(start_xsk(t, which, o, owned)?);
            if let Some(n) = o.nice {
                for tid in lab::threads_named("xlb-worker") {
                    lab::renice(tid, n);
                }
            }
        }
        Contender::Nft => ksoftirqd = start_nft(t, o, placement)?,
    }
    let lb_mac: MacAddr = lab::mac_of(&t.lb, &t.l0)?
        .parse()
        .map_err(|_| anyhow!("bad MAC of {}", t.l0))?;
    let mut tx = TxOpts::new(&t.c0, SocketAddr::from((VIP, VIP_PORT)));
    tx.netns = Some(t.cl.clone());
    tx.dst_mac = Some(lb_mac);
    tx.flows = o.flows;
    tx.duration = Duration::from_secs_f64(o.secs);
    tx.count = 200_000_000;
    tx.rate = paced;
    tx.cpus = vec![o.gen_cpu];
    tx.nice = o.nice;
    let mut rx = RxOpts::new(&t.b0);
    rx.netns = Some(t.be.clone());
    rx.mode = RxMode::Xdp;
    rx.addrs = BACKENDS.iter().map(|b| IpAddr::V4(*b)).collect();
    rx.cpus = vec![o.rx_cpu];
    rx.nice = o.nice;
    rx.linger = Duration::from_millis(300);
    let soft0 = net_rx_softirqs();
    // Sample where the workers run, half-way through the traffic.
    let sampler = xsk.as_ref().map(|x| {
        let slot = x.worker_cpus.clone();
        let at = Duration::from_secs_f64(o.secs / 2.0 + 0.5);
        std::thread::spawn(move || {
            std::thread::sleep(at);
            if let Ok(mut s) = slot.lock() {
                *s = worker_cpus();
            }
        })
    });
    // `bridged`: the backends' kernels count; `direct`: xlb-pktgen receives.
    let counted0 = if t.sinks.is_empty() {
        None
    } else {
        Some(delivered_per_backend(t))
    };
    let cpu0 = CpuTimes::now();
    let res = pktgen::run(Some(&tx), counted0.is_none().then_some(&rx), o.verbose);
    let counted = counted0.map(|c0| -> Result<Vec<u64>> {
        let c0 = c0?;
        std::thread::sleep(rx.linger);
        let c1 = delivered_per_backend(t)?;
        Ok(c1
            .iter()
            .zip(&c0)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect())
    });
    let soft1 = net_rx_softirqs();
    let cpus = CpuTimes::now().since(&cpu0);
    if let Some(h) = sampler {
        let _ = h.join();
    }
    let mut wcpus = Vec::new();
    let mut stop_err = None;
    if let Some(x) = xsk {
        wcpus = x.worker_cpus.lock().map(|v| v.clone()).unwrap_or_default();
        let _ = x.stop.send(());
        match x.thread.join() {
            Ok(Ok(stats)) => {
                if o.verbose {
                    eprintln!("  {} worker counters: {stats}", which.short());
                }
            }
            Ok(Err(e)) => stop_err = Some(e),
            Err(_) => stop_err = Some(anyhow!("contender thread panicked")),
        }
        if owned {
            napi_defer(t, false)?;
        }
    } else {
        stop_nft(t, placement, ksoftirqd)?;
    }
    let sum = res?;
    if let Some(e) = stop_err {
        return Err(e);
    }
    let txs = sum.tx.clone().unwrap_or_default();
    let rxs = sum.rx.clone().unwrap_or_default();
    let loss = sum.loss.unwrap_or_default();
    let (delivered_mpps, loss_ratio, per_backend) = match counted.transpose()? {
        Some(per) => {
            let n: u64 = per.iter().sum();
            let mpps = if txs.secs > 0.0 {
                n as f64 / txs.secs / 1e6
            } else {
                0.0
            };
            let lost = if txs.packets > 0 {
                (1.0 - n as f64 / txs.packets as f64).max(0.0)
            } else {
                0.0
            };
            (mpps, lost, per)
        }
        None => (rxs.pps / 1e6, loss.loss_ratio(), Vec::new()),
    };
    Ok(RunResult {
        placement,
        contender: which,
        rep,
        paced_pps: paced,
        offered_mpps: txs.pps / 1e6,
        delivered_mpps,
        loss: loss_ratio,
        reordered: loss.reordered,
        bad_checksum: rxs.bad_checksum,
        per_backend,
        p50_us: rxs.latency.p50_ns as f64 / 1e3,
        p99_us: rxs.latency.p99_ns as f64 / 1e3,
        gen_cpu: txs.cpus.clone(),
        rx_cpu: rxs.cpus.clone(),
        worker_cpus: wcpus,
        net_rx_softirqs: soft1
            .iter()
            .zip(soft0.iter().chain(std::iter::repeat(&0)))
            .map(|(a, b)| a.saturating_sub(*b))
            .collect(),
        cpus,
        loadavg: load,
        pktgen: sum,
    })
}

/// Run the benchmark; write the report files; return the report.
pub fn run(o: &BenchOpts, command: &str) -> Result<BenchReport> {
    if o.reps == 0 || o.secs <= 0.0 || o.secs > 60.0 {
        bail!("--reps >= 1 and --secs in (0, 60]");
    }
    if o.placements.is_empty() || o.contenders.is_empty() {
        bail!("at least one placement and one contender");
    }
    let t0 = Instant::now();
    let load0 = loadavg();
    let autogroup = o.nice.is_some_and(lab::own_autogroup);
    let topo = match o.topology {
        Topology::Bridged => build_bridged("b")?,
        Topology::Direct => build_topology("b")?,
    };
    let mut runs = Vec::new();
    let cases: Vec<(Placement, Contender)> = o
        .placements
        .iter()
        .flat_map(|&p| o.contenders.iter().map(move |&c| (p, c)))
        .collect();
    for rep in 0..o.reps {
        for &(p, c) in &cases {
            if lab::interrupted() {
                bail!("interrupted; namespaces removed");
            }
            if o.verbose {
                eprintln!("rep {}/{}: {} ({})", rep + 1, o.reps, c.label(), p.short());
            }
            let r = one_run(&topo, o, p, c, rep, None)
                .with_context(|| format!("{} {} rep {rep}", p.short(), c.short()))?;
            if o.verbose {
                eprintln!(
                    "  offered {:.3} Mpps, delivered {:.3} Mpps, loss {:.1} %, p50 {:.0} us, gen cpu {:?}, rx cpu {:?}, workers {:?}, NET_RX softirqs/cpu {:?}",
                    r.offered_mpps,
                    r.delivered_mpps,
                    100.0 * r.loss,
                    r.p50_us,
                    r.gen_cpu,
                    r.rx_cpu,
                    r.worker_cpus,
                    r.net_rx_softirqs
                );
            }
            runs.push(r);
        }
    }
    drop(topo);
    if let Some(rate) = o.lat_rate {
        // Latency needs xlb-pktgen's stamps: the direct topology.
        let topo = build_topology("d")?;
        let p = o.placements[0];
        for rep in 0..o.reps {
            for &c in &o.contenders {
                if lab::interrupted() {
                    bail!("interrupted; namespaces removed");
                }
                let r = one_run(&topo, o, p, c, rep, Some(rate))
                    .with_context(|| format!("{} paced rep {rep}", c.short()))?;
                if o.verbose {
                    eprintln!(
                        "  {} at {rate} pps: loss {:.2} %, p50 {:.0} us, p99 {:.0} us",
                        c.short(),
                        100.0 * r.loss,
                        r.p50_us,
                        r.p99_us
                    );
                }
                runs.push(r);
            }
        }
    }
    if lab::interrupted() {
        bail!("interrupted; namespaces removed, no report written");
    }
    let mut summary = Vec::new();
    for &(p, c) in &cases {
        let mine: Vec<&RunResult> = runs
            .iter()
            .filter(|r| r.placement == p && r.contender == c && r.paced_pps.is_none())
            .collect();
        let paced: Vec<&RunResult> = runs
            .iter()
            .filter(|r| r.placement == p && r.contender == c && r.paced_pps.is_some())
            .collect();
        let pm = |g: fn(&RunResult) -> f64| {
            spread(&paced.iter().map(|r| g(r)).collect::<Vec<_>>()).median
        };
        let off: Vec<f64> = mine.iter().map(|r| r.offered_mpps).collect();
        let del: Vec<f64> = mine.iter().map(|r| r.delivered_mpps).collect();
        let loss: Vec<f64> = mine.iter().map(|r| r.loss).collect();
        summary.push(ContenderSummary {
            placement: p,
            contender: c,
            offered: spread(&off),
            delivered: spread(&del),
            loss: spread(&loss).median,
            ratio_to_xlb: None,
            xlb_over_this: None,
            lat_p50_us: pm(|r| r.p50_us),
            lat_p99_us: pm(|r| r.p99_us),
            lat_loss: pm(|r| r.loss),
        });
    }
    for &p in &o.placements {
        let Some(x) = summary
            .iter()
            .find(|s| s.placement == p && s.contender == Contender::Xlb)
            .map(|s| s.delivered.median)
        else {
            continue;
        };
        for s in summary.iter_mut().filter(|s| s.placement == p) {
            if x > 0.0 {
                s.ratio_to_xlb = Some(s.delivered.median / x);
            }
            if s.delivered.median > 0.0 {
                s.xlb_over_this = Some(x / s.delivered.median);
            }
        }
    }
    let report = BenchReport {
        when: sh(&["date", "-u", "+%Y-%m-%dT%H:%M:%SZ"])
            .unwrap_or_default()
            .trim()
            .to_string(),
        command: command.to_string(),
        kernel: sh(&["uname", "-r"]).unwrap_or_default().trim().to_string(),
        topology: match o.topology {
            Topology::Bridged => format!(
                "max-rate runs: `bridged` (LAB-NOTES' lab): client ns, balancer ns, a bridge ns (static FDB entries, bridge netfilter off) and three backend namespaces, one backend each; \
                 each backend's kernel counts the service's datagrams at its interface's ingress (nftables netdev counter) and drops them; \
                 the bridge's and the backends' receive runs in the balancer's transmit, on cpu{l}, for every contender. \
                 Paced latency runs: `direct`: one backend namespace where xlb-pktgen's AF_XDP receiver (cpu{r}) checks stamps, order and checksums",
                l = o.lb_cpu,
                r = o.rx_cpu
            ),
            Topology::Direct => format!(
                "`direct`: one backend namespace where xlb-pktgen's AF_XDP receiver, pinned to cpu{r}, checks stamps, order and checksums; \
                 its veth NAPI (XDP and the copy into its UMEM) runs in the balancer's transmit, on cpu{l}, for every contender",
                l = o.lb_cpu,
                r = o.rx_cpu
            ),
        },
        placement: format!(
            "generator (AF_XDP TX) pinned to cpu{g}; \
             AF_XDP contenders: one worker pinned to cpu{l}, batch {batch}, {frames} UMEM frames; \
             placement `owned`: AF_XDP workers busy-poll with SO_PREFER_BUSY_POLL and napi_defer_hard_irqs {d} / gro_flush_timeout {gt} ns on the balancer's veths (veth gives the sockets no NAPI id, so the ingress NAPI runs from the deferral timer on cpu{l}, not in the worker's syscalls); \
             nftables: threaded NAPI on the balancer's ingress veth (GRO on, as threading needs), kthread pinned to cpu{l}; \
             placement `shared`: the balancer's ingress (XDP and copy into the UMEM, or the kernel's veth receive) runs in the generator's softirq on cpu{g}; \
             AF_XDP workers spin while traffic flows, block in poll() when idle; nftables: RPS of the ingress veth to cpu{l}, ksoftirqd/{l} at the harness's nice during its runs; \
             the NET_RX softirq counts per CPU are in each run; nice of generator, receiver and AF_XDP workers: {nice}; own scheduler autogroup at that nice: {autogroup}",
            g = o.gen_cpu,
            l = o.lb_cpu,
            batch = o.batch,
            frames = o.frames,
            d = xlb_bpf::napi::DEFER_HARD_IRQS,
            gt = xlb_bpf::napi::GRO_FLUSH_TIMEOUT_NS,
            nice = o.nice.map_or("unchanged".to_string(), |n| n.to_string()),
        ),
        loadavg: (load0, loadavg()),
        summary,
        runs,
    };
    write_outputs(o, &report)?;
    if o.verbose {
        eprintln!("bench took {:.0} s", t0.elapsed().as_secs_f64());
    }
    Ok(report)
}

// ---------------------------------------------------------------- outputs

/// The Markdown table.
pub fn markdown(r: &BenchReport) -> String {
    let mut s = String::new();
    s += "# UDP 64-byte frames, 1024 flows: xlb vs. a minimal AF_XDP forwarder vs. nftables DNAT\n\n";
    s += &format!(
        "- when: {}\n- command: `{}`\n- kernel: {}\n- load average (1 min) at start / end: {:.2} / {:.2}\n- topology: {}\n- placement: {}\n\n",
        r.when, r.command, r.kernel, r.loadavg.0, r.loadavg.1, r.topology, r.placement
    );
    let reps = r.runs.iter().map(|x| x.rep).max().map_or(0, |m| m + 1);
    s += &format!("Median of {reps} repetition(s) (min–max in brackets); Mpps = million packets per second; ratios within one placement. Kernel forwarding drops nothing at overload: it holds the generator back through its send buffer (LAB-NOTES), so its offered rate equals its delivered rate either way; the runs' CPU columns show which core was saturated.\n\n");
    s += "| placement | contender | offered Mpps | delivered Mpps | loss | delivered ÷ xlb | xlb ÷ this |\n";
    s += "|---|---|---|---|---|---|---|\n";
    for c in &r.summary {
        let f = |x: &Spread| format!("{:.3} [{:.3}–{:.3}]", x.median, x.min, x.max);
        let o = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.2}×"));
        s += &format!(
            "| {} | {} | {} | {} | {:.1} % | {} | {} |\n",
            c.placement.short(),
            c.contender.label(),
            f(&c.offered),
            f(&c.delivered),
            100.0 * c.loss,
            o(c.ratio_to_xlb),
            o(c.xlb_over_this)
        );
    }
    if let Some(x) = r.runs.iter().find(|x| x.paced_pps.is_some()) {
        let rate = x.paced_pps.unwrap_or_default();
        s += &format!("\n## Latency at a fixed rate ({rate} packets/s, placement `{}`, topology `direct`)\n\nGenerator TX stamp to receiver RX, through each contender; median over repetitions. CDF: `udp-latency-cdf.svg`.\n\n| contender | loss | p50 µs | p99 µs |\n|---|---|---|---|\n", x.placement.short());
        for c in r.summary.iter().filter(|c| c.placement == x.placement) {
            s += &format!(
                "| {} | {:.2} % | {:.0} | {:.0} |\n",
                c.contender.label(),
                100.0 * c.lat_loss,
                c.lat_p50_us,
                c.lat_p99_us
            );
        }
    }
    s += "\n## Runs\n\n| rep | placement | contender | paced pps | offered | delivered | loss | reordered | bad csum | p50 µs | p99 µs | per backend | gen cpu | rx cpu | worker cpu | NET_RX softirqs per cpu | CPU time % | load |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for x in &r.runs {
        s += &format!(
            "| {} | {} | {} | {} | {:.3} | {:.3} | {:.1} % | {} | {} | {:.0} | {:.0} | {} | {:?} | {:?} | {:?} | {:?} | {} | {:.2} |\n",
            x.rep + 1,
            x.placement.short(),
            x.contender.short(),
            x.paced_pps.map_or("max".to_string(), |p| p.to_string()),
            x.offered_mpps,
            x.delivered_mpps,
            100.0 * x.loss,
            x.reordered,
            x.bad_checksum,
            x.p50_us,
            x.p99_us,
            if x.per_backend.is_empty() {
                "–".to_string()
            } else {
                x.per_backend
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(" / ")
            },
            x.gen_cpu,
            x.rx_cpu,
            x.worker_cpus,
            x.net_rx_softirqs,
            x.cpus
                .iter()
                .map(CpuShare::to_string)
                .collect::<Vec<_>>()
                .join("; "),
            x.loadavg
        );
    }
    s
}

fn write_outputs(o: &BenchOpts, r: &BenchReport) -> Result<()> {
    std::fs::create_dir_all(&o.out)?;
    let base = o.out.join("udp64-1024flows");
    std::fs::write(base.with_extension("md"), markdown(r))?;
    std::fs::write(
        base.with_extension("json"),
        serde_json::to_string_pretty(r)?,
    )?;
    let svg = base.with_extension("svg");
    crate::chart::bars(r, &svg)?;
    if r.runs.iter().any(|x| x.paced_pps.is_some()) {
        let series: Vec<(String, Vec<(f64, f64)>)> = r
            .summary
            .iter()
            .filter_map(|c| {
                let mut v: Vec<&RunResult> = r
                    .runs
                    .iter()
                    .filter(|x| {
                        x.placement == c.placement
                            && x.contender == c.contender
                            && x.paced_pps.is_some()
                    })
                    .collect();
                v.sort_by(|a, b| a.p50_us.total_cmp(&b.p50_us));
                let m = v.get(v.len() / 2)?;
                let cdf = &m.pktgen.rx.as_ref()?.latency_cdf;
                Some((
                    c.contender.label().to_string(),
                    cdf.iter()
                        .map(|(p, ns)| (*ns as f64 / 1e3, p / 100.0))
                        .collect(),
                ))
            })
            .collect();
        let f = o.out.join("udp-latency-cdf.svg");
        crate::chart::latency_cdf(
            "UDP 64 B latency CDF at a fixed rate (xlb-pktgen stamps)",
            &series,
            &f,
        )?;
        crate::chart::to_png(&f);
    }
    // A PNG too, when librsvg's converter is installed (scripts/deps.sh).
    let png = base.with_extension("png");
    let _ = std::process::Command::new("rsvg-convert")
        .args(["-b", "white", "-o"])
        .arg(&png)
        .arg(&svg)
        .status();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_median_min_max() {
        let s = spread(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(spread(&[1.0, 4.0]).median, 2.5);
        assert_eq!(spread(&[]).median, 0.0);
    }

    #[test]
    fn the_minimal_forwarder_rewrites_and_keeps_checksums_valid() {
        use crate::frames::l4_checksum_ok;
        use xlb_dataplane::tables::{NextHop, PortSpec};
        use xlb_dataplane::wire::build::Builder;
        let mut frame = Builder::udp(
            SocketAddr::from((CLIENT, 4000)),
            SocketAddr::from((VIP, VIP_PORT)),
        )
        .payload(&[7u8; 18])
        .to_vec()
        .expect("frame");
        let port_mac = MacAddr([2, 0, 0, 0, 0, 0x11]);
        let nh_mac = MacAddr([2, 0, 0, 0, 0, 0x22]);
        let spec = TablesSpec {
            services: vec![service()],
            next_hops: BACKENDS
                .iter()
                .map(|b| {
                    (
                        IpAddr::V4(*b),
                        NextHop {
                            mac: nh_mac,
                            port: 1,
                        },
                    )
                })
                .collect(),
            ports: vec![PortSpec {
                id: 1,
                name: "x".into(),
                mac: port_mac,
                addrs: vec![],
            }],
            ..Default::default()
        };
        let t = Tables::build(spec, &Tables::empty()).expect("tables");
        let mut fwd = MinFwd::new(&BACKENDS);
        let len = frame.len();
        let mut v = [Verdict::Pass];
        {
            let mut frames = [Frame::new(&mut frame, len, 0)];
            fwd.process_batch(&t, 0, &mut frames, &mut v);
        }
        assert_eq!(v[0], Verdict::Tx(1));
        assert!(BACKENDS.iter().any(|b| frame[30..34] == b.octets()));
        assert_eq!(frame[0..6], nh_mac.0);
        assert_eq!(frame[6..12], port_mac.0);
        assert!(l4_checksum_ok(&frame));
        let ip = etherparse::Ipv4HeaderSlice::from_slice(&frame[14..]).expect("ip");
        let h = ip.to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
    }

    #[test]
    fn the_nft_ruleset_names_every_backend() {
        let r = nft_ruleset();
        for b in BACKENDS {
            assert!(r.contains(&b.to_string()));
        }
        assert!(r.contains("dnat to"));
    }
}
