//! Many flows through the real `xlb` daemon: established-flow forwarding
//! with a million tracked flows (against 1024 in the same run), and a SYN
//! flood (the new-flow rate) with what it does to established flows running
//! next to it (their loss and latency, against a run without the flood).
//!
//! Topology: the UDP bench's (client `c0` — `l0` balancer `l1` — `b0`
//! backends, xlb-pktgen TX on the client and RX on the backends) plus a
//! second client link `c2` — `l2` that carries the flood, so two generators
//! run side by side; xlb serves all three interfaces with one worker (one
//! queue index), as one NIC queue would see both kinds of traffic. Flood SYNs
//! go to a TCP service whose backends (`.21`–`.23`) the receiver does not
//! count; the backend namespace counts and drops them in nftables.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use xlb_dataplane::net::MacAddr;

use crate::bench::{build_topology, spread, Spread, Topo, BACKENDS, VIP, VIP_PORT};
use crate::engine::{RxMode, Summary};
use crate::frames::Proto;
use crate::lab::{self, ns_sh, sh};
use crate::pktgen::{self, RxOpts, TxOpts};
use crate::procs::{self, CpuShare, CpuTimes, Proc, ProcUse};
use crate::tcp::{metric, start_xlb, xlb_api};

/// Backends of the flooded TCP service (not counted by the receiver).
pub const FLOOD_BACKENDS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 98, 1, 21),
    Ipv4Addr::new(10, 98, 1, 22),
    Ipv4Addr::new(10, 98, 1, 23),
];
/// The flooded service's port.
pub const FLOOD_PORT: u16 = 80;

