//! Daemon-wide table settings (`xlb run` options that shape every rule's
//! tables): the full-NAT source addresses, the Maglev table size, and IPIP
//! for every IPv4 DSR rule. Each setter rebuilds the tables and puts the
//! old value back if the rebuild is refused.

use std::net::IpAddr;

use xlb_dataplane::select::maglev::{Maglev, DEFAULT_TABLE_SIZE};

use super::ControlState;
use crate::error::RuleError;

/// The Maglev lookup-table size of every hash (sel 1) and persist (sel 3)
/// rule (`xlb run --maglev-size`): a prime the dataplane builds tables of,
/// large enough for any rule. Checked once, when it is made, so a bad value
/// stops the daemon before it starts rather than refusing rules later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MaglevSize(usize);

impl MaglevSize {
    /// The smallest size: the smallest prime with a slot for each of a rule's
    /// [`xlb_dataplane::tables::MAX_ENDPOINTS_PER_SERVICE`] endpoints (Maglev gives every weighted
    /// backend at least one slot, so a smaller table would refuse big rules).
    pub const MIN: usize = 37;
    /// The largest size: the largest prime the dataplane builds
    /// ([`xlb_dataplane::select::maglev::MAX_TABLE_SIZE`]; 32 MiB per rule, far
    /// beyond any use).
    pub const MAX: usize = 16_777_213;

    /// Check `size`: a prime in [`MaglevSize::MIN`]..=[`MaglevSize::MAX`].
    pub fn new(size: usize) -> Result<MaglevSize, MaglevSizeError> {
        if !(Self::MIN..=Self::MAX).contains(&size) {
            return Err(MaglevSizeError::OutOfRange(size));
        }
        if !is_table_size(size) {
            return Err(MaglevSizeError::NotPrime {
                size,
                below: (Self::MIN..size).rev().find(|&m| is_table_size(m)),
                above: (size + 1..=Self::MAX).find(|&m| is_table_size(m)),
            });
        }
        Ok(MaglevSize(size))
    }

    /// The number of slots.
    pub fn get(self) -> usize {
        self.0
    }
}

/// Whether the dataplane builds Maglev tables of `m` slots. Asking it (an
/// empty table costs nothing) keeps one definition of what is accepted.
pub(super) fn is_table_size(m: usize) -> bool {
    Maglev::build(&[], m).is_ok()
}

impl Default for MaglevSize {
    /// The dataplane's default (65537, the Maglev paper's and Katran's size).
    fn default() -> MaglevSize {
        MaglevSize(DEFAULT_TABLE_SIZE)
    }
}

impl std::fmt::Display for MaglevSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for MaglevSize {
    type Err = MaglevSizeError;
    fn from_str(s: &str) -> Result<MaglevSize, MaglevSizeError> {
        let size = s
            .trim()
            .parse()
            .map_err(|_| MaglevSizeError::NotANumber(s.to_string()))?;
        MaglevSize::new(size)
    }
}

/// Why a Maglev table size cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaglevSizeError {
    /// not a whole number
    #[error("{0:?} is not a whole number")]
    NotANumber(String),
    /// outside MaglevSize::MIN..=MaglevSize::MAX
    #[error(
        "{0} is out of range: give a prime from {min} to {max}",
        min = MaglevSize::MIN,
        max = MaglevSize::MAX
    )]
    OutOfRange(usize),
    /// Maglev's permutations need a prime table size
    #[error("{size} is not a prime, which Maglev needs{}", nearest(*.below, *.above))]
    NotPrime {
        /// The size given.
        size: usize,
        /// The nearest usable size below it, if any.
        below: Option<usize>,
        /// The nearest usable size above it, if any.
        above: Option<usize>,
    },
}

fn nearest(below: Option<usize>, above: Option<usize>) -> String {
    match (below, above) {
        (Some(b), Some(a)) => format!("; the nearest primes are {b} and {a}"),
        (Some(p), None) | (None, Some(p)) => format!("; the nearest prime is {p}"),
        (None, None) => String::new(),
    }
}

impl ControlState {
    /// Set the full-NAT source addresses (`xlb run --snat-addrs`) and rebuild.
    /// Every full-NAT rule of an address's family uses them; with none of a
    /// family, the egress port's address is used.
    pub fn set_snat_addrs(&mut self, addrs: Vec<IpAddr>) -> Result<(), RuleError> {
        let old = std::mem::replace(&mut self.snat_addrs, addrs);
        let res = self.refresh();
        if res.is_err() {
            self.snat_addrs = old;
        }
        res
    }

    /// The full-NAT source addresses configured.
    pub fn snat_addrs(&self) -> &[IpAddr] {
        &self.snat_addrs
    }

    /// Set the Maglev table size of every rule (`xlb run --maglev-size`) and
    /// rebuild. Later changes keep it: an update starts from the snapshot.
    pub fn set_maglev_size(&mut self, size: MaglevSize) -> Result<(), RuleError> {
        self.set_and_refresh(|s| &mut s.maglev_size, size)
    }

    /// The Maglev table size configured.
    pub fn maglev_size(&self) -> MaglevSize {
        self.maglev_size
    }

    /// Encapsulate every IPv4 DSR rule in IPIP (`xlb run --dsr-ipip`), also
    /// the rules that do not ask for it with `dsrIpip` (kube-loxilb cannot
    /// send that field), and rebuild. IPv6 DSR rules keep the L2 rewrite.
    /// Rules show only their own `dsrIpip` in GET; this is the daemon's.
    pub fn set_dsr_ipip(&mut self, on: bool) -> Result<(), RuleError> {
        self.set_and_refresh(|s| &mut s.dsr_ipip, on)
    }

    /// Set the daemon-wide setting `field` to `value` and rebuild; if the
    /// rebuild fails, the setting goes back to what it was.
    fn set_and_refresh<T>(
        &mut self,
        field: fn(&mut Self) -> &mut T,
        value: T,
    ) -> Result<(), RuleError> {
        let old = std::mem::replace(field(self), value);
        let res = self.refresh();
        if res.is_err() {
            *field(self) = old;
        }
        res
    }
}
