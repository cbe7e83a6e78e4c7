/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Knock mode: UDP to the knock port (spak_knock_config) on any local address, IPv4 or
 * IPv6. Checks, cheapest first: the source's rate limit (before any hashing, so a flood
 * from one source costs one LRU lookup a packet), length, version and reserved bytes,
 * the client id, then the prefilter tag (SipHash-2-4 under the client's key over bytes
 * 16..151, spak_wire.h).
 *
 * A knock that passes them all goes on to the kernel's UDP stack (XDP_PASS) and the
 * daemon reads it from a plain UDP socket: simpler than a ring buffer, the kernel checks
 * the UDP checksum and delivers whole datagrams, and only prefiltered ones get there.
 * Everything else to the knock port dies here, so the kernel never answers garbage with
 * an ICMP port unreachable.
 */
#ifndef SPAK_KNOCK_H
#define SPAK_KNOCK_H

#include <linux/udp.h>
#include "spak_server_maps.h"
#include "spak_parse.h"
#include "spak_siphash.h"

#define SPAK_KNOCK_UDP_LEN (sizeof(struct udphdr) + SPAK_KNOCK_LEN)
#define SPAK_IP6_FRAG_OFFSET 0xfff8

static __always_inline struct spak_knock_config *knock_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&spak_knock_config, &zero);
}

/*
 * GCRA: a knock is allowed when the source's theoretical arrival time, advanced by one
 * interval, stays within burst_ns of now. Concurrent CPUs may race on one source's entry;
 * that blurs the limit by a packet or two, never more.
 */
static __always_inline int knock_rate_ok(const __u8 saddr[16], const struct spak_knock_config *kc)
{
	__u64 now = bpf_ktime_get_coarse_ns();
	__u64 *tat = bpf_map_lookup_elem(&spak_knock_rate, saddr);
	__u64 next;

	if (!tat) {
		/* A first knock always fits: the daemon never writes a burst below 1. */
		next = now + kc->interval_ns;
		bpf_map_update_elem(&spak_knock_rate, saddr, &next, BPF_ANY);
		return 1;
	}
	next = (*tat > now ? *tat : now) + kc->interval_ns;
	if (next - now > kc->burst_ns)
		return 0;
	*tat = next;
	return 1;
}

/* SipHash-2-4 over the tagged part of the datagram at d (bounds checked by the caller). */
static __always_inline __u64 knock_tag(const __u8 *d, const struct spak_key *key)
{
	struct spak_sip s;

	spak_sip_init(&s, key);
#pragma unroll
	for (int i = 0; i < SPAK_KNOCK_TAGGED_LEN / 8; i++)
		spak_sip_compress(&s, *(const __u64 *)(d + SPAK_KNOCK_HDR_LEN + i * 8));
	return spak_sip_finish(&s, (__u64)SPAK_KNOCK_TAGGED_LEN << 56);
}

/* A whole (unfragmented) datagram to the knock port, from saddr. */
static __always_inline int knock_judge(struct udphdr *udp, void *end, __u8 saddr[16],
				       const struct spak_knock_config *kc)
{
	__u8 *d = (void *)(udp + 1);
	struct spak_key *key;
	__be32 id;

	if (!knock_rate_ok(saddr, kc))
		return drop(SPAK_SRV_DROP_KNOCK_RATE);
	/* The UDP length is what the kernel delivers: exactly the bytes checked here. */
	if (udp->len != bpf_htons(SPAK_KNOCK_UDP_LEN) || (void *)(d + SPAK_KNOCK_LEN) > end)
		return drop(SPAK_SRV_DROP_KNOCK_MALFORMED);
	if (d[SPAK_KNOCK_OFF_VERSION] != SPAK_KNOCK_VERSION || d[1] || d[2] || d[3])
		return drop(SPAK_SRV_DROP_KNOCK_MALFORMED);
	id = *(__be32 *)(d + SPAK_KNOCK_OFF_CLIENT_ID);
	key = bpf_map_lookup_elem(&spak_knock_clients, &id);
	if (!key)
		return drop(SPAK_SRV_DROP_KNOCK_UNKNOWN_CLIENT);
	if (knock_tag(d, key) != *(__u64 *)(d + SPAK_KNOCK_OFF_TAG))
		return drop(SPAK_SRV_DROP_KNOCK_TAG);
	return pass(SPAK_SRV_PASS_KNOCK);
}

/*
 * Fragments: only a first fragment carries the port, and a knock is never fragmented, so
 * a first fragment to the knock port (or one too short to show its port) is dropped. Later
 * fragments pass: without the first the kernel reassembles nothing, and it sends its
 * reassembly-timeout ICMP only when the first fragment arrived.
 */
static __always_inline int knock_first_fragment(struct udphdr *udp, void *end,
						const struct spak_knock_config *kc)
{
	if ((void *)(udp + 1) > end || udp->dest == kc->port)
		return drop(SPAK_SRV_DROP_KNOCK_FRAGMENT);
	return pass(SPAK_SRV_PASS_OTHER);
}

/* UDP over IPv4. */
static __always_inline int handle_udp_v4(struct iphdr *ip4, void *end)
{
	struct spak_knock_config *kc = knock_config();
	struct udphdr *udp;
	__u8 saddr[16];

	if (!kc || !kc->port || ip4->ihl < 5)
		return pass(SPAK_SRV_PASS_OTHER);
	if (ip4->frag_off & bpf_htons(SPAK_IP_OFFSET))
		return pass(SPAK_SRV_PASS_OTHER);
	udp = (void *)ip4 + ip4->ihl * 4;
	if (ip4->frag_off & bpf_htons(SPAK_IP_MF))
		return knock_first_fragment(udp, end, kc);
	if ((void *)(udp + 1) > end || udp->dest != kc->port)
		return pass(SPAK_SRV_PASS_OTHER);
	spak_addr_v4(saddr, ip4->saddr);
	return knock_judge(udp, end, saddr, kc);
}

/* UDP over IPv6: off is the UDP header, or with frag the fragment header naming UDP. */
static __always_inline int handle_udp_v6(void *data, void *end, struct ipv6hdr *ip6, int off,
					 int frag)
{
	struct spak_knock_config *kc = knock_config();
	__u8 *l4 = data + (off & SPAK_IPV6_MAX_EXT_OFF);
	struct udphdr *udp;
	__u8 saddr[16];

	if (!kc || !kc->port)
		return pass(SPAK_SRV_PASS_OTHER);
	if (frag) {
		/* The walk read these 8 bytes already; the verifier needs to see it again. */
		if ((void *)(l4 + 8) > end || (*(__be16 *)(l4 + 2) & bpf_htons(SPAK_IP6_FRAG_OFFSET)))
			return pass(SPAK_SRV_PASS_OTHER);
		return knock_first_fragment((void *)(l4 + 8), end, kc);
	}
	udp = (void *)l4;
	if ((void *)(udp + 1) > end || udp->dest != kc->port)
		return pass(SPAK_SRV_PASS_OTHER);
	spak_addr_v6(saddr, &ip6->saddr);
	return knock_judge(udp, end, saddr, kc);
}

#endif /* SPAK_KNOCK_H */
