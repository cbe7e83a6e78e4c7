/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * UDP, IPv4 and IPv6: the knock port (spak_knock.h), then protected UDP destinations
 * (spak_allow.h says who they admit). UDP to any other port passes after the knock
 * config's inlined array read and one inlined read of the UDP port bitmap.
 *
 * A protected UDP destination is (address, port) in spak_udp_protected, the family's
 * all-zero address standing for every address of it; spak_udp_ports has a bit per port
 * with at least one. UDP has no tags, so it needs neither per-port slots nor keys.
 *
 * Fragments: only a first fragment carries the ports. A knock is never fragmented, so a
 * first fragment to the knock port (or one too short to show its port, while knock mode is
 * on) is dropped; so is, while knock mode is on, a datagram too short (or, at TC, too far
 * beyond the linear part) to show its UDP header (drop_knock_unparsed). A first fragment to a protected UDP destination is judged like a whole
 * datagram. Later fragments pass: without the first the kernel reassembles nothing, and it
 * sends its reassembly-timeout ICMP only when the first fragment arrived.
 */
#ifndef SPAK_UDP_H
#define SPAK_UDP_H

#include <linux/udp.h>
#include "spak_server_maps.h"
#include "spak_verdict.h"
#include "spak_parse.h"
#include "spak_dest.h"
#include "spak_allow.h"
#include "spak_destcount.h"
#include "spak_flow.h"
#include "spak_stealth.h"
#include "spak_knock.h"

/* Is any destination on this port protected for UDP? One inlined array read. */
static __always_inline int udp_port_guarded(__be16 dport)
{
	__u32 port = bpf_ntohs(dport);
	__u32 word_idx = port >> 6;
	__u64 *word = bpf_map_lookup_elem(&spak_udp_ports, &word_idx);

	return word && (*word & (1ULL << (port & 63)));
}

/* The protected UDP destination's counter index, or NULL when (daddr, dport) is not one. */
static __always_inline __u32 *udp_protected(const __u8 daddr[16], __be16 dport, int v4)
{
	struct spak_dest d = { .port = dport };
	__u32 *cidx;

	__builtin_memcpy(d.addr, daddr, 16);
	cidx = bpf_map_lookup_elem(&spak_udp_protected, &d);
	if (cidx)
		return cidx;
	wildcard_of(d.addr, v4);
	return bpf_map_lookup_elem(&spak_udp_protected, &d);
}

/* A datagram (or first fragment) to a port guarded for UDP; fk is its flow key. */
static __always_inline int udp_gate(void *ctx, const struct spak_flow_key *fk, int v4)
{
	struct spak_config *cfg;
	struct spak_flow *flow;
	__u32 zero = 0, cidx;
	__u32 *dest;
	int how;

	dest = udp_protected(fk->daddr, fk->dport, v4);
	if (!dest)
		return stealth_udp(ctx, fk, v4, SPAK_SRV_PASS_UNPROTECTED);
	cidx = *dest;
	cfg = bpf_map_lookup_elem(&spak_config, &zero);
	if (!cfg)
		return dest_drop(cidx, SPAK_SRV_DROP_MALFORMED);
	flow = bpf_map_lookup_elem(&spak_flows, fk);
	if (flow) {
		if (flow->seen_s != cfg->flow_clock_s)
			flow->seen_s = cfg->flow_clock_s; /* once per daemon tick, not per packet */
		return pass(SPAK_SRV_PASS_FLOW);
	}
	/* No flow: a new-connection decision, counted for the destination. */
	how = admit(fk, 0);
	if (how == SPAK_ADMIT_ALWAYS)
		return dest_pass(cidx, SPAK_SRV_PASS_ALWAYS);
	if (how == SPAK_ADMIT_NO)
		return dest_drop(cidx, SPAK_SRV_DROP_UDP_NOT_ALLOWED);
	return record_flow(fk, cfg, SPAK_SRV_PASS_ALLOWLISTED, cidx);
}

/* UDP over IPv4. */
static __always_inline int handle_udp_v4(void *ctx, struct iphdr *ip4, void *end)
{
	struct spak_knock_config *kc = knock_config();
	int knock = kc && kc->port;
	int first_frag = ip4->frag_off & bpf_htons(SPAK_IP_MF);
	struct spak_flow_key fk;
	struct udphdr *udp;
	__u8 saddr[16];

	if (ip4->ihl < 5 || (ip4->frag_off & bpf_htons(SPAK_IP_OFFSET)))
		return pass(SPAK_SRV_PASS_OTHER);
	udp = (void *)ip4 + ip4->ihl * 4;
	if ((void *)(udp + 1) > end) {
		if (knock)
			return drop(first_frag ? SPAK_SRV_DROP_KNOCK_FRAGMENT : SPAK_SRV_DROP_KNOCK_UNPARSED);
		return pass(SPAK_SRV_PASS_OTHER);
	}
	if (knock && udp->dest == kc->port) {
		if (first_frag)
			return drop(SPAK_SRV_DROP_KNOCK_FRAGMENT);
		spak_addr_v4(saddr, ip4->saddr);
		return knock_judge(udp, end, saddr, kc);
	}
	if (!udp_port_guarded(udp->dest))
		return udp_unguarded(ctx, udp, ip4, NULL);
	spak_flow_key_fill(&fk, ip4, NULL, udp->source, udp->dest, IPPROTO_UDP);
	return udp_gate(ctx, &fk, 1);
}

/* UDP over IPv6: off is the UDP header, or with frag the fragment header naming UDP. */
static __always_inline int handle_udp_v6(void *ctx, void *data, void *end, struct ipv6hdr *ip6,
					 int off, int frag)
{
	struct spak_knock_config *kc = knock_config();
	int knock = kc && kc->port;
	__u8 *l4 = data + (off & SPAK_IPV6_MAX_EXT_OFF);
	struct udphdr *udp = (void *)l4;
	struct spak_flow_key fk;
	__u8 saddr[16];

	if (frag) {
		/* The walk read these 8 bytes already; the verifier needs to see it again. */
		if ((void *)(l4 + 8) > end || (*(__be16 *)(l4 + 2) & bpf_htons(SPAK_IP6_FRAG_OFFSET)))
			return pass(SPAK_SRV_PASS_OTHER);
		udp = (void *)(l4 + 8);
	}
	if ((void *)(udp + 1) > end) {
		if (knock)
			return drop(frag ? SPAK_SRV_DROP_KNOCK_FRAGMENT : SPAK_SRV_DROP_KNOCK_UNPARSED);
		return pass(SPAK_SRV_PASS_OTHER);
	}
	if (knock && udp->dest == kc->port) {
		if (frag)
			return drop(SPAK_SRV_DROP_KNOCK_FRAGMENT);
		spak_addr_v6(saddr, &ip6->saddr);
		return knock_judge(udp, end, saddr, kc);
	}
	if (!udp_port_guarded(udp->dest))
		return udp_unguarded(ctx, udp, NULL, ip6);
	spak_flow_key_fill(&fk, NULL, ip6, udp->source, udp->dest, IPPROTO_UDP);
	return udp_gate(ctx, &fk, 0);
}

#endif /* SPAK_UDP_H */
