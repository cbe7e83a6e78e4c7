/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Knock mode: UDP to the knock port (spak_knock_config) on any local address, IPv4 or
 * IPv6 (spak_udp.h sends it here). Checks, cheapest first: the source's rate limit (before any hashing, so a flood
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
#include "spak_verdict.h"
#include "spak_parse.h"
#include "spak_siphash.h"

#define SPAK_KNOCK_UDP_LEN (sizeof(struct udphdr) + SPAK_KNOCK_LEN)

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

#endif /* SPAK_KNOCK_H */
