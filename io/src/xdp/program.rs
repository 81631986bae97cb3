//! The steering program attached to one interface, with its maps: the
//! daemon attaches one per served interface (the first owns the steering
//! maps, the others share them), points each rx queue's XSKMAP slot at its
//! worker's AF_XDP socket, and reads the per-action counters.
//!
//! Invariants: at most one xlb program per interface: the program claims
//! the interface ([`InterfaceLock`]) before anything else, so a live
//! owner's program is never taken for a stale one; a stale one (its owner
//! died) is detached next. The program is detached when the [`XdpProgram`]
//! is dropped or [`XdpProgram::detach`]ed, and the claim released after.

use std::os::fd::{AsFd, RawFd};

use libbpf_rs::{MapCore, MapFlags, MapHandle, Object, Xdp};

use super::loader::{detach_stale, find_prog, map_handle, open_and_load, STEER_PROG};
use super::maps::SteeringMaps;
use super::owner::InterfaceLock;
use super::stats::{XdpStats, STAT_SLOTS};
use super::{XdpError, XdpMode};

/// The steering program attached to one interface, with its maps.
pub struct XdpProgram {
    obj: Object,
    ifindex: u32,
    mode: XdpMode,
    attached: bool,
    xsks: MapHandle,
    stats: MapHandle,
    /// The kernel's id of the attached program (0 when unattached).
    prog_id: u32,
    /// This process's claim on the interface; dropped after the detach.
    _claim: Option<InterfaceLock>,
}

impl std::fmt::Debug for XdpProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpProgram")
            .field("ifindex", &self.ifindex)
            .field("mode", &self.mode)
            .field("attached", &self.attached)
            .finish()
    }
}

impl XdpProgram {
    /// Load the program and attach it to `ifindex`, detaching any stale
    /// program first. `Native` falls back to `Generic` with a warning.
    pub fn load_and_attach(ifindex: u32, mode: XdpMode) -> Result<XdpProgram, XdpError> {
        Self::load_and_attach_sharing(ifindex, mode, None)
    }

    /// Like [`XdpProgram::load_and_attach`], but the steering maps (VIPs, SNAT
    /// addresses, backends, config) are `shared`'s: one [`MapSync`](super::maps::MapSync)
    /// then serves every interface. The XSKMAP and stats stay per interface.
    pub fn load_and_attach_sharing(
        ifindex: u32,
        mode: XdpMode,
        shared: Option<&SteeringMaps>,
    ) -> Result<XdpProgram, XdpError> {
        let name = crate::kernel::sys::ifname(ifindex).unwrap_or_else(|| format!("#{ifindex}"));
        let claim = InterfaceLock::claim(&name, ifindex)?;
        // Only now is a program on the interface known to be stale.
        let stale = detach_stale(ifindex)?;
        if stale > 0 {
            tracing::warn!(
                ifindex,
                "detached a stale XDP program left by an earlier run"
            );
        }
        let reuse = shared.map(SteeringMaps::fds);
        let obj = open_and_load(reuse.as_ref().map_or(&[][..], |r| &r[..]))?;
        let xsks = map_handle(&obj, "xsks_map")?;
        let stats = map_handle(&obj, "stats")?;
        let mut p = XdpProgram {
            obj,
            ifindex,
            mode,
            attached: false,
            xsks,
            stats,
            prog_id: 0,
            _claim: Some(claim),
        };
        let prog = find_prog(&p.obj, STEER_PROG)?;
        p.prog_id = libbpf_rs::Program::id_from_fd(prog.as_fd()).map_err(XdpError::Load)?;
        let xdp = Xdp::new(prog.as_fd());
        match xdp.attach(ifindex as i32, mode.flags()) {
            Ok(()) => {}
            Err(e) if mode == XdpMode::Native => {
                tracing::warn!(
                    ifindex,
                    error = %e,
                    "native XDP refused by the driver; falling back to generic (SKB) mode"
                );
                xdp.attach(ifindex as i32, XdpMode::Generic.flags())
                    .map_err(|source| XdpError::Attach {
                        ifindex,
                        mode: XdpMode::Generic,
                        source,
                    })?;
                p.mode = XdpMode::Generic;
            }
            Err(source) => {
                return Err(XdpError::Attach {
                    ifindex,
                    mode,
                    source,
                })
            }
        }
        p.attached = true;
        Ok(p)
    }

