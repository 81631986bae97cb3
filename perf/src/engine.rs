//! The generator's TX and RX loops, and the summary they produce.
//!
//! Both loops are bounded by a packet count *and* a duration, always, and by
//! a shared stop flag. Progress goes through relaxed atomics that a reporter
//! thread reads once a second; the loops never print.

use std::net::IpAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use xlb_io::{monotonic_ns, FramePool, XskConfig, XskIo};

use crate::frames::{l4_checksum_ok, stamp_of, Stamp, Templates};
use crate::pace::Pacer;
use crate::report::stats::{LatencySummary, LossReport, RxStats};

/// Hard ceiling on any run.
pub const MAX_DURATION: Duration = Duration::from_secs(600);

/// How long [`open_socket`] retries a queue still held by a closed socket.
const QUEUE_RELEASE_WAIT: Duration = Duration::from_secs(3);

/// UMEM chunk size of the generator's sockets (holds a 1518-byte frame).
pub const FRAME_SIZE: u32 = 2048;

/// UMEM frames of the receiver's socket.
const RX_FRAMES: u32 = 8192;

/// The generator's AF_XDP socket on (`iface`, `queue`): one UMEM of `frames`
/// frames (rounded to a power of two in 256..=65536) and one socket, through
/// which [`FramePool`] sends and receives (port 0).
///
/// One `sendto` per kick, not the workers' loop that drains the ring: the
/// sender kicks after every batch and while it waits, which is how its
/// offered rates have always been measured.
fn open_socket(iface: &str, queue: u32, frames: u32) -> Result<(FramePool<XskIo>, RawFd)> {
    let cfg = XskConfig {
        frame_count: frames.clamp(256, 1 << 16).next_power_of_two(),
        frame_size: FRAME_SIZE,
        busy_poll_budget: None,
        max_kicks: 1,
    };
    // The kernel releases a closed socket's claim on its queue in deferred
    // work: a socket opened right after the previous run's closed may find
    // the queue busy for a moment, longer on a loaded machine.
    let deadline = Instant::now() + QUEUE_RELEASE_WAIT;
    let (io, fds) = loop {
        match XskIo::create(&[iface.to_string()], queue, &cfg) {
            Err(e) if e.errno() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            r => break r.with_context(|| format!("AF_XDP socket on {iface} queue {queue}"))?,
        }
    };
    let fd = *fds.first().context("XskIo made no socket")?;
    Ok((FramePool::new(io), fd))
}

/// Live counters shared with the progress reporter.
#[derive(Debug, Default)]
pub struct Progress {
    /// Packets put on TX rings.
    pub tx: AtomicU64,
    /// Stamped packets received.
    pub rx: AtomicU64,
}

/// One TX queue's job.
#[derive(Debug, Clone)]
pub struct TxJob {
    /// Interface.
    pub iface: String,
    /// Queue index.
    pub queue: u32,
    /// Flows this queue sends (global flow numbers).
    pub flows: Vec<u32>,
    /// Packets per second for this queue (`None` = as fast as possible).
    pub rate: Option<u64>,
    /// Most packets.
    pub count: u64,
    /// Longest time.
    pub duration: Duration,
    /// Frames per TX batch.
    pub batch: usize,
    /// UMEM frames.
    pub frames: u32,
}

/// What one TX queue did.
#[derive(Debug, Clone, Default)]
pub struct TxResult {
    /// Packets put on the TX ring.
    pub sent: u64,
    /// Their bytes (without FCS).
    pub bytes: u64,
    /// Per global flow number.
    pub per_flow: Vec<u64>,
    /// From first send to the last completion (ns).
    pub elapsed_ns: u64,
    /// Packets the pacer gave up on because the sender fell behind.
    pub forgiven: u64,
    /// Frames still in flight when the run ended (not completed in 200 ms).
    pub unfinished: u64,
}

