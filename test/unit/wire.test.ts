import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { SocketAddress } from 'node:net';
import { randomBytes } from 'node:crypto';
import * as structLayout from '../../src/wire/layout.js';
import * as knockLayout from '../../src/wire/knock.js';
import * as reasonLayout from '../../src/wire/reasons.js';

/** Every constant the headers define, as the TypeScript mirror exports them. */
const layout = { ...structLayout, ...knockLayout, ...reasonLayout };
import { STRUCT_SIZES } from '../../src/wire/layout.js';
import {
  CLIENT_REASONS,
  CLIENT_REASON_NAMES,
  DEST_OUTCOMES,
  DEST_OUTCOME_NAMES,
  SERVER_REASONS,
  SERVER_REASON_NAMES,
} from '../../src/wire/reasons.js';
import { addrFrom16, addrTo16, isV4Mapped } from '../../src/wire/address.js';
import {
  destinationState,
  tagInput,
  timeStepAt,
} from '../../src/wire/option.js';
import {
  computeTag,
  decodeOption,
  encodeOption,
  findSpakOption,
  parseTcpOptions,
} from '../support/option.js';
import {
  buildIcmp,
  buildTcp,
  buildUdp,
  linuxSynOptions,
  padOptions,
  parseFrame,
} from '../support/packet.js';
import { siphash24, sipResume } from '../../src/wire/siphash.js';

/* ---- the headers, read as text ---- */

// dist/test/unit/ -> repository root
const root = new URL('../../../', import.meta.url);
const stripComments = (s: string): string => s.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
const headers = ['bpf/spak_wire.h', 'bpf/spak_maps.h'].map((p) => stripComments(readFileSync(new URL(p, root), 'utf8')));
const headerText = headers.join('\n');

function defines(): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of headerText.matchAll(/^[ \t]*#define[ \t]+(\w+)[ \t]+(\S+)/gm)) {
    const value = Number(m[2]);
    assert.ok(Number.isInteger(value), `#define ${m[1]} ${m[2]} is not an integer literal`);
    out.set(m[1]!, value);
  }
  return out;
}

function enumNames(name: string): string[] {
  const m = new RegExp(`enum\\s+${name}\\s*\\{([^}]*)\\}`).exec(headerText);
  assert.ok(m, `enum ${name} not found`);
  return m[1]!
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map((s, i) => {
      const [id, value] = s.split('=').map((x) => x.trim());
      // Only the first member may carry a value, and it must be 0, so order == value.
      if (value !== undefined) assert.equal(i === 0 && Number(value) === 0, true, `${s}: unexpected explicit value`);
      return id!;
    });
}

/* A small C layout calculator: natural alignment, packed and aligned(N). */
interface CField { name: string; type: string; count: number; offset: number; size: number }
interface CStruct { size: number; align: number; fields: Map<string, CField> }
const SCALARS: Record<string, number> = {
  __u8: 1, __s8: 1, __u16: 2, __s16: 2, __be16: 2, __u32: 4, __s32: 4, __be32: 4, __u64: 8, __s64: 8, __be64: 8,
};

function structs(): Map<string, CStruct> {
  const out = new Map<string, CStruct>();
  const re = /struct\s+(\w+)\s*\{([^}]*)\}\s*(?:__attribute__\s*\(\((\w+)(?:\((\d+)\))?\)\))?\s*;/g;
  for (const m of headerText.matchAll(re)) {
    const [, name, body, attr, attrArg] = m;
    const packed = attr === 'packed';
    let off = 0;
    let align = 1;
    const fields = new Map<string, CField>();
    for (const decl of body!.split(';').map((s) => s.trim()).filter(Boolean)) {
      const d = /^(struct\s+\w+|\w+)\s+(\w+)(?:\[(\w+)\])?$/.exec(decl);
      assert.ok(d, `cannot parse field "${decl}" of struct ${name}`);
      const [, type, fname, n] = d;
      let esize: number;
      let ealign: number;
      if (type!.startsWith('struct ')) {
        const inner = out.get(type!.slice(7));
        assert.ok(inner, `${type} used before definition`);
        esize = inner.size;
        ealign = inner.align;
      } else {
        esize = SCALARS[type!] ?? assert.fail(`unknown type ${type}`);
        ealign = esize;
      }
      if (packed) ealign = 1;
      off = Math.ceil(off / ealign) * ealign;
      const count = n === undefined ? 1 : /^\d+$/.test(n) ? Number(n) : (DEFINES.get(n) ?? assert.fail(`unknown array size ${n}`));
      fields.set(fname!, { name: fname!, type: type!, count, offset: off, size: esize * count });
      off += esize * count;
      align = Math.max(align, ealign);
    }
    if (attr === 'aligned') align = Math.max(align, Number(attrArg));
    out.set(name!, { size: Math.ceil(off / align) * align, align, fields });
  }
  return out;
}

const DEFINES = defines();
const STRUCTS = structs();

function cfield(struct: string, field: string): CField {
  const f = STRUCTS.get(struct)?.fields.get(field);
  assert.ok(f, `${struct}.${field} not in the headers`);
  return f;
}

/** Reads a field from an encoded struct at the header's offset, in the header's byte order. */
function readField(buf: Buffer, f: CField): number | bigint | string {
  const o = f.offset;
  if (f.count > 1 || f.type.startsWith('struct ')) return buf.subarray(o, o + f.size).toString('hex');
  switch (f.type) {
    case '__u8': return buf.readUInt8(o);
    case '__u16': return buf.readUInt16LE(o);
    case '__be16': return buf.readUInt16BE(o);
    case '__u32': return buf.readUInt32LE(o);
    case '__be32': return buf.readUInt32BE(o);
    case '__u64': return buf.readBigUInt64LE(o);
    case '__s64': return buf.readBigInt64LE(o);
    case '__be64': return buf.readBigUInt64BE(o);
    default: return assert.fail(`no reader for ${f.type}`);
  }
}

/** Every field of the C struct must read back as expected (hex for arrays). */
function assertStruct(struct: string, buf: Buffer, expected: Record<string, number | bigint | string>): void {
  const s = STRUCTS.get(struct);
  assert.ok(s, `struct ${struct} not in the headers`);
  assert.equal(buf.length, s.size, `${struct} encoded size`);
  assert.deepEqual(new Set(Object.keys(expected)), new Set(s.fields.keys()), `${struct} field list`);
  for (const f of s.fields.values()) assert.equal(readField(buf, f), expected[f.name], `${struct}.${f.name}`);
}

