/**
 * Knock keys: X25519 in PEM (PKCS#8 private, SPKI public), the form `openssl genpkey
 * -algorithm X25519` writes and `openssl pkey` reads; client ids and prefilter keys.
 */
import { createHash, createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, hkdfSync, type KeyObject } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { privateKeyObject, publicKeyObject, rawKey } from './hpke.js';
import { KNOCK_PREFILTER_INFO, SPAK_KNOCK_PREFILTER_KEY_LEN } from '../wire/knock.js';

export interface X25519Pair { privateKey: KeyObject; publicKey: KeyObject }

export function generateX25519(): X25519Pair {
  return generateKeyPairSync('x25519');
}

export const rawPrivate = (k: KeyObject): Buffer => rawKey(k);
export const rawPublic = (k: KeyObject): Buffer => rawKey(k);
export const privatePem = (k: KeyObject): string => k.export({ format: 'pem', type: 'pkcs8' }).toString();
export const publicPem = (k: KeyObject): string => k.export({ format: 'pem', type: 'spki' }).toString();

function requireX25519(k: KeyObject, what: string): KeyObject {
  if (k.asymmetricKeyType !== 'x25519') throw new Error(`${what}: an ${k.asymmetricKeyType ?? 'unknown'} key, expected X25519`);
  return k;
}

/** A private key from PEM text; `what` names it in errors. */
export function parsePrivatePem(pem: string, what = 'private key'): KeyObject {
  let k: KeyObject;
  try {
    k = createPrivateKey({ key: pem, format: 'pem' });
  } catch {
    throw new Error(`${what}: not a PEM private key`);
  }
  return requireX25519(k, what);
}

/** A public key from PEM text (a private key PEM gives its public half, as openssl does). */
export function parsePublicPem(pem: string, what = 'public key'): KeyObject {
  let k: KeyObject;
  try {
    k = createPublicKey({ key: pem, format: 'pem' });
  } catch {
    throw new Error(`${what}: not a PEM public key`);
  }
  return requireX25519(k, what);
}

function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
}

export const loadPrivateKey = (file: string): KeyObject => parsePrivatePem(readText(file), file);
export const loadPublicKey = (file: string): KeyObject => parsePublicPem(readText(file), file);

/**
 * Writes a file with exactly `mode` (umask cannot widen or narrow it), through a temporary
 * file and a rename so a reader never sees half a key. Refuses to replace unless `overwrite`.
 */
export function writeFileMode(file: string, text: string, mode: number, overwrite = false): void {
  if (!overwrite && existsSync(file)) throw new Error(`${file} exists: not replacing it (--force replaces)`);
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  writeFileSync(tmp, text, { mode, flag: 'wx' });
  chmodSync(tmp, mode);
  renameSync(tmp, file);
}

/** Client id: the first 4 bytes of SHA-256(raw public key), big-endian. No registry needed. */
export function clientIdOf(clientPublic: KeyObject | Buffer): number {
  const raw = Buffer.isBuffer(clientPublic) ? clientPublic : rawPublic(clientPublic);
  return createHash('sha256').update(raw).digest().readUInt32BE(0);
}

export const formatClientId = (id: number): string => id.toString(16).padStart(8, '0');

/**
 * The per-client prefilter (SipHash) key, as bpf/spak_wire.h documents: HKDF-SHA256 over
 * the static-static X25519 secret, info binding both public keys. Either end computes it:
 * (server private, client public) or (client private, server public).
 */
export function prefilterKey(ownPrivate: KeyObject, peerPublic: KeyObject, role: 'server' | 'client'): Buffer {
  const secret = diffieHellman({ privateKey: ownPrivate, publicKey: peerPublic });
  const own = rawPublic(createPublicKey(ownPrivate));
  const peer = rawPublic(peerPublic);
  const [server, client] = role === 'server' ? [own, peer] : [peer, own];
  const info = Buffer.concat([KNOCK_PREFILTER_INFO, server, client]);
  return Buffer.from(hkdfSync('sha256', secret, Buffer.alloc(0), info, SPAK_KNOCK_PREFILTER_KEY_LEN));
}

export { privateKeyObject, publicKeyObject };
