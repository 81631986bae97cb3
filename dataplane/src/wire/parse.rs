//! The summarising parsers every frame goes through: [`parse`] (any frame
//! into a [`PacketMeta`]), [`parse_fast`] (the established fast path's one
//! shape into a [`FastMeta`]) and [`parse_icmp_inner`] (the packet an ICMP
//! error quotes, into an [`InnerMeta`]); and where a parsed packet keeps its
//! L4 checksum ([`L4Checksum`], [`verify_l4_checksum`]).
//!
//! Invariants: nothing here allocates or panics on any input; every rejection
//! is a [`DropReason`]; offsets in [`PacketMeta`] and [`InnerMeta`] always lie
//! inside the frame they were parsed from. Every byte offset read comes from
//! a protocol's `field` module.

use core::ops::Range;

use super::checksum;
use super::ethernet::{self, ethertype, is_vlan_tpid};
use super::icmp;
use super::ip::proto;
use super::ipv4;
use super::ipv6;
use super::sctp;
use super::tcp;
use super::udp;
use crate::drop::DropReason;
use crate::net::Ip16;

pub use super::ip::Frag;

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

    /// True for an ICMP error about a packet xlb may have translated
    /// ([`icmp::is_error`]).
    #[inline]
    pub fn is_icmp_error(&self) -> bool {
        self.is_icmp() && icmp::is_error(self.v4, self.icmp_type)
    }

    /// True for an ICMP echo request (of the packet's family).
    #[inline]
    pub fn is_echo_request(&self) -> bool {
        self.is_icmp() && icmp::is_echo_request(self.v4, self.icmp_type)
    }

    /// The packet's IP pseudo-header as a partial checksum (either family).
    #[inline]
    pub fn pseudo_sum(&self) -> u32 {
        if self.v4 {
            checksum::pseudo_v4(
                self.src.v4_octets(),
                self.dst.v4_octets(),
                self.proto,
                self.l4_len,
            )
        } else {
            checksum::pseudo_v6(&self.src.0, &self.dst.0, self.proto, u32::from(self.l4_len))
        }
    }
}

#[inline(always)]
fn be16(a: u8, b: u8) -> u16 {
    u16::from_be_bytes([a, b])
}

/// The big-endian 16-bit field at offset `at` of a header in hand.
#[inline(always)]
fn be16_at<const N: usize>(h: &[u8; N], at: usize) -> u16 {
    be16(h[at], h[at + 1])
}

/// The IPv4 address at offset `at` of a header in hand.
#[inline(always)]
fn v4_at<const N: usize>(h: &[u8; N], at: usize) -> [u8; 4] {
    [h[at], h[at + 1], h[at + 2], h[at + 3]]
}

/// The IPv6 address at `r` (a `field` range) of a header in hand.
#[inline(always)]
fn v6_at<const N: usize>(h: &[u8; N], r: Range<usize>) -> Ip16 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&h[r]);
    Ip16::v6(a)
}

#[inline(always)]
fn chunk<const N: usize>(b: &[u8], off: usize) -> Option<&[u8; N]> {
    b.get(off..)?.first_chunk::<N>()
}

