//! The forwarding tables: what control configures, built into an immutable
//! snapshot that workers read without locks.
//!
//! Control describes the wanted state as a [`TablesSpec`] (services, endpoints,
//! next hops, the balancer's own addresses), calls [`Tables::build`] — which
//! validates everything and precomputes Maglev tables and schedules — and
//! publishes the result with [`TablesHandle::publish`]: one pointer swap (RCU).
//! Workers call [`TablesHandle::load`] once per batch. A rejected spec changes
//! nothing.
//!
//! Endpoints get a stable [`EndpointId`] that survives rebuilds as long as the
//! (service, address, port) stays configured; connection tracking stores it, so
//! existing flows keep their backend across table changes unless that backend
//! is removed or taken down.

use hashbrown::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::frame::PortId;
use crate::net::{stable_hash64, Cidr, Ip16, MacAddr};
use crate::select::maglev::{Maglev, MaglevBackend, MaglevError, DEFAULT_TABLE_SIZE};
use crate::select::weighted::weighted_schedule;

/// Most endpoints one rule may have (loxilb's limit).
pub const MAX_ENDPOINTS_PER_SERVICE: usize = 32;
/// Most endpoint ids alive at once; per-worker per-endpoint counters are sized by it.
pub const MAX_ENDPOINT_IDS: usize = 1 << 16;

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
            L4Proto::Tcp => 6,
            L4Proto::Udp => 17,
            L4Proto::Sctp => 132,
            L4Proto::Icmp => 1,
        }
    }
    /// The protocol number as it appears in a packet of the given family.
    pub fn ip_proto_for(self, v4: bool) -> u8 {
        match (self, v4) {
            (L4Proto::Icmp, false) => 58,
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

/// Default source-NAT port range. xlb reserves it in the kernel
/// (`ip_local_reserved_ports`) so the node's own connections never collide.
pub const DEFAULT_NAT_PORTS: (u16, u16) = (40000, 59999);

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

/// Dense, stable identity of an endpoint; indexes per-endpoint counters.
pub type EndpointId = u32;

/// A built endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Stable id.
    pub id: EndpointId,
    /// Address as a fixed-size key.
    pub addr: Ip16,
    /// Backend port (0 = keep the client's destination port).
    pub port: u16,
    /// Weight.
    pub weight: u32,
    /// State.
    pub state: EndpointState,
    /// Next hop towards it, if known (else packets to it drop as `NoNeighbor`).
    pub next_hop: Option<NextHop>,
    /// Source address for one-arm/full-NAT flows to this endpoint.
    pub snat_addr: Option<Ip16>,
    /// Generation of the snapshot in which this endpoint got its id. An id
    /// freed by a removed endpoint may later go to another: a flow last
    /// validated before this generation belonged to the id's former holder
    /// ([`Endpoint::holds_flow_of`]).
    pub id_since: u64,
}

impl Endpoint {
    /// Whether a flow tracked to this endpoint's id and last validated
    /// against the tables of generation `flow_gen` (its low 32 bits, as
    /// connection tracking keeps it) is this endpoint's: the id was already
    /// this endpoint's then. Compared modulo 2^32 (a flow idle across 2^31
    /// table changes is not told apart).
    #[inline]
    pub fn holds_flow_of(&self, flow_gen: u32) -> bool {
        ((self.id_since as u32).wrapping_sub(flow_gen) as i32) <= 0
    }
}

/// A built service.
#[derive(Debug, Clone)]
pub struct Service {
    /// The spec it was built from.
    pub spec: ServiceSpec,
    /// Index in [`Tables::services`].
    pub index: u32,
    /// Built endpoints, in spec order.
    pub endpoints: Vec<Endpoint>,
    /// Round-robin / priority schedule: endpoint indices of active endpoints
    /// (priority: repeated by weight, interleaved smoothly). Empty = no endpoint.
    pub schedule: Vec<u8>,
    /// Maglev table over active endpoints (only for `Hash` and `Persist`);
    /// shared with the previous snapshot when its inputs did not change.
    pub maglev: Option<Arc<Maglev>>,
    /// What the Maglev table was built from (to reuse it in the next build).
    maglev_inputs: Vec<MaglevBackend>,
    /// Idle timeout in nanoseconds.
    pub idle_timeout_ns: u64,
    /// VIP as a fixed-size key.
    pub vip: Ip16,
    /// A hash of the rule's identity (its [`ServiceKey`]), the same in
    /// every snapshot while the rule exists, unlike its index: what state
    /// kept across snapshots, such as client affinity, is keyed by.
    pub rule_key: u64,
}

/// Where an endpoint id lives in this snapshot.
#[derive(Debug, Clone, Copy)]
pub struct EndpointLoc {
    /// Service index.
    pub service: u32,
    /// Endpoint index within the service.
    pub endpoint: u8,
}

/// Where the rules of one (VIP, protocol) are listed in [`Tables`]' index.
///
/// Plain data, so copying the index for the next snapshot is a flat copy:
/// no allocation per VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VipSlot {
    /// How many rules (at least 1).
    len: u32,
    /// `len == 1`: the rule's service index itself (the usual case: one rule
    /// per VIP and protocol, found without a second memory access);
    /// otherwise where its list starts in `Tables::vip_lists`.
    at: u32,
}

/// An immutable snapshot of every table the workers need.
///
/// Built services are shared (`Arc`) between snapshots: [`Tables::update`]
/// rebuilds only the services that changed and copies the rest by pointer,
/// so a change costs what it touches plus a flat copy of the index tables
/// (plain data, no allocation per rule).
#[derive(Debug)]
pub struct Tables {
    /// Increases by one on every publish.
    pub generation: u64,
    /// Services, indexed by `Service::index`; unchanged ones are shared with
    /// the previous snapshot.
    pub services: Vec<Arc<Service>>,
    /// (vip, ip proto number) -> service indices on that VIP/protocol, sorted by
    /// key (port_min, port_max, block): see [`VipSlot`].
    by_vip: HashMap<(Ip16, u8), VipSlot>,
    /// The lists of (VIP, protocol)s with more than one rule, back to back.
    vip_lists: Vec<u32>,
    /// Entries of `vip_lists` no slot uses any more (compacted once they
    /// outnumber the used ones).
    vip_garbage: usize,
    /// VIPs (any protocol), for ICMP echo and "VIP but no rule" drops.
    vips: HashMap<Ip16, ()>,
    /// Endpoint id -> location; `None` for ids not in use.
    pub endpoint_locs: Vec<Option<EndpointLoc>>,
    /// Next hops known to this snapshot (every endpoint's, possibly more).
    pub next_hops: HashMap<Ip16, NextHop>,
    /// Ports by id.
    pub ports: Vec<PortSpec>,
    /// Port id -> index in `ports` ([`NO_PORT`] if none): [`Tables::port`]
    /// runs for every forwarded packet, so it is one index, not a scan.
    port_index: Vec<u16>,
    /// Source-NAT addresses (full NAT) and every one-arm address in use.
    pub snat_addrs: Vec<Ip16>,
    /// The configured full-NAT pools, per family (IPv4 first element family).
    snat_pool_v4: Vec<Ip16>,
    snat_pool_v6: Vec<Ip16>,
    /// The full-NAT addresses as configured (`TablesSpec::snat_addrs`).
    pub snat_spec: Vec<IpAddr>,
    /// Source-NAT port range (inclusive).
    pub nat_ports: (u16, u16),
    /// Maglev table size.
    pub maglev_size: usize,
}

