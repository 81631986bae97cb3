//! The XDP program's steering maps as user space sees them: key layouts
//! (mirroring `bpf/xlb_structs.h`), the set of keys a [`Tables`] snapshot
//! wants ([`Desired`]), and [`MapSync`], which moves the kernel maps to that set
//! with minimal churn (adds first, then deletes, so a key that stays is never
//! missing in between).
//!
//! Keying:
//! - `vip_ports`: `{addr[16], proto, pad, port(be16)}`, one key per service port;
//!   a range longer than [`RANGE_WILDCARD_MIN`] ports is one wildcard key with
//!   port 0 (user space then counts out-of-range ports as `NoService`). Every VIP
//!   also gets its ICMP/ICMPv6 key (port 0) so echo to a VIP reaches xlb.
//! - `vip_addrs`: every VIP address (fragments, unparsed IPv6 chains).
//! - `snat_addrs`: `Tables::snat_addrs`; `config[0]` holds the NAT port range.
//! - `backends`: DNAT endpoints as `{addr, proto, port}`; an endpoint with port 0
//!   (keep the client's port) gets the service's ports, ranges as above.
//!
//! Addresses are 16 bytes, IPv4 as `::ffff:a.b.c.d` (the dataplane's `Ip16`).

use std::collections::HashSet;
use std::os::fd::{AsFd, BorrowedFd};

use libbpf_rs::{MapCore, MapFlags, MapHandle};
use xlb_dataplane::net::Ip16;
use xlb_dataplane::tables::{L4Proto, NatMode, Tables};

use super::XdpError;

/// Port ranges longer than this become one wildcard key (port 0)
/// (`XLB_RANGE_WILDCARD_MIN`).
pub const RANGE_WILDCARD_MIN: u32 = 256;
/// XSKMAP capacity (`XLB_MAX_QUEUES`): most queues (workers) per interface.
pub const MAX_QUEUES: u32 = 64;
/// The port of a wildcard key: every port of its protocol (`XLB_PORT_ANY`).
pub const PORT_ANY: u16 = 0;

/// `struct xlb_flow_key` as bytes.
pub type FlowKey = [u8; 20];
/// `struct xlb_addr_key` as bytes.
pub type AddrKey = [u8; 16];

/// A flow key: address, IP protocol number, port (host order; stored big-endian).
pub fn flow_key(addr: Ip16, proto: u8, port: u16) -> FlowKey {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(&addr.0);
    k[16] = proto;
    k[18..].copy_from_slice(&port.to_be_bytes());
    k
}

/// `struct xlb_config` as bytes (host byte order).
pub fn config_value(nat_ports: (u16, u16)) -> [u8; 8] {
    let mut v = [0u8; 8];
    v[..2].copy_from_slice(&nat_ports.0.to_ne_bytes());
    v[2..4].copy_from_slice(&nat_ports.1.to_ne_bytes());
    v
}

/// Every key the maps should hold for one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// `vip_ports` keys.
    pub vip_ports: HashSet<FlowKey>,
    /// `vip_addrs` keys.
    pub vip_addrs: HashSet<AddrKey>,
    /// `snat_addrs` keys.
    pub snat_addrs: HashSet<AddrKey>,
    /// `backends` keys.
    pub backends: HashSet<FlowKey>,
    /// `config[0]`.
    pub nat_ports: (u16, u16),
}

fn insert_ports(set: &mut HashSet<FlowKey>, addr: Ip16, proto: u8, lo: u16, hi: u16) {
    if u32::from(hi) - u32::from(lo) + 1 > RANGE_WILDCARD_MIN || lo == 0 {
        set.insert(flow_key(addr, proto, PORT_ANY));
    } else {
        for p in lo..=hi {
            set.insert(flow_key(addr, proto, p));
        }
    }
}

