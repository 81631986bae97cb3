//! Frame generation for xlb-pktgen: one template per (flow, frame size),
//! built with the dataplane's [`Builder`] (so headers and checksums are the
//! same code the golden tests trust), then stamped per packet with
//! (flow, sequence, TX time) right after the L4 header. The stamp changes
//! the L4 checksum, which is fixed incrementally (RFC 1624 eqn. 3: the
//! template's stamp bytes are zero, so the new sum is the old one plus the
//! stamp's words), so every frame on the wire carries valid checksums.
//!
//! Sizes are Ethernet sizes on the wire *including* the 4-byte FCS (the
//! usual "64-byte frame"); the bytes handed to the NIC are 4 fewer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use serde::Serialize;
use xlb_dataplane::net::MacAddr;
use xlb_dataplane::wire::build::Builder;
use xlb_dataplane::wire::checksum::{add, fold, sum_bytes};

/// Bytes of the per-packet stamp: magic u16, flow u32, seq u32, tx_ns u64.
pub const STAMP_LEN: usize = 18;
/// First two bytes of every stamp ("XG").
pub const MAGIC: u16 = 0x5847;
/// Frame check sequence: on the wire, not in the buffer.
pub const FCS_LEN: usize = 4;
/// Largest wire size (standard MTU 1500 + Ethernet + FCS).
pub const MAX_WIRE_SIZE: u16 = 1518;
/// Smallest wire size Ethernet allows.
pub const MIN_WIRE_SIZE: u16 = 64;
/// Simple IMIX (7:4:1 of 64, 570 and 1518 bytes), interleaved so every
/// window of a dozen packets has the mix.
pub const IMIX: [u16; 12] = [64, 570, 64, 64, 1518, 64, 570, 64, 64, 570, 64, 570];
/// Most flows one generator keeps state for.
pub const MAX_FLOWS: u32 = 1 << 20;

/// Why frames could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// a frame size outside 64..=1518 or not "imix"
    #[error("frame size {0:?}: want 64..=1518 or \"imix\"")]
    BadSize(String),
    /// flow count 0 or too many for the source port range
    #[error("{0}")]
    BadFlows(String),
    /// source and destination families differ
    #[error("source {0} and destination {1} are of different address families")]
    Family(IpAddr, IpAddr),
    /// the dataplane builder refused the frame
    #[error("building the frame template: {0}")]
    Build(#[from] xlb_dataplane::wire::build::BuildError),
}

/// What to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// UDP datagrams.
    Udp,
    /// TCP SYNs (a connection-opening storm over the same K flows).
    Syn,
    /// TCP ACKs with data (an established stream; the sequence advances).
    Ack,
}

/// Frame size: fixed, or the IMIX cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeSpec {
    /// Every frame this many bytes on the wire.
    Fixed(u16),
    /// [`IMIX`].
    Imix,
}

impl FromStr for SizeSpec {
    type Err = GenError;
    fn from_str(s: &str) -> Result<SizeSpec, GenError> {
        if s.eq_ignore_ascii_case("imix") {
            return Ok(SizeSpec::Imix);
        }
        match s.parse::<u16>() {
            Ok(n) if (MIN_WIRE_SIZE..=MAX_WIRE_SIZE).contains(&n) => Ok(SizeSpec::Fixed(n)),
            _ => Err(GenError::BadSize(s.to_string())),
        }
    }
}

impl std::fmt::Display for SizeSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SizeSpec::Fixed(n) => write!(f, "{n}"),
            SizeSpec::Imix => f.write_str("imix"),
        }
    }
}

/// The per-packet stamp carried right after the L4 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp {
    /// Flow index (0..K).
    pub flow: u32,
    /// Sequence number within the flow, from 0.
    pub seq: u32,
    /// CLOCK_MONOTONIC at TX, nanoseconds.
    pub tx_ns: u64,
}

impl Stamp {
    /// Encode (big-endian, so the words the checksum sees are the wire's).
    pub fn encode(&self) -> [u8; STAMP_LEN] {
        let mut b = [0u8; STAMP_LEN];
        b[0..2].copy_from_slice(&MAGIC.to_be_bytes());
        b[2..6].copy_from_slice(&self.flow.to_be_bytes());
        b[6..10].copy_from_slice(&self.seq.to_be_bytes());
        b[10..18].copy_from_slice(&self.tx_ns.to_be_bytes());
        b
    }

