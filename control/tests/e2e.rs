//! End-to-end: the real `xlb` binary on AF_XDP in the lab topology of
//! `scripts/lab.sh` (client, balancer, switch and three backend namespaces),
//! real kernels and real servers on both sides. Needs root (CI runs as root);
//! these tests fail, never skip, without it.
//!
//! Each test brings up its own lab under a unique namespace prefix and tears
//! it down in `Drop`, also when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const VIP: &str = "10.10.100.1";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn xlb_bin() -> &'static str {
    env!("CARGO_BIN_EXE_xlb")
}

struct Lab {
    prefix: String,
    queues: u32,
    xlb: Option<Child>,
    cfg: PathBuf,
}

impl Lab {
    /// Bring up the topology and the backends.
    fn up(test: &str, queues: u32) -> Lab {
        assert_eq!(
            unsafe_free_euid(),
            0,
            "the end-to-end tests need root (network namespaces, XDP)"
        );
        let prefix = format!("x{}{}", std::process::id() % 100_000, test);
        let cfg = std::env::temp_dir().join(format!("{prefix}-cfg"));
        let _ = std::fs::remove_dir_all(&cfg);
        std::fs::create_dir_all(&cfg).expect("config dir");
        let lab = Lab {
            prefix,
            queues,
            xlb: None,
            cfg,
        };
        let out = lab.lab_sh("up");
        assert!(
            out.status.success(),
            "lab up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lab
    }

    fn lab_sh(&self, what: &str) -> Output {
        Command::new("bash")
            .arg(repo().join("scripts/lab.sh"))
            .arg(what)
            .env("XLB_LAB", &self.prefix)
            .env("XLB_LAB_QUEUES", self.queues.to_string())
            .current_dir(repo())
            .output()
            .expect("running scripts/lab.sh")
    }

    fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// Run a command inside a namespace of the lab.
    fn exec(&self, role: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(role)])
            .args(args)
            .current_dir(repo())
            .output()
            .expect("ip netns exec")
    }

    /// Start xlb in the balancer namespace with `lbconfig` (JSON) as its config.
    fn start_xlb(&mut self, lbconfig: &str, extra: &[&str]) {
        std::fs::write(self.cfg.join("lbconfig.txt"), lbconfig).expect("lbconfig");
        let log = std::fs::File::create(self.cfg.join("xlb.log")).expect("log file");
        let cfg = self.cfg.to_string_lossy().into_owned();
        let mut args = vec![
            "netns",
            "exec",
            "",
            xlb_bin(),
            "run",
            "--iface",
            "lb0,lb1",
            "--config-path",
            &cfg,
            "--api",
            "127.0.0.1:11111",
        ];
        let ns = self.ns("lb");
        args[2] = &ns;
        let q = self.queues.to_string();
        if self.queues > 1 {
            args.extend(["--queues", &q]);
        }
        args.extend_from_slice(extra);
        let child = Command::new("ip")
            .args(&args)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawning xlb");
        self.xlb = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.api("GET", "/config/loadbalancer/all", None).is_some() {
                return;
            }
            if let Some(Ok(Some(st))) = self.xlb.as_mut().map(|c| c.try_wait()) {
                panic!("xlb exited ({st}); log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("xlb did not answer on its API; log:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.cfg.join("xlb.log")).unwrap_or_default()
    }

    /// Call xlb's API from the balancer namespace; `None` if it did not answer.
    fn api(&self, method: &str, path: &str, body: Option<&Value>) -> Option<(u16, Value)> {
        let url = format!("http://127.0.0.1:11111/netlox/v1{path}");
        let mut args = vec![
            "curl",
            "-s",
            "-m",
            "5",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
            &url,
        ];
        let b;
        if let Some(v) = body {
            b = v.to_string();
            args.extend(["-H", "Content-Type: application/json", "-d", &b]);
        }
        let out = self.exec("lb", &args);
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n')?;
        let code: u16 = code.trim().parse().ok()?;
        Some((code, serde_json::from_str(body).unwrap_or(Value::Null)))
    }

    fn post_rule(&self, rule: Value) {
        let (code, body) = self
            .api("POST", "/config/loadbalancer", Some(&rule))
            .expect("API");
        assert_eq!(code, 200, "{body}");
    }

    /// Run the lab client against `vip`: `n_http` requests and `n_udp` datagrams.
    fn client(&self, vip: &str, n_http: u32, n_udp: u32) -> Value {
        let out = self.exec(
            "client",
            &[
                "python3",
                "scripts/lab/client.py",
                vip,
                &n_http.to_string(),
                &n_udp.to_string(),
                "--json",
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "client output {text:?} ({e}); stderr {}; xlb log:\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log()
            )
        })
    }

    fn metrics(&self) -> String {
        let out = self.exec(
            "lb",
            &["curl", "-s", "http://127.0.0.1:11111/netlox/v1/metrics"],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn stop_xlb(&mut self, signal: &str) {
        if let Some(mut c) = self.xlb.take() {
            // `ip netns exec` execs xlb, so the child's pid is xlb's.
            let _ = Command::new("kill")
                .args([signal, &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_xlb("-TERM");
        let _ = self.lab_sh("down");
        let _ = std::fs::remove_dir_all(&self.cfg);
    }
}

/// The effective user id, read from /proc (no unsafe, no libc).
fn unsafe_free_euid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).and_then(|u| u.parse().ok()))
        })
        .unwrap_or(u32::MAX)
}

