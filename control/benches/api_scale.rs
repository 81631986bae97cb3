//! Control-plane scale benchmark (issue 4): the real axum API in-process on
//! loopback, 10,000 rules created over HTTP, then endpoint changes at a fixed
//! offered rate (kube-loxilb style: re-POST of the rule with its new endpoint
//! list, `oper` 0) for a fixed time. A thread polls the tables handle the way a
//! worker does (one `load()` per "batch") and notes when each change is in the
//! snapshot it sees: that is "live in the dataplane".
//!
//! Reports the creation rate, the achieved change rate and POST-to-live
//! latency (p50/p99/max), plus the POST round trip for comparison.
//!
//! `cargo bench -p xlb-control --bench api_scale -- [--rules N] [--rate R]
//! [--seconds S] [--clients C] [--sel rr|hash]`

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::json;
use xlb_control::api::Api;
use xlb_control::controller::{ControlState, Controller};
use xlb_control::dataplane::{StaticNet, StaticView, Unattached};
use xlb_dataplane::net::Ip16;
use xlb_dataplane::tables::TablesHandle;

/// How long a "worker" waits between two loads of the tables (a worker loads
/// once per RX batch; an idle worker in wakeup mode polls about this often).
const POLL_EVERY: Duration = Duration::from_micros(50);

struct Opts {
    rules: u32,
    rate: u32,
    seconds: u32,
    clients: u32,
    sel: u32,
}

fn opts() -> anyhow::Result<Opts> {
    let mut o = Opts {
        rules: 10_000,
        rate: 1_000,
        seconds: 10,
        clients: 8,
        sel: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = || -> anyhow::Result<u32> {
            args.next()
                .ok_or_else(|| anyhow!("{a} needs a value"))?
                .parse()
                .with_context(|| a.clone())
        };
        match a.as_str() {
            "--rules" => o.rules = num()?,
            "--rate" => o.rate = num()?,
            "--seconds" => o.seconds = num()?,
            "--clients" => o.clients = num()?.max(1),
            "--sel" => {
                o.sel = match args.next().as_deref() {
                    Some("rr") => 0,
                    Some("hash") => 1,
                    other => bail!("--sel rr|hash, not {other:?}"),
                }
            }
            // cargo bench passes --bench; ignore what we do not know.
            _ => {}
        }
    }
    if o.rules == 0 || o.rules > 60_000 {
        bail!("--rules must be 1..=60000");
    }
    Ok(o)
}

/// The VIP of rule `r`: 20.0.0.0/8, one rule per VIP (port 80/tcp).
fn vip(r: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x1400_0000 + r + 1)
}

/// The endpoint that change `k` brings in (unique per change).
fn changed_endpoint(k: u64) -> Ipv4Addr {
    Ipv4Addr::from(0xac10_0000 + (k as u32 & 0x000f_ffff))
}

fn body(r: u32, sel: u32, third: Ipv4Addr) -> String {
    let base = 0x0a00_0000 + (r % 4000) * 2;
    let eps = [Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2), third];
    json!({
        "serviceArguments": {"externalIP": vip(r).to_string(), "port": 80, "protocol": "tcp",
                             "sel": sel, "mode": 0, "oper": 0, "name": format!("svc-{r}")},
        "endpoints": eps.iter().map(|e| json!({"endpointIP": e.to_string(), "targetPort": 8080, "weight": 1}))
            .collect::<Vec<_>>(),
    })
    .to_string()
}

struct Pending {
    vip: Ip16,
    endpoint: Ip16,
    sent: Instant,
}

/// What the polling "worker" found.
#[derive(Default)]
struct Seen {
    pending: HashMap<u64, Pending>,
    live: Vec<Duration>,
    generations: u64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn post(agent: &ureq::Agent, url: &str, body: &str) -> anyhow::Result<()> {
    match agent
        .post(url)
        .set("Content-Type", "application/json")
        .send_string(body)
    {
        Ok(_) => Ok(()),
        Err(ureq::Error::Status(code, resp)) => {
            bail!(
                "POST answered {code}: {}",
                resp.into_string().unwrap_or_default()
            )
        }
        Err(e) => Err(e.into()),
    }
}

fn main() -> anyhow::Result<()> {
    let o = opts()?;
    println!(
        "api_scale: {} rules, {} changes/s offered for {} s, {} clients, sel {}; load average before: {}",
        o.rules,
        o.rate,
        o.seconds,
        o.clients,
        if o.sel == 0 { "rr" } else { "hash" },
        loadavg()
    );

    // The server: the real router over the real control state, no NIC.
    let handle = TablesHandle::new();
    let state = ControlState::new(
        Arc::new(Unattached::new(handle.clone())),
        Arc::new(StaticNet::default()),
    );
    let controller = Controller::start(state)?;
    let api = Arc::new(Api::new(controller.handle(), Arc::new(StaticView::new())));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind(SocketAddr::from((
        Ipv4Addr::LOCALHOST,
        0,
    ))))?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(xlb_control::daemon::serve_on(listener, api, async {
        let _ = stop_rx.await;
    }));
    let url = format!("http://{addr}/netlox/v1/config/loadbalancer");

