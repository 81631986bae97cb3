//! `GET /netlox/v1/metrics`: Prometheus text exposition (format 0.0.4) of the
//! rules, endpoints and their state, per-worker traffic and drops by reason,
//! connection-table occupancy, and the cluster: each instance's role, its
//! changes and the time since the last, and the election's members and
//! datagrams; and ([`render_sync`]) connection sync between the members.
//!
//! Beside the `xlb_*` families, loxilb's own names ([`loxilb`]) carry the
//! same values, so dashboards and alerts written for loxilb work unchanged:
//! its legacy names (gauges, as loxilb publishes them) and its canonical
//! `loxilb_*` names. control/README.md lists which of loxilb's families
//! xlb has and which it leaves out.

use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::controller::{ControlState, EndpointRow, Role};
use crate::dataplane::{DataplaneView, WorkerStats};

/// Content type of the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: u64) {
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
            .collect();
        if l.is_empty() {
            let _ = writeln!(self.0, "{name} {v}");
        } else {
            let _ = writeln!(self.0, "{name}{{{}}} {v}", l.join(","));
        }
    }
}

/// The rule label of xlb's families: "VIP:PORT[-PORTMAX]/PROTO".
fn rule_label(k: &xlb_dataplane::tables::ServiceKey) -> String {
    if k.port_max != k.port_min {
        format!("{}:{}-{}/{}", k.vip, k.port_min, k.port_max, k.proto.name())
    } else {
        format!("{}:{}/{}", k.vip, k.port_min, k.proto.name())
    }
}

