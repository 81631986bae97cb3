//! rtnetlink plumbing shared by the link, address, neighbour and route
//! queries: one socket
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

/// Send the single request `msg` and read the kernel's one answer: the
/// message, or the errno of its refusal (`ENODEV` for a link that is not
/// there, `ENETUNREACH` for a route that is not, ...), which the caller
/// judges.
pub(crate) fn ask(
    msg: RouteNetlinkMessage,
) -> Result<Result<RouteNetlinkMessage, i32>, NetlinkError> {
    use netlink_packet_core::NLM_F_REQUEST;
    let s = request(msg, NLM_F_REQUEST)?;
    let (dgram, _) = s.recv_from_full().map_err(|e| nl_err("receiving", e))?;
    let reply: NetlinkMessage<RouteNetlinkMessage> =
        NetlinkMessage::deserialize(&dgram).map_err(|e| nl_err("decoding", e))?;
    match reply.payload {
        NetlinkPayload::InnerMessage(m) => Ok(Ok(m)),
        NetlinkPayload::Error(e) => Ok(Err(e.code.map_or(0, |c| -c.get()))),
        other => Err(nl_err("asking", format!("unexpected answer {other:?}"))),
    }
}

/// Send the dump request `msg` and hand every message of the answer to
/// `each`, until the kernel's `NLMSG_DONE` (a dump is bounded by the table
/// it lists).
pub(crate) fn dump(
    msg: RouteNetlinkMessage,
    what: &'static str,
    mut each: impl FnMut(RouteNetlinkMessage),
) -> Result<(), NetlinkError> {
    use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST};
    let s = request(msg, NLM_F_DUMP | NLM_F_REQUEST)?;
    loop {
        let (dgram, _) = s.recv_from_full().map_err(|e| nl_err("receiving", e))?;
        if dgram.is_empty() {
            return Ok(());
        }
        let mut off = 0;
        while off < dgram.len() {
            let m: NetlinkMessage<RouteNetlinkMessage> =
                NetlinkMessage::deserialize(&dgram[off..]).map_err(|e| nl_err("decoding", e))?;
            match m.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => return Err(nl_err(what, e)),
                NetlinkPayload::InnerMessage(inner) => each(inner),
                _ => {}
            }
            let len = m.header.length as usize;
            if len == 0 {
                break;
            }
            off += len;
        }
    }
}
