//! A small lab for pipeline tests: fixed ports, next hops and addresses, a
//! two-worker pipeline, and helpers to build frames with the wire builder.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use xlb_dataplane::conntrack::{Conntrack, ConntrackConfig, FlowHasher};
use xlb_dataplane::net::{Cidr, MacAddr};
use xlb_dataplane::pipeline::{Pipeline, Processor};
use xlb_dataplane::tables::{
    EndpointSpec, EndpointState, L4Proto, NatMode, NextHop, PortSpec, Selection, ServiceKey,
    ServiceSpec, Tables, TablesSpec,
};
use xlb_dataplane::wire::build::Builder;
use xlb_dataplane::{Frame, PortId, Verdict};

pub const CLIENT_PORT: PortId = 0;
pub const BACKEND_PORT: PortId = 1;
pub const LB_MAC0: MacAddr = MacAddr([0x02, 0x1b, 0, 0, 0, 0x01]);
pub const LB_MAC1: MacAddr = MacAddr([0x02, 0x1b, 0, 0, 1, 0x01]);
/// The client's last hop as seen by xlb.
pub const CLIENT_MAC: MacAddr = MacAddr([0x02, 0xcc, 0, 0, 0, 0x02]);

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

pub fn sa(s: &str) -> SocketAddr {
    s.parse().expect("test socket address")
}

/// Backend MAC: 02:bb:00:00:00:<last octet of its address>.
pub fn be_mac(addr: &str) -> MacAddr {
    let last = match ip(addr) {
        IpAddr::V4(a) => a.octets()[3],
        IpAddr::V6(a) => a.octets()[15],
    };
    MacAddr([0x02, 0xbb, 0, 0, 0, last])
}

pub fn ep(addr: &str, port: u16) -> EndpointSpec {
    EndpointSpec {
        addr: ip(addr),
        port,
        weight: 1,
        state: EndpointState::Active,
    }
}

pub fn svc(
    vip: &str,
    proto: L4Proto,
    ports: (u16, u16),
    sel: Selection,
    mode: NatMode,
    endpoints: Vec<EndpointSpec>,
) -> ServiceSpec {
    ServiceSpec {
        key: ServiceKey {
            vip: ip(vip),
            proto,
            port_min: ports.0,
            port_max: ports.1,
            block: 0,
        },
        sel,
        mode,
        allowed_sources: Vec::new(),
        endpoints,
        inactive_timeout_s: if proto == L4Proto::Tcp { 240 } else { 20 },
        dsr_ipip: false,
        name: String::new(),
        snat: None,
    }
}

pub const BACKENDS_V4: [&str; 3] = ["10.1.0.11", "10.1.0.12", "10.1.0.13"];
pub const BACKENDS_V6: [&str; 2] = ["2001:db8:1::11", "2001:db8:1::12"];

/// Ports, next hops and SNAT addresses of the test lab, with `services`.
pub fn spec(services: Vec<ServiceSpec>) -> TablesSpec {
    let mut next_hops = Vec::new();
    for b in BACKENDS_V4.iter().chain(BACKENDS_V6.iter()) {
        next_hops.push((
            ip(b),
            NextHop {
                mac: be_mac(b),
                port: BACKEND_PORT,
            },
        ));
    }
    TablesSpec {
        services,
        next_hops,
        ports: vec![
            PortSpec {
                id: CLIENT_PORT,
                name: "client0".into(),
                mac: LB_MAC0,
                addrs: vec![ip("10.0.0.1"), ip("2001:db8::1")],
            },
            PortSpec {
                id: BACKEND_PORT,
                name: "backend0".into(),
                mac: LB_MAC1,
                addrs: vec![ip("10.1.0.1"), ip("2001:db8:1::1")],
            },
        ],
        snat_addrs: vec![ip("10.9.0.1"), ip("2001:db8:9::1")],
        nat_ports: (0, 0),
        // A small prime keeps test tables quick to build; production uses 65537.
        maglev_size: 4093,
    }
}

pub fn allowed(mut s: ServiceSpec, prefixes: &[&str]) -> ServiceSpec {
    s.allowed_sources = prefixes
        .iter()
        .map(|p| p.parse::<Cidr>().expect("prefix"))
        .collect();
    s
}

/// A two-worker pipeline over one table.
pub struct Lab {
    pub tables: Tables,
    pub ct: Arc<Conntrack>,
    pub workers: Vec<Pipeline>,
    pub now: u64,
}

impl Lab {
    pub fn new(spec: TablesSpec) -> Lab {
        Lab::with_buckets(spec, 1 << 10)
    }

