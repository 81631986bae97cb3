//! Source NAT for one-arm and full-NAT flows: the (address, port) a new
//! flow's packets leave from, so that the backend's answers come back to
//! this balancer and to the worker that owns the flow.
//!
//! Invariants: the ports of the range are partitioned between workers
//! (port ≡ worker index mod workers, from the range's first port), so a
//! reply's destination port says which worker's shard holds its flow and
//! two workers never hand out the same pair; a candidate is taken only if
//! no entry of the owner's shard holds its reply key. Full NAT with a pool
//! of addresses walks (address, port) pairs, so the pool multiplies the
//! flows one backend can take.

use crate::conntrack::{Conntrack, FlowKey};
use crate::net::Ip16;
use crate::tables::Tables;
use crate::wire::proto;

/// Candidate source-NAT ports tried before giving up on a new flow.
pub const TRIES: usize = 32;

/// The backend end of a new flow: what its reply entry's key is made of,
/// besides the source-NAT address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The backend's address.
    pub addr: Ip16,
    /// The backend's port (what it answers from).
    pub port: u16,
    /// The flow's protocol.
    pub proto: u8,
}

impl Target {
    /// The key of the reply entry of a flow to this target that leaves from
    /// `(addr, port)`: the backend answering to it. (An ICMP echo's
    /// identifier plays both ports: it becomes the NAT port.)
    #[inline]
    pub fn reply_key(&self, addr: Ip16, port: u16) -> FlowKey {
        FlowKey {
            src: self.addr,
            dst: addr,
            sport: if proto::is_icmp(self.proto) {
                port
            } else {
                self.port
            },
            dport: port,
            proto: self.proto,
        }
    }
}

/// A worker's walk over the source-NAT (address, port) candidates of one
/// address (and its pool).
#[derive(Debug, Clone, Copy)]
pub struct NatWalk<'a> {
    snat: Ip16,
    pool: &'a [Ip16],
    /// First port of the range plus the worker index.
    base: u32,
    workers: u32,
    /// Ports of the range that are this worker's.
    mine: u32,
}

impl<'a> NatWalk<'a> {
    /// Worker `worker`'s walk (of `workers`) from source-NAT address `snat`
    /// in `t`'s port range; `None` if the range has no port for it.
    #[inline]
    pub fn new(t: &'a Tables, snat: Ip16, worker: usize, workers: usize) -> Option<NatWalk<'a>> {
        let (lo, hi) = t.nat_ports;
        let span = u32::from(hi - lo) + 1;
        let w = workers as u32;
        let mine = span.saturating_sub(worker as u32).div_ceil(w);
        if mine == 0 {
            return None;
        }
        Some(NatWalk {
            snat,
            pool: t.snat_pool(snat),
            base: u32::from(lo) + worker as u32,
            workers: w,
            mine,
        })
    }

    /// The candidate at cursor position `cursor`.
    #[inline]
    pub fn candidate(&self, cursor: u32) -> (Ip16, u16) {
        let k = cursor % self.mine;
        let addr = if self.pool.is_empty() {
            self.snat
        } else {
            self.pool[(cursor / self.mine) as usize % self.pool.len()]
        };
        (addr, (self.base + k * self.workers) as u16)
    }

    /// The first free candidate from `*cursor` on for a flow to `to`, in
    /// shard `shard` of `ct` (its owner's): its address, port and the hash
    /// of its reply key; `*cursor` moves past every candidate tried (at
    /// most [`TRIES`]). `predicted`: the hash of the first candidate's
    /// reply key, if already known.
    #[inline]
    pub fn search(
        &self,
        cursor: &mut u32,
        ct: &Conntrack,
        shard: usize,
        to: &Target,
        mut predicted: Option<u64>,
    ) -> Option<(Ip16, u16, u64)> {
        for _ in 0..TRIES {
            let (addr, port) = self.candidate(*cursor);
            *cursor = cursor.wrapping_add(1);
            let reply_key = to.reply_key(addr, port);
            let h = match predicted.take() {
                Some(h) => h,
                None => hash_out_of_line(ct, &reply_key),
            };
            debug_assert_eq!(h, ct.hash(&reply_key));
            if ct.find_in(shard, &reply_key, h).is_none() {
                return Some((addr, port, h));
            }
        }
        None
    }
}

/// `ct`'s hash of `key`, kept out of the search loop: the first
/// candidate's hash is usually known ahead, and inlined, the hash's keys
/// would be loaded (and spilled) before the loop for every search.
#[inline(never)]
fn hash_out_of_line(ct: &Conntrack, key: &FlowKey) -> u64 {
    ct.hash(key)
}

/// [`NatWalk::search`] from a new walk of `snat` by worker `me.0` of
/// `me.1` (`None` also if the range has no port for it): the general
/// path's one call for a source-NAT port.
#[inline(never)]
pub fn find(
    t: &Tables,
    snat: Ip16,
    me: (usize, usize),
    cursor: &mut u32,
    ct: &Conntrack,
    to: &Target,
    predicted: Option<u64>,
) -> Option<(Ip16, u16, u64)> {
    NatWalk::new(t, snat, me.0, me.1)?.search(cursor, ct, me.0, to, predicted)
}