    /// Load the program without attaching it anywhere: for
    /// [`XdpProgram::test_run`] (golden packet tests, diagnostics).
    pub fn load_unattached() -> Result<XdpProgram, XdpError> {
        let obj = open_and_load(&[])?;
        let xsks = map_handle(&obj, "xsks_map")?;
        let stats = map_handle(&obj, "stats")?;
        Ok(XdpProgram {
            obj,
            ifindex: 0,
            mode: XdpMode::Generic,
            attached: false,
            xsks,
            stats,
            prog_id: 0,
            _claim: None,
        })
    }

    /// Run the steering program once on `frame` in the kernel
    /// (`BPF_PROG_TEST_RUN`) and return its XDP action (`XDP_PASS` = 2,
    /// `XDP_REDIRECT` = 4). The counters in [`XdpProgram::stats`] move as for
    /// a real packet; with no socket registered a redirect ends as
    /// [`Stat::NoSocket`](super::stats::Stat::NoSocket) + `XDP_PASS`.
    pub fn test_run(&self, frame: &[u8]) -> Result<u32, XdpError> {
        let prog = self
            .obj
            .progs_mut()
            .find(|p| p.name() == STEER_PROG)
            .ok_or(XdpError::Missing(STEER_PROG))?;
        let input = libbpf_rs::ProgramInput {
            data_in: Some(frame),
            ..Default::default()
        };
        let out = prog.test_run(input).map_err(|source| XdpError::Map {
            map: "(test run)",
            source,
        })?;
        Ok(out.return_value)
    }

    /// The mode the program is actually attached in (after any fallback).
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// The interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The kernel's id of the attached program (`bpftool prog show id N`;
    /// 0 when not attached).
    pub fn prog_id(&self) -> u32 {
        self.prog_id
    }

    /// Whether the interface still runs this program: false once someone
    /// (`ip link set dev X xdp off`, another tool) removed or replaced it,
    /// after which its traffic no longer reaches the workers.
    pub fn still_attached(&self) -> Result<bool, XdpError> {
        let prog = find_prog(&self.obj, STEER_PROG)?;
        let id = Xdp::new(prog.as_fd())
            .query_id(self.ifindex as i32, self.mode.flags())
            .map_err(|source| XdpError::Attach {
                ifindex: self.ifindex,
                mode: self.mode,
                source,
            })?;
        Ok(self.attached && id == self.prog_id)
    }

    /// Handles on the steering maps, to share with other interfaces' programs
    /// and to sync from a [`xlb_dataplane::tables::Tables`].
    pub fn steering_maps(&self) -> Result<SteeringMaps, XdpError> {
        Ok(SteeringMaps {
            vip_ports: map_handle(&self.obj, "vip_ports")?,
            vip_addrs: map_handle(&self.obj, "vip_addrs")?,
            snat_addrs: map_handle(&self.obj, "snat_addrs")?,
            backends: map_handle(&self.obj, "backends")?,
            config: map_handle(&self.obj, "config")?,
        })
    }

