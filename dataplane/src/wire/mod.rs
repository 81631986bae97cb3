//! Checked packet views over untrusted bytes (smoltcp style: a `Packet<T>` per
//! protocol with a `mod field` of byte ranges, `new_checked` is `new_unchecked`
//! then `check_len`, and no accessor can panic after `check_len`), plus
//! [`parse`], the one summarising parser the pipeline runs on every frame.
//!
//! A DNAT rewrite with the helpers in [`crate::checksum`]:
//!
//! ```
//! use xlb_dataplane::wire::{build::Builder, parse, tcp};
//! use xlb_dataplane::checksum;
//!
//! let mut f = Builder::tcp("192.0.2.1:40000".parse()?, "10.0.0.10:80".parse()?, tcp::flags::SYN)
//!     .to_vec()?;
//! let m = parse(&f).expect("a valid frame");
//! let (l3, backend) = (usize::from(m.l3_off), [10, 1, 0, 7]);
//! let old = m.dst.v4_octets();
//! f[l3 + 16..l3 + 20].copy_from_slice(&backend);
//! assert!(checksum::update_ipv4_header(&mut f, l3, &old, &backend));
//! assert!(checksum::update_l4_for_addr(&mut f, &m, &old, &backend));
//! let m2 = parse(&f).expect("still valid");
//! assert!(checksum::verify_l4_checksum(&f, &m2));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Invariants: nothing here allocates or panics on any input; every rejection
//! is a [`DropReason`]; offsets in [`PacketMeta`] and [`InnerMeta`] always lie
//! inside the frame they were parsed from.

pub mod arp;
pub mod build;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod nat;
pub mod sctp;
pub mod tcp;
pub mod udp;

#[cfg(test)]
mod tests;

use crate::checksum::proto;
use crate::drop::DropReason;
use crate::net::Ip16;
use ethernet::{ethertype, is_vlan_tpid};

/// Where a packet sits in a fragmented datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Frag {
    /// Not fragmented (IPv6 atomic fragments included, RFC 6946).
    #[default]
    None,
    /// Offset 0 with more fragments: carries the L4 header.
    First,
    /// Offset ≠ 0: no L4 header.
    Later,
}

/// What the pipeline needs to know about a frame, from one pass over its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketMeta {
    /// Offset of the IP header (after Ethernet + VLAN tags); for non-IP frames
    /// the offset of whatever follows the EtherType.
    pub l3_off: u16,
    /// Outer VLAN id if tagged.
    pub vlan: Option<u16>,
    /// Final EtherType (0x0800, 0x86DD, 0x0806 ARP, or other).
    pub ethertype: u16,
    /// True for IPv4.
    pub v4: bool,
    /// Source address (IPv4 mapped into [`Ip16`]).
    pub src: Ip16,
    /// Destination address.
    pub dst: Ip16,
    /// Final L4 protocol number (after IPv6 extension headers).
    pub proto: u8,
    /// Offset of the L4 header (for later fragments: of the fragment data).
    pub l4_off: u16,
    /// Bytes from `l4_off` to the end of the IP payload, per the IP length fields.
    pub l4_len: u16,
    /// Source port; ICMP echo id for ICMP echo; 0 when there are no ports.
    pub sport: u16,
    /// Destination port; ICMP echo id for ICMP echo; 0 when there are no ports.
    pub dport: u16,
    /// TCP flags; 0 if not TCP.
    pub tcp_flags: u8,
    /// Fragment position.
    pub frag: Frag,
    /// The datagram's identification if it is fragmented (IPv4's 16-bit
    /// field, IPv6's 32-bit one from the fragment header); else 0.
    pub frag_id: u32,
    /// ICMP/ICMPv6 type; 0 if not ICMP of the packet's family.
    pub icmp_type: u8,
    /// ICMP/ICMPv6 code; 0 if not ICMP of the packet's family.
    pub icmp_code: u8,
    /// TTL / hop limit.
    pub ttl: u8,
}

impl PacketMeta {
    /// The summary of a non-IP frame (ARP, LLDP, …): only `ethertype` and
    /// `l3_off` are set, everything else is zero/`None`/`Frag::None`.
    /// The pipeline hands such frames to the kernel.
    #[inline]
    pub fn non_ip(ethertype: u16, l3_off: u16) -> PacketMeta {
        PacketMeta {
            ethertype,
            l3_off,
            ..PacketMeta::default()
        }
    }

