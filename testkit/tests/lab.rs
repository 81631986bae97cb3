//! The kit's own tests, in real namespaces (root required: they fail, never
//! skip, without it): labs clean up after themselves, also after a panic;
//! the L2 segment carries traffic and partitions between exactly two nodes;
//! a power loss stops a node's processes and links; global settings come
//! back.

use std::time::{Duration, Instant};

use xlb_testkit::{netns, Lab, Signal, Sysctls, Veth};

#[test]
fn a_lab_names_uniquely_and_removes_its_namespaces_and_processes() {
    let mut a = Lab::new().expect("lab (root?)");
    let b = Lab::new().expect("lab");
    assert_ne!(a.id(), b.id());
    assert_ne!(a.ifname("l0"), b.ifname("l0"));
    let x = a.ns("x").expect("ns");
    let y = a.ns("y").expect("ns");
    let (ix, iy) = (a.ifname("x"), a.ifname("y"));
    Veth::new(&x, &ix, &y, &iy)
        .queues(2)
        .create()
        .expect("veth");
    x.addr(&ix, "10.201.0.1/24").expect("addr");
    y.addr(&iy, "10.201.0.2/24").expect("addr");
    assert!(x.ping("10.201.0.2"), "the veth carries traffic");
    assert!(!x.mac(&ix).expect("mac").is_empty());
    assert_eq!(x.links().expect("links"), vec![ix.clone()]);
    // A closure runs inside: it sees the namespace's interface.
    let seen = x.run(|| xlb_testkit::sh(&["ip", "-o", "link"]).expect("ip link"));
    assert!(seen.contains(&ix));
    // A process inside, and one that forked into the background.
    let mut sleeper = x.spawn(&["sleep", "600"]).start().expect("spawn");
    assert!(sleeper.running());
    y.exec(&["sh", "-c", "sleep 600 >/dev/null 2>&1 &"])
        .expect("background process");
    assert_eq!(y.pids().len(), 1);
    let dir = a.dir().expect("dir").to_path_buf();
    assert!(dir.exists());
    let names: Vec<String> = a.namespaces().iter().map(|n| n.to_string()).collect();
    drop(a);
    assert!(!sleeper.running(), "the lab killed what ran inside");
    let list = xlb_testkit::sh(&["ip", "netns", "list"]).expect("list");
    for n in &names {
        assert!(!list.contains(n.as_str()), "{n} left behind");
    }
    assert!(!dir.exists());
    assert_eq!(netns::leaked().expect("leaked"), Vec::<String>::new());
}

#[test]
fn a_panicking_test_still_removes_its_lab() {
    let names = std::sync::Mutex::new(Vec::new());
    let r = std::panic::catch_unwind(|| {
        let mut lab = Lab::new().expect("lab");
        let n = lab.ns("p").expect("ns");
        names.lock().expect("names").push(n.to_string());
        panic!("the test fails");
    });
    assert!(r.is_err());
    let list = xlb_testkit::sh(&["ip", "netns", "list"]).expect("list");
    for n in names.lock().expect("names").iter() {
        assert!(!list.contains(n.as_str()), "{n} left behind");
    }
}

#[test]
fn a_segment_carries_traffic_and_partitions_exactly_two_nodes() {
    let mut lab = Lab::new().expect("lab");
    let mut sw = lab.bridge("sw").expect("bridge");
    let nodes: Vec<_> = (1..=3)
        .map(|i| {
            let ns = lab.ns(&format!("n{i}")).expect("ns");
            let port = lab.ifname(&format!("p{i}"));
            sw.attach(&port, &ns, "eth0", 1).expect("attach");
            ns.addr("eth0", &format!("10.202.0.{i}/24")).expect("addr");
            ns
        })
        .collect();
    assert!(nodes[0].ping("10.202.0.2"));
    assert!(nodes[0].ping("10.202.0.3"));
    sw.partition(&nodes[0], &nodes[1]).expect("partition");
    // ARP included: forget what was learned, so the cut is tested on
    // broadcast too.
    nodes[0]
        .ip(&["neigh", "flush", "dev", "eth0"])
        .expect("flush");
    assert!(!nodes[0].ping("10.202.0.2"), "1 and 2 are cut apart");
    assert!(nodes[0].ping("10.202.0.3"), "1 still reaches 3");
    assert!(nodes[1].ping("10.202.0.3"), "2 still reaches 3");
    sw.heal(&nodes[0], &nodes[1]).expect("heal");
    // The neighbour entry may wait up to a second for its next ARP try.
    let deadline = Instant::now() + Duration::from_secs(4);
    while !nodes[0].ping("10.202.0.2") {
        assert!(Instant::now() < deadline, "healed");
    }
}

#[test]
fn a_power_loss_freezes_cuts_and_kills_a_node() {
    let mut lab = Lab::new().expect("lab");
    let a = lab.ns("a").expect("ns");
    let b = lab.ns("b").expect("ns");
    let (ia, ib) = (lab.ifname("a"), lab.ifname("b"));
    Veth::new(&a, &ia, &b, &ib).create().expect("veth");
    let mut p = a.spawn(&["sleep", "600"]).start().expect("spawn");
    // Inside once `ip netns exec` has entered the namespace and exec'd.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !a.pids().contains(&p.pid()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    a.power_loss().expect("power loss");
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!p.running(), "killed");
    let link = a.ip(&["-o", "link", "show", &ia]).expect("link");
    assert!(link.contains("state DOWN"), "{link}");
    // Stopping a process that is gone is harmless.
    assert!(!p.signal(Signal::Term));
}

#[test]
fn global_settings_are_restored_and_the_lock_is_reentrant() {
    xlb_testkit::require_root().expect("root");
    // A harmless global setting: the kernel's own port reservations in the
    // initial namespace would be per-namespace; the printk ratelimit is global.
    let key = "kernel.printk_ratelimit_burst";
    let before = xlb_testkit::global::read(key).expect("read");
    {
        let mut g = Sysctls::lock().expect("lock");
        let inner = Sysctls::lock().expect("re-entrant");
        g.set(key, "17").expect("set");
        g.set(key, "18").expect("set again");
        assert_eq!(g.read(key).expect("read"), "18");
        drop(inner);
        assert_eq!(g.changed().count(), 1, "the first value is what comes back");
    }
    assert_eq!(xlb_testkit::global::read(key).expect("read"), before);
}
