//! Connection sync in the pipeline ([`crate::sync`]): what a worker tells
//! the other members of its HA group (every flow it opens, and every flow
//! it forwarded packets of that ends) and how it installs ("adopts") the
//! flows they send, so that they forward here as they did there.
//!
//! Invariants:
//! - Nothing a worker receives is sent back (no echo): an adopted flow's
//!   forward entry lacks [`flags::SEEN`] until a packet matches it here,
//!   and a flow's end is announced only if its forward entry has it
//!   ([`announce_end`]). (Nothing else reads that bit of a forward entry:
//!   timeouts and eviction read the reply entry's.)
//! - Adoption changes this worker's shard, least-connections counts and
//!   the persist rules' client affinity, as opening the flow here would
//!   have; it counts `sync_*`, never `flows_created`.
//! - With no sync ends set, the per-batch cost is one test of an `Option`.

use crate::conntrack::{flags, FlowKey, FlowRecord, Kind, NewFlowV4, Removed};
use crate::counters::bump;
use crate::frame::PortId;
use crate::sync::{AdoptFailure, EventV4, SyncEvent, SyncedFlow, WorkerSync};
use crate::tables::{Endpoint, EndpointState, NextHop, Selection, Tables};

use super::gc::{on_removed, release};
use super::Pipeline;

/// Events taken from the inbound ring per batch at most (the rest wait
/// for the next batch), so that a burst of synced flows delays a batch by
/// tens of microseconds, not milliseconds.
pub(super) const PER_BATCH: usize = 256;
/// Events taken per idle call at most (an idle worker has time).
pub(super) const PER_IDLE: usize = 1 << 16;

/// A worker's ends of the sync rings and its clock's offset to Unix time.
#[derive(Debug)]
pub(super) struct SyncEnds {
    ends: WorkerSync,
    /// Unix time (ns) minus the workers' monotonic clock.
    unix_offset_ns: i64,
}

/// A removed flow `r` ended here: announce it if this node forwarded
/// packets of it (its forward entry has [`flags::SEEN`]: every flow this
/// node opened, and the adopted flows a packet matched here).
#[inline]
pub(super) fn announce_end(sync: &mut Option<SyncEnds>, r: &Removed) {
    if let Some(s) = sync {
        if r.data.kind == Kind::Forward && r.data.flags & flags::SEEN != 0 {
            s.ends.emit(SyncEvent::Close(r.key));
        }
    }
}

impl Pipeline {
    /// Take part in connection sync through `ends` (this worker's ends of
    /// the rings of [`crate::sync::sync_queues`]): announce every flow this
    /// worker opens and every flow it forwarded that ends, and install the
    /// flows other members send. `unix_offset_ns` is Unix time minus the
    /// workers' monotonic clock (the `now` of [`super::Processor`]), for
    /// [`SyncedFlow::opened_unix_ns`]. Without it (the default) the
    /// pipeline does none of this.
    pub fn set_sync(&mut self, ends: WorkerSync, unix_offset_ns: i64) {
        self.sync = Some(SyncEnds {
            ends,
            unix_offset_ns,
        });
    }

    /// Whether control delivered sync events (one load with sync on).
    #[inline(always)]
    pub(super) fn sync_pending(&self) -> bool {
        self.sync.as_ref().is_some_and(|s| s.ends.has_inbound())
    }

    /// Hand what this batch announced to control
    /// ([`WorkerSync::flush`]).
    #[inline]
    pub(super) fn flush_sync(&mut self) {
        if let Some(s) = &mut self.sync {
            s.ends.flush();
        }
    }

    /// Announce the flow `rec` this worker just opened to endpoint `ep`.
    #[inline(never)]
    pub(super) fn announce_open(&mut self, rec: &FlowRecord, ep: &Endpoint, now: u64) {
        self.announce(now, |opened| SyncedFlow::of(rec, ep, opened));
    }

    /// [`Pipeline::announce_open`] of a flow the new-flow path opened.
    #[inline(never)]
    pub(super) fn announce_open_v4(&mut self, flow: &NewFlowV4, ep: &Endpoint, now: u64) {
        if let Some(s) = &mut self.sync {
            let opened = now.saturating_add_signed(s.unix_offset_ns);
            s.ends.emit_v4(EventV4::open(flow, ep, opened));
        }
    }

    /// Announce the flow `flow(opened)` opened at `now` (`opened`: in Unix
    /// time).
    #[inline(always)]
    fn announce(&mut self, now: u64, flow: impl FnOnce(u64) -> SyncedFlow) {
        if let Some(s) = &mut self.sync {
            let opened = now.saturating_add_signed(s.unix_offset_ns);
            s.ends.emit(SyncEvent::Open(flow(opened)));
        }
    }

