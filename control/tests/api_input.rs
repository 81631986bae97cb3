//! Input limits of the REST API: bounded names and bodies, unicast VIPs and
//! endpoints only, paths taken literally, an empty log level refused, and
//! audit lines that carry the client and cannot be forged. Every rejection
//! leaves the state as it was.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{handler_error, rule, Harness, SUCCESS};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LB: &str = "/netlox/v1/config/loadbalancer";
const EP: &str = "/netlox/v1/config/endpoint";

#[tokio::test]
async fn names_and_bodies_are_bounded() {
    let h = Harness::new();
    let before = h.snapshot().await;
    // A name a URL can still carry: 255 bytes is the most.
    let name = "n".repeat(256);
    let mut body: serde_json::Value =
        serde_json::from_str(&rule("192.0.2.1", 80, &[("10.0.0.1", 8080)])).expect("json");
    body["serviceArguments"]["name"] = json!(name);
    let r = h.post(LB, &body.to_string()).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            422,
            r#"{"code":603,"message":"serviceArguments.name in body should be at most 255 chars long"}"#
        )
    );
    let probe = json!({"hostName": "10.0.0.1", "name": name, "probeType": "ping"});
    let r = h.post(EP, &probe.to_string()).await;
    assert_eq!(r.status, 422, "{}", r.body);
    let probe = json!({"hostName": "10.0.0.1", "name": "p", "probeType": "http", "probeReq": "x".repeat(1025)});
    let r = h.post(EP, &probe.to_string()).await;
    assert_eq!(r.status, 422, "{}", r.body);
    let r = h
        .post(
            "/netlox/v1/config/cistate",
            &json!({"instance": name, "state": "MASTER"}).to_string(),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    // 3.9 MB under a key nobody reads.
    let mut big: serde_json::Value =
        serde_json::from_str(&rule("192.0.2.1", 80, &[("10.0.0.1", 8080)])).expect("json");
    big["padding"] = json!("x".repeat(3_900_000));
    let r = h.post(LB, &big.to_string()).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            413,
            r#"{"code":413,"message":"request body larger than 262144 bytes"}"#
        )
    );
    assert_eq!(h.snapshot().await, before, "a rejection changed the state");
    // At the bound, accepted.
    body["serviceArguments"]["name"] = json!("n".repeat(255));
    let r = h.post(LB, &body.to_string()).await;
    assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
}

#[tokio::test]
async fn vips_and_endpoints_must_be_unicast() {
    let h = Harness::new();
    let before = h.snapshot().await;
    for (vip, kind) in [
        ("255.255.255.255", "broadcast"),
        ("224.0.0.1", "multicast"),
        ("127.0.0.1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("169.254.0.9", "link-local"),
    ] {
        let r = h.post(LB, &rule(vip, 80, &[("10.0.0.1", 8080)])).await;
        let want = format!(
            "malformed-service error: externalIP {vip} is a {kind} address; a VIP must be a unicast address"
        );
        assert_eq!(
            (r.status, r.body),
            (400, handler_error(400, &want)),
            "{vip}"
        );
        let r = h.post(LB, &rule("192.0.2.1", 80, &[(vip, 8080)])).await;
        let want = format!(
            "malformed-endpoint error: endpointIP {vip} is a {kind} address; an endpoint must be a unicast address"
        );
        assert_eq!(
            (r.status, r.body),
            (400, handler_error(400, &want)),
            "{vip}"
        );
    }
    for (vip, ep) in [
        ("::", "2001:db8::1"),
        ("::1", "2001:db8::1"),
        ("ff02::1", "2001:db8::1"),
        ("fe80::1", "2001:db8::1"),
        ("::ffff:127.0.0.1", "2001:db8::1"),
        ("2001:db8::100", "fe80::5"),
        ("2001:db8::100", "ff05::2"),
    ] {
        let r = h.post(LB, &rule(vip, 80, &[(ep, 8080)])).await;
        assert_eq!(r.status, 400, "{vip} {ep}: {}", r.body);
        assert!(r.body.contains("must be a unicast address"), "{}", r.body);
    }
    assert_eq!(h.snapshot().await, before, "a rejection changed the state");
}

#[tokio::test]
async fn doubled_slashes_name_no_route() {
    let h = Harness::new();
    let r = h
        .post(LB, &rule("192.0.2.1", 80, &[("10.0.0.1", 8080)]))
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
    let before = h.snapshot().await;
    for path in [
        "/netlox/v1//config//loadbalancer//all",
        "/netlox/v1/config/loadbalancer//all",
        "/netlox/v1//config/loadbalancer/all",
    ] {
        let r = h.delete(path).await;
        assert_eq!(r.status, 404, "{path}: {}", r.body);
    }
    assert_eq!(h.snapshot().await, before, "a doubled slash deleted rules");
    let r = h.delete("/netlox/v1/config/loadbalancer/all").await;
    assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
}

#[tokio::test]
async fn an_empty_log_level_is_refused() {
    let h = Harness::new();
    let r = h
        .post("/netlox/v1/config/params", r#"{"logLevel":""}"#)
        .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            422,
            r#"{"code":606,"message":"logLevel in body should be one of [trace debug info error warning notice critical emergency alert]"}"#
        )
    );
    let r = h.get("/netlox/v1/config/params").await;
    assert_eq!(r.body, r#"{"logLevel":"info"}"#);
}

/// Log lines written by the API, captured.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Audit lines name the client, and a client cannot break a line or send
/// terminal escapes into it.
#[tokio::test]
async fn audit_lines_carry_the_client_and_are_escaped() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    // Global: a scoped one races with the other tests over the callsites'
    // cached interest. Their lines land here too; they carry no client.
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let h = Harness::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(xlb_control::api::server::serve(
        listener,
        None,
        xlb_control::api::router(h.api.clone()),
        xlb_control::api::server::Limits::for_fd_limit(1024),
        async {
            let _ = stopped.await;
        },
    ));
    let s = tokio::net::TcpSocket::new_v4().expect("socket");
    s.bind(SocketAddr::from(([127, 0, 0, 7], 0))).expect("bind");
    let mut c = s.connect(addr).await.expect("connect");
    let body = rule("192.0.2.1", 80, &[("10.0.0.1", 8080)]);
    let req = format!(
        "POST {LB} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    c.write_all(req.as_bytes()).await.expect("send");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_string(&mut answer))
        .await
        .expect("in time")
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let _ = stop.send(());
    let _ = served.await;

    let text = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
    assert!(
        text.lines()
            .any(|l| l.contains("api change applied") && l.contains("client=127.0.0.7:")),
        "no audit line with the client in {text:?}"
    );

    // A string with a newline and an ANSI escape stays on one line, escaped.
    let forged = "x\n2026-01-01T00:00:00Z  INFO forged \u{1b}[31mred";
    let shown = xlb_control::api::LogSafe(forged).to_string();
    assert!(
        !shown.contains('\n') && !shown.contains('\u{1b}'),
        "{shown}"
    );
    assert_eq!(
        shown,
        "x\\n2026-01-01T00:00:00Z  INFO forged \\u{1b}[31mred"
    );
}
