//! Client affinity for `sel` 3 (persist): the backend each client address
//! of a persist rule was last sent to, shared by every worker without
//! locks, and forgotten once the client has opened no connection for the
//! rule's inactivity timeout.
//!
//! Why a table and not only Maglev over the client address: Maglev alone
//! keeps a client on one backend only while the backend set stays the same
//! (adding a backend moves about 1/n of the clients, mid-session for
//! them). With the table, a client that keeps coming back stays where it
//! is until it goes idle, its backend leaves or goes down; a new client, or
//! one whose affinity lapsed, is placed by Maglev over its address, so
//! every worker places it alike.
//!
//! Layout: a direct-mapped array of slots, each two atomic words: the
//! 64-bit hash of (rule, client address), and `endpoint << 32 | time`.
//! A slot holds one client at a time; clients that share a slot take it
//! from each other and fall back to Maglev, which is where a lapsed
//! affinity goes anyway. Time counts units of 2^30 ns (~1.07 s). Two
//! workers recording clients of one slot at once may leave one client's
//! hash beside the other's endpoint: that client then goes to a backend of
//! its rule that is up (the caller checks), just not its own, once.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::net::{fmix64, Ip16};
use crate::tables::EndpointId;

/// log2 of the time unit in nanoseconds.
const TIME_SHIFT: u32 = 30;

/// The shared affinity table of one flow table (see the module docs).
#[derive(Debug)]
pub struct Affinity {
    /// (hash of rule and client, or 0 for none; endpoint << 32 | time).
    slots: Box<[[AtomicU64; 2]]>,
    mask: usize,
}

impl Affinity {
    /// A table of `slots` slots (rounded up to a power of two, at least 1).
    pub fn new(slots: usize) -> Affinity {
        let n = slots.max(1).next_power_of_two();
        Affinity {
            slots: (0..n)
                .map(|_| [AtomicU64::new(0), AtomicU64::new(0)])
                .collect(),
            mask: n - 1,
        }
    }

    /// The slot of (`rule`, `client`) and the hash its first word holds
    /// (never 0, which marks an empty slot).
    #[inline]
    fn place(&self, rule: u64, client: &Ip16) -> (usize, u64) {
        let w = client.words();
        let h = fmix64(rule ^ fmix64(w[0] ^ fmix64(w[1]).rotate_left(17)));
        ((h as usize) & self.mask, h | 1)
    }

    /// The endpoint `client` of rule `rule` ([`crate::tables::Service::rule_key`])
    /// was last sent to, if that was within `timeout_ns` of `now_ns`.
    #[inline]
    pub fn get(
        &self,
        rule: u64,
        client: &Ip16,
        now_ns: u64,
        timeout_ns: u64,
    ) -> Option<EndpointId> {
        let (i, h) = self.place(rule, client);
        let [key, val] = self.slots.get(i)?;
        if key.load(Ordering::Relaxed) != h {
            return None;
        }
        let v = val.load(Ordering::Relaxed);
        let age = u64::from((now_ns >> TIME_SHIFT) as u32).wrapping_sub(v & 0xffff_ffff);
        // (Counted in whole units: an affinity lasts up to one unit longer.)
        if age & 0xffff_ffff > timeout_ns >> TIME_SHIFT {
            return None;
        }
        Some((v >> 32) as EndpointId)
    }

    /// Record that `client` of rule `rule` was sent to endpoint `ep` at `now_ns`.
    #[inline]
    pub fn set(&self, rule: u64, client: &Ip16, ep: EndpointId, now_ns: u64) {
        let (i, h) = self.place(rule, client);
        if let Some([key, val]) = self.slots.get(i) {
            let t = u64::from((now_ns >> TIME_SHIFT) as u32);
            val.store((u64::from(ep) << 32) | t, Ordering::Relaxed);
            key.store(h, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn ip(s: &str) -> Ip16 {
        Ip16::from(s.parse::<std::net::IpAddr>().expect("ip"))
    }

    #[test]
    fn a_client_keeps_its_endpoint_until_it_goes_idle() {
        let a = Affinity::new(1024);
        let c = ip("10.0.0.7");
        assert_eq!(a.get(1, &c, 100 * S, 240 * S), None, "nothing recorded yet");
        a.set(1, &c, 42, 100 * S);
        assert_eq!(a.get(1, &c, 100 * S, 240 * S), Some(42));
        assert_eq!(
            a.get(1, &c, 330 * S, 240 * S),
            Some(42),
            "within the timeout"
        );
        assert_eq!(a.get(1, &c, 400 * S, 240 * S), None, "idle past it");
        // Another rule, another client: their own records.
        assert_eq!(a.get(2, &c, 101 * S, 240 * S), None);
        assert_eq!(a.get(1, &ip("10.0.0.8"), 101 * S, 240 * S), None);
        assert_eq!(a.get(1, &ip("2001:db8::7"), 101 * S, 240 * S), None);
        // A new record replaces the old and restarts the clock.
        a.set(1, &c, 7, 390 * S);
        assert_eq!(a.get(1, &c, 600 * S, 240 * S), Some(7));
    }

    #[test]
    fn the_clock_wraps_without_reviving_old_records() {
        let a = Affinity::new(16);
        let c = ip("10.0.0.7");
        // Just before the 32-bit time of the record wraps, and after it.
        let t0 = ((1u64 << 32) - 2) << TIME_SHIFT;
        a.set(1, &c, 5, t0);
        assert_eq!(a.get(1, &c, t0 + 3 * S, 10 * S), Some(5));
        assert_eq!(a.get(1, &c, t0 + 60 * S, 10 * S), None);
        assert_eq!(
            a.get(1, &c, t0 - 3 * S, 10 * S),
            None,
            "a record from the future"
        );
    }

    proptest::proptest! {
        /// Of many clients in a small table, a lookup never answers with
        /// another client's endpoint: each answer is the last one recorded
        /// for that client, or none (another client took its slot).
        #[test]
        fn lookups_never_return_another_clients_endpoint(
            clients in proptest::collection::vec(proptest::prelude::any::<u32>(), 1..400)
        ) {
            let a = Affinity::new(64);
            for (k, &c) in clients.iter().enumerate() {
                a.set(9, &Ip16::v4(c.to_be_bytes()), k as u32, S);
            }
            for (k, &c) in clients.iter().enumerate() {
                // The last record for this address wins.
                let want = clients.iter().rposition(|&d| d == c).map(|j| j as u32);
                if let Some(got) = a.get(9, &Ip16::v4(c.to_be_bytes()), S, 10 * S) {
                    proptest::prop_assert_eq!(Some(got), want, "client {}", k);
                }
            }
        }
    }
}
