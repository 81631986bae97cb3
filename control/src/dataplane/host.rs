//! What the host must do for the published tables, off the controller's
//! thread: hold every VIP and source-NAT address on `lo` so the kernel
//! answers ARP/NDP for it (announcing each new one with a gratuitous ARP),
//! drop the ones no rule uses any more, and retry a steering-map sync that
//! failed. One background thread ([`Follower`]) does it after each publish,
//! taking only the newest snapshot when several came meanwhile.
//!
//! Invariant: xlb removes only the addresses it added itself; an address
//! that was already there (configured by the operator) is answered for but
//! never removed.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use xlb_dataplane::tables::{PortSpec, Tables};
use xlb_io::Runtime;

/// How soon a failed steering-map sync is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// What the follower thread is asked to do.
#[derive(Default)]
struct Wanted {
    /// The newest published snapshot it has not acted on yet.
    tables: Option<Arc<Tables>>,
    /// The steering maps lag the tables (the last sync failed).
    maps_stale: bool,
    /// Remove what it added and end.
    stop: bool,
}

struct Shared {
    wanted: Mutex<Wanted>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Wanted> {
        self.wanted.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The background thread that keeps the host in step with the tables.
pub(super) struct Follower {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Follower {
    /// Start following; the thread syncs the steering maps through `runtime`
    /// when asked to retry.
    pub(super) fn start(runtime: Arc<Runtime>) -> Follower {
        let shared = Arc::new(Shared {
            wanted: Mutex::default(),
            wake: Condvar::new(),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("xlb-host".into())
                .spawn(move || follow(&shared, &runtime))
                .map_err(|e| {
                    tracing::error!("starting the host follower: {e}; VIPs are not added to lo")
                })
                .ok()
        };
        Follower {
            shared,
            thread: Mutex::new(thread),
        }
    }

    /// `tables` was published: hold its addresses; `maps_stale` if its
    /// steering-map sync failed and must be retried.
    pub(super) fn published(&self, tables: Arc<Tables>, maps_stale: bool) {
        let mut w = self.shared.lock();
        w.tables = Some(tables);
        w.maps_stale |= maps_stale;
        self.shared.wake.notify_one();
    }

    /// Remove every address xlb added and end the thread.
    pub(super) fn stop(&self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        let t = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = t {
            let _ = t.join();
        }
    }
}

fn follow(shared: &Shared, runtime: &Runtime) {
    // Addresses this thread added to `lo`, so it removes only its own.
    let mut owned = BTreeSet::new();
    let mut last: Option<Arc<Tables>> = None;
    loop {
        let (tables, retry) = {
            let mut w = shared.lock();
            while !w.stop && w.tables.is_none() && !w.maps_stale {
                w = shared.wake.wait(w).unwrap_or_else(|e| e.into_inner());
            }
            if w.stop {
                break;
            }
            if w.tables.is_none() {
                // Only a retry is due: give the failure time to pass.
                let (g, _) = shared
                    .wake
                    .wait_timeout(w, RETRY_EVERY)
                    .unwrap_or_else(|e| e.into_inner());
                w = g;
                if w.stop {
                    break;
                }
            }
            let retry = std::mem::take(&mut w.maps_stale);
            (w.tables.take(), retry)
        };
        if let Some(t) = tables {
            set_local_addrs(&wanted_local_addrs(&t), &mut owned, &t.ports);
            last = Some(t);
        }
        if retry {
            if let Some(t) = &last {
                match runtime.sync(t) {
                    Ok(r) => tracing::info!(
                        generation = t.generation,
                        ?r,
                        "steering maps synced on retry"
                    ),
                    Err(e) => {
                        tracing::error!("syncing the XDP steering maps: {e}; retrying");
                        shared.lock().maps_stale = true;
                    }
                }
            }
        }
    }
    set_local_addrs(&BTreeSet::new(), &mut owned, &[]);
}

/// Addresses the kernel must answer ARP/NDP for: every VIP and every source-NAT
/// address that is not already one of the ports' own addresses.
fn wanted_local_addrs(t: &Tables) -> BTreeSet<IpAddr> {
    let port_addrs: BTreeSet<IpAddr> = t.ports.iter().flat_map(|p| p.addrs.clone()).collect();
    t.vips()
        .chain(t.snat_addrs.iter().copied())
        .map(IpAddr::from)
        .filter(|a| !port_addrs.contains(a))
        .collect()
}

fn set_local_addrs(want: &BTreeSet<IpAddr>, owned: &mut BTreeSet<IpAddr>, ports: &[PortSpec]) {
    for a in want.difference(&owned.clone()) {
        let prefix = if a.is_ipv4() { 32 } else { 128 };
        let out = Command::new("ip")
            .args(["addr", "add", &format!("{a}/{prefix}"), "dev", "lo"])
            .output();
        match out {
            Ok(o) if o.status.success() => {
                owned.insert(*a);
                announce(*a, ports);
            }
            // Already there (configured by the operator): answer for it, but never remove it.
            Ok(o) if String::from_utf8_lossy(&o.stderr).contains("File exists") => {}
            Ok(o) => {
                tracing::warn!(addr = %a, "adding a VIP to lo: {}", String::from_utf8_lossy(&o.stderr).trim())
            }
            Err(e) => tracing::warn!(addr = %a, "adding a VIP to lo: {e}"),
        }
    }
    for a in owned.clone().difference(want) {
        let prefix = if a.is_ipv4() { 32 } else { 128 };
        let _ = Command::new("ip")
            .args(["addr", "del", &format!("{a}/{prefix}"), "dev", "lo"])
            .output();
        owned.remove(a);
    }
}

/// Tell the LAN that `addr` now lives here: gratuitous ARP (IPv4, RFC 5227
/// announcement) on every port that has an IPv4 address, so
/// neighbours and switches update at once after a takeover. IPv6 neighbours
/// learn from the kernel's own unsolicited advertisements when the address is added.
fn announce(addr: IpAddr, ports: &[PortSpec]) {
    let IpAddr::V4(a) = addr else { return };
    for p in ports {
        if !p.addrs.iter().any(IpAddr::is_ipv4) {
            continue;
        }
        // Best effort and in the background: arping waits for its one packet.
        let spawned = Command::new("arping")
            .args([
                "-U",
                "-c",
                "1",
                "-I",
                &p.name,
                "-s",
                &a.to_string(),
                &a.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        match spawned {
            Ok(mut child) => {
                std::thread::spawn(move || child.wait());
            }
            Err(e) => tracing::warn!(addr = %a, port = %p.name, "gratuitous ARP: arping: {e}"),
        }
    }
}

/// Keep the kernel's own connections out of the source-NAT port range, so
/// return traffic the XDP program steers to xlb is never the node's own.
pub(super) fn reserve_nat_ports() {
    let (lo, hi) = xlb_dataplane::tables::DEFAULT_NAT_PORTS;
    let path = "/proc/sys/net/ipv4/ip_local_reserved_ports";
    if let Err(e) = std::fs::write(path, format!("{lo}-{hi}")) {
        tracing::warn!("reserving NAT ports {lo}-{hi} in {path}: {e}");
    }
}
