//! `xlb run`'s wiring: build the control state, load the config files into
//! it (publishing the tables), start the [`Controller`] over it, and serve
//! the API as the controller's client.
//!
//! The dataplane plugs in from outside: whoever starts the workers hands
//! [`prepare`] a [`Dataplane`] (its publisher, a view of its statistics, the
//! host network). With `--no-dataplane` the binary passes
//! [`Dataplane::none`]: the API and the tables work, nothing forwards.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use crate::api::server::{self, raise_fd_limit, Limits};
use crate::api::{router, Api, LogLevelSetter};
use crate::config;
use crate::controller::{Command, ControlState, Controller, MaglevSize};
use crate::dataplane::{Dataplane, Publisher};
use crate::error::RuleError;
use xlb_dataplane::tables::HoldGate;

/// Options of `xlb run` that the control plane uses.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Directory of `lbconfig.txt` / `EPconfig.txt`.
    pub config_path: PathBuf,
    /// Listen address of the API.
    pub api: SocketAddr,
    /// Bearer token required by the API, if any.
    pub api_token: Option<String>,
    /// Stop if a config entry is rejected (instead of logging and going on).
    pub strict_config: bool,
    /// Serve HTTPS with this PEM certificate chain and key.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Full-NAT (mode 2) source addresses; empty: the egress port's address.
    pub snat_addrs: Vec<IpAddr>,
    /// Maglev table size of every hash and persist rule.
    pub maglev_size: MaglevSize,
    /// IPIP for every IPv4 DSR (mode 3) rule, not only those with `dsrIpip`.
    pub dsr_ipip: bool,
    /// Whether xlb's election (`--cluster`) will drive the roles: then this
    /// node holds nothing until it is elected, from its first snapshot on
    /// (a node that comes back never claims a VIP another holds).
    pub elected: bool,
    /// A member of a sync group whose roles a controller sets
    /// (`--cluster --no-election`): the instances no controller set yet
    /// are BACKUP, not NOT_DEFINED, so that a node that starts (or comes
    /// back) claims no VIP before kube-loxilb or keepalived gives it one.
    pub controlled: bool,
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// config entries were rejected and `--strict-config` was given
    #[error("{0} config entries rejected (see the log)")]
    Config(usize),
    /// the API address could not be bound
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// the TLS certificate or key is not usable
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// a source-NAT address that cannot be one
    #[error("--snat-addrs: {0} cannot be a source address")]
    SnatAddr(IpAddr),
    /// the empty tables could not be built with the options given
    #[error("building the tables with the options given: {0}")]
    Options(RuleError),
    /// the controller thread could not be started
    #[error("starting the controller: {0}")]
    Controller(std::io::Error),
}

/// A prepared daemon: the controller that owns the state, and the API that
/// is its client. Keep it alive while serving; dropping it stops the
/// controller.
pub struct Prepared {
    /// Owns the control state.
    pub controller: Controller,
    /// The REST API over it.
    pub api: Arc<Api>,
    /// The election's flag that every snapshot's roles read.
    pub gate: HoldGate,
    /// Set while a controller has made an instance MASTER here.
    pub masters: HoldGate,
    /// Where snapshots go, for the election's fast path.
    pub publisher: Arc<dyn Publisher>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").finish_non_exhaustive()
    }
}

