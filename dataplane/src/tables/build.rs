//! Building snapshots: a whole new one from a spec ([`Tables::build`]),
//! or the next one from the current one by single-rule changes
//! ([`Tables::update`], [`Tables::begin_update`] and [`TablesUpdate`]),
//! and whether a snapshot is what a spec would build ([`Tables::matches`]).
//!
//! Invariants: a rejected spec or change changes nothing; a build and an
//! update of the same rules give the same snapshot (up to service order;
//! tested); an id freed in a step is not handed out again in that step.

use std::net::IpAddr;
use std::sync::Arc;

use hashbrown::HashMap;

use crate::net::Ip16;
use crate::select::maglev::DEFAULT_TABLE_SIZE;

use super::service::{
    build_service, surviving_id, BuildCtx, EndpointId, EndpointLoc, Service, MAX_ENDPOINT_IDS,
};
use super::spec::{
    check_service, describe, overlaps, BuildError, L4Proto, NextHop, PortSpec, ServiceChange,
    ServiceKey, ServiceSpec, TablesSpec, DEFAULT_NAT_PORTS,
};
use super::Tables;

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
        let nat_ports = spec.effective_nat_ports();
        if nat_ports.0 == 0 || nat_ports.1 < nat_ports.0 {
            return Err(BuildError::NatPorts(nat_ports.0, nat_ports.1));
        }
        let maglev_size = spec.effective_maglev_size();
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
            gen: prev.generation + 1,
            same_maglev_size: prev.maglev_size == maglev_size,
        };
        let mut services = Vec::with_capacity(spec.services.len());
        let mut by_vip: HashMap<(Ip16, u8), Vec<u32>> = HashMap::new();
        let mut vips = HashMap::new();
        let mut endpoint_locs: Vec<Option<EndpointLoc>> = Vec::new();
        let mut snat_addrs: Vec<Ip16> = spec.snat_addrs.iter().map(|a| Ip16::from(*a)).collect();
        for (si, (s, ids)) in spec.services.iter().zip(&ids).enumerate() {
            let ids: Vec<EndpointId> = ids.iter().flatten().copied().collect();
            let old = prev_by_key.get(&s.key).copied();
            let svc = build_service(s, si as u32, &ids, &ctx, old)?;
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
        if spec.effective_nat_ports() != self.nat_ports
            || spec.effective_maglev_size() != self.maglev_size
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
            gen: self.generation,
            same_maglev_size: true,
        };
        let svc = build_service(s, index as u32, &ids, &ctx, old.as_deref())?;
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

fn pool(addrs: &[IpAddr], v4: bool) -> Vec<Ip16> {
    addrs
        .iter()
        .filter(|a| a.is_ipv4() == v4)
        .map(|a| Ip16::from(*a))
        .collect()
}

/// Marks an unused id in [`Tables`]' port index.
pub(super) const NO_PORT: u16 = u16::MAX;

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