    // Phase 1: create the rules as fast as the clients can.
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..o.clients)
            .map(|_| {
                let (next, url) = (next.clone(), url.clone());
                s.spawn(move || -> anyhow::Result<()> {
                    let agent = ureq::AgentBuilder::new().max_idle_connections(4).build();
                    loop {
                        let r = next.fetch_add(1, Ordering::Relaxed);
                        if r >= u64::from(o.rules) {
                            return Ok(());
                        }
                        let r = r as u32;
                        post(
                            &agent,
                            &url,
                            &body(r, o.sel, Ipv4Addr::from(0x0b00_0000 + r)),
                        )?;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow!("client panicked"))??;
        }
        Ok(())
    })?;
    let created = t0.elapsed();
    let services = handle.current().services.len();
    if services != o.rules as usize {
        bail!("expected {} rules in the tables, found {services}", o.rules);
    }
    println!(
        "create: {} rules in {:.2} s = {:.0} rules/s (every POST answered 200; all {} in the published tables)",
        o.rules,
        created.as_secs_f64(),
        f64::from(o.rules) / created.as_secs_f64(),
        services
    );

    // For scale: the table work alone of one endpoint change (no HTTP), on the
    // full snapshot, not published.
    {
        let cur = handle.current();
        let n = 2000u32;
        let specs: Vec<_> = (0..n)
            .map(|k| {
                let key = cur.services[(k % o.rules) as usize].spec.key;
                let mut spec = cur.services[cur.service_index(&key).expect("rule")]
                    .spec
                    .clone();
                spec.endpoints[2].addr = IpAddr::V4(changed_endpoint(u64::from(k) + 500_000));
                spec
            })
            .collect();
        let t = Instant::now();
        for spec in specs {
            let next = cur
                .update(&[xlb_dataplane::tables::ServiceChange::Upsert(spec)], &[])
                .map_err(|e| anyhow!("{e}"))?;
            std::hint::black_box(&next);
        }
        println!(
            "table work per change (Tables::update on {} rules, incl. dropping it): {:.1} us",
            o.rules,
            t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
        );
    }

    // Phase 2: endpoint changes at the offered rate, watched by a polling "worker".
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (seen, stop, handle) = (seen.clone(), stop.clone(), handle.clone());
        std::thread::spawn(move || {
            let mut gen = handle.load().generation;
            while !stop.load(Ordering::Relaxed) {
                {
                    let t = handle.load();
                    if t.generation != gen {
                        gen = t.generation;
                        let now = Instant::now();
                        let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                        s.generations += 1;
                        let mut done = Vec::new();
                        for (k, p) in &s.pending {
                            let live = t.lookup(p.vip, 6, 80).is_some_and(|svc| {
                                svc.endpoints.iter().any(|e| e.addr == p.endpoint)
                            });
                            if live {
                                done.push((*k, now.duration_since(p.sent)));
                            }
                        }
                        for (k, d) in done {
                            s.pending.remove(&k);
                            s.live.push(d);
                        }
                    }
                }
                std::thread::sleep(POLL_EVERY);
            }
        })
    };
    let total = u64::from(o.rate) * u64::from(o.seconds);
    let period = Duration::from_secs_f64(1.0 / f64::from(o.rate.max(1)));
    let next = Arc::new(AtomicU64::new(0));
    let rtts = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let lag = Arc::new(AtomicU64::new(0));
    let t1 = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..o.clients)
            .map(|_| {
                let (next, url, seen, rtts, lag) = (
                    next.clone(),
                    url.clone(),
                    seen.clone(),
                    rtts.clone(),
                    lag.clone(),
                );
                s.spawn(move || -> anyhow::Result<()> {
                    let agent = ureq::AgentBuilder::new().max_idle_connections(4).build();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        if k >= total {
                            return Ok(());
                        }
                        // Open loop: change k is due at t1 + k * period.
                        let due = t1 + period * (k as u32);
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        } else {
                            lag.fetch_max((now - due).as_micros() as u64, Ordering::Relaxed);
                        }
                        let r = (k % u64::from(o.rules)) as u32;
                        let third = changed_endpoint(k);
                        let b = body(r, o.sel, third);
                        let sent = Instant::now();
                        seen.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .pending
                            .insert(
                                k,
                                Pending {
                                    vip: Ip16::from(IpAddr::V4(vip(r))),
                                    endpoint: Ip16::from(IpAddr::V4(third)),
                                    sent,
                                },
                            );
                        post(&agent, &url, &b)?;
                        rtts.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(sent.elapsed());
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow!("client panicked"))??;
        }
        Ok(())
    })?;
    let elapsed = t1.elapsed();
    // Give the poller a moment to see the last snapshot.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline
        && !seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending
            .is_empty()
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::Relaxed);
    poller.join().map_err(|_| anyhow!("poller panicked"))?;
    let _ = stop_tx.send(());
    rt.block_on(server)??;

    let s = seen.lock().unwrap_or_else(|e| e.into_inner());
    let mut live = s.live.clone();
    live.sort();
    let mut rtts = rtts.lock().unwrap_or_else(|e| e.into_inner()).clone();
    rtts.sort();
    println!(
        "change: {} re-POSTs in {:.2} s = {:.0} changes/s achieved ({} offered; worst lag behind schedule {:.1} ms); {} snapshots published",
        total,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        o.rate,
        lag.load(Ordering::Relaxed) as f64 / 1e3,
        s.generations
    );
    println!(
        "POST-to-live (seen by a polling worker): p50 {}  p99 {}  max {}  ({} of {} seen live, {} never)",
        ms(percentile(&live, 0.5)),
        ms(percentile(&live, 0.99)),
        ms(live.last().copied().unwrap_or_default()),
        live.len(),
        total,
        s.pending.len()
    );
    println!(
        "POST round trip: p50 {}  p99 {}  max {}",
        ms(percentile(&rtts, 0.5)),
        ms(percentile(&rtts, 0.99)),
        ms(rtts.last().copied().unwrap_or_default())
    );
    println!("load average after: {}", loadavg());
    if !s.pending.is_empty() {
        bail!("{} changes never became live", s.pending.len());
    }
    Ok(())
}
