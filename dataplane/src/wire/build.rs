//! Frame builders for tests, benchmarks and the packet generator: complete
//! Ethernet frames (optional VLAN tags) with IPv4/IPv6 and TCP, UDP, SCTP, ICMP
//! echo or ICMP errors, every checksum correct.
//!
//! [`Builder::write`] writes into the caller's buffer without allocating;
//! [`Builder::to_vec`] is the allocating convenience. Only the checksums of
//! non-fragmented packets are meaningful: a fragment's L4 checksum is computed
//! over the bytes present, a later fragment has no L4 header at all.

use std::net::{IpAddr, SocketAddr};

use super::{checksum, ethernet, icmp, ipv4, ipv6, parse, proto, sctp, tcp, udp};
use crate::net::MacAddr;

/// Why a frame could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// the buffer is too small for the frame
    #[error("the buffer holds {have} bytes, the frame needs {need}")]
    BufferTooSmall {
        /// Bytes the frame needs.
        need: usize,
        /// Bytes the buffer has.
        have: usize,
    },
    /// source, destination and embedded packet must be of one IP family
    #[error("source, destination and embedded packet must be of one IP family")]
    FamilyMismatch,
    /// the IP datagram would be longer than its length field can say
    #[error("the IP datagram would be longer than 65535 bytes")]
    TooLong,
    /// IPv4 options must be a multiple of 4 bytes, at most 40
    #[error("IPv4 options must be a multiple of 4 bytes, at most 40")]
    BadOptions,
    /// the frame to embed in an ICMP error does not parse as IP
    #[error("the frame to embed in an ICMP error does not parse as IP")]
    OriginalNotIp,
}

/// The L4 part of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4<'a> {
    /// TCP with a 20-byte header.
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Sequence number.
        seq: u32,
        /// Acknowledgment number.
        ack: u32,
        /// Flags ([`tcp::flags`]).
        flags: u8,
        /// Window.
        window: u16,
    },
    /// UDP.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Send checksum 0 ("none"; meaningful in IPv4 only).
        no_checksum: bool,
    },
    /// SCTP common header; the payload is taken as the chunks.
    Sctp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Verification tag.
        vtag: u32,
    },
    /// ICMP / ICMPv6 echo request or reply.
    IcmpEcho {
        /// Identifier.
        id: u16,
        /// Sequence number.
        seq: u16,
        /// Reply rather than request.
        reply: bool,
    },
    /// ICMP / ICMPv6 error embedding `original`'s IP header and first 8 L4 bytes.
    IcmpError {
        /// Type.
        ty: u8,
        /// Code.
        code: u8,
        /// The 4 type-specific bytes (MTU, pointer, or 0).
        rest: u32,
        /// A whole Ethernet frame whose packet is embedded.
        original: &'a [u8],
    },
    /// No L4 header: the payload follows the IP header(s) as `proto`.
    Raw {
        /// Protocol number written in the IP header.
        proto: u8,
    },
}

/// An IPv6 extension header to put before the L4 header ([`Builder::ext`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ext {
    /// Hop-by-hop options, `(units + 1) * 8` bytes of PadN.
    HopByHop {
        /// Hdr Ext Len.
        units: u8,
    },
    /// Routing header type 0 segments-left 0 (ignored by receivers), `(units + 1) * 8` bytes.
    Routing {
        /// Hdr Ext Len.
        units: u8,
    },
    /// Destination options, `(units + 1) * 8` bytes of PadN.
    DstOpts {
        /// Hdr Ext Len.
        units: u8,
    },
    /// Authentication header, `(units + 2) * 4` bytes.
    Ah {
        /// Payload Len (must make the header a multiple of 8 bytes in IPv6: even).
        units: u8,
    },
    /// Fragment header.
    Fragment {
        /// Offset in bytes (a multiple of 8).
        offset: u16,
        /// More fragments.
        more: bool,
        /// Identification.
        ident: u32,
    },
}

