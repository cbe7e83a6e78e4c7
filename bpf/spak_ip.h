/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * The server's IP stage, after spak_parse.h in packet order: from the Ethernet frame to a
 * whole TCP header or a UDP header's place, or a verdict of its own. IPv4 and IPv6 header
 * checks, the IPv6 extension walk, fragments and tunnels.
 *
 * What the parser cannot read is never passed to a protected address: a frame still
 * VLAN-tagged after the walk is dropped outright; fragments, tunnels and broken headers are
 * dropped when they may be for a protected address (spak_dest.h), and pass otherwise, as
 * everything that is neither TCP nor UDP does.
 *
 * Nor to the knock port, which listens on every local address: while knock mode is on, an
 * IPv6 packet to an address nothing protects is dropped when its extension chain is longer
 * than the walk reads or broken (drop_knock_unparsed), or when it is a fragment whose fragment
 * header names another extension header, so that the UDP header may hide behind it
 * (drop_knock_fragment, first and later fragments alike). Anything behind such a chain could
 * be a knock that never met the prefilter or the budgets. Fragments naming TCP are unchanged.
 * Tunnels are not followed: what a tunnel device decapsulates arrives on that device, which
 * spak does not see unless it serves it too.
 */
#ifndef SPAK_IP_H
#define SPAK_IP_H

#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include "spak_verdict.h"
#include "spak_parse.h"
#include "spak_dest.h"
#include "spak_udp.h"

#define SPAK_IPPROTO_ETHERIP 97

/*
 * A whole TCP header, for the dispatcher: the stage's only return that is not a verdict.
 * Negative, so never an XDP verdict.
 */
#define SPAK_L4_TCP -1

struct spak_ip {
	struct iphdr *ip4;      /* the one of ip4 and ip6 that the frame carries */
	struct ipv6hdr *ip6;
	struct tcphdr *tcp;
};

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

static __always_inline int drop_if_protected_v4(__be32 daddr, __u32 reason)
{
	__u8 a[16];

	spak_addr_v4(a, daddr);
	return drop_if_protected_addr(a, 1, reason);
}

static __always_inline int drop_if_protected_v6(const struct in6_addr *daddr, __u32 reason)
{
	__u8 a[16];

	spak_addr_v6(a, daddr);
	return drop_if_protected_addr(a, 0, reason);
}

/*
 * An IPv6 packet the walk could not read to its upper layer: dropped for a protected address
 * (reason), and while knock mode is on for any other (knock_reason), as the knock port may be
 * behind it; passes otherwise.
 */
static __always_inline int drop_unread_v6(const struct in6_addr *daddr, __u32 reason, __u32 knock_reason)
{
	struct spak_knock_config *kc;
	__u8 a[16];

	spak_addr_v6(a, daddr);
	if (addr_protected(a, 0))
		return drop(reason);
	kc = knock_config();
	if (kc && kc->port)
		return drop(knock_reason);
	return pass(SPAK_SRV_PASS_OTHER);
}

static __always_inline int spak_ip4_stage(void *ctx, void *end, struct iphdr *ip4, struct spak_ip *ip)
{
	if ((void *)(ip4 + 1) > end)
		return drop(SPAK_SRV_DROP_MALFORMED);
	if (ip4->protocol != IPPROTO_TCP) {
		if (ip4->protocol == IPPROTO_UDP)
			return handle_udp_v4(ctx, ip4, end);
		if (!is_tunnel_proto(ip4->protocol))
			return pass(SPAK_SRV_PASS_OTHER);
		return drop_if_protected_v4(ip4->daddr, SPAK_SRV_DROP_UNPARSED);
	}
	if (ip4->frag_off & bpf_htons(SPAK_IP_MF | SPAK_IP_OFFSET))
		return drop_if_protected_v4(ip4->daddr, SPAK_SRV_DROP_FRAGMENT);
	if (ip4->ihl < 5)
		return drop(SPAK_SRV_DROP_MALFORMED);
	ip->tcp = (void *)ip4 + ip4->ihl * 4;
	return SPAK_L4_TCP;
}

static __always_inline int spak_ip6_stage(void *ctx, void *data, void *end, struct ipv6hdr *ip6,
					  struct spak_ip *ip)
{
	__u8 nexthdr = 0;
	int l4off = 0, r;

