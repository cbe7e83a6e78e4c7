/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Knock mode: UDP to the knock port (spak_knock_config) on any local address, IPv4 or
 * IPv6 (spak_udp.h sends it here). Checks, cheapest first: length, version and reserved
 * bytes, the client id, the prefilter tag (SipHash-2-4 under the client's key over bytes
 * 16..151, spak_wire.h); then, for a knock that passed, the table of accepted knocks and
 * its client's budget.
 *
 * Two budgets, as WireGuard does with its cookie: what fails the prefilter is limited per
 * source address (spak_knock_rate, drop_knock_rate), what passes it per client id
 * (spak_knock_client_rate, drop_knock_client_rate), both with the knock rate and burst. So
 * a flood that spoofs a client's address spends that address's budget for failures, never
 * the client's valid knocks; and what a captured knock can cost the daemon, replayed from
 * any number of sources, is its client's budget. An exact repeat of a knock the daemon
 * accepted dies before it spends that budget (spak_knock_accepted, drop_knock_repeat).
 *
 * Map lookups on the knock path, spak_knock_config's inlined array read in spak_udp.h
 * included: a valid knock 4 (config, clients, accepted, its client's budget; one update more
 * on a client's first knock); a datagram that fails the prefilter 2 or 3 (config, clients
 * when its header is well formed, its source's budget; one update more on a source's first
 * failure); an accepted knock's repeat 3 (config, clients, accepted).
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
 * GCRA on one entry of an LRU keyed by key: allowed when the entry's theoretical arrival time,
 * advanced by one interval, stays within burst_ns of now. Concurrent CPUs may race on one
 * entry; that blurs the limit by a packet or two, never more.
 */
static __always_inline int knock_gcra(void *map, const void *key, const struct spak_knock_config *kc)
{
	__u64 now = bpf_ktime_get_coarse_ns();
	__u64 *tat = bpf_map_lookup_elem(map, key);
	__u64 next;

	if (!tat) {
		/* A first datagram always fits: the daemon never writes a burst below 1. */
		next = now + kc->interval_ns;
		bpf_map_update_elem(map, key, &next, BPF_ANY);
		return 1;
	}
	next = (*tat > now ? *tat : now) + kc->interval_ns;
	if (next - now > kc->burst_ns)
		return 0;
	*tat = next;
	return 1;
}

/* A datagram that fails the prefilter: counted as reason, or as drop_knock_rate past its source's budget. */
static __always_inline int knock_fail(const __u8 saddr[16], const struct spak_knock_config *kc, __u32 reason)
{
	if (!knock_gcra(&spak_knock_rate, saddr, kc))
		return drop(SPAK_SRV_DROP_KNOCK_RATE);
	return drop(reason);
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
	__u64 tag;

	/* The UDP length is what the kernel delivers: exactly the bytes checked here. */
	if (udp->len != bpf_htons(SPAK_KNOCK_UDP_LEN) || (void *)(d + SPAK_KNOCK_LEN) > end)
		return knock_fail(saddr, kc, SPAK_SRV_DROP_KNOCK_MALFORMED);
	if (d[SPAK_KNOCK_OFF_VERSION] != SPAK_KNOCK_VERSION || d[1] || d[2] || d[3])
		return knock_fail(saddr, kc, SPAK_SRV_DROP_KNOCK_MALFORMED);
	id = *(__be32 *)(d + SPAK_KNOCK_OFF_CLIENT_ID);
	key = bpf_map_lookup_elem(&spak_knock_clients, &id);
	if (!key)
		return knock_fail(saddr, kc, SPAK_SRV_DROP_KNOCK_UNKNOWN_CLIENT);
	tag = *(__u64 *)(d + SPAK_KNOCK_OFF_TAG);
	if (knock_tag(d, key) != tag)
		return knock_fail(saddr, kc, SPAK_SRV_DROP_KNOCK_TAG);
	if (bpf_map_lookup_elem(&spak_knock_accepted, &tag))
		return drop(SPAK_SRV_DROP_KNOCK_REPEAT);
	if (!knock_gcra(&spak_knock_client_rate, &id, kc))
		return drop(SPAK_SRV_DROP_KNOCK_CLIENT_RATE);
	return pass(SPAK_SRV_PASS_KNOCK);
}

#endif /* SPAK_KNOCK_H */
