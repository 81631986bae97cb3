//! Every path of loxilb's swagger and what each method does on it, and the
//! matching of a request path against them. A table rather than a router's
//! patterns, so that a path xlb does not implement answers 501 with a clear
//! error, an unknown path 404 and a known path with the wrong method 405
//! with `Allow` — never a silent 200.

use std::collections::BTreeMap;

/// What a route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `GET /netlox/v1`: liveness.
    Liveness,
    /// Create/replace/attach/detach a rule.
    LbPost,
    /// List rules.
    LbAll,
    /// Delete every rule.
    LbDeleteAll,
    /// Delete rules by name.
    LbDeleteName,
    /// Delete one rule by identity (the four path shapes).
    LbDelete,
    /// Add/update a probe entry.
    EpPost,
    /// List probe entries.
    EpAll,
    /// Delete probe entries.
    EpDelete,
    /// Hold a host's endpoints down or release them.
    EpHostState,
    /// Set the cluster-instance state.
    CiPost,
    /// List cluster-instance states.
    CiAll,
    /// List connections.
    CtAll,
    /// Process status.
    StatusProcess,
    /// Device status.
    StatusDevice,
    /// Version.
    Version,
    /// Prometheus metrics.
    Metrics,
    /// Read operational parameters.
    ParamsGet,
    /// Set operational parameters.
    ParamsPost,
    /// xlb's OpenAPI document.
    OpenApi,
    /// A loxilb path xlb does not implement.
    Unsupported,
    /// `GET /healthz`: the process is alive (Kubernetes' liveness probe).
    Healthz,
    /// `GET /readyz`: config loaded, XDP attached, workers running
    /// (Kubernetes' readiness probe; 503 otherwise).
    Readyz,
}

/// A path and what each method does on it.
#[derive(Debug)]
pub struct Route {
    /// Path below [`BASE`], `{name}` for parameters.
    pub path: &'static str,
    /// (method, operation).
    pub methods: &'static [(&'static str, Op)],
}

macro_rules! routes {
    ($($path:literal => [$($m:literal : $op:ident),*]),* $(,)?) => {
        &[$(Route { path: $path, methods: &[$(($m, Op::$op)),*] }),*]
    };
}

