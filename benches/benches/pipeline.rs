//! Per-packet cost of the pipeline, batch of 64, one core.
//!
//! Scenarios (issue targets in brackets):
//! - established TCP flow, 10k tracked flows        [≤ 25 ns/packet]
//! - established TCP flow, 1M tracked flows         [≤ 50 ns/packet]
//! - new flow: SYN → Maglev → conntrack insert, into a table with room
//!   (the default 2^15-bucket shard, emptied in place outside the timed
//!   region before it passes a quarter full)                       [≤ 150 ns/packet]
//! - new flow into a full table: every insert evicts a flow (no target;
//!   reported so the cost of a SYN flood is known)
//! - reference: refreshing the batch buffers only (the copy every scenario
//!   includes, since the pipeline rewrites frames in place), so the
//!   pipeline's own cost is the difference, and the ratio of each scenario to
//!   it compares runs made under different machine load.
//!
//! Run: `cargo bench -p xlb-benches --bench pipeline`. Criterion reports time
//! per batch and packets/s; the summary printed at the end gives ns/packet
//! net of the reference, Mpps, the ratio to the reference, and the same
//! figure counted in on-CPU time (the time the thread actually ran: on a
//! shared machine the wall clock also counts waiting for a core).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use xlb_benches::{
    buckets_for, established, fresh_pipeline, on_cpu_ns, syn_batches, tables, Batch, BATCH,
};
use xlb_dataplane::conntrack::{ConntrackConfig, WAYS};
use xlb_dataplane::pipeline::Pipeline;
use xlb_dataplane::tables::Tables;
use xlb_dataplane::Verdict;

/// Mean (wall, on-CPU) ns per packet of `f` over about a second. `f` runs
/// some batches and returns how many, with the wall and on-CPU nanoseconds
/// to count (it may leave set-up out).
fn measure(mut f: impl FnMut() -> (u64, u64, u64)) -> (f64, f64) {
    let start = Instant::now();
    let (mut batches, mut wall, mut cpu) = (0u64, 0u64, 0u64);
    while start.elapsed() < Duration::from_millis(1000) {
        let (n, w, c) = f();
        batches += n;
        wall += w;
        cpu += c;
    }
    let pk = (batches * BATCH as u64) as f64;
    (wall as f64 / pk, cpu as f64 / pk)
}

/// Puts a scenario's table back as its next pass needs it.
type Reset = Box<dyn FnMut(&mut Pipeline)>;

/// Runs `batches` of one scenario; the timed region is the batch runs only.
struct Scenario {
    p: Pipeline,
    t: Tables,
    b: Batch,
    batches: Vec<Vec<Vec<u8>>>,
    k: usize,
    /// Called (untimed) when `batches` wrap around, to put the pipeline's
    /// table back as the pass needs it (emptied in place, not reallocated),
    /// or `None` to keep going on the same one.
    reset: Option<Reset>,
    now: u64,
    expect: fn(&Verdict) -> bool,
}

impl Scenario {
    /// Run `n` batches; the wall time of the runs (resets excluded). The
    /// clock is read around each stretch between resets, not per batch.
    fn run(&mut self, n: u64) -> Duration {
        let mut d = Duration::ZERO;
        let mut left = n as usize;
        while left > 0 {
            if self.k == self.batches.len() {
                self.k = 0;
                if let Some(r) = self.reset.as_mut() {
                    r(&mut self.p);
                }
            }
            let m = left.min(self.batches.len() - self.k);
            let t0 = Instant::now();
            for b in &self.batches[self.k..self.k + m] {
                self.b.run(Some(&mut self.p), &self.t, self.now, b);
            }
            d += t0.elapsed();
            self.k += m;
            left -= m;
        }
        assert!(
            self.b.verdicts.iter().all(self.expect),
            "{:?}",
            self.b.verdicts[0]
        );
        d
    }

    /// A whole pass over the batches, as (batches, wall ns, on-CPU ns); a
    /// reset comes before it, outside both clocks.
    fn pass(&mut self) -> (u64, u64, u64) {
        if self.k == self.batches.len() {
            self.k = 0;
            if let Some(r) = self.reset.as_mut() {
                r(&mut self.p);
            }
        }
        let n = (self.batches.len() - self.k) as u64;
        let c0 = on_cpu_ns();
        let wall = self.run(n);
        (n, wall.as_nanos() as u64, on_cpu_ns().saturating_sub(c0))
    }
}

fn bench(c: &mut Criterion, name: &str, s: &mut Scenario) -> (f64, f64) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function(name, |b| b.iter_custom(|iters| s.run(iters)));
    g.finish();
    measure(|| s.pass())
}

