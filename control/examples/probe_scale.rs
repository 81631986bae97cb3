//! Health probing at scale, through control: thousands of monitored rule
//! endpoints probed by `xlb run`'s own prober (`xlb_control::health`), their
//! results turned into table snapshots, as in the daemon.
//!
//! `cargo run --release -p xlb-control --example probe_scale -- [endpoints] [period_s] [seconds]`
//! (defaults 5000 1 10). Endpoints are loopback addresses 127.1.x.y in rules
//! of 32, monitored with tcp probes every `period_s`. A listener thread
//! records when each endpoint is probed. Reports:
//! - drift: how far each endpoint's probe-to-probe interval strays from the
//!   period (p50/p99/max), and probes per second against the ideal;
//! - control-plane CPU: the process minus the listener thread, per wall second;
//! - mass failure: the last tenth of the rules probe a second port whose
//!   listener is then closed; the time until every one of those endpoints is
//!   out of the published tables, against the budget retries × period + 1 s
//!   timeout, and how many snapshots that took.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use xlb_control::controller::{ControlState, Controller};
use xlb_control::dataplane::{StaticNet, Unattached};
use xlb_control::model::{parse_value, LbRule};
use xlb_dataplane::tables::{EndpointState, TablesHandle};

const PORT_OK: u16 = 7001;
const PORT_FAIL: u16 = 7002;
const RETRIES: u32 = 2;

fn endpoint(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250) as u8 + 1)
}

/// CPU time (user + system) of this process's threads, except those named `skip`.
fn cpu_except(skip: &str) -> Duration {
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task").expect("procfs") {
        let path = task.expect("task").path();
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        let open = stat.find('(').expect("comm");
        let close = stat.rfind(')').expect("comm");
        if &stat[open + 1..close] == skip {
            continue;
        }
        let f: Vec<&str> = stat[close + 2..].split(' ').collect();
        ticks += f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    }
    Duration::from_millis(ticks * 10)
}

type Seen = Arc<Mutex<HashMap<IpAddr, Vec<Instant>>>>;

/// Accept on `port` in a thread named "listener" until `stop`; record per
/// local (endpoint) address when it was probed.
fn listen(port: u16, seen: Seen, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let l = TcpListener::bind(("0.0.0.0", port)).expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    std::thread::Builder::new()
        .name("listener".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let at = Instant::now();
                        let local = s.local_addr().expect("local").ip();
                        seen.lock().unwrap().entry(local).or_default().push(at);
                    }
                    Err(_) => std::thread::sleep(Duration::from_micros(200)),
                }
            }
        })
        .expect("thread")
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let n = *args.first().unwrap_or(&5000) as usize;
    let period = *args.get(1).unwrap_or(&1);
    let secs = *args.get(2).unwrap_or(&10);
    assert!(n <= 250 * 250, "at most 62500 endpoints");

    let seen: Seen = Arc::default();
    let stop_ok = Arc::new(AtomicBool::new(false));
    let stop_fail = Arc::new(AtomicBool::new(false));
    let l_ok = listen(PORT_OK, seen.clone(), stop_ok.clone());
    let l_fail = listen(PORT_FAIL, seen.clone(), stop_fail.clone());

    let handle = TablesHandle::new();
    let mut state = ControlState::new(
        Arc::new(Unattached::new(handle.clone())),
        Arc::new(StaticNet::default()),
    );
    let rules = n.div_ceil(32);
    let failing_from = rules - rules.div_ceil(10);
    let t_post = Instant::now();
    {
        let st = &mut state;
        for r in 0..rules {
            let eps: Vec<serde_json::Value> = (r * 32..((r + 1) * 32).min(n))
                .map(|i| {
                    serde_json::json!({"endpointIP": endpoint(i).to_string(), "targetPort": 8080, "weight": 1})
                })
                .collect();
            let body = serde_json::json!({
                "serviceArguments": {
                    "externalIP": format!("192.0.{}.{}", 2 + r / 250, r % 250 + 1),
                    "port": 80, "protocol": "tcp", "sel": 1, "mode": 2, "monitor": true,
                    "probetype": "tcp",
                    "probeport": if r >= failing_from { PORT_FAIL } else { PORT_OK },
                    "probeTimeout": period, "probeRetries": RETRIES,
                },
                "endpoints": eps,
            });
            let rule = parse_value::<LbRule>(body)
                .expect("rule body")
                .validate()
                .expect("valid rule");
            st.post_rule(rule).expect("accepted");
        }
    }
    let failing: usize = (failing_from * 32..n).count();
    println!(
        "{n} monitored endpoints in {rules} rules (posted in {:.2?}), tcp probes every {period} s, {RETRIES} retries",
        t_post.elapsed()
    );

    let controller = Controller::start(state).expect("controller thread");
    xlb_control::health::spawn(controller.handle());
    // Warm-up: the prober picks the entries up (every 500 ms) and spreads them.
    tokio::time::sleep(Duration::from_secs(period + 1)).await;
    let t0 = Instant::now();
    let cpu0 = cpu_except("listener");
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (cpu_except("listener") - cpu0).as_secs_f64();

    let p = period as f64;
    let (mut drift, mut probes) = (Vec::new(), 0usize);
    {
        let seen = seen.lock().unwrap();
        for times in seen.values() {
            let inside: Vec<&Instant> = times
                .iter()
                .filter(|t| **t >= t0 && t.duration_since(t0).as_secs_f64() <= wall)
                .collect();
            probes += inside.len();
            for w in inside.windows(2) {
                drift.push((w[1].duration_since(*w[0]).as_secs_f64() - p).abs() * 1e3);
            }
        }
    }
    drift.sort_by(f64::total_cmp);
    let probed = seen.lock().unwrap().len();
    println!(
        "drift of probe intervals from {p} s over {wall:.1} s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} intervals)",
        pct(&drift, 0.5),
        pct(&drift, 0.99),
        pct(&drift, 1.0),
        drift.len()
    );
    println!(
        "probes: {:.0}/s of an ideal {:.0}/s; {probed}/{n} endpoints probed",
        probes as f64 / wall,
        n as f64 / p
    );
    println!(
        "control-plane cpu: {:.1}% of one core ({:.1} µs per probe; listener thread excluded)",
        100.0 * cpu / wall,
        1e6 * cpu / probes.max(1) as f64
    );

    // Mass failure: close the second port's listener.
    let down_now = || {
        handle
            .current()
            .services
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.state == EndpointState::Down)
            .count()
    };
    assert_eq!(down_now(), 0, "every endpoint up before the failure");
    let g0 = handle.current().generation;
    stop_fail.store(true, Ordering::Relaxed);
    l_fail.join().expect("listener");
    let t_fail = Instant::now();
    let budget = Duration::from_secs(u64::from(RETRIES) * period + 1);
    let mut first = None;
    while t_fail.elapsed() < budget * 3 {
        let d = down_now();
        if d > 0 && first.is_none() {
            first = Some(t_fail.elapsed());
        }
        if d == failing {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all = t_fail.elapsed();
    let down = down_now();
    println!(
        "mass failure of {failing} endpoints: first out after {:.2?}, {down}/{failing} out after {all:.2?} (budget {budget:?}), in {} snapshots",
        first.unwrap_or_default(),
        handle.current().generation - g0
    );
    stop_ok.store(true, Ordering::Relaxed);
    l_ok.join().expect("listener");
    if down != failing {
        std::process::exit(1);
    }
}