/// Every path of loxilb's swagger (plus xlb's own document), in swagger order.
pub const ROUTES: &[Route] = routes![
    "" => ["GET": Liveness],
    "/openapi.json" => ["GET": OpenApi],
    "/meta" => ["GET": Unsupported],
    "/auth/login" => ["POST": Unsupported],
    "/auth/logout" => ["POST": Unsupported],
    "/auth/users" => ["GET": Unsupported, "POST": Unsupported],
    "/auth/users/{id}" => ["DELETE": Unsupported, "PUT": Unsupported],
    "/auth/token/upgrade" => ["POST": Unsupported],
    "/config/loadbalancer" => ["POST": LbPost],
    "/config/loadbalancer/all" => ["GET": LbAll, "DELETE": LbDeleteAll],
    "/config/loadbalancer/name/{lb_name}" => ["DELETE": LbDeleteName],
    "/config/loadbalancer/externalipaddress/{ip_address}/port/{port}/protocol/{proto}" => ["DELETE": LbDelete],
    "/config/loadbalancer/externalipaddress/{ip_address}/port/{port}/portmax/{portmax}/protocol/{proto}" => ["DELETE": LbDelete],
    "/config/loadbalancer/hosturl/{hosturl}/externalipaddress/{ip_address}/port/{port}/portmax/{portmax}/protocol/{proto}" => ["DELETE": LbDelete],
    "/config/loadbalancer/hosturl/{hosturl}/externalipaddress/{ip_address}/port/{port}/protocol/{proto}" => ["DELETE": LbDelete],
    "/config/conntrack/all" => ["GET": CtAll],
    "/config/port/all" => ["GET": Unsupported],
    "/config/route/all" => ["GET": Unsupported],
    "/config/route" => ["POST": Unsupported],
    "/config/route/destinationIPNet/{ip_address}/{mask}" => ["DELETE": Unsupported],
    "/config/session/all" => ["GET": Unsupported],
    "/config/session" => ["POST": Unsupported],
    "/config/session/ident/{ident}" => ["DELETE": Unsupported],
    "/config/sessionulcl/all" => ["GET": Unsupported],
    "/config/sessionulcl" => ["POST": Unsupported],
    "/config/sessionulcl/ident/{ident}/ulclAddress/{ip_address}" => ["DELETE": Unsupported],
    "/config/policy/all" => ["GET": Unsupported],
    "/config/policy" => ["POST": Unsupported],
    "/config/policy/ident/{ident}" => ["DELETE": Unsupported],
    "/config/mirror/all" => ["GET": Unsupported],
    "/config/mirror" => ["POST": Unsupported],
    "/config/mirror/ident/{ident}" => ["DELETE": Unsupported],
    "/config/ipv4address/all" => ["GET": Unsupported],
    "/config/ipv4address" => ["POST": Unsupported],
    "/config/ipv4address/{ip_address}/{mask}/dev/{if_name}" => ["DELETE": Unsupported],
    "/config/neighbor/all" => ["GET": Unsupported],
    "/config/neighbor" => ["POST": Unsupported],
    "/config/neighbor/{ip_address}/dev/{if_name}" => ["DELETE": Unsupported],
    "/config/fdb/all" => ["GET": Unsupported],
    "/config/fdb" => ["POST": Unsupported],
    "/config/fdb/{mac_address}/dev/{if_name}" => ["DELETE": Unsupported],
    "/config/vlan/all" => ["GET": Unsupported],
    "/config/vlan" => ["POST": Unsupported],
    "/config/vlan/{vlan_id}" => ["DELETE": Unsupported],
    "/config/vlan/{vlan_id}/member" => ["POST": Unsupported],
    "/config/vlan/{vlan_id}/member/{if_name}/tagged/{tagged}" => ["DELETE": Unsupported],
    "/config/tunnel/vxlan/all" => ["GET": Unsupported],
    "/config/tunnel/vxlan" => ["POST": Unsupported],
    "/config/tunnel/vxlan/{vxlanID}" => ["DELETE": Unsupported],
    "/config/tunnel/vxlan/{vxlanID}/peer" => ["POST": Unsupported],
    "/config/tunnel/vxlan/{vxlanID}/peer/{PeerIP}" => ["DELETE": Unsupported],
    "/config/cistate/all" => ["GET": CiAll],
    "/config/cistate" => ["POST": CiPost],
    "/config/endpoint/all" => ["GET": EpAll],
    "/config/endpoint" => ["POST": EpPost],
    "/config/endpointhoststate" => ["POST": EpHostState],
    "/config/endpoint/epipaddress/{ip_address}" => ["DELETE": EpDelete],
    "/config/firewall/all" => ["GET": Unsupported],
    "/config/firewall" => ["POST": Unsupported, "DELETE": Unsupported],
    "/status/process" => ["GET": StatusProcess],
    "/status/device" => ["GET": StatusDevice],
    "/status/filesystem" => ["GET": Unsupported],
    "/config/params" => ["POST": ParamsPost, "GET": ParamsGet],
    "/config/bgp/neigh/all" => ["GET": Unsupported],
    "/config/bgp/neigh" => ["POST": Unsupported],
    "/config/bgp/neigh/{ip_address}" => ["DELETE": Unsupported],
    "/config/bgp/policy/definedsets/{defineset_type}/{type_name}" => ["GET": Unsupported, "DELETE": Unsupported],
    "/config/bgp/policy/definedsets/{defineset_type}" => ["POST": Unsupported],
    "/config/bgp/policy/definitions/all" => ["GET": Unsupported],
    "/config/bgp/policy/definitions" => ["POST": Unsupported],
    "/config/bgp/policy/definitions/{policy_name}" => ["DELETE": Unsupported],
    "/config/bgp/policy/apply" => ["POST": Unsupported, "DELETE": Unsupported],
    "/config/bgp/global" => ["POST": Unsupported],
    "/metrics" => ["GET": Metrics],
    "/config/metrics" => ["GET": Unsupported, "POST": Unsupported, "DELETE": Unsupported],
    "/version" => ["GET": Version],
    "/config/bfd/all" => ["GET": Unsupported],
    "/config/bfd" => ["POST": Unsupported],
    "/config/bfd/remoteIP/{remote_ip}" => ["DELETE": Unsupported],
    "/metrics/flowcount" => ["GET": Unsupported],
    "/metrics/hostcount" => ["GET": Unsupported],
    "/metrics/lbrulecount" => ["GET": Unsupported],
    "/metrics/newflowcount" => ["GET": Unsupported],
    "/metrics/requestcount" => ["GET": Unsupported],
    "/metrics/errorcount" => ["GET": Unsupported],
    "/metrics/processedtraffic" => ["GET": Unsupported],
    "/metrics/lbprocessedtraffic" => ["GET": Unsupported],
    "/metrics/epdisttraffic" => ["GET": Unsupported],
    "/metrics/servicedisttraffic" => ["GET": Unsupported],
    "/metrics/fwdrops" => ["GET": Unsupported],
    "/metrics/reqcountperclient" => ["GET": Unsupported],
    "/logs" => ["GET": Unsupported],
    "/log-archives" => ["GET": Unsupported],
    "/log-archives/{filename}" => ["GET": Unsupported],
    "/nodegraph/all" => ["GET": Unsupported],
    "/nodegraph/{service}" => ["GET": Unsupported],
    "/oauth/{provider}" => ["GET": Unsupported],
    "/oauth/{provider}/callback" => ["GET": Unsupported],
    "/oauth/{provider}/token" => ["GET": Unsupported],
    "/config/cors/all" => ["GET": Unsupported],
    "/config/cors" => ["POST": Unsupported],
    "/config/cors/{cors_url}" => ["DELETE": Unsupported],
    "/config/import" => ["POST": Unsupported],
    "/config/export" => ["GET": Unsupported],
];

