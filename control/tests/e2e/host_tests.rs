//! What xlb does to the host it runs on, end to end in the lab: one xlb per
//! interface (a second is refused and the first keeps forwarding), a
//! removed XDP program is noticed, and whatever way xlb ends (SIGTERM,
//! SIGINT, SIGKILL then a restart, `--strict-config` refusing at start)
//! nothing it added stays: no XDP program, no address, no record, and
//! `ip_local_reserved_ports` back to the operator's ranges. Also the time a
//! killed xlb's restart takes to forward VIP traffic again.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use xlb_testkit::Signal;

use crate::lab::{repo, xlb_bin, Lab};
use crate::VIP;

/// An operator's own reservation (a NodePort range), which xlb must keep.
const OPERATOR_PORTS: &str = "30000-32767";
/// The same with xlb's source-NAT range merged in.
const WITH_XLB_PORTS: &str = "30000-32767,40000-59999";

fn lab_config() -> String {
    std::fs::read_to_string(repo().join("configs/lab/lbconfig.txt")).expect("lab config")
}

fn stdout(lab: &Lab, args: &[&str]) -> String {
    String::from_utf8_lossy(&lab.exec("lb", args).stdout)
        .trim()
        .to_string()
}

fn reserved_ports(lab: &Lab) -> String {
    stdout(lab, &["sysctl", "-n", "net.ipv4.ip_local_reserved_ports"])
}

fn xdp_on(lab: &Lab, iface: &str) -> bool {
    stdout(lab, &["ip", "-d", "link", "show", "dev", iface]).contains("prog/xdp")
}

fn vip_on_lo(lab: &Lab) -> bool {
    stdout(lab, &["ip", "-o", "addr", "show", "dev", "lo"]).contains(&format!("{VIP}/32"))
}

