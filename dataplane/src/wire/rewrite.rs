//! Changes to frames already parsed: checksum fills (RFC 1071) and
//! incremental updates (RFC 1624) of a [`PacketMeta`]'s headers.
//!
//! Invariants: every function checks its bounds and returns `false` (having
//! changed nothing, or only bytes whose checksums it also fixed) rather than
//! panicking.

use super::checksum::{add, checksum, fold, sctp_crc, sum_bytes, udp_nonzero, update_bytes};
use super::ethernet::ethertype;
use super::ip::proto;
use super::parse::{Frag, L4Checksum, PacketMeta};
use super::{ipv4, sctp};

#[inline]
fn read16(frame: &[u8], at: usize) -> Option<u16> {
    let b = frame.get(at..)?.first_chunk::<2>()?;
    Some(u16::from_be_bytes(*b))
}

#[inline]
fn write16(frame: &mut [u8], at: usize, v: u16) -> bool {
    match frame.get_mut(at..).and_then(|s| s.first_chunk_mut::<2>()) {
        Some(b) => {
            *b = v.to_be_bytes();
            true
        }
        None => false,
    }
}

/// Incrementally fix the IPv4 header checksum after the header bytes `old`
/// became `new` (e.g. an address, or the TTL/protocol word). Returns false if
/// the field lies outside `frame`.
#[inline]
pub fn update_ipv4_header(frame: &mut [u8], l3_off: usize, old: &[u8], new: &[u8]) -> bool {
    let at = l3_off + ipv4::field::CHECKSUM.start;
    match read16(frame, at) {
        Some(hc) => write16(frame, at, update_bytes(hc, old, new)),
        None => false,
    }
}

fn update_l4(frame: &mut [u8], meta: &PacketMeta, old: &[u8], new: &[u8], addr: bool) -> bool {
    let kind = L4Checksum::of(meta);
    if addr && !kind.covers_pseudo_header() {
        // Nothing to fix: this checksum does not see addresses (ICMPv4, SCTP).
        return true;
    }
    let Some(off) = kind.field_offset() else {
        return kind == L4Checksum::None;
    };
    let at = usize::from(meta.l4_off) + off;
    let Some(hc) = read16(frame, at) else {
        return false;
    };
    let c = match kind {
        // Zero is "no checksum" (RFC 768); in IPv6 it is either invalid (RFC 8200
        // §8.1) or a zero-checksum tunnel (RFC 6935): either way it stays zero,
        // rather than a translation turning it into a plausible-looking sum.
        L4Checksum::Udp if hc == 0 => return true,
        L4Checksum::Udp => udp_nonzero(update_bytes(hc, old, new)),
        _ => update_bytes(hc, old, new),
    };
    write16(frame, at, c)
}

/// Incrementally fix the L4 checksum after pseudo-header bytes (an address)
/// changed from `old` to `new`. ICMPv4 and SCTP do not cover addresses; UDP
/// with a zero checksum keeps it (both families). Returns false if the checksum field
/// lies outside `frame`. Correct for first fragments too, since the sum is over
/// the whole datagram; later fragments carry no L4 header and are left alone.
#[inline]
pub fn update_l4_for_addr(frame: &mut [u8], meta: &PacketMeta, old: &[u8], new: &[u8]) -> bool {
    update_l4(frame, meta, old, new, true)
}

/// Incrementally fix the L4 checksum after bytes inside the L4 segment (a port,
/// an ICMP echo id) changed from `old` to `new`. SCTP's CRC cannot be updated:
/// use [`fill_sctp_checksum`]; this returns false for it.
#[inline]
pub fn update_l4_for_segment(frame: &mut [u8], meta: &PacketMeta, old: &[u8], new: &[u8]) -> bool {
    if L4Checksum::of(meta) == L4Checksum::Sctp {
        return false;
    }
    update_l4(frame, meta, old, new, false)
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
    let c = checksum(hdr);
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
        s = add(s, meta.pseudo_sum());
    }
    let mut c = !fold(s);
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
