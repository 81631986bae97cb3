//! The control state's own tests: every mutation checked against what it
//! publishes, refusals that change nothing, and a property test over random
//! request sequences.

use std::net::IpAddr;
use std::sync::Arc;

use xlb_dataplane::tables::{EndpointState, ServiceKey, MAX_ENDPOINTS_PER_SERVICE};

use super::settings::is_table_size;
use super::*;
use crate::dataplane::{StaticNet, StaticView, Unattached};
use crate::model::LbRule;
use crate::model::{parse_value, EpProbe};
use crate::rules::ValidRule;
use proptest::prelude::*;
use serde_json::json;

fn state() -> ControlState {
    ControlState::new(
        Arc::new(Unattached::default()),
        Arc::new(StaticNet::default()),
    )
}

fn rule(v: serde_json::Value) -> Result<ValidRule, crate::error::ApiError> {
    Ok(parse_value::<LbRule>(v)?.validate()?)
}

fn tcp(vip: &str, port: u16, portmax: u16, eps: &[&str]) -> serde_json::Value {
    let eps: Vec<_> = eps
        .iter()
        .map(|e| json!({"endpointIP": e, "targetPort": 0, "weight": 1}))
        .collect();
    json!({"serviceArguments": {"externalIP": vip, "port": port, "portMax": portmax, "protocol": "tcp"},
           "endpoints": eps})
}

#[test]
fn a_build_error_changes_nothing() {
    let mut st = state();
    st.post_rule(rule(tcp("192.0.2.1", 80, 90, &["10.0.0.1"])).expect("valid"))
        .expect("accepted");
    let g = st.tables().generation;
    let err = st
        .post_rule(rule(tcp("192.0.2.1", 85, 0, &["10.0.0.2"])).expect("valid"))
        .expect_err("overlap");
    assert!(matches!(err, RuleError::MalformedService(_)), "{err}");
    assert_eq!(st.rules().count(), 1);
    assert_eq!(st.tables().generation, g);
}

#[test]
fn batch_builds_once_and_rolls_back_whole() {
    let mut st = state();
    let out = st.batch(|st| {
        for p in [80, 81, 82] {
            st.post_rule(rule(tcp("192.0.2.1", p, 0, &["10.0.0.1"])).expect("valid"))
                .expect("accepted");
        }
    });
    assert!(out.is_ok());
    assert_eq!(st.tables().generation, 1);
    assert_eq!(st.tables().services.len(), 3);
    let out = st.batch(|st| {
        st.post_rule(rule(tcp("192.0.2.2", 10, 20, &["10.0.0.1"])).expect("valid"))
            .expect("no build inside a batch");
        st.post_rule(rule(tcp("192.0.2.2", 15, 0, &["10.0.0.1"])).expect("valid"))
            .expect("no build inside a batch");
    });
    assert!(out.is_err(), "the overlap shows at the one build");
    assert_eq!(st.rules().count(), 3, "rolled back whole");
    assert_eq!(st.tables().generation, 1);
}

