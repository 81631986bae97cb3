//! The probe engine: one scheduler task fires every entry at fixed rate
//! (`next = previous deadline + interval`, first run spread over one interval),
//! bounded by a semaphore; results drive an Up/Down state machine per entry
//! (`inactiveReTries` consecutive failures → Down, `activeReTries`
//! consecutive successes → Up, loxilb's being one), and every change of an
//! entry's effective state is logged and broadcast.
//!
//! A new entry starts in [`EngineConfig::initial_state`] (Up, as in loxilb:
//! it does not wait for its first probe); the healthy threshold applies only
//! to an entry that is Down. A spec change restarts both counts but keeps
//! the state.
//!
//! Entries are keyed like loxilb's: a user entry (`upsert`, from the endpoint
//! API) and reference-counted automatic entries (`acquire`, one per monitored
//! rule endpoint) share one key space; a user entry overrides the automatic
//! spec of the same name for as long as it exists.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{broadcast, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::methods::{probe_once, sctp_supported, ProbeFailure};
use crate::spec::{ProbeKind, ProbeSpec, SpecError};

/// An entry's health as the dataplane should see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeState {
    /// Takes new flows (loxilb `currState: "ok"`).
    Up,
    /// Takes no new flows (loxilb `currState: "nok"`).
    Down,
}

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Probes running at once, at most.
    pub max_concurrency: usize,
    /// State of a new entry before its first result. loxilb counts endpoints
    /// without a result as up, so the default is `Up`.
    pub initial_state: ProbeState,
    /// Transition events buffered per subscriber before it lags.
    pub event_capacity: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_concurrency: 256,
            initial_state: ProbeState::Up,
            event_capacity: 4096,
        }
    }
}

/// Engine calls that loxilb would reject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// the spec is invalid
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// SCTP probes are unsupported on this kernel
    #[error("sctp probes are unsupported on this kernel (no IPPROTO_SCTP sockets)")]
    SctpUnsupported,
    /// no such entry
    #[error("no probe entry named {0:?}")]
    NotFound(String),
    /// still used by rules (loxilb answers 409)
    #[error("probe entry {name:?} is still used by {refs} rule endpoint(s)")]
    InUse {
        /// The entry.
        name: String,
        /// Outstanding `acquire`s.
        refs: u32,
    },
}

/// Why an entry's effective state changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// A probe succeeded: the `activeReTries`-th in a row.
    ProbeSucceeded,
    /// The `inactiveReTries`-th consecutive probe failed; the last failure.
    ProbeFailed(ProbeFailure),
    /// `force` set or cleared an override.
    Forced(Option<ProbeState>),
}

/// One change of an entry's effective state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The entry's key.
    pub name: String,
    /// Its endpoint.
    pub host: IpAddr,
    /// Its method.
    pub kind: ProbeKind,
    /// Its port.
    pub port: u16,
    /// State before.
    pub from: ProbeState,
    /// State after.
    pub to: ProbeState,
    /// Why.
    pub cause: Cause,
    /// When.
    pub at: Instant,
}

/// An entry as `snapshot` reports it.
#[derive(Debug, Clone)]
pub struct ProbeStatus {
    /// The spec in effect (the user's if there is one, else the rules').
    pub spec: ProbeSpec,
    /// Effective state: the forced one if set, else the probed one.
    pub state: ProbeState,
    /// State from probing alone.
    pub probed_state: ProbeState,
    /// `force` override, if any.
    pub forced: Option<ProbeState>,
    /// The most recent failure, cleared by a success.
    pub last_error: Option<ProbeFailure>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Successes since the last failure.
    pub consecutive_successes: u32,
    /// Shortest successful probe delay (round trip for ping).
    pub min_delay: Option<Duration>,
    /// Mean successful probe delay.
    pub avg_delay: Option<Duration>,
    /// Longest successful probe delay.
    pub max_delay: Option<Duration>,
    /// When the effective state last changed (or the entry was created).
    pub last_change: Instant,
    /// Probes completed since the spec last changed.
    pub probes: u64,
    /// Whether the entry was set through `upsert` (a user entry).
    pub user: bool,
    /// Outstanding `acquire`s.
    pub refs: u32,
}

