//! The `xlb` binary: `xlb run` is the daemon; the other verbs are the operator's
//! client of its REST API, modelled on loxicmd (its spellings are accepted;
//! control/README.md lists what stays different).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use xlb_control::cli::{self, Client, LbArgs, Mode, Oper, Sel};
use xlb_control::config;
use xlb_control::controller::{ControlState, MaglevSize};
use xlb_control::daemon::{self, ServeOptions};
use xlb_control::dataplane::{afxdp, Dataplane, StaticNet, Unattached};
use xlb_control::model::{from_json, CiStateOut, CtAttr};

#[derive(Parser, Debug)]
#[command(
    name = "xlb",
    version = xlb_control::version::LONG,
    about = "xlb: an AF_XDP L4 load balancer with loxilb's API"
)]
struct Cli {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: Cmd,
}

/// How the client verbs reach the daemon, and how they print (loxicmd's
/// global options). Hidden from `xlb run --help` ([`command`]): the daemon
/// does not use them.
#[derive(Args, Debug)]
struct Conn {
    /// API server: a URL, HOST:PORT, or a host (port from --port, else 11111).
    #[arg(
        short = 's',
        long,
        visible_alias = "apiserver",
        global = true,
        env = "XLB_API_SERVER",
        default_value = "http://127.0.0.1:11111"
    )]
    api_server: String,
    /// API server port (replaces the one --api-server names).
    #[arg(short = 'p', long, global = true)]
    port: Option<u16>,
    /// CA certificate (PEM) to trust for an https:// API server.
    #[arg(long, global = true, env = "XLB_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Bearer token (client verbs send it; `run` requires it when set).
    #[arg(
        long,
        visible_alias = "token",
        global = true,
        env = "XLB_API_TOKEN",
        hide_env_values = true
    )]
    api_token: Option<String>,
    /// Output format of `get`: a table by default.
    #[arg(short, long, value_enum, global = true)]
    output: Option<Output>,
}

/// The client options `xlb run --help` leaves out.
const CLIENT_ONLY: [&str; 4] = ["api_server", "port", "ca_cert", "output"];

