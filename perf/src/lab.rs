//! Network-namespace labs for the generator's tests and the benchmark
//! harness: namespaces and veth pairs this process creates and always
//! removes ([`Lab`] deletes its namespaces on drop, panics included, which
//! takes their veths, routes and XDP programs with them), and
//! [`enter_netns`] to move one thread into a namespace.
//!
//! Names carry the pid (`xlbp-<pid>-<role>`, interfaces `xp<pid><role>`), so
//! concurrent runs and other engineers' labs never collide.
// Raw syscalls: setns(2), signals, scheduling (nice, affinity, current CPU).
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};

/// Move the calling thread into network namespace `name` (`/run/netns/NAME`).
/// Threads it spawns and processes they start inherit it.
pub fn enter_netns(name: &str) -> Result<()> {
    let path = format!("/run/netns/{name}");
    let f = File::open(&path).with_context(|| format!("open {path}"))?;
    // SAFETY: `f` is an open namespace fd for the duration of the call;
    // setns(CLONE_NEWNET) changes only this thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!("setns {path}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Turn SIGINT and SIGTERM into a flag ([`interrupted`]) that the loops
/// poll, so an interrupted run still stops its senders and drops its
/// [`Lab`] (deleting the namespaces) instead of dying mid-way.
pub fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe);
        // `on_signal` has the C ABI signal(2) expects and lives forever.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Whether SIGINT/SIGTERM arrived (after [`catch_signals`]).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Send `sig` to process `pid` (best effort: it may have exited).
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Pin the calling thread to `cpu` (best effort; returns whether it worked).
pub fn pin(cpu: usize) -> bool {
    core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
}

/// The calling thread's id.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// Set thread `tid`'s nice value (Linux: per thread). Returns whether it worked.
/// The harness raises its own threads (generator, receiver, AF_XDP workers)
/// so compilers sharing the machine do not take their cores: softirq work
/// (the kernel contender) already preempts every user thread.
pub fn renice(tid: i32, nice: i32) -> bool {
    // SAFETY: setpriority takes plain integers; a bad tid only yields ESRCH.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) == 0 }
}

/// The pid and nice of the `ksoftirqd/<cpu>` kernel thread.
pub fn ksoftirqd(cpu: usize) -> Option<(i32, i32)> {
    let want = format!("ksoftirqd/{cpu}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let (head, rest) = stat.rsplit_once(')')?;
        if head.split_once('(')?.1 != want {
            return None;
        }
        // After ")": state is field 3 of stat(5), nice field 19.
        let nice = rest.split_whitespace().nth(16)?.parse().ok()?;
        Some((pid, nice))
    })
}

/// Put this process in a session (and so a scheduler autogroup) of its own
/// and give that autogroup nice `nice`. With autogroups on (Debian's
/// default), thread nice values only rank threads *inside* their autogroup;
/// without this, a busy-polling worker gets the same share of its core as
/// each unrelated build job on the machine (measured: ~10 %), while softirq
/// work - the kernel contender - is not subject to that sharing at all.
/// Returns whether the autogroup nice was set.
pub fn own_autogroup(nice: i32) -> bool {
    // SAFETY: setsid has no memory-safety preconditions; it fails harmlessly
    // (EPERM) if we already lead a process group, and the autogroup is then
    // the caller's session's.
    unsafe {
        libc::setsid();
    }
    std::fs::write("/proc/self/autogroup", nice.to_string()).is_ok()
}

/// Thread ids of this process whose name starts with `prefix`.
pub fn threads_named(prefix: &str) -> Vec<i32> {
    let mut v = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            if comm.starts_with(prefix) {
                if let Some(t) = e.file_name().to_str().and_then(|t| t.parse().ok()) {
                    v.push(t);
                }
            }
        }
    }
    v
}

/// The CPU the calling thread runs on right now.
pub fn current_cpu() -> i32 {
    // SAFETY: sched_getcpu has no preconditions.
    unsafe { libc::sched_getcpu() }
}

