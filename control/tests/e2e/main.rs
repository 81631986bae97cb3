//! End-to-end: the real `xlb` binary on AF_XDP in the lab topology of
//! `scripts/lab.sh` (client, balancer, switch and three backend namespaces),
//! real kernels and real servers on both sides. Needs root (CI runs as root);
//! these tests fail, never skip, without it.
//!
//! Each test brings up its own lab ([`lab::Lab`], names unique per process
//! and lab, so the tests run in parallel) and tears it down in `Drop`, also
//! when the test fails.

mod ha;
mod ha_tests;
mod host_tests;
mod lab;
mod probe_knob_tests;
mod sync_tests;

use std::time::{Duration, Instant};

use lab::{repo, script, Lab};
use serde_json::Value;
use xlb_testkit::fixtures::Rule;
use xlb_testkit::{Proc, Signal};

const VIP: &str = "10.10.100.1";

fn rule(vip: &str, port: u16, proto: &str, sel: u8, mode: u8, eps: &[(&str, u16)]) -> Value {
    Rule::new(vip, port)
        .proto(proto)
        .sel(sel)
        .mode(mode)
        .timeout(30)
        .name(&format!("e2e-{proto}-{port}"))
        .eps(eps)
        .json()
}

const BACKENDS: [&str; 3] = ["10.10.2.11", "10.10.2.12", "10.10.2.13"];

fn http_rule(mode: u8, sel: u8, port: u16, target: u16) -> Value {
    let eps: Vec<(&str, u16)> = BACKENDS.iter().map(|b| (*b, target)).collect();
    rule(VIP, port, "tcp", sel, mode, &eps)
}

fn counts(v: &Value, key: &str) -> Vec<u64> {
    let mut c: Vec<u64> = v[key]
        .as_object()
        .map(|o| o.values().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    c.sort_unstable();
    c
}

const EMPTY: &str = r#"{"lbAttr":[]}"#;

#[test]
fn lab_config_full_nat_http_round_robin_and_udp_maglev() {
    let mut lab = Lab::up(1);
    let cfg = std::fs::read_to_string(repo().join("configs/lab/lbconfig.txt")).expect("lab config");
    lab.start_xlb(&cfg, &[]);
    let r = lab.client(VIP, 60, 12);
    assert_eq!(r["http_failed"], 0, "{r}");
    assert_eq!(
        counts(&r, "http"),
        vec![20, 20, 20],
        "round robin spreads evenly: {r}"
    );
    assert_eq!(r["udp_failed"], 0, "{r}");
    assert_eq!(counts(&r, "udp").iter().sum::<u64>(), 12, "{r}");
    // Endpoint counters come from the dataplane.
    let (_, all) = lab
        .api("GET", "/config/loadbalancer/all", None)
        .expect("API");
    let http = all["lbAttr"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["serviceArguments"]["port"] == 80))
        .expect("http rule");
    for ep in http["endpoints"].as_array().expect("endpoints") {
        let c = ep["counter"].as_str().expect("counter");
        let packets: u64 = c
            .split(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("packets");
        assert!(
            packets >= 20 * 4,
            "each backend saw its 20 connections both ways: {c}"
        );
    }
    // Metrics: this worker's own table holds the flows; packet I/O lost nothing.
    let m = lab.metrics();
    let value = |line: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line} in\n{m}"))
    };
    assert!(value("xlb_conntrack_entries{worker=\"0\"}") > 0, "{m}");
    for cause in ["tx_ring_full", "kernel_rx_ring_full", "kernel_tx_invalid"] {
        let line = format!("xlb_worker_io_drops_total{{worker=\"0\",cause=\"{cause}\"}}");
        assert_eq!(value(&line), 0, "{cause}");
    }
    // The VIP lives on lo while xlb runs, and is gone after a clean stop.
    let lo = |lab: &Lab| {
        String::from_utf8_lossy(&lab.exec("lb", &["ip", "addr", "show", "dev", "lo"]).stdout)
            .into_owned()
    };
    assert!(lo(&lab).contains(VIP), "{}", lo(&lab));
    lab.stop_xlb(Signal::Term);
    assert!(
        !lo(&lab).contains(VIP),
        "xlb removes the addresses it added: {}",
        lo(&lab)
    );
}

