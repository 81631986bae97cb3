//! Why one probe failed ([`ProbeFailure`]), shared by every probe method.

use std::io;
use std::time::Duration;

/// Why one probe failed. Cheap to clone: it is kept as the entry's last error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeFailure {
    /// no answer within the timeout
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// connection refused (TCP RST, or ICMP port unreachable for UDP)
    #[error("connection refused")]
    Refused,
    /// the target is unreachable (ICMP error or no route)
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// any other socket error
    #[error("{0}")]
    Io(String),
    /// HTTP status other than 200
    #[error("HTTP status {0}")]
    Status(u16),
    /// the reply did not match probeResp
    #[error("reply does not match the expected response")]
    Mismatch,
    /// the HTTP answer could not be parsed
    #[error("malformed HTTP response: {0}")]
    BadHttp(&'static str),
    /// TLS handshake failure
    #[error("TLS: {0}")]
    Tls(String),
    /// SCTP sockets cannot be created on this kernel
    #[error("SCTP is unsupported on this kernel")]
    SctpUnsupported,
}

impl From<io::Error> for ProbeFailure {
    fn from(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => ProbeFailure::Refused,
            Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN | libc::ENETDOWN) => {
                ProbeFailure::Unreachable(e.to_string())
            }
            _ if e.kind() == io::ErrorKind::ConnectionRefused => ProbeFailure::Refused,
            _ => ProbeFailure::Io(e.to_string()),
        }
    }
}
