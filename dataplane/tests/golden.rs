//! Golden packet fixtures (Katran style): a table of {description, input frame,
//! expected verdict, expected output frame}, run in order through a
//! two-worker pipeline, with the counters checked after the run.
//!
//! Expected frames are built from scratch by the wire builder (full checksum
//! computation), so a byte-exact match also proves every incremental
//! checksum update the pipeline made.

mod common;

use common::*;
use xlb_dataplane::checksum;
use xlb_dataplane::tables::{EndpointState, L4Proto, NatMode, Selection};
use xlb_dataplane::wire::build::{arp_request, Builder};
use xlb_dataplane::{DropReason, Verdict};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const SYNACK: u8 = SYN | ACK;

struct Case {
    desc: &'static str,
    worker: usize,
    rx: u16,
    input: Vec<u8>,
    verdict: Verdict,
    /// `None`: the frame must come out unchanged.
    output: Option<Vec<u8>>,
}

fn case(
    desc: &'static str,
    worker: usize,
    rx: u16,
    input: Vec<u8>,
    verdict: Verdict,
    output: Option<Vec<u8>>,
) -> Case {
    Case {
        desc,
        worker,
        rx,
        input,
        verdict,
        output,
    }
}

fn drop(desc: &'static str, worker: usize, rx: u16, input: Vec<u8>, r: DropReason) -> Case {
    case(desc, worker, rx, input, Verdict::Drop(r), None)
}

fn services() -> Vec<xlb_dataplane::tables::ServiceSpec> {
    use L4Proto::*;
    use NatMode::*;
    use Selection::*;
    let mut ipip = svc(
        "192.0.2.13",
        Tcp,
        (80, 80),
        Hash,
        Dsr,
        vec![ep("10.1.0.13", 80)],
    );
    ipip.dsr_ipip = true;
    let mut down = svc(
        "192.0.2.18",
        Tcp,
        (80, 80),
        RoundRobin,
        Dnat,
        vec![ep("10.1.0.12", 80)],
    );
    down.endpoints[0].state = EndpointState::Down;
    vec![
        svc(
            "192.0.2.10",
            Tcp,
            (80, 80),
            RoundRobin,
            Dnat,
            vec![
                ep("10.1.0.11", 8080),
                ep("10.1.0.12", 8080),
                ep("10.1.0.13", 8080),
            ],
        ),
        svc(
            "192.0.2.10",
            Tcp,
            (443, 443),
            Hash,
            FullNat,
            vec![ep("10.1.0.12", 8443)],
        ),
        svc(
            "192.0.2.11",
            Udp,
            (53, 53),
            RoundRobin,
            OneArm,
            vec![ep("10.1.0.11", 5353), ep("10.1.0.12", 5353)],
        ),
        svc(
            "192.0.2.12",
            Tcp,
            (80, 80),
            Hash,
            Dsr,
            vec![ep("10.1.0.11", 0)],
        ),
        ipip,
        svc(
            "192.0.2.14",
            Udp,
            (30000, 30010),
            RoundRobin,
            Dnat,
            vec![ep("10.1.0.11", 0)],
        ),
        allowed(
            svc(
                "192.0.2.15",
                Tcp,
                (80, 80),
                RoundRobin,
                Dnat,
                vec![ep("10.1.0.11", 80)],
            ),
            &["10.0.0.0/24"],
        ),
        svc(
            "2001:db8:100::10",
            Tcp,
            (80, 80),
            RoundRobin,
            FullNat,
            vec![ep("2001:db8:1::11", 8080), ep("2001:db8:1::12", 8080)],
        ),
        svc(
            "192.0.2.16",
            Sctp,
            (9000, 9000),
            RoundRobin,
            FullNat,
            vec![ep("10.1.0.12", 9000)],
        ),
        svc(
            "192.0.2.17",
            Icmp,
            (0, 0),
            RoundRobin,
            FullNat,
            vec![ep("10.1.0.13", 0)],
        ),
        down,
    ]
}