/// Options of the many-flows suite.
#[derive(Debug, Clone)]
pub struct FlowsOpts {
    /// Repetitions.
    pub reps: u32,
    /// Seconds per measured run.
    pub secs: f64,
    /// Flows of the "many flows" runs and of the flood.
    pub many: u32,
    /// Conntrack buckets per worker for xlb (`--conntrack-buckets`).
    pub ct_buckets: u32,
    /// Packets/s of the established flows during the flood comparison.
    pub est_rate: u64,
    /// Generators' CPU.
    pub gen_cpu: usize,
    /// xlb's CPU.
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
    /// Flood: SYNs/s that reached the backends (new flows/s through xlb).
    pub flood_delivered_pps: f64,
    /// xlb's tracked connections after the run.
    pub ct_entries: u64,
    /// xlb's conntrack capacity.
    pub ct_capacity: u64,
    /// xlb's drops during the run (all reasons).
    pub xlb_drops: u64,
    /// Where xlb ran.
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

/// Per-scenario summary.
#[derive(Debug, Clone, Serialize)]
pub struct FlowsSummary {
    /// Scenario.
    pub scenario: String,
    /// Delivered Mpps.
    pub delivered: Spread,
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
    /// Largest conntrack entry count seen (two per flow).
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
    /// Load at start / end.
    pub loadavg: (f64, f64),
    /// Per scenario.
    pub summary: Vec<FlowsSummary>,
    /// Runs.
    pub runs: Vec<FlowsRun>,
}

/// Rate of the many-flows warm-up (packets/s), well below what xlb forwards.
const WARM_PPS: u64 = 150_000;

const S_1K: &str = "established, 1024 flows, max rate";
const S_MANY: &str = "established, many flows, max rate";
const S_CALM: &str = "established 1024 flows at a fixed rate, no flood";
const S_FLOOD: &str = "established 1024 flows at a fixed rate + SYN flood";

fn lbconfig() -> String {
    let eps = |addrs: &[Ipv4Addr], port: u16| -> String {
        addrs
            .iter()
            .map(|b| {
                format!("{{ \"endpointIP\": \"{b}\", \"targetPort\": {port}, \"weight\": 1 }}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "{{ \"lbAttr\": [\n {{ \"serviceArguments\": {{ \"externalIP\": \"{VIP}\", \"port\": {VIP_PORT}, \"protocol\": \"udp\", \"sel\": 1, \"mode\": 0, \"inactiveTimeOut\": 240, \"name\": \"bench-udp\" }}, \"endpoints\": [ {} ] }},\n {{ \"serviceArguments\": {{ \"externalIP\": \"{VIP}\", \"port\": {FLOOD_PORT}, \"protocol\": \"tcp\", \"sel\": 0, \"mode\": 0, \"inactiveTimeOut\": 240, \"name\": \"bench-flood\" }}, \"endpoints\": [ {} ] }}\n] }}\n",
        eps(&BACKENDS, VIP_PORT),
        eps(&FLOOD_BACKENDS, 8080)
    )
}

struct FloodTopo {
    t: Topo,
    c2: String,
    l2: String,
}

fn topology() -> Result<FloodTopo> {
    let t = build_topology("f")?;
    let (c2, l2) = (t.lab.ifname("c2"), t.lab.ifname("l2"));
    lab::veth(&t.cl, &c2, "10.98.2.2/24", &t.lb, &l2, "10.98.2.1/24", 1)?;
    let mac = lab::mac_of(&t.be, &t.b0)?;
    for b in FLOOD_BACKENDS {
        sh(&[
            "ip",
            "-n",
            &t.be,
            "addr",
            "add",
            &format!("{b}/24"),
            "dev",
            &t.b0,
        ])?;
        ns_sh(
            &t.lb,
            &[
                "ip",
                "neigh",
                "replace",
                &b.to_string(),
                "lladdr",
                &mac,
                "dev",
                &t.l1,
                "nud",
                "permanent",
            ],
        )?;
    }
    // The backends count the flood's SYNs and drop them (no RST storm back).
    let rules = format!(
        "table ip xlbsink {{\n  counter syns {{ }}\n  chain pre {{\n    type filter hook prerouting priority raw; policy accept;\n    ip daddr {{ {}, {}, {} }} tcp dport 8080 counter name syns drop\n  }}\n}}\n",
        FLOOD_BACKENDS[0], FLOOD_BACKENDS[1], FLOOD_BACKENDS[2]
    );
    let f = std::env::temp_dir().join(format!("xlbperf-sink-{}.nft", std::process::id()));
    std::fs::write(&f, rules)?;
    let r = ns_sh(&t.be, &["nft", "-f", &f.to_string_lossy()]);
    let _ = std::fs::remove_file(&f);
    r.context("loading the backends' SYN counter")?;
    Ok(FloodTopo { t, c2, l2 })
}

fn syn_counter(be: &str) -> Result<u64> {
    let out = ns_sh(
        be,
        &["nft", "-j", "list", "counter", "ip", "xlbsink", "syns"],
    )?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v["nftables"]
        .as_array()
        .and_then(|a| a.iter().find_map(|x| x["counter"]["packets"].as_u64()))
        .ok_or_else(|| anyhow!("no SYN counter in {out}"))
}

fn xlb_state(lb: &str) -> (u64, u64, u64) {
    let m = xlb_api(lb, "/metrics").unwrap_or_default();
    (
        metric(&m, "xlb_conntrack_entries"),
        metric(&m, "xlb_conntrack_capacity"),
        metric(&m, "xlb_worker_drops_total"),
    )
}

fn mac(ns: &str, iface: &str) -> Result<MacAddr> {
    lab::mac_of(ns, iface)?
        .parse()
        .map_err(|_| anyhow!("bad MAC of {iface}"))
}

fn est_tx(f: &FloodTopo, o: &FlowsOpts, flows: u32, rate: Option<u64>) -> Result<TxOpts> {
    let mut tx = TxOpts::new(&f.t.c0, SocketAddr::from((VIP, VIP_PORT)));
    tx.netns = Some(f.t.cl.clone());
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
    rx.netns = Some(f.t.be.clone());
    rx.mode = RxMode::Xdp;
    rx.addrs = BACKENDS.iter().map(|b| IpAddr::V4(*b)).collect();
    rx.cpus = vec![o.rx_cpu];
    rx.nice = o.nice;
    rx.linger = Duration::from_millis(300);
    rx
}

#[allow(clippy::too_many_arguments)]
fn measure(
    f: &FloodTopo,
    o: &FlowsOpts,
    xlb: &Proc,
    scenario: &str,
    rep: u32,
    tx: &TxOpts,
    flood: Option<&TxOpts>,
) -> Result<FlowsRun> {
    let load = procs::loadavg();
    let (_, _, drops0) = xlb_state(&f.t.lb);
    let syn0 = syn_counter(&f.t.be)?;
    let cpu0 = CpuTimes::now();
    let soft0 = procs::net_rx_softirqs();
    let x0 = procs::sample_tree(xlb.pid());
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
    let x1 = procs::sample_tree(xlb.pid());
    let cpus = CpuTimes::now().since(&cpu0);
    let soft = procs::delta(&procs::net_rx_softirqs(), &soft0);
    let syns = syn_counter(&f.t.be)?.saturating_sub(syn0);
    let (entries, capacity, drops1) = xlb_state(&f.t.lb);
    let txs = sum.tx.clone().unwrap_or_default();
    let rxs = sum.rx.clone().unwrap_or_default();
    let flood_tx = flood_sum.and_then(|s| s.tx).unwrap_or_default();
    Ok(FlowsRun {
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
        ct_entries: entries,
        ct_capacity: capacity,
        xlb_drops: drops1.saturating_sub(drops0),
        procs: vec![procs::proc_use("xlb", &x0, &x1, secs)],
        gen_cpus: txs.cpus.clone(),
        rx_cpus: rxs.cpus.clone(),
        cpus,
        net_rx_softirqs: soft,
        loadavg: load,
    })
}

fn one_rep(o: &FlowsOpts, rep: u32, dir: &Path, runs: &mut Vec<FlowsRun>) -> Result<()> {
    let f = topology()?;
    ns_sh(&f.t.lb, &["sysctl", "-qw", "net.ipv4.ip_forward=0"])?;
    let ifaces = [f.t.l0.as_str(), f.t.l1.as_str(), f.l2.as_str()];
    let buckets = o.ct_buckets.to_string();
    let mut extra = vec!["--conntrack-buckets", buckets.as_str()];
    if o.busy_poll {
        extra.push("--busy-poll");
    }
    let say = |r: &FlowsRun| {
        if o.verbose {
            eprintln!(
                "  {}: {} flows, offered {:.3} Mpps, delivered {:.3} Mpps, loss {:.2} %, p50 {:.0} us, p99 {:.0} us, flood {:.0}/{:.0} SYN/s, conntrack {}/{}, xlb drops {}",
                r.scenario, r.flows, r.offered_mpps, r.delivered_mpps, 100.0 * r.loss, r.p50_us, r.p99_us,
                r.flood_delivered_pps, r.flood_offered_pps, r.ct_entries, r.ct_capacity, r.xlb_drops
            );
        }
    };
    // Each part starts a fresh xlb (an empty flow table), the same way.
    let start = || {
        start_xlb(
            &o.xlb_bin,
            &f.t.lb,
            &ifaces,
            &lbconfig(),
            o.lb_cpu,
            o.nice,
            &extra,
            dir,
        )
    };
    // A: established-flow forwarding, 1024 flows vs. many.
    {
        let xlb = start()?;
        let r = measure(&f, o, &xlb, S_1K, rep, &est_tx(&f, o, 1024, None)?, None)?;
        say(&r);
        runs.push(r);
        // Warm: every flow once, paced so that xlb creates every entry (at
        // max rate most of the first packets would be lost), so the measured
        // run forwards established flows only.
        let mut warm = est_tx(&f, o, o.many, Some(WARM_PPS))?;
        warm.count = u64::from(o.many);
        warm.duration = Duration::from_secs(60);
        pktgen::run(Some(&warm), Some(&rx(&f, o)), false).context("warming the flows")?;
        let r = measure(
            &f,
            o,
            &xlb,
            S_MANY,
            rep,
            &est_tx(&f, o, o.many, None)?,
            None,
        )?;
        say(&r);
        if r.ct_entries < 2 * u64::from(o.many) {
            eprintln!(
                "  note: xlb has {} conntrack entries (two per flow), fewer than for the {} flows sent (capacity {})",
                r.ct_entries, o.many, r.ct_capacity
            );
        }
        runs.push(r);
    }
    if lab::interrupted() {
        bail!("interrupted");
    }
    // B: the same established flows at a fixed rate, without and with a SYN flood.
    {
        let xlb = start()?;
        let est = est_tx(&f, o, 1024, Some(o.est_rate))?;
        // Warm the 1024 flows first.
        let mut warm = est.clone();
        warm.count = 2048;
        pktgen::run(Some(&warm), Some(&rx(&f, o)), false).context("warming")?;
        let r = measure(&f, o, &xlb, S_CALM, rep, &est, None)?;
        say(&r);
        runs.push(r);
        let mut flood = TxOpts::new(&f.c2, SocketAddr::from((VIP, FLOOD_PORT)));
        flood.netns = Some(f.t.cl.clone());
        flood.dst_mac = Some(mac(&f.t.lb, &f.l2)?);
        flood.proto = Proto::Syn;
        flood.flows = o.many;
        flood.src_ips = o.many.div_ceil(60_000).max(1);
        flood.duration = Duration::from_secs_f64(o.secs);
        flood.count = 500_000_000;
        flood.cpus = vec![o.gen_cpu];
        flood.nice = o.nice;
        let r = measure(&f, o, &xlb, S_FLOOD, rep, &est, Some(&flood))?;
        say(&r);
        runs.push(r);
    }
    Ok(())
}

/// Run the suite; write `flows.{md,json}`.
pub fn run(o: &FlowsOpts, command: &str) -> Result<FlowsReport> {
    if o.reps == 0 || o.secs <= 0.0 || o.secs > 60.0 || o.many == 0 {
        bail!("--reps >= 1, --flows-secs in (0, 60], --many-flows >= 1");
    }
    let load0 = procs::loadavg();
    let dir = std::env::temp_dir().join(format!("xlb-perf-flows-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut runs = Vec::new();
    let mut res = Ok(());
    for rep in 0..o.reps {
        if lab::interrupted() {
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
    let _ = std::fs::remove_dir_all(&dir);
    res?;
    let mut summary = Vec::new();
    for sc in [S_1K, S_MANY, S_CALM, S_FLOOD] {
        let mine: Vec<&FlowsRun> = runs.iter().filter(|r| r.scenario == sc).collect();
        let col = |g: fn(&FlowsRun) -> f64| spread(&mine.iter().map(|r| g(r)).collect::<Vec<_>>());
        summary.push(FlowsSummary {
            scenario: sc.to_string(),
            delivered: col(|r| r.delivered_mpps),
            loss: col(|r| r.loss).median,
            p50_us: col(|r| r.p50_us).median,
            p99_us: col(|r| r.p99_us).median,
            flood_delivered_pps: col(|r| r.flood_delivered_pps).median,
            flood_offered_pps: col(|r| r.flood_offered_pps).median,
            ct_entries: mine.iter().map(|r| r.ct_entries).max().unwrap_or(0),
        });
    }
    let report = FlowsReport {
        when: sh(&["date", "-u", "+%Y-%m-%dT%H:%M:%SZ"])
            .unwrap_or_default()
            .trim()
            .to_string(),
        command: command.to_string(),
        placement: format!(
            "generators (established and flood, AF_XDP TX) pinned to cpu{g}; receiver (AF_XDP RX) pinned to cpu{r}; \
             xlb daemon pinned to cpu{l} (one worker for all three interfaces, {poll}, --conntrack-buckets {b}); \
             veth NAPI (xlb's XDP program and the copy into its UMEM) runs in the sender's softirq; nice of generators, receiver and xlb: {nice}",
            nice = o.nice.map_or("unchanged".to_string(), |n| n.to_string()),
            g = o.gen_cpu,
            r = o.rx_cpu,
            l = o.lb_cpu,
            b = o.ct_buckets,
            poll = if o.busy_poll { "busy-polling" } else { "blocking in poll() when idle" }
        ),
        loadavg: (load0, procs::loadavg()),
        summary,
        runs,
    };
    std::fs::create_dir_all(&o.out)?;
    std::fs::write(o.out.join("flows.md"), markdown(&report, o))?;
    std::fs::write(
        o.out.join("flows.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(report)
}

/// The Markdown report.
pub fn markdown(r: &FlowsReport, o: &FlowsOpts) -> String {
    let reps = r.runs.iter().map(|x| x.rep).max().map_or(0, |m| m + 1);
    let mut s = String::new();
    s += "# Many flows and a SYN flood through the xlb daemon\n\n";
    s += &format!(
        "- when: {}\n- command: `{}`\n- load average (1 min) at start / end: {:.2} / {:.2}\n- placement: {}\n- many flows: {}; established rate in the flood comparison: {} packets/s (UDP 64 B); flood: TCP SYNs over {} source address/port pairs, as fast as the generator goes, to a DNAT service\n\n",
        r.when, r.command, r.loadavg.0, r.loadavg.1, r.placement, o.many, o.est_rate, o.many
    );
    s += &format!("Median of {reps} repetition(s).\n\n");
    s += "| scenario | delivered Mpps [min–max] | loss | p50 µs | p99 µs | flood SYN/s offered | new flows/s delivered (SYNs at the backends) | xlb conntrack entries (max; 2 per flow) |\n|---|---|---|---|---|---|---|---|\n";
    for x in &r.summary {
        s += &format!(
            "| {} | {:.3} [{:.3}–{:.3}] | {:.2} % | {:.0} | {:.0} | {:.0} | {:.0} | {} |\n",
            x.scenario,
            x.delivered.median,
            x.delivered.min,
            x.delivered.max,
            100.0 * x.loss,
            x.p50_us,
            x.p99_us,
            x.flood_offered_pps,
            x.flood_delivered_pps,
            x.ct_entries
        );
    }
    s += "\n## Runs\n\n| rep | scenario | flows | offered Mpps | delivered Mpps | loss | p50 µs | p99 µs | flood offered/s | flood delivered/s | conntrack | xlb drops | xlb | gen cpu | rx cpu | CPUs | NET_RX/cpu | load |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for x in &r.runs {
        let p: Vec<String> = x
            .procs
            .iter()
            .map(|u| format!("cpu{:?} {:.0} %", u.cpus, u.core_pct))
            .collect();
        let c: Vec<String> = x
            .cpus
            .iter()
            .map(|c| {
                format!(
                    "cpu{}: usr {:.0} sys {:.0} si {:.0} idle {:.0}",
                    c.cpu, c.user, c.system, c.softirq, c.idle
                )
            })
            .collect();
        s += &format!(
            "| {} | {} | {} | {:.3} | {:.3} | {:.2} % | {:.0} | {:.0} | {:.0} | {:.0} | {}/{} | {} | {} | {:?} | {:?} | {} | {:?} | {:.2} |\n",
            x.rep + 1,
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
            x.xlb_drops,
            p.join(" "),
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

    #[test]
    fn the_lbconfig_has_a_udp_and_a_flooded_tcp_service() {
        let v: serde_json::Value = serde_json::from_str(&lbconfig()).expect("JSON");
        let a = v["lbAttr"].as_array().expect("rules");
        assert_eq!(a.len(), 2);
        assert_eq!(a[0]["serviceArguments"]["protocol"], "udp");
        assert_eq!(a[1]["serviceArguments"]["protocol"], "tcp");
        assert_eq!(a[1]["endpoints"][2]["endpointIP"], "10.98.1.23");
    }
}
