/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * spak wire formats: the one source of truth.
 *
 * src/wire/layout.ts mirrors every constant and offset here; test/unit/wire.test.ts
 * parses this file and fails when the two disagree, and test/bpf/ checks packets built
 * in TypeScript against the verdicts of the compiled programs.
 */
#ifndef SPAK_WIRE_H
#define SPAK_WIRE_H

#include <linux/types.h>

/*
 * The SYN option (RFC 6994 experimental option with a 16-bit ExID), 20 bytes:
 *
 *   0        1        2        3
 *   +--------+--------+--------+--------+
 *   | kind   | length |      ExID       |   kind 253, length 20, ExID 0x5350 ("SP")
 *   +--------+--------+--------+--------+
 *   | version|reserved|     key id      |   version 1, reserved 0, key id big-endian
 *   +--------+--------+--------+--------+
 *   |            time step              |   big-endian, unix time / step seconds
 *   +--------+--------+--------+--------+
 *   |          SipHash-2-4 tag          |   8 bytes, the hash's little-endian output
 *   |                                   |
 *   +--------+--------+--------+--------+
 */
#define SPAK_OPT_KIND 253
#define SPAK_OPT_LEN 20
#define SPAK_EXID 0x5350
#define SPAK_VERSION 1
#define SPAK_DEFAULT_STEP_SECS 30
#define SPAK_DEFAULT_STEP_WINDOW 1

#define SPAK_OPT_OFF_KIND 0
#define SPAK_OPT_OFF_LEN 1
#define SPAK_OPT_OFF_EXID 2
#define SPAK_OPT_OFF_VERSION 4
#define SPAK_OPT_OFF_RESERVED 5
#define SPAK_OPT_OFF_KEY_ID 6
#define SPAK_OPT_OFF_STEP 8
#define SPAK_OPT_OFF_TAG 12

struct spak_opt {
	__u8 kind;
	__u8 len;
	__be16 exid;
	__u8 version;
	__u8 reserved;
	__be16 key_id;
	__be32 time_step;
	__u8 tag[8];
} __attribute__((packed));

/*
 * The bytes the tag is computed over (SipHash-2-4, 128-bit key), 32 or 48 of them:
 *
 *   off  size  field
 *     0     2  ExID             big-endian
 *     2     1  version
 *     3     1  flags            SPAK_TIN_SOURCE_BOUND when the source address follows
 *     4     2  key id           big-endian
 *     6     2  destination port big-endian, as the client addressed it
 *     8    16  destination addr as the client addressed it; IPv4 as ::ffff:a.b.c.d
 *    24     4  time step        big-endian
 *    28     4  TCP sequence     big-endian, the SYN's initial sequence number
 *    32    16  source address   only when source-bound: as the client's kernel sent it
 *
 * Everything before the time step is fixed for one (key, destination), so both ends
 * absorb those 24 bytes once, in user space, and the packet path starts from the
 * SipHash state they leave (struct spak_sip_state): one block for step and sequence,
 * two more for a bound source, then the finalisation. For a wildcard destination the
 * address is not known in advance: the state then covers 8 bytes and the program
 * absorbs the packet's destination address itself.
 *
 * A source-bound tag is valid only from that address, so a host that takes over the
 * client's tag (ARP poisoning, a copied SYN) cannot use it from its own address. Leave
 * binding off for clients behind NAT: their source is rewritten on the way.
 */
#define SPAK_TAG_INPUT_LEN 32
#define SPAK_TAG_INPUT_LEN_BOUND 48
#define SPAK_TIN_OFF_EXID 0
#define SPAK_TIN_OFF_VERSION 2
#define SPAK_TIN_OFF_FLAGS 3
#define SPAK_TIN_OFF_KEY_ID 4
#define SPAK_TIN_OFF_DPORT 6
#define SPAK_TIN_OFF_DADDR 8
#define SPAK_TIN_OFF_STEP 24
#define SPAK_TIN_OFF_SEQ 28
#define SPAK_TIN_OFF_SADDR 32
#define SPAK_TIN_PREFIX_LEN 8      /* what a wildcard destination's state covers */
#define SPAK_TIN_FIXED_LEN 24      /* what a single destination's state covers */
#define SPAK_TIN_SOURCE_BOUND 0x01

struct spak_tag_input {
	__be16 exid;
	__u8 version;
	__u8 flags;
	__be16 key_id;
	__be16 dport;
	__u8 daddr[16];
	__be32 time_step;
	__be32 seq;
	__u8 saddr[16];
} __attribute__((aligned(8)));

/* SipHash-2-4 state (v0..v3) after the fixed part of the tag input has been absorbed. */
struct spak_sip_state {
	__u64 v[4];
};

/* A SipHash key: the 16 key bytes read as two little-endian 64-bit words. */
struct spak_key {
	__u64 k0;
	__u64 k1;
};

/* Server verdict reasons: index into the per-CPU counter array. */
enum spak_server_reason {
	SPAK_SRV_PASS_OTHER = 0,     /* not IP, not TCP, or not a protected port */
	SPAK_SRV_PASS_UNPROTECTED,   /* TCP to a protected port on an unprotected address */
	SPAK_SRV_PASS_VALID_SYN,     /* SYN with a valid tag, flow recorded */
	SPAK_SRV_PASS_RETRANSMIT,    /* valid SYN seen before from the same source */
	SPAK_SRV_PASS_FLOW,          /* non-SYN packet of a recorded flow */
	SPAK_SRV_PASS_FLOW_END,      /* FIN or RST of a recorded flow: marked closing, still passes */
	SPAK_SRV_DROP_NO_OPTION,     /* SYN without our option */
	SPAK_SRV_DROP_BAD_OPTION,    /* our kind with a wrong length, ExID, version or reserved */
	SPAK_SRV_DROP_UNKNOWN_KEY,   /* key id not loaded */
	SPAK_SRV_DROP_STALE_STEP,    /* time step older than the window */
	SPAK_SRV_DROP_FUTURE_STEP,   /* time step newer than the window */
	SPAK_SRV_DROP_BAD_TAG,       /* tag does not verify */
	SPAK_SRV_DROP_REPLAY,        /* valid tag first seen from another source */
	SPAK_SRV_DROP_FLOW_MISS,     /* non-SYN packet with no recorded flow */
	SPAK_SRV_DROP_FRAGMENT,      /* IP fragment that may be for a protected destination */
	SPAK_SRV_DROP_MALFORMED,     /* truncated or inconsistent headers */
	SPAK_SRV_DROP_UNPARSED,      /* encapsulation the parser does not follow (deep VLAN stack, tunnel) */
	SPAK_SRV_DROP_REPLAY_FULL,   /* valid SYN, but the replay table is full: cannot be recorded */
	SPAK_SRV_DROP_FLOW_FULL,     /* valid SYN, but the flow table is full */
	SPAK_SRV_REASON_MAX,
};

/* Client verdict reasons. */
enum spak_client_reason {
	SPAK_CLI_PASS_OTHER = 0,     /* not a SYN to a configured destination */
	SPAK_CLI_INJECTED,           /* option added */
	SPAK_CLI_SKIP_NO_ROOM,       /* TCP header would exceed 60 bytes: sent unchanged */
	SPAK_CLI_SKIP_PAYLOAD,       /* SYN carries data (TCP Fast Open): sent unchanged */
	SPAK_CLI_SKIP_MALFORMED,     /* headers we cannot parse: sent unchanged */
	SPAK_CLI_ERROR,              /* a helper failed while rewriting: sent unchanged */
	SPAK_CLI_REASON_MAX,
};

#endif /* SPAK_WIRE_H */
