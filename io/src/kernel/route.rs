//! Route lookups over rtnetlink (`RTM_GETROUTE` for one destination, what
//! `ip route get` asks): which interface a packet to an address leaves by
//! and which neighbour it is handed to. One request per lookup, no process
//! spawned, so refreshing the next hops of thousands of endpoints stays cheap.
//!
//! Acts on the calling thread's network namespace (the socket's).

use std::net::IpAddr;

use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::netlink::{ask, NetlinkError};

/// Where the kernel would send a packet to `dst`: (outgoing interface index,
/// the neighbour it is handed to: the gateway, or `dst` itself when on
/// link). `None` when the kernel has no route (unreachable, prohibited) or
/// the route does not leave by an interface (local, blackhole).
pub fn get(dst: IpAddr) -> Result<Option<(u32, IpAddr)>, NetlinkError> {
    let mut msg = RouteMessage::default();
    msg.header.address_family = match dst {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    msg.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
    msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
    msg.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(dst)));
    // The kernel answers a single RTM_GETROUTE with one message: the route
    // or an error.
    Ok(match ask(RouteNetlinkMessage::GetRoute(msg))? {
        Ok(RouteNetlinkMessage::NewRoute(r)) => parse(&r, dst),
        // ENETUNREACH, EHOSTUNREACH, EACCES (prohibit), ...: no route.
        Err(_) => None,
        Ok(_) => None,
    })
}

fn parse(r: &RouteMessage, dst: IpAddr) -> Option<(u32, IpAddr)> {
    let mut oif = None;
    let mut gateway = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(IpAddr::V4(*g)),
            RouteAttribute::Gateway(RouteAddress::Inet6(g)) => gateway = Some(IpAddr::V6(*g)),
            _ => {}
        }
    }
    Some((oif?, gateway.unwrap_or(dst)))
}
