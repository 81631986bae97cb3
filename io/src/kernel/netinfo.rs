//! What the kernel knows about interfaces, routes and neighbours, turned into
//! the dataplane's [`PortSpec`] and [`NextHop`] values. Control-plane only.
//!
//! Everything is asked in the calling thread's network namespace (never via
//! sysfs, which shows the namespace it was mounted in).
//!
//! Routes and neighbours, which the next-hop refresh asks for every few
//! seconds and per endpoint, come from rtnetlink ([`route`],
//! one request per lookup; [`neigh`], which can also watch for
//! changes). Links and addresses, read when something starts, still come from
//! `ip -j` (iproute2 JSON): a process spawn per query, and iproute2 must be
//! installed (scripts/deps.sh installs it), but the output is easy to check
//! by hand with the same commands. They can move to rtnetlink
//! (`netlink-packet-route` is already a dependency) if they are ever asked
//! often.

use std::collections::HashMap;
use std::net::{IpAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Deserialize;
use xlb_dataplane::frame::PortId;
use xlb_dataplane::net::MacAddr;
use xlb_dataplane::tables::{NextHop, PortSpec};

use super::netlink::NetlinkError;
use super::{neigh, route, sys};

/// Why a kernel query failed.
#[derive(Debug, thiserror::Error)]
pub enum NetInfoError {
    /// no such network interface
    #[error("no network interface named {0:?}")]
    NoInterface(String),
    /// running `ip` failed (iproute2 missing?)
    #[error("running `ip {args}`: {detail}")]
    Ip {
        /// Arguments.
        args: String,
        /// stderr or the spawn error.
        detail: String,
    },
    /// an rtnetlink request failed
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// `ip -j` printed something unexpected
    #[error("parsing `ip {args}` output: {source}")]
    Parse {
        /// Arguments.
        args: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
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

#[derive(Deserialize)]
struct LinkEntry {
    ifindex: u32,
    address: Option<String>,
    num_rx_queues: Option<u32>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() < 16 && !name.contains(['/', ' ', '\0'])
}

fn link(name: &str) -> Result<LinkEntry, NetInfoError> {
    if !valid_name(name) {
        return Err(NetInfoError::NoInterface(name.to_string()));
    }
    let v: Vec<LinkEntry> = ip_json(&["-d", "link", "show", "dev", name]).map_err(|e| match e {
        NetInfoError::Ip { .. } => NetInfoError::NoInterface(name.to_string()),
        other => other,
    })?;
    v.into_iter()
        .next()
        .ok_or_else(|| NetInfoError::NoInterface(name.to_string()))
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

fn ip_json<T: for<'de> Deserialize<'de>>(args: &[&str]) -> Result<T, NetInfoError> {
    let joined = args.join(" ");
    let out = Command::new("ip")
        .arg("-j")
        .args(args)
        .output()
        .map_err(|e| NetInfoError::Ip {
            args: joined.clone(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(NetInfoError::Ip {
            args: joined,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let text = if out.stdout.iter().all(|b| b.is_ascii_whitespace()) {
        b"[]".to_vec()
    } else {
        out.stdout
    };
    serde_json::from_slice(&text).map_err(|source| NetInfoError::Parse {
        args: joined,
        source,
    })
}

#[derive(Deserialize)]
struct AddrEntry {
    #[serde(default)]
    addr_info: Vec<AddrInfo>,
}

#[derive(Deserialize)]
struct AddrInfo {
    local: Option<IpAddr>,
    scope: Option<String>,
}

/// Parse `ip -j addr show dev X`: global addresses, IPv4 first.
fn parse_addrs(entries: &[AddrEntry]) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = entries
        .iter()
        .flat_map(|e| e.addr_info.iter())
        .filter(|a| a.scope.as_deref().unwrap_or("global") == "global")
        .filter_map(|a| a.local)
        .collect();
    v.sort_by_key(|a| a.is_ipv6());
    v
}

/// Everything about interface `name`.
pub fn iface_info(name: &str) -> Result<IfaceInfo, NetInfoError> {
    let l = link(name)?;
    let ifindex = l.ifindex;
    let mac = l
        .address
        .as_deref()
        .and_then(|a| a.parse().ok())
        .unwrap_or_default();
    let entries: Vec<AddrEntry> = ip_json(&["addr", "show", "dev", name])?;
    // The VIPs xlb holds on the interface (IPv6) are not the port's own.
    let held = super::addr::marked(ifindex).unwrap_or_default();
    let mut addrs = parse_addrs(&entries);
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
    fn parses_ip_json_addr_output() {
        let addr = r#"[{"ifindex":5,"ifname":"x0","addr_info":[
            {"family":"inet6","local":"fe80::1","prefixlen":64,"scope":"link"},
            {"family":"inet6","local":"2001:db8::1","prefixlen":64,"scope":"global"},
            {"family":"inet","local":"10.0.0.1","prefixlen":24,"scope":"global"}]}]"#;
        let e: Vec<AddrEntry> = serde_json::from_str(addr).expect("valid json");
        assert_eq!(
            parse_addrs(&e),
            vec![
                "10.0.0.1".parse::<IpAddr>().expect("ip"),
                "2001:db8::1".parse().expect("ip")
            ]
        );
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
