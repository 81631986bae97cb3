//! The loxilb-compatible REST API (`/netlox/v1`): routing, request checks in
//! go-openapi's order, handlers, and loxilb's exact response shapes.
//!
//! Routing is a table of every path in loxilb's swagger, so that a path xlb does
//! not implement answers 501 with a clear error, an unknown path 404 and a known
//! path with the wrong method 405 with `Allow` — never a silent 200. Order of
//! checks per request: path (404) → method (405) → auth (401) → content type of
//! a body (415) → body parse (400) → schema (422) → handler (400/403/404/409).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Instant;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use serde::Serialize;
use serde_json::json;
use tokio::sync::Mutex;
use xlb_dataplane::tables::ServiceKey;

use crate::env::DataplaneView;
use crate::error::{ApiError, RuleError};
use crate::model::{
    parse_body, CiStateIn, CtAttr, EpHostState, EpProbe, EpStatusList, LbRule, LbRuleList,
    OperParams,
};
use crate::rules::parse_proto;
use crate::state::{ControlState, RuleOp};

/// The API's base path.
pub const BASE: &str = "/netlox/v1";
/// Largest request body accepted.
pub const MAX_BODY: usize = 4 << 20;

/// What a route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `GET /netlox/v1`: liveness.
    Liveness,
    /// Create/replace/attach/detach a rule.
    LbPost,
    /// List rules.
    LbAll,
    /// Delete every rule.
    LbDeleteAll,
    /// Delete rules by name.
    LbDeleteName,
    /// Delete one rule by identity (the four path shapes).
    LbDelete,
    /// Add/update a probe entry.
    EpPost,
    /// List probe entries.
    EpAll,
    /// Delete probe entries.
    EpDelete,
    /// Hold a host's endpoints down or release them.
    EpHostState,
    /// Set the cluster-instance state.
    CiPost,
    /// List cluster-instance states.
    CiAll,
    /// List connections.
    CtAll,
    /// Process status.
    StatusProcess,
    /// Device status.
    StatusDevice,
    /// Version.
    Version,
    /// Prometheus metrics.
    Metrics,
    /// Read operational parameters.
    ParamsGet,
    /// Set operational parameters.
    ParamsPost,
    /// xlb's OpenAPI document.
    OpenApi,
    /// A loxilb path xlb does not implement.
    Unsupported,
}

/// A path and what each method does on it.
#[derive(Debug)]
pub struct Route {
    /// Path below [`BASE`], `{name}` for parameters.
    pub path: &'static str,
    /// (method, operation).
    pub methods: &'static [(&'static str, Op)],
}

macro_rules! routes {
    ($($path:literal => [$($m:literal : $op:ident),*]),* $(,)?) => {
        &[$(Route { path: $path, methods: &[$(($m, Op::$op)),*] }),*]
    };
}

