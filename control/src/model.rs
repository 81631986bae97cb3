//! loxilb's wire types (REST bodies and `lbconfig.txt`/`EPconfig.txt` entries),
//! how they are parsed, and the schema checks go-openapi makes before a handler runs.
//!
//! Keys are matched case-insensitively, as Go's `encoding/json` does: the parsed
//! JSON has every object key lower-cased before it is deserialised into these
//! types, whose Rust field names are the lower-cased JSON keys. They serialise
//! with loxilb's spelling, fields in the order Go's go-swagger models print them
//! (sorted by name), zero values omitted except where loxilb prints them.
//! Unknown keys are ignored; `null` means "absent".

use std::time::Duration;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Number, Value};

use crate::error::ApiError;

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// xlb's optional probe knobs are JSON numbers kept as written (the
/// handler checks their range); anything else is refused naming the field,
/// which serde's own message would not.
fn number<'de, D: Deserializer<'de>>(d: D, field: &str) -> Result<Option<Number>, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) => Ok(Some(n)),
        other => Err(D::Error::custom(format!(
            "{field} must be a number, not {}",
            json_kind(&other)
        ))),
    }
}

fn de_probe_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Number>, D::Error> {
    number(d, "probeTimeout")
}

fn de_active_retries<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Number>, D::Error> {
    number(d, "activeReTries")
}

fn de_probe_reply_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Number>, D::Error> {
    number(d, "serviceArguments.probeReplyTimeout")
}

fn de_probe_active_retries<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Number>, D::Error> {
    number(d, "serviceArguments.probeActiveRetries")
}

/// A probe timeout as GET prints it: whole seconds as an integer, else the
/// fraction (what was posted, `1` or `0.5`, comes back as posted).
pub fn seconds(d: Duration) -> Number {
    if d.subsec_nanos() == 0 {
        Number::from(d.as_secs())
    } else {
        Number::from_f64(d.as_secs_f64()).unwrap_or_else(|| Number::from(d.as_secs()))
    }
}

/// loxilb prints empty `secondaryIPs`/`allowedSources` as `null`.
fn null_if_empty<T: Serialize, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
    if v.is_empty() {
        s.serialize_none()
    } else {
        s.collect_seq(v)
    }
}

/// A load-balancer rule: the body of `POST /config/loadbalancer`, an entry of
/// `GET /config/loadbalancer/all` and of `lbconfig.txt`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LbRule {
    /// Client prefixes allowed to use the rule (empty: everyone).
    #[serde(rename(serialize = "allowedSources"), serialize_with = "null_if_empty")]
    pub allowedsources: Vec<AllowedSource>,
    /// Backends.
    pub endpoints: Vec<LbEndpoint>,
    /// Extra VIPs (SCTP multihoming).
    #[serde(rename(serialize = "secondaryIPs"), serialize_with = "null_if_empty")]
    pub secondaryips: Vec<SecondaryIp>,
    /// The rule itself.
    #[serde(rename(serialize = "serviceArguments", deserialize = "servicearguments"))]
    pub serviceargs: ServiceArgs,
}

