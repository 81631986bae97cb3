//! REST API tests: every implemented path, with loxilb's statuses and bodies,
//! and the state left unchanged by every rejection.

mod common;

use common::{handler_error, rule, Harness, SUCCESS};
use serde_json::json;
use xlb_control::controller::{Command, ProbeStatus};
use xlb_control::dataplane::{CtEntry, WorkerStats};
use xlb_dataplane::pipeline::FastPathExit;
use xlb_dataplane::tables::{EndpointState, L4Proto};
use xlb_dataplane::DropReason;

const LB: &str = "/netlox/v1/config/loadbalancer";
const LB_ALL: &str = "/netlox/v1/config/loadbalancer/all";

/// kube-loxilb's create body, byte for byte the shape it sends.
const KUBE_LOXILB_BODY: &str = r#"{"serviceArguments":{"externalIP":"192.168.80.5","privateIP":"","port":80,"protocol":"tcp","sel":0,"mode":2,"BGP":false,"Monitor":true,"inactiveTimeOut":1800,"block":0,"managed":true,"probetype":"","probeport":0,"probereq":"","proberesp":"","name":"default_nginx:llb-inst0","proxyprotocolv2":false,"egress":false,"mtls_frontend":false,"mtls_backend":false},"secondaryIPs":[],"allowedSources":null,"endpoints":[{"endpointIP":"10.0.0.5","targetPort":30080,"weight":1,"state":"","counter":""}]}"#;

/// BEHAVIOUR.md's GET example, which the body above must produce.
const KUBE_LOXILB_GET: &str = r#"{"lbAttr":[{"allowedSources":null,"endpoints":[{"counter":"0:0","endpointIP":"10.0.0.5","state":"active","targetPort":30080,"weight":1}],"secondaryIPs":null,"serviceArguments":{"externalIP":"192.168.80.5","inactiveTimeOut":1800,"managed":true,"mode":2,"monitor":true,"name":"default_nginx:llb-inst0","port":80,"protocol":"tcp"}}]}"#;

