/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Per-destination counts of new-connection decisions (spak_dest_counters): a SYN to a
 * protected TCP destination, or a UDP datagram to a protected UDP destination that has no
 * flow. The outcome follows from the verdict's reason; the established-flow path never
 * comes here. One per-CPU array lookup per decision.
 */
#ifndef SPAK_DESTCOUNT_H
#define SPAK_DESTCOUNT_H

#include "spak_server_maps.h"
#include "spak_verdict.h"

/* Not a destination's decision (a flow recorded from a non-SYN segment): counted nowhere. */
#define SPAK_DEST_UNCOUNTED 0xffffffff

static __always_inline __u32 dest_outcome(__u32 reason)
{
	switch (reason) {
	case SPAK_SRV_PASS_VALID_SYN:
	case SPAK_SRV_PASS_RETRANSMIT:
		return SPAK_DOUT_ADMIT_TAG;
	case SPAK_SRV_PASS_ALLOWLISTED:
		return SPAK_DOUT_ADMIT_KNOCK;
	case SPAK_SRV_PASS_ALWAYS:
		return SPAK_DOUT_ADMIT_ALWAYS;
	case SPAK_SRV_DROP_REPLAY:
		return SPAK_DOUT_REFUSE_REPLAY;
	case SPAK_SRV_DROP_UDP_NOT_ALLOWED:
		return SPAK_DOUT_REFUSE_NOT_ALLOWED;
	case SPAK_SRV_DROP_REPLAY_FULL:
	case SPAK_SRV_DROP_FLOW_FULL:
		return SPAK_DOUT_REFUSE_FULL;
	case SPAK_SRV_DROP_MALFORMED:
		return SPAK_DOUT_REFUSE_OTHER;
	default: /* no option, bad option, unknown key, stale or future step, bad tag */
		return SPAK_DOUT_REFUSE_TAG;
	}
}

static __always_inline void dest_count(__u32 cidx, __u32 reason)
{
	__u32 slot;
	__u64 *c;

	if (cidx >= SPAK_MAX_DESTS)
		return;
	slot = cidx * SPAK_DOUT_MAX + dest_outcome(reason);
	c = bpf_map_lookup_elem(&spak_dest_counters, &slot);
	if (c)
		*c += 1;
}

/* A destination's verdict: counted by reason (spak_server_counters) and by outcome (here). */
static __always_inline int dest_pass(__u32 cidx, __u32 reason)
{
	dest_count(cidx, reason);
	return pass(reason);
}

static __always_inline int dest_drop(__u32 cidx, __u32 reason)
{
	dest_count(cidx, reason);
	return drop(reason);
}

#endif /* SPAK_DESTCOUNT_H */