    pub fn with_buckets(spec: TablesSpec, buckets: usize) -> Lab {
        let tables = Tables::build(spec, &Tables::empty()).expect("valid lab tables");
        // A fixed hash key: two labs given the same frames place (and
        // evict) flows alike.
        let ct = Arc::new(Conntrack::with_hasher(
            2,
            ConntrackConfig {
                buckets_per_shard: buckets,
            },
            FlowHasher::with_seed(0x5eed),
        ));
        let workers = (0..2).map(|w| Pipeline::new(w, 2, &ct)).collect();
        Lab {
            tables,
            ct,
            workers,
            now: 1_000_000_000,
        }
    }

    /// Replace the tables (as control would publish a new snapshot).
    pub fn update(&mut self, spec: TablesSpec) {
        self.tables = Tables::build(spec, &self.tables).expect("valid update");
    }

    /// Run one frame through `worker`, received on `rx`.
    pub fn run(&mut self, worker: usize, rx: PortId, frame: &[u8]) -> (Verdict, Vec<u8>) {
        let mut buf = vec![0u8; 2048];
        buf[..frame.len()].copy_from_slice(frame);
        let mut frames = [Frame::new(&mut buf, frame.len(), rx)];
        let mut verdicts = [Verdict::Pass];
        self.workers[worker].process_batch(&self.tables, self.now, &mut frames, &mut verdicts);
        let len = frames[0].len;
        (verdicts[0], buf[..len].to_vec())
    }
}

/// How often an idle worker calls [`Processor::idle`]: the AF_XDP worker
/// loop does between waits of `IDLE_POLL_MS` (50 ms) for frames.
pub const IDLE_TICK_NS: u64 = 50_000_000;

impl Lab {
    /// Move the clock forward to `to` with no traffic, calling every worker's
    /// [`Processor::idle`] each [`IDLE_TICK_NS`] on the way, as idle worker
    /// loops do: flows expire through the pipeline's own paced sweep.
    pub fn idle_until(&mut self, to: u64) {
        assert!(to >= self.now, "the lab's clock is monotonic");
        while self.now < to {
            self.now = (self.now + IDLE_TICK_NS).min(to);
            for w in &mut self.workers {
                w.idle(self.now);
            }
        }
    }
}

impl Lab {
    /// Run `frames` through `worker` as one batch, all received on `rx`.
    pub fn run_batch(
        &mut self,
        worker: usize,
        rx: PortId,
        frames: &[Vec<u8>],
    ) -> Vec<(Verdict, Vec<u8>)> {
        let mut bufs: Vec<Vec<u8>> = frames
            .iter()
            .map(|f| {
                let mut b = vec![0u8; 2048];
                b[..f.len()].copy_from_slice(f);
                b
            })
            .collect();
        let mut batch: Vec<Frame<'_>> = bufs
            .iter_mut()
            .zip(frames)
            .map(|(b, f)| Frame::new(b, f.len(), rx))
            .collect();
        let mut verdicts = vec![Verdict::Pass; frames.len()];
        self.workers[worker].process_batch(&self.tables, self.now, &mut batch, &mut verdicts);
        let lens: Vec<usize> = batch.iter().map(|f| f.len).collect();
        drop(batch);
        verdicts
            .into_iter()
            .zip(bufs.iter().zip(lens))
            .map(|(v, (b, len))| (v, b[..len].to_vec()))
            .collect()
    }
}

/// A frame from the client side (client MAC → xlb's port 0 MAC).
pub fn from_client(b: Builder<'_>) -> Vec<u8> {
    b.macs(CLIENT_MAC, LB_MAC0)
        .to_vec()
        .expect("buildable frame")
}

/// A frame from a backend (its MAC → xlb's port 1 MAC).
pub fn from_backend(b: Builder<'_>) -> Vec<u8> {
    let src = b.src.to_string();
    b.macs(be_mac(&src), LB_MAC1)
        .to_vec()
        .expect("buildable frame")
}

/// What xlb should send to backend `addr`.
pub fn to_backend(b: Builder<'_>, addr: &str) -> Vec<u8> {
    b.macs(LB_MAC1, be_mac(addr))
        .to_vec()
        .expect("buildable frame")
}

/// What xlb should send to the client.
pub fn to_client(b: Builder<'_>) -> Vec<u8> {
    b.macs(LB_MAC0, CLIENT_MAC)
        .to_vec()
        .expect("buildable frame")
}

/// Destination address and port of a built frame (to learn which backend was chosen).
pub fn dst_of(frame: &[u8]) -> (IpAddr, u16) {
    let m = xlb_dataplane::wire::parse(frame).expect("parsable");
    (m.dst.into(), m.dport)
}

/// Source address and port of a built frame.
pub fn src_of(frame: &[u8]) -> (IpAddr, u16) {
    let m = xlb_dataplane::wire::parse(frame).expect("parsable");
    (m.src.into(), m.sport)
}
