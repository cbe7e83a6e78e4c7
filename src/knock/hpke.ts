/**
 * HPKE (RFC 9180) for knocks: mode_auth, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
 * ChaCha20-Poly1305, from @hpke/core (key schedule, contexts, sequence numbers),
 * @hpke/common (the DHKEM and its labels) and @hpke/chacha20poly1305 (the AEAD).
 *
 * Only the primitives underneath are swapped for node:crypto's synchronous ones,
 * through the library's own interfaces: @hpke/core's X25519 and HKDF go through
 * WebCrypto, where every importKey/sign/deriveBits is a trip through the libuv
 * thread pool; an Auth-mode open makes about twenty of them and managed ~300 opens/s.
 * bench/hpke.ts measures the difference.
 */
import * as crypto from 'node:crypto';
import { createPrivateKey, createPublicKey, diffieHellman, randomBytes, type KeyObject } from 'node:crypto';
import { CipherSuite, HkdfSha256 } from '@hpke/core';
import { Chacha20Poly1305 } from '@hpke/chacha20poly1305';
import { AeadId, Dhkem, KemId, XCurveDhkemPrimitives, XCryptoKey, toUint8Array, type AeadEncryptionContext, type AeadInterface } from '@hpke/common';

/** DER prefix of an X25519 PKCS#8 private key, followed by the 32 raw bytes. */
export const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');

export const privateKeyObject = (raw: Uint8Array): KeyObject =>
  createPrivateKey({ key: Buffer.concat([X25519_PKCS8_PREFIX, raw]), format: 'der', type: 'pkcs8' });
// JWK, not DER: OpenSSL 3's DER decoder takes ~130 us a key, the raw import behind JWK ~17 us,
// and the server imports one (the ephemeral enc) per open.
export const publicKeyObject = (raw: Uint8Array): KeyObject =>
  createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(raw).toString('base64url') }, format: 'jwk' });

/** Raw 32 bytes of an X25519 KeyObject (the last 32 bytes of its DER). */
export function rawKey(key: KeyObject): Buffer {
  const der = key.type === 'private' ? key.export({ format: 'der', type: 'pkcs8' }) : key.export({ format: 'der', type: 'spki' });
  return Buffer.from(der.subarray(der.length - 32));
}

// Parsing a private key is a third of an open: the server's and a client's static keys
// are the same Uint8Array on every call, so their KeyObjects are kept (weakly).
const privateCache = new WeakMap<Uint8Array, KeyObject>();
// The static-static secret (server key x client key) never changes: remembered per pair,
// which halves an Auth-mode open's X25519 work.
const staticCache = new WeakMap<Uint8Array, WeakMap<Uint8Array, Uint8Array>>();
const staticKeys = new WeakSet<Uint8Array>();
// Public halves of the ephemeral keys generated here, so the sender need not derive them.
const publicOf = new WeakMap<Uint8Array, Uint8Array>();

/** Marks a public key's bytes as long-lived, so DH results with it may be remembered. */
export function markStatic(pk: XCryptoKey | CryptoKey): void {
  staticKeys.add((pk as XCryptoKey).key);
}

