//! What the host must do for the published tables, off the controller's
//! thread: hold every VIP and source-NAT address this node serves as a
//! local address so the kernel answers ARP/NDP for it (IPv4 on `lo`, IPv6
//! on the ports: see [`homes`]), leased and renewed so that a dead xlb's
//! addresses go away by themselves, announce each one taken over
//! (gratuitous ARP / unsolicited NA: a burst of five at once and five more
//! five seconds later, as keepalived does, then one every 30 s), drop the
//! ones not served any more, and retry a steering-map sync that failed. One background thread ([`Follower`]) does it after each publish,
//! taking only the newest snapshot when several came meanwhile.
//!
//! It also watches that the served interfaces still run xlb's steering
//! program: one that someone removed (`ip link set dev X xdp off`) is
//! logged once and counted ([`Follower::programs_removed`]).
//!
//! Invariant: xlb removes only the addresses it added itself; an address
//! that was already there (configured by the operator) is answered for but
//! never removed. What it holds is in its [`Ledger`], so that a restart
//! after a crash removes exactly its own.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use xlb_dataplane::tables::{PortSpec, Tables};
use xlb_io::kernel::addr::{self, Added};
use xlb_io::kernel::announce::Announcer;
use xlb_io::kernel::netinfo;
use xlb_io::Runtime;

use super::ledger::Ledger;

