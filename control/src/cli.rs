//! The operator CLI's client side, modelled on loxicmd: request bodies built
//! from flags, a small blocking HTTP client, aligned table output in
//! loxicmd's shapes, and `save` / `apply` of loxilb's config files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::config;
use crate::model::{CiStateOut, CtAttr, EpStatusList, LbRuleList};

/// The API port when `-s`/`--api-server` names none (loxilb's).
pub const DEFAULT_PORT: u16 = 11111;

/// Why a CLI command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// the server answered with an error; the text is loxilb's message
    #[error("{0}")]
    Server(String),
    /// the server could not be reached
    #[error("cannot reach the API server: {0}")]
    Transport(String),
    /// a flag value is malformed
    #[error("{0}")]
    Usage(String),
    /// the answer is not what the API returns
    #[error("unexpected answer from the API server: {0}")]
    Decode(String),
    /// a config file to apply cannot be read or is not loxilb's format
    #[error("{}: {reason}", file.display())]
    File {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// the CA certificate file is not usable
    #[error("CA certificate {}: {reason}", file.display())]
    CaCert {
        /// The file.
        file: std::path::PathBuf,
        /// Why.
        reason: String,
    },
}

/// A client of the REST API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    /// A client for `server` (e.g. `http://127.0.0.1:11111`); see
    /// [`server_url`] for the other spellings.
    pub fn new(server: &str, token: Option<String>) -> Client {
        Client {
            base: format!("{}/netlox/v1", server_url(server, None)),
            token,
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(10))
                .build(),
        }
    }

    /// Trust the PEM certificates in `file` (instead of the public web roots)
    /// for an `https://` API server with its own CA or a self-signed certificate.
    pub fn with_ca_cert(mut self, file: &std::path::Path) -> Result<Client, CliError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::CertificateDer;
        use tokio_rustls::rustls;
        let bad = |reason: String| CliError::CaCert {
            file: file.into(),
            reason,
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(file).map_err(|e| bad(e.to_string()))? {
            roots
                .add(cert.map_err(|e| bad(e.to_string()))?)
                .map_err(|e| bad(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(bad("no certificate found".into()));
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        self.agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .tls_config(std::sync::Arc::new(config))
            .build();
        Ok(self)
    }

    /// Send a request; `Ok` with the body on 2xx, the server's error text otherwise.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, CliError> {
        let mut req = self
            .agent
            .request(method, &format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let res = match body {
            Some(b) => req
                .set("Content-Type", "application/json")
                .send_string(&b.to_string()),
            None => req.call(),
        };
        let (ok, text) = match res {
            Ok(r) => (true, r.into_string()),
            Err(ureq::Error::Status(_, r)) => (false, r.into_string()),
            Err(e) => return Err(CliError::Transport(e.to_string())),
        };
        let text = text.map_err(|e| CliError::Transport(e.to_string()))?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if ok && v.get("code").is_none() {
            Ok(v)
        } else {
            Err(CliError::Server(error_text(&v)))
        }
    }

    /// `GET /config/loadbalancer/all`.
    pub fn rules(&self) -> Result<LbRuleList, CliError> {
        decode(self.call("GET", "/config/loadbalancer/all", None)?)
    }

    /// `GET /config/endpoint/all`.
    pub fn endpoints(&self) -> Result<EpStatusList, CliError> {
        decode(self.call("GET", "/config/endpoint/all", None)?)
    }

    /// The API server's URL, without the `/netlox/v1` base path.
    pub fn server(&self) -> &str {
        self.base.trim_end_matches("/netlox/v1")
    }

    /// Whether the API server is on this host (a loopback address or
    /// `localhost`): where `save` writes is then where the daemon runs.
    pub fn is_local(&self) -> bool {
        let rest = self
            .server()
            .split_once("://")
            .map_or(self.server(), |(_, r)| r);
        let host = match rest.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => rest.split(':').next().unwrap_or(""),
        };
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// The API server's URL from `-s`/`--api-server` and `-p`/`--port`
/// (loxicmd's habits): a URL (`https://lb1:11111`), `host:port`, or a
/// host alone (an IPv6 address bare or in brackets), which gets `port` or
/// else [`DEFAULT_PORT`]; `port` also replaces a port the server names.
/// No scheme means `http`; a URL without a port and no `port` is kept
/// as it is (its scheme's port).
pub fn server_url(server: &str, port: Option<u16>) -> String {
    let server = server.trim().trim_end_matches('/');
    if server.contains("://") && port.is_none() {
        // A URL as given: without a port, its scheme's (as a browser would).
        return server.to_string();
    }
    let (scheme, rest) = server.split_once("://").unwrap_or(("http", server));
    let (host, named) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6.split_once(']').unwrap_or((v6, ""));
        (
            format!("[{h}]"),
            after.strip_prefix(':').and_then(|p| p.parse().ok()),
        )
    } else if rest.matches(':').count() > 1 {
        // A bare IPv6 address: every colon is the address's.
        (format!("[{rest}]"), None)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse::<u16>().ok()),
            None => (rest.to_string(), None),
        }
    };
    let port = port.or(named).unwrap_or(DEFAULT_PORT);
    format!("{scheme}://{host}:{port}")
}

