/**
 * The spak SYN option and the bytes its tag covers (bpf/spak_wire.h).
 */
import {
  SPAK_DEFAULT_STEP_SECS,
  SPAK_EXID,
  SPAK_OPT_KIND,
  SPAK_OPT_LEN,
  SPAK_OPT_OFF_EXID,
  SPAK_OPT_OFF_KEY_ID,
  SPAK_OPT_OFF_KIND,
  SPAK_OPT_OFF_LEN,
  SPAK_OPT_OFF_RESERVED,
  SPAK_OPT_OFF_STEP,
  SPAK_OPT_OFF_TAG,
  SPAK_OPT_OFF_VERSION,
  SPAK_TAG_INPUT_LEN,
  SPAK_TAG_INPUT_LEN_BOUND,
  SPAK_TIN_FIXED_LEN,
  SPAK_TIN_OFF_DADDR,
  SPAK_TIN_OFF_DPORT,
  SPAK_TIN_OFF_EXID,
  SPAK_TIN_OFF_FLAGS,
  SPAK_TIN_OFF_KEY_ID,
  SPAK_TIN_OFF_SADDR,
  SPAK_TIN_OFF_SEQ,
  SPAK_TIN_OFF_STEP,
  SPAK_TIN_OFF_VERSION,
  SPAK_TIN_PREFIX_LEN,
  SPAK_TIN_SOURCE_BOUND,
  SPAK_VERSION,
} from './layout.js';
import { type Addr, addrBytes } from './address.js';
import { sipState, siphash24 } from './siphash.js';

/** What the tag binds. exid/version/flags default to the protocol's values. */
export interface TagInputFields {
  keyId: number;
  /** Destination port as the client addressed it. */
  dport: number;
  timeStep: number;
  /** The SYN's initial sequence number. */
  seq: number;
  /** Destination address as the client addressed it (IPv4 is bound as ::ffff:a.b.c.d). */
  daddr: Addr;
  /** Source address as the client's kernel sent it: given, the tag is source-bound. */
  saddr?: Addr;
  exid?: number;
  version?: number;
  /** Overrides the flags byte (tests); by default SOURCE_BOUND exactly when saddr is given. */
  flags?: number;
}

/** The exact bytes SipHash runs over (struct spak_tag_input): 32, or 48 when source-bound. */
export function tagInput(f: TagInputFields): Buffer {
  const bound = f.saddr !== undefined;
  const b = Buffer.alloc(bound ? SPAK_TAG_INPUT_LEN_BOUND : SPAK_TAG_INPUT_LEN);
  b.writeUInt16BE(f.exid ?? SPAK_EXID, SPAK_TIN_OFF_EXID);
  b.writeUInt8(f.version ?? SPAK_VERSION, SPAK_TIN_OFF_VERSION);
  b.writeUInt8(f.flags ?? (bound ? SPAK_TIN_SOURCE_BOUND : 0), SPAK_TIN_OFF_FLAGS);
  b.writeUInt16BE(f.keyId, SPAK_TIN_OFF_KEY_ID);
  b.writeUInt16BE(f.dport, SPAK_TIN_OFF_DPORT);
  addrBytes(f.daddr).copy(b, SPAK_TIN_OFF_DADDR);
  b.writeUInt32BE(f.timeStep >>> 0, SPAK_TIN_OFF_STEP);
  b.writeUInt32BE(f.seq >>> 0, SPAK_TIN_OFF_SEQ);
  if (bound) addrBytes(f.saddr!).copy(b, SPAK_TIN_OFF_SADDR);
  return b;
}

/** The 8-byte tag: SipHash-2-4 of tagInput(f) under the 16-byte key. */
export function computeTag(key: Buffer, f: TagInputFields): Buffer {
  return siphash24(key, tagInput(f));
}

/** What a destination fixes in its tags: everything before the time step. */
export interface DestinationBinding {
  keyId: number;
  dport: number;
  /** Omitted for a wildcard destination: the state then stops before the address. */
  daddr?: Addr;
  bindSource: boolean;
}

/**
 * The SipHash state after a destination's fixed tag input (struct spak_sip_state), the
 * state the eBPF programs resume from: 24 bytes absorbed, or 8 when daddr is omitted.
 */
export function destinationState(key: Buffer, d: DestinationBinding): Buffer {
  const fields = { keyId: d.keyId, dport: d.dport, timeStep: 0, seq: 0, daddr: d.daddr ?? '::', ...(d.bindSource ? { saddr: '::' } : {}) };
  const input = tagInput(fields);
  return sipState(key, input.subarray(0, d.daddr === undefined ? SPAK_TIN_PREFIX_LEN : SPAK_TIN_FIXED_LEN));
}

/** The option's fields; kind/len/exid/version/reserved default to a valid option. */
export interface SpakOption {
  keyId: number;
  timeStep: number;
  tag: Buffer;
  exid?: number;
  version?: number;
  reserved?: number;
  /** Overrides for building malformed options in tests. */
  kind?: number;
  len?: number;
}

