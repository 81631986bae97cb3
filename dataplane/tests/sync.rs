//! Connection sync between two nodes' pipelines: node A opens flows and
//! announces them, its events are carried (as control would carry them
//! over the network) to node B, whose workers install them; then B
//! forwards the flows' packets as A did, both ways, from any packet of
//! theirs (a mid-stream ACK too), without counting them as its own. Ends
//! follow; nothing B installs is announced back.
//!
//! Each node is a two-port lab of its own (its own flow table and
//! workers) over the same tables.

use std::net::IpAddr;

use xlb_dataplane::conntrack::FlowKey;
use xlb_dataplane::counters::CounterBlock;
use xlb_dataplane::net::Ip16;
use xlb_dataplane::sync::{self, sync_queues, AdoptFailure, SyncEvent, SyncHub, SyncedFlow};
use xlb_dataplane::tables::{EndpointState, L4Proto, NatMode, Selection, ServiceSpec};
use xlb_dataplane::wire::build::Builder;
use xlb_dataplane::{DropReason, Verdict};
use xlb_testkit::fixtures::two_port::*;
use xlb_testkit::fixtures::{ip, sa, Service};

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;
/// Unix time minus the labs' clock.
const UNIX_OFFSET: i64 = 1_700_000_000_000_000_000;
const S: u64 = 1_000_000_000;

/// A node: a lab with sync on, and control's ends of its workers' rings.
struct Node {
    lab: Lab,
    hub: SyncHub,
}

impl Node {
    fn new(services: &[ServiceSpec]) -> Node {
        Node::with_queue(services, 1024)
    }

    fn with_queue(services: &[ServiceSpec], capacity: usize) -> Node {
        Node::sized(services, capacity, 1 << 10)
    }

    /// Rings of `capacity` events, `buckets` buckets per shard.
    fn sized(services: &[ServiceSpec], capacity: usize, buckets: usize) -> Node {
        let mut lab = Lab::with_buckets(spec(services.to_vec()), buckets);
        let (hub, ends) = sync_queues(lab.workers.len(), capacity);
        for (w, e) in lab.workers.iter_mut().zip(ends) {
            w.set_sync(e, UNIX_OFFSET);
        }
        Node { lab, hub }
    }

    /// What the workers announced since the last call.
    fn announced(&mut self) -> Vec<SyncEvent> {
        let mut v = Vec::new();
        self.hub.drain(&mut v, usize::MAX);
        v
    }

    /// Hand `events` (from another node) to the workers, and let them
    /// take them in (an idle tick: a backup sees no traffic).
    fn receive(&mut self, events: &[SyncEvent]) {
        for ev in events {
            self.hub.deliver(*ev).expect("room in the inbound rings");
        }
        let t = self.lab.now + IDLE_TICK_NS;
        self.lab.idle_until(t);
    }

    fn counters(&self) -> Vec<std::sync::Arc<CounterBlock>> {
        self.lab.workers.iter().map(|w| w.counters()).collect()
    }

    /// A counter summed over the workers.
    fn sum(&self, f: impl Fn(&CounterBlock) -> u64) -> u64 {
        self.counters().iter().map(|c| f(c)).sum()
    }
}

fn load(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(std::sync::atomic::Ordering::Relaxed)
}

fn ip16(a: &str) -> Ip16 {
    ip(a).into()
}

fn opens(events: &[SyncEvent]) -> Vec<SyncedFlow> {
    events
        .iter()
        .filter_map(|e| match e {
            SyncEvent::Open(f) => Some(*f),
            SyncEvent::Close(_) => None,
        })
        .collect()
}

/// A TCP segment from client port `port` to the VIP 192.0.2.10:80.
fn seg(port: u16, flags: u8) -> Vec<u8> {
    from_client(
        Builder::tcp(sa(&format!("10.0.0.2:{port}")), sa("192.0.2.10:80"), flags).payload(b"x"),
    )
}

fn full_nat_rr() -> ServiceSpec {
    Service::tcp("192.0.2.10", 80)
        .sel(Selection::RoundRobin)
        .mode(NatMode::FullNat)
        .eps(BACKENDS_V4, 8080)
        .build()
}

/// The backend and source (address, port) a frame went to the backend with.
fn sent(v: Verdict, out: &[u8]) -> ((IpAddr, u16), (IpAddr, u16)) {
    assert_eq!(v, Verdict::Tx(BACKEND_PORT), "forwarded to a backend");
    (dst_of(out), src_of(out))
}

