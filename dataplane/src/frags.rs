//! Which flow the fragments of a datagram belong to, so that later
//! fragments follow their first.
//!
//! Only a datagram's first fragment carries its L4 header, so only it
//! names the flow (ports). xlb does not reassemble: when it forwards a
//! first fragment, it notes the datagram (addresses, protocol,
//! identification) and the flow's key here, and translates each later
//! fragment of the datagram as that flow's packets are translated (their
//! IP header only: the first fragment's L4 checksum, updated for the new
//! addresses and ports, covers the whole datagram). A later fragment whose
//! first fragment has not been forwarded (lost, reordered ahead of it, or
//! over [`FRAG_TIMEOUT_NS`] old) is dropped and counted
//! ([`crate::DropReason::Fragment`]).
//!
//! Per worker, no locks: NICs hash every fragment of a datagram to the
//! same queue (by addresses alone, having no ports for later fragments),
//! so the worker that forwards a first fragment sees its followers. A
//! direct-mapped table: datagrams in flight that share a slot take it from
//! each other (the older one's later fragments are then dropped).

use crate::conntrack::FlowKey;
use crate::net::{fmix64, Ip16};
use crate::wire::PacketMeta;

/// How long after its first fragment a datagram's later fragments are
/// still translated (the first fragment's age, not the last's; Linux
/// gives a datagram 30 s to reassemble, but its fragments normally arrive
/// back to back).
pub const FRAG_TIMEOUT_NS: u64 = 5_000_000_000;

/// A datagram in flight and its flow.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    src: Ip16,
    dst: Ip16,
    id: u32,
    proto: u8,
    /// 0: empty.
    expires: u64,
    key: FlowKey,
    /// The flow table's hash of `key`.
    hash: u64,
}

/// One worker's table of datagrams in flight (see the module docs).
#[derive(Debug)]
pub struct FragTable {
    slots: Box<[Slot]>,
    mask: usize,
}

impl FragTable {
    /// A table of `slots` slots (rounded up to a power of two).
    pub fn new(slots: usize) -> FragTable {
        let n = slots.max(1).next_power_of_two();
        FragTable {
            slots: vec![Slot::default(); n].into_boxed_slice(),
            mask: n - 1,
        }
    }

    fn index(&self, m: &PacketMeta) -> usize {
        let s = m.src.words();
        let d = m.dst.words();
        let h = fmix64(s[0] ^ fmix64(s[1] ^ fmix64(d[0] ^ fmix64(d[1]))))
            ^ (u64::from(m.frag_id) << 8)
            ^ u64::from(m.proto);
        (fmix64(h) as usize) & self.mask
    }

    /// Note that the first fragment `m` (of flow `key`, whose flow-table
    /// hash is `hash`) was forwarded at `now`.
    pub fn remember(&mut self, m: &PacketMeta, key: FlowKey, hash: u64, now: u64) {
        let i = self.index(m);
        if let Some(s) = self.slots.get_mut(i) {
            *s = Slot {
                src: m.src,
                dst: m.dst,
                id: m.frag_id,
                proto: m.proto,
                expires: now.saturating_add(FRAG_TIMEOUT_NS).max(1),
                key,
                hash,
            };
        }
    }

    /// The flow of the later fragment `m` at `now`, and its hash: those of
    /// its datagram's first fragment, if one was forwarded within
    /// [`FRAG_TIMEOUT_NS`].
    pub fn flow_of(&self, m: &PacketMeta, now: u64) -> Option<(FlowKey, u64)> {
        let s = self.slots.get(self.index(m))?;
        (s.expires > now
            && s.id == m.frag_id
            && s.proto == m.proto
            && s.src == m.src
            && s.dst == m.dst)
            .then_some((s.key, s.hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Frag;

    fn meta(src: &str, dst: &str, id: u32, proto: u8) -> PacketMeta {
        PacketMeta {
            src: Ip16::from(src.parse::<std::net::IpAddr>().expect("ip")),
            dst: Ip16::from(dst.parse::<std::net::IpAddr>().expect("ip")),
            proto,
            frag: Frag::Later,
            frag_id: id,
            ..PacketMeta::default()
        }
    }

    #[test]
    fn later_fragments_find_their_first_until_it_is_too_old() {
        let mut t = FragTable::new(64);
        let first = meta("10.0.0.2", "192.0.2.10", 77, 17);
        let key = FlowKey {
            src: first.src,
            dst: first.dst,
            sport: 5000,
            dport: 53,
            proto: 17,
        };
        assert_eq!(t.flow_of(&first, 1), None, "nothing noted yet");
        t.remember(&first, key, 99, 1_000);
        assert_eq!(t.flow_of(&first, 2_000), Some((key, 99)));
        assert_eq!(
            t.flow_of(&first, 1_000 + FRAG_TIMEOUT_NS - 1),
            Some((key, 99))
        );
        assert_eq!(t.flow_of(&first, 1_000 + FRAG_TIMEOUT_NS), None);
        // Another datagram: another id, protocol, source or destination.
        for other in [
            meta("10.0.0.2", "192.0.2.10", 78, 17),
            meta("10.0.0.2", "192.0.2.10", 77, 6),
            meta("10.0.0.3", "192.0.2.10", 77, 17),
            meta("10.0.0.2", "192.0.2.11", 77, 17),
            meta("2001:db8::2", "192.0.2.10", 77, 17),
        ] {
            assert_eq!(t.flow_of(&other, 2_000), None, "{other:?}");
        }
    }

    #[test]
    fn datagrams_sharing_a_slot_take_it_from_each_other() {
        let mut t = FragTable::new(1);
        let a = meta("10.0.0.2", "192.0.2.10", 1, 17);
        let b = meta("10.0.0.2", "192.0.2.10", 2, 17);
        let key = |p| FlowKey {
            src: a.src,
            dst: a.dst,
            sport: p,
            dport: 53,
            proto: 17,
        };
        t.remember(&a, key(1), 1, 0);
        t.remember(&b, key(2), 2, 0);
        assert_eq!(t.flow_of(&a, 1), None);
        assert_eq!(t.flow_of(&b, 1), Some((key(2), 2)));
    }
}
