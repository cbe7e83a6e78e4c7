/**
 * TypeScript mirror of bpf/spak_wire.h and bpf/spak_maps.h.
 *
 * test/unit/wire.test.ts parses the headers and fails when anything here drifts.
 * Map structs are encoded in host byte order (little-endian: x86_64/arm64 are the
 * only targets) except the fields the headers declare __be16/__be32.
 */
import { addrBytes, addrFrom16, type Addr } from './address.js';


/* ---- spak_wire.h: the SYN option ---- */
export const SPAK_OPT_KIND = 253;
export const SPAK_OPT_LEN = 20;
export const SPAK_EXID = 0x5350;
export const SPAK_VERSION = 1;
export const SPAK_DEFAULT_STEP_SECS = 30;
export const SPAK_DEFAULT_STEP_WINDOW = 1;

export const SPAK_OPT_OFF_KIND = 0;
export const SPAK_OPT_OFF_LEN = 1;
export const SPAK_OPT_OFF_EXID = 2;
export const SPAK_OPT_OFF_VERSION = 4;
export const SPAK_OPT_OFF_RESERVED = 5;
export const SPAK_OPT_OFF_KEY_ID = 6;
export const SPAK_OPT_OFF_STEP = 8;
export const SPAK_OPT_OFF_TAG = 12;

/* ---- spak_wire.h: the tag input ---- */
export const SPAK_TAG_INPUT_LEN = 32;
export const SPAK_TAG_INPUT_LEN_BOUND = 48;
export const SPAK_TIN_OFF_EXID = 0;
export const SPAK_TIN_OFF_VERSION = 2;
export const SPAK_TIN_OFF_FLAGS = 3;
export const SPAK_TIN_OFF_KEY_ID = 4;
export const SPAK_TIN_OFF_DPORT = 6;
export const SPAK_TIN_OFF_DADDR = 8;
export const SPAK_TIN_OFF_STEP = 24;
export const SPAK_TIN_OFF_SEQ = 28;
export const SPAK_TIN_OFF_SADDR = 32;
export const SPAK_TIN_PREFIX_LEN = 8;
export const SPAK_TIN_FIXED_LEN = 24;
export const SPAK_TIN_SOURCE_BOUND = 0x01;

/* ---- spak_maps.h ---- */
export const SPAK_FLOW_OPEN = 0;
export const SPAK_FLOW_CLOSING = 1;
export const SPAK_PORT_WORDS = 1024;
export const SPAK_PORT_UNSET = 0;
export const SPAK_PORT_SINGLE = 1;
export const SPAK_PORT_SEVERAL = 2;
export const SPAK_PORT_ANY = 3;
export const SPAK_MAX_KEYS = 4;
export const SPAK_MAX_DESTS = 1024;
export const SPAK_DEST_BIND_SOURCE = 0x01;
export const SPAK_DEST_DADDR_AT_RUN = 0x02;
export const SPAK_DEST_LISTS = 0x04;
/** spak_config.flags (server): stealth for closed ports of protected addresses (bpf/spak_stealth.h). */
export const SPAK_CFG_STEALTH_SYN = 0x01;
export const SPAK_CFG_STEALTH_UDP = 0x02;
export const SPAK_DEFAULT_REPLAY_CAPACITY = 131072;
export const SPAK_DEFAULT_FLOW_CAPACITY = 131072;
export const SPAK_KNOCK_DEFAULT_RATE = 10;
export const SPAK_KNOCK_DEFAULT_BURST = 20;
export const SPAK_MAX_KNOCK_CLIENTS = 4096;
export const SPAK_KNOCK_RATE_CAPACITY = 65536;
/** Recently accepted knock tags that XDP drops as repeats (spak_knock_accepted, an LRU). */
export const SPAK_KNOCK_ACCEPTED_CAPACITY = 4096;
export const SPAK_DEFAULT_ALLOW_CAPACITY = 65536;
export const SPAK_MAX_ALWAYS_ALLOW = 16384;

/** IP protocol numbers of the flow and allowlist keys. */
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export type L4Proto = 'tcp' | 'udp';

/** Where a port lives in the port bitmap: array index and the bit within that u64. */
export function portBit(port: number): { index: number; bit: bigint } {
  return { index: port >>> 6, bit: 1n << BigInt(port & 63) };
}