#[test]
fn a_synced_full_nat_flow_forwards_on_the_other_node_from_a_mid_stream_ack() {
    let services = [full_nat_rr()];
    let mut a = Node::new(&services);
    let mut b = Node::new(&services);
    // Round robin on A: the first flow to .11, the second to .12.
    let (v1, o1) = a.lab.run(0, CLIENT_PORT, &seg(40001, SYN));
    let (v2, o2) = a.lab.run(0, CLIENT_PORT, &seg(40002, SYN));
    let (be1, src1) = sent(v1, &o1);
    let (be2, src2) = sent(v2, &o2);
    assert_eq!(be1, (ip("10.1.0.11"), 8080));
    assert_eq!(be2, (ip("10.1.0.12"), 8080));
    let events = a.announced();
    let flows = opens(&events);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(flows[1].backend, ip16("10.1.0.12"));
    assert_eq!(flows[1].backend_port, 8080);
    assert_eq!(flows[1].xlat.sport, src2.1);
    assert_eq!(flows[1].client_mac, Some(CLIENT_MAC));
    assert_eq!(flows[1].client_port, CLIENT_PORT);
    assert_eq!(
        flows[1].opened_unix_ns,
        a.lab.now.saturating_add_signed(UNIX_OFFSET)
    );

    b.receive(&events);
    for c in b.counters() {
        assert_eq!(load(&c.sync_adopted), 2, "each worker holds a copy");
    }
    // B's round-robin cursor stands at .11; the second flow's ACK goes to
    // .12 from A's source port, on either worker, byte for byte as A
    // would have sent it.
    for w in [1, 0] {
        let (v, out) = b.lab.run(w, CLIENT_PORT, &seg(40002, ACK));
        let want = to_backend(
            Builder::tcp(
                sa(&format!("10.9.0.1:{}", src2.1)),
                sa("10.1.0.12:8080"),
                ACK,
            )
            .payload(b"x")
            .ttl(63),
            "10.1.0.12",
        );
        assert_eq!(v, Verdict::Tx(BACKEND_PORT));
        assert_eq!(out, want, "worker {w}");
    }
    let (v, out) = b.lab.run(1, CLIENT_PORT, &seg(40001, ACK));
    assert_eq!(sent(v, &out), (be1, src1));
    // The backend's answer is translated back to the client.
    let answer = from_backend(
        Builder::tcp(
            sa("10.1.0.12:8080"),
            sa(&format!("10.9.0.1:{}", src2.1)),
            ACK,
        )
        .payload(b"y"),
    );
    for w in [0, 1] {
        let (v, out) = b.lab.run(w, BACKEND_PORT, &answer);
        assert_eq!(v, Verdict::Tx(CLIENT_PORT));
        let want = to_client(
            Builder::tcp(sa("192.0.2.10:80"), sa("10.0.0.2:40002"), ACK)
                .payload(b"y")
                .ttl(63),
        );
        assert_eq!(out, want, "worker {w}");
    }
    // None of it was B's own new flow, and nothing is announced back.
    assert_eq!(b.sum(|c| load(&c.flows_created)), 0);
    assert!(b.announced().is_empty());
    // B's own next new flow takes B's round-robin turn: .11, untouched
    // by the adopted flows.
    let (v, out) = b.lab.run(0, CLIENT_PORT, &seg(40003, SYN));
    assert_eq!(sent(v, &out).0, (ip("10.1.0.11"), 8080));
    assert_eq!(b.sum(|c| load(&c.flows_created)), 1);
    assert_eq!(opens(&b.announced()).len(), 1, "B announces its own flow");
}

fn key_of(f: &[u8]) -> FlowKey {
    let m = xlb_dataplane::wire::parse(f).expect("parsable");
    FlowKey {
        src: m.src,
        dst: m.dst,
        sport: m.sport,
        dport: m.dport,
        proto: m.proto,
    }
}

