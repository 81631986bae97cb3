//! What `GET /readyz` and the service manager's readiness notification
//! judge: a list of named checks (the config loaded, the XDP programs
//! attached, the workers running), each asked afresh when a probe comes,
//! and a stopping flag that makes the daemon unready from the moment it
//! begins to shut down.
//!
//! Invariant: no check waits on the controller or the workers; each reads
//! state that is already there (a flag, a thread handle, one netlink
//! query), so a probe answers even when the controller is busy.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde::Serialize;

/// One readiness check: `Err(why)` when it fails.
pub type Check = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The daemon's readiness checks.
#[derive(Default)]
pub struct Readiness {
    checks: Mutex<Vec<(&'static str, Check)>>,
    stopping: AtomicBool,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("stopping", &self.stopping.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// One check's outcome, as `/readyz` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// The check's name.
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// Why it failed (absent when it passed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Every check's outcome; ready only when all pass and the daemon is not
/// stopping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// All checks passed and the daemon is not stopping.
    pub ready: bool,
    /// The checks, in the order they were added.
    pub checks: Vec<CheckResult>,
}

impl Readiness {
    /// No checks yet: ready.
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// Add the check `name` (asked on every report).
    pub fn add(&self, name: &'static str, check: Check) {
        self.checks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name, check));
    }

    /// The daemon has begun to shut down: unready from now on.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Ask every check now.
    pub fn report(&self) -> Report {
        let mut checks: Vec<CheckResult> = self
            .checks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, check)| {
                let outcome = check();
                CheckResult {
                    name,
                    ok: outcome.is_ok(),
                    reason: outcome.err(),
                }
            })
            .collect();
        if self.stopping.load(Ordering::Relaxed) {
            checks.push(CheckResult {
                name: "running",
                ok: false,
                reason: Some("shutting down".into()),
            });
        }
        Report {
            ready: checks.iter().all(|c| c.ok),
            checks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_while_every_check_passes_and_not_stopping() {
        let r = Readiness::new();
        assert!(r.report().ready, "no checks: ready");
        let up = std::sync::Arc::new(AtomicBool::new(true));
        let seen = up.clone();
        r.add("config", Box::new(|| Ok(())));
        r.add(
            "workers",
            Box::new(move || {
                if seen.load(Ordering::Relaxed) {
                    Ok(())
                } else {
                    Err("worker 1 has stopped".into())
                }
            }),
        );
        assert!(r.report().ready);
        up.store(false, Ordering::Relaxed);
        let rep = r.report();
        assert!(!rep.ready);
        assert_eq!(
            rep.checks[1],
            CheckResult {
                name: "workers",
                ok: false,
                reason: Some("worker 1 has stopped".into())
            }
        );
        up.store(true, Ordering::Relaxed);
        r.set_stopping();
        let rep = r.report();
        assert!(!rep.ready);
        assert_eq!(rep.checks.last().map(|c| c.name), Some("running"));
    }
}
