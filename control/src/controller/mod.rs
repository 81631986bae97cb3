//! The controller: the one owner of a daemon's control state ([`ControlState`]:
//! rules, probe entries and results, host holds, cluster instances, table
//! settings), on a thread of its own. Everything that changes the state — the
//! REST API, the health prober, config files, HA roles — is a client that
//! sends it a typed [`Command`] through a [`ControlHandle`] and waits for the
//! answer; reads are closures run on the controller's thread against the
//! state as it is between commands. No client ever holds the state.
//!
//! Why a thread and a mailbox rather than a lock: a change builds a table
//! snapshot (milliseconds for a big rule set); on the controller's thread
//! that never blocks the API's async tasks, and commands are applied in
//! arrival order. Nothing on this thread waits on the network: next hops
//! are resolved in the background ([`crate::dataplane::NetEnv`]), a rule
//! whose endpoint has none yet is published at once (its packets counted
//! as `no_neighbor`), and published again when the network reports one. Rule requests that queue up while one is being built are applied as
//! one group with one snapshot ([`ControlState::apply_rule_ops`]), yet each is
//! checked and answered as if it had come alone. A request whose client went
//! away before the controller took it is withdrawn, never applied later.
//!
//! The controller also keeps the tables in step with the network: when the
//! dataplane's [`crate::dataplane::NetEnv`] says a next hop was found,
//! changed or lost, and every [`REFRESH_EVERY`], it asks whether the
//! tables should be rebuilt, and rebuilds if so.
//!
//! Data flow: client → [`Command`] → [`ControlState`] builds a snapshot →
//! [`crate::dataplane::Publisher::publish`] (the workers' tables and the XDP
//! maps in one call) → the state changes → the client gets its answer.

pub mod cluster;
mod probes;
pub mod settings;
mod state;
mod views;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use cluster::{instance_of, HoldSets, Instances, Role, RoleRow, DEFAULT_INSTANCE};
pub use probes::ProbeStatus;
pub use settings::{MaglevSize, MaglevSizeError};
pub use state::{ControlState, RuleOp, MAX_RULES};
pub use views::EndpointRow;

use crate::dataplane::REFRESH_EVERY;
use crate::error::RuleError;
use crate::ha::{MemberStatus, Transition};
use crate::model::CiStateIn;
use crate::rules::{HostHold, Probe};

/// A change to the control state.
#[derive(Debug, Clone)]
pub enum Command {
    /// Post or delete one rule (`POST /config/loadbalancer`, `DELETE
    /// .../externalipaddress/...`). Rule commands that queue up together are
    /// applied as one group with one snapshot.
    Rule(RuleOp),
    /// Delete every rule of this name.
    DeleteRulesNamed(String),
    /// Delete every rule.
    DeleteAllRules,
    /// Add or replace a probe entry.
    PostProbe(Probe),
    /// Delete the probe entry with this key.
    DeleteProbe(String),
    /// The latest results of these probe entries (the health prober's).
    ProbeResults(Vec<(String, ProbeStatus)>),
    /// Hold a host's endpoints down, or release it.
    HostState {
        /// Which endpoints.
        hold: HostHold,
        /// Hold (`true`) or release.
        down: bool,
    },
    /// Set a cluster instance's role (`POST /config/cistate`).
    ClusterState(CiStateIn),
    /// The election's new standing, and the members it can hear.
    Elected(Transition, Vec<MemberStatus>),
    /// The members the election can hear now (display only).
    ClusterMembers(
        Vec<MemberStatus>,
        std::collections::BTreeMap<&'static str, u64>,
    ),
    /// Rebuild every table from the state (picks up network changes).
    Refresh,
    /// Load the config files of this directory again, all or nothing
    /// ([`crate::config::reload`]; SIGHUP).
    Reload(std::path::PathBuf),
}

/// Where a command's answer goes.
type Reply = Box<dyn FnOnce(Result<(), RuleError>) + Send>;

enum Job {
    Change(Command, Reply),
    Read(Box<dyn FnOnce(&ControlState) + Send>),
}

struct Queued {
    id: u64,
    job: Job,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Queued>,
    next_id: u64,
    /// Holders of a [`Pause`]: while any, the controller takes nothing.
    paused: usize,
    stop: bool,
    /// The network said the tables should follow it ([`crate::dataplane::NetEnv::on_change`]).
    net_changed: bool,
}

