//! The tables' tests: look-ups, ids across rebuilds, schedules, rejected
//! specs, Maglev reuse, and updates against full builds (property tests).

use std::net::IpAddr;
use std::sync::Arc;

use super::*;

fn ep(a: &str, port: u16, w: u32) -> EndpointSpec {
    EndpointSpec {
        addr: a.parse().expect("ip"),
        port,
        weight: w,
        state: EndpointState::Active,
    }
}

fn svc(vip: &str, pmin: u16, pmax: u16, eps: Vec<EndpointSpec>) -> ServiceSpec {
    ServiceSpec {
        key: ServiceKey {
            vip: vip.parse().expect("ip"),
            proto: L4Proto::Tcp,
            port_min: pmin,
            port_max: pmax,
            block: 0,
        },
        sel: Selection::RoundRobin,
        mode: NatMode::Dnat,
        allowed_sources: vec![],
        endpoints: eps,
        inactive_timeout_s: 240,
        dsr_ipip: false,
        name: String::new(),
        snat: None,
    }
}

#[test]
fn lookup_finds_port_ranges_and_rejects_overlaps() {
    let spec = TablesSpec {
        services: vec![
            svc("10.0.0.1", 80, 80, vec![ep("10.1.0.1", 8080, 1)]),
            svc("10.0.0.1", 1000, 1999, vec![ep("10.1.0.2", 0, 1)]),
        ],
        ..Default::default()
    };
    let t = Tables::build(spec.clone(), &Tables::empty()).expect("valid");
    let vip = Ip16::from("10.0.0.1".parse::<IpAddr>().expect("ip"));
    assert_eq!(t.lookup(vip, 6, 80).map(|s| s.index), Some(0));
    assert_eq!(t.lookup(vip, 6, 1500).map(|s| s.index), Some(1));
    assert!(t.lookup(vip, 6, 81).is_none());
    assert!(t.lookup(vip, 17, 80).is_none());

    let mut bad = spec;
    bad.services
        .push(svc("10.0.0.1", 1500, 1500, vec![ep("10.1.0.3", 1, 1)]));
    assert!(matches!(
        Tables::build(bad, &Tables::empty()),
        Err(BuildError::OverlappingService(..))
    ));
}

#[test]
fn endpoint_ids_survive_rebuilds_and_removed_ids_vanish() {
    let a = TablesSpec {
        services: vec![svc(
            "10.0.0.1",
            80,
            80,
            vec![ep("10.1.0.1", 80, 1), ep("10.1.0.2", 80, 1)],
        )],
        ..Default::default()
    };
    let t1 = Tables::build(a, &Tables::empty()).expect("valid");
    let id2 = t1.services[0].endpoints[1].id;
    let id1 = t1.services[0].endpoints[0].id;
    let b = TablesSpec {
        services: vec![svc(
            "10.0.0.1",
            80,
            80,
            vec![ep("10.1.0.3", 80, 1), ep("10.1.0.2", 80, 1)],
        )],
        ..Default::default()
    };
    let t2 = Tables::build(b, &t1).expect("valid");
    assert_eq!(t2.generation, t1.generation + 1);
    assert_eq!(
        t2.services[0].endpoints[1].id, id2,
        "surviving endpoint keeps its id"
    );
    assert!(t2.endpoint(id1).is_none() || t2.services[0].endpoints[0].id == id1);
    let (_, e) = t2.endpoint(id2).expect("still there");
    assert_eq!(
        IpAddr::from(e.addr),
        "10.1.0.2".parse::<IpAddr>().expect("ip")
    );
}

#[test]
fn weighted_schedule_follows_percentages() {
    let mut s = svc(
        "10.0.0.1",
        80,
        80,
        vec![ep("10.1.0.1", 80, 70), ep("10.1.0.2", 80, 30)],
    );
    s.sel = Selection::Priority;
    let t = Tables::build(
        TablesSpec {
            services: vec![s],
            ..Default::default()
        },
        &Tables::empty(),
    )
    .expect("valid");
    let sch = &t.services[0].schedule;
    let a = sch.iter().filter(|&&i| i == 0).count();
    assert_eq!(sch.len(), 100);
    assert_eq!(a, 70);
    // Spread out: never more than 3 of the heavy endpoint in a row.
    assert!(!sch.windows(4).any(|w| w.iter().all(|&i| i == 0)));
}

