//! What control configures: the rules (services) with their endpoints,
//! the next hops, the balancer's ports and addresses, the source-NAT
//! settings (a [`TablesSpec`]), single-rule changes ([`ServiceChange`]),
//! and the checks a rule must pass on its own. The REST API and the config
//! files build these; [`super::Tables`] is what they build into.
//!
//! Invariant: a spec is only data; nothing here depends on a snapshot, so
//! every check here gives the same answer in a full build and in an update.

use std::net::IpAddr;

use crate::frame::PortId;
use crate::net::{Cidr, MacAddr};
use crate::select::maglev::{MaglevError, DEFAULT_TABLE_SIZE};
use crate::wire::proto;

use super::MAX_ENDPOINT_IDS;

/// Most endpoints one rule may have (loxilb's limit).
pub const MAX_ENDPOINTS_PER_SERVICE: usize = 32;

/// Default source-NAT port range. xlb reserves it in the kernel
/// (`ip_local_reserved_ports`) so the node's own connections never collide.
pub const DEFAULT_NAT_PORTS: (u16, u16) = (40000, 59999);

/// Layer-4 protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L4Proto {
    /// TCP (6)
    Tcp,
    /// UDP (17)
    Udp,
    /// SCTP (132)
    Sctp,
    /// ICMP for IPv4 VIPs, ICMPv6 for IPv6 VIPs; the port is 0.
    Icmp,
}

impl L4Proto {
    /// The IP protocol number (ICMP's is the IPv4 one; see [`L4Proto::ip_proto_for`]).
    pub fn number(self) -> u8 {
        match self {
            L4Proto::Tcp => proto::TCP,
            L4Proto::Udp => proto::UDP,
            L4Proto::Sctp => proto::SCTP,
            L4Proto::Icmp => proto::ICMP,
        }
    }
    /// The protocol number as it appears in a packet of the given family.
    pub fn ip_proto_for(self, v4: bool) -> u8 {
        match (self, v4) {
            (L4Proto::Icmp, false) => proto::ICMPV6,
            (p, _) => p.number(),
        }
    }
    /// loxilb's spelling: "tcp", "udp", "sctp", "icmp".
    pub fn name(self) -> &'static str {
        match self {
            L4Proto::Tcp => "tcp",
            L4Proto::Udp => "udp",
            L4Proto::Sctp => "sctp",
            L4Proto::Icmp => "icmp",
        }
    }
}

/// How a service rewrites traffic (loxilb's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatMode {
    /// 0: destination NAT; the client address is kept; replies must return through xlb.
    Dnat,
    /// 1: one-arm: source NAT to the balancer's own address on the backend's LAN.
    OneArm,
    /// 2: full NAT: source NAT to a balancer-owned address.
    FullNat,
    /// 3: direct server return: only the L2 header changes (optionally IPIP-encapsulated).
    Dsr,
}

/// How a service picks a backend for a new flow (loxilb's `sel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Selection {
    /// 0: round robin over active endpoints (per worker).
    RoundRobin,
    /// 1: Maglev over the 5-tuple hash.
    Hash,
    /// 2: weighted by the endpoints' weights (percentages), smooth round robin.
    Priority,
    /// 3: client-IP affinity with a timeout: a client's new flows go where
    ///    its last one went, on every worker, until it opens none for the
    ///    rule's inactivity timeout or that backend goes down or leaves,
    ///    even if backends are added meanwhile; then Maglev over the client
    ///    address places it ([`crate::select::affinity`]).
    Persist,
    /// 4: least active connections (counted per worker).
    LeastConn,
}

/// Health/administrative state of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointState {
    /// Takes new flows.
    Active,
    /// Down (probe failed or forced): takes nothing; its flows are re-selected.
    Down,
    /// Draining: no new flows, existing flows continue.
    Draining,
}

/// A backend of a service as control configures it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// Backend address (same family as the VIP).
    pub addr: IpAddr,
    /// Backend port; 0 keeps the client's destination port (port ranges).
    pub port: u16,
    /// Relative weight (percentage for `Selection::Priority`); 0 = drain.
    pub weight: u32,
    /// Health state.
    pub state: EndpointState,
}

/// Identity of a service: what loxilb keys rules by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// The VIP.
    pub vip: IpAddr,
    /// Protocol.
    pub proto: L4Proto,
    /// First port of the range (0 for ICMP).
    pub port_min: u16,
    /// Last port of the range (== `port_min` for a single port).
    pub port_max: u16,
    /// loxilb's `block`; rules that differ only in block are distinct.
    pub block: u32,
}

/// A service (load-balancer rule) as control configures it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Identity.
    pub key: ServiceKey,
    /// Backend choice.
    pub sel: Selection,
    /// NAT mode.
    pub mode: NatMode,
    /// If non-empty, only clients inside one of these prefixes are served.
    pub allowed_sources: Vec<Cidr>,
    /// 1..=32 backends.
    pub endpoints: Vec<EndpointSpec>,
    /// Idle timeout of this service's flows in seconds (already defaulted by control).
    pub inactive_timeout_s: u32,
    /// DSR only: encapsulate in IPIP (IPv4) instead of rewriting only L2.
    pub dsr_ipip: bool,
    /// Rule name, for diagnostics.
    pub name: String,
    /// Full NAT only: the source address towards the endpoints, if this
    /// service has its own (an HA instance's floating address, which moves
    /// with the instance's MASTER so that the endpoints' answers do too);
    /// `None`, or one of the other family, means the table-wide choice
    /// ([`TablesSpec::snat_addrs`], else the egress port's address).
    pub snat: Option<IpAddr>,
}

/// Where packets to a given address go next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    /// Destination MAC (the neighbour itself, or the gateway towards it).
    pub mac: MacAddr,
    /// Port to transmit on.
    pub port: PortId,
}

