// SPDX-License-Identifier: GPL-2.0-only
/*
 * spak client: TC egress program that adds the tagged option to every SYN sent
 * to a configured destination. Any program's connect() gets it without knowing.
 *
 * The SYN's TCP header is rebuilt on the stack with the option appended (an EOL
 * and what follows it become NOPs, so the option is not hidden behind the end of
 * the list), the packet grows by 20 bytes at the tail (a SYN carries no data, so
 * nothing behind the header has to move), and the lengths and checksums are fixed
 * with the kernel's incremental helpers. Those helpers know whether the checksum
 * is complete or left to offload (CHECKSUM_PARTIAL on veth and most NICs): then
 * only the pseudo-header part, which covers the length, changes.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "spak_maps.h"
#include "spak_parse.h"
#include "spak_tcp.h"
#include "spak_siphash.h"

#define TCP_CHECK_OFF 16

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct spak_dest);
	__type(value, struct spak_target);
} spak_targets SEC(".maps");

SPAK_COUNTERS(spak_client_counters, SPAK_CLI_REASON_MAX)

/*
 * The client never drops: a SYN it cannot tag goes out as it was. TC_ACT_UNSPEC, not
 * TC_ACT_OK: the next filter on the hook still runs, so spak does not silence others.
 */
static __always_inline int verdict(__u32 reason)
{
	spak_client_counters_inc(reason);
	return TC_ACT_UNSPEC;
}

/*
 * In a TCP header of len bytes, replaces an EOL and everything after it with NOPs;
 * returns -1 on a broken option list.
 */
static __always_inline int eol_to_nops(struct spak_tcp_opts *o, __u32 len)
{
	__u32 off = sizeof(struct tcphdr);
	int eol = 0;

#pragma clang loop unroll(disable)
	for (int i = 0; i < SPAK_TCP_MAX_OPTS; i++) {
		__u8 kind, olen;

		if (off >= len)
			break;
		kind = o->b[off & 63];
		if (kind == 0) {
			eol = 1;
			break;
		}
		if (kind == 1) {
			off = spak_forget_bounds(off + 1);
			continue;
		}
		if (off + 2 > len)
			return -1;
		olen = o->b[(off + 1) & 63];
		if (olen < 2 || off + olen > len)
			return -1;
		off = spak_forget_bounds(off + olen);
	}
	if (!eol)
		return 0;
#pragma clang loop unroll(disable)
	for (int i = sizeof(struct tcphdr); i < SPAK_TCP_MAX_HDR; i++) {
		if (i >= off && i < len)
			o->b[i & 63] = 1;
	}
	return 0;
}

