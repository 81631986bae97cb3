//! High availability end to end (the lab: [`crate::ha::HaLab`]): xlb's
//! election takes over within a second of a power loss, a node's return
//! and a bystander's death fail nothing, a partitioned holder lets go
//! before anyone else answers ARP, kube-loxilb's cistate sequence moves the
//! VIP with gratuitous ARP, and keepalived drives two nodes through
//! `xlb notify`.

use std::time::{Duration, Instant};

use serde_json::json;
use xlb_testkit::Signal;

use crate::ha::{answer_turns, claims, failures, outage, unix_now, HaLab, Member, FLOATING, VIP};
use crate::lab::repo;

/// The budget the issue sets: a new connection to the VIP succeeds again
/// within 1 s of the holder's death.
const TAKEOVER: f64 = 1.0;

/// Wait until `node` shows `state` for llb-inst0.
fn wait_role(lab: &HaLab, node: usize, state: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while lab.role(node, "llb-inst0").as_deref() != Some(state) {
        assert!(
            Instant::now() < deadline,
            "lb{} is {:?}, not {state}, after {limit:?}\n{}",
            node + 1,
            lab.role(node, "llb-inst0"),
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Three balancers elect one holder. Its power loss: new connections
/// succeed again within a second, through the new holder. Its return: it
/// stays a backup (no preemption) and no connection — new, or long-lived
/// through the new holder — fails. The death of a node that holds nothing:
/// nothing fails. ARP for the VIP was answered by one node at a time.
#[test]
fn three_balancers_take_over_within_a_second_and_returns_and_bystanders_fail_nothing() {
    let mut lab = HaLab::up(&[Member::Candidate; 3]);
    for n in 0..3 {
        lab.start(n);
    }
    let first = lab.wait_holder(Duration::from_secs(15));
    let arp = lab.arp_watch(40);
    // The floating full-NAT source, which the servers answer to.
    let floating = lab.arp_watch_of(FLOATING, 40);
    let client = lab.failover_client(40);
    std::thread::sleep(Duration::from_secs(2));

    let killed_at = unix_now();
    lab.power_loss(first);
    let second = lab.wait_holder(Duration::from_secs(5));
    assert_ne!(second, first);
    // Long connections through the new holder, for the return and the bystander.
    std::thread::sleep(Duration::from_secs(2));
    let through_second = lab.failover_client(30);

    let back_at = unix_now();
    lab.power_on(first);
    wait_role(&lab, first, "BACKUP", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        lab.holders().into_iter().collect::<Vec<_>>(),
        vec![second],
        "the returned node leaves the VIP where it is"
    );

    let bystander = (0..3)
        .find(|&n| n != first && n != second)
        .expect("a third");
    let bystander_at = unix_now();
    lab.power_loss(bystander);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lab.wait_holder(Duration::from_secs(1)), second);
    let ended = unix_now();

    let report = client.finish();
    let held = through_second.finish();
    let arp = arp.finish();
    let took = outage(&report, killed_at);
    eprintln!(
        "ha takeover: {took:.3} s outage, {} new connections failed after the power loss",
        failures(&report, killed_at, back_at)
    );
    assert!(took <= TAKEOVER, "outage {took:.3} s\n{}", lab.logs());
    assert_eq!(
        failures(&report, killed_at - 10.0, killed_at),
        0,
        "before the power loss"
    );
    assert_eq!(
        failures(&report, back_at, bystander_at),
        0,
        "the return failed new connections"
    );
    assert_eq!(
        failures(&report, bystander_at, ended.min(report_end(&report))),
        0,
        "a bystander's death failed new connections"
    );
    for long in held["long"].as_array().expect("long") {
        assert_eq!(long["errors"], json!([]), "a long connection broke: {long}");
        assert!(
            long["answers"].as_u64().unwrap_or(0) > 50,
            "stalled: {long}"
        );
    }
    let turns = answer_turns(&arp);
    assert_eq!(
        turns,
        vec![lab.mac(first), lab.mac(second)],
        "one ARP answerer at a time, and the VIP moved once"
    );
    // A returning node never claims the floating source, not even while it
    // starts (it once did, for a moment: the servers' answers then went to
    // it for seconds).
    let floating = floating.finish();
    assert_eq!(
        answer_turns(&floating),
        vec![lab.mac(first), lab.mac(second)],
        "the floating source moved once, with the VIP"
    );
}

/// The end of a failover report's new connections.
fn report_end(report: &serde_json::Value) -> f64 {
    crate::ha::attempts(report)
        .last()
        .map_or(f64::INFINITY, |a| a.0 + 0.001)
}

/// Two balancers and a witness (a `--no-dataplane` member that only votes):
/// the witness never holds; the holder's power loss moves the VIP to the
/// other balancer within a second.
#[test]
fn two_balancers_and_a_witness_take_over_within_a_second() {
    let mut lab = HaLab::up(&[Member::Candidate, Member::Candidate, Member::Witness]);
    for n in 0..3 {
        lab.start(n);
    }
    let first = lab.wait_holder(Duration::from_secs(15));
    assert_ne!(first, 2, "the witness never holds");
    let client = lab.failover_client(8);
    std::thread::sleep(Duration::from_secs(2));
    let killed_at = unix_now();
    lab.power_loss(first);
    let second = lab.wait_holder(Duration::from_secs(5));
    assert_eq!(second, 1 - first);
    let report = client.finish();
    let took = outage(&report, killed_at);
    eprintln!("ha takeover with a witness: {took:.3} s outage");
    assert!(took <= TAKEOVER, "outage {took:.3} s\n{}", lab.logs());
    let (_, view) = lab
        .api(second, "GET", "/config/cistate/all", None)
        .expect("API");
    let inst = &view["Attr"][0];
    assert_eq!(inst["state"], "MASTER", "{view}");
    assert_eq!(inst["setBy"], "election", "{view}");
}

/// The holder's xlb crashes while its host stays up (SIGKILL): another
/// member takes over within a second, and the dead xlb's VIPs leave its
/// host by themselves when their lease runs out (2 s, plus the kernel's
/// timer slack), so its kernel stops claiming them; new connections go on.
#[test]
fn a_crashed_holders_addresses_lapse_while_its_host_stays_up() {
    let mut lab = HaLab::up(&[Member::Candidate; 3]);
    for n in 0..3 {
        lab.start(n);
    }
    let first = lab.wait_holder(Duration::from_secs(15));
    lab.stop(first, Signal::Kill);
    let second = lab.wait_holder_other_than(Some(first), Duration::from_secs(5));
    let crashed_at = Instant::now();
    while lab.holds(first, VIP) || lab.holds(first, FLOATING) {
        assert!(
            crashed_at.elapsed() < Duration::from_secs(5),
            "the crashed node still holds the VIP\n{}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "a crashed holder's addresses lapsed {:?} after the takeover",
        crashed_at.elapsed()
    );
    let after = lab.failover_client(2).finish();
    assert_eq!(
        failures(&after, 0.0, f64::INFINITY),
        0,
        "through lb{}\n{}",
        second + 1,
        lab.logs()
    );
}

/// The holder cut off from the other members (it still reaches the
/// client): it lets go of the VIP before another member takes it, so ARP is
/// answered by one node at a time; healed, it stays a backup.
#[test]
fn a_partitioned_holder_lets_go_before_anyone_else_answers_arp() {
    let mut lab = HaLab::up(&[Member::Candidate; 3]);
    for n in 0..3 {
        lab.start(n);
    }
    let first = lab.wait_holder(Duration::from_secs(15));
    let arp = lab.arp_watch(10);
    std::thread::sleep(Duration::from_secs(1));
    let names: Vec<String> = (0..3).map(|n| lab.ns(n).name().to_string()).collect();
    for other in (0..3).filter(|&n| n != first) {
        let (a, b) = (names[first].clone(), names[other].clone());
        lab.segment().partition(&a, &b).expect("partition");
    }
    let second = lab.wait_holder_other_than(Some(first), Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(2));
    for other in (0..3).filter(|&n| n != first) {
        let (a, b) = (names[first].clone(), names[other].clone());
        lab.segment().heal(&a, &b).expect("heal");
    }
    let arp = arp.finish();
    assert_eq!(
        answer_turns(&arp),
        vec![lab.mac(first), lab.mac(second)],
        "two nodes answered ARP for the VIP at once\n{}",
        lab.logs()
    );
    wait_role(&lab, first, "BACKUP", Duration::from_secs(5));
    assert_eq!(lab.wait_holder(Duration::from_secs(1)), second);
}

/// kube-loxilb's `--setRoles`: MASTER to one node and BACKUP to the other
/// (llb-inst0, with the floating source as `vip`); later the swap. The VIP
/// and the floating source move, GET shows the roles, the new MASTER
/// announces the VIP with gratuitous ARP, and the client's new connections
/// reach the servers through whichever node is MASTER.
#[test]
fn kube_loxilb_roles_move_the_vip_with_gratuitous_arp() {
    let mut lab = HaLab::up(&[Member::Controlled, Member::Controlled]);
    lab.start(0);
    lab.start(1);
    for (node, state) in [(0, "MASTER"), (1, "BACKUP")] {
        let (code, body) = lab.cistate(node, "llb-inst0", state, FLOATING);
        assert_eq!((code, body), (200, json!({"result": "Success"})));
    }
    assert_eq!(lab.wait_holder(Duration::from_secs(3)), 0);
    assert!(!lab.holds(1, FLOATING));
    let before = lab.failover_client(2).finish();
    assert_eq!(failures(&before, 0.0, f64::INFINITY), 0, "through lb-1");
    let arp = lab.arp_watch(6);
    let swapped_at = unix_now();
    for (node, state) in [(0, "BACKUP"), (1, "MASTER")] {
        let (code, _) = lab.cistate(node, "llb-inst0", state, FLOATING);
        assert_eq!(code, 200);
    }
    assert_eq!(lab.wait_holder(Duration::from_secs(3)), 1);
    assert_eq!(lab.role(1, "llb-inst0").as_deref(), Some("MASTER"));
    assert_eq!(lab.role(0, "llb-inst0").as_deref(), Some("BACKUP"));
    let after = lab.failover_client(2).finish();
    assert_eq!(
        failures(&after, 0.0, f64::INFINITY),
        0,
        "through lb-2\n{}",
        lab.logs()
    );
    let arp = arp.finish();
    let garps: Vec<_> = claims(&arp)
        .into_iter()
        .filter(|c| c.2 == "garp" && c.0 >= swapped_at)
        .collect();
    assert!(
        garps.iter().any(|c| c.1 == lab.mac(1)),
        "no gratuitous ARP from the new MASTER: {garps:?}"
    );
    assert!(
        garps.iter().all(|c| c.1 == lab.mac(1)),
        "the BACKUP announced: {garps:?}"
    );
    assert_eq!(answer_turns(&arp).last(), Some(&lab.mac(1)));
}

/// keepalived (Debian's) on two nodes, xlb's example configuration with its
/// `notify` hook: the VRRP MASTER's xlb holds the VIP; pull its plug and
/// the other keepalived's hook moves the VIP within keepalived's
/// master-down time.
#[test]
fn keepalived_drives_two_nodes_through_the_notify_hook() {
    let mut lab = HaLab::up(&[Member::Controlled, Member::Controlled]);
    lab.start(0);
    lab.start(1);
    let example = std::fs::read_to_string(repo().join("configs/keepalived/keepalived.conf"))
        .expect("the example keepalived.conf");
    let mut keepalived = Vec::new();
    for (node, prio) in [(0, "150"), (1, "100")] {
        let dir = lab.dir(node);
        let conf = example
            .replace("/usr/bin/xlb", env!("CARGO_BIN_EXE_xlb"))
            .replace("priority 150", &format!("priority {prio}"));
        let path = dir.join("keepalived.conf");
        std::fs::write(&path, conf).expect("keepalived.conf");
        let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
        let args = [
            "keepalived",
            "--dont-fork",
            "--log-console",
            "--vrrp",
            "--use-file",
            &p("keepalived.conf"),
            "--pid",
            &p("keepalived.pid"),
            "--vrrp_pid",
            &p("vrrp.pid"),
        ];
        keepalived.push(
            lab.ns(node)
                .spawn(&args)
                .log(dir.join("keepalived.log"))
                .start()
                .expect("keepalived"),
        );
    }
    wait_role(&lab, 0, "MASTER", Duration::from_secs(10));
    wait_role(&lab, 1, "BACKUP", Duration::from_secs(10));
    assert_eq!(lab.wait_holder(Duration::from_secs(3)), 0);
    let through = lab.failover_client(2).finish();
    assert_eq!(failures(&through, 0.0, f64::INFINITY), 0, "through lb-1");
    lab.power_loss(0);
    keepalived.remove(0).kill();
    // keepalived's master-down interval: 3 adverts (1 s) plus skew.
    wait_role(&lab, 1, "MASTER", Duration::from_secs(6));
    assert_eq!(lab.wait_holder(Duration::from_secs(2)), 1);
    let after = lab.failover_client(2).finish();
    assert_eq!(
        failures(&after, 0.0, f64::INFINITY),
        0,
        "through lb-2\n{}",
        lab.logs()
    );
    drop(keepalived);
    lab.stop(1, Signal::Term);
}
