/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Protected destinations: which (address, port) a packet is for, answered from the
 * per-port slot (two inlined array reads) and, for ports with several addresses,
 * from the spak_protected hash.
 */
#ifndef SPAK_DEST_H
#define SPAK_DEST_H

#include "spak_server_maps.h"
#include "spak_verdict.h"
#include "spak_parse.h"

/* The all-zero address of a family: ::ffff:0.0.0.0 for IPv4, :: for IPv6. */
static __always_inline void wildcard_of(__u8 out[16], int v4)
{
	__u32 *w = (__u32 *)out;

	w[0] = 0;
	w[1] = 0;
	w[2] = v4 ? bpf_htonl(0x0000ffff) : 0;
	w[3] = 0;
}

static __always_inline int is_wildcard(const __u8 a[16], int v4)
{
	__u8 any[16];

	wildcard_of(any, v4);
	return spak_addr_eq(a, any);
}

/* Is any destination on this TCP port protected? One inlined array read (spak_ports). */
static __always_inline int tcp_port_guarded(__be16 dport)
{
	__u16 port = bpf_ntohs(dport);
	__u32 word_idx = port >> 6;
	__u64 *word = bpf_map_lookup_elem(&spak_ports, &word_idx);

	return word && (*word & (1ULL << (port & 63)));
}

static __always_inline struct spak_dest_info *dest_at(__u32 idx)
{
	return bpf_map_lookup_elem(&spak_dests, &idx);
}

/* The protected destination (daddr, dport) belongs to, or NULL. */
static __always_inline struct spak_dest_info *lookup_dest(const __u8 daddr[16], __be16 dport, int v4)
{
	struct spak_dest d = { .port = dport };
	struct spak_port_slot *slot;
	__u32 port = bpf_ntohs(dport);
	__u32 *idx;

	slot = bpf_map_lookup_elem(&spak_port_slots, &port);
	if (!slot)
		return NULL;
	if (slot->mode == SPAK_PORT_ANY)
		return dest_at(slot->dest_idx);
	if (slot->mode == SPAK_PORT_SINGLE) {
		if (spak_addr_eq(slot->addr, daddr) || is_wildcard(slot->addr, v4))
			return dest_at(slot->dest_idx);
		return NULL;
	}
	if (slot->mode != SPAK_PORT_SEVERAL)
		return NULL;
	__builtin_memcpy(d.addr, daddr, 16);
	idx = bpf_map_lookup_elem(&spak_protected, &d);
	if (!idx) {
		wildcard_of(d.addr, v4);
		idx = bpf_map_lookup_elem(&spak_protected, &d);
		if (!idx)
			return NULL;
	}
	return dest_at(*idx);
}

static __always_inline int addr_protected(const __u8 daddr[16], int v4)
{
	__u8 any[16];

	if (bpf_map_lookup_elem(&spak_protected_addrs, daddr))
		return 1;
	wildcard_of(any, v4);
	return bpf_map_lookup_elem(&spak_protected_addrs, any) != NULL;
}

/* Fragments and broken headers: dropped when they may be for a protected address. */
static __always_inline int drop_if_protected_addr(const __u8 daddr[16], int v4, __u32 reason)
{
	if (addr_protected(daddr, v4))
		return drop(reason);
	return pass(SPAK_SRV_PASS_OTHER);
}

#endif /* SPAK_DEST_H */
