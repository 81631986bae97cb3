//! Ports for servers a test starts on the host's loopback, where tests
//! running alongside share one port space.
//!
//! Binding port 0 and handing the number to a child process races: the
//! kernel may give the same ephemeral port to another socket before the
//! child binds it. [`unused_port`] picks below the ephemeral range instead
//! (where the kernel never picks on its own), at an offset derived from the
//! pid and a per-process counter, and checks that the port is free.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{Error, Result};

/// The lowest port handed out.
const FIRST: u32 = 10_000;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The first port of the kernel's ephemeral range (32768 by default).
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .filter(|&p| p > FIRST + 1000)
        .unwrap_or(32_768)
}

/// A TCP port on 127.0.0.1 that is free now, outside the ephemeral range
/// and different from every other port this process got from here.
pub fn unused_port() -> Result<u16> {
    let span = ephemeral_start() - FIRST;
    // Spread processes apart; then walk from this process's offset.
    let base = std::process::id().wrapping_mul(97) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + (base + n) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(Error::Output {
        cmd: "bind 127.0.0.1".into(),
        detail: format!("no free port in {FIRST}..{}", FIRST + span),
    })
}
