//! The namespaced topology every suite runs on, its addresses, and where
//! the balancer's receive work runs ([`Placement`]).
//!
//! All namespaces and veths belong to a [`Lab`] and are removed with it.
//! [`Topology::Bridged`], the UDP suite's max-rate runs' default (LAB-NOTES'
//! lab):
//! ```text
//!  cl: c0 10.98.0.2 ── l0 10.98.0.1 :lb: l1 10.98.1.1 ── p0 :br: br0 ─┬ p1 ── b0 10.98.1.11 :b0
//!      (xlb-pktgen TX)     (contender)                  (bridge)      ├ p2 ── b1 10.98.1.12 :b1
//!                                                                     └ p3 ── b2 10.98.1.13 :b2
//!                                               (each backend's kernel counts and drops at ingress)
//! ```
//! [`Topology::Direct`], also where the paced latency runs, the TCP suite and
//! the flows suite go:
//! ```text
//!  cl: c0 10.98.0.2 ── l0 10.98.0.1 :lb: l1 10.98.1.1 ── b0 10.98.1.2 :be
//!      (xlb-pktgen TX)     (contender)                      + backends .11 .12 .13
//!                                                           (xlb-pktgen RX, AF_XDP)
//! ```
//! The flows suite adds a second client link `c2` — `l2` for its SYN flood
//! (`FloodTopo`).
//!
//! On veth the receiving side's NAPI runs in the sender's softirq, so by
//! default part of the balancer's work lands on the generator's core.
//! [`Placement::Owned`] keeps all of it on the balancer's core, as a NIC's
//! interrupts would; [`Placement::Shared`] is veth's default. The knobs
//! (RPS here, threaded NAPI and NAPI deferral with the contenders that use
//! them) are set per contender.

use std::net::Ipv4Addr;

use anyhow::{anyhow, Context, Result};
use serde::Serialize;
use xlb_dataplane::net::MacAddr;

use xlb_testkit::{netns, Lab, Netns, Veth};

/// The service address.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 98, 9, 100);
/// The UDP service's port.
pub const VIP_PORT: u16 = 7;
/// The TCP service's port on the VIP.
pub const VIP_TCP_PORT: u16 = 80;
/// The backends (all on the sink namespace's interface in `direct`).
pub const BACKENDS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 98, 1, 11),
    Ipv4Addr::new(10, 98, 1, 12),
    Ipv4Addr::new(10, 98, 1, 13),
];
/// The backends' HTTP port (TCP suite).
pub const BE_PORT: u16 = 8080;
/// Backends of the flows suite's flooded TCP service (not counted by the
/// receiver).
pub const FLOOD_BACKENDS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 98, 1, 21),
    Ipv4Addr::new(10, 98, 1, 22),
    Ipv4Addr::new(10, 98, 1, 23),
];
/// The flooded service's port.
pub const FLOOD_PORT: u16 = 80;
/// The flooded service's backend port.
pub const FLOOD_TARGET_PORT: u16 = 8080;
pub(crate) const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 2);
pub(crate) const LB_FRONT: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 1);
pub(crate) const LB_BACK: Ipv4Addr = Ipv4Addr::new(10, 98, 1, 1);
const SINK: Ipv4Addr = Ipv4Addr::new(10, 98, 1, 2);

/// Where the balancer's receive work runs (see the module docs): the UDP
/// suite runs every contender in each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// All of the balancer's work on its own core, as with a NIC whose
    /// interrupts go to that core. AF_XDP workers run as `xlb run
    /// --busy-poll` does: preferred busy polling plus NAPI deferral on the
    /// balancer's veths. veth gives AF_XDP sockets no NAPI id, so the busy
    /// polling itself cannot engage; the deferral keeps the ingress NAPI on
    /// the core where its timer fires (the balancer's, as each run's NET_RX
    /// counts show), at the cost of up to `gro_flush_timeout` of latency. The
    /// kernel contender's ingress NAPI is threaded and its kthread pinned to
    /// the balancer's core.
    Owned,
    /// veth's default: the balancer's ingress receive (XDP and the copy into
    /// the UMEM, or the kernel's veth receive) runs in the generator's
    /// softirq on the generator's core; AF_XDP workers spin while traffic
    /// flows and block in poll() when idle; nftables gets RPS to the
    /// balancer's core, its best setting in LAB-NOTES.
    Shared,
}

impl Placement {
    /// Short name (tables, chart).
    pub fn short(self) -> &'static str {
        match self {
            Placement::Owned => "owned",
            Placement::Shared => "shared",
        }
    }
}