/* ---- constants and enums ---- */

describe('constants mirror the headers', () => {
  test('every #define with a value is exported with the same value', () => {
    assert.ok(DEFINES.size >= 25, `only ${DEFINES.size} defines found`);
    const exported = layout as unknown as Record<string, unknown>;
    for (const [name, value] of DEFINES) assert.equal(exported[name], value, name);
  });

  test('every exported SPAK_ number constant exists in the headers', () => {
    const enumMax = new Set(['SPAK_SRV_REASON_MAX', 'SPAK_CLI_REASON_MAX', 'SPAK_DOUT_MAX']);
    for (const [name, value] of Object.entries(layout)) {
      if (!/^SPAK_[A-Z0-9_]+$/.test(name) || typeof value !== 'number' || enumMax.has(name)) continue;
      assert.ok(DEFINES.has(name), `${name} is not #defined in the headers`);
    }
  });

  test('server reasons in header order', () => {
    const names = enumNames('spak_server_reason');
    assert.equal(names.pop(), 'SPAK_SRV_REASON_MAX');
    assert.deepEqual([...SERVER_REASONS], names);
    assert.equal(layout.SPAK_SRV_REASON_MAX, names.length);
  });

  test('stealth reasons are in the mirror', () => {
    assert.equal(layout.serverReasonIndex('drop_stealth_syn'), SERVER_REASONS.indexOf('SPAK_SRV_DROP_STEALTH_SYN'));
    assert.equal(layout.serverReasonIndex('drop_stealth_udp'), SERVER_REASONS.indexOf('SPAK_SRV_DROP_STEALTH_UDP'));
    assert.equal(layout.serverReasonIndex('drop_stealth_segment'), SERVER_REASONS.indexOf('SPAK_SRV_DROP_STEALTH_SEGMENT'));
    assert.ok(layout.serverReasonIndex('drop_stealth_syn') >= 0 && layout.serverReasonIndex('drop_stealth_udp') >= 0);
  });

  test('per-destination outcomes in header order', () => {
    const names = enumNames('spak_dest_outcome');
    assert.equal(names.pop(), 'SPAK_DOUT_MAX');
    assert.deepEqual([...DEST_OUTCOMES], names);
    assert.equal(layout.SPAK_DOUT_MAX, names.length);
    DEST_OUTCOMES.forEach((id, i) => assert.equal(`SPAK_DOUT_${DEST_OUTCOME_NAMES[i]!.toUpperCase()}`, id));
  });

  test('client reasons in header order', () => {
    const names = enumNames('spak_client_reason');
    assert.equal(names.pop(), 'SPAK_CLI_REASON_MAX');
    assert.deepEqual([...CLIENT_REASONS], names);
    assert.equal(layout.SPAK_CLI_REASON_MAX, names.length);
  });

  test('friendly reason names', () => {
    assert.equal(SERVER_REASON_NAMES.length, SERVER_REASONS.length);
    assert.equal(CLIENT_REASON_NAMES.length, CLIENT_REASONS.length);
    assert.equal(SERVER_REASON_NAMES[0], 'pass_other');
    assert.equal(SERVER_REASON_NAMES[11], 'drop_bad_tag');
    assert.equal(CLIENT_REASON_NAMES[1], 'injected');
    SERVER_REASONS.forEach((id, i) => assert.equal(`SPAK_SRV_${SERVER_REASON_NAMES[i]!.toUpperCase()}`, id));
    CLIENT_REASONS.forEach((id, i) => assert.equal(`SPAK_CLI_${CLIENT_REASON_NAMES[i]!.toUpperCase()}`, id));
    assert.equal(layout.serverReasonIndex('drop_replay'), SERVER_REASONS.indexOf('SPAK_SRV_DROP_REPLAY'));
    assert.equal(layout.clientReasonIndex('skip_no_room'), 2);
  });

  test('option and tag-input offsets agree with the structs in the header', () => {
    const opt: Record<string, string> = {
      KIND: 'kind', LEN: 'len', EXID: 'exid', VERSION: 'version', RESERVED: 'reserved',
      KEY_ID: 'key_id', STEP: 'time_step', TAG: 'tag',
    };
    for (const [k, f] of Object.entries(opt)) assert.equal(DEFINES.get(`SPAK_OPT_OFF_${k}`), cfield('spak_opt', f).offset, k);
    const tin: Record<string, string> = {
      EXID: 'exid', VERSION: 'version', FLAGS: 'flags', KEY_ID: 'key_id', DPORT: 'dport',
      DADDR: 'daddr', STEP: 'time_step', SEQ: 'seq', SADDR: 'saddr',
    };
    for (const [k, f] of Object.entries(tin)) assert.equal(DEFINES.get(`SPAK_TIN_OFF_${k}`), cfield('spak_tag_input', f).offset, k);
    assert.equal(STRUCTS.get('spak_opt')!.size, layout.SPAK_OPT_LEN);
    assert.equal(STRUCTS.get('spak_tag_input')!.size, layout.SPAK_TAG_INPUT_LEN_BOUND);
    assert.equal(cfield('spak_tag_input', 'saddr').offset, layout.SPAK_TAG_INPUT_LEN, 'an unbound tag input stops where saddr starts');
    assert.equal(cfield('spak_tag_input', 'time_step').offset, layout.SPAK_TIN_FIXED_LEN, 'the fixed part ends at the time step');
    assert.equal(cfield('spak_tag_input', 'daddr').offset, layout.SPAK_TIN_PREFIX_LEN, 'a wildcard state ends at the address');
  });
});

