// SPDX-License-Identifier: GPL-2.0-only
/*
 * spak server: XDP verification of the SYN tag, replay refusal and flow gating.
 *
 * Hot paths, cheapest first:
 *   - not TCP, or TCP to a port no destination protects: one inlined array read.
 *   - segment of a known flow: one flow-table lookup.
 *   - SYN to a protected destination: option walk, one SipHash of 32 bytes, replay
 *     and flow table updates.
 * Every verdict increments a per-CPU counter with its reason (spak_wire.h).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "spak_maps.h"
#include "spak_parse.h"
#include "spak_siphash.h"

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

/* Refresh a flow's last-seen time at most this often: fewer writes to a shared line. */
#define FLOW_TOUCH_NS 1000000000ULL

/* Bit per destination port: is any destination on this port protected? */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SPAK_PORT_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} spak_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct spak_port_slot);
} spak_port_slots SEC(".maps");

/* Protected (address, port); the all-zero address of a family is a wildcard. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct spak_dest);
	__type(value, struct spak_protect);
} spak_protected SEC(".maps");

/* Addresses with at least one protected port: fragments to them are dropped. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u8[16]);
	__type(value, __u32);
} spak_protected_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct spak_key_slot);
} spak_keys SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct spak_flow_key);
	__type(value, struct spak_flow);
} spak_flows SEC(".maps");

/* Tag -> the source that used it first. Only valid tags get in, so a flood cannot evict. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct spak_replay);
} spak_replay SEC(".maps");

SPAK_COUNTERS(spak_server_counters, SPAK_SRV_REASON_MAX)

static __always_inline int pass(__u32 reason)
{
	spak_server_counters_inc(reason);
	return XDP_PASS;
}

static __always_inline int drop(__u32 reason)
{
	spak_server_counters_inc(reason);
	return XDP_DROP;
}

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

static __always_inline struct spak_protect *lookup_protected(const __u8 daddr[16], __be16 dport,
							      int v4)
{
	struct spak_dest d = { .port = dport };
	struct spak_port_slot *slot;
	struct spak_protect *p;
	__u32 port = bpf_ntohs(dport);

	slot = bpf_map_lookup_elem(&spak_port_slots, &port);
	if (slot && slot->mode == SPAK_PORT_SINGLE) {
		if (spak_addr_eq(slot->addr, daddr) || is_wildcard(slot->addr, v4))
			return &slot->protect;
		return NULL;
	}
	__builtin_memcpy(d.addr, daddr, 16);
	p = bpf_map_lookup_elem(&spak_protected, &d);
	if (p)
		return p;
	wildcard_of(d.addr, v4);
	return bpf_map_lookup_elem(&spak_protected, &d);
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

static __always_inline int same_source(const struct spak_replay *r, const struct spak_flow_key *fk)
{
	return r->sport == fk->sport && spak_addr_eq(r->saddr, fk->saddr);
}

static __always_inline int handle_syn(struct tcphdr *tcp, void *end, struct spak_flow_key *fk,
				      int v4)
{
	struct spak_protect *prot;
	struct spak_key_slot *slot;
	struct spak_config *cfg;
	struct spak_tag_input in;
	struct spak_replay *seen;
	struct spak_flow flow = {};
	struct spak_opt *opt;
	__u32 hdr_len, opt_off = 0, key_id, zero = 0;
	__u64 now, now_step, step, tag, got;
	int found, retransmit = 0;

	prot = lookup_protected(fk->daddr, fk->dport, v4);
	if (!prot)
		return pass(SPAK_SRV_PASS_UNPROTECTED);

	hdr_len = tcp->doff * 4;
	if (hdr_len < sizeof(*tcp) || (void *)tcp + hdr_len > end)
		return drop(SPAK_SRV_DROP_MALFORMED);
	found = spak_find_option((__u8 *)(tcp + 1), end, hdr_len - sizeof(*tcp), &opt_off);
	if (found == SPAK_OPT_MALFORMED)
		return drop(SPAK_SRV_DROP_MALFORMED);
	if (found == SPAK_OPT_ABSENT)
		return drop(SPAK_SRV_DROP_NO_OPTION);
	opt = (void *)(tcp + 1) + (opt_off & 0x3f);
	/* The walk checked len against the header: a short one is ours, just wrong. */
	if ((void *)opt + 2 > end)
		return drop(SPAK_SRV_DROP_MALFORMED);
	if (opt->len != SPAK_OPT_LEN)
		return drop(SPAK_SRV_DROP_BAD_OPTION);
	if ((void *)(opt + 1) > end)
		return drop(SPAK_SRV_DROP_MALFORMED);
	if (opt->version != SPAK_VERSION || opt->reserved != 0)
		return drop(SPAK_SRV_DROP_BAD_OPTION);

	key_id = bpf_ntohs(opt->key_id);
	slot = bpf_map_lookup_elem(&spak_keys, &key_id);
	if (!slot || !slot->valid)
		return drop(SPAK_SRV_DROP_UNKNOWN_KEY);

	cfg = bpf_map_lookup_elem(&spak_config, &zero);
	if (!cfg)
		return drop(SPAK_SRV_DROP_MALFORMED);
	now = bpf_ktime_get_coarse_ns();
	/* step_ns == 0 (not configured) divides to 0 in BPF: every step is then "future". */
	now_step = (now + cfg->clock_offset_ns) / cfg->step_ns;
	step = bpf_ntohl(opt->time_step);
	if (step + cfg->step_window < now_step)
		return drop(SPAK_SRV_DROP_STALE_STEP);
	if (step > now_step + cfg->step_window)
		return drop(SPAK_SRV_DROP_FUTURE_STEP);

	in.exid = bpf_htons(SPAK_EXID);
	in.version = SPAK_VERSION;
	in.reserved = 0;
	in.key_id = opt->key_id;
	in.dport = (prot->flags & SPAK_PROTECT_TAG_PORT) ? prot->tag_port : fk->dport;
	in.time_step = opt->time_step;
	in.seq = tcp->seq;
	if (prot->flags & SPAK_PROTECT_TAG_ADDR)
		__builtin_memcpy(in.daddr, prot->tag_addr, 16);
	else
		__builtin_memcpy(in.daddr, fk->daddr, 16);
	tag = spak_tag(&slot->key, &in);
	__builtin_memcpy(&got, opt->tag, sizeof(got));
	if (tag != got)
		return drop(SPAK_SRV_DROP_BAD_TAG);

	/* A valid tag belongs to the first source that used it, for as long as it is valid. */
	seen = bpf_map_lookup_elem(&spak_replay, &got);
	if (!seen) {
		struct spak_replay first = { .sport = fk->sport, .time_step = (__u32)step };

		__builtin_memcpy(first.saddr, fk->saddr, 16);
		if (bpf_map_update_elem(&spak_replay, &got, &first, BPF_NOEXIST))
			seen = bpf_map_lookup_elem(&spak_replay, &got); /* lost a race */
	}
	if (seen) {
		if (!same_source(seen, fk))
			return drop(SPAK_SRV_DROP_REPLAY);
		retransmit = 1;
	}

	/* A retransmitted SYN finds its flow: touching it is far cheaper than a new LRU entry. */
	if (retransmit) {
		struct spak_flow *known = bpf_map_lookup_elem(&spak_flows, fk);

		if (known && known->state == SPAK_FLOW_OPEN) {
			known->last_seen_ns = now;
			return pass(SPAK_SRV_PASS_RETRANSMIT);
		}
	}
	flow.last_seen_ns = now;
	flow.state = SPAK_FLOW_OPEN;
	bpf_map_update_elem(&spak_flows, fk, &flow, BPF_ANY);
	return pass(retransmit ? SPAK_SRV_PASS_RETRANSMIT : SPAK_SRV_PASS_VALID_SYN);
}

