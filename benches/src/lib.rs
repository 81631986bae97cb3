//! Shared helpers for xlb's benchmarks: a benchmark table set, frame
//! factories and a batch runner, used by the criterion benches and by
//! `examples/profile.rs` (for callgrind). The tables and frames are the
//! test kit's two-port lab (its ports, next hops and client frames) with a
//! rule of the benchmark's own.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use xlb_dataplane::conntrack::{Conntrack, ConntrackConfig, FlowKey};
use xlb_dataplane::net::Ip16;
use xlb_dataplane::pipeline::{Pipeline, Processor};
use xlb_dataplane::tables::{NatMode, Selection, Tables, TablesSpec};
use xlb_dataplane::wire::build::Builder;
use xlb_dataplane::{Frame, Verdict};
use xlb_testkit::fixtures::{two_port, Service};

pub const BATCH: usize = 64;
pub const BUF: usize = 2048;
pub const VIP: [u8; 4] = [192, 0, 2, 10];

/// The benchmark's tables: the two-port lab's ports, and one TCP rule on
/// [`VIP`]:80 (Maglev, full NAT) over 16 backends with next hops, a pool of
/// 64 source-NAT addresses, every port from 1024 for source NAT, and the
/// production Maglev table size.
pub fn tables() -> Tables {
    let backends: Vec<Ipv4Addr> = (1..=16).map(|i| Ipv4Addr::new(10, 1, 0, i)).collect();
    let service = Service::tcp(Ipv4Addr::from(VIP), 80)
        .sel(Selection::Hash)
        .mode(NatMode::FullNat)
        .timeout(3600)
        .name("bench")
        .eps(backends.iter().copied(), 8080);
    let spec = TablesSpec {
        services: vec![service.build()],
        next_hops: two_port::next_hops(backends),
        ports: two_port::ports(),
        snat_addrs: (0..64)
            .map(|i| IpAddr::V4(Ipv4Addr::new(10, 9, 0, i)))
            .collect(),
        nat_ports: (1024, 65535),
        maglev_size: 65537,
    };
    Tables::build(spec, &Tables::empty()).expect("bench tables")
}

/// Client i: address 10.(i>>16).(i>>8).(i) port 1024 + i % 50000.
pub fn client(i: u32) -> SocketAddr {
    let a = 0x0a00_0000 | (i & 0x00ff_ffff);
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), 1024 + (i % 50000) as u16)
}

/// Client i's TCP segment to [`VIP`]:80 with `flags` and 6 bytes of data,
/// as it reaches the balancer's client port.
pub fn frame(i: u32, flags: u8) -> Vec<u8> {
    two_port::from_client(
        Builder::tcp(
            client(i),
            SocketAddr::new(IpAddr::V4(VIP.into()), 80),
            flags,
        )
        .payload(&[0u8; 6]),
    )
}

/// A worker's buffers: 64 frames of up to 2 KiB.
#[allow(missing_debug_implementations)]
pub struct Batch {
    bufs: Vec<u8>,
    /// Verdicts of the last run.
    pub verdicts: [Verdict; BATCH],
}

impl Batch {
    /// 64 empty buffers.
    pub fn new() -> Batch {
        Batch {
            bufs: vec![0u8; BATCH * BUF],
            verdicts: [Verdict::Pass; BATCH],
        }
    }

    /// Copy `src` frames in and run them (or only copy, for the reference).
    pub fn run(&mut self, p: Option<&mut Pipeline>, t: &Tables, now: u64, src: &[Vec<u8>]) {
        for (b, f) in self.bufs.chunks_mut(BUF).zip(src) {
            b[..f.len()].copy_from_slice(f);
        }
        let mut it = self.bufs.chunks_mut(BUF).zip(src);
        let mut frames: [Frame<'_>; BATCH] = std::array::from_fn(|_| {
            let (b, f) = it.next().expect("64 buffers");
            Frame::new(b, f.len(), two_port::CLIENT_PORT)
        });
        if let Some(p) = p {
            p.process_batch(t, now, &mut frames, &mut self.verdicts);
        }
        black_box(&frames);
    }
}

/// Conntrack buckets for `flows` flows: about a quarter of the slots in use
/// (each flow takes two entries, a bucket has 8). The table holds flows up
/// to 95 % of its slots without evicting; the benchmarks keep the quarter
/// that their earlier figures (one bucket per key, which overflowed from
/// half full) were measured at, so that runs compare.
pub fn buckets_for(flows: u32) -> usize {
    (flows as usize * 3 / 4).next_power_of_two().max(1024)
}

