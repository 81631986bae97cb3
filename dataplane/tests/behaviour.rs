//! Pipeline behaviour over time and across table changes: flow expiry,
//! backend removal/down/drain, selection policies, resource exhaustion, and
//! arbitrary input.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use proptest::prelude::*;
use xlb_dataplane::tables::{EndpointState, L4Proto, NatMode, Selection, ServiceSpec};
use xlb_dataplane::wire::build::Builder;
use xlb_dataplane::{DropReason, Verdict};
use xlb_testkit::fixtures::two_port::*;
use xlb_testkit::fixtures::{ip, sa, Service};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

fn three(sel: Selection, mode: NatMode) -> ServiceSpec {
    Service::tcp("192.0.2.10", 80)
        .sel(sel)
        .mode(mode)
        .eps(BACKENDS_V4, 8080)
        .build()
}

/// Send a SYN from `client:port` on `worker`; the backend it went to.
fn syn(lab: &mut Lab, worker: usize, client: &str, port: u16) -> Option<IpAddr> {
    let f = from_client(Builder::tcp(
        sa(&format!("{client}:{port}")),
        sa("192.0.2.10:80"),
        SYN,
    ));
    match lab.run(worker, CLIENT_PORT, &f) {
        (Verdict::Tx(_), out) => Some(dst_of(&out).0),
        _ => None,
    }
}

/// A data packet of an existing flow; the backend it went to.
fn data(lab: &mut Lab, worker: usize, client: &str, port: u16) -> (Verdict, Option<IpAddr>) {
    let f = from_client(
        Builder::tcp(sa(&format!("{client}:{port}")), sa("192.0.2.10:80"), ACK).payload(b"x"),
    );
    let (v, out) = lab.run(worker, CLIENT_PORT, &f);
    (v, matches!(v, Verdict::Tx(_)).then(|| dst_of(&out).0))
}

#[test]
fn round_robin_spreads_new_flows_evenly() {
    let mut lab = Lab::new(spec(vec![three(Selection::RoundRobin, NatMode::Dnat)]));
    let mut n: HashMap<IpAddr, u32> = HashMap::new();
    for p in 0..300 {
        *n.entry(syn(&mut lab, 0, "10.0.0.2", 20000 + p).expect("forwarded"))
            .or_default() += 1;
    }
    assert_eq!(n.len(), 3);
    assert!(n.values().all(|&c| c == 100), "{n:?}");
}

#[test]
fn hash_pins_a_five_tuple_on_every_worker_and_spreads_flows() {
    let mut lab = Lab::new(spec(vec![three(Selection::Hash, NatMode::Dnat)]));
    let mut n: HashMap<IpAddr, u32> = HashMap::new();
    for p in 0..600u16 {
        let b0 = syn(&mut lab, 0, "10.0.0.2", 20000 + p).expect("forwarded");
        // The same 5-tuple arriving first on the other worker picks the same backend.
        let mut other = Lab::new(spec(vec![three(Selection::Hash, NatMode::Dnat)]));
        if p % 50 == 0 {
            assert_eq!(syn(&mut other, 1, "10.0.0.2", 20000 + p), Some(b0));
        }
        *n.entry(b0).or_default() += 1;
    }
    assert_eq!(n.len(), 3);
    assert!(
        n.values().all(|&c| (120..=280).contains(&c)),
        "roughly even: {n:?}"
    );
}

#[test]
fn persist_keeps_a_client_on_one_backend_whatever_its_ports() {
    let mut lab = Lab::new(spec(vec![three(Selection::Persist, NatMode::Dnat)]));
    let mut clients_per_backend: HashMap<IpAddr, u32> = HashMap::new();
    for c in 0..60 {
        let client = format!("10.0.{}.{}", c / 200, 2 + c % 200);
        let first = syn(&mut lab, 0, &client, 30000).expect("forwarded");
        for p in 1..5 {
            assert_eq!(
                syn(&mut lab, (p % 2) as usize, &client, 30000 + p),
                Some(first)
            );
        }
        *clients_per_backend.entry(first).or_default() += 1;
    }
    assert_eq!(
        clients_per_backend.len(),
        3,
        "clients spread: {clients_per_backend:?}"
    );
}

#[test]
fn priority_follows_weights() {
    let mut s = three(Selection::Priority, NatMode::Dnat);
    s.endpoints[0].weight = 60;
    s.endpoints[1].weight = 30;
    s.endpoints[2].weight = 10;
    let mut lab = Lab::new(spec(vec![s]));
    let mut n: HashMap<IpAddr, u32> = HashMap::new();
    for p in 0..1000 {
        *n.entry(syn(&mut lab, 0, "10.0.0.2", 10000 + p).expect("forwarded"))
            .or_default() += 1;
    }
    assert_eq!(n[&ip("10.1.0.11")], 600);
    assert_eq!(n[&ip("10.1.0.12")], 300);
    assert_eq!(n[&ip("10.1.0.13")], 100);
}

#[test]
fn least_connections_fills_the_emptiest_backend() {
    let mut lab = Lab::new(spec(vec![three(Selection::LeastConn, NatMode::Dnat)]));
    // Three flows: one per backend.
    let b: Vec<IpAddr> = (0..3)
        .map(|p| syn(&mut lab, 0, "10.0.0.2", 100 + p).expect("forwarded"))
        .collect();
    assert_eq!(b.iter().collect::<std::collections::HashSet<_>>().len(), 3);
    // Close the first flow with RST; once it expires its backend is the emptiest.
    let rst = from_client(Builder::tcp(sa("10.0.0.2:100"), sa("192.0.2.10:80"), 0x04));
    lab.run(0, CLIENT_PORT, &rst);
    lab.now += 11_000_000_000;
    lab.workers[0].maintain(lab.now, 1 << 12);
    // The two other flows are half-open (30 s) and survive the 11 s.
    assert_eq!(syn(&mut lab, 0, "10.0.0.2", 200), Some(b[0]));
}