/* ---- struct sizes (natural C alignment) ---- */
export const STRUCT_SIZES = {
  spak_opt: 20,
  spak_tag_input: 48,
  spak_sip_state: 32,
  spak_key: 16,
  spak_config: 32,
  spak_dest: 20,
  spak_dest_key: 40,
  spak_dest_info: 168,
  spak_port_slot: 24,
  spak_target: 40,
  spak_flow_key: 40,
  spak_flow: 8,
  spak_replay: 24,
  spak_knock: 152,
  spak_knock_entry: 3,
  spak_knock_plain: 88,
  spak_knock_config: 24,
  spak_allow_key: 20,
  spak_allow: 24,
  spak_always_key: 20,
} as const;

/* ---- struct encoders/decoders ---- */

function need(buf: Buffer, size: number, name: string): void {
  if (buf.length < size) throw new RangeError(`${name} needs ${size} bytes, got ${buf.length}`);
}

/** struct spak_key: the 16 key bytes read as two little-endian u64. */
export interface SpakKey { k0: bigint; k1: bigint }

export function encodeKey(k: SpakKey): Buffer {
  const b = Buffer.alloc(STRUCT_SIZES.spak_key);
  b.writeBigUInt64LE(k.k0, 0);
  b.writeBigUInt64LE(k.k1, 8);
  return b;
}
export function decodeKey(b: Buffer): SpakKey {
  need(b, STRUCT_SIZES.spak_key, 'spak_key');
  return { k0: b.readBigUInt64LE(0), k1: b.readBigUInt64LE(8) };
}

/** struct spak_config (index 0 of the config array). */
export interface SpakConfig {
  clockOffsetNs: bigint; // s64: CLOCK_REALTIME - CLOCK_MONOTONIC
  stepNs: bigint;
  stepWindow: number;
  /** The daemon's CLOCK_MONOTONIC seconds: flows record it when a packet passes. */
  flowClockS: number;
  /** Server: SPAK_CFG_STEALTH_* bits (0 when absent). */
  flags?: number;
}

export function encodeConfig(c: SpakConfig): Buffer {
  const b = Buffer.alloc(STRUCT_SIZES.spak_config);
  b.writeBigInt64LE(c.clockOffsetNs, 0);
  b.writeBigUInt64LE(c.stepNs, 8);
  b.writeUInt32LE(c.stepWindow, 16);
  b.writeUInt32LE(c.flowClockS >>> 0, 20);
  b.writeUInt32LE(c.flags ?? 0, 24);
  return b;
}
export function decodeConfig(b: Buffer): SpakConfig {
  need(b, STRUCT_SIZES.spak_config, 'spak_config');
  return {
    clockOffsetNs: b.readBigInt64LE(0),
    stepNs: b.readBigUInt64LE(8),
    stepWindow: b.readUInt32LE(16),
    flowClockS: b.readUInt32LE(20),
    flags: b.readUInt32LE(24),
  };
}

/** struct spak_knock_config (index 0 of spak_knock_config): port 0 = knock mode off. */
export interface SpakKnockConfig { port: number; intervalNs: bigint; burstNs: bigint }

export function encodeKnockConfig(c: SpakKnockConfig): Buffer {
  const b = Buffer.alloc(STRUCT_SIZES.spak_knock_config);
  b.writeBigUInt64LE(c.intervalNs, 0);
  b.writeBigUInt64LE(c.burstNs, 8);
  b.writeUInt16BE(c.port, 16); // __be16
  return b;
}
export function decodeKnockConfig(b: Buffer): SpakKnockConfig {
  need(b, STRUCT_SIZES.spak_knock_config, 'spak_knock_config');
  return { port: b.readUInt16BE(16), intervalNs: b.readBigUInt64LE(0), burstNs: b.readBigUInt64LE(8) };
}

/** struct spak_dest: a protected (server) or target (client) destination. */
export interface SpakDest { addr: Addr; port: number }

export function encodeDest(d: SpakDest): Buffer {
  const b = Buffer.alloc(STRUCT_SIZES.spak_dest);
  addrBytes(d.addr).copy(b, 0);
  b.writeUInt16BE(d.port, 16); // __be16
  return b;
}
export function decodeDest(b: Buffer): { addr: string; port: number } {
  need(b, STRUCT_SIZES.spak_dest, 'spak_dest');
  return { addr: addrFrom16(b.subarray(0, 16)), port: b.readUInt16BE(16) };
}

/** A SipHash state (struct spak_sip_state): v0..v3 as little-endian u64, 32 bytes. */
export type SipState = Buffer;

/** struct spak_dest_key: one valid key of a destination. */
export interface SpakDestKey { keyId: number; state: SipState }

/** struct spak_dest_info: a destination's flags and up to SPAK_MAX_KEYS keys, valid ones first. */
export interface SpakDestInfo {
  flags: number;
  keys: SpakDestKey[];
  /** Index into spak_dest_counters (the daemon assigns it: src/server/destcounters.ts); 0 when absent. */
  counterIdx?: number;
}