/// Where an IPv4 packet sits in its datagram, from its flags/offset word.
#[inline(always)]
fn v4_frag(flags_offset: u16) -> Frag {
    if flags_offset & ipv4::OFFSET_MASK != 0 {
        Frag::Later
    } else if flags_offset & ipv4::FLAG_MF != 0 {
        Frag::First
    } else {
        Frag::None
    }
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
    let mut et = be16_at(eth, ethernet::field::ETHERTYPE.start);
    let mut off = ethernet::HEADER_LEN;
    let mut vlan = None;
    if is_vlan_tpid(et) {
        for _ in 0..ethernet::MAX_VLAN_TAGS {
            if !is_vlan_tpid(et) {
                break;
            }
            let tag =
                chunk::<{ ethernet::VLAN_TAG_LEN }>(frame, off).ok_or(DropReason::TruncatedL3)?;
            if vlan.is_none() {
                vlan = Some(be16_at(tag, ethernet::vlan_field::TCI.start) & ethernet::VID_MASK);
            }
            et = be16_at(tag, ethernet::vlan_field::ETHERTYPE.start);
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
    use ipv4::field;
    let ip = chunk::<{ ipv4::MIN_HEADER_LEN }>(frame, off).ok_or(DropReason::TruncatedL3)?;
    if ip[field::VER_IHL] >> 4 != 4 {
        return Err(DropReason::BadIpv4Header);
    }
    let avail = frame.len() - off;
    let ihl = ipv4::header_len(ip[field::VER_IHL]);
    if ihl < ipv4::MIN_HEADER_LEN || ihl > avail {
        return Err(DropReason::BadIpv4Header);
    }
    let total = usize::from(be16_at(ip, field::LENGTH.start));
    if total < ihl || total > avail {
        return Err(DropReason::BadIpLength);
    }
    let frag = v4_frag(be16_at(ip, field::FLG_OFF.start));
    let l4_off = off + ihl;
    let mut m = PacketMeta {
        l3_off: off as u16,
        vlan,
        ethertype: ethertype::IPV4,
        v4: true,
        src: Ip16::v4(v4_at(ip, field::SRC.start)),
        dst: Ip16::v4(v4_at(ip, field::DST.start)),
        proto: ip[field::PROTOCOL],
        // off ≤ 22 and ihl ≤ 60, total ≤ 65535: both fit in u16.
        l4_off: l4_off as u16,
        l4_len: (total - ihl) as u16,
        frag,
        frag_id: if frag == Frag::None {
            0
        } else {
            u32::from(be16_at(ip, field::IDENT.start))
        },
        ttl: ip[field::TTL],
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
    use ipv6::field;
    let ip = chunk::<{ ipv6::HEADER_LEN }>(frame, off).ok_or(DropReason::TruncatedL3)?;
    if ip[field::VER_TC_FLOW.start] >> 4 != 6 {
        return Err(DropReason::BadIpv6ExtHeader);
    }
    let plen = usize::from(be16_at(ip, field::LENGTH.start));
    let start = off + ipv6::HEADER_LEN;
    let payload = frame
        .get(start..start + plen)
        .ok_or(DropReason::BadIpLength)?;
    let nh = ip[field::NXT_HDR];
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
        src: v6_at(ip, field::SRC),
        dst: v6_at(ip, field::DST),
        proto,
        // At most 8 extension headers of ≤ 2048 bytes each: fits in u16.
        l4_off: (start + ext_len) as u16,
        l4_len: (plen - ext_len) as u16,
        frag,
        frag_id,
        ttl: ip[field::HOP_LIMIT],
        ..PacketMeta::default()
    };
    if frag != Frag::Later {
        let l4 = payload.get(ext_len..).ok_or(DropReason::BadIpv6ExtHeader)?;
        parse_l4(&mut m, l4)?;
    }
    Ok(m)
}

/// The two ports at the start of a TCP, UDP or SCTP header (the same
/// place in all three).
#[inline(always)]
fn ports_of<const N: usize>(h: &[u8; N]) -> (u16, u16) {
    (
        be16_at(h, tcp::field::SRC_PORT.start),
        be16_at(h, tcp::field::DST_PORT.start),
    )
}

/// The echo identifier of an ICMP header of family `v4` (`Some` only for
/// echo requests and replies, whose identifier plays the ports).
#[inline(always)]
fn echo_id(v4: bool, h: &[u8; icmp::HEADER_LEN]) -> Option<u16> {
    icmp::is_echo(v4, h[icmp::field::TYPE]).then(|| be16_at(h, icmp::field::ECHO_ID.start))
}

/// Fill ports, TCP flags and ICMP type/code from the L4 bytes (cut to the IP payload).
#[inline(always)]
fn parse_l4(m: &mut PacketMeta, l4: &[u8]) -> Result<(), DropReason> {
    match m.proto {
        proto::TCP => {
            let h = l4
                .first_chunk::<{ tcp::MIN_HEADER_LEN }>()
                .ok_or(DropReason::TruncatedL4)?;
            let doff = tcp::header_len(h[tcp::field::DATA_OFF]);
            if doff < tcp::MIN_HEADER_LEN || doff > l4.len() {
                return Err(DropReason::TruncatedL4);
            }
            (m.sport, m.dport) = ports_of(h);
            m.tcp_flags = h[tcp::field::FLAGS];
        }
        proto::UDP => {
            let h = l4
                .first_chunk::<{ udp::HEADER_LEN }>()
                .ok_or(DropReason::TruncatedL4)?;
            // A first fragment's UDP length covers the whole datagram.
            let ulen = usize::from(be16_at(h, udp::field::LENGTH.start));
            if m.frag == Frag::None && (ulen < udp::HEADER_LEN || ulen > l4.len()) {
                return Err(DropReason::TruncatedL4);
            }
            (m.sport, m.dport) = ports_of(h);
        }
        proto::SCTP => {
            let h = l4
                .first_chunk::<{ sctp::HEADER_LEN }>()
                .ok_or(DropReason::TruncatedL4)?;
            (m.sport, m.dport) = ports_of(h);
        }
        proto::ICMP | proto::ICMPV6 if (m.proto == proto::ICMP) == m.v4 => {
            let h = l4
                .first_chunk::<{ icmp::HEADER_LEN }>()
                .ok_or(DropReason::TruncatedL4)?;
            m.icmp_type = h[icmp::field::TYPE];
            m.icmp_code = h[icmp::field::CODE];
            if let Some(id) = echo_id(m.v4, h) {
                m.sport = id;
                m.dport = id;
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
    use ipv4::field;
    let h = frame.first_chunk::<{ FAST_L4 + udp::HEADER_LEN }>()?;
    if be16_at(h, ethernet::field::ETHERTYPE.start) != ethertype::IPV4
        || h[FAST_L3 + field::VER_IHL] != ipv4::VER_IHL_NO_OPTIONS
    {
        return None;
    }
    // No fragment offset, no MF (DF may be set).
    if be16_at(h, FAST_L3 + field::FLG_OFF.start) & (ipv4::OFFSET_MASK | ipv4::FLAG_MF) != 0 {
        return None;
    }
    let total = usize::from(be16_at(h, FAST_L3 + field::LENGTH.start));
    if total > frame.len() - FAST_L3 {
        return None;
    }
    // total ≥ 20 + 8 is checked per protocol below (it may be < 20: malformed).
    let l4_len = total.checked_sub(ipv4::MIN_HEADER_LEN)?;
    let proto = h[FAST_L3 + field::PROTOCOL];
    let tcp_flags = match proto {
        proto::TCP => {
            // The TCP header's flags and data offset lie past the first 8 bytes.
            let t = frame
                .get(FAST_L4..)?
                .first_chunk::<{ tcp::MIN_HEADER_LEN }>()?;
            let doff = tcp::header_len(t[tcp::field::DATA_OFF]);
            if doff < tcp::MIN_HEADER_LEN || doff > l4_len {
                return None;
            }
            t[tcp::field::FLAGS]
        }
        proto::UDP => {
            let ulen = usize::from(be16_at(h, FAST_L4 + udp::field::LENGTH.start));
            if ulen < udp::HEADER_LEN || ulen > l4_len {
                return None;
            }
            0
        }
        _ => return None,
    };
    Some(FastMeta {
        src: v4_at(h, FAST_L3 + field::SRC.start),
        dst: v4_at(h, FAST_L3 + field::DST.start),
        sport: be16_at(h, FAST_L4 + udp::field::SRC_PORT.start),
        dport: be16_at(h, FAST_L4 + udp::field::DST_PORT.start),
        proto,
        tcp_flags,
        ttl: h[FAST_L3 + field::TTL],
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
    /// ICMP/ICMPv6 type of the embedded packet if it is ICMP of its
    /// family (and not a later fragment); else 0.
    pub icmp_type: u8,
    /// Fragment position of the embedded packet.
    pub frag: Frag,
}

impl InnerMeta {
    /// The embedded packet described like an outer one, so the same
    /// rewrites apply to it: its L4 length is what the error carries of it.
    #[inline]
    pub fn as_packet(&self) -> PacketMeta {
        PacketMeta {
            l3_off: self.l3_off,
            ethertype: if self.v4 {
                ethertype::IPV4
            } else {
                ethertype::IPV6
            },
            v4: self.v4,
            src: self.src,
            dst: self.dst,
            proto: self.proto,
            l4_off: self.l4_off,
            l4_len: self.l4_avail,
            sport: self.sport,
            dport: self.dport,
            icmp_type: self.icmp_type,
            frag: self.frag,
            ..PacketMeta::default()
        }
    }
}

/// Find the embedded packet of an ICMP error ([`icmp::is_error`]) that
/// `meta` describes. `None` if `meta` is not such an error, or the
/// embedded header is malformed, of the other family, or too short to hold
/// the ports the flow lookup needs (4 bytes for TCP/UDP/SCTP, 8 for ICMP
/// echo).
pub fn parse_icmp_inner(frame: &[u8], meta: &PacketMeta) -> Option<InnerMeta> {
    if meta.frag != Frag::None || !meta.is_icmp() || !icmp::is_error(meta.v4, meta.icmp_type) {
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
        use ipv4::field;
        let ip = body.first_chunk::<{ ipv4::MIN_HEADER_LEN }>()?;
        let ihl = ipv4::header_len(ip[field::VER_IHL]);
        if ip[field::VER_IHL] >> 4 != 4 || ihl < ipv4::MIN_HEADER_LEN || ihl > body.len() {
            return None;
        }
        m.src = Ip16::v4(v4_at(ip, field::SRC.start));
        m.dst = Ip16::v4(v4_at(ip, field::DST.start));
        m.proto = ip[field::PROTOCOL];
        m.frag = v4_frag(be16_at(ip, field::FLG_OFF.start));
        ihl
    } else {
        use ipv6::field;
        let ip = body.first_chunk::<{ ipv6::HEADER_LEN }>()?;
        if ip[field::VER_TC_FLOW.start] >> 4 != 6 {
            return None;
        }
        m.src = v6_at(ip, field::SRC);
        m.dst = v6_at(ip, field::DST);
        // The embedded packet is usually cut short: walk what is there.
        let e = ipv6::walk_ext(ip[field::NXT_HDR], body.get(ipv6::HEADER_LEN..)?).ok()?;
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
            (m.sport, m.dport) = ports_of(l4.first_chunk::<4>()?);
        }
        proto::ICMP | proto::ICMPV6 if (m.proto == proto::ICMP) == m.v4 => {
            let h = l4.first_chunk::<{ icmp::HEADER_LEN }>()?;
            m.icmp_type = h[icmp::field::TYPE];
            if let Some(id) = echo_id(m.v4, h) {
                m.sport = id;
                m.dport = id;
            }
        }
        _ => {}
    }
    Some(m)
}

/// Where a packet's L4 checksum lives and what it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Checksum {
    /// TCP: covers the pseudo-header.
    Tcp,
    /// UDP: covers the pseudo-header; zero means "none".
    Udp,
    /// ICMPv4: no pseudo-header (RFC 792).
    Icmpv4,
    /// ICMPv6: covers the pseudo-header (RFC 4443 §2.3).
    Icmpv6,
    /// SCTP: CRC32c, no pseudo-header; cannot be updated incrementally.
    Sctp,
    /// No L4 checksum this crate knows, or no L4 header (a later fragment).
    None,
}

impl L4Checksum {
    /// The checksum kind of a parsed packet.
    #[inline]
    pub fn of(meta: &PacketMeta) -> L4Checksum {
        if meta.frag == Frag::Later {
            return L4Checksum::None;
        }
        match (meta.proto, meta.v4) {
            (proto::TCP, _) => L4Checksum::Tcp,
            (proto::UDP, _) => L4Checksum::Udp,
            (proto::ICMP, true) => L4Checksum::Icmpv4,
            (proto::ICMPV6, false) => L4Checksum::Icmpv6,
            (proto::SCTP, _) => L4Checksum::Sctp,
            _ => L4Checksum::None,
        }
    }

    /// Offset of the 16-bit Internet checksum inside the L4 header
    /// (`None` for SCTP, whose CRC is 32 bits, and for no checksum).
    #[inline]
    pub fn field_offset(self) -> Option<usize> {
        match self {
            L4Checksum::Tcp => Some(tcp::field::CHECKSUM.start),
            L4Checksum::Udp => Some(udp::field::CHECKSUM.start),
            L4Checksum::Icmpv4 | L4Checksum::Icmpv6 => Some(icmp::field::CHECKSUM.start),
            L4Checksum::Sctp | L4Checksum::None => None,
        }
    }

    /// Whether the checksum covers the IP pseudo-header (addresses).
    #[inline]
    pub fn covers_pseudo_header(self) -> bool {
        matches!(self, L4Checksum::Tcp | L4Checksum::Udp | L4Checksum::Icmpv6)
    }
}

/// True if the L4 checksum of a non-fragmented packet verifies (a zero IPv4 UDP
/// checksum counts as valid: there is none). False for fragments and for
/// protocols without a known checksum.
pub fn verify_l4_checksum(frame: &[u8], meta: &PacketMeta) -> bool {
    if meta.frag != Frag::None {
        return false;
    }
    let kind = L4Checksum::of(meta);
    let start = usize::from(meta.l4_off);
    let Some(seg) = frame.get(start..start + usize::from(meta.l4_len)) else {
        return false;
    };
    match kind {
        L4Checksum::Sctp => seg
            .get(sctp::field::CHECKSUM)
            .is_some_and(|f| f == checksum::sctp_crc(seg).to_le_bytes()),
        L4Checksum::None => false,
        L4Checksum::Udp if meta.v4 && seg.get(udp::field::CHECKSUM) == Some(&[0, 0][..]) => true,
        _ => {
            let mut s = checksum::sum_bytes(seg);
            if kind.covers_pseudo_header() {
                s = checksum::add(s, meta.pseudo_sum());
            }
            checksum::fold(s) == 0xffff
        }
    }
}
