/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * The server's verdicts. Every way out of the program goes through pass() or drop(), which
 * count the reason (enum spak_server_reason, spak_wire.h) in the per-CPU spak_server_counters:
 * the daemon's counters and metrics read nothing else, so a verdict that skipped them would
 * be invisible. Decisions for a protected destination are also counted by outcome
 * (spak_destcount.h). Both hooks share the XDP verdicts; the TC entry translates them once.
 */
#ifndef SPAK_VERDICT_H
#define SPAK_VERDICT_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include "spak_server_maps.h"

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

/* The same verdict at TC ingress (spak_server_tc). */
static __always_inline int spak_tc_action(int xdp_verdict)
{
	return xdp_verdict == XDP_PASS ? TC_ACT_OK : TC_ACT_SHOT;
}

#endif /* SPAK_VERDICT_H */
