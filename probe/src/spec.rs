//! Probe specifications: what to probe, how often, and loxilb's validation rules
//! for `/config/endpoint` (tcp/udp/sctp need a port, ping/none must not have
//! one, `inactiveReTries` ≤ 100, `probeDuration` ≤ 86400 s), plus xlb's
//! healthy threshold (`activeReTries`, 1..=100; loxilb's is always 1).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

/// loxilb's default `probeDuration`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// loxilb's default `inactiveReTries`.
pub const DEFAULT_RETRIES: u32 = 2;
/// Largest `inactiveReTries` loxilb accepts.
pub const MAX_RETRIES: u32 = 100;
/// loxilb's healthy threshold: one success brings a down endpoint back.
pub const DEFAULT_ACTIVE_RETRIES: u32 = 1;
/// Largest `probeDuration` loxilb accepts.
pub const MAX_INTERVAL: Duration = Duration::from_secs(86_400);

/// How an endpoint is probed (loxilb's `probeType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    /// TCP connect (optionally a request and an expected reply prefix).
    Tcp,
    /// UDP datagram: a reply or silence is up, ICMP port-unreachable is down.
    Udp,
    /// `HEAD http://host:port/<req>`, status 200 is up.
    Http,
    /// `GET https://host:port/<req>`, status 200 (and body == resp if set) is up.
    Https,
    /// ICMP / ICMPv6 echo.
    Ping,
    /// SCTP association (INIT / INIT-ACK / COOKIE).
    Sctp,
    /// No probing: always up.
    None,
}

impl ProbeKind {
    /// loxilb's name for the kind, as used in keys and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Tcp => "tcp",
            ProbeKind::Udp => "udp",
            ProbeKind::Http => "http",
            ProbeKind::Https => "https",
            ProbeKind::Ping => "ping",
            ProbeKind::Sctp => "sctp",
            ProbeKind::None => "none",
        }
    }

    /// Whether loxilb requires a non-zero `probePort` for this kind.
    pub fn needs_port(self) -> bool {
        matches!(self, ProbeKind::Tcp | ProbeKind::Udp | ProbeKind::Sctp)
    }

    /// Whether loxilb rejects a non-zero `probePort` for this kind.
    pub fn forbids_port(self) -> bool {
        matches!(self, ProbeKind::Ping | ProbeKind::None)
    }

    /// The timeout loxilb uses for this kind: 2 s for http/https, 1 s otherwise.
    pub fn default_timeout(self) -> Duration {
        match self {
            ProbeKind::Http | ProbeKind::Https => Duration::from_secs(2),
            _ => Duration::from_secs(1),
        }
    }
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProbeKind {
    type Err = SpecError;

    /// Case-insensitive, as loxilb's JSON matching is.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "tcp" => ProbeKind::Tcp,
            "udp" => ProbeKind::Udp,
            "http" => ProbeKind::Http,
            "https" => ProbeKind::Https,
            "ping" | "icmp" => ProbeKind::Ping,
            "sctp" => ProbeKind::Sctp,
            "none" | "" => ProbeKind::None,
            _ => return Err(SpecError::UnknownKind(s.to_string())),
        })
    }
}

/// A spec that loxilb would reject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// unknown probe type {0:?}
    #[error("unknown probe type {0:?}")]
    UnknownKind(String),
    /// {kind} probes need a port
    #[error("{kind} probes need a port")]
    PortRequired {
        /// The kind.
        kind: ProbeKind,
    },
    /// {kind} probes take no port
    #[error("{kind} probes take no port (got {port})")]
    PortForbidden {
        /// The kind.
        kind: ProbeKind,
        /// The port given.
        port: u16,
    },
    /// inactiveReTries above 100
    #[error("inactiveReTries {0} is above {MAX_RETRIES}")]
    TooManyRetries(u32),
    /// probeDuration zero or above 86400 s
    #[error("probeDuration {0:?} is not in 1..=86400 s")]
    BadInterval(Duration),
    /// zero timeout
    #[error("probe timeout must be above zero")]
    ZeroTimeout,
    /// activeReTries zero or above 100
    #[error("activeReTries {0} is not in 1..={MAX_RETRIES}")]
    BadActiveRetries(u32),
}

/// One health probe, as the endpoint API or a monitored rule describes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProbeSpec {
    /// The entry's name; empty means "use [`ProbeSpec::key`]'s derived key".
    pub name: String,
    /// The endpoint probed.
    pub host: IpAddr,
    /// The method.
    pub kind: ProbeKind,
    /// Target port (0 for ping/none; 0 for http/https means 80/443).
    pub port: u16,
    /// loxilb's `probeReq`: tcp/udp request payload, http/https URL path.
    pub req: String,
    /// loxilb's `probeResp`: expected tcp/udp reply prefix, expected https body.
    pub resp: String,
    /// loxilb's `probeDuration`: the period between probes.
    pub interval: Duration,
    /// How long one probe may take before it counts as failed.
    pub timeout: Duration,
    /// loxilb's `inactiveReTries`: consecutive failures before Down (0 acts as 1).
    pub retries: u32,
    /// xlb's `activeReTries`: consecutive successes before a Down entry is Up
    /// again; a failure in between starts the count again. An Up entry (a new
    /// one included) stays Up on success whatever this is.
    pub active_retries: u32,
}

