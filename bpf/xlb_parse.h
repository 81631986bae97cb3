/* SPDX-License-Identifier: Apache-2.0 */
/* xlb XDP steering program: header parsing. Every header access is preceded by
 * a check against data_end; nothing here writes to the packet. */
#ifndef XLB_PARSE_H
#define XLB_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "xlb_consts.h"
#include "xlb_structs.h"

#define XLB_PARSE_NOT_IP 0
#define XLB_PARSE_OK 1
#define XLB_PARSE_MALFORMED -1

static __always_inline void xlb_addr_v4(__u8 *out, const void *a)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(out + 12, a, 4);
}

/* ICMP errors (the types in xlb_consts.h) quote the offending packet: IP
 * header + at least 8 bytes of it. */
static __always_inline int xlb_icmp4_is_error(__u8 type)
{
	return type == XLB_ICMP_DEST_UNREACH || type == XLB_ICMP_TIME_EXCEEDED ||
	       type == XLB_ICMP_PARAM_PROBLEM;
}

static __always_inline int xlb_icmp6_is_error(__u8 type)
{
	return type >= XLB_ICMPV6_DEST_UNREACH && type <= XLB_ICMPV6_PARAM_PROBLEM;
}

/* Ports are the first four bytes of TCP, UDP and SCTP headers alike. */
static __always_inline int xlb_is_port_proto(__u8 p)
{
	return p == XLB_IPPROTO_TCP || p == XLB_IPPROTO_UDP || p == XLB_IPPROTO_SCTP;
}

/* The quoted packet of an ICMP error starting at `inner` (an IPv4 or IPv6
 * header): record its source address and source port. */
static __always_inline void xlb_parse_quoted(void *inner, void *data_end, int v4,
					     struct xlb_pkt *pkt)
{
	if (v4) {
		struct iphdr *iph = inner;
		if ((void *)(iph + 1) > data_end)
			return;
		__u32 ihl = iph->ihl & 0xf;
		if (ihl < 5 || !xlb_is_port_proto(iph->protocol))
			return;
		__u16 *ports = (void *)iph + ihl * 4;
		if ((void *)(ports + 2) > data_end)
			return;
		xlb_addr_v4(pkt->inner_src.addr, &iph->saddr);
		pkt->inner_sport = bpf_ntohs(ports[0]);
		pkt->icmp_error_ours = 1; /* candidate; the caller checks address and range */
	} else {
		struct ipv6hdr *ip6 = inner;
		if ((void *)(ip6 + 1) > data_end)
			return;
		if (!xlb_is_port_proto(ip6->nexthdr))
			return;
		__u16 *ports = (void *)(ip6 + 1);
		if ((void *)(ports + 2) > data_end)
			return;
		__builtin_memcpy(pkt->inner_src.addr, &ip6->saddr, 16);
		pkt->inner_sport = bpf_ntohs(ports[0]);
		pkt->icmp_error_ours = 1;
	}
}

/* L4: ports for TCP/UDP/SCTP, type/id (and the quoted packet) for ICMP. */
static __always_inline int xlb_parse_l4(void *l4, void *data_end, __u8 proto, int v4,
					struct xlb_pkt *pkt)
{
	if (xlb_is_port_proto(proto)) {
		__be16 *ports = l4;
		if ((void *)(ports + 2) > data_end)
			return XLB_PARSE_MALFORMED;
		pkt->src.port = ports[0];
		pkt->dst.port = ports[1];
		pkt->l4_known = 1;
		return XLB_PARSE_OK;
	}
	if ((v4 && proto == XLB_IPPROTO_ICMP) || (!v4 && proto == XLB_IPPROTO_ICMPV6)) {
		/* type, code, checksum, then id/sequence (echo) or unused (errors). */
		__u8 *icmp = l4;
		if ((void *)(icmp + 8) > data_end)
			return XLB_PARSE_MALFORMED;
		pkt->icmp_type = icmp[0];
		pkt->icmp_echo_id = ((__u16)icmp[4] << 8) | icmp[5];
		pkt->l4_known = 1;
		if (v4 ? xlb_icmp4_is_error(icmp[0]) : xlb_icmp6_is_error(icmp[0]))
			xlb_parse_quoted(icmp + 8, data_end, v4, pkt);
		return XLB_PARSE_OK;
	}
	/* Another protocol (or an IPv6 extension header): l4_known stays 0. */
	return XLB_PARSE_OK;
}

