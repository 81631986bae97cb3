//! TCP through the VIP: wrk in the client namespace against real nginx
//! servers in the backend namespace, through each contender on the same
//! topology and core placement — connections per second (a new connection
//! per request), requests per second (keep-alive), and latency at a fixed
//! moderate rate (paced keep-alive requests, wrk's `delay()`), with its
//! distribution for the CDF plot.
//!
//! Every (repetition, contender) gets a fresh topology (so no TIME_WAIT or
//! conntrack state carries over) and fresh processes; all of them are
//! [`Proc`]s, stopped by pid on drop, and the [`Lab`] kills anything left in
//! its namespaces before deleting them.
//!
//! [`Lab`]: xlb_testkit::Lab

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use xlb_testkit::{netns, sh};

use crate::contenders::{haproxy, nft, nginx, xlb};
use crate::host;
use crate::procs::{self, CpuShare, CpuTimes, Proc, ProcUse};
use crate::report::chart::{self, Series};
use crate::report::stats::{spread, Spread};
use crate::report::{self, times};
use crate::topo::{build_direct, set_rps, Topo, BACKENDS, BE_PORT, LB_FRONT, VIP, VIP_TCP_PORT};

/// A TCP contender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TcpContender {
    /// No balancer: the client talks to one backend, routed through the
    /// balancer namespace's kernel (the ceiling).
    Direct,
    /// The `xlb` daemon, full NAT (loxilb mode 2), round robin.
    XlbFullnat,
    /// The `xlb` daemon, DNAT (mode 0): backends route back via the balancer.
    XlbDnat,
    /// Kernel nftables DNAT (numgen round robin) with conntrack.
    Nft,
    /// HAProxy, mode tcp, roundrobin, one thread.
    Haproxy,
    /// nginx stream proxy, round robin, one worker.
    Nginx,
}

impl TcpContender {
    /// Display name.
    pub fn label(self) -> &'static str {
        match self {
            TcpContender::Direct => "direct to one backend (no balancer)",
            TcpContender::XlbFullnat => "xlb full NAT (mode 2)",
            TcpContender::XlbDnat => "xlb DNAT (mode 0)",
            TcpContender::Nft => "nftables DNAT + conntrack",
            TcpContender::Haproxy => "HAProxy (mode tcp, roundrobin)",
            TcpContender::Nginx => "nginx stream",
        }
    }

    /// Short name.
    pub fn short(self) -> &'static str {
        match self {
            TcpContender::Direct => "direct",
            TcpContender::XlbFullnat => "xlb-fullnat",
            TcpContender::XlbDnat => "xlb-dnat",
            TcpContender::Nft => "nft",
            TcpContender::Haproxy => "haproxy",
            TcpContender::Nginx => "nginx",
        }
    }

    /// Every contender, in run order.
    pub fn all() -> Vec<TcpContender> {
        vec![
            TcpContender::Direct,
            TcpContender::XlbFullnat,
            TcpContender::XlbDnat,
            TcpContender::Nft,
            TcpContender::Haproxy,
            TcpContender::Nginx,
        ]
    }

    fn kernel_path(self) -> bool {
        !matches!(self, TcpContender::XlbFullnat | TcpContender::XlbDnat)
    }
}

/// What wrk measures in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TcpMode {
    /// `Connection: close`: one request per connection (connections/s).
    Conn,
    /// Keep-alive, as fast as possible (requests/s).
    Keepalive,
    /// Keep-alive, paced (fixed moderate rate): latency.
    Latency,
}

/// Options of the TCP suite.
#[derive(Debug, Clone)]
pub struct TcpOpts {
    /// Repetitions.
    pub reps: u32,
    /// Seconds per wrk run.
    pub secs: u32,
    /// Contenders.
    pub contenders: Vec<TcpContender>,
    /// wrk's CPU.
    pub client_cpu: usize,
    /// The balancer's CPU (xlb's worker and API, HAProxy, nginx stream; RPS
    /// target of the kernel contenders).
    pub lb_cpu: usize,
    /// The backends' nginx CPU.
    pub be_cpu: usize,
    /// wrk connections for the throughput runs.
    pub conns: u32,
    /// wrk connections for the latency run.
    pub lat_conns: u32,
    /// Milliseconds each latency-run connection waits between requests.
    pub lat_delay_ms: u32,
    /// The `xlb` binary.
    pub xlb_bin: PathBuf,
    /// Output directory.
    pub out: PathBuf,
    /// Nice of every process the suite starts (`None` = unchanged).
    pub nice: Option<i32>,
    /// Progress on stderr.
    pub verbose: bool,
}