/// `clear_flows` forgets a worker's flows and the least-connections counts
/// they held: after it, a known client's ACK is no longer forwarded (no
/// flow), and new flows are chosen as in an empty table, not steered away
/// from the backends the forgotten flows were counted on.
#[test]
fn clear_flows_forgets_flows_and_their_least_connections_counts() {
    let mut lab = Lab::new(spec(vec![three(Selection::LeastConn, NatMode::Dnat)]));
    // Six flows, two per backend; then the two on 10.1.0.13 close (RST) and
    // expire, leaving counts of 2, 2 and 0.
    let first: Vec<IpAddr> = (0..6)
        .map(|p| syn(&mut lab, 0, "10.0.0.2", 100 + p).expect("forwarded"))
        .collect();
    for (p, b) in first.iter().enumerate() {
        if *b == ip("10.1.0.13") {
            let rst = Builder::tcp(
                sa(&format!("10.0.0.2:{}", 100 + p)),
                sa("192.0.2.10:80"),
                0x04,
            );
            lab.run(0, CLIENT_PORT, &from_client(rst));
        }
    }
    lab.now += 11_000_000_000;
    lab.workers[0].maintain(lab.now, 1 << 12);
    let ack = from_client(Builder::tcp(sa("10.0.0.2:100"), sa("192.0.2.10:80"), 0x10));
    assert!(matches!(lab.run(0, CLIENT_PORT, &ack).0, Verdict::Tx(_)));
    assert_eq!(
        lab.workers[0].clear_flows(),
        8,
        "four flows, two entries each"
    );
    assert!(
        !matches!(lab.run(0, CLIENT_PORT, &ack).0, Verdict::Tx(_)),
        "an ACK of a forgotten flow is not forwarded"
    );
    // All counts zero: the tie-break's turn (the seventh choice) picks the
    // first backend; with the counts kept, the emptiest (10.1.0.13) would win.
    assert_eq!(syn(&mut lab, 0, "10.0.0.2", 200), Some(ip("10.1.0.11")));
}

#[test]
fn idle_flows_expire_after_the_rule_timeout_and_are_chosen_afresh() {
    let s = Service::udp("192.0.2.11", 53)
        .timeout(5)
        .eps(["10.1.0.11", "10.1.0.12"], 53);
    let mut lab = Lab::new(spec(vec![s]));
    let q = from_client(Builder::udp(sa("10.0.0.2:5000"), sa("192.0.2.11:53")));
    let first = dst_of(&lab.run(0, CLIENT_PORT, &q).1).0;
    lab.now += 4_000_000_000;
    assert_eq!(
        dst_of(&lab.run(0, CLIENT_PORT, &q).1).0,
        first,
        "active flow keeps its backend"
    );
    lab.now += 4_000_000_000;
    assert_eq!(
        dst_of(&lab.run(0, CLIENT_PORT, &q).1).0,
        first,
        "timeout counts from last packet"
    );
    lab.now += 6_000_000_000;
    let removed = lab.workers[0].maintain(lab.now, 1 << 12);
    assert_eq!(removed, 1, "the idle flow expired");
    assert_eq!(lab.ct.used(), 0, "both directions removed");
    let again = dst_of(&lab.run(0, CLIENT_PORT, &q).1).0;
    assert_ne!(
        again, first,
        "a new flow is chosen afresh (round robin moved on)"
    );
}

#[test]
fn removing_a_backend_reselects_only_its_flows() {
    let mut lab = Lab::new(spec(vec![three(Selection::Hash, NatMode::FullNat)]));
    let mut before = HashMap::new();
    for p in 0..90u16 {
        before.insert(
            p,
            syn(&mut lab, 0, "10.0.0.2", 1000 + p).expect("forwarded"),
        );
    }
    let gone = ip("10.1.0.12");
    let mut s = three(Selection::Hash, NatMode::FullNat);
    s.endpoints.retain(|e| e.addr != gone);
    lab.update(spec(vec![s]));
    for (p, b) in &before {
        let (v, now) = data(&mut lab, 0, "10.0.0.2", 1000 + p);
        assert!(
            matches!(v, Verdict::Tx(_)),
            "flow {p} still forwarded: {v:?}"
        );
        if *b == gone {
            assert_ne!(now, Some(gone), "flow {p} moved off the removed backend");
        } else {
            assert_eq!(now, Some(*b), "flow {p} kept its backend");
        }
    }
}

#[test]
fn down_backend_loses_its_flows_and_draining_backend_keeps_them() {
    let mut lab = Lab::new(spec(vec![three(Selection::RoundRobin, NatMode::Dnat)]));
    let b: Vec<IpAddr> = (0..3)
        .map(|p| syn(&mut lab, 0, "10.0.0.2", 500 + p).expect("forwarded"))
        .collect();
    let mut s = three(Selection::RoundRobin, NatMode::Dnat);
    s.endpoints[0].state = EndpointState::Draining;
    s.endpoints[1].state = EndpointState::Down;
    lab.update(spec(vec![s]));
    // Draining: the existing flow continues.
    assert_eq!(data(&mut lab, 0, "10.0.0.2", 500).1, Some(b[0]));
    // Down: the flow is re-selected onto the only active backend.
    assert_eq!(data(&mut lab, 0, "10.0.0.2", 501).1, Some(ip("10.1.0.13")));
    // Untouched backend keeps its flow.
    assert_eq!(data(&mut lab, 0, "10.0.0.2", 502).1, Some(b[2]));
    // New flows avoid both the draining and the down backend.
    for p in 0..10 {
        assert_eq!(syn(&mut lab, 0, "10.0.0.2", 600 + p), Some(ip("10.1.0.13")));
    }
}

