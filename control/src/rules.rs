//! Semantic validation of rules and probe entries: wire type in, typed config out.
//!
//! [`LbRule::validate`] and [`EpProbe::validate`] are the only way a wire value
//! becomes something the state accepts; the REST API and the config files both
//! go through them. A validated rule keeps its canonical document (defaults
//! applied, `oper`/`state`/`counter` cleared) so that GET and `save` print what
//! the rule really is, and an identical re-post compares equal.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::Number;

use xlb_dataplane::net::Cidr;
use xlb_dataplane::tables::{
    EndpointSpec, EndpointState, L4Proto, NatMode, Selection, ServiceKey, ServiceSpec,
    MAX_ENDPOINTS_PER_SERVICE,
};

use crate::error::RuleError;
use crate::model::{EpHostState, EpProbe, LbRule, ServiceArgs};

/// Longest idle timeout loxilb accepts (s).
pub const MAX_INACTIVE_TIMEOUT: i64 = 86_400;
/// Default idle timeout for tcp/sctp (s).
pub const DEFAULT_TIMEOUT_TCP: u32 = 240;
/// Default idle timeout for udp/icmp (s).
pub const DEFAULT_TIMEOUT_OTHER: u32 = 20;
/// Default probe interval (s).
pub const DEFAULT_PROBE_DURATION: u32 = 60;
/// Default failures before an endpoint goes down.
pub const DEFAULT_PROBE_RETRIES: u32 = 2;
/// Most probe retries an entry may ask for.
pub const MAX_PROBE_RETRIES: i64 = 100;
/// Most successes in a row an entry may ask for (`activeReTries`), as for failures.
pub const MAX_ACTIVE_RETRIES: i64 = MAX_PROBE_RETRIES;

/// What a rule POST asks for (`oper`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oper {
    /// 0: create, or replace the endpoint list of an existing rule.
    Add,
    /// 1: add the given endpoints.
    Attach,
    /// 2: remove the given endpoints.
    Detach,
}

/// How an endpoint is health-checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeType {
    /// TCP connect.
    Tcp,
    /// UDP send, ICMP unreachable means down.
    Udp,
    /// SCTP association.
    Sctp,
    /// ICMP echo.
    Ping,
    /// HTTP HEAD.
    Http,
    /// HTTPS GET.
    Https,
    /// Always up.
    None,
}

impl ProbeType {
    /// Parse loxilb's spelling.
    pub fn parse(s: &str) -> Option<ProbeType> {
        Some(match s {
            "tcp" => ProbeType::Tcp,
            "udp" => ProbeType::Udp,
            "sctp" => ProbeType::Sctp,
            "ping" => ProbeType::Ping,
            "http" => ProbeType::Http,
            "https" => ProbeType::Https,
            "none" => ProbeType::None,
            _ => return None,
        })
    }
    /// loxilb's spelling.
    pub fn name(self) -> &'static str {
        match self {
            ProbeType::Tcp => "tcp",
            ProbeType::Udp => "udp",
            ProbeType::Sctp => "sctp",
            ProbeType::Ping => "ping",
            ProbeType::Http => "http",
            ProbeType::Https => "https",
            ProbeType::None => "none",
        }
    }
    /// Whether this probe needs a port.
    pub fn needs_port(self) -> bool {
        matches!(self, ProbeType::Tcp | ProbeType::Udp | ProbeType::Sctp)
    }
}

/// A health-probe target: what the prober runs and what GET shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Entry name (the key).
    pub name: String,
    /// Address probed.
    pub host: IpAddr,
    /// Method.
    pub probe_type: ProbeType,
    /// Port (0 for ping/none).
    pub port: u16,
    /// Request.
    pub req: String,
    /// Expected response.
    pub resp: String,
    /// Interval in seconds.
    pub duration_s: u32,
    /// Consecutive failures before down.
    pub retries: u32,
    /// How long one probe may take, below the interval (`None`: the method's
    /// default, loxilb's).
    pub timeout: Option<Duration>,
    /// Consecutive successes before a down endpoint is up again (`None`: 1, loxilb's).
    pub active_retries: Option<u32>,
}