    /// Point rx queue `queue`'s XSKMAP slot at the AF_XDP socket `fd`.
    pub fn register_socket(&self, queue: u32, fd: RawFd) -> Result<(), XdpError> {
        let fd = u32::try_from(fd).map_err(|_| XdpError::Missing("valid socket fd"))?;
        self.xsks
            .update(&queue.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
            .map_err(|source| XdpError::Map {
                map: "xsks_map",
                source,
            })
    }

    /// Empty rx queue `queue`'s XSKMAP slot (its packets then pass to the kernel).
    pub fn unregister_socket(&self, queue: u32) -> Result<(), XdpError> {
        self.xsks
            .delete(&queue.to_ne_bytes())
            .map_err(|source| XdpError::Map {
                map: "xsks_map",
                source,
            })
    }

    /// The program's per-action counters, summed over CPUs.
    pub fn stats(&self) -> Result<XdpStats, XdpError> {
        let mut out = XdpStats::default();
        for slot in 0..STAT_SLOTS as u32 {
            let per_cpu = self
                .stats
                .lookup_percpu(&slot.to_ne_bytes(), MapFlags::ANY)
                .map_err(|source| XdpError::Map {
                    map: "stats",
                    source,
                })?
                .unwrap_or_default();
            let sum: u64 = per_cpu
                .iter()
                .filter_map(|v| v.get(..8))
                .map(|b| u64::from_ne_bytes(b.try_into().expect("8-byte slice")))
                .sum();
            out.counts[slot as usize] = sum;
        }
        Ok(out)
    }

    /// Detach the program from the interface now (dropping does the same,
    /// logging instead of returning errors).
    pub fn detach(mut self) -> Result<(), XdpError> {
        self.detach_inner()
    }

    fn detach_inner(&mut self) -> Result<(), XdpError> {
        if !self.attached {
            return Ok(());
        }
        self.attached = false;
        let prog = find_prog(&self.obj, STEER_PROG)?;
        let xdp = Xdp::new(prog.as_fd());
        xdp.detach(self.ifindex as i32, self.mode.flags())
            .map_err(|source| XdpError::Attach {
                ifindex: self.ifindex,
                mode: self.mode,
                source,
            })
    }

    /// Leave the program attached and forget it, as a crashed process would.
    /// Only for tests of stale-program recovery.
    #[doc(hidden)]
    pub fn leak_attached(mut self) {
        self.attached = false;
    }
}

impl Drop for XdpProgram {
    fn drop(&mut self) {
        if let Err(e) = self.detach_inner() {
            tracing::warn!(ifindex = self.ifindex, error = %e, "XDP detach failed");
        }
    }
}

#[cfg(test)]
mod tests {
    //! Golden packet table for the steering program, run in the kernel with
    //! BPF_PROG_TEST_RUN (root required; no interface needed). Each row: a
    //! frame and the one counter it must move; rows run in order.
    use super::*;
    use crate::xdp::fixtures::{ip, svc};
    use crate::xdp::maps::{MapSync, SyncReport};
    use crate::xdp::stats::Stat;
    use std::net::IpAddr;
    use xlb_dataplane::tables::{L4Proto, NatMode, Tables, TablesSpec};

    const XDP_PASS: u32 = 2;

    fn eth(ethertype: u16) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    /// IPv4 header (`opt_words` words of NOP options) + `l4`.
    fn v4(src: [u8; 4], dst: [u8; 4], proto: u8, frag: u16, opt_words: u8, l4: &[u8]) -> Vec<u8> {
        let ihl = 5 + opt_words;
        let total = usize::from(ihl) * 4 + l4.len();
        let mut h = vec![0x40 | ihl, 0];
        h.extend_from_slice(&(total as u16).to_be_bytes());
        h.extend_from_slice(&[0, 1]);
        h.extend_from_slice(&frag.to_be_bytes());
        h.extend_from_slice(&[64, proto, 0, 0]);
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        h.extend(std::iter::repeat_n(1u8, usize::from(opt_words) * 4));
        h.extend_from_slice(l4);
        h
    }

    fn v6(src: &str, dst: &str, next: u8, l4: &[u8]) -> Vec<u8> {
        let (IpAddr::V6(s), IpAddr::V6(d)) = (ip(src), ip(dst)) else {
            panic!("v6 addresses")
        };
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        h.extend_from_slice(&[next, 64]);
        h.extend_from_slice(&s.octets());
        h.extend_from_slice(&d.octets());
        h.extend_from_slice(l4);
        h
    }

    fn ports(sport: u16, dport: u16) -> Vec<u8> {
        let mut l4 = sport.to_be_bytes().to_vec();
        l4.extend_from_slice(&dport.to_be_bytes());
        l4.extend_from_slice(&[0, 8, 0, 0]); // UDP len/csum, or TCP seq bytes
        l4.extend_from_slice(&[0; 12]);
        l4
    }

