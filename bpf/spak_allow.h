/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * The other two ways into a protected destination: a knock allowlist entry (spak_allow)
 * and the always-allow list (spak_always). A protected destination admits a source that
 * holds a valid SYN tag OR is allowlisted for (source, protocol, port) OR is always-allowed.
 *
 * Cost: these lookups happen only where a packet would otherwise be dropped (a SYN without
 * a valid tag, a segment or datagram with no flow), plus one allowlist lookup at a TCP
 * flow's FIN or RST (grace). A valid tag and a packet of a known flow never pay for them.
 * The allowlist (one hash lookup) is asked before the always-allow trie (a trie walk).
 *
 * TCP. A SYN without a valid tag (no option, a malformed or wrong option, unknown key,
 * stale or future step, bad tag, a tag another source used first, a full replay table) is
 * admitted when the source is allowlisted for (tcp, dport) or always-allowed; its flow is
 * then recorded exactly as for a valid SYN (pass_allowlisted / pass_always), so the
 * connection outlives the window. Replay: a valid tag first used by another source is
 * admitted too when the sender is allowlisted: the replay table protects tags, not ports,
 * and an allowlisted source would pass with no option at all, so refusing it would stop
 * nothing. A non-SYN segment with no flow: allowlisted -> the flow is recorded (not for a
 * FIN or RST, which start nothing) and it passes; always-allowed -> passes, no flow needed.
 *
 * UDP. A datagram to a protected UDP destination (spak_udp_ports, spak_udp_protected)
 * passes when it belongs to a UDP flow (proto 17 in the flow key), else when the source is
 * allowlisted for (udp, dport) (a UDP flow is recorded, so the exchange keeps working after
 * the window while traffic flows; the daemon removes UDP flows after flowIdleSeconds of
 * silence), else when it is always-allowed (no flow recorded); otherwise drop_udp_not_allowed.
 * A first fragment is judged like a whole datagram (it carries both ports); later fragments
 * pass, as the kernel reassembles nothing without the first.
 *
 * Expiry: an entry with expires_ns < now (bpf_ktime_get_coarse_ns, CLOCK_MONOTONIC) admits
 * nothing; the daemon deletes it later. Idle extension: when a packet is admitted through an
 * entry with idle_ns > 0 and now + idle_ns > expires_ns, expires_ns becomes now + idle_ns
 * (packets of recorded flows do not look the entry up, so they do not extend it: the window
 * is for opening connections, which outlive it). Grace: a TCP FIN or RST from an allowlisted
 * source (with or without a flow) to that port, with grace_ns > 0, sets
 * expires_ns = min(expires_ns, now + grace_ns). Concurrent CPUs may race on an entry's
 * expiry; the last write wins, off by a packet at most.
 */
#ifndef SPAK_ALLOW_H
#define SPAK_ALLOW_H

#include "spak_server_maps.h"
#include "spak_parse.h"
#include "spak_tcp.h"

/* The unexpired allowlist entry of (saddr, proto, dport), or NULL. */
static __always_inline struct spak_allow *allow_entry(const __u8 saddr[16], __be16 dport, __u8 proto,
						      __u64 now)
{
	struct spak_allow_key k = { .port = dport, .proto = proto };
	struct spak_allow *a;

	__builtin_memcpy(k.addr, saddr, 16);
	a = bpf_map_lookup_elem(&spak_allow, &k);
	if (!a || a->expires_ns < now)
		return NULL;
	return a;
}

/* A packet passes through the entry: extend it while traffic flows. */
static __always_inline void allow_touch(struct spak_allow *a, __u64 now)
{
	if (a->idle_ns && now + a->idle_ns > a->expires_ns)
		a->expires_ns = now + a->idle_ns;
}

/* A FIN or RST from the source: its window closes grace_ns from now, if that is sooner. */
static __always_inline void allow_close(struct spak_allow *a, __u64 now)
{
	if (a->grace_ns && now + a->grace_ns < a->expires_ns)
		a->expires_ns = now + a->grace_ns;
}

/* Is saddr in the always-allow list? One trie walk. */
static __always_inline int always_allowed(const __u8 saddr[16])
{
	struct spak_always_key k = { .prefixlen = 128 };

	__builtin_memcpy(k.addr, saddr, 16);
	return bpf_map_lookup_elem(&spak_always, &k) != NULL;
}

/* Grace on a recorded TCP flow's FIN or RST (the flow path's only allowlist lookup). */
static __always_inline void allow_grace(const struct spak_flow_key *fk)
{
	__u64 now = bpf_ktime_get_coarse_ns();
	struct spak_allow *a = allow_entry(fk->saddr, fk->dport, IPPROTO_TCP, now);

	if (a)
		allow_close(a, now);
}

#define SPAK_ADMIT_NO 0
#define SPAK_ADMIT_ALLOWLISTED 1
#define SPAK_ADMIT_ALWAYS 2

/*
 * Would the allowlist or the always-allow list admit this packet? tcp_flags: the TCP
 * flags (0 for UDP); a FIN or RST applies grace, anything else idle extension.
 */
static __always_inline int admit(const struct spak_flow_key *fk, __u8 tcp_flags)
{
	__u64 now = bpf_ktime_get_coarse_ns();
	struct spak_allow *a = allow_entry(fk->saddr, fk->dport, fk->proto, now);

	if (a) {
		if (tcp_flags & SPAK_TCP_CLOSE_FLAGS)
			allow_close(a, now);
		else
			allow_touch(a, now);
		return SPAK_ADMIT_ALLOWLISTED;
	}
	if (always_allowed(fk->saddr))
		return SPAK_ADMIT_ALWAYS;
	return SPAK_ADMIT_NO;
}

#endif /* SPAK_ALLOW_H */