SEC("tc")
int spak_client(struct __sk_buff *skb)
{
	struct spak_tcp_opts old_hdr = {}, new_hdr = {};
	struct spak_dest dest = {};
	struct spak_target *target;
	struct spak_config *cfg;
	struct spak_opt opt;
	__u8 saddr[16];
	struct iphdr *ip4 = NULL;
	struct ipv6hdr *ip6 = NULL;
	struct tcphdr *tcp;
	void *data, *end;
	__u32 l3, l4, hdr_len, tcp_len, zero = 0;
	__be16 old_len16, new_len16;
	__u16 proto;
	__u64 step, tag, step_seq;
	__be32 step_be;
	__s64 diff;
	int off;

	/* Headers (at most 14 + 8 + 40 + 60) must be in the linear part to be read directly. */
	if (skb->data_end - skb->data < 122 && skb->len > skb->data_end - skb->data)
		bpf_skb_pull_data(skb, skb->len < 122 ? skb->len : 122);
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;

	off = spak_parse_eth(data, end, &proto);
	if (off < 0)
		return verdict(SPAK_CLI_PASS_OTHER);
	l3 = off & 0xff;
	if (proto == bpf_htons(ETH_P_IP)) {
		ip4 = data + l3;
		if ((void *)(ip4 + 1) > end || ip4->protocol != IPPROTO_TCP)
			return verdict(SPAK_CLI_PASS_OTHER);
		if (ip4->ihl < 5 || (ip4->frag_off & bpf_htons(SPAK_IP_MF | SPAK_IP_OFFSET)))
			return verdict(SPAK_CLI_PASS_OTHER);
		l4 = l3 + ip4->ihl * 4;
		tcp_len = bpf_ntohs(ip4->tot_len) - ip4->ihl * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		ip6 = data + l3;
		if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_TCP)
			return verdict(SPAK_CLI_PASS_OTHER);
		l4 = l3 + sizeof(*ip6);
		tcp_len = bpf_ntohs(ip6->payload_len);
	} else {
		return verdict(SPAK_CLI_PASS_OTHER);
	}
	l4 &= 0xff;
	tcp = data + l4;
	if ((void *)(tcp + 1) > end)
		return verdict(SPAK_CLI_PASS_OTHER);
	if (!spak_tcp_pure_syn(spak_tcp_flags(tcp)))
		return verdict(SPAK_CLI_PASS_OTHER);

	dest.port = tcp->dest;
	if (ip4) {
		spak_addr_v4(dest.addr, ip4->daddr);
		spak_addr_v4(saddr, ip4->saddr);
	} else if (ip6) {
		spak_addr_v6(dest.addr, &ip6->daddr);
		spak_addr_v6(saddr, &ip6->saddr);
	}
	target = bpf_map_lookup_elem(&spak_targets, &dest);
	if (!target)
		return verdict(SPAK_CLI_PASS_OTHER);

	hdr_len = tcp->doff * 4;
	if (hdr_len < sizeof(*tcp) || tcp_len < hdr_len || skb->len != l4 + tcp_len)
		return verdict(SPAK_CLI_SKIP_MALFORMED);
	if (tcp_len != hdr_len)
		return verdict(SPAK_CLI_SKIP_PAYLOAD);
	if (hdr_len + SPAK_OPT_LEN > SPAK_TCP_MAX_HDR)
		return verdict(SPAK_CLI_SKIP_NO_ROOM);

	cfg = bpf_map_lookup_elem(&spak_config, &zero);
	if (!cfg || !cfg->step_ns)
		return verdict(SPAK_CLI_ERROR);
	step = (bpf_ktime_get_coarse_ns() + cfg->clock_offset_ns) / cfg->step_ns;

	/* The state covers ExID .. destination address; time step, sequence, source remain. */
	step_be = bpf_htonl((__u32)step);
	step_seq = (__u64)step_be | ((__u64)tcp->seq << 32);
	tag = spak_tag_resume(&target->state,
			      target->flags & SPAK_TIN_SOURCE_BOUND ? SPAK_RESUME_SADDR : 0,
			      dest.addr, step_seq, saddr);

	opt.kind = SPAK_OPT_KIND;
	opt.len = SPAK_OPT_LEN;
	opt.exid = bpf_htons(SPAK_EXID);
	opt.version = SPAK_VERSION;
	opt.reserved = 0;
	opt.key_id = bpf_htons(target->key_id);
	opt.time_step = step_be;
	__builtin_memcpy(opt.tag, &tag, sizeof(opt.tag));

	/* Old header in, new header = old with EOL turned to NOPs, new doff, option at the end. */
	hdr_len &= 0x3c;
	if (hdr_len < sizeof(*tcp) || hdr_len > SPAK_TCP_MAX_HDR - SPAK_OPT_LEN)
		return verdict(SPAK_CLI_SKIP_MALFORMED);
	if (bpf_skb_load_bytes(skb, l4, old_hdr.b, hdr_len))
		return verdict(SPAK_CLI_ERROR);
	__builtin_memcpy(new_hdr.b, old_hdr.b, sizeof(new_hdr.b));
	if (eol_to_nops(&new_hdr, hdr_len))
		return verdict(SPAK_CLI_SKIP_MALFORMED);
	new_hdr.b[12] = (((hdr_len + SPAK_OPT_LEN) / 4) << 4) | (old_hdr.b[12] & 0x0f);
#pragma clang loop unroll(disable)
	for (int i = 0; i < SPAK_OPT_LEN; i++)
		new_hdr.b[(hdr_len + i) & 63] = ((__u8 *)&opt)[i];

	/* The checksum field is the same in both, so it cancels out of the difference. */
	diff = bpf_csum_diff((__be32 *)old_hdr.b, hdr_len, (__be32 *)new_hdr.b,
			     hdr_len + SPAK_OPT_LEN, 0);
	if (diff < 0)
		return verdict(SPAK_CLI_ERROR);

	if (bpf_skb_change_tail(skb, skb->len + SPAK_OPT_LEN, 0))
		return verdict(SPAK_CLI_ERROR);
	if (bpf_skb_store_bytes(skb, l4, new_hdr.b, hdr_len + SPAK_OPT_LEN, 0) ||
	    bpf_l4_csum_replace(skb, l4 + TCP_CHECK_OFF, 0, diff, 0)) {
		bpf_skb_change_tail(skb, skb->len - SPAK_OPT_LEN, 0);
		return verdict(SPAK_CLI_ERROR);
	}

	/* The TCP length is part of the pseudo-header. */
	old_len16 = bpf_htons(hdr_len);
	new_len16 = bpf_htons(hdr_len + SPAK_OPT_LEN);
	bpf_l4_csum_replace(skb, l4 + TCP_CHECK_OFF, old_len16, new_len16,
			    BPF_F_PSEUDO_HDR | sizeof(__u16));

	if (ip4) {
		__be16 old_tot = bpf_htons(l4 - l3 + tcp_len);
		__be16 new_tot = bpf_htons(l4 - l3 + tcp_len + SPAK_OPT_LEN);

		bpf_skb_store_bytes(skb, l3 + __builtin_offsetof(struct iphdr, tot_len), &new_tot,
				    sizeof(new_tot), 0);
		bpf_l3_csum_replace(skb, l3 + __builtin_offsetof(struct iphdr, check), old_tot, new_tot,
				    sizeof(__u16));
	} else {
		__be16 new_plen = bpf_htons(tcp_len + SPAK_OPT_LEN);

		bpf_skb_store_bytes(skb, l3 + __builtin_offsetof(struct ipv6hdr, payload_len), &new_plen,
				    sizeof(new_plen), 0);
	}
	return verdict(SPAK_CLI_INJECTED);
}

char LICENSE[] SEC("license") = "GPL";
