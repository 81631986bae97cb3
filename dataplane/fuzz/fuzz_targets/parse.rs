//! Fuzz target for the summarising parser: arbitrary bytes into `wire::parse`
//! and `wire::parse_icmp_inner`, then the checksum fillers and incremental
//! updates on a copy. Besides "no panic", it checks that offsets stay inside
//! the frame, that filled checksums verify, and that an incremental address
//! rewrite keeps them valid (RFC 1624 against RFC 1071).
#![no_main]

use libfuzzer_sys::fuzz_target;
use xlb_dataplane::net::Ip16;
use xlb_dataplane::wire::{self, ipv4, nat, rewrite, verify_l4_checksum, Frag};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = wire::parse(data) else {
        return;
    };
    assert!(usize::from(m.l3_off) <= data.len());
    if m.is_ip() {
        assert!(usize::from(m.l4_off) + usize::from(m.l4_len) <= data.len());
        if m.frag == Frag::Later {
            assert_eq!((m.sport, m.dport, m.tcp_flags), (0, 0, 0));
        }
    }
    if let Some(i) = wire::parse_icmp_inner(data, &m) {
        assert!(i.l3_off < i.l4_off);
        assert!(usize::from(i.l4_off) + usize::from(i.l4_avail) <= data.len());
        // Translating the embedded packet keeps a valid outer checksum valid.
        let mut c = data.to_vec();
        if rewrite::fill_l4_checksum(&mut c, &m) {
            let new = if m.v4 { Ip16::v4([10, 9, 8, 7]) } else { m.dst };
            nat::set_inner_addr(&mut c, &m, &i, nat::Side::Dst, new);
            nat::set_inner_port(&mut c, &m, &i, nat::Side::Dst, 4242);
            assert!(verify_l4_checksum(&c, &m));
        }
    }

    let mut c = data.to_vec();
    let v4_filled = rewrite::fill_ipv4_checksum(&mut c, &m);
    let l4_filled = rewrite::fill_l4_checksum(&mut c, &m);
    // Checksums are not part of the summary: filling them changes nothing in it.
    assert_eq!(wire::parse(&c), Ok(m));
    if l4_filled {
        assert!(verify_l4_checksum(&c, &m));
    }
    if v4_filled {
        let ip = ipv4::Packet::new_checked(&c[usize::from(m.l3_off)..]).expect("parsed as IPv4");
        assert!(ip.verify_checksum());
    }

    // Rewrite the destination address incrementally, as DNAT does.
    if m.is_ip() {
        let (at, n) = if m.v4 { (16, 4) } else { (24, 16) };
        let at = usize::from(m.l3_off) + at;
        let old = c[at..at + n].to_vec();
        let new: Vec<u8> = old.iter().map(|b| b ^ 0x5a).collect();
        c[at..at + n].copy_from_slice(&new);
        if m.v4 {
            assert!(rewrite::update_ipv4_header(
                &mut c,
                usize::from(m.l3_off),
                &old,
                &new
            ));
        }
        rewrite::update_l4_for_addr(&mut c, &m, &old, &new);
        let m2 = wire::parse(&c).expect("an address rewrite keeps the frame parseable");
        if l4_filled {
            assert!(verify_l4_checksum(&c, &m2));
        }
        if v4_filled {
            let ip = ipv4::Packet::new_checked(&c[usize::from(m.l3_off)..]).expect("IPv4");
            assert!(ip.verify_checksum());
        }
    }
});