/// How the backends are wired and what counts their packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Topology {
    /// LAB-NOTES' lab, where its reference rates were measured: the
    /// balancer's backend-side veth goes to a bridge namespace (static FDB
    /// entries, bridge netfilter off) with three backend namespaces, one
    /// backend each. Each backend's kernel counts the service's datagrams at
    /// its interface's ingress (an nftables netdev counter) and drops them,
    /// as a real server's NIC would take them off the wire. No stamps: max
    /// rate only; the paced latency runs use `direct`.
    Bridged,
    /// One backend namespace holding the three backend addresses, where
    /// xlb-pktgen's AF_XDP receiver checks every frame's stamp, order and
    /// checksum. Its receive (XDP and the copy into its UMEM) runs in the
    /// balancer's transmit on the balancer's core, its thread on the
    /// receiver CPU: both cost the balancer and the generator capacity that a
    /// separate backend machine would not.
    Direct,
}

impl Topology {
    /// Short name.
    pub fn short(self) -> &'static str {
        match self {
            Topology::Bridged => "bridged",
            Topology::Direct => "direct",
        }
    }
}

/// The client — balancer — backends namespaces and their interfaces.
pub(crate) struct Topo {
    pub(crate) lab: Lab,
    pub(crate) cl: Netns,
    pub(crate) lb: Netns,
    /// The (first) backend namespace and its interface.
    pub(crate) be: Netns,
    pub(crate) c0: String,
    pub(crate) l0: String,
    pub(crate) l1: String,
    pub(crate) b0: String,
    /// `bridged`: every backend's (namespace, interface), each counting the
    /// service's datagrams in [`SINK_TABLE`]; empty in `direct`, where
    /// xlb-pktgen receives on `b0`.
    pub(crate) sinks: Vec<(Netns, String)>,
}

/// The backends' nftables netdev table (`bridged`), its counter named
/// `delivered`.
const SINK_TABLE: &str = "xlbsink";

/// A veth pair `a` (in `ns_a`, address `cidr_a`) <-> `b` (in `ns_b`,
/// `cidr_b`), one queue each.
fn veth(ns_a: &Netns, a: &str, cidr_a: &str, ns_b: &Netns, b: &str, cidr_b: &str) -> Result<()> {
    Veth::new(ns_a, a, ns_b, b).create()?;
    ns_a.addr(a, cidr_a)?;
    ns_b.addr(b, cidr_b)?;
    Ok(())
}

/// Both topologies' front: namespaces `cl` and `lb`, the client's veth to
/// the balancer, its route to the VIP, forwarding on in the balancer.
/// Returns (cl, lb, c0, l0).
fn front(lab: &mut Lab) -> Result<(Netns, Netns, String, String)> {
    let cl = lab.ns("cl")?;
    let lb = lab.ns("lb")?;
    let (c0, l0) = (lab.ifname("c0"), lab.ifname("l0"));
    veth(
        &cl,
        &c0,
        &format!("{CLIENT}/24"),
        &lb,
        &l0,
        &format!("{LB_FRONT}/24"),
    )?;
    cl.route(&format!("{VIP}/32"), &LB_FRONT.to_string())?;
    lb.sysctl("net.ipv4.ip_forward", "1")?;
    Ok((cl, lb, c0, l0))
}

/// A backend namespace's address on `iface` and its route back to the
/// client's subnet through the balancer.
fn backend_addr(ns: &Netns, iface: &str, addr: Ipv4Addr, route: bool) -> Result<()> {
    ns.addr(iface, &format!("{addr}/24"))?;
    if route {
        ns.route("10.98.0.0/24", &LB_BACK.to_string())?;
    }
    Ok(())
}

/// The client — balancer — backends topology.
pub(crate) fn build_direct() -> Result<Topo> {
    let mut lab = Lab::new()?;
    let (cl, lb, c0, l0) = front(&mut lab)?;
    let be = lab.ns("be")?;
    let (l1, b0) = (lab.ifname("l1"), lab.ifname("b0"));
    veth(
        &lb,
        &l1,
        &format!("{LB_BACK}/24"),
        &be,
        &b0,
        &format!("{SINK}/24"),
    )?;
    for (i, b) in BACKENDS.into_iter().enumerate() {
        backend_addr(&be, &b0, b, i == 0)?;
    }
    // Let the balancer learn the backends (and they it) before any contender.
    let mac = be.mac(&b0)?;
    for b in BACKENDS {
        lb.neigh_permanent(&b.to_string(), &mac, &l1)?;
    }
    Ok(Topo {
        lab,
        cl,
        lb,
        be,
        c0,
        l0,
        l1,
        b0,
        sinks: Vec::new(),
    })
}

