/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Stealth for closed ports (spak_config.flags, set by the daemon's --stealth and
 * --stealth-udp). Without it, the kernel answers every TCP segment but a RST to a port with
 * no socket with a RST, and a UDP datagram with an ICMP port-unreachable, while a protected
 * port is silent to anything but a valid SYN (or a segment of its flow): a scan of the host
 * singles the protected port out, the SYN scan as much as the ACK, FIN, NULL, Xmas, window
 * and Maimon scans. With it, those segments and datagrams are dropped too, so every closed
 * port of a protected address is as silent as the protected one to every flag combination.
 *
 * Only what the kernel would refuse itself is dropped: the kernel's own socket tables are
 * asked (bpf_skc_lookup_tcp / bpf_sk_lookup_udp in the current netns), so a listening port,
 * an established, connecting (SYN-SENT, simultaneous open), half-open (request) or
 * time-wait socket and a bound UDP socket all keep working, and the socket found is released
 * at once. The host's own outgoing connections find their sockets: their SYN-ACKs, ACKs and
 * FINs pass. A segment to a listening unprotected port passes whatever its flags: a stray ACK
 * there draws the kernel's RST as normal TCP does (it could also be a syncookie's ACK), and an
 * open port is not a closed one; the requirement is that a protected port and a closed one
 * look alike, and they do. A RST is never looked at (the kernel never answers one). Only
 * destinations on a protected address (spak_protected_addrs, wildcards included) are judged,
 * so traffic the host forwards to other addresses is left alone. Multicast and broadcast
 * datagrams pass: the kernel never answers them with an ICMP error. A segment that arrives
 * after its socket is gone (a late retransmission after time-wait) is dropped, not answered.
 *
 * Cost. Stealth off: a TCP segment to a port no destination protects pays the config's
 * inlined array read and one flag test (before: a flags test, and the config read for a pure
 * SYN only); a UDP datagram the same as before. Stealth on: every TCP segment but a RST to a
 * port no destination protects (on a guarded port: to an address it is not protected on, with
 * no flow) pays one or two hash lookups (protected address, then the family's wildcard) and,
 * on a protected address, one socket lookup (bpf_skc_lookup_tcp: the established hash, then
 * the listeners). That includes established traffic of unprotected services and replies to
 * the host's own connections on a protected address. The established-flow path of protected
 * destinations and their SYN checks do not come here.
 */
#ifndef SPAK_STEALTH_H
#define SPAK_STEALTH_H

#include <linux/bpf.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include "spak_server_maps.h"
#include "spak_verdict.h"
#include "spak_parse.h"
#include "spak_tcp.h"
#include "spak_dest.h"
#include "spak_flowkey.h"

static __always_inline int stealth_on(__u32 flag)
{
	__u32 zero = 0;
	struct spak_config *cfg = bpf_map_lookup_elem(&spak_config, &zero);

	return cfg && (cfg->flags & flag);
}

/* The 4-tuple as the socket lookup helpers take it, from a flow key's 16-byte addresses. */
static __always_inline void stealth_tuple(struct bpf_sock_tuple *t, const struct spak_flow_key *fk, int v4)
{
	if (v4) {
		__builtin_memcpy(&t->ipv4.saddr, fk->saddr + 12, 4);
		__builtin_memcpy(&t->ipv4.daddr, fk->daddr + 12, 4);
		t->ipv4.sport = fk->sport;
		t->ipv4.dport = fk->dport;
	} else {
		__builtin_memcpy(t->ipv6.saddr, fk->saddr, 16);
		__builtin_memcpy(t->ipv6.daddr, fk->daddr, 16);
		t->ipv6.sport = fk->sport;
		t->ipv6.dport = fk->dport;
	}
}

/* Does the kernel have a TCP socket (listening, connecting, established, time-wait) for it? */
static __always_inline int tcp_socket_exists(void *ctx, const struct spak_flow_key *fk, int v4)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;

	stealth_tuple(&t, fk, v4);
	if (v4)
		sk = bpf_skc_lookup_tcp(ctx, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	else
		sk = bpf_skc_lookup_tcp(ctx, &t, sizeof(t.ipv6), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	bpf_sk_release(sk);
	return 1;
}

static __always_inline int udp_socket_exists(void *ctx, const struct spak_flow_key *fk, int v4)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;

	stealth_tuple(&t, fk, v4);
	if (v4)
		sk = bpf_sk_lookup_udp(ctx, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	else
		sk = bpf_sk_lookup_udp(ctx, &t, sizeof(t.ipv6), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	bpf_sk_release(sk);
	return 1;
}

/*
 * A TCP segment that no destination protects (flags: its TCP flags); fk holds its addresses
 * and ports. Passes with `reason` unless its address is protected and the kernel has no
 * socket for it; the drop says whether it was a pure SYN or any other segment.
 */
static __always_inline int stealth_tcp_judge(void *ctx, const struct spak_flow_key *fk, __u8 flags, int v4,
					     __u32 reason)
{
	if (!addr_protected(fk->daddr, v4) || tcp_socket_exists(ctx, fk, v4))
		return pass(reason);
	return drop(spak_tcp_pure_syn(flags) ? SPAK_SRV_DROP_STEALTH_SYN : SPAK_SRV_DROP_STEALTH_SEGMENT);
}

static __always_inline int stealth_tcp(void *ctx, const struct spak_flow_key *fk, __u8 flags, int v4, __u32 reason)
{
	if (!stealth_on(SPAK_CFG_STEALTH_SYN) || (flags & SPAK_TCP_RST))
		return pass(reason);
	return stealth_tcp_judge(ctx, fk, flags, v4, reason);
}

/* Multicast or broadcast: no ICMP error is ever sent for these (RFC 1122, RFC 4443). */
static __always_inline int group_addr(const __u8 daddr[16], int v4)
{
	return v4 ? daddr[12] >= 224 : daddr[0] == 0xff;
}

/* The same for a UDP datagram (or first fragment) that no destination protects. */
static __always_inline int stealth_udp_judge(void *ctx, const struct spak_flow_key *fk, int v4, __u32 reason)
{
	if (group_addr(fk->daddr, v4) || !addr_protected(fk->daddr, v4) || udp_socket_exists(ctx, fk, v4))
		return pass(reason);
	return drop(SPAK_SRV_DROP_STEALTH_UDP);
}

static __always_inline int stealth_udp(void *ctx, const struct spak_flow_key *fk, int v4, __u32 reason)
{
	if (!stealth_on(SPAK_CFG_STEALTH_UDP))
		return pass(reason);
	return stealth_udp_judge(ctx, fk, v4, reason);
}

/* TCP to a port no destination protects (the dispatcher's common case): stealth off ends at the flag. */
static __always_inline int tcp_unguarded(void *ctx, struct tcphdr *tcp, struct iphdr *ip4, struct ipv6hdr *ip6)
{
	struct spak_flow_key fk;
	__u8 flags;

	if (!stealth_on(SPAK_CFG_STEALTH_SYN))
		return pass(SPAK_SRV_PASS_OTHER);
	flags = spak_tcp_flags(tcp);
	if (flags & SPAK_TCP_RST)
		return pass(SPAK_SRV_PASS_OTHER);
	/* Filled only once stealth is known on. */
	spak_flow_key_fill(&fk, ip4, ip6, tcp->source, tcp->dest, IPPROTO_TCP);
	return stealth_tcp_judge(ctx, &fk, flags, ip4 != NULL, SPAK_SRV_PASS_OTHER);
}

/* UDP to a port no destination protects for UDP (nor the knock port). */
static __always_inline int udp_unguarded(void *ctx, struct udphdr *udp, struct iphdr *ip4, struct ipv6hdr *ip6)
{
	struct spak_flow_key fk;

	if (!stealth_on(SPAK_CFG_STEALTH_UDP))
		return pass(SPAK_SRV_PASS_OTHER);
	spak_flow_key_fill(&fk, ip4, ip6, udp->source, udp->dest, IPPROTO_UDP);
	return stealth_udp_judge(ctx, &fk, ip4 != NULL, SPAK_SRV_PASS_OTHER);
}

#endif /* SPAK_STEALTH_H */
