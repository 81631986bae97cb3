//! Processes the harness starts inside its namespaces (wrk, nginx, HAProxy,
//! the `xlb` daemon) and where they and the softirqs ran.
//!
//! Every process is a test-kit [`Proc`]: started through `ip netns exec NS
//! taskset -c CPU …` ([`start`]: so it and all its threads stay on the
//! cores the report names), stopped by its own pid on drop — SIGTERM, then
//! SIGKILL after a grace period — so a failed or interrupted run leaves
//! nothing behind. [`Lab`] additionally kills whatever is still inside its
//! namespaces before it deletes them.
//!
//! [`Lab`]: xlb_testkit::Lab
// Raw syscalls: sysconf.
#![allow(unsafe_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use xlb_testkit::{netns, Spawn};

pub use xlb_testkit::Proc;

/// Start `args` in namespace `ns`, pinned to `cpus` (taskset list, e.g.
/// "1" or "0,1"), at nice `nice` (inherited by its threads and children;
/// `None` = unchanged), stdout and stderr to `log`.
pub fn start(
    name: &str,
    ns: &str,
    cpus: &str,
    nice: Option<i32>,
    args: &[&str],
    log: &Path,
) -> Result<Proc> {
    Spawn::new(args)
        .name(name)
        .netns(ns)
        .cpus(cpus)
        .nice(nice.unwrap_or(0))
        .log(log)
        .start()
        .with_context(|| format!("starting {name}: {args:?}"))
}

/// Wait until `p` exits, at most `limit`, stopping early on SIGINT/SIGTERM
/// to the harness. Returns whether it exited successfully.
pub fn wait(p: &mut Proc, limit: Duration) -> Result<bool> {
    Ok(p.wait(limit, crate::host::interrupted)?)
}

/// Wait until `probe` succeeds (at most `limit`), failing early if `p` exits.
pub fn wait_ready(p: &mut Proc, limit: Duration, mut probe: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if probe() {
            return Ok(());
        }
        if !p.running() {
            bail!("{} exited; its log:\n{}", p.name, p.log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "{} not ready after {limit:?}; its log:\n{}",
        p.name,
        p.log()
    )
}

/// Whether a TCP connect to `addr` from namespace `ns` succeeds.
pub fn tcp_open(ns: &str, addr: std::net::SocketAddr) -> bool {
    let (ip, port) = (addr.ip().to_string(), addr.port().to_string());
    // bash's /dev/tcp: no extra tools needed.
    let connect = format!("exec 3<>/dev/tcp/{ip}/{port}");
    netns::exec(ns, &["timeout", "1", "bash", "-c", &connect]).is_ok()
}

// ---------------------------------------------------------------- where things ran

/// Per-CPU jiffies from `/proc/stat` (user+nice, system, softirq, irq, idle+iowait).
#[derive(Debug, Clone, Default)]
pub struct CpuTimes(Vec<[u64; 5]>);

impl CpuTimes {
    /// Read `/proc/stat` now.
    pub fn now() -> CpuTimes {
        let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        CpuTimes(
            s.lines()
                .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
                .map(|l| {
                    let v: Vec<u64> = l
                        .split_whitespace()
                        .skip(1)
                        .filter_map(|x| x.parse().ok())
                        .collect();
                    let g = |i: usize| v.get(i).copied().unwrap_or(0);
                    // user nice system idle iowait irq softirq steal
                    [g(0) + g(1), g(2), g(6), g(5), g(3) + g(4)]
                })
                .collect(),
        )
    }

    /// Percent of each CPU's time since `earlier` spent in user, system,
    /// softirq, irq and idle.
    pub fn since(&self, earlier: &CpuTimes) -> Vec<CpuShare> {
        self.0
            .iter()
            .zip(earlier.0.iter())
            .enumerate()
            .map(|(cpu, (a, b))| {
                let d: Vec<u64> = (0..5).map(|i| a[i].saturating_sub(b[i])).collect();
                let total = d.iter().sum::<u64>().max(1) as f64;
                let pct = |i: usize| (1000.0 * d[i] as f64 / total).round() / 10.0;
                CpuShare {
                    cpu,
                    user: pct(0),
                    system: pct(1),
                    softirq: pct(2),
                    irq: pct(3),
                    idle: pct(4),
                }
            })
            .collect()
    }
}

/// One CPU's time split over a run (percent).
#[derive(Debug, Clone, Serialize)]
pub struct CpuShare {
    /// CPU number.
    pub cpu: usize,
    /// User (incl. nice).
    pub user: f64,
    /// System.
    pub system: f64,
    /// Softirq (NET_RX/NET_TX: veth NAPI, forwarding, the TCP stack's receive).
    pub softirq: f64,
    /// Hard irq.
    pub irq: f64,
    /// Idle (incl. iowait).
    pub idle: f64,
}

impl std::fmt::Display for CpuShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cpu{}: usr {:.0} sys {:.0} si {:.0} idle {:.0}",
            self.cpu, self.user, self.system, self.softirq, self.idle
        )
    }
}

