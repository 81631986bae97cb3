#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::{sleep, timeout, Instant};

use super::*;
use crate::testutil::*;
use xlb_testkit::{Lab, Veth};

const INTERVAL: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_millis(100);
/// Scheduling and CI noise allowed on top of the protocol bound.
const SLACK: Duration = Duration::from_millis(400);

fn fast(addr: SocketAddr, kind: ProbeKind) -> ProbeSpec {
    let mut s = ProbeSpec::new(addr.ip(), kind, addr.port());
    s.interval = INTERVAL;
    s.timeout = TIMEOUT;
    s.retries = 2;
    s
}

/// Waits for the next transition of `name` (others are returned in `other`).
async fn next_of(
    rx: &mut broadcast::Receiver<Transition>,
    name: &str,
    within: Duration,
    other: &mut Vec<Transition>,
) -> Option<Transition> {
    let end = Instant::now() + within;
    loop {
        let t = tokio::time::timeout_at(end, rx.recv()).await.ok()?.ok()?;
        if t.name == name {
            return Some(t);
        }
        other.push(t);
    }
}

async fn wait_probes(e: &ProbeEngine, name: &str, n: u64) {
    timeout(Duration::from_secs(5), async {
        while e
            .snapshot()
            .iter()
            .find(|s| s.spec.name == name)
            .map_or(0, |s| s.probes)
            < n
        {
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("probes ran");
}

#[tokio::test]
async fn tcp_down_and_up_within_the_bound() {
    let _timing = TIMING.lock().await;
    let mut srv = TcpServer::start("127.0.0.1:0".parse().unwrap()).await;
    let e = ProbeEngine::new(16);
    let mut rx = e.subscribe();
    let name = e.upsert(fast(srv.addr, ProbeKind::Tcp)).unwrap();
    assert_eq!(name, format!("127.0.0.1_tcp_{}", srv.addr.port()));
    wait_probes(&e, &name, 1).await;
    assert_eq!(e.state(&name), Some(ProbeState::Up));

    srv.close().await;
    let closed = Instant::now();
    let bound = INTERVAL * 2 + TIMEOUT + SLACK;
    let t = next_of(&mut rx, &name, bound, &mut vec![])
        .await
        .expect("went down in time");
    assert_eq!((t.from, t.to), (ProbeState::Up, ProbeState::Down));
    assert_eq!(t.cause, Cause::ProbeFailed(ProbeFailure::Refused));
    let took = closed.elapsed();
    assert!(
        took >= INTERVAL,
        "two failures need at least one interval: {took:?}"
    );
    let st = &e.snapshot()[0];
    assert_eq!(st.state, ProbeState::Down);
    assert_eq!(st.consecutive_failures, 2);
    assert_eq!(st.last_error, Some(ProbeFailure::Refused));

    let _srv = TcpServer::start(srv.addr).await;
    let t = next_of(&mut rx, &name, INTERVAL + TIMEOUT + SLACK, &mut vec![])
        .await
        .expect("came back in time");
    assert_eq!(
        (t.from, t.to, t.cause),
        (ProbeState::Down, ProbeState::Up, Cause::ProbeSucceeded)
    );
    let st = &e.snapshot()[0];
    assert!(st.min_delay.unwrap() <= st.avg_delay.unwrap());
    assert!(st.avg_delay.unwrap() <= st.max_delay.unwrap());
}

#[tokio::test]
async fn flapping_target_only_moves_itself() {
    let _timing = TIMING.lock().await;
    let stable: Vec<TcpServer> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(TcpServer::start("127.0.0.1:0".parse().unwrap()).await);
        }
        v
    };
    let mut flapper = TcpServer::start("127.0.0.1:0".parse().unwrap()).await;
    let e = ProbeEngine::new(16);
    let mut rx = e.subscribe();
    for s in &stable {
        e.upsert(fast(s.addr, ProbeKind::Tcp)).unwrap();
    }
    let mut f = fast(flapper.addr, ProbeKind::Tcp);
    f.name = "flapper".into();
    f.retries = 1;
    e.upsert(f).unwrap();
    let addr = flapper.addr;
    for i in 0..8 {
        sleep(INTERVAL).await;
        if i % 2 == 0 {
            flapper.close().await;
        } else {
            flapper = TcpServer::start(addr).await;
        }
    }
    sleep(INTERVAL).await;
    let mut seen = Vec::new();
    while let Ok(t) = rx.try_recv() {
        seen.push(t);
    }
    assert!(
        seen.iter().all(|t| t.name == "flapper"),
        "stable targets moved: {seen:?}"
    );
    assert!(seen.len() >= 3, "the flapper moved {} times", seen.len());
    for w in seen.windows(2) {
        assert_eq!(w[0].to, w[1].from, "transitions chain");
    }
    for st in e.snapshot() {
        if st.spec.name != "flapper" {
            assert_eq!(st.state, ProbeState::Up);
            assert!(st.probes >= 6);
        }
    }
}

#[tokio::test]
async fn udp_http_https_none_through_the_engine() {
    let _timing = TIMING.lock().await;
    let (echo, echo_task) = udp_echo().await;
    let (http, http_knobs, _h) = http_server("/").await;
    let (https, https_knobs, _hs) = https_server("/").await;
    *https_knobs.body.lock().unwrap() = "ok".into();
    let e = ProbeEngine::new(16);
    let mut rx = e.subscribe();
    let udp = e.upsert(fast(echo, ProbeKind::Udp)).unwrap();
    let http = e.upsert(fast(http, ProbeKind::Http)).unwrap();
    let mut hs = fast(https, ProbeKind::Https);
    hs.resp = "ok".into();
    hs.timeout = Duration::from_millis(150);
    let https = e.upsert(hs).unwrap();
    let none = e
        .upsert({
            let mut n = ProbeSpec::new("127.0.2.1".parse().unwrap(), ProbeKind::None, 0);
            n.interval = INTERVAL;
            n
        })
        .unwrap();
    for n in [&udp, &http, &https, &none] {
        wait_probes(&e, n, 1).await;
    }
    assert!(e
        .snapshot()
        .iter()
        .all(|s| s.state == ProbeState::Up && s.last_error.is_none()));

    // Take all three down in their own way.
    echo_task.abort();
    let _ = echo_task.await;
    http_knobs.status.store(503, Ordering::SeqCst);
    *https_knobs.body.lock().unwrap() = "sick".into();
    let bound = INTERVAL * 2 + Duration::from_millis(150) + SLACK;
    let mut others = Vec::new();
    let mut downs = Vec::new();
    for _ in 0..3 {
        let t = timeout(bound, rx.recv())
            .await
            .expect("a transition")
            .unwrap();
        assert_eq!(t.to, ProbeState::Down, "{t:?}");
        downs.push((t.name.clone(), t.cause.clone()));
    }
    downs.sort_by(|a, b| a.0.cmp(&b.0));
    let cause = |n: &str| downs.iter().find(|d| d.0 == n).unwrap().1.clone();
    assert_eq!(cause(&udp), Cause::ProbeFailed(ProbeFailure::Refused));
    assert_eq!(cause(&http), Cause::ProbeFailed(ProbeFailure::Status(503)));
    assert_eq!(cause(&https), Cause::ProbeFailed(ProbeFailure::Mismatch));

    // And back up.
    let (_echo2, _t2) = {
        let s = tokio::net::UdpSocket::bind(echo).await.unwrap();
        let t = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                if let Ok((n, from)) = s.recv_from(&mut buf).await {
                    let _ = s.send_to(&buf[..n], from).await;
                }
            }
        });
        ((), t)
    };
    http_knobs.status.store(200, Ordering::SeqCst);
    *https_knobs.body.lock().unwrap() = "ok".into();
    let mut ups = Vec::new();
    let end = Instant::now() + INTERVAL + Duration::from_millis(150) + SLACK;
    while ups.len() < 3 {
        let t = tokio::time::timeout_at(end, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("all came back; got {ups:?}"))
            .unwrap();
        assert_eq!(t.to, ProbeState::Up);
        ups.push(t.name.clone());
        others.push(t);
    }
    ups.sort();
    let mut want = vec![udp.clone(), http.clone(), https.clone()];
    want.sort();
    assert_eq!(ups, want);
    assert!(others
        .iter()
        .all(|t| t.to == ProbeState::Up && t.name != none));
    assert_eq!(e.state(&none), Some(ProbeState::Up));
}

