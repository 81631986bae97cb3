//! The AF_XDP contenders of the UDP suite, run in-process: xlb's `Pipeline`
//! or the minimal forwarder ([`super::fwd`]) as the `Processor` under
//! xlb-io's `Runtime` on the balancer's two veths, with the UDP service of
//! [`super::xlb::udp_service`] and next hops from the kernel. A thread of
//! their own enters the balancer namespace, starts the Runtime and holds it
//! until told to stop, since start, sync and stop must happen in one
//! namespace.

use std::net::IpAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use xlb_dataplane::conntrack::{Conntrack, ConntrackConfig};
use xlb_dataplane::pipeline::Pipeline;
use xlb_dataplane::tables::{Tables, TablesHandle, TablesSpec};
use xlb_io::kernel::napi::{DEFER_HARD_IRQS, GRO_FLUSH_TIMEOUT_NS};
use xlb_io::kernel::netinfo;
use xlb_io::{Runtime, RuntimeConfig, XdpMode};
use xlb_testkit::netns;

use super::fwd::MinFwd;
use super::xlb::udp_service;
use crate::topo::{Topo, BACKENDS};

/// What the contender's worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processing {
    /// xlb's `Pipeline` (DNAT, Maglev over three backends, conntrack).
    Pipeline,
    /// The minimal forwarder.
    MinFwd,
}

impl Processing {
    /// Short name (thread names, messages).
    pub fn short(self) -> &'static str {
        match self {
            Processing::Pipeline => "xlb",
            Processing::MinFwd => "fwd",
        }
    }
}

/// A running AF_XDP contender: a thread in the balancer namespace holds the
/// Runtime until told to stop (start, sync and stop in one namespace).
pub(crate) struct AfXdp {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<Result<String>>,
    /// Where the workers ran, for the caller's sampler to fill in.
    pub(crate) worker_cpus: Arc<Mutex<Vec<i32>>>,
}

impl AfXdp {
    /// Stop the Runtime and join its thread; returns the workers' counters
    /// (for the log).
    pub(crate) fn stop(self) -> Result<String> {
        let _ = self.stop.send(());
        self.thread
            .join()
            .map_err(|_| anyhow!("contender thread panicked"))?
    }
}

/// Start `what` on the balancer's two veths of `t`: one worker pinned to
/// `cpu`, `batch` frames per RX batch, `frames` UMEM frames, busy polling if
/// `busy`. Returns once the tables carry the backends' next hops.
pub(crate) fn start(
    t: &Topo,
    what: Processing,
    cpu: usize,
    batch: usize,
    frames: u32,
    busy: bool,
) -> Result<AfXdp> {
    let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let (lb, l0, l1) = (t.lb.clone(), t.l0.clone(), t.l1.clone());
    let worker_cpus = Arc::new(Mutex::new(Vec::new()));
    let thread = std::thread::Builder::new()
        .name(format!("bench-{}", what.short()))
        .spawn(move || -> Result<String> {
            let started = (|| -> Result<(Runtime, TablesHandle)> {
                netns::enter(&lb)?;
                let handle = TablesHandle::new();
                handle.publish(Tables::build(
                    TablesSpec {
                        services: vec![udp_service()],
                        ..Default::default()
                    },
                    &handle.current(),
                )?);
                let cfg = RuntimeConfig {
                    ifaces: vec![l0.clone(), l1.clone()],
                    queues: Some(1),
                    cores: Some(vec![cpu]),
                    xdp_mode: XdpMode::Native,
                    busy_poll: busy,
                    batch,
                    frame_count: frames,
                };
                let ct = Arc::new(Conntrack::new(1, ConntrackConfig::default()));
                let rt = Runtime::start(cfg, handle.clone(), |w| match what {
                    Processing::MinFwd => Box::new(MinFwd::new(&BACKENDS)),
                    Processing::Pipeline => Box::new(Pipeline::new(w, 1, &ct)),
                })?;
                let ports = rt.port_specs();
                let dsts: Vec<IpAddr> = BACKENDS.iter().map(|b| IpAddr::V4(*b)).collect();
                let hops = netinfo::next_hops(&dsts, &ports, Duration::from_secs(3))?;
                if hops.len() != BACKENDS.len() {
                    bail!(
                        "only {} of {} backend next hops resolved",
                        hops.len(),
                        BACKENDS.len()
                    );
                }
                let tables = Tables::build(
                    TablesSpec {
                        services: vec![udp_service()],
                        next_hops: hops,
                        ports,
                        ..Default::default()
                    },
                    &handle.current(),
                )?;
                rt.publish(&handle, tables)?;
                Ok((rt, handle))
            })();
            let (rt, _handle) = match started {
                Ok(v) => {
                    let _ = ready_tx.send(Ok(()));
                    v
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    let _ = ready_tx.send(Err(e));
                    return Err(anyhow!(msg));
                }
            };
            // Bounded: the harness always sends stop; 15 minutes is the backstop.
            let _ = stop_rx.recv_timeout(Duration::from_secs(900));
            let st = rt.stats();
            rt.stop()?;
            Ok(format!("{:?}", st.workers))
        })
        .context("spawning the contender thread")?;
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| anyhow!("{} did not start in 30 s", what.short()))??;
    Ok(AfXdp {
        stop: stop_tx,
        thread,
        worker_cpus,
    })
}

/// Preferred busy polling's device settings on the balancer's veths (see
/// `xlb_io::kernel::napi`; the contender thread cannot write them itself
/// because /sys shows the host's namespace). veth's sockets get no NAPI id,
/// so busy polling does not engage; the deferral timer then runs the
/// ingress NAPI on the core where it was armed, the balancer's (see
/// [`Placement::Owned`](crate::topo::Placement::Owned)). Off again for the
/// kernel contender.
pub(crate) fn napi_defer(t: &Topo, on: bool) -> Result<()> {
    let (defer, timeout) = if on {
        (DEFER_HARD_IRQS, GRO_FLUSH_TIMEOUT_NS)
    } else {
        (0, 0)
    };
    for iface in [&t.l0, &t.l1] {
        let d = format!("/sys/class/net/{iface}");
        netns::exec(
            &t.lb,
            &[
                "sh",
                "-c",
                &format!("echo {defer} > {d}/napi_defer_hard_irqs && echo {timeout} > {d}/gro_flush_timeout"),
            ],
        )?;
    }
    Ok(())
}

/// CPUs of this process's threads named `xlb-worker-*` right now.
pub(crate) fn worker_cpus() -> Vec<i32> {
    let mut v = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return v;
    };
    for e in dir.flatten() {
        let p = e.path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        if !comm.starts_with("xlb-worker") {
            continue;
        }
        let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
        // Field 39 (processor), counted after the ")" that ends the name.
        if let Some(rest) = stat.rsplit_once(')').map(|x| x.1) {
            if let Some(cpu) = rest.split_whitespace().nth(36).and_then(|c| c.parse().ok()) {
                v.push(cpu);
            }
        }
    }
    v
}
