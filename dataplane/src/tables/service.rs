//! A built service: its endpoints with their stable ids and next hops,
//! its source-NAT addresses, and what its selection precomputes (the
//! schedule, the Maglev table), built from a checked spec.
//!
//! Invariants: an endpoint id stays with its (service, address, port) for
//! as long as that endpoint stays configured, and records the generation
//! it got the id in; a Maglev table is rebuilt only when its inputs (the
//! endpoints' identities and weights, the table size) change.

use std::net::IpAddr;
use std::sync::Arc;

use hashbrown::HashMap;

use crate::net::{fmix64, stable_hash64, Ip16};
use crate::select::maglev::{Maglev, MaglevBackend};
use crate::select::weighted::weighted_schedule;

use super::spec::{
    BuildError, EndpointSpec, EndpointState, NatMode, NextHop, PortSpec, Selection, ServiceKey,
    ServiceSpec,
};

/// Most endpoint ids alive at once; per-worker per-endpoint counters are sized by it.
pub const MAX_ENDPOINT_IDS: usize = 1 << 16;

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
    pub(super) maglev_inputs: Vec<MaglevBackend>,
    /// Idle timeout in nanoseconds.
    pub idle_timeout_ns: u64,
    /// VIP as a fixed-size key.
    pub vip: Ip16,
    /// A hash of the rule's identity (its [`ServiceKey`]), the same in
    /// every snapshot while the rule exists, unlike its index: what state
    /// kept across snapshots, such as client affinity, is keyed by.
    pub rule_key: u64,
}

impl Service {
    /// Its key in [`Tables`]' VIP index.
    pub(super) fn vip_key(&self) -> (Ip16, u8) {
        (
            self.vip,
            self.spec
                .key
                .proto
                .ip_proto_for(self.spec.key.vip.is_ipv4()),
        )
    }
}

/// Where an endpoint id lives in this snapshot.
#[derive(Debug, Clone, Copy)]
pub struct EndpointLoc {
    /// Service index.
    pub service: u32,
    /// Endpoint index within the service.
    pub endpoint: u8,
}

/// What building one service needs besides its spec.
pub(super) struct BuildCtx<'a> {
    pub ports: &'a [PortSpec],
    pub snat_spec: &'a [IpAddr],
    pub next_hops: &'a HashMap<Ip16, NextHop>,
    pub maglev_size: usize,
    /// The generation being built: an endpoint new to its service gets it
    /// as its [`Endpoint::id_since`].
    pub gen: u64,
    /// Whether the previous snapshot's Maglev tables had this size (then a
    /// service's table is reused when its inputs match).
    pub same_maglev_size: bool,
}

/// Build one (checked) service at `index` with these endpoint ids (spec
/// order). `prev` is the same service in the previous snapshot: endpoints
/// that keep their id there keep its [`Endpoint::id_since`] (the others
/// get the generation being built), and its Maglev table is reused when
/// its inputs match and the size is the same.
pub(super) fn build_service(
    s: &ServiceSpec,
    index: u32,
    ids: &[EndpointId],
    ctx: &BuildCtx<'_>,
    prev: Option<&Service>,
) -> Result<Service, BuildError> {
    let gen = ctx.gen;
    let prev_any = prev;
    let prev = prev.filter(|_| ctx.same_maglev_size);
    let v4 = s.key.vip.is_ipv4();
    let endpoints: Vec<Endpoint> = s
        .endpoints
        .iter()
        .zip(ids)
        .map(|(e, &id)| {
            let addr = Ip16::from(e.addr);
            let next_hop = ctx.next_hops.get(&addr).copied();
            let snat_addr = match s.mode {
                NatMode::FullNat => s
                    .snat
                    .iter()
                    .chain(ctx.snat_spec)
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
    let v = Ip16::from(k.vip).words();
    let ports = (u64::from(k.port_min) << 48) | (u64::from(k.port_max) << 32) | u64::from(k.block);
    fmix64(v[0] ^ (u64::from(k.proto as u8) << 56) ^ fmix64(v[1] ^ fmix64(ports)))
}

/// The Maglev identity of an endpoint: stable across processes, independent of ids.
fn endpoint_identity(e: &Endpoint) -> u64 {
    let mut b = [0u8; 18];
    b[..16].copy_from_slice(&e.addr.0);
    b[16..].copy_from_slice(&e.port.to_be_bytes());
    stable_hash64(&b)
}

fn port_addr(ports: &[PortSpec], nh: Option<NextHop>, v4: bool) -> Option<Ip16> {
    let nh = nh?;
    let p = ports.iter().find(|p| p.id == nh.port)?;
    p.addrs
        .iter()
        .find(|a| a.is_ipv4() == v4)
        .map(|a| Ip16::from(*a))
}

/// The id `e` had in the previous build of its service, if it was there.
pub(super) fn surviving_id(prev: &Service, e: &EndpointSpec) -> Option<EndpointId> {
    let addr = Ip16::from(e.addr);
    prev.endpoints
        .iter()
        .find(|p| p.addr == addr && p.port == e.port)
        .map(|p| p.id)
}
