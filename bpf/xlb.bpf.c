/* SPDX-License-Identifier: Apache-2.0 */
/* xlb's XDP steering program.
 *
 * Redirects to the AF_XDP socket of the receiving queue only what xlb owns:
 *  (a) packets to a configured VIP with a matching protocol and port
 *      (ICMP/ICMPv6 to a VIP too, except IPv6 neighbour discovery);
 *  (b) return traffic to a source-NAT address within the NAT port range
 *      (TCP/UDP/SCTP by destination port, ICMP echo replies by id, ICMP errors
 *      by the quoted packet's source address and port);
 *  (c) return traffic from DNAT backends (source addr, proto, port);
 *  and fragments / unparsed IPv6 extension chains addressed to a VIP address,
 *  so that user space counts them under its drop reasons;
 *  (d) later fragments of datagrams whose first fragment was steered
 *  (`frag_ids`), so that user space translates them with their flow.
 * Everything else - ARP, the node's own connections, the API - is XDP_PASS.
 * The program never drops: malformed frames go to the kernel, which drops them.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "xlb_consts.h"
#include "xlb_structs.h"
#include "xlb_maps.h"
#include "xlb_parse.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

static __always_inline void xlb_count(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &stat);
	if (v)
		*v += 1; /* per-CPU slot: no atomics needed */
}

static __always_inline int xlb_in_nat_range(__u16 port)
{
	__u32 zero = 0;
	struct xlb_config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return 0;
	return port >= cfg->nat_port_min && port <= cfg->nat_port_max;
}

/* clang 14 does not inline __builtin_memcmp for BPF: compare by hand. */
static __always_inline int xlb_addr_eq(const __u8 *a, const __u8 *b)
{
	int diff = 0;
#pragma unroll
	for (int i = 0; i < 16; i++)
		diff |= a[i] ^ b[i];
	return diff == 0;
}

/* Exact (addr, proto, port) first, then the (addr, proto, any port) wildcard. */
static __always_inline int xlb_flow_lookup(void *map, struct xlb_flow_key *k)
{
	if (bpf_map_lookup_elem(map, k))
		return 1;
	if (k->port == XLB_PORT_ANY)
		return 0;
	struct xlb_flow_key any = *k;
	any.port = XLB_PORT_ANY;
	return bpf_map_lookup_elem(map, &any) != 0;
}

static __always_inline void xlb_frag_key_of(const struct xlb_pkt *pkt, struct xlb_frag_key *fk)
{
	__builtin_memcpy(fk->src, pkt->src.addr, 16);
	__builtin_memcpy(fk->dst, pkt->dst.addr, 16);
	fk->id = pkt->frag_id;
	fk->proto = pkt->dst.proto;
}

static __always_inline __u32 xlb_classify(struct xlb_pkt *pkt)
{
	struct xlb_addr_key dst_addr;
	__builtin_memcpy(dst_addr.addr, pkt->dst.addr, 16);

	if (!pkt->l4_known || pkt->is_fragment) {
		if (bpf_map_lookup_elem(&vip_addrs, &dst_addr))
			return XLB_STAT_REDIRECT_UNPARSED;
		/* (d) A later fragment of a steered datagram. */
		if (pkt->is_fragment) {
			struct xlb_frag_key fk = {};
			xlb_frag_key_of(pkt, &fk);
			if (bpf_map_lookup_elem(&frag_ids, &fk))
				return XLB_STAT_REDIRECT_UNPARSED;
		}
		return XLB_STAT_PASS;
	}

	__u8 proto = pkt->dst.proto;
	int icmp = proto == XLB_IPPROTO_ICMP || proto == XLB_IPPROTO_ICMPV6;
	/* Neighbour discovery (RFC 4861 types 133-137) always belongs to the kernel. */
	if (proto == XLB_IPPROTO_ICMPV6 && pkt->icmp_type >= 133 && pkt->icmp_type <= 137)
		return XLB_STAT_PASS;

	/* (a) client traffic to a service. ICMP keys use port 0. */
	if (xlb_flow_lookup(&vip_ports, &pkt->dst))
		return XLB_STAT_REDIRECT_VIP;

	/* (b) return traffic to a source-NAT address. */
	if (bpf_map_lookup_elem(&snat_addrs, &dst_addr)) {
		if (!icmp) {
			if (xlb_in_nat_range(bpf_ntohs(pkt->dst.port)))
				return XLB_STAT_REDIRECT_SNAT;
		} else if (pkt->icmp_type == 0 || pkt->icmp_type == 129) {
			/* Echo reply: xlb's echo ids come from the NAT port range. */
			if (xlb_in_nat_range(pkt->icmp_echo_id))
				return XLB_STAT_REDIRECT_SNAT;
		} else if (pkt->icmp_error_ours &&
			   xlb_addr_eq(pkt->inner_src.addr, dst_addr.addr) &&
			   xlb_in_nat_range(pkt->inner_sport)) {
			return XLB_STAT_REDIRECT_SNAT;
		}
	}

	/* (c) return traffic from a DNAT backend. */
	if (!icmp && xlb_flow_lookup(&backends, &pkt->src))
		return XLB_STAT_REDIRECT_BACKEND;

	return XLB_STAT_PASS;
}

SEC("xdp")
int xlb_steer(struct xdp_md *ctx)
{
	struct xlb_pkt pkt = {};
	int r = xlb_parse(ctx, &pkt);

	if (r == XLB_PARSE_MALFORMED) {
		xlb_count(XLB_STAT_MALFORMED);
		return XDP_PASS;
	}
	if (r == XLB_PARSE_NOT_IP) {
		xlb_count(XLB_STAT_PASS);
		return XDP_PASS;
	}
	__u32 stat = xlb_classify(&pkt);
	if (stat == XLB_STAT_PASS) {
		xlb_count(XLB_STAT_PASS);
		return XDP_PASS;
	}
	/* Counted by class even when no socket takes it: NO_SOCKET is a subset. */
	xlb_count(stat);
	if (pkt.first_fragment) {
		/* Its later fragments have no ports: let them follow it (d). */
		struct xlb_frag_key fk = {};
		__u8 one = 1;
		xlb_frag_key_of(&pkt, &fk);
		bpf_map_update_elem(&frag_ids, &fk, &one, BPF_ANY);
	}
	__u32 q = ctx->rx_queue_index;
	if (!bpf_map_lookup_elem(&xsks_map, &q)) {
		xlb_count(XLB_STAT_NO_SOCKET);
		return XDP_PASS;
	}
	return bpf_redirect_map(&xsks_map, q, XDP_PASS);
}

/* For the far end of a veth: XDP_TX / redirect into a veth needs an XDP
 * program on its peer; this one passes everything. */
SEC("xdp")
int xlb_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
