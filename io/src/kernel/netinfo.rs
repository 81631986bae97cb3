//! What the kernel knows about interfaces, routes and neighbours, turned into
//! the dataplane's [`PortSpec`] and [`NextHop`] values. Control-plane only.
//!
//! Everything is asked in the calling thread's network namespace (never via
//! sysfs, which shows the namespace it was mounted in).
//!
//! Everything comes from rtnetlink: links ([`link`]) and addresses
//! ([`addr`]) when something starts, routes ([`route`], one request per
//! lookup) and neighbours ([`neigh`], which can also watch for changes)
//! every few seconds and per endpoint. No process is spawned, so nothing
//! but xlb need be installed.

use std::collections::HashMap;
use std::net::{IpAddr, UdpSocket};
use std::time::{Duration, Instant};

use xlb_dataplane::frame::PortId;
use xlb_dataplane::net::MacAddr;
use xlb_dataplane::tables::{NextHop, PortSpec};

use super::netlink::NetlinkError;
use super::{addr, link, neigh, route, sys};

/// Why a kernel query failed.
#[derive(Debug, thiserror::Error)]
pub enum NetInfoError {
    /// no such network interface
    #[error("no network interface named {0:?}")]
    NoInterface(String),
    /// an rtnetlink request failed
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

/// An interface as the runtime sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceInfo {
    /// Name.
    pub name: String,
    /// Kernel interface index.
    pub ifindex: u32,
    /// MAC address.
    pub mac: MacAddr,
    /// Global-scope addresses, IPv4 first.
    pub addrs: Vec<IpAddr>,
    /// Number of rx queues (ethtool channels).
    pub rx_queues: u32,
}

