//! The measurements `xlb-perf bench` runs, one module per suite: [`udp`]
//! (64-byte UDP through every contender, max rate and paced), [`tcp`] (wrk
//! against nginx backends: conn/s, req/s, latency) and [`flows`] (a million
//! tracked flows, a SYN flood next to established flows).
//!
//! A suite builds its topology ([`crate::topo`]), starts its contenders
//! ([`crate::contenders`]), drives the traffic (xlb-pktgen's engine, or wrk)
//! and writes its report ([`crate::report`]); suites never import one
//! another.

pub mod flows;
pub mod tcp;
pub mod udp;