/** X25519 over node:crypto (OpenSSL), in the shape @hpke/common's XCurve primitives expect. */
const nodeX25519 = {
  utils: {
    // Fresh Uint8Arrays: the library serialises a key as its whole .buffer.
    // 32 random bytes are an X25519 private key (the function clamps). Not generateKeyPairSync +
    // JWK export: Node 20 can deadlock there (a GC during the export runs the finished key-gen
    // job's destructor, which takes the key's mutex the export holds), hanging a sender at random.
    randomSecretKey(): Uint8Array {
      const sk = new Uint8Array(randomBytes(32));
      publicOf.set(sk, new Uint8Array(rawKey(createPublicKey(privKey(sk)))));
      return sk;
    },
  },
  getPublicKey(sk: Uint8Array): Uint8Array {
    return publicOf.get(sk) ?? new Uint8Array(rawKey(createPublicKey(privKey(sk))));
  },
  getSharedSecret(sk: Uint8Array, pk: Uint8Array): Uint8Array {
    const known = staticCache.get(sk)?.get(pk);
    if (known) return known;
    const secret = new Uint8Array(diffieHellman({ privateKey: privKey(sk), publicKey: publicKeyObject(pk) }));
    // RFC 9180 7.1.4: an all-zero output (a small-order point) is an error; OpenSSL refuses it too.
    if (secret.every((b) => b === 0)) throw new Error('X25519: all-zero shared secret');
    if (staticKeys.has(pk)) {
      let m = staticCache.get(sk);
      if (!m) staticCache.set(sk, (m = new WeakMap()));
      m.set(pk, secret);
    }
    return secret;
  },
};

function privKey(sk: Uint8Array): KeyObject {
  let k = privateCache.get(sk);
  if (!k) privateCache.set(sk, (k = privateKeyObject(sk)));
  return k;
}

type Bytes = ArrayBufferLike | ArrayBufferView;
const buf = (b: Bytes): Buffer => Buffer.from(toUint8Array(b));
function hmac(key: Bytes, data: Bytes): ArrayBuffer {
  const out = crypto.createHmac('sha256', buf(key)).update(buf(data)).digest();
  return out.buffer.slice(out.byteOffset, out.byteOffset + out.length) as ArrayBuffer;
}
// psk_id_hash and info_hash depend only on public, per-deployment constants (mode, psk_id,
// info): remembered, bounded, so an open skips two HMACs.
const PUBLIC_LABELS = new Set(['psk_id_hash', 'info_hash']);
const publicExtracts = new Map<string, ArrayBuffer>();

/** HKDF-SHA256 (RFC 5869) with node:crypto's HMAC; the labelled forms stay the library's. */
export class NodeHkdfSha256 extends HkdfSha256 {
  override async extract(salt: Bytes, ikm: Bytes): Promise<ArrayBuffer> {
    const s = buf(salt);
    const i = buf(ikm);
    if (lastExtract && lastExtract.salt.equals(s) && lastExtract.ikm.equals(i)) return lastExtract.prk.slice(0);
    if (s.length === 0) return hmac(Buffer.alloc(32), i); // the KEM's: its ikm holds raw DH output, never kept
    const prk = hmac(s, i);
    lastExtract = { salt: s, ikm: i, prk };
    return prk.slice(0);
  }
  override async labeledExtract(salt: Bytes, label: Uint8Array, ikm: Uint8Array): Promise<ArrayBuffer> {
    const name = Buffer.from(label).toString('latin1');
    if (!PUBLIC_LABELS.has(name) || buf(salt).length !== 0) return super.labeledExtract(salt, label, ikm);
    const key = `${Buffer.from(this.buildLabeledIkm(label, ikm)).toString('hex')}`;
    let out = publicExtracts.get(key);
    if (!out) {
      out = await super.labeledExtract(salt, label, ikm);
      if (publicExtracts.size < 64) publicExtracts.set(key, out);
    }
    return out.slice(0);
  }
  override async expand(prk: Bytes, info: Bytes, len: number): Promise<ArrayBuffer> {
    if (len > 255 * 32) throw new RangeError('HKDF-SHA256: output too long');
    const key = buf(prk);
    const inf = buf(info);
    const out = Buffer.alloc(Math.ceil(len / 32) * 32);
    let prev: Buffer = Buffer.alloc(0);
    for (let i = 0; i * 32 < len; i++) {
      prev = crypto.createHmac('sha256', key).update(prev).update(inf).update(Buffer.from([i + 1])).digest();
      prev.copy(out, i * 32);
    }
    return out.buffer.slice(out.byteOffset, out.byteOffset + len) as ArrayBuffer;
  }
  override async extractAndExpand(salt: Bytes, ikm: Bytes, info: Bytes, len: number): Promise<ArrayBuffer> {
    return this.expand(await this.extract(salt, ikm), info, len);
  }
}