/// Outer IPv4 header of an IPIP packet, computed independently of the pipeline.
fn ipip_outer(src: [u8; 4], dst: [u8; 4], inner_len: usize) -> Vec<u8> {
    let total = (inner_len + 20) as u16;
    let mut h = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0,
        0,
        64,
        4,
        0,
        0,
    ];
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let c = checksum::checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

fn cases() -> Vec<Case> {
    use Verdict::Tx;
    let c = "10.0.0.2";
    let mut arp = vec![0u8; 64];
    let n = arp_request(&mut arp, CLIENT_MAC, [10, 0, 0, 2], [10, 0, 0, 1]).expect("arp");
    arp.truncate(n);

    // DSR over IPIP: the original frame, re-addressed at L2, inside an outer header.
    let ipip_in = from_client(Builder::tcp(sa("10.0.0.2:40005"), sa("192.0.2.13:80"), SYN));
    let ipip_out = {
        let inner = to_backend(
            Builder::tcp(sa("10.0.0.2:40005"), sa("192.0.2.13:80"), SYN),
            "10.1.0.13",
        );
        let mut f = inner[..14].to_vec();
        f.extend(ipip_outer([10, 1, 0, 1], [10, 1, 0, 13], inner.len() - 14));
        f.extend_from_slice(&inner[14..]);
        f
    };

    // The packet a backend's ICMP error quotes: what xlb sent it (full NAT, c8).
    let sent_to_backend = to_backend(
        Builder::tcp(sa("10.9.0.1:40000"), sa("10.1.0.12:8443"), ACK).ttl(63),
        "10.1.0.12",
    );
    // And what the client must see quoted: the packet it sent.
    let client_sent =
        to_client(Builder::tcp(sa("10.0.0.2:40003"), sa("192.0.2.10:443"), ACK).ttl(63));
    let unknown_quoted = from_client(Builder::tcp(sa("10.9.9.9:1"), sa("192.0.2.10:443"), ACK));

    let mut bad_ihl = from_client(Builder::udp(sa("10.0.0.2:1"), sa("192.0.2.11:53")));
    bad_ihl[14] = 0x44;

    vec![
        case(
            "ARP request passes to the kernel",
            0,
            0,
            arp,
            Verdict::Pass,
            None,
        ),
        case(
            "TCP to the node's own address passes to the kernel",
            0,
            0,
            from_client(Builder::tcp(sa("10.0.0.2:5555"), sa("10.0.0.1:22"), SYN)),
            Verdict::Pass,
            None,
        ),
        case(
            "DNAT: SYN to VIP:80 goes to the first backend (round robin), TTL - 1",
            0,
            0,
            from_client(Builder::tcp(sa("10.0.0.2:40001"), sa("192.0.2.10:80"), SYN)),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::tcp(sa("10.0.0.2:40001"), sa("10.1.0.11:8080"), SYN).ttl(63),
                "10.1.0.11",
            )),
        ),
        case(
            "DNAT: data of the same flow sticks to its backend",
            0,
            0,
            from_client(
                Builder::tcp(sa("10.0.0.2:40001"), sa("192.0.2.10:80"), ACK)
                    .seq_ack(2, 1000)
                    .payload(b"GET / HTTP/1.0\r\n\r\n"),
            ),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::tcp(sa("10.0.0.2:40001"), sa("10.1.0.11:8080"), ACK)
                    .seq_ack(2, 1000)
                    .payload(b"GET / HTTP/1.0\r\n\r\n")
                    .ttl(63),
                "10.1.0.11",
            )),
        ),
        case(
            "DNAT: a second flow goes to the next backend",
            0,
            0,
            from_client(Builder::tcp(sa("10.0.0.2:40002"), sa("192.0.2.10:80"), SYN)),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::tcp(sa("10.0.0.2:40002"), sa("10.1.0.12:8080"), SYN).ttl(63),
                "10.1.0.12",
            )),
        ),
        case(
            "DNAT: the backend's reply is un-NATed to come from the VIP",
            0,
            BACKEND_PORT,
            from_backend(Builder::tcp(
                sa("10.1.0.11:8080"),
                sa("10.0.0.2:40001"),
                SYNACK,
            )),
            Tx(CLIENT_PORT),
            Some(to_client(
                Builder::tcp(sa("192.0.2.10:80"), sa("10.0.0.2:40001"), SYNACK).ttl(63),
            )),
        ),
        case(
            "DNAT: a reply landing on the other worker's queue still finds its flow",
            1,
            BACKEND_PORT,
            from_backend(Builder::tcp(
                sa("10.1.0.12:8080"),
                sa("10.0.0.2:40002"),
                SYNACK,
            )),
            Tx(CLIENT_PORT),
            Some(to_client(
                Builder::tcp(sa("192.0.2.10:80"), sa("10.0.0.2:40002"), SYNACK).ttl(63),
            )),
        ),
        case(
            "full NAT: SYN to VIP:443 leaves from the SNAT address and worker 0's first port",
            0,
            0,
            from_client(Builder::tcp(
                sa("10.0.0.2:40003"),
                sa("192.0.2.10:443"),
                SYN,
            )),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::tcp(sa("10.9.0.1:40000"), sa("10.1.0.12:8443"), SYN).ttl(63),
                "10.1.0.12",
            )),
        ),
        case(
            "full NAT: the reply to the SNAT address maps back, on the other worker",
            1,
            BACKEND_PORT,
            from_backend(Builder::tcp(
                sa("10.1.0.12:8443"),
                sa("10.9.0.1:40000"),
                SYNACK,
            )),
            Tx(CLIENT_PORT),
            Some(to_client(
                Builder::tcp(sa("192.0.2.10:443"), sa("10.0.0.2:40003"), SYNACK).ttl(63),
            )),
        ),
        case(
            "one-arm UDP: source NAT to the balancer's address on the backend LAN",
            0,
            0,
            from_client(Builder::udp(sa("10.0.0.2:5000"), sa("192.0.2.11:53")).payload(b"q")),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::udp(sa("10.1.0.1:40002"), sa("10.1.0.11:5353"))
                    .payload(b"q")
                    .ttl(63),
                "10.1.0.11",
            )),
        ),
        case(
            "one-arm UDP: the reply maps back to the client",
            0,
            BACKEND_PORT,
            from_backend(Builder::udp(sa("10.1.0.11:5353"), sa("10.1.0.1:40002")).payload(b"a")),
            Tx(CLIENT_PORT),
            Some(to_client(
                Builder::udp(sa("192.0.2.11:53"), sa("10.0.0.2:5000"))
                    .payload(b"a")
                    .ttl(63),
            )),
        ),
        case(
            "DSR: only the MAC addresses change",
            0,
            0,
            from_client(Builder::tcp(sa("10.0.0.2:40004"), sa("192.0.2.12:80"), SYN)),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::tcp(sa("10.0.0.2:40004"), sa("192.0.2.12:80"), SYN),
                "10.1.0.11",
            )),
        ),
        case(
            "DSR over IPIP: the untouched packet inside an outer IPv4 header",
            0,
            0,
            ipip_in,
            Tx(BACKEND_PORT),
            Some(ipip_out),
        ),
        case(
            "port range: UDP keeps its destination port on an endpoint with port 0",
            0,
            0,
            from_client(Builder::udp(sa("10.0.0.2:6000"), sa("192.0.2.14:30005"))),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::udp(sa("10.0.0.2:6000"), sa("10.1.0.11:30005")).ttl(63),
                "10.1.0.11",
            )),
        ),
        drop(
            "allowedSources: a client outside the prefixes is dropped",
            0,
            0,
            from_client(Builder::tcp(sa("10.0.5.5:40000"), sa("192.0.2.15:80"), SYN)),
            DropReason::SourceNotAllowed,
        ),
        case(
            "allowedSources: a client inside is served",
            0,
            0,
            from_client(Builder::tcp(sa("10.0.0.2:40006"), sa("192.0.2.15:80"), SYN)),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::tcp(sa("10.0.0.2:40006"), sa("10.1.0.11:80"), SYN).ttl(63),
                "10.1.0.11",
            )),
        ),
        case(
            "IPv6 full NAT: SYN leaves from the IPv6 SNAT address, hop limit - 1",
            0,
            0,
            from_client(Builder::tcp(
                sa("[2001:db8::2]:40007"),
                sa("[2001:db8:100::10]:80"),
                SYN,
            )),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::tcp(
                    sa("[2001:db8:9::1]:40004"),
                    sa("[2001:db8:1::11]:8080"),
                    SYN,
                )
                .ttl(63),
                "2001:db8:1::11",
            )),
        ),
        case(
            "IPv6 full NAT: the reply maps back",
            0,
            BACKEND_PORT,
            from_backend(Builder::tcp(
                sa("[2001:db8:1::11]:8080"),
                sa("[2001:db8:9::1]:40004"),
                SYNACK,
            )),
            Tx(CLIENT_PORT),
            Some(to_client(
                Builder::tcp(
                    sa("[2001:db8:100::10]:80"),
                    sa("[2001:db8::2]:40007"),
                    SYNACK,
                )
                .ttl(63),
            )),
        ),
        case(
            "SCTP full NAT: ports rewritten and the CRC32c recomputed",
            0,
            0,
            from_client(
                Builder::sctp(sa("10.0.0.2:7000"), sa("192.0.2.16:9000"), 0).payload(&[
                    1, 0, 0, 20, 0, 0, 0, 1, 0, 0, 0x10, 0, 0, 1, 0, 1, 0, 0, 0, 1,
                ]),
            ),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::sctp(sa("10.9.0.1:40006"), sa("10.1.0.12:9000"), 0)
                    .payload(&[
                        1, 0, 0, 20, 0, 0, 0, 1, 0, 0, 0x10, 0, 0, 1, 0, 1, 0, 0, 0, 1,
                    ])
                    .ttl(63),
                "10.1.0.12",
            )),
        ),
        case(
            "ICMP echo to a VIP without an ICMP rule is answered by xlb",
            0,
            0,
            from_client(Builder::icmp_echo(ip(c), ip("192.0.2.10"), 77, 1, false).payload(b"ping")),
            Tx(CLIENT_PORT),
            Some(to_client(
                Builder::icmp_echo(ip("192.0.2.10"), ip(c), 77, 1, true).payload(b"ping"),
            )),
        ),
        case(
            "ICMP echo to an ICMP rule is load-balanced; the id is NATed like a port",
            0,
            0,
            from_client(Builder::icmp_echo(ip(c), ip("192.0.2.17"), 78, 1, false)),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::icmp_echo(ip("10.9.0.1"), ip("10.1.0.13"), 40008, 1, false).ttl(63),
                "10.1.0.13",
            )),
        ),
        case(
            "ICMP echo reply from the backend maps back to the client's id",
            1,
            BACKEND_PORT,
            from_backend(Builder::icmp_echo(
                ip("10.1.0.13"),
                ip("10.9.0.1"),
                40008,
                1,
                true,
            )),
            Tx(CLIENT_PORT),
            Some(to_client(
                Builder::icmp_echo(ip("192.0.2.17"), ip(c), 78, 1, true).ttl(63),
            )),
        ),
        case(
            "ICMP frag-needed from a backend reaches the client about the packet it sent",
            0,
            BACKEND_PORT,
            from_backend(
                Builder::icmp_error(ip("10.1.0.12"), ip("10.9.0.1"), 3, 4, &sent_to_backend)
                    .icmp_rest(1400),
            ),
            Tx(CLIENT_PORT),
            Some(to_client(
                Builder::icmp_error(ip("192.0.2.10"), ip(c), 3, 4, &client_sent)
                    .icmp_rest(1400)
                    .ttl(63),
            )),
        ),
        drop(
            "ICMP error about no tracked flow, sent to a VIP, is dropped",
            0,
            0,
            from_client(Builder::icmp_error(
                ip(c),
                ip("192.0.2.10"),
                3,
                3,
                &unknown_quoted,
            )),
            DropReason::IcmpUntracked,
        ),
        drop(
            "TCP without SYN to a VIP and no flow is dropped",
            0,
            0,
            from_client(Builder::tcp(sa("10.0.0.2:41000"), sa("192.0.2.10:80"), ACK)),
            DropReason::TcpNotSyn,
        ),
        drop(
            "UDP to a VIP port with no rule is dropped",
            0,
            0,
            from_client(Builder::udp(sa("10.0.0.2:41000"), sa("192.0.2.10:53"))),
            DropReason::NoService,
        ),
        drop(
            "a later IPv4 fragment to a VIP is dropped (no reassembly)",
            0,
            0,
            from_client(
                Builder::udp(sa("10.0.0.2:5000"), sa("192.0.2.11:53"))
                    .fragment(1480, false)
                    .payload(&[0u8; 32]),
            ),
            DropReason::Fragment,
        ),
        drop(
            "a rule whose only endpoint is down drops new flows",
            0,
            0,
            from_client(Builder::tcp(sa("10.0.0.2:40008"), sa("192.0.2.18:80"), SYN)),
            DropReason::NoEndpoint,
        ),
        case(
            "a VLAN-tagged SYN keeps its tag (worker 1 has its own round-robin cursor)",
            1,
            0,
            from_client(Builder::tcp(sa("10.0.0.2:40010"), sa("192.0.2.10:80"), SYN).vlan(100)),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::tcp(sa("10.0.0.2:40010"), sa("10.1.0.11:8080"), SYN)
                    .vlan(100)
                    .ttl(63),
                "10.1.0.11",
            )),
        ),
        case(
            "UDP without a checksum (IPv4) keeps a zero checksum through NAT",
            0,
            0,
            from_client(Builder::udp(sa("10.0.0.2:5001"), sa("192.0.2.11:53")).no_udp_checksum()),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::udp(sa("10.1.0.1:40010"), sa("10.1.0.12:5353"))
                    .no_udp_checksum()
                    .ttl(63),
                "10.1.0.12",
            )),
        ),
        drop(
            "a 10-byte frame is dropped",
            0,
            0,
            vec![0u8; 10],
            DropReason::TruncatedEthernet,
        ),
        drop(
            "an IPv4 header length of 4 words is dropped",
            0,
            0,
            bad_ihl,
            DropReason::BadIpv4Header,
        ),
        drop(
            "TTL 1 to a VIP is dropped, not forwarded",
            0,
            0,
            from_client(Builder::tcp(sa("10.0.0.2:40011"), sa("192.0.2.12:81"), SYN).ttl(1)),
            DropReason::NoService,
        ),
        // The established fast path (untagged IPv4 TCP/UDP, no options, flow in
        // the receiving worker's shard) and the cases it hands to the slow path.
        case(
            "fast path: a second UDP datagram without a checksum keeps it zero",
            0,
            0,
            from_client(
                Builder::udp(sa("10.0.0.2:5001"), sa("192.0.2.11:53"))
                    .payload(b"again")
                    .no_udp_checksum(),
            ),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::udp(sa("10.1.0.1:40010"), sa("10.1.0.12:5353"))
                    .payload(b"again")
                    .no_udp_checksum()
                    .ttl(63),
                "10.1.0.12",
            )),
        ),
        case(
            "slow path: DSR data of a tracked flow still changes only the MACs",
            0,
            0,
            from_client(
                Builder::tcp(sa("10.0.0.2:40004"), sa("192.0.2.12:80"), ACK).seq_ack(2, 1000),
            ),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::tcp(sa("10.0.0.2:40004"), sa("192.0.2.12:80"), ACK).seq_ack(2, 1000),
                "10.1.0.11",
            )),
        ),
        case(
            "slow path: IPv4 options on a tracked flow's packet are kept through DNAT",
            0,
            0,
            from_client(
                Builder::tcp(sa("10.0.0.2:40002"), sa("192.0.2.10:80"), ACK)
                    .ipv4_options(&[1, 1, 1, 1])
                    .payload(b"opt"),
            ),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::tcp(sa("10.0.0.2:40002"), sa("10.1.0.12:8080"), ACK)
                    .ipv4_options(&[1, 1, 1, 1])
                    .payload(b"opt")
                    .ttl(63),
                "10.1.0.12",
            )),
        ),
        drop(
            "slow path: TTL 1 on a tracked flow is dropped, not forwarded",
            0,
            0,
            from_client(Builder::tcp(sa("10.0.0.2:40002"), sa("192.0.2.10:80"), ACK).ttl(1)),
            DropReason::TtlExceeded,
        ),
    ]
}