/// The client — balancer — bridge — three backends topology (see
/// [`Topology::Bridged`]).
pub(crate) fn build_bridged() -> Result<Topo> {
    let mut lab = Lab::new()?;
    let (cl, lb, c0, l0) = front(&mut lab)?;
    let mut br = lab.bridge("br")?;
    let (l1, p0) = (lab.ifname("l1"), lab.ifname("p0"));
    Veth::new(&lb, &l1, br.ns(), &p0).create()?;
    lb.addr(&l1, &format!("{LB_BACK}/24"))?;
    br.plug(&p0, &lb)?;
    br.static_fdb(&p0, &lb.mac(&l1)?)?;
    let mut sinks = Vec::new();
    for (i, b) in BACKENDS.into_iter().enumerate() {
        let ns = lab.ns(&format!("b{i}"))?;
        let (p, bi) = (
            lab.ifname(&format!("p{}", i + 1)),
            lab.ifname(&format!("b{i}")),
        );
        br.attach(&p, &ns, &bi, 1)?;
        backend_addr(&ns, &bi, b, true)?;
        // Backends that only receive are never learned: without static
        // entries the bridge floods every frame to all of them (LAB-NOTES).
        let mac = ns.mac(&bi)?;
        br.static_fdb(&p, &mac)?;
        ns.nft(&format!(
            "table netdev {SINK_TABLE} {{\n  counter delivered {{ }}\n  chain ingress {{\n    type filter hook ingress device \"{bi}\" priority 0; policy accept;\n    udp dport {VIP_PORT} counter name \"delivered\" drop\n  }}\n}}\n"
        ))
        .with_context(|| format!("loading the sink counter in {ns}"))?;
        lb.neigh_permanent(&b.to_string(), &mac, &l1)?;
        sinks.push((ns, bi));
    }
    let (be, b0) = sinks[0].clone();
    Ok(Topo {
        lab,
        cl,
        lb,
        be,
        c0,
        l0,
        l1,
        b0,
        sinks,
    })
}

/// Datagrams counted so far at each backend of a `bridged` topology.
pub(crate) fn delivered_per_backend(t: &Topo) -> Result<Vec<u64>> {
    t.sinks
        .iter()
        .map(|(ns, _)| Ok(ns.nft_counter("netdev", SINK_TABLE, "delivered")?))
        .collect()
}

/// The direct topology plus a second client link `c2` — `l2` that carries
/// the flows suite's SYN flood, so two generators run side by side; the
/// backend namespace also holds [`FLOOD_BACKENDS`], and counts and drops
/// the flood's SYNs in nftables ([`syn_counter`]).
pub(crate) struct FloodTopo {
    /// The direct topology.
    pub(crate) t: Topo,
    /// The client's flood interface.
    pub(crate) c2: String,
    /// The balancer's flood interface.
    pub(crate) l2: String,
}

/// Build a [`FloodTopo`].
pub(crate) fn build_flood() -> Result<FloodTopo> {
    let t = build_direct()?;
    let (c2, l2) = (t.lab.ifname("c2"), t.lab.ifname("l2"));
    veth(&t.cl, &c2, "10.98.2.2/24", &t.lb, &l2, "10.98.2.1/24")?;
    let mac = t.be.mac(&t.b0)?;
    for b in FLOOD_BACKENDS {
        t.be.addr(&t.b0, &format!("{b}/24"))?;
        t.lb.neigh_permanent(&b.to_string(), &mac, &t.l1)?;
    }
    // The backends count the flood's SYNs and drop them (no RST storm back).
    let rules = format!(
        "table ip xlbsink {{\n  counter syns {{ }}\n  chain pre {{\n    type filter hook prerouting priority raw; policy accept;\n    ip daddr {{ {}, {}, {} }} tcp dport {FLOOD_TARGET_PORT} counter name syns drop\n  }}\n}}\n",
        FLOOD_BACKENDS[0], FLOOD_BACKENDS[1], FLOOD_BACKENDS[2]
    );
    t.be.nft(&rules)
        .context("loading the backends' SYN counter")?;
    Ok(FloodTopo { t, c2, l2 })
}

/// SYNs of the flood counted so far at the backends of a [`FloodTopo`].
pub(crate) fn syn_counter(be: &Netns) -> Result<u64> {
    Ok(be.nft_counter("ip", "xlbsink", "syns")?)
}

/// The MAC address of `iface` in `ns`.
pub(crate) fn mac(ns: &Netns, iface: &str) -> Result<MacAddr> {
    ns.mac(iface)?
        .parse()
        .map_err(|_| anyhow!("bad MAC of {iface}"))
}

/// Steer `iface`'s receive work in `ns` to the CPUs of `mask` (hex) with
/// RPS; "0" turns it off.
pub(crate) fn set_rps(ns: &str, iface: &str, mask: &str) -> Result<()> {
    let path = format!("/sys/class/net/{iface}/queues/rx-0/rps_cpus");
    netns::exec(ns, &["sh", "-c", &format!("echo {mask} > {path}")])?;
    Ok(())
}