describe('knock datagram mirrors the header', () => {
  test('datagram offsets and lengths agree with struct spak_knock', () => {
    const hdr: Record<string, string> = { VERSION: 'version', RESERVED: 'reserved', CLIENT_ID: 'client_id', TAG: 'tag', ENC: 'enc', CT: 'ct' };
    for (const [k, f] of Object.entries(hdr)) assert.equal(DEFINES.get(`SPAK_KNOCK_OFF_${k}`), cfield('spak_knock', f).offset, k);
    assert.equal(STRUCTS.get('spak_knock')!.size, layout.SPAK_KNOCK_LEN);
    assert.equal(cfield('spak_knock', 'tag').size, layout.SPAK_KNOCK_TAG_LEN);
    assert.equal(cfield('spak_knock', 'enc').size, layout.SPAK_KNOCK_ENC_LEN);
    assert.equal(cfield('spak_knock', 'ct').size, layout.SPAK_KNOCK_CT_LEN);
    assert.equal(layout.SPAK_KNOCK_HDR_LEN, layout.SPAK_KNOCK_OFF_ENC, 'the tagged part starts at enc');
    assert.equal(layout.SPAK_KNOCK_AAD_LEN, layout.SPAK_KNOCK_OFF_TAG, 'the aad is everything before the tag');
    assert.equal(layout.SPAK_KNOCK_TAGGED_LEN, layout.SPAK_KNOCK_LEN - layout.SPAK_KNOCK_HDR_LEN);
    assert.equal(layout.SPAK_KNOCK_TAGGED_LEN % 8, 0, 'whole SipHash blocks');
    assert.equal(layout.SPAK_KNOCK_CT_LEN, layout.SPAK_KNOCK_PT_LEN + layout.SPAK_KNOCK_AEAD_TAG_LEN);
    assert.equal(layout.SPAK_KNOCK_OFF_CT + layout.SPAK_KNOCK_CT_LEN, layout.SPAK_KNOCK_LEN);
  });

  test('plaintext offsets agree with struct spak_knock_plain', () => {
    const pt: Record<string, string> = {
      VERSION: 'version', COUNT: 'count', RESERVED: 'reserved', DURATION: 'duration', TIMESTAMP: 'timestamp',
      NONCE: 'nonce', SERVER: 'server_addr', ALLOW: 'allow_addr', OPEN: 'open',
    };
    for (const [k, f] of Object.entries(pt)) assert.equal(DEFINES.get(`SPAK_KNOCK_PT_OFF_${k}`), cfield('spak_knock_plain', f).offset, k);
    assert.equal(STRUCTS.get('spak_knock_plain')!.size, layout.SPAK_KNOCK_PT_LEN);
    assert.equal(STRUCTS.get('spak_knock_entry')!.size, layout.SPAK_KNOCK_ENTRY_LEN);
    assert.equal(cfield('spak_knock_plain', 'open').count, layout.SPAK_KNOCK_MAX_OPEN);
    assert.equal(cfield('spak_knock_plain', 'nonce').size, layout.SPAK_KNOCK_NONCE_LEN);
    assert.equal(cfield('spak_knock_plain', 'timestamp').type, '__be64');
  });
});

/* ---- structs ---- */

