//! Round trips (builder → parser), a cross-check against etherparse, malformed
//! frames, and differential checksum tests (incremental vs. full recompute).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;

use super::build::{Builder, Ext, L4};
use super::checksum;
use super::rewrite;
use super::*;
use crate::drop::DropReason;
use crate::net::{Ip16, MacAddr};
use ethernet::ethertype;

/// RFC 1071 word-by-word reference sum (no shortcuts).
fn reference_fold(data: &[u8]) -> u32 {
    let mut sum: u32 = 0;
    for w in data.chunks(2) {
        let hi = u32::from(w[0]) << 8;
        let lo = w.get(1).map_or(0, |&b| u32::from(b));
        sum += hi | lo;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

/// Verify the L4 checksum of `frame` independently of `checksum.rs`.
fn reference_l4_ok(frame: &[u8], m: &PacketMeta) -> bool {
    let seg = &frame[usize::from(m.l4_off)..usize::from(m.l4_off) + usize::from(m.l4_len)];
    if m.proto == 132 {
        let mut z = seg.to_vec();
        let got = u32::from_le_bytes([z[8], z[9], z[10], z[11]]);
        z[8..12].fill(0);
        return checksum::crc32c(&z) == got;
    }
    let mut buf = Vec::new();
    let pseudo = !(m.v4 && m.proto == 1);
    if pseudo {
        if m.v4 {
            buf.extend_from_slice(&m.src.v4_octets());
            buf.extend_from_slice(&m.dst.v4_octets());
            buf.extend_from_slice(&[0, m.proto]);
            buf.extend_from_slice(&m.l4_len.to_be_bytes());
        } else {
            buf.extend_from_slice(&m.src.0);
            buf.extend_from_slice(&m.dst.0);
            buf.extend_from_slice(&u32::from(m.l4_len).to_be_bytes());
            buf.extend_from_slice(&[0, 0, 0, m.proto]);
        }
    }
    buf.extend_from_slice(seg);
    reference_fold(&buf) == 0xffff
}

#[derive(Debug, Clone)]
struct Spec {
    v4: bool,
    a4: [Ipv4Addr; 2],
    a6: [Ipv6Addr; 2],
    sport: u16,
    dport: u16,
    kind: u8,
    flags: u8,
    seq: u32,
    ack: u32,
    ttl: u8,
    vlans: u8,
    vid: [u16; 2],
    payload: Vec<u8>,
    opts_words: u8,
    exts: Vec<Ext>,
}

fn ext_strategy() -> impl Strategy<Value = Vec<Ext>> {
    (
        any::<bool>(),
        0u8..3,
        any::<bool>(),
        0u8..2,
        any::<bool>(),
        0u8..3,
        any::<bool>(),
    )
        .prop_map(|(hbh, hu, rt, ru, dst, du, ah)| {
            let mut v = Vec::new();
            if hbh {
                v.push(Ext::HopByHop { units: hu });
            }
            if dst {
                v.push(Ext::DstOpts { units: du });
            }
            if rt {
                v.push(Ext::Routing { units: ru });
            }
            if ah {
                v.push(Ext::Ah { units: 4 });
            }
            v
        })
}

fn spec_strategy() -> impl Strategy<Value = Spec> {
    (
        (any::<bool>(), any::<[u32; 2]>(), any::<[u128; 2]>()),
        (
            any::<u16>(),
            any::<u16>(),
            0u8..7,
            any::<u8>(),
            any::<u32>(),
            any::<u32>(),
            1u8..=255,
        ),
        (0u8..3, [0u16..4096, 0u16..4096]),
        proptest::collection::vec(any::<u8>(), 0..300),
        (0u8..11, ext_strategy()),
    )
        .prop_map(
            |(
                (v4, a4, a6),
                (sport, dport, kind, flags, seq, ack, ttl),
                (vlans, vid),
                payload,
                (opts_words, exts),
            )| Spec {
                v4,
                a4: [Ipv4Addr::from(a4[0]), Ipv4Addr::from(a4[1])],
                a6: [Ipv6Addr::from(a6[0]), Ipv6Addr::from(a6[1])],
                sport,
                dport,
                kind,
                flags,
                seq,
                ack,
                ttl,
                vlans,
                vid,
                payload,
                opts_words,
                exts,
            },
        )
}

const OPTS: [u8; 40] = [1; 40]; // NOP options (RFC 791)

impl Spec {
    fn addrs(&self) -> (IpAddr, IpAddr) {
        if self.v4 {
            (self.a4[0].into(), self.a4[1].into())
        } else {
            (self.a6[0].into(), self.a6[1].into())
        }
    }
    fn builder(&self) -> Builder<'_> {
        let (s, d) = self.addrs();
        let ss = SocketAddr::new(s, self.sport);
        let ds = SocketAddr::new(d, self.dport);
        let mut b = match self.kind {
            0 => Builder::tcp(ss, ds, self.flags).seq_ack(self.seq, self.ack),
            1 => Builder::udp(ss, ds),
            2 => Builder::udp(ss, ds).no_udp_checksum(),
            3 => Builder::sctp(ss, ds, self.seq),
            4 => Builder::icmp_echo(s, d, self.sport, self.dport, false),
            5 => Builder::icmp_echo(s, d, self.sport, self.dport, true),
            _ => Builder {
                l4: L4::Raw { proto: 47 },
                ..Builder::udp(ss, ds)
            },
        };
        b = b.ttl(self.ttl).payload(&self.payload);
        b = match self.vlans {
            0 => b,
            1 => b.vlan(self.vid[0]),
            _ => b.qinq(self.vid[0], self.vid[1]),
        };
        if self.v4 {
            b = b.ipv4_options(&OPTS[..usize::from(self.opts_words) * 4]);
        } else {
            b = b.ext(&self.exts);
        }
        b
    }
    fn expect_ports(&self) -> (u16, u16) {
        match self.kind {
            0..=3 => (self.sport, self.dport),
            4 | 5 => (self.sport, self.sport),
            _ => (0, 0),
        }
    }
    fn proto(&self) -> u8 {
        match (self.kind, self.v4) {
            (0, _) => 6,
            (1 | 2, _) => 17,
            (3, _) => 132,
            (4 | 5, true) => 1,
            (4 | 5, false) => 58,
            _ => 47,
        }
    }
}

fn check_round_trip(s: &Spec, f: &[u8]) -> Result<PacketMeta, TestCaseError> {
    let m = parse(f).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
    let (src, dst) = s.addrs();
    prop_assert_eq!(m.v4, s.v4);
    prop_assert_eq!(m.src, Ip16::from(src));
    prop_assert_eq!(m.dst, Ip16::from(dst));
    prop_assert_eq!(m.proto, s.proto());
    prop_assert_eq!((m.sport, m.dport), s.expect_ports());
    prop_assert_eq!(m.ttl, s.ttl);
    prop_assert_eq!(m.frag, Frag::None);
    prop_assert_eq!(m.tcp_flags, if s.kind == 0 { s.flags } else { 0 });
    prop_assert_eq!(m.vlan, if s.vlans == 0 { None } else { Some(s.vid[0]) });
    let eth_len = 14 + 4 * usize::from(s.vlans);
    prop_assert_eq!(usize::from(m.l3_off), eth_len);
    prop_assert_eq!(usize::from(m.l4_off) + usize::from(m.l4_len), f.len());
    let hdr = match s.kind {
        0 => 20,
        1 | 2 => 8,
        3 => 12,
        4 | 5 => 8,
        _ => 0,
    };
    prop_assert_eq!(usize::from(m.l4_len), hdr + s.payload.len());
    if matches!(s.kind, 4 | 5) {
        let t = match (s.v4, s.kind) {
            (true, 4) => 8,
            (true, _) => 0,
            (false, 4) => 128,
            (false, _) => 129,
        };
        prop_assert_eq!(m.icmp_type, t);
    } else {
        prop_assert_eq!(m.icmp_type, 0);
    }
    if s.v4 {
        let ip = ipv4::Packet::new_checked(&f[usize::from(m.l3_off)..])
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert!(ip.verify_checksum());
        prop_assert_eq!(
            reference_fold(&f[usize::from(m.l3_off)..usize::from(m.l4_off)]),
            0xffff
        );
    }
    if s.kind == 2 && s.v4 {
        prop_assert_eq!(
            &f[usize::from(m.l4_off) + 6..usize::from(m.l4_off) + 8],
            &[0u8, 0][..]
        );
    } else if s.kind != 6 && s.kind != 2 {
        prop_assert!(reference_l4_ok(f, &m), "L4 checksum");
        prop_assert!(verify_l4_checksum(f, &m));
    }
    Ok(m)
}

fn cross_check_etherparse(s: &Spec, f: &[u8], m: &PacketMeta) -> Result<(), TestCaseError> {
    use etherparse::{LinkExtSlice, NetSlice, SlicedPacket, TransportSlice};
    let p = SlicedPacket::from_ethernet(f)
        .map_err(|e| TestCaseError::fail(format!("etherparse: {e:?}")))?;
    let vids: Vec<u16> = p
        .link_exts
        .iter()
        .filter_map(|e| match e {
            LinkExtSlice::Vlan(v) => Some(u16::from(v.vlan_identifier())),
            _ => None,
        })
        .collect();
    prop_assert_eq!(vids.first().copied(), m.vlan);
    prop_assert_eq!(vids.len(), usize::from(s.vlans));
    match p.net {
        Some(NetSlice::Ipv4(ip)) => {
            prop_assert!(m.v4);
            prop_assert_eq!(Ip16::v4(ip.header().source()), m.src);
            prop_assert_eq!(Ip16::v4(ip.header().destination()), m.dst);
            prop_assert_eq!(ip.header().ttl(), m.ttl);
            prop_assert_eq!(ip.payload().ip_number.0, m.proto);
            prop_assert_eq!(ip.payload().payload.len(), usize::from(m.l4_len));
        }
        Some(NetSlice::Ipv6(ip)) => {
            prop_assert!(!m.v4);
            prop_assert_eq!(Ip16::v6(ip.header().source()), m.src);
            prop_assert_eq!(Ip16::v6(ip.header().destination()), m.dst);
            prop_assert_eq!(ip.header().hop_limit(), m.ttl);
            prop_assert_eq!(ip.payload().ip_number.0, m.proto);
            prop_assert_eq!(ip.payload().payload.len(), usize::from(m.l4_len));
        }
        other => return Err(TestCaseError::fail(format!("etherparse net {other:?}"))),
    }
    match p.transport {
        Some(TransportSlice::Tcp(t)) => {
            prop_assert_eq!((t.source_port(), t.destination_port()), (m.sport, m.dport));
            // etherparse's own checksum code agrees with ours.
            let c = if m.v4 {
                t.calc_checksum_ipv4(m.src.v4_octets(), m.dst.v4_octets())
            } else {
                t.calc_checksum_ipv6(m.src.0, m.dst.0)
            };
            prop_assert_eq!(c.ok(), Some(t.checksum()));
        }
        Some(TransportSlice::Udp(u)) => {
            prop_assert_eq!((u.source_port(), u.destination_port()), (m.sport, m.dport));
            if u.checksum() != 0 {
                let h = u.to_header();
                let c = if m.v4 {
                    h.calc_checksum_ipv4_raw(m.src.v4_octets(), m.dst.v4_octets(), u.payload())
                } else {
                    h.calc_checksum_ipv6_raw(m.src.0, m.dst.0, u.payload())
                };
                prop_assert_eq!(c.ok(), Some(u.checksum()));
            }
        }
        Some(TransportSlice::Icmpv4(i)) => {
            prop_assert_eq!((i.type_u8(), i.code_u8()), (m.icmp_type, m.icmp_code));
        }
        Some(TransportSlice::Icmpv6(i)) => {
            prop_assert_eq!((i.type_u8(), i.code_u8()), (m.icmp_type, m.icmp_code));
        }
        None => prop_assert!(matches!(m.proto, 132 | 47)),
    }
    Ok(())
}

proptest! {
    #[test]
    fn build_parse_round_trip_and_etherparse_agree(s in spec_strategy()) {
        let f = s.builder().to_vec().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(f.len(), s.builder().frame_len().map_err(|e| TestCaseError::fail(e.to_string()))?);
        let m = check_round_trip(&s, &f)?;
        cross_check_etherparse(&s, &f, &m)?;
        // write() into a larger buffer gives the same bytes and length.
        let mut big = vec![0xaau8; f.len() + 17];
        let n = s.builder().write(&mut big).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&big[..n], &f[..]);
        prop_assert!(s.builder().write(&mut big[..f.len() - 1]).is_err());
        // Ethernet padding after the datagram changes nothing.
        let mut padded = f.clone();
        padded.extend_from_slice(&[0u8; 20]);
        prop_assert_eq!(parse(&padded), Ok(m));
    }

    #[test]
    fn every_truncation_gives_the_right_reason(s in spec_strategy()) {
        let f = s.builder().to_vec().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let m = parse(&f).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let l3 = usize::from(m.l3_off);
        let ip_hdr_min = if s.v4 { 20 } else { 40 };
        let ip_hdr_full = if s.v4 { 20 + 4 * usize::from(s.opts_words) } else { 40 };
        for n in 0..f.len() {
            let want = if n < 14 {
                DropReason::TruncatedEthernet
            } else if n < l3 + ip_hdr_min {
                DropReason::TruncatedL3
            } else if n < l3 + ip_hdr_full {
                DropReason::BadIpv4Header
            } else {
                DropReason::BadIpLength
            };
            prop_assert_eq!(parse(&f[..n]), Err(want), "cut at {}", n);
        }
        // Cut and fix the IP length to match: the L4 header (or the IPv6
        // extension chain) is what is now short.
        let l4 = usize::from(m.l4_off);
        let l4_hdr = match s.kind { 0 => 20, 1 | 2 => 8, 3 => 12, 4 | 5 => 8, _ => 0 };
        for n in l3 + ip_hdr_full..l4 + l4_hdr {
            let mut g = f[..n].to_vec();
            if s.v4 {
                g[l3 + 2..l3 + 4].copy_from_slice(&((n - l3) as u16).to_be_bytes());
            } else {
                g[l3 + 4..l3 + 6].copy_from_slice(&((n - l3 - 40) as u16).to_be_bytes());
            }
            let want = if n < l4 { DropReason::BadIpv6ExtHeader } else { DropReason::TruncatedL4 };
            prop_assert_eq!(parse(&g), Err(want), "cut+fix at {}", n);
        }
    }

    #[test]
    fn icmp_errors_embed_and_expose_the_original(s in spec_strategy(), ty in 0u8..4, mtu in any::<u16>()) {
        prop_assume!(s.kind <= 5);
        let orig = s.builder().to_vec().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let om = parse(&orig).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let (router, client): (IpAddr, IpAddr) = if s.v4 {
            (Ipv4Addr::new(192, 0, 2, 1).into(), s.a4[0].into())
        } else {
            ("2001:db8::1".parse::<Ipv6Addr>().expect("literal").into(), s.a6[0].into())
        };
        let (t, code) = match (s.v4, ty) {
            (true, 0) => (icmp::v4::DEST_UNREACH, icmp::v4::CODE_FRAG_NEEDED),
            (true, 1) => (icmp::v4::TIME_EXCEEDED, 0),
            (true, _) => (icmp::v4::DEST_UNREACH, 3),
            (false, 0) => (icmp::v6::PACKET_TOO_BIG, 0),
            (false, 1) => (icmp::v6::TIME_EXCEEDED, 0),
            (false, _) => (icmp::v6::DEST_UNREACH, 4),
        };
        let e = Builder::icmp_error(router, client, t, code, &orig).icmp_rest(u32::from(mtu)).vlan(7).to_vec()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let m = parse(&e).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!((m.icmp_type, m.icmp_code), (t, code));
        prop_assert!(reference_l4_ok(&e, &m));
        let inner = parse_icmp_inner(&e, &m).ok_or_else(|| TestCaseError::fail("no inner"))?;
        prop_assert_eq!(inner.src, om.src);
        prop_assert_eq!(inner.dst, om.dst);
        prop_assert_eq!(inner.proto, om.proto);
        prop_assert_eq!((inner.sport, inner.dport), (om.sport, om.dport));
        prop_assert_eq!(inner.l4_avail, 8);
        // The embedded bytes are the original's, header for header.
        let hdr_len = usize::from(om.l4_off - om.l3_off);
        prop_assert_eq!(
            &e[usize::from(inner.l3_off)..usize::from(inner.l4_off) + 8],
            &orig[usize::from(om.l3_off)..usize::from(om.l3_off) + hdr_len + 8]
        );
        let v = icmp::Packet::new_checked(&e[usize::from(m.l4_off)..]).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        if s.v4 { prop_assert_eq!(v.v4_mtu(), mtu) } else { prop_assert_eq!(v.v6_mtu(), u32::from(mtu)) }
        // Not an error: no inner packet.
        prop_assert_eq!(parse_icmp_inner(&orig, &om), None);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        exercise(&data);
    }

    #[test]
    fn arbitrary_l3_after_a_valid_ethernet_header(et in 0u8..3, body in proptest::collection::vec(any::<u8>(), 0..200), vers in any::<bool>()) {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        f.extend_from_slice(&[[0x08, 0x00], [0x86, 0xdd], [0x81, 0x00]][usize::from(et)]);
        let mut body = body;
        if vers && !body.is_empty() {
            body[0] = if et == 0 { 0x45 } else { 0x60 };
        }
        f.extend_from_slice(&body);
        exercise(&f);
    }

    #[test]
    fn mutated_valid_frames_never_panic(s in spec_strategy(), muts in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let mut f = s.builder().to_vec().map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (at, v) in muts {
            let i = at % f.len();
            f[i] = v;
        }
        exercise(&f);
    }

    /// The pipeline's incremental NAT rewrite of one address (and maybe a
    /// port or echo id) leaves every checksum as a full recompute makes it.
    #[test]
    fn incremental_nat_rewrites_equal_full_recompute(
        s in spec_strategy(),
        new_a4 in any::<[u32; 2]>(),
        new_a6 in any::<[u128; 2]>(),
        new_ports in any::<[u16; 2]>(),
        which in 0u8..4,
    ) {
        prop_assume!(s.kind <= 5);
        let mut f = s.builder().to_vec().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let m = parse(&f).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let (l3, l4) = (usize::from(m.l3_off), usize::from(m.l4_off));
        let before_l4 = f[l4..l4 + 8].to_vec();
        // Rewrite an address (and maybe a port / echo id), checksums incrementally.
        let side = usize::from(which & 1);
        let new_ip = if s.v4 {
            Ip16::v4(new_a4[side].to_be_bytes())
        } else {
            Ip16(new_a6[side].to_be_bytes())
        };
        let mut x = rewrite::Xlat { src: m.src, dst: m.dst, sport: m.sport, dport: m.dport };
        if side == 0 { x.src = new_ip } else { x.dst = new_ip }
        if which & 2 != 0 {
            let p = new_ports[side];
            if matches!(s.kind, 4 | 5) {
                (x.sport, x.dport) = (p, p);
            } else if side == 0 {
                x.sport = p;
            } else {
                x.dport = p;
            }
        }
        rewrite::rewrite_l3l4(&mut f, &m, &x);
        let m2 = parse(&f).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!((m2.src, m2.dst, m2.sport, m2.dport), (x.src, x.dst, x.sport, x.dport));
        // Full recompute on a copy.
        let mut g = f.clone();
        prop_assert!(rewrite::fill_ipv4_checksum(&mut g, &m2) == s.v4);
        if s.kind == 2 {
            // UDP without checksum keeps none.
            prop_assert_eq!(&f[l4 + 6..l4 + 8], &[0u8, 0][..]);
            prop_assert_eq!(&before_l4[6..8], &[0u8, 0][..]);
        } else {
            prop_assert!(rewrite::fill_l4_checksum(&mut g, &m2));
            prop_assert_eq!(&f, &g);
            prop_assert!(reference_l4_ok(&f, &m2));
        }
        if s.v4 {
            prop_assert_eq!(reference_fold(&f[l3..l4]), 0xffff);
        }
    }
}

