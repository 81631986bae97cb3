//! Kubernetes' probe paths: `/healthz` answers while the process is alive,
//! `/readyz` 200 only while every readiness check passes (503 naming the
//! failing one otherwise), both without the API token.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::Harness;

#[tokio::test]
async fn healthz_and_readyz_follow_the_checks_without_a_token() {
    let h = Harness::with(|a| a.with_token(Some("s3cret".into())));
    let r = h.get("/healthz").await;
    assert_eq!((r.status, r.content_type()), (200, "application/json"));
    assert_eq!(r.json()["status"], "alive");
    // No checks yet: ready.
    assert_eq!(h.get("/readyz").await.status, 200);

    let attached = Arc::new(AtomicBool::new(true));
    let seen = attached.clone();
    h.api.readiness().add("config", Box::new(|| Ok(())));
    h.api.readiness().add(
        "xdp",
        Box::new(move || {
            if seen.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err("no XDP program on lb0".into())
            }
        }),
    );
    let r = h.get("/readyz").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["ready"], true);

    attached.store(false, Ordering::Relaxed);
    let r = h.get("/readyz").await;
    assert_eq!(r.status, 503, "{}", r.body);
    let v = r.json();
    assert_eq!(v["ready"], false);
    assert_eq!(v["checks"][0]["ok"], true);
    assert_eq!(v["checks"][1]["name"], "xdp");
    assert_eq!(v["checks"][1]["reason"], "no XDP program on lb0");
    // Alive all the same.
    assert_eq!(h.get("/healthz").await.status, 200);

    attached.store(true, Ordering::Relaxed);
    assert_eq!(h.get("/readyz").await.status, 200);
    h.api.readiness().set_stopping();
    assert_eq!(h.get("/readyz").await.status, 503);

    // GET only; other paths keep needing the token; the probes are not
    // under the API's base path.
    let r = h.send("POST", "/readyz", None, None, &[]).await;
    assert_eq!(r.status, 405);
    assert_eq!(
        h.get("/netlox/v1/config/loadbalancer/all").await.status,
        401
    );
    assert_eq!(h.get("/netlox/v1/readyz").await.status, 404);
}
