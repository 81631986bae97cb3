//! Every error the API can answer with, and the exact wire shape loxilb gives it.
//!
//! Two families exist because loxilb has two layers: go-openapi (the framework)
//! rejects unparsable or schema-invalid requests with `{"code","message"}`, and
//! loxilb's handlers reject valid-looking requests with
//! `{"code","fields":null,"message","result"}` where `result` is the raw
//! `<class> error` text that clients match on (kube-loxilb looks for "exist").

use serde_json::json;

/// A handler-level rejection; the `Display` text is what goes into `result`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// identical rule posted again (clients treat text containing "exist" as success)
    #[error("lbrule-exists error")]
    Exists,
    /// delete of a rule that is not configured
    #[error("no-rule error")]
    NoRule,
    /// attach/detach on a rule that is not configured
    #[error("lbrule not-exists error")]
    RuleNotExists,
    /// zero or more than 32 endpoints
    #[error("endpoints-range error")]
    EndpointsRange,
    /// the VIP, port or port range is not usable
    #[error("malformed-service error{}", detail(.0))]
    MalformedService(String),
    /// unknown protocol
    #[error("malformed-proto error")]
    MalformedProto,
    /// an argument is out of range or inconsistent with another
    #[error("service-args error{}", detail(.0))]
    ServiceArgs(String),
    /// an endpoint's port or weight is not usable, or it is listed twice (xlb's checks)
    #[error("malformed-endpoint error{}", detail(.0))]
    MalformedEndpoint(String),
    /// an endpoint address that does not parse
    #[error("malformed-lbep error")]
    MalformedLbEp,
    /// an IPv6 endpoint behind an IPv4 VIP
    #[error("malformed-service nat46 error")]
    Nat46,
    /// DSR with a target port other than the service port
    #[error("malformed-service dsr-port error")]
    DsrPort,
    /// a private IP that does not parse
    #[error("malformed-service privateIP error")]
    PrivateIp,
    /// secondary IPs on a rule that is not sctp
    #[error("secondaryIP-args error")]
    SecondaryIpArgs,
    /// a rule's probe type that rules do not take
    #[error("malformed-service-ptype error{}", detail(.0))]
    ProbeType(String),
    /// a rule's probe port missing for tcp/udp/sctp probes, or given for others
    #[error("malformed-service-pport error")]
    ProbePort,
    /// loxilb accepts it, xlb does not implement it
    #[error("unsupported error: {0} is not supported by xlb")]
    Unsupported(String),
    /// too many rules or endpoints
    #[error("rule-hwm error{}", detail(.0))]
    RuleHwm(String),
    /// a health-probe entry that is not configured
    #[error("host-notfound error")]
    HostNotFound,
    /// a health-probe entry a load-balancer rule still uses
    #[error("LB Rule-referred")]
    RuleReferred,
    /// a probe entry's host is not an address
    #[error("host-parse error")]
    HostParse,
    /// a probe entry's retries or duration out of range
    #[error("host-args error")]
    HostArgs,
    /// a probe entry's probe type missing or unknown
    #[error("host-args unknown probe type")]
    HostProbeType,
    /// a tcp/udp/sctp probe entry without a port
    #[error("host-args unknown probe port")]
    HostProbePort,
    /// a probe entry's `probeTimeout` or `activeReTries` (xlb's knobs) out of range
    #[error("host-args error: {0}")]
    HostProbeKnob(String),
    /// a host state that is not green, yellow or red, or a bad port/protocol
    #[error("host-args error{}", detail(.0))]
    HostState(String),
    /// a cluster-instance state that is not usable
    #[error("malformed-cistate error{}", detail(.0))]
    MalformedCiState(String),
    /// a cluster state that is not one of loxilb's names (its exact text)
    #[error("invalid cluster-state")]
    InvalidCiState,
    /// a config file reload with rejected entries (nothing was changed)
    #[error("config-rejected error: {0}")]
    ConfigRejected(String),
    /// anything unclassified
    #[error("internal error: {0}")]
    Internal(String),
}

fn detail(d: &str) -> String {
    if d.is_empty() {
        String::new()
    } else {
        format!(": {d}")
    }
}

impl RuleError {
    /// The HTTP status loxilb gives this class.
    pub fn status(&self) -> u16 {
        match self {
            RuleError::Exists | RuleError::RuleReferred => 409,
            RuleError::NoRule | RuleError::RuleNotExists | RuleError::HostNotFound => 404,
            RuleError::RuleHwm(_) => 403,
            RuleError::Internal(_) => 500,
            _ => 400,
        }
    }
}

