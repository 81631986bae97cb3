//! Backend choice for new flows, in one place: the rule's selection (`sel`)
//! decides which of its endpoints a new flow goes to.
//!
//! - [`maglev`]: Maglev consistent hashing (the `Hash` and `Persist`
//!   selections' tables, built with each snapshot);
//! - [`affinity`]: the persist rules' client affinity, shared by every
//!   worker;
//! - [`weighted`]: round robin and weighted round robin over a schedule
//!   built with each snapshot;
//! - [`least_conn`]: least connections, counted per worker.
//!
//! A worker holds one [`Selector`] (its round-robin cursors and flow
//! counts); [`keyed`] is the choice that depends on the flow alone (Maglev
//! over the 5-tuple, or the client's affinity and Maglev over its address),
//! which the new-flow path makes ahead for a whole batch.
//!
//! Invariant: a choice is an index into the service's `endpoints` of an
//! endpoint that takes new flows (active, with a weight), or `None`.

pub mod affinity;
pub(crate) mod least_conn;
pub mod maglev;
pub(crate) mod weighted;

use crate::conntrack::FlowKey;
use crate::net::fmix64;
use crate::tables::{Endpoint, EndpointId, EndpointState, Selection, Service, Tables};
use affinity::Affinity;

/// One worker's selection state: a round-robin cursor per service and
/// the flows it created per endpoint (least connections).
#[derive(Debug)]
pub(crate) struct Selector {
    /// Generation of the tables the cursors were sized for.
    gen: u64,
    /// Round-robin cursor per service index (also where least connections
    /// starts looking, so that equal endpoints share).
    rr: Vec<u32>,
    /// Flows created and not yet removed, per endpoint id.
    counts: least_conn::Counts,
}

impl Default for Selector {
    fn default() -> Self {
        Selector::new()
    }
}

impl Selector {
    /// No cursors yet (sized on the first snapshot), no flows counted.
    pub fn new() -> Selector {
        Selector {
            gen: u64::MAX,
            rr: Vec::new(),
            counts: least_conn::Counts::new(),
        }
    }

    /// Follow a snapshot: cursors for each of its services. Allocates only
    /// when the tables changed, not per packet.
    #[inline]
    pub fn follow(&mut self, t: &Tables) {
        if t.generation != self.gen {
            self.rr.resize(t.services.len(), 0);
            self.gen = t.generation;
        }
    }

    /// The endpoint index of `svc` for a new flow keyed `key` at `now`:
    /// round robin or weighted by the schedule, least connections, or
    /// [`keyed`] (given as `keyed` if already made for this flow). A
    /// persist rule records the client's choice in `affinity`.
    #[inline]
    pub fn choose(
        &mut self,
        svc: &Service,
        key: &FlowKey,
        now: u64,
        affinity: &Affinity,
        keyed_choice: Option<usize>,
    ) -> Option<usize> {
        match svc.spec.sel {
            Selection::RoundRobin | Selection::Priority => {
                if svc.schedule.is_empty() {
                    return None;
                }
                weighted::next(&svc.schedule, self.rr.get_mut(svc.index as usize)?)
            }
            Selection::Hash | Selection::Persist => {
                let i = match keyed_choice {
                    Some(i) => i,
                    None => keyed(affinity, svc, key, now)?,
                };
                if svc.spec.sel == Selection::Persist {
                    let id = svc.endpoints.get(i)?.id;
                    affinity.set(svc.rule_key, &key.src, id, now);
                }
                Some(i)
            }
            Selection::LeastConn => {
                if svc.schedule.is_empty() {
                    return None;
                }
                let cursor = self.rr.get_mut(svc.index as usize)?;
                self.counts.least(svc, cursor)
            }
        }
    }

    /// A flow to `ep` was created.
    #[inline]
    pub fn opened(&mut self, ep: &Endpoint) {
        self.counts.add(ep);
    }

    /// A flow to endpoint id `id`, last validated in generation
    /// `flow_gen`, ended.
    #[inline]
    pub fn closed(&mut self, id: EndpointId, flow_gen: u32) {
        self.counts.remove(id, flow_gen);
    }

    /// Forget every flow counted (the flows themselves were dropped).
    pub fn forget_flows(&mut self) {
        self.counts.clear();
    }
}

/// The choice for the selections that depend on the flow alone: for
/// persist, the endpoint the client's affinity names if it is still up
/// ([`affinity`]), else Maglev over the client's address; for hash, Maglev
/// over the 5-tuple. Reads the affinity, records nothing.
#[inline(always)]
pub fn keyed(affinity: &Affinity, svc: &Service, key: &FlowKey, now: u64) -> Option<usize> {
    if svc.spec.sel == Selection::Persist {
        if let Some(id) = affinity.get(svc.rule_key, &key.src, now, svc.idle_timeout_ns) {
            let up = svc
                .endpoints
                .iter()
                .position(|e| e.id == id && e.state == EndpointState::Active && e.weight > 0);
            if up.is_some() {
                return up;
            }
        }
    }
    let h = match svc.spec.sel {
        Selection::Hash => flow_hash(key),
        Selection::Persist => {
            let w = key.src.words();
            fmix64(w[0] ^ fmix64(w[1]))
        }
        _ => return None,
    };
    svc.maglev.as_ref()?.lookup(h).map(usize::from)
}

/// The hash Maglev's `sel` 1 (hash) chooses a backend by: fixed (the
/// same in every process, as Maglev's spread must be), unlike the flow
/// table's keyed hash.
#[inline]
pub fn flow_hash(key: &FlowKey) -> u64 {
    let w = key.words();
    let mut h = w[0].wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h = (h ^ w[1])
        .rotate_left(23)
        .wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    h = (h ^ w[2])
        .rotate_left(23)
        .wrapping_mul(0x1656_67b1_9e37_79f9);
    h = (h ^ w[3])
        .rotate_left(23)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    fmix64(h ^ w[4])
}
