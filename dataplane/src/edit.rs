//! Packet edits the pipeline makes: L2/L3/L4 rewrites with incremental
//! checksum updates (RFC 1624), TTL handling, ICMP echo replies, IPIP.
//! Every function takes a frame already validated by [`wire::parse`], whose
//! [`PacketMeta`] offsets are in bounds.

use crate::frame::Frame;
use crate::net::{Ip16, MacAddr};
use crate::wire::checksum;
use crate::wire::rewrite::fill_sctp_checksum;
use crate::wire::L4Checksum;
use crate::wire::{self, PacketMeta};

/// TTL of packets xlb originates (ICMP echo replies, IPIP outer headers).
pub const OWN_TTL: u8 = 64;

const ETH_DST: usize = 0;
const ETH_SRC: usize = 6;

/// ICMP(v6) error messages that quote a packet: destination unreachable
/// (incl. fragmentation needed), time exceeded, parameter problem, and for
/// ICMPv6 also packet too big.
#[inline]
pub fn is_icmp_error(m: &PacketMeta) -> bool {
    match m.proto {
        1 => matches!(m.icmp_type, 3 | 11 | 12),
        58 => matches!(m.icmp_type, 1..=4),
        _ => false,
    }
}

/// ICMP echo request (v4 type 8, v6 type 128).
#[inline]
pub fn is_echo_request(m: &PacketMeta) -> bool {
    (m.proto == 1 && m.icmp_type == 8) || (m.proto == 58 && m.icmp_type == 128)
}

/// ICMP echo request or reply: messages whose identifier plays the port.
#[inline]
pub fn icmp_has_id(m: &PacketMeta) -> bool {
    match m.proto {
        1 => matches!(m.icmp_type, 0 | 8),
        58 => matches!(m.icmp_type, 128 | 129),
        _ => false,
    }
}

pub fn eth_src(data: &[u8]) -> [u8; 6] {
    let mut m = [0u8; 6];
    m.copy_from_slice(&data[ETH_SRC..ETH_SRC + 6]);
    m
}

pub fn set_macs(data: &mut [u8], dst: MacAddr, src: MacAddr) {
    data[ETH_DST..ETH_DST + 6].copy_from_slice(&dst.0);
    data[ETH_SRC..ETH_SRC + 6].copy_from_slice(&src.0);
}

/// One's-complement sum of the change from `old` to `new` (RFC 1624 eqn. 3:
/// the `~m + m'` part), over the address bytes a checksum covers (4 for
/// IPv4, 16 for IPv6), as 32-bit words: 2^16 ≡ 1 (mod 0xffff), so a 32-bit
/// word sums to the same as its two 16-bit halves and `!w` to their complements.
#[inline(always)]
fn addr_delta(v4: bool, old: &Ip16, new: &Ip16) -> u64 {
    let w = |a: &Ip16, i: usize| u32::from_be_bytes([a.0[i], a.0[i + 1], a.0[i + 2], a.0[i + 3]]);
    let first = if v4 { 12 } else { 0 };
    let mut d = 0u64;
    let mut i = first;
    while i < 16 {
        d += u64::from(!w(old, i)) + u64::from(w(new, i));
        i += 4;
    }
    d
}

/// The change of one 16-bit field, for [`apply_delta`].
#[inline(always)]
fn delta16(old: u16, new: u16) -> u64 {
    u64::from(!old) + u64::from(new)
}

/// Apply a summed change to a checksum field: HC' = ~(~HC + Σ(~m + m')).
/// `delta` is below 2^63 (a handful of 32-bit terms). The 64-bit sum folds
/// to 32 bits with an end-around carry, and the 32 bits to 16 as Linux's
/// `csum_fold` does: in `s + (s rotated by 16)` the high half is the sum of
/// both halves plus the carry out of the low half.
#[inline(always)]
fn apply_delta(hc: u16, delta: u64) -> u16 {
    let s = u64::from(!hc) + delta;
    let (lo, carry) = (s as u32).overflowing_add((s >> 32) as u32);
    // With a carry, lo ≤ 2^32 - 2 (both terms are below 2^32), so this cannot wrap.
    let s = lo + u32::from(carry);
    !(s.wrapping_add(s.rotate_right(16)) >> 16) as u16
}