/// The command line: [`Cli`]'s, with the client options hidden in `run`'s
/// help (they are global so that `xlb get lb -s HOST` works as in loxicmd).
fn command() -> clap::Command {
    let cmd = Cli::command();
    // A subcommand that has an argument of a global's id keeps its own (a
    // hidden copy here) instead of receiving the global.
    let hidden: Vec<clap::Arg> = cmd
        .get_arguments()
        .filter(|a| CLIENT_ONLY.contains(&a.get_id().as_str()))
        .map(|a| a.clone().hide(true))
        .collect();
    cmd.mut_subcommand("run", |run| run.args(hidden))
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the daemon: dataplane workers and the REST API.
    Run(RunArgs),
    /// Print xlb's OpenAPI document (what `xlb run` serves at /netlox/v1/openapi.json).
    Openapi,
    /// Print a shell completion script, e.g.
    /// `xlb completion bash > /etc/bash_completion.d/xlb` (as loxicmd's).
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages: xlb.1 and one per command into DIR (for
    /// packaging), or xlb.1 to standard output.
    #[command(hide = true)]
    Man {
        /// Directory to write into.
        dir: Option<PathBuf>,
    },
    #[command(flatten)]
    Client(ClientCmd),
}

/// The operator's verbs: clients of a running daemon's API.
#[derive(Subcommand, Debug)]
enum ClientCmd {
    /// Show rules, probe entries, connections or the cluster-instance state.
    Get {
        /// What to show (loxicmd's names work too: loadbalancer, endpoint,
        /// conntrack, hastate).
        what: GetWhat,
    },
    /// Create a rule or a probe entry.
    Create {
        #[command(subcommand)]
        what: CreateWhat,
    },
    /// Delete a rule or a probe entry.
    Delete {
        #[command(subcommand)]
        what: DeleteWhat,
    },
    /// Write the running config to lbconfig.txt/EPconfig.txt (managed rules
    /// skipped) on this host, and say where.
    Save {
        /// Directory to write into.
        #[arg(short = 'c', long, default_value = config::DEFAULT_DIR)]
        config_path: PathBuf,
        /// Both files (the default).
        #[arg(short = 'a', long, conflicts_with_all = ["lb", "endpoint"])]
        all: bool,
        /// Only lbconfig.txt (the rules).
        #[arg(short = 'l', long)]
        lb: bool,
        /// Only EPconfig.txt (the probe entries).
        #[arg(long)]
        endpoint: bool,
    },
    /// Apply lbconfig.txt- or EPconfig.txt-format files to the running
    /// daemon (each entry as its own request; give EPconfig.txt first).
    /// Exit 1 if an entry is rejected.
    Apply {
        /// The files.
        #[arg(
            short = 'f',
            long = "file",
            visible_alias = "lb",
            visible_short_alias = 'l',
            required = true
        )]
        files: Vec<PathBuf>,
    },
    /// Print xlb's version and commit, and the daemon's if it answers.
    Version,
    /// Live per-VIP packets/s, new flows/s and drops by reason, from the
    /// daemon's metrics (q or Ctrl-C ends it).
    Top {
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Refresh this many times, then exit (0: until stopped).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Check lbconfig.txt/EPconfig.txt without starting anything; exit 1 on a
    /// rejected entry or a missing directory.
    CheckConfig {
        /// Directory to read.
        #[arg(short = 'c', long, default_value = config::DEFAULT_DIR)]
        config_path: PathBuf,
    },
    /// Set a cluster instance's role from keepalived: use as its `notify`
    /// script, `notify "/usr/bin/xlb notify --instance llb-inst0"`;
    /// keepalived appends TYPE NAME STATE PRIORITY. DELETED reads as STOP.
    Notify {
        /// The cluster instance to set (default: keepalived's instance NAME).
        #[arg(long)]
        instance: Option<String>,
        /// The instance's floating address (full-NAT source of its rules).
        #[arg(long)]
        vip: Option<IpAddr>,
        /// keepalived's TYPE (INSTANCE or GROUP).
        kind: String,
        /// keepalived's instance or group NAME.
        name: String,
        /// MASTER, BACKUP, FAULT, STOP or DELETED.
        state: String,
        /// keepalived's priority (ignored).
        priority: Option<String>,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Interface(s) to attach to (repeat or comma-separate).
    #[arg(long, value_delimiter = ',')]
    iface: Vec<String>,
    /// Queues per interface to serve.
    #[arg(long)]
    queues: Option<u32>,
    /// CPU cores for the workers (e.g. 1,2).
    #[arg(long, value_delimiter = ',')]
    cores: Vec<usize>,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value = "auto")]
    xdp_mode: XdpMode,
    /// Busy-poll: workers never sleep, and use preferred busy polling
    /// (SO_PREFER_BUSY_POLL) so each runs its queues' receive NAPI itself, on
    /// its own core. Sets napi_defer_hard_irqs=2 and gro_flush_timeout=200000
    /// on the interfaces where they are 0, and restores them on exit. Lowest
    /// latency and receive work where the worker is; costs a core per worker.
    #[arg(long)]
    busy_poll: bool,
    /// Directory of lbconfig.txt and EPconfig.txt.
    #[arg(long, default_value = config::DEFAULT_DIR)]
    config_path: PathBuf,
    /// API listen address.
    #[arg(long, default_value = "0.0.0.0:11111")]
    api: SocketAddr,
    /// TLS certificate for the API (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS key for the API (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Source addresses for full-NAT rules (mode 2), comma-separated: each
    /// family's addresses form a pool that full-NAT flows are spread over.
    /// Default: the egress port's address.
    #[arg(long, value_delimiter = ',', env = "XLB_SNAT_ADDRS")]
    snat_addrs: Vec<IpAddr>,
    /// Maglev lookup-table size of every hash (sel 1) and persist (sel 3)
    /// rule: a prime from 37 to 16777213. A larger table follows weights
    /// more finely and moves fewer flows when an endpoint changes; it costs
    /// 2 bytes per slot per rule and a rule's rebuild takes proportionally
    /// longer (about 4 ms at 65537). Aim for at least 100 slots per endpoint.
    #[arg(long, env = "XLB_MAGLEV_SIZE", default_value_t = MaglevSize::default())]
    maglev_size: MaglevSize,
    /// Send every IPv4 DSR (mode 3) rule's packets to its endpoints in IPIP,
    /// as the rule field `"dsrIpip": true` does for one rule (for clients
    /// such as kube-loxilb that cannot send it). Endpoints must decapsulate
    /// (an ipip interface) and hold the VIP. IPv6 DSR rules keep the L2 rewrite.
    #[arg(long, env = "XLB_DSR_IPIP", value_parser = clap::builder::BoolishValueParser::new())]
    dsr_ipip: bool,
    /// Serve the API without a dataplane (nothing forwards). With --cluster,
    /// the node is a witness: it votes in the election but never holds VIPs.
    #[arg(long)]
    no_dataplane: bool,
    /// Run xlb's own election among these members (HA): every member's
    /// address as IP or IP:PORT (port 11112 by default), the same list in
    /// the same order on every member, this node included. The elected
    /// member holds the VIPs of every cluster instance no controller set
    /// through POST /config/cistate. Needs a majority: three members (two
    /// balancers and a --no-dataplane witness at least).
    #[arg(long, value_delimiter = ',', env = "XLB_CLUSTER")]
    cluster: Vec<String>,
    /// With --cluster: no election. The members share their connections,
    /// but roles come only through POST /config/cistate (kube-loxilb's
    /// --setRoles, keepalived's notify hook: `xlb notify`), as with
    /// loxilb's --cluster; a member holding a MASTER instance sends its
    /// flows to the others. No witness is needed. Instances no controller
    /// has set are BACKUP (loxilb: NOT_DEFINED, which serves), so a node
    /// that starts claims no VIP before it is given one.
    #[arg(long, env = "XLB_NO_ELECTION", requires = "cluster",
          value_parser = clap::builder::BoolishValueParser::new())]
    no_election: bool,
    /// This node's index in --cluster, from 0.
    #[arg(long = "self", env = "XLB_SELF", requires = "cluster")]
    self_index: Option<usize>,
    /// The key that authenticates cluster traffic, at least 16 bytes, the
    /// same on every member. Prefer the environment variable: arguments are
    /// visible to every user in `ps`.
    #[arg(long, env = "XLB_CLUSTER_KEY", hide_env_values = true)]
    cluster_key: Option<String>,
    /// TCP port of connection-state sync between the --cluster members
    /// (on each member's --cluster address), the same on every member.
    #[arg(long, env = "XLB_SYNC_PORT", default_value_t = xlb_control::sync::DEFAULT_PORT)]
    sync_port: u16,
    /// Connection-table buckets per worker (8 entries of 128 B; a flow takes two).
    #[arg(long, default_value_t = 1 << 15)]
    conntrack_buckets: usize,
    /// Exit if a config-file entry is rejected.
    #[arg(long)]
    strict_config: bool,
    /// Initial log level (loxilb's names; `POST /config/params` changes it).
    #[arg(long, default_value = "info",
          value_parser = clap::builder::PossibleValuesParser::new(xlb_control::model::LOG_LEVELS))]
    log_level: String,
    /// Log lines as text (coloured only on a terminal) or one JSON object each.
    #[arg(long, value_enum, env = "XLB_LOG_FORMAT", default_value = "text")]
    log_format: xlb_control::logging::LogFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum XdpMode {
    Auto,
    Native,
    Generic,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum GetWhat {
    /// Load-balancer rules.
    #[value(aliases = ["loadbalancer", "loadbalancers", "lbs"])]
    Lb,
    /// Health-probe entries.
    #[value(aliases = ["endpoint", "endpoints"])]
    Ep,
    /// Connections.
    #[value(aliases = ["conntrack", "conntracks", "cts"])]
    Ct,
    /// Cluster instances' roles.
    #[value(aliases = ["hastate", "ha"])]
    Cistate,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    /// The API's JSON answer.
    Json,
    /// More columns (rules: one line per endpoint).
    Wide,
}

#[derive(Subcommand, Debug)]
enum CreateWhat {
    /// A load-balancer rule, e.g. `xlb create lb 192.0.2.1 --tcp=80:8080 --endpoints=10.0.0.1:1,10.0.0.2:1`.
    Lb(LbFlags),
    /// A health-probe entry, e.g. `xlb create ep 10.0.0.1 --probetype=tcp --probeport=8080`.
    Ep(EpFlags),
}

#[derive(Subcommand, Debug)]
enum DeleteWhat {
    /// A rule by VIP and ports (`--tcp=80`), or `--all`, or `--name`.
    Lb {
        /// The VIP.
        vip: Option<String>,
        #[command(flatten)]
        ports: PortFlags,
        /// Block (mark) of the rule.
        #[arg(long, visible_alias = "mark", default_value_t = 0)]
        block: u32,
        /// Delete every rule.
        #[arg(long)]
        all: bool,
        /// Delete every rule with this name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Probe entries of a host.
    Ep {
        /// Host address.
        host: String,
        /// Entry name.
        #[arg(long)]
        name: Option<String>,
        /// Probe type.
        #[arg(long)]
        probetype: Option<String>,
        /// Probe port.
        #[arg(long)]
        probeport: Option<u16>,
    },
}

#[derive(Args, Debug, Default)]
struct PortFlags {
    /// TCP ports: "port[-portmax][:targetport]", comma-separated.
    #[arg(long)]
    tcp: Option<String>,
    /// UDP ports.
    #[arg(long)]
    udp: Option<String>,
    /// SCTP ports.
    #[arg(long)]
    sctp: Option<String>,
    /// An ICMP rule.
    #[arg(long)]
    icmp: bool,
}

#[derive(Args, Debug)]
struct LbFlags {
    /// The VIP.
    vip: String,
    #[command(flatten)]
    ports: PortFlags,
    /// Endpoints "ip:weight", comma-separated.
    #[arg(long)]
    endpoints: String,
    /// NAT mode.
    #[arg(long, value_enum, default_value = "dnat")]
    mode: Mode,
    /// Endpoint selection.
    #[arg(long, visible_alias = "select", value_enum, default_value = "rr")]
    sel: Sel,
    /// Health-probe the endpoints.
    #[arg(long)]
    monitor: bool,
    /// Rule name.
    #[arg(long, default_value = "")]
    name: String,
    /// Idle timeout in seconds (0: protocol default).
    #[arg(long, visible_alias = "inatimeout", default_value_t = 0)]
    inactive_timeout: u32,
    /// Block (mark).
    #[arg(long, visible_alias = "mark", default_value_t = 0)]
    block: u32,
    /// Advertise over BGP.
    #[arg(long)]
    bgp: bool,
    /// Probe type: tcp, udp, sctp, ping, none.
    #[arg(long, default_value = "")]
    probetype: String,
    /// Probe port.
    #[arg(long, default_value_t = 0)]
    probeport: u16,
    /// Allowed client prefixes, comma-separated.
    #[arg(long, visible_alias = "sources", default_value = "")]
    allowed_sources: String,
    /// Secondary VIPs (loxilb's SCTP multihoming), comma-separated: xlb
    /// refuses them as unsupported.
    #[arg(long, default_value = "")]
    secips: String,
    /// Add the endpoints to the existing rule (instead of replacing its set).
    #[arg(
        long = "attach-ep",
        visible_alias = "attachEP",
        conflicts_with = "detach_ep"
    )]
    attach_ep: bool,
    /// Remove the endpoints from the existing rule.
    #[arg(long = "detach-ep", visible_alias = "detachEP")]
    detach_ep: bool,
    /// With --mode=dsr and an IPv4 VIP: send packets to the endpoints in
    /// IPIP instead of rewriting only the MACs (xlb's rule field `dsrIpip`).
    #[arg(long)]
    dsr_ipip: bool,
}

