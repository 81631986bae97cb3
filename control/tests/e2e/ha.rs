//! High availability end to end, laid out as the K3s HA docs lay it out:
//! one L2 segment (a test-kit bridge) with a client (10.10.10.2), the
//! balancers lb-1 10.10.10.98, lb-2 .99 and a third member lb-3 .97, three
//! API servers .50–.52 answering HTTP on :6443, and the VIP
//! 10.10.10.100:6443 in full NAT from the floating source 10.10.10.101.
//!
//! Every balancer is the real `xlb` binary on AF_XDP in its own namespace;
//! the client is `scripts/lab/failover_client.py` (new connections every
//! 50 ms, long ones held open) and `scripts/lab/arp_watch.py` (who answers
//! ARP for the VIP, and who announces it). A power loss is the test kit's:
//! the node's processes frozen, its links down, then killed.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use xlb_testkit::{Bridge, Netns, Proc, Signal};

use crate::lab::script;

pub const VIP: &str = "10.10.10.100";
pub const FLOATING: &str = "10.10.10.101";
const CLIENT: &str = "10.10.10.2";
/// lb-1, lb-2, lb-3 in `--cluster` order.
pub const LBS: [&str; 3] = ["10.10.10.98", "10.10.10.99", "10.10.10.97"];
const SERVERS: [&str; 3] = ["10.10.10.50", "10.10.10.51", "10.10.10.52"];
const KEY: &str = "ha-e2e-test-key-0123456789";

/// How a balancer node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    /// A balancer in xlb's election.
    Candidate,
    /// A member that votes and never holds (`--no-dataplane`).
    Witness,
    /// A balancer without election: roles come through POST /config/cistate.
    Controlled,
    /// [`Member::Controlled`] in a sync group (`--cluster --no-election`),
    /// as loxilb runs under kube-loxilb's `--setRoles`.
    Synced,
}

struct Node {
    ns: Netns,
    xlb: Option<Proc>,
    cfg: PathBuf,
    member: Member,
}

pub struct HaLab {
    nodes: Vec<Node>,
    servers: Vec<Proc>,
    client: Netns,
    sw: Bridge,
    /// Declared last: dropped after the processes above.
    lab: xlb_testkit::Lab,
}

/// The K3s guide's rule: the VIP on :6443 to the three servers, round
/// robin, full NAT (the floating source comes from the node's settings).
pub fn k3s_rule(name: &str) -> Value {
    let eps: Vec<Value> = SERVERS
        .iter()
        .map(|s| json!({"endpointIP": s, "targetPort": 6443, "weight": 1}))
        .collect();
    json!({"serviceArguments": {"externalIP": VIP, "port": 6443, "protocol": "tcp",
                                "sel": 0, "mode": 2, "name": name},
           "endpoints": eps})
}

/// A UDP rule beside the K3s one, for long-lived UDP flows: VIP:9000 to the
/// servers' echo on :9000, round robin, full NAT.
pub fn udp_rule(name: &str) -> Value {
    let eps: Vec<Value> = SERVERS
        .iter()
        .map(|s| json!({"endpointIP": s, "targetPort": UDP_PORT, "weight": 1}))
        .collect();
    json!({"serviceArguments": {"externalIP": VIP, "port": UDP_PORT, "protocol": "udp",
                                "sel": 0, "mode": 2, "name": name},
           "endpoints": eps})
}

/// The UDP echo port of the servers and of [`udp_rule`].
pub const UDP_PORT: u16 = 9000;

