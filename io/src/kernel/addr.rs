//! Interface addresses over rtnetlink (`RTM_NEWADDR` / `RTM_DELADDR`, what
//! `ip addr add|del` sends): how xlb holds a VIP on `lo` so the kernel
//! answers ARP/NDP for it. No process is spawned, and "already there" is
//! the kernel's `EEXIST`, not a message to match in some tool's language.
//!
//! Acts on the calling thread's network namespace (the socket's).

use std::net::IpAddr;

use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::netlink::{nl_err, request, NetlinkError};

/// What adding an address did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// It was added (and is xlb's to remove).
    New,
    /// It was there already (someone else's: leave it).
    Existed,
}

/// What removing an address did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// It was removed.
    Gone,
    /// It was not there.
    Absent,
}

fn message(ifindex: u32, addr: IpAddr) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    m.header.prefix_len = if addr.is_ipv4() { 32 } else { 128 };
    m.header.index = ifindex;
    m.header.scope = if addr.is_loopback() {
        AddressScope::Host
    } else {
        AddressScope::Universe
    };
    m.attributes.push(AddressAttribute::Local(addr));
    m.attributes.push(AddressAttribute::Address(addr));
    m
}

/// Send `msg` and read the kernel's acknowledgement: `Ok(None)` on success,
/// `Ok(Some(errno))` for a refusal the caller may expect.
fn ack(
    msg: RouteNetlinkMessage,
    flags: u16,
    what: &'static str,
) -> Result<Option<i32>, NetlinkError> {
    let s = request(msg, flags | NLM_F_REQUEST | NLM_F_ACK)?;
    let (dgram, _) = s.recv_from_full().map_err(|e| nl_err("receiving", e))?;
    let reply: NetlinkMessage<RouteNetlinkMessage> =
        NetlinkMessage::deserialize(&dgram).map_err(|e| nl_err("decoding", e))?;
    match reply.payload {
        NetlinkPayload::Error(e) => Ok(e.code.map(|c| -c.get())),
        other => Err(nl_err(what, format!("unexpected answer {other:?}"))),
    }
}

/// Add `addr` as a host address (/32, /128) on interface `ifindex`.
pub fn add(ifindex: u32, addr: IpAddr) -> Result<Added, NetlinkError> {
    match ack(
        RouteNetlinkMessage::NewAddress(message(ifindex, addr)),
        NLM_F_CREATE | NLM_F_EXCL,
        "adding an address",
    )? {
        None => Ok(Added::New),
        Some(libc::EEXIST) => Ok(Added::Existed),
        Some(errno) => Err(nl_err(
            "adding an address",
            std::io::Error::from_raw_os_error(errno),
        )),
    }
}

/// Remove the host address `addr` from interface `ifindex`.
pub fn del(ifindex: u32, addr: IpAddr) -> Result<Removed, NetlinkError> {
    match ack(
        RouteNetlinkMessage::DelAddress(message(ifindex, addr)),
        0,
        "removing an address",
    )? {
        None => Ok(Removed::Gone),
        Some(libc::EADDRNOTAVAIL | libc::ENOENT | libc::ESRCH) => Ok(Removed::Absent),
        Some(errno) => Err(nl_err(
            "removing an address",
            std::io::Error::from_raw_os_error(errno),
        )),
    }
}