impl Client {
    /// Send each entry of loxilb's config file `file` (`lbconfig.txt`:
    /// `{"lbAttr":[...]}`, or `EPconfig.txt`: `{"Attr":[...]}`, told
    /// apart by their content) to the daemon as its own request, as
    /// `loxicmd apply` does. Every entry is tried; a rejected one is
    /// reported with its position and the server's reason.
    pub fn apply_file(&self, file: &Path) -> Result<ApplyReport, CliError> {
        let bad = |reason: String| CliError::File {
            file: file.into(),
            reason,
        };
        let text = std::fs::read(file).map_err(|e| bad(e.to_string()))?;
        let v: Value = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        let Value::Object(map) = v else {
            return Err(bad("not a JSON object".into()));
        };
        // Go matches keys case-insensitively, as the daemon's loader does.
        let (kind, entries) = map
            .into_iter()
            .find_map(|(k, v)| {
                if k.eq_ignore_ascii_case("lbAttr") {
                    Some((ApplyKind::Rules, v))
                } else if k.eq_ignore_ascii_case("Attr") {
                    Some((ApplyKind::ProbeEntries, v))
                } else {
                    None
                }
            })
            .ok_or_else(|| {
                bad(format!(
                    "neither \"lbAttr\" ({}) nor \"Attr\" ({}) in it",
                    config::LB_FILE,
                    config::EP_FILE
                ))
            })?;
        let entries = match entries {
            Value::Array(a) => a,
            Value::Null => Vec::new(),
            _ => return Err(bad("its entries are not an array".into())),
        };
        let path = match kind {
            ApplyKind::Rules => "/config/loadbalancer",
            ApplyKind::ProbeEntries => "/config/endpoint",
        };
        let mut report = ApplyReport {
            kind,
            ..ApplyReport::default()
        };
        for (index, entry) in entries.iter().enumerate() {
            match self.call("POST", path, Some(entry)) {
                Ok(_) => report.applied += 1,
                // Already there as the file says.
                Err(CliError::Server(t)) if t == "lbrule-exists error" => report.unchanged += 1,
                Err(e) => report
                    .rejected
                    .push(format!("{}: entry {index}: {e}", file.display())),
            }
        }
        Ok(report)
    }
}

/// What a config file holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ApplyKind {
    /// `lbconfig.txt`'s rules.
    #[default]
    Rules,
    /// `EPconfig.txt`'s probe entries.
    ProbeEntries,
}

/// What [`Client::apply_file`] did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Which kind of entries the file held.
    pub kind: ApplyKind,
    /// Entries the daemon took.
    pub applied: usize,
    /// Rules that were already there as the file says.
    pub unchanged: usize,
    /// `file: entry N: reason` of each rejected entry.
    pub rejected: Vec<String>,
}