/// Run every entry point on `data`; none may panic, offsets must stay in bounds.
fn exercise(data: &[u8]) {
    let r = parse(data);
    if let Ok(m) = r {
        assert!(usize::from(m.l3_off) <= data.len());
        if m.is_ip() {
            assert!(usize::from(m.l4_off) + usize::from(m.l4_len) <= data.len());
            if m.frag == Frag::Later {
                assert_eq!((m.sport, m.dport), (0, 0));
            }
        }
        let x = rewrite::Xlat {
            src: m.dst,
            dst: m.src,
            sport: 7,
            dport: m.sport,
        };
        if let Some(i) = parse_icmp_inner(data, &m) {
            assert!(usize::from(i.l4_off) + usize::from(i.l4_avail) <= data.len());
            assert!(i.l3_off < i.l4_off);
            let mut c = data.to_vec();
            rewrite::translate_icmp_error(&mut c, &m, &i, &x);
        }
        let mut c = data.to_vec();
        rewrite::fill_ipv4_checksum(&mut c, &m);
        rewrite::fill_l4_checksum(&mut c, &m);
        verify_l4_checksum(&c, &m);
        if m.is_ip() {
            rewrite::forward(&mut c, &m, &x, MacAddr::BROADCAST, MacAddr::default());
        }
        assert_eq!(parse(&c).map(|m| m.l4_off), Ok(m.l4_off));
    }
    let mut c = data.to_vec();
    rewrite::fill_ipv4_checksum(
        &mut c,
        &PacketMeta {
            v4: true,
            ethertype: 0x0800,
            l3_off: 14,
            l4_len: 500,
            l4_off: 30,
            ..PacketMeta::default()
        },
    );
    rewrite::fill_l4_checksum(
        &mut c,
        &PacketMeta {
            proto: 6,
            l4_off: 20,
            l4_len: 400,
            ..PacketMeta::default()
        },
    );
    // The views: check_len, then every accessor.
    if let Some(p) = data.get(ethernet::HEADER_LEN..) {
        if let Ok(ip) = ipv4::Packet::new_checked(p) {
            let _ = (
                ip.tos(),
                ip.ident(),
                ip.dont_frag(),
                ip.more_frags(),
                ip.frag_offset(),
                ip.ttl(),
            );
            let _ = (
                ip.options(),
                ip.verify_checksum(),
                ip.payload(),
                ip.src_addr(),
                ip.dst_addr(),
                ip.checksum(),
            );
        }
        if let Ok(ip) = ipv6::Packet::new_checked(p) {
            let _ = (
                ip.traffic_class(),
                ip.flow_label(),
                ip.hop_limit(),
                ip.src_addr(),
                ip.dst_addr(),
                ip.ext(),
            );
        }
    }
    if let Ok(t) = tcp::Packet::new_checked(data) {
        let _ = (
            t.src_port(),
            t.seq_number(),
            t.ack_number(),
            t.flags(),
            t.window(),
            t.urgent(),
            t.options(),
            t.payload(),
        );
    }
    if let Ok(u) = udp::Packet::new_checked(data) {
        let _ = (
            u.src_port(),
            u.dst_port(),
            u.len(),
            u.checksum(),
            u.payload(),
        );
    }
    if let Ok(s) = sctp::Packet::new_checked(data) {
        let _ = (s.verification_tag(), s.verify_checksum(), s.chunks());
    }
    if let Ok(i) = icmp::Packet::new_checked(data) {
        let _ = (
            i.msg_type(),
            i.code(),
            i.echo_id(),
            i.echo_seq(),
            i.v4_mtu(),
            i.v6_mtu(),
            i.embedded(),
        );
    }
    let _ = ipv6::walk_ext(data.first().copied().unwrap_or(0), data);
}

