//! Connection-state sync (issue 17) on the K3s layout: three xlb nodes
//! under the election, the API servers on :6443 and a UDP echo on :9000,
//! round robin (the K3s guide's `sel 0`, which a survivor cannot
//! recompute) and full NAT from the floating source. The holder loses
//! power under long-lived TCP connections and UDP flows, young and old;
//! every one of them keeps its server and its answers through the node that
//! takes over. The dead node returns, pulls the table, stays a backup; then
//! the new holder dies, and the flows opened while the first was away
//! survive too.

use std::time::Duration;

use serde_json::Value;

use crate::ha::{failures, outage, outage_before, unix_now, HaLab, Member, FLOATING};

/// Every long-lived connection and UDP flow of a sync client's report kept
/// its first server and never failed (a UDP flow may lose a datagram in
/// flight during the takeover, never its server).
fn assert_all_survived(report: &Value, what: &str, logs: &str) {
    for long in report["long"].as_array().expect("long") {
        assert_eq!(
            long["errors"],
            serde_json::json!([]),
            "{what}: a long connection broke: {long}\n{logs}"
        );
        assert_eq!(
            long["seen"].as_array().map(Vec::len),
            Some(1),
            "{what}: a long connection changed servers: {long}"
        );
    }
    for flow in report["udp"].as_array().expect("udp") {
        assert_eq!(
            flow["seen"].as_array().map(Vec::len),
            Some(1),
            "{what}: a UDP flow changed servers: {flow}\n{logs}"
        );
        let answers = flow["answers"].as_u64().unwrap_or(0);
        let errors = flow["errors"].as_array().map_or(0, Vec::len) as u64;
        assert!(
            answers > 20 && errors <= 3,
            "{what}: a UDP flow stalled ({answers} answers, {errors} lost): {flow}\n{logs}"
        );
    }
}

/// The youngest long connection at `at`, in seconds.
fn youngest_at(report: &Value, at: f64) -> f64 {
    report["long"]
        .as_array()
        .expect("long")
        .iter()
        .filter_map(|l| l["opened"].as_f64())
        .filter(|&o| o < at)
        .map(|o| at - o)
        .fold(f64::INFINITY, f64::min)
}

/// When the survival tests killed the first holder, brought it back, and
/// killed the second (Unix time, s).
struct Times {
    killed_at: f64,
    back_at: f64,
    killed2_at: f64,
}

/// What both survival tests assert of their two clients' reports: `report`
/// (opened before the first kill, with a connection under 1 s old then)
/// and `away` (opened while the first holder was away) kept every long
/// connection and UDP flow, and new connections failed only in the
/// takeover windows (none while the first node returned).
fn assert_kept(what: &str, report: &Value, away: &Value, t: &Times, logs: &str) {
    let young = youngest_at(report, t.killed_at);
    eprintln!(
        "{what}: youngest long connection at the first kill {young:.3} s; takeovers {:.3} s and {:.3} s",
        outage_before(report, t.killed_at, t.back_at),
        outage(away, t.killed2_at)
    );
    assert!(young < 1.0, "no connection younger than 1 s at the kill");
    assert_all_survived(report, "opened before the first power loss", logs);
    assert_all_survived(away, "opened while the first node was away", logs);
    assert_eq!(
        failures(report, t.back_at, t.killed2_at),
        0,
        "{what}: new connections failed while the first node returned\n{logs}"
    );
}

#[test]
fn established_connections_survive_the_holders_power_loss_and_its_return() {
    survive(&[Member::Candidate; 3]);
}

/// The same with two balancers and a `--no-dataplane` witness (which votes
/// and has no flows): the two balancers sync with each other.
#[test]
fn two_balancers_and_a_witness_keep_established_connections_too() {
    survive(&[Member::Candidate, Member::Candidate, Member::Witness]);
}

