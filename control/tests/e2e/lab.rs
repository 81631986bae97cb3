//! The end-to-end lab: the topology of `scripts/lab.sh` (two-arm or
//! one-arm: client, balancer, a switch namespace and three backends running
//! `scripts/lab/backend.py`), built in a test-kit [`xlb_testkit::Lab`]
//! whose names are unique per process and lab, so the tests run in
//! parallel; the `xlb` binary started in the balancer namespace, its API
//! and metrics, and the lab client. Everything — xlb, the backends,
//! anything a test started in a namespace — is stopped and removed when the
//! [`Lab`] is dropped, also when the test fails.
//!
//! The addresses, interface names and backends are `scripts/lab.sh`'s, so
//! `configs/lab` and `configs/lab-onearm` work unchanged; keep the two in
//! step.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use xlb_testkit::{Netns, Proc, Signal, Veth};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A script of the lab, by absolute path (commands run in any directory).
pub fn script(name: &str) -> String {
    repo()
        .join("scripts/lab")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

pub fn xlb_bin() -> &'static str {
    env!("CARGO_BIN_EXE_xlb")
}

/// Which of `scripts/lab.sh`'s topologies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topo {
    /// client — lb0 [xlb] lb1 — switch — three backends.
    TwoArm,
    /// client, xlb and three backends on one switch and one subnet.
    OneArm,
}

pub struct Lab {
    xlb: Option<Proc>,
    backends: Vec<Proc>,
    queues: u32,
    topo: Topo,
    /// xlb's config directory and log.
    pub cfg: PathBuf,
    client: Netns,
    lb: Netns,
    bes: Vec<Netns>,
    /// Declared last: dropped after the processes above.
    lab: xlb_testkit::Lab,
}

impl Lab {
    /// Bring up the two-arm topology and the backends, `queues` queues on
    /// every veth.
    pub fn up(queues: u32) -> Lab {
        Lab::up_topo(queues, Topo::TwoArm)
    }

    /// Bring up the one-arm topology (one subnet for client, xlb and
    /// backends) and the backends.
    pub fn up_one_arm() -> Lab {
        Lab::up_topo(1, Topo::OneArm)
    }

    fn up_topo(queues: u32, topo: Topo) -> Lab {
        let mut lab =
            xlb_testkit::Lab::new().expect("the end-to-end tests need root (namespaces, XDP)");
        let cfg = lab.dir().expect("config dir").to_path_buf();
        let ns = |lab: &mut xlb_testkit::Lab, role: &str| lab.ns(role).expect("namespace");
        let client = ns(&mut lab, "client");
        let lb = ns(&mut lab, "lb");
        let mut sw = lab.bridge("sw").expect("switch");
        let bes: Vec<Netns> = (1..=3).map(|i| ns(&mut lab, &format!("be{i}"))).collect();
        let veth = |a: &Netns, ai: &str, b: &Netns, bi: &str| {
            Veth::new(a, ai, b, bi)
                .queues(queues)
                .create()
                .expect("veth");
        };
        let addr = |n: &Netns, i: &str, cidr: &str| n.addr(i, cidr).expect("address");
        let addr6 = |n: &Netns, i: &str, cidr: &str| n.addr_nodad(i, cidr).expect("address");
        let route = |n: &Netns, via: &str| n.route("default", via).expect("route");
        // (backend subnet prefix, the address the backends speak to first)
        let (net, first) = match topo {
            Topo::TwoArm => {
                veth(&client, "c0", &lb, "lb0");
                veth(&lb, "lb1", sw.ns(), "sw0");
                sw.plug("sw0", &lb).expect("switch port");
                addr(&client, "c0", "10.10.1.2/24");
                addr6(&client, "c0", "fd00:10:1::2/64");
                route(&client, "10.10.1.1");
                route(&client, "fd00:10:1::1");
                addr(&lb, "lb0", "10.10.1.1/24");
                addr6(&lb, "lb0", "fd00:10:1::1/64");
                addr(&lb, "lb1", "10.10.2.1/24");
                addr6(&lb, "lb1", "fd00:10:2::1/64");
                ("2", "10.10.2.1")
            }
            Topo::OneArm => {
                sw.attach("sc", &client, "c0", queues).expect("client port");
                sw.attach("slb", &lb, "lb0", queues).expect("balancer port");
                addr(&client, "c0", "10.10.3.2/24");
                addr6(&client, "c0", "fd00:10:3::2/64");
                addr(&lb, "lb0", "10.10.3.1/24");
                addr6(&lb, "lb0", "fd00:10:3::1/64");
                ("3", "10.10.3.1")
            }
        };
        let mut backends = Vec::new();
        for (i, be) in bes.iter().enumerate() {
            let i = i + 1;
            sw.attach(&format!("s{i}"), be, "eth0", queues)
                .expect("backend port");
            addr(be, "eth0", &format!("10.10.{net}.1{i}/24"));
            addr6(be, "eth0", &format!("fd00:10:{net}::1{i}/64"));
            if topo == Topo::TwoArm {
                route(be, "10.10.2.1");
                route(be, "fd00:10:2::1");
            }
            backends.push(
                be.spawn(&["python3", &script("backend.py"), &format!("backend-{i}")])
                    .start()
                    .expect("starting a backend"),
            );
            // Speak first, so the switch learns where each backend is.
            be.ping(first);
        }
        if topo == Topo::OneArm {
            client.ping(first);
        }
        for be in &bes {
            wait_listening(be, 8080);
        }
        Lab {
            xlb: None,
            backends,
            queues,
            topo,
            cfg,
            client,
            lb,
            bes,
            lab,
        }
    }