/// wrk's own report (the Lua `done()` hook prints it as JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WrkReport {
    /// Completed requests.
    pub requests: u64,
    /// Run time, µs.
    pub duration_us: u64,
    /// Socket errors: connect.
    pub connect: u64,
    /// read.
    pub read: u64,
    /// write.
    pub write: u64,
    /// Non-2xx/3xx responses.
    pub status: u64,
    /// Timeouts.
    pub timeout: u64,
    /// Mean latency, µs.
    pub lat_mean_us: f64,
    /// Latency percentiles: (percent, µs).
    pub cdf: Vec<(f64, u64)>,
}

impl WrkReport {
    /// Requests per second.
    pub fn rate(&self) -> f64 {
        if self.duration_us == 0 {
            0.0
        } else {
            self.requests as f64 * 1e6 / self.duration_us as f64
        }
    }
    /// Latency at percentile `p` (µs; the nearest reported point at or above).
    pub fn pct(&self, p: f64) -> u64 {
        self.cdf
            .iter()
            .find(|(q, _)| *q >= p - 1e-9)
            .or(self.cdf.last())
            .map_or(0, |x| x.1)
    }
    /// All socket errors and bad statuses.
    pub fn errors(&self) -> u64 {
        self.connect + self.read + self.write + self.status + self.timeout
    }
}

/// One wrk run.
#[derive(Debug, Clone, Serialize)]
pub struct TcpRun {
    /// Contender.
    pub contender: TcpContender,
    /// What was measured.
    pub mode: TcpMode,
    /// Repetition (0-based).
    pub rep: u32,
    /// Requests (= connections in `conn` mode) per second.
    pub rate: f64,
    /// Errors wrk counted.
    pub errors: u64,
    /// Latency p50, µs.
    pub p50_us: u64,
    /// p99, µs.
    pub p99_us: u64,
    /// wrk's report.
    pub wrk: WrkReport,
    /// Where the client, backends and balancer ran and how much CPU they took.
    pub procs: Vec<ProcUse>,
    /// Per-CPU user/system/softirq/idle over the run.
    pub cpus: Vec<CpuShare>,
    /// NET_RX softirqs per CPU during the run.
    pub net_rx_softirqs: Vec<u64>,
    /// 1-minute load average before the run.
    pub loadavg: f64,
}

/// Per-contender summary.
#[derive(Debug, Clone, Serialize)]
pub struct TcpSummary {
    /// Contender.
    pub contender: TcpContender,
    /// Connections/s.
    pub conn: Spread,
    /// Requests/s, keep-alive.
    pub keepalive: Spread,
    /// Latency-run p50 (µs, median over repetitions).
    pub lat_p50_us: f64,
    /// Latency-run p99 (µs, median).
    pub lat_p99_us: f64,
    /// Paced rate achieved (req/s, median).
    pub lat_rate: f64,
    /// Errors over all runs.
    pub errors: u64,
}

/// The TCP report.
#[derive(Debug, Clone, Serialize)]
pub struct TcpReport {
    /// When (UTC).
    pub when: String,
    /// Command line.
    pub command: String,
    /// Kernel.
    pub kernel: String,
    /// Placement.
    pub placement: String,
    /// Load average at start / end.
    pub loadavg: (f64, f64),
    /// Per contender.
    pub summary: Vec<TcpSummary>,
    /// Every run.
    pub runs: Vec<TcpRun>,
}

// ---------------------------------------------------------------- configs

