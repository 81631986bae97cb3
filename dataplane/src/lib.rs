//! xlb's dataplane: a pure library that takes a batch of frames and returns a
//! [`Verdict`] per frame, with the frame rewritten in place. It owns the
//! per-packet work of the balancer (parse, VIP lookup, connection tracking,
//! backend choice, source NAT, rewrite) and the state that work needs (the
//! tables snapshot, the flow table, per-worker counters); the I/O that
//! brings frames in and out, and control, are other crates' (they depend
//! on this one, never the reverse).
//!
//! Modules, in the order a frame meets them:
//! - [`frame`]: a frame in its I/O buffer, and the [`Verdict`] on it;
//! - [`wire`]: packet bytes: the headers' layouts, the parsers, checksum
//!   arithmetic, every rewrite, and frame builders for tests;
//! - [`pipeline`]: one worker's pipeline, batch by batch, in named stages:
//!   the fast paths, the general path, ICMP, expiry pacing;
//! - [`tables`]: what control configures, built into an immutable snapshot
//!   (services, endpoints with stable ids, the VIP index, next hops);
//! - [`conntrack`]: the flow table (a shard per worker, readable by all)
//!   and the flow record it stores;
//! - [`select`]: backend choice (Maglev, client affinity, round robin and
//!   weights, least connections);
//! - [`snat`]: the source-NAT (address, port) search;
//! - [`frags`]: later fragments following their first;
//! - [`sync`]: connection-state sync's flow record and the rings between
//!   workers and control;
//! - [`counters`] and [`drop`]: what each worker counts, and the numbered
//!   drop reasons;
//! - [`net`]: address types and hashes; [`prefetch`], `simd` and `hugemem`:
//!   the three modules that may use `unsafe`, each to reach a CPU or
//!   kernel feature (prefetch hints, vector compares, huge pages).
//!
//! Invariants that every module keeps:
//! - no allocation, locking, logging or syscalls per packet;
//! - untrusted bytes are read only by [`wire`]'s parsers, which check every
//!   bound, and written only through the offsets those report;
//! - every per-packet failure is a counted [`DropReason`], never an error or a panic;
//! - workers read one [`tables::Tables`] snapshot per batch; control publishes a
//!   whole new snapshot with one pointer swap ([`tables::TablesHandle`]).

pub mod conntrack;
pub mod counters;
pub mod drop;
pub mod frags;
pub mod frame;
mod hugemem;
pub mod net;
pub mod pipeline;
pub mod prefetch;
pub mod select;
mod simd;
pub mod snat;
pub mod sync;
pub mod tables;
pub mod wire;

pub use drop::DropReason;
pub use frame::{Frame, PortId, Verdict};
