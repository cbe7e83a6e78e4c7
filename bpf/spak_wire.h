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
	SPAK_SRV_PASS_KNOCK,         /* knock port: passed every XDP check, handed to the daemon's socket */
	SPAK_SRV_DROP_KNOCK_RATE,    /* knock port: over the source's rate limit */
	SPAK_SRV_DROP_KNOCK_MALFORMED, /* knock port: wrong length, version or reserved bytes */
	SPAK_SRV_DROP_KNOCK_UNKNOWN_CLIENT, /* knock port: client id not loaded (or revoked) */
	SPAK_SRV_DROP_KNOCK_TAG,     /* knock port: prefilter tag does not verify */
	SPAK_SRV_DROP_KNOCK_FRAGMENT, /* knock port: first IP fragment (a knock is never fragmented) */
	SPAK_SRV_PASS_ALLOWLISTED,   /* protected destination: source allowlisted by a knock for this protocol and port */
	SPAK_SRV_PASS_ALWAYS,        /* protected destination: source in the always-allow list */
	SPAK_SRV_DROP_UDP_NOT_ALLOWED, /* protected UDP destination: not allowlisted, not always-allowed, no UDP flow */
	SPAK_SRV_DROP_STEALTH_SYN,   /* stealth: SYN to a protected address's port with no socket (no RST) */
	SPAK_SRV_DROP_STEALTH_UDP,   /* stealth: datagram to a protected address's port with no socket (no ICMP) */
	SPAK_SRV_DROP_STEALTH_SEGMENT, /* stealth: other TCP segment (not SYN, not RST) to a protected address's port with no socket (no RST) */
	SPAK_SRV_DROP_KNOCK_UNPARSED, /* knock mode on: IPv6 chain too long to read, or no whole UDP header, to an unprotected address */
	SPAK_SRV_DROP_KNOCK_REPEAT,  /* knock port: exact repeat of a knock the daemon accepted (spak_knock_accepted) */
	SPAK_SRV_DROP_KNOCK_CLIENT_RATE, /* knock port: passed the prefilter, over its client's budget */
	SPAK_SRV_REASON_MAX,
};

/*
 * Per protected destination: the outcome of each new-connection decision (a SYN, or a UDP
 * datagram with no flow), counted in spak_dest_counters at destination counter index *
 * SPAK_DOUT_MAX + outcome. The established-flow path counts nothing here.
 */