/// `serviceArguments` of a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceArgs {
    /// Advertise the VIP over BGP (accepted and stored; xlb does not speak BGP).
    #[serde(skip_serializing_if = "is_false")]
    pub bgp: bool,
    /// loxilb's block (mark); part of the rule's identity.
    #[serde(skip_serializing_if = "is_zero")]
    pub block: i64,
    /// xlb extension, not in loxilb's API: with mode 3 (DSR) on an IPv4 VIP,
    /// send packets to the endpoint in IPIP instead of rewriting only the
    /// MACs, so endpoints may sit behind a router. Omitted when false, so
    /// rules without it print exactly as loxilb prints them.
    #[serde(rename(serialize = "dsrIpip"), skip_serializing_if = "is_false")]
    pub dsripip: bool,
    /// Egress rule.
    #[serde(skip_serializing_if = "is_false")]
    pub egress: bool,
    /// The VIP.
    #[serde(rename(serialize = "externalIP"))]
    pub externalip: String,
    /// Ingress host URL (full-proxy only).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// Idle timeout in seconds; 0 = 240 (tcp/sctp) or 20.
    #[serde(rename(serialize = "inactiveTimeOut"), skip_serializing_if = "is_zero")]
    pub inactivetimeout: i64,
    /// Owned by a controller (kube-loxilb); `save` skips these.
    #[serde(skip_serializing_if = "is_false")]
    pub managed: bool,
    /// NAT mode 0..5.
    #[serde(skip_serializing_if = "is_zero")]
    pub mode: i64,
    /// Health-probe the endpoints.
    #[serde(skip_serializing_if = "is_false")]
    pub monitor: bool,
    /// Rule name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// 0 add/replace, 1 attach endpoints, 2 detach endpoints.
    #[serde(skip_serializing_if = "is_zero")]
    pub oper: i64,
    /// (First) port; 0 for icmp.
    pub port: i64,
    /// Last port of a range (0 = single port).
    #[serde(rename(serialize = "portMax"), skip_serializing_if = "is_zero")]
    pub portmax: i64,
    /// Private (NAT'd) address of the VIP; stored and shown, not used.
    #[serde(
        rename(serialize = "privateIP"),
        skip_serializing_if = "String::is_empty"
    )]
    pub privateip: String,
    /// xlb extension, not in loxilb's API: successes in a row before a down
    /// endpoint of a monitored rule is up again (the entries'
    /// `activeReTries`; absent: 1, loxilb's behaviour). Omitted when absent.
    #[serde(
        rename(serialize = "probeActiveRetries"),
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_probe_active_retries"
    )]
    pub probeactiveretries: Option<Number>,
    /// xlb extension, not in loxilb's API: how long one probe of a monitored
    /// rule's endpoint may take, in seconds, below the rule's probe interval
    /// (the entries' `probeTimeout`; a rule's own `probeTimeout` is loxilb's
    /// interval). Absent: the method's default, as in loxilb.
    #[serde(
        rename(serialize = "probeReplyTimeout"),
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_probe_reply_timeout"
    )]
    pub probereplytimeout: Option<Number>,
    /// Failures before an endpoint goes down.
    #[serde(rename(serialize = "probeRetries"), skip_serializing_if = "is_zero")]
    pub proberetries: i64,
    /// Probe interval in seconds.
    #[serde(rename(serialize = "probeTimeout"), skip_serializing_if = "is_zero")]
    pub probetimeout: i64,
    /// Probe port (tcp/udp/sctp probes).
    #[serde(skip_serializing_if = "is_zero")]
    pub probeport: i64,
    /// Probe request.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub probereq: String,
    /// Expected probe response.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub proberesp: String,
    /// tcp, udp, sctp, ping, none ("" = the rule's protocol).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub probetype: String,
    /// tcp, udp, sctp, icmp.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// Send a PROXY v2 header.
    #[serde(skip_serializing_if = "is_false")]
    pub proxyprotocolv2: bool,
    /// TLS termination mode (full-proxy only).
    #[serde(skip_serializing_if = "is_zero")]
    pub security: i64,
    /// Endpoint selection 0..6.
    #[serde(skip_serializing_if = "is_zero")]
    pub sel: i64,
    /// Source-NAT rule.
    #[serde(skip_serializing_if = "is_false")]
    pub snat: bool,
}

/// One backend of a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LbEndpoint {
    /// "<packets>:<bytes>" (GET only; ignored on input).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub counter: String,
    /// Backend address.
    #[serde(rename(serialize = "endpointIP"))]
    pub endpointip: String,
    /// "active" or "inactive" (GET only; ignored on input).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// Backend port (0 keeps the client's port).
    #[serde(rename(serialize = "targetPort"))]
    pub targetport: i64,
    /// Weight (a percentage for sel 2).
    pub weight: i64,
}

/// A secondary VIP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecondaryIp {
    /// The address.
    #[serde(
        rename(serialize = "secondaryIP"),
        skip_serializing_if = "String::is_empty"
    )]
    pub secondaryip: String,
}

/// An allowed client prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AllowedSource {
    /// "a.b.c.d/n".
    #[serde(skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

/// `GET /config/loadbalancer/all` and `lbconfig.txt`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbRuleList {
    /// The rules.
    #[serde(rename(serialize = "lbAttr", deserialize = "lbattr"), default)]
    pub lb_attr: Vec<LbRule>,
}

