//! Config files at start-up, `save`, and the round trip through a real server,
//! the `xlb` binary and a restart.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Harness;
use serde_json::json;
use xlb_control::config::{self, ConfigError};
use xlb_control::controller::{self, ControlState, Controller, MaglevSize, RuleOp};
use xlb_control::daemon::{self, ServeOptions};
use xlb_control::dataplane::{Dataplane, StaticNet, StaticView, Unattached};
use xlb_dataplane::net::Ip16;
use xlb_dataplane::tables::{NatMode, Selection, TablesHandle};

fn k3s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/k3s-ha")
}

/// A harness whose state was loaded from `dir` (as `xlb run` does at start).
fn harness_from(dir: &Path) -> (Harness, config::LoadReport) {
    let mut report = None;
    let h = Harness::with_state(|st| report = Some(config::load(st, dir)), |api| api);
    (h, report.expect("loaded"))
}

#[tokio::test]
async fn k3s_guide_files_load_and_show_in_get() {
    let (h, report) = harness_from(&k3s_dir());
    assert!(report.is_clean(), "{:?}", report.errors);
    // The guide's topology: two K3s servers behind the API VIP.
    assert_eq!((report.rules, report.endpoints), (1, 2));
    assert_eq!(
        h.get("/netlox/v1/config/loadbalancer/all").await.body,
        r#"{"lbAttr":[{"allowedSources":null,"endpoints":[{"counter":"0:0","endpointIP":"192.168.80.10","state":"active","targetPort":6443,"weight":1},{"counter":"0:0","endpointIP":"192.168.80.11","state":"active","targetPort":6443,"weight":1}],"secondaryIPs":null,"serviceArguments":{"externalIP":"192.168.80.80","inactiveTimeOut":240,"mode":2,"monitor":true,"port":6443,"protocol":"tcp"}}]}"#
    );
    let eps = h.get("/netlox/v1/config/endpoint/all").await.json();
    let attr = eps["Attr"].as_array().expect("Attr");
    assert_eq!(attr.len(), 2, "the rule's probes are the file's entries");
    for (e, ip) in attr.iter().zip(["192.168.80.10", "192.168.80.11"]) {
        assert_eq!(e["hostName"], ip);
        assert_eq!(e["name"], format!("{ip}_tcp_6443"));
        assert_eq!(e["probeType"], "tcp");
        assert_eq!(e["probePort"], 6443);
        assert_eq!(e["probeDuration"], 10);
        assert_eq!(e["inactiveReTries"], 2);
    }
    let t = h.handle.current();
    assert_eq!(t.services.len(), 1);
    let s = &t.services[0].spec;
    assert_eq!((s.mode, s.sel), (NatMode::FullNat, Selection::RoundRobin));
    assert_eq!(s.inactive_timeout_s, 240);
    assert_eq!(s.endpoints.len(), 2);
}

#[tokio::test]
async fn k3s_files_with_addresses_moved_load_too() {
    // The lab moves the guide's addresses into its namespaces' subnet.
    let dir = tempfile::tempdir().expect("tmp");
    for f in [config::LB_FILE, config::EP_FILE] {
        let text = std::fs::read_to_string(k3s_dir().join(f)).expect("read");
        std::fs::write(dir.path().join(f), text.replace("192.168.80.", "10.77.0.")).expect("write");
    }
    let (h, report) = harness_from(dir.path());
    assert!(report.is_clean(), "{:?}", report.errors);
    let got = h.get("/netlox/v1/config/loadbalancer/all").await.json();
    assert_eq!(
        got["lbAttr"][0]["serviceArguments"]["externalIP"],
        "10.77.0.80"
    );
    assert_eq!(h.handle.current().services[0].endpoints.len(), 2);
}

#[tokio::test]
async fn bad_entries_are_reported_and_good_ones_load() {
    let dir = tempfile::tempdir().expect("tmp");
    let ep = |host: &str, t: &str, port: u16| json!({"hostName": host, "probeType": t, "probePort": port});
    std::fs::write(
        dir.path().join(config::EP_FILE),
        json!({"Attr": [ep("10.0.0.1", "tcp", 80), ep("10.0.0.2", "tcp", 0), ep("10.0.0.3", "ping", 0)]})
            .to_string(),
    )
    .expect("write");
    let rule = |vip: &str, mode: i64| {
        json!({"serviceArguments": {"externalIP": vip, "port": 80, "protocol": "tcp", "mode": mode},
               "endpoints": [{"endpointIP": "10.0.0.1", "targetPort": 80, "weight": 1}]})
    };
    std::fs::write(
        dir.path().join(config::LB_FILE),
        json!({"lbAttr": [rule("192.0.2.1", 0), rule("192.0.2.2", 4), {"serviceArguments": {"port": 1}}, rule("192.0.2.4", 2)]})
            .to_string(),
    )
    .expect("write");
    let (h, report) = harness_from(dir.path());
    assert_eq!((report.rules, report.endpoints), (2, 2));
    let msgs: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
    let ep_file = dir.path().join(config::EP_FILE);
    let lb_file = dir.path().join(config::LB_FILE);
    assert_eq!(
        msgs,
        [
            format!(
                "{}: entry 1: host-args unknown probe port",
                ep_file.display()
            ),
            format!(
                "{}: entry 1: unsupported error: mode 4 (full-proxy) is not supported by xlb",
                lb_file.display()
            ),
            format!(
                "{}: entry 2: endpoints in body is required",
                lb_file.display()
            ),
        ]
    );
    assert!(matches!(
        &report.errors[0],
        ConfigError::Entry { index: 1, .. }
    ));
    let got = h.get("/netlox/v1/config/loadbalancer/all").await.json();
    let vips: Vec<&str> = got["lbAttr"]
        .as_array()
        .expect("lbAttr")
        .iter()
        .map(|r| r["serviceArguments"]["externalIP"].as_str().expect("ip"))
        .collect();
    assert_eq!(vips, ["192.0.2.1", "192.0.2.4"]);

    // A file that is not JSON at all: one file-level error, the other file still loads.
    std::fs::write(&ep_file, "{not json").expect("write");
    let (_, report) = harness_from(dir.path());
    assert_eq!(report.rules, 2);
    assert_eq!(report.errors.len(), 3);
    assert!(matches!(&report.errors[0], ConfigError::File { file, .. } if *file == ep_file));

    // Missing files are not an error.
    let empty = tempfile::tempdir().expect("tmp");
    let (_, report) = harness_from(empty.path());
    assert!(report.is_clean());
    assert_eq!((report.rules, report.endpoints), (0, 0));
}