/// xlb's probe timeout knob: seconds, fractions allowed, above zero and below
/// the interval `period_s` (named `period_field` in the message). The error
/// text names `field`.
fn probe_timeout(
    v: Option<&Number>,
    field: &str,
    period_s: u32,
    period_field: &str,
) -> Result<Option<Duration>, String> {
    let Some(n) = v else {
        return Ok(None);
    };
    let secs = n.as_f64().unwrap_or(0.0);
    if secs <= 0.0 {
        return Err(format!("{field} {n} must be above zero (seconds)"));
    }
    if secs >= f64::from(period_s) {
        return Err(format!(
            "{field} {n} must be below {period_field} ({period_s} s)"
        ));
    }
    Duration::try_from_secs_f64(secs)
        .map(Some)
        .map_err(|e| format!("{field} {n}: {e}"))
}

/// xlb's healthy threshold knob: a whole number of successes in
/// 1..=[`MAX_ACTIVE_RETRIES`]. The error text names `field`.
fn active_retries(v: Option<&Number>, field: &str) -> Result<Option<u32>, String> {
    let Some(n) = v else {
        return Ok(None);
    };
    match n.as_i64() {
        Some(r @ 1..=MAX_ACTIVE_RETRIES) => Ok(u32::try_from(r).ok()),
        _ => Err(format!(
            "{field} {n} must be a whole number in 1..={MAX_ACTIVE_RETRIES}"
        )),
    }
}

/// The key loxilb gives a probe entry without a name.
pub fn probe_key(host: IpAddr, t: ProbeType, port: u16) -> String {
    format!("{host}_{}_{port}", t.name())
}