#[test]
fn invalid_specs_are_rejected_whole() {
    let bad_family = svc("10.0.0.1", 80, 80, vec![ep("2001:db8::1", 80, 1)]);
    assert!(matches!(
        Tables::build(
            TablesSpec {
                services: vec![bad_family],
                ..Default::default()
            },
            &Tables::empty()
        ),
        Err(BuildError::EndpointFamily(..))
    ));
    let none = svc("10.0.0.1", 80, 80, vec![]);
    assert!(matches!(
        Tables::build(
            TablesSpec {
                services: vec![none],
                ..Default::default()
            },
            &Tables::empty()
        ),
        Err(BuildError::EndpointCount(..))
    ));
    let mut dsr = svc("10.0.0.1", 80, 80, vec![ep("10.1.0.1", 8080, 1)]);
    dsr.mode = NatMode::Dsr;
    assert!(matches!(
        Tables::build(
            TablesSpec {
                services: vec![dsr],
                ..Default::default()
            },
            &Tables::empty()
        ),
        Err(BuildError::DsrPortChange(..))
    ));
}

#[test]
fn unchanged_maglev_tables_are_shared_and_changed_ones_rebuilt() {
    let mut a = svc(
        "10.0.0.1",
        80,
        80,
        vec![ep("10.1.0.1", 80, 1), ep("10.1.0.2", 80, 1)],
    );
    a.sel = Selection::Hash;
    let mut b = svc("10.0.0.2", 80, 80, vec![ep("10.1.0.1", 80, 1)]);
    b.sel = Selection::Hash;
    let spec = TablesSpec {
        services: vec![a.clone(), b.clone()],
        maglev_size: 251,
        ..Default::default()
    };
    let t1 = Tables::build(spec, &Tables::empty()).expect("valid");
    let mut a2 = a;
    a2.endpoints[1].state = EndpointState::Down;
    let spec2 = TablesSpec {
        services: vec![a2, b],
        maglev_size: 251,
        ..Default::default()
    };
    let t2 = Tables::build(spec2, &t1).expect("valid");
    let m = |t: &Tables, i: usize| t.services[i].maglev.clone().expect("hash rule");
    assert!(
        Arc::ptr_eq(&m(&t1, 1), &m(&t2, 1)),
        "untouched rule shares its table"
    );
    assert!(
        !Arc::ptr_eq(&m(&t1, 0), &m(&t2, 0)),
        "changed rule gets a new table"
    );
    assert!(
        m(&t2, 0).slots().iter().all(|&e| e == 0),
        "the down endpoint has no slots"
    );
}

/// Every index of a snapshot agrees with its services.
fn assert_consistent(t: &Tables) {
    let mut n_eps = 0;
    for (i, s) in t.services.iter().enumerate() {
        assert_eq!(s.index as usize, i);
        assert_eq!(t.service_index(&s.spec.key), Some(i));
        assert!(t.is_vip(s.vip));
        let found = t
            .lookup(
                s.vip,
                s.spec.key.proto.ip_proto_for(s.vip.is_v4()),
                s.spec.key.port_min,
            )
            .expect("its own port finds a rule");
        assert!(
            found.spec.key.port_min <= s.spec.key.port_min
                && s.spec.key.port_min <= found.spec.key.port_max
        );
        for (ei, e) in s.endpoints.iter().enumerate() {
            let (hs, he) = t.endpoint(e.id).expect("endpoint id resolves");
            assert_eq!(
                (hs.index, he.addr, he.port),
                (s.index, e.addr, e.port),
                "{ei}"
            );
            n_eps += 1;
        }
    }
    assert_eq!(
        t.endpoint_locs.iter().flatten().count(),
        n_eps,
        "no stale ids"
    );
    assert_eq!(
        t.by_vip.values().map(|v| v.len as usize).sum::<usize>(),
        t.services.len()
    );
    for (vk, slot) in &t.by_vip {
        let list = t.slot_list(slot);
        assert_eq!(list.len(), slot.len as usize, "list in bounds");
        assert!(list
            .iter()
            .all(|&i| t.services[i as usize].vip_key() == *vk));
        assert!(list
            .windows(2)
            .all(|w| t.services[w[0] as usize].spec.key < t.services[w[1] as usize].spec.key));
    }
    let shared: usize = t
        .by_vip
        .values()
        .filter(|v| v.len > 1)
        .map(|v| v.len as usize)
        .sum();
    assert_eq!(
        t.vip_lists.len() - t.vip_garbage,
        shared,
        "garbage counted right"
    );
    assert_eq!(
        t.vips.len(),
        t.services
            .iter()
            .map(|s| s.vip)
            .collect::<std::collections::HashSet<_>>()
            .len()
    );
}

