//! End-to-end tests of xlb-pktgen and the harness on veth pairs between
//! network namespaces this test creates (pid-tagged) and always deletes.
//! Root required: they fail, never skip, without it. Every traffic loop is
//! bounded by a packet count and a duration.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use xlb_perf::bench::{BenchOpts, Contender};
use xlb_perf::engine::RxMode;
use xlb_perf::frames::{Proto, SizeSpec};
use xlb_perf::lab::{self, Lab};
use xlb_perf::pktgen::{run, RxOpts, TxOpts};

fn pair(lab: &mut Lab) -> (String, String, String, String) {
    let a = lab.ns("a").expect("ns a");
    let b = lab.ns("b").expect("ns b");
    let (ia, ib) = (lab.ifname("a"), lab.ifname("b"));
    lab::veth(&a, &ia, "10.96.0.1/24", &b, &ib, "10.96.0.2/24", 1).expect("veth");
    (a, ia, b, ib)
}

fn opts(a: &str, ia: &str, b: &str, ib: &str) -> (TxOpts, RxOpts) {
    let mut tx = TxOpts::new(ia, SocketAddr::from(([10, 96, 0, 2], 9)));
    tx.netns = Some(a.to_string());
    tx.duration = Duration::from_millis(800);
    tx.count = 40_000;
    tx.rate = Some(50_000);
    let mut rx = RxOpts::new(ib);
    rx.netns = Some(b.to_string());
    rx.linger = Duration::from_millis(300);
    (tx, rx)
}

fn no_netns_left(lab_tag_ns: &[String]) {
    let list = lab::sh(&["ip", "netns", "list"]).expect("ip netns list");
    for n in lab_tag_ns {
        assert!(!list.contains(n.as_str()), "{n} left behind");
    }
}

#[test]
fn tx_to_rx_over_a_veth_accounts_for_every_packet() {
    assert_eq!(lab::euid(), 0, "netns tests need root");
    let mut lab = Lab::new("t").expect("lab");
    let (a, ia, b, ib) = pair(&mut lab);
    let (mut tx, rx) = opts(&a, &ia, &b, &ib);
    tx.flows = 64;
    tx.size = SizeSpec::Imix;
    let t0 = Instant::now();
    let s = run(Some(&tx), Some(&rx), false).expect("pktgen run");
    assert!(t0.elapsed() < Duration::from_secs(20), "bounded in time");
    let (t, r, l) = (
        s.tx.clone().expect("tx"),
        s.rx.clone().expect("rx"),
        s.loss.expect("loss"),
    );
    assert!(l.exact);
    assert!(t.packets > 0 && t.packets <= 40_000, "{t:?}");
    assert_eq!(l.sent, t.packets, "every sent packet is accounted");
    assert_eq!(l.sent + l.duplicates, l.received + l.lost, "{l:?}");
    assert_eq!(l.duplicates, 0);
    assert_eq!(l.received, r.packets);
    assert_eq!(r.bad_checksum, 0, "frames arrive with valid checksums");
    assert!(
        r.packets > t.packets / 2,
        "most packets arrive at 50 kpps: {s:?}"
    );
    assert!(r.latency.samples == r.packets && r.latency.p50_ns > 0);
    assert!(r.latency.p50_ns <= r.latency.p90_ns && r.latency.p90_ns <= r.latency.p99_ns);
    let names = lab.namespaces().to_vec();
    drop(lab);
    no_netns_left(&names);
}

#[test]
fn a_single_flow_arrives_in_order_also_through_the_raw_socket_receiver() {
    assert_eq!(lab::euid(), 0, "netns tests need root");
    let mut lab = Lab::new("r").expect("lab");
    let (a, ia, b, ib) = pair(&mut lab);
    for (mode, proto) in [(RxMode::Xdp, Proto::Udp), (RxMode::Raw, Proto::Ack)] {
        let (mut tx, mut rx) = opts(&a, &ia, &b, &ib);
        tx.flows = 1;
        tx.proto = proto;
        tx.count = 5_000;
        tx.rate = Some(20_000);
        rx.mode = mode;
        let s = run(Some(&tx), Some(&rx), false).expect("pktgen run");
        let (t, l) = (s.tx.clone().expect("tx"), s.loss.expect("loss"));
        assert_eq!(t.packets, 5_000, "the count bound stops the sender: {s:?}");
        assert_eq!(
            l.reordered, 0,
            "one flow over one veth never reorders: {s:?}"
        );
        assert_eq!(l.sent + l.duplicates, l.received + l.lost);
        assert!(l.received > 4_000, "{mode:?}: {s:?}");
    }
    // RX alone: stops at its duration, estimates loss from sequences.
    let mut rx = RxOpts::new(&ib);
    rx.netns = Some(b.clone());
    rx.duration = Duration::from_millis(300);
    let s = run(None, Some(&rx), false).expect("rx only");
    assert!(!s.loss.expect("loss").exact);
    assert!(
        !lab::sh(&["ip", "-n", &b, "-o", "link"])
            .expect("ip link")
            .contains("xdp"),
        "the receiver's XDP program is detached"
    );
}

#[test]
fn quick_harness_runs_every_contender_and_writes_its_reports() {
    assert_eq!(lab::euid(), 0, "netns tests need root");
    let out = std::env::temp_dir().join(format!("xlb-perf-smoke-{}", std::process::id()));
    let o = BenchOpts {
        reps: 1,
        secs: 1.0,
        contenders: vec![Contender::Xlb, Contender::Fwd, Contender::Nft],
        gen_cpu: 0,
        lb_cpu: 1 % std::thread::available_parallelism().map_or(1, |n| n.get()),
        rx_cpu: 0,
        busy_poll: true,
        flows: 1024,
        batch: 32,
        frames: 4096,
        nice: None,
        threaded_napi: false,
        out: out.clone(),
        verbose: false,
    };
    let t0 = Instant::now();
    let r = xlb_perf::bench::run(&o, "test").expect("bench --quick");
    assert!(t0.elapsed() < Duration::from_secs(60));
    assert_eq!(r.summary.len(), 3);
    for s in &r.summary {
        assert!(
            s.delivered.median > 0.0,
            "{:?} delivered nothing: {r:?}",
            s.contender
        );
    }
    for x in &r.runs {
        assert_eq!(x.bad_checksum, 0, "{:?} emits bad checksums", x.contender);
        let back: Vec<IpAddr> = xlb_perf::bench::BACKENDS
            .iter()
            .map(|b| IpAddr::V4(*b))
            .collect();
        assert!(!back.is_empty());
    }
    for ext in ["md", "json", "svg"] {
        let f = out.join(format!("udp64-1024flows.{ext}"));
        assert!(f.exists(), "{f:?}");
    }
    let _ = std::fs::remove_dir_all(&out);
    assert!(!lab::sh(&["ip", "netns", "list"])
        .expect("ip netns list")
        .contains(&format!("xlbp-{}b", std::process::id() % 100_000)));
}