    /// Decode a stamp from the start of `b`; `None` if too short or not ours.
    pub fn decode(b: &[u8]) -> Option<Stamp> {
        let b = b.get(..STAMP_LEN)?;
        if b[0..2] != MAGIC.to_be_bytes() {
            return None;
        }
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[10..18]);
        Some(Stamp {
            flow: u32_at(2),
            seq: u32_at(6),
            tx_ns: u64::from_be_bytes(ts),
        })
    }
}

/// Where the K flows go and come from.
#[derive(Debug, Clone)]
pub struct FlowSpec {
    /// Source MAC.
    pub src_mac: MacAddr,
    /// Destination MAC (the next hop: balancer or receiver).
    pub dst_mac: MacAddr,
    /// First source address.
    pub src_ip: IpAddr,
    /// Source addresses used (consecutive from `src_ip`); flows cycle over them.
    pub src_ips: u32,
    /// First source port.
    pub sport_min: u16,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// Number of flows K.
    pub flows: u32,
    /// What to send.
    pub proto: Proto,
}

impl FlowSpec {
    /// Source of flow `i`: address `src_ip + i % src_ips`, port
    /// `sport_min + i / src_ips`.
    pub fn source(&self, i: u32) -> SocketAddr {
        let n = self.src_ips.max(1);
        let ip = add_ip(self.src_ip, i % n);
        let port = u32::from(self.sport_min) + i / n;
        SocketAddr::new(ip, port as u16)
    }

    fn validate(&self) -> Result<(), GenError> {
        if self.flows == 0 || self.flows > MAX_FLOWS {
            return Err(GenError::BadFlows(format!(
                "flows {} not in 1..={MAX_FLOWS}",
                self.flows
            )));
        }
        let per_ip = self.flows.div_ceil(self.src_ips.max(1));
        if u32::from(self.sport_min) + per_ip > 65536 || self.sport_min == 0 {
            return Err(GenError::BadFlows(format!(
                "{} flows over {} source addresses need {per_ip} source ports from {}",
                self.flows,
                self.src_ips.max(1),
                self.sport_min
            )));
        }
        if self.src_ip.is_ipv4() != self.dst.is_ipv4() {
            return Err(GenError::Family(self.src_ip, self.dst.ip()));
        }
        Ok(())
    }
}

fn add_ip(ip: IpAddr, k: u32) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(k))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_add(u128::from(k)))),
    }
}

/// Prebuilt frames for every (flow, size) and the per-packet stamping.
#[derive(Debug, Clone)]
pub struct Templates {
    /// Distinct buffer lengths (wire size − FCS), grown where the stamp
    /// needs more room than the asked size gives.
    lens: Vec<usize>,
    /// Per packet position in the cycle: index into `lens`.
    cycle: Vec<u8>,
    /// `frames[flow * lens.len() + size]`.
    frames: Vec<Vec<u8>>,
    flows: u32,
    stamp_off: usize,
    csum_off: usize,
    udp: bool,
}