export function encodeDestInfo(d: SpakDestInfo): Buffer {
  if (d.keys.length > SPAK_MAX_KEYS) throw new RangeError(`at most ${SPAK_MAX_KEYS} keys per destination, got ${d.keys.length}`);
  const b = Buffer.alloc(STRUCT_SIZES.spak_dest_info);
  b.writeUInt32LE(d.flags, 0);
  b.writeUInt32LE(d.counterIdx ?? 0, 4);
  d.keys.forEach((k, i) => {
    const off = 8 + i * STRUCT_SIZES.spak_dest_key;
    b.writeUInt16LE(k.keyId, off);
    b.writeUInt16LE(1, off + 2);
    checkState(k.state).copy(b, off + 8);
  });
  return b;
}
export function decodeDestInfo(b: Buffer): SpakDestInfo {
  need(b, STRUCT_SIZES.spak_dest_info, 'spak_dest_info');
  const keys: SpakDestKey[] = [];
  for (let i = 0; i < SPAK_MAX_KEYS; i++) {
    const off = 8 + i * STRUCT_SIZES.spak_dest_key;
    if (b.readUInt16LE(off + 2) === 0) break;
    keys.push({ keyId: b.readUInt16LE(off), state: Buffer.from(b.subarray(off + 8, off + 40)) });
  }
  return { flags: b.readUInt32LE(0), keys, counterIdx: b.readUInt32LE(4) };
}

function checkState(s: SipState): Buffer {
  if (s.length !== STRUCT_SIZES.spak_sip_state) throw new RangeError(`SipHash state must be 32 bytes, got ${s.length}`);
  return s;
}

/** struct spak_target: what the client tags a destination's SYNs with. */
export interface SpakTarget { state: SipState; keyId: number; flags: number }

export function encodeTarget(t: SpakTarget): Buffer {
  const b = Buffer.alloc(STRUCT_SIZES.spak_target);
  checkState(t.state).copy(b, 0);
  b.writeUInt16LE(t.keyId, 32); // __u16: host order, not __be16
  b.writeUInt8(t.flags, 34);
  return b;
}
export function decodeTarget(b: Buffer): SpakTarget {
  need(b, STRUCT_SIZES.spak_target, 'spak_target');
  return { state: Buffer.from(b.subarray(0, 32)), keyId: b.readUInt16LE(32), flags: b.readUInt8(34) };
}

/** struct spak_port_slot: the per-port fast path of the server's destination lookup. */
export interface SpakPortSlot { addr: Addr; mode: number; destIdx: number }

export function encodePortSlot(s: SpakPortSlot): Buffer {
  const b = Buffer.alloc(STRUCT_SIZES.spak_port_slot);
  addrBytes(s.addr).copy(b, 0);
  b.writeUInt32LE(s.mode, 16);
  b.writeUInt32LE(s.destIdx, 20);
  return b;
}
export function decodePortSlot(b: Buffer): { addr: string; mode: number; destIdx: number } {
  need(b, STRUCT_SIZES.spak_port_slot, 'spak_port_slot');
  return { addr: addrFrom16(b.subarray(0, 16)), mode: b.readUInt32LE(16), destIdx: b.readUInt32LE(20) };
}

/** struct spak_flow_key: a TCP or UDP flow as the server sees it arrive; proto defaults to TCP (6). */
export interface SpakFlowKey { saddr: Addr; daddr: Addr; sport: number; dport: number; proto?: number }

/** Offset of spak_flow_key.proto: the sweep tells UDP flows from TCP ones by it. */
export const FLOW_KEY_OFF_PROTO = 36;

export function encodeFlowKey(k: SpakFlowKey): Buffer {
  const b = Buffer.alloc(STRUCT_SIZES.spak_flow_key);
  addrBytes(k.saddr).copy(b, 0);
  addrBytes(k.daddr).copy(b, 16);
  b.writeUInt16BE(k.sport, 32);
  b.writeUInt16BE(k.dport, 34);
  b.writeUInt8(k.proto ?? IPPROTO_TCP, FLOW_KEY_OFF_PROTO);
  return b;
}
export function decodeFlowKey(b: Buffer): { saddr: string; daddr: string; sport: number; dport: number; proto: number } {
  need(b, STRUCT_SIZES.spak_flow_key, 'spak_flow_key');
  return {
    saddr: addrFrom16(b.subarray(0, 16)),
    daddr: addrFrom16(b.subarray(16, 32)),
    sport: b.readUInt16BE(32),
    dport: b.readUInt16BE(34),
    proto: b.readUInt8(FLOW_KEY_OFF_PROTO),
  };
}

