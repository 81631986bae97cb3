//! What the table says about a flow: the entries' contents ([`FlowData`],
//! one per direction), the flow as one record ([`FlowRecord`], and its IPv4
//! form for the new-flow path, [`NewFlowV4`]), the flag bits and mode
//! numbers they carry, and the timeouts that follow from them.
//!
//! Invariant: a flow's reply entry undoes its forward entry: it is keyed by
//! the forward translation reversed ([`FlowData::partner_key`]) and
//! translates back to the forward key reversed. A record says it once
//! ([`FlowRecord::xlat`]); both entries follow from it.

use crate::frame::PortId;
use crate::net::{Ip16, MacAddr};
use crate::tables::{EndpointId, NextHop};
use crate::wire::proto;
use crate::wire::rewrite::{TupleV4, Xlat};
use crate::wire::tcp::flags as tcp;

use super::FlowKey;

/// Idle timeout of a TCP flow whose handshake has not completed.
pub const SYN_TIMEOUT_NS: u64 = 30_000_000_000;
/// Idle timeout of a TCP flow after RST or FIN in both directions.
pub const CLOSING_TIMEOUT_NS: u64 = 10_000_000_000;

/// Flag bits kept per entry (`FlowData::flags`).
pub mod flags {
    // FIN, SYN and RST sit where TCP keeps them (RFC 9293 §3.1), so the
    // fast path maps a segment's flags with a mask.
    /// A TCP FIN was seen in this entry's direction.
    pub const FIN: u8 = super::tcp::FIN;
    /// A TCP SYN was seen in this entry's direction.
    pub const SYN: u8 = super::tcp::SYN;
    /// A TCP RST was seen in this entry's direction.
    pub const RST: u8 = super::tcp::RST;
    /// A packet matched this entry after it was created (for a reply entry: the backend answered).
    pub const SEEN: u8 = 8;
    /// A TCP packet without SYN was seen (the client completed the handshake; DSR uses it).
    pub const ACK: u8 = 16;
}

/// NAT mode numbers stored in flow entries (loxilb's `mode`, plus DSR over IPIP).
pub mod mode {
    /// Destination NAT.
    pub const DNAT: u8 = 0;
    /// One-arm (source NAT to the balancer's LAN address).
    pub const ONE_ARM: u8 = 1;
    /// Full NAT.
    pub const FULL_NAT: u8 = 2;
    /// Direct server return, L2 rewrite only.
    pub const DSR: u8 = 3;
    /// Direct server return, IPIP-encapsulated.
    pub const DSR_IPIP: u8 = 4;

    /// Whether replies bypass xlb.
    #[inline]
    pub fn is_dsr(m: u8) -> bool {
        m == DSR || m == DSR_IPIP
    }
}

/// Which direction an entry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Client → VIP.
    Forward,
    /// Backend → xlb (the answer).
    Reply,
}

/// What an entry says about its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowData {
    /// Direction.
    pub kind: Kind,
    /// [`flags`] bits seen in this direction.
    pub flags: u8,
    /// The rule's idle timeout, seconds.
    pub timeout_s: u32,
    /// Low 32 bits of the tables generation the cached next hop was taken from.
    pub gen: u32,
    /// The backend.
    pub endpoint: EndpointId,
    /// Service index at creation (diagnostics; the endpoint id is authoritative).
    pub service: u16,
    /// The rule's NAT mode number (0 DNAT, 1 one-arm, 2 full NAT, 3 DSR).
    pub mode: u8,
    /// Source address to write (forward: SNAT address or the client; reply: the VIP).
    pub new_src: Ip16,
    /// Destination address to write (forward: the backend; reply: the client).
    pub new_dst: Ip16,
    /// Source port to write.
    pub new_sport: u16,
    /// Destination port to write.
    pub new_dport: u16,
    /// Destination MAC to write (forward: backend next hop; reply: the client's last hop).
    pub mac: MacAddr,
    /// Port to transmit on.
    pub port: PortId,
}

impl FlowData {
    /// What packets matching the entry become.
    #[inline]
    pub fn xlat(&self) -> Xlat {
        Xlat {
            src: self.new_src,
            dst: self.new_dst,
            sport: self.new_sport,
            dport: self.new_dport,
        }
    }