#[test]
fn update_rebuilds_only_what_changed() {
    let spec = TablesSpec {
        services: (1..=5)
            .map(|i| {
                svc(
                    &format!("10.0.0.{i}"),
                    80,
                    80,
                    vec![ep("10.1.0.1", 80, 1), ep("10.1.0.2", 80, 1)],
                )
            })
            .collect(),
        ..Default::default()
    };
    let t1 = Tables::build(spec, &Tables::empty()).expect("valid");
    let changed = svc(
        "10.0.0.2",
        80,
        80,
        vec![ep("10.1.0.2", 80, 1), ep("10.1.0.3", 80, 1)],
    );
    let added = svc("10.0.0.9", 80, 80, vec![ep("10.1.0.9", 80, 1)]);
    let removed = t1.services[0].spec.key;
    let t2 = t1
        .update(
            &[
                ServiceChange::Upsert(changed.clone()),
                ServiceChange::Remove(removed),
                ServiceChange::Upsert(added),
            ],
            &[],
        )
        .expect("valid");
    assert_consistent(&t2);
    assert_eq!(t2.generation, t1.generation + 1);
    assert_eq!(t2.services.len(), 5);
    assert!(t2.service_index(&removed).is_none());
    let shared = t1.services[2..4]
        .iter()
        .filter(|a| t2.services.iter().any(|b| Arc::ptr_eq(a, b)))
        .count();
    assert_eq!(shared, 2, "untouched rules are shared, not rebuilt");
    let old = &t1.services[1];
    let new = &t2.services[t2.service_index(&changed.key).expect("kept")];
    assert_eq!(
        new.endpoints[0].id, old.endpoints[1].id,
        "surviving endpoint keeps its id"
    );
    assert_eq!(
        new.endpoints[0].id_since, t1.generation,
        "and the generation it got it in"
    );
    assert_eq!(
        new.endpoints[1].id_since, t2.generation,
        "a new endpoint's id dates from this step"
    );
    assert!(new.endpoints[0].holds_flow_of(t1.generation as u32));
    assert!(!new.endpoints[1].holds_flow_of(t1.generation as u32));
    assert!(new.endpoints[1].holds_flow_of(t2.generation as u32));
    let freed = [
        t1.services[0].endpoints[0].id,
        t1.services[0].endpoints[1].id,
        old.endpoints[0].id,
    ];
    assert!(
        t2.services
            .iter()
            .flat_map(|s| &s.endpoints)
            .all(|e| !freed.contains(&e.id)),
        "ids freed in this step are not handed out in it"
    );
    // An overlap is refused and the previous snapshot is untouched.
    let err = t2
        .update(
            &[ServiceChange::Upsert(svc(
                "10.0.0.3",
                70,
                90,
                vec![ep("10.1.0.1", 0, 1)],
            ))],
            &[],
        )
        .expect_err("overlap");
    assert!(matches!(err, BuildError::OverlappingService(..)), "{err}");
    assert_consistent(&t2);
}

#[test]
fn many_rules_on_one_vip_survive_churn_of_their_list() {
    // 200 ports on one VIP: every add/remove rewrites the VIP's list, so
    // the list storage is compacted many times along the way.
    let spec = TablesSpec {
        services: (0..200)
            .map(|p| svc("10.0.0.1", 1000 + p, 1000 + p, vec![ep("10.1.0.1", 0, 1)]))
            .collect(),
        ..Default::default()
    };
    let mut t = Tables::build(spec, &Tables::empty()).expect("valid");
    assert_consistent(&t);
    for round in 0..300u16 {
        let gone = 1000 + (round * 7) % 200;
        let key = t.services[t
            .lookup(
                Ip16::from("10.0.0.1".parse::<IpAddr>().expect("ip")),
                6,
                gone,
            )
            .expect("present")
            .index as usize]
            .spec
            .key;
        t = t
            .update(&[ServiceChange::Remove(key)], &[])
            .expect("remove");
        assert!(t.lookup(key.vip.into(), 6, gone).is_none());
        t = t
            .update(
                &[ServiceChange::Upsert(svc(
                    "10.0.0.1",
                    gone,
                    gone,
                    vec![ep("10.1.0.2", 0, 1)],
                ))],
                &[],
            )
            .expect("add back");
        assert_consistent(&t);
    }
    assert!(t.vip_lists.len() <= 2 * 200 + 64, "garbage is collected");
}

