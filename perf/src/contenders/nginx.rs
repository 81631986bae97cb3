//! nginx in the TCP suite: the stream (L4) proxy contender on the VIP, and
//! the backends' HTTP server (one process listening on every backend
//! address, a fixed tiny response), both one worker.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::procs::{self, Proc};
use crate::topo::{BACKENDS, BE_PORT, VIP, VIP_TCP_PORT};

fn nginx_common(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "worker_processes 1;\ndaemon off;\nmaster_process on;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nworker_rlimit_nofile 20000;\nevents {{ worker_connections 8192; multi_accept on; }}\n"
    )
}

/// The backends' nginx: a tiny fixed response on every backend address.
pub fn backend_conf(dir: &Path) -> String {
    let d = dir.display();
    let listens: String = BACKENDS
        .iter()
        .map(|b| format!("    listen {b}:{BE_PORT} reuseport backlog=4096;\n"))
        .collect();
    format!(
        "{}http {{\n  access_log off;\n  client_body_temp_path {d}/cb;\n  proxy_temp_path {d}/pt;\n  fastcgi_temp_path {d}/ft;\n  uwsgi_temp_path {d}/ut;\n  scgi_temp_path {d}/st;\n  keepalive_requests 100000000;\n  keepalive_timeout 60s;\n  server {{\n{listens}    location / {{ return 200 \"xlb-bench\\n\"; }}\n  }}\n}}\n",
        nginx_common(dir)
    )
}

/// nginx as the stream (L4) proxy on the VIP.
pub fn stream_conf(dir: &Path) -> String {
    let servers: String = BACKENDS
        .iter()
        .map(|b| format!("    server {b}:{BE_PORT};\n"))
        .collect();
    format!(
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n{}stream {{\n  upstream be {{\n{servers}  }}\n  server {{\n    listen {VIP}:{VIP_TCP_PORT} reuseport backlog=4096;\n    proxy_pass be;\n    proxy_connect_timeout 2s;\n  }}\n}}\n",
        nginx_common(dir)
    )
}

/// Start the backends' nginx in `ns`, pinned to `cpu` at `nice`, its files
/// in `dir`; returns once the first backend address accepts connections.
pub(crate) fn start_backends(ns: &str, cpu: usize, nice: Option<i32>, dir: &Path) -> Result<Proc> {
    std::fs::create_dir_all(dir)?;
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, backend_conf(dir))?;
    let conf_s = conf.to_string_lossy().into_owned();
    let dir_s = dir.to_string_lossy().into_owned();
    let mut backends = procs::start(
        "backend nginx",
        ns,
        &cpu.to_string(),
        nice,
        &["nginx", "-p", &dir_s, "-c", &conf_s],
        &dir.join("stderr.log"),
    )?;
    procs::wait_ready(&mut backends, Duration::from_secs(10), || {
        procs::tcp_open(ns, SocketAddr::from((BACKENDS[0], BE_PORT)))
    })?;
    Ok(backends)
}

/// Start the stream proxy in `ns` (the VIP must be a local address there),
/// pinned to `cpu` at `nice`, its files in `dir`.
pub(crate) fn start_stream(ns: &str, cpu: usize, nice: Option<i32>, dir: &Path) -> Result<Proc> {
    let f = dir.join("nginx.conf");
    std::fs::write(&f, stream_conf(dir))?;
    procs::start(
        "nginx stream",
        ns,
        &cpu.to_string(),
        nice,
        &[
            "nginx",
            "-p",
            &dir.to_string_lossy(),
            "-c",
            &f.to_string_lossy(),
        ],
        &dir.join("stderr.log"),
    )
}
