/**
 * The bytes a SYN tag covers (bpf/spak_wire.h), the SipHash state the eBPF programs resume
 * from, and the time step. (The option's encoding and a reference tag live with the tests:
 * test/support/option.ts; the client's eBPF program writes the option.)
 */
import {
  SPAK_DEFAULT_STEP_SECS,
  SPAK_EXID,
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
import { sipState } from './siphash.js';

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

/** floor(unix seconds / step): the time step a client puts in the option. */
export function timeStepAt(unixMs: number, stepSecs: number = SPAK_DEFAULT_STEP_SECS): number {
  if (!(stepSecs > 0)) throw new RangeError(`step must be positive, got ${stepSecs}`);
  // Divide once in ms so whole-second boundaries are exact.
  return Math.floor(unixMs / (stepSecs * 1000));
}

