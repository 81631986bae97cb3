//! The kernel's interfaces and neighbours as the tables need them
//! ([`KernelNet`]): next hops resolved through the kernel (ARP/NDP) on a
//! thread of their own ([`Resolver`]) and cached, a watch on the neighbour
//! table that has a next hop whose MAC changed resolved again, and the
//! controller's question whether the tables should be rebuilt for either.
//!
//! Invariant: [`NetEnv::next_hops`] never waits on the network — it answers
//! from the cache and queues what is missing — so one unreachable endpoint
//! (the kernel waits for ARP) never stalls the controller. An address that
//! did not resolve is not asked again until its retry time (doubling from
//! [`FIRST_RETRY`] up to [`LAST_RETRY`]): a negative cache.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use xlb_dataplane::tables::{NextHop, PortSpec};
use xlb_io::kernel::netinfo;

use crate::logging::{Repeated, Report};

use super::NetEnv;

/// Every this many refresh rounds ([`super::REFRESH_EVERY`] each) every
/// next hop in use is resolved again, so a MAC change the watch missed
/// still reaches the tables, and the tables are rebuilt, which asks for
/// every address in use (30 s).
const FULL_REFRESH_ROUNDS: u64 = 15;
/// An address no table build asked for this long is no longer in use
/// (every full rebuild asks for all of them): forgotten.
const UNUSED_AFTER: Duration = Duration::from_secs(90);
/// How long the kernel is given to answer ARP/NDP for a batch.
const RESOLVE_WAIT: Duration = Duration::from_millis(500);
/// The first wait before an address that did not resolve is tried again.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between tries of an address that does not resolve.
pub const LAST_RETRY: Duration = Duration::from_secs(30);

/// Resolves a batch of addresses: the next hop of each one found.
pub type ResolveFn = dyn Fn(&[IpAddr]) -> Vec<(IpAddr, NextHop)> + Send + Sync;
/// What the controller gave [`NetEnv::on_change`].
type Wake = Box<dyn Fn() + Send + Sync>;

/// The resolver's books.
#[derive(Default)]
struct Hops {
    /// Resolved next hops.
    cache: HashMap<IpAddr, NextHop>,
    /// Addresses that did not resolve: when to try again, and the wait
    /// that led there.
    failed: HashMap<IpAddr, (Instant, Duration)>,
    /// Addresses waiting for the resolver.
    queued: BTreeSet<IpAddr>,
    /// Every address the tables asked for, and when they last did.
    wanted: HashMap<IpAddr, Instant>,
    stop: bool,
}

/// Next hops resolved off the caller's thread: [`Resolver::lookup`] answers
/// from the cache at once and queues the rest for [`Resolver::run`], which
/// resolves them without holding any lock, records them, and reports a
/// change through `changed` and the wake.
pub struct Resolver {
    resolve: Box<ResolveFn>,
    hops: Mutex<Hops>,
    work: Condvar,
    /// A next hop was found, changed or lost since the last
    /// [`Resolver::take_changed`].
    changed: AtomicBool,
    wake: Mutex<Option<Wake>>,
    /// Addresses warned about as having no next hop: the first failure is
    /// logged, then at most one line a minute with a count, and the
    /// resolution once.
    warned: Mutex<Repeated<IpAddr>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver over `resolve`, running on a thread of its own until
    /// [`Resolver::stop`]. The thread is spawned from the caller's, so it
    /// works in the caller's network namespace. (Should the thread not
    /// start, nothing resolves: every endpoint counts as `no_neighbor`,
    /// which the log says.)
    pub fn start(resolve: Box<ResolveFn>) -> Arc<Resolver> {
        let r = Arc::new(Resolver {
            resolve,
            hops: Mutex::default(),
            work: Condvar::new(),
            changed: AtomicBool::new(false),
            wake: Mutex::new(None),
            warned: Mutex::new(Repeated::new(NO_NEXT_HOP_REPEAT)),
        });
        let run = r.clone();
        if let Err(e) = std::thread::Builder::new()
            .name("xlb-resolve".into())
            .spawn(move || run.run())
        {
            tracing::error!("cannot start resolving next hops: {e}");
        }
        r
    }

    fn lock(&self) -> MutexGuard<'_, Hops> {
        // Nothing panics while holding it; the books stay whole.
        self.hops.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next hops of `addrs` known now. Those neither known, queued nor
    /// waiting for a retry are queued. Never waits on the network.
    pub fn lookup(&self, addrs: &[IpAddr]) -> Vec<(IpAddr, NextHop)> {
        let now = Instant::now();
        let mut h = self.lock();
        h.wanted.extend(addrs.iter().map(|a| (*a, now)));
        let mut known = Vec::with_capacity(addrs.len());
        let mut queued = false;
        for a in addrs {
            if let Some(nh) = h.cache.get(a) {
                known.push((*a, *nh));
            } else if !h.failed.contains_key(a) && h.queued.insert(*a) {
                queued = true;
            }
        }
        drop(h);
        if queued {
            self.work.notify_one();
        }
        known
    }