/// The records xlb keeps for the balancer's namespace.
fn records(lab: &Lab) -> Vec<PathBuf> {
    let ino = stdout(lab, &["stat", "-L", "-c", "%i", "/proc/self/ns/net"]);
    let dir = PathBuf::from(format!("/run/xlb/net-{ino}"));
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().is_some_and(|n| {
                        let n = n.to_string_lossy();
                        n.starts_with("ledger-") && n.ends_with(".json")
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One HTTP request to the VIP answered within a second.
fn vip_answers(lab: &Lab) -> bool {
    let url = format!("http://{VIP}/");
    let out = lab.exec(
        "client",
        &[
            "curl",
            "-s",
            "-m",
            "1",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url,
        ],
    );
    String::from_utf8_lossy(&out.stdout) == "200"
}

/// Run `xlb run` on the balancer's interfaces in the foreground, for a
/// start that must fail; its output.
fn run_to_exit(lab: &Lab, cfg: &Path, api: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "timeout",
        "60",
        xlb_bin(),
        "run",
        "--iface",
        "lb0,lb1",
        "--config-path",
        cfg.to_str().expect("utf-8 path"),
        "--api",
        api,
    ];
    args.extend_from_slice(extra);
    lab.exec("lb", &args)
}

/// Nothing of xlb's is left in the balancer's namespace.
fn assert_nothing_left(lab: &Lab, when: &str) {
    assert!(
        !xdp_on(lab, "lb0") && !xdp_on(lab, "lb1"),
        "{when}: XDP left attached"
    );
    assert!(!vip_on_lo(lab), "{when}: the VIP left on lo");
    assert_eq!(
        reserved_ports(lab),
        OPERATOR_PORTS,
        "{when}: reserved ports"
    );
    assert!(
        records(lab).is_empty(),
        "{when}: records left: {:?}",
        records(lab)
    );
}

#[test]
fn a_second_xlb_on_a_served_interface_is_refused_and_a_removed_program_is_noticed() {
    let mut lab = Lab::up(1);
    lab.start_xlb(&lab_config(), &[]);
    let r = lab.client(VIP, 5, 0);
    assert_eq!(r["http_failed"], 0, "{r}");

    let other = tempfile::tempdir().expect("tmp");
    let second = run_to_exit(&lab, other.path(), "127.0.0.1:11112", &[]);
    let err = String::from_utf8_lossy(&second.stderr).into_owned();
    assert!(!second.status.success(), "a second xlb started: {err}");
    assert!(
        err.contains("interface lb0 is already served by another xlb (pid "),
        "the refusal names the interface and the owner: {err}"
    );
    // The first is untouched.
    assert!(xdp_on(&lab, "lb0") && xdp_on(&lab, "lb1"));
    let r = lab.client(VIP, 20, 0);
    assert_eq!(
        r["http_failed"],
        0,
        "after the refused start: {r}\n{}",
        lab.log()
    );

    // Someone removes the program: logged once, counted.
    for mode in ["xdp", "xdpgeneric", "xdpdrv"] {
        let _ = lab.exec("lb", &["ip", "link", "set", "dev", "lb0", mode, "off"]);
    }
    assert!(!xdp_on(&lab, "lb0"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !lab.metrics().contains("xlb_xdp_programs_removed_total 1") {
        assert!(Instant::now() < deadline, "not counted:\n{}", lab.metrics());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let log = lab.log();
    assert_eq!(
        log.matches("XDP program was removed from lb0").count(),
        1,
        "logged once:\n{log}"
    );
    assert!(lab.metrics().contains("xlb_xdp_programs_removed_total 1"));
}

#[test]
fn a_killed_xlb_restarts_forwarding_within_a_second_and_no_exit_leaves_anything() {
    let mut lab = Lab::up(1);
    lab.ns("lb")
        .sysctl("net.ipv4.ip_local_reserved_ports", OPERATOR_PORTS)
        .expect("sysctl");
    let cfg = lab_config();
    lab.start_xlb(&cfg, &[]);
    assert_eq!(reserved_ports(&lab), WITH_XLB_PORTS, "merged, not replaced");
    assert_eq!(records(&lab).len(), 1, "one record while running");
    let r = lab.client(VIP, 5, 0);
    assert_eq!(r["http_failed"], 0, "{r}");

    // SIGKILL: the program stays attached and the record stays.
    lab.stop_xlb(Signal::Kill);
    assert!(xdp_on(&lab, "lb0"));
    assert_eq!(records(&lab).len(), 1);
    let restart = Instant::now();
    lab.start_xlb(&cfg, &[]);
    let api_up = restart.elapsed();
    let deadline = restart + Duration::from_secs(10);
    while !vip_answers(&lab) {
        assert!(
            Instant::now() < deadline,
            "no VIP traffic 10 s after the restart\n{}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let flowing = restart.elapsed();
    println!(
        "kill -9 then restart: VIP traffic flows again {:.3} s after the restart command \
         (API answering after {:.3} s; target 1 s)",
        flowing.as_secs_f64(),
        api_up.as_secs_f64()
    );
    assert!(
        flowing < Duration::from_secs(5),
        "VIP traffic took {flowing:?} after the restart"
    );
    assert_eq!(records(&lab).len(), 1, "the dead xlb's record was swept");
    assert_eq!(reserved_ports(&lab), WITH_XLB_PORTS);
    lab.stop_xlb(Signal::Term);
    assert_nothing_left(&lab, "SIGTERM after a restart");

    // A crashed xlb's VIP is its own to remove, even when the restarted
    // one no longer serves it.
    lab.start_xlb(&cfg, &[]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !vip_on_lo(&lab) {
        assert!(Instant::now() < deadline, "VIP never added to lo");
        std::thread::sleep(Duration::from_millis(50));
    }
    lab.stop_xlb(Signal::Kill);
    lab.start_xlb(crate::EMPTY, &[]);
    assert!(!vip_on_lo(&lab), "the dead xlb's VIP was removed at start");
    lab.stop_xlb(Signal::Int);
    assert_nothing_left(&lab, "SIGINT");
}

#[test]
fn strict_config_refusing_at_start_leaves_nothing_attached() {
    let lab = Lab::up(1);
    lab.ns("lb")
        .sysctl("net.ipv4.ip_local_reserved_ports", OPERATOR_PORTS)
        .expect("sysctl");
    let bad = r#"{"lbAttr":[{"serviceArguments":{"externalIP":"10.10.100.1","port":80,"protocol":"tcp","sel":0,"mode":2},"endpoints":[{"endpointIP":"not-an-ip","targetPort":8080,"weight":1}]}]}"#;
    std::fs::write(lab.cfg.join("lbconfig.txt"), bad).expect("write");
    let out = run_to_exit(&lab, &lab.cfg, "127.0.0.1:11111", &["--strict-config"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "started on a rejected entry: {err}");
    assert!(err.contains("config entries rejected"), "{err}");
    assert_nothing_left(&lab, "--strict-config refusal");
}