    /// The namespace of `role`: "client", "lb", "be1".."be3".
    pub fn ns(&self, role: &str) -> &Netns {
        match role {
            "client" => &self.client,
            "lb" => &self.lb,
            _ => role
                .strip_prefix("be")
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| self.bes.get(i.wrapping_sub(1)))
                .unwrap_or_else(|| panic!("no role {role} in the lab ({})", self.lab.id())),
        }
    }

    /// Run a command inside a namespace of the lab; its output.
    pub fn exec(&self, role: &str, args: &[&str]) -> Output {
        self.ns(role).output(args).expect("ip netns exec")
    }

    /// Start xlb in the balancer namespace with `lbconfig` (JSON) as its config.
    pub fn start_xlb(&mut self, lbconfig: &str, extra: &[&str]) {
        std::fs::write(self.cfg.join("lbconfig.txt"), lbconfig).expect("lbconfig");
        let cfg = self.cfg.to_string_lossy().into_owned();
        let ifaces = match self.topo {
            Topo::OneArm => "lb0",
            Topo::TwoArm => "lb0,lb1",
        };
        let mut args = vec![
            xlb_bin(),
            "run",
            "--iface",
            ifaces,
            "--config-path",
            &cfg,
            "--api",
            "127.0.0.1:11111",
        ];
        let q = self.queues.to_string();
        if self.queues > 1 {
            args.extend(["--queues", &q]);
        }
        args.extend_from_slice(extra);
        let xlb = self
            .lb
            .spawn(&args)
            .log(self.cfg.join("xlb.log"))
            .start()
            .expect("spawning xlb");
        self.xlb = Some(xlb);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if api_answers(&self.lb) {
                return;
            }
            if self.xlb.as_mut().is_some_and(|x| !x.running()) {
                panic!("xlb exited; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("xlb did not answer on its API; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.cfg.join("xlb.log")).unwrap_or_default()
    }

    /// Call xlb's API from the balancer namespace; `None` if it did not answer.
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> Option<(u16, Value)> {
        api(&self.lb, method, path, body)
    }

    pub fn post_rule(&self, rule: Value) {
        let (code, body) = self
            .api("POST", "/config/loadbalancer", Some(&rule))
            .expect("API");
        assert_eq!(code, 200, "{body}");
    }

    /// Run the lab client against `vip`: `n_http` requests and `n_udp` datagrams.
    pub fn client(&self, vip: &str, n_http: u32, n_udp: u32) -> Value {
        let out = self.exec(
            "client",
            &[
                "python3",
                &script("client.py"),
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

    pub fn metrics(&self) -> String {
        let out = self.exec(
            "lb",
            &["curl", "-s", "http://127.0.0.1:11111/netlox/v1/metrics"],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stop xlb with `sig`, waiting up to 10 s for it to exit (then SIGKILL).
    pub fn stop_xlb(&mut self, sig: Signal) {
        if let Some(mut xlb) = self.xlb.take() {
            xlb.stop_within(sig, Duration::from_secs(10));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // A clean stop first, as an operator would; the lab then kills
        // whatever still runs and removes the namespaces.
        self.stop_xlb(Signal::Term);
        for b in &mut self.backends {
            b.kill();
        }
    }
}

/// Call xlb's API in namespace `lb`; `None` if it did not answer.
pub fn api(lb: &Netns, method: &str, path: &str, body: Option<&Value>) -> Option<(u16, Value)> {
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
    let out = lb.output(&args).ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    let code: u16 = code.trim().parse().ok()?;
    Some((code, serde_json::from_str(body).unwrap_or(Value::Null)))
}

fn api_answers(lb: &Netns) -> bool {
    api(lb, "GET", "/config/loadbalancer/all", None).is_some()
}

/// Wait (up to 5 s) until something listens on `port` in `ns`.
fn wait_listening(ns: &Netns, port: u16) {
    let probe = format!("import socket; socket.create_connection(('127.0.0.1', {port}), 0.2)");
    for _ in 0..50 {
        if ns
            .output(&["python3", "-c", &probe])
            .is_ok_and(|o| o.status.success())
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
