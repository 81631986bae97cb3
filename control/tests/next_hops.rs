//! Next hops through the kernel ([`KernelNet`]) as the controller uses
//! them, in a network namespace of the test's own (made with `unshare` on
//! one thread, gone with it: nothing to clean up).

use std::net::IpAddr;
use std::process::Command as Sh;
use std::sync::Arc;
use std::time::{Duration, Instant};

use xlb_control::controller::{Command, ControlState, Controller, RuleOp};
use xlb_control::dataplane::{KernelNet, Unattached};
use xlb_control::model::{parse_value, LbRule};
use xlb_dataplane::net::MacAddr;
use xlb_dataplane::tables::{PortSpec, TablesHandle};
use xlb_testkit::in_fresh_netns;

fn sh(args: &[&str]) {
    let out = Sh::new(args[0]).args(&args[1..]).output().expect("run");
    assert!(out.status.success(), "{args:?}: {out:?}");
}

fn post(vip: &str, port: u16, ep: &str) -> Command {
    let body = xlb_testkit::fixtures::Rule::new(vip, port)
        .eps(&[(ep, 8080)])
        .body();
    let rule = parse_value::<LbRule>(serde_json::from_str(&body).expect("json"))
        .expect("parsed")
        .validate()
        .expect("valid");
    Command::Rule(RuleOp::Post(Box::new(rule)))
}

/// An endpoint nobody answers ARP for must not slow rule changes down: the
/// rule is published at once with the endpoint counted as `no_neighbor`.
/// (Resolution inside the controller waited 500 ms for ARP on every change:
/// 2 changes/s.)
#[test]
fn an_unreachable_endpoint_does_not_stall_rule_changes() {
    in_fresh_netns(|| {
        // A port whose LAN has no one on it: ARP for 10.99.0.77 goes unanswered.
        sh(&[
            "ip", "link", "add", "xnh0", "type", "veth", "peer", "name", "xnh1",
        ]);
        sh(&["ip", "addr", "add", "10.99.0.1/24", "dev", "xnh0"]);
        sh(&["ip", "link", "set", "xnh0", "up"]);
        sh(&["ip", "link", "set", "xnh1", "up"]);
        let port = PortSpec {
            id: 0,
            name: "xnh0".into(),
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            addrs: vec!["10.99.0.1".parse().expect("ip")],
        };
        let handle = TablesHandle::new();
        let net = KernelNet::new(vec![port]);
        let state = ControlState::new(Arc::new(Unattached::new(handle.clone())), net);
        let controller = Controller::start(state).expect("controller");
        let ctl = controller.handle();

        const CHANGES: u16 = 40;
        let start = Instant::now();
        for i in 0..CHANGES {
            // Each change a new rule whose endpoint has no next hop.
            ctl.apply_blocking(post("192.0.2.1", 1000 + i, "10.99.0.77"))
                .expect("accepted");
        }
        let took = start.elapsed();
        let rate = f64::from(CHANGES) / took.as_secs_f64();
        println!(
            "{CHANGES} rule changes with an unreachable endpoint in {took:?}: {rate:.0} changes/s"
        );
        // Blocking resolution: >= 20 s. A generous bound for a loaded machine.
        assert!(
            took < Duration::from_secs(4),
            "{CHANGES} changes took {took:?} ({rate:.1}/s)"
        );
        let unreachable: IpAddr = "10.99.0.77".parse().expect("ip");
        let tables = handle.current();
        assert_eq!(
            tables.services.len(),
            usize::from(CHANGES),
            "every rule published"
        );
        assert!(
            !tables
                .next_hops
                .contains_key(&xlb_dataplane::net::Ip16::from(unreachable)),
            "no next hop for an address nobody answers for"
        );
        // Reads stay fast while the resolver keeps retrying in the background.
        let start = Instant::now();
        for _ in 0..20 {
            ctl.read_blocking(|st| {
                st.rules_view(&xlb_control::dataplane::StaticView::new())
                    .len()
            })
            .expect("read");
            std::thread::sleep(Duration::from_millis(100));
        }
        let took = start.elapsed();
        assert!(took < Duration::from_secs(4), "20 reads took {took:?}");
        drop(controller);
    });
}