/// Which files `xlb save` writes (loxicmd's `--all`, `--lb`, `--endpoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveWhat {
    /// `lbconfig.txt`.
    pub rules: bool,
    /// `EPconfig.txt`.
    pub probe_entries: bool,
}

/// Write the daemon's rules and probe entries (as `GET` returned them)
/// into `dir` as loxilb's files, as a pair ([`config::save_some`]);
/// returns the files written, as absolute paths where they can be had.
pub fn save_files(
    dir: &Path,
    rules: &LbRuleList,
    eps: &EpStatusList,
    what: SaveWhat,
) -> Result<Vec<(PathBuf, usize)>, config::ConfigError> {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    config::save_some(&dir, rules, eps, what.rules, what.probe_entries)
}

fn decode<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, CliError> {
    crate::model::from_json(v).map_err(|e| CliError::Decode(e.to_string()))
}

/// loxilb's error text: `result` of handler errors, else `message`.
pub fn error_text(v: &Value) -> String {
    v.get("result")
        .and_then(Value::as_str)
        .or_else(|| v.get("message").and_then(Value::as_str))
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

/// Flags of `xlb create lb`.
#[derive(Debug, Clone, Default)]
pub struct LbArgs {
    /// The VIP.
    pub vip: String,
    /// `--tcp` / `--udp` / `--sctp` values: "port[-portmax]:targetport", comma-separated.
    pub ports: Vec<(String, String)>,
    /// `--icmp`.
    pub icmp: bool,
    /// `--endpoints`: "ip:weight", comma-separated.
    pub endpoints: String,
    /// `--mode`.
    pub mode: Mode,
    /// `--sel`.
    pub sel: Sel,
    /// `--monitor`.
    pub monitor: bool,
    /// `--name`.
    pub name: String,
    /// `--inactive-timeout` (loxicmd's `--inatimeout`).
    pub inactive_timeout: u32,
    /// `--block` (loxicmd's `--mark`).
    pub block: u32,
    /// `--bgp`.
    pub bgp: bool,
    /// `--probetype`.
    pub probetype: String,
    /// `--probeport`.
    pub probeport: u16,
    /// `--allowed-sources` (loxicmd's `--sources`), comma-separated prefixes.
    pub allowed: String,
    /// `--secips`: secondary VIPs, comma-separated (loxilb's SCTP
    /// multihoming; the daemon refuses them as unsupported).
    pub secips: String,
    /// `--attachEP` (oper 1) / `--detachEP` (oper 2): add endpoints to, or
    /// remove them from, an existing rule instead of replacing its set.
    pub oper: Oper,
    /// `--dsr-ipip` (xlb's `dsrIpip`).
    pub dsr_ipip: bool,
}

/// Flags of `xlb create ep`.
#[derive(Debug, Clone, Default)]
pub struct EpArgs {
    /// The host probed.
    pub host: String,
    /// `--name`.
    pub name: String,
    /// `--probetype`.
    pub probetype: String,
    /// `--probeport`.
    pub probeport: u16,
    /// `--probereq`.
    pub probereq: String,
    /// `--proberesp`.
    pub proberesp: String,
    /// `--period` (`probeDuration`).
    pub period: u32,
    /// `--retries` (`inactiveReTries`).
    pub retries: u32,
    /// `--probe-timeout` (xlb's `probeTimeout`, seconds), as typed.
    pub probe_timeout: Option<String>,
    /// `--active-retries` (xlb's `activeReTries`), as typed.
    pub active_retries: Option<String>,
}

/// The POST body `xlb create ep` sends. xlb's two knobs go in only when
/// given, as numbers; their ranges are the server's to check (it names the
/// field), so the CLI and the API cannot disagree.
pub fn ep_body(a: &EpArgs) -> Result<Value, CliError> {
    let mut body = json!({
        "hostName": a.host, "name": a.name, "probeType": a.probetype,
        "probePort": a.probeport, "probeReq": a.probereq, "probeResp": a.proberesp,
        "probeDuration": a.period, "inactiveReTries": a.retries,
    });
    for (key, flag, v) in [
        ("probeTimeout", "--probe-timeout", &a.probe_timeout),
        ("activeReTries", "--active-retries", &a.active_retries),
    ] {
        let Some(text) = v else { continue };
        let n: serde_json::Number = text
            .trim()
            .parse()
            .map_err(|_| CliError::Usage(format!("{flag}: {text:?} is not a number")))?;
        if let Some(m) = body.as_object_mut() {
            m.insert(key.into(), Value::Number(n));
        }
    }
    Ok(body)
}

/// NAT mode of a rule (`serviceArguments.mode`); loxicmd's names, with
/// loxilb's numbers as aliases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
#[repr(i64)]
pub enum Mode {
    /// Destination NAT (0).
    #[default]
    #[value(aliases = ["default", "0"])]
    Dnat = 0,
    /// One-arm: source NAT to the balancer's address on the backend LAN (1).
    #[value(alias = "1")]
    Onearm = 1,
    /// Full NAT: source NAT to a balancer-owned address (2).
    #[value(alias = "2")]
    Fullnat = 2,
    /// Direct server return: only the MACs change (3).
    #[value(alias = "3")]
    Dsr = 3,
    /// loxilb's full proxy (4): not supported by xlb; the daemon says so.
    #[value(alias = "4", hide = true)]
    Fullproxy = 4,
    /// loxilb's host one-arm (5): not supported by xlb; the daemon says so.
    #[value(alias = "5", hide = true)]
    Hostonearm = 5,
}

/// Endpoint selection of a rule (`serviceArguments.sel`); loxicmd's
/// names, with loxilb's numbers as aliases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
#[repr(i64)]
pub enum Sel {
    /// Round robin (0).
    #[default]
    #[value(aliases = ["roundrobin", "0"])]
    Rr = 0,
    /// Maglev over the 5-tuple, weighted (1).
    #[value(alias = "1")]
    Hash = 1,
    /// Weighted by priority percentages (2).
    #[value(alias = "2")]
    Priority = 2,
    /// Client-IP affinity with a timeout (3).
    #[value(alias = "3")]
    Persist = 3,
    /// Least connections (4).
    #[value(aliases = ["leastconn", "4"])]
    Lc = 4,
    /// loxilb's N2 (5): not supported by xlb; the daemon says so.
    #[value(alias = "5", hide = true)]
    N2 = 5,
    /// loxilb's N3 (6): not supported by xlb; the daemon says so.
    #[value(alias = "6", hide = true)]
    N3 = 6,
}

/// What `xlb create lb` does to an existing rule (`serviceArguments.oper`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Oper {
    /// Create the rule, or replace its endpoints (0).
    #[default]
    Replace,
    /// Add the endpoints to the rule (1, loxicmd's `--attachEP`).
    Attach,
    /// Remove the endpoints from the rule (2, loxicmd's `--detachEP`).
    Detach,
}