const WRK_LUA: &str = r#"-- xlb-perf: wrk script. XLB_WRK_CLOSE=1: a new connection per request;
-- XLB_WRK_DELAY_MS=N: each connection waits N ms between requests (paced).
local close = os.getenv("XLB_WRK_CLOSE") == "1"
local pace = tonumber(os.getenv("XLB_WRK_DELAY_MS") or "0") or 0
if close then wrk.headers["Connection"] = "close" end
if pace > 0 then
  function delay() return pace end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('XLB-WRK {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"lat_mean_us":%.1f,"cdf":[',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout, latency.mean))
  local ps = {0, 1, 2, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 75, 80, 85, 90, 92.5, 95, 97.5, 99, 99.5, 99.9, 99.99, 100}
  for i, p in ipairs(ps) do
    local v
    if p == 0 then v = latency.min elseif p == 100 then v = latency.max else v = latency:percentile(p) end
    io.write(string.format('%s[%g,%d]', i > 1 and ',' or '', p, v))
  end
  io.write(']}\n')
end
"#;

// ---------------------------------------------------------------- one contender

/// A contender ready for wrk: its topology, the backends, the balancer
/// process (if it is one) and the address wrk connects to.
struct Running {
    topo: Topo,
    _backends: Proc,
    balancer: Option<Proc>,
    target: SocketAddr,
}

