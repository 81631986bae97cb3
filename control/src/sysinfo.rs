//! `GET /status/process`, `/status/device` and `/version` contents, read from
//! `/proc` and `/etc` (missing files give empty fields, never an error).

use std::time::Instant;

use serde_json::{json, Value};

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn proc_status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim_start_matches(':').trim().to_string())
        .unwrap_or_default()
}

/// This process, in loxilb's `ProcessInfoEntry` shape.
pub fn process(started: Instant) -> Value {
    let status = read("/proc/self/status");
    let cmd = read("/proc/self/cmdline").replace('\0', " ");
    json!({
        "command": cmd.trim(),
        "pid": std::process::id().to_string(),
        "residentSize": proc_status_field(&status, "VmRSS"),
        "status": proc_status_field(&status, "State"),
        "time": format!("{}s", started.elapsed().as_secs()),
        "virtMemory": proc_status_field(&status, "VmSize"),
    })
}

/// The machine, in loxilb's `DeviceInfoEntry` shape.
pub fn device() -> Value {
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_default();
    let uptime = read("/proc/uptime")
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<f64>().ok())
        .map(|s| format!("{}s", s as u64))
        .unwrap_or_default();
    json!({
        "OS": os,
        "architecture": std::env::consts::ARCH,
        "bootID": read("/proc/sys/kernel/random/boot_id"),
        "hostName": read("/proc/sys/kernel/hostname"),
        "kernel": read("/proc/sys/kernel/osrelease"),
        "machineID": read("/etc/machine-id"),
        "uptime": uptime,
    })
}

/// `buildInfo` of `GET /version`.
pub fn build_info() -> String {
    format!(
        "xlb {} ({} {})",
        crate::version::LONG,
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}