/// One of the balancer's ports (interfaces) and its own addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// Index used in verdicts.
    pub id: PortId,
    /// Interface name, for diagnostics.
    pub name: String,
    /// The port's MAC: source MAC of everything xlb sends on it.
    pub mac: MacAddr,
    /// The balancer's addresses on this port (one-arm source NAT uses the first of the family).
    pub addrs: Vec<IpAddr>,
}

/// Everything control wants the dataplane to do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TablesSpec {
    /// Load-balancer rules.
    pub services: Vec<ServiceSpec>,
    /// Next hop per backend (and per known client/gateway) address.
    pub next_hops: Vec<(IpAddr, NextHop)>,
    /// The balancer's ports.
    pub ports: Vec<PortSpec>,
    /// Source-NAT addresses for full NAT; if empty, the egress port's address is used.
    pub snat_addrs: Vec<IpAddr>,
    /// First and last source-NAT port (inclusive); (0, 0) = the default range.
    pub nat_ports: (u16, u16),
    /// Maglev table size (a prime); 0 = [`DEFAULT_TABLE_SIZE`].
    pub maglev_size: usize,
}

impl TablesSpec {
    /// The source-NAT port range asked for ((0, 0): the default).
    pub(super) fn effective_nat_ports(&self) -> (u16, u16) {
        if self.nat_ports == (0, 0) {
            DEFAULT_NAT_PORTS
        } else {
            self.nat_ports
        }
    }

    /// The Maglev table size asked for (0: the default).
    pub(super) fn effective_maglev_size(&self) -> usize {
        if self.maglev_size == 0 {
            DEFAULT_TABLE_SIZE
        } else {
            self.maglev_size
        }
    }
}

/// A change to one service, for [`Tables::update`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceChange {
    /// Add this service, or replace the one with the same key.
    Upsert(ServiceSpec),
    /// Remove the service with this key (nothing happens if there is none).
    Remove(ServiceKey),
}

/// Why a spec was rejected. Nothing is applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// two rules with the same identity
    #[error("duplicate rule {0}")]
    DuplicateService(String),
    /// a rule whose port range overlaps another rule on the same VIP/protocol/block
    #[error("rule {0} overlaps rule {1}")]
    OverlappingService(String, String),
    /// port_max below port_min
    #[error("rule {0}: port range is inverted")]
    BadPortRange(String),
    /// no endpoints or more than 32
    #[error("rule {0}: needs 1..=32 endpoints, has {1}")]
    EndpointCount(String, usize),
    /// endpoint family differs from the VIP's
    #[error("rule {0}: endpoint {1} is not of the VIP's address family")]
    EndpointFamily(String, IpAddr),
    /// same endpoint listed twice
    #[error("rule {0}: endpoint {1}:{2} listed twice")]
    DuplicateEndpoint(String, IpAddr, u16),
    /// DSR needs the backend port to equal the service port
    #[error("rule {0}: DSR needs targetPort equal to the service port")]
    DsrPortChange(String),
    /// IPIP only for IPv4
    #[error("rule {0}: IPIP encapsulation is only available for IPv4")]
    IpipV6(String),
    /// the NAT port range is empty or inverted
    #[error("source-NAT port range {0}-{1} is empty")]
    NatPorts(u16, u16),
    /// a port id used twice
    #[error("port id {0} configured twice")]
    DuplicatePort(PortId),
    /// too many endpoints overall
    #[error("more than {MAX_ENDPOINT_IDS} endpoints configured")]
    TooManyEndpoints,
    /// Maglev could not be built
    #[error("rule {0}: {1}")]
    Maglev(String, MaglevError),
}

impl ServiceSpec {
    pub(super) fn spec_name(&self) -> String {
        if self.name.is_empty() {
            describe(&self.key)
        } else {
            format!("{} ({})", self.name, describe(&self.key))
        }
    }
}

pub(super) fn describe(k: &ServiceKey) -> String {
    if k.port_max != k.port_min {
        format!("{}:{}-{}/{}", k.vip, k.port_min, k.port_max, k.proto.name())
    } else {
        format!("{}:{}/{}", k.vip, k.port_min, k.proto.name())
    }
}

/// Whether `b`'s port range starts inside `a`'s on the same VIP/protocol/block
/// (with `a <= b` in key order this is exactly "they overlap").
pub(super) fn overlaps(a: &ServiceKey, b: &ServiceKey) -> bool {
    a.vip == b.vip
        && a.proto == b.proto
        && a.block == b.block
        && a.port_min <= b.port_min
        && b.port_min <= a.port_max
}

/// The checks of one service that do not depend on the others.
pub(super) fn check_service(s: &ServiceSpec) -> Result<(), BuildError> {
    let n = s.endpoints.len();
    if n == 0 || n > MAX_ENDPOINTS_PER_SERVICE {
        return Err(BuildError::EndpointCount(s.spec_name(), n));
    }
    let v4 = s.key.vip.is_ipv4();
    if s.dsr_ipip && !v4 {
        return Err(BuildError::IpipV6(s.spec_name()));
    }
    for (i, e) in s.endpoints.iter().enumerate() {
        if e.addr.is_ipv4() != v4 {
            return Err(BuildError::EndpointFamily(s.spec_name(), e.addr));
        }
        if s.endpoints[..i]
            .iter()
            .any(|o| o.addr == e.addr && o.port == e.port)
        {
            return Err(BuildError::DuplicateEndpoint(s.spec_name(), e.addr, e.port));
        }
        if s.mode == NatMode::Dsr && e.port != 0 && e.port != s.key.port_min {
            return Err(BuildError::DsrPortChange(s.spec_name()));
        }
    }
    Ok(())
}
