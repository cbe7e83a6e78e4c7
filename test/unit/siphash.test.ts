import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { siphash24, siphashKeyWords } from '../../src/wire/siphash.js';
import { SIPHASH24_VECTORS } from '../support/siphash-vectors.js';

const KEY = Buffer.from(Array.from({ length: 16 }, (_, i) => i));
const msgOf = (n: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => i));

test('the vector list is the 64 reference outputs', () => {
  assert.equal(SIPHASH24_VECTORS.length, 64);
  for (const v of SIPHASH24_VECTORS) assert.match(v, /^[0-9a-f]{16}$/);
  assert.equal(new Set(SIPHASH24_VECTORS).size, 64);
  assert.equal(SIPHASH24_VECTORS[0], '310e0edd47db6f72');
});

test('siphash24 reproduces all 64 reference vectors', () => {
  for (let i = 0; i < 64; i++) {
    assert.equal(siphash24(KEY, msgOf(i)).toString('hex'), SIPHASH24_VECTORS[i], `vector ${i}`);
  }
});

test("the paper's appendix example: 15-byte message -> 0xa129ca6149be45e5", () => {
  const out = siphash24(KEY, msgOf(15));
  assert.equal(out.readBigUInt64LE(0), 0xa129ca6149be45e5n);
  // The last vector read as a little-endian u64.
  assert.equal(siphash24(KEY, msgOf(63)).readBigUInt64LE(0), 0x958a324ceb064572n);
});

test('siphashKeyWords reads two little-endian u64', () => {
  assert.deepEqual(siphashKeyWords(KEY), { k0: 0x0706050403020100n, k1: 0x0f0e0d0c0b0a0908n });
});

test('key length is checked', () => {
  assert.throws(() => siphash24(Buffer.alloc(15), Buffer.alloc(0)), RangeError);
  assert.throws(() => siphashKeyWords(Buffer.alloc(17)), RangeError);
});

test('siphash24 does not read or modify outside its inputs', () => {
  const big = msgOf(40);
  const before = Buffer.from(big);
  assert.equal(siphash24(KEY, big.subarray(0, 9)).toString('hex'), SIPHASH24_VECTORS[9]);
  assert.deepEqual(big, before);
});

/* A second, deliberately naive BigInt SipHash-2-4 to cross-check random inputs. */
const MASK = (1n << 64n) - 1n;
const rotl = (x: bigint, b: bigint): bigint => ((x << b) | (x >> (64n - b))) & MASK;
function naiveSiphash(key: Buffer, msg: Buffer): bigint {
  const k0 = key.readBigUInt64LE(0);
  const k1 = key.readBigUInt64LE(8);
  const v = [k0 ^ 0x736f6d6570736575n, k1 ^ 0x646f72616e646f6dn, k0 ^ 0x6c7967656e657261n, k1 ^ 0x7465646279746573n];
  const round = (): void => {
    let [a, b, c, d] = v as [bigint, bigint, bigint, bigint];
    a = (a + b) & MASK; b = rotl(b, 13n) ^ a; a = rotl(a, 32n);
    c = (c + d) & MASK; d = rotl(d, 16n) ^ c;
    a = (a + d) & MASK; d = rotl(d, 21n) ^ a;
    c = (c + b) & MASK; b = rotl(b, 17n) ^ c; c = rotl(c, 32n);
    v.splice(0, 4, a, b, c, d);
  };
  // Pad to a multiple of 8 with zeros, length byte last.
  const padded = Buffer.alloc((Math.floor(msg.length / 8) + 1) * 8);
  msg.copy(padded);
  padded[padded.length - 1] = msg.length & 0xff;
  for (let i = 0; i < padded.length; i += 8) {
    const m = padded.readBigUInt64LE(i);
    v[3] = v[3]! ^ m;
    round(); round();
    v[0] = v[0]! ^ m;
  }
  v[2] = v[2]! ^ 0xffn;
  round(); round(); round(); round();
  return v[0]! ^ v[1]! ^ v[2]! ^ v[3]!;
}

test('naive BigInt cross-check agrees with the reference vectors', () => {
  for (let i = 0; i < 64; i++) {
    assert.equal(naiveSiphash(KEY, msgOf(i)), Buffer.from(SIPHASH24_VECTORS[i]!, 'hex').readBigUInt64LE(0));
  }
});

test('siphash24 equals the naive implementation on random keys and messages', () => {
  for (let len = 0; len < 300; len++) {
    const key = randomBytes(16);
    const msg = randomBytes(len);
    assert.equal(siphash24(key, msg).readBigUInt64LE(0), naiveSiphash(key, msg), `length ${len}`);
  }
});
