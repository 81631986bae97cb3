//! Fuzz target for the summarising parser: arbitrary bytes into `wire::parse`
//! and `wire::parse_icmp_inner`, then the checksum fillers and the NAT
//! rewrites on a copy. Besides "no panic", it checks that offsets stay inside
//! the frame, that filled checksums verify, and that the incremental NAT
//! rewrites keep valid checksums valid (RFC 1624 against RFC 1071).
#![no_main]

use libfuzzer_sys::fuzz_target;
use xlb_dataplane::net::Ip16;
use xlb_dataplane::wire::rewrite::{self, Xlat};
use xlb_dataplane::wire::{self, ipv4, verify_l4_checksum, Frag};

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
        // Translating an error (and the packet it quotes) leaves its
        // checksum valid: it is computed afresh.
        let mut c = data.to_vec();
        let x = Xlat {
            src: if m.v4 { Ip16::v4([10, 9, 8, 7]) } else { m.dst },
            dst: m.src,
            sport: 4242,
            dport: 4343,
        };
        rewrite::translate_icmp_error(&mut c, &m, &i, &x);
        let m2 = wire::parse(&c).expect("a translated error still parses");
        assert!(verify_l4_checksum(&c, &m2));
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

    // Rewrite the destination address and port incrementally, as DNAT does.
    if m.is_ip() {
        let mut dst = m.dst;
        dst.0
            .iter_mut()
            .skip(if m.v4 { 12 } else { 0 })
            .for_each(|b| *b ^= 0x5a);
        let x = Xlat {
            src: m.src,
            dst,
            sport: m.sport,
            dport: m.dport ^ 0x5a5a,
        };
        rewrite::rewrite_l3l4(&mut c, &m, &x);
        let m2 = wire::parse(&c).expect("a NAT rewrite keeps the frame parseable");
        // (An ICMPv4 message of zeros alone sums to zero: its checksum is
        // 0xffff, which RFC 1624's update, seeing only the change, cannot
        // tell from 0x0000. No other checksum covers all-zero data: the
        // others cover the pseudo-header, whose protocol is not zero.)
        let l4 = &c[usize::from(m2.l4_off)..usize::from(m2.l4_off) + usize::from(m2.l4_len)];
        let zeros = m2.v4 && m2.proto == wire::proto::ICMP && {
            let (head, rest) = l4.split_at(l4.len().min(2));
            head.iter().chain(rest.iter().skip(2)).all(|&b| b == 0)
        };
        if l4_filled && !zeros {
            assert!(verify_l4_checksum(&c, &m2));
        }
        if v4_filled {
            let ip = ipv4::Packet::new_checked(&c[usize::from(m.l3_off)..]).expect("IPv4");
            assert!(ip.verify_checksum());
        }
    }
});
