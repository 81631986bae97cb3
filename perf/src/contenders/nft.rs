//! Kernel nftables DNAT with conntrack, the kernel's own L4 balancing: each
//! suite's rules, their placement on the balancer's core (RPS, or threaded
//! NAPI), and the kernel conntrack table they fill (its global limits,
//! raised for a run and restored, its count and drops per namespace).

use std::path::Path;

use anyhow::{bail, Context, Result};
use xlb_testkit::{netns, sh, Sysctls};

use crate::host;
use crate::topo::{
    set_rps, FloodTopo, Placement, Topo, BACKENDS, BE_PORT, FLOOD_BACKENDS, FLOOD_PORT,
    FLOOD_TARGET_PORT, VIP, VIP_PORT, VIP_TCP_PORT,
};

/// UDP conntrack timeouts (s) in the balancer namespace for the flows
/// suite: the generator's flows never see a reply, so without this the
/// 30 s "unreplied" timeout could expire warmed flows before they are measured.
pub const NFT_UDP_TIMEOUT_S: u32 = 600;

/// The UDP suite's rules: DNAT of VIP:7, hashed over the source to the
/// three backends (as xlb's Maglev spreads flows), with conntrack.
pub fn udp_ruleset() -> String {
    let [a, b, c] = BACKENDS;
    format!(
        "table ip xlbbench {{\n  chain pre {{\n    type nat hook prerouting priority dstnat; policy accept;\n    ip daddr {VIP} udp dport {VIP_PORT} dnat to jhash ip saddr . udp sport mod 3 map {{ 0 : {a}, 1 : {b}, 2 : {c} }}\n  }}\n}}\n"
    )
}

/// The TCP suite's rules: DNAT of VIP:80, round robin over the backends.
pub fn tcp_ruleset() -> String {
    let [a, b, c] = BACKENDS;
    format!(
        "table ip xlbbench {{\n  chain pre {{\n    type nat hook prerouting priority dstnat; policy accept;\n    ip daddr {VIP} tcp dport {VIP_TCP_PORT} dnat to numgen inc mod 3 map {{ 0 : {a}, 1 : {b}, 2 : {c} }} : {BE_PORT}\n  }}\n}}\n"
    )
}

/// The flows suite's rules: xlb's two services as nftables DNAT — UDP
/// hashed over the source (xlb's `sel: 1`), the flooded TCP service round
/// robin (`sel: 0`) to port 8080.
pub fn flows_ruleset() -> String {
    let [a, b, c] = BACKENDS;
    let [d, e, g] = FLOOD_BACKENDS;
    format!(
        "table ip xlbflows {{\n  chain pre {{\n    type nat hook prerouting priority dstnat; policy accept;\n    ip daddr {VIP} udp dport {VIP_PORT} dnat to jhash ip saddr . udp sport mod 3 map {{ 0 : {a}, 1 : {b}, 2 : {c} }}\n    ip daddr {VIP} tcp dport {FLOOD_PORT} dnat to numgen inc mod 3 map {{ 0 : {d}, 1 : {e}, 2 : {g} }} : {FLOOD_TARGET_PORT}\n  }}\n}}\n"
    )
}

// ---------------------------------------------------------------- the UDP suite's placement

/// Threaded NAPI on `iface` in `ns`, its kthread pinned to `cpu` (and
/// reniced): GRO on keeps the veth's NAPI instance alive, so the kthread
/// exists before any XDP program is attached.
fn thread_napi(ns: &str, iface: &str, cpu: usize, nice: Option<i32>) -> Result<Vec<i32>> {
    netns::exec(ns, &["ethtool", "-K", iface, "gro", "on"])?;
    netns::exec(
        ns,
        &[
            "sh",
            "-c",
            &format!("echo 1 > /sys/class/net/{iface}/threaded"),
        ],
    )?;
    // Kthread names are "napi/<iface>-<id>", cut at 15 characters.
    let want: String = format!("napi/{iface}").chars().take(15).collect();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim_end().starts_with(&want) {
            sh(&["taskset", "-pc", &cpu.to_string(), &pid.to_string()])?;
            if let Some(n) = nice {
                host::renice(pid, n);
            }
            pids.push(pid);
        }
    }
    if pids.is_empty() {
        bail!("no NAPI kthread for {iface} after enabling threaded NAPI");
    }
    Ok(pids)
}