impl Templates {
    /// Build the templates of every flow of `spec` at every size of `size`.
    pub fn new(spec: &FlowSpec, size: &SizeSpec) -> Result<Templates, GenError> {
        spec.validate()?;
        let wire: Vec<u16> = match size {
            SizeSpec::Fixed(n) => vec![*n],
            SizeSpec::Imix => IMIX.to_vec(),
        };
        let mut distinct: Vec<u16> = wire.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let cycle: Vec<u8> = wire
            .iter()
            .map(|w| distinct.iter().position(|d| d == w).unwrap_or(0) as u8)
            .collect();
        let zero = [0u8; MAX_WIRE_SIZE as usize];
        let mut frames = Vec::with_capacity(spec.flows as usize * distinct.len());
        let mut lens = Vec::with_capacity(distinct.len());
        let (mut stamp_off, mut csum_off) = (0, 0);
        for flow in 0..spec.flows {
            let src = spec.source(flow);
            for (si, &w) in distinct.iter().enumerate() {
                let base = match spec.proto {
                    Proto::Udp => Builder::udp(src, spec.dst),
                    Proto::Syn => Builder::tcp(src, spec.dst, 0x02),
                    Proto::Ack => Builder::tcp(src, spec.dst, 0x10).seq_ack(1000, 1),
                }
                .macs(spec.src_mac, spec.dst_mac);
                let headers = base.frame_len()?;
                let want = usize::from(w) - FCS_LEN;
                let len = want.max(headers + STAMP_LEN);
                let frame = base.payload(&zero[..len - headers]).to_vec()?;
                if flow == 0 {
                    lens.push(len);
                    stamp_off = headers;
                    // The L4 checksum field: UDP offset 6, TCP offset 16.
                    let l4 = headers
                        - match spec.proto {
                            Proto::Udp => 8,
                            _ => 20,
                        };
                    csum_off = l4
                        + match spec.proto {
                            Proto::Udp => 6,
                            _ => 16,
                        };
                }
                debug_assert_eq!(frame.len(), lens[si]);
                frames.push(frame);
            }
        }
        Ok(Templates {
            lens,
            cycle,
            frames,
            flows: spec.flows,
            stamp_off,
            csum_off,
            udp: spec.proto == Proto::Udp,
        })
    }

    /// Number of flows.
    pub fn flows(&self) -> u32 {
        self.flows
    }

    /// Buffer length (wire size − FCS) of the `n`-th packet of a flow.
    pub fn len_of(&self, n: u64) -> usize {
        self.lens[usize::from(self.cycle[(n % self.cycle.len() as u64) as usize])]
    }

    /// Distinct wire sizes actually sent (after growing for the stamp).
    pub fn wire_sizes(&self) -> Vec<usize> {
        self.lens.iter().map(|l| l + FCS_LEN).collect()
    }

    /// Write the `n`-th packet (position in the size cycle) of `stamp.flow`
    /// into `buf`, stamped and with its L4 checksum fixed. Returns its length,
    /// or 0 if `buf` is too small or the flow does not exist.
    pub fn write(&self, n: u64, stamp: &Stamp, buf: &mut [u8]) -> usize {
        let si = usize::from(self.cycle[(n % self.cycle.len() as u64) as usize]);
        let Some(t) = self.frames.get(stamp.flow as usize * self.lens.len() + si) else {
            return 0;
        };
        let Some(out) = buf.get_mut(..t.len()) else {
            return 0;
        };
        out.copy_from_slice(t);
        self.stamp(out, stamp);
        t.len()
    }

    /// Stamp a frame copied from a template (its stamp bytes still zero).
    pub fn stamp(&self, frame: &mut [u8], stamp: &Stamp) {
        let s = stamp.encode();
        let (so, co) = (self.stamp_off, self.csum_off);
        if frame.len() < so + STAMP_LEN || frame.len() < co + 2 {
            return;
        }
        frame[so..so + STAMP_LEN].copy_from_slice(&s);
        let old = u16::from_be_bytes([frame[co], frame[co + 1]]);
        // The stamp starts at an even offset from the L4 header (8 or 20), so
        // its bytes fall on the same 16-bit words the checksum sums.
        let mut c = !fold(add(u32::from(!old), sum_bytes(&s)));
        if self.udp && c == 0 {
            c = 0xffff; // RFC 768: a computed zero is sent as all ones
        }
        frame[co..co + 2].copy_from_slice(&c.to_be_bytes());
    }
}

/// Where the stamp of a received frame starts: after the UDP or TCP header.
/// `None` for other protocols, fragments, or truncated frames.
pub fn stamp_of(frame: &[u8]) -> Option<Stamp> {
    let m = xlb_dataplane::wire::parse(frame).ok()?;
    if !m.is_ip() || m.frag != xlb_dataplane::wire::Frag::None {
        return None;
    }
    let l4 = usize::from(m.l4_off);
    let hdr = match m.proto {
        17 => 8,
        6 => usize::from(frame.get(l4 + 12)? >> 4) * 4,
        _ => return None,
    };
    Stamp::decode(frame.get(l4 + hdr..)?)
}

