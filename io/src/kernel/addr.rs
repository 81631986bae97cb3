//! Interface addresses over rtnetlink (`RTM_NEWADDR` / `RTM_DELADDR`, what
//! `ip addr add|del` sends): how xlb holds a VIP on `lo` so the kernel
//! answers ARP/NDP for it. No process is spawned, and "already there" is
//! the kernel's `EEXIST`, not a message to match in some tool's language.
//!
//! Every address xlb adds carries the address protocol [`XLB_PROTO`]
//! (`IFA_PROTO`; `ip -o addr show proto 0x78` lists them), so that a
//! restart after a crash finds and takes back the addresses it left behind
//! ([`marked`]) instead of mistaking them for an operator's.
//!
//! An address can be leased ([`add_leased`], [`renew`]): the kernel itself
//! removes it when its valid lifetime runs out, so an address whose xlb
//! died without removing it (SIGKILL, a crash) stops being answered for
//! within the lease, rather than claiming a VIP another node now holds.
//!
//! It also lists an interface's own addresses ([`global`]), for the ports'
//! source addresses.
//!
//! Acts on the calling thread's network namespace (the socket's).

use std::net::IpAddr;

use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
};
use std::time::Duration;

use netlink_packet_core::NLM_F_REPLACE;
use netlink_packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, AddressProtocol, AddressScope, CacheInfo,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::netlink::{dump, nl_err, request, NetlinkError};

/// The address protocol (`IFA_PROTO`) of the addresses xlb adds: `x`.
/// The kernel's own are 0–3.
pub const XLB_PROTO: u8 = 0x78;

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

/// xlb's form of `addr` on `ifindex`: marked ([`XLB_PROTO`]), and valid
/// for `lease` (whole seconds, at least one) if given, else forever.
fn ours(ifindex: u32, addr: IpAddr, lease: Option<Duration>) -> AddressMessage {
    let mut m = message(ifindex, addr);
    if addr.is_ipv6() {
        // A VIP is the node's to answer for: no duplicate detection (which
        // would keep it unusable for a second, and fail it while another
        // node still answers in a takeover).
        m.header.flags |= AddressHeaderFlags::Nodad;
    }
    m.attributes
        .push(AddressAttribute::Protocol(AddressProtocol::from(XLB_PROTO)));
    if let Some(lease) = lease {
        let secs = u32::try_from(lease.as_secs())
            .unwrap_or(u32::MAX - 1)
            .max(1);
        let mut c = CacheInfo::default();
        c.ifa_valid = secs;
        // IPv6: deprecated from the start, so that source address selection
        // never picks a VIP for the node's own traffic (it would, by longest
        // matching prefix, on the interface that holds it); the kernel still
        // answers for it.
        c.ifa_preferred = if addr.is_ipv6() { 0 } else { secs };
        m.attributes.push(AddressAttribute::CacheInfo(c));
    }
    m
}

/// Add `addr` as a host address (/32, /128) on interface `ifindex`, marked
/// as xlb's ([`XLB_PROTO`]), for good.
pub fn add(ifindex: u32, addr: IpAddr) -> Result<Added, NetlinkError> {
    add_with(ifindex, addr, None)
}

/// [`add`], valid for `lease` only: keep it with [`renew`].
pub fn add_leased(ifindex: u32, addr: IpAddr, lease: Duration) -> Result<Added, NetlinkError> {
    add_with(ifindex, addr, Some(lease))
}

/// Extend the lease of an address xlb added with [`add_leased`] to `lease`
/// from now (adding it again if it had already run out). Only for xlb's
/// own addresses: it would put a lease on anyone's.
pub fn renew(ifindex: u32, addr: IpAddr, lease: Duration) -> Result<(), NetlinkError> {
    match ack(
        RouteNetlinkMessage::NewAddress(ours(ifindex, addr, Some(lease))),
        NLM_F_CREATE | NLM_F_REPLACE,
        "renewing an address",
    )? {
        None => Ok(()),
        Some(errno) => Err(nl_err(
            "renewing an address",
            std::io::Error::from_raw_os_error(errno),
        )),
    }
}

fn add_with(ifindex: u32, addr: IpAddr, lease: Option<Duration>) -> Result<Added, NetlinkError> {
    match ack(
        RouteNetlinkMessage::NewAddress(ours(ifindex, addr, lease)),
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

/// The addresses on interface `ifindex` that carry xlb's mark: added by an
/// xlb, this one or one that died without removing them.
pub fn marked(ifindex: u32) -> Result<Vec<IpAddr>, NetlinkError> {
    Ok(marked_where(|i| i == ifindex)?
        .into_iter()
        .map(|(_, a)| a)
        .collect())
}

/// Every address on any interface that carries xlb's mark, with its
/// interface index.
pub fn marked_anywhere() -> Result<Vec<(u32, IpAddr)>, NetlinkError> {
    marked_where(|_| true)
}

fn marked_where(on: impl Fn(u32) -> bool) -> Result<Vec<(u32, IpAddr)>, NetlinkError> {
    let mut found = Vec::new();
    each_address("listing addresses", |a| {
        let ours = a
            .attributes
            .iter()
            .any(|at| matches!(at, AddressAttribute::Protocol(p) if u8::from(*p) == XLB_PROTO));
        if let (true, true, Some(ip)) = (on(a.header.index), ours, local(a)) {
            found.push((a.header.index, ip));
        }
    })?;
    found.sort();
    found.dedup();
    Ok(found)
}

/// The global-scope addresses of interface `ifindex` (what `ip addr show
/// dev X scope global` lists), IPv4 first, each family in the kernel's
/// order. The VIPs xlb holds there are among them: see [`marked`].
pub fn global(ifindex: u32) -> Result<Vec<IpAddr>, NetlinkError> {
    let mut found = Vec::new();
    each_address("listing an interface's addresses", |a| {
        if a.header.index == ifindex && a.header.scope == AddressScope::Universe {
            found.extend(local(a));
        }
    })?;
    // Stable: the kernel's order within a family stays.
    found.sort_by_key(IpAddr::is_ipv6);
    Ok(found)
}

/// The address itself: `IFA_LOCAL` where there is one (on a point-to-point
/// link `IFA_ADDRESS` is the peer's), else `IFA_ADDRESS` (IPv6 sends only
/// that).
fn local(a: &AddressMessage) -> Option<IpAddr> {
    let attr = |want_local: bool| {
        a.attributes.iter().find_map(|at| match at {
            AddressAttribute::Local(ip) if want_local => Some(*ip),
            AddressAttribute::Address(ip) if !want_local => Some(*ip),
            _ => None,
        })
    };
    attr(true).or_else(|| attr(false))
}

/// Hand every address the kernel holds, on any interface, to `each`.
fn each_address(
    what: &'static str,
    mut each: impl FnMut(&AddressMessage),
) -> Result<(), NetlinkError> {
    dump(
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        what,
        |m| {
            if let RouteNetlinkMessage::NewAddress(a) = m {
                each(&a);
            }
        },
    )
}
