//! Every change xlb makes to a frame: NAT of addresses and ports with
//! incremental checksum updates (RFC 1624), the TTL, MACs, the fixed-offset
//! fast rewrite of the common IPv4 frame, ICMP errors about translated
//! flows (RFC 5508 §4.3: the quoted packet is translated too), echo
//! replies, IPIP encapsulation, and full checksum recomputes.
//!
//! Invariants: a function given a [`PacketMeta`] or [`InnerMeta`] expects
//! one that [`super::parse`] or [`super::parse_icmp_inner`] made of this
//! very frame, of an IP packet (whose offsets are therefore in bounds), and
//! touches the L4 header only where the bytes present hold it (a quoted
//! packet carries as few as 8). The `fill_*` functions check their bounds
//! and return `false` rather than panic, whatever the frame.

use super::checksum::{self, apply_delta, delta16, fold_wide, sctp_crc, sum_bytes, udp_nonzero};
use super::ethernet::{self, ethertype};
use super::ip::proto;
use super::parse::{Frag, InnerMeta, L4Checksum, PacketMeta, FAST_L3, FAST_L4};
use super::{icmp, ipv4, ipv6, sctp, tcp, udp};
use crate::frame::Frame;
use crate::net::{Ip16, MacAddr};

/// TTL of packets xlb originates (ICMP echo replies, IPIP outer headers).
pub const OWN_TTL: u8 = 64;

/// What a packet's addresses and ports become (for ICMP echo, `sport` is
/// the identifier).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Xlat {
    /// Source address.
    pub src: Ip16,
    /// Destination address.
    pub dst: Ip16,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

impl Xlat {
    /// The same tuple seen from the other end: source and destination
    /// swapped.
    #[inline]
    pub fn reversed(&self) -> Xlat {
        Xlat {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
        }
    }
}

/// An IPv4 packet's addresses (as they lie in the frame) and ports: what
/// the fast rewrite and its checksum changes ([`fast_deltas`]) take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TupleV4 {
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

/// Write the destination and source MACs.
#[inline]
pub fn set_macs(data: &mut [u8], dst: MacAddr, src: MacAddr) {
    data[ethernet::field::DST].copy_from_slice(&dst.0);
    data[ethernet::field::SRC].copy_from_slice(&src.0);
}

/// One's-complement sum of the change from `old` to `new` (RFC 1624 eqn. 3:
/// the `~m + m'` part), over the address bytes a checksum covers (4 for
/// IPv4, 16 for IPv6), as 32-bit words: 2^16 ≡ 1 (mod 0xffff), so a 32-bit
/// word sums to the same as its two 16-bit halves and `!w` to their complements.
#[inline(always)]
fn addr_delta(v4: bool, old: &Ip16, new: &Ip16) -> u64 {
    let w = |a: &Ip16, i: usize| u32::from_be_bytes([a.0[i], a.0[i + 1], a.0[i + 2], a.0[i + 3]]);
    // (An IPv4 address is the last four bytes of its Ip16.)
    let first = if v4 { 12 } else { 0 };
    let mut d = 0u64;
    let mut i = first;
    while i < 16 {
        d += u64::from(!w(old, i)) + u64::from(w(new, i));
        i += 4;
    }
    d
}

/// The big-endian 16-bit word at `at`.
#[inline(always)]
fn be16(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([data[at], data[at + 1]])
}

