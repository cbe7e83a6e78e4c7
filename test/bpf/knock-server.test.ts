// spak-test-timeout: 300
// spak-test-modes: xdp tc
// The knock receiver (src/knock/service.ts) end to end in one process: real knocks over UDP on
// 127.0.0.1 and [::1], the XDP knock client map of a loaded server.bpf.o (written through
// clientmap.ts), and an allowlist map with the server's structs (spak_maps.h) but a small capacity,
// from a fixture object, so a full allowlist is quick to reach. Each case asserts the one counter that moved and the map contents.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { copyFileSync, existsSync, mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { BpfObject, type BpfMap } from '../../src/bpf/libbpf.js';
import { knockSchema } from '../../src/config/schema.js';
import { knockTag, KnockSealer, type KnockPlain } from '../../src/knock/datagram.js';
import { clientIdOf, generateX25519, prefilterKey, privatePem, publicPem, type X25519Pair } from '../../src/knock/keys.js';
import { KNOCK_COUNTER_NAMES, UNKNOWN_CLIENT, type KnockCounterName } from '../../src/knock/counters.js';
import { startKnockService, type KnockService } from '../../src/knock/service.js';
import { startMetrics } from '../../src/observe/metrics.js';
import { parsePromText, sampleValue, type Sample } from '../support/promtext.js';
import { addrFrom16 } from '../../src/wire/address.js';
import * as W from '../../src/wire/knock.js';
import { ServerHarness } from './harness.js';
import { knockLog } from '../../src/observe/log.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const tmp = mkdtempSync(path.join(tmpdir(), 'spak-kserve-'));
const clientsDir = path.join(tmp, 'clients');
const stateDir = path.join(tmp, 'state');
const PORT = 40000 + (process.pid % 20000);
const serverKeys = generateX25519();
const keys: Record<string, X25519Pair> = Object.fromEntries(['alice', 'bob', 'carol', 'dave', 'eve', 'mallory'].map((n) => [n, generateX25519()]));
// Knocks are bound to their sender and loopback addresses are never allowed: they come from
// TEST-NET addresses of this test's own added to lo, sent to the server's 127.0.0.1 and [::1].
const SRC4 = `192.0.2.${1 + (process.pid % 250)}`;
const SRC6 = `2001:db8:ffff::${(1 + (process.pid % 65000)).toString(16)}`;
const srcOf = (host: string): string => (host.includes(':') ? SRC6 : SRC4);
const logLines: string[] = [];
const logger = pino({ level: 'info' }, { write: (s: string) => void logLines.push(s) });

const cfg = knockSchema.parse({
  port: PORT, serverKeyFile: path.join(tmp, 'server.key'), clientsDir, stateDir, serverAddresses: ['127.0.0.1', '::1'],
  allow: ['tcp/80'], maxDurationSeconds: 900,
});

let srv: ServerHarness;
let fixture: BpfObject;
let allow: BpfMap;
let clientsMap: BpfMap;
let svc: KnockService;

function addClient(name: string, policy?: object | string): void {
  if (policy !== undefined) writeFileSync(path.join(clientsDir, `${name}.json`), typeof policy === 'string' ? policy : JSON.stringify(policy));
  writeFileSync(path.join(clientsDir, `${name}.pub`), publicPem(keys[name]!.publicKey));
}

const start = async (): Promise<KnockService> => startKnockService(
  { spak_allow: allow, spak_knock_nonces: srv.program.map('spak_knock_nonces') }, cfg, logger, { rescanMs: 200, decisions: knockLog(logger, 1000), onClients: (k) => srv.update({ knock: k }) });

