/**
 * The spak SYN option (struct spak_opt, bpf/spak_wire.h) as the tests and the benchmarks build
 * and read it, a reference tag, and a TCP option list parser. The product never builds an
 * option in user space (the client's eBPF program does): this is the tests' mirror.
 */
import {
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
  SPAK_VERSION,
} from '../../src/wire/layout.js';
import { tagInput, type TagInputFields } from '../../src/wire/option.js';
import { siphash24 } from '../../src/wire/siphash.js';

/** The 8-byte tag: SipHash-2-4 of tagInput(f) under the 16-byte key. */
export function computeTag(key: Buffer, f: TagInputFields): Buffer {
  return siphash24(key, tagInput(f));
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
