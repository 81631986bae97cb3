//! Addresses held over rtnetlink, in a network namespace of the test's own
//! (made with `unshare` on one thread, gone with it: nothing to clean up).

use std::net::IpAddr;

use xlb_io::kernel::addr::{self, Added, Removed};
use xlb_testkit::in_fresh_netns;

fn lo_addrs() -> String {
    let out = std::process::Command::new("ip")
        .args(["-o", "addr", "show", "dev", "lo"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_address_is_added_once_and_removed_once() {
    in_fresh_netns(|| {
        // lo is index 1 in every namespace.
        let vip: IpAddr = "192.0.2.10".parse().expect("ip");
        let vip6: IpAddr = "2001:db8::10".parse().expect("ip");
        assert_eq!(addr::add(1, vip).expect("add"), Added::New);
        assert_eq!(addr::add(1, vip).expect("add"), Added::Existed);
        assert_eq!(addr::add(1, vip6).expect("add"), Added::New);
        let shown = lo_addrs();
        assert!(shown.contains("192.0.2.10/32"), "{shown}");
        assert!(shown.contains("2001:db8::10/128"), "{shown}");
        assert_eq!(addr::del(1, vip).expect("del"), Removed::Gone);
        assert_eq!(addr::del(1, vip).expect("del"), Removed::Absent);
        assert_eq!(addr::del(1, vip6).expect("del"), Removed::Gone);
        let shown = lo_addrs();
        assert!(
            !shown.contains("192.0.2.10") && !shown.contains("2001:db8::10"),
            "{shown}"
        );
        assert!(addr::add(9999, vip).is_err(), "no such interface");
    });
}

#[test]
fn addresses_xlb_added_carry_its_mark_and_others_do_not() {
    in_fresh_netns(|| {
        let ours: IpAddr = "192.0.2.20".parse().expect("ip");
        let ours6: IpAddr = "2001:db8::20".parse().expect("ip");
        assert_eq!(addr::add(1, ours).expect("add"), Added::New);
        assert_eq!(addr::add(1, ours6).expect("add"), Added::New);
        // An operator's address, added without the mark.
        let out = std::process::Command::new("ip")
            .args(["addr", "add", "192.0.2.21/32", "dev", "lo"])
            .output()
            .expect("ip");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(addr::marked(1).expect("dump"), vec![ours, ours6]);
        assert_eq!(addr::del(1, ours).expect("del"), Removed::Gone);
        assert_eq!(addr::marked(1).expect("dump"), vec![ours6]);
        assert_eq!(addr::marked(9999).expect("dump"), Vec::<IpAddr>::new());
    });
}

#[test]
fn a_leased_address_outlives_its_lease_only_while_renewed() {
    use std::time::{Duration, Instant};
    in_fresh_netns(|| {
        let kept: IpAddr = "192.0.2.30".parse().expect("ip");
        let lapsed: IpAddr = "192.0.2.31".parse().expect("ip");
        let lease = Duration::from_secs(1);
        assert_eq!(addr::add_leased(1, kept, lease).expect("add"), Added::New);
        assert_eq!(addr::add_leased(1, lapsed, lease).expect("add"), Added::New);
        // The kernel checks lifetimes on a timer with up to ~1 s of slack.
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            addr::renew(1, kept, lease).expect("renew");
            std::thread::sleep(Duration::from_millis(250));
        }
        let shown = lo_addrs();
        assert!(shown.contains("192.0.2.30/32"), "renewed: {shown}");
        assert!(!shown.contains("192.0.2.31"), "lapsed: {shown}");
        assert_eq!(addr::marked(1).expect("dump"), vec![kept]);
    });
}