static __always_inline int handle_segment(__u8 flags, struct spak_flow_key *fk, int v4)
{
	struct spak_flow *flow = bpf_map_lookup_elem(&spak_flows, fk);
	int expired = 0;

	if (flow) {
		__u32 zero = 0;
		struct spak_config *cfg = bpf_map_lookup_elem(&spak_config, &zero);
		__u64 now = bpf_ktime_get_coarse_ns();
		__s64 idle = (__s64)(now - flow->last_seen_ns);
		__u64 limit;

		if (!cfg)
			return drop(SPAK_SRV_DROP_MALFORMED);
		limit = flow->state == SPAK_FLOW_OPEN ? cfg->flow_idle_ns : cfg->flow_fin_ns;
		if (idle <= (__s64)limit) {
			/*
			 * FIN or RST: we keep no sequence numbers, so only the TCP stack can tell a
			 * real one from a blind injection (RFC 5961). The flow is kept for the close
			 * handshake and then expires; the daemon reopens it if the kernel's socket
			 * is in fact still established.
			 */
			if (flags & (TCP_FLAG_FIN | TCP_FLAG_RST)) {
				if (flow->state == SPAK_FLOW_OPEN) {
					flow->state = SPAK_FLOW_CLOSING;
					flow->last_seen_ns = now;
				}
				return pass(SPAK_SRV_PASS_FLOW_END);
			}
			if (flow->state == SPAK_FLOW_OPEN && idle > (__s64)FLOW_TOUCH_NS)
				flow->last_seen_ns = now;
			return pass(SPAK_SRV_PASS_FLOW);
		}
		bpf_map_delete_elem(&spak_flows, fk);
		expired = 1;
	}
	if (!lookup_protected(fk->daddr, fk->dport, v4))
		return pass(SPAK_SRV_PASS_UNPROTECTED);
	return drop(expired ? SPAK_SRV_DROP_FLOW_EXPIRED : SPAK_SRV_DROP_FLOW_MISS);
}

