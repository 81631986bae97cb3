/* SPDX-License-Identifier: Apache-2.0 */
/* xlb XDP steering program: the maps user space fills (io/src/xdp/maps.rs). */
#ifndef XLB_MAPS_H
#define XLB_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "xlb_consts.h"
#include "xlb_structs.h"

/* rx queue index -> AF_XDP socket. */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, XLB_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks_map SEC(".maps");

/* (VIP, proto, port) a service listens on; port 0 = whole VIP/proto (long ranges, ICMP). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XLB_MAX_FLOW_KEYS);
	__type(key, struct xlb_flow_key);
	__type(value, __u8);
} vip_ports SEC(".maps");

/* Every VIP address: fragments and unparsed IPv6 chains to these go to user space. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XLB_MAX_ADDRS);
	__type(key, struct xlb_addr_key);
	__type(value, __u8);
} vip_addrs SEC(".maps");

/* Datagrams whose first fragment was steered to user space: their later
 * fragments, which carry no ports to match, follow it. LRU, since nothing
 * says when a datagram is complete; each program (interface) has its own,
 * as a datagram's fragments arrive on one interface. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, XLB_MAX_FRAGS);
	__type(key, struct xlb_frag_key);
	__type(value, __u8);
} frag_ids SEC(".maps");

/* The balancer's source-NAT addresses (full NAT and one-arm). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XLB_MAX_ADDRS);
	__type(key, struct xlb_addr_key);
	__type(value, __u8);
} snat_addrs SEC(".maps");

/* DNAT backend endpoints (addr, proto, port); port 0 = any port. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XLB_MAX_FLOW_KEYS);
	__type(key, struct xlb_flow_key);
	__type(value, __u8);
} backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xlb_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XLB_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

#endif