#[test]
fn an_end_on_the_holder_removes_the_flow_on_the_other_node() {
    let services = [full_nat_rr()];
    let mut a = Node::new(&services);
    let mut b = Node::new(&services);
    let syn = seg(40001, SYN);
    a.lab.run(0, CLIENT_PORT, &syn);
    b.receive(&a.announced());
    let (v, _) = b.lab.run(1, CLIENT_PORT, &seg(40001, ACK));
    assert_eq!(v, Verdict::Tx(BACKEND_PORT));
    // The client resets it on A; it expires there after the closing
    // timeout, and A announces its end.
    let (v, _) = a.lab.run(0, CLIENT_PORT, &seg(40001, RST | ACK));
    assert_eq!(v, Verdict::Tx(BACKEND_PORT));
    let t = a.lab.now + 11 * S;
    a.lab.idle_until(t);
    let events = a.announced();
    assert_eq!(events, vec![SyncEvent::Close(key_of(&syn))]);
    b.receive(&events);
    assert_eq!(b.sum(|c| load(&c.sync_closed)), 2, "both workers' copies");
    assert_eq!(b.lab.ct.used(), 0);
    let (v, _) = b.lab.run(1, CLIENT_PORT, &seg(40001, ACK));
    assert_eq!(v, Verdict::Drop(DropReason::TcpNotSyn));
    // Ends B learnt of are not announced back.
    assert!(b.announced().is_empty());
}

#[test]
fn copies_that_saw_no_packet_expire_quietly_and_forwarded_ones_are_announced() {
    let services = [full_nat_rr()];
    let mut a = Node::new(&services);
    let mut b = Node::new(&services);
    a.lab.run(0, CLIENT_PORT, &seg(40001, SYN));
    a.lab.run(0, CLIENT_PORT, &seg(40002, SYN));
    b.receive(&a.announced());
    // B forwards a packet of the second flow only (after a takeover).
    let (v, _) = b.lab.run(1, CLIENT_PORT, &seg(40002, ACK));
    assert_eq!(v, Verdict::Tx(BACKEND_PORT));
    // Neither flow's handshake completed: both expire after 30 s.
    let t = b.lab.now + 31 * S;
    b.lab.idle_until(t);
    assert_eq!(b.lab.ct.used(), 0);
    let ended = b.announced();
    assert_eq!(
        ended,
        vec![SyncEvent::Close(key_of(&seg(40002, SYN)))],
        "only the flow B forwarded, once (the worker that forwarded it)"
    );
    assert_eq!(b.sum(|c| load(&c.flows_removed)), 4);
}

#[test]
fn a_flow_evicted_from_a_full_bucket_is_announced_as_ended() {
    // One bucket per shard: room for four flows.
    let mut a = Node::sized(&[full_nat_rr()], 1024, 1);
    for p in 0..5 {
        let (v, _) = a.lab.run(0, CLIENT_PORT, &seg(44000 + p, SYN));
        assert_eq!(v, Verdict::Tx(BACKEND_PORT));
    }
    assert_eq!(a.sum(|c| load(&c.flows_evicted)), 1);
    let events = a.announced();
    assert_eq!(opens(&events).len(), 5);
    let ended: Vec<&SyncEvent> = events
        .iter()
        .filter(|e| matches!(e, SyncEvent::Close(_)))
        .collect();
    assert_eq!(ended.len(), 1, "{events:?}");
    // The evicted flow is gone from A: its next packet is not forwarded.
    let SyncEvent::Close(k) = ended[0] else {
        unreachable!()
    };
    let (v, _) = a.lab.run(0, CLIENT_PORT, &seg(k.sport, ACK));
    assert_eq!(v, Verdict::Drop(DropReason::TcpNotSyn));
}

#[test]
fn a_synced_udp_flow_keeps_its_source_port_on_the_other_node() {
    // Maglev and UDP: A opens it on the dedicated new-flow path.
    let services = [Service::udp("192.0.2.10", 53)
        .sel(Selection::Hash)
        .mode(NatMode::FullNat)
        .eps(BACKENDS_V4, 5353)
        .build()];
    let mut a = Node::new(&services);
    let mut b = Node::new(&services);
    let q =
        |p: &[u8]| from_client(Builder::udp(sa("10.0.0.2:7000"), sa("192.0.2.10:53")).payload(p));
    let (v, out) = a.lab.run(0, CLIENT_PORT, &q(b"q1"));
    let (be, src) = sent(v, &out);
    assert_eq!(a.sum(|c| load(&c.flows_created)), 1);
    let events = a.announced();
    assert_eq!(opens(&events).len(), 1);
    b.receive(&events);
    // On worker 1, whose own source-NAT ports are the odd ones: a flow of
    // its own would leave from another port than A's worker 0 chose.
    let (v, out) = b.lab.run(1, CLIENT_PORT, &q(b"q2"));
    assert_eq!(sent(v, &out), (be, src));
    let answer = from_backend(
        Builder::udp(
            sa(&format!("{}:{}", be.0, be.1)),
            sa(&format!("{}:{}", src.0, src.1)),
        )
        .payload(b"a"),
    );
    let (v, out) = b.lab.run(0, BACKEND_PORT, &answer);
    assert_eq!(v, Verdict::Tx(CLIENT_PORT));
    assert_eq!(
        out,
        to_client(
            Builder::udp(sa("192.0.2.10:53"), sa("10.0.0.2:7000"))
                .payload(b"a")
                .ttl(63)
        )
    );
    assert_eq!(b.sum(|c| load(&c.flows_created)), 0);
}