/// Scheduler health, for benchmarks and metrics.
#[derive(Debug, Clone, Default)]
pub struct EngineStats {
    /// Probes started.
    pub dispatched: u64,
    /// Runs skipped because the previous run of the same entry was still going.
    pub overlap_skips: u64,
    /// Whole periods skipped because the scheduler fell more than one interval behind.
    pub missed_slots: u64,
    /// Lateness (probe start minus its deadline): median.
    pub lateness_p50: Duration,
    /// Lateness: 99th percentile.
    pub lateness_p99: Duration,
    /// Lateness: worst.
    pub lateness_max: Duration,
}

/// Runs health probes. Create inside a tokio runtime; dropping it stops the scheduler.
#[derive(Debug)]
pub struct ProbeEngine {
    shared: Arc<Shared>,
    scheduler: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    wake: Notify,
    events: broadcast::Sender<Transition>,
    permits: Arc<Semaphore>,
    initial_state: ProbeState,
    lateness: Mutex<Histogram>,
}

#[derive(Debug)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Deadlines; an item whose generation no longer matches its entry is stale.
    heap: BinaryHeap<Reverse<(Instant, u64, Arc<str>)>>,
    next_gen: u64,
    rng: u64,
    overlap_skips: u64,
    missed_slots: u64,
}

#[derive(Debug)]
struct Entry {
    user: Option<ProbeSpec>,
    auto: Option<ProbeSpec>,
    refs: u32,
    /// Changes whenever the effective spec does; results of older runs are dropped.
    gen: u64,
    /// The spec the current schedule (`gen`) runs.
    scheduled: Option<ProbeSpec>,
    in_flight: Option<u64>,
    probed: ProbeState,
    forced: Option<ProbeState>,
    last_error: Option<ProbeFailure>,
    consecutive_failures: u32,
    consecutive_successes: u32,
    probes: u64,
    successes: u64,
    delay_sum: Duration,
    min_delay: Option<Duration>,
    max_delay: Option<Duration>,
    last_change: Instant,
}

impl Entry {
    fn spec(&self) -> &ProbeSpec {
        self.user
            .as_ref()
            .or(self.auto.as_ref())
            .expect("an entry lives only while it has a user spec or a reference")
    }

    fn state(&self) -> ProbeState {
        self.forced.unwrap_or(self.probed)
    }
}

/// Lateness histogram: 100 µs buckets up to 2 s, then one overflow bucket.
#[derive(Debug)]
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max: Duration,
}

const BUCKET: Duration = Duration::from_micros(100);
const BUCKETS: usize = 20_000;

impl Histogram {
    fn new() -> Self {
        Histogram {
            buckets: vec![0; BUCKETS + 1],
            count: 0,
            max: Duration::ZERO,
        }
    }

    fn record(&mut self, d: Duration) {
        let i = ((d.as_nanos() / BUCKET.as_nanos()) as usize).min(BUCKETS);
        self.buckets[i] += 1;
        self.count += 1;
        self.max = self.max.max(d);
    }

    fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return if i == BUCKETS {
                    self.max
                } else {
                    BUCKET * (i as u32 + 1)
                };
            }
        }
        self.max
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain bookkeeping behind; go on.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ProbeEngine {
    /// An engine running at most `max_concurrency` probes at once, with
    /// defaults otherwise. Panics outside a tokio runtime.
    pub fn new(max_concurrency: usize) -> Self {
        Self::with_config(EngineConfig {
            max_concurrency,
            ..EngineConfig::default()
        })
    }

    /// An engine with explicit settings. Panics outside a tokio runtime.
    pub fn with_config(cfg: EngineConfig) -> Self {
        let (events, _) = broadcast::channel(cfg.event_capacity.max(1));
        let seed = RandomState::new().hash_one(std::process::id());
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                heap: BinaryHeap::new(),
                next_gen: 1,
                rng: seed | 1,
                overlap_skips: 0,
                missed_slots: 0,
            }),
            wake: Notify::new(),
            events,
            permits: Arc::new(Semaphore::new(cfg.max_concurrency.max(1))),
            initial_state: cfg.initial_state,
            lateness: Mutex::new(Histogram::new()),
        });
        let scheduler = tokio::spawn(schedule(shared.clone()));
        ProbeEngine { shared, scheduler }
    }

    /// Adds or replaces the user entry `spec.key()` (loxilb: POST
    /// /config/endpoint). Returns the key. It overrides an automatic entry of
    /// the same name until removed.
    pub fn upsert(&self, spec: ProbeSpec) -> Result<String, ProbeError> {
        let spec = checked(spec)?;
        let key = spec.name.clone();
        let mut inner = lock(&self.shared.inner);
        let entry = inner.entry_or_new(&key, self.shared.initial_state);
        entry.user = Some(spec);
        inner.respec(&key);
        drop(inner);
        self.shared.wake.notify_one();
        Ok(key)
    }

    /// Removes the user entry `name` (loxilb: DELETE /config/endpoint).
    /// Refused while rules still hold references to it, as loxilb does.
    pub fn remove(&self, name: &str) -> Result<(), ProbeError> {
        let mut inner = lock(&self.shared.inner);
        let Some(entry) = inner.entries.get(name) else {
            return Err(ProbeError::NotFound(name.to_string()));
        };
        if entry.refs > 0 {
            return Err(ProbeError::InUse {
                name: name.to_string(),
                refs: entry.refs,
            });
        }
        inner.entries.remove(name);
        Ok(())
    }

    /// Takes a reference on the automatic entry `spec.key()` for a rule
    /// endpoint, creating it if needed; the latest acquirer's spec is the
    /// automatic spec. Returns the key.
    pub fn acquire(&self, spec: ProbeSpec) -> Result<String, ProbeError> {
        let spec = checked(spec)?;
        let key = spec.name.clone();
        let mut inner = lock(&self.shared.inner);
        let entry = inner.entry_or_new(&key, self.shared.initial_state);
        entry.refs += 1;
        entry.auto = Some(spec);
        inner.respec(&key);
        drop(inner);
        self.shared.wake.notify_one();
        Ok(key)
    }

    /// Drops a reference taken by `acquire`. The last one removes the entry
    /// unless a user entry holds it. Returns whether the entry is gone.
    pub fn release(&self, name: &str) -> Result<bool, ProbeError> {
        let mut inner = lock(&self.shared.inner);
        let Some(entry) = inner.entries.get_mut(name).filter(|e| e.refs > 0) else {
            return Err(ProbeError::NotFound(name.to_string()));
        };
        entry.refs -= 1;
        if entry.refs > 0 {
            return Ok(false);
        }
        entry.auto = None;
        if entry.user.is_none() {
            inner.entries.remove(name);
            return Ok(true);
        }
        Ok(false)
    }

    /// Overrides the state of `name` (loxilb `endpointhoststate`), or with
    /// `None` returns it to probing. Emits a transition if the effective state changes.
    pub fn force(&self, name: &str, state: Option<ProbeState>) -> Result<(), ProbeError> {
        let mut inner = lock(&self.shared.inner);
        let Some(entry) = inner.entries.get_mut(name) else {
            return Err(ProbeError::NotFound(name.to_string()));
        };
        let before = entry.state();
        entry.forced = state;
        let t = self
            .shared
            .changed(name, entry, before, Cause::Forced(state));
        drop(inner);
        if let Some(t) = t {
            self.shared.publish(t);
        }
        Ok(())
    }

    /// Every entry, sorted by key.
    pub fn snapshot(&self) -> Vec<ProbeStatus> {
        let inner = lock(&self.shared.inner);
        let mut v: Vec<ProbeStatus> = inner
            .entries
            .values()
            .map(|e| ProbeStatus {
                spec: e.spec().clone(),
                state: e.state(),
                probed_state: e.probed,
                forced: e.forced,
                last_error: e.last_error.clone(),
                consecutive_failures: e.consecutive_failures,
                consecutive_successes: e.consecutive_successes,
                min_delay: e.min_delay,
                avg_delay: (e.successes > 0).then(|| e.delay_sum / e.successes as u32),
                max_delay: e.max_delay,
                last_change: e.last_change,
                probes: e.probes,
                user: e.user.is_some(),
                refs: e.refs,
            })
            .collect();
        v.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        v
    }

    /// The effective state of one entry.
    pub fn state(&self, name: &str) -> Option<ProbeState> {
        lock(&self.shared.inner).entries.get(name).map(Entry::state)
    }

    /// Transitions from now on. A receiver that falls `event_capacity` behind
    /// gets `RecvError::Lagged`: resynchronise from `snapshot`.
    pub fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.shared.events.subscribe()
    }

    /// Scheduler statistics since the start or the last `reset_stats`.
    pub fn stats(&self) -> EngineStats {
        let (overlap_skips, missed_slots) = {
            let i = lock(&self.shared.inner);
            (i.overlap_skips, i.missed_slots)
        };
        let h = lock(&self.shared.lateness);
        EngineStats {
            dispatched: h.count,
            overlap_skips,
            missed_slots,
            lateness_p50: h.quantile(0.50),
            lateness_p99: h.quantile(0.99),
            lateness_max: h.max,
        }
    }

    /// Clears the statistics (e.g. after a warm-up).
    pub fn reset_stats(&self) {
        *lock(&self.shared.lateness) = Histogram::new();
        let mut i = lock(&self.shared.inner);
        i.overlap_skips = 0;
        i.missed_slots = 0;
    }
}