describe('struct layout', () => {
  test('STRUCT_SIZES equal the C sizes computed from the headers', () => {
    assert.deepEqual(new Set(Object.keys(STRUCT_SIZES)), new Set(STRUCTS.keys()));
    for (const [name, s] of STRUCTS) assert.equal(STRUCT_SIZES[name as keyof typeof STRUCT_SIZES], s.size, name);
    // The sizes the brief fixes, as a guard on the calculator itself.
    assert.deepEqual(
      { ...STRUCT_SIZES },
      { spak_opt: 20, spak_tag_input: 48, spak_sip_state: 32, spak_key: 16, spak_config: 32, spak_dest: 20,
        spak_dest_key: 40, spak_dest_info: 168, spak_port_slot: 24, spak_target: 40, spak_flow_key: 40, spak_flow: 8,
        spak_replay: 24, spak_knock: 152, spak_knock_entry: 3, spak_knock_plain: 88, spak_knock_config: 24,
        spak_allow_key: 20, spak_allow: 24, spak_always_key: 20 },
    );
  });

  const V6 = '2001:db8::42';
  const V6_HEX = '20010db8000000000000000000000042';
  const V4 = '203.0.113.9';
  const V4_HEX = '00000000000000000000ffffcb007109';

  test('spak_key', () => {
    const k = { k0: 0x0807060504030201n, k1: 0xf0e0d0c0b0a09080n };
    const b = layout.encodeKey(k);
    assertStruct('spak_key', b, { k0: k.k0, k1: k.k1 });
    assert.equal(b.toString('hex'), '01020304050607088090a0b0c0d0e0f0');
    assert.deepEqual(layout.decodeKey(b), k);
  });

  test('spak_config', () => {
    const c = { clockOffsetNs: -1234567890123n, stepNs: 30_000_000_000n, stepWindow: 1, flowClockS: 987654, flags: layout.SPAK_CFG_STEALTH_SYN | layout.SPAK_CFG_STEALTH_UDP };
    const b = layout.encodeConfig(c);
    assertStruct('spak_config', b, { clock_offset_ns: c.clockOffsetNs, step_ns: c.stepNs, step_window: 1, flow_clock_s: 987654, flags: 3, pad: 0 });
    assert.deepEqual(layout.decodeConfig(b), c);
  });

  test('spak_knock_config', () => {
    const c = { port: 62201, intervalNs: 100_000_000n, burstNs: 2_000_000_000n };
    const b = layout.encodeKnockConfig(c);
    assertStruct('spak_knock_config', b, { interval_ns: c.intervalNs, burst_ns: c.burstNs, port: 62201, pad: '000000000000' });
    assert.deepEqual(layout.decodeKnockConfig(b), c);
  });

  test('spak_dest', () => {
    const b = layout.encodeDest({ addr: V4, port: 443 });
    assertStruct('spak_dest', b, { addr: V4_HEX, port: 443, pad: 0 });
    assert.equal(b.readUInt16BE(16), 443);
    assert.deepEqual(layout.decodeDest(b), { addr: V4, port: 443 });
    assert.deepEqual(layout.decodeDest(layout.encodeDest({ addr: addrTo16(V6), port: 22 })), { addr: V6, port: 22 });
  });

  const STATE_A = Buffer.from('00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff', 'hex');
  const STATE_B = Buffer.alloc(32, 0x5a);

  test('spak_dest_info and spak_dest_key', () => {
    const d = { flags: layout.SPAK_DEST_BIND_SOURCE | layout.SPAK_DEST_DADDR_AT_RUN, keys: [{ keyId: 7, state: STATE_A }, { keyId: 0xbeef, state: STATE_B }], counterIdx: 513 };
    const b = layout.encodeDestInfo(d);
    const keys = b.subarray(cfield('spak_dest_info', 'keys').offset);
    assertStruct('spak_dest_info', b, { flags: 3, counter_idx: 513, keys: keys.toString('hex') });
    assertStruct('spak_dest_key', keys.subarray(0, 40), { key_id: 7, valid: 1, pad: 0, state: STATE_A.toString('hex') });
    assertStruct('spak_dest_key', keys.subarray(40, 80), { key_id: 0xbeef, valid: 1, pad: 0, state: STATE_B.toString('hex') });
    assertStruct('spak_dest_key', keys.subarray(80, 120), { key_id: 0, valid: 0, pad: 0, state: '00'.repeat(32) });
    assert.deepEqual(layout.decodeDestInfo(b), d);
    assert.throws(() => layout.encodeDestInfo({ flags: 0, keys: Array.from({ length: 5 }, () => ({ keyId: 1, state: STATE_A })) }), RangeError);
    assert.throws(() => layout.encodeDestInfo({ flags: 0, keys: [{ keyId: 1, state: Buffer.alloc(31) }] }), RangeError);
  });

  test('spak_port_slot', () => {
    const b = layout.encodePortSlot({ addr: V4, mode: layout.SPAK_PORT_SINGLE, destIdx: 17 });
    assertStruct('spak_port_slot', b, { addr: V4_HEX, mode: 1, dest_idx: 17 });
    assert.deepEqual(layout.decodePortSlot(b), { addr: V4, mode: 1, destIdx: 17 });
  });

  test('port bitmap position', () => {
    assert.deepEqual(layout.portBit(0), { index: 0, bit: 1n });
    assert.deepEqual(layout.portBit(22), { index: 0, bit: 1n << 22n });
    assert.deepEqual(layout.portBit(443), { index: 6, bit: 1n << 59n });
    assert.deepEqual(layout.portBit(65535), { index: layout.SPAK_PORT_WORDS - 1, bit: 1n << 63n });
  });

  test('spak_target', () => {
    const t = { state: STATE_A, keyId: 0x1234, flags: layout.SPAK_TIN_SOURCE_BOUND };
    const b = layout.encodeTarget(t);
    assertStruct('spak_target', b, { state: STATE_A.toString('hex'), key_id: 0x1234, flags: 1, pad: '0000000000' });
    assert.deepEqual(layout.decodeTarget(b), t);
  });

  test('spak_flow_key', () => {
    const k = { saddr: V4, daddr: '198.51.100.1', sport: 40000, dport: 22 };
    const b = layout.encodeFlowKey(k);
    assertStruct('spak_flow_key', b, { saddr: V4_HEX, daddr: '00000000000000000000ffffc6336401', sport: 40000, dport: 22, proto: 6, pad: '000000' });
    assert.deepEqual(layout.decodeFlowKey(b), { ...k, proto: 6 });
    assert.equal(cfield('spak_flow_key', 'proto').offset, layout.FLOW_KEY_OFF_PROTO);
    const u = layout.encodeFlowKey({ saddr: V6, daddr: V6, sport: 1, dport: 51820, proto: layout.IPPROTO_UDP });
    assertStruct('spak_flow_key', u, { saddr: V6_HEX, daddr: V6_HEX, sport: 1, dport: 51820, proto: 17, pad: '000000' });
    assert.equal(layout.decodeFlowKey(u).proto, 17);
  });

  test('spak_allow_key', () => {
    const k = { addr: V4, proto: 'udp' as const, port: 51820 };
    const b = layout.encodeAllowKey(k);
    assertStruct('spak_allow_key', b, { addr: V4_HEX, port: 51820, proto: 17, pad: 0 });
    assert.deepEqual(layout.decodeAllowKey(b), k);
    const t = layout.encodeAllowKey({ addr: V6, proto: 'tcp', port: 22 });
    assertStruct('spak_allow_key', t, { addr: V6_HEX, port: 22, proto: 6, pad: 0 });
    assert.throws(() => layout.encodeAllowKey({ addr: V4, proto: 'icmp' as 'tcp', port: 1 }), TypeError);
    const bad = Buffer.from(b);
    bad[18] = 1;
    assert.throws(() => layout.decodeAllowKey(bad), RangeError);
  });

  test('spak_allow', () => {
    const a = { expiresNs: 123456789012345n, idleNs: 60_000_000_000n, graceNs: 5_000_000_000n };
    const b = layout.encodeAllowEntry(a);
    assertStruct('spak_allow', b, { expires_ns: a.expiresNs, idle_ns: a.idleNs, grace_ns: a.graceNs });
    assert.deepEqual(layout.decodeAllowEntry(b), a);
  });

  test('spak_always_key', () => {
    const b = layout.encodeAlwaysKey({ addr: '198.51.100.0', prefixLen: 96 + 24 });
    assertStruct('spak_always_key', b, { prefixlen: 120, addr: '00000000000000000000ffffc6336400' });
    const v6 = layout.encodeAlwaysKey({ addr: '2001:db8::', prefixLen: 64 });
    assertStruct('spak_always_key', v6, { prefixlen: 64, addr: '20010db8000000000000000000000000' });
    assert.throws(() => layout.encodeAlwaysKey({ addr: V4, prefixLen: 129 }), RangeError);
  });

  test('spak_flow', () => {
    const f = { seenS: 123456789, state: layout.SPAK_FLOW_CLOSING };
    const b = layout.encodeFlow(f);
    assertStruct('spak_flow', b, { seen_s: f.seenS, state: 1 });
    assert.deepEqual(layout.decodeFlow(b), f);
  });

  test('spak_replay', () => {
    const r = { saddr: V6, sport: 51515, timeStep: 56666666 };
    const b = layout.encodeReplay(r);
    assertStruct('spak_replay', b, { saddr: V6_HEX, sport: 51515, pad: 0, time_step: 56666666 });
    assert.deepEqual(layout.decodeReplay(b), r);
  });

  test('short buffers are refused', () => {
    assert.throws(() => layout.decodeConfig(Buffer.alloc(31)), RangeError);
    assert.throws(() => layout.decodeFlowKey(Buffer.alloc(35)), RangeError);
    assert.throws(() => layout.encodeDest({ addr: Buffer.alloc(4), port: 1 }), RangeError);
  });
});

