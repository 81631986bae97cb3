//! xlb-perf: `xlb-pktgen`, an AF_XDP traffic generator and receiver (per-flow
//! sequence numbers and TX timestamps → loss, reordering, latency), and the
//! side-by-side benchmark harness (`xlb-perf bench`) that runs xlb, a minimal
//! AF_XDP forwarder and nftables DNAT on one namespaced topology.
//!
//! The generator's AF_XDP sockets are xlb-io's `XskIo`, driven through its
//! `FramePool`. `unsafe` lives only in [`raw`] (AF_PACKET syscalls), [`lab`]
//! (setns, kill) and [`procs`] (kill, sysconf); every block says why it is
//! sound.
#![deny(unsafe_code)]

pub mod bench;
pub mod chart;
pub mod engine;
pub mod flows;
pub mod frames;
pub mod lab;
pub mod pace;
pub mod pktgen;
pub mod procs;
pub mod raw;
pub mod stats;
pub mod tcp;
