//! xlb as a contender: the real daemon (`xlb run`) that the TCP and flows
//! suites start in the balancer namespace with a loxilb-format
//! `lbconfig.txt`, read through its API and metrics; and the service its
//! pipeline serves when the UDP suite runs it in-process
//! ([`super::afxdp`]).

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use xlb_dataplane::tables::{Selection, ServiceSpec};
use xlb_testkit::fixtures::Service;
use xlb_testkit::netns;

use crate::procs::{self, Proc};
use crate::topo::{
    BACKENDS, BE_PORT, FLOOD_BACKENDS, FLOOD_PORT, FLOOD_TARGET_PORT, VIP, VIP_PORT, VIP_TCP_PORT,
};

/// The UDP suite's service as xlb's tables hold it: VIP:7, Maglev over
/// the three backends (`sel` hash), DNAT.
pub fn udp_service() -> ServiceSpec {
    Service::udp(VIP, VIP_PORT)
        .sel(Selection::Hash)
        .eps(BACKENDS, VIP_PORT)
        .timeout(60)
        .name("bench-udp")
        .build()
}

/// loxilb-format `lbconfig.txt` for one TCP service on the VIP.
pub fn tcp_lbconfig(mode: u8) -> String {
    let eps: Vec<String> = BACKENDS
        .iter()
        .map(|b| format!("{{ \"endpointIP\": \"{b}\", \"targetPort\": {BE_PORT}, \"weight\": 1 }}"))
        .collect();
    format!(
        "{{ \"lbAttr\": [ {{ \"serviceArguments\": {{ \"externalIP\": \"{VIP}\", \"port\": {VIP_TCP_PORT}, \"protocol\": \"tcp\", \"sel\": 0, \"mode\": {mode}, \"inactiveTimeOut\": 240, \"name\": \"bench-tcp\" }}, \"endpoints\": [ {} ] }} ] }}\n",
        eps.join(", ")
    )
}

/// loxilb-format `lbconfig.txt` for the flows suite: the UDP service
/// (Maglev, DNAT) and the flooded TCP service (round robin, DNAT).
pub fn flows_lbconfig() -> String {
    let eps = |addrs: &[Ipv4Addr], port: u16| -> String {
        addrs
            .iter()
            .map(|b| {
                format!("{{ \"endpointIP\": \"{b}\", \"targetPort\": {port}, \"weight\": 1 }}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "{{ \"lbAttr\": [\n {{ \"serviceArguments\": {{ \"externalIP\": \"{VIP}\", \"port\": {VIP_PORT}, \"protocol\": \"udp\", \"sel\": 1, \"mode\": 0, \"inactiveTimeOut\": 240, \"name\": \"bench-udp\" }}, \"endpoints\": [ {} ] }},\n {{ \"serviceArguments\": {{ \"externalIP\": \"{VIP}\", \"port\": {FLOOD_PORT}, \"protocol\": \"tcp\", \"sel\": 0, \"mode\": 0, \"inactiveTimeOut\": 240, \"name\": \"bench-flood\" }}, \"endpoints\": [ {} ] }}\n] }}\n",
        eps(&BACKENDS, VIP_PORT),
        eps(&FLOOD_BACKENDS, FLOOD_TARGET_PORT)
    )
}

/// Start `xlb run` in `ns` on `ifaces` with `lbconfig` (loxilb JSON) in a
/// fresh config directory under `dir`, the whole process pinned to `cpu`
/// (its worker with `--cores`), plus `extra` arguments; wait for its API.
#[allow(clippy::too_many_arguments)] // each is a distinct knob of `xlb run`
pub(crate) fn start(
    bin: &Path,
    ns: &str,
    ifaces: &[&str],
    lbconfig: &str,
    cpu: usize,
    nice: Option<i32>,
    extra: &[&str],
    dir: &Path,
) -> Result<Proc> {
    if !bin.exists() {
        bail!(
            "{} not found: build it (cargo build --release -p xlb-control) or pass --xlb-bin",
            bin.display()
        );
    }
    let cfg = dir.join("xlb-config");
    std::fs::create_dir_all(&cfg)?;
    std::fs::write(cfg.join("lbconfig.txt"), lbconfig)?;
    let (bin_s, cfg_s, cpu_s, ifs) = (
        bin.to_string_lossy().into_owned(),
        cfg.to_string_lossy().into_owned(),
        cpu.to_string(),
        ifaces.join(","),
    );
    let mut args = vec![
        bin_s.as_str(),
        "run",
        "--iface",
        &ifs,
        "--config-path",
        &cfg_s,
        "--api",
        "127.0.0.1:11111",
        "--cores",
        &cpu_s,
        "--log-level",
        "error",
    ];
    args.extend_from_slice(extra);
    let mut p = procs::start("xlb", ns, &cpu_s, nice, &args, &dir.join("xlb.log"))?;
    procs::wait_ready(&mut p, Duration::from_secs(30), || {
        api(ns, "/config/loadbalancer/all").is_some_and(|b| b.contains("bench"))
    })?;
    Ok(p)
}

/// GET an xlb API path from inside `ns`; the body if it answered 200.
pub(crate) fn api(ns: &str, path: &str) -> Option<String> {
    let url = format!("http://127.0.0.1:11111/netlox/v1{path}");
    netns::exec(ns, &["curl", "-sf", "-m", "2", &url]).ok()
}

/// A sample's value from xlb's Prometheus metrics (summed over label sets).
pub(crate) fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ') | Some(b'{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_over_labels_and_names_match_exactly() {
        let t = "# HELP x\nxlb_conntrack_entries{worker=\"0\"} 5\nxlb_conntrack_entries{worker=\"1\"} 7\nxlb_conntrack_entries_max 99\n";
        assert_eq!(metric(t, "xlb_conntrack_entries"), 12);
        assert_eq!(metric(t, "xlb_conntrack_entries_max"), 99);
        assert_eq!(metric(t, "nope"), 0);
    }

    #[test]
    fn the_lbconfig_has_a_udp_and_a_flooded_tcp_service() {
        let v: serde_json::Value = serde_json::from_str(&flows_lbconfig()).expect("JSON");
        let a = v["lbAttr"].as_array().expect("rules");
        assert_eq!(a.len(), 2);
        assert_eq!(a[0]["serviceArguments"]["protocol"], "udp");
        assert_eq!(a[1]["serviceArguments"]["protocol"], "tcp");
        assert_eq!(a[1]["endpoints"][2]["endpointIP"], "10.98.1.23");
    }
}
