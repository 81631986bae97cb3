//! Maglev: the cost of a rebuild (control plane, M = 65537 × 100 weighted
//! backends, target ≤ 10 ms) and of a lookup (data plane, ns per lookup and
//! lookups per second over a batch of flow hashes).

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use xlb_dataplane::net::{fmix64, stable_hash64};
use xlb_dataplane::select::maglev::{Maglev, MaglevBackend, DEFAULT_TABLE_SIZE};

const BACKENDS: usize = 100;
const BATCH: usize = 4096;

fn backends(weight: impl Fn(usize) -> u32) -> Vec<MaglevBackend> {
    (0..BACKENDS)
        .map(|i| MaglevBackend {
            key: stable_hash64(format!("10.0.{}.{}:80", i / 256, i % 256).as_bytes()),
            weight: weight(i),
        })
        .collect()
}

fn rebuild(c: &mut Criterion) {
    let cases = [
        ("equal", backends(|_| 1)),
        // Mixed weights 1..=10, like a fleet of mixed machine sizes.
        (
            "weighted_1_to_10",
            backends(|i| (fmix64(i as u64) % 10 + 1) as u32),
        ),
        // One backend dominates: the worst case for round-based weighting.
        (
            "skewed_1_vs_1e6",
            backends(|i| if i == 0 { 1_000_000 } else { 1 }),
        ),
    ];
    let mut g = c.benchmark_group("maglev_rebuild_65537x100");
    // Elements = table slots filled per rebuild.
    g.throughput(Throughput::Elements(DEFAULT_TABLE_SIZE as u64));
    for (name, b) in &cases {
        g.bench_function(*name, |bench| {
            bench.iter(|| Maglev::build(black_box(b), DEFAULT_TABLE_SIZE).expect("valid"))
        });
        // A plain wall-clock line too, so the ≤ 10 ms target is visible at a glance.
        let runs = 20u32;
        let t = Instant::now();
        for _ in 0..runs {
            black_box(Maglev::build(black_box(b), DEFAULT_TABLE_SIZE).expect("valid"));
        }
        println!(
            "maglev rebuild {name}: {:.3} ms per rebuild (mean of {runs})",
            t.elapsed().as_secs_f64() * 1e3 / f64::from(runs)
        );
    }
    g.finish();
}

fn lookup(c: &mut Criterion) {
    let table = Maglev::build(
        &backends(|i| (fmix64(i as u64) % 10 + 1) as u32),
        DEFAULT_TABLE_SIZE,
    )
    .expect("valid");
    let hashes: Vec<u64> = (0..BATCH as u64).map(|i| fmix64(i ^ 0xfeed)).collect();
    let mut g = c.benchmark_group("maglev_lookup");
    // Elements = lookups: criterion prints lookups/s; time/BATCH = ns/lookup.
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("multiply_shift_batch_4096", |bench| {
        bench.iter(|| {
            let mut acc = 0u32;
            for &h in black_box(&hashes) {
                acc = acc.wrapping_add(u32::from(table.lookup(h).unwrap_or(0)));
            }
            acc
        })
    });
    // Baseline: the same table indexed with a 64-bit modulo, to show what the
    // multiply-shift reduction saves.
    let slots = table.slots();
    g.bench_function("modulo_baseline_batch_4096", |bench| {
        bench.iter(|| {
            let mut acc = 0u32;
            let len = black_box(slots.len() as u64);
            for &h in black_box(&hashes) {
                acc = acc.wrapping_add(u32::from(slots[(h % len) as usize]));
            }
            acc
        })
    });
    // Dependent lookups (each hash depends on the previous result): latency
    // rather than throughput, closer to a worst case for a cold pipeline.
    g.bench_function("dependent_chain_4096", |bench| {
        bench.iter_batched(
            || 0u64,
            |mut h| {
                for _ in 0..BATCH {
                    h = fmix64(h ^ u64::from(table.lookup(h).unwrap_or(0)));
                }
                h
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, rebuild, lookup);
criterion_main!(benches);