fn v4_tcp() -> Vec<u8> {
    Builder::tcp(
        "10.0.0.1:1234".parse().expect("addr"),
        "10.0.0.2:80".parse().expect("addr"),
        tcp::flags::SYN,
    )
    .to_vec()
    .expect("valid")
}

#[test]
fn empty_and_short_frames() {
    assert_eq!(parse(&[]), Err(DropReason::TruncatedEthernet));
    assert_eq!(parse(&[0; 13]), Err(DropReason::TruncatedEthernet));
    let m = parse(&[0; 14]).expect("ethertype 0 is just not IP");
    assert_eq!(m, PacketMeta::non_ip(0, 14));
}

#[test]
fn bad_ipv4_headers() {
    let f = v4_tcp();
    let mut g = f.clone();
    g[14] = 0x44; // IHL 4
    assert_eq!(parse(&g), Err(DropReason::BadIpv4Header));
    g[14] = 0x65; // version 6 in an IPv4 frame
    assert_eq!(parse(&g), Err(DropReason::BadIpv4Header));
    let mut g = f.clone();
    g[16..18].copy_from_slice(&((f.len() - 14 + 1) as u16).to_be_bytes()); // total > frame
    assert_eq!(parse(&g), Err(DropReason::BadIpLength));
    g[16..18].copy_from_slice(&19u16.to_be_bytes()); // total < header
    assert_eq!(parse(&g), Err(DropReason::BadIpLength));
    g[16..18].copy_from_slice(&30u16.to_be_bytes()); // total leaves 10 bytes for TCP
    assert_eq!(parse(&g), Err(DropReason::TruncatedL4));
    let mut g = f.clone();
    g[14 + 20 + 12] = 0x40; // TCP data offset 4
    assert_eq!(parse(&g), Err(DropReason::TruncatedL4));
    g[14 + 20 + 12] = 0x60; // data offset 6: past the segment
    assert_eq!(parse(&g), Err(DropReason::TruncatedL4));
}

