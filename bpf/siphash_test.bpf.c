// SPDX-License-Identifier: GPL-2.0-only
/*
 * Test-only: checks the eBPF SipHash against the reference vectors and the
 * TypeScript implementation through BPF_PROG_TEST_RUN. Packet in:
 * [16-byte key][1-byte length n][n message bytes, n <= 63]. The program writes
 * the 8-byte hash over the first 8 bytes of the packet and returns XDP_TX;
 * anything malformed returns XDP_ABORTED. With n == 32 or 48 (a tag input, unbound or
 * source-bound) it also resumes the packet path's spak_tag_resume() from the states
 * after 24 and after 8 bytes, checks both agree, and returns XDP_PASS.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "spak_siphash.h"

#define MAX_MSG 63

SEC("xdp")
int siphash_test(struct xdp_md *ctx)
{
	__u8 *data = (void *)(long)ctx->data;
	__u8 *end = (void *)(long)ctx->data_end;
	__u8 msg[64] = {};
	struct spak_key key;
	struct spak_sip s;
	__u64 last, h;
	__u32 n, i, blocks;

	if (data + 17 > end)
		return XDP_ABORTED;
	__builtin_memcpy(&key, data, sizeof(key));
	n = data[16];
	if (n > MAX_MSG)
		return XDP_ABORTED;
	for (i = 0; i < MAX_MSG; i++) {
		if (i >= n)
			break;
		if (data + 17 + i + 1 > end)
			return XDP_ABORTED;
		msg[i] = data[17 + i];
	}

	spak_sip_init(&s, &key);
	blocks = n / 8;
	for (i = 0; i < 7; i++) {
		if (i >= blocks)
			break;
		spak_sip_compress(&s, *(__u64 *)&msg[i * 8]);
	}
	last = (__u64)n << 56;
	for (i = 0; i < 7; i++) {
		if (i >= (n & 7))
			break;
		last |= (__u64)msg[(blocks * 8 + i) & 63] << (8 * i);
	}
	h = spak_sip_finish(&s, last);

	if (n == SPAK_TAG_INPUT_LEN || n == SPAK_TAG_INPUT_LEN_BOUND) {
		__u32 bound = n == SPAK_TAG_INPUT_LEN_BOUND ? SPAK_RESUME_SADDR : 0;
		__u64 step_seq = *(__u64 *)&msg[SPAK_TIN_OFF_STEP];
		struct spak_sip_state st;
		struct spak_sip p;

		spak_sip_init(&p, &key);
		spak_sip_compress(&p, *(__u64 *)&msg[0]);
		st = (struct spak_sip_state){ { p.v0, p.v1, p.v2, p.v3 } };
		if (spak_tag_resume(&st, bound | SPAK_RESUME_DADDR, &msg[SPAK_TIN_OFF_DADDR], step_seq,
				    &msg[SPAK_TIN_OFF_SADDR]) != h)
			return XDP_ABORTED;
		spak_sip_compress(&p, *(__u64 *)&msg[8]);
		spak_sip_compress(&p, *(__u64 *)&msg[16]);
		st = (struct spak_sip_state){ { p.v0, p.v1, p.v2, p.v3 } };
		if (spak_tag_resume(&st, bound, &msg[SPAK_TIN_OFF_DADDR], step_seq,
				    &msg[SPAK_TIN_OFF_SADDR]) != h)
			return XDP_ABORTED;
	}
	if (data + 8 > end)
		return XDP_ABORTED;
	__builtin_memcpy(data, &h, 8);
	return n == SPAK_TAG_INPUT_LEN || n == SPAK_TAG_INPUT_LEN_BOUND ? XDP_PASS : XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
