//! ICMP / ICMPv6 echo (RFC 792, RFC 4443 §4.1) for ping probes.
//!
//! Prefers the unprivileged "ping" socket (`SOCK_DGRAM, IPPROTO_ICMP[V6]`),
//! where the kernel picks the identifier, fills checksums and hands this
//! socket only its own replies. It needs the process's group inside
//! `net.ipv4.ping_group_range` (off by default, also in new namespaces), so
//! when it is refused we fall back to a raw socket (root / CAP_NET_RAW) and
//! match replies by identifier and sequence ourselves. One socket per probe,
//! connected to the target, so the kernel filters other sources out.

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::time::Instant;

use crate::failure::ProbeFailure;

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const DEST_UNREACH_V4: u8 = 3;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;
const DEST_UNREACH_V6: u8 = 1;
const PAYLOAD: &[u8; 16] = b"xlb-probe-echo!!";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Which kind of socket a ping used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Dgram,
    Raw,
}

fn open(host: IpAddr) -> io::Result<(Socket, Mode)> {
    let (domain, proto) = match host {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
    };
    match Socket::new(domain, Type::DGRAM, Some(proto)) {
        Ok(s) => Ok((s, Mode::Dgram)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
            Ok((Socket::new(domain, Type::RAW, Some(proto))?, Mode::Raw))
        }
        Err(e) => Err(e),
    }
}

/// RFC 1071 Internet checksum.
pub(crate) fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn echo_request(v6: bool, id: u16, seq: u16) -> [u8; 24] {
    let mut p = [0u8; 24];
    p[0] = if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 };
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..].copy_from_slice(PAYLOAD);
    // ICMPv6's checksum covers a pseudo-header: the kernel fills it for both
    // socket kinds. ICMPv4 over a raw socket is ours to fill.
    if !v6 {
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// What a received datagram says about our echo.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Reply,
    Unreachable(u8),
    Other,
}

/// Classifies a received ICMP message. `check_id`: raw sockets see every
/// echo reply for the host, so the identifier must be ours; ping sockets
/// rewrite it to their own and already filter.
fn classify(msg: &[u8], v6: bool, check_id: bool, id: u16, seq: u16) -> Verdict {
    let ours = |m: &[u8]| {
        m.len() >= 8 && (!check_id || m[4..6] == id.to_be_bytes()) && m[6..8] == seq.to_be_bytes()
    };
    let (reply, unreach) = if v6 {
        (ECHO_REPLY_V6, DEST_UNREACH_V6)
    } else {
        (ECHO_REPLY_V4, DEST_UNREACH_V4)
    };
    let Some(&ty) = msg.first() else {
        return Verdict::Other;
    };
    if ty == reply && ours(msg) && msg[8..].starts_with(PAYLOAD) {
        return Verdict::Reply;
    }
    if ty == unreach && msg.len() >= 8 {
        // The error quotes the offending IP header and our echo's first 8 bytes.
        let quoted = &msg[8..];
        let inner = if v6 {
            quoted.get(40..)
        } else {
            quoted
                .first()
                .and_then(|b| quoted.get(usize::from(b & 0x0f) * 4..))
        };
        if inner.is_some_and(ours) {
            return Verdict::Unreachable(msg[1]);
        }
    }
    Verdict::Other
}

/// Sends one echo request to `host` and waits for its reply until `deadline`.
/// Returns the round-trip time.
pub(crate) async fn ping(host: IpAddr, deadline: Instant) -> Result<Duration, ProbeFailure> {
    ping_mode(host, deadline).await.map(|(d, _)| d)
}

