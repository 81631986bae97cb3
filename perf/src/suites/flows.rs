//! Many flows through each contender: established-flow forwarding with a
//! million tracked flows (against 1024 in the same run), and a SYN flood
//! (the new-flow rate) with what it does to established flows running next
//! to it (their loss and latency, against a run without the flood).
//!
//! Contenders, on the same topology and core placement: the real `xlb`
//! daemon, and kernel nftables DNAT with conntrack (RPS of the balancer's
//! ingress veths to the balancer's CPU, as in the UDP suite). For the
//! kernel, the global conntrack limits (`nf_conntrack_max` and the hash's
//! bucket count, which a child namespace sees read-only) are raised to hold
//! every flow for the suite's duration and restored afterwards
//! ([`CtSizing`]); UDP conntrack timeouts in the balancer namespace outlast
//! every run; and its table is flushed (`conntrack -F`) before and after
//! each part, as each xlb part starts a fresh daemon with an empty table.
//!
//! Topology: `topo::FloodTopo`, the `direct` one (client `c0` — `l0` balancer
//! `l1` — `b0` backends, xlb-pktgen TX on the client and RX on the backends) plus a
//! second client link `c2` — `l2` that carries the flood, so two generators
//! run side by side; xlb serves all three interfaces with one worker (one
//! queue index), as one NIC queue would see both kinds of traffic. Flood SYNs
//! go to a TCP service whose backends (`.21`–`.23`) the receiver does not
//! count; the backend namespace counts and drops them in nftables.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use xlb_testkit::{netns, sh};

use crate::contenders::nft::{self, CtSizing, FlowsDnat, NFT_UDP_TIMEOUT_S};
use crate::contenders::xlb;
use crate::engine::{RxMode, Summary};
use crate::frames::Proto;
use crate::host;
use crate::pktgen::{self, RxOpts, TxOpts};
use crate::procs::{self, CpuShare, CpuTimes, Proc, ProcUse};
use crate::report::stats::{spread, Spread};
use crate::report::{self, times};
use crate::topo::{build_flood, mac, syn_counter, FloodTopo, BACKENDS, FLOOD_PORT, VIP, VIP_PORT};

/// A contender of the many-flows suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FlowsContender {
    /// The xlb daemon (DNAT, AF_XDP, one worker).
    Xlb,
    /// Kernel nftables DNAT with conntrack.
    Nft,
}

impl FlowsContender {
    /// Display name.
    pub fn label(self) -> &'static str {
        match self {
            FlowsContender::Xlb => "xlb daemon (DNAT, AF_XDP)",
            FlowsContender::Nft => "nftables DNAT + conntrack",
        }
    }

    /// Short name.
    pub fn short(self) -> &'static str {
        match self {
            FlowsContender::Xlb => "xlb",
            FlowsContender::Nft => "nft",
        }
    }

    /// Conntrack entries per flow in this contender's own count: xlb keeps
    /// one entry per direction, the kernel one entry holding both tuples.
    pub fn entries_per_flow(self) -> u64 {
        match self {
            FlowsContender::Xlb => 2,
            FlowsContender::Nft => 1,
        }
    }
}

