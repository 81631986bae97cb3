//! Golden packet fixtures (Katran style): a table of {description, input frame,
//! expected verdict, expected output frame}, run in order through a
//! two-worker pipeline, with the counters checked after the run. The last
//! fixtures move the lab's clock, so flows expire as they do in the daemon.
//!
//! Expected frames are built from scratch by the wire builder (full checksum
//! computation), so a byte-exact match also proves every incremental
//! checksum update the pipeline made.

use xlb_dataplane::counters::CounterBlock;
use xlb_dataplane::tables::{
    EndpointSpec, EndpointState, L4Proto, NatMode, Selection, ServiceSpec,
};
use xlb_dataplane::wire::build::{arp_request, Builder};
use xlb_dataplane::wire::checksum;
use xlb_dataplane::{DropReason, Verdict};
use xlb_testkit::fixtures::two_port::*;
use xlb_testkit::fixtures::{ep, ip, sa, Service};

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const SYNACK: u8 = SYN | ACK;
const FINACK: u8 = FIN | ACK;

struct Case {
    desc: &'static str,
    worker: usize,
    rx: u16,
    input: Vec<u8>,
    verdict: Verdict,
    /// `None`: the frame must come out unchanged.
    output: Option<Vec<u8>>,
    /// When the frame arrives, in ms after the first fixture. Times never go
    /// back; in between, the workers idle as the worker loop does (see
    /// [`Lab::idle_until`]), so flows expire by the pipeline's own sweep.
    at_ms: u64,
}

impl Case {
    fn at(mut self, ms: u64) -> Case {
        self.at_ms = ms;
        self
    }
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
        at_ms: 0,
    }
}

fn drop(desc: &'static str, worker: usize, rx: u16, input: Vec<u8>, r: DropReason) -> Case {
    case(desc, worker, rx, input, Verdict::Drop(r), None)
}