    /// An IPv6 fragment header (offset in bytes) + `rest`.
    fn frag6(next: u8, offset: u16, more: bool, id: u32, rest: &[u8]) -> Vec<u8> {
        let mut h = vec![next, 0];
        h.extend_from_slice(&((offset & 0xfff8) | u16::from(more)).to_be_bytes());
        h.extend_from_slice(&id.to_be_bytes());
        h.extend_from_slice(rest);
        h
    }

    fn icmp(ty: u8, id: u16, quoted: &[u8]) -> Vec<u8> {
        let mut l4 = vec![ty, 0, 0, 0];
        l4.extend_from_slice(&id.to_be_bytes());
        l4.extend_from_slice(&[0, 1]);
        l4.extend_from_slice(quoted);
        l4
    }

    fn frame(ethertype: u16, l3: Vec<u8>) -> Vec<u8> {
        let mut f = eth(ethertype);
        f.extend(l3);
        f
    }

    #[test]
    fn golden_packets_move_exactly_the_expected_counter() {
        let spec = TablesSpec {
            services: vec![
                svc(
                    "10.0.0.1",
                    L4Proto::Udp,
                    7,
                    7,
                    NatMode::Dnat,
                    &[("10.1.0.1", 8080)],
                ),
                svc(
                    "10.0.0.1",
                    L4Proto::Tcp,
                    1000,
                    1999,
                    NatMode::FullNat,
                    &[("10.1.0.2", 0)],
                ),
                svc(
                    "2001:db8::1",
                    L4Proto::Udp,
                    53,
                    53,
                    NatMode::Dnat,
                    &[("2001:db8::99", 53)],
                ),
            ],
            snat_addrs: vec![ip("10.9.9.9")],
            ..Default::default()
        };
        let tables = Tables::build(spec, &Tables::empty()).expect("valid spec");
        let prog = XdpProgram::load_unattached().expect("load (run the tests as root)");
        let mut sync = MapSync::new(prog.steering_maps().expect("maps"));
        sync.sync(&tables).expect("sync");

        let vip = [10, 0, 0, 1];
        let client = [192, 168, 1, 5];
        let snat = [10, 9, 9, 9];
        let backend = [10, 1, 0, 1];
        let mut vlan = eth(0x8100);
        vlan.extend_from_slice(&[0, 42, 0x08, 0x00]);
        vlan.extend(v4(client, vip, 17, 0, 0, &ports(5555, 7)));
        let quoted_ours = v4(snat, client, 17, 0, 0, &ports(45000, 53));
        let quoted_other = v4(snat, client, 6, 0, 0, &ports(22, 5555));
        let mut arp = eth(0x0806);
        arp.extend_from_slice(&[0; 28]);

        let table: Vec<(&str, Vec<u8>, Stat)> = vec![
            ("ARP", arp, Stat::Pass),
            (
                "UDP to VIP:7",
                frame(0x0800, v4(client, vip, 17, 0, 0, &ports(5555, 7))),
                Stat::RedirectVip,
            ),
            (
                "UDP to VIP:8 (no rule)",
                frame(0x0800, v4(client, vip, 17, 0, 0, &ports(5555, 8))),
                Stat::Pass,
            ),
            (
                "SCTP to VIP:7 (no SCTP rule)",
                frame(0x0800, v4(client, vip, 132, 0, 0, &ports(5555, 7))),
                Stat::Pass,
            ),
            // Documented trade-off: a long range is one wildcard key, so other
            // TCP ports of that VIP reach user space, which counts NoService.
            (
                "TCP to VIP:7 (outside the long TCP range)",
                frame(0x0800, v4(client, vip, 6, 0, 0, &ports(5555, 7))),
                Stat::RedirectVip,
            ),
            ("VLAN-tagged UDP to VIP:7", vlan, Stat::RedirectVip),
            (
                "IPv4 options skipped via IHL",
                frame(0x0800, v4(client, vip, 17, 0, 2, &ports(5555, 7))),
                Stat::RedirectVip,
            ),
            (
                "TCP to VIP in a long range (wildcard key)",
                frame(0x0800, v4(client, vip, 6, 0, 0, &ports(5555, 1500))),
                Stat::RedirectVip,
            ),
            (
                "non-first fragment to VIP",
                frame(0x0800, v4(client, vip, 17, 185, 0, &[0; 16])),
                Stat::RedirectUnparsed,
            ),
            (
                "non-first fragment elsewhere",
                frame(0x0800, v4(client, [10, 0, 0, 2], 17, 185, 0, &[0; 16])),
                Stat::Pass,
            ),
            (
                "first fragment to VIP:7 (user space drops it)",
                frame(0x0800, v4(client, vip, 17, 0x2000, 0, &ports(5555, 7))),
                Stat::RedirectVip,
            ),
            (
                "ICMP echo to VIP",
                frame(0x0800, v4(client, vip, 1, 0, 0, &icmp(8, 7, &[]))),
                Stat::RedirectVip,
            ),
            (
                "UDP to SNAT addr in NAT range",
                frame(0x0800, v4(client, snat, 17, 0, 0, &ports(53, 40000))),
                Stat::RedirectSnat,
            ),
            (
                "UDP to SNAT addr below NAT range",
                frame(0x0800, v4(client, snat, 17, 0, 0, &ports(53, 39999))),
                Stat::Pass,
            ),
            (
                "ICMP echo reply to SNAT addr, id in range",
                frame(0x0800, v4(client, snat, 1, 0, 0, &icmp(0, 45000, &[]))),
                Stat::RedirectSnat,
            ),
            (
                "ICMP echo reply to SNAT addr, id out of range",
                frame(0x0800, v4(client, snat, 1, 0, 0, &icmp(0, 7, &[]))),
                Stat::Pass,
            ),
            (
                "ICMP unreachable quoting an SNAT flow",
                frame(0x0800, v4(client, snat, 1, 0, 0, &icmp(3, 0, &quoted_ours))),
                Stat::RedirectSnat,
            ),
            (
                "ICMP unreachable quoting the node's ssh",
                frame(
                    0x0800,
                    v4(client, snat, 1, 0, 0, &icmp(3, 0, &quoted_other)),
                ),
                Stat::Pass,
            ),
            (
                "UDP from DNAT backend 10.1.0.1:8080",
                frame(0x0800, v4(backend, client, 17, 0, 0, &ports(8080, 5555))),
                Stat::RedirectBackend,
            ),
            (
                "UDP from backend's other port",
                frame(0x0800, v4(backend, client, 17, 0, 0, &ports(8081, 5555))),
                Stat::Pass,
            ),
            (
                "TCP from a full-NAT endpoint (not DNAT)",
                frame(
                    0x0800,
                    v4([10, 1, 0, 2], client, 6, 0, 0, &ports(1500, 5555)),
                ),
                Stat::Pass,
            ),
            (
                "IPv6 UDP to VIP:53",
                frame(
                    0x86dd,
                    v6("2001:db8::5", "2001:db8::1", 17, &ports(5555, 53)),
                ),
                Stat::RedirectVip,
            ),
            (
                "IPv6 fragment header to VIP",
                frame(
                    0x86dd,
                    v6("2001:db8::5", "2001:db8::1", 44, &[17, 0, 0, 1, 0, 0, 0, 1]),
                ),
                Stat::RedirectUnparsed,
            ),
            (
                "IPv6 first fragment to VIP:53: its ports are read past the fragment header",
                frame(
                    0x86dd,
                    v6(
                        "2001:db8::5",
                        "2001:db8::1",
                        44,
                        &frag6(17, 0, true, 3, &ports(5555, 53)),
                    ),
                ),
                Stat::RedirectVip,
            ),
            (
                "IPv6 later fragment from a DNAT backend, before any first",
                frame(
                    0x86dd,
                    v6(
                        "2001:db8::99",
                        "2001:db8::5",
                        44,
                        &frag6(17, 1480, false, 7, &[0; 16]),
                    ),
                ),
                Stat::Pass,
            ),
            (
                "IPv6 first fragment from DNAT backend [2001:db8::99]:53",
                frame(
                    0x86dd,
                    v6(
                        "2001:db8::99",
                        "2001:db8::5",
                        44,
                        &frag6(17, 0, true, 7, &ports(53, 5555)),
                    ),
                ),
                Stat::RedirectBackend,
            ),
            (
                "IPv6 later fragment of that datagram follows its first",
                frame(
                    0x86dd,
                    v6(
                        "2001:db8::99",
                        "2001:db8::5",
                        44,
                        &frag6(17, 1480, false, 7, &[0; 16]),
                    ),
                ),
                Stat::RedirectUnparsed,
            ),
            (
                "IPv6 later fragment of another datagram from that backend",
                frame(
                    0x86dd,
                    v6(
                        "2001:db8::99",
                        "2001:db8::5",
                        44,
                        &frag6(17, 1480, false, 8, &[0; 16]),
                    ),
                ),
                Stat::Pass,
            ),
            (
                "IPv4 later fragment from a DNAT backend, before any first",
                frame(0x0800, v4(backend, client, 17, 185, 0, &[0; 16])),
                Stat::Pass,
            ),
            (
                "IPv4 first fragment from DNAT backend 10.1.0.1:8080",
                frame(
                    0x0800,
                    v4(backend, client, 17, 0x2000, 0, &ports(8080, 5555)),
                ),
                Stat::RedirectBackend,
            ),
            (
                "IPv4 later fragment of that datagram follows its first",
                frame(0x0800, v4(backend, client, 17, 185, 0, &[0; 16])),
                Stat::RedirectUnparsed,
            ),
            (
                "IPv4 later fragment with another protocol: another datagram",
                frame(0x0800, v4(backend, client, 6, 185, 0, &[0; 16])),
                Stat::Pass,
            ),
            (
                "IPv4 first fragment to SNAT 10.9.9.9:45000",
                frame(0x0800, v4(client, snat, 17, 0x2000, 0, &ports(53, 45000))),
                Stat::RedirectSnat,
            ),
            (
                "IPv4 later fragment of that datagram follows its first",
                frame(0x0800, v4(client, snat, 17, 185, 0, &[0; 16])),
                Stat::RedirectUnparsed,
            ),
            (
                "IPv6 hop-by-hop elsewhere",
                frame(
                    0x86dd,
                    v6("2001:db8::5", "2001:db8::2", 0, &[17, 0, 0, 0, 0, 0, 0, 0]),
                ),
                Stat::Pass,
            ),
            (
                "ICMPv6 echo to VIP",
                frame(
                    0x86dd,
                    v6("2001:db8::5", "2001:db8::1", 58, &icmp(128, 1, &[])),
                ),
                Stat::RedirectVip,
            ),
            (
                "ICMPv6 neighbour solicitation to VIP",
                frame(
                    0x86dd,
                    v6("2001:db8::5", "2001:db8::1", 58, &icmp(135, 0, &[0; 16])),
                ),
                Stat::Pass,
            ),
            (
                "UDP from IPv6 DNAT backend",
                frame(
                    0x86dd,
                    v6("2001:db8::99", "2001:db8::5", 17, &ports(53, 5555)),
                ),
                Stat::RedirectBackend,
            ),
            (
                "IPv4 cut short",
                frame(0x0800, vec![0x45, 0, 0, 20, 0, 0]),
                Stat::Malformed,
            ),
            (
                "IPv4 IHL below 5",
                frame(0x0800, v4(client, vip, 17, 0, 0, &ports(5555, 7)))
                    .into_iter()
                    .enumerate()
                    .map(|(i, b)| if i == 14 { 0x44 } else { b })
                    .collect(),
                Stat::Malformed,
            ),
            (
                "UDP header cut short",
                frame(0x0800, v4(client, vip, 17, 0, 0, &[0, 1])),
                Stat::Malformed,
            ),
        ];

        let mut before = prog.stats().expect("stats");
        for (what, f, want) in &table {
            let action = prog.test_run(f).expect("test run");
            let after = prog.stats().expect("stats");
            let mut moved: Vec<Stat> = Vec::new();
            for s in [
                Stat::Pass,
                Stat::RedirectVip,
                Stat::RedirectSnat,
                Stat::RedirectBackend,
                Stat::RedirectUnparsed,
                Stat::Malformed,
            ] {
                if after.get(s) != before.get(s) {
                    moved.push(s);
                }
            }
            assert_eq!(moved, vec![*want], "{what}");
            let redirected = *want != Stat::Pass && *want != Stat::Malformed;
            assert_eq!(
                after.get(Stat::NoSocket) - before.get(Stat::NoSocket),
                u64::from(redirected),
                "{what}: no socket registered, so ours ends as NoSocket"
            );
            assert_eq!(
                action, XDP_PASS,
                "{what}: without a socket everything passes"
            );
            before = after;
        }
    }

