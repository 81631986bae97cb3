//! Health probing for `xlb run`: keeps an [`xlb_probe::ProbeEngine`] in step
//! with the probe entries control holds (EPconfig.txt, `config/endpoint`, and
//! every endpoint of a monitored rule), and turns each up/down transition into
//! a new table snapshot through the controller ([`Command::ProbeResults`]) —
//! a down endpoint leaves its rules' selection, its flows are re-selected.
//!
//! The engine probes on its own; this task asks the controller only for the
//! wanted entries (twice a second) and sends it the transitions.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use xlb_probe::{go_duration, ProbeEngine, ProbeKind, ProbeSpec, ProbeState};

use crate::controller::{Command, ControlHandle, ProbeStatus};
use crate::rules::{Probe, ProbeType};

/// Probes running at once, at most.
const MAX_CONCURRENT_PROBES: usize = 256;
/// How often the wanted entries are compared with the running ones.
const RECONCILE_EVERY: Duration = Duration::from_millis(500);

/// Start probing in the background (call inside the tokio runtime).
pub fn spawn(control: ControlHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(control))
}

async fn run(control: ControlHandle) {
    let engine = ProbeEngine::new(MAX_CONCURRENT_PROBES);
    let mut events = engine.subscribe();
    let mut running: HashMap<String, ProbeSpec> = HashMap::new();
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                match control.read(|st| st.probe_targets()).await {
                    Ok(wanted) => reconcile(&engine, &mut running, &wanted),
                    // The controller stopped: the daemon is ending.
                    Err(_) => return,
                }
            }
            ev = events.recv() => {
                // Take every transition already queued too: a burst (a rack
                // failing) becomes one snapshot, not one per endpoint.
                let mut names = HashSet::new();
                let mut all = false;
                let mut next = ev.map_err(|e| match e {
                    RecvError::Lagged(n) => TryRecvError::Lagged(n),
                    RecvError::Closed => TryRecvError::Closed,
                });
                loop {
                    match next {
                        Ok(t) => {
                            names.insert(t.name);
                        }
                        // Missed transitions: apply every entry's current state.
                        Err(TryRecvError::Lagged(_)) => all = true,
                        Err(TryRecvError::Closed) => return,
                        Err(TryRecvError::Empty) => break,
                    }
                    next = events.try_recv();
                }
                apply(&control, &engine, if all { None } else { Some(&names) }).await;
            }
        }
    }
}

/// The engine's spec for one of control's probe entries.
fn spec_of(p: &Probe) -> ProbeSpec {
    let kind = match p.probe_type {
        ProbeType::Tcp => ProbeKind::Tcp,
        ProbeType::Udp => ProbeKind::Udp,
        ProbeType::Sctp => ProbeKind::Sctp,
        ProbeType::Ping => ProbeKind::Ping,
        ProbeType::Http => ProbeKind::Http,
        ProbeType::Https => ProbeKind::Https,
        ProbeType::None => ProbeKind::None,
    };
    let mut s = ProbeSpec::new(p.host, kind, p.port);
    s.name = p.name.clone();
    s.req = p.req.clone();
    s.resp = p.resp.clone();
    s.interval = Duration::from_secs(u64::from(p.duration_s.max(1)));
    // A probe never outlasts its period (a set timeout is below it already).
    s.timeout = p.timeout.unwrap_or(s.timeout).min(s.interval);
    s.retries = p.retries;
    s.active_retries = p.active_retries.unwrap_or(s.active_retries);
    s
}

fn reconcile(engine: &ProbeEngine, running: &mut HashMap<String, ProbeSpec>, wanted: &[Probe]) {
    let mut keep = std::collections::HashSet::new();
    for p in wanted {
        let spec = spec_of(p);
        keep.insert(p.name.clone());
        if running.get(&p.name) == Some(&spec) {
            continue;
        }
        match engine.upsert(spec.clone()) {
            Ok(_) => {
                running.insert(p.name.clone(), spec);
            }
            Err(e) => tracing::warn!(probe = ?p.name, "cannot probe: {e}"),
        }
    }
    running.retain(|name, _| {
        if keep.contains(name) {
            return true;
        }
        if let Err(e) = engine.remove(name) {
            tracing::warn!(probe = ?name, "removing probe: {e}");
        }
        false
    });
}

/// Publish the current state of the probes named (of every probe if `None`)
/// into control, with one table build.
async fn apply(control: &ControlHandle, engine: &ProbeEngine, names: Option<&HashSet<String>>) {
    let d = |x: Option<Duration>| x.map(go_duration).unwrap_or_default();
    let results: Vec<(String, ProbeStatus)> = engine
        .snapshot()
        .into_iter()
        .filter(|s| names.is_none_or(|n| n.contains(&s.spec.key())))
        .map(|s| {
            let status = ProbeStatus {
                ok: s.state == ProbeState::Up,
                delays: [d(s.min_delay), d(s.avg_delay), d(s.max_delay)],
            };
            (s.spec.key(), status)
        })
        .collect();
    let n = results.len();
    if let Err(e) = control.apply(Command::ProbeResults(results)).await {
        tracing::error!(probes = n, "applying probe results: {e}");
    }
}