#[test]
fn bad_ipv6_lengths_and_ext_chains() {
    let f = Builder::udp(
        "[2001:db8::1]:5000".parse().expect("addr"),
        "[2001:db8::2]:53".parse().expect("addr"),
    )
    .payload(b"hello")
    .to_vec()
    .expect("valid");
    let plen = f.len() - 54;
    let mut g = f.clone();
    g[18..20].copy_from_slice(&((plen + 1) as u16).to_be_bytes());
    assert_eq!(parse(&g), Err(DropReason::BadIpLength));
    g[18..20].copy_from_slice(&((plen - 1) as u16).to_be_bytes()); // UDP length now past the payload
    assert_eq!(parse(&g), Err(DropReason::TruncatedL4));
    let mut g = f.clone();
    g[14] = 0x40;
    assert_eq!(parse(&g), Err(DropReason::BadIpv6ExtHeader));
    // Nine destination-options headers: more than MAX_EXT_HEADERS.
    let nine = [Ext::DstOpts { units: 0 }; 9];
    let f = Builder::udp(
        "[2001:db8::1]:5000".parse().expect("addr"),
        "[2001:db8::2]:53".parse().expect("addr"),
    )
    .ext(&nine)
    .to_vec()
    .expect("valid");
    assert_eq!(parse(&f), Err(DropReason::BadIpv6ExtHeader));
    let eight = [Ext::DstOpts { units: 0 }; 8];
    let f = Builder::udp(
        "[2001:db8::1]:5000".parse().expect("addr"),
        "[2001:db8::2]:53".parse().expect("addr"),
    )
    .ext(&eight)
    .to_vec()
    .expect("valid");
    let m = parse(&f).expect("eight is the limit");
    assert_eq!((m.proto, m.dport, usize::from(m.l4_off)), (17, 53, 54 + 64));
    // Hop-by-hop after another header.
    let late = [Ext::DstOpts { units: 0 }, Ext::HopByHop { units: 0 }];
    let f = Builder::udp(
        "[2001:db8::1]:5000".parse().expect("addr"),
        "[2001:db8::2]:53".parse().expect("addr"),
    )
    .ext(&late)
    .to_vec()
    .expect("valid");
    assert_eq!(parse(&f), Err(DropReason::BadIpv6ExtHeader));
}

