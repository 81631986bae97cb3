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
use xlb_perf::suites::flows::{self, FlowsContender, FlowsOpts};
use xlb_perf::suites::tcp::{self, TcpContender, TcpOpts};
use xlb_perf::suites::udp::{self, UdpContender, UdpOpts};
use xlb_perf::topo::{Placement, Topology};

/// The parts of the harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Suite {
    /// UDP 64 B / 1024 flows: xlb vs. minimal forwarder vs. nftables DNAT.
    Udp,
    /// TCP conn/s, req/s and latency through the VIP (wrk, nginx backends).
    Tcp,
    /// Many flows (1M tracked) and a SYN flood next to established flows:
    /// the xlb daemon vs. nftables DNAT.
    Flows,
}

#[derive(Parser, Debug)]
#[command(name = "xlb-perf", version, about = "xlb benchmark harness")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// The side-by-side benchmark: every suite, every contender.
    Bench {
        /// CI smoke: one short repetition of everything.
        #[arg(long)]
        quick: bool,
        /// UDP: packets/s of the paced latency runs (0 = skip them).
        #[arg(long, default_value_t = 50_000)]
        lat_rate: u64,
        /// Suites to run (comma list).
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "udp,tcp,flows"
        )]
        suites: Vec<Suite>,
        /// TCP: contenders (comma list).
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "direct,xlb-fullnat,xlb-dnat,nft,haproxy,nginx"
        )]
        tcp_contenders: Vec<TcpContender>,
        /// TCP: seconds per wrk run (default 5; 1 with --quick).
        #[arg(long)]
        tcp_secs: Option<u32>,
        /// TCP: wrk connections for conn/s and req/s.
        #[arg(long, default_value_t = 50)]
        conns: u32,
        /// TCP latency run: wrk connections.
        #[arg(long, default_value_t = 8)]
        lat_conns: u32,
        /// TCP latency run: pause per connection between requests (ms).
        #[arg(long, default_value_t = 2)]
        lat_delay_ms: u32,
        /// TCP: the backends' CPU.
        #[arg(long, default_value_t = 1)]
        be_cpu: usize,
        /// Flows: flow count of the many-flows runs and of the SYN flood
        /// (default 1000000; 50000 with --quick).
        #[arg(long)]
        many_flows: Option<u32>,
        /// Flows: xlb's --conntrack-buckets (8 entries each, a flow takes
        /// two; default: room for twice the many flows).
        #[arg(long)]
        ct_buckets: Option<u32>,
        /// Flows: contenders (comma list).
        #[arg(long, value_enum, value_delimiter = ',', default_value = "xlb,nft")]
        flows_contenders: Vec<FlowsContender>,
        /// Flows: packets/s of the established flows next to the SYN flood.
        #[arg(long, default_value_t = 50_000)]
        est_rate: u64,
        /// Flows: seconds per measured run (default 5; 1 with --quick).
        #[arg(long)]
        flows_secs: Option<f64>,
        /// The xlb daemon to benchmark (built by scripts/bench.sh).
        #[arg(long, default_value = "target/release/xlb")]
        xlb_bin: PathBuf,
        /// Repetitions (default 3; 1 with --quick).
        #[arg(long)]
        reps: Option<u32>,
        /// Seconds of traffic per run (default 5; 2 with --quick).
        #[arg(long)]
        secs: Option<f64>,
        /// Contenders (comma list).
        #[arg(long, value_enum, value_delimiter = ',', default_value = "xlb,fwd,nft")]
        contenders: Vec<UdpContender>,
        /// Generator CPU.
        #[arg(long, default_value_t = 0)]
        gen_cpu: usize,
        /// Balancer CPU (AF_XDP worker or xlb daemon, or RPS target for nftables).
        #[arg(long, default_value_t = 1)]
        lb_cpu: usize,
        /// Receiver CPU.
        #[arg(long, default_value_t = 0)]
        rx_cpu: usize,
        /// UDP: placements of the balancer's receive work (comma list); the
        /// first also hosts the fixed-rate latency runs.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "shared,owned"
        )]
        placements: Vec<Placement>,
        /// Flows: run the xlb daemon with --busy-poll. Off by default: busy
        /// polling moves xlb's ingress veth receive onto its own core, while
        /// nftables's (RPS) stays partly on the generator's, so the two would
        /// not share the cores alike.
        #[arg(long)]
        flows_busy_poll: bool,
        /// UDP: topology of the max-rate runs. `bridged`: LAB-NOTES' lab
        /// (bridge and three backend namespaces whose kernels count and
        /// drop); `direct`: one backend namespace with xlb-pktgen's AF_XDP
        /// receiver (stamps, order and checksums checked, but its receive
        /// runs on the balancer's core and its thread on the receiver CPU).
        /// The paced latency runs always use `direct`.
        #[arg(long, value_enum, default_value = "bridged")]
        udp_topology: Topology,
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

/// Set in the child that runs the benchmark in its own session.
const SESSION_ENV: &str = "XLB_PERF_IN_SESSION";

