// The eBPF SipHash-2-4 (bpf/spak_siphash.h) against the reference vectors and the TypeScript
// implementation, through build/siphash_test.bpf.o under BPF_PROG_TEST_RUN. Needs root and `make bpf`.
//
// Packet in: [16-byte key][1-byte length n][n message bytes]; the hash comes back in the first
// 8 bytes. n == 32 or 48 also resumes the packet path's spak_tag_resume() from precomputed states and returns XDP_PASS,
// every other length returns XDP_TX.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { testRun, type BpfObject, type BpfProgram } from '../../src/bpf/libbpf.js';
import { SIPHASH24_VECTORS } from '../support/siphash-vectors.js';
import { siphash24 } from '../../src/wire/siphash.js';
import { loadProgram, XDP_ABORTED, XDP_PASS, XDP_TX } from './harness.js';

/** XDP test runs need at least an Ethernet header's worth of data; the program reads only n bytes. */
const MIN_INPUT = 64;

let obj: BpfObject;
let prog: BpfProgram;

before(() => {
  ({ obj, prog } = loadProgram('siphash_test', 'siphash_test'));
});
after(() => obj?.close());

function packet(key: Buffer, msg: Buffer): Buffer {
  const b = Buffer.alloc(Math.max(MIN_INPUT, 17 + msg.length));
  key.copy(b, 0);
  b[16] = msg.length;
  msg.copy(b, 17);
  return b;
}

/** The kernel's hash of msg (8 bytes, the u64 little-endian) after checking the return code. */
function bpfSiphash(key: Buffer, msg: Buffer): Buffer {
  const { retval, dataOut } = testRun(prog, packet(key, msg));
  assert.equal(retval, msg.length === 32 || msg.length === 48 ? XDP_PASS : XDP_TX, `return code for a ${msg.length}-byte message`);
  return Buffer.from(dataOut.subarray(0, 8));
}

/** Deterministic PRNG (xorshift32) so a failing random case can be reproduced. */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

const SEED = Number(process.env.SPAK_SIPHASH_SEED ?? 0x5eed5a1d);

describe('eBPF SipHash-2-4: reference vectors (key 00..0f, message 00..n-1)', () => {
  const key = Buffer.from([...Array(16).keys()]);
  SIPHASH24_VECTORS.forEach((expected, n) => {
    test(`vector ${n}`, () => {
      const msg = Buffer.from([...Array(n).keys()]);
      assert.equal(bpfSiphash(key, msg).toString('hex'), expected);
    });
  });
});

describe(`eBPF SipHash-2-4 against the TypeScript siphash24: 200 random cases (seed 0x${SEED.toString(16)})`, () => {
  const rand = prng(SEED);
  const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => rand() & 0xff));
  for (let i = 0; i < 200; i++) {
    // Every third case is a tag input (32 bytes, or 48 source-bound), checked on both BPF paths.
    const len = i % 3 === 0 ? (i % 2 ? 32 : 48) : rand() % 64;
    const key = bytes(16);
    const msg = bytes(len);
    test(`random #${i}: ${len}-byte message`, () => {
      assert.equal(bpfSiphash(key, msg).toString('hex'), siphash24(key, msg).toString('hex'),
        `key ${key.toString('hex')} msg ${msg.toString('hex')}`);
    });
  }
});

describe('eBPF SipHash-2-4: edge lengths and input handling', () => {
  test('every length 0..63 with an all-0xff key and message', () => {
    const key = Buffer.alloc(16, 0xff);
    for (let n = 0; n < 64; n++) {
      const msg = Buffer.alloc(n, 0xff);
      assert.equal(bpfSiphash(key, msg).toString('hex'), siphash24(key, msg).toString('hex'), `length ${n}`);
    }
  });

  test('bytes after the message do not change the hash', () => {
    const key = Buffer.from('000102030405060708090a0b0c0d0e0f', 'hex');
    const msg = Buffer.from('spak tag input');
    const clean = packet(key, msg);
    const dirty = Buffer.from(clean);
    dirty.fill(0xa5, 17 + msg.length);
    assert.deepEqual(testRun(prog, dirty).dataOut.subarray(0, 8), testRun(prog, clean).dataOut.subarray(0, 8));
  });

  test('a length byte above 63 is refused (XDP_ABORTED)', () => {
    const b = packet(Buffer.alloc(16), Buffer.alloc(0));
    b[16] = 64;
    assert.equal(testRun(prog, Buffer.concat([b, Buffer.alloc(64)])).retval, XDP_ABORTED);
  });

  test('a message running past the packet is refused (XDP_ABORTED)', () => {
    const b = Buffer.alloc(MIN_INPUT);
    b[16] = 63; // claims 63 bytes, only 47 follow
    assert.equal(testRun(prog, b).retval, XDP_ABORTED);
  });
});