static __always_inline int xlb_parse(struct xdp_md *ctx, struct xlb_pkt *pkt)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	void *l3;

	if ((void *)(eth + 1) > data_end)
		return XLB_PARSE_MALFORMED;
	__u16 h_proto = bpf_ntohs(eth->h_proto);
	l3 = eth + 1;
	if (h_proto == XLB_ETH_P_8021Q || h_proto == XLB_ETH_P_8021AD) {
		struct xlb_vlan_hdr *vlan = l3;
		if ((void *)(vlan + 1) > data_end)
			return XLB_PARSE_MALFORMED;
		h_proto = bpf_ntohs(vlan->encap_proto);
		l3 = vlan + 1;
	}

	if (h_proto == XLB_ETH_P_IP) {
		struct iphdr *iph = l3;
		if ((void *)(iph + 1) > data_end)
			return XLB_PARSE_MALFORMED;
		__u32 ihl = iph->ihl & 0xf;
		if (ihl < 5)
			return XLB_PARSE_MALFORMED;
		xlb_addr_v4(pkt->dst.addr, &iph->daddr);
		xlb_addr_v4(pkt->src.addr, &iph->saddr);
		pkt->dst.proto = iph->protocol;
		pkt->src.proto = iph->protocol;
		__u16 frag_off = bpf_ntohs(iph->frag_off);
		pkt->frag_id = bpf_ntohs(iph->id);
		if (frag_off & XLB_IP_OFFSET) {
			/* Non-first fragment: no L4 header to look at. */
			pkt->is_fragment = 1;
			return XLB_PARSE_OK;
		}
		if (frag_off & XLB_IP_MF)
			pkt->first_fragment = 1;
		/* Options skipped via IHL. */
		return xlb_parse_l4((void *)iph + ihl * 4, data_end, iph->protocol, 1, pkt);
	}
	if (h_proto == XLB_ETH_P_IPV6) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > data_end)
			return XLB_PARSE_MALFORMED;
		__builtin_memcpy(pkt->dst.addr, &ip6->daddr, 16);
		__builtin_memcpy(pkt->src.addr, &ip6->saddr, 16);
		pkt->dst.proto = ip6->nexthdr;
		pkt->src.proto = ip6->nexthdr;
		if (ip6->nexthdr == XLB_IPPROTO_FRAGMENT) {
			/* A fragment header right after the fixed one (what a sender's
			 * stack emits): next header, reserved, offset << 3 | M, id. */
			__u8 *fh = (void *)(ip6 + 1);
			if ((void *)(fh + 8) > data_end)
				return XLB_PARSE_MALFORMED;
			__u16 off = ((__u16)fh[2] << 8) | fh[3];
			pkt->frag_id = ((__u32)fh[4] << 24) | ((__u32)fh[5] << 16) |
				       ((__u32)fh[6] << 8) | fh[7];
			pkt->dst.proto = fh[0];
			pkt->src.proto = fh[0];
			if (off & 0xfff8) {
				pkt->is_fragment = 1;
				return XLB_PARSE_OK;
			}
			if (off & 1)
				pkt->first_fragment = 1;
			/* A first fragment too short for its L4 header stays unparsed
			 * (user space counts it if it is to a VIP). */
			if ((void *)(fh + 16) > data_end)
				return XLB_PARSE_OK;
			return xlb_parse_l4(fh + 8, data_end, fh[0], 0, pkt);
		}
		/* Extension headers are not walked here: anything but TCP/UDP/SCTP/ICMPv6
		 * right after the fixed header leaves l4_known = 0, and packets to a VIP
		 * address then go to user space, which walks the chain. */
		return xlb_parse_l4(ip6 + 1, data_end, ip6->nexthdr, 0, pkt);
	}
	return XLB_PARSE_NOT_IP;
}

#endif