impl Ext {
    fn len(self) -> usize {
        match self {
            Ext::HopByHop { units } | Ext::Routing { units } | Ext::DstOpts { units } => {
                (usize::from(units) + 1) * 8
            }
            Ext::Ah { units } => (usize::from(units) + 2) * 4,
            Ext::Fragment { .. } => 8,
        }
    }
    fn number(self) -> u8 {
        match self {
            Ext::HopByHop { .. } => ipv6::next_header::HOP_BY_HOP,
            Ext::Routing { .. } => ipv6::next_header::ROUTING,
            Ext::DstOpts { .. } => ipv6::next_header::DST_OPTS,
            Ext::Ah { .. } => ipv6::next_header::AH,
            Ext::Fragment { .. } => ipv6::next_header::FRAGMENT,
        }
    }
    /// Write the header (with `next` as its next header) into `b` (exactly `len()` bytes).
    fn write(self, next: u8, b: &mut [u8]) {
        b.fill(0);
        b[0] = next;
        match self {
            Ext::HopByHop { units } | Ext::DstOpts { units } => {
                b[1] = units;
                // One PadN option covering the 6 bytes after the first two,
                // plus the rest (RFC 8200 §4.2).
                b[2] = 1;
                b[3] = (b.len() - 4) as u8;
            }
            Ext::Routing { units } => {
                b[1] = units;
            }
            Ext::Ah { units } => {
                b[1] = units;
            }
            Ext::Fragment {
                offset,
                more,
                ident,
            } => {
                let w = (offset & 0xfff8) | u16::from(more);
                b[2..4].copy_from_slice(&w.to_be_bytes());
                b[4..8].copy_from_slice(&ident.to_be_bytes());
            }
        }
    }
}

/// A frame to build. Start from [`Builder::tcp`], [`Builder::udp`],
/// [`Builder::sctp`], [`Builder::icmp_echo`] or [`Builder::icmp_error`] and
/// adjust with the chained setters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Builder<'a> {
    /// Source MAC.
    pub src_mac: MacAddr,
    /// Destination MAC.
    pub dst_mac: MacAddr,
    /// VLAN tags, outer first (an outer tag before an inner one is 802.1ad).
    pub vlans: [Option<u16>; 2],
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// TTL / hop limit.
    pub ttl: u8,
    /// IPv4 identification.
    pub ident: u16,
    /// IPv4 Don't Fragment.
    pub dont_frag: bool,
    /// Fragment (offset in bytes, more fragments): IPv4 flags, or an IPv6
    /// fragment header after `ext`. A non-zero offset drops the L4 header.
    pub frag: Option<(u16, bool)>,
    /// IPv4 options (a multiple of 4 bytes, at most 40).
    pub ipv4_options: &'a [u8],
    /// IPv6 extension headers, in order, before any fragment header.
    pub ext: &'a [Ext],
    /// The L4 part.
    pub l4: L4<'a>,
    /// Bytes after the L4 header.
    pub payload: &'a [u8],
}

const DEFAULT_SRC_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 1]);
const DEFAULT_DST_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 2]);

impl<'a> Builder<'a> {
    fn base(src: IpAddr, dst: IpAddr, l4: L4<'a>) -> Builder<'a> {
        Builder {
            src_mac: DEFAULT_SRC_MAC,
            dst_mac: DEFAULT_DST_MAC,
            vlans: [None, None],
            src,
            dst,
            ttl: 64,
            ident: 0x1234,
            dont_frag: false,
            frag: None,
            ipv4_options: &[],
            ext: &[],
            l4,
            payload: &[],
        }
    }

    /// TCP from `src` to `dst` with `flags`.
    pub fn tcp(src: SocketAddr, dst: SocketAddr, flags: u8) -> Builder<'a> {
        Builder::base(
            src.ip(),
            dst.ip(),
            L4::Tcp {
                sport: src.port(),
                dport: dst.port(),
                seq: 1,
                ack: 0,
                flags,
                window: 65535,
            },
        )
    }