fn num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, CliError> {
    s.trim()
        .parse()
        .map_err(|_| CliError::Usage(format!("{what}: {s:?} is not a number")))
}

/// The identities (protocol, port, portmax) named by `--tcp/--udp/--sctp/--icmp`,
/// with the target port of each ("80:8080" → 80 to 8080; "80" → 80 to 80).
pub fn port_specs(a: &LbArgs) -> Result<Vec<(String, i64, i64, i64)>, CliError> {
    let mut out = Vec::new();
    for (proto, list) in &a.ports {
        for item in list.split(',').filter(|s| !s.trim().is_empty()) {
            let (ports, target) = item.split_once(':').unwrap_or((item, ""));
            let (p, pmax) = match ports.split_once('-') {
                Some((a, b)) => (num(a, "port")?, num(b, "port")?),
                None => (num(ports, "port")?, 0),
            };
            let t = if target.is_empty() {
                p
            } else {
                num(target, "target port")?
            };
            out.push((proto.clone(), p, pmax, t));
        }
    }
    if a.icmp {
        out.push(("icmp".into(), 0, 0, 0));
    }
    if out.is_empty() {
        return Err(CliError::Usage(
            "give at least one of --tcp, --udp, --sctp, --icmp".into(),
        ));
    }
    Ok(out)
}