/// Weight 0 is how an operator drains a backend through the API: its flows
/// go on, new flows go elsewhere — under every policy that weighs.
#[test]
fn weight_zero_drains_a_backend_under_round_robin_and_maglev() {
    for sel in [Selection::RoundRobin, Selection::Hash, Selection::Priority] {
        let mut lab = Lab::new(spec(vec![three(sel, NatMode::Dnat)]));
        let before: Vec<IpAddr> = (0..30)
            .map(|p| syn(&mut lab, 0, "10.0.0.2", 700 + p).expect("forwarded"))
            .collect();
        let drained = ip("10.1.0.11");
        assert!(before.contains(&drained), "{sel:?}: {before:?}");
        let mut s = three(sel, NatMode::Dnat);
        s.endpoints[0].weight = 0;
        lab.update(spec(vec![s]));
        for (p, b) in before.iter().enumerate() {
            assert_eq!(
                data(&mut lab, 0, "10.0.0.2", 700 + p as u16).1,
                Some(*b),
                "{sel:?}: flow {p} keeps its backend"
            );
        }
        for p in 0..30 {
            let to = syn(&mut lab, 0, "10.0.0.2", 800 + p).expect("forwarded");
            assert_ne!(
                to, drained,
                "{sel:?}: a new flow reached the drained backend"
            );
        }
    }
}

#[test]
fn adding_a_backend_leaves_established_hash_flows_in_place() {
    let mut two = three(Selection::Hash, NatMode::Dnat);
    two.endpoints.truncate(2);
    let mut lab = Lab::new(spec(vec![two]));
    let before: Vec<IpAddr> = (0..100)
        .map(|p| syn(&mut lab, 0, "10.0.0.2", 3000 + p).expect("forwarded"))
        .collect();
    lab.update(spec(vec![three(Selection::Hash, NatMode::Dnat)]));
    for (p, b) in before.iter().enumerate() {
        assert_eq!(data(&mut lab, 0, "10.0.0.2", 3000 + p as u16).1, Some(*b));
    }
}

/// New flows in one batch are handled exactly as one by one: the batch's
/// look-ahead (service, backend and NAT port guessed ahead to prefetch the
/// reply entry) must never change an outcome — also when its guesses go
/// wrong: a SYN repeated within the batch, SYNs that are dropped (no rule,
/// a source not allowed) between new flows, UDP and TCP mixed, replies —
/// and in a table of two buckets, where entries go to their second bucket,
/// move between buckets and are evicted while the batch runs.
#[test]
fn a_batch_of_new_flows_matches_the_same_frames_one_by_one() {
    for (sel, mode, buckets) in [
        (Selection::Hash, NatMode::FullNat, 1024),
        (Selection::RoundRobin, NatMode::FullNat, 1024),
        (Selection::Persist, NatMode::Dnat, 1024),
        (Selection::Hash, NatMode::FullNat, 2),
        (Selection::Persist, NatMode::Dnat, 2),
    ] {
        let tcp = Service::from(three(sel, mode))
            .allowed(&["10.0.0.0/24"])
            .build();
        let mut udp = three(sel, mode);
        udp.key.proto = L4Proto::Udp;
        udp.key.port_min = 53;
        udp.key.port_max = 53;
        let t = spec(vec![tcp, udp]);
        let mut frames = Vec::new();
        for i in 0..48u16 {
            let client = format!("10.0.0.{}:{}", 2 + i % 5, 30000 + i);
            let f = match i % 8 {
                // A SYN from a source the rule does not allow.
                3 => from_client(Builder::tcp(
                    sa(&format!("10.9.0.1:{}", 30000 + i)),
                    sa("192.0.2.10:80"),
                    SYN,
                )),
                // A SYN to a port with no rule.
                5 => from_client(Builder::tcp(sa(&client), sa("192.0.2.10:81"), SYN)),
                6 => from_client(Builder::udp(sa(&client), sa("192.0.2.10:53")).payload(b"q")),
                _ => from_client(Builder::tcp(sa(&client), sa("192.0.2.10:80"), SYN)),
            };
            frames.push(f.clone());
            if i % 7 == 0 {
                frames.push(f); // retransmitted within the batch
            }
        }
        assert!(frames.len() <= 64, "one batch");
        let mut one = Lab::with_buckets(t.clone(), buckets);
        let singles: Vec<(Verdict, Vec<u8>)> =
            frames.iter().map(|f| one.run(0, CLIENT_PORT, f)).collect();
        let mut batched = Lab::with_buckets(t, buckets);
        let batch = batched.run_batch(0, CLIENT_PORT, &frames);
        for (i, (a, b)) in singles.iter().zip(&batch).enumerate() {
            assert_eq!(a, b, "{sel:?}/{mode:?}/{buckets}: frame {i} differs");
        }
        assert!(
            singles
                .iter()
                .filter(|(v, _)| matches!(v, Verdict::Tx(_)))
                .count()
                > 30,
            "most frames are forwarded"
        );
        // The flows are tracked alike: the backends' replies map back alike.
        let replies = backend_answers(&singles);
        let back_one: Vec<_> = replies
            .iter()
            .map(|f| one.run(0, BACKEND_PORT, f))
            .collect();
        let back_batch = batched.run_batch(0, BACKEND_PORT, &replies);
        assert_eq!(back_one, back_batch, "{sel:?}/{mode:?}/{buckets}: replies");
        // (In the two-bucket table most flows were evicted by later ones.)
        assert!(
            buckets == 2 || back_one.iter().all(|(v, _)| matches!(v, Verdict::Tx(_))),
            "{sel:?}/{mode:?}"
        );
        // Data packets of the same flows, batched and one by one, after
        // the replies (established flows: the fast path, first or second
        // bucket).
        let data = client_data(&frames);
        let data_one: Vec<_> = data.iter().map(|f| one.run(0, CLIENT_PORT, f)).collect();
        let data_batch = batched.run_batch(0, CLIENT_PORT, &data);
        assert_eq!(data_one, data_batch, "{sel:?}/{mode:?}/{buckets}: data");
    }
}

#[test]
fn source_nat_ports_run_out_with_a_counted_drop() {
    let mut t = spec([Service::tcp("192.0.2.10", 80)
        .mode(NatMode::FullNat)
        .ep("10.1.0.11", 80)]);
    t.nat_ports = (40000, 40003); // two ports per worker
    let mut lab = Lab::new(t);
    assert!(syn(&mut lab, 0, "10.0.0.2", 1).is_some());
    assert!(syn(&mut lab, 0, "10.0.0.2", 2).is_some());
    assert!(syn(&mut lab, 0, "10.0.0.2", 3).is_none());
    assert_eq!(
        lab.workers[0]
            .counters()
            .drops(DropReason::NatPortsExhausted),
        1
    );
    // Worker 1 has its own two ports.
    assert!(syn(&mut lab, 1, "10.0.0.2", 4).is_some());
}