#[test]
fn full_build_finds_overlaps_across_blocks_in_between() {
    let mut a = svc("10.0.0.1", 80, 90, vec![ep("10.1.0.1", 0, 1)]);
    let mut x = svc("10.0.0.1", 85, 85, vec![ep("10.1.0.1", 0, 1)]);
    let b = svc("10.0.0.1", 86, 86, vec![ep("10.1.0.1", 0, 1)]);
    a.key.block = 0;
    x.key.block = 1;
    let spec = TablesSpec {
        services: vec![a, x, b],
        ..Default::default()
    };
    assert!(matches!(
        Tables::build(spec, &Tables::empty()),
        Err(BuildError::OverlappingService(..))
    ));
}

mod prop {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// (vip, port_min, port_max, block, remove?, endpoints (addr, port, down?)).
    type Change = (u8, u16, u16, u8, bool, Vec<(u8, u16, bool)>);

    fn change() -> impl Strategy<Value = Change> {
        (
            0u8..3,
            prop_oneof![Just(80u16), Just(81), Just(1000)],
            prop_oneof![Just(0u16), Just(85), Just(1005)],
            0u8..2,
            any::<bool>(),
            proptest::collection::vec(
                (0u8..5, prop_oneof![Just(0u16), Just(80)], any::<bool>()),
                0..4,
            ),
        )
    }

    proptest! {
        /// Any sequence of incremental updates yields a consistent snapshot
        /// equal to a full build of the same rules, accepts exactly what a
        /// full build accepts, and keeps surviving endpoints' ids.
        #[test]
        fn update_agrees_with_full_build(steps in proptest::collection::vec(proptest::collection::vec(change(), 1..4), 1..25)) {
            let mut model: BTreeMap<ServiceKey, ServiceSpec> = BTreeMap::new();
            let mut t = Tables::build(TablesSpec { maglev_size: 251, ..Default::default() }, &Tables::empty()).expect("empty");
            for step in steps {
                let mut next = model.clone();
                let mut changes = Vec::new();
                let mut touched = std::collections::HashSet::new();
                for (vip, pmin, pmax, block, remove, eps) in step {
                    let mut s = svc(&format!("10.0.0.{vip}"), pmin, pmin.max(pmax), vec![]);
                    s.key.block = u32::from(block);
                    if !touched.insert(s.key) {
                        continue;
                    }
                    if remove {
                        next.remove(&s.key);
                        changes.push(ServiceChange::Remove(s.key));
                    } else {
                        s.sel = if eps.len() % 2 == 0 { Selection::Hash } else { Selection::RoundRobin };
                        s.endpoints = eps.iter().map(|&(a, p, down)| EndpointSpec {
                            addr: format!("10.1.0.{a}").parse().expect("ip"),
                            port: p,
                            weight: 1,
                            state: if down { EndpointState::Down } else { EndpointState::Active },
                        }).collect();
                        next.insert(s.key, s.clone());
                        changes.push(ServiceChange::Upsert(s));
                    }
                }
                let full = Tables::build(TablesSpec { services: next.values().cloned().collect(), maglev_size: 251, ..Default::default() }, &t);
                match t.update(&changes, &[]) {
                    Err(_) => prop_assert!(full.is_err(), "update refused what a full build takes"),
                    Ok(u) => {
                        let full = full.expect("a full build takes what update takes");
                        assert_consistent(&u);
                        let spec = TablesSpec { services: next.values().cloned().collect(), maglev_size: 251, ..Default::default() };
                        prop_assert!(u.matches(&spec));
                        prop_assert_eq!(u.services.len(), full.services.len());
                        for s in u.services.iter() {
                            let f = &full.services[full.service_index(&s.spec.key).expect("same rules")];
                            prop_assert_eq!(&s.schedule, &f.schedule);
                            prop_assert_eq!(s.maglev.as_ref().map(|m| m.slots().to_vec()), f.maglev.as_ref().map(|m| m.slots().to_vec()));
                            if let Some(o) = t.service_index(&s.spec.key).map(|i| &t.services[i]) {
                                for e in &s.endpoints {
                                    if let Some(p) = o.endpoints.iter().find(|p| p.addr == e.addr && p.port == e.port) {
                                        prop_assert_eq!(p.id, e.id, "surviving endpoint keeps its id");
                                        prop_assert_eq!(p.id_since, e.id_since, "and its date");
                                    }
                                }
                            }
                        }
                        t = u;
                        model = next;
                    }
                }
            }
        }
    }
}