/// Whether a received frame's L4 checksum verifies (the dataplane's verifier).
pub fn l4_checksum_ok(frame: &[u8]) -> bool {
    match xlb_dataplane::wire::parse(frame) {
        Ok(m) if m.is_ip() => xlb_dataplane::wire::verify_l4_checksum(frame, &m),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(proto: Proto, flows: u32, dst: SocketAddr, src: IpAddr) -> FlowSpec {
        FlowSpec {
            src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            src_ip: src,
            src_ips: 2,
            sport_min: 1024,
            dst,
            flows,
            proto,
        }
    }

    fn v4spec(proto: Proto, flows: u32) -> FlowSpec {
        spec(
            proto,
            flows,
            "10.0.0.9:7".parse().expect("addr"),
            "10.0.0.1".parse().expect("addr"),
        )
    }

    /// Check a frame with etherparse (an independent parser) and the
    /// dataplane's checksum verifier.
    fn check(frame: &[u8]) -> etherparse::SlicedPacket<'_> {
        assert!(l4_checksum_ok(frame), "dataplane verify fails");
        let p = etherparse::SlicedPacket::from_ethernet(frame).expect("etherparse parses");
        match (&p.net, &p.transport) {
            (Some(etherparse::NetSlice::Ipv4(ip)), Some(etherparse::TransportSlice::Udp(udp))) => {
                let h = ip.header().to_header();
                assert_eq!(h.header_checksum, h.calc_header_checksum());
                let full = udp.to_header();
                let want = full
                    .calc_checksum_ipv4(&h, udp.payload())
                    .expect("checksum");
                assert_eq!(full.checksum, want, "UDP checksum (etherparse)");
            }
            (Some(etherparse::NetSlice::Ipv4(ip)), Some(etherparse::TransportSlice::Tcp(tcp))) => {
                let h = ip.header().to_header();
                assert_eq!(h.header_checksum, h.calc_header_checksum());
                let want = tcp
                    .to_header()
                    .calc_checksum_ipv4(&h, tcp.payload())
                    .expect("checksum");
                assert_eq!(tcp.checksum(), want, "TCP checksum (etherparse)");
            }
            (Some(etherparse::NetSlice::Ipv6(ip)), Some(etherparse::TransportSlice::Udp(udp))) => {
                let h = ip.header().to_header();
                let full = udp.to_header();
                let want = full
                    .calc_checksum_ipv6(&h, udp.payload())
                    .expect("checksum");
                assert_eq!(full.checksum, want, "UDP/IPv6 checksum (etherparse)");
            }
            other => panic!("unexpected layers {other:?}"),
        }
        p
    }

    #[test]
    fn sizes_parse_and_reject() {
        assert_eq!("64".parse::<SizeSpec>().expect("64"), SizeSpec::Fixed(64));
        assert_eq!("IMIX".parse::<SizeSpec>().expect("imix"), SizeSpec::Imix);
        for bad in ["63", "1519", "0", "x", ""] {
            assert!(bad.parse::<SizeSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn stamp_round_trips_and_rejects_foreign_bytes() {
        let s = Stamp {
            flow: 77,
            seq: 0xdead_beef,
            tx_ns: 0x0123_4567_89ab_cdef,
        };
        assert_eq!(Stamp::decode(&s.encode()), Some(s));
        assert_eq!(Stamp::decode(&[0u8; STAMP_LEN]), None);
        assert_eq!(Stamp::decode(&s.encode()[..STAMP_LEN - 1]), None);
    }

    #[test]
    fn udp_frames_of_every_size_have_valid_checksums_and_carry_the_stamp() {
        for size in ["64", "128", "1518", "imix"] {
            let t = Templates::new(&v4spec(Proto::Udp, 16), &size.parse().expect("size"))
                .expect("templates");
            let mut buf = [0u8; 2048];
            for n in 0..24u64 {
                // Stamps that make the incremental checksum wrap in every way.
                let st = Stamp {
                    flow: (n % 16) as u32,
                    seq: (n as u32).wrapping_mul(0x9e37_79b9),
                    tx_ns: n.wrapping_mul(0xffff_ffff_ffff_fff1),
                };
                let len = t.write(n, &st, &mut buf);
                assert_eq!(len, t.len_of(n));
                let f = &buf[..len];
                check(f);
                assert_eq!(stamp_of(f), Some(st));
                let p = etherparse::SlicedPacket::from_ethernet(f).expect("parse");
                let Some(etherparse::TransportSlice::Udp(u)) = p.transport else {
                    panic!("udp")
                };
                assert_eq!(u.source_port(), 1024 + st.flow as u16 / 2);
                assert_eq!(u.destination_port(), 7);
            }
            if size == "64" {
                assert_eq!(t.wire_sizes(), vec![64]);
            }
        }
    }

    #[test]
    fn imix_cycles_seven_four_one() {
        let t = Templates::new(&v4spec(Proto::Udp, 1), &SizeSpec::Imix).expect("templates");
        let mut count = std::collections::HashMap::new();
        for n in 0..12 {
            *count.entry(t.len_of(n) + FCS_LEN).or_insert(0) += 1;
        }
        assert_eq!(count[&64], 7);
        assert_eq!(count[&570], 4);
        assert_eq!(count[&1518], 1);
    }

    #[test]
    fn tcp_syn_and_ack_frames_are_valid_and_grow_to_fit_the_stamp() {
        for proto in [Proto::Syn, Proto::Ack] {
            let t = Templates::new(&v4spec(proto, 4), &SizeSpec::Fixed(64)).expect("templates");
            assert_eq!(t.wire_sizes(), vec![14 + 20 + 20 + STAMP_LEN + FCS_LEN]);
            let mut buf = [0u8; 256];
            let st = Stamp {
                flow: 3,
                seq: 12345,
                tx_ns: 987_654_321,
            };
            let len = t.write(0, &st, &mut buf);
            let p = check(&buf[..len]);
            let Some(etherparse::TransportSlice::Tcp(tcp)) = p.transport else {
                panic!("tcp")
            };
            assert_eq!(tcp.syn(), proto == Proto::Syn);
            assert_eq!(tcp.ack(), proto == Proto::Ack);
            assert_eq!(stamp_of(&buf[..len]), Some(st));
        }
    }

    #[test]
    fn ipv6_udp_frames_are_valid() {
        let s = spec(
            Proto::Udp,
            8,
            "[fd00::9]:7".parse().expect("addr"),
            "fd00::1".parse().expect("addr"),
        );
        let t = Templates::new(&s, &SizeSpec::Fixed(100)).expect("templates");
        let mut buf = [0u8; 256];
        let st = Stamp {
            flow: 5,
            seq: 1,
            tx_ns: 2,
        };
        let len = t.write(0, &st, &mut buf);
        assert_eq!(len, 96);
        check(&buf[..len]);
        assert_eq!(stamp_of(&buf[..len]), Some(st));
    }

    #[test]
    fn flow_sources_cycle_addresses_then_ports_and_bad_specs_fail() {
        let s = v4spec(Proto::Udp, 8);
        assert_eq!(s.source(0), "10.0.0.1:1024".parse().expect("addr"));
        assert_eq!(s.source(1), "10.0.0.2:1024".parse().expect("addr"));
        assert_eq!(s.source(7), "10.0.0.2:1027".parse().expect("addr"));
        let mut bad = v4spec(Proto::Udp, 0);
        assert!(Templates::new(&bad, &SizeSpec::Fixed(64)).is_err());
        bad.flows = 200_000;
        assert!(Templates::new(&bad, &SizeSpec::Fixed(64)).is_err());
        let mut fam = v4spec(Proto::Udp, 1);
        fam.src_ip = "fd00::1".parse().expect("addr");
        assert!(matches!(
            Templates::new(&fam, &SizeSpec::Fixed(64)),
            Err(GenError::Family(..))
        ));
    }

    #[test]
    fn a_short_buffer_or_unknown_flow_writes_nothing() {
        let t = Templates::new(&v4spec(Proto::Udp, 2), &SizeSpec::Fixed(64)).expect("templates");
        let mut small = [0u8; 10];
        assert_eq!(t.write(0, &Stamp::default(), &mut small), 0);
        let mut buf = [0u8; 100];
        let st = Stamp {
            flow: 9,
            ..Stamp::default()
        };
        assert_eq!(t.write(0, &st, &mut buf), 0);
    }
}
