//! The balancers the suites compare, each configured, started and stopped
//! on a topology (`crate::topo::Topo`): xlb ([`xlb`]: the daemon, and the
//! service its pipeline serves in-process), the minimal AF_XDP forwarder
//! ([`fwd`]), both in-process under xlb-io's Runtime ([`afxdp`]), kernel
//! nftables DNAT with conntrack ([`nft`]), HAProxy ([`haproxy`]) and nginx
//! ([`nginx`], also the TCP suite's backends).
//!
//! A contender module knows how to run its balancer; which contenders run
//! in which suite, and what is measured, is the suites' business
//! (`crate::suites`), so nothing here imports a suite.

pub mod afxdp;
pub mod fwd;
pub mod haproxy;
pub mod nft;
pub mod nginx;
pub mod xlb;
