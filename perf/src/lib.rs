//! xlb-perf: `xlb-pktgen`, an AF_XDP traffic generator and receiver (per-flow
//! sequence numbers and TX timestamps → loss, reordering, latency), and the
//! side-by-side benchmark harness (`xlb-perf bench`) that runs xlb and other
//! balancers on one namespaced topology.
//!
//! Layout:
//! - [`host`] (the interrupt flag, pinning, nice values, autogroups) and
//!   [`procs`] (processes the harness starts, where things ran); the
//!   namespaces, veths and bridges themselves are `xlb_testkit`'s labs;
//! - the generator: [`frames`] (stamped frame templates), [`pace`],
//!   [`engine`] (the TX and RX loops over xlb-io's `XskIo`, or [`raw`]
//!   sockets) and [`pktgen`] (a run with its threads and summary);
//! - [`topo`]: the namespaced topology, its addresses and placements;
//! - [`contenders`]: xlb, the minimal AF_XDP forwarder, nftables, HAProxy,
//!   nginx, each started and stopped on a topology;
//! - [`suites`]: udp, tcp, flows, each a measurement of contenders;
//! - [`report`]: the receive-side accounting and medians, charts, and the
//!   Markdown/JSON files.
//!
//! Imports run one way: suites → contenders → topo → host; the suites and
//! the generator use report, which uses only frames (and the test kit's
//! commands); no suite imports another.
//!
//! The generator's AF_XDP sockets are xlb-io's `XskIo`, driven through its
//! `FramePool`. `unsafe` lives only in [`raw`] (AF_PACKET syscalls), [`host`]
//! (signal handlers, scheduling) and [`procs`] (kill, sysconf); every block
//! says why it is sound.

pub mod contenders;
pub mod engine;
pub mod frames;
pub mod host;
pub mod pace;
pub mod pktgen;
pub mod procs;
pub mod raw;
pub mod report;
pub mod suites;
pub mod topo;