/// Build the control state, load the config files into it (publishing to
/// the dataplane), start the controller over it and make the API its
/// client. Rejected entries are logged at error level with file, index and
/// reason.
pub fn prepare(
    opts: &ServeOptions,
    dataplane: Dataplane,
    log: Option<(String, LogLevelSetter)>,
) -> Result<Prepared, DaemonError> {
    let Dataplane {
        publisher,
        view,
        net,
    } = dataplane;
    let mut state = ControlState::new(publisher.clone(), net);
    let gate = state.gate();
    let masters = state.masters();
    if let Some(bad) = opts.snat_addrs.iter().find(|a| !usable_source(a)) {
        return Err(DaemonError::SnatAddr(*bad));
    }
    // First: every snapshot from here on, the source-NAT addresses' first
    // included, holds nothing until elected. (The other way round, a
    // returning node put the floating source on its host for a moment and
    // announced it: the servers then sent their answers to it, not to the
    // holder, for seconds.)
    if opts.elected || opts.controlled {
        let waiting = if opts.elected {
            crate::ha::Transition {
                standing: crate::ha::Standing::Fault,
                holder: None,
                reason: "starting",
            }
        } else {
            crate::ha::Transition {
                standing: crate::ha::Standing::Backup,
                holder: None,
                reason: "waiting for a controller to set the role",
            }
        };
        state
            .set_elected(waiting, Vec::new())
            .map_err(DaemonError::Options)?;
    }
    if !opts.snat_addrs.is_empty() {
        // Nothing is configured yet: this cannot be refused.
        state
            .set_snat_addrs(opts.snat_addrs.clone())
            .map_err(|_| DaemonError::SnatAddr(opts.snat_addrs[0]))?;
        tracing::info!(addrs = ?opts.snat_addrs, "full-NAT source addresses");
    }
    // Before the config files, so their rules are built once, with these.
    state
        .set_maglev_size(opts.maglev_size)
        .map_err(DaemonError::Options)?;
    state
        .set_dsr_ipip(opts.dsr_ipip)
        .map_err(DaemonError::Options)?;
    tracing::info!(
        maglev_size = %opts.maglev_size,
        dsr_ipip = opts.dsr_ipip,
        "table options"
    );
    let report = config::load(&mut state, &opts.config_path);
    for e in &report.errors {
        tracing::error!("config: {e}");
    }
    if report.is_clean() {
        tracing::info!(
            dir = %opts.config_path.display(),
            rules = report.rules,
            endpoints = report.endpoints,
            "config loaded"
        );
    } else {
        tracing::error!(
            dir = %opts.config_path.display(),
            rules = report.rules,
            endpoints = report.endpoints,
            rejected = report.errors.len(),
            "config loaded with REJECTED entries"
        );
        if opts.strict_config {
            return Err(DaemonError::Config(report.errors.len()));
        }
    }
    let controller = Controller::start(state).map_err(DaemonError::Controller)?;
    let api = Api::new(controller.handle(), view).with_token(opts.api_token.clone());
    // Here only once the files are read (a strict run that rejected an
    // entry has already stopped).
    api.readiness().add("config", Box::new(|| Ok(())));
    let api = Arc::new(match log {
        Some((level, setter)) => api.with_log_setter(&level, setter),
        None => api,
    });
    Ok(Prepared {
        controller,
        api,
        gate,
        masters,
        publisher,
    })
}

/// Whether `a` can be the source of packets xlb sends (unicast, specified).
fn usable_source(a: &IpAddr) -> bool {
    let bad = a.is_unspecified()
        || a.is_multicast()
        || a.is_loopback()
        || matches!(a, IpAddr::V4(v4) if v4.is_broadcast());
    !bad
}

/// Run the API until `shutdown` resolves (HTTPS if `opts.tls` is set),
/// within [`Limits`] sized from the descriptor limit, which is raised to
/// its hard limit first.
///
/// Once the API listens, and if every readiness check passes (the config
/// loaded, the dataplane's workers running and XDP attached: whatever the
/// caller registered on [`Api::readiness`]), the service manager hears
/// `READY=1` ([`crate::systemd`]); when `shutdown` resolves the daemon
/// turns unready and it hears `STOPPING=1`.
pub async fn serve(
    opts: &ServeOptions,
    api: Arc<Api>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    // Read the certificate before binding, so a bad one fails fast.
    let acceptor = match &opts.tls {
        Some((cert, key)) => Some(crate::tls::acceptor(cert, key)?),
        None => None,
    };
    let limits = Limits::for_fd_limit(raise_fd_limit());
    let listener = tokio::net::TcpListener::bind(opts.api)
        .await
        .map_err(|e| DaemonError::Bind(opts.api, e))?;
    tracing::info!(
        addr = %opts.api,
        tls = acceptor.is_some(),
        auth = opts.api_token.is_some(),
        max_conns = limits.max_conns,
        "API listening"
    );
    if opts.api_token.is_none() && !opts.api.ip().is_loopback() {
        tracing::warn!(
            addr = %opts.api,
            "the API is reachable beyond this host without a token: anyone who reaches it \
             can change the rules and make this node announce any address on its LANs; \
             set XLB_API_TOKEN, or listen on loopback (--api 127.0.0.1:11111)"
        );
    }
    let report = api.readiness().report();
    if report.ready {
        crate::systemd::notify_or_log(&format!("READY=1\nSTATUS=serving, API on {}", opts.api));
    } else {
        // The service manager then gives up on the start after its timeout
        // (and restarts xlb, with Restart=on-failure).
        tracing::error!(checks = ?report.checks, "not ready: the service manager is not told READY=1");
    }
    let readiness = api.readiness().clone();
    let shutdown = async move {
        shutdown.await;
        readiness.set_stopping();
        crate::systemd::notify_or_log("STOPPING=1");
    };
    server::serve(listener, acceptor, router(api), limits, shutdown).await;
    Ok(())
}