#[test]
fn golden_fixtures_in_order() {
    let mut lab = Lab::new(spec(services()));
    let cases = cases();
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let (verdict, out) = lab.run(c.worker, c.rx, &c.input);
        let want = c.output.as_ref().unwrap_or(&c.input);
        if verdict != c.verdict || out != *want {
            failures.push(format!(
                "#{i} {}: verdict {verdict:?} (want {:?})\n  got  {}\n  want {}",
                c.desc,
                c.verdict,
                hex(&out),
                hex(want)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // Counters after the run: each drop reason exercised exactly once, and
    // the totals add up.
    let c0 = lab.workers[0].counters();
    let c1 = lab.workers[1].counters();
    for r in [
        DropReason::SourceNotAllowed,
        DropReason::IcmpUntracked,
        DropReason::TcpNotSyn,
        DropReason::Fragment,
        DropReason::NoEndpoint,
        DropReason::TruncatedEthernet,
        DropReason::BadIpv4Header,
    ] {
        assert_eq!(c0.drops(r) + c1.drops(r), 1, "{r:?}");
    }
    assert_eq!(c0.drops(DropReason::NoService), 2);
    let rx = |c: &xlb_dataplane::counters::CounterBlock| {
        c.rx_packets.load(std::sync::atomic::Ordering::Relaxed)
    };
    let tx = |c: &xlb_dataplane::counters::CounterBlock| {
        c.tx_packets.load(std::sync::atomic::Ordering::Relaxed)
    };
    let passed = |c: &xlb_dataplane::counters::CounterBlock| {
        c.passed.load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(rx(&c0) + rx(&c1), cases.len() as u64);
    assert_eq!(
        rx(&c0) + rx(&c1),
        tx(&c0) + tx(&c1) + passed(&c0) + passed(&c1) + c0.total_drops() + c1.total_drops()
    );
    assert_eq!(passed(&c0), 2);
    assert_eq!(
        c0.icmp_echo_replies
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Endpoint counters: 10.1.0.11:8080 of rule 0 saw SYN, data and the SYN-ACK.
    let id = lab.tables.services[0].endpoints[0].id;
    assert_eq!(
        c0.endpoint(id).0 + c1.endpoint(id).0,
        4,
        "3 on worker 0 + the VLAN flow on 1"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Writes every fixture's input frame to `$XLB_FUZZ_SEEDS/golden-NN` for the
/// fuzz corpus (`scripts/fuzz-smoke.sh` runs it when the seeds are missing).
#[test]
#[ignore = "writes files; run by scripts/fuzz-smoke.sh"]
fn write_golden_fuzz_seeds() {
    let Ok(dir) = std::env::var("XLB_FUZZ_SEEDS") else {
        return;
    };
    std::fs::create_dir_all(&dir).expect("seed dir");
    for (i, c) in cases().iter().enumerate() {
        std::fs::write(format!("{dir}/golden-{i:02}"), &c.input).expect("seed file");
    }
}