/* ---- addresses ---- */

describe('addresses', () => {
  const cases: [string, string, string][] = [
    // input, 16 bytes, text back
    ['198.51.100.7', '00000000000000000000ffffc6336407', '198.51.100.7'],
    ['0.0.0.0', '00000000000000000000ffff00000000', '0.0.0.0'],
    ['::', '00000000000000000000000000000000', '::'],
    ['::1', '00000000000000000000000000000001', '::1'],
    ['2001:db8::1', '20010db8000000000000000000000001', '2001:db8::1'],
    ['::ffff:198.51.100.7', '00000000000000000000ffffc6336407', '198.51.100.7'],
    ['2001:0DB8:0000:0000:0000:FF00:0042:8329', '20010db8000000000000ff0000428329', '2001:db8::ff00:42:8329'],
    ['1:0:0:2:0:0:0:3', '00010000000000020000000000000003', '1:0:0:2::3'],
    ['1:0:1:0:1:0:1:0', '00010000000100000001000000010000', '1:0:1:0:1:0:1:0'],
    ['2001:db8:0:1:1:1:1:1', '20010db8000000010001000100010001', '2001:db8:0:1:1:1:1:1'],
    ['64:ff9b::192.0.2.33', '0064ff9b0000000000000000c0000221', '64:ff9b::c000:221'],
    ['fe80::1%eth0', 'fe800000000000000000000000000001', 'fe80::1'],
    ['1::', '00010000000000000000000000000000', '1::'],
    ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'ff'.repeat(16), 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'],
  ];
  for (const [input, hex, back] of cases) {
    test(`${input}`, () => {
      const b = addrTo16(input);
      assert.equal(b.toString('hex'), hex);
      assert.equal(addrFrom16(b), back);
    });
  }

  test('invalid addresses throw', () => {
    for (const bad of ['', '1.2.3', '1.2.3.256', '::1::', 'foo', '1:2:3:4:5:6:7:8:9', 'gggg::1']) {
      assert.throws(() => addrTo16(bad), TypeError, bad);
    }
    assert.throws(() => addrFrom16(Buffer.alloc(4)), RangeError);
  });

  test('agrees with the system inet_pton/inet_ntop on random addresses', () => {
    for (let i = 0; i < 2000; i++) {
      const b = randomBytes(16);
      // Zero some groups so '::' compression is exercised.
      for (let g = 0; g < 8; g++) if (b[g * 2]! & 1) b.writeUInt16BE(0, g * 2);
      if (b.subarray(0, 12).every((x) => x === 0)) continue; // inet_ntop prints ::/96 dotted
      const text = addrFrom16(b);
      if (isV4Mapped(b)) continue;
      assert.equal(new SocketAddress({ address: text, family: 'ipv6' }).address, text);
      assert.deepEqual(addrTo16(text), b);
    }
  });
});

/* ---- the option and the tag input ---- */

describe('tag input', () => {
  test('IPv4 destination, byte by byte', () => {
    const b = tagInput({ keyId: 0xbeef, dport: 8443, timeStep: 57_000_000, seq: 0xdeadbeef, daddr: '192.0.2.10' });
    assert.equal(b.length, 32);
    const expected = [
      0x53, 0x50, // ExID
      0x01, // version
      0x00, // flags: not source-bound
      0xbe, 0xef, // key id
      0x20, 0xfb, // dport 8443
      0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 10, // ::ffff:192.0.2.10
      0x03, 0x65, 0xc0, 0x40, // time step 57000000
      0xde, 0xad, 0xbe, 0xef, // seq
    ];
    assert.deepEqual([...b], expected);
    // The same fields at the header's offsets.
    assert.equal(b.readUInt16BE(layout.SPAK_TIN_OFF_EXID), 0x5350);
    assert.equal(b[layout.SPAK_TIN_OFF_VERSION], 1);
    assert.equal(b[layout.SPAK_TIN_OFF_FLAGS], 0);
    assert.equal(b.readUInt16BE(layout.SPAK_TIN_OFF_KEY_ID), 0xbeef);
    assert.equal(b.readUInt16BE(layout.SPAK_TIN_OFF_DPORT), 8443);
    assert.equal(b.readUInt32BE(layout.SPAK_TIN_OFF_STEP), 57_000_000);
    assert.equal(b.readUInt32BE(layout.SPAK_TIN_OFF_SEQ), 0xdeadbeef);
    assert.equal(b.subarray(layout.SPAK_TIN_OFF_DADDR, layout.SPAK_TIN_OFF_DADDR + 16).toString('hex'), '00000000000000000000ffffc000020a');
  });

  test('IPv6 destination, byte by byte', () => {
    const b = tagInput({ keyId: 1, dport: 22, timeStep: 0, seq: 1, daddr: '2001:db8::1' });
    assert.equal(b.toString('hex'), '5350' + '01' + '00' + '0001' + '0016' + '20010db8000000000000000000000001' + '00000000' + '00000001');
  });

  test('source-bound: the flags byte says so and the source address follows (48 bytes)', () => {
    const b = tagInput({ keyId: 1, dport: 22, timeStep: 2, seq: 3, daddr: '198.51.100.1', saddr: '198.51.100.2' });
    assert.equal(b.length, layout.SPAK_TAG_INPUT_LEN_BOUND);
    assert.equal(b.toString('hex'), '5350' + '01' + '01' + '0001' + '0016' + '00000000000000000000ffffc6336401' + '00000002' + '00000003' + '00000000000000000000ffffc6336402');
  });

  test('destinationState + sipResume equal the whole hash (single, wildcard, bound)', () => {
    const key = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
    for (const bound of [false, true]) {
      const f = { keyId: 9, dport: 2222, timeStep: 1234567, seq: 0xfeedface, daddr: '2001:db8::7', ...(bound ? { saddr: '2001:db8::8' } : {}) };
      const input = tagInput(f);
      const whole = siphash24(key, input);
      const single = destinationState(key, { keyId: 9, dport: 2222, daddr: '2001:db8::7', bindSource: bound });
      assert.deepEqual(sipResume(single, input.subarray(layout.SPAK_TIN_FIXED_LEN), input.length), whole);
      const wildcard = destinationState(key, { keyId: 9, dport: 2222, bindSource: bound });
      assert.deepEqual(sipResume(wildcard, input.subarray(layout.SPAK_TIN_PREFIX_LEN), input.length), whole);
    }
  });

  test('computeTag is SipHash-2-4 over the tag input and binds every field', () => {
    const key = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
    const f = { keyId: 7, dport: 443, timeStep: 56666666, seq: 0x01020304, daddr: '2001:db8::10' };
    const tag = computeTag(key, f);
    assert.equal(tag.length, 8);
    assert.deepEqual(tag, siphash24(key, tagInput(f)));
    const variants = [
      { ...f, keyId: 8 }, { ...f, dport: 444 }, { ...f, timeStep: 56666667 }, { ...f, seq: 0x01020305 },
      { ...f, daddr: '2001:db8::11' }, { ...f, version: 2 }, { ...f, flags: 2 }, { ...f, exid: 0x5351 },
      { ...f, saddr: '::' }, { ...f, saddr: '2001:db8::2' },
    ];
    for (const v of variants) assert.notDeepEqual(computeTag(key, v), tag, JSON.stringify(v));
    assert.deepEqual(computeTag(key, { ...f, daddr: addrTo16(f.daddr) }), tag);
  });
});

