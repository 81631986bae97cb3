//! Health probing for `xlb run`: keeps an [`xlb_probe::ProbeEngine`] in step
//! with the probe entries control holds (EPconfig.txt, `config/endpoint`, and
//! every endpoint of a monitored rule), and turns each up/down transition into
//! a new table snapshot through [`crate::state::ControlState::set_probe_status`]
//! — a down endpoint leaves its rules' selection, its flows are re-selected.
//!
//! The engine probes off the API lock; this task takes the lock only to read
//! the wanted entries (twice a second) and to apply a transition.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use xlb_probe::{go_duration, ProbeEngine, ProbeKind, ProbeSpec, ProbeState};

use crate::api::Api;
use crate::rules::{Probe, ProbeType};
use crate::state::ProbeStatus;

/// Probes running at once, at most.
const MAX_CONCURRENT_PROBES: usize = 256;
/// How often the wanted entries are compared with the running ones.
const RECONCILE_EVERY: Duration = Duration::from_millis(500);

/// Start probing in the background (call inside the tokio runtime).
pub fn spawn(api: Arc<Api>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(api))
}

async fn run(api: Arc<Api>) {
    let engine = ProbeEngine::new(MAX_CONCURRENT_PROBES);
    let mut events = engine.subscribe();
    let mut running: HashMap<String, ProbeSpec> = HashMap::new();
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let wanted = api.state().lock().await.probe_targets();
                reconcile(&engine, &mut running, &wanted);
            }
            ev = events.recv() => match ev {
                Ok(t) => apply(&api, &engine, &t.name).await,
                // Missed transitions: apply every entry's current state.
                Err(RecvError::Lagged(_)) => {
                    for name in running.keys().cloned().collect::<Vec<_>>() {
                        apply(&api, &engine, &name).await;
                    }
                }
                Err(RecvError::Closed) => return,
            },
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
    // A probe never outlasts its period.
    s.timeout = s.timeout.min(s.interval);
    s.retries = p.retries;
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
            Err(e) => tracing::warn!(probe = %p.name, "cannot probe: {e}"),
        }
    }
    running.retain(|name, _| {
        if keep.contains(name) {
            return true;
        }
        if let Err(e) = engine.remove(name) {
            tracing::warn!(probe = %name, "removing probe: {e}");
        }
        false
    });
}

/// Publish the current state of probe `name` into control (one table build).
async fn apply(api: &Api, engine: &ProbeEngine, name: &str) {
    let Some(s) = engine.snapshot().into_iter().find(|s| s.spec.key() == name) else {
        return;
    };
    let d = |x: Option<Duration>| x.map(go_duration).unwrap_or_default();
    let status = ProbeStatus {
        ok: s.state == ProbeState::Up,
        delays: [d(s.min_delay), d(s.avg_delay), d(s.max_delay)],
    };
    if let Err(e) = api.state().lock().await.set_probe_status(name, status) {
        tracing::error!(probe = %name, "applying a probe result: {e}");
    }
}