#[derive(Args, Debug)]
struct EpFlags {
    /// Host address.
    host: String,
    /// Entry name (default host_type_port).
    #[arg(long, default_value = "")]
    name: String,
    /// tcp, udp, sctp, ping, http, https, none.
    #[arg(long, default_value = "ping")]
    probetype: String,
    /// Port to probe.
    #[arg(long, default_value_t = 0)]
    probeport: u16,
    /// Request (URI for http/https).
    #[arg(long, default_value = "")]
    probereq: String,
    /// Expected response.
    #[arg(long, default_value = "")]
    proberesp: String,
    /// Probe interval in seconds.
    #[arg(long, default_value_t = 0)]
    period: u32,
    /// Failures before down.
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Seconds one probe may take (fractions allowed), below --period (xlb's probeTimeout).
    #[arg(long, allow_hyphen_values = true)]
    probe_timeout: Option<String>,
    /// Successes in a row before a down endpoint is up again (xlb's activeReTries; default 1).
    #[arg(long, allow_hyphen_values = true)]
    active_retries: Option<String>,
}

impl PortFlags {
    fn into_args(self, args: &mut LbArgs) {
        for (proto, v) in [("tcp", self.tcp), ("udp", self.udp), ("sctp", self.sctp)] {
            if let Some(v) = v {
                args.ports.push((proto.to_string(), v));
            }
        }
        args.icmp = self.icmp;
    }
}

fn run(args: RunArgs, token: Option<String>) -> anyhow::Result<()> {
    let setter = xlb_control::logging::init(&args.log_level, args.log_format)?;
    tracing::info!(
        version = xlb_control::version::VERSION,
        commit = xlb_control::version::COMMIT,
        "starting"
    );
    if !args.config_path.is_dir() {
        tracing::warn!(
            "config directory {} does not exist: no lbconfig.txt or EPconfig.txt to load (xlb save -c creates it)",
            args.config_path.display()
        );
    }

    let cluster = cluster_config(&args)?;
    let no_election = args.no_election;
    let sync = cluster.as_ref().map(|c| xlb_control::sync::SyncConfig {
        peers: xlb_control::sync::sync_addrs(&c.members, args.sync_port),
        me: c.me,
        key: c.key.clone(),
    });
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let (dataplane, running) = if args.no_dataplane {
        (Dataplane::none(), None)
    } else {
        let (d, running) = start_dataplane(&args)?;
        (d, Some(running))
    };
    let opts = ServeOptions {
        config_path: args.config_path,
        api: args.api,
        api_token: token,
        strict_config: args.strict_config,
        tls: args.tls_cert.zip(args.tls_key),
        snat_addrs: args.snat_addrs,
        maglev_size: args.maglev_size,
        dsr_ipip: args.dsr_ipip,
        elected: cluster.is_some() && !no_election,
        controlled: cluster.is_some() && no_election,
    };
    let daemon = daemon::prepare(&opts, dataplane, Some((args.log_level, setter)))?;
    if let Some(r) = &running {
        // Weak: the dataplane stops when `running` goes, whoever asks later.
        let r = Arc::downgrade(r);
        daemon.api.readiness().add(
            "dataplane",
            Box::new(move || r.upgrade().map_or(Err("stopped".into()), |r| r.check())),
        );
    }
    let served = rt.block_on(async {
        reload_on_sighup(daemon.controller.handle(), opts.config_path.clone())?;
        xlb_control::health::spawn(daemon.controller.handle());
        // Connection sync first, so that the election can ask it whether
        // this node has the holder's flows before it may campaign.
        let sync = match (sync, running.as_ref().and_then(|r| r.take_sync_hub())) {
            (Some(cfg), Some((hub, table))) => {
                Some(daemon::start_sync(cfg, hub, Arc::new(table), &daemon).await?)
            }
            _ => None,
        };
        let ready: xlb_control::ha::Readiness = match &sync {
            Some(s) => {
                let s = Arc::downgrade(s);
                Arc::new(move |holder| s.upgrade().is_some_and(|s| s.complete_from(holder)))
            }
            None => Arc::new(|_| true),
        };
        let election = match cluster {
            Some(cfg) if !no_election => Some(daemon::start_election(cfg, &daemon, ready).await?),
            _ => None,
        };
        let served = daemon::serve(&opts, daemon.api.clone(), shutdown_signal()).await;
        if let Some(e) = election {
            e.stop().await;
        }
        if let Some(s) = sync {
            s.stop();
        }
        anyhow::Ok(served)
    })?;
    // The API and the prober are done: stop the controller, then take xlb's
    // addresses off the host.
    drop(rt);
    drop(daemon);
    if let Some(running) = running {
        running.shutdown();
    }
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// The election's configuration from `--cluster`, `--self` and the key
/// (`None` without `--cluster`).
fn cluster_config(args: &RunArgs) -> anyhow::Result<Option<xlb_control::ha::ClusterConfig>> {
    if args.cluster.is_empty() {
        return Ok(None);
    }
    let members = args
        .cluster
        .iter()
        .map(|m| parse_member(m).ok_or_else(|| anyhow!("--cluster: {m:?} is not an IP or IP:PORT")))
        .collect::<anyhow::Result<Vec<SocketAddr>>>()?;
    let cfg = xlb_control::ha::ClusterConfig {
        members,
        me: args
            .self_index
            .ok_or_else(|| anyhow!("--cluster needs --self (this node's index in the list)"))?,
        key: args.cluster_key.clone().unwrap_or_default().into_bytes(),
        candidate: !args.no_dataplane,
    };
    if args.no_election {
        cfg.validate_group()?;
    } else {
        cfg.validate()?;
    }
    Ok(Some(cfg))
}

/// A member as `IP`, `IP:PORT` or `[IPv6]:PORT`.
fn parse_member(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    s.parse::<SocketAddr>().ok().or_else(|| {
        s.parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, xlb_control::ha::DEFAULT_PORT))
    })
}