#[test]
fn fragments_of_both_families() {
    for (src, dst) in [
        ("10.0.0.1:1", "10.0.0.2:2"),
        ("[2001:db8::1]:1", "[2001:db8::2]:2"),
    ] {
        let (s, d): (SocketAddr, SocketAddr) =
            (src.parse().expect("addr"), dst.parse().expect("addr"));
        let first = Builder::udp(s, d)
            .payload(&[9; 64])
            .fragment(0, true)
            .to_vec()
            .expect("valid");
        let m = parse(&first).expect("first fragment");
        assert_eq!((m.frag, m.sport, m.dport, m.proto), (Frag::First, 1, 2, 17));
        let later = Builder::udp(s, d)
            .payload(&[9; 64])
            .fragment(72, false)
            .to_vec()
            .expect("valid");
        let m = parse(&later).expect("later fragment");
        assert_eq!(
            (m.frag, m.sport, m.dport, m.proto, m.l4_len),
            (Frag::Later, 0, 0, 17, 64)
        );
        assert!(!rewrite::fill_l4_checksum(&mut later.clone(), &m));
        // A later fragment of a few bytes is fine: there is no L4 header to check.
        let tiny = Builder::tcp(s, d, 0)
            .payload(&[1; 3])
            .fragment(8, true)
            .to_vec()
            .expect("valid");
        assert_eq!(parse(&tiny).map(|m| m.frag), Ok(Frag::Later));
    }
    // IPv6 atomic fragment (offset 0, M=0): a whole datagram.
    let atomic = Builder::udp(
        "[2001:db8::1]:1".parse().expect("addr"),
        "[2001:db8::2]:2".parse().expect("addr"),
    )
    .fragment(0, false)
    .to_vec()
    .expect("valid");
    let m = parse(&atomic).expect("atomic");
    assert_eq!(
        (m.frag, m.sport, usize::from(m.l4_off)),
        (Frag::None, 1, 14 + 48)
    );
}