/// A change to one service, for [`Tables::update`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceChange {
    /// Add this service, or replace the one with the same key.
    Upsert(ServiceSpec),
    /// Remove the service with this key (nothing happens if there is none).
    Remove(ServiceKey),
}

/// What building one service needs besides its spec.
struct BuildCtx<'a> {
    ports: &'a [PortSpec],
    snat_spec: &'a [IpAddr],
    next_hops: &'a HashMap<Ip16, NextHop>,
    maglev_size: usize,
}

impl Tables {
    /// An empty snapshot (generation 0).
    pub fn empty() -> Tables {
        Tables {
            generation: 0,
            services: Vec::new(),
            by_vip: HashMap::new(),
            vip_lists: Vec::new(),
            vip_garbage: 0,
            vips: HashMap::new(),
            endpoint_locs: Vec::new(),
            next_hops: HashMap::new(),
            ports: Vec::new(),
            port_index: Vec::new(),
            snat_addrs: Vec::new(),
            snat_pool_v4: Vec::new(),
            snat_pool_v6: Vec::new(),
            snat_spec: Vec::new(),
            nat_ports: DEFAULT_NAT_PORTS,
            maglev_size: DEFAULT_TABLE_SIZE,
        }
    }

    /// Validate `spec` and build a complete snapshot that follows `prev` (ids
    /// carried over, unchanged Maglev tables shared, generation + 1). Services
    /// are indexed in spec order. On error nothing is built.
    pub fn build(spec: TablesSpec, prev: &Tables) -> Result<Tables, BuildError> {
        let nat_ports = if spec.nat_ports == (0, 0) {
            DEFAULT_NAT_PORTS
        } else {
            spec.nat_ports
        };
        if nat_ports.0 == 0 || nat_ports.1 < nat_ports.0 {
            return Err(BuildError::NatPorts(nat_ports.0, nat_ports.1));
        }
        let maglev_size = if spec.maglev_size == 0 {
            DEFAULT_TABLE_SIZE
        } else {
            spec.maglev_size
        };
        let mut port_seen = std::collections::HashSet::new();
        for p in &spec.ports {
            if !port_seen.insert(p.id) {
                return Err(BuildError::DuplicatePort(p.id));
            }
        }
        let next_hops: HashMap<Ip16, NextHop> = spec
            .next_hops
            .iter()
            .map(|(a, n)| (Ip16::from(*a), *n))
            .collect();

        // Identity and overlap checks.
        let mut keys: Vec<(ServiceKey, &str)> = Vec::with_capacity(spec.services.len());
        for s in &spec.services {
            if s.key.port_max < s.key.port_min {
                return Err(BuildError::BadPortRange(s.spec_name()));
            }
            keys.push((s.key, &s.name));
        }
        keys.sort();
        for w in keys.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(BuildError::DuplicateService(describe(&w[0].0)));
            }
        }
        // Sorted by port_min within a VIP/protocol; rules of other blocks may sit
        // in between, so compare with the furthest-reaching earlier rule of the
        // same block, not just the neighbour.
        let mut reach: HashMap<(IpAddr, L4Proto, u32), ServiceKey> = HashMap::new();
        for &(b, _) in &keys {
            let slot = reach.entry((b.vip, b.proto, b.block)).or_insert(b);
            if *slot != b && overlaps(slot, &b) {
                return Err(BuildError::OverlappingService(describe(slot), describe(&b)));
            }
            if b.port_max >= slot.port_max {
                *slot = b;
            }
        }
        for s in &spec.services {
            check_service(s)?;
        }

        // Stable endpoint ids: keep the previous id for every surviving endpoint.
        let prev_by_key: HashMap<ServiceKey, &Service> =
            prev.services.iter().map(|p| (p.spec.key, &**p)).collect();
        let mut used = vec![false; MAX_ENDPOINT_IDS];
        let mut ids: Vec<Vec<Option<EndpointId>>> = spec
            .services
            .iter()
            .map(|s| {
                let old = prev_by_key.get(&s.key);
                s.endpoints
                    .iter()
                    .map(|e| {
                        let id = old.and_then(|o| surviving_id(o, e));
                        if let Some(id) = id {
                            used[id as usize] = true;
                        }
                        id
                    })
                    .collect()
            })
            .collect();
        let mut next_free = 0usize;
        for list in &mut ids {
            for slot in list.iter_mut().filter(|s| s.is_none()) {
                while next_free < MAX_ENDPOINT_IDS && used[next_free] {
                    next_free += 1;
                }
                if next_free == MAX_ENDPOINT_IDS {
                    return Err(BuildError::TooManyEndpoints);
                }
                used[next_free] = true;
                *slot = Some(next_free as EndpointId);
            }
        }

        let ctx = BuildCtx {
            ports: &spec.ports,
            snat_spec: &spec.snat_addrs,
            next_hops: &next_hops,
            maglev_size,
        };
        let mut services = Vec::with_capacity(spec.services.len());
        let mut by_vip: HashMap<(Ip16, u8), Vec<u32>> = HashMap::new();
        let mut vips = HashMap::new();
        let mut endpoint_locs: Vec<Option<EndpointLoc>> = Vec::new();
        let mut snat_addrs: Vec<Ip16> = spec.snat_addrs.iter().map(|a| Ip16::from(*a)).collect();
        for (si, (s, ids)) in spec.services.iter().zip(&ids).enumerate() {
            let ids: Vec<EndpointId> = ids.iter().flatten().copied().collect();
            let old = prev_by_key
                .get(&s.key)
                .copied()
                .filter(|_| prev.maglev_size == maglev_size);
            let svc = build_service(
                s,
                si as u32,
                &ids,
                &ctx,
                old,
                prev.generation + 1,
                prev_by_key.get(&s.key).copied(),
            )?;
            for (ei, e) in svc.endpoints.iter().enumerate() {
                set_loc(&mut endpoint_locs, e.id, si as u32, ei);
                add_snat(&mut snat_addrs, e.snat_addr);
            }
            by_vip
                .entry(svc.vip_key())
                .or_insert_with(Vec::new)
                .push(si as u32);
            vips.insert(svc.vip, ());
            services.push(Arc::new(svc));
        }
        let mut t = Tables {
            generation: prev.generation + 1,
            services,
            by_vip: HashMap::with_capacity(by_vip.len()),
            vip_lists: Vec::new(),
            vip_garbage: 0,
            vips,
            endpoint_locs,
            next_hops,
            port_index: port_index(&spec.ports),
            ports: spec.ports,
            snat_addrs,
            snat_pool_v4: pool(&spec.snat_addrs, true),
            snat_pool_v6: pool(&spec.snat_addrs, false),
            snat_spec: spec.snat_addrs,
            nat_ports,
            maglev_size,
        };
        for (vk, mut list) in by_vip {
            list.sort_by_key(|&i| t.services[i as usize].spec.key);
            t.set_vip_list(vk, &list);
        }
        Ok(t)
    }

    /// The snapshot after `changes` (removals first, then upserts in order;
    /// give each key at most once), everything else as in `self`: ports,
    /// source-NAT settings and the next hops of known addresses stay; the next
    /// hops of addresses `self` does not know yet are taken from `new_next_hops`.
    /// Unchanged services are shared, not rebuilt; surviving endpoints keep
    /// their ids and an id freed here is not handed out again in this step.
    /// Validates like [`Tables::build`]; on error nothing is built.
    pub fn update(
        &self,
        changes: &[ServiceChange],
        new_next_hops: &[(IpAddr, NextHop)],
    ) -> Result<Tables, BuildError> {
        let mut u = self.begin_update();
        for c in changes {
            if let ServiceChange::Remove(_) = c {
                u.apply(c, &[])?;
            }
        }
        for c in changes {
            if let ServiceChange::Upsert(_) = c {
                u.apply(c, new_next_hops)?;
            }
        }
        Ok(u.finish())
    }

    /// Start the next snapshot from this one: apply changes one by one with
    /// [`TablesUpdate::apply`] (each taken whole or refused whole), then
    /// [`TablesUpdate::finish`]. Copying the snapshot is the fixed cost of a
    /// step, so control applies every change waiting for the table lock in one
    /// step.
    pub fn begin_update(&self) -> TablesUpdate {
        TablesUpdate {
            t: Tables {
                generation: self.generation + 1,
                services: self.services.clone(),
                by_vip: self.by_vip.clone(),
                vip_lists: self.vip_lists.clone(),
                vip_garbage: self.vip_garbage,
                vips: self.vips.clone(),
                endpoint_locs: self.endpoint_locs.clone(),
                next_hops: self.next_hops.clone(),
                ports: self.ports.clone(),
                port_index: self.port_index.clone(),
                snat_addrs: self.snat_addrs.clone(),
                snat_pool_v4: self.snat_pool_v4.clone(),
                snat_pool_v6: self.snat_pool_v6.clone(),
                snat_spec: self.snat_spec.clone(),
                nat_ports: self.nat_ports,
                maglev_size: self.maglev_size,
            },
            freed: Vec::new(),
            next_free: 0,
        }
    }
    /// Whether this snapshot is what [`Tables::build`] would make of `spec`
    /// (ignoring service order and generation): control skips a publish then.
    pub fn matches(&self, spec: &TablesSpec) -> bool {
        let nat_ports = if spec.nat_ports == (0, 0) {
            DEFAULT_NAT_PORTS
        } else {
            spec.nat_ports
        };
        let maglev_size = if spec.maglev_size == 0 {
            DEFAULT_TABLE_SIZE
        } else {
            spec.maglev_size
        };
        if nat_ports != self.nat_ports
            || maglev_size != self.maglev_size
            || spec.ports != self.ports
            || spec.snat_addrs != self.snat_spec
            || spec.services.len() != self.services.len()
        {
            return false;
        }
        let hops: HashMap<Ip16, NextHop> = spec
            .next_hops
            .iter()
            .map(|(a, n)| (Ip16::from(*a), *n))
            .collect();
        spec.services.iter().all(|s| {
            self.service_index(&s.key)
                .map(|i| &self.services[i])
                .is_some_and(|b| {
                    b.spec == *s
                        && b.endpoints
                            .iter()
                            .all(|e| e.next_hop == hops.get(&e.addr).copied())
                })
        })
    }

    /// The index of the service with this key.
    pub fn service_index(&self, key: &ServiceKey) -> Option<usize> {
        let v4 = key.vip.is_ipv4();
        let slot = self
            .by_vip
            .get(&(Ip16::from(key.vip), key.proto.ip_proto_for(v4)))?;
        self.slot_list(slot)
            .iter()
            .map(|&i| i as usize)
            .find(|&i| self.services[i].spec.key == *key)
    }

    /// The service indices a VIP slot lists.
    #[inline]
    fn slot_list<'a>(&'a self, slot: &'a VipSlot) -> &'a [u32] {
        if slot.len == 1 {
            std::slice::from_ref(&slot.at)
        } else {
            let start = slot.at as usize;
            self.vip_lists
                .get(start..start + slot.len as usize)
                .unwrap_or(&[])
        }
    }

    /// The service indices on this (VIP, protocol), sorted by key.
    fn vip_list(&self, vk: &(Ip16, u8)) -> &[u32] {
        match self.by_vip.get(vk) {
            Some(slot) => self.slot_list(slot),
            None => &[],
        }
    }

    /// Replace the list of this (VIP, protocol) (empty: no rule on it).
    fn set_vip_list(&mut self, vk: (Ip16, u8), list: &[u32]) {
        let old = match list {
            [] => self.by_vip.remove(&vk),
            [i] => self.by_vip.insert(vk, VipSlot { len: 1, at: *i }),
            _ => {
                let at = self.vip_lists.len() as u32;
                self.vip_lists.extend_from_slice(list);
                self.by_vip.insert(
                    vk,
                    VipSlot {
                        len: list.len() as u32,
                        at,
                    },
                )
            }
        };
        if let Some(o) = old.filter(|o| o.len > 1) {
            self.vip_garbage += o.len as usize;
        }
        if self.vip_garbage > 64 && self.vip_garbage * 2 > self.vip_lists.len() {
            let mut lists = Vec::with_capacity(self.vip_lists.len() - self.vip_garbage);
            for slot in self.by_vip.values_mut().filter(|s| s.len > 1) {
                let start = slot.at as usize;
                let at = lists.len() as u32;
                lists.extend_from_slice(&self.vip_lists[start..start + slot.len as usize]);
                slot.at = at;
            }
            self.vip_lists = lists;
            self.vip_garbage = 0;
        }
    }

    /// Rename service index `from` to `to` in the list of this (VIP, protocol).
    fn renumber(&mut self, vk: &(Ip16, u8), from: u32, to: u32) {
        let Some(slot) = self.by_vip.get_mut(vk) else {
            return;
        };
        let list = if slot.len == 1 {
            std::slice::from_mut(&mut slot.at)
        } else {
            let start = slot.at as usize;
            &mut self.vip_lists[start..start + slot.len as usize]
        };
        for x in list.iter_mut().filter(|x| **x == from) {
            *x = to;
        }
    }

    fn remove_service(&mut self, key: &ServiceKey, freed: &mut Vec<EndpointId>) {
        let Some(i) = self.service_index(key) else {
            return;
        };
        let gone = self.services.swap_remove(i);
        // Its ids keep their (stale) locations until the step finishes, so
        // nothing in this step hands them out again.
        freed.extend(gone.endpoints.iter().map(|e| e.id));
        let vk = gone.vip_key();
        let list: Vec<u32> = self
            .vip_list(&vk)
            .iter()
            .copied()
            .filter(|&x| x as usize != i)
            .collect();
        self.set_vip_list(vk, &list);
        let v4 = gone.vip.is_v4();
        let vip_in_use = [L4Proto::Tcp, L4Proto::Udp, L4Proto::Sctp, L4Proto::Icmp]
            .iter()
            .any(|p| self.by_vip.contains_key(&(gone.vip, p.ip_proto_for(v4))));
        if !vip_in_use {
            self.vips.remove(&gone.vip);
        }
        // The former last service now sits at `i`: renumber it.
        if let Some(moved) = self.services.get(i) {
            let last = self.services.len() as u32;
            let mut m = Service::clone(moved);
            m.index = i as u32;
            for (ei, e) in m.endpoints.iter().enumerate() {
                set_loc(&mut self.endpoint_locs, e.id, i as u32, ei);
            }
            self.renumber(&m.vip_key(), last, i as u32);
            self.services[i] = Arc::new(m);
        }
    }

    /// Add or replace one service. Everything that can fail is done before
    /// the first change to `self`, so a refused upsert changes nothing.
    fn upsert_service(
        &mut self,
        s: &ServiceSpec,
        freed: &mut Vec<EndpointId>,
        next_free: &mut usize,
    ) -> Result<(), BuildError> {
        if s.key.port_max < s.key.port_min {
            return Err(BuildError::BadPortRange(s.spec_name()));
        }
        let existing = self.service_index(&s.key);
        let vk = (
            Ip16::from(s.key.vip),
            s.key.proto.ip_proto_for(s.key.vip.is_ipv4()),
        );
        if existing.is_none() {
            for &j in self.vip_list(&vk) {
                let other = self.services[j as usize].spec.key;
                if overlaps(&other, &s.key) || overlaps(&s.key, &other) {
                    let (a, b) = if other < s.key {
                        (other, s.key)
                    } else {
                        (s.key, other)
                    };
                    return Err(BuildError::OverlappingService(describe(&a), describe(&b)));
                }
            }
        }
        check_service(s)?;
        let old = existing.map(|i| self.services[i].clone());
        if old.as_ref().is_some_and(|o| o.spec == *s) {
            return Ok(());
        }
        let index = existing.unwrap_or(self.services.len());
        let mut fresh = *next_free;
        let mut ids = Vec::with_capacity(s.endpoints.len());
        for e in &s.endpoints {
            let id = match old.as_ref().and_then(|o| surviving_id(o, e)) {
                Some(id) => id,
                None => self.alloc_id(&mut fresh)?,
            };
            ids.push(id);
        }
        let ctx = BuildCtx {
            ports: &self.ports,
            snat_spec: &self.snat_spec,
            next_hops: &self.next_hops,
            maglev_size: self.maglev_size,
        };
        let svc = build_service(
            s,
            index as u32,
            &ids,
            &ctx,
            old.as_deref(),
            self.generation,
            old.as_deref(),
        )?;
        // Accepted: from here on nothing fails.
        *next_free = fresh;
        for (ei, &id) in ids.iter().enumerate() {
            set_loc(&mut self.endpoint_locs, id, index as u32, ei);
        }
        if let Some(o) = &old {
            freed.extend(
                o.endpoints
                    .iter()
                    .map(|e| e.id)
                    .filter(|id| !ids.contains(id)),
            );
        }
        for e in &svc.endpoints {
            add_snat(&mut self.snat_addrs, e.snat_addr);
        }
        match existing {
            Some(i) => self.services[i] = Arc::new(svc),
            None => {
                self.vips.insert(svc.vip, ());
                self.services.push(Arc::new(svc));
                let mut list = self.vip_list(&vk).to_vec();
                list.push(index as u32);
                list.sort_by_key(|&i| self.services[i as usize].spec.key);
                self.set_vip_list(vk, &list);
            }
        }
        Ok(())
    }

    /// The lowest id from `*next_free` on that is free. Ids freed in the
    /// current step still have their location then (it is cleared when the
    /// step finishes), so they are not handed out again in it.
    fn alloc_id(&self, next_free: &mut usize) -> Result<EndpointId, BuildError> {
        loop {
            if *next_free >= MAX_ENDPOINT_IDS {
                return Err(BuildError::TooManyEndpoints);
            }
            let id = *next_free as EndpointId;
            *next_free += 1;
            let taken = self
                .endpoint_locs
                .get(id as usize)
                .is_some_and(|l| l.is_some());
            if !taken {
                return Ok(id);
            }
        }
    }

    /// The service for a packet to `vip`/`ip_proto`/`port`, if any. For ICMP pass port 0.
    #[inline]
    pub fn lookup(&self, vip: Ip16, ip_proto: u8, port: u16) -> Option<&Service> {
        let slot = self.by_vip.get(&(vip, ip_proto))?;
        // Lists are short (usually one rule per VIP/protocol); the first range that
        // covers the port wins (ranges of one block never overlap).
        for &i in self.slot_list(slot) {
            let s: &Service = &self.services[i as usize];
            if s.spec.key.port_min <= port && port <= s.spec.key.port_max {
                return Some(s);
            }
            if s.spec.key.port_min > port {
                break;
            }
        }
        None
    }

    /// Whether `addr` is a VIP of any rule.
    #[inline]
    pub fn is_vip(&self, addr: Ip16) -> bool {
        self.vips.contains_key(&addr)
    }

    /// The full-NAT address pool of `addr`'s family, if `addr` belongs to it
    /// (empty when `addr` is a one-arm address or no pool is configured).
    #[inline]
    pub fn snat_pool(&self, addr: Ip16) -> &[Ip16] {
        let pool = if addr.is_v4() {
            &self.snat_pool_v4
        } else {
            &self.snat_pool_v6
        };
        if pool.contains(&addr) {
            pool
        } else {
            &[]
        }
    }

    /// Whether `addr` is one of the balancer's source-NAT addresses.
    #[inline]
    pub fn is_snat_addr(&self, addr: Ip16) -> bool {
        self.snat_addrs.contains(&addr)
    }

    /// The endpoint with this id, if it is still configured.
    #[inline]
    pub fn endpoint(&self, id: EndpointId) -> Option<(&Service, &Endpoint)> {
        let loc = (*self.endpoint_locs.get(id as usize)?)?;
        let s: &Service = &self.services[loc.service as usize];
        Some((s, &s.endpoints[loc.endpoint as usize]))
    }

    /// The port with this id.
    #[inline]
    pub fn port(&self, id: PortId) -> Option<&PortSpec> {
        let indexed = self
            .port_index
            .get(usize::from(id))
            .and_then(|&i| self.ports.get(usize::from(i)));
        match indexed {
            Some(p) if p.id == id => Some(p),
            // Unknown id, or `ports` (public) was edited after the build: search.
            _ => self.ports.iter().find(|p| p.id == id),
        }
    }

    /// Every VIP with its services, for the XDP program's steering map.
    pub fn vips(&self) -> impl Iterator<Item = Ip16> + '_ {
        self.vips.keys().copied()
    }
}

