// SPDX-License-Identifier: GPL-2.0-only
/*
 * spak server: the dispatcher, at XDP (spak_server) or TC ingress (spak_server_tc), with one
 * verdict for both (spak_verdict). Parses down to TCP, lets through what no
 * destination protects, and hands the rest to SYN verification (spak_syn.h) or flow
 * gating (spak_flow.h), where the allowlists (spak_allow.h) may still admit what has no
 * valid tag or flow; UDP goes to the knock port's checks and to protected UDP destinations
 * (spak_udp.h). What the parser cannot read is never passed to a protected
 * address: a frame still VLAN-tagged after the walk is dropped outright, fragments and
 * broken headers are dropped when they may be for a protected address.
 *
 * Hot paths, cheapest first:
 *   - not TCP, or TCP to a port no destination protects: one inlined array read.
 *   - UDP: the knock config's and the UDP port bitmap's inlined array reads; the knock
 *     port itself: spak_knock.h; protected UDP destinations: spak_udp.h.
 *   - segment of a known flow: one flow-table lookup.
 *   - SYN to a protected destination: option walk, SipHash resumed from a precomputed
 *     state, then (valid tags only) replay and flow table updates.
 *   - no valid tag, or no flow: the allowlist (a hash) and the always-allow list (a trie).
 * Every verdict increments a per-CPU counter with its reason (spak_wire.h).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "spak_verdict.h"
#include "spak_parse.h"
#include "spak_tcp.h"
#include "spak_dest.h"
#include "spak_syn.h"
#include "spak_flow.h"
#include "spak_udp.h"

#define SPAK_IPPROTO_ETHERIP 97

/* Upper-layer protocols whose fragments may carry a protected segment. */
static __always_inline int may_be_protected_proto(__u8 nh)
{
	return nh == IPPROTO_TCP || nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING ||
	       nh == IPPROTO_DSTOPTS || nh == IPPROTO_AH || nh == IPPROTO_FRAGMENT;
}

/*
 * Encapsulations the kernel may open itself (a tunnel device, or the fallback one an ipip,
 * sit, ip6_tunnel or gre module creates): the parser does not follow them, so to a
 * protected address they are dropped like anything else it cannot read.
 */
static __always_inline int is_tunnel_proto(__u8 p)
{
	return p == IPPROTO_IPIP || p == IPPROTO_IPV6 || p == IPPROTO_GRE || p == SPAK_IPPROTO_ETHERIP;
}

/*
 * The verdict on one frame, for both hooks: XDP_PASS or XDP_DROP (pass() and drop() count the
 * reason). ctx: the hook's context (xdp_md or __sk_buff), for the socket lookups of stealth.
 * max_tags: how many VLAN tags the frame itself may still carry (see spak_parse_eth_tags).
 */