enum spak_dest_outcome {
	SPAK_DOUT_ADMIT_TAG = 0,     /* SYN with a valid tag (first sight or same-source retransmit) */
	SPAK_DOUT_ADMIT_KNOCK,       /* admitted by a knock's allowlist entry */
	SPAK_DOUT_ADMIT_ALWAYS,      /* admitted by the always-allow list */
	SPAK_DOUT_REFUSE_TAG,        /* SYN with no option, a bad option, an unknown key, a step out of window or a bad tag */
	SPAK_DOUT_REFUSE_REPLAY,     /* valid tag first used by another source */
	SPAK_DOUT_REFUSE_NOT_ALLOWED, /* UDP datagram with no flow, allowlist entry or always-allow */
	SPAK_DOUT_REFUSE_FULL,       /* replay or flow table full */
	SPAK_DOUT_REFUSE_OTHER,      /* malformed headers */
	SPAK_DOUT_MAX,
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

/* ======================================================================== */
/*
 * Knock mode: one UDP datagram, SPAK_KNOCK_LEN (152) bytes, no other length.
 * A client without our eBPF program asks for access with it; the server's XDP program
 * checks the cleartext header and the prefilter tag, and only then hands the
 * datagram to the daemon, which opens the HPKE message (src/knock/datagram.ts).
 *
 *   off  size  field
 *     0     1  version          SPAK_KNOCK_VERSION (1)
 *     1     3  reserved         zero
 *     4     4  client id        big-endian: the first 4 bytes of SHA-256(client's raw
 *                               X25519 public key), so the server needs no registry
 *     8     8  prefilter tag    SipHash-2-4 (little-endian output, as the SYN tag) under
 *                               the client's prefilter key, over bytes 16..151
 *    16    32  enc              HPKE encapsulated key (X25519 ephemeral public key)
 *    48   104  ciphertext       HPKE ChaCha20-Poly1305: the 88-byte plaintext + 16-byte tag
 *
 * HPKE (RFC 9180): mode_auth (0x02), DHKEM(X25519, HKDF-SHA256) (0x0020), HKDF-SHA256
 * (0x0001), ChaCha20-Poly1305 (0x0003); sealed to the server's static public key with the
 * client's static private key; one message per context (sequence number 0);
 * info = "spak knock v1" (13 ASCII bytes); aad = datagram bytes 0..7 (version, reserved,
 * client id), so the cleartext header cannot be changed without the open failing.
 *
 * Prefilter key (16 bytes, a SipHash key), derived on both ends, never sent:
 *   HKDF-SHA256(salt = empty, ikm = X25519(server private, client public)
 *                                  = X25519(client private, server public),
 *               info = "spak knock prefilter v1" (23 ASCII bytes)
 *                      || server public key (32) || client public key (32), L = 16)
 * Per client: revoking one client (removing its key from the map) kills its knocks in
 * XDP without touching anyone else's. The tag only sheds garbage cheaply; the HPKE open
 * is what authenticates.
 *
 * The plaintext, SPAK_KNOCK_PT_LEN (88) bytes, fixed:
 *
 *   off  size  field
 *     0     1  version          SPAK_KNOCK_PT_VERSION (1)
 *     1     1  count            entries used, 0..SPAK_KNOCK_MAX_OPEN; 0 = the client's
 *                               default access (the server's policy decides)
 *     2     2  reserved         zero
 *     4     4  duration         seconds, big-endian; 0 = the server's default
 *     8     8  timestamp        unix seconds, big-endian u64 (a u32 ends in 2106; four
 *                               bytes more inside the ciphertext cost the XDP side nothing)
 *    16    16  nonce            random, for the replay cache
 *    32    16  server address   the address the knock was sent to, IPv4 as ::ffff:a.b.c.d:
 *                               a knock to one server is refused by another sharing its key
 *    48    16  allow address    the address to allow; all zero = the packet's source
 *    64    24  entries          8 x 3 bytes: protocol (6 TCP, 17 UDP), port big-endian;
 *                               entries past count are all zero
 */
#define SPAK_KNOCK_VERSION 1
#define SPAK_KNOCK_LEN 152
#define SPAK_KNOCK_OFF_VERSION 0
#define SPAK_KNOCK_OFF_RESERVED 1
#define SPAK_KNOCK_OFF_CLIENT_ID 4
#define SPAK_KNOCK_OFF_TAG 8
#define SPAK_KNOCK_OFF_ENC 16
#define SPAK_KNOCK_OFF_CT 48
#define SPAK_KNOCK_HDR_LEN 16         /* cleartext before the tagged part */
#define SPAK_KNOCK_AAD_LEN 8          /* bytes 0..7 are the HPKE aad */
#define SPAK_KNOCK_TAG_LEN 8
#define SPAK_KNOCK_TAGGED_LEN 136     /* bytes 16..151: enc + ciphertext, 17 SipHash blocks */
#define SPAK_KNOCK_ENC_LEN 32
#define SPAK_KNOCK_CT_LEN 104
#define SPAK_KNOCK_AEAD_TAG_LEN 16
#define SPAK_KNOCK_PREFILTER_KEY_LEN 16

#define SPAK_KNOCK_PT_VERSION 1
#define SPAK_KNOCK_PT_LEN 88
#define SPAK_KNOCK_MAX_OPEN 8
#define SPAK_KNOCK_ENTRY_LEN 3
#define SPAK_KNOCK_NONCE_LEN 16
#define SPAK_KNOCK_PT_OFF_VERSION 0
#define SPAK_KNOCK_PT_OFF_COUNT 1
#define SPAK_KNOCK_PT_OFF_RESERVED 2
#define SPAK_KNOCK_PT_OFF_DURATION 4
#define SPAK_KNOCK_PT_OFF_TIMESTAMP 8
#define SPAK_KNOCK_PT_OFF_NONCE 16
#define SPAK_KNOCK_PT_OFF_SERVER 32
#define SPAK_KNOCK_PT_OFF_ALLOW 48
#define SPAK_KNOCK_PT_OFF_OPEN 64
#define SPAK_KNOCK_PROTO_TCP 6
#define SPAK_KNOCK_PROTO_UDP 17

struct spak_knock {
	__u8 version;
	__u8 reserved[3];
	__be32 client_id;
	__u8 tag[SPAK_KNOCK_TAG_LEN];
	__u8 enc[SPAK_KNOCK_ENC_LEN];
	__u8 ct[SPAK_KNOCK_CT_LEN];
} __attribute__((packed));

struct spak_knock_entry {
	__u8 proto;
	__be16 port;
} __attribute__((packed));

struct spak_knock_plain {
	__u8 version;
	__u8 count;
	__be16 reserved;
	__be32 duration;
	__be64 timestamp;
	__u8 nonce[SPAK_KNOCK_NONCE_LEN];
	__u8 server_addr[16];
	__u8 allow_addr[16];
	struct spak_knock_entry open[SPAK_KNOCK_MAX_OPEN];
} __attribute__((packed));

#endif /* SPAK_WIRE_H */
