/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Bounded L2 and L3 parsing shared by the XDP server and the TC client: Ethernet and VLAN
 * tags, the IPv6 extension walk, and the 16-byte address form every map uses. Every read is
 * checked against the end of the packet; every loop has a constant bound. What follows in
 * packet order: the server's IP stage (spak_ip.h), the TCP header (spak_tcp.h).
 */
#ifndef SPAK_PARSE_H
#define SPAK_PARSE_H

#include <linux/types.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include "spak_wire.h"

#define SPAK_MAX_VLANS 2
#define SPAK_MAX_IPV6_EXT 4
#define SPAK_IPV6_MAX_EXT_OFF 0x7ff

#define SPAK_IP_MF 0x2000
#define SPAK_IP_OFFSET 0x1fff
#define SPAK_IP6_FRAG_OFFSET 0xfff8 /* the IPv6 fragment header's offset field */

struct spak_vlan_hdr {
	__be16 tci;
	__be16 proto;
};

#define SPAK_ETH_TRUNCATED -1
#define SPAK_ETH_UNPARSED -2

/*
 * Walks Ethernet and up to max_tags (at most two) VLAN tags. Returns the L3 offset, SPAK_ETH_TRUNCATED, or
 * SPAK_ETH_UNPARSED for a frame still tagged after the walk: the kernel strips priority
 * tags (VLAN id 0) one by one and would deliver what is inside, so such a frame must
 * never be passed as "not IP".
 */
static __always_inline int spak_parse_eth_tags(void *data, void *end, __u16 *proto, int max_tags)
{
	struct ethhdr *eth = data;
	int off = sizeof(*eth);
	__u16 p;

	if ((void *)(eth + 1) > end)
		return SPAK_ETH_TRUNCATED;
	p = eth->h_proto;
#pragma unroll
	for (int i = 0; i < SPAK_MAX_VLANS; i++) {
		struct spak_vlan_hdr *vh = data + off;

		if (i >= max_tags)
			break;
		if (p != bpf_htons(ETH_P_8021Q) && p != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > end)
			return SPAK_ETH_TRUNCATED;
		p = vh->proto;
		off += sizeof(*vh);
	}
	if (p == bpf_htons(ETH_P_8021Q) || p == bpf_htons(ETH_P_8021AD))
		return SPAK_ETH_UNPARSED;
	*proto = p;
	return off;
}

/*
 * Walks at most max_tags tags in the frame (a constant SPAK_MAX_VLANS folds the check away). At
 * TC ingress the kernel has already moved the outer tag into skb metadata, so the caller there
 * passes one less: a frame's tags count the same whichever hook reads it.
 */
static __always_inline int spak_parse_eth(void *data, void *end, __u16 *proto)
{
	return spak_parse_eth_tags(data, end, proto, SPAK_MAX_VLANS);
}

#define SPAK_V6_OK 0
#define SPAK_V6_FRAGMENT 1
#define SPAK_V6_MALFORMED 2

/*
 * Skips IPv6 extension headers (hop-by-hop, routing, destination options, AH).
 * On SPAK_V6_OK, *nexthdr and *l4off name the upper-layer header. On SPAK_V6_FRAGMENT,
 * *nexthdr is what the fragment header names (the same in every fragment of a packet),
 * so fragments of protocols nothing protects can pass, and *l4off is the fragment header.
 */
static __always_inline int spak_ipv6_skip_ext(void *data, void *end, struct ipv6hdr *ip6,
					      __u8 *nexthdr, int *l4off)
{
	__u8 nh = ip6->nexthdr;
	int off = (void *)(ip6 + 1) - data;

#pragma unroll
	for (int i = 0; i < SPAK_MAX_IPV6_EXT; i++) {
		__u8 *ext;
		int len;

		/* Bounded so the verifier can track the pointer; real chains are far shorter. */
		if (off > SPAK_IPV6_MAX_EXT_OFF)
			return SPAK_V6_MALFORMED;
		ext = data + (off & SPAK_IPV6_MAX_EXT_OFF);
		if (nh == IPPROTO_FRAGMENT) {
			if ((void *)(ext + 8) > end)
				return SPAK_V6_MALFORMED;
			*nexthdr = ext[0];
			*l4off = off;
			return SPAK_V6_FRAGMENT;
		}
		if (nh != IPPROTO_HOPOPTS && nh != IPPROTO_ROUTING && nh != IPPROTO_DSTOPTS &&
		    nh != IPPROTO_AH)
			break;
		if ((void *)(ext + 2) > end)
			return SPAK_V6_MALFORMED;
		len = nh == IPPROTO_AH ? (ext[1] + 2) * 4 : (ext[1] + 1) * 8;
		nh = ext[0];
		off += len;
	}
	/* Still an extension header (or a fragment header) after the walk: too deep to read. */
	if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS ||
	    nh == IPPROTO_AH || nh == IPPROTO_FRAGMENT)
		return SPAK_V6_MALFORMED;
	if (off > SPAK_IPV6_MAX_EXT_OFF)
		return SPAK_V6_MALFORMED;
	*nexthdr = nh;
	*l4off = off;
	return SPAK_V6_OK;
}

/* IPv4 address into the 16-byte form every map uses: ::ffff:a.b.c.d */
static __always_inline void spak_addr_v4(__u8 out[16], __be32 a)
{
	__u32 *w = (__u32 *)out;

	w[0] = 0;
	w[1] = 0;
	w[2] = bpf_htonl(0x0000ffff);
	w[3] = a;
}

static __always_inline void spak_addr_v6(__u8 out[16], const struct in6_addr *a)
{
	__u32 *w = (__u32 *)out;

	w[0] = a->in6_u.u6_addr32[0];
	w[1] = a->in6_u.u6_addr32[1];
	w[2] = a->in6_u.u6_addr32[2];
	w[3] = a->in6_u.u6_addr32[3];
}

static __always_inline int spak_addr_eq(const __u8 a[16], const __u8 b[16])
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return x[0] == y[0] && x[1] == y[1];
}

#endif /* SPAK_PARSE_H */