/// Start the AF_XDP workers on `args.iface`.
fn start_dataplane(args: &RunArgs) -> anyhow::Result<(Dataplane, Arc<afxdp::Running>)> {
    let opts = afxdp::DataplaneOptions {
        ifaces: args.iface.clone(),
        queues: args.queues,
        cores: (!args.cores.is_empty()).then(|| args.cores.clone()),
        xdp_mode: match args.xdp_mode {
            XdpMode::Auto | XdpMode::Native => xlb_io::XdpMode::Native,
            XdpMode::Generic => xlb_io::XdpMode::Generic,
        },
        busy_poll: args.busy_poll,
        conntrack_buckets: args.conntrack_buckets,
        // Members of a cluster share their flows.
        sync: !args.cluster.is_empty(),
    };
    afxdp::start(&opts).context("starting the dataplane")
}

/// SIGHUP loads the config files again, all or nothing (a rejected entry
/// changes nothing and the log says why), as `check-config` would judge
/// them; the daemon goes on either way. (Without a handler, SIGHUP would
/// end the process without taking its addresses or XDP programs off the
/// host.)
fn reload_on_sighup(
    control: xlb_control::controller::ControlHandle,
    dir: std::path::PathBuf,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("handling SIGHUP")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!(dir = %dir.display(), "SIGHUP: loading the config files again");
            if let Err(e) = control
                .apply(xlb_control::controller::Command::Reload(dir.clone()))
                .await
            {
                tracing::error!("reloading the config files: {e}");
            }
        }
    });
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    out(&format!("{}\n", serde_json::to_string_pretty(v)?))
}