/// A fresh one-shard flow table of `buckets` buckets (allocated and
/// initialised here, outside any timing).
pub fn flow_table(buckets: usize) -> Arc<Conntrack> {
    Arc::new(Conntrack::new(
        1,
        ConntrackConfig {
            buckets_per_shard: buckets,
        },
    ))
}

/// One worker's pipeline over a fresh [`flow_table`].
pub fn fresh_pipeline(buckets: usize) -> Pipeline {
    Pipeline::new(0, 1, &flow_table(buckets))
}

/// A pipeline with `n` established flows, and 1024 batches of packets drawn
/// from them in a scattered order (only from flows the table still holds:
/// a bucket that overflowed during setup evicted a few).
pub fn established(n: u32, buckets: usize) -> (Pipeline, Tables, Vec<Vec<Vec<u8>>>) {
    let t = tables();
    let ct = flow_table(buckets);
    let mut p = Pipeline::new(0, 1, &ct);
    let mut b = Batch::new();
    let syns: Vec<u32> = (0..n).collect();
    for chunk in syns.chunks(BATCH) {
        let frames: Vec<Vec<u8>> = chunk.iter().map(|&i| frame(i, 0x02)).collect();
        if frames.len() == BATCH {
            b.run(Some(&mut p), &t, 1, &frames);
            assert!(
                b.verdicts
                    .iter()
                    .all(|v| *v == Verdict::Tx(two_port::BACKEND_PORT)),
                "{:?}",
                b.verdicts[0]
            );
        } else {
            for f in frames {
                b.run(Some(&mut p), &t, 1, &vec![f; BATCH]);
            }
        }
    }
    assert!(
        ct.used() >= 2 * u64::from(n) * 99 / 100,
        "flows were tracked: {}",
        ct.used()
    );
    let tracked: Vec<u32> = (0..n)
        .filter(|&i| {
            let c = client(i);
            let key = FlowKey {
                src: Ip16::from(c.ip()),
                dst: Ip16::v4(VIP),
                sport: c.port(),
                dport: 80,
                proto: 6,
            };
            ct.find_in(0, &key, ct.hash(&key)).is_some()
        })
        .collect();
    assert!(!tracked.is_empty(), "no flow survived the setup");
    let mut x = 0x9e37_79b9u32;
    let batches = (0..1024)
        .map(|_| {
            (0..BATCH)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    frame(tracked[x as usize % tracked.len()], 0x10)
                })
                .collect()
        })
        .collect();
    (p, t, batches)
}

/// Nanoseconds this thread has spent on a CPU (Linux: the first field of
/// `/proc/thread-self/schedstat`; elsewhere, or if unreadable, 0). On a busy
/// machine the wall clock also counts time the thread waited for a core;
/// this does not, though the cache another task disturbed still costs.
pub fn on_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Pin the calling thread to the machine's last CPU, as xlb pins each
/// worker to its core, and return that CPU's index (`None` if the thread
/// could not be pinned). An unpinned benchmark thread that the scheduler
/// moves between cores starts over with cold caches each time: on these
/// 2-vCPU machines that made the 10k-flow figure vary by up to 1.6×
/// between runs, where pinned runs agreed within ~15 %.
pub fn pin_to_last_core() -> Option<usize> {
    let last = core_affinity::get_core_ids()?
        .into_iter()
        .max_by_key(|c| c.id)?;
    core_affinity::set_for_current(last).then_some(last.id)
}

/// The processor the figures were measured on, as `/proc/cpuinfo` names it
/// (model name, family and model numbers: a VM's model name alone is often
/// just the vendor's brand), or "unknown CPU". The same code runs ~1.7×
/// faster per packet on some hosts of this project's machine kind than on
/// others, so every printed figure carries this.
pub fn cpu_id() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().map(str::trim) == Some(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    match (field("model name"), field("cpu family"), field("model")) {
        (Some(n), Some(f), Some(m)) => format!("{n} (family {f}, model {m})"),
        (Some(n), _, _) => n,
        _ => "unknown CPU".to_string(),
    }
}

/// `batches` batches of SYNs from clients `first..`, each a client never
/// seen by a table that has not met these batches before.
pub fn syn_batches(first: u32, batches: usize) -> Vec<Vec<Vec<u8>>> {
    (0..batches)
        .map(|b| {
            (0..BATCH)
                .map(|k| frame(first + (b * BATCH + k) as u32, 0x02))
                .collect()
        })
        .collect()
}

impl Default for Batch {
    fn default() -> Self {
        Batch::new()
    }
}