impl HaLab {
    /// The segment, the client, the three servers, and one namespace per
    /// balancer in `members` (lb-1, lb-2, lb-3 in order); no xlb started.
    pub fn up(members: &[Member]) -> HaLab {
        let mut lab =
            xlb_testkit::Lab::new().expect("the end-to-end tests need root (namespaces, XDP)");
        let mut sw = lab.bridge("sw").expect("segment");
        let client = lab.ns("client").expect("namespace");
        sw.attach("pc", &client, "eth0", 1).expect("client port");
        client
            .addr("eth0", &format!("{CLIENT}/24"))
            .expect("address");
        // Interfaces of test hosts: no partial checksums on veth.
        let _ = client.exec(&["ethtool", "-K", "eth0", "tx", "off"]);
        let mut nodes = Vec::new();
        for (i, &member) in members.iter().enumerate() {
            let ns = lab.ns(&format!("lb{}", i + 1)).expect("namespace");
            sw.attach(&format!("pl{}", i + 1), &ns, "eth0", 1)
                .expect("balancer port");
            ns.addr("eth0", &format!("{}/24", LBS[i])).expect("address");
            let _ = ns.exec(&["ethtool", "-K", "eth0", "tx", "off"]);
            let cfg = lab.dir().expect("dir").join(format!("lb{}", i + 1));
            std::fs::create_dir_all(&cfg).expect("config dir");
            nodes.push(Node {
                ns,
                xlb: None,
                cfg,
                member,
            });
        }
        let mut servers = Vec::new();
        for (i, s) in SERVERS.iter().enumerate() {
            let ns = lab.ns(&format!("s{}", i + 1)).expect("namespace");
            sw.attach(&format!("ps{}", i + 1), &ns, "eth0", 1)
                .expect("server port");
            ns.addr("eth0", &format!("{s}/24")).expect("address");
            let _ = ns.exec(&["ethtool", "-K", "eth0", "tx", "off"]);
            let name = format!("backend-{}", i + 1);
            servers.push(
                ns.spawn(&[
                    "python3",
                    &script("backend.py"),
                    &name,
                    "--http-port",
                    "6443",
                ])
                .start()
                .expect("server"),
            );
            // Speak first, so the segment learns where each one is.
            ns.ping(CLIENT);
        }
        for s in SERVERS {
            wait_http(&client, s);
        }
        HaLab {
            nodes,
            servers,
            client,
            sw,
            lab,
        }
    }

    pub fn ns(&self, node: usize) -> &Netns {
        &self.nodes[node].ns
    }

    /// `node`'s directory: its lbconfig.txt and log, and room for more.
    pub fn dir(&self, node: usize) -> PathBuf {
        self.nodes[node].cfg.clone()
    }

    pub fn segment(&mut self) -> &mut Bridge {
        &mut self.sw
    }

