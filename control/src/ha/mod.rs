//! xlb's built-in election (`xlb run --cluster A,B,C --self N`): the members
//! of a cluster elect one holder of the VIPs the election manages, with
//! Raft ([`openraft`]) for the agreement, so that two nodes never hold them
//! at once and a dead holder is replaced within a second.
//!
//! How "never at once" is kept, by construction: a Raft leader holds only
//! while a majority acknowledged its heartbeats within [`HOLD_LEASE`] —
//! measured from when those heartbeats were sent — and followers refuse to
//! vote for anyone else for [`LEADER_LEASE`] after a heartbeat, then wait an
//! election timeout more before they campaign. A holder that loses its
//! majority (it died, its links went down, the network split) therefore
//! stops holding at least `LEADER_LEASE + ELECTION_MIN - HOLD_LEASE` before
//! any other node can be elected; that margin covers taking the VIPs off
//! the host. A node that cannot reach a majority never holds. With two
//! balancer nodes, a third member is needed to form a majority: a witness
//! (`xlb run --no-dataplane --cluster ... --self N`), which votes but never
//! campaigns.
//!
//! No preemption: a leader stays leader while it keeps its majority; a
//! returning node joins as a follower (it stays silent for [`QUIET_START`]
//! first, so that a vote it gave before a restart cannot be given twice).
//! A starting node does not campaign while it listens for a leader (up to
//! [`JOIN_WAIT`]): in a running cluster it learns the log from the leader
//! and only then may campaign. Campaigning with the empty log of a fresh
//! start would be refused, and openraft remembers such a refusal until the
//! node's next campaign by waiting 600 ms longer for it — after the
//! holder's death, when it counts. Only a node that hears no leader
//! initialises the cluster (a cluster's first start, or all members'
//! restart).
//!
//! Timers (loxilb's BFD: 100 ms × 3 but no majority; keepalived: 1 s adverts,
//! 3.6 s to take over): heartbeats every 50 ms; a follower campaigns
//! 300 ms + 200–300 ms after the last heartbeat it got. Takeover after a
//! holder's death: 0.5–0.7 s, plus a vote and a heartbeat round trip.

pub mod raft;
pub mod rpc;
pub mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{Config, EmptyNode, ServerState};
use tokio::task::JoinHandle;

use self::raft::{LogStore, Network, Raft, StateMachine};
use self::rpc::{node_id, Rpc};

/// How often a leader sends heartbeats.
pub const HEARTBEAT: Duration = Duration::from_millis(50);
/// Shortest election timeout (a follower's wait is random between this and
/// [`ELECTION_MAX`], after the lease).
pub const ELECTION_MIN: Duration = Duration::from_millis(200);
/// Longest election timeout; openraft also takes it as the leader lease.
pub const ELECTION_MAX: Duration = Duration::from_millis(300);
/// How long after a heartbeat a follower refuses to vote for another
/// candidate (openraft sets it to the longest election timeout).
pub const LEADER_LEASE: Duration = ELECTION_MAX;
/// A leader holds only while a majority acknowledged heartbeats it sent
/// less than this long ago. `LEADER_LEASE + ELECTION_MIN - HOLD_LEASE`
/// (250 ms) is the least time between this node letting go and another
/// taking over.
pub const HOLD_LEASE: Duration = Duration::from_millis(250);
/// How long a starting node stays silent: longer than any lease its vote
/// from before a restart could have given.
pub const QUIET_START: Duration = Duration::from_millis(400);
/// How long a starting candidate listens for a running cluster's leader
/// before it initialises the cluster itself: longer than a leader's silence
/// between heartbeats and an election among the others.
pub const JOIN_WAIT: Duration = Duration::from_millis(1000);
/// How long a joining member that lacks the holder's state waits after
/// the holder fell silent before it may campaign: longer than a member
/// with the state waits (lease plus the longest election timeout), so that
/// one is elected when there is one.
const UNREADY_GRACE: Duration = Duration::from_millis(650);
const _: () =
    assert!(UNREADY_GRACE.as_millis() > LEADER_LEASE.as_millis() + ELECTION_MAX.as_millis());
/// How often the standing is evaluated.
const WATCH_EVERY: Duration = Duration::from_millis(10);
/// How often every member tells every other one it is there.
pub const HELLO_EVERY: Duration = Duration::from_millis(100);
/// A member heard within this long counts as up (for display).
const UP_WITHIN: Duration = Duration::from_secs(1);

/// The default UDP port of the election.
pub const DEFAULT_PORT: u16 = 11112;