/// The probe paths, outside [`BASE`](super::BASE) as Kubernetes probes
/// expect, open without a token (like liveness and version).
pub const PROBES: &[Route] = routes![
    "/healthz" => ["GET": Healthz],
    "/readyz" => ["GET": Readyz],
];

/// Path parameters by name.
pub type Params = BTreeMap<&'static str, String>;

/// Find the route for a path below [`BASE`]. Literal segments beat parameters
/// (`/config/vlan/all` is not `/config/vlan/{vlan_id}`). A path with an
/// empty segment (`//`) matches nothing: read as another path it could name
/// another route (`//config//loadbalancer//all`); one trailing `/` is let be.
pub fn match_route(rest: &str) -> Option<(&'static Route, Params)> {
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let segs: Vec<&str> = match rest {
        "" => Vec::new(),
        _ => rest.strip_prefix('/')?.split('/').collect(),
    };
    if segs.iter().any(|s| s.is_empty()) {
        return None;
    }
    let mut best: Option<(usize, &'static Route, Params)> = None;
    for r in ROUTES {
        let pat: Vec<&'static str> = r.path.split('/').filter(|s| !s.is_empty()).collect();
        if pat.len() != segs.len() {
            continue;
        }
        let mut params = Params::new();
        let mut literals = 0;
        let ok = pat.iter().zip(&segs).all(|(p, s)| {
            if let Some(name) = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                params.insert(name, percent_decode(s));
                true
            } else if p == s {
                literals += 1;
                true
            } else {
                false
            }
        });
        if ok && best.as_ref().is_none_or(|b| literals > b.0) {
            best = Some((literals, r, params));
        }
    }
    best.map(|(_, r, p)| (r, p))
}

/// Decode `%XX` escapes (invalid escapes are kept as they are).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex_digit(b[i + 1]), hex_digit(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

pub fn parse_query(q: Option<&str>) -> BTreeMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_segments_win_over_parameters() {
        let (r, p) = match_route("/config/loadbalancer/all").expect("route");
        assert_eq!(r.path, "/config/loadbalancer/all");
        assert!(p.is_empty());
        let (r, _) = match_route("/config/vlan/all").expect("route");
        assert_eq!(r.path, "/config/vlan/all");
        let (r, p) =
            match_route("/config/loadbalancer/externalipaddress/1.2.3.4/port/80/protocol/tcp")
                .expect("route");
        assert_eq!(r.methods[0].1, Op::LbDelete);
        assert_eq!(p.get("ip_address").map(String::as_str), Some("1.2.3.4"));
        assert!(match_route("/config/nothing").is_none());
        assert_eq!(
            match_route("/config/loadbalancer/all/")
                .expect("trailing /")
                .0
                .path,
            "/config/loadbalancer/all"
        );
        for doubled in [
            "//config//loadbalancer//all",
            "/config//loadbalancer/all",
            "/config/loadbalancer/all//",
            "//",
            "/config/loadbalancer/name//",
        ] {
            assert!(match_route(doubled).is_none(), "{doubled}");
        }
        assert_eq!(match_route("").expect("base").0.methods[0].1, Op::Liveness);
    }

    #[test]
    fn every_swagger_path_is_routed_once() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(seen.insert(r.path), "{} twice", r.path);
        }
        // 102 swagger paths, plus the base path and xlb's OpenAPI document.
        assert_eq!(ROUTES.len(), 104);
    }

    #[test]
    fn probes_sit_outside_the_base_path() {
        for r in PROBES {
            assert!(match_route(r.path).is_none(), "{}", r.path);
            assert!(matches!(r.methods, [("GET", Op::Healthz | Op::Readyz)]));
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("x%zz"), "x%zz");
    }
}