/// Undo [`thread_napi`]: NAPI back in the sender's softirq, GRO off again.
fn unthread_napi(ns: &str, iface: &str) -> Result<()> {
    netns::exec(
        ns,
        &[
            "sh",
            "-c",
            &format!("echo 0 > /sys/class/net/{iface}/threaded"),
        ],
    )?;
    netns::exec(ns, &["ethtool", "-K", iface, "gro", "off"])?;
    Ok(())
}

/// The UDP suite's contender: load [`udp_ruleset`] in the balancer
/// namespace and set up `placement` with the balancer's work on `lb_cpu`.
/// Returns the balancer CPU's ksoftirqd and its previous nice when it was
/// reniced to `nice` (for [`stop_udp`]).
pub(crate) fn start_udp(
    t: &Topo,
    placement: Placement,
    lb_cpu: usize,
    nice: Option<i32>,
) -> Result<Option<(i32, i32)>> {
    t.lb.nft(&udp_ruleset())
        .context("loading the nftables DNAT rules (is nftables installed? scripts/deps.sh)")?;
    match placement {
        // The whole kernel path runs in the ingress NAPI kthread on lb_cpu,
        // at the harness's nice.
        Placement::Owned => {
            thread_napi(&t.lb, &t.l0, lb_cpu, nice)?;
            Ok(None)
        }
        // RPS runs it in NET_RX softirqs on lb_cpu, which the kernel hands to
        // ksoftirqd (nice 0) under load; the AF_XDP workers run at the
        // harness's nice, so ksoftirqd gets it too for the run.
        Placement::Shared => {
            set_rps(&t.lb, &t.l0, &format!("{:x}", 1u64 << lb_cpu))?;
            let reniced = nice.and_then(|n| {
                let (pid, was) = host::ksoftirqd(lb_cpu)?;
                host::renice(pid, n).then_some((pid, was))
            });
            Ok(reniced)
        }
    }
}

/// Undo [`start_udp`].
pub(crate) fn stop_udp(
    t: &Topo,
    placement: Placement,
    ksoftirqd: Option<(i32, i32)>,
) -> Result<()> {
    if let Some((pid, was)) = ksoftirqd {
        host::renice(pid, was);
    }
    match placement {
        Placement::Owned => unthread_napi(&t.lb, &t.l0)?,
        Placement::Shared => set_rps(&t.lb, &t.l0, "0")?,
    }
    netns::exec(&t.lb, &["nft", "delete", "table", "ip", "xlbbench"])?;
    Ok(())
}

// ---------------------------------------------------------------- the flows suite's contender

/// The kernel contender set up in the balancer namespace; torn down (rules
/// deleted, conntrack flushed, RPS and forwarding off, ksoftirqd's nice
/// restored) when dropped.
pub(crate) struct FlowsDnat<'a> {
    f: &'a FloodTopo,
    /// (pid, previous nice) of the balancer CPU's ksoftirqd, if reniced.
    ksoftirqd: Option<(i32, i32)>,
}

/// RPS of both ingress veths (established and flood) to `mask`.
fn set_ingress_rps(f: &FloodTopo, mask: &str) -> Result<()> {
    for i in [&f.t.l0, &f.l2] {
        set_rps(&f.t.lb, i, mask)?;
    }
    Ok(())
}

/// Empty the balancer namespace's conntrack table, and check that it is.
fn flush_conntrack(ns: &str) -> Result<()> {
    netns::exec(ns, &["conntrack", "-F"])
        .context("flushing conntrack (conntrack-tools: scripts/deps.sh installs it)")?;
    let n = ct_count(ns)?;
    if n > 0 {
        bail!("{n} conntrack entries left in {ns} after conntrack -F");
    }
    Ok(())
}

