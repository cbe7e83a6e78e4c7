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
	__u64 flow_idle_ns;     /* a flow idle this long is gone */
	__u64 flow_fin_ns;      /* after FIN, the flow lives this long for the close handshake */
	__u32 step_window;      /* accept steps within +-window of the server's */
	__u32 reserved;         /* 0 */
};

/* A protected destination (server) or a target destination (client). */
struct spak_dest {
	__u8 addr[16];
	__be16 port;
	__u16 pad;
};

/*
 * Server: what a protected destination binds into the tag. Behind DNAT the client
 * dials another address or port than the one the server sees; the flags say which
 * of tag_addr / tag_port replace the packet's own destination in the tag input.
 */
#define SPAK_PROTECT_TAG_ADDR 1
#define SPAK_PROTECT_TAG_PORT 2

struct spak_protect {
	__u8 tag_addr[16];
	__be16 tag_port;
	__u16 flags;
};

/*
 * Server: per-port fast path. Most ports protect one address; the slot answers for it
 * with one inlined array read instead of a hash lookup. SPAK_PORT_SEVERAL (or an empty
 * slot) sends the lookup to the spak_protected hash.
 */
#define SPAK_PORT_UNSET 0
#define SPAK_PORT_SINGLE 1
#define SPAK_PORT_SEVERAL 2

struct spak_port_slot {
	__u8 addr[16];              /* the one protected address (a family's all-zero = any) */
	struct spak_protect protect;
	__u32 mode;
};

/* Client: the key a destination is tagged with. */
struct spak_target {
	struct spak_key key;
	__u16 key_id;
	__u16 pad[3];
};

/* Server: key table, indexed by key id; several ids can be valid at once (rotation). */
struct spak_key_slot {
	struct spak_key key;
	__u32 valid;
	__u32 pad;
};

/* A TCP flow, as the server sees it arrive. */
struct spak_flow_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
};

#define SPAK_FLOW_OPEN 0
#define SPAK_FLOW_CLOSING 1

struct spak_flow {
	__u64 last_seen_ns;     /* CLOCK_MONOTONIC */
	__u32 state;            /* SPAK_FLOW_OPEN or SPAK_FLOW_CLOSING */
	__u32 pad;
};

/* Replay table: who used a tag first. */
struct spak_replay {
	__u8 saddr[16];
	__be16 sport;
	__u16 pad;
	__u32 time_step;
};

#define SPAK_PORT_WORDS 1024    /* 65536 ports, one bit each */

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