    /// UDP from `src` to `dst`.
    pub fn udp(src: SocketAddr, dst: SocketAddr) -> Builder<'a> {
        Builder::base(
            src.ip(),
            dst.ip(),
            L4::Udp {
                sport: src.port(),
                dport: dst.port(),
                no_checksum: false,
            },
        )
    }

    /// SCTP from `src` to `dst` with verification tag `vtag`.
    pub fn sctp(src: SocketAddr, dst: SocketAddr, vtag: u32) -> Builder<'a> {
        Builder::base(
            src.ip(),
            dst.ip(),
            L4::Sctp {
                sport: src.port(),
                dport: dst.port(),
                vtag,
            },
        )
    }

    /// ICMP (IPv4) or ICMPv6 (IPv6) echo request (or reply).
    pub fn icmp_echo(src: IpAddr, dst: IpAddr, id: u16, seq: u16, reply: bool) -> Builder<'a> {
        Builder::base(src, dst, L4::IcmpEcho { id, seq, reply })
    }

    /// ICMP / ICMPv6 error of type `ty`, code `code` about the packet in the
    /// Ethernet frame `original`.
    pub fn icmp_error(
        src: IpAddr,
        dst: IpAddr,
        ty: u8,
        code: u8,
        original: &'a [u8],
    ) -> Builder<'a> {
        Builder::base(
            src,
            dst,
            L4::IcmpError {
                ty,
                code,
                rest: 0,
                original,
            },
        )
    }

    /// Set the MACs.
    pub fn macs(mut self, src: MacAddr, dst: MacAddr) -> Self {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }
    /// One 802.1Q tag.
    pub fn vlan(mut self, id: u16) -> Self {
        self.vlans = [Some(id), None];
        self
    }
    /// Two tags: an 802.1ad outer tag and an 802.1Q inner tag.
    pub fn qinq(mut self, outer: u16, inner: u16) -> Self {
        self.vlans = [Some(outer), Some(inner)];
        self
    }
    /// The payload after the L4 header.
    pub fn payload(mut self, p: &'a [u8]) -> Self {
        self.payload = p;
        self
    }
    /// TTL / hop limit.
    pub fn ttl(mut self, t: u8) -> Self {
        self.ttl = t;
        self
    }
    /// TCP sequence and acknowledgment numbers (ignored for other protocols).
    pub fn seq_ack(mut self, s: u32, a: u32) -> Self {
        if let L4::Tcp { seq, ack, .. } = &mut self.l4 {
            *seq = s;
            *ack = a;
        }
        self
    }
    /// Make this a fragment: offset in bytes (a multiple of 8), more fragments.
    pub fn fragment(mut self, offset: u16, more: bool) -> Self {
        self.frag = Some((offset & 0xfff8, more));
        self
    }
    /// IPv6 extension headers.
    pub fn ext(mut self, e: &'a [Ext]) -> Self {
        self.ext = e;
        self
    }
    /// IPv4 options.
    pub fn ipv4_options(mut self, o: &'a [u8]) -> Self {
        self.ipv4_options = o;
        self
    }
    /// Send UDP with checksum 0 (IPv4 "no checksum").
    pub fn no_udp_checksum(mut self) -> Self {
        if let L4::Udp { no_checksum, .. } = &mut self.l4 {
            *no_checksum = true;
        }
        self
    }
    /// The 4 type-specific bytes of an ICMP error (MTU for frag-needed / too-big).
    pub fn icmp_rest(mut self, r: u32) -> Self {
        if let L4::IcmpError { rest, .. } = &mut self.l4 {
            *rest = r;
        }
        self
    }

    fn v4(&self) -> Result<bool, BuildError> {
        match (self.src, self.dst) {
            (IpAddr::V4(_), IpAddr::V4(_)) => Ok(true),
            (IpAddr::V6(_), IpAddr::V6(_)) => Ok(false),
            _ => Err(BuildError::FamilyMismatch),
        }
    }

    fn later_fragment(&self) -> bool {
        matches!(self.frag, Some((o, _)) if o != 0)
    }

    /// The embedded bytes of an ICMP error: the original IP header(s) + 8 bytes.
    fn embedded(&self, v4: bool) -> Result<&'a [u8], BuildError> {
        let L4::IcmpError { original, .. } = self.l4 else {
            return Ok(&[]);
        };
        let m = parse(original).map_err(|_| BuildError::OriginalNotIp)?;
        if !m.is_ip() {
            return Err(BuildError::OriginalNotIp);
        }
        if m.v4 != v4 {
            return Err(BuildError::FamilyMismatch);
        }
        let end = (usize::from(m.l4_off) + 8).min(usize::from(m.l4_off) + usize::from(m.l4_len));
        original
            .get(usize::from(m.l3_off)..end)
            .ok_or(BuildError::OriginalNotIp)
    }

    fn l4_header_len(&self) -> usize {
        if self.later_fragment() {
            return 0;
        }
        match self.l4 {
            L4::Tcp { .. } => tcp::MIN_HEADER_LEN,
            L4::Udp { .. } => udp::HEADER_LEN,
            L4::Sctp { .. } => sctp::HEADER_LEN,
            L4::IcmpEcho { .. } | L4::IcmpError { .. } => icmp::HEADER_LEN,
            L4::Raw { .. } => 0,
        }
    }

    fn l4_proto(&self, v4: bool) -> u8 {
        match self.l4 {
            L4::Tcp { .. } => proto::TCP,
            L4::Udp { .. } => proto::UDP,
            L4::Sctp { .. } => proto::SCTP,
            L4::IcmpEcho { .. } | L4::IcmpError { .. } if v4 => proto::ICMP,
            L4::IcmpEcho { .. } | L4::IcmpError { .. } => proto::ICMPV6,
            L4::Raw { proto } => proto,
        }
    }

    fn eth_len(&self) -> usize {
        let tags = self.vlans.iter().filter(|v| v.is_some()).count();
        ethernet::HEADER_LEN + tags * ethernet::VLAN_TAG_LEN
    }

    fn ip_header_len(&self, v4: bool) -> usize {
        if v4 {
            ipv4::MIN_HEADER_LEN + self.ipv4_options.len()
        } else {
            let frag = if self.frag.is_some() { 8 } else { 0 };
            ipv6::HEADER_LEN + self.ext.iter().map(|e| e.len()).sum::<usize>() + frag
        }
    }

    /// Length of the frame [`Builder::write`] would produce.
    pub fn frame_len(&self) -> Result<usize, BuildError> {
        let v4 = self.v4()?;
        let emb = self.embedded(v4)?.len();
        Ok(self.eth_len()
            + self.ip_header_len(v4)
            + self.l4_header_len()
            + emb
            + self.payload.len())
    }

    /// Write the frame into `buf`; returns its length.
    pub fn write(&self, buf: &mut [u8]) -> Result<usize, BuildError> {
        let v4 = self.v4()?;
        if v4 && (!self.ipv4_options.len().is_multiple_of(4) || self.ipv4_options.len() > 40) {
            return Err(BuildError::BadOptions);
        }
        let emb = self.embedded(v4)?;
        let eth_len = self.eth_len();
        let ip_hdr = self.ip_header_len(v4);
        let l4_hdr = self.l4_header_len();
        let l4_len = l4_hdr + emb.len() + self.payload.len();
        let ip_len = ip_hdr + l4_len;
        let need = eth_len + ip_len;
        if (v4 && ip_len > 65535) || (!v4 && ip_len - ipv6::HEADER_LEN > 65535) {
            return Err(BuildError::TooLong);
        }
        let have = buf.len();
        let frame = buf
            .get_mut(..need)
            .ok_or(BuildError::BufferTooSmall { need, have })?;
        frame.fill(0);
        let (eth, rest) = frame.split_at_mut(eth_len);
        let (ip, l4) = rest.split_at_mut(ip_hdr);
        self.write_ethernet(eth, v4);
        let l4_proto = self.l4_proto(v4);
        if v4 {
            self.write_ipv4(ip, l4_proto, ip_len);
        } else {
            self.write_ipv6(ip, l4_proto, ip_len);
        }
        let (hdr, body) = l4.split_at_mut(l4_hdr);
        body[..emb.len()].copy_from_slice(emb);
        body[emb.len()..].copy_from_slice(self.payload);
        if l4_hdr != 0 {
            self.write_l4(hdr, v4);
            self.fill_l4_checksum(l4, ip, v4, l4_proto);
        }
        Ok(need)
    }

    /// Build into a new `Vec`.
    pub fn to_vec(&self) -> Result<Vec<u8>, BuildError> {
        let mut v = vec![0u8; self.frame_len()?];
        let n = self.write(&mut v)?;
        v.truncate(n);
        Ok(v)
    }

    fn write_ethernet(&self, eth: &mut [u8], v4: bool) {
        eth[ethernet::field::DST].copy_from_slice(&self.dst_mac.0);
        eth[ethernet::field::SRC].copy_from_slice(&self.src_mac.0);
        let mut at = ethernet::field::ETHERTYPE.start;
        let two = self.vlans.iter().all(|v| v.is_some());
        for (i, id) in self.vlans.iter().flatten().enumerate() {
            let tpid = if two && i == 0 {
                ethernet::ethertype::QINQ
            } else {
                ethernet::ethertype::VLAN
            };
            eth[at..at + 2].copy_from_slice(&tpid.to_be_bytes());
            eth[at + 2..at + 4].copy_from_slice(&(id & 0x0fff).to_be_bytes());
            at += ethernet::VLAN_TAG_LEN;
        }
        let et = if v4 {
            ethernet::ethertype::IPV4
        } else {
            ethernet::ethertype::IPV6
        };
        eth[at..at + 2].copy_from_slice(&et.to_be_bytes());
    }

    fn write_ipv4(&self, ip: &mut [u8], l4_proto: u8, ip_len: usize) {
        let (IpAddr::V4(s), IpAddr::V4(d)) = (self.src, self.dst) else {
            return;
        };
        let mut p = ipv4::Packet::new_unchecked(ip);
        p.set_version_and_header_len(ipv4::MIN_HEADER_LEN + self.ipv4_options.len());
        p.set_total_len(ip_len as u16);
        p.set_ident(self.ident);
        let (off, more) = self.frag.unwrap_or((0, false));
        p.set_frag(self.dont_frag, more, off);
        p.set_ttl(self.ttl);
        p.set_protocol(l4_proto);
        p.set_src_addr(s.octets());
        p.set_dst_addr(d.octets());
        let ip = p.into_inner();
        ip[ipv4::MIN_HEADER_LEN..].copy_from_slice(self.ipv4_options);
        let mut p = ipv4::Packet::new_unchecked(ip);
        p.fill_checksum();
    }

    fn write_ipv6(&self, ip: &mut [u8], l4_proto: u8, ip_len: usize) {
        let (IpAddr::V6(s), IpAddr::V6(d)) = (self.src, self.dst) else {
            return;
        };
        let (fixed, mut exts) = ip.split_at_mut(ipv6::HEADER_LEN);
        let mut p = ipv6::Packet::new_unchecked(fixed);
        p.set_version_tc_flow(0, 0x12345);
        p.set_payload_len((ip_len - ipv6::HEADER_LEN) as u16);
        p.set_hop_limit(self.ttl);
        p.set_src_addr(s.octets());
        p.set_dst_addr(d.octets());
        let frag = self.frag.map(|(offset, more)| Ext::Fragment {
            offset,
            more,
            ident: u32::from(self.ident),
        });
        let n = self.ext.len() + usize::from(frag.is_some());
        let nth = |i: usize| self.ext.get(i).copied().or(if i < n { frag } else { None });
        // Each header's next-header is the following header's number.
        for i in 0..n {
            let Some(e) = nth(i) else { break };
            let next = nth(i + 1).map_or(l4_proto, Ext::number);
            let (h, rest) = exts.split_at_mut(e.len());
            e.write(next, h);
            exts = rest;
        }
        let first = nth(0).map_or(l4_proto, Ext::number);
        p.set_next_header(first);
    }

    fn write_l4(&self, hdr: &mut [u8], v4: bool) {
        match self.l4 {
            L4::Tcp {
                sport,
                dport,
                seq,
                ack,
                flags,
                window,
            } => {
                let mut t = tcp::Packet::new_unchecked(hdr);
                t.set_src_port(sport);
                t.set_dst_port(dport);
                t.set_seq_number(seq);
                t.set_ack_number(ack);
                t.set_header_len(tcp::MIN_HEADER_LEN);
                t.set_flags(flags);
                t.set_window(window);
            }
            L4::Udp { sport, dport, .. } => {
                let mut u = udp::Packet::new_unchecked(hdr);
                u.set_src_port(sport);
                u.set_dst_port(dport);
            }
            L4::Sctp { sport, dport, vtag } => {
                let mut s = sctp::Packet::new_unchecked(hdr);
                s.set_src_port(sport);
                s.set_dst_port(dport);
                s.set_verification_tag(vtag);
            }
            L4::IcmpEcho { id, seq, reply } => {
                let ty = match (v4, reply) {
                    (true, false) => icmp::v4::ECHO_REQUEST,
                    (true, true) => icmp::v4::ECHO_REPLY,
                    (false, false) => icmp::v6::ECHO_REQUEST,
                    (false, true) => icmp::v6::ECHO_REPLY,
                };
                let mut i = icmp::Packet::new_unchecked(hdr);
                i.set_msg_type(ty);
                i.set_echo_id(id);
                i.set_echo_seq(seq);
            }
            L4::IcmpError { ty, code, rest, .. } => {
                let mut i = icmp::Packet::new_unchecked(hdr);
                i.set_msg_type(ty);
                i.set_code(code);
                i.set_rest(rest);
            }
            L4::Raw { .. } => {}
        }
    }

    /// `seg` is the whole L4 segment; `ip` the IP header(s), for the pseudo-header.
    fn fill_l4_checksum(&self, seg: &mut [u8], ip: &[u8], v4: bool, l4_proto: u8) {
        let l4_len = seg.len();
        if let L4::Udp { .. } = self.l4 {
            seg[udp::field::LENGTH].copy_from_slice(&(l4_len as u16).to_be_bytes());
        }
        if let L4::Sctp { .. } = self.l4 {
            let c = checksum::sctp_crc(seg);
            seg[sctp::field::CHECKSUM].copy_from_slice(&c.to_le_bytes());
            return;
        }
        if let L4::Udp {
            no_checksum: true, ..
        } = self.l4
        {
            return;
        }
        let (off, pseudo) = match (self.l4, v4) {
            (L4::Tcp { .. }, _) => (16, true),
            (L4::Udp { .. }, _) => (6, true),
            (L4::IcmpEcho { .. } | L4::IcmpError { .. }, true) => (2, false),
            (L4::IcmpEcho { .. } | L4::IcmpError { .. }, false) => (2, true),
            _ => return,
        };
        let mut s = checksum::sum_bytes(seg);
        if pseudo {
            let ps = if v4 {
                let mut a = [0u8; 4];
                let mut b = [0u8; 4];
                a.copy_from_slice(&ip[ipv4::field::SRC]);
                b.copy_from_slice(&ip[ipv4::field::DST]);
                checksum::pseudo_v4(a, b, l4_proto, l4_len as u16)
            } else {
                let mut a = [0u8; 16];
                let mut b = [0u8; 16];
                a.copy_from_slice(&ip[ipv6::field::SRC]);
                b.copy_from_slice(&ip[ipv6::field::DST]);
                checksum::pseudo_v6(&a, &b, l4_proto, l4_len as u32)
            };
            s = checksum::add(s, ps);
        }
        let mut c = !checksum::fold(s);
        if let L4::Udp { .. } = self.l4 {
            c = checksum::udp_nonzero(c);
        }
        seg[off..off + 2].copy_from_slice(&c.to_be_bytes());
    }
}