/// Every path of loxilb's swagger (plus xlb's own document), in swagger order.
pub const ROUTES: &[Route] = routes![
    "" => ["GET": Liveness],
    "/openapi.json" => ["GET": OpenApi],
    "/meta" => ["GET": Unsupported],
    "/auth/login" => ["POST": Unsupported],
    "/auth/logout" => ["POST": Unsupported],
    "/auth/users" => ["GET": Unsupported, "POST": Unsupported],
    "/auth/users/{id}" => ["DELETE": Unsupported, "PUT": Unsupported],
    "/auth/token/upgrade" => ["POST": Unsupported],
    "/config/loadbalancer" => ["POST": LbPost],
    "/config/loadbalancer/all" => ["GET": LbAll, "DELETE": LbDeleteAll],
    "/config/loadbalancer/name/{lb_name}" => ["DELETE": LbDeleteName],
    "/config/loadbalancer/externalipaddress/{ip_address}/port/{port}/protocol/{proto}" => ["DELETE": LbDelete],
    "/config/loadbalancer/externalipaddress/{ip_address}/port/{port}/portmax/{portmax}/protocol/{proto}" => ["DELETE": LbDelete],
    "/config/loadbalancer/hosturl/{hosturl}/externalipaddress/{ip_address}/port/{port}/portmax/{portmax}/protocol/{proto}" => ["DELETE": LbDelete],
    "/config/loadbalancer/hosturl/{hosturl}/externalipaddress/{ip_address}/port/{port}/protocol/{proto}" => ["DELETE": LbDelete],
    "/config/conntrack/all" => ["GET": CtAll],
    "/config/port/all" => ["GET": Unsupported],
    "/config/route/all" => ["GET": Unsupported],
    "/config/route" => ["POST": Unsupported],
    "/config/route/destinationIPNet/{ip_address}/{mask}" => ["DELETE": Unsupported],
    "/config/session/all" => ["GET": Unsupported],
    "/config/session" => ["POST": Unsupported],
    "/config/session/ident/{ident}" => ["DELETE": Unsupported],
    "/config/sessionulcl/all" => ["GET": Unsupported],
    "/config/sessionulcl" => ["POST": Unsupported],
    "/config/sessionulcl/ident/{ident}/ulclAddress/{ip_address}" => ["DELETE": Unsupported],
    "/config/policy/all" => ["GET": Unsupported],
    "/config/policy" => ["POST": Unsupported],
    "/config/policy/ident/{ident}" => ["DELETE": Unsupported],
    "/config/mirror/all" => ["GET": Unsupported],
    "/config/mirror" => ["POST": Unsupported],
    "/config/mirror/ident/{ident}" => ["DELETE": Unsupported],
    "/config/ipv4address/all" => ["GET": Unsupported],
    "/config/ipv4address" => ["POST": Unsupported],
    "/config/ipv4address/{ip_address}/{mask}/dev/{if_name}" => ["DELETE": Unsupported],
    "/config/neighbor/all" => ["GET": Unsupported],
    "/config/neighbor" => ["POST": Unsupported],
    "/config/neighbor/{ip_address}/dev/{if_name}" => ["DELETE": Unsupported],
    "/config/fdb/all" => ["GET": Unsupported],
    "/config/fdb" => ["POST": Unsupported],
    "/config/fdb/{mac_address}/dev/{if_name}" => ["DELETE": Unsupported],
    "/config/vlan/all" => ["GET": Unsupported],
    "/config/vlan" => ["POST": Unsupported],
    "/config/vlan/{vlan_id}" => ["DELETE": Unsupported],
    "/config/vlan/{vlan_id}/member" => ["POST": Unsupported],
    "/config/vlan/{vlan_id}/member/{if_name}/tagged/{tagged}" => ["DELETE": Unsupported],
    "/config/tunnel/vxlan/all" => ["GET": Unsupported],
    "/config/tunnel/vxlan" => ["POST": Unsupported],
    "/config/tunnel/vxlan/{vxlanID}" => ["DELETE": Unsupported],
    "/config/tunnel/vxlan/{vxlanID}/peer" => ["POST": Unsupported],
    "/config/tunnel/vxlan/{vxlanID}/peer/{PeerIP}" => ["DELETE": Unsupported],
    "/config/cistate/all" => ["GET": CiAll],
    "/config/cistate" => ["POST": CiPost],
    "/config/endpoint/all" => ["GET": EpAll],
    "/config/endpoint" => ["POST": EpPost],
    "/config/endpointhoststate" => ["POST": EpHostState],
    "/config/endpoint/epipaddress/{ip_address}" => ["DELETE": EpDelete],
    "/config/firewall/all" => ["GET": Unsupported],
    "/config/firewall" => ["POST": Unsupported, "DELETE": Unsupported],
    "/status/process" => ["GET": StatusProcess],
    "/status/device" => ["GET": StatusDevice],
    "/status/filesystem" => ["GET": Unsupported],
    "/config/params" => ["POST": ParamsPost, "GET": ParamsGet],
    "/config/bgp/neigh/all" => ["GET": Unsupported],
    "/config/bgp/neigh" => ["POST": Unsupported],
    "/config/bgp/neigh/{ip_address}" => ["DELETE": Unsupported],
    "/config/bgp/policy/definedsets/{defineset_type}/{type_name}" => ["GET": Unsupported, "DELETE": Unsupported],
    "/config/bgp/policy/definedsets/{defineset_type}" => ["POST": Unsupported],
    "/config/bgp/policy/definitions/all" => ["GET": Unsupported],
    "/config/bgp/policy/definitions" => ["POST": Unsupported],
    "/config/bgp/policy/definitions/{policy_name}" => ["DELETE": Unsupported],
    "/config/bgp/policy/apply" => ["POST": Unsupported, "DELETE": Unsupported],
    "/config/bgp/global" => ["POST": Unsupported],
    "/metrics" => ["GET": Metrics],
    "/config/metrics" => ["GET": Unsupported, "POST": Unsupported, "DELETE": Unsupported],
    "/version" => ["GET": Version],
    "/config/bfd/all" => ["GET": Unsupported],
    "/config/bfd" => ["POST": Unsupported],
    "/config/bfd/remoteIP/{remote_ip}" => ["DELETE": Unsupported],
    "/metrics/flowcount" => ["GET": Unsupported],
    "/metrics/hostcount" => ["GET": Unsupported],
    "/metrics/lbrulecount" => ["GET": Unsupported],
    "/metrics/newflowcount" => ["GET": Unsupported],
    "/metrics/requestcount" => ["GET": Unsupported],
    "/metrics/errorcount" => ["GET": Unsupported],
    "/metrics/processedtraffic" => ["GET": Unsupported],
    "/metrics/lbprocessedtraffic" => ["GET": Unsupported],
    "/metrics/epdisttraffic" => ["GET": Unsupported],
    "/metrics/servicedisttraffic" => ["GET": Unsupported],
    "/metrics/fwdrops" => ["GET": Unsupported],
    "/metrics/reqcountperclient" => ["GET": Unsupported],
    "/logs" => ["GET": Unsupported],
    "/log-archives" => ["GET": Unsupported],
    "/log-archives/{filename}" => ["GET": Unsupported],
    "/nodegraph/all" => ["GET": Unsupported],
    "/nodegraph/{service}" => ["GET": Unsupported],
    "/oauth/{provider}" => ["GET": Unsupported],
    "/oauth/{provider}/callback" => ["GET": Unsupported],
    "/oauth/{provider}/token" => ["GET": Unsupported],
    "/config/cors/all" => ["GET": Unsupported],
    "/config/cors" => ["POST": Unsupported],
    "/config/cors/{cors_url}" => ["DELETE": Unsupported],
    "/config/import" => ["POST": Unsupported],
    "/config/export" => ["GET": Unsupported],
];

