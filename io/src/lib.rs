//! xlb's packet I/O: everything between the NIC and the pure dataplane.
//!
//! - [`xdp`]: the Rust side of the XDP steering program (`bpf/xlb.bpf.c` at
//!   the workspace root): loading and attaching it, the steering maps it
//!   reads and their sync from a tables snapshot, its counters.
//! - [`io`]: the [`PacketIo`] interface the workers reach packets through,
//!   with AF_XDP sockets ([`XskIo`]) in the daemon and in-memory rings
//!   ([`io::mem`]) in tests and NIC-less benchmarks, and [`io::pool`], a safe
//!   owner of an I/O's frames for simpler send/receive loops (the traffic
//!   generator's).
//! - [`kernel`]: what xlb asks of the kernel outside the packet path:
//!   interfaces, routes and neighbours (rtnetlink), NAPI settings, raw
//!   syscalls.
//! - [`worker`]: the loop each worker thread runs over its [`PacketIo`];
//!   [`runtime`]: the [`Runtime`] that attaches the program, opens the
//!   sockets and runs one pinned worker per queue.
//!
//! How the daemon uses it:
//! 1. `Runtime::start(cfg, tables_handle, |worker| Box::new(pipeline))`;
//! 2. `runtime.port_specs()` and `kernel::netinfo::next_hops(..)` go into the
//!    `TablesSpec` control builds;
//! 3. after each new snapshot: `runtime.publish(&handle, tables)` (publish,
//!    then sync the XDP maps) - or `handle.publish` + `runtime.sync`;
//! 4. `runtime.stats()` for metrics; `runtime.stop()` on shutdown.
//!
//! Everything acts on the calling thread's network namespace: start, sync and
//! stop the runtime from threads in the same namespace.
//!
//! Modules import one another in one direction only (`runtime` → `worker`,
//! `xdp`, `io`, `kernel`; `io` → `kernel`), and none imports this root: the
//! re-exports below are for users of the crate.
//!
//! `unsafe` is allowed only in [`io::xsk`] (UMEM frames and rings),
//! [`io::mem`] (its frame pool), [`io`] itself (it declares the unsafe
//! methods of the `PacketIo` contract), [`worker`] and [`io::pool`] (calls
//! across that contract) and `kernel::sys` (raw syscalls); every block
//! carries a `// SAFETY:` comment.

pub mod io;
pub mod kernel;
pub mod runtime;
pub mod worker;
pub mod xdp;

pub use io::pool::FramePool;
pub use io::xsk::{XskConfig, XskError, XskIo};
pub use io::{DeviceStats, PacketIo};
pub use kernel::sys::monotonic_ns;
pub use runtime::{PortInfo, Runtime, RuntimeConfig, RuntimeError, RuntimeStats, WorkerCounters};
pub use xdp::loader::{attach_pass_program, detach_if, detach_stale, PassProgram};
pub use xdp::maps::{MapSync, SyncReport};
pub use xdp::program::XdpProgram;
pub use xdp::stats::{Stat, XdpStats};
pub use xdp::{XdpError, XdpMode};
