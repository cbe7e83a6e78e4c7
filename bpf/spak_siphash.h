/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * SipHash-2-4 (Aumasson, Bernstein) for eBPF. The core is split into init /
 * compress / finish so the packet path can resume from a precomputed state with no
 * loop, and the test program can hash any length with the very same rounds.
 * Message words are read little-endian, as the reference does; BPF on x86 is
 * little-endian, so a plain u64 load is the right one.
 */
#ifndef SPAK_SIPHASH_H
#define SPAK_SIPHASH_H

#include <linux/types.h>
#include "spak_wire.h"

struct spak_sip {
	__u64 v0, v1, v2, v3;
};

static __always_inline __u64 spak_rotl(__u64 x, int b)
{
	return (x << b) | (x >> (64 - b));
}

static __always_inline void spak_sipround(struct spak_sip *s)
{
	s->v0 += s->v1; s->v1 = spak_rotl(s->v1, 13); s->v1 ^= s->v0; s->v0 = spak_rotl(s->v0, 32);
	s->v2 += s->v3; s->v3 = spak_rotl(s->v3, 16); s->v3 ^= s->v2;
	s->v0 += s->v3; s->v3 = spak_rotl(s->v3, 21); s->v3 ^= s->v0;
	s->v2 += s->v1; s->v1 = spak_rotl(s->v1, 17); s->v1 ^= s->v2; s->v2 = spak_rotl(s->v2, 32);
}

static __always_inline void spak_sip_init(struct spak_sip *s, const struct spak_key *k)
{
	s->v0 = 0x736f6d6570736575ULL ^ k->k0;
	s->v1 = 0x646f72616e646f6dULL ^ k->k1;
	s->v2 = 0x6c7967656e657261ULL ^ k->k0;
	s->v3 = 0x7465646279746573ULL ^ k->k1;
}

static __always_inline void spak_sip_compress(struct spak_sip *s, __u64 m)
{
	s->v3 ^= m;
	spak_sipround(s);
	spak_sipround(s);
	s->v0 ^= m;
}

/* last: the final block, (message length << 56) | the 0..7 trailing bytes */
static __always_inline __u64 spak_sip_finish(struct spak_sip *s, __u64 last)
{
	spak_sip_compress(s, last);
	s->v2 ^= 0xff;
	spak_sipround(s);
	spak_sipround(s);
	spak_sipround(s);
	spak_sipround(s);
	return s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
}

/*
 * The tag, resumed from the state left by the fixed part of the tag input (spak_wire.h):
 * the destination address when the state does not cover it (dest_flags has
 * SPAK_DEST_DADDR_AT_RUN), then time step and sequence number (step_seq: the 8 wire
 * bytes read as one little-endian word), then the source address when bound.
 * Two to five blocks and the finalisation, no loop.
 */
#define SPAK_RESUME_DADDR 0x02
#define SPAK_RESUME_SADDR 0x01
#ifdef SPAK_MAPS_H
/* The server passes a destination's flags straight through. */
_Static_assert(SPAK_RESUME_DADDR == SPAK_DEST_DADDR_AT_RUN, "flag values differ");
_Static_assert(SPAK_RESUME_SADDR == SPAK_DEST_BIND_SOURCE, "flag values differ");
#endif

static __always_inline __u64 spak_tag_resume(const struct spak_sip_state *st, __u32 what,
					     const __u8 daddr[16], __u64 step_seq,
					     const __u8 saddr[16])
{
	struct spak_sip s = { st->v[0], st->v[1], st->v[2], st->v[3] };
	__u64 len = SPAK_TAG_INPUT_LEN;

	if (what & SPAK_RESUME_DADDR) {
		spak_sip_compress(&s, *(const __u64 *)daddr);
		spak_sip_compress(&s, *(const __u64 *)(daddr + 8));
	}
	spak_sip_compress(&s, step_seq);
	if (what & SPAK_RESUME_SADDR) {
		spak_sip_compress(&s, *(const __u64 *)saddr);
		spak_sip_compress(&s, *(const __u64 *)(saddr + 8));
		len = SPAK_TAG_INPUT_LEN_BOUND;
	}
	return spak_sip_finish(&s, len << 56);
}

#endif /* SPAK_SIPHASH_H */
