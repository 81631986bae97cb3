//! xlb's kernel glue: the XDP steering program (`bpf/` at the workspace root, loaded by
//! [`loader`]), the maps it reads ([`maps`]), AF_XDP sockets and worker loops
//! ([`worker`]), the [`Runtime`] the daemon starts, and interface / route /
//! neighbour facts ([`netinfo`]). Workers reach packets through the
//! [`io::PacketIo`] interface: AF_XDP ([`xsk`]) in the daemon, in-memory rings
//! ([`io::mem`]) in tests and NIC-less benchmarks.
//!
//! How the daemon uses it:
//! 1. `Runtime::start(cfg, tables_handle, |worker| Box::new(pipeline))`;
//! 2. `runtime.port_specs()` and `netinfo::next_hops(..)` go into the
//!    `TablesSpec` control builds;
//! 3. after each new snapshot: `runtime.publish(&handle, tables)` (publish,
//!    then sync the XDP maps) - or `handle.publish` + `runtime.sync`;
//! 4. `runtime.stats()` for metrics; `runtime.stop()` on shutdown.
//!
//! Everything acts on the calling thread's network namespace: start, sync and
//! stop the runtime from threads in the same namespace.
//!
//! `unsafe` is allowed only in [`xsk`] (UMEM frames and rings), [`io::mem`]
//! (its frame pool), [`worker`] (calls across the `PacketIo` contract) and
//! `sys` (raw syscalls); every block carries a `// SAFETY:` comment.
#![deny(unsafe_code)]

pub mod io;
pub mod loader;
pub mod maps;
pub mod napi;
pub mod neigh;
pub mod netinfo;
pub mod route;
pub mod runtime;
mod sys;
pub mod worker;
pub mod xsk;

pub use loader::{
    attach_pass_program, detach_stale, PassProgram, XdpError, XdpMode, XdpProgram, XdpStats,
};
pub use maps::{MapSync, Stat, SyncReport};
pub use runtime::{PortInfo, Runtime, RuntimeConfig, RuntimeError, RuntimeStats, WorkerCounters};
pub use sys::monotonic_ns;