    /// The key and value sizes of the loaded maps are what user space writes
    /// (the constants themselves: `io/tests/c_headers.rs`).
    #[test]
    fn the_loaded_maps_have_the_layouts_user_space_writes() {
        use crate::xdp::maps::{config_value, AddrKey, FlowKey, MAX_QUEUES};
        use crate::xdp::stats::STAT_SLOTS;
        use std::mem::size_of;
        let prog = XdpProgram::load_unattached().expect("load (run the tests as root)");
        let maps = prog.steering_maps().expect("maps");
        let layout = |m: &MapHandle| (m.key_size() as usize, m.value_size() as usize);
        let flag = 1; // MapSync's value for a present key
        assert_eq!(layout(&maps.vip_ports), (size_of::<FlowKey>(), flag));
        assert_eq!(layout(&maps.backends), (size_of::<FlowKey>(), flag));
        assert_eq!(layout(&maps.vip_addrs), (size_of::<AddrKey>(), flag));
        assert_eq!(layout(&maps.snat_addrs), (size_of::<AddrKey>(), flag));
        assert_eq!(
            layout(&maps.config),
            (size_of::<u32>(), config_value((0, 0)).len())
        );
        assert_eq!(layout(&prog.xsks), (size_of::<u32>(), size_of::<u32>()));
        assert_eq!(prog.xsks.max_entries(), MAX_QUEUES);
        assert_eq!(layout(&prog.stats), (size_of::<u32>(), size_of::<u64>()));
        assert_eq!(prog.stats.max_entries() as usize, STAT_SLOTS);
    }