// The last extract, by value: the key schedule extracts the same (shared secret, "secret")
// three times, once per expand (exporter secret, key, base nonce).
let lastExtract: { salt: Buffer; ikm: Buffer; prk: ArrayBuffer } | undefined;

/** ChaCha20-Poly1305 (AEAD id 0x0003) on node:crypto: ~4x faster than the JS one for a knock. */
export class NodeChacha20Poly1305 implements AeadInterface {
  readonly id = AeadId.Chacha20Poly1305;
  readonly keySize = 32;
  readonly nonceSize = 12;
  readonly tagSize = 16;
  createEncryptionContext(key: Bytes): AeadEncryptionContext {
    const k = Buffer.from(buf(key));
    return {
      async seal(iv: Bytes, data: Bytes, aad: Bytes): Promise<ArrayBuffer> {
        const c = crypto.createCipheriv('chacha20-poly1305', k, buf(iv), { authTagLength: 16 });
        c.setAAD(buf(aad), { plaintextLength: buf(data).length });
        const out = Buffer.concat([c.update(buf(data)), c.final(), c.getAuthTag()]);
        return out.buffer.slice(out.byteOffset, out.byteOffset + out.length) as ArrayBuffer;
      },
      async open(iv: Bytes, data: Bytes, aad: Bytes): Promise<ArrayBuffer> {
        const d = buf(data);
        if (d.length < 16) throw new Error('ciphertext shorter than the tag');
        const c = crypto.createDecipheriv('chacha20-poly1305', k, buf(iv), { authTagLength: 16 });
        c.setAAD(buf(aad), { plaintextLength: d.length - 16 });
        c.setAuthTag(d.subarray(d.length - 16));
        const out = Buffer.concat([c.update(d.subarray(0, d.length - 16)), c.final()]);
        return out.buffer.slice(out.byteOffset, out.byteOffset + out.length) as ArrayBuffer;
      },
    };
  }
}

/** DHKEM(X25519, HKDF-SHA256) (KEM id 0x0020) with node:crypto underneath. */
export class NodeDhkemX25519 extends Dhkem {
  override readonly id = KemId.DhkemX25519HkdfSha256;
  override readonly secretSize = 32;
  override readonly encSize = 32;
  override readonly publicKeySize = 32;
  override readonly privateKeySize = 32;
  constructor() {
    const kdf = new NodeHkdfSha256();
    super(KemId.DhkemX25519HkdfSha256, new XCurveDhkemPrimitives('X25519', 32, nodeX25519 as never, kdf), kdf);
  }
}

/** The knock suite: mode_auth is chosen per call (senderKey / senderPublicKey given). */
export function knockSuite(): CipherSuite {
  return new CipherSuite({ kem: new NodeDhkemX25519(), kdf: new NodeHkdfSha256(), aead: new NodeChacha20Poly1305() });
}

/** The same suite on the library's stock primitives (WebCrypto): for the benchmark and cross-checks. */
export async function stockSuite(): Promise<CipherSuite> {
  const { DhkemX25519HkdfSha256 } = await import('@hpke/core');
  return new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Chacha20Poly1305() });
}

export const KEM_X25519 = KemId.DhkemX25519HkdfSha256;

/** Our keys as the library's key objects (raw 32 bytes inside). */
export const hpkePrivate = (raw: Uint8Array): CryptoKey => new XCryptoKey('X25519', new Uint8Array(raw), 'private', ['deriveBits']) as unknown as CryptoKey;
export function hpkePublic(raw: Uint8Array, longLived = true): CryptoKey {
  const k = new XCryptoKey('X25519', new Uint8Array(raw), 'public') as unknown as CryptoKey;
  if (longLived) markStatic(k);
  return k;
}
