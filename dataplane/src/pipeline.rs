//! The per-packet pipeline. (Being written: parse → VIP lookup → conntrack →
//! backend choice → NAT rewrite → verdict.)
//!
//! CONTRACT for I/O layers: a worker loop owns one [`Processor`], loads the
//! tables once per batch, and calls [`Processor::process_batch`].

use crate::frame::{Frame, Verdict};
use crate::tables::Tables;

/// Something that decides, for each frame of a batch, what happens to it.
/// `verdicts.len() >= frames.len()`; entry `i` is written for frame `i`.
pub trait Processor {
    /// Process one batch. `now_ns` is a monotonic clock in nanoseconds
    /// (CLOCK_MONOTONIC), read once per batch.
    fn process_batch(
        &mut self,
        tables: &Tables,
        now_ns: u64,
        frames: &mut [Frame<'_>],
        verdicts: &mut [Verdict],
    );
}
