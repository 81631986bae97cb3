//! In-place NAT rewrites that keep every checksum valid, by RFC 1624
//! incremental updates: addresses and ports of a parsed packet, and of the
//! packet embedded in an ICMP error (RFC 5508 §4.3 / RFC 4787 §6 behaviour:
//! a NAT translates the embedded header so the error reaches the right host).
//!
//! Invariants: every function checks its bounds and returns `false` (having
//! changed nothing, or only bytes whose checksums it also fixed) rather than
//! panicking. The offsets in the `PacketMeta`/`InnerMeta` passed in stay valid
//! after a rewrite; their address and port fields are stale.

use super::checksum::{self, update_bytes};
use super::rewrite;
use crate::net::Ip16;
use crate::wire::{icmp, proto, Frag, InnerMeta, L4Checksum, PacketMeta};

/// Which end of a packet to rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The source address / port.
    Src,
    /// The destination address / port.
    Dst,
}

/// Offset (from the IP header) and length of an address field.
#[inline]
fn addr_field(v4: bool, side: Side) -> (usize, usize) {
    match (v4, side) {
        (true, Side::Src) => (12, 4),
        (true, Side::Dst) => (16, 4),
        (false, Side::Src) => (8, 16),
        (false, Side::Dst) => (24, 16),
    }
}

#[inline]
fn addr_bytes(v4: bool, a: &Ip16) -> &[u8] {
    if v4 {
        &a.0[12..]
    } else {
        &a.0[..]
    }
}

/// Replace `frame[at..at + new.len()]` with `new`; returns the old bytes
/// (at most 16) or `None` if out of bounds.
#[inline]
fn swap_bytes(frame: &mut [u8], at: usize, new: &[u8]) -> Option<([u8; 16], usize)> {
    let field = frame.get_mut(at..at + new.len())?;
    let mut old = [0u8; 16];
    let n = new.len().min(16);
    old[..n].copy_from_slice(&field[..n]);
    field.copy_from_slice(new);
    Some((old, n))
}

/// Rewrite the source or destination address of the packet `meta` describes,
/// fixing the IPv4 header checksum and the L4 checksum (TCP, UDP, ICMPv6; a
/// zero UDP checksum stays zero). `new` must be of the packet's family
/// (IPv4-mapped for IPv4). Later fragments have no L4 header: only the IP
/// header changes.
pub fn set_addr(frame: &mut [u8], meta: &PacketMeta, side: Side, new: Ip16) -> bool {
    if !meta.is_ip() || (meta.v4 && !new.is_v4()) {
        return false;
    }
    let (off, _) = addr_field(meta.v4, side);
    let l3 = usize::from(meta.l3_off);
    let new = addr_bytes(meta.v4, &new);
    let Some((old, n)) = swap_bytes(frame, l3 + off, new) else {
        return false;
    };
    let old = &old[..n];
    if meta.v4 && !rewrite::update_ipv4_header(frame, l3, old, new) {
        return false;
    }
    rewrite::update_l4_for_addr(frame, meta, old, new)
}

/// Offset inside the L4 header of the port on `side`, for protocols with
/// ports; for ICMP echo both sides are the identifier at offset 4.
#[inline]
fn port_field(proto_num: u8, v4: bool, icmp_type: u8, side: Side) -> Option<usize> {
    match proto_num {
        proto::TCP | proto::UDP | proto::SCTP => Some(if side == Side::Src { 0 } else { 2 }),
        proto::ICMP if v4 && icmp::v4::is_echo(icmp_type) => Some(4),
        proto::ICMPV6 if !v4 && icmp::v6::is_echo(icmp_type) => Some(4),
        _ => None,
    }
}

/// Rewrite the source or destination port (for ICMP echo: the identifier,
/// whichever side) and fix the L4 checksum; SCTP's CRC32c is recomputed.
/// False for later fragments, protocols without ports, SCTP fragments, or
/// fields outside `frame`.
pub fn set_port(frame: &mut [u8], meta: &PacketMeta, side: Side, new: u16) -> bool {
    if !meta.is_ip() || meta.frag == Frag::Later {
        return false;
    }
    let Some(off) = port_field(meta.proto, meta.v4, meta.icmp_type, side) else {
        return false;
    };
    if meta.proto == proto::SCTP && meta.frag != Frag::None {
        return false;
    }
    let at = usize::from(meta.l4_off) + off;
    let new = new.to_be_bytes();
    let Some((old, _)) = swap_bytes(frame, at, &new) else {
        return false;
    };
    if meta.proto == proto::SCTP {
        return rewrite::fill_sctp_checksum(frame, meta);
    }
    rewrite::update_l4_for_segment(frame, meta, &old[..2], &new)
}

