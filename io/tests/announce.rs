//! Announcements reach a real kernel: a neighbour that still points at an
//! old MAC for an address is moved to the announcer's MAC, for IPv4 (ARP)
//! and IPv6 (NA). In a network namespace of the test's own (made with
//! `unshare` on one thread, gone with it).

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use xlb_dataplane::net::MacAddr;
use xlb_io::kernel::announce::Announcer;
use xlb_io::kernel::netinfo;
use xlb_testkit::in_fresh_netns;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn neigh_mac(addr: &str, dev: &str) -> String {
    let out = Command::new("ip")
        .args(["neigh", "show", addr, "dev", dev])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn gratuitous_arp_and_unsolicited_na_move_a_neighbour_entry() {
    in_fresh_netns(|| {
        ip(&[
            "link",
            "add",
            "ann-a",
            "address",
            "02:00:00:00:0a:01",
            "type",
            "veth",
            "peer",
            "name",
            "ann-b",
        ]);
        ip(&["link", "set", "ann-a", "up"]);
        ip(&["link", "set", "ann-b", "up"]);
        ip(&["addr", "add", "192.0.2.2/24", "dev", "ann-b"]);
        ip(&["addr", "add", "2001:db8::2/64", "dev", "ann-b", "nodad"]);
        // The neighbour still believes the addresses are at an old MAC.
        for vip in ["192.0.2.10", "2001:db8::10"] {
            ip(&[
                "neigh",
                "replace",
                vip,
                "lladdr",
                "02:00:00:00:0b:99",
                "dev",
                "ann-b",
                "nud",
                "stale",
            ]);
        }
        let mac = MacAddr([2, 0, 0, 0, 0x0a, 1]);
        let a = netinfo::ifindex("ann-a").expect("ifindex");
        let announcer = Announcer::new().expect("AF_PACKET socket");
        for vip in ["192.0.2.10", "2001:db8::10"] {
            let addr: IpAddr = vip.parse().expect("ip");
            announcer.announce(a, mac, addr).expect("sent");
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                let shown = neigh_mac(vip, "ann-b");
                if shown.contains("02:00:00:00:0a:01") {
                    break;
                }
                assert!(Instant::now() < deadline, "{vip} still at: {shown}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
}