/// Rewrite addresses and ports of an IP packet (outer or quoted) described by
/// `m`, updating the IPv4 header checksum and the L4 checksum incrementally
/// (RFC 1624): the address change is summed once and applied to both. The
/// L4 checksum is only touched if it lies inside the `m.l4_len` bytes present
/// (quoted packets carry as few as 8).
#[inline]
pub fn rewrite_l3l4(data: &mut [u8], m: &PacketMeta, src: Ip16, dst: Ip16, sport: u16, dport: u16) {
    let l4 = usize::from(m.l4_off);
    let l4_end = (l4 + usize::from(m.l4_len)).min(data.len());
    let addrs = addr_delta(m.v4, &m.src, &src) + addr_delta(m.v4, &m.dst, &dst);
    write_ip_addrs(data, m, src, dst, addrs);
    let kind = L4Checksum::of(m);
    let csum_at = kind
        .field_offset()
        .map(|o| l4 + o)
        .filter(|&c| c + 2 <= l4_end);
    let old = csum_at.map(|c| u16::from_be_bytes([data[c], data[c + 1]]));
    // RFC 768: an IPv4 UDP checksum of zero means "none" and stays zero.
    let none = kind == L4Checksum::Udp && m.v4 && old == Some(0);
    let mut delta = if kind.covers_pseudo_header() {
        addrs
    } else {
        0
    };
    match kind {
        L4Checksum::Tcp | L4Checksum::Udp | L4Checksum::Sctp if l4 + 4 <= l4_end => {
            data[l4..l4 + 2].copy_from_slice(&sport.to_be_bytes());
            data[l4 + 2..l4 + 4].copy_from_slice(&dport.to_be_bytes());
            delta += delta16(m.sport, sport) + delta16(m.dport, dport);
        }
        // Echo: the identifier plays the port; it is rewritten to `sport`.
        L4Checksum::Icmpv4 | L4Checksum::Icmpv6 if icmp_has_id(m) && l4 + 6 <= l4_end => {
            let id = u16::from_be_bytes([data[l4 + 4], data[l4 + 5]]);
            data[l4 + 4..l4 + 6].copy_from_slice(&sport.to_be_bytes());
            delta += delta16(id, sport);
        }
        _ => {}
    }
    if let (Some(at), Some(hc), false) = (csum_at, old, none) {
        let mut c = apply_delta(hc, delta);
        if kind == L4Checksum::Udp {
            c = checksum::udp_nonzero(c);
        }
        data[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    if kind == L4Checksum::Sctp && l4_end == l4 + usize::from(m.l4_len) {
        // CRC32c cannot be updated incrementally; only whole packets carry a valid one.
        let _ = fill_sctp_checksum(data, m);
    }
}

/// A forwarding rewrite of a frame [`wire::parse_fast`] accepted (untagged
/// Ethernet, 20-byte IPv4 header, TCP or UDP), given the rewrite's checksum
/// changes ([`fast_deltas`] of the frame's addresses and ports to these):
/// the same bytes as [`rewrite_l3l4`] + [`decrement_ttl`] + [`set_macs`]
/// (tested), with fixed offsets and one bounds check. The TTL must be > 1
/// (callers drop the rest first). Returns false, changing nothing, if the
/// frame is shorter than its headers.
///
/// [`wire::parse_fast`]: crate::wire::parse_fast
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn rewrite_fast(
    data: &mut [u8],
    tcp: bool,
    deltas: u32,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    mac_dst: MacAddr,
    mac_src: MacAddr,
) -> bool {
    let d = mac_dst.0;
    let mac_dst = [d[0], d[1], d[2], d[3], d[4], d[5], 0, 0];
    let (s, t) = (sport.to_be_bytes(), dport.to_be_bytes());
    let ports = [s[0], s[1], t[0], t[1]];
    let mac_src = src_mac_ipv4(mac_src);
    if tcp {
        match data.first_chunk_mut::<FAST_TCP_END>() {
            Some(h) => rewrite_fast_tcp_with(h, deltas, src, dst, ports, mac_dst, mac_src),
            None => return false,
        }
    } else {
        match data.first_chunk_mut::<FAST_UDP_END>() {
            Some(h) => rewrite_fast_udp_with(h, deltas, src, dst, ports, mac_dst, mac_src),
            None => return false,
        }
    }
    true
}

/// Bytes of a TCP frame [`rewrite_fast_tcp_with`] reads and writes.
pub const FAST_TCP_END: usize = wire::FAST_L4 + 20;
/// Bytes of a UDP frame [`rewrite_fast_udp_with`] reads and writes.
pub const FAST_UDP_END: usize = wire::FAST_L4 + 8;

/// The checksum changes of an IPv4 TCP/UDP forwarding rewrite from
/// `old` = (src, dst, sport, dport) to `new`, folded to 16 bits each in
/// [`rewrite_with`]'s native byte order: IPv4 header (addresses and the TTL
/// decrement) in the low half, L4 (addresses and ports) in the high half.
/// They depend only on the flow, so the flow table keeps them with the
/// entry and the fast path does not sum them per packet; one's-complement
/// addition is associative and the fold keeps a sum's value (and zero only
/// for zero), so applying the folded sum equals applying its terms (tested).
pub fn fast_deltas(old: ([u8; 4], [u8; 4], u16, u16), new: ([u8; 4], [u8; 4], u16, u16)) -> u32 {
    let ne32 = |a: [u8; 4]| u64::from(u32::from_ne_bytes(a));
    let not32 = |a: [u8; 4]| u64::from(!u32::from_ne_bytes(a));
    let ne16 = |p: u16| u16::from_ne_bytes(p.to_be_bytes());
    let addrs = not32(old.0) + ne32(new.0) + not32(old.1) + ne32(new.1);
    let ip = fold16(addrs + TTL_DECREMENT_DELTA);
    let l4 = fold16(addrs + delta16(ne16(old.2), ne16(new.2)) + delta16(ne16(old.3), ne16(new.3)));
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
    let ip = fold16(u64::from(!(d as u16)) + 2 * TTL_DECREMENT_DELTA);
    let l4 = fold16(u64::from(!((d >> 16) as u16)) + 0xffff);
    u32::from(ip) | (u32::from(l4) << 16)
}

/// A one's-complement sum folded to 16 bits (end-around carries), not complemented.
#[inline(always)]
fn fold16(s: u64) -> u16 {
    let (lo, carry) = (s as u32).overflowing_add((s >> 32) as u32);
    let s = lo + u32::from(carry);
    (s.wrapping_add(s.rotate_right(16)) >> 16) as u16
}

/// [`rewrite_fast`] of a TCP frame whose headers are in hand; `ports`
/// are the new ports as they lie in the frame, the destination MAC is the
/// first six of `mac_dst`'s bytes, `src_type` is the source MAC and the
/// IPv4 ethertype ([`src_mac_ipv4`]).
#[inline(always)]
pub fn rewrite_fast_tcp_with(
    h: &mut [u8; FAST_TCP_END],
    deltas: u32,
    src: [u8; 4],
    dst: [u8; 4],
    ports: [u8; 4],
    mac_dst: [u8; 8],
    src_type: [u8; 8],
) {
    rewrite_with::<FAST_TCP_END, 16, false>(h, deltas, src, dst, ports, mac_dst, src_type);
}

/// [`rewrite_fast`] of a UDP frame whose headers are in hand (as
/// [`rewrite_fast_tcp_with`]).
#[inline(always)]
pub fn rewrite_fast_udp_with(
    h: &mut [u8; FAST_UDP_END],
    deltas: u32,
    src: [u8; 4],
    dst: [u8; 4],
    ports: [u8; 4],
    mac_dst: [u8; 8],
    src_type: [u8; 8],
) {
    rewrite_with::<FAST_UDP_END, 6, true>(h, deltas, src, dst, ports, mac_dst, src_type);
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
    const L3: usize = wire::FAST_L3;
    const L4: usize = wire::FAST_L4;
    let ne16 = |b: &[u8; N], at: usize| u16::from_ne_bytes([b[at], b[at + 1]]);
    let ip_csum = apply_delta(ne16(h, L3 + 10), u64::from(deltas as u16));
    let l4_csum = ne16(h, L4 + CSUM);
    // RFC 768: an IPv4 UDP checksum of zero means "none" and stays zero.
    if !(UDP && l4_csum == 0) {
        let mut c = apply_delta(l4_csum, u64::from(deltas >> 16));
        if UDP {
            c = checksum::udp_nonzero(c);
        }
        h[L4 + CSUM..L4 + CSUM + 2].copy_from_slice(&c.to_ne_bytes());
    }
    h[L4..L4 + 4].copy_from_slice(&ports);
    // The callers drop TTL ≤ 1 first; saturating keeps a zero TTL zero anyway.
    h[L3 + 8] = h[L3 + 8].saturating_sub(1);
    h[L3 + 10..L3 + 12].copy_from_slice(&ip_csum.to_ne_bytes());
    h[L3 + 12..L3 + 16].copy_from_slice(&src);
    h[L3 + 16..L3 + 20].copy_from_slice(&dst);
    // The destination MAC's eight bytes first: their last two are
    // overwritten by the source MAC, whose word ends with the ethertype the
    // frame already has (IPv4: the fast path takes no other).
    h[ETH_DST..ETH_DST + 8].copy_from_slice(&mac_dst);
    h[ETH_SRC..ETH_SRC + 8].copy_from_slice(&src_type);
}

/// A source MAC followed by the IPv4 ethertype, as [`rewrite_fast_tcp_with`]
/// and [`rewrite_fast_udp_with`] take it (one 8-byte store).
#[inline]
pub fn src_mac_ipv4(mac: MacAddr) -> [u8; 8] {
    let m = mac.0;
    let t = crate::wire::ethernet::ethertype::IPV4.to_be_bytes();
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
    if m.v4 {
        let c = u16::from_be_bytes([data[l3 + 10], data[l3 + 11]]);
        data[l3 + 10..l3 + 12].copy_from_slice(&apply_delta(c, delta).to_be_bytes());
        data[l3 + 12..l3 + 16].copy_from_slice(&src.0[12..]);
        data[l3 + 16..l3 + 20].copy_from_slice(&dst.0[12..]);
    } else {
        data[l3 + 8..l3 + 24].copy_from_slice(&src.0);
        data[l3 + 24..l3 + 40].copy_from_slice(&dst.0);
    }
}

pub fn decrement_ttl(data: &mut [u8], m: &PacketMeta) {
    set_ttl(data, m, m.ttl.saturating_sub(1));
}

/// Wrap the IP packet in an outer IPv4 header (protocol 4, RFC 2003).
pub fn encap_ipip(f: &mut Frame<'_>, m: &PacketMeta, src: Ip16, dst: Ip16) -> bool {
    let l3 = usize::from(m.l3_off);
    if !f.insert(l3, 20) {
        return false;
    }
    let inner_len = f.len - l3 - 20;
    let Ok(total) = u16::try_from(inner_len + 20) else {
        return false;
    };
    write_ipv4_header(&mut f.data_mut()[l3..l3 + 20], src, dst, 4, OWN_TTL, total);
    true
}

/// Set the TTL / hop limit, keeping the IPv4 header checksum right.
#[inline]
pub fn set_ttl(data: &mut [u8], m: &PacketMeta, ttl: u8) {
    let l3 = usize::from(m.l3_off);
    if m.v4 {
        let old = u16::from_be_bytes([data[l3 + 8], data[l3 + 9]]);
        let new = u16::from_be_bytes([ttl, data[l3 + 9]]);
        let c = u16::from_be_bytes([data[l3 + 10], data[l3 + 11]]);
        data[l3 + 8] = ttl;
        data[l3 + 10..l3 + 12].copy_from_slice(&apply_delta(c, delta16(old, new)).to_be_bytes());
    } else {
        data[l3 + 7] = ttl;
    }
}

/// Turn an echo request into an echo reply in place (type only; the caller swaps addresses).
pub fn make_echo_reply(data: &mut [u8], m: &PacketMeta) {
    let l4 = usize::from(m.l4_off);
    let reply = if m.proto == 1 { 0 } else { 129 };
    let old = u16::from_be_bytes([data[l4], data[l4 + 1]]);
    let new = u16::from_be_bytes([reply, data[l4 + 1]]);
    let c = u16::from_be_bytes([data[l4 + 2], data[l4 + 3]]);
    data[l4] = reply;
    // ICMPv6's pseudo-header holds both addresses; swapping them leaves the sum unchanged.
    data[l4 + 2..l4 + 4].copy_from_slice(&checksum::update16(c, old, new).to_be_bytes());
}

/// Recompute the ICMP(v6) checksum over the whole message (error path only);
/// `m` must carry the packet's current addresses (ICMPv6 sums them).
pub fn fill_icmp_checksum(data: &mut [u8], m: &PacketMeta) {
    let _ = crate::wire::rewrite::fill_l4_checksum(data, m);
}

/// Write a 20-byte IPv4 header (no options, DF clear) with a correct checksum.
pub fn write_ipv4_header(h: &mut [u8], src: Ip16, dst: Ip16, proto: u8, ttl: u8, total: u16) {
    h[0] = 0x45;
    h[1] = 0;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..8].fill(0);
    h[8] = ttl;
    h[9] = proto;
    h[10..12].fill(0);
    h[12..16].copy_from_slice(&src.0[12..]);
    h[16..20].copy_from_slice(&dst.0[12..]);
    let c = checksum::checksum(&h[..20]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::build::Builder;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, SocketAddr};

    fn sa(a: u32, p: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::from(a), p))
    }

    /// RFC 1624 eqn. 3 the long way: four 16-bit folds.
    fn apply_delta_reference(hc: u16, delta: u64) -> u16 {
        let mut s = u64::from(!hc) + delta;
        s = (s & 0xffff_ffff) + (s >> 32);
        s = (s & 0xffff_ffff) + (s >> 32);
        let mut s = s as u32;
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        !(s as u16)
    }

    proptest! {
        /// The reply's checksum changes follow from the forward's.
        #[test]
        fn reverse_deltas_are_the_way_back(
            a in any::<[u8; 4]>(), b in any::<[u8; 4]>(), c in any::<[u8; 4]>(), d in any::<[u8; 4]>(),
            p in any::<u16>(), q in any::<u16>(), r in any::<u16>(), s in any::<u16>(),
        ) {
            let fwd = fast_deltas((a, b, p, q), (c, d, r, s));
            prop_assert_eq!(reverse_deltas(fwd), fast_deltas((d, c, s, r), (b, a, q, p)));
        }

        /// The rotate fold gives what four plain folds give, carries included.
        #[test]
        fn apply_delta_matches_plain_folds(
            hc in prop_oneof![Just(0u16), Just(0xffff), any::<u16>()],
            delta in prop_oneof![
                Just(0u64),
                Just(0xffff),
                Just(0xffff_ffff),
                Just(0x1_0000_fffe),
                0u64..(1 << 40),
                0u64..(1 << 62),
            ],
        ) {
            prop_assert_eq!(apply_delta(hc, delta), apply_delta_reference(hc, delta));
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
            let m = wire::parse(&f).expect("parses");
            let mac_dst = MacAddr(macs[..6].try_into().expect("6"));
            let mac_src = MacAddr(macs[6..].try_into().expect("6"));
            let (src, dst) = (Ipv4Addr::from(c), Ipv4Addr::from(d));
            let mut slow = f.clone();
            rewrite_l3l4(&mut slow, &m, Ip16::v4(src.octets()), Ip16::v4(dst.octets()), r, s);
            decrement_ttl(&mut slow, &m);
            set_macs(&mut slow, mac_dst, mac_src);
            // The fast rewrite, with the checksum changes summed ahead.
            let deltas = fast_deltas(
                (Ipv4Addr::from(a).octets(), Ipv4Addr::from(b).octets(), p, q),
                (src.octets(), dst.octets(), r, s),
            );
            let mut ahead = f.clone();
            let ports = [r.to_be_bytes(), s.to_be_bytes()].concat();
            let ports: [u8; 4] = ports.try_into().expect("4");
            let d = mac_dst.0;
            let mac8 = [d[0], d[1], d[2], d[3], d[4], d[5], 0xee, 0xee];
            if tcp {
                let h = ahead.first_chunk_mut::<FAST_TCP_END>().expect("tcp headers");
                rewrite_fast_tcp_with(h, deltas, src.octets(), dst.octets(), ports, mac8, src_mac_ipv4(mac_src));
            } else {
                let h = ahead.first_chunk_mut::<FAST_UDP_END>().expect("udp headers");
                rewrite_fast_udp_with(h, deltas, src.octets(), dst.octets(), ports, mac8, src_mac_ipv4(mac_src));
            }
            prop_assert_eq!(&ahead, &slow);
            let mut given = f.clone();
            prop_assert!(rewrite_fast(
                &mut given, tcp, deltas, src.octets(), dst.octets(), r, s, mac_dst, mac_src
            ));
            prop_assert_eq!(given, slow);
        }
    }
}