	if ((void *)(ip6 + 1) > end)
		return drop(SPAK_SRV_DROP_MALFORMED);
	if (ip6->nexthdr == IPPROTO_TCP) {
		ip->tcp = (void *)(ip6 + 1); /* the common case: no extension headers */
		return SPAK_L4_TCP;
	}
	r = spak_ipv6_skip_ext(data, end, ip6, &nexthdr, &l4off);
	/* Every fragment names the upper layer: UDP has its own rules, what nothing protects passes. */
	if (r == SPAK_V6_FRAGMENT && nexthdr == IPPROTO_UDP)
		return handle_udp_v6(ctx, data, end, ip6, l4off, 1);
	if (r == SPAK_V6_FRAGMENT && !may_be_protected_proto(nexthdr))
		return pass(SPAK_SRV_PASS_OTHER);
	if (r == SPAK_V6_FRAGMENT && nexthdr == IPPROTO_TCP)
		return drop_if_protected_v6(&ip6->daddr, SPAK_SRV_DROP_FRAGMENT);
	if (r == SPAK_V6_FRAGMENT)
		return drop_unread_v6(&ip6->daddr, SPAK_SRV_DROP_FRAGMENT, SPAK_SRV_DROP_KNOCK_FRAGMENT);
	if (r != SPAK_V6_OK)
		return drop_unread_v6(&ip6->daddr, SPAK_SRV_DROP_MALFORMED, SPAK_SRV_DROP_KNOCK_UNPARSED);
	if (nexthdr != IPPROTO_TCP) {
		if (nexthdr == IPPROTO_UDP)
			return handle_udp_v6(ctx, data, end, ip6, l4off, 0);
		if (!is_tunnel_proto(nexthdr))
			return pass(SPAK_SRV_PASS_OTHER);
		return drop_if_protected_v6(&ip6->daddr, SPAK_SRV_DROP_UNPARSED);
	}
	ip->tcp = data + (l4off & SPAK_IPV6_MAX_EXT_OFF);
	return SPAK_L4_TCP;
}

/*
 * The stage. ctx: the hook's context, for UDP's socket lookups. max_tags: how many VLAN tags
 * the frame itself may still carry (spak_parse_eth_tags). Returns SPAK_L4_TCP with ip->tcp a
 * whole TCP header, or the verdict it gave (pass() or drop() counted the reason). UDP leaves
 * for spak_udp.h from here, each of its three cases (IPv4, IPv6, a first IPv6 fragment)
 * inlined with its own constants: measured, that is smaller than handing them back.
 */
static __always_inline int spak_ip_stage(void *ctx, void *data, void *end, int max_tags,
					 struct spak_ip *ip)
{
	__u16 proto;
	int l3, r;

	ip->ip4 = NULL;
	ip->ip6 = NULL;
	l3 = spak_parse_eth_tags(data, end, &proto, max_tags);
	if (l3 == SPAK_ETH_UNPARSED)
		return drop(SPAK_SRV_DROP_UNPARSED);
	if (l3 < 0)
		return pass(SPAK_SRV_PASS_OTHER); /* shorter than an Ethernet header */

	if (proto == bpf_htons(ETH_P_IP)) {
		ip->ip4 = data + (l3 & 0xff);
		r = spak_ip4_stage(ctx, end, ip->ip4, ip);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		ip->ip6 = data + (l3 & 0xff);
		r = spak_ip6_stage(ctx, data, end, ip->ip6, ip);
	} else {
		return pass(SPAK_SRV_PASS_OTHER);
	}
	if (r != SPAK_L4_TCP)
		return r;
	if ((void *)(ip->tcp + 1) > end) {
		__u8 daddr[16];

		/* Both tested: the verifier does not know a packet pointer is never NULL. */
		if (ip->ip4)
			spak_addr_v4(daddr, ip->ip4->daddr);
		else if (ip->ip6)
			spak_addr_v6(daddr, &ip->ip6->daddr);
		return drop_if_protected_addr(daddr, ip->ip4 != NULL, SPAK_SRV_DROP_MALFORMED);
	}
	return SPAK_L4_TCP;
}

#endif /* SPAK_IP_H */