static __always_inline int spak_verdict(void *ctx, void *data, void *end, int max_tags)
{
	struct spak_flow_key fk;
	struct iphdr *ip4 = NULL;
	struct ipv6hdr *ip6 = NULL;
	struct tcphdr *tcp;
	__u16 proto, port;
	__u32 word_idx;
	__u64 *word;
	__u8 flags;
	int l3;

	l3 = spak_parse_eth_tags(data, end, &proto, max_tags);
	if (l3 == SPAK_ETH_UNPARSED)
		return drop(SPAK_SRV_DROP_UNPARSED);
	if (l3 < 0)
		return pass(SPAK_SRV_PASS_OTHER); /* shorter than an Ethernet header */

	if (proto == bpf_htons(ETH_P_IP)) {
		ip4 = data + (l3 & 0xff);
		if ((void *)(ip4 + 1) > end)
			return drop(SPAK_SRV_DROP_MALFORMED);
		if (ip4->protocol != IPPROTO_TCP) {
			if (ip4->protocol == IPPROTO_UDP)
				return handle_udp_v4(ctx, ip4, end);
			if (!is_tunnel_proto(ip4->protocol))
				return pass(SPAK_SRV_PASS_OTHER);
			spak_addr_v4(fk.daddr, ip4->daddr);
			return drop_if_protected_addr(fk.daddr, 1, SPAK_SRV_DROP_UNPARSED);
		}
		if (ip4->frag_off & bpf_htons(SPAK_IP_MF | SPAK_IP_OFFSET)) {
			spak_addr_v4(fk.daddr, ip4->daddr);
			return drop_if_protected_addr(fk.daddr, 1, SPAK_SRV_DROP_FRAGMENT);
		}
		if (ip4->ihl < 5)
			return drop(SPAK_SRV_DROP_MALFORMED);
		tcp = (void *)ip4 + ip4->ihl * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		__u8 nexthdr = 0;
		int l4off = 0, r;

		ip6 = data + (l3 & 0xff);
		if ((void *)(ip6 + 1) > end)
			return drop(SPAK_SRV_DROP_MALFORMED);
		if (ip6->nexthdr == IPPROTO_TCP) {
			tcp = (void *)(ip6 + 1);
		} else {
			r = spak_ipv6_skip_ext(data, end, ip6, &nexthdr, &l4off);
			if (r == SPAK_V6_FRAGMENT && nexthdr == IPPROTO_UDP)
				return handle_udp_v6(ctx, data, end, ip6, l4off, 1);
			if (r == SPAK_V6_FRAGMENT && !may_be_protected_proto(nexthdr))
				return pass(SPAK_SRV_PASS_OTHER);
			if (r != SPAK_V6_OK) {
				spak_addr_v6(fk.daddr, &ip6->daddr);
				return drop_if_protected_addr(fk.daddr, 0,
							      r == SPAK_V6_FRAGMENT ?
							      SPAK_SRV_DROP_FRAGMENT :
							      SPAK_SRV_DROP_MALFORMED);
			}
			if (nexthdr != IPPROTO_TCP) {
				if (nexthdr == IPPROTO_UDP)
					return handle_udp_v6(ctx, data, end, ip6, l4off, 0);
				if (!is_tunnel_proto(nexthdr))
					return pass(SPAK_SRV_PASS_OTHER);
				spak_addr_v6(fk.daddr, &ip6->daddr);
				return drop_if_protected_addr(fk.daddr, 0, SPAK_SRV_DROP_UNPARSED);
			}
			tcp = data + (l4off & SPAK_IPV6_MAX_EXT_OFF);
		}
	} else {
		return pass(SPAK_SRV_PASS_OTHER);
	}

	if ((void *)(tcp + 1) > end) {
		if (ip4)
			spak_addr_v4(fk.daddr, ip4->daddr);
		else if (ip6)
			spak_addr_v6(fk.daddr, &ip6->daddr);
		return drop_if_protected_addr(fk.daddr, ip4 != NULL, SPAK_SRV_DROP_MALFORMED);
	}

	/* The common case for traffic we do not guard ends here. */
	port = bpf_ntohs(tcp->dest);
	word_idx = port >> 6;
	word = bpf_map_lookup_elem(&spak_ports, &word_idx);
	if (!word || !(*word & (1ULL << (port & 63))))
		return tcp_unguarded(ctx, tcp, ip4, ip6); /* stealth: spak_stealth.h */

	spak_flow_key_fill(&fk, ip4, ip6, tcp->source, tcp->dest, IPPROTO_TCP);

	flags = spak_tcp_flags(tcp);
	if (spak_tcp_pure_syn(flags))
		return handle_syn(ctx, tcp, end, &fk, ip4 != NULL);
	return handle_segment(flags, &fk, ip4 != NULL);
}

SEC("xdp")
int spak_server(struct xdp_md *ctx)
{
	return spak_verdict(ctx, (void *)(long)ctx->data, (void *)(long)ctx->data_end, SPAK_MAX_VLANS);
}

/*
 * The most the verdict reads of a frame it can decide on: Ethernet, two tags, IPv6 with a short
 * extension chain, then a full TCP header or a UDP header with a knock (14 + 8 + 40 + 8 + 152 =
 * 222). A deeper chain that the linear part does not hold reads as malformed: dropped when it is
 * for a protected address, as everything the parser cannot read.
 */
#define SPAK_TC_LINEAR 256

/*
 * TC ingress (the TCX hook), for interfaces or drivers without XDP: the same verdict over the
 * skb. Only the linear part can be read directly, so it is pulled when it is shorter than what
 * the verdict may read (drivers usually put whole headers there; GRO'd and paged skbs may not).
 * The outer VLAN tag is in skb metadata here, not in the frame: it counts as one of the two.
 */
SEC("tc")
int spak_server_tc(struct __sk_buff *skb)
{
	__u32 want = skb->len < SPAK_TC_LINEAR ? skb->len : SPAK_TC_LINEAR;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;

	if (end - data < want) {
		/* On failure the verdict reads what is there: short reads drop what may be protected. */
		bpf_skb_pull_data(skb, want);
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
	}
	return spak_tc_action(spak_verdict(skb, data, end,
					   skb->vlan_present ? SPAK_MAX_VLANS - 1 : SPAK_MAX_VLANS));
}

char LICENSE[] SEC("license") = "GPL";
