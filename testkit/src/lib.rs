//! xlb's test kit, for tests (a dev-dependency) and for the benchmark
//! harness in `perf/` (which is itself a lab). Nothing here ships.
//!
//! - [`netns`]: network-namespace labs. A [`Lab`] owns namespaces named by
//!   pid and lab number and deletes them on drop, panics included, after
//!   killing what runs inside; a [`Netns`] runs commands, threads, closures
//!   and processes inside one and sets up its links, addresses and routes;
//!   [`Veth`] pairs connect two. [`bridge`]: an L2 segment in a namespace of
//!   its own ([`Bridge`]) that nodes attach to and that can be partitioned
//!   between two nodes.
//! - [`proc`]: processes started on the host or in a namespace, pinned and
//!   reniced if asked, stopped by pid on drop ([`Spawn`], [`Proc`]).
//! - [`global`]: locks on what all namespaces share, held across threads and
//!   processes ([`global::lock`]), and [`Sysctls`], which changes global
//!   kernel settings under that lock and restores them on drop.
//! - [`fixtures`]: services, table sets and REST rule bodies.
//! - [`cmd`] (commands to completion) and [`ports`] (race-free loopback
//!   ports for servers a test starts).
//!
//! Tests in one binary run in parallel: anything a test creates carries a
//! unique name, anything global is changed under a lock, and a test that
//! must not overlap with another says so by taking a [`global::lock`].
//!
//! `unsafe` lives only in `sys` (setns, kill, flock, mounts).

pub mod bridge;
pub mod cmd;
mod error;
pub mod fixtures;
pub mod global;
pub mod netns;
pub mod ports;
pub mod proc;
mod sys;

pub use bridge::Bridge;
pub use cmd::{euid, require_root, sh};
pub use error::{Error, Result};
pub use global::{GlobalLock, Sysctls};
pub use netns::{in_fresh_netns, Lab, Netns, Veth};
pub use ports::unused_port;
pub use proc::{Proc, Signal, Spawn};
