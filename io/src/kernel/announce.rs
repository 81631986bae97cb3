//! Telling the LAN that an address now lives here: a gratuitous ARP request
//! for IPv4 (RFC 5227 §2.4 "announcing"), an unsolicited neighbour
//! advertisement with Override for IPv6 (RFC 4861 §7.2.6), sent as whole
//! frames on an interface through an AF_PACKET socket — no process spawned,
//! nothing to install. The frames come from the dataplane's wire builders.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use xlb_dataplane::net::MacAddr;
use xlb_dataplane::wire::build::{arp_request, unsolicited_na, UNSOLICITED_NA_LEN};

use super::sys;

/// A socket to announce addresses with.
#[derive(Debug)]
pub struct Announcer {
    fd: OwnedFd,
}

impl Announcer {
    /// Open the socket (needs CAP_NET_RAW).
    pub fn new() -> io::Result<Announcer> {
        Ok(Announcer {
            fd: sys::packet_socket()?,
        })
    }

    /// Announce once on interface `ifindex`, whose MAC is `mac`, that `addr`
    /// is here.
    pub fn announce(&self, ifindex: u32, mac: MacAddr, addr: IpAddr) -> io::Result<()> {
        let mut buf = [0u8; UNSOLICITED_NA_LEN];
        let n = match addr {
            IpAddr::V4(a) => arp_request(&mut buf, mac, a.octets(), a.octets()),
            IpAddr::V6(a) => unsolicited_na(&mut buf, mac, a),
        }
        .map_err(|e| io::Error::other(e.to_string()))?;
        sys::send_frame(self.fd.as_raw_fd(), ifindex, &buf[..n])
    }
}
