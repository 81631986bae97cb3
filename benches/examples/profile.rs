//! A fixed amount of pipeline work, for instruction-level profiling:
//! `valgrind --tool=callgrind target/release/examples/profile [flows] [batches]`
//! for established flows, or `profile syn [batches] [buckets]` for new flows
//! (every packet a SYN from a client never seen before), or
//! `profile general [batches] [buckets]` for the same new flows through the
//! general path (the dedicated new-flow path switched off), or
//! `profile syn-sync [batches] [buckets]` for the `syn` case with
//! connection sync on (every flow announced on a ring large enough for
//! the run, left undrained so only the worker's side is counted), or
//! `profile room [passes]` for the criterion bench's "table with room"
//! new-flow case timed alone (a default shard, emptied in place before
//! each pass and filled to a quarter; only the batch runs are timed, as in
//! the bench), or
//! `profile full [batches]` for its "full table" case (4096 buckets filled
//! with other flows first, then every SYN evicts; count instructions as
//! the difference of two batch counts, as for the others).

use xlb_benches::{
    buckets_for, established, flow_table, frame, fresh_pipeline, syn_batches, tables, Batch, BATCH,
};
use xlb_dataplane::conntrack::{ConntrackConfig, WAYS};
use xlb_dataplane::pipeline::Pipeline;
use xlb_dataplane::sync::sync_queues;

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("syn") {
        args.next();
        let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2_000);
        let buckets: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1 << 19);
        return syn(rounds, buckets, true, false);
    }
    if args.peek().map(String::as_str) == Some("syn-sync") {
        args.next();
        let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2_000);
        let buckets: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1 << 19);
        return syn(rounds, buckets, true, true);
    }
    if args.peek().map(String::as_str) == Some("general") {
        args.next();
        let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2_000);
        let buckets: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1 << 19);
        return syn(rounds, buckets, false, false);
    }
    if args.peek().map(String::as_str) == Some("full") {
        args.next();
        let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(512);
        return full(rounds);
    }
    if args.peek().map(String::as_str) == Some("room") {
        args.next();
        let passes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
        return room(passes);
    }
    let flows: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let (mut p, t, batches) = established(flows, buckets_for(flows));
    let mut b = Batch::new();
    let start = std::time::Instant::now();
    let cpu = xlb_benches::on_cpu_ns();
    for k in 0..rounds {
        b.run(Some(&mut p), &t, 2, &batches[k % batches.len()]);
    }
    let ns = start.elapsed().as_nanos() as f64 / (rounds * BATCH) as f64;
    let cpu_ns = (xlb_benches::on_cpu_ns() - cpu) as f64 / (rounds * BATCH) as f64;
    println!(
        "{flows} flows: {ns:.1} ns/packet wall, {cpu_ns:.1} on CPU (including the buffer refresh)"
    );
}

/// New flows, as in the bench: the client address and port are patched
/// into a SYN template and its checksums recomputed. `fresh`: whether the
/// dedicated new-flow path takes them (else the general path does);
/// `sync`: whether connection sync announces them.
fn syn(rounds: usize, buckets: usize, fresh: bool, sync: bool) {
    let t = tables();
    let mut p = fresh_pipeline(buckets);
    p.set_new_flow_path(fresh);
    // (Kept to the end: the ring's consumer end.)
    let _hub = sync.then(|| {
        let (hub, mut ends) = sync_queues(1, rounds * BATCH);
        p.set_sync(ends.pop().expect("one worker's ends"), 0);
        hub
    });
    let mut b = Batch::new();
    let mut syns: Vec<Vec<u8>> = (0..BATCH as u32).map(|i| frame(i, 0x02)).collect();
    let mut next = 0u32;
    let start = std::time::Instant::now();
    let cpu = xlb_benches::on_cpu_ns();
    for _ in 0..rounds {
        for f in syns.iter_mut() {
            next = next.wrapping_add(1);
            let src = (0x0b00_0000 | (next & 0x00ff_ffff)).to_be_bytes();
            f[26..30].copy_from_slice(&src);
            f[34..36].copy_from_slice(&((next >> 24) as u16 + 1024).to_be_bytes());
            let m = xlb_dataplane::wire::parse(f).expect("template");
            xlb_dataplane::wire::rewrite::fill_ipv4_checksum(f, &m);
            xlb_dataplane::wire::rewrite::fill_l4_checksum(f, &m);
        }
        b.run(Some(&mut p), &t, 3, &syns);
    }
    let ns = start.elapsed().as_nanos() as f64 / (rounds * BATCH) as f64;
    let cpu_ns = (xlb_benches::on_cpu_ns() - cpu) as f64 / (rounds * BATCH) as f64;
    println!(
        "new flows: {ns:.1} ns/packet wall, {cpu_ns:.1} on CPU (including the template patch and buffer refresh)"
    );
}

/// New flows into a table with room, as the criterion bench runs them.
fn room(passes: usize) {
    let t = tables();
    let slots = ConntrackConfig::default().buckets_per_shard * WAYS;
    let batches = syn_batches(0, slots / 4 / 2 / BATCH);
    let mut b = Batch::new();
    let (mut wall, mut cpu, mut packets) = (0u128, 0u64, 0usize);
    let mut p = fresh_pipeline(ConntrackConfig::default().buckets_per_shard);
    for _ in 0..passes {
        p.clear_flows();
        let start = std::time::Instant::now();
        let c0 = xlb_benches::on_cpu_ns();
        for s in &batches {
            b.run(Some(&mut p), &t, 3, s);
        }
        cpu += xlb_benches::on_cpu_ns() - c0;
        wall += start.elapsed().as_nanos();
        packets += batches.len() * BATCH;
    }
    println!(
        "new flows, table with room: {:.1} ns/packet wall, {:.1} on CPU (including the buffer refresh)",
        wall as f64 / packets as f64,
        cpu as f64 / packets as f64
    );
}

/// New flows into a full table, as the criterion bench's "full table" case.
fn full(rounds: usize) {
    const BUCKETS: usize = 4096;
    let t = tables();
    let ct = flow_table(BUCKETS);
    let mut p = Pipeline::new(0, 1, &ct);
    let mut b = Batch::new();
    for f in &syn_batches(1 << 22, BUCKETS * WAYS / BATCH) {
        b.run(Some(&mut p), &t, 1, f);
    }
    let batches = syn_batches(0, rounds);
    let start = std::time::Instant::now();
    let cpu = xlb_benches::on_cpu_ns();
    for s in &batches {
        b.run(Some(&mut p), &t, 3, s);
    }
    let n = (rounds * BATCH) as f64;
    let ns = start.elapsed().as_nanos() as f64 / n;
    let cpu_ns = (xlb_benches::on_cpu_ns() - cpu) as f64 / n;
    println!(
        "new flows, full table: {ns:.1} ns/packet wall, {cpu_ns:.1} on CPU (including the buffer refresh); {} of {} slots in use",
        ct.used(),
        ct.capacity()
    );
}