/** struct spak_flow. */
export interface SpakFlow { seenS: number; state: number }

export function encodeFlow(f: SpakFlow): Buffer {
  const b = Buffer.alloc(STRUCT_SIZES.spak_flow);
  b.writeUInt32LE(f.seenS >>> 0, 0);
  b.writeUInt32LE(f.state, 4);
  return b;
}
export function decodeFlow(b: Buffer): SpakFlow {
  need(b, STRUCT_SIZES.spak_flow, 'spak_flow');
  return { seenS: b.readUInt32LE(0), state: b.readUInt32LE(4) };
}

/** struct spak_replay: who used a tag first. */
export interface SpakReplay { saddr: Addr; sport: number; timeStep: number }

export function encodeReplay(r: SpakReplay): Buffer {
  const b = Buffer.alloc(STRUCT_SIZES.spak_replay);
  addrBytes(r.saddr).copy(b, 0);
  b.writeUInt16BE(r.sport, 16); // __be16
  b.writeUInt32LE(r.timeStep, 20); // __u32, host order (unlike the option's __be32)
  return b;
}
export function decodeReplay(b: Buffer): { saddr: string; sport: number; timeStep: number } {
  need(b, STRUCT_SIZES.spak_replay, 'spak_replay');
  return { saddr: addrFrom16(b.subarray(0, 16)), sport: b.readUInt16BE(16), timeStep: b.readUInt32LE(20) };
}

/* ---- knock allowlist and always-allow list (bpf/spak_allow.h) ---- */

function protoNumber(p: L4Proto): number {
  if (p === 'tcp') return IPPROTO_TCP;
  if (p === 'udp') return IPPROTO_UDP;
  throw new TypeError(`not a protocol: ${JSON.stringify(p)} (tcp or udp)`);
}

/** struct spak_allow_key: (source address, protocol, destination port). */
export interface SpakAllowKey { addr: Addr; proto: L4Proto; port: number }

export function encodeAllowKey(k: SpakAllowKey): Buffer {
  const b = Buffer.alloc(STRUCT_SIZES.spak_allow_key);
  addrBytes(k.addr).copy(b, 0);
  b.writeUInt16BE(k.port, 16); // __be16
  b.writeUInt8(protoNumber(k.proto), 18);
  return b;
}
export function decodeAllowKey(b: Buffer): { addr: string; proto: L4Proto; port: number } {
  need(b, STRUCT_SIZES.spak_allow_key, 'spak_allow_key');
  const p = b.readUInt8(18);
  if (p !== IPPROTO_TCP && p !== IPPROTO_UDP) throw new RangeError(`spak_allow_key: protocol ${p} is neither tcp (6) nor udp (17)`);
  return { addr: addrFrom16(b.subarray(0, 16)), proto: p === IPPROTO_TCP ? 'tcp' : 'udp', port: b.readUInt16BE(16) };
}

/** struct spak_allow: CLOCK_MONOTONIC ns; idleNs and graceNs 0 = off. */
export interface SpakAllow { expiresNs: bigint; idleNs: bigint; graceNs: bigint }

export function encodeAllowEntry(a: SpakAllow): Buffer {
  const b = Buffer.alloc(STRUCT_SIZES.spak_allow);
  b.writeBigUInt64LE(a.expiresNs, 0);
  b.writeBigUInt64LE(a.idleNs, 8);
  b.writeBigUInt64LE(a.graceNs, 16);
  return b;
}
export function decodeAllowEntry(b: Buffer): SpakAllow {
  need(b, STRUCT_SIZES.spak_allow, 'spak_allow');
  return { expiresNs: b.readBigUInt64LE(0), idleNs: b.readBigUInt64LE(8), graceNs: b.readBigUInt64LE(16) };
}

/**
 * struct spak_always_key, the LPM trie key: prefixLen counts bits of the 16-byte
 * IPv4-mapped form (an IPv4 /24 is 96 + 24). prefixlen is a host-order __u32.
 */
export interface SpakAlwaysKey { addr: Addr; prefixLen: number }

export function encodeAlwaysKey(k: SpakAlwaysKey): Buffer {
  if (!Number.isInteger(k.prefixLen) || k.prefixLen < 0 || k.prefixLen > 128) throw new RangeError(`prefix length ${k.prefixLen} is not 0..128`);
  const b = Buffer.alloc(STRUCT_SIZES.spak_always_key);
  b.writeUInt32LE(k.prefixLen, 0);
  addrBytes(k.addr).copy(b, 4);
  return b;
}