/// Send `job` with `templates`. Runs on the calling thread (pin it first).
pub fn run_tx(
    job: &TxJob,
    templates: &Templates,
    stop: &AtomicBool,
    progress: &Progress,
) -> Result<TxResult> {
    if job.flows.is_empty() {
        return Ok(TxResult::default());
    }
    let (mut port, _) = open_socket(&job.iface, job.queue, job.frames)
        .with_context(|| format!("TX socket on {} queue {}", job.iface, job.queue))?;
    let mut seqs = vec![0u32; job.flows.len()];
    let mut per_flow = vec![0u64; templates.flows() as usize];
    // (flow index, frame length) of each frame written in a batch.
    let mut batch: Vec<(usize, u64)> = Vec::with_capacity(job.batch);
    let mut cursor = 0usize;
    let (mut sent, mut bytes) = (0u64, 0u64);
    let start = monotonic_ns();
    let end = start + job.duration.min(MAX_DURATION).as_nanos() as u64;
    let mut pacer = Pacer::new(job.rate, job.batch as u32, start);
    let mut now = start;
    while sent < job.count && now < end && !stop.load(Ordering::Relaxed) {
        port.reclaim(0);
        let allow = pacer.allowance(now).min(job.count - sent) as usize;
        if allow == 0 {
            port.kick(0);
            let w = pacer.wait_ns(now);
            if w > 100_000 {
                std::thread::sleep(Duration::from_nanos(w - 50_000));
            } else {
                // Paced runs wait a few µs between packets, so the sender
                // would spin its whole core: yield it instead, or whatever
                // shares the core (the receiver, by default) waits for
                // scheduler slices and the latency tail measures those
                // (p99 ~3.5 ms at 50 kpps over a bare veth pair).
                std::thread::yield_now();
            }
            now = monotonic_ns();
            continue;
        }
        batch.clear();
        let saved = cursor;
        let ts = now;
        let n = port.send(0, allow, |_, buf| {
            let fi = cursor;
            cursor = if cursor + 1 == job.flows.len() {
                0
            } else {
                cursor + 1
            };
            let seq = seqs[fi];
            let st = Stamp {
                flow: job.flows[fi],
                seq,
                tx_ns: ts,
            };
            let len = templates.write(u64::from(seq), &st, buf);
            if len > 0 {
                seqs[fi] = seq.wrapping_add(1);
                batch.push((fi, len as u64));
            }
            len
        });
        // `send` puts a prefix of the written frames on the TX ring: all of
        // them, as it sizes the batch to the ring's room. Count that prefix;
        // should any rest stay behind, undo its sequence numbers so the
        // flows stay gap-free, and start the next batch at its first flow.
        for &(fi, len) in &batch[..n] {
            per_flow[job.flows[fi] as usize] += 1;
            bytes += len;
        }
        if n < batch.len() {
            for &(fi, _) in &batch[n..] {
                seqs[fi] = seqs[fi].wrapping_sub(1);
            }
            cursor = (saved + n) % job.flows.len();
        }
        sent += n as u64;
        pacer.sent(n as u64);
        progress.tx.fetch_add(n as u64, Ordering::Relaxed);
        now = monotonic_ns();
    }
    // Let the kernel finish what is on the ring (bounded).
    let drain_end = monotonic_ns() + 200_000_000;
    while port.in_flight(0) > 0 && monotonic_ns() < drain_end {
        port.kick(0);
        if port.reclaim(0) == 0 {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    Ok(TxResult {
        sent,
        bytes,
        per_flow,
        elapsed_ns: monotonic_ns().saturating_sub(start),
        forgiven: pacer.forgiven(),
        unfinished: u64::from(port.in_flight(0)),
    })
}

/// How the receiver gets frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RxMode {
    /// AF_XDP socket fed by xlb's steering program (addresses as "VIPs").
    Xdp,
    /// AF_PACKET raw socket (fallback; slower, sees the kernel's copy).
    Raw,
}

/// One receive job (one queue).
#[derive(Debug, Clone)]
pub struct RxJob {
    /// Interface.
    pub iface: String,
    /// Queue.
    pub queue: u32,
    /// Mode.
    pub mode: RxMode,
    /// Stop after this many stamped packets.
    pub count: u64,
    /// Stop after this long.
    pub duration: Duration,
    /// Verify every stamped frame's L4 checksum.
    pub verify: bool,
}

/// What one receiver counted.
#[derive(Debug, Clone, Default)]
pub struct RxResult {
    /// Stamped arrivals, per flow, latency.
    pub stats: RxStats,
    /// First to last stamped arrival (ns).
    pub span_ns: u64,
    /// Kernel AF_XDP drops: (RX ring full, fill ring empty, other).
    pub kernel_drops: (u64, u64, u64),
}

/// Account one received frame.
#[inline]
fn account_frame(
    st: &mut RxStats,
    f: &[u8],
    now: u64,
    verify: bool,
    first: &mut u64,
    last: &mut u64,
) {
    match stamp_of(f) {
        Some(s) => {
            if verify && !l4_checksum_ok(f) {
                st.bad_checksum += 1;
            }
            st.record(&s, now, f.len());
            if *first == 0 {
                *first = now;
            }
            *last = now;
        }
        None => st.foreign += 1,
    }
}

/// The receive side of an AF_XDP socket: xlb's steering program redirects
/// UDP/TCP to `addrs` (any port) into the socket; everything else passes.
pub struct XdpRx {
    port: FramePool<XskIo>,
    // Kept alive for the program's lifetime; detached on drop.
    _prog: xlb_io::XdpProgram,
}

impl std::fmt::Debug for XdpRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("XdpRx")
    }
}

