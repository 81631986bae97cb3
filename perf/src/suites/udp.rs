//! The UDP suite: one traffic pattern (64-byte UDP, 1024 flows, as fast as
//! the generator goes), several contenders on the same topology and core
//! placement, repetitions interleaved so drift hits every contender alike;
//! then a run per contender at a fixed rate for latency.
//!
//! Contenders: `xlb` (the real `Pipeline`, DNAT, Maglev over three backends,
//! under the xlb-io `Runtime`), `fwd` (a trivial `Processor` under the same
//! Runtime: hash → rewrite MACs and destination → TX, no conntrack, no
//! lookup), `nft` (kernel nftables DNAT with conntrack); each runs in every
//! [`Placement`]. The max-rate runs use the [`Topology`] asked for; the
//! paced ones the `direct` one, where xlb-pktgen's stamps are checked.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::contenders::afxdp::{self, Processing};
use crate::contenders::nft;
use crate::engine::{RxMode, Summary};
use crate::host;
use crate::pktgen::{self, RxOpts, TxOpts};
use crate::procs::{loadavg, net_rx_softirqs, CpuShare, CpuTimes};
use crate::report::chart::{self, Series};
use crate::report::stats::{spread, Spread};
use crate::report::{self, times};
use crate::topo::{
    self, build_bridged, build_direct, Placement, Topo, Topology, BACKENDS, VIP, VIP_PORT,
};

/// A contender of the UDP suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum UdpContender {
    /// xlb's Pipeline under the xlb-io Runtime.
    Xlb,
    /// A minimal AF_XDP forwarder under the same Runtime.
    Fwd,
    /// Kernel nftables DNAT with conntrack.
    Nft,
}

impl UdpContender {
    /// Display name.
    pub fn label(self) -> &'static str {
        match self {
            UdpContender::Xlb => "xlb (Pipeline, DNAT, AF_XDP)",
            UdpContender::Fwd => "minimal AF_XDP forwarder",
            UdpContender::Nft => "nftables DNAT + conntrack",
        }
    }
    /// Short name (tables, chart).
    pub fn short(self) -> &'static str {
        match self {
            UdpContender::Xlb => "xlb",
            UdpContender::Fwd => "fwd",
            UdpContender::Nft => "nft",
        }
    }
}

