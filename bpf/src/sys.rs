//! Every raw syscall the crate makes outside xsk-rs and libbpf-rs: `poll` over
//! the worker's sockets, the monotonic clock, the effective uid. Each wrapper
//! is safe to call; the unsafe blocks are confined here.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;

/// CLOCK_MONOTONIC in nanoseconds (the clock `Processor::process_batch` expects).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// The effective uid (0 = root).
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Block until one of `fds` is readable or `timeout_ms` passes. `pollfds` is
/// the caller's scratch (reused, so no allocation per call once sized).
/// Returns the number of ready fds; EINTR counts as 0.
pub fn poll_readable(
    fds: &[RawFd],
    pollfds: &mut Vec<libc::pollfd>,
    timeout_ms: i32,
) -> io::Result<usize> {
    pollfds.clear();
    pollfds.extend(fds.iter().map(|&fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }));
    // SAFETY: `pollfds` points at `pollfds.len()` initialised pollfd structs
    // that stay alive and unaliased for the duration of the call.
    let rc = unsafe {
        libc::poll(
            pollfds.as_mut_ptr(),
            pollfds.len() as libc::nfds_t,
            timeout_ms,
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(rc as usize)
}
