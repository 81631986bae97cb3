//! xlb-perf: `xlb-pktgen`, an AF_XDP traffic generator and receiver (per-flow
//! sequence numbers and TX timestamps → loss, reordering, latency), and the
//! side-by-side benchmark harness (`xlb-perf bench`) that runs xlb, a minimal
//! AF_XDP forwarder and nftables DNAT on one namespaced topology.
//!
//! `unsafe` lives only in [`xsk`] (UMEM frames and rings), [`raw`]
//! (AF_PACKET syscalls), [`lab`] (setns, kill) and [`procs`] (kill,
//! sysconf); every block says why it is sound.
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
pub mod xsk;
