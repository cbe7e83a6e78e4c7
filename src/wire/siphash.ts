/**
 * SipHash-2-4 (Aumasson & Bernstein, 2012), 128-bit key, 64-bit output.
 *
 * The 64-bit state words are kept as pairs of unsigned 32-bit halves instead of
 * BigInt: the daemons tag and verify in user space too, and BigInt arithmetic
 * allocates on every operation. The BigInt key words are still offered because the
 * eBPF maps store the key as two u64 (struct spak_key).
 */

/** The key as the reference implementation reads it: two little-endian u64. */
export function siphashKeyWords(key: Buffer): { k0: bigint; k1: bigint } {
  checkKey(key);
  return { k0: key.readBigUInt64LE(0), k1: key.readBigUInt64LE(8) };
}

/**
 * SipHash-2-4 of msg under a 16-byte key. Returns the 8 output bytes in the order
 * the reference implementation writes them (the u64 result, little-endian).
 */
export function siphash24(key: Buffer, msg: Buffer): Buffer {
  const full = msg.length - (msg.length % 8);
  return sipResume(sipState(key, msg.subarray(0, full)), msg.subarray(full), msg.length);
}

/**
 * The state (v0..v3, each a little-endian u64: 32 bytes, struct spak_sip_state) after
 * absorbing prefix, whose length must be a multiple of 8. The eBPF programs resume
 * from it, so a tag's fixed part is hashed once in user space, not per packet.
 */
export function sipState(key: Buffer, prefix: Buffer): Buffer {
  checkKey(key);
  if (prefix.length % 8 !== 0) throw new RangeError(`a SipHash prefix must be whole 8-byte blocks, got ${prefix.length} bytes`);
  // v[0..7] = v0.lo, v0.hi, v1.lo, v1.hi, v2.lo, v2.hi, v3.lo, v3.hi
  const v = new Uint32Array(8);
  const k0lo = key.readUInt32LE(0);
  const k0hi = key.readUInt32LE(4);
  const k1lo = key.readUInt32LE(8);
  const k1hi = key.readUInt32LE(12);
  // Initialisation constants "somepseudorandomlygeneratedbytes".
  v[0] = k0lo ^ 0x70736575; v[1] = k0hi ^ 0x736f6d65;
  v[2] = k1lo ^ 0x6e646f6d; v[3] = k1hi ^ 0x646f7261;
  v[4] = k0lo ^ 0x6e657261; v[5] = k0hi ^ 0x6c796765;
  v[6] = k1lo ^ 0x79746573; v[7] = k1hi ^ 0x74656462;
  for (let off = 0; off < prefix.length; off += 8) compress(v, prefix.readUInt32LE(off), prefix.readUInt32LE(off + 4));
  return Buffer.from(v.buffer);
}

/**
 * Finishes a hash from a state (sipState) with the rest of the message; totalLen is the
 * length of the whole message, prefix included (SipHash mixes it into the last block).
 */
export function sipResume(state: Buffer, rest: Buffer, totalLen: number): Buffer {
  if (state.length !== 32) throw new RangeError(`SipHash state must be 32 bytes, got ${state.length}`);
  const v = new Uint32Array(8);
  for (let i = 0; i < 8; i++) v[i] = state.readUInt32LE(i * 4);
  const len = rest.length;
  const full = len - (len % 8);
  for (let off = 0; off < full; off += 8) {
    compress(v, rest.readUInt32LE(off), rest.readUInt32LE(off + 4));
  }

  // Last block: the remaining 0..7 bytes, little-endian, with the length mod 256 on top.
  let mlo = 0;
  let mhi = (totalLen & 0xff) << 24;
  for (let i = 0; i < len - full; i++) {
    const b = rest[full + i]!;
    if (i < 4) mlo |= b << (8 * i);
    else mhi |= b << (8 * (i - 4));
  }
  compress(v, mlo >>> 0, mhi >>> 0);

  // Finalisation: v2 ^= 0xff, four rounds.
  v[4] = v[4]! ^ 0xff;
  for (let i = 0; i < 4; i++) sipRound(v);

  const out = Buffer.alloc(8);
  out.writeUInt32LE((v[0]! ^ v[2]! ^ v[4]! ^ v[6]!) >>> 0, 0);
  out.writeUInt32LE((v[1]! ^ v[3]! ^ v[5]! ^ v[7]!) >>> 0, 4);
  return out;
}

function checkKey(key: Buffer): void {
  if (key.length !== 16) throw new RangeError(`SipHash key must be 16 bytes, got ${key.length}`);
}

/** One message word m: v3 ^= m; two rounds; v0 ^= m. */
function compress(v: Uint32Array, mlo: number, mhi: number): void {
  v[6] = v[6]! ^ mlo; v[7] = v[7]! ^ mhi;
  sipRound(v);
  sipRound(v);
  v[0] = v[0]! ^ mlo; v[1] = v[1]! ^ mhi;
}

/* 64-bit helpers over the halves at index i (lo) and i + 1 (hi). */

/** v[a] += v[b] (mod 2^64). */
function add(v: Uint32Array, a: number, b: number): void {
  const lo = (v[a]! + v[b]!) >>> 0;
  const carry = lo < v[a]! ? 1 : 0;
  v[a + 1] = v[a + 1]! + v[b + 1]! + carry; // Uint32Array wraps mod 2^32
  v[a] = lo;
}

/** v[a] = rotl(v[a], n) for 0 < n < 32. */
function rotl(v: Uint32Array, a: number, n: number): void {
  const lo = v[a]!;
  const hi = v[a + 1]!;
  v[a + 1] = (hi << n) | (lo >>> (32 - n));
  v[a] = (lo << n) | (hi >>> (32 - n));
}

/** v[a] = rotl(v[a], 32): swap the halves. */
function swap(v: Uint32Array, a: number): void {
  const lo = v[a]!;
  v[a] = v[a + 1]!;
  v[a + 1] = lo;
}

/** v[a] ^= v[b]. */
function xor(v: Uint32Array, a: number, b: number): void {
  v[a] = v[a]! ^ v[b]!;
  v[a + 1] = v[a + 1]! ^ v[b + 1]!;
}

// Word indices into the halves array.
const V0 = 0, V1 = 2, V2 = 4, V3 = 6;

/** SipRound, exactly as in the paper. */
function sipRound(v: Uint32Array): void {
  add(v, V0, V1); rotl(v, V1, 13); xor(v, V1, V0); swap(v, V0);
  add(v, V2, V3); rotl(v, V3, 16); xor(v, V3, V2);
  add(v, V0, V3); rotl(v, V3, 21); xor(v, V3, V0);
  add(v, V2, V1); rotl(v, V1, 17); xor(v, V1, V2); swap(v, V2);
}
