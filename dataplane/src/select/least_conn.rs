//! Least connections (`sel` 4): each worker counts the flows it created to
//! each endpoint id and sends a new flow to the least loaded endpoint of
//! the rule, ties broken round robin.
//!
//! Invariant: an id freed by a removed endpoint may go to another
//! ([`Endpoint::id_since`]); a count says whose flows it counts, so the
//! new holder of an id starts from zero.

use crate::tables::{Endpoint, EndpointId, Service, MAX_ENDPOINT_IDS};

/// A worker's count of active flows to the endpoint holding one id. An id
/// freed by a removed endpoint may go to another ([`Endpoint::id_since`]):
/// the count says whose flows it counts.
#[derive(Debug, Clone, Copy, Default)]
struct Count {
    /// Flows created and not yet removed.
    flows: u32,
    /// Low 32 bits of the [`Endpoint::id_since`] of the endpoint counted.
    since: u32,
}

impl Count {
    /// The count for `ep` (none if the id's count is its former holder's).
    #[inline]
    fn of(&self, ep: &Endpoint) -> u32 {
        if self.since == ep.id_since as u32 {
            self.flows
        } else {
            0
        }
    }
}

/// One worker's flow counts per endpoint id.
#[derive(Debug)]
pub struct Counts(Box<[Count]>);

impl Counts {
    /// Zero for every id.
    pub fn new() -> Counts {
        Counts(vec![Count::default(); MAX_ENDPOINT_IDS].into_boxed_slice())
    }

    /// Forget every count.
    pub fn clear(&mut self) {
        self.0.fill(Count::default());
    }

    /// Count a new flow to `ep`.
    #[inline]
    pub fn add(&mut self, ep: &Endpoint) {
        if let Some(c) = self.0.get_mut(ep.id as usize) {
            c.flows = c.of(ep) + 1;
            c.since = ep.id_since as u32;
        }
    }

    /// A flow to id `id`, last validated in generation `flow_gen`, ended:
    /// it is counted here if the id was already the counted endpoint's
    /// then (as [`Endpoint::holds_flow_of`] decides).
    #[inline]
    pub fn remove(&mut self, id: EndpointId, flow_gen: u32) {
        if let Some(c) = self.0.get_mut(id as usize) {
            if (c.since.wrapping_sub(flow_gen) as i32) <= 0 {
                c.flows = c.flows.saturating_sub(1);
            }
        }
    }

    /// The endpoint of `svc`'s schedule with the fewest flows, looking
    /// from the worker's `cursor` (advanced), so that equal endpoints share
    /// new flows; `None` for an empty schedule.
    #[inline]
    pub fn least(&self, svc: &Service, cursor: &mut u32) -> Option<usize> {
        let n = svc.schedule.len();
        if n == 0 {
            return None;
        }
        let start = *cursor as usize;
        *cursor = cursor.wrapping_add(1);
        (0..n)
            .map(|k| usize::from(svc.schedule[(start + k) % n]))
            .min_by_key(|&i| {
                let ep = &svc.endpoints[i];
                self.0.get(ep.id as usize).map(|c| c.of(ep))
            })
    }
}