#[tokio::test]
async fn kube_loxilb_call_sequence() {
    let h = Harness::new();
    let json_ct = |r: &common::Resp| assert_eq!(r.content_type(), "application/json");

    // 1. Liveness.
    let r = h.get("/netlox/v1").await;
    assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
    json_ct(&r);

    // 2. cistate.
    let r = h
        .post(
            "/netlox/v1/config/cistate",
            r#"{"instance":"llb-inst0","state":"MASTER","vip":"0.0.0.0"}"#,
        )
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
    json_ct(&r);
    let r = h.get("/netlox/v1/config/cistate/all").await;
    assert_eq!(
        r.body,
        r#"{"Attr":[{"instance":"llb-inst0","state":"MASTER","sync":null,"vip":"0.0.0.0"}]}"#
    );
    json_ct(&r);

    // 3. Create.
    let g0 = h.generation();
    let r = h.post(LB, KUBE_LOXILB_BODY).await;
    assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
    json_ct(&r);
    assert_eq!(
        h.generation(),
        g0 + 1,
        "one new snapshot per accepted change"
    );
    let r = h.get(LB_ALL).await;
    assert_eq!((r.status, r.body.as_str()), (200, KUBE_LOXILB_GET));
    json_ct(&r);
    let t = h.handle.current();
    assert_eq!(t.services.len(), 1);
    assert_eq!(t.services[0].spec.inactive_timeout_s, 1800);

    // Re-post (e.g. after kube-loxilb saw us restart): an "exist" error.
    let r = h.post(LB, KUBE_LOXILB_BODY).await;
    assert_eq!(r.status, 409);
    json_ct(&r);
    assert_eq!(r.body, handler_error(409, "lbrule-exists error"));
    assert!(r.json()["result"]
        .as_str()
        .expect("result")
        .contains("exist"));
    assert_eq!(h.generation(), g0 + 1);

    // 4. Endpoints change: the whole rule again, oper 0 replaces the list.
    let changed = KUBE_LOXILB_BODY.replace(
        r#""endpoints":[{"endpointIP":"10.0.0.5","targetPort":30080,"weight":1,"state":"","counter":""}]"#,
        r#""endpoints":[{"endpointIP":"10.0.0.6","targetPort":30080,"weight":1,"state":"","counter":""},{"endpointIP":"10.0.0.7","targetPort":30080,"weight":1,"state":"","counter":""}]"#,
    );
    assert_ne!(changed, KUBE_LOXILB_BODY);
    let r = h.post(LB, &changed).await;
    assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
    let got = h.get(LB_ALL).await.json();
    let eps: Vec<&str> = got["lbAttr"][0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| e["endpointIP"].as_str().expect("ip"))
        .collect();
    assert_eq!(eps, ["10.0.0.6", "10.0.0.7"]);
    assert_eq!(h.handle.current().services[0].endpoints.len(), 2);

    // 5. Service gone: DELETE with the rule as body and the query.
    let path = "/netlox/v1/config/loadbalancer/externalipaddress/192.168.80.5/port/80/protocol/tcp?bgp=false&block=0";
    let r = h
        .send(
            "DELETE",
            path,
            Some(&changed),
            Some("application/json"),
            &[],
        )
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
    json_ct(&r);
    let r = h.get(LB_ALL).await;
    assert_eq!(r.body, r#"{"lbAttr":[]}"#);
    assert!(h.handle.current().services.is_empty());
    let r = h
        .send(
            "DELETE",
            path,
            Some(&changed),
            Some("application/json"),
            &[],
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body, handler_error(404, "no-rule error"));
    json_ct(&r);
}

#[tokio::test]
async fn empty_get_answers_empty_lists() {
    let h = Harness::new();
    assert_eq!(h.get(LB_ALL).await.body, r#"{"lbAttr":[]}"#);
    assert_eq!(
        h.get("/netlox/v1/config/endpoint/all").await.body,
        r#"{"Attr":[]}"#
    );
    assert_eq!(
        h.get("/netlox/v1/config/conntrack/all").await.body,
        r#"{"ctAttr":[]}"#
    );
    assert_eq!(
        h.get("/netlox/v1/config/cistate/all").await.body,
        r#"{"Attr":[{"instance":"llb-inst0","state":"NOT_DEFINED","sync":null,"vip":"0.0.0.0"}]}"#
    );
}

/// Every rejection of a rule POST: status, exact body, nothing changed.
#[tokio::test]
async fn rule_rejections_change_nothing() {
    let h = Harness::new();
    assert_eq!(
        h.post(LB, &rule("192.0.2.1", 80, &[("10.0.0.1", 8080)]))
            .await
            .status,
        200
    );
    let before = h.snapshot().await;

    let sa = |extra: serde_json::Value| {
        let mut s = json!({"externalIP": "192.0.2.9", "port": 80, "protocol": "tcp"});
        for (k, v) in extra.as_object().expect("object") {
            s[k] = v.clone();
        }
        json!({"serviceArguments": s,
               "endpoints": [{"endpointIP": "10.0.0.1", "targetPort": 8080, "weight": 1}]})
        .to_string()
    };
    let eps = |n: usize| {
        let list: Vec<_> = (0..n)
            .map(|i| json!({"endpointIP": format!("10.0.1.{i}"), "targetPort": 80, "weight": 1}))
            .collect();
        json!({"serviceArguments": {"externalIP": "192.0.2.9", "port": 80, "protocol": "tcp"},
               "endpoints": list})
        .to_string()
    };
    let handler = |code: u16, result: &str| (code, handler_error(code, result));
    let framework =
        |code: u16, c: u16, msg: &str| (code, json!({"code": c, "message": msg}).to_string());

    let cases: Vec<(&str, String, (u16, String))> = vec![
        ("duplicate", rule("192.0.2.1", 80, &[("10.0.0.1", 8080)]), handler(409, "lbrule-exists error")),
        ("no endpoints", eps(0), handler(400, "endpoints-range error")),
        ("33 endpoints", eps(33), handler(400, "endpoints-range error")),
        ("bad VIP", sa(json!({"externalIP": "not-an-ip"})), handler(400, "malformed-service error")),
        ("no protocol", sa(json!({"protocol": ""})), handler(400, "malformed-proto error")),
        ("icmp with a port", sa(json!({"protocol": "icmp"})), handler(400, "malformed-service error")),
        ("icmp with a target port", sa(json!({"protocol": "icmp", "port": 0})), handler(400, "malformed-service error")),
        ("bad privateIP", sa(json!({"privateIP": "x"})), handler(400, "malformed-service privateIP error")),
        ("bad endpoint", json!({"serviceArguments": {"externalIP": "192.0.2.9", "port": 80, "protocol": "tcp"}, "endpoints": [{"endpointIP": "x", "targetPort": 80, "weight": 1}]}).to_string(), handler(400, "malformed-lbep error")),
        ("v6 endpoint behind a v4 VIP", json!({"serviceArguments": {"externalIP": "192.0.2.9", "port": 80, "protocol": "tcp"}, "endpoints": [{"endpointIP": "2001:db8::1", "targetPort": 80, "weight": 1}]}).to_string(), handler(400, "malformed-service nat46 error")),
        ("secondary IPs on tcp", json!({"serviceArguments": {"externalIP": "192.0.2.9", "port": 80, "protocol": "tcp"}, "secondaryIPs": [{"secondaryIP": "192.0.2.10"}], "endpoints": [{"endpointIP": "10.0.0.1", "targetPort": 80, "weight": 1}]}).to_string(), handler(400, "secondaryIP-args error")),
        ("tcp port 0", sa(json!({"port": 0})), handler(400, "malformed-service error: tcp rules need a port")),
        ("port out of range", sa(json!({"port": 70000})), handler(400, "malformed-service error: port 70000 out of range")),
        ("inverted range", sa(json!({"portMax": 10})), handler(400, "malformed-service error: portMax 10 is below port 80")),
        ("timeout too long", sa(json!({"inactiveTimeOut": 86401})), handler(400, "service-args error: inactiveTimeOut 86401 not in 0..=86400")),
        ("mode 4", sa(json!({"mode": 4})), handler(400, "unsupported error: mode 4 (full-proxy) is not supported by xlb")),
        ("mode 5", sa(json!({"mode": 5})), handler(400, "unsupported error: mode 5 (host-one-arm) is not supported by xlb")),
        ("sel 5", sa(json!({"sel": 5})), handler(400, "unsupported error: sel 5 (N2) is not supported by xlb")),
        ("sel 6", sa(json!({"sel": 6})), handler(400, "unsupported error: sel 6 (N3) is not supported by xlb")),
        ("http probe", sa(json!({"probetype": "http", "probeport": 80})), handler(400, "malformed-service-ptype error: http/https probes are only accepted through /config/endpoint")),
        ("https probe", sa(json!({"probetype": "https"})), handler(400, "malformed-service-ptype error: http/https probes are only accepted through /config/endpoint")),
        ("tcp probe without port", sa(json!({"probetype": "tcp"})), handler(400, "malformed-service-pport error")),
        ("ping probe with port", sa(json!({"probetype": "ping", "probeport": 9})), handler(400, "malformed-service-pport error")),
        ("none probe with port", sa(json!({"probetype": "none", "probeport": 9})), handler(400, "malformed-service-pport error")),
        ("proxy protocol on udp", sa(json!({"protocol": "udp", "proxyprotocolv2": true})), handler(400, "service-args error: proxy protocol is only for tcp")),
        ("proxy protocol", sa(json!({"proxyprotocolv2": true})), handler(400, "unsupported error: proxyprotocolv2 is not supported by xlb")),
        ("DSR port change", sa(json!({"mode": 3, "sel": 1})), handler(400, "malformed-service dsr-port error")),
        ("dsrIpip without a mode", sa(json!({"dsrIpip": true})), handler(400, "service-args error: dsrIpip (IPIP encapsulation) needs mode 3 (DSR), not mode 0")),
        ("dsrIpip with full NAT", sa(json!({"mode": 2, "dsrIpip": true})), handler(400, "service-args error: dsrIpip (IPIP encapsulation) needs mode 3 (DSR), not mode 2")),
        ("dsrIpip on an IPv6 VIP",
         json!({"serviceArguments": {"externalIP": "2001:db8::9", "port": 80, "protocol": "tcp", "mode": 3, "sel": 1, "dsrIpip": true},
                "endpoints": [{"endpointIP": "2001:db8:1::1", "targetPort": 80, "weight": 1}]}).to_string(),
         handler(400, "service-args error: dsrIpip (IPIP encapsulation) is only available for an IPv4 VIP")),
        ("probe port without type", sa(json!({"probeport": 80})), handler(400, "malformed-service-pport error")),
        ("security", sa(json!({"security": 1})), handler(400, "unsupported error: security 1 (TLS termination needs full-proxy mode) is not supported by xlb")),
        ("host", sa(json!({"host": "a.example"})), handler(400, "unsupported error: host (URL-based rules need full-proxy mode) is not supported by xlb")),
        ("detach from a missing rule", sa(json!({"oper": 2})), handler(404, "lbrule not-exists error")),
        ("missing externalIP",
         json!({"serviceArguments": {"port": 80}, "endpoints": []}).to_string(),
         framework(422, 602, "serviceArguments.externalIP in body is required")),
        ("missing port",
         json!({"serviceArguments": {"externalIP": "192.0.2.9"}, "endpoints": []}).to_string(),
         framework(422, 602, "serviceArguments.port in body is required")),
        ("missing endpoints",
         json!({"serviceArguments": {"externalIP": "192.0.2.9", "port": 80}}).to_string(),
         framework(422, 602, "endpoints in body is required")),
        ("missing endpoint weight",
         json!({"serviceArguments": {"externalIP": "192.0.2.9", "port": 80},
                "endpoints": [{"endpointIP": "10.0.0.1", "targetPort": 80}]}).to_string(),
         framework(422, 602, "endpoints.0.weight in body is required")),
        ("sel out of range", sa(json!({"sel": 7})), framework(422, 606, "serviceArguments.sel in body should be one of [0 1 2 3 4 5 6]")),
        ("mode out of range", sa(json!({"mode": 6})), framework(422, 606, "serviceArguments.mode in body should be one of [0 1 2 3 4 5]")),
        ("oper out of range", sa(json!({"oper": 3})), framework(422, 606, "serviceArguments.oper in body should be one of [0 1 2]")),
        ("protocol out of range", sa(json!({"protocol": "TCP"})), framework(422, 606, "serviceArguments.protocol in body should be one of [tcp udp sctp icmp]")),
        ("probetype out of range", sa(json!({"probetype": "grpc"})), framework(422, 606, "serviceArguments.probetype in body should be one of [tcp udp sctp http https ping none]")),
        ("empty body", String::new(), framework(422, 602, "attr in body is required")),
    ];
    for (what, body, (status, want)) in cases {
        let r = h.post(LB, &body).await;
        assert_eq!(r.status, status, "{what}: {}", r.body);
        assert_eq!(r.body, want, "{what}");
        assert_eq!(r.content_type(), "application/json", "{what}");
        assert_eq!(h.snapshot().await, before, "{what} changed the state");
    }

    // Malformed JSON and wrong types: 400 with go-openapi's parse message.
    for (what, body) in [
        ("not JSON", "{\"serviceArguments\": "),
        (
            "string port",
            r#"{"serviceArguments":{"externalIP":"192.0.2.9","port":"80"},"endpoints":[]}"#,
        ),
        ("array body", "[]"),
        (
            "string dsrIpip",
            r#"{"serviceArguments":{"externalIP":"192.0.2.9","port":80,"mode":3,"sel":1,"dsrIpip":"yes"},"endpoints":[]}"#,
        ),
    ] {
        let r = h.post(LB, body).await;
        assert_eq!(r.status, 400, "{what}");
        let v = r.json();
        assert_eq!(v["code"], 400, "{what}");
        let msg = v["message"].as_str().expect("message");
        assert!(
            msg.starts_with("parsing attr body from \"\" failed, because "),
            "{what}: {msg}"
        );
        assert_eq!(h.snapshot().await, before, "{what} changed the state");
    }

    // Wrong content type: 415.
    let body = rule("192.0.2.9", 80, &[("10.0.0.1", 80)]);
    for ct in [Some("text/plain"), None] {
        let r = h.send("POST", LB, Some(&body), ct, &[]).await;
        assert_eq!(r.status, 415);
        let want = format!(
            "unsupported media type {:?}, only [application/json] are allowed",
            ct.unwrap_or("application/octet-stream")
        );
        assert_eq!(r.body, json!({"code": 415, "message": want}).to_string());
        assert_eq!(h.snapshot().await, before);
    }
    // A charset parameter is fine.
    let r = h
        .send(
            "POST",
            LB,
            Some(&body),
            Some("application/json; charset=utf-8"),
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let h = Harness::new();
    let r = h.get("/netlox/v1/config/nothing").await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.body,
        r#"{"code":404,"message":"path /netlox/v1/config/nothing was not found"}"#
    );
    assert_eq!(r.content_type(), "application/json");
    let r = h.get("/elsewhere").await;
    assert_eq!(r.status, 404);

    let r = h
        .send("PUT", LB, Some("{}"), Some("application/json"), &[])
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.headers.get("allow").expect("Allow"), "POST");
    assert_eq!(
        r.body,
        r#"{"code":405,"message":"method PUT is not allowed, but [POST] are"}"#
    );
    let r = h.send("POST", LB_ALL, None, None, &[]).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.headers.get("allow").expect("Allow"), "GET,DELETE");
    let r = h.get(LB).await;
    assert_eq!(r.status, 405);

    // A loxilb path xlb does not implement: a clear 501, not a 200.
    for (m, p) in [
        ("GET", "/netlox/v1/config/route/all"),
        ("POST", "/netlox/v1/config/firewall"),
        ("GET", "/netlox/v1/config/bgp/neigh/all"),
        ("DELETE", "/netlox/v1/config/vlan/100"),
    ] {
        let r = h.send(m, p, None, None, &[]).await;
        assert_eq!(r.status, 501, "{m} {p}");
        assert_eq!(r.content_type(), "application/json");
        let v = r.json();
        assert_eq!(v["code"], 501);
        assert_eq!(
            v["result"].as_str().expect("result"),
            format!("{m} {p} is not supported by xlb")
        );
    }
}

