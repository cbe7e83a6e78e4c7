/**
 * The knock datagram (layout: bpf/spak_wire.h): build and seal on the client, parse,
 * prefilter and open on the server. Every rejection is a reason from KNOCK_REJECTS, so
 * the daemon counts them; nothing here throws on a bad datagram.
 */
import { createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import type { CipherSuite } from '@hpke/core';
import { siphash24 } from '../wire/siphash.js';
import { addrFrom16, addrTo16 } from '../wire/address.js';
import { hpkePrivate, hpkePublic, knockSuite } from './hpke.js';
import { clientIdOf, prefilterKey, rawPrivate, rawPublic } from './keys.js';
import * as W from '../wire/knock.js';

export type Proto = 'tcp' | 'udp';
export interface Access { proto: Proto; port: number }

/** What a knock asks for. */
export interface KnockPlain {
  timestamp: number;          // unix seconds
  nonce: Buffer;              // 16 bytes
  serverAddr: string;         // the address the knock was sent to
  allowAddr: string | null;   // the address the knock is sent from; null: names none (refused unless the policy has nat)
  durationS: number;          // 0: the server's default
  open: Access[];             // empty: the client's default access
}

/** Rejection reasons, in a fixed order (a daemon's counter slots). */
export const KNOCK_REJECTS = [
  'truncated',          // shorter than SPAK_KNOCK_LEN
  'oversized',          // longer than SPAK_KNOCK_LEN
  'bad_version',        // header version is not SPAK_KNOCK_VERSION
  'bad_reserved',       // header reserved bytes not zero
  'unknown_client',     // no client with that id
  'bad_prefilter_tag',  // SipHash tag does not verify under the client's prefilter key
  'hpke_open_failed',   // HPKE open failed: wrong keys, altered ciphertext, enc or header
  'bad_plain_version',  // plaintext version is not SPAK_KNOCK_PT_VERSION
  'bad_plain',          // plaintext fields out of range (count, entries, reserved)
  'expired',            // timestamp older than the window
  'future',             // timestamp newer than the window
  'wrong_server',       // sent to another server's address
  'replayed',           // nonce seen before
] as const;
export type KnockReject = (typeof KNOCK_REJECTS)[number];

export type Rejected = { ok: false; reason: KnockReject; detail?: string };
const reject = (reason: KnockReject, detail?: string): Rejected => (detail === undefined ? { ok: false, reason } : { ok: false, reason, detail });

const PROTO_NUM: Record<Proto, number> = { tcp: W.SPAK_KNOCK_PROTO_TCP, udp: W.SPAK_KNOCK_PROTO_UDP };
const PROTO_NAME = new Map<number, Proto>([[W.SPAK_KNOCK_PROTO_TCP, 'tcp'], [W.SPAK_KNOCK_PROTO_UDP, 'udp']]);

/** The 88-byte plaintext. Throws RangeError/TypeError on values it cannot carry. */
export function encodePlain(p: KnockPlain): Buffer {
  if (p.open.length > W.SPAK_KNOCK_MAX_OPEN) throw new RangeError(`at most ${W.SPAK_KNOCK_MAX_OPEN} protocol/port entries, got ${p.open.length}`);
  if (!Number.isInteger(p.durationS) || p.durationS < 0 || p.durationS > 0xffffffff) throw new RangeError(`bad duration ${p.durationS}`);
  if (!Number.isSafeInteger(p.timestamp) || p.timestamp < 0) throw new RangeError(`bad timestamp ${p.timestamp}`);
  if (p.nonce.length !== W.SPAK_KNOCK_NONCE_LEN) throw new RangeError(`nonce must be ${W.SPAK_KNOCK_NONCE_LEN} bytes`);
  const b = Buffer.alloc(W.SPAK_KNOCK_PT_LEN);
  b[W.SPAK_KNOCK_PT_OFF_VERSION] = W.SPAK_KNOCK_PT_VERSION;
  b[W.SPAK_KNOCK_PT_OFF_COUNT] = p.open.length;
  b.writeUInt32BE(p.durationS, W.SPAK_KNOCK_PT_OFF_DURATION);
  b.writeBigUInt64BE(BigInt(p.timestamp), W.SPAK_KNOCK_PT_OFF_TIMESTAMP);
  p.nonce.copy(b, W.SPAK_KNOCK_PT_OFF_NONCE);
  addrTo16(p.serverAddr).copy(b, W.SPAK_KNOCK_PT_OFF_SERVER);
  if (p.allowAddr !== null) addrTo16(p.allowAddr).copy(b, W.SPAK_KNOCK_PT_OFF_ALLOW);
  p.open.forEach((a, i) => {
    if (!Number.isInteger(a.port) || a.port < 1 || a.port > 65535) throw new RangeError(`bad port ${a.port}`);
    const o = W.SPAK_KNOCK_PT_OFF_OPEN + i * W.SPAK_KNOCK_ENTRY_LEN;
    b[o] = PROTO_NUM[a.proto] ?? (() => { throw new TypeError(`bad protocol ${String(a.proto)}`); })();
    b.writeUInt16BE(a.port, o + 1);
  });
  return b;
}

/** Parses and range-checks a plaintext. */
export function decodePlain(b: Buffer): { ok: true; plain: KnockPlain } | Rejected {
  if (b.length !== W.SPAK_KNOCK_PT_LEN) return reject('bad_plain', `length ${b.length}`);
  if (b[W.SPAK_KNOCK_PT_OFF_VERSION] !== W.SPAK_KNOCK_PT_VERSION) return reject('bad_plain_version', `version ${b[W.SPAK_KNOCK_PT_OFF_VERSION]}`);
  const count = b[W.SPAK_KNOCK_PT_OFF_COUNT]!;
  if (count > W.SPAK_KNOCK_MAX_OPEN) return reject('bad_plain', `count ${count}`);
  if (b.readUInt16BE(W.SPAK_KNOCK_PT_OFF_RESERVED) !== 0) return reject('bad_plain', 'reserved bytes not zero');
  const timestamp = b.readBigUInt64BE(W.SPAK_KNOCK_PT_OFF_TIMESTAMP);
  if (timestamp > BigInt(Number.MAX_SAFE_INTEGER)) return reject('bad_plain', 'timestamp out of range');
  const open: Access[] = [];
  for (let i = 0; i < W.SPAK_KNOCK_MAX_OPEN; i++) {
    const o = W.SPAK_KNOCK_PT_OFF_OPEN + i * W.SPAK_KNOCK_ENTRY_LEN;
    const protoNum = b[o]!;
    const port = b.readUInt16BE(o + 1);
    if (i >= count) {
      if (protoNum !== 0 || port !== 0) return reject('bad_plain', `entry ${i} past the count is not zero`);
      continue;
    }
    const proto = PROTO_NAME.get(protoNum);
    if (proto === undefined) return reject('bad_plain', `entry ${i}: protocol ${protoNum}`);
    if (port === 0) return reject('bad_plain', `entry ${i}: port 0`);
    open.push({ proto, port });
  }
  const allow = b.subarray(W.SPAK_KNOCK_PT_OFF_ALLOW, W.SPAK_KNOCK_PT_OFF_ALLOW + 16);
  return {
    ok: true,
    plain: {
      timestamp: Number(timestamp),
      nonce: Buffer.from(b.subarray(W.SPAK_KNOCK_PT_OFF_NONCE, W.SPAK_KNOCK_PT_OFF_NONCE + W.SPAK_KNOCK_NONCE_LEN)),
      serverAddr: addrFrom16(b.subarray(W.SPAK_KNOCK_PT_OFF_SERVER, W.SPAK_KNOCK_PT_OFF_SERVER + 16)),
      allowAddr: allow.every((x) => x === 0) ? null : addrFrom16(Buffer.from(allow)),
      durationS: b.readUInt32BE(W.SPAK_KNOCK_PT_OFF_DURATION),
      open,
    },
  };
}

/** The prefilter tag of a whole datagram: SipHash-2-4 over everything after the tag. */
export const knockTag = (key: Buffer, datagram: Buffer): Buffer =>
  siphash24(key, datagram.subarray(W.SPAK_KNOCK_HDR_LEN, W.SPAK_KNOCK_LEN));

let suiteInstance: CipherSuite | undefined;
const suite = (): CipherSuite => (suiteInstance ??= knockSuite());

/** A client's sending side: its keys and the server's public key. */
export class KnockSealer {
  readonly clientId: number;
  private readonly tagKey: Buffer;
  private readonly senderKey: CryptoKeyPair;
  private readonly serverKey: CryptoKey;

  constructor(clientPrivate: KeyObject, serverPublic: KeyObject) {
    const clientPublic = createPublicKey(clientPrivate);
    this.clientId = clientIdOf(clientPublic);
    this.tagKey = prefilterKey(clientPrivate, serverPublic, 'client');
    this.senderKey = { privateKey: hpkePrivate(rawPrivate(clientPrivate)), publicKey: hpkePublic(rawPublic(clientPublic)) };
    this.serverKey = hpkePublic(rawPublic(serverPublic));
  }

  /** Seals a knock; timestamp and nonce default to now and fresh random bytes. */
  async seal(req: Omit<KnockPlain, 'timestamp' | 'nonce'> & Partial<Pick<KnockPlain, 'timestamp' | 'nonce'>>): Promise<Buffer> {
    const plain = encodePlain({ ...req, timestamp: req.timestamp ?? Math.floor(Date.now() / 1000), nonce: req.nonce ?? randomBytes(W.SPAK_KNOCK_NONCE_LEN) });
    const out = Buffer.alloc(W.SPAK_KNOCK_LEN);
    out[W.SPAK_KNOCK_OFF_VERSION] = W.SPAK_KNOCK_VERSION;
    out.writeUInt32BE(this.clientId, W.SPAK_KNOCK_OFF_CLIENT_ID);
    const aad = out.subarray(0, W.SPAK_KNOCK_AAD_LEN);
    const ctx = await suite().createSenderContext({ recipientPublicKey: this.serverKey, senderKey: this.senderKey, info: W.KNOCK_HPKE_INFO });
    const ct = Buffer.from(await ctx.seal(plain, aad));
    Buffer.from(ctx.enc).copy(out, W.SPAK_KNOCK_OFF_ENC);
    ct.copy(out, W.SPAK_KNOCK_OFF_CT);
    knockTag(this.tagKey, out).copy(out, W.SPAK_KNOCK_OFF_TAG);
    return out;
  }
}

/** A client as the server knows it: everything derived once, when it is loaded. */
export interface KnockClient {
  id: number;
  name: string;
  publicKey: KeyObject;
  prefilterKey: Buffer;
  hpkeKey: CryptoKey;
}

export function knockClient(serverPrivate: KeyObject, clientPublic: KeyObject, name: string): KnockClient {
  return {
    id: clientIdOf(clientPublic),
    name,
    publicKey: clientPublic,
    prefilterKey: prefilterKey(serverPrivate, clientPublic, 'server'),
    hpkeKey: hpkePublic(rawPublic(clientPublic)),
  };
}

export type Opened = { ok: true; client: KnockClient; plain: KnockPlain };

/** The server's receiving side. `lookup` finds a client by id (a revoked client is simply absent). */
export class KnockOpener {
  private readonly recipientKey: CryptoKeyPair;

  constructor(serverPrivate: KeyObject, private readonly lookup: (id: number) => KnockClient | undefined) {
    this.recipientKey = { privateKey: hpkePrivate(rawPrivate(serverPrivate)), publicKey: hpkePublic(rawPublic(createPublicKey(serverPrivate))) };
  }

  /** The checks the XDP program makes, in its order: length, version, reserved, client, tag. */
  prefilter(d: Buffer): { ok: true; client: KnockClient } | Rejected {
    if (d.length < W.SPAK_KNOCK_LEN) return reject('truncated', `${d.length} bytes`);
    if (d.length > W.SPAK_KNOCK_LEN) return reject('oversized', `${d.length} bytes`);
    if (d[W.SPAK_KNOCK_OFF_VERSION] !== W.SPAK_KNOCK_VERSION) return reject('bad_version', `version ${d[W.SPAK_KNOCK_OFF_VERSION]}`);
    if (d[1] !== 0 || d[2] !== 0 || d[3] !== 0) return reject('bad_reserved');
    const id = d.readUInt32BE(W.SPAK_KNOCK_OFF_CLIENT_ID);
    const client = this.lookup(id);
    if (!client) return reject('unknown_client', `client id ${id.toString(16).padStart(8, '0')}`);
    const tag = d.subarray(W.SPAK_KNOCK_OFF_TAG, W.SPAK_KNOCK_OFF_TAG + W.SPAK_KNOCK_TAG_LEN);
    if (!knockTag(client.prefilterKey, d).equals(tag)) return reject('bad_prefilter_tag');
    return { ok: true, client };
  }

  /** Prefilter, HPKE open, plaintext parse. Freshness, server address, replay and policy: decide.ts. */
  async open(d: Buffer): Promise<Opened | Rejected> {
    const pre = this.prefilter(d);
    if (!pre.ok) return pre;
    let plain: Buffer;
    try {
      const ctx = await suite().createRecipientContext({
        recipientKey: this.recipientKey,
        enc: d.subarray(W.SPAK_KNOCK_OFF_ENC, W.SPAK_KNOCK_OFF_ENC + W.SPAK_KNOCK_ENC_LEN),
        senderPublicKey: pre.client.hpkeKey,
        info: W.KNOCK_HPKE_INFO,
      });
      plain = Buffer.from(await ctx.open(d.subarray(W.SPAK_KNOCK_OFF_CT, W.SPAK_KNOCK_LEN), d.subarray(0, W.SPAK_KNOCK_AAD_LEN)));
    } catch (err) {
      return reject('hpke_open_failed', (err as Error).message);
    }
    const parsed = decodePlain(plain);
    if (!parsed.ok) return parsed;
    return { ok: true, client: pre.client, plain: parsed.plain };
  }
}