/// A health-probe entry: the body of `POST /config/endpoint` and an `EPconfig.txt` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EpProbe {
    /// xlb extension, not in loxilb's API: successes in a row before a down
    /// endpoint is up again (absent: 1, loxilb's behaviour). Omitted when absent.
    #[serde(
        rename(serialize = "activeReTries"),
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_active_retries"
    )]
    pub activeretries: Option<Number>,
    /// The endpoint's address.
    #[serde(rename(serialize = "hostName"))]
    pub hostname: String,
    /// Failures before the endpoint goes down (default 2).
    #[serde(rename(serialize = "inactiveReTries"), skip_serializing_if = "is_zero")]
    pub inactiveretries: i64,
    /// Entry name; default "<host>_<probeType>_<port>".
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Probe interval in seconds (default 60).
    #[serde(rename(serialize = "probeDuration"), skip_serializing_if = "is_zero")]
    pub probeduration: i64,
    /// Port to probe.
    #[serde(rename(serialize = "probePort"), skip_serializing_if = "is_zero")]
    pub probeport: i64,
    /// Request (URI for http/https).
    #[serde(
        rename(serialize = "probeReq"),
        skip_serializing_if = "String::is_empty"
    )]
    pub probereq: String,
    /// Expected response.
    #[serde(
        rename(serialize = "probeResp"),
        skip_serializing_if = "String::is_empty"
    )]
    pub proberesp: String,
    /// xlb extension, not in loxilb's API: how long one probe may take, in
    /// seconds (fractions allowed), below `probeDuration`. Absent: the
    /// method's default (2 s http/https, 1 s otherwise), as in loxilb.
    #[serde(
        rename(serialize = "probeTimeout"),
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_probe_timeout"
    )]
    pub probetimeout: Option<Number>,
    /// tcp, udp, sctp, ping, http, https, none.
    #[serde(
        rename(serialize = "probeType"),
        skip_serializing_if = "String::is_empty"
    )]
    pub probetype: String,
}

/// Body of `POST /config/endpointhoststate`: an operator's verdict on a host
/// that may serve several endpoints ("red" holds it down, "green" or
/// "yellow" releases it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EpHostState {
    /// The host's address (a `/32` or `/128` suffix is accepted).
    #[serde(rename(serialize = "hostName"))]
    pub hostname: String,
    /// Only endpoints on this port (0: every port).
    #[serde(rename(serialize = "epPort"))]
    pub epport: i64,
    /// Only endpoints of this protocol (empty: every protocol).
    #[serde(rename(serialize = "epProto"))]
    pub epproto: String,
    /// "green", "yellow" or "red".
    pub state: String,
}

/// An entry of `GET /config/endpoint/all`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EpProbeStatus {
    /// Successes in a row before a down endpoint is up again (when set).
    #[serde(
        rename(serialize = "activeReTries"),
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_active_retries"
    )]
    pub activeretries: Option<Number>,
    /// Average probe delay.
    #[serde(
        rename(serialize = "avgDelay"),
        skip_serializing_if = "String::is_empty"
    )]
    pub avgdelay: String,
    /// "ok" or "nok".
    #[serde(
        rename(serialize = "currState"),
        skip_serializing_if = "String::is_empty"
    )]
    pub currstate: String,
    /// The endpoint's address.
    #[serde(
        rename(serialize = "hostName"),
        skip_serializing_if = "String::is_empty"
    )]
    pub hostname: String,
    /// Failures before the endpoint goes down.
    #[serde(rename(serialize = "inactiveReTries"), skip_serializing_if = "is_zero")]
    pub inactiveretries: i64,
    /// Largest probe delay.
    #[serde(
        rename(serialize = "maxDelay"),
        skip_serializing_if = "String::is_empty"
    )]
    pub maxdelay: String,
    /// Smallest probe delay.
    #[serde(
        rename(serialize = "minDelay"),
        skip_serializing_if = "String::is_empty"
    )]
    pub mindelay: String,
    /// Entry name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Probe interval in seconds.
    #[serde(rename(serialize = "probeDuration"), skip_serializing_if = "is_zero")]
    pub probeduration: i64,
    /// Port probed.
    #[serde(rename(serialize = "probePort"), skip_serializing_if = "is_zero")]
    pub probeport: i64,
    /// Request.
    #[serde(
        rename(serialize = "probeReq"),
        skip_serializing_if = "String::is_empty"
    )]
    pub probereq: String,
    /// Expected response.
    #[serde(
        rename(serialize = "probeResp"),
        skip_serializing_if = "String::is_empty"
    )]
    pub proberesp: String,
    /// How long one probe may take, in seconds (when set).
    #[serde(
        rename(serialize = "probeTimeout"),
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_probe_timeout"
    )]
    pub probetimeout: Option<Number>,
    /// Probe type.
    #[serde(
        rename(serialize = "probeType"),
        skip_serializing_if = "String::is_empty"
    )]
    pub probetype: String,
}