/// Options of the many-flows suite.
#[derive(Debug, Clone)]
pub struct FlowsOpts {
    /// Repetitions.
    pub reps: u32,
    /// Seconds per measured run.
    pub secs: f64,
    /// Contenders, in run order within each part of a repetition.
    pub contenders: Vec<FlowsContender>,
    /// Flows of the "many flows" runs and of the flood.
    pub many: u32,
    /// Conntrack buckets per worker for xlb (`--conntrack-buckets`).
    pub ct_buckets: u32,
    /// Packets/s of the established flows during the flood comparison.
    pub est_rate: u64,
    /// Generators' CPU.
    pub gen_cpu: usize,
    /// The balancer's CPU (xlb's process; RPS target for nftables).
    pub lb_cpu: usize,
    /// Receiver's CPU.
    pub rx_cpu: usize,
    /// Run xlb with `--busy-poll` (as the UDP bench's AF_XDP contenders).
    pub busy_poll: bool,
    /// Nice of the generators and receiver.
    pub nice: Option<i32>,
    /// The xlb daemon.
    pub xlb_bin: PathBuf,
    /// Output directory.
    pub out: PathBuf,
    /// Progress on stderr.
    pub verbose: bool,
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct FlowsRun {
    /// Contender.
    pub contender: FlowsContender,
    /// Scenario name.
    pub scenario: String,
    /// Repetition.
    pub rep: u32,
    /// Established flows.
    pub flows: u32,
    /// Offered Mpps (established flows).
    pub offered_mpps: f64,
    /// Delivered Mpps (established flows).
    pub delivered_mpps: f64,
    /// Loss of the established flows.
    pub loss: f64,
    /// Latency p50 µs.
    pub p50_us: f64,
    /// p99 µs.
    pub p99_us: f64,
    /// Flood: offered SYNs/s (0 without flood).
    pub flood_offered_pps: f64,
    /// Flood: SYNs/s that reached the backends (new flows/s through the balancer).
    pub flood_delivered_pps: f64,
    /// The balancer's conntrack entries after the run (xlb: 2 per flow;
    /// nftables: `nf_conntrack_count` of the balancer namespace, 1 per flow).
    pub ct_entries: u64,
    /// Conntrack capacity (xlb's table; the kernel's `nf_conntrack_max`).
    pub ct_capacity: u64,
    /// Drops during the run: xlb's worker drops (all reasons) and packet
    /// I/O losses (all causes); nftables:
    /// `rx_dropped` of the balancer's ingress veths (RPS backlog) plus the
    /// kernel conntrack's drop, early_drop and insert_failed counts.
    pub drops: u64,
    /// Where the balancer's process ran (xlb; none for the kernel).
    pub procs: Vec<ProcUse>,
    /// Generator / receiver CPUs (as reported by the threads).
    pub gen_cpus: Vec<i32>,
    /// Receiver CPUs.
    pub rx_cpus: Vec<i32>,
    /// Per-CPU split over the run.
    pub cpus: Vec<CpuShare>,
    /// NET_RX softirqs per CPU.
    pub net_rx_softirqs: Vec<u64>,
    /// Load average before.
    pub loadavg: f64,
}

/// Per scenario and contender summary.
#[derive(Debug, Clone, Serialize)]
pub struct FlowsSummary {
    /// Scenario.
    pub scenario: String,
    /// Contender.
    pub contender: FlowsContender,
    /// Delivered Mpps.
    pub delivered: Spread,
    /// Median delivered ÷ xlb's in the same scenario.
    pub delivered_over_xlb: Option<f64>,
    /// xlb's median delivered ÷ this contender's.
    pub xlb_over_this: Option<f64>,
    /// Median loss.
    pub loss: f64,
    /// Median p50 µs.
    pub p50_us: f64,
    /// Median p99 µs.
    pub p99_us: f64,
    /// Median flood SYNs delivered per second.
    pub flood_delivered_pps: f64,
    /// Median flood SYNs offered per second.
    pub flood_offered_pps: f64,
    /// New flows/s delivered ÷ xlb's in the same scenario (flood runs).
    pub flood_over_xlb: Option<f64>,
    /// Largest conntrack entry count seen (see [`FlowsContender::entries_per_flow`]).
    pub ct_entries: u64,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct FlowsReport {
    /// When.
    pub when: String,
    /// Command.
    pub command: String,
    /// Placement.
    pub placement: String,
    /// The kernel contender's conntrack settings (empty without it).
    pub kernel_conntrack: String,
    /// Load at start / end.
    pub loadavg: (f64, f64),
    /// Per scenario and contender.
    pub summary: Vec<FlowsSummary>,
    /// Runs.
    pub runs: Vec<FlowsRun>,
}

/// Rate of the many-flows warm-up (packets/s), below what either contender
/// forwards for new flows, so that each creates every entry (at max rate
/// most first packets would be lost).
const WARM_PPS: u64 = 150_000;
/// Warm-up passes at most: a pass re-sends every flow; flows already
/// tracked just stay established, lost first packets get another chance.
const WARM_PASSES: u32 = 3;

const S_1K: &str = "established, 1024 flows, max rate";
const S_MANY: &str = "established, many flows, max rate";
const S_CALM: &str = "established 1024 flows at a fixed rate, no flood";
const S_FLOOD: &str = "established 1024 flows at a fixed rate + SYN flood";
const SCENARIOS: [&str; 4] = [S_1K, S_MANY, S_CALM, S_FLOOD];

/// A running contender (stopped when dropped).
enum Balancer<'a> {
    Xlb(Proc),
    Nft { _rules: FlowsDnat<'a> },
}

/// (conntrack entries, capacity, drops so far).
struct BalState {
    entries: u64,
    capacity: u64,
    drops: u64,
}

impl Balancer<'_> {
    fn which(&self) -> FlowsContender {
        match self {
            Balancer::Xlb(_) => FlowsContender::Xlb,
            Balancer::Nft { .. } => FlowsContender::Nft,
        }
    }

