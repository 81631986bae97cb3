//! The kernel's interfaces and neighbours as the tables need them
//! ([`KernelNet`]): next hops resolved through the kernel (ARP/NDP) and
//! cached, a watch on the neighbour table that flags a next hop whose MAC
//! changed, and the controller's periodic question whether the tables
//! should be rebuilt for either.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use xlb_dataplane::tables::{NextHop, PortSpec};
use xlb_io::kernel::netinfo;

use crate::logging::{Repeated, Report};

use super::NetEnv;

/// Every this many refresh rounds ([`super::REFRESH_EVERY`] each) every
/// next hop is resolved again, so a MAC change the watch missed still
/// reaches the tables (30 s).
const FULL_REFRESH_ROUNDS: u64 = 15;

/// At most one repeat of the "no next hop yet" warning per address this often.
const NO_NEXT_HOP_REPEAT: Duration = Duration::from_secs(60);

/// The kernel's interfaces and neighbours, as the tables need them.
pub struct KernelNet {
    ports: Vec<PortSpec>,
    cache: Mutex<HashMap<IpAddr, NextHop>>,
    /// Every address the tables asked for last time.
    wanted: Mutex<Vec<IpAddr>>,
    /// A neighbour on a served port changed its MAC (or a next hop's entry
    /// went away) since the last [`KernelNet::take_changed`].
    changed: AtomicBool,
    /// Addresses warned about as having no next hop: the warning repeats
    /// at most once a minute (the resolution is retried every round).
    unresolved: Mutex<Repeated<IpAddr>>,
}

impl std::fmt::Debug for KernelNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelNet")
            .field("ports", &self.ports)
            .finish_non_exhaustive()
    }
}

impl KernelNet {
    /// The network of `ports`, with no next hop resolved yet, watching the
    /// kernel's neighbour table from a background thread.
    pub fn new(ports: Vec<PortSpec>) -> Arc<KernelNet> {
        let net = Arc::new(KernelNet {
            ports,
            cache: Mutex::default(),
            wanted: Mutex::default(),
            changed: AtomicBool::new(false),
            unresolved: Mutex::new(Repeated::new(NO_NEXT_HOP_REPEAT)),
        });
        KernelNet::watch_neighbours(&net);
        net
    }

    /// Whether an address the tables use has no next hop yet (the tables
    /// should be rebuilt, which retries the resolution).
    fn missing_next_hops(&self) -> bool {
        let wanted = self
            .wanted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        wanted.iter().any(|a| !cache.contains_key(a))
    }

    /// Whether a neighbour changed since the last call (then the next hops
    /// should be forgotten and the tables rebuilt).
    fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::Relaxed)
    }

    /// Follow the kernel's neighbour table from a background thread (in the
    /// caller's network namespace) and set the `changed` flag when a
    /// neighbour on a served port changes its MAC, or a cached next hop's
    /// entry is removed. State transitions (reachable, stale, ...) with the
    /// same MAC are ignored. The thread ends when `net` is dropped.
    fn watch_neighbours(net: &Arc<KernelNet>) {
        let weak = Arc::downgrade(net);
        let served: Vec<u32> = net
            .ports
            .iter()
            .filter_map(|p| netinfo::ifindex(&p.name).ok())
            .collect();
        let spawned = std::thread::Builder::new()
            .name("xlb-neigh".into())
            .spawn(move || {
                let mut watch = match xlb_io::kernel::neigh::NeighWatch::new() {
                    Ok(w) => w,
                    Err(e) => {
                        tracing::warn!("not watching neighbours ({e}); MAC changes reach the tables by the periodic refresh");
                        return;
                    }
                };
                // Subscribed first, then the table: no change falls between.
                let mut known: HashMap<(IpAddr, u32), xlb_dataplane::net::MacAddr> =
                    xlb_io::kernel::neigh::dump()
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|n| Some(((n.addr, n.ifindex), n.mac?)))
                        .collect();
                use xlb_io::kernel::neigh::NeighEvent;
                loop {
                    let events = match watch.next(Duration::from_secs(1)) {
                        Ok(e) => e,
                        Err(e) => {
                            tracing::warn!("watching neighbours: {e}");
                            std::thread::sleep(Duration::from_secs(1));
                            Vec::new()
                        }
                    };
                    let Some(net) = weak.upgrade() else { return };
                    for ev in events {
                        let changed = match ev {
                            NeighEvent::Changed(n) if served.contains(&n.ifindex) => {
                                match n.mac {
                                    Some(mac) => known
                                        .insert((n.addr, n.ifindex), mac)
                                        .is_some_and(|old| old != mac),
                                    None => false,
                                }
                            }
                            NeighEvent::Removed(n) if served.contains(&n.ifindex) => {
                                known.remove(&(n.addr, n.ifindex));
                                net.cache
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .contains_key(&n.addr)
                            }
                            _ => false,
                        };
                        if changed {
                            tracing::info!(?ev, "neighbour changed; refreshing next hops");
                            net.changed.store(true, Ordering::Relaxed);
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("not watching neighbours: {e}");
        }
    }

    /// Forget every cached next hop (they are resolved again on the next build,
    /// which picks up changed MAC addresses).
    fn forget(&self) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl NetEnv for KernelNet {
    fn ports(&self) -> Vec<PortSpec> {
        self.ports.clone()
    }

    /// Retry unresolved next hops every round; re-resolve all of them every
    /// [`FULL_REFRESH_ROUNDS`], or at once when a neighbour's MAC changed.
    fn needs_refresh(&self, round: u64) -> bool {
        let full = round.is_multiple_of(FULL_REFRESH_ROUNDS) || self.take_changed();
        if full {
            self.forget();
        }
        full || self.missing_next_hops()
    }

    fn next_hops(&self, addrs: &[IpAddr]) -> Vec<(IpAddr, NextHop)> {
        *self.wanted.lock().unwrap_or_else(|e| e.into_inner()) = addrs.to_vec();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let unknown: Vec<IpAddr> = addrs
            .iter()
            .filter(|a| !cache.contains_key(a))
            .copied()
            .collect();
        if !unknown.is_empty() {
            // Resolve new addresses now (the kernel sends ARP/NDP), waiting a
            // little so the first table already reaches them.
            match netinfo::next_hops(&unknown, &self.ports, Duration::from_millis(500)) {
                Ok(found) => {
                    for (a, nh) in found {
                        cache.insert(a, nh);
                    }
                }
                Err(e) => tracing::warn!("resolving next hops: {e}"),
            }
            let now = Instant::now();
            let mut warned = self.unresolved.lock().unwrap_or_else(|e| e.into_inner());
            warned.retain(|a| addrs.contains(a));
            for a in &unknown {
                if cache.contains_key(a) {
                    if let Some((times, secs)) = warned.clear(a, now) {
                        tracing::info!(addr = %a, "next hop resolved after {secs} s ({times} attempts)");
                    }
                    continue;
                }
                match warned.report(a, now) {
                    Report::First => tracing::warn!(
                        addr = %a,
                        "no next hop yet; its packets drop as no_neighbor (retrying; repeated at most once a minute)"
                    ),
                    Report::Again { times, for_secs } => tracing::warn!(
                        addr = %a,
                        "still no next hop after {for_secs} s ({times} attempts since the last warning); its packets drop as no_neighbor"
                    ),
                    Report::Quiet => {}
                }
            }
        }
        addrs
            .iter()
            .filter_map(|a| cache.get(a).map(|nh| (*a, *nh)))
            .collect()
    }
}