/// Rewrite addresses and ports of an IP packet (outer or quoted) described by
/// `m` to `x`, updating the IPv4 header checksum and the L4 checksum
/// incrementally (RFC 1624): the address change is summed once and applied to
/// both. The L4 header is only touched where it lies inside the `m.l4_len`
/// bytes present (quoted packets carry as few as 8). For ICMP echo the
/// identifier plays both ports and becomes `x.sport`. A zero UDP checksum
/// means "none" (RFC 768) and stays zero; in IPv6 it is invalid (RFC 8200
/// §8.1) or a zero-checksum tunnel (RFC 6935), and either way stays zero
/// rather than a translation turning it into a plausible-looking sum.
#[inline]
pub fn rewrite_l3l4(data: &mut [u8], m: &PacketMeta, x: &Xlat) {
    let l4 = usize::from(m.l4_off);
    let l4_end = (l4 + usize::from(m.l4_len)).min(data.len());
    let addrs = addr_delta(m.v4, &m.src, &x.src) + addr_delta(m.v4, &m.dst, &x.dst);
    write_ip_addrs(data, m, x.src, x.dst, addrs);
    let kind = L4Checksum::of(m);
    let csum_at = kind
        .field_offset()
        .map(|o| l4 + o)
        .filter(|&c| c + 2 <= l4_end);
    let old = csum_at.map(|c| be16(data, c));
    let none = kind == L4Checksum::Udp && old == Some(0);
    let mut delta = if kind.covers_pseudo_header() {
        addrs
    } else {
        0
    };
    match kind {
        L4Checksum::Tcp | L4Checksum::Udp | L4Checksum::Sctp
            if l4 + udp::field::DST_PORT.end <= l4_end =>
        {
            // (Ports lie in the same place in all three.)
            data[l4 + udp::field::SRC_PORT.start..l4 + udp::field::SRC_PORT.end]
                .copy_from_slice(&x.sport.to_be_bytes());
            data[l4 + udp::field::DST_PORT.start..l4 + udp::field::DST_PORT.end]
                .copy_from_slice(&x.dport.to_be_bytes());
            delta += delta16(m.sport, x.sport) + delta16(m.dport, x.dport);
        }
        L4Checksum::Icmpv4 | L4Checksum::Icmpv6
            if icmp::is_echo(m.v4, m.icmp_type) && l4 + icmp::field::ECHO_ID.end <= l4_end =>
        {
            let at = l4 + icmp::field::ECHO_ID.start;
            let id = be16(data, at);
            data[at..at + 2].copy_from_slice(&x.sport.to_be_bytes());
            delta += delta16(id, x.sport);
        }
        _ => {}
    }
    if let (Some(at), Some(hc), false) = (csum_at, old, none) {
        let mut c = apply_delta(hc, delta);
        if kind == L4Checksum::Udp {
            c = udp_nonzero(c);
        }
        data[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    if kind == L4Checksum::Sctp && l4_end == l4 + usize::from(m.l4_len) {
        // CRC32c cannot be updated incrementally; only whole packets carry a valid one.
        let _ = fill_sctp_checksum(data, m);
    }
}

/// The general forwarding rewrite: addresses and ports to `x`
/// ([`rewrite_l3l4`]), the TTL decremented, and the MACs. [`rewrite_fast`]
/// writes the same bytes for the frames it takes (tested). (Not inlined:
/// its callers' common case is the fast rewrite.)
#[inline(never)]
pub fn forward(data: &mut [u8], m: &PacketMeta, x: &Xlat, mac_dst: MacAddr, mac_src: MacAddr) {
    rewrite_l3l4(data, m, x);
    decrement_ttl(data, m);
    set_macs(data, mac_dst, mac_src);
}

/// A forwarding rewrite of a frame [`super::parse_fast`] accepted (untagged
/// Ethernet, 20-byte IPv4 header, TCP or UDP) to `new`, given the
/// rewrite's checksum changes ([`fast_deltas`] of the frame's addresses
/// and ports to `new`): the same bytes as [`forward`] (tested), with fixed
/// offsets and one bounds check. The TTL must be > 1 (callers drop the rest
/// first). Returns false, changing nothing, if the frame is shorter than
/// its headers.
#[inline]
pub fn rewrite_fast(
    data: &mut [u8],
    tcp: bool,
    deltas: u32,
    new: TupleV4,
    mac_dst: MacAddr,
    mac_src: MacAddr,
) -> bool {
    let d = mac_dst.0;
    let (s, t) = (new.sport.to_be_bytes(), new.dport.to_be_bytes());
    let ports = [s[0], s[1], t[0], t[1]];
    let mac_dst = [d[0], d[1], d[2], d[3], d[4], d[5], 0, 0];
    let mac_src = src_mac_ipv4(mac_src);
    if tcp {
        match data.first_chunk_mut::<FAST_TCP_END>() {
            Some(h) => rewrite_with::<FAST_TCP_END, TCP_CSUM, false>(
                h, deltas, new.src, new.dst, ports, mac_dst, mac_src,
            ),
            None => return false,
        }
    } else {
        match data.first_chunk_mut::<FAST_UDP_END>() {
            Some(h) => rewrite_with::<FAST_UDP_END, UDP_CSUM, true>(
                h, deltas, new.src, new.dst, ports, mac_dst, mac_src,
            ),
            None => return false,
        }
    }
    true
}

/// Bytes of a TCP frame [`rewrite_fast_tcp`] reads and writes.
pub const FAST_TCP_END: usize = FAST_L4 + tcp::MIN_HEADER_LEN;
/// Bytes of a UDP frame [`rewrite_fast_udp`] reads and writes.
pub const FAST_UDP_END: usize = FAST_L4 + udp::HEADER_LEN;

/// The checksum changes of an IPv4 TCP/UDP forwarding rewrite from
/// `old` to `new`, folded to 16 bits each in [`rewrite_with`]'s native
/// byte order: IPv4 header (addresses and the TTL decrement) in the low
/// half, L4 (addresses and ports) in the high half. They depend only on
/// the flow, so the flow table keeps them with the entry and the fast path
/// does not sum them per packet; one's-complement addition is associative
/// and the fold keeps a sum's value (and zero only for zero), so applying
/// the folded sum equals applying its terms (tested).
pub fn fast_deltas(old: TupleV4, new: TupleV4) -> u32 {
    let ne32 = |a: [u8; 4]| u64::from(u32::from_ne_bytes(a));
    let not32 = |a: [u8; 4]| u64::from(!u32::from_ne_bytes(a));
    let ne16 = |p: u16| u16::from_ne_bytes(p.to_be_bytes());
    let addrs = not32(old.src) + ne32(new.src) + not32(old.dst) + ne32(new.dst);
    let ip = fold_wide(addrs + TTL_DECREMENT_DELTA);
    let l4 = fold_wide(
        addrs
            + delta16(ne16(old.sport), ne16(new.sport))
            + delta16(ne16(old.dport), ne16(new.dport)),
    );
    u32::from(ip) | (u32::from(l4) << 16)
}

/// The [`fast_deltas`] of the way back: from those of `(a, b, p, q) →
/// (a', b', p', q')`, those of `(b', a', q', p') → (b, a, q, p)` (a
/// flow's reply entry undoes what its forward entry does, with source and
/// destination swapped). Its sums are the forward's negated, plus the TTL
/// decrement once more for the IPv4 header; each fold gets a nonzero
/// input, so a sum of zero comes out as 0xffff, as [`fast_deltas`] gives it.
#[inline]
pub fn reverse_deltas(d: u32) -> u32 {
    let ip = fold_wide(u64::from(!(d as u16)) + 2 * TTL_DECREMENT_DELTA);
    let l4 = fold_wide(u64::from(!((d >> 16) as u16)) + 0xffff);
    u32::from(ip) | (u32::from(l4) << 16)
}

/// A fast rewrite's new header values, as the fast paths hold them: the
/// checksum changes ([`fast_deltas`]), the new addresses and the new
/// ports as they lie in a frame, the destination MAC in the first six
/// bytes of `mac_dst` (the last two are overwritten), and the source MAC
/// with the IPv4 ethertype after it ([`src_mac_ipv4`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastXlat {
    /// [`fast_deltas`] of the rewrite.
    pub deltas: u32,
    /// New source address.
    pub src: [u8; 4],
    /// New destination address.
    pub dst: [u8; 4],
    /// New source and destination ports, in network byte order.
    pub ports: [u8; 4],
    /// Destination MAC, then two bytes that do not matter.
    pub mac_dst: [u8; 8],
    /// Source MAC and the IPv4 ethertype.
    pub src_type: [u8; 8],
}

/// Where [`rewrite_with`] finds a TCP frame's L4 checksum, and a UDP one's.
const TCP_CSUM: usize = tcp::field::CHECKSUM.start;
const UDP_CSUM: usize = udp::field::CHECKSUM.start;

/// [`rewrite_fast`] of a TCP frame whose headers are in hand.
#[inline(always)]
pub fn rewrite_fast_tcp(h: &mut [u8; FAST_TCP_END], x: &FastXlat) {
    let FastXlat {
        deltas,
        src,
        dst,
        ports,
        mac_dst,
        src_type,
    } = *x;
    rewrite_with::<FAST_TCP_END, TCP_CSUM, false>(h, deltas, src, dst, ports, mac_dst, src_type);
}

/// [`rewrite_fast`] of a UDP frame whose headers are in hand.
#[inline(always)]
pub fn rewrite_fast_udp(h: &mut [u8; FAST_UDP_END], x: &FastXlat) {
    let FastXlat {
        deltas,
        src,
        dst,
        ports,
        mac_dst,
        src_type,
    } = *x;
    rewrite_with::<FAST_UDP_END, UDP_CSUM, true>(h, deltas, src, dst, ports, mac_dst, src_type);
}

/// The fast rewrite, with the sums done ahead ([`fast_deltas`]). The sums
/// run on the header's 16-bit words in native byte order, loaded and
/// stored as they lie: the one's-complement sum is byte-order independent
/// (RFC 1071 §2(B)), so no word is byte-swapped; one's-complement addition
/// is associative, and a fold of a nonzero sum never yields zero, so the
/// address and TTL changes go into the IPv4 header checksum as one RFC 1624
/// delta.
#[inline(always)]
fn rewrite_with<const N: usize, const CSUM: usize, const UDP: bool>(
    h: &mut [u8; N],
    deltas: u32,
    src: [u8; 4],
    dst: [u8; 4],
    ports: [u8; 4],
    mac_dst: [u8; 8],
    src_type: [u8; 8],
) {
    use ipv4::field;
    const IP_CSUM: usize = FAST_L3 + field::CHECKSUM.start;
    const PORTS: usize = FAST_L4 + tcp::field::SRC_PORT.start;
    let ne16 = |b: &[u8; N], at: usize| u16::from_ne_bytes([b[at], b[at + 1]]);
    let ip_csum = apply_delta(ne16(h, IP_CSUM), u64::from(deltas as u16));
    let l4_csum = ne16(h, FAST_L4 + CSUM);
    // RFC 768: an IPv4 UDP checksum of zero means "none" and stays zero.
    if !(UDP && l4_csum == 0) {
        let mut c = apply_delta(l4_csum, u64::from(deltas >> 16));
        if UDP {
            c = udp_nonzero(c);
        }
        h[FAST_L4 + CSUM..FAST_L4 + CSUM + 2].copy_from_slice(&c.to_ne_bytes());
    }
    h[PORTS..PORTS + 4].copy_from_slice(&ports);
    // The callers drop TTL ≤ 1 first; saturating keeps a zero TTL zero anyway.
    h[FAST_L3 + field::TTL] = h[FAST_L3 + field::TTL].saturating_sub(1);
    h[IP_CSUM..IP_CSUM + 2].copy_from_slice(&ip_csum.to_ne_bytes());
    h[FAST_L3 + field::SRC.start..FAST_L3 + field::SRC.end].copy_from_slice(&src);
    h[FAST_L3 + field::DST.start..FAST_L3 + field::DST.end].copy_from_slice(&dst);
    // The destination MAC's eight bytes first: their last two are
    // overwritten by the source MAC, whose word ends with the ethertype the
    // frame already has (IPv4: the fast path takes no other).
    const DST: usize = ethernet::field::DST.start;
    const SRC: usize = ethernet::field::SRC.start;
    h[DST..DST + 8].copy_from_slice(&mac_dst);
    h[SRC..SRC + 8].copy_from_slice(&src_type);
}

/// A source MAC followed by the IPv4 ethertype, as [`FastXlat`] holds it
/// (one 8-byte store).
#[inline]
pub fn src_mac_ipv4(mac: MacAddr) -> [u8; 8] {
    let m = mac.0;
    let t = ethertype::IPV4.to_be_bytes();
    [m[0], m[1], m[2], m[3], m[4], m[5], t[0], t[1]]
}

/// The change the TTL decrement makes to the IPv4 header checksum, for
/// [`rewrite_with`]'s native-order sums: the TTL/protocol word `w` becomes
/// `w - x` (TTL ≥ 1), where `x` is the word of bytes `[1, 0]`, and
/// `~w + (w - x)` is `0xffff - x` whatever `w` is (RFC 1624 eqn. 3).
const TTL_DECREMENT_DELTA: u64 = 0xffff - u16::from_ne_bytes([1, 0]) as u64;

/// Write new IP addresses, keeping the IPv4 header checksum right.
#[inline]
pub fn set_ip_addrs(data: &mut [u8], m: &PacketMeta, src: Ip16, dst: Ip16) {
    let delta = addr_delta(m.v4, &m.src, &src) + addr_delta(m.v4, &m.dst, &dst);
    write_ip_addrs(data, m, src, dst, delta);
}

#[inline(always)]
fn write_ip_addrs(data: &mut [u8], m: &PacketMeta, src: Ip16, dst: Ip16, delta: u64) {
    let l3 = usize::from(m.l3_off);
    let at = |r: core::ops::Range<usize>| l3 + r.start..l3 + r.end;
    if m.v4 {
        let csum = at(ipv4::field::CHECKSUM);
        let c = be16(data, csum.start);
        data[csum].copy_from_slice(&apply_delta(c, delta).to_be_bytes());
        data[at(ipv4::field::SRC)].copy_from_slice(&src.v4_octets());
        data[at(ipv4::field::DST)].copy_from_slice(&dst.v4_octets());
    } else {
        data[at(ipv6::field::SRC)].copy_from_slice(&src.0);
        data[at(ipv6::field::DST)].copy_from_slice(&dst.0);
    }
}

/// Decrement the TTL / hop limit (a zero stays zero), keeping the IPv4
/// header checksum right.
#[inline]
pub fn decrement_ttl(data: &mut [u8], m: &PacketMeta) {
    set_ttl(data, m, m.ttl.saturating_sub(1));
}

/// Set the TTL / hop limit, keeping the IPv4 header checksum right (RFC
/// 1624 §5: the TTL shares a word with the protocol).
#[inline]
pub fn set_ttl(data: &mut [u8], m: &PacketMeta, ttl: u8) {
    let l3 = usize::from(m.l3_off);
    if m.v4 {
        use ipv4::field;
        let (at, csum) = (l3 + field::TTL, l3 + field::CHECKSUM.start);
        let old = be16(data, at);
        let new = u16::from_be_bytes([ttl, data[l3 + field::PROTOCOL]]);
        let c = be16(data, csum);
        data[at] = ttl;
        data[csum..csum + 2].copy_from_slice(&apply_delta(c, delta16(old, new)).to_be_bytes());
    } else {
        data[l3 + ipv6::field::HOP_LIMIT] = ttl;
    }
}

/// Wrap the IP packet in an outer IPv4 header from `src` to `dst`
/// (protocol 4, RFC 2003). False, with the frame unchanged, if its buffer
/// has no room for the header or the result would be too long.
pub fn encap_ipip(f: &mut Frame<'_>, m: &PacketMeta, src: Ip16, dst: Ip16) -> bool {
    let l3 = usize::from(m.l3_off);
    let Ok(total) = u16::try_from(f.len - l3 + ipv4::MIN_HEADER_LEN) else {
        return false;
    };
    if !f.insert(l3, ipv4::MIN_HEADER_LEN) {
        return false;
    }
    let h = &mut f.data_mut()[l3..l3 + ipv4::MIN_HEADER_LEN];
    let mut p = ipv4::Packet::new_unchecked(h);
    p.set_version_and_header_len(ipv4::MIN_HEADER_LEN);
    p.set_tos(0);
    p.set_total_len(total);
    p.set_ident(0);
    p.set_frag(false, false, 0);
    p.set_ttl(OWN_TTL);
    p.set_protocol(proto::IPIP);
    p.set_src_addr(src.v4_octets());
    p.set_dst_addr(dst.v4_octets());
    p.fill_checksum();
    true
}

/// Answer an echo request in place: the reply goes from the request's
/// destination back to its source with xlb's own TTL, back to the MAC the
/// request came from, from `mac_src`. (ICMPv6's pseudo-header holds both
/// addresses; swapping them leaves its sum unchanged, so only the type's
/// change is summed.)
pub fn answer_echo(data: &mut [u8], m: &PacketMeta, mac_src: MacAddr) {
    let mac_dst = ethernet::src_mac(data);
    set_ip_addrs(data, m, m.dst, m.src);
    set_ttl(data, m, OWN_TTL);
    let l4 = usize::from(m.l4_off);
    let reply = if m.v4 {
        icmp::v4::ECHO_REPLY
    } else {
        icmp::v6::ECHO_REPLY
    };
    let (ty, csum) = (l4 + icmp::field::TYPE, l4 + icmp::field::CHECKSUM.start);
    let old = u16::from_be_bytes([data[ty], data[ty + 1]]);
    let new = u16::from_be_bytes([reply, data[ty + 1]]);
    let c = be16(data, csum);
    data[ty] = reply;
    data[csum..csum + 2].copy_from_slice(&checksum::update16(c, old, new).to_be_bytes());
    set_macs(data, mac_dst, mac_src);
}

/// Translate an ICMP error `m` about a flow's packet (`inner`, from
/// [`super::parse_icmp_inner`]) so that it reaches the other end of the
/// flow (RFC 5508 §4.3): the error now travels like a packet the
/// translation `x` applies to, from `x.src` to `x.dst` (TTL decremented),
/// and the packet it quotes, which went the other way, is rewritten to
/// `x` reversed, as its receiver sent it. The ICMP checksum is computed
/// afresh (the quoted packet is only part of one: its own L4 checksum is
/// updated where the error carries it, and SCTP's not at all).
pub fn translate_icmp_error(data: &mut [u8], m: &PacketMeta, inner: &InnerMeta, x: &Xlat) {
    rewrite_l3l4(data, &inner.as_packet(), &x.reversed());
    set_ip_addrs(data, m, x.src, x.dst);
    decrement_ttl(data, m);
    let outer = PacketMeta {
        src: x.src,
        dst: x.dst,
        ..*m
    };
    let _ = fill_l4_checksum(data, &outer);
}

/// Recompute the IPv4 header checksum from scratch (RFC 791 §3.1). Returns
/// false if the packet is not IPv4 or its header lies outside `frame`.
pub fn fill_ipv4_checksum(frame: &mut [u8], meta: &PacketMeta) -> bool {
    if !meta.v4 || meta.ethertype != ethertype::IPV4 {
        return false;
    }
    fill_ipv4_checksum_at(frame, usize::from(meta.l3_off))
}

/// Recompute the IPv4 header checksum of the header at `l3_off` (its IHL is read
/// from the header). Returns false if the header lies outside `frame`.
pub fn fill_ipv4_checksum_at(frame: &mut [u8], l3_off: usize) -> bool {
    let Some(&b0) = frame.get(l3_off) else {
        return false;
    };
    let ihl = ipv4::header_len(b0);
    let Some(hdr) = frame.get_mut(l3_off..l3_off + ihl) else {
        return false;
    };
    if ihl < ipv4::MIN_HEADER_LEN {
        return false;
    }
    hdr[ipv4::field::CHECKSUM].fill(0);
    let c = checksum::checksum(hdr);
    hdr[ipv4::field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    true
}

/// Recompute the L4 checksum (TCP, UDP, ICMPv4, ICMPv6 or SCTP) over
/// `l4_off .. l4_off + l4_len`. A full recompute always produces a checksum,
/// also for IPv4 UDP that had none. Returns false for fragments (the sum spans
/// the whole datagram), unknown protocols, or ranges outside `frame`.
pub fn fill_l4_checksum(frame: &mut [u8], meta: &PacketMeta) -> bool {
    if meta.frag != Frag::None {
        return false;
    }
    let kind = L4Checksum::of(meta);
    if kind == L4Checksum::Sctp {
        return fill_sctp_checksum(frame, meta);
    }
    let Some(off) = kind.field_offset() else {
        return false;
    };
    let start = usize::from(meta.l4_off);
    let Some(seg) = frame.get_mut(start..start + usize::from(meta.l4_len)) else {
        return false;
    };
    let Some(field) = seg.get_mut(off..off + 2) else {
        return false;
    };
    field.fill(0);
    let mut s = sum_bytes(seg);
    if kind.covers_pseudo_header() {
        s = checksum::add(s, meta.pseudo_sum());
    }
    let mut c = !checksum::fold(s);
    if kind == L4Checksum::Udp {
        c = udp_nonzero(c);
    }
    seg[off..off + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// Recompute the SCTP CRC32c over `l4_off .. l4_off + l4_len`. Returns false if
/// the packet is not SCTP, is a fragment, or the range lies outside `frame`.
pub fn fill_sctp_checksum(frame: &mut [u8], meta: &PacketMeta) -> bool {
    if meta.frag != Frag::None || meta.proto != proto::SCTP {
        return false;
    }
    let start = usize::from(meta.l4_off);
    let Some(seg) = frame.get_mut(start..start + usize::from(meta.l4_len)) else {
        return false;
    };
    if seg.len() < sctp::HEADER_LEN {
        return false;
    }
    let c = sctp_crc(seg);
    seg[sctp::field::CHECKSUM].copy_from_slice(&c.to_le_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::build::Builder;
    use crate::wire::parse;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, SocketAddr};

    fn sa(a: u32, p: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::from(a), p))
    }

    fn tuple(a: [u8; 4], b: [u8; 4], p: u16, q: u16) -> TupleV4 {
        TupleV4 {
            src: a,
            dst: b,
            sport: p,
            dport: q,
        }
    }

    proptest! {
        /// The reply's checksum changes follow from the forward's.
        #[test]
        fn reverse_deltas_are_the_way_back(
            a in any::<[u8; 4]>(), b in any::<[u8; 4]>(), c in any::<[u8; 4]>(), d in any::<[u8; 4]>(),
            p in any::<u16>(), q in any::<u16>(), r in any::<u16>(), s in any::<u16>(),
        ) {
            let fwd = fast_deltas(tuple(a, b, p, q), tuple(c, d, r, s));
            prop_assert_eq!(reverse_deltas(fwd), fast_deltas(tuple(d, c, s, r), tuple(b, a, q, p)));
        }
    }

    proptest! {
        /// The fast rewrites write the same bytes as the general one, for any
        /// addresses, ports, TTL and starting checksums (incl. 0 and 0xffff).
        #[test]
        fn rewrite_fast_matches_the_general_rewrite(
            tcp in any::<bool>(),
            (a, b, c, d) in (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()),
            (p, q, r, s) in (any::<u16>(), any::<u16>(), any::<u16>(), any::<u16>()),
            ttl in 2u8..=255,
            ip_csum in prop_oneof![Just(0u16), Just(0xffff), any::<u16>()],
            l4_csum in prop_oneof![Just(0u16), Just(0xffff), any::<u16>()],
            macs in any::<[u8; 12]>(),
        ) {
            let bld = if tcp {
                Builder::tcp(sa(a, p), sa(b, q), 0x10)
            } else {
                Builder::udp(sa(a, p), sa(b, q))
            };
            let mut f = bld.ttl(ttl).payload(b"xlb").to_vec().expect("frame");
            f[24..26].copy_from_slice(&ip_csum.to_be_bytes());
            let at = 34 + if tcp { 16 } else { 6 };
            f[at..at + 2].copy_from_slice(&l4_csum.to_be_bytes());
            let m = parse(&f).expect("parses");
            let mac_dst = MacAddr(macs[..6].try_into().expect("6"));
            let mac_src = MacAddr(macs[6..].try_into().expect("6"));
            let (src, dst) = (Ipv4Addr::from(c), Ipv4Addr::from(d));
            let mut slow = f.clone();
            let x = Xlat { src: Ip16::v4(src.octets()), dst: Ip16::v4(dst.octets()), sport: r, dport: s };
            forward(&mut slow, &m, &x, mac_dst, mac_src);
            // The fast rewrite, with the checksum changes summed ahead.
            let new = tuple(src.octets(), dst.octets(), r, s);
            let deltas = fast_deltas(
                tuple(Ipv4Addr::from(a).octets(), Ipv4Addr::from(b).octets(), p, q),
                new,
            );
            let mut ahead = f.clone();
            let ports = [r.to_be_bytes(), s.to_be_bytes()].concat();
            let ports: [u8; 4] = ports.try_into().expect("4");
            let d = mac_dst.0;
            let x = FastXlat {
                deltas,
                src: src.octets(),
                dst: dst.octets(),
                ports,
                mac_dst: [d[0], d[1], d[2], d[3], d[4], d[5], 0xee, 0xee],
                src_type: src_mac_ipv4(mac_src),
            };
            if tcp {
                rewrite_fast_tcp(ahead.first_chunk_mut::<FAST_TCP_END>().expect("tcp headers"), &x);
            } else {
                rewrite_fast_udp(ahead.first_chunk_mut::<FAST_UDP_END>().expect("udp headers"), &x);
            }
            prop_assert_eq!(&ahead, &slow);
            let mut given = f.clone();
            prop_assert!(rewrite_fast(&mut given, tcp, deltas, new, mac_dst, mac_src));
            prop_assert_eq!(given, slow);
        }
    }
}