SEC("xdp")
int spak_server(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct spak_flow_key fk;
	struct iphdr *ip4 = NULL;
	struct ipv6hdr *ip6 = NULL;
	struct tcphdr *tcp;
	__u16 proto, port;
	__u32 word_idx;
	__u64 *word;
	__u8 flags;
	int l3;

	l3 = spak_parse_eth(data, end, &proto);
	if (l3 < 0)
		return pass(SPAK_SRV_PASS_OTHER);

	if (proto == bpf_htons(ETH_P_IP)) {
		ip4 = data + (l3 & 0xff);
		if ((void *)(ip4 + 1) > end)
			return drop(SPAK_SRV_DROP_MALFORMED);
		if (ip4->protocol != IPPROTO_TCP)
			return pass(SPAK_SRV_PASS_OTHER);
		if (ip4->frag_off & bpf_htons(SPAK_IP_MF | SPAK_IP_OFFSET)) {
			spak_addr_v4(fk.daddr, ip4->daddr);
			return drop_if_protected_addr(fk.daddr, 1, SPAK_SRV_DROP_FRAGMENT);
		}
		if (ip4->ihl < 5)
			return drop(SPAK_SRV_DROP_MALFORMED);
		tcp = (void *)ip4 + ip4->ihl * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		__u8 nexthdr = 0;
		int l4off = 0, r;

		ip6 = data + (l3 & 0xff);
		if ((void *)(ip6 + 1) > end)
			return drop(SPAK_SRV_DROP_MALFORMED);
		if (ip6->nexthdr == IPPROTO_TCP) {
			tcp = (void *)(ip6 + 1);
		} else {
			r = spak_ipv6_skip_ext(data, end, ip6, &nexthdr, &l4off);
			if (r != SPAK_V6_OK) {
				spak_addr_v6(fk.daddr, &ip6->daddr);
				return drop_if_protected_addr(fk.daddr, 0,
							      r == SPAK_V6_FRAGMENT ?
							      SPAK_SRV_DROP_FRAGMENT :
							      SPAK_SRV_DROP_MALFORMED);
			}
			if (nexthdr != IPPROTO_TCP)
				return pass(SPAK_SRV_PASS_OTHER);
			tcp = data + (l4off & SPAK_IPV6_MAX_EXT_OFF);
		}
	} else {
		return pass(SPAK_SRV_PASS_OTHER);
	}

	if ((void *)(tcp + 1) > end) {
		if (ip4)
			spak_addr_v4(fk.daddr, ip4->daddr);
		else if (ip6)
			spak_addr_v6(fk.daddr, &ip6->daddr);
		return drop_if_protected_addr(fk.daddr, ip4 != NULL, SPAK_SRV_DROP_MALFORMED);
	}

	/* The common case for traffic we do not guard ends here. */
	port = bpf_ntohs(tcp->dest);
	word_idx = port >> 6;
	word = bpf_map_lookup_elem(&spak_ports, &word_idx);
	if (!word || !(*word & (1ULL << (port & 63))))
		return pass(SPAK_SRV_PASS_OTHER);

	fk.sport = tcp->source;
	fk.dport = tcp->dest;
	if (ip4) {
		spak_addr_v4(fk.saddr, ip4->saddr);
		spak_addr_v4(fk.daddr, ip4->daddr);
	} else if (ip6) {
		spak_addr_v6(fk.saddr, &ip6->saddr);
		spak_addr_v6(fk.daddr, &ip6->daddr);
	}

	flags = ((__u8 *)tcp)[13];
	if ((flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN)
		return handle_syn(tcp, end, &fk, ip4 != NULL);
	return handle_segment(flags, &fk, ip4 != NULL);
}

char LICENSE[] SEC("license") = "GPL";