#[test]
fn a_full_flow_table_evicts_and_counts() {
    let mut lab = Lab::with_buckets(spec(vec![three(Selection::RoundRobin, NatMode::Dnat)]), 1);
    for p in 0..20 {
        assert!(
            syn(&mut lab, 0, "10.0.0.2", 100 + p).is_some(),
            "new flows always get in"
        );
    }
    let c = lab.workers[0].counters();
    assert_eq!(
        c.flows_created.load(std::sync::atomic::Ordering::Relaxed),
        20
    );
    assert_eq!(
        c.flows_evicted.load(std::sync::atomic::Ordering::Relaxed),
        16
    );
    assert_eq!(lab.ct.used(), 8, "one bucket of 8 ways, 2 per flow");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// Arbitrary bytes, and valid frames with random corruption, never panic and
    /// every frame gets exactly one verdict that the counters account for.
    #[test]
    fn arbitrary_frames_never_panic(
        frames in prop::collection::vec(
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..200),
                (0usize..60, any::<u8>(), 0u16..40000).prop_map(|(i, b, p)| {
                    let mut f = from_client(
                        Builder::tcp(sa(&format!("10.0.0.2:{}", p + 1)), sa("192.0.2.10:80"), SYN),
                    );
                    let i = i % f.len();
                    f[i] = b;
                    f
                }),
            ],
            1..80,
        )
    ) {
        let mut lab = Lab::new(spec(vec![three(Selection::Hash, NatMode::FullNat)]));
        for f in &frames {
            let _ = lab.run(0, CLIENT_PORT, f);
            let _ = lab.run(1, BACKEND_PORT, f);
        }
        let c = lab.workers[0].counters();
        let rx = c.rx_packets.load(std::sync::atomic::Ordering::Relaxed);
        let tx = c.tx_packets.load(std::sync::atomic::Ordering::Relaxed);
        let pass = c.passed.load(std::sync::atomic::Ordering::Relaxed);
        prop_assert_eq!(rx, frames.len() as u64);
        prop_assert_eq!(rx, tx + pass + c.total_drops());
    }
}

#[test]
fn jumbo_frames_are_forwarded_whole() {
    let payload = vec![0xabu8; 8900];
    let mut lab = Lab::new(spec([Service::udp("192.0.2.11", 53)
        .mode(NatMode::FullNat)
        .ep("10.1.0.11", 53)]));
    let f = from_client(Builder::udp(sa("10.0.0.2:5000"), sa("192.0.2.11:53")).payload(&payload));
    let mut buf = vec![0u8; 9216];
    buf[..f.len()].copy_from_slice(&f);
    let mut frames = [xlb_dataplane::Frame::new(&mut buf, f.len(), CLIENT_PORT)];
    let mut v = [Verdict::Pass];
    use xlb_dataplane::pipeline::Processor;
    lab.workers[0].process_batch(&lab.tables, lab.now, &mut frames, &mut v);
    assert_eq!(v[0], Verdict::Tx(BACKEND_PORT));
    let len = frames[0].len;
    let out = &buf[..len];
    assert_eq!(len, f.len());
    let m = xlb_dataplane::wire::parse(out).expect("valid");
    assert!(
        xlb_dataplane::wire::verify_l4_checksum(out, &m),
        "checksum right after NAT"
    );
}

#[test]
fn a_full_nat_address_pool_multiplies_the_ports() {
    let mut t = spec([Service::tcp("192.0.2.10", 80)
        .mode(NatMode::FullNat)
        .ep("10.1.0.11", 80)]);
    t.nat_ports = (40000, 40003); // two ports per worker...
    t.snat_addrs = vec![ip("10.9.0.1"), ip("10.9.0.2"), ip("2001:db8:9::1")]; // ...per address
    let mut lab = Lab::new(t);
    let mut used = std::collections::HashSet::new();
    for p in 1..=4 {
        let f = from_client(Builder::tcp(
            sa(&format!("10.0.0.2:{p}")),
            sa("192.0.2.10:80"),
            SYN,
        ));
        let (v, out) = lab.run(0, CLIENT_PORT, &f);
        assert_eq!(v, Verdict::Tx(BACKEND_PORT), "flow {p}");
        assert!(
            used.insert(src_of(&out)),
            "every flow has its own (address, port)"
        );
    }
    let addrs: std::collections::HashSet<IpAddr> = used.iter().map(|(a, _)| *a).collect();
    assert_eq!(addrs.len(), 2, "both IPv4 pool addresses in use: {used:?}");
    assert!(
        syn(&mut lab, 0, "10.0.0.2", 5).is_none(),
        "2 addresses × 2 ports, then exhausted"
    );
}

#[test]
fn an_idle_flow_past_its_timeout_is_replaced_on_its_next_packet_even_before_the_sweep() {
    let s = Service::udp("192.0.2.11", 53)
        .mode(NatMode::FullNat)
        .timeout(2)
        .eps(["10.1.0.11", "10.1.0.12"], 53);
    // A big table: one batch's share of the sweep cannot reach the flow's bucket.
    let mut lab = Lab::with_buckets(spec(vec![s]), 1 << 16);
    let q = from_client(Builder::udp(sa("10.0.0.2:5000"), sa("192.0.2.11:53")));
    let first = dst_of(&lab.run(0, CLIENT_PORT, &q).1).0;
    lab.now += 1_500_000_000;
    assert_eq!(dst_of(&lab.run(0, CLIENT_PORT, &q).1).0, first);
    lab.now += 2_500_000_000;
    let again = dst_of(&lab.run(0, CLIENT_PORT, &q).1).0;
    assert_ne!(again, first, "expired flow replaced, backend chosen afresh");
    assert_eq!(
        lab.ct.used(),
        2,
        "the old flow's entries are gone, the new flow's are there"
    );
}

