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
//!
//! Files: `spec` (what control configures, and the checks of one rule),
//! `service` (a built service and its endpoints), `vip` (the VIP index and
//! the look-up), `build` (whole builds, updates, comparison with a spec),
//! `handle` (the RCU cell).

mod build;
mod handle;
mod service;
mod spec;
mod vip;

#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::Arc;

use hashbrown::HashMap;

use crate::frame::PortId;
use crate::net::Ip16;

pub use build::TablesUpdate;
pub use handle::TablesHandle;
pub use service::{Endpoint, EndpointId, EndpointLoc, Service, MAX_ENDPOINT_IDS};
pub use spec::{
    BuildError, EndpointSpec, EndpointState, L4Proto, NatMode, NextHop, PortSpec, Selection,
    ServiceChange, ServiceKey, ServiceSpec, TablesSpec, DEFAULT_NAT_PORTS,
    MAX_ENDPOINTS_PER_SERVICE,
};
use vip::VipSlot;

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

impl Tables {
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
}
