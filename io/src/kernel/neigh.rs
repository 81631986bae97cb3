//! The kernel's neighbour table over rtnetlink: a dump (what
//! [`neighbours`](super::netinfo::neighbours) returns) and a [`NeighWatch`] that follows
//! `RTM_NEWNEIGH` / `RTM_DELNEIGH` notifications, so a changed MAC reaches
//! the tables in a refresh instead of waiting for the periodic re-resolution.
//! Control-plane only: one socket per call or watcher, messages decoded by
//! `netlink-packet-route`.
//!
//! Acts on the calling thread's network namespace (the socket's).

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::Socket;
use xlb_dataplane::net::MacAddr;

use super::netlink::{bound_socket, nl_err, NetlinkError};
use super::sys;

/// rtnetlink multicast group of neighbour changes (`RTNLGRP_NEIGH`).
const RTNLGRP_NEIGH: u32 = 3;

/// One neighbour table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neigh {
    /// The neighbour's address.
    pub addr: IpAddr,
    /// Interface index it is reached through.
    pub ifindex: u32,
    /// Its MAC, when the entry is usable (resolved: not incomplete or
    /// failed).
    pub mac: Option<MacAddr>,
}

/// A neighbour table change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighEvent {
    /// An entry was added or changed (its state or its MAC).
    Changed(Neigh),
    /// An entry was removed.
    Removed(Neigh),
}

fn decode(m: &NeighbourMessage) -> Option<Neigh> {
    let mut addr = None;
    let mut mac = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                addr = Some(IpAddr::V4(*v4))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                addr = Some(IpAddr::V6(*v6))
            }
            NeighbourAttribute::LinkLayerAddress(l) => {
                mac = <[u8; 6]>::try_from(l.as_slice()).ok().map(MacAddr)
            }
            _ => {}
        }
    }
    let usable = !matches!(
        m.header.state,
        NeighbourState::Incomplete | NeighbourState::Failed
    );
    Some(Neigh {
        addr: addr?,
        ifindex: m.header.ifindex,
        mac: mac.filter(|_| usable),
    })
}

/// Every neighbour message in one datagram, as events; `done` is set when
/// the datagram ends a dump.
fn parse_datagram(buf: &[u8], out: &mut Vec<NeighEvent>) -> Result<bool, NetlinkError> {
    let mut off = 0;
    while off < buf.len() {
        let msg: NetlinkMessage<RouteNetlinkMessage> =
            NetlinkMessage::deserialize(&buf[off..]).map_err(|e| nl_err("decoding", e))?;
        let len = msg.header.length as usize;
        match msg.payload {
            NetlinkPayload::Done(_) => return Ok(true),
            NetlinkPayload::Error(e) => return Err(nl_err("neighbour request", e)),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(m)) => {
                out.extend(decode(&m).map(NeighEvent::Changed));
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(m)) => {
                out.extend(decode(&m).map(NeighEvent::Removed));
            }
            _ => {}
        }
        if len == 0 {
            break;
        }
        off += len;
    }
    Ok(false)
}

/// The whole neighbour table (IPv4 and IPv6).
pub fn dump() -> Result<Vec<Neigh>, NetlinkError> {
    let mut found = Vec::new();
    super::netlink::dump(
        RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
        "neighbour request",
        |m| {
            if let RouteNetlinkMessage::NewNeighbour(n) = m {
                found.extend(decode(&n));
            }
        },
    )?;
    Ok(found)
}

/// A subscription to neighbour table changes.
pub struct NeighWatch {
    sock: Socket,
    pollfds: Vec<libc::pollfd>,
}

impl std::fmt::Debug for NeighWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NeighWatch").finish_non_exhaustive()
    }
}

impl NeighWatch {
    /// Subscribe (in the calling thread's namespace). Changes from here on
    /// are reported by [`NeighWatch::next`].
    pub fn new() -> Result<NeighWatch, NetlinkError> {
        let s = bound_socket()?;
        s.add_membership(RTNLGRP_NEIGH)
            .map_err(|e| nl_err("joining the neighbour group", e))?;
        Ok(NeighWatch {
            sock: s,
            pollfds: Vec::with_capacity(1),
        })
    }

    /// Changes that arrived, waiting up to `timeout` for the first; empty if
    /// none came.
    pub fn next(&mut self, timeout: Duration) -> Result<Vec<NeighEvent>, NetlinkError> {
        let fd = [self.sock.as_raw_fd()];
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let mut events = Vec::new();
        let mut wait = ms;
        while sys::poll_readable(&fd, &mut self.pollfds, wait).map_err(|e| nl_err("waiting", e))?
            > 0
        {
            let (dgram, _) = self
                .sock
                .recv_from_full()
                .map_err(|e| nl_err("receiving", e))?;
            parse_datagram(&dgram, &mut events)?;
            wait = 0; // take what is queued, then return
        }
        Ok(events)
    }
}
