/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * The server's maps; the verdict helpers that count into spak_server_counters are in
 * spak_verdict.h. Sizes marked "set by user space" are defaults the daemon resizes before
 * load (--replay-capacity, --flow-capacity). Every map here is pinned under
 * /sys/fs/bpf/spak/<interface>/; the state maps (flows, replay, knock rate, allowlist,
 * counters) are adopted by the next daemon, the others are written anew by it and swapped
 * in with the program.
 */
#ifndef SPAK_SERVER_MAPS_H
#define SPAK_SERVER_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "spak_maps.h"

/* Bit per destination port: is any destination on this port protected? */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SPAK_PORT_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} spak_ports SEC(".maps");

/* Per-port answer of "which destination is this?" for the common shapes. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct spak_port_slot);
} spak_port_slots SEC(".maps");

/* (address, port) -> destination slot, for ports with several protected addresses. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SPAK_MAX_DESTS);
	__type(key, struct spak_dest);
	__type(value, __u32);
} spak_protected SEC(".maps");

/* Destination slot -> flags and the SipHash states of its valid keys. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SPAK_MAX_DESTS);
	__type(key, __u32);
	__type(value, struct spak_dest_info);
} spak_dests SEC(".maps");

/* Addresses with at least one protected port: fragments to them are dropped. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SPAK_MAX_DESTS);
	__type(key, __u8[16]);
	__type(value, __u32);
} spak_protected_addrs SEC(".maps");

/*
 * Flows. A plain hash, not an LRU: an LRU would silently forget live connections
 * when full; this one refuses the new SYN instead (drop_flow_full). Set by user space.
 * Preallocated: measured side by side, a first-sight SYN (two inserts) cost about a
 * third less than with BPF_F_NO_PREALLOC, for memory taken up front (about 12 MB at
 * the default size).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SPAK_DEFAULT_FLOW_CAPACITY);
	__type(key, struct spak_flow_key);
	__type(value, struct spak_flow);
} spak_flows SEC(".maps");

/*
 * Tag -> the source that used it first. A plain hash the daemon expires by time step:
 * an LRU would evict tags that are still valid under load and let a capture replay.
 * Full: the SYN is refused (drop_replay_full). Only valid tags get in. Set by user space.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SPAK_DEFAULT_REPLAY_CAPACITY);
	__type(key, __u64);
	__type(value, struct spak_replay);
} spak_replay SEC(".maps");

/* Bit per destination port: is any destination on this port protected for UDP? */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SPAK_PORT_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} spak_udp_ports SEC(".maps");

/*
 * (address, port) -> the destination's counter index (spak_dest_counters) for protected UDP
 * destinations; a family's all-zero address stands for every address of that family. UDP has
 * no tags, so it needs no per-port slot or keys: a port whose bit is set pays one or two
 * lookups here.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SPAK_MAX_DESTS);
	__type(key, struct spak_dest);
	__type(value, __u32);
} spak_udp_protected SEC(".maps");

/*
 * Knock allowlist: (source, protocol, port) -> expiry. A state map, written by the daemon
 * (one writer: src/server/allowlist.ts), read and extended here. Not an LRU: an entry
 * must not vanish under load while its window is open. Set by user space.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SPAK_DEFAULT_ALLOW_CAPACITY);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct spak_allow_key);
	__type(value, struct spak_allow);
} spak_allow SEC(".maps");

/* Always-allow list: exact addresses and CIDRs, both families. A config map. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, SPAK_MAX_ALWAYS_ALLOW);
	__uint(map_flags, BPF_F_NO_PREALLOC);   /* required by the LPM trie */
	__type(key, struct spak_always_key);
	__type(value, __u32);
} spak_always SEC(".maps");

/* Knock mode: port and rate limit (index 0). A config map. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct spak_knock_config);
} spak_knock_config SEC(".maps");

/* Knock client id (as on the wire, big-endian) -> its prefilter key. A config map. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SPAK_MAX_KNOCK_CLIENTS);
	__type(key, __be32);
	__type(value, struct spak_key);
} spak_knock_clients SEC(".maps");

/*
 * Source address -> the GCRA's theoretical arrival time (ns), charged only by datagrams that
 * fail the prefilter. A state map: a restart must not hand a flooding source a fresh burst.
 * An LRU: sources that stop are forgotten, and a source evicted by a spoofed flood only comes
 * back with a full bucket.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SPAK_KNOCK_RATE_CAPACITY);
	__type(key, __u8[16]);
	__type(value, __u64);
} spak_knock_rate SEC(".maps");

/*
 * Knock replay memory (src/server/knocknonces.ts is its one writer; no program reads it). Kind
 * SPAK_NONCE_SEEN: (client id, nonce) -> the knock's timestamp and when it was recorded. Kind
 * SPAK_NONCE_FENCE (client and nonce zero): the fence, the highest timestamp ever forgotten; a
 * knock stamped at or before it is refused. A state map, pinned: it outlives every daemon and
 * only root (CAP_BPF) can touch it. Not an LRU: full, it refuses knocks rather than forget.
 * Set by user space (--replay-capacity).
 */
enum spak_nonce_kind { SPAK_NONCE_SEEN = 0, SPAK_NONCE_FENCE = 1 };

struct spak_knock_nonce_key {
	__u32 kind;
	__be32 client_id;
	__u8 nonce[16];
};

struct spak_knock_nonce {
	__u64 timestamp;   /* the knock's own, unix seconds (the fence: the fence) */
	__u64 recorded;    /* when the daemon recorded it, unix seconds */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SPAK_DEFAULT_REPLAY_CAPACITY);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct spak_knock_nonce_key);
	__type(value, struct spak_knock_nonce);
} spak_knock_nonces SEC(".maps");

/*
 * Client id (as on the wire) -> the GCRA's theoretical arrival time (ns) of the knocks that
 * passed its prefilter: what a client may cost the daemon in HPKE opens, whoever sends them.
 * A state map, written by the program only. An LRU sized for every client: only ids whose
 * tag verified get in, so it never evicts a live client's entry.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SPAK_MAX_KNOCK_CLIENTS);
	__type(key, __be32);
	__type(value, __u64);
} spak_knock_client_rate SEC(".maps");

/*
 * Prefilter tag (datagram bytes 8..15, as they are) of each knock the daemon accepted ->
 * the client id: an exact repeat dies here (drop_knock_repeat) instead of costing an HPKE
 * open. Written by user space only (src/server/knockmaps.ts markKnockAccepted), from the
 * knock service when it grants. A state map. An LRU: only accepted knocks get in, so
 * eviction forgets the oldest; an evicted repeat is still refused by the daemon's replay
 * memory (spak_knock_nonces), at the cost of one open within its client's budget.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SPAK_KNOCK_ACCEPTED_CAPACITY);
	__type(key, __u64);
	__type(value, __be32);
} spak_knock_accepted SEC(".maps");

SPAK_COUNTERS(spak_server_counters, SPAK_SRV_REASON_MAX)

/*
 * Per protected destination, per outcome of a new-connection decision (spak_dest_outcome):
 * index counter_idx * SPAK_DOUT_MAX + outcome. Written afresh by each daemon, which assigns
 * the counter indexes (src/server/destcounters.ts).
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SPAK_MAX_DESTS * SPAK_DOUT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} spak_dest_counters SEC(".maps");

#endif /* SPAK_SERVER_MAPS_H */
