//! End-to-end tests of xlb-pktgen and the harness on veth pairs between
//! network namespaces this test creates (test-kit labs, named by pid and
//! lab) and always deletes. Root required: they fail, never skip, without
//! it. Every traffic loop is bounded by a packet count and a duration.
//!
//! The suites' tests run alongside each other; the two that change the
//! kernel's global conntrack limits hold the test kit's global-sysctl lock
//! for their whole run, so each sees only its own changes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use xlb_perf::engine::RxMode;
use xlb_perf::frames::{Proto, SizeSpec};
use xlb_perf::pktgen::{run, RxOpts, TxOpts};
use xlb_perf::suites::udp::{UdpContender, UdpOpts};
use xlb_perf::topo::{Placement, Topology};
use xlb_testkit::{netns, Lab, Netns, Sysctls, Veth};

fn pair(lab: &mut Lab) -> (Netns, String, Netns, String) {
    let a = lab.ns("a").expect("ns a");
    let b = lab.ns("b").expect("ns b");
    let (ia, ib) = (lab.ifname("a"), lab.ifname("b"));
    Veth::new(&a, &ia, &b, &ib).create().expect("veth");
    a.addr(&ia, "10.96.0.1/24").expect("address");
    b.addr(&ib, "10.96.0.2/24").expect("address");
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

fn no_netns_left(lab_ns: &[Netns]) {
    let list = xlb_testkit::sh(&["ip", "netns", "list"]).expect("ip netns list");
    for n in lab_ns {
        assert!(!list.contains(n.name()), "{n} left behind");
    }
}

/// No namespace of this process outlived its lab (tests running alongside
/// hold live labs: theirs do not count).
fn no_lab_leaked() {
    let left = netns::leaked().expect("ip netns list");
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn tx_to_rx_over_a_veth_accounts_for_every_packet() {
    assert_eq!(xlb_testkit::euid(), 0, "netns tests need root");
    let mut lab = Lab::new().expect("lab");
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
    assert_eq!(xlb_testkit::euid(), 0, "netns tests need root");
    let mut lab = Lab::new().expect("lab");
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
    rx.netns = Some(b.to_string());
    rx.duration = Duration::from_millis(300);
    let s = run(None, Some(&rx), false).expect("rx only");
    assert!(!s.loss.expect("loss").exact);
    assert!(
        !b.xdp_attached().expect("ip link"),
        "the receiver's XDP program is detached"
    );
}

#[test]
fn quick_harness_runs_every_contender_and_writes_its_reports() {
    assert_eq!(xlb_testkit::euid(), 0, "netns tests need root");
    let out = std::env::temp_dir().join(format!("xlb-perf-smoke-{}", std::process::id()));
    let o = UdpOpts {
        reps: 1,
        secs: 1.0,
        contenders: vec![UdpContender::Xlb, UdpContender::Fwd, UdpContender::Nft],
        gen_cpu: 0,
        lb_cpu: 1 % std::thread::available_parallelism().map_or(1, |n| n.get()),
        rx_cpu: 0,
        placements: vec![Placement::Shared, Placement::Owned],
        topology: Topology::Bridged,
        flows: 1024,
        batch: 32,
        frames: 4096,
        nice: None,
        out: out.clone(),
        lat_rate: Some(20_000),
        verbose: false,
    };
    let t0 = Instant::now();
    let r = xlb_perf::suites::udp::run(&o, "test").expect("bench --quick");
    assert!(
        t0.elapsed() < Duration::from_secs(120),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(r.summary.len(), 6, "three contenders in two placements");
    for s in &r.summary {
        assert!(
            s.delivered.median > 0.0,
            "{:?} delivered nothing: {r:?}",
            s.contender
        );
    }
    for x in &r.runs {
        assert_eq!(x.bad_checksum, 0, "{:?} emits bad checksums", x.contender);
    }
    // Max-rate runs (bridged): every backend namespace's kernel counted its
    // share of the 1024 flows, and the counts make up the delivered rate.
    for x in r.runs.iter().filter(|x| x.paced_pps.is_none()) {
        assert_eq!(x.per_backend.len(), 3, "{x:?}");
        assert!(
            x.per_backend.iter().all(|&n| n > 0),
            "{:?} {:?} left a backend without traffic: {:?}",
            x.placement,
            x.contender,
            x.per_backend
        );
        let n: u64 = x.per_backend.iter().sum();
        let tx = x.pktgen.tx.as_ref().expect("tx");
        assert!(n <= tx.packets, "{n} counted of {} sent", tx.packets);
        assert!(
            (x.delivered_mpps - n as f64 / tx.secs / 1e6).abs() < 1e-9,
            "{x:?}"
        );
        assert!(x.pktgen.rx.is_none(), "no stamped receiver in bridged runs");
        assert!(!x.cpus.is_empty(), "each run records its CPUs' time");
    }
    for ext in ["md", "json", "svg"] {
        let f = out.join(format!("udp64-1024flows.{ext}"));
        assert!(f.exists(), "{f:?}");
    }
    // The paced runs: one per contender, at the rate asked, with a latency CDF.
    let paced: Vec<_> = r.runs.iter().filter(|x| x.paced_pps.is_some()).collect();
    assert_eq!(paced.len(), 3);
    for x in &paced {
        let rx = x.pktgen.rx.as_ref().expect("rx");
        assert!(x.offered_mpps < 0.03, "paced at 20 kpps: {x:?}");
        assert!(rx.latency_cdf.len() > 10 && x.p50_us > 0.0, "{x:?}");
    }
    assert!(paced.iter().all(|x| x.placement == Placement::Shared));
    for s in r
        .summary
        .iter()
        .filter(|s| s.placement == Placement::Shared)
    {
        assert!(s.lat_p50_us > 0.0 && s.lat_p50_us <= s.lat_p99_us, "{s:?}");
    }
    // Each placement's ratios are against its own xlb run.
    for p in [Placement::Owned, Placement::Shared] {
        let x = r
            .summary
            .iter()
            .find(|s| s.placement == p && s.contender == UdpContender::Xlb)
            .expect("xlb in every placement");
        assert_eq!(x.ratio_to_xlb, Some(1.0));
    }
    let md = std::fs::read_to_string(out.join("udp64-1024flows.md")).expect("md");
    assert!(md.contains("| owned | xlb") && md.contains("| shared | nftables"));
    assert!(out.join("udp-latency-cdf.svg").exists());
    let _ = std::fs::remove_dir_all(&out);
    no_lab_leaked();
}

/// The xlb daemon for the harness tests: the workspace's debug build (`cargo
/// test --workspace` has built it already; built here when run alone).
fn xlb_bin() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let st = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "-q",
            "--locked",
            "-p",
            "xlb-control",
            "--bin",
            "xlb",
        ])
        .current_dir(&root)
        .status()
        .expect("running cargo build for the xlb daemon");
    assert!(st.success(), "building the xlb daemon failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("debug").join("xlb");
    assert!(bin.exists(), "{bin:?} missing after cargo build");
    bin
}

fn leftovers(tag: &str) -> Vec<String> {
    let ps = xlb_testkit::sh(&["ps", "-eo", "args"]).expect("ps");
    ps.lines()
        .filter(|l| l.contains(tag))
        .map(str::to_string)
        .collect()
}

#[test]
fn quick_tcp_suite_measures_every_contender_and_leaves_nothing_behind() {
    use xlb_perf::suites::tcp::{TcpContender, TcpMode, TcpOpts};
    assert_eq!(xlb_testkit::euid(), 0, "netns tests need root");
    let out = std::env::temp_dir().join(format!("xlb-perf-tcp-smoke-{}", std::process::id()));
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let o = TcpOpts {
        reps: 1,
        secs: 1,
        contenders: TcpContender::all(),
        client_cpu: 0,
        lb_cpu: 1 % ncpu,
        be_cpu: 1 % ncpu,
        conns: 20,
        lat_conns: 4,
        lat_delay_ms: 2,
        xlb_bin: xlb_bin(),
        out: out.clone(),
        nice: None,
        verbose: false,
    };
    let t0 = Instant::now();
    let r = xlb_perf::suites::tcp::run(&o, "test").expect("tcp --quick");
    assert!(t0.elapsed() < Duration::from_secs(90), "{:?}", t0.elapsed());
    assert_eq!(r.summary.len(), 6);
    assert_eq!(r.runs.len(), 18, "three wrk runs per contender");
    for x in &r.runs {
        assert!(
            x.rate > 100.0 && x.wrk.requests > 100,
            "{:?} {:?} completed almost nothing: {x:?}",
            x.contender,
            x.mode
        );
        assert!(
            x.errors * 20 <= x.wrk.requests,
            "{:?} {:?}: {} errors in {} requests",
            x.contender,
            x.mode,
            x.errors,
            x.wrk.requests
        );
        assert!(x.p50_us > 0 && x.p50_us <= x.p99_us, "{x:?}");
        let client = x
            .procs
            .iter()
            .find(|u| u.role == "client wrk")
            .expect("client use");
        assert_eq!(client.cpus, vec![0], "wrk stays on its core: {x:?}");
        if x.contender != TcpContender::Direct && x.contender != TcpContender::Nft {
            let b = x
                .procs
                .iter()
                .find(|u| u.role.starts_with("balancer"))
                .expect("the balancer process is sampled");
            assert_eq!(b.cpus, vec![(1 % ncpu) as i32], "{x:?}");
        }
        assert!(!x.cpus.is_empty() && !x.net_rx_softirqs.is_empty());
    }
    // The paced run is slower than the unpaced keep-alive run of the same contender.
    for c in TcpContender::all() {
        let rate = |m: TcpMode| {
            r.runs
                .iter()
                .find(|x| x.contender == c && x.mode == m)
                .map(|x| x.rate)
                .expect("run")
        };
        assert!(rate(TcpMode::Latency) < rate(TcpMode::Keepalive), "{c:?}");
    }
    for f in ["tcp.md", "tcp.json", "tcp.svg", "latency-cdf.svg"] {
        assert!(out.join(f).exists(), "{f}");
    }
    let md = std::fs::read_to_string(out.join("tcp.md")).expect("tcp.md");
    assert!(md.contains("HAProxy") && md.contains("÷ direct"));
    let _ = std::fs::remove_dir_all(&out);
    no_lab_leaked();
    let left = leftovers(&format!("xlb-perf-tcp-{}", std::process::id()));
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

#[test]
fn quick_flows_suite_tracks_every_flow_and_floods_next_to_established_flows() {
    use xlb_perf::suites::flows::{FlowsContender, FlowsOpts};
    assert_eq!(xlb_testkit::euid(), 0, "netns tests need root");
    let out = std::env::temp_dir().join(format!("xlb-perf-flows-smoke-{}", std::process::id()));
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let many = 20_000;
    // Held for the whole run: no other test changes the limits meanwhile,
    // so they must come back to exactly what they were.
    let _sysctls = Sysctls::lock().expect("global-sysctl lock");
    let ct = |p: &str| std::fs::read_to_string(p).expect(p).trim().to_string();
    let limits = || {
        (
            ct("/proc/sys/net/netfilter/nf_conntrack_max"),
            ct("/proc/sys/net/netfilter/nf_conntrack_buckets"),
        )
    };
    let limits0 = limits();
    let o = FlowsOpts {
        reps: 1,
        secs: 1.0,
        contenders: vec![FlowsContender::Xlb, FlowsContender::Nft],
        many,
        ct_buckets: 16_384,
        est_rate: 20_000,
        busy_poll: false,
        gen_cpu: 0,
        lb_cpu: 1 % ncpu,
        rx_cpu: 0,
        nice: None,
        xlb_bin: xlb_bin(),
        out: out.clone(),
        verbose: false,
    };
    let t0 = Instant::now();
    let r = xlb_perf::suites::flows::run(&o, "test").expect("flows --quick");
    assert!(t0.elapsed() < Duration::from_secs(90), "{:?}", t0.elapsed());
    assert_eq!(r.runs.len(), 8, "four scenarios per contender");
    for c in [FlowsContender::Xlb, FlowsContender::Nft] {
        let mine: Vec<_> = r.runs.iter().filter(|x| x.contender == c).collect();
        assert_eq!(mine.len(), 4, "{c:?}");
        for x in &mine {
            assert!(x.delivered_mpps > 0.0, "{x:?}");
            assert!(x.ct_capacity >= 16_384 * 8, "{x:?}");
        }
        let many_run = mine[1];
        assert_eq!(many_run.flows, many);
        // The warm-up sent every flow (a few may be lost on a busy
        // machine, and those are created by the measured run).
        assert!(
            many_run.ct_entries >= c.entries_per_flow() * u64::from(many) * 9 / 10,
            "{c:?} tracks the flows: {many_run:?}"
        );
        let flood = mine[3];
        assert!(flood.flood_offered_pps > 0.0, "{flood:?}");
        assert!(
            flood.flood_delivered_pps > 0.0,
            "SYNs reach the flooded service's backends: {flood:?}"
        );
        // The flood's SYNs are tracked too: more entries than the 1024 flows.
        assert!(
            flood.ct_entries > c.entries_per_flow() * 1024,
            "{c:?} tracks the flood: {flood:?}"
        );
        assert!(
            mine[2].flood_offered_pps == 0.0 && mine[2].loss < 0.5,
            "{c:?}"
        );
        // Each part starts from an empty table (a fresh xlb; the kernel's
        // flushed): the calm run sees the 1024 flows, not part A's many.
        assert!(
            mine[2].ct_entries <= c.entries_per_flow() * 1024,
            "{c:?}: {:?}",
            mine[2]
        );
        let sum = r
            .summary
            .iter()
            .find(|s| s.contender == c && s.scenario == many_run.scenario)
            .expect("many-flows summary");
        assert!(sum.delivered_over_xlb.is_some() && sum.xlb_over_this.is_some());
    }
    assert_eq!(
        limits(),
        limits0,
        "global conntrack limits left as they were"
    );
    for f in ["flows.md", "flows.json"] {
        assert!(out.join(f).exists(), "{f}");
    }
    let md = std::fs::read_to_string(out.join("flows.md")).expect("flows.md");
    assert!(
        md.contains("nftables DNAT")
            && md.contains("÷ xlb")
            && md.contains("What the SYN flood does")
    );
    let _ = std::fs::remove_dir_all(&out);
    no_lab_leaked();
    let left = leftovers(&format!("xlb-perf-flows-{}", std::process::id()));
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

#[test]
fn kernel_conntrack_limits_are_raised_for_a_run_and_restored() {
    use xlb_perf::contenders::nft::CtSizing;
    assert_eq!(xlb_testkit::euid(), 0, "needs root");
    let read = |p: &str| -> u64 {
        std::fs::read_to_string(p)
            .expect(p)
            .trim()
            .parse()
            .expect("number")
    };
    let max = "/proc/sys/net/netfilter/nf_conntrack_max";
    let buckets = "/proc/sys/net/netfilter/nf_conntrack_buckets";
    // Held for the whole test (CtSizing takes it again on this thread): no
    // other test changes the limits between these reads.
    let _sysctls = Sysctls::lock().expect("global-sysctl lock");
    let (m0, b0) = (read(max), read(buckets));
    {
        let s = CtSizing::at_least(m0 + 4096, b0 * 2).expect("raise");
        assert_eq!(read(max), m0 + 4096);
        assert_eq!(read(buckets), b0 * 2);
        assert!(
            s.describe().contains(&format!("was {m0}")),
            "{}",
            s.describe()
        );
        // Lower wishes leave larger settings alone.
        let inner = CtSizing::at_least(1, 1).expect("no-op");
        drop(inner);
        assert_eq!(read(max), m0 + 4096);
    }
    assert_eq!((read(max), read(buckets)), (m0, b0), "restored on drop");
}
