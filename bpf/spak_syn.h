/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * SYN verification: find our option (spak_tcp.h), check key id and time step, resume
 * SipHash from the destination's precomputed state, refuse a tag another source used first,
 * and record the flow (spak_flow.h). Map lookups on this path: two inlined arrays (port
 * slot, destination) and the config; a valid SYN adds two inserts (replay, flow). A SYN that
 * fails any of it may still be admitted by the allowlists (spak_allow.h), asked only then.
 */
#ifndef SPAK_SYN_H
#define SPAK_SYN_H

#include "spak_server_maps.h"
#include "spak_verdict.h"
#include "spak_parse.h"
#include "spak_tcp.h"
#include "spak_siphash.h"
#include "spak_dest.h"
#include "spak_allow.h"
#include "spak_destcount.h"
#include "spak_flow.h"
#include "spak_stealth.h"

#define SPAK_E2BIG 7
#define SPAK_ENOMEM 12

/* The key state of key_id among the destination's valid keys (valid ones come first). */
static __always_inline const struct spak_sip_state *dest_key(const struct spak_dest_info *dest,
							      __u16 key_id)
{
#pragma unroll
	for (int i = 0; i < SPAK_MAX_KEYS; i++) {
		if (!dest->keys[i].valid)
			return NULL;
		if (dest->keys[i].key_id == key_id)
			return &dest->keys[i].state;
	}
	return NULL;
}

static __always_inline int same_source(const struct spak_replay *r, const struct spak_flow_key *fk)
{
	return r->sport == fk->sport && spak_addr_eq(r->saddr, fk->saddr);
}

/*
 * A SYN without a valid tag: dropped for why, unless the allowlists admit its source. They
 * are asked only where knock mode or always-allow is configured (SPAK_DEST_LISTS): a
 * SYN-only server pays nothing for them on its drop path.
 */
static __always_inline int syn_refused(const struct spak_flow_key *fk, const struct spak_dest_info *dest,
				       __u32 why)
{
	__u32 cidx = dest->counter_idx;
	struct spak_config *cfg;
	__u32 zero = 0;
	int how;

	if (!(dest->flags & SPAK_DEST_LISTS))
		return dest_drop(cidx, why);
	how = admit(fk, 0);

	if (how == SPAK_ADMIT_NO)
		return dest_drop(cidx, why);
	cfg = bpf_map_lookup_elem(&spak_config, &zero);
	if (!cfg)
		return dest_drop(cidx, why);
	return record_flow(fk, cfg, how == SPAK_ADMIT_ALWAYS ? SPAK_SRV_PASS_ALWAYS : SPAK_SRV_PASS_ALLOWLISTED, cidx);
}

