//! Group commit of rule requests: requests that queue up while the control
//! state is busy are applied together as one snapshot, yet each is checked,
//! answered and (if refused) left out exactly as if it had come alone.

mod common;

use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::http::Request;
use axum::Router;
use common::{handler_error, rule, Harness, SUCCESS};
use tower::ServiceExt;

async fn send(
    router: Router,
    method: &'static str,
    path: String,
    body: Option<String>,
) -> (u16, String) {
    let mut b = Request::builder().method(method).uri(path);
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    let req = b
        .body(body.map_or_else(Body::empty, Body::from))
        .expect("request");
    let resp = router.oneshot(req).await.expect("infallible");
    let status = resp.status().as_u16();
    let bytes = to_bytes(resp.into_body(), usize::MAX).await.expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

const LB: &str = "/netlox/v1/config/loadbalancer";

#[tokio::test]
async fn queued_requests_make_one_snapshot_and_are_answered_one_by_one() {
    let h = Harness::new();
    let r = h
        .post(LB, &rule("192.0.2.1", 80, &[("10.0.0.1", 8080)]))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let g0 = h.generation();

    // Hold the controller (as a long table build would) while requests arrive.
    let held = h.api.control().pause();
    let requests: Vec<(&'static str, String, Option<String>)> = vec![
        // new rule: taken
        ("POST", LB.into(), Some(rule("192.0.2.2", 80, &[("10.0.0.2", 8080)]))),
        // the first rule again, unchanged: 409, as alone
        ("POST", LB.into(), Some(rule("192.0.2.1", 80, &[("10.0.0.1", 8080)]))),
        // overlaps the rule two requests earlier in this same group: refused
        (
            "POST",
            LB.into(),
            Some(
                serde_json::json!({
                    "serviceArguments": {"externalIP": "192.0.2.2", "port": 70, "portMax": 90, "protocol": "tcp"},
                    "endpoints": [{"endpointIP": "10.0.0.3", "targetPort": 0, "weight": 1}],
                })
                .to_string(),
            ),
        ),
        // no such rule: 404
        ("DELETE", format!("{LB}/externalipaddress/192.0.2.9/port/80/protocol/tcp"), None),
        // another new rule: taken
        ("POST", LB.into(), Some(rule("192.0.2.3", 80, &[("10.0.0.4", 8080)]))),
        // the rule that existed before: deleted
        ("DELETE", format!("{LB}/externalipaddress/192.0.2.1/port/80/protocol/tcp"), None),
    ];
    let n = requests.len();
    let mut tasks = Vec::new();
    for (m, p, b) in requests {
        tasks.push(tokio::spawn(send(h.router.clone(), m, p, b)));
        // Queue them in this order.
        let want = tasks.len();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while h.api.control().queued() < want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "request did not queue"
            );
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(h.api.control().queued(), n);
    assert_eq!(
        h.generation(),
        g0,
        "nothing applied while the state is held"
    );
    drop(held);

    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("request task"));
    }
    assert_eq!(answers[0], (200, SUCCESS.to_string()));
    assert_eq!(answers[1], (409, handler_error(409, "lbrule-exists error")));
    assert_eq!(answers[2].0, 400, "{}", answers[2].1);
    assert!(
        answers[2].1.contains("malformed-service error"),
        "{}",
        answers[2].1
    );
    assert_eq!(answers[3], (404, handler_error(404, "no-rule error")));
    assert_eq!(answers[4], (200, SUCCESS.to_string()));
    assert_eq!(answers[5], (200, SUCCESS.to_string()));

    assert_eq!(h.generation(), g0 + 1, "one snapshot for the whole group");
    assert_eq!(h.api.control().queued(), 0);
    let all = h.get(&format!("{LB}/all")).await.json();
    let mut vips: Vec<String> = all["lbAttr"]
        .as_array()
        .expect("list")
        .iter()
        .map(|r| {
            r["serviceArguments"]["externalIP"]
                .as_str()
                .expect("ip")
                .to_string()
        })
        .collect();
    vips.sort();
    assert_eq!(vips, ["192.0.2.2", "192.0.2.3"]);
    let t = h.handle.current();
    assert_eq!(t.services.len(), 2);
    for s in t.services.iter() {
        assert_eq!(
            s.spec.key.port_min, 80,
            "the refused range is not in the tables"
        );
    }
}

#[tokio::test]
async fn a_group_of_refused_requests_publishes_nothing() {
    let h = Harness::new();
    let r = h
        .post(LB, &rule("192.0.2.1", 80, &[("10.0.0.1", 8080)]))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let before = h.snapshot().await;
    let held = h.api.control().pause();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        tasks.push(tokio::spawn(send(
            h.router.clone(),
            "POST",
            LB.into(),
            Some(rule("192.0.2.1", 80, &[("10.0.0.1", 8080)])),
        )));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while h.api.control().queued() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "requests did not queue"
        );
        tokio::task::yield_now().await;
    }
    drop(held);
    for t in tasks {
        assert_eq!(t.await.expect("task").0, 409);
    }
    assert_eq!(
        h.snapshot().await,
        before,
        "refusals change nothing, not even the generation"
    );
}

#[tokio::test]
async fn a_request_withdrawn_before_it_is_applied_is_not_applied_later() {
    let h = Harness::new();
    let held = h.api.control().pause();
    let task = tokio::spawn(send(
        h.router.clone(),
        "POST",
        LB.into(),
        Some(rule("192.0.2.5", 80, &[("10.0.0.1", 8080)])),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while h.api.control().queued() < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "request did not queue"
        );
        tokio::task::yield_now().await;
    }
    // The client goes away: its handler is dropped.
    task.abort();
    let _ = task.await;
    assert_eq!(h.api.control().queued(), 0, "withdrawn from the queue");
    drop(held);
    let r = h
        .post(LB, &rule("192.0.2.6", 80, &[("10.0.0.1", 8080)]))
        .await;
    assert_eq!(r.status, 200);
    let t = h.handle.current();
    assert_eq!(t.services.len(), 1, "only the later request is applied");
    assert_eq!(t.services[0].spec.key.vip.to_string(), "192.0.2.6");
}