impl EpProbeStatus {
    /// The POST form of this entry (what `EPconfig.txt` needs).
    pub fn to_probe(&self) -> EpProbe {
        EpProbe {
            activeretries: self.activeretries.clone(),
            hostname: self.hostname.clone(),
            inactiveretries: self.inactiveretries,
            name: self.name.clone(),
            probeduration: self.probeduration,
            probeport: self.probeport,
            probereq: self.probereq.clone(),
            proberesp: self.proberesp.clone(),
            probetimeout: self.probetimeout.clone(),
            probetype: self.probetype.clone(),
        }
    }
}

/// `GET /config/endpoint/all`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpStatusList {
    /// The entries.
    #[serde(rename(serialize = "Attr", deserialize = "attr"), default)]
    pub attr: Vec<EpProbeStatus>,
}

/// `EPconfig.txt`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpProbeList {
    /// The entries.
    #[serde(rename(serialize = "Attr", deserialize = "attr"), default)]
    pub attr: Vec<EpProbe>,
}

impl Schema for CiStateIn {
    /// `CIStatusEntry` has no required fields or enums; xlb bounds the name.
    fn check_schema(&self, _: &Value) -> Result<(), ApiError> {
        check_len(&self.instance, MAX_NAME, "instance")
    }
}

/// Body of `POST /config/cistate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CiStateIn {
    /// Instance name (default "llb-inst0").
    pub instance: String,
    /// MASTER, BACKUP, FAULT, STOP, NOT_DEFINED.
    pub state: String,
    /// The instance's virtual IP.
    pub vip: String,
}

/// An entry of `GET /config/cistate/all`: loxilb's four fields, then, when
/// xlb's election runs (`--cluster`), xlb's own (absent otherwise, so a
/// single node answers exactly as loxilb).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CiStateOut {
    /// Instance name.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub instance: String,
    /// State.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub state: String,
    /// Sync state: always `null`, as loxilb never sets it (its model marks
    /// it required, so it is always printed).
    #[serde(default)]
    pub sync: Option<i64>,
    /// Virtual IP.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub vip: String,
    /// xlb: who set the role, `api` or `election`.
    #[serde(rename = "setBy", skip_serializing_if = "Option::is_none", default)]
    pub set_by: Option<String>,
    /// xlb: seconds since the role last changed.
    #[serde(
        rename = "changedSecondsAgo",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub changed_secs_ago: Option<f64>,
    /// xlb: why the role is what it is.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// xlb: the member holding the election's instances, if known.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub holder: Option<String>,
    /// xlb: every member of the cluster and whether it is heard.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub members: Option<Vec<CiMember>>,
}

/// A cluster member in `GET /config/cistate/all` (xlb's own field).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiMember {
    /// Its election address.
    pub addr: String,
    /// This node.
    pub me: bool,
    /// Heard within the last second.
    pub up: bool,
}

/// Body of `POST /config/params`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OperParams {
    /// trace, debug, info, error, warning, notice, critical, emergency, alert.
    #[serde(rename(serialize = "logLevel"))]
    pub loglevel: String,
}

/// An entry of `GET /config/conntrack/all`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtAttr {
    /// Bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes: i64,
    /// NAT action, e.g. "fdnat-10.0.0.5:8080".
    #[serde(
        rename = "conntrackAct",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub conntrack_act: String,
    /// Connection state, e.g. "est".
    #[serde(
        rename = "conntrackState",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub conntrack_state: String,
    /// Destination address (the VIP).
    #[serde(
        rename = "destinationIP",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub destination_ip: String,
    /// Destination port.
    #[serde(rename = "destinationPort", default, skip_serializing_if = "is_zero")]
    pub destination_port: i64,
    /// Packets.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub packets: i64,
    /// Protocol name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// Rule name.
    #[serde(rename = "servName", default, skip_serializing_if = "String::is_empty")]
    pub serv_name: String,
    /// Client address.
    #[serde(rename = "sourceIP", default, skip_serializing_if = "String::is_empty")]
    pub source_ip: String,
    /// Client port.
    #[serde(rename = "sourcePort", default, skip_serializing_if = "is_zero")]
    pub source_port: i64,
}