/// Write `text` to standard output. A reader that went away (`xlb get lb |
/// head`) is a [`std::io::ErrorKind::BrokenPipe`] error, which `main` ends
/// quietly on (`println!` would panic, and Rust ignores SIGPIPE).
fn out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes())?;
    o.flush()?;
    Ok(())
}

/// Whether `e` is standard output's reader having gone away.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn client_cmd(c: &Client, output: Option<Output>, cmd: ClientCmd) -> anyhow::Result<()> {
    match cmd {
        ClientCmd::Get { what } => {
            let wide = output == Some(Output::Wide);
            let path = match what {
                GetWhat::Lb => "/config/loadbalancer/all",
                GetWhat::Ep => "/config/endpoint/all",
                GetWhat::Ct => "/config/conntrack/all",
                GetWhat::Cistate => "/config/cistate/all",
            };
            let v = c.call("GET", path, None)?;
            if output == Some(Output::Json) {
                return print_json(&v);
            }
            let text = match what {
                GetWhat::Lb => cli::lb_table(&from_json(v)?, wide),
                GetWhat::Ep => cli::ep_table(&from_json(v)?, wide),
                GetWhat::Ct => {
                    let l: Vec<CtAttr> =
                        serde_json::from_value(v.get("ctAttr").cloned().unwrap_or(json!([])))?;
                    cli::ct_table(&l)
                }
                GetWhat::Cistate => {
                    let l: Vec<CiStateOut> =
                        serde_json::from_value(v.get("Attr").cloned().unwrap_or(json!([])))?;
                    cli::ci_table(&l)
                }
            };
            out(&text)?;
        }
        ClientCmd::Create { what } => match what {
            CreateWhat::Lb(f) => {
                let mut a = LbArgs {
                    vip: f.vip,
                    endpoints: f.endpoints,
                    mode: f.mode,
                    sel: f.sel,
                    monitor: f.monitor,
                    name: f.name,
                    inactive_timeout: f.inactive_timeout,
                    block: f.block,
                    bgp: f.bgp,
                    probetype: f.probetype,
                    probeport: f.probeport,
                    allowed: f.allowed_sources,
                    secips: f.secips,
                    oper: match (f.attach_ep, f.detach_ep) {
                        (true, _) => Oper::Attach,
                        (_, true) => Oper::Detach,
                        _ => Oper::Replace,
                    },
                    dsr_ipip: f.dsr_ipip,
                    ..Default::default()
                };
                f.ports.into_args(&mut a);
                for body in cli::lb_bodies(&a)? {
                    c.call("POST", "/config/loadbalancer", Some(&body))?;
                }
                out("Success\n")?;
            }
            CreateWhat::Ep(f) => {
                let body = cli::ep_body(&cli::EpArgs {
                    host: f.host,
                    name: f.name,
                    probetype: f.probetype,
                    probeport: f.probeport,
                    probereq: f.probereq,
                    proberesp: f.proberesp,
                    period: f.period,
                    retries: f.retries,
                    probe_timeout: f.probe_timeout,
                    active_retries: f.active_retries,
                })?;
                c.call("POST", "/config/endpoint", Some(&body))?;
                out("Success\n")?;
            }
        },
        ClientCmd::Delete { what } => match what {
            DeleteWhat::Lb {
                vip,
                ports,
                block,
                all,
                name,
            } => {
                if all {
                    c.call("DELETE", "/config/loadbalancer/all", None)?;
                } else if let Some(n) = name {
                    c.call("DELETE", &format!("/config/loadbalancer/name/{n}"), None)?;
                } else {
                    let mut a = LbArgs {
                        vip: vip.ok_or_else(|| anyhow!("give a VIP, --all or --name"))?,
                        block,
                        ..Default::default()
                    };
                    ports.into_args(&mut a);
                    for p in cli::lb_delete_paths(&a)? {
                        c.call("DELETE", &p, None)?;
                    }
                }
                out("Success\n")?;
            }
            DeleteWhat::Ep {
                host,
                name,
                probetype,
                probeport,
            } => {
                let mut q = Vec::new();
                if let Some(n) = name {
                    q.push(format!("name={n}"));
                }
                if let Some(t) = probetype {
                    q.push(format!("probe_type={t}"));
                }
                if let Some(p) = probeport {
                    q.push(format!("probe_port={p}"));
                }
                let q = if q.is_empty() {
                    String::new()
                } else {
                    format!("?{}", q.join("&"))
                };
                c.call(
                    "DELETE",
                    &format!("/config/endpoint/epipaddress/{host}{q}"),
                    None,
                )?;
                out("Success\n")?;
            }
        },
        ClientCmd::Save {
            config_path,
            all: _,
            lb,
            endpoint,
        } => {
            // Neither --lb nor --endpoint: both (loxicmd's --all).
            let what = cli::SaveWhat {
                rules: lb || !endpoint,
                probe_entries: endpoint || !lb,
            };
            let written = cli::save_files(&config_path, &c.rules()?, &c.endpoints()?, what)?;
            let mut text = String::new();
            for (file, n) in &written {
                text.push_str(&format!("saved {n} entries in {}\n", file.display()));
            }
            if !c.is_local() {
                // The files are on this host; the daemon reads its own.
                text.push_str(&format!(
                    "note: written on this host, not where the daemon at {} runs: copy them to its --config-path\n",
                    c.server()
                ));
            }
            out(&text)?;
        }
        ClientCmd::Apply { files } => {
            let mut rejected = 0;
            for file in &files {
                let r = c.apply_file(file)?;
                for e in &r.rejected {
                    eprintln!("{e}");
                }
                rejected += r.rejected.len();
                let kind = match r.kind {
                    cli::ApplyKind::Rules => "rules",
                    cli::ApplyKind::ProbeEntries => "probe entries",
                };
                out(&format!(
                    "{}: {} {kind} applied, {} already there, {} rejected\n",
                    file.display(),
                    r.applied,
                    r.unchanged,
                    r.rejected.len()
                ))?;
            }
            if rejected > 0 {
                return Err(anyhow!("{rejected} entries rejected"));
            }
        }
        ClientCmd::Version => {
            out(&format!("xlb {}\n", xlb_control::version::LONG))?;
            let daemon = match c.call("GET", "/version", None) {
                Ok(v) => format!(
                    "daemon at {}: {}\n",
                    c.server(),
                    v.get("buildInfo")
                        .and_then(Value::as_str)
                        .map_or_else(|| v.to_string(), str::to_string)
                ),
                Err(e) => format!("daemon at {}: {e}\n", c.server()),
            };
            out(&daemon)?;
        }
        ClientCmd::Top { interval, count } => {
            if !(0.1..=3600.0).contains(&interval) {
                return Err(anyhow!(
                    "--interval {interval}: give seconds from 0.1 to 3600"
                ));
            }
            xlb_control::top::run(c, std::time::Duration::from_secs_f64(interval), count)?;
        }
        ClientCmd::Notify {
            instance,
            vip,
            name,
            state,
            ..
        } => {
            let state = match state.as_str() {
                "DELETED" => "STOP".to_string(),
                s => s.to_string(),
            };
            let body = json!({
                "instance": instance.unwrap_or(name),
                "state": state,
                "vip": vip.map(|v| v.to_string()).unwrap_or_default(),
            });
            c.call("POST", "/config/cistate", Some(&body))?;
        }
        ClientCmd::CheckConfig { config_path } => {
            if !config_path.is_dir() {
                return Err(anyhow!(
                    "config directory {} does not exist or is not a directory",
                    config_path.display()
                ));
            }
            let mut state = ControlState::new(
                Arc::new(Unattached::default()),
                Arc::new(StaticNet::default()),
            );
            let report = config::load(&mut state, &config_path);
            for e in &report.errors {
                eprintln!("{e}");
            }
            out(&format!(
                "{} rules, {} probe entries loaded; {} rejected\n",
                report.rules,
                report.endpoints,
                report.errors.len()
            ))?;
            if !report.is_clean() {
                return Err(anyhow!("config has rejected entries"));
            }
        }
    }
    Ok(())
}

/// `xlb completion SHELL`: the script, from the CLI definition.
fn completion(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command(), "xlb", &mut script);
    out(&String::from_utf8(script).context("the completion script is not UTF-8")?)
}

/// `xlb man [DIR]`: the man pages, from the CLI definition.
fn man(dir: Option<PathBuf>) -> anyhow::Result<()> {
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(command(), &dir)
                .with_context(|| format!("writing the man pages into {}", dir.display()))
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command()).render(&mut page)?;
            out(&String::from_utf8_lossy(&page))
        }
    }
}

fn main() -> ExitCode {
    let cli = match command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let conn = cli.conn;
    let result = match cli.cmd {
        Cmd::Run(args) => run(args, conn.api_token),
        Cmd::Openapi => print_json(&xlb_control::api::openapi::document()),
        Cmd::Completion { shell } => completion(shell),
        Cmd::Man { dir } => man(dir),
        Cmd::Client(cmd) => {
            let server = cli::server_url(&conn.api_server, conn.port);
            let client = Client::new(&server, conn.api_token);
            match conn.ca_cert {
                Some(ca) => client.with_ca_cert(&ca).map_err(anyhow::Error::from),
                None => Ok(client),
            }
            .and_then(|c| client_cmd(&c, conn.output, cmd))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