/// An ARP request (RFC 826) from `src_mac`/`src_ip` asking for `target_ip`,
/// broadcast; returns the frame length (42).
pub fn arp_request(
    buf: &mut [u8],
    src_mac: MacAddr,
    src_ip: [u8; 4],
    target_ip: [u8; 4],
) -> Result<usize, BuildError> {
    use crate::wire::arp;
    let need = ethernet::HEADER_LEN + arp::PACKET_LEN;
    let have = buf.len();
    let f = buf
        .get_mut(..need)
        .ok_or(BuildError::BufferTooSmall { need, have })?;
    f.fill(0);
    f[ethernet::field::DST].copy_from_slice(&MacAddr::BROADCAST.0);
    f[ethernet::field::SRC].copy_from_slice(&src_mac.0);
    f[ethernet::field::ETHERTYPE].copy_from_slice(&ethernet::ethertype::ARP.to_be_bytes());
    let a = &mut f[ethernet::HEADER_LEN..];
    a[arp::field::HTYPE].copy_from_slice(&arp::HTYPE_ETHERNET.to_be_bytes());
    a[arp::field::PTYPE].copy_from_slice(&ethernet::ethertype::IPV4.to_be_bytes());
    a[arp::field::HLEN] = 6;
    a[arp::field::PLEN] = 4;
    a[arp::field::OPER].copy_from_slice(&arp::OP_REQUEST.to_be_bytes());
    a[arp::field::SHA].copy_from_slice(&src_mac.0);
    a[arp::field::SPA].copy_from_slice(&src_ip);
    a[arp::field::TPA].copy_from_slice(&target_ip);
    Ok(need)
}
