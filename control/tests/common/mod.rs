//! Test harness: the API router over an in-memory dataplane, driven with
//! `tower::ServiceExt::oneshot`.
#![allow(dead_code)]

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::http::{HeaderMap, Request};
use axum::Router;
use tower::ServiceExt;
use xlb_control::api::{router, Api};
use xlb_control::controller::{ControlState, Controller};
use xlb_control::dataplane::{StaticNet, StaticView, Unattached};
use xlb_dataplane::tables::TablesHandle;

/// A response: status, headers, body text.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("JSON body")
    }
}

pub struct Harness {
    pub api: Arc<Api>,
    pub router: Router,
    pub handle: TablesHandle,
    pub view: Arc<StaticView>,
    pub controller: Controller,
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with(|a| a)
    }

    pub fn with(f: impl FnOnce(Api) -> Api) -> Harness {
        Harness::with_state(|_| {}, f)
    }

    /// A harness whose state `init` prepared before the controller took it
    /// (as `xlb run` loads its config files), with an API that `f` finished.
    pub fn with_state(init: impl FnOnce(&mut ControlState), f: impl FnOnce(Api) -> Api) -> Harness {
        let handle = TablesHandle::new();
        let view = Arc::new(StaticView::new());
        let mut state = ControlState::new(
            Arc::new(Unattached::new(handle.clone())),
            Arc::new(StaticNet::default()),
        );
        init(&mut state);
        let controller = Controller::start(state).expect("controller thread");
        let api = Arc::new(f(Api::new(controller.handle(), view.clone())));
        Harness {
            router: router(api.clone()),
            api,
            handle,
            view,
            controller,
        }
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        content_type: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(ct) = content_type {
            b = b.header("content-type", ct);
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .body(body.map_or_else(Body::empty, |s| Body::from(s.to_string())))
            .expect("request");
        let resp = self.router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = to_bytes(resp.into_body(), usize::MAX).await.expect("body");
        Resp {
            status,
            headers,
            body: String::from_utf8(bytes.to_vec()).expect("utf-8"),
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, None, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: &str) -> Resp {
        self.send("POST", path, Some(body), Some("application/json"), &[])
            .await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send("DELETE", path, None, None, &[]).await
    }

    pub fn generation(&self) -> u64 {
        self.handle.current().generation
    }

    /// Everything a rejection must leave alone.
    pub async fn snapshot(&self) -> (String, String, String, u64) {
        (
            self.get("/netlox/v1/config/loadbalancer/all").await.body,
            self.get("/netlox/v1/config/endpoint/all").await.body,
            self.get("/netlox/v1/config/cistate/all").await.body,
            self.generation(),
        )
    }
}

pub const SUCCESS: &str = r#"{"result":"Success"}"#;

pub fn handler_error(code: u16, result: &str) -> String {
    let message = match code {
        400 => "Malformed arguments for API call",
        403 => "Capacity insufficient",
        404 => "Resource not found",
        409 => "Resource conflict: Resource already exists OR dependency not found",
        _ => "Internal service error",
    };
    serde_json::json!({"code": code, "fields": null, "message": message, "result": result})
        .to_string()
}

/// A minimal valid rule body.
pub fn rule(vip: &str, port: u16, eps: &[(&str, u16)]) -> String {
    xlb_testkit::fixtures::Rule::new(vip, port).eps(eps).body()
}
