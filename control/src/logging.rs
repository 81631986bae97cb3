//! The daemon's log: the subscriber (`--log-format text|json`, colour only
//! on a terminal, the level `POST /config/params` changes at run time) and
//! [`Repeated`], which keeps a condition that persists from filling the log.
//!
//! Invariant: a [`Repeated`] logs a key's first report at once, then at most
//! one summary per interval with the number of reports since the last
//! line, and one line when the key clears (only if it had been reported).

use std::collections::HashMap;
use std::hash::Hash;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use tracing_subscriber::{reload, EnvFilter};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// Why the log could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// another subscriber is already installed
    #[error("setting up the log: {0}")]
    Init(String),
}

fn tracing_level(loxilb: &str) -> &'static str {
    match loxilb {
        "trace" => "trace",
        "debug" => "debug",
        "info" | "notice" => "info",
        "warning" => "warn",
        _ => "error",
    }
}

/// The log filter for loxilb's level name. The election's Raft library
/// (openraft) speaks only at debug and trace: at lower levels it would log
/// every missed heartbeat to a dead peer, many times a second, while xlb
/// logs each change of role and of a peer's liveness itself.
pub fn log_filter(loxilb: &str) -> String {
    match tracing_level(loxilb) {
        l @ ("trace" | "debug") => l.to_string(),
        l => format!("{l},openraft=off"),
    }
}

/// Install the process's subscriber: to stderr, in `format`, at `level`
/// (loxilb's names; `RUST_LOG` overrides), with ANSI colours only when
/// stderr is a terminal (a journal or a file gets plain text). Returns what
/// changes the level later.
pub fn init(level: &str, format: LogFormat) -> Result<crate::api::LogLevelSetter, LogError> {
    use tracing_subscriber::prelude::*;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(log_filter(level)));
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::stderr().is_terminal();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .map_err(|e| LogError::Init(e.to_string()))?;
    Ok(Box::new(move |level: &str| {
        handle
            .reload(EnvFilter::new(log_filter(level)))
            .map_err(|e| e.to_string())
    }))
}

/// What to log for one report of a repeated condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// The first report: log it.
    First,
    /// Reported again `times` times since the last line, over `for_secs`
    /// seconds since the first: log a summary.
    Again {
        /// Reports since the last line, this one included.
        times: u64,
        /// Seconds since the first report.
        for_secs: u64,
    },
    /// Nothing to log (within the interval).
    Quiet,
}

#[derive(Debug)]
struct Entry {
    first: Instant,
    last_line: Instant,
    since_line: u64,
    total: u64,
}

/// Rate limit for a warning about a condition that persists per key (an
/// address without a next hop): see the module's invariant.
#[derive(Debug)]
pub struct Repeated<K> {
    every: Duration,
    open: HashMap<K, Entry>,
}

impl<K: Hash + Eq + Clone> Repeated<K> {
    /// At most one line per key per `every` after the first.
    pub fn new(every: Duration) -> Repeated<K> {
        Repeated {
            every,
            open: HashMap::new(),
        }
    }

    /// `key`'s condition was seen again at `now`.
    pub fn report(&mut self, key: &K, now: Instant) -> Report {
        let Some(e) = self.open.get_mut(key) else {
            self.open.insert(
                key.clone(),
                Entry {
                    first: now,
                    last_line: now,
                    since_line: 0,
                    total: 1,
                },
            );
            return Report::First;
        };
        e.since_line += 1;
        e.total += 1;
        if now.duration_since(e.last_line) < self.every {
            return Report::Quiet;
        }
        let r = Report::Again {
            times: e.since_line,
            for_secs: now.duration_since(e.first).as_secs(),
        };
        e.last_line = now;
        e.since_line = 0;
        r
    }

    /// `key`'s condition cleared: `Some((reports, seconds))` if it had been
    /// reported (log that it cleared), `None` otherwise.
    pub fn clear(&mut self, key: &K, now: Instant) -> Option<(u64, u64)> {
        self.open
            .remove(key)
            .map(|e| (e.total, now.duration_since(e.first).as_secs()))
    }

    /// Forget the keys `keep` rejects, without a line (their condition no
    /// longer matters: the address left the tables).
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.open.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_then_one_summary_per_interval_then_cleared_once() {
        let t0 = Instant::now();
        let mut r = Repeated::new(Duration::from_secs(60));
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(r.report(&"a", at(0)), Report::First);
        // Every 2 s for a minute: quiet.
        for s in (2..60).step_by(2) {
            assert_eq!(r.report(&"a", at(s)), Report::Quiet, "at {s}s");
        }
        assert_eq!(
            r.report(&"a", at(60)),
            Report::Again {
                times: 30,
                for_secs: 60
            }
        );
        assert_eq!(r.report(&"a", at(62)), Report::Quiet);
        // Another key is independent.
        assert_eq!(r.report(&"b", at(62)), Report::First);
        assert_eq!(r.clear(&"a", at(70)), Some((32, 70)));
        assert_eq!(r.clear(&"a", at(71)), None, "cleared once");
        assert_eq!(r.report(&"a", at(72)), Report::First, "a new episode");
    }

    #[test]
    fn level_names_map_to_filters() {
        assert_eq!(log_filter("debug"), "debug");
        assert_eq!(log_filter("warning"), "warn,openraft=off");
        assert_eq!(log_filter("notice"), "info,openraft=off");
        assert_eq!(log_filter("emergency"), "error,openraft=off");
    }
}