/// Path parameters by name.
type Params = BTreeMap<&'static str, String>;

/// Find the route for a path below [`BASE`]. Literal segments beat parameters
/// (`/config/vlan/all` is not `/config/vlan/{vlan_id}`).
pub fn match_route(rest: &str) -> Option<(&'static Route, Params)> {
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let mut best: Option<(usize, &'static Route, Params)> = None;
    for r in ROUTES {
        let pat: Vec<&'static str> = r.path.split('/').filter(|s| !s.is_empty()).collect();
        if pat.len() != segs.len() {
            continue;
        }
        let mut params = Params::new();
        let mut literals = 0;
        let ok = pat.iter().zip(&segs).all(|(p, s)| {
            if let Some(name) = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                params.insert(name, percent_decode(s));
                true
            } else if p == s {
                literals += 1;
                true
            } else {
                false
            }
        });
        if ok && best.as_ref().is_none_or(|b| literals > b.0) {
            best = Some((literals, r, params));
        }
    }
    best.map(|(_, r, p)| (r, p))
}

/// Decode `%XX` escapes (invalid escapes are kept as they are).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex_digit(b[i + 1]), hex_digit(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

fn parse_query(q: Option<&str>) -> BTreeMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

/// Sets the log level (`POST /config/params`); the daemon wires tracing's reload handle.
pub type LogLevelSetter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// A rule request waiting to be applied ([`Api::commit`]).
struct Queued {
    id: u64,
    op: RuleOp,
    done: tokio::sync::oneshot::Sender<Result<(), RuleError>>,
}

