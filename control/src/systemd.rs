//! The service manager's notification protocol (`sd_notify(3)`): one
//! datagram of `KEY=VALUE` lines to the `AF_UNIX` socket named by
//! `$NOTIFY_SOCKET` (a path, or an abstract name after `@`). The unit is
//! `Type=notify`, so systemd counts xlb as started only at `READY=1`, which
//! the daemon sends once the config is loaded, the XDP programs attached,
//! the workers running and the API listening; `STOPPING=1` when it begins
//! to shut down.
//!
//! Without `$NOTIFY_SOCKET` (not started by systemd) every call does
//! nothing. Failures are returned, never fatal: the daemon runs the same
//! either way.

use std::os::unix::net::UnixDatagram;

/// Why a notification could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// the socket could not be opened or the datagram sent
    #[error("notifying the service manager at {socket:?}: {source}")]
    Send {
        /// `$NOTIFY_SOCKET`.
        socket: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Send `state` (newline-separated `KEY=VALUE` lines) to `$NOTIFY_SOCKET`;
/// `Ok(false)` when there is none to send to.
pub fn notify(state: &str) -> Result<bool, NotifyError> {
    match std::env::var("NOTIFY_SOCKET") {
        Ok(socket) if !socket.is_empty() => send(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

fn send(socket: &str, state: &str) -> Result<(), NotifyError> {
    let err = |source| NotifyError::Send {
        socket: socket.to_string(),
        source,
    };
    let s = UnixDatagram::unbound().map_err(err)?;
    match socket.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).map_err(err)?;
            s.send_to_addr(state.as_bytes(), &addr).map_err(err)?;
        }
        None => {
            s.send_to(state.as_bytes(), socket).map_err(err)?;
        }
    }
    Ok(())
}

/// [`notify`], logging a failure instead of returning it.
pub fn notify_or_log(state: &str) {
    match notify(state) {
        Ok(true) => tracing::debug!(state, "service manager notified"),
        Ok(false) => {}
        Err(e) => tracing::warn!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_reaches_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).expect("bind");
        send(path.to_str().expect("utf-8"), "READY=1\nSTATUS=up").expect("send");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=up");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("xlb-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).expect("name");
        let rx = UnixDatagram::bind_addr(&addr).expect("bind");
        send(&format!("@{name}"), "STOPPING=1").expect("send");
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"STOPPING=1");

        assert!(send("/nonexistent/notify", "READY=1").is_err());
    }
}