/// A flow pinned to a backend that is removed while the flow is idle, and
/// whose endpoint id is then handed to a new backend, must not follow the
/// id: on its next packet it is re-selected (to a backend that is
/// configured, with that backend's address and MAC together), never sent to
/// the new backend's MAC with the old backend's address.
#[test]
fn a_reused_endpoint_id_does_not_capture_an_idle_flow_of_the_removed_backend() {
    for mode in [NatMode::Dnat, NatMode::FullNat] {
        let rule = |eps: &[&str]| {
            Service::tcp("192.0.2.10", 80)
                .mode(mode)
                .eps(eps.iter().copied(), 8080)
        };
        let mut lab = Lab::new(spec(vec![rule(&["10.1.0.11", "10.1.0.12"])]));
        // Round robin: the first flow goes to the first endpoint (id 0).
        assert_eq!(
            syn(&mut lab, 0, "10.0.0.2", 4000),
            Some(ip("10.1.0.11")),
            "{mode:?}"
        );
        // While the flow is idle, its backend goes (id 0 freed) ...
        lab.update(spec(vec![rule(&["10.1.0.12"])]));
        // ... and a new backend comes, taking the lowest free id: 0.
        lab.update(spec(vec![rule(&["10.1.0.12", "10.1.0.13"])]));
        let new_id = lab.tables.services[0]
            .endpoints
            .iter()
            .find(|e| e.addr == xlb_dataplane::net::Ip16::from(ip("10.1.0.13")))
            .map(|e| e.id);
        assert_eq!(new_id, Some(0), "{mode:?}: the id was reused");
        let f =
            from_client(Builder::tcp(sa("10.0.0.2:4000"), sa("192.0.2.10:80"), ACK).payload(b"x"));
        let (v, out) = lab.run(0, CLIENT_PORT, &f);
        assert!(matches!(v, Verdict::Tx(_)), "{mode:?}: {v:?}");
        let (to, _) = dst_of(&out);
        assert_ne!(to, ip("10.1.0.11"), "{mode:?}: sent to the removed backend");
        assert_eq!(
            out[..6],
            be_mac(to).0,
            "{mode:?}: the MAC is that of the backend addressed"
        );
    }
}

/// Everything a worker counted, for comparing two runs.
fn counted(lab: &Lab, worker: usize) -> Vec<u64> {
    use std::sync::atomic::Ordering::Relaxed;
    let c = lab.workers[worker].counters();
    let mut v = vec![
        c.rx_packets.load(Relaxed),
        c.rx_bytes.load(Relaxed),
        c.tx_packets.load(Relaxed),
        c.tx_bytes.load(Relaxed),
        c.passed.load(Relaxed),
        c.flows_created.load(Relaxed),
        c.flows_removed.load(Relaxed),
        c.flows_evicted.load(Relaxed),
        c.icmp_echo_replies.load(Relaxed),
    ];
    v.extend(c.drops.iter().map(|d| d.load(Relaxed)));
    for id in 0..16 {
        let (p, b) = c.endpoint(id);
        v.extend([p, b]);
    }
    v
}

/// Both labs hold the same entries in the same slots (the first
/// difference is reported).
fn same_entries(a: &Lab, b: &Lab, what: &str) {
    let (a, b) = (a.ct.dump(), b.ct.dump());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "{what}: entry {i}");
    }
    assert_eq!(a.len(), b.len(), "{what}: entries");
}

/// The dedicated new-flow path (IPv4 SYN or UDP to a Maglev/persist rule)
/// and the general path give the same frames, verdicts, flow entries (in
/// the same slots), counters and NAT ports, for every NAT mode and for the
/// cases the dedicated path hands over (allowedSources, TTL 1, a SYN+ACK,
/// retransmits, a table too full for a plain insert), and the flows they
/// create carry replies and data alike.
#[test]
fn the_new_flow_path_matches_the_general_path() {
    let modes = [
        NatMode::Dnat,
        NatMode::OneArm,
        NatMode::FullNat,
        NatMode::Dsr,
    ];
    let sels = [Selection::Hash, Selection::Persist, Selection::RoundRobin];
    for mode in modes {
        for sel in sels {
            for buckets in [1024, 4, 1] {
                // (DSR keeps the port; UDP's backends keep it too.)
                let keep_port = |mut s: ServiceSpec| {
                    s.endpoints.iter_mut().for_each(|e| e.port = 0);
                    s
                };
                let tcp = match mode {
                    NatMode::Dsr => keep_port(three(sel, mode)),
                    _ => three(sel, mode),
                };
                let mut guarded = Service::from(tcp.clone()).allowed(&["10.0.0.0/30"]).build();
                guarded.key.port_min = 81;
                guarded.key.port_max = 81;
                let mut udp = keep_port(three(sel, mode));
                udp.key.proto = L4Proto::Udp;
                udp.key.port_min = 53;
                udp.key.port_max = 53;
                let mut t = spec(vec![tcp, guarded, udp]);
                t.nat_ports = (40000, 40999);
                let mut frames = Vec::new();
                for i in 0..56u16 {
                    let client = format!("10.0.0.{}:{}", 2 + i % 7, 30000 + i);
                    let f = match i % 9 {
                        3 => Builder::tcp(sa(&client), sa("192.0.2.10:81"), SYN),
                        4 => Builder::tcp(sa(&client), sa("192.0.2.10:80"), SYN).ttl(1),
                        5 => Builder::tcp(sa(&client), sa("192.0.2.10:80"), SYN | ACK),
                        6 | 7 => Builder::udp(sa(&client), sa("192.0.2.10:53")).payload(b"q"),
                        _ => Builder::tcp(sa(&client), sa("192.0.2.10:80"), SYN),
                    };
                    let f = from_client(f);
                    frames.push(f.clone());
                    if i % 11 == 0 {
                        frames.push(f); // retransmitted within the batch
                    }
                }
                assert!(frames.len() <= 64, "one batch");
                let mut dedicated = Lab::with_buckets(t.clone(), buckets);
                let mut general = Lab::with_buckets(t, buckets);
                for w in &mut general.workers {
                    w.set_new_flow_path(false);
                }
                let what = format!("{mode:?}/{sel:?}/{buckets}");
                let a = dedicated.run_batch(0, CLIENT_PORT, &frames);
                let b = general.run_batch(0, CLIENT_PORT, &frames);
                for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                    assert_eq!(x, y, "{what}: frame {i}");
                }
                same_entries(&dedicated, &general, &format!("{what}: entries"));
                assert_eq!(
                    counted(&dedicated, 0),
                    counted(&general, 0),
                    "{what}: counters"
                );
                let forwarded = a
                    .iter()
                    .filter(|(v, _)| matches!(v, Verdict::Tx(_)))
                    .count();
                assert!(
                    buckets < 1024 || forwarded >= 30,
                    "{what}: most frames forwarded ({forwarded})"
                );
                // The same frames again (retransmits of tracked flows),
                // then the backends' answers and the clients' data.
                let a = dedicated.run_batch(0, CLIENT_PORT, &frames);
                let b = general.run_batch(0, CLIENT_PORT, &frames);
                assert_eq!(a, b, "{what}: again");
                if mode != NatMode::Dsr {
                    let replies = backend_answers(&a);
                    let a = dedicated.run_batch(1, BACKEND_PORT, &replies);
                    let b = general.run_batch(1, BACKEND_PORT, &replies);
                    assert_eq!(a, b, "{what}: replies");
                    assert!(
                        buckets < 1024 || a.iter().all(|(v, _)| matches!(v, Verdict::Tx(_))),
                        "{what}: replies map back"
                    );
                }
                let data = client_data(&frames);
                let a = dedicated.run_batch(0, CLIENT_PORT, &data);
                let b = general.run_batch(0, CLIENT_PORT, &data);
                assert_eq!(a, b, "{what}: data");
                same_entries(&dedicated, &general, &format!("{what}: entries after"));
                for w in 0..2 {
                    assert_eq!(
                        counted(&dedicated, w),
                        counted(&general, w),
                        "{what}: counters after"
                    );
                }
            }
        }
    }
}