/// Takes a request out of the queue if its handler goes away before anyone
/// applied it (a request whose client is gone is not applied later).
struct Dequeue<'a> {
    queue: &'a StdMutex<Vec<Queued>>,
    id: u64,
}

impl Drop for Dequeue<'_> {
    fn drop(&mut self) {
        lock(self.queue).retain(|q| q.id != self.id);
    }
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The API's shared state.
pub struct Api {
    state: Mutex<ControlState>,
    /// Rule requests waiting for the state lock, applied as one group.
    queue: StdMutex<Vec<Queued>>,
    next_id: AtomicU64,
    view: Arc<dyn DataplaneView>,
    token: Option<String>,
    log_level: StdMutex<String>,
    log_setter: Option<LogLevelSetter>,
    started: Instant,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("auth", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

impl Api {
    /// An API over `state`, reading statistics from `view`; no auth.
    pub fn new(state: ControlState, view: Arc<dyn DataplaneView>) -> Api {
        Api {
            state: Mutex::new(state),
            queue: StdMutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            view,
            token: None,
            log_level: StdMutex::new("info".into()),
            log_setter: None,
            started: Instant::now(),
        }
    }

    /// Require `Authorization: Bearer <token>` (liveness and version stay open).
    pub fn with_token(mut self, token: Option<String>) -> Api {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    /// Apply `POST /config/params` log levels through `f`.
    pub fn with_log_setter(mut self, level: &str, f: LogLevelSetter) -> Api {
        self.log_level = StdMutex::new(level.to_string());
        self.log_setter = Some(f);
        self
    }

    /// The control state (for the daemon, the prober and tests).
    pub fn state(&self) -> &Mutex<ControlState> {
        &self.state
    }

    /// How many rule requests are waiting to be applied.
    pub fn queued(&self) -> usize {
        lock(&self.queue).len()
    }

    /// The dataplane view.
    pub fn view(&self) -> &Arc<dyn DataplaneView> {
        &self.view
    }

    /// Apply one rule request (group commit): it queues, and whoever gets
    /// the state lock next applies every queued request in arrival order —
    /// each checked and accepted or refused on its own, as if alone — builds
    /// and publishes one snapshot for all, and only then answers them. So a
    /// request's answer still comes after its change is live and visible,
    /// and a burst of requests costs one snapshot, not one each.
    async fn commit(&self, op: RuleOp) -> Result<(), RuleError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (done, mut answer) = tokio::sync::oneshot::channel();
        lock(&self.queue).push(Queued { id, op, done });
        let _dequeue = Dequeue {
            queue: &self.queue,
            id,
        };
        tokio::select! {
            biased;
            res = &mut answer => return res.unwrap_or_else(|_| Err(gone())),
            mut st = self.state.lock() => {
                let jobs = std::mem::take(&mut *lock(&self.queue));
                if !jobs.is_empty() {
                    let (ops, answers): (Vec<RuleOp>, Vec<_>) =
                        jobs.into_iter().map(|q| (q.op, q.done)).unzip();
                    let results = st.apply_rule_ops(ops);
                    for (a, r) in answers.into_iter().zip(results) {
                        let _ = a.send(r);
                    }
                }
            }
        }
        // Ours was in that group, or in one another request applied before
        // we got the lock (its answer may still be on the way).
        answer.await.unwrap_or_else(|_| Err(gone()))
    }

    async fn handle(&self, req: Request) -> Result<Response, ApiError> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_string();
        let Some(rest) = path.strip_prefix(BASE) else {
            return Err(ApiError::NotFound(path));
        };
        if !rest.is_empty() && !rest.starts_with('/') {
            return Err(ApiError::NotFound(path));
        }
        let (route, params) = match_route(rest).ok_or_else(|| ApiError::NotFound(path.clone()))?;
        let method = parts.method.as_str();
        let op = route
            .methods
            .iter()
            .find(|(m, _)| *m == method)
            .map(|(_, op)| *op)
            .ok_or_else(|| ApiError::MethodNotAllowed {
                method: method.to_string(),
                allowed: route.methods.iter().map(|(m, _)| *m).collect(),
            })?;
        if !matches!(op, Op::Liveness | Op::Version) {
            self.check_auth(&parts.headers)?;
        }
        let body = to_bytes(body, MAX_BODY)
            .await
            .map_err(|e| ApiError::Parse(format!("reading the body: {e}")))?;
        if !body.is_empty() {
            check_content_type(&parts.headers)?;
        }
        let query = parse_query(parts.uri.query());
        self.run(op, &parts.method, &path, &params, &query, &body)
            .await
    }

    fn check_auth(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let got = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if got.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized)
        }
    }

    async fn run(
        &self,
        op: Op,
        method: &Method,
        path: &str,
        params: &Params,
        query: &BTreeMap<String, String>,
        body: &Bytes,
    ) -> Result<Response, ApiError> {
        match op {
            Op::Liveness => Ok(success()),
            Op::LbPost => {
                let valid = parse_body::<LbRule>(body)?.validate()?;
                self.commit(RuleOp::Post(Box::new(valid))).await?;
                Ok(success())
            }
            Op::LbAll => {
                let st = self.state.lock().await;
                Ok(json_response(
                    200,
                    &LbRuleList {
                        lb_attr: st.rules_view(self.view.as_ref()),
                    },
                ))
            }
            Op::LbDeleteAll => {
                self.state.lock().await.delete_all_rules()?;
                Ok(success())
            }
            Op::LbDeleteName => {
                let name = params.get("lb_name").cloned().unwrap_or_default();
                self.state.lock().await.delete_rules_named(&name)?;
                Ok(success())
            }
            Op::LbDelete => {
                match delete_key(params, query)? {
                    Some(k) => self.commit(RuleOp::Delete(k)).await?,
                    None => return Err(RuleError::NoRule.into()),
                }
                Ok(success())
            }
            Op::EpPost => {
                let probe = parse_body::<EpProbe>(body)?.validate()?;
                self.state.lock().await.post_probe(probe)?;
                Ok(success())
            }
            Op::EpAll => {
                let st = self.state.lock().await;
                Ok(json_response(
                    200,
                    &EpStatusList {
                        attr: st.probes_view(),
                    },
                ))
            }
            Op::EpDelete => {
                let ip = params.get("ip_address").cloned().unwrap_or_default();
                let host: IpAddr = ip.trim().parse().map_err(|_| RuleError::HostParse)?;
                let port = match query.get("probe_port").map(String::as_str) {
                    None | Some("") => 0,
                    Some(p) => parse_number(p, "probe_port", "query")?,
                };
                let key = match query.get("name").filter(|n| !n.is_empty()) {
                    Some(name) => name.clone(),
                    None => {
                        let ptype = query.get("probe_type").map_or("", String::as_str);
                        format!("{host}_{ptype}_{port}")
                    }
                };
                self.state.lock().await.delete_probe(&key)?;
                Ok(success())
            }
            Op::EpHostState => {
                let (hold, down) = parse_body::<EpHostState>(body)?.validate()?;
                self.state.lock().await.set_host_state(hold, down)?;
                Ok(success())
            }
            Op::CiPost => {
                let ci: CiStateIn = parse_body(body)?;
                self.state.lock().await.post_cistate(&ci)?;
                Ok(success())
            }
            Op::CiAll => {
                let st = self.state.lock().await;
                Ok(json_response(200, &json!({ "Attr": st.cistate_view() })))
            }
            Op::CtAll => {
                let ct: Vec<CtAttr> = self
                    .view
                    .conntrack()
                    .into_iter()
                    .map(|c| CtAttr {
                        bytes: clamp_i64(c.bytes),
                        conntrack_act: c.action,
                        conntrack_state: c.state,
                        destination_ip: c.dst.to_string(),
                        destination_port: i64::from(c.dst_port),
                        packets: clamp_i64(c.packets),
                        protocol: c.proto.name().into(),
                        serv_name: c.service,
                        source_ip: c.src.to_string(),
                        source_port: i64::from(c.src_port),
                    })
                    .collect();
                Ok(json_response(200, &json!({ "ctAttr": ct })))
            }
            Op::StatusProcess => Ok(json_response(
                200,
                &json!({ "processAttr": [crate::sysinfo::process(self.started)] }),
            )),
            Op::StatusDevice => Ok(json_response(200, &crate::sysinfo::device())),
            Op::Version => Ok(json_response(
                200,
                &json!({
                    "buildInfo": crate::sysinfo::build_info(),
                    "version": env!("CARGO_PKG_VERSION"),
                }),
            )),
            Op::Metrics => {
                let text = {
                    let st = self.state.lock().await;
                    crate::metrics::render(&st, self.view.as_ref())
                };
                Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)
                    .body(Body::from(text))
                    .map_err(|e| RuleError::Internal(e.to_string()).into())
            }
            Op::ParamsGet => {
                let level = self
                    .log_level
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                Ok(json_response(200, &json!({ "logLevel": level })))
            }
            Op::ParamsPost => {
                let p: OperParams = parse_body(body)?;
                if let Some(set) = &self.log_setter {
                    set(&p.loglevel).map_err(RuleError::Internal)?;
                }
                *self.log_level.lock().unwrap_or_else(|e| e.into_inner()) = p.loglevel;
                Ok(success())
            }
            Op::OpenApi => Ok(json_response(200, &crate::openapi::document())),
            Op::Unsupported => Err(ApiError::NotImplemented {
                method: method.to_string(),
                path: path.to_string(),
            }),
        }
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A body needs `Content-Type: application/json` (parameters such as charset allowed).
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMedia(ct.to_string()))
    }
}

