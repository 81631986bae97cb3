/* SPDX-License-Identifier: Apache-2.0 */
/* xlb XDP steering program: map key/value layouts (mirrored in io/src/xdp/maps.rs). */
#ifndef XLB_STRUCTS_H
#define XLB_STRUCTS_H

#include <linux/types.h>

/* Key of `vip_ports` (destination of client traffic) and `backends` (source of
 * DNAT return traffic). 20 bytes, no implicit padding. */
struct xlb_flow_key {
	/* IPv6 address, or IPv4-mapped (::ffff:a.b.c.d) for IPv4. */
	__u8 addr[16];
	/* IP protocol number as on the wire (ICMPv6 is 58). */
	__u8 proto;
	__u8 pad;
	/* Port in network byte order; XLB_PORT_ANY = every port. ICMP uses 0. */
	__be16 port;
};

/* Key of `snat_addrs` and `vip_addrs`. */
struct xlb_addr_key {
	__u8 addr[16];
};

/* Key of `frag_ids`: one datagram (addresses, protocol, identification). */
struct xlb_frag_key {
	__u8 src[16];
	__u8 dst[16];
	__u32 id;  /* IPv4 (16 bits) or IPv6 (32) identification, host order */
	__u8 proto;
	__u8 pad[3];
};

/* Single entry of the `config` array. Host byte order. */
struct xlb_config {
	/* Source-NAT port range, inclusive. min > max disables SNAT steering. */
	__u16 nat_port_min;
	__u16 nat_port_max;
	__u32 flags;
};

/* One 802.1Q / 802.1ad tag after the MAC addresses. */
struct xlb_vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

/* What the parser found. */
struct xlb_pkt {
	struct xlb_flow_key dst; /* destination addr/proto/port */
	struct xlb_flow_key src; /* source addr/proto/port */
	__u8 l4_known;           /* ports (or ICMP header) were parsed */
	__u8 is_fragment;        /* non-first fragment: no L4 header */
	__u8 first_fragment;     /* offset 0 with more fragments */
	__u32 frag_id;           /* identification of a fragment, host order */
	__u8 icmp_type;
	__u8 icmp_error_ours;    /* ICMP error quoting a packet from an SNAT addr:port in range */
	__u16 icmp_echo_id;      /* host order, for echo replies */
	__u16 inner_sport;       /* ICMP error: quoted packet's source port, host order */
	struct xlb_addr_key inner_src; /* ICMP error: quoted packet's source address */
};

#endif
