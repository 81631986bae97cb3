//! What `netinfo` reads over rtnetlink, checked against what iproute2
//! (`ip -j`) shows for the same links, in a network namespace of the test's
//! own (made with `unshare` on one thread, gone with it: nothing to clean up).

use std::net::IpAddr;
use std::process::Command;

use serde_json::Value;
use xlb_io::kernel::netinfo::{self, NetInfoError};
use xlb_testkit::in_fresh_netns;

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip_json(args: &[&str]) -> Value {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    serde_json::from_str(&ip(&all)).expect("ip -j prints JSON")
}

#[test]
fn links_and_addresses_match_iproute2() {
    in_fresh_netns(|| {
        ip(&[
            "link",
            "add",
            "ni0",
            "numrxqueues",
            "3",
            "type",
            "veth",
            "peer",
            "name",
            "ni1",
        ]);
        ip(&["link", "set", "ni0", "up"]);
        for cidr in ["10.9.0.1/24", "10.9.1.1/24", "2001:db8:9::1/64"] {
            ip(&["addr", "add", cidr, "dev", "ni0", "nodad"]);
        }
        // Not global: left out, as the ports' own addresses never are these.
        ip(&["addr", "add", "10.9.2.1/24", "dev", "ni0", "scope", "link"]);
        // Point to point: the peer is not ours.
        ip(&["addr", "add", "10.9.3.1", "peer", "10.9.3.2", "dev", "ni0"]);

        let info = netinfo::iface_info("ni0").expect("ni0");
        let link = &ip_json(&["-d", "link", "show", "dev", "ni0"])[0];
        assert_eq!(
            u64::from(info.ifindex),
            link["ifindex"].as_u64().expect("ifindex")
        );
        assert_eq!(
            info.mac.to_string(),
            link["address"].as_str().expect("address")
        );
        assert_eq!(
            u64::from(info.rx_queues),
            link["num_rx_queues"].as_u64().expect("queues")
        );
        let mut want: Vec<IpAddr> = ip_json(&["addr", "show", "dev", "ni0", "scope", "global"])[0]
            ["addr_info"]
            .as_array()
            .expect("addr_info")
            .iter()
            // iproute2 prints the addresses its filter leaves out as `{}`.
            .filter_map(|a| a["local"].as_str())
            .map(|a| a.parse().expect("ip"))
            .collect();
        want.sort_by_key(IpAddr::is_ipv6);
        assert_eq!(info.addrs, want);
        let v: Vec<IpAddr> = ["10.9.0.1", "10.9.1.1", "10.9.3.1", "2001:db8:9::1"]
            .iter()
            .map(|a| a.parse().expect("ip"))
            .collect();
        assert_eq!(info.addrs, v);
        assert_eq!(
            u64::from(netinfo::ifindex("ni1").expect("ni1")),
            ip_json(&["link", "show", "dev", "ni1"])[0]["ifindex"]
                .as_u64()
                .expect("ifindex")
        );
        assert_eq!(netinfo::xdp_prog_id("ni0").expect("ni0"), 0);
        assert!(matches!(
            netinfo::iface_info("ni9"),
            Err(NetInfoError::NoInterface(n)) if n == "ni9"
        ));
    });
}