/// Lower-case every object key (Go's case-insensitive field matching) and drop
/// `null` values and `null` array items (Go leaves those fields at zero).
pub fn normalise_keys(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.to_lowercase(), normalise_keys(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .filter(|v| !v.is_null())
                .map(normalise_keys)
                .collect(),
        ),
        other => other,
    }
}

/// Deserialise any of this module's loxilb types the way Go would: keys
/// case-insensitive. (The derived `Deserialize` impls expect lower-cased keys;
/// always go through this or [`parse_body`]/[`parse_value`].)
pub fn from_json<T: DeserializeOwned>(v: Value) -> serde_json::Result<T> {
    serde_json::from_value(normalise_keys(v))
}

/// A request type with go-openapi's schema checks (required fields, enums).
pub trait Schema: DeserializeOwned {
    /// Check `self`, parsed from the normalised JSON `v` (which tells which
    /// keys were present); first failure only, in go-swagger's order.
    fn check_schema(&self, v: &Value) -> Result<(), ApiError>;
}

/// Parse a request body as go-openapi would: empty → required (422), not JSON
/// or not fitting `T` → 400, schema violations → 422.
pub fn parse_body<T: Schema>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::Required("attr in body".into()));
    }
    let raw: Value = serde_json::from_slice(body).map_err(|e| ApiError::Parse(e.to_string()))?;
    parse_value(raw)
}