    /// Start xlb on `node` (0-based) with the K3s rule in its lbconfig.txt.
    pub fn start(&mut self, node: usize) {
        let members = LBS[..self.nodes.len()].join(",");
        let n = &mut self.nodes[node];
        let lbconfig = json!({"lbAttr": [k3s_rule("k3s-api"), udp_rule("k3s-udp")]});
        std::fs::write(n.cfg.join("lbconfig.txt"), lbconfig.to_string()).expect("lbconfig");
        let cfg = n.cfg.to_string_lossy().into_owned();
        let me = node.to_string();
        let mut args = vec![
            env!("CARGO_BIN_EXE_xlb"),
            "run",
            "--config-path",
            &cfg,
            "--api",
            "127.0.0.1:11111",
        ];
        match n.member {
            Member::Witness => args.push("--no-dataplane"),
            // The election's floating source: --snat-addrs, which follows llb-inst0.
            Member::Candidate => args.extend(["--iface", "eth0", "--snat-addrs", FLOATING]),
            // A controller's: cistate's vip.
            Member::Controlled | Member::Synced => args.extend(["--iface", "eth0"]),
        }
        if n.member != Member::Controlled {
            args.extend(["--cluster", &members, "--self", &me]);
        }
        if n.member == Member::Synced {
            args.push("--no-election");
        }
        let log = n.cfg.join("xlb.log");
        let proc =
            n.ns.spawn(&args)
                .env("XLB_CLUSTER_KEY", KEY)
                .log(&log)
                .start()
                .expect("spawning xlb");
        n.xlb = Some(proc);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.api(node, "GET", "/config/cistate/all", None).is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "xlb on lb{} did not answer; log:\n{}",
            node + 1,
            self.log(node)
        );
    }

    pub fn log(&self, node: usize) -> String {
        std::fs::read_to_string(self.nodes[node].cfg.join("xlb.log")).unwrap_or_default()
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        let logs: Vec<String> = (0..self.nodes.len())
            .map(|i| format!("--- lb{} ---\n{}", i + 1, self.log(i)))
            .collect();
        format!("lab {}\n{}", self.lab.id(), logs.join("\n"))
    }

    /// Call `node`'s API; `None` if it did not answer.
    pub fn api(
        &self,
        node: usize,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Option<(u16, Value)> {
        crate::lab::api(&self.nodes[node].ns, method, path, body)
    }

    /// `POST /config/cistate` on `node`; the answer.
    pub fn cistate(&self, node: usize, instance: &str, state: &str, vip: &str) -> (u16, Value) {
        let body = json!({"instance": instance, "state": state, "vip": vip});
        self.api(node, "POST", "/config/cistate", Some(&body))
            .expect("API")
    }

    /// `node`'s state of `instance` as GET /config/cistate/all shows it.
    pub fn role(&self, node: usize, instance: &str) -> Option<String> {
        let (_, all) = self.api(node, "GET", "/config/cistate/all", None)?;
        all["Attr"]
            .as_array()?
            .iter()
            .find(|i| i["instance"] == instance)
            .and_then(|i| i["state"].as_str())
            .map(str::to_string)
    }

    /// Whether `node` has `addr` on its loopback (holds it).
    pub fn holds(&self, node: usize, addr: &str) -> bool {
        self.nodes[node]
            .ns
            .exec(&["ip", "-4", "-o", "addr", "show", "dev", "lo"])
            .is_ok_and(|out| out.contains(&format!(" {addr}/")))
    }

    /// The nodes holding the VIP now.
    pub fn holders(&self) -> BTreeSet<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].xlb.is_some() && self.holds(i, VIP))
            .collect()
    }

    /// Wait until exactly one node holds the VIP (and the floating source);
    /// which one.
    pub fn wait_holder(&self, limit: Duration) -> usize {
        self.wait_holder_other_than(None, limit)
    }

    /// [`HaLab::wait_holder`], for a holder other than `not`.
    pub fn wait_holder_other_than(&self, not: Option<usize>, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let h = self.holders();
            if h.len() == 1 {
                let node = *h.iter().next().expect("one");
                if Some(node) != not && self.holds(node, FLOATING) {
                    return node;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no single holder within {limit:?}: {h:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `node`'s MAC on the segment.
    pub fn mac(&self, node: usize) -> String {
        self.nodes[node].ns.mac("eth0").expect("mac")
    }

    /// Pull the plug on `node`.
    pub fn power_loss(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        n.ns.power_loss().expect("power loss");
        if let Some(mut p) = n.xlb.take() {
            p.kill();
        }
    }

    /// Power `node` back on: a reboot's clean slate (no address but the
    /// configured ones), links up, xlb started again.
    pub fn power_on(&mut self, node: usize) {
        let ns = &self.nodes[node].ns;
        ns.ip(&["addr", "flush", "dev", "lo", "scope", "global"])
            .expect("flush lo");
        ns.link_up("eth0").expect("link up");
        ns.link_up("lo").expect("lo up");
        self.start(node);
    }

    /// Stop xlb on `node` with `sig`.
    pub fn stop(&mut self, node: usize, sig: Signal) {
        if let Some(mut p) = self.nodes[node].xlb.take() {
            p.stop_within(sig, Duration::from_secs(10));
        }
    }

    /// The failover client against the VIP for `secs` seconds, once its
    /// long connections are open.
    pub fn failover_client(&self, secs: u32) -> Watch {
        self.client_with(secs, &["--long", "6"])
    }

    /// The connection-sync client: `long` long-lived TCP connections and
    /// `udp` long-lived UDP flows to the VIP, opened one every `stagger`
    /// seconds, each request allowed 3 s (longer than a takeover, so TCP
    /// retransmits across it), and a new connection every 50 ms.
    pub fn sync_client(&self, secs: u32, long: u32, udp: u32, stagger: f64) -> Watch {
        let (long, udp, stagger) = (long.to_string(), udp.to_string(), stagger.to_string());
        self.client_with(
            secs,
            &[
                "--long",
                &long,
                "--udp",
                &udp,
                "--udp-port",
                "9000",
                "--stagger",
                &stagger,
                "--long-timeout",
                "3",
            ],
        )
    }

    /// `failover_client.py` against the VIP for `secs` seconds with `opts`,
    /// and a new connection every 50 ms, 300 ms each (one SYN, not a
    /// retransmission).
    fn client_with(&self, secs: u32, opts: &[&str]) -> Watch {
        let (secs, f) = (secs.to_string(), script("failover_client.py"));
        let mut args = vec!["python3", f.as_str(), VIP, "6443", secs.as_str()];
        args.extend_from_slice(opts);
        args.extend_from_slice(&["--every", "0.05", "--timeout", "0.3"]);
        Watch::start(&self.client, &args)
    }

    /// Who claims the VIP over ARP, asked every 10 ms, for `secs` seconds.
    pub fn arp_watch(&self, secs: u32) -> Watch {
        self.arp_watch_of(VIP, secs)
    }

    /// Who claims `addr` over ARP, asked every 10 ms, for `secs` seconds.
    pub fn arp_watch_of(&self, addr: &str, secs: u32) -> Watch {
        let secs = secs.to_string();
        let f = script("arp_watch.py");
        Watch::start(
            &self.client,
            &["python3", &f, "eth0", addr, &secs, "--every", "0.01"],
        )
    }
}

impl Drop for HaLab {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut p) = n.xlb.take() {
                p.stop_within(Signal::Term, Duration::from_secs(10));
            }
        }
        for s in &mut self.servers {
            s.kill();
        }
    }
}