    fn state(&self, f: &FloodTopo) -> Result<BalState> {
        match self {
            Balancer::Xlb(_) => {
                let m = xlb::api(&f.t.lb, "/metrics").unwrap_or_default();
                Ok(BalState {
                    entries: xlb::metric(&m, "xlb_conntrack_entries"),
                    capacity: xlb::metric(&m, "xlb_conntrack_capacity"),
                    // The pipeline's drops plus packet I/O losses (RX ring
                    // full when the worker falls behind, and the like).
                    drops: xlb::metric(&m, "xlb_worker_drops_total")
                        + xlb::metric(&m, "xlb_worker_io_drops_total"),
                })
            }
            Balancer::Nft { .. } => {
                let mut drops = nft::ct_stat_drops(&f.t.lb);
                for i in [&f.t.l0, &f.l2] {
                    drops += f.t.lb.rx_counters(i)?.1;
                }
                Ok(BalState {
                    entries: nft::ct_count(&f.t.lb)?,
                    capacity: nft::read_u64(nft::CT_MAX)?,
                    drops,
                })
            }
        }
    }

    fn pid(&self) -> Option<i32> {
        match self {
            Balancer::Xlb(p) => Some(p.pid()),
            Balancer::Nft { .. } => None,
        }
    }
}

// ---------------------------------------------------------------- runs

fn est_tx(f: &FloodTopo, o: &FlowsOpts, flows: u32, rate: Option<u64>) -> Result<TxOpts> {
    let mut tx = TxOpts::new(&f.t.c0, SocketAddr::from((VIP, VIP_PORT)));
    tx.netns = Some(f.t.cl.to_string());
    tx.dst_mac = Some(mac(&f.t.lb, &f.t.l0)?);
    tx.flows = flows;
    // 65536 source ports per address at most: spread many flows over addresses.
    tx.src_ips = flows.div_ceil(60_000).max(1);
    tx.rate = rate;
    tx.duration = Duration::from_secs_f64(o.secs);
    tx.count = 500_000_000;
    tx.cpus = vec![o.gen_cpu];
    tx.nice = o.nice;
    Ok(tx)
}

fn rx(f: &FloodTopo, o: &FlowsOpts) -> RxOpts {
    let mut rx = RxOpts::new(&f.t.b0);
    rx.netns = Some(f.t.be.to_string());
    rx.mode = RxMode::Xdp;
    rx.addrs = BACKENDS.iter().map(|b| IpAddr::V4(*b)).collect();
    rx.cpus = vec![o.rx_cpu];
    rx.nice = o.nice;
    rx.linger = Duration::from_millis(300);
    rx
}

/// Send each of `flows` flows once at `rate`, repeated (at most
/// [`WARM_PASSES`] times) until the balancer tracks 99 % of them, so the
/// measured run forwards established flows only. Returns the flows tracked.
fn warm(f: &FloodTopo, o: &FlowsOpts, bal: &Balancer<'_>, flows: u32, rate: u64) -> Result<u64> {
    let mut w = est_tx(f, o, flows, Some(rate))?;
    w.count = u64::from(flows);
    w.duration = Duration::from_secs(120);
    let per = bal.which().entries_per_flow();
    let mut tracked = 0;
    for _ in 0..WARM_PASSES {
        pktgen::run(Some(&w), Some(&rx(f, o)), false).context("warming the flows")?;
        tracked = bal.state(f)?.entries / per;
        if tracked * 100 >= u64::from(flows) * 99 || host::interrupted() {
            break;
        }
    }
    Ok(tracked)
}

#[allow(clippy::too_many_arguments)]
fn measure(
    f: &FloodTopo,
    o: &FlowsOpts,
    bal: &Balancer<'_>,
    scenario: &str,
    rep: u32,
    tx: &TxOpts,
    flood: Option<&TxOpts>,
) -> Result<FlowsRun> {
    let load = procs::loadavg();
    let st0 = bal.state(f)?;
    let syn0 = syn_counter(&f.t.be)?;
    let cpu0 = CpuTimes::now();
    let soft0 = procs::net_rx_softirqs();
    let x0 = bal.pid().map(procs::sample_tree);
    let t0 = Instant::now();
    let rxo = rx(f, o);
    let (sum, flood_sum): (Summary, Option<Summary>) = std::thread::scope(|s| {
        let fl = flood.map(|fo| s.spawn(move || pktgen::run(Some(fo), None, false)));
        let est = pktgen::run(Some(tx), Some(&rxo), false);
        let fl = fl
            .map(|h| h.join().map_err(|_| anyhow!("flood thread panicked"))?)
            .transpose();
        Ok::<_, anyhow::Error>((est?, fl?))
    })?;
    let secs = t0.elapsed().as_secs_f64();
    let procs_used = match (bal.pid(), x0) {
        (Some(pid), Some(x0)) => {
            let x1 = procs::sample_tree(pid);
            vec![procs::proc_use("xlb", &x0, &x1, secs)]
        }
        _ => Vec::new(),
    };
    let cpus = CpuTimes::now().since(&cpu0);
    let soft = procs::delta(&procs::net_rx_softirqs(), &soft0);
    let syns = syn_counter(&f.t.be)?.saturating_sub(syn0);
    let st1 = bal.state(f)?;
    let txs = sum.tx.clone().unwrap_or_default();
    let rxs = sum.rx.clone().unwrap_or_default();
    let flood_tx = flood_sum.and_then(|s| s.tx).unwrap_or_default();
    Ok(FlowsRun {
        contender: bal.which(),
        scenario: scenario.to_string(),
        rep,
        flows: tx.flows,
        offered_mpps: txs.pps / 1e6,
        delivered_mpps: rxs.pps / 1e6,
        loss: sum.loss.map(|l| l.loss_ratio()).unwrap_or(0.0),
        p50_us: rxs.latency.p50_ns as f64 / 1e3,
        p99_us: rxs.latency.p99_ns as f64 / 1e3,
        flood_offered_pps: flood_tx.pps,
        flood_delivered_pps: if flood_tx.secs > 0.0 {
            syns as f64 / flood_tx.secs
        } else {
            0.0
        },
        ct_entries: st1.entries,
        ct_capacity: st1.capacity,
        drops: st1.drops.saturating_sub(st0.drops),
        procs: procs_used,
        gen_cpus: txs.cpus.clone(),
        rx_cpus: rxs.cpus.clone(),
        cpus,
        net_rx_softirqs: soft,
        loadavg: load,
    })
}

fn say(o: &FlowsOpts, r: &FlowsRun) {
    if o.verbose {
        eprintln!(
            "  {} {}: {} flows, offered {:.3} Mpps, delivered {:.3} Mpps, loss {:.2} %, p50 {:.0} us, p99 {:.0} us, flood {:.0}/{:.0} SYN/s, conntrack {}/{}, drops {}",
            r.contender.short(), r.scenario, r.flows, r.offered_mpps, r.delivered_mpps, 100.0 * r.loss, r.p50_us, r.p99_us,
            r.flood_delivered_pps, r.flood_offered_pps, r.ct_entries, r.ct_capacity, r.drops
        );
    }
}

fn flood_tx(f: &FloodTopo, o: &FlowsOpts) -> Result<TxOpts> {
    let mut flood = TxOpts::new(&f.c2, SocketAddr::from((VIP, FLOOD_PORT)));
    flood.netns = Some(f.t.cl.to_string());
    flood.dst_mac = Some(mac(&f.t.lb, &f.l2)?);
    flood.proto = Proto::Syn;
    flood.flows = o.many;
    flood.src_ips = o.many.div_ceil(60_000).max(1);
    flood.duration = Duration::from_secs_f64(o.secs);
    flood.count = 500_000_000;
    flood.cpus = vec![o.gen_cpu];
    flood.nice = o.nice;
    Ok(flood)
}

fn one_rep(o: &FlowsOpts, rep: u32, dir: &Path, runs: &mut Vec<FlowsRun>) -> Result<()> {
    let f = build_flood()?;
    netns::exec(&f.t.lb, &["sysctl", "-qw", "net.ipv4.ip_forward=0"])?;
    let ifaces = [f.t.l0.as_str(), f.t.l1.as_str(), f.l2.as_str()];
    let buckets = o.ct_buckets.to_string();
    let mut extra = vec!["--conntrack-buckets", buckets.as_str()];
    if o.busy_poll {
        extra.push("--busy-poll");
    }
    // Each part starts a fresh contender with an empty flow table, the same
    // way for every part: a new xlb daemon, or the nftables rules on a
    // flushed conntrack table.
    let start = |c: FlowsContender| -> Result<Balancer<'_>> {
        Ok(match c {
            FlowsContender::Xlb => Balancer::Xlb(xlb::start(
                &o.xlb_bin,
                &f.t.lb,
                &ifaces,
                &xlb::flows_lbconfig(),
                o.lb_cpu,
                o.nice,
                &extra,
                dir,
            )?),
            FlowsContender::Nft => Balancer::Nft {
                _rules: FlowsDnat::start(&f, o.lb_cpu, o.nice)?,
            },
        })
    };
    // A: established-flow forwarding, 1024 flows vs. many.
    for &c in &o.contenders {
        if host::interrupted() {
            bail!("interrupted");
        }
        let bal = start(c)?;
        let r = measure(&f, o, &bal, S_1K, rep, &est_tx(&f, o, 1024, None)?, None)?;
        say(o, &r);
        runs.push(r);
        let tracked = warm(&f, o, &bal, o.many, WARM_PPS)?;
        if o.verbose {
            eprintln!(
                "  {} warm-up: {tracked} of {} flows tracked",
                c.short(),
                o.many
            );
        }
        let r = measure(
            &f,
            o,
            &bal,
            S_MANY,
            rep,
            &est_tx(&f, o, o.many, None)?,
            None,
        )?;
        say(o, &r);
        if r.ct_entries < c.entries_per_flow() * u64::from(o.many) {
            eprintln!(
                "  note: {} has {} conntrack entries ({} per flow), fewer than for the {} flows sent (capacity {})",
                c.short(),
                r.ct_entries,
                c.entries_per_flow(),
                o.many,
                r.ct_capacity
            );
        }
        runs.push(r);
    }
    // B: the same established flows at a fixed rate, without and with a SYN flood.
    for &c in &o.contenders {
        if host::interrupted() {
            bail!("interrupted");
        }
        let bal = start(c)?;
        warm(&f, o, &bal, 1024, o.est_rate)?;
        let est = est_tx(&f, o, 1024, Some(o.est_rate))?;
        let r = measure(&f, o, &bal, S_CALM, rep, &est, None)?;
        say(o, &r);
        runs.push(r);
        let r = measure(&f, o, &bal, S_FLOOD, rep, &est, Some(&flood_tx(&f, o)?))?;
        say(o, &r);
        runs.push(r);
    }
    Ok(())
}

