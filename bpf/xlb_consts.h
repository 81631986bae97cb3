/* SPDX-License-Identifier: Apache-2.0 */
/* xlb XDP steering program: constants shared with user space (io/src/xdp/
 * mirrors them; io/tests/c_headers.rs fails when the two disagree). */
#ifndef XLB_CONSTS_H
#define XLB_CONSTS_H

/* Most AF_XDP sockets (= rx queues) per interface. */
#define XLB_MAX_QUEUES 64
/* Capacity of the (addr, proto, port) maps. Port ranges longer than
 * XLB_RANGE_WILDCARD_MIN ports use one wildcard entry (port 0) instead;
 * user space writes the keys, so only it reads that number. */
#define XLB_MAX_FLOW_KEYS 262144
#define XLB_RANGE_WILDCARD_MIN 256
#define XLB_MAX_ADDRS 4096
/* Datagrams in flight whose later fragments follow a steered first one. */
#define XLB_MAX_FRAGS 8192

/* Wildcard port in vip_ports / backends keys: "any port of this proto". */
#define XLB_PORT_ANY 0

/* IP protocol numbers xlb handles (dataplane/tests/c_consts.rs checks them
 * against dataplane/src/wire/ip.rs). */
#define XLB_IPPROTO_ICMP 1
#define XLB_IPPROTO_TCP 6
#define XLB_IPPROTO_UDP 17
#define XLB_IPPROTO_ICMPV6 58
/* IPv6 fragment header (RFC 8200 §4.5). */
#define XLB_IPPROTO_FRAGMENT 44
#define XLB_IPPROTO_SCTP 132

/* ICMP errors that quote a datagram xlb may have translated, by type (RFC 792;
 * RFC 4443 §2.1). The same lists as dataplane/src/wire/icmp.rs
 * (dataplane/tests/c_consts.rs compares them, and the predicates in
 * xlb_parse.h). Source quench (4, deprecated by RFC 6633) and redirect (5,
 * about a gateway on the sender's own link: meaningless across a NAT) quote a
 * datagram too, but are the kernel's. */
#define XLB_ICMP_DEST_UNREACH 3
#define XLB_ICMP_TIME_EXCEEDED 11
#define XLB_ICMP_PARAM_PROBLEM 12
/* ICMPv6 errors 1-4: destination unreachable, packet too big, time exceeded,
 * parameter problem. */
#define XLB_ICMPV6_DEST_UNREACH 1
#define XLB_ICMPV6_PARAM_PROBLEM 4

#define XLB_ETH_P_IP 0x0800
#define XLB_ETH_P_IPV6 0x86DD
#define XLB_ETH_P_8021Q 0x8100
#define XLB_ETH_P_8021AD 0x88A8

/* IPv4 fragment offset mask / more-fragments flag (host order). */
#define XLB_IP_OFFSET 0x1FFF
#define XLB_IP_MF 0x2000

/* Indexes of the per-CPU `stats` array. */
enum xlb_stat {
	/* Not ours: handed to the kernel stack. */
	XLB_STAT_PASS = 0,
	/* To a configured VIP/proto/port (or ICMP to a VIP). */
	XLB_STAT_REDIRECT_VIP = 1,
	/* Return traffic to a source-NAT address within the NAT port range. */
	XLB_STAT_REDIRECT_SNAT = 2,
	/* Return traffic from a DNAT backend endpoint. */
	XLB_STAT_REDIRECT_BACKEND = 3,
	/* Fragment or unparsed IPv6 extension chain to a VIP address, or a later
	 * fragment of a datagram whose first fragment was steered: user space
	 * translates it with its flow, or counts it (DropReason::Fragment /
	 * BadIpv6ExtHeader). */
	XLB_STAT_REDIRECT_UNPARSED = 4,
	/* Ours (also counted by class above), but no AF_XDP socket on this rx
	 * queue: passed to the kernel. */
	XLB_STAT_NO_SOCKET = 5,
	/* Headers cut short: passed to the kernel, which drops them. */
	XLB_STAT_MALFORMED = 6,
	XLB_STAT_MAX = 8,
};

#endif