#[tokio::test]
async fn deletes_by_identity_range_host_name_and_all() {
    let h = Harness::new();
    let post = |b: serde_json::Value| {
        let h = &h;
        async move { h.post(LB, &b.to_string()).await }
    };
    let ep = json!([{"endpointIP": "10.0.0.1", "targetPort": 0, "weight": 1}]);
    for b in [
        json!({"serviceArguments": {"externalIP": "192.0.2.1", "port": 80, "protocol": "tcp", "name": "web"}, "endpoints": ep}),
        json!({"serviceArguments": {"externalIP": "192.0.2.1", "port": 1000, "portMax": 1999, "protocol": "udp", "name": "web"}, "endpoints": ep}),
        json!({"serviceArguments": {"externalIP": "192.0.2.2", "port": 80, "protocol": "tcp", "block": 7}, "endpoints": ep}),
        json!({"serviceArguments": {"externalIP": "192.0.2.3", "port": 0, "protocol": "icmp"}, "endpoints": ep}),
        json!({"serviceArguments": {"externalIP": "2001:db8::1", "port": 443, "protocol": "sctp"},
               "endpoints": [{"endpointIP": "2001:db8::10", "targetPort": 443, "weight": 1}]}),
    ] {
        let r = post(b).await;
        assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
    }
    let count = || async { h.handle.current().services.len() };
    assert_eq!(count().await, 5);
    let base = "/netlox/v1/config/loadbalancer";

    // Not found: wrong port, wrong block, host other than "any", unknown proto.
    let before = h.snapshot().await;
    for p in [
        "/externalipaddress/192.0.2.1/port/81/protocol/tcp",
        "/externalipaddress/192.0.2.2/port/80/protocol/tcp",
        "/externalipaddress/192.0.2.2/port/80/protocol/tcp?block=6",
        "/hosturl/a.example/externalipaddress/192.0.2.1/port/80/protocol/tcp",
        "/externalipaddress/192.0.2.1/port/1000/protocol/udp",
    ] {
        let r = h.delete(&format!("{base}{p}")).await;
        assert_eq!(r.status, 404, "{p}");
        assert_eq!(r.body, handler_error(404, "no-rule error"), "{p}");
        assert_eq!(h.snapshot().await, before);
    }
    // Bad path/query values.
    let r = h
        .delete(&format!(
            "{base}/externalipaddress/192.0.2.1/port/eighty/protocol/tcp"
        ))
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.body,
        r#"{"code":601,"message":"port in path must be of type number: \"eighty\""}"#
    );
    let r = h
        .delete(&format!(
            "{base}/externalipaddress/192.0.2.1/port/80/protocol/tcp?block=x"
        ))
        .await;
    assert_eq!(r.status, 422);
    let r = h
        .delete(&format!(
            "{base}/externalipaddress/192.0.2.1/port/80/protocol/tcp?bgp=maybe"
        ))
        .await;
    assert_eq!(r.status, 422);
    let r = h
        .delete(&format!(
            "{base}/externalipaddress/nope/port/80/protocol/tcp"
        ))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body, handler_error(400, "malformed-service error"));
    let r = h
        .delete(&format!(
            "{base}/externalipaddress/192.0.2.1/port/80/protocol/quic"
        ))
        .await;
    assert_eq!(r.body, handler_error(400, "malformed-proto error"));
    assert_eq!(h.snapshot().await, before);

    let ok = |p: String| {
        let h = &h;
        async move {
            let r = h.delete(&p).await;
            assert_eq!((r.status, r.body.as_str()), (200, SUCCESS), "{p}");
        }
    };
    ok(format!(
        "{base}/hosturl/any/externalipaddress/192.0.2.2/port/80/protocol/tcp?block=7"
    ))
    .await;
    assert_eq!(count().await, 4);
    ok(format!(
        "{base}/externalipaddress/192.0.2.1/port/1000/portmax/1999/protocol/udp"
    ))
    .await;
    assert_eq!(count().await, 3);
    ok(format!(
        "{base}/externalipaddress/192.0.2.3/port/0/protocol/icmp"
    ))
    .await;
    ok(format!(
        "{base}/externalipaddress/2001:db8::1/port/443/protocol/sctp"
    ))
    .await;
    assert_eq!(count().await, 1);
    ok(format!("{base}/name/nothing-has-this-name")).await;
    assert_eq!(count().await, 1);
    ok(format!("{base}/name/web")).await;
    assert_eq!(count().await, 0);
    post(json!({"serviceArguments": {"externalIP": "192.0.2.1", "port": 80, "protocol": "tcp"}, "endpoints": ep})).await;
    ok(format!("{base}/all")).await;
    ok(format!("{base}/all")).await;
    assert_eq!(h.get(LB_ALL).await.body, r#"{"lbAttr":[]}"#);
}

