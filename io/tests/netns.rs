//! End-to-end tests of the runtime on veth pairs between network namespaces,
//! with real kernel sockets on both sides. Root required (they fail, never
//! skip, without it).
//!
//! Every test builds its own namespaces in a [`Lab`] of the test kit (unique
//! names per process and lab, so the tests run in parallel), runs the
//! runtime from a thread that has entered the balancer's namespace (XDP
//! attach/detach and AF_XDP binds act on the caller's namespace), and the
//! lab deletes the namespaces - and with them every veth and XDP program -
//! even when the test panics. All traffic stays between these namespaces.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xlb_dataplane::drop::DropReason;
use xlb_dataplane::frame::{Frame, Verdict};
use xlb_dataplane::pipeline::Processor;
use xlb_dataplane::tables::{NatMode, ServiceSpec, Tables, TablesHandle, TablesSpec};
use xlb_io::{Runtime, RuntimeConfig, Stat, XdpMode};
use xlb_testkit::fixtures::{self, Service, ToIp};
use xlb_testkit::{netns, Lab, Netns, Veth};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 1, 100);
const VIP_PORT: u16 = 7;
const LB_ADDR: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd99, 1, 0, 0, 0, 0, 0, 0x100);

// ---------------------------------------------------------------- lab

/// Run a command (in the calling thread's namespace); its output, or a
/// panic with its stderr.
fn run(args: &[&str]) -> String {
    xlb_testkit::sh(args).unwrap_or_else(|e| panic!("{e}"))
}

/// A veth pair `a` (in `ns_a`) <-> `b` (in `ns_b`) with `queues` active
/// channels of twice as many queues.
fn veth(ns_a: &Netns, a: &str, ns_b: &Netns, b: &str, queues: u32) {
    Veth::new(ns_a, a, ns_b, b)
        .queues(queues * 2)
        .channels(queues)
        .create()
        .expect("veth pair");
}

/// Whether any link of the calling thread's namespace has an XDP program.
fn xdp_attached_here() -> bool {
    run(&["ip", "-o", "link"]).contains("xdp")
}

// ---------------------------------------------------------------- processors

/// Answers UDP datagrams to VIP:VIP_PORT by swapping MACs, addresses and
/// ports (checksums are unchanged by swaps) and sending them back out of the
/// port they came in on. Drops everything else as `NoService`.
struct Reflector {
    seen: Arc<AtomicU64>,
}

fn is_udp_to(p: &[u8], dst: Ipv4Addr, port: u16) -> Option<usize> {
    if p.len() < 14 + 20 + 8 || p[12..14] != [0x08, 0x00] {
        return None;
    }
    let ihl = usize::from(p[14] & 0xf) * 4;
    let l4 = 14 + ihl;
    if ihl < 20 || p.len() < l4 + 8 || p[14 + 9] != 17 || p[30..34] != dst.octets() {
        return None;
    }
    (u16::from_be_bytes([p[l4 + 2], p[l4 + 3]]) == port).then_some(l4)
}

/// UDP in IPv6 without extension headers to `dst`:`port`.
fn is_udp6_to(p: &[u8], dst: Ipv6Addr, port: u16) -> bool {
    p.len() >= 14 + 40 + 8
        && p[12..14] == [0x86, 0xdd]
        && p[20] == 17
        && p[38..54] == dst.octets()
        && p[56..58] == port.to_be_bytes()
}

