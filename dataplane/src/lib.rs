//! xlb's dataplane: a pure library that takes a batch of frames and returns a
//! [`Verdict`] per frame, with the frame rewritten in place.
//!
//! Invariants that every module keeps:
//! - no allocation, locking, logging or syscalls per packet;
//! - untrusted bytes are read only through the checked views in [`wire`];
//! - every per-packet failure is a counted [`DropReason`], never an error or a panic;
//! - workers read one [`tables::Tables`] snapshot per batch; control publishes a
//!   whole new snapshot with one pointer swap ([`tables::TablesHandle`]).
#![deny(unsafe_code)]

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
pub mod tables;
pub mod wire;

pub use drop::DropReason;
pub use frame::{Frame, PortId, Verdict};