/// The next snapshot while it is being changed ([`Tables::begin_update`]).
#[derive(Debug)]
pub struct TablesUpdate {
    t: Tables,
    /// Ids freed in this step: they keep their (stale) locations until
    /// [`TablesUpdate::finish`], so this step never hands them out again
    /// (a connection tracked to one must not land on another endpoint).
    freed: Vec<EndpointId>,
    /// Lowest id the next allocation of this step may take.
    next_free: usize,
}

impl TablesUpdate {
    /// The snapshot as changed so far (to check keys and known next hops
    /// against; its endpoint locations are only complete after `finish`).
    pub fn tables(&self) -> &Tables {
        &self.t
    }

    /// Apply one change, whole or not at all: on error nothing of it is
    /// applied and the changes applied before stay. `new_next_hops` as in
    /// [`Tables::update`]; they are kept only if the change is accepted.
    pub fn apply(
        &mut self,
        change: &ServiceChange,
        new_next_hops: &[(IpAddr, NextHop)],
    ) -> Result<(), BuildError> {
        match change {
            ServiceChange::Remove(k) => {
                self.t.remove_service(k, &mut self.freed);
                Ok(())
            }
            ServiceChange::Upsert(s) => {
                let mut added = Vec::new();
                for (a, n) in new_next_hops {
                    let a = Ip16::from(*a);
                    if let hashbrown::hash_map::Entry::Vacant(v) = self.t.next_hops.entry(a) {
                        v.insert(*n);
                        added.push(a);
                    }
                }
                let res = self
                    .t
                    .upsert_service(s, &mut self.freed, &mut self.next_free);
                if res.is_err() {
                    for a in added {
                        self.t.next_hops.remove(&a);
                    }
                }
                res
            }
        }
    }

