//! HAProxy in the TCP suite: mode tcp, roundrobin over the backends, one
//! thread, bound to the VIP.

use std::path::Path;

use anyhow::Result;

use crate::procs::{self, Proc};
use crate::topo::{BACKENDS, BE_PORT, VIP, VIP_TCP_PORT};

/// HAProxy, mode tcp, roundrobin. `maxconn` set: its default does not fit
/// the file-descriptor limit of these machines (LAB-NOTES).
pub fn conf() -> String {
    let servers: String = BACKENDS
        .iter()
        .enumerate()
        .map(|(i, b)| format!("  server s{i} {b}:{BE_PORT}\n"))
        .collect();
    format!(
        "global\n  maxconn 8000\n  nbthread 1\n\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n\nfrontend vip\n  bind {VIP}:{VIP_TCP_PORT}\n  default_backend be\n\nbackend be\n  balance roundrobin\n{servers}"
    )
}

/// Start HAProxy in `ns` (the VIP must be a local address there), pinned to
/// `cpu` at `nice`, its files in `dir`.
pub(crate) fn start(ns: &str, cpu: usize, nice: Option<i32>, dir: &Path) -> Result<Proc> {
    let f = dir.join("haproxy.cfg");
    std::fs::write(&f, conf())?;
    procs::start(
        "haproxy",
        ns,
        &cpu.to_string(),
        nice,
        &["haproxy", "-db", "-f", &f.to_string_lossy()],
        &dir.join("haproxy.log"),
    )
}
