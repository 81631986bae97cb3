//! Maglev consistent hashing (Eisenbud et al., NSDI 2016, §3.4) with weights.
//!
//! CONTRACT (used by `tables` and the pipeline; keep these signatures):
//! - `Maglev::build(backends, m)`: `backends[i].key` is a stable identity hash of
//!   backend `i` (see `net::stable_hash64` of "ip:port"), `weight` its relative
//!   weight (0 = takes no slots). `m` must be prime. Returns a table whose slots
//!   hold backend indices.
//! - `lookup(hash)`: the backend index for a flow hash, `None` if the table is empty.
//!
//! TODO(maglev helper): real implementation, property tests, rebuild benchmark.

/// One backend as Maglev sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaglevBackend {
    /// Stable identity hash of the backend (same across processes and runs).
    pub key: u64,
    /// Relative weight; 0 means the backend gets no slots.
    pub weight: u32,
}

/// Default lookup-table size: a prime, as Maglev requires.
pub const DEFAULT_TABLE_SIZE: usize = 65537;

/// Errors building a Maglev table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    /// the Maglev table size must be a prime
    #[error("the Maglev table size {0} is not a prime")]
    NotPrime(usize),
    /// more backends than the table has slots or than fit in u16
    #[error("{0} backends do not fit a Maglev table")]
    TooManyBackends(usize),
}

/// A built Maglev lookup table.
#[derive(Debug, Clone)]
pub struct Maglev {
    table: Box<[u16]>,
}

impl Maglev {
    /// Build the table for `backends` with `m` slots.
    pub fn build(backends: &[MaglevBackend], m: usize) -> Result<Maglev, MaglevError> {
        let _ = (backends, m);
        Ok(Maglev {
            table: Box::new([]),
        })
    }

    /// The backend index for a flow hash; `None` if no backend has weight.
    #[inline]
    pub fn lookup(&self, hash: u64) -> Option<u16> {
        if self.table.is_empty() {
            return None;
        }
        Some(self.table[(hash % self.table.len() as u64) as usize])
    }

    /// The slots, for tests and diagnostics.
    pub fn slots(&self) -> &[u16] {
        &self.table
    }
}