    /// Resolve every address in use again (a neighbour changed, or it is
    /// time), keeping the current next hops until the answers come; forget
    /// the addresses no longer in use.
    pub fn refresh_all(&self) {
        let mut h = self.lock();
        let Hops {
            cache,
            failed,
            queued,
            wanted,
            ..
        } = &mut *h;
        wanted.retain(|_, asked| asked.elapsed() < UNUSED_AFTER);
        cache.retain(|a, _| wanted.contains_key(a));
        self.warned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|a| wanted.contains_key(a));
        failed.clear();
        queued.extend(wanted.keys());
        drop(h);
        self.work.notify_one();
    }

    /// Whether `a` has a next hop now.
    pub fn knows(&self, a: &IpAddr) -> bool {
        self.lock().cache.contains_key(a)
    }

    /// Whether a next hop was found, changed or lost since the last call.
    pub fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::Relaxed)
    }

    /// Call `wake` after each change (and now, if one is waiting: answers
    /// may come before the controller starts).
    pub fn on_change(&self, wake: Wake) {
        let mut slot = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        if self.changed.load(Ordering::Relaxed) {
            wake();
        }
        *slot = Some(wake);
    }

    /// End the thread (it finishes the batch in hand first).
    pub fn stop(&self) {
        self.lock().stop = true;
        self.work.notify_all();
    }

    /// The resolver's loop: wait for queued addresses or a retry; resolve
    /// the batch unlocked; record it.
    fn run(&self) {
        loop {
            let batch: Vec<IpAddr> = {
                let mut h = self.lock();
                loop {
                    if h.stop {
                        return;
                    }
                    let now = Instant::now();
                    let Hops { failed, queued, .. } = &mut *h;
                    queued.extend(failed.iter().filter(|(_, r)| r.0 <= now).map(|(a, _)| *a));
                    if !queued.is_empty() {
                        break std::mem::take(queued).into_iter().collect();
                    }
                    let next = failed.values().map(|r| r.0).min();
                    h = match next {
                        Some(next) => {
                            self.work
                                .wait_timeout(h, next.saturating_duration_since(now))
                                .unwrap_or_else(|e| e.into_inner())
                                .0
                        }
                        None => self.work.wait(h).unwrap_or_else(|e| e.into_inner()),
                    };
                }
            };
            let found: HashMap<IpAddr, NextHop> = (self.resolve)(&batch).into_iter().collect();
            if self.record(&batch, &found) {
                self.changed.store(true, Ordering::Relaxed);
                if let Some(wake) = &*self.wake.lock().unwrap_or_else(|e| e.into_inner()) {
                    wake();
                }
            }
        }
    }

    /// Record the answers for `batch`; whether any next hop changed.
    fn record(&self, batch: &[IpAddr], found: &HashMap<IpAddr, NextHop>) -> bool {
        let now = Instant::now();
        let mut h = self.lock();
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        let mut changed = false;
        for a in batch {
            if let Some(nh) = found.get(a) {
                h.failed.remove(a);
                changed |= h.cache.insert(*a, *nh) != Some(*nh);
                if let Some((_, secs)) = warned.clear(a, now) {
                    tracing::info!(addr = %a, after_secs = secs, "next hop found");
                }
                continue;
            }
            match warned.report(a, now) {
                Report::First => {
                    tracing::warn!(addr = %a, "no next hop yet; its packets drop as no_neighbor");
                }
                Report::Again { times, for_secs } => {
                    tracing::warn!(addr = %a, times, for_secs, "still no next hop; its packets drop as no_neighbor");
                }
                Report::Quiet => {}
            }
            let wait = match h.failed.get(a) {
                Some((_, wait)) => (*wait * 2).min(LAST_RETRY),
                None => FIRST_RETRY,
            };
            h.failed.insert(*a, (now + wait, wait));
            changed |= h.cache.remove(a).is_some();
        }
        changed
    }
}

/// At most one repeat of the "no next hop yet" warning per address this often.
const NO_NEXT_HOP_REPEAT: Duration = Duration::from_secs(60);

/// The kernel's interfaces and neighbours, as the tables need them.
pub struct KernelNet {
    ports: Vec<PortSpec>,
    resolver: Arc<Resolver>,
    /// The refresh round of the last full refresh.
    full_round: AtomicU64,
}

impl std::fmt::Debug for KernelNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelNet")
            .field("ports", &self.ports)
            .finish_non_exhaustive()
    }
}

impl Drop for KernelNet {
    fn drop(&mut self) {
        self.resolver.stop();
    }
}

impl KernelNet {
    /// The network of `ports`, with no next hop resolved yet, resolving
    /// and watching the kernel's neighbour table from background threads
    /// (in the caller's network namespace).
    pub fn new(ports: Vec<PortSpec>) -> Arc<KernelNet> {
        let served = ports.clone();
        let resolver = Resolver::start(Box::new(move |addrs: &[IpAddr]| {
            netinfo::next_hops(addrs, &served, RESOLVE_WAIT).unwrap_or_else(|e| {
                tracing::warn!("resolving next hops: {e}");
                Vec::new()
            })
        }));
        let net = Arc::new(KernelNet {
            ports,
            resolver,
            full_round: AtomicU64::new(u64::MAX),
        });
        KernelNet::watch_neighbours(&net);
        net
    }