/// A cluster as `xlb run --cluster` describes it.
#[derive(Clone)]
pub struct ClusterConfig {
    /// Every member's election address, in the same order on every member.
    pub members: Vec<SocketAddr>,
    /// This node's index in `members`.
    pub me: usize,
    /// The shared key that authenticates every datagram.
    pub key: Vec<u8>,
    /// Whether this node may hold the VIPs (a witness, or a node without a
    /// dataplane, only votes).
    pub candidate: bool,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("members", &self.members)
            .field("me", &self.me)
            .field("candidate", &self.candidate)
            .finish_non_exhaustive()
    }
}

/// Why the cluster configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// fewer than three members: two cannot lose one and keep a majority
    #[error("--cluster needs at least three members: with two, losing either leaves no majority and no holder (add a --no-dataplane witness as the third)")]
    TooFew,
    /// `--self` out of range
    #[error("--self {me} is not an index of the {n} --cluster members (0 to {})", n - 1)]
    SelfOutOfRange {
        /// The index given.
        me: usize,
        /// How many members.
        n: usize,
    },
    /// the same address twice
    #[error("--cluster lists {0} twice")]
    Duplicate(SocketAddr),
    /// no key
    #[error(
        "--cluster needs a shared key (--cluster-key or XLB_CLUSTER_KEY) of at least 16 bytes"
    )]
    NoKey,
    /// the election socket could not be bound
    #[error("binding the election socket {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// openraft refused its configuration or failed to start
    #[error("starting the election: {0}")]
    Raft(String),
}

impl ClusterConfig {
    /// Check the configuration for the election (three members at least).
    pub fn validate(&self) -> Result<(), ClusterError> {
        if self.members.len() < 3 {
            return Err(ClusterError::TooFew);
        }
        self.validate_group()
    }

    /// What a group needs without the election too (`--no-election`: a
    /// controller sets the roles, the members only share connections):
    /// this node in the list, no member twice, a key.
    pub fn validate_group(&self) -> Result<(), ClusterError> {
        let n = self.members.len();
        if self.me >= n {
            return Err(ClusterError::SelfOutOfRange { me: self.me, n });
        }
        for (i, a) in self.members.iter().enumerate() {
            if self.members[..i].contains(a) {
                return Err(ClusterError::Duplicate(*a));
            }
        }
        if self.key.len() < 16 {
            return Err(ClusterError::NoKey);
        }
        Ok(())
    }
}

/// This node's place in the cluster, as the election sees it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// This node holds the VIPs (leader inside its lease).
    Holder,
    /// Another member holds them, or an election is under way among a
    /// majority this node can reach.
    Backup,
    /// This node cannot reach a majority: it holds nothing and cannot be
    /// elected (keepalived's FAULT).
    Fault,
}

impl Standing {
    /// The loxilb state name of this standing.
    pub fn state(self) -> &'static str {
        match self {
            Standing::Holder => "MASTER",
            Standing::Backup => "BACKUP",
            Standing::Fault => "FAULT",
        }
    }
}

/// A change of standing and what the election knew when it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The new standing.
    pub standing: Standing,
    /// The holder's member index, if one is known.
    pub holder: Option<usize>,
    /// Why, for the log and `GET /config/cistate`.
    pub reason: &'static str,
}

/// One member as `GET /config/cistate` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// Its election address.
    pub addr: SocketAddr,
    /// This node.
    pub me: bool,
    /// Heard from within the last second (always true for this node).
    pub up: bool,
}

/// The election's state for display.
#[derive(Debug, Clone)]
pub struct ElectionStatus {
    /// This node's standing.
    pub standing: Standing,
    /// The holder, if known.
    pub holder: Option<usize>,
    /// Every member.
    pub members: Vec<MemberStatus>,
    /// The Raft term.
    pub term: u64,
    /// Datagrams by outcome: accepted, malformed, foreign, bad_auth,
    /// replayed, bad_body, timeouts.
    pub datagrams: BTreeMap<&'static str, u64>,
}

/// Whether this node has what it needs to take over from member `holder`
/// (connection sync: the holder's whole flow table). A returning node does
/// not campaign while the holder it heard is alive and this says no.
pub type Readiness = Arc<dyn Fn(usize) -> bool + Send + Sync>;

/// A running election.
pub struct Election {
    raft: Raft,
    rpc: Arc<Rpc>,
    cfg: ClusterConfig,
    last: Arc<std::sync::Mutex<Transition>>,
    stop: Arc<tokio::sync::Notify>,
    watch: std::sync::Mutex<Option<JoinHandle<()>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Election")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Election {
    /// Join the cluster (after [`QUIET_START`]) and call `on_change` from the
    /// election's task on every change of standing, starting with the first.
    /// Call inside a tokio runtime.
    pub async fn start(
        cfg: ClusterConfig,
        on_change: impl Fn(&Transition) + Send + Sync + 'static,
    ) -> Result<Election, ClusterError> {
        Self::start_with(cfg, on_change, Arc::new(|_| true)).await
    }

