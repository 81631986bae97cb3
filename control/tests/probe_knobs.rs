//! xlb's two probe knobs beside loxilb's (issue 22): `probeTimeout` and
//! `activeReTries` on probe entries, `probeReplyTimeout` and
//! `probeActiveRetries` on monitored rules. Absent they change nothing (GET
//! prints loxilb's objects); set they come back as posted; bad values are a
//! 400 naming the field, and leave the state as it was.

mod common;

use common::{handler_error, Harness, SUCCESS};
use serde_json::{json, Value};

const EP: &str = "/netlox/v1/config/endpoint";
const EP_ALL: &str = "/netlox/v1/config/endpoint/all";
const LB: &str = "/netlox/v1/config/loadbalancer";
const LB_ALL: &str = "/netlox/v1/config/loadbalancer/all";

fn entry(extra: Value) -> String {
    let mut e = json!({"hostName": "10.0.0.5", "probeType": "tcp", "probePort": 6443});
    if let (Some(m), Value::Object(x)) = (e.as_object_mut(), extra) {
        m.extend(x);
    }
    e.to_string()
}

fn monitored_rule(extra: Value) -> String {
    let mut sa = json!({"externalIP": "192.0.2.80", "port": 6443, "protocol": "tcp",
        "mode": 2, "Monitor": true, "probeTimeout": 1});
    if let (Some(m), Value::Object(x)) = (sa.as_object_mut(), extra) {
        m.extend(x);
    }
    json!({"serviceArguments": sa, "endpoints": [
        {"endpointIP": "10.0.0.11", "targetPort": 6443, "weight": 1},
        {"endpointIP": "10.0.0.12", "targetPort": 6443, "weight": 1}]})
    .to_string()
}

