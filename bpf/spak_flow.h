/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Flows: recording a flow (record_flow, for a valid SYN, an allowlisted segment or datagram),
 * and flow gating. The flow key is filled in spak_flowkey.h.
 *
 * Flow gating: every non-SYN TCP segment to a protected destination must belong to a
 * recorded flow. One hash lookup. The program never ends a flow: it keeps no sequence
 * numbers, so it cannot tell a blind FIN or RST from a real one (the TCP stack can, RFC
 * 5961). FIN and RST only mark the flow closing, for the daemon, which deletes flows
 * whose socket is gone. So neither a blind RST nor the daemon's absence ends a live
 * connection. A segment with no flow may still be admitted by the allowlists
 * (spak_allow.h), asked only then; a FIN or RST of a flow asks the allowlist for grace.
 */
#ifndef SPAK_FLOW_H
#define SPAK_FLOW_H

#include <linux/ip.h>
#include <linux/ipv6.h>
#include "spak_server_maps.h"
#include "spak_verdict.h"
#include "spak_parse.h"
#include "spak_tcp.h"
#include "spak_dest.h"
#include "spak_allow.h"
#include "spak_destcount.h"
#include "spak_flowkey.h"
#include "spak_stealth.h"

/*
 * Records fk as an open flow and gives the verdict `reason`; a full table refuses it
 * (drop_flow_full). cidx: the destination's counter index, or SPAK_DEST_UNCOUNTED (not a
 * new-connection decision).
 */
static __always_inline int record_flow(const struct spak_flow_key *fk, const struct spak_config *cfg,
				       __u32 reason, __u32 cidx)
{
	struct spak_flow flow = { .seen_s = cfg->flow_clock_s, .state = SPAK_FLOW_OPEN };

	/* BPF_ANY: a new connection on the 4-tuple of a closing one starts it afresh. */
	if (bpf_map_update_elem(&spak_flows, fk, &flow, BPF_ANY))
		return dest_drop(cidx, SPAK_SRV_DROP_FLOW_FULL);
	return dest_pass(cidx, reason);
}

/*
 * A non-SYN TCP segment to a protected port: fk is its flow key, flags its TCP flags. ctx: the
 * hook's context, for stealth when no destination on its address protects the port.
 */
static __always_inline int handle_segment(void *ctx, __u8 flags, const struct spak_flow_key *fk, int v4)
{
	struct spak_flow *flow = bpf_map_lookup_elem(&spak_flows, fk);
	struct spak_config *cfg;
	__u32 zero = 0;
	int how;

	if (!flow) {
		struct spak_dest_info *dest = lookup_dest(fk->daddr, fk->dport, v4);

		if (!dest)
			return stealth_tcp(ctx, fk, flags, v4, SPAK_SRV_PASS_UNPROTECTED);
		if (!(dest->flags & SPAK_DEST_LISTS))
			return drop(SPAK_SRV_DROP_FLOW_MISS);
		how = admit(fk, flags);
		if (how == SPAK_ADMIT_ALWAYS)
			return pass(SPAK_SRV_PASS_ALWAYS);
		if (how == SPAK_ADMIT_NO)
			return drop(SPAK_SRV_DROP_FLOW_MISS);
		cfg = bpf_map_lookup_elem(&spak_config, &zero);
		/* A FIN or RST starts nothing: it passes without a flow. */
		if (!cfg || (flags & SPAK_TCP_CLOSE_FLAGS))
			return pass(SPAK_SRV_PASS_ALLOWLISTED);
		return record_flow(fk, cfg, SPAK_SRV_PASS_ALLOWLISTED, SPAK_DEST_UNCOUNTED);
	}
	cfg = bpf_map_lookup_elem(&spak_config, &zero);
	if (cfg && flow->seen_s != cfg->flow_clock_s)
		flow->seen_s = cfg->flow_clock_s; /* written once per daemon tick, not per packet */
	if (flags & SPAK_TCP_CLOSE_FLAGS) {
		if (flow->state == SPAK_FLOW_OPEN)
			flow->state = SPAK_FLOW_CLOSING;
		allow_grace(fk);
		return pass(SPAK_SRV_PASS_FLOW_END);
	}
	return pass(SPAK_SRV_PASS_FLOW);
}

#endif /* SPAK_FLOW_H */