    /// Install or remove up to `max` flows control delivered.
    #[inline(never)]
    pub(super) fn drain_sync(&mut self, t: &Tables, now: u64, max: usize) {
        for _ in 0..max {
            let Some(ev) = self.sync.as_mut().and_then(|s| s.ends.receive()) else {
                break;
            };
            match ev {
                SyncEvent::Open(f) => match self.adopt(t, now, &f) {
                    Ok(false) => bump(&self.counters.sync_adopted, 1),
                    Ok(true) => bump(&self.counters.sync_refreshed, 1),
                    Err(why) => self.counters.count_sync_adopt_failure(why),
                },
                SyncEvent::Close(key) => self.sync_close(&key),
            }
        }
    }

    /// Install flow `f` from another member in this worker's shard as it
    /// was there: the same translation (with its source-NAT port), TCP
    /// state and timeout, its rule and backend mapped to this node's
    /// tables, next hops this node's (the client's MAC as sent). An entry
    /// already there for either key gives way: the flow itself (a re-sent
    /// flow: `Ok(true)`) or another one. The forward entry lacks
    /// [`flags::SEEN`] (no packet matched it here yet).
    fn adopt(&mut self, t: &Tables, now: u64, f: &SyncedFlow) -> Result<bool, AdoptFailure> {
        let (vip, proto, port) = f.rule();
        let svc = t.lookup(vip, proto, port).ok_or(AdoptFailure::NoRule)?;
        let ep = svc
            .endpoints
            .iter()
            .find(|e| e.addr == f.backend && e.port == f.backend_port)
            .ok_or(AdoptFailure::NoBackend)?;
        let to_backend = ep
            .next_hop
            .filter(|h| t.port(h.port).is_some())
            .ok_or(AdoptFailure::NoNextHop)?;
        // A backend that is down here gets an entry of an older
        // generation: its first packet finds the backend down and
        // re-selects, as for a flow of this node's own.
        let gen = if ep.state == EndpointState::Down {
            t.generation.wrapping_sub(1)
        } else {
            t.generation
        };
        let gen = gen as u32;
        let rec = FlowRecord {
            key: f.key,
            xlat: f.xlat,
            mode: f.mode,
            timeout_s: f.timeout_s,
            fwd_flags: f.fwd_flags & !flags::SEEN,
            rep_flags: f.rep_flags,
            endpoint: ep.id,
            service: svc.index as u16,
            gen,
            to_backend,
            to_client: f.client_mac.map(|mac| NextHop {
                mac,
                port: client_port(t, f, to_backend),
            }),
        };
        let refreshed = self.make_way(&rec);
        let (sel, counters, sync) = (&mut self.select, &self.counters, &mut self.sync);
        self.ct
            .insert(&rec, now, &mut |r| on_removed(sel, counters, sync, r))
            .map_err(|_| AdoptFailure::TableFull)?;
        // Counted on the terms its removal releases it on: only if the
        // endpoint held its id in the flow's generation.
        if ep.holds_flow_of(gen) {
            self.select.opened(ep);
        }
        if svc.spec.sel == Selection::Persist {
            let affinity = self.ct.table().affinity();
            affinity.set(svc.rule_key, &f.key.src, ep.id, now);
        }
        Ok(refreshed)
    }

    /// Clear the way for the adopted flow `rec`: its own entries (a flow
    /// sent again: returns true; what the old copy held is released, not
    /// counted as a removal), and any other flow holding one of its keys
    /// (removed as an eviction would).
    fn make_way(&mut self, rec: &FlowRecord) -> bool {
        let mut refreshed = false;
        let reply = rec.reply().map(|(k, _)| k);
        for key in std::iter::once(rec.key).chain(reply) {
            let ct = self.ct.table();
            let Some(hit) = ct.find_in(self.worker, &key, ct.hash(&key)) else {
                continue;
            };
            let own = key == rec.key && hit.data.kind == Kind::Forward;
            let Some(r) = self.ct.remove_pair(hit.slot, !own) else {
                continue;
            };
            if own {
                refreshed = true;
                self.select.closed(r.data.endpoint, r.data.gen);
            } else {
                on_removed(&mut self.select, &self.counters, &mut self.sync, r);
            }
        }
        refreshed
    }

    /// Another member ended the flow keyed `key`: remove this worker's
    /// copy, if it holds one (announcing nothing).
    fn sync_close(&mut self, key: &FlowKey) {
        let ct = self.ct.table();
        let Some(hit) = ct.find_in(self.worker, key, ct.hash(key)) else {
            return;
        };
        if hit.data.kind != Kind::Forward {
            return;
        }
        if let Some(r) = self.ct.remove_pair(hit.slot, false) {
            release(&mut self.select, &self.counters, &r);
            bump(&self.counters.sync_closed, 1);
        }
    }
}

/// The port the backend's answers to the adopted flow `f` leave by: this
/// node's next hop for the client's address if it has one; else the port
/// the opening node received the flow on, if this node has a port of that
/// id; else the port towards the backend (one-arm: the only one).
fn client_port(t: &Tables, f: &SyncedFlow, to_backend: NextHop) -> PortId {
    if let Some(h) = t.next_hops.get(&f.key.src) {
        return h.port;
    }
    if t.port(f.client_port).is_some() {
        return f.client_port;
    }
    to_backend.port
}