/// Least connections counts a backend's flows from when it got its
/// endpoint id: a backend that takes over the id of a removed one starts
/// at zero (it does not inherit the removed backend's idle flows), and
/// when those flows end they do not take from the new backend's count.
#[test]
fn least_connections_does_not_count_a_reused_ids_old_flows() {
    let rule = |eps: &[&str]| {
        Service::tcp("192.0.2.10", 80)
            .sel(Selection::LeastConn)
            .eps(eps.iter().copied(), 8080)
    };
    let mut lab = Lab::new(spec(vec![rule(&["10.1.0.11", "10.1.0.12"])]));
    let mut n: HashMap<IpAddr, u32> = HashMap::new();
    for p in 0..8 {
        *n.entry(syn(&mut lab, 0, "10.0.0.2", 1000 + p).expect("forwarded"))
            .or_default() += 1;
    }
    assert_eq!(n[&ip("10.1.0.11")], 4, "{n:?}");
    // 10.1.0.11 goes while its four flows sit idle; 10.1.0.13 comes and
    // takes its endpoint id.
    lab.update(spec(vec![rule(&["10.1.0.12"])]));
    lab.update(spec(vec![rule(&["10.1.0.12", "10.1.0.13"])]));
    let id = |lab: &Lab, a: &str| {
        lab.tables.services[0]
            .endpoints
            .iter()
            .find(|e| e.addr == xlb_dataplane::net::Ip16::from(ip(a)))
            .map(|e| e.id)
    };
    assert_eq!(id(&lab, "10.1.0.13"), Some(0), "the id was reused");
    // 10.1.0.12 has four flows, 10.1.0.13 none: the next four are 10.1.0.13's.
    lab.now += 20_000_000_000;
    for p in 0..4 {
        assert_eq!(
            syn(&mut lab, 0, "10.0.0.3", 2000 + p),
            Some(ip("10.1.0.13")),
            "new flow {p}"
        );
    }
    // The first eight flows (half-open, 30 s) expire; 10.1.0.13's four
    // (20 s younger) stay: the next two new flows go to 10.1.0.12.
    lab.now += 15_000_000_000;
    let now = lab.now;
    lab.workers[0].maintain(now, 1 << 10);
    assert_eq!(lab.ct.used(), 8, "four flows of two entries left");
    for p in 0..2 {
        assert_eq!(
            syn(&mut lab, 0, "10.0.0.4", 3000 + p),
            Some(ip("10.1.0.12")),
            "flow {p} after the expiry"
        );
    }
}

/// Each forwarded frame's answer from its backend (UDP data, or a TCP
/// SYN+ACK), addressed back to the frame's sender.
fn backend_answers(sent: &[(Verdict, Vec<u8>)]) -> Vec<Vec<u8>> {
    sent.iter()
        .filter(|(v, _)| matches!(v, Verdict::Tx(_)))
        .map(|(_, out)| {
            let (src, sport) = src_of(out);
            let (dst, dport) = dst_of(out);
            let (from, to) = (SocketAddr::new(dst, dport), SocketAddr::new(src, sport));
            from_backend(if out[23] == 17 {
                Builder::udp(from, to).payload(b"a")
            } else {
                Builder::tcp(from, to, SYN | ACK)
            })
        })
        .collect()
}

/// A data packet (ACK with one byte) on each TCP flow of `frames`, from the
/// client.
fn client_data(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    frames
        .iter()
        .filter(|f| f[23] == 6)
        .map(|f| {
            let (src, sport) = src_of(f);
            let (dst, dport) = dst_of(f);
            from_client(
                Builder::tcp(
                    SocketAddr::new(src, sport),
                    SocketAddr::new(dst, dport),
                    ACK,
                )
                .payload(b"d"),
            )
        })
        .collect()
}

/// Persist is client affinity with a timeout: a client stays on its
/// backend when a backend is added (where Maglev alone would move it), on
/// both workers and through the new-flow path and the general one alike;
/// after the rule's inactivity timeout without a new flow it is placed
/// afresh; a backend that goes down loses its clients at once.
#[test]
fn persist_affinity_outlives_backend_changes_until_the_client_goes_idle() {
    for new_flow_path in [true, false] {
        persist_affinity_case(new_flow_path);
    }
}