    /// The finished snapshot (generation one above the one it started from).
    pub fn finish(mut self) -> Tables {
        for id in self.freed {
            if let Some(slot) = self.t.endpoint_locs.get_mut(id as usize) {
                *slot = None;
            }
        }
        self.t
    }
}

impl ServiceSpec {
    fn spec_name(&self) -> String {
        if self.name.is_empty() {
            describe(&self.key)
        } else {
            format!("{} ({})", self.name, describe(&self.key))
        }
    }
}

/// Whether `b`'s port range starts inside `a`'s on the same VIP/protocol/block
/// (with `a <= b` in key order this is exactly "they overlap").
fn overlaps(a: &ServiceKey, b: &ServiceKey) -> bool {
    a.vip == b.vip
        && a.proto == b.proto
        && a.block == b.block
        && a.port_min <= b.port_min
        && b.port_min <= a.port_max
}

/// The checks of one service that do not depend on the others.
fn check_service(s: &ServiceSpec) -> Result<(), BuildError> {
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

/// The id `e` had in the previous build of its service, if it was there.
fn surviving_id(prev: &Service, e: &EndpointSpec) -> Option<EndpointId> {
    let addr = Ip16::from(e.addr);
    prev.endpoints
        .iter()
        .find(|p| p.addr == addr && p.port == e.port)
        .map(|p| p.id)
}

fn set_loc(locs: &mut Vec<Option<EndpointLoc>>, id: EndpointId, service: u32, endpoint: usize) {
    let id = id as usize;
    if locs.len() <= id {
        locs.resize(id + 1, None);
    }
    locs[id] = Some(EndpointLoc {
        service,
        endpoint: endpoint as u8,
    });
}

fn add_snat(addrs: &mut Vec<Ip16>, a: Option<Ip16>) {
    if let Some(a) = a {
        if !addrs.contains(&a) {
            addrs.push(a);
        }
    }
}

/// Build one (checked) service at `index` with these endpoint ids (spec
/// order). `prev` is the same service in the previous snapshot, built with
/// the same Maglev size: its Maglev table is reused when its inputs match.
/// `gen` is the generation being built and `prev_any` the same service in
/// the previous snapshot whatever its Maglev size: endpoints that keep their
/// id there keep its [`Endpoint::id_since`], the others get `gen`.
#[allow(clippy::too_many_arguments)]
fn build_service(
    s: &ServiceSpec,
    index: u32,
    ids: &[EndpointId],
    ctx: &BuildCtx<'_>,
    prev: Option<&Service>,
    gen: u64,
    prev_any: Option<&Service>,
) -> Result<Service, BuildError> {
    let v4 = s.key.vip.is_ipv4();
    let endpoints: Vec<Endpoint> = s
        .endpoints
        .iter()
        .zip(ids)
        .map(|(e, &id)| {
            let addr = Ip16::from(e.addr);
            let next_hop = ctx.next_hops.get(&addr).copied();
            let snat_addr = match s.mode {
                NatMode::FullNat => ctx
                    .snat_spec
                    .iter()
                    .find(|a| a.is_ipv4() == v4)
                    .map(|a| Ip16::from(*a))
                    .or_else(|| port_addr(ctx.ports, next_hop, v4)),
                NatMode::OneArm => port_addr(ctx.ports, next_hop, v4),
                NatMode::Dnat | NatMode::Dsr => None,
            };
            let id_since = prev_any
                .and_then(|p| {
                    p.endpoints
                        .iter()
                        .find(|o| o.id == id && o.addr == addr && o.port == e.port)
                })
                .map_or(gen, |o| o.id_since);
            Endpoint {
                id,
                addr,
                port: e.port,
                weight: e.weight,
                state: e.state,
                next_hop,
                snat_addr,
                id_since,
            }
        })
        .collect();
    let n = endpoints.len();
    let active: Vec<usize> = (0..n)
        .filter(|&i| endpoints[i].state == EndpointState::Active && endpoints[i].weight > 0)
        .collect();
    let schedule = match s.sel {
        Selection::Priority => {
            let weights: Vec<(usize, u32)> =
                active.iter().map(|&i| (i, endpoints[i].weight)).collect();
            weighted_schedule(&weights)
        }
        _ => active.iter().map(|&i| i as u8).collect(),
    };
    let (maglev, maglev_inputs) = match s.sel {
        Selection::Hash | Selection::Persist => {
            let backends: Vec<MaglevBackend> = endpoints
                .iter()
                .map(|e| MaglevBackend {
                    key: endpoint_identity(e),
                    weight: if e.state == EndpointState::Active {
                        e.weight
                    } else {
                        0
                    },
                })
                .collect();
            // Rebuilding costs milliseconds per rule: reuse the previous
            // snapshot's table when nothing it depends on changed.
            let reused = prev
                .filter(|p| p.maglev_inputs == backends)
                .and_then(|p| p.maglev.clone());
            let table = match reused {
                Some(t) => t,
                None => Arc::new(
                    Maglev::build(&backends, ctx.maglev_size)
                        .map_err(|err| BuildError::Maglev(s.spec_name(), err))?,
                ),
            };
            (Some(table), backends)
        }
        _ => (None, Vec::new()),
    };
    let timeout_s = u64::from(s.inactive_timeout_s.max(1));
    Ok(Service {
        spec: s.clone(),
        index,
        endpoints,
        schedule,
        maglev,
        maglev_inputs,
        idle_timeout_ns: timeout_s * 1_000_000_000,
        vip: Ip16::from(s.key.vip),
        rule_key: rule_key(&s.key),
    })
}

/// [`Service::rule_key`] of a rule keyed `k`.
fn rule_key(k: &ServiceKey) -> u64 {
    use crate::net::fmix64;
    let v = Ip16::from(k.vip).words();
    let ports = (u64::from(k.port_min) << 48) | (u64::from(k.port_max) << 32) | u64::from(k.block);
    fmix64(v[0] ^ (u64::from(k.proto as u8) << 56) ^ fmix64(v[1] ^ fmix64(ports)))
}

impl Service {
    /// Its key in [`Tables`]' VIP index.
    fn vip_key(&self) -> (Ip16, u8) {
        (
            self.vip,
            self.spec
                .key
                .proto
                .ip_proto_for(self.spec.key.vip.is_ipv4()),
        )
    }
}

fn describe(k: &ServiceKey) -> String {
    if k.port_max != k.port_min {
        format!("{}:{}-{}/{}", k.vip, k.port_min, k.port_max, k.proto.name())
    } else {
        format!("{}:{}/{}", k.vip, k.port_min, k.proto.name())
    }
}

/// The Maglev identity of an endpoint: stable across processes, independent of ids.
fn endpoint_identity(e: &Endpoint) -> u64 {
    let mut b = [0u8; 18];
    b[..16].copy_from_slice(&e.addr.0);
    b[16..].copy_from_slice(&e.port.to_be_bytes());
    stable_hash64(&b)
}

fn pool(addrs: &[IpAddr], v4: bool) -> Vec<Ip16> {
    addrs
        .iter()
        .filter(|a| a.is_ipv4() == v4)
        .map(|a| Ip16::from(*a))
        .collect()
}

/// Marks an unused id in [`Tables`]' port index.
const NO_PORT: u16 = u16::MAX;

/// Port id -> index in `ports`, sized to the largest id (ids are unique: checked by the build).
fn port_index(ports: &[PortSpec]) -> Vec<u16> {
    let len = ports
        .iter()
        .map(|p| usize::from(p.id) + 1)
        .max()
        .unwrap_or(0);
    let mut index = vec![NO_PORT; len];
    for (i, p) in ports.iter().enumerate() {
        if let (Some(slot), Ok(i)) = (index.get_mut(usize::from(p.id)), u16::try_from(i)) {
            *slot = i;
        }
    }
    index
}

fn port_addr(ports: &[PortSpec], nh: Option<NextHop>, v4: bool) -> Option<Ip16> {
    let nh = nh?;
    let p = ports.iter().find(|p| p.id == nh.port)?;
    p.addrs
        .iter()
        .find(|a| a.is_ipv4() == v4)
        .map(|a| Ip16::from(*a))
}

/// The RCU cell through which control publishes snapshots to the workers.
#[derive(Debug, Clone)]
pub struct TablesHandle {
    cell: Arc<ArcSwap<Tables>>,
}

impl TablesHandle {
    /// A handle holding an empty snapshot.
    pub fn new() -> TablesHandle {
        TablesHandle {
            cell: Arc::new(ArcSwap::from_pointee(Tables::empty())),
        }
    }

    /// Publish a new snapshot (one atomic pointer swap). The old one is freed
    /// once the last worker batch that loaded it is done.
    pub fn publish(&self, tables: Tables) {
        self.cell.store(Arc::new(tables));
    }

    /// The current snapshot; workers call this once per batch.
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<Tables>> {
        self.cell.load()
    }

    /// The current snapshot as an owned `Arc` (control side).
    pub fn current(&self) -> Arc<Tables> {
        self.cell.load_full()
    }
}

impl Default for TablesHandle {
    fn default() -> Self {
        TablesHandle::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(a: &str, port: u16, w: u32) -> EndpointSpec {
        EndpointSpec {
            addr: a.parse().expect("ip"),
            port,
            weight: w,
            state: EndpointState::Active,
        }
    }

    fn svc(vip: &str, pmin: u16, pmax: u16, eps: Vec<EndpointSpec>) -> ServiceSpec {
        ServiceSpec {
            key: ServiceKey {
                vip: vip.parse().expect("ip"),
                proto: L4Proto::Tcp,
                port_min: pmin,
                port_max: pmax,
                block: 0,
            },
            sel: Selection::RoundRobin,
            mode: NatMode::Dnat,
            allowed_sources: vec![],
            endpoints: eps,
            inactive_timeout_s: 240,
            dsr_ipip: false,
            name: String::new(),
        }
    }

    #[test]
    fn lookup_finds_port_ranges_and_rejects_overlaps() {
        let spec = TablesSpec {
            services: vec![
                svc("10.0.0.1", 80, 80, vec![ep("10.1.0.1", 8080, 1)]),
                svc("10.0.0.1", 1000, 1999, vec![ep("10.1.0.2", 0, 1)]),
            ],
            ..Default::default()
        };
        let t = Tables::build(spec.clone(), &Tables::empty()).expect("valid");
        let vip = Ip16::from("10.0.0.1".parse::<IpAddr>().expect("ip"));
        assert_eq!(t.lookup(vip, 6, 80).map(|s| s.index), Some(0));
        assert_eq!(t.lookup(vip, 6, 1500).map(|s| s.index), Some(1));
        assert!(t.lookup(vip, 6, 81).is_none());
        assert!(t.lookup(vip, 17, 80).is_none());

        let mut bad = spec;
        bad.services
            .push(svc("10.0.0.1", 1500, 1500, vec![ep("10.1.0.3", 1, 1)]));
        assert!(matches!(
            Tables::build(bad, &Tables::empty()),
            Err(BuildError::OverlappingService(..))
        ));
    }

    #[test]
    fn endpoint_ids_survive_rebuilds_and_removed_ids_vanish() {
        let a = TablesSpec {
            services: vec![svc(
                "10.0.0.1",
                80,
                80,
                vec![ep("10.1.0.1", 80, 1), ep("10.1.0.2", 80, 1)],
            )],
            ..Default::default()
        };
        let t1 = Tables::build(a, &Tables::empty()).expect("valid");
        let id2 = t1.services[0].endpoints[1].id;
        let id1 = t1.services[0].endpoints[0].id;
        let b = TablesSpec {
            services: vec![svc(
                "10.0.0.1",
                80,
                80,
                vec![ep("10.1.0.3", 80, 1), ep("10.1.0.2", 80, 1)],
            )],
            ..Default::default()
        };
        let t2 = Tables::build(b, &t1).expect("valid");
        assert_eq!(t2.generation, t1.generation + 1);
        assert_eq!(
            t2.services[0].endpoints[1].id, id2,
            "surviving endpoint keeps its id"
        );
        assert!(t2.endpoint(id1).is_none() || t2.services[0].endpoints[0].id == id1);
        let (_, e) = t2.endpoint(id2).expect("still there");
        assert_eq!(
            IpAddr::from(e.addr),
            "10.1.0.2".parse::<IpAddr>().expect("ip")
        );
    }

    #[test]
    fn weighted_schedule_follows_percentages() {
        let mut s = svc(
            "10.0.0.1",
            80,
            80,
            vec![ep("10.1.0.1", 80, 70), ep("10.1.0.2", 80, 30)],
        );
        s.sel = Selection::Priority;
        let t = Tables::build(
            TablesSpec {
                services: vec![s],
                ..Default::default()
            },
            &Tables::empty(),
        )
        .expect("valid");
        let sch = &t.services[0].schedule;
        let a = sch.iter().filter(|&&i| i == 0).count();
        assert_eq!(sch.len(), 100);
        assert_eq!(a, 70);
        // Spread out: never more than 3 of the heavy endpoint in a row.
        assert!(!sch.windows(4).any(|w| w.iter().all(|&i| i == 0)));
    }

    #[test]
    fn invalid_specs_are_rejected_whole() {
        let bad_family = svc("10.0.0.1", 80, 80, vec![ep("2001:db8::1", 80, 1)]);
        assert!(matches!(
            Tables::build(
                TablesSpec {
                    services: vec![bad_family],
                    ..Default::default()
                },
                &Tables::empty()
            ),
            Err(BuildError::EndpointFamily(..))
        ));
        let none = svc("10.0.0.1", 80, 80, vec![]);
        assert!(matches!(
            Tables::build(
                TablesSpec {
                    services: vec![none],
                    ..Default::default()
                },
                &Tables::empty()
            ),
            Err(BuildError::EndpointCount(..))
        ));
        let mut dsr = svc("10.0.0.1", 80, 80, vec![ep("10.1.0.1", 8080, 1)]);
        dsr.mode = NatMode::Dsr;
        assert!(matches!(
            Tables::build(
                TablesSpec {
                    services: vec![dsr],
                    ..Default::default()
                },
                &Tables::empty()
            ),
            Err(BuildError::DsrPortChange(..))
        ));
    }

    #[test]
    fn unchanged_maglev_tables_are_shared_and_changed_ones_rebuilt() {
        let mut a = svc(
            "10.0.0.1",
            80,
            80,
            vec![ep("10.1.0.1", 80, 1), ep("10.1.0.2", 80, 1)],
        );
        a.sel = Selection::Hash;
        let mut b = svc("10.0.0.2", 80, 80, vec![ep("10.1.0.1", 80, 1)]);
        b.sel = Selection::Hash;
        let spec = TablesSpec {
            services: vec![a.clone(), b.clone()],
            maglev_size: 251,
            ..Default::default()
        };
        let t1 = Tables::build(spec, &Tables::empty()).expect("valid");
        let mut a2 = a;
        a2.endpoints[1].state = EndpointState::Down;
        let spec2 = TablesSpec {
            services: vec![a2, b],
            maglev_size: 251,
            ..Default::default()
        };
        let t2 = Tables::build(spec2, &t1).expect("valid");
        let m = |t: &Tables, i: usize| t.services[i].maglev.clone().expect("hash rule");
        assert!(
            Arc::ptr_eq(&m(&t1, 1), &m(&t2, 1)),
            "untouched rule shares its table"
        );
        assert!(
            !Arc::ptr_eq(&m(&t1, 0), &m(&t2, 0)),
            "changed rule gets a new table"
        );
        assert!(
            m(&t2, 0).slots().iter().all(|&e| e == 0),
            "the down endpoint has no slots"
        );
    }

    /// Every index of a snapshot agrees with its services.
    fn assert_consistent(t: &Tables) {
        let mut n_eps = 0;
        for (i, s) in t.services.iter().enumerate() {
            assert_eq!(s.index as usize, i);
            assert_eq!(t.service_index(&s.spec.key), Some(i));
            assert!(t.is_vip(s.vip));
            let found = t
                .lookup(
                    s.vip,
                    s.spec.key.proto.ip_proto_for(s.vip.is_v4()),
                    s.spec.key.port_min,
                )
                .expect("its own port finds a rule");
            assert!(
                found.spec.key.port_min <= s.spec.key.port_min
                    && s.spec.key.port_min <= found.spec.key.port_max
            );
            for (ei, e) in s.endpoints.iter().enumerate() {
                let (hs, he) = t.endpoint(e.id).expect("endpoint id resolves");
                assert_eq!(
                    (hs.index, he.addr, he.port),
                    (s.index, e.addr, e.port),
                    "{ei}"
                );
                n_eps += 1;
            }
        }
        assert_eq!(
            t.endpoint_locs.iter().flatten().count(),
            n_eps,
            "no stale ids"
        );
        assert_eq!(
            t.by_vip.values().map(|v| v.len as usize).sum::<usize>(),
            t.services.len()
        );
        for (vk, slot) in &t.by_vip {
            let list = t.slot_list(slot);
            assert_eq!(list.len(), slot.len as usize, "list in bounds");
            assert!(list
                .iter()
                .all(|&i| t.services[i as usize].vip_key() == *vk));
            assert!(list
                .windows(2)
                .all(|w| t.services[w[0] as usize].spec.key < t.services[w[1] as usize].spec.key));
        }
        let shared: usize = t
            .by_vip
            .values()
            .filter(|v| v.len > 1)
            .map(|v| v.len as usize)
            .sum();
        assert_eq!(
            t.vip_lists.len() - t.vip_garbage,
            shared,
            "garbage counted right"
        );
        assert_eq!(
            t.vips.len(),
            t.services
                .iter()
                .map(|s| s.vip)
                .collect::<std::collections::HashSet<_>>()
                .len()
        );
    }

    #[test]
    fn update_rebuilds_only_what_changed() {
        let spec = TablesSpec {
            services: (1..=5)
                .map(|i| {
                    svc(
                        &format!("10.0.0.{i}"),
                        80,
                        80,
                        vec![ep("10.1.0.1", 80, 1), ep("10.1.0.2", 80, 1)],
                    )
                })
                .collect(),
            ..Default::default()
        };
        let t1 = Tables::build(spec, &Tables::empty()).expect("valid");
        let changed = svc(
            "10.0.0.2",
            80,
            80,
            vec![ep("10.1.0.2", 80, 1), ep("10.1.0.3", 80, 1)],
        );
        let added = svc("10.0.0.9", 80, 80, vec![ep("10.1.0.9", 80, 1)]);
        let removed = t1.services[0].spec.key;
        let t2 = t1
            .update(
                &[
                    ServiceChange::Upsert(changed.clone()),
                    ServiceChange::Remove(removed),
                    ServiceChange::Upsert(added),
                ],
                &[],
            )
            .expect("valid");
        assert_consistent(&t2);
        assert_eq!(t2.generation, t1.generation + 1);
        assert_eq!(t2.services.len(), 5);
        assert!(t2.service_index(&removed).is_none());
        let shared = t1.services[2..4]
            .iter()
            .filter(|a| t2.services.iter().any(|b| Arc::ptr_eq(a, b)))
            .count();
        assert_eq!(shared, 2, "untouched rules are shared, not rebuilt");
        let old = &t1.services[1];
        let new = &t2.services[t2.service_index(&changed.key).expect("kept")];
        assert_eq!(
            new.endpoints[0].id, old.endpoints[1].id,
            "surviving endpoint keeps its id"
        );
        assert_eq!(
            new.endpoints[0].id_since, t1.generation,
            "and the generation it got it in"
        );
        assert_eq!(
            new.endpoints[1].id_since, t2.generation,
            "a new endpoint's id dates from this step"
        );
        assert!(new.endpoints[0].holds_flow_of(t1.generation as u32));
        assert!(!new.endpoints[1].holds_flow_of(t1.generation as u32));
        assert!(new.endpoints[1].holds_flow_of(t2.generation as u32));
        let freed = [
            t1.services[0].endpoints[0].id,
            t1.services[0].endpoints[1].id,
            old.endpoints[0].id,
        ];
        assert!(
            t2.services
                .iter()
                .flat_map(|s| &s.endpoints)
                .all(|e| !freed.contains(&e.id)),
            "ids freed in this step are not handed out in it"
        );
        // An overlap is refused and the previous snapshot is untouched.
        let err = t2
            .update(
                &[ServiceChange::Upsert(svc(
                    "10.0.0.3",
                    70,
                    90,
                    vec![ep("10.1.0.1", 0, 1)],
                ))],
                &[],
            )
            .expect_err("overlap");
        assert!(matches!(err, BuildError::OverlappingService(..)), "{err}");
        assert_consistent(&t2);
    }

    #[test]
    fn many_rules_on_one_vip_survive_churn_of_their_list() {
        // 200 ports on one VIP: every add/remove rewrites the VIP's list, so
        // the list storage is compacted many times along the way.
        let spec = TablesSpec {
            services: (0..200)
                .map(|p| svc("10.0.0.1", 1000 + p, 1000 + p, vec![ep("10.1.0.1", 0, 1)]))
                .collect(),
            ..Default::default()
        };
        let mut t = Tables::build(spec, &Tables::empty()).expect("valid");
        assert_consistent(&t);
        for round in 0..300u16 {
            let gone = 1000 + (round * 7) % 200;
            let key = t.services[t
                .lookup(
                    Ip16::from("10.0.0.1".parse::<IpAddr>().expect("ip")),
                    6,
                    gone,
                )
                .expect("present")
                .index as usize]
                .spec
                .key;
            t = t
                .update(&[ServiceChange::Remove(key)], &[])
                .expect("remove");
            assert!(t.lookup(key.vip.into(), 6, gone).is_none());
            t = t
                .update(
                    &[ServiceChange::Upsert(svc(
                        "10.0.0.1",
                        gone,
                        gone,
                        vec![ep("10.1.0.2", 0, 1)],
                    ))],
                    &[],
                )
                .expect("add back");
            assert_consistent(&t);
        }
        assert!(t.vip_lists.len() <= 2 * 200 + 64, "garbage is collected");
    }

    #[test]
    fn full_build_finds_overlaps_across_blocks_in_between() {
        let mut a = svc("10.0.0.1", 80, 90, vec![ep("10.1.0.1", 0, 1)]);
        let mut x = svc("10.0.0.1", 85, 85, vec![ep("10.1.0.1", 0, 1)]);
        let b = svc("10.0.0.1", 86, 86, vec![ep("10.1.0.1", 0, 1)]);
        a.key.block = 0;
        x.key.block = 1;
        let spec = TablesSpec {
            services: vec![a, x, b],
            ..Default::default()
        };
        assert!(matches!(
            Tables::build(spec, &Tables::empty()),
            Err(BuildError::OverlappingService(..))
        ));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        /// (vip, port_min, port_max, block, remove?, endpoints (addr, port, down?)).
        type Change = (u8, u16, u16, u8, bool, Vec<(u8, u16, bool)>);

        fn change() -> impl Strategy<Value = Change> {
            (
                0u8..3,
                prop_oneof![Just(80u16), Just(81), Just(1000)],
                prop_oneof![Just(0u16), Just(85), Just(1005)],
                0u8..2,
                any::<bool>(),
                proptest::collection::vec(
                    (0u8..5, prop_oneof![Just(0u16), Just(80)], any::<bool>()),
                    0..4,
                ),
            )
        }

        proptest! {
            /// Any sequence of incremental updates yields a consistent snapshot
            /// equal to a full build of the same rules, accepts exactly what a
            /// full build accepts, and keeps surviving endpoints' ids.
            #[test]
            fn update_agrees_with_full_build(steps in proptest::collection::vec(proptest::collection::vec(change(), 1..4), 1..25)) {
                let mut model: BTreeMap<ServiceKey, ServiceSpec> = BTreeMap::new();
                let mut t = Tables::build(TablesSpec { maglev_size: 251, ..Default::default() }, &Tables::empty()).expect("empty");
                for step in steps {
                    let mut next = model.clone();
                    let mut changes = Vec::new();
                    let mut touched = std::collections::HashSet::new();
                    for (vip, pmin, pmax, block, remove, eps) in step {
                        let mut s = svc(&format!("10.0.0.{vip}"), pmin, pmin.max(pmax), vec![]);
                        s.key.block = u32::from(block);
                        if !touched.insert(s.key) {
                            continue;
                        }
                        if remove {
                            next.remove(&s.key);
                            changes.push(ServiceChange::Remove(s.key));
                        } else {
                            s.sel = if eps.len() % 2 == 0 { Selection::Hash } else { Selection::RoundRobin };
                            s.endpoints = eps.iter().map(|&(a, p, down)| EndpointSpec {
                                addr: format!("10.1.0.{a}").parse().expect("ip"),
                                port: p,
                                weight: 1,
                                state: if down { EndpointState::Down } else { EndpointState::Active },
                            }).collect();
                            next.insert(s.key, s.clone());
                            changes.push(ServiceChange::Upsert(s));
                        }
                    }
                    let full = Tables::build(TablesSpec { services: next.values().cloned().collect(), maglev_size: 251, ..Default::default() }, &t);
                    match t.update(&changes, &[]) {
                        Err(_) => prop_assert!(full.is_err(), "update refused what a full build takes"),
                        Ok(u) => {
                            let full = full.expect("a full build takes what update takes");
                            assert_consistent(&u);
                            let spec = TablesSpec { services: next.values().cloned().collect(), maglev_size: 251, ..Default::default() };
                            prop_assert!(u.matches(&spec));
                            prop_assert_eq!(u.services.len(), full.services.len());
                            for s in u.services.iter() {
                                let f = &full.services[full.service_index(&s.spec.key).expect("same rules")];
                                prop_assert_eq!(&s.schedule, &f.schedule);
                                prop_assert_eq!(s.maglev.as_ref().map(|m| m.slots().to_vec()), f.maglev.as_ref().map(|m| m.slots().to_vec()));
                                if let Some(o) = t.service_index(&s.spec.key).map(|i| &t.services[i]) {
                                    for e in &s.endpoints {
                                        if let Some(p) = o.endpoints.iter().find(|p| p.addr == e.addr && p.port == e.port) {
                                            prop_assert_eq!(p.id, e.id, "surviving endpoint keeps its id");
                                            prop_assert_eq!(p.id_since, e.id_since, "and its date");
                                        }
                                    }
                                }
                            }
                            t = u;
                            model = next;
                        }
                    }
                }
            }
        }
    }

    mod prop_apply {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        /// (vip, port_min, port_max, remove?, endpoints (addr, port)).
        type Change = (u8, u16, u16, bool, Vec<(u8, u16)>);

        fn change() -> impl Strategy<Value = Change> {
            (
                0u8..3,
                prop_oneof![Just(80u16), Just(81), Just(1000)],
                prop_oneof![Just(0u16), Just(85), Just(1005)],
                any::<bool>(),
                proptest::collection::vec((0u8..5, prop_oneof![Just(0u16), Just(80)]), 0..4),
            )
        }

        fn to_change(c: &Change) -> ServiceChange {
            let (vip, pmin, pmax, remove, eps) = c;
            let mut s = svc(&format!("10.0.0.{vip}"), *pmin, (*pmin).max(*pmax), vec![]);
            if *remove {
                return ServiceChange::Remove(s.key);
            }
            s.sel = if eps.len() % 2 == 0 {
                Selection::Hash
            } else {
                Selection::RoundRobin
            };
            s.endpoints = eps
                .iter()
                .map(|&(a, p)| ep(&format!("10.1.0.{a}"), p, 1))
                .collect();
            ServiceChange::Upsert(s)
        }

        proptest! {
            /// A step of single changes (a group commit): each change is taken
            /// or refused on its own — exactly when a full build of the rules
            /// so far plus it would take it — a refused one leaves the working
            /// snapshot as it was, and the finished snapshot equals a full
            /// build, with no id of the step's start reused for another endpoint.
            #[test]
            fn applied_changes_are_each_whole_or_nothing(
                start in proptest::collection::vec(change(), 0..6),
                step in proptest::collection::vec(change(), 1..12),
            ) {
                let size = 251;
                let mut model: BTreeMap<ServiceKey, ServiceSpec> = BTreeMap::new();
                let mut t0 = Tables::build(TablesSpec { maglev_size: size, ..Default::default() }, &Tables::empty()).expect("empty");
                for c in &start {
                    if let Ok(t) = t0.update(&[to_change(c)], &[]) {
                        t0 = t;
                    }
                }
                for s in &t0.services {
                    model.insert(s.spec.key, s.spec.clone());
                }
                let spec_of = |m: &BTreeMap<ServiceKey, ServiceSpec>| TablesSpec {
                    services: m.values().cloned().collect(),
                    maglev_size: size,
                    ..Default::default()
                };
                let mut u = t0.begin_update();
                for c in &step {
                    let c = to_change(c);
                    let mut next = model.clone();
                    match &c {
                        ServiceChange::Remove(k) => { next.remove(k); }
                        ServiceChange::Upsert(s) => { next.insert(s.key, s.clone()); }
                    }
                    let full_ok = Tables::build(spec_of(&next), &t0).is_ok();
                    match u.apply(&c, &[]) {
                        Ok(()) => {
                            prop_assert!(full_ok, "apply took what a full build refuses: {:?}", c);
                            model = next;
                        }
                        Err(_) => prop_assert!(!full_ok, "apply refused what a full build takes: {:?}", c),
                    }
                    prop_assert!(u.tables().matches(&spec_of(&model)), "working snapshot is the accepted rules");
                }
                let t = u.finish();
                assert_consistent(&t);
                prop_assert_eq!(t.generation, t0.generation + 1);
                prop_assert!(t.matches(&spec_of(&model)));
                for s in t.services.iter() {
                    for e in &s.endpoints {
                        if let Some((os, oe)) = t0.endpoint(e.id) {
                            prop_assert!(
                                os.spec.key == s.spec.key && oe.addr == e.addr && oe.port == e.port,
                                "id {} moved to another endpoint within one step", e.id
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn publish_swaps_what_load_sees() {
        let h = TablesHandle::new();
        assert_eq!(h.load().generation, 0);
        let t = Tables::build(TablesSpec::default(), &h.current()).expect("valid");
        h.publish(t);
        assert_eq!(h.load().generation, 1);
    }
}