/// Render every metric.
pub fn render(state: &ControlState, view: &dyn DataplaneView) -> String {
    let mut o = Out(String::new());
    o.family(
        "xlb_build_info",
        "gauge",
        "Always 1: the version and commit xlb was built from.",
    );
    o.sample(
        "xlb_build_info",
        &[
            ("version", crate::version::VERSION),
            ("commit", crate::version::COMMIT),
        ],
        1,
    );
    let rules: Vec<_> = state.rules().collect();
    o.family("xlb_rules", "gauge", "Load-balancer rules configured.");
    o.sample("xlb_rules", &[], rules.len() as u64);
    o.family(
        "xlb_tables_generation",
        "gauge",
        "Generation of the table snapshot the dataplane reads.",
    );
    o.sample("xlb_tables_generation", &[], state.tables().generation);

    let rows = state.endpoint_rows(view);
    let active = rows.iter().filter(|r| r.up).count() as u64;
    o.family("xlb_endpoints", "gauge", "Endpoints by health state.");
    o.sample("xlb_endpoints", &[("state", "active")], active);
    o.sample(
        "xlb_endpoints",
        &[("state", "inactive")],
        rows.len() as u64 - active,
    );
    let label = |r: &EndpointRow<'_>| {
        let rule = rule_label(&r.rule.service.key);
        let ep = format!("{}:{}", r.endpoint.addr, r.endpoint.port);
        (rule, ep, r.rule.doc.serviceargs.name.clone())
    };
    for (name, kind, help, f) in [
        (
            "xlb_endpoint_up",
            "gauge",
            "1 if the endpoint takes new flows, 0 if health probing marked it down.",
            (|r: &EndpointRow<'_>| u64::from(r.up)) as fn(&_) -> u64,
        ),
        (
            "xlb_endpoint_packets_total",
            "counter",
            "Packets sent to the endpoint.",
            |r| r.packets,
        ),
        (
            "xlb_endpoint_bytes_total",
            "counter",
            "Bytes sent to the endpoint.",
            |r| r.bytes,
        ),
        (
            "xlb_endpoint_new_flows_total",
            "counter",
            "Flows opened to the endpoint.",
            |r| r.new_flows,
        ),
    ] {
        o.family(name, kind, help);
        for r in &rows {
            let (rule, ep, n) = label(r);
            o.sample(
                name,
                &[("rule", &rule), ("name", &n), ("endpoint", &ep)],
                f(r),
            );
        }
    }

    o.family(
        "xlb_rule_new_flows_total",
        "counter",
        "Flows opened to the rule's endpoints (its rate is the rule's new flows per second).",
    );
    for (r, n) in per_rule(&rows, |r| r.new_flows) {
        let (rule, _, name) = label(r);
        o.sample(
            "xlb_rule_new_flows_total",
            &[("rule", &rule), ("name", &name)],
            n,
        );
    }

    let workers = view.worker_stats();
    for (name, help, f) in [
        (
            "xlb_worker_rx_packets_total",
            "Frames received.",
            (|w: &WorkerStats| w.rx_packets) as fn(&_) -> u64,
        ),
        ("xlb_worker_rx_bytes_total", "Bytes received.", |w| {
            w.rx_bytes
        }),
        ("xlb_worker_tx_packets_total", "Frames transmitted.", |w| {
            w.tx_packets
        }),
        ("xlb_worker_tx_bytes_total", "Bytes transmitted.", |w| {
            w.tx_bytes
        }),
    ] {
        o.family(name, "counter", help);
        for w in &workers {
            o.sample(name, &[("worker", &w.worker.to_string())], f(w));
        }
    }
    o.family(
        "xlb_worker_drops_total",
        "counter",
        "Frames dropped, by reason.",
    );
    for w in &workers {
        for (reason, n) in &w.drops {
            o.sample(
                "xlb_worker_drops_total",
                &[("worker", &w.worker.to_string()), ("reason", reason.name())],
                *n,
            );
        }
    }
    o.family(
        "xlb_worker_io_drops_total",
        "counter",
        "Frames lost in packet I/O (rings, ports), by cause.",
    );
    for w in &workers {
        for (cause, n) in &w.io_drops {
            o.sample(
                "xlb_worker_io_drops_total",
                &[("worker", &w.worker.to_string()), ("cause", cause)],
                *n,
            );
        }
    }
    o.family(
        "xlb_xdp_programs_removed_total",
        "counter",
        "Times a served interface was found without xlb's XDP program (removed by someone else).",
    );
    o.sample(
        "xlb_xdp_programs_removed_total",
        &[],
        view.xdp_programs_removed(),
    );
    o.family(
        "xlb_worker_tx_deferred_total",
        "counter",
        "Frames that waited for room on a full TX ring (sent later).",
    );
    for w in &workers {
        o.sample(
            "xlb_worker_tx_deferred_total",
            &[("worker", &w.worker.to_string())],
            w.tx_deferred,
        );
    }
    o.family(
        "xlb_worker_flows_evicted_total",
        "counter",
        "Flows evicted before their time because their conntrack bucket was full.",
    );
    for w in &workers {
        o.sample(
            "xlb_worker_flows_evicted_total",
            &[("worker", &w.worker.to_string())],
            w.flows_evicted,
        );
    }
    o.family(
        "xlb_worker_new_flow_fallbacks_total",
        "counter",
        "New flows the dedicated new-flow path left to the general path, by reason.",
    );
    for w in &workers {
        for (reason, n) in &w.fast_path_exits {
            o.sample(
                "xlb_worker_new_flow_fallbacks_total",
                &[("worker", &w.worker.to_string()), ("reason", reason.name())],
                *n,
            );
        }
    }
    o.family(
        "xlb_conntrack_entries",
        "gauge",
        "Conntrack entries in use (two per flow: forward and reply, one for DSR).",
    );
    for w in &workers {
        o.sample(
            "xlb_conntrack_entries",
            &[("worker", &w.worker.to_string())],
            w.ct_entries,
        );
    }
    o.family(
        "xlb_conntrack_capacity",
        "gauge",
        "Connection-table capacity.",
    );
    for w in &workers {
        o.sample(
            "xlb_conntrack_capacity",
            &[("worker", &w.worker.to_string())],
            w.ct_capacity,
        );
    }
    cluster(&mut o, state);
    loxilb(&mut o, rules.len() as u64, &rows, &workers);
    o.0
}