#[test]
fn a_synced_ipv6_flow_forwards_on_the_other_node() {
    let services = [Service::tcp("2001:db8:100::10", 80)
        .mode(NatMode::FullNat)
        .eps(BACKENDS_V6, 8080)
        .build()];
    let mut a = Node::new(&services);
    let mut b = Node::new(&services);
    let seg6 = |port: u16, flags: u8| {
        from_client(
            Builder::tcp(
                sa(&format!("[2001:db8::2]:{port}")),
                sa("[2001:db8:100::10]:80"),
                flags,
            )
            .payload(b"x"),
        )
    };
    // The second flow: to the second backend.
    a.lab.run(0, CLIENT_PORT, &seg6(40001, SYN));
    let (v, out) = a.lab.run(0, CLIENT_PORT, &seg6(40002, SYN));
    let (be, src) = sent(v, &out);
    assert_eq!(be, (ip("2001:db8:1::12"), 8080));
    b.receive(&a.announced());
    let (v, out) = b.lab.run(1, CLIENT_PORT, &seg6(40002, ACK));
    assert_eq!(sent(v, &out), (be, src));
    let answer = from_backend(
        Builder::tcp(
            sa("[2001:db8:1::12]:8080"),
            sa(&format!("[{}]:{}", src.0, src.1)),
            ACK,
        )
        .payload(b"y"),
    );
    let (v, out) = b.lab.run(0, BACKEND_PORT, &answer);
    assert_eq!(v, Verdict::Tx(CLIENT_PORT));
    assert_eq!(
        out,
        to_client(
            Builder::tcp(sa("[2001:db8:100::10]:80"), sa("[2001:db8::2]:40002"), ACK)
                .payload(b"y")
                .ttl(63)
        )
    );
    assert_eq!(b.sum(|c| load(&c.flows_created)), 0);
}

#[test]
fn a_synced_dsr_flow_goes_to_the_same_backend_on_the_other_node() {
    let services = [Service::tcp("192.0.2.10", 80)
        .mode(NatMode::Dsr)
        .eps(BACKENDS_V4, 80)
        .build()];
    let mut a = Node::new(&services);
    let mut b = Node::new(&services);
    a.lab.run(0, CLIENT_PORT, &seg(40001, SYN));
    a.lab.run(0, CLIENT_PORT, &seg(40002, SYN));
    let events = a.announced();
    let flows = opens(&events);
    assert_eq!(flows[1].backend, ip16("10.1.0.12"));
    assert_eq!(flows[1].client_mac, None, "DSR answers bypass xlb");
    b.receive(&events);
    // DSR changes only the MACs: the frame reaches .12's MAC unchanged
    // otherwise (B's round robin would have chosen .11).
    let ack = seg(40002, ACK);
    let (v, out) = b.lab.run(1, CLIENT_PORT, &ack);
    assert_eq!(v, Verdict::Tx(BACKEND_PORT));
    let mut want = ack.clone();
    want[..6].copy_from_slice(&be_mac("10.1.0.12").0);
    want[6..12].copy_from_slice(&LB_MAC1.0);
    assert_eq!(out, want);
    assert_eq!(b.sum(|c| load(&c.flows_created)), 0);
}

#[test]
fn a_synced_sctp_flow_forwards_on_the_other_node() {
    let services = [Service::new("192.0.2.10", L4Proto::Sctp, 3868)
        .mode(NatMode::FullNat)
        .eps(BACKENDS_V4, 3868)
        .build()];
    let mut a = Node::new(&services);
    let mut b = Node::new(&services);
    let chunk = from_client(Builder::sctp(sa("10.0.0.2:5000"), sa("192.0.2.10:3868"), 7));
    let (v, out) = a.lab.run(0, CLIENT_PORT, &chunk);
    let (be, src) = sent(v, &out);
    b.receive(&a.announced());
    let (v, out) = b.lab.run(1, CLIENT_PORT, &chunk);
    assert_eq!(sent(v, &out), (be, src));
    assert_eq!(b.sum(|c| load(&c.flows_created)), 0);
}