/// NET_RX softirq counts per CPU.
pub fn net_rx_softirqs() -> Vec<u64> {
    let s = std::fs::read_to_string("/proc/softirqs").unwrap_or_default();
    s.lines()
        .find(|l| l.trim_start().starts_with("NET_RX:"))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `b - a`, element-wise.
pub fn delta(b: &[u64], a: &[u64]) -> Vec<u64> {
    b.iter()
        .zip(a.iter().chain(std::iter::repeat(&0)))
        .map(|(x, y)| x.saturating_sub(*y))
        .collect()
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// A process tree's CPU use: utime+stime (jiffies) and the CPUs its threads
/// were last seen on, over `pid` and its children (nginx/HAProxy workers).
#[derive(Debug, Clone, Default)]
pub struct ProcSample {
    jiffies: u64,
    cpus: Vec<i32>,
}

fn children_of(pid: i32) -> Vec<i32> {
    let mut v = Vec::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            let s = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            v.extend(s.split_whitespace().filter_map(|c| c.parse::<i32>().ok()));
        }
    }
    v
}

/// Sample `pid` and its descendants now.
pub fn sample_tree(pid: i32) -> ProcSample {
    let mut out = ProcSample::default();
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in dir.flatten() {
                let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                if let Some(rest) = stat.rsplit_once(')').map(|x| x.1) {
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    // After ")": state is f[0]; utime f[11], stime f[12], processor f[36].
                    let j = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                    out.jiffies += j(11) + j(12);
                    if let Some(c) = f.get(36).and_then(|v| v.parse().ok()) {
                        if !out.cpus.contains(&c) {
                            out.cpus.push(c);
                        }
                    }
                }
            }
        }
        stack.extend(children_of(p));
    }
    out.cpus.sort_unstable();
    out
}

/// Where one process (tree) ran during a run.
#[derive(Debug, Clone, Serialize)]
pub struct ProcUse {
    /// Role (client, backends, balancer, …).
    pub role: String,
    /// CPUs its threads were seen on.
    pub cpus: Vec<i32>,
    /// CPU time used, as percent of one core over the run.
    pub core_pct: f64,
}

/// CPU use of `pid`'s tree between two samples `secs` apart.
pub fn proc_use(role: &str, a: &ProcSample, b: &ProcSample, secs: f64) -> ProcUse {
    let mut cpus = a.cpus.clone();
    for c in &b.cpus {
        if !cpus.contains(c) {
            cpus.push(*c);
        }
    }
    cpus.sort_unstable();
    ProcUse {
        role: role.to_string(),
        cpus,
        core_pct: (1000.0 * b.jiffies.saturating_sub(a.jiffies) as f64
            / clk_tck()
            / secs.max(1e-3))
        .round()
            / 10.0,
    }
}

/// 1-minute load average.
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// "N CPUs (model), kernel K, M GiB": the machine, for reports.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|x| x.1.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let n = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{n} CPUs ({model}), {mem_gib:.0} GiB, kernel {}",
        kernel.trim()
    )
}

/// A short text for reports: `client cpu[0] 98 %; backends cpu[1] 40 %; …`.
pub fn placement_text(uses: &[ProcUse], cpus: &[CpuShare]) -> String {
    let mut s: Vec<String> = uses
        .iter()
        .map(|u| format!("{} {:?} {:.0} %", u.role, u.cpus, u.core_pct))
        .collect();
    s.extend(cpus.iter().map(CpuShare::to_string));
    s.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_times_split_sums_to_about_100_percent() {
        let a = CpuTimes::now();
        // Burn a little CPU so the delta is not empty.
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let b = CpuTimes::now();
        let shares = b.since(&a);
        assert!(!shares.is_empty());
        for c in shares {
            let sum = c.user + c.system + c.softirq + c.irq + c.idle;
            assert!(
                sum == 0.0 || (sum - 100.0).abs() < 1.0,
                "{c:?} sums to {sum}"
            );
        }
    }

    #[test]
    fn this_process_shows_up_with_cpu_time_and_a_cpu() {
        let me = std::process::id() as i32;
        let a = sample_tree(me);
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(120) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let b = sample_tree(me);
        let u = proc_use("me", &a, &b, 0.12);
        assert!(!u.cpus.is_empty());
        assert!(u.core_pct > 10.0, "{u:?}");
        assert_eq!(delta(&[5, 7], &[2, 9]), vec![3, 0]);
    }
}