    /// True if the frame carries IPv4 or IPv6.
    #[inline]
    pub fn is_ip(&self) -> bool {
        self.ethertype == ethertype::IPV4 || self.ethertype == ethertype::IPV6
    }

    /// True if the packet is ICMPv4 (in IPv4) or ICMPv6 (in IPv6).
    #[inline]
    pub fn is_icmp(&self) -> bool {
        (self.v4 && self.proto == proto::ICMP)
            || (!self.v4 && self.is_ip() && self.proto == proto::ICMPV6)
    }
}

#[inline(always)]
fn be16(a: u8, b: u8) -> u16 {
    u16::from_be_bytes([a, b])
}

#[inline(always)]
fn chunk<const N: usize>(b: &[u8], off: usize) -> Option<&[u8; N]> {
    b.get(off..)?.first_chunk::<N>()
}

/// Summarise one frame: Ethernet (up to two VLAN tags), IPv4 or IPv6 (with
/// the extension-header chain), and the L4 ports/flags/ICMP type.
///
/// - Non-IP frames: `Ok(PacketMeta::non_ip(..))` with `vlan` set if tagged.
/// - Later fragments: `Ok` with `frag = Later`, ports 0 (no L4 header).
/// - Ethernet padding after the IP datagram is ignored.
/// - Errors: `TruncatedEthernet` (< 14 bytes), `TruncatedL3` (VLAN tag or
///   fixed IP header cut short), `BadIpv4Header` (version ≠ 4, IHL < 5 or past
///   the frame), `BadIpLength` (IPv4 total length < IHL or past the frame;
///   IPv6 payload length past the frame), `BadIpv6ExtHeader` (version ≠ 6,
///   extension chain malformed or longer than [`ipv6::MAX_EXT_HEADERS`]),
///   `TruncatedL4` (TCP < 20 bytes or data offset out of range, UDP < 8 bytes
///   or its length field < 8 or past the IP payload, SCTP < 12, ICMP < 8).
///
/// The IPv4 header checksum is not verified (the NIC or the kernel's XDP
/// path would have; see [`ipv4::Packet::verify_checksum`]).
#[inline]
pub fn parse(frame: &[u8]) -> Result<PacketMeta, DropReason> {
    let eth = frame
        .first_chunk::<{ ethernet::HEADER_LEN }>()
        .ok_or(DropReason::TruncatedEthernet)?;
    let mut et = be16(eth[12], eth[13]);
    let mut off = ethernet::HEADER_LEN;
    let mut vlan = None;
    if is_vlan_tpid(et) {
        for _ in 0..ethernet::MAX_VLAN_TAGS {
            if !is_vlan_tpid(et) {
                break;
            }
            let tag = chunk::<4>(frame, off).ok_or(DropReason::TruncatedL3)?;
            if vlan.is_none() {
                vlan = Some(be16(tag[0], tag[1]) & 0x0fff);
            }
            et = be16(tag[2], tag[3]);
            off += ethernet::VLAN_TAG_LEN;
        }
    }
    match et {
        ethertype::IPV4 => parse_v4(frame, off, vlan),
        ethertype::IPV6 => parse_v6(frame, off, vlan),
        _ => Ok(PacketMeta {
            vlan,
            ..PacketMeta::non_ip(et, off as u16)
        }),
    }
}

#[inline(always)]
fn parse_v4(frame: &[u8], off: usize, vlan: Option<u16>) -> Result<PacketMeta, DropReason> {
    let ip = chunk::<{ ipv4::MIN_HEADER_LEN }>(frame, off).ok_or(DropReason::TruncatedL3)?;
    if ip[0] >> 4 != 4 {
        return Err(DropReason::BadIpv4Header);
    }
    let avail = frame.len() - off;
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ihl < ipv4::MIN_HEADER_LEN || ihl > avail {
        return Err(DropReason::BadIpv4Header);
    }
    let total = usize::from(be16(ip[2], ip[3]));
    if total < ihl || total > avail {
        return Err(DropReason::BadIpLength);
    }
    let fo = be16(ip[6], ip[7]);
    let frag = if fo & ipv4::OFFSET_MASK != 0 {
        Frag::Later
    } else if fo & ipv4::FLAG_MF != 0 {
        Frag::First
    } else {
        Frag::None
    };
    let l4_off = off + ihl;
    let mut m = PacketMeta {
        l3_off: off as u16,
        vlan,
        ethertype: ethertype::IPV4,
        v4: true,
        src: Ip16::v4([ip[12], ip[13], ip[14], ip[15]]),
        dst: Ip16::v4([ip[16], ip[17], ip[18], ip[19]]),
        proto: ip[9],
        // off ≤ 22 and ihl ≤ 60, total ≤ 65535: both fit in u16.
        l4_off: l4_off as u16,
        l4_len: (total - ihl) as u16,
        frag,
        frag_id: if frag == Frag::None {
            0
        } else {
            u32::from(be16(ip[4], ip[5]))
        },
        ttl: ip[8],
        ..PacketMeta::default()
    };
    if frag != Frag::Later {
        let l4 = frame
            .get(l4_off..off + total)
            .ok_or(DropReason::BadIpLength)?;
        parse_l4(&mut m, l4)?;
    }
    Ok(m)
}

