//! Connection tracking: one shard per worker, written only by its worker,
//! readable by every worker without locks.
//!
//! Why not one `hashbrown` map per worker: reply traffic of a flow can arrive on
//! another NIC queue than its forward traffic (RSS hashes the two directions
//! differently), so the worker that sees a reply must be able to read the flow
//! the forward worker created — without a global lock and without moving the
//! packet between threads. Each shard is therefore a fixed-size table of
//! atomics: the owning worker inserts, updates and removes entries under a
//! per-slot sequence lock; any worker reads them with the seqlock read protocol
//! (retry if the sequence number moved). All of it is safe Rust: a misbehaving
//! writer could only produce a stale read, never undefined behaviour.
//!
//! Layout: a shard is `buckets × WAYS` slots of 128 bytes (two cache lines),
//! plus a separate array of 16-bit tags (one per slot, 0 = empty) so that a
//! lookup touches one tag line and then only the slot whose tag matches. Both
//! can be prefetched a batch ahead. An IPv4 entry keeps all that the
//! established fast path needs in its slot's first line (the slot's line
//! form), so an established IPv4 packet reads two lines of the table. A full
//! bucket evicts, in this order: an expired flow, then the least recently
//! seen flow that is not an established TCP connection, then the least
//! recently seen flow — so floods of new flows push out half-open and idle
//! flows before established ones.
//!
//! Every flow has two entries: *forward* (keyed by the client's packet as it
//! arrives at the VIP) and *reply* (keyed by the backend's answer as it
//! arrives at xlb), except DSR flows whose replies bypass xlb. Each entry holds
//! the translation to apply to packets matching it, and the partner's key
//! follows from it: partner = (new_dst:new_dport → new_src:new_sport).
//! Both entries live in the owner's shard, so the owner removes them together.
//! A flow as a whole is a [`FlowRecord`]: what the table inserts, what
//! [`Conntrack::flows`] exports.
//!
//! Files: [`key`] (keys and their hash), [`entry`] (what an entry and a
//! flow hold), `slot` (how an entry is laid out: the only file that knows),
//! `tags` (which ways of a bucket may hold a key; a key's two buckets),
//! `read` (look-ups by any worker, the owner's fast-path view, dumps),
//! `write` (the owner's inserts, moves, evictions and expiry).

mod entry;
mod key;
mod read;
mod slot;
mod tags;
mod write;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};

pub use entry::{
    flags, flow_timeout_ns, mode, FlowData, FlowRecord, Kind, NewFlowV4, Removed,
    CLOSING_TIMEOUT_NS, SYN_TIMEOUT_NS,
};
pub use key::{v4_word, FlowHasher, FlowKey};
pub(crate) use read::ShardView;
pub use read::{FlowInfo, Hit};

pub(crate) use write::{Decline, Hashed};
pub use write::{Full, ShardWriter};

use crate::select::affinity::Affinity;
use slot::Slot;
use tags::Tags;

/// Slots per bucket.
pub const WAYS: usize = 8;
/// [`ShardView::probe`]'s answer when no tag matches.
pub const NO_SLOT: usize = usize::MAX;

/// One worker's part of the table.
#[derive(Debug)]
struct Shard {
    tags: Tags,
    slots: Box<[Slot]>,
    mask: usize,
    used: AtomicU64,
    /// Sequence number of the owner's moves of entries between their two
    /// buckets (odd during a move): a reader in another worker that finds
    /// nothing checks it did not look while an entry was in flight.
    moves: AtomicU64,
}

impl Shard {
    fn new(buckets: usize) -> Shard {
        let n = buckets * WAYS;
        Shard {
            tags: Tags::new(n),
            slots: crate::hugemem::slice(n, Slot::default),
            mask: buckets - 1,
            used: AtomicU64::new(0),
            moves: AtomicU64::new(0),
        }
    }

    #[inline]
    fn bucket(&self, hash: u64) -> usize {
        (hash as usize) & self.mask
    }
}

/// Sizing of the table.
#[derive(Debug, Clone, Copy)]
pub struct ConntrackConfig {
    /// Buckets per shard; rounded up to a power of two. Each bucket holds
    /// [`WAYS`] entries (a flow takes two) of 128 bytes.
    pub buckets_per_shard: usize,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        // 2^15 buckets × 8 ways × 128 B = 32 MiB per worker: about 100k flows.
        ConntrackConfig {
            buckets_per_shard: 1 << 15,
        }
    }
}

/// The whole table: one shard per worker.
#[derive(Debug)]
pub struct Conntrack {
    shards: Box<[Shard]>,
    hasher: FlowHasher,
    /// Client affinity of persist rules ([`crate::select::affinity`]),
    /// kept with the table because both are shared by every worker for
    /// the table's life and sized together.
    affinity: Affinity,
}

impl Conntrack {
    /// A table for `workers` workers, with a hash keyed at random.
    pub fn new(workers: usize, cfg: ConntrackConfig) -> Conntrack {
        Conntrack::with_hasher(workers, cfg, FlowHasher::random())
    }

    /// A table for `workers` workers that places keys by `hasher`.
    pub fn with_hasher(workers: usize, cfg: ConntrackConfig, hasher: FlowHasher) -> Conntrack {
        let buckets = cfg.buckets_per_shard.max(1).next_power_of_two();
        let shards = workers.max(1);
        Conntrack {
            shards: (0..shards).map(|_| Shard::new(buckets)).collect(),
            hasher,
            // A slot per bucket: about one per four flows the table holds,
            // 16 bytes each (512 KiB per worker at the default size).
            affinity: Affinity::new((buckets * shards).clamp(1 << 12, 1 << 24)),
        }
    }

    /// The client affinity of persist rules (`sel` 3).
    #[inline]
    pub fn affinity(&self) -> &Affinity {
        &self.affinity
    }

    /// The table's hash (every look-up of a key takes its hash from it).
    #[inline]
    pub fn hasher(&self) -> &FlowHasher {
        &self.hasher
    }

    /// The table's hash of `key`.
    #[inline]
    pub fn hash(&self, key: &FlowKey) -> u64 {
        self.hasher.hash(key)
    }

    /// Number of shards (workers).
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Entries in use, summed over shards.
    pub fn used(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.used.load(Ordering::Relaxed))
            .sum()
    }

    /// Entries in use in shard `shard` (one worker's flows).
    pub fn used_in(&self, shard: usize) -> u64 {
        self.shards
            .get(shard)
            .map_or(0, |s| s.used.load(Ordering::Relaxed))
    }

    /// Slots in shard `shard`.
    pub fn capacity_in(&self, shard: usize) -> usize {
        self.shards.get(shard).map_or(0, |s| s.slots.len())
    }

    /// Slots in all shards.
    pub fn capacity(&self) -> usize {
        self.shards.iter().map(|s| s.slots.len()).sum()
    }

    /// The writer for shard `me`. Exactly one worker may hold it.
    pub fn writer(self: &std::sync::Arc<Self>, me: usize) -> ShardWriter {
        ShardWriter::new(self.clone(), me.min(self.shards.len() - 1))
    }
}