impl IfaceInfo {
    /// The dataplane's view of this interface as port `id`.
    pub fn port_spec(&self, id: PortId) -> PortSpec {
        PortSpec {
            id,
            name: self.name.clone(),
            mac: self.mac,
            addrs: self.addrs.clone(),
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() < 16 && !name.contains(['/', ' ', '\0'])
}

fn link(name: &str) -> Result<link::Link, NetInfoError> {
    if !valid_name(name) {
        return Err(NetInfoError::NoInterface(name.to_string()));
    }
    link::get(name)?.ok_or_else(|| NetInfoError::NoInterface(name.to_string()))
}

/// The kernel's interface index of `name` (in the calling thread's namespace).
pub fn ifindex(name: &str) -> Result<u32, NetInfoError> {
    Ok(link(name)?.ifindex)
}

/// Number of rx queues of `name`: the ethtool channel count (rx + combined),
/// else the device's allocated queue count.
pub fn rx_queues(name: &str) -> Result<u32, NetInfoError> {
    if let Ok((rx, _tx, combined)) = sys::ethtool_channels(name) {
        if rx + combined > 0 {
            return Ok(rx + combined);
        }
    }
    Ok(link(name)?.num_rx_queues.unwrap_or(1).max(1))
}

/// Id of the XDP program attached to `name` in any mode (0: none).
pub fn xdp_prog_id(name: &str) -> Result<u32, NetInfoError> {
    Ok(link(name)?.xdp_prog_id)
}

/// Everything about interface `name`.
pub fn iface_info(name: &str) -> Result<IfaceInfo, NetInfoError> {
    let l = link(name)?;
    let ifindex = l.ifindex;
    let mac = l.mac.map(MacAddr).unwrap_or_default();
    // The VIPs xlb holds on the interface (IPv6) are not the port's own.
    let held = addr::marked(ifindex).unwrap_or_default();
    let mut addrs = addr::global(ifindex)?;
    addrs.retain(|a| !held.contains(a));
    Ok(IfaceInfo {
        name: name.to_string(),
        ifindex,
        mac,
        addrs,
        rx_queues: rx_queues(name)?,
    })
}

/// Where the kernel would send a packet to `dst`: (device, neighbour address).
/// `None` if there is no route out of an interface. Asked over rtnetlink.
pub fn route_to(dst: IpAddr) -> Result<Option<(String, IpAddr)>, NetInfoError> {
    Ok(route::get(dst)?.and_then(|(oif, via)| Some((sys::ifname(oif)?, via))))
}

/// The neighbour table: (address, device) -> MAC, for usable entries only.
/// Asked over rtnetlink.
pub fn neighbours() -> Result<HashMap<(IpAddr, String), MacAddr>, NetInfoError> {
    let mut names: HashMap<u32, Option<String>> = HashMap::new();
    let mut table = HashMap::new();
    for n in neigh::dump()? {
        let Some(mac) = n.mac else { continue };
        let name = names
            .entry(n.ifindex)
            .or_insert_with(|| sys::ifname(n.ifindex));
        if let Some(name) = name {
            table.insert((n.addr, name.clone()), mac);
        }
    }
    Ok(table)
}

/// Ask the kernel to resolve `ip` (it sends ARP / neighbour solicitation):
/// one empty UDP datagram to the discard port. Best effort.
pub fn trigger_resolution(ip: IpAddr) {
    let bind: IpAddr = if ip.is_ipv4() {
        IpAddr::from([0u8; 4])
    } else {
        IpAddr::from([0u16; 8])
    };
    if let Ok(s) = UdpSocket::bind((bind, 0)) {
        let _ = s.send_to(&[], (ip, 9));
    }
}

/// The next hop of every address in `dsts` that leaves through one of `ports`
/// (matched by name). Missing neighbours are resolved, waiting at most `wait`;
/// addresses still unresolved (or routed elsewhere) are left out, so the
/// dataplane counts their packets as `NoNeighbor`.
pub fn next_hops(
    dsts: &[IpAddr],
    ports: &[PortSpec],
    wait: Duration,
) -> Result<Vec<(IpAddr, NextHop)>, NetInfoError> {
    let mut wanted: Vec<(IpAddr, PortId, String, IpAddr)> = Vec::new();
    for &dst in dsts {
        let Some((dev, via)) = route_to(dst)? else {
            continue;
        };
        let Some(port) = ports.iter().find(|p| p.name == dev) else {
            tracing::debug!(%dst, dev, "route leaves through a port xlb does not serve");
            continue;
        };
        wanted.push((dst, port.id, dev, via));
    }
    let deadline = Instant::now() + wait;
    let mut triggered = false;
    // Bounded: at most wait / 20 ms rounds.
    loop {
        let table = neighbours()?;
        let missing: Vec<IpAddr> = wanted
            .iter()
            .filter(|(_, _, dev, via)| !table.contains_key(&(*via, dev.clone())))
            .map(|w| w.3)
            .collect();
        if missing.is_empty() || Instant::now() >= deadline {
            return Ok(wanted
                .iter()
                .filter_map(|(dst, port, dev, via)| {
                    let mac = *table.get(&(*via, dev.clone()))?;
                    Some((*dst, NextHop { mac, port: *port }))
                })
                .collect());
        }
        if !triggered {
            for ip in &missing {
                trigger_resolution(*ip);
            }
            triggered = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_as_the_kernel_has_it() {
        let lo = iface_info("lo").expect("lo");
        assert_eq!(lo.ifindex, 1);
        assert_eq!(lo.mac, MacAddr::default());
        // 127.0.0.1 is host scope, ::1 too: no global address.
        assert!(lo.addrs.iter().all(|a| !a.is_loopback()), "{:?}", lo.addrs);
        assert!(lo.rx_queues >= 1);
        assert_eq!(xdp_prog_id("lo").expect("lo"), 0);
    }

    #[test]
    fn loopback_exists_and_bogus_names_are_reported() {
        assert!(ifindex("lo").is_ok());
        assert!(matches!(
            ifindex("no-such-if0"),
            Err(NetInfoError::NoInterface(_))
        ));
        assert!(matches!(ifindex("../x"), Err(NetInfoError::NoInterface(_))));
    }
}
