//! ICMP the pipeline answers or translates itself: errors about tracked
//! flows (translated like the flow they quote, RFC 5508 §4.3, or passed to
//! a DSR backend unchanged) and echo requests to a VIP without an ICMP rule
//! (answered: the VIP is alive).
//!
//! Invariant: an error reaches the other end of a flow only if a tracked
//! entry matches the packet it quotes; an error about nothing xlb tracks,
//! to one of xlb's addresses, is dropped and counted.

use crate::conntrack::{mode, FlowKey, Kind};
use crate::counters::bump;
use crate::drop::DropReason;
use crate::frame::{Frame, Verdict};
use crate::tables::Tables;
use crate::wire::rewrite::{answer_echo, set_macs, translate_icmp_error};
use crate::wire::{self, PacketMeta};

use super::general::ipip_wrap;
use super::Pipeline;

impl Pipeline {
    /// An ICMP error: translate it like the flow it is about, or drop it.
    pub(super) fn icmp_error(&mut self, t: &Tables, f: &mut Frame<'_>, m: &PacketMeta) -> Verdict {
        let ours = t.is_vip(m.dst) || t.is_snat_addr(m.dst);
        let Some(inner) = wire::parse_icmp_inner(f.data(), m) else {
            return if ours {
                Verdict::Drop(DropReason::IcmpUntracked)
            } else {
                Verdict::Pass
            };
        };
        // The error travels against the quoted packet: the entry for traffic in
        // the error's direction is keyed by the quoted packet reversed.
        let key = FlowKey {
            src: inner.dst,
            dst: inner.src,
            sport: inner.dport,
            dport: inner.sport,
            proto: inner.proto,
        };
        let hash = self.ct.table().hash(&key);
        let Some(hit) = self.find_anywhere(&key, hash) else {
            return if ours {
                Verdict::Drop(DropReason::IcmpUntracked)
            } else {
                Verdict::Pass
            };
        };
        let d = hit.data;
        if d.kind == Kind::Forward && mode::is_dsr(d.mode) {
            // DSR never rewrote the flow: forward the error unchanged to the
            // backend, the way the flow's own packets go (IPIP too).
            let Some(port) = t.port(d.port) else {
                return Verdict::Drop(DropReason::NoPort);
            };
            set_macs(f.data_mut(), d.mac, port.mac);
            if d.mode == mode::DSR_IPIP {
                if let Err(r) = ipip_wrap(t, &port.addrs, f, m, &d) {
                    return Verdict::Drop(r);
                }
            }
            self.counters.endpoint_packet(d.endpoint, f.len as u64);
            return Verdict::Tx(d.port);
        }
        let Some(port) = t.port(d.port) else {
            return Verdict::Drop(DropReason::NoPort);
        };
        if m.ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExceeded);
        }
        let data = f.data_mut();
        // The quoted packet must look like the one the receiver of the
        // error sent; the error comes from the VIP (or SNAT address).
        translate_icmp_error(data, m, &inner, &d.xlat());
        set_macs(data, d.mac, port.mac);
        self.counters.endpoint_packet(d.endpoint, f.len as u64);
        Verdict::Tx(d.port)
    }

    /// Answer an echo request to a VIP that has no ICMP rule: the VIP is alive.
    pub(super) fn echo_reply(&mut self, t: &Tables, f: &mut Frame<'_>, m: &PacketMeta) -> Verdict {
        let Some(port) = t.port(f.rx_port) else {
            return Verdict::Drop(DropReason::NoPort);
        };
        let port_mac = port.mac;
        answer_echo(f.data_mut(), m, port_mac);
        bump(&self.counters.icmp_echo_replies, 1);
        Verdict::Tx(f.rx_port)
    }
}