#[inline(always)]
fn parse_v6(frame: &[u8], off: usize, vlan: Option<u16>) -> Result<PacketMeta, DropReason> {
    let ip = chunk::<{ ipv6::HEADER_LEN }>(frame, off).ok_or(DropReason::TruncatedL3)?;
    if ip[0] >> 4 != 6 {
        return Err(DropReason::BadIpv6ExtHeader);
    }
    let plen = usize::from(be16(ip[4], ip[5]));
    let start = off + ipv6::HEADER_LEN;
    let payload = frame
        .get(start..start + plen)
        .ok_or(DropReason::BadIpLength)?;
    let mut src = [0u8; 16];
    src.copy_from_slice(&ip[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&ip[24..40]);
    let nh = ip[6];
    let (proto, ext_len, frag, frag_id) = if matches!(nh, proto::TCP | proto::UDP) {
        (nh, 0, Frag::None, 0)
    } else {
        let e = ipv6::walk_ext(nh, payload)?;
        let id = match (e.frag, e.frag_header) {
            (Frag::First | Frag::Later, Some(h)) => h.ident,
            _ => 0,
        };
        (e.proto, e.l4_off, e.frag, id)
    };
    let mut m = PacketMeta {
        l3_off: off as u16,
        vlan,
        ethertype: ethertype::IPV6,
        v4: false,
        src: Ip16::v6(src),
        dst: Ip16::v6(dst),
        proto,
        // At most 8 extension headers of ≤ 2048 bytes each: fits in u16.
        l4_off: (start + ext_len) as u16,
        l4_len: (plen - ext_len) as u16,
        frag,
        frag_id,
        ttl: ip[7],
        ..PacketMeta::default()
    };
    if frag != Frag::Later {
        let l4 = payload.get(ext_len..).ok_or(DropReason::BadIpv6ExtHeader)?;
        parse_l4(&mut m, l4)?;
    }
    Ok(m)
}

/// Fill ports, TCP flags and ICMP type/code from the L4 bytes (cut to the IP payload).
#[inline(always)]
fn parse_l4(m: &mut PacketMeta, l4: &[u8]) -> Result<(), DropReason> {
    match m.proto {
        proto::TCP => {
            let h = l4
                .first_chunk::<{ tcp::MIN_HEADER_LEN }>()
                .ok_or(DropReason::TruncatedL4)?;
            let doff = usize::from(h[12] >> 4) * 4;
            if doff < tcp::MIN_HEADER_LEN || doff > l4.len() {
                return Err(DropReason::TruncatedL4);
            }
            m.sport = be16(h[0], h[1]);
            m.dport = be16(h[2], h[3]);
            m.tcp_flags = h[13];
        }
        proto::UDP => {
            let h = l4
                .first_chunk::<{ udp::HEADER_LEN }>()
                .ok_or(DropReason::TruncatedL4)?;
            // A first fragment's UDP length covers the whole datagram.
            let ulen = usize::from(be16(h[4], h[5]));
            if m.frag == Frag::None && (ulen < udp::HEADER_LEN || ulen > l4.len()) {
                return Err(DropReason::TruncatedL4);
            }
            m.sport = be16(h[0], h[1]);
            m.dport = be16(h[2], h[3]);
        }
        proto::SCTP => {
            let h = l4
                .first_chunk::<{ sctp::HEADER_LEN }>()
                .ok_or(DropReason::TruncatedL4)?;
            m.sport = be16(h[0], h[1]);
            m.dport = be16(h[2], h[3]);
        }
        proto::ICMP | proto::ICMPV6 if (m.proto == proto::ICMP) == m.v4 => {
            let h = l4
                .first_chunk::<{ icmp::HEADER_LEN }>()
                .ok_or(DropReason::TruncatedL4)?;
            m.icmp_type = h[0];
            m.icmp_code = h[1];
            let echo = if m.v4 {
                icmp::v4::is_echo(h[0])
            } else {
                icmp::v6::is_echo(h[0])
            };
            if echo {
                m.sport = be16(h[4], h[5]);
                m.dport = m.sport;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Offset of the IPv4 header in a frame [`parse_fast`] accepts.
pub const FAST_L3: usize = ethernet::HEADER_LEN;
/// Offset of the L4 header in a frame [`parse_fast`] accepts.
pub const FAST_L4: usize = FAST_L3 + ipv4::MIN_HEADER_LEN;

/// What the established fast path needs of the common frame: untagged
/// Ethernet, a 20-byte IPv4 header, an unfragmented TCP or UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FastMeta {
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// [`proto::TCP`] or [`proto::UDP`].
    pub proto: u8,
    /// TCP flags; 0 for UDP.
    pub tcp_flags: u8,
    /// TTL.
    pub ttl: u8,
    /// Bytes from the L4 header to the end of the IP payload.
    pub l4_len: u16,
}

impl FastMeta {
    /// The [`PacketMeta`] that [`parse`] gives for the same frame (tested),
    /// for the slow path, without parsing again.
    #[inline]
    pub fn to_meta(&self) -> PacketMeta {
        PacketMeta {
            l3_off: FAST_L3 as u16,
            vlan: None,
            ethertype: ethertype::IPV4,
            v4: true,
            src: Ip16::v4(self.src),
            dst: Ip16::v4(self.dst),
            proto: self.proto,
            l4_off: FAST_L4 as u16,
            l4_len: self.l4_len,
            sport: self.sport,
            dport: self.dport,
            tcp_flags: self.tcp_flags,
            frag: Frag::None,
            frag_id: 0,
            icmp_type: 0,
            icmp_code: 0,
            ttl: self.ttl,
        }
    }
}

/// The fast path's parser: `Some` only for frames of the one shape it
/// handles (see [`FastMeta`]) that [`parse`] accepts, with the same values
/// `parse` reports (tested); everything else — VLAN tags, IPv4 options,
/// fragments, IPv6, other protocols, malformed frames — is `None` and goes
/// through [`parse`]. One bounds check covers every header read.
#[inline]
pub fn parse_fast(frame: &[u8]) -> Option<FastMeta> {
    let h = frame.first_chunk::<{ FAST_L4 + udp::HEADER_LEN }>()?;
    if be16(h[12], h[13]) != ethertype::IPV4 || h[FAST_L3] != 0x45 {
        return None;
    }
    let ip = &h[FAST_L3..];
    // No fragment offset, no MF (DF may be set).
    if be16(ip[6], ip[7]) & (ipv4::OFFSET_MASK | ipv4::FLAG_MF) != 0 {
        return None;
    }
    let total = usize::from(be16(ip[2], ip[3]));
    if total > frame.len() - FAST_L3 {
        return None;
    }
    // total ≥ 20 + 8 is checked per protocol below (it may be < 20: malformed).
    let l4_len = total.checked_sub(ipv4::MIN_HEADER_LEN)?;
    let l4 = &h[FAST_L4..];
    let tcp_flags = match ip[9] {
        proto::TCP => {
            // The TCP header's flags and data offset lie past the first 8 bytes.
            let t = frame
                .get(FAST_L4..)?
                .first_chunk::<{ tcp::MIN_HEADER_LEN }>()?;
            let doff = usize::from(t[12] >> 4) * 4;
            if doff < tcp::MIN_HEADER_LEN || doff > l4_len {
                return None;
            }
            t[13]
        }
        proto::UDP => {
            let ulen = usize::from(be16(l4[4], l4[5]));
            if ulen < udp::HEADER_LEN || ulen > l4_len {
                return None;
            }
            0
        }
        _ => return None,
    };
    Some(FastMeta {
        src: [ip[12], ip[13], ip[14], ip[15]],
        dst: [ip[16], ip[17], ip[18], ip[19]],
        sport: be16(l4[0], l4[1]),
        dport: be16(l4[2], l4[3]),
        proto: ip[9],
        tcp_flags,
        ttl: ip[8],
        // total ≤ 65535 (a u16 field).
        l4_len: l4_len as u16,
    })
}

/// The packet embedded in an ICMP error (RFC 792; RFC 4443 §3): the original
/// datagram's header and at least its first 8 L4 bytes, seen from the router
/// that answered, so `src` is the original sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InnerMeta {
    /// Offset of the embedded IP header in the frame.
    pub l3_off: u16,
    /// True for IPv4 (always the outer packet's family).
    pub v4: bool,
    /// Source address of the embedded packet.
    pub src: Ip16,
    /// Destination address of the embedded packet.
    pub dst: Ip16,
    /// Final L4 protocol of the embedded packet.
    pub proto: u8,
    /// Offset of the embedded L4 header in the frame.
    pub l4_off: u16,
    /// Bytes of the embedded L4 header present (to the end of the outer IP payload).
    pub l4_avail: u16,
    /// Source port (ICMP echo: the id; 0 for later fragments and portless protocols).
    pub sport: u16,
    /// Destination port (ICMP echo: the id).
    pub dport: u16,
    /// Fragment position of the embedded packet.
    pub frag: Frag,
}

/// Find the embedded packet of an ICMPv4 error (types 3, 11, 12) or ICMPv6
/// error (types 1–4) that `meta` describes. `None` if `meta` is not such an
/// error, or the embedded header is malformed, of the other family, or too
/// short to hold the ports the flow lookup needs (4 bytes for TCP/UDP/SCTP,
/// 8 for ICMP echo).
pub fn parse_icmp_inner(frame: &[u8], meta: &PacketMeta) -> Option<InnerMeta> {
    if meta.frag != Frag::None || !meta.is_icmp() {
        return None;
    }
    let is_err = if meta.v4 {
        icmp::v4::is_error(meta.icmp_type)
    } else {
        icmp::v6::is_error(meta.icmp_type)
    };
    if !is_err {
        return None;
    }
    let body_off = usize::from(meta.l4_off) + icmp::HEADER_LEN;
    let end = usize::from(meta.l4_off) + usize::from(meta.l4_len);
    let body = frame.get(body_off..end)?;
    let mut m = InnerMeta {
        l3_off: body_off as u16,
        v4: meta.v4,
        ..InnerMeta::default()
    };
    let l4_rel = if meta.v4 {
        let ip = body.first_chunk::<{ ipv4::MIN_HEADER_LEN }>()?;
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if ip[0] >> 4 != 4 || ihl < ipv4::MIN_HEADER_LEN || ihl > body.len() {
            return None;
        }
        m.src = Ip16::v4([ip[12], ip[13], ip[14], ip[15]]);
        m.dst = Ip16::v4([ip[16], ip[17], ip[18], ip[19]]);
        m.proto = ip[9];
        let fo = be16(ip[6], ip[7]);
        m.frag = if fo & ipv4::OFFSET_MASK != 0 {
            Frag::Later
        } else if fo & ipv4::FLAG_MF != 0 {
            Frag::First
        } else {
            Frag::None
        };
        ihl
    } else {
        let ip = body.first_chunk::<{ ipv6::HEADER_LEN }>()?;
        if ip[0] >> 4 != 6 {
            return None;
        }
        let mut a = [0u8; 16];
        a.copy_from_slice(&ip[8..24]);
        m.src = Ip16::v6(a);
        a.copy_from_slice(&ip[24..40]);
        m.dst = Ip16::v6(a);
        // The embedded packet is usually cut short: walk what is there.
        let e = ipv6::walk_ext(ip[6], body.get(ipv6::HEADER_LEN..)?).ok()?;
        m.proto = e.proto;
        m.frag = e.frag;
        ipv6::HEADER_LEN + e.l4_off
    };
    let l4 = body.get(l4_rel..)?;
    m.l4_off = (body_off + l4_rel) as u16;
    m.l4_avail = l4.len() as u16;
    if m.frag == Frag::Later {
        return Some(m);
    }
    match m.proto {
        proto::TCP | proto::UDP | proto::SCTP => {
            let p = l4.first_chunk::<4>()?;
            m.sport = be16(p[0], p[1]);
            m.dport = be16(p[2], p[3]);
        }
        proto::ICMP | proto::ICMPV6 if (m.proto == proto::ICMP) == m.v4 => {
            let h = l4.first_chunk::<{ icmp::HEADER_LEN }>()?;
            let echo = if m.v4 {
                icmp::v4::is_echo(h[0])
            } else {
                icmp::v6::is_echo(h[0])
            };
            if echo {
                m.sport = be16(h[4], h[5]);
                m.dport = m.sport;
            }
        }
        _ => {}
    }
    Some(m)
}
