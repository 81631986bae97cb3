//! The minimal AF_XDP forwarder, the UDP suite's measure of what AF_XDP
//! itself costs: for UDP to VIP:port, hash the source, pick a backend,
//! rewrite the destination address (incremental checksums, RFC 1624), set
//! the MACs, transmit. No conntrack, no service lookup. It runs as a
//! `Processor` under xlb-io's Runtime, as xlb's pipeline does
//! ([`super::afxdp`]).

use std::net::{IpAddr, Ipv4Addr};

use xlb_dataplane::drop::DropReason;
use xlb_dataplane::frame::{Frame, Verdict};
use xlb_dataplane::net::{fmix64, Ip16, MacAddr};
use xlb_dataplane::pipeline::Processor;
use xlb_dataplane::tables::Tables;
use xlb_dataplane::wire::checksum::{udp_nonzero, update_bytes};

use crate::topo::{VIP, VIP_PORT};

/// The minimal forwarder (see the module docs).
#[derive(Debug)]
pub struct MinFwd {
    backends: Vec<Ipv4Addr>,
    /// Per backend: (dst MAC, src MAC, port), refreshed per tables generation.
    hops: Vec<Option<(MacAddr, MacAddr, u16)>>,
    gen: u64,
}

impl MinFwd {
    /// A forwarder to `backends`.
    pub fn new(backends: &[Ipv4Addr]) -> MinFwd {
        MinFwd {
            backends: backends.to_vec(),
            hops: Vec::new(),
            gen: u64::MAX,
        }
    }
}

impl Processor for MinFwd {
    fn process_batch(
        &mut self,
        tables: &Tables,
        _now_ns: u64,
        frames: &mut [Frame<'_>],
        verdicts: &mut [Verdict],
    ) {
        if tables.generation != self.gen {
            self.gen = tables.generation;
            self.hops = self
                .backends
                .iter()
                .map(|b| {
                    let nh = tables.next_hops.get(&Ip16::from(IpAddr::V4(*b)))?;
                    let port = tables.port(nh.port)?;
                    Some((nh.mac, port.mac, nh.port))
                })
                .collect();
        }
        let nb = self.backends.len().max(1) as u64;
        for (f, v) in frames.iter_mut().zip(verdicts.iter_mut()) {
            let p = f.data_mut();
            // Ethernet + IPv4 without options + UDP to VIP:port.
            if p.len() < 42
                || p[12..14] != [0x08, 0x00]
                || p[14] != 0x45
                || p[23] != 17
                || p[30..34] != VIP.octets()
                || p[36..38] != VIP_PORT.to_be_bytes()
            {
                *v = Verdict::Drop(DropReason::NoService);
                continue;
            }
            let h = fmix64(
                u64::from(u32::from_be_bytes([p[26], p[27], p[28], p[29]])) << 16
                    | u64::from(u16::from_be_bytes([p[34], p[35]])),
            );
            let i = (h % nb) as usize;
            let Some((dmac, smac, port)) = self.hops.get(i).copied().flatten() else {
                *v = Verdict::Drop(DropReason::NoNeighbor);
                continue;
            };
            let new = self.backends[i].octets();
            let old = [p[30], p[31], p[32], p[33]];
            let ip_sum = u16::from_be_bytes([p[24], p[25]]);
            p[24..26].copy_from_slice(&update_bytes(ip_sum, &old, &new).to_be_bytes());
            let udp_sum = u16::from_be_bytes([p[40], p[41]]);
            if udp_sum != 0 {
                let c = udp_nonzero(update_bytes(udp_sum, &old, &new));
                p[40..42].copy_from_slice(&c.to_be_bytes());
            }
            p[30..34].copy_from_slice(&new);
            p[0..6].copy_from_slice(&dmac.0);
            p[6..12].copy_from_slice(&smac.0);
            *v = Verdict::Tx(port);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::contenders::xlb::udp_service;
    use crate::topo::{BACKENDS, CLIENT};
    use xlb_dataplane::tables::TablesSpec;

    #[test]
    fn the_minimal_forwarder_rewrites_and_keeps_checksums_valid() {
        use crate::frames::l4_checksum_ok;
        use xlb_dataplane::tables::{NextHop, PortSpec};
        use xlb_dataplane::wire::build::Builder;
        let mut frame = Builder::udp(
            SocketAddr::from((CLIENT, 4000)),
            SocketAddr::from((VIP, VIP_PORT)),
        )
        .payload(&[7u8; 18])
        .to_vec()
        .expect("frame");
        let port_mac = MacAddr([2, 0, 0, 0, 0, 0x11]);
        let nh_mac = MacAddr([2, 0, 0, 0, 0, 0x22]);
        let spec = TablesSpec {
            services: vec![udp_service()],
            next_hops: BACKENDS
                .iter()
                .map(|b| {
                    (
                        IpAddr::V4(*b),
                        NextHop {
                            mac: nh_mac,
                            port: 1,
                        },
                    )
                })
                .collect(),
            ports: vec![PortSpec {
                id: 1,
                name: "x".into(),
                mac: port_mac,
                addrs: vec![],
            }],
            ..Default::default()
        };
        let t = Tables::build(spec, &Tables::empty()).expect("tables");
        let mut fwd = MinFwd::new(&BACKENDS);
        let len = frame.len();
        let mut v = [Verdict::Pass];
        {
            let mut frames = [Frame::new(&mut frame, len, 0)];
            fwd.process_batch(&t, 0, &mut frames, &mut v);
        }
        assert_eq!(v[0], Verdict::Tx(1));
        assert!(BACKENDS.iter().any(|b| frame[30..34] == b.octets()));
        assert_eq!(frame[0..6], nh_mac.0);
        assert_eq!(frame[6..12], port_mac.0);
        assert!(l4_checksum_ok(&frame));
        let ip = etherparse::Ipv4HeaderSlice::from_slice(&frame[14..]).expect("ip");
        let h = ip.to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
    }
}