/// A lab script that says "ready" on stderr and a JSON report on stdout.
pub struct Watch(Proc);

impl Watch {
    fn start(ns: &Netns, args: &[&str]) -> Watch {
        use std::io::{BufRead, BufReader};
        let mut child = ns.spawn(args).piped().start().expect("starting a watcher");
        let mut err = BufReader::new(child.stderr().expect("stderr"));
        let mut line = String::new();
        let _ = err.read_line(&mut line);
        assert_eq!(line.trim(), "ready", "{args:?}: {line}");
        Watch(child)
    }

    pub fn finish(self) -> Value {
        let out = self.0.wait_with_output().expect("watcher");
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("watcher said {text:?}: {e}"))
    }
}

fn wait_http(client: &Netns, server: &str) {
    let url = format!("http://{server}:6443/");
    for _ in 0..50 {
        if client
            .output(&["curl", "-s", "-m", "1", &url])
            .is_ok_and(|o| o.status.success())
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("server {server} never answered");
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// New connections of a failover report: (start, answered) in time order.
pub fn attempts(report: &Value) -> Vec<(f64, bool)> {
    let mut v: Vec<(f64, bool)> = report["new"]
        .as_array()
        .expect("new")
        .iter()
        .map(|c| (c[0].as_f64().expect("start"), !c[1].is_null()))
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// The client-visible outage after `at`: from `at` to the start of the
/// first answered connection after the last failed one (0 if none failed).
pub fn outage(report: &Value, at: f64) -> f64 {
    outage_before(report, at, f64::INFINITY)
}

/// [`outage`] counting only the connections started before `until` (the
/// next failure the test causes).
pub fn outage_before(report: &Value, at: f64, until: f64) -> f64 {
    let after: Vec<(f64, bool)> = attempts(report)
        .into_iter()
        .filter(|a| a.0 >= at && a.0 < until)
        .collect();
    let Some(last_fail) = after.iter().rposition(|a| !a.1) else {
        return 0.0;
    };
    after.get(last_fail + 1).map_or(f64::INFINITY, |a| a.0 - at)
}

/// Failed new connections started within `[from, to)`.
pub fn failures(report: &Value, from: f64, to: f64) -> usize {
    attempts(report)
        .iter()
        .filter(|a| a.0 >= from && a.0 < to && !a.1)
        .count()
}

/// The ARP claims for the VIP: (time, MAC, kind).
pub fn claims(report: &Value) -> Vec<(f64, String, String)> {
    report["claims"]
        .as_array()
        .expect("claims")
        .iter()
        .map(|c| {
            (
                c[0].as_f64().expect("time"),
                c[1].as_str().expect("mac").to_string(),
                c[2].as_str().expect("kind").to_string(),
            )
        })
        .collect()
}

/// The MACs answering ARP for the VIP, in order of their turns: each time
/// the answering MAC changes, a new turn. Two answerers at once show as
/// turns that come back (A, B, A, ...).
pub fn answer_turns(report: &Value) -> Vec<String> {
    let mut turns: Vec<String> = Vec::new();
    for (_, mac, kind) in claims(report) {
        if kind == "reply" && turns.last() != Some(&mac) {
            turns.push(mac);
        }
    }
    turns
}
