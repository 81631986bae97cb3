//! `xlb top`: a live view of a running daemon, refreshed every interval —
//! per rule (VIP, port, protocol) packets/s, bytes/s and new flows/s, the
//! dataplane's totals, and drops/s by reason — computed from two
//! successive scrapes of the daemon's Prometheus metrics, as Katran's
//! `-s` view or htop would show it, in plain ANSI.
//!
//! Invariant: a rate is (this scrape − the previous one) / the time between
//! them; a counter that went down (the daemon restarted) reads as 0, and the
//! first screen, with nothing to compare, shows "-".

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::cli::{table, CliError, Client};

/// One sample of the exposition format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric's name.
    pub name: String,
    /// Its labels, in the order written.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

impl Sample {
    /// The value of label `k` ("" if absent).
    pub fn label(&self, k: &str) -> &str {
        self.labels
            .iter()
            .find(|(n, _)| n == k)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// The samples of a Prometheus text exposition (format 0.0.4); comment
/// lines and lines that do not parse are skipped.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let i = line.find(['{', ' '])?;
    let name = &line[..i];
    let mut rest = &line[i..];
    let mut labels = Vec::new();
    if let Some(mut body) = rest.strip_prefix('{') {
        loop {
            body = body.trim_start_matches([',', ' ']);
            if let Some(after) = body.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = body.find('=')?;
            let key = body[..eq].trim().to_string();
            let quoted = body[eq + 1..].strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let close = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break i,
                    c => value.push(c),
                }
            };
            labels.push((key, value));
            body = &quoted[close + 1..];
        }
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Why `xlb top` stopped.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    /// the daemon could not be asked
    #[error(transparent)]
    Client(#[from] CliError),
    /// the screen could not be written
    #[error("writing the screen: {0}")]
    Output(#[from] std::io::Error),
}

/// One rule's counters in a scrape.
#[derive(Debug, Clone, Default, PartialEq)]
struct RuleCounters {
    name: String,
    packets: f64,
    bytes: f64,
    new_flows: f64,
    endpoints: u32,
    up: u32,
}

/// What one scrape says.
#[derive(Debug, Clone)]
pub struct Snapshot {
    at: Instant,
    rules: BTreeMap<String, RuleCounters>,
    rx: f64,
    tx: f64,
    drops: BTreeMap<String, f64>,
    io_drops: f64,
    ct_entries: f64,
}

impl Snapshot {
    /// The counters `xlb top` shows, from the samples of one scrape taken at `at`.
    pub fn from_samples(samples: &[Sample], at: Instant) -> Snapshot {
        let mut s = Snapshot {
            at,
            rules: BTreeMap::new(),
            rx: 0.0,
            tx: 0.0,
            drops: BTreeMap::new(),
            io_drops: 0.0,
            ct_entries: 0.0,
        };
        for m in samples {
            match m.name.as_str() {
                "xlb_endpoint_packets_total" => {
                    let r = s.rules.entry(m.label("rule").into()).or_default();
                    r.packets += m.value;
                    r.name = m.label("name").into();
                }
                "xlb_endpoint_bytes_total" => {
                    s.rules.entry(m.label("rule").into()).or_default().bytes += m.value;
                }
                "xlb_endpoint_up" => {
                    let r = s.rules.entry(m.label("rule").into()).or_default();
                    r.endpoints += 1;
                    r.up += u32::from(m.value > 0.0);
                }
                "xlb_rule_new_flows_total" => {
                    s.rules.entry(m.label("rule").into()).or_default().new_flows += m.value;
                }
                "xlb_worker_rx_packets_total" => s.rx += m.value,
                "xlb_worker_tx_packets_total" => s.tx += m.value,
                "xlb_worker_drops_total" => {
                    *s.drops.entry(m.label("reason").into()).or_default() += m.value;
                }
                "xlb_worker_io_drops_total" => s.io_drops += m.value,
                "xlb_conntrack_entries" => s.ct_entries += m.value,
                _ => {}
            }
        }
        s
    }
}

/// Per-second rate of a counter between two scrapes `dt` seconds apart
/// ("-" without a previous scrape; 0 if the counter went down).
fn rate(prev: Option<f64>, cur: f64, dt: f64) -> String {
    match prev {
        Some(p) if dt > 0.0 => format!("{:.0}", ((cur - p).max(0.0)) / dt),
        _ => "-".to_string(),
    }
}

/// One screen: the rates between `prev` and `cur`.
pub fn render(prev: Option<&Snapshot>, cur: &Snapshot, server: &str, every: Duration) -> String {
    let dt = prev.map_or(0.0, |p| cur.at.duration_since(p.at).as_secs_f64());
    let new_flows = |s: &Snapshot| s.rules.values().map(|r| r.new_flows).sum::<f64>();
    let drops = |s: &Snapshot| s.drops.values().sum::<f64>() + s.io_drops;
    let mut out = format!(
        "xlb top - {server} - every {:.1} s (Ctrl-C ends)\n\n",
        every.as_secs_f64()
    );
    out.push_str(&format!(
        "rx {} pkt/s   tx {} pkt/s   new flows {}/s   drops {}/s   conntrack entries {}\n\n",
        rate(prev.map(|p| p.rx), cur.rx, dt),
        rate(prev.map(|p| p.tx), cur.tx, dt),
        rate(prev.map(new_flows), new_flows(cur), dt),
        rate(prev.map(drops), drops(cur), dt),
        cur.ct_entries,
    ));
    let rows: Vec<Vec<String>> = cur
        .rules
        .iter()
        .filter(|(rule, _)| !rule.is_empty())
        .map(|(rule, r)| {
            let before = prev.and_then(|p| p.rules.get(rule));
            vec![
                rule.clone(),
                r.name.clone(),
                rate(before.map(|b| b.packets), r.packets, dt),
                rate(before.map(|b| b.bytes), r.bytes, dt),
                rate(before.map(|b| b.new_flows), r.new_flows, dt),
                format!("{}/{}", r.up, r.endpoints),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "VIP",
            "NAME",
            "PKT/S",
            "BYTES/S",
            "NEW FLOWS/S",
            "ENDPOINTS UP",
        ],
        &rows,
    ));
    let mut drop_rows: Vec<Vec<String>> = cur
        .drops
        .iter()
        .map(|(reason, n)| {
            vec![
                reason.clone(),
                rate(prev.and_then(|p| p.drops.get(reason).copied()), *n, dt),
                format!("{n:.0}"),
            ]
        })
        .collect();
    drop_rows.push(vec![
        "(packet I/O)".into(),
        rate(prev.map(|p| p.io_drops), cur.io_drops, dt),
        format!("{:.0}", cur.io_drops),
    ]);
    out.push('\n');
    out.push_str(&table(&["DROP REASON", "DROPS/S", "TOTAL"], &drop_rows));
    out
}

/// Fetch the daemon's metrics through `c`.
fn scrape(c: &Client) -> Result<Snapshot, CliError> {
    let text = match c.call("GET", "/metrics", None)? {
        serde_json::Value::String(t) => t,
        other => other.to_string(),
    };
    Ok(Snapshot::from_samples(
        &parse_metrics(&text),
        Instant::now(),
    ))
}

/// Show the view every `every` until stopped, or `count` times if not 0.
/// On a terminal each screen replaces the last; otherwise screens follow
/// each other.
pub fn run(c: &Client, every: Duration, count: u64) -> Result<(), TopError> {
    use std::io::IsTerminal;
    let tty = std::io::stdout().is_terminal();
    let mut prev: Option<Snapshot> = None;
    let mut shown = 0u64;
    loop {
        let started = Instant::now();
        let cur = scrape(c)?;
        let screen = render(prev.as_ref(), &cur, c.server(), every);
        {
            let mut o = std::io::stdout().lock();
            if tty {
                // Home, clear to the end: redraw in place.
                write!(o, "\x1b[H\x1b[2J{screen}")?;
            } else {
                writeln!(o, "{screen}")?;
            }
            o.flush()?;
        }
        prev = Some(cur);
        shown += 1;
        if count != 0 && shown >= count {
            return Ok(());
        }
        std::thread::sleep(every.saturating_sub(started.elapsed()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_lines_parse() {
        let text = "# HELP a x\n# TYPE a counter\na 3\nb{rule=\"10.0.0.1:80/tcp\",name=\"w\\\"eb\"} 7\nc{} 1.5\nbad line\n";
        let s = parse_metrics(text);
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!((s[0].name.as_str(), s[0].value), ("a", 3.0));
        assert_eq!(s[1].label("rule"), "10.0.0.1:80/tcp");
        assert_eq!(s[1].label("name"), "w\"eb");
        assert_eq!(s[1].value, 7.0);
        assert_eq!(s[2].value, 1.5);
    }

    #[test]
    fn rates_come_from_two_scrapes() {
        let t0 = Instant::now();
        let scrape = |packets: u64, flows: u64, drops: u64, at: Instant| {
            let text = format!(
                "xlb_endpoint_packets_total{{rule=\"192.0.2.1:80/tcp\",name=\"web\",endpoint=\"10.0.0.1:80\"}} {packets}\n\
                 xlb_endpoint_up{{rule=\"192.0.2.1:80/tcp\",name=\"web\",endpoint=\"10.0.0.1:80\"}} 1\n\
                 xlb_rule_new_flows_total{{rule=\"192.0.2.1:80/tcp\",name=\"web\"}} {flows}\n\
                 xlb_worker_drops_total{{worker=\"0\",reason=\"no_neighbor\"}} {drops}\n"
            );
            Snapshot::from_samples(&parse_metrics(&text), at)
        };
        let a = scrape(100, 10, 0, t0);
        let first = render(None, &a, "http://x", Duration::from_secs(1));
        assert!(first.contains("192.0.2.1:80/tcp"), "{first}");
        let b = scrape(300, 30, 4, t0 + Duration::from_secs(2));
        let screen = render(Some(&a), &b, "http://x", Duration::from_secs(1));
        let row = screen
            .lines()
            .find(|l| l.starts_with("192.0.2.1:80/tcp"))
            .expect("the rule's row");
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            ["192.0.2.1:80/tcp", "web", "100", "0", "10", "1/1"],
            "{screen}"
        );
        let drop = screen
            .lines()
            .find(|l| l.starts_with("no_neighbor"))
            .expect("the drop row");
        assert_eq!(
            drop.split_whitespace().collect::<Vec<_>>(),
            ["no_neighbor", "2", "4"]
        );
    }
}