fn persist_affinity_case(new_flow_path: bool) {
    let two = {
        let mut s = three(Selection::Persist, NatMode::FullNat);
        s.endpoints.truncate(2);
        s
    };
    let mut lab = Lab::new(spec(vec![two.clone()]));
    for w in lab.workers.iter_mut() {
        w.set_new_flow_path(new_flow_path);
    }
    // Clients whose Maglev choice changes when the third backend joins.
    let all3 = Lab::new(spec(vec![three(Selection::Persist, NatMode::FullNat)]));
    let mut probe2 = Lab::new(spec(vec![two.clone()]));
    let mut probe3 = all3;
    let movers: Vec<String> = (0..200)
        .map(|c| format!("10.0.{}.{}", c / 200, 2 + c % 200))
        .filter(|c| syn(&mut probe2, 0, c, 5000) != syn(&mut probe3, 0, c, 5000))
        .take(6)
        .collect();
    assert_eq!(
        movers.len(),
        6,
        "Maglev moves some clients to the new backend"
    );
    let before: Vec<IpAddr> = movers
        .iter()
        .map(|c| syn(&mut lab, 0, c, 1000).expect("forwarded"))
        .collect();
    lab.update(spec(vec![three(Selection::Persist, NatMode::FullNat)]));
    lab.now += 100_000_000_000;
    for (k, c) in movers.iter().enumerate() {
        // New flows on either worker keep the client's backend.
        assert_eq!(syn(&mut lab, k % 2, c, 1001), Some(before[k]), "{c}");
        assert_eq!(syn(&mut lab, (k + 1) % 2, c, 1002), Some(before[k]), "{c}");
    }
    // 230 s later (the rule's timeout is 240 s) the affinity still holds;
    // each new flow restarts its clock.
    lab.now += 230_000_000_000;
    assert_eq!(syn(&mut lab, 1, &movers[0], 1003), Some(before[0]));
    // 250 s idle: the other clients are placed afresh, by Maglev over the
    // three backends (as the probe lab placed them).
    lab.now += 250_000_000_000;
    for c in &movers[1..] {
        let now = syn(&mut lab, 0, c, 1004).expect("forwarded");
        assert_eq!(Some(now), syn(&mut probe3, 0, c, 1004), "{c}");
        assert_ne!(Some(now), syn(&mut probe2, 0, c, 1004), "{c}");
    }
    // A backend that goes down loses its clients at once...
    let down = syn(&mut lab, 0, &movers[0], 1005).expect("forwarded");
    let mut s = three(Selection::Persist, NatMode::FullNat);
    for e in s.endpoints.iter_mut() {
        if e.addr == down {
            e.state = EndpointState::Down;
        }
    }
    lab.update(spec(vec![s]));
    let moved = syn(&mut lab, 0, &movers[0], 1006).expect("forwarded");
    assert_ne!(moved, down);
    // ... and they stay where they went when it comes back, where Maglev
    // alone would send them back.
    lab.update(spec(vec![three(Selection::Persist, NatMode::FullNat)]));
    assert_eq!(syn(&mut lab, 1, &movers[0], 1007), Some(moved));
    assert_eq!(syn(&mut probe3, 1, &movers[0], 1007), Some(down));
}

/// A fragmented datagram's later fragments (no L4 header) follow the first
/// one: through full NAT to the backend and, for the backend's fragmented
/// answer, back to the client, in IPv4 and IPv6, byte for byte as the
/// translation of the same fragments built with the new addresses. A later
/// fragment whose first was not forwarded by this worker, or came over
/// 5 s after it, is dropped and counted.
#[test]
fn later_fragments_follow_their_first_fragment() {
    for (client, vip, backends) in [
        ("10.0.0.2", "192.0.2.20", &BACKENDS_V4[..]),
        ("2001:db8::2", "2001:db8::20", &BACKENDS_V6[..]),
    ] {
        fragments_case(client, vip, backends);
    }
}

fn fragments_case(client: &str, vip: &str, backends: &[&str]) {
    let rule = Service::udp(vip, 53)
        .sel(Selection::Hash)
        .mode(NatMode::FullNat)
        .eps(backends.iter().copied(), 5353);
    let mut lab = Lab::new(spec(vec![rule]));
    let sock = |a: &str, p: u16| -> SocketAddr { SocketAddr::new(ip(a), p) };
    let (c, v) = (sock(client, 40000), sock(vip, 53));
    let data = [7u8; 64];
    let first = |src, dst, ident: u16| {
        let mut b = Builder::udp(src, dst).fragment(0, true).payload(&data);
        b.ident = ident;
        b
    };
    let later = |src, dst, ident: u16, more| {
        let mut b = Builder::udp(src, dst).fragment(72, more).payload(&data);
        b.ident = ident;
        b
    };
    // Client → VIP: the first fragment creates the flow, the later follows.
    let (verdict, out) = lab.run(0, CLIENT_PORT, &from_client(first(c, v, 0x4242)));
    assert_eq!(
        verdict,
        Verdict::Tx(BACKEND_PORT),
        "{client}: first fragment"
    );
    let (backend, bport) = dst_of(&out);
    let (snat, nat_port) = src_of(&out);
    let b = backend.to_string();
    let nat = SocketAddr::new(snat, nat_port);
    let be = SocketAddr::new(backend, bport);
    assert_eq!(out, to_backend(first(nat, be, 0x4242).ttl(63), &b));
    let (verdict, out) = lab.run(0, CLIENT_PORT, &from_client(later(c, v, 0x4242, false)));
    assert_eq!(
        verdict,
        Verdict::Tx(BACKEND_PORT),
        "{client}: later fragment"
    );
    assert_eq!(out, to_backend(later(nat, be, 0x4242, false).ttl(63), &b));
    // Backend → source-NAT address: its fragmented answer reaches the client.
    let (verdict, out) = lab.run(0, BACKEND_PORT, &from_backend(first(be, nat, 0x77)));
    assert_eq!(
        verdict,
        Verdict::Tx(CLIENT_PORT),
        "{client}: answer's first"
    );
    assert_eq!(out, to_client(first(v, c, 0x77).ttl(63)));
    let (verdict, out) = lab.run(0, BACKEND_PORT, &from_backend(later(be, nat, 0x77, true)));
    assert_eq!(
        verdict,
        Verdict::Tx(CLIENT_PORT),
        "{client}: answer's later"
    );
    assert_eq!(out, to_client(later(v, c, 0x77, true).ttl(63)));
    // Not followed: another datagram, the other worker, or too late.
    let dropped = |lab: &mut Lab, worker, frame: &[u8]| {
        lab.run(worker, CLIENT_PORT, frame).0 == Verdict::Drop(DropReason::Fragment)
    };
    assert!(dropped(
        &mut lab,
        0,
        &from_client(later(c, v, 0x4243, false))
    ));
    assert!(dropped(
        &mut lab,
        1,
        &from_client(later(c, v, 0x4242, false))
    ));
    lab.now += 5_000_000_000;
    assert!(dropped(
        &mut lab,
        0,
        &from_client(later(c, v, 0x4242, false))
    ));
}

