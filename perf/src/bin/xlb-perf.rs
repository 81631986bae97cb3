//! xlb-perf: the side-by-side benchmark harness.
//!
//! `xlb-perf bench [--quick]` builds a client — balancer — backends topology
//! in fresh network namespaces (removed afterwards, also on failure), runs
//! each contender (xlb, a minimal AF_XDP forwarder, nftables DNAT) with the
//! same generator, receiver and core placement, and writes
//! `perf/results/udp64-1024flows.{md,json,svg,png}`. Root required.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use xlb_perf::bench::{self, BenchOpts, Contender};

#[derive(Parser, Debug)]
#[command(name = "xlb-perf", version, about = "xlb benchmark harness")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// UDP 64 B / 1024 flows: xlb vs. minimal forwarder vs. nftables DNAT.
    Bench {
        /// CI smoke: one repetition of 2 s per contender.
        #[arg(long)]
        quick: bool,
        /// Repetitions (default 3; 1 with --quick).
        #[arg(long)]
        reps: Option<u32>,
        /// Seconds of traffic per run (default 5; 2 with --quick).
        #[arg(long)]
        secs: Option<f64>,
        /// Contenders (comma list).
        #[arg(long, value_enum, value_delimiter = ',', default_value = "xlb,fwd,nft")]
        contenders: Vec<Contender>,
        /// Generator CPU.
        #[arg(long, default_value_t = 0)]
        gen_cpu: usize,
        /// Balancer CPU (AF_XDP worker, or RPS target for nftables).
        #[arg(long, default_value_t = 1)]
        lb_cpu: usize,
        /// Receiver CPU.
        #[arg(long, default_value_t = 0)]
        rx_cpu: usize,
        /// Let idle AF_XDP workers block in poll() instead of busy-polling.
        #[arg(long)]
        no_busy_poll: bool,
        /// Flows.
        #[arg(long, default_value_t = 1024)]
        flows: u32,
        /// AF_XDP contenders: Runtime RX batch. 32 matches the kernel's
        /// copy-mode TX budget per sendto (TX_BATCH_SIZE).
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// AF_XDP contenders: UMEM frames per worker.
        #[arg(long, default_value_t = 4096)]
        frames: u32,
        /// Threaded NAPI: the balancer's ingress veth kthread on --lb-cpu, the
        /// backends' on --rx-cpu (default: NAPI in the sender's softirq).
        #[arg(long)]
        threaded_napi: bool,
        /// Nice value for the generator, receiver and AF_XDP workers, so
        /// other work on the machine does not take their cores (softirq
        /// work - the kernel contender - preempts user threads anyway).
        /// 0 = leave unchanged.
        #[arg(long, default_value_t = -20, allow_hyphen_values = true)]
        nice: i32,
        /// Output directory.
        #[arg(long, default_value = "perf/results")]
        out: PathBuf,
        /// Only the summary table on stdout.
        #[arg(long, short)]
        quiet: bool,
    },
}

fn main() -> Result<()> {
    xlb_perf::lab::catch_signals();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    match Cli::parse().cmd {
        Cmd::Bench {
            quick,
            reps,
            secs,
            contenders,
            gen_cpu,
            lb_cpu,
            rx_cpu,
            no_busy_poll,
            flows,
            batch,
            frames,
            nice,
            threaded_napi,
            out,
            quiet,
        } => {
            let o = BenchOpts {
                reps: reps.unwrap_or(if quick { 1 } else { 3 }),
                secs: secs.unwrap_or(if quick { 2.0 } else { 5.0 }),
                contenders,
                gen_cpu,
                lb_cpu,
                rx_cpu,
                busy_poll: !no_busy_poll,
                flows,
                batch,
                frames,
                nice: (nice != 0).then_some(nice),
                threaded_napi,
                out,
                verbose: !quiet,
            };
            let r = bench::run(&o, &command)?;
            print!("{}", bench::markdown(&r));
        }
    }
    Ok(())
}
