//! Fuzz target for the whole pipeline: every input is one frame, fed to one
//! of two workers that share a connection table and keep their state across
//! inputs, so sequences of frames build flows, hit them, reply to them and
//! send ICMP errors about them. Checks: no panic, one verdict per frame, the
//! counters account for every frame, and a transmitted frame still parses.
#![no_main]

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use xlb_dataplane::conntrack::{Conntrack, ConntrackConfig};
use xlb_dataplane::net::MacAddr;
use xlb_dataplane::pipeline::{Pipeline, Processor};
use xlb_dataplane::tables::{
    EndpointSpec, EndpointState, L4Proto, NatMode, NextHop, PortSpec, Selection, ServiceKey,
    ServiceSpec, Tables, TablesSpec,
};
use xlb_dataplane::{wire, Frame, Verdict};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("fuzz lab address")
}

/// Services of every mode and protocol on the addresses the seed frames use.
fn tables() -> Tables {
    let ep = |a: &str, port| EndpointSpec {
        addr: ip(a),
        port,
        weight: 1,
        state: EndpointState::Active,
    };
    let svc = |vip: &str, proto, port: u16, sel, mode, eps: Vec<EndpointSpec>| ServiceSpec {
        key: ServiceKey {
            vip: ip(vip),
            proto,
            port_min: port,
            port_max: port,
            block: 0,
        },
        sel,
        mode,
        allowed_sources: vec![],
        endpoints: eps,
        inactive_timeout_s: 30,
        dsr_ipip: false,
        name: String::new(),
        snat: None,
    };
    use L4Proto::*;
    use NatMode::*;
    use Selection::*;
    let mut ipip = svc("192.0.2.13", Tcp, 80, Hash, Dsr, vec![ep("10.1.0.13", 80)]);
    ipip.dsr_ipip = true;
    let services = vec![
        svc(
            "192.0.2.10",
            Tcp,
            80,
            RoundRobin,
            Dnat,
            vec![ep("10.1.0.11", 8080), ep("10.1.0.12", 8080)],
        ),
        svc(
            "192.0.2.10",
            Tcp,
            443,
            Hash,
            FullNat,
            vec![ep("10.1.0.12", 8443)],
        ),
        svc(
            "192.0.2.11",
            Udp,
            53,
            LeastConn,
            OneArm,
            vec![ep("10.1.0.11", 5353)],
        ),
        svc(
            "192.0.2.12",
            Tcp,
            80,
            Persist,
            Dsr,
            vec![ep("10.1.0.11", 0)],
        ),
        ipip,
        svc(
            "192.0.2.16",
            Sctp,
            9000,
            RoundRobin,
            FullNat,
            vec![ep("10.1.0.12", 9000)],
        ),
        svc(
            "192.0.2.17",
            Icmp,
            0,
            RoundRobin,
            FullNat,
            vec![ep("10.1.0.13", 0)],
        ),
        svc(
            "2001:db8:100::10",
            Tcp,
            80,
            RoundRobin,
            FullNat,
            vec![ep("2001:db8:1::11", 8080)],
        ),
        svc(
            "2001:db8:100::10",
            Udp,
            53,
            Priority,
            Dnat,
            vec![ep("2001:db8:1::12", 53)],
        ),
    ];
    let backends = [
        "10.1.0.11",
        "10.1.0.12",
        "10.1.0.13",
        "2001:db8:1::11",
        "2001:db8:1::12",
    ];
    let spec = TablesSpec {
        services,
        next_hops: backends
            .iter()
            .map(|b| {
                (
                    ip(b),
                    NextHop {
                        mac: MacAddr([2, 0xbb, 0, 0, 0, 1]),
                        port: 1,
                    },
                )
            })
            .collect(),
        ports: vec![
            PortSpec {
                id: 0,
                name: "c".into(),
                mac: MacAddr([2, 0, 0, 0, 0, 1]),
                addrs: vec![ip("10.0.0.1"), ip("2001:db8::1")],
            },
            PortSpec {
                id: 1,
                name: "b".into(),
                mac: MacAddr([2, 0, 0, 0, 1, 1]),
                addrs: vec![ip("10.1.0.1"), ip("2001:db8:1::1")],
            },
        ],
        snat_addrs: vec![ip("10.9.0.1"), ip("2001:db8:9::1")],
        nat_ports: (40000, 40063),
        maglev_size: 251,
    };
    Tables::build(spec, &Tables::empty()).expect("fuzz lab tables")
}

struct Lab {
    tables: Tables,
    workers: Vec<Pipeline>,
    now: u64,
}

thread_local! {
    static LAB: RefCell<Lab> = RefCell::new({
        let ct = Arc::new(Conntrack::new(2, ConntrackConfig { buckets_per_shard: 64 }));
        Lab { tables: tables(), workers: (0..2).map(|w| Pipeline::new(w, 2, &ct)).collect(), now: 1 }
    });
}

fuzz_target!(|data: &[u8]| {
    LAB.with(|lab| {
        let mut lab = lab.borrow_mut();
        // The frame's length picks the worker and the port it arrived on, so
        // plain frames (the seed corpus) are valid inputs as they are.
        let worker = data.len() & 1;
        let rx = ((data.len() >> 1) & 1) as u16;
        lab.now += 1_000_000 * (1 + data.first().copied().unwrap_or(0) as u64);
        let mut buf = vec![0u8; data.len() + 64];
        buf[..data.len()].copy_from_slice(data);
        let before = lab.workers[worker]
            .counters()
            .rx_packets
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut frames = [Frame::new(&mut buf, data.len(), rx)];
        let mut verdicts = [Verdict::Drop(xlb_dataplane::DropReason::NoRoom)];
        let Lab {
            tables,
            workers,
            now,
        } = &mut *lab;
        workers[worker].process_batch(tables, *now, &mut frames, &mut verdicts);
        let c = lab.workers[worker].counters();
        assert_eq!(
            c.rx_packets.load(std::sync::atomic::Ordering::Relaxed),
            before + 1
        );
        if let Verdict::Tx(p) = verdicts[0] {
            assert!(p <= 1, "transmits only on a configured port");
            assert!(
                wire::parse(frames[0].data()).is_ok(),
                "a transmitted frame still parses"
            );
        }
    });
});