/// `services` with endpoint `addr` of every rule down.
fn with_down(services: &[ServiceSpec], addr: &str) -> Vec<ServiceSpec> {
    let mut s = services.to_vec();
    for svc in &mut s {
        for e in &mut svc.endpoints {
            if e.addr == ip(addr) {
                e.state = EndpointState::Down;
            }
        }
    }
    s
}

#[test]
fn a_synced_flow_whose_backend_is_down_on_the_other_node_is_reselected() {
    let services = [full_nat_rr()];
    // Down before the flow arrives, or after it was installed.
    for down_first in [true, false] {
        let mut a = Node::new(&services);
        let mut b = Node::new(&services);
        let (v, out) = a.lab.run(0, CLIENT_PORT, &seg(40001, SYN));
        assert_eq!(sent(v, &out).0, (ip("10.1.0.11"), 8080));
        if down_first {
            b.lab.update(spec(with_down(&services, "10.1.0.11")));
        }
        b.receive(&a.announced());
        assert_eq!(b.sum(|c| load(&c.sync_adopted)), 2);
        if !down_first {
            b.lab.update(spec(with_down(&services, "10.1.0.11")));
        }
        // As for a flow of B's own: a mid-stream packet goes to another
        // backend (which resets it, so the client reconnects at once).
        let (v, out) = b.lab.run(1, CLIENT_PORT, &seg(40001, ACK));
        let (be, _) = sent(v, &out);
        assert_ne!(be.0, ip("10.1.0.11"), "down_first {down_first}");
        // That is B's flow now: announced (and the copy it replaced,
        // which saw no packet here, ended quietly).
        let events = b.announced();
        let flows = opens(&events);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(IpAddr::from(flows[0].backend), be.0);
    }
}

#[test]
fn flows_for_unknown_rules_and_backends_are_counted_not_installed() {
    let services = [full_nat_rr()];
    let mut a = Node::new(&services);
    a.lab.run(0, CLIENT_PORT, &seg(40001, SYN));
    let events = a.announced();
    // B has no such rule.
    let other = [Service::tcp("192.0.2.99", 80)
        .eps(BACKENDS_V4, 8080)
        .build()];
    let mut b = Node::new(&other);
    b.receive(&events);
    assert_eq!(b.sum(|c| c.sync_adopt_failure(AdoptFailure::NoRule)), 2);
    // B's rule has other backends.
    let moved = [Service::tcp("192.0.2.10", 80)
        .mode(NatMode::FullNat)
        .eps(BACKENDS_V4, 9090)
        .build()];
    let mut c = Node::new(&moved);
    c.receive(&events);
    assert_eq!(c.sum(|c| c.sync_adopt_failure(AdoptFailure::NoBackend)), 2);
    assert_eq!(b.lab.ct.used() + c.lab.ct.used(), 0);
}

#[test]
fn a_flow_sent_again_refreshes_the_copy_and_counts_once() {
    let services = [Service::tcp("192.0.2.10", 80)
        .sel(Selection::LeastConn)
        .mode(NatMode::FullNat)
        .eps(BACKENDS_V4, 8080)
        .build()];
    let mut a = Node::new(&services);
    let mut b = Node::new(&services);
    a.lab.run(0, CLIENT_PORT, &seg(40001, SYN));
    let events = a.announced();
    let be = opens(&events)[0].backend;
    b.receive(&events);
    b.receive(&events);
    for c in b.counters() {
        assert_eq!(load(&c.sync_adopted), 1);
        assert_eq!(load(&c.sync_refreshed), 1);
    }
    assert_eq!(b.lab.ct.used(), 4, "two entries in each worker's shard");
    // Least connections counts the copy once: B's next two flows on a
    // worker go to the two other backends.
    let mut chosen = Vec::new();
    for p in [50001, 50002] {
        let (v, out) = b.lab.run(0, CLIENT_PORT, &seg(p, SYN));
        chosen.push(Ip16::from(sent(v, &out).0 .0));
    }
    assert!(!chosen.contains(&be), "{chosen:?} avoids {be:?}");
    assert_ne!(chosen[0], chosen[1]);
}