impl ProbeSpec {
    /// A spec with loxilb's defaults: every 60 s, down after 2 failures, up
    /// after 1 success, the kind's default timeout, no request or expected reply.
    pub fn new(host: IpAddr, kind: ProbeKind, port: u16) -> Self {
        ProbeSpec {
            name: String::new(),
            host,
            kind,
            port,
            req: String::new(),
            resp: String::new(),
            interval: DEFAULT_INTERVAL,
            timeout: kind.default_timeout(),
            retries: DEFAULT_RETRIES,
            active_retries: DEFAULT_ACTIVE_RETRIES,
        }
    }

    /// loxilb's key for an entry without a name: `<host>_<type>_<port>`.
    pub fn derived_key(&self) -> String {
        format!("{}_{}_{}", self.host, self.kind, self.port)
    }

    /// The entry's key: its name, or the derived key when it has none.
    pub fn key(&self) -> String {
        if self.name.is_empty() {
            self.derived_key()
        } else {
            self.name.clone()
        }
    }

    /// loxilb's checks for `/config/endpoint` plus ours (non-zero interval
    /// and timeout). Kernel support (SCTP) is checked when the engine takes
    /// the spec, see [`crate::sctp_supported`].
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.kind.needs_port() && self.port == 0 {
            return Err(SpecError::PortRequired { kind: self.kind });
        }
        if self.kind.forbids_port() && self.port != 0 {
            return Err(SpecError::PortForbidden {
                kind: self.kind,
                port: self.port,
            });
        }
        if self.retries > MAX_RETRIES {
            return Err(SpecError::TooManyRetries(self.retries));
        }
        if self.interval.is_zero() || self.interval > MAX_INTERVAL {
            return Err(SpecError::BadInterval(self.interval));
        }
        if self.timeout.is_zero() {
            return Err(SpecError::ZeroTimeout);
        }
        if !(1..=MAX_RETRIES).contains(&self.active_retries) {
            return Err(SpecError::BadActiveRetries(self.active_retries));
        }
        Ok(())
    }

    /// Consecutive failures that take the entry down.
    pub(crate) fn failures_to_down(&self) -> u32 {
        self.retries.max(1)
    }

    /// Consecutive successes that bring a Down entry back.
    pub(crate) fn successes_to_up(&self) -> u32 {
        self.active_retries.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const H: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));

    #[test]
    fn defaults_match_loxilb() {
        let s = ProbeSpec::new(H, ProbeKind::Tcp, 80);
        assert_eq!(s.interval, Duration::from_secs(60));
        assert_eq!(s.retries, 2);
        assert_eq!(s.timeout, Duration::from_secs(1));
        assert_eq!(
            ProbeSpec::new(H, ProbeKind::Http, 80).timeout,
            Duration::from_secs(2)
        );
        assert!(s.validate().is_ok());
    }

    #[test]
    fn key_is_name_or_host_type_port() {
        let mut s = ProbeSpec::new(H, ProbeKind::Udp, 53);
        assert_eq!(s.key(), "10.0.0.5_udp_53");
        let v6 = ProbeSpec::new(IpAddr::V6(Ipv6Addr::LOCALHOST), ProbeKind::Ping, 0);
        assert_eq!(v6.key(), "::1_ping_0");
        s.name = "web".into();
        assert_eq!(s.key(), "web");
    }

    #[test]
    fn validation_rules() {
        for kind in [ProbeKind::Tcp, ProbeKind::Udp, ProbeKind::Sctp] {
            assert_eq!(
                ProbeSpec::new(H, kind, 0).validate(),
                Err(SpecError::PortRequired { kind })
            );
        }
        for kind in [ProbeKind::Ping, ProbeKind::None] {
            assert_eq!(
                ProbeSpec::new(H, kind, 5).validate(),
                Err(SpecError::PortForbidden { kind, port: 5 })
            );
            assert!(ProbeSpec::new(H, kind, 0).validate().is_ok());
        }
        assert!(ProbeSpec::new(H, ProbeKind::Http, 0).validate().is_ok());
        let mut s = ProbeSpec::new(H, ProbeKind::Tcp, 1);
        s.retries = 100;
        assert!(s.validate().is_ok());
        s.retries = 101;
        assert_eq!(s.validate(), Err(SpecError::TooManyRetries(101)));
        s.retries = 2;
        s.interval = Duration::from_secs(86_400);
        assert!(s.validate().is_ok());
        s.interval = Duration::from_secs(86_401);
        assert!(matches!(s.validate(), Err(SpecError::BadInterval(_))));
        s.interval = Duration::ZERO;
        assert!(matches!(s.validate(), Err(SpecError::BadInterval(_))));
        s.interval = Duration::from_secs(1);
        s.timeout = Duration::ZERO;
        assert_eq!(s.validate(), Err(SpecError::ZeroTimeout));
        s.timeout = Duration::from_millis(500);
        assert_eq!(s.active_retries, 1, "loxilb's healthy threshold");
        for bad in [0, 101] {
            s.active_retries = bad;
            assert_eq!(s.validate(), Err(SpecError::BadActiveRetries(bad)));
        }
        s.active_retries = 100;
        assert!(s.validate().is_ok());
    }

    #[test]
    fn kind_parses_case_insensitively() {
        assert_eq!("TCP".parse::<ProbeKind>(), Ok(ProbeKind::Tcp));
        assert_eq!("https".parse::<ProbeKind>(), Ok(ProbeKind::Https));
        assert!("gopher".parse::<ProbeKind>().is_err());
    }
}