fn rule(vip: &str, port: u16, proto: &str, sel: u8, mode: u8, eps: &[(&str, u16)]) -> Value {
    serde_json::json!({
        "serviceArguments": {
            "externalIP": vip, "port": port, "protocol": proto, "sel": sel, "mode": mode,
            "inactiveTimeOut": 30, "name": format!("e2e-{proto}-{port}")
        },
        "endpoints": eps.iter().map(|(ip, p)| serde_json::json!({
            "endpointIP": ip, "targetPort": p, "weight": 1
        })).collect::<Vec<_>>()
    })
}

const BACKENDS: [&str; 3] = ["10.10.2.11", "10.10.2.12", "10.10.2.13"];

fn http_rule(mode: u8, sel: u8, port: u16, target: u16) -> Value {
    let eps: Vec<(&str, u16)> = BACKENDS.iter().map(|b| (*b, target)).collect();
    rule(VIP, port, "tcp", sel, mode, &eps)
}

fn counts(v: &Value, key: &str) -> Vec<u64> {
    let mut c: Vec<u64> = v[key]
        .as_object()
        .map(|o| o.values().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    c.sort_unstable();
    c
}

const EMPTY: &str = r#"{"lbAttr":[]}"#;

#[test]
fn lab_config_full_nat_http_round_robin_and_udp_maglev() {
    let mut lab = Lab::up("fn", 1);
    let cfg = std::fs::read_to_string(repo().join("configs/lab/lbconfig.txt")).expect("lab config");
    lab.start_xlb(&cfg, &[]);
    let r = lab.client(VIP, 60, 12);
    assert_eq!(r["http_failed"], 0, "{r}");
    assert_eq!(
        counts(&r, "http"),
        vec![20, 20, 20],
        "round robin spreads evenly: {r}"
    );
    assert_eq!(r["udp_failed"], 0, "{r}");
    assert_eq!(counts(&r, "udp").iter().sum::<u64>(), 12, "{r}");
    // Endpoint counters come from the dataplane.
    let (_, all) = lab
        .api("GET", "/config/loadbalancer/all", None)
        .expect("API");
    let http = all["lbAttr"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["serviceArguments"]["port"] == 80))
        .expect("http rule");
    for ep in http["endpoints"].as_array().expect("endpoints") {
        let c = ep["counter"].as_str().expect("counter");
        let packets: u64 = c
            .split(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("packets");
        assert!(
            packets >= 20 * 4,
            "each backend saw its 20 connections both ways: {c}"
        );
    }
    // The VIP lives on lo while xlb runs, and is gone after a clean stop.
    let lo = |lab: &Lab| {
        String::from_utf8_lossy(&lab.exec("lb", &["ip", "addr", "show", "dev", "lo"]).stdout)
            .into_owned()
    };
    assert!(lo(&lab).contains(VIP), "{}", lo(&lab));
    lab.stop_xlb("-TERM");
    assert!(
        !lo(&lab).contains(VIP),
        "xlb removes the addresses it added: {}",
        lo(&lab)
    );
}

#[test]
fn dnat_one_arm_and_dsr_modes_carry_http() {
    let mut lab = Lab::up("md", 1);
    lab.start_xlb(EMPTY, &[]);
    // DNAT: the backends route back through xlb (their default route).
    lab.post_rule(http_rule(0, 0, 80, 8080));
    let r = lab.client(VIP, 30, 0);
    assert_eq!(r["http_failed"], 0, "DNAT: {r}\n{}", lab.log());
    assert_eq!(counts(&r, "http"), vec![10, 10, 10], "DNAT: {r}");

    // One-arm: source NAT to the balancer's own address on the backend LAN.
    let (code, _) = lab
        .api(
            "DELETE",
            &format!("/config/loadbalancer/externalipaddress/{VIP}/port/80/protocol/tcp"),
            None,
        )
        .expect("API");
    assert_eq!(code, 200);
    lab.post_rule(http_rule(1, 0, 80, 8080));
    let r = lab.client(VIP, 30, 0);
    assert_eq!(r["http_failed"], 0, "one-arm: {r}\n{}", lab.log());
    assert_eq!(counts(&r, "http"), vec![10, 10, 10], "one-arm: {r}");

    // DSR: only the MACs change; the backends hold the VIP on lo and answer
    // the client directly (through the balancer's kernel, which routes).
    for b in ["be1", "be2", "be3"] {
        lab.exec(b, &["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
        lab.exec(
            b,
            &[
                "sysctl",
                "-qw",
                "net.ipv4.conf.all.arp_ignore=1",
                "net.ipv4.conf.all.arp_announce=2",
            ],
        );
    }
    lab.exec(
        "lb",
        &[
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.lb1.rp_filter=0",
            "net.ipv4.conf.lb1.accept_local=1",
        ],
    );
    let dsr = {
        let eps: Vec<(&str, u16)> = BACKENDS.iter().map(|b| (*b, 8080)).collect();
        rule(VIP, 8080, "tcp", 1, 3, &eps)
    };
    lab.post_rule(dsr);
    let out = lab.exec(
        "client",
        &["python3", "-c", &format!(
            "import http.client,collections\nc=collections.Counter()\nfor i in range(30):\n h=http.client.HTTPConnection('{VIP}',8080,timeout=2); h.request('GET','/'); c[h.getresponse().read().decode().strip()]+=1; h.close()\nprint(sum(c.values()), len(c))"
        )],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        "30 3",
        "DSR: 30 answers from 3 backends; stderr {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        lab.log()
    );
}

#[test]
fn full_nat_sources_from_the_configured_snat_address() {
    let mut lab = Lab::up("sn", 1);
    // Outside every lab subnet: the backends reach it through their default
    // route, the balancer; xlb puts it on lo.
    lab.start_xlb(EMPTY, &["--snat-addrs", "10.10.9.1"]);
    lab.post_rule(http_rule(2, 0, 80, 8080));
    let out = lab.exec(
        "client",
        &["python3", "-c", &format!(
            "import http.client,collections\nc=collections.Counter()\nfor i in range(12):\n h=http.client.HTTPConnection('{VIP}',80,timeout=2); h.request('GET','/'); r=h.getresponse(); r.read(); c[r.getheader('X-Peer')]+=1; h.close()\nprint(dict(c))"
        )],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        "{'10.10.9.1': 12}",
        "every backend sees the configured source; stderr {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        lab.log()
    );
}

#[test]
fn ipv6_vip_with_ipv6_backends() {
    let mut lab = Lab::up("v6", 1);
    lab.start_xlb(EMPTY, &[]);
    let eps = [
        ("fd00:10:2::11", 8080),
        ("fd00:10:2::12", 8080),
        ("fd00:10:2::13", 8080),
    ];
    lab.post_rule(rule("fd00:10:100::1", 80, "tcp", 0, 2, &eps));
    let udp = [
        ("fd00:10:2::11", 9000),
        ("fd00:10:2::12", 9000),
        ("fd00:10:2::13", 9000),
    ];
    lab.post_rule(rule("fd00:10:100::1", 53, "udp", 1, 2, &udp));
    let r = lab.client("fd00:10:100::1", 30, 6);
    assert_eq!(r["http_failed"], 0, "{r}\n{}", lab.log());
    assert_eq!(counts(&r, "http"), vec![10, 10, 10], "{r}");
    assert_eq!(r["udp_failed"], 0, "{r}");
}

#[test]
fn two_queues_two_workers_replies_on_either_queue() {
    let mut lab = Lab::up("q2", 2);
    lab.start_xlb(EMPTY, &[]);
    lab.post_rule(http_rule(2, 0, 80, 8080));
    let r = lab.client(VIP, 60, 0);
    assert_eq!(
        r["http_failed"],
        0,
        "full NAT on 2 queues: {r}\n{}",
        lab.log()
    );
    let m = lab.metrics();
    let busy = m
        .lines()
        .filter(|l| l.starts_with("xlb_worker_rx_packets_total"))
        .filter(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                > 0
        })
        .count();
    assert_eq!(busy, 2, "both workers carried traffic:\n{m}");
    // DNAT: replies come from the backends and may land on the other queue.
    let (code, _) = lab
        .api("DELETE", "/config/loadbalancer/all", None)
        .expect("API");
    assert_eq!(code, 200);
    lab.post_rule(http_rule(0, 0, 80, 8080));
    let r = lab.client(VIP, 60, 0);
    assert_eq!(r["http_failed"], 0, "DNAT on 2 queues: {r}\n{}", lab.log());
}

#[test]
fn non_vip_traffic_still_reaches_the_kernel_and_a_killed_xlb_restarts() {
    let mut lab = Lab::up("nk", 1);
    lab.start_xlb(EMPTY, &[]);
    lab.post_rule(http_rule(2, 0, 80, 8080));
    // A TCP server on the balancer's own address, reached from the client.
    let server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns("lb"),
            "python3",
            "-m",
            "http.server",
            "7000",
            "--bind",
            "10.10.1.1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node server");
    let mut ok = false;
    for _ in 0..50 {
        let out = lab.exec(
            "client",
            &[
                "curl",
                "-s",
                "-m",
                "2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "http://10.10.1.1:7000/",
            ],
        );
        if String::from_utf8_lossy(&out.stdout) == "200" {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(server);
    assert!(ok, "the node's own TCP service is reachable while xlb runs");
    // ARP for the balancer's address is answered by the kernel.
    let out = lab.exec("client", &["ip", "neigh", "show", "10.10.1.1"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("lladdr"),
        "ARP resolved"
    );

    // SIGKILL leaves the XDP programs attached; a new xlb takes over.
    lab.stop_xlb("-KILL");
    let cfg = std::fs::read_to_string(repo().join("configs/lab/lbconfig.txt")).expect("lab config");
    lab.start_xlb(&cfg, &[]);
    let r = lab.client(VIP, 30, 3);
    assert_eq!(r["http_failed"], 0, "after a restart: {r}\n{}", lab.log());
    assert_eq!(r["udp_failed"], 0, "{r}");
}

#[test]
fn an_idle_udp_flow_expires_after_its_timeout_and_is_chosen_afresh() {
    let mut lab = Lab::up("ex", 1);
    lab.start_xlb(EMPTY, &[]);
    let mut r = rule(
        VIP,
        53,
        "udp",
        0,
        2,
        &[("10.10.2.11", 9000), ("10.10.2.12", 9000)],
    );
    r["serviceArguments"]["inactiveTimeOut"] = 2.into();
    lab.post_rule(r);
    // One client socket (fixed source port): same flow while active.
    let script = format!(
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('0.0.0.0',5555)); s.settimeout(2)\n\
         def ask():\n s.sendto(b'x',('{VIP}',53)); return s.recvfrom(100)[0].split()[0].decode()\n\
         a=ask(); time.sleep(1); b=ask(); time.sleep(3.5); c=ask()\nprint(a,b,c)"
    );
    let out = lab.exec("client", &["python3", "-c", &script]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let w: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(
        w.len(),
        3,
        "{text} {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        lab.log()
    );
    assert_eq!(w[0], w[1], "an active flow keeps its backend");
    assert_ne!(
        w[1], w[2],
        "after the idle timeout the flow is new and round robin moves on"
    );
}

#[test]
fn hash_pins_a_flow_weights_hold_and_large_datagrams_pass() {
    let mut lab = Lab::up("se", 1);
    lab.start_xlb(EMPTY, &[]);
    // sel 1 (Maglev): one 5-tuple always reaches the same backend; many spread.
    let eps: Vec<(&str, u16)> = BACKENDS.iter().map(|b| (*b, 9000)).collect();
    lab.post_rule(rule(VIP, 53, "udp", 1, 2, &eps));
    let script = format!(
        "import socket\nseen=[]\nfor port in range(6000,6040):\n s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('0.0.0.0',port)); s.settimeout(2)\n \
         who=set()\n for i in range(3):\n  s.sendto(b'x'*1400,('{VIP}',53)); d=s.recvfrom(4000)[0]; who.add(d.split()[0].decode()); assert len(d)>1400\n \
         seen.append(who)\n s.close()\nprint(all(len(w)==1 for w in seen), len(set().union(*seen)))"
    );
    let out = lab.exec("client", &["python3", "-c", &script]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "True 3",
        "each flow pinned, flows spread over 3 backends, 1400-byte datagrams echoed (the echo stays under the MTU: xlb does not reassemble fragments); stderr {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        lab.log()
    );
    // sel 2 (priority): weights as percentages.
    let mut r = http_rule(2, 2, 80, 8080);
    for (e, w) in r["endpoints"]
        .as_array_mut()
        .expect("endpoints")
        .iter_mut()
        .zip([60, 30, 10])
    {
        e["weight"] = w.into();
    }
    lab.post_rule(r);
    let res = lab.client(VIP, 100, 0);
    assert_eq!(res["http_failed"], 0, "{res}");
    assert_eq!(
        counts(&res, "http"),
        vec![10, 30, 60],
        "weights 60/30/10 over 100 connections: {res}"
    );
}

#[test]
fn taking_a_vip_announces_it_with_gratuitous_arp() {
    let mut lab = Lab::up("ga", 1);
    // The client learns from unsolicited ARP only with arp_accept.
    lab.exec(
        "client",
        &["sysctl", "-qw", "net.ipv4.conf.c0.arp_accept=1"],
    );
    lab.start_xlb(EMPTY, &[]);
    lab.post_rule(rule(
        "10.10.1.100",
        80,
        "tcp",
        0,
        2,
        &[("10.10.2.11", 8080)],
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = String::new();
    while Instant::now() < deadline {
        let out = lab.exec("client", &["ip", "neigh", "show", "10.10.1.100"]);
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        if last.contains("lladdr") {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "the client never learned the VIP from a gratuitous ARP: {last:?}\n{}",
        lab.log()
    );
}

/// The endpoint's `state` in GET /config/loadbalancer/all.
fn endpoint_state(lab: &Lab, ip: &str) -> String {
    let (_, all) = lab
        .api("GET", "/config/loadbalancer/all", None)
        .expect("API");
    all["lbAttr"][0]["endpoints"]
        .as_array()
        .and_then(|eps| eps.iter().find(|e| e["endpointIP"] == ip))
        .and_then(|e| e["state"].as_str())
        .unwrap_or("")
        .to_string()
}

fn wait_state(lab: &Lab, ip: &str, want: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if endpoint_state(lab, ip) == want {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{ip} did not become {want} within {limit:?}\n{}", lab.log());
}

#[test]
fn a_dead_backend_is_probed_down_and_avoided_then_returns() {
    let mut lab = Lab::up("hp", 1);
    lab.start_xlb(EMPTY, &[]);
    for b in BACKENDS {
        let ep = serde_json::json!({
            "hostName": b, "name": format!("{b}_tcp_8080"), "probeType": "tcp",
            "probePort": 8080, "probeDuration": 1, "inactiveReTries": 2
        });
        let (code, body) = lab.api("POST", "/config/endpoint", Some(&ep)).expect("API");
        assert_eq!(code, 200, "{body}");
    }
    let mut r = http_rule(2, 0, 80, 8080);
    r["serviceArguments"]["monitor"] = true.into();
    lab.post_rule(r);
    let before = lab.client(VIP, 30, 0);
    assert_eq!(counts(&before, "http"), vec![10, 10, 10], "{before}");

    // Kill backend 2's servers: within retries × period + timeout (+ slack) it
    // is marked down, and new connections avoid it.
    for pid in String::from_utf8_lossy(
        &lab.exec("be2", &["ip", "netns", "pids", &lab.ns("be2")])
            .stdout,
    )
    .split_whitespace()
    {
        let _ = Command::new("kill").arg(pid).stderr(Stdio::null()).status();
    }
    let took = wait_state(&lab, "10.10.2.12", "inactive", Duration::from_secs(8));
    assert!(
        took < Duration::from_secs(5),
        "detected in {took:?} (budget 2 × 1 s + 1 s timeout + 1 s)"
    );
    let during = lab.client(VIP, 30, 0);
    assert_eq!(
        during["http_failed"], 0,
        "no new connection fails: {during}"
    );
    assert_eq!(
        counts(&during, "http"),
        vec![15, 15],
        "only the live backends: {during}"
    );

    // Bring it back: probed up, and it takes new connections again.
    let server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns("be2"),
            "python3",
            "scripts/lab/backend.py",
            "backend-2",
        ])
        .current_dir(repo())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("restart backend 2");
    wait_state(&lab, "10.10.2.12", "active", Duration::from_secs(8));
    let after = lab.client(VIP, 30, 0);
    drop(server);
    assert_eq!(after["http_failed"], 0, "{after}");
    assert_eq!(
        counts(&after, "http"),
        vec![10, 10, 10],
        "backend 2 is back: {after}"
    );
}