/// The POST bodies `xlb create lb` sends (one per port spec).
pub fn lb_bodies(a: &LbArgs) -> Result<Vec<Value>, CliError> {
    let (mode, sel) = (a.mode as i64, a.sel as i64);
    let mut eps = Vec::new();
    for item in a.endpoints.split(',').filter(|s| !s.trim().is_empty()) {
        let (ip, w) = item.rsplit_once(':').unwrap_or((item, "1"));
        eps.push((ip.trim().to_string(), num::<i64>(w, "endpoint weight")?));
    }
    if eps.is_empty() {
        return Err(CliError::Usage(
            "--endpoints is required (ip:weight,...)".into(),
        ));
    }
    let list = |s: &str, key: &str| -> Vec<Value> {
        s.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|v| json!({ key: v.trim() }))
            .collect()
    };
    let allowed = list(&a.allowed, "prefix");
    let secips = list(&a.secips, "secondaryIP");
    port_specs(a)?
        .into_iter()
        .map(|(proto, port, portmax, target)| {
            let mut sa = json!({
                "externalIP": a.vip, "port": port, "protocol": proto,
                "sel": sel, "mode": mode, "monitor": a.monitor, "bgp": a.bgp,
                "block": a.block, "inactiveTimeOut": a.inactive_timeout, "name": a.name,
            });
            if let Some(m) = sa.as_object_mut() {
                if portmax != 0 {
                    m.insert("portMax".into(), json!(portmax));
                }
                if !a.probetype.is_empty() {
                    m.insert("probetype".into(), json!(a.probetype));
                    m.insert("probeport".into(), json!(a.probeport));
                }
                if a.dsr_ipip {
                    m.insert("dsrIpip".into(), json!(true));
                }
                let oper = match a.oper {
                    Oper::Replace => 0,
                    Oper::Attach => 1,
                    Oper::Detach => 2,
                };
                if oper != 0 {
                    m.insert("oper".into(), json!(oper));
                }
            }
            let endpoints: Vec<Value> = eps
                .iter()
                .map(|(ip, w)| json!({"endpointIP": ip, "targetPort": target, "weight": w}))
                .collect();
            let mut body =
                json!({"serviceArguments": sa, "endpoints": endpoints, "allowedSources": allowed});
            if !secips.is_empty() {
                body["secondaryIPs"] = json!(secips);
            }
            Ok(body)
        })
        .collect()
}

/// The DELETE paths `xlb delete lb` calls.
pub fn lb_delete_paths(a: &LbArgs) -> Result<Vec<String>, CliError> {
    Ok(port_specs(a)?
        .into_iter()
        .map(|(proto, port, portmax, _)| {
            let pm = if portmax != 0 {
                format!("/portmax/{portmax}")
            } else {
                String::new()
            };
            format!(
                "/config/loadbalancer/externalipaddress/{}/port/{port}{pm}/protocol/{proto}?block={}",
                a.vip, a.block
            )
        })
        .collect())
}

/// Render rows as an aligned table with a header line.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w.get(i).copied().unwrap_or(0)))
            .collect();
        s.join("  ").trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

const MODES: [&str; 6] = [
    "dnat",
    "onearm",
    "fullnat",
    "dsr",
    "fullproxy",
    "hostonearm",
];
const SELS: [&str; 7] = ["rr", "hash", "priority", "persist", "lc", "n2", "n3"];

fn name_of(list: &[&str], v: i64) -> String {
    usize::try_from(v)
        .ok()
        .and_then(|i| list.get(i))
        .map_or_else(|| v.to_string(), |s| (*s).to_string())
}