/// A "number" path or query parameter. go-openapi parses it as a float and
/// loxilb truncates; xlb takes integers only.
fn number(v: &str, name: &str, location: &'static str) -> Result<i64, ApiError> {
    v.trim().parse().map_err(|_| ApiError::InvalidType {
        name: name.to_string(),
        location,
        ty: "number",
        value: v.to_string(),
    })
}

fn parse_number(v: &str, name: &str, location: &'static str) -> Result<u16, ApiError> {
    let n = number(v, name, location)?;
    u16::try_from(n).map_err(|_| ApiError::InvalidType {
        name: name.to_string(),
        location,
        ty: "number",
        value: v.to_string(),
    })
}

/// The identity a delete path names, checked in loxilb's order
/// (`DeleteNatLbRule`); `None` when it cannot name any rule (a host other
/// than `any`, values out of range).
fn delete_key(
    params: &Params,
    query: &BTreeMap<String, String>,
) -> Result<Option<ServiceKey>, ApiError> {
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
    if let Some(b) = query.get("bgp") {
        if !matches!(
            b.to_ascii_lowercase().as_str(),
            "" | "true" | "false" | "1" | "0"
        ) {
            return Err(ApiError::InvalidType {
                name: "bgp".into(),
                location: "query",
                ty: "boolean",
                value: b.clone(),
            });
        }
    }
    let block = match query.get("block").map(String::as_str) {
        None | Some("") => 0,
        Some(b) => number(b, "block", "query")?,
    };
    let port = number(get("port"), "port", "path")?;
    let port_max = match params.get("portmax") {
        None => 0,
        Some(pm) => number(pm, "portmax", "path")?,
    };
    let port_max = if port_max == 0 { port } else { port_max };
    let vip = get("ip_address")
        .parse()
        .map_err(|_| RuleError::MalformedService(String::new()))?;
    let proto = parse_proto(get("proto")).ok_or(RuleError::MalformedProto)?;
    if params.get("hosturl").is_some_and(|h| h != "any") {
        return Ok(None);
    }
    let (Ok(port_min), Ok(port_max), Ok(block)) = (
        u16::try_from(port),
        u16::try_from(port_max),
        u32::try_from(block),
    ) else {
        return Ok(None);
    };
    Ok(Some(ServiceKey {
        vip,
        proto,
        port_min,
        port_max,
        block,
    }))
}

