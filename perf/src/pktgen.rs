//! xlb-pktgen as a library: TX and/or RX jobs on threads that enter their
//! namespaces and pin themselves, a once-a-second progress line, and the
//! final [`Summary`]. The CLI (`src/bin/xlb-pktgen.rs`), the harness and the
//! tests all call [`run`].

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use xlb_dataplane::net::MacAddr;
use xlb_testkit::netns;

use crate::engine::{
    self, check_bounds, rx_summary, sent_per_flow, tx_summary, Progress, RxJob, RxMode, Summary,
    TxJob,
};
use crate::frames::{FlowSpec, Proto, SizeSpec, Templates};
use crate::host::{current_cpu, gettid, pin, renice};
use crate::report::stats;

/// The sending side.
#[derive(Debug, Clone)]
pub struct TxOpts {
    /// Interface to send on.
    pub iface: String,
    /// Namespace of the interface (`None` = ours).
    pub netns: Option<String>,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// Destination MAC (`None` = the kernel's neighbour for the route to `dst`).
    pub dst_mac: Option<MacAddr>,
    /// Source MAC (`None` = the interface's).
    pub src_mac: Option<MacAddr>,
    /// First source address (`None` = the interface's first of `dst`'s family).
    pub src_ip: Option<IpAddr>,
    /// Source addresses to cycle over.
    pub src_ips: u32,
    /// First source port.
    pub sport: u16,
    /// Flows.
    pub flows: u32,
    /// Protocol.
    pub proto: Proto,
    /// Frame size.
    pub size: SizeSpec,
    /// Total packets per second (`None` = max).
    pub rate: Option<u64>,
    /// Most packets (all queues).
    pub count: u64,
    /// Longest run.
    pub duration: Duration,
    /// TX queues (threads).
    pub queues: u32,
    /// CPU per queue (cycled); empty = unpinned.
    pub cpus: Vec<usize>,
    /// Frames per batch.
    pub batch: usize,
    /// Nice value for the TX threads (`None` = inherit).
    pub nice: Option<i32>,
}

impl TxOpts {
    /// Defaults for sending to `dst` out of `iface`.
    pub fn new(iface: &str, dst: SocketAddr) -> TxOpts {
        TxOpts {
            iface: iface.to_string(),
            netns: None,
            dst,
            dst_mac: None,
            src_mac: None,
            src_ip: None,
            src_ips: 1,
            sport: 1024,
            flows: 1024,
            proto: Proto::Udp,
            size: SizeSpec::Fixed(64),
            rate: None,
            count: 1_000_000_000,
            duration: Duration::from_secs(10),
            queues: 1,
            cpus: Vec::new(),
            batch: 64,
            nice: None,
        }
    }
}

/// The receiving side.
#[derive(Debug, Clone)]
pub struct RxOpts {
    /// Interface to count on.
    pub iface: String,
    /// Its namespace.
    pub netns: Option<String>,
    /// AF_XDP or raw socket.
    pub mode: RxMode,
    /// Addresses to receive for (XDP mode; empty = the interface's).
    pub addrs: Vec<IpAddr>,
    /// Queues (threads).
    pub queues: u32,
    /// CPU per queue (cycled); empty = unpinned.
    pub cpus: Vec<usize>,
    /// Stop after this many stamped packets.
    pub count: u64,
    /// Stop after this long (alone); with TX: TX time + `linger`.
    pub duration: Duration,
    /// With TX: how long to keep counting after the sender stops.
    pub linger: Duration,
    /// Verify L4 checksums of stamped frames.
    pub verify: bool,
    /// Nice value for the RX threads (`None` = inherit).
    pub nice: Option<i32>,
}

impl RxOpts {
    /// Defaults for counting on `iface`.
    pub fn new(iface: &str) -> RxOpts {
        RxOpts {
            iface: iface.to_string(),
            netns: None,
            mode: RxMode::Xdp,
            addrs: Vec::new(),
            queues: 1,
            cpus: Vec::new(),
            count: u64::MAX,
            duration: Duration::from_secs(10),
            linger: Duration::from_millis(300),
            verify: true,
            nice: None,
        }
    }
}

fn enter(ns: &Option<String>) -> Result<()> {
    match ns {
        Some(n) => Ok(netns::enter(n)?),
        None => Ok(()),
    }
}