/// Steering tables that make every address of `addrs` a UDP and TCP "VIP"
/// on all ports (a wide range becomes the program's wildcard key).
pub fn sink_tables(addrs: &[IpAddr]) -> Result<xlb_dataplane::tables::Tables> {
    use xlb_dataplane::tables::{L4Proto, Tables};
    use xlb_testkit::fixtures::{spec, Service};
    let mut services = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        for proto in [L4Proto::Udp, L4Proto::Tcp] {
            services.push(
                Service::new(*a, proto, 1)
                    .ports(1, 65535)
                    .ep(*a, 1)
                    .timeout(60)
                    .name(&format!("sink{i}{}", proto.name())),
            );
        }
    }
    Tables::build(spec(services), &Tables::empty()).context("sink steering tables")
}

impl XdpRx {
    /// Attach the steering program to `iface`, steer `addrs` to a socket on `queue`.
    pub fn open(iface: &str, queue: u32, addrs: &[IpAddr]) -> Result<XdpRx> {
        let ifindex = xlb_io::kernel::netinfo::ifindex(iface)?;
        let prog = xlb_io::XdpProgram::load_and_attach(ifindex, xlb_io::XdpMode::Native)
            .context("attaching the steering program for RX")?;
        let mut sync = xlb_io::MapSync::new(prog.steering_maps()?);
        sync.sync(&sink_tables(addrs)?)?;
        let (mut port, fd) = open_socket(iface, queue, RX_FRAMES)
            .with_context(|| format!("RX socket on {iface} queue {queue}"))?;
        port.refill(0);
        prog.register_socket(queue, fd)?;
        Ok(XdpRx { port, _prog: prog })
    }
}

/// Receive per `job` until its count or duration (or `stop`).
pub fn run_rx(
    job: &RxJob,
    addrs: &[IpAddr],
    stop: &AtomicBool,
    progress: &Progress,
    ready: &AtomicBool,
) -> Result<RxResult> {
    let mut st = RxStats::default();
    let (mut first, mut last) = (0u64, 0u64);
    let start = monotonic_ns();
    let end = start + job.duration.min(MAX_DURATION).as_nanos() as u64;
    let mut res = RxResult::default();
    match job.mode {
        RxMode::Xdp => {
            let mut rx = XdpRx::open(&job.iface, job.queue, addrs)?;
            ready.store(true, Ordering::Release);
            while st.packets < job.count && !stop.load(Ordering::Relaxed) {
                let now = monotonic_ns();
                if now >= end {
                    break;
                }
                let before = st.packets;
                let n = rx.port.recv(0, 64, |f| {
                    account_frame(&mut st, f, now, job.verify, &mut first, &mut last)
                });
                if n == 0 {
                    let _ = rx.port.wait(10);
                } else {
                    progress
                        .rx
                        .fetch_add(st.packets - before, Ordering::Relaxed);
                }
            }
            let d = rx.port.device_stats();
            res.kernel_drops = (d.rx_ring_full, d.fill_ring_empty, d.rx_dropped);
        }
        RxMode::Raw => {
            let sock = crate::raw::RawSocket::open(&job.iface)?;
            ready.store(true, Ordering::Release);
            let mut buf = vec![0u8; 2048];
            while st.packets < job.count && !stop.load(Ordering::Relaxed) {
                let now = monotonic_ns();
                if now >= end {
                    break;
                }
                match sock.recv(&mut buf)? {
                    Some(n) => {
                        let before = st.packets;
                        account_frame(&mut st, &buf[..n], now, job.verify, &mut first, &mut last);
                        progress
                            .rx
                            .fetch_add(st.packets - before, Ordering::Relaxed);
                    }
                    None => sock.wait(10),
                }
            }
        }
    }
    res.span_ns = last.saturating_sub(first);
    res.stats = st;
    Ok(res)
}

/// The TX half of a summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TxSummary {
    /// Queues used.
    pub queues: u32,
    /// Packets sent.
    pub packets: u64,
    /// Bytes sent (without FCS).
    pub bytes: u64,
    /// Seconds from first send to end.
    pub secs: f64,
    /// Offered packets per second.
    pub pps: f64,
    /// Offered bits per second on the wire (with FCS, preamble and gap: +24 B).
    pub wire_bps: f64,
    /// Packets the pacer skipped because the sender fell behind.
    pub behind: u64,
    /// Wire sizes sent.
    pub wire_sizes: Vec<usize>,
    /// CPU each TX thread ended on.
    pub cpus: Vec<i32>,
}

/// The RX half of a summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RxSummary {
    /// Stamped packets received.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Received per second of the sender's run time (or of the arrival span).
    pub pps: f64,
    /// Frames without our stamp.
    pub foreign: u64,
    /// Stamped frames with a bad L4 checksum.
    pub bad_checksum: u64,
    /// Kernel AF_XDP drops (ring full, fill empty, other), summed.
    pub kernel_drops: u64,
    /// Latency.
    pub latency: LatencySummary,
    /// Latency CDF: (percent, ns) at [`crate::report::stats::CDF_POINTS`].
    pub latency_cdf: Vec<(f64, u64)>,
    /// CPU each RX thread ended on.
    pub cpus: Vec<i32>,
}

