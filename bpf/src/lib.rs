//! xlb's kernel glue: the XDP steering program ([`loader`], `src/bpf/`), the
//! maps it reads ([`maps`]), AF_XDP sockets and worker loops ([`worker`]), the
//! runtime the daemon starts ([`runtime`]), and interface/neighbour facts
//! ([`netinfo`]).
//!
//! `unsafe` is allowed only in [`worker`] (UMEM frames and rings) and `sys`
//! (raw syscalls); every block carries a `// SAFETY:` comment.
#![deny(unsafe_code)]

pub mod loader;
pub mod maps;
pub mod netinfo;
pub mod runtime;
mod sys;
pub mod worker;

pub use loader::{attach_pass_program, detach_stale, XdpError, XdpMode, XdpProgram, XdpStats};
pub use maps::{MapSync, Stat, SyncReport};
pub use runtime::{PortInfo, Runtime, RuntimeConfig, RuntimeError, RuntimeStats, WorkerCounters};
pub use sys::monotonic_ns;
