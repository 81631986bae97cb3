//! What xlb asks of the kernel outside the packet path: interfaces,
//! addresses and next hops ([`netinfo`]); links ([`link`]), routes
//! ([`route`]), neighbours ([`neigh`]) and addresses ([`addr`]) over
//! rtnetlink; the announcements of addresses that moved here
//! ([`announce`]), the NAPI settings busy polling wants ([`napi`]), and the
//! raw syscalls the crate makes (`sys`). No process is spawned.
//!
//! Everything acts on the calling thread's network namespace. Dependencies
//! run one way: `netinfo` and `napi` build on the others, `link`, `neigh`,
//! `route` and `addr` on the shared rtnetlink plumbing, `sys` on nothing.

pub mod addr;
pub mod announce;
pub mod link;
pub mod napi;
pub mod neigh;
pub mod netinfo;
mod netlink;
pub mod route;
pub(crate) mod sys;

pub use netlink::NetlinkError;
