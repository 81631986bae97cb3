//! The loxilb-compatible REST API (`/netlox/v1`): routing, request checks in
//! go-openapi's order, handlers, and loxilb's exact response shapes.
//!
//! Routing is a table of every path in loxilb's swagger ([`routes`]). Order of
//! checks per request: path (404) → method (405) → auth (401) → body size
//! (413) → content type of a body (415) → body parse (400) → schema (422) →
//! handler (400/403/404/409). The server and its limits: [`server`].
//!
//! The API holds no control state: a handler turns a request into a
//! [`Command`] for the controller (or a read of its state) and answers with
//! the outcome, once the change is live.

pub mod openapi;
pub mod routes;
pub mod server;

pub use routes::{match_route, percent_decode, Op, Route, PROBES, ROUTES};
use routes::{parse_query, Params};

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use serde::Serialize;
use serde_json::json;
use xlb_dataplane::tables::ServiceKey;

use crate::controller::{Command, ControlHandle, RuleOp};
use crate::dataplane::DataplaneView;
use crate::error::{ApiError, RuleError};
use crate::model::{
    parse_body, CiStateIn, CtAttr, EpHostState, EpProbe, EpStatusList, LbRule, LbRuleList,
    OperParams,
};
use crate::rules::parse_proto;

/// The API's base path.
pub const BASE: &str = "/netlox/v1";
/// Largest request body accepted: a rule with 32 endpoints and its lists
/// is a few KiB; anything near this is not a request.
pub const MAX_BODY: usize = 256 << 10;
/// Time a request body may take to arrive, once its head has.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Sets the log level (`POST /config/params`); the daemon wires tracing's reload handle.
pub type LogLevelSetter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The API's shared state: a way to the controller, and the dataplane's
/// statistics.
pub struct Api {
    control: ControlHandle,
    view: Arc<dyn DataplaneView>,
    token: Option<String>,
    log_level: StdMutex<String>,
    log_setter: Option<LogLevelSetter>,
    started: Instant,
    body_timeout: Duration,
    /// Connection sync, once started: its metrics join the export.
    sync: std::sync::OnceLock<Arc<crate::sync::SyncService>>,
    /// What `/readyz` judges.
    readiness: Arc<crate::ready::Readiness>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("auth", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

impl Api {
    /// An API that sends its changes to `control`, reading statistics from
    /// `view`; no auth.
    pub fn new(control: ControlHandle, view: Arc<dyn DataplaneView>) -> Api {
        Api {
            control,
            view,
            token: None,
            log_level: StdMutex::new("info".into()),
            log_setter: None,
            started: Instant::now(),
            body_timeout: BODY_TIMEOUT,
            sync: std::sync::OnceLock::new(),
            readiness: Arc::default(),
        }
    }

    /// Give request bodies `t` to arrive instead of [`BODY_TIMEOUT`].
    pub fn with_body_timeout(mut self, t: Duration) -> Api {
        self.body_timeout = t;
        self
    }

    /// The checks `/readyz` asks (add to them; no checks: ready).
    pub fn readiness(&self) -> &Arc<crate::ready::Readiness> {
        &self.readiness
    }

    /// Export `sync`'s metrics from now on (the first service given stays).
    pub fn set_sync(&self, sync: Arc<crate::sync::SyncService>) {
        let _ = self.sync.set(sync);
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

    /// The way to the controller.
    pub fn control(&self) -> &ControlHandle {
        &self.control
    }

    /// The dataplane view.
    pub fn view(&self) -> &Arc<dyn DataplaneView> {
        &self.view
    }

    async fn handle(&self, req: Request) -> Result<Response, ApiError> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_string();
        let (route, params) = match PROBES.iter().find(|r| r.path == path) {
            Some(probe) => (probe, Params::new()),
            None => {
                let Some(rest) = path.strip_prefix(BASE) else {
                    return Err(ApiError::NotFound(path));
                };
                if !rest.is_empty() && !rest.starts_with('/') {
                    return Err(ApiError::NotFound(path));
                }
                match_route(rest).ok_or_else(|| ApiError::NotFound(path.clone()))?
            }
        };
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
        if !matches!(op, Op::Liveness | Op::Version | Op::Healthz | Op::Readyz) {
            self.check_auth(&parts.headers)?;
        }
        // Content-Length, or the size of a body at hand: refused unread.
        if body.size_hint().lower() > MAX_BODY as u64 {
            return Err(ApiError::TooLarge(MAX_BODY));
        }
        // A client that trickles its body would hold the connection for
        // as long as it likes: the body has a deadline of its own.
        let body = tokio::time::timeout(self.body_timeout, to_bytes(body, MAX_BODY))
            .await
            .map_err(|_| {
                ApiError::Parse(format!(
                    "reading the body: not complete within {} s",
                    self.body_timeout.as_secs_f64()
                ))
            })?
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
                self.control
                    .apply(Command::Rule(RuleOp::Post(Box::new(valid))))
                    .await?;
                Ok(success())
            }
            Op::LbAll => {
                let view = self.view.clone();
                let lb_attr = self
                    .control
                    .read(move |st| st.rules_view(view.as_ref()))
                    .await?;
                Ok(json_response(200, &LbRuleList { lb_attr }))
            }
            Op::LbDeleteAll => {
                self.control.apply(Command::DeleteAllRules).await?;
                Ok(success())
            }
            Op::LbDeleteName => {
                let name = params.get("lb_name").cloned().unwrap_or_default();
                self.control.apply(Command::DeleteRulesNamed(name)).await?;
                Ok(success())
            }
            Op::LbDelete => {
                match delete_key(params, query)? {
                    Some(k) => self.control.apply(Command::Rule(RuleOp::Delete(k))).await?,
                    None => return Err(RuleError::NoRule.into()),
                }
                Ok(success())
            }
            Op::EpPost => {
                let probe = parse_body::<EpProbe>(body)?.validate()?;
                self.control.apply(Command::PostProbe(probe)).await?;
                Ok(success())
            }
            Op::EpAll => {
                let attr = self.control.read(|st| st.probes_view()).await?;
                Ok(json_response(200, &EpStatusList { attr }))
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
                self.control.apply(Command::DeleteProbe(key)).await?;
                Ok(success())
            }
            Op::EpHostState => {
                let (hold, down) = parse_body::<EpHostState>(body)?.validate()?;
                self.control
                    .apply(Command::HostState { hold, down })
                    .await?;
                Ok(success())
            }
            Op::CiPost => {
                let ci: CiStateIn = parse_body(body)?;
                self.control.apply(Command::ClusterState(ci)).await?;
                Ok(success())
            }
            Op::CiAll => {
                let attr = self.control.read(|st| st.cistate_view()).await?;
                Ok(json_response(200, &json!({ "Attr": attr })))
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
                    "commit": crate::version::COMMIT,
                    "version": crate::version::VERSION,
                }),
            )),
            Op::Metrics => {
                let view = self.view.clone();
                let mut text = self
                    .control
                    .read(move |st| crate::metrics::render(st, view.as_ref()))
                    .await?;
                if let Some(s) = self.sync.get() {
                    text.push_str(&crate::metrics::render_sync(&s.status()));
                }
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
            Op::OpenApi => Ok(json_response(200, &openapi::document())),
            Op::Healthz => Ok(json_response(200, &json!({ "status": "alive" }))),
            Op::Readyz => {
                let report = self.readiness.report();
                Ok(json_response(if report.ready { 200 } else { 503 }, &report))
            }
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
    let uri = req.uri().to_string();
    let uri = LogSafe(&uri);
    // Set by the server ([`server`]); absent when the router is driven directly (tests).
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "-".to_string(), |c| c.0.to_string());
    match api.handle(req).await {
        Ok(r) => {
            if method == Method::GET {
                tracing::debug!(%client, %method, %uri, status = r.status().as_u16(), "api");
            } else {
                // Changes are rare and worth an audit line.
                tracing::info!(%client, %method, %uri, status = r.status().as_u16(), "api change applied");
            }
            r
        }
        Err(e) => {
            let error = e.to_string();
            tracing::info!(
                %client,
                %method,
                %uri,
                status = e.status(),
                error = %LogSafe(&error),
                "api request rejected"
            );
            error_response(&e)
        }
    }
}

/// A client's string as it may go into a log line: control characters
/// (newlines, ANSI escapes) written as Rust escapes, so that no client can
/// forge or recolour a line.
#[derive(Debug, Clone, Copy)]
pub struct LogSafe<'a>(pub &'a str);

impl std::fmt::Display for LogSafe<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// The router serving the whole API.
pub fn router(api: Arc<Api>) -> Router {
    Router::new().fallback(dispatch).with_state(api)
}
