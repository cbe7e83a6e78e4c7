/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * SipHash-2-4 (Aumasson, Bernstein) for eBPF. The core is split into init /
 * compress / finish so the packet path can hash its fixed 32-byte tag input with
 * no loop, and the test program can hash any length with the very same rounds.
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

/* The tag of a 32-byte struct spak_tag_input: four blocks, no loop, no branch. */
static __always_inline __u64 spak_tag(const struct spak_key *k, const struct spak_tag_input *in)
{
	const __u64 *w = (const __u64 *)in;
	struct spak_sip s;

	spak_sip_init(&s, k);
	spak_sip_compress(&s, w[0]);
	spak_sip_compress(&s, w[1]);
	spak_sip_compress(&s, w[2]);
	spak_sip_compress(&s, w[3]);
	return spak_sip_finish(&s, (__u64)SPAK_TAG_INPUT_LEN << 56);
}

#endif /* SPAK_SIPHASH_H */