/// `xlb get lb` as a table in loxicmd's shapes: one line per rule with its
/// number of endpoints; `wide`, one line per endpoint with its state and
/// counters (loxicmd's wide columns, then xlb's PROBE and MANAGED).
pub fn lb_table(l: &LbRuleList, wide: bool) -> String {
    let header: &[&str] = if wide {
        &[
            "EXT IP", "SEC IPS", "SOURCES", "HOST", "PORT", "PROTO", "NAME", "MARK", "SEL", "MODE",
            "ENDPOINT", "EPORT", "WEIGHT", "STATE", "COUNTERS", "PROBE", "MANAGED",
        ]
    } else {
        &[
            "EXT IP",
            "PORT",
            "PROTO",
            "NAME",
            "MARK",
            "SEL",
            "MODE",
            "# OF ENDPOINTS",
            "TIMEOUT",
            "MONITOR",
        ]
    };
    let mut rows = Vec::new();
    for r in &l.lb_attr {
        let s = &r.serviceargs;
        let port = if s.portmax != 0 && s.portmax != s.port {
            format!("{}-{}", s.port, s.portmax)
        } else {
            s.port.to_string()
        };
        let mode = if s.dsripip {
            "dsr-ipip".to_string()
        } else {
            name_of(&MODES, s.mode)
        };
        let (sel, mark) = (name_of(&SELS, s.sel), s.block.to_string());
        if !wide {
            rows.push(vec![
                s.externalip.clone(),
                port,
                s.protocol.clone(),
                s.name.clone(),
                mark,
                sel,
                mode,
                r.endpoints.len().to_string(),
                s.inactivetimeout.to_string(),
                if s.monitor { "On" } else { "Off" }.to_string(),
            ]);
            continue;
        }
        let joined = |v: Vec<&str>| v.join(",");
        let secips = joined(
            r.secondaryips
                .iter()
                .map(|x| x.secondaryip.as_str())
                .collect(),
        );
        let sources = joined(r.allowedsources.iter().map(|x| x.prefix.as_str()).collect());
        let probe = if s.probetype.is_empty() {
            String::new()
        } else {
            format!("{}:{}", s.probetype, s.probeport)
        };
        for (i, e) in r.endpoints.iter().enumerate() {
            // The rule's columns on its first line only, as loxicmd prints them.
            let c = |v: &str| if i == 0 { v.to_string() } else { String::new() };
            rows.push(vec![
                c(&s.externalip),
                c(&secips),
                c(&sources),
                c(&s.host),
                c(&port),
                c(&s.protocol),
                c(&s.name),
                c(&mark),
                c(&sel),
                c(&mode),
                e.endpointip.clone(),
                e.targetport.to_string(),
                e.weight.to_string(),
                e.state.clone(),
                e.counter.clone(),
                c(&probe),
                c(&s.managed.to_string()),
            ]);
        }
    }
    table(header, &rows)
}

/// `xlb get ep` as a table.
pub fn ep_table(l: &EpStatusList, wide: bool) -> String {
    let mut header = vec![
        "HOST", "NAME", "PTYPE", "PORT", "DURATION", "RETRIES", "STATE",
    ];
    if wide {
        header.extend(["REQ", "RESP", "MIN", "AVG", "MAX"]);
    }
    let rows: Vec<Vec<String>> = l
        .attr
        .iter()
        .map(|e| {
            let mut row = vec![
                e.hostname.clone(),
                e.name.clone(),
                e.probetype.clone(),
                e.probeport.to_string(),
                e.probeduration.to_string(),
                e.inactiveretries.to_string(),
                e.currstate.clone(),
            ];
            if wide {
                row.extend([
                    e.probereq.clone(),
                    e.proberesp.clone(),
                    e.mindelay.clone(),
                    e.avgdelay.clone(),
                    e.maxdelay.clone(),
                ]);
            }
            row
        })
        .collect();
    table(&header, &rows)
}