#[test]
fn jumbo_frame_and_padding() {
    let payload = vec![0x5a; 9000 - 14 - 20 - 20];
    let f = Builder::tcp(
        "10.0.0.1:1".parse().expect("addr"),
        "10.0.0.2:2".parse().expect("addr"),
        tcp::flags::ACK,
    )
    .payload(&payload)
    .to_vec()
    .expect("valid");
    assert_eq!(f.len(), 9000);
    let m = parse(&f).expect("jumbo");
    assert_eq!(usize::from(m.l4_len), 9000 - 34);
    assert!(verify_l4_checksum(&f, &m));
    // A 60-byte minimum frame carrying 2 bytes of UDP data: 16 bytes of padding.
    let mut f = Builder::udp(
        "10.0.0.1:1".parse().expect("addr"),
        "10.0.0.2:2".parse().expect("addr"),
    )
    .payload(&[1, 2])
    .to_vec()
    .expect("valid");
    f.resize(60, 0);
    let m = parse(&f).expect("padded");
    assert_eq!(m.l4_len, 10);
    assert!(verify_l4_checksum(&f, &m));
}

#[test]
fn non_ip_frames_pass_with_only_ethertype_and_l3_off() {
    let mut buf = [0u8; 64];
    let n = build::arp_request(
        &mut buf,
        MacAddr([2, 0, 0, 0, 0, 9]),
        [10, 0, 0, 9],
        [10, 0, 0, 1],
    )
    .expect("fits");
    let f = buf[..n].to_vec();
    let m = parse(&f).expect("arp");
    assert_eq!(m, PacketMeta::non_ip(ethernet::ethertype::ARP, 14));
    assert!(!m.is_ip());
    // The request as RFC 826 lays it out: Ethernet, IPv4, lengths 6 and 4,
    // a request, from 10.0.0.9 at 02:..:09 for 10.0.0.1, broadcast.
    assert_eq!(&f[..6], &[0xff; 6]);
    assert_eq!(&f[14..22], &[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    assert_eq!(&f[22..28], &[2, 0, 0, 0, 0, 9]);
    assert_eq!(&f[28..32], &[10, 0, 0, 9]);
    assert_eq!(&f[32..38], &[0; 6]);
    assert_eq!(&f[38..42], &[10, 0, 0, 1]);
    // LLDP on a VLAN: vlan reported, the rest zero.
    let mut l = vec![0u8; 40];
    l[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
    l[14..16].copy_from_slice(&0x2005u16.to_be_bytes());
    l[16..18].copy_from_slice(&ethernet::ethertype::LLDP.to_be_bytes());
    let m = parse(&l).expect("lldp");
    assert_eq!(
        m,
        PacketMeta {
            vlan: Some(5),
            ..PacketMeta::non_ip(ethernet::ethertype::LLDP, 18)
        }
    );
}

#[test]
fn udp_zero_checksum_rules() {
    let (s, d): (SocketAddr, SocketAddr) = (
        "10.0.0.1:1".parse().expect("addr"),
        "10.0.0.2:2".parse().expect("addr"),
    );
    let mut f = Builder::udp(s, d)
        .no_udp_checksum()
        .payload(b"x")
        .to_vec()
        .expect("valid");
    let m = parse(&f).expect("udp");
    assert!(verify_l4_checksum(&f, &m), "zero = none in IPv4");
    let to = |src: [u8; 4]| rewrite::Xlat {
        src: Ip16::v4(src),
        dst: m.dst,
        sport: m.sport,
        dport: m.dport,
    };
    rewrite::rewrite_l3l4(&mut f, &m, &to([10, 9, 9, 9]));
    assert_eq!(&f[40..42], &[0, 0]);
    // Likewise in IPv6, where a zero is invalid or an RFC 6935 tunnel's.
    let v6 = |a: &str| SocketAddr::new(a.parse().expect("addr"), 1);
    let mut f6 = Builder::udp(v6("2001:db8::1"), v6("2001:db8::2"))
        .no_udp_checksum()
        .payload(b"x")
        .to_vec()
        .expect("valid");
    let m6 = parse(&f6).expect("udp");
    let x6 = rewrite::Xlat {
        src: Ip16::from("2001:db8::9".parse::<IpAddr>().expect("addr")),
        ..to([0; 4])
    };
    rewrite::rewrite_l3l4(&mut f6, &m6, &rewrite::Xlat { dst: m6.dst, ..x6 });
    assert_eq!(&f6[60..62], &[0, 0]);
    // Find a payload whose real checksum is zero: it must go out as 0xFFFF.
    for x in 0..=u16::MAX {
        let p = x.to_be_bytes();
        let f = Builder::udp(s, d).payload(&p).to_vec().expect("valid");
        let mut z = f.clone();
        z[40..42].fill(0);
        let m = parse(&f).expect("udp");
        let sum = checksum::add(checksum::sum_bytes(&z[34..]), m.pseudo_sum());
        if !checksum::fold(sum) == 0 {
            assert_eq!(&f[40..42], &[0xff, 0xff]);
            assert!(verify_l4_checksum(&f, &m));
            // An incremental update from 0xFFFF stays valid and never emits 0.
            let mut g = f.clone();
            rewrite::rewrite_l3l4(&mut g, &m, &to([10, 0, 0, 7]));
            let m2 = parse(&g).expect("udp");
            assert!(verify_l4_checksum(&g, &m2));
            return;
        }
    }
    panic!("no payload with a zero checksum found");
}

#[test]
fn sctp_checksum_round_trip() {
    let f = Builder::sctp(
        "10.0.0.1:1".parse().expect("addr"),
        "10.0.0.2:2".parse().expect("addr"),
        77,
    )
    .payload(&[1, 0, 0, 4])
    .to_vec()
    .expect("valid");
    let m = parse(&f).expect("sctp");
    let s = sctp::Packet::new_checked(&f[34..]).expect("sctp");
    assert!(s.verify_checksum());
    assert_eq!(s.verification_tag(), 77);
    // A NAT of the port recomputes the CRC (it cannot be updated).
    let mut g = f.clone();
    let x = rewrite::Xlat {
        src: m.src,
        dst: m.dst,
        sport: 9,
        dport: m.dport,
    };
    rewrite::rewrite_l3l4(&mut g, &m, &x);
    let m2 = parse(&g).expect("sctp");
    assert_eq!(m2.sport, 9);
    assert!(verify_l4_checksum(&g, &m2));
    g[40] ^= 1;
    assert!(!verify_l4_checksum(&g, &m2));
    assert!(rewrite::fill_l4_checksum(&mut g, &m2));
    assert!(verify_l4_checksum(&g, &m2));
}

/// Seed corpus for the fuzz targets: one file per interesting frame shape.
/// `scripts/fuzz-smoke.sh` runs this when `dataplane/fuzz/seeds/` is empty;
/// set `XLB_FUZZ_SEEDS` to write elsewhere.
#[test]
#[ignore = "writes files; run by scripts/fuzz-smoke.sh"]
fn write_fuzz_seeds() {
    let dir = std::env::var("XLB_FUZZ_SEEDS")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds").to_string());
    std::fs::create_dir_all(&dir).expect("seed dir");
    let mut frames: Vec<(String, Vec<u8>)> = Vec::new();
    let pairs: [(&str, &str); 2] = [
        ("10.0.0.1:40000", "10.0.0.2:80"),
        ("[2001:db8::1]:40000", "[2001:db8::2]:80"),
    ];
    let exts = [
        Ext::HopByHop { units: 0 },
        Ext::DstOpts { units: 1 },
        Ext::Routing { units: 0 },
        Ext::Ah { units: 4 },
    ];
    for (fam, (s, d)) in ["v4", "v6"].iter().zip(pairs) {
        let (s, d): (SocketAddr, SocketAddr) = (s.parse().expect("addr"), d.parse().expect("addr"));
        let b = [
            ("tcp_syn", Builder::tcp(s, d, tcp::flags::SYN)),
            (
                "tcp_ack_data",
                Builder::tcp(s, d, tcp::flags::ACK | tcp::flags::PSH)
                    .payload(b"GET / HTTP/1.1\r\n\r\n"),
            ),
            ("udp", Builder::udp(s, d).payload(b"dns?")),
            ("udp_nocsum", Builder::udp(s, d).no_udp_checksum()),
            (
                "sctp",
                Builder::sctp(s, d, 0xdead_beef)
                    .payload(&[1, 0, 0, 20, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1]),
            ),
            (
                "echo",
                Builder::icmp_echo(s.ip(), d.ip(), 7, 1, false).payload(b"ping"),
            ),
            ("vlan_tcp", Builder::tcp(s, d, tcp::flags::SYN).vlan(100)),
            ("qinq_udp", Builder::udp(s, d).qinq(10, 20)),
            (
                "frag_first",
                Builder::udp(s, d).payload(&[0; 32]).fragment(0, true),
            ),
            (
                "frag_later",
                Builder::udp(s, d).payload(&[0; 32]).fragment(40, false),
            ),
        ];
        for (name, b) in b {
            let f = b.to_vec().expect("valid");
            if name == "tcp_syn" {
                let e = Builder::icmp_error(
                    d.ip(),
                    s.ip(),
                    if s.is_ipv4() { 3 } else { 2 },
                    if s.is_ipv4() { 4 } else { 0 },
                    &f,
                )
                .icmp_rest(1400)
                .to_vec()
                .expect("valid");
                frames.push((format!("{fam}_icmp_error"), e));
            }
            frames.push((format!("{fam}_{name}"), f));
        }
    }
    let (s, d): (SocketAddr, SocketAddr) = (
        "[2001:db8::1]:1".parse().expect("addr"),
        "[2001:db8::2]:2".parse().expect("addr"),
    );
    frames.push((
        "v6_ext_chain".into(),
        Builder::tcp(s, d, tcp::flags::SYN)
            .ext(&exts)
            .to_vec()
            .expect("valid"),
    ));
    let (s, d): (SocketAddr, SocketAddr) = (
        "10.0.0.1:1".parse().expect("addr"),
        "10.0.0.2:2".parse().expect("addr"),
    );
    frames.push((
        "v4_options".into(),
        Builder::tcp(s, d, tcp::flags::SYN)
            .ipv4_options(&[1; 12])
            .to_vec()
            .expect("valid"),
    ));
    let mut arp = [0u8; 42];
    build::arp_request(
        &mut arp,
        MacAddr([2, 0, 0, 0, 0, 1]),
        [10, 0, 0, 1],
        [10, 0, 0, 2],
    )
    .expect("fits");
    frames.push(("arp_request".into(), arp.to_vec()));
    for (name, f) in frames {
        std::fs::write(format!("{dir}/{name}"), f).expect("write seed");
    }
}

/// The spec with one end's address and port replaced (`dst`: the
/// destination's); for ICMP echo the "port" is the identifier, kept in
/// `sport`.
fn rewritten(s: &Spec, dst: bool, a4: Ipv4Addr, a6: Ipv6Addr, port: u16) -> Spec {
    let mut t = s.clone();
    let i = usize::from(dst);
    t.a4[i] = a4;
    t.a6[i] = a6;
    match (s.kind, dst) {
        (4 | 5, _) | (_, false) => t.sport = port,
        (_, true) => t.dport = port,
    }
    t
}

/// The translation from `s`'s addresses and ports to `t`'s.
fn xlat_of(t: &Spec) -> rewrite::Xlat {
    let (src, dst) = t.addrs();
    let (sport, dport) = t.expect_ports();
    rewrite::Xlat {
        src: src.into(),
        dst: dst.into(),
        sport,
        dport,
    }
}

proptest! {
    /// NAT in place gives the very bytes the builder makes for the translated
    /// packet: every checksum matches a full recompute. Likewise for an ICMP
    /// error about the packet: the packet it quotes is translated (its
    /// checksum too where the error carries it) and the error travels from
    /// the far end of the translation.
    #[test]
    fn nat_rewrite_equals_a_fresh_build(
        s in spec_strategy(),
        a4 in any::<u32>(),
        a6 in any::<u128>(),
        port in any::<u16>(),
        dst in any::<bool>(),
    ) {
        prop_assume!(s.kind <= 5);
        let (a4, a6) = (Ipv4Addr::from(a4), Ipv6Addr::from(a6));
        let t = rewritten(&s, dst, a4, a6, port);
        let want = t.builder().to_vec().map_err(|e| TestCaseError::fail(e.to_string()))?;

        let mut f = s.builder().to_vec().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let m = parse(&f).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        rewrite::rewrite_l3l4(&mut f, &m, &xlat_of(&t));
        prop_assert_eq!(&f, &want);

        // The same translation on the packet quoted by an ICMP error. The
        // error is about a packet from the translated end, so it travels
        // against the translation: from `t`'s destination to its source.
        let (router, host): (IpAddr, IpAddr) = if s.v4 {
            (Ipv4Addr::new(192, 0, 2, 1).into(), Ipv4Addr::new(198, 51, 100, 9).into())
        } else {
            ("2001:db8::1".parse::<Ipv6Addr>().expect("literal").into(), "2001:db8::9".parse::<Ipv6Addr>().expect("literal").into())
        };
        let ty = if s.v4 { icmp::v4::DEST_UNREACH } else { icmp::v6::DEST_UNREACH };
        let orig = s.builder().to_vec().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut e = Builder::icmp_error(router, host, ty, 3, &orig).to_vec().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = xlat_of(&t).reversed();
        let want = Builder::icmp_error(back.src.into(), back.dst.into(), ty, 3, &want)
            .ttl(63)
            .to_vec()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let om = parse(&e).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let im = parse_icmp_inner(&e, &om).ok_or_else(|| TestCaseError::fail("no inner"))?;
        rewrite::translate_icmp_error(&mut e, &om, &im, &back);
        prop_assert_eq!(&e, &want);
    }
}

/// A later fragment has no L4 header: its NAT changes the IP header alone
/// (addresses, checksum), whatever the ports asked for.
#[test]
fn a_later_fragment_changes_only_its_ip_header() {
    let (s, d): (SocketAddr, SocketAddr) = (
        "10.0.0.1:1".parse().expect("addr"),
        "10.0.0.2:2".parse().expect("addr"),
    );
    let later = Builder::udp(s, d)
        .payload(&[0; 16])
        .fragment(8, false)
        .to_vec()
        .expect("valid");
    let m = parse(&later).expect("fragment");
    let mut f = later.clone();
    let x = rewrite::Xlat {
        src: m.src,
        dst: Ip16::v4([10, 0, 0, 3]),
        sport: 9,
        dport: 9,
    };
    rewrite::rewrite_l3l4(&mut f, &m, &x);
    let ip = ipv4::Packet::new_checked(&f[14..]).expect("ipv4");
    assert!(ip.verify_checksum());
    assert_eq!(ip.dst_addr(), [10, 0, 0, 3]);
    assert_eq!(f[34..], later[34..], "the fragment's data is left alone");
}

/// `parse_fast` accepts exactly the frames of its shape that `parse` accepts,
/// and reports what `parse` does.
fn check_fast_agrees(f: &[u8]) -> Result<(), TestCaseError> {
    let full = parse(f);
    let shape = matches!(&full, Ok(m) if m.v4 && m.vlan.is_none() && m.ethertype == ethertype::IPV4
        && m.l4_off == 34 && m.frag == Frag::None && matches!(m.proto, proto::TCP | proto::UDP));
    match parse_fast(f) {
        Some(q) => {
            let m =
                full.map_err(|e| TestCaseError::fail(format!("fast accepted, parse: {e:?}")))?;
            prop_assert!(shape, "fast accepted a frame of another shape: {:?}", m);
            prop_assert_eq!(q.to_meta(), m);
        }
        None => prop_assert!(!shape, "fast refused a frame of its shape: {:?}", full),
    }
    Ok(())
}

proptest! {
    #[test]
    fn parse_fast_agrees_with_parse(
        s in spec_strategy(),
        flips in proptest::collection::vec((0usize..64, any::<u8>()), 0..3),
        cut in 0usize..80,
    ) {
        let mut f = s.builder().to_vec().map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_fast_agrees(&f)?;
        for (at, b) in flips {
            if let Some(x) = f.get_mut(at) {
                *x = b;
            }
        }
        check_fast_agrees(&f)?;
        f.truncate(f.len().saturating_sub(cut));
        check_fast_agrees(&f)?;
    }
}
