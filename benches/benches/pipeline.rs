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
//! - new flow with connection sync on: as "new flow", each flow also
//!   announced on the worker's sync ring (drained outside the timed
//!   region, as control's sync thread would drain it) [issue 17: new-flow
//!   rate with sync ≥ 0.8× without]
//! - reference: refreshing the batch buffers only (the copy every scenario
//!   includes, since the pipeline rewrites frames in place), so the
//!   pipeline's own cost is the difference, and the ratio of each scenario to
//!   it compares runs made under different machine load.
//!
//! Run: `cargo bench -p xlb-benches --bench pipeline`. Criterion reports time
//! per batch and packets/s; the summary printed at the end measures every
//! scenario and the reference in five interleaved rounds and gives, per
//! scenario, the median round's ns/packet net of the reference, the range
//! of the rounds, Mpps, the ratio to the reference, and the same figure
//! counted in on-CPU time (the time the thread actually ran: on a
//! shared machine the wall clock also counts waiting for a core).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use xlb_benches::{
    buckets_for, cpu_id, established, fresh_pipeline, on_cpu_ns, pin_to_last_core, syn_batches,
    tables, Batch, BATCH,
};
use xlb_dataplane::conntrack::{ConntrackConfig, WAYS};
use xlb_dataplane::pipeline::Pipeline;
use xlb_dataplane::sync::sync_queues;
use xlb_dataplane::tables::Tables;
use xlb_dataplane::Verdict;

/// Rounds of the summary: every scenario and the reference are measured
/// once per round, in turn, and the summary gives each one's median round.
/// (The machine's speed drifts over seconds on shared cores: interleaved
/// rounds see the same drift, and one slow stretch moves no median.)
const ROUNDS: usize = 5;
/// How long each scenario runs per round.
const ROUND: Duration = Duration::from_millis(400);

/// Mean (wall, on-CPU) ns per packet of `f` over about `ROUND`. `f` runs
/// some batches and returns how many, with the wall and on-CPU nanoseconds
/// to count (it may leave set-up out).
fn measure(mut f: impl FnMut() -> (u64, u64, u64)) -> (f64, f64) {
    let start = Instant::now();
    let (mut batches, mut wall, mut cpu) = (0u64, 0u64, 0u64);
    while start.elapsed() < ROUND {
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

fn bench(c: &mut Criterion, name: &str, s: &mut Scenario) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function(name, |b| b.iter_custom(|iters| s.run(iters)));
    g.finish();
}

/// The median of `v` (by the on-CPU figure), and the smallest and largest
/// on-CPU figures.
fn median(mut v: Vec<(f64, f64)>) -> ((f64, f64), f64, f64) {
    v.sort_by(|a, b| a.1.total_cmp(&b.1));
    let lo = v.first().map_or(f64::NAN, |x| x.1);
    let hi = v.last().map_or(f64::NAN, |x| x.1);
    (
        v.get(v.len() / 2).copied().unwrap_or((f64::NAN, f64::NAN)),
        lo,
        hi,
    )
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

/// [`new_flows`] with connection sync on: every flow is announced on the
/// worker's out ring, which the reset empties (untimed) before each pass.
fn new_flows_sync() -> Scenario {
    let mut s = new_flows();
    let per_pass: usize = s.batches.len() * BATCH;
    let (mut hub, mut ends) = sync_queues(1, per_pass.next_power_of_two());
    let ends = ends.pop().expect("one worker's ends");
    s.p.set_sync(ends, 0);
    let mut drained = Vec::with_capacity(per_pass);
    s.reset = Some(Box::new(move |p: &mut Pipeline| {
        p.clear_flows();
        drained.clear();
        hub.drain(&mut drained, usize::MAX);
        assert_eq!(hub.dropped(), 0, "the ring holds a whole pass");
    }));
    s
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
    // One core, as a worker has: pinned, so that no migration between
    // cores empties the caches mid-measurement.
    let cpu = pin_to_last_core();
    // Reference: the per-batch buffer refresh alone, over the same 1024
    // batches (4 MiB of source frames) the established scenarios copy in.
    let e10k = est(10_000);
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
    // The reference copies the same 1024 batches the established scenarios
    // do, from its own copy of them.
    let ref_batches = e10k.batches.clone();
    // (A whole pass over the batches per clock reading, as the scenarios
    // do: reading the on-CPU clock is a /proc read of a few microseconds,
    // which every 64 batches would add ~1 ns per packet to the reference.)
    let mut reference = || {
        measure(|| {
            let (c0, t0) = (on_cpu_ns(), Instant::now());
            for b in &ref_batches {
                rb.run(None, &t, 0, b);
            }
            (
                ref_batches.len() as u64,
                t0.elapsed().as_nanos() as u64,
                on_cpu_ns().saturating_sub(c0),
            )
        })
    };

    let mut rows: [(&str, &str, Option<f64>, Scenario); 5] = [
        (
            "established TCP, 10k flows",
            "established_10k_flows",
            Some(25.0),
            e10k,
        ),
        (
            "established TCP, 1M flows",
            "established_1m_flows",
            Some(50.0),
            est(1_000_000),
        ),
        (
            "new flow (SYN, Maglev, insert)",
            "new_flow_syn",
            Some(150.0),
            new_flows(),
        ),
        (
            "new flow, sync on (announced)",
            "new_flow_syn_sync",
            None,
            new_flows_sync(),
        ),
        (
            "new flow, full table (evicts)",
            "new_flow_syn_full_table",
            None,
            new_flows_full_table(),
        ),
    ];
    for (_, id, _, s) in rows.iter_mut() {
        bench(c, id, s);
    }
    // The summary's rounds: reference, then each scenario, ROUNDS times.
    let mut refs = Vec::new();
    let mut nets: Vec<Vec<(f64, f64)>> = vec![Vec::new(); rows.len()];
    let mut gross: Vec<Vec<(f64, f64)>> = vec![Vec::new(); rows.len()];
    for _ in 0..ROUNDS {
        let r = reference();
        refs.push(r);
        for (k, (_, _, _, s)) in rows.iter_mut().enumerate() {
            let m = measure(|| s.pass());
            gross[k].push(m);
            nets[k].push((m.0 - r.0, m.1 - r.1));
        }
    }

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?");
    let (rmed, _, _) = median(refs);
    println!();
    println!(
        "xlb pipeline on {}, batch of {BATCH}, one core ({}), load average {load}: ns/packet net \
         of the buffer refresh (wall clock | on CPU), median of {ROUNDS} interleaved rounds \
         [on-CPU range]",
        cpu_id(),
        cpu.map_or("not pinned".to_string(), |c| format!("pinned to CPU {c}"))
    );
    println!(
        "  reference: buffer refresh            {:6.1} | {:6.1} ns/packet",
        rmed.0, rmed.1
    );
    for (k, (name, _, target, _)) in rows.iter().enumerate() {
        let (net, lo, hi) = median(nets[k].clone());
        let (g, _, _) = median(gross[k].clone());
        let verdict = match target {
            Some(t) if net.1 <= *t => format!("target ≤ {t} ns: met on CPU"),
            Some(t) => format!("target ≤ {t} ns: NOT met"),
            None => "no target".to_string(),
        };
        println!(
            "  {name:<36}{:6.1} | {:6.1} ns/packet [{lo:.1}–{hi:.1}]  {:6.2} | {:6.2} Mpps  {:5.1}× reference  ({verdict})",
            net.0,
            net.1,
            1000.0 / net.0,
            1000.0 / net.1,
            g.0 / rmed.0,
        );
    }
}

criterion_group! {
    name = pipeline;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(pipeline);