/// Medians per scenario and contender, with ratios against xlb's.
fn summarize(runs: &[FlowsRun], contenders: &[FlowsContender]) -> Vec<FlowsSummary> {
    let mut summary = Vec::new();
    for sc in SCENARIOS {
        let first = summary.len();
        for &c in contenders {
            let mine: Vec<&FlowsRun> = runs
                .iter()
                .filter(|r| r.scenario == sc && r.contender == c)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let col =
                |g: fn(&FlowsRun) -> f64| spread(&mine.iter().map(|r| g(r)).collect::<Vec<_>>());
            summary.push(FlowsSummary {
                scenario: sc.to_string(),
                contender: c,
                delivered: col(|r| r.delivered_mpps),
                delivered_over_xlb: None,
                xlb_over_this: None,
                loss: col(|r| r.loss).median,
                p50_us: col(|r| r.p50_us).median,
                p99_us: col(|r| r.p99_us).median,
                flood_delivered_pps: col(|r| r.flood_delivered_pps).median,
                flood_offered_pps: col(|r| r.flood_offered_pps).median,
                flood_over_xlb: None,
                ct_entries: mine.iter().map(|r| r.ct_entries).max().unwrap_or(0),
            });
        }
        let group = &mut summary[first..];
        let Some((xd, xf)) = group
            .iter()
            .find(|s| s.contender == FlowsContender::Xlb)
            .map(|s| (s.delivered.median, s.flood_delivered_pps))
        else {
            continue;
        };
        for s in group {
            let d = s.delivered.median;
            s.delivered_over_xlb = (xd > 0.0).then(|| d / xd);
            s.xlb_over_this = (d > 0.0).then(|| xd / d);
            if sc == S_FLOOD && xf > 0.0 {
                s.flood_over_xlb = Some(s.flood_delivered_pps / xf);
            }
        }
    }
    summary
}

