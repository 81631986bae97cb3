//! Fuzz target for the checked views: every `new_checked` on arbitrary bytes,
//! then every accessor (none may panic once `check_len` passed), the IPv6
//! extension-header walker, and the setters on a copy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xlb_dataplane::wire::{icmp, ipv4, ipv6, sctp, tcp, udp};

fuzz_target!(|data: &[u8]| {
    if let Ok(mut ip) = ipv4::Packet::new_checked(data.to_vec()) {
        let _ = (
            ip.tos(),
            ip.total_len(),
            ip.ident(),
            ip.dont_frag(),
            ip.more_frags(),
        );
        let _ = (
            ip.frag_offset(),
            ip.ttl(),
            ip.protocol(),
            ip.checksum(),
            ip.src_addr(),
        );
        let _ = (ip.dst_addr(), ip.options().len(), ip.payload().len());
        ip.fill_checksum();
        assert!(ip.verify_checksum());
        ip.decrement_ttl();
        assert!(ip.verify_checksum());
        let _ = ip.payload_mut().len();
    }
    if let Ok(mut ip) = ipv6::Packet::new_checked(data.to_vec()) {
        let _ = (
            ip.traffic_class(),
            ip.flow_label(),
            ip.payload_len(),
            ip.next_header(),
        );
        let _ = (
            ip.hop_limit(),
            ip.src_addr(),
            ip.dst_addr(),
            ip.payload().len(),
        );
        if let Ok(e) = ip.ext() {
            assert!(e.l4_off <= ip.payload().len());
            assert!(e.count <= ipv6::MAX_EXT_HEADERS);
        }
        ip.set_hop_limit(1);
        let _ = ip.payload_mut().len();
    }
    if let Some((&first, rest)) = data.split_first() {
        if let Ok(e) = ipv6::walk_ext(first, rest) {
            assert!(e.l4_off <= rest.len());
        }
    }
    if let Ok(t) = tcp::Packet::new_checked(data) {
        let _ = (
            t.src_port(),
            t.dst_port(),
            t.seq_number(),
            t.ack_number(),
            t.flags(),
        );
        let _ = (
            t.window(),
            t.checksum(),
            t.urgent(),
            t.options().len(),
            t.payload().len(),
        );
    }
    if let Ok(u) = udp::Packet::new_checked(data) {
        let _ = (
            u.src_port(),
            u.dst_port(),
            u.len(),
            u.is_empty(),
            u.checksum(),
            u.payload().len(),
        );
    }
    if let Ok(mut s) = sctp::Packet::new_checked(data.to_vec()) {
        let _ = (
            s.src_port(),
            s.dst_port(),
            s.verification_tag(),
            s.chunks().len(),
        );
        s.fill_checksum();
        assert!(s.verify_checksum());
    }
    if let Ok(i) = icmp::Packet::new_checked(data) {
        let _ = (
            i.msg_type(),
            i.code(),
            i.checksum(),
            i.echo_id(),
            i.echo_seq(),
        );
        let _ = (i.v4_mtu(), i.v6_mtu(), i.embedded().len());
    }
});