describe('option', () => {
  const tag = Buffer.from('0102030405060708', 'hex');

  test('encode: exact bytes and the header struct', () => {
    const b = encodeOption({ keyId: 0x0102, timeStep: 0x0a0b0c0d, tag });
    assert.equal(b.toString('hex'), 'fd14' + '5350' + '01' + '00' + '0102' + '0a0b0c0d' + '0102030405060708');
    assertStruct('spak_opt', b, { kind: 253, len: 20, exid: 0x5350, version: 1, reserved: 0, key_id: 0x0102,
      time_step: 0x0a0b0c0d, tag: tag.toString('hex') });
  });

  test('round trip', () => {
    const o = { keyId: 65535, timeStep: 0xffffffff, tag, exid: 0x1234, version: 9, reserved: 3 };
    assert.deepEqual(decodeOption(encodeOption(o)), { ...o, kind: 253, len: 20 });
    const d = decodeOption(encodeOption({ keyId: 5, timeStep: 6, tag }));
    assert.deepEqual(d, { kind: 253, len: 20, exid: 0x5350, version: 1, reserved: 0, keyId: 5, timeStep: 6, tag });
  });

  test('decode refuses what is not a 20-byte kind-253 option', () => {
    const good = encodeOption({ keyId: 1, timeStep: 1, tag });
    assert.equal(decodeOption(good.subarray(0, 19)), null);
    assert.equal(decodeOption(encodeOption({ keyId: 1, timeStep: 1, tag, kind: 254 })), null);
    assert.equal(decodeOption(encodeOption({ keyId: 1, timeStep: 1, tag, len: 12 })), null);
    assert.throws(() => encodeOption({ keyId: 1, timeStep: 1, tag: Buffer.alloc(7) }), RangeError);
  });

  test('found among Linux SYN options; TCP option list parsing', () => {
    const opt = encodeOption({ keyId: 3, timeStep: 4, tag });
    const block = Buffer.concat([linuxSynOptions({ tsval: 0xaabbccdd }), opt]);
    assert.equal(block.length, 40);
    const parsed = parseTcpOptions(block);
    assert.deepEqual(parsed.map((o) => [o.kind, o.offset, o.len]), [[2, 0, 4], [4, 4, 2], [8, 6, 10], [1, 16, 1], [3, 17, 3], [253, 20, 20]]);
    const found = findSpakOption(block);
    assert.equal(found?.offset, 20);
    assert.equal(found?.option.keyId, 3);
    // A foreign RFC 6994 option with kind 253 is skipped.
    const foreign = Buffer.from('fd0612340000', 'hex');
    assert.equal(findSpakOption(padOptions(foreign)), null);
    assert.equal(findSpakOption(Buffer.concat([foreign, Buffer.from([1, 1]), opt]))?.offset, 8);
    assert.throws(() => parseTcpOptions(Buffer.from([2, 4, 5])), RangeError);
    assert.throws(() => parseTcpOptions(Buffer.from([8, 1])), RangeError);
    // Parsing stops at EOL.
    assert.deepEqual(parseTcpOptions(Buffer.from([1, 0, 99, 99])).map((o) => o.kind), [1, 0]);
  });
});

test('timeStepAt', () => {
  assert.equal(timeStepAt(0), 0);
  assert.equal(timeStepAt(29_999), 0);
  assert.equal(timeStepAt(30_000), 1);
  assert.equal(timeStepAt(1_700_000_000_000), 56_666_666);
  assert.equal(timeStepAt(1_700_000_010_000), 56_666_667);
  assert.equal(timeStepAt(1_700_000_000_000, 60), 28_333_333);
  assert.equal(timeStepAt(59_999, 60), 0);
  assert.equal(timeStepAt(1_500, 1), 1);
  assert.throws(() => timeStepAt(0, 0), RangeError);
});

/* ---- packets ---- */

/** An independent Internet checksum: 32-bit accumulator, folded at the end. */
function sum16(bytes: number[]): number {
  let s = 0;
  for (let i = 0; i < bytes.length; i += 2) s += (bytes[i]! << 8) + (bytes[i + 1] ?? 0);
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return s;
}
const ipBytes = (ip: string): number[] => [...addrTo16(ip)].slice(ip.includes(':') ? 0 : 12);
/** Folded sum over pseudo-header + segment; a valid checksum makes it 0xffff. */
function l4Sum(family: 4 | 6, src: string, dst: string, proto: number, seg: Buffer): number {
  const len = seg.length;
  const pseudo = family === 4
    ? [...ipBytes(src), ...ipBytes(dst), 0, proto, len >> 8, len & 0xff]
    : [...ipBytes(src), ...ipBytes(dst), 0, 0, len >> 8, len & 0xff, 0, 0, 0, proto];
  return sum16([...pseudo, ...seg]);
}