pub(crate) async fn ping_mode(
    host: IpAddr,
    deadline: Instant,
) -> Result<(Duration, Mode), ProbeFailure> {
    let v6 = host.is_ipv6();
    let (sock, mode) = open(host)?;
    sock.set_nonblocking(true)?;
    sock.connect(&SockAddr::from(SocketAddr::new(host, 0)))?;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let id = (std::process::id() as u16) ^ ((n >> 16) as u16);
    let seq = n as u16;
    let req = echo_request(v6, id, seq);
    let fd = crate::sys::async_socket(sock)?;
    let start = Instant::now();
    loop {
        let mut guard = fd.writable().await?;
        match guard.try_io(|s| s.get_ref().send(&req)) {
            Ok(r) => {
                r?;
                break;
            }
            Err(_would_block) => continue,
        }
    }
    let mut buf = [0u8; 1500];
    loop {
        let mut guard = tokio::time::timeout_at(deadline, fd.readable())
            .await
            .map_err(|_| ProbeFailure::Timeout(deadline.saturating_duration_since(start)))??;
        let n = match guard.try_io(|s| (&mut s.get_ref()).read(&mut buf)) {
            Ok(r) => r?,
            Err(_would_block) => continue,
        };
        let rtt = start.elapsed();
        let msg = match (mode, v6) {
            // IPv4 raw sockets deliver the IP header too.
            (Mode::Raw, false) => {
                let ihl = usize::from(buf.first().copied().unwrap_or(0) & 0x0f) * 4;
                buf.get(ihl..n).unwrap_or_default()
            }
            _ => &buf[..n],
        };
        match classify(msg, v6, mode == Mode::Raw, id, seq) {
            Verdict::Reply => return Ok((rtt, mode)),
            Verdict::Unreachable(code) => {
                return Err(ProbeFailure::Unreachable(format!(
                    "ICMP destination unreachable, code {code}"
                )))
            }
            Verdict::Other => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testutil::run_in;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use xlb_testkit::Lab;

    async fn ping_both() -> Vec<Mode> {
        let mut modes = Vec::new();
        for host in [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ] {
            let deadline = Instant::now() + Duration::from_secs(1);
            let (rtt, mode) = ping_mode(host, deadline).await.unwrap();
            assert!(rtt < Duration::from_secs(1));
            modes.push(mode);
        }
        modes
    }

    /// Both socket kinds work, chosen by the namespace's ping_group_range.
    #[test]
    fn ping_socket_when_allowed_raw_socket_otherwise() {
        let _timing = crate::testutil::TIMING.blocking_lock();
        let mut lab = Lab::new().unwrap();
        let closed = lab.ns("pr").unwrap();
        assert_eq!(run_in(&closed, ping_both), vec![Mode::Raw, Mode::Raw]);
        let open = lab.ns("pd").unwrap();
        open.sysctl("net.ipv4.ping_group_range", "0 2147483647")
            .unwrap();
        assert_eq!(run_in(&open, ping_both), vec![Mode::Dgram, Mode::Dgram]);
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 §3 example bytes: sum 0xddf2, checksum = !0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
        let req = echo_request(false, 0x1234, 7);
        assert_eq!(checksum(&req), 0, "a packet with its checksum sums to zero");
    }

    #[test]
    fn classify_matches_only_our_echo() {
        let mut reply = echo_request(false, 9, 3);
        reply[0] = ECHO_REPLY_V4;
        assert_eq!(classify(&reply, false, true, 9, 3), Verdict::Reply);
        assert_eq!(classify(&reply, false, true, 8, 3), Verdict::Other);
        assert_eq!(classify(&reply, false, false, 8, 3), Verdict::Reply);
        assert_eq!(classify(&reply, false, true, 9, 4), Verdict::Other);
        assert_eq!(classify(&[], false, true, 9, 3), Verdict::Other);
        // Host unreachable quoting our request after a 20-byte IPv4 header.
        let mut err = vec![DEST_UNREACH_V4, 1, 0, 0, 0, 0, 0, 0, 0x45];
        err.extend_from_slice(&[0u8; 19]);
        err.extend_from_slice(&echo_request(false, 9, 3)[..8]);
        assert_eq!(classify(&err, false, true, 9, 3), Verdict::Unreachable(1));
        assert_eq!(classify(&err[..20], false, true, 9, 3), Verdict::Other);
    }
}