/// The final report of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Sender side (absent in `rx` mode).
    pub tx: Option<TxSummary>,
    /// Receiver side (absent in `tx` mode).
    pub rx: Option<RxSummary>,
    /// Loss accounting (exact when both sides ran in this process).
    pub loss: Option<LossReport>,
}

/// Combine TX results.
pub fn tx_summary(rs: &[TxResult], templates: &Templates, cpus: Vec<i32>) -> TxSummary {
    let packets: u64 = rs.iter().map(|r| r.sent).sum();
    let bytes: u64 = rs.iter().map(|r| r.bytes).sum();
    let ns = rs.iter().map(|r| r.elapsed_ns).max().unwrap_or(0);
    let secs = ns as f64 / 1e9;
    let per_sec = |v: f64| if secs > 0.0 { v / secs } else { 0.0 };
    TxSummary {
        queues: rs.len() as u32,
        packets,
        bytes,
        secs,
        pps: per_sec(packets as f64),
        wire_bps: per_sec(((bytes + packets * 24) * 8) as f64),
        behind: rs.iter().map(|r| r.forgiven).sum(),
        wire_sizes: templates.wire_sizes(),
        cpus,
    }
}

/// Combine RX results; `secs` is the sender's run time if known.
pub fn rx_summary(rs: &[RxResult], secs: Option<f64>, cpus: Vec<i32>) -> (RxSummary, RxStats) {
    let mut all = RxStats::default();
    for r in rs {
        all.merge(&r.stats);
    }
    let secs = secs.unwrap_or_else(|| rs.iter().map(|r| r.span_ns).max().unwrap_or(0) as f64 / 1e9);
    let s = RxSummary {
        packets: all.packets,
        bytes: all.bytes,
        pps: if secs > 0.0 {
            all.packets as f64 / secs
        } else {
            0.0
        },
        foreign: all.foreign,
        bad_checksum: all.bad_checksum,
        kernel_drops: rs
            .iter()
            .map(|r| r.kernel_drops.0 + r.kernel_drops.1 + r.kernel_drops.2)
            .sum(),
        latency: all.latency.summary(),
        latency_cdf: all.latency.cdf(&crate::report::stats::CDF_POINTS),
        cpus,
    };
    (s, all)
}

/// Per-flow TX counts summed over queues.
pub fn sent_per_flow(rs: &[TxResult]) -> Vec<u64> {
    let n = rs.iter().map(|r| r.per_flow.len()).max().unwrap_or(0);
    let mut v = vec![0u64; n];
    for r in rs {
        for (a, b) in v.iter_mut().zip(&r.per_flow) {
            *a += b;
        }
    }
    v
}

/// One human line per summary.
pub fn render(s: &Summary) -> String {
    let mut out = String::new();
    if let Some(t) = &s.tx {
        out += &format!(
            "tx: {} pkts in {:.2} s = {:.3} Mpps ({:.1} Mbit/s wire), sizes {:?}, {} queue(s), behind {}, cpus {:?}\n",
            t.packets,
            t.secs,
            t.pps / 1e6,
            t.wire_bps / 1e6,
            t.wire_sizes,
            t.queues,
            t.behind,
            t.cpus
        );
    }
    if let Some(r) = &s.rx {
        let l = r.latency;
        out += &format!(
            "rx: {} pkts = {:.3} Mpps, foreign {}, bad checksum {}, kernel drops {}; latency us p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}, cpus {:?}\n",
            r.packets,
            r.pps / 1e6,
            r.foreign,
            r.bad_checksum,
            r.kernel_drops,
            l.p50_ns as f64 / 1e3,
            l.p90_ns as f64 / 1e3,
            l.p99_ns as f64 / 1e3,
            l.max_ns as f64 / 1e3,
            r.cpus
        );
    }
    if let Some(l) = &s.loss {
        out += &format!(
            "loss: sent {} received {} lost {} ({:.3} %) duplicates {} reordered {} ({})\n",
            l.sent,
            l.received,
            l.lost,
            100.0 * l.loss_ratio(),
            l.duplicates,
            l.reordered,
            if l.exact {
                "exact"
            } else {
                "estimate from sequences"
            }
        );
    }
    out
}

/// Check counts and time bounds of a CLI request.
pub fn check_bounds(count: u64, duration: Duration) -> Result<()> {
    if count == 0 {
        bail!("--count must be at least 1");
    }
    if duration.is_zero() || duration > MAX_DURATION {
        bail!(
            "--duration must be in (0, {}] seconds",
            MAX_DURATION.as_secs()
        );
    }
    Ok(())
}