impl<'a> FlowsDnat<'a> {
    /// Load [`flows_ruleset`] on `f`'s balancer with its receive work on
    /// `lb_cpu` (RPS), at `nice` (see below).
    pub(crate) fn start(
        f: &'a FloodTopo,
        lb_cpu: usize,
        nice: Option<i32>,
    ) -> Result<FlowsDnat<'a>> {
        // A stopped xlb must have taken its XDP programs along, or traffic
        // would never reach the kernel's path.
        for i in [&f.t.l0, &f.t.l1, &f.l2] {
            let out = sh(&["ip", "-n", &f.t.lb, "-j", "link", "show", "dev", i])?;
            if out.contains("\"xdp\"") {
                bail!("an XDP program is still attached to {i}: {out}");
            }
        }
        let mut nft = FlowsDnat { f, ksoftirqd: None };
        // RPS runs the kernel path in NET_RX softirqs on lb_cpu; under load
        // the kernel hands them to ksoftirqd, a nice-0 thread that other work
        // on the machine (builds) would then share the core with, while xlb
        // runs at the harness's nice: give the kernel path the same nice.
        if let Some(n) = nice {
            if let Some((pid, was)) = host::ksoftirqd(lb_cpu) {
                if host::renice(pid, n) {
                    nft.ksoftirqd = Some((pid, was));
                }
            }
        }
        let lb = &f.t.lb;
        lb.nft(&flows_ruleset())
            .context("loading the nftables DNAT rules (scripts/deps.sh installs nftables)")?;
        let t = NFT_UDP_TIMEOUT_S.to_string();
        netns::exec(
            lb,
            &[
                "sysctl",
                "-qw",
                &format!("net.netfilter.nf_conntrack_udp_timeout={t}"),
                &format!("net.netfilter.nf_conntrack_udp_timeout_stream={t}"),
                "net.ipv4.ip_forward=1",
            ],
        )?;
        set_ingress_rps(f, &format!("{:x}", 1u64 << lb_cpu))?;
        flush_conntrack(lb)?;
        Ok(nft)
    }
}

impl Drop for FlowsDnat<'_> {
    fn drop(&mut self) {
        let lb = &self.f.t.lb;
        let _ = netns::exec(lb, &["nft", "delete", "table", "ip", "xlbflows"]);
        if let Err(e) = flush_conntrack(lb) {
            eprintln!("xlb-perf: {e:#}");
        }
        let _ = set_ingress_rps(self.f, "0");
        let _ = netns::exec(lb, &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
        if let Some((pid, was)) = self.ksoftirqd {
            host::renice(pid, was);
        }
    }
}

// ---------------------------------------------------------------- kernel conntrack

pub(crate) const CT_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";
const CT_BUCKETS: &str = "/proc/sys/net/netfilter/nf_conntrack_buckets";
const CT_HASHSIZE: &str = "/sys/module/nf_conntrack/parameters/hashsize";

pub(crate) fn read_u64(path: &str) -> Result<u64> {
    std::fs::read_to_string(path)
        .with_context(|| format!("reading {path}"))?
        .trim()
        .parse()
        .with_context(|| format!("parsing {path}"))
}

/// The kernel's global conntrack limits, raised for a run and restored when
/// dropped. Both are global (one hash table for every namespace, and a
/// child namespace sees `nf_conntrack_max` read-only), so they are set from
/// the initial namespace: call this from a thread that is in it. Only
/// values below what the run needs are changed; a larger setting is left.
/// It holds the test kit's global-sysctl lock while it lives, so runs and
/// tests that size conntrack never overlap.
#[derive(Debug)]
pub struct CtSizing {
    sysctls: Sysctls,
}

