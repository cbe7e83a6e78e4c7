// SPDX-License-Identifier: GPL-2.0-only
/*
 * Test-only: checks the eBPF SipHash against the reference vectors and the
 * TypeScript implementation through BPF_PROG_TEST_RUN. Packet in:
 * [16-byte key][1-byte length n][n message bytes, n <= 63]. The program writes
 * the 8-byte hash over the first 8 bytes of the packet and returns XDP_TX;
 * anything malformed returns XDP_ABORTED. With n == 32 it also uses the
 * packet path's spak_tag() (loop-free) and returns XDP_PASS, so both are covered.
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

	if (n == SPAK_TAG_INPUT_LEN) {
		__u64 h2 = spak_tag(&key, (const struct spak_tag_input *)msg);

		if (h2 != h)
			return XDP_ABORTED;
	}
	if (data + 8 > end)
		return XDP_ABORTED;
	__builtin_memcpy(data, &h, 8);
	return n == SPAK_TAG_INPUT_LEN ? XDP_PASS : XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
