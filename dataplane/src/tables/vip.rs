//! The VIP index of a snapshot: for each (VIP, protocol), its rules sorted
//! by key (port range, block), and the look-up a packet's destination,
//! protocol and port go through.
//!
//! Invariants: a (VIP, protocol) with one rule holds its index in place
//! (no second memory access); longer lists sit back to back in one vector,
//! compacted once the garbage of replaced lists outnumbers the live ones;
//! the rules of one block never overlap, so the first range that covers a
//! port is the rule.

use crate::net::Ip16;

use super::service::Service;
use super::spec::ServiceKey;
use super::Tables;

/// Where the rules of one (VIP, protocol) are listed in [`Tables`]' index.
///
/// Plain data, so copying the index for the next snapshot is a flat copy:
/// no allocation per VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct VipSlot {
    /// How many rules (at least 1).
    pub len: u32,
    /// `len == 1`: the rule's service index itself (the usual case: one rule
    /// per VIP and protocol, found without a second memory access);
    /// otherwise where its list starts in `Tables::vip_lists`.
    pub at: u32,
}

impl Tables {
    /// The index of the service with this key.
    pub fn service_index(&self, key: &ServiceKey) -> Option<usize> {
        let v4 = key.vip.is_ipv4();
        let slot = self
            .by_vip
            .get(&(Ip16::from(key.vip), key.proto.ip_proto_for(v4)))?;
        self.slot_list(slot)
            .iter()
            .map(|&i| i as usize)
            .find(|&i| self.services[i].spec.key == *key)
    }

    /// The service indices a VIP slot lists.
    #[inline]
    pub(super) fn slot_list<'a>(&'a self, slot: &'a VipSlot) -> &'a [u32] {
        if slot.len == 1 {
            std::slice::from_ref(&slot.at)
        } else {
            let start = slot.at as usize;
            self.vip_lists
                .get(start..start + slot.len as usize)
                .unwrap_or(&[])
        }
    }

    /// The service indices on this (VIP, protocol), sorted by key.
    pub(super) fn vip_list(&self, vk: &(Ip16, u8)) -> &[u32] {
        match self.by_vip.get(vk) {
            Some(slot) => self.slot_list(slot),
            None => &[],
        }
    }

    /// Replace the list of this (VIP, protocol) (empty: no rule on it).
    pub(super) fn set_vip_list(&mut self, vk: (Ip16, u8), list: &[u32]) {
        let old = match list {
            [] => self.by_vip.remove(&vk),
            [i] => self.by_vip.insert(vk, VipSlot { len: 1, at: *i }),
            _ => {
                let at = self.vip_lists.len() as u32;
                self.vip_lists.extend_from_slice(list);
                self.by_vip.insert(
                    vk,
                    VipSlot {
                        len: list.len() as u32,
                        at,
                    },
                )
            }
        };
        if let Some(o) = old.filter(|o| o.len > 1) {
            self.vip_garbage += o.len as usize;
        }
        if self.vip_garbage > 64 && self.vip_garbage * 2 > self.vip_lists.len() {
            let mut lists = Vec::with_capacity(self.vip_lists.len() - self.vip_garbage);
            for slot in self.by_vip.values_mut().filter(|s| s.len > 1) {
                let start = slot.at as usize;
                let at = lists.len() as u32;
                lists.extend_from_slice(&self.vip_lists[start..start + slot.len as usize]);
                slot.at = at;
            }
            self.vip_lists = lists;
            self.vip_garbage = 0;
        }
    }

    /// Rename service index `from` to `to` in the list of this (VIP, protocol).
    pub(super) fn renumber(&mut self, vk: &(Ip16, u8), from: u32, to: u32) {
        let Some(slot) = self.by_vip.get_mut(vk) else {
            return;
        };
        let list = if slot.len == 1 {
            std::slice::from_mut(&mut slot.at)
        } else {
            let start = slot.at as usize;
            &mut self.vip_lists[start..start + slot.len as usize]
        };
        for x in list.iter_mut().filter(|x| **x == from) {
            *x = to;
        }
    }

    /// The service for a packet to `vip`/`ip_proto`/`port`, if any. For ICMP pass port 0.
    #[inline]
    pub fn lookup(&self, vip: Ip16, ip_proto: u8, port: u16) -> Option<&Service> {
        let slot = self.by_vip.get(&(vip, ip_proto))?;
        // Lists are short (usually one rule per VIP/protocol); the first range that
        // covers the port wins (ranges of one block never overlap).
        for &i in self.slot_list(slot) {
            let s: &Service = &self.services[i as usize];
            if s.spec.key.port_min <= port && port <= s.spec.key.port_max {
                return Some(s);
            }
            if s.spec.key.port_min > port {
                break;
            }
        }
        None
    }

    /// Whether `addr` is a VIP of any rule.
    #[inline]
    pub fn is_vip(&self, addr: Ip16) -> bool {
        self.vips.contains_key(&addr)
    }

    /// Every VIP with its services, for the XDP program's steering map.
    pub fn vips(&self) -> impl Iterator<Item = Ip16> + '_ {
        self.vips.keys().copied()
    }
}