/// Whether two endpoints are the same backend (address and port), whatever the weight.
pub fn same_backend(a: &EndpointSpec, b: &EndpointSpec) -> bool {
    a.addr == b.addr && a.port == b.port
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidRule {
    /// The service as the dataplane takes it; endpoints are `Active` here,
    /// health probing decides their state when the tables are built.
    pub service: ServiceSpec,
    /// What the POST asked for.
    pub oper: Oper,
    /// Effective monitor flag.
    pub monitor: bool,
    /// Canonical document (GET/save form, without state and counter).
    pub doc: LbRule,
}

fn port16(v: i64) -> Option<u16> {
    u16::try_from(v).ok()
}

/// Why `a` cannot be a VIP or an endpoint, if it cannot: xlb would put a
/// VIP on `lo` and answer ARP/NDP for it, and send to an endpoint as to a
/// host, so only an address of one host on a LAN or beyond will do (loxilb
/// takes any address).
pub fn not_unicast(a: IpAddr) -> Option<&'static str> {
    match a {
        _ if a.is_unspecified() => Some("unspecified"),
        _ if a.is_loopback() => Some("loopback"),
        _ if a.is_multicast() => Some("multicast"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("broadcast"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("link-local"),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some("link-local"),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().and_then(|v4| not_unicast(v4.into())),
        IpAddr::V4(_) => None,
    }
}

/// Parse a protocol name as loxilb spells it.
pub fn parse_proto(s: &str) -> Option<L4Proto> {
    Some(match s {
        "tcp" => L4Proto::Tcp,
        "udp" => L4Proto::Udp,
        "sctp" => L4Proto::Sctp,
        "icmp" => L4Proto::Icmp,
        _ => return None,
    })
}

impl LbRule {
    /// loxilb's handler checks (after the schema checks of [`crate::model::Schema`]),
    /// in loxilb's order (`AddNatLbRule`) so the first error reported is the
    /// one loxilb would report, plus xlb's refusals of what it does not
    /// implement. Yields the typed rule.
    pub fn validate(&self) -> Result<ValidRule, RuleError> {
        let s = &self.serviceargs;
        let vip: IpAddr = s
            .externalip
            .trim()
            .parse()
            .map_err(|_| RuleError::MalformedService(String::new()))?;
        if let Some(kind) = not_unicast(vip) {
            return Err(RuleError::MalformedService(format!(
                "externalIP {vip} is a {kind} address; a VIP must be a unicast address"
            )));
        }
        if !s.privateip.is_empty() && s.privateip.parse::<IpAddr>().is_err() {
            return Err(RuleError::PrivateIp);
        }
        if !(0..=MAX_INACTIVE_TIMEOUT).contains(&s.inactivetimeout) {
            return Err(RuleError::ServiceArgs(format!(
                "inactiveTimeOut {} not in 0..={MAX_INACTIVE_TIMEOUT}",
                s.inactivetimeout
            )));
        }

        // Probes.
        let probe_port = port16(s.probeport).ok_or(RuleError::ProbePort)?;
        let probe_type = match s.probetype.as_str() {
            "" => None,
            t => Some(ProbeType::parse(t).ok_or_else(|| RuleError::ProbeType(String::new()))?),
        };
        match probe_type {
            Some(ProbeType::Http | ProbeType::Https) => {
                return Err(RuleError::ProbeType(
                    "http/https probes are only accepted through /config/endpoint".into(),
                ))
            }
            Some(t) if t.needs_port() && probe_port == 0 => return Err(RuleError::ProbePort),
            Some(ProbeType::Ping | ProbeType::None) | None if probe_port != 0 => {
                return Err(RuleError::ProbePort)
            }
            _ => {}
        }
        if !(0..=MAX_PROBE_RETRIES).contains(&s.proberetries) {
            return Err(RuleError::ServiceArgs(format!(
                "probeRetries {} not in 0..={MAX_PROBE_RETRIES}",
                s.proberetries
            )));
        }
        if !(0..=MAX_INACTIVE_TIMEOUT).contains(&s.probetimeout) {
            return Err(RuleError::ServiceArgs(format!(
                "probeTimeout {} not in 0..={MAX_INACTIVE_TIMEOUT}",
                s.probetimeout
            )));
        }
        rule_probe_knobs(s).map_err(RuleError::ServiceArgs)?;
        let monitor = s.monitor || matches!(probe_type, Some(t) if t != ProbeType::None);

        let n = self.endpoints.len();
        if n == 0 || n > MAX_ENDPOINTS_PER_SERVICE {
            return Err(RuleError::EndpointsRange);
        }
        if s.protocol == "icmp" && s.port != 0 {
            return Err(RuleError::MalformedService(String::new()));
        }
        let proto = parse_proto(&s.protocol).ok_or(RuleError::MalformedProto)?;
        if proto != L4Proto::Sctp && !self.secondaryips.is_empty() {
            return Err(RuleError::SecondaryIpArgs);
        }

        // Ports and identity (xlb's checks: loxilb truncates silently).
        let port = port16(s.port)
            .ok_or_else(|| RuleError::MalformedService(format!("port {} out of range", s.port)))?;
        let port_max = match s.portmax {
            0 => port,
            p => port16(p)
                .ok_or_else(|| RuleError::MalformedService(format!("portMax {p} out of range")))?,
        };
        if proto == L4Proto::Icmp && port_max != 0 {
            return Err(RuleError::MalformedService("icmp rules use port 0".into()));
        }
        if proto != L4Proto::Icmp && port == 0 {
            return Err(RuleError::MalformedService(format!(
                "{} rules need a port",
                proto.name()
            )));
        }
        if port_max < port {
            return Err(RuleError::MalformedService(format!(
                "portMax {port_max} is below port {port}"
            )));
        }
        let block = u32::try_from(s.block)
            .map_err(|_| RuleError::ServiceArgs(format!("block {} out of range", s.block)))?;
        let oper = match s.oper {
            1 => Oper::Attach,
            2 => Oper::Detach,
            _ => Oper::Add,
        };

        // What xlb does not implement.
        let sel = match s.sel {
            0 => Selection::RoundRobin,
            1 => Selection::Hash,
            2 => Selection::Priority,
            3 => Selection::Persist,
            4 => Selection::LeastConn,
            5 => return Err(RuleError::Unsupported("sel 5 (N2)".into())),
            6 => return Err(RuleError::Unsupported("sel 6 (N3)".into())),
            v => return Err(RuleError::ServiceArgs(format!("sel {v}"))),
        };
        let mode = match s.mode {
            0 => NatMode::Dnat,
            1 => NatMode::OneArm,
            2 => NatMode::FullNat,
            3 => NatMode::Dsr,
            4 => return Err(RuleError::Unsupported("mode 4 (full-proxy)".into())),
            5 => return Err(RuleError::Unsupported("mode 5 (host-one-arm)".into())),
            v => return Err(RuleError::ServiceArgs(format!("mode {v}"))),
        };
        if s.dsripip {
            // The extension changes how DSR delivers; it means nothing to the
            // modes that rewrite addresses, so asking for it there is a mistake.
            if mode != NatMode::Dsr {
                return Err(RuleError::ServiceArgs(format!(
                    "dsrIpip (IPIP encapsulation) needs mode 3 (DSR), not mode {}",
                    s.mode
                )));
            }
            if vip.is_ipv6() {
                return Err(RuleError::ServiceArgs(
                    "dsrIpip (IPIP encapsulation) is only available for an IPv4 VIP".into(),
                ));
            }
        }
        if s.security != 0 {
            return Err(RuleError::Unsupported(format!(
                "security {} (TLS termination needs full-proxy mode)",
                s.security
            )));
        }
        if !s.host.is_empty() {
            return Err(RuleError::Unsupported(
                "host (URL-based rules need full-proxy mode)".into(),
            ));
        }
        if s.snat {
            return Err(RuleError::Unsupported("snat rules".into()));
        }
        if s.egress {
            return Err(RuleError::Unsupported("egress rules".into()));
        }
        if s.proxyprotocolv2 {
            if proto != L4Proto::Tcp {
                return Err(RuleError::ServiceArgs(
                    "proxy protocol is only for tcp".into(),
                ));
            }
            return Err(RuleError::Unsupported("proxyprotocolv2".into()));
        }
        if !self.secondaryips.is_empty() {
            return Err(RuleError::Unsupported(
                "secondaryIPs (SCTP multihoming)".into(),
            ));
        }
        let timeout_s = match s.inactivetimeout {
            0 if matches!(proto, L4Proto::Tcp | L4Proto::Sctp) => DEFAULT_TIMEOUT_TCP,
            0 => DEFAULT_TIMEOUT_OTHER,
            // In range 1..=86400 (checked above).
            t => u32::try_from(t).unwrap_or(DEFAULT_TIMEOUT_TCP),
        };

        // Endpoints.
        let mut endpoints: Vec<EndpointSpec> = Vec::with_capacity(n);
        for e in &self.endpoints {
            let addr: IpAddr = e
                .endpointip
                .trim()
                .parse()
                .map_err(|_| RuleError::MalformedLbEp)?;
            if let Some(kind) = not_unicast(addr) {
                return Err(RuleError::MalformedEndpoint(format!(
                    "endpointIP {addr} is a {kind} address; an endpoint must be a unicast address"
                )));
            }
            if vip.is_ipv4() && addr.is_ipv6() {
                return Err(RuleError::Nat46);
            }
            if vip.is_ipv6() && addr.is_ipv4() {
                return Err(RuleError::Unsupported(format!(
                    "IPv4 endpoint {addr} behind an IPv6 VIP (NAT64)"
                )));
            }
            if proto == L4Proto::Icmp && e.targetport != 0 {
                return Err(RuleError::MalformedService(String::new()));
            }
            if mode == NatMode::Dsr && e.targetport != s.port {
                return Err(RuleError::DsrPort);
            }
            let eport = port16(e.targetport).ok_or_else(|| {
                RuleError::MalformedEndpoint(format!("targetPort {} out of range", e.targetport))
            })?;
            let weight = u32::try_from(e.weight).map_err(|_| {
                RuleError::MalformedEndpoint(format!("weight {} out of range", e.weight))
            })?;
            let ep = EndpointSpec {
                addr,
                port: eport,
                weight,
                state: EndpointState::Active,
            };
            if endpoints.iter().any(|o| same_backend(o, &ep)) {
                return Err(RuleError::MalformedEndpoint(format!(
                    "{addr}:{eport} listed twice"
                )));
            }
            endpoints.push(ep);
        }
        if mode == NatMode::Dsr && sel != Selection::Hash {
            return Err(RuleError::ServiceArgs(
                "DSR (mode 3) needs sel 1 (hash)".into(),
            ));
        }
        let mut allowed = Vec::with_capacity(self.allowedsources.len());
        for a in &self.allowedsources {
            let c: Cidr = a.prefix.parse().map_err(|_| {
                RuleError::ServiceArgs(format!("allowed source {:?} is not a prefix", a.prefix))
            })?;
            if c.addr().is_ipv4() != vip.is_ipv4() {
                return Err(RuleError::ServiceArgs(format!(
                    "allowed source {c} of another address family than the VIP"
                )));
            }
            allowed.push(c);
        }

        let mut doc = self.clone();
        doc.serviceargs.oper = 0;
        doc.serviceargs.externalip = vip.to_string();
        doc.serviceargs.inactivetimeout = i64::from(timeout_s);
        doc.serviceargs.monitor = monitor;
        for e in &mut doc.endpoints {
            e.state.clear();
            e.counter.clear();
            e.endpointip = e.endpointip.trim().to_string();
        }
        Ok(ValidRule {
            service: ServiceSpec {
                key: ServiceKey {
                    vip,
                    proto,
                    port_min: port,
                    port_max,
                    block,
                },
                sel,
                mode,
                allowed_sources: allowed,
                endpoints,
                inactive_timeout_s: timeout_s,
                dsr_ipip: s.dsripip,
                name: doc.serviceargs.name.clone(),
                snat: None,
            },
            oper,
            monitor,
            doc,
        })
    }
}

impl ValidRule {
    /// The probe entry monitoring gives endpoint `e` (`None` if not monitored):
    /// the rule's probe fields, else its protocol and the endpoint's port.
    pub fn probe_for(&self, e: &EndpointSpec) -> Option<Probe> {
        if !self.monitor {
            return None;
        }
        let s = &self.doc.serviceargs;
        let (probe_type, port) = match ProbeType::parse(&s.probetype) {
            Some(t) if t.needs_port() => (t, port16(s.probeport).unwrap_or(0)),
            Some(t) => (t, 0),
            None => match self.service.key.proto {
                L4Proto::Tcp => (ProbeType::Tcp, e.port),
                L4Proto::Udp => (ProbeType::Udp, e.port),
                L4Proto::Sctp => (ProbeType::Sctp, e.port),
                L4Proto::Icmp => (ProbeType::Ping, 0),
            },
        };
        // Checked by `LbRule::validate`.
        let knobs = rule_probe_knobs(s).unwrap_or_default();
        Some(Probe {
            name: probe_key(e.addr, probe_type, port),
            host: e.addr,
            probe_type,
            port,
            req: s.probereq.clone(),
            resp: s.proberesp.clone(),
            duration_s: rule_probe_period(s),
            retries: match s.proberetries {
                0 => DEFAULT_PROBE_RETRIES,
                r => u32::try_from(r).unwrap_or(DEFAULT_PROBE_RETRIES),
            },
            timeout: knobs.timeout,
            active_retries: knobs.active_retries,
        })
    }

    /// What a re-post may change in place (endpoints, probe settings, sel,
    /// mode and DSR encapsulation, allowed sources); if none of it differs the
    /// post is a duplicate.
    pub fn updatable(&self) -> impl PartialEq + std::fmt::Debug {
        let s = &self.doc.serviceargs;
        let mut eps: Vec<_> = self
            .service
            .endpoints
            .iter()
            .map(|e| (e.addr, e.port, e.weight))
            .collect();
        eps.sort();
        let mut allowed: Vec<String> = self
            .service
            .allowed_sources
            .iter()
            .map(|c| c.to_string())
            .collect();
        allowed.sort();
        (
            eps,
            (
                s.probetype.clone(),
                s.probeport,
                s.probereq.clone(),
                s.proberesp.clone(),
                s.probetimeout,
                s.proberetries,
                s.probereplytimeout.clone(),
                s.probeactiveretries.clone(),
                self.monitor,
            ),
            s.sel,
            (s.mode, s.dsripip),
            allowed,
        )
    }
}

/// A rule's `probeReplyTimeout` and `probeActiveRetries` (xlb's knobs for
/// the entries monitoring implies), checked against its probe interval.
#[derive(Default)]
struct RuleProbeKnobs {
    timeout: Option<Duration>,
    active_retries: Option<u32>,
}

/// A rule's probe interval: loxilb's `probeTimeout`, 0 meaning the default.
fn rule_probe_period(s: &ServiceArgs) -> u32 {
    match s.probetimeout {
        0 => DEFAULT_PROBE_DURATION,
        t => u32::try_from(t).unwrap_or(DEFAULT_PROBE_DURATION),
    }
}

fn rule_probe_knobs(s: &ServiceArgs) -> Result<RuleProbeKnobs, String> {
    let period_s = rule_probe_period(s);
    Ok(RuleProbeKnobs {
        timeout: probe_timeout(
            s.probereplytimeout.as_ref(),
            "probeReplyTimeout",
            period_s,
            "probeTimeout (the rule's probe interval)",
        )?,
        active_retries: active_retries(s.probeactiveretries.as_ref(), "probeActiveRetries")?,
    })
}

impl EpProbe {
    /// loxilb's endpoint-probe checks (`validateEPHostOpts`); yields the typed
    /// entry with defaults applied.
    pub fn validate(&self) -> Result<Probe, RuleError> {
        let host: IpAddr = self
            .hostname
            .trim()
            .parse()
            .map_err(|_| RuleError::HostParse)?;
        if !(0..=MAX_PROBE_RETRIES).contains(&self.inactiveretries)
            || !(0..=MAX_INACTIVE_TIMEOUT).contains(&self.probeduration)
        {
            return Err(RuleError::HostArgs);
        }
        let probe_type = ProbeType::parse(&self.probetype).ok_or(RuleError::HostProbeType)?;
        let port = port16(self.probeport).ok_or(RuleError::HostArgs)?;
        let port = match probe_type {
            t if t.needs_port() && port == 0 => return Err(RuleError::HostProbePort),
            ProbeType::Http if port == 0 => 80,
            ProbeType::Https if port == 0 => 443,
            ProbeType::Ping | ProbeType::None => 0,
            _ => port,
        };
        let name = if self.name.is_empty() {
            probe_key(host, probe_type, port)
        } else {
            self.name.clone()
        };
        let duration_s = match self.probeduration {
            0 => DEFAULT_PROBE_DURATION,
            d => u32::try_from(d).unwrap_or(DEFAULT_PROBE_DURATION),
        };
        let timeout = probe_timeout(
            self.probetimeout.as_ref(),
            "probeTimeout",
            duration_s,
            "probeDuration",
        )
        .map_err(RuleError::HostProbeKnob)?;
        let active_retries = active_retries(self.activeretries.as_ref(), "activeReTries")
            .map_err(RuleError::HostProbeKnob)?;
        Ok(Probe {
            name,
            host,
            probe_type,
            port,
            req: self.probereq.clone(),
            resp: self.proberesp.clone(),
            duration_s,
            retries: match self.inactiveretries {
                0 => DEFAULT_PROBE_RETRIES,
                r => u32::try_from(r).unwrap_or(DEFAULT_PROBE_RETRIES),
            },
            timeout,
            active_retries,
        })
    }
}

/// Endpoints an operator holds down (`POST /config/endpointhoststate` "red"):
/// every endpoint on `host`, narrowed to one port and/or protocol if given.
/// A held endpoint leaves selection whatever its probes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostHold {
    /// The host.
    pub host: IpAddr,
    /// Only this endpoint port (0: any).
    pub port: u16,
    /// Only rules of this protocol (`None`: any).
    pub proto: Option<L4Proto>,
}

impl HostHold {
    /// Does the hold cover endpoint `e` of a rule for `proto`?
    pub fn covers_endpoint(&self, proto: L4Proto, e: &EndpointSpec) -> bool {
        self.host == e.addr
            && (self.port == 0 || self.port == e.port)
            && self.proto.is_none_or(|p| p == proto)
    }

    /// Does the hold cover probe entry `p` (GET shows it `nok`)?
    pub fn covers_probe(&self, p: &Probe) -> bool {
        let probe_proto = match p.probe_type {
            ProbeType::Tcp | ProbeType::Http | ProbeType::Https => Some(L4Proto::Tcp),
            ProbeType::Udp => Some(L4Proto::Udp),
            ProbeType::Sctp => Some(L4Proto::Sctp),
            ProbeType::Ping => Some(L4Proto::Icmp),
            ProbeType::None => None,
        };
        self.host == p.host
            && (self.port == 0 || p.port == 0 || self.port == p.port)
            && (self.proto.is_none() || probe_proto.is_none() || self.proto == probe_proto)
    }

    /// Is `other` within this one (a release of `self` also releases `other`)?
    pub fn contains(&self, other: &HostHold) -> bool {
        self.host == other.host
            && (self.port == 0 || self.port == other.port)
            && (self.proto.is_none() || self.proto == other.proto)
    }
}

impl EpHostState {
    /// Validate: yields what the request names and whether it holds it down
    /// (`red`) or releases it (`green`, and `yellow`, which loxilb's model
    /// calls degraded: a degraded host still serves).
    pub fn validate(&self) -> Result<(HostHold, bool), RuleError> {
        let host = self.hostname.trim();
        let host = match host.split_once('/') {
            Some((a, len)) => {
                let a: IpAddr = a.parse().map_err(|_| RuleError::HostParse)?;
                let full = if a.is_ipv4() { "32" } else { "128" };
                if len != full {
                    return Err(RuleError::HostState(format!(
                        "hostName {host:?} must name one host (/{full})"
                    )));
                }
                a
            }
            None => host.parse().map_err(|_| RuleError::HostParse)?,
        };
        let port = port16(self.epport)
            .ok_or_else(|| RuleError::HostState(format!("epPort {} is not a port", self.epport)))?;
        let proto = match self.epproto.trim().to_ascii_lowercase().as_str() {
            "" => None,
            "tcp" | "http" | "https" => Some(L4Proto::Tcp),
            "udp" => Some(L4Proto::Udp),
            "sctp" => Some(L4Proto::Sctp),
            "icmp" | "ping" => Some(L4Proto::Icmp),
            other => {
                return Err(RuleError::HostState(format!(
                    "epProto {other:?} is not one of tcp, udp, sctp, icmp, http, https"
                )))
            }
        };
        let hold = match self.state.trim().to_ascii_lowercase().as_str() {
            "red" => true,
            "green" | "yellow" => false,
            other => {
                return Err(RuleError::HostState(format!(
                    "state {other:?} is not one of green, yellow, red"
                )))
            }
        };
        Ok((HostHold { host, port, proto }, hold))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LbEndpoint, ServiceArgs};

    fn rule(f: impl FnOnce(&mut ServiceArgs)) -> LbRule {
        let mut s = ServiceArgs {
            externalip: "192.0.2.1".into(),
            port: 80,
            protocol: "tcp".into(),
            ..Default::default()
        };
        f(&mut s);
        LbRule {
            serviceargs: s,
            endpoints: vec![LbEndpoint {
                endpointip: "10.0.0.1".into(),
                targetport: 8080,
                weight: 1,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_applied() {
        let v = rule(|_| {}).validate().expect("valid");
        assert_eq!(v.service.inactive_timeout_s, 240);
        assert_eq!(v.doc.serviceargs.inactivetimeout, 240);
        let v = rule(|s| s.protocol = "udp".into())
            .validate()
            .expect("valid");
        assert_eq!(v.service.inactive_timeout_s, 20);
        let v = rule(|s| {
            s.probetype = "tcp".into();
            s.probeport = 8080;
        })
        .validate()
        .expect("valid");
        assert!(v.monitor, "a probe type turns monitor on");
        let p = v.probe_for(&v.service.endpoints[0]).expect("monitored");
        assert_eq!(p.name, "10.0.0.1_tcp_8080");
    }

    #[test]
    fn each_check_has_its_error() {
        let cases: Vec<(LbRule, &str)> = vec![
            (
                rule(|s| s.externalip = "x".into()),
                "malformed-service error",
            ),
            (
                rule(|s| s.protocol = String::new()),
                "malformed-proto error",
            ),
            (rule(|s| s.port = 70000), "malformed-service error"),
            (rule(|s| s.port = 0), "malformed-service error"),
            (
                rule(|s| {
                    s.protocol = "icmp".into();
                }),
                "malformed-service error",
            ),
            (rule(|s| s.portmax = 10), "malformed-service error"),
            (rule(|s| s.inactivetimeout = 86_401), "service-args error"),
            (rule(|s| s.mode = 4), "unsupported error"),
            (rule(|s| s.mode = 5), "unsupported error"),
            (rule(|s| s.sel = 5), "unsupported error"),
            (rule(|s| s.sel = 6), "unsupported error"),
            (
                rule(|s| s.probetype = "http".into()),
                "malformed-service-ptype error",
            ),
            (
                rule(|s| s.probetype = "tcp".into()),
                "malformed-service-pport error",
            ),
            (
                rule(|s| {
                    s.probetype = "ping".into();
                    s.probeport = 1;
                }),
                "malformed-service-pport error",
            ),
            (
                rule(|s| {
                    s.protocol = "udp".into();
                    s.proxyprotocolv2 = true;
                }),
                "service-args error",
            ),
            (rule(|s| s.mode = 3), "malformed-service dsr-port error"),
            (
                rule(|s| {
                    s.mode = 3;
                    s.port = 8080;
                }),
                "service-args error: DSR (mode 3) needs sel 1",
            ),
            (
                rule(|s| s.privateip = "x".into()),
                "malformed-service privateIP error",
            ),
            (
                rule(|s| s.dsripip = true),
                "service-args error: dsrIpip (IPIP encapsulation) needs mode 3 (DSR), not mode 0",
            ),
            (
                rule(|s| {
                    s.mode = 2;
                    s.dsripip = true;
                }),
                "service-args error: dsrIpip (IPIP encapsulation) needs mode 3 (DSR), not mode 2",
            ),
        ];
        for (r, want) in cases {
            let got = r.validate().expect_err("invalid").to_string();
            assert!(got.starts_with(want), "{r:?}: got {got}, want {want}");
        }
        let mut r = rule(|_| {});
        r.endpoints.clear();
        assert_eq!(r.validate(), Err(RuleError::EndpointsRange));
        let mut r = rule(|_| {});
        r.endpoints = vec![r.endpoints[0].clone(); 33];
        assert_eq!(r.validate(), Err(RuleError::EndpointsRange));
    }

    #[test]
    fn dsr_ipip_is_the_rules_own_choice() {
        let dsr = |ipip: bool| {
            rule(|s| {
                s.mode = 3;
                s.sel = 1;
                s.port = 8080;
                s.dsripip = ipip;
            })
            .validate()
            .expect("valid")
        };
        let (plain, ipip) = (dsr(false), dsr(true));
        assert!(!plain.service.dsr_ipip);
        assert!(ipip.service.dsr_ipip);
        assert!(ipip.doc.serviceargs.dsripip, "GET and save show it");
        assert_ne!(
            plain.updatable(),
            ipip.updatable(),
            "a re-post that turns it on is an update, not a duplicate"
        );
    }

    #[test]
    fn endpoint_probe_defaults_and_key() {
        let p = EpProbe {
            hostname: "10.0.0.1".into(),
            probetype: "tcp".into(),
            probeport: 6443,
            ..Default::default()
        }
        .validate()
        .expect("valid");
        assert_eq!(p.name, "10.0.0.1_tcp_6443");
        assert_eq!((p.retries, p.duration_s), (2, 60));
        let bad = EpProbe {
            hostname: "10.0.0.1".into(),
            probetype: "udp".into(),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let bad = EpProbe {
            hostname: "10.0.0.1".into(),
            probetype: "ping".into(),
            inactiveretries: 101,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
