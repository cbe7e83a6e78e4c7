/**
 * Knock datagram constants: the TypeScript mirror of the knock section of bpf/spak_wire.h
 * (layout documented there, byte by byte). test/unit/wire.test.ts compares these exports,
 * with layout.ts's, against every #define of the header.
 */
export const SPAK_KNOCK_VERSION = 1;
export const SPAK_KNOCK_LEN = 152;
export const SPAK_KNOCK_OFF_VERSION = 0;
export const SPAK_KNOCK_OFF_RESERVED = 1;
export const SPAK_KNOCK_OFF_CLIENT_ID = 4;
export const SPAK_KNOCK_OFF_TAG = 8;
export const SPAK_KNOCK_OFF_ENC = 16;
export const SPAK_KNOCK_OFF_CT = 48;
export const SPAK_KNOCK_HDR_LEN = 16;
export const SPAK_KNOCK_AAD_LEN = 8;
export const SPAK_KNOCK_TAG_LEN = 8;
export const SPAK_KNOCK_TAGGED_LEN = 136;
export const SPAK_KNOCK_ENC_LEN = 32;
export const SPAK_KNOCK_CT_LEN = 104;
export const SPAK_KNOCK_AEAD_TAG_LEN = 16;
export const SPAK_KNOCK_PREFILTER_KEY_LEN = 16;

export const SPAK_KNOCK_PT_VERSION = 1;
export const SPAK_KNOCK_PT_LEN = 88;
export const SPAK_KNOCK_MAX_OPEN = 8;
export const SPAK_KNOCK_ENTRY_LEN = 3;
export const SPAK_KNOCK_NONCE_LEN = 16;
export const SPAK_KNOCK_PT_OFF_VERSION = 0;
export const SPAK_KNOCK_PT_OFF_COUNT = 1;
export const SPAK_KNOCK_PT_OFF_RESERVED = 2;
export const SPAK_KNOCK_PT_OFF_DURATION = 4;
export const SPAK_KNOCK_PT_OFF_TIMESTAMP = 8;
export const SPAK_KNOCK_PT_OFF_NONCE = 16;
export const SPAK_KNOCK_PT_OFF_SERVER = 32;
export const SPAK_KNOCK_PT_OFF_ALLOW = 48;
export const SPAK_KNOCK_PT_OFF_OPEN = 64;
export const SPAK_KNOCK_PROTO_TCP = 6;
export const SPAK_KNOCK_PROTO_UDP = 17;

/** HPKE info and the prefilter key's HKDF info prefix (ASCII), as the header documents. */
export const KNOCK_HPKE_INFO = Buffer.from('spak knock v1', 'ascii');
export const KNOCK_PREFILTER_INFO = Buffer.from('spak knock prefilter v1', 'ascii');