describe('packet builder', () => {
  test('IPv4 header checksum matches the textbook example', () => {
    // 4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7 (RFC 1071 style worked example).
    const f = buildUdp({ family: 4, saddr: '192.168.0.1', daddr: '192.168.0.199', sport: 1, dport: 2, payload: Buffer.alloc(87) });
    assert.equal(f.subarray(14, 34).toString('hex'), '450000730000400040 11b861c0a80001c0a800c7'.replace(/ /g, ''));
  });

  test('linuxSynOptions', () => {
    assert.equal(linuxSynOptions({ tsval: 0x01020304, tsecr: 0 }).toString('hex'), '020405b40402080a0102030400000000' + '01030307');
    assert.equal(linuxSynOptions().length, 20);
  });

  test('padOptions pads with NOP to 4', () => {
    assert.deepEqual([...padOptions(Buffer.from([2, 4, 5, 0xb4, 4, 2]))], [2, 4, 5, 0xb4, 4, 2, 1, 1]);
    assert.equal(padOptions(Buffer.alloc(8)).length, 8);
    assert.throws(() => buildTcp({ family: 4, saddr: '10.0.0.1', daddr: '10.0.0.2', sport: 1, dport: 2, seq: 0, flags: {}, options: Buffer.alloc(3) }), RangeError);
  });

  test('IPv4 TCP SYN with options: exact layout and checksums', () => {
    const options = Buffer.concat([linuxSynOptions({ tsval: 1 }), encodeOption({ keyId: 1, timeStep: 2, tag: Buffer.alloc(8, 0xab) })]);
    const f = buildTcp({ family: 4, saddr: '10.1.2.3', daddr: '10.9.8.7', sport: 40001, dport: 22, seq: 0x11223344,
      flags: { syn: true }, options, ttl: 63, ipId: 0x4242 });
    assert.equal(f.length, 14 + 20 + 60);
    assert.equal(f.readUInt16BE(12), 0x0800);
    const ip = f.subarray(14, 34);
    assert.equal(ip[0], 0x45);
    assert.equal(ip.readUInt16BE(2), 80);
    assert.equal(ip.readUInt16BE(4), 0x4242);
    assert.equal(ip.readUInt16BE(6), 0x4000); // DF
    assert.equal(ip[8], 63);
    assert.equal(ip[9], 6);
    assert.equal(sum16([...ip]), 0xffff, 'IPv4 header checksum');
    const tcp = f.subarray(34);
    assert.equal(tcp[12], 15 << 4);
    assert.equal(tcp[13], 0x02);
    assert.equal(l4Sum(4, '10.1.2.3', '10.9.8.7', 6, tcp), 0xffff, 'TCP checksum');

    const p = parseFrame(f);
    assert.equal(p.family, 4);
    assert.equal(p.saddr, '10.1.2.3');
    assert.equal(p.daddr, '10.9.8.7');
    assert.equal(p.ipTotalLen, 80);
    assert.equal(p.ipChecksumOk, true);
    assert.equal(p.ttl, 63);
    assert.equal(p.fragment, undefined);
    assert.ok(p.tcp);
    assert.deepEqual(
      { sport: p.tcp.sport, dport: p.tcp.dport, seq: p.tcp.seq, ack: p.tcp.ack, doff: p.tcp.doff, syn: p.tcp.flags.syn, ackf: p.tcp.flags.ack },
      { sport: 40001, dport: 22, seq: 0x11223344, ack: 0, doff: 15, syn: true, ackf: false },
    );
    assert.deepEqual(p.tcp.options, options);
    assert.equal(p.tcp.payload.length, 0);
    assert.equal(p.tcp.checksumOk, true);
    assert.equal(p.l4Offset, 34);

    // Corruption is noticed by the parser.
    const bad = Buffer.from(f);
    bad[f.length - 1] = bad[f.length - 1]! ^ 1;
    assert.equal(parseFrame(bad).tcp?.checksumOk, false);
    const badIp = Buffer.from(f);
    badIp[14 + 8] = 1;
    assert.equal(parseFrame(badIp).ipChecksumOk, false);
  });

  test('IPv6 TCP with payload and VLAN: layout and checksums', () => {
    const payload = Buffer.from('hello, odd length');
    const f = buildTcp({ family: 6, saddr: '2001:db8::1', daddr: '2001:db8:1::2', sport: 1234, dport: 443, seq: 1, ack: 0xfffffffe,
      flags: { ack: true, psh: true }, payload, vlan: 100 });
    assert.equal(f.readUInt16BE(12), 0x8100);
    assert.equal(f.readUInt16BE(14) & 0xfff, 100);
    assert.equal(f.readUInt16BE(16), 0x86dd);
    const ip = f.subarray(18, 58);
    assert.equal(ip[0]! >> 4, 6);
    assert.equal(ip.readUInt16BE(4), 20 + payload.length);
    assert.equal(ip[6], 6);
    const tcp = f.subarray(58);
    assert.equal(l4Sum(6, '2001:db8::1', '2001:db8:1::2', 6, tcp), 0xffff, 'TCP checksum');

    const p = parseFrame(f);
    assert.equal(p.vlan, 100);
    assert.equal(p.family, 6);
    assert.equal(p.daddr, '2001:db8:1::2');
    assert.equal(p.payloadLen, 20 + payload.length);
    assert.equal(p.ipTotalLen, 40 + 20 + payload.length);
    assert.equal(p.tcp?.checksumOk, true);
    assert.equal(p.tcp?.ack, 0xfffffffe);
    assert.deepEqual(p.tcp?.flags, { fin: false, syn: false, rst: false, psh: true, ack: true, urg: false, ece: false, cwr: false });
    assert.deepEqual(p.tcp?.payload, payload);
  });

  test('Ethernet padding after a short packet is ignored', () => {
    const f = buildTcp({ family: 4, saddr: '10.0.0.1', daddr: '10.0.0.2', sport: 1, dport: 2, seq: 3, flags: { rst: true } });
    assert.equal(f.length, 54);
    const padded = Buffer.concat([f, Buffer.alloc(6)]);
    const p = parseFrame(padded);
    assert.equal(p.l4.length, 20);
    assert.equal(p.tcp?.checksumOk, true);
    assert.throws(() => parseFrame(f.subarray(0, 50)), RangeError);
  });

  test('IPv4 fragments', () => {
    const first = buildTcp({ family: 4, saddr: '10.0.0.1', daddr: '10.0.0.2', sport: 1, dport: 22, seq: 3, flags: { syn: true }, moreFragments: true, ipId: 7 });
    const ip = first.subarray(14, 34);
    assert.equal(ip.readUInt16BE(6), 0x2000);
    assert.equal(sum16([...ip]), 0xffff);
    const p = parseFrame(first);
    assert.deepEqual(p.fragment, { offset: 0, more: true, id: 7 });
    assert.ok(p.tcp, 'the first fragment carries the TCP header');

    const later = buildUdp({ family: 4, saddr: '10.0.0.1', daddr: '10.0.0.2', sport: 1, dport: 2, fragOffset: 1480, ipId: 7 });
    assert.equal(later.readUInt16BE(14 + 6), 185);
    const q = parseFrame(later);
    assert.deepEqual(q.fragment, { offset: 1480, more: false, id: 7 });
    assert.equal(q.udp, undefined, 'a later fragment has no L4 header');
    assert.equal(q.ipChecksumOk, true);
    assert.throws(() => buildUdp({ family: 4, saddr: '10.0.0.1', daddr: '10.0.0.2', sport: 1, dport: 2, fragOffset: 3 }), RangeError);
  });

  test('IPv6 fragment header', () => {
    const f = buildTcp({ family: 6, saddr: '2001:db8::1', daddr: '2001:db8::2', sport: 1, dport: 22, seq: 9, flags: { syn: true },
      ipv6Fragment: { offset: 0, more: true, id: 0xabcdef01 } });
    const ip = f.subarray(14, 54);
    assert.equal(ip[6], 44);
    assert.equal(ip.readUInt16BE(4), 8 + 20);
    assert.equal(f.subarray(54, 62).toString('hex'), '06' + '00' + '0001' + 'abcdef01');
    assert.equal(l4Sum(6, '2001:db8::1', '2001:db8::2', 6, f.subarray(62)), 0xffff);
    const p = parseFrame(f);
    assert.deepEqual(p.fragment, { offset: 0, more: true, id: 0xabcdef01 });
    assert.equal(p.protocol, 6);
    assert.equal(p.ipHeaderLen, 48);
    assert.equal(p.tcp?.checksumOk, true);

    const later = parseFrame(buildUdp({ family: 6, saddr: '2001:db8::1', daddr: '2001:db8::2', sport: 1, dport: 2,
      ipv6Fragment: { offset: 1232, more: false, id: 5 } }));
    assert.deepEqual(later.fragment, { offset: 1232, more: false, id: 5 });
    assert.equal(later.udp, undefined);
  });

  test('UDP over IPv4 and IPv6', () => {
    for (const [family, s, d] of [[4, '192.0.2.1', '192.0.2.2'], [6, 'fe80::1', 'ff02::1']] as const) {
      const payload = Buffer.from('abc');
      const f = buildUdp({ family, saddr: s, daddr: d, sport: 5353, dport: 53, payload });
      const p = parseFrame(f);
      assert.equal(p.udp?.length, 11);
      assert.equal(p.udp?.checksumOk, true);
      assert.equal(l4Sum(family, s, d, 17, p.l4), 0xffff);
      assert.deepEqual(p.udp?.payload, payload);
    }
  });

  test('ICMP and ICMPv6 echo', () => {
    const v4 = buildIcmp({ family: 4, saddr: '192.0.2.1', daddr: '192.0.2.2', id: 0x1234, seq: 1, payload: Buffer.from('ping') });
    const p4 = parseFrame(v4);
    assert.deepEqual([p4.protocol, p4.icmp?.type, p4.icmp?.code, p4.icmp?.id, p4.icmp?.seq, p4.icmp?.checksumOk], [1, 8, 0, 0x1234, 1, true]);
    assert.equal(sum16([...p4.l4]), 0xffff, 'ICMP checksum has no pseudo-header');

    const v6 = buildIcmp({ family: 6, saddr: '2001:db8::1', daddr: '2001:db8::2', id: 7, seq: 8 });
    const p6 = parseFrame(v6);
    assert.deepEqual([p6.protocol, p6.icmp?.type, p6.icmp?.checksumOk], [58, 128, true]);
    assert.equal(l4Sum(6, '2001:db8::1', '2001:db8::2', 58, p6.l4), 0xffff, 'ICMPv6 checksum covers a pseudo-header');
  });

  test('random TCP packets: builder and parser agree, checksums verify independently', () => {
    for (let i = 0; i < 300; i++) {
      const family = i % 2 ? 6 : 4;
      const saddr = family === 4 ? [...randomBytes(4)].join('.') : addrFrom16(Buffer.concat([Buffer.from([0x20, 0x01]), randomBytes(14)]));
      const daddr = family === 4 ? [...randomBytes(4)].join('.') : addrFrom16(Buffer.concat([Buffer.from([0x20, 0x01]), randomBytes(14)]));
      const options = randomBytes((i % 11) * 4);
      const payload = randomBytes(i % 37);
      const seq = randomBytes(4).readUInt32BE(0);
      const f = buildTcp({ family, saddr, daddr, sport: i + 1, dport: 65535 - i, seq, flags: { syn: true }, options, payload });
      const p = parseFrame(f);
      assert.equal(p.saddr, saddr);
      assert.equal(p.daddr, daddr);
      assert.equal(p.tcp?.seq, seq);
      assert.deepEqual(p.tcp?.options, options);
      assert.deepEqual(p.tcp?.payload, payload);
      assert.equal(p.tcp?.checksumOk, true);
      assert.equal(l4Sum(family, saddr, daddr, 6, p.l4), 0xffff);
      if (family === 4) assert.equal(sum16([...f.subarray(14, 34)]), 0xffff);
    }
  });

  test('address family mismatch is refused', () => {
    assert.throws(() => buildTcp({ family: 4, saddr: '::1', daddr: '10.0.0.1', sport: 1, dport: 2, seq: 0, flags: {} }), TypeError);
    assert.throws(() => buildTcp({ family: 6, saddr: '::1', daddr: '::2', sport: 1, dport: 2, seq: 0, flags: {}, fragOffset: 8 }), TypeError);
  });
});
