//! The crate's only unsafe code: registering an owned socket with tokio's reactor.
#![allow(unsafe_code)]

use std::io;

use socket2::Socket;
use tokio::io::unix::AsyncFd;

/// Wraps an owned non-blocking socket for async readiness.
pub(crate) fn async_socket(sock: Socket) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: `Socket` owns its descriptor: it stays open, and `as_raw_fd`
    // returns the same one, until the `AsyncFd` (which owns the `Socket`) drops it.
    Ok(unsafe { AsyncFd::register(sock) }?)
}