/// Run this same command again as a child in its own session (its own
/// scheduler autogroup, which `--nice` needs, see `host::own_autogroup`) and
/// wait for it. This process stays in the terminal's foreground process
/// group, so Ctrl-C still reaches it, and it passes SIGINT/SIGTERM on to the
/// child, which cleans up its namespaces and processes.
fn run_in_own_session() -> Result<std::process::ExitStatus> {
    use anyhow::Context;
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("finding xlb-perf's own binary")?;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_default();
    // The same argv[0], so the child records the command as typed.
    let mut child = std::process::Command::new(exe)
        .arg0(arg0)
        .args(args)
        .env(SESSION_ENV, "1")
        .spawn()
        .context("starting the benchmark in its own session")?;
    let mut forwarded = false;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if xlb_perf::host::interrupted() && !forwarded {
            xlb_testkit::proc::signal(child.id() as i32, xlb_testkit::Signal::Int);
            forwarded = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn main() -> Result<()> {
    xlb_perf::host::catch_signals();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let cli = Cli::parse();
    let Cmd::Bench { nice, .. } = &cli.cmd;
    if *nice != 0 && std::env::var_os(SESSION_ENV).is_none() {
        let status = run_in_own_session()?;
        std::process::exit(status.code().unwrap_or(1));
    }
    match cli.cmd {
        Cmd::Bench {
            quick,
            lat_rate,
            suites,
            tcp_contenders,
            tcp_secs,
            conns,
            lat_conns,
            lat_delay_ms,
            be_cpu,
            many_flows,
            ct_buckets,
            flows_contenders,
            est_rate,
            flows_secs,
            xlb_bin,
            reps,
            secs,
            contenders,
            gen_cpu,
            lb_cpu,
            rx_cpu,
            placements,
            udp_topology,
            flows_busy_poll,
            flows,
            batch,
            frames,
            nice,
            out,
            quiet,
        } => {
            let reps = reps.unwrap_or(if quick { 1 } else { 3 });
            let t0 = std::time::Instant::now();
            let o = UdpOpts {
                reps,
                secs: secs.unwrap_or(if quick { 2.0 } else { 5.0 }),
                contenders,
                gen_cpu,
                lb_cpu,
                rx_cpu,
                placements,
                topology: udp_topology,
                flows,
                batch,
                frames,
                nice: (nice != 0).then_some(nice),
                out: out.clone(),
                lat_rate: (lat_rate > 0).then_some(lat_rate),
                verbose: !quiet,
            };
            if nice != 0 {
                xlb_perf::host::own_autogroup(nice);
            }
            let load0 = xlb_perf::procs::loadavg();
            // The headline tables of every suite, for summary.md.
            let mut heads = Vec::new();
            let head = |md: &str| md.split("\n## Runs").next().unwrap_or("").to_string();
            if suites.contains(&Suite::Udp) {
                let r = udp::run(&o, &command)?;
                let md = udp::markdown(&r);
                print!("{md}");
                heads.push(head(&md));
            }
            if suites.contains(&Suite::Tcp) {
                let t = TcpOpts {
                    reps,
                    secs: tcp_secs.unwrap_or(if quick { 1 } else { 5 }),
                    contenders: tcp_contenders,
                    client_cpu: gen_cpu,
                    lb_cpu,
                    be_cpu,
                    conns,
                    lat_conns,
                    lat_delay_ms,
                    xlb_bin: xlb_bin.clone(),
                    nice: (nice != 0).then_some(nice),
                    out: out.clone(),
                    verbose: !quiet,
                };
                let r = tcp::run(&t, &command)?;
                let md = tcp::markdown(&r, &t);
                print!("{md}");
                heads.push(head(&md));
            }
            if suites.contains(&Suite::Flows) {
                let many = many_flows.unwrap_or(if quick { 50_000 } else { 1_000_000 });
                // Two entries per flow, 8 per bucket, load factor <= 1/2.
                let buckets = ct_buckets.unwrap_or((many / 2).max(1024).next_power_of_two());
                let f = FlowsOpts {
                    reps,
                    secs: flows_secs.unwrap_or(if quick { 1.0 } else { 5.0 }),
                    contenders: flows_contenders,
                    many,
                    ct_buckets: buckets,
                    est_rate,
                    busy_poll: flows_busy_poll,
                    gen_cpu,
                    lb_cpu,
                    rx_cpu,
                    nice: (nice != 0).then_some(nice),
                    xlb_bin,
                    out: out.clone(),
                    verbose: !quiet,
                };
                let r = flows::run(&f, &command)?;
                let md = flows::markdown(&r, &f);
                print!("{md}");
                heads.push(head(&md));
            }
            let took = t0.elapsed().as_secs_f64();
            let summary = format!(
                "# xlb-perf bench: summary\n\n- command: `{command}`\n- machine: {}\n- load average (1 min) at start / end: {load0:.2} / {:.2}\n- whole run: {took:.0} s\n\nThe files next to this one have every run, with where each process and softirq ran.\n\n{}",
                xlb_perf::procs::machine(),
                xlb_perf::procs::loadavg(),
                heads
                    .iter()
                    .map(|h| h.replacen("# ", "## ", 1))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::fs::create_dir_all(&out)?;
            std::fs::write(out.join("summary.md"), summary)?;
            eprintln!("xlb-perf bench took {took:.0} s");
        }
    }
    Ok(())
}