#[tokio::test]
async fn save_skips_managed_rules_and_round_trips() {
    let h = Harness::new();
    let mk = |vip: &str, managed: bool, extra: serde_json::Value| {
        let mut sa = json!({"externalIP": vip, "port": 80, "protocol": "tcp", "managed": managed,
                            "name": format!("r-{vip}"), "sel": 1, "mode": 1, "inactiveTimeOut": 600});
        for (k, v) in extra.as_object().expect("object") {
            sa[k] = v.clone();
        }
        json!({"serviceArguments": sa,
               "endpoints": [{"endpointIP": "10.0.0.1", "targetPort": 8080, "weight": 1},
                             {"endpointIP": "10.0.0.2", "targetPort": 8080, "weight": 3}],
               "allowedSources": [{"prefix": "198.51.100.0/24"}]})
        .to_string()
    };
    for b in [
        mk(
            "192.0.2.1",
            false,
            json!({"probetype": "tcp", "probeport": 8080}),
        ),
        mk("192.0.2.2", true, json!({})),
        mk("192.0.2.3", false, json!({"portMax": 90, "block": 3})),
    ] {
        assert_eq!(
            h.post("/netlox/v1/config/loadbalancer", &b).await.status,
            200
        );
    }
    let r = h
        .post(
            "/netlox/v1/config/endpoint",
            r#"{"hostName":"10.0.0.9","name":"extra","probeType":"https","probePort":8443,"probeResp":"ok"}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    let rules: xlb_control::model::LbRuleList =
        xlb_control::model::from_json(h.get("/netlox/v1/config/loadbalancer/all").await.json())
            .expect("json");
    let eps: xlb_control::model::EpStatusList =
        xlb_control::model::from_json(h.get("/netlox/v1/config/endpoint/all").await.json())
            .expect("json");

    let dir = tempfile::tempdir().expect("tmp");
    config::save(dir.path(), &rules, &eps).expect("save");
    let saved = std::fs::read_to_string(dir.path().join(config::LB_FILE)).expect("read");
    assert!(!saved.contains("192.0.2.2"), "managed rule skipped");
    assert!(!dir.path().join("lbconfig.txt.bk").exists());
    config::save(dir.path(), &rules, &eps).expect("save again");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("lbconfig.txt.bk")).expect("bk"),
        saved,
        "the previous file is kept as .bk"
    );

    // "Restart": a fresh state loading the saved files shows the same state,
    // minus the managed rule (its controller re-pushes it).
    let (h2, report) = harness_from(dir.path());
    assert!(report.is_clean(), "{:?}", report.errors);
    let mut want = rules.clone();
    want.lb_attr.retain(|r| !r.serviceargs.managed);
    let got: xlb_control::model::LbRuleList =
        xlb_control::model::from_json(h2.get("/netlox/v1/config/loadbalancer/all").await.json())
            .expect("json");
    assert_eq!(got, want);
    let got_eps: xlb_control::model::EpStatusList =
        xlb_control::model::from_json(h2.get("/netlox/v1/config/endpoint/all").await.json())
            .expect("json");
    let mut want_eps = eps.clone();
    // Probe entries implied by monitored rules were saved as entries too (as loxicmd does).
    want_eps.attr.sort_by(|a, b| a.name.cmp(&b.name));
    let mut got_sorted = got_eps.clone();
    got_sorted.attr.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(got_sorted, want_eps);
}