before(async () => {
  execFileSync('ip', ['addr', 'add', `${SRC4}/32`, 'dev', 'lo']);
  execFileSync('ip', ['addr', 'add', `${SRC6}/128`, 'dev', 'lo', 'nodad']);
  const obj = path.join(tmp, 'allow_fixture.bpf.o');
  execFileSync(process.env.CLANG ?? 'clang-16', ['-O2', '-g', '-target', 'bpf', '-I/usr/include/x86_64-linux-gnu', '-I', path.join(repoRoot, 'bpf'), '-c',
    path.join(repoRoot, 'test/bpf/fixtures/allow_fixture.bpf.c'), '-o', obj]);
  fixture = BpfObject.open(obj);
  fixture.load();
  allow = fixture.map('spak_allow');
  srv = new ServerHarness();
  clientsMap = srv.program.map('spak_knock_clients');
  writeFileSync(cfg.serverKeyFile, privatePem(serverKeys.privateKey), { mode: 0o600 });
  execFileSync('mkdir', ['-p', clientsDir]);
  addClient('alice', { allow: ['tcp/22', 'udp/51820', 'tcp/2222'], maxDurationSeconds: 600, defaultDurationSeconds: 120, fromNetworks: [`${SRC4}/32`, `${SRC6}/128`], idleExtensionSeconds: 60, graceSeconds: 10 });
  addClient('bob', { allow: ['tcp/22'], fromNetworks: ['198.51.100.0/24'] });
  addClient('carol');
  svc = await start();
});
after(() => {
  for (const a of [`${SRC4}/32`, `${SRC6}/128`]) try { execFileSync('ip', ['addr', 'del', a, 'dev', 'lo']); } catch { /* not added */ }
  svc?.stop();
  fixture?.close();
  srv?.close();
  rmSync(tmp, { recursive: true, force: true });
});

type Req = Partial<Omit<KnockPlain, 'nonce'>> & { nonce?: Buffer };
const seal = (name: string, r: Req = {}): Promise<Buffer> => new KnockSealer(keys[name]!.privateKey, serverKeys.publicKey)
  .seal({ serverAddr: '127.0.0.1', durationS: 0, open: [], ...r, allowAddr: r.allowAddr === undefined ? srcOf(r.serverAddr ?? '127.0.0.1') : r.allowAddr });

