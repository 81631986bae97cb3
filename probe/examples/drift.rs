//! Probe-period drift and CPU for many TCP endpoints on loopback.
//!
//! `cargo run --release -p xlb-probe --example drift -- [endpoints] [interval_ms] [periods] [concurrency] [tcp|none]`
//! (defaults 5000 1000 5 256 tcp; `none` measures the scheduler alone). Starts 8 local listeners, probes each endpoint
//! every interval, and after a warm-up period reports per period the lateness
//! of probe starts against their deadlines (p50/p99/max: drift would show as
//! growth) and the process CPU time per wall second, then the totals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::net::TcpListener;
use xlb_probe::{ProbeEngine, ProbeKind, ProbeSpec, ProbeState};

/// User + system CPU of this process, from /proc/self/stat (clock ticks of 10 ms).
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("procfs");
    let after = &stat[stat.rfind(')').expect("comm field") + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the comm field.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let kind = match args.get(4).map(String::as_str) {
        Some("none") => ProbeKind::None,
        _ => ProbeKind::Tcp,
    };
    args.truncate(4);
    let args: Vec<u64> = args.iter().map(|a| a.parse().expect("numbers")).collect();
    let n = *args.first().unwrap_or(&5000) as usize;
    let interval = Duration::from_millis(*args.get(1).unwrap_or(&1000));
    let periods = *args.get(2).unwrap_or(&5) as u32;
    let conc = *args.get(3).unwrap_or(&256) as usize;

    let mut addrs = Vec::new();
    for _ in 0..8 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(l.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                if let Ok((s, _)) = l.accept().await {
                    drop(s);
                }
            }
        });
    }
    let e = ProbeEngine::new(conc);
    for i in 0..n {
        let a = addrs[i % addrs.len()];
        let port = if kind == ProbeKind::None { 0 } else { a.port() };
        let mut s = ProbeSpec::new(a.ip(), kind, port);
        s.name = format!("ep{i}");
        s.interval = interval;
        e.upsert(s).unwrap();
    }
    println!("{n} {kind} endpoints, interval {interval:?}, concurrency {conc}, {periods} periods after 1 warm-up");
    tokio::time::sleep(interval).await;
    e.reset_stats();
    let (cpu0, t0) = (cpu(), std::time::Instant::now());
    println!("period  probes  p50_late  p99_late  max_late  cpu%");
    for p in 1..=periods {
        e.reset_stats();
        let (c, t) = (cpu(), std::time::Instant::now());
        tokio::time::sleep(interval).await;
        let s = e.stats();
        let pct = 100.0 * (cpu() - c).as_secs_f64() / t.elapsed().as_secs_f64();
        println!(
            "{p:>6}  {:>6}  {:>8.2?}  {:>8.2?}  {:>8.2?}  {pct:>4.1}",
            s.dispatched, s.lateness_p50, s.lateness_p99, s.lateness_max
        );
        if s.overlap_skips + s.missed_slots > 0 {
            println!(
                "        overlap skips {}, missed slots {}",
                s.overlap_skips, s.missed_slots
            );
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let total_cpu = (cpu() - cpu0).as_secs_f64();
    let snap = e.snapshot();
    let up = snap.iter().filter(|s| s.state == ProbeState::Up).count();
    let probes: u64 = snap.iter().map(|s| s.probes).sum();
    // How long probes themselves take: with `concurrency` slots, probes
    // longer than concurrency / rate make starts wait (lateness without drift).
    let delays: Vec<Duration> = snap.iter().filter_map(|s| s.avg_delay).collect();
    let mean = delays.iter().sum::<Duration>() / (delays.len().max(1) as u32);
    let worst = snap
        .iter()
        .filter_map(|s| s.max_delay)
        .max()
        .unwrap_or_default();
    println!("probe duration: mean {mean:.2?}, worst {worst:.2?}");
    let probes_in_window = n as f64 * wall / interval.as_secs_f64();
    println!(
        "cpu {:.1}% of one core over {wall:.1} s ({:.1} µs per probe, listeners included); {up}/{n} up; {probes} probes in total",
        100.0 * total_cpu / wall,
        1e6 * total_cpu / probes_in_window,
    );
}