fn prepare(o: &TcpOpts, which: TcpContender, dir: &Path) -> Result<Running> {
    let topo = build_direct()?;
    // Client: a wide port range and TIME_WAIT reuse (it opens ~10k
    // connections/s); backends/balancer: deep accept queues.
    netns::exec(
        &topo.cl,
        &[
            "sysctl",
            "-qw",
            "net.ipv4.ip_local_port_range=1024 65535",
            "net.ipv4.tcp_tw_reuse=1",
        ],
    )?;
    for ns in [&topo.be, &topo.lb] {
        netns::exec(
            ns,
            &[
                "sysctl",
                "-qw",
                "net.core.somaxconn=8192",
                "net.ipv4.tcp_max_syn_backlog=8192",
                "net.ipv4.ip_local_port_range=1024 65535",
                "net.ipv4.tcp_tw_reuse=1",
            ],
        )?;
    }
    sh(&[
        "ip",
        "-n",
        &topo.cl,
        "route",
        "add",
        "10.98.1.0/24",
        "via",
        &LB_FRONT.to_string(),
    ])?;
    let backends = nginx::start_backends(&topo.be, o.be_cpu, o.nice, &dir.join("be"))?;
    let vip = SocketAddr::from((VIP, VIP_TCP_PORT));
    // Kernel contenders: nothing forwards unless asked, and their receive
    // work goes to the balancer's CPU (RPS) as xlb's worker does.
    let fwd = if which.kernel_path() { "1" } else { "0" };
    netns::exec(
        &topo.lb,
        &["sysctl", "-qw", &format!("net.ipv4.ip_forward={fwd}")],
    )?;
    if which.kernel_path() {
        let mask = format!("{:x}", 1u64 << o.lb_cpu);
        set_rps(&topo.lb, &topo.l0, &mask)?;
        set_rps(&topo.lb, &topo.l1, &mask)?;
    }
    let local_vip = || -> Result<()> { Ok(topo.lb.addr("lo", &format!("{VIP}/32"))?) };
    let lb_dir = dir.join("lb");
    std::fs::create_dir_all(&lb_dir)?;
    let (balancer, target) = match which {
        TcpContender::Direct => (None, SocketAddr::from((BACKENDS[0], BE_PORT))),
        TcpContender::Nft => {
            topo.lb
                .nft(&nft::tcp_ruleset())
                .context("loading the nftables rules (scripts/deps.sh installs nftables)")?;
            (None, vip)
        }
        TcpContender::Haproxy => {
            local_vip()?;
            let p = haproxy::start(&topo.lb, o.lb_cpu, o.nice, &lb_dir)?;
            (Some(p), vip)
        }
        TcpContender::Nginx => {
            local_vip()?;
            let p = nginx::start_stream(&topo.lb, o.lb_cpu, o.nice, &lb_dir)?;
            (Some(p), vip)
        }
        TcpContender::XlbFullnat | TcpContender::XlbDnat => {
            let mode = if which == TcpContender::XlbFullnat {
                2
            } else {
                0
            };
            let p = xlb::start(
                &o.xlb_bin,
                &topo.lb,
                &[&topo.l0, &topo.l1],
                &xlb::tcp_lbconfig(mode),
                o.lb_cpu,
                o.nice,
                &[],
                &lb_dir,
            )?;
            (Some(p), vip)
        }
    };
    let mut r = Running {
        topo,
        _backends: backends,
        balancer,
        target,
    };
    // Ready when the client reaches a backend through the contender.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !procs::tcp_open(&r.topo.cl, r.target) {
        if let Some(p) = r.balancer.as_mut() {
            if !p.running() {
                bail!("{} exited; its log:\n{}", p.name, p.log());
            }
        }
        if Instant::now() > deadline || host::interrupted() {
            let log = r.balancer.as_ref().map(|p| p.log()).unwrap_or_default();
            bail!(
                "{}: the client cannot connect to {} ; balancer log:\n{log}",
                which.short(),
                r.target
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(r)
}

fn wrk(
    o: &TcpOpts,
    r: &Running,
    which: TcpContender,
    mode: TcpMode,
    rep: u32,
    dir: &Path,
) -> Result<TcpRun> {
    let lua = dir.join("xlb-perf.lua");
    std::fs::write(&lua, WRK_LUA)?;
    let (conns, close, delay) = match mode {
        TcpMode::Conn => (o.conns, "1", 0),
        TcpMode::Keepalive => (o.conns, "0", 0),
        TcpMode::Latency => (o.lat_conns, "0", o.lat_delay_ms),
    };
    let url = format!("http://{}/", r.target);
    let log = dir.join(format!("wrk-{}-{:?}-{rep}.log", which.short(), mode));
    let secs = o.secs.to_string();
    let c = conns.to_string();
    let cpu = o.client_cpu.to_string();
    let args = [
        "env",
        &format!("XLB_WRK_CLOSE={close}"),
        &format!("XLB_WRK_DELAY_MS={delay}"),
        "wrk",
        "-t1",
        "-c",
        &c,
        "-d",
        &format!("{secs}s"),
        "--timeout",
        "2s",
        "-s",
        &lua.to_string_lossy(),
        &url,
    ];
    let load = procs::loadavg();
    let bal_pid = r.balancer.as_ref().map(|p| p.pid());
    let be_pid = r._backends.pid();
    let cpu0 = CpuTimes::now();
    let soft0 = procs::net_rx_softirqs();
    let mut p = procs::start("wrk", &r.topo.cl, &cpu, o.nice, &args, &log)?;
    let wrk_pid = p.pid();
    // Sample once `ip netns exec` and `taskset` have become wrk.
    let lead = (f64::from(o.secs) * 0.2).min(0.3);
    std::thread::sleep(Duration::from_secs_f64(lead));
    let t0 = Instant::now();
    let (w0, b0, l0) = (
        procs::sample_tree(wrk_pid),
        procs::sample_tree(be_pid),
        bal_pid.map(procs::sample_tree),
    );
    // Sample again just before wrk ends (its process is gone after).
    std::thread::sleep(Duration::from_secs_f64(
        (f64::from(o.secs) - 2.0 * lead).max(0.2),
    ));
    let (w1, b1, l1) = (
        procs::sample_tree(wrk_pid),
        procs::sample_tree(be_pid),
        bal_pid.map(procs::sample_tree),
    );
    let sampled = t0.elapsed().as_secs_f64();
    let ok = procs::wait(&mut p, Duration::from_secs(u64::from(o.secs) + 30))?;
    let cpus = CpuTimes::now().since(&cpu0);
    let soft = procs::delta(&procs::net_rx_softirqs(), &soft0);
    let out = p.log();
    if !ok {
        bail!("wrk failed: {out}");
    }
    let json = out
        .lines()
        .find_map(|l| l.strip_prefix("XLB-WRK "))
        .ok_or_else(|| anyhow!("no report from wrk: {out}"))?;
    let rep_w: WrkReport = serde_json::from_str(json).context("parsing wrk's report")?;
    let mut uses = vec![
        procs::proc_use("client wrk", &w0, &w1, sampled),
        procs::proc_use("backend nginx", &b0, &b1, sampled),
    ];
    if let (Some(a), Some(b)) = (l0, l1) {
        uses.push(procs::proc_use(
            &format!("balancer {}", which.short()),
            &a,
            &b,
            sampled,
        ));
    }
    Ok(TcpRun {
        contender: which,
        mode,
        rep,
        rate: rep_w.rate(),
        errors: rep_w.errors(),
        p50_us: rep_w.pct(50.0),
        p99_us: rep_w.pct(99.0),
        wrk: rep_w,
        procs: uses,
        cpus,
        net_rx_softirqs: soft,
        loadavg: load,
    })
}

/// Run the TCP suite; write `tcp.{md,json,svg,png}` and
/// `latency-cdf.{svg,png}`; return the report.
pub fn run(o: &TcpOpts, command: &str) -> Result<TcpReport> {
    if o.reps == 0 || o.secs == 0 || o.secs > 60 {
        bail!("--reps >= 1 and --tcp-secs in 1..=60");
    }
    for tool in ["wrk", "nginx", "haproxy", "nft"] {
        if sh(&["sh", "-c", &format!("command -v {tool}")]).is_err() {
            bail!("{tool} is not installed: run scripts/deps.sh");
        }
    }
    let load0 = procs::loadavg();
    let dir = std::env::temp_dir().join(format!("xlb-perf-tcp-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let res = run_all(o, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let runs = res?;
    let mut summary = Vec::new();
    for &c in &o.contenders {
        let of = |m: TcpMode| -> Vec<&TcpRun> {
            runs.iter()
                .filter(|r| r.contender == c && r.mode == m)
                .collect()
        };
        let rates = |m: TcpMode| of(m).iter().map(|r| r.rate).collect::<Vec<_>>();
        let lat = of(TcpMode::Latency);
        summary.push(TcpSummary {
            contender: c,
            conn: spread(&rates(TcpMode::Conn)),
            keepalive: spread(&rates(TcpMode::Keepalive)),
            lat_p50_us: spread(&lat.iter().map(|r| r.p50_us as f64).collect::<Vec<_>>()).median,
            lat_p99_us: spread(&lat.iter().map(|r| r.p99_us as f64).collect::<Vec<_>>()).median,
            lat_rate: spread(&rates(TcpMode::Latency)).median,
            errors: runs
                .iter()
                .filter(|r| r.contender == c)
                .map(|r| r.errors)
                .sum(),
        });
    }
    let report = TcpReport {
        when: report::utc_now(),
        command: command.to_string(),
        kernel: report::kernel(),
        placement: format!(
            "wrk (1 thread) pinned to cpu{c}; backends' nginx (1 worker) pinned to cpu{b}; balancer process pinned to cpu{l} \
             (xlb: whole process and its AF_XDP worker via --cores, blocking in poll() when idle; HAProxy 1 thread; nginx stream 1 worker); \
             kernel contenders (direct, nftables, and the proxies' TCP stack): RPS of the balancer's veths to cpu{l}; \
             xlb: its XDP program and the copy into the UMEM run in the sending side's softirq (veth), see the per-run CPU split; \
             nice of every process started: {nice}",
            nice = o.nice.map_or("unchanged".to_string(), |n| n.to_string()),
            c = o.client_cpu,
            b = o.be_cpu,
            l = o.lb_cpu
        ),
        loadavg: (load0, procs::loadavg()),
        summary,
        runs,
    };
    report::write(&o.out, "tcp", &markdown(&report, o), &report)?;
    bars(&report, &o.out.join("tcp.svg"))?;
    chart::to_png(&o.out.join("tcp.svg"));
    chart::latency_cdf(
        "TCP request latency CDF at a fixed moderate rate (wrk, keep-alive)",
        &cdf_series(&report),
        &o.out.join("latency-cdf.svg"),
    )?;
    chart::to_png(&o.out.join("latency-cdf.svg"));
    Ok(report)
}

fn run_all(o: &TcpOpts, dir: &Path) -> Result<Vec<TcpRun>> {
    let mut runs = Vec::new();
    for rep in 0..o.reps {
        for &c in &o.contenders {
            if host::interrupted() {
                bail!("interrupted; processes stopped and namespaces removed");
            }
            if o.verbose {
                eprintln!("tcp rep {}/{}: {}", rep + 1, o.reps, c.label());
            }
            let cdir = dir.join(format!("{}-{rep}", c.short()));
            std::fs::create_dir_all(&cdir)?;
            let r = prepare(o, c, &cdir).with_context(|| format!("starting {}", c.short()))?;
            for m in [TcpMode::Conn, TcpMode::Keepalive, TcpMode::Latency] {
                let x = wrk(o, &r, c, m, rep, &cdir)
                    .with_context(|| format!("{} {m:?} rep {rep}", c.short()))?;
                if o.verbose {
                    eprintln!(
                        "  {m:?}: {:.0}/s, p50 {} us, p99 {} us, errors {}; {}",
                        x.rate,
                        x.p50_us,
                        x.p99_us,
                        x.errors,
                        procs::placement_text(&x.procs, &x.cpus)
                    );
                }
                runs.push(x);
            }
            drop(r);
        }
    }
    Ok(runs)
}

/// Per contender, the latency-run CDF of the repetition with the median p50:
/// (label, [(µs, fraction)]).
pub fn cdf_series(r: &TcpReport) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut out = Vec::new();
    for s in &r.summary {
        let mut lat: Vec<&TcpRun> = r
            .runs
            .iter()
            .filter(|x| x.contender == s.contender && x.mode == TcpMode::Latency)
            .collect();
        lat.sort_by_key(|x| x.p50_us);
        if let Some(m) = lat.get(lat.len() / 2) {
            out.push((
                s.contender.label().to_string(),
                m.wrk
                    .cdf
                    .iter()
                    .map(|(p, v)| (*v as f64, p / 100.0))
                    .collect(),
            ));
        }
    }
    out
}

/// Per contender, connections/s and keep-alive requests/s, on two panels
/// with their own scales.
fn bars(r: &TcpReport, path: &Path) -> Result<()> {
    let labels: Vec<String> = r
        .summary
        .iter()
        .map(|s| s.contender.short().to_string())
        .collect();
    let conn: Vec<Spread> = r.summary.iter().map(|s| s.conn).collect();
    let keepalive: Vec<Spread> = r.summary.iter().map(|s| s.keepalive).collect();
    chart::panel_bars(
        &labels,
        [
            Series {
                name: "connections/s (new connection per request)",
                values: &conn,
            },
            Series {
                name: "requests/s (keep-alive)",
                values: &keepalive,
            },
        ],
        report::reps(r.runs.iter().map(|x| x.rep)),
        path,
    )
}

/// `a` ÷ `b` as the tables print it.
fn ratio(a: f64, b: f64) -> String {
    times((b > 0.0).then(|| a / b))
}

/// The Markdown report.
pub fn markdown(r: &TcpReport, o: &TcpOpts) -> String {
    let find = |c: TcpContender| r.summary.iter().find(|s| s.contender == c);
    let direct = find(TcpContender::Direct);
    let xlb = find(TcpContender::XlbFullnat);
    let reps = report::reps(r.runs.iter().map(|x| x.rep));
    let mut s = String::new();
    s += "# TCP through the VIP: wrk against nginx backends\n\n";
    s += &format!(
        "- when: {}\n- command: `{}`\n- kernel: {}\n- load average (1 min) at start / end: {:.2} / {:.2}\n- placement: {}\n- wrk: 1 thread, {} connections, {} s per run; `conn/s`: `Connection: close` (a new TCP connection per request); `req/s`: keep-alive; latency: {} keep-alive connections each pausing {} ms between requests (a fixed moderate rate), percentiles from wrk\n\n",
        r.when, r.command, r.kernel, r.loadavg.0, r.loadavg.1, r.placement, o.conns, o.secs, o.lat_conns, o.lat_delay_ms
    );
    s += &format!("Median of {reps} repetition(s), [min–max].\n\n");
    s += "| contender | conn/s | ÷ direct | ÷ xlb full NAT | req/s keep-alive | ÷ direct | ÷ xlb full NAT | errors |\n|---|---|---|---|---|---|---|---|\n";
    for x in &r.summary {
        let f = |v: &Spread| format!("{:.0} [{:.0}–{:.0}]", v.median, v.min, v.max);
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            x.contender.label(),
            f(&x.conn),
            direct.map_or("–".into(), |d| ratio(x.conn.median, d.conn.median)),
            xlb.map_or("–".into(), |d| ratio(x.conn.median, d.conn.median)),
            f(&x.keepalive),
            direct.map_or("–".into(), |d| ratio(
                x.keepalive.median,
                d.keepalive.median
            )),
            xlb.map_or("–".into(), |d| ratio(
                x.keepalive.median,
                d.keepalive.median
            )),
            x.errors
        );
    }
    s += "\n## Latency at a fixed moderate rate\n\n| contender | req/s | p50 µs | p99 µs | added p50 µs (vs direct) | added p99 µs |\n|---|---|---|---|---|---|\n";
    for x in &r.summary {
        let add = |v: f64, d: Option<f64>| d.map_or("–".into(), |d| format!("{:+.0}", v - d));
        s += &format!(
            "| {} | {:.0} | {:.0} | {:.0} | {} | {} |\n",
            x.contender.label(),
            x.lat_rate,
            x.lat_p50_us,
            x.lat_p99_us,
            add(x.lat_p50_us, direct.map(|d| d.lat_p50_us)),
            add(x.lat_p99_us, direct.map(|d| d.lat_p99_us)),
        );
    }
    s += "\nCDF: `latency-cdf.svg`. \n\n## Runs (where everything ran: CPUs each process was seen on and its CPU time as % of one core; per-CPU user/system/softirq/idle %; NET_RX softirqs per CPU)\n\n| rep | contender | mode | rate/s | p50 µs | p99 µs | errors | processes | CPUs | NET_RX/cpu | load |\n|---|---|---|---|---|---|---|---|---|---|---|\n";
    for x in &r.runs {
        let procs_s: Vec<String> = x
            .procs
            .iter()
            .map(|u| format!("{} cpu{:?} {:.0} %", u.role, u.cpus, u.core_pct))
            .collect();
        let cpus_s: Vec<String> = x.cpus.iter().map(CpuShare::to_string).collect();
        s += &format!(
            "| {} | {} | {:?} | {:.0} | {} | {} | {} | {} | {} | {:?} | {:.2} |\n",
            x.rep + 1,
            x.contender.short(),
            x.mode,
            x.rate,
            x.p50_us,
            x.p99_us,
            x.errors,
            procs_s.join("; "),
            cpus_s.join("; "),
            x.net_rx_softirqs,
            x.loadavg
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_name_every_backend_and_the_vip() {
        let d = Path::new("/tmp/x");
        for c in [
            nginx::backend_conf(d),
            nginx::stream_conf(d),
            haproxy::conf(),
            nft::tcp_ruleset(),
            xlb::tcp_lbconfig(2),
        ] {
            for b in BACKENDS {
                assert!(c.contains(&b.to_string()), "{c}");
            }
        }
        assert!(haproxy::conf().contains("maxconn"));
        assert!(haproxy::conf().contains("balance roundrobin"));
        assert!(nginx::stream_conf(d).contains(&format!("listen {VIP}:80")));
        let v: serde_json::Value =
            serde_json::from_str(&xlb::tcp_lbconfig(0)).expect("lbconfig is JSON");
        assert_eq!(v["lbAttr"][0]["serviceArguments"]["mode"], 0);
        assert_eq!(
            v["lbAttr"][0]["endpoints"].as_array().map(Vec::len),
            Some(3)
        );
    }

    #[test]
    fn wrk_reports_parse_and_percentiles_pick_the_point_at_or_above() {
        let j = r#"{"requests":1000,"duration_us":500000,"connect":1,"read":0,"write":0,"status":2,"timeout":0,"lat_mean_us":80.5,"cdf":[[0,10],[50,70],[99,300],[100,900]]}"#;
        let w: WrkReport = serde_json::from_str(j).expect("parse");
        assert_eq!(w.rate(), 2000.0);
        assert_eq!(w.pct(50.0), 70);
        assert_eq!(w.pct(60.0), 300);
        assert_eq!(w.pct(99.0), 300);
        assert_eq!(w.errors(), 3);
    }
}