#[test]
fn many_probe_results_make_one_snapshot() {
    let mut st = state();
    let mut r = tcp("192.0.2.1", 80, 0, &["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    r["serviceArguments"]["monitor"] = true.into();
    st.post_rule(rule(r).expect("valid")).expect("accepted");
    let g = st.tables().generation;
    let status = |ok| ProbeStatus {
        ok,
        delays: Default::default(),
    };
    let down = |names: &[&str]| -> Vec<(String, ProbeStatus)> {
        names
            .iter()
            .map(|n| (n.to_string(), status(false)))
            .collect()
    };
    st.set_probe_statuses(down(&["10.0.0.1_tcp_0", "10.0.0.3_tcp_0", "nothing"]))
        .expect("accepted");
    let t = st.tables();
    assert_eq!(t.generation, g + 1, "one snapshot for the burst");
    let states: Vec<EndpointState> = t.services[0].endpoints.iter().map(|e| e.state).collect();
    assert_eq!(
        states,
        [
            EndpointState::Down,
            EndpointState::Active,
            EndpointState::Down
        ]
    );
    // The same results again: nothing to publish.
    st.set_probe_statuses(down(&["10.0.0.1_tcp_0", "10.0.0.3_tcp_0"]))
        .expect("accepted");
    assert_eq!(st.tables().generation, g + 1);
}

#[test]
fn probe_results_for_unknown_entries_are_ignored() {
    let mut st = state();
    let down = ProbeStatus {
        ok: false,
        delays: Default::default(),
    };
    st.set_probe_status("nothing", down.clone())
        .expect("ignored");
    assert_eq!(st.tables().generation, 0);
    let ep: EpProbe =
        parse_value(json!({"hostName": "10.0.0.1", "probeType": "ping"})).expect("valid");
    st.post_probe(ep.validate().expect("valid"))
        .expect("accepted");
    st.set_probe_status("10.0.0.1_ping_0", down)
        .expect("recorded");
    assert_eq!(st.probes_view()[0].currstate, "nok");
    // Not used by any rule: no table change.
    assert_eq!(st.tables().generation, 0);
    assert_eq!(
        st.delete_probe("10.0.0.1_tcp_0"),
        Err(RuleError::HostNotFound)
    );
    st.delete_probe("10.0.0.1_ping_0").expect("deleted");
    assert!(st.probes_view().is_empty());
}

#[test]
fn maglev_sizes_are_primes_in_range() {
    use xlb_dataplane::select::maglev::MAX_TABLE_SIZE;
    let usable = |m: usize| MaglevSize::new(m).is_ok();
    assert!(usable(MaglevSize::MIN) && usable(MaglevSize::MAX));
    assert!((MAX_ENDPOINTS_PER_SERVICE..MaglevSize::MIN).all(|m| !is_table_size(m)));
    assert!((MaglevSize::MAX + 1..=MAX_TABLE_SIZE).all(|m| !is_table_size(m)));
    assert_eq!(MaglevSize::default().get(), 65537);
    assert_eq!(
        "131071".parse::<MaglevSize>().map(MaglevSize::get),
        Ok(131071)
    );
    let err = |s: &str| s.parse::<MaglevSize>().expect_err(s).to_string();
    assert_eq!(
        err("65536"),
        "65536 is not a prime, which Maglev needs; the nearest primes are 65521 and 65537"
    );
    assert_eq!(
        err("31"),
        "31 is out of range: give a prime from 37 to 16777213"
    );
    assert_eq!(
        err("16777259"),
        "16777259 is out of range: give a prime from 37 to 16777213"
    );
    assert_eq!(
        err("0"),
        "0 is out of range: give a prime from 37 to 16777213"
    );
    assert_eq!(err("-1"), r#""-1" is not a whole number"#);
    assert_eq!(err("64k"), r#""64k" is not a whole number"#);
}

#[test]
fn maglev_size_reaches_every_build() {
    let mut st = state();
    st.set_maglev_size(MaglevSize::new(251).expect("prime"))
        .expect("nothing to refuse");
    let mut hash = tcp("192.0.2.1", 80, 0, &["10.0.0.1", "10.0.0.2"]);
    hash["serviceArguments"]["sel"] = 1.into();
    st.post_rule(rule(hash).expect("valid")).expect("accepted");
    let slots = |st: &ControlState| {
        let t = st.tables();
        t.services[0].maglev.as_ref().map(|m| m.slots().len())
    };
    assert_eq!(slots(&st), Some(251), "an incremental update keeps it");
    st.refresh().expect("same state");
    st.set_snat_addrs(vec!["192.0.2.99".parse().expect("ip")])
        .expect("whole rebuild");
    assert_eq!(slots(&st), Some(251), "a whole rebuild keeps it");
    st.set_maglev_size(MaglevSize::default()).expect("accepted");
    assert_eq!(slots(&st), Some(65537));
}

#[test]
fn daemon_dsr_ipip_covers_ipv4_dsr_rules_only() {
    let mut st = state();
    let dsr = |vip: &str, ep: &str| {
        json!({"serviceArguments": {"externalIP": vip, "port": 80, "protocol": "tcp", "sel": 1, "mode": 3},
               "endpoints": [{"endpointIP": ep, "targetPort": 80, "weight": 1}]})
    };
    for r in [
        dsr("192.0.2.1", "10.0.0.1"),
        dsr("2001:db8::1", "2001:db8:1::1"),
        tcp("192.0.2.2", 80, 0, &["10.0.0.1"]),
    ] {
        st.post_rule(rule(r).expect("valid")).expect("accepted");
    }
    let ipip = |st: &ControlState| -> Vec<(String, bool)> {
        let t = st.tables();
        let mut v: Vec<_> = t
            .services
            .iter()
            .map(|s| (s.spec.key.vip.to_string(), s.spec.dsr_ipip))
            .collect();
        v.sort();
        v
    };
    let off = [
        ("192.0.2.1".to_string(), false),
        ("192.0.2.2".to_string(), false),
        ("2001:db8::1".to_string(), false),
    ];
    assert_eq!(ipip(&st), off);
    st.set_dsr_ipip(true).expect("accepted");
    assert_eq!(
        ipip(&st),
        [
            ("192.0.2.1".to_string(), true),
            ("192.0.2.2".to_string(), false),
            ("2001:db8::1".to_string(), false),
        ]
    );
    // What GET shows is the rule's own setting, not the daemon's.
    let view = StaticView::new();
    assert!(st.rules_view(&view).iter().all(|r| !r.serviceargs.dsripip));
    st.set_dsr_ipip(false).expect("accepted");
    assert_eq!(ipip(&st), off);
}

/// One random API operation.
#[derive(Debug, Clone)]
enum Op {
    Post {
        vip: u8,
        port: u16,
        portmax: u16,
        proto: u8,
        oper: u8,
        sel: u8,
        mode: u8,
        eps: Vec<(u8, u16, u8)>,
    },
    Delete {
        vip: u8,
        port: u16,
        proto: u8,
    },
    DeleteAll,
    ProbeDown(u8, u16, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            0u8..3,
            prop_oneof![Just(0u16), Just(80), Just(81), Just(1000)],
            prop_oneof![Just(0u16), Just(85), Just(1005)],
            0u8..4,
            0u8..3,
            0u8..7,
            0u8..6,
            proptest::collection::vec((0u8..4, prop_oneof![Just(0u16), Just(80), Just(8080)], 0u8..3), 0..5),
        )
            .prop_map(|(vip, port, portmax, proto, oper, sel, mode, eps)| Op::Post {
                vip, port, portmax, proto, oper, sel, mode, eps,
            }),
        2 => (0u8..3, prop_oneof![Just(80u16), Just(81), Just(1000)], 0u8..4)
            .prop_map(|(vip, port, proto)| Op::Delete { vip, port, proto }),
        1 => Just(Op::DeleteAll),
        2 => (0u8..4, prop_oneof![Just(80u16), Just(8080)], any::<bool>())
            .prop_map(|(e, p, ok)| Op::ProbeDown(e, p, ok)),
    ]
}

const PROTOS: [&str; 4] = ["tcp", "udp", "icmp", "sctp"];

fn apply(st: &mut ControlState, op: &Op) -> Result<(), String> {
    match op {
        Op::Post {
            vip,
            port,
            portmax,
            proto,
            oper,
            sel,
            mode,
            eps,
        } => {
            let eps: Vec<_> = eps
                .iter()
                .map(|(e, p, w)| json!({"endpointIP": format!("10.0.0.{e}"), "targetPort": p, "weight": w}))
                .collect();
            let v = json!({"serviceArguments": {
                "externalIP": format!("192.0.2.{vip}"), "port": port, "portMax": portmax,
                "protocol": PROTOS[usize::from(*proto)], "oper": oper, "sel": sel, "mode": mode,
                "monitor": true},
                "endpoints": eps});
            let r = rule(v).map_err(|e| e.to_string())?;
            st.post_rule(r).map_err(|e| e.to_string())
        }
        Op::Delete { vip, port, proto } => {
            let key = ServiceKey {
                vip: format!("192.0.2.{vip}").parse().map_err(|_| "ip")?,
                proto: crate::rules::parse_proto(PROTOS[usize::from(*proto)]).ok_or("proto")?,
                port_min: *port,
                port_max: *port,
                block: 0,
            };
            st.delete_rule(&key).map_err(|e| e.to_string())
        }
        Op::DeleteAll => st.delete_all_rules().map_err(|e| e.to_string()),
        Op::ProbeDown(e, p, ok) => st
            .set_probe_status(
                &format!("10.0.0.{e}_tcp_{p}"),
                ProbeStatus {
                    ok: *ok,
                    delays: Default::default(),
                },
            )
            .map_err(|e| e.to_string()),
    }
}

proptest! {
    /// Whatever sequence of requests arrives: a rejected one changes neither
    /// the state nor the published tables, and after every request the
    /// published tables are exactly what the state describes.
    #[test]
    fn published_tables_always_match_the_state(ops in proptest::collection::vec(op(), 1..40)) {
        let mut st = state();
        let view = StaticView::new();
        for op in &ops {
            let before = (st.rules_view(&view), st.probes_view(), st.tables().generation);
            let res = apply(&mut st, op);
            let t = st.tables();
            if res.is_err() {
                prop_assert_eq!(&before.0, &st.rules_view(&view));
                prop_assert_eq!(&before.1, &st.probes_view());
                prop_assert_eq!(before.2, t.generation);
            }
            prop_assert!(t.matches(&st.spec()), "published tables differ from the state");
            prop_assert_eq!(t.services.len(), st.rules().count());
            for row in st.endpoint_rows(&view) {
                let s = &t.services[t.service_index(&row.rule.service.key).expect("rule published")];
                let e = s.endpoints.iter().find(|e| {
                    IpAddr::from(e.addr) == row.endpoint.addr && e.port == row.endpoint.port
                });
                prop_assert_eq!(row.up, e.expect("endpoint published").state == EndpointState::Active);
            }
            // The incremental index of implied probe entries agrees with a full derivation.
            let derived: std::collections::BTreeSet<String> = st.derived_probes().into_keys().collect();
            let indexed: std::collections::BTreeSet<String> = st.probe_refs.keys().cloned().collect();
            prop_assert_eq!(derived, indexed);
            for k in st.status.keys() {
                prop_assert!(st.probe_refs.contains_key(k) || st.probes.contains_key(k), "stale result {}", k);
            }
        }
    }
}

/// The controller's loop, as its clients see it.
mod controller_loop {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use xlb_dataplane::tables::{NextHop, PortSpec};

    use super::*;
    use crate::dataplane::NetEnv;

    fn post(vip: &str) -> Command {
        Command::Rule(RuleOp::Post(Box::new(
            rule(tcp(vip, 80, 0, &["10.0.0.1"])).expect("valid"),
        )))
    }

    #[test]
    fn commands_apply_in_order_and_reads_see_them() {
        let c = Controller::start(state()).expect("thread");
        let h = c.handle();
        h.apply_blocking(post("192.0.2.1")).expect("accepted");
        assert!(matches!(
            h.apply_blocking(post("192.0.2.1")),
            Err(RuleError::Exists)
        ));
        h.apply_blocking(Command::DeleteAllRules).expect("accepted");
        h.apply_blocking(post("192.0.2.2")).expect("accepted");
        let vips = h
            .read_blocking(|st| {
                st.rules()
                    .map(|r| r.service.key.vip.to_string())
                    .collect::<Vec<_>>()
            })
            .expect("read");
        assert_eq!(vips, ["192.0.2.2"]);
        let st = c.stop().expect("the state comes back");
        assert_eq!(st.tables().services.len(), 1);
    }

    #[test]
    fn a_stopped_controller_answers_with_an_error_and_drops_what_was_queued() {
        let c = Controller::start(state()).expect("thread");
        let h = c.handle();
        let pause = h.pause();
        let queued = std::thread::spawn({
            let h = h.clone();
            move || h.apply_blocking(post("192.0.2.1"))
        });
        while h.queued() == 0 {
            std::thread::yield_now();
        }
        drop(c);
        drop(pause);
        let err = queued.join().expect("thread").expect_err("never applied");
        assert_eq!(err.to_string(), stopped().to_string());
        assert!(h.apply_blocking(Command::Refresh).is_err());
        assert!(h.read_blocking(|st| st.rules().count()).is_err());
    }

    /// A network whose next hop appears on the third refresh round.
    struct LateNeighbour {
        rounds: AtomicU64,
    }

    impl NetEnv for LateNeighbour {
        fn ports(&self) -> Vec<PortSpec> {
            Vec::new()
        }
        fn next_hops(&self, addrs: &[IpAddr]) -> Vec<(IpAddr, NextHop)> {
            if self.rounds.load(Ordering::Relaxed) < 3 {
                return Vec::new();
            }
            addrs
                .iter()
                .map(|a| {
                    let hop = NextHop {
                        mac: xlb_dataplane::net::MacAddr([2, 0, 0, 0, 0, 1]),
                        port: 0,
                    };
                    (*a, hop)
                })
                .collect()
        }
        fn needs_refresh(&self, round: u64) -> bool {
            self.rounds.store(round, Ordering::Relaxed);
            true
        }
    }

    #[test]
    fn the_controller_refreshes_when_the_network_asks() {
        let net = Arc::new(LateNeighbour {
            rounds: AtomicU64::new(0),
        });
        let st = ControlState::new(Arc::new(Unattached::default()), net.clone());
        let c = Controller::start_ticking(st, Duration::from_millis(20)).expect("thread");
        let h = c.handle();
        h.apply_blocking(post("192.0.2.1")).expect("accepted");
        let hops = |h: &ControlHandle| {
            h.read_blocking(|st| st.tables().next_hops.len())
                .expect("read")
        };
        assert_eq!(hops(&h), 0, "no neighbour yet");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while hops(&h) == 0 {
            assert!(std::time::Instant::now() < deadline, "never refreshed");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(net.rounds.load(Ordering::Relaxed) >= 3);
    }
}

/// Which addresses each role decides.
mod holds {
    use super::*;
    use crate::ha::{Standing, Transition};
    use crate::model::CiStateIn;

    fn named(vip: &str, port: u16, name: &str) -> ValidRule {
        let mut v = tcp(vip, port, 0, &["10.0.0.1"]);
        v["serviceArguments"]["name"] = name.into();
        rule(v).expect("valid")
    }

    fn ci(instance: &str, state: &str, vip: &str) -> CiStateIn {
        CiStateIn {
            instance: instance.into(),
            state: state.into(),
            vip: vip.into(),
        }
    }

    fn set(addrs: &[&str]) -> std::collections::BTreeSet<IpAddr> {
        addrs.iter().map(|a| a.parse().expect("ip")).collect()
    }

    #[test]
    fn roles_set_through_the_api_decide_their_instances_vips() {
        let mut st = state();
        st.post_rule(named("192.0.2.1", 80, "default_api"))
            .expect("accepted");
        st.post_rule(named("192.0.2.2", 80, "ns_svc:llb-inst1"))
            .expect("accepted");
        // Same VIP, another instance: the first rule in key order decides.
        st.post_rule(named("192.0.2.2", 81, "ns_other:llb-inst2"))
            .expect("accepted");
        assert_eq!(
            st.hold_sets(),
            HoldSets::default(),
            "nothing set: all served"
        );
        st.post_cistate(&ci("llb-inst1", "BACKUP", "192.0.2.100"))
            .expect("accepted");
        assert_eq!(st.hold_sets().idle, set(&["192.0.2.2", "192.0.2.100"]));
        st.post_cistate(&ci("llb-inst1", "MASTER", "192.0.2.100"))
            .expect("accepted");
        assert_eq!(st.hold_sets(), HoldSets::default());
        st.post_cistate(&ci("llb-inst0", "FAULT", ""))
            .expect("accepted");
        assert_eq!(st.hold_sets().idle, set(&["192.0.2.1"]));
    }

    #[test]
    fn the_election_decides_every_instance_no_controller_set() {
        let mut st = state();
        st.post_rule(named("192.0.2.1", 80, "a")).expect("accepted");
        st.post_rule(named("192.0.2.2", 80, "b:llb-inst1"))
            .expect("accepted");
        let t = Transition {
            standing: Standing::Backup,
            holder: None,
            reason: "test",
        };
        st.set_elected(t, Vec::new()).expect("accepted");
        assert_eq!(st.hold_sets().elected, set(&["192.0.2.1", "192.0.2.2"]));
        assert_eq!(st.instances().role("llb-inst1"), Role::Backup);
        // A controller takes llb-inst1 over: the election leaves it alone.
        st.post_cistate(&ci("llb-inst1", "MASTER", ""))
            .expect("accepted");
        let h = st.hold_sets();
        assert_eq!(h.elected, set(&["192.0.2.1"]));
        assert!(h.idle.is_empty());
        assert_eq!(st.instances().role("llb-inst1"), Role::Master);
        assert_eq!(st.instances().role("llb-inst0"), Role::Backup);
    }
    #[test]
    fn an_instances_floating_address_is_its_full_nat_source_and_follows_its_role() {
        let mut st = state();
        st.set_snat_addrs(vec!["192.0.2.99".parse().expect("ip")])
            .expect("accepted");
        let full_nat = |vip: &str, name: &str| {
            let mut v = tcp(vip, 80, 0, &["10.0.0.1"]);
            v["serviceArguments"]["mode"] = 2.into();
            v["serviceArguments"]["name"] = name.into();
            rule(v).expect("valid")
        };
        st.post_rule(full_nat("192.0.2.1", "a:llb-inst1"))
            .expect("accepted");
        st.post_rule(full_nat("192.0.2.2", "b")).expect("accepted");
        let source = |st: &ControlState, i: usize| {
            let t = st.tables();
            t.services[i].endpoints[0].snat_addr.map(IpAddr::from)
        };
        let addr = |a: &str| Some(a.parse::<IpAddr>().expect("ip"));
        assert_eq!(
            source(&st, 0),
            addr("192.0.2.99"),
            "no instance address yet"
        );
        st.post_cistate(&ci("llb-inst1", "MASTER", "192.0.2.100"))
            .expect("accepted");
        assert_eq!(source(&st, 0), addr("192.0.2.100"), "the instance's own");
        assert_eq!(
            source(&st, 1),
            addr("192.0.2.99"),
            "other instances keep theirs"
        );
        assert!(st
            .tables()
            .is_snat_addr("192.0.2.100".parse::<IpAddr>().expect("ip").into()));
        // A backup keeps the translation but holds neither address.
        st.post_cistate(&ci("llb-inst1", "BACKUP", "192.0.2.100"))
            .expect("accepted");
        assert_eq!(source(&st, 0), addr("192.0.2.100"));
        assert_eq!(st.hold_sets().idle, set(&["192.0.2.1", "192.0.2.100"]));
        // The daemon's --snat-addrs floats with llb-inst0.
        st.post_cistate(&ci("llb-inst0", "BACKUP", ""))
            .expect("accepted");
        assert_eq!(
            st.hold_sets().idle,
            set(&["192.0.2.1", "192.0.2.2", "192.0.2.99", "192.0.2.100"])
        );
    }
    #[test]
    fn roles_and_their_changes_are_metrics() {
        let mut st = state();
        st.post_cistate(&ci("llb-inst1", "BACKUP", ""))
            .expect("accepted");
        st.post_cistate(&ci("llb-inst1", "MASTER", ""))
            .expect("accepted");
        st.post_cistate(&ci("llb-inst1", "MASTER", ""))
            .expect("an unchanged state is no change");
        let view = StaticView::default();
        let text = crate::metrics::render(&st, &view);
        for line in [
            "xlb_cluster_role{instance=\"llb-inst1\",role=\"MASTER\"} 1",
            "xlb_cluster_role{instance=\"llb-inst1\",role=\"BACKUP\"} 0",
            "xlb_cluster_role{instance=\"llb-inst0\",role=\"NOT_DEFINED\"} 1",
            "xlb_cluster_role_transitions_total{instance=\"llb-inst1\"} 1",
            "xlb_cluster_role_transitions_total{instance=\"llb-inst0\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("xlb_cluster_member_up"), "no election runs");
        let t = Transition {
            standing: Standing::Holder,
            holder: Some(0),
            reason: "test",
        };
        let me = crate::ha::MemberStatus {
            addr: "192.0.2.7:11112".parse().expect("addr"),
            me: true,
            up: true,
        };
        st.set_elected(t, vec![me.clone()]).expect("accepted");
        st.set_cluster_members(vec![me], [("malformed", 3)].into_iter().collect());
        let text = crate::metrics::render(&st, &view);
        for line in [
            "xlb_cluster_role{instance=\"llb-inst0\",role=\"MASTER\"} 1",
            "xlb_cluster_role_transitions_total{instance=\"llb-inst0\"} 1",
            "xlb_cluster_member_up{member=\"192.0.2.7:11112\"} 1",
            "xlb_cluster_members_up 1",
            "xlb_cluster_datagrams_total{outcome=\"malformed\"} 3",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}

/// The roles reach the published tables, in the same snapshot as the rules.
mod published_roles {
    use super::*;
    use crate::model::CiStateIn;
    use xlb_dataplane::net::Ip16;

    fn vip(s: &str) -> Ip16 {
        Ip16::from(s.parse::<IpAddr>().expect("ip"))
    }

    #[test]
    fn a_role_change_is_one_cheap_snapshot_and_new_rules_carry_their_role() {
        let mut st = state();
        let mut r = tcp("192.0.2.1", 80, 0, &["10.0.0.1"]);
        r["serviceArguments"]["name"] = "svc:llb-inst1".into();
        st.post_rule(rule(r).expect("valid")).expect("accepted");
        let before = st.tables();
        assert!(before.serves(vip("192.0.2.1")));
        st.post_cistate(&CiStateIn {
            instance: "llb-inst1".into(),
            state: "BACKUP".into(),
            vip: String::new(),
        })
        .expect("accepted");
        let after = st.tables();
        assert_eq!(after.generation, before.generation + 1);
        assert!(!after.serves(vip("192.0.2.1")), "a backup serves nothing");
        assert!(
            Arc::ptr_eq(&before.services[0], &after.services[0]),
            "the tables stay built"
        );
        // A new rule of that instance is idle from its first snapshot on.
        let mut r = tcp("192.0.2.2", 80, 0, &["10.0.0.1"]);
        r["serviceArguments"]["name"] = "other:llb-inst1".into();
        st.post_rule(rule(r).expect("valid")).expect("accepted");
        let t = st.tables();
        assert!(!t.serves(vip("192.0.2.2")));
        // Rules of other instances are served.
        st.post_rule(rule(tcp("192.0.2.3", 80, 0, &["10.0.0.1"])).expect("valid"))
            .expect("accepted");
        assert!(st.tables().serves(vip("192.0.2.3")));
    }

    #[test]
    fn elected_addresses_follow_the_gate_without_a_new_snapshot() {
        let mut st = state();
        st.post_rule(rule(tcp("192.0.2.1", 80, 0, &["10.0.0.1"])).expect("valid"))
            .expect("accepted");
        let t = crate::ha::Transition {
            standing: crate::ha::Standing::Backup,
            holder: None,
            reason: "test",
        };
        st.set_elected(t, Vec::new()).expect("accepted");
        let tables = st.tables();
        assert!(!tables.serves(vip("192.0.2.1")));
        st.gate().set(true);
        assert!(
            tables.serves(vip("192.0.2.1")),
            "the same snapshot, the gate moved"
        );
    }
}