#[tokio::test]
async fn oper_replace_attach_detach() {
    let h = Harness::new();
    let body = |oper: i64, eps: &[(&str, i64)]| {
        let eps: Vec<_> = eps
            .iter()
            .map(|(ip, w)| json!({"endpointIP": ip, "targetPort": 8080, "weight": w}))
            .collect();
        json!({"serviceArguments": {"externalIP": "192.0.2.1", "port": 80, "protocol": "tcp",
                                    "oper": oper, "sel": 2},
               "endpoints": eps})
        .to_string()
    };
    let ips = || async {
        h.get(LB_ALL).await.json()["lbAttr"][0]["endpoints"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| format!("{}/{}", e["endpointIP"].as_str().unwrap_or(""), e["weight"]))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    // Attach to a missing rule creates it.
    assert_eq!(h.post(LB, &body(1, &[("10.0.0.1", 50)])).await.status, 200);
    assert_eq!(ips().await, ["10.0.0.1/50"]);
    assert_eq!(h.post(LB, &body(1, &[("10.0.0.2", 50)])).await.status, 200);
    assert_eq!(ips().await, ["10.0.0.1/50", "10.0.0.2/50"]);
    // Attaching what is there: exists.
    let r = h.post(LB, &body(1, &[("10.0.0.2", 50)])).await;
    assert_eq!(r.body, handler_error(409, "lbrule-exists error"));
    // Attach with another weight updates it.
    assert_eq!(h.post(LB, &body(1, &[("10.0.0.2", 30)])).await.status, 200);
    assert_eq!(ips().await, ["10.0.0.1/50", "10.0.0.2/30"]);
    // Detach.
    assert_eq!(h.post(LB, &body(2, &[("10.0.0.1", 1)])).await.status, 200);
    assert_eq!(ips().await, ["10.0.0.2/30"]);
    let before = h.snapshot().await;
    // Detaching what is not there changes nothing: loxilb's "exists".
    let r = h.post(LB, &body(2, &[("10.0.0.9", 1)])).await;
    assert_eq!(r.body, handler_error(409, "lbrule-exists error"));
    assert_eq!(h.snapshot().await, before);
    // Replace (oper 0) with a different list, then the same list: exists.
    assert_eq!(
        h.post(LB, &body(0, &[("10.0.0.3", 60), ("10.0.0.4", 40)]))
            .await
            .status,
        200
    );
    assert_eq!(ips().await, ["10.0.0.3/60", "10.0.0.4/40"]);
    let r = h
        .post(LB, &body(0, &[("10.0.0.4", 40), ("10.0.0.3", 60)]))
        .await;
    assert_eq!(r.status, 409, "same set in another order is the same rule");
    // Detaching the last endpoints deletes the rule.
    assert_eq!(
        h.post(LB, &body(2, &[("10.0.0.3", 1), ("10.0.0.4", 1)]))
            .await
            .status,
        200
    );
    assert_eq!(h.get(LB_ALL).await.body, r#"{"lbAttr":[]}"#);
    assert!(h.handle.current().services.is_empty());
}

#[tokio::test]
async fn in_place_updates_and_what_counts_as_duplicate() {
    let h = Harness::new();
    let base = json!({"serviceArguments": {"externalIP": "192.0.2.1", "port": 80, "protocol": "tcp",
                                           "name": "a", "inactiveTimeOut": 100},
                      "endpoints": [{"endpointIP": "10.0.0.1", "targetPort": 80, "weight": 1}]});
    assert_eq!(h.post(LB, &base.to_string()).await.status, 200);
    // A timeout/name change alone is not an update: 409, nothing changes.
    let mut b = base.clone();
    b["serviceArguments"]["name"] = json!("b");
    b["serviceArguments"]["inactiveTimeOut"] = json!(200);
    let before = h.snapshot().await;
    assert_eq!(h.post(LB, &b.to_string()).await.status, 409);
    assert_eq!(h.snapshot().await, before);
    // sel, mode and allowed sources update in place.
    let mut b = base.clone();
    b["serviceArguments"]["sel"] = json!(1);
    b["serviceArguments"]["mode"] = json!(2);
    b["allowedSources"] = json!([{"prefix": "198.51.100.0/24"}]);
    let r = h.post(LB, &b.to_string()).await;
    assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
    let got = h.get(LB_ALL).await.json();
    assert_eq!(got["lbAttr"][0]["serviceArguments"]["sel"], 1);
    assert_eq!(got["lbAttr"][0]["serviceArguments"]["name"], "a");
    assert_eq!(
        got["lbAttr"][0]["allowedSources"][0]["prefix"],
        "198.51.100.0/24"
    );
    let t = h.handle.current();
    assert_eq!(t.services[0].spec.allowed_sources.len(), 1);
    assert_eq!(t.services[0].spec.inactive_timeout_s, 100);
    // A probe turns monitoring on.
    let mut b = b.clone();
    b["serviceArguments"]["probetype"] = json!("ping");
    assert_eq!(h.post(LB, &b.to_string()).await.status, 200);
    let got = h.get(LB_ALL).await.json();
    assert_eq!(got["lbAttr"][0]["serviceArguments"]["monitor"], true);
    // Overlapping port ranges cannot coexist: rejected whole.
    let before = h.snapshot().await;
    let over = json!({"serviceArguments": {"externalIP": "192.0.2.1", "port": 70, "portMax": 90, "protocol": "tcp"},
                      "endpoints": [{"endpointIP": "10.0.0.1", "targetPort": 0, "weight": 1}]});
    let r = h.post(LB, &over.to_string()).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["result"]
        .as_str()
        .expect("result")
        .starts_with("malformed-service error: rule"));
    assert_eq!(h.snapshot().await, before);
}

/// xlb's `dsrIpip` extension: IPIP for one DSR rule, shown in GET only when
/// set, so rules without it keep loxilb's exact output.
#[tokio::test]
async fn dsr_ipip_extension() {
    let h = Harness::new();
    let dsr = |vip: &str, ipip: Option<serde_json::Value>| {
        let mut b = json!({"serviceArguments": {"externalIP": vip, "port": 80, "protocol": "tcp", "sel": 1, "mode": 3},
                           "endpoints": [{"endpointIP": "10.0.0.1", "targetPort": 80, "weight": 1}]});
        if let Some(v) = ipip {
            b["serviceArguments"]["dsrIpip"] = v;
        }
        b.to_string()
    };
    let ipip_of = |h: &Harness, vip: &str| {
        let t = h.handle.current();
        let key = t
            .services
            .iter()
            .position(|s| s.spec.key.vip.to_string() == vip)
            .expect("rule published");
        t.services[key].spec.dsr_ipip
    };
    let get = |ipip: &str| {
        format!(
            r#"{{"lbAttr":[{{"allowedSources":null,"endpoints":[{{"counter":"0:0","endpointIP":"10.0.0.1","state":"active","targetPort":80,"weight":1}}],"secondaryIPs":null,"serviceArguments":{{{ipip}"externalIP":"192.0.2.1","inactiveTimeOut":240,"mode":3,"port":80,"protocol":"tcp","sel":1}}}}]}}"#
        )
    };

    // Without it: L2 DSR, and GET exactly as loxilb prints the rule.
    let r = h.post(LB, &dsr("192.0.2.1", None)).await;
    assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
    assert!(!ipip_of(&h, "192.0.2.1"));
    assert_eq!(h.get(LB_ALL).await.body, get(""));

    // Re-posted with it (keys are case-insensitive): an in-place update.
    let r = h
        .post(
            LB,
            &dsr("192.0.2.1", Some(json!(true))).replace("dsrIpip", "DsrIPIP"),
        )
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
    assert!(ipip_of(&h, "192.0.2.1"));
    assert_eq!(h.get(LB_ALL).await.body, get(r#""dsrIpip":true,"#));
    let before = h.snapshot().await;
    let r = h.post(LB, &dsr("192.0.2.1", Some(json!(true)))).await;
    assert_eq!(r.body, handler_error(409, "lbrule-exists error"));
    assert_eq!(h.snapshot().await, before);

    // kube-loxilb re-posts without it (explicit false is the same): back to L2.
    let r = h.post(LB, &dsr("192.0.2.1", Some(json!(false)))).await;
    assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
    assert!(!ipip_of(&h, "192.0.2.1"));
    assert_eq!(h.get(LB_ALL).await.body, get(""));

    // A new rule with it, and a mode change that leaves DSR takes it away.
    let r = h.post(LB, &dsr("192.0.2.2", Some(json!(true)))).await;
    assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
    assert!(ipip_of(&h, "192.0.2.2"));
    let fullnat = json!({"serviceArguments": {"externalIP": "192.0.2.2", "port": 80, "protocol": "tcp", "sel": 1, "mode": 2},
                         "endpoints": [{"endpointIP": "10.0.0.1", "targetPort": 80, "weight": 1}]});
    let r = h.post(LB, &fullnat.to_string()).await;
    assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
    assert!(!ipip_of(&h, "192.0.2.2"));
    let got = h.get(LB_ALL).await.json();
    assert!(got["lbAttr"][1]["serviceArguments"]
        .get("dsrIpip")
        .is_none());
    assert_eq!(got["lbAttr"][1]["serviceArguments"]["mode"], 2);
}

#[tokio::test]
async fn endpoint_state_and_counters_come_from_the_dataplane_and_probes() {
    let h = Harness::new();
    let body = json!({"serviceArguments": {"externalIP": "192.0.2.1", "port": 80, "protocol": "tcp", "monitor": true},
                      "endpoints": [{"endpointIP": "10.0.0.1", "targetPort": 8080, "weight": 1},
                                    {"endpointIP": "10.0.0.2", "targetPort": 8080, "weight": 1}]});
    assert_eq!(h.post(LB, &body.to_string()).await.status, 200);
    let id = h.handle.current().services[0].endpoints[1].id;
    h.view.set_counters(id, 12, 3400);
    let got = h.get(LB_ALL).await.json();
    assert_eq!(got["lbAttr"][0]["endpoints"][0]["counter"], "0:0");
    assert_eq!(got["lbAttr"][0]["endpoints"][1]["counter"], "12:3400");

    // The derived probe entries show up in GET /config/endpoint/all.
    let eps = h.get("/netlox/v1/config/endpoint/all").await;
    assert_eq!(
        eps.body,
        r#"{"Attr":[{"currState":"ok","hostName":"10.0.0.1","inactiveReTries":2,"name":"10.0.0.1_tcp_8080","probeDuration":60,"probePort":8080,"probeType":"tcp"},{"currState":"ok","hostName":"10.0.0.2","inactiveReTries":2,"name":"10.0.0.2_tcp_8080","probeDuration":60,"probePort":8080,"probeType":"tcp"}]}"#
    );

    // A failed probe takes the endpoint down in GET and in the tables.
    let g = h.generation();
    h.api
        .control()
        .apply(Command::ProbeResults(vec![(
            "10.0.0.2_tcp_8080".to_string(),
            ProbeStatus {
                ok: false,
                delays: Default::default(),
            },
        )]))
        .await
        .expect("accepted");
    assert_eq!(h.generation(), g + 1);
    let got = h.get(LB_ALL).await.json();
    assert_eq!(got["lbAttr"][0]["endpoints"][0]["state"], "active");
    assert_eq!(got["lbAttr"][0]["endpoints"][1]["state"], "inactive");
    let t = h.handle.current();
    assert_eq!(t.services[0].endpoints[1].state, EndpointState::Down);
    assert_eq!(t.services[0].endpoints[1].id, id, "ids survive the rebuild");
    let eps = h.get("/netlox/v1/config/endpoint/all").await.json();
    assert_eq!(eps["Attr"][1]["currState"], "nok");
    // The entry is in use by the rule: cannot be deleted.
    let r = h
        .delete("/netlox/v1/config/endpoint/epipaddress/10.0.0.2?probe_type=tcp&probe_port=8080")
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.body, handler_error(409, "LB Rule-referred"));
}

/// `POST /config/endpointhoststate`: "red" holds a host's endpoints down
/// (whatever their probes say, monitored or not), "green"/"yellow" release.
#[tokio::test]
async fn endpoint_host_state_holds_and_releases_endpoints() {
    const HS: &str = "/netlox/v1/config/endpointhoststate";
    let h = Harness::new();
    let tcp = json!({"serviceArguments": {"externalIP": "192.0.2.1", "port": 80, "protocol": "tcp", "monitor": true},
                     "endpoints": [{"endpointIP": "10.0.0.1", "targetPort": 8080, "weight": 1},
                                   {"endpointIP": "10.0.0.2", "targetPort": 8080, "weight": 1}]});
    let udp = json!({"serviceArguments": {"externalIP": "192.0.2.1", "port": 53, "protocol": "udp"},
                     "endpoints": [{"endpointIP": "10.0.0.1", "targetPort": 5353, "weight": 1}]});
    assert_eq!(h.post(LB, &tcp.to_string()).await.status, 200);
    assert_eq!(h.post(LB, &udp.to_string()).await.status, 200);
    let states = |v: serde_json::Value| -> Vec<(String, String)> {
        v["lbAttr"]
            .as_array()
            .expect("rules")
            .iter()
            .flat_map(|r| {
                let port = r["serviceArguments"]["port"].to_string();
                r["endpoints"]
                    .as_array()
                    .expect("endpoints")
                    .iter()
                    .map(move |e| {
                        (
                            format!("{port}/{}", e["endpointIP"].as_str().expect("ip")),
                            e["state"].as_str().expect("state").to_string(),
                        )
                    })
            })
            .collect()
    };
    let down_in_tables = |h: &Harness| -> usize {
        h.handle
            .current()
            .services
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.state == EndpointState::Down)
            .count()
    };

    // Rejections: nothing changes, no snapshot is published.
    let g = h.generation();
    for (body, code, result) in [
        (
            r#"{"hostName":"10.0.0.1","state":"blue"}"#,
            400,
            r#"host-args error: state "blue" is not one of green, yellow, red"#,
        ),
        (
            r#"{"hostName":"ten","state":"red"}"#,
            400,
            "host-parse error",
        ),
        (
            r#"{"hostName":"10.0.0.1/24","state":"red"}"#,
            400,
            r#"host-args error: hostName "10.0.0.1/24" must name one host (/32)"#,
        ),
        (
            r#"{"hostName":"10.0.0.1","epPort":70000,"state":"red"}"#,
            400,
            "host-args error: epPort 70000 is not a port",
        ),
        (
            r#"{"hostName":"10.0.0.1","epProto":"gre","state":"red"}"#,
            400,
            r#"host-args error: epProto "gre" is not one of tcp, udp, sctp, icmp, http, https"#,
        ),
    ] {
        let r = h.post(HS, body).await;
        assert_eq!(r.status, code, "{body}: {}", r.body);
        assert_eq!(r.body, handler_error(code, result), "{body}");
    }
    let r = h.post(HS, r#"{"state":"red"}"#).await;
    assert_eq!(r.status, 422, "{}", r.body);
    let r = h.post(HS, r#"{"hostName":"10.0.0.1"}"#).await;
    assert_eq!(r.status, 422, "{}", r.body);
    let r = h
        .send("POST", HS, Some("{}"), Some("text/plain"), &[])
        .await;
    assert_eq!(r.status, 415);
    assert_eq!(h.generation(), g, "rejections publish nothing");
    assert_eq!(down_in_tables(&h), 0);

    // Red on the tcp port only: 10.0.0.1 leaves the tcp rule, keeps udp.
    let r = h
        .post(
            HS,
            r#"{"hostName":"10.0.0.1/32","epPort":8080,"epProto":"tcp","state":"RED"}"#,
        )
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
    assert_eq!(h.generation(), g + 1, "one snapshot");
    let got = states(h.get(LB_ALL).await.json());
    assert!(
        got.contains(&("80/10.0.0.1".into(), "inactive".into())),
        "{got:?}"
    );
    assert!(
        got.contains(&("80/10.0.0.2".into(), "active".into())),
        "{got:?}"
    );
    assert!(
        got.contains(&("53/10.0.0.1".into(), "active".into())),
        "{got:?}"
    );
    assert_eq!(down_in_tables(&h), 1);
    let eps = h.get("/netlox/v1/config/endpoint/all").await.json();
    let cur: Vec<(&str, &str)> = eps["Attr"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().expect("n"),
                e["currState"].as_str().expect("s"),
            )
        })
        .collect();
    assert_eq!(
        cur,
        [("10.0.0.1_tcp_8080", "nok"), ("10.0.0.2_tcp_8080", "ok")]
    );

    // The same hold again changes nothing.
    let r = h
        .post(
            HS,
            r#"{"hostName":"10.0.0.1","epPort":8080,"epProto":"tcp","state":"red"}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(h.generation(), g + 1);

    // Red on the whole host: both of its endpoints go, also on the unmonitored rule.
    assert_eq!(
        h.post(HS, r#"{"hostName":"10.0.0.1","state":"red"}"#)
            .await
            .status,
        200
    );
    let got = states(h.get(LB_ALL).await.json());
    assert!(
        got.contains(&("53/10.0.0.1".into(), "inactive".into())),
        "{got:?}"
    );
    assert_eq!(down_in_tables(&h), 2);

    // A passing probe does not override the operator.
    h.api
        .control()
        .apply(Command::ProbeResults(vec![(
            "10.0.0.1_tcp_8080".to_string(),
            ProbeStatus {
                ok: true,
                delays: Default::default(),
            },
        )]))
        .await
        .expect("accepted");
    assert_eq!(down_in_tables(&h), 2);

    // Yellow (degraded) on the whole host releases every hold on it.
    assert_eq!(
        h.post(HS, r#"{"hostName":"10.0.0.1","state":"yellow"}"#)
            .await
            .status,
        200
    );
    let got = states(h.get(LB_ALL).await.json());
    assert!(got.iter().all(|(_, s)| s == "active"), "{got:?}");
    assert_eq!(down_in_tables(&h), 0);

    // A hold outlives the rule: a rule created later starts with it down.
    assert_eq!(
        h.post(HS, r#"{"hostName":"10.0.0.9","state":"red"}"#)
            .await
            .status,
        200
    );
    let later = json!({"serviceArguments": {"externalIP": "192.0.2.2", "port": 80, "protocol": "tcp"},
                       "endpoints": [{"endpointIP": "10.0.0.9", "targetPort": 80, "weight": 1},
                                     {"endpointIP": "10.0.0.8", "targetPort": 80, "weight": 1}]});
    assert_eq!(h.post(LB, &later.to_string()).await.status, 200);
    let got = states(h.get(LB_ALL).await.json());
    assert!(
        got.contains(&("80/10.0.0.9".into(), "inactive".into())),
        "{got:?}"
    );
    assert_eq!(
        h.post(HS, r#"{"hostName":"10.0.0.9","state":"green"}"#)
            .await
            .status,
        200
    );
    assert_eq!(down_in_tables(&h), 0);
}

#[tokio::test]
async fn endpoint_probe_api() {
    let h = Harness::new();
    const EP: &str = "/netlox/v1/config/endpoint";
    let r = h
        .post(
            EP,
            r#"{"hostName":"10.0.0.1","name":"web1","inactiveReTries":3,"probeType":"http","probeReq":"healthz","probeDuration":5,"probePort":8080}"#,
        )
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
    let r = h
        .post(
            EP,
            r#"{"HostName":"10.0.0.2","probeType":"tcp","probePort":22}"#,
        )
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
    assert_eq!(
        h.get(&format!("{EP}/all")).await.body,
        r#"{"Attr":[{"currState":"ok","hostName":"10.0.0.2","inactiveReTries":2,"name":"10.0.0.2_tcp_22","probeDuration":60,"probePort":22,"probeType":"tcp"},{"currState":"ok","hostName":"10.0.0.1","inactiveReTries":3,"name":"web1","probeDuration":5,"probePort":8080,"probeReq":"healthz","probeType":"http"}]}"#
    );
    // Posting an existing key updates it.
    let r = h
        .post(
            EP,
            r#"{"hostName":"10.0.0.1","name":"web1","probeType":"ping"}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    let all = h.get(&format!("{EP}/all")).await.json();
    assert_eq!(all["Attr"][1]["probeType"], "ping");
    assert_eq!(all["Attr"].as_array().map(Vec::len), Some(2));

    let before = h.snapshot().await;
    let handler = |code: u16, result: &str| (code, handler_error(code, result));
    let framework = |c: u16, msg: &str| (422u16, json!({"code": c, "message": msg}).to_string());
    for (what, body, (status, want)) in [
        (
            "missing hostName",
            r#"{"probeType":"tcp","probePort":1}"#,
            framework(602, "hostName in body is required"),
        ),
        (
            "probeType out of range",
            r#"{"hostName":"10.0.0.1","probeType":"icmp"}"#,
            framework(
                606,
                "probeType in body should be one of [tcp udp sctp ping http https none]",
            ),
        ),
        (
            "bad host",
            r#"{"hostName":"nope","probeType":"ping"}"#,
            handler(400, "host-parse error"),
        ),
        (
            "no probe type",
            r#"{"hostName":"10.0.0.1"}"#,
            handler(400, "host-args unknown probe type"),
        ),
        (
            "tcp without port",
            r#"{"hostName":"10.0.0.1","probeType":"tcp"}"#,
            handler(400, "host-args unknown probe port"),
        ),
        (
            "too many retries",
            r#"{"hostName":"10.0.0.1","probeType":"ping","inactiveReTries":101}"#,
            handler(400, "host-args error"),
        ),
        (
            "too long duration",
            r#"{"hostName":"10.0.0.1","probeType":"ping","probeDuration":86401}"#,
            handler(400, "host-args error"),
        ),
    ] {
        let r = h.post(EP, body).await;
        assert_eq!((r.status, r.body.clone()), (status, want), "{what}");
        assert_eq!(h.snapshot().await, before, "{what}");
    }
    let r = h
        .send("POST", EP, Some("{}"), Some("text/plain"), &[])
        .await;
    assert_eq!(r.status, 415);
    let r = h.post(EP, "{").await;
    assert_eq!(r.status, 400);

    // Delete: by exact key (name, or host_type_port); missing → 404.
    let r = h.delete(&format!("{EP}/epipaddress/10.0.0.9")).await;
    assert_eq!(r.body, handler_error(404, "host-notfound error"));
    let r = h.delete(&format!("{EP}/epipaddress/10.0.0.2")).await;
    assert_eq!(
        r.status, 404,
        "without type and port the key is 10.0.0.2__0"
    );
    let r = h.delete(&format!("{EP}/epipaddress/nope")).await;
    assert_eq!(r.body, handler_error(400, "host-parse error"));
    let r = h
        .delete(&format!("{EP}/epipaddress/10.0.0.1?name=other"))
        .await;
    assert_eq!(r.status, 404);
    let r = h
        .delete(&format!("{EP}/epipaddress/10.0.0.2?probe_port=x"))
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(h.snapshot().await, before);
    let r = h
        .delete(&format!("{EP}/epipaddress/10.0.0.1?name=web1"))
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
    let r = h
        .delete(&format!(
            "{EP}/epipaddress/10.0.0.2?probe_type=tcp&probe_port=22"
        ))
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
    assert_eq!(h.get(&format!("{EP}/all")).await.body, r#"{"Attr":[]}"#);
}

#[tokio::test]
async fn cistate() {
    let h = Harness::new();
    const CI: &str = "/netlox/v1/config/cistate";
    let all = || h.get("/netlox/v1/config/cistate/all");
    let r = h
        .post(
            CI,
            r#"{"instance":"llb-inst0","state":"BACKUP","vip":"192.0.2.100"}"#,
        )
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
    assert_eq!(
        all().await.body,
        r#"{"Attr":[{"instance":"llb-inst0","state":"BACKUP","sync":null,"vip":"192.0.2.100"}]}"#
    );
    // loxilb: the same state again changes nothing, not even vip.
    let r = h
        .post(
            CI,
            r#"{"instance":"llb-inst0","state":"BACKUP","vip":"192.0.2.200"}"#,
        )
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
    assert!(all().await.body.contains(r#""vip":"192.0.2.100""#));
    // An unknown instance is created on first use.
    let r = h
        .post(CI, r#"{"instance":"llb-inst1","state":"MASTER"}"#)
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
    assert_eq!(
        all().await.body,
        r#"{"Attr":[{"instance":"llb-inst0","state":"BACKUP","sync":null,"vip":"192.0.2.100"},{"instance":"llb-inst1","state":"MASTER","sync":null,"vip":"0.0.0.0"}]}"#
    );
    // States are loxilb's exact names; anything else is loxilb's 400 and
    // changes nothing (loxilb would have created the instance first).
    let before = h.snapshot().await;
    for bad in [
        r#"{"instance":"llb-inst0","state":"BOSS"}"#,
        r#"{"instance":"llb-inst0","state":"master"}"#,
        r#"{"instance":"llb-inst9","state":"DELETED"}"#,
    ] {
        let r = h.post(CI, bad).await;
        assert_eq!(
            (r.status, r.body),
            (400, handler_error(400, "invalid cluster-state")),
            "{bad}"
        );
    }
    let r = h.post(CI, r#"{"state":"MASTER","vip":"x"}"#).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["result"]
        .as_str()
        .expect("result")
        .starts_with("malformed-cistate error"));
    assert_eq!(h.snapshot().await, before);
}

#[tokio::test]
async fn conntrack_status_version_params_metrics_openapi() {
    let h = Harness::new();
    h.view.set_conntrack(vec![CtEntry {
        src: "198.51.100.7".parse().expect("ip"),
        src_port: 40000,
        dst: "192.0.2.1".parse().expect("ip"),
        dst_port: 80,
        proto: L4Proto::Tcp,
        state: "est".into(),
        action: "fdnat-10.0.0.1:8080".into(),
        packets: 10,
        bytes: 1000,
        service: "web".into(),
    }]);
    h.view.set_workers(vec![WorkerStats {
        worker: 0,
        rx_packets: 5,
        rx_bytes: 500,
        tx_packets: 4,
        tx_bytes: 400,
        drops: vec![(DropReason::NoEndpoint, 1)],
        ct_entries: 1,
        ct_capacity: 65536,
        io_drops: vec![("kernel_rx_ring_full", 7)],
        tx_deferred: 3,
        flows_evicted: 2,
        fast_path_exits: vec![(FastPathExit::Selection, 4)],
    }]);
    assert_eq!(
        h.get("/netlox/v1/config/conntrack/all").await.body,
        r#"{"ctAttr":[{"bytes":1000,"conntrackAct":"fdnat-10.0.0.1:8080","conntrackState":"est","destinationIP":"192.0.2.1","destinationPort":80,"packets":10,"protocol":"tcp","servName":"web","sourceIP":"198.51.100.7","sourcePort":40000}]}"#
    );
    let v = h.get("/netlox/v1/version").await.json();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["buildInfo"]
        .as_str()
        .expect("buildInfo")
        .starts_with("xlb"));
    let p = h.get("/netlox/v1/status/process").await.json();
    assert_eq!(p["processAttr"][0]["pid"], std::process::id().to_string());
    let d = h.get("/netlox/v1/status/device").await;
    assert_eq!(d.status, 200);
    assert!(d.json()["architecture"].is_string());

    // Params.
    assert_eq!(
        h.get("/netlox/v1/config/params").await.body,
        r#"{"logLevel":"info"}"#
    );
    let r = h
        .post("/netlox/v1/config/params", r#"{"logLevel":"debug"}"#)
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, SUCCESS));
    assert_eq!(
        h.get("/netlox/v1/config/params").await.body,
        r#"{"logLevel":"debug"}"#
    );
    let r = h
        .post("/netlox/v1/config/params", r#"{"logLevel":"loud"}"#)
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["code"], 606);
    let r = h.post("/netlox/v1/config/params", r#"{}"#).await;
    assert_eq!(r.json()["code"], 602);

    // Metrics.
    let body = rule("192.0.2.1", 80, &[("10.0.0.1", 8080)]);
    assert_eq!(h.post(LB, &body).await.status, 200);
    let r = h.get("/netlox/v1/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r.content_type().starts_with("text/plain; version=0.0.4"));
    for line in [
        "xlb_rules 1",
        "xlb_endpoints{state=\"active\"} 1",
        "xlb_endpoint_up{rule=\"192.0.2.1:80/tcp\",name=\"\",endpoint=\"10.0.0.1:8080\"} 1",
        "xlb_worker_rx_packets_total{worker=\"0\"} 5",
        "xlb_worker_drops_total{worker=\"0\",reason=\"no_endpoint\"} 1",
        "xlb_conntrack_entries{worker=\"0\"} 1",
        "xlb_conntrack_capacity{worker=\"0\"} 65536",
        "xlb_worker_io_drops_total{worker=\"0\",cause=\"kernel_rx_ring_full\"} 7",
        "xlb_worker_tx_deferred_total{worker=\"0\"} 3",
        "xlb_worker_flows_evicted_total{worker=\"0\"} 2",
        "xlb_worker_new_flow_fallbacks_total{worker=\"0\",reason=\"selection\"} 4",
    ] {
        assert!(
            r.body.lines().any(|l| l == line),
            "missing {line}:\n{}",
            r.body
        );
    }

    // OpenAPI: lists what is served and nothing that is not.
    let doc = h.get("/netlox/v1/openapi.json").await.json();
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(doc["paths"]["/config/loadbalancer"]["post"].is_object());
    assert!(doc["paths"]["/config/route/all"].is_null());
}

#[tokio::test]
async fn bearer_auth_when_enabled() {
    let h = Harness::with(|a| a.with_token(Some("s3cret".into())));
    // Liveness and version stay open.
    assert_eq!(h.get("/netlox/v1").await.status, 200);
    assert_eq!(h.get("/netlox/v1/version").await.status, 200);
    let r = h.get(LB_ALL).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.content_type(), "application/json");
    let r = h
        .send(
            "GET",
            LB_ALL,
            None,
            None,
            &[("authorization", "Bearer wrong")],
        )
        .await;
    assert_eq!(r.status, 401);
    let r = h
        .send(
            "GET",
            LB_ALL,
            None,
            None,
            &[("authorization", "Bearer s3cret")],
        )
        .await;
    assert_eq!(r.status, 200);
    // Off by default: any header is accepted.
    let h = Harness::new();
    let r = h
        .send(
            "GET",
            LB_ALL,
            None,
            None,
            &[("authorization", "Bearer whatever")],
        )
        .await;
    assert_eq!(r.status, 200);
}

/// The published document (`control/openapi.json`) is what the server serves.
#[test]
fn published_openapi_document_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
    let file = std::fs::read_to_string(path).expect("control/openapi.json");
    let want = serde_json::to_string_pretty(&xlb_control::api::openapi::document()).expect("json");
    assert_eq!(
        file.trim_end(),
        want,
        "regenerate with: cargo run -p xlb-control -- openapi > control/openapi.json"
    );
}

/// A stand-in flow table for the sync service: empty.
struct NoFlows;

impl xlb_control::sync::FlowSource for NoFlows {
    fn dump(&self) -> Vec<xlb_dataplane::sync::SyncedFlow> {
        Vec::new()
    }
    fn active_since(&self, _: u64) -> Vec<xlb_dataplane::sync::SyncedFlow> {
        Vec::new()
    }
}

#[tokio::test]
async fn sync_metrics_join_the_export_once_sync_runs() {
    use xlb_control::sync::{SyncConfig, SyncService};
    let h = Harness::new();
    let r = h.get("/netlox/v1/metrics").await;
    assert!(!r.body.contains("xlb_sync_"), "no sync, no sync metrics");
    let (hub, _workers) = xlb_dataplane::sync::sync_queues(1, 16);
    let peer: std::net::SocketAddr = "127.0.0.1:1".parse().expect("addr");
    let sync = SyncService::start(
        SyncConfig {
            peers: vec!["127.0.0.1:0".parse().expect("addr"), peer],
            me: 0,
            key: b"a test key of 32 bytes, no more.".to_vec(),
        },
        hub,
        std::sync::Arc::new(NoFlows),
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    )
    .await
    .expect("started");
    h.api.set_sync(std::sync::Arc::new(sync));
    let r = h.get("/netlox/v1/metrics").await;
    for line in [
        "xlb_sync_events_sent_total 0",
        "xlb_sync_events_received_total{kind=\"open\"} 0",
        "xlb_sync_frames_rejected_total{reason=\"bad_auth\"} 0",
        "xlb_sync_peer_up{peer=\"127.0.0.1:1\"} 0",
        "xlb_sync_dump_complete{peer=\"127.0.0.1:1\"} 0",
        "xlb_sync_lag_seconds_bucket{le=\"0.001\"} 0",
        "xlb_sync_lag_seconds_count 0",
    ] {
        assert!(
            r.body.lines().any(|l| l == line),
            "missing {line}:\n{}",
            r.body
        );
    }
}