static __always_inline int handle_syn(void *ctx, struct tcphdr *tcp, void *end,
				      const struct spak_flow_key *fk, int v4)
{
	const struct spak_sip_state *state;
	struct spak_dest_info *dest;
	struct spak_config *cfg;
	struct spak_replay first = {}, *seen;
	struct spak_flow *known;
	struct spak_opt *opt;
	__u32 hdr_len, opt_off = 0, zero = 0, why;
	__u64 now_step, step, tag, got, step_seq;
	int found, err;

	dest = lookup_dest(fk->daddr, fk->dport, v4);
	if (!dest)
		return stealth_tcp(ctx, fk, SPAK_TCP_SYN, v4, SPAK_SRV_PASS_UNPROTECTED);

	hdr_len = tcp->doff * 4;
	if (hdr_len < sizeof(*tcp) || (void *)tcp + hdr_len > end)
		return dest_drop(dest->counter_idx, SPAK_SRV_DROP_MALFORMED);
	if (spak_linux_syn_layout((__u8 *)(tcp + 1), end, hdr_len - sizeof(*tcp))) {
		found = SPAK_OPT_FOUND;
		opt_off = 20;
	} else {
		found = spak_find_option((__u8 *)(tcp + 1), end, hdr_len - sizeof(*tcp), &opt_off);
	}
	why = SPAK_SRV_DROP_MALFORMED;
	if (found == SPAK_OPT_MALFORMED)
		goto refused;
	why = SPAK_SRV_DROP_NO_OPTION;
	if (found == SPAK_OPT_ABSENT)
		goto refused;
	opt = (void *)(tcp + 1) + (opt_off & 0x3f);
	/* The walk checked len against the header: a short one is ours, just wrong. */
	why = SPAK_SRV_DROP_MALFORMED;
	if ((void *)opt + 2 > end)
		goto refused;
	why = SPAK_SRV_DROP_BAD_OPTION;
	if (opt->len != SPAK_OPT_LEN)
		goto refused;
	why = SPAK_SRV_DROP_MALFORMED;
	if ((void *)(opt + 1) > end)
		goto refused;
	why = SPAK_SRV_DROP_BAD_OPTION;
	if (opt->version != SPAK_VERSION || opt->reserved != 0)
		goto refused;

	why = SPAK_SRV_DROP_UNKNOWN_KEY;
	state = dest_key(dest, bpf_ntohs(opt->key_id));
	if (!state)
		goto refused;

	cfg = bpf_map_lookup_elem(&spak_config, &zero);
	if (!cfg)
		return dest_drop(dest->counter_idx, SPAK_SRV_DROP_MALFORMED);
	/* step_ns == 0 (not configured) divides to 0 in BPF: every step is then "future". */
	now_step = (bpf_ktime_get_coarse_ns() + cfg->clock_offset_ns) / cfg->step_ns;
	step = bpf_ntohl(opt->time_step);
	why = SPAK_SRV_DROP_STALE_STEP;
	if (step + cfg->step_window < now_step)
		goto refused;
	why = SPAK_SRV_DROP_FUTURE_STEP;
	if (step > now_step + cfg->step_window)
		goto refused;

	/* Time step then sequence number, as they stand on the wire, as one LE word. */
	step_seq = (__u64)opt->time_step | ((__u64)tcp->seq << 32);
	tag = spak_tag_resume(state, dest->flags, fk->daddr, step_seq, fk->saddr);
	__builtin_memcpy(&got, opt->tag, sizeof(got));
	why = SPAK_SRV_DROP_BAD_TAG;
	if (tag != got)
		goto refused;

	/*
	 * A valid tag belongs to the first source that used it, for as long as it is valid.
	 * Insert first: a first sight (the common case) then costs one hash operation, not a
	 * lookup and an insert; only a tag seen before pays for the lookup after EEXIST.
	 */
	__builtin_memcpy(first.saddr, fk->saddr, 16);
	first.sport = fk->sport;
	first.time_step = (__u32)step;
	err = bpf_map_update_elem(&spak_replay, &got, &first, BPF_NOEXIST);
	if (!err)
		return record_flow(fk, cfg, SPAK_SRV_PASS_VALID_SYN, dest->counter_idx);
	/* Full: refusing is the only safe answer, a tag we cannot record could be replayed. */
	why = SPAK_SRV_DROP_REPLAY_FULL;
	if (err == -SPAK_E2BIG || err == -SPAK_ENOMEM)
		goto refused;
	why = SPAK_SRV_DROP_REPLAY;
	seen = bpf_map_lookup_elem(&spak_replay, &got);
	if (!seen) /* swept between the two calls: its window is over */
		goto refused;
	if (!same_source(seen, fk))
		goto refused;

	/* A retransmitted SYN finds its flow: touching it is far cheaper than a new entry. */
	known = bpf_map_lookup_elem(&spak_flows, fk);
	if (known && known->state == SPAK_FLOW_OPEN) {
		if (known->seen_s != cfg->flow_clock_s)
			known->seen_s = cfg->flow_clock_s;
		return dest_pass(dest->counter_idx, SPAK_SRV_PASS_RETRANSMIT);
	}
	return record_flow(fk, cfg, SPAK_SRV_PASS_RETRANSMIT, dest->counter_idx);

refused:
	/* No valid tag of its own: the allowlists are asked only now (spak_allow.h). */
	return syn_refused(fk, dest, why);
}

#endif /* SPAK_SYN_H */