    /// Key of the partner entry (the other direction of the same flow).
    #[inline]
    pub fn partner_key(&self, proto: u8) -> FlowKey {
        FlowKey {
            src: self.new_dst,
            dst: self.new_src,
            sport: self.new_dport,
            dport: self.new_sport,
            proto,
        }
    }
}

/// A flow as one record: what both of its entries hold, said once. The
/// table stores it as two entries (forward and, unless the flow is DSR,
/// reply); [`super::ShardWriter::insert`] takes it and
/// [`super::Conntrack::flows`] gives it back, and connection sync between
/// nodes carries it ([`crate::sync::SyncedFlow`]). Everything here means
/// the same on every node but `endpoint`, `service`, `gen` and the next
/// hops, which a node takes from its own tables: the rule is the one its
/// VIP, protocol and port name ([`FlowRecord::rule`], what the client
/// addressed), the backend is
/// `xlat.dst` (in DSR, where `xlat.dst` stays the VIP, the endpoint
/// `endpoint` of this node), and the rest (the translation with its
/// source-NAT port, the TCP state of each direction, the timeout) is the
/// flow's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRecord {
    /// The forward key: the client's packet as it arrives at the VIP.
    pub key: FlowKey,
    /// What the client's packets become (the reply entry undoes it).
    pub xlat: Xlat,
    /// The rule's NAT mode number ([`mode`]).
    pub mode: u8,
    /// The rule's idle timeout, seconds.
    pub timeout_s: u32,
    /// [`flags`] seen from the client (the forward entry's).
    pub fwd_flags: u8,
    /// [`flags`] seen from the backend (the reply entry's).
    pub rep_flags: u8,
    /// The backend's endpoint id (this node's).
    pub endpoint: EndpointId,
    /// The rule's service index (this node's snapshot; diagnostics).
    pub service: u16,
    /// Low 32 bits of the tables generation the next hops are from.
    pub gen: u32,
    /// Where the client's packets go: the backend's next hop.
    pub to_backend: NextHop,
    /// Where the backend's answers go: the client's last hop. `None`: the
    /// flow has no reply entry (DSR, whose answers bypass xlb).
    pub to_client: Option<NextHop>,
}

impl FlowRecord {
    /// The rule a packet of this flow matched, as the tables look it up:
    /// (VIP, protocol, port), where ICMP rules have port 0 (an echo's
    /// identifier is a flow key, not a service port).
    #[inline]
    pub fn rule(&self) -> (Ip16, u8, u16) {
        let k = &self.key;
        let port = if proto::is_icmp(k.proto) { 0 } else { k.dport };
        (k.dst, k.proto, port)
    }

    /// The reply entry's key (whether or not the flow has one): the
    /// backend's answer to the translated packet.
    #[inline]
    pub fn reply_key(&self) -> FlowKey {
        let x = &self.xlat;
        FlowKey {
            src: x.dst,
            dst: x.src,
            sport: x.dport,
            dport: x.sport,
            proto: self.key.proto,
        }
    }

    /// The forward entry.
    #[inline]
    pub fn forward(&self) -> FlowData {
        FlowData {
            kind: Kind::Forward,
            flags: self.fwd_flags,
            timeout_s: self.timeout_s,
            gen: self.gen,
            endpoint: self.endpoint,
            service: self.service,
            mode: self.mode,
            new_src: self.xlat.src,
            new_dst: self.xlat.dst,
            new_sport: self.xlat.sport,
            new_dport: self.xlat.dport,
            mac: self.to_backend.mac,
            port: self.to_backend.port,
        }
    }

    /// The reply entry's key and contents, if the flow has one: keyed by
    /// the backend's answer, translating it back to what the client sent,
    /// reversed.
    #[inline]
    pub fn reply(&self) -> Option<(FlowKey, FlowData)> {
        self.reply_of(&self.forward())
    }

    /// [`FlowRecord::reply`] given the forward entry (`self.forward()`).
    #[inline]
    pub(super) fn reply_of(&self, fwd: &FlowData) -> Option<(FlowKey, FlowData)> {
        let hop = self.to_client?;
        let k = &self.key;
        Some((
            self.reply_key(),
            FlowData {
                kind: Kind::Reply,
                flags: self.rep_flags,
                new_src: k.dst,
                new_dst: k.src,
                new_sport: k.dport,
                new_dport: k.sport,
                mac: hop.mac,
                port: hop.port,
                ..*fwd
            },
        ))
    }

