//! xlb's own OpenAPI 3 document (`GET /netlox/v1/openapi.json`): the loxilb
//! paths xlb implements, derived from the same route table the server uses, so
//! it cannot list a path the server does not serve.

use serde_json::{json, Map, Value};

use super::routes::{Op, ROUTES};

fn summary(op: Op) -> Option<(&'static str, Option<&'static str>, &'static str)> {
    // (summary, request schema, response schema)
    Some(match op {
        Op::Liveness => ("Liveness check", None, "Success"),
        Op::LbPost => (
            "Create a rule (oper 0), attach (1) or detach (2) endpoints",
            Some("LoadbalanceEntry"),
            "Success",
        ),
        Op::LbAll => ("List rules", None, "LoadbalanceList"),
        Op::LbDeleteAll => ("Delete every rule", None, "Success"),
        Op::LbDeleteName => ("Delete every rule with this name", None, "Success"),
        Op::LbDelete => ("Delete one rule", None, "Success"),
        Op::EpPost => (
            "Add or update a health-probe entry",
            Some("EndPoint"),
            "Success",
        ),
        Op::EpAll => ("List health-probe entries", None, "EndPointList"),
        Op::EpDelete => ("Delete health-probe entries of a host", None, "Success"),
        Op::EpHostState => (
            "Hold a host's endpoints down (red) or release them (green, yellow)",
            Some("EndPointHostState"),
            "Success",
        ),
        Op::CiPost => (
            "Set the cluster-instance state",
            Some("CIStatusEntry"),
            "Success",
        ),
        Op::CiAll => ("List cluster-instance states", None, "CIStatusList"),
        Op::CtAll => ("List tracked connections", None, "ConntrackList"),
        Op::StatusProcess => ("The xlb process", None, "Object"),
        Op::StatusDevice => ("The machine", None, "Object"),
        Op::Version => ("Version", None, "Version"),
        Op::Metrics => ("Prometheus metrics (text format)", None, "Text"),
        Op::ParamsGet => ("Operational parameters", None, "OperParams"),
        Op::ParamsPost => ("Set operational parameters", Some("OperParams"), "Success"),
        Op::OpenApi => ("This document", None, "Object"),
        // Outside the base path this document describes.
        Op::Unsupported | Op::Healthz | Op::Readyz => return None,
    })
}

fn schema_ref(name: &str) -> Value {
    match name {
        "Text" => json!({"text/plain": {"schema": {"type": "string"}}}),
        "Object" => json!({"application/json": {"schema": {"type": "object"}}}),
        n => json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{n}")}}}),
    }
}

fn params(path: &str) -> Value {
    let mut out: Vec<Value> = path
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            let ty = if matches!(name, "port" | "portmax") {
                "integer"
            } else {
                "string"
            };
            json!({"name": name, "in": "path", "required": true, "schema": {"type": ty}})
        })
        .collect();
    if path.starts_with("/config/loadbalancer/") && path.contains("externalipaddress") {
        out.push(json!({"name": "bgp", "in": "query", "schema": {"type": "boolean"}}));
        out.push(json!({"name": "block", "in": "query", "schema": {"type": "integer"}}));
    }
    if path.starts_with("/config/endpoint/epipaddress") {
        out.push(json!({"name": "name", "in": "query", "schema": {"type": "string"}}));
        out.push(json!({"name": "probe_type", "in": "query", "schema": {"type": "string"}}));
        out.push(json!({"name": "probe_port", "in": "query", "schema": {"type": "integer"}}));
    }
    Value::Array(out)
}