/// [`parse_body`] for an already-parsed JSON value (config-file entries).
pub fn parse_value<T: Schema>(raw: Value) -> Result<T, ApiError> {
    if !raw.is_object() {
        return Err(ApiError::Parse(format!(
            "json: cannot unmarshal {} into an object",
            json_kind(&raw)
        )));
    }
    let v = normalise_keys(raw);
    let t: T = serde_json::from_value(v.clone()).map_err(|e| ApiError::Parse(e.to_string()))?;
    t.check_schema(&v)?;
    Ok(t)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn has(v: &Value, key: &str) -> bool {
    v.get(key).is_some()
}

/// The longest name (of a rule, a probe entry, a cluster instance) and
/// host text xlb keeps, in bytes. loxilb sets none; kube-loxilb's names
/// (`<namespace>_<service>:<zone>-inst<N>`, each part a DNS label of at
/// most 63) stay far below it, and a name must fit in a URL to be deleted.
pub const MAX_NAME: usize = 255;
/// The longest probe request or expected reply, in bytes.
pub const MAX_PROBE_TEXT: usize = 1024;

/// go-openapi's `maxLength`: `v` at most `max` bytes.
fn check_len(v: &str, max: usize, path: &str) -> Result<(), ApiError> {
    if v.len() <= max {
        Ok(())
    } else {
        Err(ApiError::TooLong {
            path: format!("{path} in body"),
            max,
        })
    }
}

fn check_enum<T: PartialEq + Default>(
    v: &T,
    allowed: &[T],
    path: &str,
    text: &'static str,
) -> Result<(), ApiError> {
    // go-swagger skips validation of zero-valued optional fields.
    if *v == T::default() || allowed.contains(v) {
        Ok(())
    } else {
        Err(ApiError::Enum {
            path: format!("{path} in body"),
            allowed: text,
        })
    }
}

/// Allowed `protocol` values.
pub const PROTOCOLS: &[&str] = &["tcp", "udp", "sctp", "icmp"];
/// Allowed `probetype` values of a rule (the schema's list; handlers narrow it).
pub const RULE_PROBES: &[&str] = &["tcp", "udp", "sctp", "http", "https", "ping", "none"];
/// Allowed `probeType` values of an endpoint entry.
pub const EP_PROBES: &[&str] = &["tcp", "udp", "sctp", "ping", "http", "https", "none"];
/// Allowed `logLevel` values.
pub const LOG_LEVELS: &[&str] = &[
    "trace",
    "debug",
    "info",
    "error",
    "warning",
    "notice",
    "critical",
    "emergency",
    "alert",
];

const LOG_LEVEL_TEXT: &str = "[trace debug info error warning notice critical emergency alert]";

impl Schema for LbRule {
    fn check_schema(&self, v: &Value) -> Result<(), ApiError> {
        if !has(v, "endpoints") {
            return Err(ApiError::Required("endpoints in body".into()));
        }
        if let Some(Value::Array(items)) = v.get("endpoints") {
            for (i, item) in items.iter().enumerate() {
                for (key, name) in [
                    ("endpointip", "endpointIP"),
                    ("targetport", "targetPort"),
                    ("weight", "weight"),
                ] {
                    if !has(item, key) {
                        return Err(ApiError::Required(format!("endpoints.{i}.{name} in body")));
                    }
                }
            }
        }
        let Some(sa) = v.get("servicearguments") else {
            return Err(ApiError::Required("serviceArguments in body".into()));
        };
        let s = &self.serviceargs;
        if !has(sa, "externalip") {
            return Err(ApiError::Required(
                "serviceArguments.externalIP in body".into(),
            ));
        }
        check_enum(
            &s.mode,
            &[0, 1, 2, 3, 4, 5],
            "serviceArguments.mode",
            "[0 1 2 3 4 5]",
        )?;
        check_enum(&s.oper, &[0, 1, 2], "serviceArguments.oper", "[0 1 2]")?;
        if !has(sa, "port") {
            return Err(ApiError::Required("serviceArguments.port in body".into()));
        }
        check_enum(
            &s.probetype.as_str(),
            RULE_PROBES,
            "serviceArguments.probetype",
            "[tcp udp sctp http https ping none]",
        )?;
        check_enum(
            &s.protocol.as_str(),
            PROTOCOLS,
            "serviceArguments.protocol",
            "[tcp udp sctp icmp]",
        )?;
        check_enum(
            &s.security,
            &[0, 1, 2],
            "serviceArguments.security",
            "[0 1 2]",
        )?;
        check_enum(
            &s.sel,
            &[0, 1, 2, 3, 4, 5, 6],
            "serviceArguments.sel",
            "[0 1 2 3 4 5 6]",
        )?;
        check_len(&s.name, MAX_NAME, "serviceArguments.name")?;
        check_len(&s.host, MAX_NAME, "serviceArguments.host")?;
        check_len(&s.probereq, MAX_PROBE_TEXT, "serviceArguments.probereq")?;
        check_len(&s.proberesp, MAX_PROBE_TEXT, "serviceArguments.proberesp")?;
        Ok(())
    }
}

impl Schema for EpProbe {
    fn check_schema(&self, v: &Value) -> Result<(), ApiError> {
        if !has(v, "hostname") {
            return Err(ApiError::Required("hostName in body".into()));
        }
        check_enum(
            &self.probetype.as_str(),
            EP_PROBES,
            "probeType",
            "[tcp udp sctp ping http https none]",
        )?;
        check_len(&self.name, MAX_NAME, "name")?;
        check_len(&self.probereq, MAX_PROBE_TEXT, "probeReq")?;
        check_len(&self.proberesp, MAX_PROBE_TEXT, "probeResp")
    }
}

impl Schema for EpHostState {
    fn check_schema(&self, v: &Value) -> Result<(), ApiError> {
        if !has(v, "hostname") {
            return Err(ApiError::Required("hostName in body".into()));
        }
        if !has(v, "state") {
            return Err(ApiError::Required("state in body".into()));
        }
        Ok(())
    }
}

impl Schema for OperParams {
    fn check_schema(&self, v: &Value) -> Result<(), ApiError> {
        if !has(v, "loglevel") {
            return Err(ApiError::Required("logLevel in body".into()));
        }
        // An empty level is no level (go-swagger lets a zero value through
        // its enum check; GET would then answer a level that is no level).
        if self.loglevel.is_empty() {
            return Err(ApiError::Enum {
                path: "logLevel in body".into(),
                allowed: LOG_LEVEL_TEXT,
            });
        }
        check_enum(
            &self.loglevel.as_str(),
            LOG_LEVELS,
            "logLevel",
            LOG_LEVEL_TEXT,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_case_insensitive_and_unknown_keys_ignored() {
        let body = br#"{"serviceArguments":{"externalIP":"1.2.3.4","port":80,"BGP":true,"Monitor":true,"mtls_frontend":1},"endpoints":[{"EndpointIP":"10.0.0.1","targetPort":8080,"weight":1,"state":"","counter":""}],"secondaryIPs":null}"#;
        let r: LbRule = parse_body(body).expect("parses and fits the schema");
        assert!(r.serviceargs.bgp);
        assert!(r.serviceargs.monitor);
        assert_eq!(r.endpoints[0].endpointip, "10.0.0.1");
    }

    #[test]
    fn serialises_in_loxilb_shape() {
        let r = LbRule {
            endpoints: vec![LbEndpoint {
                counter: "0:0".into(),
                endpointip: "10.0.0.5".into(),
                state: "active".into(),
                targetport: 30080,
                weight: 1,
            }],
            serviceargs: ServiceArgs {
                externalip: "192.168.80.5".into(),
                inactivetimeout: 1800,
                managed: true,
                mode: 2,
                monitor: true,
                name: "default_nginx:llb-inst0".into(),
                port: 80,
                protocol: "tcp".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&LbRuleList { lb_attr: vec![r] }).expect("json"),
            r#"{"lbAttr":[{"allowedSources":null,"endpoints":[{"counter":"0:0","endpointIP":"10.0.0.5","state":"active","targetPort":30080,"weight":1}],"secondaryIPs":null,"serviceArguments":{"externalIP":"192.168.80.5","inactiveTimeOut":1800,"managed":true,"mode":2,"monitor":true,"name":"default_nginx:llb-inst0","port":80,"protocol":"tcp"}}]}"#
        );
    }

    #[test]
    fn dsr_ipip_extension_is_shown_only_when_set() {
        let body = br#"{"serviceArguments":{"externalIP":"1.2.3.4","port":80,"mode":3,"sel":1,"DSRIPIP":true},"endpoints":[{"endpointIP":"10.0.0.1","targetPort":80,"weight":1}]}"#;
        let mut r: LbRule = parse_body(body).expect("parses and fits the schema");
        assert!(r.serviceargs.dsripip, "keys are case-insensitive");
        let sa = |r: &LbRule| serde_json::to_string(&r.serviceargs).expect("json");
        assert_eq!(
            sa(&r),
            r#"{"dsrIpip":true,"externalIP":"1.2.3.4","mode":3,"port":80,"sel":1}"#
        );
        r.serviceargs.dsripip = false;
        assert_eq!(
            sa(&r),
            r#"{"externalIP":"1.2.3.4","mode":3,"port":80,"sel":1}"#
        );
    }

    #[test]
    fn schema_errors_come_in_go_swagger_order() {
        let check = |body: &str| -> String {
            parse_body::<LbRule>(body.as_bytes())
                .expect_err("invalid")
                .to_string()
        };
        assert_eq!(
            check(r#"{"serviceArguments":{"port":80}}"#),
            "endpoints in body is required"
        );
        assert_eq!(
            check(
                r#"{"serviceArguments":{"port":80},"endpoints":[{"endpointIP":"1.1.1.1","weight":1}]}"#
            ),
            "endpoints.0.targetPort in body is required"
        );
        assert_eq!(
            check(r#"{"serviceArguments":{"port":80},"endpoints":[]}"#),
            "serviceArguments.externalIP in body is required"
        );
        assert_eq!(
            check(
                r#"{"serviceArguments":{"externalIP":"1.1.1.1","port":80,"sel":7},"endpoints":[]}"#
            ),
            "serviceArguments.sel in body should be one of [0 1 2 3 4 5 6]"
        );
        assert_eq!(
            check(r#"{"serviceArguments":{"externalIP":"1.1.1.1","sel":9},"endpoints":[]}"#),
            "serviceArguments.port in body is required"
        );
    }

    #[test]
    fn parse_errors_are_400() {
        assert!(matches!(
            parse_body::<LbRule>(b"{nope"),
            Err(ApiError::Parse(_))
        ));
        assert!(matches!(
            parse_body::<LbRule>(br#"{"serviceArguments":{"port":"80"}}"#),
            Err(ApiError::Parse(_))
        ));
        assert!(matches!(
            parse_body::<LbRule>(b"[]"),
            Err(ApiError::Parse(_))
        ));
        assert!(matches!(
            parse_body::<LbRule>(b"  "),
            Err(ApiError::Required(_))
        ));
    }
}
