/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * The TCP header, for the server and the client alike: its flags, read as the byte at offset
 * 13, and the bounded walk over its options that finds ours (SPAK_OPT_KIND with SPAK_EXID,
 * spak_wire.h). After spak_parse.h in packet order.
 *
 * The flags have their own SPAK_ names: <linux/tcp.h> already names TCP_FLAG_* as big-endian
 * words of the header, which a byte test must not be confused with.
 */
#ifndef SPAK_TCP_H
#define SPAK_TCP_H

#include <linux/types.h>
#include <linux/tcp.h>
#include "spak_wire.h"

#define SPAK_TCP_FIN 0x01
#define SPAK_TCP_SYN 0x02
#define SPAK_TCP_RST 0x04
#define SPAK_TCP_ACK 0x10
#define SPAK_TCP_CLOSE_FLAGS (SPAK_TCP_FIN | SPAK_TCP_RST) /* mark a flow closing; start none */
#define SPAK_TCP_FLAGS_OFF 13

#define SPAK_TCP_MAX_HDR 60
#define SPAK_TCP_MAX_OPTS 40

/* The flags byte; the caller has checked that a whole struct tcphdr is in the packet. */
static __always_inline __u8 spak_tcp_flags(const struct tcphdr *tcp)
{
	return ((const __u8 *)tcp)[SPAK_TCP_FLAGS_OFF];
}

/* A connection's first segment: SYN without ACK (a SYN-ACK answers one of the host's own). */
static __always_inline int spak_tcp_pure_syn(__u8 flags)
{
	return (flags & (SPAK_TCP_SYN | SPAK_TCP_ACK)) == SPAK_TCP_SYN;
}

#define SPAK_OPT_FOUND 0
#define SPAK_OPT_ABSENT 1
#define SPAK_OPT_MALFORMED 2

/* A TCP header copied to the stack, for the client which rebuilds it. */
struct spak_tcp_opts {
	__u8 b[64];
};

/*
 * off is always below 64 where this is used (it never passes len <= 40). Masking it in
 * asm, where the compiler cannot drop it, turns every iteration's offset into the same
 * [0, 63] range, so the verifier sees one loop state per iteration instead of one per path.
 */
static __always_inline __u32 spak_forget_bounds(__u32 off)
{
	asm volatile("%0 &= 63" : "+r"(off));
	return off;
}

/*
 * Looks for our option (kind 253 with our ExID) among the len (0..40) option bytes
 * that start at opts. Other kind-253 experiments are skipped. Every length is
 * checked against the header: below 2 or running past its end is malformed.
 * On SPAK_OPT_FOUND, *opt_off is the option's offset from opts.
 */
static __always_inline int spak_find_option(__u8 *opts, void *end, __u32 len, __u32 *opt_off)
{
	__u32 off = 0;

#pragma clang loop unroll(disable)
	for (int i = 0; i < SPAK_TCP_MAX_OPTS; i++) {
		__u8 *p;
		__u8 kind, olen;

		if (off >= len)
			return SPAK_OPT_ABSENT;
		p = opts + off;
		if ((void *)(p + 1) > end)
			return SPAK_OPT_MALFORMED;
		kind = p[0];
		if (kind == 0)          /* EOL */
			return SPAK_OPT_ABSENT;
		if (kind == 1) {        /* NOP */
			off = spak_forget_bounds(off + 1);
			continue;
		}
		if (off + 2 > len || (void *)(p + 2) > end)
			return SPAK_OPT_MALFORMED;
		olen = p[1];
		if (olen < 2 || off + olen > len)
			return SPAK_OPT_MALFORMED;
		if (kind == SPAK_OPT_KIND && olen >= 4) {
			if ((void *)(p + 4) > end)
				return SPAK_OPT_MALFORMED;
			if (((__u16)p[2] << 8 | p[3]) == SPAK_EXID) {
				*opt_off = off;
				return SPAK_OPT_FOUND;
			}
		}
		off = spak_forget_bounds(off + olen);
	}
	return SPAK_OPT_ABSENT;
}

/*
 * The SYN every Linux client sends: MSS, SACK permitted, timestamps, NOP, window scale
 * (20 bytes), then ours appended by the client program: 40 option bytes in all. Matching
 * that exact layout is the walk's result without the walk; anything else is walked.
 */
static __always_inline int spak_linux_syn_layout(__u8 *opts, void *end, __u32 len)
{
	__u32 mss, sack_ts, nop_ws, ours;

	if (len != 40 || (void *)(opts + 24) > end)
		return 0;
	mss = *(__u32 *)opts;              /* 02 04 xx xx */
	sack_ts = *(__u32 *)(opts + 4);    /* 04 02 08 0a */
	nop_ws = *(__u32 *)(opts + 16);    /* 01 03 03 xx */
	ours = *(__u32 *)(opts + 20);      /* fd 14 53 50 */
	return (mss & 0xffff) == 0x0402 && sack_ts == 0x0a080204 &&
	       (nop_ws & 0xffffff) == 0x030301 && ours == 0x505314fd;
}

#endif /* SPAK_TCP_H */
