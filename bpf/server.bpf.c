// SPDX-License-Identifier: GPL-2.0-only
/*
 * spak server: the dispatcher, at XDP (spak_server) or TC ingress (spak_server_tc), with one
 * verdict for both (spak_verdict). Each concern has its header; in packet order:
 *
 *   spak_parse.h   Ethernet, VLAN tags, the IPv6 extension walk (shared with the client)
 *   spak_ip.h      the IP stage: IPv4/IPv6 checks, fragments, tunnels; TCP or UDP, or a verdict
 *   spak_udp.h     UDP: the knock port (spak_knock.h), protected UDP destinations
 *   spak_tcp.h     the TCP header: flags, our option (shared with the client)
 *   spak_dest.h    protected ports and destinations
 *   spak_stealth.h closed ports of protected addresses: the kernel's socket tables
 *   spak_flowkey.h the flow key
 *   spak_flow.h    recording flows, gating segments of known flows
 *   spak_syn.h     SYN verification (spak_siphash.h), replay
 *   spak_allow.h   knock allowlist and always-allow, asked only where it would drop
 *   spak_verdict.h pass() and drop(): every verdict counts its reason (spak_wire.h);
 *                  spak_destcount.h counts a destination's decisions by outcome
 * under them spak_server_maps.h (the maps), spak_maps.h and spak_wire.h (the formats).
 *
 * Hot paths, cheapest first:
 *   - not TCP, or TCP to a port no destination protects: one inlined array read.
 *   - UDP: the knock config's and the UDP port bitmap's inlined array reads.
 *   - segment of a known flow: one flow-table lookup.
 *   - SYN to a protected destination: option walk, SipHash resumed from a precomputed
 *     state, then (valid tags only) replay and flow table updates.
 *   - no valid tag, or no flow: the allowlist (a hash) and the always-allow list (a trie).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "spak_verdict.h"
#include "spak_parse.h"
#include "spak_ip.h"
#include "spak_udp.h"
#include "spak_tcp.h"
#include "spak_dest.h"
#include "spak_stealth.h"
#include "spak_flow.h"
#include "spak_syn.h"

/*
 * The verdict on one frame, for both hooks: XDP_PASS or XDP_DROP, its reason counted.
 * ctx: the hook's context (xdp_md or __sk_buff), for the socket lookups of stealth.
 * max_tags: how many VLAN tags the frame itself may still carry (spak_parse_eth_tags).
 */
static __always_inline int spak_verdict(void *ctx, void *data, void *end, int max_tags)
{
	struct spak_ip ip;
	struct spak_flow_key fk;
	struct tcphdr *tcp;
	__u8 flags;
	int l4;

	/* Everything but a whole TCP header gets its verdict there: IP, fragments, tunnels, UDP. */
	l4 = spak_ip_stage(ctx, data, end, max_tags, &ip);
	if (l4 != SPAK_L4_TCP)
		return l4;

	/* The common case for traffic we do not guard ends here (stealth may still judge it). */
	tcp = ip.tcp;
	if (!tcp_port_guarded(tcp->dest))
		return tcp_unguarded(ctx, tcp, ip.ip4, ip.ip6);

	spak_flow_key_fill(&fk, ip.ip4, ip.ip6, tcp->source, tcp->dest, IPPROTO_TCP);
	flags = spak_tcp_flags(tcp);
	if (spak_tcp_pure_syn(flags))
		return handle_syn(ctx, tcp, end, &fk, ip.ip4 != NULL);
	return handle_segment(ctx, flags, &fk, ip.ip4 != NULL);
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
