//! rtnetlink plumbing shared by the neighbour and route queries: one socket
//! per request (or subscription), requests serialised with
//! `netlink-packet-route`, and the error every rtnetlink call returns.
//!
//! Acts on the calling thread's network namespace (the socket's).

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// An rtnetlink request failed.
#[derive(Debug, thiserror::Error)]
#[error("rtnetlink: {what}: {detail}")]
pub struct NetlinkError {
    /// What was being done.
    pub what: &'static str,
    /// The error.
    pub detail: String,
}

/// A [`NetlinkError`] for the step `what`.
pub(crate) fn nl_err(what: &'static str, e: impl std::fmt::Display) -> NetlinkError {
    NetlinkError {
        what,
        detail: e.to_string(),
    }
}

/// A route netlink socket bound to a kernel-chosen port id.
pub(crate) fn bound_socket() -> Result<Socket, NetlinkError> {
    let mut s = Socket::new(NETLINK_ROUTE).map_err(|e| nl_err("opening a socket", e))?;
    s.bind_auto().map_err(|e| nl_err("binding", e))?;
    Ok(s)
}

/// Send `msg` with header `flags` on a fresh socket connected to the kernel;
/// the answer is read from the returned socket.
pub(crate) fn request(msg: RouteNetlinkMessage, flags: u16) -> Result<Socket, NetlinkError> {
    let s = bound_socket()?;
    s.connect(&SocketAddr::new(0, 0))
        .map_err(|e| nl_err("connecting", e))?;
    let mut hdr = NetlinkHeader::default();
    hdr.flags = flags;
    hdr.sequence_number = 1;
    let mut req = NetlinkMessage::new(hdr, NetlinkPayload::from(msg));
    req.finalize();
    let mut buf = vec![0; req.header.length as usize];
    req.serialize(&mut buf);
    s.send(&buf, 0).map_err(|e| nl_err("sending", e))?;
    Ok(s)
}