fn forwarded(v: &Verdict) -> bool {
    matches!(v, Verdict::Tx(1))
}

fn est(flows: u32) -> Scenario {
    let (p, t, batches) = established(flows, buckets_for(flows));
    Scenario {
        p,
        t,
        b: Batch::new(),
        batches,
        k: 0,
        reset: None,
        now: 2,
        expect: forwarded,
    }
}

fn new_flows() -> Scenario {
    // Flows per pass: their two entries each fill a quarter of the default
    // shard's slots, so (practically) no bucket overflows.
    let slots = ConntrackConfig::default().buckets_per_shard * WAYS;
    Scenario {
        p: fresh_pipeline(ConntrackConfig::default().buckets_per_shard),
        t: tables(),
        b: Batch::new(),
        batches: syn_batches(0, slots / 4 / 2 / BATCH),
        k: 0,
        reset: Some(Box::new(|p: &mut Pipeline| {
            p.clear_flows();
        })),
        now: 3,
        expect: forwarded,
    }
}

/// Every SYN finds its bucket full: the table (4096 buckets × 8 ways) is
/// filled first with other flows, untimed.
fn new_flows_full_table() -> Scenario {
    const BUCKETS: usize = 4096;
    let t = tables();
    let fill = syn_batches(1 << 22, BUCKETS * 8 / BATCH);
    let mut refill = {
        let t = tables();
        let mut b = Batch::new();
        move |p: &mut Pipeline| {
            p.clear_flows();
            for f in &fill {
                b.run(Some(&mut *p), &t, 1, f);
            }
        }
    };
    let mut p = fresh_pipeline(BUCKETS);
    refill(&mut p);
    Scenario {
        p,
        t,
        b: Batch::new(),
        batches: syn_batches(0, BUCKETS * 8 / BATCH),
        k: 0,
        reset: Some(Box::new(refill)),
        now: 3,
        expect: forwarded,
    }
}

fn benches(c: &mut Criterion) {
    // Reference: the per-batch buffer refresh alone, over the same 1024
    // batches (4 MiB of source frames) the established scenarios copy in.
    let mut e10k = est(10_000);
    let t = tables();
    let mut rb = Batch::new();
    let mut k = 0;
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("reference_copy_only", |b| {
        b.iter(|| {
            k = (k + 1) % e10k.batches.len();
            rb.run(None, &t, 0, &e10k.batches[k]);
        })
    });
    g.finish();
    // (A whole pass over the batches per clock reading, as the scenarios
    // do: reading the on-CPU clock is a /proc read of a few microseconds,
    // which every 64 batches would add ~1 ns per packet to the reference.)
    let reference = measure(|| {
        let (c0, t0) = (on_cpu_ns(), Instant::now());
        for _ in 0..e10k.batches.len() {
            k = (k + 1) % e10k.batches.len();
            rb.run(None, &t, 0, &e10k.batches[k]);
        }
        (
            e10k.batches.len() as u64,
            t0.elapsed().as_nanos() as u64,
            on_cpu_ns().saturating_sub(c0),
        )
    });

    let rows = [
        ("established TCP, 10k flows", Some(25.0), {
            bench(c, "established_10k_flows", &mut e10k)
        }),
        ("established TCP, 1M flows", Some(50.0), {
            bench(c, "established_1m_flows", &mut est(1_000_000))
        }),
        ("new flow (SYN, Maglev, insert)", Some(150.0), {
            bench(c, "new_flow_syn", &mut new_flows())
        }),
        ("new flow, full table (evicts)", None, {
            bench(c, "new_flow_syn_full_table", &mut new_flows_full_table())
        }),
    ];

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?");
    println!();
    println!(
        "xlb pipeline, batch of {BATCH}, one core, load average {load}: ns/packet net of the \
         buffer refresh (wall clock | on CPU)"
    );
    println!(
        "  reference: buffer refresh            {:6.1} | {:6.1} ns/packet",
        reference.0, reference.1
    );
    for (name, target, (wall, cpu)) in rows {
        let net = (wall - reference.0, cpu - reference.1);
        let verdict = match target {
            Some(t) if net.1 <= t => format!("target ≤ {t} ns: met on CPU"),
            Some(t) => format!("target ≤ {t} ns: NOT met"),
            None => "no target".to_string(),
        };
        println!(
            "  {name:<36}{:6.1} | {:6.1} ns/packet  {:6.2} | {:6.2} Mpps  {:5.1}× reference  ({verdict})",
            net.0,
            net.1,
            1000.0 / net.0,
            1000.0 / net.1,
            wall / reference.0,
        );
    }
}

criterion_group! {
    name = pipeline;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(pipeline);
