//! Header parsing: ns per frame for xlb's checked views (`wire::parse`), with
//! etherparse's `SlicedPacket` on the same frames as a reference in the same
//! run (the machine is shared; compare the two, not absolute figures).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use xlb_dataplane::wire::{self, build::Builder, tcp};

fn frames() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "eth_ipv4_tcp",
            Builder::tcp(
                "10.0.0.1:40000".parse().expect("addr"),
                "10.0.0.2:80".parse().expect("addr"),
                tcp::flags::ACK,
            )
            .to_vec()
            .expect("valid frame"),
        ),
        (
            "eth_vlan_ipv6_udp",
            Builder::udp(
                "[2001:db8::1]:1".parse().expect("addr"),
                "[2001:db8::2]:2".parse().expect("addr"),
            )
            .vlan(3)
            .to_vec()
            .expect("valid frame"),
        ),
    ]
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    for (name, f) in frames() {
        g.bench_function(format!("xlb/{name}"), |b| {
            b.iter(|| wire::parse(black_box(&f)).map(|m| m.dport).unwrap_or(0))
        });
        g.bench_function(format!("etherparse/{name}"), |b| {
            b.iter(|| etherparse::SlicedPacket::from_ethernet(black_box(&f)).is_ok())
        });
    }
    g.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
