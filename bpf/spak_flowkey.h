/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * The flow key, filled here and nowhere else. Its own header because both spak_flow.h (flow
 * gating) and spak_stealth.h (socket lookups, which spak_flow.h asks) fill keys.
 */
#ifndef SPAK_FLOWKEY_H
#define SPAK_FLOWKEY_H

#include <linux/ip.h>
#include <linux/ipv6.h>
#include "spak_server_maps.h"
#include "spak_parse.h"

/*
 * The one place a flow key is filled, for TCP and UDP alike (the dispatcher, spak_udp.h,
 * spak_stealth.h): both addresses in the 16-byte form, the ports as on the wire. The pad is
 * zeroed because the whole key is hashed. Exactly one of ip4 and ip6 is set.
 */
static __always_inline void spak_flow_key_fill(struct spak_flow_key *fk, const struct iphdr *ip4,
					       const struct ipv6hdr *ip6, __be16 sport, __be16 dport,
					       __u8 proto)
{
	fk->sport = sport;
	fk->dport = dport;
	fk->proto = proto;
	fk->pad[0] = 0;
	fk->pad[1] = 0;
	fk->pad[2] = 0;
	if (ip4) {
		spak_addr_v4(fk->saddr, ip4->saddr);
		spak_addr_v4(fk->daddr, ip4->daddr);
	} else if (ip6) {
		spak_addr_v6(fk->saddr, &ip6->saddr);
		spak_addr_v6(fk->daddr, &ip6->daddr);
	}
}

#endif /* SPAK_FLOWKEY_H */
