//! Rate measurement helper for `scripts/netns-reflect-bench.sh`.
//!
//! `reflect serve IFACE SECS [busy]`: run the runtime on IFACE with a UDP
//! reflector for VIP 10.99.1.100:7 and print per-second counters.
//! `reflect blast SECS`: send UDP to the VIP from 8 sockets as fast as the
//! kernel takes it and print offered vs. echoed packets per second.
//! Run each inside the namespace the script made; all traffic stays there.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use xlb_dataplane::drop::DropReason;
use xlb_dataplane::frame::{Frame, Verdict};
use xlb_dataplane::pipeline::Processor;
use xlb_dataplane::tables::{Tables, TablesHandle};
use xlb_io::{Runtime, RuntimeConfig, XdpMode};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 1, 100);
const PORT: u16 = 7;

struct Reflector;

impl Processor for Reflector {
    fn process_batch(&mut self, _: &Tables, _: u64, frames: &mut [Frame<'_>], v: &mut [Verdict]) {
        for (f, v) in frames.iter_mut().zip(v.iter_mut()) {
            let rx = f.rx_port;
            let p = f.data_mut();
            let ok = p.len() >= 42
                && p[12..14] == [8, 0]
                && p[14] == 0x45
                && p[23] == 17
                && p[30..34] == VIP.octets()
                && p[36..38] == PORT.to_be_bytes();
            if !ok {
                *v = Verdict::Drop(DropReason::NoService);
                continue;
            }
            for i in 0..6 {
                p.swap(i, 6 + i);
            }
            for i in 0..4 {
                p.swap(26 + i, 30 + i);
            }
            for i in 0..2 {
                p.swap(34 + i, 36 + i);
            }
            *v = Verdict::Tx(rx);
        }
    }
}

fn serve(iface: &str, secs: u64, busy: bool) {
    // Steering needs the VIP in the maps: one UDP service on VIP:7.
    let spec = xlb_dataplane::tables::TablesSpec {
        services: vec![xlb_dataplane::tables::ServiceSpec {
            key: xlb_dataplane::tables::ServiceKey {
                vip: VIP.into(),
                proto: xlb_dataplane::tables::L4Proto::Udp,
                port_min: PORT,
                port_max: PORT,
                block: 0,
            },
            sel: xlb_dataplane::tables::Selection::RoundRobin,
            mode: xlb_dataplane::tables::NatMode::Dnat,
            allowed_sources: vec![],
            endpoints: vec![xlb_dataplane::tables::EndpointSpec {
                addr: Ipv4Addr::new(10, 99, 0, 2).into(),
                port: 9,
                weight: 1,
                state: xlb_dataplane::tables::EndpointState::Active,
            }],
            inactive_timeout_s: 60,
            dsr_ipip: false,
            name: "bench".into(),
            snat: None,
        }],
        ..Default::default()
    };
    let h = TablesHandle::new();
    h.publish(Tables::build(spec, &h.current()).expect("valid spec"));
    let cfg = RuntimeConfig {
        ifaces: vec![iface.to_string()],
        xdp_mode: XdpMode::Native,
        busy_poll: busy,
        ..RuntimeConfig::default()
    };
    let rt = Runtime::start(cfg, h, |_| Box::new(Reflector)).expect("runtime starts");
    let mut last = rt.stats();
    for _ in 0..secs {
        std::thread::sleep(Duration::from_secs(1));
        let st = rt.stats();
        println!(
            "serve: rx {} pps, tx {} pps, tx_ring_full {}, tx_deferred {}, sleeps {}, kernel rx_ring_full {} fill_empty {}",
            st.rx() - last.rx(),
            st.tx() - last.tx(),
            st.workers.iter().map(|w| w.tx_ring_full).sum::<u64>(),
            st.workers.iter().map(|w| w.tx_deferred).sum::<u64>(),
            st.workers.iter().map(|w| w.sleeps).sum::<u64>(),
            st.workers.iter().map(|w| w.kernel_rx_ring_full).sum::<u64>(),
            st.workers.iter().map(|w| w.kernel_fill_ring_empty).sum::<u64>()
        );
        last = st;
    }
    rt.stop().expect("clean stop");
}

fn blast(secs: u64) {
    let to = SocketAddr::from((VIP, PORT));
    let socks: Vec<UdpSocket> = (0..8)
        .map(|_| {
            let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
            s.connect(to).expect("connect");
            s.set_nonblocking(true).expect("nonblocking");
            s
        })
        .collect();
    let payload = [0u8; 18]; // 64-byte frames on the wire
    let mut buf = [0u8; 64];
    let start = Instant::now();
    let (mut sent, mut got) = (0u64, 0u64);
    while start.elapsed() < Duration::from_secs(secs) {
        for s in &socks {
            for _ in 0..16 {
                if s.send(&payload).is_ok() {
                    sent += 1;
                }
            }
            while s.recv(&mut buf).is_ok() {
                got += 1;
            }
        }
    }
    // Late echoes.
    let drain = Instant::now();
    while drain.elapsed() < Duration::from_millis(200) {
        for s in &socks {
            while s.recv(&mut buf).is_ok() {
                got += 1;
            }
        }
    }
    let t = start.elapsed().as_secs_f64();
    println!(
        "blast: offered {:.0} pps, echoed {:.0} pps ({:.1} % of offered)",
        sent as f64 / t,
        got as f64 / t,
        100.0 * got as f64 / sent.max(1) as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs = |i: usize| -> u64 {
        args.get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(5)
            .min(60)
    };
    match args.get(1).map(String::as_str) {
        Some("serve") => serve(
            args.get(2).expect("IFACE"),
            secs(3),
            args.get(4).is_some_and(|s| s == "busy"),
        ),
        Some("blast") => blast(secs(2)),
        _ => eprintln!("usage: reflect serve IFACE SECS [busy] | reflect blast SECS"),
    }
}