struct Mailbox {
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl Mailbox {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A poisoned lock means a panicking client; the queue is still whole.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, job: Job) -> Result<u64, RuleError> {
        let mut q = self.lock();
        if q.stop {
            return Err(stopped());
        }
        let id = q.next_id;
        q.next_id += 1;
        q.jobs.push_back(Queued { id, job });
        self.wake.notify_one();
        Ok(id)
    }
}

fn stopped() -> RuleError {
    RuleError::Internal("the controller has stopped".into())
}

/// The running controller. Dropping it stops the thread (commands still
/// queued are answered with an error).
pub struct Controller {
    mailbox: Arc<Mailbox>,
    thread: Option<JoinHandle<ControlState>>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").finish_non_exhaustive()
    }
}

impl Controller {
    /// Start the controller thread over `state`.
    pub fn start(state: ControlState) -> Result<Controller, std::io::Error> {
        Controller::start_ticking(state, REFRESH_EVERY)
    }

    /// [`Controller::start`] with another refresh period (tests).
    fn start_ticking(state: ControlState, every: Duration) -> Result<Controller, std::io::Error> {
        let mailbox = Arc::new(Mailbox {
            queue: Mutex::default(),
            wake: Condvar::new(),
        });
        // Next hops resolve in the background: the tables follow as soon as
        // one is found, not at the next round.
        let weak = Arc::downgrade(&mailbox);
        state.net.on_change(Box::new(move || {
            if let Some(mailbox) = weak.upgrade() {
                mailbox.lock().net_changed = true;
                mailbox.wake.notify_one();
            }
        }));
        let thread = {
            let mailbox = mailbox.clone();
            std::thread::Builder::new()
                .name("xlb-control".into())
                .spawn(move || run(&mailbox, state, every))?
        };
        Ok(Controller {
            mailbox,
            thread: Some(thread),
        })
    }

    /// A handle for a client.
    pub fn handle(&self) -> ControlHandle {
        ControlHandle {
            mailbox: self.mailbox.clone(),
        }
    }

    /// Stop the thread and take the state back.
    pub fn stop(mut self) -> Option<ControlState> {
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> Option<ControlState> {
        self.mailbox.lock().stop = true;
        self.mailbox.wake.notify_all();
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// A client's way to the controller: cheap to clone, usable from async
/// tasks ([`ControlHandle::apply`], [`ControlHandle::read`]) and from plain
/// threads (the `_blocking` forms; never call those inside an async task).
#[derive(Clone)]
pub struct ControlHandle {
    mailbox: Arc<Mailbox>,
}

impl std::fmt::Debug for ControlHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlHandle")
            .field("queued", &self.queued())
            .finish()
    }
}

/// Takes a job out of the queue if its client goes away before the
/// controller took it (a request whose client is gone is not applied later).
struct Withdraw<'a> {
    mailbox: &'a Mailbox,
    id: u64,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        self.mailbox.lock().jobs.retain(|q| q.id != self.id);
    }
}

impl ControlHandle {
    /// Apply `cmd` and return its outcome once the change is live (published
    /// to the dataplane) or refused (nothing changed).
    pub async fn apply(&self, cmd: Command) -> Result<(), RuleError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let reply: Reply = Box::new(move |r| {
            let _ = tx.send(r);
        });
        let id = self.mailbox.push(Job::Change(cmd, reply))?;
        let _withdraw = Withdraw {
            mailbox: &self.mailbox,
            id,
        };
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// [`ControlHandle::apply`] for a plain thread.
    pub fn apply_blocking(&self, cmd: Command) -> Result<(), RuleError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let reply: Reply = Box::new(move |r| {
            let _ = tx.send(r);
        });
        self.mailbox.push(Job::Change(cmd, reply))?;
        rx.recv().unwrap_or_else(|_| Err(stopped()))
    }

    /// Run `f` against the state between commands and return what it returns.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ControlState) -> T + Send + 'static,
    ) -> Result<T, RuleError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let id = self.mailbox.push(Job::Read(Box::new(move |st| {
            let _ = tx.send(f(st));
        })))?;
        let _withdraw = Withdraw {
            mailbox: &self.mailbox,
            id,
        };
        rx.await.map_err(|_| stopped())
    }

    /// [`ControlHandle::read`] for a plain thread.
    pub fn read_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ControlState) -> T + Send + 'static,
    ) -> Result<T, RuleError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.mailbox.push(Job::Read(Box::new(move |st| {
            let _ = tx.send(f(st));
        })))?;
        rx.recv().map_err(|_| stopped())
    }

    /// How many commands and reads are waiting for the controller.
    pub fn queued(&self) -> usize {
        self.mailbox.lock().jobs.len()
    }

    /// Keep the controller from taking anything until the returned guard is
    /// dropped: commands queue meanwhile, as they would behind a long table
    /// build. For tests of queueing and grouping.
    pub fn pause(&self) -> Pause {
        self.mailbox.lock().paused += 1;
        Pause {
            mailbox: self.mailbox.clone(),
        }
    }
}

