//! xlb-pktgen: AF_XDP traffic generator and receiver.
//!
//! ```text
//! xlb-pktgen tx  --iface IF --dst 10.0.0.9:7 [--rate 100000|max] [--count N] [--duration S] ...
//! xlb-pktgen rx  --rx-iface IF [--rx-mode xdp|raw] --rx-duration S
//! xlb-pktgen run --iface IF --netns A --dst ... --rx-iface IF2 --rx-netns B
//! ```
//! Every run is bounded by a packet count and a duration (both enforced,
//! at most 600 s). A progress line updates on stderr each second; the
//! summary goes to stdout as text, or JSON with `--json`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use xlb_dataplane::net::MacAddr;
use xlb_perf::engine::RxMode;
use xlb_perf::frames::{Proto, SizeSpec};
use xlb_perf::pktgen::{run, RxOpts, TxOpts};

#[derive(Parser, Debug)]
#[command(
    name = "xlb-pktgen",
    version,
    about = "AF_XDP traffic generator and receiver"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Nice value for the TX/RX threads (e.g. -20 on a shared machine).
    #[arg(long, global = true, allow_hyphen_values = true)]
    nice: Option<i32>,
    /// Print the summary as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// No live progress line.
    #[arg(long, short, global = true)]
    quiet: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Send only.
    Tx(TxArgs),
    /// Receive only (loss is estimated from sequence numbers).
    Rx(RxArgs),
    /// Send and receive in one process (exact loss accounting).
    Run {
        #[command(flatten)]
        tx: TxArgs,
        #[command(flatten)]
        rx: RxArgs,
    },
}

fn parse_rate(s: &str) -> Result<Option<u64>> {
    if s.eq_ignore_ascii_case("max") {
        return Ok(None);
    }
    s.parse::<u64>()
        .ok()
        .filter(|&r| r > 0)
        .map(Some)
        .ok_or_else(|| anyhow::anyhow!("--rate {s:?}: packets per second > 0, or \"max\""))
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0 && *v <= 600.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{s:?}: seconds in (0, 600]"))
}

#[derive(Args, Debug)]
struct TxArgs {
    /// Interface to send on.
    #[arg(long)]
    iface: String,
    /// Network namespace of --iface.
    #[arg(long)]
    netns: Option<String>,
    /// Destination address:port.
    #[arg(long)]
    dst: SocketAddr,
    /// Destination MAC (default: the kernel's neighbour for the route to --dst).
    #[arg(long)]
    dst_mac: Option<MacAddr>,
    /// Source MAC (default: the interface's).
    #[arg(long)]
    src_mac: Option<MacAddr>,
    /// First source address (default: the interface's).
    #[arg(long)]
    src_ip: Option<IpAddr>,
    /// Source addresses to cycle over (consecutive from --src-ip).
    #[arg(long, default_value_t = 1)]
    src_ips: u32,
    /// First source port; flows take consecutive ports.
    #[arg(long, default_value_t = 1024)]
    sport: u16,
    /// Number of flows K.
    #[arg(long, default_value_t = 1024)]
    flows: u32,
    /// udp, syn (TCP SYN storm) or ack (established TCP stream).
    #[arg(long, value_enum, default_value_t = Proto::Udp)]
    proto: Proto,
    /// Wire frame size 64..1518 (with FCS), or "imix" (7:4:1 of 64/570/1518).
    #[arg(long, default_value = "64")]
    size: String,
    /// Packets per second over all queues, or "max".
    #[arg(long, default_value = "max")]
    rate: String,
    /// Most packets to send.
    #[arg(long, default_value_t = 100_000_000)]
    count: u64,
    /// Longest run, seconds (<= 600).
    #[arg(long, default_value = "10", value_parser = parse_secs)]
    duration: Duration,
    /// TX queues (one thread each).
    #[arg(long, default_value_t = 1)]
    queues: u32,
    /// CPUs for the TX threads (comma list, cycled).
    #[arg(long, value_delimiter = ',')]
    cpu: Vec<usize>,
    /// Frames per TX batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
}

#[derive(Args, Debug)]
struct RxArgs {
    /// Interface to count arrivals on.
    #[arg(long)]
    rx_iface: String,
    /// Network namespace of --rx-iface.
    #[arg(long)]
    rx_netns: Option<String>,
    /// xdp (AF_XDP via xlb's steering program) or raw (AF_PACKET).
    #[arg(long, value_enum, default_value_t = RxMode::Xdp)]
    rx_mode: RxMode,
    /// Addresses to receive for (xdp mode; default: the interface's).
    #[arg(long, value_delimiter = ',')]
    rx_addrs: Vec<IpAddr>,
    /// RX queues (one thread each).
    #[arg(long, default_value_t = 1)]
    rx_queues: u32,
    /// CPUs for the RX threads.
    #[arg(long, value_delimiter = ',')]
    rx_cpu: Vec<usize>,
    /// Stop after this many stamped packets.
    #[arg(long, default_value_t = u64::MAX)]
    rx_count: u64,
    /// rx: how long to listen; run: ignored (TX time + --linger).
    #[arg(long, default_value = "10", value_parser = parse_secs)]
    rx_duration: Duration,
    /// run: keep counting this long after the sender stops (ms).
    #[arg(long, default_value_t = 300)]
    linger_ms: u64,
    /// Skip L4 checksum verification of received frames.
    #[arg(long)]
    no_verify: bool,
}

impl TxArgs {
    fn opts(&self) -> Result<TxOpts> {
        let mut o = TxOpts::new(&self.iface, self.dst);
        o.netns = self.netns.clone();
        o.dst_mac = self.dst_mac;
        o.src_mac = self.src_mac;
        o.src_ip = self.src_ip;
        o.src_ips = self.src_ips;
        o.sport = self.sport;
        o.flows = self.flows;
        o.proto = self.proto;
        o.size = self.size.parse::<SizeSpec>()?;
        o.rate = parse_rate(&self.rate)?;
        o.count = self.count;
        o.duration = self.duration;
        o.queues = self.queues;
        o.cpus = self.cpu.clone();
        o.batch = self.batch;
        Ok(o)
    }
}

impl RxArgs {
    fn opts(&self) -> RxOpts {
        let mut o = RxOpts::new(&self.rx_iface);
        o.netns = self.rx_netns.clone();
        o.mode = self.rx_mode;
        o.addrs = self.rx_addrs.clone();
        o.queues = self.rx_queues;
        o.cpus = self.rx_cpu.clone();
        o.count = self.rx_count;
        o.duration = self.rx_duration;
        o.linger = Duration::from_millis(self.linger_ms.min(10_000));
        o.verify = !self.no_verify;
        o
    }
}

fn main() -> Result<()> {
    xlb_perf::host::catch_signals();
    let cli = Cli::parse();
    let live = !cli.quiet;
    let nice = cli.nice;
    let txo = |t: &TxArgs| -> Result<TxOpts> {
        let mut o = t.opts()?;
        o.nice = nice;
        Ok(o)
    };
    let rxo = |r: &RxArgs| -> RxOpts {
        let mut o = r.opts();
        o.nice = nice;
        o
    };
    let summary = match &cli.cmd {
        Cmd::Tx(t) => run(Some(&txo(t)?), None, live)?,
        Cmd::Rx(r) => run(None, Some(&rxo(r)), live)?,
        Cmd::Run { tx, rx } => run(Some(&txo(tx)?), Some(&rxo(rx)), live)?,
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", xlb_perf::engine::render(&summary));
    }
    Ok(())
}