#[test]
fn the_dump_gives_each_flow_once_and_the_refresh_only_flows_forwarded_here() {
    let services = [full_nat_rr()];
    let mut a = Node::new(&services);
    let mut b = Node::new(&services);
    a.lab.run(0, CLIENT_PORT, &seg(40001, SYN));
    a.lab.run(1, CLIENT_PORT, &seg(40002, SYN));
    let since = a.lab.now;
    let mut from_a = sync::dump(&a.lab.ct, &a.lab.tables, Some(since), 5);
    from_a.sort_by_key(|f| f.key.sport);
    let mut announced = opens(&a.announced());
    announced.sort_by_key(|f| f.key.sport);
    assert_eq!(from_a.len(), 2);
    for (d, o) in from_a.iter().zip(&announced) {
        assert_eq!(
            *d,
            SyncedFlow {
                opened_unix_ns: 5,
                ..*o
            }
        );
    }
    assert!(sync::dump(&a.lab.ct, &a.lab.tables, Some(since + 1), 5).is_empty());
    // A joining node takes the whole table: the dump, as it would come.
    let events: Vec<SyncEvent> = sync::dump(&a.lab.ct, &a.lab.tables, None, 5)
        .into_iter()
        .map(SyncEvent::Open)
        .collect();
    b.receive(&events);
    // B holds a copy per worker but gives each flow once; it forwarded
    // none, so its refresh has nothing, until it forwards one.
    assert_eq!(b.lab.ct.used(), 8);
    assert_eq!(sync::dump(&b.lab.ct, &b.lab.tables, None, 5).len(), 2);
    assert!(sync::dump(&b.lab.ct, &b.lab.tables, Some(0), 5).is_empty());
    let (v, _) = b.lab.run(1, CLIENT_PORT, &seg(40002, ACK));
    assert_eq!(v, Verdict::Tx(BACKEND_PORT));
    let refresh = sync::dump(&b.lab.ct, &b.lab.tables, Some(b.lab.now), 5);
    assert_eq!(refresh.len(), 1);
    assert_eq!(refresh[0].key.sport, 40002);
}

#[test]
fn full_rings_never_block_a_worker() {
    let services = [full_nat_rr()];
    let mut a = Node::with_queue(&services, 4);
    for p in 0..10 {
        let (v, _) = a.lab.run(0, CLIENT_PORT, &seg(41000 + p, SYN));
        assert_eq!(v, Verdict::Tx(BACKEND_PORT));
    }
    assert_eq!(a.hub.dropped(), 6);
    assert_eq!(a.announced().len(), 4);
    // A full inbound ring refuses (counted), and the worker goes on.
    let mut b = Node::with_queue(&services, 4);
    let events: Vec<SyncEvent> = (0..6)
        .map(|p| SyncEvent::Close(key_of(&seg(42000 + p, SYN))))
        .collect();
    let refused = events
        .iter()
        .filter(|e| b.hub.deliver(**e).is_err())
        .count();
    assert_eq!(refused, 2);
    assert_eq!(
        b.hub.refused(),
        4,
        "two events, each refused by both workers"
    );
    let (v, _) = b.lab.run(0, CLIENT_PORT, &seg(43000, SYN));
    assert_eq!(v, Verdict::Tx(BACKEND_PORT));
}

#[test]
fn the_refresh_carries_the_tcp_state_the_holder_saw_since() {
    let services = [full_nat_rr()];
    let mut a = Node::new(&services);
    let mut b = Node::new(&services);
    a.lab.run(0, CLIENT_PORT, &seg(40001, SYN));
    b.receive(&a.announced());
    a.lab.run(0, CLIENT_PORT, &seg(40001, FIN | ACK));
    let refresh = sync::dump(&a.lab.ct, &a.lab.tables, Some(a.lab.now), 0);
    assert_eq!(refresh.len(), 1);
    assert_eq!(refresh[0].fwd_flags & (FIN | SYN), FIN | SYN);
    let events: Vec<SyncEvent> = refresh.into_iter().map(SyncEvent::Open).collect();
    b.receive(&events);
    assert_eq!(b.sum(|c| load(&c.sync_refreshed)), 2);
    assert_eq!(b.sum(|c| load(&c.sync_adopted)), 2);
    let fins = b
        .lab
        .ct
        .dump()
        .iter()
        .filter(|e| e.data.flags & FIN != 0)
        .count();
    assert_eq!(fins, 2, "each worker's copy has the client's FIN");
}