/// How soon a failed steering-map sync is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How long an address xlb puts on `lo` stays there unless renewed: if
/// this xlb dies without taking its VIPs away (SIGKILL, a crash, a frozen
/// process), the kernel drops them and stops answering ARP/NDP for them
/// within the lease (plus up to about a second of the kernel's timer
/// slack), instead of claiming them next to the node that took over.
const ADDR_LEASE: Duration = Duration::from_secs(2);
/// How often the leases are renewed: four chances before one runs out.
const RENEW_EVERY: Duration = Duration::from_millis(500);

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
    /// Served interfaces found without xlb's program, each counted once.
    programs_removed: AtomicU64,
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
    /// What it adds is recorded in `ledger`.
    pub(super) fn start(runtime: Arc<Runtime>, ledger: Arc<Ledger>) -> Follower {
        let shared = Arc::new(Shared {
            wanted: Mutex::default(),
            wake: Condvar::new(),
            programs_removed: AtomicU64::new(0),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("xlb-host".into())
                .spawn(move || follow(&shared, &runtime, &ledger))
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

    /// How many times a served interface was found without xlb's steering
    /// program (each removal counted once).
    pub(super) fn programs_removed(&self) -> u64 {
        self.shared.programs_removed.load(Ordering::Relaxed)
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

fn follow(shared: &Shared, runtime: &Runtime, ledger: &Ledger) {
    // Addresses this thread added, so it removes only its own.
    let mut owned = Held::new();
    remove_left_behind(ledger);
    let mut missing = BTreeSet::new();
    let mut last: Option<Arc<Tables>> = None;
    let mut ann = Announcements::new();
    let mut next_renew = Instant::now() + RENEW_EVERY;
    loop {
        let (tables, retry) = {
            let mut w = shared.lock();
            loop {
                if w.stop || w.tables.is_some() {
                    break;
                }
                let now = Instant::now();
                let retry = w.maps_stale.then_some(now + RETRY_EVERY);
                // Also the program watch's tick.
                let renew = Some(next_renew);
                let due = [ann.next_due(&owned), retry, renew]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap_or(now + ANNOUNCE_REFRESH);
                if due <= now {
                    break;
                }
                w = shared
                    .wake
                    .wait_timeout(w, due - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if w.stop {
                break;
            }
            let retry = std::mem::take(&mut w.maps_stale);
            (w.tables.take(), retry)
        };
        if let Some(t) = tables {
            let added = set_local_addrs(&wanted_local_addrs(&t), &mut owned, &t.ports);
            record(ledger, &owned);
            last = Some(t);
            for a in added {
                ann.taken_over(a);
            }
        }
        if let Some(t) = &last {
            ann.send_due(&owned, &t.ports);
        }
        if Instant::now() >= next_renew {
            renew_local_addrs(&owned);
            watch_programs(runtime, &mut missing, &shared.programs_removed);
            next_renew = Instant::now() + RENEW_EVERY;
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
    let ports = last.as_ref().map(|t| t.ports.clone()).unwrap_or_default();
    set_local_addrs(&BTreeSet::new(), &mut owned, &ports);
    record(ledger, &owned);
}

/// Write down which addresses this xlb holds now.
fn record(ledger: &Ledger, owned: &Held) {
    ledger.set_addrs(
        owned
            .iter()
            .flat_map(|(a, homes)| homes.iter().map(move |&h| (h, *a))),
    );
}

/// Log (once per interface) and count a served interface that no longer
/// runs xlb's steering program: its VIP traffic now goes to the kernel,
/// and only a restart of xlb attaches the program again.
fn watch_programs(runtime: &Runtime, missing: &mut BTreeSet<String>, count: &AtomicU64) {
    let now: BTreeSet<String> = runtime.programs_removed().into_iter().collect();
    for iface in now.difference(missing) {
        tracing::error!(
            iface = %iface,
            "xlb's XDP program was removed from {iface} (by another program or tool): \
             its VIP traffic no longer reaches xlb; restart xlb to attach it again"
        );
        count.fetch_add(1, Ordering::Relaxed);
    }
    *missing = now;
}

/// Announcements per address taken over, as keepalived sends them
/// (`garp_master_repeat` 5, `garp_master_delay` 5 s): a burst at once, a
/// second burst later for neighbours that missed the first, then one now
/// and then while held, for caches that expired or switches that restarted.
const BURST: usize = 5;
/// When the second burst follows the first.
const SECOND_BURST_AFTER: Duration = Duration::from_secs(5);
/// How often every held address is announced again.
const ANNOUNCE_REFRESH: Duration = Duration::from_secs(30);

/// What is still to be announced, and the socket to do it with.
struct Announcements {
    socket: Option<Announcer>,
    /// Addresses taken over, with when each burst is due (first, second).
    bursts: Vec<(IpAddr, Instant, usize)>,
    next_refresh: Instant,
}

impl Announcements {
    fn new() -> Announcements {
        let socket = Announcer::new()
            .map_err(|e| {
                tracing::warn!(
                    "no socket to announce VIPs with ({e}); neighbours learn them when they ask"
                )
            })
            .ok();
        Announcements {
            socket,
            bursts: Vec::new(),
            next_refresh: Instant::now() + ANNOUNCE_REFRESH,
        }
    }

    /// `addr` was just added: a burst now and another later.
    fn taken_over(&mut self, addr: IpAddr) {
        let now = Instant::now();
        self.bursts.retain(|(a, _, _)| *a != addr);
        self.bursts.push((addr, now, 2));
    }

    /// When the next announcement is due.
    fn next_due(&self, owned: &Held) -> Option<Instant> {
        let burst = self.bursts.iter().map(|(_, at, _)| *at).min();
        let refresh = (!owned.is_empty()).then_some(self.next_refresh);
        burst.into_iter().chain(refresh).min()
    }

    /// Send what is due, for addresses still held.
    fn send_due(&mut self, owned: &Held, ports: &[PortSpec]) {
        let now = Instant::now();
        self.bursts.retain(|(a, _, _)| owned.contains_key(a));
        let mut due = Vec::new();
        for (a, at, left) in &mut self.bursts {
            if *at <= now {
                due.push(*a);
                *left -= 1;
                *at = now + SECOND_BURST_AFTER;
            }
        }
        self.bursts.retain(|(_, _, left)| *left > 0);
        for a in due {
            self.send(a, BURST, ports);
        }
        if now >= self.next_refresh {
            self.next_refresh = now + ANNOUNCE_REFRESH;
            for a in owned.keys() {
                self.send(*a, 1, ports);
            }
        }
    }

    /// Announce `addr` `times` times on every port that has an address of
    /// its family.
    fn send(&self, addr: IpAddr, times: usize, ports: &[PortSpec]) {
        let Some(socket) = &self.socket else { return };
        for p in ports
            .iter()
            .filter(|p| p.addrs.iter().any(|a| a.is_ipv4() == addr.is_ipv4()))
        {
            let ifindex = match netinfo::ifindex(&p.name) {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(port = %p.name, "announcing {addr}: {e}");
                    continue;
                }
            };
            for _ in 0..times {
                if let Err(e) = socket.announce(ifindex, p.mac, addr) {
                    tracing::warn!(port = %p.name, "announcing {addr}: {e}");
                    break;
                }
            }
        }
    }
}

/// Addresses the kernel must answer ARP/NDP for: every VIP and every source-NAT
/// address this node serves now, that is not already one of the ports' own
/// addresses.
fn wanted_local_addrs(t: &Tables) -> BTreeSet<IpAddr> {
    let port_addrs: BTreeSet<IpAddr> = t.ports.iter().flat_map(|p| p.addrs.clone()).collect();
    t.vips()
        .chain(t.snat_addrs.iter().copied())
        .filter(|&a| t.serves(a))
        .map(IpAddr::from)
        .filter(|a| !port_addrs.contains(a))
        .collect()
}

/// The addresses this xlb added, each with the interfaces it holds it on.
type Held = BTreeMap<IpAddr, Vec<u32>>;

/// Where the kernel must hold `addr` to answer ARP/NDP for it: IPv4 on `lo`
/// (it answers ARP on any interface for any local address), IPv6 on every
/// port with an IPv6 address (it answers a neighbour solicitation only for
/// an address of the interface it arrived on), else on `lo` (a VIP routed
/// to the node needs no answer, only to be local).
fn homes(addr: IpAddr, ports: &[PortSpec]) -> Vec<u32> {
    let mut h: Vec<u32> = Vec::new();
    if addr.is_ipv6() {
        h = ports
            .iter()
            .filter(|p| p.addrs.iter().any(IpAddr::is_ipv6))
            .filter_map(|p| netinfo::ifindex(&p.name).ok())
            .collect();
    }
    if h.is_empty() {
        match netinfo::ifindex("lo") {
            Ok(lo) => h.push(lo),
            Err(e) => tracing::error!("no loopback interface to hold VIPs on: {e}"),
        }
    }
    h
}

/// Extend the lease of every address this xlb holds.
fn renew_local_addrs(owned: &Held) {
    for (a, homes) in owned {
        for &h in homes {
            if let Err(e) = addr::renew(h, *a, ADDR_LEASE) {
                tracing::warn!(addr = %a, ifindex = h, "renewing a VIP's lease: {e}");
            }
        }
    }
}

/// Take away the addresses an xlb that died left behind (marked as xlb's,
/// on any interface, and not held by another live xlb of this namespace),
/// before anything else: a restarted node must not answer ARP/NDP for a
/// VIP until its role says so. Those it serves are added again, and
/// announced. (Opening the ledger already removed those a dead xlb
/// recorded; this catches the ones added just before a crash, before
/// they were recorded.)
fn remove_left_behind(ledger: &Ledger) {
    let left = match addr::marked_anywhere() {
        Ok(left) => left,
        Err(e) => return tracing::warn!("listing the addresses a previous xlb left: {e}"),
    };
    let others = ledger.held_by_others();
    for (ifindex, a) in left.into_iter().filter(|l| !others.contains(l)) {
        match addr::del(ifindex, a) {
            Ok(_) => tracing::info!(addr = %a, ifindex, "removed an address a previous xlb left"),
            Err(e) => tracing::warn!(addr = %a, ifindex, "removing an address left behind: {e}"),
        }
    }
}

/// Hold exactly `want` of the addresses xlb adds, each where [`homes`]
/// says; returns the ones added now.
fn set_local_addrs(want: &BTreeSet<IpAddr>, owned: &mut Held, ports: &[PortSpec]) -> Vec<IpAddr> {
    let mut added = Vec::new();
    let new: Vec<IpAddr> = want
        .iter()
        .filter(|a| !owned.contains_key(a))
        .copied()
        .collect();
    for a in &new {
        let mut on = Vec::new();
        for h in homes(*a, ports) {
            match addr::add_leased(h, *a, ADDR_LEASE) {
                Ok(Added::New) => on.push(h),
                // Already there (configured by the operator): answer for it, but never remove it.
                Ok(Added::Existed) => {}
                Err(e) => tracing::warn!(addr = %a, ifindex = h, "adding a VIP: {e}"),
            }
        }
        if !on.is_empty() {
            owned.insert(*a, on);
            added.push(*a);
        }
    }
    let gone: Vec<IpAddr> = owned
        .keys()
        .filter(|a| !want.contains(a))
        .copied()
        .collect();
    for a in gone {
        for h in owned.remove(&a).unwrap_or_default() {
            if let Err(e) = addr::del(h, a) {
                tracing::warn!(addr = %a, ifindex = h, "removing a VIP: {e}");
            }
        }
    }
    added
}

/// Keep the kernel's own connections out of the source-NAT port range, so
/// return traffic the XDP program steers to xlb is never the node's own:
/// added to what `ip_local_reserved_ports` holds (an operator's ranges, a
/// NodePort range, stay), and taken out again when xlb ends.
pub(super) fn reserve_nat_ports(ledger: &Ledger) {
    let (lo, hi) = xlb_dataplane::tables::DEFAULT_NAT_PORTS;
    if let Err(e) = ledger.reserve_ports(lo, hi) {
        tracing::warn!("reserving NAT ports {lo}-{hi} in ip_local_reserved_ports: {e}");
    }
}