#[tokio::test]
async fn ping_in_netns_detects_peer_down_and_up() {
    let _timing = TIMING.lock().await;
    let mut lab = Lab::new().unwrap();
    let a = lab.ns("pa").unwrap();
    let b = lab.ns("pb").unwrap();
    let (va, vb) = (lab.ifname("a"), lab.ifname("b"));
    Veth::new(&a, &va, &b, &vb).create().unwrap();
    a.addr(&va, "10.201.0.1/24").unwrap();
    b.addr(&vb, "10.201.0.2/24").unwrap();
    a.addr_nodad(&va, "fd00:201::1/64").unwrap();
    b.addr_nodad(&vb, "fd00:201::2/64").unwrap();
    run_in(&a, || async {
        let e = ProbeEngine::new(8);
        let mut rx = e.subscribe();
        let mut names = Vec::new();
        for host in ["10.201.0.2", "fd00:201::2"] {
            let mut s = ProbeSpec::new(host.parse::<IpAddr>().unwrap(), ProbeKind::Ping, 0);
            s.interval = INTERVAL;
            s.timeout = Duration::from_millis(150);
            names.push(e.upsert(s).unwrap());
        }
        timeout(Duration::from_secs(5), async {
            while !e
                .snapshot()
                .iter()
                .all(|s| s.probes > 0 && s.consecutive_failures == 0 && s.last_error.is_none())
            {
                sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("both pings answered");
        for s in e.snapshot() {
            assert!(s.min_delay.is_some(), "rtt tracked");
        }

        while rx.try_recv().is_ok() {}
        b.link_down(&vb).unwrap();
        let down_at = Instant::now();
        let bound = INTERVAL * 2 + Duration::from_millis(150) + SLACK;
        timeout(bound * 2, async {
            while !e.snapshot().iter().all(|s| s.state == ProbeState::Down) {
                sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("both pings went down");
        eprintln!("ping: both down after {:?}", down_at.elapsed());
        let mut downs: Vec<String> = Vec::new();
        while let Ok(t) = rx.try_recv() {
            assert_eq!(t.to, ProbeState::Down, "{t:?}");
            downs.push(t.name);
        }
        downs.sort();
        let mut want = names.clone();
        want.sort();
        assert_eq!(downs, want, "one Down transition each");

        b.link_up(&vb).unwrap();
        // Admin down flushed vb's IPv6 address (keep_addr_on_down is 0).
        b.ip(&["addr", "replace", "fd00:201::2/64", "dev", &vb, "nodad"])
            .unwrap();
        timeout(Duration::from_secs(5), async {
            while !e.snapshot().iter().all(|s| s.state == ProbeState::Up) {
                sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("both pings answered again");
    });
}

#[tokio::test]
async fn sctp_supported_or_refused_at_start() {
    let s = ProbeSpec::new("127.0.0.1".parse().unwrap(), ProbeKind::Sctp, 3868);
    let e = ProbeEngine::new(4);
    if crate::sctp_supported() {
        assert!(e.upsert(s).is_ok());
    } else {
        assert_eq!(e.upsert(s.clone()), Err(ProbeError::SctpUnsupported));
        assert_eq!(e.acquire(s), Err(ProbeError::SctpUnsupported));
        assert!(ProbeError::SctpUnsupported
            .to_string()
            .contains("unsupported on this kernel"));
        assert!(e.snapshot().is_empty());
    }
}

#[tokio::test]
async fn references_and_user_override() {
    // Loopback only: the engine may fire a probe before the test ends.
    let e = ProbeEngine::new(4);
    let auto = ProbeSpec::new("127.0.0.9".parse().unwrap(), ProbeKind::Tcp, 80);
    let key = e.acquire(auto.clone()).unwrap();
    assert_eq!(key, "127.0.0.9_tcp_80");
    assert_eq!(e.acquire(auto.clone()).unwrap(), key);
    assert_eq!(e.snapshot()[0].refs, 2);
    assert_eq!(
        e.remove(&key),
        Err(ProbeError::InUse {
            name: key.clone(),
            refs: 2
        })
    );
    // The user posts the same name with another probe type: it wins.
    let mut user = ProbeSpec::new("127.0.0.9".parse().unwrap(), ProbeKind::None, 0);
    user.name = key.clone();
    e.upsert(user).unwrap();
    let st = &e.snapshot()[0];
    assert_eq!((st.spec.kind, st.user, st.refs), (ProbeKind::None, true, 2));
    // A rule re-acquiring does not displace the user's spec.
    e.acquire(auto.clone()).unwrap();
    assert_eq!(e.snapshot()[0].spec.kind, ProbeKind::None);
    assert_eq!(e.release(&key), Ok(false));
    assert_eq!(e.release(&key), Ok(false));
    assert_eq!(e.release(&key), Ok(false), "the user entry stays");
    assert_eq!(e.release(&key), Err(ProbeError::NotFound(key.clone())));
    e.remove(&key).unwrap();
    assert!(e.snapshot().is_empty());
    assert_eq!(e.remove(&key), Err(ProbeError::NotFound(key.clone())));

    // Last release of a rule-only entry removes it.
    let k = e.acquire(auto).unwrap();
    assert_eq!(e.release(&k), Ok(true));
    assert!(e.snapshot().is_empty());

    // Invalid specs are refused with loxilb's reasons.
    let bad = ProbeSpec::new("127.0.0.9".parse().unwrap(), ProbeKind::Udp, 0);
    assert_eq!(
        e.upsert(bad),
        Err(ProbeError::Spec(SpecError::PortRequired {
            kind: ProbeKind::Udp
        }))
    );
}

#[tokio::test]
async fn force_overrides_and_clears() {
    let e = ProbeEngine::new(4);
    let mut rx = e.subscribe();
    let mut s = ProbeSpec::new("127.0.2.7".parse().unwrap(), ProbeKind::None, 0);
    s.interval = INTERVAL;
    let k = e.upsert(s).unwrap();
    e.force(&k, Some(ProbeState::Down)).unwrap();
    let t = rx.recv().await.unwrap();
    assert_eq!(
        (t.to, t.cause),
        (ProbeState::Down, Cause::Forced(Some(ProbeState::Down)))
    );
    // Probing goes on underneath but does not move a forced entry.
    wait_probes(&e, &k, 2).await;
    let st = &e.snapshot()[0];
    assert_eq!(
        (st.state, st.probed_state),
        (ProbeState::Down, ProbeState::Up)
    );
    e.force(&k, None).unwrap();
    let t = rx.recv().await.unwrap();
    assert_eq!((t.to, t.cause), (ProbeState::Up, Cause::Forced(None)));
    assert_eq!(
        e.force("nope", None),
        Err(ProbeError::NotFound("nope".into()))
    );
}

#[tokio::test]
async fn initial_state_is_configurable() {
    let _timing = TIMING.lock().await;
    let e = ProbeEngine::with_config(EngineConfig {
        initial_state: ProbeState::Down,
        ..EngineConfig::default()
    });
    let mut rx = e.subscribe();
    let mut s = ProbeSpec::new("127.0.2.8".parse().unwrap(), ProbeKind::None, 0);
    s.interval = INTERVAL;
    let k = e.upsert(s).unwrap();
    assert_eq!(e.state(&k), Some(ProbeState::Down));
    let t = timeout(INTERVAL + SLACK, rx.recv()).await.unwrap().unwrap();
    assert_eq!((t.from, t.to), (ProbeState::Down, ProbeState::Up));
}

#[tokio::test]
async fn changing_a_spec_restarts_its_schedule() {
    let e = ProbeEngine::new(4);
    let mut s = ProbeSpec::new("127.0.2.9".parse().unwrap(), ProbeKind::None, 0);
    s.interval = Duration::from_secs(3600);
    let k = e.upsert(s.clone()).unwrap();
    // Re-posting the same spec keeps the schedule (no probe for an hour)...
    e.upsert(s.clone()).unwrap();
    sleep(Duration::from_millis(50)).await;
    // ...a shorter interval takes effect at once.
    s.interval = Duration::from_millis(20);
    e.upsert(s).unwrap();
    wait_probes(&e, &k, 3).await;
}

/// Oversleep of a plain OS thread, sampled every 10 ms until `stop`: how
/// late this machine runs anything right now (other builds share its 2 cores).
fn noise_canary(
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<Duration>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let t = std::time::Instant::now();
            std::thread::sleep(Duration::from_millis(10));
            v.push(t.elapsed().saturating_sub(Duration::from_millis(10)));
        }
        v.sort();
        v
    })
}

/// Time this process's tokio worker threads spent runnable but waiting for
/// a CPU (schedstat's run_delay), summed: what other tenants cost the engine.
fn workers_run_queue_wait() -> Duration {
    let mut total = 0u64;
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        // tokio names its workers "tokio-rt-worker" (older: "tokio-runtime-worker").
        if !comm.starts_with("tokio-r") {
            continue;
        }
        if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
            total += s
                .split(' ')
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_nanos(total)
}

/// 5,000 TCP probes against local listeners, every 4 s (1,250 connects/s,
/// 15 times loxilb's default load for as many endpoints): the scheduler keeps
/// its deadlines with a concurrency cap of 256. The bound is p99 lateness
/// under 100 ms on top of the worst stall of a canary thread; and only when
/// the machine starves the runtime (its workers wait for a CPU more than 25 %
/// of the time: other builds share these 2 cores) is that wait allowed too,
/// so a loaded CI machine does not fail it while a scheduler that drifts or
/// serialises still does.
/// (`examples/drift.rs` measures heavier loads and reports CPU.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_probes_keep_their_schedule() {
    let _timing = TIMING.lock().await;
    const N: usize = 5_000;
    let period = Duration::from_secs(4);
    let mut servers = Vec::new();
    for _ in 0..8 {
        servers.push(TcpServer::start("127.0.0.1:0".parse().unwrap()).await);
    }
    let e = ProbeEngine::new(256);
    for i in 0..N {
        let addr = servers[i % servers.len()].addr;
        let mut s = ProbeSpec::new(addr.ip(), ProbeKind::Tcp, addr.port());
        s.name = format!("ep{i}");
        s.interval = period;
        e.upsert(s).unwrap();
    }
    // The first interval spreads first runs; measure the steady state after it.
    sleep(period).await;
    // Tenants of this machine can stall a runtime worker for a moment (a task
    // in a descheduled worker's LIFO slot cannot be stolen): a window that
    // misses the bound is measured once more; a drifting or serialising
    // scheduler misses both.
    let mut verdicts = Vec::new();
    for _attempt in 0..2 {
        let verdict = measure_window(&e, N, period).await;
        eprintln!("{verdict}");
        if verdict.starts_with("ok") {
            return;
        }
        verdicts.push(verdict);
    }
    panic!("both windows missed the bound: {verdicts:?}");
}

/// One measurement window of two periods: "ok: ..." or "FAIL: ...".
async fn measure_window(e: &ProbeEngine, n: usize, period: Duration) -> String {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let canary = noise_canary(stop.clone());
    e.reset_stats();
    let t0 = Instant::now();
    let waited0 = workers_run_queue_wait();
    sleep(period * 2).await;
    let stats = e.stats();
    let window = t0.elapsed();
    let waited = workers_run_queue_wait().saturating_sub(waited0) / 2;
    stop.store(true, Ordering::Relaxed);
    let noise = canary.join().unwrap();
    let noise_max = noise.last().copied().unwrap_or_default();
    let up = e
        .snapshot()
        .iter()
        .filter(|s| s.state == ProbeState::Up)
        .count();
    let starved = waited > window / 4;
    let allowance = noise_max + if starved { waited } else { Duration::ZERO };
    let expected = (n as f64 * window.as_secs_f64() / period.as_secs_f64()) as u64;
    let slack = (allowance.as_secs_f64() / period.as_secs_f64() * n as f64) as u64;
    let ok = up == n
        && stats.dispatched + slack >= expected * 9 / 10
        && stats.dispatched <= expected * 11 / 10
        && stats.lateness_p99 < Duration::from_millis(100) + allowance;
    format!(
        "{}: {n} probes over {window:?}: {stats:?}, {up} up, ~{expected} expected; \
         canary's worst stall {noise_max:?}, each worker waited {waited:?} for a CPU",
        if ok { "ok" } else { "FAIL" }
    )
}

/// The first transition of `name` to `to` after now, and when it came.
async fn transition_to(
    rx: &mut broadcast::Receiver<Transition>,
    name: &str,
    to: ProbeState,
    within: Duration,
) -> Option<(Transition, Instant)> {
    let end = Instant::now() + within;
    loop {
        let t = next_of(
            rx,
            name,
            end.saturating_duration_since(Instant::now()),
            &mut vec![],
        )
        .await?;
        if t.to == to {
            return Some((t, Instant::now()));
        }
    }
}

/// A TCP server that goes away and comes back, probed every second: with
/// `activeReTries` 3 it is up only after three successes in a row (≥ 2 s
/// after its port opens, < 3 s plus slack); with loxilb's threshold the
/// first success brings it back.
#[tokio::test]
async fn healthy_threshold_delays_a_returning_tcp_server() {
    let _timing = TIMING.lock().await;
    for (active_retries, at_least, at_most) in [
        (3, Duration::from_secs(2), Duration::from_secs(4)),
        (1, Duration::ZERO, Duration::from_millis(1500)),
    ] {
        let mut srv = TcpServer::start("127.0.0.1:0".parse().unwrap()).await;
        let e = ProbeEngine::new(4);
        let mut rx = e.subscribe();
        let mut s = ProbeSpec::new(srv.addr.ip(), ProbeKind::Tcp, srv.addr.port());
        s.interval = Duration::from_secs(1);
        s.timeout = Duration::from_millis(500);
        s.retries = 1;
        s.active_retries = active_retries;
        let name = e.upsert(s).unwrap();
        srv.close().await;
        transition_to(&mut rx, &name, ProbeState::Down, Duration::from_secs(3))
            .await
            .expect("went down");

        let _back = TcpServer::start(srv.addr).await;
        let opened = Instant::now();
        let (t, at) = transition_to(&mut rx, &name, ProbeState::Up, Duration::from_secs(5))
            .await
            .expect("came back");
        let took = at - opened;
        assert_eq!(t.cause, Cause::ProbeSucceeded);
        assert!(
            took >= at_least && took <= at_most,
            "activeReTries {active_retries}: up {took:?} after the port opened"
        );
        let st = &e.snapshot()[0];
        assert_eq!(st.consecutive_successes, active_retries);
        assert!(
            st.probes > u64::from(active_retries),
            "a failure, then the successes"
        );
    }
}

/// Results fed straight into the state machine: a failure between successes
/// starts the healthy count again, and an Up entry is not held back by it.
#[tokio::test]
async fn a_failure_restarts_the_healthy_count() {
    let e = ProbeEngine::new(4);
    // An hour's period: the scheduler stays out of the way of the fed results.
    let mut s = ProbeSpec::new("127.0.2.10".parse().unwrap(), ProbeKind::None, 0);
    s.interval = Duration::from_secs(86_400);
    s.retries = 2;
    s.active_retries = 3;
    let name = e.upsert(s).unwrap();
    let gen = lock(&e.shared.inner).entries[&name].gen;
    let ok = || Ok(Duration::from_millis(1));
    let fail = || Err(ProbeFailure::Refused);
    let feed = |r: Result<Duration, ProbeFailure>| {
        e.shared.record(&name, gen, r);
        e.state(&name).unwrap()
    };
    // New entries start up, as in loxilb; one failure is not enough to leave.
    assert_eq!(e.state(&name), Some(ProbeState::Up));
    assert_eq!(feed(fail()), ProbeState::Up);
    assert_eq!(feed(ok()), ProbeState::Up);
    assert_eq!(feed(fail()), ProbeState::Up);
    assert_eq!(feed(fail()), ProbeState::Down);
    // Two successes, a failure, two successes: still down.
    for r in [ok(), ok(), fail(), ok(), ok()] {
        assert_eq!(feed(r), ProbeState::Down);
    }
    assert_eq!(e.snapshot()[0].consecutive_successes, 2);
    // The third in a row brings it back.
    assert_eq!(feed(ok()), ProbeState::Up);
    assert_eq!(e.snapshot()[0].consecutive_successes, 3);
}

/// An HTTP server that accepts at once but answers after 2 s: with
/// `probeTimeout` 1 s each probe is a timeout, and the entry goes down.
#[tokio::test]
async fn a_slow_answer_beyond_the_probe_timeout_is_a_failure() {
    let _timing = TIMING.lock().await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let _srv = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                sleep(Duration::from_secs(2)).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    let mut s = ProbeSpec::new(addr.ip(), ProbeKind::Http, addr.port());
    s.interval = Duration::from_secs(2);
    s.timeout = Duration::from_secs(1);
    s.retries = 1;
    let started = Instant::now();
    assert_eq!(
        probe_once(&s).await,
        Err(ProbeFailure::Timeout(Duration::from_secs(1)))
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1800),
        "gave up after {took:?}"
    );

    let e = ProbeEngine::new(4);
    let mut rx = e.subscribe();
    let name = e.upsert(s.clone()).unwrap();
    let (t, _) = transition_to(&mut rx, &name, ProbeState::Down, Duration::from_secs(5))
        .await
        .expect("went down");
    assert_eq!(
        t.cause,
        Cause::ProbeFailed(ProbeFailure::Timeout(Duration::from_secs(1)))
    );

    // The same server within a 3 s timeout is up: the answer itself is fine.
    s.timeout = Duration::from_secs(3);
    assert!(probe_once(&s).await.is_ok());
}
