//! Which of its addresses this node serves now: the HA roles as the tables
//! carry them. A VIP or floating address is either always served (no HA, or
//! MASTER set by a controller), never served ([`Holds::idle`]: BACKUP,
//! FAULT or STOP set by a controller), or served while the election says
//! this node holds ([`Holds::elected`], through a shared [`HoldGate`]).
//!
//! Who reads it: what follows the tables into the kernel — the XDP steering
//! maps and the addresses held on the host — not the workers: traffic for an
//! address that is not served never reaches them, and their tables stay
//! built, so taking over changes one flag, not the tables.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hashbrown::HashSet;

use crate::net::Ip16;

/// Whether the election says this node holds: one flag shared by the
/// election (which sets it) and every snapshot (which reads it), so a
/// change of holder needs no new snapshot. Starts not holding.
#[derive(Debug, Clone, Default)]
pub struct HoldGate(Arc<AtomicBool>);

impl HoldGate {
    /// A gate that does not hold.
    pub fn new() -> HoldGate {
        HoldGate::default()
    }

    /// Whether this node holds the elected addresses now.
    pub fn holding(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Set whether it holds; returns whether that changed anything.
    pub fn set(&self, on: bool) -> bool {
        self.0.swap(on, Ordering::AcqRel) != on
    }

    /// Whether two gates are the same flag.
    pub fn same(&self, other: &HoldGate) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The roles as control describes them for one snapshot.
#[derive(Debug, Clone, Default)]
pub struct HoldSpec {
    /// Addresses never served now.
    pub idle: Vec<IpAddr>,
    /// Addresses served while `gate` holds.
    pub elected: Vec<IpAddr>,
    /// The election's flag.
    pub gate: HoldGate,
}

impl PartialEq for HoldSpec {
    fn eq(&self, other: &HoldSpec) -> bool {
        self.idle == other.idle && self.elected == other.elected && self.gate.same(&other.gate)
    }
}

impl Eq for HoldSpec {}

/// The roles of one snapshot, indexed.
#[derive(Debug, Clone, Default)]
pub struct Holds {
    idle: HashSet<Ip16>,
    elected: HashSet<Ip16>,
    spec: HoldSpec,
}

impl Holds {
    /// Index `spec`.
    pub fn new(spec: HoldSpec) -> Holds {
        Holds {
            idle: spec.idle.iter().copied().map(Ip16::from).collect(),
            elected: spec.elected.iter().copied().map(Ip16::from).collect(),
            spec,
        }
    }

    /// Whether this node serves `addr` now.
    pub fn serves(&self, addr: Ip16) -> bool {
        !self.idle.contains(&addr) && (!self.elected.contains(&addr) || self.spec.gate.holding())
    }

    /// The roles as described.
    pub fn spec(&self) -> &HoldSpec {
        &self.spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn idle_addresses_are_never_served_and_elected_ones_follow_the_gate() {
        let gate = HoldGate::new();
        let h = Holds::new(HoldSpec {
            idle: vec![ip("192.0.2.1")],
            elected: vec![ip("192.0.2.2"), ip("2001:db8::2")],
            gate: gate.clone(),
        });
        let served = |a: &str| h.serves(Ip16::from(ip(a)));
        assert!(served("192.0.2.3"), "neither: always served");
        assert!(!served("192.0.2.1"));
        assert!(!served("192.0.2.2") && !served("2001:db8::2"));
        assert!(gate.set(true));
        assert!(!gate.set(true), "no change");
        assert!(served("192.0.2.2") && served("2001:db8::2"));
        assert!(!served("192.0.2.1"), "idle stays idle");
        assert!(gate.set(false));
        assert!(!served("192.0.2.2"));
    }

    #[test]
    fn specs_are_equal_only_with_the_same_gate() {
        let gate = HoldGate::new();
        let a = HoldSpec {
            idle: vec![ip("192.0.2.1")],
            elected: vec![],
            gate: gate.clone(),
        };
        assert_eq!(a, a.clone());
        let b = HoldSpec {
            gate: HoldGate::new(),
            ..a.clone()
        };
        assert_ne!(a, b);
    }
}