/// Run the suite; write `flows.{md,json}`.
pub fn run(o: &FlowsOpts, command: &str) -> Result<FlowsReport> {
    if o.reps == 0 || o.secs <= 0.0 || o.secs > 60.0 || o.many == 0 || o.contenders.is_empty() {
        bail!("--reps >= 1, --flows-secs in (0, 60], --many-flows >= 1, at least one contender");
    }
    if o.contenders.contains(&FlowsContender::Nft) {
        for tool in ["nft", "conntrack"] {
            sh(&[tool, "--version"]).with_context(|| {
                format!("{tool} is needed for the nftables contender: scripts/deps.sh installs it")
            })?;
        }
    }
    let load0 = procs::loadavg();
    // The kernel contender: room for every flow of a part (the many flows,
    // or the flood's plus the established ones) with headroom, and a hash
    // of about one bucket per tuple (each entry hashes both directions).
    let sizing = if o.contenders.contains(&FlowsContender::Nft) {
        let many = u64::from(o.many);
        Some(CtSizing::at_least(
            2 * many + 65_536,
            (2 * many).next_power_of_two(),
        )?)
    } else {
        None
    };
    let kernel_conntrack = sizing.as_ref().map_or(String::new(), |s| {
        format!(
            "{}; UDP conntrack timeouts {NFT_UDP_TIMEOUT_S} s in the balancer namespace; its table flushed (conntrack -F) before and after each part",
            s.describe()
        )
    });
    let dir = std::env::temp_dir().join(format!("xlb-perf-flows-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut runs = Vec::new();
    let mut res = Ok(());
    for rep in 0..o.reps {
        if host::interrupted() {
            res = Err(anyhow!(
                "interrupted; processes stopped and namespaces removed"
            ));
            break;
        }
        if o.verbose {
            eprintln!("flows rep {}/{}", rep + 1, o.reps);
        }
        if let Err(e) = one_rep(o, rep, &dir, &mut runs) {
            res = Err(e.context(format!("flows rep {rep}")));
            break;
        }
    }
    drop(sizing);
    let _ = std::fs::remove_dir_all(&dir);
    res?;
    let report = FlowsReport {
        when: report::utc_now(),
        command: command.to_string(),
        placement: format!(
            "generators (established and flood, AF_XDP TX) pinned to cpu{g}; receiver (AF_XDP RX) pinned to cpu{r}; \
             xlb daemon pinned to cpu{l} (one worker for all three interfaces, {poll}, --conntrack-buckets {b}), its XDP program and the copy into its UMEM in the sender's softirq; \
             nftables: RPS of the balancer's ingress veths (established and flood) to cpu{l}, so forwarding and conntrack run in softirq on cpu{l}; nice of generators, receiver, xlb and (during nftables runs) cpu{l}'s ksoftirqd: {nice}",
            nice = o.nice.map_or("unchanged".to_string(), |n| n.to_string()),
            g = o.gen_cpu,
            r = o.rx_cpu,
            l = o.lb_cpu,
            b = o.ct_buckets,
            poll = if o.busy_poll { "busy-polling" } else { "blocking in poll() when idle" }
        ),
        kernel_conntrack,
        loadavg: (load0, procs::loadavg()),
        summary: summarize(&runs, &o.contenders),
        runs,
    };
    report::write(&o.out, "flows", &markdown(&report, o), &report)?;
    Ok(report)
}

/// The Markdown report.
pub fn markdown(r: &FlowsReport, o: &FlowsOpts) -> String {
    let reps = report::reps(r.runs.iter().map(|x| x.rep));
    let names: Vec<&str> = o.contenders.iter().map(|c| c.label()).collect();
    let mut s = String::new();
    s += &format!("# Many flows and a SYN flood: {}\n\n", names.join(" vs. "));
    s += &format!(
        "- when: {}\n- command: `{}`\n- load average (1 min) at start / end: {:.2} / {:.2}\n- placement: {}\n- many flows: {}; established rate in the flood comparison: {} packets/s (UDP 64 B); flood: TCP SYNs over {} source address/port pairs, as fast as the generator goes, to a DNAT service\n",
        r.when, r.command, r.loadavg.0, r.loadavg.1, r.placement, o.many, o.est_rate, o.many
    );
    if !r.kernel_conntrack.is_empty() {
        s += &format!("- kernel conntrack: {}\n", r.kernel_conntrack);
    }
    s += &format!(
        "\nMedian of {reps} repetition(s) (min–max in brackets); ratios are of medians in the same scenario. Conntrack entries: xlb counts two per flow (one per direction), the kernel one (`nf_conntrack_count` of the balancer namespace).\n\n"
    );
    s += "| scenario | contender | delivered Mpps [min–max] | delivered ÷ xlb | xlb ÷ this | loss | p50 µs | p99 µs | flood SYN/s offered | new flows/s delivered (SYNs at the backends) | new flows/s ÷ xlb | conntrack entries (max) |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for x in &r.summary {
        s += &format!(
            "| {} | {} | {:.3} [{:.3}–{:.3}] | {} | {} | {:.2} % | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |\n",
            x.scenario,
            x.contender.label(),
            x.delivered.median,
            x.delivered.min,
            x.delivered.max,
            times(x.delivered_over_xlb),
            times(x.xlb_over_this),
            100.0 * x.loss,
            x.p50_us,
            x.p99_us,
            x.flood_offered_pps,
            x.flood_delivered_pps,
            if x.scenario == S_FLOOD { times(x.flood_over_xlb) } else { "–".to_string() },
            x.ct_entries
        );
    }
    let effect: Vec<(FlowsContender, &FlowsSummary, &FlowsSummary)> = o
        .contenders
        .iter()
        .filter_map(|&c| {
            let get = |sc: &str| {
                r.summary
                    .iter()
                    .find(|x| x.scenario == sc && x.contender == c)
            };
            Some((c, get(S_CALM)?, get(S_FLOOD)?))
        })
        .collect();
    if !effect.is_empty() {
        s += &format!(
            "\n## What the SYN flood does to established flows\n\n1024 established flows at {} packets/s, without → with the flood (medians).\n\n| contender | delivered Mpps | loss | p50 µs | p99 µs | p99 with ÷ without | new flows/s delivered |\n|---|---|---|---|---|---|---|\n",
            o.est_rate
        );
        for (c, calm, fl) in effect {
            s += &format!(
                "| {} | {:.3} → {:.3} | {:.2} % → {:.2} % | {:.0} → {:.0} | {:.0} → {:.0} | {} | {:.0} |\n",
                c.label(),
                calm.delivered.median,
                fl.delivered.median,
                100.0 * calm.loss,
                100.0 * fl.loss,
                calm.p50_us,
                fl.p50_us,
                calm.p99_us,
                fl.p99_us,
                times((calm.p99_us > 0.0).then(|| fl.p99_us / calm.p99_us)),
                fl.flood_delivered_pps
            );
        }
    }
    s += "\n## Runs\n\nDrops: xlb's worker drops plus its packet I/O losses (`xlb_worker_io_drops_total`: RX ring full, fill ring empty, …); nftables: rx_dropped of the balancer's ingress veths (RPS backlog) plus conntrack's drop, early_drop and insert_failed.\n\n| rep | contender | scenario | flows | offered Mpps | delivered Mpps | loss | p50 µs | p99 µs | flood offered/s | flood delivered/s | conntrack | drops | xlb process | gen cpu | rx cpu | CPUs | NET_RX/cpu | load |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for x in &r.runs {
        let p: Vec<String> = x
            .procs
            .iter()
            .map(|u| format!("cpu{:?} {:.0} %", u.cpus, u.core_pct))
            .collect();
        let c: Vec<String> = x.cpus.iter().map(CpuShare::to_string).collect();
        s += &format!(
            "| {} | {} | {} | {} | {:.3} | {:.3} | {:.2} % | {:.0} | {:.0} | {:.0} | {:.0} | {}/{} | {} | {} | {:?} | {:?} | {} | {:?} | {:.2} |\n",
            x.rep + 1,
            x.contender.short(),
            x.scenario,
            x.flows,
            x.offered_mpps,
            x.delivered_mpps,
            100.0 * x.loss,
            x.p50_us,
            x.p99_us,
            x.flood_offered_pps,
            x.flood_delivered_pps,
            x.ct_entries,
            x.ct_capacity,
            x.drops,
            if p.is_empty() { "–".to_string() } else { p.join(" ") },
            x.gen_cpus,
            x.rx_cpus,
            c.join("; "),
            x.net_rx_softirqs,
            x.loadavg
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_of(c: FlowsContender, sc: &str, rep: u32, mpps: f64, flood: f64) -> FlowsRun {
        FlowsRun {
            contender: c,
            scenario: sc.to_string(),
            rep,
            flows: 1024,
            offered_mpps: 1.0,
            delivered_mpps: mpps,
            loss: 0.0,
            p50_us: 10.0,
            p99_us: 20.0,
            flood_offered_pps: 0.0,
            flood_delivered_pps: flood,
            ct_entries: 0,
            ct_capacity: 0,
            drops: 0,
            procs: vec![],
            gen_cpus: vec![],
            rx_cpus: vec![],
            cpus: vec![],
            net_rx_softirqs: vec![],
            loadavg: 0.0,
        }
    }

    #[test]
    fn the_summary_has_ratios_against_xlb_per_scenario() {
        use FlowsContender::{Nft, Xlb};
        let runs = vec![
            run_of(Xlb, S_1K, 0, 0.4, 0.0),
            run_of(Xlb, S_1K, 1, 0.6, 0.0),
            run_of(Nft, S_1K, 0, 0.25, 0.0),
            run_of(Nft, S_1K, 1, 0.25, 0.0),
            run_of(Xlb, S_FLOOD, 0, 0.05, 400_000.0),
            run_of(Nft, S_FLOOD, 0, 0.04, 100_000.0),
        ];
        let s = summarize(&runs, &[Xlb, Nft]);
        assert_eq!(s.len(), 4, "scenarios without runs are left out");
        let nft_1k = s
            .iter()
            .find(|x| x.scenario == S_1K && x.contender == Nft)
            .expect("nft 1k");
        assert!((nft_1k.delivered_over_xlb.expect("ratio") - 0.5).abs() < 1e-9);
        assert!((nft_1k.xlb_over_this.expect("ratio") - 2.0).abs() < 1e-9);
        assert_eq!(nft_1k.flood_over_xlb, None);
        let nft_flood = s
            .iter()
            .find(|x| x.scenario == S_FLOOD && x.contender == Nft)
            .expect("nft flood");
        assert!((nft_flood.flood_over_xlb.expect("flood ratio") - 0.25).abs() < 1e-9);
        // Without xlb in the run there is nothing to compare with.
        let alone = summarize(&runs, &[Nft]);
        assert!(alone.iter().all(|x| x.delivered_over_xlb.is_none()));
    }
}