/// Fix the outer ICMP/ICMPv6 checksum after bytes of its payload changed.
#[inline]
fn fix_outer(frame: &mut [u8], outer: &PacketMeta, old: &[u8], new: &[u8]) -> bool {
    rewrite::update_l4_for_segment(frame, outer, old, new)
}

/// Where the embedded packet's own L4 checksum sits, if it is among the bytes
/// the error carries, and whether it covers the pseudo-header.
fn inner_l4_checksum(inner: &InnerMeta) -> Option<(usize, bool, bool)> {
    if inner.frag == Frag::Later {
        return None;
    }
    // (offset, covers pseudo-header, is UDP)
    let (off, pseudo, udp) = match (inner.proto, inner.v4) {
        (proto::TCP, _) => (16, true, false),
        (proto::UDP, _) => (6, true, true),
        (proto::ICMP, true) => (2, false, false),
        (proto::ICMPV6, false) => (2, true, false),
        _ => return None,
    };
    if off + 2 > usize::from(inner.l4_avail) {
        return None;
    }
    Some((usize::from(inner.l4_off) + off, pseudo, udp))
}

/// Adjust a 16-bit checksum at `at` by a change `old` → `new`; UDP keeps zero
/// and never emits zero. Returns the (old, new) checksum bytes.
fn adjust_at(
    frame: &mut [u8],
    at: usize,
    old: &[u8],
    new: &[u8],
    udp: bool,
) -> Option<([u8; 2], [u8; 2])> {
    let f = frame.get_mut(at..at + 2)?;
    let before = [f[0], f[1]];
    let hc = u16::from_be_bytes(before);
    if udp && hc == 0 {
        return Some((before, before));
    }
    let mut c = update_bytes(hc, old, new);
    if udp {
        c = checksum::udp_nonzero(c);
    }
    let after = c.to_be_bytes();
    f.copy_from_slice(&after);
    Some((before, after))
}

/// Rewrite an address of the packet embedded in an ICMP error (`outer` from
/// [`crate::wire::parse`], `inner` from [`crate::wire::parse_icmp_inner`]),
/// fixing the embedded IPv4 header checksum, the embedded L4 checksum when the
/// error carries it (UDP always: it is in the first 8 bytes), and the outer
/// ICMP checksum.
pub fn set_inner_addr(
    frame: &mut [u8],
    outer: &PacketMeta,
    inner: &InnerMeta,
    side: Side,
    new: Ip16,
) -> bool {
    if inner.v4 != outer.v4
        || (inner.v4 && !new.is_v4())
        || L4Checksum::of(outer).field_offset().is_none()
    {
        return false;
    }
    let (off, _) = addr_field(inner.v4, side);
    let l3 = usize::from(inner.l3_off);
    let new = addr_bytes(inner.v4, &new);
    let Some((old, n)) = swap_bytes(frame, l3 + off, new) else {
        return false;
    };
    let old = &old[..n];
    if !fix_outer(frame, outer, old, new) {
        return false;
    }
    if inner.v4 {
        let Some((b, a)) = adjust_at(frame, l3 + 10, old, new, false) else {
            return false;
        };
        if !fix_outer(frame, outer, &b, &a) {
            return false;
        }
    }
    if let Some((at, true, udp)) = inner_l4_checksum(inner) {
        let Some((b, a)) = adjust_at(frame, at, old, new, udp) else {
            return false;
        };
        if !fix_outer(frame, outer, &b, &a) {
            return false;
        }
    }
    true
}

/// Rewrite a port (ICMP echo: the identifier) of the packet embedded in an
/// ICMP error, fixing the embedded L4 checksum when the error carries it and
/// the outer ICMP checksum. The embedded SCTP CRC cannot be fixed (the error
/// carries only part of the packet) and nobody checks it.
pub fn set_inner_port(
    frame: &mut [u8],
    outer: &PacketMeta,
    inner: &InnerMeta,
    side: Side,
    new: u16,
) -> bool {
    if inner.frag == Frag::Later || L4Checksum::of(outer).field_offset().is_none() {
        return false;
    }
    let inner_type = usize::from(inner.l4_off);
    let itype = frame.get(inner_type).copied().unwrap_or(0);
    let Some(off) = port_field(inner.proto, inner.v4, itype, side) else {
        return false;
    };
    let at = usize::from(inner.l4_off) + off;
    let new = new.to_be_bytes();
    if at + 2 > usize::from(inner.l4_off) + usize::from(inner.l4_avail) {
        return false;
    }
    let Some((old, _)) = swap_bytes(frame, at, &new) else {
        return false;
    };
    let old = &old[..2];
    if !fix_outer(frame, outer, old, &new) {
        return false;
    }
    if let Some((at, _, udp)) = inner_l4_checksum(inner) {
        let Some((b, a)) = adjust_at(frame, at, old, &new, udp) else {
            return false;
        };
        if !fix_outer(frame, outer, &b, &a) {
            return false;
        }
    }
    true
}