fn entries(v: &Value) -> Vec<Value> {
    v["Attr"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn absent_knobs_print_loxilbs_object_and_set_ones_come_back() {
    let h = Harness::new();
    let r = h.post(EP, &entry(json!({"probeDuration": 10}))).await;
    assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
    let all = h.get(EP_ALL).await.json();
    let e = &entries(&all)[0];
    assert!(
        e.get("probeTimeout").is_none() && e.get("activeReTries").is_none(),
        "loxilb's object when unset: {e}"
    );

    let r = h
        .post(
            EP,
            &entry(json!({"probeDuration": 1, "probeTimeout": 0.5, "activeReTries": 5})),
        )
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
    let e = &entries(&h.get(EP_ALL).await.json())[0];
    assert_eq!(e["probeTimeout"], 0.5);
    assert_eq!(e["activeReTries"], 5);
    assert_eq!(e["probeDuration"], 1);

    // Whole seconds come back whole; fields in go-swagger's (sorted) order.
    let r = h
        .post(
            EP,
            &entry(json!({"probeDuration": 10, "probeTimeout": 5, "activeReTries": 1})),
        )
        .await;
    assert_eq!(r.status, 200);
    let body = h.get(EP_ALL).await.body;
    assert!(body.contains(r#""probeTimeout":5,"#), "{body}");
    assert!(
        body.starts_with(r#"{"Attr":[{"activeReTries":1,"#),
        "{body}"
    );

    // Posting again without them clears them.
    h.post(EP, &entry(json!({"probeDuration": 10}))).await;
    let e = &entries(&h.get(EP_ALL).await.json())[0];
    assert!(e.get("probeTimeout").is_none() && e.get("activeReTries").is_none());
}

#[tokio::test]
async fn bad_entry_knobs_are_a_400_naming_the_field_and_change_nothing() {
    let h = Harness::new();
    h.post(
        EP,
        &entry(json!({"probeDuration": 2, "probeTimeout": 1, "activeReTries": 3})),
    )
    .await;
    let before = h.snapshot().await;
    let cases = [
        (
            json!({"probeDuration": 2, "probeTimeout": -1}),
            "probeTimeout",
        ),
        (
            json!({"probeDuration": 2, "probeTimeout": 0}),
            "probeTimeout",
        ),
        (
            json!({"probeDuration": 2, "probeTimeout": 2}),
            "probeTimeout",
        ),
        (
            json!({"probeDuration": 2, "probeTimeout": 2.5}),
            "probeTimeout",
        ),
        // probeDuration's default (60 s) bounds it too.
        (json!({"probeTimeout": 60}), "probeTimeout"),
        (
            json!({"probeDuration": 2, "probeTimeout": "1"}),
            "probeTimeout",
        ),
        (
            json!({"probeDuration": 2, "probeTimeout": true}),
            "probeTimeout",
        ),
        (json!({"activeReTries": 0}), "activeReTries"),
        (json!({"activeReTries": -3}), "activeReTries"),
        (json!({"activeReTries": 1.5}), "activeReTries"),
        (json!({"activeReTries": 101}), "activeReTries"),
        (json!({"activeReTries": "5"}), "activeReTries"),
        (json!({"activeReTries": [5]}), "activeReTries"),
    ];
    for (extra, field) in cases {
        let r = h.post(EP, &entry(extra.clone())).await;
        assert_eq!(r.status, 400, "{extra}: {}", r.body);
        assert!(r.body.contains(field), "{extra}: {}", r.body);
        assert_eq!(h.snapshot().await, before, "{extra} changed the state");
    }
    // The handler's answer is loxilb's shape with the reason in `result`.
    let r = h
        .post(EP, &entry(json!({"probeDuration": 2, "probeTimeout": 2})))
        .await;
    assert_eq!(
        r.body,
        handler_error(
            400,
            "host-args error: probeTimeout 2 must be below probeDuration (2 s)"
        )
    );
}

#[tokio::test]
async fn monitored_rules_take_the_knobs_for_their_endpoints() {
    let h = Harness::new();
    let r = h
        .post(
            LB,
            &monitored_rule(json!({"probeReplyTimeout": 0.5, "probeActiveRetries": 5})),
        )
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
    let lb = h.get(LB_ALL).await.json();
    let sa = &lb["lbAttr"][0]["serviceArguments"];
    assert_eq!(sa["probeReplyTimeout"], 0.5);
    assert_eq!(sa["probeActiveRetries"], 5);
    let eps = entries(&h.get(EP_ALL).await.json());
    assert_eq!(eps.len(), 2);
    for e in &eps {
        assert_eq!(e["probeTimeout"], 0.5, "{e}");
        assert_eq!(e["activeReTries"], 5, "{e}");
        assert_eq!(e["probeDuration"], 1, "{e}");
    }
    // Changing only the knobs is an update in place, not a duplicate.
    let r = h
        .post(LB, &monitored_rule(json!({"probeActiveRetries": 3})))
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
    let eps = entries(&h.get(EP_ALL).await.json());
    assert!(
        eps.iter()
            .all(|e| e["activeReTries"] == 3 && e.get("probeTimeout").is_none()),
        "{eps:?}"
    );
    let sa = &h.get(LB_ALL).await.json()["lbAttr"][0]["serviceArguments"];
    assert!(sa.get("probeReplyTimeout").is_none(), "{sa}");

    let before = h.snapshot().await;
    for (extra, field) in [
        (json!({"probeReplyTimeout": 1}), "probeReplyTimeout"),
        (json!({"probeReplyTimeout": 0}), "probeReplyTimeout"),
        (json!({"probeReplyTimeout": -0.5}), "probeReplyTimeout"),
        (json!({"probeReplyTimeout": "fast"}), "probeReplyTimeout"),
        (json!({"probeActiveRetries": 0}), "probeActiveRetries"),
        (json!({"probeActiveRetries": 2.5}), "probeActiveRetries"),
        (json!({"probeActiveRetries": "3"}), "probeActiveRetries"),
    ] {
        let r = h.post(LB, &monitored_rule(extra.clone())).await;
        assert_eq!(r.status, 400, "{extra}: {}", r.body);
        assert!(r.body.contains(field), "{extra}: {}", r.body);
        assert_eq!(h.snapshot().await, before, "{extra} changed the state");
    }
}

#[tokio::test]
async fn rules_without_the_knobs_print_as_in_loxilb() {
    let h = Harness::new();
    assert_eq!(h.post(LB, &monitored_rule(json!({}))).await.status, 200);
    let body = h.get(LB_ALL).await.body;
    assert!(
        !body.contains("probeReplyTimeout") && !body.contains("probeActiveRetries"),
        "{body}"
    );
    let body = h.get(EP_ALL).await.body;
    assert!(
        !body.contains(r#""probeTimeout""#) && !body.contains(r#""activeReTries""#),
        "{body}"
    );
}