fn error_responses() -> Value {
    let e = json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
    json!({
        "400": {"description": "Malformed arguments (handler) or malformed JSON", "content": e},
        "401": {"description": "Bearer token missing or wrong (only with --api-token)", "content": e},
        "403": {"description": "Capacity (rule-hwm error)", "content": e},
        "404": {"description": "Resource or path not found", "content": e},
        "405": {"description": "Method not allowed (see Allow)", "content": e},
        "409": {"description": "Resource conflict (lbrule-exists error, LB Rule-referred)", "content": e},
        "413": {"description": "Body larger than 256 KiB", "content": e},
        "415": {"description": "Body without Content-Type: application/json", "content": e},
        "422": {"description": "Schema violation: code 602 required field, 603 too long, 606 enum, 601 type", "content": e},
        "500": {"description": "Internal error", "content": e},
    })
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let mut item = Map::new();
        for (method, op) in r.methods {
            let Some((sum, req, resp)) = summary(*op) else {
                continue;
            };
            let mut responses = error_responses();
            if let Some(m) = responses.as_object_mut() {
                m.insert(
                    "200".into(),
                    json!({"description": "OK", "content": schema_ref(resp)}),
                );
            }
            let mut o =
                json!({"summary": sum, "parameters": params(r.path), "responses": responses});
            if let (Some(req), Some(m)) = (req, o.as_object_mut()) {
                m.insert(
                    "requestBody".into(),
                    json!({"required": true, "content": schema_ref(req)}),
                );
            }
            item.insert(method.to_ascii_lowercase(), o);
        }
        if !item.is_empty() {
            let p = if r.path.is_empty() { "/" } else { r.path };
            paths.insert(p.to_string(), Value::Object(item));
        }
    }
    let str_ = json!({"type": "string"});
    let name = json!({"type": "string", "maxLength": crate::model::MAX_NAME});
    let probe_text = json!({"type": "string", "maxLength": crate::model::MAX_PROBE_TEXT});
    let unicast = |what: &str| {
        json!({"type": "string", "description": format!(
            "{what}: a unicast address (not unspecified, loopback, multicast, broadcast or link-local)")})
    };
    let int = json!({"type": "integer"});
    let boolean = json!({"type": "boolean"});
    // Built apart: the whole document in one json! exceeds the macro's recursion limit.
    let ci_entry = json!({"type": "object", "properties": {
        "instance": {"type": "string"}, "state": {"type": "string"}, "vip": {"type": "string"},
        "sync": {"type": "integer", "nullable": true, "description": "always null, as in loxilb"},
        "setBy": {"type": "string", "enum": ["api", "election"], "description": "xlb, with --cluster: who set the role"},
        "changedSecondsAgo": {"type": "number", "description": "xlb, with --cluster"},
        "reason": {"type": "string", "description": "xlb, with --cluster: why the role is what it is"},
        "holder": {"type": "string", "description": "xlb, with --cluster: the member holding the election's instances"},
        "members": {"type": "array", "description": "xlb, with --cluster", "items": {"type": "object", "properties": {
            "addr": {"type": "string"}, "me": {"type": "boolean"}, "up": {"type": "boolean"}}}}}});
    // xlb's health-check knobs (issue 22), on probe entries and monitored rules.
    let ep_timeout = json!({"type": "number", "exclusiveMinimum": true, "minimum": 0,
        "description": "xlb extension (not in loxilb): seconds one probe may take (fractions allowed), below probeDuration; absent: 2 s for http/https, 1 s otherwise (loxilb); in GET only when set"});
    let ep_active = json!({"type": "integer", "minimum": 1, "maximum": 100,
        "description": "xlb extension (not in loxilb): successes in a row before a down endpoint is up again, a failure in between starting the count again; absent: 1 (loxilb); in GET only when set"});
    let rule_timeout = json!({"type": "number", "exclusiveMinimum": true, "minimum": 0,
        "description": "xlb extension (not in loxilb): seconds one probe of an endpoint may take (fractions allowed), below probeTimeout; absent: the method's default; in GET only when set"});
    let rule_interval = json!({"type": "integer",
        "description": "the probe interval in seconds (loxilb's name; default 60)"});
    let rule_active = json!({"type": "integer", "minimum": 1, "maximum": 100,
        "description": "xlb extension (not in loxilb): successes in a row before a down endpoint is up again; absent: 1 (loxilb); in GET only when set"});
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "xlb REST API (loxilb-compatible)",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The subset of loxilb's /netlox/v1 API that xlb implements, with loxilb's \
                observable behaviour: keys are case-insensitive, unknown keys ignored, successful \
                POST/DELETE answer 200 {\"result\":\"Success\"}. Every other loxilb path answers 501. \
                xlb rejects mode 4/5, sel 5/6, security, host, snat, egress, proxyprotocolv2 and \
                secondaryIPs with 400 'unsupported error'."
        },
        "servers": [{"url": "/netlox/v1"}],
        "paths": paths,
        "components": {"schemas": {
            "Success": {"type": "object", "properties": {"result": str_}},
            "Error": {"type": "object", "properties": {
                "code": int, "fields": {"type": "array", "nullable": true, "items": str_},
                "message": str_, "result": str_}},
            "LoadbalanceEntry": {"type": "object", "required": ["serviceArguments", "endpoints"], "properties": {
                "serviceArguments": {"type": "object", "required": ["externalIP", "port"], "properties": {
                    "externalIP": unicast("the VIP"), "privateIP": str_, "port": int, "portMax": int,
                    "protocol": {"type": "string", "enum": ["tcp", "udp", "sctp", "icmp"]},
                    "sel": {"type": "integer", "enum": [0, 1, 2, 3, 4],
                        "description": "0 rr, 1 hash, 2 priority, 3 persist, 4 least-connections (5, 6 unsupported)"},
                    "mode": {"type": "integer", "enum": [0, 1, 2, 3],
                        "description": "0 dnat, 1 one-arm, 2 full-nat, 3 dsr (4, 5 unsupported)"},
                    "dsrIpip": {"type": "boolean",
                        "description": "xlb extension (not in loxilb): with mode 3 and an IPv4 VIP, send packets to the endpoints in IPIP instead of rewriting only the MACs; 400 with any other mode; in GET only when true"},
                    "oper": {"type": "integer", "enum": [0, 1, 2]},
                    "bgp": boolean, "monitor": boolean, "managed": boolean,
                    "inactiveTimeOut": int, "block": int,
                    "probetype": {"type": "string", "enum": ["tcp", "udp", "sctp", "ping", "none"]},
                    "probeport": int, "probereq": probe_text, "proberesp": probe_text,
                    "probeTimeout": rule_interval, "probeRetries": int,
                    "probeReplyTimeout": rule_timeout, "probeActiveRetries": rule_active,
                    "name": name, "host": name}},
                "endpoints": {"type": "array", "minItems": 1, "maxItems": 32, "items": {
                    "type": "object", "required": ["endpointIP", "targetPort", "weight"], "properties": {
                        "endpointIP": unicast("the endpoint"), "targetPort": int, "weight": int,
                        "state": {"type": "string", "description": "GET: active|inactive"},
                        "counter": {"type": "string", "description": "GET: packets:bytes"}}}},
                "secondaryIPs": {"type": "array", "nullable": true, "items": {"type": "object", "properties": {"secondaryIP": str_}}},
                "allowedSources": {"type": "array", "nullable": true, "items": {"type": "object", "properties": {"prefix": str_}}}}},
            "LoadbalanceList": {"type": "object", "properties": {"lbAttr": {"type": "array", "items": {"$ref": "#/components/schemas/LoadbalanceEntry"}}}},
            "EndPoint": {"type": "object", "required": ["hostName"], "properties": {
                "hostName": str_, "name": name, "inactiveReTries": int,
                "probeType": {"type": "string", "enum": ["tcp", "udp", "sctp", "ping", "http", "https", "none"]},
                "probeReq": probe_text, "probeResp": probe_text, "probeDuration": int, "probePort": int,
                "probeTimeout": ep_timeout, "activeReTries": ep_active}},
            "EndPointList": {"type": "object", "properties": {"Attr": {"type": "array", "items": {
                "allOf": [{"$ref": "#/components/schemas/EndPoint"}, {"type": "object", "properties": {
                    "minDelay": str_, "avgDelay": str_, "maxDelay": str_,
                    "currState": {"type": "string", "enum": ["ok", "nok"]}}}]}}}},
            "EndPointHostState": {"type": "object", "required": ["hostName", "state"], "properties": {
                "hostName": str_, "epPort": int,
                "epProto": {"type": "string", "description": "tcp, udp, sctp, icmp, http, https; empty: every protocol"},
                "state": {"type": "string", "enum": ["green", "yellow", "red"]}}},
            "CIStatusEntry": {"type": "object", "properties": {"instance": name,
                "state": {"type": "string", "enum": ["MASTER", "BACKUP", "FAULT", "STOP", "NOT_DEFINED"]}, "vip": str_}},
            "CIStatusList": {"type": "object", "properties": {"Attr": {"type": "array", "items": ci_entry}}},
            "ConntrackList": {"type": "object", "properties": {"ctAttr": {"type": "array", "items": {"type": "object", "properties": {
                "destinationIP": str_, "sourceIP": str_, "destinationPort": int, "sourcePort": int,
                "protocol": str_, "conntrackState": str_, "conntrackAct": str_,
                "packets": int, "bytes": int, "servName": str_}}}}},
            "Version": {"type": "object", "properties": {"version": str_, "buildInfo": str_, "commit": str_}},
            "OperParams": {"type": "object", "required": ["logLevel"], "properties": {"logLevel": {"type": "string",
                "enum": ["trace", "debug", "info", "error", "warning", "notice", "critical", "emergency", "alert"]}}}
        }}
    })
}
