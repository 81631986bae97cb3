//! Links over rtnetlink (`RTM_GETLINK` for one name, what `ip link show dev
//! X` asks): an interface's index, MAC address, receive queue count and
//! attached XDP program. No process is spawned and nothing else need be
//! installed, so the daemon runs from an image that holds only xlb.
//!
//! Acts on the calling thread's network namespace (the socket's).

use netlink_packet_route::link::{LinkAttribute, LinkMessage, LinkXdp};
use netlink_packet_route::RouteNetlinkMessage;

use super::netlink::{ask, nl_err, NetlinkError};

/// What the kernel says of one interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Link {
    /// Kernel interface index.
    pub ifindex: u32,
    /// Hardware address (`None` for links without one, such as ipip).
    pub mac: Option<[u8; 6]>,
    /// Receive queues the device has allocated (`IFLA_NUM_RX_QUEUES`).
    pub num_rx_queues: Option<u32>,
    /// Id of the XDP program attached in any mode (0: none).
    pub xdp_prog_id: u32,
}

/// The link named `name`; `None` when there is none (the kernel's `ENODEV`).
pub fn get(name: &str) -> Result<Option<Link>, NetlinkError> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    match ask(RouteNetlinkMessage::GetLink(msg))? {
        Ok(RouteNetlinkMessage::NewLink(m)) => Ok(Some(parse(&m))),
        Ok(other) => Err(nl_err(
            "asking for a link",
            format!("unexpected answer {other:?}"),
        )),
        // ENODEV; EINVAL for a name the kernel cannot hold.
        Err(libc::ENODEV | libc::EINVAL) => Ok(None),
        Err(errno) => Err(nl_err(
            "asking for a link",
            std::io::Error::from_raw_os_error(errno),
        )),
    }
}

fn parse(m: &LinkMessage) -> Link {
    let mut link = Link {
        ifindex: m.header.index,
        ..Link::default()
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::Address(b) => link.mac = <[u8; 6]>::try_from(b.as_slice()).ok(),
            LinkAttribute::NumRxQueues(n) => link.num_rx_queues = Some(*n),
            LinkAttribute::Xdp(xdp) => {
                for x in xdp {
                    if let LinkXdp::ProgId(id) = x {
                        link.xdp_prog_id = *id;
                    }
                }
            }
            _ => {}
        }
    }
    link
}
