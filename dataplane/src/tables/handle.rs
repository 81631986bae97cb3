//! The RCU cell between control and the workers: control publishes a
//! whole new snapshot with one pointer swap; a worker loads the current
//! one once per batch.
//!
//! Invariant: a snapshot is freed once the last batch that loaded it is
//! done; a worker never sees half of a change.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::Tables;

/// The RCU cell through which control publishes snapshots to the workers.
#[derive(Debug, Clone)]
pub struct TablesHandle {
    cell: Arc<ArcSwap<Tables>>,
}

impl TablesHandle {
    /// A handle holding an empty snapshot.
    pub fn new() -> TablesHandle {
        TablesHandle {
            cell: Arc::new(ArcSwap::from_pointee(Tables::empty())),
        }
    }

    /// Publish a new snapshot (one atomic pointer swap). The old one is freed
    /// once the last worker batch that loaded it is done.
    pub fn publish(&self, tables: Tables) {
        self.cell.store(Arc::new(tables));
    }

    /// The current snapshot; workers call this once per batch.
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<Tables>> {
        self.cell.load()
    }

    /// The current snapshot as an owned `Arc` (control side).
    pub fn current(&self) -> Arc<Tables> {
        self.cell.load_full()
    }
}

impl Default for TablesHandle {
    fn default() -> Self {
        TablesHandle::new()
    }
}