impl Drop for ProbeEngine {
    fn drop(&mut self) {
        self.scheduler.abort();
    }
}

/// Validates and fills in the name; checks kernel support for SCTP.
fn checked(mut spec: ProbeSpec) -> Result<ProbeSpec, ProbeError> {
    spec.validate()?;
    if spec.kind == ProbeKind::Sctp && !sctp_supported() {
        return Err(ProbeError::SctpUnsupported);
    }
    spec.name = spec.key();
    Ok(spec)
}

impl Inner {
    fn entry_or_new(&mut self, key: &str, initial: ProbeState) -> &mut Entry {
        self.entries
            .entry(key.to_string())
            .or_insert_with(|| Entry {
                user: None,
                auto: None,
                refs: 0,
                gen: 0,
                scheduled: None,
                in_flight: None,
                probed: initial,
                forced: None,
                last_error: None,
                consecutive_failures: 0,
                consecutive_successes: 0,
                probes: 0,
                successes: 0,
                delay_sum: Duration::ZERO,
                min_delay: None,
                max_delay: None,
                last_change: Instant::now(),
            })
    }

    /// splitmix64.
    fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Called after the user or auto spec of `key` was set: if the effective
    /// spec changed (or the entry is new), restart its schedule and counters.
    /// The state is kept: a changed probe should not flap the endpoint.
    fn respec(&mut self, key: &str) {
        let gen = self.next_gen;
        let r = self.random();
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        if e.scheduled.as_ref() == Some(e.spec()) {
            return;
        }
        e.scheduled = Some(e.spec().clone());
        self.next_gen += 1;
        e.gen = gen;
        e.consecutive_failures = 0;
        e.consecutive_successes = 0;
        e.probes = 0;
        e.successes = 0;
        e.delay_sum = Duration::ZERO;
        e.min_delay = None;
        e.max_delay = None;
        e.last_error = None;
        // Spread first runs uniformly over one interval against thundering herds.
        let interval = e.spec().interval;
        let offset = interval.mul_f64((r >> 11) as f64 / (1u64 << 53) as f64);
        self.heap
            .push(Reverse((Instant::now() + offset, gen, Arc::from(key))));
    }
}

impl Shared {
    /// Builds the transition if `entry`'s effective state differs from `before`.
    fn changed(
        &self,
        name: &str,
        entry: &mut Entry,
        before: ProbeState,
        cause: Cause,
    ) -> Option<Transition> {
        let after = entry.state();
        if after == before {
            return None;
        }
        let now = Instant::now();
        entry.last_change = now;
        let spec = entry.spec();
        Some(Transition {
            name: name.to_string(),
            host: spec.host,
            kind: spec.kind,
            port: spec.port,
            from: before,
            to: after,
            cause,
            at: now,
        })
    }

    fn publish(&self, t: Transition) {
        match &t.cause {
            Cause::ProbeFailed(e) => tracing::warn!(
                name = ?t.name, host = %t.host, kind = %t.kind, port = t.port,
                error = %e, "endpoint probe {:?} -> {:?}", t.from, t.to
            ),
            cause => tracing::info!(
                name = ?t.name, host = %t.host, kind = %t.kind, port = t.port,
                ?cause, "endpoint probe {:?} -> {:?}", t.from, t.to
            ),
        }
        // No subscriber is fine: control may not be listening yet.
        let _ = self.events.send(t);
    }

