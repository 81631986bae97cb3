//! Network-namespace labs: a [`Lab`] owns the namespaces it creates and
//! deletes them when dropped — also when the test panics — after killing
//! every process still inside, which takes their veths, routes, bridges and
//! XDP programs with them. A [`Netns`] is a handle on one namespace: commands,
//! addresses, links, threads and processes inside it.
//!
//! Names are unique per process and per lab: namespaces are
//! `xlbt-<pid>-<lab>-<role>`, interface names (at most 15 bytes, Linux's
//! `IFNAMSIZ` less the NUL) `x<pid><lab><role>` with the pid and lab number
//! in fixed-width base 36, so tests running in parallel — threads of one
//! test binary or several processes — never collide. Veths are created
//! directly inside their namespaces, never in the host's.
//!
//! Every namespace a lab creates is registered while it exists, so
//! [`leaked`] can tell a namespace this process forgot from one a test
//! running alongside still uses.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread::{JoinHandle, Scope, ScopedJoinHandle};

use crate::cmd::{self, sh};
use crate::error::{Error, Result};
use crate::proc::{Signal, Spawn};
use crate::sys;

/// The first part of every namespace a lab creates.
pub const NS_PREFIX: &str = "xlbt";

/// Labs one process may create: two base-36 digits in interface names.
const MAX_LABS: u32 = 36 * 36;

