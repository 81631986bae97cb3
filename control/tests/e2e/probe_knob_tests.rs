//! Issue 22's health-check knobs through the real dataplane: the K3s HA
//! guide's layout with a managed load balancer's health check scaled down
//! (every 1 s, a 0.5 s probe timeout, healthy after 5 successes, unhealthy
//! after 3 failures). An API server that flaps (down 1 s, up 1 s) once it
//! is out never re-enters selection; the other two keep every connection.

use std::time::{Duration, Instant};

use super::{
    assert_survivors_untouched, endpoint_state, k3s_guide_files, new_conns, unix_now, wait_state,
    FailoverClient, Lab, Server, BACKENDS,
};

const PERIOD: u32 = 1;
const UNHEALTHY: u32 = 3;
const HEALTHY: u32 = 5;
const TIMEOUT: f64 = 0.5;

#[test]
fn a_flapping_api_server_stays_out_under_a_healthy_threshold() {
    let mut lab = Lab::up(1);
    let mut servers: Vec<Option<Server>> = (1..=3)
        .map(|i| Some(Server::start(&lab, i, 6443)))
        .collect();
    let lbconfig = k3s_guide_files(&lab, PERIOD, UNHEALTHY);
    // The guide's EPconfig.txt entries with the managed LB's two extra knobs.
    let ep_file = lab.cfg.join("EPconfig.txt");
    let mut ep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ep_file).expect("EPconfig")).expect("json");
    for e in ep["Attr"].as_array_mut().expect("Attr") {
        e["probeTimeout"] = TIMEOUT.into();
        e["activeReTries"] = HEALTHY.into();
    }
    std::fs::write(&ep_file, ep.to_string()).expect("EPconfig");
    lab.start_xlb(&lbconfig, &[]);
    let (_, eps) = lab.api("GET", "/config/endpoint/all", None).expect("API");
    for e in eps["Attr"].as_array().expect("Attr") {
        assert_eq!(
            (&e["probeTimeout"], &e["activeReTries"]),
            (&TIMEOUT.into(), &HEALTHY.into()),
            "{e}"
        );
    }

    let client = FailoverClient::start(&lab, 32);
    let started = unix_now();
    std::thread::sleep(Duration::from_millis(1500));

    // Backend 1 dies: out after 3 failures (3 periods, each probe refused at once).
    let killed_at = unix_now();
    servers[0] = None;
    let budget = f64::from(UNHEALTHY * PERIOD) + TIMEOUT;
    let took = wait_state(&lab, BACKENDS[0], "inactive", Duration::from_secs(8));
    assert!(
        took.as_secs_f64() < budget + 0.5,
        "detected in {took:?}, budget {budget} s (+0.5 s)\n{}",
        lab.log()
    );
    let out_at = unix_now();

    // It flaps: up 1 s, down 1 s, four times. No run of successes reaches
    // 5, so it never re-enters selection.
    let watch = |seen: &mut Vec<String>| {
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            seen.push(endpoint_state(&lab, BACKENDS[0]));
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let mut seen = Vec::new();
    for _ in 0..4 {
        servers[0] = Some(Server::start(&lab, 1, 6443));
        watch(&mut seen);
        servers[0] = None;
        watch(&mut seen);
    }
    let flap_end = unix_now();
    assert!(
        seen.iter().all(|s| s == "inactive"),
        "backend 1 re-entered selection while flapping: {seen:?}\n{}",
        lab.log()
    );

    // Up for good: back after 5 successes in a row, 4 to 5 periods on.
    servers[0] = Some(Server::start(&lab, 1, 6443));
    let stable_at = Instant::now();
    wait_state(&lab, BACKENDS[0], "active", Duration::from_secs(9));
    let back = stable_at.elapsed();
    assert!(
        back >= Duration::from_secs(u64::from((HEALTHY - 1) * PERIOD)),
        "back after {back:?}: fewer than {HEALTHY} successes"
    );
    let back_at = unix_now();
    let report = client.finish();
    let ended = unix_now();
    assert!(ended - back_at > 2.0, "the client ran past the return");

    let (_, failed) = new_conns(&report, started, killed_at - 0.5);
    assert_eq!(failed, Vec::<String>::new(), "before the kill");
    // After the detection budget no new connection fails, flapping or not.
    let (_, in_budget) = new_conns(&report, killed_at, killed_at + budget + 0.5);
    let (after, failed) = new_conns(&report, killed_at + budget + 0.5, ended);
    assert_eq!(
        failed,
        Vec::<String>::new(),
        "new connections failed after the budget ({} within it)",
        in_budget.len()
    );
    assert!(after.len() > 200, "the client kept going: {}", after.len());
    // The dataplane agrees with the API: backend 1 took no new connection
    // from its removal to the end of the flapping.
    let (flapping, _) = new_conns(&report, out_at + 0.2, flap_end);
    assert!(
        !flapping.iter().any(|w| w == "backend-1"),
        "backend 1 answered while out: {flapping:?}"
    );
    assert!(flapping.iter().any(|w| w == "backend-2") && flapping.iter().any(|w| w == "backend-3"));
    let (returned, _) = new_conns(&report, back_at + 0.5, ended);
    assert!(
        returned.iter().filter(|w| *w == "backend-1").count() >= 5,
        "backend 1 takes new connections once healthy: {returned:?}"
    );
    // Requests every 100 ms for ~30 s: well over 150 answers each.
    assert_survivors_untouched(&report, "backend-1", 150);
    eprintln!(
        "healthy threshold: out after {took:?}, stayed out through 4 returns, \
         back {back:?} after the last; {} new connections failed within the \
         {budget} s budget, 0 after",
        in_budget.len()
    );
}