    #[test]
    fn sync_applies_only_the_difference() {
        let prog = XdpProgram::load_unattached().expect("load (run the tests as root)");
        let mut sync = MapSync::new(prog.steering_maps().expect("maps"));
        let a = Tables::build(
            TablesSpec {
                services: vec![svc(
                    "10.0.0.1",
                    L4Proto::Udp,
                    7,
                    8,
                    NatMode::Dnat,
                    &[("10.1.0.1", 0)],
                )],
                ..Default::default()
            },
            &Tables::empty(),
        )
        .expect("valid");
        let r = sync.sync(&a).expect("sync");
        // vip_ports 7, 8 + ICMP; vip_addrs 1; backends 7, 8.
        assert_eq!((r.added, r.removed), (6, 0));
        assert_eq!(
            sync.sync(&a).expect("sync"),
            SyncReport::default(),
            "idempotent"
        );
        let b = Tables::build(
            TablesSpec {
                services: vec![svc(
                    "10.0.0.1",
                    L4Proto::Udp,
                    8,
                    9,
                    NatMode::Dnat,
                    &[("10.1.0.1", 0)],
                )],
                ..Default::default()
            },
            &a,
        )
        .expect("valid");
        let r = sync.sync(&b).expect("sync");
        assert_eq!((r.added, r.removed), (2, 2), "port 9 in, port 7 out, twice");
        let keys = sync.maps_for_tests().vip_ports.keys().count();
        assert_eq!(keys, 3, "the kernel map holds exactly the wanted keys");
        let r = sync.sync(&Tables::empty()).expect("sync");
        assert_eq!((r.added, r.removed), (0, 6));
        assert_eq!(sync.maps_for_tests().vip_ports.keys().count(), 0);
    }
}