/// Run the API on an already bound listener until `shutdown` resolves,
/// within the [`Limits`] of the process's descriptor limit now.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    api: Arc<Api>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    server::serve(listener, None, router(api), Limits::default(), shutdown).await;
    Ok(())
}

/// [`serve_on`] over TLS.
pub async fn serve_tls_on(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    api: Arc<Api>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    server::serve(
        listener,
        Some(acceptor),
        router(api),
        Limits::default(),
        shutdown,
    )
    .await;
    Ok(())
}

/// Start connection-state sync (`--cluster` with a dataplane) as a client
/// of the prepared daemon: this node's events go out while it holds VIPs,
/// by the election's gate or a controller's MASTER ([`crate::sync::Roles`]),
/// and its metrics join the API's export. `hub` is
/// control's end of the workers' sync queues; `source` serves dumps and
/// refreshes from the flow table. Call inside the tokio runtime.
pub async fn start_sync(
    cfg: crate::sync::SyncConfig,
    hub: xlb_dataplane::sync::SyncHub,
    source: Arc<dyn crate::sync::FlowSource>,
    daemon: &Prepared,
) -> Result<Arc<crate::sync::SyncService>, crate::sync::SyncError> {
    let sync = Arc::new(
        crate::sync::SyncService::start(
            cfg,
            hub,
            source,
            Arc::new(crate::sync::Roles {
                elected: daemon.gate.clone(),
                controlled: daemon.masters.clone(),
            }),
        )
        .await?,
    );
    daemon.api.set_sync(sync.clone());
    Ok(sync)
}

/// How often the members' liveness reaches `GET /config/cistate`.
const MEMBERS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Start xlb's election (`--cluster`) as a client of the prepared daemon.
/// Every change of standing moves the hold gate at once and brings the
/// steering maps and host addresses in line with it (the fast path: taking
/// over or letting go never waits on the controller), then reaches the
/// controller as a [`Command::Elected`] for what it shows; the members'
/// liveness is refreshed every second. A member that joins a running
/// cluster campaigns only once `ready` says it has the holder's flows
/// (connection sync). Call inside the tokio runtime; stop the returned
/// election before the controller.
pub async fn start_election(
    cfg: crate::ha::ClusterConfig,
    daemon: &Prepared,
    ready: crate::ha::Readiness,
) -> Result<Arc<crate::ha::Election>, crate::ha::ClusterError> {
    let control = daemon.controller.handle();
    let (gate, publisher) = (daemon.gate.clone(), daemon.publisher.clone());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<crate::ha::Transition>();
    let election = Arc::new(
        crate::ha::Election::start_with(
            cfg,
            move |t| {
                if gate.set(t.standing == crate::ha::Standing::Holder) {
                    publisher.roles_changed();
                }
                let _ = tx.send(t.clone());
            },
            ready,
        )
        .await?,
    );
    let (weak, ctl) = (Arc::downgrade(&election), control.clone());
    tokio::spawn(async move {
        while let Some(t) = rx.recv().await {
            let members = match weak.upgrade() {
                Some(e) => e.status().await.members,
                None => Vec::new(),
            };
            if let Err(e) = ctl.apply(Command::Elected(t, members)).await {
                tracing::error!("applying the cluster role: {e}");
            }
        }
    });
    let weak = Arc::downgrade(&election);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(MEMBERS_EVERY);
        loop {
            tick.tick().await;
            let Some(e) = weak.upgrade() else { return };
            let status = e.status().await;
            drop(e);
            if control
                .apply(Command::ClusterMembers(status.members, status.datagrams))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    Ok(election)
}
