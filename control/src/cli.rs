//! The operator CLI's client side, modelled on loxicmd: request bodies built
//! from flags, a small blocking HTTP client, and aligned table output.

use std::time::Duration;

use serde_json::{json, Value};

use crate::model::{CiStateOut, CtAttr, EpStatusList, LbRuleList};

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
    /// A client for `server` (e.g. `http://127.0.0.1:11111`).
    /// `server` is a URL, or `host:port` (loxicmd's `-s`/`-p` habit),
    /// which means `http://host:port`.
    pub fn new(server: &str, token: Option<String>) -> Client {
        let server = server.trim_end_matches('/');
        let base = if server.contains("://") {
            format!("{server}/netlox/v1")
        } else {
            format!("http://{server}/netlox/v1")
        };
        Client {
            base,
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
    /// dnat, onearm, fullnat, dsr (or 0..3).
    pub mode: String,
    /// rr, hash, priority, persist, lc (or 0..4).
    pub sel: String,
    /// `--monitor`.
    pub monitor: bool,
    /// `--name`.
    pub name: String,
    /// `--inactive-timeout`.
    pub inactive_timeout: u32,
    /// `--block`.
    pub block: u32,
    /// `--bgp`.
    pub bgp: bool,
    /// `--probetype`.
    pub probetype: String,
    /// `--probeport`.
    pub probeport: u16,
    /// `--allowed-sources`, comma-separated prefixes.
    pub allowed: String,
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

fn mode_number(m: &str) -> Result<i64, CliError> {
    Ok(match m {
        "" | "dnat" | "default" | "0" => 0,
        "onearm" | "1" => 1,
        "fullnat" | "2" => 2,
        "dsr" | "3" => 3,
        "fullproxy" | "4" => 4,
        "hostonearm" | "5" => 5,
        _ => return Err(CliError::Usage(format!("unknown --mode {m:?}"))),
    })
}

fn sel_number(s: &str) -> Result<i64, CliError> {
    Ok(match s {
        "" | "rr" | "roundrobin" | "0" => 0,
        "hash" | "1" => 1,
        "priority" | "2" => 2,
        "persist" | "3" => 3,
        "lc" | "leastconn" | "4" => 4,
        "n2" | "5" => 5,
        "n3" | "6" => 6,
        _ => return Err(CliError::Usage(format!("unknown --sel {s:?}"))),
    })
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
    let mode = mode_number(&a.mode)?;
    let sel = sel_number(&a.sel)?;
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
    let allowed: Vec<Value> = a
        .allowed
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|p| json!({"prefix": p.trim()}))
        .collect();
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
            }
            let endpoints: Vec<Value> = eps
                .iter()
                .map(|(ip, w)| json!({"endpointIP": ip, "targetPort": target, "weight": w}))
                .collect();
            Ok(json!({"serviceArguments": sa, "endpoints": endpoints, "allowedSources": allowed}))
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

/// `xlb get lb` as a table (one line per endpoint).
pub fn lb_table(l: &LbRuleList, wide: bool) -> String {
    let mut header = vec![
        "EXT IP", "PORT", "PROTO", "NAME", "BLOCK", "SEL", "MODE", "ENDPOINT", "EPORT", "WEIGHT",
        "STATE", "COUNTERS",
    ];
    if wide {
        header.extend(["MONITOR", "TIMEOUT", "PROBE", "MANAGED"]);
    }
    let mut rows = Vec::new();
    for r in &l.lb_attr {
        let s = &r.serviceargs;
        let port = if s.portmax != 0 && s.portmax != s.port {
            format!("{}-{}", s.port, s.portmax)
        } else {
            s.port.to_string()
        };
        for (i, e) in r.endpoints.iter().enumerate() {
            let first = i == 0;
            let c = |v: String| if first { v } else { String::new() };
            let mut row = vec![
                c(s.externalip.clone()),
                c(port.clone()),
                c(s.protocol.clone()),
                c(s.name.clone()),
                c(s.block.to_string()),
                c(name_of(&SELS, s.sel)),
                c(if s.dsripip {
                    "dsr-ipip".to_string()
                } else {
                    name_of(&MODES, s.mode)
                }),
                e.endpointip.clone(),
                e.targetport.to_string(),
                e.weight.to_string(),
                e.state.clone(),
                e.counter.clone(),
            ];
            if wide {
                let probe = if s.probetype.is_empty() {
                    String::new()
                } else {
                    format!("{}:{}", s.probetype, s.probeport)
                };
                row.extend([
                    c(s.monitor.to_string()),
                    c(s.inactivetimeout.to_string()),
                    c(probe),
                    c(s.managed.to_string()),
                ]);
            }
            rows.push(row);
        }
    }
    table(&header, &rows)
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
            mode: "fullnat".into(),
            sel: "hash".into(),
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
            mode: "dsr".into(),
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
        let bad = LbArgs {
            mode: "weird".into(),
            ..a
        };
        assert!(lb_bodies(&bad).is_err());
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    LONGER\nxyz  1\n");
    }
}