export type DecodedOption = Required<SpakOption>;

/** The 20 option bytes (struct spak_opt). */
export function encodeOption(o: SpakOption): Buffer {
  if (o.tag.length !== 8) throw new RangeError(`tag must be 8 bytes, got ${o.tag.length}`);
  const b = Buffer.alloc(SPAK_OPT_LEN);
  b.writeUInt8(o.kind ?? SPAK_OPT_KIND, SPAK_OPT_OFF_KIND);
  b.writeUInt8(o.len ?? SPAK_OPT_LEN, SPAK_OPT_OFF_LEN);
  b.writeUInt16BE(o.exid ?? SPAK_EXID, SPAK_OPT_OFF_EXID);
  b.writeUInt8(o.version ?? SPAK_VERSION, SPAK_OPT_OFF_VERSION);
  b.writeUInt8(o.reserved ?? 0, SPAK_OPT_OFF_RESERVED);
  b.writeUInt16BE(o.keyId, SPAK_OPT_OFF_KEY_ID);
  b.writeUInt32BE(o.timeStep >>> 0, SPAK_OPT_OFF_STEP);
  o.tag.copy(b, SPAK_OPT_OFF_TAG);
  return b;
}

/**
 * Reads an option starting at buf[0]. null unless it is kind 253 with length 20
 * and all 20 bytes are present; ExID, version and reserved are returned as found so
 * callers can tell a foreign RFC 6994 option or a bad one from ours.
 */
export function decodeOption(buf: Buffer): DecodedOption | null {
  if (buf.length < SPAK_OPT_LEN) return null;
  if (buf[SPAK_OPT_OFF_KIND] !== SPAK_OPT_KIND || buf[SPAK_OPT_OFF_LEN] !== SPAK_OPT_LEN) return null;
  return {
    kind: SPAK_OPT_KIND,
    len: SPAK_OPT_LEN,
    exid: buf.readUInt16BE(SPAK_OPT_OFF_EXID),
    version: buf.readUInt8(SPAK_OPT_OFF_VERSION),
    reserved: buf.readUInt8(SPAK_OPT_OFF_RESERVED),
    keyId: buf.readUInt16BE(SPAK_OPT_OFF_KEY_ID),
    timeStep: buf.readUInt32BE(SPAK_OPT_OFF_STEP),
    tag: Buffer.from(buf.subarray(SPAK_OPT_OFF_TAG, SPAK_OPT_OFF_TAG + 8)),
  };
}

/** floor(unix seconds / step): the time step a client puts in the option. */
export function timeStepAt(unixMs: number, stepSecs: number = SPAK_DEFAULT_STEP_SECS): number {
  if (!(stepSecs > 0)) throw new RangeError(`step must be positive, got ${stepSecs}`);
  // Divide once in ms so whole-second boundaries are exact.
  return Math.floor(unixMs / (stepSecs * 1000));
}

/* ---- TCP option list ---- */

export const TCPOPT_EOL = 0;
export const TCPOPT_NOP = 1;

export interface TcpOption {
  kind: number;
  /** Offset of the kind byte within the options block. */
  offset: number;
  /** Total length including kind (and length byte): 1 for EOL/NOP. */
  len: number;
  /** The bytes after kind and length. */
  data: Buffer;
}

/**
 * Splits a TCP options block (the bytes after the 20-byte header). Stops at EOL,
 * which is included. Throws on a length byte that is < 2 or runs past the end.
 */
export function parseTcpOptions(opts: Buffer): TcpOption[] {
  const out: TcpOption[] = [];
  let i = 0;
  while (i < opts.length) {
    const kind = opts[i]!;
    if (kind === TCPOPT_EOL || kind === TCPOPT_NOP) {
      out.push({ kind, offset: i, len: 1, data: Buffer.alloc(0) });
      i++;
      if (kind === TCPOPT_EOL) break;
      continue;
    }
    const len = opts[i + 1];
    if (len === undefined || len < 2 || i + len > opts.length) {
      throw new RangeError(`malformed TCP option kind ${kind} at offset ${i}`);
    }
    out.push({ kind, offset: i, len, data: Buffer.from(opts.subarray(i + 2, i + len)) });
    i += len;
  }
  return out;
}

/** Our option in a TCP options block (kind 253 with our ExID), or null. */
export function findSpakOption(opts: Buffer): { offset: number; option: DecodedOption } | null {
  for (const o of parseTcpOptions(opts)) {
    if (o.kind !== SPAK_OPT_KIND || o.len < 4 || o.data.readUInt16BE(0) !== SPAK_EXID) continue;
    const option = decodeOption(opts.subarray(o.offset));
    if (option) return { offset: o.offset, option };
  }
  return null;
}