    /// The record of the flow whose forward entry, keyed `key`, holds
    /// `fwd`, and whose reply entry (if any) holds `rep`.
    pub fn from_entries(key: &FlowKey, fwd: &FlowData, rep: Option<&FlowData>) -> FlowRecord {
        FlowRecord {
            key: *key,
            xlat: fwd.xlat(),
            mode: fwd.mode,
            timeout_s: fwd.timeout_s,
            fwd_flags: fwd.flags,
            rep_flags: rep.map_or(0, |r| r.flags),
            endpoint: fwd.endpoint,
            service: fwd.service,
            gen: fwd.gen,
            to_backend: NextHop {
                mac: fwd.mac,
                port: fwd.port,
            },
            to_client: rep.map(|r| NextHop {
                mac: r.mac,
                port: r.port,
            }),
        }
    }
}

/// A new IPv4 flow as the new-flow path has it in hand: the IPv4 form of
/// a [`FlowRecord`] (see [`FlowRecord::from`]) with a reply entry, and no
/// flags from the backend yet. [`super::ShardWriter::insert_new_v4`]
/// places it where the general insert would, in the form the established
/// fast path reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewFlowV4 {
    /// The forward key's addresses and ports.
    pub key: TupleV4,
    /// The forward key's protocol (TCP or UDP).
    pub proto: u8,
    /// What the client's packets become.
    pub xlat: TupleV4,
    /// [`flags`] of the first packet.
    pub fwd_flags: u8,
    /// The rule's NAT mode number (one that rewrites: not DSR).
    pub mode: u8,
    /// The rule's idle timeout, seconds.
    pub timeout_s: u32,
    /// The backend's endpoint id.
    pub endpoint: EndpointId,
    /// The rule's service index.
    pub service: u16,
    /// Low 32 bits of the tables generation.
    pub gen: u32,
    /// The backend's next hop.
    pub to_backend: NextHop,
    /// The client's last hop.
    pub to_client: NextHop,
}

impl NewFlowV4 {
    /// The forward key, as a [`FlowRecord`] has it.
    #[inline]
    pub fn forward_key(&self) -> FlowKey {
        FlowKey {
            src: Ip16::v4(self.key.src),
            dst: Ip16::v4(self.key.dst),
            sport: self.key.sport,
            dport: self.key.dport,
            proto: self.proto,
        }
    }

    /// The translation, as a [`FlowRecord`] has it.
    #[inline]
    pub fn translation(&self) -> Xlat {
        Xlat {
            src: Ip16::v4(self.xlat.src),
            dst: Ip16::v4(self.xlat.dst),
            sport: self.xlat.sport,
            dport: self.xlat.dport,
        }
    }
}

impl From<&NewFlowV4> for FlowRecord {
    fn from(f: &NewFlowV4) -> FlowRecord {
        FlowRecord {
            key: f.forward_key(),
            xlat: f.translation(),
            mode: f.mode,
            timeout_s: f.timeout_s,
            fwd_flags: f.fwd_flags,
            rep_flags: 0,
            endpoint: f.endpoint,
            service: f.service,
            gen: f.gen,
            to_backend: f.to_backend,
            to_client: Some(f.to_client),
        }
    }
}

/// What happened to an entry that was removed.
#[derive(Debug, Clone, Copy)]
pub struct Removed {
    /// The flow's forward key (what connection sync names a flow by).
    pub key: FlowKey,
    /// The forward entry's data (or the reply's, if the forward was gone).
    pub data: FlowData,
    /// Whether it was removed before its timeout (eviction or revalidation).
    pub early: bool,
}

/// The idle timeout that applies to a flow given what both directions have seen.
pub fn flow_timeout_ns(timeout_s: u32, ip_proto: u8, flow_mode: u8, fwd: u8, rep: u8) -> u64 {
    let all = fwd | rep;
    let configured = u64::from(timeout_s.max(1)) * 1_000_000_000;
    if ip_proto != proto::TCP {
        return configured;
    }
    if all & flags::RST != 0
        || (fwd & flags::FIN != 0 && (rep & flags::FIN != 0 || mode::is_dsr(flow_mode)))
    {
        return CLOSING_TIMEOUT_NS.min(configured);
    }
    let est = rep & flags::SEEN != 0 || (mode::is_dsr(flow_mode) && fwd & flags::ACK != 0);
    if est {
        configured
    } else {
        SYN_TIMEOUT_NS.min(configured)
    }
}