/// The longest role [`Lab::ifname`] accepts: 15 bytes less `x`, five
/// digits of pid and two of lab number.
pub const MAX_IF_ROLE: usize = 7;

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// Namespaces of this process's labs that exist (or are being created).
static LIVE: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn live() -> MutexGuard<'static, BTreeSet<String>> {
    // A test that panicked while holding the lock left a consistent set:
    // every insert and remove is a single call.
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// `n` in base 36, zero-padded to `width` digits.
fn base36(mut n: u32, width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    while n > 0 {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    while out.len() < width {
        out.push(b'0');
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

/// The namespace-name prefix of this process's labs.
fn process_prefix() -> String {
    format!("{NS_PREFIX}-{}-", std::process::id())
}

/// A set of network namespaces owned by one test (or one benchmark run),
/// deleted on drop.
#[derive(Debug)]
pub struct Lab {
    n: u32,
    namespaces: Vec<Netns>,
    dir: Option<PathBuf>,
}

impl Lab {
    /// A new, empty lab. Fails without root: every lab creates namespaces.
    pub fn new() -> Result<Lab> {
        cmd::require_root()?;
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        if n >= MAX_LABS {
            return Err(Error::TooManyLabs(MAX_LABS));
        }
        Ok(Lab {
            n,
            namespaces: Vec::new(),
            dir: None,
        })
    }

    /// `<pid>-<lab number>`: what this lab's names and files carry.
    pub fn id(&self) -> String {
        format!("{}-{}", std::process::id(), self.n)
    }

    /// Create namespace `xlbt-<pid>-<lab>-<role>` with its loopback up.
    pub fn ns(&mut self, role: &str) -> Result<Netns> {
        let name = format!("{}{}-{role}", process_prefix(), self.n);
        // Registered before it exists and deregistered after it is gone, so
        // `leaked` never mistakes a live namespace for a forgotten one.
        live().insert(name.clone());
        if let Err(e) = sh(&["ip", "netns", "add", &name]) {
            live().remove(&name);
            return Err(e);
        }
        let ns = Netns { name };
        self.namespaces.push(ns.clone());
        ns.link_up("lo")?;
        Ok(ns)
    }

    /// An interface name unique to this lab and process: `x`, the pid and
    /// lab number (fixed width), then `role`.
    ///
    /// # Panics
    /// If `role` is longer than [`MAX_IF_ROLE`] bytes: the name would
    /// exceed Linux's limit, and roles are constants of the calling code.
    pub fn ifname(&self, role: &str) -> String {
        assert!(
            role.len() <= MAX_IF_ROLE,
            "interface role {role:?} is longer than {MAX_IF_ROLE} bytes"
        );
        format!(
            "x{}{}{role}",
            base36(std::process::id(), 5),
            base36(self.n, 2)
        )
    }

    /// The namespaces, in creation order.
    pub fn namespaces(&self) -> &[Netns] {
        &self.namespaces
    }

    /// A scratch directory of this lab (configs, logs), created on first
    /// use and removed with the lab.
    pub fn dir(&mut self) -> Result<&Path> {
        let dir = self.dir.get_or_insert_with(|| {
            std::env::temp_dir().join(format!("{NS_PREFIX}-{}-{}", std::process::id(), self.n))
        });
        std::fs::create_dir_all(&*dir).map_err(|e| Error::io(format!("creating {dir:?}"), e))?;
        Ok(dir)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.drain(..).rev() {
            // A process keeps its namespace (and so its veths and XDP
            // programs) alive after `ip netns del`: stop them all first.
            ns.kill_all(Signal::Kill);
            if let Err(e) = sh(&["ip", "netns", "del", &ns.name]) {
                eprintln!("xlb-testkit: could not delete namespace {}: {e}", ns.name);
            }
            live().remove(&ns.name);
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Namespaces named like this process's labs that no live [`Lab`] owns:
/// what a lab failed to delete. Tests running alongside in the same
/// process do not count.
pub fn leaked() -> Result<Vec<String>> {
    // Held while listing: no lab registers or forgets a namespace meanwhile.
    let live = live();
    let prefix = process_prefix();
    Ok(sh(&["ip", "netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&prefix) && !live.contains(*n))
        .map(str::to_string)
        .collect())
}

/// Move the calling thread into namespace `ns` (`/run/netns/<ns>`). Threads
/// it spawns afterwards, and processes they start, inherit it.
pub fn enter(ns: &str) -> Result<()> {
    let path = format!("/run/netns/{ns}");
    let f = File::open(&path).map_err(|e| Error::io(format!("opening {path}"), e))?;
    sys::setns_net(&f).map_err(|e| Error::io(format!("setns {path}"), e))
}

/// Run `f` on a thread of its own in a network namespace of its own (new,
/// with only `lo`, which is down), and return its result; the namespace
/// goes away with the thread, so there is nothing to clean up. For tests
/// of what xlb does to one host's network stack. A panic in `f`
/// continues in the caller.
pub fn in_fresh_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let joined = std::thread::spawn(move || {
        if let Err(e) = sys::unshare_net() {
            panic!("unshare(CLONE_NEWNET) (root only): {e}");
        }
        f()
    })
    .join();
    match joined {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Give the calling thread a sysfs of its current network namespace (see
/// `ip netns exec`): call it after [`enter`] in a thread that reads or
/// writes `/sys/class/net`.
pub fn private_sysfs() -> Result<()> {
    sys::private_sysfs().map_err(|e| Error::io("mounting a private sysfs", e))
}

/// Run `args` inside namespace `ns` (`ip netns exec`, which also gives it
/// the namespace's own /sys); its stdout, or its stderr as the error.
pub fn exec(ns: &str, args: &[&str]) -> Result<String> {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    sh(&v)
}

/// A network namespace, by name. Lab namespaces come from [`Lab::ns`];
/// [`Netns::existing`] names any other. The handle does not own the
/// namespace: its lab does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Netns {
    name: String,
}

impl Deref for Netns {
    type Target = str;
    fn deref(&self) -> &str {
        &self.name
    }
}

impl AsRef<str> for Netns {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl Netns {
    /// A handle on namespace `name`, created by someone else.
    pub fn existing(name: &str) -> Netns {
        Netns {
            name: name.to_string(),
        }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    // ------------------------------------------------------------ commands

    /// Run `args` inside (see [`exec`]).
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        exec(&self.name, args)
    }

    /// Run `args` inside and return its raw output, whatever its status.
    pub fn output(&self, args: &[&str]) -> Result<Output> {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        cmd::output(&v)
    }

    /// [`Netns::exec`] with `input` on the command's stdin.
    pub fn exec_with_input(&self, args: &[&str], input: &str) -> Result<String> {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        cmd::sh_with_input(&v, input)
    }

    /// `ip -n <ns> args…`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// `ip -n <ns> -j args…`, parsed.
    fn ip_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let out = self.ip(&[&["-j"], args].concat())?;
        serde_json::from_str(&out).map_err(|e| Error::Output {
            cmd: format!("ip -n {} -j {}", self.name, args.join(" ")),
            detail: e.to_string(),
        })
    }

    /// Set the namespace's sysctl `key` (e.g. `net.ipv4.ip_forward`). Only
    /// for per-namespace settings: global ones go through
    /// [`crate::global::Sysctls`].
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec(&["sysctl", "-qw", &format!("{key}={value}")])
            .map(drop)
    }

    // ------------------------------------------------------------ addresses and routes

    /// Add address `cidr` to `ifname`.
    pub fn addr(&self, ifname: &str, cidr: &str) -> Result<()> {
        self.ip(&["addr", "add", cidr, "dev", ifname]).map(drop)
    }

    /// Add address `cidr` to `ifname` without duplicate address detection
    /// (an IPv6 address is usable at once).
    pub fn addr_nodad(&self, ifname: &str, cidr: &str) -> Result<()> {
        self.ip(&["addr", "add", cidr, "dev", ifname, "nodad"])
            .map(drop)
    }

    /// Route `dst` (a prefix, or `default`) via gateway `via`.
    pub fn route(&self, dst: &str, via: &str) -> Result<()> {
        let family = if via.contains(':') { "-6" } else { "-4" };
        self.ip(&[family, "route", "add", dst, "via", via])
            .map(drop)
    }

    /// A permanent neighbour entry `ip` → `mac` on `dev`.
    pub fn neigh_permanent(&self, ip: &str, mac: &str, dev: &str) -> Result<()> {
        self.ip(&[
            "neigh",
            "replace",
            ip,
            "lladdr",
            mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ])
        .map(drop)
    }

    // ------------------------------------------------------------ links

    /// Set link `ifname` up.
    pub fn link_up(&self, ifname: &str) -> Result<()> {
        self.ip(&["link", "set", ifname, "up"]).map(drop)
    }

    /// Set link `ifname` down.
    pub fn link_down(&self, ifname: &str) -> Result<()> {
        self.ip(&["link", "set", ifname, "down"]).map(drop)
    }

    /// The namespace's links other than loopback.
    pub fn links(&self) -> Result<Vec<String>> {
        let v = self.ip_json(&["link", "show"])?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["ifname"].as_str())
                    .filter(|n| *n != "lo")
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Set every link other than loopback down (a node cut off its networks).
    pub fn links_down(&self) -> Result<()> {
        for l in self.links()? {
            self.link_down(&l)?;
        }
        Ok(())
    }

    /// The MAC address of `ifname`.
    pub fn mac(&self, ifname: &str) -> Result<String> {
        let v = self.ip_json(&["link", "show", "dev", ifname])?;
        v[0]["address"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Error::Output {
                cmd: format!("ip -n {} -j link show dev {ifname}", self.name),
                detail: "no MAC address".into(),
            })
    }

    /// Give `ifname` the MAC address `mac` (a "rebooted" node keeps its MAC).
    pub fn set_mac(&self, ifname: &str, mac: &str) -> Result<()> {
        self.ip(&["link", "set", ifname, "address", mac]).map(drop)
    }

    /// (rx_packets, rx_dropped) of `ifname`.
    pub fn rx_counters(&self, ifname: &str) -> Result<(u64, u64)> {
        let v = self.ip_json(&["-s", "link", "show", "dev", ifname])?;
        let rx = &v[0]["stats64"]["rx"];
        Ok((
            rx["packets"].as_u64().unwrap_or(0),
            rx["dropped"].as_u64().unwrap_or(0),
        ))
    }

    /// Whether one ICMP echo to `to` is answered within a second. Also how
    /// a node speaks first, so that a bridge learns where it is.
    pub fn ping(&self, to: &str) -> bool {
        self.output(&["ping", "-c1", "-W1", to])
            .is_ok_and(|o| o.status.success())
    }

    /// Whether an XDP program is attached to any link of the namespace.
    pub fn xdp_attached(&self) -> Result<bool> {
        Ok(self.ip(&["-o", "link"])?.contains("xdp"))
    }

    // ------------------------------------------------------------ nftables

    /// Load an nftables ruleset (`nft -f -`).
    pub fn nft(&self, rules: &str) -> Result<()> {
        self.exec_with_input(&["nft", "-f", "-"], rules).map(drop)
    }

    /// The packets counted by the named nftables counter `family table name`.
    pub fn nft_counter(&self, family: &str, table: &str, name: &str) -> Result<u64> {
        let out = self.exec(&["nft", "-j", "list", "counter", family, table, name])?;
        let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| Error::Output {
            cmd: format!("nft -j list counter {family} {table} {name}"),
            detail: e.to_string(),
        })?;
        v["nftables"]
            .as_array()
            .and_then(|a| a.iter().find_map(|x| x["counter"]["packets"].as_u64()))
            .ok_or_else(|| Error::Output {
                cmd: format!("nft -j list counter {family} {table} {name}"),
                detail: format!("no packet count in {out}"),
            })
    }

    // ------------------------------------------------------------ processes

    /// The processes inside (by their main thread), never this one.
    pub fn pids(&self) -> Vec<i32> {
        let me = std::process::id() as i32;
        cmd::output(&["ip", "netns", "pids", &self.name])
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .filter(|&p| p != me)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Send `sig` to every process inside.
    pub fn kill_all(&self, sig: Signal) {
        for pid in self.pids() {
            sys::kill(pid, sig.raw());
        }
    }

    /// A node's power loss: freeze its processes, set its links down, then
    /// kill them. In that order, a daemon inside never sees its links go
    /// down (and never acts on it) before it dies.
    pub fn power_loss(&self) -> Result<()> {
        let pids = self.pids();
        for &p in &pids {
            sys::kill(p, Signal::Stop.raw());
        }
        self.links_down()?;
        for &p in &pids {
            sys::kill(p, Signal::Kill.raw());
        }
        Ok(())
    }

    /// A process to start inside (see [`Spawn`]).
    pub fn spawn(&self, args: &[&str]) -> Spawn {
        Spawn::new(args).netns(&self.name)
    }

    // ------------------------------------------------------------ threads

    /// Move the calling thread inside (see [`enter`]).
    pub fn enter(&self) -> Result<()> {
        enter(&self.name)
    }

    /// Run `f` on a thread inside the namespace and return its result; a
    /// panic in `f` continues in the caller.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| match self.scoped(s, f).join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        })
    }

    /// Start `f` on a scoped thread inside the namespace. Sockets it opens,
    /// threads it spawns and processes they start live in the namespace.
    ///
    /// # Panics
    /// The thread panics if it cannot enter the namespace (deleted already).
    pub fn scoped<'s, 'e, T: Send + 's>(
        &self,
        scope: &'s Scope<'s, 'e>,
        f: impl FnOnce() -> T + Send + 's,
    ) -> ScopedJoinHandle<'s, T> {
        let name = self.name.clone();
        scope.spawn(move || {
            enter(&name).unwrap_or_else(|e| panic!("{e}"));
            f()
        })
    }

    /// [`Netns::scoped`] for a `'static` closure, on a detached thread.
    ///
    /// # Panics
    /// The thread panics if it cannot enter the namespace.
    pub fn thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let name = self.name.clone();
        std::thread::spawn(move || {
            enter(&name).unwrap_or_else(|e| panic!("{e}"));
            f()
        })
    }
}

/// A veth pair between two namespaces, created directly inside them, with
/// TX checksum offload off on both ends (veth otherwise leaves partial
/// checksums in frames that reach an AF_XDP socket), both ends up.
#[derive(Debug, Clone)]
pub struct Veth {
    a: (String, String),
    b: (String, String),
    queues: u32,
    channels: Option<u32>,
}

impl Veth {
    /// `a_if` in namespace `a` ↔ `b_if` in namespace `b`, one queue each.
    pub fn new(a: &str, a_if: &str, b: &str, b_if: &str) -> Veth {
        Veth {
            a: (a.to_string(), a_if.to_string()),
            b: (b.to_string(), b_if.to_string()),
            queues: 1,
            channels: None,
        }
    }

    /// Create both ends with `q` TX and RX queues.
    pub fn queues(mut self, q: u32) -> Veth {
        self.queues = q.max(1);
        self
    }

    /// Then set `n` active channels on both ends (`ethtool -L rx n tx n`).
    pub fn channels(mut self, n: u32) -> Veth {
        self.channels = Some(n);
        self
    }

    /// Create the pair.
    pub fn create(self) -> Result<()> {
        let q = self.queues.to_string();
        let (a, a_if) = (&self.a.0, &self.a.1);
        let (b, b_if) = (&self.b.0, &self.b.1);
        sh(&[
            "ip",
            "-n",
            a,
            "link",
            "add",
            a_if,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            b_if,
            "netns",
            b,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ])?;
        for (ns, i) in [(a, a_if), (b, b_if)] {
            if let Some(n) = self.channels {
                let n = n.to_string();
                exec(ns, &["ethtool", "-L", i, "rx", &n, "tx", &n])?;
            }
            exec(ns, &["ethtool", "-K", i, "tx", "off"])?;
            sh(&["ip", "-n", ns, "link", "set", i, "up"])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_fit_ifnamsiz_and_differ_per_lab() {
        assert_eq!(base36(0, 2), "00");
        assert_eq!(base36(35, 2), "0z");
        assert_eq!(base36(36 * 36 - 1, 2), "zz");
        // The largest pid Linux hands out (pid_max 2^22) fits five digits.
        assert_eq!(base36(1 << 22, 5).len(), 5);
        let a = Lab {
            n: 1,
            namespaces: Vec::new(),
            dir: None,
        };
        let b = Lab {
            n: 36,
            namespaces: Vec::new(),
            dir: None,
        };
        let (x, y) = (a.ifname("abcdefg"), b.ifname("abcdefg"));
        assert!(x.len() <= 15 && y.len() <= 15, "{x} {y}");
        assert_ne!(x, y);
        assert_ne!(a.ifname("l0"), a.ifname("l1"));
    }
}