/// The backend's answer to `sent` (what xlb sent it): addresses and ports
/// swapped, from the backend's MAC.
fn answer_to(sent: &[u8]) -> Vec<u8> {
    let m = xlb_dataplane::wire::parse(sent).expect("parsable");
    let (src, dst) = (
        std::net::SocketAddr::new(m.dst.into(), m.dport),
        std::net::SocketAddr::new(m.src.into(), m.sport),
    );
    let b = match m.proto {
        6 => Builder::tcp(src, dst, ACK),
        17 => Builder::udp(src, dst),
        1 => Builder::icmp_echo(src.ip(), dst.ip(), m.sport, 1, true),
        p => panic!("no answer for protocol {p}"),
    };
    from_backend(b.payload(b"answer"))
}

#[test]
fn the_other_node_forwards_a_synced_flow_as_its_holder_does_in_every_mode() {
    const VIP: &str = "192.0.2.10";
    let vip = VIP;
    let tcp = |mode: NatMode| {
        Service::tcp(vip, 80)
            .mode(mode)
            .eps(BACKENDS_V4, if mode == NatMode::Dsr { 80 } else { 8080 })
            .build()
    };
    // (name, rule, the client's first or later packet from port/id p)
    type Frame = Box<dyn Fn(u16, bool) -> Vec<u8>>;
    let cases: Vec<(&str, ServiceSpec, Frame)> = vec![
        (
            "TCP DNAT",
            tcp(NatMode::Dnat),
            Box::new(|p, first| seg(p, if first { SYN } else { ACK })),
        ),
        (
            "TCP one-arm",
            tcp(NatMode::OneArm),
            Box::new(|p, first| seg(p, if first { SYN } else { ACK })),
        ),
        (
            "TCP full NAT",
            tcp(NatMode::FullNat),
            Box::new(|p, first| seg(p, if first { SYN } else { ACK })),
        ),
        (
            "TCP DSR",
            tcp(NatMode::Dsr),
            Box::new(|p, first| seg(p, if first { SYN } else { ACK })),
        ),
        (
            "UDP one-arm",
            Service::udp(vip, 53)
                .mode(NatMode::OneArm)
                .eps(BACKENDS_V4, 53)
                .build(),
            Box::new(|p, _| {
                from_client(
                    Builder::udp(sa(&format!("10.0.0.2:{p}")), sa("192.0.2.10:53")).payload(b"q"),
                )
            }),
        ),
        (
            "ICMP echo, full NAT",
            Service::new(vip, L4Proto::Icmp, 0)
                .mode(NatMode::FullNat)
                .eps(BACKENDS_V4, 0)
                .build(),
            Box::new(|id, _| {
                from_client(
                    Builder::icmp_echo(ip("10.0.0.2"), ip(VIP), id, 1, false).payload(b"ping"),
                )
            }),
        ),
    ];
    for (name, service, frame) in cases {
        let services = [service];
        let mut a = Node::new(&services);
        let mut b = Node::new(&services);
        // The second flow: round robin's second backend on A.
        for p in [40001, 40002] {
            let (v, _) = a.lab.run(0, CLIENT_PORT, &frame(p, true));
            assert_eq!(v, Verdict::Tx(BACKEND_PORT), "{name}");
        }
        b.receive(&a.announced());
        let later = frame(40002, false);
        let (va, to_a) = a.lab.run(0, CLIENT_PORT, &later);
        let (vb, to_b) = b.lab.run(1, CLIENT_PORT, &later);
        assert_eq!((vb, &to_b), (va, &to_a), "{name}: the client's packet");
        // (B's own round robin would have chosen .11.)
        assert_eq!(&to_b[..6], &be_mac("10.1.0.12").0, "{name}");
        if !name.contains("DSR") {
            let answer = answer_to(&to_a);
            let (va, back_a) = a.lab.run(1, BACKEND_PORT, &answer);
            let (vb, back_b) = b.lab.run(0, BACKEND_PORT, &answer);
            assert_eq!(va, Verdict::Tx(CLIENT_PORT), "{name}");
            assert_eq!((vb, back_b), (va, back_a), "{name}: the backend's answer");
        }
        assert_eq!(b.sum(|c| load(&c.flows_created)), 0, "{name}");
    }
}