impl Desired {
    /// The keys `tables` needs: those of the addresses this node serves now
    /// ([`Tables::serves`]); a VIP it does not serve (a backup's) steers
    /// nothing, so its packets go to the kernel, which does not hold it.
    pub fn from_tables(tables: &Tables) -> Desired {
        let mut d = Desired {
            nat_ports: tables.nat_ports,
            ..Desired::default()
        };
        for vip in tables.vips().filter(|&v| tables.serves(v)) {
            d.vip_addrs.insert(vip.0);
            let icmp = L4Proto::Icmp.ip_proto_for(vip.is_v4());
            d.vip_ports.insert(flow_key(vip, icmp, 0));
        }
        for s in tables.services.iter().filter(|s| tables.serves(s.vip)) {
            let key = s.spec.key;
            let v4 = s.vip.is_v4();
            let proto = key.proto.ip_proto_for(v4);
            if key.proto != L4Proto::Icmp {
                insert_ports(&mut d.vip_ports, s.vip, proto, key.port_min, key.port_max);
            }
            if s.spec.mode == NatMode::Dnat {
                for e in &s.endpoints {
                    if key.proto == L4Proto::Icmp {
                        continue; // ICMP from backends is not steered (see xlb.bpf.c)
                    }
                    if e.port == 0 {
                        insert_ports(&mut d.backends, e.addr, proto, key.port_min, key.port_max);
                    } else {
                        d.backends.insert(flow_key(e.addr, proto, e.port));
                    }
                }
            }
        }
        for a in tables.snat_addrs.iter().filter(|&&a| tables.serves(a)) {
            d.snat_addrs.insert(a.0);
        }
        d
    }
}

/// What one [`MapSync::sync`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Keys inserted.
    pub added: usize,
    /// Keys deleted.
    pub removed: usize,
}

/// Handles on the steering maps of a loaded program (shared by every interface).
#[derive(Debug)]
pub struct SteeringMaps {
    pub(crate) vip_ports: MapHandle,
    pub(crate) vip_addrs: MapHandle,
    pub(crate) snat_addrs: MapHandle,
    pub(crate) backends: MapHandle,
    pub(crate) config: MapHandle,
}

impl SteeringMaps {
    /// The maps by their names in the object, for another interface's
    /// program to reuse (see `loader::open_and_load`).
    pub(crate) fn fds(&self) -> [(&'static str, BorrowedFd<'_>); 5] {
        [
            ("vip_ports", self.vip_ports.as_fd()),
            ("vip_addrs", self.vip_addrs.as_fd()),
            ("snat_addrs", self.snat_addrs.as_fd()),
            ("backends", self.backends.as_fd()),
            ("config", self.config.as_fd()),
        ]
    }
}

/// Keeps the kernel maps equal to the last synced snapshot's [`Desired`] set.
#[derive(Debug)]
pub struct MapSync {
    maps: SteeringMaps,
    current: Desired,
    config_written: bool,
}

impl MapSync {
    /// A syncer over `maps`, which must be empty (freshly loaded).
    pub fn new(maps: SteeringMaps) -> MapSync {
        MapSync {
            maps,
            current: Desired::default(),
            config_written: false,
        }
    }

    /// Bring the maps to what `tables` needs: insert new keys, then delete
    /// removed ones. On error the maps may hold a mix; the next sync repairs it
    /// (the current set is only updated for operations that succeeded).
    pub fn sync(&mut self, tables: &Tables) -> Result<SyncReport, XdpError> {
        let want = Desired::from_tables(tables);
        let mut report = SyncReport::default();
        let one = [1u8];
        if !self.config_written || want.nat_ports != self.current.nat_ports {
            self.maps
                .config
                .update(
                    &0u32.to_ne_bytes(),
                    &config_value(want.nat_ports),
                    MapFlags::ANY,
                )
                .map_err(|source| XdpError::Map {
                    map: "config",
                    source,
                })?;
            self.current.nat_ports = want.nat_ports;
            self.config_written = true;
        }
        sync_set(
            &self.maps.vip_ports,
            "vip_ports",
            &mut self.current.vip_ports,
            &want.vip_ports,
            &one,
            &mut report,
        )?;
        sync_set(
            &self.maps.vip_addrs,
            "vip_addrs",
            &mut self.current.vip_addrs,
            &want.vip_addrs,
            &one,
            &mut report,
        )?;
        sync_set(
            &self.maps.snat_addrs,
            "snat_addrs",
            &mut self.current.snat_addrs,
            &want.snat_addrs,
            &one,
            &mut report,
        )?;
        sync_set(
            &self.maps.backends,
            "backends",
            &mut self.current.backends,
            &want.backends,
            &one,
            &mut report,
        )?;
        Ok(report)
    }