fn services() -> Vec<ServiceSpec> {
    use NatMode::*;
    use Selection::*;
    let down = EndpointSpec {
        state: EndpointState::Down,
        ..ep("10.1.0.12", 80)
    };
    [
        Service::tcp("192.0.2.10", 80).eps(BACKENDS_V4, 8080),
        Service::tcp("192.0.2.10", 443)
            .sel(Hash)
            .mode(FullNat)
            .ep("10.1.0.12", 8443),
        Service::udp("192.0.2.11", 53)
            .mode(OneArm)
            .eps(["10.1.0.11", "10.1.0.12"], 5353),
        Service::tcp("192.0.2.12", 80)
            .sel(Hash)
            .mode(Dsr)
            .ep("10.1.0.11", 0),
        Service::tcp("192.0.2.13", 80)
            .sel(Hash)
            .mode(Dsr)
            .dsr_ipip(true)
            .ep("10.1.0.13", 80),
        Service::udp("192.0.2.14", 30000)
            .ports(30000, 30010)
            .ep("10.1.0.11", 0),
        Service::tcp("192.0.2.15", 80)
            .allowed(&["10.0.0.0/24"])
            .ep("10.1.0.11", 80),
        Service::tcp("2001:db8:100::10", 80)
            .mode(FullNat)
            .eps(BACKENDS_V6, 8080),
        // 20 s, not SCTP's usual 240 s: the expiry cases count this flow
        // among those idled out by 35 s.
        Service::new("192.0.2.16", L4Proto::Sctp, 9000)
            .mode(FullNat)
            .timeout(20)
            .ep("10.1.0.12", 9000),
        Service::new("192.0.2.17", L4Proto::Icmp, 0)
            .mode(FullNat)
            .ep("10.1.0.13", 0),
        Service::tcp("192.0.2.18", 80).endpoints([down]),
        Service::udp("2001:db8:100::11", 53)
            .mode(OneArm)
            .ep("2001:db8:1::11", 5353),
        Service::tcp("2001:db8:100::12", 80).ep("2001:db8:1::12", 8080),
        Service::tcp("2001:db8:100::13", 80)
            .sel(Hash)
            .mode(Dsr)
            .ep("2001:db8:1::11", 0),
        Service::tcp("192.0.2.20", 80)
            .sel(LeastConn)
            .eps(["10.1.0.11", "10.1.0.12"], 80),
        Service::tcp("192.0.2.21", 80)
            .sel(Persist)
            .eps(BACKENDS_V4, 80),
        Service::tcp("192.0.2.22", 80)
            .sel(Priority)
            .ep_weighted("10.1.0.11", 80, 75)
            .ep_weighted("10.1.0.12", 80, 25),
    ]
    .into_iter()
    .map(Service::build)
    .collect()
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

/// Where the persist rule's Maglev table puts clients 10.0.0.2 (A) and
/// 10.0.0.3 (B), on port 80.
const PERSIST_A: &str = "10.1.0.11";
const PERSIST_B: &str = "10.1.0.13";

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

    // A router's frag-needed about the IPIP flow's answer (which the backend
    // sent the client from the VIP) goes to the backend the way the flow's
    // packets do: wrapped in IPIP.
    let ipip_answer = to_client(Builder::tcp(sa("192.0.2.13:80"), sa("10.0.0.2:40005"), ACK));
    let ipip_error = || {
        Builder::icmp_error(ip("10.0.0.254"), ip("192.0.2.13"), 3, 4, &ipip_answer).icmp_rest(1400)
    };
    let ipip_error_in = from_client(ipip_error());
    let ipip_error_out = {
        let inner = to_backend(ipip_error(), "10.1.0.13");
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

    // IPv6 full NAT (the flow of 2001:db8::2 port 40007): what the backend
    // was sent, and what the client sent.
    let sent_to_backend6 = to_backend(
        Builder::tcp(
            sa("[2001:db8:9::1]:40004"),
            sa("[2001:db8:1::11]:8080"),
            ACK,
        )
        .ttl(63),
        "2001:db8:1::11",
    );
    let client_sent6 = to_client(
        Builder::tcp(sa("[2001:db8::2]:40007"), sa("[2001:db8:100::10]:80"), ACK).ttl(63),
    );
    // DNAT over a port range (the flow of 10.0.0.2 port 6000): the quoted
    // UDP header carries its checksum, which must follow the address change.
    let dnat_sent = to_backend(
        Builder::udp(sa("10.0.0.2:6000"), sa("10.1.0.11:30005")).ttl(63),
        "10.1.0.11",
    );
    let dnat_client_sent =
        to_client(Builder::udp(sa("10.0.0.2:6000"), sa("192.0.2.14:30005")).ttl(63));
    // DSR: the backend's reply went to the client directly, from the VIP.
    let dsr_reply = to_client(Builder::tcp(sa("192.0.2.12:80"), sa("10.0.0.2:40004"), ACK));

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
            "ICMP frag-needed about a DSR-over-IPIP flow's answer goes to its backend inside IPIP too",
            0,
            0,
            ipip_error_in,
            Tx(BACKEND_PORT),
            Some(ipip_error_out),
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
            "a later IPv4 fragment to a VIP whose first fragment was not seen is dropped",
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
            "TTL 1 on the first packet to a DNAT rule is dropped, not forwarded",
            0,
            0,
            from_client(Builder::tcp(sa("10.0.0.2:40011"), sa("192.0.2.15:80"), SYN).ttl(1)),
            DropReason::TtlExceeded,
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
        case(
            "DSR forwards TTL 1 with only the MACs changed: it never touches L3",
            0,
            0,
            from_client(Builder::tcp(sa("10.0.0.2:40012"), sa("192.0.2.12:80"), SYN).ttl(1)),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::tcp(sa("10.0.0.2:40012"), sa("192.0.2.12:80"), SYN).ttl(1),
                "10.1.0.11",
            )),
        ),
        // IPv6 in the other modes.
        case(
            "IPv6 one-arm UDP: source NAT to the balancer's IPv6 address on the backend LAN",
            0,
            0,
            from_client(
                Builder::udp(sa("[2001:db8::2]:5300"), sa("[2001:db8:100::11]:53")).payload(b"q6"),
            ),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::udp(sa("[2001:db8:1::1]:40012"), sa("[2001:db8:1::11]:5353"))
                    .payload(b"q6")
                    .ttl(63),
                "2001:db8:1::11",
            )),
        ),
        case(
            "IPv6 one-arm UDP: the reply maps back, on the other worker",
            1,
            BACKEND_PORT,
            from_backend(
                Builder::udp(sa("[2001:db8:1::11]:5353"), sa("[2001:db8:1::1]:40012"))
                    .payload(b"a6"),
            ),
            Tx(CLIENT_PORT),
            Some(to_client(
                Builder::udp(sa("[2001:db8:100::11]:53"), sa("[2001:db8::2]:5300"))
                    .payload(b"a6")
                    .ttl(63),
            )),
        ),
        case(
            "IPv6 DNAT: only the destination changes, to the backend",
            0,
            0,
            from_client(Builder::tcp(
                sa("[2001:db8::2]:40040"),
                sa("[2001:db8:100::12]:80"),
                SYN,
            )),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::tcp(
                    sa("[2001:db8::2]:40040"),
                    sa("[2001:db8:1::12]:8080"),
                    SYN,
                )
                .ttl(63),
                "2001:db8:1::12",
            )),
        ),
        case(
            "IPv6 DNAT: the backend's reply is un-NATed to come from the VIP",
            0,
            BACKEND_PORT,
            from_backend(Builder::tcp(
                sa("[2001:db8:1::12]:8080"),
                sa("[2001:db8::2]:40040"),
                SYNACK,
            )),
            Tx(CLIENT_PORT),
            Some(to_client(
                Builder::tcp(
                    sa("[2001:db8:100::12]:80"),
                    sa("[2001:db8::2]:40040"),
                    SYNACK,
                )
                .ttl(63),
            )),
        ),
        case(
            "IPv6 DSR: only the MAC addresses change, not even the hop limit",
            0,
            0,
            from_client(Builder::tcp(
                sa("[2001:db8::2]:40041"),
                sa("[2001:db8:100::13]:80"),
                SYN,
            )),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::tcp(
                    sa("[2001:db8::2]:40041"),
                    sa("[2001:db8:100::13]:80"),
                    SYN,
                ),
                "2001:db8:1::11",
            )),
        ),
        // ICMPv6, and ICMP errors in the other modes.
        case(
            "ICMPv6 echo to a VIP without an ICMP rule is answered by xlb, at its own hop limit",
            0,
            0,
            from_client(
                Builder::icmp_echo(ip("2001:db8::2"), ip("2001:db8:100::10"), 79, 1, false)
                    .payload(b"ping6")
                    .ttl(50),
            ),
            Tx(CLIENT_PORT),
            Some(to_client(
                Builder::icmp_echo(ip("2001:db8:100::10"), ip("2001:db8::2"), 79, 1, true)
                    .payload(b"ping6"),
            )),
        ),
        case(
            "ICMPv6 packet too big from a full-NAT backend reaches the client about the packet it sent",
            0,
            BACKEND_PORT,
            from_backend(
                Builder::icmp_error(
                    ip("2001:db8:1::11"),
                    ip("2001:db8:9::1"),
                    2,
                    0,
                    &sent_to_backend6,
                )
                .icmp_rest(1280),
            ),
            Tx(CLIENT_PORT),
            Some(to_client(
                Builder::icmp_error(
                    ip("2001:db8:100::10"),
                    ip("2001:db8::2"),
                    2,
                    0,
                    &client_sent6,
                )
                .icmp_rest(1280)
                .ttl(63),
            )),
        ),
        case(
            "ICMP port unreachable from a DNAT backend comes from the VIP, quoting what the client sent",
            0,
            BACKEND_PORT,
            from_backend(Builder::icmp_error(
                ip("10.1.0.11"),
                ip(c),
                3,
                3,
                &dnat_sent,
            )),
            Tx(CLIENT_PORT),
            Some(to_client(
                Builder::icmp_error(ip("192.0.2.14"), ip(c), 3, 3, &dnat_client_sent).ttl(63),
            )),
        ),
        case(
            "ICMP frag-needed about a DSR reply, sent to the VIP, goes to the flow's backend unchanged but for the MACs",
            0,
            0,
            from_client(
                Builder::icmp_error(ip("10.0.0.254"), ip("192.0.2.12"), 3, 4, &dsr_reply)
                    .icmp_rest(1400),
            ),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::icmp_error(ip("10.0.0.254"), ip("192.0.2.12"), 3, 4, &dsr_reply)
                    .icmp_rest(1400),
                "10.1.0.11",
            )),
        ),
        // Selection policies 2 (priority), 3 (persist).
        case(
            "priority 75/25: first new flow to the heavier backend",
            0,
            0,
            from_client(Builder::tcp(sa("10.0.0.2:40050"), sa("192.0.2.22:80"), SYN)),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::tcp(sa("10.0.0.2:40050"), sa("10.1.0.11:80"), SYN).ttl(63),
                "10.1.0.11",
            )),
        ),
        case(
            "priority 75/25: second new flow to the heavier backend",
            0,
            0,
            from_client(Builder::tcp(sa("10.0.0.2:40051"), sa("192.0.2.22:80"), SYN)),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::tcp(sa("10.0.0.2:40051"), sa("10.1.0.11:80"), SYN).ttl(63),
                "10.1.0.11",
            )),
        ),
        case(
            "priority 75/25: third new flow to the lighter backend (smooth weighted round robin)",
            0,
            0,
            from_client(Builder::tcp(sa("10.0.0.2:40052"), sa("192.0.2.22:80"), SYN)),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::tcp(sa("10.0.0.2:40052"), sa("10.1.0.12:80"), SYN).ttl(63),
                "10.1.0.12",
            )),
        ),
        case(
            "priority 75/25: fourth new flow back to the heavier backend",
            0,
            0,
            from_client(Builder::tcp(sa("10.0.0.2:40053"), sa("192.0.2.22:80"), SYN)),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::tcp(sa("10.0.0.2:40053"), sa("10.1.0.11:80"), SYN).ttl(63),
                "10.1.0.11",
            )),
        ),
        // Persist: Maglev over the client address alone. Which backend a
        // client lands on is fixed by the endpoints' identities (stable
        // across processes), so these stay put from run to run.
        case(
            "persist: a client's first connection",
            0,
            0,
            from_client(Builder::tcp(sa("10.0.0.2:40060"), sa("192.0.2.21:80"), SYN)),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::tcp(sa("10.0.0.2:40060"), sa(&format!("{PERSIST_A}:80")), SYN).ttl(63),
                PERSIST_A,
            )),
        ),
        case(
            "persist: the same client from another port, on the other worker, lands on the same backend",
            1,
            0,
            from_client(Builder::tcp(sa("10.0.0.2:40061"), sa("192.0.2.21:80"), SYN)),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::tcp(sa("10.0.0.2:40061"), sa(&format!("{PERSIST_A}:80")), SYN).ttl(63),
                PERSIST_A,
            )),
        ),
        case(
            "persist: another client address lands on another backend",
            0,
            0,
            from_client(Builder::tcp(sa("10.0.0.3:40062"), sa("192.0.2.21:80"), SYN)),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::tcp(sa("10.0.0.3:40062"), sa(&format!("{PERSIST_B}:80")), SYN).ttl(63),
                PERSIST_B,
            )),
        ),
        // Time moves from here on. One-arm UDP (20 s rule timeout): flow A
        // idles out, flow B is seen just before its timeout and lives on.
        case(
            "expiry: one-arm UDP flow A starts (round robin: the first backend)",
            0,
            0,
            from_client(Builder::udp(sa("10.0.0.2:5100"), sa("192.0.2.11:53")).payload(b"A")),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::udp(sa("10.1.0.1:40014"), sa("10.1.0.11:5353"))
                    .payload(b"A")
                    .ttl(63),
                "10.1.0.11",
            )),
        ),
        case(
            "expiry: one-arm UDP flow B starts (the second backend)",
            0,
            0,
            from_client(Builder::udp(sa("10.0.0.2:5101"), sa("192.0.2.11:53")).payload(b"B")),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::udp(sa("10.1.0.1:40016"), sa("10.1.0.12:5353"))
                    .payload(b"B")
                    .ttl(63),
                "10.1.0.12",
            )),
        ),
        case(
            "expiry: flow B 19.9 s later, just inside its 20 s timeout, is still tracked",
            0,
            0,
            from_client(Builder::udp(sa("10.0.0.2:5101"), sa("192.0.2.11:53")).payload(b"B2")),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::udp(sa("10.1.0.1:40016"), sa("10.1.0.12:5353"))
                    .payload(b"B2")
                    .ttl(63),
                "10.1.0.12",
            )),
        )
        .at(19_900),
        drop(
            "expiry: at 22 s flow A has expired; the backend's late reply to its NAT port is dropped",
            0,
            BACKEND_PORT,
            from_backend(Builder::udp(sa("10.1.0.11:5353"), sa("10.1.0.1:40014")).payload(b"a")),
            DropReason::UntrackedReply,
        )
        .at(22_000),
        case(
            "expiry: at 22 s flow B's reply still maps back to the client",
            0,
            BACKEND_PORT,
            from_backend(Builder::udp(sa("10.1.0.12:5353"), sa("10.1.0.1:40016")).payload(b"b")),
            Tx(CLIENT_PORT),
            Some(to_client(
                Builder::udp(sa("192.0.2.11:53"), sa("10.0.0.2:5101"))
                    .payload(b"b")
                    .ttl(63),
            )),
        )
        .at(22_000),
        // Least connections (per worker; ties go round robin) and TCP close:
        // flow L2 ends with FIN both ways, so it is gone after the closing
        // timeout (10 s) though the rule's timeout is 240 s, and its
        // backend is then the emptier one.
        case(
            "least conn: flow L1 goes to the first backend (a tie)",
            0,
            0,
            from_client(Builder::tcp(sa("10.0.0.2:40030"), sa("192.0.2.20:80"), SYN)),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::tcp(sa("10.0.0.2:40030"), sa("10.1.0.11:80"), SYN).ttl(63),
                "10.1.0.11",
            )),
        )
        .at(22_000),
        case(
            "least conn: flow L2 goes to the backend without flows",
            0,
            0,
            from_client(Builder::tcp(sa("10.0.0.2:40031"), sa("192.0.2.20:80"), SYN)),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::tcp(sa("10.0.0.2:40031"), sa("10.1.0.12:80"), SYN).ttl(63),
                "10.1.0.12",
            )),
        )
        .at(22_000),
        case(
            "least conn: L1's SYN-ACK comes back from the VIP: L1 is established",
            0,
            BACKEND_PORT,
            from_backend(Builder::tcp(
                sa("10.1.0.11:80"),
                sa("10.0.0.2:40030"),
                SYNACK,
            )),
            Tx(CLIENT_PORT),
            Some(to_client(
                Builder::tcp(sa("192.0.2.20:80"), sa("10.0.0.2:40030"), SYNACK).ttl(63),
            )),
        )
        .at(22_000),
        case(
            "TCP close: L2's SYN-ACK comes back from the VIP",
            0,
            BACKEND_PORT,
            from_backend(Builder::tcp(
                sa("10.1.0.12:80"),
                sa("10.0.0.2:40031"),
                SYNACK,
            )),
            Tx(CLIENT_PORT),
            Some(to_client(
                Builder::tcp(sa("192.0.2.20:80"), sa("10.0.0.2:40031"), SYNACK).ttl(63),
            )),
        )
        .at(22_000),
        case(
            "TCP close: L2's client FIN goes to its backend",
            0,
            0,
            from_client(
                Builder::tcp(sa("10.0.0.2:40031"), sa("192.0.2.20:80"), FINACK).seq_ack(2, 2),
            ),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::tcp(sa("10.0.0.2:40031"), sa("10.1.0.12:80"), FINACK)
                    .seq_ack(2, 2)
                    .ttl(63),
                "10.1.0.12",
            )),
        )
        .at(22_000),
        case(
            "TCP close: L2's backend FIN comes back from the VIP",
            0,
            BACKEND_PORT,
            from_backend(
                Builder::tcp(sa("10.1.0.12:80"), sa("10.0.0.2:40031"), FINACK).seq_ack(2, 3),
            ),
            Tx(CLIENT_PORT),
            Some(to_client(
                Builder::tcp(sa("192.0.2.20:80"), sa("10.0.0.2:40031"), FINACK)
                    .seq_ack(2, 3)
                    .ttl(63),
            )),
        )
        .at(22_000),
        drop(
            "TCP close: 13 s after FIN both ways L2 is gone; its client's last ACK is no flow's",
            0,
            0,
            from_client(
                Builder::tcp(sa("10.0.0.2:40031"), sa("192.0.2.20:80"), ACK).seq_ack(3, 3),
            ),
            DropReason::TcpNotSyn,
        )
        .at(35_000),
        case(
            "least conn: flow L3 goes to L2's backend, now the emptier (round robin's turn was the first)",
            0,
            0,
            from_client(Builder::tcp(sa("10.0.0.2:40032"), sa("192.0.2.20:80"), SYN)),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::tcp(sa("10.0.0.2:40032"), sa("10.1.0.12:80"), SYN).ttl(63),
                "10.1.0.12",
            )),
        )
        .at(35_000),
        case(
            "TCP close: L1, idle as long as L2 but never closed, is still tracked",
            0,
            0,
            from_client(
                Builder::tcp(sa("10.0.0.2:40030"), sa("192.0.2.20:80"), ACK)
                    .seq_ack(2, 2)
                    .payload(b"late"),
            ),
            Tx(BACKEND_PORT),
            Some(to_backend(
                Builder::tcp(sa("10.0.0.2:40030"), sa("10.1.0.11:80"), ACK)
                    .seq_ack(2, 2)
                    .payload(b"late")
                    .ttl(63),
                "10.1.0.11",
            )),
        )
        .at(35_000),
    ]
}