/// Any rejection the API answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// a handler rejected the request
    #[error("{0}")]
    Handler(#[from] RuleError),
    /// a required field is missing (go-openapi code 602)
    #[error("{0} is required")]
    Required(String),
    /// an enum value out of range (go-openapi code 606)
    #[error("{path} should be one of {allowed}")]
    Enum {
        /// e.g. "serviceArguments.sel in body"
        path: String,
        /// e.g. "[0 1 2 3 4 5 6]"
        allowed: &'static str,
    },
    /// a path or query parameter of the wrong type (go-openapi code 601)
    #[error("{name} in {location} must be of type {ty}: {value:?}")]
    InvalidType {
        /// parameter name
        name: String,
        /// "path" or "query"
        location: &'static str,
        /// "number", "boolean"
        ty: &'static str,
        /// what was sent
        value: String,
    },
    /// a string longer than xlb keeps (go-openapi code 603)
    #[error("{path} should be at most {max} chars long")]
    TooLong {
        /// e.g. "serviceArguments.name in body"
        path: String,
        /// the most bytes allowed
        max: usize,
    },
    /// the body is not JSON or does not fit the types
    #[error("parsing attr body from \"\" failed, because {0}")]
    Parse(String),
    /// a body larger than the API takes
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    /// a body without `Content-Type: application/json`
    #[error("unsupported media type {0:?}, only [application/json] are allowed")]
    UnsupportedMedia(String),
    /// no such path
    #[error("path {0} was not found")]
    NotFound(String),
    /// the path exists but not with this method
    #[error("method {method} is not allowed, but [{}] are", allowed.join(" "))]
    MethodNotAllowed {
        /// the method used
        method: String,
        /// the methods the path has
        allowed: Vec<&'static str>,
    },
    /// bearer auth is on and the token is missing or wrong
    #[error("invalid or missing bearer token")]
    Unauthorized,
    /// a loxilb API path xlb does not implement
    #[error("{method} {path} is not supported by xlb")]
    NotImplemented {
        /// the method used
        method: String,
        /// the path as requested
        path: String,
    },
}

impl ApiError {
    /// HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::Handler(e) => e.status(),
            ApiError::Required(_)
            | ApiError::Enum { .. }
            | ApiError::InvalidType { .. }
            | ApiError::TooLong { .. } => 422,
            ApiError::Parse(_) => 400,
            ApiError::TooLarge(_) => 413,
            ApiError::UnsupportedMedia(_) => 415,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::Unauthorized => 401,
            ApiError::NotImplemented { .. } => 501,
        }
    }

    /// The JSON body, in loxilb's shape for this kind of error.
    pub fn body(&self) -> serde_json::Value {
        let status = self.status();
        match self {
            ApiError::Handler(e) => json!({
                "code": status,
                "fields": null,
                "message": handler_message(status),
                "result": e.to_string(),
            }),
            ApiError::Unauthorized | ApiError::NotImplemented { .. } => json!({
                "code": status,
                "fields": null,
                "message": handler_message(status),
                "result": self.to_string(),
            }),
            ApiError::Required(_) => json!({"code": 602, "message": self.to_string()}),
            ApiError::TooLong { .. } => json!({"code": 603, "message": self.to_string()}),
            ApiError::Enum { .. } => json!({"code": 606, "message": self.to_string()}),
            ApiError::InvalidType { .. } => json!({"code": 601, "message": self.to_string()}),
            _ => json!({"code": status, "message": self.to_string()}),
        }
    }
}

/// loxilb's `message` per status (`api/restapi/handler/common.go`).
fn handler_message(status: u16) -> &'static str {
    match status {
        400 => "Malformed arguments for API call",
        401 => "Invalid authentication credentials",
        403 => "Capacity insufficient",
        404 => "Resource not found",
        409 => "Resource conflict: Resource already exists OR dependency not found",
        501 => "Not implemented by xlb",
        _ => "Internal service error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_errors_have_loxilb_shape() {
        let e = ApiError::from(RuleError::Exists);
        assert_eq!(e.status(), 409);
        assert_eq!(
            serde_json::to_string(&e.body()).expect("json"),
            r#"{"code":409,"fields":null,"message":"Resource conflict: Resource already exists OR dependency not found","result":"lbrule-exists error"}"#
        );
        assert_eq!(
            RuleError::MalformedService(String::new()).to_string(),
            "malformed-service error"
        );
        assert_eq!(
            RuleError::ServiceArgs("x".into()).to_string(),
            "service-args error: x"
        );
    }

    #[test]
    fn framework_errors_have_go_openapi_shape() {
        let e = ApiError::Required("serviceArguments.externalIP in body".into());
        assert_eq!(
            serde_json::to_string(&e.body()).expect("json"),
            r#"{"code":602,"message":"serviceArguments.externalIP in body is required"}"#
        );
        let e = ApiError::MethodNotAllowed {
            method: "POST".into(),
            allowed: vec!["GET", "DELETE"],
        };
        assert_eq!(
            e.to_string(),
            "method POST is not allowed, but [GET DELETE] are"
        );
        let e = ApiError::InvalidType {
            name: "port".into(),
            location: "path",
            ty: "number",
            value: "x".into(),
        };
        assert_eq!(e.to_string(), r#"port in path must be of type number: "x""#);
    }
}
