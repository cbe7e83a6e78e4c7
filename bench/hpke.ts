// HPKE Auth-mode opens per second on one core (issue 6 targets >= 5,000), for the suite the
// daemon uses and, for comparison, the same suite on @hpke/core's stock WebCrypto primitives.
// Run: node dist/bench/hpke.js [seconds]
import { pathToFileURL } from 'node:url';
import type { CipherSuite } from '@hpke/core';
import { hpkePrivate, hpkePublic, knockSuite, stockSuite } from '../src/knock/hpke.js';
import { generateX25519, rawPrivate, rawPublic } from '../src/knock/keys.js';
import { KnockOpener, KnockSealer, knockClient } from '../src/knock/datagram.js';

export type HpkeVariant = 'node' | 'stock';

export interface HpkeRate { perCpuSecond: number; perWallSecond: number }

/** Opens per second of `variant` over `seconds`, with a plaintext of `ptLen` bytes (one message per context, as a knock). */
export async function hpkeOpensPerSecond(variant: HpkeVariant = 'node', seconds = 2, ptLen = 88): Promise<HpkeRate> {
  const suite: CipherSuite = variant === 'node' ? knockSuite() : await stockSuite();
  const server = generateX25519();
  const client = generateX25519();
  let recipientKey: CryptoKeyPair;
  let senderKey: CryptoKeyPair;
  let senderPublicKey: CryptoKey;
  if (variant === 'node') {
    recipientKey = { privateKey: hpkePrivate(rawPrivate(server.privateKey)), publicKey: hpkePublic(rawPublic(server.publicKey)) };
    senderKey = { privateKey: hpkePrivate(rawPrivate(client.privateKey)), publicKey: hpkePublic(rawPublic(client.publicKey)) };
    senderPublicKey = senderKey.publicKey;
  } else {
    recipientKey = await suite.kem.generateKeyPair();
    senderKey = await suite.kem.generateKeyPair();
    senderPublicKey = senderKey.publicKey;
  }
  const pt = new Uint8Array(ptLen);
  const msgs: { enc: ArrayBuffer; ct: ArrayBuffer }[] = [];
  for (let i = 0; i < 64; i++) {
    const s = await suite.createSenderContext({ recipientPublicKey: recipientKey.publicKey, senderKey });
    msgs.push({ enc: s.enc, ct: await s.seal(pt) });
  }
  const open = async (i: number): Promise<void> => {
    const m = msgs[i % msgs.length]!;
    const r = await suite.createRecipientContext({ recipientKey, enc: m.enc, senderPublicKey });
    await r.open(m.ct);
  };
  for (let i = 0; i < 50; i++) await open(i); // warm up
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  let n = 0;
  while (performance.now() - t0 < seconds * 1000) {
    for (let j = 0; j < 20; j++) await open(n++);
  }
  const wall = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  // Per core: opens per CPU-second of this process (the thread pool's work included), so
  // other load on the machine does not count against it; wall-clock rate alongside.
  return { perCpuSecond: n / ((c.user + c.system) / 1e6), perWallSecond: n / wall };
}

/** Whole knocks opened per second (prefilter tag, HPKE open, plaintext parse), as the daemon does. */
export async function knockOpensPerSecond(seconds = 2): Promise<HpkeRate> {
  const server = generateX25519();
  const client = generateX25519();
  const entry = knockClient(server.privateKey, client.publicKey, 'bench');
  const opener = new KnockOpener(server.privateKey, (id) => (id === entry.id ? entry : undefined));
  const sealer = new KnockSealer(client.privateKey, server.publicKey);
  const knocks: Buffer[] = [];
  for (let i = 0; i < 64; i++) knocks.push(await sealer.seal({ serverAddr: '192.0.2.1', allowAddr: null, durationS: 0, open: [{ proto: 'tcp', port: 22 }] }));
  for (let i = 0; i < 50; i++) await opener.open(knocks[i % knocks.length]!);
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  let n = 0;
  while (performance.now() - t0 < seconds * 1000) {
    for (let j = 0; j < 20; j++) if (!(await opener.open(knocks[n++ % knocks.length]!)).ok) throw new Error('a knock did not open');
  }
  const c = process.cpuUsage(c0);
  return { perCpuSecond: n / ((c.user + c.system) / 1e6), perWallSecond: n / ((performance.now() - t0) / 1000) };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const seconds = Number(process.argv[2] ?? 2);
  for (const v of ['stock', 'node'] as const) {
    const r = await hpkeOpensPerSecond(v, seconds);
    process.stdout.write(`hpke ${v}: ${Math.round(r.perCpuSecond)} opens per CPU-second (${Math.round(r.perWallSecond)}/s wall clock)\n`);
  }
  const k = await knockOpensPerSecond(seconds);
  process.stdout.write(`knock datagrams: ${Math.round(k.perCpuSecond)} opens per CPU-second (${Math.round(k.perWallSecond)}/s wall clock)\n`);
}