    /// [`Election::start`], with a node that joins a running cluster
    /// eligible only once `ready` says it has what it needs from the holder
    /// (or the holder is gone).
    pub async fn start_with(
        cfg: ClusterConfig,
        on_change: impl Fn(&Transition) + Send + Sync + 'static,
        ready: Readiness,
    ) -> Result<Election, ClusterError> {
        cfg.validate()?;
        let rpc = Arc::new(
            Rpc::bind(cfg.members.clone(), cfg.me, &cfg.key)
                .await
                .map_err(|e| ClusterError::Bind(cfg.members[cfg.me], e))?,
        );
        let config = Config {
            cluster_name: "xlb".into(),
            heartbeat_interval: HEARTBEAT.as_millis() as u64,
            election_timeout_min: ELECTION_MIN.as_millis() as u64,
            election_timeout_max: ELECTION_MAX.as_millis() as u64,
            // Nothing worth a snapshot is replicated; logs stay (a few
            // entries per election) so a returning node catches up from them.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_payload_entries: 16,
            // Not before this node has joined: see `join`.
            enable_elect: false,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        // Silent first: see QUIET_START.
        tokio::time::sleep(QUIET_START).await;
        let raft = Raft::new(
            node_id(cfg.me),
            Arc::new(config),
            Network { rpc: rpc.clone() },
            LogStore::default(),
            StateMachine::default(),
        )
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let serve = tokio::spawn(rpc.clone().serve(raft.clone()));
        // A witness never initialises nor campaigns: it learns the
        // membership from the leader.
        let join = tokio::spawn(join(raft.clone(), rpc.clone(), cfg.clone(), ready));
        let hello = {
            let (rpc, me) = (rpc.clone(), cfg.me);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(HELLO_EVERY);
                loop {
                    tick.tick().await;
                    rpc.hello(me).await;
                }
            })
        };
        let first = Transition {
            standing: Standing::Fault,
            holder: None,
            reason: "starting",
        };
        on_change(&first);
        let last = Arc::new(std::sync::Mutex::new(first));
        let stop = Arc::new(tokio::sync::Notify::new());
        let watch = tokio::spawn(watch(
            raft.clone(),
            rpc.clone(),
            cfg.clone(),
            last.clone(),
            stop.clone(),
            on_change,
        ));
        tracing::info!(
            members = ?cfg.members,
            me = cfg.me,
            candidate = cfg.candidate,
            "election started"
        );
        Ok(Election {
            raft,
            rpc,
            cfg,
            last,
            stop,
            watch: std::sync::Mutex::new(Some(watch)),
            tasks: vec![serve, hello, join],
        })
    }

    /// The election's state now.
    pub async fn status(&self) -> ElectionStatus {
        let m = self.raft.metrics().borrow().clone();
        let last = lock(&self.last).clone();
        let c = &self.rpc.counters;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        ElectionStatus {
            standing: last.standing,
            holder: last.holder,
            members: self
                .cfg
                .members
                .iter()
                .enumerate()
                .map(|(i, a)| MemberStatus {
                    addr: *a,
                    me: i == self.cfg.me,
                    up: i == self.cfg.me || self.rpc.heard_ago(i).is_some_and(|d| d < UP_WITHIN),
                })
                .collect(),
            term: m.current_term,
            datagrams: [
                ("accepted", load(&c.accepted)),
                ("malformed", load(&c.malformed)),
                ("foreign", load(&c.foreign)),
                ("bad_auth", load(&c.bad_auth)),
                ("replayed", load(&c.replayed)),
                ("bad_body", load(&c.bad_body)),
                ("timeouts", load(&c.timeouts)),
            ]
            .into_iter()
            .collect(),
        }
    }

    /// Leave the cluster: let go of the VIPs (the last change reported is
    /// FAULT, "stopped"), then stop answering and campaigning; the others
    /// elect a new holder within a lease and an election timeout.
    pub async fn stop(&self) {
        self.stop.notify_one();
        let watch = lock(&self.watch).take();
        if let Some(w) = watch {
            let _ = w.await;
        }
        for t in &self.tasks {
            t.abort();
        }
        let _ = self.raft.shutdown().await;
    }
}

