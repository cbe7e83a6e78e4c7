/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Map keys, values and definitions shared by the server (XDP) and client (TC)
 * programs. src/wire/layout.ts mirrors the structs; sizes are checked in tests.
 * Addresses are always 16 bytes: IPv4 is stored IPv4-mapped (::ffff:a.b.c.d).
 */
#ifndef SPAK_MAPS_H
#define SPAK_MAPS_H

#include <linux/types.h>
#include "spak_wire.h"

/* Written by user space, read on every packet (index 0). */
struct spak_config {
	__s64 clock_offset_ns;  /* CLOCK_REALTIME - CLOCK_MONOTONIC, refreshed by the daemon */
	__u64 step_ns;          /* length of one time step in ns (30 s by default) */
	__u32 step_window;      /* accept steps within +-window of the server's */
	__u32 flow_clock_s;     /* the daemon's CLOCK_MONOTONIC seconds, advanced at each refresh */
	__u32 flags;            /* server: SPAK_CFG_STEALTH_* (client: 0) */
	__u32 pad;
};

/* spak_config.flags: stealth for closed ports of protected addresses (spak_stealth.h). */
#define SPAK_CFG_STEALTH_SYN 0x01  /* drop TCP (but a RST) to a port with no socket instead of the RST */
#define SPAK_CFG_STEALTH_UDP 0x02  /* drop a datagram to a port with no socket instead of the ICMP */

/* A protected destination (server) or a target destination (client). */
struct spak_dest {
	__u8 addr[16];
	__be16 port;
	__u16 pad;
};

/*
 * Server: one protected destination, indexed by a slot number user space assigns.
 * Up to SPAK_MAX_KEYS key ids are valid at once (rotation needs two); each carries the
 * SipHash state after the destination's fixed tag input (spak_wire.h). Valid keys
 * come first: the program stops at the first invalid one.
 */
#define SPAK_MAX_KEYS 4
#define SPAK_MAX_DESTS 1024
#define SPAK_DEST_BIND_SOURCE 0x01   /* tags cover the source address */
#define SPAK_DEST_DADDR_AT_RUN 0x02  /* wildcard: the program absorbs the destination address */
#define SPAK_DEST_LISTS 0x04         /* knock mode or always-allow is configured: ask the lists */

struct spak_dest_key {
	__u16 key_id;
	__u16 valid;
	__u32 pad;
	struct spak_sip_state state;
};

struct spak_dest_info {
	__u32 flags;
	__u32 counter_idx;      /* the daemon's stable index into spak_dest_counters (< SPAK_MAX_DESTS) */
	struct spak_dest_key keys[SPAK_MAX_KEYS];
};

/*
 * Server: per-port fast path, an array indexed by port. Most ports protect one address
 * (or every address of one family, or every address): the slot answers with no hash
 * lookup. SPAK_PORT_SEVERAL sends the lookup to the spak_protected hash.
 */
#define SPAK_PORT_UNSET 0
#define SPAK_PORT_SINGLE 1   /* addr, or a family's all-zero address for all of that family */
#define SPAK_PORT_SEVERAL 2
#define SPAK_PORT_ANY 3      /* every address of both families */

struct spak_port_slot {
	__u8 addr[16];
	__u32 mode;
	__u32 dest_idx;
};

/* Client: what a destination's SYNs are tagged with. */
struct spak_target {
	struct spak_sip_state state;  /* after the destination's fixed tag input */
	__u16 key_id;
	__u8 flags;                   /* SPAK_TIN_SOURCE_BOUND */
	__u8 pad[5];
};

/*
 * A TCP or UDP flow, as the server sees it arrive. proto is the IP protocol (6 or 17);
 * pad is zero (the whole key is hashed).
 */
struct spak_flow_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

#define SPAK_FLOW_OPEN 0
#define SPAK_FLOW_CLOSING 1

/*
 * The program never deletes a flow: it cannot tell a blind FIN or RST from a real one,
 * the TCP stack can. The daemon deletes flows whose socket is gone.
 */
struct spak_flow {
	__u32 seen_s;           /* spak_config.flow_clock_s when a packet last passed */
	__u32 state;            /* SPAK_FLOW_OPEN or SPAK_FLOW_CLOSING */
};

/* Replay table: who used a tag first, and the tag's time step (the daemon expires by it). */
struct spak_replay {
	__u8 saddr[16];
	__be16 sport;
	__u16 pad;
	__u32 time_step;
};

/*
 * Server, knock mode (index 0 of spak_knock_config), written by the daemon; port 0 = off.
 * Two rate limits as GCRAs (a token bucket kept as one timestamp), with the same numbers:
 * per source address for datagrams that fail the prefilter, per client id for knocks that
 * pass it (spak_knock.h). interval_ns = 1 s / rate, burst_ns = burst * interval_ns, so the
 * packet path neither multiplies nor divides. Defaults: 10 knocks/s, burst 20.
 */
struct spak_knock_config {
	__u64 interval_ns;
	__u64 burst_ns;
	__be16 port;
	__u8 pad[6];
};

#define SPAK_KNOCK_DEFAULT_RATE 10
#define SPAK_KNOCK_DEFAULT_BURST 20
#define SPAK_MAX_KNOCK_CLIENTS 4096
#define SPAK_KNOCK_RATE_CAPACITY 65536
#define SPAK_KNOCK_ACCEPTED_CAPACITY 4096

/*
 * Server, knock mode: the allowlist (spak_allow.h). Key: a source address, a protocol
 * (6 or 17) and a destination port; pad is zero. Times are CLOCK_MONOTONIC ns
 * (bpf_ktime_get_coarse_ns): the entry admits until expires_ns; idle_ns (0: off) pushes
 * expires_ns to now + idle_ns when a packet is admitted through it; grace_ns (0: off)
 * pulls expires_ns in to now + grace_ns at a FIN or RST from the source.
 */
struct spak_allow_key {
	__u8 addr[16];
	__be16 port;
	__u8 proto;
	__u8 pad;
};

struct spak_allow {
	__u64 expires_ns;
	__u64 idle_ns;
	__u64 grace_ns;
};

/*
 * Server: the always-allow list, an LPM trie over the 16-byte (IPv4-mapped) address.
 * prefixlen counts bits of that form: an IPv4 /24 is 96 + 24, one IPv4 address 128.
 */
struct spak_always_key {
	__u32 prefixlen;
	__u8 addr[16];
};

#define SPAK_DEFAULT_ALLOW_CAPACITY 65536
#define SPAK_MAX_ALWAYS_ALLOW 16384

#define SPAK_PORT_WORDS 1024    /* 65536 ports, one bit each */
#define SPAK_DEFAULT_REPLAY_CAPACITY 131072
#define SPAK_DEFAULT_FLOW_CAPACITY 131072

#ifdef __BPF__
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct spak_config);
} spak_config SEC(".maps");

/* Counts one verdict on this CPU. The array is indexed by the reason enums. */
#define SPAK_COUNTERS(name, nreasons)                        \
	struct {                                             \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);     \
		__uint(max_entries, nreasons);               \
		__type(key, __u32);                          \
		__type(value, __u64);                        \
	} name SEC(".maps");                                 \
	static __always_inline void name##_inc(__u32 reason) \
	{                                                    \
		__u64 *c = bpf_map_lookup_elem(&name, &reason); \
		if (c)                                       \
			*c += 1;                             \
	}

#endif /* __BPF__ */
#endif /* SPAK_MAPS_H */