async function send(d: Buffer, host: '127.0.0.1' | '::1'): Promise<void> {
  const s = createSocket(host === '::1' ? 'udp6' : 'udp4');
  await new Promise<void>((resolve) => s.bind(0, srcOf(host), resolve));
  await new Promise<void>((resolve, reject) => s.send(d, PORT, host, (err) => (err ? reject(err) : resolve())));
  s.close();
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** Allowlist entries as "addr proto/port". */
function allowed(): string[] {
  return allow.keys().map((k) => `${addrFrom16(k.subarray(0, 16))} ${k[18] === 6 ? 'tcp' : k[18] === 17 ? 'udp' : k[18]}/${k.readUInt16BE(16)}`).sort();
}
function clearAllow(): void {
  for (const k of allow.keys()) allow.delete(k);
}
const inClientMap = (name: string): boolean => {
  const k = Buffer.alloc(4);
  k.writeUInt32BE(clientIdOf(keys[name]!.publicKey));
  return clientsMap.lookup(k) !== null;
};

/** Sends d and waits for exactly one counter to move by one; returns it. */
async function outcome(d: Buffer, host: '127.0.0.1' | '::1' = '127.0.0.1'): Promise<KnockCounterName> {
  const before = svc.counters();
  const total = (c: Record<string, number>) => Object.values(c).reduce((a, b) => a + b, 0);
  await send(d, host);
  await until(() => total(svc.counters()) > total(before), 'the knock to be counted');
  const now = svc.counters();
  const moved = KNOCK_COUNTER_NAMES.filter((n) => now[n] !== before[n]);
  assert.equal(moved.length, 1, `one counter must move: ${moved.join(', ')}`);
  assert.equal(now[moved[0]!] - before[moved[0]!], 1);
  return moved[0]!;
}

describe('accepted knocks', () => {
  test('127.0.0.1: the requested ports only, expiry now + duration, idle and grace from the policy', async () => {
    clearAllow();
    const before = process.hrtime.bigint();
    assert.equal(await outcome(await seal('alice', { open: [{ proto: 'tcp', port: 22 }, { proto: 'udp', port: 51820 }], durationS: 300 })), 'knock_accepted');
    assert.deepEqual(allowed(), [`${SRC4} tcp/22`, `${SRC4} udp/51820`]);
    const v = [...allow.keys()].map((k) => allow.lookup(k)!)[0]!;
    const expires = v.readBigUInt64LE(0);
    assert.ok(expires >= before + 300n * 1_000_000_000n && expires <= process.hrtime.bigint() + 300n * 1_000_000_000n);
    assert.equal(v.readBigUInt64LE(8), 60n * 1_000_000_000n);
    assert.equal(v.readBigUInt64LE(16), 10n * 1_000_000_000n);
    assert.ok(logLines.some((l) => l.includes(`client alice from ${SRC4}`)));
  });

  test('[::1], empty request: the policy allow list, for the default duration', async () => {
    clearAllow();
    const before = process.hrtime.bigint();
    assert.equal(await outcome(await seal('alice', { serverAddr: '::1' }), '::1'), 'knock_accepted');
    assert.deepEqual(allowed(), [`${SRC6} tcp/22`, `${SRC6} tcp/2222`, `${SRC6} udp/51820`]);
    const expires = allow.lookup(allow.keys()[0]!)!.readBigUInt64LE(0);
    assert.ok(expires >= before + 120n * 1_000_000_000n && expires < before + 121n * 1_000_000_000n);
  });

  test('the packet source is the one allowed; server defaults apply without NAME.json', async () => {
    clearAllow();
    assert.equal(await outcome(await seal('carol')), 'knock_accepted');
    assert.deepEqual(allowed(), [`${SRC4} tcp/80`]);
  });
});

describe('rejections: counted, nothing written', () => {
  const cases: [string, KnockCounterName, () => Promise<Buffer>][] = [
    ['unknown client', 'knock_rejected_unknown_client', () => seal('mallory')],
    ['bad HPKE (ciphertext altered, prefilter tag redone)', 'knock_rejected_hpke_open_failed', async () => {
      const d = await seal('alice');
      d[W.SPAK_KNOCK_OFF_CT + 5]! ^= 1;
      knockTag(prefilterKey(serverKeys.privateKey, keys.alice!.publicKey, 'server'), d).copy(d, W.SPAK_KNOCK_OFF_TAG);
      return d;
    }],
    ['bad prefilter tag', 'knock_rejected_bad_prefilter_tag', async () => { const d = await seal('alice'); d[W.SPAK_KNOCK_OFF_TAG]! ^= 1; return d; }],
    ['truncated', 'knock_rejected_truncated', async () => (await seal('alice')).subarray(0, 100)],
    ['expired', 'knock_rejected_expired', () => seal('alice', { timestamp: Math.floor(Date.now() / 1000) - 120 })],
    ['future', 'knock_rejected_future', () => seal('alice', { timestamp: Math.floor(Date.now() / 1000) + 120 })],
    ['wrong server address', 'knock_rejected_wrong_server', () => seal('alice', { serverAddr: '192.0.2.1' })],
    ['port not allowed', 'knock_rejected_port_not_allowed', () => seal('alice', { open: [{ proto: 'tcp', port: 22 }, { proto: 'tcp', port: 23 }] })],
    ['duration over max', 'knock_rejected_duration_over_max', () => seal('alice', { durationS: 601 })],
    ['source outside fromNetworks', 'knock_rejected_source_not_allowed', () => seal('bob')],
    ['names another address than its source', 'knock_rejected_source_mismatch', () => seal('alice', { allowAddr: '203.0.113.9' })],
    ['names no address', 'knock_rejected_source_mismatch', () => seal('alice', { allowAddr: null })],
  ];
  for (const [name, counter, make] of cases)
    test(name, async () => {
      clearAllow();
      assert.equal(await outcome(await make()), counter);
      assert.deepEqual(allowed(), []);
    });

  test('allowlist full: refused, and the ports written before the failure are taken back', async () => {
    clearAllow();
    const filler = (i: number) => { const k = Buffer.alloc(20); k.writeUInt32BE(i, 0); k[18] = 6; return k; };
    for (let i = 0; i < 1023; i++) allow.update(filler(i), Buffer.alloc(24));
    try {
      assert.equal(await outcome(await seal('alice', { open: [{ proto: 'tcp', port: 22 }, { proto: 'udp', port: 51820 }] })), 'knock_rejected_allowlist_failed');
      assert.equal(allow.keys().length, 1023);
      assert.equal(allowed().filter((e) => e.startsWith(SRC4)).length, 0);
    } finally {
      clearAllow();
    }
  });

  test('allowlist full: the client holding the most addresses gives up its oldest (counted); when none holds more, refused', async () => {
    clearAllow();
    keys.lee = generateX25519();
    keys.max = generateX25519();
    addClient('lee', { allow: ['tcp/22'] });
    addClient('max', { allow: ['tcp/80', 'tcp/81'] });
    await until(() => inClientMap('lee') && inClientMap('max'), 'lee and max in the XDP client map');
    const filler = (i: number) => { const k = Buffer.alloc(20); k.writeUInt32BE(i, 0); k[18] = 6; return k; };
    for (let i = 0; i < 1022; i++) allow.update(filler(i), Buffer.alloc(24));
    const ours = () => allowed().filter((e) => e.startsWith(SRC4) || e.startsWith(SRC6));
    const evicted = () => svc.counters().knock_client_address_evicted;
    try {
      assert.equal(await outcome(await seal('lee')), 'knock_accepted');
      assert.equal(await outcome(await seal('lee', { serverAddr: '::1' }), '::1'), 'knock_accepted');
      assert.equal(allow.keys().length, 1024, 'full');
      const e0 = evicted();
      // max holds nothing, lee two addresses: lee's oldest makes room.
      assert.equal(await outcome(await seal('max', { open: [{ proto: 'tcp', port: 80 }] })), 'knock_accepted');
      assert.equal(evicted(), e0 + 1);
      assert.deepEqual(ours(), [`${SRC4} tcp/80`, `${SRC6} tcp/22`]);
      // Now each holds one address: max asking for a second entry finds no one holding more.
      assert.equal(await outcome(await seal('max', { open: [{ proto: 'tcp', port: 81 }] })), 'knock_rejected_allowlist_failed');
      assert.equal(evicted(), e0 + 1);
      assert.deepEqual(ours(), [`${SRC4} tcp/80`, `${SRC6} tcp/22`]);
    } finally {
      clearAllow();
      for (const n of ['lee', 'max']) unlinkSync(path.join(clientsDir, `${n}.pub`));
      for (const n of ['lee', 'max']) unlinkSync(path.join(clientsDir, `${n}.json`));
      await until(() => !inClientMap('lee') && !inClientMap('max'), 'lee and max gone');
    }
  });

  test('replayed, and replayed after a restart of the receiver (the pinned-map memory; no file)', async () => {
    clearAllow();
    const first = await seal('alice', { open: [{ proto: 'tcp', port: 22 }] });
    const second = await seal('alice', { open: [{ proto: 'tcp', port: 22 }] });
    assert.equal(await outcome(first), 'knock_accepted');
    assert.equal(await outcome(second), 'knock_accepted');
    clearAllow();
    assert.equal(await outcome(first), 'knock_rejected_replayed');
    svc.stop();
    assert.equal(existsSync(path.join(stateDir, 'knock-replay')), false, 'no replay file');
    svc = await start();
    assert.equal(logLines.filter((l) => l.includes('start fence')).length, 1, 'the first start (empty map) said so, the restart did not');
    assert.equal(await outcome(second), 'knock_rejected_replayed');
    // From another address than it names: refused before the replay check (a thief's copy burns nothing).
    assert.equal(await outcome(first, '::1'), 'knock_rejected_source_mismatch');
    assert.deepEqual(allowed(), []);
  });
});

describe('the clients directory while running', () => {
  test('a client added becomes valid (and enters the XDP client map)', async () => {
    assert.equal(inClientMap('dave'), false);
    addClient('dave', { allow: ['udp/51820'] });
    await until(() => inClientMap('dave'), 'dave in the XDP client map');
    clearAllow();
    assert.equal(await outcome(await seal('dave')), 'knock_accepted');
    assert.deepEqual(allowed(), [`${SRC4} udp/51820`]);
  });

  test('maxAddresses: a knock from one more address replaces the client\'s oldest (counted)', async () => {
    keys.ivy = generateX25519();
    addClient('ivy', { allow: ['tcp/22'], maxAddresses: 1 });
    await until(() => inClientMap('ivy'), 'ivy in the XDP client map');
    clearAllow();
    const replaced = () => svc.counters().knock_client_address_replaced;
    const r0 = replaced();
    assert.equal(await outcome(await seal('ivy')), 'knock_accepted');
    assert.equal(await outcome(await seal('ivy')), 'knock_accepted');
    assert.equal(replaced(), r0, 'the same address again replaces nothing');
    assert.deepEqual(allowed(), [`${SRC4} tcp/22`]);
    assert.equal(await outcome(await seal('ivy', { serverAddr: '::1' }), '::1'), 'knock_accepted');
    assert.deepEqual(allowed(), [`${SRC6} tcp/22`], 'the oldest address is revoked');
    assert.equal(replaced(), r0 + 1);
    unlinkSync(path.join(clientsDir, 'ivy.pub'));
    unlinkSync(path.join(clientsDir, 'ivy.json'));
    await until(() => !inClientMap('ivy'), 'ivy out of the XDP client map');
  });

  test('clients that could hold more entries than the allowlist: one warning line', async () => {
    keys.jay = generateX25519();
    addClient('jay', { allow: ['tcp/22', 'udp/51820'], maxAddresses: 1024 });
    await until(() => inClientMap('jay'), 'jay in the XDP client map');
    assert.ok(logLines.some((l) => /allowCapacity 1024 is below the clients' maxAddresses x allowed ports \(\d+\)/.test(l)), 'the warning');
    unlinkSync(path.join(clientsDir, 'jay.pub'));
    unlinkSync(path.join(clientsDir, 'jay.json'));
    await until(() => !inClientMap('jay'), 'jay out of the XDP client map');
  });

  test('a removed client leaves the XDP client map at once, its entries are revoked, its knocks refused', async () => {
    clearAllow();
    assert.equal(await outcome(await seal('dave')), 'knock_accepted');
    assert.equal(await outcome(await seal('alice', { open: [{ proto: 'tcp', port: 22 }] })), 'knock_accepted');
    unlinkSync(path.join(clientsDir, 'dave.pub'));
    await until(() => !inClientMap('dave'), 'dave out of the XDP client map');
    assert.deepEqual(allowed(), [`${SRC4} tcp/22`], 'only dave\'s entry is revoked');
    assert.ok(logLines.some((l) => l.includes('client dave removed; 1 allowlist entry revoked')));
    assert.equal(await outcome(await seal('dave')), 'knock_rejected_unknown_client');
    assert.equal(inClientMap('alice'), true);
  });

  test('a client removed after a daemon restart: the entries it made before are revoked too', async () => {
    clearAllow();
    keys.hank = generateX25519();
    addClient('hank', { allow: ['udp/5000'] });
    await until(() => inClientMap('hank'), 'hank in the XDP client map');
    assert.equal(await outcome(await seal('hank')), 'knock_accepted');
    assert.equal(await outcome(await seal('alice', { open: [{ proto: 'tcp', port: 22 }] })), 'knock_accepted');
    svc.stop();
    svc = await start();
    unlinkSync(path.join(clientsDir, 'hank.pub'));
    await until(() => !inClientMap('hank'), 'hank out of the XDP client map');
    assert.deepEqual(allowed(), [`${SRC4} tcp/22`]);
  });

  test('bad files are logged and skipped; the daemon serves the rest', async () => {
    addClient('eve', '{"allow": ["tcp/22"], "maxDurationSeconds": -1}');
    writeFileSync(path.join(clientsDir, 'frank.pub'), 'not a key\n');
    writeFileSync(path.join(clientsDir, 'ghost.json'), '{}');
    await until(() => logLines.some((l) => l.includes('eve.json: maxDurationSeconds')), 'the eve.json log line');
    await until(() => logLines.some((l) => l.includes('client frank not served')), 'the frank.pub log line');
    await until(() => logLines.some((l) => l.includes('ghost.json: no ghost.pub')), 'the ghost.json log line');
    assert.equal(inClientMap('eve'), false);
    assert.equal(await outcome(await seal('eve')), 'knock_rejected_unknown_client');
    assert.equal(await outcome(await seal('carol')), 'knock_accepted');
    for (const f of ['eve.pub', 'eve.json', 'frank.pub', 'ghost.json']) unlinkSync(path.join(clientsDir, f));
  });

  test('two files with one client id: neither served, both files named', async () => {
    copyFileSync(path.join(clientsDir, 'carol.pub'), path.join(clientsDir, 'carol2.pub'));
    await until(() => !inClientMap('carol'), 'carol out of the XDP client map');
    assert.ok(logLines.some((l) => l.includes('carol.pub and') && l.includes('carol2.pub: both have client id')));
    unlinkSync(path.join(clientsDir, 'carol2.pub'));
    await until(() => inClientMap('carol'), 'carol back');
    assert.equal(await outcome(await seal('carol')), 'knock_accepted');
  });
});

describe('knocks by client and result (metrics)', () => {
  test('spak_knocks_total moves by one for the client and result of each knock; totals agree with the counters', async () => {
    const m = await startMetrics({ listen: '127.0.0.1', port: 0, sources: { servers: () => [], knock: () => svc } });
    try {
      const scrape = async () => parsePromText(await (await fetch(`http://127.0.0.1:${m.port}/metrics`)).text());
      const knocks = (s: Sample[], client: string, result: string) => sampleValue(s, 'spak_knocks_total', { client, result }) ?? 0;
      clearAllow();
      const before = await scrape();
      assert.equal(await outcome(await seal('alice', { open: [{ proto: 'tcp', port: 22 }] })), 'knock_accepted');
      assert.equal(await outcome(await seal('mallory')), 'knock_rejected_unknown_client');
      assert.equal(await outcome(await seal('bob')), 'knock_rejected_source_not_allowed');
      const now = await scrape();
      assert.equal(knocks(now, 'alice', 'accepted') - knocks(before, 'alice', 'accepted'), 1);
      assert.equal(knocks(now, UNKNOWN_CLIENT, 'unknown_client') - knocks(before, UNKNOWN_CLIENT, 'unknown_client'), 1);
      assert.equal(knocks(now, 'bob', 'source_not_allowed') - knocks(before, 'bob', 'source_not_allowed'), 1);
      const moved = now.filter((s) => s.name === 'spak_knocks_total' && s.value !== knocks(before, s.labels.client!, s.labels.result!));
      assert.equal(moved.length, 3, `only those three moved: ${JSON.stringify(moved)}`);
      // The per-client counts add up to the service's counters (both since this service started).
      const c = svc.counters();
      const sum = (pred: (r: string) => boolean) => svc.clientCounters().filter((x) => pred(x.result)).reduce((a, x) => a + x.count, 0);
      assert.equal(sum((r) => r === 'accepted'), c.knock_accepted);
      assert.equal(sum((r) => r !== 'accepted'), Object.entries(c).filter(([k]) => k !== 'knock_accepted').reduce((a, [, v]) => a + v, 0));
    } finally {
      clearAllow();
      await m.close();
    }
  });
});