/// `f` summed over each rule's endpoint rows, with the rule's first row
/// (for its labels), in rule order (a rule's rows are consecutive).
fn per_rule<'r, 'a>(
    rows: &'r [EndpointRow<'a>],
    f: impl Fn(&EndpointRow<'a>) -> u64,
) -> Vec<(&'r EndpointRow<'a>, u64)> {
    let mut out: Vec<(&EndpointRow<'a>, u64)> = Vec::new();
    for r in rows {
        match out.last_mut() {
            Some((first, n)) if std::ptr::eq(first.rule, r.rule) => *n += f(r),
            _ => out.push((r, f(r))),
        }
    }
    out
}

/// How often loxilb's `new_flow_count` / `loxilb_new_flows` gauge moves on:
/// it holds the flows opened during the last whole period, as loxilb's
/// exporter computes it every 10 s.
const NEW_FLOW_PERIOD: Duration = Duration::from_secs(10);

/// (start of the current period, new flows counted then, the gauge's value).
static NEW_FLOW_WINDOW: Mutex<Option<(Instant, u64, u64)>> = Mutex::new(None);

/// loxilb's gauge of new flows: flows opened in the last whole period.
fn new_flow_gauge(total: u64, now: Instant) -> u64 {
    let mut w = NEW_FLOW_WINDOW.lock().unwrap_or_else(|e| e.into_inner());
    match *w {
        None => {
            *w = Some((now, total, 0));
            0
        }
        Some((start, at_start, _)) if now.duration_since(start) >= NEW_FLOW_PERIOD => {
            let v = total.saturating_sub(at_start);
            *w = Some((now, total, v));
            v
        }
        Some((_, _, value)) => value,
    }
}

/// loxilb's names for what xlb measures: each legacy name (a gauge in
/// loxilb, also for totals) and its canonical `loxilb_*` name.
fn loxilb(o: &mut Out, rules: u64, rows: &[EndpointRow<'_>], workers: &[WorkerStats]) {
    let sum = |f: fn(&WorkerStats) -> u64| workers.iter().map(f).sum::<u64>();
    let up = rows.iter().filter(|r| r.up).count() as u64;
    let new_flows = new_flow_gauge(rows.iter().map(|r| r.new_flows).sum(), Instant::now());
    let proto = |p: &str, f: fn(&EndpointRow<'_>) -> u64| {
        rows.iter()
            .filter(|r| r.rule.service.key.proto.name() == p)
            .map(f)
            .sum::<u64>()
    };
    // (legacy name or "", canonical name or "", kind of the canonical, help, value)
    let scalars: [(&str, &str, &str, &str, u64); 8] = [
        (
            "lb_rule_count",
            "loxilb_lb_rules",
            "gauge",
            "Load-balancer rules.",
            rules,
        ),
        (
            "healthy_host_count",
            "loxilb_healthy_endpoints",
            "gauge",
            "Endpoints that take new flows.",
            up,
        ),
        (
            "unhealthy_host_count",
            "loxilb_unhealthy_endpoints",
            "gauge",
            "Endpoints health probing marked down.",
            rows.len() as u64 - up,
        ),
        (
            "active_conntrack_count",
            "loxilb_active_conntrack_entries",
            "gauge",
            "Connection-table entries in use (two per flow: forward and reply, one for DSR).",
            sum(|w| w.ct_entries),
        ),
        (
            "",
            "loxilb_conntrack_max_entries",
            "gauge",
            "Connection-table capacity.",
            sum(|w| w.ct_capacity),
        ),
        (
            "new_flow_count",
            "loxilb_new_flows",
            "gauge",
            "Flows opened in the last 10 s period (xlb_rule_new_flows_total is the counter).",
            new_flows,
        ),
        (
            "processed_packets",
            "loxilb_processed_packets_total",
            "counter",
            "Packets received by the dataplane.",
            sum(|w| w.rx_packets),
        ),
        (
            "processed_bytes",
            "loxilb_processed_bytes_total",
            "counter",
            "Bytes received by the dataplane, headers included.",
            sum(|w| w.rx_bytes),
        ),
    ];
    let mut emit = |legacy: &str, canonical: &str, kind: &str, help: &str, v: u64| {
        if !legacy.is_empty() {
            o.family(
                legacy,
                "gauge",
                &format!("{help} (loxilb's name; see {canonical})."),
            );
            o.sample(legacy, &[], v);
        }
        o.family(canonical, kind, &format!("{help} (loxilb's name)."));
        o.sample(canonical, &[], v);
    };
    for (legacy, canonical, kind, help, v) in scalars {
        emit(legacy, canonical, kind, help, v);
    }
    for p in ["tcp", "udp", "sctp"] {
        let upper = p.to_uppercase();
        emit(
            &format!("processed_{p}_bytes"),
            &format!("loxilb_processed_{p}_bytes_total"),
            "counter",
            &format!("Bytes of {upper} rules' flows."),
            proto(p, |r| r.bytes),
        );
        // loxilb has no legacy name for packets per protocol.
        emit(
            "",
            &format!("loxilb_processed_{p}_packets_total"),
            "counter",
            &format!("Packets of {upper} rules' flows."),
            proto(p, |r| r.packets),
        );
    }

    // Per service ("VIP:PORT", with the protocol as its own label) and per
    // endpoint of a service.
    let service = |r: &EndpointRow<'_>| {
        let k = r.rule.service.key;
        let port = if k.port_max != k.port_min {
            format!("{}-{}", k.port_min, k.port_max)
        } else {
            k.port_min.to_string()
        };
        (format!("{}:{port}", k.vip), k.proto.name())
    };
    for (name, help, f) in [
        (
            "loxilb_service_traffic_packets_total",
            "Packets of the service's flows (loxilb's name).",
            (|r: &EndpointRow<'_>| r.packets) as fn(&_) -> u64,
        ),
        (
            "loxilb_service_traffic_bytes_total",
            "Bytes of the service's flows (loxilb's name).",
            |r| r.bytes,
        ),
    ] {
        o.family(name, "counter", help);
        for (r, n) in per_rule(rows, f) {
            let (svc, proto) = service(r);
            o.sample(name, &[("service", &svc), ("proto", proto)], n);
        }
    }
    for (name, help, f) in [
        (
            "loxilb_backend_traffic_packets_total",
            "Packets of the flows to the endpoint (loxilb's name).",
            (|r: &EndpointRow<'_>| r.packets) as fn(&_) -> u64,
        ),
        (
            "loxilb_backend_traffic_bytes_total",
            "Bytes of the flows to the endpoint (loxilb's name).",
            |r| r.bytes,
        ),
        (
            "loxilb_backend_traffic_connections_total",
            "Flows opened to the endpoint (loxilb's name).",
            |r| r.new_flows,
        ),
    ] {
        o.family(name, "counter", help);
        for r in rows {
            let (svc, proto) = service(r);
            let ep = format!("{}:{}", r.endpoint.addr, r.endpoint.port);
            o.sample(
                name,
                &[("service", &svc), ("proto", proto), ("endpoint", &ep)],
                f(r),
            );
        }
    }
}

/// The cluster instances' roles, and with `--cluster` the election's view.
fn cluster(o: &mut Out, state: &ControlState) {
    let rows = state.instances().role_rows();
    o.family(
        "xlb_cluster_role",
        "gauge",
        "1 for the role each cluster instance has on this node, 0 for the others.",
    );
    for r in &rows {
        for role in Role::ALL {
            o.sample(
                "xlb_cluster_role",
                &[("instance", &r.instance), ("role", role.name())],
                u64::from(r.role == role),
            );
        }
    }
    o.family(
        "xlb_cluster_role_transitions_total",
        "counter",
        "Role changes of each cluster instance on this node since xlb started.",
    );
    for r in &rows {
        o.sample(
            "xlb_cluster_role_transitions_total",
            &[("instance", &r.instance)],
            r.transitions,
        );
    }
    o.family(
        "xlb_cluster_role_unchanged_seconds",
        "gauge",
        "Seconds since each cluster instance's role last changed (or xlb started).",
    );
    for r in &rows {
        o.sample(
            "xlb_cluster_role_unchanged_seconds",
            &[("instance", &r.instance)],
            r.since.as_secs(),
        );
    }
    let Some((members, datagrams)) = state.instances().election() else {
        return;
    };
    o.family(
        "xlb_cluster_member_up",
        "gauge",
        "1 if the election heard from the member recently (this node: always).",
    );
    for m in members {
        let addr = m.addr.to_string();
        o.sample(
            "xlb_cluster_member_up",
            &[("member", &addr)],
            u64::from(m.up),
        );
    }
    o.family(
        "xlb_cluster_members_up",
        "gauge",
        "Members of the election heard from recently, this node included.",
    );
    let up = members.iter().filter(|m| m.up).count() as u64;
    o.sample("xlb_cluster_members_up", &[], up);
    o.family(
        "xlb_cluster_datagrams_total",
        "counter",
        "The election's datagrams by outcome: accepted, or dropped as malformed, foreign, bad_auth, replayed or bad_body; timeouts are calls that got no answer.",
    );
    for (outcome, n) in datagrams {
        o.sample("xlb_cluster_datagrams_total", &[("outcome", outcome)], *n);
    }
}

/// Connection sync (`crate::sync`): events sent, received, delivered and
/// lost, frames refused, each peer's state, and the sync lag of new flows
/// (the opening node's first packet → handed to a worker here).
pub fn render_sync(s: &crate::sync::SyncStatus) -> String {
    let mut o = Out(String::new());
    for (name, help, v) in [
        (
            "xlb_sync_events_sent_total",
            "Flow events sent to peers (each peer counted).",
            s.sent,
        ),
        (
            "xlb_sync_bytes_sent_total",
            "Bytes of sync frames sent to peers (each peer counted; TCP/IP headers aside).",
            s.bytes_sent,
        ),
        (
            "xlb_sync_delivered_total",
            "Received flow events handed to a worker.",
            s.delivered,
        ),
        (
            "xlb_sync_queue_dropped_total",
            "Flow events lost because a worker's sync queue to control was full.",
            s.queue_dropped,
        ),
        (
            "xlb_sync_delivery_refused_total",
            "Received flow events lost because a worker's sync queue from control was full.",
            s.delivery_refused,
        ),
        (
            "xlb_sync_discarded_inactive_total",
            "Flow events not sent because this node did not hold the VIPs.",
            s.discarded_inactive,
        ),
        (
            "xlb_sync_peer_overflows_total",
            "Peer connections dropped because the peer fell too far behind.",
            s.peer_overflows,
        ),
    ] {
        o.family(name, "counter", help);
        o.sample(name, &[], v);
    }
    o.family(
        "xlb_sync_events_received_total",
        "counter",
        "Flow events received, by kind: open (a new flow), refresh (from a dump or refresh), close.",
    );
    for (kind, n) in &s.received {
        o.sample("xlb_sync_events_received_total", &[("kind", kind)], *n);
    }
    o.family(
        "xlb_sync_frames_rejected_total",
        "counter",
        "Sync handshakes and frames refused (the connection is dropped), by reason.",
    );
    for (reason, n) in &s.rejected {
        o.sample("xlb_sync_frames_rejected_total", &[("reason", reason)], *n);
    }
    for (name, help, f) in [
        (
            "xlb_sync_peer_up",
            "1 if the sync connections to and from the peer are both up.",
            (|p: &crate::sync::PeerStatus| u64::from(p.outbound_up && p.inbound_up))
                as fn(&_) -> u64,
        ),
        (
            "xlb_sync_dump_complete",
            "1 if the peer's full table arrived on its current connection.",
            |p| u64::from(p.dump_complete),
        ),
    ] {
        o.family(name, "gauge", help);
        for p in &s.peers {
            o.sample(name, &[("peer", &p.addr.to_string())], f(p));
        }
    }
    let name = "xlb_sync_lag_seconds";
    o.family(
        name,
        "histogram",
        "Sync lag of new flows: the opening node's first packet to the flow's hand-over to a worker here.",
    );
    let bounds = crate::sync::LAG_BUCKETS
        .iter()
        .map(|b| b.to_string())
        .chain(std::iter::once("+Inf".to_string()));
    for (le, n) in bounds.zip(&s.lag.cumulative) {
        o.sample(&format!("{name}_bucket"), &[("le", &le)], *n);
    }
    let _ = writeln!(o.0, "{name}_sum {}", s.lag.sum_seconds);
    o.sample(&format!("{name}_count"), &[], s.lag.count);
    o.0
}