/// `xlb get ct` as a table.
pub fn ct_table(l: &[CtAttr]) -> String {
    let rows: Vec<Vec<String>> = l
        .iter()
        .map(|c| {
            vec![
                c.serv_name.clone(),
                format!("{}:{}", c.source_ip, c.source_port),
                format!("{}:{}", c.destination_ip, c.destination_port),
                c.protocol.clone(),
                c.conntrack_state.clone(),
                c.conntrack_act.clone(),
                c.packets.to_string(),
                c.bytes.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "SERVICE",
            "SOURCE",
            "DESTINATION",
            "PROTO",
            "STATE",
            "ACT",
            "PACKETS",
            "BYTES",
        ],
        &rows,
    )
}

/// `xlb get cistate` as a table.
pub fn ci_table(l: &[CiStateOut]) -> String {
    let clustered = l.iter().any(|c| c.set_by.is_some());
    if !clustered {
        let rows: Vec<Vec<String>> = l
            .iter()
            .map(|c| vec![c.instance.clone(), c.state.clone(), c.vip.clone()])
            .collect();
        return table(&["INSTANCE", "STATE", "VIP"], &rows);
    }
    // With xlb's election: who set each role, since when and why, then the members.
    let rows: Vec<Vec<String>> = l
        .iter()
        .map(|c| {
            vec![
                c.instance.clone(),
                c.state.clone(),
                c.vip.clone(),
                c.set_by.clone().unwrap_or_default(),
                c.holder.clone().unwrap_or_else(|| "-".into()),
                c.changed_secs_ago
                    .map_or_else(String::new, |s| format!("{s:.1}s ago")),
                c.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "INSTANCE", "STATE", "VIP", "SET BY", "HOLDER", "CHANGED", "WHY",
        ],
        &rows,
    );
    if let Some(members) = l.iter().find_map(|c| c.members.as_ref()) {
        let rows: Vec<Vec<String>> = members
            .iter()
            .map(|m| {
                vec![
                    m.addr.clone(),
                    if m.me { "this node" } else { "" }.into(),
                    if m.up { "up" } else { "down" }.into(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(&["MEMBER", "", "HEARD"], &rows));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_ep_sends_the_knobs_only_when_given() {
        let a = EpArgs {
            host: "10.0.0.1".into(),
            probetype: "tcp".into(),
            probeport: 6443,
            period: 1,
            ..Default::default()
        };
        let b = ep_body(&a).expect("valid");
        assert!(b.get("probeTimeout").is_none() && b.get("activeReTries").is_none());
        let b = ep_body(&EpArgs {
            probe_timeout: Some("0.5".into()),
            active_retries: Some("5".into()),
            ..a.clone()
        })
        .expect("valid");
        assert_eq!(b["probeTimeout"], 0.5);
        assert_eq!(b["activeReTries"], 5);
        // Range checks are the server's; non-numbers never leave the CLI.
        let neg = ep_body(&EpArgs {
            probe_timeout: Some("-1".into()),
            ..a.clone()
        })
        .expect("a number");
        assert_eq!(neg["probeTimeout"], -1);
        let err = ep_body(&EpArgs {
            active_retries: Some("five".into()),
            ..a
        })
        .expect_err("not a number");
        assert_eq!(
            err.to_string(),
            r#"--active-retries: "five" is not a number"#
        );
    }

    #[test]
    fn create_lb_builds_one_rule_per_port() {
        let a = LbArgs {
            vip: "192.0.2.1".into(),
            ports: vec![("tcp".into(), "80:8080,443".into())],
            endpoints: "10.0.0.1:1,10.0.0.2:2".into(),
            mode: Mode::Fullnat,
            sel: Sel::Hash,
            monitor: true,
            ..Default::default()
        };
        let b = lb_bodies(&a).expect("valid");
        assert_eq!(b.len(), 2);
        assert_eq!(b[0]["serviceArguments"]["port"], 80);
        assert_eq!(b[0]["serviceArguments"]["mode"], 2);
        assert_eq!(b[0]["serviceArguments"]["sel"], 1);
        assert_eq!(b[0]["endpoints"][1]["targetPort"], 8080);
        assert_eq!(b[0]["endpoints"][1]["weight"], 2);
        assert_eq!(b[1]["endpoints"][0]["targetPort"], 443);
        assert!(
            b[0]["serviceArguments"].get("dsrIpip").is_none(),
            "loxilb's body unless asked"
        );
        let ipip = LbArgs {
            mode: Mode::Dsr,
            dsr_ipip: true,
            ..a.clone()
        };
        assert_eq!(
            lb_bodies(&ipip).expect("valid")[0]["serviceArguments"]["dsrIpip"],
            true
        );
        assert_eq!(
            lb_delete_paths(&a).expect("valid")[0],
            "/config/loadbalancer/externalipaddress/192.0.2.1/port/80/protocol/tcp?block=0"
        );
        let attach = LbArgs {
            oper: Oper::Attach,
            secips: "192.0.2.2".into(),
            ..a.clone()
        };
        let b = lb_bodies(&attach).expect("valid");
        assert_eq!(b[0]["serviceArguments"]["oper"], 1);
        assert_eq!(b[0]["secondaryIPs"][0]["secondaryIP"], "192.0.2.2");
        let no_ports = LbArgs {
            ports: Vec::new(),
            ..a
        };
        assert!(lb_bodies(&no_ports).is_err());
    }

    #[test]
    fn server_spellings() {
        assert_eq!(server_url("10.0.0.1", None), "http://10.0.0.1:11111");
        assert_eq!(server_url("10.0.0.1", Some(8181)), "http://10.0.0.1:8181");
        assert_eq!(server_url("10.0.0.1:9", None), "http://10.0.0.1:9");
        assert_eq!(server_url("10.0.0.1:9", Some(8)), "http://10.0.0.1:8");
        assert_eq!(server_url("fd00::1", None), "http://[fd00::1]:11111");
        assert_eq!(server_url("[fd00::1]:9", None), "http://[fd00::1]:9");
        assert_eq!(
            server_url("https://lb.example/", None),
            "https://lb.example"
        );
        assert_eq!(
            server_url("https://lb.example:1", Some(2)),
            "https://lb.example:2"
        );
        assert!(Client::new("127.0.0.1", None).is_local());
        assert!(Client::new("http://[::1]:5", None).is_local());
        assert!(!Client::new("192.0.2.1", None).is_local());
    }

    #[test]
    fn lb_table_is_one_line_per_rule_and_wide_one_per_endpoint() {
        let l: LbRuleList = crate::model::from_json(json!({"lbAttr": [{
            "serviceArguments": {"externalIP": "192.0.2.1", "port": 80, "protocol": "tcp",
                                 "mode": 2, "sel": 1, "monitor": true, "inactiveTimeOut": 30},
            "endpoints": [
                {"endpointIP": "10.0.0.1", "targetPort": 8080, "weight": 1, "state": "active", "counter": "1:2"},
                {"endpointIP": "10.0.0.2", "targetPort": 8080, "weight": 1, "state": "active", "counter": "3:4"}
            ]
        }]}))
        .expect("rules");
        let t = lb_table(&l, false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2, "{t}");
        assert!(lines[0].starts_with("EXT IP") && lines[0].contains("# OF ENDPOINTS"));
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "192.0.2.1",
                "80",
                "tcp",
                "0",
                "hash",
                "fullnat",
                "2",
                "30",
                "On"
            ],
            "(the empty name takes no cell)"
        );
        let w = lb_table(&l, true);
        assert_eq!(w.lines().count(), 3, "{w}");
        assert!(w
            .lines()
            .nth(2)
            .is_some_and(|l| l.trim_start().starts_with("10.0.0.2")));
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    LONGER\nxyz  1\n");
    }
}