    /// The set last synced.
    pub fn current(&self) -> &Desired {
        &self.current
    }

    #[cfg(test)]
    pub(crate) fn maps_for_tests(&self) -> &SteeringMaps {
        &self.maps
    }
}

fn sync_set<const N: usize>(
    map: &MapHandle,
    name: &'static str,
    current: &mut HashSet<[u8; N]>,
    want: &HashSet<[u8; N]>,
    value: &[u8],
    report: &mut SyncReport,
) -> Result<(), XdpError> {
    let err = |source| XdpError::Map { map: name, source };
    let new: Vec<[u8; N]> = want.difference(current).copied().collect();
    for k in new {
        map.update(&k, value, MapFlags::ANY).map_err(err)?;
        current.insert(k);
        report.added += 1;
    }
    let stale: Vec<[u8; N]> = current.difference(want).copied().collect();
    for k in stale {
        match map.delete(&k) {
            Ok(()) => {}
            // Already gone is what we wanted.
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        current.remove(&k);
        report.removed += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xdp::fixtures::{ip, svc};
    use xlb_dataplane::tables::TablesSpec;

    #[test]
    fn flow_keys_match_the_c_layout() {
        let k = flow_key(Ip16::from(ip("10.0.0.1")), 17, 0x1234);
        assert_eq!(
            &k[..16],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1]
        );
        assert_eq!(k[16], 17);
        assert_eq!(k[17], 0, "padding");
        assert_eq!(&k[18..], &[0x12, 0x34], "port is big-endian like __be16");
        let c = config_value((40000, 59999));
        assert_eq!(u16::from_ne_bytes([c[0], c[1]]), 40000);
        assert_eq!(u16::from_ne_bytes([c[2], c[3]]), 59999);
    }

    #[test]
    fn desired_covers_ports_ranges_icmp_snat_and_dnat_backends() {
        let spec = TablesSpec {
            services: vec![
                svc(
                    "10.0.0.1",
                    L4Proto::Tcp,
                    80,
                    80,
                    NatMode::Dnat,
                    &[("10.1.0.1", 8080)],
                ),
                svc(
                    "10.0.0.1",
                    L4Proto::Udp,
                    1000,
                    1003,
                    NatMode::FullNat,
                    &[("10.1.0.2", 0)],
                ),
                svc(
                    "2001:db8::1",
                    L4Proto::Tcp,
                    1,
                    65535,
                    NatMode::Dnat,
                    &[("2001:db8::9", 0)],
                ),
            ],
            snat_addrs: vec![ip("10.9.9.9")],
            ..Default::default()
        };
        let t = Tables::build(spec, &Tables::empty()).expect("valid spec");
        let d = Desired::from_tables(&t);
        let v4 = Ip16::from(ip("10.0.0.1"));
        let v6 = Ip16::from(ip("2001:db8::1"));
        assert!(d.vip_ports.contains(&flow_key(v4, 6, 80)));
        for p in 1000..=1003 {
            assert!(d.vip_ports.contains(&flow_key(v4, 17, p)));
        }
        assert!(
            d.vip_ports.contains(&flow_key(v4, 1, 0)),
            "ICMP echo to a v4 VIP"
        );
        assert!(
            d.vip_ports.contains(&flow_key(v6, 58, 0)),
            "ICMPv6 to a v6 VIP"
        );
        assert!(
            d.vip_ports.contains(&flow_key(v6, 6, 0)),
            "long range -> wildcard"
        );
        assert_eq!(d.vip_ports.len(), 1 + 4 + 1 + 1 + 1);
        assert_eq!(d.vip_addrs.len(), 2);
        assert!(d.snat_addrs.contains(&Ip16::from(ip("10.9.9.9")).0));
        // DNAT only: the full-NAT service's endpoint is not a backend key.
        let b1 = flow_key(Ip16::from(ip("10.1.0.1")), 6, 8080);
        let b2 = flow_key(Ip16::from(ip("2001:db8::9")), 6, 0);
        assert_eq!(d.backends, [b1, b2].into_iter().collect());
        assert_eq!(d.nat_ports, xlb_dataplane::tables::DEFAULT_NAT_PORTS);
    }
}