/// A backend's answer after its flow timed out (before the sweep reached
/// the flow) is not translated and does not bring the flow back: the flow
/// is removed, as the sweep would have removed it.
#[test]
fn a_late_answer_does_not_revive_a_timed_out_flow() {
    let rule = Service::udp("192.0.2.30", 53)
        .sel(Selection::Hash)
        .mode(NatMode::FullNat)
        .ep("10.1.0.11", 5353);
    let mut lab = Lab::new(spec(vec![rule]));
    let query = from_client(Builder::udp(sa("10.0.0.2:41000"), sa("192.0.2.30:53")).payload(b"q"));
    let (v, out) = lab.run(0, CLIENT_PORT, &query);
    assert_eq!(v, Verdict::Tx(BACKEND_PORT));
    let (nat, nat_port) = src_of(&out);
    let answer = from_backend(
        Builder::udp(sa("10.1.0.11:5353"), SocketAddr::new(nat, nat_port)).payload(b"a"),
    );
    // In time (the rule's timeout is 20 s): translated.
    lab.now += 10_000_000_000;
    assert_eq!(
        lab.run(0, BACKEND_PORT, &answer).0,
        Verdict::Tx(CLIENT_PORT)
    );
    // 21 s after the flow's last packet, with no sweep in between.
    lab.now += 21_000_000_000;
    let late = Verdict::Drop(DropReason::UntrackedReply);
    assert_eq!(lab.run(0, BACKEND_PORT, &answer).0, late);
    assert_eq!(lab.run(0, BACKEND_PORT, &answer).0, late, "still gone");
    let removed = lab.workers[0]
        .counters()
        .flows_removed
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(removed, 1);
}

/// Every frame that opens a flow either takes the new-flow path or is
/// counted with the reason it did not; frames of existing flows and
/// frames that open none are not counted.
#[test]
fn new_flows_that_leave_the_fast_path_are_counted_by_reason() {
    use xlb_dataplane::pipeline::FastPathExit as Exit;
    let mut rr = three(Selection::RoundRobin, NatMode::FullNat);
    rr.key.port_min = 81;
    rr.key.port_max = 81;
    let mut guarded = Service::from(three(Selection::Hash, NatMode::FullNat))
        .allowed(&["10.0.0.0/30"])
        .build();
    guarded.key.port_min = 82;
    guarded.key.port_max = 82;
    let mut dsr = three(Selection::Hash, NatMode::Dsr);
    dsr.endpoints.iter_mut().for_each(|e| e.port = 0);
    dsr.key.port_min = 83;
    dsr.key.port_max = 83;
    let mut lab = Lab::new(spec(vec![
        three(Selection::Hash, NatMode::FullNat),
        rr,
        guarded,
        dsr,
    ]));
    let exits = |lab: &Lab| {
        let c = lab.workers[0].counters();
        Exit::ALL
            .iter()
            .map(|&e| (e, c.fast_path_exit(e)))
            .filter(|&(_, n)| n > 0)
            .collect::<Vec<_>>()
    };
    let syn_to = |port: u16, client: u16| {
        from_client(Builder::tcp(
            sa(&format!("10.0.0.2:{client}")),
            sa(&format!("192.0.2.10:{port}")),
            SYN,
        ))
    };
    // The new-flow path takes a SYN to the Maglev rule, and then its data
    // is an established flow's: nothing counted.
    assert!(matches!(
        lab.run(0, CLIENT_PORT, &syn_to(80, 1000)).0,
        Verdict::Tx(_)
    ));
    assert!(matches!(
        data(&mut lab, 0, "10.0.0.2", 1000).0,
        Verdict::Tx(_)
    ));
    assert_eq!(exits(&lab), vec![]);
    // One of each reason the rules and frames here can give.
    lab.run(0, CLIENT_PORT, &syn_to(81, 1001));
    lab.run(0, CLIENT_PORT, &syn_to(82, 1002));
    lab.run(0, CLIENT_PORT, &syn_to(83, 1003));
    lab.run(0, CLIENT_PORT, &syn_to(99, 1004));
    let ttl1 = from_client(Builder::tcp(sa("10.0.0.2:1005"), sa("192.0.2.10:80"), SYN).ttl(1));
    assert_eq!(
        lab.run(0, CLIENT_PORT, &ttl1).0,
        Verdict::Drop(DropReason::TtlExceeded)
    );
    // A SYN+ACK opens nothing: not counted.
    let synack = from_client(Builder::tcp(
        sa("10.0.0.2:1006"),
        sa("192.0.2.10:80"),
        SYN | ACK,
    ));
    lab.run(0, CLIENT_PORT, &synack);
    lab.workers[0].set_new_flow_path(false);
    lab.run(0, CLIENT_PORT, &syn_to(80, 1007));
    assert_eq!(
        exits(&lab),
        vec![
            (Exit::Disabled, 1),
            (Exit::NoRule, 1),
            (Exit::Selection, 1),
            (Exit::SourceFilter, 1),
            (Exit::Dsr, 1),
            (Exit::Ttl, 1),
        ]
    );
}