#[test]
fn dnat_one_arm_and_dsr_modes_carry_http() {
    let mut lab = Lab::up(1);
    lab.start_xlb(EMPTY, &[]);
    // DNAT: the backends route back through xlb (their default route).
    lab.post_rule(http_rule(0, 0, 80, 8080));
    let r = lab.client(VIP, 30, 0);
    assert_eq!(r["http_failed"], 0, "DNAT: {r}\n{}", lab.log());
    assert_eq!(counts(&r, "http"), vec![10, 10, 10], "DNAT: {r}");

    // One-arm: source NAT to the balancer's own address on the backend LAN.
    let (code, _) = lab
        .api(
            "DELETE",
            &format!("/config/loadbalancer/externalipaddress/{VIP}/port/80/protocol/tcp"),
            None,
        )
        .expect("API");
    assert_eq!(code, 200);
    lab.post_rule(http_rule(1, 0, 80, 8080));
    let r = lab.client(VIP, 30, 0);
    assert_eq!(r["http_failed"], 0, "one-arm: {r}\n{}", lab.log());
    assert_eq!(counts(&r, "http"), vec![10, 10, 10], "one-arm: {r}");

    // DSR: only the MACs change; the backends hold the VIP on lo and answer
    // the client directly (through the balancer's kernel, which routes).
    for b in ["be1", "be2", "be3"] {
        lab.exec(b, &["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
        lab.exec(
            b,
            &[
                "sysctl",
                "-qw",
                "net.ipv4.conf.all.arp_ignore=1",
                "net.ipv4.conf.all.arp_announce=2",
            ],
        );
    }
    lab.exec(
        "lb",
        &[
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.lb1.rp_filter=0",
            "net.ipv4.conf.lb1.accept_local=1",
        ],
    );
    let dsr = {
        let eps: Vec<(&str, u16)> = BACKENDS.iter().map(|b| (*b, 8080)).collect();
        rule(VIP, 8080, "tcp", 1, 3, &eps)
    };
    lab.post_rule(dsr);
    let out = lab.exec(
        "client",
        &["python3", "-c", &format!(
            "import http.client,collections\nc=collections.Counter()\nfor i in range(30):\n h=http.client.HTTPConnection('{VIP}',8080,timeout=2); h.request('GET','/'); c[h.getresponse().read().decode().strip()]+=1; h.close()\nprint(sum(c.values()), len(c))"
        )],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        "30 3",
        "DSR: 30 answers from 3 backends; stderr {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        lab.log()
    );
}

/// The one-arm lab, as the K3s HA guide has it: client, xlb and three
/// servers on one L2 segment and subnet, the VIP in that subnet, xlb on one
/// interface. `configs/lab-onearm` carries HTTP in full NAT (the guide's
/// mode) and UDP in one-arm mode. The backends have no route through xlb and
/// the client is on their own link, so an answer that reaches the client
/// came back through xlb's source NAT.
#[test]
fn one_arm_lab_on_one_segment_carries_full_nat_http_and_one_arm_udp() {
    const VIP1: &str = "10.10.3.100";
    let mut lab = Lab::up_one_arm();
    let cfg = std::fs::read_to_string(repo().join("configs/lab-onearm/lbconfig.txt"))
        .expect("one-arm lab config");
    lab.start_xlb(&cfg, &[]);
    let r = lab.client(VIP1, 60, 12);
    assert_eq!(r["http_failed"], 0, "{r}\n{}", lab.log());
    assert_eq!(counts(&r, "http"), vec![20, 20, 20], "round robin: {r}");
    assert_eq!(r["udp_failed"], 0, "{r}\n{}", lab.log());
    assert_eq!(counts(&r, "udp").iter().sum::<u64>(), 12, "{r}");
    // (Maglev spreads 12 flows by hash: which backends they reach is not
    // asserted, only that every datagram was answered.)
    // xlb forwarded on its single port, both ways.
    let m = lab.metrics();
    let tx: u64 = m
        .lines()
        .filter(|l| l.starts_with("xlb_worker_tx_packets_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(
        tx >= 60 * 8,
        "every connection went through xlb both ways: {m}"
    );
    // The backends only ever talked to xlb, never to the client directly.
    for be in ["be1", "be2", "be3"] {
        let out = lab.exec(be, &["ip", "-4", "neigh", "show", "10.10.3.2"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "",
            "{be} knows the client's MAC: traffic bypassed xlb's NAT"
        );
    }
}

/// A backend that changes its MAC is reached again within seconds: xlb
/// watches the kernel's neighbour table (rtnetlink) and rebuilds its next
/// hops when a MAC changes, instead of waiting for the 30 s re-resolution.
#[test]
fn a_backend_mac_change_reaches_the_workers_within_seconds() {
    let mut lab = Lab::up(1);
    lab.start_xlb(EMPTY, &[]);
    lab.post_rule(http_rule(2, 0, 80, 8080));
    let r = lab.client(VIP, 6, 0);
    assert_eq!(r["http_failed"], 0, "{r}");
    // Three requests, one per backend (round robin), 0.5 s each at most:
    // how many were answered.
    let answered = |lab: &Lab| -> u32 {
        let out = lab.exec(
            "client",
            &["python3", "-c", &format!(
                "import http.client\nn=0\nfor i in range(3):\n try:\n  h=http.client.HTTPConnection('{VIP}',80,timeout=0.5); h.request('GET','/'); h.getresponse().read(); h.close(); n+=1\n except OSError: pass\nprint(n)"
            )],
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    };
    assert_eq!(answered(&lab), 3);
    let new_mac = "02:00:00:aa:bb:01";
    lab.exec("be1", &["ip", "link", "set", "eth0", "address", new_mac]);
    // The balancer's kernel learns the new MAC (as from the backend's
    // gratuitous ARP); xlb's workers still hold the old one.
    let out = lab.exec(
        "lb",
        &[
            "ip",
            "neigh",
            "replace",
            BACKENDS[0],
            "lladdr",
            new_mac,
            "dev",
            "lb1",
            "nud",
            "reachable",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let changed = Instant::now();
    let mut ok_after = None;
    while changed.elapsed() < Duration::from_secs(10) {
        if answered(&lab) == 3 {
            ok_after = Some(changed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let t = ok_after.unwrap_or_else(|| {
        panic!(
            "be1 unreachable 10 s after its MAC changed; log:\n{}",
            lab.log()
        )
    });
    assert!(t < Duration::from_secs(10), "{t:?}");
    assert!(lab.log().contains("neighbour changed"), "{}", lab.log());
}

#[test]
fn full_nat_sources_from_the_configured_snat_address() {
    let mut lab = Lab::up(1);
    // Outside every lab subnet: the backends reach it through their default
    // route, the balancer; xlb puts it on lo.
    lab.start_xlb(EMPTY, &["--snat-addrs", "10.10.9.1"]);
    lab.post_rule(http_rule(2, 0, 80, 8080));
    let out = lab.exec(
        "client",
        &["python3", "-c", &format!(
            "import http.client,collections\nc=collections.Counter()\nfor i in range(12):\n h=http.client.HTTPConnection('{VIP}',80,timeout=2); h.request('GET','/'); r=h.getresponse(); r.read(); c[r.getheader('X-Peer')]+=1; h.close()\nprint(dict(c))"
        )],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        "{'10.10.9.1': 12}",
        "every backend sees the configured source; stderr {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        lab.log()
    );
}

#[test]
fn ipv6_vip_with_ipv6_backends() {
    let mut lab = Lab::up(1);
    lab.start_xlb(EMPTY, &[]);
    let eps = [
        ("fd00:10:2::11", 8080),
        ("fd00:10:2::12", 8080),
        ("fd00:10:2::13", 8080),
    ];
    lab.post_rule(rule("fd00:10:100::1", 80, "tcp", 0, 2, &eps));
    let udp = [
        ("fd00:10:2::11", 9000),
        ("fd00:10:2::12", 9000),
        ("fd00:10:2::13", 9000),
    ];
    lab.post_rule(rule("fd00:10:100::1", 53, "udp", 1, 2, &udp));
    let r = lab.client("fd00:10:100::1", 30, 6);
    assert_eq!(r["http_failed"], 0, "{r}\n{}", lab.log());
    assert_eq!(counts(&r, "http"), vec![10, 10, 10], "{r}");
    assert_eq!(r["udp_failed"], 0, "{r}");
}

/// An IPv6 VIP in the clients' own subnet (the one-arm lab): the client
/// finds it by neighbour solicitation, which Linux answers only for an
/// address of the interface it arrives on, so xlb holds IPv6 VIPs on its
/// ports (deprecated, never a source of the node's own traffic), not on `lo`.
#[test]
fn an_on_link_ipv6_vip_answers_neighbour_solicitations() {
    const VIP6: &str = "fd00:10:3::100";
    let mut lab = Lab::up_one_arm();
    lab.start_xlb(EMPTY, &[]);
    let eps = [
        ("fd00:10:3::11", 8080),
        ("fd00:10:3::12", 8080),
        ("fd00:10:3::13", 8080),
    ];
    lab.post_rule(rule(VIP6, 80, "tcp", 0, 2, &eps));
    let r = lab.client(VIP6, 30, 0);
    assert_eq!(r["http_failed"], 0, "{r}\n{}", lab.log());
    assert_eq!(counts(&r, "http"), vec![10, 10, 10], "{r}");
    let shown = |role: &str, args: &[&str]| {
        String::from_utf8_lossy(&lab.exec(role, args).stdout).into_owned()
    };
    let neigh = shown("client", &["ip", "-6", "neigh", "show", VIP6]);
    assert!(
        neigh.contains("lladdr"),
        "the client resolved the VIP: {neigh:?}"
    );
    let port = shown("lb", &["ip", "-6", "-o", "addr", "show", "dev", "lb0"]);
    assert!(
        port.contains(&format!("{VIP6}/128")) && port.contains("deprecated"),
        "held on the port, deprecated: {port}"
    );
    // The port's own address is still what the node speaks from.
    let via = shown("lb", &["ip", "-6", "route", "get", "fd00:10:3::11"]);
    assert!(via.contains("src fd00:10:3::1 "), "{via}");
}

#[test]
fn two_queues_two_workers_replies_on_either_queue() {
    let mut lab = Lab::up(2);
    lab.start_xlb(EMPTY, &[]);
    lab.post_rule(http_rule(2, 0, 80, 8080));
    let r = lab.client(VIP, 60, 0);
    assert_eq!(
        r["http_failed"],
        0,
        "full NAT on 2 queues: {r}\n{}",
        lab.log()
    );
    let m = lab.metrics();
    let busy = m
        .lines()
        .filter(|l| l.starts_with("xlb_worker_rx_packets_total"))
        .filter(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                > 0
        })
        .count();
    assert_eq!(busy, 2, "both workers carried traffic:\n{m}");
    // DNAT: replies come from the backends and may land on the other queue.
    let (code, _) = lab
        .api("DELETE", "/config/loadbalancer/all", None)
        .expect("API");
    assert_eq!(code, 200);
    lab.post_rule(http_rule(0, 0, 80, 8080));
    let r = lab.client(VIP, 60, 0);
    assert_eq!(r["http_failed"], 0, "DNAT on 2 queues: {r}\n{}", lab.log());
}

#[test]
fn non_vip_traffic_still_reaches_the_kernel_and_a_killed_xlb_restarts() {
    let mut lab = Lab::up(1);
    lab.start_xlb(EMPTY, &[]);
    lab.post_rule(http_rule(2, 0, 80, 8080));
    // A TCP server on the balancer's own address, reached from the client.
    let server = lab
        .ns("lb")
        .spawn(&[
            "python3",
            "-m",
            "http.server",
            "7000",
            "--bind",
            "10.10.1.1",
        ])
        .start()
        .expect("node server");
    let mut ok = false;
    for _ in 0..50 {
        let out = lab.exec(
            "client",
            &[
                "curl",
                "-s",
                "-m",
                "2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "http://10.10.1.1:7000/",
            ],
        );
        if String::from_utf8_lossy(&out.stdout) == "200" {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(server);
    assert!(ok, "the node's own TCP service is reachable while xlb runs");
    // ARP for the balancer's address is answered by the kernel.
    let out = lab.exec("client", &["ip", "neigh", "show", "10.10.1.1"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("lladdr"),
        "ARP resolved"
    );

    // SIGKILL leaves the XDP programs attached; a new xlb takes over.
    lab.stop_xlb(Signal::Kill);
    let cfg = std::fs::read_to_string(repo().join("configs/lab/lbconfig.txt")).expect("lab config");
    lab.start_xlb(&cfg, &[]);
    let r = lab.client(VIP, 30, 3);
    assert_eq!(r["http_failed"], 0, "after a restart: {r}\n{}", lab.log());
    assert_eq!(r["udp_failed"], 0, "{r}");
}

#[test]
fn an_idle_udp_flow_expires_after_its_timeout_and_is_chosen_afresh() {
    let mut lab = Lab::up(1);
    lab.start_xlb(EMPTY, &[]);
    let mut r = rule(
        VIP,
        53,
        "udp",
        0,
        2,
        &[("10.10.2.11", 9000), ("10.10.2.12", 9000)],
    );
    r["serviceArguments"]["inactiveTimeOut"] = 2.into();
    lab.post_rule(r);
    // One client socket (fixed source port): same flow while active.
    let script = format!(
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('0.0.0.0',5555)); s.settimeout(2)\n\
         def ask():\n s.sendto(b'x',('{VIP}',53)); return s.recvfrom(100)[0].split()[0].decode()\n\
         a=ask(); time.sleep(1); b=ask(); time.sleep(3.5); c=ask()\nprint(a,b,c)"
    );
    let out = lab.exec("client", &["python3", "-c", &script]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let w: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(
        w.len(),
        3,
        "{text} {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        lab.log()
    );
    assert_eq!(w[0], w[1], "an active flow keeps its backend");
    assert_ne!(
        w[1], w[2],
        "after the idle timeout the flow is new and round robin moves on"
    );
}

#[test]
fn hash_pins_a_flow_weights_hold_and_large_datagrams_pass() {
    let mut lab = Lab::up(1);
    lab.start_xlb(EMPTY, &[]);
    // sel 1 (Maglev): one 5-tuple always reaches the same backend; many spread.
    let eps: Vec<(&str, u16)> = BACKENDS.iter().map(|b| (*b, 9000)).collect();
    lab.post_rule(rule(VIP, 53, "udp", 1, 2, &eps));
    let script = format!(
        "import socket\nseen=[]\nfor port in range(6000,6040):\n s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('0.0.0.0',port)); s.settimeout(2)\n \
         who=set()\n for i in range(3):\n  s.sendto(b'x'*1400,('{VIP}',53)); d=s.recvfrom(4000)[0]; who.add(d.split()[0].decode()); assert len(d)>1400\n \
         seen.append(who)\n s.close()\nprint(all(len(w)==1 for w in seen), len(set().union(*seen)))"
    );
    let out = lab.exec("client", &["python3", "-c", &script]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "True 3",
        "each flow pinned, flows spread over 3 backends, 1400-byte datagrams echoed (the echo stays under the MTU: xlb does not reassemble fragments); stderr {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        lab.log()
    );
    // sel 2 (priority): weights as percentages.
    let mut r = http_rule(2, 2, 80, 8080);
    for (e, w) in r["endpoints"]
        .as_array_mut()
        .expect("endpoints")
        .iter_mut()
        .zip([60, 30, 10])
    {
        e["weight"] = w.into();
    }
    lab.post_rule(r);
    let res = lab.client(VIP, 100, 0);
    assert_eq!(res["http_failed"], 0, "{res}");
    assert_eq!(
        counts(&res, "http"),
        vec![10, 30, 60],
        "weights 60/30/10 over 100 connections: {res}"
    );
}

/// Datagrams larger than the MTU cross xlb both ways, in full NAT and in
/// DNAT: the client's kernel fragments each, xlb forwards every later
/// fragment with its datagram's first, the backend's kernel reassembles and
/// its echo comes back fragmented too (the steering program lets the later
/// fragments of the answer follow its first), and the client's kernel
/// reassembles that.
#[test]
fn datagrams_larger_than_the_mtu_cross_in_both_directions() {
    let mut lab = Lab::up(1);
    lab.start_xlb(EMPTY, &[]);
    let eps: Vec<(&str, u16)> = BACKENDS.iter().map(|b| (*b, 9000)).collect();
    // UDP 53: full NAT; UDP 54: DNAT.
    lab.post_rule(rule(VIP, 53, "udp", 1, 2, &eps));
    lab.post_rule(rule(VIP, 54, "udp", 1, 0, &eps));
    let script = format!(
        "import socket\nres=[]\nfor port in (53,54):\n ok=0\n for i in range(12):\n  \
         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(2)\n  \
         msg=bytes([65+i])*4000\n  s.sendto(msg,('{VIP}',port))\n  \
         try:\n   d=s.recvfrom(65535)[0]; ok+=len(d)>4000 and d.endswith(msg)\n  \
         except OSError: pass\n  s.close()\n res.append(ok)\nprint(*res)"
    );
    let out = lab.exec("client", &["python3", "-c", &script]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "12 12",
        "4000-byte datagrams echoed whole through full NAT and DNAT; stderr {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        lab.log()
    );
    // IPv6 (full NAT): the fragment header follows the fixed header.
    let udp6 = [
        ("fd00:10:2::11", 9000),
        ("fd00:10:2::12", 9000),
        ("fd00:10:2::13", 9000),
    ];
    lab.post_rule(rule("fd00:10:100::1", 53, "udp", 1, 2, &udp6));
    let script6 = "import socket\nok=0\nfor i in range(12):\n \
         s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM); s.settimeout(2)\n \
         msg=bytes([65+i])*4000\n s.sendto(msg,('fd00:10:100::1',53))\n \
         try:\n  d=s.recvfrom(65535)[0]; ok+=len(d)>4000 and d.endswith(msg)\n \
         except OSError: pass\n s.close()\nprint(ok)";
    let out = lab.exec("client", &["python3", "-c", script6]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "12",
        "4000-byte IPv6 datagrams echoed whole; stderr {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        lab.log()
    );
}

#[test]
fn taking_a_vip_announces_it_with_gratuitous_arp() {
    let mut lab = Lab::up(1);
    // The client learns from unsolicited ARP only with arp_accept.
    lab.exec(
        "client",
        &["sysctl", "-qw", "net.ipv4.conf.c0.arp_accept=1"],
    );
    lab.start_xlb(EMPTY, &[]);
    lab.post_rule(rule(
        "10.10.1.100",
        80,
        "tcp",
        0,
        2,
        &[("10.10.2.11", 8080)],
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = String::new();
    while Instant::now() < deadline {
        let out = lab.exec("client", &["ip", "neigh", "show", "10.10.1.100"]);
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        if last.contains("lladdr") {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "the client never learned the VIP from a gratuitous ARP: {last:?}\n{}",
        lab.log()
    );
}

/// The endpoint's `state` in GET /config/loadbalancer/all.
fn endpoint_state(lab: &Lab, ip: &str) -> String {
    let (_, all) = lab
        .api("GET", "/config/loadbalancer/all", None)
        .expect("API");
    all["lbAttr"][0]["endpoints"]
        .as_array()
        .and_then(|eps| eps.iter().find(|e| e["endpointIP"] == ip))
        .and_then(|e| e["state"].as_str())
        .unwrap_or("")
        .to_string()
}

fn wait_state(lab: &Lab, ip: &str, want: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if endpoint_state(lab, ip) == want {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{ip} did not become {want} within {limit:?}\n{}", lab.log());
}

#[test]
fn a_dead_backend_is_probed_down_and_avoided_then_returns() {
    let mut lab = Lab::up(1);
    lab.start_xlb(EMPTY, &[]);
    for b in BACKENDS {
        let ep = serde_json::json!({
            "hostName": b, "name": format!("{b}_tcp_8080"), "probeType": "tcp",
            "probePort": 8080, "probeDuration": 1, "inactiveReTries": 2
        });
        let (code, body) = lab.api("POST", "/config/endpoint", Some(&ep)).expect("API");
        assert_eq!(code, 200, "{body}");
    }
    let mut r = http_rule(2, 0, 80, 8080);
    r["serviceArguments"]["monitor"] = true.into();
    lab.post_rule(r);
    let before = lab.client(VIP, 30, 0);
    assert_eq!(counts(&before, "http"), vec![10, 10, 10], "{before}");

    // Kill backend 2's servers: within retries × period + timeout (+ slack) it
    // is marked down, and new connections avoid it.
    lab.ns("be2").kill_all(Signal::Term);
    let took = wait_state(&lab, "10.10.2.12", "inactive", Duration::from_secs(8));
    assert!(
        took < Duration::from_secs(5),
        "detected in {took:?} (budget 2 × 1 s + 1 s timeout + 1 s)"
    );
    let during = lab.client(VIP, 30, 0);
    assert_eq!(
        during["http_failed"], 0,
        "no new connection fails: {during}"
    );
    assert_eq!(
        counts(&during, "http"),
        vec![15, 15],
        "only the live backends: {during}"
    );

    // Bring it back: probed up, and it takes new connections again.
    let server = lab
        .ns("be2")
        .spawn(&["python3", &script("backend.py"), "backend-2"])
        .start()
        .expect("restart backend 2");
    wait_state(&lab, "10.10.2.12", "active", Duration::from_secs(8));
    let after = lab.client(VIP, 30, 0);
    drop(server);
    assert_eq!(after["http_failed"], 0, "{after}");
    assert_eq!(
        counts(&after, "http"),
        vec![10, 10, 10],
        "backend 2 is back: {after}"
    );
}

/// A lab backend's HTTP server on `port` in backend `i`'s namespace (1-based),
/// killed when dropped.
struct Server(Proc);

impl Server {
    fn start(lab: &Lab, i: usize, port: u16) -> Server {
        let (name, port_s) = (format!("backend-{i}"), port.to_string());
        let backend = script("backend.py");
        let args = [
            "python3",
            &backend,
            &name,
            "--http-port",
            &port_s,
            "--no-udp",
        ];
        let child = lab
            .ns(&format!("be{i}"))
            .spawn(&args)
            .start()
            .expect("starting a backend server");
        // Killed and reaped on drop, also if it never comes up.
        let server = Server(child);
        // Up when it accepts a connection from its own namespace.
        let deadline = Instant::now() + Duration::from_secs(5);
        let url = format!("http://{}:{port}/", BACKENDS[i - 1]);
        while Instant::now() < deadline {
            let out = lab.exec(&format!("be{i}"), &["curl", "-s", "-m", "1", &url]);
            if out.status.success() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("backend {i} did not listen on :{port}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A crash, not a clean stop: `ip netns exec` execs python, so this
        // kills the server itself.
        self.0.kill();
    }
}

/// The K3s HA guide's `configs/k3s-ha` files with their addresses moved into
/// the lab, extended from the guide's two servers to the lab's three
/// backends (each added as the guide says: one more endpoint and probe entry
/// like the others), probes every `period` s with `retries`: writes
/// EPconfig.txt into the lab's config dir and returns lbconfig.txt.
fn k3s_guide_files(lab: &Lab, period: u32, retries: u32) -> String {
    let read = |f: &str| -> Value {
        let text = std::fs::read_to_string(repo().join("configs/k3s-ha").join(f)).expect(f);
        serde_json::from_str(&text).expect(f)
    };
    let mut ep = read("EPconfig.txt");
    let entries = ep["Attr"].as_array_mut().expect("Attr");
    let like = entries.first().cloned().expect("a probe entry");
    entries.resize(BACKENDS.len(), like);
    for (e, b) in entries.iter_mut().zip(BACKENDS) {
        let port = e["probePort"].as_u64().expect("probePort");
        let kind = e["probeType"].as_str().expect("probeType").to_string();
        e["hostName"] = b.into();
        e["name"] = format!("{b}_{kind}_{port}").into();
        e["probeDuration"] = period.into();
        e["inactiveReTries"] = retries.into();
    }
    std::fs::write(lab.cfg.join("EPconfig.txt"), ep.to_string()).expect("EPconfig");
    let mut lb = read("lbconfig.txt");
    let rule = &mut lb["lbAttr"][0];
    assert_eq!(rule["serviceArguments"]["port"], 6443);
    rule["serviceArguments"]["externalIP"] = VIP.into();
    let eps = rule["endpoints"].as_array_mut().expect("endpoints");
    let like = eps.first().cloned().expect("an endpoint");
    eps.resize(BACKENDS.len(), like);
    for (e, b) in eps.iter_mut().zip(BACKENDS) {
        e["endpointIP"] = b.into();
    }
    lb.to_string()
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// `scripts/lab/failover_client.py` running in the client namespace.
struct FailoverClient(Proc);

impl FailoverClient {
    /// Start it for `secs` and wait until its long connections are open.
    fn start(lab: &Lab, secs: u32) -> FailoverClient {
        use std::io::{BufRead, BufReader};
        let (client, secs) = (script("failover_client.py"), secs.to_string());
        let args = [
            "python3", &client, VIP, "6443", &secs, "--long", "6", "--every", "0.05",
        ];
        let mut child = lab
            .ns("client")
            .spawn(&args)
            .piped()
            .start()
            .expect("starting the failover client");
        let mut err = BufReader::new(child.stderr().expect("stderr"));
        let mut line = String::new();
        let _ = err.read_line(&mut line);
        assert_eq!(line.trim(), "ready", "failover client: {line}");
        FailoverClient(child)
    }

    /// Wait for it to finish; its report.
    fn finish(self) -> Value {
        let out = self.0.wait_with_output().expect("failover client");
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("client said {text:?}: {e}"))
    }
}

/// New connections of a failover report started within `[from, to)`:
/// (answered by backend, failed).
fn new_conns(report: &Value, from: f64, to: f64) -> (Vec<String>, Vec<String>) {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for c in report["new"].as_array().expect("new") {
        let t = c[0].as_f64().expect("start");
        if t < from || t >= to {
            continue;
        }
        match c[1].as_str() {
            Some(who) => ok.push(who.to_string()),
            None => failed.push(format!("{t:.3}: {}", c[2])),
        }
    }
    (ok, failed)
}

/// Long connections on backends other than `victim` were never reset, never
/// moved, and kept answering; those on `victim` (if it was killed) broke.
fn assert_survivors_untouched(report: &Value, victim: &str, min_answers: u64) {
    let long = report["long"].as_array().expect("long");
    let mut survivors = 0;
    for s in long {
        let backend = s["backend"].as_str().unwrap_or_else(|| panic!("{s}"));
        if backend == victim {
            continue;
        }
        survivors += 1;
        assert_eq!(s["errors"], serde_json::json!([]), "reset: {s}");
        assert_eq!(s["seen"], serde_json::json!([backend]), "moved: {s}");
        assert!(
            s["answers"].as_u64().expect("answers") >= min_answers,
            "stalled: {s}"
        );
    }
    assert!(survivors >= 4, "round robin spread 6 connections: {long:?}");
}

/// The K3s HA guide's promise: one API server dies, clients of the VIP keep
/// working. Its files, probes every 1 s with 2 retries; a client opens a new
/// connection every 50 ms and holds six long ones. After the kill, new
/// connections may fail only within the probe budget (2 × 1 s + 1 s);
/// long-lived connections to the other two servers are never reset; the
/// restarted server takes new connections again.
#[test]
fn k3s_ha_failover_within_the_probe_budget_and_survivors_never_reset() {
    const PERIOD: u32 = 1;
    const RETRIES: u32 = 2;
    let budget = f64::from(RETRIES * PERIOD) + 1.0;
    let mut lab = Lab::up(1);
    let mut servers: Vec<Server> = (1..=3).map(|i| Server::start(&lab, i, 6443)).collect();
    let lbconfig = k3s_guide_files(&lab, PERIOD, RETRIES);
    lab.start_xlb(&lbconfig, &[]);
    let (_, eps) = lab.api("GET", "/config/endpoint/all", None).expect("API");
    assert_eq!(eps["Attr"].as_array().map(Vec::len), Some(3), "{eps}");

    let client = FailoverClient::start(&lab, 18);
    let started = unix_now();
    std::thread::sleep(Duration::from_secs(2));
    let killed_at = unix_now();
    drop(servers.remove(1));
    let took = wait_state(&lab, BACKENDS[1], "inactive", Duration::from_secs(8));
    assert!(
        took.as_secs_f64() < budget,
        "detected in {took:?}, budget {budget} s\n{}",
        lab.log()
    );
    std::thread::sleep(Duration::from_secs(4));
    servers.insert(1, Server::start(&lab, 2, 6443));
    wait_state(&lab, BACKENDS[1], "active", Duration::from_secs(8));
    let back_at = unix_now();
    let report = client.finish();
    let ended = unix_now();
    assert!(ended - back_at > 2.0, "the client ran past the return");

    // Connections still in flight when the server dies may break with it.
    let (before, failed) = new_conns(&report, started, killed_at - 0.5);
    assert_eq!(failed, Vec::<String>::new(), "before the kill");
    for b in ["backend-1", "backend-2", "backend-3"] {
        assert!(
            before.iter().any(|w| w == b),
            "{b} served before: {before:?}"
        );
    }
    let (_, in_budget) = new_conns(&report, killed_at, killed_at + budget);
    let (after, failed) = new_conns(&report, killed_at + budget, ended);
    assert_eq!(
        failed,
        Vec::<String>::new(),
        "new connections failed after the {budget} s budget ({} failed within it)",
        in_budget.len()
    );
    assert!(after.len() > 100, "the client kept going: {}", after.len());
    eprintln!(
        "k3s failover: down after {took:?}; {} new connections failed within the \
         {budget} s budget, 0 after; {} answered after it",
        in_budget.len(),
        after.len()
    );
    let (returned, _) = new_conns(&report, back_at + 0.5, ended);
    assert!(
        returned.iter().filter(|w| *w == "backend-2").count() >= 5,
        "the restarted server takes new connections: {returned:?}"
    );
    // Requests every 100 ms for ~16 s: well over 100 answers each.
    assert_survivors_untouched(&report, "backend-2", 100);
    let killed = report["long"]
        .as_array()
        .expect("long")
        .iter()
        .filter(|s| s["backend"] == "backend-2")
        .collect::<Vec<_>>();
    assert!(
        killed.iter().all(|s| s["errors"] != serde_json::json!([])),
        "the long connections to the killed server broke: {killed:?}"
    );
}

/// A backend flapping every probe period (killed, restarted, killed...) is
/// taken out and put back each time, and the other backends' flows never
/// notice: their long connections are never reset or moved, and they keep
/// answering new connections throughout.
#[test]
fn a_flapping_backend_does_not_disturb_the_other_backends() {
    let mut lab = Lab::up(1);
    let mut servers: Vec<Option<Server>> = (1..=3)
        .map(|i| Some(Server::start(&lab, i, 6443)))
        .collect();
    let lbconfig = k3s_guide_files(&lab, 1, 1);
    lab.start_xlb(&lbconfig, &[]);

    let client = FailoverClient::start(&lab, 12);
    let started = unix_now();
    std::thread::sleep(Duration::from_secs(1));
    let flap_until = Instant::now() + Duration::from_secs(9);
    let mut downs = 0;
    let mut last = endpoint_state(&lab, BACKENDS[0]);
    while Instant::now() < flap_until {
        // One probe period down, one up.
        servers[0] = match servers[0].take() {
            Some(s) => {
                drop(s);
                None
            }
            None => Some(Server::start(&lab, 1, 6443)),
        };
        let period_end = Instant::now() + Duration::from_millis(1200);
        while Instant::now() < period_end {
            let now = endpoint_state(&lab, BACKENDS[0]);
            if now == "inactive" && last != "inactive" {
                downs += 1;
            }
            last = now;
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let report = client.finish();
    let ended = unix_now();
    assert!(
        downs >= 2,
        "backend 1 was taken out {downs} times\n{}",
        lab.log()
    );
    eprintln!("flapping: backend 1 taken out {downs} times");

    assert_survivors_untouched(&report, "backend-1", 80);
    // Every second, backends 2 and 3 answered new connections.
    let mut t = started;
    while t + 1.0 <= ended {
        let (ok, _) = new_conns(&report, t, t + 1.0);
        for b in ["backend-2", "backend-3"] {
            assert!(
                ok.iter().any(|w| w == b),
                "{b} answered nothing in [{:.1}, {:.1}) s: {ok:?}",
                t - started,
                t + 1.0 - started
            );
        }
        t += 1.0;
    }
}