fn resolve_mac(dst: IpAddr) -> Result<MacAddr> {
    let (dev, via) = xlb_io::kernel::netinfo::route_to(dst)?
        .ok_or_else(|| anyhow!("no route to {dst}; pass --dst-mac"))?;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(m) = xlb_io::kernel::netinfo::neighbours()?.get(&(via, dev.clone())) {
            return Ok(*m);
        }
        if Instant::now() >= deadline {
            bail!("no neighbour entry for {via} on {dev}; pass --dst-mac");
        }
        xlb_io::kernel::netinfo::trigger_resolution(via);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Build the flow templates; call from a thread in the TX namespace.
fn templates_for(o: &TxOpts) -> Result<Templates> {
    let info = xlb_io::kernel::netinfo::iface_info(&o.iface)?;
    let src_ip = match o.src_ip {
        Some(a) => a,
        None => *info
            .addrs
            .iter()
            .find(|a| a.is_ipv4() == o.dst.is_ipv4())
            .ok_or_else(|| {
                anyhow!(
                    "{} has no address of {}'s family; pass --src-ip",
                    o.iface,
                    o.dst
                )
            })?,
    };
    let dst_mac = match o.dst_mac {
        Some(m) => m,
        None => resolve_mac(o.dst.ip())?,
    };
    let spec = FlowSpec {
        src_mac: o.src_mac.unwrap_or(info.mac),
        dst_mac,
        src_ip,
        src_ips: o.src_ips.max(1),
        sport_min: o.sport,
        dst: o.dst,
        flows: o.flows,
        proto: o.proto,
    };
    Ok(Templates::new(&spec, &o.size)?)
}

fn cpu_for(cpus: &[usize], i: usize) -> Option<usize> {
    (!cpus.is_empty()).then(|| cpus[i % cpus.len()])
}

/// Run TX, RX or both; print a progress line to stderr each second if `live`.
pub fn run(tx: Option<&TxOpts>, rx: Option<&RxOpts>, live: bool) -> Result<Summary> {
    if tx.is_none() && rx.is_none() {
        bail!("nothing to do");
    }
    if let Some(t) = tx {
        check_bounds(t.count, t.duration)?;
        if t.queues == 0 || t.batch == 0 || t.batch > 1024 {
            bail!("--queues must be >= 1 and --batch in 1..=1024");
        }
    }
    if let Some(r) = rx {
        check_bounds(r.count, r.duration)?;
        if r.queues == 0 {
            bail!("--rx-queues must be >= 1");
        }
    }
    let stop = AtomicBool::new(false);
    let rx_stop = AtomicBool::new(false);
    let progress = Progress::default();
    let readies: Vec<AtomicBool> = (0..rx.map_or(0, |r| r.queues))
        .map(|_| AtomicBool::new(false))
        .collect();
    // Templates need the TX namespace's interface facts: a helper thread.
    let templates = match tx {
        Some(t) => Some(
            std::thread::scope(|s| {
                s.spawn(|| -> Result<Templates> {
                    enter(&t.netns)?;
                    templates_for(t)
                })
                .join()
            })
            .map_err(|_| anyhow!("template thread panicked"))??,
        ),
        None => None,
    };
    std::thread::scope(|s| -> Result<Summary> {
        // Receivers first, so nothing is missed.
        let mut rx_handles = Vec::new();
        if let Some(r) = rx {
            let rx_for = match tx {
                Some(t) => t.duration + r.linger + Duration::from_secs(5),
                None => r.duration,
            };
            for q in 0..r.queues {
                let ready = &readies[q as usize];
                let (stop, progress) = (&rx_stop, &progress);
                let job = RxJob {
                    iface: r.iface.clone(),
                    queue: q,
                    mode: r.mode,
                    count: r.count,
                    duration: rx_for,
                    verify: r.verify,
                };
                let cpu = cpu_for(&r.cpus, q as usize);
                rx_handles.push(s.spawn(move || -> Result<(engine::RxResult, i32)> {
                    let res = (|| {
                        enter(&r.netns)?;
                        if let Some(c) = cpu {
                            pin(c);
                        }
                        if let Some(n) = r.nice {
                            renice(gettid(), n);
                        }
                        let addrs = if r.addrs.is_empty() {
                            xlb_io::kernel::netinfo::iface_info(&r.iface)?.addrs
                        } else {
                            r.addrs.clone()
                        };
                        engine::run_rx(&job, &addrs, stop, progress, ready)
                    })();
                    // Unblock the waiter on failure too.
                    ready.store(true, Ordering::Release);
                    Ok((res?, current_cpu()))
                }));
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while !readies.iter().all(|r| r.load(Ordering::Acquire)) {
                if Instant::now() > deadline {
                    rx_stop.store(true, Ordering::Relaxed);
                    bail!("receivers not ready after 10 s");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            if rx_handles.iter().any(|h| h.is_finished()) && tx.is_some() {
                // A receiver that failed to open: report its error now.
                rx_stop.store(true, Ordering::Relaxed);
                for h in rx_handles {
                    h.join().map_err(|_| anyhow!("RX thread panicked"))??;
                }
                bail!("a receiver stopped before the sender started");
            }
        }

        // Senders.
        let mut tx_handles = Vec::new();
        if let (Some(t), Some(tpl)) = (tx, templates.as_ref()) {
            for q in 0..t.queues {
                let flows: Vec<u32> = (0..t.flows).filter(|f| f % t.queues == q).collect();
                let share = |v: u64| {
                    v / u64::from(t.queues) + u64::from(u64::from(q) < v % u64::from(t.queues))
                };
                let job = TxJob {
                    iface: t.iface.clone(),
                    queue: q,
                    flows,
                    rate: t.rate.map(|r| share(r).max(1)),
                    count: share(t.count),
                    duration: t.duration,
                    batch: t.batch,
                    frames: 4096,
                };
                let cpu = cpu_for(&t.cpus, q as usize);
                let (stop, progress) = (&stop, &progress);
                tx_handles.push(s.spawn(move || -> Result<(engine::TxResult, i32)> {
                    enter(&t.netns)?;
                    if let Some(c) = cpu {
                        pin(c);
                    }
                    if let Some(n) = t.nice {
                        renice(gettid(), n);
                    }
                    let r = engine::run_tx(&job, tpl, stop, progress)?;
                    Ok((r, current_cpu()))
                }));
            }
        }

        // Progress until the senders finish (or, RX only, the receivers).
        let t0 = Instant::now();
        let mut last = (0u64, 0u64, Instant::now());
        loop {
            let running = if tx.is_some() {
                tx_handles.iter().any(|h| !h.is_finished())
            } else {
                rx_handles.iter().any(|h| !h.is_finished())
            };
            if !running {
                break;
            }
            if crate::host::interrupted() {
                stop.store(true, Ordering::Relaxed);
                rx_stop.store(true, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(100));
            if live && last.2.elapsed() >= Duration::from_secs(1) {
                let (txn, rxn) = (
                    progress.tx.load(Ordering::Relaxed),
                    progress.rx.load(Ordering::Relaxed),
                );
                let dt = last.2.elapsed().as_secs_f64();
                eprint!(
                    "\r[{:5.1} s] tx {:.3} Mpps ({} total)  rx {:.3} Mpps ({} total)   ",
                    t0.elapsed().as_secs_f64(),
                    (txn - last.0) as f64 / dt / 1e6,
                    txn,
                    (rxn - last.1) as f64 / dt / 1e6,
                    rxn
                );
                let _ = std::io::stderr().flush();
                last = (txn, rxn, Instant::now());
            }
        }
        if live {
            eprintln!();
        }
        let mut tx_res = Vec::new();
        let mut tx_cpus = Vec::new();
        let mut tx_err = None;
        for h in tx_handles {
            match h.join().map_err(|_| anyhow!("TX thread panicked"))? {
                Ok((r, c)) => {
                    tx_res.push(r);
                    tx_cpus.push(c);
                }
                Err(e) => tx_err = Some(e),
            }
        }
        if let (Some(r), true) = (rx, tx.is_some()) {
            std::thread::sleep(r.linger);
        }
        rx_stop.store(true, Ordering::Relaxed);
        let mut rx_res = Vec::new();
        let mut rx_cpus = Vec::new();
        for h in rx_handles {
            let (r, c) = h.join().map_err(|_| anyhow!("RX thread panicked"))??;
            rx_res.push(r);
            rx_cpus.push(c);
        }
        if let Some(e) = tx_err {
            return Err(e.context("sender failed"));
        }
        let mut sum = Summary::default();
        let mut secs = None;
        if let Some(tpl) = &templates {
            let t = tx_summary(&tx_res, tpl, tx_cpus);
            secs = Some(t.secs);
            sum.tx = Some(t);
        }
        if rx.is_some() {
            let (r, all) = rx_summary(&rx_res, secs, rx_cpus);
            sum.loss = Some(if tx.is_some() {
                stats::account(&sent_per_flow(&tx_res), &all)
            } else {
                stats::estimate(&all)
            });
            sum.rx = Some(r);
        }
        Ok(sum)
    })
    .context("xlb-pktgen")
}