/// Run a command; fail with its stderr.
pub fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("spawning {args:?}"))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run a command inside namespace `ns` (`ip netns exec`, which also mounts
/// the namespace's own /sys).
pub fn ns_sh(ns: &str, args: &[&str]) -> Result<String> {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    sh(&v)
}

/// The effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Namespaces owned by this process; deleted on drop.
#[derive(Debug)]
pub struct Lab {
    tag: String,
    namespaces: Vec<String>,
}

impl Lab {
    /// A lab tagged with the pid and `what` (a short letter or two).
    pub fn new(what: &str) -> Result<Lab> {
        if euid() != 0 {
            bail!("network namespace labs need root");
        }
        Ok(Lab {
            tag: format!("{}{what}", std::process::id() % 100_000),
            namespaces: Vec::new(),
        })
    }

    /// Create namespace `xlbp-<tag>-<role>` with loopback up.
    pub fn ns(&mut self, role: &str) -> Result<String> {
        let name = format!("xlbp-{}-{role}", self.tag);
        sh(&["ip", "netns", "add", &name])?;
        self.namespaces.push(name.clone());
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// A short interface name unique to this lab (IFNAMSIZ is 16).
    pub fn ifname(&self, role: &str) -> String {
        let n = format!("xp{}{role}", self.tag);
        n.chars().take(15).collect()
    }

    /// The namespaces, in creation order.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.drain(..).rev() {
            // Processes outlive their namespace: stop whatever the harness
            // started in it (and did not stop itself) first.
            let pids = Command::new("ip")
                .args(["netns", "pids", &ns])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                // SAFETY: kill(2) with plain integers; these pids are
                // processes inside a namespace this lab created.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

/// A veth pair `a` (in `ns_a`, address `cidr_a`) <-> `b` (in `ns_b`,
/// `cidr_b`), `queues` queues each, TX checksum offload off on both (veth
/// leaves partial checksums in frames that reach AF_XDP otherwise), up.
pub fn veth(
    ns_a: &str,
    a: &str,
    cidr_a: &str,
    ns_b: &str,
    b: &str,
    cidr_b: &str,
    queues: u32,
) -> Result<()> {
    veth_pair(ns_a, a, ns_b, b, queues)?;
    for (ns, i, cidr) in [(ns_a, a, cidr_a), (ns_b, b, cidr_b)] {
        addr_add(ns, i, cidr)?;
    }
    Ok(())
}

/// Add address `cidr` to `iface` in `ns`.
pub fn addr_add(ns: &str, iface: &str, cidr: &str) -> Result<()> {
    sh(&["ip", "-n", ns, "addr", "add", cidr, "dev", iface])?;
    Ok(())
}

/// [`veth`] without addresses (bridge ports).
pub fn veth_pair(ns_a: &str, a: &str, ns_b: &str, b: &str, queues: u32) -> Result<()> {
    let q = queues.max(1).to_string();
    sh(&[
        "ip",
        "-n",
        ns_a,
        "link",
        "add",
        a,
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
        "type",
        "veth",
        "peer",
        "name",
        b,
        "netns",
        ns_b,
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
    ])?;
    for (ns, i) in [(ns_a, a), (ns_b, b)] {
        ns_sh(ns, &["ethtool", "-K", i, "tx", "off"])?;
        sh(&["ip", "-n", ns, "link", "set", i, "up"])?;
    }
    Ok(())
}

/// A permanent neighbour entry `ip` → `mac` on `dev` in `ns`.
pub fn neigh_permanent(ns: &str, ip: &str, mac: &str, dev: &str) -> Result<()> {
    ns_sh(
        ns,
        &[
            "ip",
            "neigh",
            "replace",
            ip,
            "lladdr",
            mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ],
    )
    .map(|_| ())
}

/// Load an nftables ruleset into `ns` (through a file: `nft -f`).
pub fn load_nft(ns: &str, what: &str, rules: &str) -> Result<()> {
    let f = std::env::temp_dir().join(format!("xlbperf-{what}-{}.nft", std::process::id()));
    std::fs::write(&f, rules)?;
    let r = ns_sh(ns, &["nft", "-f", &f.to_string_lossy()]);
    let _ = std::fs::remove_file(&f);
    r.map(|_| ())
        .with_context(|| format!("loading nftables rules ({what}) in {ns}"))
}

/// The packets counted by the named nftables counter `family table name` in `ns`.
pub fn nft_counter(ns: &str, family: &str, table: &str, name: &str) -> Result<u64> {
    let out = ns_sh(ns, &["nft", "-j", "list", "counter", family, table, name])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("nft -j list counter")?;
    v["nftables"]
        .as_array()
        .and_then(|a| a.iter().find_map(|x| x["counter"]["packets"].as_u64()))
        .ok_or_else(|| anyhow::anyhow!("no counter {family} {table} {name} in {ns}: {out}"))
}

/// The MAC address of `iface` in `ns`.
pub fn mac_of(ns: &str, iface: &str) -> Result<String> {
    let out = sh(&["ip", "-n", ns, "-j", "link", "show", "dev", iface])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("ip -j link")?;
    v.get(0)
        .and_then(|l| l.get("address"))
        .and_then(|a| a.as_str())
        .map(str::to_string)
        .with_context(|| format!("no MAC for {iface} in {ns}"))
}

/// (rx_packets, rx_dropped) of `iface` in `ns`.
pub fn rx_counters(ns: &str, iface: &str) -> Result<(u64, u64)> {
    let out = sh(&["ip", "-n", ns, "-j", "-s", "link", "show", "dev", iface])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("ip -j -s link")?;
    let rx = &v[0]["stats64"]["rx"];
    Ok((
        rx["packets"].as_u64().unwrap_or(0),
        rx["dropped"].as_u64().unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ksoftirqd_of_each_cpu_is_found_with_its_nice() {
        let (pid, nice) = ksoftirqd(0).expect("ksoftirqd/0 exists on Linux");
        assert!(pid > 0 && (-20..=19).contains(&nice));
        assert_eq!(ksoftirqd(100_000), None);
    }
}