/// Let a candidate campaign once it has joined: as soon as it hears a
/// leader (the leader replicates the log to it) and `ready` says it has
/// what it needs from that leader — or the leader is gone, so waiting
/// would get it nothing more. After [`JOIN_WAIT`] of silence it
/// initialises the cluster (every candidate initialises the same
/// membership, so whichever initialisation wins the election, the others
/// agree with it).
async fn join(raft: Raft, rpc: Arc<Rpc>, cfg: ClusterConfig, ready: Readiness) {
    if !cfg.candidate {
        return;
    }
    let me = node_id(cfg.me);
    let mut metrics = raft.metrics();
    let heard = tokio::time::timeout(
        JOIN_WAIT,
        metrics.wait_for(|m| m.current_leader.is_some_and(|l| l != me)),
    )
    .await
    .map(|r| r.is_ok());
    match heard {
        Ok(_) => {
            let since = Instant::now();
            let mut said = since;
            loop {
                let leader = raft
                    .metrics()
                    .borrow()
                    .current_leader
                    .filter(|&l| l != me)
                    .and_then(|id| usize::try_from(id.checked_sub(1)?).ok());
                let Some(l) = leader.filter(|&l| l < cfg.members.len()) else {
                    break;
                };
                if ready(l) {
                    tracing::info!(
                        holder = %cfg.members[l],
                        waited_ms = since.elapsed().as_millis() as u64,
                        "joined the cluster with the holder's state"
                    );
                    break;
                }
                // Gone for longer than any member that has the state
                // waits before it campaigns: those go first.
                if rpc.heard_ago(l).is_none_or(|d| d >= UNREADY_GRACE) {
                    tracing::warn!(
                        holder = %cfg.members[l],
                        "the holder went away before its state was complete here"
                    );
                    break;
                }
                if said.elapsed() >= Duration::from_secs(10) {
                    said = Instant::now();
                    tracing::warn!(
                        holder = %cfg.members[l],
                        waited_s = since.elapsed().as_secs(),
                        "not eligible yet: waiting for the holder's state"
                    );
                }
                tokio::time::sleep(WATCH_EVERY).await;
            }
        }
        Err(_) => {
            let members: BTreeMap<u64, EmptyNode> = (0..cfg.members.len())
                .map(|i| (node_id(i), EmptyNode {}))
                .collect();
            // Fails harmlessly if a leader's log arrived in the meantime.
            if let Err(e) = raft.initialize(members).await {
                tracing::debug!("initialising the election: {e}");
            }
        }
    }
    raft.runtime_config().elect(true);
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Evaluate the standing every [`WATCH_EVERY`] and report changes.
async fn watch(
    raft: Raft,
    rpc: Arc<Rpc>,
    cfg: ClusterConfig,
    last: Arc<std::sync::Mutex<Transition>>,
    stop: Arc<tokio::sync::Notify>,
    on_change: impl Fn(&Transition) + Send + Sync + 'static,
) {
    let mut metrics = raft.metrics();
    // When the metrics were last published: their quorum-ack age is as of then.
    let mut seen_at = Instant::now();
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
                seen_at = Instant::now();
            }
            _ = tick.tick() => {}
            _ = stop.notified() => {
                let stopped = Transition {
                    standing: Standing::Fault,
                    holder: None,
                    reason: "stopped",
                };
                tracing::info!(state = stopped.standing.state(), "cluster role: stopped");
                *lock(&last) = stopped.clone();
                on_change(&stopped);
                return;
            }
        }
        let m = metrics.borrow().clone();
        let majority = cfg.members.len() / 2 + 1;
        let reachable = 1
            + (0..cfg.members.len())
                .filter(|&i| i != cfg.me && rpc.heard_ago(i).is_some_and(|d| d < LEADER_LEASE))
                .count();
        let acked_ago = m
            .millis_since_quorum_ack
            .map(|ms| Duration::from_millis(ms) + seen_at.elapsed());
        let leader = m
            .current_leader
            .and_then(|id| usize::try_from(id.checked_sub(1)?).ok());
        let next = if m.state == ServerState::Leader && acked_ago.is_some_and(|a| a < HOLD_LEASE) {
            Transition {
                standing: Standing::Holder,
                holder: Some(cfg.me),
                reason: "elected, and a majority acknowledges it",
            }
        } else if reachable < majority {
            Transition {
                standing: Standing::Fault,
                holder: None,
                reason: "cannot reach a majority of the cluster",
            }
        } else if m.state == ServerState::Leader {
            Transition {
                standing: Standing::Backup,
                holder: None,
                reason: "leader without a current majority acknowledgement",
            }
        } else {
            match leader.filter(|&l| l != cfg.me) {
                Some(l) if rpc.heard_ago(l).is_some_and(|d| d < LEADER_LEASE) => Transition {
                    standing: Standing::Backup,
                    holder: Some(l),
                    reason: "another member holds the VIPs",
                },
                _ => Transition {
                    standing: Standing::Backup,
                    holder: None,
                    reason: "electing a holder",
                },
            }
        };
        let changed = {
            let mut l = lock(&last);
            if *l == next {
                false
            } else {
                *l = next.clone();
                true
            }
        };
        if changed {
            tracing::info!(
                state = next.standing.state(),
                holder = ?next.holder.map(|h| cfg.members[h]),
                term = m.current_term,
                "cluster role: {}",
                next.reason
            );
            on_change(&next);
        }
    }
}

#[cfg(test)]
mod tests;