/// A JSON response with `Content-Type: application/json` exactly.
pub fn json_response(status: u16, v: &impl Serialize) -> Response {
    let (status, bytes) = match serde_json::to_vec(v) {
        Ok(b) => (status, b),
        Err(e) => (
            500,
            format!(r#"{{"code":500,"message":"encoding the answer failed: {e}"}}"#).into_bytes(),
        ),
    };
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `200 {"result":"Success"}`.
pub fn success() -> Response {
    json_response(200, &json!({"result": "Success"}))
}

/// The response for an error (with `Allow` for 405).
pub fn error_response(e: &ApiError) -> Response {
    let mut resp = json_response(e.status(), &e.body());
    if let ApiError::MethodNotAllowed { allowed, .. } = e {
        if let Ok(v) = HeaderValue::from_str(&allowed.join(",")) {
            resp.headers_mut().insert(header::ALLOW, v);
        }
    }
    resp
}

async fn dispatch(State(api): State<Arc<Api>>, req: Request) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    match api.handle(req).await {
        Ok(r) => {
            if method == Method::GET {
                tracing::debug!(%method, %uri, status = r.status().as_u16(), "api");
            } else {
                // Changes are rare and worth an audit line.
                tracing::info!(%method, %uri, status = r.status().as_u16(), "api change applied");
            }
            r
        }
        Err(e) => {
            tracing::info!(%method, %uri, status = e.status(), error = %e, "api request rejected");
            error_response(&e)
        }
    }
}

/// The router serving the whole API.
pub fn router(api: Arc<Api>) -> Router {
    Router::new().fallback(dispatch).with_state(api)
}

/// The answer of a queued rule request that was lost (cannot happen while
/// the API runs: the request stays queued until applied or withdrawn).
fn gone() -> RuleError {
    RuleError::Internal("the rule request was dropped before it was applied".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_segments_win_over_parameters() {
        let (r, p) = match_route("/config/loadbalancer/all").expect("route");
        assert_eq!(r.path, "/config/loadbalancer/all");
        assert!(p.is_empty());
        let (r, _) = match_route("/config/vlan/all").expect("route");
        assert_eq!(r.path, "/config/vlan/all");
        let (r, p) =
            match_route("/config/loadbalancer/externalipaddress/1.2.3.4/port/80/protocol/tcp")
                .expect("route");
        assert_eq!(r.methods[0].1, Op::LbDelete);
        assert_eq!(p.get("ip_address").map(String::as_str), Some("1.2.3.4"));
        assert!(match_route("/config/nothing").is_none());
        assert_eq!(match_route("").expect("base").0.methods[0].1, Op::Liveness);
    }

    #[test]
    fn every_swagger_path_is_routed_once() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(seen.insert(r.path), "{} twice", r.path);
        }
        // 102 swagger paths, plus the base path and xlb's OpenAPI document.
        assert_eq!(ROUTES.len(), 104);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("x%zz"), "x%zz");
    }
}