/// Options of the UDP suite.
#[derive(Debug, Clone)]
pub struct UdpOpts {
    /// Repetitions per contender.
    pub reps: u32,
    /// Seconds of traffic per run.
    pub secs: f64,
    /// Contenders, in run order within a repetition.
    pub contenders: Vec<UdpContender>,
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
pub struct UdpRun {
    /// Placement.
    pub placement: Placement,
    /// Contender.
    pub contender: UdpContender,
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

/// Per-contender summary.
#[derive(Debug, Clone, Serialize)]
pub struct UdpSummary {
    /// Placement.
    pub placement: Placement,
    /// Contender.
    pub contender: UdpContender,
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

/// Everything a UDP suite run produced.
#[derive(Debug, Clone, Serialize)]
pub struct UdpReport {
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
    pub summary: Vec<UdpSummary>,
    /// Every run.
    pub runs: Vec<UdpRun>,
}

// ---------------------------------------------------------------- runs

fn one_run(
    t: &Topo,
    o: &UdpOpts,
    placement: Placement,
    which: UdpContender,
    rep: u32,
    paced: Option<u64>,
) -> Result<UdpRun> {
    let load = loadavg();
    let mut xsk = None;
    let mut ksoftirqd = None;
    let owned = placement == Placement::Owned;
    match which {
        UdpContender::Xlb | UdpContender::Fwd => {
            if owned {
                afxdp::napi_defer(t, true)?;
            }
            let what = match which {
                UdpContender::Fwd => Processing::MinFwd,
                _ => Processing::Pipeline,
            };
            xsk = Some(afxdp::start(t, what, o.lb_cpu, o.batch, o.frames, owned)?);
            if let Some(n) = o.nice {
                for tid in host::threads_named("xlb-worker") {
                    host::renice(tid, n);
                }
            }
        }
        UdpContender::Nft => ksoftirqd = nft::start_udp(t, placement, o.lb_cpu, o.nice)?,
    }
    let lb_mac = topo::mac(&t.lb, &t.l0)?;
    let mut tx = TxOpts::new(&t.c0, SocketAddr::from((VIP, VIP_PORT)));
    tx.netns = Some(t.cl.to_string());
    tx.dst_mac = Some(lb_mac);
    tx.flows = o.flows;
    tx.duration = Duration::from_secs_f64(o.secs);
    tx.count = 200_000_000;
    tx.rate = paced;
    tx.cpus = vec![o.gen_cpu];
    tx.nice = o.nice;
    let mut rx = RxOpts::new(&t.b0);
    rx.netns = Some(t.be.to_string());
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
                *s = afxdp::worker_cpus();
            }
        })
    });
    // `bridged`: the backends' kernels count; `direct`: xlb-pktgen receives.
    let counted0 = if t.sinks.is_empty() {
        None
    } else {
        Some(topo::delivered_per_backend(t))
    };
    let cpu0 = CpuTimes::now();
    let res = pktgen::run(Some(&tx), counted0.is_none().then_some(&rx), o.verbose);
    let counted = counted0.map(|c0| -> Result<Vec<u64>> {
        let c0 = c0?;
        std::thread::sleep(rx.linger);
        let c1 = topo::delivered_per_backend(t)?;
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
        match x.stop() {
            Ok(stats) => {
                if o.verbose {
                    eprintln!("  {} worker counters: {stats}", which.short());
                }
            }
            Err(e) => stop_err = Some(e),
        }
        if owned {
            afxdp::napi_defer(t, false)?;
        }
    } else {
        nft::stop_udp(t, placement, ksoftirqd)?;
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
    Ok(UdpRun {
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
pub fn run(o: &UdpOpts, command: &str) -> Result<UdpReport> {
    if o.reps == 0 || o.secs <= 0.0 || o.secs > 60.0 {
        bail!("--reps >= 1 and --secs in (0, 60]");
    }
    if o.placements.is_empty() || o.contenders.is_empty() {
        bail!("at least one placement and one contender");
    }
    let t0 = Instant::now();
    let load0 = loadavg();
    let autogroup = o.nice.is_some_and(host::own_autogroup);
    let topo = match o.topology {
        Topology::Bridged => build_bridged()?,
        Topology::Direct => build_direct()?,
    };
    let mut runs = Vec::new();
    let cases: Vec<(Placement, UdpContender)> = o
        .placements
        .iter()
        .flat_map(|&p| o.contenders.iter().map(move |&c| (p, c)))
        .collect();
    for rep in 0..o.reps {
        for &(p, c) in &cases {
            if host::interrupted() {
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
        let topo = build_direct()?;
        let p = o.placements[0];
        for rep in 0..o.reps {
            for &c in &o.contenders {
                if host::interrupted() {
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
    if host::interrupted() {
        bail!("interrupted; namespaces removed, no report written");
    }
    let mut summary = Vec::new();
    for &(p, c) in &cases {
        let mine: Vec<&UdpRun> = runs
            .iter()
            .filter(|r| r.placement == p && r.contender == c && r.paced_pps.is_none())
            .collect();
        let paced: Vec<&UdpRun> = runs
            .iter()
            .filter(|r| r.placement == p && r.contender == c && r.paced_pps.is_some())
            .collect();
        let pm =
            |g: fn(&UdpRun) -> f64| spread(&paced.iter().map(|r| g(r)).collect::<Vec<_>>()).median;
        let off: Vec<f64> = mine.iter().map(|r| r.offered_mpps).collect();
        let del: Vec<f64> = mine.iter().map(|r| r.delivered_mpps).collect();
        let loss: Vec<f64> = mine.iter().map(|r| r.loss).collect();
        summary.push(UdpSummary {
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
            .find(|s| s.placement == p && s.contender == UdpContender::Xlb)
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
    let report = UdpReport {
        when: report::utc_now(),
        command: command.to_string(),
        kernel: report::kernel(),
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
            d = xlb_io::kernel::napi::DEFER_HARD_IRQS,
            gt = xlb_io::kernel::napi::GRO_FLUSH_TIMEOUT_NS,
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
pub fn markdown(r: &UdpReport) -> String {
    let mut s = String::new();
    s += "# UDP 64-byte frames, 1024 flows: xlb vs. a minimal AF_XDP forwarder vs. nftables DNAT\n\n";
    s += &format!(
        "- when: {}\n- command: `{}`\n- kernel: {}\n- load average (1 min) at start / end: {:.2} / {:.2}\n- topology: {}\n- placement: {}\n\n",
        r.when, r.command, r.kernel, r.loadavg.0, r.loadavg.1, r.topology, r.placement
    );
    let reps = report::reps(r.runs.iter().map(|x| x.rep));
    s += &format!("Median of {reps} repetition(s) (min–max in brackets); Mpps = million packets per second; ratios within one placement. Kernel forwarding drops nothing at overload: it holds the generator back through its send buffer (LAB-NOTES), so its offered rate equals its delivered rate either way; the runs' CPU columns show which core was saturated.\n\n");
    s += "| placement | contender | offered Mpps | delivered Mpps | loss | delivered ÷ xlb | xlb ÷ this |\n";
    s += "|---|---|---|---|---|---|---|\n";
    for c in &r.summary {
        let f = |x: &Spread| format!("{:.3} [{:.3}–{:.3}]", x.median, x.min, x.max);
        s += &format!(
            "| {} | {} | {} | {} | {:.1} % | {} | {} |\n",
            c.placement.short(),
            c.contender.label(),
            f(&c.offered),
            f(&c.delivered),
            100.0 * c.loss,
            times(c.ratio_to_xlb),
            times(c.xlb_over_this)
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

/// The bar chart: per contender (and placement, when there are several),
/// offered and delivered Mpps.
fn bars(r: &UdpReport, path: &std::path::Path) -> Result<()> {
    let reps = report::reps(r.runs.iter().map(|x| x.rep));
    let placements = {
        let mut v: Vec<_> = r.summary.iter().map(|s| s.placement).collect();
        v.dedup();
        v.len()
    };
    let labels: Vec<String> = r
        .summary
        .iter()
        .map(|s| {
            if placements > 1 {
                format!("{} ({})", s.contender.short(), s.placement.short())
            } else {
                s.contender.label().to_string()
            }
        })
        .collect();
    let offered: Vec<Spread> = r.summary.iter().map(|s| s.offered).collect();
    let delivered: Vec<Spread> = r.summary.iter().map(|s| s.delivered).collect();
    chart::paired_bars(
        &format!("UDP 64 B, 1024 flows: Mpps (median of {reps}, min-max whiskers)"),
        "million packets per second",
        &labels,
        [
            Series {
                name: "offered",
                values: &offered,
            },
            Series {
                name: "delivered",
                values: &delivered,
            },
        ],
        path,
    )
}

fn write_outputs(o: &UdpOpts, r: &UdpReport) -> Result<()> {
    let name = "udp64-1024flows";
    report::write(&o.out, name, &markdown(r), r)?;
    let svg = o.out.join(format!("{name}.svg"));
    bars(r, &svg)?;
    if r.runs.iter().any(|x| x.paced_pps.is_some()) {
        let series: Vec<(String, Vec<(f64, f64)>)> = r
            .summary
            .iter()
            .filter_map(|c| {
                let mut v: Vec<&UdpRun> = r
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
        chart::latency_cdf(
            "UDP 64 B latency CDF at a fixed rate (xlb-pktgen stamps)",
            &series,
            &f,
        )?;
        chart::to_png(&f);
    }
    // A PNG too, when librsvg's converter is installed (scripts/deps.sh).
    chart::to_png(&svg);
    Ok(())
}
