//! docs/grafana/xlb.json: valid JSON, a Grafana dashboard, and every metric
//! its queries name is one the daemon exports (from `GET /metrics` of the
//! API over a state with a rule, the same registry `xlb run` serves).

mod common;

use std::collections::BTreeSet;

use common::{rule, Harness};
use serde_json::Value;

/// PromQL words that are not metric names.
const PROMQL: [&str; 16] = [
    "sum",
    "rate",
    "irate",
    "increase",
    "by",
    "without",
    "on",
    "ignoring",
    "avg",
    "max",
    "min",
    "count",
    "topk",
    "label_values",
    "and",
    "or",
];

/// The metric names a PromQL expression reads: identifiers outside label
/// matchers, ranges and grouping lists, not called as functions.
fn metric_names(expr: &str) -> Vec<String> {
    // Blank out `{...}` and `[...]`.
    let mut plain = String::new();
    let mut until = None;
    for c in expr.chars() {
        match (until, c) {
            (Some(end), c) if c == end => until = None,
            (Some(_), _) => {}
            (None, '{') => until = Some('}'),
            (None, '[') => until = Some(']'),
            (None, c) => plain.push(c),
        }
    }
    // Drop `by (...)` and `without (...)`.
    for kw in ["by", "without"] {
        while let Some(at) = plain.find(&format!("{kw} (")) {
            let close = plain[at..].find(')').map_or(plain.len(), |i| at + i + 1);
            plain.replace_range(at..close, " ");
        }
    }
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '$';
    let mut out = Vec::new();
    let mut rest = plain.as_str();
    while let Some(start) = rest.find(is_word) {
        let tail = &rest[start..];
        let end = tail.find(|c| !is_word(c)).unwrap_or(tail.len());
        let word = &tail[..end];
        let called = tail[end..].trim_start().starts_with('(');
        if !called
            && !word.starts_with(|c: char| c.is_ascii_digit() || c == '$')
            && !PROMQL.contains(&word)
        {
            out.push(word.to_string());
        }
        rest = &tail[end..];
    }
    out
}

#[test]
fn promql_names_are_found() {
    assert_eq!(
        metric_names(
            r#"sum by (rule, name) (rate(xlb_x_total{instance=~"$instance"}[$__rate_interval])) / sum(y)"#
        ),
        ["xlb_x_total", "y"]
    );
    assert_eq!(metric_names("8 * sum(rate(a[1m]))"), ["a"]);
}

#[tokio::test]
async fn the_dashboard_reads_only_metrics_the_daemon_exports() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grafana/xlb.json");
    let text = std::fs::read_to_string(path).expect("docs/grafana/xlb.json");
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is valid JSON");
    assert!(dash["title"].is_string() && dash["uid"].is_string());
    let panels = dash["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());

    let h = Harness::new();
    let r = h
        .post(
            "/netlox/v1/config/loadbalancer",
            &rule("192.0.2.1", 80, &[("10.0.0.1", 80)]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let metrics = h.get("/netlox/v1/metrics").await.body;
    let exported: BTreeSet<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(exported.contains("xlb_build_info"), "{metrics}");

    let mut read = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "panel {title}: {expr} reads no metric");
            for n in names {
                assert!(
                    exported.contains(n.as_str()),
                    "panel {title}: {n} is not exported by the daemon"
                );
                read.insert(n);
            }
        }
    }
    // Template variables: label_values(METRIC, label).
    for v in dash["templating"]["list"].as_array().expect("templating") {
        if let Some(q) = v["query"]
            .as_str()
            .and_then(|q| q.strip_prefix("label_values("))
        {
            let metric = q.split(',').next().unwrap_or("").trim();
            assert!(
                exported.contains(metric),
                "variable {}: {metric}",
                v["name"]
            );
        }
    }
    for must in [
        "xlb_rule_new_flows_total",
        "xlb_worker_drops_total",
        "xlb_build_info",
    ] {
        assert!(read.contains(must), "the dashboard shows {must}");
    }
}