impl Processor for Reflector {
    fn process_batch(
        &mut self,
        _tables: &Tables,
        _now_ns: u64,
        frames: &mut [Frame<'_>],
        verdicts: &mut [Verdict],
    ) {
        for (f, v) in frames.iter_mut().zip(verdicts.iter_mut()) {
            let port = f.rx_port;
            let p = f.data_mut();
            // Payload markers let tests exercise the other verdicts.
            let payload = |l4: usize| p.get(l4 + 8..l4 + 12).unwrap_or_default();
            if let Some(l4) = is_udp_to(p, VIP, VIP_PORT) {
                if payload(l4) == b"PASS" {
                    *v = Verdict::Pass;
                    continue;
                }
                if payload(l4) == b"DROP" {
                    *v = Verdict::Drop(DropReason::SourceNotAllowed);
                    continue;
                }
            }
            let (l4, addr_at, addr_len) = if let Some(l4) = is_udp_to(p, VIP, VIP_PORT) {
                (l4, 26, 4)
            } else if is_udp6_to(p, VIP6, VIP_PORT) {
                (54, 22, 16)
            } else {
                *v = Verdict::Drop(DropReason::NoService);
                continue;
            };
            for i in 0..6 {
                p.swap(i, 6 + i);
            }
            for i in 0..addr_len {
                p.swap(addr_at + i, addr_at + addr_len + i);
            }
            for i in 0..2 {
                p.swap(l4 + i, l4 + 2 + i);
            }
            self.seen.fetch_add(1, Ordering::Relaxed);
            *v = Verdict::Tx(port);
        }
    }
}

/// A UDP service on `vip`:`port` to one backend, as these tests give the
/// runtime's steering program its VIP.
fn udp_service(vip: impl ToIp, port: u16, mode: NatMode, backend: (impl ToIp, u16)) -> ServiceSpec {
    Service::udp(vip, port)
        .mode(mode)
        .ep(backend.0, backend.1)
        .timeout(60)
        .name("test")
        .build()
}

/// The VIP as a UDP DNAT service (to the client's port 9), for the tests
/// whose processor reflects datagrams itself.
fn echo_tables() -> TablesHandle {
    fixtures::handle([udp_service(VIP, VIP_PORT, NatMode::Dnat, (CLIENT_ADDR, 9))])
}

/// Send `n` datagrams to `to` from `sockets` fresh sockets (round robin) and
/// count the echoes that come back. Bounded: one 500 ms wait per datagram.
fn udp_exchange(to: SocketAddr, n: usize, sockets: usize) -> usize {
    let any = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socks: Vec<UdpSocket> = (0..sockets)
        .map(|_| {
            let s = UdpSocket::bind(any).expect("bind");
            s.connect(to).expect("connect");
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .expect("timeout");
            s
        })
        .collect();
    let mut ok = 0;
    let mut buf = [0u8; 256];
    for i in 0..n {
        let s = &socks[i % sockets];
        let msg = format!("xlb-{i}");
        s.send(msg.as_bytes()).expect("send");
        if let Ok(len) = s.recv(&mut buf) {
            if &buf[..len] == msg.as_bytes() {
                ok += 1;
            }
        }
    }
    ok
}

/// The standard two-namespace topology: client ns <-> lb ns, VIP routed via
/// the lb. Returns (lb ns, client ns, lb ifname).
fn client_lb(lab: &mut Lab, queues: u32) -> (Netns, Netns, String) {
    let lb = lab.ns("lb").expect("namespace");
    let cl = lab.ns("cl").expect("namespace");
    let lif = lab.ifname("l");
    let cif = lab.ifname("c");
    veth(&lb, &lif, &cl, &cif, queues);
    lb.addr(&lif, &format!("{LB_ADDR}/24")).expect("address");
    cl.addr(&cif, &format!("{CLIENT_ADDR}/24"))
        .expect("address");
    cl.route("10.99.1.0/24", &LB_ADDR.to_string())
        .expect("route to the VIPs");
    (lb, cl, lif)
}

fn config(ifaces: Vec<String>) -> RuntimeConfig {
    RuntimeConfig {
        ifaces,
        xdp_mode: XdpMode::Native,
        frame_count: 2048,
        ..RuntimeConfig::default()
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn udp_to_a_vip_is_answered_through_af_xdp_and_other_traffic_reaches_the_kernel() {
    let mut lab = Lab::new().expect("lab (root?)");
    let (lb, cl, lif) = client_lb(&mut lab, 1);
    std::thread::scope(|s| {
        lb.scoped(s, || {
            let seen = Arc::new(AtomicU64::new(0));
            let tables = echo_tables();
            let seen2 = seen.clone();
            let rt = Runtime::start(config(vec![lif.clone()]), tables, move |_| {
                Box::new(Reflector {
                    seen: seen2.clone(),
                })
            })
            .expect("runtime starts");
            assert_eq!(rt.ports().len(), 1);
            assert_eq!(
                rt.ports()[0].xdp_mode,
                XdpMode::Native,
                "veth does native XDP"
            );
            assert_eq!(rt.ports()[0].iface.addrs, vec![IpAddr::V4(LB_ADDR)]);
            assert!(lb.xdp_attached().expect("ip link"));

            // The kernel's own service on the lb address: must not be stolen.
            let listener = TcpListener::bind((LB_ADDR, 8080)).expect("listen");
            listener.set_nonblocking(false).expect("blocking");
            let server = s.spawn(move || {
                let (mut c, _) = listener.accept().expect("accept");
                c.set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                let mut b = [0u8; 5];
                c.read_exact(&mut b).expect("read");
                c.write_all(&b).expect("write");
            });

            let client = cl
                .scoped(s, || {
                    let echoed = udp_exchange(SocketAddr::from((VIP, VIP_PORT)), 50, 1);
                    let mut t = TcpStream::connect_timeout(
                        &SocketAddr::from((LB_ADDR, 8080)),
                        Duration::from_secs(5),
                    )
                    .expect("TCP to the lb's own address still works");
                    t.set_read_timeout(Some(Duration::from_secs(5)))
                        .expect("timeout");
                    t.write_all(b"hello").expect("write");
                    let mut b = [0u8; 5];
                    t.read_exact(&mut b).expect("read");
                    assert_eq!(&b, b"hello");
                    // UDP to a port nobody configured: the kernel answers (ICMP
                    // port unreachable -> ECONNREFUSED), xlb never sees it.
                    // Verdicts other than Tx: nothing comes back, both are counted.
                    let m = UdpSocket::bind("0.0.0.0:0").expect("bind");
                    m.connect((VIP, VIP_PORT)).expect("connect");
                    m.send(b"PASS").expect("send");
                    m.send(b"DROP").expect("send");
                    let u = UdpSocket::bind("0.0.0.0:0").expect("bind");
                    u.connect((LB_ADDR, 9999)).expect("connect");
                    u.set_read_timeout(Some(Duration::from_secs(2)))
                        .expect("timeout");
                    u.send(b"x").expect("send");
                    let refused = u.recv(&mut [0u8; 8]).is_err();
                    (echoed, refused)
                })
                .join()
                .expect("client thread");
            server.join().expect("server thread");
            let (echoed, refused) = client;
            assert!(echoed >= 48, "only {echoed}/50 datagrams came back");
            assert!(
                refused,
                "the kernel handled the datagram to an unconfigured port"
            );
            let neigh = cl
                .ip(&["neigh", "show", &LB_ADDR.to_string()])
                .expect("ip neigh");
            assert!(
                neigh.contains("lladdr"),
                "ARP through XDP_PASS works: {neigh}"
            );

            let st = rt.stats();
            assert!(st.rx() >= 52, "{st:?}");
            assert!(st.tx() >= 48, "{st:?}");
            assert_eq!(
                st.workers[0].not_ours, 1,
                "Verdict::Pass is counted, not delivered"
            );
            assert_eq!(
                st.workers[0].drops[DropReason::SourceNotAllowed as usize],
                1
            );
            assert!(st.xdp[0].get(Stat::RedirectVip) >= 50, "{st:?}");
            assert!(st.xdp[0].get(Stat::Pass) > 0, "ARP/TCP passed: {st:?}");
            assert!(seen.load(Ordering::Relaxed) >= 50);
            rt.stop().expect("clean stop");
            assert!(
                !lb.xdp_attached().expect("ip link"),
                "program detached on stop"
            );
        })
        .join()
        .expect("lb thread");
    });
}

#[test]
fn two_queues_get_two_workers_that_both_carry_traffic() {
    let mut lab = Lab::new().expect("lab (root?)");
    let (lb, cl, lif) = client_lb(&mut lab, 2);
    std::thread::scope(|s| {
        lb.scoped(s, || {
            let tables = echo_tables();
            let seen = Arc::new(AtomicU64::new(0));
            let rt = Runtime::start(config(vec![lif.clone()]), tables, move |_| {
                Box::new(Reflector { seen: seen.clone() })
            })
            .expect("runtime starts");
            let echoed = cl
                .scoped(s, || {
                    udp_exchange(SocketAddr::from((VIP, VIP_PORT)), 128, 32)
                })
                .join()
                .expect("client");
            let st = rt.stats();
            assert_eq!(st.workers.len(), 2, "one worker per queue");
            assert!(echoed >= 120, "only {echoed}/128 came back; {st:?}");
            assert!(
                st.workers.iter().all(|w| w.rx > 0),
                "32 flows spread over both queues: {:?}",
                st.workers.iter().map(|w| w.rx).collect::<Vec<_>>()
            );
            rt.stop().expect("clean stop");
        })
        .join()
        .expect("lb thread");
    });
}

#[test]
fn a_restart_after_a_crash_detaches_the_stale_program_and_serves_again() {
    let mut lab = Lab::new().expect("lab (root?)");
    let (lb, cl, lif) = client_lb(&mut lab, 1);
    std::thread::scope(|s| {
        lb.scoped(s, || {
            let start = || {
                let tables =
                    fixtures::handle([udp_service(VIP, VIP_PORT, NatMode::Dnat, (CLIENT_ADDR, 9))]);
                let seen = Arc::new(AtomicU64::new(0));
                Runtime::start(config(vec![lif.clone()]), tables, move |_| {
                    Box::new(Reflector { seen: seen.clone() })
                })
                .expect("runtime starts")
            };
            let rt = start();
            rt.abandon(); // as if the process died: program stays attached
            assert!(
                lb.xdp_attached().expect("ip link"),
                "the crashed run left its program behind"
            );
            let rt = start();
            let echoed = cl
                .scoped(s, || udp_exchange(SocketAddr::from((VIP, VIP_PORT)), 20, 1))
                .join()
                .expect("client");
            assert!(echoed >= 19, "only {echoed}/20 after restart");
            rt.stop().expect("clean stop");
            assert!(!lb.xdp_attached().expect("ip link"));
        })
        .join()
        .expect("lb thread");
    });
}

#[test]
fn errors_name_the_problem() {
    let mut lab = Lab::new().expect("lab (root?)");
    let lb = lab.ns("lb").expect("namespace");
    let br = lab.ifname("br");
    std::thread::scope(|s| {
        lb.scoped(s, || {
            let r = Runtime::start(
                config(vec!["xlb-nope0".into()]),
                TablesHandle::new(),
                |_| {
                    Box::new(Reflector {
                        seen: Arc::default(),
                    })
                },
            );
            let e = r.expect_err("missing interface");
            assert!(
                matches!(e, xlb_io::RuntimeError::InterfaceMissing(ref n) if n == "xlb-nope0"),
                "{e}"
            );
            assert!(e.to_string().contains("does not exist"));

            run(&["ip", "link", "add", &br, "type", "bridge"]);
            run(&["ip", "link", "set", &br, "up"]);
            let cfg = RuntimeConfig {
                queues: Some(4),
                ..config(vec![br.clone()])
            };
            let e = Runtime::start(cfg, TablesHandle::new(), |_| {
                Box::new(Reflector {
                    seen: Arc::default(),
                })
            })
            .expect_err("4 queues on a 1-queue device");
            assert!(matches!(e, xlb_io::RuntimeError::QueueMismatch(_)), "{e}");
            assert!(!xdp_attached_here(), "nothing attached by a failed start");
        })
        .join()
        .expect("lb thread");
    });
}

// ------------------------------------------- two interfaces, one shared UMEM

const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 99, 2, 2);
const LB_BACKSIDE: Ipv4Addr = Ipv4Addr::new(10, 99, 2, 1);

/// RFC 1624 (eqn. 3) incremental checksum update for replacing `old` by `new`
/// (equal even lengths).
fn csum_replace(csum: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut sum = u32::from(!csum);
    for (o, n) in old.chunks(2).zip(new.chunks(2)) {
        sum += u32::from(!u16::from_be_bytes([o[0], o[1]]));
        sum += u32::from(u16::from_be_bytes([n[0], n[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Rewrite the IPv4 address at `at` (12 = source, 16 = destination, relative
/// to the IP header) and fix the IP and UDP checksums.
fn rewrite_v4(p: &mut [u8], l4: usize, at: usize, new: Ipv4Addr) {
    let off = 14 + at;
    let old: [u8; 4] = p[off..off + 4].try_into().expect("4 bytes");
    let ip_sum = u16::from_be_bytes([p[24], p[25]]);
    p[24..26].copy_from_slice(&csum_replace(ip_sum, &old, &new.octets()).to_be_bytes());
    let udp_sum = u16::from_be_bytes([p[l4 + 6], p[l4 + 7]]);
    if udp_sum != 0 {
        let mut s = csum_replace(udp_sum, &old, &new.octets());
        if s == 0 {
            s = 0xffff;
        }
        p[l4 + 6..l4 + 8].copy_from_slice(&s.to_be_bytes());
    }
    p[off..off + 4].copy_from_slice(&new.octets());
}

fn is_udp_from(p: &[u8], src: Ipv4Addr, port: u16) -> Option<usize> {
    if p.len() < 14 + 20 + 8 || p[12..14] != [0x08, 0x00] || p[14 + 9] != 17 {
        return None;
    }
    let ihl = usize::from(p[14] & 0xf) * 4;
    let l4 = 14 + ihl;
    if ihl < 20 || p.len() < l4 + 8 || p[26..30] != src.octets() {
        return None;
    }
    (u16::from_be_bytes([p[l4], p[l4 + 1]]) == port).then_some(l4)
}

/// A minimal DNAT balancer for one service, driven by the published tables
/// (next hops and port MACs): client -> VIP:7 becomes -> BACKEND:7 on port 1,
/// replies from BACKEND:7 become VIP:7 -> client on port 0.
struct MiniDnat;

impl Processor for MiniDnat {
    fn process_batch(
        &mut self,
        tables: &Tables,
        _now_ns: u64,
        frames: &mut [Frame<'_>],
        verdicts: &mut [Verdict],
    ) {
        for (f, v) in frames.iter_mut().zip(verdicts.iter_mut()) {
            let p = f.data_mut();
            let (l4, to_ip, dst_addr_off, new_addr, out_of) =
                if let Some(l4) = is_udp_to(p, VIP, VIP_PORT) {
                    (l4, BACKEND, 16, BACKEND, 1)
                } else if let Some(l4) = is_udp_from(p, BACKEND, VIP_PORT) {
                    let client = Ipv4Addr::new(p[30], p[31], p[32], p[33]);
                    (l4, client, 12, VIP, 0)
                } else {
                    *v = Verdict::Drop(DropReason::NoService);
                    continue;
                };
            let nh = tables
                .next_hops
                .get(&xlb_dataplane::net::Ip16::from(IpAddr::V4(to_ip)));
            let port = tables.port(out_of);
            let (Some(nh), Some(port)) = (nh, port) else {
                *v = Verdict::Drop(DropReason::NoNeighbor);
                continue;
            };
            rewrite_v4(p, l4, dst_addr_off, new_addr);
            p[0..6].copy_from_slice(&nh.mac.0);
            p[6..12].copy_from_slice(&port.mac.0);
            *v = Verdict::Tx(nh.port);
        }
    }
}

#[test]
fn dnat_across_two_interfaces_uses_next_hops_from_netinfo_and_steers_backend_replies() {
    let mut lab = Lab::new().expect("lab (root?)");
    let (lb, cl, lif) = client_lb(&mut lab, 1);
    let be = lab.ns("be").expect("namespace");
    let mif = lab.ifname("m");
    let bif = lab.ifname("b");
    veth(&lb, &mif, &be, &bif, 1);
    lb.addr(&mif, &format!("{LB_BACKSIDE}/24"))
        .expect("address");
    be.addr(&bif, &format!("{BACKEND}/24")).expect("address");
    be.route("10.99.0.0/24", &LB_BACKSIDE.to_string())
        .expect("route back to the clients");
    std::thread::scope(|s| {
        // The backend: a kernel UDP echo server, bounded in time.
        let server = be.scoped(s, || {
            let u = UdpSocket::bind((BACKEND, VIP_PORT)).expect("bind backend");
            u.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            let deadline = Instant::now() + Duration::from_secs(15);
            let mut served = 0;
            let mut buf = [0u8; 512];
            while Instant::now() < deadline && served < 40 {
                if let Ok((n, from)) = u.recv_from(&mut buf) {
                    assert_eq!(
                        from.ip(),
                        IpAddr::V4(CLIENT_ADDR),
                        "DNAT keeps the client address"
                    );
                    u.send_to(&buf[..n], from).expect("echo");
                    served += 1;
                }
            }
            served
        });
        lb.scoped(s, || {
            let service = udp_service(VIP, VIP_PORT, NatMode::Dnat, (BACKEND, VIP_PORT));
            let handle = fixtures::handle([service.clone()]);
            let rt = Runtime::start(
                config(vec![lif.clone(), mif.clone()]),
                handle.clone(),
                |_| Box::new(MiniDnat),
            )
            .expect("runtime starts");
            let ports = rt.port_specs();
            assert_eq!(ports.len(), 2);
            assert_eq!(ports[1].addrs, vec![IpAddr::V4(LB_BACKSIDE)]);
            let hops = xlb_io::kernel::netinfo::next_hops(
                &[IpAddr::V4(BACKEND), IpAddr::V4(CLIENT_ADDR)],
                &ports,
                Duration::from_secs(3),
            )
            .expect("next hops");
            assert_eq!(hops.len(), 2, "both neighbours resolved: {hops:?}");
            assert_eq!(hops[0].1.port, 1, "backend behind port 1");
            assert_eq!(hops[1].1.port, 0, "client behind port 0");
            let t = Tables::build(
                TablesSpec {
                    services: vec![service],
                    next_hops: hops,
                    ports,
                    ..Default::default()
                },
                &handle.current(),
            )
            .expect("valid spec");
            let r = rt.publish(&handle, t).expect("publish + sync");
            assert_eq!(r.added, 0, "same service: the maps already hold its keys");

            let echoed = cl
                .scoped(s, || udp_exchange(SocketAddr::from((VIP, VIP_PORT)), 40, 4))
                .join()
                .expect("client");
            let st = rt.stats();
            assert!(echoed >= 38, "only {echoed}/40 through the backend; {st:?}");
            assert!(st.xdp[0].get(Stat::RedirectVip) >= 40, "{st:?}");
            assert!(
                st.xdp[1].get(Stat::RedirectBackend) >= 38,
                "replies steered by the backends map: {st:?}"
            );
            assert!(st.tx() >= 76, "{st:?}");
            rt.stop().expect("clean stop");
            assert!(!lb.xdp_attached().expect("ip link"));
        })
        .join()
        .expect("lb thread");
        let served = server.join().expect("backend");
        assert!(served >= 38, "backend served {served}");
    });
}

#[test]
fn idle_workers_block_in_poll_and_busy_poll_keeps_spinning() {
    let mut lab = Lab::new().expect("lab (root?)");
    let (lb, _cl, lif) = client_lb(&mut lab, 1);
    std::thread::scope(|s| {
        lb.scoped(s, || {
            for busy in [false, true] {
                let cfg = RuntimeConfig {
                    busy_poll: busy,
                    ..config(vec![lif.clone()])
                };
                let rt = Runtime::start(cfg, TablesHandle::new(), |_| {
                    Box::new(Reflector {
                        seen: Arc::default(),
                    })
                })
                .expect("runtime starts");
                std::thread::sleep(Duration::from_millis(400));
                let sleeps = rt.stats().workers[0].sleeps;
                if busy {
                    assert_eq!(sleeps, 0, "busy_poll never blocks");
                } else {
                    // 400 ms / 50 ms poll timeout: a handful of blocking polls,
                    // not millions of empty spins.
                    assert!((2..=20).contains(&sleeps), "sleeps = {sleeps}");
                }
                rt.stop().expect("clean stop");
            }
        })
        .join()
        .expect("lb thread");
    });
}

fn sysfs_u64(iface: &str, attr: &str) -> u64 {
    let p = format!("/sys/class/net/{iface}/{attr}");
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{p}: {e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{p}: {e}"))
}

#[test]
fn busy_poll_serves_and_defers_napi_to_the_worker_while_it_runs() {
    let mut lab = Lab::new().expect("lab (root?)");
    let (lb, cl, lif) = client_lb(&mut lab, 1);
    // A second balancer interface, whose deferral the operator already chose.
    let l2 = {
        let cl2 = lab.ns("c2").expect("namespace");
        let (l2, c2) = (lab.ifname("l2"), lab.ifname("c2"));
        veth(&lb, &l2, &cl2, &c2, 1);
        l2
    };
    std::thread::scope(|s| {
        lb.scoped(s, || {
            netns::private_sysfs().expect("a sysfs of the namespace");
            assert_eq!(sysfs_u64(&lif, "napi_defer_hard_irqs"), 0);
            std::fs::write(format!("/sys/class/net/{l2}/napi_defer_hard_irqs"), "7")
                .expect("preset");
            let tables = echo_tables();
            let seen = Arc::new(AtomicU64::new(0));
            let seen2 = seen.clone();
            let cfg = RuntimeConfig {
                busy_poll: true,
                ..config(vec![lif.clone(), l2.clone()])
            };
            let rt = Runtime::start(cfg, tables, move |_| {
                Box::new(Reflector {
                    seen: seen2.clone(),
                })
            })
            .expect("runtime starts with busy polling");
            assert_eq!(sysfs_u64(&lif, "napi_defer_hard_irqs"), 2);
            assert_eq!(sysfs_u64(&lif, "gro_flush_timeout"), 200_000);
            assert_eq!(
                sysfs_u64(&l2, "napi_defer_hard_irqs"),
                7,
                "an operator's value is kept"
            );
            let echoed = cl
                .scoped(s, || {
                    udp_exchange(SocketAddr::from((VIP, VIP_PORT)), 200, 4)
                })
                .join()
                .expect("client thread");
            assert!(echoed >= 196, "only {echoed}/200 datagrams came back");
            assert!(seen.load(Ordering::Relaxed) >= 196);
            assert_eq!(rt.stats().workers[0].sleeps, 0, "busy polling never blocks");
            rt.stop().expect("clean stop");
            assert_eq!(sysfs_u64(&lif, "napi_defer_hard_irqs"), 0, "restored");
            assert_eq!(sysfs_u64(&lif, "gro_flush_timeout"), 0, "restored");
            assert_eq!(sysfs_u64(&l2, "napi_defer_hard_irqs"), 7);
        })
        .join()
        .expect("lb thread");
    });
}

#[test]
fn native_xdp_refused_falls_back_to_generic_and_still_serves() {
    // A bridge has no driver XDP: native attach is refused.
    let mut lab = Lab::new().expect("lab (root?)");
    let lb = lab.ns("lb").expect("namespace");
    let br = lab.ifname("br");
    std::thread::scope(|s| {
        lb.scoped(s, || {
            run(&["ip", "link", "add", &br, "type", "bridge"]);
            run(&["ip", "addr", "add", "10.99.5.1/24", "dev", &br]);
            run(&["ip", "link", "set", &br, "up"]);
            let rt = Runtime::start(config(vec![br.clone()]), TablesHandle::new(), |_| {
                Box::new(Reflector {
                    seen: Arc::default(),
                })
            })
            .expect("runtime starts in generic mode");
            assert_eq!(rt.ports()[0].xdp_mode, XdpMode::Generic);
            assert!(run(&["ip", "-o", "link", "show", &br]).contains("xdpgeneric"));
            rt.stop().expect("clean stop");
            assert!(!xdp_attached_here());
        })
        .join()
        .expect("lb thread");
    });
}

#[test]
fn the_pass_program_attaches_to_a_peer_and_detaches_on_drop() {
    let mut lab = Lab::new().expect("lab (root?)");
    let (_lb, cl, _lif) = client_lb(&mut lab, 1);
    let cif = lab.ifname("c");
    std::thread::scope(|s| {
        cl.scoped(s, || {
            let idx = xlb_io::kernel::netinfo::ifindex(&cif).expect("ifindex");
            let p = xlb_io::attach_pass_program(idx, XdpMode::Native).expect("attach");
            assert!(xdp_attached_here());
            drop(p);
            assert!(!xdp_attached_here(), "detached on drop");
            // A plain attach survives its owner; detach_stale cleans up.
            let p = xlb_io::attach_pass_program(idx, XdpMode::Native).expect("attach");
            std::mem::forget(p);
            assert_eq!(xlb_io::detach_stale(idx).expect("detach"), 1);
            assert!(!xdp_attached_here());
        })
        .join()
        .expect("client thread");
    });
}

#[test]
fn ipv6_udp_to_a_vip_is_answered_and_neighbour_discovery_passes() {
    let mut lab = Lab::new().expect("lab (root?)");
    let (lb, cl, lif) = client_lb(&mut lab, 1);
    let cif = lab.ifname("c");
    lb.addr_nodad(&lif, "fd99::1/64").expect("address");
    cl.addr_nodad(&cif, "fd99::2/64").expect("address");
    cl.route("fd99:1::/64", "fd99::1")
        .expect("route to the VIPs");
    std::thread::scope(|s| {
        lb.scoped(s, || {
            let tables = fixtures::handle([udp_service(
                VIP6,
                VIP_PORT,
                NatMode::Dnat,
                ("fd99::2".parse::<IpAddr>().expect("ip"), 9),
            )]);
            let rt = Runtime::start(config(vec![lif.clone()]), tables, |_| {
                Box::new(Reflector {
                    seen: Arc::default(),
                })
            })
            .expect("runtime starts");
            let echoed = cl
                .scoped(s, || {
                    udp_exchange(SocketAddr::from((VIP6, VIP_PORT)), 30, 2)
                })
                .join()
                .expect("client");
            let st = rt.stats();
            assert!(echoed >= 29, "only {echoed}/30 over IPv6; {st:?}");
            assert!(st.xdp[0].get(Stat::RedirectVip) >= 30, "{st:?}");
            let neigh = cl
                .ip(&["-6", "neigh", "show", "fd99::1"])
                .expect("ip neigh");
            assert!(
                neigh.contains("lladdr"),
                "NDP through XDP_PASS works: {neigh}"
            );
            rt.stop().expect("clean stop");
        })
        .join()
        .expect("lb thread");
    });
}

/// Neighbours come from rtnetlink: the dump sees a permanent entry on a veth
/// in a namespace of ours, and the watcher reports its MAC changing (and the
/// entry going) within a second, in that namespace only.
#[test]
fn neighbours_are_read_and_watched_over_rtnetlink() {
    let mut lab = Lab::new().expect("lab (root?)");
    let (lb, _cl, lif) = client_lb(&mut lab, 1);
    let peer: IpAddr = "10.99.0.77".parse().expect("ip");
    let (mac1, mac2) = ("02:00:00:00:77:01", "02:00:00:00:77:02");
    let neigh = |verb: &str, mac: Option<&str>| {
        let p = peer.to_string();
        let mut args = vec!["neigh", verb, &p];
        if let Some(m) = mac {
            args.extend(["lladdr", m, "nud", "permanent"]);
        }
        args.extend(["dev", &lif]);
        lb.ip(&args).expect("ip neigh");
    };
    neigh("add", Some(mac1));
    std::thread::scope(|s| {
        lb.scoped(s, || {
            let table = xlb_io::kernel::netinfo::neighbours().expect("neighbour dump");
            let got = table.get(&(peer, lif.clone())).map(|m| m.to_string());
            assert_eq!(got.as_deref(), Some(mac1), "{table:?}");
            let ifindex = xlb_io::kernel::netinfo::ifindex(&lif).expect("ifindex");

            let mut w = xlb_io::kernel::neigh::NeighWatch::new().expect("subscribe");
            assert!(
                w.next(Duration::from_millis(50)).expect("watch").is_empty(),
                "nothing changed yet"
            );
            neigh("replace", Some(mac2));
            let deadline = Instant::now() + Duration::from_secs(2);
            let mut seen = Vec::new();
            while Instant::now() < deadline && seen.is_empty() {
                seen = w
                    .next(Duration::from_millis(200))
                    .expect("watch")
                    .into_iter()
                    .filter(
                        |e| matches!(e, xlb_io::kernel::neigh::NeighEvent::Changed(n) if n.addr == peer),
                    )
                    .collect();
            }
            match seen.first() {
                Some(xlb_io::kernel::neigh::NeighEvent::Changed(n)) => {
                    assert_eq!(n.ifindex, ifindex);
                    assert_eq!(n.mac.map(|m| m.to_string()).as_deref(), Some(mac2));
                }
                other => panic!("no change reported: {other:?}"),
            }
            neigh("del", None);
            let deadline = Instant::now() + Duration::from_secs(2);
            let mut removed = false;
            while Instant::now() < deadline && !removed {
                removed = w
                    .next(Duration::from_millis(200))
                    .expect("watch")
                    .iter()
                    .any(|e| matches!(e, xlb_io::kernel::neigh::NeighEvent::Removed(n) if n.addr == peer));
            }
            assert!(removed, "removal reported");
            let table = xlb_io::kernel::netinfo::neighbours().expect("neighbour dump");
            assert!(!table.contains_key(&(peer, lif.clone())));
        })
        .join()
        .expect("namespace thread");
    });
}

/// Routes come from rtnetlink (`RTM_GETROUTE`): an on-link destination is
/// its own next hop, a routed one goes to its gateway (v4 and v6), and an
/// unroutable one is `None` — not an error that would stop the next hops of
/// every other endpoint from resolving.
#[test]
fn routes_are_looked_up_over_rtnetlink() {
    let mut lab = Lab::new().expect("lab (root?)");
    let (lb, _cl, lif) = client_lb(&mut lab, 1);
    let gw = CLIENT_ADDR.to_string();
    lb.route("10.99.1.0/24", &gw).expect("route");
    lb.addr(&lif, "fd00:99::1/64").expect("address");
    lb.route("fd00:98::/64", "fd00:99::2").expect("route");
    std::thread::scope(|s| {
        lb.scoped(s, || {
            let on_link: IpAddr = "10.99.0.77".parse().expect("ip");
            assert_eq!(
                xlb_io::kernel::netinfo::route_to(on_link).expect("lookup"),
                Some((lif.clone(), on_link))
            );
            let routed: IpAddr = "10.99.1.5".parse().expect("ip");
            assert_eq!(
                xlb_io::kernel::netinfo::route_to(routed).expect("lookup"),
                Some((lif.clone(), IpAddr::V4(CLIENT_ADDR)))
            );
            let routed6: IpAddr = "fd00:98::5".parse().expect("ip");
            assert_eq!(
                xlb_io::kernel::netinfo::route_to(routed6).expect("lookup"),
                Some((lif.clone(), "fd00:99::2".parse().expect("ip")))
            );
            // No default route in this namespace.
            let nowhere: IpAddr = "192.0.2.1".parse().expect("ip");
            assert_eq!(
                xlb_io::kernel::netinfo::route_to(nowhere).expect("lookup"),
                None
            );
            let nowhere6: IpAddr = "2001:db8::1".parse().expect("ip");
            assert_eq!(
                xlb_io::kernel::netinfo::route_to(nowhere6).expect("lookup"),
                None
            );
        })
        .join()
        .expect("namespace thread");
    });
}