fn survive(members: &[Member]) {
    let mut lab = HaLab::up(members);
    for n in 0..members.len() {
        lab.start(n);
    }
    let first = lab.wait_holder(Duration::from_secs(15));
    // 20 TCP connections and 4 UDP flows, one opened every 0.25 s: the
    // youngest are a few hundred ms old when the holder dies.
    let client = lab.sync_client(40, 20, 4, 0.25);
    std::thread::sleep(Duration::from_millis(5200));
    let killed_at = unix_now();
    lab.power_loss(first);
    let second = lab.wait_holder(Duration::from_secs(5));
    assert_ne!(second, first);

    // Flows opened while the first node is away: through the second only.
    std::thread::sleep(Duration::from_secs(1));
    let while_away = lab.sync_client(30, 10, 2, 0.2);
    std::thread::sleep(Duration::from_secs(3));
    let back_at = unix_now();
    lab.power_on(first);
    // It pulls the table and stays a backup; nothing moves.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(lab.wait_holder(Duration::from_secs(1)), second);

    // Now the second dies: the flows it opened while the first was away
    // (and the first's, which it carried) go on through the third or the
    // first.
    let killed2_at = unix_now();
    lab.power_loss(second);
    let third = lab.wait_holder_other_than(Some(second), Duration::from_secs(5));
    assert_ne!(third, second);
    let times = Times {
        killed_at,
        back_at,
        killed2_at,
    };
    assert_kept(
        "sync",
        &client.finish(),
        &while_away.finish(),
        &times,
        &lab.logs(),
    );
}

/// Roles from a controller, as kube-loxilb's `--setRoles` sets them
/// (`POST /config/cistate` to every node, the floating source as the
/// instance's `vip`; loxilb's `--cluster` without `--ka`): the MASTER's
/// flows reach the BACKUP; the MASTER loses power and the controller makes
/// the other node MASTER; every established connection goes on. The dead
/// node comes back as BACKUP (claiming nothing before the controller says
/// so), pulls the table, and takes over from the second under the flows
/// opened meanwhile.
#[test]
fn roles_set_by_a_controller_keep_established_connections() {
    let mut lab = HaLab::up(&[Member::Synced, Member::Synced]);
    lab.start(0);
    lab.start(1);
    // Before any role: both wait, neither claims the VIP.
    std::thread::sleep(Duration::from_millis(500));
    assert!(lab.holders().is_empty(), "a node claimed the VIP unasked");
    let set = |lab: &HaLab, node: usize, state: &str| {
        let (code, body) = lab.cistate(node, "llb-inst0", state, FLOATING);
        assert_eq!(code, 200, "{state} on lb{}: {body}", node + 1);
    };
    set(&lab, 1, "BACKUP");
    set(&lab, 0, "MASTER");
    assert_eq!(lab.wait_holder(Duration::from_secs(3)), 0);
    let client = lab.sync_client(40, 20, 4, 0.25);
    std::thread::sleep(Duration::from_millis(5200));
    let killed_at = unix_now();
    lab.power_loss(0);
    // kube-loxilb polls every 2 s; here the controller reacts at once.
    set(&lab, 1, "MASTER");
    assert_eq!(lab.wait_holder(Duration::from_secs(3)), 1);

    std::thread::sleep(Duration::from_secs(1));
    let while_away = lab.sync_client(30, 10, 2, 0.2);
    std::thread::sleep(Duration::from_secs(3));
    let back_at = unix_now();
    lab.power_on(0);
    assert_eq!(
        lab.holders(),
        [1].into(),
        "the returning node claimed the VIP"
    );
    set(&lab, 0, "BACKUP");
    // It pulls the table (the MASTER dumps it when the link comes up).
    std::thread::sleep(Duration::from_secs(4));

    let killed2_at = unix_now();
    lab.power_loss(1);
    set(&lab, 0, "MASTER");
    assert_eq!(lab.wait_holder(Duration::from_secs(3)), 0);
    let times = Times {
        killed_at,
        back_at,
        killed2_at,
    };
    assert_kept(
        "sync (controller roles)",
        &client.finish(),
        &while_away.finish(),
        &times,
        &lab.logs(),
    );
}