mod prop_apply {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// (vip, port_min, port_max, remove?, endpoints (addr, port)).
    type Change = (u8, u16, u16, bool, Vec<(u8, u16)>);

    fn change() -> impl Strategy<Value = Change> {
        (
            0u8..3,
            prop_oneof![Just(80u16), Just(81), Just(1000)],
            prop_oneof![Just(0u16), Just(85), Just(1005)],
            any::<bool>(),
            proptest::collection::vec((0u8..5, prop_oneof![Just(0u16), Just(80)]), 0..4),
        )
    }

    fn to_change(c: &Change) -> ServiceChange {
        let (vip, pmin, pmax, remove, eps) = c;
        let mut s = svc(&format!("10.0.0.{vip}"), *pmin, (*pmin).max(*pmax), vec![]);
        if *remove {
            return ServiceChange::Remove(s.key);
        }
        s.sel = if eps.len() % 2 == 0 {
            Selection::Hash
        } else {
            Selection::RoundRobin
        };
        s.endpoints = eps
            .iter()
            .map(|&(a, p)| ep(&format!("10.1.0.{a}"), p, 1))
            .collect();
        ServiceChange::Upsert(s)
    }

    proptest! {
        /// A step of single changes (a group commit): each change is taken
        /// or refused on its own — exactly when a full build of the rules
        /// so far plus it would take it — a refused one leaves the working
        /// snapshot as it was, and the finished snapshot equals a full
        /// build, with no id of the step's start reused for another endpoint.
        #[test]
        fn applied_changes_are_each_whole_or_nothing(
            start in proptest::collection::vec(change(), 0..6),
            step in proptest::collection::vec(change(), 1..12),
        ) {
            let size = 251;
            let mut model: BTreeMap<ServiceKey, ServiceSpec> = BTreeMap::new();
            let mut t0 = Tables::build(TablesSpec { maglev_size: size, ..Default::default() }, &Tables::empty()).expect("empty");
            for c in &start {
                if let Ok(t) = t0.update(&[to_change(c)], &[]) {
                    t0 = t;
                }
            }
            for s in &t0.services {
                model.insert(s.spec.key, s.spec.clone());
            }
            let spec_of = |m: &BTreeMap<ServiceKey, ServiceSpec>| TablesSpec {
                services: m.values().cloned().collect(),
                maglev_size: size,
                ..Default::default()
            };
            let mut u = t0.begin_update();
            for c in &step {
                let c = to_change(c);
                let mut next = model.clone();
                match &c {
                    ServiceChange::Remove(k) => { next.remove(k); }
                    ServiceChange::Upsert(s) => { next.insert(s.key, s.clone()); }
                }
                let full_ok = Tables::build(spec_of(&next), &t0).is_ok();
                match u.apply(&c, &[]) {
                    Ok(()) => {
                        prop_assert!(full_ok, "apply took what a full build refuses: {:?}", c);
                        model = next;
                    }
                    Err(_) => prop_assert!(!full_ok, "apply refused what a full build takes: {:?}", c),
                }
                prop_assert!(u.tables().matches(&spec_of(&model)), "working snapshot is the accepted rules");
            }
            let t = u.finish();
            assert_consistent(&t);
            prop_assert_eq!(t.generation, t0.generation + 1);
            prop_assert!(t.matches(&spec_of(&model)));
            for s in t.services.iter() {
                for e in &s.endpoints {
                    if let Some((os, oe)) = t0.endpoint(e.id) {
                        prop_assert!(
                            os.spec.key == s.spec.key && oe.addr == e.addr && oe.port == e.port,
                            "id {} moved to another endpoint within one step", e.id
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn publish_swaps_what_load_sees() {
    let h = TablesHandle::new();
    assert_eq!(h.load().generation, 0);
    let t = Tables::build(TablesSpec::default(), &h.current()).expect("valid");
    h.publish(t);
    assert_eq!(h.load().generation, 1);
}