/// While it lives, the controller takes no command ([`ControlHandle::pause`]).
pub struct Pause {
    mailbox: Arc<Mailbox>,
}

impl std::fmt::Debug for Pause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pause").finish_non_exhaustive()
    }
}

impl Drop for Pause {
    fn drop(&mut self) {
        self.mailbox.lock().paused -= 1;
        self.mailbox.wake.notify_all();
    }
}

/// The controller's loop: take every queued job at once, apply them in
/// order (consecutive rule commands as one group), and refresh the tables
/// for the network every [`REFRESH_EVERY`].
fn run(mailbox: &Mailbox, mut state: ControlState, every: Duration) -> ControlState {
    let mut round = 0u64;
    let mut next_tick = Instant::now() + every;
    loop {
        let (jobs, tick, net_changed) = {
            let mut q = mailbox.lock();
            loop {
                if q.stop {
                    // Dropping the queued jobs drops their replies: clients
                    // see that the controller stopped.
                    q.jobs.clear();
                    return state;
                }
                let now = Instant::now();
                if q.paused == 0 && (!q.jobs.is_empty() || now >= next_tick || q.net_changed) {
                    break;
                }
                q = if q.paused > 0 {
                    mailbox.wake.wait(q).unwrap_or_else(|e| e.into_inner())
                } else {
                    mailbox
                        .wake
                        .wait_timeout(q, next_tick - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                };
            }
            let tick = Instant::now() >= next_tick;
            let net_changed = std::mem::take(&mut q.net_changed);
            (std::mem::take(&mut q.jobs), tick, net_changed)
        };
        if tick {
            round += 1;
            next_tick = Instant::now() + every;
        }
        if (tick || net_changed) && state.net.needs_refresh(round) {
            if let Err(e) = state.refresh() {
                tracing::warn!("refreshing next hops: {e}");
            }
        }
        execute(&mut state, jobs);
    }
}

/// Apply `jobs` in order; each run of consecutive rule commands is one group.
fn execute(state: &mut ControlState, jobs: VecDeque<Queued>) {
    let mut group: Vec<(RuleOp, Reply)> = Vec::new();
    for q in jobs {
        match q.job {
            Job::Change(Command::Rule(op), reply) => group.push((op, reply)),
            other => {
                apply_group(state, std::mem::take(&mut group));
                match other {
                    Job::Change(cmd, reply) => reply(apply(state, cmd)),
                    Job::Read(f) => f(state),
                }
            }
        }
    }
    apply_group(state, group);
}

fn apply_group(state: &mut ControlState, group: Vec<(RuleOp, Reply)>) {
    if group.is_empty() {
        return;
    }
    let (ops, replies): (Vec<RuleOp>, Vec<Reply>) = group.into_iter().unzip();
    for (reply, result) in replies.into_iter().zip(state.apply_rule_ops(ops)) {
        reply(result);
    }
}

fn apply(state: &mut ControlState, cmd: Command) -> Result<(), RuleError> {
    match cmd {
        Command::Rule(op) => state.apply_rule_op(op),
        Command::DeleteRulesNamed(name) => state.delete_rules_named(&name),
        Command::DeleteAllRules => state.delete_all_rules(),
        Command::PostProbe(p) => state.post_probe(p),
        Command::DeleteProbe(key) => state.delete_probe(&key),
        Command::ProbeResults(results) => state.set_probe_statuses(results),
        Command::HostState { hold, down } => state.set_host_state(hold, down),
        Command::ClusterState(ci) => state.post_cistate(&ci),
        Command::Elected(t, members) => state.set_elected(t, members),
        Command::ClusterMembers(members, datagrams) => {
            state.set_cluster_members(members, datagrams);
            Ok(())
        }
        Command::Refresh => state.refresh(),
        Command::Reload(dir) => {
            let report = crate::config::reload(state, &dir)?;
            tracing::info!(
                dir = %dir.display(),
                rules = report.rules,
                endpoints = report.endpoints,
                "config reloaded"
            );
            Ok(())
        }
    }
}