    /// Applies one probe result of generation `gen` to `name`.
    fn record(&self, name: &str, gen: u64, result: Result<Duration, ProbeFailure>) {
        let mut inner = lock(&self.inner);
        let Some(e) = inner.entries.get_mut(name) else {
            return;
        };
        if e.in_flight == Some(gen) {
            e.in_flight = None;
        }
        if e.gen != gen {
            return;
        }
        let before = e.state();
        e.probes += 1;
        let cause = match result {
            Ok(d) => {
                e.successes += 1;
                e.consecutive_failures = 0;
                e.consecutive_successes = e.consecutive_successes.saturating_add(1);
                e.last_error = None;
                e.delay_sum += d;
                e.min_delay = Some(e.min_delay.map_or(d, |m| m.min(d)));
                e.max_delay = Some(e.max_delay.map_or(d, |m| m.max(d)));
                if e.consecutive_successes >= e.spec().successes_to_up() {
                    e.probed = ProbeState::Up;
                }
                Cause::ProbeSucceeded
            }
            Err(f) => {
                e.consecutive_successes = 0;
                e.consecutive_failures = e.consecutive_failures.saturating_add(1);
                if e.consecutive_failures >= e.spec().failures_to_down() {
                    e.probed = ProbeState::Down;
                }
                e.last_error = Some(f.clone());
                Cause::ProbeFailed(f)
            }
        };
        let t = self.changed(name, e, before, cause);
        drop(inner);
        if let Some(t) = t {
            self.publish(t);
        }
    }
}

enum Step {
    Run {
        name: Arc<str>,
        gen: u64,
        spec: ProbeSpec,
        deadline: Instant,
    },
    Skip,
    Sleep(Option<Instant>),
}

impl Inner {
    /// Pops the next due deadline, if any, and reschedules its entry.
    fn step(&mut self, now: Instant) -> Step {
        match self.heap.peek() {
            Some(Reverse((d, _, _))) if *d <= now => {}
            Some(Reverse((d, _, _))) => return Step::Sleep(Some(*d)),
            None => return Step::Sleep(None),
        }
        let Some(Reverse((deadline, gen, name))) = self.heap.pop() else {
            return Step::Sleep(None);
        };
        let Some(e) = self.entries.get_mut(&*name).filter(|e| e.gen == gen) else {
            return Step::Skip;
        };
        let interval = e.spec().interval;
        // Fixed rate without drift; after a stall longer than a period, skip
        // the missed slots instead of firing them in a burst.
        let mut next = deadline + interval;
        if next <= now {
            let behind = (now - deadline).as_nanos() / interval.as_nanos();
            let behind = u32::try_from(behind).unwrap_or(u32::MAX);
            next = deadline + interval.saturating_mul(behind.saturating_add(1));
            self.missed_slots += u64::from(behind);
        }
        let spec = (e.in_flight != Some(gen)).then(|| e.spec().clone());
        if spec.is_some() {
            e.in_flight = Some(gen);
        }
        self.heap.push(Reverse((next, gen, name.clone())));
        match spec {
            Some(spec) => Step::Run {
                name,
                gen,
                spec,
                deadline,
            },
            None => {
                self.overlap_skips += 1;
                Step::Skip
            }
        }
    }
}

async fn schedule(shared: Arc<Shared>) {
    loop {
        let step = lock(&shared.inner).step(Instant::now());
        match step {
            Step::Run {
                name,
                gen,
                spec,
                deadline,
            } => {
                let permit = shared
                    .permits
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                tokio::spawn(execute(shared.clone(), name, gen, spec, deadline, permit));
            }
            Step::Skip => {}
            Step::Sleep(until) => {
                let far = Instant::now() + Duration::from_secs(3600);
                tokio::select! {
                    _ = tokio::time::sleep_until(until.unwrap_or(far)) => {}
                    _ = shared.wake.notified() => {}
                }
            }
        }
    }
}

async fn execute(
    shared: Arc<Shared>,
    name: Arc<str>,
    gen: u64,
    spec: ProbeSpec,
    deadline: Instant,
    permit: OwnedSemaphorePermit,
) {
    lock(&shared.lateness).record(Instant::now().saturating_duration_since(deadline));
    let result = probe_once(&spec).await;
    drop(permit);
    shared.record(&name, gen, result);
}

#[cfg(test)]
mod tests;
