//! A fixed amount of established-flow work, for instruction-level profiling:
//! `valgrind --tool=callgrind target/release/examples/profile [flows] [batches]`.

use xlb_benches::{established, Batch};

fn main() {
    let mut args = std::env::args().skip(1);
    let flows: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let buckets = xlb_benches::buckets_for(flows);
    let (mut p, t, batches) = established(flows, buckets);
    let mut b = Batch::new();
    let start = std::time::Instant::now();
    for k in 0..rounds {
        b.run(Some(&mut p), &t, 2, &batches[k % batches.len()]);
    }
    let ns = start.elapsed().as_nanos() as f64 / (rounds * xlb_benches::BATCH) as f64;
    println!("{flows} flows: {ns:.1} ns/packet (including the buffer refresh)");
}