    /// Follow the kernel's neighbour table from a background thread (in the
    /// caller's network namespace) and have every next hop resolved again
    /// when a neighbour on a served port changes its MAC, or a cached next
    /// hop's entry is removed. State transitions (reachable, stale, ...) with the
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
                                net.resolver.knows(&n.addr)
                            }
                            _ => false,
                        };
                        if changed {
                            tracing::info!(?ev, "neighbour changed; refreshing next hops");
                            net.resolver.refresh_all();
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("not watching neighbours: {e}");
        }
    }
}

impl NetEnv for KernelNet {
    fn ports(&self) -> Vec<PortSpec> {
        self.ports.clone()
    }

    /// A next hop was found, changed or lost (the resolver retries the
    /// unresolved by itself); and every [`FULL_REFRESH_ROUNDS`], when every
    /// next hop in use is resolved again and a rebuild tells the resolver
    /// which addresses are in use.
    fn needs_refresh(&self, round: u64) -> bool {
        // Once per round: the controller also asks between rounds, when woken.
        let full = round.is_multiple_of(FULL_REFRESH_ROUNDS)
            && self.full_round.swap(round, Ordering::Relaxed) != round;
        if full {
            self.resolver.refresh_all();
        }
        self.resolver.take_changed() || full
    }

    fn next_hops(&self, addrs: &[IpAddr]) -> Vec<(IpAddr, NextHop)> {
        self.resolver.lookup(addrs)
    }

    fn on_change(&self, wake: Box<dyn Fn() + Send + Sync>) {
        self.resolver.on_change(wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use xlb_dataplane::net::MacAddr;

    fn hop(last: u8) -> NextHop {
        NextHop {
            mac: MacAddr([2, 0, 0, 0, 0, last]),
            port: 0,
        }
    }

    fn wait_for(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// One address answers, one never does (the kernel's ARP wait, shortened).
    fn resolver(asked: Arc<AtomicUsize>) -> Arc<Resolver> {
        let good: IpAddr = [10, 0, 0, 1].into();
        Resolver::start(Box::new(move |addrs: &[IpAddr]| {
            asked.fetch_add(addrs.len(), Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(50));
            addrs
                .iter()
                .filter(|a| **a == good)
                .map(|a| (*a, hop(1)))
                .collect()
        }))
    }

    #[test]
    fn lookups_never_wait_and_answers_wake_the_caller() {
        let asked = Arc::new(AtomicUsize::new(0));
        let r = resolver(asked.clone());
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        r.on_change(Box::new(move || {
            w.fetch_add(1, Ordering::Relaxed);
        }));
        let (good, bad): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let start = Instant::now();
        assert!(r.lookup(&[good, bad]).is_empty(), "nothing known yet");
        assert!(
            start.elapsed() < Duration::from_millis(40),
            "the lookup waited"
        );
        wait_for("the answer", || woken.load(Ordering::Relaxed) > 0);
        assert!(r.take_changed());
        assert_eq!(r.lookup(&[good, bad]), vec![(good, hop(1))]);
        r.stop();
    }

    #[test]
    fn an_address_that_does_not_resolve_is_not_asked_again_at_once() {
        let asked = Arc::new(AtomicUsize::new(0));
        let r = resolver(asked.clone());
        let bad: IpAddr = [10, 0, 0, 2].into();
        r.lookup(&[bad]);
        wait_for("the first try", || r.lock().failed.contains_key(&bad));
        // Every table build asks again; none of them reaches the kernel.
        for _ in 0..100 {
            assert!(r.lookup(&[bad]).is_empty());
        }
        std::thread::sleep(FIRST_RETRY / 2);
        assert_eq!(
            asked.load(Ordering::Relaxed),
            1,
            "asked again before its retry"
        );
        assert!(
            !r.take_changed(),
            "a failure that changes nothing is no change"
        );
        // Its retry comes, and the wait doubles.
        wait_for("the retry", || asked.load(Ordering::Relaxed) >= 2);
        wait_for("the second failure", || {
            r.lock()
                .failed
                .get(&bad)
                .is_some_and(|f| f.1 == FIRST_RETRY * 2)
        });
        r.stop();
    }

    #[test]
    fn a_next_hop_lost_is_a_change() {
        let gone = Arc::new(AtomicBool::new(false));
        let g = gone.clone();
        let r = Resolver::start(Box::new(move |addrs: &[IpAddr]| {
            if g.load(Ordering::Relaxed) {
                Vec::new()
            } else {
                addrs.iter().map(|a| (*a, hop(1))).collect()
            }
        }));
        let a: IpAddr = [10, 0, 0, 1].into();
        r.lookup(&[a]);
        wait_for("the answer", || r.knows(&a));
        assert!(r.take_changed());
        gone.store(true, Ordering::Relaxed);
        r.refresh_all();
        wait_for("the loss", || !r.knows(&a));
        assert!(r.take_changed());
        r.stop();
    }
}