#[test]
fn golden_fixtures_in_order() {
    let mut lab = Lab::new(spec(services()));
    let cases = cases();
    let mut failures = Vec::new();
    let start = lab.now;
    for (i, c) in cases.iter().enumerate() {
        lab.idle_until(start + c.at_ms * 1_000_000);
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

    // Counters after the run: the drop reasons exercised, and the totals add up.
    let c0 = lab.workers[0].counters();
    let c1 = lab.workers[1].counters();
    for r in [
        DropReason::SourceNotAllowed,
        DropReason::IcmpUntracked,
        DropReason::Fragment,
        DropReason::NoEndpoint,
        DropReason::TruncatedEthernet,
        DropReason::BadIpv4Header,
        DropReason::NoService,
        DropReason::UntrackedReply,
    ] {
        assert_eq!(c0.drops(r) + c1.drops(r), 1, "{r:?}");
    }
    // A non-SYN to a VIP, and the last ACK of the closed flow L2.
    assert_eq!(c0.drops(DropReason::TcpNotSyn), 2);
    // TTL 1 on a new flow and on a tracked one.
    assert_eq!(c0.drops(DropReason::TtlExceeded), 2);
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let both = |f: fn(&CounterBlock) -> &std::sync::atomic::AtomicU64| load(f(&c0)) + load(f(&c1));
    assert_eq!(both(|c| &c.rx_packets), cases.len() as u64);
    assert_eq!(
        both(|c| &c.rx_packets),
        both(|c| &c.tx_packets) + both(|c| &c.passed) + c0.total_drops() + c1.total_drops()
    );
    assert_eq!(load(&c0.passed), 2);
    assert_eq!(load(&c0.icmp_echo_replies), 2, "one ICMP, one ICMPv6");

    // Flows: 29 created (not the TTL-1 SYN's: a packet that cannot be
    // forwarded starts no flow); 2 of them on worker 1 (the VLAN and
    // persist flows). By 35 s every UDP, SCTP and ICMP flow but B has idled
    // out (20 s), and so has every half-open TCP flow but L1 and L3 (30 s),
    // and L2 after its FINs (10 s): 20 removed, none evicted. The 9 left
    // hold 17 entries: a DSR flow keeps no reply entry.
    assert_eq!(both(|c| &c.flows_created), 29);
    assert_eq!(load(&c1.flows_created), 2);
    assert_eq!(both(|c| &c.flows_removed), 20);
    assert_eq!(both(|c| &c.flows_evicted), 0);
    assert_eq!(lab.ct.used(), 17);

    // Packets per endpoint, both directions, both workers.
    let packets = |vip: &str, port: u16, backend: &str| -> u64 {
        let svc = lab
            .tables
            .services
            .iter()
            .find(|s| s.spec.key.vip == ip(vip) && s.spec.key.port_min == port)
            .expect("rule in the fixture's tables");
        let ep = svc
            .endpoints
            .iter()
            .find(|e| e.addr == ip(backend).into())
            .expect("endpoint of the rule");
        c0.endpoint(ep.id).0 + c1.endpoint(ep.id).0
    };
    // SYN, data and SYN-ACK on worker 0, and the VLAN flow's SYN on 1.
    assert_eq!(packets("192.0.2.10", 80, "10.1.0.11"), 4);
    // Two flows each way, flow B's late datagram, and the ICMP error.
    assert_eq!(
        packets("192.0.2.11", 53, "10.1.0.11"),
        3,
        "flow A's late reply not counted"
    );
    assert_eq!(packets("192.0.2.11", 53, "10.1.0.12"), 5);
    // The datagram and the port unreachable about it.
    assert_eq!(packets("192.0.2.14", 30000, "10.1.0.11"), 2);
    // SYN, SYN-ACK and the packet too big.
    assert_eq!(packets("2001:db8:100::10", 80, "2001:db8:1::11"), 3);
    assert_eq!(packets("2001:db8:100::11", 53, "2001:db8:1::11"), 2);
    assert_eq!(packets("2001:db8:100::12", 80, "2001:db8:1::12"), 2);
    assert_eq!(packets("2001:db8:100::13", 80, "2001:db8:1::11"), 1);
    assert_eq!(packets("192.0.2.22", 80, "10.1.0.11"), 3, "priority 75 %");
    assert_eq!(packets("192.0.2.22", 80, "10.1.0.12"), 1, "priority 25 %");
    assert_eq!(packets("192.0.2.21", 80, PERSIST_A), 2);
    assert_eq!(packets("192.0.2.21", 80, PERSIST_B), 1);
    assert_eq!(packets("192.0.2.20", 80, "10.1.0.11"), 3, "L1");
    assert_eq!(packets("192.0.2.20", 80, "10.1.0.12"), 5, "L2, then L3");
    // The allowed source's SYN; not the TTL-1 SYN, nor the source that is
    // not allowed.
    assert_eq!(packets("192.0.2.15", 80, "10.1.0.11"), 1);
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

/// The committed seed corpus holds every fixture's input: fuzz-smoke.sh
/// writes seeds only into an empty directory, so without this check they
/// go stale whenever the table changes.
#[test]
fn fuzz_seeds_hold_every_golden_input() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds");
    let stale: Vec<String> = cases()
        .iter()
        .enumerate()
        .filter(|(i, c)| {
            std::fs::read(format!("{dir}/golden-{i:02}")).ok() != Some(c.input.clone())
        })
        .map(|(i, c)| format!("golden-{i:02} ({})", c.desc))
        .collect();
    assert!(
        stale.is_empty(),
        "seeds missing or stale: {stale:?}; rewrite them with\n  XLB_FUZZ_SEEDS=$PWD/dataplane/fuzz/seeds cargo test -p xlb-dataplane --test golden -- --ignored write_golden_fuzz_seeds"
    );
}