impl CtSizing {
    /// Make `nf_conntrack_max` at least `max` and the hash at least
    /// `buckets` buckets.
    pub fn at_least(max: u64, buckets: u64) -> Result<CtSizing> {
        if !Path::new(CT_MAX).exists() {
            // Built as a module: loading nftables' NAT would load it anyway.
            let _ = sh(&["modprobe", "nf_conntrack"]);
        }
        let mut s = Sysctls::lock()?;
        // Buckets first: the table grows before it may hold more entries.
        if s.read_u64(CT_BUCKETS)? < buckets {
            let b = buckets.to_string();
            // The sysctl is writable in the initial namespace on recent
            // kernels; the module parameter is the older way to resize.
            s.set(CT_BUCKETS, &b)
                .or_else(|_| s.set_through(CT_BUCKETS, CT_HASHSIZE, &b))
                .with_context(|| format!("resizing the conntrack hash to {buckets} buckets"))?;
        }
        if s.read_u64(CT_MAX)? < max {
            s.set(CT_MAX, &max.to_string())
                .with_context(|| format!("setting {CT_MAX} to {max}"))?;
        }
        Ok(CtSizing { sysctls: s })
    }

    /// What it changed, for the report.
    pub fn describe(&self) -> String {
        let now = |p: &str| read_u64(p).map_or("?".to_string(), |v| v.to_string());
        let was = |p: &str| {
            self.sysctls
                .before(p)
                .map_or("unchanged".to_string(), |v| format!("was {v}"))
        };
        format!(
            "nf_conntrack_max {} ({}), conntrack hash {} buckets ({}), both restored after the suite",
            now(CT_MAX),
            was(CT_MAX),
            now(CT_BUCKETS),
            was(CT_BUCKETS)
        )
    }
}

/// Conntrack entries in namespace `ns` (`nf_conntrack_count`).
pub(crate) fn ct_count(ns: &str) -> Result<u64> {
    netns::exec(ns, &["cat", "/proc/sys/net/netfilter/nf_conntrack_count"])?
        .trim()
        .parse()
        .context("nf_conntrack_count")
}

/// Sum of the kernel conntrack's drop, early_drop and insert_failed
/// counters over the CPUs, in namespace `ns` (`/proc/net/stat/nf_conntrack`:
/// a header line, then one line of hex fields per CPU).
pub(crate) fn ct_stat_drops(ns: &str) -> u64 {
    let text = netns::exec(ns, &["cat", "/proc/net/stat/nf_conntrack"]).unwrap_or_default();
    parse_ct_stat_drops(&text)
}

fn parse_ct_stat_drops(text: &str) -> u64 {
    let mut lines = text.lines();
    let Some(head) = lines.next() else {
        return 0;
    };
    let cols: Vec<usize> = head
        .split_whitespace()
        .enumerate()
        .filter(|(_, h)| matches!(*h, "drop" | "early_drop" | "insert_failed"))
        .map(|(i, _)| i)
        .collect();
    lines
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            cols.iter()
                .filter_map(|&i| u64::from_str_radix(f.get(i)?, 16).ok())
                .sum::<u64>()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nft_ruleset_names_every_backend() {
        let r = udp_ruleset();
        for b in BACKENDS {
            assert!(r.contains(&b.to_string()));
        }
        assert!(r.contains("dnat to"));
    }

    #[test]
    fn the_flows_ruleset_mirrors_both_services() {
        let r = flows_ruleset();
        for b in BACKENDS.iter().chain(FLOOD_BACKENDS.iter()) {
            assert!(r.contains(&b.to_string()), "{b}: {r}");
        }
        assert!(r.contains(&format!("udp dport {VIP_PORT} dnat to jhash")));
        assert!(r.contains(&format!("tcp dport {FLOOD_PORT} dnat to numgen")));
        assert!(r.contains(&format!(": {FLOOD_TARGET_PORT}")));
    }

    #[test]
    fn conntrack_stat_drops_sum_the_drop_columns_of_every_cpu() {
        let text = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
                    00000010  00000000 00000005 00000000 00000000 00000000 00000000 00000000 00000000 00000001 00000002 00000003 00000000  00000000 00000000 00000000 00000000\n\
                    00000010  00000000 00000005 00000000 00000000 00000000 00000000 00000000 00000000 00000000 0000000a 00000000 00000000  00000000 00000000 00000000 00000000\n";
        assert_eq!(parse_ct_stat_drops(text), 1 + 2 + 3 + 10);
        assert_eq!(parse_ct_stat_drops(""), 0);
    }
}