/// A free localhost port for a daemon, which no other test (or ephemeral
/// socket) takes between this pick and the daemon's bind.
fn free_port() -> u16 {
    xlb_testkit::unused_port().expect("a free port")
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn xlb(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xlb"))
        .args(args)
        .output()
        .expect("run xlb")
}

fn start_daemon(dir: &Path, port: u16) -> Daemon {
    let child = Command::new(env!("CARGO_BIN_EXE_xlb"))
        .args([
            "run",
            "--no-dataplane",
            "--api",
            &format!("127.0.0.1:{port}"),
            "--config-path",
            dir.to_str().expect("utf-8 path"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn xlb run");
    let d = Daemon(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "xlb run did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    d
}

/// The issue's round trip with the real binary: `xlb run --no-dataplane`,
/// `xlb create`, `xlb save`, restart, the same state.
#[test]
fn binary_round_trip_create_save_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path().to_str().expect("utf-8 path");
    let port = free_port();
    let server = format!("http://127.0.0.1:{port}");
    let daemon = start_daemon(dir.path(), port);
    let ok = |args: &[&str]| {
        let mut full = vec!["--api-server", server.as_str()];
        full.extend_from_slice(args);
        let out = xlb(&full);
        assert!(
            out.status.success(),
            "xlb {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&[
        "create",
        "lb",
        "192.0.2.10",
        "--tcp=80:8080,443:8443",
        "--endpoints=10.0.0.1:1,10.0.0.2:2",
        "--mode=fullnat",
        "--sel=hash",
        "--monitor",
        "--name=web",
    ]);
    ok(&[
        "create",
        "lb",
        "192.0.2.11",
        "--udp=53",
        "--endpoints=10.0.0.3:1",
    ]);
    ok(&[
        "create",
        "ep",
        "10.0.0.7",
        "--probetype=tcp",
        "--probeport=22",
        "--period=5",
    ]);
    let table = ok(&["get", "lb"]);
    assert!(table.starts_with("EXT IP"), "{table}");
    assert!(table.contains("192.0.2.10") && table.contains("fullnat") && table.contains("hash"));
    let before = ok(&["get", "lb", "-o", "json"]);
    let before_ep = ok(&["get", "ep", "-o", "json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&before).expect("json")["lbAttr"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );

    // Errors show loxilb's message and fail.
    let mut full = vec!["--api-server", server.as_str()];
    full.extend_from_slice(&[
        "create",
        "lb",
        "192.0.2.11",
        "--udp=53",
        "--endpoints=10.0.0.3:1",
    ]);
    let out = xlb(&full);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lbrule-exists error"));

    ok(&["save", "-c", d]);
    drop(daemon);
    assert!(dir.path().join(config::LB_FILE).exists());

    let check = xlb(&["check-config", "-c", d]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let port2 = free_port();
    let server2 = format!("http://127.0.0.1:{port2}");
    let _daemon = start_daemon(dir.path(), port2);
    let get = |what: &str| {
        let out = xlb(&["--api-server", &server2, "get", what, "-o", "json"]);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(get("lb"), before, "same rules after save and restart");
    assert_eq!(
        get("ep"),
        before_ep,
        "same probe entries after save and restart"
    );
    let out = xlb(&[
        "--api-server",
        &server2,
        "delete",
        "lb",
        "192.0.2.11",
        "--udp=53",
    ]);
    assert!(out.status.success());
    let out = xlb(&[
        "--api-server",
        &server2,
        "delete",
        "lb",
        "192.0.2.11",
        "--udp=53",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-rule error"));
}

#[test]
fn check_config_fails_on_a_rejected_entry() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join(config::LB_FILE),
        r#"{"lbAttr":[{"serviceArguments":{"externalIP":"192.0.2.1","port":80,"protocol":"tcp","mode":5},"endpoints":[{"endpointIP":"10.0.0.1","targetPort":80,"weight":1}]}]}"#,
    )
    .expect("write");
    let out = xlb(&["check-config", "-c", dir.path().to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lbconfig.txt: entry 0: unsupported error: mode 5"),
        "{err}"
    );
    let ok = xlb(&["check-config", "-c", k3s_dir().to_str().expect("utf-8")]);
    assert!(ok.status.success());
}

#[tokio::test]
async fn daemon_prepare_and_serve_over_tcp() {
    let opts = ServeOptions {
        config_path: k3s_dir(),
        api: "127.0.0.1:0".parse().expect("addr"),
        api_token: None,
        strict_config: true,
        tls: None,
        snat_addrs: Vec::new(),
        maglev_size: MaglevSize::default(),
        dsr_ipip: false,
        elected: false,
        controlled: false,
    };
    let handle = TablesHandle::new();
    let dp = Dataplane::unattached(handle.clone());
    let prepared = daemon::prepare(&opts, dp, None).expect("clean config");
    assert_eq!(
        handle.current().services.len(),
        1,
        "published before serving"
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(daemon::serve_on(listener, prepared.api.clone(), async {
        let _ = rx.await;
    }));
    let body = tokio::task::spawn_blocking(move || {
        let c = xlb_control::cli::Client::new(&format!("http://{addr}"), None);
        c.rules().expect("GET over TCP")
    })
    .await
    .expect("join");
    assert_eq!(body.lb_attr.len(), 1);
    let _ = tx.send(());
    server.await.expect("join").expect("clean shutdown");

    // --strict-config refuses a bad file.
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join(config::LB_FILE), "{").expect("write");
    let opts = ServeOptions {
        config_path: dir.path().into(),
        ..opts
    };
    let err = daemon::prepare(&opts, Dataplane::none(), None).expect_err("strict");
    assert_eq!(err.to_string(), "1 config entries rejected (see the log)");
}

#[test]
fn snat_addrs_option_sets_the_full_nat_source_and_bad_ones_are_refused() {
    let opts = ServeOptions {
        config_path: k3s_dir(),
        api: "127.0.0.1:0".parse().expect("addr"),
        api_token: None,
        strict_config: true,
        tls: None,
        snat_addrs: vec![
            "192.0.2.99".parse().expect("ip"),
            "192.0.2.98".parse().expect("ip"),
            "2001:db8::99".parse().expect("ip"),
        ],
        maglev_size: MaglevSize::default(),
        dsr_ipip: false,
        elected: false,
        controlled: false,
    };
    let handle = TablesHandle::new();
    let dp = Dataplane::unattached(handle.clone());
    daemon::prepare(&opts, dp, None).expect("starts");
    let t = handle.current();
    // The guide's rule is full NAT: every endpoint is sourced from the first
    // IPv4 address, and both IPv4 addresses form its pool.
    let s = &t.services[0];
    assert_eq!(s.spec.mode, NatMode::FullNat);
    let first = Ip16::from("192.0.2.99".parse::<std::net::IpAddr>().expect("ip"));
    let second = Ip16::from("192.0.2.98".parse::<std::net::IpAddr>().expect("ip"));
    assert!(s.endpoints.iter().all(|e| e.snat_addr == Some(first)));
    assert_eq!(t.snat_pool(first), &[first, second][..]);
    assert!(t.is_snat_addr(second));

    for bad in ["0.0.0.0", "224.0.0.1", "127.0.0.1", "::"] {
        let opts = ServeOptions {
            snat_addrs: vec![bad.parse().expect("ip")],
            ..opts.clone()
        };
        let err = daemon::prepare(&opts, Dataplane::none(), None).expect_err(bad);
        assert_eq!(
            err.to_string(),
            format!("--snat-addrs: {bad} cannot be a source address")
        );
    }
}

/// An lbconfig.txt rule may carry xlb's `dsrIpip`; GET and `save` keep it,
/// and with a mode other than DSR the entry is rejected with its reason.
#[tokio::test]
async fn lbconfig_dsr_ipip_extension_loads_shows_and_saves() {
    let dir = tempfile::tempdir().expect("tmp");
    let rule = |vip: &str, mode: i64, ipip: bool| {
        json!({"serviceArguments": {"externalIP": vip, "port": 80, "protocol": "tcp", "sel": 1,
                                    "mode": mode, "dsrIpip": ipip},
               "endpoints": [{"endpointIP": "10.0.0.1", "targetPort": 80, "weight": 1}]})
    };
    std::fs::write(
        dir.path().join(config::LB_FILE),
        json!({"lbAttr": [rule("192.0.2.1", 3, true), rule("192.0.2.2", 3, false), rule("192.0.2.3", 2, true)]})
            .to_string(),
    )
    .expect("write");
    let (h, report) = harness_from(dir.path());
    assert_eq!(report.rules, 2);
    let msgs: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        msgs,
        [format!(
            "{}: entry 2: service-args error: dsrIpip (IPIP encapsulation) needs mode 3 (DSR), not mode 2",
            dir.path().join(config::LB_FILE).display()
        )]
    );
    let ipip = |h: &Harness| -> Vec<bool> {
        let t = h.handle.current();
        let mut v: Vec<_> = t
            .services
            .iter()
            .map(|s| (s.spec.key.vip, s.spec.dsr_ipip))
            .collect();
        v.sort();
        v.into_iter().map(|(_, on)| on).collect()
    };
    assert_eq!(ipip(&h), [true, false]);
    let got = h.get("/netlox/v1/config/loadbalancer/all").await.json();
    assert_eq!(got["lbAttr"][0]["serviceArguments"]["dsrIpip"], true);
    assert!(got["lbAttr"][1]["serviceArguments"]
        .get("dsrIpip")
        .is_none());

    // `save` writes it back, and the saved files load to the same rules.
    let saved = tempfile::tempdir().expect("tmp");
    let rules = xlb_control::model::from_json(got.clone()).expect("GET shape");
    let eps = xlb_control::model::from_json(json!({"Attr": []})).expect("empty");
    config::save(saved.path(), &rules, &eps).expect("save");
    let text = std::fs::read_to_string(saved.path().join(config::LB_FILE)).expect("read");
    assert_eq!(text.matches(r#""dsrIpip": true"#).count(), 1, "{text}");
    let (h2, report) = harness_from(saved.path());
    assert!(report.is_clean(), "{:?}", report.errors);
    assert_eq!(ipip(&h2), [true, false]);
    assert_eq!(
        h2.get("/netlox/v1/config/loadbalancer/all").await.json(),
        got
    );
}

/// `xlb run --maglev-size` / `--dsr-ipip` reach every table build: the
/// config files' and the API's later changes.
#[test]
fn maglev_size_and_dsr_ipip_options_reach_the_tables() {
    let dir = tempfile::tempdir().expect("tmp");
    let rule = |vip: &str, mode: i64| {
        json!({"serviceArguments": {"externalIP": vip, "port": 80, "protocol": "tcp", "sel": 1, "mode": mode},
               "endpoints": [{"endpointIP": "10.0.0.1", "targetPort": 80, "weight": 1},
                             {"endpointIP": "10.0.0.2", "targetPort": 80, "weight": 1}]})
    };
    std::fs::write(
        dir.path().join(config::LB_FILE),
        json!({"lbAttr": [rule("192.0.2.1", 3), rule("192.0.2.2", 2)]}).to_string(),
    )
    .expect("write");
    let opts = ServeOptions {
        config_path: dir.path().into(),
        api: "127.0.0.1:0".parse().expect("addr"),
        api_token: None,
        strict_config: true,
        tls: None,
        snat_addrs: Vec::new(),
        maglev_size: "1009".parse().expect("a prime in range"),
        dsr_ipip: true,
        elected: false,
        controlled: false,
    };
    let handle = TablesHandle::new();
    let dp = Dataplane::unattached(handle.clone());
    let prepared = daemon::prepare(&opts, dp, None).expect("starts");
    let check = |n: usize| {
        let t = handle.current();
        assert_eq!(t.services.len(), n);
        for s in &t.services {
            let slots = s.maglev.as_ref().map(|m| m.slots().len());
            assert_eq!(slots, Some(1009), "{}", s.spec.key.vip);
            assert_eq!(
                s.spec.dsr_ipip,
                s.spec.mode == NatMode::Dsr,
                "{}",
                s.spec.key.vip
            );
        }
    };
    check(2);
    // A rule posted later goes through an incremental update: the same.
    let posted =
        xlb_control::model::parse_value::<xlb_control::model::LbRule>(rule("192.0.2.3", 3))
            .expect("parsed")
            .validate()
            .expect("valid");
    prepared
        .controller
        .handle()
        .apply_blocking(controller::Command::Rule(RuleOp::Post(Box::new(posted))))
        .expect("accepted");
    check(3);
    // GET shows what the rules say, not the daemon's default.
    let view = StaticView::new();
    let shown = prepared
        .controller
        .handle()
        .read_blocking(move |st| st.rules_view(&view))
        .expect("read");
    assert!(shown.iter().all(|r| !r.serviceargs.dsripip));
}

/// A bad `--maglev-size` (or `XLB_MAGLEV_SIZE`) stops `xlb run` before it
/// starts anything, with the reason.
#[test]
fn bad_maglev_size_is_refused_at_start() {
    // Should a bad size get through, the daemon must still exit (not
    // serve): a broken file with --strict-config stops it.
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join(config::LB_FILE), "{").expect("write");
    let run = |flag: Option<&str>, env: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xlb"));
        c.args([
            "run",
            "--no-dataplane",
            "--strict-config",
            "--api",
            "127.0.0.1:0",
            "--config-path",
            dir.path().to_str().expect("utf-8 path"),
        ]);
        if let Some(v) = flag {
            c.args(["--maglev-size", v]);
        }
        if let Some(v) = env {
            c.env("XLB_MAGLEV_SIZE", v);
        }
        let out = c.output().expect("run xlb");
        assert!(!out.status.success(), "{flag:?} {env:?} accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(Some("65536"), None);
    assert!(
        err.contains("invalid value '65536' for '--maglev-size <MAGLEV_SIZE>': 65536 is not a prime, which Maglev needs; the nearest primes are 65521 and 65537"),
        "{err}"
    );
    let err = run(Some("20000000"), None);
    assert!(
        err.contains("20000000 is out of range: give a prime from 37 to 16777213"),
        "{err}"
    );
    let err = run(None, Some("many"));
    assert!(err.contains(r#""many" is not a whole number"#), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        || Command::new(tool)
            .arg("version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn https_with_cert_and_key() {
    // scripts/deps.sh installs both; a missing tool is a failure, not a skip.
    assert!(
        have("openssl") && have("curl"),
        "needs openssl and curl (scripts/deps.sh)"
    );
    let dir = tempfile::tempdir().expect("tmp");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let ca = dir.path().join("ca.pem");
    // A CA and a server certificate it signed (webpki refuses a trust anchor as the server).
    let openssl = |args: &[&str]| {
        let ok = Command::new("openssl")
            .current_dir(dir.path())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(ok.success(), "openssl {args:?}");
    };
    std::fs::write(
        dir.path().join("ca.cnf"),
        "[req]\ndistinguished_name=dn\nx509_extensions=v3\nprompt=no\n[dn]\nCN=xlb-test-ca\n\
         [v3]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("srv.ext"),
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca_args = [
        "-config", "ca.cnf", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
    ];
    openssl(&[&["req", "-x509"][..], &ec, &ca_args].concat());
    let csr_args = [
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "srv.csr",
    ];
    openssl(&[&["req", "-new"][..], &ec, &csr_args].concat());
    openssl(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "1",
        "-extfile",
        "srv.ext",
    ]);
    assert!(
        xlb_control::tls::acceptor(&key, &key).is_err(),
        "a key is not a certificate"
    );
    assert!(xlb_control::tls::acceptor(&cert, &dir.path().join("none")).is_err());
    let acceptor = xlb_control::tls::acceptor(&cert, &key).expect("usable pair");

    let controller = Controller::start(ControlState::new(
        Arc::new(Unattached::default()),
        Arc::new(StaticNet::default()),
    ))
    .expect("controller");
    let api = Arc::new(xlb_control::api::Api::new(
        controller.handle(),
        Arc::new(StaticView::new()),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(daemon::serve_tls_on(listener, acceptor, api, async {
        let _ = rx.await;
    }));
    let (https, plain, cli) = tokio::task::spawn_blocking(move || {
        let run = |url: String| {
            Command::new("curl")
                .args(["-sk", "--max-time", "5", "-o", "-", "-w", " %{http_code}"])
                .arg(url)
                .output()
                .expect("curl")
        };
        let cli = xlb_control::cli::Client::new(&format!("https://{addr}"), None)
            .with_ca_cert(&ca)
            .expect("CA file")
            .rules();
        (
            run(format!("https://{addr}/netlox/v1/config/loadbalancer/all")),
            run(format!("http://{addr}/netlox/v1/config/loadbalancer/all")),
            cli,
        )
    })
    .await
    .expect("join");
    assert_eq!(
        String::from_utf8_lossy(&https.stdout),
        r#"{"lbAttr":[]} 200"#
    );
    assert!(
        !String::from_utf8_lossy(&plain.stdout).ends_with(" 200"),
        "plain HTTP is not served on a TLS port"
    );
    assert_eq!(
        cli.expect("the CLI verifies the server against --ca-cert")
            .lb_attr
            .len(),
        0
    );
    let _ = tx.send(());
    server.await.expect("join").expect("clean shutdown");
}

#[tokio::test]
async fn load_builds_once_and_finds_conflicts_only_the_whole_set_shows() {
    let dir = tempfile::tempdir().expect("tmp");
    let rule = |port: u16, portmax: u16| {
        json!({"serviceArguments": {"externalIP": "192.0.2.1", "port": port, "portMax": portmax,
                                    "protocol": "tcp", "sel": 1},
               "endpoints": [{"endpointIP": "10.0.0.1", "targetPort": 0, "weight": 1}]})
    };
    let many: Vec<_> = (1..=50).map(|p| rule(p * 100, 0)).collect();
    std::fs::write(
        dir.path().join(config::LB_FILE),
        json!({"lbAttr": many}).to_string(),
    )
    .expect("write");
    let (h, report) = harness_from(dir.path());
    assert!(report.is_clean());
    assert_eq!(report.rules, 50);
    assert_eq!(h.generation(), 1, "one table build for the whole file");

    // Overlapping ranges pass every per-entry check; only the build sees them.
    std::fs::write(
        dir.path().join(config::LB_FILE),
        json!({"lbAttr": [rule(70, 90), rule(100, 0), rule(80, 0)]}).to_string(),
    )
    .expect("write");
    let (h, report) = harness_from(dir.path());
    assert_eq!(report.rules, 2);
    let msgs: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(
        msgs[0].contains("lbconfig.txt: entry 2: malformed-service error: rule"),
        "{msgs:?}"
    );
    assert_eq!(h.handle.current().services.len(), 2);
}

/// `xlb openapi | head -1`, `xlb get lb | head`: the reader going away ends
/// the command quietly with success (it used to panic on the broken pipe
/// and abort with exit 134).
#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xlb"))
        .arg("openapi")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn xlb openapi");
    // Close the pipe's read end before xlb writes (it has not parsed its
    // arguments yet): every write it makes fails with EPIPE.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SIGHUP loads the config files again: new entries appear; a file with a
/// rejected entry changes nothing (its good entries included) and the
/// daemon goes on; SIGTERM still ends it cleanly.
#[test]
fn sighup_reloads_the_config_files_all_or_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let rule = |ip: &str, mode: u8| {
        json!({"serviceArguments": {"externalIP": ip, "port": 80, "protocol": "tcp", "mode": mode},
               "endpoints": [{"endpointIP": "10.0.0.1", "targetPort": 80, "weight": 1}]})
    };
    let write = |rules: Vec<serde_json::Value>| {
        std::fs::write(
            dir.path().join(config::LB_FILE),
            json!({ "lbAttr": rules }).to_string(),
        )
        .expect("write");
    };
    write(vec![rule("192.0.2.1", 0)]);
    let port = free_port();
    let server = format!("127.0.0.1:{port}");
    let mut daemon = start_daemon(dir.path(), port);
    let vips = || -> Vec<String> {
        let out = xlb(&["--api-server", &server, "get", "lb", "-o", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let mut ips: Vec<String> = v["lbAttr"]
            .as_array()
            .expect("lbAttr")
            .iter()
            .map(|r| {
                r["serviceArguments"]["externalIP"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        ips.sort();
        ips
    };
    let hup = |d: &Daemon| {
        let st = Command::new("kill")
            .args(["-HUP", &d.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
    };
    let wait_for = |want: Vec<&str>| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while vips() != want {
            assert!(
                Instant::now() < deadline,
                "rules {:?}, want {want:?}",
                vips()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert_eq!(vips(), vec!["192.0.2.1"]);

    write(vec![rule("192.0.2.1", 0), rule("192.0.2.2", 0)]);
    hup(&daemon);
    wait_for(vec!["192.0.2.1", "192.0.2.2"]);

    // One good new rule and one with an unsupported mode: nothing changes.
    write(vec![rule("192.0.2.3", 0), rule("192.0.2.4", 5)]);
    hup(&daemon);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(vips(), vec!["192.0.2.1", "192.0.2.2"]);
    assert!(
        daemon.0.try_wait().expect("wait").is_none(),
        "SIGHUP ended the daemon"
    );

    let st = Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(s) = daemon.0.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "SIGTERM did not end the daemon");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "{code:?}");
}

/// Issue 22's knobs in `EPconfig.txt` and `lbconfig.txt`: `check-config`
/// accepts good ones and names the field of each bad one; a start loads the
/// good entries only.
#[tokio::test]
async fn check_config_validates_the_probe_knobs() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path().to_str().expect("utf-8");
    let ep = |extra: serde_json::Value| {
        let mut e = json!({"hostName": "10.0.0.5", "probeType": "tcp", "probePort": 6443,
            "probeDuration": 1});
        if let (Some(m), serde_json::Value::Object(x)) = (e.as_object_mut(), extra) {
            m.extend(x);
        }
        e
    };
    let good = json!({"Attr": [ep(json!({"probeTimeout": 0.5, "activeReTries": 5}))]});
    std::fs::write(dir.path().join(config::EP_FILE), good.to_string()).expect("write");
    let out = xlb(&["check-config", "-c", d]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = [
        (json!({"probeTimeout": -1}), "probeTimeout"),
        (json!({"probeTimeout": 0}), "probeTimeout"),
        (json!({"probeTimeout": 1}), "probeTimeout"),
        (json!({"probeTimeout": "soon"}), "probeTimeout"),
        (json!({"activeReTries": 0}), "activeReTries"),
        (json!({"activeReTries": -1}), "activeReTries"),
        (json!({"activeReTries": "x"}), "activeReTries"),
    ];
    let mut all = vec![ep(json!({"name": "good", "activeReTries": 2}))];
    all.extend(bad.iter().map(|(x, _)| ep(x.clone())));
    std::fs::write(
        dir.path().join(config::EP_FILE),
        json!({ "Attr": all }).to_string(),
    )
    .expect("write");
    let out = xlb(&["check-config", "-c", d]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for (i, (_, field)) in bad.iter().enumerate() {
        let line = err
            .lines()
            .find(|l| l.contains(&format!("EPconfig.txt: entry {}:", i + 1)))
            .unwrap_or_else(|| panic!("entry {} reported: {err}", i + 1));
        assert!(line.contains(field), "{line}");
    }
    assert!(!err.contains("entry 0:"), "{err}");
    let (h, report) = harness_from(dir.path());
    assert_eq!((report.endpoints, report.errors.len()), (1, bad.len()));
    let body = h.get("/netlox/v1/config/endpoint/all").await.body;
    assert!(body.contains(r#""activeReTries":2"#), "{body}");

    // A rule's knobs, checked against its probe interval.
    std::fs::remove_file(dir.path().join(config::EP_FILE)).expect("rm");
    std::fs::write(
        dir.path().join(config::LB_FILE),
        r#"{"lbAttr":[{"serviceArguments":{"externalIP":"192.0.2.1","port":80,"protocol":"tcp","monitor":true,"probeTimeout":2,"probeReplyTimeout":3},"endpoints":[{"endpointIP":"10.0.0.1","targetPort":80,"weight":1}]}]}"#,
    )
    .expect("write");
    let out = xlb(&["check-config", "-c", d]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lbconfig.txt: entry 0: service-args error: probeReplyTimeout 3 must be below probeTimeout"),
        "{err}"
    );
}

/// `xlb create ep` with the knobs through the real binary and server: set
/// ones come back and survive `save` and a restart; bad ones fail naming
/// the flag (not a number) or the field (out of range), changing nothing.
#[test]
fn cli_create_ep_with_the_probe_knobs_save_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path().to_str().expect("utf-8 path");
    let port = free_port();
    let server = format!("http://127.0.0.1:{port}");
    let daemon = start_daemon(dir.path(), port);
    let run = |args: &[&str]| {
        let mut full = vec!["--api-server", server.as_str()];
        full.extend_from_slice(args);
        xlb(&full)
    };
    let create = |extra: &[&str]| {
        let mut a = vec![
            "create",
            "ep",
            "10.0.0.7",
            "--probetype=tcp",
            "--probeport=6443",
            "--period=2",
        ];
        a.extend_from_slice(extra);
        run(&a)
    };
    let out = create(&["--probe-timeout=0.5", "--active-retries=5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&[
        "create",
        "ep",
        "10.0.0.8",
        "--probetype=tcp",
        "--probeport=6443",
    ]);
    assert!(out.status.success());
    let get = |server: &str| {
        let out = xlb(&["--api-server", server, "get", "ep", "-o", "json"]);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let before = get(&server);
    let v: serde_json::Value = serde_json::from_str(&before).expect("json");
    let e = |i: usize| v["Attr"][i].clone();
    assert_eq!(
        (e(0)["probeTimeout"].clone(), e(0)["activeReTries"].clone()),
        (json!(0.5), json!(5))
    );
    assert!(e(1).get("probeTimeout").is_none() && e(1).get("activeReTries").is_none());

    for (flags, says) in [
        (&["--probe-timeout=-1"][..], "probeTimeout"),
        (&["--probe-timeout", "-1"][..], "probeTimeout"),
        (&["--probe-timeout=0"][..], "probeTimeout"),
        (&["--probe-timeout=2"][..], "probeTimeout"),
        (&["--probe-timeout=soon"][..], "--probe-timeout"),
        (&["--active-retries=0"][..], "activeReTries"),
        (&["--active-retries=-2"][..], "activeReTries"),
        (&["--active-retries=1.5"][..], "activeReTries"),
        (&["--active-retries=many"][..], "--active-retries"),
    ] {
        let out = create(flags);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} accepted");
        assert!(err.contains(says), "{flags:?}: {err}");
        assert_eq!(get(&server), before, "{flags:?} changed the state");
    }

    let out = run(&["save", "-c", d]);
    assert!(out.status.success());
    drop(daemon);
    let saved = std::fs::read_to_string(dir.path().join(config::EP_FILE)).expect("saved");
    assert!(
        saved.contains("probeTimeout") && saved.contains("activeReTries"),
        "{saved}"
    );
    let check = xlb(&["check-config", "-c", d]);
    assert!(check.status.success());
    let port2 = free_port();
    let _daemon = start_daemon(dir.path(), port2);
    assert_eq!(
        get(&format!("http://127.0.0.1:{port2}")),
        before,
        "same entries after save and restart"
    );
}

/// `xlb save` killed at any moment of its run, again and again, never
/// leaves a pair that loads as a mixture: after every kill what xlb loads
/// has as many rules as probe entries (each round adds one of each), and
/// is the last complete save or the interrupted one.
#[test]
fn kills_during_save_never_leave_a_mixed_pair() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path().to_str().expect("utf-8 path");
    let port = free_port();
    let server = format!("http://127.0.0.1:{port}");
    let _daemon = start_daemon(dir.path(), port);
    let client = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xlb"));
        c.args(["--api-server", server.as_str()]).args(args);
        c
    };
    let ok = |args: &[&str]| {
        let out = client(args).output().expect("run xlb");
        assert!(out.status.success(), "xlb {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // How long one save takes, to spread the kills over it.
    let t = Instant::now();
    ok(&["save", "-c", d]);
    let save_us = t.elapsed().as_micros().max(1) as u64;
    let mut seen = std::collections::BTreeSet::new();
    let mut last = 0;
    for i in 1..=40u64 {
        ok(&[
            "create",
            "lb",
            &format!("192.0.2.{i}"),
            "--tcp=80:8080",
            "--endpoints=10.0.0.1:1",
        ]);
        ok(&["create", "ep", &format!("10.0.1.{i}"), "--probetype=none"]);
        let mut save = client(&["save", "-c", d])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn save");
        // Spread over 0..1.5 save durations, in an order that jumps around.
        std::thread::sleep(Duration::from_micros((i * 37 % 40) * save_us * 3 / 80));
        let _ = save.kill();
        let _ = save.wait();
        let out = ok(&["check-config", "-c", d]);
        let n: Vec<u64> = out
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        assert!(n.len() >= 2, "{out}");
        assert_eq!(n[0], n[1], "round {i}: a mixed pair loads: {out}");
        assert!(
            last <= n[0] && n[0] <= i,
            "round {i}: an older pair came back: {out}"
        );
        last = n[0];
        seen.insert(n[0] == i);
    }
    assert_eq!(
        seen.len(),
        2,
        "the kills hit both before and after the saves' renames"
    );
}

/// A daemon started on an unreadable `lbconfig.txt` (the default,
/// non-strict) runs without it; `xlb save` then refuses to replace it,
/// however often it is run, so neither the file nor its `.bk` is lost.
#[test]
fn save_never_replaces_a_file_the_daemon_could_not_read() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path().to_str().expect("utf-8 path");
    let broken = "{\"lbAttr\": [ {\"serviceArguments\": ";
    std::fs::write(dir.path().join(config::LB_FILE), broken).expect("write");
    let port = free_port();
    let server = format!("http://127.0.0.1:{port}");
    let _daemon = start_daemon(dir.path(), port);
    for _ in 0..2 {
        let out = xlb(&["--api-server", &server, "save", "-c", d]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "save replaced an unreadable file");
        assert!(
            err.contains("cannot be read") && err.contains("lbconfig.txt"),
            "{err}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join(config::LB_FILE)).expect("read"),
        broken
    );
    assert!(!dir.path().join("lbconfig.txt.bk").exists());
}

/// A tmux server of this test's own (its socket name is unique per
/// process), killed when dropped, also when the test fails.
struct Tmux(String);

impl Tmux {
    fn new() -> Tmux {
        Tmux(format!("xlb-top-{}", std::process::id()))
    }
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.0])
            .args(args)
            .output()
            .expect("run tmux")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// `xlb top` against a running daemon, on a terminal (a tmux pane): the
/// rule's row appears with its rates (numbers once two scrapes are in), and
/// the drop table; the screen is redrawn in place.
#[test]
fn top_shows_each_rule_with_its_rates_in_a_terminal() {
    let tmux_there = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(tmux_there, "tmux is needed (scripts/deps.sh installs it)");
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join(config::LB_FILE),
        json!({"lbAttr": [{"serviceArguments": {"externalIP": "192.0.2.30", "port": 80, "protocol": "tcp", "name": "web"},
                           "endpoints": [{"endpointIP": "10.0.0.1", "targetPort": 8080, "weight": 1},
                                         {"endpointIP": "10.0.0.2", "targetPort": 8080, "weight": 1}]}]})
        .to_string(),
    )
    .expect("write");
    let port = free_port();
    let _daemon = start_daemon(dir.path(), port);
    let tmux = Tmux::new();
    let cmd = format!(
        "{} -s 127.0.0.1 -p {port} top --interval 0.3",
        env!("CARGO_BIN_EXE_xlb")
    );
    let out = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "150",
        "-y",
        "40",
        &cmd,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let screen = loop {
        let pane = tmux.run(&["capture-pane", "-p", "-t", "top"]);
        let text = String::from_utf8_lossy(&pane.stdout).into_owned();
        let row = text
            .lines()
            .find(|l| l.starts_with("192.0.2.30:80/tcp"))
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>());
        // VIP, NAME, PKT/S, BYTES/S, NEW FLOWS/S, ENDPOINTS UP, with rates.
        if row.is_some_and(|r| r.len() == 6 && r[2].parse::<f64>().is_ok()) {
            break text;
        }
        assert!(Instant::now() < deadline, "no rates on the screen:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        screen.starts_with("xlb top"),
        "redrawn from the top:\n{screen}"
    );
    assert_eq!(
        screen.matches("xlb top").count(),
        1,
        "one screen:\n{screen}"
    );
    assert!(screen.contains("NEW FLOWS/S"), "{screen}");
    assert!(screen.contains("DROP REASON"), "{screen}");
    let row = screen
        .lines()
        .find(|l| l.starts_with("192.0.2.30:80/tcp"))
        .expect("the rule's row");
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["192.0.2.30:80/tcp", "web", "0", "0", "0", "2/2"],
        "{screen}"
    );
}

/// loxicmd's habits on the real binary: `get loadbalancer` with `-s`/`-p`,
/// `apply -f` of an lbconfig.txt, `save --lb` saying where it wrote,
/// `version`, `check-config` on a missing directory, and `run --help`
/// without the client options.
#[test]
fn loxicmd_spellings_apply_save_and_check_config() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let _daemon = start_daemon(dir.path(), port);
    let p = port.to_string();
    let cli = |args: &[&str]| {
        let mut full = vec!["-s", "127.0.0.1", "-p", p.as_str()];
        full.extend_from_slice(args);
        xlb(&full)
    };
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let file = dir.path().join("to-apply.txt");
    let body = |mode: u8| {
        json!({"serviceArguments": {"externalIP": "192.0.2.40", "port": 80 + u16::from(mode), "protocol": "tcp", "mode": mode},
               "endpoints": [{"endpointIP": "10.0.0.1", "targetPort": 80, "weight": 1}]})
    };
    std::fs::write(&file, json!({"lbAttr": [body(0), body(5)]}).to_string()).expect("write");
    let f = file.to_str().expect("utf-8");
    let out = cli(&["apply", "-f", f]);
    assert!(
        !out.status.success(),
        "a rejected entry fails: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("entry 1: unsupported error"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("1 rules applied"), "{}", text(&out));
    let out = cli(&["get", "loadbalancer"]);
    assert!(out.status.success(), "{}", text(&out));
    let table = text(&out);
    assert!(table.contains("# OF ENDPOINTS"), "{table}");
    assert_eq!(table.lines().count(), 2, "one line per rule: {table}");

    let saved = dir.path().join("saved");
    let out = cli(&["save", "--lb", "-c", saved.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out));
    let lb_file = saved.join(config::LB_FILE);
    assert!(
        text(&out).contains(&lb_file.display().to_string()),
        "{}",
        text(&out)
    );
    assert!(lb_file.exists() && !saved.join(config::EP_FILE).exists());
    let again = cli(&["apply", "-f", lb_file.to_str().expect("utf-8")]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("1 already there"), "{}", text(&again));

    let out = cli(&["version"]);
    assert!(out.status.success());
    assert!(text(&out).contains("commit"), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("daemon at http://127.0.0.1:{port}")),
        "{}",
        text(&out)
    );

    let missing = dir.path().join("no-such-dir");
    let out = xlb(&["check-config", "-c", missing.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(text(&out).contains("does not exist"), "{}", text(&out));

    let help = text(&xlb(&["run", "--help"]));
    for client_only in ["--api-server", "--ca-cert", "--output", "--port"] {
        assert!(!help.contains(client_only), "{client_only} in run's help");
    }
    let help = text(&xlb(&["create", "lb", "--help"]));
    assert!(
        help.contains("fullnat") && help.contains("persist"),
        "{help}"
    );
    let bad = xlb(&[
        "create",
        "lb",
        "192.0.2.1",
        "--tcp=80",
        "--endpoints=10.0.0.1:1",
        "--mode=nat",
    ]);
    assert!(
        text(&bad).contains("possible values: dnat, onearm, fullnat, dsr"),
        "{}",
        text(&bad)
    );
}
